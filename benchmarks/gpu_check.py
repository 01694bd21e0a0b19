"""The prepared GPU check: every figure one GPU session should measure, each written to `$OUT` as soon as it is measured.

Figures go, one line per measurement, to `<out>/gpu_check.jsonl` (appended, flushed and fsynced at once), and each
also to `<out>/<name>.json`; `<out>` is `--out-dir`, else `$OUT` (the lent machine's folder that comes back), else
build/gpu_check/out. A run stopped at its limit therefore still returns what it measured. One overall deadline
(`--deadline-s`, default 540): a step that would start after it is recorded as skipped, and the notebooks get only
the time that is left. In order (the most wanted first):

1. `epoch_<precision>`: one `colab` epoch of PGD-AT (FGSM-RS, cyclic lr, the profile's batch and model) on
   synthetic CIFAR-10 (`write_synthetic_cifar10`: 50,000 random images in the real on-disk format, loaded by the
   course's own loader, so the augmentation and device-loader path is the one a student runs), with
   `cudnn.benchmark` as the course sets it (on, in `train`), under fp16 (what a T4 gets), bf16 (A100/H100), fp32,
   and `bf16_nocudnn` (bf16 with `torch.backends.cudnn.enabled=False`: the path a T4 took before issue 21, a lower
   bound), optionally `compile`. Timed: the second epoch (the first pays for cuDNN autotuning); `--epoch-images`
   images per epoch (default 50,000; `bf16_nocudnn` on a tenth, scaled).
2. `gpu_loop`: `bench_training.py --gpu-loop` (the course's loop against a textbook loop, and its MFU).
3. `notebook_01`, `notebook_05`: executed headless in the `colab` profile on synthetic CIFAR-10 (`CLEAD_DATA_ROOT`).

    python benchmarks/gpu_check.py                          # on a GPU (default deadline 540 s)
    python benchmarks/gpu_check.py --tiny --out-dir /tmp/x  # CPU, tiny sizes: proves the code path (tests)

--tiny runs every step at CPU sizes (1,000 synthetic images, 64 trained, SmallCNN in the loop comparison,
notebooks in the smoke profile): the figures only prove that the code path works. `scripts/gpu_check.sh`
installs the carried wheels, then runs this. `--json` also writes everything as one JSON at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

CIFAR_TRAIN = 50_000
TARGETS = {"speedup": 3.0, "mfu": 0.30}
PRECISIONS = ("fp16", "bf16", "fp32", "bf16_nocudnn")


class Recorder:
    """Append-only figures: one JSON line per measurement in gpu_check.jsonl (flushed and fsynced), plus <name>.json."""

    def __init__(self, out_dir: Path, deadline_s: float):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / "gpu_check.jsonl"
        self.t0 = time.perf_counter()
        self.deadline_s = deadline_s
        self.figures: dict[str, dict] = {}

    def left(self) -> float:
        return self.deadline_s - (time.perf_counter() - self.t0)

    def write(self, name: str, figure: dict) -> dict:
        figure = {"name": name, "elapsed_s": round(time.perf_counter() - self.t0, 2), **figure}
        self.figures[name] = figure
        line = json.dumps(figure, default=str)
        with open(self.jsonl, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        (self.out_dir / f"{name}.json").write_text(json.dumps(figure, indent=2, default=str) + "\n")
        print(f"[gpu_check] {name}: {line[:300]}", flush=True)
        return figure

    def step(self, name: str, fn, need_s: float = 0.0) -> dict:
        """Run fn() unless the deadline is (nearly) past; an error is recorded, never raised."""
        if self.left() < need_s:
            return self.write(name, {"status": "skipped", "reason": f"deadline: {self.left():.0f} s left"})
        t = time.perf_counter()
        try:
            result = fn()
            return self.write(name, {"status": "ok", "seconds": round(time.perf_counter() - t, 2), **result})
        except Exception as e:                       # keep going: the other figures still matter
            return self.write(name, {"status": "error", "seconds": round(time.perf_counter() - t, 2),
                                     "error": f"{type(e).__name__}: {e}",
                                     "traceback": traceback.format_exc()[-2000:]})


def _synthetic_cifar(root: Path, n_train: int) -> Path:
    from clead_lite.course.datasets import write_synthetic_cifar10
    marker = root / ".n_train"
    if not marker.exists() or marker.read_text().strip() != str(n_train):
        write_synthetic_cifar10(root, n_train=n_train, n_test=max(100, n_train // 50))
        (root / ".n_train").write_text(str(n_train))
    return root


@contextlib.contextmanager
def _precision(name: str, device: torch.device):
    """Force the step's autocast dtype (training.amp_dtype) and cuDNN for one measurement."""
    from clead_lite import training
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None, "bf16_nocudnn": torch.bfloat16}[name]
    old_fn, old_cudnn = training.amp_dtype, torch.backends.cudnn.enabled
    training.amp_dtype = lambda device, amp: dtype
    torch.backends.cudnn.enabled = name != "bf16_nocudnn"
    try:
        yield dtype
    finally:
        training.amp_dtype, torch.backends.cudnn.enabled = old_fn, old_cudnn


