"""Install the course into a Colab runtime without changing what Colab already has.

    python scripts/colab_install.py <checkout>      (run by the notebooks' setup cell after a shallow clone)

1. `pip install -e <checkout> --no-deps`: the package is imported from the checkout, so the shipped checkpoints
   (data/checkpoints/ + manifest.json) and the results files (benchmarks/results/) are where it looks for them.
2. Only the requirements of pyproject.toml that are missing or too old are installed, with a constraints file
   that pins torch, torchvision, numpy, matplotlib and ipywidgets at the versions already installed: pip either
   finds versions of the missing packages that work with them or stops with an error; it never replaces them.
3. torchattacks 3.5.1 (the tests' and notebook 02's independent reference) with --no-deps, as the README says.

Standard library only (it runs before anything of the course is importable). Bad arguments, a checkout without
pyproject.toml, a failed pip and a second run at the same time each end in one line on stderr (exit 2), never a
traceback.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PROTECTED = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets")
EXTRA_NO_DEPS = ("torchattacks==3.5.1",)
USAGE = "usage: python scripts/colab_install.py <checkout folder>"


class InstallError(Exception):
    """A failure reported as one line (exit 2)."""


def requirements(pyproject: Path) -> list[str]:
    """The [project] dependencies of pyproject.toml (a plain parse: one quoted requirement per line)."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(f"cannot read {pyproject} ({getattr(e, 'strerror', None) or e})") from None
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if block is None:
        raise InstallError(f"{pyproject}: no [project] dependencies list found")
    return re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)


def _version_tuple(v: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])


def satisfied(req: str) -> bool:
    """Whether `req` ('name>=x.y' or 'name') is installed at a version meeting its lower bound."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=\s*([\w.]+))?", req)
    if m is None:
        raise InstallError(f"cannot read the requirement {req!r} of pyproject.toml")
    name, low = m.group(1), m.group(3)
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return low is None or _version_tuple(have) >= _version_tuple(low)


def name_of(req: str) -> str:
    return re.match(r"^\s*([A-Za-z0-9_.\-]+)", req).group(1).lower().replace("_", "-")


def _pip(args: list[str], what: str) -> None:
    try:
        subprocess.run(args, check=True)
    except subprocess.CalledProcessError as e:
        raise InstallError(f"pip failed (exit {e.returncode}) while installing {what}; its messages are above") from None
    except OSError as e:
        raise InstallError(f"cannot run pip ({e.strerror or e})") from None


@contextlib.contextmanager
def _one_at_a_time(checkout: Path):
    """An exclusive lock on <checkout>/.colab_install.lock: a second install into the same checkout at the same
    time stops at once instead of mixing two pip runs."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = checkout / ".colab_install.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:   # a read-only checkout: nothing to protect there
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InstallError(f"another colab_install.py is installing {checkout} now; wait for it to finish") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except InstallError as e:
        print(f"colab_install.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("colab_install.py: interrupted; run it again to finish the installation", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        raise InstallError(f"expected one argument, the checkout folder, got {len(argv)}: {' '.join(argv) or 'none'}"
                           f" ({USAGE})" if len(argv) != 1 else f"unknown option {argv[0]!r} ({USAGE})")
    checkout = Path(argv[0]).expanduser().resolve()
    if not checkout.is_dir():
        raise InstallError(f"the checkout folder {checkout} does not exist" if not checkout.exists() else
                           f"{checkout} is not a folder; pass the folder of the clone")
    if not (checkout / "pyproject.toml").is_file():
        raise InstallError(f"{checkout} has no pyproject.toml: pass the folder of the course's clone")
    with _one_at_a_time(checkout):
        return _install(checkout)


def _install(checkout: Path) -> int:
    reqs = requirements(checkout / "pyproject.toml")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _pip(pip + ["-e", str(checkout), "--no-deps"], f"the course from {checkout}")
    pins = []
    for name in PROTECTED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    missing = [r for r in reqs if not satisfied(r)]
    kept = [r for r in missing if name_of(r) in PROTECTED]
    if kept:   # e.g. a runtime with an older torch than pyproject asks for: say so, change nothing
        print(f"note: keeping the installed {', '.join(kept)} (the course may still work; not upgraded)")
    missing = [r for r in missing if name_of(r) not in PROTECTED]
    if missing:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\n".join(pins) + "\n")
        print(f"installing the missing requirements: {', '.join(missing)} (keeping {', '.join(pins)})", flush=True)
        try:
            _pip(pip + missing + ["-c", fh.name], ", ".join(missing))
        finally:
            os.unlink(fh.name)
    for req in EXTRA_NO_DEPS:
        if not satisfied(req.replace("==", ">=")):
            _pip(pip + ["--no-deps", req], req)
    print(f"clead_lite installed from {checkout}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
