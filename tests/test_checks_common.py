"""The checks package as a whole: every name the notebooks import exists, `or_reference` stands the reference in
for a stub or a failed answer (and says so), and the check modules stay on their floor."""
import json
import re
from pathlib import Path

import pytest
import torch

import clead_lite.exercises as checks
from clead_lite import attacks

ROOT = Path(__file__).resolve().parents[1]


def test_every_name_the_notebooks_import_exists():
    names = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for m in re.finditer(r"from clead_lite\.exercises import ([\w, ]+)", "".join(cell["source"])):
                names |= {n.strip() for n in m.group(1).split(",")}
    assert len(names) >= 16, names
    missing = [n for n in names if not hasattr(checks, n)]
    assert not missing, missing


def test_or_reference_keeps_a_passing_answer_silently(capsys):
    def fgsm(model, x, y, eps):
        return attacks.fgsm(model, x, y, eps)
    assert checks.check_fgsm(fgsm)
    capsys.readouterr()
    assert checks.or_reference(fgsm) is fgsm
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("body, why", [("raise NotImplementedError('Exercise 1: FGSM')", "is not implemented yet"),
                                       ("return x", "did not pass its check")])
def test_or_reference_stands_in_for_a_stub_or_a_wrong_answer(body, why, capsys):
    namespace = {}
    exec(f"def fgsm_student(model, x, y, eps):\n    {body}", namespace)
    student = namespace["fgsm_student"]
    assert not checks.check_fgsm(student)
    capsys.readouterr()
    stand_in = checks.or_reference(student)
    out = capsys.readouterr().out
    assert stand_in is attacks.fgsm
    assert f"`fgsm_student` {why}" in out and "clead_lite.attacks.fgsm" in out


def test_or_reference_of_every_check_resolves_to_a_callable():
    for name in dir(checks):
        if name.startswith("check_"):
            reference = getattr(checks, name).reference
            module, attr = reference.split(":")
            assert callable(getattr(__import__(module, fromlist=[attr]), attr)), reference


def test_or_reference_before_any_check_returns_the_function(capsys):
    f = lambda: None  # noqa: E731
    assert checks.or_reference(f) is f
    assert "run the check" in capsys.readouterr().out


def test_check_modules_stay_on_their_floor():
    for path in (ROOT / "clead_lite" / "exercises").glob("*.py"):
        src = path.read_text()
        for name in ("training", "viz", "__main__", "notebook_setup", "evaluation", "faithful"):
            assert f"from ..{name}" not in src and f"clead_lite.{name}" not in src, (path.name, name)


def test_reference_solutions_pass_their_own_checks(capsys):
    from clead_lite.exercises import nb01_fgsm, nb02_pgd, nb03_training, nb05_clead, nb06_evaluation, nb07_embeddings
    assert checks.check_linear_perturbation(nb01_fgsm.worst_case_perturbation)
    assert checks.check_pgd_step(nb02_pgd.pgd_step) and checks.check_projection(nb02_pgd.project_l2)
    assert checks.check_pgd_at_step(nb03_training.pgd_at_step)
    assert checks.check_early_stopping(nb03_training.best_epoch)
    assert checks.check_supcon(lambda z, y, t: __import__("clead_lite.losses", fromlist=["supcon"]).supcon(
        z, y, temperature=t))
    assert checks.check_clead_step(nb05_clead.clead_online_loss)
    assert checks.check_spot_the_flaw(nb06_evaluation.spot_the_flaw)
    assert checks.check_umap_reading(nb07_embeddings.read_the_map)
    assert torch.is_tensor(nb05_clead.contrastive_attack_loss(torch.randn(4, 3), torch.randn(4, 3)))
