"""The Ray ingress for the SGLang backend: SGLang's HTTP API, routed by a sloserve policy.

Each generation request (``/generate``, ``/v1/completions``, ``/v1/chat/completions``) becomes a
sloserve ``Request`` (prompt tokens counted with the model's tokenizer, SLOs from its
``custom_params``), the routing policy picks a replica from the live replicas' published
summaries plus its own pending ledger (as SGLang's DP controller does on one host), a
best-effort verdict travels in ``custom_params["slo_routed_best_effort"]``, and the body is proxied to
that replica's SGLang server, whose sloserve plugin does the soft admission. Responses pass
through unchanged (SSE chunks as they come) with an ``X-Sloserve-Replica`` header. A request
whose replica is lost ends with an error naming the replica: a 503 JSON body, or, once a stream
has started, an SSE ``error`` event and ``[DONE]``. A replica that refuses the connection is
skipped and the request routed again (nothing reached it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import aiohttp
from aiohttp import web

from sloserve.perf import get_model
from sloserve.routing.base import NoReplicaError, create_router
from sloserve.runtime.responses import error_body, sse
from sloserve.runtime.slo_params import SloDefaults, SloParamError
from sloserve.sglang.config import SglangAdapterConfig
from sloserve.sglang.ray_pool import RayReplicaPool, ReplicaSlot
from sloserve.sglang.ray_prompt import PromptCounter, custom_params_of, max_new_tokens_of, with_best_effort
from sloserve.sglang.translate import build_request

log = logging.getLogger("sloserve.sglang.ray")
GENERATION_ROUTES = ("/generate", "/v1/completions", "/v1/chat/completions")
# Read-only routes any replica answers the same (every replica serves the same model).
SHARED_GET_ROUTES = ("/v1/models", "/get_model_info", "/model_info", "/get_server_info", "/server_info")
# Requests meant for every replica (abort by rid or all, cache flush): sent to each live one.
BROADCAST_POST_ROUTES = ("/abort_request", "/flush_cache")
REPLICA_HEADER = "X-Sloserve-Replica"


class Unreachable(Exception):
    """The replica's server refused the connection: nothing reached it, route elsewhere."""


class InFlight:
    """One proxied upstream response; ``lost`` is set by the pool when its replica is lost."""

    def __init__(self, upstream: aiohttp.ClientResponse) -> None:
        self.upstream = upstream
        self.lost = ""

    def close(self, message: str) -> None:
        self.lost = message  # says which replica, and why
        self.upstream.close()


