"""The patient page over real HTTP: a document invisible to the patient shows in the professional view only."""

from __future__ import annotations

from pathlib import Path

import httpx

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SampleDocument, iti65_bundle, running_sandbox

INS = with_key("2800175123456")


def section(html: str, name: str) -> str:
    return html.split(f'id="view-{name}"', 1)[1].split("</section>", 1)[0]


async def test_invisible_to_patient_appears_in_the_professional_view_only(tmp_path: Path) -> None:
    hidden = SampleDocument(
        "1.2.250.1.999.70.1", title="Resultat en attente d annonce", visibility=("INVISIBLE_PATIENT",)
    )
    async with running_sandbox(SandboxConfig(data_dir=tmp_path)) as url, httpx.AsyncClient() as client:
        await client.put(f"{url.admin}/patients/{INS}", json={"minor": True, "legal_representatives": ["Parent-1"]})
        pushed = await client.post(url.fhir, json=iti65_bundle(INS, hidden))
        assert pushed.status_code == 200

        page = await client.get(f"{url}/patients/{INS}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert hidden.unique_id in section(html, "professional")
        assert hidden.title in section(html, "professional")
        assert hidden.unique_id not in section(html, "patient")
        # the document is visible to legal representatives, who are not the patient
        assert hidden.unique_id in section(html, "representative")

        # the page view itself is an access trace
        traces = (await client.get(f"{url.admin}/patients/{INS}/traces")).json()
        assert [t["action"] for t in traces] == ["push", "page view"]

        index = await client.get(f"{url}/")
        assert f"/patients/{INS}" in index.text
