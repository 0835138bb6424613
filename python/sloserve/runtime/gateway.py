"""What lets an existing gateway sit in front of embedded sloserve servers unchanged:
``GET /v1/loads`` in SGLang 0.5.23's schema (SGLang's model gateway polls it for its load-aware
policies), the older ``GET /get_load`` (what ``sglang-router`` 0.3.2's ``power_of_two`` polls
instead) and SGLang-named Prometheus series (llm-d / the Gateway API inference extension scrape
them). See docs/routing.md, "Putting a gateway in front".
"""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from sloserve.runtime.loads import LoadsQueryError, LoadTracker, loads_body, loads_prometheus, parse_include, select
from sloserve.runtime.sglang_metrics import SchedulerGauges, SglangRequestMetrics


def attach_gateway(front) -> LoadTracker:
    """Build the front's load tracker and register the SGLang-named series in its registry;
    both are told of every ended request through the front's request log."""
    cfg = front.cfg
    tracker = LoadTracker(cfg.dp_size, cfg.block_size, cfg.kv_tokens)
    requests = SglangRequestMetrics(front.metrics.registry, cfg.model_name)
    front.reqlog.observers.extend((tracker.request_done, requests.request_done))
    gauges = SchedulerGauges(cfg.model_name, cfg.dp_size, lambda: tracker.snapshot(front.states.values(), front.stats))
    front.metrics.registry.register(gauges)
    return tracker


def legacy_load(load: dict) -> dict:
    """A ``/v1/loads`` entry in the pre-``/v1/loads`` ``GetLoadReqOutput`` schema."""
    return {
        "dp_rank": load["dp_rank"],
        "num_reqs": load["num_running_reqs"] + load["num_waiting_reqs"],
        "num_waiting_reqs": load["num_waiting_reqs"],
        "num_tokens": load["num_total_tokens"],
    }


def add_gateway_routes(app: FastAPI, front_of: Callable, tracker_of: Callable[[], LoadTracker]) -> None:
    @app.get("/v1/loads")
    async def v1_loads(dp_rank: int | None = None, include: str | None = None, format: str | None = None):
        """SGLang's query: ``dp_rank`` filters, ``include`` picks sections (core, queues, disagg,
        all...), ``format=prometheus`` gives ``sglang_<field>{dp_rank=...}`` gauges."""
        front = front_of()
        loads = tracker_of().snapshot(front.states.values(), front.stats)
        if dp_rank is not None:
            loads = [load for load in loads if load["dp_rank"] == dp_rank]
        try:
            loads = [select(load, parse_include(include)) for load in loads]
        except LoadsQueryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)  # SGLang's HTTPException body
        if format == "prometheus":
            return Response(loads_prometheus(loads), media_type="text/plain; version=0.0.4; charset=utf-8")
        return loads_body(loads)

    @app.get("/get_load")
    async def get_load():
        """The load route of SGLang releases before ``/v1/loads`` (gone in 0.5.23), still the one
        ``sglang-router`` 0.3.2's load monitor polls for ``power_of_two``: one entry per replica,
        ``num_tokens`` = KV tokens in use + prompt tokens waiting (``num_total_tokens``)."""
        front = front_of()
        return [legacy_load(load) for load in tracker_of().snapshot(front.states.values(), front.stats)]
