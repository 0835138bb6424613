"""Closing the loop on a real engine (benchmark/real_vs_sim.py): one workload for the simulator
and the live server, SLOs scaled to the fitted engine, and the step logs read back.

The workload is single-stage programs with seeded uniform prompt and output lengths and Poisson
arrivals; a run at rate r has ``max(min_requests, r * duration_s)`` programs, the first ones of
one seeded sequence, so runs at different rates share their lengths (common random numbers)
and every run lasts about ``duration_s``. SLOs are stated in the engine's units. By default
(``ZeroLoad`` measured by the profile) they are slowdowns against the unloaded server as its
client sees it: the TTFT SLO is ``ttft_slowdown`` times the zero-load TTFT of the prompt (a line
in prompt tokens fitted to requests served one at a time), the TPOT SLO ``tpot_steps`` times the
zero-load time between tokens. Without that measurement the fit stands in: ``ttft_slowdown`` times
its zero-load prefill, ``tpot_steps`` times its one-request decode step at the workload's mean
context (on a GPU the chatbot class's 100 ms TPOT is about 5 decode steps of a 7-13B model, and
the way in and out of the server is a few ms against TTFTs of hundreds; on the CPU engine with
the tiny model it is 5-15 ms against prefills of 3-10 ms, so the fit's prefill makes a TTFT SLO
mostly of time the planner cannot see).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sloserve.bench.dataset import BenchWorkload
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.sim.step_cost import StepCost
from sloserve.workloads import arrival_times_s

SLO_CLASS = "chatbot"  # a known class name; every SLO value is sent explicitly
MAX_REQUESTS = 1 << 14


@dataclass(frozen=True)
class LoopWorkload:
    prompt_tokens: tuple[int, int] = (64, 384)
    output_tokens: tuple[int, int] = (16, 64)
    duration_s: float = 20.0
    min_requests: int = 12
    ttft_slowdown: float = 8.0
    tpot_ms: float = 50.0
    seed: int = 1
    # the zero-load TTFT line (ms, ms per prompt token); both 0: the fit's prefill instead
    ttft_base_ms: float = 0.0
    ttft_per_token_ms: float = 0.0

    @property
    def zero_load_ttft(self) -> bool:
        """TTFT SLOs from the measured zero-load TTFT line (else the fit's prefill)."""
        return self.ttft_base_ms > 0 or self.ttft_per_token_ms > 0

    def ttft(self, prompt_tokens: int) -> TTFTSLO:
        if self.zero_load_ttft:
            return TTFTSLO(
                absolute_ms=self.ttft_slowdown * (self.ttft_base_ms + self.ttft_per_token_ms * prompt_tokens)
            )
        return TTFTSLO(slowdown=self.ttft_slowdown)

    def num_requests(self, rate_rps: float) -> int:
        return int(min(MAX_REQUESTS, max(self.min_requests, math.ceil(rate_rps * self.duration_s))))

    def programs(self, rate_rps: float) -> tuple[ProgramSpec, ...]:
        n = self.num_requests(rate_rps)
        rng = np.random.default_rng(self.seed)
        prompts = rng.integers(self.prompt_tokens[0], self.prompt_tokens[1] + 1, size=MAX_REQUESTS)[:n]
        outputs = rng.integers(self.output_tokens[0], self.output_tokens[1] + 1, size=MAX_REQUESTS)[:n]
        arrivals = arrival_times_s("poisson", rate_rps, n, 1.0, np.random.default_rng(self.seed + 1))
        segs = (DecodeSegment(self.tpot_ms),)
        return tuple(
            ProgramSpec(f"p{i:05d}", float(a), SLO_CLASS, (StageSpec(int(p), int(o), self.ttft(int(p)), segs),))
            for i, (p, o, a) in enumerate(zip(prompts, outputs, arrivals))
        )

    def bench_workload(self, rate_rps: float) -> BenchWorkload:
        return BenchWorkload(self.programs(rate_rps), {}, self.describe(rate_rps))

    def describe(self, rate_rps: float) -> str:
        return (
            f"{self.num_requests(rate_rps)} programs at {rate_rps:g} rps, prompt {self.prompt_tokens}, "
            f"output {self.output_tokens}, TTFT {self.ttft_slowdown:g}x {self._ttft_unit()}, TPOT {self.tpot_ms:.2f} ms"
        )

    def _ttft_unit(self) -> str:
        if self.zero_load_ttft:
            return f"zero-load TTFT ({self.ttft_base_ms:.2f} ms + {self.ttft_per_token_ms * 1e3:.2f} us/token)"
        return "the fit's zero-load prefill"

    @property
    def mean_context_tokens(self) -> int:
        return int(sum(self.prompt_tokens) / 2 + sum(self.output_tokens) / 4)


def decode_step_s(perf, context_tokens: int) -> float:
    """The fit's time of a step that decodes one token of one request at ``context_tokens``."""
    return perf.batch_time_s(1, 0, context_tokens, float(context_tokens + 1), 1)


def scaled_tpot_ms(perf, workload: LoopWorkload, tpot_steps: float) -> float:
    return tpot_steps * decode_step_s(perf, workload.mean_context_tokens) * 1e3


@dataclass(frozen=True)
class ZeroLoad:
    """The unloaded server as its client sees it: TTFT = base + per_token x prompt (least squares
    over requests served one at a time), and the median time between their tokens."""

    ttft_base_ms: float
    ttft_per_token_ms: float
    tpot_ms: float
    num_requests: int

    @classmethod
    def from_requests(cls, prompt_tokens, ttft_ms, tpot_ms) -> "ZeroLoad":
        x, y = np.asarray(prompt_tokens, dtype=float), np.asarray(ttft_ms, dtype=float)
        if x.size < 3 or np.ptp(x) == 0:
            raise ValueError(f"a zero-load TTFT line needs 3+ requests of different prompt lengths, got {x.size}")
        slope, base = np.polyfit(x, y, 1)
        if slope < 0 or base < 0:  # timing noise: never a line that promises less with more tokens
            slope, base = max(slope, 0.0), float(np.median(y - max(slope, 0.0) * x))
        return cls(float(max(base, 0.0)), float(slope), float(np.median(tpot_ms)), int(x.size))

    def apply(self, workload: LoopWorkload, tpot_steps: float) -> LoopWorkload:
        return replace(
            workload,
            ttft_base_ms=self.ttft_base_ms,
            ttft_per_token_ms=self.ttft_per_token_ms,
            tpot_ms=tpot_steps * self.tpot_ms,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ---- step logs (sglang/step_log.py) --------------------------------------------------------
STEP_FIELDS = ("num_tokens", "kv_read_tokens", "num_items", "prefill_tokens", "predicted_ms", "time_ms", "scale")


def read_steps(directory: str | Path) -> dict[str, np.ndarray]:
    """Every ``steps-*.csv`` row under ``directory``, column by column."""
    cols: dict[str, list[float]] = {k: [] for k in STEP_FIELDS}
    for path in sorted(Path(directory).glob("steps-*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    values = [float(row[k]) for k in STEP_FIELDS]
                except (KeyError, TypeError, ValueError):
                    continue  # a row cut short by a killed server
                for k, v in zip(STEP_FIELDS, values):
                    cols[k].append(v)
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


def profile_rows(steps: dict[str, np.ndarray], min_repeats: int = 5) -> list[dict]:
    """Steps binned by shape (tokens, KV read and requests, powers of two), one profile row per
    bin: the median time with its min, max and count, as scripts/profile_sglang.py writes them, and the
    25th percentile (``time_ms_p25``: the engine's speed when the host leaves it alone; what the
    host's contention adds on top is the noise model's part, ``noise_model``)."""
    if not steps["time_ms"].size:
        return []
    tok_bin = np.floor(np.log2(np.maximum(steps["num_tokens"], 1))).astype(int)
    kv_bin = np.floor(np.log2(steps["kv_read_tokens"] + 1)).astype(int)
    req_bin = np.floor(np.log2(np.maximum(steps["num_items"], 1))).astype(int)
    rows = []
    for t, k, r in sorted(set(zip(tok_bin.tolist(), kv_bin.tolist(), req_bin.tolist()))):
        m = (tok_bin == t) & (kv_bin == k) & (req_bin == r)
        if m.sum() < min_repeats:
            continue
        times = steps["time_ms"][m]
        rows.append(
            {
                "num_tokens": int(np.median(steps["num_tokens"][m])),
                "spec_steps": 0,
                "kv_read_tokens": int(np.median(steps["kv_read_tokens"][m])),
                "num_requests": int(np.median(steps["num_items"][m])),
                "time_ms": round(float(np.median(times)), 4),
                "time_ms_min": round(float(times.min()), 4),
                "time_ms_max": round(float(times.max()), 4),
                "time_ms_p25": round(float(np.quantile(times, 0.25)), 4),
                "repeats": int(m.sum()),
            }
        )
    return rows


def write_profile(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def step_ratios(steps: dict[str, np.ndarray], perf) -> np.ndarray:
    """Observed / predicted per step, predicted by ``perf`` from the logged shape."""
    tokens, kv = steps["num_tokens"].astype(int), steps["kv_read_tokens"].astype(int)
    items = steps["num_items"].astype(int)
    pred = np.array([perf.batch_time_s(int(n), 0, int(k), 0.0, int(r)) for n, k, r in zip(tokens, kv, items)]) * 1e3
    ok = pred > 0
    return steps["time_ms"][ok] / pred[ok]


def engine_cost(steps: dict[str, np.ndarray], skip: int = 0, seed: int = 0) -> tuple[StepCost, np.ndarray, dict]:
    """The served engine's own step time (sim/step_cost.py: per request, per request in an extend
    batch, per token, per KV token)
    fitted to the logged steps after the first ``skip``; its observed/fitted ratios in run order;
    and its per-step MAPE on a seeded quarter of the steps held out of the fit."""
    items, tokens = steps["num_items"][skip:], steps["num_tokens"][skip:]
    kv, t_s = steps["kv_read_tokens"][skip:], steps["time_ms"][skip:] / 1e3
    held = np.random.default_rng(seed).random(t_s.size) < 0.25
    probe = StepCost.fit(items[~held], tokens[~held], kv[~held], t_s[~held])
    pred = probe.step_time_s(items[held], tokens[held], kv[held])  # elementwise over the arrays
    cost = StepCost.fit(items, tokens, kv, t_s)
    fitted = cost.step_time_s(items, tokens, kv)
    quality = {
        "held_out_steps": int(held.sum()),
        "held_out_mape_pct": float(np.mean(np.abs(pred / t_s[held] - 1)) * 100),
    }
    return cost, t_s / fitted, quality


def noise_model(ratios: np.ndarray) -> dict:
    """The simulator's engine noise (SimConfig.step_time_noise / step_time_bias) matched to the
    observed ratios' body: a lognormal with their median and interquartile range. Episodic
    contention on a shared host (runs of steps 10x slower) is not i.i.d. noise; matched to the
    tail instead, the noise slows every simulated step and the prediction collapses."""
    if ratios.size < 8:
        return {"step_time_noise": 0.0, "step_time_bias": 0.0, "ratio_p50": None, "ratio_iqr": None}
    q25, p50, q75 = (float(x) for x in np.quantile(ratios, (0.25, 0.5, 0.75)))
    sigma = math.log(q75 / q25) / 1.349  # the IQR of a normal is 1.349 sigma
    cv = math.sqrt(math.expm1(sigma * sigma))
    bias = p50 * math.exp(sigma * sigma / 2) - 1.0  # the simulator's noise has mean 1, median exp(-s^2/2)
    return {"step_time_noise": cv, "step_time_bias": max(bias, -0.9), "ratio_p50": p50, "ratio_iqr": [q25, q75]}


def step_error(steps: dict[str, np.ndarray]) -> dict:
    """Predicted (the planner's unscaled model) against observed step times of a live run."""
    pred, obs = steps["predicted_ms"], steps["time_ms"]
    ok = pred > 0
    if not ok.any():
        return {"num_steps": 0}
    ratio = obs[ok] / pred[ok]
    err = (obs[ok] - pred[ok]) / obs[ok]
    q = np.quantile(ratio, (0.1, 0.5, 0.9, 0.99))
    return {
        "num_steps": int(ok.sum()),
        "mape_pct": float(np.mean(np.abs(err)) * 100),
        "median_abs_pct_error": float(np.median(np.abs(err)) * 100),
        "bias_pct": float((np.sum(obs[ok]) / np.sum(pred[ok]) - 1) * 100),  # observed total over predicted total
        "ratio_p10": float(q[0]),
        "ratio_p50": float(q[1]),
        "ratio_p90": float(q[2]),
        "ratio_p99": float(q[3]),
        "observed_ms_p50": float(np.median(obs[ok])),
        "predicted_ms_p50": float(np.median(pred[ok])),
        "final_calibration_scale": float(steps["scale"][-1]) if steps["scale"].size else None,
    }


def admitted_attainment(num_programs: int, admitted_fraction: float | None, admitted_misses: int) -> float | None:
    """Share of admitted requests that met their SLO (single-stage programs)."""
    if admitted_fraction is None:
        return None
    admitted = round(admitted_fraction * num_programs)
    return 1.0 - admitted_misses / admitted if admitted else None


def simulate(workload: LoopWorkload, rate_rps: float, config, perf) -> dict:
    """One simulator run of the workload at ``rate_rps`` (``config``: a SimConfig)."""
    from sloserve.sim.simulator import Simulator  # noqa: PLC0415 - the live-only paths never need it

    s = Simulator(workload.programs(rate_rps), config, perf).run().summary
    return {
        "rate_rps": rate_rps,
        "attainment": s["attainment"],
        "admitted_fraction": s["admitted_fraction"],
        "admitted_attainment": admitted_attainment(
            s["num_requests"], s["admitted_fraction"], s["num_admitted_slo_misses"]
        ),
        "num_requests": s["num_requests"],
        "num_admitted": round((s["admitted_fraction"] or 0) * s["num_requests"]),
        "num_admitted_slo_misses": s["num_admitted_slo_misses"],
    }
