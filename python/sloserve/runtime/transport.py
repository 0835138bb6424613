"""How the server's processes reach each other over ZMQ.

On one host everything is ``ipc://`` in a private 0700 directory: the file system is the access
control. Across nodes (the Ray deployment, docs/routing.md "Multi-node") the same messages go over
``tcp://`` with CurveZMQ: every bound socket is a CURVE server, every connecting socket a CURVE
client, and a ZAP handler in each binding process admits only the client key generated for this
server launch. Both key pairs are made fresh at launch and reach the replicas only inside their
Ray actor arguments, so a peer that can reach the ports but was not launched by this server can
neither read nor inject a frame (the handshake fails before any message is delivered).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("sloserve.transport")
ZAP_DOMAIN = "sloserve"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for an address that must be known before its owner binds)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Transport:
    """CURVE keys (Z85 bytes) for tcp:// sockets; empty keys = plain ipc:// on one host."""

    server_public: bytes = b""
    server_secret: bytes = b""
    client_public: bytes = b""
    client_secret: bytes = b""

    @classmethod
    def curve(cls) -> "Transport":
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public, server_secret, client_public, client_secret)

    @property
    def secure(self) -> bool:
        return bool(self.server_secret)

    def bind(self, sock: zmq.Socket, addr: str) -> str:
        """Bind ``addr`` (``tcp://HOST:*`` picks a free port); returns the address peers connect to."""
        if addr.startswith("tcp://"):
            self._require_secure(addr)
            sock.curve_server = True
            sock.curve_secretkey = self.server_secret
            sock.zap_domain = ZAP_DOMAIN.encode()
            if addr.endswith(":*"):
                host = addr[: -len(":*")]
                return f"{host}:{sock.bind_to_random_port(host)}"
        sock.bind(addr)
        return addr

    def connect(self, sock: zmq.Socket, addr: str) -> None:
        if addr.startswith("tcp://"):
            self._require_secure(addr)
            sock.curve_serverkey = self.server_public
            sock.curve_publickey = self.client_public
            sock.curve_secretkey = self.client_secret
        sock.connect(addr)

    def authenticator(self, ctx: zmq.Context) -> ThreadAuthenticator | None:
        """Start the ZAP handler of a process that binds tcp:// sockets (None on ipc://).

        ``ctx`` must be the context of the bound sockets (ZAP is per context); an asyncio
        context is passed as ``zmq.Context.shadow(ctx.underlying)``.
        """
        if not self.secure:
            return None
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("sloserve.transport.zap"))
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_OnlyKey(self.client_public))
        return auth

    def _require_secure(self, addr: str) -> None:
        if not self.secure:  # never open an unauthenticated port by accident
            raise ValueError(f"{addr}: tcp:// needs CURVE keys (Transport.curve())")


class _OnlyKey:
    """ZAP credentials provider: admits exactly one client public key."""

    def __init__(self, client_public: bytes) -> None:
        self.allowed = client_public  # pyzmq hands the callback the Z85 form, as generated

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self.allowed:
            return True
        log.warning("refused a ZMQ connection with an unknown CURVE key (domain %s)", domain)
        return False
