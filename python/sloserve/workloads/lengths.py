"""Synthetic length distributions: built in, so the default workloads need no data file.

A 1-D length distribution is a piecewise-linear map from a standard-normal score ``z`` to
``log(tokens)`` (its knots are the log-quantiles at ``Phi(z)``), extrapolated linearly beyond
the last knots and clipped to ``[lo, hi]``. Two knots make it exactly a lognormal; thirteen
knots fitted to a data set follow its shape (ShareGPT's prompt lengths are far from
lognormal). A prompt/output pair draws two correlated normal scores (a Gaussian copula), so
the rank correlation between prompt and output lengths is kept too.

The ``BUILTIN`` parameters were fitted once with :func:`fit_pair_model` on the public files
described in ``/work/shared/data/README.md`` (test/unit/test_workloads_lengths.py refits them
when the data is present); the fitted numbers, not the data, live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Normal scores at which fitted tables hold log-quantiles: Phi(z) = 0.13% .. 99.87%.
Z_KNOTS: tuple[float, ...] = tuple(k / 2 for k in range(-6, 7))


@dataclass(frozen=True)
class LengthDist:
    """One token-length distribution: knots (z, log tokens), clipped to [lo, hi]."""

    z_knots: tuple[float, ...]
    log_knots: tuple[float, ...]
    lo: int = 1
    hi: int = 1 << 20

    def __post_init__(self) -> None:
        if len(self.z_knots) < 2 or len(self.z_knots) != len(self.log_knots):
            raise ValueError("LengthDist needs >= 2 knots and as many z as log values")
        if any(b <= a for a, b in zip(self.z_knots, self.z_knots[1:])):
            raise ValueError("LengthDist z knots must increase")
        if not 1 <= self.lo <= self.hi:
            raise ValueError(f"LengthDist needs 1 <= lo <= hi, got {self.lo}, {self.hi}")

    @classmethod
    def lognormal(cls, median: float, sigma: float, lo: int = 1, hi: int = 1 << 20) -> "LengthDist":
        """Lognormal with this median and log-standard-deviation, clipped to [lo, hi]."""
        mu = math.log(median)
        return cls((-1.0, 1.0), (mu - sigma, mu + sigma), lo, hi)

    def from_scores(self, z: np.ndarray) -> np.ndarray:
        """Token lengths (int64) for standard-normal scores ``z``."""
        zk = np.asarray(self.z_knots)
        lk = np.asarray(self.log_knots)
        logs = np.interp(z, zk, lk)
        # np.interp clamps; continue the end segments' slopes so tails stay lognormal-like.
        lo_slope = (lk[1] - lk[0]) / (zk[1] - zk[0])
        hi_slope = (lk[-1] - lk[-2]) / (zk[-1] - zk[-2])
        logs = np.where(z < zk[0], lk[0] + (z - zk[0]) * lo_slope, logs)
        logs = np.where(z > zk[-1], lk[-1] + (z - zk[-1]) * hi_slope, logs)
        return np.clip(np.rint(np.exp(logs)), self.lo, self.hi).astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.from_scores(rng.standard_normal(n))


@dataclass(frozen=True)
class PairLengthModel:
    """Prompt and output lengths with a Gaussian-copula correlation ``rho``."""

    name: str
    prompt: LengthDist
    output: LengthDist
    rho: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if not -1.0 < self.rho < 1.0:
            raise ValueError(f"rho must be in (-1, 1), got {self.rho}")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(prompt_tokens, output_tokens), each int64 of shape (n,)."""
        z = rng.standard_normal((2, n))
        z_out = self.rho * z[0] + math.sqrt(1.0 - self.rho**2) * z[1]
        return self.prompt.from_scores(z[0]), self.output.from_scores(z_out)


