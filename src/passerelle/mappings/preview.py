"""The engine of ``passerelle map FILE... --out DIR``: decode, apply the identity rules and map files,
then write what would be sent — nothing is journaled or delivered (docs/mapping.md).

For every document produced from an input file it writes, in ``out_dir``:

* ``<stem>[.<n>].content.<xml|dcm|bin>``: the document bytes exactly as they would be sent;
* ``<stem>[.<n>].metadata.json``: :meth:`Document.metadata` (XDS/MHD metadata, hash, size);
* ``<stem>[.<n>].bundle.json``: the ITI-65 bundle (not for deletions, which are not bundles).

A refused file gives ``<stem>.refusal.json`` naming the rule broken (``rule`` = the error's reason
code, ``error`` = its class, ``detail`` = the PHI-free message, ``location``).

Formats are detected when not given: MLLP framing (0x0B … 0x1C 0x0D) is stripped, a UTF-8 BOM and
leading blanks are ignored, ``MSH`` → hl7v2, ``<`` → cda, ``DICM`` at offset 128 → dicom. DICOM goes
through :func:`passerelle.mappings.dicom.kos.map_dicom`; discrete LAB-3 results (an ORU^R01 without an
embedded document) through ``lab_mapper(raw, provenance, now)`` when the caller passes one (the CLI
builds it from the CR-BIO settings: ``crbio.from_oru`` + ``generate`` + ``to_document``), else they are
refused with rule ``lab``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from passerelle.errors import MappingError, PasserelleError, UnsupportedMessageError
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.document import Action, Code, Document, Provenance

FORMATS = ("hl7v2", "cda", "dicom")
MLLP_START = b"\x0b"
MLLP_END = b"\x1c\r"
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_CONTENT_TYPE = Code(code="04", system="1.2.250.1.213.2.2", display="Hospitalisation de jour")
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")

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
    if data.startswith(MLLP_START):
        data = data[1:]
        end = data.rfind(MLLP_END)
        if end == -1 and data.endswith(b"\x1c"):
            end = len(data) - 1
        if end != -1:
            data = data[:end]
    return data


def detect_format(raw: bytes) -> str:
    """``hl7v2`` / ``cda`` / ``dicom``, or ``unknown``."""
    if raw[128:132] == b"DICM":
        return "dicom"
    data = strip_mllp(raw)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    data = data.lstrip(b" \t\r\n")
    if data.startswith(b"MSH") and len(data) > 3:
        return "hl7v2"
    if data.startswith(b"<"):
        return "cda"
    return "unknown"


# --- mapping one file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewOptions:
    test_environment: bool
    now: datetime
    sender_charset: str | None = None
    patient_id_map: Mapping[str, tuple[str, str]] | None = None
    source_id: str = ""
    content_type: Code = DEFAULT_CONTENT_TYPE
    lab_mapper: LabMapper | None = None


def _map_hl7(raw: bytes, opts: PreviewOptions, prov: Provenance) -> list[Document]:
    from passerelle.mappings.hl7v2.decode import decode_message
    from passerelle.mappings.hl7v2.documents import embedded_documents, map_hl7_message

    msg = decode_message(strip_mllp(raw), fallback_charset=opts.sender_charset)
    code = msg.value(msg.msh, 9, 1).strip().upper()
    trigger = msg.value(msg.msh, 9, 2).strip().upper()
    if code == "ORU" and trigger == "R01" and not embedded_documents(msg):
        if opts.lab_mapper is None:
            raise MappingError("discrete lab results: CR-BIO generation not configured", reason="lab")
        mapped = opts.lab_mapper(strip_mllp(raw), prov, opts.now)
        return [mapped] if isinstance(mapped, Document) else list(mapped)
    return map_hl7_message(msg, test_environment=opts.test_environment, now=opts.now, provenance=prov)


def _map_dicom(raw: bytes, opts: PreviewOptions, prov: Provenance) -> list[Document]:
    map_dicom = _optional("passerelle.mappings.dicom.kos", "map_dicom")
    if map_dicom is None:
        raise UnsupportedMessageError("dicom mapping unavailable", reason="dicom_unavailable")
    doc = map_dicom(
        raw, now=opts.now, test_environment=opts.test_environment, patient_id_map=opts.patient_id_map, provenance=prov
    )
    if not isinstance(doc, Document):
        raise MappingError("dicom mapping returned no document", reason="mapping")
    return [doc]


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


def map_file(raw: bytes, fmt: str, opts: PreviewOptions, prov: Provenance) -> list[Document]:
    """Intake decoding + identity rules + mapping for one file; raises the PasserelleError of the refusal."""
    if fmt == "hl7v2":
        return _map_hl7(raw, opts, prov)
    if fmt == "cda":
        return [map_cda_document(raw, test_environment=opts.test_environment, now=opts.now, provenance=prov)]
    if fmt == "dicom":
        return _map_dicom(raw, opts, prov)
    raise UnsupportedMessageError("format not recognised (expected HL7v2, CDA or DICOM)", reason="format")


# --- writing ---------------------------------------------------------------------------------------


def _bundle(doc: Document, opts: PreviewOptions) -> dict[str, Any] | None:
    if doc.action is Action.DELETE:
        return None
    try:
        from passerelle.mappings.mhd import bundle as mhd
    except ImportError:  # pragma: no cover - the builder ships with the package
        return None
    source_id = opts.source_id or mhd.derived_oid("passerelle-source-id")
    info = mhd.SubmissionInfo(
        source_id=source_id,
        submission_time=doc.creation_time,
        content_type=opts.content_type,
        author=doc.submission_author,
    )
    return mhd.build_provide_bundle([doc], info)


def _extension(doc: Document) -> str:
    if doc.mime_type == "application/dicom":
        return "dcm"
    if doc.mime_type.endswith("xml"):
        return "xml"
    return "bin"


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _stem(path: Path, used: set[str]) -> str:
    base = _SAFE_STEM.sub("_", path.stem) or "input"
    stem, n = base, 2
    while stem in used:
        stem = f"{base}-{n}"
        n += 1
    used.add(stem)
    return stem


def preview_files(
    paths: Iterable[Path],
    out_dir: Path,
    *,
    fmt: str | None = None,
    test_environment: bool = False,
    now: datetime,
    sender_charset: str | None = None,
    patient_id_map: Mapping[str, tuple[str, str]] | None = None,
    source_id: str = "",
    content_type: Code = DEFAULT_CONTENT_TYPE,
    lab_mapper: LabMapper | None = None,
) -> list[PreviewResult]:
    """Preview every file; returns one result per document written or per refused file."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    opts = PreviewOptions(
        test_environment=test_environment,
        now=now,
        sender_charset=sender_charset,
        patient_id_map=patient_id_map,
        source_id=source_id,
        content_type=content_type,
        lab_mapper=lab_mapper,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[PreviewResult] = []
    for path in paths:
        path = Path(path)
        stem = _stem(path, used)
        raw = path.read_bytes()
        kind = fmt or detect_format(raw)
        prov = Provenance(channel="preview", sender="preview", message_id=path.name)
        try:
            docs = map_file(raw, kind, opts, prov)
        except PasserelleError as exc:
            refusal = {
                "file": path.name,
                "format": kind,
                "rule": exc.reason,
                "error": type(exc).__name__,
                "detail": exc.message,
                "location": exc.location,
            }
            written = _write_json(out_dir / f"{stem}.refusal.json", refusal)
            results.append(PreviewResult(path, kind, refusal=refusal, files=(written,)))
            continue
        for index, doc in enumerate(docs, start=1):
            name = stem if len(docs) == 1 else f"{stem}.{index}"
            content = out_dir / f"{name}.content.{_extension(doc)}"
            content.write_bytes(doc.content)
            files = [content, _write_json(out_dir / f"{name}.metadata.json", doc.metadata())]
            notes: list[str] = []
            try:
                bundle = _bundle(doc, opts)
            except ValueError as exc:  # the builder refuses e.g. a document without INS
                bundle = None
                notes.append(f"no bundle: {exc}")
            if bundle is not None:
                files.append(_write_json(out_dir / f"{name}.bundle.json", bundle))
            elif doc.action is Action.DELETE:
                notes.append("deletion: no ITI-65 bundle (sent as a delete request)")
            results.append(PreviewResult(path, kind, document=doc, files=tuple(files), index=index, notes=tuple(notes)))
    return results
