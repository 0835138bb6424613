"""Translation and the shadow planner without SGLang (always runs)."""

from __future__ import annotations

import pytest

import sloserve.sglang.shadow as shadow_mod
from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.core.request import Tier
from sloserve.metrics.report import SLO_REPORT_KEYS
from sloserve.perf import get_model, preset_names
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.runtime.slo_params import SloParamError
from sloserve.sglang.config import SglangAdapterConfig, export_env, load_config, plugin_enabled
from sloserve.sglang.shadow import ShadowPlanner
from sloserve.sglang.spec_choice import AlphaEstimator, choose_steps, expected_tokens
from sloserve.sglang.translate import (
    PlanDecision,
    ReqSnapshot,
    build_request,
    plan_to_decision,
    slo_report,
    stamp_arrival,
    waiting_order,
    with_aborted,
)

PERF = get_model("llama-3-8b-h100")


def test_build_request_uses_front_arrival_and_rejects_bad_keys():
    req = build_request(
        "a",
        100,
        50,
        {"slo_ttft_ms": 300.0, "slo_tpot_ms": 25.0, "slo_arrival_s": 90.0},
        100.0,
        PERF.zero_load_prefill_s,
    )
    assert req.arrival_s == 90.0 and req.ttft_deadline_s == pytest.approx(90.3)
    assert req.max_new_tokens == 50 and not req.output_tokens_known
    future = build_request("b", 10, 5, {"slo_arrival_s": 500.0}, 100.0, PERF.zero_load_prefill_s)
    assert future.arrival_s == 101.0  # a clock-skewed stamp is clamped
    assert build_request("c", 10, 5, {"slo_best_effort": True}, 0.0, PERF.zero_load_prefill_s).route_best_effort
    with pytest.raises(SloParamError, match="slo_tpot_ms"):
        build_request("d", 10, 5, {"slo_tpot_ms": -1}, 0.0, PERF.zero_load_prefill_s)
    with pytest.raises(SloParamError, match="slo_bogus"):
        build_request("e", 10, 5, {"slo_bogus": 1}, 0.0, PERF.zero_load_prefill_s)


def test_the_http_front_stamps_arrival_only_where_the_client_gave_none():
    single = {"max_new_tokens": 8, "custom_params": {"slo_tpot_ms": 50.0}}
    assert stamp_arrival(single, 123.5) == 1 and single["custom_params"]["slo_arrival_s"] == 123.5
    bare: dict = {}
    assert stamp_arrival(bare, 7.0) == 1 and bare == {"custom_params": {"slo_arrival_s": 7.0}}
    upstream = {"custom_params": {"slo_arrival_s": 100.0}}  # a gateway's earlier stamp is kept
    nulled = {"custom_params": {"slo_arrival_s": None}}  # SGLang clients send nulls: not a stamp
    batch = [upstream, nulled, None, {"custom_params": "not a dict"}]
    assert stamp_arrival(batch, 200.0) == 1
    assert upstream["custom_params"]["slo_arrival_s"] == 100.0 and nulled["custom_params"]["slo_arrival_s"] == 200.0
    assert batch[3] == {"custom_params": "not a dict"}  # left for the scheduler's 400 naming the field
    req = build_request("f", 10, 5, single["custom_params"], 124.0, PERF.zero_load_prefill_s)
    assert req.arrival_s == 123.5  # the deadline counts from the front, not the scheduler


def test_plan_to_decision_and_queue_order():
    plan = StepPlan((ScheduledItem("run", 1), ScheduledItem("w2", 64), ScheduledItem("w1", 10)))
    d = plan_to_decision(plan, ["w1", "w2", "w3"], running_nonempty=True)
    assert dict(d.prefill_tokens) == {"w2": 64, "w1": 10} and d.order == ("w2", "w1") and not d.defer_prefill
    assert plan_to_decision(StepPlan((ScheduledItem("run", 1),)), ["w1"], True).defer_prefill
    assert not plan_to_decision(StepPlan(()), ["w1"], False).defer_prefill
    reqs = {
        r: build_request(r, 10, 5, {"slo_ttft_ms": ttft}, 0.0, PERF.zero_load_prefill_s)
        for r, ttft in (("w1", 500.0), ("w2", 100.0), ("w3", 50.0), ("w4", 10.0))
    }
    reqs["w4"].tier = Tier.BEST_EFFORT
    reqs["w3"].tier = reqs["w1"].tier = Tier.SLO
    order = waiting_order(["w4", "w3", "w2", "w1", "ghost"], PlanDecision({"w1": 5}, ("w1",)), reqs)
    assert [["w4", "w3", "w2", "w1", "ghost"][i] for i in order] == ["w1", "w3", "w2", "w4", "ghost"]


