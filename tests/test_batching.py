"""The dynamic batcher, driven by toy functions: no model, no web stack.

Each test runs its own event loop with ``asyncio.run`` and a 10 s hang guard. Functions that
must stay "mid-batch" block on a threading.Event (with a timeout) instead of sleeping, so the
tests do not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

import pytest

from service import batching
from service.batching import (
    BatcherError,
    ClientGone,
    DeadlineExceeded,
    DynamicBatcher,
    QueueFull,
    ShuttingDown,
)

GUARD_S = 10.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test coroutine with a hang guard."""
    return asyncio.run(asyncio.wait_for(coro, GUARD_S))


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll the loop until ``predicate()`` holds (a test-side helper, not the batcher's)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.002)


class Doubler:
    """``fn`` that doubles numbers, records every batch and can hold batches until released."""

    def __init__(self, hold: bool = False, fail_on: Callable[[list[Any]], bool] | None = None):
        self.batches: list[list[Any]] = []
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_on = fail_on
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, xs: list[Any]) -> list[Any]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.batches.append(list(xs))
            self.threads.add(threading.get_ident())
            self.started.set()
            self.release.wait(5)
            if self.fail_on is not None and self.fail_on(xs):
                raise ValueError(f"cannot double {xs}")
            return [x * 2 for x in xs]
        finally:
            with self._lock:
                self.active -= 1

    @property
    def seen(self) -> list[Any]:
        return [x for batch in self.batches for x in batch]


class Recorder:
    """A BatchObserver that keeps every call."""

    def __init__(self) -> None:
        self.enqueued: list[int] = []
        self.rejected: list[str] = []
        self.batches: list[tuple[int, int, list[float], float, bool]] = []

    def on_enqueue(self, depth: int) -> None:
        self.enqueued.append(depth)

    def on_reject(self, reason: str) -> None:
        self.rejected.append(reason)

    def on_batch(
        self, size: int, cost: int, queue_waits_s: list[float], compute_s: float, ok: bool
    ) -> None:
        self.batches.append((size, cost, queue_waits_s, compute_s, ok))


def test_concurrent_submits_are_batched_and_each_caller_gets_its_own_result() -> None:
    fn = Doubler(hold=True)

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_ms=50)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(20)]
        await until(lambda: fn.started.is_set() and b.depth == 12)
        fn.release.set()
        assert await asyncio.gather(*tasks) == [2 * i for i in range(20)]
        await b.stop()

    run(main())
    assert [len(batch) for batch in fn.batches] == [8, 8, 4]
    assert fn.seen == list(range(20))  # arrival order kept across batches
    assert fn.max_active == 1  # one batch at a time


def test_partial_batch_runs_max_wait_after_its_first_item_even_while_items_keep_coming() -> None:
    fn = Doubler()

    async def main() -> int:
        b = DynamicBatcher(fn, max_batch_size=1000, max_wait_ms=100)
        await b.start()
        first = asyncio.create_task(b.submit(-1))
        sent = 0
        trickle = []
        # A new item every 20 ms: a window that restarted on each arrival would never close.
        while not first.done() and sent < 100:
            await asyncio.sleep(0.02)
            trickle.append(asyncio.create_task(b.submit(sent)))
            sent += 1
        assert await first == -2
        await asyncio.gather(*trickle)
        await b.stop()
        return sent

    sent = run(main())
    assert sent < 100
    assert fn.batches[0][0] == -1


def test_a_lone_client_never_waits_max_wait_when_nothing_else_is_coming() -> None:
    fn = Doubler()

    async def main() -> float:
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_ms=3000, coming=lambda: 0)
        await b.start()
        start = asyncio.get_running_loop().time()
        for i in range(3):  # one request at a time, as a single client sends them
            assert await b.submit(i) == 2 * i
        elapsed = asyncio.get_running_loop().time() - start
        await b.stop()
        return elapsed

    # Waiting for company would take 9 s (the hang guard is 10 s); without it, milliseconds.
    assert run(main()) < 2.0
    assert fn.batches == [[0], [1], [2]]