def _epoch(tiny: bool, device: torch.device, data_root: Path, precision: str, n_images: int, method: str = "pgd_at",
           compile: bool = False) -> dict:
    """One colab epoch (the second of two) on n_images synthetic CIFAR-10 images, scaled to 50,000."""
    from clead_lite.course.datasets import load_dataset
    from clead_lite.course.profiles import get_profile, train_config
    from clead_lite.models import build_model
    from clead_lite.training import train
    profile = get_profile("colab")
    batch = 8 if tiny else profile.batch_size
    x, y = load_dataset("cifar10", "train", root=data_root, n=n_images, seed=0)
    cfg = train_config(profile, method, epochs=2, n_val=0, batch_size=batch, co_drop=None, compile=compile)
    cfg = cfg.resolved("cifar10")
    torch.manual_seed(0)
    with _precision(precision, device) as dtype:
        result = train(build_model(profile.model), x, y, cfg, dataset="cifar10", device=device, progress=False)
    epoch = result.history.epochs()[-1]
    ips = epoch["images_per_s"]
    per = _per_image_flops(profile.model, (3, 32, 32))
    flops = per["input_grad"] * cfg.attack_steps + (per["train"] if method == "pgd_at" else 2 * per["train_all"])
    return {"method": method, "precision": precision, "autocast_dtype": str(dtype), "model": profile.model,
            "dataset": "synthetic cifar10 (real on-disk format)", "images": epoch["images"], "batch": batch,
            "attack": cfg.attack, "attack_steps": cfg.attack_steps, "lr_schedule": getattr(cfg, "schedule", None),
            "compile": compile, "cudnn_enabled": precision != "bf16_nocudnn",
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "epoch_seconds": epoch["seconds"], "images_per_s": ips, "seconds_per_50k_images": CIFAR_TRAIN / ips,
            "flops_per_image": flops, "achieved_tflops": flops * ips / 1e12}


def _gpu_loop(tiny: bool, device: torch.device) -> dict:
    import bench_training
    if tiny:
        argv = ["--gpu-loop", "--loop-model", "smallcnn", "--n-images", "32", "--batch", "16", "--loop-epochs", "2",
                "--attack-steps", "2", "--steps", "1", "--warmup", "1", "--workers", "0", "--device", str(device)]
    else:   # 20,000 images, 2 epochs (the first untimed): about 2-3 minutes on an H100-class GPU
        argv = ["--gpu-loop", "--n-images", "20000", "--batch", "512", "--loop-epochs", "2", "--steps", "10",
                "--device", str(device)]
    result = bench_training.main(argv)
    keys = ("model", "method", "attack_steps", "batch", "n_images", "course_images_per_s", "textbook_images_per_s",
            "speedup", "amp", "flops_per_step", "step_s", "achieved_tflops", "bf16_matmul_tflops", "mfu", "command")
    out = {k: result.get(k) for k in keys}
    out["speedup_target_met"] = bool(result["speedup"] >= TARGETS["speedup"])
    out["mfu_target_met"] = bool(result["mfu"] >= TARGETS["mfu"])
    return out


def _per_image_flops(model_name: str, shape: tuple[int, int, int]) -> dict[str, float]:
    """bench_flops' measured FLOPs per image (from its JSON when it has this model, else measured now)."""
    key = f"{model_name}@{shape[0]}x{shape[1]}x{shape[2]}"
    path = ROOT / "benchmarks" / "results" / "flops.json"
    if path.exists():
        stored = json.loads(path.read_text()).get("per_image_flops", {})
        if key in stored:
            return stored[key]
    import bench_flops
    return bench_flops.pass_flops(model_name, shape[0], shape[1])


def _notebook(tiny: bool, out_dir: Path, notebook: str, data_root: Path, timeout: int) -> dict:
    from clead_lite.course.runner import run_course
    profile = "smoke" if tiny else "colab"
    saved = {k: os.environ.get(k) for k in ("CLEAD_DATASET", "CLEAD_DATA_ROOT", "PYTHONPATH")}
    os.environ["CLEAD_DATA_ROOT"] = str(data_root)            # the kernels inherit it, and clead_lite from here
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [saved["PYTHONPATH"]])])
    os.environ.pop("CLEAD_DATASET", None) if not tiny else os.environ.__setitem__("CLEAD_DATASET", "mnist5k")
    try:
        [row] = run_course(profile, out_dir, notebooks=[notebook], timeout=timeout, quiet=True)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return {**row, "run_status": row.get("status"), "data": "synthetic cifar10" if not tiny else "mnist5k"}


