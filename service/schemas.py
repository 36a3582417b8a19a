"""Response models: what the routes return, as the OpenAPI schema shows it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str


class Timings(BaseModel):
    decode_ms: float = Field(description="decoding and resizing the upload (CPU pool)")
    queue_ms: float = Field(description="waiting for a batch to start")
    compute_ms: float = Field(description="the model's time for the whole batch")
    total_ms: float
    batch_size: int = Field(description="items in the batch this request rode in")


class Alternative(BaseModel):
    caption: str
    log_prob: float
    score: float


class CaptionItem(BaseModel):
    filename: str
    caption: str | None = None
    log_prob: float | None = None
    score: float | None = None
    words: list[str] | None = None
    alternatives: list[Alternative] | None = None
    attention: list[list[float]] | None = Field(
        None, description="one row-major attention grid per word of `words`"
    )
    grid: tuple[int, int] | None = Field(None, description="rows, cols of each attention grid")
    width: int | None = None
    height: int | None = None
    error: str | None = Field(None, description="why this file got no caption")


class CaptionResponse(BaseModel):
    model: ModelInfo
    results: list[CaptionItem]
    timings: Timings


class LabelScore(BaseModel):
    label: str
    score: float


class TimelineEntry(BaseModel):
    start: float
    end: float
    label: str
    score: float


class ActivityResponse(BaseModel):
    model: ModelInfo
    filename: str
    label: str
    score: float
    top_k: list[LabelScore]
    timeline: list[TimelineEntry] | None = None
    timings: Timings


class ModelSummary(ModelInfo):
    """What a client may know of a served bundle (no training command, no data paths)."""

    vocabulary_size: int | None = Field(None, description="caption models: words known")
    classes: list[str] | None = Field(None, description="activity models: the labels")
    metrics: dict[str, Any] | None = Field(None, description="the bundle's evaluation figures")


class ModelsResponse(BaseModel):
    models: dict[str, ModelSummary]


class Problem(BaseModel):
    detail: Any
