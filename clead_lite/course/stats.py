"""Statistics for the course's numbers.

1. The sampling error of one accuracy measured on n examples (a binomial proportion): its standard error
   is sqrt(p (1 - p) / n) and a 95 % interval is about p +- 1.96 SE (normal approximation; the Wilson
   interval stays inside [0, 1] and is better near 0 and 1). At p = 0.5: n = 200 -> +- 6.9 points,
   n = 1,000 -> +- 3.1, n = 10,000 -> +- 1.0.
2. For the results table: the sample SD, a paired bootstrap interval for the difference of two methods
   scored on the same images over the same seeds, and McNemar's exact test per seed.
3. Two more, because three seeds are few and the tables show many tests:
   - the t-interval over seeds: mean +- t * SD / sqrt(S) of the S per-seed differences, t the 97.5 %
     quantile of Student's t with S - 1 degrees of freedom (4.30 for 3 seeds, 2.78 for 5, 1.96 for many).
     The seeds are the only sample here (each seed's difference is taken as exact), so it answers "would
     other training seeds give the same gap?"; the bootstrap above resamples images as well but only has
     the S seeds to draw from. Which is wider depends on how much the seeds disagree compared with the
     images' noise; with 3 seeds neither is reliable alone. Read both.
   - Holm's correction: a table that shows m tests will show some p < 0.05 by chance even when nothing
     differs. Holm (1979) sorts the p-values, multiplies the smallest by m, the next by m - 1, ..., keeps the
     adjusted values non-decreasing and caps them at 1; an adjusted p < 0.05 keeps the probability of any
     false "difference" in the whole family of m tests below 5 %.

    sample_sd([0.71, 0.74, 0.69])                    # ddof = 1
    paired_bootstrap(a, b)                           # a, b: (seeds, images) 0/1 correctness -> mean(a - b), CI
    mcnemar_exact(a[0], b[0])                        # one seed: discordant counts and the exact two-sided p
    t_interval([0.032, 0.040, 0.036])                # mean and 95 % interval over seeds (Student's t)
    holm([0.017, 0.0003, 0.0096])                    # Holm-adjusted p-values, same order

"""
from __future__ import annotations

import math
from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["binomial_se", "half_width_95", "wilson_interval", "Z95", "sample_sd", "paired_bootstrap", "PairedInterval",
           "mcnemar_exact", "McNemar", "t_interval", "TInterval", "holm"]

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


@dataclass(frozen=True)
class TInterval:
    """mean, low, high of the per-seed values; p: the two-sided one-sample t-test of mean = 0 (NaN for fewer
    than two values, or when every value is the same: no spread to test against); n: the number of values."""
    mean: float
    low: float
    high: float
    p: float
    n: int
    level: float


def t_interval(values, level: float = 0.95) -> TInterval:
    """Student's t interval over the finite `values` (e.g. one difference per training seed):
    mean +- t_{level, n-1} * SD / sqrt(n), SD the sample SD (ddof = 1), and the matching t-test p of mean = 0.
    With one value the interval is (NaN, NaN); with identical values it is that value, p NaN."""
    from scipy import stats as _st
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(v)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(v.mean())
    if n < 2:
        return TInterval(mean, math.nan, math.nan, math.nan, n, level)
    se = float(v.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return TInterval(mean, mean, mean, math.nan, n, level)
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * _st.t.sf(abs(mean) / se, n - 1))
    return TInterval(mean, mean - half, mean + half, p, n, level)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m p-values is multiplied
    by m - k + 1, the results made non-decreasing in that order and capped at 1. NaN values are left out of
    the family (and returned as NaN)."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out.tolist()
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must be in [0, 1], got {p[ok].tolist()}")
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()
