"""Checkpoints: written atomically, loaded safely, verified against a manifest.

- `save_checkpoint(path, state)` writes to a temporary file in the same folder, fsyncs it and renames it
  over `path` (`os.replace`): a crash mid-save leaves the previous file intact, never a half-written one
  (the temporaries of killed processes are removed by the next save). Every checkpoint stores the sha256
  of its content (`content_sha256`, over every key, tensor bytes included), checked by every load.
- `load_checkpoint(path)` loads with `torch.load(weights_only=True)` (no arbitrary code runs) and turns the
  usual failures into clear messages: missing file, an HTML page saved under a `.pt` name (a failed
  download), a Git LFS pointer, a truncated or corrupt file, missing keys.
- `load_model_state(model, state)` says which architecture the checkpoint holds when it does not fit.
- Shipped checkpoints live in `data/checkpoints/` with `manifest.json` (sha256, dataset, method, profile,
  model, metrics); `load_pretrained(dataset, method, profile)` finds, verifies and loads one.

A checkpoint is a dict of tensors and plain data (dict, list, tuple, str, int, float, bool, None) so that
`weights_only=True` can load it; `save_checkpoint` refuses anything else with the path of the bad value.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ..models import MODELS, unwrap, build_model
from .datasets import env_folder
from .safe_io import OutputError, clean_stale_temps, read_json_entries, refuse_special, temp_path, write_error

__all__ = [
    "CheckpointError", "ChecksumError", "save_checkpoint", "load_checkpoint", "load_model_state",
    "model_metadata", "sha256_file", "read_manifest", "write_manifest_entry", "verify_checkpoint",
    "find_checkpoint", "load_pretrained", "checkpoint_dir", "MANIFEST_NAME", "OutputError", "state_digest",
    "DIGEST_KEY", "manifest_entry_problem",
]

MANIFEST_NAME = "manifest.json"
DIGEST_KEY = "content_sha256"     # the sha256 of everything else in the checkpoint (see state_digest)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: corrupt, not a checkpoint, wrong keys or architecture."""


class ChecksumError(CheckpointError):
    """A checkpoint whose sha256 differs from the one recorded in the manifest."""


