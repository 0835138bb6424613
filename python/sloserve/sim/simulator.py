"""Discrete-event simulator: a virtual clock driving the common scheduler interface.

Loop: pop the events of the earliest time (step ends before arrivals, so a freed replica
sees the arrival in its next plan); then every idle replica with work asks its scheduler for
a plan and the engine's predicted step time schedules the step's end. Arrivals are routed,
then ``add``-ed. Multi-stage programs submit stage k+1 when stage k finishes plus its tool
delay. Disaggregated policies (DistServe) hand a request from a prefill replica to a decode
replica after its first token, with a KV-transfer delay.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from sloserve.core.plan import EventKind, RequestEvent, StepPlan, StepResult
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import ProgramSpec
from sloserve.core.topology import find_topology
from sloserve.metrics.records import StageRecord
from sloserve.metrics.summary import summarize
from sloserve.perf.base import ScaledModel
from sloserve.perf.presets import get_model
from sloserve.routing.base import create_router
from sloserve.sim.config import SimConfig
from sloserve.sim.engine import SimulatedEngine, read_ratio_trace
from sloserve.sim.overhead import scheduler_cost
from sloserve.sim.replica import SimReplica
from sloserve.sim.step_cost import StepCost
from sloserve.sim.warmup import warm_up

# Event kinds, in tie-break order at equal times (a client gives up only after the step that
# would have brought its first token at that time).
STEP_END, MIGRATE, ARRIVAL, WAKEUP, TIMEOUT, EXPIRE = 0, 1, 2, 3, 4, 5
MAX_IDLE_HORIZON_S = 3600.0  # stop waiting for wakeups this long after the last event


@dataclass
class SimResult:
    summary: dict
    records: list[StageRecord]
    steps: list[tuple[int, float, float, int, int]] = field(default_factory=list)  # replica, start, dur, tokens, items


def disaggregation(policy: str, options: dict) -> tuple[str, str, Any] | None:
    """(prefill policy, decode policy, config) when ``policy`` is a registered topology."""
    topology = find_topology(policy)
    if topology is None:
        return None
    return topology.prefill_policy, topology.decode_policy, topology.from_options(options)


class Simulator:
    def __init__(self, programs: Sequence[ProgramSpec], config: SimConfig, perf=None) -> None:
        self.config = config
        self.perf = perf if perf is not None else get_model(config.model)
        self.programs = {p.program_id: p for p in programs}
        if len(self.programs) != len(programs):
            raise ValueError("program ids must be unique")
        self.router = create_router(config.router, config.router_options, seed=config.seed)
        self.records: dict[str, StageRecord] = {}
        self.live: dict[str, Request] = {}
        self._heap: list = []
        self._seq = itertools.count()
        self.steps: list[tuple[int, float, float, int, int]] = []
        self.disagg = disaggregation(config.policy, dict(config.policy_options))
        self.cost = scheduler_cost(config.policy) if config.charge_scheduler_time else None
        self.num_timeouts = self.num_admitted_timeouts = self.num_expired = 0
        self._ratio_trace = read_ratio_trace(config.step_time_trace) if config.step_time_trace else None
        self._engine_perf = StepCost.load(config.engine_model) if config.engine_model else self.perf
        # SLOs resolve with the model as given; the policies plan with it too, unless told the bias
        self._planner_perf = self.perf
        if config.step_time_bias_known and config.step_time_bias:
            self._planner_perf = ScaledModel(self.perf, 1.0 + config.step_time_bias)
        # the engine is not the model: a served replica's warm-up has something to measure
        self._engine_differs = bool(
            config.step_time_noise or config.step_time_bias or config.step_time_trace or config.engine_model
        )
        self.replicas = self._build_replicas()
        for prog in programs:
            self._push(prog.arrival_s, ARRIVAL, (prog.program_id, 0))

    # ---- construction -------------------------------------------------------------------
    def _make_replica(self, rid: int, policy: str, options: dict, role: str) -> SimReplica:
        ctx = SchedulerContext(
            self._planner_perf,
            self.config.kv_tokens,
            self.config.block_size_tokens,
            self.config.max_seq_len,
            self.config.spec,
            rid,
        )
        sched = create_scheduler(policy, ctx, options)
        cfg = self.config
        engine = self._engine((cfg.seed, rid), (cfg.seed, rid, 1))
        warmup_steps = 0
        if cfg.warmup and self._engine_differs:
            # its own random streams: the served run draws what it drew without a warm-up
            warmup_steps = warm_up(sched, ctx, self._engine((cfg.seed, rid, 2), (cfg.seed, rid, 3)))
        # summaries are computed after every step: skip the fields no router here reads
        rep = SimReplica(rid, sched, engine, role, publish_spare=self.router.reads_spare_budget)
        rep.warmup_steps = warmup_steps
        return rep

    def _engine(self, draft_seed: tuple, noise_seed: tuple) -> SimulatedEngine:
        """The replica's simulated engine, drawing draft acceptance and step noise from generators
        seeded with these tuples."""
        cfg = self.config
        return SimulatedEngine(
            self._engine_perf,
            np.random.default_rng(draft_seed),
            cfg.alpha,
            noise_cv=cfg.step_time_noise,
            bias=cfg.step_time_bias,
            noise_rng=np.random.default_rng(noise_seed),
            ratio_trace=self._ratio_trace,
        )

    def _build_replicas(self) -> list[SimReplica]:
        if self.disagg is None:
            return [
                self._make_replica(i, self.config.policy, dict(self.config.policy_options), "mixed")
                for i in range(self.config.replicas)
            ]
        prefill, decode, dcfg = self.disagg
        n_p, n_d = dcfg.prefill_replicas, dcfg.decode_replicas
        reps = [self._make_replica(i, prefill, dcfg.prefill_options(), "prefill") for i in range(n_p)]
        reps += [self._make_replica(n_p + i, decode, dcfg.decode_options(), "decode") for i in range(n_d)]
        return reps

    @property
    def num_gpus(self) -> int:
        return len(self.replicas) * self.config.gpus_per_replica

    # ---- event loop ---------------------------------------------------------------------
    def _push(self, time_s: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (time_s, kind, next(self._seq), payload))

    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        now = 0.0
        while self._heap:
            now = self._heap[0][0]
            while self._heap and self._heap[0][0] == now:
                _, kind, _, payload = heapq.heappop(self._heap)
                self._dispatch(kind, payload, now)
            for rep in self.replicas:
                if not rep.busy:
                    self._start_step(rep, now)
        self._finalize_stuck()
        return self._result(now, time.perf_counter() - wall0)

    def _dispatch(self, kind: int, payload: Any, now: float) -> None:
        if kind == STEP_END:
            self._end_step(payload, now)
        elif kind == ARRIVAL:
            self._arrive(*payload, now)
        elif kind == MIGRATE:
            self._migrate_in(payload, now)
        elif kind == TIMEOUT:
            self._timeout(payload, now)
        elif kind == EXPIRE:
            self._expire(payload, now)
        # WAKEUP needs no action: the idle replicas are asked for a plan after every batch

    def _start_step(self, rep: SimReplica, now: float) -> None:
        sched = rep.scheduler
        if not sched.has_work():
            return
        resident = len(sched.resident)
        plan = sched.schedule(now)
        self._apply_events(plan.events, rep, now)
        if self.cost is not None and not plan.is_empty:
            # the scheduler's CPU time (this call, the arrivals since the last step) delays the step
            rep.engine.extra_s = rep.pending_cpu_s + self.cost.schedule_cost_s(resident)
            rep.cpu_s += rep.engine.extra_s
            rep.pending_cpu_s = 0.0
        if plan.is_empty:
            # wakeup_s is the latest time to ask again; one pending wakeup per time is enough
            if plan.wakeup_s is not None and plan.wakeup_s > now and plan.wakeup_s != rep.wakeup_s:
                rep.wakeup_s = plan.wakeup_s
                self._push(plan.wakeup_s, WAKEUP, rep.replica_id)
            return
        result = rep.engine.execute(plan, sched.resident)
        rep.busy, rep.plan, rep.step_start_s = True, plan, now
        rep.busy_s += result.step_s
        rep.kv_block_s += sched.kv_blocks()[0] * result.step_s  # held through the step
        if self.config.chrome_trace:
            self.steps.append((rep.replica_id, now, result.step_s, plan.num_tokens, len(plan.items)))
        self._push(now + result.step_s, STEP_END, (rep.replica_id, plan, result))

    def _end_step(self, payload: tuple[int, StepPlan, StepResult], now: float) -> None:
        rid, plan, result = payload
        rep = self.replicas[rid]
        rep.busy, rep.plan = False, None
        events = rep.scheduler.on_step_done(plan, result, now)
        self._apply_events(events, rep, now)
        rep.publish(now)

    def _apply_events(self, events: Sequence[RequestEvent], rep: SimReplica, now: float) -> None:
        for ev in events:
            rec = self.records.get(ev.request_id)
            if rec is None:
                continue
            req = self.live.get(ev.request_id)
            if ev.kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS):
                rec.add_tokens(ev.time_s, ev.num_tokens)
                if (
                    ev.kind is EventKind.FIRST_TOKEN
                    and rep.role == "prefill"
                    and req is not None
                    and not req.is_finished
                ):
                    self._migrate_out(rep, req, now)
            elif ev.kind is EventKind.FINISHED:
                self._finish(rec, req, now)
            elif ev.kind in (EventKind.REJECTED, EventKind.ABORTED):
                # a policy gave up on the request (e.g. it can never fit): a failure, not lost
                rec.rejected, rec.tier, rec.reason = True, Tier.REJECTED.value, ev.reason or ev.kind.value
                self.live.pop(ev.request_id, None)
            elif ev.kind is EventKind.TIER:
                rec.tier = ev.tier
            elif ev.kind is EventKind.PREEMPTED:
                rec.num_preemptions += 1

    # ---- requests -----------------------------------------------------------------------
    def _arrive(self, program_id: str, stage_index: int, now: float) -> None:
        prog = self.programs[program_id]
        stage = prog.stages[stage_index]
        req = Request(
            request_id=f"{program_id}/{stage_index}",
            arrival_s=now,
            prompt_tokens=stage.prompt_tokens,
            output_tokens=stage.output_tokens,
            ttft_slo_s=stage.ttft.resolve_s(stage.prompt_tokens, self.perf.zero_load_prefill_s),
            segments=stage.segments,
            slo_class=prog.slo_class,
            program_id=program_id,
            stage_index=stage_index,
            stage_name=stage.name,
            weight=prog.weight,
            output_tokens_known=stage.output_tokens_known,
            max_new_tokens=stage.max_new_tokens,
        )
        rec = StageRecord(
            req.request_id,
            program_id,
            prog.slo_class,
            stage_index,
            stage.name,
            now,
            req.ttft_slo_s,
            stage.segments,
            stage.prompt_tokens,
            stage.output_tokens,
        )
        self.records[req.request_id] = rec
        entry = [r for r in self.replicas if r.role != "decode"]
        decision = self.router.route(req, entry, now)
        if decision.best_effort:
            req.route_best_effort = True
        rep = self.replicas[decision.replica_id]
        rec.replica_id = rep.replica_id
        self._charge_add(rep)
        admit = rep.scheduler.add(req, now)
        rec.reason = admit.reason.value
        if not admit.accepted:
            rec.rejected, rec.tier = True, Tier.REJECTED.value
            return
        self.live[req.request_id] = req
        rec.tier = req.tier.value
        if self.config.client_timeout:
            # the client gives up when its first token is late by the metric's tolerance too
            self._push(now + req.ttft_slo_s * (1.0 + self.config.tolerance), TIMEOUT, req.request_id)
        if self.config.best_effort_expiry and not req.user_best_effort:
            self._push(req.ttft_deadline_s, EXPIRE, req.request_id)

    def _charge_add(self, rep: SimReplica) -> None:
        if self.cost is not None:
            rep.pending_cpu_s += self.cost.add_cost_s(len(rep.scheduler.resident))

    def _timeout(self, request_id: str, now: float) -> None:
        """A client without a first token gives up: the request is aborted wherever it is."""
        req = self.live.get(request_id)
        if req is None or req.num_output_tokens > 0:
            return
        rec = self.records[request_id]
        if rec.token_times:
            return
        self.num_timeouts += 1
        self.num_admitted_timeouts += req.tier is Tier.SLO
        self._end_unserved(rec, now, "client_timeout")

    def _expire(self, request_id: str, now: float) -> None:
        """The plugin's overload rule: best effort not started by its TTFT deadline is ended."""
        req = self.live.get(request_id)
        if req is None or req.tier is not Tier.BEST_EFFORT or req.num_computed_tokens > 0:
            return
        self.num_expired += 1
        self._end_unserved(self.records[request_id], now, "best_effort_expired")

    def _end_unserved(self, rec: StageRecord, now: float, reason: str) -> None:
        """Abort a live request on its replica and record it as a failure for ``reason``."""
        self.replicas[rec.replica_id].scheduler.abort(rec.request_id, now)
        self.live.pop(rec.request_id, None)
        rec.rejected, rec.tier, rec.reason = True, Tier.REJECTED.value, reason

    def _finish(self, rec: StageRecord, req: Request | None, now: float) -> None:
        rec.finish_s = now
        if req is not None:
            rec.tier = req.tier.value
            rec.num_preemptions = req.num_preemptions
            rec.spec_verify_steps, rec.spec_tokens = req.spec_verify_steps, req.spec_tokens_total
            self.router.on_finished(req, rec.replica_id, now)
        self.live.pop(rec.request_id, None)
        prog = self.programs[rec.program_id]
        nxt = rec.stage_index + 1
        if nxt < len(prog.stages):
            self._push(now + prog.stages[nxt].tool_delay_s, ARRIVAL, (rec.program_id, nxt))

    def _migrate_out(self, rep: SimReplica, req: Request, now: float) -> None:
        rep.scheduler.release(req.request_id)
        _, _, dcfg = self.disagg
        self._push(now + dcfg.kv_transfer_s(req.num_tokens), MIGRATE, req.request_id)

    def _migrate_in(self, request_id: str, now: float) -> None:
        req = self.live.get(request_id)
        if req is None:
            return
        decoders = [r for r in self.replicas if r.role == "decode"]
        target = min(decoders, key=lambda r: (r.scheduler.summary(now).outstanding_tokens, r.replica_id))
        self.records[request_id].replica_id = target.replica_id
        self._charge_add(target)
        admit = target.scheduler.add(req, now)
        if not admit.accepted:
            rec = self.records[request_id]
            rec.rejected, rec.tier, rec.reason = True, Tier.REJECTED.value, admit.reason.value
            self.live.pop(request_id, None)

    def _finalize_stuck(self) -> None:
        """Requests a policy left unserved with nothing more to wait for count as failures."""
        for rid, req in self.live.items():
            rec = self.records[rid]
            rec.tier = req.tier.value
            rec.reason = rec.reason or "unfinished"

    def _result(self, end_s: float, wall_s: float) -> SimResult:
        progs = self.programs.values()
        arrivals = [p.arrival_s for p in progs]
        duration = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else 0.0
        records = list(self.records.values())
        summary = summarize(
            records, len(self.programs), {p.program_id: len(p.stages) for p in progs}, duration, self.config.tolerance
        )
        verify = sum(r.spec_verify_steps for r in records)
        reasons: dict[str, int] = {}
        for rep in self.replicas:
            for k, v in rep.scheduler.stats().get("reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        summary.update(
            {
                "policy": self.config.policy,
                "model": self.config.model,
                "num_replicas": len(self.replicas),
                "num_gpus": self.num_gpus,
                "num_unfinished": len(self.live),
                "num_client_timeouts": self.num_timeouts,
                "num_admitted_slo_misses": summary["num_admitted_slo_misses"] + self.num_admitted_timeouts,
                "scheduler_time_s": sum(rep.cpu_s for rep in self.replicas),
                "mean_accepted_tokens_per_step": (sum(r.spec_tokens for r in records) / verify) if verify else None,
                "reasons": dict(sorted(reasons.items())),
                "sim_time_s": end_s,
                "num_steps": sum(rep.scheduler.num_steps - rep.warmup_steps for rep in self.replicas),
                "gpu_busy_fraction": (sum(r.busy_s for r in self.replicas) / (end_s * len(self.replicas)))
                if end_s > 0
                else 0.0,
                "kv_used_fraction": self._kv_used_fraction(),
                "sim_wall_s": wall_s,
            }
        )
        if self.config.best_effort_expiry:  # only then: runs without it keep their bytes
            summary["num_best_effort_expired"] = self.num_expired
        return SimResult(summary, records, self.steps)

    def _kv_used_fraction(self) -> float:
        """Mean share of the KV pool held while the engines ran (each step weighted by its time):
        with the GPU busy throughout, how close to full memory the policy kept it."""
        capacity_block_s = sum(r.kv_capacity_blocks * r.busy_s for r in self.replicas)
        return sum(r.kv_block_s for r in self.replicas) / capacity_block_s if capacity_block_s > 0 else 0.0


def simulate(programs: Sequence[ProgramSpec], config: SimConfig, perf=None) -> SimResult:
    """Run one simulation. Same programs and config (seed) -> identical results."""
    return Simulator(programs, config, perf).run()
