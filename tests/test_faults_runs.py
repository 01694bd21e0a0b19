"""Fault injection, runs: SIGKILL during an epoch and during a checkpoint write then the command line's
--resume (bit-identical to an uninterrupted run), two concurrent writers of one --out, a diverging run,
resume on other data, and torchrun with 2 processes (gloo) where only rank 0 writes. Faults are real: the
killed runs are separate processes (tests/fault_worker.py) that SIGKILL themselves at a chosen point."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clead_lite.course.cli import main
from clead_lite.course.checkpoints import load_checkpoint
from clead_lite.course.datasets import load_dataset
from clead_lite.models import SmallCNN
from clead_lite.course.runs import Checkpoint
from clead_lite.training import TrainConfig, TrainingDivergedError, train

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fault_worker.py"
# 160 images, batch 32: 5 optimiser steps per epoch, 3 epochs; PGD-AT so that the attack's random stream,
# the augmentation and the schedule all have to be restored exactly
TRAIN = ["train", "--method", "pgd_at", "--profile", "smoke", "--n-train", "160", "--n-val", "0",
         "--batch-size", "32", "--epochs", "3", "--no-eval", "--no-progress", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the killed subprocesses run on one thread too: the same arithmetic


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLEAD_CACHE_DIR": str(tmp_path / "cache"),
           "CLEAD_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("CLEAD_PROFILE", None)
    return env


def _worker(mode: str, n: int, tmp_path: Path, args: list[str], wait: bool = True):
    cmd = [sys.executable, str(WORKER), mode, str(n), str(tmp_path), "--", *args]
    if not wait:
        return subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, through the command line (in this process)."""
    out = tmp_path_factory.mktemp("ref") / "ref.pt"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return load_checkpoint(out)


def _same_weights(a: dict, b: dict) -> bool:
    return a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_sigkill_during_an_epoch_then_cli_resume_is_bit_identical(tmp_path, reference):
    out = tmp_path / "r.pt"
    proc = _worker("kill-step", 8, tmp_path, [*TRAIN, "--out", str(out)])     # step 8: inside epoch 2
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = load_checkpoint(out)
    assert state["epoch"] == 1 and not state["finished"]                      # epoch 1's checkpoint survived
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    resumed = load_checkpoint(out)
    assert resumed["finished"] and resumed["epoch"] == 3
    assert _same_weights(resumed, reference)
    assert [r["loss"] for r in resumed["history"] if r["kind"] == "epoch"] == \
           [r["loss"] for r in reference["history"] if r["kind"] == "epoch"]
    assert not _temps(tmp_path) and not list(tmp_path.glob(".*.lock"))


def test_sigkill_during_a_checkpoint_write_then_cli_resume(tmp_path, reference):
    out = tmp_path / "r.pt"
    proc = _worker("kill-save", 2, tmp_path, [*TRAIN, "--out", str(out)])     # the 2nd save: epoch 2's
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (stale,) = _temps(tmp_path)                                               # half a file, under a temp name
    assert stale.stat().st_size > 0
    state = load_checkpoint(out)                                              # the previous file is intact
    assert state["epoch"] == 1 and not state["finished"]
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    assert not stale.exists() and not _temps(tmp_path)                        # the dead writer's temp is gone
    assert _same_weights(load_checkpoint(out), reference)


def test_resume_when_nothing_exists_yet_starts_afresh(tmp_path, reference):
    out = tmp_path / "new.pt"
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0                 # issue 11: used to exit 2
    assert _same_weights(load_checkpoint(out), reference)


def test_two_concurrent_writers_of_one_output(tmp_path, capsys):
    out = tmp_path / "same.pt"
    first = _worker("pause-step", 2, tmp_path, [*TRAIN, "--out", str(out), "--seed", "1"], wait=False)
    marker = tmp_path / "paused"
    deadline = time.time() + 120
    while not marker.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), first.communicate()[1][-2000:]
    try:
        rc = main([*TRAIN, "--out", str(out), "--seed", "2"])                # the second writer, same --out
        err = capsys.readouterr().err
    finally:
        marker.unlink()
    stdout, stderr = first.communicate(timeout=300)
    assert rc == 2 and f"another run (pid {first.pid}) is writing {out}" in err and err.count("\n") == 1, err
    assert first.returncode == 0, stderr[-2000:]
    state = load_checkpoint(out)                                              # one run's file, not a mix
    assert state["seed"] == 1 and state["config"]["seed"] == 1 and "--seed 1" in state["command"]
    assert not list(tmp_path.glob(".*.lock"))                                 # released at the end
    assert main([*TRAIN, "--out", str(out), "--seed", "2", "--epochs", "1"]) == 0   # now free