def test_a_batch_waits_for_requests_on_their_way_and_leaves_when_they_stop_coming() -> None:
    fn = Doubler()
    on_the_way = [1]

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_ms=3000, coming=lambda: on_the_way[0])
        await b.start()
        alone = asyncio.create_task(b.submit(3))
        await asyncio.sleep(0.1)
        assert not alone.done()  # another request is still uploading: wait for it
        on_the_way[0] = 0  # that upload failed: no submit follows, only a wake-up
        b.wake()
        assert await asyncio.wait_for(alone, 1.0) == 6
        on_the_way[0] = 1
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.1)
        assert not first.done()
        on_the_way[0] = 0  # the awaited request arrives: the batch takes it and leaves
        second = asyncio.create_task(b.submit(2))
        assert await asyncio.wait_for(asyncio.gather(first, second), 1.0) == [2, 4]
        await b.stop()

    run(main())
    assert fn.batches == [[3], [1, 2]]


def test_announced_requests_hold_a_batch_a_little_past_max_wait_but_not_forever() -> None:
    fn = Doubler()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_ms=100, coming=lambda: 1)
        await b.start()
        item = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.15)
        assert not item.done()  # past max_wait, but a request is uploading: it waits for it
        assert await asyncio.wait_for(item, 2.0) == 2  # the announced one never came: it goes
        await b.stop()

    run(main())


def test_under_load_a_batch_still_waits_to_fill_though_nothing_is_announced() -> None:
    fn = Doubler(hold=True)

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=8, max_wait_ms=300, coming=lambda: 0)
        await b.start()
        a = asyncio.create_task(b.submit("a"))
        await until(fn.started.is_set)
        rest = [asyncio.create_task(b.submit(x)) for x in ("b", "c")]
        await until(lambda: b.depth == 2)
        fn.release.set()
        await asyncio.gather(a, *rest)
        # The batch before held two: clients just answered are about to send again.
        d = asyncio.create_task(b.submit("d"))
        await asyncio.sleep(0.05)
        e = asyncio.create_task(b.submit("e"))
        assert await asyncio.gather(d, e) == ["dd", "ee"]
        await b.stop()

    run(main())
    assert fn.batches == [["a"], ["b", "c"], ["d", "e"]]


def test_batch_cost_limits_batches_and_an_oversized_item_runs_alone() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()
    videos = [[0] * 4, [1] * 4, [2] * 4, [3] * 12, [4] * 1]

    async def main() -> None:
        b = DynamicBatcher(
            fn, max_batch_size=8, max_wait_ms=5, cost=len, max_batch_cost=10, observer=obs
        )
        await b.start()
        tasks = [asyncio.create_task(b.submit(v)) for v in videos]
        await until(lambda: fn.started.is_set())
        fn.release.set()
        assert await asyncio.gather(*tasks) == [v * 2 for v in videos]
        await b.stop()

    run(main())
    assert [[len(v) for v in batch] for batch in fn.batches] == [[4, 4], [4], [12], [1]]
    assert [cost for _, cost, *_ in obs.batches] == [8, 4, 12, 1]


def test_fn_runs_on_one_worker_thread_while_the_event_loop_stays_responsive() -> None:
    fn = Doubler(hold=True)

    async def main() -> int:
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_ms=1)
        await b.start()
        task = asyncio.create_task(b.submit(1))
        ticks = 0
        while not fn.started.is_set():  # fn is running now only if the loop is free
            await asyncio.sleep(0.005)
            ticks += 1
        for _ in range(3):  # still ticking while fn blocks in its thread
            await asyncio.sleep(0.005)
            ticks += 1
        fn.release.set()
        assert await task == 2
        assert await b.submit(5) == 10
        await b.stop()
        return ticks

    assert run(main()) >= 3
    assert len(fn.threads) == 1
    assert threading.main_thread().ident not in fn.threads


