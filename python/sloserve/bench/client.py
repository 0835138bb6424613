"""Drive programs against a live server: arrivals on time, stages in order, token times recorded.

A program's first stage is sent at its arrival time; stage k+1 is sent ``tool_delay_s`` after
stage k finished, with a prompt that extends stage k's context (previous prompt, previous
output, then filler standing for the tool's output) up to the stage's prompt length. A stage
that is refused (HTTP 429) or fails ends its program: the later stages never run, so the
program counts as missed. Times are ``time.perf_counter()`` seconds after the run's start.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from sloserve.bench.backends import StreamState, endpoint, request_body
from sloserve.bench.dataset import BenchWorkload, prompt_ids, prompt_text
from sloserve.core.slo import ProgramSpec, StageSpec


class BenchError(RuntimeError):
    """A run cannot proceed (server unreachable, every request failing...)."""


@dataclass(frozen=True)
class ClientOptions:
    backend: str
    url: str
    prompt_mode: str  # "ids" | "text"
    bytes_are_tokens: bool  # the server's tokenizer is byte level: text length == tokens
    model: str | None
    send_tags: bool
    run_id: str
    timeout_s: float
    max_concurrency: int | None
    extra_body: tuple[tuple[str, object], ...] = ()  # --extra-request-body, merged into each body


@dataclass
class StageOutcome:
    """What happened to one stage request, in client time."""

    program: ProgramSpec
    stage_index: int
    send_s: float
    status: int = 0
    error: str | None = None
    token_times: list[float] = field(default_factory=list)
    meta: dict | None = None
    prompt_tokens_reported: int | None = None

    @property
    def stage(self) -> StageSpec:
        return self.program.stages[self.stage_index]

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and bool(self.token_times)


def slo_tags(opts: ClientOptions, prog: ProgramSpec, k: int) -> dict:
    """Flat ``slo_*`` custom_params (docs/slo-api.md). Explicit values, so --slo-scale applies."""
    stage = prog.stages[k]
    segs = stage.segments
    tags: dict = {
        "slo_class": prog.slo_class,
        "slo_tpot_ms": segs[-1].tpot_ms,
        "slo_program_id": f"{opts.run_id}-{prog.program_id}",
        "slo_stage_index": k,
    }
    if stage.ttft.absolute_ms is not None:
        tags["slo_ttft_ms"] = stage.ttft.absolute_ms
    else:
        tags["slo_ttft_slowdown"] = stage.ttft.slowdown
    if len(segs) > 1:  # reasoning: thinking tokens at their own TPOT, then the answer
        tags["slo_think_tpot_ms"] = segs[0].tpot_ms
        tags["slo_think_tokens"] = int(segs[0].num_tokens or 0)
    if stage.name != "main":
        tags["slo_stage"] = stage.name
    return tags


def make_prompt(
    opts: ClientOptions, prog: ProgramSpec, k: int, prev: tuple | None, texts: dict[str, str]
) -> str | list[int]:
    """The prompt of stage ``k``: stage 0 fresh; later stages extend ``prev`` = (prompt, outcome)."""
    n = prog.stages[k].prompt_tokens
    key = f"{opts.run_id}-{prog.program_id}-{k}"
    if k == 0 and prog.program_id in texts:
        return texts[prog.program_id]
    if opts.prompt_mode == "ids":
        base = list(prev[0]) + list(prev[1].meta_ids) if prev else []
        return (base + prompt_ids(n, key))[:n]
    base = (prev[0] + prev[1].text) if prev else ""
    if opts.bytes_are_tokens:
        return (base + prompt_text(n, key, True))[:n]
    return base + " " + prompt_text(max(n - len(base.split()), 1), key, False)


@dataclass
class _Prev:
    meta_ids: list[int]
    text: str


async def send_stage(
    session: aiohttp.ClientSession, opts: ClientOptions, prog: ProgramSpec, k: int, prompt, t0: float
) -> tuple[StageOutcome, _Prev]:
    stage = prog.stages[k]
    custom = slo_tags(opts, prog, k) if opts.send_tags else None
    body = request_body(opts.backend, prompt, stage.output_tokens, custom, opts.model)
    body.update(opts.extra_body)
    state = StreamState(opts.backend, opts.bytes_are_tokens)
    out = StageOutcome(prog, k, time.perf_counter() - t0)
    try:
        async with session.post(
            opts.url + endpoint(opts.backend), data=orjson.dumps(body), headers={"Content-Type": "application/json"}
        ) as resp:
            out.status = resp.status
            if resp.status != 200:
                out.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                return out, _Prev([], "")
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                new = state.feed(orjson.loads(data))
                if new:
                    out.token_times.extend([time.perf_counter() - t0] * new)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.error = out.error or state.error
    out.status = state.status or out.status
    out.meta = state.meta
    out.prompt_tokens_reported = state.prompt_tokens
    return out, _Prev(state.output_ids, state.text)


async def run_programs(opts: ClientOptions, wl: BenchWorkload, on_done=None) -> tuple[list[StageOutcome], float]:
    """Send every program; returns the stage outcomes and the run's duration (s)."""
    timeout = aiohttp.ClientTimeout(total=opts.timeout_s)
    limit = opts.max_concurrency or 0
    sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
    outcomes: list[StageOutcome] = []
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.perf_counter()

        async def one(prog: ProgramSpec) -> None:
            await asyncio.sleep(max(prog.arrival_s - (time.perf_counter() - t0), 0.0))
            prev = None
            for k, stage in enumerate(prog.stages):
                if k:
                    await asyncio.sleep(stage.tool_delay_s)
                prompt = make_prompt(opts, prog, k, prev, wl.texts)
                if sem is not None:
                    async with sem:
                        outcome, sent = await send_stage(session, opts, prog, k, prompt, t0)
                else:
                    outcome, sent = await send_stage(session, opts, prog, k, prompt, t0)
                outcomes.append(outcome)
                if not outcome.ok:
                    break
                prev = (prompt, sent)
            if on_done is not None:
                on_done()

        await asyncio.gather(*(one(p) for p in wl.programs))
        duration = time.perf_counter() - t0
    return outcomes, duration


async def probe(url: str, timeout_s: float = 5.0) -> dict:
    """Server facts (sloserve's /server_info, else /v1/models); BenchError if unreachable."""
    info: dict = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            for path in ("/server_info", "/v1/models"):
                async with s.get(url + path) as resp:
                    if resp.status == 200:
                        info[path] = await resp.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        raise BenchError(f"cannot reach server at {url}: {type(exc).__name__}: {exc}") from None
    if not info:
        raise BenchError(f"server at {url} answers neither /server_info nor /v1/models")
    return info
