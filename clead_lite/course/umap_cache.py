"""UMAP maps cached on disk, so that a notebook run again (or the explorer's many maps) does not fit them again.

    coords = cached_umap_projection(z_clean, z_adv, n_neighbors=15, seed=0)   # embeddings.umap_projection, cached

A map is stored as `umap-<key>.npy` under `umap_cache_dir()` (data/cache/umap, or $CLEAD_CACHE_DIR/umap), keyed
by a hash of the embeddings and the settings; it is written atomically, a folder that cannot be written costs
only the cache (a warning), and a damaged file is named in a warning and computed again.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .datasets import cache_dir as _cache_root
from ..embeddings import umap_projection
from .checkpoints import CheckpointError
from .safe_io import clean_stale_temps, temp_path

__all__ = ["cached_umap_projection", "umap_cache_dir", "cache_key", "read_map", "save_map", "warm_up_umap"]


def umap_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where UMAP maps are cached: `cache_dir`, else <cache dir>/umap: data/cache/umap, or
    $CLEAD_CACHE_DIR/umap (the cache of the precomputed views too)."""
    return Path(cache_dir) if cache_dir is not None else _cache_root() / "umap"


def cache_key(z_clean, z_adv, params: dict) -> str | None:
    """Hex key of the embeddings (as float32) and the settings; None for inputs that are not arrays (then
    nothing is cached: `umap_projection` says what is wrong with them)."""
    h = hashlib.sha256(b"clead_lite.umap_projection v1")
    h.update(repr(sorted(params.items())).encode())
    for z in (z_clean, z_adv):
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().float().numpy()
        if not isinstance(z, np.ndarray) or z.dtype == object:
            return None
        z = np.ascontiguousarray(z, dtype=np.float32)
        h.update(repr(z.shape).encode())
        h.update(z.tobytes())
    return h.hexdigest()[:32]


def save_map(path: Path, array: np.ndarray) -> bool:
    """Write the cache file (usual file mode, atomic rename); a folder that cannot be written (read-only,
    full) costs only the cache: a warning, and the computed map is still returned. True when written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        tmp = temp_path(path)
        with open(tmp, "xb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
        return True
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"the UMAP map was not cached: cannot write {path} ({e.strerror or e}); set "
                      "CLEAD_CACHE_DIR to a writable folder to cache it", RuntimeWarning, stacklevel=3)
        return False


def read_map(path: Path, n: int) -> np.ndarray:
    """A cached (n, 2) float32 map; CheckpointError (one line) for a file that is not one."""
    try:
        cached = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - random bytes reach several parsers
        raise CheckpointError(f"the UMAP cache file {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:150] or 'no detail'})") from None
    if not isinstance(cached, np.ndarray) or cached.shape != (n, 2) or cached.dtype != np.float32:
        raise CheckpointError(f"the UMAP cache file {path} holds {getattr(cached, 'dtype', '?')} "
                              f"{getattr(cached, 'shape', '?')}, not a ({n}, 2) float32 map")
    return cached


def cached_umap_projection(z_clean, z_adv, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                           cache_dir: str | os.PathLike | None = None, metric: str = "cosine") -> np.ndarray:
    """`embeddings.umap_projection(z_clean, z_adv, n_neighbors, min_dist, seed, metric)`: (N_clean + N_adv, 2)
    float32, cached under `umap_cache_dir(cache_dir)`, so that the same inputs and settings return at once
    without importing UMAP. Only a map that was computed is ever stored: bad arguments never reach the cache."""
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "metric": metric}
    key = cache_key(z_clean, z_adv, params)
    path = None if key is None else umap_cache_dir(cache_dir) / f"umap-{key}.npy"
    if path is not None and path.is_file():
        try:
            return read_map(path, len(z_clean) + len(z_adv))
        except CheckpointError as e:                   # a broken cache file: compute again and overwrite it
            warnings.warn(f"{e}; computing the map again", RuntimeWarning, stacklevel=2)
    result = umap_projection(z_clean, z_adv, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, metric=metric)
    if path is not None:
        save_map(path, result)
    return result


def warm_up_umap(metric: str = "cosine") -> None:
    """A tiny UMAP fit, so that numba compiles its kernels now (10-40 s, once per process), not in the middle of a
    lesson (notebook 07 calls it while the student reads the introduction)."""
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32))
    umap_projection(z[:20], z[20:], n_neighbors=5, metric=metric)
