"""A scheduler process: one replica's Scheduler driven in wall-clock time against an engine.

Loop: take new requests/aborts from ZMQ without blocking, ``schedule(now)``, execute the plan,
let the step's wall time pass (answering the router's side-effect-free ``can_admit`` queries
meanwhile), ``on_step_done(now)``, send the events to the HTTP front in one message per step,
and publish the replica summary to the router. ``now`` is the server's time base: monotonic
seconds since the launcher's epoch, shared by every process of the server.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import zmq

from sloserve.core.plan import AdmitReason, StepPlan
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.perf import get_model
from sloserve.runtime import messages as m
from sloserve.runtime import wire
from sloserve.runtime.engine import SimulatedWallEngine
from sloserve.runtime.step_timing import (
    EMBEDDED_POLICY_DEFAULTS,
    StepTimer,
    live_policy_options,
    policy_options_with_calibration,
)
from sloserve.runtime.transport import Transport
from sloserve.runtime.warmup import warm_up

log = logging.getLogger("sloserve.scheduler")
SUMMARY_PERIOD_S = 0.005
STATS_PERIOD_S = 0.05
IDLE_POLL_MS = 100
HEARTBEAT_PERIOD_S = 1.0  # during a long step; between steps the stats message is the heartbeat


@dataclass(frozen=True)
class SchedulerArgs:
    replica_id: int
    model: str
    policy: str
    policy_options: dict
    kv_tokens: int
    block_size: int
    max_seq_len: int | None
    time_scale: float
    seed: int
    reject_on_overload: bool
    epoch_monotonic: float
    parent_pid: int
    addr_in: str
    addr_query: str
    addr_front: str
    addr_router: str
    transport: Transport = Transport()  # CURVE keys when the addresses are tcp:// (Ray, multi-node)
    node: str = ""  # where it runs, for /health (the Ray node id; empty on one host)
    calibrate: bool = True  # observed wall step times correct the planner's model (runtime/step_timing.py)
    warmup: bool = True  # run synthetic steps before reporting ready (runtime/warmup.py)


class SchedulerProcess:
    def __init__(self, args: SchedulerArgs) -> None:
        self.args = args
        perf = get_model(args.model)
        ctx = SchedulerContext(
            perf=perf,
            kv_capacity_tokens=args.kv_tokens,
            block_size_tokens=args.block_size,
            max_seq_len_tokens=args.max_seq_len,
            replica_id=args.replica_id,
        )
        options = live_policy_options(args.policy, args.policy_options, EMBEDDED_POLICY_DEFAULTS)
        options = policy_options_with_calibration(args.policy, options, args.calibrate)
        self.ctx = ctx
        self.sched = create_scheduler(args.policy, ctx, options)
        self.engine = SimulatedWallEngine(perf, args.time_scale, seed=args.seed + args.replica_id)
        self.timer = StepTimer(perf, feed=args.calibrate, time_scale=args.time_scale)
        self.warmup_stats = {"warmup_steps": 0, "warmup_s": 0.0}
        self.zctx = zmq.Context()
        self.auth = args.transport.authenticator(self.zctx)
        self.pull, self.addr_in = self._bound(zmq.PULL, args.addr_in)
        self.query, self.addr_query = self._bound(zmq.ROUTER, args.addr_query)
        self.front = self._sock(zmq.PUSH, args.addr_front)
        self.router = self._sock(zmq.PUSH, args.addr_router)
        self.poller = zmq.Poller()
        self.poller.register(self.pull, zmq.POLLIN)
        self.poller.register(self.query, zmq.POLLIN)
        self.running = True
        self.last_summary_s = -1.0
        self.last_stats_s = -1.0
        self.wakeup_s: float | None = None
        self.last_heartbeat = time.monotonic()
        self._handlers: dict[type, Callable] = {
            m.Add: self.add,
            m.Abort: lambda msg: self.sched.abort(msg.rid, self.now()),
            # the end-of-thinking marker fixed the thinking segment's length
            m.Segments: lambda msg: self.sched.update_segments(msg.rid, msg.segments),
            m.AbortAll: self._abort_all,
            m.Shutdown: lambda msg: setattr(self, "running", False),
        }

    def _sock(self, kind: int, addr: str) -> zmq.Socket:
        sock = self.zctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.args.transport.connect(sock, addr)
        return sock

    def _bound(self, kind: int, addr: str) -> tuple[zmq.Socket, str]:
        sock = self.zctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        return sock, self.args.transport.bind(sock, addr)

    def now(self) -> float:
        return time.monotonic() - self.args.epoch_monotonic

    # ---- messages ---------------------------------------------------------------------
    def drain(self, timeout_ms: int) -> None:
        """Handle everything queued; wait up to ``timeout_ms`` for the first message."""
        events = dict(self.poller.poll(timeout_ms))
        while events:
            if self.query in events:
                self.answer_query()
            if self.pull in events:
                self.handle_frame(self.pull.recv())
            events = dict(self.poller.poll(0))

    def handle_frame(self, frame: bytes) -> None:
        """A bad frame, or a message that fails, is logged and dropped: it must not stop the replica."""
        try:
            self.handle(m.decode(frame))
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "dropped a message that could not be handled (%s: %s; frame %s)",
                type(exc).__name__,
                str(exc)[:200],
                wire.describe(frame),
            )

    def answer_query(self) -> None:
        frames = self.query.recv_multipart()
        try:
            ident, payload = frames
            msg = m.decode(payload)
            if not isinstance(msg, m.CanAdmit):
                raise wire.WireError(f"expected a can_admit query, got {msg.KIND!r}")
            req = msg.request
        except Exception as exc:  # noqa: BLE001 - a malformed query gets no answer (the router times out)
            log.warning("dropped a malformed can_admit query (%s: %s)", type(exc).__name__, str(exc)[:200])
            return
        try:
            decision = self.sched.can_admit(req, self.now())
        except Exception:  # noqa: BLE001 - unanswered: the router counts the replica as queued
            log.exception("can_admit failed for %s", req.request_id)
            return
        reply = m.CanAdmitReply(msg.qid, decision.reason, decision.slack_s, decision.detail)
        self.query.send_multipart([ident, m.encode(reply)])

    def handle(self, msg: m.Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise wire.WireError(f"a scheduler takes no {msg.KIND!r} messages")
        handler(msg)

    def _abort_all(self, msg: m.AbortAll) -> None:
        """A restarted router: requests routed before it are orphans."""
        for rid in list(self.sched.resident):
            self.sched.abort(rid, self.now())

    def add(self, msg: m.Add) -> None:
        req = msg.request
        try:
            decision = self.sched.add(req, self.now())
        except Exception as exc:  # a request the policy cannot take must not kill the replica
            log.exception("policy failed to add %s", req.request_id)
            self.send_front(
                m.Admit(
                    req.request_id,
                    self.args.replica_id,
                    reason="error",
                    tier="rejected",
                    refused=True,
                    detail=f"{type(exc).__name__}: {exc}",
                )
            )
            return
        reason = decision.reason
        refused = not decision.accepted
        explicit = req.user_best_effort  # the client asked for best effort
        if not refused and self.args.reject_on_overload and reason is AdmitReason.BEST_EFFORT and not explicit:
            self.sched.abort(req.request_id, self.now())  # 429 instead of best effort
            refused = True
        self.send_front(
            m.Admit(
                req.request_id,
                self.args.replica_id,
                reason=reason.value,
                tier=req.tier.value,
                refused=refused,
                detail=decision.detail,
                slack_s=decision.slack_s,
            )
        )

    def send_front(self, msg: m.Message) -> None:
        self.front.send(m.encode(msg))

    def flush_events(self, events) -> None:
        events = tuple(events)
        if events:
            self.send_front(m.Events(self.args.replica_id, events))

    def publish(self, force: bool = False) -> None:
        now = self.now()
        if force or now - self.last_summary_s >= SUMMARY_PERIOD_S:
            self.last_summary_s = now
            self.router.send(m.encode(m.Summary(self.args.replica_id, self.sched.summary(now))))
        if force or now - self.last_stats_s >= STATS_PERIOD_S:
            self.last_stats_s = now
            policy_stats = self.sched.stats()
            stats = {**policy_stats, **self.timer.stats(policy_stats), **self.warmup_stats}
            self.send_front(m.Stats(self.args.replica_id, stats))

    # ---- the loop ---------------------------------------------------------------------
    def step(self) -> bool:
        """One schedule/execute/finish round; False when the plan was empty."""
        self.timer.begin()
        plan: StepPlan = self.sched.schedule(self.now())
        self.flush_events(plan.events)
        self.wakeup_s = getattr(plan, "wakeup_s", None)
        if plan.is_empty:
            self.timer.idle()
            return False
        start = time.monotonic()
        result = self.engine.execute(plan, self.sched.resident)
        end = start + self.engine.step_wall_s(result)
        # The simulated GPU is busy. Only the router's can_admit queries are answered mid-step;
        # adds and aborts wait for the step boundary, as in SGLang's event loop. zmq polls in
        # whole milliseconds, so the last millisecond is slept precisely.
        while (left := end - time.monotonic()) > 0.0015:
            if self.query.poll(int(min(left - 0.001, HEARTBEAT_PERIOD_S) * 1000)):
                while self.query.poll(0):
                    self.answer_query()
            if time.monotonic() - self.last_heartbeat >= HEARTBEAT_PERIOD_S:  # alive through a long step
                self.last_heartbeat = time.monotonic()
                self.send_front(m.Heartbeat(self.args.replica_id))
        if (left := end - time.monotonic()) > 0:
            time.sleep(left)
        result = self.timer.end(plan, result)  # step_s: the wall time it really took
        self.flush_events(self.sched.on_step_done(plan, result, self.now()))
        return True

    def idle_timeout_ms(self, plan_wakeup: float | None) -> int:
        if not self.sched.has_work():
            return IDLE_POLL_MS
        if plan_wakeup is not None:
            return max(0, min(IDLE_POLL_MS, int((plan_wakeup - self.now()) * 1000)))
        return 2  # work is pending but the policy waits (memory, pacing): poll again soon

    def run(self) -> None:
        if self.args.warmup:
            self.warmup_stats = warm_up(self.sched, self.ctx, self.engine, self.timer, self.now)
        self.send_front(
            m.Ready(
                self.args.replica_id,
                os.getpid(),
                policy=self.sched.registry_name,
                engine=self.engine.description,
                addrs=(self.addr_in, self.addr_query),  # where the router reaches it (tcp: a fresh port)
                node=self.args.node,
            )
        )
        self.publish(force=True)
        busy = False
        # parent_pid 0: a Ray actor, whose lifetime Ray ties to the server's driver process
        while self.running and (not self.args.parent_pid or wire.parent_alive(self.args.parent_pid)):
            self.drain(0 if busy else self.idle_timeout_ms(self.wakeup_s))
            if not self.running:
                break
            busy = self.step()
            self.publish()

    def close(self) -> None:
        for sock in (self.pull, self.query, self.front, self.router):
            sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.zctx.term()


def scheduler_main(args: SchedulerArgs) -> None:
    """Process entry point (multiprocessing spawn target)."""
    wire.child_process_setup()
    logging.basicConfig(level=logging.INFO, format=f"[scheduler {args.replica_id}] %(levelname)s %(message)s")
    proc = None
    try:
        proc = SchedulerProcess(args)
        signal.signal(signal.SIGTERM, lambda *_: setattr(proc, "running", False))
        proc.run()
    except Exception:
        log.error("scheduler %d failed:\n%s", args.replica_id, traceback.format_exc())
        os._exit(1)  # the front sees the exit and fails this replica's requests
    finally:
        if proc is not None:
            proc.close()
