"""The SGLang backend's replicas as Ray actors: placement, summaries, liveness and replacement.

Each replica slot holds one ``ReplicaServerActor`` (``ray_replica.py``), placed ``SPREAD`` with
its CPU (and GPU) reservation. The pool polls every live replica's published ``ReplicaSummary``
through a Ray actor call every ``SUMMARY_POLL_S`` and hands the router ``SnapshotReplicaView``s of
the live ones. A replica is lost when its server exits (``wait_exit`` returns) or its actor does
(``wait_exit`` raises: the node died), or when the ingress finds its server unreachable and the
actor does not answer either. Then its in-flight proxied requests are cut (they end with an error
naming the replica), it leaves routing at once, and a replacement actor is started, kept off every
node that lost an actor (``ray.io/node-id`` label selector: Ray may take seconds to declare a node
dead and would otherwise place the replacement there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import aiohttp
import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from sloserve.core.plan import ReplicaSummary
from sloserve.runtime.ray_group import NODE_ID_LABEL
from sloserve.sglang.ray_replica import ReplicaServerActor
from sloserve.sglang.summaries import SnapshotReplicaView

log = logging.getLogger("sloserve.sglang.ray")
SUMMARY_POLL_S = 0.05  # one small Ray call per replica; the router's pending ledger covers the gap
PROBE_S = 5.0  # an actor that does not answer within this is taken for lost with its node


@dataclass(frozen=True)
class RayPoolConfig:
    replicas: int
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    startup_s: float = 600.0  # a cold SGLang start (weights, warm-up) on a busy node
    max_restarts: int = 8  # replacements in all, so a server that cannot start is not retried forever


@dataclass
class ReplicaSlot:
    replica_id: int
    actor: Any = None
    generation: int = 0  # bumped per actor: events from a replaced actor are ignored
    state: str = "starting"  # starting | live | suspect | restarting | failed
    url: str = ""
    node: str = ""
    reason: str = ""  # why it is not live (or was last replaced)
    restarts: int = 0
    summary: ReplicaSummary | None = None
    inflight: set = field(default_factory=set)  # proxied requests (ray_ingress.InFlight), cut when it is lost

    def describe(self) -> str:
        return f"replica {self.replica_id} (Ray node {self.node[:12] or 'unknown'})"


class RayReplicaPool:
    def __init__(self, cfg: RayPoolConfig, server_argv: Sequence[str], api_key: str) -> None:
        self.cfg, self.server_argv, self.api_key = cfg, list(server_argv), api_key
        self.actor_cls = ray.remote(ReplicaServerActor)
        self.slots = [ReplicaSlot(i) for i in range(cfg.replicas)]
        self.lost_nodes: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.session: aiohttp.ClientSession | None = None
        self.closing = False

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        for slot in self.slots:
            self._spawn(slot)
        self._task(self._poll_summaries())

    def _task(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _spawn(self, slot: ReplicaSlot) -> None:
        options: dict = {
            "num_cpus": self.cfg.replica_cpus,
            "num_gpus": self.cfg.replica_gpus,
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,  # the pool replaces lost actors itself, off the nodes that lost one
            "max_concurrency": 4,  # wait_exit blocks one thread; summary and stop use others
        }
        if self.lost_nodes:
            options["label_selector"] = {NODE_ID_LABEL: f"!in({', '.join(sorted(self.lost_nodes))})"}
        slot.generation += 1
        slot.state, slot.url, slot.node, slot.summary = "starting", "", "", None
        slot.actor = self.actor_cls.options(**options).remote(slot.replica_id, self.server_argv, self.api_key)
        self._task(self._watch(slot, slot.generation, slot.actor))

    async def _watch(self, slot: ReplicaSlot, gen: int, actor) -> None:
        try:
            info = await actor.wait_ready.remote(self.cfg.startup_s)
        except RayError as exc:
            log.error("%s did not start:\n%s", slot.describe(), exc)  # with the server's log tail
            await self._lose(slot, gen, f"did not start: {first_line(exc)}", isinstance(exc, RayActorError))
            return
        if gen != slot.generation:
            return
        slot.url, slot.node, slot.state = info["url"], info["node"], "live"
        log.info("%s serving at %s (server log %s)", slot.describe(), slot.url, info["log"])
        while True:
            try:
                code = await actor.wait_exit.remote()
                reason, node_lost = f"SGLang server exited (code {code})", False
            except ActorUnavailableError as exc:  # maybe a network blip: lost only if it stays silent
                if await self._answers(actor):
                    continue
                reason, node_lost = f"Ray actor unreachable: {first_line(exc)}", True
            except RayError as exc:
                reason, node_lost = f"Ray actor lost: {first_line(exc)}", True
            break
        await self._lose(slot, gen, reason, node_lost)

    @staticmethod
    async def _answers(actor) -> bool:
        try:
            await asyncio.wait_for(actor.summary.remote(), PROBE_S)
            return True
        except (asyncio.TimeoutError, RayError):
            return False

    async def _lose(self, slot: ReplicaSlot, gen: int, reason: str, node_lost: bool) -> None:
        if gen != slot.generation or self.closing or slot.state in ("restarting", "failed"):
            return
        slot.state, slot.reason = "restarting", reason
        message = f"{slot.describe()} lost while serving the request: {reason}"
        log.error("%s lost: %s; failing its %d in-flight request(s)", slot.describe(), reason, len(slot.inflight))
        for flight in list(slot.inflight):
            flight.close(message)  # the proxy reading it ends the request with this error
        if node_lost and slot.node:
            self.lost_nodes.add(slot.node)
        await stop_actor(slot.actor, 0.0 if node_lost else 20.0)
        if slot.restarts >= self.cfg.max_restarts:
            slot.state = "failed"
            log.error("%s not replaced: --max-restarts %d used up", slot.describe(), self.cfg.max_restarts)
            return
        slot.restarts += 1
        self._spawn(slot)

    def suspect(self, slot: ReplicaSlot, why: str) -> None:
        """The ingress could not reach the server: out of routing until a probe says otherwise."""
        if slot.state == "live":
            slot.state, slot.reason = "suspect", why
            self._task(self._probe(slot, slot.generation, slot.actor))

    async def _probe(self, slot: ReplicaSlot, gen: int, actor) -> None:
        if not await self._answers(actor):
            await self._lose(slot, gen, "its server is unreachable and its Ray actor does not answer", True)
            return
        try:
            async with self.session.get(slot.url + "/health", timeout=aiohttp.ClientTimeout(total=PROBE_S)) as r:
                healthy = r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            healthy = False
        if healthy and gen == slot.generation and slot.state == "suspect":
            slot.state = "live"
        # else: the server is going; wait_exit ends the replica (and starts its replacement)

    async def close(self) -> None:
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*(stop_actor(s.actor, 20.0) for s in self.slots if s.actor is not None))

    # ---- what the router sees ----------------------------------------------------------
    async def _poll_summaries(self) -> None:
        while True:
            live = self.live()
            # A bounded wait: an actor on a dead node must not hold up the others' summaries.
            calls = (asyncio.wait_for(s.actor.summary.remote(), PROBE_S) for s in live)
            got = await asyncio.gather(*calls, return_exceptions=True)
            for slot, data in zip(live, got):
                try:  # a failed call keeps the last summary: liveness is _watch's business
                    slot.summary = dataclasses.replace(ReplicaSummary(**data), replica_id=slot.replica_id)
                except TypeError:
                    continue
            await asyncio.sleep(SUMMARY_POLL_S)

    def live(self) -> list[ReplicaSlot]:
        return [s for s in self.slots if s.state == "live"]

    def views(self, now_s: float) -> list[SnapshotReplicaView]:
        """The live replicas, in replica-id order; one that has not published yet looks empty."""
        return [
            SnapshotReplicaView(s.replica_id, s.summary or ReplicaSummary(replica_id=s.replica_id, time_s=now_s))
            for s in self.live()
        ]

    def health(self) -> list[dict]:
        return [
            {
                "replica": s.replica_id,
                "state": s.state,
                "url": s.url,
                "node": s.node,
                "restarts": s.restarts,
                "reason": s.reason,
                "in_flight": len(s.inflight),
                "summary": None if s.summary is None else dataclasses.asdict(s.summary),
            }
            for s in self.slots
        ]


async def stop_actor(actor, grace_s: float) -> None:
    """Stop the server gracefully when the actor still answers, then kill the actor."""
    if grace_s > 0:
        try:
            await asyncio.wait_for(actor.stop.remote(), grace_s + 5.0)
        except (asyncio.TimeoutError, RayError):
            pass
    try:
        ray.kill(actor, no_restart=True)
    except (RayError, ValueError):
        pass


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
