"""Fault injection, work kept after training (issue 22, item 3): when a save fails AFTER the training, nothing
trained is lost.

- The command line: the checkpoint (--out) cannot be written after training -> the trained model goes to a named
  fallback path (the current folder first) and stderr says where; the model store cannot be written -> a warning,
  the model is in --out, exit status 0.
- The notebooks: the store save fails after training -> `load_or_train` warns and returns the trained model.
- A `--resume` run is put into the store when it ends, and found there by the next run with the same settings.
- A full disk for the store: a real tmpfs (mounted where this machine allows it: root and a kernel that lets this
  container mount) that is too small before training, or that fills during training; where a tmpfs cannot be
  mounted those tests are skipped with the reason, and the same faults are simulated by a write that raises ENOSPC
  (the tests marked 'simulated'), which always run.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

import clead_lite.training as training
from clead_lite.course import checkpoints as ck
from clead_lite.course import store
from clead_lite.course.cli import main
from clead_lite.course.notebook_setup import load_or_train
from clead_lite.course.profiles import get_profile
from clead_lite.course.runs import Checkpoint

# the quick profile (the model store is used) at test sizes: 160 images, 2 epochs of 5 batches, no evaluation
TRAIN = ["train", "--method", "standard", "--profile", "quick", "--dataset", "mnist5k", "--n-train", "160",
         "--n-val", "0", "--batch-size", "32", "--epochs", "2", "--no-eval", "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _full_after_training(monkeypatch, folder: Path) -> None:
    """Simulated full disk: once `training.train` has returned, every torch.save into `folder` raises ENOSPC
    (what a disk that filled during the training gives); writes elsewhere still work."""
    real_train, real_save, folder = training.train, torch.save, folder.resolve()

    def full_save(obj, f, *args, **kwargs):
        if Path(getattr(f, "name", f)).resolve().parent == folder:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def train_then_fill(*args, **kwargs):
        result = real_train(*args, **kwargs)
        monkeypatch.setattr(torch, "save", full_save)
        return result

    monkeypatch.setattr(training, "train", train_then_fill)


def _leftovers(folder: Path) -> list[str]:
    """Files a failed save could leave: checkpoints, records, temporaries (the filler of a full tmpfs is not)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "filler") if folder.is_dir() else []


