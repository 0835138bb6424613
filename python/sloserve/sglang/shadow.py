"""The sloserve scheduler kept as a shadow of SGLang's queues (no sglang import).

Each SGLang iteration, ``observe`` restates what SGLang actually did since the last call as a
StepPlan/StepResult and feeds it to the policy's ``on_step_done`` (so the policy's progress,
events and counters follow reality, whatever SGLang ran), then ``plan`` asks the policy for the
next step and restates it as a ``PlanDecision``. All inputs are plain data and ``now_s`` is
passed in: given the same snapshots every TP rank computes the same decision.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

from sloserve.core.plan import AdmitDecision, ReplicaSummary, ScheduledItem, StepPlan, StepResult
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler, SchedulerContext, create_scheduler
from sloserve.metrics.report import TokenLog
from sloserve.sglang.step_log import ENV_STEP_LOG, StepLog, step_log_path
from sloserve.sglang.translate import (
    PlanDecision,
    ReqSnapshot,
    plan_to_decision,
    retraction_order,
    slo_report,
    waiting_order,
    with_aborted,
)

log = logging.getLogger(__name__)
RECENT_REPORTS = 4096  # final reports kept for late meta_info (bounded memory)
# The server's first busy steps run cold (its own warm-up request, first allocations: 3-10x the
# steady step, issue 16): logged, not learned from, or the 0.99-quantile calibration holds them
# for its whole window.
COLD_STEPS = 16


class ShadowPlanner:
    def __init__(self, policy: Scheduler, replica_id: int = 0) -> None:
        self.policy = policy
        self.replica_id = replica_id
        self.known: dict[str, Request] = {}  # every request the policy was told about
        self.finished: dict[str, dict] = {}  # rid -> final SLO report, recent ones only
        self.decision = PlanDecision()
        self.admissions: dict[str, AdmitDecision] = {}  # live requests only
        self.token_logs: dict[str, TokenLog] = {}  # live requests only
        self._last_observe_s: float | None = None  # when SGLang last had work, for step times
        self.aborting: set[str] = set()  # seen ending with an abort: their departure is an abort
        self.step_sink = None  # (plan, observed_s, now_s) per busy step: sglang/step_log.py
        self.busy_steps = 0  # steps with a measured time (the first COLD_STEPS are not learned)
        self.expirable: set[str] = set()  # live requests whose client set a TTFT SLO

    @classmethod
    def create(
        cls,
        name: str,
        options: Mapping[str, Any] | None,
        perf,
        kv_capacity_tokens: int,
        block_size_tokens: int = 16,
        max_seq_len_tokens: int | None = None,
        replica_id: int = 0,
    ) -> "ShadowPlanner":
        ctx = SchedulerContext(
            perf=perf,
            kv_capacity_tokens=kv_capacity_tokens,
            block_size_tokens=block_size_tokens,
            max_seq_len_tokens=max_seq_len_tokens,
            replica_id=replica_id,
        )
        shadow = cls(create_scheduler(name, ctx, options), replica_id)
        directory = os.environ.get(ENV_STEP_LOG)
        if directory:  # a profile of the engine as it serves (benchmark/real_vs_sim.py)
            shadow.step_sink = StepLog(step_log_path(directory, replica_id), perf, shadow.calibration_scale)
        return shadow

    # ---- arrivals -------------------------------------------------------------------------
    def add(self, request: Request, now_s: float, expires: bool = False) -> AdmitDecision:
        """``expires``: the client set the TTFT SLO itself, so unadmitted, the request may expire."""
        decision = self.policy.add(request, now_s)
        self.admissions[request.request_id] = decision
        self.known[request.request_id] = request
        if expires:
            self.expirable.add(request.request_id)
        return decision

    def expired_best_effort(self, waiting: Iterable[str], now_s: float) -> list[str]:
        """Waiting rids the plan did not admit whose TTFT deadline has passed without a first
        token. Their SLO is lost; ending them now (the server's equivalent of a client that gives
        up, what the simulator's realistic mode models) keeps an overloaded host's CPU for the
        admitted ones. Only requests whose client set the TTFT SLO (``add(expires=True)``): an
        untagged request runs on defaults it never asked for, and one that asked for best effort
        wants an answer however late."""
        out = []
        for rid in waiting:
            req = self.known.get(rid)
            if (
                req is not None
                and rid in self.expirable
                and req.tier is Tier.BEST_EFFORT
                and not req.user_best_effort
                and req.num_output_tokens == 0
                and now_s > req.ttft_deadline_s
            ):
                out.append(rid)
        return out

    def expire(self, rids: Iterable[str]) -> None:
        """``rids`` were ended by the server: their departure is an abort, not a completion."""
        self.aborting.update(rids)

    # ---- progress -------------------------------------------------------------------------
    def observe(self, snapshots: Iterable[ReqSnapshot], now_s: float) -> list:
        """Feed what SGLang did since the last call to the policy; returns its events."""
        snaps = {s.rid: s for s in snapshots}
        items: list[ScheduledItem] = []
        produced: dict[str, int] = {}
        for rid, req in list(self.known.items()):
            snap = snaps.get(rid)
            if snap is None:
                continue
            if snap.aborting:
                self.aborting.add(rid)
            if snap.num_computed_tokens < req.num_computed_tokens and snap.num_output_tokens <= req.num_output_tokens:
                self.policy.sync_external(now_s, retracted=[rid])  # SGLang retracted it: its KV is gone
            d_out = snap.num_output_tokens - req.num_output_tokens
            self._log(rid).note(snap.num_output_tokens, now_s)
            if d_out > 0:
                items.append(
                    ScheduledItem(rid, max(req.remaining_compute_tokens, 1), context_tokens=req.num_computed_tokens)
                )
                produced[rid] = d_out
            elif snap.num_computed_tokens > req.num_computed_tokens:
                delta = min(snap.num_computed_tokens, req.num_tokens) - req.num_computed_tokens
                items.append(ScheduledItem(rid, delta, context_tokens=req.num_computed_tokens))
        resident = self.policy.resident
        left = [rid for rid in self.known if rid not in snaps and rid in resident]
        aborted = [rid for rid in left if rid in self.aborting]
        if aborted:  # dropped by SGLang, not completed: the policy counts aborts as aborts
            self.policy.sync_external(now_s, aborted=aborted)
        gone = [rid for rid in left if rid not in self.aborting]
        items.extend(ScheduledItem(rid, 0) for rid in gone if rid not in produced)
        # The wall time since the previous busy iteration is the step SGLang just ran (its own
        # overhead and ours included): the policy's online calibration learns from it. After
        # an idle spell there is no previous busy iteration, and no step to learn from.
        step_s = now_s - self._last_observe_s if items and self._last_observe_s is not None else 0.0
        self._last_observe_s = now_s if snaps else None
        plan = StepPlan(tuple(items))
        if self.step_sink is not None and step_s > 0:
            self.step_sink(plan, step_s, now_s)
        if step_s > 0:
            self.busy_steps += 1
            step_s = step_s if self.busy_steps > COLD_STEPS else 0.0
        events = self.policy.on_step_done(plan, StepResult(step_s, produced, frozenset(gone)), now_s)
        resident = self.policy.resident  # after the step: what finished has left
        for rid in list(self.known):
            if rid not in resident:  # finished, aborted, or rejected by the policy
                self.aborting.discard(rid)
                self.finished[rid] = self._report(rid, done=True)
                self.known.pop(rid)
                self.expirable.discard(rid)
                self.admissions.pop(rid, None)
                self.token_logs.pop(rid, None)
        while len(self.finished) > RECENT_REPORTS:
            self.finished.pop(next(iter(self.finished)))
        self._resync_kv(now_s)
        return events

    def _log(self, rid: str) -> TokenLog:
        log_ = self.token_logs.get(rid)
        if log_ is None:
            log_ = self.token_logs[rid] = TokenLog()
        return log_

    def _resync_kv(self, now_s: float) -> None:
        """Hold exactly the KV SGLang holds, so the next plan starts from reality."""
        held = {rid: r.num_computed_tokens for rid, r in self.policy.resident.items()}
        self.policy.sync_external(now_s, kv_tokens=held)

    # ---- decisions ------------------------------------------------------------------------
    def plan(
        self, now_s: float, waiting: Iterable[str], running_nonempty: bool, aborted: Mapping[str, int] | None = None
    ) -> PlanDecision:
        """The next step; ``aborted`` (rid -> tokens) are waiting requests SGLang aborted."""
        plan = self.policy.schedule(now_s)
        self.decision = with_aborted(plan_to_decision(plan, list(waiting), running_nonempty), aborted or {})
        return self.decision

    def waiting_order(self, rids: list[str]) -> list[int]:
        return waiting_order(rids, self.decision, self.known)

    def retraction_order(self, rids: list[str], now_s: float) -> list[int]:
        return retraction_order(rids, self.known, now_s)

    def report(self, rid: str, num_output_tokens: int, done: bool, now_s: float) -> dict:
        """The SLO report for ``meta_info`` as SGLang emits ``num_output_tokens`` at ``now_s``."""
        if rid in self.finished:
            return self.finished[rid]
        if rid not in self.known:
            return slo_report(None, None, None, self.replica_id, done)
        self._log(rid).note(num_output_tokens, now_s)
        return self._report(rid, done)

    def _report(self, rid: str, done: bool) -> dict:
        admission = self.admissions.get(rid)
        return slo_report(
            self.known.get(rid),
            self.token_logs.get(rid),
            admission.reason.value if admission is not None else None,
            self.replica_id,
            done,
        )

    def summary(self, now_s: float) -> ReplicaSummary:
        return self.policy.summary(now_s)

    def calibration(self) -> dict:
        """The current batch-time correction: scale and, with the affine form, offset."""
        stats = self.policy.stats()
        return {
            "calibration_scale": float(stats.get("calibration_scale", 1.0)),
            "calibration_offset_ms": float(stats.get("calibration_offset_ms", 0.0)),
            "calibration_steps": int(stats.get("calibration_steps", 0)),
            "calibration_ratio_p50": stats.get("calibration_ratio_p50"),
        }

    def reasons(self) -> dict:
        """The planner's decision counters (why requests went to best effort, steps overran...)."""
        return dict(self.policy.stats().get("reasons", {}))

    def calibration_scale(self) -> float:
        """The policy's current batch-time scale (observed / modelled; 1 without one)."""
        return self.calibration()["calibration_scale"]

    def tightest_tpot_s(self, rids: Iterable[str]) -> float | None:
        """Smallest current TPOT SLO among ``rids`` in the SLO tier (None when there is none)."""
        values = [r.current_tpot_s for rid in rids if (r := self.known.get(rid)) is not None and r.tier.value == "slo"]
        return min(values) if values else None
