"""The MHD adapter's authentication against real servers: OAuth2 client credentials (a real token
endpoint + the sandbox requiring a bearer token) and mutual TLS (the sandbox served over HTTPS with
client-certificate verification, or behind an OpenSSL TLS front end that says with its alert why it
refuses our client certificate, TLS 1.2 and 1.3; certificates from trustme)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
import trustme
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from passerelle.adapters.mhd import MhdSpace, SpaceAuth, SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, SpaceState, configuration_error
from passerelle.errors import RemoteCredentialError, RemoteTransientError, RemoteUntrustedCertificateError
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.app import create_app
from passerelle.sandbox.testing import SandboxURL, running_sandbox
from tests.support.asgi_server import serving_in_thread
from tests.support.space_docs import AUTHOR_ID, document, patient
from tests.support.tls_front import server_context, tls_front

SANDBOX_TOKEN = "sandbox-bearer-token"


def token_app(client_id: str, secret: str) -> tuple[FastAPI, list[str]]:
    grants: list[str] = []
    app = FastAPI()

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode())
        # RFC 6749 §2.3.1: Basic credentials whose two parts are form-urlencoded
        scheme, _, blob = request.headers.get("authorization", "").partition(" ")
        user, _, password = base64.b64decode(blob or "").decode().partition(":")
        credentials = (unquote_plus(user), unquote_plus(password))
        if scheme != "Basic" or credentials != (client_id, secret) or form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grants.append(form.get("scope", [""])[0])
        return JSONResponse({"access_token": SANDBOX_TOKEN, "token_type": "Bearer", "expires_in": 3600})

    return app, grants


async def test_oauth2_client_credentials_end_to_end(tmp_path: Path) -> None:
    token_file = tmp_path / "sandbox-token"
    token_file.write_text(SANDBOX_TOKEN + "\n")
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("correct horse\n")
    app, grants = token_app("passerelle-site", "correct horse")
    with serving_in_thread(app, lifespan="on") as token_port:
        config = SandboxConfig(data_dir=tmp_path / "space", require_token_file=token_file)
        async with running_sandbox(config) as url:
            settings = SpaceSettings(
                url=url.fhir,
                test_environment=True,
                auth=SpaceAuth.OAUTH2,
                token_url=f"http://127.0.0.1:{token_port}/token",
                client_id="passerelle-site",
                client_secret_file=secret_file,
                scope="dmp",
            )
            space = MhdSpace(settings)
            try:
                assert (await space.status(patient(), AUTHOR_ID)).state == SpaceState.ACTIF
                assert (await space.provide(document())).outcome == DeliveryOutcome.CREATED
            finally:
                await space.aclose()
            assert grants == ["dmp"]  # one grant, cached for both calls

            wrong = tmp_path / "wrong-secret"
            wrong.write_text("battery staple")
            space = MhdSpace(settings.model_copy(update={"client_secret_file": wrong}))
            try:
                with pytest.raises(RemoteCredentialError):
                    await space.status(patient(), AUTHOR_ID)
            finally:
                await space.aclose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("passerelle-client", organization_unit_name="ZZSUBJECTCANARY")
    now = datetime.now(UTC)
    expired = ca.issue_cert("passerelle-client", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    paths = {
        "ca": root / "ca.pem",
        "server": root / "server.pem",
        "client_cert": root / "client-cert.pem",
        "client_key": root / "client-key.pem",
        "expired_cert": root / "expired-cert.pem",
        "expired_key": root / "expired-key.pem",
        "other_ca": root / "other-ca.pem",  # a CA that issued none of these certificates
    }
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    expired.private_key_pem.write_to_path(str(paths["expired_key"]))
    expired.cert_chain_pems[0].write_to_path(str(paths["expired_cert"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(str(paths["client_cert"]), append=i > 0)
    return paths


@pytest.fixture
def https_sandbox(tmp_path: Path, pki: dict[str, Path]) -> Iterator[str]:
    app = create_app(SandboxConfig(data_dir=tmp_path / "space"))
    with serving_in_thread(
        app,
        lifespan="on",
        ssl_certfile=str(pki["server"]),
        ssl_ca_certs=str(pki["ca"]),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ) as port:
        yield f"https://127.0.0.1:{port}/fhir"


async def test_mutual_tls(https_sandbox: str, pki: dict[str, Path]) -> None:
    settings = SpaceSettings(
        url=https_sandbox,
        test_environment=True,
        auth=SpaceAuth.MTLS,
        client_cert_file=pki["client_cert"],
        client_key_file=pki["client_key"],
        ca_file=pki["ca"],
    )
    space = MhdSpace(settings)
    try:
        assert (await space.provide(document())).outcome == DeliveryOutcome.CREATED
    finally:
        await space.aclose()


async def test_tls_without_client_certificate_fails_transiently(https_sandbox: str, pki: dict[str, Path]) -> None:
    space = MhdSpace(SpaceSettings(url=https_sandbox, test_environment=True, ca_file=pki["ca"]))
    try:
        with pytest.raises(RemoteTransientError):
            await space.status(patient(), AUTHOR_ID)
    finally:
        await space.aclose()


async def test_untrusted_server_certificate_fails(https_sandbox: str, pki: dict[str, Path]) -> None:
    settings = SpaceSettings(
        url=https_sandbox,
        test_environment=True,
        auth=SpaceAuth.MTLS,
        client_cert_file=pki["client_cert"],
        client_key_file=pki["client_key"],
    )  # no ca_file: the system trust store does not know the test CA
    space = MhdSpace(settings)
    try:
        with pytest.raises(RemoteUntrustedCertificateError) as info:
            await space.status(patient(), AUTHOR_ID)
        # told apart from other transport failures (its own metric result and alert), still retried
        assert info.value.reason == "tls_untrusted" and "space.ca_file" in info.value.message
        assert isinstance(info.value, RemoteTransientError)
    finally:
        await space.aclose()


# --- the server refuses our client certificate, and says so with its TLS alert ------------------------

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxURL]:
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "space")) as url:
        yield url


def mtls_settings(
    url: str, pki: dict[str, Path], *, cert: str = "client_cert", key: str = "client_key"
) -> SpaceSettings:
    return SpaceSettings(
        url=url,
        test_environment=True,
        auth=SpaceAuth.MTLS,
        client_cert_file=pki[cert],
        client_key_file=pki[key],
        ca_file=pki["ca"],
    )


async def refusal(settings: SpaceSettings) -> RemoteTransientError:
    space = MhdSpace(settings)
    try:
        with pytest.raises(RemoteTransientError) as failed:
            await space.provide(document())
    finally:
        await space.aclose()
    return failed.value


def assert_client_certificate_refused(error: RemoteTransientError, alert: str) -> None:
    assert isinstance(error, RemoteCredentialError)  # counted "credential", its alert, retried meanwhile
    assert error.reason == "remote_credentials" and configuration_error(error) == "credentials"
    assert f"the server refused the client certificate (TLS alert: {alert})" in error.message
    assert "space.client_cert_file" in error.message
    assert "ZZSUBJECTCANARY" not in error.message and "passerelle-client" not in error.message  # never a subject


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
async def test_a_client_certificate_from_a_ca_the_server_does_not_trust_is_a_credential_error(
    sandbox: SandboxURL, pki: dict[str, Path], version: ssl.TLSVersion
) -> None:
    """TLS 1.2: the alert ends our handshake (connect); TLS 1.3: our handshake completes, the request is
    written, and the alert comes back instead of the answer. Both are the server's verdict on our certificate."""
    upstream = int(sandbox.rsplit(":", 1)[1])
    refusing = server_context(pki["server"], None, pki["other_ca"], version)
    with tls_front(refusing, upstream) as front:
        error = await refusal(mtls_settings(f"https://{front.host}/fhir", pki))
    assert_client_certificate_refused(error, "unknown CA")
    assert front.refusals() == ["CERTIFICATE_VERIFY_FAILED"] and front.accepted == 0  # the front's own account
    # the same settings through a front that trusts our CA deliver: the refusal was about the certificate
    with tls_front(server_context(pki["server"], None, pki["ca"], version), upstream) as front:
        space = MhdSpace(mtls_settings(f"https://{front.host}/fhir", pki))
        try:
            assert (await space.provide(document())).outcome == DeliveryOutcome.CREATED
        finally:
            await space.aclose()


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
async def test_an_expired_client_certificate_is_named_in_the_credential_error(
    sandbox: SandboxURL, pki: dict[str, Path], version: ssl.TLSVersion
) -> None:
    upstream = int(sandbox.rsplit(":", 1)[1])
    with tls_front(server_context(pki["server"], None, pki["ca"], version), upstream) as front:
        error = await refusal(mtls_settings(f"https://{front.host}/fhir", pki, cert="expired_cert", key="expired_key"))
    assert_client_certificate_refused(error, "certificate expired")
    assert front.refusals() == ["CERTIFICATE_VERIFY_FAILED"]


