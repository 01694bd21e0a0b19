"""The measured results table: read the JSON rows that `benchmarks/run_results.py` (through
`python -m clead_lite evaluate --json`) writes, one file per (dataset, method, seed), and summarise them.

    frame = load_results()                 # pandas DataFrame, one row per file, accuracies in [0, 1]
    print(summary_markdown(frame))         # mean ± sample SD (ddof = 1) over seeds per (dataset, method)
    print(per_seed_markdown(frame))        # one line per file: the numbers behind the means
    print(differences_markdown(frame))     # each method - PGD-AT under APGD-CE + APGD-T: paired bootstrap CI
                                           # (and under the standard AutoAttack where it ran: McNemar)
    print(protocol_note(frame))            # which images and which epochs, in words

"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import holm, mcnemar_exact, paired_bootstrap, sample_sd, t_interval

METHOD_ORDER = ("standard", "pgd_at", "trades", "clead_online", "clead_faithful")
ACCURACY_COLUMNS = ("clean", "fgsm", "pgd", "autoattack", "transfer", "apgd", "square")
COLUMNS = ("dataset", "method", "seed", "eps", "n", "clean", "fgsm", "steps", "restarts", "pgd", "autoattack",
           "n_autoattack", "transfer", "transfer_source", "apgd", "square", "n_scored", "eps_curve", "apgd_correct",
           "autoattack_correct", "n_train", "n_val", "epochs", "best_epoch", "head_epochs", "sanity_passed",
           "sanity_failed", "sanity_details", "train_command", "evaluate_command", "test_images", "profile", "lr",
           "lam", "tau", "beta", "batch_size", "code_version", "train_images_sha256", "file")
# what the row records of its training run (benchmarks/run_results.py, rows written from 2026-12-06 on): the
# table column and its config key; older rows hold none of them ("not recorded")
SETTINGS = (("lr", "lr"), ("lam", "contrastive_weight"), ("tau", "temperature"), ("beta", "trades_beta"),
            ("batch_size", "batch_size"))


def results_dir() -> Path | None:
    """`benchmarks/results/` of the repository this package was imported from, if it exists (not pip-installed)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    return path if path.is_dir() else None


def _row(record: dict, file: str) -> dict:
    row = record.get("row")
    if not isinstance(row, dict) or "clean" not in row:
        raise ValueError(f"{file}: no evaluation row (expected a 'row' dict with 'clean', as written by "
                         f"`python -m clead_lite evaluate --json`)")
    sanity = record.get("sanity") or {}
    failed = [c.get("name") for c in sanity.get("checks", []) if c.get("passed") is False]  # None: n/a
    details = [f"`{c.get('name')}`: {c.get('detail')}" for c in sanity.get("checks", []) if c.get("passed") is False]
    out = {"dataset": record.get("dataset"), "method": record.get("method"), "seed": record.get("seed"),
           **{k: row.get(k) for k in ("eps", "n", "clean", "fgsm", "steps", "restarts", "pgd", "autoattack",
                                      "n_autoattack", "transfer", "transfer_source")},
           "sanity_passed": sanity.get("passed") if sanity else None,
           "sanity_failed": ", ".join(map(str, failed)) if sanity else None,
           "sanity_details": "; ".join(details) if sanity else None,
           "train_command": record.get("train_command"),
           "evaluate_command": record.get("evaluate_command") or record.get("command"),
           "test_images": record.get("test_images"), "profile": record.get("profile"), "file": file}
    scores = record.get("scores") or {}    # benchmarks/run_results.py: APGD-CE + APGD-T, Square, eps curve
    out.update(apgd=scores.get("apgd"), square=scores.get("square"), n_scored=scores.get("n_scored"),
               eps_curve=scores.get("eps_curve"), apgd_correct=scores.get("apgd_correct"),
               autoattack_correct=record.get("autoattack_correct"))   # --add-autoattack: per image, 0 / 1
    training = record.get("training") or {}
    out.update({k: training.get(k) for k in ("n_train", "n_val", "epochs", "best_epoch", "head_epochs")})
    trained = record.get("trained_with") or {}     # rows written from 2026-12-06 on; older rows: not recorded
    config = trained.get("config") if isinstance(trained.get("config"), dict) else {}
    out.update({col: config.get(key) for col, key in SETTINGS})
    out["code_version"] = trained.get("code_version")
    out["train_images_sha256"] = (trained.get("train_images") or {}).get("sha256")
    for k in ACCURACY_COLUMNS:   # NaN (not measured) stays NaN; JSON may hold null
        out[k] = math.nan if out[k] is None else float(out[k])
    return out


