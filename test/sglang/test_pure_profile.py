"""scripts/profile_sglang.py's conversion, checked against the perf engineer's CSV loader."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_sglang.py"


@pytest.fixture(scope="module")
def profile():
    spec = importlib.util.spec_from_file_location("profile_sglang", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_become_prefill_and_decode_rows_the_fitter_reads(profile, tmp_path):
    records = [
        {
            "batch_size": 4,
            "input_len": 256,
            "output_len": 32,
            "prefill_latency": 0.0125,
            "median_decode_latency": 0.008,
        },
        {"batch_size": 64, "input_len": 256, "output_len": 32, "prefill_latency": 0.2},  # no decode timing
    ]
    rows = profile.rows_from_results(records)
    assert rows == [
        {"num_tokens": 1024, "spec_steps": 0, "kv_read_tokens": 0, "time_ms": 12.5},
        {"num_tokens": 4, "spec_steps": 0, "kv_read_tokens": 4 * (256 + 16), "time_ms": 8.0},
        {"num_tokens": 16384, "spec_steps": 0, "kv_read_tokens": 0, "time_ms": 200.0},
    ]
    out = tmp_path / "p.csv"
    profile.write_csv(rows, str(out))
    from sloserve.perf.fit import load_profile_csv

    data = load_profile_csv(out)
    assert list(data.num_tokens) == [1024, 4, 16384]


def test_dry_run_prints_one_benchmark_per_input_length(profile, capsys):
    assert (
        profile.main(
            [
                "--model-path",
                "m",
                "--out",
                "x.csv",
                "--input-lens",
                "64",
                "128",
                "--dry-run",
                "--",
                "--mem-fraction-static",
                "0.5",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(
        "sglang.benchmark.one_batch" in l and "--mem-fraction-static 0.5" in l for l in lines
    )
    assert "--load-format dummy" in lines[0] and "--input-len 64" in lines[0]
