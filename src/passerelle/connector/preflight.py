"""Every check ``passerelle run`` makes before it starts anything, shared with ``passerelle check-config``.

:func:`preflight` returns ALL the problems it finds, one line each, starting with the setting's path
(``mllp.tls.cert_file: certificate and key do not match``): files exist and are readable, secrets are
not empty, certificates load and match their keys, OIDs are well formed, the data directory and the
watched folders can be written, two listeners do not share a port, a listener on a non-loopback
address speaks TLS or says it may not (:mod:`~passerelle.connector.listeners.exposure`). With
``online=True`` it also asks the patient space for its capability statement. Nothing here starts, binds
or writes a file.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

from passerelle.config.settings import HttpTlsSettings
from passerelle.connector.listeners.exposure import exposures
from passerelle.connector.listeners.http.tls import server_context as http_context
from passerelle.connector.listeners.mllp.tls import server_context
from passerelle.connector.settings import Settings

OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")

Check = Callable[[Settings, Mapping[str, str]], Iterator[str]]


def preflight(settings: Settings, environ: Mapping[str, str], *, online: bool = False) -> list[str]:
    """Every problem found, one line each (``[]`` when the settings can run)."""
    checks: list[Check] = [_paths, _secrets, _certificates, _exposure, _oids, _ports, _rules, _production, _space]
    if online:
        checks.append(_space_online)
    return [line for check in checks for line in check(settings, environ)]


def _writable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be used as a directory we write in (it may not exist yet), else None."""
    probe = path
    try:
        while not probe.exists():
            if probe.parent == probe:
                return "no existing parent directory"
            probe = probe.parent
    except OSError as exc:  # e.g. a parent we may not search
        return exc.strerror or type(exc).__name__
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _paths(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    dirs: list[tuple[str, Path | None]] = [("data_dir", settings.data_dir)]
    if settings.journal.backend == "sqlite" and settings.journal.path is not None:
        dirs.append(("journal.path", settings.journal.path.parent))
    if settings.cda.enabled and settings.cda.folder is not None:
        dirs.append(("cda.folder", settings.cda.folder))
    if settings.dicom_folder.enabled:
        folder = settings.dicom_folder
        dirs += [("dicom_folder.path", folder.path), ("dicom_folder.processed_dir", folder.processed_dir)]
        dirs.append(("dicom_folder.failed_dir", folder.failed_dir))
    for name, path in dirs:
        why = _writable_dir(path) if path is not None else None
        if why:
            yield f"{name}: cannot write there ({why})"


def _unreadable(path: Path, *, secret: bool = False) -> str | None:
    try:
        text = path.read_bytes()
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror})"
    return f"{path} is empty" if secret and not text.strip() else None


