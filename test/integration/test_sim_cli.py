"""`python -m sloserve.sim run|capacity` as users call it: JSON fields, exit codes, plots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sloserve.datadir import data_dir


def sim(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sloserve.sim", *args], capture_output=True, text=True, timeout=300, check=check
    )


def test_run_writes_the_documented_json(tmp_path):
    out = tmp_path / "out.json"
    plot = tmp_path / "run.png"
    trace = tmp_path / "run.trace.json"
    proc = sim(
        "run",
        "--scenario",
        "coder",
        "--policy",
        "fcfs",
        "--rate",
        "2.0",
        "--num-requests",
        "80",
        "--json",
        str(out),
        "--plot",
        str(plot),
        "--chrome-trace",
        str(trace),
        check=True,
    )
    data = json.loads(out.read_text())
    assert json.loads(proc.stdout) == data
    for key in (
        "attainment",
        "admitted_fraction",
        "attainment_by_tier",
        "ttft_ms",
        "tpot_ms",
        "goodput_rps",
        "num_requests",
        "num_completed",
        "num_rejected",
        "sim_wall_s",
        "num_admitted",
        "num_best_effort",
        "num_admitted_slo_misses",
    ):
        assert key in data, key
    assert data["num_requests"] == 80
    assert data["num_completed"] + data["num_rejected"] == 80
    assert 0.0 <= data["attainment"] <= 1.0
    assert plot.stat().st_size > 1000
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["name"] == "step" for e in events)


def test_capacity_brackets_and_bisects(tmp_path):
    out = tmp_path / "cap.json"
    sim(
        "capacity",
        "--scenario",
        "chatbot",
        "--policy",
        "fcfs",
        "--num-requests",
        "60",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "cap.png"),
        check=True,
    )
    data = json.loads(out.read_text())
    cap = data["capacity_rps"]
    rates = {p["rate_rps"]: p["attainment"] for p in data["points"]}
    assert cap > 0 and cap in rates and rates[cap] >= 0.9
    above = [r for r, a in rates.items() if r > cap and a < 0.9]
    assert above and (min(above) - cap) / min(above) <= 0.025 + 1e-9
    assert data["capacity_rps_per_gpu"] == pytest.approx(cap / 2)  # opt-13b-tp2: 2 GPUs per replica


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--scenario", "nope"], "scenario"),
        (["--policy", "nope"], "unknown policy"),
        (["--model", "nope"], "unknown model preset"),
        (["--router", "nope"], "unknown router"),
        (["--trace", "/does/not/exist.csv"], "exist"),
        (["--trace-window", "5:1"], "--trace"),
        (["--policy-opt", "novalue"], "key=value"),
        (["--policy", "fcfs", "--policy-opt", "bogus=1"], "bogus"),
    ],
)
def test_bad_arguments_fail_with_one_line_and_exit_2(args, needle):
    proc = sim("run", "--num-requests", "5", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.skipif(data_dir() is None or not (data_dir() / "traces").is_dir(), reason="shared data not present")
def test_trace_window_outside_the_trace_is_rejected():
    trace = str(data_dir() / "traces" / "AzureLLMInferenceTrace_conv.csv")
    proc = sim("run", "--policy", "fcfs", "--trace", trace, "--trace-window", "999999:1000000")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "window" in proc.stderr


def test_workload_config_reads_the_raw_trace_window_for_benchmarks():
    """Benchmarks reuse the CLI options without the CLI's own parsing step."""
    import argparse

    from sloserve.sim.options import add_sim_arguments, workload_config

    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args(["--trace", "t.csv", "--trace-window", "900:1200"])
    assert workload_config(args, 2.0).trace_window_s == (900.0, 1200.0)


def test_bare_trace_and_lengths_names_are_found_in_the_data_dir(tmp_path):
    """README: data files are read from $SLOSERVE_DATA_DIR (or ../shared/data) by bare name."""
    import os

    data = tmp_path / "data"
    (data / "traces").mkdir(parents=True)
    (data / "traces" / "tiny.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(f"2023-11-16 18:00:{i:02d}.0,{100 + i},{10 + i}\n" for i in range(20))
    )
    (data / "lens.csv").write_text("num_prefill_tokens,num_decode_tokens\n" + "100,20\n" * 20)
    env = {**os.environ, "SLOSERVE_DATA_DIR": str(data)}
    for args in (["--trace", "tiny.csv"], ["--lengths", "lens.csv", "--num-requests", "10"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sloserve.sim", "run", "--policy", "fcfs", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["num_requests"] > 0


@pytest.mark.parametrize("command", ["run", "capacity"])
def test_help_lists_names_and_defaults(command):
    text = " ".join(sim(command, "--help", check=True).stdout.split())  # unwrap argparse's lines
    for needle in (
        "(default: slos-serve)",
        "(default: chatbot)",
        "(default: round-robin)",
        "distserve",
        "sarathi",
        "opt-13b-tp2-a100",
        "tool-calling",
        "slo-proactive",
        "(default: 97648)",
    ):
        assert needle in text, needle
