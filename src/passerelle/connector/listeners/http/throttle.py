"""Failed token attempts per client address: a brute-force throttle for the console's login and the API's
bearer tokens (ADR 0031, docs/security.md).

A token attempt that fails (a token nobody holds, pasted on the login page or sent as a bearer token on
the API: the same tokens serve both) is remembered with its time, per client address. Once an address
has ``failures`` failed attempts within ``window_s``, every further token attempt from it is refused
(429, ``Retry-After``) without its token being looked at, until the oldest of those failures is
``window_s`` old: an address gets at most ``failures`` guesses per window, whatever the rate. A
successful console login resets its address. Memory is bounded: at most ``max_addresses`` addresses
are remembered; past it the one whose last failure is the oldest is forgotten. ``clock`` gives seconds
(the gateway's clock, so that a test can move time).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from passerelle.config.settings import LoginThrottleSettings


class TokenThrottle:
    """The failed token attempts of the last ``window_s`` seconds, per client address (see the module)."""

    def __init__(
        self,
        failures: int = 5,
        window_s: float = 300.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0 or max_addresses < 1:
            raise ValueError("a throttle needs failures >= 1, window_s > 0 and max_addresses >= 1")
        self.failures, self.window_s, self.max_addresses, self.clock = failures, window_s, max_addresses, clock
        # address -> the times of its last ``failures`` failures, the address failing last at the end
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: LoginThrottleSettings, clock: Callable[[], float]) -> TokenThrottle | None:
        """The throttle ``http.login_throttle`` asks for, ``None`` when it is disabled."""
        if not settings.enabled:
            return None
        return cls(settings.failures, settings.window_s, max_addresses=settings.max_addresses, clock=clock)

    def __len__(self) -> int:
        return len(self._failed)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds ``address`` must still wait before its next token attempt, ``None`` when it may
        try now."""
        times = self._failed.get(address)
        if times is None or len(times) < self.failures:
            return None
        wait = times[0] + self.window_s - self.clock()
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, address: str) -> None:
        """One failed token attempt from ``address``."""
        now = self.clock()
        times = self._failed.pop(address, None) or deque(maxlen=self.failures)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        times.append(now)
        self._failed[address] = times
        while len(self._failed) > self.max_addresses:
            self._failed.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """A successful login from ``address``: its failures are forgotten."""
        self._failed.pop(address, None)
