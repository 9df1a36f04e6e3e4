"""A gateway configured with ``space.transport: dmp`` against the independent test receiver, over mutual
TLS 1.2 on loopback, with a development PKI written for the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from passerelle.adapters.dmp.devpki import DevPki, write_dev_pki
from passerelle.connector.app import Gateway
from tests.support.dmp_receiver import DmpReceiver, running_receiver
from tests.support.gateway import running_gateway


def dmp_overrides(pki: DevPki, url: str) -> dict[str, Any]:
    return {
        "space.transport": "dmp",
        "space.url": url,
        "space.client_cert_file": pki.auth_cert,
        "space.client_key_file": pki.auth_key,
        "space.ca_file": pki.ca,
        "space.dmp.sign_cert_file": pki.sign_cert,
        "space.dmp.sign_key_file": pki.sign_key,
        "space.dmp.structure_id": pki.structure_id,
        "space.dmp.activity_sector": "SA25",
        "worker.retry.initial_delay_s": 0.2,
        "worker.retry.jitter": 0.0,
        "readiness.space_probe": False,  # the tests count the receiver's transactions (the probe is a TD0.2)
    }


@contextlib.asynccontextmanager
async def dmp_stack(tmp: Path, schema_dir: Path, **overrides: Any) -> AsyncIterator[tuple[DmpReceiver, Gateway, str]]:
    """Yield (receiver, gateway, gateway HTTP base URL)."""
    pki = write_dev_pki(tmp / "pki")
    async with running_receiver(schema_dir, pki.ca, tls=(pki.server_cert, pki.server_key)) as receiver:
        settings = {**dmp_overrides(pki, receiver.base_url), **overrides}
        async with running_gateway(tmp / "gw", receiver.base_url, **settings) as (gateway, base):
            yield receiver, gateway, base
