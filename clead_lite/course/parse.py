"""Numbers and seeds from the command line (argparse `type=` functions): one-line errors for bad text."""
from __future__ import annotations

import argparse
import math

from ..validate import SEED_MAX


def parse_fraction(text: str) -> float:
    """A number from the command line: '0.3', '8/255' or '2e-3' -> float (argparse `type=`)."""
    s = str(text).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: write a decimal (0.031) or a fraction (8/255)")
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: must be finite")
    return value


def parse_finite(text: str) -> float:
    """A finite number from the command line (argparse `type=`): '0.1', '1e-3'; 'inf' and 'nan' are refused."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: write a decimal such as 0.1 or 1e-3") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: must be finite")
    return value


def parse_seed(text: str) -> int:
    """A seed from the command line (argparse `type=`): an integer in [0, 2**32 - 1]."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: write an integer in [0, {SEED_MAX}]") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: must be in [0, {SEED_MAX}] (2**32 - 1)")
    return value
