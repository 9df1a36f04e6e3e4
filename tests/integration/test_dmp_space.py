"""DmpSpace against the independent receiver on a real socket (mutual TLS): idempotent re-send, deletion,
confidentiality change, TD0.2 states, conflicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from passerelle.adapters.dmp.client import DmpSpace
from passerelle.adapters.dmp.devpki import write_dev_pki
from passerelle.adapters.space import DeliveryOutcome, SpaceState
from passerelle.errors import RemoteCredentialError, RemoteRejectedError, RemoteTransientError
from passerelle.mappings.document import Action, Flags, confidentiality_code
from tests.support.dmp_receiver import DmpReceiver, running_receiver
from tests.support.dmp_stack import sample_document, space_settings

pytestmark = pytest.mark.corpus


@pytest.fixture
async def stack(tmp_path: Path, corpus_dir: Path) -> AsyncIterator[tuple[DmpReceiver, DmpSpace]]:
    pki = write_dev_pki(tmp_path / "pki")
    async with running_receiver(
        corpus_dir / "schemas" / "xds-ebrim-3.0", pki.ca, tls=(pki.server_cert, pki.server_key)
    ) as receiver:
        settings = space_settings(pki, receiver.base_url)
        space = DmpSpace(settings)
        try:
            yield receiver, space
        finally:
            await space.aclose()


document = sample_document


async def test_resend_after_a_lost_answer_stores_one_document(stack: tuple[DmpReceiver, DmpSpace]) -> None:
    receiver, space = stack
    doc = document(1)
    first = await space.provide(doc)
    again = await space.provide(doc)
    assert (first.outcome, again.outcome) == (DeliveryOutcome.CREATED, DeliveryOutcome.ALREADY_STORED)
    assert receiver.transactions() == ["ITI-41", "ITI-41", "ITI-18"]
    assert len(receiver.store[doc.unique_id]) == 1 and receiver.problems == []
    assert "Success" in first.remote_answer and first.transport == "dmp"
    other = doc.model_copy(
        update={"content": doc.content.replace(b"</ClinicalDocument>", b"<!-- v --></ClinicalDocument>")}
    )
    with pytest.raises(RemoteRejectedError) as conflict:
        await space.provide(other)
    assert conflict.value.remote_code == "XDSNonIdenticalHash"


async def test_delete_is_iti18_then_iti57_and_idempotent(stack: tuple[DmpReceiver, DmpSpace]) -> None:
    receiver, space = stack
    doc = document(2)
    await space.provide(doc)
    deletion = doc.model_copy(update={"action": Action.DELETE, "replaces": doc.unique_id, "content": b""})
    assert (await space.delete(deletion)).outcome is DeliveryOutcome.DELETED
    assert receiver.store[doc.unique_id][0].status == "urn:asip:ci-sis:2010:StatusType:Deleted"
    assert (await space.delete(deletion)).outcome is DeliveryOutcome.DELETED  # already deleted: no second ITI-57
    assert receiver.transactions() == ["ITI-41", "ITI-18", "ITI-57", "ITI-18"]
    unknown = deletion.model_copy(update={"replaces": "1.2.250.1.999.404"})
    with pytest.raises(RemoteRejectedError) as missing:
        await space.delete(unknown)
    assert missing.value.remote_code == "UnknownDocument"
    assert receiver.problems == []


async def test_confidentiality_change_is_an_iti57_metadata_update(stack: tuple[DmpReceiver, DmpSpace]) -> None:
    receiver, space = stack
    doc = document(3)
    await space.provide(doc)
    masked = doc.model_copy(
        update={
            "flags": Flags(modif_conf_code=True, masque_ps=True),
            "confidentiality": (confidentiality_code("N"), confidentiality_code("MASQUE_PS")),
        }
    )
    assert (await space.provide(masked)).outcome is DeliveryOutcome.UPDATED
    assert receiver.transactions() == ["ITI-41", "ITI-18", "ITI-57"] and receiver.problems == []
    # a registry that gives no version (the sandbox once did) cannot be updated: refused, not retried
    receiver.versioned = False
    with pytest.raises(RemoteRejectedError) as refused:
        await space.provide(masked)
    assert (refused.value.remote_code, refused.value.reason) == ("UnversionedEntry", "invalid_update")


async def test_td02_states(stack: tuple[DmpReceiver, DmpSpace]) -> None:
    receiver, space = stack
    doc = document(4)
    assert (await space.status(doc.patient, doc.author.person_id)).state is SpaceState.ACTIF
    receiver.closed.add(doc.patient.ins)
    assert (await space.status(doc.patient, doc.author.person_id)).state is SpaceState.FERME
    receiver.unknown.add(doc.patient.ins)
    assert (await space.status(doc.patient, "")).state is SpaceState.INEXISTANT
    assert receiver.problems == []


async def test_faults_are_classified(stack: tuple[DmpReceiver, DmpSpace]) -> None:
    receiver, space = stack
    receiver.plan = [
        "sender_fault:DMPInvalidCertificate",
        "sender_fault:DMPClosed",
        "receiver_fault",
        "failure:XDSRepositoryBusy",
    ]
    doc = document(5)
    with pytest.raises(RemoteCredentialError):
        await space.provide(doc)
    with pytest.raises(RemoteRejectedError) as closed:
        await space.provide(doc)
    assert (closed.value.remote_code, closed.value.reason) == ("DMPClosed", "space_closed")
    with pytest.raises(RemoteTransientError):
        await space.provide(doc)
    with pytest.raises(RemoteTransientError):
        await space.provide(doc)
    assert (await space.provide(doc)).outcome is DeliveryOutcome.CREATED
