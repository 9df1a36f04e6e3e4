"""TLS and mutual TLS on the MLLP listener with real certificates (trustme), and the MLLP client over TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from passerelle.adapters.mllp_client import AckConnectionError, MllpClient, RetryPolicy
from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
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


async def start_tls(pki: Pki, metrics: Metrics, **tls: object) -> MllpServer:
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
    srv = MllpServer(settings, FakeIntake(), metrics=metrics)
    await srv.start()
    return srv


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
    await asyncio.sleep(0.05)
    assert metrics.c["refused:tls_handshake"] == 1
    w.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_tls_1_1_client_refused(pki: Pki, tls_server: tuple[MllpServer, Metrics]) -> None:
    srv, _ = tls_server
    ctx = client_ctx(pki)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        await roundtrip(srv.port, ctx, "OLD")


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
        await asyncio.sleep(0.1)
        assert metrics.c["refused:client_cert"] == 1  # the stranger: verified chain, not on the list
        assert metrics.c["refused:tls_handshake"] == 3  # other CA, no cert, expired
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
