"""The command line: train and evaluate in the smoke profile (subprocesses), the demo, exit code 2 on errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clead_lite.course.cli import main
from clead_lite.course.checkpoints import load_checkpoint, save_checkpoint
from clead_lite.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(*args: str, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLEAD_CACHE_DIR": str(tmp_path / "cache"),
           "CLEAD_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("CLEAD_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "clead_lite", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def test_train_faithful_then_evaluate_with_the_surrogate_as_source(tmp_path):
    out = tmp_path / "runs" / "faithful.pt"
    proc = run_cli("train", "--method", "clead_faithful", "--profile", "smoke", "--seed", "1", "--out", str(out),
                   "--n-train", "160", "--n-val", "32", "--no-progress", "--json", str(tmp_path / "train.json"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clean" in proc.stdout and "transfer" in proc.stdout and "saved" in proc.stdout
    # the header states the run's own settings, not only the profile's defaults
    assert "(overridden: --n-train 160 --n-val 32)" in proc.stdout
    assert "training clead_faithful on 160 mnist5k images for 1 epoch(s), eps 0.3, PGD-2 in training" in proc.stdout
    state = load_checkpoint(out)
    assert state["method"] == "clead_faithful" and state["dataset"] == "mnist5k" and state["profile"] == "smoke"
    assert state["seed"] == 1 and "clead_faithful" in state["command"] and state["finished"]
    assert {"clean", "pgd", "transfer"} <= set(state["metrics"])
    assert {r["stage"] for r in state["history"]} == {"surrogate", "encoder", "head"}
    surrogate = Path(state["surrogate"])
    assert surrogate.exists() and load_checkpoint(surrogate)["method"] == "standard"
    assert list((tmp_path / "cache").glob("views-*.pt"))  # the 8-bit views were cached
    trained = json.loads((tmp_path / "train.json").read_text())
    assert trained["row"]["transfer_source"] == "surrogate (standard)"

    report = tmp_path / "eval.json"
    proc = run_cli("evaluate", str(out), "--n-autoattack", "8", "--n", "48", "--json", str(report), "--sanity",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AutoAttack (standard) on 8" in proc.stdout and "Sanity checks" in proc.stdout
    data = json.loads(report.read_text())
    row = data["row"]
    assert row["n"] == 48 and row["n_autoattack"] == 8 and row["eps"] == 0.3
    assert row["transfer_source"] == surrogate.name and 0.0 <= row["transfer"] <= 1.0
    assert 0.0 <= row["autoattack"] <= row["clean"] and row["pgd"] <= row["fgsm"] + 2 / 48
    assert data["sanity"]["checks"] and data["method"] == "clead_faithful"


def test_demo_smoke_prints_a_table(capsys):
    assert main(["demo", "--profile", "smoke", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("standard", "pgd_at"))]
    assert len(lines) == 2 and "white-box" in lines[0]
    assert "transfer" in out


def test_bad_arguments_exit_2_from_a_subprocess(tmp_path):
    proc = run_cli("train", "--method", "magic", tmp_path=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'magic'" in proc.stderr
    proc = run_cli("evaluate", str(tmp_path / "missing.pt"), tmp_path=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["train"], "the following arguments are required: --method"),
    (["train", "--method", "pgd_at", "--profile", "tiny"], "invalid choice: 'tiny'"),
    (["train", "--method", "pgd_at", "--epochs", "two"], "invalid int value: 'two'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_argparse_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_usage_errors_exit_2_with_a_clear_message(tmp_path, capsys):
    cases = []
    cases.append((["train", "--method", "pgd_at", "--profile", "smoke", "--supcon", "--out", str(tmp_path / "a.pt")],
                  "--supcon only applies to --method clead_online"))
    cases.append((["train", "--method", "pgd_at", "--profile", "smoke", "--eps", "8", "--out", str(tmp_path / "a.pt")],
                  "eps must be in [0, 1], got 8"))
    html = tmp_path / "page.pt"
    html.write_bytes(b"<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    cases.append((["evaluate", str(html)], "looks like an HTML page, not a checkpoint"))
    foreign = save_checkpoint(tmp_path / "foreign.pt", {"model": SmallCNN().state_dict()})
    cases.append((["evaluate", str(foreign)], "does not say which model it holds"))
    torch.manual_seed(0)
    model = SmallCNN()
    ok = save_checkpoint(tmp_path / "ok.pt", {"model": model.state_dict(), "model_name": "smallcnn",
                                              "model_config": {"num_classes": 10}})
    cases.append((["evaluate", str(ok)], "does not record its dataset: pass --dataset"))
    cases.append((["evaluate", str(ok), "--dataset", "mnist5k", "--n", "0"], "--n must be >= 1, got 0"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "error:" in err, (argv, err)
    assert not (tmp_path / "a.pt").exists()
