"""WorkloadConfig -> Workload: the one entry point the simulator, runtime and benchmark call.

Two seeded streams are spawned from ``seed``: one for lengths and SLO classes, one for
arrivals. So the same seed at a different rate gives the same programs at rescaled times
(common random numbers make a capacity search's attainment curve smooth).

Rates always count the programs actually submitted: programs longer than ``max_seq_len``
are dropped (and counted) before arrival times are assigned (synthetic arrivals draw more
programs until ``num_requests`` fit; trace replay rescales the kept requests' times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sloserve.core.slo import ProgramSpec
from sloserve.workloads.arrivals import ARRIVAL_KINDS, arrival_times_s, scale_to_rate
from sloserve.workloads.lengths import BUILTIN, get_length_model
from sloserve.workloads.loaders import load_azure_trace, load_lengths_csv
from sloserve.workloads.programs import build_programs
from sloserve.workloads.scenarios import SCENARIOS, PairSampler, ProgramBatch, Scenario, draw_batch, output_cap_tokens
from sloserve.workloads.slo_presets import get_slo_preset


@dataclass(frozen=True)
class WorkloadConfig:
    """What to generate. Validated on construction (no file I/O until build_workload)."""

    scenario: str = field(
        default="chatbot",
        metadata={
            "help": "chatbot, coder, summarizer, reasoning, tool-calling, mixed; each with a -S variant (TPOTs doubled)"
        },
    )
    rate_rps: float = field(default=1.0, metadata={"help": "target mean arrival rate, programs per second"})
    num_requests: int | None = field(
        default=1000, metadata={"help": "programs to generate; None with a trace: every request in the window"}
    )
    arrival: str = field(
        default="poisson", metadata={"help": "poisson | gamma (ignored with trace_path: arrivals come from the trace)"}
    )
    burstiness_cv: float = field(
        default=1.0, metadata={"help": "coefficient of variation of Gamma inter-arrival times"}
    )
    trace_path: str | None = field(
        default=None,
        metadata={"help": "Azure LLM inference CSV (TIMESTAMP, ContextTokens, GeneratedTokens): arrivals and lengths"},
    )
    trace_window_s: tuple[float, float] | None = field(
        default=None, metadata={"help": "(start, end) seconds from the trace's first request"}
    )
    lengths_path: str | None = field(
        default=None,
        metadata={
            "help": "CSV of num_prefill_tokens, num_decode_tokens (or Azure columns): lengths sampled with replacement; overrides trace lengths"
        },
    )
    max_seq_len: int | None = field(
        default=None,
        metadata={"help": "drop (and count) programs whose largest context (prompt + output) exceeds this"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every random draw"})
    slo_scale: float = field(default=1.0, metadata={"help": "multiply every SLO (TTFT slowdowns and TPOTs) by this"})
    # a deadline margin's price on a perfect engine: how much capacity each percent of TTFT costs
    ttft_scale: float = field(
        default=1.0, metadata={"help": "multiply the TTFT slowdowns alone by this (after slo_scale); TPOTs kept"}
    )
    output_len_known: bool = field(
        default=True,
        metadata={"help": "whether schedulers may use the true output length (else max_new_tokens is set)"},
    )
    length_dist: str | None = field(
        default=None,
        metadata={
            "help": "built-in prompt/output length model replacing the scenario's (sharegpt, arxiv-summarization, azure-code, azure-conv)"
        },
    )

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choices: {', '.join(SCENARIOS)}")
        if not _positive_number(self.rate_rps):
            raise ValueError(f"rate_rps must be a positive number, got {self.rate_rps}")
        if self.num_requests is None and self.trace_path is None:
            raise ValueError("num_requests=None (all requests) needs a trace_path")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {self.num_requests}")
        if self.arrival not in ARRIVAL_KINDS + ("trace",):
            raise ValueError(f"unknown arrival process {self.arrival!r}; choices: poisson, gamma, trace")
        if self.arrival == "trace" and self.trace_path is None:
            raise ValueError("arrival 'trace' needs a trace_path")
        if not _positive_number(self.burstiness_cv):
            raise ValueError(f"burstiness_cv must be a positive number, got {self.burstiness_cv}")
        if self.trace_window_s is not None:
            if self.trace_path is None:
                raise ValueError("trace_window_s needs a trace_path")
            start, end = self.trace_window_s
            if not 0 <= start < end:
                raise ValueError(f"trace window needs 0 <= start < end, got {start}:{end}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {self.max_seq_len}")
        if not _positive_number(self.slo_scale):
            raise ValueError(f"slo_scale must be a positive number, got {self.slo_scale}")
        if not _positive_number(self.ttft_scale):
            raise ValueError(f"ttft_scale must be a positive number, got {self.ttft_scale}")
        if self.length_dist is not None and self.length_dist not in BUILTIN:
            raise ValueError(f"unknown length distribution {self.length_dist!r}; choices: {', '.join(BUILTIN)}")
        if self.length_dist is not None and self.lengths_path is not None:
            raise ValueError("give lengths_path or length_dist, not both")


def _positive_number(value) -> bool:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return False
    return x > 0 and math.isfinite(x)


@dataclass(frozen=True)
class Workload:
    """Generated programs, sorted by arrival_s, ids p000000, p000001, ..."""

    programs: tuple[ProgramSpec, ...]
    num_dropped_too_long: int
    duration_s: float  # arrival time of the last program
    description: str


@dataclass(frozen=True)
class _Source:
    """Where prompt/output lengths come from, for one build."""

    sampler: PairSampler | None
    label: str
    max_output: int | None


def _length_source(cfg: WorkloadConfig, scenario: Scenario) -> _Source:
    if cfg.lengths_path is not None:
        table = load_lengths_csv(cfg.lengths_path)

        def sample_rows(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            rows = rng.integers(0, table.prompt_tokens.size, size=m)
            return table.prompt_tokens[rows], table.output_tokens[rows]

        return _Source(sample_rows, f"lengths from {cfg.lengths_path}", int(table.output_tokens.max()))
    if cfg.length_dist is not None:
        model = get_length_model(cfg.length_dist)
        return _Source(model.sample, f"lengths {model.name} (synthetic)", model.output.hi)
    return _Source(None, f"lengths {scenario.length_description}", None)


def build_workload(cfg: WorkloadConfig) -> Workload:
    """Generate the programs ``cfg`` describes. ValueError / FileNotFoundError on bad input."""
    scenario = SCENARIOS[cfg.scenario]
    presets = [get_slo_preset(c).scaled(cfg.slo_scale).ttft_scaled(cfg.ttft_scale) for c in scenario.classes]
    lengths_seq, arrival_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    len_rng, arr_rng = np.random.default_rng(lengths_seq), np.random.default_rng(arrival_seq)
    source = _length_source(cfg, scenario)
    if cfg.trace_path is not None:
        batch, arrivals, dropped, how, max_out, label = _from_trace(cfg, scenario, source, len_rng)
    else:
        assert cfg.num_requests is not None
        batch, dropped = _draw_fitting(cfg, scenario, source, cfg.num_requests, len_rng)
        arrivals = arrival_times_s(cfg.arrival, cfg.rate_rps, len(batch), cfg.burstiness_cv, arr_rng)
        how = cfg.arrival + (f" cv={cfg.burstiness_cv:g}" if cfg.arrival == "gamma" else "")
        max_out, label = source.max_output, source.label
    caps = output_cap_tokens(scenario, max_out)
    programs = build_programs(scenario, batch, arrivals, presets, cfg.output_len_known, caps, cfg.max_seq_len)
    duration = programs[-1].arrival_s if programs else 0.0
    limit = f", {dropped} dropped > max_seq_len {cfg.max_seq_len}" if cfg.max_seq_len is not None else ""
    ttft = f", ttft_scale {cfg.ttft_scale:g}" if cfg.ttft_scale != 1.0 else ""
    desc = (
        f"{cfg.scenario}: {len(programs)} programs at {cfg.rate_rps:g} rps ({how}), {label}{limit}, "
        f"slo_scale {cfg.slo_scale:g}{ttft}, seed {cfg.seed}"
    )
    return Workload(programs, dropped, float(duration), desc)


def _fits(batch: ProgramBatch, max_seq_len: int | None) -> np.ndarray:
    if max_seq_len is None:
        return np.ones(len(batch), dtype=bool)
    return batch.total_tokens() <= max_seq_len


def _draw_fitting(
    cfg: WorkloadConfig, scenario: Scenario, source: _Source, n: int, rng: np.random.Generator
) -> tuple[ProgramBatch, int]:
    """Draw until ``n`` programs fit ``max_seq_len``; returns them and the drops before the n-th."""
    parts: list[ProgramBatch] = []
    oks: list[np.ndarray] = []
    drawn = kept = 0
    want = n
    while kept < n:
        if drawn >= max(1000, 20 * n):
            raise ValueError(f"only {kept} of {drawn} drawn {cfg.scenario} programs fit max_seq_len={cfg.max_seq_len}")
        part = draw_batch(scenario, want, rng, sampler=source.sampler)
        ok = _fits(part, cfg.max_seq_len)
        parts.append(part)
        oks.append(ok)
        drawn += want
        kept += int(ok.sum())
        frac = max(kept / drawn, 0.05)
        want = max(16, math.ceil((n - kept) / frac * 1.2))
    ok_all = np.concatenate(oks)
    keep = np.flatnonzero(ok_all)[:n]
    dropped = int((~ok_all[: keep[-1] + 1]).sum())
    return ProgramBatch.concat(parts).take(keep), dropped


def _from_trace(cfg: WorkloadConfig, scenario: Scenario, source: _Source, rng: np.random.Generator):
    """Trace replay: the window's requests, filtered, the first num_requests, rate-scaled."""
    assert cfg.trace_path is not None
    trace = load_azure_trace(cfg.trace_path)
    idx = trace.window(*cfg.trace_window_s) if cfg.trace_window_s is not None else np.arange(trace.arrival_s.size)
    pairs = None if source.sampler is not None else (trace.prompt_tokens[idx], trace.output_tokens[idx])
    batch = draw_batch(scenario, idx.size, rng, pairs=pairs, sampler=source.sampler)
    ok = _fits(batch, cfg.max_seq_len)
    keep = np.flatnonzero(ok)
    if keep.size == 0:
        raise ValueError(f"no request of {cfg.trace_path} in the window fits max_seq_len={cfg.max_seq_len}")
    if cfg.num_requests is not None:
        keep = keep[: cfg.num_requests]
    dropped = int((~ok[: keep[-1] + 1]).sum())
    arrivals = scale_to_rate(trace.arrival_s[idx[keep]], cfg.rate_rps)
    native = trace.native_rate_rps(idx[keep])
    window = f" window {cfg.trace_window_s[0]:g}:{cfg.trace_window_s[1]:g}s" if cfg.trace_window_s else ""
    how = f"trace {cfg.trace_path}{window}, native {native:.3g} rps"
    max_out = source.max_output if source.sampler is not None else int(trace.output_tokens.max())
    label = source.label if source.sampler is not None else "lengths from the trace"
    return batch.take(keep), arrivals, dropped, how, max_out, label
