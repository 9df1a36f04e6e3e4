"""Row → mapping for PAM ADT consent feeds: ZFA goes to the local registry; an ADT without ZFA (accepted
when the site asked for it) is handled with nothing to record."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.connector.dispatch.worker import Handled
from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.mappings.samples.messages import build_adt_consent, synthetic_patient
from passerelle.queue import Inbound
from passerelle.queue.memory import MemoryJournal

NOW = datetime(2026, 2, 1, tzinfo=UTC)


async def _map(raw: bytes) -> tuple[object, MemoryJournal]:
    journal = MemoryJournal()
    [res] = await journal.append([Inbound(raw=raw, channel="mllp", sender="SIL-SYNTH^LABO-SYNTH", kind="adt")])
    mapper = RowMapper(journal, Hl7IntakeSettings(), test_environment=True, clock=lambda: NOW, oid_root="1.2.3")
    return await mapper.map(await journal.get(res.row_id)), journal


async def test_zfa_opposition_is_recorded_in_the_registry() -> None:
    patient = synthetic_patient(random.Random(8))
    raw = build_adt_consent(now=NOW, control_id="Z1", patient=patient, dmp_status="ACTIF", feeding="IO")
    handled, journal = await _map(raw)
    assert isinstance(handled, Handled) and handled.patient_id == patient.ins
    entry = await journal.registry_get(patient.ins)
    assert entry is not None and entry.feeding == "IO" and entry.dmp_status == "ACTIF"


async def test_adt_without_zfa_is_handled_with_nothing_recorded() -> None:
    patient = synthetic_patient(random.Random(9))
    raw = build_adt_consent(now=NOW, control_id="Z2", patient=patient)
    raw = b"\r".join(s for s in raw.split(b"\r") if not s.startswith(b"ZFA"))
    handled, journal = await _map(raw)
    assert isinstance(handled, Handled) and "without ZFA" in handled.detail
    assert await journal.registry_get(patient.ins) is None
