"""Damaged LAB-3 messages are either read or refused with a typed, PHI-free error — never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passerelle.errors import PasserelleError
from passerelle.mappings.lab import OruContext, from_oru, generate
from passerelle.mappings.samples.lab import (
    SAMPLE_INS,
    SAMPLE_LAB,
    SAMPLE_OID_ROOT,
    SAMPLE_SENDER,
    sample_loinc_table,
    sample_oru,
)

CONTEXT = OruContext(
    oid_root=SAMPLE_OID_ROOT,
    now=datetime(2024, 1, 5, tzinfo=UTC),
    laboratory=SAMPLE_LAB,
    loinc=sample_loinc_table(),
    sender=SAMPLE_SENDER,
    test_environment=True,
)
SEGMENTS = sample_oru().strip("\r").split("\r")
NOISE = st.sampled_from(["", "^", "&", "~", "\\", "|", "x", "12", "-1", "2024", "ZZ", "é", "<5", "1e9", "\\T\\"])


@st.composite
def damaged(draw: st.DrawFn) -> str:
    segments = [s.split("|") for s in SEGMENTS]
    for _ in range(draw(st.integers(1, 4))):
        seg = draw(st.integers(1, len(segments) - 1))  # keep MSH readable; damage the rest
        fields = segments[seg]
        field = draw(st.integers(1, max(1, len(fields) - 1)))
        action = draw(st.sampled_from(["blank", "noise", "drop_segment", "truncate"]))
        if action == "blank" and field < len(fields):
            fields[field] = ""
        elif action == "noise" and field < len(fields):
            fields[field] = draw(NOISE)
        elif action == "truncate":
            segments[seg] = fields[: field + 1]
        elif action == "drop_segment" and len(segments) > 2:
            segments.pop(seg)
    return "\r".join("|".join(f) for f in segments)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_messages_are_read_or_cleanly_refused(text: str) -> None:
    try:
        report = from_oru(text, CONTEXT)
    except PasserelleError as exc:
        assert SAMPLE_INS not in exc.message and "ESSAI" not in exc.message
        assert exc.location
        return
    generated = generate(report)  # whatever was read must also generate
    assert generated.cda.startswith(b"<?xml")
