"""Video uploads before and while they decode: the header check, a pool of their own.

A small file can hold a 590 s 4K video. Its header (frame count, width, height) says what
reading it could cost, so an upload whose header promises more than
``max_video_decode_pixels`` of decoding (frames x width x height, as if read in full) is
refused before a frame is decoded. The rest decode in a pool of ``video_workers`` threads,
apart from the image pool, so an image request never waits behind a video; each decode
stops between frames once its request's deadline passes or its client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request

from captioner import ActivityClassifier, MediaError
from captioner.video import DecodeCancelled, VideoLimits, local_video, probe_video
from service.batch_protocol import ClientGone, DeadlineExceeded
from service.metrics import Metrics
from service.settings import Settings

_WATCH_S = 0.2  # how often a decoding video's client is checked


def video_limits(model: ActivityClassifier, settings: Settings) -> VideoLimits:
    """The model's video limits with this server's decode-work cap."""
    cap = min(model.limits.max_decode_pixels, settings.max_video_decode_pixels)
    return dataclasses.replace(model.limits, max_decode_pixels=cap)


def stage_video(data: bytes, limits: VideoLimits, files: contextlib.ExitStack) -> Path | MediaError:
    """``data`` in a private temporary file (removed when ``files`` closes) whose header passed
    ``limits``, or the MediaError that refused it; no frame is decoded here."""
    try:
        path = files.enter_context(local_video(data, limits))
        info = probe_video(path, limits)
    except MediaError as exc:
        return exc
    work = info.frame_count * info.width * info.height
    if work > limits.max_decode_pixels:
        return MediaError(
            f"the uploaded video's header says {info.frame_count} frames of "
            f"{info.width}x{info.height} ({info.duration_s:.0f} s): up to {work:.3g} pixels to "
            f"decode, above this server's {limits.max_decode_pixels:.3g}; cut it, downscale it "
            "or lower its frame rate first"
        )
    return path


def _close_staged(job: asyncio.Future) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result()[0].close()


class VideoDecoding:
    """The video pool, and the header checks that run before it (thread-safe)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(settings.video_workers, "captioner-video")

    async def stage(
        self, model: ActivityClassifier, datas: list[bytes], files: contextlib.ExitStack
    ) -> list[Path | MediaError]:
        """:func:`stage_video` for each upload, its files then owned by ``files``. Header reads
        are short, so they run beside the video pool (in asyncio's own threads), not behind
        its decodes."""
        limits = video_limits(model, self.settings)

        def work() -> tuple[contextlib.ExitStack, list[Path | MediaError]]:
            own = contextlib.ExitStack()
            try:
                return own, [stage_video(d, limits, own) for d in datas]
            except BaseException:
                own.close()
                raise

        job = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            own, staged = await asyncio.shield(job)
        except asyncio.CancelledError:
            # The thread cannot be stopped: its files go once it has written them.
            job.add_done_callback(_close_staged)
            raise
        files.enter_context(own)
        refused = sum(isinstance(item, MediaError) for item in staged)
        if refused:
            self.metrics.rejections.labels("video_header").inc(refused)
        return staged

    async def decode(
        self, fn: Callable[[Callable[[], bool]], Any], request: Request, seconds_left: float
    ) -> tuple[Any, float]:
        """``fn(should_stop)`` in the video pool -> (its result, milliseconds).

        ``should_stop`` turns true once ``seconds_left`` have passed (DeadlineExceeded) or the
        client has left (ClientGone): a long video must not decode for nobody.
        """
        gone = threading.Event()
        start = time.perf_counter()
        deadline = start + seconds_left

        def should_stop() -> bool:
            return gone.is_set() or time.perf_counter() > deadline

        async def watch() -> None:
            while not gone.is_set():
                if await request.is_disconnected():
                    gone.set()
                    return
                await asyncio.sleep(_WATCH_S)

        watcher = asyncio.create_task(watch())
        try:
            value = await asyncio.get_running_loop().run_in_executor(self.pool, fn, should_stop)
        except DecodeCancelled:
            if gone.is_set():
                self.metrics.rejections.labels("client_gone").inc()
                raise ClientGone("the client left while its video decoded") from None
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the deadline passed while the video decoded") from None
        finally:
            watcher.cancel()
        return value, (time.perf_counter() - start) * 1000

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
