"""AutoAttack results cached for shipped models, re-checked live on a small subset.

The standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on 200 MNIST images of a robust SmallCNN costs about
5 minutes of one CPU thread per model: too slow for a class. `scripts/make_aa_cache.py` runs it once per
shipped checkpoint and writes the per-image outcomes to `data/checkpoints/autoattack_cache.json`, keyed by

- the sha256 of the model's weights (so it applies however the model was loaded: checkpoint, store, copy),
- the sha256 of the evaluated images and labels, and the threat model (norm, eps), version, n and seed.

`autoattack_with_cache` returns the cached outcome when one matches and runs the same standard AutoAttack live
on `n_check` of the cached images, reporting how many per-image outcomes agree; with no match it runs
AutoAttack live on all n images (and says so).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import strip_prefixes, checkpoint_dir
from .safe_io import read_json_entries, write_json_atomic
from .autoattack import AutoAttackResult, autoattack_accuracy, random_subset
from ..validate import check_int

CACHE_NAME = "autoattack_cache.json"

__all__ = ["CACHE_NAME", "CachedAutoAttack", "autoattack_with_cache", "cache_path", "find_entry",
           "images_sha256", "read_cache", "record_result", "weights_sha256"]


def cache_path() -> Path:
    """The cache file: `autoattack_cache.json` beside the checkpoint manifest."""
    return checkpoint_dir() / CACHE_NAME


def weights_sha256(model: nn.Module) -> str:
    """Hex sha256 of the model's state dict (names, dtypes, shapes, values; DDP/compile prefixes removed).
    Independent of device and memory layout (channels_last), so a model identifies itself however loaded."""
    h = hashlib.sha256()
    for name, value in sorted(strip_prefixes(model.state_dict()).items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def images_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """Hex sha256 of images x: (N, C, H, W) float (hashed as float32) and labels y: (N,) (hashed as int64)."""
    h = hashlib.sha256()
    xs = x.detach().cpu().float().contiguous()
    h.update(f"{tuple(xs.shape)}|".encode())
    h.update(xs.numpy().tobytes())
    h.update(y.detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()


_ENTRY_FIELDS = {"weights_sha256": str, "images_sha256": str, "eps": (int, float), "norm": str, "version": str,
                 "n": int, "seed": int, "accuracy": (int, float), "clean_accuracy": (int, float), "indices": list,
                 "correct": str, "attacks_run": list, "seconds": (int, float)}


def _entry_problem(e) -> str | None:
    if not isinstance(e, dict):
        return f"it is a {type(e).__name__}, not an object"
    for name, kind in _ENTRY_FIELDS.items():
        if not isinstance(e.get(name), kind) or isinstance(e.get(name), bool):
            return f"its field {name!r} is missing" if name not in e else f"its field {name!r} is {e[name]!r}"
    if len(e["indices"]) != e["n"] or len(e["correct"]) != e["n"] or set(e["correct"]) - {"0", "1"}:
        return f"its 'indices' / 'correct' do not hold n={e['n']} outcomes"
    return None


def read_cache(path: str | os.PathLike | None = None) -> dict:
    """The cache as {'format': 1, 'entries': [...]} (empty when the file does not exist). A file that cannot be
    read (truncated, not UTF-8 JSON, not an object with an 'entries' list) raises ValueError naming it; a damaged
    entry is skipped with a warning naming it and the field. The readers of the cache (`find_entry`,
    `record_result`, `autoattack_with_cache`) turn a damaged file into a warning: a cache is only a cache."""
    path = Path(path) if path is not None else cache_path()

    def unreadable(e: BaseException) -> str:
        if isinstance(e, OSError):
            return f"the AutoAttack cache {path} cannot be read ({e.strerror or e})"
        return (f"the AutoAttack cache {path} is truncated or not UTF-8 JSON ({type(e).__name__}: "   # a write cut short
                f"{' '.join(str(e).split())[:100]})")

    return read_json_entries(path, "entries", _entry_problem, unreadable=unreadable, kind="an AutoAttack cache",
                             skipped=lambda i, problem: f"the AutoAttack cache {path}: entry {i} is skipped: {problem}")


def _read_or_empty(path: str | os.PathLike | None) -> dict:
    """`read_cache`, with a damaged file a warning (naming it) and an empty cache: AutoAttack runs live."""
    try:
        return read_cache(path)
    except ValueError as e:
        warnings.warn(f"{e}; ignoring it: AutoAttack runs live (scripts/make_aa_cache.py rebuilds the cache, "
                      "git checkout restores the shipped one)", RuntimeWarning, stacklevel=3)
        return {"format": 1, "entries": []}


def _key(weights: str, images: str, eps: float, norm: str, version: str, n: int, seed: int) -> tuple:
    return (weights, images, round(float(eps), 6), norm.lower(), version, int(n), int(seed))


def _entry_key(e: dict) -> tuple:
    return _key(e["weights_sha256"], e["images_sha256"], e["eps"], e["norm"], e["version"], e["n"], e["seed"])


def find_entry(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n: int, seed: int = 0,
               norm: str = "Linf", version: str = "standard", path: str | os.PathLike | None = None) -> dict | None:
    """The cached entry for this model (by weights), these images and these settings, else None."""
    key = _key(weights_sha256(model), images_sha256(x, y), eps, norm, version, n, seed)
    return next((e for e in _read_or_empty(path)["entries"] if _entry_key(e) == key), None)


def record_result(result: AutoAttackResult, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  label: str, checkpoint: str | None = None, checkpoint_sha256: str | None = None,
                  images: str = "", command: str = "", path: str | os.PathLike | None = None) -> dict:
    """Write (or replace) the entry of one AutoAttack run on (model, x, y) into the cache; returns it.

    result: `autoattack_accuracy(model, x, y, ..., return_details=True)` on these x, y."""
    import pyautoattack  # noqa: F401  (only for its version)
    from importlib.metadata import version as _version
    path = Path(path) if path is not None else cache_path()
    entry = {
        "label": label, "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256,
        "weights_sha256": weights_sha256(model), "images_sha256": images_sha256(x, y), "images": images,
        "eps": result.eps, "norm": result.norm, "version": result.version, "n": result.n, "seed": result.seed,
        "accuracy": result.accuracy, "clean_accuracy": result.clean_accuracy,
        "attacks_run": result.attacks_run, "accuracy_after": result.accuracy_after,
        "indices": [int(i) for i in result.indices],
        "correct": "".join("1" if c else "0" for c in result.correct.tolist()),
        "seconds": round(result.seconds, 1), "threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device), "torch": torch.__version__,
        "pyautoattack": _version("pyautoattack"), "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    data = _read_or_empty(path)   # a damaged file is replaced by one holding this entry
    data["entries"] = [e for e in data["entries"] if _entry_key(e) != _entry_key(entry)] + [entry]
    data["entries"].sort(key=lambda e: (e.get("label") or "", e["weights_sha256"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data, indent=1, what="AutoAttack cache")
    return entry


@dataclass
class CachedAutoAttack:
    """AutoAttack's robust accuracy on n images, from the cache (source 'cache') or run here ('live').

    accuracy, clean_accuracy in [0, 1] on the n images; stderr: its binomial standard error sqrt(p(1-p)/n);
    seconds: what the full run cost (when and where it ran: `entry`); n_checked / agree: images re-attacked
    live and how many of their outcomes (robust or broken) equal the cached ones; live: that run."""
    accuracy: float
    clean_accuracy: float
    n: int
    source: str
    attacks_run: list[str]
    seconds: float
    correct: torch.Tensor = field(repr=False)      # (n,) bool
    indices: torch.Tensor = field(repr=False)      # (n,) int64 positions in x
    n_checked: int = 0
    agree: int = 0
    live_seconds: float = 0.0
    live: AutoAttackResult | None = field(default=None, repr=False)
    entry: dict | None = field(default=None, repr=False)

    @property
    def stderr(self) -> float:
        p = self.accuracy
        return math.sqrt(p * (1 - p) / self.n) if self.n else math.nan

    @property
    def agreement(self) -> float:
        return self.agree / self.n_checked if self.n_checked else math.nan

    def describe(self) -> str:
        text = (f"AutoAttack (standard) {self.accuracy:.1%} +- {self.stderr:.1%} (1 s.e.) on {self.n} images")
        if self.source == "cache":
            e = self.entry or {}
            text += (f", from the cache (run {e.get('created', '?')[:10]} on {e.get('device', '?')} with "
                     f"{e.get('threads', '?')} thread(s), pyautoattack {e.get('pyautoattack', '?')}); ")
            text += (f"re-checked live on {self.n_checked}: {self.agree}/{self.n_checked} outcomes agree "
                     f"({self.live_seconds:.0f} s)" if self.n_checked else
                     "not re-checked live here (the sha256 of the weights and images matches the cache's key)")
        else:
            text += f", run live ({self.seconds:.0f} s; no cached result for this model and these images)"
        return text


def autoattack_with_cache(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n: int,
                          seed: int = 0, n_check: int = 32, norm: str = "Linf",
                          path: str | os.PathLike | None = None, batch_size: int = 500) -> CachedAutoAttack:
    """Standard AutoAttack's robust accuracy of `model` on a seeded subset of n of (x, y), cached when possible.

    x: (N, C, H, W) in [0, 1]; y: (N,) int64; the subset is `autoattack_accuracy`'s (n, seed). With a cache
    entry for these weights, images and settings: its outcome, and the standard AutoAttack run live on the
    first n_check images of the subset (0: no live check). Without one: AutoAttack live on all n images."""
    check_int(n, "n")
    check_int(n_check, "n_check", minimum=0)
    entry = find_entry(model, x, y, eps, n=n, seed=seed, norm=norm, path=path)
    if entry is None:
        r = autoattack_accuracy(model, x, y, eps, norm=norm, n=n, seed=seed, batch_size=batch_size,
                                return_details=True)
        return CachedAutoAttack(r.accuracy, r.clean_accuracy, r.n, "live", r.attacks_run, r.seconds,
                                r.correct, r.indices, live=r)
    indices = torch.tensor(entry["indices"], dtype=torch.long)
    if not torch.equal(indices, random_subset(x.shape[0], n, seed)):
        warnings.warn(f"the AutoAttack cache {Path(path) if path is not None else cache_path()}: the entry "
                      f"{entry.get('label')!r} holds another subset than autoattack_accuracy's seeded one; running "
                      "AutoAttack live (rebuild the cache with scripts/make_aa_cache.py)", RuntimeWarning, stacklevel=2)
        entry = None
    if entry is None:
        r = autoattack_accuracy(model, x, y, eps, norm=norm, n=n, seed=seed, batch_size=batch_size,
                                return_details=True)
        return CachedAutoAttack(r.accuracy, r.clean_accuracy, r.n, "live", r.attacks_run, r.seconds,
                                r.correct, r.indices, live=r)
    correct = torch.tensor([c == "1" for c in entry["correct"]])
    result = CachedAutoAttack(entry["accuracy"], entry["clean_accuracy"], entry["n"], "cache",
                              list(entry["attacks_run"]), float(entry["seconds"]), correct, indices, entry=entry)
    k = min(n_check, n)
    if k:
        start = time.perf_counter()
        check = indices[:k]
        live = autoattack_accuracy(model, x[check], y[check], eps, norm=norm, seed=seed, batch_size=batch_size,
                                   return_details=True)
        result.live, result.n_checked = live, k
        result.agree = int((live.correct == correct[:k]).sum())
        result.live_seconds = time.perf_counter() - start
    return result
