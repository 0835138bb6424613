"""What to send: programs (stages, lengths, SLOs, arrival times) and their prompt payloads.

Every dataset becomes ``ProgramSpec`` objects from the core, so the benchmark resolves and
checks SLOs exactly like the simulator. ``scenario`` comes straight from
``sloserve.workloads.build_workload``; ``random`` and ``sharegpt`` build single-stage programs
with one SLO preset. The same seed at another rate gives the same programs at rescaled times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from sloserve.bench.config import BenchConfig
from sloserve.core.slo import ProgramSpec, StageSpec
from sloserve.workloads import WorkloadConfig, arrival_times_s, build_workload, get_scenario, get_slo_preset

_WORDS = (
    "alpha bravo cedar delta ember fjord grove harbor island jungle kettle lantern meadow "
    "nebula orchard prairie quartz river summit timber umbra valley willow yonder zephyr"
).split()


@dataclass(frozen=True)
class BenchWorkload:
    """Programs sorted by arrival, plus original prompt texts where a dataset has them."""

    programs: tuple[ProgramSpec, ...]
    texts: dict[str, str]
    description: str


def build_bench_workload(cfg: BenchConfig, rate_rps: float) -> BenchWorkload:
    """The programs of one run at ``rate_rps`` (inf: every program arrives at time 0)."""
    if cfg.dataset_name == "scenario" or (cfg.dataset_name == "sharegpt" and _is_csv(cfg.dataset_path)):
        wl = build_workload(
            WorkloadConfig(
                scenario=cfg.scenario,
                rate_rps=rate_rps if math.isfinite(rate_rps) else 1.0,
                num_requests=cfg.num_prompts,
                arrival="poisson" if cfg.burstiness == 1.0 else "gamma",
                burstiness_cv=cfg.burstiness,
                trace_path=cfg.trace,
                trace_window_s=cfg.window_s,
                seed=cfg.seed,
                slo_scale=cfg.slo_scale,
                lengths_path=cfg.dataset_path if cfg.dataset_name == "sharegpt" else None,
            )
        )
        programs = wl.programs if math.isfinite(rate_rps) else tuple(_at_zero(p) for p in wl.programs)
        return BenchWorkload(programs, {}, wl.description)
    rng = np.random.default_rng(cfg.seed)
    if cfg.dataset_name == "random":
        lo_in = max(1, int(cfg.random_input_len * cfg.random_range_ratio))
        lo_out = max(1, int(cfg.random_output_len * cfg.random_range_ratio))
        prompts = rng.integers(lo_in, cfg.random_input_len + 1, size=cfg.num_prompts).tolist()
        outputs = rng.integers(lo_out, cfg.random_output_len + 1, size=cfg.num_prompts).tolist()
        texts: list[str | None] = [None] * cfg.num_prompts
        label = f"random in [{lo_in},{cfg.random_input_len}] out [{lo_out},{cfg.random_output_len}]"
    else:
        texts, prompts, outputs = _sharegpt_json(cfg, rng)
        label = f"sharegpt {cfg.dataset_path}"
    arrivals = _arrivals(cfg, rate_rps, len(prompts))
    preset = get_slo_preset(cfg.slo_class or get_scenario(cfg.scenario).classes[0]).scaled(cfg.slo_scale)
    programs, text_of = [], {}
    for i, (p, o, t, a) in enumerate(zip(prompts, outputs, texts, arrivals)):
        pid = f"p{i:06d}"
        stage = StageSpec(int(p), int(o), preset.ttft(), preset.segments())
        programs.append(ProgramSpec(pid, float(a), preset.name, (stage,)))
        if t is not None:
            text_of[pid] = t
    desc = (
        f"{label}: {len(programs)} programs at {rate_rps:g} rps (cv {cfg.burstiness:g}), class {preset.name}, "
        f"slo_scale {cfg.slo_scale:g}, seed {cfg.seed}"
    )
    return BenchWorkload(tuple(programs), text_of, desc)


def _is_csv(path: str | None) -> bool:
    return bool(path) and str(path).lower().endswith((".csv", ".csv.gz"))


def _at_zero(p: ProgramSpec) -> ProgramSpec:
    return ProgramSpec(p.program_id, 0.0, p.slo_class, p.stages, p.weight, p.metadata)


def _arrivals(cfg: BenchConfig, rate_rps: float, n: int) -> list[float]:
    if not math.isfinite(rate_rps):
        return [0.0] * n
    kind = "poisson" if cfg.burstiness == 1.0 else "gamma"
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[1])
    return arrival_times_s(kind, rate_rps, n, cfg.burstiness, rng).tolist()


def _sharegpt_json(cfg: BenchConfig, rng: np.random.Generator) -> tuple[list, list, list]:
    """First human turn as the prompt, the reply's length (chars / 4, or --sharegpt-output-len) as
    the output. Prompt tokens are re-read from the server's own count when it reports one."""
    assert cfg.dataset_path is not None
    with open(cfg.dataset_path, encoding="utf-8") as fh:
        data = json.load(fh)
    pairs = []
    for item in data if isinstance(data, list) else []:
        conv = item.get("conversations") or item.get("conversation") or []
        if len(conv) >= 2 and conv[0].get("value") and conv[1].get("value"):
            pairs.append((conv[0]["value"], conv[1]["value"]))
    if not pairs:
        raise ValueError(f"{cfg.dataset_path}: no ShareGPT conversations with a prompt and a reply")
    order = rng.permutation(len(pairs))
    picked = [pairs[i] for i in np.resize(order, cfg.num_prompts)]
    texts = [p for p, _ in picked]
    prompts = [max(1, len(p.encode("utf-8"))) for p in texts]
    outputs = [cfg.sharegpt_output_len or max(1, len(r) // 4) for _, r in picked]
    return texts, prompts, outputs


def prompt_ids(num_tokens: int, key: str) -> list[int]:
    """Token ids 32..126 (printable ASCII: valid in the byte tokenizer and in any real vocab),
    seeded by ``key`` so two programs never share a prefix (no accidental prefix-cache hits)."""
    rng = np.random.default_rng(abs(hash_key(key)))
    return rng.integers(32, 127, size=num_tokens).tolist()


def prompt_text(num_tokens: int, key: str, byte_exact: bool) -> str:
    """Text of ``num_tokens`` tokens: exact for a byte tokenizer (one char per token), otherwise
    ~one token per common word."""
    rng = np.random.default_rng(abs(hash_key(key)))
    words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), size=num_tokens)]
    if not byte_exact:
        return " ".join(words)
    text = f"{key} " + " ".join(words)
    return text[:num_tokens].ljust(num_tokens, ".")


def hash_key(key: str) -> int:
    """A stable (process-independent) hash: Python's str hash is salted per process."""
    h = 1469598103934665603
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h
