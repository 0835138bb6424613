"""The HTTP server (FastAPI on uvicorn): SGLang 0.5.23's native and OpenAI routes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import asynccontextmanager
from typing import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from sloserve import __version__
from sloserve.runtime.config import ServerConfig
from sloserve.runtime.front import FrontEnd
from sloserve.runtime.gateway import add_gateway_routes, attach_gateway
from sloserve.runtime.limits import AuthMiddleware, HeaderLimitMiddleware, HttpError, read_body
from sloserve.runtime.protocol import BadRequest, GenInput, error_field, parse_chat, parse_completion, parse_generate
from sloserve.runtime.responses import OpenAIFormatter, error_body, generate_out, sse
from sloserve.runtime.slo_params import SloParamError
from sloserve.runtime.state import ReqState

log = logging.getLogger("sloserve.http")


class ORJSONResponse(Response):
    """JSON through orjson (FastAPI's own ORJSONResponse is deprecated)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


HEALTH_GENERATE_TIMEOUT_S = 20.0
RETRY_AFTER_S = 1


def _error(exc: Exception | str, status: int = 400, openai: bool = False, param: str | None = None) -> ORJSONResponse:
    message = str(exc)
    if isinstance(exc, Exception):
        status = getattr(exc, "status_code", status)
        param = param or error_field(exc)
    # 429 (queue full, queue timeout, not admitted) and 503 (draining, replica down): retry later
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return ORJSONResponse(error_body(message, status, param, openai), status_code=status, headers=headers)


async def _json_body(request: Request):
    cfg = request.app.state.cfg
    try:
        raw = await read_body(request, cfg.max_body_bytes, cfg.timeout_keep_alive)
    except HttpError as exc:
        raise BadRequest(str(exc), exc.param, exc.status_code) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise BadRequest(f"invalid JSON body: {exc}") from None


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_done(front: FrontEnd, states: list[ReqState], request: Request) -> bool:
    """Wait for every state to end; on client disconnect abort them all and return False."""

    async def one(state: ReqState) -> None:
        while not state.done:
            state.changed.clear()
            await state.changed.wait()

    work = asyncio.ensure_future(asyncio.gather(*(one(s) for s in states)))
    disc = asyncio.ensure_future(_wait_disconnect(request))
    await asyncio.wait({work, disc}, return_when=asyncio.FIRST_COMPLETED)
    if work.done():
        disc.cancel()
        return True
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)  # retrieve the cancellation: no "never retrieved" log
    for s in states:
        front.abort(s, "client disconnected")
    return False


async def _start(front: FrontEnd, gens: list[GenInput], openai: bool) -> list[ReqState] | ORJSONResponse:
    """Validate, submit and wait for admission; an error response when any is refused."""
    try:
        states = [front.new_state(g) for g in gens]
        for s in states:
            front.submit(s)
    except (BadRequest, SloParamError) as exc:
        return _error(exc, openai=openai)
    await asyncio.gather(*(front.wait_admission(s) for s in states))
    bad = next((s for s in states if s.error_status and not s.visible), None)
    if bad is not None:
        for s in states:
            front.abort(s, "another request of the batch failed")
        message = (bad.finish_reason or {}).get("message", "request failed")
        return _error(message, bad.error_status, openai)
    return states


def _stream(front: FrontEnd, state: ReqState, emit: Callable[[bool], list[bytes]]) -> StreamingResponse:
    """SSE: whatever is new after each wake-up, the final chunk, then ``data: [DONE]``."""

    async def body():
        try:
            while True:
                state.changed.clear()
                done = state.done
                for chunk in emit(done):
                    yield chunk
                if done:
                    break
                await state.changed.wait()
            yield sse("[DONE]")
        finally:
            if not state.done:  # the client went away mid-stream
                front.abort(state, "client disconnected")

    return StreamingResponse(body(), media_type="text/event-stream")


def _final_error(state: ReqState, openai: bool) -> ORJSONResponse | None:
    if state.error_status and state.error_status != 499:
        message = (state.finish_reason or {}).get("message", "request failed")
        return _error(message, state.error_status, openai)
    return None


def _generate_stream(front: FrontEnd, state: ReqState) -> StreamingResponse:
    """/generate's SSE: a chunk whenever tokens were added, then the final one."""
    sent = [0]

    def emit(final: bool) -> list[bytes]:
        if state.visible == sent[0] and not final:
            return []
        sent[0] = state.visible
        return [sse(generate_out(state, front.tok, front.now()))]

    return _stream(front, state, emit)


