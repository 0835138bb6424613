"""The KV growth calibration (planner/growth.py): what it samples and the rate it reports."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sloserve.planner.growth import MIN_SAMPLES, GrowthCalibration


def item(rid: str):
    return SimpleNamespace(request_id=rid)


def resident(first_token_s: float | None):
    return SimpleNamespace(first_token_s=first_token_s)


def feed(cal: GrowthCalibration, residents: dict, tokens: dict, steps: int, step_s: float, t0: float = 0.0) -> float:
    t = t0
    for _ in range(steps):
        t += step_s
        cal.observe([item(rid) for rid in tokens], tokens, residents, t)
    return t


def test_the_rate_is_the_margin_times_the_quantile_of_one_second_gains():
    cal = GrowthCalibration(quantile=0.99, margin=1.25)
    residents = {"a": resident(0.0), "b": resident(0.0)}
    # a gains 3 tokens per 125 ms step (24 a second), b one (8 a second)
    feed(cal, residents, {"a": 3, "b": 1}, steps=400, step_s=0.125)
    assert cal.rate_tps() == pytest.approx(24 * 1.25)
    low = GrowthCalibration(quantile=0.25, margin=1.0)
    feed(low, residents, {"a": 3, "b": 1}, steps=400, step_s=0.125)
    assert low.rate_tps() == pytest.approx(8.0)


def test_no_rate_until_enough_samples_and_only_from_residents_decoding_the_whole_window():
    cal = GrowthCalibration(quantile=0.99, margin=1.0)
    # a resident whose first token is not a window old gives no sample: its first second
    # includes the prefill, not a decode rate
    late = {"x": resident(None)}
    feed(cal, late, {"x": 5}, steps=2 * MIN_SAMPLES, step_s=0.0625)
    assert cal.rate_tps() is None
    residents = {"a": resident(0.0)}
    t = feed(cal, residents, {"a": 2}, steps=MIN_SAMPLES // 2, step_s=0.0625, t0=1.0)
    assert cal.rate_tps() is None  # half the samples it needs
    feed(cal, residents, {"a": 2}, steps=MIN_SAMPLES, step_s=0.0625, t0=t)
    assert cal.rate_tps() == pytest.approx(32.0)  # 2 tokens per 62.5 ms step


def test_departed_requests_are_forgotten_and_the_rate_follows_recent_samples():
    cal = GrowthCalibration(quantile=0.5, margin=1.0)
    t = feed(cal, {"a": resident(0.0)}, {"a": 4}, steps=600, step_s=0.125)
    assert cal.rate_tps() == pytest.approx(32.0)
    # a leaves; b decodes slower: once its samples fill the window of recent ones, the median follows
    cal.observe([], {}, {"b": resident(t)}, t + 0.1)
    assert "a" not in cal._recent
    feed(cal, {"b": resident(0.0)}, {"b": 1}, steps=5000, step_s=0.125, t0=t)
    assert cal.rate_tps() == pytest.approx(8.0)


@pytest.mark.parametrize("quantile, margin", [(0.0, 1.25), (1.5, 1.25), (0.99, 0.9)])
def test_bad_settings_are_refused(quantile, margin):
    with pytest.raises(ValueError):
        GrowthCalibration(quantile, margin)
