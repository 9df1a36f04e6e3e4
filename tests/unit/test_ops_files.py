"""The operator files in config/ stay in step with the code: every metric they use exists, the alert
rules are valid for Prometheus, the example settings load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from passerelle.connector.settings import load_settings
from passerelle.observability.metrics import Metrics

CONFIG = Path(__file__).resolve().parents[2] / "config"
_NAME = re.compile(r"\bpasserelle_[a-z_]+\b")


def exported_names() -> set[str]:
    names: set[str] = set()
    for metric in Metrics().registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        names.update({f"{metric.name}_total", f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum"})
    return names


def test_alert_rules_and_dashboard_use_existing_metrics() -> None:
    known = exported_names()
    rules = yaml.safe_load((CONFIG / "prometheus-alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in _NAME.findall(e)}
    assert used, "no metric referenced"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt prometheus)")
def test_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(CONFIG / "prometheus-alerts.yaml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_example_settings_load_with_every_group() -> None:
    settings = load_settings(CONFIG / "passerelle.example.yaml")
    assert settings.mllp.port == 2575 and settings.space.url.endswith("/fhir")
