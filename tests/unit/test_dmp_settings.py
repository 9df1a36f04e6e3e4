"""``space.transport: dmp`` settings: one clear line per problem, naming the setting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from passerelle.adapters.dmp.credentials import check_space, tls_context
from passerelle.adapters.dmp.devpki import DEV_HOMOLOGATION_ID, DevPki, write_dev_pki
from passerelle.adapters.mhd import SpaceSettings, SpaceTransport
from passerelle.connector.cli.main import app as cli


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return write_dev_pki(tmp_path_factory.mktemp("pki"))


def settings(pki: DevPki, **changes: object) -> SpaceSettings:
    dmp = {"sign_cert_file": pki.sign_cert, "sign_key_file": pki.sign_key, "structure_id": pki.structure_id,
           "homologation_id": DEV_HOMOLOGATION_ID}  # fmt: skip
    dmp.update(changes.pop("dmp", {}))  # type: ignore[call-overload]
    base: dict[str, object] = {
        "url": "https://dmp.test/si-dmp-server/v2/services",
        "transport": "dmp",
        "client_cert_file": pki.auth_cert,
        "client_key_file": pki.auth_key,
        "ca_file": pki.ca,
        "dmp": dmp,
    }
    base.update(changes)
    return SpaceSettings.model_validate(base)


def test_default_transport_is_mhd_and_dev_pki_is_consistent(pki: DevPki) -> None:
    assert SpaceSettings().transport is SpaceTransport.MHD
    assert check_space(settings(pki)) == []
    p12 = settings(
        pki, dmp={"sign_cert_file": pki.sign_p12, "sign_key_file": None, "sign_password_file": pki.sign_password}
    )
    assert check_space(p12) == []
    context = tls_context(settings(pki))
    assert not isinstance(context, bool) and context.maximum_version.name == "TLSv1_2"


def test_each_problem_is_one_line_naming_the_setting(pki: DevPki, tmp_path: Path) -> None:
    wrong_password = tmp_path / "pw"
    wrong_password.write_text("nope\n")
    cases = {
        "space.dmp.sign_key_file: the key does not match": settings(pki, dmp={"sign_key_file": pki.auth_key}),
        "space.client_key_file: the key does not match": settings(pki, client_key_file=pki.sign_key),
        "space.client_cert_file: not a TLS client certificate": settings(
            pki, client_cert_file=pki.sign_cert, client_key_file=pki.sign_key
        ),
        "space.dmp.sign_cert_file: key usage allows no signature": settings(
            pki, dmp={"sign_cert_file": pki.ca, "sign_key_file": pki.path("ca.key")}
        ),
        "is not the SIGN certificate's OU": settings(pki, dmp={"structure_id": "1999999999"}),
        "space.url: the DMP services need https://": settings(pki, url="http://dmp.example.test/services"),
        "space.dmp.sign_cert_file: cannot read": settings(pki, dmp={"sign_cert_file": tmp_path / "absent.pem"}),
        "not a readable PKCS#12 file": settings(
            pki, dmp={"sign_cert_file": pki.sign_p12, "sign_key_file": None, "sign_password_file": wrong_password}
        ),
        "space.dmp.structure_id: required": settings(pki, dmp={"structure_id": ""}),
        # the DMP refuses a VIHF without LPS_ID_HOMOLOGATION_DMP (the sandbox too): caught before any call
        "space.dmp.homologation_id: required": settings(pki, dmp={"homologation_id": ""}),
        # a cap an ITI-18 answer would not fit in: every lookup cut and retried for ever
        "space.max_response_bytes: 4096 bytes would cut the DMP's answers": settings(pki, max_response_bytes=4096),
    }
    for expected, value in cases.items():
        problems = check_space(value)
        assert any(expected in line for line in problems), (expected, problems)
        assert all("\n" not in line for line in problems)
    assert (
        check_space(
            settings(
                pki, url="http://127.0.0.1:8090/si-dmp-server/v2/services", client_cert_file=None, client_key_file=None
            )
        )
        == []
    )
    with pytest.raises(ValidationError, match="activity sector"):
        settings(pki, dmp={"activity_sector": "hospital"})
    with pytest.raises(ValidationError, match="max_response_bytes"):  # an answer is held in memory whole
        settings(pki, max_response_bytes=128 * 1_048_576)


def test_check_config_and_dev_pki_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pki"
    result = runner.invoke(cli, ["dev-pki", "--out", str(out), "--structure-id", "1750100125"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {
        "ca.pem",
        "auth.pem",
        "auth.key",
        "sign.pem",
        "sign.key",
        "sign.p12",
        "sign.password",
        "server.pem",
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        "space:\n  url: https://dmp.test/si-dmp-server/v2/services\n" + result.output.split("space:\n", 1)[1]
    )
    ok = runner.invoke(cli, ["check-config", "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    shutil.copy(out / "auth.key", out / "sign.key")
    bad = runner.invoke(cli, ["check-config", "-c", str(config)])
    assert bad.exit_code == 2
    assert "configuration error: space.dmp.sign_key_file: the key does not match space.dmp.sign_cert_file" in bad.output
