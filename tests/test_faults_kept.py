"""Fault injection, work kept and messages: a read-only model store is found before training and the trained
model is still returned; `store clear` leaves alone a model another live process is writing; Ctrl-C (a real
SIGINT) says what was kept and how to resume, and a rerun without --resume is refused instead of starting over;
unclear inputs (a seed past 2**32 - 1, inf for --lr / --lambda / --beta, a plain state_dict, a relative
CLEAD_STORE) get one clear line."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import clead_lite.course.store as store
from clead_lite.course import checkpoints as ck
from clead_lite.course.cli import main
from clead_lite.course.notebook_setup import load_or_train
from clead_lite.course.profiles import get_profile
from clead_lite.models import SmallCNN
from clead_lite.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fault_worker.py"
TRAIN = ["train", "--method", "standard", "--profile", "smoke", "--n-train", "160", "--n-val", "0",
         "--batch-size", "32", "--epochs", "3", "--no-eval", "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_a_read_only_store_is_found_before_training_and_the_model_returned(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"root defeats chmod and a read-only tmpfs cannot be mounted here: {proc.stderr.strip()}")
    else:
        ro.chmod(0o555)
    try:
        monkeypatch.setenv("CLEAD_STORE", str(ro))
        profile = get_profile("smoke").replace(use_checkpoints=True)
        x, y = _data()
        with pytest.warns(RuntimeWarning, match=r"will not be stored: cannot write the model store .*read-only|"
                                                r"will not be stored: cannot write the model store .*not writable"):
            result = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=0, epochs=1)
        assert result.model is not None and result.source == "trained" and result.path is None
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_store_clear_never_deletes_a_file_another_process_is_writing(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "store"
    monkeypatch.setenv("CLEAD_STORE", str(folder))
    x, y = _data()
    cfg = TrainConfig(method="standard", epochs=1, batch_size=32)
    key = store.model_key("standard", "mnist5k", "smallcnn", "smoke", cfg, x, y)
    path = store.save_model(key, SmallCNN(), cfg)
    path.with_suffix(".json").unlink()                     # as between the .pt and its record of a live save
    marker = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib\n"
        "from clead_lite.course.safe_io import output_lock\n"
        f"with output_lock({str(path)!r}):\n"
        f"    m = pathlib.Path({str(marker)!r}); m.write_text('x')\n"
        "    while m.exists(): time.sleep(0.05)\n")], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert marker.exists()
        assert main(["store", "clear", "--yes"]) == 0
        out = capsys.readouterr().out
        assert "kept 1 model(s) that another running process is writing now" in out and path.exists()
    finally:
        marker.unlink(missing_ok=True)
        holder.wait(timeout=60)
    assert main(["store", "clear", "--yes"]) == 0 and not path.exists()    # once it has finished


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path):
    out = tmp_path / "r.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "CLEAD_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CLEAD_PROFILE", None)
    proc = subprocess.run([sys.executable, str(WORKER), "sigint-step", "7", str(tmp_path), "--", *TRAIN,
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"interrupted: kept {out} (after epoch 1 of 3); to continue it: " in last and last.endswith("--resume")
    rc = main([*TRAIN, "--out", str(out)])                                # a rerun without --resume: refused
    assert rc == 2 and not ck.load_checkpoint(out)["finished"]
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0 and ck.load_checkpoint(out)["finished"]


@pytest.mark.parametrize("argv, words", [
    (["--seed", str(2**63)], "invalid seed '9223372036854775808': must be in [0, 4294967295]"),
    (["--seed", "-1"], "invalid seed '-1'"),
    (["--lr", "inf"], "argument --lr: invalid number 'inf': must be finite"),
    (["--lambda", "inf"], "argument --lambda: invalid number 'inf': must be finite"),
    (["--beta=-inf"], "argument --beta: invalid number '-inf': must be finite"),
])
def test_unclear_numbers_are_refused_by_the_parser(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--method", "trades", *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_inf_is_refused_by_the_config_too():
    for field in ("lr", "contrastive_weight", "trades_beta"):
        with pytest.raises(ValueError, match="must be a finite number"):
            TrainConfig(method="trades", **{field: float("inf")}).validate()


def test_a_plain_state_dict_gets_a_hint_without_escape_codes(tmp_path, capsys):
    sd = tmp_path / "sd.pt"
    torch.save(SmallCNN().state_dict(), sd)
    whole = tmp_path / "whole.pt"
    torch.save(SmallCNN(), whole)
    assert main(["evaluate", str(sd), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a plain state_dict" in err and "save_checkpoint('wrapped.pt'" in err and "model_name='smallcnn'" in err
    assert main(["evaluate", str(whole), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "a pickled clead_lite.models.SmallCNN" in err and "\x1b" not in err and err.count("\n") == 1
    assert "weights_only=False" not in err


def test_a_relative_clead_store_is_one_folder_from_every_cwd(monkeypatch, tmp_path):
    monkeypatch.setenv("CLEAD_STORE", "build/test-store")
    monkeypatch.chdir(ROOT)
    here = store.store_dir()
    monkeypatch.chdir(ROOT / "notebooks")
    assert store.store_dir() == here == ROOT / "build" / "test-store"
    assert "resolved against the repository" in store.describe_store_dir()


def test_a_missing_data_root_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    from clead_lite.course.datasets import DatasetNotFoundError, load_dataset
    import torchvision.datasets as tvd

    def failing_download(root, train, download):     # what torchvision does offline: folders first, then fails
        (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n<urlopen error>")

    monkeypatch.setattr(tvd, "MNIST", failing_download)
    monkeypatch.delenv("CLEAD_OFFLINE", raising=False)
    root = tmp_path / "no-such-root"
    monkeypatch.setenv("CLEAD_DATA_ROOT", str(root))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "train")
    text = str(info.value)
    assert "\n" not in text and f"the data root {root} (CLEAD_DATA_ROOT; the folder does not exist)" in text
    assert text.endswith("The offline default 'mnist5k' needs no download.") and not root.exists()


def test_an_ascii_terminal_after_training_loses_nothing(tmp_path):
    out = tmp_path / "a.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONIOENCODING": "ascii", "CLEAD_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "clead_lite", "train", "--method", "standard", "--profile", "smoke",
                           "--n-train", "64", "--n-val", "0", "--epochs", "1", "--no-progress", "--device", "cpu",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ck.load_checkpoint(out)["metrics"]["n"] > 0
