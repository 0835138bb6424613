"""Start a real SGLang server (plain, or with the sloserve plugin) as a child process.

For benchmarks and end-to-end tests: the server gets a free loopback port and its own process
group (stopped as a whole), dies with its parent (``PR_SET_PDEATHSIG``), and runs SGLang's CPU
engine through the project's CPU mode when asked (``device="cpu"``). No sglang import here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from sloserve.runtime.transport import free_port
from sloserve.sglang import cpu_mode
from sloserve.sglang.summaries import ENV_SUMMARY_DIR, read_stats


class ServerStartError(RuntimeError):
    pass


BIND_FAILED = b"error while attempting to bind on address"  # uvicorn's words when the port is taken
# torch.distributed's, when the port SGLang picked for a rank's process group was taken between
# its check and its bind (servers starting side by side, as the e2e suite's do): the server exits
DIST_BIND_FAILED = b"name: EADDRINUSE"


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class SglangProcess:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    summary_dir: Path
    ready: bool = field(default=False)
    # starts the same server on another port: SGLang picks its internal ports after ours was
    # chosen and released, and can take it (the HTTP bind then fails and the process hangs on)
    relaunch: Callable[[int], subprocess.Popen] | None = field(default=None, repr=False)
    port_retries: int = 2

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> "SglangProcess":
        """Until ``/health`` answers 200 (SGLang's warm-up request is done by then)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            if self._port_taken():
                if self.relaunch is None or self.port_retries <= 0:
                    raise ServerStartError(
                        f"{self.name} server could not bind port {self.port} (or an internal one):\n{self.log_tail()}"
                    )
                self.stop()
                self.port_retries -= 1
                self.port = free_port()
                self.proc = self.relaunch(self.port)
                continue
            if not self.alive():
                raise ServerStartError(f"{self.name} server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name} server not ready after {timeout_s:.0f}s:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    self.ready = resp.status == 200
            except (OSError, urllib.error.URLError):
                pass
            if not self.ready:
                time.sleep(1.0)
        return self

    def _port_taken(self) -> bool:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(fh.seek(0, os.SEEK_END) - 16384, 0))  # a traceback follows the line
                tail = fh.read()
            return BIND_FAILED in tail or DIST_BIND_FAILED in tail
        except OSError:
            return False

    def plan_stats(self) -> dict[int, dict]:
        """The plugin's per-iteration planning time (``PlanTimer.stats``), its batch-time
        correction and the planner's decision counters (``reasons``), per replica."""
        return read_stats(self.summary_dir)

    def stop(self, timeout_s: float = 30.0) -> None:
        try:
            if self.alive():
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            os.killpg(self.proc.pid, signal.SIGKILL)  # SGLang's children too
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def start(
    name: str,
    model_dir: str | Path,
    log_dir: str | Path,
    extra_args: Sequence[str] = (),
    plugin: bool = True,
    device: str = "cpu",
    env_overrides: Mapping[str, str] | None = None,
) -> SglangProcess:
    """Start SGLang (``plugin=False``) or sloserve's launcher on ``model_dir``; returns at once."""
    log_dir = Path(log_dir)
    port = free_port()
    args = ["--model-path", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", device, *extra_args]
    env = {**os.environ, **(env_overrides or {})}
    summary_dir = log_dir / f"summaries-{name}"
    summary_dir.mkdir(parents=True, exist_ok=True)
    env[ENV_SUMMARY_DIR] = str(summary_dir)
    if plugin:
        cmd = [sys.executable, "-m", "sloserve.launch_server", "--backend", "sglang", *args]
    elif device == "cpu":
        cmd = [sys.executable, "-m", "sglang.launch_server", *cpu_mode.with_cpu_defaults(args)]
        cpu_mode.activate(env, args)
    else:
        cmd = [sys.executable, "-m", "sglang.launch_server", *args]
    log_path = log_dir / f"{name}.log"

    def launch(on_port: int) -> subprocess.Popen:
        argv = [str(on_port) if i and cmd[i - 1] == "--port" else a for i, a in enumerate(cmd)]
        with open(log_path, "wb") as log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )

    return SglangProcess(name, launch(port), port, log_path, summary_dir, relaunch=launch)
