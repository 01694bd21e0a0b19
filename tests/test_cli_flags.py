"""Every `train` flag changes what it names (one parametrised test, in-process, training and evaluation
replaced by recorders), one real `train` subprocess with the clead_online flags, `evaluate --sanity`
passing, `course` on two course notebooks in smoke, `train_faithful` resuming from a stage checkpoint, and
the shipped-checkpoint branch of `load_or_train` (a tiny checkpoint and manifest made here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clead_lite.course.datasets as data_module
import clead_lite.course.tables as tables_module
import clead_lite.evaluation as evaluation_module
import clead_lite.faithful as fa
import clead_lite.course.profiles as profiles_module
import clead_lite.training as tr
from clead_lite.course.cli import build_parser, main
from clead_lite.course.profiles import train_config
from clead_lite.course.runs import Checkpoint
from clead_lite.course.views_cache import ViewsCache
from clead_lite.course.checkpoints import CheckpointError, ChecksumError, load_checkpoint, model_metadata, save_checkpoint, write_manifest_entry
from clead_lite.models import SmallCNN
from clead_lite.course.notebook_setup import load_or_train
from clead_lite.course.profiles import get_profile
from clead_lite.course.store import model_key
from clead_lite.training import History, TrainConfig, TrainResult

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def recorder(monkeypatch, tmp_path):
    """Replace data loading, training and evaluation by recorders; returns the dict they fill."""
    calls: dict = {}
    monkeypatch.setenv("CLEAD_PROFILE", "smoke")
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("CLEAD_DEVICE", raising=False)
    monkeypatch.delenv("CLEAD_DATASET", raising=False)

    def load_dataset(name, split="train", root=None, n=None, seed=0):
        calls.setdefault("data", []).append((name, split, n))
        g = torch.Generator().manual_seed(seed)
        k = n or 64
        return torch.rand(k, 1, 28, 28, generator=g), torch.randint(0, 10, (k,), generator=g)

    def train(model, x, y, config, *, dataset=None, device=None, progress=True, hook=None, **kw):
        calls.update(config=config, dataset=dataset, device=str(device), progress=progress, n_train=len(y),
                     checkpoint=str(hook.path), resume=hook.resume)
        save_checkpoint(hook.path, {"model": model.state_dict(), **model_metadata(model)})
        return TrainResult(model=model.eval(), history=History(), config=config)

    def evaluate(model, x, y, **kw):
        calls["evaluated"] = True
        return {"clean": 0.5, "fgsm": 0.4, "pgd": 0.3, "transfer": None, "n": len(y), "eps": kw["eps"],
                "steps": kw["steps"], "restarts": kw["restarts"]}

    def train_faithful(x, y, config, faithful=None, *, dataset=None, device=None, progress=True, hook=None, **kw):
        calls.update(config=config, faithful=faithful, dataset=dataset, device=str(device), progress=progress, n_train=len(y),
                     checkpoint=str(hook.path), resume=hook.resume)
        model = SmallCNN().eval()
        save_checkpoint(hook.path, {"model": model.state_dict(), **model_metadata(model)})
        return fa.FaithfulResult(model=model, surrogate=SmallCNN().eval(), histories={}, config=config)

    monkeypatch.setattr(data_module, "load_dataset", load_dataset)
    monkeypatch.setattr(tr, "train", train)
    monkeypatch.setattr(fa, "train_faithful", train_faithful)
    # the device is passed on as asked (the real get_device refuses a missing GPU: tests/test_faults_*.py)
    monkeypatch.setattr(profiles_module, "get_device", lambda d=None: torch.device(d or "cpu"))
    monkeypatch.setattr(evaluation_module, "evaluate", evaluate)
    monkeypatch.setattr(tables_module, "format_table", lambda rows: "<table>")
    return calls


def run_train(calls, extra, tmp_path):
    calls.clear()
    argv = ["train", "--method", "clead_online", *extra]
    assert main(argv) == 0, argv
    return dict(calls)


cfg = lambda field: (lambda c: getattr(c["config"], field))   # noqa: E731
# flag -> (extra argv, what it changes, the expected value). The run without the flag must differ.
CASES = {
    "--method": (["--method", "pgd_at"], cfg("method"), "pgd_at"),
    "--dataset": (["--dataset", "mnist"], lambda c: c["dataset"], "mnist"),
    "--profile": (["--profile", "quick"], cfg("epochs"), 8),
    "--seed": (["--seed", "3"], cfg("seed"), 3),
    "--epochs": (["--epochs", "2"], cfg("epochs"), 2),
    "--lambda": (["--lambda", "0.25"], cfg("contrastive_weight"), 0.25),
    "--out": (["--out", "OUT/x.pt"], lambda c: c["checkpoint"], "OUT/x.pt"),
    "--lr": (["--lr", "0.01"], cfg("lr"), 0.01),
    "--batch-size": (["--batch-size", "16"], cfg("batch_size"), 16),
    "--eps": (["--eps", "0.2"], cfg("eps"), 0.2),
    "--attack-steps": (["--attack-steps", "4"], cfg("attack_steps"), 4),
    "--schedule": (["--schedule", "piecewise"], cfg("schedule"), "piecewise"),
    "--n-train": (["--n-train", "100"], lambda c: c["n_train"], 100),
    "--n-val": (["--n-val", "10"], cfg("n_val"), 10),
    "--patience": (["--patience", "2"], cfg("early_stop_patience"), 2),
    "--temperature": (["--temperature", "0.3"], cfg("temperature"), 0.3),
    "--clean-ce": (["--clean-ce"], cfg("clean_ce"), True),
    "--supcon": (["--supcon"], cfg("supervised_contrastive"), True),
    "--split-views": (["--split-views"], cfg("split_views"), True),
    "--attack-loss": (["--attack-loss", "contrastive"], cfg("attack_loss"), "contrastive"),
    "--amp": (["--amp", "on"], cfg("amp"), True),
    "--compile": (["--compile"], cfg("compile"), True),
    "--device": (["--device", "cuda:1"], lambda c: c["device"], "cuda:1"),
    "--resume": (["--resume"], lambda c: c["resume"], True),
    "--no-eval": (["--no-eval"], lambda c: c.get("evaluated", False), False),
    "--no-progress": (["--no-progress"], lambda c: c["progress"], False),
    "--json": (["--json", "OUT/run.json"], lambda c: Path("OUT/run.json").is_file(), True),
    "--beta": (["--method", "trades", "--beta", "3"], cfg("trades_beta"), 3.0),
    "--faithful-recipe": (["--method", "clead_faithful", "--faithful-recipe", "course-v1"],
                          lambda c: c.get("faithful") and c["faithful"].faithful_recipe, "course-v1"),
}
# flags whose effect needs a filled model store: tested where the store is
TESTED_ELSEWHERE = {"--retrain": "tests/test_store.py::test_cli_train_saves_into_the_store_and_the_second_run_loads"}


def test_every_train_flag_has_a_case():
    parser = build_parser()
    train_parser = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices["train"]
    flags = {s for a in train_parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert flags == set(CASES) | set(TESTED_ELSEWHERE)




@pytest.mark.parametrize("flag", CASES)
def test_train_flag_changes_what_it_names(flag, recorder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, get, expected = CASES[flag]
    without = run_train(recorder, [], tmp_path)
    with_flag = run_train(recorder, extra, tmp_path)
    assert get(with_flag) == expected, (flag, get(with_flag))
    if flag == "--json":
        assert json.loads(Path("OUT/run.json").read_text())["config"]["method"] == "clead_online"
        Path("OUT/run.json").unlink()
    assert get(without) != expected, (flag, get(without))
    assert main(["train", "--method", "clead_online", "--amp", "off"]) == 0 and recorder["config"].amp is False


def test_train_subprocess_with_the_clead_online_flags(tmp_path):
    out = tmp_path / "run.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLEAD_CACHE_DIR": str(tmp_path / "cache"), "CLEAD_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "clead_lite", "train", "--method", "clead_online", "--profile",
                           "smoke", "--n-train", "96", "--n-val", "0", "--lambda", "0.25", "--clean-ce",
                           "--attack-loss", "contrastive", "--temperature", "0.2", "--schedule", "constant",
                           "--batch-size", "32", "--lr", "0.02", "--no-eval", "--no-progress", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(out)
    c = state["config"]
    assert (c["contrastive_weight"], c["clean_ce"], c["attack_loss"], c["temperature"], c["schedule"], c["batch_size"],
            c["lr"]) == (0.25, True, "contrastive", 0.2, "constant", 32, 0.02)
    steps = [r for r in state["history"] if r["kind"] == "step"]
    assert steps[-1]["step"] == 3 and all("contrastive" in r and "ce" in r for r in steps)   # 96 / 32 steps


def test_evaluate_sanity_passes_on_a_standard_model(standard_model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "std.pt", {"model": standard_model.state_dict(), **model_metadata(standard_model),
                                                 "method": "standard", "dataset": "mnist5k", "profile": "smoke"})
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(ckpt), "--n", "64", "--n-autoattack", "0", "--sanity", "--json", str(report),
                 "--device", "cpu"]) == 0
    data = json.loads(report.read_text())
    assert data["sanity"]["passed"] is True, capsys.readouterr().out
    statuses = {c["name"]: c["passed"] for c in data["sanity"]["checks"]}
    assert statuses["undefended_near_zero"] is True            # the CLI flags a 'standard' model undefended
    assert "ALL PASSED" in capsys.readouterr().out


def test_course_runs_two_notebooks_in_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "course"
    assert main(["course", "00", "01", "--profile", "smoke", "--out", str(out), "--timeout", "600"]) == 0
    rows = json.loads((out / "times.json").read_text())
    assert [r["notebook"] for r in rows] == ["00_setup_and_data.ipynb", "01_adversarial_examples.ipynb"]
    assert all(r["status"] == "ok" and r["profile"] == "smoke" and r["figures"] > 0 for r in rows), rows
    assert (out / "01_adversarial_examples.ipynb").is_file() and (out / "times.md").is_file()


class Killed(RuntimeError):
    pass


def test_train_faithful_resumes_from_a_stage_checkpoint(mnist5k_split, tmp_path):
    x, y = mnist5k_split.x_train[:96], mnist5k_split.y_train[:96]
    cfg = TrainConfig(method="clead_faithful", epochs=2, batch_size=32, lr=0.05, eps=0.3, log_every=2,
                      n_val=0, seed=0, schedule="constant")
    faithful = fa.FaithfulConfig(cw_steps=2)
    run = lambda path, resume=False: fa.train_faithful(x, y, cfg, faithful, dataset="mnist5k", model_name="smallcnn",
                                                       cache=ViewsCache(tmp_path / "cache", progress=False),
                                                       progress=False, hook=Checkpoint(path, resume=resume))
    straight = run(tmp_path / "a.pt")

    def kill_in_encoder_stage(record, model):
        if record["kind"] == "epoch" and "acc" not in record and record["epoch"] == 1:   # the encoder: no accuracy
            raise Killed()

    path = tmp_path / "b.pt"
    with pytest.raises(Killed):
        fa.train_faithful(x, y, cfg, faithful, dataset="mnist5k", model_name="smallcnn",
                          cache=ViewsCache(tmp_path / "cache", progress=False), progress=False,
                          callback=kill_in_encoder_stage, hook=Checkpoint(path))
    stage = load_checkpoint(tmp_path / "b.encoder.pt")
    assert stage["epoch"] == 1 and not stage["finished"] and load_checkpoint(tmp_path / "b.surrogate.pt")["finished"]
    assert not path.exists()
    resumed = run(path, resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert [r["loss"] for r in resumed.histories["encoder"].epochs()] == \
           [r["loss"] for r in straight.histories["encoder"].epochs()]
    assert load_checkpoint(path)["finished"]


def test_a_stage_checkpoint_refuses_a_resume_with_other_faithful_settings(mnist5k_split, tmp_path):
    """The views an encoder stage trains on depend on the FaithfulConfig, not only on the TrainConfig: a stage
    checkpoint records the pipeline's settings and a resume with others is refused before any work."""
    x, y = mnist5k_split.x_train[:64], mnist5k_split.y_train[:64]
    cfg = TrainConfig(method="clead_faithful", epochs=2, batch_size=32, lr=0.05, eps=0.3, log_every=2,
                      n_val=0, seed=0, schedule="constant")
    path = tmp_path / "b.pt"

    def run(faithful, resume=False, callback=None):
        return fa.train_faithful(x, y, cfg, faithful, dataset="mnist5k", model_name="smallcnn",
                                 cache=ViewsCache(tmp_path / "cache", progress=False), progress=False,
                                 callback=callback,
                                 hook=Checkpoint(path, resume=resume, settings=faithful.to_dict()))

    def kill_in_encoder_stage(record, model):
        if record["kind"] == "epoch" and "acc" not in record and record["epoch"] == 1:
            raise Killed()

    with pytest.raises(Killed):
        run(fa.FaithfulConfig(cw_steps=2), callback=kill_in_encoder_stage)
    assert load_checkpoint(tmp_path / "b.encoder.pt")["settings"]["cw_steps"] == 2
    with pytest.raises(CheckpointError, match=r"other settings \(cw_steps: checkpoint 2 vs now 3\)"):
        run(fa.FaithfulConfig(cw_steps=3), resume=True)
    run(fa.FaithfulConfig(cw_steps=2), resume=True)       # the same settings resume
    assert load_checkpoint(path)["finished"] and load_checkpoint(tmp_path / "b.encoder.pt")["finished"]


