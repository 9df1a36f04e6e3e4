"""TLS and mutual TLS on the MLLP listener with real certificates (trustme), and the MLLP client over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from passerelle.adapters.mllp_client import AckConnectionError, MllpClient, RetryPolicy
from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
from passerelle.observability.audit import AuditRecord, AuditTrail
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_memory import MemoryAuditStore
from tests.integration.test_mllp_server import FakeIntake, Metrics, msg
from tests.support.mllp_peer import exchange, msa

NO_RETRY = RetryPolicy(attempts=1, deadline=5, initial=0.01, max_wait=0.01, jitter=0)


@dataclass
class Pki:
    ca: trustme.CA
    other_ca: trustme.CA
    server_cert: Path
    server_key: Path
    client_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    other = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="passerelle.test")
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    (d / "server.pem").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return Pki(ca, other, d / "server.pem", d / "server.key", d / "ca.pem")


def client_ctx(pki: Pki, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki.ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def dn(cert: trustme.LeafCert) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).subject.rfc4514_string()


def fingerprint(cert: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


async def start_tls(pki: Pki, metrics: Metrics, audit: AuditTrail | None = None, **tls: object) -> MllpServer:
    settings = MllpSettings.model_validate(
        {
            "port": 0,
            "tls": {
                "enabled": True,
                "cert_file": pki.server_cert,
                "key_file": pki.server_key,
                "handshake_timeout": 2,
                **tls,
            },
        }
    )
    srv = MllpServer(settings, FakeIntake(), metrics=metrics, audit=audit)
    await srv.start()
    return srv


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until ``condition()`` holds (the server counts a refusal after the client has seen it)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def legacy_client_ctx(pki: Pki, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """A TLS 1.0/1.1 client that really sends its ClientHello: under OpenSSL 3 the default security level
    leaves such a client no cipher, and it fails on its side before writing a byte (``NO_CIPHERS_AVAILABLE``)."""
    ctx = client_ctx(pki, cert)
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[tuple[MllpServer, Metrics]]:
    metrics = Metrics()
    srv = await start_tls(pki, metrics)
    yield srv, metrics
    await srv.stop(1)


async def roundtrip(port: int, ctx: ssl.SSLContext, ctrl: str) -> tuple[str, str]:
    [reply] = await exchange(port, [msg(ctrl)], ssl_context=ctx)
    return msa(reply)


async def test_tls_roundtrip(pki: Pki, tls_server: tuple[MllpServer, Metrics]) -> None:
    srv, _ = tls_server
    assert await roundtrip(srv.port, client_ctx(pki), "T1") == ("AA", "T1")


async def test_plaintext_client_on_tls_port_gets_nothing(pki: Pki, tls_server: tuple[MllpServer, Metrics]) -> None:
    srv, metrics = tls_server
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    w.write(frame(msg("PLAIN")))
    async with asyncio.timeout(5):
        try:
            data = await r.read()
        except ConnectionResetError:
            data = b""
    assert b"MSA" not in data
    await until(lambda: metrics.c["refused:tls_not_tls"] == 1)
    w.close()


async def test_tls_1_1_client_refused(pki: Pki, tls_server: tuple[MllpServer, Metrics]) -> None:
    """The server refuses a TLS 1.1 ClientHello (counted ``protocol_version``): the client must be allowed
    to send one (:func:`legacy_client_ctx`), else the test would only show OpenSSL 3 refusing on the
    client's side while the server sees a connection close without a byte."""
    srv, metrics = tls_server
    with pytest.raises((ssl.SSLError, OSError)):  # the server's alert, or the connection closed under it
        await roundtrip(srv.port, legacy_client_ctx(pki), "OLD")
    await until(lambda: metrics.c["refused:tls_protocol_version"] == 1)


async def test_mllp_client_over_tls(pki: Pki, tls_server: tuple[MllpServer, Metrics]) -> None:
    srv, _ = tls_server
    client = MllpClient("127.0.0.1", srv.port, ssl_context=client_ctx(pki), server_hostname="localhost", retry=NO_RETRY)
    result = await client.send(msg("ZAM1"))
    assert (result.code, result.control_id) == ("AA", "ZAM1")


