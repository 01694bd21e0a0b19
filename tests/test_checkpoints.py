"""Checkpoints: atomic writes, safe loads with clear errors, architecture checks, the sha256 manifest."""
from __future__ import annotations

import json

import pytest
import torch

from clead_lite.course import checkpoints as ck
from clead_lite.models import SmallCNN, build_model


def _state(model=None, **extra):
    model = model or SmallCNN()
    return {"model": model.state_dict(), **ck.model_metadata(model), "epoch": 3, "history": [{"loss": 0.5}], **extra}


def test_save_then_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    path = ck.save_checkpoint(tmp_path / "sub" / "m.pt", _state(model), note="hello")
    state = ck.load_checkpoint(path, required=("model", "epoch"))
    assert state["note"] == "hello" and state["epoch"] == 3 and state["model_name"] == "smallcnn"
    fresh = SmallCNN()
    ck.load_model_state(fresh, state)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("sub/*.tmp")) and not list(tmp_path.glob("sub/.*.tmp"))


def test_crash_mid_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    ck.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    before = path.read_bytes()

    def exploding_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file, then the crash
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ck.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_save_refuses_objects_weights_only_cannot_load(tmp_path):
    import numpy as np
    with pytest.raises(TypeError, match=r"state\['config'\]\['mean'\] is a numpy.ndarray"):
        ck.save_checkpoint(tmp_path / "m.pt", {"config": {"mean": np.zeros(3)}})
    with pytest.raises(TypeError, match="state must be a dict"):
        ck.save_checkpoint(tmp_path / "m.pt", [1, 2])
    assert not (tmp_path / "m.pt").exists()


def test_load_uses_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(ck.CheckpointError, match="weights_only=True"):
        ck.load_checkpoint(path)


def test_missing_file_names_what_is_there(tmp_path):
    ck.save_checkpoint(tmp_path / "other.pt", {"model": {}})
    with pytest.raises(FileNotFoundError, match=r"does not exist.*other\.pt"):
        ck.load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("page", [b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
                                  b"\n  <html lang='en'><body>Google Drive - virus scan warning</body></html>"])
def test_html_page_saved_as_checkpoint(tmp_path, page):
    path = tmp_path / "model.pt"
    path.write_bytes(page)
    with pytest.raises(ck.CheckpointError, match="looks like an HTML page, not a checkpoint: the download probably failed"):
        ck.load_checkpoint(path)


def test_truncated_and_corrupt_files(tmp_path):
    good = ck.save_checkpoint(tmp_path / "good.pt", _state())
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="corrupt or truncated"):
        ck.load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.load_checkpoint(tmp_path / "noise.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="empty"):
        ck.load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "lfs.pt").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with pytest.raises(ck.CheckpointError, match="Git LFS pointer"):
        ck.load_checkpoint(tmp_path / "lfs.pt")


def test_missing_keys(tmp_path):
    path = ck.save_checkpoint(tmp_path / "m.pt", {"model": {}, "epoch": 1})
    with pytest.raises(ck.CheckpointError, match=r"lacks the key\(s\) 'optimizer'.*'epoch', 'model'"):
        ck.load_checkpoint(path, required=("model", "optimizer"))


def test_other_architecture_gives_clear_error(tmp_path):
    path = ck.save_checkpoint(tmp_path / "resnet.pt", _state(build_model("preactresnet18")))
    state = ck.load_checkpoint(path)
    with pytest.raises(ck.CheckpointError, match=r"holds a 'preactresnet18' model.*'smallcnn'.*build_model\('preactresnet18'\)"):
        ck.load_model_state(SmallCNN(), state)
    # same class, other size: no name mismatch, so the shapes are named
    wide = ck.load_checkpoint(ck.save_checkpoint(tmp_path / "wide.pt", _state(SmallCNN(width=16))))
    with pytest.raises(ck.CheckpointError, match=r"shape mismatch.*conv\.0\.weight: checkpoint \(16, 1, 3, 3\) vs model \(32, 1, 3, 3\)"):
        ck.load_model_state(SmallCNN(), wide)
    # a bare state_dict with foreign keys
    with pytest.raises(ck.CheckpointError, match=r"missing from the checkpoint.*unexpected key"):
        ck.load_model_state(SmallCNN(), {"encoder.weight": torch.zeros(2)})


