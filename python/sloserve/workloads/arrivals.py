"""Arrival processes: Poisson, Gamma with a burstiness knob, and trace rate scaling."""

from __future__ import annotations

import numpy as np

ARRIVAL_KINDS = ("poisson", "gamma")


def arrival_times_s(
    kind: str, rate_rps: float, n: int, cv: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``n`` arrival times (seconds, increasing) of a renewal process with mean rate ``rate_rps``.

    ``poisson``: exponential inter-arrival times (``cv`` ignored). ``gamma``: Gamma
    inter-arrival times with coefficient of variation ``cv`` (shape ``1/cv^2``); cv 1 is
    Poisson, larger is burstier. The first arrival is one gap after time 0.
    """
    if kind not in ARRIVAL_KINDS:
        raise ValueError(f"unknown arrival process {kind!r}; choices: {', '.join(ARRIVAL_KINDS)}")
    if not (rate_rps > 0 and np.isfinite(rate_rps)):
        raise ValueError(f"arrival rate must be a positive number, got {rate_rps}")
    if n < 0:
        raise ValueError(f"number of arrivals must be >= 0, got {n}")
    if rng is None:
        raise ValueError("arrival_times_s needs a seeded numpy Generator (rng)")
    if kind == "poisson":
        gaps = rng.exponential(1.0 / rate_rps, size=n)
    else:
        if not (cv > 0 and np.isfinite(cv)):
            raise ValueError(f"burstiness CV must be a positive number, got {cv}")
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=n)
    return np.cumsum(gaps)


def scale_to_rate(times_s: np.ndarray, rate_rps: float) -> np.ndarray:
    """Shift ``times_s`` to start at 0 and scale every gap by one factor so the mean rate,
    ``(n - 1) / span``, equals ``rate_rps``. The burst shape (relative gaps) is kept.

    With fewer than two distinct times there is no rate to scale: the shifted times return.
    """
    if not (rate_rps > 0 and np.isfinite(rate_rps)):
        raise ValueError(f"arrival rate must be a positive number, got {rate_rps}")
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0:
        return t.copy()
    shifted = t - t[0]
    span = float(shifted[-1])
    if t.size < 2 or span <= 0:
        return shifted
    native_rate = (t.size - 1) / span
    return shifted * (native_rate / rate_rps)


def interarrival_cv(times_s: np.ndarray) -> float:
    """Coefficient of variation of the gaps between consecutive times (nan with < 3 times)."""
    gaps = np.diff(np.asarray(times_s, dtype=np.float64))
    if gaps.size < 2 or gaps.mean() <= 0:
        return float("nan")
    return float(gaps.std() / gaps.mean())
