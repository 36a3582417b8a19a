"""The model runtime: loading, warm-up, one model worker per device, batchers, readiness.

Both tasks' batchers hand their batches to one single-thread executor per device, so caption
and activity batches run one at a time on it and never fight over its cores. Images are
decoded in a CPU pool, charged against the decode budget (service/uploads.py); videos in a
pool of their own, after their headers have been checked, so an image never waits behind one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from starlette.requests import Request

import captioner
from captioner import ActivityClassifier, Captioner, MediaError
from captioner.inference import ClipInput
from captioner.video import restrict_ffmpeg_protocols
from service.batch_protocol import BatcherError, ClientGone, DeadlineExceeded
from service.batching import DynamicBatcher
from service.metrics import Metrics
from service.settings import MiB, Settings
from service.uploads import (
    BudgetFull,
    Charge,
    DecodeBudget,
    IdleTrim,
    ImageProbe,
    probe_image,
    timed_decode,
)
from service.videos import VideoDecoding, video_limits

log = logging.getLogger("captioner.service")

TASKS = ("caption", "activity")


class ModelLoadError(RuntimeError):
    """A model the settings ask for could not be loaded (the message is one line)."""


class RuntimeProblem(Exception):
    """Why the runtime cannot answer a request (service/errors.py gives each kind its status)."""


class NotReady(RuntimeProblem):
    """The models are still loading, or failed to load."""


class TaskUnavailable(RuntimeProblem):
    """This task's model failed to load; the server serves the others (allow_partial)."""


class TaskNotServed(RuntimeProblem):
    """This server was started without this task."""


class TooMuchToDecode(RuntimeProblem):
    """The uploads could never fit the decode budget, however long the client waits."""


class BatchFailed(RuntimeProblem):
    """The model raised on the batch this request rode in (only that batch's requests see it)."""


@dataclass
class LoadedModels:
    """The models that loaded, and why the others did not."""

    captioner: Captioner | None = None
    activity: ActivityClassifier | None = None
    failures: dict[str, str] = field(default_factory=dict)

    def get(self, task: str) -> Captioner | ActivityClassifier | None:
        return self.captioner if task == "caption" else self.activity


@dataclass
class Timed:
    """A batch result with when its batch started, how long it ran and how many rode in it."""

    value: Any
    started: float
    compute_s: float
    batch_size: int


@dataclass
class CaptionJob:
    image: torch.Tensor  # (3, S, S) uint8
    beam_size: int | None
    n_best: int
    attention: bool = False


@dataclass
class ActivityJob:
    clip: ClipInput  # decoded frames for the whole clip and any timeline windows
    top_k: int

    @property
    def frames(self) -> int:
        return self.clip.cost


# ------------------------------------------------------------------------ process and models


def configure_process(settings: Settings) -> None:
    """Thread counts and the FFmpeg protocol whitelist, before any model runs or video opens."""
    import cv2

    torch.set_num_threads(settings.torch_threads)
    cv2.setNumThreads(settings.cv2_threads)
    restrict_ffmpeg_protocols()
    log.info("threads: torch %d, OpenCV %d", settings.torch_threads, settings.cv2_threads)


def load_models(settings: Settings) -> LoadedModels:
    """Load and warm the enabled models -> :class:`LoadedModels`.

    Raises :class:`ModelLoadError` when one fails, unless ``allow_partial`` is set and
    another loaded: then the failure is logged and kept in ``failures``.
    """
    models = LoadedModels()
    wanted = [t for t in TASKS if getattr(settings, f"enable_{t}")]
    for task in wanted:
        try:
            setattr(models, "captioner" if task == "caption" else task, _load(settings, task))
        except Exception as exc:  # any failure: the message goes to the operator, in one line
            models.failures[task] = " ".join(f"{type(exc).__name__}: {exc}".split())
    if models.failures and (not settings.allow_partial or len(models.failures) == len(wanted)):
        reasons = "; ".join(f"{t} model: {why}" for t, why in models.failures.items())
        raise ModelLoadError(f"cannot load the {reasons}")
    for task, why in models.failures.items():
        log.warning("serving without the %s model (allow_partial): %s", task, why)
    if settings.warmup:
        warm_up(models)
    return models


