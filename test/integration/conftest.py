"""Fixtures that run the real server (``python -m sloserve.launch_server``) as a subprocess.

Each server gets a free loopback port and its own process group; teardown sends SIGTERM,
waits, then SIGKILLs the whole group, and fails the test if any process of the group or the
server's ipc socket directory survived.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sloserve.runtime.transport import free_port


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    port: int
    log_path: Path
    ipc_dir: str | None = None
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str, timeout: float = 10.0) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait; SIGKILL the group if needed. Returns the server's exit code."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(60)  # after SIGKILL: a hang guard for a loaded CI machine
        deadline = time.monotonic() + 5
        while group_pids(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = group_pids(self.proc.pid)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"orphan processes after shutdown: {leftovers}\n{self.log_tail()}"
        if self.ipc_dir:
            assert not os.path.exists(self.ipc_dir), f"ipc socket dir {self.ipc_dir} left behind"
        return self.proc.returncode


def _die_with_parent() -> None:
    """In the server child: SIGTERM it if pytest itself dies (killed by a timeout, Ctrl-C)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def ipc_dir_of(pid: int) -> str | None:
    """The server's ipc socket dir (``<tmp>/sloserve-ipc-<pid>-*``; not exposed over HTTP)."""
    found = glob.glob(os.path.join(tempfile.gettempdir(), f"sloserve-ipc-{pid}-*"))
    return found[0] if found else None


def start_server(args: list[str], log_dir: Path, timeout_s: float = 60.0) -> ServerHandle:
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "sloserve.launch_server", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
    handle = ServerHandle(proc, port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            handle.stop()
            raise RuntimeError(f"server exited with {proc.returncode} during start-up:\n{handle.log_tail()}")
        try:
            handle.get_json("/health", timeout=2)
            handle.ipc_dir = ipc_dir_of(proc.pid)
            return handle
        except OSError:
            time.sleep(0.1)
    handle.stop()
    raise RuntimeError(f"server did not come up in {timeout_s}s:\n{handle.log_tail()}")


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory):
    """``start(*cli_args) -> ServerHandle``; every server started is stopped at module end."""
    handles: list[ServerHandle] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(*args: str, timeout_s: float = 60.0) -> ServerHandle:
        handle = start_server(list(args), log_dir, timeout_s)
        handles.append(handle)
        return handle

    yield start
    errors = []
    for h in handles:
        try:
            h.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)
