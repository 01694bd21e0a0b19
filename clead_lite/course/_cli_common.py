"""What the command line's modules share (`cli` and `cli_train`): the usage error, the method names, the command
line as typed, the test images, and the JSON writer."""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path

from ..config import METHODS as METHOD_CHOICES    # the methods a user can name (the core's list)


class UsageError(ValueError):
    """A bad combination of arguments found after parsing (exit code 2)."""


def _command_line() -> str:
    return "python -m clead_lite " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _plain(value):
    """JSON-safe: NaN -> None, tensors -> lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _test_split(dataset: str, n: int | None):
    """The first n test images (`data.test_images`): the images the notebooks and the manifest score too."""
    from .datasets import test_images
    return test_images(dataset, n)


def _write_json(path: str, data: dict) -> None:
    from .safe_io import OutputError, fallback_path, refuse_special, temp_path, write_error
    p = Path(path)
    text = json.dumps(_plain(data), indent=2) + "\n"

    def write(target: Path) -> None:
        refuse_special(target, "JSON file")
        tmp = temp_path(target)
        try:   # atomic: a kill or a full disk never leaves half a JSON file
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(target, e) from e

    try:
        write(p)
    except OSError as e:
        other = fallback_path(p)
        if other is None or isinstance(e, OutputError) and "refusing" in str(e):
            raise
        write(other)
        print(f"warning: {e}; the JSON was written to {other} instead", file=sys.stderr, flush=True)
        p = other
    print(f"wrote {p}")
