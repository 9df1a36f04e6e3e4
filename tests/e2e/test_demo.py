"""`passerelle demo` (what `make demo` runs) works end to end on embedded defaults, over MHD and over the
DMP SOAP services."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox_sync


def test_demo_runs_end_to_end(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "passerelle", "demo", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" AA ") == 5
    assert out.stdout.count("delivered") >= 5
    assert "demo OK" in out.stdout


def test_demo_over_the_dmp_services_runs_end_to_end(tmp_path) -> None:
    """A fresh data dir: the demo writes its dev PKI, the sandbox trusts its CA, the gateway speaks
    TD0.2 and ITI-41 to the sandbox's DMP services; each report ends delivered and in the patient's
    space, whose page (the sandbox re-opened on the same data afterwards) shows pushes over dmp."""
    out = subprocess.run(
        [sys.executable, "-m", "passerelle", "demo", "--transport", "dmp", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(r"^(\S+)\s+AA\s+(\d{15})\s+.*\s(delivered)\s+yes$", out.stdout, re.M)
    assert len(rows) == 5, out.stdout
    assert "demo OK" in out.stdout and "DMPInvalid" not in out.stdout + out.stderr
    assert {p.name for p in (tmp_path / "pki").iterdir()} >= {"ca.pem", "sign.pem", "sign.key"}
    with running_sandbox_sync(SandboxConfig(data_dir=tmp_path / "sandbox")) as url, httpx.Client() as client:
        for _message, ins, _state in rows:
            page = client.get(f"{url}/patients/{ins}").text
            pushes = client.get(f"{url.admin}/pushes", params={"ins": ins}).json()
            assert "<td>dmp</td>" in page
            assert [(p["transport"], p["outcome"]) for p in pushes] == [("dmp", "accepted")]
