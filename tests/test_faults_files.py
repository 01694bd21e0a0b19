"""Fault injection, files: crafted pickles against every loader (nothing runs), at least 200 random and
truncated files against every loader (each a one-line error of the package's type), a checkpoint changed
after it was written, read-only folders and a full disk (small tmpfs mounts; skipped with the reason where
this process cannot mount), and the inputs that used to give tracebacks."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import pickle
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from clead_lite.course import checkpoints as ck
from clead_lite.course.cli import build_parser, main
from clead_lite.course.views_cache import ViewsCache
from clead_lite.attacks import fgsm, pgd, random_noise
from clead_lite.course.datasets import DatasetFileError, _read_cifar_batch, _read_idx, load_dataset, write_synthetic_cifar10
from clead_lite.course.umap_cache import read_map as _read_cache, save_map as _save_atomic
from clead_lite.evaluation import accuracy, eps_sweep
from clead_lite.faithful import precompute_adversarial_views
from clead_lite.models import SmallCNN
from clead_lite.course.profiles import get_device
from clead_lite.course.safe_io import OutputError, check_writable

SMOKE = ["--profile", "smoke", "--n-train", "64", "--n-val", "0", "--no-eval", "--no-progress", "--device", "cpu"]


class _Evil:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _one_line(e: BaseException, path: Path | None = None) -> str:
    text = str(e)
    assert "\n" not in text and text.strip(), repr(text)
    if path is not None:
        assert path.name in text, text
    return text


# ---------------------------------------------------------------------------------------------- crafted pickles
def test_crafted_pickle_runs_in_no_loader(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = _Evil(marker)
    # checkpoints (zip format and legacy pickle), the shipped-checkpoint path, the views cache
    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save({"model": {}, "x": evil}, zipped)
    legacy.write_bytes(pickle.dumps({"model": evil}, protocol=2))
    for path in (zipped, legacy):
        with pytest.raises(ck.CheckpointError) as info:
            ck.load_checkpoint(path)
        assert "weights_only=False" not in _one_line(info.value, path)
    # CIFAR-10: a crafted data_batch_1 under the data root
    root = write_synthetic_cifar10(tmp_path / "root", n_train=10, n_test=5)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": evil, "labels": [0]}))
    with pytest.raises(DatasetFileError, match=r"refused to load .*data_batch_1: it asks for the Python object "
                                               r"builtins\.exec.*nothing was executed") as info:
        load_dataset("cifar10", "train", root=root)
    _one_line(info.value)
    # MNIST: a pickle where an IDX file belongs
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(pickle.dumps(evil))
    (raw / "train-labels-idx1-ubyte").write_bytes(pickle.dumps(evil))
    with pytest.raises(DatasetFileError, match="is not an IDX file"):
        load_dataset("mnist", "train", root=tmp_path / "root")
    # the UMAP cache: an object array (np.save pickles it)
    npy = tmp_path / "umap-x.npy"
    np.save(npy, np.array([evil, 1], dtype=object), allow_pickle=True)
    assert not marker.exists()           # np.save did not run it either
    with pytest.raises(ck.CheckpointError, match="UMAP cache file"):
        _read_cache(npy, 2)
    # the manifest is JSON: a pickle there is refused as not JSON
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(pickle.dumps(evil))
    with pytest.raises(ck.CheckpointError, match="not a readable JSON manifest"):
        ck.read_manifest(manifest)
    assert not marker.exists()


def test_crafted_views_cache_is_recomputed_not_run(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    first = precompute_adversarial_views(model, x, y, eps=0.1, kinds=("fgsm",), cache=ViewsCache(tmp_path, progress=False),
                                         progress=False)
    (path,) = tmp_path.glob("views-*.pt")
    marker = tmp_path / "ran.txt"
    torch.save({"views": _Evil(marker)}, path)
    with pytest.warns(RuntimeWarning, match="computing the views again"):
        again = precompute_adversarial_views(model, x, y, eps=0.1, kinds=("fgsm",), cache=ViewsCache(tmp_path, progress=False),
                                         progress=False)
    assert not marker.exists() and torch.equal(again["fgsm"], first["fgsm"])
    assert torch.equal(ck.load_checkpoint(path)["views"]["fgsm"], first["fgsm"])    # rewritten, valid


# ---------------------------------------------------------------------------------------------- random files
def _random_files(valid: bytes, magic: list[bytes], count: int, seed: int):
    """`count` files: random bytes (some after a format's magic) and truncations of a valid file."""
    rng = random.Random(seed)
    for i in range(count):
        if i % 5 < 3:
            body = rng.randbytes(rng.choice([0, 1, 7, 64, 511, 3000]))
            yield (rng.choice(magic) + body) if i % 2 else body
        else:
            yield valid[:rng.randrange(0, len(valid))]          # never the whole file


def _check_loader(tmp_path: Path, name: str, valid: bytes, magic: list[bytes], load, error, count: int = 200):
    seen = set()
    for i, data in enumerate(_random_files(valid, magic, count, seed=hash(name) % 1000)):
        path = tmp_path / f"{name}-{i}.bin"
        path.write_bytes(data)
        with pytest.raises(error) as info:
            load(path)
        _one_line(info.value, path)
        assert "Traceback" not in str(info.value) and "weights_only=False" not in str(info.value)
        seen.add(type(info.value).__name__)
        path.unlink()
    return seen


def test_random_and_truncated_files_against_every_loader(tmp_path):
    small = ck.save_checkpoint(tmp_path / "small.pt", {"model": {"w": torch.arange(600.0)}, "epoch": 1}).read_bytes()
    zip_magic, pickle_magic = b"PK\x03\x04", b"\x80\x02"
    _check_loader(tmp_path, "checkpoint", small, [zip_magic, pickle_magic, b"\x80\x05"], ck.load_checkpoint,
                  ck.CheckpointError)
    _check_loader(tmp_path, "views-cache", small, [zip_magic], lambda p: ck.load_checkpoint(p, required=("views",)),
                  ck.CheckpointError)
    manifest = json.dumps({"format": 1, "checkpoints": [{"file": "a.pt", "sha256": "0" * 64}]}).encode()
    _check_loader(tmp_path, "manifest", manifest, [b"{", b"[", b'{"checkpoints": ['], ck.read_manifest,
                  ck.CheckpointError)
    arr = tmp_path / "u.npy"
    np.save(arr, np.zeros((40, 2), np.float32))
    _check_loader(tmp_path, "umap", arr.read_bytes(), [b"\x93NUMPY\x01\x00"], lambda p: _read_cache(p, 40),
                  ck.CheckpointError)
    root = write_synthetic_cifar10(tmp_path / "c", n_train=5, n_test=5)
    cifar = (root / "cifar-10-batches-py" / "test_batch").read_bytes()
    _check_loader(tmp_path, "cifar", cifar, [pickle_magic, b"\x80\x04\x95"], _read_cifar_batch, DatasetFileError)
    idx = b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(3 * 784)
    _check_loader(tmp_path, "mnist", idx, [b"\x00\x00\x08\x03", b"\x00\x00\x08\x01"], lambda p: _read_idx(p, 3),
                  DatasetFileError)


def test_unreadable_and_truncated_mnist_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(2 * 784)
    labels = b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes([3, 7])
    (raw / "t10k-images-idx3-ubyte").write_bytes(images[:-100])
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DatasetFileError, match=r"t10k-images-idx3-ubyte is truncated or padded: 1468 bytes"):
        load_dataset("mnist", "test", root=tmp_path)
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images)[:-9])   # a cut download
    with pytest.raises(DatasetFileError, match=r"cannot read the dataset file .*\.gz \((EOFError|BadGzipFile)"):
        load_dataset("mnist", "test", root=tmp_path)
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    (raw / "t10k-images-idx3-ubyte").mkdir()                                      # unreadable: a folder
    with pytest.raises(DatasetFileError, match=r"cannot read the dataset file .*IsADirectoryError"):
        load_dataset("mnist", "test", root=tmp_path)
    (raw / "t10k-images-idx3-ubyte").rmdir()
    (raw / "t10k-images-idx3-ubyte").write_bytes(images)
    x, y = load_dataset("mnist", "test", root=tmp_path)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 7]


