"""Write measured per-notebook run times into the README's time table (and each notebook's one-line estimate).

The times come from the `times.json` files that `python -m clead_lite course --profile P --out DIR` writes;
nothing is typed in by hand.

    python scripts/record_times.py --smoke build/course-smoke/times.json --quick build/course/times.json \
        --machine "2026-11-21, 2-core x86 CPU, 1 torch thread"

A profile without a file is left out of the table. With --keep, a notebook missing from a profile's file keeps
the time the README already shows (re-measure one notebook without re-running the rest). The README block between
`<!-- times:start -->` and `<!-- times:end -->` is rewritten, then each notebook's `*Time: ...*` header line
(scripts/write_gpu_estimates.py: the `quick` time from this table, the `colab` estimate from flops.json).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from clead_lite.course.results import replace_marked_block  # noqa: E402

PROFILE_ROWS = ("smoke", "quick", "colab", "paper")


def fmt(seconds: float) -> str:
    """41 -> '41 s', 312 -> '5 min 12 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def read_times(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    rows = json.loads(Path(path).read_text())
    return {r["notebook"]: r for r in rows}


def parse_seconds(text: str) -> float | None:
    """'41 s' -> 41, '5 min 12 s' -> 312 (fmt's inverse); None for anything else ('-', 'failed')."""
    m = re.fullmatch(r"\**(?:(\d+) min )?(\d+) s\**", text.strip())
    return None if m is None else 60 * int(m.group(1) or 0) + int(m.group(2))


def kept_times(readme_text: str) -> dict[str, dict[str, dict]]:
    """The times the README's block shows now: {profile: {notebook file name: row}} (rows as in times.json)."""
    m = re.search(r"<!-- times:start -->\n(.*?)<!-- times:end -->", readme_text, re.S)
    if not m:
        return {}
    lines = [line for line in m.group(1).splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return {}
    profiles = [c.strip().strip("`") for c in lines[0].strip("|").split("|")[1:]]
    out: dict[str, dict[str, dict]] = {p: {} for p in profiles}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`")
        if name.startswith("**"):
            continue                     # the total
        for profile, cell in zip(profiles, cells[1:]):
            seconds = parse_seconds(cell)
            if seconds is not None:
                out[profile][f"{name}.ipynb"] = {"notebook": f"{name}.ipynb", "seconds": float(seconds), "status": "ok"}
    return out


def readme_block(names: list[str], times: dict[str, dict[str, dict]], machines: dict[str, str]) -> str:
    profiles = [p for p in PROFILE_ROWS if times.get(p)]
    head = "| notebook | " + " | ".join(f"`{p}`" for p in profiles) + " |"
    lines = [head, "|---" * (len(profiles) + 1) + "|"]
    total = {p: 0.0 for p in profiles}
    for name in names:
        cells = []
        for p in profiles:
            row = times[p].get(name)
            cells.append("-" if row is None else fmt(row["seconds"]) if row["status"] == "ok" else "failed")
            total[p] += row["seconds"] if row else 0.0
        lines.append(f"| `{Path(name).stem}` | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{fmt(total[p])}**" for p in profiles) + " |")
    lines += [""] + [f"- `{p}`: {machines.get(p, '')}" for p in profiles]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for profile in PROFILE_ROWS:
        p.add_argument(f"--{profile}", default=None, help=f"times.json of a `{profile}` course run")
        p.add_argument(f"--{profile}-machine", default="", help=f"where and how the `{profile}` run was measured")
    p.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--flops", default=str(ROOT / "benchmarks" / "results" / "flops.json"))
    p.add_argument("--keep", action="store_true", help="notebooks missing from a profile's file keep their times")
    args = p.parse_args(argv)
    measured = {prof: read_times(getattr(args, prof)) for prof in PROFILE_ROWS}   # this run's files, read once
    times = dict(measured)                # plus, with --keep, the figures the README already shows
    machines = {prof: getattr(args, f"{prof}_machine") for prof in PROFILE_ROWS}
    keep = frozenset(PROFILE_ROWS) if args.keep else frozenset()
    if keep:
        text = Path(args.readme).read_text()
        kept = kept_times(text)
        for prof in keep:
            times[prof] = {**kept.get(prof, {}), **times[prof]}
            old = re.search(rf"^- `{prof}`: (.*)$", text, re.M)
            if not machines[prof] and old:
                machines[prof] = old.group(1)        # the kept figures' machine line, as it was
    paths = sorted(Path(args.notebooks).glob("[0-9][0-9]_*.ipynb"))
    readme = Path(args.readme)
    block = readme_block([q.name for q in paths], times, machines)
    try:
        replace_marked_block(readme, "times", block)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f"updated {readme.name}:\n{block}")
    import write_gpu_estimates
    try:
        flops = json.loads(Path(args.flops).read_text())
    except (OSError, ValueError):
        flops = None
    changed = write_gpu_estimates.update_headers(args.notebooks, readme.read_text(), flops)
    if changed:
        print("updated the time line of", ", ".join(changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
