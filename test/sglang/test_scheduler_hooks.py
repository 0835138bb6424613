"""SloScheduler's overrides on a real (partially initialised) SGLang Scheduler object.

A full Scheduler needs a model and a GPU; its constructor is bypassed and only the state the
overridden methods read is set. Everything they call (Req, SamplingParams, SchedulePolicy,
PrefillAdder, the output streamer) is SGLang's real code.
"""

from __future__ import annotations

import types

import pytest

pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
pytestmark = pytest.mark.sglang

from helpers import make_pools, make_req  # noqa: E402
from sglang.srt.managers.schedule_batch import FINISH_ABORT  # noqa: E402
from sglang.srt.managers.schedule_policy import SchedulePolicy  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402

from sloserve.sglang.config import SglangAdapterConfig, export_env  # noqa: E402
from sloserve.sglang.policy import SloPrefillAdder, SloSchedulePolicy  # noqa: E402
from sloserve.sglang.scheduler import SloScheduler, req_snapshot  # noqa: E402
from sloserve.sglang.spec_selector import SloSpeculativeParams  # noqa: E402
from sloserve.sglang.streamer import META_KEYS, SloOutputStreamer  # noqa: E402


@pytest.fixture
def sched(monkeypatch, sglang_published):
    import os

    env = export_env(SglangAdapterConfig(policy="fcfs", policy_options=(("token_budget", 128),)), {})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = SloScheduler.__new__(SloScheduler)
    s.max_total_num_tokens = 8192
    s.waiting_queue = []
    s.chunked_req = None
    s._prefill_decode_interval_remaining = 0
    s.tp_size = 1
    yield s
    SloSpeculativeParams.publish(None, 0)
    assert os.environ.get("SLOSERVE_SGLANG_PLUGIN") == "1"


def create(s, rid, n, custom):
    from array import array

    return s._create_generation_req(
        None, rid, "", array("q", range(1, n + 1)), SamplingParams(max_new_tokens=8, custom_params=custom)
    )


def test_create_generation_req_reads_slo_and_rejects_bad_keys(sched):
    req = create(sched, "ok", 20, {"slo_tpot_ms": 30.0, "slo_ttft_ms": 200.0, "slo_arrival_s": 5.0})
    core = req.sloserve_request
    assert core.arrival_s == 5.0 and core.ttft_slo_s == pytest.approx(0.2) and core.segments[0].tpot_ms == 30.0
    bad = create(sched, "bad", 20, {"slo_tpot_ms": "fast"})
    assert isinstance(bad.to_finish, FINISH_ABORT) and "slo_tpot_ms" in str(bad.to_finish.message)


def test_iteration_plans_orders_and_defers(sched):
    reqs = [create(sched, f"w{i}", 100, {"slo_ttft_ms": 1000.0 - 100 * i}) for i in range(3)]
    shadow = sched._slo()
    for r in reqs:
        shadow.add(r.sloserve_request, sched._slo_now_s)
    sched.waiting_queue = list(reversed(reqs))
    running = types.SimpleNamespace(reqs=[])
    assert sched._should_defer_prefill(running) is False
    assert dict(shadow.decision.prefill_tokens) == {"w0": 100, "w1": 28}  # FCFS, budget 128
    adder_cls = sched.get_prefill_adder_class()
    assert issubclass(adder_cls, SloPrefillAdder) and adder_cls.decision is shadow.decision
    _, cache = make_pools()
    policy = SloSchedulePolicy.adopt(
        SchedulePolicy("fcfs", cache, False, False, False), shadow.waiting_order, sched._slo_before_sort
    )
    policy.calc_priority(sched.waiting_queue, running)
    assert [r.rid for r in sched.waiting_queue] == ["w0", "w1", "w2"]
    # w0 decodes now with a tight TPOT; a token budget of 128 leaves prefill room, so no defer
    reqs[0].output_ids.append(5)
    sched.waiting_queue = reqs[1:]
    running = types.SimpleNamespace(reqs=[reqs[0]])
    assert sched._should_defer_prefill(running) is False
    assert shadow.known["w0"].num_output_tokens == 1
    assert SloSpeculativeParams._batch_tpot_s == pytest.approx(shadow.known["w0"].current_tpot_s)
    loose = sched.max_running_requests_under_SLO
    assert loose >= 1  # feeds SGLang's utilization metric
    shadow.known["w0"].segments = (type(shadow.known["w0"].segments[0])(5.0),)  # a 5 ms TPOT
    sched._should_defer_prefill(running)
    assert sched.max_running_requests_under_SLO < loose


