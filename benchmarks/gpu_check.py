"""The prepared GPU check: every figure one GPU session should measure, written as one JSON file.

1. `bench_training.py --gpu-loop`: images/s of the course's full loop against a textbook DataLoader + fp32
   loop (target >= 3x) and the step's model FLOP utilisation against the GPU's measured bf16 matmul rate
   (target >= 30 %).
2. One epoch of the `colab` profile's PGD-AT (FGSM-RS) and C-LEAD online, on CIFAR-shaped random data, timed
   (the second of two epochs: the first pays for cuDNN autotuning), scaled to CIFAR-10's 50,000 images, with
   the achieved TFLOP/s (bench_flops' per-image FLOPs x images/s) to set against the T4 rate assumed there.
3. Notebooks 01 and 05 executed headless in the `colab` profile on the real data the machine has (MNIST when
   `CLEAD_DATA_ROOT` holds it, else the offline mnist5k), with their wall time and status.

    python benchmarks/gpu_check.py [--json benchmarks/results/gpu_check.json]      # on a GPU (<= 10 min)
    python benchmarks/gpu_check.py --tiny --json /tmp/gpu_check.json               # CPU, tiny sizes (tests)

--tiny runs every step at CPU sizes (SmallCNN, 64 images, notebooks in the smoke profile): the figures only
prove that the code path works. `scripts/gpu_check.sh` installs the carried wheels and data, then runs this.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

CIFAR_TRAIN = 50_000
TARGETS = {"speedup": 3.0, "mfu": 0.30}


def _gpu_loop(tiny: bool, device: torch.device) -> dict:
    import bench_training
    if tiny:
        argv = ["--gpu-loop", "--loop-model", "smallcnn", "--n-images", "32", "--batch", "16", "--loop-epochs", "2",
                "--attack-steps", "2", "--steps", "1", "--warmup", "1", "--workers", "0", "--device", str(device)]
    else:   # 20,000 images, 2 epochs (the first untimed): about 2-3 minutes of the 10 on an H100-class GPU
        argv = ["--gpu-loop", "--n-images", "20000", "--batch", "512", "--loop-epochs", "2", "--steps", "10",
                "--device", str(device)]
    t = time.perf_counter()
    result = bench_training.main(argv)
    keys = ("model", "method", "attack_steps", "batch", "n_images", "course_images_per_s", "textbook_images_per_s",
            "speedup", "amp", "flops_per_step", "step_s", "achieved_tflops", "bf16_matmul_tflops", "mfu", "command")
    out = {k: result.get(k) for k in keys}
    out["seconds"] = time.perf_counter() - t
    out["speedup_target_met"] = bool(result["speedup"] >= TARGETS["speedup"])
    out["mfu_target_met"] = bool(result["mfu"] >= TARGETS["mfu"])
    return out


def _per_image_flops(model_name: str, shape: tuple[int, int, int]) -> dict[str, float]:
    """bench_flops' measured FLOPs per image (from its JSON when it has this model, else measured now)."""
    import bench_flops
    key = f"{model_name}@{shape[0]}x{shape[1]}x{shape[2]}"
    path = ROOT / "benchmarks" / "results" / "flops.json"
    if path.exists():
        stored = json.loads(path.read_text()).get("per_image_flops", {})
        if key in stored:
            return stored[key]
    return bench_flops.pass_flops(model_name, shape[0], shape[1])


def _epoch_times(tiny: bool, device: torch.device) -> dict:
    """Seconds per epoch of the colab profile's PGD-AT and C-LEAD online, scaled to 50,000 images."""
    from clead_lite.models import build_model
    from clead_lite.course.profiles import get_profile
    from clead_lite.course.profiles import train_config
    from clead_lite.training import TrainConfig, train
    profile = get_profile("colab")
    if tiny:
        profile = profile.replace(dataset="mnist")       # SmallCNN at MNIST's eps: the same code path, small
    model_name, dataset, shape, n, batch = (("smallcnn", "mnist", (1, 28, 28), 64, 32) if tiny else
                                           (profile.model, profile.dataset, (3, 32, 32), 10_000, profile.batch_size))
    per = _per_image_flops(model_name, shape)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    out = {}
    for method in ("pgd_at", "clead_online"):
        cfg = train_config(profile, method, epochs=2, n_val=0, batch_size=batch, co_drop=None)
        cfg = cfg.resolved(dataset)
        torch.manual_seed(0)
        result = train(build_model(model_name), x, y, cfg, dataset=dataset, device=device, progress=False)
        epoch = result.history.epochs()[-1]
        ips = epoch["images_per_s"]
        flops = per["input_grad"] * cfg.attack_steps + (per["train"] if method == "pgd_at" else 2 * per["train_all"])
        out[method] = {"model": model_name, "images": epoch["images"], "batch": batch, "attack": cfg.attack,
                       "attack_steps": cfg.attack_steps, "alpha": cfg.alpha, "amp": device.type == "cuda",
                       "epoch_seconds": epoch["seconds"], "images_per_s": ips,
                       "seconds_per_50k_images": CIFAR_TRAIN / ips, "flops_per_image": flops,
                       "achieved_tflops": flops * ips / 1e12}
    return out


