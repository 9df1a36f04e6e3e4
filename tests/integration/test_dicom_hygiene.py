"""The DICOM SCP's association hygiene and sender binding (ADR 0024) with real pynetdicom SCUs, raw
sockets, a real SQLite journal and audit store, and the app's Prometheus metrics.

* A full table admits a newcomer by closing the association idle the longest (an established one, or
  a connection that never sent its association request); one whose C-STORE is in progress is never
  cut, the newcomer is refused instead. A per-source cap refuses one more association from an address.
* ``dicom.bindings``: an unbound calling AE title, or a bound one calling from outside its networks, is
  refused at association time (counted, audited); a bound one sending a dataset whose Issuer of Patient
  ID it may not use gets 0x0124, and the refused row holds no dedup key, so the genuine sender's
  instance with the same SOP Instance UID is then taken.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from passerelle.connector.intake.dicom import DicomIntake
from passerelle.connector.intake.replies import DICOM_NOT_AUTHORIZED, DICOM_SUCCESS
from passerelle.connector.listeners.dicom_scp import DicomScp, DicomSettings
from passerelle.connector.metrics_bridge import DicomMetricsBridge
from passerelle.observability.audit import AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.model import AppendResult, Inbound, Query, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.integration.test_dicom_scp import SITE
from tests.support.dicom_samples import make_kos
from tests.support.waiting import until

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


class Stack:
    """A real journal and audit store in one SQLite file, and the app's metrics."""

    def __init__(self, journal: SQLiteJournal, audit: SQLiteAuditStore) -> None:
        self.journal, self.audit_store, self.metrics = journal, audit, Metrics()
        self.audit = AuditTrail(audit)

    def scp(self, accept: Any = None, **settings: object) -> DicomScp:
        conf = DicomSettings.model_validate({"port": 0, **settings})
        intake = DicomIntake(
            accept or self.journal.append,
            channel="dicom",
            test_environment=True,
            site=SITE,
            max_bytes=conf.max_dataset_bytes,
            audit=self.audit,
        )
        return DicomScp(conf, intake, metrics=DicomMetricsBridge(self.metrics), audit=self.audit)

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("passerelle_dicom_associations_total", {"outcome": outcome})
        return value or 0.0


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    journal, audit = SQLiteJournal(tmp_path / "journal.sqlite3"), SQLiteAuditStore(tmp_path / "journal.sqlite3")
    await journal.open()
    await audit.open()
    yield Stack(journal, audit)
    await audit.close()
    await journal.close()


def associate(port: int, calling: str = "MODALITY", source: str = "127.0.0.1") -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(KOS_CLASS)
    return ae.associate("127.0.0.1", port, ae_title="PASSERELLE", bind_address=(source, 0))


def store(assoc: Any, raw: bytes, path: Path) -> int:
    path.write_bytes(raw)
    status = assoc.send_c_store(path)
    return int(status.Status)


def send(port: int, raw: bytes, path: Path, *, calling: str = "MODALITY", source: str = "127.0.0.1") -> int | None:
    """One association, one C-STORE; the status, or None when the association was refused."""
    assoc = associate(port, calling, source)
    if not assoc.is_established:
        return None
    try:
        return store(assoc, raw, path)
    finally:
        assoc.release()


async def test_full_table_closes_the_idle_ones_for_a_sender(stack: Stack, tmp_path: Path) -> None:
    # The default table (10): five connections that never send their association request, from
    # 127.0.0.2, and five idle associations from 127.0.0.3 (the per-source default is 5).
    scp = stack.scp()
    await scp.start()
    raw_sockets: list[socket.socket] = []
    idle: list[Any] = []
    try:
        for _ in range(5):
            raw_sockets.append(socket.create_connection(("127.0.0.1", scp.port), source_address=("127.0.0.2", 0)))
        for _ in range(5):
            idle.append(await asyncio.to_thread(associate, scp.port, "IDLE", "127.0.0.3"))
        assert all(a.is_established for a in idle)
        await until(lambda: stack.count("opened") == 10)

        assert await asyncio.to_thread(send, scp.port, make_kos(), tmp_path / "a.dcm") == DICOM_SUCCESS
        assert stack.count("closed_evicted") == 1
        assert stack.count("refused_max_associations") == 0
        # One silent connection (idle since its accept: the longest) was closed; the idle associations
        # are still there. Which silent one depends on the order pynetdicom's threads saw the accepts.
        readable, _, _ = select.select(raw_sockets, [], [], 5)
        assert [s.recv(1) for s in readable] == [b""]
        assert all(a.is_established for a in idle)
        [row] = await stack.journal.find(Query(limit=5))
        assert row.state is State.ACCEPTED
    finally:
        for a in idle:
            await asyncio.to_thread(a.release)
        for s in raw_sockets:
            s.close()
        await scp.stop()


async def test_an_idle_association_is_closed_to_make_room(stack: Stack, tmp_path: Path) -> None:
    scp = stack.scp(max_associations=2)
    await scp.start()
    try:
        first = await asyncio.to_thread(associate, scp.port, "FIRST")
        second = await asyncio.to_thread(associate, scp.port, "SECOND")
        # FIRST speaks (C-STORE), so SECOND is the one idle the longest.
        assert await asyncio.to_thread(store, first, make_kos(), tmp_path / "f.dcm") == DICOM_SUCCESS
        assert await asyncio.to_thread(send, scp.port, make_kos(), tmp_path / "n.dcm") == DICOM_SUCCESS
        await until(lambda: second.is_aborted or not second.is_alive())
        assert first.is_established
        assert stack.count("closed_evicted") == 1
        await asyncio.to_thread(first.release)
    finally:
        await scp.stop()


