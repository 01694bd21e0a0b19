"""Training-step benchmarks.

Default mode: the time of one training step of `clead_online` (lambda 0.5) against `pgd_at` on the same
model, batch and attack (PGD-k, L-inf), timed interleaved (A B, B A, ...) so that drifts in machine load
hit both alike. Prints the median wall and CPU seconds per step of each and the ratio clead_online / pgd_at
(target: <= 1.3), with the machine and the date.

    python benchmarks/bench_training.py                       # SmallCNN, MNIST-shaped batch, CPU
    python benchmarks/bench_training.py --model preactresnet18 --device cuda --batch 512

--gpu-loop (meaningful on CUDA): images/s of the course's full loop (`training.train`: data resident on the
GPU, augmentation there, bf16 autocast, channels_last, optional torch.compile, no host-device sync in the
step) against a textbook loop (torch DataLoader with per-image CPU augmentation and workers, fp32, a
`loss.item()` every step) on PreActResNet-18 with CIFAR-shaped random data; and the step's model FLOP
utilisation: FLOPs of one step (torch.utils.flop_counter) / step time, against the measured bf16 matmul
rate of the same GPU (targets: >= 3x, >= 30 %).

    python benchmarks/bench_training.py --gpu-loop --device cuda [--compile] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from clead_lite.models import build_model
from clead_lite.training import TrainConfig, TrainStep, amp_dtype, train


# ---------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"torch": torch.__version__, "device": str(device), "device_name": name, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1min": round(load, 2),
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- step ratio
def make_batch(model_name: str, batch: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, 28, 28) if model_name == "smallcnn" else (batch, 3, 32, 32)
    x = torch.rand(shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    return x, y


def step_ratio(args, device: torch.device) -> dict:
    x, y = make_batch(args.model, args.batch, device)
    eps = 0.3 if args.model == "smallcnn" else 8 / 255
    torch.manual_seed(0)
    base = build_model(args.model).to(device)
    common = dict(epochs=1, batch_size=args.batch, lr=0.01, eps=eps, attack_steps=args.attack_steps,
                  amp=None if args.amp == "auto" else args.amp == "on", compile=args.compile)
    steppers = {
        "pgd_at": TrainStep(copy.deepcopy(base), TrainConfig(method="pgd_at", **common).resolved(), device, 10 ** 6),
        "clead_online": TrainStep(copy.deepcopy(base), TrainConfig(method="clead_online", contrastive_weight=0.5,
                                                                   **common).resolved(), device, 10 ** 6),
    }
    for s in steppers.values():
        s.train_mode()
        for _ in range(args.warmup):
            s.step(x, y)
    sync(device)
    wall = {k: [] for k in steppers}
    cpu = {k: [] for k in steppers}
    names = list(steppers)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            s = steppers[name]
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                s.step(x, y)
            sync(device)
            wall[name].append((time.perf_counter() - t) / args.steps)
            cpu[name].append((time.process_time() - c) / args.steps)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {"mode": "step_ratio", "model": args.model, "batch": args.batch, "attack_steps": args.attack_steps,
            "steps_per_repeat": args.steps, "repeats": args.repeats, "median_wall_s": med, "median_cpu_s": med_cpu,
            "all_wall_s": wall, "ratio_wall": med["clead_online"] / med["pgd_at"],
            "ratio_cpu": med_cpu["clead_online"] / med_cpu["pgd_at"], "amp": steppers["pgd_at"].amp_dtype is not None}


# ---------------------------------------------------------------------------------------------- GPU loop
def _loop_dataset(model_name: str) -> str:
    return "cifar10" if model_name == "preactresnet18" else "mnist"


def textbook_images_per_s(x_u8: torch.Tensor, y: torch.Tensor, args, device: torch.device) -> float:
    """The common tutorial loop: a Dataset with per-image CPU transforms, DataLoader workers, fp32, .item()."""
    size, pad = x_u8.shape[-1], 4 if x_u8.shape[-1] == 32 else 2
    from torch.utils.data import DataLoader, Dataset

    class CifarLike(Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            img = self.x[i].float().div(255)
            img = F.pad(img, (pad, pad, pad, pad))
            oy, ox = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            img = img[:, oy:oy + size, ox:ox + size]
            if torch.rand(()) < 0.5:
                img = img.flip(2)
            return img, self.y[i]

    torch.manual_seed(0)
    model = build_model(args.loop_model).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(CifarLike(x_u8, y), batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=args.workers > 0)
    eps = 8 / 255 if args.loop_model == "preactresnet18" else 0.3
    alpha = eps / 4
    seen, start = 0, None
    for epoch in range(args.loop_epochs):
        if epoch == 1:
            sync(device)
            start, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            if args.loop_method == "pgd_at":   # the tutorial PGD: a Python loop with .grad on the input
                model.eval()
                delta = torch.empty_like(xb).uniform_(-eps, eps)
                for _ in range(args.attack_steps):
                    delta.requires_grad_(True)
                    loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
                    loss.backward()
                    delta = (delta + alpha * delta.grad.sign()).clamp(-eps, eps).detach()
                model.zero_grad()
                model.train()
                xb = (xb + delta).clamp(0, 1)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            seen += len(yb)
    sync(device)
    return seen / (time.perf_counter() - start)


def course_images_per_s(x: torch.Tensor, y: torch.Tensor, args, device: torch.device) -> tuple[float, dict]:
    torch.manual_seed(0)
    model = build_model(args.loop_model)
    eps = 8 / 255 if args.loop_model == "preactresnet18" else 0.3
    cfg = TrainConfig(method=args.loop_method, epochs=args.loop_epochs, batch_size=args.batch, lr=0.05, eps=eps,
                      attack_steps=args.attack_steps, compile=args.compile, log_every=10 ** 6, n_val=0)
    result = train(model, x, y, cfg, dataset=_loop_dataset(args.loop_model), device=device, progress=False)
    epochs = result.history.epochs()[1:]   # the first epoch pays for warm-up / compilation
    images = sum(e["images"] for e in epochs)
    seconds = sum(e["seconds"] for e in epochs)
    return images / seconds, {"amp": str(amp_dtype(device, None)), "channels_last": device.type == "cuda"}


def matmul_tflops(device: torch.device, dtype=torch.bfloat16, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def _counted(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def step_flops(model, x, y, cfg: TrainConfig) -> int:
    """Model FLOPs of one training step: attack_steps x (forward + input-gradient backward) + one forward and
    full backward. Counted by torch.utils.flop_counter on equivalent passes (it cannot follow the attack's
    torch.autograd.grad directly); BatchNorm and elementwise ops are not counted, as usual for MFU."""
    def train_pass():
        F.cross_entropy(model(x), y).backward()

    def attack_pass():
        xi = x.clone().requires_grad_(True)
        F.cross_entropy(model(xi), y).backward()

    train_flops = _counted(train_pass)
    model.zero_grad(set_to_none=True)
    if cfg.method == "standard":
        return train_flops
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        attack_flops = _counted(attack_pass)
    finally:
        for p in params:
            p.requires_grad_(True)
    return train_flops + cfg.attack_steps * attack_flops


def step_mfu(args, device: torch.device) -> dict:
    x, y = make_batch(args.loop_model, args.batch, device)
    torch.manual_seed(0)
    model = build_model(args.loop_model).to(device)
    cfg = TrainConfig(method=args.loop_method, epochs=1, batch_size=args.batch, lr=0.05,
                      eps=8 / 255 if args.loop_model == "preactresnet18" else 0.3,
                      attack_steps=args.attack_steps, compile=args.compile).resolved()
    stepper = TrainStep(model, cfg, device, 10 ** 6)
    stepper.train_mode()
    for _ in range(args.warmup):
        stepper.step(x, y)
    flops = step_flops(model, x, y, cfg)
    sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        stepper.step(x, y)
    sync(device)
    step_s = (time.perf_counter() - t) / args.steps
    peak = matmul_tflops(device) if device.type == "cuda" else matmul_tflops(device, n=256, reps=2)
    achieved = flops / step_s / 1e12
    return {"flops_per_step": flops, "step_s": step_s, "achieved_tflops": achieved, "bf16_matmul_tflops": peak,
            "mfu": achieved / peak}


def gpu_loop(args, device: torch.device) -> dict:
    if device.type != "cuda":
        print("note: --gpu-loop is meant for CUDA; on this device the figures only exercise the code path")
    g = torch.Generator().manual_seed(0)
    shape = (3, 32, 32) if args.loop_model == "preactresnet18" else (1, 28, 28)
    x_u8 = torch.randint(0, 256, (args.n_images, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.n_images,), generator=g)
    course, extra = course_images_per_s(x_u8.float().div(255), y, args, device)
    textbook = textbook_images_per_s(x_u8, y, args, device)
    mfu = step_mfu(args, device)
    return {"mode": "gpu_loop", "model": args.loop_model, "method": args.loop_method, "attack_steps": args.attack_steps, "batch": args.batch,
            "n_images": args.n_images, "epochs_timed": args.loop_epochs - 1, "compile": args.compile,
            "course_images_per_s": course, "textbook_images_per_s": textbook, "speedup": course / textbook,
            **extra, **mfu}


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="smallcnn", choices=("smallcnn", "preactresnet18"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--gpu-loop", action="store_true", help="full loop vs textbook loop, and MFU (CUDA)")
    p.add_argument("--loop-method", choices=("standard", "pgd_at"), default="pgd_at")
    p.add_argument("--loop-model", choices=("preactresnet18", "smallcnn"), default="preactresnet18",
                   help="model of --gpu-loop (smallcnn: MNIST-shaped, for CPU tests of the code path)")
    p.add_argument("--loop-epochs", type=int, default=3, help="epochs per loop; the first is not timed")
    p.add_argument("--n-images", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the textbook loop")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result = {"machine": machine(device), "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.gpu_loop:
        if args.batch == 128 and args.model == "smallcnn":
            args.batch = 512
        result.update(gpu_loop(args, device))
        print(f"{result['machine']['date']}  {result['machine']['device_name']}  torch {result['machine']['torch']}")
        print(f"full loop ({args.loop_method}, PGD-{args.attack_steps}, batch {args.batch}, amp {result['amp']}, "
              f"channels_last, compile={args.compile}): {result['course_images_per_s']:.0f} images/s")
        print(f"textbook DataLoader + fp32 loop ({args.workers} workers): {result['textbook_images_per_s']:.0f} images/s")
        print(f"speedup: {result['speedup']:.2f}x (target >= 3x)")
        print(f"model FLOPs per step {result['flops_per_step'] / 1e12:.3f} TFLOP, step {result['step_s'] * 1e3:.1f} ms "
              f"-> {result['achieved_tflops']:.1f} TFLOP/s; measured bf16 matmul {result['bf16_matmul_tflops']:.1f} "
              f"TFLOP/s -> MFU {100 * result['mfu']:.1f} % (target >= 30 %)")
    else:
        result.update(step_ratio(args, device))
        m = result["machine"]
        print(f"{m['date']}  {m['device_name']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads, "
              f"load {m['load_average_1min']})  torch {m['torch']}")
        print(f"{args.model}, batch {args.batch}, PGD-{args.attack_steps} training examples, "
              f"{args.repeats} interleaved repeats of {args.steps} steps, amp={result['amp']}")
        for k in ("pgd_at", "clead_online"):
            print(f"  {k:<13} median {1e3 * result['median_wall_s'][k]:8.1f} ms/step wall, "
                  f"{1e3 * result['median_cpu_s'][k]:8.1f} ms/step CPU")
        print(f"ratio clead_online / pgd_at: {result['ratio_wall']:.3f} wall, {result['ratio_cpu']:.3f} CPU "
              f"(target <= 1.3)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
