"""Run a real sandbox (uvicorn on 127.0.0.1, a free port) for integration tests.

    from passerelle.sandbox import SandboxConfig
    from passerelle.sandbox.testing import running_sandbox

    async def test_push(tmp_path):
        async with running_sandbox(SandboxConfig(data_dir=tmp_path / "space")) as url:
            async with httpx.AsyncClient() as client:
                r = await client.post(url.fhir, json=bundle)      # url.fhir == url + "/fhir"

``running_sandbox`` (async) and ``running_sandbox_sync`` (plain ``with``) yield a :class:`SandboxURL`:
a ``str`` such as ``http://127.0.0.1:40123`` with ``.fhir`` and ``.admin`` shortcuts. The server runs
in its own thread with its own event loop, so a test's loop, blocking code or a fault-injected
``timeout`` inside the sandbox cannot stall the other side. The listening socket is bound before the
thread starts (port 0, no race), the context manager returns only once uvicorn has started, and on
exit the server stops (in-flight requests get ``graceful_s`` seconds, then are cancelled) and the
thread is joined. The SQLite file stays in ``config.data_dir`` for assertions after the block.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from passerelle.sandbox.bundle import TEST_INS_SYSTEM
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.server import uvicorn_config


class SandboxURL(str):
    """Root URL of a running sandbox, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""

    __slots__ = ()

    @property
    def fhir(self) -> str:
        """The FHIR base (``space.url`` of the gateway)."""
        return f"{self}/fhir"

    @property
    def admin(self) -> str:
        return f"{self}/admin"

    @property
    def dmp(self) -> str:
        """The DMP services base (``space.url`` with ``space.transport: dmp``)."""
        return f"{self}/si-dmp-server/v2/services"


class _ServerThread:
    def __init__(self, config: SandboxConfig, graceful_s: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn_config(config, "127.0.0.1", self.port, timeout_graceful_shutdown=graceful_s)
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"sandbox-{self.port}", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread by start()/stop()
            self.error = exc

    def start(self, timeout_s: float) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop(1.0)
                raise RuntimeError("the sandbox did not start") from self.error
            time.sleep(0.01)

    def stop(self, timeout_s: float) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self.sock.close()


def _scheme(config: SandboxConfig) -> str:
    return "https" if config.tls else "http"


@contextlib.contextmanager
def running_sandbox_sync(
    config: SandboxConfig, *, startup_timeout_s: float = 15.0, graceful_s: int = 2
) -> Iterator[SandboxURL]:
    """Blocking form of :func:`running_sandbox`."""
    runner = _ServerThread(config, graceful_s)
    runner.start(startup_timeout_s)
    try:
        yield SandboxURL(f"{_scheme(config)}://127.0.0.1:{runner.port}")
    finally:
        runner.stop(graceful_s + 10.0)


@contextlib.asynccontextmanager
async def running_sandbox(
    config: SandboxConfig, *, startup_timeout_s: float = 15.0, graceful_s: int = 2
) -> AsyncIterator[SandboxURL]:
    """Start a sandbox on 127.0.0.1 (free port) and yield its root URL; stop it on exit."""
    runner = _ServerThread(config, graceful_s)
    await asyncio.to_thread(runner.start, startup_timeout_s)
    try:
        yield SandboxURL(f"{_scheme(config)}://127.0.0.1:{runner.port}")
    finally:
        await asyncio.to_thread(runner.stop, graceful_s + 10.0)


# --- sample ITI-65 bundles (the sandbox's own builder, independent of the gateway's) -------------------


@dataclass
class SampleDocument:
    """One document of a sample bundle. ``unique_id`` is an OID; ``replaces`` the OID it replaces."""

    unique_id: str
    content: bytes = b"%PDF-1.4\n% synthetic test document\n"
    title: str = "Compte rendu de biologie"
    author: str | None = "801234567890"
    organisation: str | None = "1750000017"
    visibility: tuple[str, ...] = ()
    replaces: str | None = None
    content_type: str = "application/pdf"


def _authors(doc: SampleDocument) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The contained Practitioner/Organization/PractitionerRole of a sample document and its author refs."""
    contained: list[dict[str, Any]] = []
    if doc.author:
        contained.append(
            {
                "resourceType": "Practitioner",
                "id": "author",
                "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": doc.author}],
            }
        )
    if doc.organisation:
        contained.append(
            {
                "resourceType": "Organization",
                "id": "org",
                "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": doc.organisation}],
            }
        )
    if doc.author and doc.organisation:
        contained.append(
            {
                "resourceType": "PractitionerRole",
                "id": "role",
                "practitioner": {"reference": "#author"},
                "organization": {"reference": "#org"},
            }
        )
        return contained, [{"reference": "#role"}]
    if contained:
        return contained, [{"reference": f"#{contained[0]['id']}"}]
    return contained, []


def iti65_bundle(
    ins: str,
    *documents: SampleDocument,
    ins_system: str = TEST_INS_SYSTEM,
    source: str | None = "801234567890",
) -> dict[str, Any]:
    """A valid ITI-65 transaction bundle for the sandbox's tests and for seeding a demo.

    Gateway tests must push the gateway's own bundles: this builder exists so that the sandbox is
    tested without the gateway's code.
    """
    subject = {"identifier": {"system": ins_system, "value": ins}}
    entries: list[dict[str, Any]] = []
    doc_urls: list[str] = []
    for doc in documents:
        binary_url = f"urn:uuid:{uuid.uuid4()}"
        doc_url = f"urn:uuid:{uuid.uuid4()}"
        doc_urls.append(doc_url)
        contained, authors = _authors(doc)
        reference: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc.unique_id}"},
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]},
            "subject": subject,
            "date": "2026-01-15T10:00:00+01:00",
            "content": [
                {
                    "attachment": {
                        "contentType": doc.content_type,
                        "url": binary_url,
                        "size": len(doc.content),
                        "hash": base64.b64encode(hashlib.sha1(doc.content, usedforsecurity=False).digest()).decode(),
                        "title": doc.title,
                    },
                    "format": {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3", "code": "urn:ihe:iti:xds-sd:pdf:2008"},
                }
            ],
            "context": {"period": {"start": "2026-01-15T08:00:00+01:00"}},
        }
        if contained:
            reference["contained"] = contained
        if authors:
            reference["author"] = authors
        if doc.visibility:
            reference["securityLabel"] = [
                {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": code}]} for code in doc.visibility
            ]
        if doc.replaces:
            reference["relatesTo"] = [
                {
                    "code": "replaces",
                    "target": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc.replaces}"}},
                }
            ]
        entries.append(
            {"fullUrl": doc_url, "resource": reference, "request": {"method": "POST", "url": "DocumentReference"}}
        )
        entries.append(
            {
                "fullUrl": binary_url,
                "resource": {
                    "resourceType": "Binary",
                    "contentType": doc.content_type,
                    "data": base64.b64encode(doc.content).decode(),
                },
                "request": {"method": "POST", "url": "Binary"},
            }
        )
    submission_set: dict[str, Any] = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]
        },
        "subject": subject,
        "date": "2026-01-15T10:00:00+01:00",
        "entry": [{"item": {"reference": url}} for url in doc_urls],
    }
    if source:
        submission_set["contained"] = [
            {
                "resourceType": "Practitioner",
                "id": "source",
                "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": source}],
            }
        ]
        submission_set["source"] = {"reference": "#source"}
    ss_entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": submission_set,
        "request": {"method": "POST", "url": "List"},
    }
    return {"resourceType": "Bundle", "type": "transaction", "entry": [ss_entry, *entries]}
