"""`passerelle map` preview engine on real files: corpus documents, refusals, bundles checked with fhir.resources."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from passerelle.connector.cli.main import app
from passerelle.connector.cli.preview import preview_files
from passerelle.mappings.preview import detect_format, strip_mllp

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
V21 = "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
SEGUR_INIT = f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
SEGUR_DEL = f"{V21}/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7"
MDM_DEL = f"{V21}/MDM/Suppression_MDM/message_MDM_CR_Radio_DEL_N1.er7"
TSH = "cda/fr-ci-sis-ans/BIO-CR-BIO_2024.01_TSH_1.xml"
KOS = "dicom/kos/fr-drimbox/ko.dcm"

ROOT = Path(__file__).resolve().parents[2]


def _bundle_is_valid_r4(path: Path) -> None:
    bundle_mod = pytest.importorskip("fhir.resources.R4B.bundle")
    bundle_mod.Bundle.model_validate(json.loads(path.read_text(encoding="utf-8")))


def test_format_detection() -> None:
    assert detect_format(b"\x0bMSH|^~\\&|A\r\x1c\r") == "hl7v2"
    assert detect_format(b"\xef\xbb\xbf  <?xml version='1.0'?><x/>") == "cda"
    assert detect_format(b"\x00" * 128 + b"DICM" + b"\x00" * 10) == "dicom"
    assert detect_format(b"%PDF-1.4") == "unknown"
    assert strip_mllp(b"\x0bMSH|x\x1c\r") == b"MSH|x"


def test_preview_of_corpus_documents(corpus_dir: Path, tmp_path: Path) -> None:
    files = [corpus_dir / p for p in (SEGUR_INIT, SEGUR_DEL, MDM_DEL, TSH, KOS)]
    results = preview_files(files, tmp_path, test_environment=True, now=NOW)
    by_name = {r.source.name: r for r in results}

    init = by_name[Path(SEGUR_INIT).name]
    assert init.ok and init.document is not None
    assert init.document.type_code.code == "11502-2"
    assert init.document.format_code.code == "urn:ihe:lab:xd-lab:2008"
    assert (init.document.patient.ins, init.document.patient.ins_oid) == ("279035121518989", "1.2.250.1.213.1.4.10")
    names = sorted(p.name for p in init.files)
    stem = Path(SEGUR_INIT).stem
    assert names == sorted([f"{stem}.content.xml", f"{stem}.metadata.json", f"{stem}.bundle.json"])
    meta = json.loads((tmp_path / f"{stem}.metadata.json").read_text())
    assert meta["unique_id"] == "1.2.250.1.213.1.1.9" and meta["format_code"]["code"] == "urn:ihe:lab:xd-lab:2008"
    assert meta["size"] == len((tmp_path / f"{stem}.content.xml").read_bytes())
    _bundle_is_valid_r4(tmp_path / f"{stem}.bundle.json")
    bundle = json.loads((tmp_path / f"{stem}.bundle.json").read_text())
    binaries = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary"]
    assert base64.b64decode(binaries[0]["data"]) == init.document.content

    refused = by_name[Path(SEGUR_DEL).name]
    assert not refused.ok
    refusal = json.loads((tmp_path / f"{Path(SEGUR_DEL).stem}.refusal.json").read_text())
    assert refusal["rule"] == "identity_not_qualified"
    assert refusal["error"] == "IdentityError"
    assert "279035121518989" not in json.dumps(refusal)

    deletion = by_name[Path(MDM_DEL).name]
    assert deletion.ok and deletion.document is not None and deletion.document.action.value == "delete"
    assert not any(p.name.endswith(".bundle.json") for p in deletion.files)

    tsh = by_name[Path(TSH).name]
    assert tsh.ok and tsh.document is not None and tsh.document.patient.identity_status == "qualified"
    _bundle_is_valid_r4(tmp_path / "BIO-CR-BIO_2024.01_TSH_1.bundle.json")

    kos = by_name["ko.dcm"]
    assert kos.fmt == "dicom"
    if kos.ok:
        assert kos.document is not None and kos.document.mime_type == "application/dicom"
        assert (tmp_path / "ko.content.dcm").exists()
    else:
        assert kos.refusal is not None


def test_production_mode_refuses_test_ins_and_unknown_files(corpus_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    results = preview_files([corpus_dir / TSH, junk], tmp_path / "out", test_environment=False, now=NOW)
    assert [r.ok for r in results] == [False, False]
    assert results[0].refusal is not None and results[0].refusal["rule"] == "identity_not_qualified"
    assert results[1].refusal is not None and results[1].refusal["rule"] == "format"
    assert (tmp_path / "out" / "notes.refusal.json").exists()


def test_forced_format_and_mllp_framed_file(corpus_dir: Path, tmp_path: Path) -> None:
    framed = tmp_path / "framed.hl7"
    framed.write_bytes(b"\x0b" + (corpus_dir / SEGUR_INIT).read_bytes() + b"\x1c\r")
    results = preview_files([framed], tmp_path / "out", fmt="hl7v2", test_environment=True, now=NOW)
    assert results[0].ok
    wrong = preview_files([corpus_dir / TSH], tmp_path / "out2", fmt="hl7v2", test_environment=True, now=NOW)
    assert not wrong[0].ok
    with pytest.raises(ValueError):
        preview_files([framed], tmp_path, fmt="pdf", now=NOW)


def test_corpus_table_script(corpus_dir: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import corpus_table
    finally:
        sys.path.pop(0)
    out = tmp_path / "corpus-mapping.md"
    conformance = tmp_path / "conformance.md"
    conformance.write_text((ROOT / "docs" / "conformance.md").read_text(encoding="utf-8"), encoding="utf-8")
    args = ["--corpus", str(corpus_dir), "--mapping-out", str(out), "--conformance-doc", str(conformance)]
    assert corpus_table.main(args) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if "message_ORU_CR_Bio_INIT_N3_SEGUR" in line)
    assert "| publish | 11502-2 | 10 | urn:ihe:lab:xd-lab:2008 | N | 279035121518989@1.2.250.1.213.1.4.10 |" in row
    assert "**refused** — identity_not_qualified" in text


def test_cli_map_command(corpus_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "p.yaml"
    config.write_text("environment: test\n")
    result = runner.invoke(
        app, ["map", str(corpus_dir / SEGUR_INIT), "--out", str(tmp_path / "out"), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "11502-2" in result.output
    assert (tmp_path / "out" / f"{Path(SEGUR_INIT).stem}.bundle.json").exists()


LAB3 = (
    b"MSH|^~\\&|SIL|LAB|PFI|X|20260101120000||ORU^R01^ORU_R01|L-1|P|2.5.1|||||FRA|UNICODE UTF-8\r"
    b"PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||TEST^ALEX^^^^^L||19790328|F"
    b"|||||||||||||||||||||||VALI\r"
    b"ORC|RE|1|2\r"
    b"OBR|1|1|2|GLU^Glucose^L\r"
    b"OBX|1|NM|14749-6^Glucose^LN||5.1|mmol/L|||||F\r"
)


def test_discrete_lab_results_use_the_lab_mapper(corpus_dir: Path, tmp_path: Path) -> None:
    from passerelle.mappings.cda.reader import map_cda_document
    from passerelle.mappings.document import Provenance

    lab = tmp_path / "lab.hl7"
    lab.write_bytes(LAB3)
    refused = preview_files([lab], tmp_path / "a", test_environment=True, now=NOW)
    assert refused[0].refusal is not None and refused[0].refusal["rule"] == "lab"

    seen: list[bytes] = []

    def lab_mapper(raw: bytes, prov: Provenance, now: datetime):  # type: ignore[no-untyped-def]
        seen.append(raw)
        return map_cda_document((corpus_dir / TSH).read_bytes(), test_environment=True, now=now, provenance=prov)

    done = preview_files([lab], tmp_path / "b", test_environment=True, now=NOW, lab_mapper=lab_mapper)
    assert done[0].ok and seen == [LAB3]
    assert (tmp_path / "b" / "lab.bundle.json").exists()
