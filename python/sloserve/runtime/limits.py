"""HTTP limits and authentication of the front (docs/runtime.md, "Security and limits").

* ``AuthMiddleware``: ``--api-key`` on every route but ``/health``; ``--admin-api-key`` on the
  admin routes (which then accept only it), as SGLang 0.5.23 does. 401 with a JSON body.
* ``read_body``: the request body, at most ``--max-body-bytes`` (413) and read within
  ``--timeout-keep-alive`` seconds (408): a client that trickles its body cannot hold a handler.
* ``ConnectionReaper``: closes connections that sit outside a request longer than
  ``--timeout-keep-alive`` (an idle keep-alive, or a slowloris client whose headers never
  complete); uvicorn's own keep-alive timer is cancelled by any byte received.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

import orjson

log = logging.getLogger("sloserve.http")

ADMIN_PATHS = frozenset({"/abort_request", "/flush_cache"})
OPEN_PATHS = frozenset({"/health"})


class HttpError(Exception):
    def __init__(self, message: str, status_code: int, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.param = param


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            text = value.decode("latin-1").strip()
            return text[7:].strip() if text[:7].lower() == "bearer " else text
    return None


class AuthMiddleware:
    """Pure ASGI (works for streaming responses): checks the key before the app sees the request."""

    def __init__(self, app, api_key: str | None, admin_api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key
        self.admin_api_key = admin_api_key

    def _required(self, path: str) -> str | None:
        if path in OPEN_PATHS:
            return None
        if path in ADMIN_PATHS and self.admin_api_key:
            return self.admin_api_key
        return self.api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        need = self._required(scope.get("path", ""))
        if need is None:
            return await self.app(scope, receive, send)
        got = _bearer(scope.get("headers", []))
        if got is not None and hmac.compare_digest(got.encode(), need.encode()):
            return await self.app(scope, receive, send)
        admin = scope.get("path") in ADMIN_PATHS and self.admin_api_key
        what = "the admin API key (--admin-api-key)" if admin else "an API key"
        message = f"{'missing' if got is None else 'wrong'} Authorization header: this route needs {what}"
        body = orjson.dumps({"error": {"message": message, "code": 401, "param": "Authorization"}})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class HeaderLimitMiddleware:
    """431 when the request line and headers exceed ``--max-header-bytes`` (h11's own limit only
    bounds what it buffers of an *incomplete* head, not a head that arrives in one piece)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
            if size > self.max_bytes:
                body = orjson.dumps(
                    {
                        "error": {
                            "message": f"request headers of {size} bytes exceed the limit of "
                            f"{self.max_bytes} bytes (--max-header-bytes)",
                            "code": 431,
                            "param": "headers",
                        }
                    }
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def read_body(request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or HttpError 413 (too large) / 408 (not sent in time)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HttpError(
            f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes (--max-body-bytes)", 413, "body"
        )

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HttpError(f"request body exceeds the limit of {max_bytes} bytes (--max-body-bytes)", 413, "body")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(
            f"request body not received within {timeout_s:g} s (--timeout-keep-alive)", 408, "body"
        ) from None


class ConnectionReaper:
    """Tracks uvicorn's live connections; closes those outside a request for too long."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.idle_since: dict[object, float] = {}
        self.closed = 0

    def sweep(self, connections, now_s: float) -> int:
        live = set(connections)
        for proto in list(self.idle_since):
            if proto not in live:
                del self.idle_since[proto]
        closed = 0
        for proto in live:
            cycle = getattr(proto, "cycle", None)
            if cycle is not None and not getattr(cycle, "response_complete", True):
                self.idle_since.pop(proto, None)  # serving a request (streams included)
                continue
            since = self.idle_since.setdefault(proto, now_s)
            if now_s - since > self.timeout_s:
                transport = getattr(proto, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.close()
                    closed += 1
                self.idle_since.pop(proto, None)
        if closed:
            self.closed += closed
            log.info(
                "closed %d connection(s) idle or with incomplete headers for more than %g s", closed, self.timeout_s
            )
        return closed
