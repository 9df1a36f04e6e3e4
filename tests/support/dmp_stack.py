"""A gateway configured with ``space.transport: dmp`` against the independent test receiver, over mutual
TLS 1.2 on loopback, with a development PKI written for the test; or against the real sandbox's DMP
services (:func:`sandbox_dmp_stack`)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passerelle.adapters.dmp.devpki import DEV_HOMOLOGATION_ID, DevPki, write_dev_pki
from passerelle.adapters.mhd import SpaceSettings
from passerelle.connector.app import Gateway
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.document import Document, Provenance
from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox
from tests.support.dmp_receiver import DmpReceiver, running_receiver
from tests.support.gateway import running_gateway


def space_settings(pki: DevPki, url: str, **extra: Any) -> SpaceSettings:
    """The ``space`` settings of a DmpSpace on ``url`` with ``pki``'s credentials (mutual TLS, SIGN PKCS#12)."""
    return SpaceSettings(
        url=url,
        transport="dmp",
        client_cert_file=pki.auth_cert,
        client_key_file=pki.auth_key,
        ca_file=pki.ca,
        test_environment=True,
        dmp={
            "sign_cert_file": pki.sign_p12,
            "sign_password_file": pki.sign_password,
            "structure_id": pki.structure_id,
            "homologation_id": DEV_HOMOLOGATION_ID,
        },
        **extra,
    )


def sample_document(seed: int) -> Document:
    """A synthetic CDA document (patient and identifiers drawn from ``seed``), created now."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    cda = build_sample_cda(
        now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng)
    )
    return map_cda_document(cda, test_environment=True, now=now, provenance=Provenance(channel="test"))


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
        "space.dmp.homologation_id": DEV_HOMOLOGATION_ID,
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


@contextlib.asynccontextmanager
async def sandbox_dmp_stack(
    tmp: Path, *, sandbox: dict[str, Any] | None = None, pki: DevPki | None = None, **overrides: Any
) -> AsyncIterator[tuple[SandboxURL, Gateway, str]]:
    """The real sandbox (its DMP services trusting a dev PKI's CA) and a gateway with
    ``space.transport: dmp`` pointed at ``/si-dmp-server/v2/services`` (loopback http, unless
    ``sandbox`` options switch its TLS on and ``overrides`` give the gateway its TLS files).
    Yield (sandbox root URL, gateway, gateway HTTP base URL)."""
    pki = pki or write_dev_pki(tmp / "pki")
    config = SandboxConfig(data_dir=tmp / "sandbox", dmp_ca_file=pki.ca, **(sandbox or {}))
    async with running_sandbox(config) as url:
        settings = {**dmp_overrides(pki, url.dmp), "space.client_cert_file": None, "space.client_key_file": None,
                    "space.ca_file": None, **overrides}  # fmt: skip
        async with running_gateway(tmp / "gw", url.dmp, **settings) as (gateway, base):
            yield url, gateway, base
