"""The web console in a real browser: Debian's Chromium driven headless by Playwright (the system browser,
no download), against a running gateway and the sandbox over real sockets.

Walk: log in, find a delivered message, open its journey (in time order), replay a dead letter (made by a
space answering 503 until the delivery deadline) with its dry-run preview and confirmation, see it
delivered; switch to English; read the audit trail. Every request the browser makes is intercepted: none
may leave 127.0.0.1. Each page passes a small accessibility check (lang, title, a label for every
control, table headers, the skip link first in the tab order, a visible focus) and is kept as a
screenshot under ``test-artefacts/console/`` (ignored by git; the path is printed).
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.queue.model import Query, State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import AUTH, TOKENS, running_gateway
from tests.support.waiting import poll

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "console"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

#: What every page must have; returns the problems found (run in the page).
A11Y_CHECK = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("html without lang");
  if (!document.title.trim()) problems.push("no title");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest("label")
      || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push(`control without label: ${el.name || el.id}`);
  }
  for (const table of document.querySelectorAll("table")) {
    if (!table.querySelector("th")) problems.push("table without headers");
    if (!table.querySelector("caption")) problems.push("table without caption");
  }
  const skip = document.querySelector("a.skip");
  if (!skip || skip.getAttribute("href") !== "#main" || !document.getElementById("main")) problems.push("no skip link");
  if (!document.querySelector("h1")) problems.push("no h1");
  return problems;
}"""


def cda(seed: int) -> bytes:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    return build_sample_cda(now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng),
                     sender=None)  # fmt: skip


async def wait_state(gw: Any, row_id: int, state: State, timeout: float = 30) -> None:
    row = await poll(lambda: gw.journal.get(row_id), lambda r: r is not None and r.state is state, timeout)
    if row is None or row.state is not state:
        raise AssertionError(f"row {row_id} is {row.state if row else None}, not {state}: {row.detail if row else ''}")


