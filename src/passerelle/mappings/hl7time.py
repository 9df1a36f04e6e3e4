"""HL7 times: the v2 DTM and v3 TS forms ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`` read into aware
datetimes, and written back as CDA timestamps. Pure: the zone of a time without offset is passed in."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_TIME = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def parse_hl7_time(value: str, default_tz: tzinfo) -> datetime:
    """An HL7 time as an aware datetime (``default_tz`` when it carries no offset).

    Raises :class:`ValueError` when the text is not an HL7 time or names an impossible date.
    """
    m = _TIME.match(value.strip())
    if not m:
        raise ValueError("not an HL7 timestamp")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    tz: tzinfo = default_tz
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    parts = (month, day, hour, minute, second)
    month_, day_, hour_, minute_, second_ = (int(p) if p else d for p, d in zip(parts, (1, 1, 0, 0, 0), strict=True))
    micro = int((frac or "0").ljust(6, "0")[:6])
    return datetime(int(year), month_, day_, hour_, minute_, second_, micro, tzinfo=tz)


def cda_timestamp(value: datetime) -> str:
    """CDA TS with seconds and UTC offset (``20240104113000+0100``); a naive time is written as UTC."""
    return value.strftime("%Y%m%d%H%M%S") + (value.strftime("%z") or "+0000")