def test_shadow_follows_sglang_progress_and_reports_meta():
    shadow = ShadowPlanner.create("fcfs", {"token_budget": 64}, PERF, 4096)
    req = build_request("a", 100, 3, {"slo_ttft_ms": 1000.0, "slo_tpot_ms": 100.0}, 0.0, PERF.zero_load_prefill_s)
    assert shadow.add(req, 0.0).accepted
    assert shadow.plan(0.0, ["a"], False).prefill_tokens == {"a": 64}
    shadow.observe([ReqSnapshot("a", 100, 0, 64, False)], 0.1)  # SGLang ran a 64-token chunk
    assert req.num_computed_tokens == 64 and req.first_token_s is None
    events = shadow.observe([ReqSnapshot("a", 100, 1, 100, True)], 0.2)
    assert req.first_token_s == 0.2 and [e.kind.value for e in events] == ["first_token"]
    assert shadow.policy.kv.held_blocks("a") == shadow.policy.kv.blocks_for(100)
    live = shadow.report("a", 1, False, 0.2)
    assert live["tier"] == "slo" and live["slo_met"] is None and live["ttft_ms"] == pytest.approx(200.0)
    assert live["admission"] == "queued" and live["engine"] == "sglang" and set(live) == set(SLO_REPORT_KEYS)
    shadow.observe([ReqSnapshot("a", 100, 1, 50, False)], 0.3)  # retracted: KV gone, re-queued
    assert req.num_preemptions == 1 and req.num_computed_tokens == 50  # the radix prefix hit survives
    shadow.observe([ReqSnapshot("a", 100, 2, 101, True)], 0.4)  # recomputed and decoded again
    assert req.num_output_tokens == 2
    shadow.observe([], 5.0)  # gone from SGLang: finished
    assert "a" not in shadow.known and req.finish_s == 5.0
    assert not shadow.admissions and not shadow.token_logs  # nothing kept per finished request but its report
    final = shadow.report("a", 3, True, 5.0)
    # two tokens, 0.2 s apart: within the cumulative deadlines that start at the TTFT deadline (1 s)
    assert final["slo_met"] is True and final["tpot_ms"] == pytest.approx(200.0)
    assert shadow.report("nobody", 0, False, 0.0)["tier"] == "unknown"
    assert slo_report(None, None, None, 0, False)["slo_met"] is None


def test_report_meets_its_slo_when_tokens_come_in_time():
    shadow = ShadowPlanner.create("fcfs", {}, PERF, 4096, replica_id=3)
    req = build_request("a", 10, 3, {"slo_ttft_ms": 500.0, "slo_tpot_ms": 100.0}, 0.0, PERF.zero_load_prefill_s)
    shadow.add(req, 0.0)
    shadow.observe([ReqSnapshot("a", 10, 1, 10, True)], 0.1)
    shadow.observe([ReqSnapshot("a", 10, 2, 11, True)], 0.15)
    final = shadow.report("a", 3, True, 0.2)
    assert final["slo_met"] is True and final["replica"] == 3 and final["last_token_deadline_ms"] > 200
    late = build_request("b", 10, 3, {"slo_ttft_ms": 100.0, "slo_tpot_ms": 10.0}, 0.0, PERF.zero_load_prefill_s)
    shadow.add(late, 0.0)
    shadow.observe([ReqSnapshot("b", 10, 1, 10, True)], 0.05)
    assert shadow.report("b", 3, True, 1.0)["slo_met"] is False  # tokens 2-3 came 0.95 s after the first


