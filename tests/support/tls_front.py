"""A TLS front end on 127.0.0.1 (port 0), as a platform's web server or load balancer terminates mutual TLS
in front of its service: OpenSSL through the standard library's blocking ``ssl`` module, in threads.

Unlike asyncio's TLS (uvicorn, the test servers elsewhere), which closes a refused handshake without
sending its alert, it sends the alert that says why: "unknown CA" for a client certificate from another
CA, "certificate required" (TLS 1.3) or "handshake failure" (TLS 1.2) when none came, "certificate
expired"... It then closes the way Apache httpd does (lingering: stops writing, reads what the client
still sends, closes), so that the alert is not lost to a reset. An accepted connection is relayed to
``upstream`` (a plain HTTP server: the test receiver, the sandbox). :meth:`TlsFront.refusals` gives the
front's own reason for each refused handshake (OpenSSL's, as the server saw it), once it is recorded (the
client may read the alert before the front's thread records it). Shares no code with the gateway.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TlsFront:
    port: int = 0
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refusals(self, at_least: int = 1, timeout: float = 10.0) -> list[str]:
        """The reasons of the refused handshakes, once there are ``at_least`` of them (or ``timeout`` passed)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.refused) >= at_least, timeout)
            return list(self.refused)

    def record(self, reason: str) -> None:
        with self._changed:
            self.refused.append(reason)
            self._changed.notify_all()


def server_context(
    cert: Path, key: Path | None, client_ca: Path, version: ssl.TLSVersion, *, ciphers: str = ""
) -> ssl.SSLContext:
    """TLS ``version`` only, requiring a client certificate issued by ``client_ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = version
    context.load_cert_chain(str(cert), str(key) if key else None)
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    if ciphers:
        context.set_ciphers(ciphers)
    return context


@contextlib.contextmanager
def tls_front(context: ssl.SSLContext, upstream: int | None = None) -> Iterator[TlsFront]:
    """Serve ``context`` on 127.0.0.1 port 0, relaying accepted connections to 127.0.0.1:``upstream``."""
    listener = socket.create_server(("127.0.0.1", 0))
    front = TlsFront(port=listener.getsockname()[1])

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            threading.Thread(target=_serve, args=(front, context, raw, upstream), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        listener.close()
        thread.join(10)


def _serve(front: TlsFront, context: ssl.SSLContext, raw: socket.socket, upstream: int | None) -> None:
    raw.settimeout(10)
    tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        front.record(str(getattr(exc, "reason", None) or type(exc).__name__))
        _linger(tls)
        return
    front.accepted += 1
    with tls:
        if upstream is not None:
            with socket.create_connection(("127.0.0.1", upstream), timeout=10) as back:
                _relay(tls, back)


def _linger(tls: ssl.SSLSocket) -> None:
    """Stop writing (the alert is out), read whatever the client still sends until it closes, close."""
    with contextlib.suppress(OSError), tls:
        tls.shutdown(socket.SHUT_WR)  # drops the TLS layer: what follows reads the raw socket
        while tls.recv(65536):
            pass


def _relay(tls: ssl.SSLSocket, back: socket.socket) -> None:
    """Bytes both ways until either side closes (one thread: an SSL object is not shared between threads)."""
    with contextlib.suppress(OSError):
        while True:
            if not tls.pending():
                readable, _, _ = select.select([tls, back], [], [], 10)
                if not readable:
                    return
            else:
                readable = [tls]
            if tls in readable:
                data = tls.recv(65536)
                if not data:
                    return
                back.sendall(data)
            if back in readable:
                data = back.recv(65536)
                if not data:
                    return
                tls.sendall(data)
