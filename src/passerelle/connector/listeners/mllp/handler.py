"""What the MLLP server calls: the HL7 intake, plus ACK-code counting and the oversize reply."""

from __future__ import annotations

from collections.abc import Sequence

from passerelle.connector.intake.binding import Principal
from passerelle.connector.intake.hl7 import Hl7Intake
from passerelle.observability.metrics import Metrics


def msa_code(reply: bytes | None) -> str:
    """MSA-1 of an acknowledgement (``none`` when nothing is sent)."""
    if not reply:
        return "none"
    at = reply.find(b"MSA")
    if at < 0 or len(reply) < at + 6:
        return "unknown"
    return reply[at + 4 : at + 6].decode("ascii", "replace")


class MllpHandler:
    """The MLLP server's handler: the HL7v2 intake, counting the ACK codes it sends."""

    def __init__(self, intake: Hl7Intake, metrics: Metrics) -> None:
        self.intake = intake
        self.metrics = metrics

    async def handle(self, payload: bytes, peer: str, principal: Principal | None = None) -> bytes | None:
        reply = await self.intake.handle(payload, peer, principal)
        self.metrics.acks.labels(msa_code(reply)).inc()
        return reply

    async def handle_batch(
        self, items: Sequence[tuple[bytes, str]], principal: Principal | None = None
    ) -> list[bytes | None]:
        replies = await self.intake.handle_batch(items, principal)
        for reply in replies:
            self.metrics.acks.labels(msa_code(reply)).inc()
        return replies

    async def handle_oversize(self, msh_prefix: bytes, size: int, peer: str) -> bytes | None:
        """Delegates to the intake (journals and counts the refusal, answers with ERR "message too large")."""
        reply = await self.intake.handle_oversize(msh_prefix, size, peer)
        self.metrics.acks.labels(msa_code(reply)).inc()
        return reply
