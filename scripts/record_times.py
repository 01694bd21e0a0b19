"""Write measured per-notebook run times into the notebooks' headers and the README's time table.

The times come from the `times.json` files that `python -m clead_lite course --profile P --out DIR` writes;
nothing is typed in by hand.

    python scripts/record_times.py --smoke build/course-smoke/times.json --quick build/course/times.json \
        --machine "2026-11-21, 2-core x86 CPU, 1 torch thread"

A profile without a file keeps "not measured". Only the `time` column of each header table (the `| `smoke` |`,
`| `quick` (CPU) |`, `| `full` (GPU) |` rows) and the README block between `<!-- times:start -->` and
`<!-- times:end -->` are rewritten.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from clead_lite.results import replace_marked_block

ROOT = Path(__file__).resolve().parents[1]
PROFILE_ROWS = {"smoke": "| `smoke` |", "quick": "| `quick` (CPU) |", "full": "| `full` (GPU) |"}


def fmt(seconds: float) -> str:
    """41 -> '41 s', 312 -> '5 min 12 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def read_times(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    rows = json.loads(Path(path).read_text())
    return {r["notebook"]: r for r in rows}


def cell_text(row: dict | None, machine: str) -> str:
    if row is None:
        return "not measured"
    if row["status"] != "ok":
        return f"failed ({row['status'][:40]})"
    return f"{fmt(row['seconds'])} ({machine})"


def update_header(source: str, times: dict[str, dict | None], machines: dict[str, str]) -> str:
    lines = source.split("\n")
    for i, line in enumerate(lines):
        for profile, prefix in PROFILE_ROWS.items():
            if line.startswith(prefix):
                cells = line.split("|")          # ['', profile, what, time, '']
                cells[-2] = f" {cell_text(times.get(profile), machines.get(profile, ''))} "
                lines[i] = "|".join(cells)
    return "\n".join(lines)


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
    args = p.parse_args(argv)
    times = {prof: read_times(getattr(args, prof)) for prof in PROFILE_ROWS}
    machines = {prof: getattr(args, f"{prof}_machine") for prof in PROFILE_ROWS}
    paths = sorted(Path(args.notebooks).glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        nb = json.loads(path.read_text())
        first = nb["cells"][0]
        source = "".join(first["source"])
        new = update_header(source, {prof: t.get(path.name) for prof, t in times.items()}, machines)
        if new != source:
            first["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            print("updated", path.name)
    readme = Path(args.readme)
    block = readme_block([q.name for q in paths], times, machines)
    try:
        replace_marked_block(readme, "times", block)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f"updated {readme.name}:\n{block}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
