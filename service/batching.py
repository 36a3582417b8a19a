"""Dynamic batching: gather concurrent requests into batches for one model thread.

The batcher knows no model and no web framework. It takes a function
``list[item] -> list[result]`` and runs it on one worker thread, one batch at a time (the
model owns the device), while the event loop keeps serving I/O. The worker is the batcher's
own, or an ``executor`` passed in: several batchers given the same single-thread executor
hand it their batches in turn, so two models on one device never compute at once.

A batch is dispatched as soon as it is full (``max_batch_size`` items, or ``max_batch_cost``
total cost when ``cost`` is given), or ``max_wait_ms`` after its first item arrived. A
``coming`` hook (how many requests are uploading or decoding, not queued yet) refines that:
while it announces some, a batch waits up to ``3 * max_wait_ms`` for them (they are known to be
on their way); when it announces none and the batch before held a single item, a batch leaves
at once (a lone client's requests never wait for company that is not coming). Under load (the
batch before held more) a batch still waits its ``max_wait_ms``, since the clients whose
answers just left are about to send again. Items are taken in arrival order; an item whose own
cost exceeds ``max_batch_cost`` runs alone.

Deadlines: ``timeout_s`` counts from ``submit()``. An item whose deadline passes while it is
queued is never computed. If the deadline passes while its batch is computing, the caller
gets :class:`DeadlineExceeded` at the deadline (a prompt 504); the batch still runs to the
end and that item's result is discarded.

Accounting: every ``submit()`` call ends as exactly one of completed, failed (``fn`` raised
or returned the wrong number of results) or rejected (by reason), so
``submitted == completed + failed + sum(rejected) + depth + in_flight`` at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any, Generic, TypeVar

# The errors and hooks live beside this module; they are imported from here too.
from service.batch_protocol import (
    REJECT_REASONS,
    BatcherError,
    BatchObserver,
    ClientGone,
    DeadlineExceeded,
    NullObserver,
    QueueFull,
    ShuttingDown,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_RECENT_BATCHES = 16  # compute times kept for the Retry-After estimate
_MIN_RETRY_AFTER_S = 1.0
_DISCONNECT_CHECK_TIMEOUT_S = 1.0  # a hung is_disconnected() must not stall every request
_ANNOUNCED_GRACE = 2.0  # max_wait_ms more a batch may wait while the coming hook announces some


@dataclass(eq=False, slots=True)
class _Pending:
    """One submitted item and the future its caller awaits (touched on the loop thread only)."""

    item: Any
    cost: int
    future: asyncio.Future[Any]
    enqueued_at: float
    deadline: float | None
    is_disconnected: Callable[[], Awaitable[bool]] | None


class DynamicBatcher(Generic[T, R]):
    """Queue items from many coroutines and run ``fn`` on batches of them on one thread.

    Args:
        fn: ``list[item] -> list[result]``, one result per item in the same order. Runs on
            the worker thread, never on the event loop.
        max_batch_size: most items in one batch.
        max_wait_ms: longest a batch waits to fill, counted from its first item's arrival.
        max_queue: most items waiting; a submit beyond it raises :class:`QueueFull`.
        cost: an item's cost (for example a video's frame count); 1 per item when omitted.
        max_batch_cost: most total cost in one batch; an item costing more runs alone.
        name: used in thread names, log lines and error messages.
        observer: metrics hooks, see :class:`BatchObserver`.
        executor: a shared model worker (a single-thread executor) to run ``fn`` on; the
            caller owns it and shuts it down. Omitted: the batcher starts its own thread.
        coming: how many items are on their way (for example requests still uploading or
            decoding): a batch waits longer for them, and leaves at once after a batch of one
            when there are none. Call :meth:`wake` when it drops without a submit. Omitted:
            always wait ``max_wait_ms``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        cost: Callable[[T], int] | None = None,
        max_batch_cost: int | None = None,
        name: str = "batcher",
        observer: BatchObserver | None = None,
        executor: Executor | None = None,
        coming: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if max_batch_cost is not None and max_batch_cost < 1:
            raise ValueError(f"max_batch_cost must be >= 1 or None, got {max_batch_cost}")
        self._fn = fn
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._cost = cost
        self._max_batch_cost = max_batch_cost
        self._name = name
        self._observer: BatchObserver = observer if observer is not None else NullObserver()
        self._coming = coming
        self._last_batch_size = 0

        self._queue: deque[_Pending] = deque()
        self._current: list[_Pending] = []  # taken off the queue, not yet delivered
        self._recent_compute_s: deque[float] = deque(maxlen=_RECENT_BATCHES)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._shared_executor = executor
        self._executor: Executor | None = None
        self._closing = False

        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._batches = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)

    # -- public face --------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not counting the batch being computed)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``: the batcher accepts new items."""
        return self._task is not None and not self._task.done() and not self._closing

    def stats(self) -> dict[str, Any]:
        """Counters since start: submitted, completed, failed, rejected by reason, batches."""
        return {
            "submitted": self._submitted,
            "completed": self._completed,
            "failed": self._failed,
            "rejected": dict(self._rejected),
            "batches": self._batches,
            "depth": self.depth,
            "in_flight": sum(not p.future.done() for p in self._current),
        }

    def retry_after_s(self) -> float:
        """Seconds until the queue likely has room: recent batch time x batches ahead."""
        if not self._recent_compute_s:
            return _MIN_RETRY_AFTER_S
        per_batch = sum(self._recent_compute_s) / len(self._recent_compute_s)
        ahead = math.ceil(len(self._queue) / self._max_batch_size)
        if self._max_batch_cost is not None:
            queued_cost = sum(p.cost for p in self._queue)
            ahead = max(ahead, math.ceil(queued_cost / self._max_batch_cost))
        if self._current:
            ahead += 1
        return max(_MIN_RETRY_AFTER_S, per_batch * ahead)

    def wake(self) -> None:
        """Re-check the queue now (``coming`` may have dropped); call on the loop thread."""
        self._wakeup.set()

    async def start(self) -> None:
        """Start the dispatch loop and the worker thread that runs ``fn`` (unless shared)."""
        if self._task is not None:
            raise RuntimeError(
                f"{self._name}: start() was already called; create a new DynamicBatcher instead"
            )
        self._loop = asyncio.get_running_loop()
        self._executor = self._shared_executor or ThreadPoolExecutor(1, self._name)
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-dispatch")
        self._task.add_done_callback(self._on_loop_done)

    async def submit(
        self,
        item: T,
        *,
        timeout_s: float | None = None,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> R:
        """Queue ``item`` and return its result once its batch has run.

        Raises:
            QueueFull: the queue is at capacity (raised at once).
            DeadlineExceeded: ``timeout_s`` passed before the result was ready.
            ClientGone: ``is_disconnected()`` said True before the item was computed.
            ShuttingDown: ``stop()`` has begun, or it gave up on this item.
            BatcherError: ``fn`` returned the wrong number of results for the batch.
            Exception: whatever ``fn`` raised for this item's batch.
        """
        if self._task is None or self._loop is None:
            raise RuntimeError(f"{self._name}: call `await batcher.start()` before submit()")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds or None, got {timeout_s}")
        cost = self._item_cost(item)
        self._submitted += 1
        if self._closing:
            self._reject("shutting_down")
            raise ShuttingDown(f"{self._name} is shutting down and takes no new items")
        if len(self._queue) >= self._max_queue:
            self._reject("queue_full")
            retry = self.retry_after_s()
            raise QueueFull(
                f"{self._name} queue is full ({self._max_queue} items); retry in {retry:.1f} s",
                retry,
            )
        now = monotonic()
        pending = _Pending(
            item=item,
            cost=cost,
            future=self._loop.create_future(),
            enqueued_at=now,
            deadline=None if timeout_s is None else now + timeout_s,
            is_disconnected=is_disconnected,
        )
        self._queue.append(pending)
        self._wakeup.set()
        self._notify(self._observer.on_enqueue, len(self._queue))
        try:
            # asyncio.wait neither cancels the future on timeout nor when this task is
            # cancelled, so _abandon decides what happens to the item.
            done, _ = await asyncio.wait((pending.future,), timeout=timeout_s)
        except asyncio.CancelledError:
            self._abandon(pending, "client_gone")
            raise
        if not done:
            self._abandon(pending, "deadline")
            raise DeadlineExceeded(f"{self._name}: no result within the {timeout_s} s deadline")
        return pending.future.result()

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop gracefully: refuse new items, finish queued ones, then end the worker thread.

        Items still unfinished after ``drain_timeout_s`` get :class:`ShuttingDown`; a batch
        still computing then is left to finish on its thread, and its results are dropped.
        """
        self._closing = True
        if self._task is None or self._executor is None:
            return
        self._wakeup.set()
        done, _ = await asyncio.wait((self._task,), timeout=drain_timeout_s)
        if not done:
            log.warning("%s: not drained after %.1f s; giving up", self._name, drain_timeout_s)
            self._fail_all(ShuttingDown(f"{self._name} stopped before this item finished"))
            self._task.cancel()
            await asyncio.wait((self._task,))
        if self._shared_executor is None:  # a shared worker is its owner's to shut down
            # After a drain the worker is idle, so joining it is immediate.
            self._executor.shutdown(wait=bool(done), cancel_futures=True)

    # -- submit helpers -----------------------------------------------------------------------

    def _item_cost(self, item: T) -> int:
        if self._cost is None:
            return 1
        raw = self._cost(item)
        try:
            cost = operator.index(raw)
        except TypeError:
            cost = -1
        if cost < 0:
            raise ValueError(f"{self._name}: cost(item) must return an int >= 0, got {raw!r}")
        return cost

    def _abandon(self, pending: _Pending, reason: str) -> None:
        """The caller stopped waiting: drop its item unless it already has an outcome."""
        if pending.future.done():
            if not pending.future.cancelled():
                pending.future.exception()  # outcome already counted; mark it retrieved
            return
        pending.future.cancel()
        try:
            self._queue.remove(pending)
            self._wakeup.set()  # the batch's first item may have changed
        except ValueError:
            pass  # already taken for a batch; the dispatcher skips done futures
        self._reject(reason)

    # -- outcomes -----------------------------------------------------------------------------

    def _reject(self, reason: str) -> None:
        self._rejected[reason] += 1
        self._notify(self._observer.on_reject, reason)

    def _fail(self, pending: _Pending, exc: BaseException, reason: str | None) -> None:
        """Fail one item: counted as a rejection for ``reason``, as failed when None."""
        if pending.future.done():
            return
        pending.future.set_exception(exc)
        if reason is None:
            self._failed += 1
        else:
            self._reject(reason)

    def _fail_all(self, exc: BatcherError, reason: str | None = "shutting_down") -> None:
        leftovers = [*self._current, *self._queue]
        self._queue.clear()
        self._current = []
        for pending in leftovers:
            self._fail(pending, exc, reason)

    def _notify(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:  # metrics must never break serving
            log.exception("%s: observer hook %s failed", self._name, hook.__name__)

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: dispatch loop crashed", self._name, exc_info=exc)
            self._closing = True
            self._fail_all(BatcherError(f"{self._name}: dispatch loop crashed: {exc!r}"), None)

    # -- dispatch loop (event loop thread) ----------------------------------------------------

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            self._current = batch
            batch = await self._drop_gone(batch)
            self._current = batch
            if batch:
                await self._compute(batch)
            self._current = []

    async def _next_batch(self) -> list[_Pending] | None:
        """Wait until a batch is due, then take it off the queue; None once stopped and empty."""
        while True:
            size, full = self._plan()
            if size == 0:
                if self._closing:
                    return None
                await self._wait_for_wakeup(None)
                continue
            now = monotonic()
            announced = self._announced()
            due = self._queue[0].enqueued_at + self._max_wait_s
            if announced:  # requests on their way: worth a little more of a wait
                due += self._max_wait_s * _ANNOUNCED_GRACE
            alone = announced == 0 and self._last_batch_size <= 1  # light traffic, none coming
            if full or self._closing or now >= due or alone:
                self._last_batch_size = size
                return [self._queue.popleft() for _ in range(size)]
            await self._wait_for_wakeup(due - now)

    def _announced(self) -> int | None:
        """Items the ``coming`` hook says are on their way; None without one (or if it fails)."""
        if self._coming is None:
            return None
        try:
            return max(0, int(self._coming()))
        except Exception:  # a broken hook must not stall batches: wait as without one
            log.warning("%s: coming() failed; waiting max_wait_ms", self._name, exc_info=True)
            return None

    def _plan(self) -> tuple[int, bool]:
        """How many items from the queue's head the next batch takes, and whether it is full."""
        max_cost = self._max_batch_cost
        size = total = 0
        for pending in self._queue:
            if size == self._max_batch_size:
                return size, True
            if size and max_cost is not None and total + pending.cost > max_cost:
                return size, True  # FIFO: never skip ahead to a smaller item
            size += 1
            total += pending.cost
        full = size >= self._max_batch_size or (max_cost is not None and total >= max_cost)
        return size, full

    async def _wait_for_wakeup(self, timeout_s: float | None) -> None:
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _drop_gone(self, batch: list[_Pending]) -> list[_Pending]:
        """Drop items whose client left or whose deadline passed, so ``fn`` never sees them."""
        checked = [p for p in batch if p.is_disconnected is not None and not p.future.done()]
        if checked:
            gone = await asyncio.gather(*(self._client_gone(p) for p in checked))
            for pending, is_gone in zip(checked, gone, strict=True):
                if is_gone:
                    exc = ClientGone(f"{self._name}: client disconnected; item dropped")
                    self._fail(pending, exc, "client_gone")
        now = monotonic()
        for pending in batch:
            if pending.deadline is not None and now >= pending.deadline:
                exc = DeadlineExceeded(f"{self._name}: deadline passed while queued")
                self._fail(pending, exc, "deadline")
        return [p for p in batch if not p.future.done()]

    async def _client_gone(self, pending: _Pending) -> bool:
        assert pending.is_disconnected is not None
        try:
            async with asyncio.timeout(_DISCONNECT_CHECK_TIMEOUT_S):
                return bool(await pending.is_disconnected())
        except Exception:  # a broken check must not fail the batch: assume the client is there
            log.warning("%s: is_disconnected() failed; keeping the item", self._name, exc_info=True)
            return False

    async def _compute(self, batch: list[_Pending]) -> None:
        assert self._loop is not None
        assert self._executor is not None
        now = monotonic()
        waits = [now - p.enqueued_at for p in batch]
        items = [p.item for p in batch]
        # Returns after the worker scheduled _deliver (call_soon_threadsafe runs in order), so
        # the next batch starts only once this one's futures are settled.
        await self._loop.run_in_executor(self._executor, self._work, batch, items, waits)

    # -- worker thread ------------------------------------------------------------------------

    def _work(self, batch: list[_Pending], items: list[T], waits: list[float]) -> None:
        """Run ``fn`` on the worker thread and hand the outcome back to the loop thread."""
        assert self._loop is not None
        start = perf_counter()
        results: Sequence[R] | None = None
        error: Exception | None = None
        try:
            results = self._fn(items)
            self._check_results(results, len(items))
        except Exception as exc:
            results, error = None, exc
        compute_s = perf_counter() - start
        # RuntimeError: the event loop is closed, nobody is waiting for these results any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, batch, results, error, waits, compute_s)

    def _check_results(self, results: Any, expected: int) -> None:
        try:
            count = len(results)
        except TypeError:
            raise BatcherError(
                f"{self._name}: fn returned {type(results).__name__}; it must return a list "
                "with one result per item"
            ) from None
        if count != expected:
            raise BatcherError(
                f"{self._name}: fn returned {count} results for a batch of {expected} items; "
                "it must return exactly one result per item, in order"
            )

    # -- back on the loop thread --------------------------------------------------------------

    def _deliver(
        self,
        batch: list[_Pending],
        results: Sequence[R] | None,
        error: Exception | None,
        waits: list[float],
        compute_s: float,
    ) -> None:
        self._batches += 1
        self._recent_compute_s.append(compute_s)
        if error is not None:
            log.warning("%s: batch of %d failed: %r", self._name, len(batch), error)
            for pending in batch:
                self._fail(pending, error, None)
        else:
            assert results is not None
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():  # skip callers that left or timed out meanwhile
                    pending.future.set_result(result)
                    self._completed += 1
        cost = sum(p.cost for p in batch)
        self._notify(self._observer.on_batch, len(batch), cost, waits, compute_s, error is None)
