"""The AutoAttack cache: keyed by the weights and the images, re-checked live, and in step with the shipped
checkpoints and notebook 06's images (a re-trained checkpoint or other images must come with a new cache)."""
import json

import pytest
import torch

from clead_lite.course import aa_cache
from clead_lite.course.autoattack import autoattack_accuracy
from clead_lite.models import SmallCNN

EPS = 0.3


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SmallCNN(width=4, feature_dim=16, proj_dim=8).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 28, 28, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)           # every image "clean-correct", so AutoAttack has work to do
    return model, x, y


def test_hashes_identify_weights_and_images(tiny):
    model, x, y = tiny
    h = aa_cache.weights_sha256(model)
    copy = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    copy.load_state_dict(model.state_dict())
    assert aa_cache.weights_sha256(copy) == h
    assert aa_cache.weights_sha256(copy.to(memory_format=torch.channels_last)) == h
    with torch.no_grad():
        next(copy.parameters()).view(-1)[0] += 1e-3
    assert aa_cache.weights_sha256(copy) != h
    assert aa_cache.images_sha256(x, y) == aa_cache.images_sha256(x.clone(), y.clone())
    assert aa_cache.images_sha256(x, y) != aa_cache.images_sha256(x.flip(0), y.flip(0))
    assert aa_cache.images_sha256(x, y) != aa_cache.images_sha256(x, (y + 1) % 10)


def test_miss_runs_live_then_hit_uses_the_cache_and_checks_it(tiny, tmp_path):
    model, x, y = tiny
    path = tmp_path / "cache.json"
    first = aa_cache.autoattack_with_cache(model, x, y, EPS, n=8, seed=0, n_check=4, path=path)
    assert first.source == "live" and first.n == 8 and first.n_checked == 0
    assert "run live" in first.describe()
    aa_cache.record_result(first.live, model, x, y, label="tiny", path=path)
    entry = json.loads(path.read_text())["entries"][0]
    assert len(entry["correct"]) == 8 and entry["n"] == 8 and entry["version"] == "standard"

    hit = aa_cache.autoattack_with_cache(model, x, y, EPS, n=8, seed=0, n_check=4, path=path)
    assert hit.source == "cache" and hit.accuracy == first.accuracy
    assert torch.equal(hit.correct, first.correct) and torch.equal(hit.indices, first.indices)
    assert hit.n_checked == 4 and 0 <= hit.agree <= 4 and hit.live is not None and hit.live.n == 4
    assert hit.agree == int((hit.live.correct == first.correct[:4]).sum())
    assert "from the cache" in hit.describe() and f"{hit.agree}/4" in hit.describe()
    assert hit.stderr == pytest.approx((hit.accuracy * (1 - hit.accuracy) / 8) ** 0.5)

    # other settings, other images or other weights: no hit
    assert aa_cache.find_entry(model, x, y, EPS / 2, n=8, path=path) is None
    assert aa_cache.find_entry(model, x, y, EPS, n=6, path=path) is None
    assert aa_cache.find_entry(model, x[:10], y[:10], EPS, n=8, path=path) is None
    other = SmallCNN(width=4, feature_dim=16, proj_dim=8).eval()
    assert aa_cache.find_entry(other, x, y, EPS, n=8, path=path) is None


def test_a_wrong_cache_shows_as_disagreement(tiny, tmp_path):
    model, x, y = tiny
    path = tmp_path / "cache.json"
    r = autoattack_accuracy(model, x, y, EPS, n=8, seed=0, return_details=True)
    aa_cache.record_result(r, model, x, y, label="tiny", path=path)
    data = json.loads(path.read_text())
    flipped = "".join("0" if c == "1" else "1" for c in data["entries"][0]["correct"])
    data["entries"][0]["correct"] = flipped
    path.write_text(json.dumps(data))
    hit = aa_cache.autoattack_with_cache(model, x, y, EPS, n=8, seed=0, n_check=8, path=path)
    live_again = (hit.live.correct == r.correct).sum()
    assert hit.agree == 8 - int(live_again)      # every image the live run repeats now counts as a disagreement


def test_bad_arguments(tiny, tmp_path):
    model, x, y = tiny
    with pytest.raises(ValueError, match="n_check"):
        aa_cache.autoattack_with_cache(model, x, y, EPS, n=8, n_check=-1, path=tmp_path / "c.json")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not an AutoAttack cache"):
        aa_cache.read_cache(tmp_path / "bad.json")


def test_shipped_cache_matches_the_shipped_checkpoints_and_notebook_06s_images():
    from clead_lite.course.checkpoints import find_checkpoint, load_pretrained, read_manifest
    from clead_lite.course.notebook_setup import load_data
    from clead_lite.course.profiles import get_profile

    profile = get_profile("quick")
    entries = aa_cache.read_cache()["entries"]
    assert entries, "data/checkpoints/autoattack_cache.json is missing: run scripts/make_aa_cache.py"
    _, _, x_test, y_test = load_data(profile)
    x_eval, y_eval = x_test[:profile.n_eval], y_test[:profile.n_eval]
    images = aa_cache.images_sha256(x_eval, y_eval)
    n = min(profile.n_autoattack, len(y_eval))
    shas = {e["file"]: e["sha256"] for e in read_manifest()["checkpoints"]}
    for method in ("pgd_at", "clead_online"):        # the robust models notebook 06 always attacks
        path = find_checkpoint(profile.dataset, method, profile.name, profile.model)
        assert path is not None
        model, _ = load_pretrained(profile.dataset, method, profile.name, profile.model)
        entry = aa_cache.find_entry(model, x_eval, y_eval, profile.eps, n=n, seed=0)
        assert entry is not None, (f"no cached AutoAttack for {path.name} on notebook 06's images "
                                   f"({images[:12]}...): run scripts/make_aa_cache.py")
        assert entry["checkpoint_sha256"] == shas[path.name]
        assert entry["accuracy"] == pytest.approx(entry["correct"].count("1") / n)
