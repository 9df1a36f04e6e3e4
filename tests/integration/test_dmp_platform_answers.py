"""DmpSpace against what a real platform, or a proxy in front of it, answers and a sandbox never does:
a proxy's HTML page, a redirect, an answer to another message, an answer that never ends, a server
certificate the configured trust does not know, a TLS front end refusing our client certificate with its
alert; and the VIHF signing library's DEBUG log, which quotes the INS. Each runs against the independent
receiver on a real socket (tests/support/dmp_receiver.py), behind an OpenSSL TLS front end for the alerts
(tests/support/tls_front.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from passerelle.adapters.dmp.client import DmpSpace
from passerelle.adapters.dmp.devpki import DevPki, write_dev_pki
from passerelle.adapters.mhd import MhdSpace, SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, configuration_error
from passerelle.errors import (
    RemoteAmbiguousError,
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
    RemoteUntrustedCertificateError,
)
from passerelle.observability.logs import setup_logging
from tests.support.dmp_receiver import DmpReceiver, running_receiver
from tests.support.dmp_stack import sample_document, space_settings
from tests.support.tls_front import TlsFront, server_context, tls_front

pytestmark = pytest.mark.corpus


@dataclass
class Stack:
    receiver: DmpReceiver
    space: DmpSpace
    observed: list[tuple[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def dmp_stack(
    corpus_dir: Path, pki: DevPki, *, server: DevPki | None = None, **extra: object
) -> AsyncIterator[Stack]:
    """The receiver over mutual TLS with ``server``'s certificate (default: one ``pki`` issued), and a
    DmpSpace trusting ``pki``'s CA."""
    served_by = server or pki
    async with running_receiver(
        corpus_dir / "schemas" / "xds-ebrim-3.0", pki.ca, tls=(served_by.server_cert, served_by.server_key)
    ) as receiver:
        observed: list[tuple[str, str]] = []
        space = DmpSpace(space_settings(pki, receiver.base_url, **extra), observe=lambda t, o: observed.append((t, o)))
        try:
            yield Stack(receiver, space, observed)
        finally:
            await space.aclose()


@contextlib.asynccontextmanager
async def fronted_stack(corpus_dir: Path, pki: DevPki, front: ssl.SSLContext) -> AsyncIterator[tuple[Stack, TlsFront]]:
    """The receiver (plain HTTP) behind an OpenSSL TLS front end with the ``front`` context, and a DmpSpace
    (mutual TLS 1.2 with ``pki``'s AUTH_CLI certificate) calling the front."""
    async with running_receiver(corpus_dir / "schemas" / "xds-ebrim-3.0", pki.ca) as receiver:
        with tls_front(front, upstream=httpx.URL(receiver.base_url).port) as served:
            observed: list[tuple[str, str]] = []
            url = f"https://{served.host}/si-dmp-server/v2/services"
            space = DmpSpace(space_settings(pki, url), observe=lambda t, o: observed.append((t, o)))
            try:
                yield Stack(receiver, space, observed), served
            finally:
                await space.aclose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return write_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def stack(corpus_dir: Path, pki: DevPki) -> AsyncIterator[Stack]:
    async with dmp_stack(corpus_dir, pki) as built:
        yield built


document = sample_document


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Puts the logging configuration back after a test that ran the gateway's own setup."""
    root = logging.getLogger()
    loggers = [one for one in logging.root.manager.loggerDict.values() if isinstance(one, logging.Logger)]
    saved = (root.handlers[:], root.level, {one: one.level for one in loggers})
    try:
        yield
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for one, value in levels.items():
            one.setLevel(value)