# ---------------------------------------------------------------------------------------------- save / load
def _check_plain(value, where: str = "state") -> None:
    """Raise TypeError naming the first value weights_only=True could not load back."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (dict, OrderedDict)):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; checkpoint keys must be "
                                "str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}; a checkpoint holds only tensors and plain "
        "data (dict, list, tuple, str, int, float, bool, None) so that it loads with weights_only=True. "
        "Convert it (numpy array -> torch.as_tensor, dataclass -> dataclasses.asdict, Path -> str)")


def save_checkpoint(path: str | os.PathLike, state: dict | None = None, **extra) -> Path:
    """Write `state` (merged with `extra` keyword entries) to `path` atomically; returns the path.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then renamed over `path`
    with `os.replace`, so readers see either the old file or the complete new one. Parent folders are
    created. `state` must hold only tensors and plain data (see the module docstring).
    """
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state must be a dict of tensors and plain data, got {type(state).__name__}")
    state = {**(state or {}), **extra}
    if not state:
        raise ValueError("nothing to save: state is empty")
    state.pop(DIGEST_KEY, None)       # a re-saved checkpoint gets a fresh digest
    _check_plain(state)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot save to {path}: it is a folder; name a file, e.g. {path / 'model.pt'}")
    refuse_special(path, "checkpoint")   # a rename would replace a device node, a FIFO or a symbolic link
    state[DIGEST_KEY] = state_digest(state)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from e
    clean_stale_temps(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as fh:      # open() gives the usual mode (umask), unlike mkstemp's 0600
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, OutputError):
            raise write_error(path, e) from e
        raise
    _fsync_dir(path.parent)
    return path


def state_digest(state: dict) -> str:
    """Hex sha256 of a checkpoint dict's content: keys, plain values and tensor bytes (dtype, shape and
    data), in a canonical order, so that the same content always gives the same digest after a load."""
    h = hashlib.sha256(b"clead_lite.checkpoint content v1")
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{type(k).__name__}:{k!s}".encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        h.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(f"V{type(value).__name__}:{value!r}".encode())


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sniff(path: Path) -> None:
    """Recognise files that are not checkpoints at all before torch.load gives a cryptic error."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the save or the download did not complete; "
                              "delete it and train or download again")
    with open(path, "rb") as fh:
        head = fh.read(1024)
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")) or b"<html" in low:
        raise CheckpointError(
            f"{path} looks like an HTML page, not a checkpoint: the download probably failed (a login, error "
            "or 'file too large to scan' page was saved instead). Delete it and download the file again, "
            "using the direct download link")
    if low.startswith((b"{", b"[")) and path.suffix.lower() == ".json" or low.startswith(b'{\n  "format"'):
        raise CheckpointError(
            f"{path} is a JSON file (a manifest?), not a checkpoint: pass one of the .pt files it lists, "
            "e.g. data/checkpoints/<file>.pt")
    if low.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"{path} is a Git LFS pointer ({size} bytes), not the checkpoint: run `git lfs pull` or download "
            "the file itself")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                    required: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint dict with `torch.load(weights_only=True)`; tensors go to `map_location`.

    `required`: keys that must be present (a clear error lists the missing ones and the keys found).
    Raises FileNotFoundError for a missing file, CheckpointError for anything that is not a usable
    checkpoint (HTML page, Git LFS pointer, truncated or corrupt file, unsafe pickle, missing keys).
    """
    path = Path(path)
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            near = sorted(p.name for p in path.parent.glob("*.pt"))[:8]
            hint = f"; .pt files in {path.parent}: {', '.join(near)}" if near else f"; {path.parent} has no .pt files"
        raise FileNotFoundError(f"checkpoint {path} does not exist{hint}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    _sniff(path)
    try:
        with warnings.catch_warnings():   # random bytes can look like any pickle protocol: one error, no noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f"a pickled {found.group(1)}" if found else "Python objects other than tensors and plain data"
            hint = ""
            if found and found.group(1).rsplit(".", 1)[-1] in {c.__name__ for c in MODELS.values()}:
                name = next(n for n, c in MODELS.items() if c.__name__ == found.group(1).rsplit(".", 1)[-1])
                hint = (f" It is a whole model saved with torch.save(model): save its weights instead, "
                        f"save_checkpoint(path, model=model.state_dict(), model_name={name!r}) "
                        "(from clead_lite.course.checkpoints).")
            raise CheckpointError(
                f"{path} holds {what}, so it was not loaded (weights_only=True protects against code in pickles); "
                f"use a checkpoint written by clead_lite (save_checkpoint, python -m clead_lite train).{hint}") from None
        raise _corrupt(path, e) from None
    except MemoryError as e:
        raise _corrupt(path, e) from None
    except Exception as e:  # noqa: BLE001 - random bytes reach many parsers: all mean "not a checkpoint"
        raise _corrupt(path, e) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    stored = state.pop(DIGEST_KEY, None)
    if stored is not None:
        try:
            actual = state_digest(state)
        except Exception as e:  # noqa: BLE001 - odd content (e.g. a tensor of an unknown layout)
            raise _corrupt(path, e) from None
        if actual != stored:
            raise ChecksumError(
                f"{path} was changed after it was written: its content has sha256 {actual[:16]}..., the digest "
                f"stored at save time is {str(stored)[:16]}...; the file is corrupt or was edited. Delete it and "
                "train or download it again")
    missing = [k for k in required if k not in state]
    if missing == ["model"] and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        guess = _guess_model(state)
        raise CheckpointError(
            f"{path} is a plain state_dict ({len(state)} tensors, e.g. {next(iter(state))!r}), not a checkpoint: "
            f"wrap it once, e.g. in Python: from clead_lite.course.checkpoints import save_checkpoint; "
            f"save_checkpoint('wrapped.pt', model=torch.load({str(path)!r}, weights_only=True), "
            f"model_name={guess or 'smallcnn'!r}, dataset='mnist5k'); then evaluate wrapped.pt")
    if missing:
        raise CheckpointError(f"{path} lacks the key(s) {', '.join(map(repr, missing))}; it has "
                              f"{', '.join(map(repr, sorted(map(str, state))))}")
    return state


def _guess_model(sd: dict) -> str | None:
    """The name of the course model whose state_dict has exactly these keys, else None."""
    keys = set(strip_prefixes(sd))
    for name in MODELS:
        try:
            if set(build_model(name).state_dict()) == keys:
                return name
        except Exception:  # noqa: BLE001 - only a guess for a hint
            pass
    return None


def _first_line(e: BaseException, n: int) -> str:
    """One line, even when the text spans several, without terminal escape codes, cut at a word."""
    text = " ".join(_ANSI.sub("", str(e)).split())
    if len(text) > n:
        text = text[:n].rsplit(" ", 1)[0] + " ..."
    return text or "no detail"


def _corrupt(path: Path, e: BaseException) -> CheckpointError:
    try:
        size = f"{path.stat().st_size} bytes; "
    except OSError:
        size = ""
    return CheckpointError(f"{path} is corrupt or truncated, or not a PyTorch checkpoint ({size}{type(e).__name__}: "
                           f"{_first_line(e, 200)}). Delete it and save or download it again")


# ---------------------------------------------------------------------------------------------- models
def model_metadata(model: nn.Module) -> dict:
    """Plain metadata that identifies an architecture: {'model_name', 'model_config'}."""
    model = unwrap(model)
    name = next((n for n, cls in MODELS.items() if type(model) is cls), type(model).__name__)
    config = {k: getattr(model, k) for k in ("num_classes", "feature_dim", "in_channels", "image_size")
              if isinstance(getattr(model, k, None), int)}
    return {"model_name": name, "model_config": config}


def strip_prefixes(sd: dict) -> dict:
    """Remove 'module.' (DistributedDataParallel) and '_orig_mod.' (torch.compile) key prefixes."""
    out = {}
    for k, v in sd.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def load_model_state(model: nn.Module, state: dict, key: str = "model") -> nn.Module:
    """Load weights into `model` (in place; returned). `state`: a checkpoint dict holding `state[key]`, or
    a plain state_dict. A checkpoint of another architecture raises CheckpointError naming both and the
    first mismatched keys and shapes."""
    target = unwrap(model)
    is_checkpoint = key in state and isinstance(state[key], dict)
    sd = strip_prefixes(state[key] if is_checkpoint else state)
    mine = model_metadata(target)
    theirs = (state.get("model_name"), state.get("model_config")) if is_checkpoint else (None, None)
    if theirs[0] is not None and theirs[0] != mine["model_name"]:
        raise CheckpointError(
            f"the checkpoint holds a {theirs[0]!r} model ({theirs[1]}), but the model given is a "
            f"{mine['model_name']!r} ({mine['model_config']}); build the matching model, e.g. "
            f"build_model({theirs[0]!r})")
    own = target.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and hasattr(sd[k], "shape") and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        what = theirs[0] or "an unknown architecture"
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the checkpoint, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        extra = f" ({theirs[1]})" if theirs[1] else ""
        raise CheckpointError(
            f"the checkpoint does not fit the model: it holds {what}{extra}, the model is "
            f"{mine['model_name']!r} ({mine['model_config']}): " + "; ".join(parts))
    target.load_state_dict(sd)
    return model


def load_trained_model(path: str | os.PathLike, device: str | torch.device | None = "cpu",
                       default_name: str | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict) from a checkpoint written by `train`: the one loader
    of the command line, the results runner and the shipped checkpoints. The model is built from the
    checkpoint's own `model_name` (else `default_name`); a file naming no known model, or holding NaN / inf
    weights (a diverged run), raises CheckpointError saying so."""
    state = load_checkpoint(path, map_location="cpu", required=("model",))
    name = state.get("model_name") or default_name
    if name not in MODELS:
        raise CheckpointError(f"{path} does not say which model it holds (model_name={name!r}); "
                              f"known models: {', '.join(MODELS)}")
    model = build_model(name, num_classes=(state.get("model_config") or {}).get("num_classes", 10))
    load_model_state(model, state)
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise CheckpointError(f"{path} holds non-finite (NaN / inf) weights: its training diverged; train it "
                              "again with a lower --lr")
    if device is not None:
        model = model.to(device)
    return model.eval(), state


