"""Outbound MLLP: send one HL7v2 message (e.g. the ZAM^Z01 business ACK) and read its acknowledgement.

Contract of :meth:`MllpClient.send`:

* opens a connection (TLS when an :class:`ssl.SSLContext` is given), writes one frame, reads one
  reply frame (bounded by ``max_reply_bytes``, junk before VT skipped), closes;
* returns an :class:`AckResult` whose ``code`` is MSA-1 (``AA``/``AE``/``AR``/``CA``/``CE``/``CR``):
  a negative code is an answer, not an error; deciding what it means is the caller's job;
* the reply must echo our MSH-10 in MSA-2, otherwise :class:`AckMismatchError` (Mirth #1441: an ACK
  for another message must never settle this one);
* transport failures (refused, reset, TLS failure, timeout) and mismatched or unreadable replies are
  :class:`passerelle.errors.RemoteTransientError` subclasses and are retried with bounded, jittered
  exponential backoff; the same bytes (same MSH-10) are resent, so a receiver that deduplicates sees
  one message. After the last attempt the last error is raised.
* logs carry host, port, sizes, MSH-10 and MSA-1, never the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import KW_ONLY, dataclass

from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from passerelle.errors import ParseError, RemoteTransientError
from passerelle.mappings.hl7v2.mllp import END_BLOCK, frame, reply_payload

log = logging.getLogger(__name__)


class AckTimeoutError(RemoteTransientError, reason="ack_timeout"):
    """No complete reply before the timeout (the message may or may not have been taken)."""


class AckConnectionError(RemoteTransientError, reason="ack_connection"):
    """Connection refused, reset or TLS failure."""


class AckMismatchError(RemoteTransientError, reason="ack_mismatch"):
    """The reply is not an acknowledgement of the message sent (MSA-2 differs, no MSA, too large)."""


@dataclass(frozen=True, slots=True)
class AckResult:
    code: str  # MSA-1
    control_id: str  # MSA-2 (= MSH-10 of the message sent)
    text: str  # MSA-3 as sent by the peer (may be empty); not logged
    raw: bytes


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: at most ``attempts`` tries within ``deadline`` seconds, waiting
    ``initial`` * 2^n (capped at ``max_wait``) plus up to ``jitter`` seconds between tries."""

    attempts: int = 5
    deadline: float = 120.0
    initial: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0


#: The retry policy of :class:`MllpClient` when none is given.
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class MllpClient:
    """Sends HL7v2 messages over MLLP to one partner (``host``, ``port``)."""

    host: str
    port: int
    _: KW_ONLY
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 10.0
    ack_timeout: float = 30.0
    max_reply_bytes: int = 1024 * 1024
    retry: RetryPolicy = DEFAULT_RETRY

    async def send(self, message: bytes) -> AckResult:
        """Send ``message`` (ER7 bytes, no framing), return its acknowledgement (see module doc).

        Raises :class:`passerelle.errors.ParseError` if ``message`` has no readable MSH-10 (not
        retried), or a :class:`passerelle.errors.RemoteTransientError` subclass after the last attempt.
        """
        control_id = _control_id(message)
        policy = self.retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
            wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.max_wait, jitter=policy.jitter),
            retry=retry_if_exception_type(RemoteTransientError),
            reraise=True,
            before_sleep=before_sleep_log(log, logging.WARNING),
        )
        async for attempt in retrying:
            with attempt:
                return await self.send_once(message, control_id)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def send_once(self, message: bytes, control_id: str | None = None) -> AckResult:
        """One attempt, no retry."""
        if control_id is None:
            control_id = _control_id(message)
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname if self.ssl_context is not None else None,
                    limit=self.max_reply_bytes + 16,
                )
        except TimeoutError as exc:
            raise AckConnectionError(f"connect to {self.host}:{self.port} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise AckConnectionError(f"connect to {self.host}:{self.port} failed: {type(exc).__name__}") from exc
        try:
            writer.write(frame(message))
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await writer.drain()
                    raw = await self._read_reply(reader)
            except TimeoutError as exc:
                raise AckTimeoutError(f"no reply from {self.host}:{self.port} for {control_id}") from exc
            except (OSError, ssl.SSLError) as exc:
                raise AckConnectionError(f"{self.host}:{self.port}: {type(exc).__name__}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
        result = parse_ack(raw)
        if result.control_id != control_id:
            raise AckMismatchError(f"reply acknowledges another message (sent {control_id})")
        log.info(
            "mllp message %s sent to %s:%d (%d bytes): %s",
            control_id,
            self.host,
            self.port,
            len(message),
            result.code,
        )
        return result

    async def _read_reply(self, reader: asyncio.StreamReader) -> bytes:
        """The payload of the first reply frame (bytes before its VT skipped), at most ``max_reply_bytes``."""
        try:
            data = await reader.readuntil(END_BLOCK)
        except asyncio.LimitOverrunError as exc:
            raise AckMismatchError(f"reply larger than {self.max_reply_bytes} bytes") from exc
        except asyncio.IncompleteReadError as exc:
            raise AckConnectionError(f"{self.host}:{self.port} closed before replying") from exc
        payload = reply_payload(data)
        if payload is None:
            raise AckMismatchError("reply without MLLP start block")
        return payload


def _segments(payload: bytes) -> list[bytes]:
    return [s for s in payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s]


def _control_id(message: bytes) -> str:
    segs = _segments(message)
    if not segs or not segs[0].startswith(b"MSH") or len(segs[0]) < 4:
        raise ParseError("message does not start with MSH", location="MSH")
    fields = segs[0].split(segs[0][3:4])
    if len(fields) < 10 or not fields[9]:
        raise ParseError("message has no MSH-10", location="MSH-10")
    return fields[9].decode("ascii", "strict") if fields[9].isascii() else fields[9].decode("latin-1")


def parse_ack(payload: bytes) -> AckResult:
    """Read MSA-1/2/3 of an acknowledgement payload; :class:`AckMismatchError` if there is no MSA."""
    segs = _segments(payload)
    if not segs or not segs[0].startswith(b"MSH") or len(segs[0]) < 4:
        raise AckMismatchError("reply is not an HL7 message")
    sep = segs[0][3:4]
    for seg in segs[1:]:
        if seg.startswith(b"MSA" + sep):
            fields = seg.split(sep)
            code = fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
            ctrl = fields[2].decode("latin-1") if len(fields) > 2 else ""
            text = fields[3].decode("latin-1") if len(fields) > 3 else ""
            if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
                raise AckMismatchError("reply has no valid MSA-1")
            return AckResult(code=code, control_id=ctrl, text=text, raw=payload)
    raise AckMismatchError("reply has no MSA segment")


async def send_message(
    host: str,
    port: int,
    message: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    ack_timeout: float = 30.0,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> str:
    """Send one message with :class:`MllpClient` and return MSA-1 of its acknowledgement."""
    client = MllpClient(
        host, port, ssl_context=ssl_context, server_hostname=server_hostname, ack_timeout=ack_timeout, retry=retry
    )
    return (await client.send(message)).code