# ---------------------------------------------------------------------------------------------- digest
def test_checkpoint_changed_after_writing_is_refused_everywhere(tmp_path, capsys):
    model = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    path = ck.save_checkpoint(tmp_path / "m.pt", {**ck.model_metadata(model), "model": model.state_dict(),
                                                  "dataset": "mnist5k", "method": "standard"})
    stored = torch.load(path, weights_only=True)
    assert stored[ck.DIGEST_KEY] == ck.state_digest(stored)               # every checkpoint carries its digest
    raw = bytearray(path.read_bytes())
    needle = model.classifier.bias.detach().numpy().tobytes()            # the bias's bytes inside the zip
    at = bytes(raw).index(needle)
    raw[at] ^= 0x01                                                       # one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(ck.ChecksumError, match="was changed after it was written") as info:
        ck.load_checkpoint(path)
    _one_line(info.value, path)
    assert main(["evaluate", str(path), "--device", "cpu", "--profile", "smoke"]) == 2
    assert "was changed after it was written" in capsys.readouterr().err


def test_evaluate_a_manifest_never_advises_unsafe_loading(tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": 1, "checkpoints": []}))
    assert main(["evaluate", str(manifest), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a JSON file (a manifest?), not a checkpoint" in err and "weights_only=False" not in err


# ---------------------------------------------------------------------------------------------- read-only, full
def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs (a non-root user meets permission bits instead)"
    return None


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str):
    """A small tmpfs at `folder` (options e.g. 'size=64k' or 'size=64k,ro'); skips the test if mount fails."""
    reason = _can_mount()
    if reason:
        pytest.skip(reason)
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {proc.stderr.strip()[:200]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _remount_ro(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def test_read_only_folders_fail_before_the_work_or_keep_it(tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "size=1m") as ro:
        (ro / "runs").mkdir()
        _remount_ro(ro)
        # the checkpoint: refused before training (the header line is never printed)
        assert main(["train", "--method", "standard", *SMOKE, "--out", str(ro / "runs" / "m.pt")]) == 2
        out, err = capsys.readouterr()
        assert "training standard" not in out
        assert f"cannot write the checkpoint (--out) {ro / 'runs' / 'm.pt'}: the folder {ro / 'runs'} is on a " \
               "read-only file system" in err and err.count("\n") == 1
        # --json in a read-only folder: refused before training too
        assert main(["train", "--method", "standard", *SMOKE, "--out", str(tmp_path / "ok.pt"),
                     "--json", str(ro / "r.json")]) == 2
        assert "cannot write the --json file" in capsys.readouterr().err and not (tmp_path / "ok.pt").exists()
        # the views cache: said before the work, the views are computed and returned
        torch.manual_seed(0)
        model = SmallCNN(width=4, feature_dim=16, proj_dim=8)
        x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
        with pytest.warns(RuntimeWarning, match="the views will not be cached: cannot write the views cache"):
            views = precompute_adversarial_views(model, x, y, eps=0.1, kinds=("fgsm",), cache=ViewsCache(ro, progress=False),
                                                 progress=False)
        assert views["fgsm"].shape == x.shape
        # the UMAP cache: a warning, the map is kept by the caller
        with pytest.warns(RuntimeWarning, match="the UMAP map was not cached"):
            assert _save_atomic(ro / "umap" / "u.npy", np.zeros((4, 2), np.float32)) is False
        # the helper itself: a real write attempt, not only os.access (root passes os.access here)
        with pytest.raises(OutputError, match="read-only file system"):
            check_writable(ro / "x.pt")
        # reading from a read-only data root works
        write_ok = tmp_path / "data"
        write_synthetic_cifar10(write_ok, n_train=5, n_test=5)
    assert not list(tmp_path.glob("*.tmp"))


def test_full_disk_during_save_keeps_the_previous_file(tmp_path):
    with _tmpfs(tmp_path / "small", "size=64k") as small:
        path = ck.save_checkpoint(small / "m.pt", {"model": {"w": torch.zeros(10)}, "epoch": 1})
        with pytest.raises(OutputError, match=r"could not write .*m\.pt: no space left on the device .*the previous "
                                              r"m\.pt, if any, is unchanged") as info:
            ck.save_checkpoint(path, {"model": {"w": torch.zeros(100_000)}, "epoch": 2})
        _one_line(info.value)
        assert ck.load_checkpoint(path)["epoch"] == 1
        assert not list(small.glob(".*.tmp"))                              # the partial temp file was removed
        with pytest.warns(RuntimeWarning, match="the UMAP map was not cached"):
            assert _save_atomic(small / "umap" / "u.npy", np.zeros((20_000, 2), np.float32)) is False


def test_cli_train_on_a_full_disk_fails_before_the_first_epoch(tmp_path, capsys):
    with _tmpfs(tmp_path / "small", "size=256k") as small:
        rc = main(["train", "--method", "standard", *SMOKE, "--out", str(small / "m.pt")])
        out, err = capsys.readouterr()
        assert rc == 2 and err.count("\n") == 1, err
        assert f"cannot write the checkpoint {small / 'm.pt'}: the folder {small} has 0.26 MB free, the file " \
               "needs about 3.57 MB" in err
        assert "saved" not in out and not list(small.iterdir())


# ---------------------------------------------------------------------------------------------- one-line errors
def test_devices_that_do_not_exist(monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"unknown device 'gpu' \(from the device argument\); allowed: 'cpu'"):
        get_device("gpu")
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    monkeypatch.setenv("CLEAD_DEVICE", missing)
    with pytest.raises(ValueError, match=rf"device '{missing}' \(from CLEAD_DEVICE\) is not available"):
        get_device()
    assert main(["train", "--method", "standard", *SMOKE[:-2], "--out", "unused.pt"]) == 2
    assert "is not available" in capsys.readouterr().err
    assert main(["train", "--method", "standard", *SMOKE[:-2], "--device", "gpu", "--out", "unused.pt"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_out_naming_a_folder_fails_before_training(tmp_path, capsys):
    assert main(["train", "--method", "standard", *SMOKE, "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "is a folder; name a file in it" in err and "training standard" not in out
    with pytest.raises(OutputError, match="is a folder"):
        ck.save_checkpoint(tmp_path, {"model": {}})


def test_eps_fraction_on_the_command_line():
    parser = build_parser()
    assert parser.parse_args(["train", "--method", "pgd_at", "--eps", "8/255"]).eps == 8 / 255
    assert parser.parse_args(["evaluate", "m.pt", "--eps", "0.3"]).eps == 0.3
    for bad in ("8/0", "eight", "nan"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["train", "--method", "pgd_at", "--eps", bad])
        assert info.value.code == 2


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SmallCNN(width=4, feature_dim=16, proj_dim=8).eval(), torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))


def test_float64_input_is_converted(tiny):
    model, x, y = tiny
    x64 = x.double()
    assert model(x64).dtype == torch.float32
    x_adv = pgd(model, x64, y, eps=0.1, alpha=0.05, steps=2)
    assert x_adv.dtype == torch.float64 and (x_adv - x64).abs().max() <= 0.1
    assert 0 <= accuracy(model, x64, y) <= 1


def test_model_output_of_the_wrong_shape(tiny):
    model, x, y = tiny

    class Flat(torch.nn.Module):       # (B,) instead of (B, C)
        def forward(self, inp):
            return model(inp)[:, 0]

    for call in (lambda: accuracy(Flat(), x, y), lambda: pgd(Flat(), x, y, eps=0.1, alpha=0.05, steps=1),
                 lambda: fgsm(Flat(), x, y, eps=0.1)):
        with pytest.raises(ValueError, match=r"has shape \(8,\); a classifier must return logits of shape "
                                             r"\(B, num_classes\)") as info:
            call()
        _one_line(info.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_stay_inside_the_eps_ball(tiny, dtype):
    """fp16 / bf16 inputs are attacked in float32 and returned in float32: rounding back to half precision could
    leave the ball by half a unit in the last place (up to 0.002 in bf16). In the ball up to float32 rounding."""
    model, x, y = tiny
    xh = (x * 0.98 + 0.01).to(dtype)
    eps = 8 / 255
    for x_adv in (pgd(model, xh, y, eps=eps, alpha=2 / 255, steps=3), fgsm(model, xh, y, eps=eps),
                  random_noise(model, xh, y, eps=eps), pgd(model, xh, y, eps=eps, alpha=eps, steps=1, restarts=2)):
        assert x_adv.dtype == torch.float32
        d = (x_adv - xh.float()).abs().max().item()
        assert d <= eps + 1e-6, (dtype, d - eps)
        assert x_adv.float().min() >= 0 and x_adv.float().max() <= 1
    for x_adv in (pgd(model, xh, y, eps=0.5, alpha=0.2, steps=3, norm="l2"),
                  random_noise(model, xh, y, eps=0.5, norm="l2")):
        norms = (x_adv.float() - xh.float()).flatten(1).norm(dim=1)
        assert x_adv.dtype == torch.float32 and (norms <= 0.5 + 1e-6).all(), norms.max().item() - 0.5


def test_eps_sweep_pgd_with_l2_suggests_pgd_l2(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="for L2 use attack='pgd_l2'") as info:
        eps_sweep(model, x, y, [0.5, 1.0, 2.0], attack="pgd", norm="l2")
    assert "8/255" not in _one_line(info.value)


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    model = SmallCNN()                   # the command line builds the default-sized model
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    path = ck.save_checkpoint(tmp_path / "nan.pt", {**ck.model_metadata(model), "model": model.state_dict(),
                                                    "dataset": "mnist5k"})
    assert main(["evaluate", str(path), "--device", "cpu", "--profile", "smoke"]) == 2
    assert "holds non-finite (NaN / inf) weights" in capsys.readouterr().err


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    from clead_lite.course.safe_io import clean_stale_temps
    target = tmp_path / "m.pt"
    dead = _dead_pid()
    stale = tmp_path / f".m.pt.{dead}.abcd1234.tmp"
    live = tmp_path / f".m.pt.{os.getpid()}.abcd1234.tmp"
    other = tmp_path / f".n.pt.{dead}.abcd1234.tmp"               # another file's temporary: not ours
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert clean_stale_temps(target) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid                   # exited and reaped: no process has this pid (until it is reused)
