"""scripts/profile_sglang.py's conversion, checked against the perf engineer's CSV loader."""

from __future__ import annotations

import os

import pytest

from load_script import load_script


@pytest.fixture(scope="module")
def profile():
    return load_script("scripts/profile_sglang.py")


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
    assert [{k: r[k] for k in profile.COLUMNS} for r in rows] == [
        {"num_tokens": 1024, "spec_steps": 0, "kv_read_tokens": 0, "num_requests": 4, "time_ms": 12.5},
        {"num_tokens": 4, "spec_steps": 0, "kv_read_tokens": 4 * (256 + 16), "num_requests": 4, "time_ms": 8.0},
        {"num_tokens": 16384, "spec_steps": 0, "kv_read_tokens": 0, "num_requests": 64, "time_ms": 200.0},
    ]
    assert all(r["repeats"] == 1 and r["time_ms_min"] == r["time_ms"] == r["time_ms_max"] for r in rows)
    out = tmp_path / "p.csv"
    profile.write_csv(rows, str(out))
    from sloserve.perf.fit import load_profile_csv

    data = load_profile_csv(out)
    assert list(data.num_tokens) == [1024, 4, 16384]
    assert list(data.num_requests) == [4, 4, 64]  # the per-request term's column reaches the fitter


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


def _rec(bs, inp, prefill_s, decode_s, out=16):
    return {
        "batch_size": bs,
        "input_len": inp,
        "output_len": out,
        "prefill_latency": prefill_s,
        "median_decode_latency": decode_s,
    }


def test_repeats_keep_the_median_and_spread_and_drop_the_warm_up(profile, tmp_path):
    # the shape (4, 64) runs 4 times: a slow warm-up (discarded), then 10, 30, 20 ms prefills
    records = [
        _rec(4, 64, 0.500, 0.900),
        _rec(1, 64, 0.002, 0.001),
        _rec(4, 64, 0.010, 0.004),
        _rec(1, 64, 0.003, 0.001),
        _rec(4, 64, 0.030, 0.006),
        _rec(4, 64, 0.020, 0.005),
    ]
    rows = profile.rows_from_results(records, warmup=1)
    prefill = next(r for r in rows if r["num_tokens"] == 256)
    assert prefill == {
        "num_tokens": 256,
        "spec_steps": 0,
        "kv_read_tokens": 0,
        "num_requests": 4,
        "time_ms": 20.0,
        "time_ms_min": 10.0,
        "time_ms_max": 30.0,
        "repeats": 3,
    }
    decode = next(r for r in rows if r["num_tokens"] == 4)
    assert (decode["time_ms"], decode["kv_read_tokens"], decode["repeats"]) == (5.0, 4 * (64 + 8), 3)
    assert next(r for r in rows if r["num_tokens"] == 64)["repeats"] == 1  # bs 1: one warm-up, one run
    assert profile.spread_pct(prefill) == 100.0
    # 4 x 32 and 1 x 128 prefill the same 128 tokens but are two shapes: two rows, not 6 repeats
    same = profile.rows_from_results([_rec(4, 32, 0.01, 0.002), _rec(1, 128, 0.02, 0.003)] * 2, warmup=1)
    assert [(r["num_tokens"], r["time_ms"], r["repeats"]) for r in same if r["kv_read_tokens"] == 0] == [
        (128, 10.0, 1),
        (128, 20.0, 1),
    ]
    summary = profile.spread_summary(rows)
    assert "worst 100.0%" in summary and "num_tokens=256" in summary
    out = tmp_path / "p.csv"
    profile.write_csv(rows, str(out))
    assert (
        out.read_text().splitlines()[0]
        == "num_tokens,spec_steps,kv_read_tokens,num_requests,time_ms,time_ms_min,time_ms_max,repeats"
    )
    from sloserve.perf.fit import load_profile_csv

    data = load_profile_csv(out)  # the fitter reads the four original columns
    assert sorted(data.time_s * 1e3) == sorted(r["time_ms"] for r in rows)