def fit_length_dist(values: np.ndarray) -> LengthDist:
    """Fit the 13-knot table to observed lengths (log-quantiles at Phi(Z_KNOTS))."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.size < 2 or np.any(vals < 1):
        raise ValueError("fit_length_dist needs >= 2 lengths, all >= 1")
    probs = [NormalDist().cdf(z) for z in Z_KNOTS]
    logq = np.log(np.quantile(vals, probs))
    return LengthDist(Z_KNOTS, tuple(round(float(v), 3) for v in logq), int(vals.min()), int(vals.max()))


def fit_pair_model(prompt: np.ndarray, output: np.ndarray, name: str, source: str = "") -> PairLengthModel:
    """Fit marginals and the copula correlation (from Spearman's rank correlation)."""
    p = np.asarray(prompt, dtype=np.float64)
    o = np.asarray(output, dtype=np.float64)
    if p.shape != o.shape:
        raise ValueError("prompt and output arrays differ in shape")
    rp = np.argsort(np.argsort(p, kind="stable"), kind="stable")
    ro = np.argsort(np.argsort(o, kind="stable"), kind="stable")
    spearman = float(np.corrcoef(rp, ro)[0, 1])
    rho = 2.0 * math.sin(math.pi * spearman / 6.0)  # Spearman -> Gaussian-copula correlation
    return PairLengthModel(name, fit_length_dist(p), fit_length_dist(o), round(rho, 3), source)


def _table(logs: tuple[float, ...], lo: int, hi: int) -> LengthDist:
    return LengthDist(Z_KNOTS, logs, lo, hi)


# Fitted with fit_pair_model on the files named in `source` (token counts as published there).
BUILTIN: dict[str, PairLengthModel] = {
    m.name: m
    for m in (
        PairLengthModel(
            "sharegpt",
            _table(
                (1.792, 2.303, 2.833, 3.664, 5.347, 6.700, 7.456, 8.058, 8.476, 8.743, 8.868, 8.932, 8.961), 1, 8141
            ),
            _table(
                (0.693, 1.099, 3.091, 4.043, 4.934, 5.631, 6.028, 6.349, 6.607, 6.791, 6.877, 6.915, 6.928), 2, 1024
            ),
            0.053,
            "ShareGPT, Llama-2 tokens, total <= 8k (sarathi-serve data/processed_traces/sharegpt_8k)",
        ),
        PairLengthModel(
            "arxiv-summarization",
            _table(
                (0.000, 3.761, 5.645, 6.839, 7.383, 7.686, 7.912, 8.080, 8.183, 8.237, 8.264, 8.283, 8.295), 1, 4054
            ),
            _table(
                (3.045, 3.434, 3.829, 4.220, 4.543, 4.836, 5.118, 5.389, 5.694, 6.176, 7.880, 8.161, 8.246), 5, 4056
            ),
            -0.119,
            "arXiv summarization, Llama-2 tokens, total <= 4k (vidur data/processed_traces)",
        ),
        PairLengthModel(
            "azure-code",
            _table(
                (1.946, 2.639, 3.689, 4.543, 5.522, 6.694, 7.292, 7.783, 8.227, 8.747, 8.914, 8.914, 8.914), 3, 7437
            ),
            _table(
                (1.792, 1.792, 1.792, 1.792, 2.079, 2.303, 2.565, 2.944, 3.611, 4.304, 5.033, 5.729, 6.665), 6, 1899
            ),
            -0.022,
            "Azure LLM inference trace 2023, code (ContextTokens, GeneratedTokens)",
        ),
        PairLengthModel(
            "azure-conv",
            _table(
                (2.097, 2.996, 4.787, 5.283, 5.924, 6.001, 6.928, 7.024, 7.446, 8.313, 8.317, 8.418, 8.696), 2, 14050
            ),
            _table(
                (2.485, 2.639, 3.296, 3.829, 4.234, 4.522, 4.860, 5.938, 6.019, 6.078, 6.275, 6.439, 6.845), 7, 1000
            ),
            0.076,
            "Azure LLM inference trace 2023, conversation (ContextTokens, GeneratedTokens)",
        ),
    )
}


def get_length_model(name: str) -> PairLengthModel:
    """A built-in prompt/output length model by name; KeyError listing the choices."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise KeyError(f"unknown length distribution {name!r}; choices: {', '.join(sorted(BUILTIN))}") from None
