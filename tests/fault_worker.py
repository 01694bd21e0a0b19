"""Runs `python -m clead_lite ARGS...` with one real fault injected, for tests/test_faults_*.py:

    python tests/fault_worker.py MODE N OUT_DIR -- train --method standard ...

MODE:
- ``kill-step``:  SIGKILL this process at the N-th optimiser step (counted over the whole run, from 1).
- ``kill-save``:  at the N-th checkpoint save, write half of the file's bytes to the temporary file, fsync
                  them, then SIGKILL this process (a kill in the middle of a checkpoint write).
- ``sigint-step``: send this process SIGINT (what Ctrl-C sends) at the N-th optimiser step.
- ``pause-step``: at the N-th step create OUT_DIR/paused and wait (up to 120 s) until the test deletes it
                  (a run that holds its output while another run tries to write the same file).
- ``trace``:      record every checkpoint save, JSON write and test evaluation in OUT_DIR/trace-rank<R>.txt
                  (run under torchrun: which rank writes what).
"""
from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    mode, n, out_dir = argv[0], int(argv[1]), Path(argv[2])
    cli_args = argv[argv.index("--") + 1:]
    from clead_lite.course import cli, cli_train
    from clead_lite import training
    from clead_lite.course import checkpoints
    from clead_lite import evaluation

    if mode in ("kill-step", "pause-step", "sigint-step"):
        original_step = training.TrainStep.step
        count = [0]

        def step(self, x, y):
            count[0] += 1
            if count[0] == n:
                if mode == "kill-step":
                    _kill()
                if mode == "sigint-step":
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)          # the KeyboardInterrupt arrives here
                    raise SystemExit("SIGINT was not delivered")
                marker = out_dir / "paused"
                marker.write_text(str(os.getpid()))
                deadline = time.time() + 120
                while marker.exists() and time.time() < deadline:
                    time.sleep(0.05)
            return original_step(self, x, y)

        training.TrainStep.step = step
    elif mode == "kill-save":
        original_save = torch.save
        count = [0]

        def save(obj, f, *args, **kwargs):
            count[0] += 1
            if count[0] == n and hasattr(f, "write"):
                buf = io.BytesIO()
                original_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _kill()
            return original_save(obj, f, *args, **kwargs)

        checkpoints.torch.save = save      # the torch module: what save_checkpoint calls
    elif mode == "trace":
        rank = os.environ.get("RANK", "0")
        log = out_dir / f"trace-rank{rank}.txt"

        def record(what: str) -> None:
            with open(log, "a") as fh:
                fh.write(what + "\n")

        original_save = checkpoints.save_checkpoint
        original_json = cli_train._write_json     # the same function as cli's
        original_evaluate = evaluation.evaluate

        def save_checkpoint(path, state=None, **extra):
            record(f"save {Path(path).name} finished={bool((state or {}).get('finished'))} "
                   f"metrics={'metrics' in (state or {})}")
            return original_save(path, state, **extra)

        def write_json(path, data):
            record(f"json {Path(path).name}")
            return original_json(path, data)

        def evaluate(*args, **kwargs):
            record("evaluate")
            return original_evaluate(*args, **kwargs)

        checkpoints.save_checkpoint = save_checkpoint
        training.save_checkpoint = save_checkpoint
        cli._write_json = write_json           # where evaluate looks it up
        cli_train._write_json = write_json     # where train looks it up
        evaluation.evaluate = evaluate
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
