"""Every DICOM file of the shared corpus, and the B-DICOM bad inputs: a document or a clean refusal."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from passerelle.errors import MappingError, ParseError, PasserelleError, UnsupportedMessageError
from passerelle.mappings.dicom.kos import map_dicom
from passerelle.mappings.document import Document, Provenance
from tests.support.conformance import dciodvfy_errors
from tests.support.dicom_samples import make_kos

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)

#: corpus path -> expected outcome: "kos" (a manifest document) or the refusal class.
EXPECTED: dict[str, object] = {
    "dicom/kos/fr-drimbox/ko.dcm": "kos",
    "xds/fr-drimbox-xdm/KA202401/IHE_XDM/SS000001/KOS_1_1.DCM": "kos",
    "dicom/sr/highdicom/sr_document.dcm": MappingError,
    "dicom/sr/highdicom/sr_document_with_multiple_groups.dcm": MappingError,
    "dicom/sr/pydicom/reportsi.dcm": MappingError,
    "dicom/sr/pydicom/reportsi_with_empty_number_tags.dcm": MappingError,
    "dicom/sr/pydicom/test-SR.dcm": MappingError,
    "dicom/headers/pydicom/no_meta.dcm": ParseError,
    "dicom/headers/pydicom/meta_missing_tsyntax.dcm": ParseError,
    "dicom/headers/pydicom/MR_truncated.dcm": ParseError,
    "dicom/headers/pydicom/badVR.dcm": UnsupportedMessageError,  # RT Dose: never a document
    "dicom/headers/pydicom-dicomdir/DICOMDIR": UnsupportedMessageError,
}


def _corpus_files(corpus: Path) -> list[str]:
    files = [p for p in (corpus / "dicom").rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".txt")]
    files = [p for p in files if p.name not in ("README", "INDEX.md")]
    return [
        *sorted(str(p.relative_to(corpus)) for p in files),
        "xds/fr-drimbox-xdm/KA202401/IHE_XDM/SS000001/KOS_1_1.DCM",
    ]


def _map(raw: bytes) -> Document:
    return map_dicom(raw, now=NOW, test_environment=True, patient_id_map=None, provenance=Provenance())


def test_every_corpus_dicom_file_is_a_document_or_a_clean_refusal(corpus_dir: Path) -> None:
    outcomes: dict[str, object] = {}
    for name in _corpus_files(corpus_dir):
        raw = (corpus_dir / name).read_bytes()
        try:
            doc = _map(raw)
        except PasserelleError as exc:  # anything else (RecursionError, KeyError...) fails the test
            outcomes[name] = type(exc)
            assert exc.message and len(exc.message) < 200
        else:
            assert doc.type_code.code == "IMG-KOS"
            outcomes[name] = "kos"
    for name, expected in EXPECTED.items():
        assert outcomes[name] == expected, name
    # every other corpus file is an image or another non-document object
    for name, got in outcomes.items():
        if name not in EXPECTED:
            assert got is UnsupportedMessageError, name
    assert len(outcomes) >= 30


@pytest.mark.parametrize(
    "name", ["dicom/kos/fr-drimbox/ko.dcm", "xds/fr-drimbox-xdm/KA202401/IHE_XDM/SS000001/KOS_1_1.DCM"]
)
def test_forwarded_corpus_kos_passes_dciodvfy(corpus_dir: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "kos.dcm"
    out.write_bytes(_map((corpus_dir / name).read_bytes()).content)
    assert dciodvfy_errors(out) == []


def test_forwarded_synthetic_kos_passes_dciodvfy(tmp_path: Path) -> None:
    out = tmp_path / "kos.dcm"
    out.write_bytes(_map(make_kos()).content)
    assert dciodvfy_errors(out) == []


# --- B-DICOM (docs/bad-input.md) -----------------------------------------------------------------


def _header() -> bytes:
    raw = make_kos()
    ds = pydicom.dcmread(io.BytesIO(raw))
    return raw[: 132 + 12 + ds.file_meta.FileMetaInformationGroupLength]


def _nested(depth: int) -> bytes:
    sq = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (sq + item) * depth + end * depth


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"MSH|^~\\&|not dicom",
        bytes(132),
        bytes(128) + b"DICM",
        make_kos()[:700],
        make_kos()[:-5],
    ],
    ids=["empty", "hl7", "no-dicm", "dicm-only", "truncated-meta", "truncated-end"],
)
def test_not_dicom_or_truncated_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        _map(raw)


def test_every_cut_of_a_kos_is_refused_cleanly() -> None:
    raw = make_kos()
    for cut in range(0, len(raw), 37):
        with pytest.raises(PasserelleError):
            _map(raw[:cut])


@pytest.mark.parametrize("depth", [40, 400, 5000])
def test_deep_sequence_nesting_is_refused(depth: int) -> None:
    with pytest.raises(ParseError, match="nested"):
        _map(_header() + _nested(depth))


def test_declared_length_past_the_end_is_refused_before_use() -> None:
    element = struct.pack("<HH", 0x0040, 0xA160) + b"UT\0\0" + struct.pack("<I", 0xFFFFFFF0) + b"abc"
    with pytest.raises(ParseError, match="declares"):
        _map(_header() + element)
