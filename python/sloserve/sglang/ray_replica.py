"""One SGLang backend replica as a Ray actor: an SGLang + sloserve-plugin server on its node.

The actor (``ray.remote`` is applied by the pool) starts ``python -m sloserve.launch_server
--backend sglang`` with dp 1 as a child process on whatever node Ray placed it, listening on that
node's IP with the launch's API key, and with its own plan-summary directory. It answers where
the server is (``wait_ready``), the replica's latest ``ReplicaSummary`` (read from that directory,
as SGLang's DP controller reads it on one host), and ``wait_exit``, which returns the server's
exit code when the server dies and raises in the caller when the actor itself is lost (its node
died). No sglang import here: SGLang runs only in the child.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

import ray

from sloserve.runtime.transport import free_port
from sloserve.sglang.summaries import ENV_SUMMARY_DIR, read_summaries

HEALTH_POLL_S = 1.0  # how often a starting server's /health is asked


# The server must not outlive its actor. A lost node kills the actor's worker process, and Ray
# then SIGKILLs the worker's direct children and its process group: a signal relayed down the
# launcher's tree never comes, and SGLang's server was seen left running. So a reaper process,
# detached (double fork, own session) so that Ray's clean-up cannot reach it, polls the actor's
# process; when it is gone it kills the server's whole process group (the server leads its own
# session) and removes the replica's files. It exits by itself once the server group is gone.
REAPER = """
import os, shutil, signal, sys, time
pgid, actor_pid, work_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if os.fork():
    os._exit(0)
os.setsid()
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while True:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        os._exit(0)  # the server is gone: stopped by its actor, or exited
    if not alive(actor_pid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(work_dir, ignore_errors=True)
        os._exit(0)
    time.sleep(0.5)
"""


def replica_command(server_argv: Sequence[str], host: str, port: int, api_key: str) -> list[str]:
    """The replica's server command. The key travels as ``--api-key=KEY``: a URL-safe token
    starts with '-' one time in 64, and as a separate word argparse then took it for an option
    (``--api-key: expected one argument``); the replica never started, nor did its restarts,
    which reuse the launch's key (a CI run of the Ray e2e test)."""
    return [
        sys.executable,
        *("-m", "sloserve.launch_server", "--backend", "sglang", *server_argv),
        *("--host", host, "--port", str(port), f"--api-key={api_key}"),
    ]


class ReplicaServerActor:
    """Starts and watches one replica's SGLang server (a threaded actor: ``max_concurrency`` > 1)."""

    def __init__(self, replica_id: int, server_argv: Sequence[str], api_key: str) -> None:
        self.replica_id = replica_id
        self.node = ray.get_runtime_context().get_node_id()
        self.host = ray.util.get_node_ip_address()
        self.port = free_port(self.host)
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"sloserve-ray-replica-{replica_id}-", dir=base))
        self.summary_dir = self.work_dir / "summaries"
        self.summary_dir.mkdir()
        self.log_path = self.work_dir / "server.log"
        self.cmd = replica_command(server_argv, self.host, self.port, api_key)
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.final_log = ""
        self.exited = threading.Event()
        started = threading.Event()
        threading.Thread(target=self._own_server, args=(started,), daemon=True, name="replica-server").start()
        started.wait()
        if self.proc is None:
            raise RuntimeError(f"replica {replica_id}: could not start {' '.join(self.cmd[:6])}...")

    def _own_server(self, started: threading.Event) -> None:
        # A thread of its own waits on the server, so wait_ready and wait_exit see it exit.
        env = {**os.environ, ENV_SUMMARY_DIR: str(self.summary_dir)}
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            reaper_args = [str(self.proc.pid), str(os.getpid()), str(self.work_dir)]
            subprocess.run([sys.executable, "-c", REAPER, *reaper_args], check=False)  # returns once detached
        finally:
            started.set()
        self.exit_code = self.proc.wait()
        self.final_log = self.log_tail()
        self.exited.set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        if self.final_log:
            return self.final_log
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> dict:
        """Until the server's ``/health`` answers 200; where it serves. Raises with its log tail."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.exited.is_set():
                raise RuntimeError(
                    f"replica {self.replica_id}: server exited with {self.exit_code}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"replica {self.replica_id}: server not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return {"url": self.url, "node": self.node, "pid": self.proc.pid, "log": str(self.log_path)}
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(HEALTH_POLL_S)

    def summary(self) -> dict | None:
        """The replica's latest published ReplicaSummary as a dict (None before its first step)."""
        summaries = read_summaries(self.summary_dir)
        if not summaries:
            return None
        data = dataclasses.asdict(next(iter(summaries.values())))
        data["admitted_by_tier"] = dict(data["admitted_by_tier"])
        return data

    def wait_exit(self) -> int:
        """Blocks until the server exits; its exit code."""
        self.exited.wait()
        return int(self.exit_code if self.exit_code is not None else -1)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.exited.wait(timeout_s)
                os.killpg(self.proc.pid, signal.SIGKILL)  # SGLang's children, even when the launcher is gone
            except ProcessLookupError:
                pass
        shutil.rmtree(self.work_dir, ignore_errors=True)
