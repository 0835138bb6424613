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

import zmq

from sloserve.core.plan import AdmitDecision, AdmitReason, ReplicaSummary
from sloserve.core.request import Request
from sloserve.routing.base import create_router
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
        self.dealer.send(wire.encode({"qid": qid, "req": wire.request_to_wire(request)}))
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.dealer.poll(max(int(left * 1000), 1)):
                break
            try:
                reply = wire.decode(self.dealer.recv())
                if reply.get("qid") == qid:  # earlier timed-out answers are dropped here
                    return AdmitDecision(AdmitReason(reply["reason"]), float(reply["slack_s"]), reply.get("detail", ""))
            except (wire.WireError, KeyError, TypeError, ValueError) as exc:
                log.warning("dropped a malformed can_admit reply from replica %d (%s)", self.replica_id, exc)
        return AdmitDecision(AdmitReason.QUEUED, detail=f"replica {self.replica_id} did not answer in time")

    def send(self, msg: dict) -> None:
        if self.push is not None:
            self.push.send(wire.encode(msg))

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

    def now(self) -> float:
        return time.monotonic() - self.args.epoch_monotonic

    def route(self, d: dict) -> None:
        req = wire.request_from_wire(d)
        healthy = [r for r in self.replicas if r.healthy]
        try:
            if not healthy:
                raise RuntimeError("no healthy scheduler process")
            decision = self.policy.route(req, healthy, self.now())
            target = self.replicas[decision.replica_id]
            if not target.healthy:
                raise RuntimeError(f"router chose replica {decision.replica_id}, which is down")
        except Exception as exc:  # a policy error fails this request, not the server
            self.front.send(wire.encode({"type": "routed", "rid": req.request_id, "replica": -1, "error": str(exc)}))
            return
        if decision.best_effort:
            d = {**d, "best_effort": True}
        self.owner[req.request_id] = (target.replica_id, req)
        self.front.send(
            wire.encode(
                {
                    "type": "routed",
                    "rid": req.request_id,
                    "replica": target.replica_id,
                    "best_effort": decision.best_effort,
                    "reason": decision.reason,
                }
            )
        )
        target.send({"type": "add", "req": d})

    def _replica(self, msg: dict) -> int:
        i = msg["replica"]
        if not isinstance(i, int) or not 0 <= i < len(self.replicas):
            raise wire.WireError(f"no replica {i!r}")
        return i

    def handle(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "add":
            self.route(msg["req"])
        elif kind in ("abort", "done"):
            owner = self.owner.pop(msg["rid"], None)
            if owner is not None:
                replica_id, req = owner
                if kind == "abort" and self.replicas[replica_id].healthy:
                    self.replicas[replica_id].send(msg)
                self.policy.on_finished(req, replica_id, self.now())
        elif kind == "segments":
            owner = self.owner.get(msg["rid"])
            if owner is not None:
                self.replicas[owner[0]].send(msg)
        elif kind == "summary":
            self.replicas[self._replica(msg)].latest = wire.summary_from_wire(msg["summary"])
        elif kind == "replica_down":
            i = self._replica(msg)
            self.replicas[i].healthy = False
            self.owner = {rid: o for rid, o in self.owner.items() if o[0] != i}
        elif kind == "replica_up":  # a (re)started scheduler process is serving again
            i = self._replica(msg)
            if msg.get("addrs"):
                addr_in, addr_query = msg["addrs"]
                self.replicas[i].connect(str(addr_in), str(addr_query))
            self.replicas[i].healthy = self.replicas[i].push is not None
            self.replicas[i].latest = ReplicaSummary(i)
        elif kind == "shutdown":
            for r in self.replicas:
                if r.healthy:
                    r.send(msg)
            self.running = False

    def handle_frame(self, frame: bytes) -> None:
        """One frame off the wire: a bad frame or a request that fails is logged and dropped;
        nothing a single message carries may stop the router."""
        try:
            msg = wire.decode(frame)
        except wire.WireError as exc:
            log.warning("dropped a malformed frame (%s)", exc)
            return
        try:
            self.handle(msg)
        except Exception as exc:  # noqa: BLE001 - the router must outlive any one message
            log.warning(
                "dropped a %r message that could not be handled (%s: %s)",
                str(msg.get("type"))[:32],
                type(exc).__name__,
                str(exc)[:200],
            )
            rid = msg.get("req", {}).get("rid") if isinstance(msg.get("req"), dict) else None
            if msg.get("type") == "add" and isinstance(rid, str):
                self.front.send(
                    wire.encode(
                        {"type": "routed", "rid": rid, "replica": -1, "error": f"bad request ({type(exc).__name__})"}
                    )
                )

    def run(self) -> None:
        # A restarted router knows nothing of what its predecessor routed (the front failed those
        # requests): the schedulers drop them before anything new arrives (same socket, in order).
        for r in self.replicas:
            r.send({"type": "abort_all"})
        self.front.send(wire.encode({"type": "ready", "replica": -1, "pid": os.getpid(), "router": self.args.router}))
        beat = time.monotonic()
        while self.running and wire.parent_alive(self.args.parent_pid):
            if self.pull.poll(100):
                while self.running and self.pull.poll(0):
                    self.handle_frame(self.pull.recv())
            if time.monotonic() - beat >= HEARTBEAT_PERIOD_S:  # for the front's watchdog
                beat = time.monotonic()
                self.front.send(wire.encode({"type": "router_heartbeat"}))

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
