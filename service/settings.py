"""Service settings: one pydantic-settings class, read from ``CAPTIONER_*`` variables."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
# Pillow's decompression-bomb limit: the pixel cap can only be lower (captioner.media enforces it).
PILLOW_BOMB_PIXELS = 89_478_485
# The most memory one decoded pixel can take while an upload becomes RGB (32-bit modes, EXIF
# rotation and the 16-bit rescale); service/uploads.py holds the per-mode figures.
WORST_DECODE_BYTES_PER_PIXEL = 32


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Everything the service can be told; unsafe values are refused at start-up."""

    model_config = SettingsConfigDict(env_prefix="CAPTIONER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    caption_bundle: str | None = None  # None: the shipped weights/caption-default
    activity_bundle: str | None = None  # None: the shipped weights/activity-default
    enable_caption: bool = True
    enable_activity: bool = True
    # Serve the tasks that loaded when another fails (and say so on /readyz); else refuse.
    allow_partial: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    max_batch_size: int = Field(16, ge=1, le=1024)  # images per caption batch
    max_wait_ms: float = Field(10.0, ge=0.0, le=10_000.0)
    max_queue: int = Field(256, ge=1, le=100_000)  # items waiting per model
    # Requests admitted to the inference routes at once (uploading, decoding, queued, computing);
    # beyond it a request gets 429 before its body is read, so overload cannot pile up unseen.
    max_inflight: int = Field(64, ge=1, le=100_000)
    max_batch_frames: int = Field(128, ge=1)  # video batches are sized by frames, not clips
    request_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)  # deadline in the queue -> 504
    decode_workers: int = Field(2, ge=1, le=64)  # CPU pool for image and video decoding
    # Threads for the model's CPU ops (torch intra-op) and for OpenCV inside each decode worker.
    # None: torch takes OMP_NUM_THREADS when set, else every usable core (one model worker runs
    # one batch at a time); OpenCV takes cores / (2 x decode_workers), at least 1.
    torch_threads: int | None = Field(None, ge=1, le=1024)
    cv2_threads: int | None = Field(None, ge=1, le=1024)

    max_image_bytes: int = Field(20 * MiB, ge=1024)  # per request body on /v1/caption
    max_video_bytes: int = Field(100 * MiB, ge=1024)  # per request body on /v1/activity
    max_files: int = Field(16, ge=1, le=256)  # images per caption request
    max_beam_size: int = Field(10, ge=1, le=50)
    max_timeline_windows: int = Field(120, ge=1)
    # Images above this many pixels are refused (422) from their header, before decoding.
    max_image_pixels: int = Field(40_000_000, ge=1, le=PILLOW_BOMB_PIXELS)
    # Memory that uploads being decoded may hold at once, estimated from their headers
    # (pixels x bytes per pixel); a request that does not fit now gets 429 with Retry-After.
    decode_budget_mb: int = Field(1536, ge=16)

    api_key: str | None = None  # when set, inference routes need Bearer or X-API-Key
    # /metrics without the key. None: open only when no api_key is set.
    metrics_open: bool | None = None
    warmup: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("CAPTIONER_API_KEY must be at least 8 characters (or unset it)")
        if not (self.enable_caption or self.enable_activity):
            raise ValueError("enable at least one of CAPTIONER_ENABLE_CAPTION / _ACTIVITY")
        worst = self.max_image_pixels * WORST_DECODE_BYTES_PER_PIXEL
        if worst > self.decode_budget_mb * MiB:
            raise ValueError(
                f"decode_budget_mb ({self.decode_budget_mb}) cannot hold one image at "
                f"max_image_pixels ({self.max_image_pixels}), which may need "
                f"{worst / MiB:.0f} MiB to decode; raise the budget or lower the pixel cap"
            )
        if self.metrics_open is None:
            self.metrics_open = self.api_key is None
        if self.torch_threads is None:
            self.torch_threads = _omp_threads() or usable_cores()
        if self.cv2_threads is None:
            self.cv2_threads = max(1, usable_cores() // (2 * self.decode_workers))
        return self


def _omp_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
