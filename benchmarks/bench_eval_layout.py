"""Time evaluation with the weights in channels_last against the default layout, on the same model and batch.

`clead_lite.evaluation.evaluate`, `sanity_checks` and `clead_lite.course.autoattack.autoattack_accuracy` switch a
model's 4-D weights to the channels_last memory layout for their duration (values unchanged). This script measures
what that buys and checks that it changes no result. Each figure is timed interleaved (default, channels_last, default, ...)
so that drifts in machine load hit both alike; it prints the medians and the speed-up default / channels_last:

- forward, and forward + backward to the input (one PGD step), on a batch of --batch images;
- AutoAttack's APGD-CE (100 iterations, the first attack of the standard version) on --n-aa test images,
  through `autoattack_accuracy` and through the same function with its layout switch turned into a no-op,
  with both accuracies printed (they must agree).

    python benchmarks/bench_eval_layout.py                       # SmallCNN, the shipped mnist5k PGD-AT checkpoint
    python benchmarks/bench_eval_layout.py --model preactresnet18 --batch 64   # CIFAR-shaped, random weights
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from unittest import mock

import torch

from clead_lite import evaluation as E
from clead_lite.course import autoattack as AA
from clead_lite.models import build_model

from bench_attacks import machine


def interleaved(fn, model, repeats: int) -> tuple[float, float]:
    """Median seconds of fn() in the default layout and inside channels_last_weights(model), alternating."""
    def fast():
        with E.channels_last_weights(model):
            fn()
    times = {fn: [], fast: []}
    fn(), fast()   # warm-up
    for i in range(repeats):
        for g in ((fn, fast) if i % 2 == 0 else (fast, fn)):
            t0 = time.perf_counter()
            g()
            times[g].append(time.perf_counter() - t0)
    return statistics.median(times[fn]), statistics.median(times[fast])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallcnn", choices=("smallcnn", "preactresnet18"))
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--n-aa", type=int, default=200, help="test images for the APGD-CE timing (0: skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.model == "smallcnn":
        from clead_lite.course.checkpoints import load_pretrained
        from clead_lite.course.datasets import load_dataset
        model, entry = load_pretrained("mnist5k", "pgd_at", "quick")
        x, y = load_dataset("mnist5k", "test")
        eps, source = 0.3, f"shipped checkpoint {entry['file']}"
    else:
        model = build_model("preactresnet18", num_classes=10)
        x, y = torch.rand(max(args.batch, args.n_aa), 3, 32, 32), torch.randint(0, 10, (max(args.batch, args.n_aa),))
        eps, source = 8 / 255, "random weights, uniform random images"
    model.eval()
    xb, yb = x[:args.batch], y[:args.batch]

    def forward():
        with torch.no_grad():
            model(xb)

    def forward_backward():
        xr = xb.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(xr), yb), xr)

    info = machine(torch.device("cpu"))
    print(f"{info['date']}  {info['device_name']}, {info['torch_threads']} torch thread(s), torch {info['torch']}")
    print(f"model {args.model} ({source}), batch {args.batch}, {args.repeats} interleaved repeats")
    figures = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        plain_s, fast_s = interleaved(fn, model, args.repeats)
        figures[name] = {"default_s": plain_s, "channels_last_s": fast_s, "speedup": plain_s / fast_s}
        print(f"{name:>18}: default {plain_s * 1e3:8.1f} ms   channels_last {fast_s * 1e3:8.1f} ms   "
              f"speed-up {plain_s / fast_s:.2f}x")
    if args.n_aa:
        xs, ys = x[:args.n_aa], y[:args.n_aa]
        kw = dict(version="custom", attacks=["apgd-ce"], seed=0)
        t0 = time.perf_counter()
        with mock.patch.object(AA, "channels_last_weights", lambda m: contextlib.nullcontext()):   # default layout
            acc_plain = AA.autoattack_accuracy(model, xs, ys, eps, **kw)
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc_fast = AA.autoattack_accuracy(model, xs, ys, eps, **kw)
        fast_s = time.perf_counter() - t0
        figures["apgd_ce"] = {"default_s": plain_s, "channels_last_s": fast_s, "speedup": plain_s / fast_s,
                              "accuracy_default": acc_plain, "accuracy_channels_last": acc_fast, "n": args.n_aa}
        print(f"{'APGD-CE':>18}: default {plain_s:8.1f} s    channels_last {fast_s:8.1f} s    "
              f"speed-up {plain_s / fast_s:.2f}x   robust accuracy {100 * acc_plain:.1f}% vs "
              f"{100 * acc_fast:.1f}% on {args.n_aa} images")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "model": args.model, "source": source, "batch": args.batch,
                       "figures": figures}, f, indent=1)


if __name__ == "__main__":
    main()
