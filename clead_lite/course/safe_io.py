"""Writing outputs safely: say before the work where nothing can be written, one writer per output file,
temporary files that a kill cannot leave behind for good.

- `check_writable(path, what)`: create the folder of `path` and try a real write there (os.access alone
  is not enough: root passes it on a read-only mount); raises OutputError naming the folder.
- `output_lock(path)`: an exclusive lock (flock on '.<name>.lock' next to `path`) held while a run writes
  `path`; a second run that wants the same file gets OutputError at once instead of mixing the two runs'
  files. Re-entrant within one process (the command line holds it around `train`, which takes it too).
- `temp_path(path)` / `clean_stale_temps(path)`: temporary names '.<name>.<pid>.<random>.tmp' in the
  folder of `path`; those of processes that no longer exist (killed mid-save) are removed on the next save.
- `write_error(path, error)`: an OSError / torch write error turned into one line (full disk, read-only).
- `check_output(path, what, inputs=..., others=...)`: only what is ours is written. A path that is a device, a
  FIFO, a socket or a symbolic link is refused (not written through: a rename would replace the node or the link,
  writing through would touch a file the user did not name), and so are a shipped file (a checkpoint listed in
  data/checkpoints/manifest.json, the manifest, the AutoAttack cache), an input of the same command and another
  output of the same command. One line, before any work. `refuse_special(path)` is the part every writer repeats
  just before its rename.
- `fallback_path(path)`: where a result goes when its own path cannot be written after the work
  (the current folder, the home folder, the temporary folder: the first that takes a probe write).
- `is_being_written(path)`: whether another live process holds `output_lock(path)`.
- `write_json_atomic(path, data, indent=2, what="JSON file")`: a JSON file written whole or not at all
  (temporary file, fsync, rename; the temporary removed on any failure).
- `read_json(path, what)`: a JSON file that must hold an object; anything else raises one line naming it.
- `read_json_entries(path, list_key, entry_problem, ...)`: a JSON file holding an object with a list of entries
  (the checkpoint manifest, the AutoAttack cache); an unreadable file raises one line, a damaged entry is skipped
  with a warning.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the lock is a no-op there
    fcntl = None

__all__ = ["OutputError", "check_writable", "output_lock", "temp_path", "clean_stale_temps", "write_error",
           "check_output", "refuse_special", "fallback_path", "is_being_written", "stale_temps", "write_json_atomic",
           "read_json", "read_json_entries"]

_HELD: dict[str, list] = {}      # lock path -> [fd, depth] for the locks this process holds
_LEGACY_TEMP_AGE_S = 3600        # temporaries without a pid (older versions) older than this are stale


class OutputError(OSError):
    """An output that cannot be written: a read-only or full folder, a folder where a file is expected,
    or a file another run is writing."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name in the folder of `path`, carrying this process's pid."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _temp_is_stale(tmp: Path, middle: list[str]) -> bool:
    if len(middle) == 2 and middle[0].isdigit():
        return not _pid_alive(int(middle[0]))
    return time.time() - tmp.stat().st_mtime > _LEGACY_TEMP_AGE_S   # an older mkstemp name: stale once it is old


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of `path` left by processes that no longer run; returns the removed paths."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(path.name) + 2:-len(".tmp")].split(".")
        try:
            if _temp_is_stale(tmp, middle):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """The temporaries ('.<name>.<pid>.<random>.tmp') in `folder` whose writer no longer runs: those a cleaner
    may delete. A live writer's temporary is never listed."""
    out = []
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name[1:-len(".tmp")].split(".")
        try:
            if len(parts) >= 3 and parts[-2].isdigit():
                stale = not _pid_alive(int(parts[-2]))
            else:
                stale = time.time() - tmp.stat().st_mtime > _LEGACY_TEMP_AGE_S
        except OSError:
            continue
        if stale:
            out.append(tmp)
    return out


