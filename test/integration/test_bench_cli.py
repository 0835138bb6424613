"""bench_serving.py without a server: flag errors, unreachable servers, the capacity bisection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sloserve.bench.capacity import capacity_search
from sloserve.bench.cli import main
from sloserve.bench.config import BenchConfig, config_from_args
from sloserve.bench.dataset import build_bench_workload
from sloserve.datadir import data_file

SCRIPT = str(Path(__file__).resolve().parents[2] / "benchmark" / "bench_serving.py")


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--num-prompts", "0"], "--num-prompts"),
        (["--backend", "tgi"], "--backend"),
        (["--burstiness", "-1"], "--burstiness"),
        (["--trace-window", "5:1", "--trace", "x.csv"], "--trace-window"),
        (["--trace-window", "0:10"], "needs --trace"),
        (["--dataset-name", "sharegpt"], "--dataset-path"),
        (["--dataset-name", "random", "--trace", "t.csv"], "scenario only"),
        (["--request-rates", "1,zero"], "--request-rates"),
        (["--base-url", "localhost:30000"], "http://"),
        (["--base-url", "http://a:1", "--policy", "fcfs"], "not both"),
        (["--no-such-flag"], "unrecognized"),
        (["--scenario", "nope"], "--scenario"),
        (["--slo-class", "gold"], "--slo-class"),
        (["--model", "gpt-9"], "--model"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0] and lines[0].startswith("bench_serving.py: error:")
    assert out == ""


def test_bad_flag_from_the_script_exits_2():
    proc = run_cli("--request-rate", "-3")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--request-rate" in proc.stderr


def test_unreachable_server_fails_clearly():
    proc = run_cli("--base-url", "http://127.0.0.1:9", "--num-prompts", "2", "--disable-tqdm")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach server at http://127.0.0.1:9" in lines[0], proc.stderr


def test_flags_follow_sglang_names_and_defaults():
    cfg = config_from_args(["--backend", "vllm", "--host", "10.0.0.1", "--num-prompts", "7", "--seed", "3"])
    assert cfg.urls == ("http://10.0.0.1:8000",)
    assert config_from_args([]).urls == ("http://127.0.0.1:30000",)
    assert config_from_args(["--base-url", "http://h:1/", "--base-url", "http://h:2"]).urls == (
        "http://h:1",
        "http://h:2",
    )
    assert cfg.request_rate == float("inf") and cfg.num_prompts == 7


def test_same_seed_same_programs_at_another_rate():
    cfg = BenchConfig(scenario="tool-calling", num_prompts=20, seed=5)
    slow, fast = build_bench_workload(cfg, 1.0), build_bench_workload(cfg, 4.0)
    assert [p.stages for p in slow.programs] == [p.stages for p in fast.programs]
    assert slow.programs[-1].arrival_s == pytest.approx(4 * fast.programs[-1].arrival_s)
    burst = build_bench_workload(BenchConfig(scenario="tool-calling", num_prompts=20, seed=5, burstiness=4.0), 1.0)
    assert [p.arrival_s for p in burst.programs] != [p.arrival_s for p in slow.programs]
    assert all(p.arrival_s == 0 for p in build_bench_workload(cfg, float("inf")).programs)


def test_slo_scale_tightens_every_stage():
    base = build_bench_workload(BenchConfig(scenario="reasoning", num_prompts=5), 1.0).programs[0].stages[0]
    tight = (
        build_bench_workload(BenchConfig(scenario="reasoning", num_prompts=5, slo_scale=0.5), 1.0).programs[0].stages[0]
    )
    assert [s.tpot_ms * 0.5 for s in base.segments] == [s.tpot_ms for s in tight.segments]
    assert tight.ttft.slowdown == pytest.approx(base.ttft.slowdown * 0.5)
    assert [s.name for s in base.segments] == ["thinking", "answer"]


def test_random_dataset_lengths_in_range():
    wl = build_bench_workload(
        BenchConfig(
            dataset_name="random",
            random_input_len=100,
            random_output_len=10,
            random_range_ratio=0.5,
            num_prompts=50,
            slo_class="coder",
        ),
        2.0,
    )
    assert all(50 <= p.stages[0].prompt_tokens <= 100 and 5 <= p.stages[0].output_tokens <= 10 for p in wl.programs)
    assert {p.slo_class for p in wl.programs} == {"coder"}


def test_capacity_bisection_finds_the_threshold():
    seen = []

    def run_at(rate):  # attainment falls off above 3 rps
        seen.append(rate)
        return {"attainment": 1.0 if rate <= 3.0 else 0.5}

    res = capacity_search(run_at, 0.5, 16.0, 0.9, 8)
    assert 2.9 <= res.capacity_rps <= 3.0
    assert seen[:2] == [0.5, 16.0] and len(res.points) == 10
    assert capacity_search(lambda r: {"attainment": 0.1}, 1, 2, 0.9, 3).capacity_rps == 0.0
    assert capacity_search(lambda r: {"attainment": 1.0}, 1, 2, 0.9, 3).capacity_rps == 2.0
    # a bracket that missed the capacity moves by its own ratio when allowed to
    up: list[float] = []
    res = capacity_search(lambda r: up.append(r) or {"attainment": 1.0 if r <= 5.0 else 0.5}, 1, 2, 0.9, 3, widen=3)
    assert up[:4] == [1, 2, 4, 8] and 4.0 <= res.capacity_rps <= 5.0
    down: list[float] = []
    res = capacity_search(lambda r: down.append(r) or {"attainment": 1.0 if r <= 0.3 else 0.5}, 1, 2, 0.9, 3, widen=3)
    assert down[:3] == [1, 0.5, 0.25] and 0.25 <= res.capacity_rps <= 0.3
    assert capacity_search(lambda r: {"attainment": 1.0}, 1, 2, 0.9, 3, widen=2).capacity_rps == 8.0  # censored
    assert capacity_search(lambda r: {"attainment": 0.0}, 1, 2, 0.9, 3, widen=2).capacity_rps == 0.0


def test_sharegpt_json_and_lengths_csv(tmp_path):
    data = [
        {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "x" * 40}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(data))
    wl = build_bench_workload(BenchConfig(dataset_name="sharegpt", dataset_path=str(path), num_prompts=3), 1.0)
    assert [p.stages[0].output_tokens for p in wl.programs] == [10, 10, 10]  # 40 chars / 4
    assert set(wl.texts.values()) == {"hello there"} and wl.programs[0].stages[0].prompt_tokens == 11
    csv_path = tmp_path / "lens.csv"
    csv_path.write_text("num_prefill_tokens,num_decode_tokens\n100,7\n200,9\n")
    wl = build_bench_workload(BenchConfig(dataset_name="sharegpt", dataset_path=str(csv_path), num_prompts=6), 1.0)
    assert {(p.stages[0].prompt_tokens, p.stages[0].output_tokens) for p in wl.programs} <= {(100, 7), (200, 9)}
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="no ShareGPT conversations"):
        build_bench_workload(BenchConfig(dataset_name="sharegpt", dataset_path=str(empty)), 1.0)


def test_trace_window_replay():
    try:
        trace = data_file("traces/AzureLLMInferenceTrace_conv.csv")
    except FileNotFoundError:  # no data directory at all (a fresh clone without ../shared/data)
        pytest.skip("shared trace data not present")
    cfg = BenchConfig(trace=str(trace), trace_window="0:60", num_prompts=30, scenario="chatbot")
    wl = build_bench_workload(cfg, 3.0)
    assert len(wl.programs) == 30 and "window 0:60" in wl.description
    assert 30 / wl.programs[-1].arrival_s == pytest.approx(3.0, rel=0.25)


def test_extra_request_body_must_be_an_object(capsys):
    with pytest.raises(SystemExit):
        main(["--extra-request-body", "[1]"])
    assert "--extra-request-body" in capsys.readouterr().err


def test_help_lists_names_and_defaults():
    proc = run_cli("--help")
    text = " ".join(proc.stdout.split())  # unwrap argparse's lines
    assert proc.returncode == 0
    for needle in (
        "(default: chatbot)",
        "tool-calling",
        "opt-13b-tp2-a100",
        "(default: 100)",
        "slos-serve",
        "(default: sglang)",
    ):
        assert needle in text, needle
    assert "distserve" not in text  # --policy launches servers: only the policies a server runs
