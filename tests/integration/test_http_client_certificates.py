"""Mutual TLS identities over a real TLS socket: uvicorn with :class:`TlsH11Protocol` puts the verified
client certificate's subject in the ASGI TLS extension, and the authenticator maps it to a name and a
role (``http.client_certificates``), beside the bearer tokens.

The gateway's own HTTP TLS settings (``http.tls.*``) arrive with another change; this test serves the
authenticator's routes with uvicorn's TLS options directly, the way the listener will."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trustme
from fastapi import APIRouter, Depends, FastAPI, Request

from passerelle.config.settings import HttpSettings
from passerelle.connector.listeners.http.auth import build_authenticator, caller
from passerelle.connector.listeners.http.tls import TlsH11Protocol
from tests.support.asgi_server import serving


def authenticated_app(settings: HttpSettings) -> FastAPI:
    auth = build_authenticator(settings)
    router = APIRouter()

    async def who(request: Request) -> dict[str, str]:
        identity = caller(request)
        return {"name": identity.name, "role": identity.role.value, "via": identity.via}

    router.add_api_route("/read", who, dependencies=[Depends(auth.read)])
    router.add_api_route("/operate", who, dependencies=[Depends(auth.operate)])
    app = FastAPI()
    app.include_router(router)
    return app


@asynccontextmanager
async def tls_server(app: FastAPI, ca: trustme.CA, tmp: Path) -> AsyncIterator[str]:
    cert, cafile = tmp / "server.pem", tmp / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(cafile))
    tls = {
        "http": TlsH11Protocol,
        "ssl_certfile": str(cert),
        "ssl_ca_certs": str(cafile),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
    }
    async with serving(app, **tls) as port:
        yield f"https://127.0.0.1:{port}"


def client(base: str, ca: trustme.CA, cert: trustme.LeafCert | None, **kw: object) -> httpx.AsyncClient:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return httpx.AsyncClient(base_url=base, verify=ctx, timeout=10, **kw)  # type: ignore[arg-type]


async def test_a_client_certificate_subject_is_an_identity_with_a_role(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("reader-token\n")
    settings = HttpSettings.model_validate(
        {
            "tokens": [{"name": "reader", "role": "read", "token_file": token}],
            "client_certificates": [
                {"name": "ops-desk", "role": "operate", "subject": "CN=ops.example.fr,OU=DSI,O=CHU Exemple"},
                {"name": "lis", "role": "read", "subject": "lis.example.fr"},
            ],
        }
    )
    ca = trustme.CA()
    dsi = {"organization_name": "CHU Exemple", "organization_unit_name": "DSI"}
    ops = ca.issue_cert("ops.example.fr", common_name="ops.example.fr", **dsi)
    lis = ca.issue_cert("lis.example.fr", common_name="lis.example.fr", organization_name="Labo")
    stranger = ca.issue_cert("x.example.fr", common_name="x.example.fr", **dsi)
    other_ou = ca.issue_cert("o.example.fr", common_name="ops.example.fr", organization_name="CHU Exemple")
    async with tls_server(authenticated_app(settings), ca, tmp_path) as base:
        async with client(base, ca, ops) as c:
            assert (await c.get("/operate")).json() == {"name": "ops-desk", "role": "operate", "via": "certificate"}
            # A bearer token, when sent, decides alone (a wrong one is refused, whatever the certificate).
            assert (await c.get("/read", headers={"Authorization": "Bearer reader-token"})).json()["name"] == "reader"
            assert (await c.get("/read", headers={"Authorization": "Bearer nope"})).status_code == 401
        async with client(base, ca, lis) as c:
            assert (await c.get("/read")).json()["name"] == "lis"  # matched by CN alone
            assert (await c.get("/operate")).status_code == 403
        async with client(base, ca, stranger) as c:
            answer = await c.get("/read")
            assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
        async with client(base, ca, other_ou) as c:  # same CN, another DN: the full DN configured must match
            assert (await c.get("/read")).status_code == 401
        async with client(base, ca, None) as c:  # TLS without a client certificate
            assert (await c.get("/read")).status_code == 401
            assert (await c.get("/read", headers={"Authorization": "Bearer reader-token"})).status_code == 200
