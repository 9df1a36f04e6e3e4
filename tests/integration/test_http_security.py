"""HTTPS on the HTTP listener, the bind rule, and the API documentation switch, with real sockets and
real processes (ADR 0023, docs/security.md).

* HTTPS: TLS 1.2+ only, plain HTTP refused on the TLS port, mutual TLS required or optional, the verified
  client certificate handed to the routes (ASGI TLS extension); certificates from trustme.
* The bind rule: ``check-config`` and ``run`` refuse a non-loopback listener without TLS, one line each
  with the setting's path and exit 2; ``allow_plaintext_on_network`` lets it start with a WARNING; the
  composition root refuses it too.
* ``/docs``, ``/redoc``, ``/openapi.json`` absent by default; with ``http.api_docs`` the pages load only
  the package's own assets.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from fastapi import APIRouter, Request

from passerelle.config.settings import HttpTlsSettings
from passerelle.connector.app import build_gateway
from passerelle.connector.listeners.exposure import PlaintextExposureError
from passerelle.connector.listeners.http.app import build_app
from passerelle.connector.listeners.http.server import HttpListener
from passerelle.connector.settings import load_settings
from tests.support.cli import config_problems, passerelle
from tests.support.gateway import AUTH, running_gateway

NOWHERE = "http://127.0.0.1:9/fhir"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A server certificate for 127.0.0.1 and a client certificate, from two test CAs."""
    root = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("lis.example.test", common_name="lis.example.test", organization_name="Labo Test")
    paths = {name: root / name for name in ("server.pem", "server.key", "server-ca.pem", "client-ca.pem")}
    server.cert_chain_pems[0].write_to_path(str(paths["server.pem"]))
    server.private_key_pem.write_to_path(str(paths["server.key"]))
    server_ca.cert_pem.write_to_path(str(paths["server-ca.pem"]))
    client_ca.cert_pem.write_to_path(str(paths["client-ca.pem"]))
    return {**paths, "client": client, "server_ca": server_ca}


def client_context(
    pki: dict[str, Any], *, with_cert: bool = False, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["server-ca.pem"]))
    if with_cert:
        pki["client"].configure_cert(ctx)
    if max_version is not None:
        with warnings.catch_warnings():  # the old versions are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = max_version
    return ctx


def echo_router() -> APIRouter:
    router = APIRouter()

    async def whoami(request: Request) -> dict[str, Any]:
        tls = request.scope.get("extensions", {}).get("tls")
        return {"scheme": request.url.scheme, "client": tls and tls["client_cert_name"],
                "version": tls and tls["tls_version"], "chain": len(tls["client_cert_chain"]) if tls else 0}  # fmt: skip

    router.add_api_route("/whoami", whoami, methods=["GET"])
    return router


@contextlib.asynccontextmanager
async def https_listener(tls: HttpTlsSettings) -> AsyncIterator[str]:
    listener = HttpListener(build_app([echo_router()]), "127.0.0.1", 0, tls)
    await listener.start()
    try:
        yield f"https://127.0.0.1:{listener.port}"
    finally:
        await listener.stop()


async def test_https_serves_tls_1_2_and_later_only_and_never_plain_http(pki: dict[str, Any]) -> None:
    async with https_listener(HttpTlsSettings(cert_file=pki["server.pem"], key_file=pki["server.key"])) as base:
        async with httpx.AsyncClient(verify=client_context(pki), timeout=10) as client:
            answer = (await client.get(f"{base}/whoami")).json()
        assert answer["scheme"] == "https" and answer["client"] is None and answer["version"] in (0x0303, 0x0304)
        old = client_context(pki, max_version=ssl.TLSVersion.TLSv1_1)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(verify=old, timeout=10) as client:
                await client.get(f"{base}/whoami")
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: no HTTP answer at all
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(base.replace("https://", "http://") + "/whoami")


