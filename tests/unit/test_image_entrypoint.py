"""The container image's entrypoint (docker/entrypoint.py): which command it runs, and when it refuses
to start for want of a patient-space URL. The process-level behaviour is in tests/e2e/test_image.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_entrypoint", ROOT / "docker" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ep = _entrypoint()
IMAGE_CONFIG = str(ROOT / "docker" / "passerelle.yaml")
ENV = {"PASSERELLE_CONFIG": IMAGE_CONFIG}


def test_run_without_a_space_url_is_refused() -> None:
    assert ep.command([], ENV) is None
    assert ep.command(["run"], ENV) is None
    assert ep.command(["passerelle", "run"], ENV) is None
    assert ep.command(["run"], {**ENV, "PASSERELLE__SPACE__URL": "  "}) is None


def test_an_explicit_space_url_from_any_source_is_enough(tmp_path: Path) -> None:
    url = "https://space.example.org/fhir"
    assert ep.command(["run"], {**ENV, "PASSERELLE__SPACE__URL": url}) == ["run", "--config", IMAGE_CONFIG]
    assert ep.command(["run", "--space-url", url], ENV) == ["run", "--space-url", url, "--config", IMAGE_CONFIG]
    site = tmp_path / "site.yaml"
    site.write_text(f"space:\n  url: {url}\n")
    assert ep.command(["run", f"--config={site}"], ENV) == ["run", f"--config={site}"]
    site.write_text("space:\n  auth: none\n")
    assert ep.command(["run", "--config", str(site)], ENV) is None


def test_an_unreadable_config_is_left_to_passerelle_to_report(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    assert ep.command(["run", "--config", missing], ENV) == ["run", "--config", missing]


def test_other_commands_pass_through_with_the_image_config_where_they_take_one() -> None:
    assert ep.command(["check-config"], ENV) == ["check-config", "--config", IMAGE_CONFIG]
    assert ep.command(["messages", "list", "--state", "dead"], ENV) == ["messages", "list", "--state", "dead"]
    assert ep.command(["run"], {"PASSERELLE__SPACE__URL": "https://s/fhir"}) == [
        "run",
        "--config",
        "/etc/passerelle/passerelle.yaml",
    ]
