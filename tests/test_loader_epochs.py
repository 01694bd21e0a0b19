"""DeviceLoader and augment_batch: each epoch its own order and augmentation (a function of seed and epoch),
the same again for the same epoch (what resume relies on); a flip alone mirrors about half the images exactly."""
from __future__ import annotations

import torch

from clead_lite.data import DeviceLoader


def test_each_epoch_has_its_own_order_and_augmentation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.arange(32)
    loader = DeviceLoader(x, y, batch_size=8, seed=1, crop_pad=2, flip=True)

    def epoch(e):
        loader.set_epoch(e)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    (x0, y0), (x1, y1), (x0_again, y0_again) = epoch(0), epoch(1), epoch(0)
    assert not torch.equal(y0, y1) and sorted(y1.tolist()) == list(range(32))
    assert torch.equal(y0, y0_again) and torch.equal(x0, x0_again)
    # the same image gets another crop / flip in another epoch
    a, b = x0[torch.argsort(y0)], x1[torch.argsort(y1)]
    assert (a - b).flatten(1).abs().amax(1).gt(0).float().mean() > 0.5


def test_flip_alone_mirrors_about_half_the_images_exactly():
    from clead_lite.data import augment_batch, augment_draws
    x = torch.rand(200, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    out = augment_batch(x, 0, True, *augment_draws(200, 0, True, torch.Generator().manual_seed(2)))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and not bool((flipped & kept).any())
    assert 60 < int(flipped.sum()) < 140          # p = 0.5 per image


def test_the_epochs_draws_go_to_the_device_in_one_copy(monkeypatch):
    """The crops and flips of a whole epoch reach the device in one transfer, not one blocking copy per batch
    (simulated: the copy helper counts its calls; on the CPU it is the identity)."""
    import clead_lite.data as D
    calls = []
    real = D._to_device
    monkeypatch.setattr(D, "_to_device", lambda tensors, device: calls.append(len(tensors)) or real(tensors, device))
    x, y = torch.rand(100, 1, 8, 8), torch.randint(0, 10, (100,))
    loader = D.DeviceLoader(x, y, 16, crop_pad=2, flip=True, seed=0)
    batches = list(loader)
    assert len(batches) == 7 and calls == [2 * 7]
