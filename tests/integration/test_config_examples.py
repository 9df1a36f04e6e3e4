"""The configuration files the project ships are true to the settings model.

- config/passerelle.example.yaml names every setting the model accepts (set to its default, or in a
  comment when it has no useful default), and every key it names, commented or not, is a real setting:
  a renamed or misspelt key in the example fails here, not on a site;
- the example with its commented keys switched on (and the files they name made from the dev PKI)
  still loads through the real loader;
- docker/passerelle.yaml, given the dev PKI's server certificate where the image expects the site's,
  passes ``passerelle check-config``;
- config/visibility-rules.yaml loads through the consent rules loader.

(The example as shipped passes ``check-config`` in tests/integration/test_cli.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from passerelle.connector.settings import DERIVED_SETTINGS, Settings, load_settings
from passerelle.consent.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "passerelle.example.yaml"

#: Set by the composition root from other settings, not by a site: the example does not name them.
DERIVED = set(DERIVED_SETTINGS)

ANY = "*"  # a key chosen by the site (a sender, a certificate, an AE title)
Path_ = tuple[str, ...]


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def setting_paths(model: type[BaseModel], prefix: Path_ = ()) -> Iterator[tuple[Path_, bool]]:
    """Every key path the model accepts, with whether it is a leaf a site sets (not a group or a map)."""
    for name, field in model.model_fields.items():
        path = (*prefix, field.alias or name)
        is_map = typing.get_origin(field.annotation) is dict or any(
            typing.get_origin(a) is dict for a in typing.get_args(field.annotation)
        )
        subs = _models(field.annotation)
        yield path, not subs and not is_map
        if is_map:
            yield (*path, ANY), not subs
            path = (*path, ANY)
        for sub in subs:
            yield from setting_paths(sub, path)


KEY = re.compile(r"""^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>"[^"]+"|[A-Za-z_][\w^.=,-]*):(?:\s|$)""")
INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z_]\w*)\s*:")
COMMENTED = re.compile(r"^(?P<lead>\s{0,8})# ?(?P<rest>.*)$")


def example_paths(text: str) -> set[Path_]:
    """Key paths of a YAML file, commented-out keys included (a ``#`` in the first columns, then YAML)."""
    found: set[Path_] = set()
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        commented = COMMENTED.match(raw)
        line = commented["lead"] + commented["rest"] if commented else raw.split(" #", 1)[0]
        match = KEY.match(line)
        dash = re.match(r"^(\s*)-\s+\{", line)
        if match is None and dash is None:
            continue
        indent = len(match["indent"]) if match else len(dash.group(1)) if dash else 0
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = tuple(key for _, key in stack)
        if match is not None:
            path = (*parents, match["key"].strip('"'))
            found.add(path)
            stack.append((indent, match["key"].strip('"')))
            value = line[match.end() :]
        else:
            path, value = parents, line
        if "{" in value:
            found.update((*path, key) for key in INLINE_KEY.findall(value))
    return found


def _matches(path: Path_, pattern: Path_) -> bool:
    return len(path) == len(pattern) and all(p in (ANY, k) for k, p in zip(path, pattern, strict=True))


def test_the_example_names_every_setting() -> None:
    named = example_paths(EXAMPLE.read_text(encoding="utf-8"))
    missing = [
        ".".join(path)
        for path, leaf in setting_paths(Settings)
        if leaf and path not in DERIVED and not any(_matches(n, path) for n in named)
    ]
    assert missing == []


def test_every_key_of_the_example_is_a_setting() -> None:
    accepted = [path for path, _ in setting_paths(Settings)]
    named = example_paths(EXAMPLE.read_text(encoding="utf-8"))
    unknown = sorted(".".join(n) for n in named if not any(_matches(n, p) for p in accepted))
    assert unknown == []


