"""One benchmark run against one server at one rate: probe, warm up, send, summarize."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from dataclasses import replace
from typing import Any

import aiohttp

from sloserve.bench.backends import CHAT
from sloserve.bench.client import BenchError, ClientOptions, probe, run_programs, send_stage
from sloserve.bench.config import BenchConfig
from sloserve.bench.dataset import build_bench_workload
from sloserve.bench.report import summarize_run
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.perf import get_model


def client_options(cfg: BenchConfig, url: str, info: dict) -> ClientOptions:
    """Prompt encoding and model name, from the flags and what the server says about itself."""
    server = info.get("/server_info") or {}
    bytes_tok = server.get("tokenizer") == "builtin-byte"
    mode = cfg.prompt_mode
    if mode == "auto":
        mode = "text" if cfg.backend in CHAT or bytes_tok else "ids"
    model = cfg.served_model_name
    if model is None:
        cards = (info.get("/v1/models") or {}).get("data") or []
        model = cards[0].get("id") if cards else server.get("served_model_name")
    extra = tuple(json.loads(cfg.extra_request_body).items()) if cfg.extra_request_body else ()
    return ClientOptions(
        cfg.backend,
        url,
        mode,
        bytes_tok,
        model,
        not cfg.no_slo_tags,
        uuid.uuid4().hex[:8],
        cfg.request_timeout_s,
        cfg.max_concurrency,
        extra,
    )


async def _warmup(cfg: BenchConfig, opts: ClientOptions) -> None:
    """Short unmeasured requests: the first request pays connection and JIT/graph set-up costs."""
    if cfg.warmup_requests <= 0:
        return
    stage = StageSpec(16, 4, TTFTSLO(slowdown=100.0), (DecodeSegment(1000.0),), name="warmup")
    prog = ProgramSpec("warmup", 0.0, "default", (stage,))
    quiet = replace(opts, send_tags=False)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=opts.timeout_s)) as session:
        for i in range(cfg.warmup_requests):
            prompt = list(range(40, 56)) if opts.prompt_mode == "ids" else "warm up request " + str(i)
            out, _ = await send_stage(session, quiet, prog, 0, prompt, 0.0)
            if not out.ok:
                raise BenchError(f"warm-up request to {opts.url} failed: {out.error or 'no tokens'}")


async def run_async(cfg: BenchConfig, url: str, rate_rps: float, progress=None, workload=None) -> dict[str, Any]:
    """``workload(rate_rps) -> BenchWorkload`` replaces the flags' dataset (a caller's own programs,
    e.g. benchmark/real_vs_sim.py's, which the simulator runs too)."""
    info = await probe(url)
    opts = client_options(cfg, url, info)
    await _warmup(cfg, opts)
    wl = workload(rate_rps) if workload is not None else build_bench_workload(cfg, rate_rps)
    outcomes, duration = await run_programs(opts, wl, on_done=progress)
    result = summarize_run(outcomes, wl.programs, duration, get_model(cfg.model), cfg.tolerance, cfg.output_details)
    if outcomes and all(o.error for o in outcomes) and not any(o.status == 429 for o in outcomes):
        raise BenchError(f"every request to {url} failed; first error: {outcomes[0].error}")
    server = info.get("/server_info") or {}
    head = {
        "tag": cfg.tag,
        "backend": cfg.backend,
        "base_url": url,
        "dataset_name": cfg.dataset_name,
        "scenario": cfg.scenario if cfg.dataset_name == "scenario" else None,
        "request_rate": rate_rps if math.isfinite(rate_rps) else "inf",
        "burstiness": cfg.burstiness,
        "max_concurrency": cfg.max_concurrency,
        "num_prompts": len(wl.programs),
        "seed": cfg.seed,
        "slo_scale": cfg.slo_scale,
        "perf_model": cfg.model,
        "tolerance": cfg.tolerance,
        "server_policy": server.get("policy"),
        "server_engine": server.get("engine"),
        "served_model": opts.model,
        "prompt_mode": opts.prompt_mode,
        "workload": wl.description,
        "random_input_len": cfg.random_input_len,
        "random_output_len": cfg.random_output_len,
        "random_range_ratio": cfg.random_range_ratio,
        "sharegpt_output_len": cfg.sharegpt_output_len,
        "server_info": server or None,
    }
    return {**head, **result}


def run_benchmark(cfg: BenchConfig, url: str, rate_rps: float, progress=None, workload=None) -> dict[str, Any]:
    """Synchronous wrapper: one fresh run. Raises BenchError when the server cannot be used."""
    return asyncio.run(run_async(cfg, url, rate_rps, progress, workload))


def append_result(path: str, result: dict) -> None:
    """One JSON object per line, appended (SGLang's --output-file convention)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result, default=float) + "\n")
