"""Data: each dataset's threat model (`DatasetInfo`), the device the work runs on (`get_device`), and the batches.

`DeviceLoader` keeps the whole training set (x: (N, C, H, W) float32 in [0, 1], y: (N,) int64) on the device and
makes each batch there (shuffle, random crop with padding, flip): no DataLoader workers, no host-to-device copy per
batch, and each epoch's order and augmentation a function of (seed, epoch) only, so a resumed run sees the same
batches. Reading the datasets' files is the course's job (`clead_lite.course.datasets`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .validate import check_int


@dataclass(frozen=True)
class DatasetInfo:
    """What the course needs to know about a dataset: its shape and its standard threat model."""
    name: str
    channels: int
    size: int
    num_classes: int
    eps: float            # standard L-inf budget in pixel units ([0, 1] scale)
    alpha: float          # PGD step size for that budget
    eps_l2: float         # standard L2 budget
    flip: bool            # horizontal flip is a label-preserving augmentation
    crop_pad: int         # random-crop padding for augmentation
    model: str            # default architecture
    classes: tuple[str, ...]


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", 1, 28, 10, 0.3, 0.01, 2.0, False, 2, "smallcnn", _DIGITS),
    "mnist": DatasetInfo("mnist", 1, 28, 10, 0.3, 0.01, 2.0, False, 2, "smallcnn", _DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 10, 0.1, 0.01, 1.5, False, 2, "smallcnn", (
        "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, 8 / 255, 2 / 255, 0.5, True, 4, "preactresnet18", (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
}
DEFAULT_DATASET = "mnist5k"


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(map(repr, DATASETS))}")
    return DATASETS[name]


_DEVICES_ALLOWED = "'cpu', 'cuda', 'cuda:N', 'mps'"  # device-ok: the names an error message offers


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device, chosen once: the argument, else `$CLEAD_DEVICE`, else CUDA when available, else CPU. A device
    this machine does not have is a clear error here (instead of a traceback at the first tensor)."""
    source = "the device argument"
    if device is None and os.environ.get("CLEAD_DEVICE"):
        device, source = os.environ["CLEAD_DEVICE"].strip(), "CLEAD_DEVICE"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"  # device-ok
    if not isinstance(device, torch.device):
        try:
            device = torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"unknown device {device!r} (from {source}); allowed: {_DEVICES_ALLOWED}")
    if device.type == "cuda":  # device-ok
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {str(device)!r} (from {source}) is not available: no CUDA GPU here "
                             f"(torch {torch.__version__}); use 'cpu'")
        if device.index is not None and device.index >= n:
            raise ValueError(f"device {str(device)!r} (from {source}) is not available: this machine has {n} "
                             f"CUDA device(s), cuda:0..cuda:{n - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device 'mps' (from {source}) is not available here; use 'cpu'")
    elif device.type != "cpu":
        raise ValueError(f"device {str(device)!r} (from {source}) is not supported; allowed: {_DEVICES_ALLOWED}")
    return device


class DeviceLoader:
    """Batches from tensors that stay on `device`, augmented there (module docstring); call `set_epoch(e)` each
    epoch. With `world_size > 1` each rank takes a disjoint, equal-sized shard (DistributedDataParallel)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str = "cpu",
                 shuffle: bool = True, crop_pad: int = 0, flip: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        check_int(batch_size, "batch_size")
        if len(x) != len(y):
            raise ValueError(f"x and y disagree on the number of samples: {len(x)} vs {len(y)}")
        if len(x) == 0:
            raise ValueError("cannot build a loader on an empty dataset")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.crop_pad, self.flip, self.seed = crop_pad, flip, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.y)
        per = n // self.world_size     # this rank's share (all of it on one process)
        idx = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        idx = idx[self.rank * per:(self.rank + 1) * per].to(self.device)
        starts = [i * self.batch_size for i in range(len(self))]
        # the epoch's crops and flips, drawn on the CPU (the same on every device): one copy, not one sync per batch
        draws = [augment_draws(min(self.batch_size, len(idx) - s), self.crop_pad, self.flip, g) for s in starts]
        on_device = _to_device([d for batch in draws for d in batch], self.device)
        for i, start in enumerate(starts):
            b = idx[start:start + self.batch_size]
            xb, yb = self.x[b], self.y[b]
            if self.crop_pad or self.flip:
                xb = augment_batch(xb, self.crop_pad, self.flip, *on_device[2 * i:2 * i + 2])
            yield xb, yb


def augment_draws(b: int, crop_pad: int, flip: bool, generator: torch.Generator):
    """One batch's random draws from the CPU `generator`: ((B, 2) crop offsets or None, (B,) flip mask or None)."""
    offsets = None
    if crop_pad:   # all the rows, then all the columns: the order of the draws fixes the batches
        offsets = torch.stack([torch.randint(0, 2 * crop_pad + 1, (b,), generator=generator) for _ in range(2)], 1)
    mask = torch.rand(b, generator=generator) < 0.5 if flip else None
    return offsets, mask


def _to_device(tensors: list, device: torch.device) -> list:
    """Tensors (or None) to `device` in one copy: pinned host memory and a non-blocking transfer on CUDA."""
    present = [t for t in tensors if t is not None]
    if not present or device.type == "cpu":
        return tensors
    flat = torch.cat([t.reshape(-1).to(torch.int64) for t in present])
    flat = flat.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else flat.to(device)  # device-ok
    parts = iter(flat.split([t.numel() for t in present]))
    return [None if t is None else next(parts).view(t.shape).to(t.dtype) for t in tensors]


def augment_batch(x: torch.Tensor, crop_pad: int, flip: bool, offsets: torch.Tensor | None,
                  mask: torch.Tensor | None) -> torch.Tensor:
    """Random crop after zero-padding by `crop_pad`, and random horizontal flip, on x's device. x: (B, C, H, W);
    offsets: (B, 2) crop corners (row, column) in [0, 2 * crop_pad]; mask: (B,) bool, flip where True."""
    b, c, h, w = x.shape
    if crop_pad:
        xp = torch.nn.functional.pad(x, (crop_pad,) * 4)
        rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B,1,H,1)
        cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B,1,1,W)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if flip:
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