async def test_a_sender_in_its_c_store_is_never_cut(stack: Stack, tmp_path: Path) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def gated(items: Sequence[Inbound]) -> list[AppendResult]:
        entered.set()
        await release.wait()
        return await stack.journal.append(items)

    scp = stack.scp(gated, max_associations=1)
    await scp.start()
    try:
        busy = asyncio.create_task(asyncio.to_thread(send, scp.port, make_kos(), tmp_path / "b.dcm"))
        await asyncio.wait_for(entered.wait(), 15)
        refused = await asyncio.to_thread(associate, scp.port, "NEWCOMER")
        assert not refused.is_established
        assert stack.count("refused_max_associations") == 1 and stack.count("closed_evicted") == 0
        release.set()
        assert await busy == DICOM_SUCCESS
    finally:
        release.set()
        await scp.stop()


async def test_per_source_cap(stack: Stack, tmp_path: Path) -> None:
    scp = stack.scp(max_associations_per_source=1)
    await scp.start()
    try:
        held = await asyncio.to_thread(associate, scp.port, "HELD")
        assert held.is_established
        assert await asyncio.to_thread(send, scp.port, make_kos(), tmp_path / "a.dcm") is None
        assert stack.count("refused_max_per_source") == 1
        other = await asyncio.to_thread(send, scp.port, make_kos(), tmp_path / "b.dcm", source="127.0.0.2")
        assert other == DICOM_SUCCESS
        await asyncio.to_thread(held.release)
    finally:
        await scp.stop()


BINDINGS = {
    "CT01": {"networks": ["127.0.0.1/32"], "issuers_of_patient_id": ["ASIP-SANTE-INS-NIR"]},
    "CT02": {"networks": ["127.0.0.0/8"], "issuers_of_patient_id": ["CHU-B"]},
    "FAR": {"networks": ["10.9.0.0/16"], "issuers_of_patient_id": ["*"]},
}


async def test_calling_ae_titles_bound_to_networks_and_issuers(stack: Stack, tmp_path: Path) -> None:
    raw = make_kos()  # Issuer of Patient ID ASIP-SANTE-INS-NIR
    uid = pydicom.dcmread(_path(tmp_path, raw)).SOPInstanceUID
    scp = stack.scp(bindings=BINDINGS)
    await scp.start()
    try:
        assert await asyncio.to_thread(send, scp.port, raw, tmp_path / "x.dcm", calling="STRANGER") is None
        assert await asyncio.to_thread(send, scp.port, raw, tmp_path / "x.dcm", calling="FAR") is None
        # CT02 may associate but not send for that issuer; the refusal holds no key...
        assert await asyncio.to_thread(send, scp.port, raw, tmp_path / "x.dcm", calling="CT02") == DICOM_NOT_AUTHORIZED
        # ... so CT01, bound to it, sends the same instance (same SOP Instance UID) and it is taken.
        assert await asyncio.to_thread(send, scp.port, raw, tmp_path / "x.dcm", calling="CT01") == DICOM_SUCCESS
    finally:
        await scp.stop()
    rows = sorted(await stack.journal.find(Query(limit=10)), key=lambda r: r.id)
    assert [(r.state, r.sender, r.message_id, r.dedup_key) for r in rows] == [
        (State.REJECTED, "CT02", uid, ""),
        (State.ACCEPTED, "CT01", uid, f"dicom:{uid}"),
    ]
    assert rows[0].detail.startswith("sender_not_allowed: 0x0124")
    assert stack.count("refused_calling_ae") == 1 and stack.count("refused_calling_ae_network") == 1
    async with asyncio.timeout(15):  # association refusals are recorded without blocking the refusal
        while len(trail := await _trail(stack)) < 3:
            await asyncio.sleep(0.02)
    assert {(r.actor, r.reason, r.detail.split(" in minute ")[0]) for r in trail if r.actor != "ae:CT02"} == {
        ("dicom:127.0.0.1", "association-refused", "calling_ae first"),
        ("dicom:127.0.0.1", "association-refused", "calling_ae_network first"),
    }
    assert {r.detail.split(": ")[-1] for r in trail if r.actor != "ae:CT02"} == {
        "calling AE STRANGER",
        "calling AE FAR",
    }
    [refusal] = [r for r in trail if r.actor == "ae:CT02"]
    assert refusal.row_id == rows[0].id and "ASIP-SANTE-INS-NIR" in refusal.detail and uid in refusal.detail


async def _trail(stack: Stack) -> list[Any]:
    return list(await stack.audit_store.query(AuditQuery(limit=50)))


def _path(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "probe.dcm"
    path.write_bytes(raw)
    return path


async def test_idle_associations_are_aborted_after_the_network_timeout(stack: Stack) -> None:
    scp = stack.scp(network_timeout_s=0.5)
    await scp.start()
    try:
        quiet = await asyncio.to_thread(associate, scp.port, "QUIET")
        assert quiet.is_established
        await until(lambda: quiet.is_aborted)
        await until(lambda: stack.count("closed_idle_timeout") == 1)
    finally:
        await scp.stop()
