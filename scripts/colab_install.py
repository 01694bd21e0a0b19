"""Install the course into a Colab runtime without changing what Colab already has.

    python scripts/colab_install.py <checkout>      (run by the notebooks' setup cell after a shallow clone)

1. `pip install -e <checkout> --no-deps`: the package is imported from the checkout, so the shipped checkpoints
   (data/checkpoints/ + manifest.json) and the results files (benchmarks/results/) are where it looks for them.
2. Only the requirements of pyproject.toml that are missing or too old are installed, with a constraints file
   that pins torch, torchvision, numpy, matplotlib and ipywidgets at the versions already installed: pip either
   finds versions of the missing packages that work with them or stops with an error; it never replaces them.
3. torchattacks 3.5.1 (the tests' and notebook 02's independent reference) with --no-deps, as the README says.

Standard library only (it runs before anything of the course is importable).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PROTECTED = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets")
EXTRA_NO_DEPS = ("torchattacks==3.5.1",)


def requirements(pyproject: Path) -> list[str]:
    """The [project] dependencies of pyproject.toml (a plain parse: one quoted requirement per line)."""
    text = pyproject.read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if block is None:
        raise SystemExit(f"{pyproject}: no [project] dependencies list found")
    return re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)


def _version_tuple(v: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])


def satisfied(req: str) -> bool:
    """Whether `req` ('name>=x.y' or 'name') is installed at a version meeting its lower bound."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=\s*([\w.]+))?", req)
    name, low = m.group(1), m.group(3)
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return low is None or _version_tuple(have) >= _version_tuple(low)


def name_of(req: str) -> str:
    return re.match(r"^\s*([A-Za-z0-9_.\-]+)", req).group(1).lower().replace("_", "-")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/colab_install.py <checkout folder>", file=sys.stderr)
        return 2
    checkout = Path(argv[0]).resolve()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["-e", str(checkout), "--no-deps"], check=True)
    pins = []
    for name in PROTECTED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    missing = [r for r in requirements(checkout / "pyproject.toml") if not satisfied(r)]
    kept = [r for r in missing if name_of(r) in PROTECTED]
    if kept:   # e.g. a runtime with an older torch than pyproject asks for: say so, change nothing
        print(f"note: keeping the installed {', '.join(kept)} (the course may still work; not upgraded)")
    missing = [r for r in missing if name_of(r) not in PROTECTED]
    if missing:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\n".join(pins) + "\n")
        print(f"installing the missing requirements: {', '.join(missing)} (keeping {', '.join(pins)})", flush=True)
        subprocess.run(pip + missing + ["-c", fh.name], check=True)
    for req in EXTRA_NO_DEPS:
        if not satisfied(req.replace("==", ">=")):
            subprocess.run(pip + ["--no-deps", req], check=True)
    print(f"clead_lite installed from {checkout}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