def _load(settings: Settings, task: str) -> Captioner | ActivityClassifier:
    path = getattr(settings, f"{task}_bundle") or captioner.default_bundle_dir(task)
    model = captioner.load(path, device=settings.device)
    kind = Captioner if task == "caption" else ActivityClassifier
    if not isinstance(model, kind):
        raise ValueError(f"{path} is not a {task} bundle")
    if isinstance(model, Captioner):
        cap = min(model.limits.max_pixels, settings.max_image_pixels)
        model.limits = dataclasses.replace(model.limits, max_pixels=cap)
    else:
        model.limits = video_limits(model, settings)
    return model


def warm_up(models: LoadedModels) -> None:
    """One tiny batch per model, so the first request does not pay for lazy set-up."""
    if models.captioner is not None:
        size = models.captioner.preprocess.size
        blank = torch.zeros(3, size, size, dtype=torch.uint8)
        caption_batch(models.captioner, [CaptionJob(blank, None, 1)])
    if models.activity is not None:
        size = models.activity.size
        frames = torch.zeros(1, 3, size, size, dtype=torch.uint8)
        clip = ClipInput(frames, [0] * models.activity.num_frames)
        activity_batch(models.activity, [ActivityJob(clip, 1)])


def caption_batch(model: Captioner, jobs: list[CaptionJob]) -> list[Timed]:
    """One batcher batch: jobs with the same search options share one model call."""
    started = time.perf_counter()
    groups: dict[tuple[int | None, int, bool], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((job.beam_size, job.n_best, job.attention), []).append(i)
    out: list[Any] = [None] * len(jobs)
    for (beam, n_best, attention), idx in groups.items():
        results = model.caption_batch(
            [jobs[i].image for i in idx], beam_size=beam, n_best=n_best, return_attention=attention
        )
        for i, result in zip(idx, results, strict=True):
            out[i] = result
    spent = time.perf_counter() - started
    return [Timed(r, started, spent, len(jobs)) for r in out]


def activity_batch(model: ActivityClassifier, jobs: list[ActivityJob]) -> list[Timed]:
    started = time.perf_counter()
    results = model.classify_inputs([job.clip for job in jobs], [job.top_k for job in jobs])
    spent = time.perf_counter() - started
    return [Timed(r, started, spent, len(jobs)) for r in results]


# ---------------------------------------------------------------------------------- runtime


class Runtime:
    """The loaded models, their batchers, the model workers and the decoding pool of one app."""

    def __init__(
        self, settings: Settings, metrics: Metrics, models: LoadedModels | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models = models or LoadedModels()
        self._preloaded = models is not None
        self.batchers: dict[str, DynamicBatcher] = {}
        self.workers: dict[str, ThreadPoolExecutor] = {}  # device -> its one model thread
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, "captioner-decode")
        self.videos = VideoDecoding(settings, metrics)  # the video pool, apart from images
        self.budget = DecodeBudget(settings.decode_budget_mb * MiB, settings.decode_workers)
        self.ready = False
        self.error: str | None = None
        # Counted by UploadGate: bodies arriving, and requests admitted once their body is in.
        self.uploading = 0
        self.inflight = 0
        # Inference requests whose items are not queued yet (uploading, parsing, decoding):
        # what a batch that is not full may wait for; none on the way, it leaves at once.
        self.coming = 0
        self.idle = IdleTrim(settings.idle_trim_s, lambda: self.inflight + self.uploading > 0)
        self._loading: asyncio.Task | None = None
        self._trimming: asyncio.Task | None = None

    @property
    def captioner(self) -> Captioner | None:
        return self.models.captioner

    @property
    def activity(self) -> ActivityClassifier | None:
        return self.models.activity

    # -- life cycle -------------------------------------------------------------------------

    def start_loading(self) -> None:
        self._loading = asyncio.create_task(self._start())

    async def _start(self) -> None:
        try:
            if not self._preloaded:
                await asyncio.to_thread(configure_process, self.settings)
                self.models = await asyncio.to_thread(load_models, self.settings)
            await self._start_batchers()
            if self.settings.idle_trim_s > 0:
                self._trimming = asyncio.create_task(self.idle.run())
            self.ready = True
            self.metrics.ready.set(1)
            log.info("ready: %s", ", ".join(self.batchers))
        except Exception as exc:  # a bad bundle must leave /healthz up and say why on /readyz
            self.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.exception("loading the models failed")

    def expect(self, state: dict[str, Any]) -> None:
        """An inference request has begun (UploadGate); ``state`` is its scope's state."""
        state["coming"] = True
        self.coming += 1

    def arrived(self, state: dict[str, Any] | None) -> None:
        """That request's items are queued, or it ended without them: stop waiting for it."""
        if state is not None and state.pop("coming", False):
            self.coming -= 1
            if self.coming == 0:
                for batcher in self.batchers.values():
                    batcher.wake()

    def _worker(self, device: torch.device) -> ThreadPoolExecutor:
        key = str(device)
        if key not in self.workers:
            self.workers[key] = ThreadPoolExecutor(1, f"captioner-model-{key}")
        return self.workers[key]

    async def _start_batchers(self) -> None:
        s = self.settings
        common = {"max_batch_size": s.max_batch_size, "max_wait_ms": s.max_wait_ms}
        common |= {"max_queue": s.max_queue, "coming": lambda: self.coming}
        if (model := self.captioner) is not None:
            beam = model.default_search.beam_size
            self.batchers["caption"] = DynamicBatcher(
                lambda jobs, m=model: caption_batch(m, jobs),
                # Beam search costs images x beams: a batch of wide beams holds fewer images.
                cost=lambda job: job.beam_size or beam,
                max_batch_cost=s.max_batch_size * beam,
                name="caption",
                observer=self.metrics.observer("caption"),
                executor=self._worker(model.device),
                **common,
            )
        if (clf := self.activity) is not None:
            self.batchers["activity"] = DynamicBatcher(
                lambda jobs, m=clf: activity_batch(m, jobs),
                cost=lambda job: job.frames,
                max_batch_cost=s.max_batch_frames,
                name="activity",
                observer=self.metrics.observer("activity"),
                executor=self._worker(clf.device),
                **common,
            )
        for batcher in self.batchers.values():
            await batcher.start()

    async def close(self) -> None:
        """Graceful: finish what is queued and in flight, then free the threads."""
        self.ready = False
        self.metrics.ready.set(0)
        for task in (self._loading, self._trimming):
            if task is not None and not task.done():
                task.cancel()
        for batcher in self.batchers.values():
            await batcher.stop(drain_timeout_s=self.settings.request_timeout_s)
        for worker in self.workers.values():
            worker.shutdown(wait=False, cancel_futures=True)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.videos.close()

    # -- readiness --------------------------------------------------------------------------

    def not_ready_reason(self) -> str:
        if self.error:
            return f"models failed to load: {self.error}"
        return "models are loading: retry shortly (GET /readyz turns 200 when ready)"

    def model(self, task: str) -> Any:
        """The ready model for ``task``; raises NotReady, TaskUnavailable or TaskNotServed."""
        model = self.models.get(task)
        if self.ready and model is not None and task in self.batchers:
            return model
        if not self.ready:
            raise NotReady(self.not_ready_reason())
        if task in self.models.failures:
            why = self.models.failures[task]
            raise TaskUnavailable(f"the {task} model failed to load: {why}")
        raise TaskNotServed(f"this server does not serve {task}; enable it in settings")

    def retry_after_s(self) -> float:
        """When a busy server likely has room: the longest of the batchers' estimates."""
        return max((b.retry_after_s() for b in self.batchers.values()), default=1.0)

    # -- used by the routes -----------------------------------------------------------------

    async def decode(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """Run a decoding function in the image pool -> (its result, milliseconds)."""
        t = time.perf_counter()
        value = await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)
        return value, (time.perf_counter() - t) * 1000

    async def decode_images(
        self, model: Captioner, datas: list[bytes], request: Request
    ) -> list[tuple[torch.Tensor, ImageProbe | None] | MediaError]:
        """Decode uploads within the pixel cap and the decode budget, checking between files.

        Per file: (tensor, its header probe) or the MediaError that refused it. Raises
        TooMuchToDecode when the files could never fit the budget, BudgetFull when they do not
        fit now, and DeadlineExceeded / ClientGone when the deadline passes or the client
        leaves between files.
        """
        size = model.preprocess.size
        probes, _ = await self.decode(lambda: [probe_image(d, size) for d in datas])
        out: list[Any] = [None] * len(datas)
        cap = self.settings.max_image_pixels
        for i, probe in enumerate(probes):
            if probe is not None and probe.pixels > cap:
                out[i] = MediaError(
                    f"image is {probe.width}x{probe.height} = {probe.pixels} pixels, above "
                    f"this server's {cap}-pixel limit; resize it first"
                )
        todo = [i for i in range(len(datas)) if out[i] is None]
        costs = {i: probes[i].cost if probes[i] is not None else 0 for i in todo}
        total = sum(costs.values())
        if total > self.budget.capacity:
            raise TooMuchToDecode(
                f"these images need about {total / MiB:.0f} MiB to decode, over this server's "
                f"{self.budget.capacity / MiB:.0f} MiB budget; send fewer or smaller images",
            )
        try:
            self.budget.acquire(total)
        except BudgetFull:
            self.metrics.rejections.labels("decode_budget").inc()
            raise
        charges = {i: Charge(self.budget, costs[i]) for i in todo}
        gate = asyncio.Semaphore(self.settings.decode_workers)

        async def one(i: int) -> Any:
            job = None
            try:
                async with gate:
                    await self._still_wanted(request)
                    job = self.decode_pool.submit(
                        timed_decode, model.load_image, datas[i], charges[i]
                    )
                    return await asyncio.wrap_future(job)
            finally:
                if job is None or job.cancelled():  # never ran: its share goes back here
                    charges[i].release()

        results = await asyncio.gather(*(one(i) for i in todo), return_exceptions=True)
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, MediaError):
                raise result
            out[i] = result if isinstance(result, MediaError) else (result, probes[i])
        return out

    async def _still_wanted(self, request: Request) -> None:
        """Between files: stop decoding for a request past its deadline or whose client left."""
        if self.time_left(request) <= 0:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the deadline passed between files")
        if await request.is_disconnected():
            self.metrics.rejections.labels("client_gone").inc()
            raise ClientGone("the client left between files")

    async def decode_video(
        self, fn: Callable[[Callable[[], bool]], Any], request: Request
    ) -> tuple[Any, float]:
        """``fn(should_stop)`` in the video pool, stopped at the request's deadline or when
        its client leaves (:meth:`service.videos.VideoDecoding.decode`)."""
        return await self.videos.decode(fn, request, self.time_left(request))

    def time_left(self, request: Request) -> float:
        # The deadline counts from admission (UploadGate: the body is in), decoding included.
        arrived = getattr(request.state, "arrived", time.perf_counter())
        return self.settings.request_timeout_s - (time.perf_counter() - arrived)

    async def submit(self, name: str, job: Any, request: Request) -> Timed:
        left = self.time_left(request)
        self.arrived(request.scope.get("state"))  # a request's other items are submitted with it
        if left <= 0:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the deadline passed before the model was reached")
        try:
            return await self.batchers[name].submit(
                job, timeout_s=left, is_disconnected=request.is_disconnected
            )
        except BatcherError:
            raise
        except Exception as exc:  # the model failed: only this batch's requests see it
            log.exception("%s batch failed", name)
            raise BatchFailed(f"the model failed on this batch ({type(exc).__name__})") from None
