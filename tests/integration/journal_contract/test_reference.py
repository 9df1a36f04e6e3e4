"""ReferenceStore contract: consent registry, document series, patient map."""

from __future__ import annotations

from passerelle.queue import RegistryEntry, SeriesEntry
from tests.integration.journal_contract.support import T0


async def test_registry_series_and_patient_map_round_trip(journal) -> None:
    assert await journal.registry_get("248098765432112") is None
    entry = RegistryEntry("248098765432112", "1.2.250.1.213.1.4.10", "ACTIF", "INO", "IC", T0, 7)
    await journal.registry_put(entry)
    await journal.registry_put(RegistryEntry("248098765432112", "1.2.250.1.213.1.4.10", "FERME", "IO", "NA", T0, 8))
    got = await journal.registry_get("248098765432112")
    assert got is not None and (got.dmp_status, got.feeding, got.source_row) == ("FERME", "IO", 8)
    assert got.updated_at == T0

    assert await journal.series_get("study:1.2.3") is None
    await journal.series_put(SeriesEntry("study:1.2.3", "1.2.3.4", "set-1", 1, 10), T0)
    await journal.series_put(SeriesEntry("study:1.2.3", "1.2.3.5", "set-1", 2, 11), T0)
    assert await journal.series_get("study:1.2.3") == SeriesEntry("study:1.2.3", "1.2.3.5", "set-1", 2, 11)

    assert await journal.patient_map_get("PACS", "LOCAL1") is None
    await journal.patient_map_put("PACS", "LOCAL1", "248098765432112", "1.2.250.1.213.1.4.10")
    assert await journal.patient_map_get("PACS", "LOCAL1") == ("248098765432112", "1.2.250.1.213.1.4.10")
    assert await journal.patient_map_get("OTHER", "LOCAL1") is None
