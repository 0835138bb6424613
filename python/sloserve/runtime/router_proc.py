"""The router process: dispatches each request to a scheduler process with a routing policy.

Any registered routing policy runs here unchanged (``create_router(name)``). It sees replicas
through ``RemoteReplica`` views: the latest summary each scheduler published, and a
``can_admit`` that asks the scheduler over a ROUTER/DEALER socket (answered within one step;
a replica that does not answer in time counts as "queued", so routing never stalls).
The front learns where each request went (``routed``) so that it can fail a crashed
replica's requests; the router stops sending to a replica once the front reports it down.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import zmq

from sloserve.core.plan import AdmitDecision, AdmitReason, ReplicaSummary
from sloserve.core.request import Request
from sloserve.routing.base import create_router
from sloserve.runtime import messages as m
from sloserve.runtime import wire
from sloserve.runtime.transport import Transport

log = logging.getLogger("sloserve.router")
HEARTBEAT_PERIOD_S = 1.0


@dataclass(frozen=True)
class RouterArgs:
    router: str
    router_options: dict
    dp_size: int
    seed: int
    epoch_monotonic: float
    parent_pid: int
    addr_in: str
    addr_front: str
    sched_in: tuple[str, ...]
    sched_query: tuple[str, ...]
    query_timeout_s: float = 0.05
    transport: Transport = Transport()


class RemoteReplica:
    """A scheduler process as a routing policy sees it (``routing.base.ReplicaView``)."""

    def __init__(self, replica_id: int, zctx: zmq.Context, transport: Transport, timeout_s: float):
        self.replica_id = replica_id
        self.zctx = zctx
        self.transport = transport
        self.timeout_s = timeout_s
        self.addrs: tuple[str, str] = ("", "")
        self.push: zmq.Socket | None = None
        self.dealer: zmq.Socket | None = None
        self.healthy = False  # until connected
        self.latest = ReplicaSummary(replica_id)
        self._qids = itertools.count()

    def connect(self, addr_in: str, addr_query: str) -> None:
        """(Re)connect to the scheduler's sockets; a Ray replica restarted elsewhere has new ones."""
        if (addr_in, addr_query) == self.addrs and self.push is not None:
            return
        self.close()
        self.push = self.zctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.transport.connect(self.push, addr_in)
        self.dealer = self.zctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.transport.connect(self.dealer, addr_query)
        self.addrs = (addr_in, addr_query)
        self.healthy = True

    def summary(self) -> ReplicaSummary:
        if self.latest.healthy != self.healthy:
            self.latest = dataclasses.replace(self.latest, healthy=self.healthy)
        return self.latest

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        if self.dealer is None:
            return AdmitDecision(AdmitReason.QUEUED, detail=f"replica {self.replica_id} is not connected")
        qid = next(self._qids)
        self.dealer.send(m.encode(m.CanAdmit(qid, request)))
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.dealer.poll(max(int(left * 1000), 1)):
                break
            try:
                reply = m.decode(self.dealer.recv())
                if not isinstance(reply, m.CanAdmitReply):
                    raise wire.WireError(f"expected a can_admit_reply, got {reply.KIND!r}")
            except wire.WireError as exc:
                log.warning("dropped a malformed can_admit reply from replica %d (%s)", self.replica_id, exc)
                continue
            if reply.qid == qid:  # earlier timed-out answers are dropped here
                return AdmitDecision(reply.reason, reply.slack_s, reply.detail)
        return AdmitDecision(AdmitReason.QUEUED, detail=f"replica {self.replica_id} did not answer in time")

    def send(self, msg: m.Message) -> None:
        if self.push is not None:
            self.push.send(m.encode(msg))

    def close(self) -> None:
        for sock in (self.push, self.dealer):
            if sock is not None:
                sock.close(0)
        self.push = self.dealer = None