def test_ddp_and_compile_prefixes_are_stripped():
    torch.manual_seed(1)
    src = SmallCNN()
    prefixed = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    dst = ck.load_model_state(SmallCNN(), prefixed)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_manifest_verify_find_and_load_pretrained(tmp_path):
    torch.manual_seed(2)
    model = SmallCNN()
    folder = tmp_path / "checkpoints"
    path = ck.save_checkpoint(folder / "mnist5k_pgd_at_quick_smallcnn_seed0.pt", _state(model))
    manifest = folder / "manifest.json"
    entry = ck.write_manifest_entry(path, dataset="mnist5k", method="pgd_at", profile="quick", model="smallcnn",
                                    metrics={"clean": 0.98}, seed=0, command="python -m clead_lite train ...",
                                    manifest=manifest)
    assert entry["sha256"] == ck.sha256_file(path) and len(entry["sha256"]) == 64
    data = json.loads(manifest.read_text())
    assert data["checkpoints"][0]["file"] == path.name and data["checkpoints"][0]["metrics"] == {"clean": 0.98}
    # re-writing the same file replaces its entry
    ck.write_manifest_entry(path, dataset="mnist5k", method="pgd_at", profile="quick", model="smallcnn",
                            seed=0, manifest=manifest)
    assert len(ck.read_manifest(manifest)["checkpoints"]) == 1
    assert ck.verify_checkpoint(path, manifest)["method"] == "pgd_at"
    assert ck.find_checkpoint("mnist5k", "pgd_at", "quick", manifest=manifest) == path
    assert ck.find_checkpoint("mnist5k", "standard", "quick", manifest=manifest) is None
    net, e = ck.load_pretrained("mnist5k", "pgd_at", "quick", manifest=manifest)
    assert not net.training and e["seed"] == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))
    with pytest.raises(FileNotFoundError, match=r"no shipped checkpoint.*available: mnist5k/pgd_at/quick/smallcnn"):
        ck.load_pretrained("mnist5k", "clead_online", "quick", manifest=manifest)
    # one flipped byte: sha256 mismatch
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ck.ChecksumError, match="sha256 .* but the manifest records"):
        ck.verify_checkpoint(path, manifest)
    with pytest.raises(ck.ChecksumError):
        ck.load_pretrained("mnist5k", "pgd_at", "quick", manifest=manifest)
    # an HTML page in its place gets the HTML message
    path.write_bytes(b"<!doctype html><html>quota exceeded</html>")
    with pytest.raises(ck.CheckpointError, match="HTML page"):
        ck.verify_checkpoint(path, manifest)


@pytest.mark.parametrize("loader", ["cli", "scoring", "shipped"])
def test_every_model_loader_refuses_the_same_bad_files(tmp_path, loader):
    """The command line, the results runner and the shipped checkpoints load through one function: a
    diverged run (NaN weights) and a file naming no known model are refused by each, with the same message."""
    from clead_lite.course.cli import _load_model
    from clead_lite.course.scoring import load_for_scoring
    load = {"cli": lambda path, manifest: _load_model(path, "cpu"),
            "scoring": lambda path, manifest: load_for_scoring(str(path), 4, dataset="mnist5k", device="cpu"),
            "shipped": lambda path, manifest: ck.load_pretrained("mnist5k", "pgd_at", "quick", manifest=manifest),
            }[loader]                                                    # -> (model, ...)
    good = SmallCNN()
    nan = SmallCNN()
    with torch.no_grad():
        nan.classifier.bias.fill_(float("nan"))
    foreign = {**_state(good), "model_name": "no_such_net"}
    for name, state, message in (("nan.pt", _state(nan), "holds non-finite"),
                                 ("foreign.pt", foreign, "does not say which model it holds")):
        folder = tmp_path / name.removesuffix(".pt")
        path = ck.save_checkpoint(folder / name, state)
        manifest = folder / "manifest.json"
        ck.write_manifest_entry(path, dataset="mnist5k", method="pgd_at", profile="quick", model="no_such_net",
                                seed=0, manifest=manifest)
        with pytest.raises(ck.CheckpointError, match=message):
            load(path, manifest)
    # and the good file loads the same weights through each
    path = ck.save_checkpoint(tmp_path / "good" / "good.pt", _state(good))
    manifest = tmp_path / "good" / "manifest.json"
    ck.write_manifest_entry(path, dataset="mnist5k", method="pgd_at", profile="quick", model="smallcnn",
                            seed=0, manifest=manifest)
    net = load(path, manifest)[0]
    assert not net.training
    assert all(torch.equal(a, b) for a, b in zip(good.state_dict().values(), net.state_dict().values()))
