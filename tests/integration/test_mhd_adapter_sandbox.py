"""The MHD adapter against the real sandbox over HTTP (127.0.0.1, free port): the two sides of
docs/patient-space-api.md were written separately, so these tests check that they agree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from passerelle.adapters.mhd import MhdSpace, SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, SpaceState
from passerelle.errors import (
    RemoteCredentialError,
    RemoteRejectedError,
    RemoteTransientError,
)
from passerelle.mappings.document import Flags, confidentiality_code
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.space_docs import AUTHOR_ID, INS, INS_2, deletion, document, patient, replacement


@dataclass
class Env:
    url: str
    space: MhdSpace
    admin: httpx.AsyncClient

    async def set_patient(self, ins: str = INS, **state: Any) -> None:
        response = await self.admin.put(f"/admin/patients/{ins}", json=state)
        response.raise_for_status()

    async def patient_state(self, ins: str = INS) -> dict[str, Any]:
        response = await self.admin.get(f"/admin/patients/{ins}")
        response.raise_for_status()
        return dict(response.json())

    async def faults(self, **settings: Any) -> None:
        (await self.admin.put("/admin/faults", json={"seed": 1, **settings})).raise_for_status()

    async def current_documents(self, ins: str = INS) -> int:
        response = await self.admin.get(
            "/fhir/DocumentReference",
            params={
                "patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{ins}",
                "status": "current",
                "_summary": "count",
            },
            headers={"X-Actor": "patient"},
        )
        response.raise_for_status()
        return int(response.json()["total"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "space")) as url:
        space = MhdSpace(SpaceSettings(url=url.fhir, test_environment=True, read_timeout_s=5, total_timeout_s=10))
        async with httpx.AsyncClient(base_url=url, timeout=10) as admin:
            try:
                yield Env(url, space, admin)
            finally:
                await space.aclose()


async def test_provide_then_replay_stores_once(env: Env) -> None:
    doc = document()
    first = await env.space.provide(doc)
    assert first.outcome == DeliveryOutcome.CREATED and first.http_status == 200
    assert first.location.startswith("DocumentReference/")
    # the same bytes with the same Idempotency-Key: the space replays its first answer
    second = await env.space.provide(doc)
    assert second.http_status == 200 and second.location == first.location
    pushes = (await env.admin.get("/admin/pushes")).json()
    assert [p["outcome"] for p in pushes][-1] == "replayed"
    assert await env.current_documents() == 1


async def test_resend_with_other_submission_is_already_stored(env: Env) -> None:
    """Same document in a different submission (another gateway instance, other source id): the space
    finds the same uniqueId and hash and answers 200 OK without storing anything new."""
    await env.space.provide(document())
    other = MhdSpace(SpaceSettings(url=env.url + "/fhir", test_environment=True, source_id="1.2.250.1.999.77"))
    try:
        receipt = await other.provide(document())
    finally:
        await other.aclose()
    assert receipt.outcome == DeliveryOutcome.ALREADY_STORED
    assert await env.current_documents() == 1


async def test_same_unique_id_other_content_is_a_conflict(env: Env) -> None:
    await env.space.provide(document())
    with pytest.raises(RemoteRejectedError) as info:
        await env.space.provide(document(content=b"<ClinicalDocument>other</ClinicalDocument>"))
    assert (info.value.status, info.value.remote_code, info.value.reason) == (
        409,
        "UniqueIdConflict",
        "unique_id_conflict",
    )


async def test_replacement_supersedes_the_original(env: Env) -> None:
    old = document()
    await env.space.provide(old)
    receipt = await env.space.provide(replacement(old, "1.2.250.1.999.2.3.2"))
    assert receipt.outcome == DeliveryOutcome.CREATED
    assert await env.current_documents() == 1


async def test_replacement_of_unknown_document_is_refused(env: Env) -> None:
    with pytest.raises(RemoteRejectedError) as info:
        await env.space.provide(replacement(document("1.2.250.1.999.2.3.50"), "1.2.250.1.999.2.3.51"))
    assert info.value.remote_code == "UnknownReplacedDocument"


async def test_deletion_is_idempotent(env: Env) -> None:
    old = document()
    await env.space.provide(old)
    first = await env.space.delete(deletion(old))
    assert first.outcome == DeliveryOutcome.DELETED and first.unique_id == old.unique_id
    assert await env.current_documents() == 0
    again = await env.space.delete(deletion(old))
    assert again.outcome == DeliveryOutcome.DELETED


async def test_deletion_by_a_device_author_uses_the_organisation(env: Env) -> None:
    from passerelle.mappings.document import Author
    from tests.support.space_docs import ORG_ID

    old = document(author=Author(device="AUTOMATE-1", organisation_id=ORG_ID, organisation_name="LABO TEST"))
    await env.space.provide(old)
    receipt = await env.space.delete(deletion(old))
    assert receipt.outcome == DeliveryOutcome.DELETED


async def test_deletion_refusals(env: Env) -> None:
    with pytest.raises(RemoteRejectedError) as info:
        await env.space.delete(deletion(document("1.2.250.1.999.2.3.404")))
    assert info.value.remote_code == "UnknownDocument"
    old = document()
    await env.space.provide(old)
    stranger = deletion(old).model_copy(
        update={"author": old.author.model_copy(update={"person_id": "809999999999", "organisation_id": "1999999999"})}
    )
    with pytest.raises(RemoteRejectedError) as info:
        await env.space.delete(stranger)
    assert info.value.remote_code == "NotAuthor"


async def test_status_reflects_the_space(env: Env) -> None:
    status = await env.space.status(patient(), AUTHOR_ID)
    assert status.state == SpaceState.ACTIF and not status.opposed and not status.author_blocked
    await env.set_patient(INS_2, status="FERME", opposed=True, blocked_authors=[AUTHOR_ID], minor=True)
    status = await env.space.status(patient(INS_2), AUTHOR_ID)
    assert status.state == SpaceState.FERME
    assert status.opposed and status.author_blocked and status.minor
    assert not (await env.space.status(patient(INS_2), "801111111111")).author_blocked


@pytest.mark.parametrize(
    ("state", "code", "reason"),
    [
        ({"status": "FERME"}, "DMPClosed", "space_closed"),
        ({"status": "INEXISTANT"}, "DMPNotFound", "space_not_active"),
        ({"opposed": True}, "PatientOpposed", "patient_opposed"),
        ({"blocked_authors": [AUTHOR_ID]}, "AuthorBlocked", "author_blocked"),
    ],
)
async def test_business_refusals(env: Env, state: dict[str, Any], code: str, reason: str) -> None:
    await env.set_patient(**state)
    with pytest.raises(RemoteRejectedError) as info:
        await env.space.provide(document())
    assert (info.value.remote_code, info.value.reason) == (code, reason)


async def test_visibility_codes_reach_the_space(env: Env) -> None:
    doc = document(
        confidentiality=(confidentiality_code("N"), confidentiality_code("INVISIBLE_PATIENT")),
        flags=Flags(invisible_patient=True),
    )
    await env.space.provide(doc)
    response = await env.admin.get(
        "/fhir/DocumentReference",
        params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}", "_summary": "count"},
        headers={"X-Actor": "patient"},
    )
    assert response.json()["total"] == 0  # hidden from the patient
    assert await env.current_documents() == 0
    professional = await env.admin.get(
        "/fhir/DocumentReference",
        params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}", "_summary": "count"},
        headers={"X-Actor": f"professional:{AUTHOR_ID}"},
    )
    assert professional.json()["total"] == 1


@pytest.mark.parametrize(
    ("faults", "status", "retry_after"),
    [
        ({"error_rate": 1.0, "error_status": 503}, 503, None),
        ({"rate_429": 1.0, "retry_after_s": 7}, 429, 7.0),
        ({"reset_rate": 1.0}, 0, None),
    ],
    ids=["503", "429-retry-after", "connection-reset"],
)
async def test_faults_are_transient(env: Env, faults: dict[str, Any], status: int, retry_after: float | None) -> None:
    await env.faults(**faults)
    with pytest.raises(RemoteTransientError) as info:
        await env.space.provide(document())
    assert type(info.value) is RemoteTransientError
    assert info.value.status == status
    if retry_after is not None:
        assert info.value.retry_after == retry_after
    (await env.admin.delete("/admin/faults")).raise_for_status()
    assert (await env.space.provide(document())).outcome == DeliveryOutcome.CREATED


async def test_timeout_is_transient(env: Env) -> None:
    await env.faults(timeout_rate=1.0, timeout_s=30)
    space = MhdSpace(SpaceSettings(url=env.url + "/fhir", test_environment=True, read_timeout_s=0.5))
    try:
        with pytest.raises(RemoteTransientError, match=r"timeout|within"):
            await space.status(patient(), AUTHOR_ID)
    finally:
        await space.aclose()
        (await env.admin.delete("/admin/faults")).raise_for_status()


async def test_bearer_token_required(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sandbox-token\n")
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "space", require_token_file=token_file)) as url:
        space = MhdSpace(SpaceSettings(url=url.fhir, test_environment=True))
        try:
            with pytest.raises(RemoteCredentialError):
                await space.provide(document())
        finally:
            await space.aclose()
