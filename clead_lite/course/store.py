"""The model store: every model is trained once, then loaded by every notebook or command that asks for it.

A model is identified by a **key**, a plain dict of everything that determines its weights:

    {"format", "dataset", "method", "model", "profile", "n_train", "data" (sha256 of the training images and
     labels), "train_step_version", "config" (the TrainConfig fields that affect this method's training)}

- `model_key(...)` builds it; `find(key)` looks for a model with that key, first among the **shipped**
  checkpoints (`data/checkpoints/manifest.json` entries carry their key; the file's sha256 is verified), then in
  the **store folder** (`$CLEAD_STORE`, default `data/store/` of the repository; `CLEAD_STORE=off` disables it).
- `save_model(key, ...)` writes `<stem>.pt` atomically (`checkpoints.save_checkpoint`: temporary file, fsync,
  rename) and then `<stem>.json` (the key, the sha256 of the .pt, when and how it was trained), also atomically.
  An entry counts only when both exist and the sha256 matches, so a save killed half-way is never loaded.
- `list_entries()` / `clear()` back `python -m clead_lite store list` / `store clear [--method M] [--yes]`;
  `clear` never deletes shipped checkpoints.

Which config fields are in the key: all of them except those that cannot change the weights (`resume`,
`checkpoint_path`, `log_every`, `compile`) and those the method ignores (the contrastive settings for methods
other than clead_online, the faithful-pipeline settings for other methods, the attack settings for `standard`,
whose held-out selection watches clean accuracy). `amp` and `channels_last` stay in the key as written (None =
automatic), so a model trained on a GPU and one trained on a CPU with the same settings are the same entry.
Keys are compared field by field, a field missing on one side (a model stored before the field existed) counting
as the field's current default; fields the current TrainConfig no longer has are ignored.

Code version: `training.TRAIN_STEP_VERSION`, a declared integer bumped by hand when a change makes the same
settings train different weights. A hash of the training source was the alternative; it would change with every
comment, docstring or refactoring of the training modules (several people edit them at once) and throw away every stored
and shipped model each time, while a declared version changes only when the math does. The price: someone must
remember to bump it (train_config.py says so next to the constant).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import (CheckpointError, checkpoint_dir, load_checkpoint,
                          load_model_state, manifest_entry_problem, model_metadata, read_manifest, save_checkpoint,
                          sha256_file, verify_checkpoint)
from ..models import MODELS, unwrap, build_model
from .safe_io import OutputError, is_being_written, output_lock, stale_temps, write_json_atomic
from ..faithful import FaithfulConfig
from ..training import TRAIN_STEP_VERSION, TrainConfig

__all__ = ["STORE_ENV", "KEY_FORMAT", "StoreHit", "store_dir", "data_fingerprint", "key_config", "model_key",
           "keys_match", "find", "load_model", "save_model", "list_entries", "shipped_entries", "clear",
           "describe_config", "describe_store_dir", "load_hit", "check_store_writable"]

STORE_ENV = "CLEAD_STORE"
KEY_FORMAT = 1
_OFF = ("off", "0", "none", "false", "no")
_NOT_IN_KEY = ("resume", "checkpoint_path", "log_every", "compile")
_ONLINE_ONLY = ("contrastive_weight", "clean_ce", "supervised_contrastive", "attack_loss", "split_views")
_FAITHFUL_ONLY = ("view_kinds", "encoder_views", "view_steps", "view_alpha", "cw_steps", "crop_scale", "head_fgsm",
                  "encoder_init", "surrogate_epochs", "encoder_epochs", "head_epochs")
_ATTACK = ("eps", "alpha", "attack_steps", "norm", "eps_warmup")


@dataclass
class StoreHit:
    """A model found for a key: `source` 'shipped' (data/checkpoints) or 'store'; `entry` its manifest entry or
    store record (key, sha256, config, metrics, command, ...)."""
    path: Path
    source: str
    entry: dict


# ============================================================================================== where
def store_dir() -> Path | None:
    """The store folder: `$CLEAD_STORE`, else `data/store/` next to the shipped checkpoints' `data/`; None when
    `CLEAD_STORE` is off/0/none (nothing is saved to or loaded from the folder; shipped checkpoints still count)."""
    env = os.environ.get(STORE_ENV)
    if env is not None and env.strip().lower() in _OFF:
        return None
    repo = Path(__file__).resolve().parents[2]
    in_repo = (repo / "clead_lite").is_dir()
    if env:
        path = Path(env).expanduser()
        if not path.is_absolute():   # one store for the command line (cwd: the repository) and the notebooks (cwd:
            path = (repo if in_repo else Path.cwd()) / path          # notebooks/): relative to the repository
        if path.exists() and not path.is_dir():
            raise ValueError(f"{STORE_ENV}={env!r} is a file; it must name a folder (or be 'off')")
        return path
    return repo / "data" / "store" if in_repo else Path("data") / "store"


def describe_store_dir() -> str:
    """The store folder in words: its absolute path, and how a relative CLEAD_STORE was resolved."""
    folder = store_dir()
    env = os.environ.get(STORE_ENV)
    if folder is None:
        return f"off ({STORE_ENV}={env!r})"
    if env and not Path(env).expanduser().is_absolute():
        return f"{folder} ({STORE_ENV}={env!r} is relative: resolved against the repository, from every folder)"
    return str(folder)


# ============================================================================================== keys
def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 (32 hex digits) of the training images x: (N, C, H, W) and labels y: (N,), their shapes and dtypes.
    About 1 s per GB (CIFAR-10's 50,000 float32 images: 0.6 GB)."""
    h = hashlib.sha256(repr((tuple(x.shape), str(x.dtype), tuple(y.shape), str(y.dtype))).encode())
    for t in (x, y):
        h.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))
    return h.hexdigest()[:32]