def test_aborted_requests_go_through_first():
    d = plan_to_decision(StepPlan((ScheduledItem("run", 1),)), ["w1", "bad"], True)
    assert d.defer_prefill  # the plan prefills nothing while decodes run...
    forced = with_aborted(d, {"bad": 1})
    assert not forced.defer_prefill and forced.order == ("bad",) and dict(forced.prefill_tokens) == {"bad": 1}
    assert with_aborted(d, {}) is d  # ...and without an aborted request the plan stands


def test_config_round_trips_through_the_environment():
    cfg = SglangAdapterConfig(policy="fcfs", policy_options=(("token_budget", 512),), router="total-tokens")
    env = export_env(cfg, {})
    assert plugin_enabled(env) and load_config(env) == cfg
    assert not plugin_enabled({}) and load_config({}) == SglangAdapterConfig()
    with pytest.raises(ValueError, match="unknown"):
        SglangAdapterConfig.from_json('{"polcy": "x"}')


def test_spec_choice_and_alpha_estimator():
    assert expected_tokens(0.0, 5) == 1.0 and expected_tokens(1.0, 3) == 4.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert choose_steps([1, 2, 4], 100.0, 0.7, 8, 0, PERF) == 4
    with pytest.raises(ValueError):
        choose_steps([], 1.0, 0.5, 1, 0, PERF)
    est = AlphaEstimator(alpha=0.5, weight=1.0)
    assert est.update([1], 1) == pytest.approx(1.0, abs=1e-6)
    assert est.update([0, 0], 3) == pytest.approx(0.0, abs=1e-6)
    assert est.update([], 3) == pytest.approx(0.0, abs=1e-6)


def drive(policy: str, seed_offset: float = 0.0):
    """Simulate SGLang running whatever the shadow plans, for a few iterations."""
    shadow = ShadowPlanner.create(policy, {}, PERF, 32768)
    state = {}  # rid -> [prompt, outputs, computed]
    decisions, t = [], 0.0
    for i in range(6):
        rid = f"r{i}"
        req = build_request(
            rid,
            200 + 50 * i,
            4,
            {"slo_ttft_ms": 400.0 + 100 * (i % 2), "slo_tpot_ms": 50.0, "slo_best_effort": i == 5},
            t,
            PERF.zero_load_prefill_s,
        )
        shadow.add(req, t)
        state[rid] = [req.prompt_tokens, 0, 0]
    for _ in range(12):
        snaps = [ReqSnapshot(r, p, o, c, o > 0) for r, (p, o, c) in state.items()]
        shadow.observe(snaps, t)
        d = shadow.plan(t, [r for r, (p, o, c) in state.items() if o == 0], any(o for _, o, _ in state.values()))
        decisions.append((dict(d.prefill_tokens), d.order, d.defer_prefill))
        for rid, n in d.prefill_tokens.items():  # SGLang runs the planned chunks...
            p, o, c = state[rid]
            c = min(c + n, p)
            state[rid] = [p, 1 if c == p else 0, c]
        for rid, (p, o, _c) in list(state.items()):  # ...and one decode for every running request
            if o and rid not in d.prefill_tokens:
                state[rid] = [p, o + 1, p + o]
            if state[rid][1] >= 4:
                del state[rid]
        t += 0.05
    return decisions, {r: shadow.report(r, 4, True, t) for r in ("r0", "r5")}, shadow


@pytest.mark.parametrize("policy", ["slos-serve", "fcfs"])
def test_same_inputs_give_the_same_decisions(policy):
    first, meta1, shadow = drive(policy)
    second, meta2, _ = drive(policy)
    assert first == second and meta1 == meta2  # what keeps TP ranks in agreement
    assert any(d[0] for d in first)  # it did plan prefills
    assert not shadow.known  # every request finished through the observed progress
    if policy == "slos-serve":
        assert meta1["r5"]["tier"] == "best_effort" and meta1["r0"]["tier"] == "slo"


