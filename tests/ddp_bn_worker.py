"""A tiny course model WITH BatchNorm (`BNNet`), and, run under `torchrun --nproc_per_node 2` by
tests/test_batchnorm.py, a DDP run of it (gloo on the CPU) that writes each rank's weights and BatchNorm
buffers to OUT_DIR/bn_rank<r>.pt."""
from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

from clead_lite.models import CourseModel


class BNNet(CourseModel):
    """1x28x28 -> conv (stride 2) -> BatchNorm2d -> ReLU -> pool -> linear -> BatchNorm1d -> ReLU (~4 k params)."""

    in_channels = 1
    image_size = 28

    def __init__(self, num_classes: int = 10, width: int = 4, feature_dim: int = 16, proj_dim: int = 8):
        super().__init__(feature_dim, num_classes, proj_dim)
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.MaxPool2d(2))                                  # 7x7
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width * 49, feature_dim), nn.BatchNorm1d(feature_dim),
                                nn.ReLU())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm running statistics and batch counters: {name: tensor}."""
    return {k: v for k, v in model.state_dict().items() if "running_" in k or "num_batches_tracked" in k}


def main(out_dir: str) -> None:
    from clead_lite.course.ddp import process_group
    from clead_lite.course.runs import Checkpoint
    from clead_lite.training import TrainConfig, train
    torch.set_num_threads(1)
    data = torch.load(os.path.join(out_dir, "data.pt"), weights_only=True)  # written by the test
    torch.manual_seed(0)
    model = BNNet()
    cfg = TrainConfig(method="clead_online", epochs=2, batch_size=32, lr=0.05, schedule="constant", eps=0.1,
                      attack_steps=2, log_every=1, contrastive_weight=0.5, n_val=32, val_steps=2,
                      split_views=os.environ.get("BN_SPLIT_VIEWS") == "1")
    with process_group("cpu") as device:
        result = train(model, data["x"], data["y"], cfg, dataset="mnist5k", device=device, progress=False,
                       hook=Checkpoint(os.path.join(out_dir, "bn_ddp.pt")))
    rank = int(os.environ["RANK"])
    torch.save({"state": {k: v.clone() for k, v in result.model.state_dict().items()},
                "epochs": [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in result.history.epochs()]},
               os.path.join(out_dir, f"bn_rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
