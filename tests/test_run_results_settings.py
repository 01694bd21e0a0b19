"""A new row of benchmarks/run_results.py records what trained it (issue 23): the checkpoint's whole training
config (learning rate, lambda, tau, beta, batch size), the code version and the training images' fingerprint;
the per-seed table shows them, and the protocol note counts the rows that hold them."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_new_row_records_its_settings(tmp_path):
    from clead_lite.course.results import load_results, per_seed_markdown, protocol_note
    out, runs = tmp_path / "results", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_results.py"), "--datasets", "mnist5k", "--methods",
           "standard", "--seeds", "0", "--profile", "smoke", "--n-train", "160", "--epochs", "1",
           "--attack-steps", "1", "--n-test", "16", "--steps", "2", "--restarts", "1", "--n-autoattack", "0",
           "--no-score", "--no-sanity", "--device", "cpu", "--out", str(out), "--runs", str(runs)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((out / "mnist5k_standard_seed0.json").read_text())
    training = record["trained_with"]
    config = training["config"]
    assert config["method"] == "standard" and config["epochs"] == 1 and config["attack_steps"] == 1
    assert {"lr", "contrastive_weight", "temperature", "trades_beta", "batch_size"} <= set(config)
    assert len(training["code_version"].removesuffix("-dirty")) == 40
    assert training["train_images"]["dataset"] == "mnist5k" and len(training["train_images"]["sha256"]) == 64
    frame = load_results(out)
    line = per_seed_markdown(frame).splitlines()[2]
    want = (f"| lr {config['lr']:g}, λ {config['contrastive_weight']:g}, τ {config['temperature']:g}, "
            f"β {config['trades_beta']:g}; code {training['code_version'][:7]}")
    assert want in line and f"images {training['train_images']['sha256'][:12]} |" in line
    assert "recorded by 1 of the 1 rows" in protocol_note(frame, provenance=True)
