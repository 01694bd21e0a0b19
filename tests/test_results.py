"""The results table reader: JSON rows written by `evaluate --json` -> DataFrame -> markdown summary."""
import json
import math

import pytest

from clead_lite.course.results import load_results, per_seed_markdown, summary_frame, summary_markdown


def _write(path, dataset, method, seed, clean, pgd, aa=None, n_aa=0, sanity_ok=True, sanity=True):
    row = {"model": method, "eps": 0.3, "n": 1000, "clean": clean, "fgsm": (clean + pgd) / 2, "steps": 20,
           "restarts": 2, "pgd": pgd, "autoattack": aa, "n_autoattack": n_aa, "transfer": None,
           "transfer_source": None}
    checks = [{"name": "within_ball", "passed": True, "detail": ""},
              {"name": "whitebox_le_transfer", "passed": None, "detail": "no source model given"},
              {"name": "pgd_below_fgsm", "passed": sanity_ok, "detail": ""}]
    record = {"dataset": dataset, "method": method, "seed": seed, "row": row,
              "sanity": {"passed": sanity_ok, "settings": {}, "checks": checks} if sanity else None,
              "train_command": f"python -m clead_lite train --method {method} --seed {seed}"}
    (path / f"{dataset}_{method}_seed{seed}.json").write_text(json.dumps(record))


def test_load_and_summarise(tmp_path):
    _write(tmp_path, "mnist", "pgd_at", 0, 0.98, 0.90, aa=0.88, n_aa=1000)
    _write(tmp_path, "mnist", "pgd_at", 1, 0.96, 0.86, aa=0.84, n_aa=1000, sanity_ok=False)
    _write(tmp_path, "mnist", "standard", 0, 0.99, 0.0)
    _write(tmp_path, "fashion-mnist", "standard", 0, 0.90, 0.01, aa=0.005, n_aa=200)
    _write(tmp_path, "fashion-mnist", "standard", 1, 0.92, 0.03, sanity=False)
    (tmp_path / "bench_attacks.json").write_text("{}")          # not a results row: ignored by the pattern
    frame = load_results(tmp_path)
    assert list(frame["dataset"]) == ["fashion-mnist"] * 2 + ["mnist"] * 3
    assert list(frame["method"])[2:] == ["standard", "pgd_at", "pgd_at"]   # the table's method order, then seed
    frame = frame[frame["dataset"] == "mnist"].reset_index(drop=True)
    assert math.isnan(frame.loc[0, "autoattack"]) and math.isnan(frame.loc[0, "transfer"])
    assert frame.loc[2, "sanity_failed"] == "pgd_below_fgsm"
    fashion = next(line for line in summary_markdown(load_results(tmp_path)).splitlines() if "fashion" in line)
    assert "| 0,1 | 91.0 ± 1.4 |" in fashion and "1/1 passed (1 seed(s) not run)" in fashion
    assert "| 0.5 (200, seed 0 only) |" in fashion
    table = summary_markdown(frame).splitlines()
    assert len(table) == 2 + 2
    pgd_row = next(line for line in table if "| pgd_at |" in line)
    # mean ± sample SD (ddof = 1) over the two seeds, in percent: 0.98, 0.96 -> 97.0 ± 1.4
    assert "| 0,1 | 97.0 ± 1.4 |" in pgd_row and "88.0 ± 2.8 (PGD-20×2)" in pgd_row
    assert "86.0 ± 2.8 (1000)" in pgd_row and "1/2 passed" in pgd_row
    std_row = next(line for line in table if "| standard |" in line)
    assert "| 99.0 |" in std_row and "| - |" in std_row   # one seed: no spread; AutoAttack not measured: '-'


def test_summary_frame_is_narrow_and_says_where_autoattack_ran(tmp_path):
    _write(tmp_path, "mnist", "pgd_at", 0, 0.98, 0.90, aa=0.88, n_aa=1000)
    _write(tmp_path, "mnist", "pgd_at", 1, 0.96, 0.86)
    _write(tmp_path, "mnist", "standard", 0, 0.99, 0.0)
    table = summary_frame(load_results(tmp_path))
    assert list(table.columns) == ["dataset", "method", "seeds", "clean", "PGD", "APGD-CE+T", "AutoAttack"]
    assert list(table["method"]) == ["standard", "pgd_at"]
    at = table.set_index("method").loc["pgd_at"]
    # mean ± sample SD (ddof = 1): 0.98, 0.96 -> 97.0 ± 1.4; AutoAttack on one seed: its value, n and seed
    assert at["clean"] == "97.0 ± 1.4" and at["PGD"] == "88.0 ± 2.8" and at["APGD-CE+T"] == "-"
    assert at["AutoAttack"] == "88.0 (n 1000, seed 0)" and at["seeds"] == "0,1"
    with pytest.raises(ValueError, match="unknown column.*allowed"):
        summary_frame(load_results(tmp_path), columns=("clean", "robust"))


