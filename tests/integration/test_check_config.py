"""check-config and run on broken configurations, as real processes: every problem listed at once, one
line each with the setting's path, exit code 2, no traceback; the same lines from ``run``, which then
starts nothing. ``--online`` asks a real HTTP server for the capability statement."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.cli import config_problems, passerelle

NOWHERE = "http://127.0.0.1:9/fhir"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    ca = trustme.CA()
    one, other = ca.issue_cert("one.test"), ca.issue_cert("other.test")
    one.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "server.key"))  # not the certificate's key
    (tmp_path / "rules.yaml").write_text("park_horizon_days: [not, a, number]\n")
    (tmp_path / "empty-token").write_text("\n")
    (tmp_path / "a-file").write_text("x")
    config = tmp_path / "passerelle.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "a-file" / "var"}
oid_root: 1.2.250.01.999
http: {{port: 2575, admin_token_file: {tmp_path / "empty-token"}}}
mllp:
  port: 2575
  tls: {{enabled: true, cert_file: {tmp_path / "server.pem"}, key_file: {tmp_path / "server.key"}}}
consent: {{rules_file: {tmp_path / "rules.yaml"}}}
space: {{url: {NOWHERE}, auth: oauth2, token_url: http://127.0.0.1:9/token, client_id: p,
         client_secret_file: {tmp_path / "missing-secret"}}}
"""
    )
    return config


EXPECTED = (
    "data_dir: cannot write there",
    "http.admin_token_file: ",
    "space.client_secret_file: cannot read ",
    "mllp.tls.cert_file: the certificate, its key or the client CA does not load",
    "oid_root: '1.2.250.01.999' is not a well-formed OID",
    "mllp.port: port 2575 is also http.port",
    "consent.rules_file: ",
)


def test_check_config_lists_every_problem_once(broken: Path) -> None:
    out = passerelle("check-config", "--config", str(broken))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    found = config_problems(out.stderr)
    for start in EXPECTED:
        assert sum(line.startswith(start) for line in found) == 1, (start, found)
    assert len(found) == len(EXPECTED), found
    assert all(line.count("\n") == 0 for line in found)


def test_run_fails_the_same_way_and_starts_nothing(broken: Path, tmp_path: Path) -> None:
    checked = config_problems(passerelle("check-config", "--config", str(broken)).stderr)
    out = passerelle("run", "--config", str(broken))
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    assert config_problems(out.stderr) == checked
    assert not list(tmp_path.rglob("ports.json")) and not list(tmp_path.rglob("*.sqlite3"))


@pytest.fixture
def fhir_server() -> Iterator[str]:
    """A real HTTP server answering a capability statement at /fhir/metadata, 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/fhir/metadata"
            body = b'{"resourceType": "CapabilityStatement", "status": "active"}' if found else b"{}"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_online_check_of_the_space(fhir_server: str, tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(f"data_dir: {tmp_path / 'var'}\nspace: {{url: {fhir_server}/fhir}}\n")
    ok = passerelle("check-config", "--config", str(config), "--online")
    assert ok.returncode == 0, ok.stderr
    config.write_text(f"data_dir: {tmp_path / 'var'}\nspace: {{url: {fhir_server}/wrong-base}}\n")
    bad = passerelle("check-config", "--config", str(config), "--online")
    assert bad.returncode == 2
    assert config_problems(bad.stderr) == [
        f"space.url: {fhir_server}/wrong-base/metadata answered HTTP 404, not a capability statement"
    ]
    assert passerelle("check-config", "--config", str(config)).returncode == 0  # offline: not asked