async def test_mutual_tls_required_refuses_a_client_without_a_certificate(pki: dict[str, Any]) -> None:
    tls = HttpTlsSettings(cert_file=pki["server.pem"], key_file=pki["server.key"], client_ca_file=pki["client-ca.pem"])
    async with https_listener(tls) as base:
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(verify=client_context(pki), timeout=10) as client:
                await client.get(f"{base}/whoami")
        async with httpx.AsyncClient(verify=client_context(pki, with_cert=True), timeout=10) as client:
            answer = (await client.get(f"{base}/whoami")).json()
    # the routes see who called, as the ASGI TLS extension says (subject in RFC 4514 order)
    assert "CN=lis.example.test" in answer["client"] and "O=Labo Test" in answer["client"]
    assert answer["chain"] == 1


async def test_optional_client_certificates_are_verified_when_presented(pki: dict[str, Any]) -> None:
    tls = HttpTlsSettings(cert_file=pki["server.pem"], key_file=pki["server.key"],
                          client_ca_file=pki["client-ca.pem"], require_client_cert=False)  # fmt: skip
    async with https_listener(tls) as base:
        async with httpx.AsyncClient(verify=client_context(pki), timeout=10) as client:
            assert (await client.get(f"{base}/whoami")).json()["client"] is None
        async with httpx.AsyncClient(verify=client_context(pki, with_cert=True), timeout=10) as client:
            assert "CN=lis.example.test" in (await client.get(f"{base}/whoami")).json()["client"]
        stranger = trustme.CA().issue_cert("intruder.test")  # a certificate from a CA we do not trust
        ctx = client_context(pki)
        stranger.configure_cert(ctx)
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(verify=ctx, timeout=10) as client:
                await client.get(f"{base}/whoami")


async def test_the_gateway_serves_https_when_configured(pki: dict[str, Any], tmp_path: Path) -> None:
    tls = {"http.tls": {"cert_file": pki["server.pem"], "key_file": pki["server.key"]}}
    async with running_gateway(tmp_path, NOWHERE, **tls) as (gateway, _base):
        base = f"https://127.0.0.1:{gateway.http.port}"
        async with httpx.AsyncClient(verify=client_context(pki), timeout=10) as client:
            assert (await client.get(f"{base}/readyz")).status_code == 200
        ports = json.loads((tmp_path / "run" / "ports.json").read_text())
        assert ports["http_scheme"] == "https" and ports["http"] == gateway.http.port


async def test_a_bad_certificate_fails_the_start_in_one_line(pki: dict[str, Any], tmp_path: Path) -> None:
    from passerelle.connector.lifecycle import StartupError

    tls = {"http.tls": {"cert_file": pki["server.pem"], "key_file": pki["client-ca.pem"]}}  # not a key
    with pytest.raises(StartupError, match=r"^http listener: .*(PEM|key)"):
        async with running_gateway(tmp_path, NOWHERE, **tls):
            pass


# --- the bind rule ------------------------------------------------------------------------------------


def network_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "passerelle.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'var'}\nspace: {{url: {NOWHERE}}}\n"
        f"http: {{host: 0.0.0.0, port: 0{extra and ', ' + extra}}}\nmllp: {{host: 0.0.0.0, port: 0{extra and ', ' + extra}}}\n"
    )
    return config


def test_check_config_and_run_refuse_plain_text_on_the_network(tmp_path: Path) -> None:
    config = network_config(tmp_path)
    expected = [
        f"{group}.host: 0.0.0.0 is not a loopback address and {group} has no TLS: configure {group}.tls, or set "
        f"{group}.allow_plaintext_on_network: true on purpose (a trusted segment)"
        for group in ("http", "mllp")
    ]
    for command in ("check-config", "run"):
        out = passerelle(command, "--config", str(config))
        assert out.returncode == 2, out.stdout + out.stderr
        assert config_problems(out.stderr) == expected
        assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "var").exists(), "nothing is created before the refusal"


