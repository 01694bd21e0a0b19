"""The core computes what it computed before the rewrite of issue 19, bit for bit: attacks, losses, every training
method's weights and history, the faithful pipeline, the evaluation (tests/golden.json), and every exercise check's
verdict on its wrong-answer table (tests/golden_verdicts.json). Recorded on the CPU, in one thread."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import golden  # noqa: E402

RECORDED = json.loads(golden.GOLDEN.read_text())


@pytest.mark.parametrize("section", sorted(golden.SECTIONS))
def test_core_outputs_are_the_golden_ones(section):
    now = golden.compute([section])[section]
    changed = {k: (RECORDED[section].get(k), v) for k, v in now.items() if RECORDED[section].get(k) != v}
    assert set(now) == set(RECORDED[section])
    assert not changed, f"{section}: outputs differ from tests/golden.json: {sorted(changed)}"


def test_digest_tells_apart_what_differs():
    import torch
    a = torch.zeros(3)
    assert golden.digest(a) == golden.digest(torch.zeros(3))
    assert golden.digest(a) != golden.digest(torch.zeros(3, dtype=torch.float64))
    assert golden.digest(a) != golden.digest(a + 1e-30)
    assert golden.digest({"x": 1.0}) != golden.digest({"x": 1.0000000000000002})


def test_exercise_verdicts_are_the_golden_ones():
    out = subprocess.run([sys.executable, str(HERE / "golden_verdicts.py")], capture_output=True, text=True,
                         cwd=HERE.parent, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "verdicts as recorded" in out.stdout
