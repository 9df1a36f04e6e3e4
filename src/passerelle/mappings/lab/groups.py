"""The ORDER_OBSERVATION groups of a LAB-3 ORU^R01, rebuilt from segment order.

An OBR opens a group; the OBX and SPM that follow belong to it, and an NTE after an OBX comments that
observation. An OBX before any OBR is a structure error. No coding-system lookup happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passerelle.errors import MappingError
from passerelle.mappings.lab.segments import Seg


@dataclass
class Group:
    obr: Seg
    obx: list[Seg] = field(default_factory=list)
    spm: list[Seg] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)  # OBX occurrence -> NTE-3 texts

    def comment(self, obx: Seg) -> str:
        return " ".join(self.comments.get(obx.occurrence, [])).strip()


def read_groups(segs: list[Seg]) -> list[Group]:
    """The groups in message order; :class:`MappingError` for an OBX before any OBR or no OBR at all."""
    groups: list[Group] = []
    for seg in segs:
        if seg.name == "OBR":
            groups.append(Group(obr=seg))
        elif seg.name == "OBX" and not groups:
            raise MappingError("OBX before any OBR", location=seg.loc(0))
        elif groups:
            _attach(groups[-1], seg)
    if not groups:
        raise MappingError("no OBR segment: nothing to report", location="OBR^1^0")
    return groups


def _attach(group: Group, seg: Seg) -> None:
    if seg.name == "OBX":
        group.obx.append(seg)
    elif seg.name == "SPM":
        group.spm.append(seg)
    elif seg.name == "NTE" and group.obx:
        group.comments.setdefault(group.obx[-1].occurrence, []).append(" ".join(seg.texts(3)).strip())


def order_numbers(segs: list[Seg]) -> tuple[str, str, str]:
    """(placer, filler, key): placer = ORC-2 else OBR-2, filler = ORC-3 else OBR-3, key = placer else filler.

    The key identifies the order in the deterministic ids and in the series of versions."""
    orc = next((s for s in segs if s.name == "ORC"), None)
    obr = next((s for s in segs if s.name == "OBR"), None)
    placer = next((s.value(2) for s in (orc, obr) if s is not None and s.value(2)), "")
    filler = next((s.value(3) for s in (orc, obr) if s is not None and s.value(3)), "")
    if not placer and not filler:
        raise MappingError("neither placer (OBR-2/ORC-2) nor filler (OBR-3/ORC-3) order number", location="OBR^1^2")
    return placer, filler, placer or filler