def _secrets(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    space, journal, tls = settings.space, settings.journal, settings.mllp.tls
    files: list[tuple[str, Path | None, bool]] = [
        ("http.admin_token_file", settings.http.admin_token_file, True),
        ("space.client_secret_file", space.client_secret_file, True),
        ("space.client_cert_file", space.client_cert_file, False),
        ("space.client_key_file", space.client_key_file, False),
        ("space.ca_file", space.ca_file, False),
        ("mllp.tls.key_password_file", tls.key_password_file, True),
        ("consent.rules_file", settings.consent.rules_file, False),
    ]
    if settings.http.tls is not None:
        files += _tls_files("http.tls", settings.http.tls)
    if journal.backend == "postgres":
        files.append(("journal.dsn_file", journal.dsn_file, True))
    files += [(f"http.tokens[{i}].token_file", t.token_file, True) for i, t in enumerate(settings.http.tokens)]
    for name, path, secret in files:
        why = _unreadable(path, secret=secret) if path is not None else None
        if why:
            yield f"{name}: {why}"
    variables = [("space.client_secret_env", space.client_secret_env if space.client_secret_file is None else "")]
    if journal.backend == "postgres" and journal.dsn_file is None:
        variables.append(("journal.dsn_env", journal.dsn_env or ""))
    for name, variable in variables:
        if variable and not environ.get(variable, "").strip():
            yield f"{name}: the environment variable {variable} is not set or empty"


def _certificates(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    tls = settings.mllp.tls
    if settings.mllp.enabled and tls.enabled:
        try:
            server_context(tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            yield f"mllp.tls.cert_file: the certificate, its key or the client CA does not load ({_ssl_reason(exc)})"
    if settings.http.tls is not None and _all_readable(_tls_files("http.tls", settings.http.tls)):
        try:
            http_context(settings.http.tls)
        except (OSError, ValueError) as exc:
            yield f"http.tls.cert_file: the certificate, its key or the client CA does not load ({_ssl_reason(exc)})"
    if settings.http.client_certificates and (settings.http.tls is None or settings.http.tls.client_ca_file is None):
        yield "http.client_certificates: client certificate identities need http.tls.client_ca_file (mutual TLS)"
    space = settings.space
    if space.client_cert_file is not None and space.client_key_file is not None:
        try:
            ssl.create_default_context().load_cert_chain(space.client_cert_file, space.client_key_file)
        except (OSError, ValueError) as exc:
            yield f"space.client_cert_file: the certificate and its key do not load ({_ssl_reason(exc)})"


def _tls_files(group: str, tls: HttpTlsSettings) -> list[tuple[str, Path | None, bool]]:
    """A listener's TLS files as ``(setting, path, is a secret)``."""
    return [(f"{group}.cert_file", tls.cert_file, False), (f"{group}.key_file", tls.key_file, False),
            (f"{group}.key_password_file", tls.key_password_file, True),
            (f"{group}.client_ca_file", tls.client_ca_file, False)]  # fmt: skip


def _all_readable(files: list[tuple[str, Path | None, bool]]) -> bool:
    """True when each file can be read (else :func:`_secrets` has already said why)."""
    return all(path is None or _unreadable(path, secret=secret) is None for _, path, secret in files)


def _exposure(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    for exposure in exposures(settings):
        problem = exposure.problem()
        if problem is not None:
            yield problem


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "SSL error"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return " ".join(str(exc).split())


def _oids(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    for name, value in (("oid_root", settings.oid_root), ("space.source_id", settings.space.source_id)):
        if not OID.match(value):
            yield f"{name}: {value!r} is not a well-formed OID (digits separated by dots, no leading zero)"


def _ports(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    listeners = [("http.port", settings.http.host, settings.http.port)]
    if settings.mllp.enabled:
        listeners.append(("mllp.port", settings.mllp.host, settings.mllp.port))
    if settings.dicom.enabled:
        listeners.append(("dicom.port", settings.dicom.host, settings.dicom.port))
    seen: dict[int, str] = {}
    for name, _host, port in listeners:
        if port and port in seen:
            yield f"{name}: port {port} is also {seen[port]}"
        seen.setdefault(port, name)


def _rules(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    path = settings.consent.rules_file
    if path is None or not path.is_file():
        return
    from passerelle.consent.rules import load_rules

    try:
        load_rules(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        text = " ".join(str(exc).split()).split(" For further information", 1)[0]  # pydantic's help link
        yield f"consent.rules_file: {text}"


def _production(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    if settings.environment == "production" and "127.0.0.1" in settings.space.url:
        yield "space.url: production environment pointed at a local sandbox"


def _space_online(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    """The space answers its FHIR capability statement (``GET <url>/metadata``)."""
    url = f"{settings.space.url}/metadata"
    try:
        resp = httpx.get(url, timeout=settings.space.connect_timeout_s, headers={"Accept": "application/fhir+json"})
    except httpx.HTTPError as exc:
        yield f"space.url: no answer from {url} ({type(exc).__name__})"
        return
    if resp.status_code != 200:
        yield f"space.url: {url} answered HTTP {resp.status_code}, not a capability statement"
    elif '"CapabilityStatement"' not in resp.text:
        yield f"space.url: {url} did not return a CapabilityStatement"


def _space(settings: Settings, environ: Mapping[str, str]) -> Iterator[str]:
    """The DMP transport's deep checks (certificates, key usages, structure id against the OU, base URL)."""
    from passerelle.adapters.mhd import SpaceTransport

    if settings.space.transport is SpaceTransport.DMP:
        from passerelle.adapters.dmp.credentials import check_space

        yield from check_space(settings.space)
