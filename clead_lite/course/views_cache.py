"""The on-disk cache of the faithful pipeline's precomputed adversarial views (`ViewsCache`).

    precompute_adversarial_views(surrogate, x, y, eps=0.3, cache=ViewsCache())

A file per key: a sha256 of the surrogate's weights, the images, the labels and every setting of the views.
A second call with the same inputs loads the file instead of attacking. A damaged file warns (naming it) and is
recomputed; a cache that cannot be written warns before the work, and the views are still returned.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .datasets import cache_dir
from ..models import unwrap
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .safe_io import OutputError, check_writable

__all__ = ["ViewsCache", "views_key"]


def _hash_tensors(h, tensors) -> None:
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes; same bytes otherwise
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def views_key(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict) -> str:
    """sha256 of the settings, the surrogate's weights, the images and the labels."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    sd = unwrap(surrogate).state_dict()
    _hash_tensors(h, [sd[k] for k in sorted(sd)])
    _hash_tensors(h, [x, y])
    return h.hexdigest()


class ViewsCache:
    """Views cached under `folder` (default: `$CLEAD_CACHE_DIR`, else the repository's data/cache)."""

    def __init__(self, folder: str | os.PathLike | None = None, progress: bool = True):
        self.folder, self.progress = cache_dir(folder), progress
        self._writable: dict[str, bool] = {}

    def path(self, key: str) -> Path:
        return self.folder / f"views-{key[:24]}.pt"

    def load(self, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict):
        key = views_key(surrogate, x, y, params)
        path = self.path(key)
        if path.exists():
            try:
                views = load_checkpoint(path, required=("views",))["views"]
            except (CheckpointError, OSError) as e:   # a broken cache file costs a recomputation, not the run
                warnings.warn(f"{e}; computing the views again", RuntimeWarning, stacklevel=3)
                views = None
            kinds = params["kinds"]
            if isinstance(views, dict) and all(
                    isinstance(views.get(k), torch.Tensor) and views[k].shape == x.shape
                    and views[k].dtype == torch.uint8 for k in kinds):
                if self.progress:
                    print(f"adversarial views loaded from the cache {path}", flush=True)
                return {k: views[k] for k in kinds}
            if views is not None:
                warnings.warn(f"the views cache file {path} does not hold uint8 views of shape {tuple(x.shape)} for "
                              f"{', '.join(kinds)}; computing the views again", RuntimeWarning, stacklevel=3)
        try:   # say before the work, not after it, that the result cannot be kept
            check_writable(path, "views cache", hint="set CLEAD_CACHE_DIR to a writable folder")
            self._writable[key] = True
        except OutputError as e:
            warnings.warn(f"the views will not be cached: {e}", RuntimeWarning, stacklevel=3)
            self._writable[key] = False
        return None

    def save(self, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict, views: dict) -> None:
        key = views_key(surrogate, x, y, params)
        if not self._writable.get(key, True):
            return
        path = self.path(key)
        try:
            save_checkpoint(path, {"format": 1, "kind": "views", "params": params, "key": key, "views": views})
            if self.progress:
                print(f"adversarial views cached in {path}", flush=True)
        except OSError as e:      # e.g. a full disk: the computed views are still returned
            warnings.warn(f"the views were not cached: {e}", RuntimeWarning, stacklevel=3)
