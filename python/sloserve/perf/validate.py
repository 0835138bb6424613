"""Checks of the roofline model against public GPU profiles (see docs/perf_model.md).

(a) Vidur per-operator profiles (``vidur_mlp_<gpu>_<model>.csv.gz``): per-layer times of the
    linear operators and of the element-wise operators by num_tokens and TP degree. Compared
    with the roofline's per-layer GEMM and element-wise terms; the GEMM efficiencies in
    perf/hardware.py were fitted to these files (``calibrate``), so this check is in-sample;
    ``leave_one_model_out`` gives the out-of-sample error.
(b) DistServe's fitted OPT latencies on A100-80GB (prefill a + b*sum(L) + c*sum(L^2), decode
    a + b*sum(ctx) + c*batch, ms), compared with the full roofline at several batch shapes.
    Nothing was fitted to them: a held-out check.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sloserve.perf.hardware import GpuSpec, ModelArch, get_arch
from sloserve.perf.roofline import (
    RooflineConfig,
    RooflineModel,
    _elementwise_bytes_per_token,
    _linear_layer_work,
    gemm_time,
)

LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
# per layer: two norms, rope, activation, two residual adds (one "add" column, counted twice)
ELEMENTWISE_OPS = (
    ("input_layernorm", 1),
    ("post_attention_layernorm", 1),
    ("attn_rope", 1),
    ("mlp_act", 1),
    ("add", 2),
)
MAX_EFF = 0.95
_ARCH_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp")


@dataclass(frozen=True)
class VidurTable:
    """One Vidur profile: per-layer medians in seconds, one row per (num_tokens, tp)."""

    name: str
    arch: ModelArch  # num_layers = 1: the profile is per layer
    num_tokens: np.ndarray
    tp: np.ndarray
    linear_s: np.ndarray
    elementwise_s: np.ndarray


def load_vidur(path: str | Path) -> VidurTable:
    """Read a Vidur MLP profile; duplicate (num_tokens, tp) rows are averaged."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: empty profile")
    needed = [f"time_stats.{op}.median" for op in LINEAR_OPS] + ["num_tokens", "num_tensor_parallel_workers"]
    missing = [c for c in needed + list(_ARCH_COLUMNS) if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a Vidur MLP profile, missing columns {missing}")
    groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for r in rows:
        lin = sum(float(r[f"time_stats.{op}.median"]) for op in LINEAR_OPS)
        ew = sum(k * float(r[f"time_stats.{op}.median"]) for op, k in ELEMENTWISE_OPS)
        key = (int(r["num_tokens"]), int(r["num_tensor_parallel_workers"]))
        groups.setdefault(key, []).append((lin, ew))
    keys = sorted(groups)
    means = np.array([np.mean(groups[k], axis=0) for k in keys]) * 1e-3  # ms -> s
    first = rows[0]
    heads, kv_heads, hidden = int(first["n_head"]), int(first["n_kv_head"]), int(first["n_embd"])
    arch = ModelArch(
        path.name.split(".csv")[0],
        1,
        hidden,
        heads,
        kv_heads,
        hidden // heads,
        int(first["n_expanded_embd"]),
        int(first["vocab_size"]),
        gated_mlp=first["use_gated_mlp"].strip().lower() == "true",
    )
    return VidurTable(
        arch.name,
        arch,
        np.array([k[0] for k in keys], dtype=float),
        np.array([k[1] for k in keys], dtype=int),
        means[:, 0],
        means[:, 1],
    )


def predict_linear_s(gpu: GpuSpec, table: VidurTable) -> np.ndarray:
    """Roofline per-layer time of the four linear operators for every row of ``table``."""
    out = np.empty_like(table.linear_s)
    for tp in np.unique(table.tp):
        sel = table.tp == tp
        flops, weight_bytes, act_bytes = _linear_layer_work(table.arch, int(tp))
        n = table.num_tokens[sel]
        compute = n * flops / (gpu.peak_flops * gpu.gemm_compute_eff)
        memory = (weight_bytes + n * act_bytes) / (gpu.hbm_bytes_per_s * gpu.gemm_bw_eff)
        out[sel] = gemm_time(compute, memory, gpu.gemm_overlap_loss) + 4 * gpu.gemm_fixed_s
    return out


def predict_elementwise_s(gpu: GpuSpec, table: VidurTable) -> np.ndarray:
    out = np.empty_like(table.elementwise_s)
    for tp in np.unique(table.tp):
        sel = table.tp == tp
        per_token = _elementwise_bytes_per_token(table.arch, int(tp))
        out[sel] = (
            table.num_tokens[sel] * per_token / (gpu.hbm_bytes_per_s * gpu.elementwise_bw_eff)
            + 6 * gpu.elementwise_fixed_s
        )
    return out


def error_stats(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAPE (%), signed mean error (%), share of under-predictions, count."""
    rel = (pred - actual) / actual
    return {
        "mape_pct": float(np.mean(np.abs(rel)) * 100),
        "bias_pct": float(np.mean(rel) * 100),
        "under_share": float(np.mean(rel < -1e-9)),
        "n": int(rel.size),
    }


def compare_vidur(gpu: GpuSpec, table: VidurTable) -> list[dict]:
    """Per TP degree: error of the linear term and of linear + element-wise."""
    lin = predict_linear_s(gpu, table)
    ew = predict_elementwise_s(gpu, table)
    rows = []
    for tp in np.unique(table.tp):
        sel = table.tp == tp
        rows.append(
            {
                "profile": table.name,
                "tp": int(tp),
                "linear": error_stats(lin[sel], table.linear_s[sel]),
                "non_attention": error_stats(lin[sel] + ew[sel], table.linear_s[sel] + table.elementwise_s[sel]),
            }
        )
    return rows


TOKEN_RANGES = ((1, 64), (65, 512), (513, 2048), (2049, 1 << 20))


def compare_vidur_by_tokens(gpu: GpuSpec, table: VidurTable) -> list[dict]:
    """Error of the linear term by num_tokens range (all TP degrees): where the knee sits."""
    rel_pred = predict_linear_s(gpu, table)
    rows = []
    for lo, hi in TOKEN_RANGES:
        sel = (table.num_tokens >= lo) & (table.num_tokens <= hi)
        if sel.any():
            rows.append({"profile": table.name, "tokens": (lo, hi), **error_stats(rel_pred[sel], table.linear_s[sel])})
    return rows


def _linear_work_rows(table: VidurTable) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (FLOPs, bytes) of one layer's linear operators on one GPU."""
    flops = np.empty_like(table.linear_s)
    nbytes = np.empty_like(table.linear_s)
    for tp in np.unique(table.tp):
        sel = table.tp == tp
        f, w, a = _linear_layer_work(table.arch, int(tp))
        flops[sel] = table.num_tokens[sel] * f
        nbytes[sel] = w + table.num_tokens[sel] * a
    return flops, nbytes


def calibrate(gpu: GpuSpec, tables: list[VidurTable]) -> GpuSpec:
    """Fit the GEMM efficiencies, fixed cost and overlap loss, then the element-wise ones.

    Minimizes the mean over profiles of each profile's MAPE by grid search: a coarse grid,
    then a fine one around its optimum (vectorized over efficiencies and rows).
    """
    if not tables:
        raise ValueError("calibrate needs at least one profile")
    work = [(_linear_work_rows(t), t.linear_s) for t in tables]
    coarse = _gemm_grid(
        gpu, work, np.arange(0.40, MAX_EFF + 1e-9, 0.02), np.arange(0.0, 1.01, 0.1), np.arange(0, 20.1e-6, 2e-6)
    )
    ec, eb, g, fx = coarse
    fine = _gemm_grid(
        gpu,
        work,
        np.arange(-0.03, 0.031, 0.01),
        np.clip(np.arange(g - 0.1, g + 0.101, 0.05), 0, 1),
        np.clip(np.arange(fx - 2e-6, fx + 2.01e-6, 0.5e-6), 0, None),
        centre=(ec, eb),
    )
    ec, eb, g, fx = fine
    fitted = replace(
        gpu,
        gemm_compute_eff=round(ec, 2),
        gemm_bw_eff=round(eb, 2),
        gemm_overlap_loss=round(g, 2),
        gemm_fixed_s=round(fx, 8),
    )
    return _calibrate_elementwise(fitted, tables)


def _gemm_grid(gpu, work, effs, overlaps, fixeds, centre=(0.0, 0.0)) -> tuple[float, float, float, float]:
    """Best (compute eff, bw eff, overlap loss, fixed s); effs are offsets from ``centre``."""
    # efficiencies above 95% of a data-sheet peak are not physical: cap the search there
    ecs = np.unique(np.clip(centre[0] + effs, 0.05, MAX_EFF))
    ebs = np.unique(np.clip(centre[1] + effs, 0.05, MAX_EFF))
    loss = np.zeros((overlaps.size, fixeds.size, ecs.size, ebs.size))
    for (flops, nbytes), y in work:
        # relative terms (divided by the measured time); float32 halves the memory traffic
        c = (flops[None, :] / (gpu.peak_flops * ecs[:, None]) / y).astype(np.float32)[:, None, :]
        m = (nbytes[None, :] / (gpu.hbm_bytes_per_s * ebs[:, None]) / y).astype(np.float32)[None, :, :]
        inv_y = (4 / y).astype(np.float32)
        for gi, g in enumerate(overlaps):
            base = gemm_time(c, m, np.float32(g)) - 1
            for fi, fx in enumerate(fixeds):
                loss[gi, fi] += np.mean(np.abs(base + np.float32(fx) * inv_y), axis=2) / len(work)
    gi, fi, i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return float(ecs[i]), float(ebs[j]), float(overlaps[gi]), float(fixeds[fi])


def _calibrate_elementwise(gpu: GpuSpec, tables: list[VidurTable]) -> GpuSpec:
    effs = np.arange(0.20, 0.955, 0.01)
    fixed_grid = np.arange(0.0, 10.01e-6, 0.25e-6)
    loss = np.zeros((fixed_grid.size, effs.size))
    for t in tables:
        nbytes = np.empty_like(t.elementwise_s)
        for tp in np.unique(t.tp):
            sel = t.tp == tp
            nbytes[sel] = t.num_tokens[sel] * _elementwise_bytes_per_token(t.arch, int(tp))
        pred = nbytes[None, None, :] / (gpu.hbm_bytes_per_s * effs[None, :, None]) + 6 * fixed_grid[:, None, None]
        loss += np.mean(np.abs(pred / t.elementwise_s - 1), axis=2) / len(tables)
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return replace(gpu, elementwise_fixed_s=float(fixed_grid[i]), elementwise_bw_eff=round(float(effs[j]), 2))


def leave_one_model_out(gpu: GpuSpec, tables: list[VidurTable]) -> list[dict]:
    """Out-of-sample error: calibrate on the other profiles of this GPU, test on each one."""
    out = []
    for held in tables:
        rest = [t for t in tables if t is not held]
        if not rest:
            continue
        fitted = calibrate(gpu, rest)
        lin = predict_linear_s(fitted, held)
        out.append(
            {
                "profile": held.name,
                "linear": error_stats(lin, held.linear_s),
                "gemm_compute_eff": fitted.gemm_compute_eff,
                "gemm_bw_eff": fitted.gemm_bw_eff,
            }
        )
    return out


# DistServe profiles: batch shapes at which the fitted latencies are compared.
PREFILL_SHAPES = ((1, 128), (1, 512), (1, 1024), (1, 2048), (2, 512), (4, 256), (4, 1024), (8, 128))
DECODE_SHAPES = ((1, 256), (8, 512), (16, 1024), (32, 256), (32, 1024), (64, 512), (128, 512), (128, 1024), (256, 256))
_DISTSERVE_MODELS = {
    "facebook/opt-13b": "opt-13b",
    "facebook/opt-66b": "opt-66b",
    "facebook/opt-6.7b": "opt-6.7b",
    "facebook/opt-30b": "opt-30b",
    "facebook/opt-125m": "opt-125m",
}


def distserve_prefill_ms(coef: dict, batch: int, prompt_tokens: int) -> float:
    a, b, c = coef["prefill"]
    return a + b * batch * prompt_tokens + c * batch * prompt_tokens**2


def distserve_decode_ms(coef: dict, batch: int, context_tokens: int) -> float:
    key = "decoding_smallbs" if batch < coef.get("decoding_large_small_bs_threshold", 95) else "decoding_largebs"
    a, b, c = coef[key]
    return a + b * batch * context_tokens + c * batch


def compare_distserve(gpu: GpuSpec, path: str | Path, **overrides) -> list[dict]:
    """Roofline vs DistServe's fitted OPT latencies: one row per (model, TP, phase)."""
    with open(path) as fh:
        profile = json.load(fh)
    rows = []
    for hf_name, by_tp in profile.items():
        arch = get_arch(_DISTSERVE_MODELS.get(hf_name, hf_name.split("/")[-1]))
        for tp_key, coef in sorted(by_tp.items(), key=lambda kv: int(kv[0])):
            model = RooflineModel(RooflineConfig(gpu, arch, int(tp_key), **overrides))
            pre_pred, pre_act, dec_pred, dec_act = [], [], [], []
            for batch, length in PREFILL_SHAPES:
                pairs = batch * length * (length + 1) / 2
                pre_pred.append(model.batch_time_s(batch * length, 0, 0, pairs) * 1e3)
                pre_act.append(distserve_prefill_ms(coef, batch, length))
            for batch, ctx in DECODE_SHAPES:
                dec_pred.append(model.batch_time_s(batch, 0, batch * ctx, batch * (ctx + 1)) * 1e3)
                dec_act.append(distserve_decode_ms(coef, batch, ctx))
            for phase, pred, act in (("prefill", pre_pred, pre_act), ("decode", dec_pred, dec_act)):
                rows.append(
                    {
                        "model": arch.name,
                        "tp": int(tp_key),
                        "phase": phase,
                        **error_stats(np.array(pred), np.array(act)),
                    }
                )
    return rows
