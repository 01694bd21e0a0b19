"""benchmarks/run_results.py and benchmarks/budget_curve.py under bad input (issue 22, items 4-5): every count
argument is checked (one line, exit status 2, nothing created), a damaged row or point file is named in one line,
a second run on the same outputs is refused in one line, and a checkpoint trained with other settings than the
row's or the point's is never reused (the differing settings named). Called in-process on tiny sizes; nothing
here trains more than one 1-epoch model of 32 images."""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
from pathlib import Path

import pytest

from clead_lite.course.checkpoints import load_checkpoint, save_checkpoint
from clead_lite.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_results = _script("run_results")
budget_curve = _script("budget_curve")


def _no_work(script, monkeypatch) -> None:
    """The script's work (training, evaluating, scoring) fails the test at once: it must be refused before."""
    monkeypatch.setattr(script, "run_rows" if script is run_results else "run_points",
                        lambda *a: pytest.fail("the work started"))


def _refused(script, argv, capsys) -> str:
    """The one stderr line of a run that must exit with status 2."""
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("script, argv, words", [
    (run_results, ["--n-score", "-5"], "--n-score must be >= 1, got -5"),
    (run_results, ["--seeds", "0", "-1"], "--seeds must be an integer in [0, 4294967295]"),
    (run_results, ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (run_results, ["--n-train", "1"], "--n-train must be >= 2, got 1"),
    (run_results, ["--n-autoattack", "-1"], "--n-autoattack must be >= 0"),
    (run_results, ["--square-seeds", "-3"], "--square-seeds must be an integer in [0, 4294967295]"),
    (run_results, ["--restarts", "x"], "argument --restarts: invalid int value: 'x'"),
    (budget_curve, ["--n-score", "-5"], "--n-score must be >= 1, got -5"),
    (budget_curve, ["--epochs", "4", "0"], "--epochs must be >= 1, got 0"),
    (budget_curve, ["--seeds", "-2"], "--seeds must be an integer in [0, 4294967295]"),
    (budget_curve, ["--sweep-seed", str(2**32)], "--sweep-seed must be an integer in [0, 4294967295]"),
    (budget_curve, ["--attack-steps", "0"], "--attack-steps must be >= 1, got 0"),
    (budget_curve, ["--only", "-1"], "--only must be >= 0, got -1"),
    (budget_curve, ["--n-val", "4000"], "--n-val (4000) must be smaller than --n-train (4000)"),
    (budget_curve, ["--lam", "inf"], "argument --lam: invalid number 'inf': must be finite"),
    (budget_curve, ["--sweep-lambdas", "0.5", "-1"], "--sweep-lambdas must be >= 0, got -1.0"),
    (budget_curve, ["--epochs"], "argument --epochs: expected at least one argument"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_count_is_checked_before_any_work(script, argv, words, tmp_path, capsys, monkeypatch):
    _no_work(script, monkeypatch)
    out, runs = tmp_path / "out", tmp_path / "runs"
    err = _refused(script, [*argv, "--out", str(out), "--runs", str(runs)], capsys)
    assert err.startswith(f"{Path(script.__file__).name}: error: ") and words in err, err
    assert not out.exists() and not runs.exists()


@pytest.mark.parametrize("script, name, what", [(run_results, "mnist5k_standard_seed0.json", "row"),
                                                (budget_curve, "mnist5k_pgd_at_e4_s0_lam-.json", "budget-curve point")])
def test_a_damaged_row_or_point_is_named_in_one_line(script, name, what, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text('{"key": {"dataset": "mnist5k"')                   # a write cut short
    err = _refused(script, ["--summary", "--out", str(out), "--runs", str(tmp_path / "runs")], capsys)
    assert f"the {what} {out / name} is not UTF-8 JSON (JSONDecodeError" in err
    (out / name).write_text("[1, 2]")
    err = _refused(script, ["--summary", "--out", str(out), "--runs", str(tmp_path / "runs")], capsys)
    assert f"the {what} {out / name} holds a list, not a JSON object" in err


def _held_elsewhere(path: Path) -> int:
    """flock `path`'s lock file the way `safe_io.output_lock` does in another process (flock locks belong to an
    open file, so a second open in this process conflicts like another process would); returns the fd."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242")
    return fd


@pytest.mark.parametrize("script", [run_results, budget_curve], ids=["run_results", "budget_curve"])
@pytest.mark.parametrize("held", ["out", "runs"])
def test_a_second_run_on_the_same_outputs_is_refused(script, held, tmp_path, capsys, monkeypatch):
    paths = {"out": tmp_path / "out", "runs": tmp_path / "runs"}
    for p in paths.values():
        p.mkdir()
    _no_work(script, monkeypatch)
    fd = _held_elsewhere(paths[held])
    try:
        err = _refused(script, ["--out", str(paths["out"]), "--runs", str(paths["runs"])], capsys)
    finally:
        os.close(fd)
    assert f"another run (pid 4242) is writing {paths[held]}" in err


def test_run_results_holds_no_lock_for_a_summary(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    fd = _held_elsewhere(out)
    try:
        assert run_results.main(["--summary", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- a row is its model
ROW = ["--datasets", "mnist5k", "--methods", "standard", "--seeds", "0", "--profile", "smoke", "--n-train", "160",
       "--attack-steps", "1", "--n-test", "16", "--steps", "2", "--restarts", "1", "--n-autoattack", "0", "--no-score",
       "--no-sanity", "--device", "cpu"]


def _checkpoint(path: Path, **state) -> Path:
    return save_checkpoint(path, {"model": SmallCNN().state_dict(), "model_name": "smallcnn", **state})


def test_run_results_never_reuses_a_checkpoint_of_other_settings(tmp_path, capsys, monkeypatch):
    out, runs = tmp_path / "out", tmp_path / "runs"
    ckpt = runs / "mnist5k_standard_seed0.pt"
    trained = ("python -m clead_lite train --method standard --dataset mnist5k --profile smoke --seed 0 --n-train 160 "
               f"--epochs 1 --attack-steps 1 --out {ckpt} --no-eval --no-progress --device cpu")
    _checkpoint(ckpt, kind="train", finished=True, command=trained, config={"method": "standard", "epochs": 1})
    monkeypatch.setattr(run_results, "run", lambda cmd: pytest.fail(f"ran {cmd}"))
    err = _refused(run_results, [*ROW, "--epochs", "2", "--redo", "--out", str(out), "--runs", str(runs)], capsys)
    assert f"{ckpt} was trained with other settings than this row's: --epochs 1 (this row: 2);" in err
    assert "remove it to train the row again, or pass another --runs" in err and not list(out.glob("*.json"))
    # a killed run (no command yet): its config and its training images say what it was
    _checkpoint(ckpt, kind="train", finished=False, epoch=1, config={"method": "standard", "epochs": 3, "seed": 0,
                                                                     "attack_steps": 1},
                dataset="mnist5k", data_fingerprint={"dataset": "mnist5k", "n": 96, "sha256": "0" * 64})
    err = _refused(run_results, [*ROW, "--epochs", "3", "--out", str(out), "--runs", str(runs)], capsys)
    assert "--n-train 96 (this row: 160)" in err and "--epochs" not in err.split("settings than this row's")[1]
    # the same settings: the checkpoint is the row's, and the row goes on to its commands
    settings = {"--method": "standard", "--dataset": "mnist5k", "--profile": "smoke", "--seed": "0",
                "--n-train": "160", "--epochs": "1", "--attack-steps": "1"}
    _checkpoint(ckpt, kind="train", finished=True, command=trained)
    assert run_results.refuse_other_settings(ckpt, settings, "standard") is None
    _checkpoint(ckpt, kind="train", finished=True, command=trained.replace(" --attack-steps 1", ""))
    with pytest.raises(ValueError, match=r"--attack-steps not given \(this row: 1\)"):
        run_results.refuse_other_settings(ckpt, settings, "standard")


def _stub_scores(monkeypatch):
    """The APGD scoring of a point replaced by a stub: these tests are about its checkpoint, not its score."""
    import clead_lite.course.scoring as scoring
    monkeypatch.setattr(scoring, "score_model", lambda model, x, y, eps, columns, seed: {
        "apgd": 0.0, "apgd_correct": [0] * len(y), "n_scored": len(y)})


POINT = ["--methods", "pgd_at", "--epochs", "1", "--seeds", "0", "--sweep-lambdas", "--n-train", "40", "--n-val", "8",
         "--attack-steps", "1", "--n-score", "4", "--device", "cpu"]


def test_budget_curve_never_trains_on_from_a_checkpoint_of_other_settings(tmp_path, capsys, monkeypatch):
    _stub_scores(monkeypatch)
    out, runs = tmp_path / "out", tmp_path / "runs"
    ckpt = runs / "mnist5k_pgd_at_e1_s0_lam-.pt"
    _checkpoint(ckpt, kind="train", epoch=1, config={"method": "pgd_at", "attack_steps": 3, "n_val": 8})
    err = _refused(budget_curve, [*POINT, "--out", str(out), "--runs", str(runs)], capsys)
    assert f"cannot resume from {ckpt}: its run used other settings (attack_steps: checkpoint 3 vs now 1)" in err
    assert "--redo trains this point afresh over it, or pass another --runs" in err
    assert not list(out.glob("*.json")) and load_checkpoint(ckpt)["config"]["attack_steps"] == 3
    # --redo: trained afresh over it; the point and the checkpoint then hold this grid's settings
    assert budget_curve.main([*POINT, "--redo", "--out", str(out), "--runs", str(runs)]) == 0
    assert "was trained with other settings; --redo: training the point afresh" in capsys.readouterr().out
    point = json.loads((out / "mnist5k_pgd_at_e1_s0_lam-.json").read_text())
    assert point["result"]["config"]["attack_steps"] == 1 == load_checkpoint(ckpt)["config"]["attack_steps"]
    assert load_checkpoint(ckpt)["finished"] and point["result"]["epochs_run"] == 1


def test_run_results_adds_columns_only_from_the_rows_own_model(tmp_path, capsys, monkeypatch):
    """A row on disk that gets new columns (--add-autoattack, new score columns) takes them from its own model only:
    the checkpoint in --runs must have been trained by the command the row recorded."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    ckpt = runs / "mnist5k_standard_seed0.pt"
    row_cmd = ("python -m clead_lite train --method standard --dataset mnist5k --profile smoke --seed 0 --n-train 160 "
               f"--epochs 1 --attack-steps 1 --out {ckpt} --no-eval --no-progress --device cpu")
    row = out / "mnist5k_standard_seed0.json"
    row.write_text(json.dumps({"row": {"clean": 0.5, "autoattack": None}, "train_command": row_cmd}))
    _checkpoint(ckpt, kind="train", finished=True, command=row_cmd.replace("--epochs 1", "--epochs 2"))
    monkeypatch.setattr(run_results, "add_autoattack", lambda *a: pytest.fail("AutoAttack ran on another model"))
    argv = [*ROW, "--n-autoattack", "8", "--add-autoattack", "--out", str(out), "--runs", str(runs)]
    err = _refused(run_results, argv, capsys)
    assert f"{ckpt} is not the model of {row}" in err and "--epochs 2" in err
    # the row's own checkpoint: the column is added
    _checkpoint(ckpt, kind="train", finished=True, command=row_cmd)
    added = []
    monkeypatch.setattr(run_results, "add_autoattack", lambda record, c, args: added.append(c) or record)

    class RowsDone(Exception):
        pass

    def stop(folder):   # the summary of the rows after them is not this test's subject
        raise RowsDone()
    monkeypatch.setattr(run_results, "load_results", stop)
    with pytest.raises(RowsDone):
        run_results.main(argv)
    assert added == [ckpt]
