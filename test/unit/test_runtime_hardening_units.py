"""Issue 13 at the unit level: SLO ranges, wire validation, the front's receive loop, stop matching."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest
import zmq

from sloserve.runtime import messages, wire
from sloserve.runtime.protocol import (
    MAX_STOP_LEN,
    MAX_STOP_STRINGS,
    BadRequest,
    GenInput,
    Sampling,
    parse_sampling_params,
)
from sloserve.runtime.slo_params import MAX_TTFT_S, SloParamError, parse_slo
from sloserve.runtime.state import ReqState
from sloserve.runtime.tokenizer import ByteTokenizer


@pytest.mark.parametrize(
    "key,value",
    [
        ("slo_ttft_ms", 1e9),
        ("slo_ttft_ms", 1e12),
        ("slo_tpot_ms", 1e308),
        ("slo_think_tpot_ms", 60_001),
        ("slo_ttft_slowdown", 1.7e308),
        ("slo_stage_index", 2**40),
        ("slo_ttft_ms", math.inf),
    ],
)
def test_slo_values_out_of_range_name_the_field(key, value):
    with pytest.raises(SloParamError) as err:
        parse_slo({key: value})
    assert err.value.field_name == key


def test_resolved_ttft_is_bounded():
    spec = parse_slo({"slo_ttft_slowdown": 9000.0})
    with pytest.raises(SloParamError) as err:
        spec.ttft_slo_s(14000, lambda n: n * 1e-3)  # 14 s zero-load prefill x 9000
    assert err.value.field_name == "slo_ttft_slowdown"
    assert parse_slo({"slo_ttft_ms": MAX_TTFT_S * 1e3}).ttft_slo_s(10, lambda n: 0.01) == MAX_TTFT_S


def test_wire_rejects_non_finite_and_malformed_requests():
    good = {
        "rid": "a",
        "arrival_s": 0.0,
        "prompt_tokens": 3,
        "output_tokens": 2,
        "ttft_slo_s": 1.0,
        "segments": [[50.0, None, "main"]],
        "slo_class": "d",
        "program_id": "a",
        "stage_index": 0,
        "stage_name": "main",
        "output_tokens_known": True,
        "max_new_tokens": 2,
    }
    assert wire.request_from_wire(good).request_id == "a"
    for bad in (
        {**good, "ttft_slo_s": None},
        {**good, "ttft_slo_s": float("inf")},
        {**good, "rid": 5},
        {**good, "segments": []},
        {**good, "segments": [[None, None, "x"]]},
    ):
        with pytest.raises((wire.WireError, TypeError, ValueError)):
            wire.request_from_wire(bad)
    for frame in (b"", b"\xff", b"[1]", b"null"):
        with pytest.raises(wire.WireError):
            messages.decode(frame)


@pytest.mark.parametrize("stop", [["s"] * (MAX_STOP_STRINGS + 1), "x" * (MAX_STOP_LEN + 1)])
def test_stop_lists_are_bounded(stop):
    with pytest.raises(BadRequest) as err:
        parse_sampling_params({"stop": stop}, 16)
    assert err.value.param == "stop"


class CountingTokenizer(ByteTokenizer):
    def __init__(self) -> None:
        self.decoded = 0

    def decode(self, ids):
        self.decoded += len(ids)
        return super().decode(ids)


def _state(n_out: int, stop: tuple[str, ...], tok) -> ReqState:
    output = list(b"ab " * (n_out // 3 + 1))[: n_out - 3] + list(b"END")
    spec = parse_slo(None)
    gen = GenInput(None, "p", None, Sampling(max_new_tokens=n_out, stop=stop))
    return ReqState("r", gen, spec, SimpleNamespace(), [1], output, n_out)


def test_stop_matching_is_incremental_and_finds_the_match():
    n = 4000
    tok = CountingTokenizer()
    state = _state(n, ("END", "zz", "never matches this"), tok)
    matched = None
    for i in range(n):  # one token per event: the worst case
        before = state.visible
        state.add_tokens(1, float(i))
        matched = state.check_stop(tok, before)
        if matched:
            break
    assert matched == "END" and state.text(tok) == ByteTokenizer().decode(state.output_ids[: n - 3])
    # decoding everything at every token would be n^2 / 2 = 8e6 tokens; incremental is O(n * longest stop)
    assert tok.decoded < 200 * n


def test_receive_loop_yields_while_messages_are_queued(tmp_path):
    from sloserve.runtime.config import ServerConfig
    from sloserve.runtime.front import FrontEnd
    from sloserve.runtime.launcher import Addresses
    from sloserve.runtime.transport import Transport

    n = 800  # under ZMQ's default high-water marks: the sends below never block this thread

    async def run() -> int:
        procs = SimpleNamespace(addrs=Addresses.in_dir(str(tmp_path), 1), transport=Transport())
        front = FrontEnd(ServerConfig(), ByteTokenizer(), None, procs, 0.0)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(procs.addrs.front)
        for i in range(n):  # all queued before the loop starts
            push.send(messages.encode(messages.Stats(i, {})))
        push.send(b"garbage that is dropped")
        await asyncio.sleep(0.2)
        turns = 0
        task = asyncio.create_task(front._receive_loop())
        while len(front.stats) < n:
            await asyncio.sleep(0)
            if 0 < len(front.stats) < n:
                turns += 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        push.close(0)
        ctx.term()
        await front.close()
        return turns

    async def guarded() -> int:
        return await asyncio.wait_for(run(), 120)  # a hang guard only

    assert asyncio.run(guarded()) >= 10  # other tasks ran while the backlog drained