def test_per_seed_table_lists_every_file(tmp_path):
    _write(tmp_path, "mnist", "pgd_at", 0, 0.98, 0.90, aa=0.88, n_aa=1000)
    _write(tmp_path, "mnist", "pgd_at", 1, 0.96, 0.86, sanity_ok=False)
    _write(tmp_path, "mnist", "standard", 0, 0.99, 0.0, sanity=False)
    lines = per_seed_markdown(load_results(tmp_path)).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2] == "| mnist | standard | 0 | 99.0 | 49.5 | 0.0 | - | - | not run | - | - | - | not recorded |"
    assert lines[3] == "| mnist | pgd_at | 0 | 98.0 | 94.0 | 90.0 | 88.0 (1000) | - | passed | - | - | - | not recorded |"
    assert lines[4] == ("| mnist | pgd_at | 1 | 96.0 | 91.0 | 86.0 | - | - | failed: pgd_below_fgsm | - | - | - | "
                        "not recorded |")
    # the faithful pipeline's kept epoch is its linear head's, out of the head's epochs
    record = json.loads((tmp_path / "mnist_pgd_at_seed1.json").read_text())
    record.update(method="clead_faithful", training={"n_train": 100, "n_val": 10, "epochs": 4, "best_epoch": 19,
                                                     "head_epochs": 50})
    (tmp_path / "mnist_clead_faithful_seed1.json").write_text(json.dumps(record))
    faithful = [line for line in per_seed_markdown(load_results(tmp_path)).splitlines() if "clead_faithful" in line]
    assert faithful[0].endswith("| 19 / 50 (head), encoder 4 | not recorded |")


def test_empty_and_bad_input(tmp_path):
    assert len(load_results(tmp_path)) == 0
    assert summary_markdown(load_results(tmp_path)).count("\n") == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "missing")
    (tmp_path / "x_seed0.json").write_text(json.dumps({"dataset": "mnist"}))
    with pytest.raises(ValueError, match="x_seed0.json: no evaluation row"):
        load_results(tmp_path)


def test_replace_marked_block_fills_an_empty_block_and_replaces_it(tmp_path):
    from clead_lite.course.results import replace_marked_block
    page = tmp_path / "RESULTS.md"
    page.write_text("intro\n<!-- t:start -->\n<!-- t:end -->\nafter\n")
    replace_marked_block(page, "t", "| a |\n| b |")
    assert page.read_text() == "intro\n<!-- t:start -->\n| a |\n| b |\n<!-- t:end -->\nafter\n"
    replace_marked_block(page, "t", "new")
    assert page.read_text() == "intro\n<!-- t:start -->\nnew\n<!-- t:end -->\nafter\n"
    with pytest.raises(ValueError, match="expected one '<!-- other:start -->'"):
        replace_marked_block(page, "other", "x")


def test_autoattack_difference_is_paired_per_image(tmp_path):
    """The standard AutoAttack's per-image outcomes (seed 0) give each method's difference from PGD-AT and
    McNemar's exact p, checked here against the closed form; rows on other images are not paired."""
    from math import comb

    from clead_lite.course.results import autoattack_differences, differences_markdown
    at = [1] * 60 + [0] * 40                                # 60 % under AutoAttack
    online = [1] * 55 + [0] * 5 + [1] * 12 + [0] * 28       # 67 %: 5 images lost, 12 gained
    for method, correct in (("pgd_at", at), ("clead_online", online), ("trades", at[:50])):
        _write(tmp_path, "mnist", method, 0, 0.98, 0.7, aa=sum(correct) / len(correct), n_aa=len(correct))
        path = tmp_path / f"mnist_{method}_seed0.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "autoattack_correct": correct}))
    diffs = autoattack_differences(load_results(tmp_path))
    assert list(diffs["method"]) == ["clead_online"]        # trades scored 50 images, not the same 100: left out
    r = diffs.iloc[0]
    assert (r["n_images"], r["a_only"], r["b_only"]) == (100, 12, 5)
    assert r["diff"] == pytest.approx(0.67 - 0.60)
    p = min(1.0, 2 * sum(comb(17, k) for k in range(0, 6)) / 2 ** 17)   # two-sided exact binomial, 5 of 17
    assert r["p"] == pytest.approx(p)
    table = differences_markdown(load_results(tmp_path))
    assert f"| mnist | clead_online | 0 | 100 | +7.0 | 12/5 | {p:.2g} |" in table


