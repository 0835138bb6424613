"""Arrival processes: Poisson and Gamma statistics, trace rate scaling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.workloads import arrival_times_s, interarrival_cv, scale_to_rate


def _gaps(t: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], t]))


def test_poisson_mean_rate_and_unit_cv():
    t = arrival_times_s("poisson", 4.0, 200_000, rng=np.random.default_rng(1))
    gaps = _gaps(t)
    assert np.all(gaps >= 0) and np.all(np.diff(t) >= 0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)
    # Poisson counts in unit windows: variance equals mean (rate 4).
    counts = np.bincount(t.astype(int))[:-1]
    assert counts.mean() == pytest.approx(4.0, rel=0.02)
    assert counts.var() == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 4.0])
def test_gamma_cv_and_rate(cv):
    t = arrival_times_s("gamma", 2.0, 200_000, cv=cv, rng=np.random.default_rng(7))
    gaps = _gaps(t)
    assert gaps.mean() == pytest.approx(0.5, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_poisson_ignores_cv_and_gamma_cv1_is_exponential_shape():
    a = arrival_times_s("poisson", 1.0, 1000, cv=9.0, rng=np.random.default_rng(3))
    b = arrival_times_s("poisson", 1.0, 1000, cv=0.1, rng=np.random.default_rng(3))
    assert np.array_equal(a, b)
    g = arrival_times_s("gamma", 1.0, 100_000, cv=1.0, rng=np.random.default_rng(3))
    assert interarrival_cv(g) == pytest.approx(1.0, abs=0.02)


def test_same_seed_same_times_and_rate_rescales_exactly():
    a = arrival_times_s("gamma", 1.0, 500, cv=3.0, rng=np.random.default_rng(11))
    b = arrival_times_s("gamma", 1.0, 500, cv=3.0, rng=np.random.default_rng(11))
    c = arrival_times_s("gamma", 4.0, 500, cv=3.0, rng=np.random.default_rng(11))
    assert np.array_equal(a, b)
    np.testing.assert_allclose(c, a / 4.0, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="uniform", rate_rps=1.0, n=3), "unknown arrival process"),
        (dict(kind="poisson", rate_rps=0.0, n=3), "positive"),
        (dict(kind="poisson", rate_rps=float("inf"), n=3), "positive"),
        (dict(kind="poisson", rate_rps=1.0, n=-1), ">= 0"),
        (dict(kind="gamma", rate_rps=1.0, n=3, cv=0.0), "CV"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        arrival_times_s(rng=np.random.default_rng(0), **kwargs)


def test_rng_is_required():
    with pytest.raises(ValueError, match="Generator"):
        arrival_times_s("poisson", 1.0, 3)


def test_scale_to_rate_keeps_burst_shape():
    t = np.array([10.0, 10.5, 10.6, 14.0, 20.0])  # native rate (5-1)/10 = 0.4 rps
    s = scale_to_rate(t, 2.0)
    assert s[0] == 0.0
    assert (s.size - 1) / s[-1] == pytest.approx(2.0)
    # every gap shrinks by the same factor 0.4/2
    np.testing.assert_allclose(np.diff(s), np.diff(t) * 0.2)
    assert interarrival_cv(s) == pytest.approx(interarrival_cv(t))


def test_scale_to_rate_degenerate_inputs():
    assert scale_to_rate(np.array([]), 1.0).size == 0
    np.testing.assert_array_equal(scale_to_rate(np.array([5.0]), 3.0), [0.0])
    np.testing.assert_array_equal(scale_to_rate(np.array([2.0, 2.0, 2.0]), 3.0), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        scale_to_rate(np.array([0.0, 1.0]), -1.0)
    assert np.isnan(interarrival_cv(np.array([1.0, 2.0])))
