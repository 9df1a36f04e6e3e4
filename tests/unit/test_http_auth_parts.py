"""The parts of HTTP authentication on their own: token comparison, certificate subjects, settings,
sessions and their CSRF tokens, the console's catalogue and its redirect guard."""

from __future__ import annotations

import hmac
import re
from importlib import resources
from pathlib import Path

import pytest
from pydantic import ValidationError

from passerelle.config.settings import HttpRole, HttpSettings
from passerelle.connector.listeners.http import auth
from passerelle.connector.listeners.http.auth import CertificateBook, Identity, TokenBook, peer_subject
from passerelle.connector.listeners.http.console.base import local_path
from passerelle.connector.listeners.http.console.catalogue import LANGUAGES, catalogue, translator
from passerelle.connector.listeners.http.sessions import SessionStore
from passerelle.queue.model import State

READER = Identity("reader", HttpRole.READ)
OPERATOR = Identity("operator", HttpRole.OPERATE)


def test_every_token_is_compared_whatever_matches_first(monkeypatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    book = TokenBook([(READER, "first-token"), (OPERATOR, "second-token"), (Identity("x", HttpRole.READ), "third")])
    assert book.match("first-token") == READER
    assert book.match("  second-token ") == OPERATOR  # surrounding blanks, as pasted
    assert book.match("second") is None and book.match("") is None
    # Four lookups, three comparisons each, all of digests of the same length: no early exit, no length leak.
    assert len(calls) == 12 and set(calls) == {32}


def test_roles_nest_only_upwards() -> None:
    assert OPERATOR.may(HttpRole.READ) and OPERATOR.may(HttpRole.OPERATE) and not OPERATOR.may(HttpRole.INTAKE)
    assert READER.may(HttpRole.READ) and not READER.may(HttpRole.OPERATE)
    intake = Identity("lab", HttpRole.INTAKE, "LAB^FAC")
    assert intake.may(HttpRole.INTAKE) and not intake.may(HttpRole.READ)


def test_certificate_subjects_by_full_dn_or_cn() -> None:
    book = CertificateBook({"CN=ops.example.fr, O=CHU, C=FR": OPERATOR, "lis.example.fr": READER})
    assert book.match("CN=ops.example.fr,O=CHU,C=FR") == OPERATOR
    assert book.match("cn=ops.example.fr,o=CHU,c=FR") == OPERATOR  # attribute names in any case
    assert book.match("CN=ops.example.fr,O=Other,C=FR") is None  # a full DN must match whole
    assert book.match("CN=lis.example.fr,O=Labo,C=FR") == READER  # a CN alone matches any DN with it
    assert book.match(None) is None and CertificateBook({}).match("CN=lis.example.fr") is None
    assert peer_subject({"extensions": {"tls": {"client_cert_name": "CN=a"}}}) == "CN=a"
    assert peer_subject({"extensions": {"tls": {"client_cert_name": None}}}) is None
    assert peer_subject({}) is None


def test_token_settings_are_checked(tmp_path: Path) -> None:
    good, empty = tmp_path / "good", tmp_path / "empty"
    good.write_text("s3cret\n")
    empty.write_text("  \n")
    tokens = [
        {"name": "lab", "role": "intake", "sender": "LAB^FAC", "token_file": good},
        {"name": "ops", "role": "operate", "token_file": empty},
        {"name": "gone", "role": "read", "token_file": tmp_path / "missing"},
    ]
    settings = HttpSettings.model_validate({"tokens": tokens})
    problems = auth.token_file_problems(settings)
    assert problems[0] == f"http.tokens[1].token_file: {empty} is empty"
    assert problems[1].startswith("http.tokens[2].token_file: cannot read")
    with pytest.raises(auth.TokenFileError):
        TokenBook.from_settings(settings)
    with pytest.raises(ValidationError, match="an intake identity needs a sender"):
        HttpSettings.model_validate({"tokens": [{"name": "lab", "role": "intake", "token_file": good}]})
    with pytest.raises(ValidationError, match="only an intake identity has a sender"):
        HttpSettings.model_validate({"tokens": [{"name": "r", "role": "read", "sender": "X", "token_file": good}]})
    with pytest.raises(ValidationError, match="must be unique: admin"):
        HttpSettings.model_validate(
            {"admin_token_file": good, "tokens": [{"name": "admin", "role": "read", "token_file": good}]}
        )
    book = TokenBook.from_settings(HttpSettings.model_validate({"admin_token_file": good}))
    assert book.match("s3cret") == Identity("admin", HttpRole.OPERATE)


def test_sessions_expire_when_idle_and_at_their_limit() -> None:
    now = [0.0]
    store = SessionStore(idle_s=60, max_s=300, limit=2, clock=lambda: now[0])
    a = store.open(READER)
    assert store.get(a.id) == (a, False)
    now[0] = 59
    assert store.get(a.id)[0] is a  # a request restarts the idle time
    now[0] = 118
    assert store.get(a.id)[0] is a
    now[0] = 179
    assert store.get(a.id) == (None, True)  # idle too long
    assert store.get(a.id) == (None, False) and store.get(None) == (None, False)
    b = store.open(OPERATOR)
    for step in range(1, 8):
        now[0] = 179 + step * 50
        found = store.get(b.id)[0]
    assert found is None  # 300 s after opening, however busy
    c, d, e = store.open(READER), store.open(READER), store.open(READER)
    assert len(store) == 2 and store.get(c.id)[0] is None and store.get(e.id)[0] is e  # the oldest made room
    assert store.csrf_ok(d.id, store.csrf(d.id)) and not store.csrf_ok(d.id, store.csrf(e.id))
    assert not store.csrf_ok(d.id, "") and not store.csrf_ok(None, store.csrf(d.id))
    assert SessionStore(60, 60).csrf(d.id) != store.csrf(d.id)  # a new process, a new secret


def test_redirects_stay_on_the_site() -> None:
    assert local_path("/messages?state=dead") == "/messages?state=dead"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil.example", "", None, "messages"):
        assert local_path(bad) == "/"


def test_the_catalogue_has_every_key_the_templates_use_in_both_languages() -> None:
    folder = resources.files("passerelle.connector.listeners.http.console").joinpath("templates")
    used: set[str] = set()
    for entry in folder.iterdir():
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_]+)["']""", entry.read_text(encoding="utf-8")))
    used = {k for k in used if not k.endswith("_")}  # a prefix completed in the template, checked below
    used |= {f"dead.caption_{s}" for s in ("dead", "parked", "refused")}
    used |= {f"state.{s.value}" for s in State} | {f"role.{r.value}" for r in HttpRole}
    missing = sorted(used - catalogue().keys())
    assert missing == []
    assert all(fr.strip() and en.strip() for fr, en in catalogue().values())
    assert LANGUAGES[0] == "fr" and translator("fr")("nav.overview") == "Vue d'ensemble"
    assert translator("en")("nav.overview") == "Overview"
    with pytest.raises(KeyError):
        translator("en")("no.such_key")
    assert translator("en")("event.new_kind", "new_kind") == "new_kind"


def test_check_config_names_an_empty_or_unreadable_token_file(tmp_path: Path) -> None:
    from passerelle.connector.preflight import preflight
    from passerelle.connector.settings import load_settings

    empty = tmp_path / "empty"
    empty.write_text("\n")
    tokens = [
        {"name": "ops", "role": "operate", "token_file": empty},
        {"name": "lab", "role": "intake", "sender": "LAB", "token_file": tmp_path / "nope"},
    ]
    settings = load_settings(None, overrides={"data_dir": tmp_path, "http.tokens": tokens})
    problems = [p for p in preflight(settings, {}) if p.startswith("http.")]
    assert problems == [
        f"http.tokens[0].token_file: {empty} is empty",
        f"http.tokens[1].token_file: cannot read {tmp_path / 'nope'} (No such file or directory)",
    ]
