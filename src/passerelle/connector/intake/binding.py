"""Sender binding: who a listener authenticated, and which senders that party may speak for.

A listener authenticates the party behind a connection or a request (an MLLP client certificate, a
DICOM calling AE title from an allowed network, an HTTP token) and hands the intake a
:class:`Principal`. The intake compares it with the sender the input *names* (MSH-3/MSH-4, the DICOM
Issuer of Patient ID, ...) before anything enters the duplicate register: an input naming a sender its
principal may not use is refused (:class:`~passerelle.errors.SenderNotAllowedError`, AR / 403 / 0x0124),
journaled as ``rejected`` without a dedup key, audited and counted. ``principal=None`` means the
channel binds nothing (no binding configured): every sender is taken, as before. ADR 0024.

Sender patterns are the channel's sender identities split in components by ``^``; a component ``*``
matches any value of that component (``LIS^*``: application LIS at any facility). Matching is exact
otherwise (case-sensitive, as MSH-3/MSH-4 are compared by the dedup key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from passerelle.observability.audit import AuditTrail

log = logging.getLogger(__name__)

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated party behind one connection or request.

    ``name`` is a PHI-free label for logs and the audit trail (``cert:lis.example.fr``,
    ``ae:CT01``, ``token:lab``); ``senders`` the sender patterns it may use, in the channel's own form
    (HL7v2: ``MSH-3.1^MSH-4.1``; DICOM: an Issuer of Patient ID; HTTP: the token's sender name). An empty
    set allows nothing: a party authenticated but bound to no sender is refused every input.
    """

    name: str
    senders: frozenset[str]

    @classmethod
    def of(cls, name: str, senders: Iterable[str]) -> Principal:
        return cls(name, frozenset(senders))

    def allows(self, sender: str) -> bool:
        """Whether ``sender`` (the identity the input names) matches one of the patterns."""
        return any(_matches(pattern, sender) for pattern in self.senders)

    def first_mismatch(self, sender: str) -> int | None:
        """Index of the first component of ``sender`` that no pattern agreeing on the previous ones
        accepts (to name the field in a refusal), or ``None`` when ``sender`` is allowed."""
        if self.allows(sender):
            return None
        parts = sender.split("^")
        candidates = [p.split("^") for p in self.senders]
        for i, value in enumerate(parts):
            candidates = [c for c in candidates if i < len(c) and c[i] in (WILDCARD, value)]
            if not candidates:
                return i
        return len(parts)

    @property
    def sender(self) -> str:
        """The one sender this principal speaks for ("" when it has several or none, or a wildcard):
        what an HTTP intake bound to a token journals as the row's sender."""
        if len(self.senders) == 1:
            (only,) = self.senders
            return "" if WILDCARD in only.split("^") else only
        return ""


def _matches(pattern: str, sender: str) -> bool:
    want, got = pattern.split("^"), sender.split("^")
    return len(want) == len(got) and all(w in (WILDCARD, g) for w, g in zip(want, got, strict=True))


def valid_pattern(pattern: str, components: int) -> bool:
    """A pattern has exactly ``components`` non-empty components (``*`` allowed for any of them)."""
    parts = pattern.split("^")
    return len(parts) == components and all(p.strip() == p and p for p in parts)


def audit_text(value: str, limit: int = 60) -> str:
    """``value`` reduced to printable ASCII for an audit detail (sender names come from the wire)."""
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:limit]


async def audit_refusal(
    audit: AuditTrail | None, principal: Principal, *, channel: str, row_id: int, message_id: str, claimed: str
) -> None:
    """Record an input refused for its sender (``refusal``, reason ``sender_not_allowed``): the principal
    as actor, the row, the message id and the sender it named; identifiers only. An audit failure is
    logged and does not change the answer (the input is refused either way)."""
    if audit is None:
        return
    detail = f"{channel} message {audit_text(message_id, 64) or '-'} names sender {audit_text(claimed) or '-'}"
    try:
        await audit.record(
            action="refusal",
            outcome="refuse",
            reason="sender_not_allowed",
            row_id=row_id,
            actor=audit_text(principal.name, 120),
            detail=detail,
        )
    except Exception as exc:  # noqa: BLE001 - the refusal stands; the gap in the trail is logged
        log.error("%s intake: audit record of a sender refusal failed: %s", channel, type(exc).__name__)
