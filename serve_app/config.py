"""Service configuration: one pydantic model, read from the environment and the ``stylecast serve`` flags."""
from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="uploads and outputs live here (and the database, unless db_path says)")
    db_path: str | None = Field(None, description="the SQLite database file (default: DATA_DIR/stylecast.db); on a "
                                                  "cluster, a local disk of the head while data_dir is on the share")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="uploads larger than this get 413")
    max_concurrent_jobs: int = Field(1, ge=1)
    max_active_jobs_per_key: int = Field(100, ge=0, description="queued + processing jobs one API key may have "
                                                               "(more: 429); 0 = no limit")
    job_deadline_s: float = Field(3600.0, gt=0, description="a job processing longer than this fails")
    chunk_seconds: float | None = Field(None, gt=0)
    api_keys: dict[str, str] = Field(default_factory=dict, description="key -> name; empty = open server")
    webhook_schedule_s: tuple[float, ...] | None = None
    pool_idle_s: float = Field(60.0, ge=0, description="stage actors (the cluster's CPUs) are released after this "
                                                       "long without a job")

    def database(self) -> str:
        """What `serve_app.store.Store` opens: db_path (a file, or a folder holding stylecast.db) or the data dir."""
        return self.db_path or self.data_dir

    @classmethod
    def from_env(cls, **overrides) -> ServiceConfig:
        values: dict = {}
        keys = os.environ.get("STYLECAST_API_KEYS", "").strip()
        if keys:
            values["api_keys"] = parse_api_keys(keys)
        env_map = {"STYLECAST_MAX_UPLOAD_BYTES": ("max_upload_bytes", int),
                   "STYLECAST_MAX_CONCURRENT_JOBS": ("max_concurrent_jobs", int),
                   "STYLECAST_MAX_ACTIVE_JOBS_PER_KEY": ("max_active_jobs_per_key", int),
                   "STYLECAST_JOB_DEADLINE_S": ("job_deadline_s", float),
                   "STYLECAST_CHUNK_SECONDS": ("chunk_seconds", float),
                   "STYLECAST_POOL_IDLE_S": ("pool_idle_s", float),
                   "STYLECAST_DB_PATH": ("db_path", str)}
        for env, (field, cast) in env_map.items():
            if os.environ.get(env):
                values[field] = cast(os.environ[env])
        if os.environ.get("STYLECAST_WEBHOOK_SCHEDULE_S"):
            values["webhook_schedule_s"] = tuple(float(x) for x in os.environ["STYLECAST_WEBHOOK_SCHEDULE_S"].split(","))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_api_keys(text: str) -> dict[str, str]:
    """``"name=key,name2=key2"`` → ``{key: name}``; raises ValueError on a malformed entry."""
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, key = part.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise ValueError(f"STYLECAST_API_KEYS entry {part!r} is not name=key")
        out[key.strip()] = name.strip()
    return out
