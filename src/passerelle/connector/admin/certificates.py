"""When the certificates the gateway is configured with expire, for the console's overview.

Each configured certificate is read from its file (PEM or DER; the DMP SIGN certificate also from its
PKCS#12 file) each time the overview is shown, so a renewed file shows at once. A file that cannot be
read is shown with the problem, never raised: the overview must open even then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from passerelle.adapters.dmp.credentials import CredentialError, load_certificate


@dataclass(frozen=True)
class CertificateStatus:
    """One configured certificate: the setting naming it, its subject and end of validity; or the problem
    that kept it from being read (``problem``, with no subject and no date)."""

    setting: str
    subject: str
    not_after: datetime | None
    problem: str

    def days_left(self, now: datetime) -> int | None:
        return None if self.not_after is None else (self.not_after - now).days


#: A certificate to read: (setting path, loader). The loader raises ``CredentialError`` when it cannot.
CertificateSource = tuple[str, Callable[[], x509.Certificate]]


def from_file(setting: str, path: Path) -> CertificateSource:
    return setting, lambda: load_certificate(path, setting)


def certificate_statuses(sources: Sequence[CertificateSource]) -> list[CertificateStatus]:
    out = []
    for setting, load in sources:
        try:
            cert = load()
        except (CredentialError, OSError, ValueError) as exc:
            out.append(CertificateStatus(setting, "", None, str(exc).removeprefix(f"{setting}: ")))
            continue
        out.append(CertificateStatus(setting, cert.subject.rfc4514_string(), cert.not_valid_after_utc, ""))
    return out
