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
