"""The model store (clead_lite.course.store): save then load gives the same weights, a changed setting misses,
list / clear, atomic saves, load_or_train trains once then loads, and the `store` command line."""
from __future__ import annotations

import json

import pytest
import torch

import clead_lite.course.checkpoints as ck
import clead_lite.course.store as store
import clead_lite.training as training
from clead_lite.course.cli import main
from clead_lite.models import SmallCNN
from clead_lite.course.notebook_setup import load_or_train, train_config_used
from clead_lite.course.profiles import get_profile
from clead_lite.training import TrainConfig


def tiny_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def key_for(x, y, method="standard", **changes):
    cfg = TrainConfig(**{"method": method, "epochs": 1, "batch_size": 32, **changes})
    return store.model_key(method, "mnist5k", "smallcnn", "smoke", cfg, x, y), cfg


def test_save_then_load_gives_identical_weights(folder):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    torch.manual_seed(3)
    net = SmallCNN()
    path = store.save_model(key, net, cfg, [{"kind": "epoch", "epoch": 1, "loss": 1.0}], command="test")
    hit = store.find(key)
    assert hit is not None and hit.source == "store" and hit.path == path
    loaded, state = store.load_model(hit)
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert state["history"][0]["loss"] == 1.0 and TrainConfig.from_dict(hit.entry["config"]) == cfg


@pytest.mark.parametrize("change", [
    {"epochs": 2}, {"lr": 0.1}, {"seed": 1}, {"batch_size": 16}, {"n_val": 8}, {"weight_decay": 0.0}])
def test_a_changed_setting_misses(folder, change):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    store.save_model(key, SmallCNN(), cfg)
    assert store.find(key) is not None
    other, _ = key_for(x, y, **change)
    assert store.find(other) is None, change


def test_other_data_method_profile_or_code_version_miss(folder, monkeypatch):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    store.save_model(key, SmallCNN(), cfg)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.5 / 255                        # one pixel of one training image
    assert store.find(key_for(x2, y)[0]) is None
    assert store.find(key_for(x[:-1], y[:-1])[0]) is None
    assert store.find(key_for(x, y, method="pgd_at")[0]) is None
    assert store.find({**key, "profile": "quick"}) is None
    monkeypatch.setattr(store, "TRAIN_STEP_VERSION", store.TRAIN_STEP_VERSION + 1)
    assert store.find(key_for(x, y)[0]) is None


def test_settings_that_cannot_change_the_weights_still_hit(folder):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    store.save_model(key, SmallCNN(), cfg)
    for change in ({"log_every": 7}, {"compile": True},
                   {"contrastive_weight": 0.9}, {"attack_steps": 3}):   # lambda / attack: not used by 'standard'
        assert store.find(key_for(x, y, **change)[0]) is not None, change
    # a field missing from an older key counts as its default
    old = json.loads(json.dumps(key))
    del old["config"]["nesterov"]
    assert store.keys_match(old, key)
    assert not store.keys_match(old, key_for(x, y, nesterov=True)[0])


def test_list_and_clear(folder):
    x, y = tiny_data()
    for method in ("standard", "pgd_at"):
        key, cfg = key_for(x, y, method=method)
        store.save_model(key, SmallCNN(), cfg)
    rows = store.list_entries()
    assert sorted(r["method"] for r in rows if r["source"] == "store") == ["pgd_at", "standard"]
    assert [r["method"] for r in store.list_entries("pgd_at")] == ["pgd_at"]
    assert len(store.clear(method="standard")) == 1
    assert [r["method"] for r in store.list_entries()] == ["pgd_at"]
    store.clear()
    assert store.list_entries() == [] and not list(folder.iterdir())


def test_a_save_killed_half_way_leaves_nothing_that_loads(folder, monkeypatch):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    real_save = torch.save

    def dies_mid_write(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ck.torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        store.save_model(key, SmallCNN(), cfg)
    assert not folder.exists() or not list(folder.iterdir()), "no partial or temporary file may remain"
    assert store.find(key) is None
    monkeypatch.setattr(ck.torch, "save", real_save)
    # killed between the checkpoint and its record: the .pt alone does not count, and clear removes it
    real_write = store.write_json_atomic
    monkeypatch.setattr(store, "write_json_atomic", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.save_model(key, SmallCNN(), cfg)
    assert len(list(folder.glob("*.pt"))) == 1 and store.find(key) is None
    monkeypatch.setattr(store, "write_json_atomic", real_write)
    store.clear()
    assert not list(folder.iterdir())


def test_a_damaged_store_file_is_not_loaded(folder):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    path = store.save_model(key, SmallCNN(), cfg)
    path.write_bytes(path.read_bytes()[:-10])
    assert store.find(key) is None


def test_load_or_train_trains_once_then_loads(folder, monkeypatch):
    profile = get_profile("smoke").replace(use_checkpoints=True)
    x, y = tiny_data(160)
    calls = []
    real_train = training.train

    def counting_train(*a, **k):
        calls.append(1)
        return real_train(*a, **k)

    monkeypatch.setattr(training, "train", counting_train)
    first = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=32)
    assert len(calls) == 1 and first.source == "trained" and first.path is not None
    second = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=32)
    assert len(calls) == 1, "the second call must load the stored model, not train"
    assert second.source == "store" and second.config == first.config
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    model, history = second                          # still unpacks as (model, history)
    assert len(history.epochs()) == 1
    assert train_config_used("standard", profile, x, y, n_val=32) == first.config
    assert get_profile("smoke").use_checkpoints is False  # smoke itself never uses the store


