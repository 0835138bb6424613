"""The runtime's typed ZMQ messages (runtime/messages.py): every kind round-trips, the wire form
stays the ``type``-keyed object the processes always exchanged, and decode names what is wrong."""

from __future__ import annotations

import math
import typing

import orjson
import pytest

from sloserve.core.plan import AdmitReason, EventKind, ReplicaSummary, RequestEvent
from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.runtime import messages as m
from sloserve.runtime import wire

REQ = Request("r1", 0.5, 30, 8, 2.0, (DecodeSegment(50.0, 4), DecodeSegment(80.0)), slo_class="coder")
SEGS = (DecodeSegment(40.0, 2), DecodeSegment(90.0))
EXAMPLES = [
    m.Add(REQ),
    m.Abort("r1"),
    m.Done("r1"),
    m.Segments("r1", SEGS),
    m.AbortAll(),
    m.ReplicaDown(1),
    m.ReplicaUp(1),
    m.ReplicaUp(1, ("tcp://10.0.0.2:5000", "tcp://10.0.0.2:5001")),
    m.Shutdown(),
    m.Summary(0, ReplicaSummary(0, time_s=1.5, num_requests=3, spare_prefill_tokens=((0.5, 100), (1.0, 300)))),
    m.CanAdmit(7, REQ),
    m.CanAdmitReply(7, AdmitReason.ADMITTED, 0.25, "ok"),
    m.Routed("r1", 1, best_effort=True, reason="least-loaded"),
    m.Routed("r1", -1, error="no healthy scheduler process"),
    m.Admit("r1", 0, "admitted", "slo", False, "", 0.1),
    m.Events(
        0, (RequestEvent(EventKind.FIRST_TOKEN, "r1", 1.25, 1, "slo"), RequestEvent(EventKind.FINISHED, "r2", 1.3))
    ),
    m.Stats(1, {"steps": 4, "warmup_s": 0.5}),
    m.Ready(0, 1234, policy="fcfs", engine="simulated", addrs=("ipc://a", "ipc://b"), node="n1"),
    m.Ready(-1, 1235, router="round-robin"),
    m.Heartbeat(2),
    m.RouterHeartbeat(),
]


def _same(a, b) -> bool:
    """Messages are equal field by field; a Request (eq=False) compares by its wire form."""
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, Request):
            if wire.request_to_wire(x) != wire.request_to_wire(y):
                return False
        elif x != y:
            return False
    return True


def test_every_kind_is_registered_has_an_example_and_is_in_the_union():
    assert set(m.KINDS.values()) == {type(e) for e in EXAMPLES} == set(typing.get_args(m.Message))
    assert all(cls.KIND == kind for kind, cls in m.KINDS.items())
    assert all(cls.__dataclass_params__.frozen for cls in m.KINDS.values())


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(msg):
    frame = m.encode(msg)
    assert orjson.loads(frame)["type"] == msg.KIND
    back = m.decode(frame)
    assert _same(back, msg), (back, msg)


def test_wire_form_is_the_type_keyed_object():
    assert orjson.loads(m.encode(m.Add(REQ))) == {"type": "add", "req": wire.request_to_wire(REQ)}
    assert orjson.loads(m.encode(m.Segments("x", SEGS))) == {
        "type": "segments",
        "rid": "x",
        "segments": [[40.0, 2, "decode"], [90.0, None, "decode"]],
    }
    row = orjson.loads(m.encode(m.Events(3, (RequestEvent(EventKind.TOKENS, "a", 2.0, 5, "slo", ""),))))
    assert row == {"type": "events", "replica": 3, "events": [["tokens", "a", 5, 2.0, "slo", ""]]}
    # hand-made frames decode to their class; optional fields take their defaults, unknown keys are ignored
    assert m.decode(b'{"type": "replica_down", "replica": 2}') == m.ReplicaDown(2)
    assert m.decode(b'{"type": "replica_up", "replica": 2, "later": 1}') == m.ReplicaUp(2)
    assert m.decode(b'{"type": "routed", "rid": "x", "replica": -1, "error": "e"}') == m.Routed("x", -1, error="e")


def test_infinite_slack_survives_the_wire():
    """orjson writes inf as null; a slack of null reads back as inf, not as a malformed reply."""
    reply = m.decode(m.encode(m.CanAdmitReply(1, AdmitReason.ADMITTED, math.inf)))
    assert reply.slack_s == math.inf
    summary = m.decode(m.encode(m.Summary(0, ReplicaSummary(0, slack_s=math.inf)))).summary
    assert summary.slack_s == math.inf


