"""tier_bars.png compares like with like: one common rate, or each target's capacity, labelled."""

from __future__ import annotations

from sloserve.bench.capacity import CapacityPoint, CapacityResult
from sloserve.bench.compare import TargetRuns, tier_bars


def run(rate, att: float) -> dict:
    return {"request_rate": rate, "attainment_by_tier": {"chatbot": att}}


def test_sweep_compares_every_target_at_the_highest_common_rate():
    a = TargetRuns("fcfs", [run(1.0, 0.9), run(2.0, 0.5), run(4.0, 0.1)])
    b = TargetRuns("slos-serve", [run(1.0, 1.0), run(2.0, 0.8)])
    bars, title = tier_bars([a, b])
    assert bars == {"fcfs": {"chatbot": 0.5}, "slos-serve": {"chatbot": 0.8}}
    assert title == "attainment per tier at 2 rps"


def test_all_at_once_is_named_not_a_number():
    bars, title = tier_bars([TargetRuns("a", [run("inf", 0.3)]), TargetRuns("b", [run("inf", 0.4)])])
    assert bars == {"a": {"chatbot": 0.3}, "b": {"chatbot": 0.4}} and title.endswith("all at once")


def test_capacity_search_labels_each_bar_with_its_rate():
    def searched(label: str, cap: float, rates: list[float]) -> TargetRuns:
        points = tuple(CapacityPoint(r, 0.9, run(r, 0.95 if r == cap else 0.2)) for r in rates)
        return TargetRuns(label, [p.result for p in points], CapacityResult(cap, 0.9, points))

    bars, title = tier_bars([searched("fcfs", 1.5, [0.5, 16.0, 1.5]), searched("slos-serve", 3.0, [0.5, 16.0, 3.0])])
    assert bars == {"fcfs @ 1.5 rps": {"chatbot": 0.95}, "slos-serve @ 3 rps": {"chatbot": 0.95}}
    assert title == "attainment per tier at each target's capacity"


def test_no_common_rate_labels_each_bar_with_its_rate():
    bars, _ = tier_bars([TargetRuns("a", [run(1.0, 0.5)]), TargetRuns("b", [run(2.0, 0.6)])])
    assert bars == {"a @ 1 rps": {"chatbot": 0.5}, "b @ 2 rps": {"chatbot": 0.6}}
