"""Validate the roofline batch-time model against the shared GPU profiles.

    python scripts/check_perf_model.py [--markdown FILE.md] [--calibrate]

(a) Vidur per-operator profiles (profiles/vidur_mlp_<gpu>_<model>.csv.gz): per-layer linear
    operators (and linear + element-wise) vs the roofline's non-attention terms, per TP degree.
    In-sample: the GEMM efficiencies were fitted to these files; --calibrate refits them and
    prints the leave-one-model-out error.
(b) DistServe's fitted OPT latencies (profiles/distserve_profiler-a100-80g.{distserve,vllm}.json)
    vs the full roofline at fixed batch shapes: held out, nothing fitted to them.
Data files are found through SLOSERVE_DATA_DIR (or ../shared/data); a missing one fails with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sloserve.datadir import data_dir, data_file
from sloserve.perf import get_model
from sloserve.perf.fit import ProfileData, fit_lines, inflate
from sloserve.perf.hardware import GPUS
from sloserve.perf.roofline import ROOFLINE_PRESETS
from sloserve.perf.validate import (
    calibrate,
    compare_distserve,
    compare_vidur,
    compare_vidur_by_tokens,
    error_stats,
    leave_one_model_out,
    load_vidur,
    predict_elementwise_s,
    predict_linear_s,
)

VIDUR = {
    "a100": ("meta-llama_Llama-2-7b-hf", "meta-llama_Meta-Llama-3-8B", "codellama_CodeLlama-34b-Instruct-hf"),
    "h100": ("meta-llama_Llama-2-7b-hf", "codellama_CodeLlama-34b-Instruct-hf"),
}
DISTSERVE = ("distserve", "vllm")


def _vidur_tables() -> dict[str, list]:
    return {
        gpu: [load_vidur(data_file("profiles", f"vidur_mlp_{gpu}_{m}.csv.gz")) for m in models]
        for gpu, models in VIDUR.items()
    }


def _table(title: str, header: list[str], rows: list[list]) -> list[str]:
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _pct(x: float) -> str:
    return f"{x:.1f}"


def vidur_section(tables: dict[str, list]) -> list[str]:
    rows = []
    for gpu, tabs in tables.items():
        for t in tabs:
            for r in compare_vidur(GPUS[gpu], t):
                lin, na = r["linear"], r["non_attention"]
                rows.append(
                    [
                        gpu,
                        t.name.split("_", 3)[-1],
                        r["tp"],
                        lin["n"],
                        _pct(lin["mape_pct"]),
                        _pct(lin["bias_pct"]),
                        _pct(100 * lin["under_share"]),
                        _pct(na["mape_pct"]),
                        _pct(na["bias_pct"]),
                    ]
                )
    header = [
        "GPU",
        "profile",
        "TP",
        "points",
        "linear MAPE %",
        "linear bias %",
        "linear under %",
        "linear+elementwise MAPE %",
        "linear+elementwise bias %",
    ]
    out = _table("(a) Vidur per-layer operators vs roofline (in-sample: efficiencies fitted here)", header, rows)
    by_tokens = []
    for gpu, tabs in tables.items():
        for t in tabs:
            for r in compare_vidur_by_tokens(GPUS[gpu], t):
                lo, hi = r["tokens"]
                by_tokens.append(
                    [
                        gpu,
                        t.name.split("_", 3)[-1],
                        f"{lo}-{hi if hi < 1 << 20 else 'max'}",
                        r["n"],
                        _pct(r["mape_pct"]),
                        _pct(r["bias_pct"]),
                        _pct(100 * r["under_share"]),
                    ]
                )
    return out + _table(
        "(a') Vidur linear operators by num_tokens range (all TP degrees)",
        ["GPU", "profile", "num_tokens", "points", "MAPE %", "bias %", "under %"],
        by_tokens,
    )


def distserve_section() -> list[str]:
    rows = []
    for engine in DISTSERVE:
        path = data_file("profiles", f"distserve_profiler-a100-80g.{engine}.json")
        for r in compare_distserve(GPUS["a100"], path):
            rows.append(
                [
                    engine,
                    r["model"],
                    r["tp"],
                    r["phase"],
                    r["n"],
                    _pct(r["mape_pct"]),
                    _pct(r["bias_pct"]),
                    _pct(100 * r["under_share"]),
                ]
            )
    header = ["engine", "model", "TP", "phase", "shapes", "MAPE %", "bias %", "under %"]
    return _table("(b) DistServe fitted OPT latencies (A100-80GB) vs roofline (held out)", header, rows)


def paper_form_section(tables: dict[str, list]) -> list[str]:
    """(c) The paper's max-of-lines form fitted to the same Vidur rows (linear + element-wise, TP 1)."""
    rows = []
    for gpu, tabs in tables.items():
        for t in tabs:
            sel = t.tp == 1
            y = t.linear_s[sel] + t.elementwise_s[sel]
            n = t.num_tokens[sel]
            data = ProfileData(n, np.zeros_like(n), np.zeros_like(n), y)
            roof = predict_linear_s(GPUS[gpu], t)[sel] + predict_elementwise_s(GPUS[gpu], t)[sel]
            fits = [fit_lines(data, k) for k in (1, 2)]
            safe = inflate(fits[1], data, 0.05)
            rows.append(
                [
                    gpu,
                    t.name.split("_", 3)[-1],
                    len(data),
                    _pct(error_stats(roof, y)["mape_pct"]),
                    *(f"{f.mape_pct:.1f} / {f.r2:.4f} / {100 * f.under_share:.0f}" for f in (*fits, safe)),
                ]
            )
    header = [
        "GPU",
        "profile (TP 1)",
        "points",
        "roofline MAPE %",
        "1 line: MAPE % / R^2 / under %",
        "2 lines",
        "2 lines, --max-under-share 0.05",
    ]
    return _table("(c) Paper form fitted to the same Vidur rows (scripts/fit_perf_model.py's fitter)", header, rows)


