"""What slow and hostile clients are held to: an upload deadline and minimum rate, and a
throttle on wrong API keys per client address.

Both are plain arithmetic over a clock, so they are tested without a server;
``service.middleware.UploadGate`` applies them to every request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("captioner.service")

KiB = 1024


@dataclass(frozen=True)
class UploadClock:
    """When a request body must have arrived: by ``started + deadline_s`` in all, and, after
    ``grace_s``, at no less than ``min_rate`` bytes per second on average (0: no rate check).

    The average runs from the start of the upload, so a client may pause as long as it has
    sent enough before; one that trickles a byte every few seconds is cut right after the
    grace period, long before the deadline.
    """

    started: float
    deadline_s: float
    min_rate: float
    grace_s: float

    def time_left(self, seen: int, now: float) -> float:
        """Seconds the next chunk may take, given ``seen`` bytes so far (<= 0: cut it now)."""
        return self._end(seen) - now

    def _end(self, seen: int) -> float:
        end = self.started + self.deadline_s
        if self.min_rate > 0:
            end = min(end, self.started + self.grace_s + seen / self.min_rate)
        return end

    def why(self, seen: int) -> str:
        """The 408 sentence: which of the two limits the body missed."""
        if self.min_rate > 0 and self._end(seen) < self.started + self.deadline_s:
            return (
                f"the request body arrived too slowly ({seen} bytes, below "
                f"{self.min_rate / KiB:g} KiB/s after the first {self.grace_s:g} s); "
                "send it again on a faster connection"
            )
        return (
            f"the request body did not arrive within {self.deadline_s:g} s ({seen} bytes came); "
            "send less, or send it again on a faster connection"
        )


class AuthThrottle:
    """Wrong (or missing) API keys per client address, thread-unsafe (the event loop's own).

    After ``limit`` failures within ``window_s`` an address is blocked for ``window_s``:
    :meth:`retry_after_s` says how long, whatever key it sends then, so guessing on from
    there gains nothing. The block is logged once, when it starts. At most ``max_addresses``
    addresses are remembered (the oldest are forgotten first), so a flood of addresses cannot
    grow the table without bound. A right key is never looked up here, so it is not slowed.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}  # address -> when its block ends

    def retry_after_s(self, address: str) -> float:
        """Seconds until ``address`` may try a key again; 0 when it may now."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    def failed(self, address: str) -> bool:
        """Count one failure of ``address``; True when this one starts a block."""
        now = self.clock()
        times = self._failures.pop(address, None) or deque(maxlen=self.limit)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        times.append(now)
        if len(times) >= self.limit:
            self._blocked[address] = now + self.window_s
            log.warning(
                "client %s sent %d wrong or missing API keys within %g s: its requests get "
                "429 for the next %g s",
                address,
                len(times),
                self.window_s,
                self.window_s,
            )
            self._forget_blocks(now)
            return True
        self._failures[address] = times  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return False

    def _forget_blocks(self, now: float) -> None:
        if len(self._blocked) > self.max_addresses:
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            while len(self._blocked) > self.max_addresses:
                del self._blocked[next(iter(self._blocked))]
