"""Several processes under `torchrun`: the launcher's part. `training.train` trains data-parallel whenever a process
group exists; making it (and taking it down) is the job of whoever starts the processes, here:

    with process_group(args.device) as device:      # nccl on CUDA (this process's GPU), gloo on the CPU
        train(model, x, y, cfg, device=device)
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[torch.device]:
    """Under torchrun (WORLD_SIZE > 1): init the process group (nccl on CUDA, gloo on the CPU), yield this process's
    device (cuda:LOCAL_RANK when `device` names no GPU index), and after the block wait for every rank and destroy
    the group. A single process: yield `get_device(device)`, nothing else."""
    from .profiles import get_device    # looked up at the call: the course's one device choice
    device = get_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":  # device-ok
        device = device if device.index is not None else torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # device-ok
    try:
        yield device
    finally:
        if created:
            dist.barrier()
            dist.destroy_process_group()
