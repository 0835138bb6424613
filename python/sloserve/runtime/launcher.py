"""Starts and stops the router and scheduler processes; owns the ipc:// socket directory."""

from __future__ import annotations

import glob
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace

from sloserve.runtime.config import ServerConfig
from sloserve.runtime.router_proc import RouterArgs, router_main
from sloserve.runtime.scheduler_proc import SchedulerArgs, scheduler_main
from sloserve.runtime.transport import Transport

log = logging.getLogger("sloserve.launcher")


IPC_PREFIX = "sloserve-ipc-"  # socket dirs are <tmp>/sloserve-ipc-<server pid>-<random>


def remove_stale_ipc_dirs(tmp: str | None = None) -> list[str]:
    """Remove socket dirs left by servers that were SIGKILLed (their pid no longer runs)."""
    removed = []
    for path in glob.glob(os.path.join(tmp or tempfile.gettempdir(), IPC_PREFIX + "*-*")):
        pid = os.path.basename(path)[len(IPC_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running (or someone else's process: not ours to touch)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d socket dir(s) of servers that no longer run: %s", len(removed), ", ".join(removed))
    return removed


@dataclass(frozen=True)
class Addresses:
    front: str
    router: str
    sched_in: tuple[str, ...]
    sched_query: tuple[str, ...]

    @classmethod
    def in_dir(cls, path: str, dp_size: int) -> "Addresses":
        return cls(
            front=f"ipc://{path}/front",
            router=f"ipc://{path}/router",
            sched_in=tuple(f"ipc://{path}/sched{i}" for i in range(dp_size)),
            sched_query=tuple(f"ipc://{path}/query{i}" for i in range(dp_size)),
        )

    def with_scheduler(self, i: int, addr_in: str, addr_query: str) -> "Addresses":
        return replace(
            self,
            sched_in=self.sched_in[:i] + (addr_in,) + self.sched_in[i + 1 :],
            sched_query=self.sched_query[:i] + (addr_query,) + self.sched_query[i + 1 :],
        )


class ProcessGroup:
    """The router process plus ``dp_size`` scheduler processes (spawned, not forked)."""

    transport = Transport()  # ipc:// in a 0700 directory: no keys needed

    def __init__(self, cfg: ServerConfig, epoch_monotonic: float) -> None:
        self.cfg = cfg
        self.epoch = epoch_monotonic
        remove_stale_ipc_dirs()
        self.ipc_dir = tempfile.mkdtemp(prefix=f"{IPC_PREFIX}{os.getpid()}-")
        self.addrs = Addresses.in_dir(self.ipc_dir, cfg.dp_size)
        self.router: mp.process.BaseProcess | None = None
        self.schedulers: list = []  # multiprocessing processes (or, with Ray, ray_group.ActorProcess)

    def scheduler_ready(self, i: int, addrs, node: str = "") -> bool:
        """A scheduler reported its sockets; True when they moved (the router must reconnect)."""
        if not addrs or tuple(addrs) == (self.addrs.sched_in[i], self.addrs.sched_query[i]):
            return False
        self.addrs = self.addrs.with_scheduler(i, str(addrs[0]), str(addrs[1]))
        return True

    def start(self) -> None:
        for i in range(self.cfg.dp_size):
            self.schedulers.append(self._spawn_scheduler(i))
        self.router = self._spawn_router()

    def _spawn_scheduler(self, i: int) -> mp.process.BaseProcess:
        proc = mp.get_context("spawn").Process(
            target=scheduler_main, args=(self.scheduler_args(i),), name=f"sloserve-scheduler-{i}", daemon=True
        )
        proc.start()
        return proc

    def scheduler_args(self, i: int) -> SchedulerArgs:
        return SchedulerArgs(
            replica_id=i,
            model=self.cfg.model,
            policy=self.cfg.policy,
            policy_options=self.cfg.policy_options(),
            kv_tokens=self.cfg.kv_tokens,
            block_size=self.cfg.block_size,
            max_seq_len=self.cfg.max_seq_len,
            time_scale=self.cfg.time_scale,
            seed=self.cfg.seed,
            reject_on_overload=self.cfg.reject_on_overload,
            epoch_monotonic=self.epoch,
            parent_pid=os.getpid(),
            addr_in=self.addrs.sched_in[i],
            addr_query=self.addrs.sched_query[i],
            addr_front=self.addrs.front,
            addr_router=self.addrs.router,
            transport=self.transport,
            calibrate=not self.cfg.disable_online_calibration,
            warmup=not self.cfg.skip_server_warmup,
        )

    def _spawn_router(self) -> mp.process.BaseProcess:
        rargs = RouterArgs(
            router=self.cfg.router,
            router_options=self.cfg.router_options(),
            dp_size=self.cfg.dp_size,
            seed=self.cfg.seed,
            epoch_monotonic=self.epoch,
            parent_pid=os.getpid(),
            addr_in=self.addrs.router,
            addr_front=self.addrs.front,
            sched_in=self.addrs.sched_in,
            sched_query=self.addrs.sched_query,
            transport=self.transport,
        )
        proc = mp.get_context("spawn").Process(target=router_main, args=(rargs,), name="sloserve-router", daemon=True)
        proc.start()
        return proc

    def restart_scheduler(self, i: int) -> None:
        """Replace replica i's scheduler process (dead, or killed by the watchdog); it binds the same sockets."""
        old = self.schedulers[i]
        if old.is_alive():
            old.kill()
        old.join(1.0)
        self.schedulers[i] = self._spawn_scheduler(i)

    def restart_router(self) -> None:
        old = self.router
        if old is not None:
            if old.is_alive():
                old.kill()
            old.join(1.0)
        self.router = self._spawn_router()

    def all_processes(self) -> list[mp.process.BaseProcess]:
        return [p for p in [self.router, *self.schedulers] if p is not None]

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGTERM everything, wait, then SIGKILL stragglers; remove the socket directory."""
        procs = [p for p in self.all_processes() if p.is_alive()]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(deadline - time.monotonic(), 0.05))
            if p.is_alive():
                log.warning("%s did not exit on SIGTERM; killing it", p.name)
                p.kill()
                p.join(1.0)
        if self.ipc_dir:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