def _folder_of(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def check_writable(path: str | os.PathLike, what: str = "output", hint: str = "", need_bytes: int = 0) -> Path:
    """Make sure a file can be written at `path` (a file path; its folder is created): a real write of a
    probe file, so a read-only mount, a full disk or a missing permission is found before the work.
    `need_bytes`: the expected size of the file; less free space than that is refused too."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the {what} {path} is a folder; name a file in it, e.g. {path / 'model.pt'}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with open(probe, "wb") as fh:
            fh.write(b"0")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as e:
        reason = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable",
                  errno.EPERM: "is not writable", errno.ENOSPC: "has no space left"}.get(e.errno, f"cannot be written ({e.strerror or e})")
        raise OutputError(f"cannot write the {what} {path}: the folder {folder} {reason}"
                          f"{'; ' + hint if hint else ''}") from e
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write the {what} {path}: the folder {folder} is not writable"
                          f"{'; ' + hint if hint else ''}")
    if need_bytes:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise OutputError(f"cannot write the {what} {path}: the folder {folder} has {free / 1e6:.2f} MB free, "
                              f"the file needs about {need_bytes / 1e6:.2f} MB{'; ' + hint if hint else ''}")
    return path


@contextlib.contextmanager
def output_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (None: nothing to lock) for the duration of the block.

    Raises OutputError when another process holds it. The lock file '.<name>.lock' is removed on release;
    a killed holder's lock is released by the kernel (flock), so a stale lock file never blocks a run."""
    if path is None or fcntl is None:
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    key = str(lock.resolve())
    if key in _HELD:                      # re-entrant: the same process already holds it
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {path}: cannot create its folder {lock.parent} ({e.strerror or e})") from e
    fd = _acquire(lock, path)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)               # while still holding it: a waiter that opened it sees a new inode
        os.close(fd)


def _acquire(lock: Path, path: Path) -> int:
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"cannot write {path}: cannot create the lock file {lock} "
                              f"({e.strerror or e})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(f"cannot lock {path} ({e.strerror or e})") from e
            raise OutputError(f"another run (pid {holder}) is writing {path}: wait for it to finish, or write "
                              f"to another file (--out / checkpoint_path)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            with contextlib.suppress(OSError):    # the holder's pid is for messages only: a full disk still locks
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)                      # the holder removed it after we opened it: try the new file
    raise OutputError(f"could not lock {path}: its lock file {lock} keeps changing")


def write_error(path: str | os.PathLike, error: BaseException) -> OutputError:
    """One line for a failed write of `path` (OSError, or torch's RuntimeError around one)."""
    path = Path(path)
    text = " ".join(str(error).split())[:200] or type(error).__name__
    code = getattr(error, "errno", None)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error) or (
        free is not None and free < 1 << 20 and isinstance(error, RuntimeError))
    if full:
        return OutputError(f"could not write {path}: no space left on the device ({free if free is not None else '?'} "
                           f"bytes free in {path.parent}); the previous {path.name}, if any, is unchanged. Free some "
                           "space or write elsewhere")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"could not write {path}: {path.parent} is read-only or not writable ({text})")
    if code == errno.EISDIR:
        return OutputError(f"could not write {path}: it is a folder; name a file")
    return OutputError(f"could not write {path} ({type(error).__name__}: {text})")


