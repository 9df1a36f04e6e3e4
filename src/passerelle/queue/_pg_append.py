"""One PostgreSQL append transaction, step by step (docs/adr/0012-postgres-journal.md).

1. lock the lanes of the accepted items, sorted (two batches never wait on each other in a cycle);
2. only then take message ids ("intake takes the lane before it takes the id");
3. insert the dedup keys of accepted items, first writer wins (across instances too);
4. look up the keys that were not ours (a new statement: it sees a concurrent commit);
5. decide every item's answer; 6. write the rows and the new lane heads in one statement.

The database computes what the row records of the payload (size, SHA-256, the first
:data:`~passerelle.queue.model.REJECTED_PAYLOAD_LIMIT` bytes of a rejected message), off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

from passerelle.queue._pg import Conn, text
from passerelle.queue.model import AppendResult, Inbound, State


class Retry(Exception):
    """A dedup key vanished between its conflict and its lookup (trimmed): run the append again."""


#: (content hash, row id, ack) of the row holding a dedup key.
Holder = tuple[str, int, bytes]

_INSERT_ROWS = (
    "WITH t AS ("
    " SELECT * FROM unnest(%(id)s::bigint[], %(channel)s::text[], %(sender)s::text[], %(kind)s::text[],"
    "  %(message_id)s::text[], %(dedup_key)s::text[], %(content_hash)s::text[], %(lane)s::text[],"
    "  %(state)s::text[], %(detail)s::text[], %(raw)s::bytea[], %(ack)s::bytea[], %(kept)s::int[])"
    "  AS t(id, channel, sender, kind, message_id, dedup_key, content_hash, lane, state, detail, raw, ack, kept)"
    "), m AS ("
    " INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, message_id, dedup_key,"
    "  content_hash, lane, state, detail, raw, ack, next_due, size, sha256)"
    " SELECT t.id, %(now)s, %(now)s, t.channel, t.sender, t.kind, t.message_id,"
    "  CASE WHEN t.state = 'accepted' THEN t.dedup_key ELSE '' END, t.content_hash, t.lane, t.state, t.detail,"
    "  ''::bytea, t.ack, CASE WHEN t.state = 'accepted' THEN %(now)s::timestamptz END, length(t.raw),"
    "  encode(sha256(t.raw), 'hex') FROM t"
    "), p AS ("
    " INSERT INTO payloads (row_id, raw)"
    " SELECT t.id, CASE WHEN t.state = 'accepted' THEN t.raw ELSE substr(t.raw, 1, t.kept) END FROM t"
    "), up AS ("
    " UPDATE lanes SET head_id = u.head, due_at = %(now)s"
    " FROM unnest(%(up_lane)s::text[], %(up_head)s::bigint[]) AS u(lane, head) WHERE lanes.lane = u.lane"
    ") DELETE FROM lanes WHERE lane = ANY(%(gone)s::text[]) AND head_id IS NULL"
)


@dataclass
class AppendTx:
    """Where each item of a batch ends up, filled step by step by :meth:`run` inside the transaction."""

    conn: Conn
    items: Sequence[Inbound]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    lanes: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # dedup keys as stored ("" = none)
    hashes: list[str] = field(default_factory=list)
    owner: dict[str, int] = field(default_factory=dict)  # key -> index of the first accepted item holding it
    candidates: list[int] = field(default_factory=list)  # indexes that go to the database
    ids: dict[int, int] = field(default_factory=dict)
    headless: set[str] = field(default_factory=set)  # lanes with no head before this batch
    inserted: set[str] = field(default_factory=set)  # keys this batch now holds
    seen: dict[str, Holder] = field(default_factory=dict)  # keys held by an earlier commit

    def __post_init__(self) -> None:
        self.lanes = [text(it.lane) if it.lane else f"row:{uuid4().hex}" for it in self.items]
        self.keys = [text(it.dedup_key) for it in self.items]
        self.hashes = [text(it.content_hash) for it in self.items]
        for i, it in enumerate(self.items):
            key = self.keys[i]
            if key and key in self.owner:
                continue  # answered like the earlier item of this batch that holds the key
            if key and it.state is State.ACCEPTED:
                self.owner[key] = i
            self.candidates.append(i)

    @property
    def accepted(self) -> list[int]:
        return [i for i in self.candidates if self.items[i].state is State.ACCEPTED]

    async def run(self) -> list[AppendResult]:
        await self._lock_lanes()
        await self._take_ids()
        await self._insert_keys()
        await self._lookup_keys()
        results, new = self._decide()
        await self._write(new)
        return results

    async def _lock_lanes(self) -> None:
        lock = sorted({self.lanes[i] for i in self.accepted})
        if lock:
            cur = await self.conn.execute(
                "INSERT INTO lanes (lane) SELECT x FROM unnest(%s::text[]) AS t(x) ORDER BY x "
                "ON CONFLICT (lane) DO UPDATE SET head_id = lanes.head_id RETURNING lane, head_id",
                (lock,),
            )
            self.headless = {lane for lane, head in await cur.fetchall() if head is None}

    async def _take_ids(self) -> None:
        if self.candidates:
            cur = await self.conn.execute(
                "SELECT nextval('messages_id_seq') FROM generate_series(1, %s)", (len(self.candidates),)
            )
            taken = sorted(r[0] for r in await cur.fetchall())
            self.ids = dict(zip(self.candidates, taken, strict=True))

    async def _insert_keys(self) -> None:
        keyed = sorted((self.keys[i], i) for i in self.accepted if self.keys[i])
        if keyed:
            cur = await self.conn.execute(
                "INSERT INTO dedup (dedup_key, content_hash, row_id, created_at) "
                "SELECT k, h, r, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(k, h, r) ORDER BY k "
                "ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
                (self.now, [k for k, _ in keyed], [self.hashes[i] for _, i in keyed], [self.ids[i] for _, i in keyed]),
            )
            self.inserted = {r[0] for r in await cur.fetchall()}

    async def _lookup_keys(self) -> None:
        lookup = {self.keys[i] for i in self.candidates if self.keys[i]} - self.inserted
        if lookup:
            cur = await self.conn.execute(
                "SELECT d.dedup_key, d.content_hash, d.row_id, COALESCE(m.ack, ''::bytea) FROM dedup d "
                "LEFT JOIN messages m ON m.id = d.row_id WHERE d.dedup_key = ANY(%s::text[])",
                (sorted(lookup),),
            )
            self.seen = {r[0]: (r[1], r[2], bytes(r[3])) for r in await cur.fetchall()}
        if {self.keys[i] for i in self.accepted if self.keys[i]} - self.inserted - self.seen.keys():
            raise Retry

    def _holder(self, i: int) -> Holder | None:
        key = self.keys[i]
        if not key:
            return None
        if key in self.seen:
            return self.seen[key]
        first = self.owner.get(key, i)
        if key in self.inserted and first < i:
            return (self.hashes[first], self.ids[first], self.items[first].ack)
        return None

    def _decide(self) -> tuple[list[AppendResult], list[int]]:
        results: list[AppendResult] = []
        new: list[int] = []
        for i in range(len(self.items)):
            prior = self._holder(i)
            if prior is None:
                results.append(AppendResult(row_id=self.ids[i]))
                new.append(i)
                continue
            same = prior[0] == self.hashes[i]
            results.append(AppendResult(row_id=prior[1], duplicate=same, conflict=not same, stored_ack=prior[2]))
        return results, new

    async def _write(self, new: list[int]) -> None:
        """Rows and the new lane heads in one statement. The receipt is the row itself (no event row,
        as in the SQLite journal: intake commits stay small)."""
        heads: dict[str, int] = {}
        for i in new:
            lane = self.lanes[i]
            if self.items[i].state is State.ACCEPTED and lane in self.headless:
                heads.setdefault(lane, self.ids[i])
        gone = sorted(self.headless - heads.keys())
        if not new:
            if gone:
                await self.conn.execute("DELETE FROM lanes WHERE lane = ANY(%s::text[]) AND head_id IS NULL", (gone,))
            return
        items = [self.items[i] for i in new]
        await self.conn.execute(
            _INSERT_ROWS,
            {
                "now": self.now,
                "id": [self.ids[i] for i in new],
                "channel": [text(it.channel) for it in items],
                "sender": [text(it.sender) for it in items],
                "kind": [text(it.kind) for it in items],
                "message_id": [text(it.message_id) for it in items],
                "dedup_key": [self.keys[i] for i in new],
                "content_hash": [self.hashes[i] for i in new],
                "lane": [self.lanes[i] for i in new],
                "state": [it.state.value for it in items],
                "detail": [text(it.detail) for it in items],
                "raw": [bytes(it.raw) for it in items],
                "ack": [bytes(it.ack) for it in items],
                "kept": [it.kept_bytes for it in items],
                "up_lane": list(heads),
                "up_head": list(heads.values()),
                "gone": gone,
            },
        )
