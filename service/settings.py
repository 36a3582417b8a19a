"""Service settings: one pydantic-settings class, read from ``CAPTIONER_*`` variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told; unsafe values are refused at start-up."""

    model_config = SettingsConfigDict(env_prefix="CAPTIONER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    caption_bundle: str | None = None  # None: the shipped weights/caption-default
    activity_bundle: str | None = None  # None: the shipped weights/activity-default
    enable_caption: bool = True
    enable_activity: bool = True
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

    max_image_bytes: int = Field(20 * MiB, ge=1024)  # per request body on /v1/caption
    max_video_bytes: int = Field(100 * MiB, ge=1024)  # per request body on /v1/activity
    max_files: int = Field(16, ge=1, le=256)  # images per caption request
    max_beam_size: int = Field(10, ge=1, le=50)
    max_timeline_windows: int = Field(120, ge=1)

    api_key: str | None = None  # when set, inference routes need Bearer or X-API-Key
    warmup: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("CAPTIONER_API_KEY must be at least 8 characters (or unset it)")
        if not (self.enable_caption or self.enable_activity):
            raise ValueError("enable at least one of CAPTIONER_ENABLE_CAPTION / _ACTIVITY")
        return self
