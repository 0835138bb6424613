"""Acceptance model and online alpha estimation (sloserve.spec.acceptance)."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.sim.engine import SimulatedEngine
from sloserve.spec.acceptance import AlphaEstimator, expected_tokens, planned_tokens, step_observation


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("positions", [1, 2, 4, 7])
def test_expected_tokens_matches_the_simulated_engine(alpha, positions):
    engine = SimulatedEngine(perf=None, rng=np.random.default_rng(7))
    draws = [1 + engine.accepted_drafts(alpha, positions - 1) for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(expected_tokens(alpha, positions), rel=0.02)


def test_expected_tokens_edge_cases():
    assert expected_tokens(0.8, 1) == 1.0
    assert expected_tokens(0.0, 5) == 1.0
    assert expected_tokens(1.0, 5) == 5.0
    assert expected_tokens(0.5, 3) == pytest.approx(1.75)


def test_planned_tokens_discounts_only_the_gain():
    full = expected_tokens(0.8, 4)
    assert planned_tokens(0.8, 4, 0.0) == pytest.approx(full)
    assert planned_tokens(0.8, 4, 1.0) == 1.0
    assert planned_tokens(0.8, 4, 0.25) == pytest.approx(1 + 0.75 * (full - 1))
    assert planned_tokens(0.8, 1, 0.25) == 1.0


def test_step_observation_counts_and_censoring():
    assert step_observation(3, 1, False) == (0, 1)  # first draft rejected
    assert step_observation(3, 3, False) == (2, 1)
    assert step_observation(3, 4, False) == (3, 0)  # all accepted: no failure observed
    assert step_observation(3, 2, True) == (1, 0)  # output ended: the rest was never verified
    assert step_observation(0, 1, False) == (0, 0)  # not a verify step
    assert step_observation(3, 0, False) == (0, 0)


def _run_estimator(alpha_true: float, output_len: int, drafts: int, seed: int, censor: bool):
    """Requests of ``output_len`` tokens verified with ``drafts`` drafts until they end."""
    rng = np.random.default_rng(seed)
    est = AlphaEstimator(prior_alpha=0.5, prior_strength=1.0)
    for rid in range(300):
        done = 0
        while done < output_len:
            u = rng.random(drafts)
            rej = np.nonzero(u >= alpha_true)[0]
            produced = 1 + (int(rej[0]) if rej.size else drafts)
            produced = min(produced, output_len - done)
            done += produced
            ended = done >= output_len
            est.observe("c", str(rid), drafts, produced, ended and censor)
    return est.class_alpha("c")


@pytest.mark.parametrize("alpha_true", [0.5, 0.7, 0.9])
def test_online_estimate_converges_and_censoring_removes_the_bias(alpha_true):
    # short outputs make many steps truncated by the output end
    fair = _run_estimator(alpha_true, output_len=6, drafts=4, seed=1, censor=True)
    naive = _run_estimator(alpha_true, output_len=6, drafts=4, seed=1, censor=False)
    assert fair == pytest.approx(alpha_true, abs=0.02)
    assert naive < fair - 0.01  # counting truncated steps as rejections underestimates alpha


def test_estimator_is_deterministic():
    a = _run_estimator(0.7, 10, 3, seed=5, censor=True)
    b = _run_estimator(0.7, 10, 3, seed=5, censor=True)
    assert a == b


def test_prior_only_mode_ignores_observations():
    est = AlphaEstimator(prior_alpha=0.8, online=False)
    for _ in range(100):
        est.observe("c", "r", 4, 1, False)
    assert est.class_alpha("c") == 0.8
    assert est.request_alpha("r", "c") == 0.8


def test_prior_weight_and_per_request_estimate():
    est = AlphaEstimator(prior_alpha=0.5, prior_strength=10.0, request_min_trials=5)
    assert est.class_alpha("unseen") == 0.5
    est.observe("c", "a", 4, 5, False)  # 4 successes
    assert est.class_alpha("c") == pytest.approx((5 + 4) / 14)
    assert est.request_alpha("a", "c") == est.class_alpha("c")  # 4 trials < 5: the class's
    est.observe("c", "b", 4, 1, False)  # request b: one failure
    est.observe("c", "a", 4, 5, False)  # a: 8 successes, 0 failures
    base = est.class_alpha("c")
    assert est.request_alpha("a", "c") == pytest.approx((base * 10 + 8) / 18)
    assert est.request_alpha("a", "c") > base > est.request_alpha("b", "c") - 1e-12
    est.forget("a")
    assert est.request_alpha("a", "c") == base
    assert est.snapshot()["c"]["trials"] == 9


def test_estimator_rejects_bad_arguments():
    with pytest.raises(ValueError):
        AlphaEstimator(prior_alpha=1.0)
    with pytest.raises(ValueError):
        AlphaEstimator(prior_alpha=0.5, prior_strength=0)
