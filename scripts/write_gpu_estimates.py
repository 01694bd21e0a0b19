"""Write each notebook's estimated GPU time and its distance from the published setting into its header.

The figures come from `benchmarks/results/flops.json` (written by `python benchmarks/bench_flops.py`): the
model FLOPs the notebook runs in the `colab` and `paper` profiles and the T4 minutes they imply at the assumed
rate. Only the block between `<!-- gpu-estimate:start -->` and `<!-- gpu-estimate:end -->` in the first
markdown cell is rewritten (appended at the end of that cell the first time); the run-time table that
`scripts/record_times.py` maintains is left alone. The README's FLOP table (block `flops`) is rewritten too.

    python scripts/write_gpu_estimates.py [--flops benchmarks/results/flops.json] [--check]

--check: exit 1 (changing nothing) when a notebook or the README is not up to date with the JSON.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clead_lite.course.profiles import PROFILES  # noqa: E402
from clead_lite.course.profiles import train_config  # noqa: E402
from clead_lite.course.stats import half_width_95  # noqa: E402
from clead_lite.training import TrainConfig  # noqa: E402

START, END = "<!-- gpu-estimate:start -->", "<!-- gpu-estimate:end -->"
WONG = ("fast adversarial training (Wong, Rice & Kolter 2020, *Fast is better than free*, ICLR): FGSM from a "
        "random start, step 1.25 eps, cyclic learning rate, 15 epochs; published on CIFAR-10 at eps 8/255 with "
        "PreAct ResNet-18: 86.06 % clean, 46.06 % under PGD-50 x 10 restarts, 12 min on one RTX 2080 Ti "
        "(PGD-7 training: 87.30 % / 45.80 %, 4,966 min)")


def ci(n: int) -> str:
    return f"±{100 * half_width_95(0.5, n):.1f} points"


def distance(notebook: str) -> str:
    """How far the colab profile's budget is from the published (paper) setting, for one notebook."""
    c, p = PROFILES["colab"], PROFILES["paper"]
    cc, pc = train_config(c, "pgd_at"), train_config(p, "pgd_at")
    evals = (f"evaluated on {c.n_eval:,} test images instead of {p.n_eval:,} (95 % interval {ci(c.n_eval)} "
             f"instead of {ci(p.n_eval)} at 50 % accuracy)")
    train = (f"{c.epochs} epochs of FGSM-RS training instead of {p.epochs} epochs of PGD-{p.train_steps} "
             f"({WONG})")
    texts = {
        "00": "nothing is trained here; the data and the model are the published ones (CIFAR-10, PreAct ResNet-18).",
        "01": f"the standard model trains {c.epochs} epochs (batch {c.batch_size}, cyclic lr to {c.lr}) instead of "
              f"{p.epochs}; attacks {evals}.",
        "02": f"the attacks are the published ones (PGD-{c.eval_steps}, CW, restarts), {evals}.",
        "03": f"PGD-AT becomes {train}; PGD-{c.eval_steps} with {c.eval_restarts} restart instead of "
              f"{p.eval_restarts}, {evals}.",
        "04": f"the contrastive encoder trains {max(1, c.epochs // 2)} epochs instead of {max(1, p.epochs // 2)}.",
        "05": f"C-LEAD online crafts its views with FGSM-RS and trains {c.epochs} epochs instead of PGD-{p.train_steps} "
              f"for {p.epochs}; the faithful pipeline uses CW views of {cc.cw_steps} steps instead of "
              f"{pc.cw_steps} and {c.encoder_epochs} encoder and {c.head_epochs} head epoch(s) instead of "
              f"{pc.encoder_epochs or p.epochs} encoder and {pc.recipe('head_epochs') or p.epochs} head epochs (the "
              f"authors' recipe): its numbers are a demonstration, not a reproduction.",
        "06": f"{evals}; AutoAttack on {c.n_autoattack} images instead of {p.n_autoattack:,} "
              f"({ci(c.n_autoattack)} instead of {ci(p.n_autoattack)}).",
        "07": f"{c.n_embed:,} embedded test images instead of {p.n_embed:,}.",
    }
    return texts[notebook[:2]]


def fmt_min(m: float) -> str:
    return f"{m:.1f} min" if m < 60 else f"{m / 60:.1f} h"


