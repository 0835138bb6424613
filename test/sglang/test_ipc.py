"""SLO custom_params survive SGLang's tokenizer -> scheduler IPC, in msgpack and pickle modes."""

from __future__ import annotations

from array import array

import pytest

pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
pytestmark = pytest.mark.sglang

import zmq  # noqa: E402
from sglang.srt.managers import io_struct  # noqa: E402
from sglang.srt.managers.io_struct import TokenizedGenerateReqInput  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402

from sloserve.perf import get_model  # noqa: E402
from sloserve.sglang.translate import build_request  # noqa: E402

SLO = {
    "slo_class": "chatbot",
    "slo_ttft_ms": 250.0,
    "slo_tpot_ms": 40.0,
    "slo_think_tpot_ms": 15.0,
    "slo_think_tokens": 64,
    "slo_stage": "main",
    "slo_program_id": "prog-7",
    "slo_arrival_s": 1.7e9 + 0.25,
    "other_plugin_key": "kept",
}


def tokenized(custom_params) -> TokenizedGenerateReqInput:
    return TokenizedGenerateReqInput(
        rid="req-1",
        input_text="hi",
        input_ids=array("q", [1, 2, 3, 4]),
        input_embeds=None,
        mm_inputs=None,
        token_type_ids=None,
        sampling_params=SamplingParams(max_new_tokens=32, custom_params=custom_params),
        return_logprob=False,
        logprob_start_len=-1,
        top_logprobs_num=0,
        token_ids_logprob=None,
        stream=True,
    )


def roundtrip_over_zmq(obj, use_pickle: bool, monkeypatch):
    monkeypatch.setattr(io_struct, "_USE_PICKLE_IPC", use_pickle)
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        pull.bind("inproc://sloserve-ipc")
        push.connect("inproc://sloserve-ipc")
        io_struct.sock_send(push, obj)
        assert pull.poll(5000), "nothing arrived"
        return io_struct.sock_recv(pull)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


@pytest.mark.parametrize("use_pickle", [False, True], ids=["msgpack", "pickle"])
def test_custom_params_survive_ipc(use_pickle, monkeypatch):
    got = roundtrip_over_zmq(tokenized(dict(SLO)), use_pickle, monkeypatch)
    assert isinstance(got, TokenizedGenerateReqInput)
    assert got.sampling_params.custom_params == SLO
    perf = get_model("llama-3-8b-h100")
    now = 1.7e9 + 1.0
    sent = build_request("req-1", 4, 32, SLO, now, perf.zero_load_prefill_s)
    recv = build_request(
        got.rid,
        len(got.input_ids),
        got.sampling_params.max_new_tokens,
        got.sampling_params.custom_params,
        now,
        perf.zero_load_prefill_s,
    )
    assert (recv.arrival_s, recv.ttft_deadline_s, recv.segments) == (
        sent.arrival_s,
        sent.ttft_deadline_s,
        sent.segments,
    )
    assert recv.arrival_s == SLO["slo_arrival_s"]  # the front's stamp, not the receive time
    assert recv.segments[0].tpot_ms == 15.0 and recv.segments[0].num_tokens == 64


def test_msgpack_roundtrip_keeps_the_request():
    # Its speed (target < 5 ms) is measured by benchmark/sglang_ipc_speed.py, not asserted here.
    got = io_struct.msgpack_decode(io_struct.msgpack_encode(tokenized(dict(SLO))))
    assert got.rid == "req-1" and got.sampling_params.custom_params == SLO


def test_tokenizer_manager_path_keeps_slo_keys():
    """What TokenizerManager does with a request's sampling params before IPC."""
    sp = SamplingParams(**{"max_new_tokens": 16, "temperature": 0.0, "custom_params": dict(SLO)})
    sp.normalize(None)
    sp.verify(32000)
    assert sp.custom_params == SLO
    with pytest.raises(TypeError):
        SamplingParams(**{"max_new_tokens": 16, "slo_tpot_ms": 40.0})  # why SLO keys live in custom_params
