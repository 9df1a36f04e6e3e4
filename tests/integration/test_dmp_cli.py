"""``passerelle map --transport dmp`` writes the exact ITI-41 request (nothing sent); ``demo --transport
dmp`` settings are a usable DMP configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from passerelle.adapters.dmp.credentials import check_space
from passerelle.connector.cli.dmp import demo_overrides, write_demo_pki
from passerelle.connector.cli.main import app as cli
from passerelle.connector.settings import load_settings
from tests.support.dmp_checks import body_payload, check_envelope, check_vihf, read_mtom
from tests.support.dmp_checks_xds import check_metadata, check_xades, resolve_and_validate

SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)


@pytest.mark.corpus
def test_map_writes_the_exact_iti41_request(corpus_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    pki_out = runner.invoke(cli, ["dev-pki", "--out", str(tmp_path / "pki")])
    assert pki_out.exit_code == 0, pki_out.output
    config = tmp_path / "site.yaml"
    config.write_text(
        "environment: test\nspace:\n  url: https://dmp.test/si-dmp-server/v2/services\n"
        + pki_out.output.split("space:\n", 1)[1]
    )
    out = tmp_path / "out"
    files = [corpus_dir / SEGUR, corpus_dir / "dicom/kos/fr-drimbox/ko.dcm"]
    result = runner.invoke(cli, ["map", "--transport", "dmp", "-c", str(config), "--out", str(out), *map(str, files)])
    assert result.exit_code == 0, result.output
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.pem").read_bytes())
    for stem in ("message_ORU_CR_Bio_INIT_N3_SEGUR.1", "ko.1"):
        raw = (out / f"{stem}.iti41.http").read_bytes()
        head, body = raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST https://dmp.test/si-dmp-server/v2/services/repository HTTP/1.1"
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert int(headers["Content-Length"]) == len(body)
        request = read_mtom(headers["Content-Type"], body)
        check_envelope(request.envelope, "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b", "/repository")
        vihf = check_vihf(request.envelope, ca, datetime.now(UTC))
        contents = resolve_and_validate(
            body_payload(request.envelope), request.parts, corpus_dir / "schemas" / "xds-ebrim-3.0"
        )
        check_xades(check_metadata(body_payload(request.envelope), contents), ca, vihf.certificate)
        assert (out / f"{stem}.iti41" / "parts.json").exists()


def test_demo_settings_are_a_valid_dmp_configuration(tmp_path: Path) -> None:
    overrides = demo_overrides(write_demo_pki(tmp_path), "http://127.0.0.1:8090")
    settings = load_settings(None, overrides={"environment": "test", "data_dir": tmp_path, **overrides})
    assert settings.space.url == "http://127.0.0.1:8090/si-dmp-server/v2/services"
    assert check_space(settings.space) == []
