"""The message browser and replay over HTTP: reads need a read identity, replays an operate one (the
legacy admin token is one), bulk replays only with an explicit confirmation; replays are audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from passerelle.queue import Inbound, Settlement, State
from passerelle.queue.audit import AuditQuery
from tests.support.gateway import AUTH, running_gateway


async def test_browse_and_replay_over_http(tmp_path) -> None:
    token = tmp_path / "admin-token"
    token.write_text("s3cret-for-tests\n")
    # The space is never reached in this test (rows are settled by hand), so any URL will do.
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **{"http.admin_token_file": token}) as (
        gw,
        base,
    ):
        await gw.worker.stop()  # keep the worker off these rows
        rows = await gw.journal.append(
            [
                Inbound(raw=f"MSH|{n}".encode(), channel="mllp", sender="LAB^FAC", kind="hl7", lane=f"z{n}")
                for n in range(3)
            ]
        )
        now = datetime.now(UTC) + timedelta(seconds=1)
        await gw.journal.claim("test", 10, 60, now)
        for r in rows:
            await gw.journal.settle(r.row_id, Settlement(State.DEAD, "deadline exceeded"), now)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/v1/messages", params={"state": "dead"})).status_code == 401
            client.headers.update(AUTH["read"])
            listed = (await client.get("/v1/messages", params={"state": "dead"})).json()
            assert sorted(m["id"] for m in listed) == [r.row_id for r in rows]
            assert "raw" not in listed[0] and listed[0]["size"] > 0  # never the content
            story = (await client.get(f"/v1/messages/{rows[0].row_id}")).json()
            assert story["events"][0]["kind"] == "received"
            assert (await client.get("/v1/messages/999999")).status_code == 404
            del client.headers["Authorization"]

            one = f"/v1/messages/{rows[0].row_id}/replay"
            assert (await client.post(one)).status_code == 401
            assert (await client.post(one, headers={"Authorization": "Bearer wrong"})).status_code == 401
            auth = {"Authorization": "Bearer s3cret-for-tests"}
            done = (await client.post(one, headers=auth)).json()
            assert done["items"][0]["result"] == "replayed"
            assert (await gw.journal.get(rows[0].row_id)).state is State.ACCEPTED

            bulk = await client.post("/v1/replay", headers=auth, json={"states": ["dead"], "dry_run": False})
            assert bulk.status_code == 400  # a bulk replay needs confirm=true
            dry = (await client.post("/v1/replay", headers=auth, json={"states": ["dead"]})).json()
            assert dry["dry_run"] and dry["count"] == 2
            assert (await gw.journal.get(rows[1].row_id)).state is State.DEAD
            real = await client.post(
                "/v1/replay", headers=auth, json={"states": ["dead"], "dry_run": False, "confirm": True}
            )
            assert real.json()["count"] == 2
            assert (
                await client.post("/v1/replay", headers=auth, json={"states": ["dead"], "colour": 1})
            ).status_code == 422
        trail = await gw.audit_store.query(AuditQuery(actor="api:admin"))
        assert sorted(r.row_id for r in trail) == [r.row_id for r in rows]