def test_custom_against_standard_autoattack_on_the_same_images(tmp_path):
    """APGD-CE+T ran on the first 500 images, the standard AutoAttack on all 1,000 in order: the check pairs
    the first 500 of the latter with the former; a standard run on a random subset is not paired."""
    from clead_lite.course.results import custom_vs_standard, differences_markdown
    apgd = [1] * 300 + [0] * 200                                     # 60.0 % under APGD-CE+T
    aa = [1] * 290 + [0] * 10 + [0] * 199 + [1] + [1] * 400 + [0] * 100   # 10 more broken, 1 fewer, then 500 more
    for method, n_aa in (("pgd_at", 1000), ("clead_online", 200)):
        _write(tmp_path, "mnist", method, 0, 0.98, 0.7, aa=0.5, n_aa=n_aa)
        path = tmp_path / f"mnist_{method}_seed0.json"
        record = json.loads(path.read_text())
        record["scores"] = {"apgd": 0.6, "n_scored": 500, "apgd_correct": apgd}
        path.write_text(json.dumps({**record, "autoattack_correct": aa[:n_aa]}))
    check = custom_vs_standard(load_results(tmp_path))
    assert list(check["method"]) == ["pgd_at"]          # online's 200 AutoAttack images are a random subset
    r = check.iloc[0]
    assert (r["n_images"], r["only_standard"], r["only_custom"]) == (500, 10, 1)
    assert (r["custom"], r["standard"]) == (pytest.approx(0.600), pytest.approx(0.582))
    assert "| mnist | pgd_at | 0 | 500 | 60.0 | 58.2 | -1.8 | 10 / 1 |" in differences_markdown(load_results(tmp_path))


def test_new_rows_show_their_settings_old_rows_say_not_recorded(tmp_path):
    """A row written by run_results.py since 2026-12-06 holds the training config, the code version and the
    training images' fingerprint: the per-seed table shows lr, lambda, tau, beta, the commit and the sha256;
    an old row says 'not recorded'; the protocol note counts them; steps use the recorded batch size."""
    from clead_lite.course.results import protocol_note
    _write(tmp_path, "mnist", "pgd_at", 0, 0.98, 0.90)
    _write(tmp_path, "mnist", "clead_online", 0, 0.98, 0.91)
    path = tmp_path / "mnist_clead_online_seed0.json"
    record = json.loads(path.read_text())
    record["training"] = {"n_train": 1000, "n_val": 100, "epochs": 3, "best_epoch": 3}
    record["trained_with"] = {"config": {"lr": 0.02, "contrastive_weight": 2.0, "temperature": 0.2,
                                         "trades_beta": 6.0, "batch_size": 64},
                              "code_version": "0123456789abcdef-dirty",
                              "train_images": {"dataset": "mnist", "n": 1000, "sha256": "feedbeef" * 8}}
    path.write_text(json.dumps(record))
    frame = load_results(tmp_path)
    lines = {line.split(" | ")[1]: line for line in per_seed_markdown(frame).splitlines()[2:]}
    assert lines["clead_online"].endswith("| lr 0.02, λ 2, τ 0.2, β 6; code 0123456-dirty; images feedbeeffeed |")
    assert lines["pgd_at"].endswith("| not recorded |")
    note = protocol_note(frame, provenance=True)
    assert "recorded by 1 of the 2 rows (the others: not recorded)" in note
    assert protocol_note(frame) == note.replace(" The learning rate, lambda, tau, beta, the code version and a fingerprint "
                                                "of the training images: recorded by 1 of the 2 rows (the others: not "
                                                "recorded).", "")       # a notebook's note: no provenance
    assert "epochs 3 (42 optimizer steps of 64 images)" in note        # 3 x (1000 - 100) // 64


def test_a_failed_sanity_check_is_shown_beside_the_table(tmp_path):
    """The summary's sanity cell names the failed check and the README block says what it measured."""
    from clead_lite.course.results import readme_table, sanity_note
    _write(tmp_path, "fashion-mnist", "standard", 0, 0.87, 0.148, sanity_ok=False)
    _write(tmp_path, "fashion-mnist", "standard", 1, 0.85, 0.125, sanity=False)
    _write(tmp_path, "mnist", "standard", 0, 0.98, 0.0)
    frame = load_results(tmp_path)
    fashion = next(line for line in summary_markdown(frame).splitlines() if "fashion" in line)
    assert fashion.endswith("| 0/1 passed (**failed: pgd_below_fgsm**; 1 seed(s) not run) |")
    note = sanity_note(frame)
    assert note.startswith("Sanity report (`evaluate --sanity`): run on 2 of 3 rows")
    assert "**fashion-mnist standard seed 0 fails** `pgd_below_fgsm`" in note
    assert "mnist standard seed 0 passed every check." in note and note in readme_table(frame)


def test_custom_against_standard_says_what_it_bounds(tmp_path):
    """The check's text counts identical rows and the most images the standard version added, from the rows."""
    from clead_lite.course.results import differences_markdown
    apgd = [1] * 30 + [0] * 20
    for method, aa in (("pgd_at", apgd), ("trades", apgd[:27] + [0, 0, 0] + apgd[30:])):
        _write(tmp_path, "mnist", method, 0, 0.98, 0.7, aa=sum(aa) / 50, n_aa=50)
        path = tmp_path / f"mnist_{method}_seed0.json"
        record = json.loads(path.read_text())
        record["row"]["n"] = 50
        record["scores"] = {"apgd": 0.6, "n_scored": 50, "apgd_correct": apgd}
        path.write_text(json.dumps({**record, "autoattack_correct": aa}))
    table = differences_markdown(load_results(tmp_path))
    assert "1 of these 2 rows have identical outcomes, and FAB-T and Square add at most 3 images in a row" in table
    assert "it does not show that APGD itself is strong" in table
