"""Write the course's GPU estimates into the README and each notebook's one-line time estimate.

The figures come from `benchmarks/results/flops.json` (written by `python benchmarks/bench_flops.py`): the
model FLOPs each notebook runs in the `colab` and `paper` profiles and the T4 minutes they imply at the assumed
rate. Rewritten: the README's FLOP table (block `flops`), its table of each notebook's distance from the
published setting (block `distance`), and in every notebook's header (notebooks/ and notebooks/solutions/) the
one line that starts with `*Time:`: the measured `quick` time (the README's block `times`, written by
`scripts/record_times.py`) and the estimated `colab` time on a T4. Nothing else in a notebook changes.

    python scripts/write_gpu_estimates.py [--flops benchmarks/results/flops.json] [--check]

--check: exit 1 (changing nothing) when a notebook or the README is not up to date.
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
from clead_lite.course.profiles import faithful_config  # noqa: E402
from clead_lite.course.stats import half_width_95  # noqa: E402
from clead_lite.training import TrainConfig  # noqa: E402

WONG = ("fast adversarial training (Wong, Rice & Kolter 2020, *Fast is better than free*, ICLR): FGSM from a "
        "random start, step 1.25 eps, cyclic learning rate, 15 epochs; published on CIFAR-10 at eps 8/255 with "
        "PreAct ResNet-18: 86.06 % clean, 46.06 % under PGD-50 x 10 restarts, 12 min on one RTX 2080 Ti "
        "(PGD-7 training: 87.30 % / 45.80 %, 4,966 min)")


def ci(n: int) -> str:
    return f"±{100 * half_width_95(0.5, n):.1f} points"


def distance(notebook: str) -> str:
    """How far the colab profile's budget is from the published (paper) setting, for one notebook."""
    c, p = PROFILES["colab"], PROFILES["paper"]
    cc, pc = faithful_config(c), faithful_config(p)
    evals = (f"evaluated on {c.n_eval:,} test images instead of {p.n_eval:,} (95 % interval {ci(c.n_eval)} "
             f"instead of {ci(p.n_eval)} at 50 % accuracy)")
    train = (f"{c.epochs} epochs of FGSM-RS training instead of {p.epochs} epochs of PGD-{p.train_steps} "
             f"({WONG})")
    texts = {
        "00": "nothing is trained here; in `colab` and `paper` the data and the model are the published ones "
              "(CIFAR-10, PreAct ResNet-18).",
        "01": f"the standard model trains {c.epochs} epochs (batch {c.batch_size}, cyclic lr to {c.lr}) instead of "
              f"{p.epochs}; attacks {evals}.",
        "02": f"the attacks are the published ones (PGD-{c.eval_steps}, CW, restarts), {evals}.",
        "03": f"PGD-AT becomes {train}; PGD-{c.eval_steps} with {c.eval_restarts} restart instead of "
              f"{p.eval_restarts}, {evals}.",
        "04": f"the contrastive encoder trains {max(1, c.epochs // 2)} epochs instead of {max(1, p.epochs // 2)}.",
        "05": f"C-LEAD online crafts its views with FGSM-RS and trains {c.epochs} epochs instead of PGD-{p.train_steps} "
              f"for {p.epochs}; the faithful pipeline uses CW views of {cc.cw_steps} steps instead of "
              f"{pc.cw_steps} and {cc.encoder_epochs} encoder and {cc.head_epochs} head epoch(s) instead of "
              f"{pc.encoder_epochs or p.epochs} encoder and {pc.recipe('head_epochs') or p.epochs} head epochs (the "
              f"authors' recipe): its numbers are a demonstration, not a reproduction.",
        "06": f"{evals}; AutoAttack on {c.n_autoattack} images instead of {p.n_autoattack:,} "
              f"({ci(c.n_autoattack)} instead of {ci(p.n_autoattack)}).",
        "07": f"{c.n_embed:,} embedded test images instead of {p.n_embed:,}.",
    }
    return texts[notebook[:2]]


def fmt_min(m: float) -> str:
    return f"{m:.1f} min" if m < 60 else f"{m / 60:.1f} h"


TIME_LINE = re.compile(r"^\*Time: .*\*$", re.M)


def _about(minutes: float | None, where: str) -> str | None:
    if minutes is None:
        return None
    return f"under a minute {where}" if minutes < 1 else f"about {round(minutes)} min {where}"


def time_line(quick_seconds: float | None, colab_minutes: float | None) -> str:
    """The header's one line of expected time, e.g. '*Time: about 2 min on a laptop CPU (`quick`), about 4 min
    on a Colab T4 (`colab`, estimated).*'"""
    parts = [_about(None if quick_seconds is None else quick_seconds / 60, "on a laptop CPU (`quick`)"),
             _about(colab_minutes, "on a Colab T4 (`colab`, estimated)")]
    parts = [p for p in parts if p] or ["not measured yet"]
    return "*Time: " + ", ".join(parts) + ".*"


def update_time_line(source: str, line: str) -> str:
    """`source` (a header cell) with its `*Time: ...*` line replaced by `line` (appended when it has none)."""
    if TIME_LINE.search(source):
        return TIME_LINE.sub(lambda _: line, source, count=1)
    return source.rstrip("\n") + "\n\n" + line


def quick_times(readme_text: str) -> dict[str, float]:
    """{notebook stem: seconds} of the `quick` column of the README's times block."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record_times import kept_times
    return {Path(name).stem: row["seconds"] for name, row in kept_times(readme_text).get("quick", {}).items()}


def header_paths(notebooks: Path | str) -> list[Path]:
    """The student notebooks in `notebooks` and their instructor versions in `notebooks`/solutions."""
    notebooks = Path(notebooks)
    return sorted(notebooks.glob("[0-9][0-9]_*.ipynb")) + sorted((notebooks / "solutions").glob("[0-9][0-9]_*.ipynb"))


def update_headers(notebooks: Path | str, readme_text: str, flops: dict | None, check: bool = False) -> list[str]:
    """Rewrite each notebook's time line; returns the notebooks that changed (or would, with check)."""
    quick = quick_times(readme_text)
    colab = {} if flops is None else {r["notebook"]: r["t4_minutes"] for r in flops["profiles"]["colab"]["notebooks"]}
    changed = []
    for path in header_paths(notebooks):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = update_time_line(source, time_line(quick.get(path.stem), colab.get(path.stem)))
        if new != source:
            changed.append(path.name)
            if not check:
                cell["source"] = new.splitlines(keepends=True)
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def distance_table() -> str:
    """The README's table: how far each notebook's `colab` budget is from the published (`paper`) setting."""
    lines = ["| notebook | `colab` vs `paper` |", "|---|---|"]
    for stem in ("00_setup_and_data", "01_adversarial_examples", "02_stronger_attacks", "03_adversarial_training",
                 "04_contrastive_learning", "05_clead", "06_honest_evaluation", "07_embedding_separation"):
        lines.append(f"| `{stem}` | {distance(stem)} |")
    return "\n".join(lines)


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
    readme = Path(args.readme)
    text = readme.read_text() if readme.exists() else ""
    stale += update_headers(args.notebooks, text, flops, check=args.check)
    if readme.exists():
        new = text
        for name, content in (("flops", readme_table(flops)), ("distance", distance_table())):
            start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
            if start in new:
                new = re.sub(f"({re.escape(start)}\n).*?({re.escape(end)})", lambda m: m[1] + content + "\n" + m[2],
                             new, flags=re.S)
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
