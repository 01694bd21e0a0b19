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
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the lock is a no-op there
    fcntl = None

__all__ = ["OutputError", "check_writable", "output_lock", "temp_path", "clean_stale_temps", "write_error"]

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
            if middle[0].isdigit() and len(middle) == 2:
                stale = not _pid_alive(int(middle[0]))
            else:                                   # an older mkstemp name: stale once it is old
                stale = time.time() - tmp.stat().st_mtime > _LEGACY_TEMP_AGE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed


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
