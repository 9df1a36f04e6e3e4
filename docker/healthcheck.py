"""HEALTHCHECK of the Passerelle container image: exit 0 when the gateway's ``/readyz`` answers 200.

The HTTP port and scheme are read from ``<data_dir>/run/ports.json``, which the gateway writes once its
listeners are bound, so a site that moves ``http.port`` or turns HTTPS on or off keeps a working check.
Over HTTPS the check talks to the gateway's own loopback port and does not verify the certificate (it
names the site, not 127.0.0.1; nothing is sent but the request line). With
``http.tls.require_client_cert: true`` the handshake needs a client certificate this check does not
have: use ``require_client_cert: false`` (tokens still guard every route but /healthz and /readyz) or an
orchestrator probe that has one (docs/operations.md). ``/readyz`` is 503 while the journal is not open
or not writable, the disk is nearly full, the patient space answers only configuration errors, or a
background task died (docs/runbook.md).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path


def main() -> int:
    data_dir = Path(os.environ.get("PASSERELLE__DATA_DIR", "/data"))
    try:
        ports = json.loads((data_dir / "run" / "ports.json").read_text(encoding="utf-8"))
        port, scheme = int(ports["http"]), ports.get("http_scheme", "http")
        context = None
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # our own loopback port (module docstring)
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/readyz", timeout=4, context=context) as resp:  # noqa: S310 - a fixed local URL
            return 0 if resp.status == 200 else 1
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError) as exc:
        print(f"not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