def test_the_example_reader_sees_commented_and_inline_keys() -> None:
    text = (
        "# Prose, then a key-looking comment would be read as a key: the reverse test catches it.\n"
        "http:\n"
        "  port: 8080   # a comment: not a key\n"
        "  # tokens:\n"
        "  #   - {name: a, role: read, token_file: /x}\n"
        "mllp:\n"
        "  tls:\n"
        "    # bindings:\n"
        '    #   "CN=a.example": ["A^B"]\n'
        "hl7:\n"
        "  senders: {}\n"
        "  #  SIL^LAB: {fallback_charset: x}\n"
        "                                   # unset: an aligned comment, not a key\n"
    )
    assert example_paths(text) == {
        ("http",),
        ("http", "port"),
        ("http", "tokens"),
        ("http", "tokens", "name"),
        ("http", "tokens", "role"),
        ("http", "tokens", "token_file"),
        ("mllp",),
        ("mllp", "tls"),
        ("mllp", "tls", "bindings"),
        ("mllp", "tls", "bindings", "CN=a.example"),
        ("hl7",),
        ("hl7", "senders"),
        ("hl7", "senders", "SIL^LAB"),
        ("hl7", "senders", "SIL^LAB", "fallback_charset"),
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    done = subprocess.run(
        [sys.executable, "-m", "passerelle", "dev-pki", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return out


def check_config(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``passerelle check-config`` on ``config`` as a separate process (what an operator runs)."""
    return subprocess.run(
        [sys.executable, "-m", "passerelle", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _uncommented(text: str) -> str:
    """The example with every commented-out key line switched on (prose comments stay comments); an empty
    map or list (``senders: {}``) followed by commented entries becomes their parent."""
    lines = []
    for raw in text.splitlines():
        commented = COMMENTED.match(raw)
        line = commented["lead"] + commented["rest"] if commented else ""
        lines.append(line if commented and (KEY.match(line) or re.match(r"^\s*-\s+\{", line)) else raw)
    for i, line in enumerate(lines[:-1]):
        indent = len(line) - len(line.lstrip())
        following = lines[i + 1]
        if re.search(r": (\{\}|\[\])(\s|$)", line) and len(following) - len(following.lstrip()) > indent:
            lines[i] = re.sub(r": (\{\}|\[\])", ":", line, count=1)
    return "\n".join(lines) + "\n"


def test_the_examples_commented_settings_load_when_switched_on(pki: Path, tmp_path: Path) -> None:
    text = _uncommented(EXAMPLE.read_text(encoding="utf-8"))
    # Every file the example names, made real (certificates from the dev PKI, secrets non-empty).
    files = {
        "/etc/passerelle/tls/server.pem": pki / "server.pem",
        "/etc/passerelle/tls/server.key": pki / "server.key",
        "/etc/passerelle/tls/clients-ca.pem": pki / "ca.pem",
        "/etc/passerelle/tls/partners-ca.pem": pki / "ca.pem",
    }
    for name, source in files.items():
        text = text.replace(name, str(source))
    for secret in sorted(set(re.findall(r"(/(?:etc|run)/[\w./-]+)", text))):
        path = tmp_path / secret.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not-empty\n")
        text = text.replace(secret, str(path))
    # The switches the commented blocks need on (the example leaves them off).
    text = text.replace("    enabled: false\n    cert_file:", "    enabled: true\n    cert_file:")
    site = tmp_path / "site.yaml"
    site.write_text(text)
    settings = load_settings(site)
    assert settings.mllp.tls.enabled and settings.mllp.tls.bindings == {"CN=sil.example.org": ["SIL-LABO^LABO-X"]}
    assert settings.http.tls is not None and settings.http.tls.minimum_version == "1.2"
    assert [t.role for t in settings.http.tokens] == ["read", "operate", "intake"]
    assert settings.http.client_certificates[0].subject.startswith("CN=exploit.chu.example")
    assert settings.space.dmp.homologation_id and settings.space.dmp.vihf_version == "3.0"
    assert settings.hl7.senders["SIL-LABO^LABO-X"].allow_cp1252
    assert settings.business_ack.senders["SIL-LABO^LABO-X"].port == 6661
    assert settings.dicom.bindings["CT_SALLE1"].issuers_of_patient_id == ["CHU-EXEMPLE"]
    assert settings.lab.senders["SIL-LABO^LABO-X"].default_validator_given == "Jeanne"
    assert settings.journal.dsn_env == "PASSERELLE_PG_DSN" and settings.space.client_secret_env


def test_the_image_configuration_passes_check_config_with_its_certificate(pki: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "tls").mkdir(parents=True)
    (data / "tls" / "server.crt").write_bytes((pki / "server.pem").read_bytes())
    (data / "tls" / "server.key").write_bytes((pki / "server.key").read_bytes())
    config = tmp_path / "passerelle.yaml"
    config.write_text((ROOT / "docker" / "passerelle.yaml").read_text(encoding="utf-8").replace("/data", str(data)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE__")}
    env["PASSERELLE__SPACE__URL"] = "https://space.example.org/fhir"
    done = check_config(config, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "environment=production" in done.stdout
    # Without the certificate: one line per missing file, exit 2 (what the image does on a bare volume).
    (data / "tls" / "server.crt").unlink()
    done = check_config(config, env)
    assert done.returncode == 2 and "http.tls.cert_file" in done.stderr


def test_the_visibility_rules_example_loads() -> None:
    rules = load_rules((ROOT / "config" / "visibility-rules.yaml").read_text(encoding="utf-8"))
    assert rules.rules  # the shipped example carries rules, not just defaults


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("hl7:\n  colour: blue\n", "hl7.colour: Extra inputs are not permitted"),
        ("hl7:\n  senders:\n    LAB:\n      fallback_charst: '8859/1'\n", "hl7.senders.LAB.fallback_charst"),
        ("space:\n  content_type:\n    code: X\n    system: Y\n    dispaly: Z\n", "space.content_type.dispaly"),
        ("hl7:\n  test_environment: true\n", "hl7.test_environment is derived by the gateway"),
        ("cda:\n  test_environment: true\n", "cda.test_environment is derived by the gateway"),
    ],
)
def test_a_misspelt_or_derived_setting_stops_check_config_with_one_line(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    """A typo anywhere (here, in groups that once took any key) is refused, never silently ignored."""
    config = tmp_path / "passerelle.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n" + yaml_text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE__")}
    done = check_config(config, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