@pytest.mark.parametrize("preset", [*preset_names(), "cpu-slow"])
def test_best_effort_alone_is_planned_under_every_perf_preset(preset):
    """Defect C: with only best-effort work queued, the plan must still prefill it, whatever
    the batch-time model's base step (it once exceeded the idle step and the plan stayed empty:
    "cpu-slow", an 80 ms base step like a CPU engine's, failed before the fix)."""
    perf = PaperLinesModel("cpu-slow", (Line(1e-4, 0.0, 0.08),)) if preset == "cpu-slow" else get_model(preset)
    shadow = ShadowPlanner.create("slos-serve", {}, perf, 32768)
    req = build_request("be", 50, 8, {"slo_best_effort": True}, 0.0, perf.zero_load_prefill_s)
    shadow.add(req, 0.0)
    planned = [shadow.plan(0.01 * i, ["be"], False).prefill_tokens.get("be", 0) for i in range(3)]
    assert sum(planned) > 0, planned


def test_shadow_calibrates_the_model_from_sglangs_step_times():
    """Live calibration: SGLang's steps take 4x the model's time; the planner learns it, and an
    idle spell (no work between two iterations) is not mistaken for a step."""
    shadow = ShadowPlanner.create("slos-serve", {}, PERF, 32768)
    req = build_request("a", 64, 200, {"slo_tpot_ms": 500.0, "slo_ttft_ms": 5000.0}, 0.0, PERF.zero_load_prefill_s)
    shadow.add(req, 0.0)
    shadow.observe([ReqSnapshot("a", 64, 0, 0, False)], 0.0)
    t, step = 0.0, 4 * PERF.batch_time_s(64)
    shadow.observe([ReqSnapshot("a", 64, 1, 64, True)], t := t + step)
    for i in range(2, 40):
        step = 4 * PERF.batch_time_s(1, 0, 64 + i)
        shadow.observe([ReqSnapshot("a", 64, i, 64 + i - 1, True)], t := t + step)
    assert shadow.calibration_scale() > 2.0
    assert ShadowPlanner.create("fcfs", {}, PERF, 4096).calibration_scale() == 1.0


COLD = shadow_mod.COLD_STEPS


@pytest.mark.parametrize("cold_steps", [COLD, 0])
def test_the_servers_cold_first_steps_are_not_learned(monkeypatch, cold_steps):
    """The server's first steps run 10x the model (its warm-up); then every step keeps to the
    model. Learned from, the cold steps would hold the 0.99-quantile scale at its cap for the
    calibration's whole window (the control, with no cold steps skipped)."""
    monkeypatch.setattr(shadow_mod, "COLD_STEPS", cold_steps)
    # the 0.99 quantile, which 16 cold steps of 200 reach (the planner's default 0.9 does not)
    shadow = ShadowPlanner.create("slos-serve", {"calibrate_quantile": 0.99}, PERF, 32768)
    req = build_request("a", 64, 400, {"slo_tpot_ms": 5000.0, "slo_ttft_ms": 50000.0}, 0.0, PERF.zero_load_prefill_s)
    shadow.add(req, 0.0)
    shadow.observe([ReqSnapshot("a", 64, 0, 0, False)], 0.0)
    t = 0.0
    for i in range(1, 200):
        slow = 10.0 if i <= COLD else 1.0
        step = slow * PERF.batch_time_s(1, 0, 64 + i)
        shadow.observe([ReqSnapshot("a", 64, i, 64 + i - 1, True)], t := t + step)
    expected = 1.0 if cold_steps else 3.0
    assert shadow.calibration_scale() == pytest.approx(expected, rel=0.1)


def test_an_idle_gap_is_not_a_step():
    shadow = ShadowPlanner.create("slos-serve", {}, PERF, 32768)
    shadow.observe([], 0.0)  # idle
    for k in range(40):  # each request arrives after 100 s of idleness and is first seen prefilled
        t = 100.0 * (k + 1)
        req = build_request(f"r{k}", 64, 1, {"slo_tpot_ms": 500.0}, t, PERF.zero_load_prefill_s)
        shadow.add(req, t)
        shadow.observe([ReqSnapshot(f"r{k}", 64, 1, 64, True)], t)
        shadow.observe([], t + 1e-4)  # finished; then idle again
    assert shadow.calibration_scale() == 1.0  # the 100 s gaps were never taken for steps


