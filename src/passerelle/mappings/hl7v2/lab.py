"""IHE LAB-3 discrete results (ORU^R01 without an embedded document) as plain values.

The ORDER_OBSERVATION groups are rebuilt from segment order: an OBR opens an order, the OBX and NTE
that follow belong to it (an NTE after an OBX belongs to that observation). This is what a CR-BIO
generator needs; no coding-system lookup happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passerelle.mappings.document import Code
from passerelle.mappings.hl7v2.decode import Message, Segment
from passerelle.mappings.hl7v2.errors import SegmentSequenceError


@dataclass(frozen=True, slots=True)
class LabObservation:
    set_id: str  # OBX-1
    value_type: str  # OBX-2 (NM, ST, CWE, SN, TX, FT...)
    code: Code  # OBX-3
    values: tuple[str, ...]  # OBX-5 repetitions, first component unescaped (SN/CWE: see raw_values)
    raw_values: tuple[str, ...]  # OBX-5 repetitions as sent (components kept, escaped)
    units: Code | None  # OBX-6
    reference_range: str  # OBX-7
    abnormal_flags: tuple[str, ...]  # OBX-8
    status: str  # OBX-11 (F, C, D, P...)
    observed_at: str  # OBX-14
    notes: tuple[str, ...] = ()  # NTE-3 following the OBX


@dataclass(frozen=True, slots=True)
class LabOrder:
    placer_id: str  # OBR-2.1
    filler_id: str  # OBR-3.1
    code: Code  # OBR-4
    observed_at: str  # OBR-7
    result_status: str  # OBR-25
    order_control: str  # ORC-1 of the ORC before this OBR ("" when none)
    observations: tuple[LabObservation, ...] = ()
    notes: tuple[str, ...] = ()  # NTE-3 directly after the OBR


@dataclass(slots=True)
class _OrderBuilder:
    obr: Segment
    orc: Segment | None
    observations: list[LabObservation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _code(msg: Message, seg: Segment, n: int) -> Code:
    return Code(code=msg.value(seg, n), display=msg.value(seg, n, 2), system=msg.value(seg, n, 3))


def _observation(msg: Message, obx: Segment, notes: tuple[str, ...] = ()) -> LabObservation:
    reps = msg.repetitions(obx.field(5))
    units = _code(msg, obx, 6) if msg.value(obx, 6) else None
    return LabObservation(
        set_id=msg.value(obx, 1),
        value_type=msg.value(obx, 2).upper(),
        code=_code(msg, obx, 3),
        values=tuple(msg.component(r, 1) for r in reps),
        raw_values=tuple(reps),
        units=units,
        reference_range=msg.value(obx, 7),
        abnormal_flags=tuple(msg.component(r, 1) for r in msg.repetitions(obx.field(8))),
        status=msg.value(obx, 11).upper(),
        observed_at=msg.value(obx, 14),
        notes=notes,
    )


def read_lab_results(msg: Message) -> tuple[LabOrder, ...]:
    """Orders with their observations, in message order. An OBX before any OBR is a structure error."""
    builders: list[_OrderBuilder] = []
    last_orc: Segment | None = None
    pending_obx: Segment | None = None
    pending_notes: list[str] = []

    def flush() -> None:
        nonlocal pending_obx, pending_notes
        if pending_obx is not None:
            builders[-1].observations.append(_observation(msg, pending_obx, tuple(pending_notes)))
        pending_obx, pending_notes = None, []

    for index, seg in enumerate(msg.segments, start=1):
        if seg.name == "ORC":
            flush()
            last_orc = seg
        elif seg.name == "OBR":
            flush()
            builders.append(_OrderBuilder(seg, last_orc))
            last_orc = None
        elif seg.name == "OBX":
            if not builders:
                raise SegmentSequenceError("OBX before any OBR", location=f"OBX^{index}")
            flush()
            pending_obx = seg
        elif seg.name == "NTE" and builders:
            text = msg.value(seg, 3)
            if pending_obx is not None:
                pending_notes.append(text)
            else:
                builders[-1].notes.append(text)
    if builders:
        flush()
    return tuple(
        LabOrder(
            placer_id=msg.value(b.obr, 2),
            filler_id=msg.value(b.obr, 3),
            code=_code(msg, b.obr, 4),
            observed_at=msg.value(b.obr, 7),
            result_status=msg.value(b.obr, 25).upper(),
            order_control=msg.value(b.orc, 1).upper() if b.orc is not None else "",
            observations=tuple(b.observations),
            notes=tuple(b.notes),
        )
        for b in builders
    )