def calibration_section(tables: dict[str, list]) -> list[str]:
    rows, lomo = [], []
    for gpu, tabs in tables.items():
        fit = calibrate(GPUS[gpu], tabs)
        rows.append(
            [
                gpu,
                fit.gemm_compute_eff,
                fit.gemm_bw_eff,
                f"{fit.gemm_fixed_s * 1e6:.2f}",
                fit.gemm_overlap_loss,
                fit.elementwise_bw_eff,
                f"{fit.elementwise_fixed_s * 1e6:.2f}",
            ]
        )
        for r in leave_one_model_out(GPUS[gpu], tabs):
            lomo.append(
                [
                    gpu,
                    r["profile"].split("_", 3)[-1],
                    r["gemm_compute_eff"],
                    r["gemm_bw_eff"],
                    _pct(r["linear"]["mape_pct"]),
                    _pct(r["linear"]["bias_pct"]),
                ]
            )
    out = _table(
        "Calibration (fitted to all Vidur profiles of the GPU)",
        [
            "GPU",
            "gemm_compute_eff",
            "gemm_bw_eff",
            "gemm_fixed_us",
            "gemm_overlap_loss",
            "elementwise_bw_eff",
            "elementwise_fixed_us",
        ],
        rows,
    )
    return out + _table(
        "Leave-one-model-out (fit on the other profiles, test on this one)",
        ["GPU", "held-out profile", "compute eff", "bw eff", "linear MAPE %", "linear bias %"],
        lomo,
    )


def presets_section() -> list[str]:
    """Step times of every roofline preset, and paper vs roofline for the OPT presets."""
    rows = []
    for name in sorted(ROOFLINE_PRESETS):
        m = get_model(name)
        decode = m.batch_time_s(64, 0, 64 * 1024, 64 * 1025)
        rows.append(
            [
                name,
                m.cfg.tp,
                f"{m.batch_time_s(1) * 1e3:.1f}",
                f"{decode * 1e3:.1f}",
                f"{m.zero_load_prefill_s(2048) * 1e3:.0f}",
                f"{m.terms.per_spec_step_s * 1e3:.2f}",
                m.max_tokens_within_s(0.05),
                m.max_tokens_within_s(0.1, 0, 64 * 1024),
            ]
        )
    out = _table(
        "Roofline presets (ms unless noted)",
        [
            "preset",
            "TP",
            "decode b=1",
            "decode b=64 ctx=1k",
            "prefill 2048 alone",
            "per draft step",
            "tokens in 50 ms",
            "tokens in 100 ms with 64k KV",
        ],
        rows,
    )
    cmp_rows = []
    for paper, roof in (
        ("opt-6.7b-a100", "opt-6.7b-roofline-a100"),
        ("opt-13b-tp2-a100", "opt-13b-tp2-roofline-a100"),
        ("opt-30b-tp4-a100", "opt-30b-tp4-roofline-a100"),
        ("opt-13b-h100", "opt-13b-roofline-h100"),
    ):
        p, r = get_model(paper), get_model(roof)
        for n in (1, 256, 1024, 2048):
            cmp_rows.append([paper, n, f"{p.batch_time_s(n) * 1e3:.1f}", f"{r.batch_time_s(n) * 1e3:.1f}"])
    return out + _table(
        "Paper-form OPT presets (SLOs-Serve authors' fits) vs roofline, no KV/attention term",
        ["paper preset", "num_tokens", "paper ms", "roofline ms"],
        cmp_rows,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", help="also write the tables to this markdown file")
    ap.add_argument("--calibrate", action="store_true", help="refit the efficiencies, print leave-one-model-out error")
    ap.add_argument("--presets", action="store_true", help="also print the roofline presets' step times")
    args = ap.parse_args(argv)
    try:
        tables = _vidur_tables()
        lines = vidur_section(tables) + distserve_section() + paper_form_section(tables)
        if args.calibrate:
            lines += calibration_section(tables)
        if args.presets:
            lines += presets_section()
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(
            f"<!-- generated by scripts/check_perf_model.py; data: {data_dir()} -->\n\n{text}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
