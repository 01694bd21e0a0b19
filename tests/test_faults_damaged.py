"""Fault injection, damaged files: a cache is only a cache and one bad record never blocks the course. A damaged
cache (the AutoAttack outcomes, the views, the UMAP maps) warns naming the file and is recomputed; a damaged
model-store record (one non-UTF-8 byte, a `key` that is not an object) is skipped with a warning naming it, and
`store list` / `store clear` still work (clear removes it); a manifest entry without `dataset` is named with the
field; a stored model whose weights no longer fit is trained again, naming the file and the command that clears
it; a manifest whose sha256 was changed never advises deleting an intact checkpoint."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import clead_lite.course.checkpoints as ck
import clead_lite.course.store as store
import clead_lite.training as training
from clead_lite.course import aa_cache
from clead_lite.course.cli import main
from clead_lite.course.notebook_setup import load_or_train
from clead_lite.course.profiles import get_profile
from clead_lite.course.umap_cache import cached_umap_projection
from clead_lite.course.views_cache import ViewsCache
from clead_lite.faithful import precompute_adversarial_views
from clead_lite.models import SmallCNN
from clead_lite.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _key(x, y, method="standard"):
    cfg = TrainConfig(method=method, epochs=1, batch_size=32)
    return store.model_key(method, "mnist5k", "smallcnn", "smoke", cfg, x, y), cfg


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _warned(record, *words):
    text = " | ".join(str(w.message) for w in record)
    for word in words:
        assert word in text, (word, text)


# ---------------------------------------------------------------------------------------------- the model store
@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"key"', b'"k\xffy"', 1).replace(b"{", b"{\xff", 1)),
     "is not UTF-8 JSON"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "key": "mnist5k"})), "its 'key' is a str"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "key": None})), "its 'key' is a NoneType"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "is not UTF-8 JSON"),
    (lambda p: p.write_text("[1, 2]"), "it holds a list"),
], ids=["non-utf8", "key-str", "key-null", "truncated", "list"])
def test_a_damaged_store_record_is_skipped_and_cleared(folder, capsys, damage, words):
    x, y = _data()
    good_key, cfg = _key(x, y)
    bad_key, _ = _key(x, y, "pgd_at")
    store.save_model(good_key, SmallCNN(), cfg)
    bad = store.save_model(bad_key, SmallCNN(), TrainConfig(method="pgd_at", epochs=1, batch_size=32))
    damage(bad.with_suffix(".json"))
    with pytest.warns(RuntimeWarning) as record:
        assert store.find(good_key) is not None and store.find(bad_key) is None
        rows = store.list_entries()
    _warned(record, f"skipped the damaged model-store record {bad.with_suffix('.json')}", words, "store clear")
    assert [r["method"] for r in rows] == ["standard"]
    with pytest.warns(RuntimeWarning):
        assert main(["store", "list"]) == 0
    assert "1 model(s)" in capsys.readouterr().out
    with pytest.warns(RuntimeWarning):
        assert main(["store", "clear", "--yes"]) == 0
    assert "deleted 2 model file(s)" in capsys.readouterr().out
    assert not [p for p in folder.iterdir()], list(folder.iterdir())            # the damaged pair is gone too


def test_a_manifest_entry_without_dataset_is_named_and_listed(folder, tmp_path, capsys):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    torch.manual_seed(0)
    model = SmallCNN()
    path = ck.save_checkpoint(shipped / "m.pt", {**ck.model_metadata(model), "model": model.state_dict()})
    ck.write_manifest_entry(path, dataset="mnist5k", method="standard", profile="quick", model="smallcnn")
    data = json.loads((shipped / "manifest.json").read_text())
    del data["checkpoints"][0]["dataset"]
    data["checkpoints"].append({"sha256": "0" * 64})                               # no 'file' at all
    (shipped / "manifest.json").write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning) as record:
        assert main(["store", "list"]) == 0
    _warned(record, "entry 0 (m.pt) is damaged: its field 'dataset' is missing",
            "entry 1 of 'checkpoints' is skipped: its field 'file' is missing")
    out = capsys.readouterr().out
    assert "1 model(s)" in out and "shipped ?" in " ".join(out.split())
    with pytest.warns(RuntimeWarning):
        assert main(["store", "clear", "--yes"]) == 0


def test_a_stored_model_of_another_shape_is_trained_again(folder, monkeypatch):
    profile = get_profile("smoke").replace(use_checkpoints=True)
    x, y = _data(64)
    first = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=0, epochs=1)
    assert first.source == "trained" and first.path is not None
    state = ck.load_checkpoint(first.path)
    narrow = SmallCNN(width=4, feature_dim=16, proj_dim=8)                          # same key, other weights' shape
    state["model"] = narrow.state_dict()
    ck.save_checkpoint(first.path, state)
    record = json.loads(first.path.with_suffix(".json").read_text())
    record["sha256"] = ck.sha256_file(first.path)
    first.path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.warns(RuntimeWarning) as warned:
        again = load_or_train("standard", profile, x, y, "cpu", live=False, n_val=0, epochs=1)
    _warned(warned, f"the stored model {first.path} does not fit", "shape mismatch",
            "python -m clead_lite store clear --method standard --yes", "training it again")
    assert again.source == "trained" and again.path == first.path
    assert store.load_model(store.find(store.model_key("standard", profile.dataset, profile.model, profile.name,
                                                       again.config, x, y)))[0] is not None   # replaced: loads now


# ---------------------------------------------------------------------------------------------- caches
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SmallCNN(width=4, feature_dim=16, proj_dim=8).eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("damage", ["truncated", "not-utf8", "list", "entry-without-correct"])
def test_a_damaged_autoattack_cache_warns_and_runs_live(tiny, tmp_path, damage):
    model, x, y = tiny
    path = tmp_path / "autoattack_cache.json"
    first = aa_cache.autoattack_with_cache(model, x, y, 0.3, n=4, seed=0, n_check=0, path=path)
    aa_cache.record_result(first.live, model, x, y, label="tiny", path=path)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])                          # a write cut short
    elif damage == "not-utf8":
        path.write_bytes(b"\xff" + path.read_bytes())
    elif damage == "list":
        path.write_text("[]")
    else:
        data = json.loads(text)
        del data["entries"][0]["correct"]
        path.write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning) as record:
        again = aa_cache.autoattack_with_cache(model, x, y, 0.3, n=4, seed=0, n_check=0, path=path)
    _warned(record, str(path))
    if damage == "entry-without-correct":
        _warned(record, "entry 0 is skipped: its field 'correct' is missing")
    assert again.source == "live" and again.accuracy == first.accuracy               # recomputed, same outcome
    with pytest.warns(RuntimeWarning):
        aa_cache.record_result(again.live, model, x, y, label="tiny", path=path)     # replaces the damaged file
    assert aa_cache.autoattack_with_cache(model, x, y, 0.3, n=4, seed=0, n_check=0, path=path).source == "cache"


def test_a_views_cache_of_the_wrong_shape_warns_and_is_recomputed(tiny, tmp_path):
    model, x, y = tiny
    cache = ViewsCache(tmp_path, progress=False)
    first = precompute_adversarial_views(model, x, y, eps=0.1, kinds=("fgsm",), cache=cache, progress=False)
    (path,) = tmp_path.glob("views-*.pt")
    state = ck.load_checkpoint(path)
    state["views"]["fgsm"] = state["views"]["fgsm"][:2]
    ck.save_checkpoint(path, state)
    with pytest.warns(RuntimeWarning, match=rf"views cache file {path} does not hold uint8 views"):
        again = precompute_adversarial_views(model, x, y, eps=0.1, kinds=("fgsm",),
                                             cache=ViewsCache(tmp_path, progress=False), progress=False)
    assert torch.equal(again["fgsm"], first["fgsm"])


def test_a_truncated_umap_map_warns_and_is_recomputed(tmp_path):
    pytest.importorskip("umap", reason="umap-learn is not installed (the [umap] extra)")
    g = np.random.default_rng(0)
    z = g.normal(size=(30, 8)).astype(np.float32)
    first = cached_umap_projection(z[:20], z[20:], n_neighbors=5, seed=0, cache_dir=tmp_path)
    (path,) = tmp_path.glob("umap-*.npy")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.warns(RuntimeWarning, match=rf"UMAP cache file {path} is corrupt or truncated"):
        again = cached_umap_projection(z[:20], z[20:], n_neighbors=5, seed=0, cache_dir=tmp_path)
    assert again.shape == first.shape


# ---------------------------------------------------------------------------------------------- the manifest
def test_a_changed_manifest_sha256_never_advises_deleting_an_intact_file(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    path = ck.save_checkpoint(tmp_path / "m.pt", {**ck.model_metadata(model), "model": model.state_dict()})
    ck.write_manifest_entry(path, dataset="mnist5k", method="standard", profile="quick", model="smallcnn",
                            manifest=tmp_path / "manifest.json")
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["checkpoints"][0]["sha256"] = "f" * 64                                       # the manifest is what changed
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ck.ChecksumError) as info:
        ck.verify_checkpoint(path, tmp_path / "manifest.json")
    text = str(info.value)
    assert "the file is intact, the manifest entry is outdated or was edited. Keep the file" in text
    assert "Delete" not in text and "\n" not in text
    raw = bytearray(path.read_bytes())                                                # now the file is damaged too
    at = bytes(raw).index(model.classifier.bias.detach().numpy().tobytes())
    raw[at] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ck.ChecksumError, match="Delete it and download or train it again"):
        ck.verify_checkpoint(path, tmp_path / "manifest.json")
