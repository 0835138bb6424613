"""CurveZMQ between the server's processes across nodes: only this launch's keys get a frame through."""

from __future__ import annotations

import pytest
import zmq

from sloserve.runtime.transport import Transport

HANG_MS = 60_000  # a hang guard: the good frame arrives long before


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def push(ctx, addr: str, keys: Transport | None, payload: bytes) -> zmq.Socket:
    """Returns the socket: the caller keeps it open until the frame is through (LINGER 0)."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is None:
        sock.connect(addr)  # no CURVE at all
    else:
        keys.connect(sock, addr)
    sock.send(payload)
    return sock


def stranger_client(t: Transport) -> tuple[bytes, bytes]:
    return t.client_public, t.client_secret


def test_only_the_launch_client_key_is_admitted(ctx):
    t = Transport.curve()
    auth = t.authenticator(ctx)
    pull = ctx.socket(zmq.PULL)
    addr = t.bind(pull, "tcp://127.0.0.1:*")
    assert addr.startswith("tcp://127.0.0.1:") and not addr.endswith("*")
    stranger = Transport.curve()  # a CURVE client of another launch
    senders = [
        push(ctx, addr, None, b"plain"),
        # knows our server key, but its client key is not this launch's: refused by the ZAP handler
        push(ctx, addr, Transport(t.server_public, stranger.server_secret, *stranger_client(stranger)), b"key"),
        push(ctx, addr, stranger, b"wrong server key"),
        push(ctx, addr, t, b"ours"),
    ]
    assert pull.poll(HANG_MS) and pull.recv() == b"ours"
    # the refused peers' frames never arrive: ours was sent last, and ZMQ delivers each
    # connection in order, so anything admitted would be here by now or shortly after
    assert not pull.poll(300)
    for sock in senders:
        sock.close(0)
    auth.stop()


def test_tcp_without_keys_is_refused_and_ipc_needs_none(ctx, tmp_path):
    with pytest.raises(ValueError, match="CURVE"):
        Transport().bind(ctx.socket(zmq.PULL), "tcp://127.0.0.1:*")
    with pytest.raises(ValueError, match="CURVE"):
        Transport().connect(ctx.socket(zmq.PUSH), "tcp://127.0.0.1:5")
    assert Transport().authenticator(ctx) is None
    pull = ctx.socket(zmq.PULL)
    addr = Transport().bind(pull, f"ipc://{tmp_path}/s")
    sender = push(ctx, addr, Transport(), b"local")  # kept open until the frame is through
    assert pull.poll(HANG_MS) and pull.recv() == b"local"
    sender.close(0)
