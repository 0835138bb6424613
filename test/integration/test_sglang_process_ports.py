"""A server whose HTTP port was taken before it could bind (SGLang picks its internal ports after
ours was chosen and released), or whose rank could not bind the port SGLang picked for its
torch.distributed group, is started again on another port instead of hanging until the startup
timeout or failing the suite. Real subprocesses and HTTP: a small stand-in server that fails
exactly as uvicorn (or torch) does on a taken port and otherwise answers /health."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sloserve.sglang.process import BIND_FAILED, DIST_BIND_FAILED, ServerStartError, SglangProcess

STAND_IN = r"""
import http.server, sys, time
port = int(sys.argv[1])
try:
    srv = http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)
except OSError:
    print("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', %d): address already in use" % port, flush=True)
    time.sleep(3600)  # as SGLang does: the process stays, the port never answers
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a):
        pass
srv.RequestHandlerClass = Health
srv.serve_forever()
"""


def stand_in(log_path: Path):
    def launch(port: int) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", STAND_IN, str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return launch


@pytest.fixture
def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_a_taken_port_is_retried_on_another(tmp_path, taken_port):
    launch = stand_in(tmp_path / "s.log")
    srv = SglangProcess("s", launch(taken_port), taken_port, tmp_path / "s.log", tmp_path, relaunch=launch)
    try:
        srv.wait_ready(120)
        assert srv.ready and srv.port != taken_port and srv.port_retries == 1
    finally:
        srv.stop()


def test_without_a_relaunch_the_bind_failure_is_reported_at_once(tmp_path, taken_port):
    launch = stand_in(tmp_path / "s.log")
    srv = SglangProcess("s", launch(taken_port), taken_port, tmp_path / "s.log", tmp_path)
    try:
        while BIND_FAILED not in (tmp_path / "s.log").read_bytes():  # the stand-in has said so
            assert srv.alive()
            time.sleep(0.05)
        with pytest.raises(ServerStartError, match=f"could not bind port {taken_port}"):
            srv.wait_ready(3600)  # not a timeout: the log says why
        assert srv.alive()  # it hangs on, as SGLang does; only stop() ends it
    finally:
        srv.stop()
    assert not srv.alive()


DIST_STAND_IN = r"""
import http.server, os, sys
port, marker = int(sys.argv[1]), sys.argv[2]
if not os.path.exists(marker):  # the first start: a rank's process group finds its port taken
    open(marker, "w").close()
    print("torch.distributed.DistNetworkError: The server socket has failed to listen on any local "
          "network address. port: 23013, useIpv6: false, code: -98, name: EADDRINUSE, message: "
          "address already in use", flush=True)
    print("Traceback (most recent call last):\n" + "  EOFError\n" * 400, flush=True)  # a long tail follows
    sys.exit(1)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_a_rank_that_could_not_bind_its_group_port_is_retried(tmp_path):
    """SGLang exits when a data-parallel rank's torch.distributed port was taken (seen in CI with
    the e2e servers starting side by side): relaunched on another port, it serves. Control:
    without a relaunch the failure names the bind, not a bare exit code."""
    log = tmp_path / "s.log"

    def launch(port: int) -> subprocess.Popen:
        with open(log, "wb") as fh:
            return subprocess.Popen(
                [sys.executable, "-c", DIST_STAND_IN, str(port), str(tmp_path / "failed-once")],
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    first_port = 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        first_port = sock.getsockname()[1]
    srv = SglangProcess("s", launch(first_port), first_port, log, tmp_path, relaunch=launch)
    try:
        srv.wait_ready(120)
        assert srv.ready and srv.port_retries == 1
    finally:
        srv.stop()
    (tmp_path / "failed-once").unlink()
    once = SglangProcess("s", launch(first_port), first_port, log, tmp_path)
    try:
        once.proc.wait(60)
        assert DIST_BIND_FAILED in log.read_bytes()
        with pytest.raises(ServerStartError, match="could not bind port"):
            once.wait_ready(3600)
    finally:
        once.stop()
