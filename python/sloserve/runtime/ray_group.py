"""The embedded runtime across nodes: each replica's scheduler runs in a Ray actor.

``--ray-address ADDR`` (``pip install -e .[ray]``) swaps the launcher's process group for this
one; nothing else in the server changes. The HTTP front, the router process (any routing policy,
with its pending-request ledger) and soft admission stay on the ingress node, exactly as on one
host. Each scheduler actor goes wherever Ray places it (``SPREAD`` over the nodes with
``--ray-replica-cpus`` free), binds two ``tcp://`` ports on its node and reports them in its
"ready" message; the router then connects to it. Messages, planner summaries included, keep
the one-host ZMQ protocol, over CurveZMQ (``runtime/transport.py``): a summary is one ZMQ send per
step, which Ray's object transport could not match (docs/routing.md, "Multi-node").

A replica whose actor dies (its node lost, or the watchdog killed it) fails its in-flight requests
with 503 and is replaced by a new actor, which Ray places on a node that is still alive.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import ray
from ray.exceptions import RayError

from sloserve.runtime.config import ServerConfig
from sloserve.runtime.launcher import Addresses, ProcessGroup
from sloserve.runtime.scheduler_proc import SchedulerArgs, SchedulerProcess
from sloserve.runtime.transport import Transport, free_port

log = logging.getLogger("sloserve.ray")
NODE_ID_LABEL = "ray.io/node-id"  # a label every Ray node carries
EXIT_LOST = -9  # the exit code /health reports for an actor that Ray lost (its node died, or it was killed)


class SchedulerActor:
    """One replica's scheduler loop in a Ray actor (``ray.remote`` is applied at launch)."""

    def __init__(self, args: SchedulerArgs, epoch_wall_s: float) -> None:
        host = ray.util.get_node_ip_address()
        # The server's time base is "seconds since the launch epoch". Every node has its own
        # monotonic clock, so the epoch travels as wall time and becomes this node's monotonic
        # reading of the same instant; deadlines are then exact to the nodes' clock sync (NTP).
        epoch_monotonic = time.monotonic() - (time.time() - epoch_wall_s)
        self.args = dataclasses.replace(
            args,
            epoch_monotonic=epoch_monotonic,
            addr_in=f"tcp://{host}:*",
            addr_query=f"tcp://{host}:*",
            node=ray.get_runtime_context().get_node_id(),
        )

    def run(self) -> int:
        logging.basicConfig(
            level=logging.INFO, format=f"[scheduler {self.args.replica_id}] %(levelname)s %(message)s", force=True
        )
        proc = SchedulerProcess(self.args)
        try:
            proc.run()
        finally:
            proc.close()
        return 0


class ActorProcess:
    """A scheduler actor seen through the ``multiprocessing.Process`` calls the front and launcher use."""

    def __init__(self, actor, name: str) -> None:
        self.actor = actor
        self.name = name
        self.done = actor.run.remote()  # resolves when the loop ends, or with an error when the actor is lost
        self.exitcode: int | None = None
        self.error = ""
        self.killed = False  # by us (watchdog, restart, stop): not news worth an error line

    def is_alive(self) -> bool:
        if self.exitcode is None and ray.wait([self.done], timeout=0)[0]:
            try:
                self.exitcode = int(ray.get(self.done))
            except RayError as exc:  # the actor (or its node) is gone
                self.exitcode, self.error = EXIT_LOST, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                if not self.killed:
                    log.error("%s lost: %s", self.name, self.error)
        return self.exitcode is None

    def join(self, timeout_s: float | None = None) -> None:
        ray.wait([self.done], timeout=timeout_s)

    def kill(self) -> None:
        self.killed = True
        ray.kill(self.actor, no_restart=True)

    def terminate(self) -> None:
        """Nothing to do: the front has sent "shutdown" through the router; ``stop`` kills stragglers."""


class RayProcessGroup(ProcessGroup):
    """The router as a local process, the schedulers as Ray actors (same interface as ProcessGroup)."""

    def __init__(self, cfg: ServerConfig, epoch_monotonic: float) -> None:
        self.cfg = cfg
        self.epoch = epoch_monotonic
        self.epoch_wall_s = time.time() - (time.monotonic() - epoch_monotonic)
        if not ray.is_initialized():
            ray.init(address=cfg.ray_address, log_to_driver=True)
        host = cfg.ray_host or ray.util.get_node_ip_address()
        self.transport = Transport.curve()  # fresh keys per launch: see runtime/transport.py
        self.ipc_dir = None
        self.addrs = Addresses(
            front=f"tcp://{host}:{free_port(host)}",
            router=f"tcp://{host}:{free_port(host)}",
            sched_in=("",) * cfg.dp_size,  # known when each actor reports ready
            sched_query=("",) * cfg.dp_size,
        )
        self.router = None
        self.schedulers: list = []
        self.actor_cls = ray.remote(SchedulerActor)
        self.nodes: list[str] = [""] * cfg.dp_size  # where each replica reported from
        self.lost_nodes: set[str] = set()  # nodes that lost a replica: no replacement goes there
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info("Ray cluster at %s: %d node(s); front and router listen on %s", cfg.ray_address, len(nodes), host)

    def scheduler_ready(self, i: int, addrs, node: str = "") -> bool:
        self.nodes[i] = node
        return super().scheduler_ready(i, addrs, node)

    def restart_scheduler(self, i: int) -> None:
        old = self.schedulers[i]
        if not old.is_alive() and old.exitcode == EXIT_LOST and self.nodes[i]:
            # Ray may not have declared the node dead yet and would place the replacement there
            self.lost_nodes.add(self.nodes[i])
        super().restart_scheduler(i)

    def _spawn_scheduler(self, i: int) -> ActorProcess:
        args = dataclasses.replace(self.scheduler_args(i), parent_pid=0)
        options: dict = {"num_cpus": self.cfg.ray_replica_cpus, "scheduling_strategy": "SPREAD", "max_restarts": 0}
        if self.lost_nodes:
            options["label_selector"] = {NODE_ID_LABEL: f"!in({', '.join(sorted(self.lost_nodes))})"}
        actor = self.actor_cls.options(**options).remote(args, self.epoch_wall_s)
        return ActorProcess(actor, f"sloserve-scheduler-{i} (Ray actor)")

    def stop(self, timeout_s: float = 3.0) -> None:
        super().stop(timeout_s)
        ray.shutdown()
