#!/usr/bin/env python
"""Mutation check: deliberate bugs in the package, each of which the tests of its area must catch.

    python scripts/mutants.py --fast        # the CI subset (.ci/run runs it after the test suite)
    python scripts/mutants.py --all         # every mutant
    python scripts/mutants.py --list        # the table, no run
    python scripts/mutants.py --only restart-never-kept lambda0-general-path

Each mutant is (id, file, the exact original snippet, its replacement, the tests of its area, in --fast?).
The script copies clead_lite/, tests/ and pyproject.toml (not .venv, .git, notebooks or data) to a temporary
folder, runs the union of the selected tests there once unmutated (they must pass, and this also fills the
tests' trained-model cache), then, one mutant at a time, writes the replacement into the copy, runs only
that mutant's tests (`pytest -x`, PYTHONPATH = the copy) and restores the file. A mutant is caught when its
tests fail (pytest exit code 1; a timeout counts as caught). It prints each result, the score (caught /
total) and the time; the exit code is 0 only if every mutant was caught.

A snippet that no longer occurs exactly once in its file (the code changed) stops the script before
anything runs, naming every such mutant: re-target the snippet in MUTANTS below.

Measured here (2 CPU cores shared with other jobs, one torch thread per process; both times include the
unmutated baseline run):
- --all (45 mutants since issue 19: the attack's and the evaluation's mode restore are one): see the closing
  note of issue 19 for the latest run. Earlier, --all (47 mutants): 630 s = 10.5 min on 2026-12-02, 47/47 caught, at nice 10 beside two single-thread
  training jobs (load average about 3), warm tests' model cache. Earlier, 45 mutants with a cold cache at load
  average 8-13: 2,200 s, of which 708 s for the baseline that also trained the cached robust SmallCNN.
- --fast (7 mutants): 116 s at load average 5 (CI: after the suite, whose run has filled the cache).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("clead_lite", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str              # relative to the repository root
    original: str          # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest node ids (file or file::test)
    fast: bool = False


T_ATT = "tests/test_attacks.py::"
T_LOSS = "tests/test_losses.py::"
T_EFF = "tests/test_effects.py::"
T_BN = "tests/test_batchnorm.py::"
T_TR = "tests/test_training.py::"
T_EV = "tests/test_evaluation.py::"
T_CK = "tests/test_checkpoints.py::"
T_DATA = "tests/test_data_models_profiles.py::"
T_CLI = "tests/test_cli_flags.py::"
ATT, LOSS, TRAIN, EVAL = "clead_lite/attacks.py", "clead_lite/losses.py", "clead_lite/training.py", "clead_lite/evaluation.py"
RUNS = "clead_lite/course/runs.py"
SANITY_FAILS = (T_EV + "test_identity_attack_fails_the_strength_checks",
                T_EV + "test_attacks_that_leave_the_ball_or_the_image_range_fail",
                T_EV + "test_reversed_and_perverse_attacks_fail_the_monotonicity_checks",
                T_EV + "test_whitebox_weaker_than_transfer_fails", T_EV + "test_gradient_masked_model_is_caught")

# ---------------------------------------------------------------------------------------------------- the table
MUTANTS: tuple[Mutant, ...] = (
    # --- attacks
    Mutant("pgd-linf-projection-dropped", ATT,
           "x_adv = torch.add(x_adv.detach(), grad.sign_(), alpha=alpha).clamp_(lo, hi)",
           "x_adv = torch.add(x_adv.detach(), grad.sign_(), alpha=alpha).clamp_(0.0, 1.0)",
           (T_ATT + "test_inside_eps_ball_and_unit_box",), fast=True),
    Mutant("pgd-linf-sign-flipped", ATT,
           "x_adv = torch.add(x_adv.detach(), grad.sign_(), alpha=alpha).clamp_(lo, hi)",
           "x_adv = torch.add(x_adv.detach(), grad.sign_(), alpha=-alpha).clamp_(lo, hi)",
           (T_ATT + "test_pgd_linf_equals_torchattacks",)),
    Mutant("pgd-l2-projection-dropped", ATT,
           "delta = delta * (eps / _l2_norm(delta)).clamp_(max=1.0)", "delta = delta",
           (T_ATT + "test_inside_eps_ball_and_unit_box",)),
    Mutant("fgsm-sign-flipped", ATT,
           "return (x + eps * grad.sign()).clamp_(0.0, 1.0)", "return (x - eps * grad.sign()).clamp_(0.0, 1.0)",
           (T_ATT + "test_fgsm_equals_torchattacks",)),
    Mutant("random-start-ignored", ATT, "if start is None and random_start:", "if False:",
           (T_ATT + "test_pgd_random_start_equals_torchattacks_with_same_seed",)),
    Mutant("restart-never-kept", ATT,
           "return torch.where(better.view(-1, 1, 1, 1), x_new, x_best), f_best | f_new,",
           "return torch.where(better.view(-1, 1, 1, 1), x_best, x_best), f_best | f_new,",
           (T_ATT + "test_restarts_never_weaker_than_a_single_run",), fast=True),
    Mutant("targeted-restarts-ignored", ATT, "for _ in range(restarts):", "for _ in range(1):",
           (T_EFF + "test_targeted_restarts_never_weaker_and_sometimes_stronger",)),
    Mutant("custom-loss-restarts-rank-by-ce", ATT,
           "    if loss_fn is not None:\n        return fooled, _loss(", "    if False:\n        return fooled, _loss(",
           (T_EFF + "test_custom_loss_restarts_never_weaker_and_sometimes_stronger",
            T_ATT + "test_loss_fn_with_restarts_keeps_the_highest_custom_loss",
            T_ATT + "test_restarts_pick_the_worst_case_per_example")),
    Mutant("targeted-not-negated", ATT,
           "    return -loss if targeted else loss\n\n\n@torch.no_grad()", "    return loss\n\n\n@torch.no_grad()",
           (T_ATT + "test_targeted_raises_the_target_probability",)),
    Mutant("loss-fn-ignored", ATT, "    if loss_fn is None:\n        loss = F.cross_entropy(",
           "    if True:\n        loss = F.cross_entropy(", (T_ATT + "test_loss_fn_hook_is_used",)),
    Mutant("cw-keeps-unsuccessful", ATT, "improved = wrong & (l2 < best_l2)",
           "improved = l2 < best_l2", (T_ATT + "test_cw_returns_x_or_a_misclassified_example",)),
    # --- losses
    Mutant("info-nce-temperature-ignored", LOSS,
           'logits = (logits / tau).masked_fill(self_mask, float("-inf"))',
           'logits = (logits / 0.1).masked_fill(self_mask, float("-inf"))',
           (T_LOSS + "test_perfect_alignment_loss_goes_to_zero_as_temperature_falls",
            T_LOSS + "test_symmetric_single_view_is_simclr_nt_xent"), fast=True),
    Mutant("info-nce-self-not-masked", LOSS, 'logits = (logits / tau).masked_fill(self_mask, float("-inf"))',
           "logits = logits / tau", (T_LOSS + "test_info_nce_two_by_two_by_hand",)),
    Mutant("supcon-not-averaged-per-positive", LOSS, ".sum(1) / n_pos.clamp(min=1)", ".sum(1)",
           (T_LOSS + "test_supcon_by_hand", T_LOSS + "test_supcon_matches_naive_loop")),
    Mutant("trades-kl-reversed", LOSS, 'F.kl_div(log_p_adv, log_p_clean, reduction="batchmean", log_target=True)',
           'F.kl_div(log_p_clean, log_p_adv, reduction="batchmean", log_target=True)',
           (T_LOSS + "test_trades_kl_by_hand",)),
    # --- training
    Mutant("contrastive-term-dropped", TRAIN, "loss = ce + lam * con", "loss = ce",
           (T_EFF + "test_contrastive_term_changes_the_step",), fast=True),
    Mutant("step-temperature-ignored", TRAIN, "con = info_nce(z_clean, z_adv, temperature=cfg.temperature)",
           "con = info_nce(z_clean, z_adv, temperature=0.1)",
           (T_EFF + "test_the_step_is_the_gradient_of_the_loss_it_claims",)),
    Mutant("supcon-flag-ignored", TRAIN, "            if cfg.supervised_contrastive:\n",
           "            if False:\n", (T_EFF + "test_the_step_is_the_gradient_of_the_loss_it_claims",)),
    Mutant("clean-ce-ignored", TRAIN, "ce = 0.5 * (ce + F.cross_entropy(logits_clean, y))", "ce = ce",
           (T_EFF + "test_the_step_is_the_gradient_of_the_loss_it_claims",)),
    Mutant("attack-loss-flag-ignored", TRAIN, "x_adv = self.attack(x, y, loss_fn)", "x_adv = self.attack(x, y)",
           (T_EFF + "test_contrastive_attack_crafts_the_view_against_info_nce",)),
    Mutant("lambda0-general-path", TRAIN, "        if lam == 0 and not cfg.clean_ce:\n", "        if False:\n",
           (T_BN + "test_lambda_zero_is_pgd_at_bit_for_bit_with_batchnorm",), fast=True),
    Mutant("split-views-ignored", TRAIN, "            if cfg.split_views:  ", "            if False:  ",
           (T_BN + "test_split_views_changes_the_step_only_where_batchnorm_is",)),
    Mutant("split-views-clean-pass-moves-running-stats", TRAIN, "        m.momentum = 0.0\n", "        pass\n",
           (T_BN + "test_split_views_at_tiny_lambda_is_pgd_at_with_batchnorm",)),
    Mutant("eps-ramp-ignored", TRAIN, "scale = 1.0 if cfg.eps_warmup <= 0 else min(", "scale = 1.0 if True else min(",
           (T_EFF + "test_eps_warmup_grows_the_training_perturbation",)),
    Mutant("head-stage-batchnorm-not-frozen", TRAIN, 'self.model.train(self.cfg.method != "faithful_head")',
           "self.model.train(True)", (T_BN + "test_linear_head_stage_freezes_the_encoder_batchnorm",)),
    Mutant("resume-rng-not-restored", RUNS, '            _set_rng_state(state["rng"], run.step.generator)\n',
           "            pass\n", (T_TR + "test_resume_ends_with_the_same_weights_as_an_uninterrupted_run",)),
    Mutant("best-weights-not-kept", TRAIN, '            run.step.inner.load_state_dict(run.best["model"])',
           "            pass", (T_TR + "test_early_stopping_keeps_the_best_weights",)),
    Mutant("piecewise-schedule-ignored", TRAIN, "return 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01)",
           "return 1.0", (T_TR + "test_learning_rate_schedules",)),
    Mutant("gradscaler-step-bypassed", TRAIN, "        self.scaler.step(self.optimizer)\n",
           "        self.optimizer.step()\n",
           (T_EFF + "test_fp16_gradscaler_scales_unscales_and_skips_non_finite_steps",), fast=True),
    Mutant("loss-not-scaled", TRAIN, "self.scaler.scale(loss).backward()", "loss.backward()",
           (T_EFF + "test_fp16_gradscaler_scales_unscales_and_skips_non_finite_steps",)),
    Mutant("ddp-batchnorm-buffers-not-synced", TRAIN, "            dist.broadcast(buffer, src=0)",
           "            pass", (T_BN + "test_ddp_two_processes_agree_on_batchnorm_buffers",)),
    # --- evaluation and its sanity checks
    Mutant("within-ball-always-passes", EVAL, 'Check("within_ball", not outside,', 'Check("within_ball", True,',
           SANITY_FAILS),
    Mutant("noise-check-always-passes", EVAL, "ok = drop_attack > tol and drop_noise <= noise_ratio * drop_attack",
           "ok = True", SANITY_FAILS),
    Mutant("monotone-check-always-passes", EVAL,
           "return [(points[i], points[i + 1]) for i in range(len(points) - 1) if accs[i + 1] > accs[i] + tol]",
           "return []", SANITY_FAILS),
    Mutant("eval-mode-not-restored", "clead_lite/models.py", "            m.training = training\n",
           "            pass\n", (T_ATT + "test_model_modes_restored_exactly",
                                 T_EV + "test_predict_and_accuracy_match_a_plain_forward"), fast=True),
    Mutant("transfer-scored-on-source", EVAL,
           "run = _run_attack(check_attack(attack), source, target, x, y, batch_size)",
           "run = _run_attack(check_attack(attack), source, source, x, y, batch_size)",
           (T_EV + "test_transfer_is_weaker_than_whitebox",)),
    # --- checkpoints, data, models
    Mutant("manifest-sha256-not-checked", "clead_lite/course/checkpoints.py", 'if actual != entry.get("sha256"):',
           "if False:", (T_CK + "test_manifest_verify_find_and_load_pretrained",
                         T_CLI + "test_load_or_train_uses_a_shipped_checkpoint")),
    Mutant("ddp-prefix-not-stripped", "clead_lite/course/checkpoints.py", 'k = k.split(".", 1)[1]', "break",
           (T_CK + "test_ddp_and_compile_prefixes_are_stripped",)),
    Mutant("loader-same-order-every-epoch", "clead_lite/data.py",
           "g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)",
           "g = torch.Generator().manual_seed(self.seed)",
           (T_DATA + "test_device_loader_covers_every_sample_and_is_deterministic_per_epoch",
            "tests/test_loader_epochs.py::test_each_epoch_has_its_own_order_and_augmentation")),
    Mutant("flip-ignored", "clead_lite/data.py", "x = torch.where(mask[:, None, None, None], x.flip(3), x)", "x = x",
           (T_DATA + "test_augmentation_crops_and_flips_within_the_padded_image",
            "tests/test_loader_epochs.py::test_flip_alone_mirrors_about_half_the_images_exactly")),
    Mutant("normalisation-dropped", "clead_lite/models.py", "return (x - self.mean) / self.std", "return x",
           (T_DATA + "test_models_shapes_and_in_model_normalisation",)),
    # --- exercise checks, command line, notebook setup
    Mutant("check-projection-always-ok", "clead_lite/exercises/nb02_pgd.py",
           "    if _close(out, expected, 1e-5):\n        what =", "    if True:\n        what =",
           ("tests/test_checks_nb02_pgd.py::test_l2_projection_rejects_each_mistake_by_name",)),
    Mutant("check-info-nce-always-ok", "clead_lite/exercises/nb04_contrastive.py",
           "    if all(_close(s, e) for s, e in zip(student, expected)):\n        return _say(True, f\"your InfoNCE",
           "    if True:\n        return _say(True, f\"your InfoNCE",
           ("tests/test_checks_nb04_contrastive.py::test_info_nce_rejects_each_mistake_by_name",)),
    Mutant("cli-clean-ce-ignored", "clead_lite/course/cli_train.py",
           '    if args.clean_ce:\n        changes["clean_ce"] = True',
           '    if False:\n        changes["clean_ce"] = True', (T_CLI + "test_train_flag_changes_what_it_names",)),
    Mutant("shipped-checkpoints-never-used", "clead_lite/course/notebook_setup.py",
           "    if not profile.use_checkpoints:   # smoke", "    if True:   # smoke",
           (T_CLI + "test_load_or_train_uses_a_shipped_checkpoint",)),
)


# ---------------------------------------------------------------------------------------------------- running
def check_snippets(mutants) -> list[str]:
    """Every problem with the table: snippets not found exactly once, duplicate ids, no-op replacements."""
    problems, seen = [], set()
    for m in mutants:
        if m.id in seen:
            problems.append(f"{m.id}: duplicate id")
        seen.add(m.id)
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.id}: the snippet occurs {count} times in {m.file} (must be exactly once): "
                            f"{m.original!r}")
        if m.original == m.replacement:
            problems.append(f"{m.id}: the replacement equals the original")
        for test in m.tests:
            if not (ROOT / test.split("::")[0]).is_file():
                problems.append(f"{m.id}: test file {test.split('::')[0]} does not exist")
    return problems


def make_copy() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="clead-mutants-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=ignore)
        else:
            shutil.copy2(src, folder / name)
    return folder


def pytest(folder: Path, tests, timeout: int) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, the output's tail, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(folder), "CLEAD_PROFILE": "smoke", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "CLEAD_CHECKPOINT_DIR": str(folder / "no-checkpoints")}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", time.perf_counter() - t0
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:], time.perf_counter() - t0


def run(mutants, timeout: int, keep: bool) -> int:
    t_start = time.perf_counter()
    folder = make_copy()
    try:
        union = sorted({t for m in mutants for t in m.tests})
        print(f"[mutants] {len(mutants)} mutant(s); baseline: {len(union)} test selection(s) on the unmutated copy "
              f"in {folder}", flush=True)
        code, tail, seconds = pytest(folder, union, timeout * 3)
        if code != 0:
            print(tail, file=sys.stderr)
            print(f"[mutants] ERROR: the selected tests fail without any mutant (exit {code}); fix them first",
                  file=sys.stderr)
            return 2
        print(f"[mutants] baseline passed in {seconds:.0f} s", flush=True)
        caught, bad = 0, []
        for i, m in enumerate(mutants, 1):
            path = folder / m.file
            original = path.read_text()
            path.write_text(original.replace(m.original, m.replacement, 1))
            try:
                code, tail, seconds = pytest(folder, m.tests, timeout)
            finally:
                path.write_text(original)
            if code == 1 or code is None:
                caught += 1
                verdict = "caught" if code == 1 else f"caught (timeout after {timeout} s)"
            else:
                verdict = "SURVIVED" if code == 0 else f"ERROR (pytest exit {code})"
                bad.append(m.id)
                print(tail, file=sys.stderr)
            print(f"[mutants] {i:2d}/{len(mutants)} {m.id:<36} {verdict:<10} {seconds:5.0f} s  ({m.file})", flush=True)
        total = time.perf_counter() - t_start
        print(f"[mutants] score: {caught}/{len(mutants)} caught in {total:.0f} s"
              + (f"; not caught: {', '.join(bad)}" if bad else ""), flush=True)
        return 0 if not bad else 1
    finally:
        if keep:
            print(f"[mutants] copy kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fast", action="store_true", help="the CI subset")
    group.add_argument("--all", action="store_true", help="every mutant (the default)")
    group.add_argument("--only", nargs="+", metavar="ID", help="these mutants")
    group.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant's tests (default 600)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args(argv)
    problems = check_snippets(MUTANTS)
    if problems:
        print("[mutants] ERROR: the mutant table no longer matches the code; re-target these snippets in "
              "scripts/mutants.py:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.list:
        for m in MUTANTS:
            print(f"{m.id:<36} {'fast' if m.fast else '    '} {m.file:<34} {' '.join(m.tests)}")
        print(f"{len(MUTANTS)} mutants, {sum(m.fast for m in MUTANTS)} in --fast")
        return 0
    chosen = [m for m in MUTANTS if m.fast] if args.fast else list(MUTANTS)
    if args.only:
        unknown = [i for i in args.only if i not in {m.id for m in MUTANTS}]
        if unknown:
            print(f"[mutants] error: unknown mutant id(s) {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.id in args.only]
    return run(chosen, args.timeout, args.keep)


if __name__ == "__main__":
    sys.exit(main())
