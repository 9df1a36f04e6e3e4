"""What ``passerelle map FILE...`` shows, without the files: decode, apply the identity rules and map one
input, and build what would be sent — nothing is journaled or delivered (docs/mapping.md).

Pure: the caller reads the files and writes the results (``connector/cli/preview.py``). Formats are
detected when not given: MLLP framing (0x0B … 0x1C 0x0D) is stripped, a UTF-8 BOM and leading blanks
are ignored, ``MSH`` → hl7v2, ``<`` → cda, ``DICM`` at offset 128 → dicom. DICOM goes through
:func:`passerelle.mappings.dicom.kos.map_dicom`; discrete LAB-3 results (an ORU^R01 without an embedded
document) through ``lab_mapper(raw, provenance, now)`` when the caller passes one (the CLI builds it
from the CR-BIO settings), else they are refused with rule ``lab``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from passerelle.errors import MappingError, PasserelleError, UnsupportedMessageError
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.dicom.kos import map_dicom
from passerelle.mappings.document import Action, Code, Document, Provenance
from passerelle.mappings.hl7v2.decode import Message, decode_message
from passerelle.mappings.hl7v2.documents import map_hl7_message
from passerelle.mappings.hl7v2.header import read_header
from passerelle.mappings.hl7v2.mllp import END_BLOCK, FS, START_BLOCK
from passerelle.mappings.hl7v2.volet import MessageKind, classify
from passerelle.mappings.mhd import bundle as mhd

FORMATS = ("hl7v2", "cda", "dicom")
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_CONTENT_TYPE = Code(code="04", system="1.2.250.1.213.2.2", display="Hospitalisation de jour")

#: Discrete LAB-3 ORU^R01 (frame payload) → generated CR-BIO document(s).
LabMapper = Callable[[bytes, Provenance, datetime], "Document | Sequence[Document]"]


@dataclass(frozen=True)
class PreviewResult:
    """One line of the preview: a document written, or the refusal of a file."""

    source: Path
    fmt: str
    document: Document | None = None
    refusal: dict[str, str] | None = None
    files: tuple[Path, ...] = ()
    index: int = 1  # document number within the source file (a message may carry N1 + N3)
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.document is not None

    def summary_line(self) -> str:
        if self.document is not None:
            d = self.document
            return (
                f"OK      {self.source.name}#{self.index} [{self.fmt}] {d.action.value} {d.unique_id} "
                f"type={d.type_code.code} format={d.format_code.code}"
            )
        refusal = self.refusal or {}
        return f"REFUSED {self.source.name} [{self.fmt}] {refusal.get('rule', '?')}: {refusal.get('detail', '')}"

    def row(self) -> dict[str, str]:
        """The table row used by docs/corpus-mapping.md (identifiers and codes only)."""
        if self.document is None:
            refusal = self.refusal or {}
            return {"refusal": f"{refusal.get('rule', '?')}: {refusal.get('detail', '')}"}
        d = self.document
        return {
            "action": d.action.value,
            "type": d.type_code.code,
            "class": d.class_code.code,
            "format": d.format_code.code,
            "confidentiality": " ".join(c.code for c in d.confidentiality),
            "patient": f"{d.patient.ins}@{d.patient.ins_oid}" if d.patient.ins else "(no INS)",
            "author": d.author.person_id or d.author.device,
            "facility": d.facility_type.code if d.facility_type else "",
            "practice": d.practice_setting.code if d.practice_setting else "",
            "reference_ids": " ".join(f"{r.type.rsplit(':', 1)[-1]}={r.value}" for r in d.reference_ids),
        }


def strip_mllp(raw: bytes) -> bytes:
    data = raw
    if data.startswith(START_BLOCK):
        data = data[1:]
        end = data.rfind(END_BLOCK)
        if end == -1 and data.endswith(bytes([FS])):
            end = len(data) - 1
        if end != -1:
            data = data[:end]
    return data


def detect_format(raw: bytes) -> str:
    """``hl7v2`` / ``cda`` / ``dicom``, or ``unknown``."""
    if raw[128:132] == b"DICM":
        return "dicom"
    data = strip_mllp(raw).removeprefix(UTF8_BOM).lstrip(b" \t\r\n")
    if data.startswith(b"MSH") and len(data) > 3:
        return "hl7v2"
    if data.startswith(b"<"):
        return "cda"
    return "unknown"


@dataclass(frozen=True)
class PreviewOptions:
    test_environment: bool
    now: datetime
    #: how an HL7v2 payload is decoded: the site's per-sender options (``Hl7IntakeSettings.decode_incoming``),
    #: so a preview reads a message as the gateway would; None: MSH-18 only
    decode: Callable[[bytes], Message] | None = None
    patient_id_map: Mapping[str, tuple[str, str]] | None = None
    source_id: str = ""
    content_type: Code = DEFAULT_CONTENT_TYPE
    lab_mapper: LabMapper | None = None


def _map_hl7(raw: bytes, opts: PreviewOptions, prov: Provenance) -> list[Document]:
    payload = strip_mllp(raw)
    msg = opts.decode(payload) if opts.decode is not None else decode_message(payload)
    classified = classify(msg, read_header(msg), test_environment=opts.test_environment, check_documents=False)
    if classified.kind is MessageKind.LAB_RESULTS:
        if opts.lab_mapper is None:
            raise MappingError("discrete lab results: CR-BIO generation not configured", reason="lab")
        mapped = opts.lab_mapper(payload, prov, opts.now)
        return [mapped] if isinstance(mapped, Document) else list(mapped)
    return map_hl7_message(msg, test_environment=opts.test_environment, now=opts.now, provenance=prov)


def map_file(raw: bytes, fmt: str, opts: PreviewOptions, prov: Provenance) -> list[Document]:
    """Intake decoding + identity rules + mapping for one file; raises the PasserelleError of the refusal."""
    if fmt == "hl7v2":
        return _map_hl7(raw, opts, prov)
    if fmt == "cda":
        return [map_cda_document(raw, test_environment=opts.test_environment, now=opts.now, provenance=prov)]
    if fmt == "dicom":
        return [
            map_dicom(
                raw,
                now=opts.now,
                test_environment=opts.test_environment,
                patient_id_map=opts.patient_id_map,
                provenance=prov,
            )
        ]
    raise UnsupportedMessageError("format not recognised (expected HL7v2, CDA or DICOM)", reason="format")


def refusal(exc: PasserelleError, name: str, fmt: str) -> dict[str, str]:
    """The rule a file broke: reason code, error class, PHI-free message and location."""
    return {
        "file": name,
        "format": fmt,
        "rule": exc.reason,
        "error": type(exc).__name__,
        "detail": exc.message,
        "location": exc.location,
    }


def provide_bundle(doc: Document, opts: PreviewOptions) -> dict[str, Any] | None:
    """The ITI-65 bundle that would be sent for ``doc`` (None for a deletion, which is not a bundle).
    Raises ValueError when the builder refuses the document (e.g. no INS)."""
    if doc.action is Action.DELETE:
        return None
    source_id = opts.source_id or mhd.derived_oid("passerelle-source-id")
    info = mhd.SubmissionInfo(
        source_id=source_id,
        submission_time=doc.creation_time,
        content_type=opts.content_type,
        author=doc.submission_author,
    )
    return mhd.build_provide_bundle([doc], info)


def preview(raw: bytes, fmt: str | None, name: str, opts: PreviewOptions) -> list[PreviewResult]:
    """Every document ``raw`` maps to, or the refusal of the file (nothing written)."""
    kind = fmt or detect_format(raw)
    source = Path(name)
    prov = Provenance(channel="preview", sender="preview", message_id=name)
    try:
        docs = map_file(raw, kind, opts, prov)
    except PasserelleError as exc:
        return [PreviewResult(source, kind, refusal=refusal(exc, name, kind))]
    return [PreviewResult(source, kind, document=doc, index=i) for i, doc in enumerate(docs, start=1)]
