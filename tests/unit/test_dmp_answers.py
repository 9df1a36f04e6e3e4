"""Reading the DMP's answers whatever their packaging, and the one error table."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from passerelle.adapters.dmp.envelope import MalformedAnswerError, parse_answer
from passerelle.adapters.dmp.errors import ERROR_TABLE, VERDICTS, fault_error, registry_failure
from passerelle.adapters.dmp.transport import Exchange, Limits, exchange
from passerelle.adapters.space import configuration_error
from passerelle.errors import (
    RemoteAmbiguousError,
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
)
from passerelle.mappings.xds.responses import RegistryError, parse_query_response, parse_registry_response

CXF = 'multipart/related; type="application/xop+xml"; boundary="uuid:ac95cc6e-f93f-413d-950c-4bf9dc273d8a"; start="<root.message@cxf.apache.org>"; start-info="application/soap+xml"'
ENV = '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Header><Action xmlns="http://www.w3.org/2005/08/addressing">{action}</Action><RelatesTo xmlns="http://www.w3.org/2005/08/addressing">urn:uuid:1</RelatesTo></soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>'
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"


@pytest.mark.corpus
def test_drimbox_capture_is_read(corpus_dir: Path) -> None:
    raw = (corpus_dir / "xds/fr-drimbox-xds/response.xml").read_bytes()
    for content_type in (CXF, 'multipart/related; boundary="uuid:ac95cc6e-f93f-413d-950c-4bf9dc273d8a"'):
        answer = parse_answer(content_type, raw)
        assert answer.fault is None and answer.payload is not None
        assert answer.relates_to == "urn:uuid:a6ba8f7f-b214-4a2d-96f1-54293d537ce3"
        assert answer.action.endswith("ProvideAndRegisterDocumentSet-bResponse")
        result = parse_registry_response(answer.payload)
        assert result.ok and result.errors == () and result.summary() == "Success"


def test_well_formed_multipart_and_plain_answers() -> None:
    body = ENV.format(
        action="a",
        body=f'<rs:RegistryResponse xmlns:rs="{RS}" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><rs:RegistryErrorList><rs:RegistryError errorCode="XDSRegistryMetadataError" codeContext="bad" location="x"/><rs:RegistryError errorCode="XDSExtraMetadataNotSaved" codeContext="w" severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"/></rs:RegistryErrorList></rs:RegistryResponse>',
    ).encode()
    multipart = (
        b'--b\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\nContent-ID: <r>\r\n\r\n'
        + body
        + b"\r\n--b--\r\n"
    )
    for content_type, raw in (
        ("application/soap+xml", body),
        ('multipart/related; boundary="b"; start="<r>"', multipart),
    ):
        result = parse_registry_response(parse_answer(content_type, raw).payload)  # type: ignore[arg-type]
        assert result.status == "Failure"
        assert [(e.code, e.is_error) for e in result.errors] == [
            ("XDSRegistryMetadataError", True),
            ("XDSExtraMetadataNotSaved", False),
        ]
        assert result.summary() == "Failure: XDSRegistryMetadataError, XDSExtraMetadataNotSaved (warning)"
    with pytest.raises(MalformedAnswerError):
        parse_answer("text/html", b"<html>proxy error</html>")


def test_partial_success_and_query_entries() -> None:
    body = ENV.format(
        action="a",
        body='<q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"><rim:RegistryObjectList><rim:ExtrinsicObject id="urn:uuid:e1" status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"><rim:Slot name="hash"><rim:ValueList><rim:Value>ABCDEF</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="size"><rim:ValueList><rim:Value>12</rim:Value></rim:ValueList></rim:Slot><rim:ExternalIdentifier id="i" registryObject="urn:uuid:e1" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2.3"/></rim:ExtrinsicObject><rim:ObjectRef id="urn:uuid:e2"/></rim:RegistryObjectList></q:AdhocQueryResponse>',
    )
    result, entries = parse_query_response(parse_answer("application/soap+xml", body.encode()).payload)  # type: ignore[arg-type]
    assert result.status == "PartialSuccess"
    assert [(e.entry_uuid, e.unique_id, e.hash, e.size) for e in entries] == [
        ("urn:uuid:e1", "1.2.3", "abcdef", 12),
        ("urn:uuid:e2", "", "", None),
    ]


def test_faults_with_dmp_subcodes() -> None:
    fault = '<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value><soap:Subcode><soap:Value xmlns:d="urn:d">d:DMPInvalidCertificate</soap:Value></soap:Subcode></soap:Code><soap:Reason><soap:Text xml:lang="fr">Le certificat ayant signé le VIHF est invalide</soap:Text></soap:Reason></soap:Fault>'
    answer = parse_answer("application/soap+xml", ENV.format(action="f", body=fault).encode())
    assert answer.fault is not None
    assert (answer.fault.code, answer.fault.subcode) == ("Sender", "DMPInvalidCertificate")
    assert isinstance(fault_error("ITI-41", "Sender", "DMPInvalidCertificate", 500), RemoteCredentialError)
    assert isinstance(fault_error("ITI-41", "Receiver", "", 500), RemoteTransientError)
    refused = fault_error("ITI-41", "Sender", "SomethingNew", 500)
    assert isinstance(refused, RemoteRejectedError) and refused.remote_code == "SomethingNew"


def test_failures_refuse_or_retry_by_the_table() -> None:
    busy = registry_failure("ITI-41", [RegistryError("XDSUnknownPatientId"), RegistryError("XDSRegistryBusy")], 200)
    assert isinstance(busy, RemoteTransientError)
    refused = registry_failure(
        "ITI-41", [RegistryError("XDSUnknownPatientId"), RegistryError("X", severity="Warning")], 200
    )
    assert isinstance(refused, RemoteRejectedError)
    assert (refused.remote_code, refused.reason) == ("XDSUnknownPatientId", "unknown_patient")
    unknown = registry_failure("ITI-57", [RegistryError("NewCode")], 200)
    assert isinstance(unknown, RemoteRejectedError) and unknown.remote_code == "NewCode"


def test_the_documented_table_is_the_code_table(repo_root: Path) -> None:
    doc = (repo_root / "docs" / "dmp-transport.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (refuse|retry|credential) ", doc, re.M))
    assert rows == {code: rule.verdict for code, rule in ERROR_TABLE.items()}
    assert set(VERDICTS) == set(rows.values())


@pytest.mark.parametrize(
    ("status", "content_type", "expected", "text"),
    [
        (200, "text/html; charset=utf-8", RemoteTransientError, "not a SOAP answer (HTTP 200 text/html)"),
        (503, "text/plain", RemoteTransientError, "DMP unavailable, not a SOAP answer (HTTP 503 text/plain)"),
        (404, "text/html", RemoteTransientError, "not a SOAP answer (HTTP 404 text/html)"),
        (403, "text/html", RemoteCredentialError, "credentials refused, not a SOAP answer (HTTP 403 text/html)"),
        (200, "", RemoteTransientError, "not a SOAP answer (HTTP 200 without Content-Type)"),
        (302, "text/html", RemoteEndpointError, "redirect not followed (HTTP 302)"),
    ],
)
async def test_answers_that_are_not_soap_say_what_came_back(
    status: int, content_type: str, expected: type[Exception], text: str
) -> None:
    headers = {"Retry-After": "7"} | ({"Content-Type": content_type} if content_type else {})
    page = b"<html><body>INS 1840499999999 Bad Gateway</body></html>"
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(status, headers=headers, content=page))
    )
    call = Exchange("TD0.2", "https://dmp.test/patients", "application/soap+xml", b"<x/>", "urn:uuid:1")
    with pytest.raises(expected) as failed:
        await exchange(client, call, Limits(5.0, 65_536), lambda: datetime.now(UTC))
    await client.aclose()
    error = failed.value
    assert type(error) is expected and text in str(error) and "INS" not in str(error)
    assert error.retry_after == (7.0 if status == 503 else None)  # type: ignore[attr-defined]
    assert configuration_error(error) == {403: "credentials", 404: "endpoint", 302: "endpoint"}.get(status)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f'<rs:RegistryResponse xmlns:rs="{RS}" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>',
            RemoteAmbiguousError,
        ),
        (
            f'<rs:RegistryResponse xmlns:rs="{RS}" status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"/>',
            RemoteAmbiguousError,
        ),
        (
            '<q:AdhocQueryResponse xmlns:q="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>',
            RemoteAmbiguousError,
        ),
        (
            '<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value><soap:Subcode><soap:Value xmlns:d="urn:d">d:DMPClosed</soap:Value></soap:Subcode></soap:Code></soap:Fault>',
            RemoteRejectedError,
        ),
    ],
    ids=["success", "partial-success", "query", "fault"],
)
async def test_an_answer_without_relates_to_is_believed_only_when_it_is_a_fault(
    body: str, expected: type[Exception]
) -> None:
    envelope = ENV.format(action="a", body=body).replace(
        '<RelatesTo xmlns="http://www.w3.org/2005/08/addressing">urn:uuid:1</RelatesTo>', ""
    )
    status = 500 if "Fault" in body else 200
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(
            lambda r: httpx.Response(
                status, headers={"Content-Type": "application/soap+xml"}, content=envelope.encode()
            )
        )
    )
    call = Exchange("ITI-41", "https://dmp.test/repository", "application/soap+xml", b"<x/>", "urn:uuid:1")
    with pytest.raises(expected) as failed:
        await exchange(client, call, Limits(5.0, 65_536), lambda: datetime.now(UTC))
    await client.aclose()
    assert type(failed.value) is expected
    if expected is RemoteAmbiguousError:
        assert "no RelatesTo" in str(failed.value)