def key_config(config: TrainConfig, dataset: str, faithful: FaithfulConfig | None = None) -> dict:
    """The fields of `config` (eps and alpha resolved for `dataset`) and of the faithful pipeline's `faithful`
    (clead_faithful only; its recipe resolved) that can change this method's weights. One flat dict, as when
    both were one TrainConfig: the keys of stored and shipped models stay valid."""
    cfg = config.resolved(dataset)
    fc = faithful or FaithfulConfig()
    if cfg.method == "clead_faithful":
        fc = fc.resolved()
    drop = set(_NOT_IN_KEY)
    if cfg.method != "clead_online":
        drop |= set(_ONLINE_ONLY)
    if cfg.method not in ("clead_online", "clead_faithful"):
        drop.add("temperature")
    if cfg.method != "clead_faithful":
        drop |= set(_FAITHFUL_ONLY)
    if cfg.method == "standard":
        drop |= set(_ATTACK)
    return {k: v for k, v in {**cfg.to_dict(), **fc.to_dict()}.items() if k not in drop}


def model_key(method: str, dataset: str, model: str, profile: str, config: TrainConfig, x_train: torch.Tensor,
              y_train: torch.Tensor, faithful: FaithfulConfig | None = None) -> dict:
    """The store key of the model `config` (and, for clead_faithful, `faithful`) trains on (x_train, y_train);
    `profile` is the profile's name."""
    if config.method != method:
        raise ValueError(f"config.method is {config.method!r} but the key is for method {method!r}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    return {"format": KEY_FORMAT, "dataset": dataset, "method": method, "model": model, "profile": profile,
            "n_train": int(len(y_train)), "data": data_fingerprint(x_train, y_train),
            "train_step_version": TRAIN_STEP_VERSION, "config": key_config(config, dataset, faithful)}


