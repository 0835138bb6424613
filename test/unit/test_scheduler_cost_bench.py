"""benchmark/scheduler_cost.py: the fit behind the simulator's scheduler-time charge."""

from __future__ import annotations

import pytest

from load_script import load_script

sc = load_script("benchmark/scheduler_cost.py")


def test_fit_line_recovers_a_line_and_never_returns_a_negative_cost():
    assert sc.fit_line([32, 64, 128, 256], [0.1 + 0.002 * x for x in (32, 64, 128, 256)]) == pytest.approx((0.1, 0.002))
    # a falling cost (timing noise) is charged flat at its mean, not with a negative slope
    assert sc.fit_line([32, 64, 128], [0.3, 0.2, 0.1]) == pytest.approx((0.2, 0.0))
    # a line through a negative intercept is refitted through the origin
    icpt, slope = sc.fit_line([32, 64, 128], [0.0, 0.05, 0.2])
    assert icpt == 0.0 and slope > 0


def test_fit_charges_an_arrival_its_add_and_what_it_changes_in_the_next_step():
    rows = [
        {"resident": n, "step_ms": 0.01 * n, "step_after_arrival_ms": 0.01 * n + 0.5, "add_ms": 0.25}
        for n in (32, 64, 128)
    ]
    got = sc.fit(rows)
    assert got["step_s"] == pytest.approx(0.0, abs=1e-12) and got["step_per_resident_s"] == pytest.approx(1e-5)
    assert got["add_s"] == pytest.approx(0.75e-3) and got["add_per_resident_s"] == pytest.approx(0.0, abs=1e-12)
    # an add that does work the step would have done (the tier view) is charged only the rest
    for r in rows:
        r["step_after_arrival_ms"] = r["step_ms"] - 0.05
    assert sc.fit(rows)["add_s"] == pytest.approx(0.2e-3)


def test_measure_times_a_step_and_an_arrival():
    slos = sc.measure("slos-serve", 32, 40, "opt-13b-tp2-a100", 0)
    assert slos["step_ms"] > 0 and slos["add_ms"] > 0 and slos["resident"] == 32


def test_a_policy_that_never_holds_the_requests_is_refused_not_timed_forever():
    # distserve's decode side only takes prefilled requests from its prefill side
    with pytest.raises(RuntimeError, match="never held"):
        sc.measure("distserve-decode", 32, 10, "opt-13b-tp2-a100", 0)