# ---------------------------------------------------------------------------------------------- manifest
def checkpoint_dir() -> Path:
    """Where shipped checkpoints live: `$CLEAD_CHECKPOINT_DIR` (relative: to the repository, from every folder),
    else the repository's data/checkpoints."""
    env = env_folder("CLEAD_CHECKPOINT_DIR")
    if env is not None:
        return env
    repo = Path(__file__).resolve().parents[2]
    return repo / "data" / "checkpoints" if (repo / "clead_lite").is_dir() else Path("data") / "checkpoints"


def _manifest_path(manifest: str | os.PathLike | None) -> Path:
    return Path(manifest) if manifest is not None else checkpoint_dir() / MANIFEST_NAME


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(manifest: str | os.PathLike | None = None) -> dict:
    """The manifest as {'format': 1, 'checkpoints': [entry, ...]} (empty when the file does not exist)."""
    path = _manifest_path(manifest)
    return read_json_entries(
        path, "checkpoints", manifest_entry_problem, error=CheckpointError, kind="a checkpoint manifest",
        unreadable=lambda e: (f"{path} is not a readable JSON manifest ({type(e).__name__}: {_first_line(e, 150)}); "
                              "restore it from git"),
        skipped=lambda i, problem: f"{path}: entry {i} of 'checkpoints' is skipped: {problem}; restore the manifest "
                                   "from git",
        keep=lambda e: isinstance(e, dict) and isinstance(e.get("file"), str))   # named: list_entries warns about it


