"""Write the course's GPU estimates into the README and each notebook's one-line time estimate.

The figures come from `benchmarks/results/flops.json` (written by `python benchmarks/bench_flops.py`): the
model FLOPs each notebook runs in the `colab` and `paper` profiles and the T4 minutes they imply at the
calibrated training rate (docs/COLAB.md), with a kept model store and from a fresh Colab runtime without one.
Rewritten: the README's FLOP table (block `flops`), its table of each notebook's distance from the published
setting (block `distance`), docs/COLAB.md's per-notebook fresh-runtime table (block `fresh`), and in every
notebook's header (notebooks/ and notebooks/solutions/) the one line that starts with `*Time:`: the measured
`quick` time (the README's block `times`, written by `scripts/record_times.py`) and the estimated `colab` time
on a T4 (with the Drive store, and from a fresh runtime without it). Nothing else in a notebook changes.

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
        "random start, step 1.25 eps, cyclic learning rate, 15 epochs on all 50,000 images; published on CIFAR-10 "
        "at eps 8/255 with PreAct ResNet-18: 86.06 % clean, 46.06 % under PGD-50 x 10 restarts, 12 min on one "
        "RTX 2080 Ti (PGD-7 training: 87.30 % / 45.80 %, 4,966 min)")
CIFAR10_TRAIN = 50_000


def subset(profile) -> str:
    """'5 epochs on a seeded 10,000-image subset' / '30 epochs on all 50,000 images'."""
    if profile.n_train is None or profile.n_train >= CIFAR10_TRAIN:
        return f"{profile.epochs} epochs on all {CIFAR10_TRAIN:,} images"
    return f"{profile.epochs} epochs on a seeded {profile.n_train:,}-image subset"


def ci(n: int) -> str:
    return f"±{100 * half_width_95(0.5, n):.1f} points"


def distance(notebook: str) -> str:
    """How far the colab profile's budget is from the published (paper) setting, for one notebook."""
    c, p = PROFILES["colab"], PROFILES["paper"]
    cc, pc = faithful_config(c), faithful_config(p)
    evals = (f"evaluated on {c.n_eval:,} test images instead of {p.n_eval:,} (95 % interval {ci(c.n_eval)} "
             f"instead of {ci(p.n_eval)} at 50 % accuracy)")
    budget = (f"{(c.n_train or CIFAR10_TRAIN) * c.epochs:,} image-epochs, 1/{15 * CIFAR10_TRAIN / ((c.n_train or CIFAR10_TRAIN) * c.epochs):.0f} "
              "of the published recipe's; expect lower clean and robust accuracy than published, robust accuracy "
              "falling the most (docs/COLAB.md)")
    train = (f"FGSM-RS training for {subset(c)} instead of PGD-{p.train_steps} for {subset(p)} ({WONG}); "
             f"{budget}")
    texts = {
        "00": "nothing is trained here; in `colab` and `paper` the data and the model are the published ones "
              "(CIFAR-10, PreAct ResNet-18).",
        "01": f"the standard model trains {subset(c)} (batch {c.batch_size}, cyclic lr to {c.lr}) instead of "
              f"{subset(p)}; attacks {evals}.",
        "02": f"the attacks are the published ones (PGD-{c.eval_steps}, CW, restarts), {evals}.",
        "03": f"PGD-AT becomes {train}; PGD-{c.eval_steps} with {c.eval_restarts} restart instead of "
              f"{p.eval_restarts}, {evals}.",
        "04": f"the contrastive encoder trains {max(1, c.epochs // 2)} epochs instead of {max(1, p.epochs // 2)}"
              + (f", on the seeded {c.n_train:,}-image subset." if c.n_train else "."),
        "05": f"C-LEAD online crafts its views with FGSM-RS and trains {subset(c)} instead of PGD-{p.train_steps} "
              f"for {subset(p)}; the faithful pipeline uses CW views of {cc.cw_steps} steps instead of "
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


TIME_LINE = re.compile(r"^\*Time: .*\*$", re.M)


def _about(minutes: float | None, where: str) -> str | None:
    if minutes is None:
        return None
    return f"under a minute {where}" if minutes < 1 else f"about {round(minutes)} min {where}"


def time_line(quick_seconds: float | None, colab_minutes: float | None, fresh_minutes: float | None = None) -> str:
    """The header's one line of expected time, e.g. '*Time: about 2 min on a laptop CPU (`quick`), about 4 min
    on a Colab T4 (`colab`, estimated).*'; with `fresh_minutes` (a fresh Colab runtime without the Drive store,
    which retrains every model the notebook loads) the T4 part says both, in the student's terms, e.g. 'about 5
    min on a Colab T4 (`colab`, estimated; about 12 min without the models earlier notebooks saved)'."""
    where = "on a Colab T4 (`colab`, estimated)"
    if fresh_minutes is not None and colab_minutes is not None and round(fresh_minutes) != round(colab_minutes):
        where = where[:-1] + f"; {_about(fresh_minutes, 'without the models earlier notebooks saved')})"
    parts = [_about(None if quick_seconds is None else quick_seconds / 60, "on a laptop CPU (`quick`)"),
             _about(colab_minutes, where)]
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


def update_headers(notebooks: Path | str, readme_text: str, flops: dict | None, check: bool = False,
                   skip: tuple[str, ...] = (), left: list | None = None) -> list[str]:
    """Rewrite each notebook's time line; returns the notebooks that changed (or would, with check). A notebook
    named in `skip` (file stem or its NN prefix) is not written; when stale it is appended to `left`."""
    quick = quick_times(readme_text)
    colab = {} if flops is None else {r["notebook"]: r["t4_minutes"] for r in flops["profiles"]["colab"]["notebooks"]}
    fresh = {} if flops is None else {r["notebook"]: r["fresh_t4_minutes"]
                                      for r in flops.get("colab_fresh_runtime", {}).get("notebooks", [])}
    changed = []
    for path in header_paths(notebooks):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = update_time_line(source, time_line(quick.get(path.stem), colab.get(path.stem), fresh.get(path.stem)))
        if new != source and not check and (path.stem in skip or path.stem[:2] in skip):
            if left is not None:
                left.append(str(path.relative_to(Path(notebooks).parent)) if path.is_relative_to(Path(notebooks).parent) else path.name)
            continue
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
    rate = flops["t4_rate"]
    names = [r["notebook"] for r in flops["profiles"]["colab"]["notebooks"]]
    profiles = [p for p in ("colab", "paper") if p in flops["profiles"]]
    fresh = {r["notebook"]: r["fresh_t4_minutes"] for r in flops.get("colab_fresh_runtime", {}).get("notebooks", [])}
    head = []
    for p in profiles:
        head += [f"`{p}` FLOPs", f"`{p}` T4 min"] + (["`colab` T4 min, fresh runtime"] if p == "colab" and fresh else [])
    lines = ["| notebook | " + " | ".join(head) + " |", "|---" + "|---:" * len(head) + "|"]
    for i, name in enumerate(names):
        cells = []
        for p in profiles:
            r = flops["profiles"][p]["notebooks"][i]
            cells += [f"{r['flops'] / 1e15:.2f} P", f"{r['t4_minutes']:.1f}"]
            if p == "colab" and fresh:
                cells.append(f"{fresh[name]:.1f}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    cells = []
    for p in profiles:
        t = flops["profiles"][p]
        cells += [f"**{t['total_flops'] / 1e15:.1f} P**", f"**{t['total_t4_minutes']:.0f}**"]
        if p == "colab" and fresh:
            cells.append(f"**{flops['colab_fresh_runtime']['total_fresh_t4_minutes']:.0f}**")
    lines.append("| **course** | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Estimated at {rate['tflops']:.2f} TFLOP/s ({rate['range_tflops'][0]:.1f}-{rate['range_tflops'][1]:.1f}), "
                 f"a T4 *training* rate calibrated on a published training run ({rate['anchor_pflop']:.2f} PFLOP of "
                 f"FGSM-RS training in 12 min on an RTX 2080 Ti, a T4 at {rate['t4_vs_2080ti'][0]}-"
                 f"{rate['t4_vs_2080ti'][1]} of that GPU; derivation in [docs/COLAB.md](docs/COLAB.md)). *T4 min*: each "
                 "model trained once, in the first notebook that needs it (a model store kept between notebooks, e.g. "
                 "on Google Drive); *fresh runtime*: a new Colab runtime without a store, which retrains every model "
                 f"the notebook loads. {flops['date']}, torch {flops['torch']}, `{flops['command'].strip()}`. Not a "
                 "measurement: the install, the CIFAR-10 download and CPU work (UMAP, plotting) are not counted; "
                 f"`colab` keeps every notebook within {flops['budget_minutes']['notebook_compute']:g} min so that "
                 f"{flops['budget_minutes']['setup_allowance']:g} are left for them.")
    return "\n".join(lines)


NICE = {"standard": "standard", "pgd_at": "PGD-AT", "clead_online": "C-LEAD online", "clead_faithful": "C-LEAD faithful"}


def fresh_table(flops: dict) -> str:
    """docs/COLAB.md's table: per notebook, T4 minutes with the Drive store and from a fresh runtime without one
    (values from flops.json, not rounded before they are summed)."""
    fresh = flops["colab_fresh_runtime"]
    train = fresh["training_t4_minutes"]
    lines = ["| notebook | with the Drive store (min) | fresh runtime, no store (min) | retrained in a fresh runtime |",
             "|---|---:|---:|---|"]
    for r in fresh["notebooks"]:
        retrains = ", ".join(f"{NICE[m]} {train[m]:.1f}" for m in r["retrains"]) or "–"
        lines.append(f"| {r['notebook'][:2]} {r['notebook'][3:].replace('_', ' ')} | {r['t4_minutes']:.1f} | "
                     f"{r['fresh_t4_minutes']:.1f} | {retrains} |")
    lines.append(f"| course | {fresh['total_t4_minutes']:.1f} | {fresh['total_fresh_t4_minutes']:.1f} | |")
    lines.append("")
    setup = fresh["setup_allowance_minutes"]
    worst = max(fresh["notebooks"], key=lambda r: r["fresh_t4_minutes"])
    n = sum(1 for r in fresh["notebooks"] if not r["notebook"].startswith("00"))
    lines.append(f"At {flops['t4_rate']['tflops']:.2f} TFLOP/s ({flops['date']}, `{flops['command'].strip()}`). "
                 f"Training each model once: " + ", ".join(f"{NICE[m]} {v:.2f} min" for m, v in train.items())
                 + f". The largest notebook from a fresh runtime is {worst['notebook'][:2]} at "
                 f"{worst['fresh_t4_minutes']:.2f} min; with {setup:g} min per notebook for the install, the download and "
                 f"CPU work the course from fresh runtimes is {fresh['total_fresh_t4_minutes'] + n * setup:.1f} min "
                 f"(budget: 15 a notebook, 90 in all): "
                 + ("within the budget." if fresh["within_budget"] else "**over the budget**."))
    return "\n".join(lines)


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text:
        return text
    return re.sub(f"({re.escape(start)}\n).*?({re.escape(end)})", lambda m: m[1] + content + "\n" + m[2], text, flags=re.S)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flops", default=str(ROOT / "benchmarks" / "results" / "flops.json"))
    p.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--docs", default=str(ROOT / "docs" / "COLAB.md"), help="the page with the fresh-runtime table")
    p.add_argument("--skip", nargs="*", default=[], metavar="NOTEBOOK",
                   help="notebooks (name or NN prefix) whose time line is left alone, e.g. while someone else edits them")
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
    left: list[str] = []
    stale += update_headers(args.notebooks, text, flops, check=args.check, skip=tuple(args.skip), left=left)
    if readme.exists():
        new = text
        for name, content in (("flops", readme_table(flops)), ("distance", distance_table())):
            new = replace_block(new, name, content)
        if new != text:
            stale.append(readme.name)
            if not args.check:
                readme.write_text(new)
    docs = Path(args.docs)
    if docs.exists() and "colab_fresh_runtime" in flops:
        text = docs.read_text()
        new = replace_block(text, "fresh", fresh_table(flops))
        if new != text:
            stale.append(docs.name)
            if not args.check:
                docs.write_text(new)
    if args.check:
        print("up to date" if not stale else "not up to date: " + ", ".join(stale))
        return 1 if stale else 0
    print("updated: " + (", ".join(stale) if stale else "nothing (already up to date)"))
    if left:
        print("left alone (--skip), their time line is stale: " + ", ".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())