def _notebooks(tiny: bool, out_dir: Path, notebooks: list[str]) -> list[dict]:
    from clead_lite.course.runner import run_course
    from clead_lite.course.datasets import data_root
    root = Path(data_root())
    dataset = "mnist" if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists() else "mnist5k"
    profile = "smoke" if tiny else "colab"
    old = os.environ.get("CLEAD_DATASET")
    os.environ["CLEAD_DATASET"] = dataset       # the kernels inherit it
    try:
        rows = run_course(profile, out_dir, notebooks=notebooks, timeout=600, quiet=True)
    finally:
        if old is None:
            os.environ.pop("CLEAD_DATASET", None)
        else:
            os.environ["CLEAD_DATASET"] = old
    return [{**r, "dataset": dataset} for r in rows]


def run(tiny: bool, out_dir: Path, notebooks: list[str] = ("01", "05")) -> dict:
    from bench_training import machine
    device = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    result = {"tiny": tiny, "machine": machine(device), "targets": TARGETS,
              "command": "python benchmarks/gpu_check.py" + (" --tiny" if tiny else "")}
    for name, step in (("gpu_loop", lambda: _gpu_loop(tiny, device)),
                       ("epochs", lambda: _epoch_times(tiny, device)),
                       ("notebooks", lambda: _notebooks(tiny, out_dir, list(notebooks)))):
        t = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        result[name] = step()
        print(f"[gpu_check] {name}: {time.perf_counter() - t:.1f} s", flush=True)
    result["seconds_total"] = time.perf_counter() - t0
    result["all_notebooks_ok"] = all(r["status"] == "ok" for r in result["notebooks"])
    return result


def summary(result: dict) -> str:
    loop, ep = result["gpu_loop"], result["epochs"]
    lines = [f"{result['machine']['date']}  {result['machine']['device_name']}  torch {result['machine']['torch']}"
             + ("  (tiny: CPU sizes, figures meaningless)" if result["tiny"] else ""),
             f"full loop {loop['course_images_per_s']:.0f} images/s vs textbook {loop['textbook_images_per_s']:.0f}: "
             f"{loop['speedup']:.2f}x (target >= 3x: {'met' if loop['speedup_target_met'] else 'NOT met'})",
             f"MFU {100 * loop['mfu']:.1f} % of the measured bf16 matmul rate {loop['bf16_matmul_tflops']:.1f} TFLOP/s "
             f"(target >= 30 %: {'met' if loop['mfu_target_met'] else 'NOT met'})"]
    for method, r in ep.items():
        lines.append(f"colab {method} ({r['attack']}): {r['images_per_s']:.0f} images/s -> "
                     f"{r['seconds_per_50k_images']:.1f} s per 50,000-image epoch, {r['achieved_tflops']:.1f} TFLOP/s")
    for r in result["notebooks"]:
        lines.append(f"{r['notebook']} ({r['profile']}, {r['dataset']}): {r['status']} in {r['seconds']:.1f} s")
    lines.append(f"total {result['seconds_total']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU sizes: test the code path in well under a minute")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    p.add_argument("--out", default=str(ROOT / "build" / "gpu_check"), help="executed notebooks and figures")
    p.add_argument("--notebooks", nargs="+", default=["01", "05"],
                   help="notebooks to execute (default 01 05; the CPU test runs 00, the quickest)")
    args = p.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("error: no CUDA device; run with --tiny to test the code path on the CPU", file=sys.stderr)
        return 2
    result = run(args.tiny, Path(args.out), args.notebooks)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {args.json}")
    return 0 if result["all_notebooks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