def load_results(directory: str | Path | None = None, pattern: str = "*_seed*.json") -> pd.DataFrame:
    """One row per results file in `directory` (default: `results_dir() / "table"`, where
    benchmarks/run_results.py writes), sorted by dataset, method, seed.

    Accuracies are fractions in [0, 1]; NaN where not measured. An empty frame when there are no files.
    """
    if directory is None:
        root = results_dir()
        if root is None or not (root / "table").is_dir():
            return pd.DataFrame(columns=COLUMNS)
        directory = root / "table"
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"results directory {str(directory)!r} does not exist")
    rows = [_row(json.loads(f.read_text()), f.name) for f in sorted(directory.glob(pattern))]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if len(frame):
        order = {m: i for i, m in enumerate(METHOD_ORDER)}
        frame = frame.sort_values(["dataset", "method", "seed"],
                                  key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)
    return frame


def _cell(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{100 * v[0]:.1f}"
    return f"{100 * v.mean():.1f} ± {100 * sample_sd(v):.1f}"      # the sample SD (ddof = 1) over seeds


def _eps_curve_cell(curves: pd.Series) -> str:
    """The mean PGD accuracy over seeds at each eps of the curve: 'eps: acc' pairs, in percent."""
    curves = [c for c in curves if isinstance(c, list) and c]
    if not curves:
        return "-"
    by_eps: dict[float, list[float]] = {}
    for c in curves:
        for point in c:
            by_eps.setdefault(round(float(point["eps"]), 4), []).append(float(point["accuracy"]))
    return " ".join(f"{e:g}: {100 * np.mean(v):.0f}" for e, v in sorted(by_eps.items()))


def _method_groups(frame: pd.DataFrame) -> list:
    """((dataset, method), rows) per group, by dataset, then in METHOD_ORDER (unknown methods last)."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(frame.groupby(["dataset", "method"], sort=False), key=lambda g: (g[0][0], order.get(g[0][1], 99)))


def summary_markdown(frame: pd.DataFrame) -> str:
    """A markdown table: mean ± sample SD (ddof = 1, over seeds) per (dataset, method), in percent.

    The AutoAttack cell names how many test images it ran on; APGD-CE + APGD-T and Square ran on n_scored
    images for every seed; the eps-curve cell gives the mean PGD accuracy at each eps; the sanity cell counts
    the seeds whose report passed.
    """
    lines = ["| dataset (eps) | method | seeds | clean | FGSM | PGD-k × restarts | PGD eps curve | APGD-CE+T (n) | "
             "Square (n) | AutoAttack (n) | transfer | sanity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if not len(frame):
        return "\n".join(lines)
    for (dataset, method), g in _method_groups(frame):
        n_aa = sorted({int(n) for n in g["n_autoattack"].dropna() if n})
        aa = _cell(g["autoattack"])
        aa_seeds = g.loc[g["autoattack"].notna(), "seed"]
        only = (f", seed {','.join(str(int(v)) for v in aa_seeds)} only" if 0 < len(aa_seeds) < len(g) else "")
        aa = f"{aa} ({'/'.join(map(str, n_aa))}{only})" if aa != "-" and n_aa else "-"
        pgd = _cell(g["pgd"])
        first = g.iloc[0]
        label = f"PGD-{int(first['steps'])}×{int(first['restarts'])}" if pd.notna(first["steps"]) else "PGD"
        sanity = g["sanity_passed"].dropna()
        failed = sorted({n for f in g["sanity_failed"].dropna() for n in str(f).split(", ") if n})
        notes = ([f"**failed: {', '.join(failed)}**"] if failed else []) + (
            [f"{len(g) - len(sanity)} seed(s) not run"] if 0 < len(sanity) < len(g) else [])
        sanity_cell = (f"{int(sanity.sum())}/{len(sanity)} passed" if len(sanity) else "not run") + (
            f" ({'; '.join(notes)})" if notes else "")
        seeds = ",".join(str(int(s)) for s in g["seed"].dropna())
        n_sc = sorted({int(n) for n in g["n_scored"].dropna() if n})
        scored = lambda col: (f"{_cell(g[col])} ({'/'.join(map(str, n_sc))})" if _cell(g[col]) != "-" else "-")
        lines.append(f"| {dataset} ({float(first['eps']):.3g}) | {method} | {seeds} | {_cell(g['clean'])} | "
                     f"{_cell(g['fgsm'])} | {pgd} ({label}) | {_eps_curve_cell(g['eps_curve'])} | {scored('apgd')} | "
                     f"{scored('square')} | {aa} | {_cell(g['transfer'])} | {sanity_cell} |")
    return "\n".join(lines)


def summary_frame(frame: pd.DataFrame, columns: tuple[str, ...] = ("clean", "pgd", "apgd", "autoattack")
                  ) -> pd.DataFrame:
    """A narrow DataFrame for a notebook (a projector fits it): one line per (dataset, method), the seeds, and
    'mean ± sample SD' in percent of each column in `columns` (a single value where one seed has it, '-' where
    none). Column names say the attack and, for AutoAttack, the number of images and the seeds it ran on."""
    names = {"clean": "clean", "fgsm": "FGSM", "pgd": "PGD", "apgd": "APGD-CE+T", "square": "Square",
             "autoattack": "AutoAttack", "transfer": "transfer"}
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; allowed: {', '.join(names)}")
    out = []
    for (dataset, method), g in _method_groups(frame):
        line = {"dataset": dataset, "method": method, "seeds": ",".join(str(int(s)) for s in g["seed"])}
        for c in columns:
            cell = _cell(g[c])
            if c == "autoattack" and cell != "-":
                seeds = ",".join(str(int(s)) for s in g.loc[g[c].notna(), "seed"])
                cell += f" (n {int(g['n_autoattack'].dropna().max())}, seed {seeds})"
            elif c in ("apgd", "square") and cell != "-":
                cell += f" (n {int(g['n_scored'].dropna().max())})"
            line[names[c]] = cell
        out.append(line)
    return pd.DataFrame(out, columns=["dataset", "method", "seeds"] + [names[c] for c in columns])


def _epochs_cell(r) -> str:
    """'kept / run' epochs; for the faithful pipeline the linear head's ('19 / 50 (head), encoder 4')."""
    if r["epochs"] is None or pd.isna(r["epochs"]):
        return "-"
    best = "-" if r["best_epoch"] is None or pd.isna(r["best_epoch"]) else str(int(r["best_epoch"]))
    head = r.get("head_epochs")
    if head is not None and not pd.isna(head):
        return f"{best} / {int(head)} (head), encoder {int(r['epochs'])}"
    return f"{best} / {int(r['epochs'])}"


def per_seed_markdown(frame: pd.DataFrame) -> str:
    """A markdown table with one line per results file (dataset, method, seed), in percent: the numbers behind
    summary_markdown's means, with the sanity checks that failed."""
    lines = ["| dataset | method | seed | clean | FGSM | PGD | AutoAttack (n) | transfer | sanity | APGD-CE+T | Square | "
             "best epoch / epochs | recorded settings (lr, λ, τ, β; code; training images) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "-" if pd.isna(v) else f"{100 * float(v):.1f}"
    for _, r in frame.iterrows():
        aa = "-" if pd.isna(r["autoattack"]) else f"{pct(r['autoattack'])} ({int(r['n_autoattack'])})"
        sanity = ("not run" if r["sanity_passed"] is None or pd.isna(r["sanity_passed"])
                  else "passed" if r["sanity_passed"] else f"failed: {r['sanity_failed']}")
        lines.append(f"| {r['dataset']} | {r['method']} | {int(r['seed'])} | {pct(r['clean'])} | {pct(r['fgsm'])} | "
                     f"{pct(r['pgd'])} | {aa} | {pct(r['transfer'])} | {sanity} | {pct(r['apgd'])} | "
                     f"{pct(r['square'])} | {_epochs_cell(r)} | {_settings_cell(r)} |")
    return "\n".join(lines)


def _settings_cell(r) -> str:
    """The row's recorded training settings ('lr 0.05, λ 0.5, τ 0.1, β 6; code 07e29bb; images eddaf7fdecf5'),
    'not recorded' for each part a row does not hold (every row written before 2026-12-06)."""
    known = lambda v: v is not None and not (isinstance(v, float) and math.isnan(v))
    values = [(name, r[col]) for name, col in (("lr", "lr"), ("λ", "lam"), ("τ", "tau"), ("β", "beta"))]
    settings = (", ".join(f"{n} {float(v):g}" for n, v in values if known(v))
                if any(known(v) for _, v in values) else "settings not recorded")
    code = r["code_version"]
    code = f"code {code[:7]}{'-dirty' if code.endswith('-dirty') else ''}" if isinstance(code, str) and code else \
        "code not recorded"
    images = r["train_images_sha256"]
    images = f"images {images[:12]}" if isinstance(images, str) and images else "images not recorded"
    if (settings, code, images) == ("settings not recorded", "code not recorded", "images not recorded"):
        return "not recorded"
    return f"{settings}; {code}; {images}"


def sanity_note(frame: pd.DataFrame) -> str:
    """Which rows ran the sanity-check report, and every check that failed, with its detail (values from the
    rows). A failed check is shown where the table is shown, not only in the per-seed table."""
    ran = frame[frame["sanity_passed"].notna()] if len(frame) else frame
    if not len(ran):
        return "Sanity report: not run on any row."
    names = ", ".join(f"{r.dataset} {r.method} seed {int(r.seed)}" for r in ran.itertuples())
    failed = ran[ran["sanity_passed"] == False]   # noqa: E712 (an object column of bools)
    text = f"Sanity report (`evaluate --sanity`): run on {len(ran)} of {len(frame)} rows ({names})."
    if not len(failed):
        return text + " Every check passed."
    for r in failed.itertuples():
        text += (f" **{r.dataset} {r.method} seed {int(r.seed)} fails** {r.sanity_details}; its other checks "
                 "passed or did not apply.")
    ok = ran[ran["sanity_passed"] == True]        # noqa: E712
    if len(ok):
        text += " " + ", ".join(f"{r.dataset} {r.method} seed {int(r.seed)}" for r in ok.itertuples()) + \
            " passed every check."
    return text


def _compared_methods(rows: pd.DataFrame, baseline: str) -> list[str]:
    """The methods of `rows` other than the baseline, in METHOD_ORDER, unknown ones last (sorted)."""
    return [m for m in METHOD_ORDER if m != baseline] + sorted(set(rows["method"]) - set(METHOD_ORDER))


def paired_differences(frame: pd.DataFrame, baseline: str = "pgd_at", n_boot: int = 10_000,
                       level: float = 0.95) -> pd.DataFrame:
    """Each method's APGD-CE + APGD-T accuracy minus the baseline's, per dataset, paired over the seeds both
    have and the images both were scored on: the observed mean difference, a percentile bootstrap interval
    (seeds and images resampled together, `stats.paired_bootstrap`), the t-interval over seeds
    (`stats.t_interval`: the seeds as the only sample; NaN with one seed) and McNemar's exact p per seed
    (unadjusted; `differences_markdown` applies Holm over the tests of its table).

    Rows without per-image correctness (`apgd_correct`) are left out. Differences are fractions in [-1, 1].
    """
    cols = ["dataset", "method", "baseline", "seeds", "n_images", "diff", "low", "high", "t_low", "t_high", "level",
            "mcnemar"]
    out = []
    has = frame[frame["apgd_correct"].map(lambda v: isinstance(v, list) and len(v) > 0)] if len(frame) else frame
    for dataset, d in (has.groupby("dataset") if len(has) else []):
        base = {int(r.seed): r.apgd_correct for r in d[d["method"] == baseline].itertuples()}
        for method in _compared_methods(d, baseline):
            rows = {int(r.seed): r.apgd_correct for r in d[d["method"] == method].itertuples()}
            seeds = sorted(s for s in rows if s in base and len(rows[s]) == len(base[s]))
            if not seeds:
                continue
            a = np.array([rows[s] for s in seeds], dtype=float)
            b = np.array([base[s] for s in seeds], dtype=float)
            ci = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=0)
            tests = [mcnemar_exact(a[i], b[i]) for i in range(len(seeds))]
            t = t_interval(a.mean(axis=1) - b.mean(axis=1), level=level)
            out.append({"dataset": dataset, "method": method, "baseline": baseline, "seeds": seeds,
                        "n_images": a.shape[1], "diff": ci.mean, "low": ci.low, "high": ci.high, "t_low": t.low,
                        "t_high": t.high, "level": level,
                        "mcnemar": [(s, t.a_only, t.b_only, t.p) for s, t in zip(seeds, tests)]})
    return pd.DataFrame(out, columns=cols)


def differences_markdown(frame: pd.DataFrame, baseline: str = "pgd_at") -> str:
    """`paired_differences` as a markdown table, in accuracy points; below it `autoattack_differences` where
    rows hold the standard AutoAttack's per-image outcomes."""
    diffs = paired_differences(frame, baseline)
    n_tests = sum(len(r.mcnemar) for r in diffs.itertuples())
    adjusted = iter(holm([t[3] for r in diffs.itertuples() for t in r.mcnemar]))
    if len(diffs):
        lines = [f"| dataset | method − {baseline} | seeds | images per seed | APGD-CE+T difference (points) | "
                 f"95 % paired bootstrap CI (seeds and images) | 95 % t-interval over seeds | McNemar per seed (only "
                 f"method right / only {baseline} right, exact p, Holm-adjusted p over the table's {n_tests} tests) |",
                 "|---|---|---|---|---|---|---|---|"]
    else:
        lines = [f"Paired differences from {baseline}: none yet (they need per-image APGD-CE+T outcomes on the same "
                 "images and seeds for both methods; `benchmarks/run_results.py` records them for new rows)."]
    t_cell = lambda r: "-" if r.t_low != r.t_low else f"[{100 * r.t_low:+.1f}, {100 * r.t_high:+.1f}]"
    for r in diffs.itertuples():
        tests = "; ".join(f"seed {s}: {x}/{y}, p = {p:.2g} (Holm {next(adjusted):.2g})" for s, x, y, p in r.mcnemar)
        lines.append(f"| {r.dataset} | {r.method} | {','.join(map(str, r.seeds))} | {r.n_images} | "
                     f"{100 * r.diff:+.1f} | [{100 * r.low:+.1f}, {100 * r.high:+.1f}] | {t_cell(r)} | {tests} |")
    aa = autoattack_differences(frame, baseline)
    if len(aa):
        aa_holm = holm(aa["p"].tolist())
        lines += ["", "The standard AutoAttack, paired on the same images (one seed: images are the only sample):", "",
                  f"| dataset | method − {baseline} | seed | images | AutoAttack difference (points) | "
                  f"only method right / only {baseline} right | McNemar exact p | Holm over the table's {len(aa)} tests |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.dataset} | {r.method} | {r.seed} | {r.n_images} | {100 * r.diff:+.1f} | "
                  f"{r.a_only}/{r.b_only} | {r.p:.2g} | {q:.2g} |" for r, q in zip(aa.itertuples(), aa_holm)]
    check = custom_vs_standard(frame)
    if len(check):
        most = int(check["only_standard"].max())
        same = int(((check["only_standard"] == 0) & (check["only_custom"] == 0)).sum())
        lines += ["", "APGD-CE + APGD-T (the custom version every seed gets) against the standard AutoAttack, on the "
                  "same images (the first ones, where both ran). The standard version runs the same seeded APGD-CE "
                  f"and APGD-T first, then FAB-T and Square: {same} of these {len(check)} rows have identical "
                  f"outcomes, and FAB-T and Square add at most {most} image{'s' if most != 1 else ''} in a row. This "
                  "bounds what the two other attacks add; it does not show that APGD itself is strong.", "",
                  "| dataset | method | seed | images | APGD-CE+T | standard AutoAttack | difference (points) | "
                  "images broken only by the standard / only by the custom version |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.dataset} | {r.method} | {r.seed} | {r.n_images} | {100 * r.custom:.1f} | "
                  f"{100 * r.standard:.1f} | {100 * (r.standard - r.custom):+.1f} | {r.only_standard} / {r.only_custom} |"
                  for r in check.itertuples()]
    return "\n".join(lines)


def custom_vs_standard(frame: pd.DataFrame) -> pd.DataFrame:
    """Is the custom AutoAttack (APGD-CE + APGD-T, on the first n_scored images of every seed) within a point of
    the standard version? Per row holding both per-image outcomes, where the standard version ran on all the
    row's images in order (so its first n_scored outcomes are the same images): both accuracies (fractions)
    and the images only the standard version broke (FAB-T and Square finding more, or a luckier restart)."""
    cols = ["dataset", "method", "seed", "n_images", "custom", "standard", "only_standard", "only_custom"]
    out = []
    for r in frame.itertuples() if len(frame) else []:
        aa, apgd = r.autoattack_correct, r.apgd_correct
        if not (isinstance(aa, list) and isinstance(apgd, list) and apgd and len(aa) >= len(apgd)
                and r.n_autoattack == r.n):
            continue
        a_, c_ = np.asarray(aa[:len(apgd)], bool), np.asarray(apgd, bool)
        out.append({"dataset": r.dataset, "method": r.method, "seed": int(r.seed), "n_images": len(c_),
                    "custom": float(c_.mean()), "standard": float(a_.mean()),
                    "only_standard": int((c_ & ~a_).sum()), "only_custom": int((a_ & ~c_).sum())})
    return pd.DataFrame(out, columns=cols)


def autoattack_differences(frame: pd.DataFrame, baseline: str = "pgd_at") -> pd.DataFrame:
    """Each method's standard-AutoAttack accuracy minus the baseline's, per dataset and seed, on the seeds where
    both rows hold per-image outcomes (`autoattack_correct`) of the same number of images (the same images:
    `evaluate`'s seeded subset, or all of them), with McNemar's exact test. Differences are fractions."""
    cols = ["dataset", "method", "baseline", "seed", "n_images", "diff", "a_only", "b_only", "p"]
    out = []
    ok = lambda v: isinstance(v, list) and len(v) > 0
    has = frame[frame["autoattack_correct"].map(ok)] if len(frame) else frame
    for dataset, d in (has.groupby("dataset") if len(has) else []):
        base = {int(r.seed): (r.autoattack_correct, r.n_autoattack) for r in d[d["method"] == baseline].itertuples()}
        for method in _compared_methods(d, baseline):
            for r in d[d["method"] == method].itertuples():
                b = base.get(int(r.seed))
                if b is None or len(b[0]) != len(r.autoattack_correct) or b[1] != r.n_autoattack:
                    continue
                a_, b_ = np.asarray(r.autoattack_correct, float), np.asarray(b[0], float)
                t = mcnemar_exact(a_, b_)
                out.append({"dataset": dataset, "method": method, "baseline": baseline, "seed": int(r.seed),
                            "n_images": len(a_), "diff": float(a_.mean() - b_.mean()), "a_only": t.a_only,
                            "b_only": t.b_only, "p": t.p})
    return pd.DataFrame(out, columns=cols)


def protocol_note(frame: pd.DataFrame, provenance: bool = False) -> str:
    """Which images and which epochs the table's numbers come from, in words (values read from the rows); with
    `provenance` (the README; not a notebook) also which rows record their settings and code version."""
    if not len(frame):
        return "No rows."
    vals = lambda col: "/".join(str(int(v)) for v in sorted({int(v) for v in frame[col].dropna() if v}))
    seeds_with = lambda col: ",".join(str(int(v)) for v in sorted({int(s) for s in frame.loc[frame[col].notna(), "seed"]}))
    first = frame["test_images"].map(lambda t: isinstance(t, str) and t.startswith("the first")).all()
    parts = [f"Test images: the same {vals('n') or '?'} for every row, "
             + ("the first ones of each test split (`data.test_images`)." if first else
                "a random subset of each test split drawn with seed 0 (not the first ones).")]
    if frame["n_scored"].notna().any():
        square = (f"; Square alone on the same images for seed(s) {seeds_with('square')}"
                  if frame["square"].notna().any() else "")
        parts.append(f"APGD-CE + APGD-T (AutoAttack's custom version) ran on the first {vals('n_scored')} of them for "
                     f"every seed, and the PGD eps curve on the same images{square}.")
    if frame["n_autoattack"].notna().any() and frame["autoattack"].notna().any():
        n_aa, n = vals("n_autoattack"), vals("n")
        subset = "all of them" if n_aa == n else f"a random {n_aa} of them (drawn with seed 0)"
        parts.append(f"The standard AutoAttack ran on {subset}, for seed(s) {seeds_with('autoattack')}.")
    if frame["n_train"].notna().any():
        parts.append(f"Training: {vals('n_train')} training images drawn at random with the row's seed, of which "
                     f"{vals('n_val')} are held out and never trained on; epochs {vals('epochs')}{_steps_note(frame)}; "
                     "the weights kept are those of the best held-out epoch (PGD accuracy for PGD-AT, TRADES and "
                     "C-LEAD online; clean accuracy for standard training and for the faithful pipeline's linear head).")
    if provenance:
        recorded = int(frame["code_version"].map(lambda v: isinstance(v, str) and bool(v)).sum())
        parts.append("The learning rate, lambda, tau, beta, the code version and a fingerprint of the training images: "
                     + ("not recorded in these rows (written before the rows recorded them; "
                        "`benchmarks/run_results.py` records them in new rows)." if recorded == 0 else
                        f"recorded by {recorded} of the {len(frame)} rows (the others: not recorded)."))
    parts.append("± is the sample SD (ddof = 1) over seeds.")
    return " ".join(parts)


def _steps_note(frame: pd.DataFrame) -> str:
    """' (296 optimizer steps: ...)': the epochs in steps of one batch, for comparing with the budget curve.
    The batch size is the row's where recorded, else its profile's (said so)."""
    from .budget import optimizer_steps
    from .profiles import get_profile, train_config
    steps, assumed = set(), False
    for r in frame.itertuples():
        if r.epochs is None or pd.isna(r.epochs) or r.n_train is None or pd.isna(r.n_train) or r.method == "clead_faithful":
            continue            # the faithful pipeline's stages count their own steps
        batch = r.batch_size
        if batch is None or pd.isna(batch):
            try:
                batch = train_config(get_profile(r.profile or "quick", dataset=r.dataset), r.method).batch_size
            except (KeyError, ValueError):
                continue
            assumed = True
        steps.add((optimizer_steps(int(r.n_train) - int(r.n_val or 0), int(batch), int(r.epochs)), int(batch)))
    if not steps:
        return ""
    said = "/".join(f"{s:,} optimizer steps of {b} images" for s, b in sorted(steps))
    return f" ({said}{'; the batch size is the profile' + chr(39) + 's, not recorded in the rows' if assumed else ''})"


def readme_table(frame: pd.DataFrame) -> str:
    """The README's `<!-- results -->` block: the summary, the sanity report's failures, the paired differences
    and the protocol note."""
    return "\n\n".join([summary_markdown(frame), sanity_note(frame), differences_markdown(frame),
                        protocol_note(frame, provenance=True)])


def code_version(root: str | Path | None = None) -> str:
    """The git commit the code at `root` (default: this repository) is checked out at, '-dirty' appended when
    tracked files have changes; 'unknown' outside a git checkout. Rows and budget points record it."""
    import subprocess
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def replace_marked_block(path: str | Path, marker: str, content: str) -> None:
    """Replace the text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` lines of the file `path`
    (e.g. a README table that a script regenerates). Exactly one such block must exist."""
    import re
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    new, n = re.subn(f"({re.escape(start)}\n).*?({re.escape(end)})", lambda m: m[1] + content + "\n" + m[2], text,
                     flags=re.S)    # the block may be empty: start and end on consecutive lines
    if n != 1:
        raise ValueError(f"{path}: expected one '{start}' ... '{end}' block, found {n}")
    path.write_text(new)


__all__ = ["load_results", "per_seed_markdown", "summary_frame", "readme_table", "replace_marked_block", "results_dir", "summary_markdown",
           "paired_differences", "autoattack_differences", "custom_vs_standard", "differences_markdown", "protocol_note",
           "sanity_note", "code_version", "ACCURACY_COLUMNS", "METHOD_ORDER", "SETTINGS"]