async def test_tls13_no_client_certificate_where_one_is_required_is_a_credential_error(
    sandbox: SandboxURL, pki: dict[str, Path]
) -> None:
    upstream = int(sandbox.rsplit(":", 1)[1])
    with tls_front(server_context(pki["server"], None, pki["ca"], ssl.TLSVersion.TLSv1_3), upstream) as front:
        error = await refusal(SpaceSettings(url=f"https://{front.host}/fhir", test_environment=True, ca_file=pki["ca"]))
    assert_client_certificate_refused(error, "certificate required")
    assert front.refusals() == ["PEER_DID_NOT_RETURN_A_CERTIFICATE"]


async def test_tls12_no_client_certificate_is_a_handshake_failure_that_stays_transient(
    sandbox: SandboxURL, pki: dict[str, Path]
) -> None:
    """TLS 1.2 has no alert for a missing certificate: the server answers handshake_failure (RFC 5246
    7.4.6), the alert of a cipher mismatch too. It stays a transport failure, whose text says both."""
    upstream = int(sandbox.rsplit(":", 1)[1])
    with tls_front(server_context(pki["server"], None, pki["ca"], ssl.TLSVersion.TLSv1_2), upstream) as front:
        error = await refusal(SpaceSettings(url=f"https://{front.host}/fhir", test_environment=True, ca_file=pki["ca"]))
    assert type(error) is RemoteTransientError and configuration_error(error) is None
    assert "TLS alert: handshake failure" in error.message and "client certificate" in error.message
    assert front.refusals() == ["PEER_DID_NOT_RETURN_A_CERTIFICATE"]