def _defaults() -> dict:
    out = {}
    for f in dataclasses.fields(TrainConfig) + dataclasses.fields(FaithfulConfig):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def keys_match(a: dict, b: dict) -> bool:
    """Whether two keys name the same model (see the module docstring for missing and unknown fields)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    top = (set(a) | set(b)) - {"config"}
    if any(a.get(k) != b.get(k) for k in top):
        return False
    defaults = _defaults()
    ca, cb = a.get("config") or {}, b.get("config") or {}
    for name in (set(ca) | set(cb)) & set(defaults):
        if ca.get(name, defaults[name]) != cb.get(name, defaults[name]):
            return False
    return True


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


# ============================================================================================== find / load
def shipped_entries(manifest: str | os.PathLike | None = None) -> list[dict]:
    """The manifest's entries (each with 'file', 'sha256', 'key', 'config', 'metrics', ...); a manifest that cannot
    be read warns (naming it) and counts as none: shipped checkpoints are then trained instead of loaded."""
    try:
        return list(read_manifest(manifest)["checkpoints"])
    except CheckpointError as e:
        warnings.warn(f"{e}; no shipped checkpoint is used until then", RuntimeWarning, stacklevel=3)
        return []


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return f"it holds a {type(record).__name__}, not an object"
    if not isinstance(record.get("key"), dict):
        return "its 'key' is missing" if "key" not in record else \
            f"its 'key' is a {type(record['key']).__name__}, not an object"
    for name in ("dataset", "method", "profile", "model"):
        if not isinstance(record["key"].get(name), str):
            return f"its key has no {name!r}"
    return None


def _store_records(folder: Path | None, damaged: list | None = None) -> list[tuple[Path, dict]]:
    """(checkpoint path, record) for every complete entry of the store folder. A record that cannot be read
    (not UTF-8, not JSON, a `key` that is not an object) is skipped with a warning naming it (and appended to
    `damaged` when given)."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for meta in sorted(folder.glob("*.json")):
        if meta.name.startswith("."):
            continue
        try:
            record = json.loads(meta.read_bytes().decode("utf-8"))
            problem = _record_problem(record)
        except OSError as e:
            problem = f"it cannot be read ({e.strerror or e})"
        except ValueError as e:                          # JSONDecodeError, UnicodeDecodeError
            problem = f"it is not UTF-8 JSON ({type(e).__name__}: {' '.join(str(e).split())[:100]})"
        pt = meta.with_suffix(".pt")
        if problem is not None:
            warnings.warn(f"skipped the damaged model-store record {meta}: {problem}; `python -m clead_lite store "
                          "clear` removes it", RuntimeWarning, stacklevel=3)
            if damaged is not None:
                damaged.append(meta)
            continue
        if pt.exists():
            out.append((pt, record))
    return out


def find(key: dict, manifest: str | os.PathLike | None = None, folder: Path | None | str = "default") -> StoreHit | None:
    """The model for `key`: a shipped checkpoint (sha256 verified) if one has this key, else a store entry whose
    file matches its recorded sha256, else None. `folder`: the store folder ('default': `store_dir()`)."""
    mpath = Path(manifest) if manifest is not None else checkpoint_dir() / "manifest.json"
    for entry in shipped_entries(mpath):
        path = mpath.parent / entry.get("file", "")
        if keys_match(entry.get("key"), key) and path.is_file():
            verify_checkpoint(path, mpath)              # ChecksumError on a damaged or replaced file
            return StoreHit(path, "shipped", entry)
    folder = store_dir() if folder == "default" else (Path(folder) if folder is not None else None)
    for pt, record in _store_records(folder):
        if keys_match(record["key"], key):
            if sha256_file(pt) != record.get("sha256"):
                continue                                # overwritten or damaged: train again
            return StoreHit(pt, "store", record)
    return None


def load_hit(hit: StoreHit | None, device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict] | None:
    """`load_model(hit, device)`, or None when there is no hit or the stored file cannot be used any more (e.g.
    weights of another shape under the same key): a warning names the file and the command that clears it, and
    the caller trains the model again (its save replaces the file). A shipped checkpoint's errors are raised."""
    if hit is None:
        return None
    try:
        return load_model(hit, device)
    except (CheckpointError, OSError) as e:
        if hit.source != "store":
            raise
        warnings.warn(f"{e}; training it again (the new model replaces it)", RuntimeWarning, stacklevel=2)
        return None