@pytest.mark.parametrize(
    "frame,named",
    [
        (b"", "not JSON"),
        (b"[1]", "not a message object"),
        (b'{"no_type": 1}', "unknown message type None"),
        (b'{"type": 5}', "unknown message type 5"),
        (b'{"type": "gossip"}', "unknown message type 'gossip'"),
        (b'{"type": "add"}', "add: missing field 'req'"),
        (b'{"type": "add", "req": null}', "add: bad field 'req'"),
        (b'{"type": "abort", "rid": [1]}', "abort: bad field 'rid' (expected a string"),
        (b'{"type": "replica_down", "replica": "x"}', "replica_down: bad field 'replica' (expected an integer"),
        (b'{"type": "replica_down", "replica": true}', "expected an integer, got bool"),
        (b'{"type": "events", "replica": 0, "events": [[1, 2]]}', "events: bad field 'events' (an event is a row"),
        (b'{"type": "events", "replica": 0, "events": [["nope", "a", 1, 0.0, "", ""]]}', "events: bad field"),
        (b'{"type": "events", "replica": 0, "events": 7}', "expected a list"),
        (b'{"type": "events", "replica": 0, "events": [["tokens", "a", 1, null, "", ""]]}', "finite time_s"),
        (b'{"type": "stats", "replica": 0, "stats": 1}', "stats: bad field 'stats' (expected an object"),
        (b'{"type": "summary", "replica": 0, "summary": {}}', "summary: bad field 'summary'"),
        (b'{"type": "segments", "rid": "r", "segments": [[null, null, null]]}', "segments: bad field 'segments'"),
        (b'{"type": "segments", "rid": "r", "segments": []}', "at least one decode segment"),
        (b'{"type": "can_admit_reply", "qid": 1, "reason": "maybe"}', "can_admit_reply: bad field 'reason'"),
        (b'{"type": "ready", "replica": 0, "pid": 1, "addrs": [1, 2]}', "ready: bad field 'addrs'"),
    ],
)
def test_decode_names_the_problem(frame, named):
    with pytest.raises(wire.WireError) as err:
        m.decode(frame)
    assert named in str(err.value)


def test_a_malformed_add_says_which_request_it_carried():
    """The router fails such a request at the front instead of leaving its client waiting."""
    with pytest.raises(wire.WireError) as err:
        m.decode(b'{"type": "add", "req": {"rid": "zmq-bad", "arrival_s": null, "ttft_slo_s": null}}')
    assert (err.value.kind, err.value.rid) == ("add", "zmq-bad")
    with pytest.raises(wire.WireError) as err:
        m.decode(b'{"type": "add", "req": {"rid": 5}}')
    assert (err.value.kind, err.value.rid) == ("add", None)


def test_router_fails_a_malformed_add_at_the_front_and_forwards_a_good_one(tmp_path):
    import os

    import zmq

    from sloserve.runtime.router_proc import RouterArgs, RouterProcess

    ipc = f"ipc://{tmp_path}"
    args = RouterArgs(
        "round-robin", {}, 1, 0, 0.0, os.getpid(), f"{ipc}/in", f"{ipc}/front", (f"{ipc}/s0",), (f"{ipc}/q0",)
    )
    ctx = zmq.Context()
    front, sched = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    front.bind(args.addr_front)
    sched.bind(args.sched_in[0])
    proc = RouterProcess(args)
    try:
        proc.handle_frame(b'{"type": "add", "req": {"rid": "zmq-bad", "arrival_s": null}}')
        proc.handle_frame(b'{"type": "gossip"}')  # dropped with a log line, nothing sent
        proc.handle_frame(b'{"type": "admit", "rid": "x", "replica": 0, "reason": "a", "tier": "t", "refused": false}')
        proc.handle_frame(m.encode(m.Add(REQ)))
        assert front.poll(5000)
        failed = m.decode(front.recv())
        assert isinstance(failed, m.Routed) and (failed.rid, failed.replica) == ("zmq-bad", -1)
        assert "add: bad field 'req'" in failed.error
        assert front.poll(5000) and m.decode(front.recv()) == m.Routed("r1", 0, reason="round-robin")
        assert sched.poll(5000)
        added = m.decode(sched.recv())
        assert isinstance(added, m.Add) and wire.request_to_wire(added.request) == wire.request_to_wire(REQ)
        assert not front.poll(100)
    finally:
        proc.close()
        front.close(0)
        sched.close(0)
        ctx.term()
