"""Time PGD of clead_lite against torchattacks.PGD on the same model and batch.

Both run L-inf PGD with a random start (eps 8/255, alpha 2/255) for --steps steps; the two are timed
interleaved (A B, B A, ...) so that drifts in machine load hit both alike. Prints the median seconds of
each and the ratio clead / torchattacks (target: <= 1.0), with the machine and the date.

    python benchmarks/bench_attacks.py --device cpu --batch 256 --model smallcnn
    python benchmarks/bench_attacks.py --device cuda --batch 512 --model preactresnet18 --json out.json

--model linear (a linear classifier on 1x28x28) makes the network nearly free, so the figure measures
the attack loop's own overhead (the projection and bookkeeping around each forward/backward pass).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn

from clead_lite.attacks import pgd
from clead_lite.models import build_model


class LinearModel(nn.Module):
    """logits = W x + b on 1x28x28 images: a model that costs almost nothing."""

    in_channels, image_size, num_classes = 1, 28, 10

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


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
    return {"torch": torch.__version__, "device": str(device), "device_name": name,
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--model", choices=("smallcnn", "preactresnet18", "linear"), default="smallcnn")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--alpha", type=float, default=2 / 255)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import torchattacks  # the reference; imported here so --help works without it

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = (LinearModel() if args.model == "linear" else build_model(args.model)).to(device).eval()
    x = torch.rand(args.batch, model.in_channels, model.image_size, model.image_size, device=device)
    y = torch.randint(0, model.num_classes, (args.batch,), device=device)

    reference = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True)
    runs = {
        "clead": lambda: pgd(model, x, y, args.eps, args.alpha, args.steps),
        "torchattacks": lambda: reference(x, y),
    }
    for fn in runs.values():  # warm-up (allocator, cuDNN autotuning, lazy init)
        timed(fn, device)
    times = {name: [] for name in runs}
    cpu_times = {name: [] for name in runs}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            wall, cpu = timed(runs[name], device)
            times[name].append(wall)
            cpu_times[name].append(cpu)

    median = {name: statistics.median(t) for name, t in times.items()}
    median_cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
    ratio = median["clead"] / median["torchattacks"]
    result = {"benchmark": f"PGD-{args.steps} L-inf, random start", "model": args.model, "batch": args.batch,
              "steps": args.steps, "repeats": args.repeats, "median_s": median, "times_s": times,
              "median_cpu_s": median_cpu, "cpu_times_s": cpu_times,
              "ratio_clead_over_torchattacks": ratio,
              "cpu_ratio_clead_over_torchattacks": median_cpu["clead"] / median_cpu["torchattacks"],
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "machine": machine(device)}

    m = result["machine"]
    print(f"PGD-{args.steps} (L-inf, random start), {args.model}, batch {args.batch}, {args.repeats} repeats, "
          "interleaved")
    print(f"machine: torch {m['torch']}, {m['device']} ({m['device_name']}), {m['cpu_cores']} cores, "
          f"{m['torch_threads']} torch threads, {m['date']}")
    for name, t in median.items():
        print(f"  {name:13s} median {t:.4f} s  (min {min(times[name]):.4f}, max {max(times[name]):.4f}); "
              f"CPU time median {median_cpu[name]:.4f} s")
    print(f"  ratio clead / torchattacks = {ratio:.3f}  (target <= 1.0); "
          f"CPU-time ratio {result['cpu_ratio_clead_over_torchattacks']:.3f}")
    if result["load_average"] is not None:
        print(f"  load average at the end: {', '.join(f'{v:.1f}' for v in result['load_average'])} "
              "(timings are noisy when it exceeds the core count)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