def test_output_streamer_reports_the_slo_report_as_one_element_lists(sched):
    req = create(sched, "m", 10, {"slo_ttft_ms": 100.0})
    sched._slo().add(req.sloserve_request, sched._slo_now_s)
    cls = sched.get_output_streamer_class()
    assert issubclass(cls, SloOutputStreamer) and cls.has_additional_customized_info
    streamer = cls(
        send_to_detokenizer=None,
        tree_cache=None,
        server_args=None,
        is_generation=True,
        spec_algorithm=None,
        disaggregation_mode=None,
        enable_hicache_storage=lambda: False,
    )
    info = streamer.build_additional_customized_info([req, make_req("stranger", 5)])
    assert set(info) == set(META_KEYS)
    # SGLang's tokenizer manager extends a list with each value: a scalar would crash it
    assert all(isinstance(v, list) and len(v) == 1 for values in info.values() for v in values)
    assert info["tier"] == [["slo"], ["unknown"]] and info["slo_met"][0] == [None]
    assert info["ttft_deadline_ms"][0] == [pytest.approx(100.0)]


def test_final_reports_feed_the_tier_metrics_when_sglang_metrics_are_on(sched):
    from sglang.srt.managers.schedule_batch import FINISH_LENGTH

    assert sched._slo_tier_metrics() is None  # no metrics reporter: SGLang's metrics are off
    sched._slo_tiers_decided = False
    sched.metrics_reporter = types.SimpleNamespace(current_scheduler_metrics_enabled=True)
    req = create(sched, "t", 10, {"slo_ttft_ms": 100.0})
    sched._slo().add(req.sloserve_request, sched._slo_now_s)
    meta = sched.get_output_streamer_class().meta_fn
    meta(req, 1.0)  # still running: nothing recorded
    req.finished_reason = FINISH_LENGTH(length=8)
    assert meta(req, 2.0)["tier"] == "slo"
    series = sched._slo_tier_metrics().series
    finished = {
        tuple(x.labels.values()): x.value
        for f in series.finished.collect()
        for x in f.samples
        if x.name.endswith("_total")
    }
    assert finished[("slo", "length")] == 1.0 and ("slo", "abort") not in finished


def test_tokenizer_manager_reports_plain_values():
    """The AROUND hook on TokenizerManager.update_request_meta_info, with SGLang's own method."""
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    from sloserve.sglang.streamer import plain_meta_info

    state = types.SimpleNamespace(customized_info_accumulated={}, customized_info_reported_keys=set())
    manager = types.SimpleNamespace(_accumulate_request_meta_info=TokenizerManager._accumulate_request_meta_info)
    meta: dict = {}
    for verdict in (None, True):  # two outputs of one request
        info = {"slo_met": [[verdict]], "tier": [["slo"]], "other": [[1, 2]]}
        plain_meta_info(TokenizerManager.update_request_meta_info, manager, meta, state, info, 0, None)
    assert meta["slo_met"] is True and meta["tier"] == "slo"  # plain, the latest value
    assert meta["other"] == [1, 2, 1, 2]  # any other key keeps SGLang's accumulation


def test_req_snapshot_of_real_requests():
    req = make_req("s", 40)
    assert req_snapshot(req, False) == req_snapshot(req, False)
    snap = req_snapshot(req, False)
    assert (snap.prompt_tokens, snap.num_output_tokens, snap.num_computed_tokens, snap.running) == (40, 0, 0, False)
    req.output_ids.extend([1, 2])
    assert req_snapshot(req, True).num_computed_tokens == 41