def test_load_or_train_uses_a_shipped_checkpoint(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "checkpoints"
    torch.manual_seed(3)
    shipped = SmallCNN()
    history = [{"kind": "epoch", "epoch": 1, "loss": 1.5}]
    path = save_checkpoint(folder / "mnist5k_pgd_at_quick.pt", {"model": shipped.state_dict(), **model_metadata(shipped),
                                                                "history": history})
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", str(folder))
    profile = get_profile("quick")
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64)
    # a shipped checkpoint is found by its store key: everything that determines the model, data included
    key = model_key("pgd_at", "mnist5k", "smallcnn", "quick", train_config(profile, "pgd_at"), x, y)
    write_manifest_entry(path, dataset="mnist5k", method="pgd_at", profile="quick", model="smallcnn", seed=0,
                         metrics={"n": 100, "clean": 0.9, "pgd": 0.5, "steps": 20, "restarts": 1, "eps": 0.3},
                         command="python -m clead_lite train", manifest=folder / "manifest.json", key=key)
    trained = []
    monkeypatch.setattr(tr, "train", lambda *a, **k: trained.append(k) or
                        TrainResult(model=SmallCNN().eval(), history=History(), config=TrainConfig()))
    loaded = load_or_train("pgd_at", profile, x, y, torch.device("cpu"), live=False)
    model, hist = loaded
    assert not trained and not model.training
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), shipped.state_dict().values()))
    assert list(hist) == history
    assert capsys.readouterr().out == ""       # a load prints nothing; where it came from is its provenance
    assert loaded.provenance.startswith("pgd_at: shipped checkpoint mnist5k_pgd_at_quick.pt")
    assert "clean 90.0%, robust 50.0%" in loaded.provenance
    # a change, or a profile without checkpoints, trains instead; a damaged file is refused
    load_or_train("pgd_at", profile, x, y, torch.device("cpu"), live=False, epochs=1)
    load_or_train("pgd_at", get_profile("smoke"), x, y, torch.device("cpu"), live=False)
    assert len(trained) == 2
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ChecksumError):
        load_or_train("pgd_at", profile, x, y, torch.device("cpu"), live=False)
