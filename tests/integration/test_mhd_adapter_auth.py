"""The MHD adapter's authentication against real servers: OAuth2 client credentials (a real token
endpoint + the sandbox requiring a bearer token) and mutual TLS (the sandbox served over HTTPS with
client-certificate verification; certificates from trustme)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
import trustme
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from passerelle.adapters.mhd import MhdSpace, SpaceAuth, SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, SpaceState
from passerelle.errors import RemoteCredentialError, RemoteTransientError, RemoteUntrustedCertificateError
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.app import create_app
from passerelle.sandbox.testing import running_sandbox
from tests.support.asgi_server import serving_in_thread
from tests.support.space_docs import AUTHOR_ID, document, patient

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
    client = ca.issue_cert("passerelle-client")
    paths = {
        "ca": root / "ca.pem",
        "server": root / "server.pem",
        "client_cert": root / "client-cert.pem",
        "client_key": root / "client-key.pem",
    }
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
