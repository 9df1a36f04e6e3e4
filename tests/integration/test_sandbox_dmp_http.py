"""The sandbox's DMP SOAP services over real HTTP, fed by an independent request builder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
from lxml import etree

from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox_sync
from tests.support import dmp_requests as b

INS = "279035121518989"
NS = {"rs": b.LCM.replace("lcm", "rs"), "soap": b.SOAP, "wsa": b.WSA, "rim": b.RIM, "query": b.QUERY, "hl7": b.HL7}
STATUS = "urn:oasis:names:tc:ebxml-regrep:StatusType:"


@dataclass
class Dmp:
    url: SandboxURL
    pki: b.Pki
    client: httpx.Client

    def post(self, service: str, content_type: str, body: bytes) -> httpx.Response:
        return self.client.post(f"{self.url.dmp}/{service}", content=body, headers={"content-type": content_type})

    def submit(self, lot: b.Iti41) -> httpx.Response:
        return self.post("repository", *lot.render())

    def lot(self, **kwargs: object) -> b.Iti41:
        return b.Iti41(self.pki, INS, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki() -> b.Pki:
    return b.Pki.create()


def _start(tmp_path: Path, pki: b.Pki, **options: object) -> Iterator[Dmp]:
    config = SandboxConfig(data_dir=tmp_path / "space", dmp_ca_file=pki.write_ca(tmp_path), **options)  # type: ignore[arg-type]
    with running_sandbox_sync(config) as url, httpx.Client(timeout=30) as client:
        yield Dmp(url, pki, client)


@pytest.fixture
def dmp(tmp_path: Path, pki: b.Pki) -> Iterator[Dmp]:
    yield from _start(tmp_path, pki)


def soap_xml(response: httpx.Response) -> etree._Element:
    """The SOAP envelope of an answer, plain or multipart/related (read with the standard library)."""
    content_type = response.headers["content-type"]
    if content_type.startswith("multipart/related"):
        message = message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + response.content, policy=policy.HTTP
        )
        parts = list(message.iter_parts())
        assert len(parts) == 1 and parts[0]["Content-ID"] == "<root.message@cxf.apache.org>"
        return etree.fromstring(parts[0].get_payload(decode=True))
    assert content_type.startswith("application/soap+xml")
    return etree.fromstring(response.content)


def registry_status(response: httpx.Response) -> tuple[str, list[str]]:
    assert response.status_code == 200, response.text
    root = soap_xml(response)
    rr = root.find(".//rs:RegistryResponse", NS)
    assert rr is not None
    return rr.get("status", "").rsplit(":", 1)[-1], [e.get("errorCode", "") for e in rr.iterfind(".//rs:RegistryError", NS)]


def fault(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 500, response.text
    root = soap_xml(response)
    code = root.findtext(".//soap:Fault/soap:Code/soap:Value", namespaces=NS) or ""
    sub = root.findtext(".//soap:Fault/soap:Code/soap:Subcode/soap:Value", namespaces=NS) or ""
    return code.split(":")[-1], sub.split(":")[-1]


def test_iti41_success_is_stored_in_the_patient_space(dmp: Dmp) -> None:
    lot = dmp.lot()
    response = dmp.submit(lot)
    assert registry_status(response) == ("Success", [])
    root = soap_xml(response)
    assert root.findtext(".//wsa:Action", namespaces=NS) == b.ITI41 + "Response"
    assert root.findtext(".//wsa:RelatesTo", namespaces=NS) == lot.envelope.message_id
    docs = dmp.client.get(f"{dmp.url.admin}/patients/{INS}").json()["documents"]
    assert docs == {"current": 2}  # the CDA and the signature entry
    pushes = dmp.client.get(f"{dmp.url.admin}/pushes").json()
    assert [(p["transport"], p["outcome"]) for p in pushes] == [("dmp", "accepted")]
    page = dmp.client.get(f"{dmp.url}/patients/{INS}").text
    assert lot.documents[0].unique_id in page and ">dmp<" in page
