"""Checkpoints and resume for `clead_lite.training.train`: the `Checkpoint` hook.

    train(model, x, y, cfg, dataset="mnist5k", hook=Checkpoint("runs/m.pt", resume=True))

Before the work: the checkpoint's folder must be writable with room for the weights, the momentum and the best
weights; one run per checkpoint file (a lock). After every epoch an atomic checkpoint holds everything a resume
needs (weights, optimiser, lr schedule, loss scaler, every random stream, history, keep-best state), so that a
resumed run ends with bit-identical weights on the CPU; it is refused when the settings or the training images
differ. At the end a slim checkpoint (finished) replaces it. Checkpoints load with `weights_only=True`.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from ..models import unwrap
from ..training import Run, TrainHook, TrainStep
from .checkpoints import CheckpointError, load_checkpoint, load_model_state, model_metadata, save_checkpoint
from .safe_io import check_writable, output_lock

__all__ = ["Checkpoint", "RESUME_FREE", "data_fingerprint", "train_state", "load_train_state"]

# settings that may differ between a checkpoint and the run that resumes it
RESUME_FREE = ("resume", "checkpoint_path", "log_every", "compile", "early_stop_patience")


class Checkpoint(TrainHook):
    """Checkpoint a run to `path` after every epoch; `resume=True` continues from it when it exists.

    settings: what else determines the run besides its TrainConfig (a pipeline's own settings, e.g. the faithful
    pipeline's `FaithfulConfig.to_dict()`): recorded, and a resume with other values is refused like other
    TrainConfig values are."""

    def __init__(self, path: str | Path, resume: bool = False, settings: dict | None = None):
        self.path, self.resume, self.settings = Path(path), resume, dict(settings or {})
        self._lock = None
        self.fingerprint: dict | None = None

    def stage(self, name: str) -> "Checkpoint":
        """The hook of one stage of a pipeline: '<stem>.<name>.pt' beside this checkpoint, the same settings."""
        return Checkpoint(self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix or '.pt'}"), self.resume,
                          self.settings)

    def start(self, run: Run) -> None:
        run.checkpoint_path = str(self.path)
        main = run.rank == 0
        if main:   # before the work: a folder, a read-only or a full place fails now
            weights = sum(p.numel() * p.element_size() for p in run.model.parameters())
            copies = 2 + (run.cfg.n_val > 0)       # weights, momentum, the best weights
            check_writable(self.path, "checkpoint", hint="pass a checkpoint path (--out) in a writable folder",
                           need_bytes=copies * weights)
            self._lock = output_lock(self.path)   # one run per checkpoint file
            self._lock.__enter__()
        self.fingerprint = data_fingerprint(run.x_train, run.y_train, run.dataset)
        if not (self.resume and self.path.exists()):
            return
        state = load_checkpoint(self.path, map_location="cpu", required=("model", "config", "epoch"))
        diff = _config_mismatch(state["config"], run.cfg.to_dict())
        if "settings" in state:     # (checkpoints written before settings were recorded have none to compare)
            diff += _config_mismatch(state["settings"], self.settings)
        if diff:
            raise CheckpointError(f"cannot resume from {self.path}: its run used other settings ({'; '.join(diff)}); "
                                  "use the same settings, or another checkpoint path to start afresh")
        _check_same_data(self.path, state, self.fingerprint)
        load_model_state(run.model, state)
        run.history.extend(state.get("history", []))
        run.epoch = int(state["epoch"])
        run.finished = bool(state.get("finished"))
        run.best.update(state.get("best") or {})
        if not run.finished:
            load_train_state(run.step, state["train_state"])
            _set_rng_state(state["rng"], run.step.generator)
        run.stopped_early = bool(state.get("stopped_early")) if run.epoch else False
        patience = run.cfg.early_stop_patience
        if not run.finished and patience is not None and run.best["bad_epochs"] >= patience:
            run.stopped_early = True   # killed after the epoch that triggered early stopping: do not train on
        if run.show:
            print(f"resuming {run.cfg.method} from {self.path} after epoch {run.epoch}/{run.cfg.epochs}", flush=True)

    def epoch_end(self, run: Run) -> None:
        if run.rank == 0:
            self._save(run, finished=False)
            run.kept = f"the last good checkpoint {self.path} (after epoch {run.epoch}) is kept, unfinished"

    def end(self, run: Run) -> None:
        if run.rank == 0 and not run.finished:
            self._save(run, finished=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _save(self, run: Run, finished: bool) -> None:
        best = {k: v for k, v in run.best.items() if k != "model" or not finished}
        state = {"format": 1, "kind": "train", **model_metadata(run.model), "model": unwrap(run.model).state_dict(),
                 "epoch": len(run.history.epochs()), "history": list(run.history), "config": run.cfg.to_dict(),
                 "method": run.cfg.method, "dataset": run.dataset, "finished": finished,
                 "stopped_early": run.stopped_early if finished else False, "best": best,
                 "data_fingerprint": self.fingerprint, "settings": self.settings}
        if not finished:  # what a resume needs; a finished checkpoint is slim
            state["train_state"] = train_state(run.step)
            state["rng"] = _rng_state(run.step.generator)
        save_checkpoint(self.path, state)


def data_fingerprint(x: torch.Tensor, y: torch.Tensor, dataset: str | None) -> dict:
    """What a resumed run must train on: the dataset name, the number of images and a sha256 of x and y."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return {"dataset": dataset, "n": int(len(y)), "sha256": h.hexdigest()}


def _config_mismatch(saved: dict, now: dict) -> list[str]:
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in now
            if k not in RESUME_FREE and k in saved and saved[k] != now[k]]


def _check_same_data(path: Path, state: dict, fingerprint: dict) -> None:
    saved = state.get("data_fingerprint")
    if not saved and state.get("dataset") in (None, fingerprint["dataset"]):
        return
    saved = saved or {"dataset": state.get("dataset"), "n": "?", "sha256": "?"}
    if saved.get("dataset") != fingerprint["dataset"] or saved.get("n") != fingerprint["n"] or \
            saved.get("sha256") != fingerprint["sha256"]:
        raise CheckpointError(
            f"cannot resume from {path}: it was trained on {saved.get('n')} {saved.get('dataset')} images (data "
            f"sha256 {str(saved.get('sha256'))[:12]}), this run has {fingerprint['n']} {fingerprint['dataset']} "
            f"images (sha256 {fingerprint['sha256'][:12]}); resume with the same data (dataset, n_train, seed), or "
            "use another checkpoint path to start afresh")


def train_state(step: TrainStep) -> dict:
    """What a resume needs of a `TrainStep` besides the weights and random streams: the optimiser, the lr schedule,
    the loss scaler and the step counter."""
    return {"optimizer": step.optimizer.state_dict(), "scheduler": step.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(), "step_index": step.step_index}


def load_train_state(step: TrainStep, state: dict) -> None:
    """Put `train_state(step)` output back into `step`."""
    step.optimizer.load_state_dict(state["optimizer"])
    step.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        step.scaler.load_state_dict(state["scaler"])
    step.step_index = int(state.get("step_index", 0))


def _rng_state(generator: torch.Generator) -> dict:
    """Every random stream as tensors / plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {"attack": generator.get_state(), "torch": torch.get_rng_state(),
             "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
             "numpy": torch.as_tensor(np.asarray(np_state[1], dtype=np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # device-ok
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["attack"].to(torch.uint8))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])  # device-ok