def add_generation_routes(app: FastAPI, front_of: Callable[[], FrontEnd]) -> None:
    @app.api_route("/generate", methods=["POST", "PUT"])
    async def generate(request: Request):
        front = front_of()
        try:
            gens = parse_generate(await _json_body(request), front.cfg.default_max_new_tokens)
        except BadRequest as exc:
            return _error(exc)
        started = await _start(front, gens, openai=False)
        if isinstance(started, ORJSONResponse):
            return started
        if gens[0].stream:
            return _generate_stream(front, started[0])
        if not await _wait_done(front, started, request):
            return Response(status_code=499)
        for s in started:
            if (err := _final_error(s, False)) is not None:
                return err
        outs = [generate_out(s, front.tok, front.now()) for s in started]
        return ORJSONResponse(outs if gens[0].extra.get("batched") else outs[0])

    async def openai_route(request: Request, chat: bool):
        front = front_of()
        try:
            body = await _json_body(request)
            gen = (parse_chat if chat else parse_completion)(body, 128 if chat else 16)
        except BadRequest as exc:
            return _error(exc, openai=True)
        started = await _start(front, [gen], openai=True)
        if isinstance(started, ORJSONResponse):
            return started
        state = started[0]
        fmt = OpenAIFormatter(state, front.tok, front.cfg.model_name, chat)
        if gen.stream:

            def emit(final: bool) -> list[bytes]:
                if final and state.error_status and state.error_status != 499:
                    msg = (state.finish_reason or {}).get("message", "request failed")
                    return [sse({"error": error_body(msg, state.error_status, None, True)})]
                out = [sse(c) for c in fmt.chunks(front.now(), final)]
                if final and gen.extra.get("include_usage"):
                    out.append(sse(fmt.usage_chunk()))
                return out

            return _stream(front, state, emit)
        if not await _wait_done(front, [state], request):
            return Response(status_code=499)
        return _final_error(state, True) or ORJSONResponse(fmt.full(front.now()))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await openai_route(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await openai_route(request, chat=True)


def add_health_routes(app: FastAPI, front_of: Callable[[], FrontEnd]) -> None:
    @app.get("/health")
    @app.get("/ready")
    async def health():
        front = front_of()
        # 200 while the server can serve (router and at least one replica up); each process reported
        degraded = front.healthy and not all(front.replica_up)
        body = {
            "status": "degraded" if degraded else ("ok" if front.healthy else "unhealthy"),
            "router_up": front.router_up,
            "router": front.router_health.report("router"),
            "replicas": [h.report("replica", i) for i, h in enumerate(front.health)],
        }
        if front.fatal:
            body["fatal"] = front.fatal
        return ORJSONResponse(body, status_code=200 if front.healthy else 503)

    @app.get("/health_generate")
    async def health_generate():
        front = front_of()
        if not front.healthy:
            return await health()
        gen = parse_generate(
            {
                "input_ids": [0],
                "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
                "rid": f"HEALTH_CHECK_{uuid.uuid4().hex}",
            },
            1,
        )[0]
        started = await _start(front, [gen], openai=False)
        if isinstance(started, ORJSONResponse):
            return Response(status_code=503)
        state = started[0]
        try:
            await asyncio.wait_for(_wait_state(state), HEALTH_GENERATE_TIMEOUT_S)
        except asyncio.TimeoutError:
            front.abort(state, "health check timed out")
            return Response(status_code=503)
        return Response(status_code=200 if not state.error_status else 503)


def add_info_routes(app: FastAPI, front_of: Callable[[], FrontEnd]) -> None:
    @app.get("/get_model_info")
    @app.get("/model_info")
    async def model_info():
        front = front_of()
        return {
            "model_path": front.cfg.model_name,
            "served_model_name": front.cfg.model_name,
            "tokenizer_path": front.cfg.tokenizer_path or front.tok.name,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "load_format": "simulated",
            "reasoning_parser": None,
            "tool_call_parser": None,
            "disaggregation_mode": "null",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": "simulated",
            "architectures": None,
        }

    @app.get("/get_server_info")
    @app.get("/server_info")
    async def server_info():
        front = front_of()
        cfg = front.cfg
        states = [
            {
                "replica": i,
                "up": front.replica_up[i],
                **front.stats.get(i, {}),
                "pid": front.ready[i].pid if i in front.ready else None,
            }
            for i in range(cfg.dp_size)
        ]
        return {
            "backend": "embedded",
            "engine": "simulated",
            "engine_description": front.ready[0].engine if 0 in front.ready else "simulated",
            "model": cfg.model,
            "served_model_name": cfg.model_name,
            "policy": cfg.policy,
            "policy_options": cfg.policy_options(),
            "router": cfg.router,
            "router_options": cfg.router_options(),
            "router_pid": front.ready[-1].pid if -1 in front.ready else None,
            "dp_size": cfg.dp_size,
            "kv_tokens": cfg.kv_tokens,
            "context_length": cfg.context_len,
            "time_scale": cfg.time_scale,
            "reject_on_overload": cfg.reject_on_overload,
            "tokenizer": front.tok.name,
            "internal_states": states,
            "version": __version__,
            "requests_in_flight": len(front.states),
        }

    @app.get("/v1/models")
    async def models():
        cfg = front_of().cfg
        card = {
            "id": cfg.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "sloserve",
            "root": cfg.model_name,
            "parent": None,
            "max_model_len": cfg.context_len,
        }
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model:path}")
    async def retrieve_model(model: str):
        cfg = front_of().cfg
        if model != cfg.model_name:
            return _error(f"The model '{model}' does not exist", 404, openai=True, param="model")
        return {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "sloserve",
            "root": model,
            "parent": None,
            "max_model_len": cfg.context_len,
        }

    @app.get("/metrics")
    async def metrics():
        return Response(front_of().metrics.render(), media_type="text/plain; version=0.0.4")


