"""Sampling error of an accuracy measured on n examples (a binomial proportion).

An accuracy p on n test images is an estimate of the accuracy on the whole distribution; its standard
error is sqrt(p (1 - p) / n) and a 95 % interval is about p +- 1.96 SE (normal approximation; the Wilson
interval below stays inside [0, 1] and is better near 0 and 1). At p = 0.5: n = 200 -> +- 6.9 points,
n = 1,000 -> +- 3.1, n = 10,000 -> +- 1.0.
Floor 0: imports nothing of the package.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def _check(p: float, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (the number of examples), got {n!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be an accuracy in [0, 1], got {p!r}")


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p in [0, 1] measured on n examples: sqrt(p (1 - p) / n)."""
    _check(p, n)
    return math.sqrt(p * (1.0 - p) / n)


def half_width_95(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95 % interval: 1.96 * binomial_se(p, n)."""
    return Z95 * binomial_se(p, n)


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (default 95 %) of an accuracy p measured on n examples: (low, high)."""
    _check(p, n)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
