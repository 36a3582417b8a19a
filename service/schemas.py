"""Response models: what the routes return, as the OpenAPI schema shows it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class Tag(BaseModel):
    name: str = Field(
        description="an everyday name, e.g. 'cat' (ImageNet classes sharing it summed)"
    )
    score: float = Field(description="the encoder's ImageNet-head probability for the name, 0-1")


class Slot(BaseModel):
    position: int = Field(description="index of the named word in `words`")
    name: str = Field(description="the everyday name the ImageNet head gave the attended region")
    score: float = Field(description="0-1: how sure the head is of that name")


class CaptionItem(BaseModel):
    filename: str
    caption: str | None = None
    log_prob: float | None = None
    score: float | None = None
    confidence: float | None = Field(
        None,
        description="0-1: the evidence of the caption's subject (the ImageNet head's score "
        "of the named thing, the person or the scene signal): 0.5 where it is said plainly, "
        "below 0.5 hedged; for pictures like the synthetic training scenes, the decoder's "
        "geometric-mean word probability",
    )
    tags: list[Tag] | None = Field(
        None,
        description="what the encoder's ImageNet classifier sees, best first (top 5); "
        "absent for an encoder without an ImageNet head",
    )
    out_of_domain: bool | None = Field(
        None,
        description="true when the image is unlike the model's training images "
        "(domain_distance above the bundle's calibrated threshold): treat the caption as a "
        "guess; null for a bundle that was never calibrated",
    )
    domain_distance: float | None = Field(
        None,
        description="the number behind out_of_domain, which is true above the bundle's "
        "threshold: for a bundle calibrated with two reference sets (the default) the cosine "
        "distance to the nearest in-domain references minus that to the nearest out-of-domain "
        "ones (negative: like the photos); for one set, the distance to the nearest "
        "calibration images (0 = identical)",
    )
    slots: list[Slot] | None = Field(
        None,
        description="object words of the caption named from the image (the ImageNet head on "
        "the region the decoder attended to); absent for a model without object slots",
    )
    person: dict[str, Any] | None = Field(
        None,
        description='{"score", "wearing"}: the person signal (summed clothing and role '
        "classes) when it fired; the caption then starts with 'a person'",
    )
    scene: dict[str, Any] | None = Field(
        None, description='{"name", "score"}: a place class that fired strongly (lake, mountain)'
    )
    hedged: bool | None = Field(
        None, description="true when the subject was said with 'probably', 'or' or 'perhaps'"
    )
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


class MovingThing(BaseModel):
    name: str | None = Field(description="the head's name on the moving region, e.g. 'a car'")
    score: float
    person: bool = Field(description="named from the person signal (clothing, role classes)")


class Readings(BaseModel):
    camera: LabelScore | None = Field(
        None, description="static, handheld, pan_left/right, tilt_up/down, zoom_in/out, roll"
    )
    motion: LabelScore | None = Field(
        None, description="what moves on its own: none, left, right, up, down, approach, recede"
    )
    subject: MovingThing | None = Field(None, description="what moves; null: nothing named")


class Shot(Readings):
    start: float
    end: float
    sentence: str


class Description(BaseModel):
    sentence: str = Field(description="what happens, claiming nothing the readings do not")
    shots: list[Shot]
    cuts: list[float] | None = Field(
        description="shot changes (s); null: samples too far apart to look (use a timeline)"
    )


class TimelineEntry(Readings):
    start: float
    end: float
    label: str
    score: float
    sentence: str | None = None


class ActivityItem(BaseModel):
    filename: str
    label: str | None = None
    score: float | None = None
    top_k: list[LabelScore] | None = None
    timeline: list[TimelineEntry] | None = Field(None, description="when asked (timeline=true)")
    description: Description | None = Field(
        None, description="shots, camera and object motion, what moves, and a sentence"
    )
    error: str | None = Field(None, description="why this file got no label")


class ActivityResponse(BaseModel):
    model: ModelInfo
    results: list[ActivityItem] = Field(description="one per uploaded file, in upload order")
    timings: Timings


class ModelSummary(ModelInfo):
    """What a client may know of a served bundle (no training command, no data paths)."""

    vocabulary_size: int | None = Field(None, description="caption models: words known")
    classes: list[str] | None = Field(None, description="activity models: the labels")
    metrics: dict[str, Any] | None = Field(None, description="the bundle's evaluation figures")


class ModelsResponse(BaseModel):
    models: dict[str, ModelSummary]


class FieldProblem(BaseModel):
    """One reason a request failed validation."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="where: e.g. ['query', 'beam_size']")
    msg: str
    type: str
    input: Any = Field(None, description="the value sent, cut to 80 characters")


class Problem(BaseModel):
    """Every error answer (4xx and 5xx) has this shape."""

    detail: str = Field(description="one line: what went wrong and what to do")
    errors: list[FieldProblem] | None = Field(
        None, description="only for a request that failed validation (422): each problem"
    )