async def test_signing_a_vihf_at_debug_level_logs_no_ins(
    stack: Stack, restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG")  # the gateway's own setup, writing to the captured stderr
    doc = document(11)
    logging.getLogger("signxml").debug("canary %s", doc.patient.ins)  # what signxml does with the XML it signs
    await stack.space.status(doc.patient, doc.author.person_id)
    assert (await stack.space.provide(doc)).outcome is DeliveryOutcome.CREATED
    err = capsys.readouterr().err
    assert '"logger": "passerelle.adapters.dmp' in err  # the gateway's own DEBUG/INFO lines do come through
    assert doc.patient.ins not in err and doc.patient.ins[:13] not in err
    assert stack.receiver.problems == []


@pytest.mark.parametrize("status", [200, 502])
async def test_a_proxy_html_page_is_a_transport_failure_saying_what_came_back(stack: Stack, status: int) -> None:
    stack.receiver.plan = [f"html:{status}"]
    with pytest.raises(RemoteTransientError) as failed:
        await stack.space.provide(document(12))
    error = failed.value
    assert type(error) is RemoteTransientError  # not an ambiguous answer, not a parse error
    assert f"not a SOAP answer (HTTP {status} text/html)" in error.message
    assert "Bad Gateway" not in error.message and "upstream" not in error.message  # never the body
    assert error.status == status and stack.observed == [("ITI-41", "retry")]
    assert (await stack.space.provide(document(12))).outcome is DeliveryOutcome.CREATED  # the retry delivers


async def test_an_answer_relating_to_another_message_is_refused_before_its_fault_is_read(stack: Stack) -> None:
    stack.receiver.plan = ["elsewhere:sender_fault:DMPClosed", "elsewhere:success"]
    doc = document(13)
    for _ in range(2):  # neither the refusal nor the success of another message is ours
        with pytest.raises(RemoteAmbiguousError) as ambiguous:
            await stack.space.provide(doc)
        assert "relates to another message" in ambiguous.value.message
    assert not isinstance(ambiguous.value, RemoteRejectedError)
    assert (await stack.space.provide(doc)).outcome is DeliveryOutcome.CREATED


async def test_a_redirect_is_not_followed_to_another_host(stack: Stack, corpus_dir: Path, pki: DevPki) -> None:
    async with running_receiver(corpus_dir / "schemas" / "xds-ebrim-3.0", pki.ca) as elsewhere:
        stack.receiver.plan = [f"redirect:307:{elsewhere.base_url}/repository"]
        with pytest.raises(RemoteEndpointError) as failed:  # retried, and space.url named as the suspect
            await stack.space.provide(document(14))
        assert elsewhere.seen == []
    error = failed.value
    assert "redirect not followed (HTTP 307)" in error.message and error.status == 307
    assert configuration_error(error) == "endpoint"  # /readyz and its alert say space.url is wrong


async def test_an_answer_that_never_ends_is_cut_at_the_cap(corpus_dir: Path, pki: DevPki) -> None:
    async with dmp_stack(corpus_dir, pki, max_response_bytes=200_000) as built:
        built.receiver.plan = ["endless"]
        with pytest.raises(RemoteTransientError) as failed:
            await built.space.provide(document(15))
        assert "space.max_response_bytes cap (200000 bytes)" in failed.value.message
        await asyncio.wait_for(built.receiver.cut.wait(), 10)  # the connection was closed, not drained
        assert (await built.space.provide(document(15))).outcome is DeliveryOutcome.CREATED


async def test_an_untrusted_server_certificate_is_told_apart(corpus_dir: Path, pki: DevPki, tmp_path: Path) -> None:
    other = write_dev_pki(tmp_path / "other")  # a server certificate from a CA space.ca_file does not hold
    async with dmp_stack(corpus_dir, pki, server=other) as built:
        with pytest.raises(RemoteUntrustedCertificateError) as untrusted:
            await built.space.provide(document(16))
        assert built.receiver.seen == []  # nothing reached the server
    error = untrusted.value
    assert error.reason == "tls_untrusted" and "space.ca_file" in error.message
    assert isinstance(error, RemoteTransientError)  # retried: the backlog drains once the trust is fixed
    assert built.observed == [("ITI-41", "tls_untrusted")]
    assert configuration_error(error) == "tls_untrusted"


async def test_the_mhd_transport_cuts_an_endless_answer_at_the_same_cap(corpus_dir: Path, pki: DevPki) -> None:
    """The cap lives in the one fetch both transports use: the MHD client POSTing to the same endless server."""
    async with running_receiver(corpus_dir / "schemas" / "xds-ebrim-3.0", pki.ca) as receiver:
        receiver.plan = ["endless"]
        space = MhdSpace(
            SpaceSettings(url=f"{receiver.base_url}/repository", test_environment=True, max_response_bytes=100_000)
        )
        try:
            with pytest.raises(RemoteTransientError) as failed:
                await space.provide(document(17))
        finally:
            await space.aclose()
        assert "space.max_response_bytes cap (100000 bytes)" in failed.value.message
        await asyncio.wait_for(receiver.cut.wait(), 10)


@pytest.mark.parametrize(
    ("trusted", "alert"),
    [("another CA", "unknown CA"), ("a CA of the same name with another key", "decrypt error")],
)
async def test_a_platform_refusing_our_client_certificate_is_a_credential_error(
    corpus_dir: Path, pki: DevPki, tmp_path: Path, trusted: str, alert: str
) -> None:
    """The platform's front end does not trust the CA of our AUTH_CLI certificate (a test certificate
    against production, a CA re-keyed under the same name): its TLS 1.2 alert ends the handshake."""
    if trusted == "another CA":
        ca = tmp_path / "other-ca.pem"
        trustme.CA(organization_name="Another CA").cert_pem.write_to_path(str(ca))
    else:
        ca = write_dev_pki(tmp_path / "other").ca  # the dev PKI's names, new keys
    refusing = server_context(pki.server_cert, pki.server_key, ca, ssl.TLSVersion.TLSv1_2)
    async with fronted_stack(corpus_dir, pki, refusing) as (built, front):
        with pytest.raises(RemoteCredentialError) as refused:
            await built.space.provide(document(18))
        assert built.receiver.seen == [] and front.refusals() == ["CERTIFICATE_VERIFY_FAILED"]
    error = refused.value
    assert f"the server refused the client certificate (TLS alert: {alert})" in error.message
    assert "space.client_cert_file" in error.message and pki.structure_id not in error.message  # no subject
    assert built.observed == [("ITI-41", "credential")]  # counted apart: the credentials alert
    assert configuration_error(error) == "credentials"  # /readyz says so
    # the same credentials through a front that trusts their CA deliver: it was the certificate
    async with fronted_stack(
        corpus_dir, pki, server_context(pki.server_cert, pki.server_key, pki.ca, ssl.TLSVersion.TLSv1_2)
    ) as (built, front):
        assert (await built.space.provide(document(18))).outcome is DeliveryOutcome.CREATED
        assert front.accepted >= 1 and built.receiver.problems == []


async def test_a_handshake_failure_without_a_certificate_alert_stays_a_transport_failure(
    corpus_dir: Path, pki: DevPki
) -> None:
    """A front end with no cipher suite in common with the DMP's four: handshake_failure, not about our
    certificate. Retried as a transport failure, whose text says what the alert may mean."""
    mismatched = server_context(
        pki.server_cert, pki.server_key, pki.ca, ssl.TLSVersion.TLSv1_2, ciphers="AES128-GCM-SHA256"
    )
    async with fronted_stack(corpus_dir, pki, mismatched) as (built, front):
        with pytest.raises(RemoteTransientError) as failed:
            await built.space.provide(document(19))
        assert built.receiver.seen == [] and front.accepted == 0
    error = failed.value
    assert type(error) is RemoteTransientError and configuration_error(error) is None
    assert "TLS alert: handshake failure" in error.message and "cipher" in error.message
    assert built.observed == [("ITI-41", "retry")]


async def test_an_answer_without_relates_to_is_ambiguous_and_the_resend_stores_once(stack: Stack) -> None:
    """The DMP's services answer with RelatesTo = our MessageID: a RegistryResponse without it (a Success
    here, which did store the document) is not shown to be ours. Ambiguous, retried: the resend carries the
    same uniqueId and bytes, and the platform's duplicate check settles it as already stored."""
    stack.receiver.plan = ["anonymous:success"]
    doc = document(20)
    with pytest.raises(RemoteAmbiguousError) as ambiguous:
        await stack.space.provide(doc)
    assert "does not name our message (no RelatesTo)" in ambiguous.value.message
    assert stack.observed == [("ITI-41", "retry")]
    assert (await stack.space.provide(doc)).outcome is DeliveryOutcome.ALREADY_STORED
    assert [d.unique_id for d in stack.receiver.documents()].count(doc.unique_id) == 1  # stored once
    sent = [s.detail["unique_ids"] for s in stack.receiver.seen if s.transaction == "ITI-41"]
    assert len(sent) == 2 and all(doc.unique_id in ids for ids in sent), stack.receiver.transactions()
    assert stack.receiver.problems == []


async def test_a_failure_without_relates_to_is_not_taken_as_a_refusal(stack: Stack) -> None:
    stack.receiver.plan = ["anonymous:failure:XDSUnknownPatientId"]
    doc = document(21)
    with pytest.raises(RemoteAmbiguousError) as ambiguous:
        await stack.space.provide(doc)
    assert not isinstance(ambiguous.value, RemoteRejectedError)  # never final on another request's answer
    assert (await stack.space.provide(doc)).outcome is DeliveryOutcome.CREATED


@pytest.mark.parametrize(
    ("plan", "expected"),
    [("anonymous:sender_fault:DMPClosed", RemoteRejectedError), ("anonymous:receiver_fault", RemoteTransientError)],
)
async def test_a_fault_without_relates_to_is_still_read_as_a_fault(
    stack: Stack, plan: str, expected: type[Exception]
) -> None:
    """A front end may fault before WS-Addressing is read (a missing header, a wrong action): no RelatesTo."""
    stack.receiver.plan = [plan]
    with pytest.raises(expected) as faulted:
        await stack.space.provide(document(22))
    assert not isinstance(faulted.value, RemoteAmbiguousError)
    assert "SOAP fault" in str(faulted.value)