# ---------------------------------------------------------------------------------------------- only what is ours
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def _special(path: Path) -> str | None:
    """What `path` is when it is not a regular file we may replace (None: absent or a regular file)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link (to {os.readlink(path)})"
    for test, name in _KINDS:
        if test(st.st_mode):
            return name
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    return None


def refuse_special(path: str | os.PathLike, what: str = "output") -> None:
    """OutputError when `path` exists as anything but a regular file: a rename over a device node (/dev/null), a
    FIFO, a socket or a symbolic link would replace it (as root, /dev/null for the whole machine)."""
    path = Path(path)
    kind = _special(path)
    if kind == "a folder":
        raise OutputError(f"the {what} {path} is a folder; name a file in it, e.g. {path / 'model.pt'}")
    if kind is not None:
        hint = "only regular files are written"
        raise OutputError(f"refusing to write the {what} {path}: it is {kind}, not a regular file; name a file "
                          f"({hint})")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _shipped_files() -> dict[Path, str]:
    """The files the repository ships beside its checkpoints: every manifest entry, the manifest itself, the
    AutoAttack cache (a damaged manifest protects at least itself)."""
    from .checkpoints import MANIFEST_NAME, checkpoint_dir
    folder = checkpoint_dir()
    manifest = folder / MANIFEST_NAME
    out = {manifest: f"the checkpoint manifest {manifest}", folder / "autoattack_cache.json":
           f"the shipped AutoAttack cache {folder / 'autoattack_cache.json'}"}
    try:
        import json
        entries = json.loads(manifest.read_bytes().decode("utf-8")).get("checkpoints") or []
    except (OSError, ValueError, AttributeError):
        entries = []
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("file"), str):
            out[folder / e["file"]] = f"a shipped checkpoint listed in {manifest}"
    return out


def check_output(path: str | os.PathLike, what: str, *, inputs: dict | None = None,
                 others: dict | None = None) -> Path:
    """Refuse, before any work, to write `path` unless it is ours: OutputError (one line) when it is a device, a
    FIFO, a socket, a symbolic link or a folder, a shipped file, one of `inputs` ({path: 'the checkpoint being
    evaluated'}) or one of `others` ({path: 'the checkpoint (--out)'}, the command's other outputs)."""
    path = Path(path)
    refuse_special(path, what)
    for other, name in (inputs or {}).items():
        if other is not None and _same(path, Path(other)):
            raise OutputError(f"refusing to write the {what} {path}: it is {name}, an input of this command; "
                              "name another file")
    for other, name in (others or {}).items():
        if other is not None and _same(path, Path(other)):
            raise OutputError(f"refusing to write the {what} {path}: it is also {name}; give each output its own file")
    for shipped, name in _shipped_files().items():
        if _same(path, shipped):
            raise OutputError(f"refusing to write the {what} {path}: it is {name} (overwriting it would fail every "
                              "later checksum); name another file")
    return path


def fallback_path(path: str | os.PathLike) -> Path | None:
    """A path for the file `path` could not become: '<name>' in the current folder, the home folder or the
    temporary folder (the first where a probe write succeeds and no such file exists); None when none can."""
    import tempfile
    path = Path(path)
    for folder in (Path.cwd(), Path.home(), Path(tempfile.gettempdir())):
        for i in range(1, 100):
            candidate = folder / (path.name if i == 1 else f"{path.stem}-{i}{path.suffix}")
            if not candidate.exists() and not candidate.is_symlink():
                break
        else:
            continue
        try:
            if _same(candidate.parent, path.parent):
                continue
            check_writable(candidate)
            return candidate
        except OSError:
            continue
    return None


def is_being_written(path: str | os.PathLike) -> bool:
    """Whether another live process holds `output_lock(path)` now (its lock file is flocked)."""
    if fcntl is None:
        return False
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    if str(lock.resolve()) in _HELD:
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- JSON files
def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 2, what: str = "JSON file") -> Path:
    """Write `data` as JSON (plus a final newline) to `path` atomically: a temporary file in the same folder,
    fsync, then a rename over `path`, so a kill or a full disk never leaves half a file; the temporary is removed
    on any failure. A `path` that is not a regular file is refused (`refuse_special`, naming it as `what`), and
    the temporaries of dead writers of `path` are removed first. The folder must exist."""
    path = Path(path)
    refuse_special(path, what)
    clean_stale_temps(path)
    tmp = temp_path(path)       # unique per writer; open() gives the usual mode (umask), unlike mkstemp's 0600
    try:
        with open(tmp, "x") as fh:
            json.dump(data, fh, indent=indent)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """The object the JSON file `path` holds. ValueError (one line naming the file, as `what`) when it cannot be
    read, is not UTF-8 JSON (e.g. a write cut short) or holds something else than an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ValueError(f"the {what} {path} cannot be read ({e.strerror or e})") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"the {what} {path} is not UTF-8 JSON ({type(e).__name__}: {' '.join(str(e).split())[:100]}); "
                         "delete it to make it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {what} {path} holds a {type(data).__name__}, not a JSON object; delete it to make it "
                         "again")
    return data


def read_json_entries(path: str | os.PathLike, list_key: str, entry_problem: Callable[[object], str | None], *,
                      unreadable: Callable[[BaseException], str], kind: str,
                      skipped: Callable[[int, str], str], keep: Callable[[object], bool] | None = None,
                      error: type[Exception] = ValueError) -> dict:
    """The JSON file `path`: an object whose `list_key` is a list of entries ({'format': 1, list_key: []} when
    the file does not exist). A file that cannot be read or is not UTF-8 JSON raises `error(unreadable(e))`; one
    that is not such an object raises `error` saying it is not `kind`. An entry for which `entry_problem` names a
    problem is dropped with a RuntimeWarning `skipped(index, problem)` (unless `keep(entry)`: kept as it is)."""
    path = Path(path)
    if not path.exists():
        return {"format": 1, list_key: []}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(unreadable(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        article = "an" if list_key[0] in "aeiou" else "a"
        raise error(f"{path} is not {kind} (expected an object with {article} {list_key!r} list)")
    kept = []
    for i, e in enumerate(data[list_key]):
        problem = entry_problem(e)
        if problem is not None and not (keep is not None and keep(e)):
            warnings.warn(skipped(i, problem), RuntimeWarning, stacklevel=3)   # at the caller of the reader
            continue
        kept.append(e)
    data[list_key] = kept
    return data