def load_model(hit: StoreHit, device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict), loaded with weights_only=True."""
    state = load_checkpoint(hit.path, map_location="cpu", required=("model",))
    name = state.get("model_name") or hit.entry.get("model") or (hit.entry.get("key") or {}).get("model")
    if name not in MODELS:
        raise CheckpointError(f"{hit.path} does not say which model it holds (model_name={name!r})")
    net = build_model(name, num_classes=(state.get("model_config") or {}).get("num_classes", 10))
    try:
        load_model_state(net, state)
    except CheckpointError as e:
        if hit.source != "store":
            raise
        method = (hit.entry.get("key") or {}).get("method") or state.get("method")
        raise CheckpointError(f"the stored model {hit.path} does not fit the {name} built today ({e}); remove it "
                              f"with: python -m clead_lite store clear --method {method} --yes") from None
    if device is not None:
        net = net.to(device)
    return net.eval(), state


# ============================================================================================== save
def save_model(key: dict, model: nn.Module, config: TrainConfig, history=None, *, command: str | None = None,
               seconds: float | None = None, metrics: dict | None = None, folder: Path | str | None = None,
               faithful: FaithfulConfig | None = None) -> Path:
    """Save `model` under `key` into the store folder (default `store_dir()`); returns the checkpoint path.
    The record's config is `config`'s fields, and `faithful`'s for the faithful pipeline.

    The .pt is written atomically first, then its record (.json, also atomic): a crash in between leaves a .pt
    without a record, which `find` ignores and `clear` removes."""
    folder = Path(folder) if folder is not None else store_dir()
    if folder is None:
        raise ValueError(f"the model store is off ({STORE_ENV}={os.environ.get(STORE_ENV)!r}); nothing saved")
    stem = f"{key['dataset']}_{key['method']}_{key['profile']}_{_digest(key)}"
    path = folder / f"{stem}.pt"
    settings = {**config.to_dict(), **(faithful.to_dict() if faithful is not None else {})}
    state = {"format": 1, "kind": "store", **model_metadata(model), "model": unwrap(model).state_dict(),
             "history": [dict(r) for r in (history or [])], "config": settings, "method": key["method"],
             "dataset": key["dataset"], "profile": key["profile"], "seed": config.seed, "store_key": key,
             "command": command, "train_seconds": seconds, "metrics": metrics or {}}
    with output_lock(path):   # `store clear` leaves a model alone while it is being written
        return _save_locked(path, state, key, settings, metrics, command, seconds)


def check_store_writable(model: nn.Module | None = None, folder: Path | str | None = "default") -> str | None:
    """Before training: None when the store folder takes a real probe write with room for the model (2 copies of
    its weights), else one line saying why the model will not be stored (nothing is raised: the store is a
    cache)."""
    from .safe_io import check_writable
    folder = store_dir() if folder == "default" else (Path(folder) if folder is not None else None)
    if folder is None:
        return None
    need = 0 if model is None else 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        check_writable(folder / "model.pt", "model store", hint=f"set {STORE_ENV} to a writable folder (or 'off')",
                       need_bytes=need)
    except OSError as e:
        return str(e)
    return None


def _save_locked(path, state, key, settings: dict, metrics, command, seconds) -> Path:
    save_checkpoint(path, state)
    record = {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "key": key,
              "config": settings, "metrics": metrics or {}, "command": command, "train_seconds": seconds,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__}
    write_json_atomic(path.with_suffix(".json"), record, indent=2, what="model-store record")
    return path


# ============================================================================================== list / clear
def list_entries(method: str | None = None, folder: Path | str | None = "default",
                 manifest: str | os.PathLike | None = None) -> list[dict]:
    """One dict per model: source ('shipped' | 'store'), file, dataset, method, profile, model, seed, n_train,
    size_bytes, created, config (dict). `method` keeps one method."""
    rows = []
    mpath = Path(manifest) if manifest is not None else checkpoint_dir() / "manifest.json"
    for i, e in enumerate(shipped_entries(mpath)):
        problem = manifest_entry_problem(e)
        if problem is not None:
            warnings.warn(f"{mpath}: entry {i} ({e.get('file', '?')}) is damaged: {problem}; restore the manifest "
                          "from git", RuntimeWarning, stacklevel=2)
        key = e.get("key") if isinstance(e.get("key"), dict) else {}
        rows.append({"source": "shipped", "file": str(mpath.parent / e.get("file", "?")), "dataset": e.get("dataset"),
                     "method": e.get("method"), "profile": e.get("profile"), "model": e.get("model"),
                     "seed": e.get("seed"), "n_train": key.get("n_train"), "size_bytes": e.get("size_bytes"),
                     "created": e.get("created"), "config": e.get("config") if isinstance(e.get("config"), dict) else {}})
    folder = store_dir() if folder == "default" else (Path(folder) if folder is not None else None)
    for pt, r in _store_records(folder):
        key = r["key"]
        rows.append({"source": "store", "file": str(pt), "dataset": key.get("dataset"), "method": key.get("method"),
                     "profile": key.get("profile"), "model": key.get("model"), "seed": (r.get("config") or {}).get("seed"),
                     "n_train": key.get("n_train"), "size_bytes": r.get("size_bytes"), "created": r.get("created"),
                     "config": r.get("config") if isinstance(r.get("config"), dict) else {}})
    return [r for r in rows if method is None or r["method"] == method]


def clear(method: str | None = None, folder: Path | str | None = "default",
          busy: list | None = None) -> list[Path]:
    """Delete the store folder's models (of `method` only, if given) and any half-saved files; returns the
    deleted checkpoint paths. Shipped checkpoints are never touched, and neither is a model another live process
    is writing (its lock is held: it is appended to `busy`, when given, and left alone). Without `method`,
    damaged records (and their checkpoints) go too."""
    folder = store_dir() if folder == "default" else (Path(folder) if folder is not None else None)
    if folder is None or not folder.is_dir():
        return []
    busy = [] if busy is None else busy
    removed = []

    def drop(pt: Path, *others: Path) -> None:
        try:
            with output_lock(pt):
                existed = pt.exists()
                for p in (pt, *others):
                    p.unlink(missing_ok=True)
        except OutputError:
            busy.append(pt)
            return
        if existed:
            removed.append(pt)

    damaged: list[Path] = []
    for pt, record in _store_records(folder, damaged):
        if method is None or record["key"].get("method") == method:
            drop(pt, pt.with_suffix(".json"))
    if method is None:   # damaged records, a .pt without its record, a record without its .pt, dead writers' temps
        for meta in damaged:
            drop(meta.with_suffix(".pt"), meta)
        for p in folder.glob("*.pt"):
            if not p.name.startswith(".") and not p.with_suffix(".json").exists() and p not in busy:
                drop(p)
        for p in folder.glob("*.json"):
            if not p.name.startswith(".") and not p.with_suffix(".pt").exists() and not is_being_written(p.with_suffix(".pt")):
                p.unlink(missing_ok=True)
        for p in stale_temps(folder):
            p.unlink(missing_ok=True)
    return [p for p in removed if p.name.endswith(".pt")]


# ============================================================================================== describe
def describe_config(config: dict | TrainConfig) -> str:
    """One line of the settings that shaped a model: epochs, batch, lr, attack, lambda, validation, seed."""
    c = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    method = c.get("method")
    parts = [f"{c.get('epochs')} epoch(s)", f"batch {c.get('batch_size')}", f"lr {c.get('lr')} ({c.get('schedule')})"]
    if method in ("pgd_at", "clead_online", "trades"):
        eps, alpha = c.get("eps"), c.get("alpha")
        attack = "FGSM-RS" if c.get("attack") == "fgsm_rs" else f"PGD-{c.get('attack_steps')}"
        parts.append(f"{attack} training examples (eps {'of the dataset' if eps is None else f'{eps:.4g}'}"
                     + (f", alpha {alpha:.4g}" if alpha is not None else "")
                     + (f", eps warm-up over the first {c['eps_warmup']:.0%} of the steps" if c.get("eps_warmup") else "")
                     + ")")
    if method == "trades":
        parts.append(f"beta {c.get('trades_beta')}")
    if method == "clead_online":
        parts.append(f"lambda {c.get('contrastive_weight')}, tau {c.get('temperature')}")
    if method == "clead_faithful":
        parts.append(f"views {', '.join(c.get('view_kinds') or [])} (PGD-{c.get('view_steps')}, CW {c.get('cw_steps')} "
                     f"steps), tau {c.get('temperature')}")
    if c.get("n_val"):
        parts.append(f"{c['n_val']} held-out images pick the kept epoch")
    parts.append(f"seed {c.get('seed')}")
    return ", ".join(parts)
