"""HEALTHCHECK of the Passerelle container image: exit 0 when the gateway's ``/readyz`` answers 200.

The HTTP port is read from ``<data_dir>/run/ports.json``, which the gateway writes once its listeners are
bound, so a site that moves ``http.port`` keeps a working check. ``/readyz`` is 503 while the journal is
not open or the dispatch worker is not running (docs/runbook.md).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def main() -> int:
    data_dir = Path(os.environ.get("PASSERELLE__DATA_DIR", "/data"))
    try:
        port = int(json.loads((data_dir / "run" / "ports.json").read_text(encoding="utf-8"))["http"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError) as exc:
        print(f"not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
