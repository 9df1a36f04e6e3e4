"""The console's pages over a real socket, logged in as a browser would: keyset paging both ways, the
filters, the masked INS, the language switch, downloads of a purged message, the replay confirmation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from passerelle.queue import Inbound, Settlement, State
from tests.support.console import csrf_of, login
from tests.support.gateway import running_gateway

INS = "279035121518989"
ROW_LINK = re.compile(r'<a href="/messages/(\d+)">\d+</a>')


def ids(html: str) -> list[int]:
    return [int(x) for x in ROW_LINK.findall(html)]


def link(html: str, label: str) -> str:
    found = re.search(rf'<a href="([^"]+)"[^>]*>{label}</a>', html)
    assert found is not None, label
    return found.group(1).replace("&amp;", "&")


async def seed(gw: Any) -> list[int]:
    await gw.worker.stop()
    items = [
        Inbound(raw=f"MSH|{n}".encode(), channel="dicom" if n % 10 == 0 else "mllp", sender="PACS" if n % 10 == 0
                else "LAB^FAC", kind="oru", lane=f"p{n}")
        for n in range(120)
    ]  # fmt: skip
    rows = [r.row_id for r in await gw.journal.append(items)]
    later = datetime.now(UTC) + timedelta(seconds=1)
    await gw.journal.claim("test", 2, 60, later)
    await gw.journal.settle(rows[0], Settlement(State.DELIVERED, "ok", patient_id=INS), later)
    await gw.journal.settle(rows[1], Settlement(State.DEAD, "deadline", patient_id=INS), later)
    return rows


async def test_pages_filters_and_language(tmp_path) -> None:
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir") as (gw, base):
        rows = await seed(gw)
        async with httpx.AsyncClient(base_url=base, timeout=10) as browser:
            await login(browser, "operate")
            first = (await browser.get("/messages")).text
            assert ids(first) == rows[::-1][:50] and "Plus récents" not in first
            second = (await browser.get(link(first, "Plus anciens"))).text
            assert ids(second) == rows[::-1][50:100]
            back = (await browser.get(link(second, "Plus récents"))).text
            assert ids(back) == rows[::-1][:50]
            third = (await browser.get(link(second, "Plus anciens"))).text
            assert ids(third) == rows[::-1][100:] and "Plus anciens" not in third

            dicom = (await browser.get("/messages", params={"channel": "dicom"})).text
            assert ids(dicom) == [r for r in rows[::-1] if (r - rows[0]) % 10 == 0]
            assert ids((await browser.get("/messages", params={"sender": "PACS", "state": "dead"})).text) == []
            dead = (await browser.get("/messages", params={"state": "dead"})).text
            assert ids(dead) == [rows[1]] and INS not in dead and "2••••••••••••89" in dead
            today = datetime.now(UTC).date()
            assert (
                len(ids((await browser.get("/messages", params={"until": str(today - timedelta(days=2))})).text)) == 0
            )
            assert ids((await browser.get("/messages", params={"patient": INS})).text) == [rows[1], rows[0]]

            english = await browser.get("/language/en", params={"next": "/messages?state=dead"})
            assert english.status_code == 303 and english.headers["location"] == "/messages?state=dead"
            page = (await browser.get("/messages?state=dead")).text
            assert '<html lang="en">' in page and "<title>Messages · Passerelle</title>" in page
            evil = await browser.get("/language/fr", params={"next": "https://evil.example/"})
            assert evil.headers["location"] == "/"

            meta = await browser.get(f"/messages/{rows[2]}/metadata")
            assert meta.status_code == 422  # "MSH|2" makes no document: the mapping's refusal, in a page
            csrf = csrf_of(page)
            unconfirmed = await browser.post("/dead-letters/replay", data={"csrf": csrf, "id": str(rows[1])})
            assert unconfirmed.status_code == 400 and (await gw.journal.get(rows[1])).state is State.DEAD
            done = await browser.post("/dead-letters/replay", data={"csrf": csrf, "id": str(rows[1]), "confirm": "yes"})
            assert done.status_code == 200 and (await gw.journal.get(rows[1])).state is State.ACCEPTED

            purged = await gw.journal.purge_payloads(State.DELIVERED, datetime.now(UTC) + timedelta(days=1), 10,
                                                     datetime.now(UTC))  # fmt: skip
            assert purged == 1
            assert (await browser.get(f"/messages/{rows[0]}/raw")).status_code == 410
            shown = (await browser.get(f"/messages/{rows[0]}")).text  # French again: /language/fr set it
            assert "Contenu purgé" in shown and f"/messages/{rows[0]}/raw" not in shown
