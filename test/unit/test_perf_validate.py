"""Validation helpers against the shared Vidur and DistServe profiles."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sloserve.datadir import data_dir
from sloserve.perf.hardware import GPUS
from sloserve.perf.validate import (
    VidurTable,
    calibrate,
    compare_distserve,
    compare_vidur,
    distserve_decode_ms,
    load_vidur,
    predict_elementwise_s,
    predict_linear_s,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = data_dir()
PROFILES = DATA / "profiles" if DATA else None
needs_data = pytest.mark.skipif(not (PROFILES and PROFILES.is_dir()), reason="shared profiles not available")


def _synthetic_table(gpu) -> VidurTable:
    """A Vidur-shaped table timed exactly by the roofline of ``gpu`` (for calibration recovery)."""
    from sloserve.perf.hardware import MODELS

    arch = replace(MODELS["llama-3-8b"], num_layers=1)
    tokens = np.array([1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096] * 4, dtype=float)
    tps = np.repeat([1, 2, 4, 8], 10)
    stub = VidurTable("synthetic", arch, tokens, tps, np.ones(40), np.ones(40))
    return replace(stub, linear_s=predict_linear_s(gpu, stub), elementwise_s=predict_elementwise_s(gpu, stub))


def test_calibrate_recovers_known_efficiencies():
    truth = replace(
        GPUS["a100"],
        gemm_compute_eff=0.65,
        gemm_bw_eff=0.77,
        gemm_fixed_s=3e-6,
        elementwise_bw_eff=0.41,
        elementwise_fixed_s=2e-6,
    )
    fit = calibrate(GPUS["a100"], [_synthetic_table(truth)])
    assert fit.gemm_compute_eff == pytest.approx(0.65, abs=0.011)
    assert fit.gemm_bw_eff == pytest.approx(0.77, abs=0.011)
    assert fit.gemm_fixed_s == pytest.approx(3e-6, abs=0.6e-6)
    assert fit.elementwise_bw_eff == pytest.approx(0.41, abs=0.011)
    with pytest.raises(ValueError):
        calibrate(GPUS["a100"], [])


def test_load_vidur_rejects_other_csv(tmp_path):
    path = tmp_path / "x.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("num_tokens,time_ms\n1,2\n")
    with pytest.raises(ValueError, match="not a Vidur MLP profile"):
        load_vidur(path)


def test_distserve_decode_switches_at_batch_threshold():
    coef = {
        "decoding_large_small_bs_threshold": 95,
        "decoding_smallbs": [10, 0.001, 0.1],
        "decoding_largebs": [20, 0.001, 0.05],
    }
    assert distserve_decode_ms(coef, 94, 100) == pytest.approx(10 + 9.4 + 9.4)
    assert distserve_decode_ms(coef, 95, 100) == pytest.approx(20 + 9.5 + 4.75)


@needs_data
def test_roofline_tracks_vidur_linear_operators():
    table = load_vidur(PROFILES / "vidur_mlp_a100_meta-llama_Meta-Llama-3-8B.csv.gz")
    assert table.arch.hidden == 4096 and table.arch.num_kv_heads == 8 and table.arch.gated_mlp
    assert set(np.unique(table.tp)) == {1, 2, 4, 8}
    for row in compare_vidur(GPUS["a100"], table):
        assert row["linear"]["mape_pct"] < 10, row
        assert row["non_attention"]["mape_pct"] < 12, row


@needs_data
def test_distserve_held_out_error_is_bounded():
    rows = compare_distserve(GPUS["a100"], PROFILES / "distserve_profiler-a100-80g.distserve.json")
    assert {(r["model"], r["tp"]) for r in rows} >= {("opt-13b", 1), ("opt-66b", 8)}
    single_gpu = [r for r in rows if r["model"] == "opt-13b" and r["tp"] == 1]
    assert all(r["mape_pct"] < 15 for r in single_gpu), single_gpu
    assert all(r["mape_pct"] < 35 for r in rows), rows


def test_check_script_fails_with_one_line_without_data(tmp_path):
    env = {**os.environ, "SLOSERVE_DATA_DIR": str(tmp_path / "none")}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_perf_model.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not found" in res.stderr


@needs_data
@pytest.mark.parametrize(
    "gpu,models",
    [
        ("h100", ("meta-llama_Llama-2-7b-hf", "codellama_CodeLlama-34b-Instruct-hf")),
        ("a100", ("meta-llama_Llama-2-7b-hf", "meta-llama_Meta-Llama-3-8B", "codellama_CodeLlama-34b-Instruct-hf")),
    ],
)
def test_shipped_constants_are_the_vidur_calibration(gpu, models):
    # the efficiencies in perf/hardware.py must be what the documented calibration produces
    tables = [load_vidur(PROFILES / f"vidur_mlp_{gpu}_{m}.csv.gz") for m in models]
    fit = calibrate(GPUS[gpu], tables)
    shipped = GPUS[gpu]
    assert fit.gemm_compute_eff == pytest.approx(shipped.gemm_compute_eff, abs=0.005)
    assert fit.gemm_bw_eff == pytest.approx(shipped.gemm_bw_eff, abs=0.005)
    assert fit.gemm_fixed_s == pytest.approx(shipped.gemm_fixed_s, abs=1e-7)
    assert fit.elementwise_bw_eff == pytest.approx(shipped.elementwise_bw_eff, abs=0.005)


@needs_data
def test_check_script_writes_markdown_tables(tmp_path, capsys):
    from load_script import load_script

    module = load_script("scripts/check_perf_model.py")
    out = tmp_path / "check.md"
    assert module.main(["--markdown", str(out)]) == 0
    text = out.read_text()
    for title in ("(a) Vidur", "(a') Vidur", "(b) DistServe", "(c) Paper form"):
        assert f"### {title}" in text
    assert "| a100 | meta-llama_Meta-Llama-3-8B | 1 |" in text and "| distserve | opt-66b | 8 | decode |" in text
    assert "### (a) Vidur" in capsys.readouterr().out