class _Sink:
    """Where SGLang's scheduler sends outputs to its tokenizer manager (a ZMQ socket in a server)."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_output(self, output, req=None) -> None:
        self.sent.append(output)


@pytest.fixture
def slo_sched(monkeypatch, sglang_published):
    """An SloScheduler running slos-serve, with the state SGLang's own queueing and abort code read."""
    from sglang.srt.disaggregation.utils import DisaggregationMode

    def build(expiry: bool = True, **options):
        cfg = SglangAdapterConfig(policy_options=tuple(sorted(options.items())), best_effort_expiry=expiry)
        for k, v in export_env(cfg, {}).items():
            monkeypatch.setenv(k, v)
        s = SloScheduler.__new__(SloScheduler)
        s.max_total_num_tokens, s.waiting_queue, s.chunked_req, s.tp_size = 8192, [], None, 1
        s._prefill_decode_interval_remaining = 0
        s.enable_priority_scheduling, s.abort_on_priority_when_disabled = False, False
        s.disaggregation_mode, s.max_queued_requests = DisaggregationMode.NULL, None
        s.enable_hicache_storage, s.enable_lmcache, s.processed_tokens_counter = False, False, 0
        s.tree_cache = make_pools()[1]
        s.rust_server, s.ipc_channels = None, types.SimpleNamespace(send_to_tokenizer=_Sink())
        return s

    yield build
    SloSpeculativeParams.publish(None, 0)


def _queue(s, rid, custom):
    req = create(s, rid, 32, {"slo_tpot_ms": 100.0, **custom})
    s._add_request_to_queue(req)
    return req


def _refusals(s) -> list[dict]:
    return [o.finished_reason for o in s.ipc_channels.send_to_tokenizer.sent]


def test_a_request_the_plan_refuses_ends_with_429_at_once(slo_sched):
    """unadmitted=reject: the refused request leaves SGLang's queue with a 429 naming the reason
    (it used to wait there forever, unplanned); an admitted one queues as before."""
    s = slo_sched(unadmitted="reject")
    _queue(s, "ok", {"slo_ttft_ms": 5000.0})
    _queue(s, "no", {"slo_ttft_ms": 0.001})  # infeasible even alone
    assert [r.rid for r in s.waiting_queue] == ["ok"]
    (reason,) = _refusals(s)
    assert reason["status_code"] == 429 and "infeasible" in reason["message"]


@pytest.mark.parametrize("expiry", [True, False])
def test_best_effort_past_its_ttft_deadline_expires_with_429(slo_sched, expiry):
    """--best-effort-expiry (default): the next iteration ends a best-effort request whose TTFT
    deadline passed without a token; admitted and asked-for best effort stay. The control keeps it."""
    s = slo_sched(expiry=expiry)
    s.metrics_reporter = types.SimpleNamespace(current_scheduler_metrics_enabled=True)
    _queue(s, "ok", {"slo_ttft_ms": 5000.0})
    _queue(s, "late", {"slo_ttft_ms": 0.001})  # not admitted (infeasible), deadline 1 us after arrival
    _queue(s, "asked", {"slo_best_effort": True, "slo_ttft_ms": 0.001})
    assert len(s.waiting_queue) == 3 and not _refusals(s)
    s._should_defer_prefill(types.SimpleNamespace(reqs=[]))
    kept = ["ok", "asked"] if expiry else ["ok", "late", "asked"]
    assert sorted(r.rid for r in s.waiting_queue) == sorted(kept)
    refusals = _refusals(s)
    assert len(refusals) == int(expiry)
    if expiry:
        assert refusals[0]["status_code"] == 429 and "TTFT deadline" in refusals[0]["message"]
        shadow = s._slo()  # its departure was an abort, and the planner no longer holds it
        assert "late" not in shadow.known and shadow.policy.stats()["reasons"].get("aborted") == 1
        finished = {
            tuple(x.labels.values()): x.value
            for f in s._slo_tier_metrics().series.finished.collect()
            for x in f.samples
            if x.name.endswith("_total")
        }
        assert finished == {("best_effort", "abort"): 1.0}  # counted as it ends, once