class Walk:
    """One browser page, its request log, and the checks each visited page passes."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.shots: list[Path] = []

    async def check(self, name: str) -> None:
        problems = await self.page.evaluate(A11Y_CHECK)
        assert problems == [], f"{name}: {problems}"
        shot = ARTEFACTS / f"{len(self.shots) + 1:02d}-{name}.png"
        await self.page.screenshot(path=str(shot), full_page=True)
        self.shots.append(shot)
        await self.page.keyboard.press("Tab")  # the skip link comes first, and shows its focus
        focused = await self.page.evaluate(
            "() => [document.activeElement.className, getComputedStyle(document.activeElement).outlineStyle]"
        )
        assert focused[0] == "skip" and focused[1] != "none", f"{name}: first focus {focused}"

    async def click(self, locator: Any) -> None:
        """Click something that loads another page, and wait for that page."""
        async with self.page.expect_navigation():
            await locator.click()

    async def go(self, path: str, name: str) -> None:
        await self.page.goto(self.base + path)
        await self.check(name)


async def test_console_walk_in_chromium(tmp_path: Path) -> None:
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    ARTEFACTS.mkdir(parents=True)
    print(f"\nconsole screenshots: {ARTEFACTS}")
    retry = {"worker.retry.deadline_s": 1.5, "worker.retry.initial_delay_s": 0.2, "worker.retry.max_delay_s": 0.3}
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **retry) as (gw, base):
            async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["intake"]) as client:
                xml = {"Content-Type": "application/xml"}
                delivered = (await client.post("/v1/documents", content=cda(1), headers=xml)).json()["journal_id"]
                await wait_state(gw, delivered, State.DELIVERED)
                async with httpx.AsyncClient(base_url=sandbox, timeout=10) as admin:
                    (await admin.put("/admin/faults", json={"error_rate": 1.0, "error_status": 503})).raise_for_status()
                    dead = (await client.post("/v1/documents", content=cda(2), headers=xml)).json()["journal_id"]
                    await wait_state(gw, dead, State.DEAD)
                    (await admin.delete("/admin/faults")).raise_for_status()
            await browse(base, delivered, dead, gw)
            await wait_state(gw, dead, State.DELIVERED)
            rows = await gw.journal.find(Query(states=[State.DELIVERED]))
            assert {r.id for r in rows} == {delivered, dead}


async def browse(base: str, delivered: int, dead: int, gw: Any) -> None:
    requests: list[str] = []

    async def only_local(route: Any) -> None:
        url = route.request.url
        requests.append(url)
        host = urlsplit(url).hostname
        if host != "127.0.0.1" and not url.startswith(("data:", "blob:", "about:")):
            await route.abort()
        else:
            await route.continue_()

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        await context.route("**/*", only_local)
        walk = Walk(await context.new_page(), base)
        try:
            await walk_pages(walk, delivered, dead, gw)
        finally:
            await browser.close()
    outside = [u for u in requests if urlsplit(u).hostname not in ("127.0.0.1", None)]
    assert outside == [] and requests, outside
    assert all(p.stat().st_size > 1000 for p in walk.shots) and len(walk.shots) >= 9


async def walk_pages(walk: Walk, delivered: int, dead: int, gw: Any) -> None:
    page = walk.page
    await walk.go("/", "login-redirect")
    assert "/login" in page.url
    await page.get_by_label("Jeton d'accès").fill(TOKENS["operate"][1])
    await walk.click(page.get_by_role("button", name="Se connecter"))
    assert page.url == walk.base + "/"
    await walk.check("overview")
    assert await page.locator("h1").inner_text() == "Vue d'ensemble"

    # Find the delivered message and open its journey.
    await walk.click(page.get_by_role("link", name="Messages", exact=True))
    await page.get_by_label("remis", exact=True).check()
    await walk.click(page.get_by_role("button", name="Filtrer"))
    await walk.check("messages-delivered")
    await walk.click(page.get_by_role("link", name=str(delivered), exact=True))
    await walk.check("journey-delivered")
    steps = await page.locator("tr.event th").all_inner_texts()
    assert steps[:2] == ["reçu", "accusé de réception envoyé"] and steps[-1] == "remis à l'espace", steps
    assert {"document produit", "décision de consentement"} <= set(steps)
    times = await page.locator("tr.event td.when").all_inner_texts()
    assert times == sorted(times)
    assert "•" in await page.locator("#ins").inner_text()  # the INS is masked until revealed
    await walk.click(page.get_by_role("button", name="Afficher l'INS (action tracée)"))
    assert "•" not in await page.locator("#ins").inner_text()
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Document produit").click()
    assert (await download.value).suggested_filename.startswith("document-")

    # The dead letter: select it, preview (dry run), confirm, replay.
    await walk.click(page.get_by_role("link", name="Rejets et attentes", exact=True))
    await walk.check("dead-letters")
    await page.get_by_label(f"Sélectionner le message {dead}").check()
    await walk.click(page.get_by_role("button", name="Prévisualiser la relance"))
    await walk.check("replay-preview")
    assert "serait relancé" in await page.locator("td.result").inner_text()
    assert (await gw.journal.get(dead)).state is State.DEAD  # a preview changes nothing
    await page.get_by_label("Je confirme la relance de ces messages").check()
    await walk.click(page.get_by_role("button", name="Relancer", exact=True))
    await walk.check("replay-done")
    assert await page.locator("td.result").inner_text() == "relancé"
    await wait_state(gw, dead, State.DELIVERED)
    await walk.go(f"/messages/{dead}", "journey-replayed")
    steps = await page.locator("tr.event th").all_inner_texts()
    assert "relancé" in steps and steps[-1] == "remis à l'espace" and "tentative d'envoi" in steps, steps

    # English, then the audit trail (the reveal and the replay are there).
    await walk.click(page.get_by_role("link", name="English"))
    await walk.check("journey-english")
    assert (await page.locator("html").get_attribute("lang")) == "en"
    await walk.click(page.get_by_role("link", name="Audit trail"))
    await walk.check("audit")
    body = await page.locator("main").inner_text()
    assert "reveal-ins" in body and "console:operator" in body and "replay" in body
