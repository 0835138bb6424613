"""The messages the server's processes send each other over ZMQ: one frozen dataclass per kind.

``encode(msg)`` turns a message into its wire form, an orjson object whose ``type`` names the
kind (``Add.KIND == "add"``); ``decode(frame)`` turns a frame back into a message and validates
it on the way: an unknown ``type``, a missing field or a field of the wrong type raises
``WireError`` naming the kind and the field (every process drops such a frame with a log line).
Fields a newer sender adds are ignored. Receivers dispatch on the message class.

Who sends what (docs/runtime.md, "Messages"):

* front -> router: ``Add``, ``Abort``, ``Done``, ``Segments``, ``ReplicaDown``, ``ReplicaUp``, ``Shutdown``
* router -> scheduler: ``Add``, ``Abort``, ``AbortAll``, ``Segments``, ``Shutdown``; ``CanAdmit``
  over ROUTER/DEALER, answered by ``CanAdmitReply``
* router -> front: ``Routed``, ``Ready`` (replica -1), ``RouterHeartbeat``
* scheduler -> front: ``Admit``, ``Events``, ``Stats``, ``Ready``, ``Heartbeat``; -> router: ``Summary``

JSON has no infinity: orjson writes ``inf`` as ``null``, and a float field (``slack_s``) of
``null`` reads back as ``inf`` (no deadline constrains the replica).
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar, Union

from sloserve.core.plan import AdmitReason, EventKind, ReplicaSummary, RequestEvent
from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.runtime import wire
from sloserve.runtime.wire import WireError

__all__ = ["WireError", "encode", "decode", "KINDS", "Message"]

KINDS: dict[str, type] = {}  # wire ``type`` -> message class


def _kind(name: str):
    def register(cls):
        cls.KIND = name
        KINDS[name] = cls
        return cls

    return register


def _key(name: str, **kw):
    """A field whose wire key differs from its attribute name."""
    return field(metadata={"key": name}, **kw)


# ---- front -> router -> scheduler ------------------------------------------------------------
@_kind("add")
@dataclass(frozen=True)
class Add:
    """A new request (front -> router, router -> its replica)."""

    KIND: ClassVar[str]
    request: Request = _key("req")


@_kind("abort")
@dataclass(frozen=True)
class Abort:
    """The client gave up on a request (front -> router -> the replica that holds it)."""

    KIND: ClassVar[str]
    rid: str


@_kind("done")
@dataclass(frozen=True)
class Done:
    """A request ended at the front (front -> router: the routing policy forgets it)."""

    KIND: ClassVar[str]
    rid: str


@_kind("segments")
@dataclass(frozen=True)
class Segments:
    """A request's remaining decode segments changed (the end-of-thinking marker fixed one)."""

    KIND: ClassVar[str]
    rid: str
    segments: tuple[DecodeSegment, ...]


@_kind("abort_all")
@dataclass(frozen=True)
class AbortAll:
    """A (re)started router: drop every request routed before it (router -> scheduler)."""

    KIND: ClassVar[str]


@_kind("replica_down")
@dataclass(frozen=True)
class ReplicaDown:
    """The front's watchdog failed a replica (front -> router: stop routing to it)."""

    KIND: ClassVar[str]
    replica: int


@_kind("replica_up")
@dataclass(frozen=True)
class ReplicaUp:
    """A (re)started replica serves again; ``addrs`` = (requests in, can_admit queries) when it moved (Ray)."""

    KIND: ClassVar[str]
    replica: int
    addrs: tuple[str, ...] = ()


@_kind("shutdown")
@dataclass(frozen=True)
class Shutdown:
    """Stop (front -> router -> schedulers)."""

    KIND: ClassVar[str]


# ---- scheduler -> router ---------------------------------------------------------------------
@_kind("summary")
@dataclass(frozen=True)
class Summary:
    KIND: ClassVar[str]
    replica: int
    summary: ReplicaSummary


@_kind("can_admit")
@dataclass(frozen=True)
class CanAdmit:
    """The router asks a replica whether it would admit a request (ROUTER/DEALER, side-effect free)."""

    KIND: ClassVar[str]
    qid: int
    request: Request = _key("req")


@_kind("can_admit_reply")
@dataclass(frozen=True)
class CanAdmitReply:
    KIND: ClassVar[str]
    qid: int
    reason: AdmitReason
    slack_s: float = 0.0
    detail: str = ""


# ---- router / schedulers -> front ------------------------------------------------------------
@_kind("routed")
@dataclass(frozen=True)
class Routed:
    """Where a request went; ``replica`` -1 means routing failed (``error`` says why)."""

    KIND: ClassVar[str]
    rid: str
    replica: int
    best_effort: bool = False
    reason: str = ""
    error: str = ""


@_kind("admit")
@dataclass(frozen=True)
class Admit:
    """A replica's admission decision for a request (``reason``: an AdmitReason value, or "error")."""

    KIND: ClassVar[str]
    rid: str
    replica: int
    reason: str
    tier: str
    refused: bool
    detail: str = ""
    slack_s: float = 0.0


@_kind("events")
@dataclass(frozen=True)
class Events:
    """One step's request events (each a row ``[kind, rid, num_tokens, time_s, tier, reason]`` on the wire)."""

    KIND: ClassVar[str]
    replica: int
    events: tuple[RequestEvent, ...]


@_kind("stats")
@dataclass(frozen=True)
class Stats:
    """The policy's, the step timer's and the warm-up's counters (shown by /server_info and the log)."""

    KIND: ClassVar[str]
    replica: int
    stats: dict[str, Any]


