"""Models that take pixels x: (B, C, H, W) float in [0, 1]: the normalisation is inside the model, so attacks and
eps-balls are in pixel space. Every model is a `CourseModel` (logits, penultimate features, projection head); then
the two architectures, `build_model`, `unwrap` (under DDP / torch.compile wrappers) and `eval_mode`.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import check_choice, check_images, check_labels

MEANS = {1: (0.1307,), 3: (0.4914, 0.4822, 0.4465)}
STDS = {1: (0.3081,), 3: (0.2471, 0.2435, 0.2616)}


class Normalize(nn.Module):
    """(x - mean) / std per channel, as buffers so they follow `.to(device)`. x: (B, C, H, W) in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ProjectionHead(nn.Sequential):
    """SimCLR projection: Linear -> ReLU -> Linear, (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class CourseModel(nn.Module):
    """Shared logic: input checks, normalisation, classifier and projection heads."""

    in_channels: int
    image_size: int

    def __init__(self, feature_dim: int, num_classes: int, proj_dim: int):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.normalize = Normalize(MEANS[self.in_channels], STDS[self.in_channels])
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.head = ProjectionHead(feature_dim, feature_dim, proj_dim)

    def _check(self, x: torch.Tensor) -> None:
        # Shapes only (free, torch.compile-friendly): reading x's range would sync every forward; callers check it
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects x of shape (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}) in [0, 1], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__} got an empty batch (shape {tuple(x.shape)})")

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B, C, H, W) images -> (B, feature_dim); each architecture defines it."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x -> (B, feature_dim) penultimate embedding."""
        self._check(x)
        w = self.classifier.weight
        if x.dtype != w.dtype and x.is_floating_point() and not torch.is_autocast_enabled(x.device.type):
            x = x.to(w.dtype)    # float64 (or half) images into a float32 model: convert, gradients flow back
        return self.body(self.normalize(x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x -> (B, proj_dim) projection for contrastive losses (not normalised: the losses normalise)."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x -> logits (B, num_classes)."""
        return self.classifier(self.features(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (logits, projection) from one pass through the body (what contrastive training needs)."""
        f = self.features(x)
        return self.classifier(f), self.head(f)


class SmallCNN(CourseModel):
    """A small CNN for 1x28x28 images (MNIST-like), two conv blocks and a 128-d embedding (~0.4 M params): PGD
    adversarial training runs in minutes on a laptop CPU."""

    in_channels = 1
    image_size = 28

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 128, proj_dim: int = 64):
        super().__init__(feature_dim, num_classes, proj_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),            # 14x14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))    # 7x7
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU(inplace=True))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv, twice, plus the shortcut (a 1x1 conv where the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet18(CourseModel):
    """PreAct ResNet-18 (He et al. 2016) for 3x32x32 images, the standard adversarial-training model."""

    in_channels = 3
    image_size = 32

    def __init__(self, num_classes: int = 10, proj_dim: int = 128, width: int = 64):
        super().__init__(8 * width, num_classes, proj_dim)
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        layers, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for stride in (1 if i == 0 else 2, 1):     # each stage after the first halves the size
                layers.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


MODELS = {"smallcnn": SmallCNN, "preactresnet18": PreActResNet18}


def build_model(name: str, num_classes: int = 10, **kwargs) -> CourseModel:
    """A fresh model by name: 'smallcnn' (1x28x28) or 'preactresnet18' (3x32x32)."""
    check_choice(name, "model", tuple(MODELS))
    return MODELS[name](num_classes=num_classes, **kwargs)


def check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, values: bool = True,
                name: str = "model") -> None:
    """The entry check of every function that runs a model on data: model a torch Module; x: (B, C, H, W) float in
    [0, 1] with the model's channels and image size; y (if given): (B,) int64 in [0, num_classes). values=False skips
    the ranges, the only part that reads x and y (a GPU->CPU sync): once per data set, never per batch."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    inner = unwrap(model)
    check_images(x, channels=getattr(inner, "in_channels", None), values=values)
    size = getattr(inner, "image_size", None)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"x has {x.shape[-2]}x{x.shape[-1]} images, the model expects {size}x{size} "
                         f"(shape {tuple(x.shape)})")
    if y is not None:
        check_labels(y, x.shape[0], getattr(inner, "num_classes", None), values=values)


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (`.module`) / torch.compile (`._orig_mod`) wrappers."""
    while (inner := getattr(model, "module", None) or getattr(model, "_orig_mod", None)) is not None:
        model = inner
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside (BatchNorm uses its running statistics, dropout is off); each module's own
    mode restored afterwards, so a partly frozen model (e.g. an encoder kept in eval) comes back as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