# ============================================================================================== the command line
def test_cli_an_unwritable_out_after_training_goes_to_a_named_fallback_simulated(tmp_path, monkeypatch, capsys):
    full, here = tmp_path / "full", tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("CLEAD_STORE", "off")
    out = full / "m.pt"
    _full_after_training(monkeypatch, full)
    assert main([*TRAIN, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    fallback = here / "m.pt"
    assert (f"could not write {out}: no space left on the device" in captured.err
            and f"the trained model was written to {fallback} instead (move it where you want it)" in captured.err)
    assert f"saved {fallback}" in captured.out
    state = ck.load_checkpoint(fallback)
    assert state["finished"] and state["method"] == "standard" and state["command"].startswith("python -m clead_lite")
    assert len([r for r in state["history"] if r.get("kind") == "epoch"]) == 2
    assert ck.load_checkpoint(out)["finished"]            # the hook's own last save, from before the disk filled
    assert not [p for p in full.iterdir() if p.name.endswith(".tmp")]


def test_cli_a_store_that_fails_after_training_keeps_the_model_in_out_simulated(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "store"
    monkeypatch.setenv("CLEAD_STORE", str(folder))
    out = tmp_path / "runs" / "m.pt"
    _full_after_training(monkeypatch, folder)
    assert main([*TRAIN, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: not stored in the model store (could not write " in err and "no space left on the device" in err
    assert err.rstrip().endswith(f"the model is in {out}")
    assert ck.load_checkpoint(out)["finished"] and _leftovers(folder) == []


# ============================================================================================== the notebooks
def test_notebook_a_store_save_failing_after_training_returns_the_model_simulated(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv("CLEAD_STORE", str(folder))
    _full_after_training(monkeypatch, folder)
    profile = get_profile("smoke").replace(use_checkpoints=True)
    x, y = _data()
    with pytest.warns(RuntimeWarning, match=r"the trained standard model was not stored \(could not write .*no space "
                                            r"left on the device.*\); it is returned, use it in this session"):
        result = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=0, epochs=1)
    assert result.source == "trained" and result.path is None and result.model(x[:2]).shape == (2, 10)
    assert _leftovers(folder) == []


# ============================================================================================== --resume is stored
def test_a_resumed_run_is_stored_and_found_by_the_next_run(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "store"
    monkeypatch.setenv("CLEAD_STORE", str(folder))
    out = tmp_path / "r.pt"
    real_epoch_end = Checkpoint.epoch_end

    def interrupted(self, run):     # Ctrl-C right after the first epoch's checkpoint
        real_epoch_end(self, run)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "epoch_end", interrupted)
        assert main([*TRAIN, "--out", str(out)]) == 130
    first = ck.load_checkpoint(out)
    assert not first["finished"] and _leftovers(folder) == []            # nothing stored from an unfinished run
    capsys.readouterr()
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    assert "saved to the model store: " in capsys.readouterr().out
    stored = [r for r in store.list_entries(folder=folder) if r["source"] == "store"]
    assert len(stored) == 1 and stored[0]["config"]["epochs"] == 2
    finished = ck.load_checkpoint(out)
    epochs = [r for r in finished["history"] if r.get("kind") == "epoch"]
    assert len(epochs) == 2 and finished["history"][:len(first["history"])] == first["history"]   # resumed
    kept = ck.load_checkpoint(stored[0]["file"])
    assert finished["finished"] and all(torch.equal(finished["model"][k], kept["model"][k]) for k in kept["model"])
    # the next run with the same settings loads it instead of training
    assert main([*TRAIN, "--out", str(tmp_path / "again.pt")]) == 0
    assert f"found this model in the store (store: {stored[0]['file']}); not training" in capsys.readouterr().out


# ============================================================================================== a real full disk
@contextlib.contextmanager
def _tmpfs(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` for the block; skips (with the reason) where none can be mounted."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full disk is covered by the '_simulated' tests (ENOSPC)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here ({proc.stderr.strip()}); the full disk is covered by the "
                    "'_simulated' tests (ENOSPC)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write zeros into `folder`/filler until the file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


def test_a_store_on_a_too_small_disk_is_found_before_training(tmp_path, monkeypatch, capsys):
    with _tmpfs(tmp_path / "store", "1m") as folder:
        monkeypatch.setenv("CLEAD_STORE", str(folder))
        out = tmp_path / "m.pt"
        seen = []
        real_train = training.train
        monkeypatch.setattr(training, "train", lambda *a, **k: seen.append(capsys.readouterr().err) or real_train(*a, **k))
        assert main([*TRAIN, "--out", str(out)]) == 0
        warned = seen[0]                                   # what stderr held when the training began
        assert f"warning: the model will be trained and written to {out}, but not stored: cannot write the model " \
               f"store {folder / 'model.pt'}: the folder {folder} has " in warned and "MB free, the file needs about" in warned
        assert ck.load_checkpoint(out)["finished"] and _leftovers(folder) == []


def test_a_store_disk_that_fills_during_training_keeps_the_model(tmp_path, monkeypatch):
    with _tmpfs(tmp_path / "store", "8m") as folder:
        monkeypatch.setenv("CLEAD_STORE", str(folder))
        real_train = training.train

        def train_then_fill(*args, **kwargs):       # the probe before training passed; then the disk fills up
            result = real_train(*args, **kwargs)
            _fill(folder)
            return result

        monkeypatch.setattr(training, "train", train_then_fill)
        profile = get_profile("smoke").replace(use_checkpoints=True)
        x, y = _data()
        with pytest.warns(RuntimeWarning, match=r"was not stored \(could not write .*no space left on the device"):
            result = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=0, epochs=1)
        assert result.source == "trained" and result.model(x[:2]).shape == (2, 10)
        assert _leftovers(folder) == []                     # no half-written checkpoint, record or temporary
