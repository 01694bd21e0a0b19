"""Tests for clead_lite.embeddings: embeddings of clean/adversarial images, separation metrics on
constructed cases (some by hand), and the shared UMAP map (cached on disk by clead_lite.course.umap_cache)."""
import math
import os
import sys

import numpy as np
import pytest
import torch

from clead_lite.attacks import make_attack
from clead_lite.course.umap_cache import cached_umap_projection, warm_up_umap
from clead_lite.embeddings import clean_and_adversarial_embeddings, embed, separation_metrics, umap_projection
from clead_lite.models import SmallCNN


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g)


def clusters(n_per_class=30, n_classes=3, d=16, noise=0.05, seed=0):
    """Well separated classes: points around orthogonal unit centres."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    centres = torch.eye(d)[:n_classes] * 5
    z = centres[y] + noise * 5 * torch.randn(len(y), d, generator=g)
    return z, y


# ------------------------------------------------------------------ embed
@pytest.mark.parametrize("space,dim", [("features", 128), ("projection", 64)])
def test_embed_shapes_dtype_and_values(model, images, space, dim):
    x, _ = images
    z = embed(model, x, batch_size=7, space=space)
    assert z.shape == (20, dim) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert not z.requires_grad
    with torch.no_grad():
        model.eval()
        ref = model.features(x) if space == "features" else model.project(x)
    torch.testing.assert_close(z, ref)
    torch.testing.assert_close(embed(model, x, batch_size=512, space=space), z)   # batching changes nothing


def test_embed_restores_each_modules_mode(model, images):
    model.train()
    model.head.eval()
    embed(model, images[0])
    assert model.training and model.conv.training and not model.head.training
    model.eval()


def test_embed_uses_eval_mode():
    # Dropout would make two calls differ in train mode; embed must be deterministic.
    m = SmallCNN()
    m.fc.append(torch.nn.Dropout(0.5))
    m.train()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(embed(m, x), embed(m, x))
    assert m.training


def test_embed_errors(model, images):
    x, _ = images
    with pytest.raises(ValueError, match="unknown space 'logits'"):
        embed(model, x, space="logits")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        embed(model, x, batch_size=0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        embed(model, x * 255)
    with pytest.raises(ValueError, match="channels"):
        embed(model, torch.rand(2, 3, 28, 28))
    with pytest.raises(TypeError, match="features"):
        embed(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x)


# ------------------------------------------------------------------ clean and adversarial embeddings
def test_clean_and_adversarial_with_identity_attack(model, images):
    x, y = images
    out = clean_and_adversarial_embeddings(model, x, y, attack=lambda m, xb, yb: xb.clone(), batch_size=6)
    assert set(out) == {"z_clean", "z_adv", "y", "pred_clean", "pred_adv", "x_adv"}
    torch.testing.assert_close(out["z_adv"], out["z_clean"])
    torch.testing.assert_close(out["z_clean"], embed(model, x))
    assert torch.equal(out["pred_adv"], out["pred_clean"]) and torch.equal(out["y"], y)
    m = separation_metrics(out["z_clean"], out["z_adv"], y)
    assert m["pair_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m["own_neighbour_fraction"] == 1.0 and m["pair_distance_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_clean_and_adversarial_with_real_pgd(model, images):
    x, y = images
    eps = 0.3
    model.train()
    out = clean_and_adversarial_embeddings(model, x, y, make_attack("pgd", eps=eps, alpha=0.05, steps=10),
                                           batch_size=8, space="projection")
    assert model.training                                   # mode restored
    model.eval()
    assert out["z_clean"].shape == out["z_adv"].shape == (20, 64)
    assert out["z_adv"].dtype == torch.float32
    for k in ("pred_clean", "pred_adv", "y"):
        assert out[k].shape == (20,) and out[k].dtype == torch.int64
    assert out["x_adv"].shape == x.shape and out["x_adv"].dtype == torch.float32
    assert (out["x_adv"] - x).abs().max() <= eps + 1e-6
    assert out["x_adv"].min() >= 0 and out["x_adv"].max() <= 1
    with torch.no_grad():
        assert torch.equal(out["pred_clean"], model(x).argmax(1))
        assert torch.equal(out["pred_adv"], model(out["x_adv"]).argmax(1))
        torch.testing.assert_close(out["z_adv"], model.project(out["x_adv"]))
    # PGD fools the (untrained) model on most images and moves embeddings more than random noise of the
    # same size does.
    assert (out["pred_adv"] != y).float().mean() >= 0.8
    noise = clean_and_adversarial_embeddings(model, x, y, make_attack("random_noise", eps=eps), space="projection")
    m_pgd = separation_metrics(out["z_clean"], out["z_adv"], y)
    m_noise = separation_metrics(noise["z_clean"], noise["z_adv"], y)
    assert m_pgd["pair_cosine"] < m_noise["pair_cosine"]


def test_clean_and_adversarial_errors(model, images):
    x, y = images
    with pytest.raises(TypeError, match="attack must be a callable"):
        clean_and_adversarial_embeddings(model, x, y, attack="pgd")
    with pytest.raises(ValueError, match="attack must return x_adv with the shape"):
        clean_and_adversarial_embeddings(model, x, y, attack=lambda m, xb, yb: xb[:, :, :10])
    with pytest.raises(ValueError, match="disagree on the batch size"):
        clean_and_adversarial_embeddings(model, x, y[:5], attack=lambda m, xb, yb: xb)
    with pytest.raises(TypeError, match="int64"):
        clean_and_adversarial_embeddings(model, x, y.float(), attack=lambda m, xb, yb: xb)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        clean_and_adversarial_embeddings(model, x, y + 10, attack=lambda m, xb, yb: xb)


# ------------------------------------------------------------------ separation metrics
def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_metrics_by_hand():
    # Unit vectors in the plane, by angle. Class 0 at 0/10/20 degrees, class 1 at 90/100/110.
    clean_deg = [0, 10, 20, 90, 100, 110]
    adv_deg = [3, 16, 60, 92, 100, 115]
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    z_clean = torch.tensor([_unit(a) for a in clean_deg])
    z_adv = torch.tensor([_unit(a) for a in adv_deg])
    m = separation_metrics(z_clean, z_adv, y)
    shifts = [abs(a - c) for a, c in zip(adv_deg, clean_deg)]           # 3, 6, 40, 2, 0, 5 degrees
    assert m["pair_cosine"] == pytest.approx(sum(math.cos(math.radians(s)) for s in shifts) / 6, rel=1e-6)
    pair_dist = sum(2 * math.sin(math.radians(s) / 2) for s in shifts) / 6  # chord length
    c0 = [sum(_unit(a)[i] for a in clean_deg[:3]) / 3 for i in range(2)]
    c1 = [sum(_unit(a)[i] for a in clean_deg[3:]) / 3 for i in range(2)]
    assert m["pair_distance_ratio"] == pytest.approx(pair_dist / math.dist(c0, c1), rel=1e-5)
    # Nearest clean point of each adversarial one: 0 (own), 20 (not own), 90 (not own), 90 (own), 100 (own),
    # 110 (own) -> 4 of 6.
    assert m["own_neighbour_fraction"] == pytest.approx(4 / 6)
    # 5 nearest of 6 clean points drop the farthest one; only the point at 60 degrees (class 0) gets a
    # class-1 majority (90, 100, 110 against 10, 20).
    assert m["knn_accuracy"] == pytest.approx(5 / 6)
    assert -1 <= m["silhouette"] <= 1


def test_knn_vote_ties_go_to_the_nearest_point():
    # clean points by angle (class): 1 (1), 2 (0), 3 (0), 4 (2), 5 (1), 180 (2); adversarial: the first
    # moves to 0 degrees, the rest stay. Its 5 neighbours vote 1, 0, 0, 2, 1: a 2-2 tie that the nearest
    # point (class 1, its true class) decides. Same for the others except the one at 4 degrees (class 2
    # gets 1 vote of 5): 5 of 6 correct.
    clean_deg, y = [1, 2, 3, 4, 5, 180], torch.tensor([1, 0, 0, 2, 1, 2])
    adv_deg = [0] + clean_deg[1:]
    m = separation_metrics(torch.tensor([_unit(a) for a in clean_deg]), torch.tensor([_unit(a) for a in adv_deg]), y)
    assert m["knn_accuracy"] == pytest.approx(5 / 6)
    assert m["own_neighbour_fraction"] == 1.0


def test_metrics_identical_clean_and_adv():
    z, y = clusters()
    m = separation_metrics(z, z.clone(), y)
    assert m["pair_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m["own_neighbour_fraction"] == 1.0
    assert m["pair_distance_ratio"] == 0.0
    assert m["knn_accuracy"] == 1.0


def test_metrics_well_separated_vs_shuffled():
    z, y = clusters(noise=0.05)
    g = torch.Generator().manual_seed(1)
    z_adv = z + 0.02 * torch.randn(z.shape, generator=g)
    good = separation_metrics(z, z_adv, y)
    assert good["knn_accuracy"] == 1.0 and good["silhouette"] > 0.8
    assert good["pair_cosine"] > 0.99 and good["pair_distance_ratio"] < 0.1
    assert good["own_neighbour_fraction"] > 0.5

    # Adversarial points scattered over all classes: each lands on a random image's embedding.
    perm = torch.randperm(len(y), generator=g)
    bad = separation_metrics(z, z[perm] + 0.02 * torch.randn(z.shape, generator=g), y)
    expected_knn = (y[perm] == y).float().mean().item()        # each adv point sits in the class of y[perm]
    assert bad["knn_accuracy"] == pytest.approx(expected_knn, abs=0.05) and bad["knn_accuracy"] < 0.5
    assert bad["silhouette"] < 0.3 < good["silhouette"]
    assert bad["own_neighbour_fraction"] < 0.1 and bad["pair_cosine"] < 0.5
    assert bad["pair_distance_ratio"] > 0.5


def test_metrics_accept_numpy():
    z, y = clusters(n_per_class=5)
    assert separation_metrics(z.numpy(), z.numpy(), y.numpy())["own_neighbour_fraction"] == 1.0


def test_metrics_errors():
    z, y = clusters(n_per_class=5)
    with pytest.raises(ValueError, match=r"z_adv has shape \(14, 16\), but z_clean has shape \(15, 16\)"):
        separation_metrics(z, z[:14], y)
    with pytest.raises(ValueError, match="at least two classes"):
        separation_metrics(z, z, torch.zeros(15, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        separation_metrics(z, z, y.float())
    with pytest.raises(ValueError, match="disagree on the batch size"):
        separation_metrics(z, z, y[:3])
    with pytest.raises(ValueError, match=r"z_clean must have shape \(N, D\)"):
        separation_metrics(z[0], z[0], y)
    with pytest.raises(ValueError, match="NaN"):
        separation_metrics(z * float("nan"), z, y)


# ------------------------------------------------------------------ UMAP
def test_warm_up_umap_compiles_umap():
    import sys
    assert warm_up_umap() is None and "umap" in sys.modules and "numba" in sys.modules


def test_umap_projection_shape_cache_and_separation(tmp_path, monkeypatch):
    z, y = clusters(n_per_class=20, noise=0.05)            # 60 clean points, 3 classes
    z_adv = z + 0.02 * torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    first = cached_umap_projection(z, z_adv, n_neighbors=10, cache_dir=tmp_path)
    assert isinstance(first, np.ndarray) and first.shape == (120, 2) and first.dtype == np.float32
    assert np.isfinite(first).all()
    files = list(tmp_path.glob("umap-*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), first)

    # The shared map keeps the classes apart: each 2-D point's nearest other point has its class.
    labels = np.concatenate([y.numpy(), y.numpy()])
    d = ((first[:, None] - first[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.95

    # Second call: served from the cache, UMAP is never constructed.
    import umap

    def refuse(*args, **kwargs):
        raise AssertionError("UMAP was fitted again instead of reading the cache")

    monkeypatch.setattr(umap, "UMAP", refuse)
    np.testing.assert_array_equal(cached_umap_projection(z, z_adv, n_neighbors=10, cache_dir=tmp_path), first)
    np.testing.assert_array_equal(
        cached_umap_projection(z.numpy(), z_adv.numpy(), n_neighbors=10, cache_dir=tmp_path), first)
    # Other inputs or settings are other keys: they would have to be fitted (and here that refuses).
    for kwargs in ({"n_neighbors": 11}, {"min_dist": 0.2}, {"seed": 1}, {"metric": "euclidean"}):
        with pytest.raises(AssertionError, match="fitted again"):
            cached_umap_projection(z, z_adv, **{"n_neighbors": 10, **kwargs}, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="fitted again"):
        cached_umap_projection(z, z_adv * 1.001, n_neighbors=10, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="fitted again"):
        cached_umap_projection(z_adv, z, n_neighbors=10, cache_dir=tmp_path)   # order matters: clean rows first


def test_umap_default_cache_dir_and_broken_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEAD_CACHE_DIR", str(tmp_path / "cache"))   # the views' cache folder: data/cache
    z, _ = clusters(n_per_class=10, d=8, seed=4)
    first = cached_umap_projection(z, z + 0.01, n_neighbors=5)
    (path,) = (tmp_path / "cache" / "umap").glob("umap-*.npy")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the usual file mode, not mkstemp's 0600
    path.write_bytes(b"<html>not an array</html>")          # a broken cache file is recomputed
    with pytest.warns(RuntimeWarning, match="UMAP cache file .* is corrupt"):
        again = cached_umap_projection(z, z + 0.01, n_neighbors=5)
    np.testing.assert_array_equal(again, first)            # seeded: the same map
    np.testing.assert_array_equal(np.load(path), first)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_umap_missing_package_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)          # import umap now raises ImportError
    z, _ = clusters(n_per_class=10, d=8)
    with pytest.raises(ImportError, match="pip install umap-learn"):
        cached_umap_projection(z, z, n_neighbors=5, cache_dir=tmp_path)
    with pytest.raises(ImportError, match="umap-learn"):
        warm_up_umap()


def test_umap_argument_errors(tmp_path):
    z, _ = clusters(n_per_class=5, d=8)
    with pytest.raises(ValueError, match=r"n_neighbors must be smaller than the number of points \(30\), got 30"):
        cached_umap_projection(z, z, n_neighbors=30, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n_neighbors must be >= 2, got 1"):
        cached_umap_projection(z, z, n_neighbors=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"min_dist must be in \[0, 1\]"):
        cached_umap_projection(z, z, min_dist=2.0, n_neighbors=5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="min_dist must be >= 0"):
        cached_umap_projection(z, z, min_dist=-0.1, n_neighbors=5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="same embedding dimension"):
        cached_umap_projection(z, z[:, :4], n_neighbors=5, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="seed must be an integer"):
        cached_umap_projection(z, z, seed=None, n_neighbors=5, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())                      # nothing was fitted or cached
    with pytest.raises(ValueError, match="n_neighbors must be >= 2, got 1"):
        umap_projection(z, z, n_neighbors=1)                 # the core function checks, the cache only passes on


def test_core_umap_projection_fits_without_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEAD_CACHE_DIR", str(tmp_path))
    z, _ = clusters(n_per_class=10, d=8, seed=4)
    coords = umap_projection(z, z + 0.01, n_neighbors=5)
    assert coords.shape == (60, 2) and coords.dtype == np.float32
    assert not list(tmp_path.rglob("*"))                     # the core function writes nothing
    np.testing.assert_array_equal(coords, cached_umap_projection(z, z + 0.01, n_neighbors=5))   # the same map
    assert len(list(tmp_path.rglob("umap-*.npy"))) == 1
