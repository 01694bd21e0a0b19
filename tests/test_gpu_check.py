"""scripts/gpu_check.sh at CPU sizes (--tiny): every figure of the prepared GPU check lands in $OUT as it is measured."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    # no carried bundle: the check must work with what is installed (the venv has every package)
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "CLEAD_PROFILE": "smoke",
           "GPU_BUNDLE": "/nonexistent-gpu-bundle", **extra}
    env.pop("CLEAD_DATASET", None)
    return env


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _figures(out: Path) -> dict:
    return {f["name"]: f for f in map(json.loads, (out / "gpu_check.jsonl").read_text().splitlines())}


def test_tiny_gpu_check_writes_every_figure_to_out(tmp_path):
    out = tmp_path / "OUT"
    # notebook 00, the quickest: 01 and 05 run in the smoke profile in the notebook tests already
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny", "--json", str(tmp_path / "all.json"),
                           "--precisions", "bf16", "fp32", "bf16_nocudnn", "fp16", "--notebooks", "00"],
                          cwd=ROOT, env=_env(OUT=str(out)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = _figures(out)
    assert list(figures)[0] == "machine" and list(figures)[-1] == "done"
    assert figures["machine"]["tiny"] is True and figures["machine"]["device"] == "cpu"
    assert figures["epoch_fp16"]["status"] == "skipped"            # fp16 autocast on a CPU: far too slow
    for name in ("epoch_bf16", "epoch_fp32", "epoch_bf16_nocudnn", "epoch_clead_online"):
        epoch = figures[name]
        assert epoch["status"] == "ok" and epoch["attack"] == "fgsm_rs" and epoch["attack_steps"] == 1, name
        for key in ("images_per_s", "epoch_seconds", "seconds_per_50k_images", "flops_per_image", "achieved_tflops"):
            assert _positive(epoch[key]), (name, key)
        assert math.isclose(epoch["seconds_per_50k_images"], 50_000 / epoch["images_per_s"])
        assert (out / f"{name}.json").exists()
    assert figures["epoch_bf16_nocudnn"]["cudnn_enabled"] is False and figures["epoch_bf16"]["cudnn_enabled"]
    assert figures["epoch_fp32"]["autocast_dtype"] == "None"
    assert figures["epoch_clead_online"]["flops_per_image"] > figures["epoch_bf16"]["flops_per_image"]
    loop = figures["gpu_loop"]
    for key in ("course_images_per_s", "textbook_images_per_s", "speedup", "flops_per_step", "step_s",
                "achieved_tflops", "bf16_matmul_tflops", "mfu"):
        assert _positive(loop[key]), key
    assert loop["speedup"] == loop["course_images_per_s"] / loop["textbook_images_per_s"]
    nb = figures["notebook_00"]
    assert nb["notebook"] == "00_setup_and_data.ipynb" and nb["run_status"] == "ok" and nb["seconds"] > 0
    assert figures["done"]["all_ok"] and _positive(figures["done"]["seconds_total"])
    assert json.loads((tmp_path / "all.json").read_text())["done"] == figures["done"]
    assert "per 50,000-image epoch" in proc.stdout and "full loop" in proc.stdout


def test_past_the_deadline_every_step_is_recorded_as_skipped(tmp_path):
    out = tmp_path / "OUT"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--deadline-s", "0",
                           "--out-dir", str(out)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    figures = _figures(out)
    assert proc.returncode == 1, proc.stderr[-2000:]
    for name in ("epoch_bf16", "epoch_clead_online", "gpu_loop", "notebook_01", "notebook_05"):
        assert figures[name]["status"] == "skipped" and "deadline" in figures[name]["reason"], name
    assert figures["done"]["all_ok"] is False


def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out-dir", str(tmp_path / "o")], cwd=ROOT,
                          env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--tiny" in proc.stderr
    assert not (tmp_path / "o").exists()
