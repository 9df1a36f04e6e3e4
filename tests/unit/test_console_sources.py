"""What the console reads besides the journal: the configured certificates' expiry, documents made of a
row without side effects, the masked INS."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trustme
from cryptography import x509

from passerelle.connector.admin.browser import mask_ins
from passerelle.connector.admin.certificates import certificate_statuses
from passerelle.connector.admin.documents import ReadOnlyReferences
from passerelle.connector.parts import certificate_sources
from passerelle.connector.settings import load_settings
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.model import RegistryEntry, SeriesEntry


def test_configured_certificates_and_their_expiry(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("mllp.example.fr", common_name="mllp.example.fr")
    cert, key = tmp_path / "mllp.pem", tmp_path / "mllp.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    settings = load_settings(
        None,
        overrides={
            "mllp.tls.enabled": True,
            "mllp.tls.cert_file": cert,
            "mllp.tls.key_file": key,
            "space.client_cert_file": tmp_path / "missing.pem",
            "space.client_key_file": key,
        },
    )
    mllp, space = certificate_statuses(certificate_sources(settings))
    expected = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    assert (mllp.setting, mllp.not_after, mllp.problem) == ("mllp.tls.cert_file", expected, "")
    assert "CN=mllp.example.fr" in mllp.subject
    assert mllp.days_left(datetime.now(UTC)) is not None and mllp.days_left(datetime.now(UTC)) > 300
    assert space.setting == "space.client_cert_file" and space.not_after is None
    assert space.problem.startswith("cannot read") and "missing.pem" in space.problem
    assert certificate_sources(load_settings(None)) == []


async def test_looking_at_a_row_writes_nothing_and_hides_its_own_series_entry() -> None:
    journal = MemoryJournal()
    await journal.series_put(SeriesEntry("order:1", "1.2.3", "1.2", 1, row_id=7), datetime.now(UTC))
    await journal.series_put(SeriesEntry("order:2", "1.2.4", "1.2", 1, row_id=3), datetime.now(UTC))
    view = ReadOnlyReferences(journal, row_id=7)
    assert await view.series_get("order:1") is None  # as it was before row 7 was mapped
    assert (await view.series_get("order:2")) is not None
    await view.series_put(SeriesEntry("order:3", "1.2.5", "1.2", 1, row_id=7), datetime.now(UTC))
    await view.registry_put(RegistryEntry("279035121518989", "1.2.250.1.213.1.4.10", feeding="IO"))
    await view.patient_map_put("PACS", "123", "279035121518989", "1.2.250.1.213.1.4.10")
    assert journal.series.keys() == {"order:1", "order:2"} and journal.registry == {} and journal.patient_map == {}


def test_an_ins_is_masked_but_its_sex_digit_and_key_stay() -> None:
    assert mask_ins("279035121518989") == "2••••••••••••89"
    assert mask_ins("") == "" and mask_ins("123") == "•••"
