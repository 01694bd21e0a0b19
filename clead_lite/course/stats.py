"""Statistics for the course's numbers.

1. The sampling error of one accuracy measured on n examples (a binomial proportion): its standard error
   is sqrt(p (1 - p) / n) and a 95 % interval is about p +- 1.96 SE (normal approximation; the Wilson
   interval stays inside [0, 1] and is better near 0 and 1). At p = 0.5: n = 200 -> +- 6.9 points,
   n = 1,000 -> +- 3.1, n = 10,000 -> +- 1.0.
2. For the results table: the sample SD, a paired bootstrap interval for the difference of two methods
   scored on the same images over the same seeds, and McNemar's exact test per seed.

    sample_sd([0.71, 0.74, 0.69])                    # ddof = 1
    paired_bootstrap(a, b)                           # a, b: (seeds, images) 0/1 correctness -> mean(a - b), CI
    mcnemar_exact(a[0], b[0])                        # one seed: discordant counts and the exact two-sided p

"""
from __future__ import annotations

import math
from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["binomial_se", "half_width_95", "wilson_interval", "Z95", "sample_sd", "paired_bootstrap", "PairedInterval", "mcnemar_exact", "McNemar"]

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



def sample_sd(values) -> float:
    """The sample standard deviation (ddof = 1) of the finite values; NaN for fewer than two."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if len(v) >= 2 else float("nan")


@dataclass(frozen=True)
class PairedInterval:
    """mean: the observed mean of a - b (accuracy points as a fraction); low / high: the percentile interval."""
    mean: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_images: int
    n_boot: int


def _as_matrix(a, name: str) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{name} must be (seeds, images) correctness values, got shape {m.shape}")
    return m


def paired_bootstrap(a, b, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> PairedInterval:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling seeds and images, both paired.

    a, b: (S, N) arrays (or (N,) for one seed) of per-image correctness (0 / 1, or any score) of two methods,
    row s = training seed s, column i = test image i, the same images and seeds for both. Each bootstrap
    draw takes S seeds with replacement and N images with replacement (the same draws for a and b, so the
    pairing is kept) and records the mean difference. With one seed it is the image-only bootstrap.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (same seeds and images), got shapes {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    d = a - b
    s, n = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    for k in range(int(n_boot)):
        rows = rng.integers(0, s, s)
        cols = rng.integers(0, n, n)
        means[k] = d[np.ix_(rows, cols)].mean()
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedInterval(mean=float(d.mean()), low=float(low), high=float(high), level=level, n_seeds=s,
                          n_images=n, n_boot=int(n_boot))


@dataclass(frozen=True)
class McNemar:
    """a_only: images right under a and wrong under b; b_only: the reverse; p: exact two-sided p-value."""
    a_only: int
    b_only: int
    p: float


def mcnemar_exact(a, b) -> McNemar:
    """McNemar's exact test of two classifiers on the same images: (N,) 0/1 correctness each.

    Under the null the a_only + b_only discordant images split like a fair coin:
    p = min(1, 2 * P(Binomial(a_only + b_only, 1/2) <= min(a_only, b_only))).
    """
    a = np.asarray(a).astype(bool).ravel()
    b = np.asarray(b).astype(bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same images, got {a.shape[0]} and {b.shape[0]}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)
    return McNemar(a_only=a_only, b_only=b_only, p=float(p))
