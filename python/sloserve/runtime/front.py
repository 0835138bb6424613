"""The HTTP front's engine side (SGLang's TokenizerManager role): it tokenizes, stamps the
arrival, builds core Requests, sends them to the router over ZMQ, receives the schedulers'
events, turns token counts into synthetic tokens, and watches the child processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from typing import Callable

import zmq
import zmq.asyncio

from sloserve.core.plan import EventKind
from sloserve.core.request import Request
from sloserve.runtime import messages as m
from sloserve.runtime import wire
from sloserve.runtime.config import ServerConfig
from sloserve.runtime.launcher import ProcessGroup
from sloserve.runtime.metrics import RuntimeMetrics
from sloserve.runtime.protocol import MAX_RID_LEN, BadRequest, GenInput
from sloserve.runtime.reqlog import RequestLog
from sloserve.runtime.slo_params import EXPIRED_MESSAGE, SloDefaults, arrival_from_unix, asks_for_ttft, parse_slo
from sloserve.runtime.state import ReqState
from sloserve.runtime.supervisor import ProcHealth, RestartBudget
from sloserve.runtime.tokenizer import Tokenizer, synthetic_output_ids

log = logging.getLogger("sloserve.front")
MONITOR_PERIOD_S = 0.1
RECV_BATCH = 16  # ZMQ messages handled before the receive loop yields to the event loop
FROM_SCHEDULER = (m.Events, m.Admit, m.Stats, m.Ready, m.Heartbeat)  # what counts as a scheduler heartbeat
FROM_ROUTER = (m.Routed, m.RouterHeartbeat)


class FrontEnd:
    def __init__(self, cfg: ServerConfig, tokenizer: Tokenizer, perf, procs: ProcessGroup, epoch: float) -> None:
        self.cfg = cfg
        self.tok = tokenizer
        self.perf = perf
        self.procs = procs
        self.epoch = epoch
        self.metrics = RuntimeMetrics()
        self.reqlog = RequestLog(cfg.log_interval_s)
        self.states: dict[str, ReqState] = {}
        self.replica_up = [True] * cfg.dp_size
        self.replica_exit: dict[int, int | None] = {}
        self.router_up = True
        self.ready: dict[int, m.Ready] = {}
        self.stats: dict[int, dict] = {}
        self.shutting_down = False
        self.draining = False
        self.health = [ProcHealth() for _ in range(cfg.dp_size)]
        self.router_health = ProcHealth()
        self.budget = RestartBudget(cfg.max_restarts)
        self.fatal: str | None = None  # set when the server gives up (restart budget spent): exit 1
        self.request_exit: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        # requests without a first token yet, in submission order: (state, submitted at)
        self.queued: dict[str, tuple[ReqState, float]] = {}
        self.defaults = SloDefaults()
        self.zctx = zmq.asyncio.Context()
        transport = procs.transport
        self.auth = transport.authenticator(zmq.Context.shadow(self.zctx.underlying))  # tcp:// (Ray) only
        self.pull = self.zctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        transport.bind(self.pull, procs.addrs.front)
        self.push = self.zctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        transport.connect(self.push, procs.addrs.router)
        self._tasks: list[asyncio.Task] = []
        self._handlers: dict[type, Callable] = {
            m.Events: self._on_events,
            m.Admit: self._on_admit,
            m.Routed: self._on_routed,
            m.Stats: self._on_stats,
            m.Ready: self._on_ready,
            m.Heartbeat: lambda msg: None,  # _dispatch notes that it heard from the sender
            m.RouterHeartbeat: lambda msg: None,
        }

    def now(self) -> float:
        return time.monotonic() - self.epoch

    # ---- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._receive_loop()))
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while len(self.ready) < self.cfg.dp_size + 1:
            dead = [p.name for p in self.procs.all_processes() if not p.is_alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited during start-up (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("router/schedulers did not report ready in time")
            await asyncio.sleep(0.02)
        self._tasks.append(asyncio.create_task(self._monitor_loop()))
        self._tasks.append(asyncio.create_task(self.reqlog.periodic(lambda: (self.states.values(), self.stats))))
        self.metrics.replicas_up.set(self.cfg.dp_size)

    async def close(self) -> None:
        self.shutting_down = True
        for state in list(self.states.values()):
            self._terminal(state, {"type": "abort", "message": "server shutting down"}, 503)
        try:
            self.push.send(m.encode(m.Shutdown()), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pull.close(0)
        self.push.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.zctx.term()

    def begin_drain(self, timeout_s: float) -> None:
        """SIGTERM: refuse new requests, let in-flight ones finish, abort them after ``timeout_s``."""
        if self.draining:
            return
        self.draining = True
        log.info("draining %d in-flight requests (up to %.1fs)", len(self.states), timeout_s)
        asyncio.get_running_loop().call_later(timeout_s, self._abort_all, "server shut down before it finished")

    def _abort_all(self, message: str) -> None:
        for state in list(self.states.values()):
            self._terminal(state, {"type": "abort", "message": message, "status_code": 503}, 503, notify=m.Abort)

    @property
    def healthy(self) -> bool:
        """Serving: the router and at least one replica are up (/health reports each one)."""
        return self.router_up and any(self.replica_up) and not (self.shutting_down or self.draining)

    # ---- requests in ------------------------------------------------------------------
    def new_state(self, gen: GenInput) -> ReqState:
        """Validate and build a request's state; arrival is stamped here. Raises BadRequest."""
        arrival = self.now()
        slo = parse_slo(gen.sampling.custom_params, self.defaults)
        if slo.arrival_unix_s is not None:
            arrival = arrival_from_unix(slo.arrival_unix_s, time.time(), arrival)
        if gen.rid is not None and len(gen.rid) > MAX_RID_LEN:
            raise BadRequest(f"rid may be at most {MAX_RID_LEN} characters, got {len(gen.rid)}", "rid")
        prompt = gen.input_ids if gen.input_ids is not None else self.tok.encode(gen.text or "")
        if not prompt:
            raise BadRequest("the prompt is empty", "text")
        if gen.input_ids is not None and max(prompt) >= self.tok.vocab_size:
            raise BadRequest(
                f"input_ids: token id {max(prompt)} is out of the vocabulary (size {self.tok.vocab_size})", "input_ids"
            )
        max_new = gen.sampling.max_new_tokens
        total = len(prompt) + max_new
        if total > self.cfg.context_len:
            raise BadRequest(
                f"Requested token count exceeds the model's maximum context length of {self.cfg.context_len} tokens. "
                f"You requested a total of {total} tokens: {len(prompt)} tokens from the input messages and "
                f"{max_new} tokens for the completion. Please reduce the number of tokens in the input messages "
                f"or the completion to fit within the limit.",
                "max_new_tokens",
            )
        client_rid = gen.rid or uuid.uuid4().hex
        # A duplicate in-flight rid is served under a server-unique id: refusing it would let any
        # client probe which rids others have in flight. The client still sees its own rid.
        rid = client_rid if client_rid not in self.states else f"{client_rid}#{uuid.uuid4().hex[:16]}"
        out_len = max(max_new, 1)  # max_new_tokens 0 still runs the prefill (one hidden token)
        request = Request(
            request_id=rid,
            arrival_s=arrival,
            prompt_tokens=len(prompt),
            output_tokens=out_len,
            ttft_slo_s=slo.ttft_slo_s(len(prompt), self.perf.zero_load_prefill_s),
            segments=slo.segments(),
            slo_class=slo.slo_class,
            program_id=slo.program_id or client_rid,
            stage_index=slo.stage_index,
            stage_name=slo.stage,
            output_tokens_known=gen.sampling.ignore_eos and not (gen.sampling.stop or gen.sampling.stop_token_ids),
            max_new_tokens=out_len,
        )
        if slo.best_effort:  # never 429'd by --reject-on-overload alone
            request.route_best_effort = request.user_best_effort = True
        marker = slo.emitted_marker
        output = synthetic_output_ids(
            self.tok, self.cfg.seed, client_rid, out_len, marker, out_len // 2 if marker else None
        )
        ttft_asked = asks_for_ttft(gen.sampling.custom_params)
        return ReqState(
            rid, gen, slo, request, list(prompt), output, max_new, client_rid=client_rid, ttft_asked=ttft_asked
        )

    def submit(self, state: ReqState) -> None:
        if self.shutting_down or self.draining or not self.router_up:
            raise BadRequest("server is shutting down or its router is down", status_code=503)
        limit = self.cfg.max_queued_requests
        if limit and len(self.queued) >= limit:
            self.metrics.admissions.labels("rejected", "queue_full").inc()
            raise BadRequest(
                f"the request queue is full ({limit} requests wait for a first token; "
                f"--max-queued-requests); retry later",
                status_code=429,
            )
        self.queued[state.rid] = (state, self.now())
        self.states[state.rid] = state
        self.metrics.running.set(len(self.states))
        self.metrics.prompt_tokens.inc(len(state.prompt_ids))
        self.push.send(m.encode(m.Add(state.request)))

    async def wait_admission(self, state: ReqState) -> None:
        while state.admit_status == 0 and not state.done:
            state.changed.clear()
            await state.changed.wait()

    def abort(self, state: ReqState, message: str, status: int = 499) -> bool:
        """Client-side abort (disconnect, /abort_request): free the request everywhere."""
        if not self._terminal(state, {"type": "abort", "message": message}, status, notify=m.Abort):
            return False
        self.metrics.admissions.labels("aborted", "client").inc()
        return True

    def abort_rid(self, rid: str) -> bool:
        """Abort every in-flight request the client sent with this rid (there may be several)."""
        states = [s for s in self.states.values() if s.client_rid == rid]
        return sum(self.abort(state, "aborted by /abort_request") for state in states) > 0

    # ---- events in --------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        handled = 0
        while True:
            frame = await self.pull.recv()
            try:
                self._dispatch(m.decode(frame))
            except Exception as exc:  # noqa: BLE001 - one bad frame or message must not stop the front
                log.warning(
                    "dropped a message that could not be handled (%s: %s; frame %s)",
                    type(exc).__name__,
                    str(exc)[:200],
                    wire.describe(frame),
                )
            handled += 1
            if handled % RECV_BATCH == 0:
                # zmq.asyncio returns queued messages without suspending: give HTTP handlers a turn
                await asyncio.sleep(0)

    def _dispatch(self, msg: m.Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise wire.WireError(f"the front takes no {msg.KIND!r} messages")
        # the watchdog's heartbeats: only what a process sends itself (Routed names a target replica)
        if isinstance(msg, FROM_SCHEDULER) and 0 <= msg.replica < len(self.health):
            self.health[msg.replica].last_heard_s = self.now()
        elif isinstance(msg, FROM_ROUTER):
            self.router_health.last_heard_s = self.now()
        handler(msg)

    def _on_stats(self, msg: m.Stats) -> None:
        self.stats[msg.replica] = msg.stats

    def _on_routed(self, msg: m.Routed) -> None:
        state = self.states.get(msg.rid)
        if state is None:
            return
        replica = msg.replica
        if replica < 0:
            self._terminal(state, {"type": "abort", "message": f"routing failed: {msg.error}"}, 503)
            return
        state.replica = replica
        if not self.replica_up[replica]:
            self._fail_replica_request(state, replica)

    def _on_admit(self, msg: m.Admit) -> None:
        state = self.states.get(msg.rid)
        if state is None:
            return
        state.replica, state.tier, state.reason = msg.replica, msg.tier, msg.reason
        self.metrics.admission(state.tier, state.reason, msg.refused)
        if msg.refused:
            status = {"too_long": 400, "error": 500}.get(state.reason, 429)
            text = f"request not admitted ({state.reason}{': ' + msg.detail if msg.detail else ''})"
            state.admit_message = text
            state.admit_status = status
            self._terminal(state, {"type": "abort", "message": text, "status_code": status}, status)
        else:
            state.admit_status = 200
            state.changed.set()

    def _on_events(self, msg: m.Events) -> None:
        now = self.now()
        for event in msg.events:
            state = self.states.get(event.request_id)
            if state is None:
                continue
            kind, tier = event.kind, event.tier
            if kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS):
                self._on_tokens(state, event.num_tokens, now)
            elif kind is EventKind.FINISHED:
                self._terminal(state, {"type": "length", "length": state.visible})
            elif kind is EventKind.PREEMPTED:
                state.num_preemptions += 1
            elif kind is EventKind.TIER:
                state.tier = tier or state.tier
            elif kind in (EventKind.REJECTED, EventKind.ABORTED):
                self._terminal(
                    state,
                    {
                        "type": "abort",
                        "message": f"dropped by the scheduler ({event.reason or kind.value})",
                        "status_code": 429,
                    },
                    429,
                )
            if kind is EventKind.FIRST_TOKEN and tier:
                state.tier = tier

    def _on_tokens(self, state: ReqState, num: int, now: float) -> None:
        self.queued.pop(state.rid, None)
        before = state.visible
        state.add_tokens(num, now)
        end = state.find_marker(self.tok, before)
        if end is not None:
            self.push.send(m.encode(m.Segments(state.rid, state.request.segments)))
        matched = state.check_stop(self.tok, before)
        if matched is not None:
            self._terminal(state, {"type": "stop", "matched": matched}, notify=m.Abort)
        else:
            state.changed.set()

    def _terminal(
        self, state: ReqState, reason: dict, status: int = 0, notify: type[m.Done] | type[m.Abort] = m.Done
    ) -> bool:
        """The one place a request ends: metrics, router notification, wake the HTTP handler."""
        if not state.finish(self.now(), reason, status):
            return False
        self.reqlog.request_done(state, reason, status)
        self.states.pop(state.rid, None)
        self.queued.pop(state.rid, None)
        self.metrics.running.set(len(self.states))
        if status == 0 or state.visible:
            self.metrics.observe_finish(
                state.tier, reason["type"], state.ttft_s, state.tpot_s, state.slo_met, state.visible
            )
        if self.router_up and not self.shutting_down:
            try:
                self.push.send(m.encode(notify(state.rid)), zmq.NOBLOCK)
            except zmq.ZMQError:
                log.warning("could not notify the router about %s", state.rid)
        return True

    # ---- process health ---------------------------------------------------------------
    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_PERIOD_S)
            if self.shutting_down or self.fatal:
                continue
            now = self.now()
            self._expire_queued(now)
            self._expire_best_effort(now)
            for i, proc in enumerate(self.procs.schedulers):
                h = self.health[i]
                if h.state == "restarting":
                    if not proc.is_alive():  # died again before it reported ready
                        self._replica_down(i, proc.exitcode, f"exited during restart (code {proc.exitcode})")
                    continue
                if not proc.is_alive():
                    self._replica_down(i, proc.exitcode, f"exited (code {proc.exitcode})")
                elif now - h.last_heard_s > self.cfg.watchdog_timeout:
                    self._replica_down(
                        i,
                        None,
                        f"hung: no heartbeat for {now - h.last_heard_s:.1f} s "
                        f"(--watchdog-timeout {self.cfg.watchdog_timeout:g})",
                    )
            router = self.procs.router
            if self.router_health.state == "up" and router is not None:
                if not router.is_alive():
                    self._router_down(router.exitcode)
                elif now - self.router_health.last_heard_s > self.cfg.watchdog_timeout:
                    log.error(
                        "router process hung: no heartbeat for %.1f s (--watchdog-timeout %g); killing it",
                        now - self.router_health.last_heard_s,
                        self.cfg.watchdog_timeout,
                    )
                    router.kill()  # noticed as dead on the next tick, then restarted

    def _expire_queued(self, now: float) -> None:
        """--queue-timeout-s: a request still without a first token after max(timeout, its TTFT SLO) ends
        with 429 (an admitted slos-serve request gets its first token by its TTFT SLO, so it never does)."""
        timeout = self.cfg.queue_timeout_s
        if not timeout:
            return
        expired = []
        for state, since in self.queued.values():
            if now - since <= timeout:
                break  # submission order: the rest are younger
            if now - since > state.request.ttft_slo_s:
                expired.append(state)
        message = f"no first token within {timeout:g} s (--queue-timeout-s); retry later"
        for state in expired:
            self._refuse_queued(state, "queue_timeout", message)

    def _expire_best_effort(self, now: float) -> None:
        """--best-effort-expiry: a request the plan did not admit, whose client set its TTFT SLO,
        ends with 429 once that deadline passes without a first token (its SLO is lost; served
        late it holds the engine that admitted requests need). The front does not see prefill
        progress, so one mid-prefill ends too. Requests that asked for best effort never do."""
        if not self.cfg.best_effort_expiry:
            return
        expired = [
            state
            for state, _ in self.queued.values()
            if state.tier == "best_effort"
            and state.ttft_asked
            and not state.request.user_best_effort
            and now > state.request.ttft_deadline_s
        ]
        for state in expired:
            self._refuse_queued(state, "best_effort_expired", EXPIRED_MESSAGE)

    def _refuse_queued(self, state: ReqState, cause: str, message: str) -> None:
        """End a request still without a first token with 429 ("retry later"), counted as rejected
        for ``cause``, and tell its scheduler to drop it."""
        self.metrics.admissions.labels("rejected", cause).inc()
        self._terminal(state, {"type": "abort", "message": message, "status_code": 429}, 429, notify=m.Abort)

    def _restart_or_fail(self, what: str) -> bool:
        """True when a restart is within budget; else the server fails fast (exit code 1)."""
        if self.budget.allow(self.now()):
            return True
        self.fatal = (
            f"{what} failed and {self.cfg.max_restarts} restarts within 60 s are spent "
            f"(--max-restarts): exiting so that a supervisor restarts the server"
        )
        log.critical(self.fatal)
        self.request_exit()
        return False

    def _replica_down(self, replica: int, exitcode: int | None, why: str) -> None:
        h = self.health[replica]
        self.replica_up[replica] = False
        self.replica_exit[replica] = exitcode
        h.exit_code, h.reason, h.state = exitcode, why, "restarting"
        self.metrics.replicas_up.set(sum(self.replica_up))
        log.error("scheduler process of replica %d %s; failing its requests and restarting it", replica, why)
        self.push.send(m.encode(m.ReplicaDown(replica)))
        for state in list(self.states.values()):
            if state.replica == replica:
                self._fail_replica_request(state, replica)
        if self._restart_or_fail(f"scheduler process of replica {replica}"):
            h.restarts += 1
            h.last_heard_s = self.now()
            self.procs.restart_scheduler(replica)

    def _router_down(self, exitcode: int | None) -> None:
        self.router_up = False
        h = self.router_health
        h.exit_code, h.reason, h.state = exitcode, f"exited (code {exitcode})", "restarting"
        log.error("router process exited (code %s); failing all requests and restarting it", exitcode)
        for state in list(self.states.values()):
            self._terminal(state, {"type": "abort", "message": "router process exited", "status_code": 503}, 503)
        if self._restart_or_fail("router process"):
            h.restarts += 1
            self.procs.restart_router()

    def _on_ready(self, msg: m.Ready) -> None:
        """A (re)started process reports ready: route to it again (at its new address, for a Ray replica)."""
        who, addrs = msg.replica, msg.addrs
        self.ready[who] = msg
        if who >= 0:
            self.health[who].node = msg.node
        if who == -1:
            self.router_health.last_heard_s = self.now()
            if self.router_health.state == "restarting":
                self.router_health.state = "up"
                self.router_up = True
                for i, up in enumerate(self.replica_up):  # the new router starts with every replica healthy
                    if not up:
                        self.push.send(m.encode(m.ReplicaDown(i)))
                log.info("router process restarted")
            return
        h = self.health[who]
        moved = self.procs.scheduler_ready(who, addrs, h.node)
        if moved or h.state == "restarting":
            self.push.send(m.encode(m.ReplicaUp(who, addrs)))
        if h.state == "restarting":
            h.state = "up"
            self.replica_up[who] = True
            self.metrics.replicas_up.set(sum(self.replica_up))
            log.info("scheduler process of replica %d restarted", who)

    def _fail_replica_request(self, state: ReqState, replica: int) -> None:
        message = f"scheduler process of replica {replica} {self.health[replica].reason}; request aborted"
        self._terminal(state, {"type": "abort", "message": message, "status_code": 503}, 503)