class Shared:
    """Two toy models' functions that record how many batches run at the same moment."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.threads: set[int] = set()
        self.order: list[str] = []
        self._lock = threading.Lock()

    def fn(self, name: str) -> Callable[[list[int]], list[int]]:
        def run_batch(xs: list[int]) -> list[int]:
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.threads.add(threading.get_ident())
                self.order.append(name)
            threading.Event().wait(0.01)  # long enough for an overlap to show
            with self._lock:
                self.active -= 1
            return [x + 1 for x in xs]

        return run_batch


def test_batchers_sharing_one_worker_never_compute_at_once_and_leave_it_running() -> None:
    shared = Shared()
    worker = ThreadPoolExecutor(1, "model-worker")

    async def main() -> None:
        a = DynamicBatcher(shared.fn("a"), max_batch_size=2, max_wait_ms=0, executor=worker)
        b = DynamicBatcher(shared.fn("b"), max_batch_size=3, max_wait_ms=0, executor=worker)
        await a.start()
        await b.start()
        calls = [a.submit(i) for i in range(12)] + [b.submit(100 + i) for i in range(12)]
        results = await asyncio.gather(*calls)
        assert results == [i + 1 for i in range(12)] + [101 + i for i in range(12)]
        await a.stop()
        await b.stop()

    try:
        run(main())
        assert worker.submit(lambda: 7).result(timeout=5) == 7  # the owner's to shut down
    finally:
        worker.shutdown()
    assert shared.max_active == 1
    assert len(shared.threads) == 1
    assert {"a", "b"} == set(shared.order)
    # Both batchers' batches interleave on the one worker instead of one waiting for the other.
    assert shared.order.index("b") < len(shared.order) - shared.order[::-1].index("a") - 1


def test_own_workers_do_overlap_so_the_shared_test_can_fail() -> None:
    shared = Shared()

    async def main() -> None:
        a = DynamicBatcher(shared.fn("a"), max_batch_size=1, max_wait_ms=0)
        b = DynamicBatcher(shared.fn("b"), max_batch_size=1, max_wait_ms=0)
        await a.start()
        await b.start()
        await asyncio.gather(*[a.submit(i) for i in range(20)], *[b.submit(i) for i in range(20)])
        await a.stop()
        await b.stop()

    run(main())
    assert len(shared.threads) == 2
    assert shared.max_active == 2


def test_full_queue_rejects_at_once_with_retry_after() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0, max_queue=2, observer=obs)
        await b.start()
        in_flight = asyncio.create_task(b.submit(0))
        await until(fn.started.is_set)
        queued = [asyncio.create_task(b.submit(i)) for i in (1, 2)]
        await until(lambda: b.depth == 2)
        with pytest.raises(QueueFull) as info:
            await b.submit(3)
        assert info.value.retry_after_s >= 1.0
        fn.release.set()
        assert await asyncio.gather(in_flight, *queued) == [0, 2, 4]
        assert await b.submit(3) == 6  # room again
        await b.stop()

    run(main())
    assert fn.seen == [0, 1, 2, 3]  # the refused item never ran
    assert obs.rejected == ["queue_full"]


def test_retry_after_grows_with_recent_batch_time_and_batches_ahead(monkeypatch) -> None:
    # Every batch "takes" 5 s on a fake clock; the wall clock is untouched.
    fake = count(0.0, 5.0)
    monkeypatch.setattr(batching, "perf_counter", lambda: next(fake))
    fn = Doubler()

    async def main() -> float:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0, max_queue=2)
        await b.start()
        assert await b.submit(1) == 2  # one 5 s batch on record
        fn.release.clear()
        fn.started.clear()
        in_flight = asyncio.create_task(b.submit(2))
        await until(fn.started.is_set)
        queued = [asyncio.create_task(b.submit(i)) for i in (3, 4)]
        await until(lambda: b.depth == 2)
        with pytest.raises(QueueFull) as info:
            await b.submit(5)
        fn.release.set()
        await asyncio.gather(in_flight, *queued)
        await b.stop()
        return info.value.retry_after_s

    # 2 queued batches + 1 in flight, 5 s each.
    assert run(main()) == pytest.approx(15.0)


def test_deadline_passing_while_queued_skips_the_item() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0, observer=obs)
        await b.start()
        first = asyncio.create_task(b.submit(1))
        await until(fn.started.is_set)
        with pytest.raises(DeadlineExceeded):
            await b.submit(2, timeout_s=0.05)
        assert b.depth == 0  # its queue slot is free at once
        fn.release.set()
        assert await first == 2
        assert await b.submit(3, timeout_s=5) == 6
        await b.stop()
        assert b.stats()["rejected"]["deadline"] == 1

    run(main())
    assert fn.seen == [1, 3]
    assert obs.rejected == ["deadline"]


def test_deadline_passing_while_computing_raises_at_the_deadline_and_batcher_goes_on() -> None:
    fn = Doubler(hold=True)

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0)
        await b.start()
        with pytest.raises(DeadlineExceeded):
            await b.submit(1, timeout_s=0.05)
        assert fn.seen == [1]  # it was computing when the deadline passed
        fn.release.set()
        assert await b.submit(2) == 4
        await b.stop()
        stats = b.stats()
        assert (stats["completed"], stats["rejected"]["deadline"]) == (1, 1)

    run(main())


def test_disconnected_client_is_dropped_before_compute() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()

    async def gone() -> bool:
        return True

    async def here() -> bool:
        return False

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=4, max_wait_ms=0, observer=obs)
        await b.start()
        blocker = asyncio.create_task(b.submit(0))
        await until(fn.started.is_set)
        left = asyncio.create_task(b.submit(1, is_disconnected=gone))
        stayed = asyncio.create_task(b.submit(2, is_disconnected=here))
        plain = asyncio.create_task(b.submit(3))
        await until(lambda: b.depth == 3)
        fn.release.set()
        with pytest.raises(ClientGone):
            await left
        assert await asyncio.gather(blocker, stayed, plain) == [0, 4, 6]
        await b.stop()

    run(main())
    assert fn.batches == [[0], [2, 3]]
    assert obs.rejected == ["client_gone"]


def test_cancelled_submit_is_removed_before_compute() -> None:
    fn = Doubler(hold=True)

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=4, max_wait_ms=0)
        await b.start()
        blocker = asyncio.create_task(b.submit(0))
        await until(fn.started.is_set)
        doomed = asyncio.create_task(b.submit(1))
        kept = asyncio.create_task(b.submit(2))
        await until(lambda: b.depth == 2)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert b.depth == 1
        fn.release.set()
        assert await asyncio.gather(blocker, kept) == [0, 4]
        await b.stop()
        assert b.stats()["rejected"]["client_gone"] == 1

    run(main())
    assert 1 not in fn.seen


def test_fn_exception_fails_only_its_batch() -> None:
    fn = Doubler(fail_on=lambda xs: any(x < 0 for x in xs))
    obs = Recorder()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_ms=50, observer=obs)
        await b.start()
        outcomes = await asyncio.gather(b.submit(1), b.submit(-1), return_exceptions=True)
        assert all(isinstance(o, ValueError) for o in outcomes)
        assert await b.submit(3) == 6
        await b.stop()
        assert b.stats()["failed"] == 2

    run(main())
    assert [ok for *_, ok in obs.batches] == [False, True]


def test_wrong_number_of_results_fails_the_batch_with_a_clear_error() -> None:
    calls = []

    def short(xs: list[int]) -> list[int]:
        calls.append(xs)
        return [x * 2 for x in xs][: 1 if len(calls) == 1 else None]

    async def main() -> None:
        b = DynamicBatcher(short, max_batch_size=3, max_wait_ms=50)
        await b.start()
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(o, BatcherError) for o in outcomes)
        assert "1 results for a batch of 3" in str(outcomes[0])
        assert await b.submit(4) == 8
        await b.stop()

    run(main())


def test_stop_mid_batch_finishes_every_queued_item_then_refuses_new_ones() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_ms=0, observer=obs, name="stoptest")
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(7)]
        await until(lambda: fn.started.is_set() and b.depth == 5)
        stopping = asyncio.create_task(b.stop(drain_timeout_s=5))
        await until(lambda: not b.running)
        with pytest.raises(ShuttingDown):
            await b.submit(99)
        fn.release.set()
        await stopping
        assert await asyncio.gather(*tasks) == [2 * i for i in range(7)]

    run(main())
    assert sorted(fn.seen) == list(range(7))
    assert obs.rejected == ["shutting_down"]
    assert not any(t.name.startswith("stoptest") for t in threading.enumerate())


def test_stop_gives_up_after_drain_timeout_with_shutting_down() -> None:
    fn = Doubler(hold=True)

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0)
        await b.start()
        in_flight = asyncio.create_task(b.submit(1))
        await until(fn.started.is_set)
        queued = asyncio.create_task(b.submit(2))
        await b.stop(drain_timeout_s=0.05)
        outcomes = await asyncio.gather(in_flight, queued, return_exceptions=True)
        assert all(isinstance(o, ShuttingDown) for o in outcomes)
        assert b.stats()["rejected"]["shutting_down"] == 2
        fn.release.set()  # let the abandoned batch end

    run(main())
    assert fn.seen == [1]


def test_observer_sees_enqueues_batches_and_rejections() -> None:
    fn = Doubler(hold=True)
    obs = Recorder()

    async def main() -> None:
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_ms=0, max_queue=2, observer=obs)
        await b.start()
        first = asyncio.create_task(b.submit(1))
        await until(fn.started.is_set)
        queued = [asyncio.create_task(b.submit(i)) for i in (2, 3)]
        await until(lambda: b.depth == 2)
        with pytest.raises(QueueFull):
            await b.submit(4)
        fn.release.set()
        await asyncio.gather(first, *queued)
        await b.stop()
        with pytest.raises(ShuttingDown):
            await b.submit(5)

    run(main())
    assert obs.enqueued == [1, 1, 2]
    assert obs.rejected == ["queue_full", "shutting_down"]
    summary = [(size, cost, ok) for size, cost, _, _, ok in obs.batches]
    assert summary == [(1, 1, True), (2, 2, True)]
    assert all(len(waits) == size for size, _, waits, _, _ in obs.batches)
    assert all(w >= 0 for _, _, waits, compute, _ in obs.batches for w in [*waits, compute])


def test_a_failing_observer_does_not_break_serving() -> None:
    class Broken(Recorder):
        def on_batch(self, *args: Any) -> None:
            raise RuntimeError("metrics backend down")

    async def main() -> None:
        b = DynamicBatcher(Doubler(), max_wait_ms=0, observer=Broken())
        await b.start()
        assert await b.submit(21) == 42
        assert await b.submit(1) == 2
        await b.stop()

    run(main())


def test_stats_account_for_every_submit() -> None:
    fn = Doubler(fail_on=lambda xs: -1 in xs)

    async def main() -> dict[str, Any]:
        b = DynamicBatcher(fn, max_batch_size=1, max_wait_ms=0, max_queue=1)
        await b.start()
        await b.submit(1)
        with pytest.raises(ValueError, match="cannot double"):
            await b.submit(-1)
        await b.stop()
        with pytest.raises(ShuttingDown):
            await b.submit(2)
        return b.stats()

    stats = run(main())
    assert stats["submitted"] == 3
    assert (stats["completed"], stats["failed"], stats["batches"]) == (1, 1, 2)
    assert stats["rejected"] == {
        "queue_full": 0,
        "deadline": 0,
        "client_gone": 0,
        "shutting_down": 1,
    }


def test_bad_settings_and_misuse_fail_loudly() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(Doubler(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_batch_cost"):
        DynamicBatcher(Doubler(), max_batch_cost=0)

    async def main() -> None:
        b = DynamicBatcher(Doubler(), cost=lambda x: x)
        with pytest.raises(RuntimeError, match="start"):
            await b.submit(1)
        await b.start()
        with pytest.raises(ValueError, match="cost"):
            await b.submit(-3)
        with pytest.raises(ValueError, match="timeout_s"):
            await b.submit(1, timeout_s=0)
        await b.stop()

    run(main())