async def test_mllp_client_tls_to_untrusted_server_fails_typed(
    pki: Pki, tls_server: tuple[MllpServer, Metrics]
) -> None:
    srv, _ = tls_server
    ctx = ssl.create_default_context()
    pki.other_ca.configure_trust(ctx)
    client = MllpClient("127.0.0.1", srv.port, ssl_context=ctx, server_hostname="localhost", retry=NO_RETRY)
    with pytest.raises(AckConnectionError):
        await client.send(msg("ZAM2"))


# --- mutual TLS ----------------------------------------------------------------------------------


async def test_mtls_subject_allow_list(pki: Pki) -> None:
    metrics = Metrics()
    srv = await start_tls(
        pki,
        metrics,
        require_client_cert=True,
        client_ca_file=pki.client_ca,
        allowed_client_subjects=["lis.example.fr"],
    )
    try:
        good = pki.ca.issue_cert("lis.example.fr", common_name="lis.example.fr")
        assert await roundtrip(srv.port, client_ctx(pki, good), "M1") == ("AA", "M1")

        stranger = pki.ca.issue_cert("ris.example.fr", common_name="ris.example.fr")  # right CA, not listed
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)):
            await roundtrip(srv.port, client_ctx(pki, stranger), "M2")

        foreign = pki.other_ca.issue_cert("lis.example.fr", common_name="lis.example.fr")  # other CA
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)):
            await roundtrip(srv.port, client_ctx(pki, foreign), "M3")

        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)):
            await roundtrip(srv.port, client_ctx(pki), "M4")  # no client certificate

        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        expired = pki.ca.issue_cert(
            "lis.example.fr",
            common_name="lis.example.fr",
            not_before=past - dt.timedelta(days=1),
            not_after=past,
        )
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)):
            await roundtrip(srv.port, client_ctx(pki, expired), "M5")
        await until(lambda: metrics.c["refused:tls_certificate_expired"] == 1)
        assert metrics.c["refused:tls_not_allowed"] == 1  # the stranger: verified chain, not on the list
        assert metrics.c["refused:tls_certificate_untrusted"] == 1  # other CA
        assert metrics.c["refused:tls_no_certificate"] == 1
    finally:
        await srv.stop(1)


async def test_mtls_fingerprint_and_dn_allow_list(pki: Pki) -> None:
    pinned = pki.ca.issue_cert("lab1.example.fr", common_name="lab1.example.fr")
    by_dn = pki.ca.issue_cert("lab2.example.fr", common_name="lab2.example.fr", organization_name="Labo Deux")
    metrics = Metrics()
    srv = await start_tls(
        pki,
        metrics,
        require_client_cert=True,
        client_ca_file=pki.client_ca,
        allowed_client_fingerprints=[fingerprint(pinned)],
        allowed_client_subjects=[dn(by_dn).replace(",", ", ")],
    )
    try:
        assert await roundtrip(srv.port, client_ctx(pki, pinned), "F1") == ("AA", "F1")
        assert await roundtrip(srv.port, client_ctx(pki, by_dn), "F2") == ("AA", "F2")
        other = pki.ca.issue_cert("lab3.example.fr", common_name="lab3.example.fr")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)):
            await roundtrip(srv.port, client_ctx(pki, other), "F3")
    finally:
        await srv.stop(1)


def test_mtls_without_allow_list_fails_fast(pki: Pki) -> None:
    with pytest.raises(ValueError, match="allowed_client_subjects"):
        MllpSettings.model_validate(
            {
                "tls": {
                    "enabled": True,
                    "cert_file": pki.server_cert,
                    "key_file": pki.server_key,
                    "require_client_cert": True,
                    "client_ca_file": pki.client_ca,
                }
            }
        )


