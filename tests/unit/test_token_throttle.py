"""The failed-token throttle (ADR 0031, B-HTTP-9): at most ``failures`` failures per address in any
window, the wait until the oldest of them leaves it, a reset at a successful login, bounded memory; a
clock under the test's hand."""

from __future__ import annotations

import pytest

from passerelle.config.settings import LoginThrottleSettings
from passerelle.connector.listeners.http.throttle import TokenThrottle


class Clock:
    """Seconds, moved by the test (``clock.now += ...``)."""

    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_runs_until_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = TokenThrottle(3, 60.0, clock=clock)
    for step in (0.0, 10.0, 10.0):
        clock.now += step
        assert throttle.retry_after("192.0.2.1") is None
        throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 40  # the first failure was 20 s ago
    assert throttle.retry_after("192.0.2.2") is None
    clock.now += 39.5
    assert throttle.retry_after("192.0.2.1") == 1
    clock.now += 0.5
    assert throttle.retry_after("192.0.2.1") is None
    # one more failure: the two recent ones are still in the window, the wait is until the second leaves
    throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 10


def test_old_failures_do_not_count() -> None:
    clock = Clock()
    throttle = TokenThrottle(2, 60.0, clock=clock)
    throttle.failed("a")
    clock.now += 61
    throttle.failed("a")
    assert throttle.retry_after("a") is None


def test_a_success_forgets_the_address() -> None:
    throttle = TokenThrottle(2, 60.0, clock=Clock())
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is not None
    throttle.succeeded("a")
    assert throttle.retry_after("a") is None
    assert len(throttle) == 0


def test_memory_is_bounded_the_address_failing_the_longest_ago_is_forgotten() -> None:
    clock = Clock()
    throttle = TokenThrottle(1, 60.0, max_addresses=100, clock=clock)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after("10.0.0.0") is None  # forgotten
    assert throttle.retry_after("10.0.3.231") == 60  # the last one


def test_settings_build_it_or_turn_it_off() -> None:
    built = TokenThrottle.from_settings(LoginThrottleSettings(), Clock())
    assert built is not None
    assert (built.failures, built.window_s, built.max_addresses) == (5, 300.0, 10_000)
    assert TokenThrottle.from_settings(LoginThrottleSettings(enabled=False), Clock()) is None
    with pytest.raises(ValueError, match="failures"):
        TokenThrottle(0, 60.0)
