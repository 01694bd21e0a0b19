"""scripts/gpu_check.sh at CPU sizes (--tiny): every figure of the prepared GPU check lands in its JSON."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env():
    # no carried bundle: the check must work with what is installed (the venv has every package)
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "CLEAD_PROFILE": "smoke",
           "GPU_BUNDLE": "/nonexistent-gpu-bundle"}
    env.pop("CLEAD_DATASET", None)
    return env


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_gpu_check_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    # notebook 00, the quickest: 01 and 05 run in the smoke profile in the notebook tests already
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny", "--json", str(out), "--out", str(tmp_path / "nb"),
                           "--notebooks", "00"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["tiny"] is True and result["machine"]["device"] == "cpu"
    loop = result["gpu_loop"]
    for key in ("course_images_per_s", "textbook_images_per_s", "speedup", "flops_per_step", "step_s",
                "achieved_tflops", "bf16_matmul_tflops", "mfu"):
        assert _positive(loop[key]), key
    assert loop["speedup"] == loop["course_images_per_s"] / loop["textbook_images_per_s"]
    assert loop["speedup_target_met"] == (loop["speedup"] >= 3.0) and loop["mfu_target_met"] == (loop["mfu"] >= 0.3)
    for method in ("pgd_at", "clead_online"):
        epoch = result["epochs"][method]
        assert epoch["attack"] == "fgsm_rs" and epoch["attack_steps"] == 1
        for key in ("images_per_s", "epoch_seconds", "seconds_per_50k_images", "flops_per_image", "achieved_tflops"):
            assert _positive(epoch[key]), (method, key)
        assert math.isclose(epoch["seconds_per_50k_images"], 50_000 / epoch["images_per_s"])
    assert result["epochs"]["clead_online"]["flops_per_image"] > result["epochs"]["pgd_at"]["flops_per_image"]
    [notebook] = result["notebooks"]
    assert notebook["notebook"] == "00_setup_and_data.ipynb" and notebook["status"] == "ok" and notebook["seconds"] > 0
    assert result["all_notebooks_ok"] and _positive(result["seconds_total"])
    assert "full loop" in proc.stdout and "per 50,000-image epoch" in proc.stdout


def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--json", str(tmp_path / "x.json")], cwd=ROOT,
                          env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--tiny" in proc.stderr
    assert not (tmp_path / "x.json").exists()
