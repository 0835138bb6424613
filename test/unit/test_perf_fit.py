"""Fitting the max-of-lines form: coefficient recovery, noisy data, CSV errors, JSON presets."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sloserve.perf import get_model
from sloserve.perf.fit import (
    FitLine,
    FittedLinesModel,
    ProfileData,
    fit_lines,
    fit_problems,
    holdout_split,
    inflate,
    load_profile_csv,
    profile_from_model,
    save_fit_json,
    score,
    subset,
    write_profile_csv,
)

ROOT = Path(__file__).resolve().parents[2]
# memory-bound line for small batches, compute-bound line for large ones (knee near 300 tokens)
TRUE = (FitLine(1.0e-5, 2.0e-3, 4.0e-8, 0.020), FitLine(7.0e-5, 2.0e-3, 4.0e-8, 0.005))


def _grid(noise: float = 0.0, seed: int = 0) -> ProfileData:
    model = FittedLinesModel("true", TRUE)
    data = profile_from_model(model, range(1, 4097, 48), spec_steps=(0, 1, 3), kv_read_tokens=(0, 30_000, 120_000))
    if noise:
        rng = np.random.default_rng(seed)
        data = ProfileData(
            data.num_tokens, data.spec_steps, data.kv_read_tokens, data.time_s * (1 + rng.normal(0, noise, len(data)))
        )
    return data


def test_two_lines_recovered_exactly_from_clean_data():
    fit = fit_lines(_grid(), 2)
    for got, want in zip(sorted(fit.lines, key=lambda l: l.per_token_s), TRUE):
        for field in ("per_token_s", "per_spec_step_s", "per_kv_token_s", "base_s"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-6, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.mape_pct < 1e-6 and fit.under_share == 0.0
    assert 200 < fit.breakpoint_tokens < 400


def test_noisy_data_recovered_within_tolerance_with_honest_stats():
    fit = fit_lines(_grid(noise=0.03, seed=7), 2)
    steep = max(fit.lines, key=lambda l: l.per_token_s)
    assert steep.per_token_s == pytest.approx(7.0e-5, rel=0.03)
    assert steep.per_spec_step_s == pytest.approx(2.0e-3, rel=0.15)
    assert steep.per_kv_token_s == pytest.approx(4.0e-8, rel=0.15)
    assert 1.5 < fit.mape_pct < 4.0  # ~ the 3% noise level
    assert 0.3 < fit.under_share < 0.7  # least squares under-predicts about half the rows
    assert fit.r2 > 0.99


def test_inflate_bounds_the_under_predicted_share():
    data = _grid(noise=0.03, seed=3)
    safe = inflate(fit_lines(data, 2), data, 0.05)
    assert safe.under_share <= 0.05
    assert (
        FittedLinesModel("s", safe.lines).predict(data).mean()
        > FittedLinesModel("f", fit_lines(data, 2).lines).predict(data).mean()
    )
    with pytest.raises(ValueError):
        inflate(safe, data, 1.5)


def test_one_line_fit_and_its_limits():
    fit = fit_lines(_grid(), 1)
    assert len(fit.lines) == 1
    # a single line cannot follow the knee: small batches come out far too fast
    assert fit.max_under_pct > 20 and fit.mape_pct > 100 * fit_lines(_grid(), 2).mape_pct
    with pytest.raises(ValueError):
        fit_lines(_grid(), 3)


def test_fitted_model_inverse_is_exact():
    model = FittedLinesModel("m", TRUE)
    for t in (0.001, 0.02, 0.05, 0.3):
        for spec, kv in ((0, 0), (2, 50_000)):
            n = model.max_tokens_within_s(t, spec, kv)
            assert n == 0 and model.batch_time_s(1, spec, kv) > t or model.batch_time_s(n, spec, kv) <= t
            assert model.batch_time_s(n + 1, spec, kv) > t


def test_csv_round_trip_time_ms_and_time_s(tmp_path):
    data = _grid()
    write_profile_csv(data, tmp_path / "p.csv")
    loaded = load_profile_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(loaded.time_s, data.time_s, rtol=1e-6)
    (tmp_path / "s.csv").write_text("num_tokens,time_s\n1,0.01\n100,0.02\n")
    assert load_profile_csv(tmp_path / "s.csv").time_s.tolist() == [0.01, 0.02]
    assert load_profile_csv(tmp_path / "s.csv").spec_steps.tolist() == [0, 0]
    (tmp_path / "r.csv").write_text("num_tokens,time_ms,time_ms_min\n1,20,10\n100,40,30\n")
    assert load_profile_csv(tmp_path / "r.csv", "time_ms_min").time_s.tolist() == [0.01, 0.03]
    with pytest.raises(ValueError, match="time_ms_max"):
        load_profile_csv(tmp_path / "r.csv", "time_ms_max")


@pytest.mark.parametrize(
    "text,match",
    [
        ("tokens,time_ms\n1,2\n", "num_tokens"),
        ("num_tokens,latency\n1,2\n", "time_ms or time_s"),
        ("num_tokens,time_ms\n", "no data rows"),
        ("num_tokens,time_ms\n1,abc\n", "non-numeric"),
        ("num_tokens,time_ms\n1,-3\n", "positive"),
    ],
)
def test_bad_csv_raises_clear_value_error(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_profile_csv(path)


def test_json_preset_loads_through_get_model(tmp_path):
    data = _grid(noise=0.01, seed=1)
    fit = fit_lines(data, 2)
    save_fit_json(fit, tmp_path / "mine.json", "mine", source="test")
    model = get_model(str(tmp_path / "mine.json"))
    assert model.name == "mine"
    ref = FittedLinesModel("ref", fit.lines)
    for shape in ((1, 0, 0), (700, 2, 9000)):
        assert model.batch_time_s(*shape) == ref.batch_time_s(*shape)
    doc = json.loads((tmp_path / "mine.json").read_text())
    assert doc["fit"]["num_points"] == len(data) and 0 <= doc["fit"]["under_share"] <= 1


def test_json_errors_and_roofline_json(tmp_path):
    with pytest.raises(FileNotFoundError):
        get_model(str(tmp_path / "missing.json"))
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_model(str(tmp_path / "junk.json"))
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="sloserve-perf-lines/1"):
        get_model(str(tmp_path / "other.json"))
    (tmp_path / "roof.json").write_text(
        json.dumps(
            {"format": "sloserve-roofline/1", "model": "llama-3-8b", "gpu": "h100", "tp": 2, "step_overhead_s": 0.005}
        )
    )
    roof = get_model(str(tmp_path / "roof.json"))
    assert roof.name == "roof" and roof.cfg.tp == 2 and roof.cfg.step_overhead_s == 0.005
    (tmp_path / "h200ish.json").write_text(
        json.dumps(
            {
                "format": "sloserve-roofline/1",
                "model": "llama-3-8b",
                "gpu": "h100",
                "gpu_overrides": {"hbm_bytes_per_s": 4.8e12},
            }
        )
    )
    faster = get_model(str(tmp_path / "h200ish.json"))
    assert faster.batch_time_s(1) < get_model("llama-3-8b-h100").batch_time_s(1)
    assert faster.batch_time_s(1) == pytest.approx(get_model("llama-3-8b-h200").batch_time_s(1))
    (tmp_path / "typo.json").write_text(
        json.dumps(
            {"format": "sloserve-roofline/1", "model": "llama-3-8b", "gpu": "h100", "gpu_overrides": {"hbm_bw": 1}}
        )
    )
    with pytest.raises(ValueError, match="bad roofline description"):
        get_model(str(tmp_path / "typo.json"))
    (tmp_path / "nogpu.json").write_text(json.dumps({"format": "sloserve-roofline/1", "model": "llama-3-8b"}))
    with pytest.raises(ValueError, match="gpu"):
        get_model(str(tmp_path / "nogpu.json"))


def test_fit_script_end_to_end_and_failure(tmp_path):
    script = str(ROOT / "scripts" / "fit_perf_model.py")
    csv_path, out = tmp_path / "p.csv", tmp_path / "fit.json"

    def run(*a):
        return subprocess.run([sys.executable, script, *a], capture_output=True, text=True, timeout=60)

    assert run("--synthesize", "llama-2-7b-a100", "--out-csv", str(csv_path)).returncode == 0
    res = run(str(csv_path), "--out", str(out), "--max-under-share", "0.0")
    assert res.returncode == 0, res.stderr
    assert (
        "R^2" in res.stdout
        and get_model(str(out)).batch_time_s(512) >= get_model("llama-2-7b-a100").batch_time_s(512) * 0.999
    )
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    bad = run(str(tmp_path / "bad.csv"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "num_tokens" in bad.stderr


def test_holdout_split_is_deterministic_disjoint_and_complete():
    train, test = holdout_split(50, 0.2, seed=3)
    again = holdout_split(50, 0.2, seed=3)
    assert train.tolist() == again[0].tolist() and test.tolist() == again[1].tolist()
    assert len(test) == 10 and sorted(train.tolist() + test.tolist()) == list(range(50))
    assert holdout_split(50, 0.2, seed=4)[1].tolist() != test.tolist()
    assert holdout_split(5, 0.01)[1].size == 1  # a positive fraction holds out at least one row
    assert holdout_split(5, 0.0)[1].size == 0
    with pytest.raises(ValueError):
        holdout_split(5, 1.0)
    data = _grid()
    sub = subset(data, test)
    assert len(sub) == 10 and sub.time_s.tolist() == data.time_s[test].tolist()


def test_held_out_score_and_trust_problems():
    data = _grid(noise=0.03, seed=5)
    train, test = holdout_split(len(data), 0.25, seed=0)
    fit = fit_lines(subset(data, train), 2)
    held = score(fit, subset(data, test))
    assert held.num_points == len(test) and held.lines == fit.lines and 1.0 < held.mape_pct < 6.0
    assert fit_problems(fit, 25.0, held.mape_pct) == []
    assert fit_problems(fit, 0.5, held.mape_pct) == [f"MAPE {held.mape_pct:.1f}% is above 0.5%"]
    bad = dataclasses.replace(fit, lines=(FitLine(-1e-6, 0.0, 2e-8, 0.01), fit.lines[1]))
    assert fit_problems(bad) == ["line 0 has a negative per_token_s (-1.000e-06)"]
    neg_kv = dataclasses.replace(fit, lines=(FitLine(1e-6, 0.0, -2e-8, 0.01),))
    assert "negative per_kv_token_s" in fit_problems(neg_kv)[0]
    assert "not positive" in fit_problems(dataclasses.replace(fit, lines=(FitLine(1e-6, 0.0, 0.0, -0.01),)))[0]


def _cli(*a):
    script = str(ROOT / "scripts" / "fit_perf_model.py")
    return subprocess.run([sys.executable, script, *a], capture_output=True, text=True, timeout=60)


def test_fit_script_refuses_untrustworthy_fits_unless_forced(tmp_path):
    # time falls as num_tokens grows: any least-squares line has a negative per-token slope
    falling = tmp_path / "falling.csv"
    falling.write_text("num_tokens,time_ms\n" + "".join(f"{n},{20 - n / 100:.3f}\n" for n in range(100, 1100, 100)))
    out = tmp_path / "f.json"
    res = _cli(str(falling), "--lines", "1", "--out", str(out))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "negative per_token_s" in res.stderr and not out.exists()
    forced = _cli(str(falling), "--lines", "1", "--out", str(out), "--force")
    assert forced.returncode == 0 and "warning: untrustworthy fit" in forced.stderr and out.exists()
    # a good fit scored on held-out rows; an impossible MAPE bound refuses it
    good = tmp_path / "good.csv"
    write_profile_csv(_grid(noise=0.03, seed=2), good)
    res = _cli(str(good), "--holdout-frac", "0.25", "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "[held-out rows]" in res.stdout and "held out, seed 1" in res.stdout
    assert res.stdout == _cli(str(good), "--holdout-frac", "0.25", "--seed", "1").stdout  # same split, same report
    strict = _cli(str(good), "--max-mape-pct", "0.1")
    assert strict.returncode == 2 and "MAPE" in strict.stderr and strict.stderr.strip().count("\n") == 0


def test_two_lines_never_fit_worse_than_one():
    # noisy CPU-engine rows: decode steps (1-16 tokens, KV varies) and prefills (512-8192 tokens).
    # Fitted apart, the decode side's steep slope dominates the max at 8192 tokens (hundreds of
    # seconds); the search must fall back to one line used twice.
    n = np.array([1, 512, 1, 4, 2048, 16, 1, 4, 8192, 16], dtype=float)
    kv = np.array([40, 0, 136, 544, 0, 2176, 520, 2080, 0, 8320], dtype=float)
    t = np.array([0.0726, 0.6552, 0.2099, 0.3542, 1.6910, 0.9577, 0.0315, 0.2932, 2.3472, 0.0669])
    data = ProfileData(n, np.zeros_like(n), kv, t)
    one, two = fit_lines(data, 1), fit_lines(data, 2)
    assert two.r2 >= one.r2 - 1e-12 and two.mape_pct < 1000


# SGLang's CPU engine, roughly: a request costs 0.8 ms whatever its tokens, a token 43 us
PER_REQUEST = FitLine(43e-6, 0.0, 1e-7, 1.9e-3, 0.79e-3)


def _served_rows() -> ProfileData:
    """Prefill rows (one request, many tokens) next to decode rows (as many requests as tokens),
    the shapes a served step log bins into."""
    model = FittedLinesModel("true", (PER_REQUEST,))
    shapes = [(n, 0, 1) for n in (16, 64, 256, 1024)] + [(b, b * 300, b) for b in (1, 4, 12, 24)]
    shapes += [(b + 128, b * 300, b + 1) for b in (4, 12)]  # decodes with a chunk riding along
    n, kv, r = (np.array(c, dtype=float) for c in zip(*shapes))
    t = np.array([model.batch_time_s(int(a), 0, int(b), 0.0, int(c)) for a, b, c in zip(n, kv, r)])
    return ProfileData(n, np.zeros_like(n), kv, t, r)


def test_per_request_term_is_recovered_and_priced_apart_from_tokens():
    fit = fit_lines(_served_rows(), 1)
    (line,) = fit.lines
    assert line.per_request_s == pytest.approx(PER_REQUEST.per_request_s, rel=1e-6)
    assert line.per_token_s == pytest.approx(PER_REQUEST.per_token_s, rel=1e-6)
    assert not fit_problems(fit)
    model = FittedLinesModel("fit", fit.lines)
    # 12 decodes cost 12 requests; 12 prefill tokens of one request cost one
    assert model.batch_time_s(12, 0, 0, 0.0, 12) > 3 * model.batch_time_s(12, 0, 0, 0.0, 1)
    # without the column the term is not fitted (and a profile of decode rows alone cannot tell it apart)
    blind = dataclasses.replace(_served_rows(), num_requests=None)
    assert fit_lines(blind, 1).lines[0].per_request_s == 0.0
    decode_only = subset(_served_rows(), np.arange(4, 8))
    assert "per_request_s" not in [k for k, v in dataclasses.asdict(fit_lines(decode_only, 1).lines[0]).items() if v]


def test_per_request_inverse_is_exact_and_decodes_bound_by_requests():
    model = FittedLinesModel("m", (PER_REQUEST, FitLine(60e-6, 0.0, 1e-7, 1.0e-3, 0.5e-3)))
    rng = np.random.default_rng(3)
    for _ in range(300):
        t, kv, r = float(rng.uniform(1e-3, 0.1)), int(rng.integers(0, 50_000)), int(rng.integers(0, 64))
        n = model.max_tokens_within_s(t, 0, kv, num_requests=r)
        if n:
            assert model.batch_time_s(n, 0, kv, 0.0, r) <= t
        assert model.batch_time_s(n + 1, 0, kv, 0.0, r) > t
        d = model.max_decodes_within_s(t, kv)
        assert d <= model.max_tokens_within_s(t, 0, kv)
        if d:
            assert model.batch_time_s(d, 0, kv, 0.0, d) <= t
        assert model.batch_time_s(d + 1, 0, kv, 0.0, d + 1) > t
    # a 20 ms step: about 20 decodes at 0.83 ms each, against about 400 tokens of one prefill
    assert model.max_decodes_within_s(0.020) == 21
    assert model.max_tokens_within_s(0.020, num_requests=1) > 300


def test_per_request_csv_json_round_trip_and_trust(tmp_path):
    data = _served_rows()
    write_profile_csv(data, tmp_path / "p.csv")
    back = load_profile_csv(tmp_path / "p.csv")
    assert list(back.num_requests) == list(data.num_requests)
    fit = fit_lines(back, 1)
    save_fit_json(fit, tmp_path / "f.json", "served")
    model = get_model(str(tmp_path / "f.json"))
    assert model.batch_time_s(4, 0, 1200, 0.0, 4) == pytest.approx(
        FittedLinesModel("t", (PER_REQUEST,)).batch_time_s(4, 0, 1200, 0.0, 4), rel=1e-6
    )
    bad = dataclasses.replace(fit, lines=(dataclasses.replace(fit.lines[0], per_request_s=-1e-4),))
    assert any("per_request_s" in p for p in fit_problems(bad))
    (tmp_path / "neg.csv").write_text("num_tokens,num_requests,time_ms\n1,-1,2.0\n")
    with pytest.raises(ValueError, match="num_requests"):
        load_profile_csv(tmp_path / "neg.csv")


def test_extend_request_term_recovered_and_its_inverse_exact():
    # decode-only batches pay nothing per request; a batch with prefill tokens pays 1.3 ms for each
    true = FitLine(14e-6, 0.0, 2e-6, 3.3e-3, 0.0, 1.3e-3)
    model = FittedLinesModel("true", (true,))
    data = _served_rows()
    data = dataclasses.replace(
        data,
        time_s=np.array(
            [
                model.batch_time_s(int(n), 0, int(k), 0.0, int(r))
                for n, k, r in zip(data.num_tokens, data.kv_read_tokens, data.num_requests)
            ]
        ),
    )
    (line,) = fit_lines(data, 1).lines
    assert line.per_extend_request_s == pytest.approx(1.3e-3, rel=1e-6)
    assert line.per_request_s == pytest.approx(0.0, abs=1e-9)  # fixed at 0 when noise made it negative, or ~0
    # 12 decodes alone vs the same 12 with one prefill token more: the extend batch pays per request
    assert model.batch_time_s(13, 0, 0, 0.0, 12) - model.batch_time_s(12, 0, 0, 0.0, 12) > 12 * 1.2e-3
    two = FittedLinesModel("two", (true, FitLine(40e-6, 0.0, 1e-6, 1.0e-3, 0.2e-3, 0.5e-3)))
    rng = np.random.default_rng(5)
    for _ in range(400):
        t, kv, r = float(rng.uniform(1e-3, 0.08)), int(rng.integers(0, 20_000)), int(rng.integers(0, 40))
        n = two.max_tokens_within_s(t, 0, kv, num_requests=r)
        if n:
            assert two.batch_time_s(n, 0, kv, 0.0, r) <= t
        # the inverse prices an extend batch (room is asked for prefill tokens): exact past r
        assert two.batch_time_s(max(n + 1, r + 1), 0, kv, 0.0, r) > t
    # 12 decodes and room for a chunk in 10 ms: none, although 12 decodes alone fit (a 1-token
    # chunk would be priced as a 13th decode)
    assert model.batch_time_s(12, 0, 0, 0.0, 12) <= 0.010 < model.batch_time_s(13, 0, 0, 0.0, 12)
    assert model.max_tokens_within_s(0.010, num_requests=13) < 12
    assert model.max_decodes_within_s(0.010) >= 12
