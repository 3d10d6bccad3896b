"""The JobManager: a named, detached Ray actor that owns job state.

State lives in SQLite (WAL) under the data dir, so jobs survive a restart of this actor, of the Serve app and
of the whole ``stylecast serve`` process: completed jobs stay listed and downloadable, queued jobs run, and
jobs that were *processing* when the process died are re-run from the start (their inputs are still on disk
and the engine is deterministic), at most MAX_INTERRUPTIONS times: the next interruption fails it with
``code: interrupted``.

Jobs run FIFO with bounded concurrency, each in a thread of this (threaded) actor that drives the Ray
pipeline; stage and progress come from the pipeline's events; a configurable deadline fails a job that runs
too long.  Terminal jobs are announced by signed webhooks, sent by a background sender that never slows
job processing.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import time
import traceback
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from serve_app.models import ACTIVE, STAGE_WEIGHTS, STAGES, TERMINAL, CreateJobRequest, Envelope, utcnow
from serve_app.store import JobRecord, Store, database_file
from serve_app.webhooks import WebhookSender, check_webhook_url, parse_secret
from stylecast.errors import ApiError, CancelledError, StylecastError, error_code
from stylecast.options import Options

JOB_MANAGER_NAME = "stylecast-jobmanager"
MAX_INTERRUPTIONS = 2  # a job interrupted by restarts is re-run this many times, then failed
# The stage actors hold the cluster's CPUs (one chunk worker per core); they are kept warm between jobs, and
# released when no job has run for this long, so that other drivers' jobs (and the autoscaler) get the CPUs.
POOL_IDLE_S = 60.0
PURGE_EVERY_S = 3600.0


def _ray_connection_lost() -> bool:
    """True when this process can no longer talk to its raylet (a put goes through it)."""
    try:
        ray.put(None)
        return False
    except Exception:  # noqa: BLE001 - whatever the failure, the connection is unusable
        return True


def request_hash(req: CreateJobRequest) -> str:
    """Fingerprint of what a create request asks for, after validation: ``1`` and ``1.0``, key order, and
    options left out or given as their defaults are the same request."""
    body = req.model_dump(mode="json")
    body["options"] = (req.options or Options()).model_dump(mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# Restarted whenever its process dies, but a call is never re-run by Ray: a call that killed the process would
# kill every restart in turn, and a create_job re-run after the job was stored would make a second job.  The
# caller sees the call fail (the API answers 503, to be retried; Idempotency-Key makes that safe).
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=32)
class JobManager:
    def __init__(self, data_dir: str, **settings) -> None:
        """``settings``: those of `configure` (they may change later; the data dir and database may not)."""
        self.data_dir = Path(data_dir)
        (self.data_dir / "outputs").mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.get("db_path") or self.data_dir)
        # The webhook secret and private-address switch come from the service that starts this actor (on a
        # cluster this process does not have its environment), else from this process's own.
        settings["webhook_secret"] = settings.get("webhook_secret") or os.environ.get("STYLECAST_WEBHOOK_SECRET")
        if settings.get("allow_private_webhooks") is None:
            settings["allow_private_webhooks"] = os.environ.get("STYLECAST_ALLOW_PRIVATE_WEBHOOKS") == "1"
        self.sender = WebhookSender(self.store, None)  # its key, schedule and checks: configure below
        self._lock = threading.Lock()
        # Held from looking an Idempotency-Key up to storing it: concurrent retries (the actor serves up to
        # 32 calls at once) must find the first one's job, not create their own.
        self._idempotency_lock = threading.Lock()
        # Held from checking to changing the videos a job uses: a video deleted while a job for it is being
        # created would leave a queued job without its input (the delete must see the job, or the create 404).
        self._videos_lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._pipeline = None
        self._pipeline_lock = threading.Lock()
        self._idle_since = time.monotonic()
        self._wake = threading.Event()
        self.configure(data_dir, **settings)
        if self.sender.key is None:
            print("stylecast JobManager: no STYLECAST_WEBHOOK_SECRET: webhooks are sent unsigned", flush=True)
        self.sender.start()
        self._recover()
        threading.Thread(target=self._scheduler, name="job-scheduler", daemon=True).start()

    # ------------------------------------------------------------------------------------------ lifecycle
    def ready(self) -> bool:
        return True

    def configure(self, data_dir: str, *, max_concurrent_jobs: int = 1, job_deadline_s: float = 3600.0,
                  chunk_seconds: float | None = None, webhook_schedule_s: tuple[float, ...] | None = None,
                  pool_idle_s: float = POOL_IDLE_S, db_path: str | None = None,
                  max_active_jobs_per_key: int = 100, webhook_secret: str | None = None,
                  allow_private_webhooks: bool | None = None) -> None:
        """Take a later service start's settings (this detached actor outlives the service that made it).

        The data dir cannot change: the jobs, the queue and the uploads of this manager live there, and a
        service reading another store would not find the jobs it creates.  Raises ApiError 409 then."""
        if Path(data_dir).resolve() != self.data_dir.resolve() or \
                database_file(db_path or data_dir).resolve() != Path(self.store.path).resolve():
            raise ApiError(409, "other_data_dir",
                           f"this cluster's stylecast JobManager keeps its jobs in {self.data_dir} (database "
                           f"{self.store.path}), not {data_dir}: use that data dir, or stop the JobManager first "
                           f"(see the README)")
        self.max_concurrent = max(1, int(max_concurrent_jobs))
        self.deadline_s = float(job_deadline_s)
        self.chunk_seconds = chunk_seconds
        self.pool_idle_s = float(pool_idle_s)
        self.max_active_per_owner = int(max_active_jobs_per_key)
        if webhook_secret:  # a new secret takes effect for the next attempt (events stay queued)
            self.sender.key = parse_secret(webhook_secret)
        if allow_private_webhooks is not None:
            self.allow_private_webhooks = self.sender.allow_private = bool(allow_private_webhooks)
        if webhook_schedule_s:
            self.sender.set_schedule(webhook_schedule_s)
        self._wake.set()  # more concurrency may start queued jobs now

    def node_ip(self) -> str:
        """Where this manager runs: the API replicas are placed beside it (they read its SQLite file)."""
        return ray.util.get_node_ip_address()

    def settings(self) -> dict:
        return {"data_dir": str(self.data_dir), "db_path": str(self.store.path), "max_concurrent_jobs": self.max_concurrent,
                "job_deadline_s": self.deadline_s, "chunk_seconds": self.chunk_seconds,
                "webhook_schedule_s": list(self.sender.schedule_s), "pool_idle_s": self.pool_idle_s,
                "max_active_jobs_per_key": self.max_active_per_owner, "webhooks_signed": self.sender.key is not None,
                "allow_private_webhooks": self.allow_private_webhooks}

    def _recover(self) -> None:
        """Jobs that were processing when the previous process stopped are re-queued (or failed), and what
        their interrupted runs left in outputs/ is removed (scratch files are the ones named with a dot; no
        job runs yet, and the previous process's joiner died with it)."""
        outputs = self.data_dir / "outputs"
        for leftover in outputs.glob(".*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        for rec in self.store.jobs_by_status(["processing"]):
            (outputs / f"{rec.job_id}.mp4").unlink(missing_ok=True)
            if rec.attempts > MAX_INTERRUPTIONS:
                self._finish(rec.job_id, "failed", error=("interrupted",
                             f"the job was interrupted {rec.attempts} times by a restart of the service"))
            else:
                self.store.update_job(rec.job_id, status="queued", current_stage=None, progress=0.0,
                                      started_at=None)

    def _scheduler(self) -> None:
        purged = 0.0
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._start_queued()
                self._enforce_deadlines()
                self._release_idle_workers()
                pipeline = self._pipeline
                if pipeline is not None:  # idle pools must let a drained node go too
                    pipeline.retire_draining()
                if time.monotonic() - purged > PURGE_EVERY_S:  # expired Idempotency-Keys (kept 24 h)
                    purged = time.monotonic()
                    self.store.purge_idempotency()
            except Exception:  # noqa: BLE001 - the scheduler must keep running
                traceback.print_exc()

    def _start_queued(self) -> None:
        with self._lock:
            free = self.max_concurrent - len(self._running)
            if free <= 0:
                return
            for rec in self.store.jobs_by_status(["queued"])[:free]:
                cancel = threading.Event()
                self._running[rec.job_id] = cancel
                now = utcnow()
                self.store.update_job(rec.job_id, status="processing", started_at=now, current_stage=STAGES[0],
                                      progress=0.0, attempts=rec.attempts + 1)
                threading.Thread(target=self._run_job, args=(rec.job_id, cancel), daemon=True,
                                 name=f"job-{rec.job_id}").start()

    def _enforce_deadlines(self) -> None:
        now = time.time()
        with self._lock:
            running = list(self._running.items())
        for job_id, cancel in running:
            rec = self.store.get_job(job_id)
            if rec and rec.started_at and now - rec.started_at.timestamp() > self.deadline_s and not cancel.is_set():
                cancel.deadline = True  # type: ignore[attr-defined]
                cancel.set()

    # ------------------------------------------------------------------------------------------ running
    def _pipeline_instance(self):
        with self._pipeline_lock:  # jobs running side by side share one set of stage actors
            if self._pipeline is None:
                from actors.pipeline import Pipeline

                self._pipeline = Pipeline()
            return self._pipeline

    def _release_idle_workers(self) -> None:
        with self._lock:  # no job can start while this holds: _start_queued takes the same lock
            if self._running or self._pipeline is None or time.monotonic() - self._idle_since < self.pool_idle_s:
                return
            with self._pipeline_lock:
                pipeline, self._pipeline = self._pipeline, None
        pipeline.shutdown()

    def _run_job(self, job_id: str, cancel: threading.Event) -> None:
        rec = self.store.get_job(job_id)
        t0 = time.perf_counter()
        out = self.data_dir / "outputs" / f"{job_id}.mp4"
        last_write = [0.0, None]

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in STAGE_WEIGHTS:
                return
            before = sum(STAGE_WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])
            pct = before + STAGE_WEIGHTS[stage] * (done / max(total, 1))
            now = time.monotonic()
            if stage != last_write[1] or now - last_write[0] > 0.3 or done == total:
                last_write[0], last_write[1] = now, stage
                self.store.update_job(job_id, only_if_status=("processing",), current_stage=stage,
                                      progress=round(min(pct, 99.9), 2))

        try:
            src = self.store.get_video(rec.video_id, rec.owner)
            tpl = self.store.get_video(rec.template_video_id, rec.owner)
            if src is None or tpl is None:
                raise ApiError(404, "video_missing", "an input video of this job no longer exists")
            options = Options.model_validate(rec.options or {})
            result = self._pipeline_instance().run(src.path, tpl.path, out, options, chunk_seconds=self.chunk_seconds,
                                                   progress=progress, cancel=cancel)
            self._finish(job_id, "completed", style=result.style.model_dump(mode="json"), output=str(out),
                         timings=result.stage_seconds, elapsed=time.perf_counter() - t0)
        except CancelledError:
            if getattr(cancel, "deadline", False):
                self._finish(job_id, "failed", error=("deadline_exceeded",
                             f"the job ran longer than its deadline of {self.deadline_s:g} s"),
                             elapsed=time.perf_counter() - t0)
            else:
                self._finish(job_id, "cancelled", elapsed=time.perf_counter() - t0)
        except StylecastError as exc:  # an ApiError too: its message is its str
            self._finish(job_id, "failed", error=(error_code(exc), str(exc)), elapsed=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a job failure must never take the manager down
            if _ray_connection_lost():
                # This process is being torn down (killed, or its node is going away) and its Ray calls fail
                # on the way out: the job was interrupted, not failed.  It stays "processing", so the next
                # JobManager re-runs it (as it would had the process died before noticing).
                return
            traceback.print_exc()
            self._finish(job_id, "failed", error=("internal_error", f"{type(exc).__name__}: {exc}"),
                         elapsed=time.perf_counter() - t0)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                if not self._running:
                    self._idle_since = time.monotonic()
            if out.exists() and self.store.get_job(job_id).status != "completed":
                out.unlink(missing_ok=True)
            self._wake.set()

    def _finish(self, job_id: str, status: str, *, style=None, output=None, timings=None, elapsed=None,
                error: tuple[str, str] | None = None) -> None:
        now = utcnow()
        fields = dict(status=status, completed_at=now, current_stage=None)
        if status == "completed":
            fields.update(progress=100.0, style_json=style, output_path=output, stage_timings=timings or {})
        if error is not None:
            fields.update(error_code=error[0], error_message=error[1])
        if elapsed is not None:
            fields.update(processing_time_seconds=round(elapsed, 3))
        # Only an active job can end: a late report must not overwrite a job that already ended.
        if self.store.update_job(job_id, only_if_status=ACTIVE, **fields) is None:
            return
        rec = self.store.get_job(job_id)
        if rec.webhook_url:
            body = Envelope(success=True, message=f"job {status}",
                            data=self.store.to_response(rec).model_dump(mode="json")).model_dump(mode="json")
            self.sender.enqueue(job_id, rec.webhook_url, body)

    # ------------------------------------------------------------------------------------------ API
    def create_job(self, owner: str, body: dict, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Validate and queue a job; returns (JobResponse as dict, created).  Raises ApiError."""
        req = CreateJobRequest.model_validate(body)
        if req.webhook_url:  # before any lock: it may wait on DNS, and other callers must not wait on it
            try:
                check_webhook_url(req.webhook_url, self.allow_private_webhooks)
            except ValueError as exc:
                raise ApiError(422, "invalid_webhook_url", f"webhook_url refused: {exc}", {"field": "webhook_url"}) \
                    from None
        if not idempotency_key:
            return self._create_job(owner, req, None)
        with self._idempotency_lock:
            seen = self.store.get_idempotency(owner, idempotency_key)
            if seen is not None:
                if seen[0] != request_hash(req):
                    raise ApiError(409, "idempotency_conflict",
                                   "this Idempotency-Key was used with a different request body")
                rec = self.store.get_job(seen[1], owner)
                if rec is not None:
                    return self.store.to_response(rec).model_dump(mode="json"), False
            return self._create_job(owner, req, idempotency_key)

    def _create_job(self, owner: str, req: CreateJobRequest, idempotency_key: str | None) -> tuple[dict, bool]:
        now = utcnow()
        rec = JobRecord(job_id=f"job_{uuid.uuid4().hex[:20]}", owner=owner, status="queued", current_stage=None,
                        progress=0.0, video_id=req.video_id, template_video_id=req.template_video_id,
                        options=(req.options or Options()).model_dump(mode="json"), webhook_url=req.webhook_url,
                        created_at=now, updated_at=now)
        with self._videos_lock:  # also makes the count below exact: job creation is one at a time
            for vid, role in ((req.video_id, "video_id"), (req.template_video_id, "template_video_id")):
                if self.store.get_video(vid, owner) is None:
                    raise ApiError(404, "video_not_found", f"{role} {vid!r} does not exist", {"field": role})
            limit = self.max_active_per_owner
            if limit and self.store.list_jobs(owner, ACTIVE, 1, 1)[1] >= limit:
                raise ApiError(429, "too_many_active_jobs",
                               f"this API key already has {limit} queued or processing jobs (the limit); create "
                               f"more when some have finished", {"limit": limit}, headers={"Retry-After": "30"})
            self.store.add_job(rec)
        if idempotency_key:
            self.store.put_idempotency(owner, idempotency_key, request_hash(req), rec.job_id)
        self._wake.set()
        return self.store.to_response(rec).model_dump(mode="json"), True

    def cancel_job(self, owner: str, job_id: str) -> dict:
        with self._lock:
            rec = self.store.get_job(job_id, owner)
            if rec is None:
                raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
            if rec.status in TERMINAL:
                raise ApiError(409, "job_terminal", f"job {job_id} is already {rec.status}")
            cancel = self._running.get(job_id)
            if cancel is None:  # queued: never started
                self._finish(job_id, "cancelled")
        if cancel is not None:
            cancel.set()
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and job_id in self._running:
                time.sleep(0.05)
        rec = self.store.get_job(job_id)
        if rec.status in TERMINAL and rec.status != "cancelled":  # it ended on its own before it could stop
            raise ApiError(409, "job_terminal", f"job {job_id} {rec.status} before it could be cancelled")
        return self.store.to_response(rec).model_dump(mode="json")

    def delete_video(self, owner: str, video_id: str) -> None:
        rec = self.store.get_video(video_id, owner)
        if rec is None:
            raise ApiError(404, "video_not_found", f"video {video_id!r} does not exist")
        with self._videos_lock:
            if self.store.video_in_active_job(video_id):
                raise ApiError(409, "video_in_use", f"video {video_id} is used by a queued or processing job")
            self.store.delete_video(video_id, owner)
        # Only files that uploads put under the data dir are ours to delete; a video registered in place
        # (actors.client.submit_job) is the researcher's own file and stays.
        path = Path(rec.path).resolve()
        uploads = (self.data_dir / "videos").resolve()
        if uploads in path.parents:
            path.unlink(missing_ok=True)
            if path.parent != uploads and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def cube(self, owner: str, job_id: str) -> bytes:
        from stylecast.color import write_cube
        from stylecast.style import StyleJSON

        rec = self.store.get_job(job_id, owner)
        if rec is None:
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        if rec.status != "completed" or not rec.style_json or not rec.style_json.get("color"):
            raise ApiError(409, "no_look", f"job {job_id} has no extracted colour look (status {rec.status})")
        style = StyleJSON.model_validate(rec.style_json)
        buf = io.StringIO()
        write_cube(style.color.look_lut.to_array(), buf, title=f"stylecast look of job {job_id}")
        return buf.getvalue().encode()

    def register_video(self, owner: str, path: str, filename: str | None = None) -> dict:
        """Register a video file that is already on the cluster's storage (no copy: the record keeps ``path``);
        probed like an upload.  Returns the VideoResponse as a dict.  Used by `actors.client.submit_job`."""
        from serve_app.store import VideoRecord
        from stylecast.errors import MediaError
        from stylecast.media.probe import probe

        if not os.path.isabs(path):
            raise ApiError(422, "invalid_path", f"{path}: the path must be absolute (as the cluster sees it)",
                           {"field": "path"})
        if not os.path.isfile(path):
            raise ApiError(422, "invalid_video", f"{path}: no such file on the cluster's storage", {"field": "path"})
        try:
            info = probe(path)
        except MediaError as exc:
            raise ApiError(422, "invalid_video", str(exc), {"field": "path"}) from None
        rec = VideoRecord(video_id=f"vid_{uuid.uuid4().hex[:20]}", owner=owner, filename=filename or Path(path).name,
                          path=path, size=os.path.getsize(path), duration=info.duration_s, fps=info.fps,
                          width=info.display_width, height=info.display_height, has_audio=info.audio is not None,
                          created_at=utcnow())
        self.store.add_video(rec)
        return rec.to_response().model_dump(mode="json")

    def get_job(self, owner: str, job_id: str) -> dict:
        """The JobResponse as a dict (ApiError 404 when missing)."""
        rec = self.store.get_job(job_id, owner)
        if rec is None:
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        return self.store.to_response(rec).model_dump(mode="json")

    def get_result(self, owner: str, job_id: str) -> dict:
        """The JobDetailResponse as a dict (ApiError 404 when missing)."""
        rec = self.store.get_job(job_id, owner)
        if rec is None:
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        url = f"/api/v1/jobs/{job_id}/output" if rec.status == "completed" else None
        return self.store.to_detail(rec, url).model_dump(mode="json")

    def get_output_path(self, owner: str, job_id: str) -> str:
        """Where the completed job's output video is, as the cluster sees it (the Ray client's download)."""
        rec = self.store.get_job(job_id, owner)
        if rec is None:
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        return rec.output_file()

    def stats(self) -> dict:
        with self._lock:
            return {"running": list(self._running), "max_concurrent_jobs": self.max_concurrent,
                    "workers_held": self._pipeline is not None}


def get_or_create_job_manager(data_dir: str, **kwargs):
    """The named, detached JobManager of this Ray namespace, created on first use, and given these settings
    when it already runs (``get_if_exists`` alone would keep the first service's).  Raises `StylecastError`
    when it runs with another data dir."""
    from cluster.connect import NAMESPACE

    data_dir = str(Path(data_dir).resolve())
    if kwargs.get("db_path"):
        kwargs["db_path"] = str(Path(kwargs["db_path"]).resolve())
    # On the head node when it can (soft: it may move if the head is gone): the node a cluster's admin knows,
    # whose local disk can hold the database.
    head = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
    placement = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=head[0], soft=True)} if head else {}
    # The caller's webhook settings travel with the call: on a cluster the manager's process does not see the
    # environment of the `stylecast serve` that starts it.
    secret = os.environ.get("STYLECAST_WEBHOOK_SECRET") or None
    if secret:
        try:  # a malformed secret fails this start, with the reason, not the actor's constructor
            parse_secret(secret)
        except ValueError as exc:
            raise StylecastError(f"STYLECAST_WEBHOOK_SECRET: {exc}") from None
        kwargs.setdefault("webhook_secret", secret)
    if os.environ.get("STYLECAST_ALLOW_PRIVATE_WEBHOOKS") is not None:
        kwargs.setdefault("allow_private_webhooks", os.environ["STYLECAST_ALLOW_PRIVATE_WEBHOOKS"] == "1")
    manager = JobManager.options(name=JOB_MANAGER_NAME, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True, **placement).remote(data_dir, **kwargs)
    if not hasattr(manager, "configure"):  # started by an older stylecast, which had no such method
        raise StylecastError(f"the JobManager running on this cluster is from an older stylecast: stop it first "
                             f"(python -c \"import ray; ray.init(address='auto', namespace='{NAMESPACE}'); "
                             f"ray.kill(ray.get_actor('{JOB_MANAGER_NAME}'))\")")
    try:
        ray.get(manager.configure.remote(data_dir, **kwargs))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ApiError):
            raise StylecastError(cause.message) from None
        raise
    return manager


__all__ = ["JobManager", "ApiError", "JOB_MANAGER_NAME", "get_or_create_job_manager", "ACTIVE"]
