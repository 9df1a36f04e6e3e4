"""The journal's ports stay narrow, and every backend implements every one of them (same names, same
parameters, same sync/async shape). Behaviour is the contract suites' job (tests/integration/journal_contract/)."""

from __future__ import annotations

import inspect

import pytest

from passerelle.queue.memory import MemoryJournal
from passerelle.queue.ports import (
    AdminJournal,
    BrowserJournal,
    DispatchJournal,
    IntakeJournal,
    Journal,
    Lifecycle,
    ReferenceStore,
    RetentionJournal,
)
from passerelle.queue.postgres import PostgresJournal
from passerelle.queue.sqlite import SQLiteJournal

PORTS = (Lifecycle, IntakeJournal, DispatchJournal, BrowserJournal, AdminJournal, ReferenceStore, RetentionJournal)


def methods(protocol: type) -> dict[str, object]:
    return {
        name: member
        for klass in protocol.__mro__
        if klass not in (object,) and klass.__module__ == "passerelle.queue.ports"
        for name, member in vars(klass).items()
        if not name.startswith("_") and callable(member)
    }


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.__name__)
def test_every_port_has_at_most_eight_methods(port: type) -> None:
    assert 1 <= len(methods(port)) <= 8, sorted(methods(port))


def test_journal_is_every_port() -> None:
    assert set(methods(Journal)) == set().union(*(methods(p) for p in PORTS))


@pytest.mark.parametrize("backend", [SQLiteJournal, PostgresJournal, MemoryJournal], ids=lambda b: b.__name__)
def test_every_backend_implements_every_port(backend: type) -> None:
    for name, wanted in methods(Journal).items():
        got = getattr(backend, name, None)
        assert got is not None, f"{backend.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name
        want_params = list(inspect.signature(wanted).parameters)
        assert list(inspect.signature(got).parameters) == want_params, name