def test_load_or_train_faithful_trains_once_then_loads(folder, monkeypatch):
    import clead_lite.faithful as faithful
    from clead_lite.models import SmallCNN
    from clead_lite.course.notebook_setup import load_or_train_faithful
    profile = get_profile("smoke").replace(use_checkpoints=True)
    x, y = tiny_data(64)
    calls = []

    def fake_train_faithful(x_train, y_train, config, settings, **kw):    # the pipeline: tested in test_faithful
        calls.append(config)
        torch.manual_seed(len(calls))
        return faithful.FaithfulResult(model=SmallCNN().eval(), surrogate=kw["surrogate"], histories={},
                                       config=config, faithful=settings, seconds=1.0)

    monkeypatch.setattr(faithful, "train_faithful", fake_train_faithful)
    first, result = load_or_train_faithful(profile, x, y, "cpu", surrogate=SmallCNN(), progress=False)
    assert len(calls) == 1 and result is not None and calls[0].method == "clead_faithful"
    second, again = load_or_train_faithful(profile, x, y, "cpu", surrogate=SmallCNN(), progress=False)
    assert len(calls) == 1 and again is None, "the second call must load the stored model, not train"
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    load_or_train_faithful(profile, x[:32], y[:32], "cpu", surrogate=SmallCNN(), progress=False)
    assert len(calls) == 2                                       # other training images: another model
    # a store that fails after the pipeline trained: a warning, and the trained model is returned all the same
    import clead_lite.course.store as store_module
    monkeypatch.setattr(store_module, "save_model", lambda *a, **kw: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.warns(RuntimeWarning, match="faithful model was not stored"):
        kept, trained = load_or_train_faithful(profile, x[:16], y[:16], "cpu", surrogate=SmallCNN(), progress=False)
    assert len(calls) == 3 and trained is not None and kept is trained.model


def test_cli_store_list_and_clear(folder, capsys):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    store.save_model(key, SmallCNN(), cfg)
    assert main(["store", "list"]) == 0
    out = capsys.readouterr().out
    assert "1 model(s)" in out and "standard" in out
    assert main(["store", "clear", "--method", "pgd_at", "--yes"]) == 0
    assert len(store.list_entries()) == 1
    assert main(["store", "clear", "--yes"]) == 0
    assert "deleted 1 model file(s)" in capsys.readouterr().out and store.list_entries() == []


@pytest.mark.parametrize("argv, words", [
    (["store", "drop"], "unknown store action 'drop'"),
    (["store", "list", "--method", "madry"], "unknown --method 'madry'"),
])
def test_cli_store_bad_input_is_one_line_and_exit_2(folder, capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_cli_store_clear_refuses_without_yes_when_not_interactive(folder, capsys, monkeypatch):
    x, y = tiny_data()
    key, cfg = key_for(x, y)
    store.save_model(key, SmallCNN(), cfg)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["store", "clear"]) == 2
    assert "without --yes" in capsys.readouterr().err and len(store.list_entries()) == 1


def test_cli_train_saves_into_the_store_and_the_second_run_loads(folder, tmp_path, capsys, monkeypatch):
    args = ["train", "--method", "standard", "--profile", "quick", "--n-train", "64", "--epochs", "1",
            "--batch-size", "32", "--n-val", "0", "--no-eval", "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a.pt")]) == 0
    assert "saved to the model store" in capsys.readouterr().out
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1))
    assert main(args + ["--out", str(tmp_path / "b.pt")]) == 0
    assert "found this model in the store" in capsys.readouterr().out and not calls
    with pytest.raises(AttributeError):  # --retrain trains although the store has the model (the stub returns None)
        main(args + ["--out", str(tmp_path / "c.pt"), "--retrain"])
    assert calls == [1]
    a, b = ck.load_checkpoint(tmp_path / "a.pt"), ck.load_checkpoint(tmp_path / "b.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