class RouterProcess:
    def __init__(self, args: RouterArgs) -> None:
        self.args = args
        self.policy = create_router(args.router, args.router_options, args.seed)
        self.zctx = zmq.Context()
        self.auth = args.transport.authenticator(self.zctx)
        self.pull = self.zctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        args.transport.bind(self.pull, args.addr_in)
        self.front = self.zctx.socket(zmq.PUSH)
        self.front.setsockopt(zmq.LINGER, 0)
        args.transport.connect(self.front, args.addr_front)
        self.replicas = [
            RemoteReplica(i, self.zctx, args.transport, args.query_timeout_s) for i in range(len(args.sched_in))
        ]
        for r, addr_in, addr_query in zip(self.replicas, args.sched_in, args.sched_query):
            if addr_in:  # a Ray replica's address is known once it reports ready ("replica_up")
                r.connect(addr_in, addr_query)
        self.owner: dict[str, tuple[int, Request]] = {}
        self.running = True
        self._handlers: dict[type, Callable] = {
            m.Add: self.route,
            m.Abort: self._on_finished,
            m.Done: self._on_finished,
            m.Segments: self._on_segments,
            m.Summary: self._on_summary,
            m.ReplicaDown: self._on_replica_down,
            m.ReplicaUp: self._on_replica_up,
            m.Shutdown: self._on_shutdown,
        }

    def now(self) -> float:
        return time.monotonic() - self.args.epoch_monotonic

    def route(self, msg: m.Add) -> None:
        req = msg.request
        healthy = [r for r in self.replicas if r.healthy]
        try:
            if not healthy:
                raise RuntimeError("no healthy scheduler process")
            decision = self.policy.route(req, healthy, self.now())
            target = self.replicas[decision.replica_id]
            if not target.healthy:
                raise RuntimeError(f"router chose replica {decision.replica_id}, which is down")
        except Exception as exc:  # a policy error fails this request, not the server
            self._routing_failed(req.request_id, str(exc))
            return
        self.owner[req.request_id] = (target.replica_id, req)
        self.front.send(
            m.encode(m.Routed(req.request_id, target.replica_id, decision.best_effort, decision.reason or ""))
        )
        # a best-effort decision travels on the replica's copy; the policy's request stays as it routed it
        target.send(m.Add(dataclasses.replace(req, route_best_effort=True) if decision.best_effort else req))

    def _routing_failed(self, rid: str, error: str) -> None:
        self.front.send(m.encode(m.Routed(rid, -1, error=error)))

    def _replica(self, i: int) -> int:
        if not 0 <= i < len(self.replicas):
            raise wire.WireError(f"no replica {i!r}")
        return i

    def handle(self, msg: m.Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise wire.WireError(f"the router takes no {msg.KIND!r} messages")
        handler(msg)

    def _on_finished(self, msg: m.Abort | m.Done) -> None:
        owner = self.owner.pop(msg.rid, None)
        if owner is not None:
            replica_id, req = owner
            if isinstance(msg, m.Abort) and self.replicas[replica_id].healthy:
                self.replicas[replica_id].send(msg)
            self.policy.on_finished(req, replica_id, self.now())

    def _on_segments(self, msg: m.Segments) -> None:
        owner = self.owner.get(msg.rid)
        if owner is not None:
            self.replicas[owner[0]].send(msg)

    def _on_summary(self, msg: m.Summary) -> None:
        self.replicas[self._replica(msg.replica)].latest = msg.summary

    def _on_replica_down(self, msg: m.ReplicaDown) -> None:
        i = self._replica(msg.replica)
        self.replicas[i].healthy = False
        self.owner = {rid: o for rid, o in self.owner.items() if o[0] != i}

    def _on_replica_up(self, msg: m.ReplicaUp) -> None:
        """A (re)started scheduler process is serving again (at new addresses when it moved)."""
        i = self._replica(msg.replica)
        if msg.addrs:
            addr_in, addr_query = msg.addrs
            self.replicas[i].connect(addr_in, addr_query)
        self.replicas[i].healthy = self.replicas[i].push is not None
        self.replicas[i].latest = ReplicaSummary(i)

    def _on_shutdown(self, msg: m.Shutdown) -> None:
        for r in self.replicas:
            if r.healthy:
                r.send(msg)
        self.running = False

    def handle_frame(self, frame: bytes) -> None:
        """One frame off the wire: a bad frame or a request that fails is logged and dropped;
        nothing a single message carries may stop the router."""
        try:
            msg = m.decode(frame)
        except wire.WireError as exc:
            log.warning("dropped a malformed frame (%s)", exc)
            if exc.kind == m.Add.KIND and exc.rid is not None:  # fail it at the front, not leave it hanging
                self._routing_failed(exc.rid, f"bad request ({exc})")
            return
        try:
            self.handle(msg)
        except Exception as exc:  # noqa: BLE001 - the router must outlive any one message
            log.warning(
                "dropped a %r message that could not be handled (%s: %s)", msg.KIND, type(exc).__name__, str(exc)[:200]
            )
            if isinstance(msg, m.Add):
                self._routing_failed(msg.request.request_id, f"bad request ({type(exc).__name__})")

    def run(self) -> None:
        # A restarted router knows nothing of what its predecessor routed (the front failed those
        # requests): the schedulers drop them before anything new arrives (same socket, in order).
        for r in self.replicas:
            r.send(m.AbortAll())
        self.front.send(m.encode(m.Ready(-1, os.getpid(), router=self.args.router)))
        beat = time.monotonic()
        while self.running and wire.parent_alive(self.args.parent_pid):
            if self.pull.poll(100):
                while self.running and self.pull.poll(0):
                    self.handle_frame(self.pull.recv())
            if time.monotonic() - beat >= HEARTBEAT_PERIOD_S:  # for the front's watchdog
                beat = time.monotonic()
                self.front.send(m.encode(m.RouterHeartbeat()))

    def close(self) -> None:
        for r in self.replicas:
            r.close()
        self.pull.close(0)
        self.front.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.zctx.term()


def router_main(args: RouterArgs) -> None:
    """Process entry point (multiprocessing spawn target)."""
    wire.child_process_setup()
    logging.basicConfig(level=logging.INFO, format="[router] %(levelname)s %(message)s")
    proc = None
    try:
        proc = RouterProcess(args)
        signal.signal(signal.SIGTERM, lambda *_: setattr(proc, "running", False))
        proc.run()
    except Exception:
        log.error("router failed:\n%s", traceback.format_exc())
        os._exit(1)
    finally:
        if proc is not None:
            proc.close()
