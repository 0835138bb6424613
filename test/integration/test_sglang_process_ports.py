"""A server whose HTTP port was taken before it could bind (SGLang picks its internal ports after
ours was chosen and released) is started again on another port instead of hanging until the
startup timeout. Real subprocesses and HTTP: a small stand-in server that fails exactly as
uvicorn does on a taken port and otherwise answers /health."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sloserve.sglang.process import BIND_FAILED, ServerStartError, SglangProcess

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