def blocking_handshake(port: int, ctx: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


def refusal_totals(records: list[AuditRecord]) -> dict[tuple[str, str], int]:
    """Refusals per (actor, class) from the coalesced records: per minute, its ``count=N`` record when
    there is one, else its ``first`` record alone (robust to the test crossing a minute)."""
    minutes: dict[tuple[str, str, str], int] = {}
    for r in records:
        assert r.reason == "tls-refused" and r.action.value == "admin" and r.outcome.value == "failure"
        cls, what, _in, _minute, at, *_ = r.detail.split(" ")
        key = (r.actor, cls, at)
        minutes[key] = max(minutes.get(key, 0), int(what.removeprefix("count=")) if what != "first" else 1)
    totals: dict[tuple[str, str], int] = {}
    for (actor, cls, _at), n in minutes.items():
        totals[actor, cls] = totals.get((actor, cls), 0) + n
    return totals


async def test_every_refused_handshake_is_audited_by_class_with_a_fingerprint_never_a_subject(pki: Pki) -> None:
    """B-MLLP-14: each class a real client can provoke; repeats coalesced; a bare connect/close not audited."""
    store, metrics = MemoryAuditStore(), Metrics()
    srv = await start_tls(pki, metrics, AuditTrail(store), require_client_cert=True, client_ca_file=pki.client_ca,
                          allowed_client_subjects=["lis.example.fr"], handshake_timeout=0.5)  # fmt: skip
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    stranger = pki.ca.issue_cert("ris.example.fr", common_name="ris.example.fr")
    foreign = pki.other_ca.issue_cert("lis.example.fr", common_name="lis.example.fr")
    expired = pki.ca.issue_cert("lis.example.fr", common_name="lis.example.fr", not_before=past - dt.timedelta(days=1),
                                not_after=past)  # fmt: skip
    distrustful = ssl.create_default_context()  # trusts another CA: rejects the server's certificate
    pki.other_ca.configure_trust(distrustful)
    good = pki.ca.issue_cert("lis.example.fr", common_name="lis.example.fr")
    refused = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)
    try:
        for _ in range(3):  # a scanner: plain MLLP on the TLS port
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(frame(msg("PLAIN")))
            with contextlib.suppress(ConnectionError):
                await r.read()
            w.close()
        for ctx in (legacy_client_ctx(pki, good), client_ctx(pki), client_ctx(pki, foreign),
                    client_ctx(pki, expired), client_ctx(pki, stranger)):  # fmt: skip
            with pytest.raises(refused):
                await roundtrip(srv.port, ctx, "X")
        with pytest.raises(ssl.SSLCertVerificationError):  # a blocking socket sends its alert (asyncio's does not)
            await asyncio.to_thread(blocking_handshake, srv.port, distrustful)
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)  # silent until the handshake deadline
        assert await r.read() == b""
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)  # a probe: connect, close, no byte
        w.close()
        await until(lambda: metrics.c["refused:tls_disconnected"] == 1 and metrics.c["refused:tls_handshake"] == 1)
        assert await roundtrip(srv.port, client_ctx(pki, good), "OK") == ("AA", "OK")
    finally:
        await srv.stop(1)  # writes the counts of the minute still open
    records = await store.query(AuditQuery(limit=1000))
    assert refusal_totals(records) == {
        ("mllp:127.0.0.1", "not_tls"): 3,
        ("mllp:127.0.0.1", "protocol_version"): 1,
        ("mllp:127.0.0.1", "no_certificate"): 1,
        ("mllp:127.0.0.1", "certificate_untrusted"): 1,
        ("mllp:127.0.0.1", "certificate_expired"): 1,
        ("mllp:127.0.0.1", "not_allowed"): 1,
        ("mllp:127.0.0.1", "handshake"): 1,
        ("mllp:127.0.0.1", "timeout"): 1,
    }
    assert len([r for r in records if r.detail.startswith("not_tls")]) <= 4  # coalesced, not one per attempt
    [not_allowed] = [r for r in records if r.detail.startswith("not_allowed")]
    assert not_allowed.detail.endswith(f" sha256={fingerprint(stranger)}")
    assert not any("ris.example.fr" in r.detail or "lis.example.fr" in r.detail for r in records)
    assert sum(v for k, v in metrics.c.items() if k.startswith("refused:tls_")) == 11
