"""The invariant with a batch-time model that charges each request in a step (issue 16).

A serving loop pays per request in a batch. Two forms, both measured on SGLang's CPU path
(benchmark/real_vs_sim.py's step logs): every request 0.8 ms and a token 43 us (the fit over
all steps with one per-request term), or, closer, 1.3 ms per request in an extend batch (one
that computes prefill tokens, decodes riding along a chunk included) and nothing in a decode-only
batch. A fit with the term says so, and the planner sizes its steps and admission grids with
the requests that run in them. Blind to it (``count_kv_read=false``) it plans a step of decodes
and a chunk as if the decodes cost a token each, and admitted requests miss: the negative control.
"""

import json

import pytest

from sloserve.bench.loop import LoopWorkload, scaled_tpot_ms
from sloserve.perf import get_model
from sloserve.sim.config import SimConfig
from sloserve.sim.simulator import Simulator

EVERY_REQUEST = {"per_token_s": 43e-6, "per_kv_token_s": 0.0, "base_s": 1.9e-3, "per_request_s": 0.79e-3}
EXTEND_REQUEST = {"per_token_s": 14e-6, "per_kv_token_s": 0.0, "base_s": 3.3e-3, "per_extend_request_s": 1.3e-3}


@pytest.fixture(scope="module", params=[EVERY_REQUEST, EXTEND_REQUEST], ids=["every", "extend"])
def model_path(tmp_path_factory, request):
    path = tmp_path_factory.mktemp("req") / "cpu_req.json"
    path.write_text(json.dumps({"format": "sloserve-perf-lines/1", "name": "cpu-req", "lines": [request.param]}))
    return str(path)


def run(model_path: str, rate_rps: float, **opts) -> dict:
    perf = get_model(model_path)
    # TPOT 5 one-request decode steps (13.7 ms: about 12 decodes a step), TTFT 8x zero-load prefill
    wl = LoopWorkload(tpot_ms=scaled_tpot_ms(perf, LoopWorkload(), 5), duration_s=10.0)
    cfg = SimConfig(model=model_path, kv_tokens=32768, max_seq_len=4096, seed=1, policy_options=opts)
    return Simulator(wl.programs(rate_rps), cfg, perf).run().summary


@pytest.mark.parametrize("rate", [20.0, 40.0])  # about capacity and twice it
def test_no_admitted_miss_with_a_per_request_term(model_path, rate):
    s = run(model_path, rate)
    assert s["admitted_fraction"] > 0.4  # it still admits work
    assert s["num_admitted_slo_misses"] == 0


def test_negative_control_request_blind_planner_misses(model_path):
    s = run(model_path, 40.0, count_kv_read=False)
    assert s["num_admitted_slo_misses"] > 10