def add_admin_routes(app: FastAPI, front_of: Callable[[], FrontEnd]) -> None:
    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache():
        # The simulated engine keeps no prefix cache, so there is nothing to flush.
        return Response("Cache flushed.\n", status_code=200)

    @app.post("/abort_request")
    async def abort_request(request: Request):
        front = front_of()
        try:
            body = await _json_body(request)
        except BadRequest as exc:
            return _error(exc)
        if not isinstance(body, dict):
            return _error("request body must be a JSON object")
        if body.get("abort_all"):
            for s in list(front.states.values()):
                front.abort(s, "aborted by /abort_request (abort_all)")
            return Response(status_code=200)
        rid = body.get("rid")
        if not isinstance(rid, str) or not rid:
            return _error("rid must be a non-empty string", param="rid")
        if not front.abort_rid(rid):
            return _error(f"no request in flight with rid {rid!r}", 404, param="rid")
        return Response(status_code=200)


async def _wait_state(state: ReqState) -> None:
    while not state.done:
        state.changed.clear()
        await state.changed.wait()


def build_app(
    make_front: Callable[[], FrontEnd], on_shutdown: Callable[[], None], cfg: ServerConfig | None = None
) -> tuple[FastAPI, Callable]:
    """The FastAPI app, and a ``drain(timeout_s)`` to call (thread-safe) when a shutdown starts.

    The front is created inside the server's event loop (lifespan). ``drain.started()`` says
    whether start-up completed (uvicorn returns normally even when the lifespan failed)."""
    holder: dict[str, FrontEnd] = {}
    loops: list[asyncio.AbstractEventLoop] = []

    def drain(timeout_s: float) -> None:
        front = holder.get("front")
        if front is not None and loops:
            loops[0].call_soon_threadsafe(front.begin_drain, timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        front = make_front()
        holder["front"] = front
        holder["loads"] = attach_gateway(front)
        loops.append(asyncio.get_running_loop())
        await front.start()
        holder["started"] = front
        # "ready" is logged once the port is bound (runtime/server.py), not here
        log.info(
            "router and schedulers up: engine is SIMULATED (%s)", front.ready[0].engine if 0 in front.ready else None
        )
        try:
            yield
        finally:
            await front.close()
            on_shutdown()

    drain.started = lambda: "started" in holder  # type: ignore[attr-defined]
    drain.fatal = lambda: getattr(holder.get("front"), "fatal", None)  # type: ignore[attr-defined]
    cfg = cfg or ServerConfig()
    docs = cfg.enable_api_docs  # /docs, /redoc and /openapi.json only when asked (--enable-api-docs)
    app = FastAPI(
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.cfg = cfg
    if cfg.api_key or cfg.admin_api_key:
        app.add_middleware(AuthMiddleware, api_key=cfg.api_key, admin_api_key=cfg.admin_api_key)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=cfg.max_header_bytes)  # outermost: checked first
    add_generation_routes(app, lambda: holder["front"])
    for add in (add_health_routes, add_info_routes, add_admin_routes):
        add(app, lambda: holder["front"])
    add_gateway_routes(app, lambda: holder["front"], lambda: holder["loads"])
    return app, drain
