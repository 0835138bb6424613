"""benchmark/overload_expiry.py without a server: its per-point summary and its refusals."""

from __future__ import annotations

import json

from load_script import load_script

bench = load_script("benchmark/overload_expiry.py")


def test_a_point_counts_admitted_misses_and_tiers():
    details = [
        {"tier": "slo", "attained": True, "ttft_ms": 20.0},
        {"tier": "slo", "attained": False, "ttft_ms": 300.0},
        {"tier": "best_effort", "attained": False, "ttft_ms": 900.0},
        {"tier": "rejected", "attained": False, "ttft_ms": None},
    ]
    p = bench.point({"details": details, "attainment": 0.25}, "expire", 20.0, 1)
    assert (p["admitted"], p["admitted_misses"], p["requests"]) == (2, 1, 4)
    assert p["tiers"] == {"slo": 2, "best_effort": 1, "rejected": 1} and p["median_ttft_ms"] == 300.0


def test_it_refuses_without_a_capacity_or_a_cached_fit(tmp_path, capsys):
    no_capacity = tmp_path / "a.json"
    no_capacity.write_text(json.dumps({"measured_capacity_rps": None}))
    assert bench.main(["--from-json", str(no_capacity)]) == 2
    assert "no measured capacity" in capsys.readouterr().err
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"measured_capacity_rps": 12.5}))
    assert bench.main(["--from-json", str(run), "--work-dir", str(tmp_path / "empty")]) == 2
    assert "run benchmark/real_vs_sim.py first" in capsys.readouterr().err