def test_repeats_and_cpu_mode_in_the_command(profile, capsys, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 16384}')
    argv = ["--model-path", str(model), "--out", "x.csv", "--batch-sizes", "1", "4", "--input-lens", "32"]
    assert profile.main([*argv, "--device", "cpu", "--repeats", "3", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--batch-size 1 4 1 4 1 4 1 4 --input-len 32" in line  # 3 repeats + 1 warm-up
    assert "-m sglang.benchmark.one_batch" in line and "--device cpu" in line and "--max-total-tokens" in line
    args = profile.parser().parse_args([*argv, "--device", "cpu"])
    cmd = profile.bench_command(args, 32, "r.jsonl", [], 16384)
    env = profile.bench_env(args, cmd)
    assert env["SGLANG_USE_CPU_ENGINE"] == "1" and env["PYTHONPATH"].split(":")[0].endswith("cpu_shim")
    gpu = profile.parser().parse_args(argv)
    assert "--device" not in profile.bench_command(gpu, 32, "r.jsonl", [], None)
    assert profile.bench_env(gpu, []) == dict(os.environ)  # a GPU run's environment is untouched
    assert profile.main([*argv, "--repeats", "0", "--dry-run"]) == 2


def test_vocab_below_one_batch_id_bound(profile, tmp_path, capsys):
    flat, nested, none = tmp_path / "flat", tmp_path / "nested", tmp_path / "none"
    for d in (flat, nested, none):
        d.mkdir()
    (flat / "config.json").write_text('{"vocab_size": 5000}')
    (nested / "config.json").write_text('{"text_config": {"vocab_size": 32000}}')
    assert profile.model_vocab_size(str(flat)) == 5000
    assert profile.model_vocab_size(str(nested)) == 32000
    assert profile.model_vocab_size(str(none)) is None and profile.model_vocab_size("org/hub-id") is None
    assert profile.check_vocab(5000, 1) is None and profile.check_vocab(32000, 4) is None
    assert profile.check_vocab(None, 2) is None
    assert "vocab_size 5000" in profile.check_vocab(5000, 2)
    # tensor parallel with a small vocabulary: one-line refusal naming the vocabulary
    assert profile.main(["--model-path", str(flat), "--out", "x.csv", "--tp-size", "2", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vocab_size 5000" in err
    # tp 1: the small-vocabulary runner, ids drawn below the vocabulary
    args = profile.parser().parse_args(["--model-path", str(flat), "--out", "x.csv"])
    cmd = profile.bench_command(args, 32, "r.jsonl", [], 5000)
    assert cmd[1:4] == ["-c", profile.SMALL_VOCAB_RUNNER, "5000"] and "--model-path" in cmd
    assert profile.bench_command(args, 32, "r.jsonl", [], 10_000)[1:3] == ["-m", "sglang.benchmark.one_batch"]


def test_small_vocab_runner_draws_ids_below_the_vocabulary(profile, monkeypatch):
    import sys
    import types

    seen = {}
    ob = types.ModuleType("sglang.benchmark.one_batch")

    def prepare(batch_size, input_len, custom_inputs=None):
        seen["inputs"] = custom_inputs
        return "reqs"

    ob.prepare_synthetic_inputs_for_latency_test = prepare
    ob.cli_main = lambda: seen.setdefault("argv", list(sys.argv))
    pkg, bench = types.ModuleType("sglang"), types.ModuleType("sglang.benchmark")
    pkg.benchmark, bench.one_batch = bench, ob
    for name, mod in (("sglang", pkg), ("sglang.benchmark", bench), ("sglang.benchmark.one_batch", ob)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(sys, "argv", ["-c", "300", "--model-path", "m"])
    exec(compile(profile.SMALL_VOCAB_RUNNER, "<runner>", "exec"), {"__name__": "__main__"})
    assert seen["argv"] == ["-c", "--model-path", "m"]  # the vocabulary is not passed on
    assert ob.prepare_synthetic_inputs_for_latency_test(8, 64) == "reqs"
    ids = seen["inputs"]
    assert len(ids) == 8 and all(len(row) == 64 and 0 <= min(row) and max(row) < 300 for row in ids)
    ob.prepare_synthetic_inputs_for_latency_test(2, 4, [[1, 2, 3, 4]] * 2)
    assert seen["inputs"] == [[1, 2, 3, 4]] * 2  # a prompt file's ids are left alone
