"""API models: the one place that says what crosses the HTTP boundary (and what the JobManager returns).

Every response is the envelope ``{success, message, data}``; errors add ``error: {code, detail}``.
Unknown fields in request bodies are errors.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from stylecast.errors import ApiError  # noqa: F401 - re-exported: the API's error type
from stylecast.options import Options

JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
JobStage = Literal["video_analysis", "audio_analysis", "motion_analysis", "style_extraction", "style_application",
                   "rendering"]
TERMINAL: tuple[str, ...] = ("completed", "failed", "cancelled")
ACTIVE: tuple[str, ...] = ("queued", "processing")
STAGES: tuple[str, ...] = ("video_analysis", "audio_analysis", "motion_analysis", "style_extraction",
                           "style_application", "rendering")
# Share of a job's progress (0-100) that each stage covers, from measured stage times of typical jobs.
STAGE_WEIGHTS: dict[str, float] = {"video_analysis": 35.0, "audio_analysis": 3.0, "motion_analysis": 4.0,
                                   "style_extraction": 2.0, "style_application": 3.0, "rendering": 53.0}

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateJobRequest(_Strict):
    video_id: str = Field(min_length=1, max_length=64, description="the source video's id")
    template_video_id: str = Field(min_length=1, max_length=64, description="the style template video's id")
    options: Options | None = None
    webhook_url: str | None = Field(None, min_length=1, max_length=2048,
                                    description="POSTed the JobResponse when the job ends (completed/failed/cancelled)")


class VideoResponse(_Strict):
    video_id: str
    filename: str
    size: int = Field(description="bytes")
    duration: float = Field(description="seconds")
    fps: float
    width: int = Field(description="display width after SAR and rotation")
    height: int
    has_audio: bool
    created_at: datetime


class ErrorInfo(_Strict):
    code: str
    message: str


class JobResponse(_Strict):
    job_id: str
    status: JobStatus
    current_stage: JobStage | None = None
    progress: float = Field(0.0, ge=0.0, le=100.0)
    video_id: str
    template_video_id: str
    options: Options
    webhook_url: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    updated_at: datetime
    completed_at: datetime | None = None


class JobDetailResponse(JobResponse):
    style_json: dict[str, Any] | None = None
    output_url: str | None = None
    error: ErrorInfo | None = None
    processing_time_seconds: float | None = None
    stage_timings: dict[str, float] = Field(default_factory=dict)


class Page(_Strict, Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int
    pages: int


class WebhookDelivery(_Strict):
    delivery_id: str
    job_id: str
    webhook_id: str = Field(description="the webhook-id header: the same for every attempt of one event")
    attempt: int
    url: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    delivered: bool
    attempted_at: datetime
    next_attempt_at: datetime | None = None


class Envelope(BaseModel):
    success: bool
    message: str
    data: Any = None


class ErrorBody(_Strict):
    code: str
    detail: Any = None


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    message: str
    data: None = None
    error: ErrorBody
