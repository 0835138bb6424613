"""Benchmark clients against the real server: sloserve's bench_serving and SGLang's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sloserve.bench.cli import main as bench_main
from sloserve.sglang import cpu_mode

pytestmark = pytest.mark.slow


def test_bench_serving_reads_the_plugins_report(plugin, tmp_path):
    out = tmp_path / "bench.jsonl"
    args = [
        *f"--base-url {plugin.url} --dataset-name random --random-input-len 32 --random-output-len 12".split(),
        *"--random-range-ratio 1.0 --num-prompts 6 --request-rate 4 --slo-class chatbot-S --seed 5".split(),
        # SLOs a busy CI host meets: one it does not admit would now end with 429 at its deadline
        *"--slo-scale 10 --warmup-requests 0 --request-timeout-s 120 --disable-tqdm --output-file".split(),
        str(out),
    ]
    assert bench_main(args) == 0
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["completed"] == 6 and result["num_errors"] == 0
    assert result["admitted_fraction"] is not None  # read from meta_info.tier, the shared schema
    assert result["server_slo_met_fraction"] is not None  # meta_info.slo_met, reported by the plugin


def test_sglangs_own_benchmark_runs_against_the_plugin(plugin, model_dir, tmp_path):
    out = tmp_path / "sglang-bench.jsonl"
    cmd = [
        sys.executable,
        *f"-m sglang.benchmark.serving --backend sglang --base-url {plugin.url} --dataset-name random-ids".split(),
        *"--random-input-len 32 --random-output-len 8 --random-range-ratio 1.0 --num-prompts 6".split(),
        *f"--request-rate 4 --model {model_dir} --tokenizer {model_dir} --output-file {out}".split(),
        *"--disable-tqdm --seed 1".split(),
    ]
    env = cpu_mode.help_environment(dict(os.environ))  # SGLang imports triton at module level
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["completed"] == 6 and result["total_output_tokens"] == 6 * 8


def test_bench_serving_counts_the_plugins_streamed_refusals(plugin, tmp_path):
    """SGLang streams a refusal as a 200 whose abort chunk carries the status: bench_serving's
    client must count it as refused (429, tier "rejected"), not as an admitted request that missed."""
    out = tmp_path / "refused.jsonl"
    args = [
        *f"--base-url {plugin.url} --dataset-name random --random-input-len 32 --random-output-len 4".split(),
        *"--random-range-ratio 1.0 --num-prompts 3 --request-rate inf --slo-class chatbot-S --seed 5".split(),
        *"--slo-scale 0.00001 --warmup-requests 0 --request-timeout-s 120 --disable-tqdm --output-details".split(),
        "--output-file",
        str(out),
    ]
    assert bench_main(args) == 0
    result = json.loads(out.read_text().splitlines()[-1])
    assert [d["status"] for d in result["details"]] == [429] * 3, result["details"]
    assert all(d["tier"] == "rejected" for d in result["details"]) and result["num_rejected"] == 3