class RayIngress:
    def __init__(self, pool: RayReplicaPool, cfg: SglangAdapterConfig, counter: PromptCounter, user_api_key: str = ""):
        self.pool, self.counter, self.user_api_key = pool, counter, user_api_key
        self.router = create_router(cfg.router, dict(cfg.router_options), cfg.seed)
        self.zero_load_prefill_s = get_model(cfg.perf_model).zero_load_prefill_s
        self.defaults = SloDefaults(ttft_slowdown=cfg.default_ttft_slowdown, tpot_ms=cfg.default_tpot_ms)
        self.router_name = cfg.router
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._auth])
        app.router.add_get("/health", self.health)
        for path in GENERATION_ROUTES:
            app.router.add_post(path, self.generate)
        for path in SHARED_GET_ROUTES:
            app.router.add_get(path, self.shared_get)
        for path in BROADCAST_POST_ROUTES:
            app.router.add_post(path, self.broadcast)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app) -> None:
        # No total timeout: a long generation streams for as long as it takes.
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self.pool.start(self.session)

    async def _cleanup(self, _app) -> None:
        await self.pool.close()
        await self.session.close()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.user_api_key and request.path != "/health":
            if request.headers.get("Authorization", "") != f"Bearer {self.user_api_key}":
                return web.json_response(error_body("invalid API key", 401), status=401)
        return await handler(request)

    async def health(self, _request: web.Request) -> web.Response:
        live = self.pool.live()
        body = {"status": "ok" if live else "unavailable", "router": self.router_name, "replicas": self.pool.health()}
        return web.json_response(body, status=200 if live else 503)

    async def shared_get(self, request: web.Request) -> web.StreamResponse:
        for slot in self.pool.live():
            try:
                return await self.forward(request, slot, b"")
            except Unreachable:
                continue
        return unavailable("no live replica", request.path)

    async def broadcast(self, request: web.Request) -> web.Response:
        data = await request.read()
        headers = {"Authorization": f"Bearer {self.pool.api_key}", "Content-Type": "application/json"}

        async def one(slot: ReplicaSlot) -> int:
            try:
                async with self.session.post(slot.url + request.path_qs, data=data, headers=headers) as r:
                    return r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return 503

        live = self.pool.live()
        statuses = await asyncio.gather(*(one(s) for s in live))
        body = {"replicas": {s.replica_id: code for s, code in zip(live, statuses)}}
        ok = bool(live) and all(code == 200 for code in statuses)
        return web.json_response(body, status=200 if ok else 503)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return web.json_response(error_body(f"invalid JSON body: {exc}", 400), status=400)
        now = time.time()
        core = self.slo_request(request.path, body, now)
        tried: set[int] = set()
        while True:
            views = [v for v in self.pool.views(now) if v.replica_id not in tried]
            try:
                decision = self.router.route(core, views, now)
            except NoReplicaError as exc:
                return unavailable(f"no live replica to serve the request ({exc})", request.path)
            sent = with_best_effort(request.path, body) if decision.best_effort else body
            slot = self.pool.slots[decision.replica_id]
            try:
                response = await self.forward(request, slot, json.dumps(sent).encode())
            except Unreachable:
                tried.add(slot.replica_id)
                continue
            self.router.on_finished(core, slot.replica_id, time.time())
            return response

    def slo_request(self, path: str, body: dict, now: float):
        """The request as the router sees it. A bad slo_* key is routed as untagged: the replica's
        plugin answers it with 400 naming the field, exactly as on one host."""
        prompt, max_new = self.counter.count(path, body), max_new_tokens_of(path, body)
        rid = str(body.get("rid") or uuid.uuid4().hex)
        try:
            custom = custom_params_of(path, body)
            return build_request(rid, prompt, max_new, custom, now, self.zero_load_prefill_s, self.defaults)
        except (SloParamError, TypeError, ValueError):
            return build_request(rid, prompt, max_new, None, now, self.zero_load_prefill_s, self.defaults)

    async def forward(self, request: web.Request, slot: ReplicaSlot, data: bytes) -> web.StreamResponse:
        """Proxy to ``slot``'s server. Raises Unreachable when its server refuses the connection."""
        headers = {"Authorization": f"Bearer {self.pool.api_key}", "Content-Type": "application/json"}
        url = slot.url + request.path_qs
        try:
            upstream = await self.session.request(request.method, url, data=data or None, headers=headers)
        except aiohttp.ClientConnectorError as exc:
            self.pool.suspect(slot, f"connection refused: {exc}")
            raise Unreachable(str(exc)) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.pool.suspect(slot, f"no response: {exc}")
            return unavailable(lost_message(slot, str(exc) or type(exc).__name__), request.path)
        flight = InFlight(upstream)
        slot.inflight.add(flight)
        try:
            if upstream.content_type == "text/event-stream":
                return await self._stream(request, slot, flight)
            try:
                payload = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failure = f"its server closed the connection ({type(exc).__name__})"
                self.pool.suspect(slot, failure)
                return unavailable(flight.lost or lost_message(slot, failure), request.path)
            if flight.lost:
                return unavailable(flight.lost, request.path)
            return web.Response(
                body=payload,
                status=upstream.status,
                content_type=upstream.content_type,
                headers={REPLICA_HEADER: str(slot.replica_id)},
            )
        finally:
            slot.inflight.discard(flight)
            upstream.release() if upstream.content.at_eof() else upstream.close()

    async def _stream(self, request: web.Request, slot: ReplicaSlot, flight: InFlight) -> web.StreamResponse:
        resp = web.StreamResponse(status=flight.upstream.status)
        resp.content_type = "text/event-stream"
        resp.headers[REPLICA_HEADER] = str(slot.replica_id)
        await resp.prepare(request)
        failure = ""
        while True:
            try:
                chunk = await flight.upstream.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failure = f"its server closed the stream ({type(exc).__name__})"
                self.pool.suspect(slot, failure)
                break
            if not chunk:
                break
            try:
                await resp.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                return resp  # our client left: closing the upstream (finally) aborts it in SGLang
        if flight.lost or failure:
            message = flight.lost or lost_message(slot, failure)
            log.warning("stream on %s cut: %s", slot.describe(), message)
            await resp.write(sse({"error": {**error_body(message, 503)["error"], "retryable": True}}))
            await resp.write(sse("[DONE]"))
        await resp.write_eof()
        return resp


def lost_message(slot: ReplicaSlot, why: str) -> str:
    return f"{slot.describe()} lost while serving the request: {why}"


def unavailable(message: str, path: str) -> web.Response:
    body = error_body(message, 503, openai=path.startswith("/v1/"))
    return web.json_response(body, status=503)
