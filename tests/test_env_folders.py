"""Relative CLEAD_CACHE_DIR, CLEAD_DATA_ROOT and CLEAD_CHECKPOINT_DIR are resolved as CLEAD_STORE is: relative
to the repository, so the command line (cwd: the repository) and the notebooks (cwd: notebooks/) use one folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from clead_lite.course.checkpoints import checkpoint_dir, read_manifest
from clead_lite.course.datasets import DatasetNotFoundError, cache_dir, data_root, env_folder, load_dataset
from clead_lite.course.umap_cache import umap_cache_dir
from clead_lite.course.views_cache import ViewsCache

ROOT = Path(__file__).resolve().parents[1]
REL = "build/test-env-folder"          # never created: only the resolved paths are compared


def _from_both_cwds(monkeypatch, read) -> Path:
    """`read()` from the repository and from notebooks/; asserts both give the same folder and returns it."""
    monkeypatch.chdir(ROOT)
    here = read()
    monkeypatch.chdir(ROOT / "notebooks")
    assert read() == here
    return here


def test_a_relative_cache_dir_is_one_folder_from_every_cwd(monkeypatch):
    monkeypatch.setenv("CLEAD_CACHE_DIR", REL)
    assert _from_both_cwds(monkeypatch, cache_dir) == ROOT / REL
    assert _from_both_cwds(monkeypatch, umap_cache_dir) == ROOT / REL / "umap"
    assert _from_both_cwds(monkeypatch, lambda: ViewsCache(progress=False).folder) == ROOT / REL


def test_a_relative_data_root_is_one_folder_from_every_cwd(monkeypatch):
    monkeypatch.setenv("CLEAD_DATA_ROOT", REL)
    monkeypatch.setenv("CLEAD_OFFLINE", "1")
    assert _from_both_cwds(monkeypatch, data_root) == ROOT / REL
    with pytest.raises(DatasetNotFoundError) as info:     # the message names the resolved root and the variable
        load_dataset("mnist", "test")
    assert f"the data root {ROOT / REL} (CLEAD_DATA_ROOT; the folder does not exist)" in str(info.value)
    assert not (ROOT / REL).exists()


def test_a_relative_checkpoint_dir_is_one_folder_from_every_cwd(monkeypatch):
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", "data/checkpoints")
    assert _from_both_cwds(monkeypatch, checkpoint_dir) == ROOT / "data" / "checkpoints"
    # the shipped manifest is found from notebooks/ too (a cwd-relative reading would find none there)
    assert read_manifest()["checkpoints"]


def test_absolute_home_and_unset_values(monkeypatch, tmp_path):
    monkeypatch.setenv("CLEAD_CACHE_DIR", str(tmp_path))
    assert env_folder("CLEAD_CACHE_DIR") == tmp_path == cache_dir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLEAD_CACHE_DIR", "~/c")
    assert cache_dir() == tmp_path / "c"
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv("CLEAD_CACHE_DIR")
        else:
            monkeypatch.setenv("CLEAD_CACHE_DIR", value)
        assert env_folder("CLEAD_CACHE_DIR") is None and cache_dir() == ROOT / "data" / "cache"
