"""Drivers use only the scheduler interface (``core.scheduler.DRIVER_INTERFACE``).

Each driver runs its real call sequence against ``StrictScheduler``, a proxy that raises on any
other attribute, on any attribute assignment, and on any write to a request it hands out. The
negative controls show the proxy catches a driver that reaches past the interface.
"""

from __future__ import annotations

import types

import pytest
from test_policy_sim import programs

import sloserve.sim.simulator as simulator_mod
from sloserve.core.scheduler import DRIVER_INTERFACE, SCHEDULERS
from sloserve.sim import SimConfig, simulate


class InterfaceViolation(AssertionError):
    pass


class FrozenRequest:
    """A request as a driver may see it: every read works, no write does."""

    __slots__ = ("_req",)

    def __init__(self, req) -> None:
        object.__setattr__(self, "_req", req)

    def __getattr__(self, name):
        return getattr(self._req, name)

    def __setattr__(self, name, value):
        raise InterfaceViolation(f"a driver wrote {name!r} of request {self._req.request_id}")


class StrictScheduler:
    def __init__(self, inner) -> None:
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        if name not in DRIVER_INTERFACE:
            raise InterfaceViolation(f"a driver used {name!r}, which is not in the scheduler interface")
        value = getattr(self._inner, name)
        if name == "resident":
            return types.MappingProxyType({rid: FrozenRequest(r) for rid, r in value.items()})
        if name == "request":
            return lambda rid: None if (r := value(rid)) is None else FrozenRequest(r)
        return value

    def __setattr__(self, name, value):
        raise InterfaceViolation(f"a driver set {name!r} on a scheduler")


def strict_factory(monkeypatch, module) -> list:
    built = []
    real = module.create_scheduler

    def create(*args, **kwargs):
        built.append(StrictScheduler(real(*args, **kwargs)))
        return built[-1]

    monkeypatch.setattr(module, "create_scheduler", create)
    return built


SIM_POLICIES = sorted(set(SCHEDULERS.names()) | {"distserve"})


@pytest.mark.parametrize("policy", SIM_POLICIES)
def test_the_simulator_uses_only_the_interface(monkeypatch, policy):
    progs = programs(30, rate=6.0, seed=4)
    config = SimConfig(policy=policy, kv_tokens=6000, seed=1, replicas=1 if "distserve" in policy else 2)
    plain = simulate(progs, config).summary
    built = strict_factory(monkeypatch, simulator_mod)
    strict = simulate(progs, config).summary
    assert built, "the simulator did not build its schedulers through create_scheduler"
    plain.pop("sim_wall_s"), strict.pop("sim_wall_s")
    assert strict == plain  # the proxy is transparent to a driver that keeps to the interface


def test_the_proxy_catches_a_driver_that_reaches_past_the_interface():
    from sloserve.core.scheduler import SchedulerContext, create_scheduler
    from sloserve.perf import get_model

    sched = StrictScheduler(create_scheduler("slos-serve", SchedulerContext(get_model("opt-13b-tp2-a100"), 4096)))
    with pytest.raises(InterfaceViolation, match="requests"):
        _ = sched.requests  # the raw table: drivers read `resident`
    with pytest.raises(InterfaceViolation, match="publish_spare"):
        sched.publish_spare = False  # an option set from outside: drivers pass it to summary()
    req = programs(1, rate=1.0, seed=0)[0]
    from sloserve.sim.simulator import Simulator

    one = Simulator([req], SimConfig(policy="slos-serve")).replicas[0].scheduler
    assert one.summary(0.0, publish_spare=False).spare_prefill_tokens == ()
    view = FrozenRequest(types.SimpleNamespace(request_id="r", segments=()))
    with pytest.raises(InterfaceViolation, match="segments"):
        view.segments = ()  # drivers call update_segments


@pytest.mark.parametrize("policy", sorted(__import__("sloserve.runtime.config", fromlist=["x"]).servable_policies()))
def test_the_runtime_scheduler_process_uses_only_the_interface(monkeypatch, tmp_path, policy):
    import os

    import sloserve.runtime.scheduler_proc as proc_mod
    from sloserve.core.request import Request
    from sloserve.core.slo import DecodeSegment
    from sloserve.runtime import messages as m
    from sloserve.runtime.scheduler_proc import SchedulerArgs, SchedulerProcess
    from sloserve.runtime.warmup import warm_up

    built = strict_factory(monkeypatch, proc_mod)
    ipc = f"ipc://{tmp_path}"
    args = SchedulerArgs(
        0, "opt-13b-tp2-a100", policy, {}, 8192, 16, 2048, 0.0, 0, True, 0.0, os.getpid(),
        f"{ipc}/in", f"{ipc}/query", f"{ipc}/front", f"{ipc}/router",
    )  # fmt: skip
    proc = SchedulerProcess(args)
    try:
        assert built
        warm_up(proc.sched, proc.ctx, proc.engine, proc.timer, proc.now)
        for i in range(4):
            req = Request(f"r{i}", proc.now(), 40 + i, 6, 5.0, (DecodeSegment(100.0, 4), DecodeSegment(100.0)))
            proc.handle(m.decode(m.encode(m.Add(req))))
        proc.handle(m.decode(m.encode(m.Segments("r0", (DecodeSegment(100.0, 2), DecodeSegment(100.0))))))
        proc.handle(m.decode(m.encode(m.Abort("r3"))))
        for _ in range(200):  # a hang guard: six output tokens take a few steps
            if not proc.step():
                break
            proc.publish(force=True)
        proc.handle(m.AbortAll())
        proc.publish(force=True)
    finally:
        proc.close()


@pytest.mark.parametrize("policy", ["slos-serve", "fcfs", "sglang"])
def test_the_sglang_shadow_uses_only_the_interface(policy):
    from sloserve.core.scheduler import SchedulerContext, create_scheduler
    from sloserve.perf import get_model
    from sloserve.sglang.shadow import ShadowPlanner
    from sloserve.sglang.translate import ReqSnapshot, build_request

    perf = get_model("opt-13b-tp2-a100")
    shadow = ShadowPlanner(StrictScheduler(create_scheduler(policy, SchedulerContext(perf, 4096))))
    for rid in ("a", "b", "c"):
        shadow.add(build_request(rid, 40, 4, {"slo_tpot_ms": 100.0}, 0.0, perf.zero_load_prefill_s), 0.0)
    shadow.plan(0.0, ["a", "b", "c"], False)
    shadow.observe([ReqSnapshot(r, 40, 1, 40, True) for r in "abc"], 0.1)
    shadow.observe([ReqSnapshot("a", 40, 1, 10, False), ReqSnapshot("b", 40, 2, 41, True)], 0.2)  # a retracted
    shadow.observe([ReqSnapshot("a", 40, 2, 41, True), ReqSnapshot("b", 40, 2, 41, True, aborting=True)], 0.3)
    shadow.plan(0.3, [], True, {})
    shadow.observe([], 0.4)  # b aborted, a finished, c finished earlier (it left at 0.2)
    assert not shadow.known
    shadow.summary(0.4), shadow.calibration_scale(), shadow.report("a", 2, True, 0.4)
