"""The Drive store for Colab (issue 21 item 3), on a fake mounted folder: `google.colab.drive.mount` is a stand-in
that creates `<tmp>/drive/MyDrive`; the lock probe's failure paths (flock refused, flock a no-op) and a rename that
is not atomic are simulated by monkeypatching fcntl / os.replace inside clead_lite.course.drive."""
from __future__ import annotations

import errno
import sys
import types

import pytest

from clead_lite.course import drive as D
from clead_lite.course import notebook_setup as N


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """google.colab with a drive.mount that 'mounts' Drive at the given folder (records its calls)."""
    calls = []

    def mount(mount_point, **kwargs):
        calls.append(mount_point)
        (tmp_path / "drive" / "MyDrive").mkdir(parents=True, exist_ok=True)

    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("CLEAD_STORE", raising=False)
    return calls


def _use(tmp_path, **kw):
    return D.use_drive_store(mount_point=str(tmp_path / "drive"), **kw)


def test_the_store_moves_to_drive_when_asked_and_locks_work(tmp_path, fake_colab, capsys, monkeypatch):
    path = _use(tmp_path)
    line = capsys.readouterr().out.strip()
    assert fake_colab == [str(tmp_path / "drive")], "mounted once, at the mount point"
    assert path == tmp_path / "drive" / "MyDrive" / "clead-course" / "store" and path.is_dir()
    assert D.os.environ["CLEAD_STORE"] == str(path)
    assert len(line.splitlines()) == 1 and "locks and atomic renames work" in line
    assert list(path.iterdir()) == [], "the probe files are removed"
    # the store itself now saves and finds models there
    from clead_lite.course import store
    assert store.store_dir() == path


def test_probe_finds_a_working_local_folder(tmp_path):
    probe = D.probe_folder(tmp_path / "store")
    assert probe == D.LockProbe(locks=True, renames=True, problem="")


def test_a_refused_flock_is_reported_in_one_line(tmp_path, fake_colab, capsys, monkeypatch):
    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(D.fcntl, "flock", refuse)
    probe = D.probe_folder(tmp_path / "p")
    assert not probe.locks and probe.renames and "not supported" in probe.problem
    path = _use(tmp_path)
    line = capsys.readouterr().out.strip()
    assert path is not None and len(line.splitlines()) == 1
    assert "cannot lock" in line and "No locks available" in line and "do not run two notebooks" in line


def test_a_no_op_flock_is_detected(tmp_path, fake_colab, capsys, monkeypatch):
    monkeypatch.setattr(D.fcntl, "flock", lambda fd, op: None)      # every lock granted: a no-op
    probe = D.probe_folder(tmp_path / "p")
    assert not probe.locks and "no-op" in probe.problem
    _use(tmp_path)
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "cannot lock" in line and "no-op" in line


def test_a_rename_that_is_not_atomic_keeps_the_store_off_drive(tmp_path, fake_colab, capsys, monkeypatch):
    def copy_then_keep(src, dst):      # a 'rename' that leaves the source behind (a copy), as some FUSE mounts do
        from pathlib import Path
        Path(dst).write_bytes(Path(src).read_bytes())
    monkeypatch.setattr(D.os, "replace", copy_then_keep)
    assert _use(tmp_path) is None
    line = capsys.readouterr().out.strip()
    assert "not atomic" in line and "CLEAD_STORE" not in D.os.environ


def test_a_refused_mount_goes_on_without_drive(tmp_path, fake_colab, capsys, monkeypatch):
    def refuse(mount_point, **kw):
        raise ValueError("mount failed: the user did not grant access")
    monkeypatch.setattr(sys.modules["google.colab"].drive, "mount", refuse)
    assert _use(tmp_path) is None
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "not mounted" in line and "did not grant" in line
    assert "CLEAD_STORE" not in D.os.environ


def test_outside_colab_nothing_is_mounted(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("CLEAD_STORE", raising=False)
    assert not D.in_colab()
    assert _use(tmp_path) is None and not (tmp_path / "drive").exists()
    assert "not on Colab" in capsys.readouterr().out
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261201")
    assert D.in_colab()


def test_setup_mounts_only_when_asked(tmp_path, fake_colab, capsys, monkeypatch):
    monkeypatch.setattr(D, "DRIVE_MOUNT", str(tmp_path / "drive"))
    monkeypatch.setattr(D.use_drive_store, "__defaults__", (D.DRIVE_FOLDER, str(tmp_path / "drive")))
    N.setup("smoke", device="cpu")                                    # the student has not chosen: a hint only
    out = capsys.readouterr().out
    assert fake_colab == [] and "setup(use_drive=True)" in out and "CLEAD_STORE" not in D.os.environ
    N.setup("smoke", device="cpu", use_drive=False)                   # declined: not even the hint
    assert fake_colab == [] and "use_drive" not in capsys.readouterr().out
    N.setup("smoke", device="cpu", use_drive=True)                    # agreed: mounted, store on Drive
    out = capsys.readouterr().out
    assert fake_colab == [str(tmp_path / "drive")] and "Drive store:" in out
    assert D.os.environ["CLEAD_STORE"].startswith(str(tmp_path / "drive"))
