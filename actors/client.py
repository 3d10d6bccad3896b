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

import contextlib
import os
import time
from typing import Any

from serve_app.models import TERMINAL
from stylecast.errors import ApiError

__all__ = ["submit_job", "JobHandle", "job_manager", "connect", "ApiError"]


def connect(address: str | None = None) -> None:
    """Join the Ray cluster that runs ``stylecast serve`` (``address``, ``$RAY_ADDRESS`` or ``auto``), in the
    service's namespace; a no-op when Ray is already initialised."""
    import ray

    from cluster.connect import NAMESPACE

    if not ray.is_initialized():
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(address=where, namespace=NAMESPACE, log_to_driver=False)
        except ConnectionError as exc:
            raise ApiError(0, "unreachable", f"cannot connect to the Ray cluster at {where}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


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
        raise ApiError(503, "job_manager_unavailable",
                       f"no stylecast JobManager ({JOB_MANAGER_NAME!r} in namespace {NAMESPACE!r}) on this Ray "
                       f"cluster: is `stylecast serve` running on it?") from None


_READS = {"get_job", "get_result", "get_output_path", "stats", "settings", "ready"}  # safe to ask again
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
        return ApiError.from_validation(cause)
    return None


def _call(manager, method: str, *args, restart_wait_s: float | None = None) -> Any:
    """``ray.get(manager.<method>.remote(*args))``, failures raised as `manager_error` says; a read whose
    manager restarted during it is asked again (for up to ``restart_wait_s``)."""
    import ray

    deadline = time.monotonic() + (_RESTART_WAIT_S if restart_wait_s is None else restart_wait_s)
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

    def output_path(self) -> str:
        """Where the completed job's output video is on the cluster's storage (the data dir on the share);
        `ApiError` 409 ``no_output`` while the job has not completed.  Over HTTP: ``result()["output_url"]``."""
        return _call(self.manager, "get_output_path", self.owner, self.job_id)

    def wait(self, timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
        """Block until the job is completed, failed or cancelled; returns the final JobResponse.
        Raises `TimeoutError` after ``timeout_s`` (the job keeps running)."""
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            # A restarting manager is waited for only as long as the caller's timeout leaves.
            left = _RESTART_WAIT_S if deadline is None else min(_RESTART_WAIT_S, deadline - time.monotonic())
            try:
                job = _call(self.manager, "get_job", self.owner, self.job_id, restart_wait_s=max(0.0, left))
            except ApiError as exc:
                if exc.code == "job_manager_restarting" and deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.job_id}: the job manager was restarting when the {timeout_s:g} s "
                                       "timeout ran out (the job keeps running)") from exc
                raise
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

    ``options`` is a `stylecast.options.Options`, a dict or JSON text; it is checked here first, so bad options
    register nothing.  Relative paths are made absolute here, so on a Ray client (``ray://``) pass the paths as
    the cluster sees them.  Raises `ApiError` when the options are invalid (422 ``validation_error``), a file is
    not a usable video (422 ``invalid_video``) or the job is refused; the videos this call registered are then
    removed again (never the files themselves)."""
    from pydantic import ValidationError

    from stylecast.errors import OptionsError
    from stylecast.options import Options, options_payload

    body: dict[str, Any] = {}
    if options is not None:
        try:
            body["options"] = options_payload(options)
            Options.model_validate(body["options"])
        except ValidationError as exc:
            raise ApiError.from_validation(exc) from None
        except OptionsError as exc:
            raise ApiError(422, "validation_error", str(exc)) from None
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    manager = job_manager()
    registered: list[str] = []
    try:
        for key, path in (("video_id", source_path), ("template_video_id", template_path)):
            video = _call(manager, "register_video", owner, os.path.abspath(os.fspath(path)))
            registered.append(video["video_id"])
            body[key] = video["video_id"]
        job, _ = _call(manager, "create_job", owner, body, None)
    except BaseException:
        for video_id in registered:  # what this call registered, unless a job made in the meantime uses it
            with contextlib.suppress(Exception):
                _call(manager, "delete_video", owner, video_id)
        raise
    return JobHandle(job["job_id"], owner, manager, job)