_ENTRY_FIELDS = ("file", "sha256", "dataset", "method", "profile", "model")


def manifest_entry_problem(entry) -> str | None:
    """What is wrong with one manifest entry (naming the field), or None: an object whose 'file', 'sha256',
    'dataset', 'method', 'profile' and 'model' are strings."""
    if not isinstance(entry, dict):
        return f"it is a {type(entry).__name__}, not an object"
    for name in _ENTRY_FIELDS:
        if not isinstance(entry.get(name), str):
            return (f"its field {name!r} is missing" if name not in entry else
                    f"its field {name!r} is {entry[name]!r}, not a string")
    return None


def write_manifest_entry(checkpoint: str | os.PathLike, *, dataset: str, method: str, profile: str, model: str,
                         metrics: dict | None = None, seed: int | None = None, command: str | None = None,
                         manifest: str | os.PathLike | None = None, **extra) -> dict:
    """Record (or replace) the entry of `checkpoint` in the manifest and return it.

    The entry stores the file name relative to the manifest's folder, its sha256 and size, the dataset,
    method, profile, model, metrics, seed and the command that produced it. The manifest is written
    atomically. One entry per file name: a re-trained file replaces its old entry.
    """
    ckpt = Path(checkpoint)
    path = _manifest_path(manifest)
    try:
        rel = ckpt.resolve().relative_to(path.parent.resolve()).as_posix()
    except ValueError as e:
        raise ValueError(f"checkpoint {ckpt} must lie in the manifest's folder {path.parent} (or below it)") from e
    entry = {"file": rel, "sha256": sha256_file(ckpt), "size_bytes": ckpt.stat().st_size, "dataset": dataset,
             "method": method, "profile": profile, "model": model, "seed": seed, "metrics": metrics or {},
             "command": command, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             **extra}
    data = read_manifest(path)
    data["checkpoints"] = [e for e in data["checkpoints"] if e.get("file") != rel] + [entry]
    data["checkpoints"].sort(key=lambda e: e["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "x") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from e
    return entry


def verify_checkpoint(path: str | os.PathLike, manifest: str | os.PathLike | dict | None = None) -> dict:
    """Check the file's sha256 against its manifest entry; returns the entry.

    `manifest`: a manifest dict, a path to manifest.json, or None (the default manifest). Raises
    ChecksumError on a mismatch and CheckpointError when the file has no entry.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if isinstance(manifest, dict):
        data, folder = manifest, path.parent
    else:
        mpath = _manifest_path(manifest)
        data, folder = read_manifest(mpath), mpath.parent
    try:
        rel = path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        rel = path.name
    entry = next((e for e in data.get("checkpoints", []) if e.get("file") in (rel, path.name)), None)
    if entry is None:
        raise CheckpointError(f"{path.name} has no entry in the manifest; known files: "
                              f"{', '.join(e.get('file', '?') for e in data.get('checkpoints', [])) or 'none'}")
    actual = sha256_file(path)
    if actual != entry.get("sha256"):
        _sniff(path)  # an HTML page or LFS pointer gets the more useful message
        try:
            intact = torch.load(path, map_location="cpu", weights_only=True)
            intact = isinstance(intact, dict) and DIGEST_KEY in intact and \
                intact.pop(DIGEST_KEY) == state_digest(intact)
        except Exception:  # noqa: BLE001 - a damaged file: the message below
            intact = False
        if intact:   # the file matches its own content digest: the manifest is what changed
            raise ChecksumError(
                f"the manifest records sha256 {str(entry.get('sha256'))[:16]}... for {path.name}, but the file has "
                f"{actual[:16]}... and matches the content digest stored inside it at save time: the file is "
                f"intact, the manifest entry is outdated or was edited. Keep the file; restore the manifest "
                f"(git checkout -- {folder.name}/{MANIFEST_NAME}) or record the file again (scripts/update_manifest.py)")
        raise ChecksumError(
            f"{path} has sha256 {actual[:16]}..., but the manifest records {str(entry.get('sha256'))[:16]}... "
            f"({path.stat().st_size} bytes vs {entry.get('size_bytes')} recorded): the file is corrupt, "
            "truncated or a different version. Delete it and download or train it again")
    return entry


def find_checkpoint(dataset: str, method: str, profile: str, model: str | None = None,
                    manifest: str | os.PathLike | None = None) -> Path | None:
    """The path of a shipped checkpoint for (dataset, method, profile[, model]) that exists, else None.

    Several matches (seeds): the one with the lowest seed."""
    mpath = _manifest_path(manifest)
    matches = [e for e in read_manifest(mpath)["checkpoints"]
               if e.get("dataset") == dataset and e.get("method") == method and e.get("profile") == profile
               and (model is None or e.get("model") == model) and (mpath.parent / e["file"]).exists()]
    if not matches:
        return None
    matches.sort(key=lambda e: (e.get("seed") is None, e.get("seed") or 0, e["file"]))
    return mpath.parent / matches[0]["file"]


def load_pretrained(dataset: str, method: str, profile: str, model: str | None = None,
                    device: str | torch.device | None = "cpu",
                    manifest: str | os.PathLike | None = None) -> tuple[nn.Module, dict]:
    """Find, verify (sha256) and load a shipped checkpoint; returns (model in eval mode, manifest entry).

    Raises FileNotFoundError (naming what exists) when the manifest has no matching checkpoint."""
    path = find_checkpoint(dataset, method, profile, model, manifest)
    if path is None:
        known = [f"{e.get('dataset')}/{e.get('method')}/{e.get('profile')}/{e.get('model')}"
                 for e in read_manifest(manifest)["checkpoints"]]
        raise FileNotFoundError(
            f"no shipped checkpoint for dataset={dataset!r}, method={method!r}, profile={profile!r}"
            f"{'' if model is None else f', model={model!r}'}; available: {', '.join(known) or 'none'}. "
            "Train one instead (python -m clead_lite train ...)")
    entry = verify_checkpoint(path, manifest)
    return load_trained_model(path, device, default_name=entry.get("model"))[0], entry
