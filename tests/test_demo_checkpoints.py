"""`python -m clead_lite demo` loads the shipped checkpoints that match and trains only what is missing."""
import dataclasses

import torch

from clead_lite.course import profiles
from clead_lite.course.cli import _shipped_model, main
from clead_lite.course.checkpoints import model_metadata, save_checkpoint, write_manifest_entry
from clead_lite.models import build_model


def test_quick_demo_finds_the_shipped_models_and_only_those():
    quick = profiles.get_profile("quick")
    cpu = torch.device("cpu")
    assert _shipped_model(quick, "pgd_at", 0, cpu) is not None
    assert _shipped_model(quick, "pgd_at", 1, cpu) is None                           # another seed
    assert _shipped_model(quick.replace(dataset="fashion-mnist"), "pgd_at", 0, cpu) is None
    assert _shipped_model(profiles.get_profile("smoke"), "pgd_at", 0, cpu) is None   # smoke trains its own


def test_demo_loads_what_is_shipped_and_trains_the_rest(tmp_path, monkeypatch, capsys):
    # a smoke profile that may load checkpoints, with only a standard model shipped
    smoke = dataclasses.replace(profiles.PROFILES["smoke"], use_checkpoints=True)
    monkeypatch.setitem(profiles.PROFILES, "smoke", smoke)
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10)
    path = save_checkpoint(tmp_path / "mnist5k_standard_smoke.pt", {"model": model.state_dict(),
                                                                    **model_metadata(model)})
    write_manifest_entry(path, dataset="mnist5k", method="standard", profile="smoke", model="smallcnn", seed=0)
    assert main(["demo", "--profile", "smoke", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "loaded the shipped standard checkpoint mnist5k_standard_smoke.pt" in out
    assert "trained standard" not in out
    assert "no shipped pgd_at checkpoint" in out and "trained pgd_at in" in out
    assert len([line for line in out.splitlines() if line.startswith(("standard", "pgd_at"))]) == 2
