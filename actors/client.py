"""Submit jobs from a Ray connection straight to the service's JobManager — no HTTP.

For researchers whose videos are already on the cluster's storage::

    import ray
    from actors.client import submit_job

    ray.init("ray://head:10001")            # or ray.init(address="head:6379"), or connect() below
    job = submit_job("/data/clips/source.mp4", "/data/clips/template.mp4", {"max_duration_s": 30})
    final = job.wait(timeout_s=3600)        # the JobResponse
    detail = job.result()                   # the JobDetailResponse: style_json, error, timings, …

The files are registered in place (probed, not copied: the paths must be absolute paths the cluster can read)
and the job is queued in the same FIFO as HTTP jobs, so it shows up in ``GET /api/v1/jobs`` for ``owner`` (the
API key's name; "" on a server without keys).  Errors the JobManager refuses with come back as
`serve_app.models.ApiError` (status, code, message).
"""
from __future__ import annotations

import os
import time
from typing import Any

from serve_app.models import TERMINAL, ApiError

__all__ = ["submit_job", "JobHandle", "job_manager", "connect", "ApiError"]


def connect(address: str | None = None) -> None:
    """Join the Ray cluster that runs ``stylecast serve`` (``address``, ``$RAY_ADDRESS`` or ``auto``), in the
    service's namespace; a no-op when Ray is already initialised."""
    import ray

    from cluster.connect import NAMESPACE

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", namespace=NAMESPACE,
                 log_to_driver=False)


def job_manager():
    """The named, detached JobManager actor of ``stylecast serve`` on the connected cluster."""
    import ray

    from actors.job_manager import JOB_MANAGER_NAME
    from cluster.connect import NAMESPACE

    if not ray.is_initialized():
        connect()
    try:
        return ray.get_actor(JOB_MANAGER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise RuntimeError(f"no stylecast JobManager ({JOB_MANAGER_NAME!r} in namespace {NAMESPACE!r}) on this Ray "
                           f"cluster: is `stylecast serve` running on it?") from None


_READS = {"get_job", "get_result", "stats", "settings", "ready"}  # safe to ask again
_RESTART_WAIT_S = 30.0


def manager_error(exc: BaseException, method: str) -> ApiError | None:
    """The ApiError a failed JobManager call stands for (the REST API answers the same), or None.

    The manager's own ApiError comes back as itself, a pydantic ValidationError as 422, and the manager's
    process dying during the call as 503 ``job_manager_restarting``: Ray restarts it, but whether the call took
    effect is unknown, so it is not re-run behind the caller's back."""
    import ray

    if isinstance(exc, ray.exceptions.RayActorError):
        return ApiError(503, "job_manager_restarting", f"the job manager restarted during {method}; retry it "
                        "(with the same Idempotency-Key, if any)", headers={"Retry-After": "2"})
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if isinstance(cause, ApiError):
        return cause
    if cause is not None and type(cause).__name__ == "ValidationError":
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                  for e in cause.errors()]
        return ApiError(422, "validation_error", "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors),
                        errors)
    return None


def _call(manager, method: str, *args) -> Any:
    """``ray.get(manager.<method>.remote(*args))``, failures raised as `manager_error` says; a read whose
    manager restarted during it is asked again (for up to _RESTART_WAIT_S)."""
    import ray

    deadline = time.monotonic() + _RESTART_WAIT_S
    while True:
        try:
            return ray.get(getattr(manager, method).remote(*args))
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            if isinstance(exc, ray.exceptions.RayActorError) and method in _READS and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            error = manager_error(exc, method)
            if error is None:
                raise
            raise error from None


class JobHandle:
    """A job submitted through `submit_job`: poll, wait for, read or cancel it."""

    def __init__(self, job_id: str, owner: str = "", manager=None, job: dict | None = None) -> None:
        self.job_id = job_id
        self.owner = owner
        self._manager = manager
        self.job = job  # the JobResponse at submission

    @property
    def manager(self):
        if self._manager is None:
            self._manager = job_manager()
        return self._manager

    def status(self) -> dict:
        """The JobResponse: status, current_stage, progress, …"""
        return _call(self.manager, "get_job", self.owner, self.job_id)

    def result(self) -> dict:
        """The JobDetailResponse: the job plus style_json, output_url, error, processing time, stage timings."""
        return _call(self.manager, "get_result", self.owner, self.job_id)

    def wait(self, timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
        """Block until the job is completed, failed or cancelled; returns the final JobResponse.
        Raises `TimeoutError` after ``timeout_s`` (the job keeps running)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.status()
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} is still {job['status']} after {timeout_s:g} s")
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    def cancel(self) -> dict:
        """Cancel the job (ApiError 409 when it already ended); returns the JobResponse."""
        return _call(self.manager, "cancel_job", self.owner, self.job_id)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, owner={self.owner!r})"


def submit_job(source_path: str | os.PathLike, template_path: str | os.PathLike, options: Any = None, *,
               owner: str = "", webhook_url: str | None = None) -> JobHandle:
    """Register both files (in place) with the service's JobManager and queue a job; returns its handle.

    ``options`` is a dict or a `stylecast.options.Options`; relative paths are made absolute here, so on a
    Ray client (``ray://``) pass the paths as the cluster sees them.  Raises `ApiError` when a file is not a
    usable video (422 ``invalid_video``) or the job is refused."""
    manager = job_manager()
    src = _call(manager, "register_video", owner, os.path.abspath(os.fspath(source_path)))
    tpl = _call(manager, "register_video", owner, os.path.abspath(os.fspath(template_path)))
    body: dict[str, Any] = {"video_id": src["video_id"], "template_video_id": tpl["video_id"]}
    if options is not None:
        body["options"] = options.model_dump(mode="json", exclude_unset=True) \
            if hasattr(options, "model_dump") else dict(options)
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    job, _ = _call(manager, "create_job", owner, body, None)
    return JobHandle(job["job_id"], owner, manager, job)