def test_a_request_sglang_aborts_is_an_abort_not_a_completion():
    shadow = ShadowPlanner.create("slos-serve", {}, PERF, 4096)
    sp = {"slo_ttft_ms": 1000.0, "slo_tpot_ms": 100.0}
    done, gone = (build_request(r, 20, 5, sp, 0.0, PERF.zero_load_prefill_s) for r in ("done", "gone"))
    shadow.add(done, 0.0), shadow.add(gone, 0.0)
    shadow.observe([ReqSnapshot("done", 20, 1, 20, True), ReqSnapshot("gone", 20, 1, 20, True)], 0.1)
    shadow.observe([ReqSnapshot("done", 20, 2, 21, True), ReqSnapshot("gone", 20, 2, 21, True, aborting=True)], 0.2)
    shadow.observe([], 0.3)  # both left SGLang's queues
    reasons = shadow.policy.stats()["reasons"]
    assert reasons.get("aborted") == 1  # only the one SGLang was aborting
    assert done.finish_s == 0.3 and gone.finish_s is None
    assert not shadow.known and not shadow.aborting


def test_only_unadmitted_requests_past_their_ttft_deadline_without_a_token_expire():
    """--best-effort-expiry's choice: a request the plan did not admit (or a router sent to best
    effort), whose client set its TTFT SLO, and whose deadline has passed with no first token;
    never one admitted, one that asked for best effort, one on the default SLOs (untagged), one
    that has a token, or one before its deadline. Its departure is then an abort."""
    shadow = ShadowPlanner.create("slos-serve", {}, PERF, 32768)
    late = {"slo_ttft_ms": 1.0, "slo_tpot_ms": 100.0}  # infeasible even alone: best effort
    tags = {
        "late": late,
        "routed": {**late, "slo_ttft_ms": 1000.0, "slo_routed_best_effort": True},  # a router's verdict
        "untagged": late,  # as if on default SLOs: added with expires=False
        "started": late,
        "asked": {"slo_best_effort": True, "slo_ttft_ms": 1.0},
        "admitted": {"slo_ttft_ms": 1000.0, "slo_tpot_ms": 100.0},
    }
    for rid, custom in tags.items():
        shadow.add(build_request(rid, 64, 8, custom, 0.0, PERF.zero_load_prefill_s), 0.0, rid != "untagged")
    assert shadow.known["late"].tier is Tier.BEST_EFFORT and shadow.known["admitted"].tier is Tier.SLO
    assert shadow.known["untagged"].tier is Tier.BEST_EFFORT
    assert shadow.known["routed"].tier is Tier.BEST_EFFORT and not shadow.known["routed"].user_best_effort
    waiting = ["late", "routed", "untagged", "started", "asked", "admitted"]
    snaps = [ReqSnapshot(r, 64, 0, 0, False) for r in ("late", "routed", "untagged", "asked", "admitted")]
    shadow.observe([*snaps, ReqSnapshot("started", 64, 0, 0, False)], 0.0)
    assert shadow.expired_best_effort(waiting, 0.0005) == []  # before the 1 ms deadline
    snaps.append(ReqSnapshot("started", 64, 1, 64, True))  # has its first token (retracted, it would wait again)
    shadow.observe(snaps, 0.002)
    assert shadow.expired_best_effort(waiting, 0.5) == ["late"]  # "routed" has until 1 s
    assert shadow.expired_best_effort(waiting, 2.0) == ["late", "routed"]
    shadow.expire(["late"])
    shadow.observe([s for s in snaps if s.rid != "late"], 2.0)
    assert shadow.policy.stats()["reasons"].get("aborted") == 1 and "late" not in shadow.known
    assert "late" not in shadow.expirable  # forgotten with the request (bounded memory)


def test_only_a_client_that_set_a_ttft_slo_asks_for_one():
    from sloserve.runtime.slo_params import asks_for_ttft

    assert not asks_for_ttft(None) and not asks_for_ttft({"slo_arrival_s": 5.0, "slo_tpot_ms": 50.0})
    assert not asks_for_ttft({"slo_ttft_ms": None})  # SGLang clients send optional fields as null
    assert all(asks_for_ttft({k: v}) for k, v in (("slo_ttft_ms", 9), ("slo_ttft_slowdown", 3), ("slo_class", "coder")))
