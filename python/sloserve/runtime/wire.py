"""The wire layer under ``runtime/messages.py``: orjson objects, and the plain-data forms of the
core types a message carries.

Every message is a JSON object with a ``type`` (``messages.encode``/``decode`` build and check
them). Requests travel as plain dicts and are rebuilt into ``core.request.Request`` objects on
the other side (plans and requests are plain data, so any process can rebuild them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from typing import Any

import orjson

from sloserve.core.plan import ReplicaSummary
from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _fallback(obj: Any) -> Any:
    """Numpy scalars, sets and other values policies may put in stats()/summaries."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def dumps(obj: dict) -> bytes:
    return orjson.dumps(obj, default=_fallback, option=_OPTS)


class WireError(ValueError):
    """A frame that is not a message of this protocol (every process drops it with a log line).

    ``kind`` and ``rid``: the message type and request id the frame claimed, when it did.
    """

    def __init__(self, text: str, kind: str | None = None, rid: str | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.rid = rid


def loads(data: bytes) -> dict:
    """A JSON object (``messages.decode`` checks that it is a message)."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise WireError(f"not a message object: {describe(data)}")
    return msg


def describe(data: bytes, limit: int = 80) -> str:
    """A short printable excerpt of a frame for the log."""
    return repr(bytes(data[:limit])) + ("..." if len(data) > limit else "")


def segments_to_wire(segments: tuple[DecodeSegment, ...]) -> list[list[Any]]:
    return [[s.tpot_ms, s.num_tokens, s.name] for s in segments]


def _finite(v: Any, what: str) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise WireError(f"{what} is not finite: {v!r}")
    return f


def segments_from_wire(rows: list[list[Any]]) -> tuple[DecodeSegment, ...]:
    segs = tuple(DecodeSegment(_finite(t, "tpot_ms"), None if n is None else int(n), str(name)) for t, n, name in rows)
    if not segs:
        raise WireError("a request needs at least one decode segment")
    return segs


def request_to_wire(req: Request) -> dict:
    return {
        "rid": req.request_id,
        "arrival_s": req.arrival_s,
        "prompt_tokens": req.prompt_tokens,
        "output_tokens": req.output_tokens,
        "ttft_slo_s": req.ttft_slo_s,
        "segments": segments_to_wire(req.segments),
        "slo_class": req.slo_class,
        "program_id": req.program_id,
        "stage_index": req.stage_index,
        "stage_name": req.stage_name,
        "output_tokens_known": req.output_tokens_known,
        "max_new_tokens": req.max_new_tokens,
        "best_effort": req.route_best_effort,
        "user_best_effort": req.user_best_effort,
    }


def request_from_wire(d: dict) -> Request:
    """Rebuild a request; raises ``WireError`` (or KeyError/TypeError/ValueError) on a bad one."""
    if not isinstance(d, dict) or not isinstance(d.get("rid"), str):
        raise WireError("a request needs a string rid")
    req = Request(
        request_id=d["rid"],
        arrival_s=_finite(d["arrival_s"], "arrival_s"),
        prompt_tokens=int(d["prompt_tokens"]),
        output_tokens=int(d["output_tokens"]),
        ttft_slo_s=_finite(d["ttft_slo_s"], "ttft_slo_s"),
        segments=segments_from_wire(d["segments"]),
        slo_class=d["slo_class"],
        program_id=d["program_id"],
        stage_index=int(d["stage_index"]),
        stage_name=d["stage_name"],
        output_tokens_known=bool(d["output_tokens_known"]),
        max_new_tokens=d["max_new_tokens"],
        route_best_effort=bool(d.get("best_effort")),
        user_best_effort=bool(d.get("user_best_effort")),
    )
    return req


_SUMMARY_FIELDS = {f.name for f in dataclasses.fields(ReplicaSummary)}


def summary_to_wire(summary: ReplicaSummary) -> dict:
    return dataclasses.asdict(summary)


def summary_from_wire(d: dict) -> ReplicaSummary:
    """Rebuild a summary; fields this version does not know are dropped (newer publishers)."""
    kw = {k: v for k, v in d.items() if k in _SUMMARY_FIELDS}
    if "spare_prefill_tokens" in kw and kw["spare_prefill_tokens"] is not None:
        kw["spare_prefill_tokens"] = tuple(tuple(x) for x in kw["spare_prefill_tokens"])
    if "slack_s" in kw and kw["slack_s"] is None:  # orjson writes inf as null
        kw["slack_s"] = math.inf
    return ReplicaSummary(**kw)


def child_process_setup() -> None:
    """Children die with the parent (Linux prctl) and leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - non-Linux
        pass


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid
