"""Check for notebook 00's exercise: normalisation inside the model."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ._common import _FAILED, _call, _close, _fail, _ok, exercise

__all__ = ["check_normalisation_inside_model"]


class NormalizedModel(nn.Module):
    """The reference solution: feeds `net` with (x - mean) / std per channel; x: (B, C, H, W) in [0, 1]."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _net_prefix(model: nn.Module, net: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is net:
            return n + "." if n else ""
    return "\0"


@exercise("clead_lite.exercises.nb00_setup:NormalizedModel")
def check_normalisation_inside_model(student_wrapper: Callable) -> bool:
    """Exercise (00): `NormalizedModel(net, mean, std)` -> a module taking pixels in [0, 1] and feeding
    `net` with (x - mean) / std per channel (mean, std: sequences of C numbers).

    Detects: no normalisation, multiplying by std, dividing before subtracting, mean and std swapped, dividing
    by the variance, the batch's own statistics, normalising twice, wrong broadcasting shape, mean/std stored as
    trainable parameters or as plain tensors that do not follow `.to(device)`.
    """
    name = "check_normalisation_inside_model"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 9, generator=g)
    net(x)  # materialise the lazy layer
    model = _call(name, student_wrapper, net, mean, std)
    if model is _FAILED:
        return False
    if not isinstance(model, nn.Module):
        return _fail(name, f"build an nn.Module, got {type(model).__name__}")
    out = _call(name, model, x.clone(),
                _hint="mean and std must broadcast against x of shape (B, C, H, W): reshape them to (1, C, 1, 1)")
    if out is _FAILED:
        return False
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net((x - m) / s)
        variants = {
            "raw": net(x),
            "times": net((x - m) * s),
            "order": net(x / s - m),
            "pre_normalised": net(((x - m) / s - m) / s),
            "swapped": net((x - s) / m),
            "variance": net((x - m) / s ** 2),
            "batch": net((x - x.mean()) / x.std()),
            "batch_channel": net((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)),
        }
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return _fail(name, f"the model should return net's logits of shape {tuple(ref.shape)}, got {got}")
    out = out.detach()
    batch = ("you normalised with the batch's own mean and std; use the dataset's fixed mean and std (the "
             "arguments), so that every image is normalised the same way whatever the batch",
             "(x - self.mean) / self.std with the stored buffers")
    messages = {
        "raw": ("your model passes raw pixels to a network that expects normalised inputs",
                "forward(x) must compute net((x - mean) / std)"),
        "times": ("you multiplied by std instead of dividing", "(x - mean) / std"),
        "order": ("you divided before subtracting the mean", "(x - mean) / std: subtract first"),
        "pre_normalised": ("you normalised twice", "normalise once, inside forward"),
        "swapped": ("you swapped mean and std: (x - std) / mean", "(x - mean) / std"),
        "variance": ("you divided by the variance std ** 2; divide by the standard deviation std", "(x - mean) / std"),
        "batch": batch,
        "batch_channel": batch,
    }
    if not _close(out, ref, 1e-4):
        for key, value in variants.items():
            if _close(out, value, 1e-4):
                return _fail(name, *messages[key])
        return _fail(name, f"your logits differ from net((x - mean) / std) by up to "
                           f"{float((out - ref).abs().max()):.3g}", "reshape mean/std to (1, C, 1, 1)")
    trainable = [n for n, p in model.named_parameters() if not n.startswith(_net_prefix(model, net))]
    if trainable:
        return _fail(name, f"mean/std are trainable parameters ({', '.join(trainable)}): the optimiser would "
                           "change them", "store them with self.register_buffer('mean', ...)")
    buffers = [b for n, b in model.named_buffers() if not n.startswith(_net_prefix(model, net))]
    if len(buffers) < 2:
        return _fail(name, "mean and std are plain tensor attributes: model.to(device) would leave them on the "
                           "CPU", "store them with self.register_buffer('mean', tensor) so they follow the model")
    return _ok(name, "the model takes pixels in [0, 1] and normalises inside: attacks and eps are in pixel units")