def run(tiny: bool, out_dir: Path, deadline_s: float, notebooks=("01", "05"), epoch_images: int = CIFAR_TRAIN,
        precisions=PRECISIONS, compile: bool = False, skip_loop: bool = False) -> dict:
    from bench_training import machine
    device = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    rec = Recorder(out_dir, deadline_s)
    rec.write("machine", {**machine(device), "tiny": tiny, "deadline_s": deadline_s,
                          "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
                          "command": " ".join(["python benchmarks/gpu_check.py", *sys.argv[1:]])})
    n_data = 200 if tiny else max(epoch_images, CIFAR_TRAIN)
    data_root = out_dir.parent / "gpu_check_data" if tiny else ROOT / "build" / "gpu_check" / "data"
    t = time.perf_counter()
    _synthetic_cifar(data_root, n_data)
    rec.write("synthetic_cifar10", {"images": n_data, "root": str(data_root), "seconds": round(time.perf_counter() - t, 2)})
    n = 16 if tiny else epoch_images
    for p in precisions:
        if device.type == "cpu" and p == "fp16":    # fp16 autocast on a CPU: ~0.2 images/s, nothing to learn
            rec.write(f"epoch_{p}", {"status": "skipped", "reason": "fp16 on the CPU (tiny mode)"})
            continue
        rec.step(f"epoch_{p}", lambda p=p: _epoch(tiny, device, data_root, p, n if p != "bf16_nocudnn" else
                                                   max(16, n // 10)), need_s=30 if not tiny else 0)
    if compile:
        rec.step("epoch_bf16_compile", lambda: _epoch(tiny, device, data_root, "bf16", n, compile=True), need_s=60)
    rec.step("epoch_clead_online", lambda: _epoch(tiny, device, data_root,
                                                  "bf16" if tiny or torch.cuda.get_device_capability() >= (8, 0)
                                                  else "fp16", n, method="clead_online"), need_s=30 if not tiny else 0)
    if not skip_loop:
        rec.step("gpu_loop", lambda: _gpu_loop(tiny, device), need_s=120 if not tiny else 0)
    for nb in notebooks:
        rec.step(f"notebook_{nb}", lambda nb=nb: _notebook(tiny, out_dir / "notebooks", nb, data_root,
                                                           int(max(30, rec.left() - 5))), need_s=60 if not tiny else 0)
    rec.write("done", {"seconds_total": round(time.perf_counter() - rec.t0, 2),
                       "all_ok": all(f.get("status", "ok") == "ok" or f["status"] == "skipped"
                                     and "deadline" not in f["reason"] for f in rec.figures.values())})
    return rec.figures


def summary(figures: dict) -> str:
    lines = []
    m = figures["machine"]
    lines.append(f"{m['date']}  {m['device_name']}  torch {m['torch']}" + ("  (tiny: CPU sizes, figures meaningless)"
                                                                         if m["tiny"] else ""))
    for name, f in figures.items():
        if f.get("status") != "ok":
            if "status" in f and f["status"] != "skipped" or "deadline" in f.get("reason", ""):
                lines.append(f"{name}: {f['status']} {f.get('reason', f.get('error', ''))}")
            continue
        if name.startswith("epoch_"):
            lines.append(f"{name}: {f['images_per_s']:.0f} images/s -> {f['seconds_per_50k_images']:.1f} s per "
                         f"50,000-image epoch, {f['achieved_tflops']:.2f} TFLOP/s")
        elif name == "gpu_loop":
            lines.append(f"full loop {f['course_images_per_s']:.0f} images/s vs textbook {f['textbook_images_per_s']:.0f}"
                         f": {f['speedup']:.2f}x; MFU {100 * f['mfu']:.1f} %")
        elif name.startswith("notebook_"):
            lines.append(f"{f['notebook']} ({f['profile']}, {f['data']}): {f['run_status']} in {f['seconds']:.1f} s")
    lines.append(f"total {figures['done']['seconds_total']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU sizes: test the code path in well under a minute")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu_check" / "out"),
                   help="where every figure is written as it is measured (default $OUT, else build/gpu_check/out)")
    p.add_argument("--deadline-s", type=float, default=540.0, help="overall deadline: later steps are skipped")
    p.add_argument("--json", default=None, help="also write every figure as one JSON at the end")
    p.add_argument("--notebooks", nargs="*", default=["01", "05"])
    p.add_argument("--epoch-images", type=int, default=CIFAR_TRAIN)
    p.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--compile", action="store_true", help="also time a bf16 epoch under torch.compile")
    p.add_argument("--skip-loop", action="store_true", help="leave out the --gpu-loop comparison")
    args = p.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("error: no CUDA device; run with --tiny to test the code path on the CPU", file=sys.stderr)
        return 2
    figures = run(args.tiny, Path(args.out_dir), args.deadline_s, args.notebooks, args.epoch_images,
                  args.precisions, args.compile, args.skip_loop)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(summary(figures))
    print(f"figures in {args.out_dir}/gpu_check.jsonl")
    return 0 if figures["done"]["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