def test_diverged_run_stops_with_exit_2_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "nan.pt"
    rc = main(["train", "--method", "pgd_at", "--profile", "smoke", "--lr", "1e9", "--no-progress", "--device", "cpu",
               "--out", str(out)])                                        # the command of issue 11
    err = capsys.readouterr().err
    assert rc == 2 and "training diverged" in err and "no checkpoint of this run was written" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path):
    x, y = load_dataset("mnist5k", "train", n=96, seed=0)
    path = tmp_path / "d.pt"

    def poison(record, model):        # after epoch 1 is saved, the weights blow up (as a huge lr would)
        if record["kind"] == "epoch" and record["epoch"] == 1:
            with torch.no_grad():
                model.classifier.weight.mul_(1e38).mul_(1e38)

    cfg = TrainConfig(method="standard", epochs=3, batch_size=32, n_val=0)
    torch.manual_seed(0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3 .*last good checkpoint .*after epoch 1\) is kept"):
        train(SmallCNN(width=8, feature_dim=32), x, y, cfg, dataset="mnist5k", device="cpu", progress=False,
              callback=poison, hook=Checkpoint(path))
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and not state["finished"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_resume_refuses_other_training_data(tmp_path):
    x, y = load_dataset("mnist5k", "train", n=96, seed=0)
    path = tmp_path / "fp.pt"

    def stop(record, model):
        if record["kind"] == "epoch":
            raise KeyboardInterrupt      # a run interrupted after its first epoch

    cfg = TrainConfig(method="standard", epochs=2, batch_size=32, n_val=0, eps=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(SmallCNN(width=8, feature_dim=32), x, y, cfg, dataset="mnist5k", device="cpu", progress=False,
              callback=stop, hook=Checkpoint(path))
    assert load_checkpoint(path)["data_fingerprint"]["n"] == 96
    x2, y2 = load_dataset("mnist5k", "train", n=96, seed=1)                     # as many images, other ones
    with pytest.raises(Exception, match=r"cannot resume from .*96 mnist5k images .*this run has 96 mnist5k"):
        train(SmallCNN(width=8, feature_dim=32), x2, y2, cfg, dataset="mnist5k", device="cpu", progress=False,
              hook=Checkpoint(path, resume=True))
    with pytest.raises(Exception, match=r"trained on 96 mnist5k images .*this run has 64 fashion-mnist"):
        train(SmallCNN(width=8, feature_dim=32), x[:64], y[:64], cfg, dataset="fashion-mnist", device="cpu",
              progress=False, hook=Checkpoint(path, resume=True))
    result = train(SmallCNN(width=8, feature_dim=32), x, y, cfg, dataset="mnist5k", device="cpu", progress=False,
                   hook=Checkpoint(path, resume=True))
    assert result.epochs_run == 2                                                 # the same data: it resumes


def test_torchrun_two_processes_only_rank0_writes_and_evaluates(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           "trace", "0", str(tmp_path), "--", "train", "--method", "standard", "--profile", "smoke",
           "--n-train", "128", "--n-val", "0", "--batch-size", "32", "--no-progress", "--device", "cpu",
           "--out", str(out), "--json", str(tmp_path / "run.json")]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = (tmp_path / "trace-rank0.txt").read_text().splitlines()
    assert not (tmp_path / "trace-rank1.txt").exists(), (tmp_path / "trace-rank1.txt").read_text()
    assert rank0 == ["save ddp.pt finished=False metrics=False", "save ddp.pt finished=True metrics=False",
                     "evaluate", "save ddp.pt finished=True metrics=True", "json run.json"]
    assert proc.stdout.count("saved ") == 1 and proc.stdout.count("wrote ") == 1
    state = load_checkpoint(out)
    assert state["finished"] and state["metrics"]["n"] > 0