def test_missing_tls_files_are_named_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "passerelle.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'var'}\nspace: {{url: {NOWHERE}}}\nmllp: {{enabled: false}}\n"
        f"http: {{host: 0.0.0.0, tls: {{cert_file: {tmp_path}/tls/server.crt, key_file: {tmp_path}/tls/server.key}}}}\n"
    )
    out = passerelle("check-config", "--config", str(config))
    assert out.returncode == 2
    assert config_problems(out.stderr) == [
        f"http.tls.cert_file: cannot read {tmp_path}/tls/server.crt (No such file or directory)",
        f"http.tls.key_file: cannot read {tmp_path}/tls/server.key (No such file or directory)",
    ]


def test_plain_text_allowed_on_purpose_starts_with_a_warning_at_every_start(tmp_path: Path) -> None:
    config = network_config(tmp_path, "allow_plaintext_on_network: true")
    assert passerelle("check-config", "--config", str(config)).returncode == 0
    for _start in range(2):
        warnings = _run_until_started(config, tmp_path / "var")
        assert [w.split(" serves PLAIN TEXT")[0] for w in warnings] == ["http listener", "mllp listener"]


def _run_until_started(config: Path, data: Path) -> list[str]:
    """``passerelle run`` until its ports are written, then SIGTERM; the WARNING lines it logged."""
    ports = data / "run" / "ports.json"
    ports.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "passerelle", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ports.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ports.exists(), proc.stderr.read() if proc.poll() is not None else "not started"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [entry["msg"] for entry in logged if entry["level"] == "WARNING"]


def test_the_composition_root_refuses_plain_text_on_the_network_too(tmp_path: Path) -> None:
    """Whoever builds a gateway without the pre-flight checks meets the same rule."""
    settings = load_settings(None, overrides={"data_dir": tmp_path, "space.url": NOWHERE, "http.host": "0.0.0.0"})
    with pytest.raises(PlaintextExposureError, match=r"^http\.host: 0\.0\.0\.0"):
        build_gateway(settings)


# --- API documentation --------------------------------------------------------------------------------


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


@contextlib.contextmanager
def no_network_urls(html: str) -> Iterator[list[str]]:
    parser = _Urls()
    parser.feed(html)
    yield parser.urls
    assert parser.urls, "the page references its assets"
    assert all(u.startswith("/") and not u.startswith("//") for u in parser.urls), parser.urls
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, flags=re.IGNORECASE), "a remote URL in the page"


async def test_api_docs_are_off_by_default(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, NOWHERE) as (_gateway, base), httpx.AsyncClient(timeout=10) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
            assert (await client.get(f"{base}{path}")).status_code == 404, path


async def test_api_docs_load_only_the_assets_shipped_in_the_package(tmp_path: Path) -> None:
    assets = files("passerelle.connector.listeners.http").joinpath("docs_assets")
    async with running_gateway(tmp_path, NOWHERE, **{"http.api_docs": True}) as (_gateway, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
            for path in ("/docs", "/redoc", "/openapi.json"):  # the API's map is for identified readers only
                assert (await anonymous.get(path)).status_code == 401, path
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["read"]) as client:
            spec = (await client.get("/openapi.json")).json()
            assert "/v1/messages" in spec["paths"] and "/docs" not in spec["paths"]
            for page in ("/docs", "/redoc"):
                html = (await client.get(page)).text
                assert '"validatorUrl": null' in html or page == "/redoc"
                with no_network_urls(html) as urls:
                    for url in urls:
                        answer = await client.get(url)
                        assert answer.status_code == 200, url
                        if url.startswith("/docs-assets/"):
                            assert answer.content == assets.joinpath(url.rsplit("/", 1)[1]).read_bytes()
            assert (await client.get("/docs-assets/README.md")).status_code == 404  # only the listed files


async def test_validation_errors_name_the_field_never_the_value(tmp_path: Path) -> None:
    ins = "279035121518989"
    async with running_gateway(tmp_path, NOWHERE) as (_gateway, base), httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{base}/v1/messages", params={"limit": ins, "since": f"{ins}-not-a-date"}, headers=AUTH["read"]
        )
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert {tuple(e["loc"]) for e in body["errors"]} == {("query", "limit"), ("query", "since")}
    assert ins not in answer.text
