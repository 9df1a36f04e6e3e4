"""File modes after a real run (issue 11 item 7; ADR 0024): ``passerelle run`` as a process with umask
000, fed over MLLP and through both watched folders, delivering to the real sandbox. Afterwards every
directory the gateway created is 0700 and every file it wrote is 0600: the data directory, the journal,
audit and WAL files, ``run/ports.json``, the folders' ``processed/`` and ``failed/`` with the files moved
there and their reason files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from passerelle.sandbox.testing import SandboxURL
from tests.e2e.conftest import documents_for
from tests.support.dicom_samples import make_kos
from tests.support.waiting import until_sync


def modes(root: Path) -> dict[Path, int]:
    """Permission bits of ``root`` and of everything under it."""
    return {path: stat.S_IMODE(path.lstat().st_mode) for path in (root, *root.rglob("*"))}


def test_every_file_the_gateway_writes_is_private_whatever_the_umask(tmp_path: Path, sandbox: SandboxURL) -> None:
    data_dir = tmp_path / "srv" / "passerelle"  # missing: the gateway creates it
    cda_in, dicom_in = tmp_path / "cda-in", tmp_path / "dicom-in"
    env = {
        **os.environ,
        "PASSERELLE__WORKER__POLL_INTERVAL_S": "0.05",
        "PASSERELLE__CDA__FOLDER": str(cda_in),
        "PASSERELLE__CDA__POLL_INTERVAL_S": "0.1",
        "PASSERELLE__DICOM_FOLDER__ENABLED": "true",
        "PASSERELLE__DICOM_FOLDER__PATH": str(dicom_in),
        "PASSERELLE__DICOM_FOLDER__POLL_INTERVAL_S": "0.1",
        "PASSERELLE__DICOM_FOLDER__SETTLE_S": "0",
        "PASSERELLE__DICOM__ENABLED": "true",
        "PASSERELLE__DICOM__PORT": "0",
    }
    log = (tmp_path / "gateway.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "passerelle", "run", "--data-dir", str(data_dir), "--mllp-port", "0",
         "--http-port", "0", "--space-url", sandbox.fhir],
        stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    try:
        ports_file = data_dir / "run" / "ports.json"
        until_sync(lambda: ports_file.exists() or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
        ports = json.loads(ports_file.read_text())

        [sample] = generate_samples(1, seed=41, now=datetime.now(UTC).replace(microsecond=0))
        [ack] = asyncio.run(send_files("127.0.0.1", ports["mllp"], [(sample.name, sample.raw)]))
        assert ack.code == "AA"
        (cda_in / "junk.xml").write_bytes(b"not a CDA")
        (dicom_in / "junk.dcm").write_bytes(b"not DICOM either")
        (dicom_in / "kos.dcm").write_bytes(make_kos())
        until_sync(lambda: (cda_in / "failed" / "junk.xml.reason.txt").exists())
        until_sync(lambda: (dicom_in / "failed" / "junk.dcm.reason.txt").exists())
        until_sync(lambda: not (dicom_in / "kos.dcm").exists())
        until_sync(lambda: documents_for(sandbox.fhir.removesuffix("/fhir"), sample.patient.ins))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

    written = modes(data_dir)
    for folder in (cda_in, dicom_in):
        for taken in ("processed", "failed"):
            written.update(modes(folder / taken))
    names = {str(path.relative_to(tmp_path)) for path in written}
    assert {"srv/passerelle/journal.sqlite3", "srv/passerelle/run/ports.json"} <= names
    assert {"cda-in/failed/junk.xml.reason.txt", "dicom-in/failed/junk.dcm", "dicom-in/processed/kos.dcm"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    wrong = {
        str(path.relative_to(tmp_path)): oct(mode)
        for path, mode in written.items()
        if mode != (0o700 if path.is_dir() else 0o600)
    }
    assert wrong == {}
