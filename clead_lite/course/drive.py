"""Keep the model store on Google Drive, so that the next Colab notebook (a fresh runtime) finds what earlier ones
trained. Only when the student asks: `setup(use_drive=True)` in the notebook's setup cell, and Google's own
dialog then asks for permission to mount Drive. Nothing here runs by itself.

    from clead_lite.course.drive import use_drive_store
    use_drive_store()     # mounts Drive at /content/drive, CLEAD_STORE=/content/drive/MyDrive/clead-course/store

Before the folder is used it is probed (`probe_folder`): an exclusive `flock` on a probe file must be granted
and a second lock on the same file, through another open file description, must be refused (else the lock is a
no-op there), and `os.replace` over an existing file must leave exactly the new contents (the store writes every
file to a temporary name, then renames it). The result is one printed line:

- locks and renames work: the store is used. A flock is kept by the kernel of one machine, so it keeps two
  notebooks of *this* runtime apart, not two runtimes (two VMs) writing to the same Drive folder. Those cannot
  corrupt the store either: every record carries the sha256 of its checkpoint and `store.find` loads only a
  checkpoint whose bytes match it; an entry mixed by two writers is skipped and its model trained again.
- the folder cannot lock (flock fails, or is a no-op): the store is still used, and the line says that two
  notebooks must not write to it at once (same sha256 protection as above).
- renames are not atomic there, or the folder cannot be written: the store is *not* moved; the line says why
  and the models stay in the runtime (lost when it ends).
"""
from __future__ import annotations

import errno
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock
    fcntl = None

__all__ = ["DRIVE_MOUNT", "DRIVE_FOLDER", "LockProbe", "in_colab", "probe_folder", "use_drive_store", "drive_hint"]

DRIVE_MOUNT = "/content/drive"                 # where Colab mounts Google Drive
DRIVE_FOLDER = "MyDrive/clead-course/store"    # the store's folder inside the mount
STORE_ENV = "CLEAD_STORE"                      # = store.STORE_ENV (not imported: no torch needed here)


def in_colab() -> bool:
    """True inside a Colab runtime: its `google.colab` module is imported, or COLAB_RELEASE_TAG is set."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


@dataclass(frozen=True)
class LockProbe:
    """What `probe_folder` found: `locks` (an exclusive flock is granted and excludes a second one), `renames`
    (os.replace over an existing file is complete), `problem` (one phrase when either is False)."""
    locks: bool
    renames: bool
    problem: str = ""


def _probe_lock(path: Path) -> str:
    """'' when flock on `path` works (granted, and a second lock through another open file is refused),
    else the phrase saying how it fails."""
    if fcntl is None:
        return "this system has no flock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            return f"flock is not supported there ({e.strerror or e})"
        second = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return ""                     # refused: the first lock holds
            return f"flock is not supported there ({e.strerror or e})"
        else:
            fcntl.flock(second, fcntl.LOCK_UN)
            return "flock is a no-op there (a second lock on a locked file was granted)"
        finally:
            os.close(second)
    finally:
        os.close(first)


def _probe_rename(target: Path) -> str:
    """'' when os.replace of a temporary file over an existing `target` leaves exactly the new contents."""
    tmp = target.with_name(target.name + ".tmp")
    old, new = b"old " + secrets.token_bytes(8), b"new " + secrets.token_bytes(64)
    target.write_bytes(old)
    with open(tmp, "wb") as fh:
        fh.write(new)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.replace(tmp, target)
    except OSError as e:
        return f"a file cannot be renamed over another there ({e.strerror or e})"
    if target.read_bytes() != new or tmp.exists():
        return "a rename over another file is not atomic there"
    return ""


def probe_folder(folder: str | os.PathLike) -> LockProbe:
    """Try the store's lock and atomic rename in `folder` (created if needed) with probe files that are removed
    afterwards. Raises OSError when the folder cannot be created or written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f".clead-probe.{os.getpid()}.{secrets.token_hex(4)}"
    lock, target = folder / f"{stem}.lock", folder / f"{stem}.bin"
    try:
        renamed = _probe_rename(target)
        locked = _probe_lock(lock)
    finally:
        for path in (lock, target, target.with_name(target.name + ".tmp")):
            try:
                path.unlink()
            except OSError:
                pass
    return LockProbe(locks=not locked, renames=not renamed, problem="; ".join(p for p in (renamed, locked) if p))


def _mount(mount_point: str) -> None:
    from google.colab import drive           # only on Colab (or a test's stand-in)
    drive.mount(mount_point)


def use_drive_store(folder: str = DRIVE_FOLDER, mount_point: str = DRIVE_MOUNT, *, quiet: bool = False) -> Path | None:
    """Mount Google Drive (Google asks the student for permission) and point the model store at `folder` inside
    it, after probing its lock and rename. Returns the store folder, or None when Drive is not used (not on
    Colab, the mount refused or failed, the folder unwritable, renames not atomic); prints one line either way
    (`quiet`: nothing printed)."""
    say = (lambda line: None) if quiet else print
    if not in_colab():
        say("Drive store: not on Colab, the model store stays where it is (CLEAD_STORE or data/store).")
        return None
    try:
        if not os.path.ismount(mount_point) and not (Path(mount_point) / "MyDrive").is_dir():
            _mount(mount_point)
    except Exception as e:   # noqa: BLE001 - the student refused, or Drive failed: go on without it
        say(f"Drive store: Google Drive was not mounted ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
            "models trained here are lost when this runtime ends.")
        return None
    path = Path(mount_point) / folder
    try:
        probe = probe_folder(path)
    except OSError as e:
        say(f"Drive store: cannot write {path} ({e.strerror or e}); models trained here are lost when this runtime ends.")
        return None
    if not probe.renames:
        say(f"Drive store: not used, {probe.problem} ({path}); models trained here are lost when this runtime ends.")
        return None
    os.environ[STORE_ENV] = str(path)
    if probe.locks:
        say(f"Drive store: {path} (CLEAD_STORE); locks and atomic renames work here, and a model written by two "
            "runtimes at once is caught by its sha256 and trained again, never loaded damaged.")
    else:
        say(f"Drive store: {path} (CLEAD_STORE); this folder cannot lock ({probe.problem}): do not run two notebooks "
            "that train at once (a damaged entry is caught by its sha256 and trained again).")
    return path


def drive_hint() -> str:
    """The one line `setup()` prints on Colab when the student has not chosen: how to keep models on Drive."""
    return ("Models trained in this runtime are lost when it ends; to keep them on Google Drive for the next "
            "notebooks, run setup(use_drive=True) (Google asks for permission first).")
