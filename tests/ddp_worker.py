"""Run under `torchrun --nproc_per_node 2` by tests/test_training.py: train on tiny data with gloo on the
CPU on the 256 digits in OUT_DIR/data.pt, then write what each rank saw to OUT_DIR/rank<r>.json."""
from __future__ import annotations

import json
import os
import sys

import torch

from clead_lite.models import SmallCNN
from clead_lite.course.ddp import process_group
from clead_lite.course.runs import Checkpoint
from clead_lite.training import TrainConfig, train


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    data = torch.load(os.path.join(out_dir, "data.pt"), weights_only=True)  # written by the test
    x, y = data["x"], data["y"]
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = SmallCNN(width=8, feature_dim=32, proj_dim=16)
    cfg = TrainConfig(method="clead_online", epochs=3, batch_size=64, lr=0.05, schedule="constant", eps=0.1,
                      attack_steps=2, log_every=1, contrastive_weight=0.5)
    with process_group("cpu") as device:     # the launcher's part: gloo on the CPU, taken down after the block
        result = train(model, x, y, cfg, dataset="mnist5k", device=device, progress=False,
                       hook=Checkpoint(os.path.join(out_dir, "ddp.pt")))
    rank = int(os.environ["RANK"])
    params = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]),
                   "epochs": result.history.epochs(), "n_step_records": len(result.history) - 3,
                   "epochs_run": result.epochs_run, "param_sum": float(params.double().sum()),
                   "param_abs_sum": float(params.double().abs().sum()),
                   "is_initialized_after": torch.distributed.is_initialized()}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
