"""The container image's Python environment, built the way the Dockerfile builds it (docker/build-venv.sh:
same locks, same pip commands) in a clean virtual environment, then started with the image's entrypoint
and default configuration, so the image's recipe is exercised where no container engine runs.

The environment holds the runtime lock and nothing else (no test, lint or build tool); without a
patient-space URL the entrypoint refuses to start with one line; without its TLS files (or an explicit
choice of plain text) it refuses too, one line per file; with them, the gateway runs on a read-only root
filesystem (a private mount namespace, as in ``docker run --read-only``) with only the data directory
writable, answers its health check over HTTPS and delivers a message received over MLLP/TLS.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from passerelle.sandbox.testing import SandboxURL
from tests.e2e.conftest import documents_for
from tests.support.waiting import poll_sync

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis", "pip", "setuptools", "wheel", "hadolint", "saxonche")


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/opt/passerelle`` of the image, built by the Dockerfile's own script from the hashed locks."""
    target = tmp_path_factory.mktemp("image") / "opt-passerelle"
    env = {**os.environ, "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    out = subprocess.run(
        ["sh", str(DOCKER / "build-venv.sh"), str(ROOT), str(target)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return target


def lock_names(lock: Path) -> set[str]:
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock.read_text(), flags=re.MULTILINE)
    return {_normal(n) for n in names}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_python(image_env: Path, code: str) -> str:
    out = subprocess.run([str(image_env / "bin" / "python"), "-I", "-B", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_image_environment_holds_the_runtime_lock_only(image_env: Path) -> None:
    listed = image_python(
        image_env, "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    )
    installed = {_normal(n) for n in listed.split()}
    assert installed == lock_names(ROOT / "requirements/runtime.lock") | {"passerelle"}
    found = image_python(
        image_env, f"import importlib.util as u; print([m for m in {DEV_TOOLS!r} if u.find_spec(m) is not None])"
    )
    assert found.strip() == "[]", f"development tools in the image environment: {found}"
    # ...while the same modules are there in the development environment, so the check means something
    assert all(importlib.util.find_spec(m) for m in ("pytest", "ruff", "mypy", "hypothesis"))


def test_runtime_lock_pins_what_the_dev_lock_pins() -> None:
    """Tests run on exactly the versions the image ships (the runtime lock is constrained by the dev lock)."""

    def pins(lock: Path) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), flags=re.MULTILINE)
        return {_normal(n): v for n, v in found}

    runtime, dev = pins(ROOT / "requirements/runtime.lock"), pins(ROOT / "requirements/dev.lock")
    assert runtime and all(dev.get(name) == version for name, version in runtime.items())
    assert not {"pytest", "ruff", "mypy", "hypothesis"} & runtime.keys()
    assert "--hash=sha256:" in (ROOT / "requirements/runtime.lock").read_text()


def entrypoint(
    image_env: Path, *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    cmd = [str(image_env / "bin" / "python"), "-I", "-B", str(DOCKER / "entrypoint.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def base_env(data: Path) -> dict[str, str]:
    """The image's ENV (Dockerfile), with the data directory under tmp and the image config from the repo."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE")}
    return {
        **keep,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(data),
        "TMPDIR": str(data / "tmp"),
        "PASSERELLE__DATA_DIR": str(data),
        "PASSERELLE_CONFIG": str(DOCKER / "passerelle.yaml"),
    }


def test_image_refuses_to_start_without_a_space_url(image_env: Path, tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    for args in ((), ("run",), ("run", "--config", str(DOCKER / "passerelle.yaml"))):
        out = entrypoint(image_env, *args, env=env)
        assert out.returncode == 2, out.stderr
        assert out.stdout == ""
        assert out.stderr.splitlines() == [
            "passerelle: no patient space URL: set PASSERELLE__SPACE__URL "
            "(e.g. https://space.example.org/fhir) or space.url in the configuration file"
        ]
    assert not (tmp_path / "data").exists(), "nothing is created before the refusal"


def test_image_listens_on_the_network_with_tls_or_on_purpose_in_plain_text(image_env: Path, tmp_path: Path) -> None:
    """The image binds every interface: without its TLS files it refuses to start, one line per file;
    plain text must be chosen on purpose; with the files (or that choice) its configuration is valid."""
    env = {**base_env(tmp_path / "data"), "PASSERELLE__SPACE__URL": "https://space.example.org/fhir"}
    for command in ("check-config", "run"):
        out = entrypoint(image_env, command, env=env)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert _problems(out.stderr) == [
            "http.tls.cert_file: cannot read /data/tls/server.crt (No such file or directory)",
            "http.tls.key_file: cannot read /data/tls/server.key (No such file or directory)",
            "mllp.tls.cert_file: the certificate, its key or the client CA does not load (No such file or directory)",
        ]
    plain = {**env, "PASSERELLE__HTTP__TLS": "null", "PASSERELLE__MLLP__TLS__ENABLED": "false"}
    out = entrypoint(image_env, "check-config", env=plain)
    assert out.returncode == 2
    assert [line.split(" is not a loopback")[0] for line in _problems(out.stderr)] == [
        "http.host: 0.0.0.0", "mllp.host: 0.0.0.0",
    ]  # fmt: skip
    allowed = {**plain, "PASSERELLE__HTTP__ALLOW_PLAINTEXT_ON_NETWORK": "true",
               "PASSERELLE__MLLP__ALLOW_PLAINTEXT_ON_NETWORK": "true"}  # fmt: skip
    assert entrypoint(image_env, "check-config", env=allowed).returncode == 0
    _write_tls(tmp_path / "data" / "tls")
    with_files = {**env, **_tls_env(tmp_path / "data" / "tls")}
    out = entrypoint(image_env, "check-config", env=with_files)
    assert out.returncode == 0, out.stdout + out.stderr


def _problems(stderr: str) -> list[str]:
    return [line.removeprefix("configuration error: ") for line in stderr.splitlines() if "configuration error" in line]


def _write_tls(folder: Path) -> trustme.CA:
    """``server.crt`` and ``server.key`` for 127.0.0.1 in ``folder``, as a site puts them in /data/tls."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "passerelle.example.test")
    folder.mkdir(parents=True, exist_ok=True)
    cert.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return ca


def _tls_env(folder: Path) -> dict[str, str]:
    """The image's TLS settings moved from /data/tls to the test's data directory (same file names)."""
    files = {"CERT_FILE": str(folder / "server.crt"), "KEY_FILE": str(folder / "server.key")}
    return {f"PASSERELLE__{group}__TLS__{key}": value for group in ("HTTP", "MLLP") for key, value in files.items()}


def _read_only_root_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


# In a private mount namespace: the data directory stays writable, everything else becomes read-only.
_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro / && exec "$@"'


@pytest.fixture
def image_gateway(image_env: Path, tmp_path: Path, sandbox: SandboxURL) -> Iterator[tuple[Path, dict[str, Any]]]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    _write_tls(data / "tls")
    env = {
        **base_env(data),
        **_tls_env(data / "tls"),  # the image's default: HTTPS and MLLP over TLS
        "PASSERELLE__SPACE__URL": sandbox.fhir,
        "PASSERELLE__ENVIRONMENT": "test",  # the samples carry ANS test INS
        "PASSERELLE__WORKER__POLL_INTERVAL_S": "0.05",
        # free loopback ports instead of the image's 0.0.0.0:2575/8080/11112 (TLS stays on)
        **{f"PASSERELLE__{group}__{key}": value for group in ("MLLP", "HTTP", "DICOM")
           for key, value in (("HOST", "127.0.0.1"), ("PORT", "0"))},
    }  # fmt: skip
    cmd = [str(image_env / "bin" / "python"), "-I", "-B", str(DOCKER / "entrypoint.py")]
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _READ_ONLY, str(data), *cmd]
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield data, _wait_ports(proc, data / "run" / "ports.json", tmp_path / "gateway.log")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = (tmp_path / "gateway.log").read_text()
    assert "Read-only file system" not in text and "Traceback" not in text, text[-3000:]


def _wait_ports(proc: subprocess.Popen[bytes], ports_file: Path, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}: {log.read_text()[-3000:]}")
        if ports_file.exists():
            ports: dict[str, Any] = json.loads(ports_file.read_text())
            if ports.get("http") and ports.get("mllp") and ports.get("dicom"):
                return ports
        time.sleep(0.1)
    raise AssertionError(f"gateway did not start: {log.read_text()[-3000:]}")


@pytest.mark.skipif(not _read_only_root_available(), reason="needs `unshare --mount` (root) for a read-only root")
def test_image_gateway_runs_on_a_read_only_root(image_env: Path, image_gateway, sandbox: SandboxURL) -> None:
    data, ports = image_gateway
    health = subprocess.run(
        [str(image_env / "bin" / "python"), "-I", "-B", str(DOCKER / "healthcheck.py")],
        capture_output=True, text=True, env=base_env(data), timeout=30,
    )  # fmt: skip
    assert health.returncode == 0, health.stderr  # over HTTPS: ports.json says so
    assert ports["http_scheme"] == "https"
    tls = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
        httpx.get(f"http://127.0.0.1:{ports['http']}/metrics", timeout=10)
    metrics = httpx.get(f"https://127.0.0.1:{ports['http']}/metrics", timeout=10, verify=tls).text
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_gc_collections_total"):
        assert f"\n{name}" in metrics, f"{name} missing from /metrics"
    [sample] = generate_samples(1, seed=61, now=datetime.now(UTC).replace(microsecond=0))
    [result] = asyncio.run(send_files("127.0.0.1", ports["mllp"], [(sample.name, sample.raw)], ssl_context=tls))
    assert result.code == "AA"
    poll_sync(lambda: documents_for(sandbox, sample.patient.ins), bool, 30)
    assert documents_for(sandbox, sample.patient.ins), "message not delivered"
    assert (data / "journal.sqlite3").exists()
    assert (data / "tmp").is_dir()