@_kind("ready")
@dataclass(frozen=True)
class Ready:
    """A process is up: a scheduler (``replica`` >= 0) or the router (``replica`` -1)."""

    KIND: ClassVar[str]
    replica: int
    pid: int
    router: str = ""  # the router's routing policy
    policy: str = ""  # a scheduler's policy
    engine: str = ""
    addrs: tuple[str, ...] = ()  # a scheduler's (requests in, can_admit queries) addresses
    node: str = ""  # the Ray node a scheduler runs on; empty on one host


@_kind("heartbeat")
@dataclass(frozen=True)
class Heartbeat:
    """A scheduler is alive through a long step (for the front's watchdog)."""

    KIND: ClassVar[str]
    replica: int


@_kind("router_heartbeat")
@dataclass(frozen=True)
class RouterHeartbeat:
    KIND: ClassVar[str]


Message = Union[
    Add, Abort, Done, Segments, AbortAll, ReplicaDown, ReplicaUp, Shutdown, Summary, CanAdmit, CanAdmitReply,
    Routed, Admit, Events, Stats, Ready, Heartbeat, RouterHeartbeat,
]  # fmt: skip


# ---- field codecs: (to wire, from wire) per field type -----------------------------------------
def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise WireError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError(f"expected an integer, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"expected a boolean, got {type(v).__name__}")
    return v


def _float(v: Any) -> float:
    if v is None:  # orjson writes inf (and nan) as null
        return math.inf
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise WireError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise WireError(f"expected a list, got {type(v).__name__}")
    return v


def _dict(v: Any) -> dict:
    if not isinstance(v, dict):
        raise WireError(f"expected an object, got {type(v).__name__}")
    return v


def _event_to_wire(e: RequestEvent) -> list:
    return [e.kind.value, e.request_id, e.num_tokens, e.time_s, e.tier, e.reason]


def _event_from_wire(row: Any) -> RequestEvent:
    if not isinstance(row, list) or len(row) != 6:
        raise WireError(f"an event is a row [kind, rid, num_tokens, time_s, tier, reason], got {row!r:.80}")
    kind, rid, num, time_s, tier, reason = row
    if time_s is None:  # a float field may be inf (null); an event's time may not
        raise WireError("an event needs a finite time_s")
    tier, reason = _str(tier or ""), _str(reason or "")
    return RequestEvent(
        EventKind(kind), _str(rid), time_s=_float(time_s), num_tokens=_int(num), tier=tier, reason=reason
    )


def _identity(v: Any) -> Any:
    return v


_Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_CODECS: dict[Any, _Codec] = {
    str: (_identity, _str),
    int: (_identity, _int),
    bool: (_identity, _bool),
    float: (_identity, _float),
    Request: (wire.request_to_wire, lambda v: wire.request_from_wire(_dict(v))),
    tuple[DecodeSegment, ...]: (wire.segments_to_wire, lambda v: wire.segments_from_wire(_list(v))),
    ReplicaSummary: (wire.summary_to_wire, lambda v: wire.summary_from_wire(_dict(v))),
    tuple[RequestEvent, ...]: (
        lambda evs: [_event_to_wire(e) for e in evs],
        lambda v: tuple(_event_from_wire(row) for row in _list(v)),
    ),
    tuple[str, ...]: (list, lambda v: tuple(_str(x) for x in _list(v))),
    dict[str, Any]: (_identity, _dict),
    AdmitReason: (lambda r: r.value, lambda v: AdmitReason(_str(v))),
}


@dataclass(frozen=True)
class _Field:
    name: str
    key: str
    codec: _Codec
    required: bool


def _schema(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        _Field(
            f.name,
            f.metadata.get("key", f.name),
            _CODECS[hints[f.name]],
            f.default is MISSING and f.default_factory is MISSING,
        )
        for f in fields(cls)
    )


_SCHEMAS: dict[type, tuple[_Field, ...]] = {cls: _schema(cls) for cls in KINDS.values()}


# ---- the codec -------------------------------------------------------------------------------
def encode(msg: Message) -> bytes:
    """A message's wire form: ``{"type": KIND, key: value, ...}`` as orjson bytes."""
    out: dict[str, Any] = {"type": msg.KIND}
    for f in _SCHEMAS[type(msg)]:
        out[f.key] = f.codec[0](getattr(msg, f.name))
    return wire.dumps(out)


def decode(frame: bytes) -> Message:
    """The message in a frame; raises ``WireError`` naming the problem when it is not a valid one.

    The error's ``kind`` and ``rid`` say what the frame claimed to be (when it said), so that a
    receiver can fail the request a malformed ``add`` carried instead of leaving it hanging.
    """
    d = wire.loads(frame)
    kind = d.get("type")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown message type {kind!r:.40}")
    kw: dict[str, Any] = {}
    for f in _SCHEMAS[cls]:
        if f.key not in d:
            if f.required:
                raise _error(d, kind, f"{kind}: missing field {f.key!r}")
            continue
        try:
            kw[f.name] = f.codec[1](d[f.key])
        except (WireError, KeyError, TypeError, ValueError) as exc:
            text = str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"
            raise _error(d, kind, f"{kind}: bad field {f.key!r} ({text[:200]})") from None
    return cls(**kw)


def _error(d: dict, kind: str, text: str) -> WireError:
    rid = d.get("rid")
    req = d.get("req")
    if rid is None and isinstance(req, dict):
        rid = req.get("rid")
    return WireError(text, kind=kind, rid=rid if isinstance(rid, str) else None)