def block(notebook: str, flops: dict) -> str:
    rate = flops["t4_rate"]["tflops"]
    rows = {p: next(r for r in t["notebooks"] if r["notebook"] == notebook) for p, t in flops["profiles"].items()
            if p in ("colab", "paper")}
    colab, paper = rows["colab"], rows["paper"]
    return (f"**GPU time, estimated** (not measured on a T4): `colab` profile, the default on a GPU: about "
            f"**{fmt_min(colab['t4_minutes'])}** on a Colab T4 ({colab['flops'] / 1e15:.2f} PFLOP); `paper` profile: "
            f"about {fmt_min(paper['t4_minutes'])} ({paper['flops'] / 1e15:.2f} PFLOP). Model FLOPs of every pass this "
            f"notebook runs, measured with torch's flop counter on the real model, at an assumed {rate:.1f} TFLOP/s "
            f"(NVIDIA's published T4 ResNet-50 mixed-precision inference throughput; training passes may run slower; `benchmarks/bench_flops.py`). A model "
            f"is trained once in the course, in the first notebook that needs it, and loaded from the model store "
            f"afterwards.\n\n"
            f"**Distance from the published setting** (`colab` vs `paper`): {distance(notebook)}")


def update_source(source: str, content: str) -> str:
    text = f"{START}\n{content}\n{END}"
    if START in source:
        new, n = re.subn(f"{re.escape(START)}.*?{re.escape(END)}", lambda m: text, source, flags=re.S)
        if n != 1:
            raise ValueError(f"expected one {START} ... {END} block, found {n}")
        return new
    return source.rstrip("\n") + "\n\n" + text


def readme_table(flops: dict) -> str:
    rate = flops["t4_rate"]["tflops"]
    names = [r["notebook"] for r in flops["profiles"]["colab"]["notebooks"]]
    profiles = [p for p in ("colab", "paper") if p in flops["profiles"]]
    lines = ["| notebook | " + " | ".join(f"`{p}` FLOPs | `{p}` T4 min" for p in profiles) + " |",
             "|---" + "|---:" * (2 * len(profiles)) + "|"]
    for i, name in enumerate(names):
        cells = []
        for p in profiles:
            r = flops["profiles"][p]["notebooks"][i]
            cells += [f"{r['flops'] / 1e15:.2f} P", f"{r['t4_minutes']:.1f}"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    cells = []
    for p in profiles:
        t = flops["profiles"][p]
        cells += [f"**{t['total_flops'] / 1e15:.1f} P**", f"**{t['total_t4_minutes']:.0f}**"]
    lines.append("| **course** | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Estimated at {rate:.1f} TFLOP/s ({flops['t4_rate']['resnet50_forward_gflop']:.2f} GFLOP per "
                 f"ResNet-50 forward, measured here, x {flops['t4_rate']['resnet50_t4_images_per_s']:,} images/s, "
                 f"NVIDIA's published T4 mixed-precision inference figure; training passes may run slower); {flops['date']}, torch {flops['torch']}, "
                 f"`{flops['command'].strip()}`. Not a measurement: CPU work (UMAP, plotting) is not counted.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flops", default=str(ROOT / "benchmarks" / "results" / "flops.json"))
    p.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--check", action="store_true", help="only report whether everything is up to date")
    args = p.parse_args(argv)
    try:
        flops = json.loads(Path(args.flops).read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.flops}: {e}", file=sys.stderr)
        return 2
    stale = []
    for path in sorted(Path(args.notebooks).glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = update_source(source, block(path.stem, flops))
        if new != source:
            stale.append(path.name)
            if not args.check:
                cell["source"] = new.splitlines(keepends=True)
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    readme = Path(args.readme)
    if readme.exists():
        text = readme.read_text()
        table = readme_table(flops)
        start, end = "<!-- flops:start -->", "<!-- flops:end -->"
        if start in text:
            new = re.sub(f"({re.escape(start)}\n).*?({re.escape(end)})", lambda m: m[1] + table + "\n" + m[2], text,
                         flags=re.S)
            if new != text:
                stale.append(readme.name)
                if not args.check:
                    readme.write_text(new)
    if args.check:
        print("up to date" if not stale else "not up to date: " + ", ".join(stale))
        return 1 if stale else 0
    print("updated: " + (", ".join(stale) if stale else "nothing (already up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
