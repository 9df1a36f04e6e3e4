"""A located view of the segments of a decoded HL7v2 message, for the CR-BIO reader.

Values come from the project's one HL7v2 decoder (:mod:`passerelle.mappings.hl7v2.decode`: charsets,
escapes, MSH-2 variants); this view only adds what the reader needs to refuse precisely: each
segment's occurrence number, so that an error names ``SEG^occurrence^field`` (never a value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from passerelle.errors import MappingError
from passerelle.mappings.hl7time import parse_hl7_time
from passerelle.mappings.hl7v2.decode import Message, Segment


@dataclass(frozen=True, slots=True)
class Seg:
    """One segment of ``msg``; ``occurrence`` counts segments of the same name from 1."""

    msg: Message
    seg: Segment
    occurrence: int

    @property
    def name(self) -> str:
        return self.seg.name

    def loc(self, n: int) -> str:
        return f"{self.name}^{self.occurrence}^{n}"

    def error(self, n: int, why: str) -> MappingError:
        return MappingError(f"{self.name}-{n}: {why}", location=self.loc(n))

    def text(self, n: int) -> str:
        """Field ``n`` unescaped and stripped, every component and repetition kept."""
        return self.msg.unescape(self.seg.field(n)).strip()

    def value(self, n: int, comp: int = 1, rep: int = 1, sub: int = 1) -> str:
        """Component ``comp`` (subcomponent ``sub``) of repetition ``rep`` (1-based), stripped."""
        return self.msg.value(self.seg, n, comp, sub, rep).strip()

    def texts(self, n: int) -> list[str]:
        """Every repetition of field ``n``, unescaped and stripped."""
        return [self.msg.unescape(rep).strip() for rep in self.reps(n)]

    def reps(self, n: int) -> list[str]:
        """The raw repetitions of field ``n``, for :meth:`part`."""
        return self.msg.repetitions(self.seg.field(n))

    def part(self, raw: str, comp: int = 1, sub: int = 1) -> str:
        """Component / subcomponent of one raw repetition, unescaped and stripped."""
        return self.msg.component(raw, comp, sub).strip()

    def time(self, n: int, tz: tzinfo) -> datetime | None:
        """Field ``n`` (its first component: the start of a DR range) as an HL7 time; None when empty."""
        raw = self.value(n)
        return parse_dtm(raw, tz, where=f"{self.name}-{n}", location=self.loc(n)) if raw else None


def segments(msg: Message) -> list[Seg]:
    counts: dict[str, int] = {}
    out = []
    for seg in msg.segments:
        counts[seg.name] = counts.get(seg.name, 0) + 1
        out.append(Seg(msg, seg, counts[seg.name]))
    return out


def parse_dtm(value: str, tz: tzinfo, *, where: str, location: str) -> datetime:
    """HL7 DTM → aware datetime (``tz`` when no offset); :class:`MappingError` naming the field."""
    try:
        return parse_hl7_time(value, tz)
    except ValueError as exc:
        raise MappingError(f"{where}: not a valid HL7 date/time", location=location) from exc
