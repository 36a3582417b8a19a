"""Service settings: one pydantic-settings class, read from ``CAPTIONER_*`` variables."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
# captioner.video.DEFAULT_VIDEO_LIMITS.max_decode_pixels, written here so that reading the
# settings does not import the library (a test checks the two agree).
VIDEO_DECODE_PIXELS = 80_000_000_000
# The shortest API key accepted: 16 characters from a password manager are far past guessing.
MIN_API_KEY_CHARS = 16
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

    # hide_input_in_errors: a traceback of a refused setting never prints the API key.
    model_config = SettingsConfigDict(
        env_prefix="CAPTIONER_", extra="ignore", hide_input_in_errors=True
    )

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
    # Requests admitted to the inference routes at once (decoding, queued, computing): a request
    # is admitted once its body is in, and refused (429) before its body is read while full.
    max_inflight: int = Field(64, ge=1, le=100_000)
    # Bodies being received on the inference routes at once; they hold no admission slot, so a
    # slow client cannot starve the others; beyond it 429 before the body is read.
    max_uploads: int = Field(128, ge=1, le=100_000)
    # The whole body must arrive within body_timeout_s, and after upload_grace_s at no less
    # than min_upload_rate_kb_s KiB/s on average (0: no rate check); else 408 and the
    # connection is closed (nginx's client_body_timeout, for a service without nginx).
    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    min_upload_rate_kb_s: float = Field(32.0, ge=0.0, le=1_000_000.0)
    upload_grace_s: float = Field(5.0, ge=0.0, le=3600.0)
    max_batch_frames: int = Field(128, ge=1)  # video batches are sized by frames, not clips
    # Deadline from admission (the body is in): decoding, queue and model -> 504.
    request_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    decode_workers: int = Field(2, ge=1, le=64)  # CPU pool for image decoding
    # A pool of its own for videos, so an image never waits behind a long video decode.
    video_workers: int = Field(1, ge=1, le=64)
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
    # Videos whose header promises more decoding than this (frames x width x height, as if
    # read in full) are refused (422) before a frame is decoded.
    max_video_decode_pixels: int = Field(VIDEO_DECODE_PIXELS, ge=1)
    # Once no request has been in flight for this long after a burst, freed heap memory is
    # handed back to the OS (glibc malloc_trim); 0: never.
    idle_trim_s: float = Field(2.0, ge=0.0, le=3600.0)

    api_key: str | None = None  # when set (16+ characters), inference routes need the key
    # After auth_failures wrong or missing keys from one client address within auth_window_s,
    # that address gets 429 (Retry-After) for auth_window_s, whatever key it sends.
    auth_failures: int = Field(20, ge=1, le=1_000_000)
    auth_window_s: float = Field(60.0, gt=0.0, le=86_400.0)
    # Proxies (comma-separated addresses, or *) whose X-Forwarded-For names the client, so
    # that behind nginx the throttle and the access log see each client, not the proxy.
    # None: uvicorn's own default (FORWARDED_ALLOW_IPS, else 127.0.0.1 and ::1).
    forwarded_allow_ips: str | None = None
    # /metrics without the key. None: open only when no api_key is set.
    metrics_open: bool | None = None
    warmup: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # Checked here, not by a field constraint, so that the message never repeats the key.
        if self.api_key is not None and len(self.api_key) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"CAPTIONER_API_KEY is {len(self.api_key)} characters; it must be at least "
                f"{MIN_API_KEY_CHARS} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))'), or unset it"
            )
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
