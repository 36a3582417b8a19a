"""What a batcher's callers see: the errors it hands back and its metrics hooks."""

from __future__ import annotations

from typing import Protocol

REJECT_REASONS = ("queue_full", "deadline", "client_gone", "shutting_down")


class BatcherError(Exception):
    """Base class of the errors the batcher hands back to a caller."""


class QueueFull(BatcherError):
    """The queue is at capacity (HTTP 429); ``retry_after_s`` estimates when it has room."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(BatcherError):
    """The request's deadline passed before its result was ready (HTTP 504)."""


class ShuttingDown(BatcherError):
    """The batcher is stopping: it takes no new items and gave up on this one (HTTP 503)."""


class ClientGone(BatcherError):
    """The client disconnected before its item was computed, so the item was dropped."""


class BatchObserver(Protocol):
    """Metrics hooks. All are called on the event loop thread; errors in them are logged."""

    def on_enqueue(self, depth: int) -> None:
        """An item entered the queue; ``depth`` includes it."""

    def on_reject(self, reason: str) -> None:
        """An item was refused or dropped; ``reason`` is one of :data:`REJECT_REASONS`."""

    def on_batch(
        self, size: int, cost: int, queue_waits_s: list[float], compute_s: float, ok: bool
    ) -> None:
        """A batch finished; ``ok`` is False when ``fn`` raised or returned the wrong count."""


class NullObserver:
    """An observer that records nothing (the default)."""

    def on_enqueue(self, depth: int) -> None:
        """Ignore the event."""

    def on_reject(self, reason: str) -> None:
        """Ignore the event."""

    def on_batch(
        self, size: int, cost: int, queue_waits_s: list[float], compute_s: float, ok: bool
    ) -> None:
        """Ignore the event."""
