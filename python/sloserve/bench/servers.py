"""Launch the embedded runtime (``python -m sloserve.launch_server``) as a subprocess.

Used by ``--policy``: each policy gets its own server on a free loopback port, in its own
process group, killed (SIGTERM, then SIGKILL of the group) when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator

from sloserve.bench.client import BenchError
from sloserve.runtime.transport import free_port


def _stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the router and scheduler children too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def embedded_server(
    policy: str, server_args: str = "", model: str | None = None, timeout_s: float = 90.0
) -> Iterator[str]:
    """Start a server with ``--policy policy``; yields its base URL; always stops it."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sloserve.launch_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        policy,
        *shlex.split(server_args),
    ]
    if model and "--model" not in cmd:
        cmd += ["--model", model]
    log = tempfile.NamedTemporaryFile(prefix=f"sloserve-bench-{policy}-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    started = False
    try:
        _wait_up(proc, url, log.name, timeout_s)
        started = True
        yield url
    finally:
        _stop(proc)
        log.close()
        if started:  # only a server that failed to start keeps its log: the error names it
            os.unlink(log.name)


def _wait_up(proc: subprocess.Popen, url: str, log_path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = open(log_path, errors="replace").read()[-600:].strip().splitlines()
            raise BenchError(f"server exited with {proc.returncode}: {tail[-1] if tail else ''} (log {log_path})")
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"server did not come up in {timeout_s:g}s (log {log_path})")
