"""The bind rule's pure part (which addresses are loopback, the lines it prints) and the classification of
the patient space's answers that drives /readyz. The sockets and processes are in
tests/integration/test_http_security.py and tests/integration/test_readiness.py."""

from __future__ import annotations

import logging

import pytest

from passerelle.adapters.space import configuration_error, space_answered
from passerelle.connector.listeners.exposure import Exposure, PlaintextExposureError, guard, is_loopback
from passerelle.connector.readiness import SpaceHealth
from passerelle.errors import (
    RemoteAmbiguousError,
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
    RemoteUntrustedCertificateError,
)
from passerelle.observability.metrics import Metrics


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
        ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("192.168.0.10", False),
        ("no-such-host.invalid", False),
    ],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_text_on_the_network_is_a_problem_unless_allowed_then_a_warning() -> None:
    refused = Exposure("http", "0.0.0.0", tls=False, allow_plaintext=False)
    assert refused.problem() == (
        "http.host: 0.0.0.0 is not a loopback address and http has no TLS: configure http.tls, or set "
        "http.allow_plaintext_on_network: true on purpose (a trusted segment)"
    )
    with pytest.raises(PlaintextExposureError, match=r"^http\.host: 0\.0\.0\.0 is not a loopback"):
        guard(refused)
    allowed = Exposure("mllp", "10.1.2.3", tls=False, allow_plaintext=True)
    assert allowed.problem() is None
    # A handler on the module's own logger: a CLI test that ran setup_logging() earlier in the same process
    # may have replaced the root logger's handlers and level.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    exposure_log = logging.getLogger("passerelle.connector.listeners.exposure")
    exposure_log.addHandler(handler)
    level, exposure_log.level = exposure_log.level, logging.WARNING  # whatever level the root was given
    disabled, exposure_log.disabled = exposure_log.disabled, False
    try:
        guard(allowed)
    finally:
        exposure_log.removeHandler(handler)
        exposure_log.level, exposure_log.disabled = level, disabled
    [line] = [r for r in records if r.levelno == logging.WARNING]
    assert "mllp listener serves PLAIN TEXT on 10.1.2.3" in line.getMessage()
    for fine in (
        Exposure("mllp", "0.0.0.0", tls=True, allow_plaintext=False),
        Exposure("http", "127.0.0.1", False, False),
    ):
        assert fine.problem() is None and fine.warning() is None


@pytest.mark.parametrize(
    ("exc", "kind", "answered"),
    [
        (None, None, True),
        (RemoteCredentialError("refused (HTTP 401)", status=401), "credentials", False),
        (RemoteEndpointError("not found (HTTP 404)", status=404), "endpoint", False),
        (RemoteTransientError("TD0.2: HTTP 404 without a SOAP answer", status=404), "endpoint", False),
        (RemoteRejectedError("refused", status=404, remote_code="UnknownDocument"), None, True),
        (RemoteRejectedError("refused", status=422, remote_code="DMPClosed"), None, True),
        (RemoteRejectedError("refused", status=422), None, False),
        (RemoteTransientError("unavailable (HTTP 503)", status=503), None, False),
        (RemoteEndpointError("ITI-41: redirect not followed (HTTP 302)", status=302), "endpoint", False),
        (RemoteUntrustedCertificateError("the server's certificate is not trusted"), "tls_untrusted", False),
        (RemoteAmbiguousError("ambiguous", status=200), None, False),
        (ConnectionError("reset"), None, False),
    ],
)
def test_which_answers_are_configuration_errors(exc: BaseException | None, kind: str | None, answered: bool) -> None:
    assert configuration_error(exc) == kind
    assert space_answered(exc) is answered


def test_space_health_is_misconfigured_until_the_space_answers_and_logs_each_episode_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    health = SpaceHealth(metrics)
    with caplog.at_level(logging.INFO):
        health.observe(RemoteEndpointError("patient space URL not found (HTTP 404 without a FHIR answer)", status=404))
        health.observe(RemoteTransientError("unavailable (HTTP 503)", status=503))  # down, still misconfigured
        health.observe(RemoteEndpointError("patient space URL not found (HTTP 404 without a FHIR answer)", status=404))
        assert health.reason == (
            "patient space configuration error since its last success: "
            "patient space URL not found (HTTP 404 without a FHIR answer)"
        )
        health.observe(RemoteRejectedError("closed", status=422, remote_code="DMPClosed"))  # understood: fine
        assert health.reason == ""
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "check space.url" in errors[0].getMessage()
    assert metrics.space_configuration_errors.labels("endpoint")._value.get() == 2
    assert metrics.not_ready.labels("space")._value.get() == 0
