"""Persistent state of the job service: videos, jobs, idempotency keys and webhook events, in one SQLite file.

Concurrency model
-----------------
* One **writer process** (the JobManager) and any number of **reader processes** (Serve replicas that read
  job status straight from the database).  The database runs in WAL mode, so readers never block the writer
  and see every committed write.
* Every connection has a busy timeout (``busy_timeout_s``, 30 s by default): a writer that finds the file
  locked waits instead of raising ``database is locked``.  Writes start with ``BEGIN IMMEDIATE`` so two
  writers never deadlock on a read-to-write lock upgrade.
* Inside a process one `Store` holds one connection (``check_same_thread=False``) guarded by a lock, so a
  `Store` may be shared by threads (the webhook sender's workers, for example).

Timestamps
----------
Stored as UTC epoch seconds (REAL).  Records expose them as timezone-aware UTC ``datetime`` values; every
method argument that is a point in time (``now``, ``next_attempt_at``, ...) takes epoch seconds (``float``) or
a ``datetime`` (naive ones are taken as UTC).

Schema
------
Versioned with ``PRAGMA user_version`` (`SCHEMA_VERSION`).  Opening a file migrates it forward; opening a file
written by a newer version raises `RuntimeError`.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from serve_app.models import (ACTIVE, ErrorInfo, JobDetailResponse, JobResponse, JobStage, JobStatus,
                              VideoResponse, WebhookDelivery)
from stylecast.errors import ApiError
from stylecast.options import Options

SCHEMA_VERSION = 2
DB_FILENAME = "stylecast.db"
IDEMPOTENCY_TTL_S = 24 * 3600.0
"""Idempotency keys older than this are ignored by `Store.get_idempotency` and removed by `purge_idempotency`."""
IdempotencyScope = Literal["jobs", "videos"]
"""What an Idempotency-Key names: a job (``POST /jobs``) or an upload (``POST /videos``)."""

WebhookState = Literal["pending", "delivered", "gave_up"]

Timestamp = float | int | datetime


# ----------------------------------------------------------------------------------------------------- time helpers

def to_epoch(value: Timestamp) -> float:
    """Epoch seconds from epoch seconds or a datetime (naive = UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _utc(value: Any) -> Any:
    """Validator helper: datetimes become aware UTC; epoch numbers become aware UTC datetimes."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


UtcDatetime = Annotated[datetime, BeforeValidator(_utc)]
"""A datetime that is always timezone-aware UTC (epoch seconds and naive datetimes are accepted)."""


# ---------------------------------------------------------------------------------------------------------- records

class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VideoRecord(_Record):
    """An uploaded video, as stored.  ``owner`` is the API key's name ("" when the server is open)."""

    video_id: str
    owner: str = ""
    filename: str
    path: str = Field(description="the file on disk")
    size: int = Field(ge=0, description="bytes")
    duration: float = Field(ge=0, description="seconds")
    fps: float
    width: int
    height: int
    has_audio: bool
    created_at: UtcDatetime = Field(default_factory=_now)


    def to_response(self) -> VideoResponse:
        return VideoResponse(video_id=self.video_id, filename=self.filename, size=self.size,
                             duration=self.duration, fps=self.fps, width=self.width, height=self.height,
                             has_audio=self.has_audio, created_at=self.created_at)


class JobRecord(_Record):
    """A job, as stored.  ``options`` is the `Options` dump; ``attempts`` counts how often the job was started
    (restart recovery bumps it)."""

    job_id: str
    owner: str = ""
    status: JobStatus = "queued"
    current_stage: JobStage | None = None
    progress: float = Field(0.0, ge=0.0, le=100.0)
    video_id: str
    template_video_id: str
    options: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    created_at: UtcDatetime = Field(default_factory=_now)
    started_at: UtcDatetime | None = None
    updated_at: UtcDatetime = Field(default_factory=_now)
    completed_at: UtcDatetime | None = None
    style_json: dict[str, Any] | None = None
    output_path: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    processing_time_seconds: float | None = None
    stage_timings: dict[str, float] = Field(default_factory=dict)
    attempts: int = Field(0, ge=0)

    def output_file(self) -> str:
        """The path of the job's output video; `ApiError` 409 ``no_output`` while the job has not completed
        (failed, cancelled, still running), 404 ``no_output`` when its file has gone."""
        if self.status != "completed" or not self.output_path or not Path(self.output_path).exists():
            raise ApiError(409 if self.status != "completed" else 404, "no_output",
                           f"job {self.job_id} has no output (status {self.status})")
        return self.output_path

    @field_validator("options", mode="before")
    @classmethod
    def _options_as_dict(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return {} if value is None else value


class WebhookEvent(_Record):
    """One webhook event: the same ``webhook_id`` and body for every delivery attempt."""

    webhook_id: str
    job_id: str
    url: str
    payload: bytes
    created_at: UtcDatetime
    attempts: int = 0
    next_attempt_at: UtcDatetime | None = Field(None, description="None once delivered or given up")
    state: WebhookState = "pending"
    last_error: str | None = None



# ----------------------------------------------------------------------------------------------------------- schema

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS videos (
    video_id   TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    filename   TEXT NOT NULL,
    path       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    duration   REAL NOT NULL,
    fps        REAL NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    has_audio  INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_owner_created ON videos (owner, created_at);

CREATE TABLE IF NOT EXISTS jobs (
    job_id                  TEXT PRIMARY KEY,
    owner                   TEXT NOT NULL,
    status                  TEXT NOT NULL,
    current_stage           TEXT,
    progress                REAL NOT NULL,
    video_id                TEXT NOT NULL,
    template_video_id       TEXT NOT NULL,
    options                 TEXT NOT NULL,
    webhook_url             TEXT,
    created_at              REAL NOT NULL,
    started_at              REAL,
    updated_at              REAL NOT NULL,
    completed_at            REAL,
    style_json              TEXT,
    output_path             TEXT,
    error_code              TEXT,
    error_message           TEXT,
    processing_time_seconds REAL,
    stage_timings           TEXT NOT NULL,
    attempts                INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_video ON jobs (video_id);
CREATE INDEX IF NOT EXISTS jobs_template ON jobs (template_video_id);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency_keys (created_at);

CREATE TABLE IF NOT EXISTS webhook_events (
    webhook_id      TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         BLOB NOT NULL,
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    state           TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_events_job ON webhook_events (job_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    url             TEXT NOT NULL,
    status_code     INTEGER,
    error           TEXT,
    duration_ms     REAL,
    delivered       INTEGER NOT NULL,
    attempted_at    REAL NOT NULL,
    next_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id, attempted_at);
"""

# Version 2: idempotency keys get a scope ("jobs" for POST /jobs, "videos" for uploads), so one key string can
# name a job and an upload independently; the entry's id column holds the job's or the video's id.
_SCHEMA_V2 = """
CREATE TABLE idempotency_keys_v2 (
    owner        TEXT NOT NULL,
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (owner, scope, key)
);
INSERT INTO idempotency_keys_v2 (owner, scope, key, request_hash, resource_id, created_at)
    SELECT owner, 'jobs', key, request_hash, job_id, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_v2 RENAME TO idempotency_keys;
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency_keys (created_at);
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}  # version -> script from version-1 to version

_JOB_COLUMNS = tuple(JobRecord.model_fields)
_VIDEO_COLUMNS = tuple(VideoRecord.model_fields)
_JOB_TIME_FIELDS = ("created_at", "started_at", "updated_at", "completed_at")
_JOB_JSON_FIELDS = ("options", "style_json", "stage_timings")
_JOB_IMMUTABLE = ("job_id", "owner", "created_at")


def _check_page(page: int, page_size: int) -> None:
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")


# ------------------------------------------------------------------------------------------------------------ store

def database_file(path: str | Path) -> Path:
    """The database file a `Store` opens for ``path``: the file itself, or ``stylecast.db`` in a folder."""
    path = Path(path)
    return path / DB_FILENAME if path.is_dir() else path


class Store:
    """SQLite-backed state.  ``path`` is the database file, or a directory (the data dir) in which
    ``stylecast.db`` is used.  Missing parent directories are created.

    Safe to share between threads; open one `Store` per process on the same file for multi-process access.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        path = database_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE for writes).
        self._conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = self._journal_mode_wal(busy_timeout_s)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"cannot put {path} in WAL mode (got {mode!r}); is it on a network file system?")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        self._migrate()

    # -------------------------------------------------------------------------------------------- plumbing

    def _journal_mode_wal(self, busy_timeout_s: float) -> str:
        """Switch to WAL.  On a new file that needs a moment of exclusive access, and SQLite does not wait
        out the busy timeout for it: two processes opening a fresh database at once would see "database is
        locked".  Retried instead, within the busy timeout."""
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                return self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: takes the write lock at once (waits up to the busy timeout for it)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema version {version}; this code knows up to "
                                   f"{SCHEMA_VERSION} (upgrade stylecast)")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")

    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def journal_mode(self) -> str:
        with self._lock:
            return self._conn.execute("PRAGMA journal_mode").fetchone()[0]

    # ---------------------------------------------------------------------------------------------- videos

    @staticmethod
    def _video_from_row(row: sqlite3.Row) -> VideoRecord:
        data = dict(row)
        data["has_audio"] = bool(data["has_audio"])
        return VideoRecord.model_validate(data)

    def add_video(self, video: VideoRecord) -> VideoRecord:
        """Insert a video; `sqlite3.IntegrityError` if the id exists."""
        values = video.model_dump()
        values["created_at"] = to_epoch(video.created_at)
        values["has_audio"] = int(video.has_audio)
        with self._write() as conn:
            conn.execute(f"INSERT INTO videos ({', '.join(_VIDEO_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_VIDEO_COLUMNS))})",
                         [values[c] for c in _VIDEO_COLUMNS])
        return video

    def get_video(self, video_id: str, owner: str | None) -> VideoRecord | None:
        """The video, or None when absent or owned by someone else (``owner=None``: any owner)."""
        sql, args = "SELECT * FROM videos WHERE video_id = ?", [video_id]
        if owner is not None:
            sql, args = sql + " AND owner = ?", args + [owner]
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return None if row is None else self._video_from_row(row)

    def list_videos(self, owner: str | None, page: int = 1, page_size: int = 20) -> tuple[list[VideoRecord], int]:
        """One page of the owner's videos, newest first, and the owner's total (``owner=None``: everyone's)."""
        _check_page(page, page_size)
        where, args = ("WHERE owner = ?", [owner]) if owner is not None else ("", [])
        with self._read() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM videos {where}", args).fetchone()[0]
            rows = conn.execute(f"SELECT * FROM videos {where} ORDER BY created_at DESC, rowid DESC "
                                f"LIMIT ? OFFSET ?", args + [page_size, (page - 1) * page_size]).fetchall()
        return [self._video_from_row(r) for r in rows], total

    def delete_video(self, video_id: str, owner: str | None) -> bool:
        """Delete the record (not the file); False when absent or owned by someone else."""
        sql, args = "DELETE FROM videos WHERE video_id = ?", [video_id]
        if owner is not None:
            sql, args = sql + " AND owner = ?", args + [owner]
        with self._write() as conn:
            return conn.execute(sql, args).rowcount > 0

    def video_in_active_job(self, video_id: str) -> bool:
        """True when a queued or processing job uses the video as source or template."""
        marks = ", ".join("?" * len(ACTIVE))
        with self._lock:
            row = self._conn.execute(
                f"SELECT 1 FROM jobs WHERE (video_id = ? OR template_video_id = ?) AND status IN ({marks}) "
                f"LIMIT 1", [video_id, video_id, *ACTIVE]).fetchone()
        return row is not None

    # ------------------------------------------------------------------------------------------------ jobs

    @staticmethod
    def _job_to_columns(values: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for name in _JOB_TIME_FIELDS:
            if name in out and out[name] is not None:
                out[name] = to_epoch(out[name])
        for name in _JOB_JSON_FIELDS:
            if name in out and out[name] is not None:
                out[name] = json.dumps(out[name], separators=(",", ":"))
        return out

    @staticmethod
    def _job_from_row(row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        for name in _JOB_JSON_FIELDS:
            if data[name] is not None:
                data[name] = json.loads(data[name])
        return JobRecord.model_validate(data)

    def add_job(self, job: JobRecord) -> JobRecord:
        """Insert a job; `sqlite3.IntegrityError` if the id exists."""
        values = self._job_to_columns(job.model_dump())
        with self._write() as conn:
            conn.execute(f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                         [values[c] for c in _JOB_COLUMNS])
        return job

    def update_job(self, job_id: str, *, only_if_status: Iterable[str] | None = None,
                   **fields: Any) -> JobRecord | None:
        """Set ``fields`` (validated as `JobRecord` fields) and ``updated_at`` (now, unless given).

        Returns the updated record, or None when the job does not exist or — with ``only_if_status`` — its
        status is not one of those (compare-and-set, e.g. ``only_if_status=("queued", "processing")`` so a
        finished job is never overwritten by a late progress report).  ``job_id``, ``owner`` and
        ``created_at`` cannot be changed.
        """
        unknown = set(fields) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
        frozen = set(fields) & set(_JOB_IMMUTABLE)
        if frozen:
            raise ValueError(f"job fields cannot be changed: {', '.join(sorted(frozen))}")
        fields.setdefault("updated_at", _now())
        allowed = None if only_if_status is None else set(only_if_status)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id]).fetchone()
            if row is None:
                return None
            current = self._job_from_row(row)
            if allowed is not None and current.status not in allowed:
                return None
            updated = JobRecord.model_validate({**current.model_dump(), **fields})  # validates the new values
            values = self._job_to_columns({name: getattr(updated, name) for name in fields})
            conn.execute(f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in values)} WHERE job_id = ?",
                         [*values.values(), job_id])
        return updated

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """The job, or None when absent or (``owner`` given) owned by someone else."""
        sql, args = "SELECT * FROM jobs WHERE job_id = ?", [job_id]
        if owner is not None:
            sql, args = sql + " AND owner = ?", args + [owner]
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return None if row is None else self._job_from_row(row)

    def list_jobs(self, owner: str | None, status: str | Iterable[str] | None = None, page: int = 1,
                  page_size: int = 20) -> tuple[list[JobRecord], int]:
        """One page of jobs, newest first, and the total matching (``owner=None``: everyone's; ``status``:
        one status or several)."""
        _check_page(page, page_size)
        clauses, args = [], []
        if owner is not None:
            clauses.append("owner = ?")
            args.append(owner)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = conn.execute(f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC "
                                f"LIMIT ? OFFSET ?", args + [page_size, (page - 1) * page_size]).fetchall()
        return [self._job_from_row(r) for r in rows], total

    def jobs_by_status(self, statuses: str | Iterable[str]) -> list[JobRecord]:
        """All jobs in these statuses, oldest first (FIFO queue order; restart recovery)."""
        statuses = [statuses] if isinstance(statuses, str) else list(statuses)
        if not statuses:
            return []
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(statuses))}) "
                f"ORDER BY created_at ASC, rowid ASC", statuses).fetchall()
        return [self._job_from_row(r) for r in rows]

    @staticmethod
    def to_response(record: JobRecord) -> JobResponse:
        """The API's view of a job."""
        return JobResponse(job_id=record.job_id, status=record.status, current_stage=record.current_stage,
                           progress=record.progress, video_id=record.video_id,
                           template_video_id=record.template_video_id,
                           options=Options.model_validate(record.options), webhook_url=record.webhook_url,
                           created_at=record.created_at, started_at=record.started_at,
                           updated_at=record.updated_at, completed_at=record.completed_at)

    @classmethod
    def to_detail(cls, record: JobRecord, output_url: str | None = None) -> JobDetailResponse:
        """The API's detailed view; ``error`` is set when the record has an ``error_code``."""
        base = cls.to_response(record)
        error = (ErrorInfo(code=record.error_code, message=record.error_message or "")
                 if record.error_code else None)
        return JobDetailResponse(**dict(base), style_json=record.style_json, output_url=output_url, error=error,
                                 # the API's contract: null unless the job completed
                                 processing_time_seconds=(record.processing_time_seconds
                                                          if record.status == "completed" else None),
                                 stage_timings=record.stage_timings)

    # ------------------------------------------------------------------------------------- idempotency keys

    def put_idempotency(self, owner: str, key: str, request_hash: str, resource_id: str,
                        now: Timestamp | None = None, *, scope: IdempotencyScope = "jobs",
                        replace: bool = False) -> tuple[str, str, datetime] | None:
        """Remember ``key`` -> (request_hash, resource_id) in ``scope`` for 24 h.

        Returns None when stored, or the live entry already there (``(request_hash, resource_id, created_at)``),
        which is then left unchanged (first writer wins) unless ``replace``.  An expired entry is replaced.
        """
        now_s = time.time() if now is None else to_epoch(now)
        with self._write() as conn:
            row = conn.execute("SELECT request_hash, resource_id, created_at FROM idempotency_keys "
                               "WHERE owner = ? AND scope = ? AND key = ?", [owner, scope, key]).fetchone()
            if not replace and row is not None and row["created_at"] > now_s - IDEMPOTENCY_TTL_S:
                return row["request_hash"], row["resource_id"], from_epoch(row["created_at"])
            conn.execute("INSERT OR REPLACE INTO idempotency_keys "
                         "(owner, scope, key, request_hash, resource_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         [owner, scope, key, request_hash, resource_id, now_s])
        return None

    def get_idempotency(self, owner: str, key: str, now: Timestamp | None = None, *,
                        scope: IdempotencyScope = "jobs") -> tuple[str, str, datetime] | None:
        """``(request_hash, resource_id, created_at)``, or None when absent or older than 24 h."""
        now_s = time.time() if now is None else to_epoch(now)
        with self._lock:
            row = self._conn.execute("SELECT request_hash, resource_id, created_at FROM idempotency_keys "
                                     "WHERE owner = ? AND scope = ? AND key = ? AND created_at > ?",
                                     [owner, scope, key, now_s - IDEMPOTENCY_TTL_S]).fetchone()
        return None if row is None else (row["request_hash"], row["resource_id"], from_epoch(row["created_at"]))

    def purge_idempotency(self, now: Timestamp | None = None) -> int:
        """Delete entries older than 24 h; returns how many."""
        now_s = time.time() if now is None else to_epoch(now)
        with self._write() as conn:
            return conn.execute("DELETE FROM idempotency_keys WHERE created_at <= ?",
                                [now_s - IDEMPOTENCY_TTL_S]).rowcount

    # ------------------------------------------------------------------------------------- webhook events

    @staticmethod
    def _event_from_row(row: sqlite3.Row) -> WebhookEvent:
        data = dict(row)
        data["payload"] = bytes(data["payload"])
        return WebhookEvent.model_validate(data)

    def add_webhook_event(self, webhook_id: str, job_id: str, url: str, payload_bytes: bytes,
                          next_attempt_at: Timestamp, now: Timestamp | None = None) -> WebhookEvent:
        """Persist a pending event whose first attempt is due at ``next_attempt_at``."""
        created = time.time() if now is None else to_epoch(now)
        due = to_epoch(next_attempt_at)
        with self._write() as conn:
            conn.execute("INSERT INTO webhook_events (webhook_id, job_id, url, payload, created_at, attempts, "
                         "next_attempt_at, state) VALUES (?, ?, ?, ?, ?, 0, ?, 'pending')",
                         [webhook_id, job_id, url, sqlite3.Binary(payload_bytes), created, due])
        return WebhookEvent(webhook_id=webhook_id, job_id=job_id, url=url, payload=payload_bytes,
                            created_at=created, next_attempt_at=due)

    def get_webhook_event(self, webhook_id: str) -> WebhookEvent | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM webhook_events WHERE webhook_id = ?", [webhook_id]).fetchone()
        return None if row is None else self._event_from_row(row)

    def list_webhook_events(self, job_id: str) -> list[WebhookEvent]:
        """A job's events, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM webhook_events WHERE job_id = ? "
                                      "ORDER BY created_at, rowid", [job_id]).fetchall()
        return [self._event_from_row(r) for r in rows]

    def due_webhook_events(self, now: Timestamp, limit: int = 100) -> list[WebhookEvent]:
        """Pending events due at ``now``, earliest due first (read only; see `claim_webhook_events`)."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM webhook_events WHERE state = 'pending' "
                                      "AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
                                      [to_epoch(now), limit]).fetchall()
        return [self._event_from_row(r) for r in rows]

    def claim_webhook_events(self, now: Timestamp, limit: int, lease_s: float) -> list[WebhookEvent]:
        """Due events, atomically leased: their ``next_attempt_at`` moves to ``now + lease_s`` so no other
        sender (thread or process) takes them meanwhile.  `record_delivery_attempt` ends the lease; if the
        claimer dies, the event is due again when the lease runs out.  The returned events carry the
        ``next_attempt_at`` they had before the claim."""
        if limit <= 0:
            return []
        now_s = to_epoch(now)
        with self._write() as conn:
            rows = conn.execute("SELECT * FROM webhook_events WHERE state = 'pending' AND next_attempt_at <= ? "
                                "ORDER BY next_attempt_at, rowid LIMIT ?", [now_s, limit]).fetchall()
            conn.executemany("UPDATE webhook_events SET next_attempt_at = ? WHERE webhook_id = ?",
                             [(now_s + lease_s, r["webhook_id"]) for r in rows])
        return [self._event_from_row(r) for r in rows]

    def next_webhook_due(self) -> datetime | None:
        """When the earliest pending event is due (None when nothing is pending)."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(next_attempt_at) FROM webhook_events "
                                     "WHERE state = 'pending'").fetchone()
        return from_epoch(row[0])

    def record_delivery_attempt(self, webhook_id: str, *, delivery_id: str, attempted_at: Timestamp,
                                delivered: bool, status_code: int | None = None, error: str | None = None,
                                duration_ms: float | None = None,
                                next_attempt_at: Timestamp | None = None) -> WebhookDelivery:
        """Write one attempt to the deliveries table and update its event in the same transaction.

        The event's ``attempts`` goes up by one; it becomes ``delivered`` when ``delivered``, else stays
        ``pending`` due at ``next_attempt_at``, or becomes ``gave_up`` when ``next_attempt_at`` is None.
        An event that has already ended (an attempt of another sender, whose lease had run out, finished
        first) keeps its state: the attempt is recorded, a late failure never turns ``delivered`` back into
        ``pending`` (which would send it again).  `KeyError` when the event does not exist.
        """
        at = to_epoch(attempted_at)
        nxt = None if delivered or next_attempt_at is None else to_epoch(next_attempt_at)
        state: WebhookState = "delivered" if delivered else ("pending" if nxt is not None else "gave_up")
        with self._write() as conn:
            event = conn.execute("SELECT job_id, url, attempts, state FROM webhook_events WHERE webhook_id = ?",
                                 [webhook_id]).fetchone()
            if event is None:
                raise KeyError(f"no webhook event {webhook_id}")
            attempt = event["attempts"] + 1
            conn.execute("INSERT INTO webhook_deliveries (delivery_id, webhook_id, job_id, attempt, url, "
                         "status_code, error, duration_ms, delivered, attempted_at, next_attempt_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [delivery_id, webhook_id, event["job_id"], attempt, event["url"], status_code, error,
                          duration_ms, int(delivered), at, nxt])
            if event["state"] == "pending":
                conn.execute("UPDATE webhook_events SET attempts = ?, next_attempt_at = ?, state = ?, "
                             "last_error = ? WHERE webhook_id = ?", [attempt, nxt, state, error, webhook_id])
            else:
                conn.execute("UPDATE webhook_events SET attempts = ? WHERE webhook_id = ?", [attempt, webhook_id])
        return WebhookDelivery(delivery_id=delivery_id, job_id=event["job_id"], webhook_id=webhook_id,
                               attempt=attempt, url=event["url"], status_code=status_code, error=error,
                               duration_ms=duration_ms, delivered=delivered, attempted_at=from_epoch(at),
                               next_attempt_at=from_epoch(nxt))

    def list_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        """Every delivery attempt for the job's webhooks, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM webhook_deliveries WHERE job_id = ? "
                                      "ORDER BY attempted_at, attempt, rowid", [job_id]).fetchall()
        return [WebhookDelivery(delivery_id=r["delivery_id"], job_id=r["job_id"], webhook_id=r["webhook_id"],
                                attempt=r["attempt"], url=r["url"], status_code=r["status_code"],
                                error=r["error"], duration_ms=r["duration_ms"], delivered=bool(r["delivered"]),
                                attempted_at=from_epoch(r["attempted_at"]),
                                next_attempt_at=from_epoch(r["next_attempt_at"])) for r in rows]
