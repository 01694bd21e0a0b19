"""Fault injection, outputs: only what is ours is written. An output path that is a device node (made with
mknod in a temporary folder), a FIFO, a symbolic link, a shipped checkpoint, the input being evaluated or the
other output of the same command is refused before any work, with one line, and left exactly as it was; a
default --out never replaces an earlier run. The decision for symbolic links: refused (a rename would replace
the link, writing through would change a file the user did not name)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clead_lite.course import _cli_common, cli_train
from clead_lite.course import checkpoints as ck
from clead_lite.course.cli import main
from clead_lite.course.safe_io import OutputError, check_output
from clead_lite.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--profile", "smoke", "--n-train", "64", "--n-val", "0", "--no-eval", "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _device_node(path: Path) -> Path:
    """A character device like /dev/null (major 1, minor 3) at `path`; skips where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a device node here (mknod needs CAP_MKNOD): {e}")
    return path


def _refused(argv: list[str], capsys, *words: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "training " not in out and "evaluating " not in out, out          # refused before any work
    for w in words:
        assert w in err, (w, err)
    return err


def _evaluable(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = SmallCNN()
    return ck.save_checkpoint(tmp_path / "m.pt", {**ck.model_metadata(model), "model": model.state_dict(),
                                                  "dataset": "mnist5k", "method": "standard", "profile": "smoke"})


def test_a_device_node_is_never_replaced(tmp_path, capsys):
    null = _device_node(tmp_path / "null")
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(null)], capsys,
             f"refusing to write the checkpoint (--out) {null}: it is a character device, not a regular file")
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(tmp_path / "ok.pt"), "--json", str(null)], capsys,
             "the --json file", "character device")
    _refused(["evaluate", str(_evaluable(tmp_path)), "--json", str(null), "--device", "cpu"], capsys, "character device")
    with pytest.raises(OutputError, match="character device"):            # the writers themselves refuse too
        ck.save_checkpoint(null, {"model": {}})
    with pytest.raises(OutputError, match="character device"):
        _cli_common._write_json(str(null), {"a": 1})
    assert stat.S_ISCHR(os.lstat(null).st_mode) and not (tmp_path / "ok.pt").exists()


def test_a_fifo_is_never_replaced_nor_opened(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(fifo)], capsys, "it is a FIFO (named pipe)")
    _refused(["evaluate", str(_evaluable(tmp_path)), "--json", str(fifo), "--device", "cpu"], capsys, "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    target = tmp_path / "target.json"
    target.write_text('{"kept": true}\n')
    link = tmp_path / "link.json"
    link.symlink_to(target)
    _refused(["evaluate", str(_evaluable(tmp_path)), "--json", str(link), "--device", "cpu"], capsys,
             f"it is a symbolic link (to {target})")
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(link)], capsys, "symbolic link")
    dangling = tmp_path / "dangling.pt"
    dangling.symlink_to(tmp_path / "nowhere.pt")
    with pytest.raises(OutputError, match="symbolic link"):
        ck.save_checkpoint(dangling, {"model": {}})
    assert link.is_symlink() and target.read_text() == '{"kept": true}\n' and dangling.is_symlink()


def test_the_input_or_the_other_output_is_never_an_output(tmp_path, capsys):
    m = _evaluable(tmp_path)
    before = m.read_bytes()
    _refused(["evaluate", str(m), "--json", str(m), "--device", "cpu"], capsys,
             f"refusing to write the --json file {m}: it is the checkpoint being evaluated")
    _refused(["evaluate", str(m), "--json", str(tmp_path / "sub" / ".." / "m.pt"), "--device", "cpu"],
             capsys, "the checkpoint being evaluated")                   # another spelling of the same path
    source = tmp_path / "source.pt"
    source.write_bytes(before)
    _refused(["evaluate", str(m), "--source", str(source), "--json", str(source), "--device", "cpu"], capsys,
             "it is the --source checkpoint, an input of this command")
    out = tmp_path / "new.pt"
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(out), "--json", str(out)], capsys,
             "it is also the checkpoint (--out); give each output its own file")
    hard = tmp_path / "hard.json"
    os.link(m, hard)                                                     # another name of the same file
    _refused(["evaluate", str(m), "--json", str(hard), "--device", "cpu"], capsys, "the checkpoint being evaluated")
    assert m.read_bytes() == before and not out.exists()


def test_a_shipped_checkpoint_or_the_manifest_is_never_an_output(tmp_path, capsys, monkeypatch):
    shipped = tmp_path / "shipped"
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", str(shipped))
    shipped.mkdir()
    path = _evaluable(tmp_path).rename(shipped / "m.pt")
    ck.write_manifest_entry(path, dataset="mnist5k", method="standard", profile="smoke", model="smallcnn")
    manifest = shipped / "manifest.json"
    before = path.read_bytes(), manifest.read_bytes()
    _refused(["train", "--method", "standard", *SMOKE, "--out", str(path)], capsys,
             f"it is a shipped checkpoint listed in {manifest}")
    _refused(["evaluate", str(path), "--json", str(manifest), "--device", "cpu"], capsys, "the checkpoint manifest")
    with pytest.raises(OutputError, match="shipped AutoAttack cache"):
        check_output(shipped / "autoattack_cache.json", "output")
    assert (path.read_bytes(), manifest.read_bytes()) == before
    ck.verify_checkpoint(path)                                           # every later lookup still verifies


def test_the_default_out_never_replaces_an_earlier_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_train, "_runs_dir", lambda: tmp_path / "runs")
    argv = ["train", "--method", "standard", *SMOKE, "--epochs", "1"]
    first = tmp_path / "runs" / "mnist5k_standard_smoke_seed0.pt"
    assert main(argv) == 0
    capsys.readouterr()
    before = first.read_bytes()
    assert main(argv + ["--seed", "0"]) == 0
    out, err = capsys.readouterr()
    second = tmp_path / "runs" / "mnist5k_standard_smoke_seed0-2.pt"
    assert f"note: {first} holds an earlier run (kept); this run writes {second}" in err
    assert first.read_bytes() == before and ck.load_checkpoint(second)["finished"]
    assert f"saved {second}" in out


def test_colab_install_bad_arguments_and_files_are_one_line(tmp_path):
    script = ROOT / "scripts" / "colab_install.py"
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "pyproject.toml").write_bytes(b"[project]\nname = 'x'\n")      # no dependencies list
    cases = [([], "expected one argument"), (["a", "b"], "expected one argument"),
             ([str(tmp_path / "missing")], "does not exist"), ([str(tmp_path / "file.txt")], "is not a folder"),
             ([str(tmp_path)], "has no pyproject.toml"), (["--frobnicate"], "unknown option"),
                 ([str(tmp_path / "broken")], "no [project] dependencies list found")]
    for args, words in cases:
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr
