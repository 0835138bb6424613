"""One simulated replica: a scheduler, an engine, and the step in flight."""

from __future__ import annotations

from sloserve.core.plan import AdmitDecision, ReplicaSummary, StepPlan
from sloserve.core.request import Request
from sloserve.core.scheduler import Scheduler
from sloserve.sim.engine import SimulatedEngine


class SimReplica:
    """Also the ``ReplicaView`` routers see: live ``can_admit``, published ``summary``."""

    def __init__(
        self,
        replica_id: int,
        scheduler: Scheduler,
        engine: SimulatedEngine,
        role: str = "mixed",
        publish_spare: bool = True,
    ) -> None:
        self.replica_id = replica_id
        self.publish_spare = publish_spare
        self.scheduler = scheduler
        self.engine = engine
        self.role = role  # mixed | prefill | decode (disaggregated serving)
        self.busy = False
        self.plan: StepPlan | None = None
        self.step_start_s = 0.0
        self.wakeup_s: float | None = None
        self.busy_s = 0.0
        self.kv_block_s = 0.0  # KV blocks held x seconds, over its steps (kv_used_fraction)
        self.kv_capacity_blocks = scheduler.kv_blocks()[1]  # its scheduler's pool (fixed)
        self.pending_cpu_s = 0.0  # scheduler CPU time (cost model) not yet charged to a step
        self.cpu_s = 0.0  # scheduler CPU time charged in all
        self.warmup_steps = 0  # steps its scheduler ran before time 0 (sim/warmup.py), not served
        self._summary = scheduler.summary(0.0, publish_spare)

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        return self.scheduler.can_admit(request, now_s)

    def summary(self) -> ReplicaSummary:
        return self._summary

    def publish(self, now_s: float) -> None:
        self._summary = self.scheduler.summary(now_s, self.publish_spare)
