"""A small Python client for the stylecast REST API (``stylecast serve``).

    from stylecast.sdk import Client

    with Client("http://127.0.0.1:8000", api_key="...") as c:
        src = c.upload("source.mp4")
        tpl = c.upload("template.mp4")
        job = c.create_job(src["video_id"], tpl["video_id"], options={"max_duration_s": 10})
        job = c.wait(job["job_id"], progress=lambda stage, pct: print(stage, pct))
        if job["status"] == "completed":
            c.download(job["job_id"], "out.mp4")

Every method returns the ``data`` of the server's envelope.  A refused request raises `ApiError` (HTTP status,
the error code and the server's message); a server that cannot be reached raises `ServerUnreachable` (an
`ApiError` with status 0).  Uploads are streamed from disk and downloads streamed to disk: neither is held in
memory, and a download appears at its path only when complete.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from stylecast.errors import ApiError, StylecastError
from stylecast.options import Options, options_payload
from stylecast.paths import atomic_output, check_replaceable

API = "/api/v1"
DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = ("completed", "failed", "cancelled")
CHUNK = 1024 * 1024

BytesProgress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer proceeds."""
StageProgress = Callable[[str, float], None]
"""Called with (stage, progress 0-100) whenever a job's stage or progress changes."""


class ServerUnreachable(ApiError):
    """No connection to the server (refused, DNS, connect timeout): ``status`` is 0."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, "unreachable", f"the stylecast server is unreachable at {url}: {reason}")
        self.url = url


class _CallbackFailed(Exception):
    """An exception raised by the caller's own progress callback, carried out past the SDK's handlers of
    read, write and transport errors (an OSError from the callback is not the file's) and re-raised as is."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _report(progress: BytesProgress, done: int, total: int) -> None:
    try:
        progress(done, total)
    except Exception as exc:  # noqa: BLE001 - the caller's own error, re-raised unchanged by the caller of this
        raise _CallbackFailed(exc) from exc


def _restarting(exc: ApiError) -> bool:
    """An answer a restarting server gives: no connection, a gateway error, or a 404 that is not the API's
    (the API's own errors come in its envelope with a code; the proxy's say only ``http_error``)."""
    return exc.status in (0, 502, 503, 504) or (exc.status == 404 and exc.code == "http_error")


class Client:
    def __init__(self, base_url: str = DEFAULT_SERVER, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    # ------------------------------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transport_error(self, exc: httpx.TransportError) -> ApiError:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
            return ServerUnreachable(self.base_url, str(exc) or type(exc).__name__)
        return ApiError(0, "transport_error", f"request to {self.base_url} failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _error(resp: httpx.Response) -> ApiError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("success") is False:
            error = body.get("error") or {}
            return ApiError(resp.status_code, error.get("code") or "http_error",
                            body.get("message") or f"HTTP {resp.status_code}", error.get("detail"))
        text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason_phrase
        return ApiError(resp.status_code, "http_error", f"HTTP {resp.status_code}: {text}")

    @staticmethod
    def _path(collection: str, item_id: str, *rest: str) -> str:
        """The API path of one video or job: the id percent-encoded, so an id with ``/``, ``?`` or ``..`` in it
        names that (missing) item and never another endpoint."""
        if not str(item_id):
            raise StylecastError(f"an empty {collection[:-1]} id")
        segment = quote(str(item_id), safe="")
        if segment.strip(".") == "":  # "." and ".." would be resolved away as dot segments
            segment = segment.replace(".", "%2E")
        return "/".join((API, collection, segment, *rest))

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if resp.status_code >= 400:
            raise self._error(resp)
        return resp

    def _data(self, method: str, path: str, **kwargs) -> Any:
        resp = self._request(method, path, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            raise ApiError(resp.status_code, "bad_response", f"the server sent no JSON for {method} {path}") from None
        if not isinstance(body, dict) or "data" not in body:
            raise ApiError(resp.status_code, "bad_response", f"the server sent no envelope for {method} {path}")
        return body["data"]

    # ------------------------------------------------------------------------------------------ health
    def ready(self) -> bool:
        """True when the service answers /readyz with 200."""
        try:
            self._request("GET", "/readyz")
        except ApiError:
            return False
        return True

    # ------------------------------------------------------------------------------------------ videos
    def upload(self, path: str | os.PathLike, progress: BytesProgress | None = None,
               idempotency_key: str | None = None) -> dict:
        """Upload a video (streamed from disk as multipart ``file``); returns the VideoResponse.

        With ``idempotency_key``, a retry of the same file returns the video the first upload made."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise StylecastError(f"{path}: {exc.strerror}") from None
        if not path.is_file():
            raise StylecastError(f"{path}: not a file")
        boundary = uuid.uuid4().hex
        name = path.name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_") or "upload"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            sent = 0
            yield head
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
                    sent += len(chunk)
                    if progress is not None:
                        _report(progress, sent, size)
            if progress is not None and size == 0:
                _report(progress, 0, 0)
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            return self._data("POST", f"{API}/videos", content=body(), headers=headers)
        except _CallbackFailed as exc:
            raise exc.error from exc.error.__cause__
        except OSError as exc:  # reading the file while it streams (the request itself fails as ApiError)
            raise StylecastError(f"{path}: cannot read: {exc.strerror or exc}") from None

    def get_video(self, video_id: str) -> dict:
        return self._data("GET", self._path("videos", video_id))

    def list_videos(self, page: int = 1, page_size: int = 20) -> dict:
        return self._data("GET", f"{API}/videos", params={"page": page, "page_size": page_size})

    def delete_video(self, video_id: str) -> None:
        self._data("DELETE", self._path("videos", video_id))

    # ------------------------------------------------------------------------------------------ jobs
    def create_job(self, video_id: str, template_video_id: str, options: Options | dict | str | None = None,
                   webhook_url: str | None = None, idempotency_key: str | None = None) -> dict:
        """Queue a job; returns its JobResponse (the existing job when the Idempotency-Key was seen before)."""
        body: dict[str, Any] = {"video_id": video_id, "template_video_id": template_video_id}
        if options is not None:
            body["options"] = options_payload(options)
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._data("POST", f"{API}/jobs", json=body, headers=headers)

    def get_job(self, job_id: str) -> dict:
        """The JobResponse: status, current_stage, progress, …"""
        return self._data("GET", self._path("jobs", job_id))

    def result(self, job_id: str) -> dict:
        """The JobDetailResponse: the job plus style_json, output_url, error, timings."""
        return self._data("GET", self._path("jobs", job_id, "result"))

    def list_jobs(self, page: int = 1, page_size: int = 20, status: str | None = None) -> dict:
        """One page: ``{items, page, page_size, total, pages}``, newest first."""
        params: dict[str, Any] = {"page": page, "page_size": page_size}
        if status is not None:
            params["status"] = status
        return self._data("GET", f"{API}/jobs", params=params)

    def cancel(self, job_id: str) -> dict:
        return self._data("POST", self._path("jobs", job_id, "cancel"))

    def wait(self, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
             progress: StageProgress | None = None, outage_s: float = 120.0) -> dict:
        """Poll until the job is completed, failed or cancelled; returns the final JobResponse.

        ``progress(stage, pct)`` is called whenever the stage or the progress changes.  Raises `TimeoutError`
        after ``timeout_s`` (the job keeps running).  A server that is restarting (no connection, 502-504, or
        the HTTP proxy's own 404 before the API is deployed) is polled on for up to ``outage_s`` seconds: jobs
        survive restarts."""
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last: tuple[str | None, float] = (None, 0.0)
        down_since: float | None = None
        while True:
            try:
                job = self.get_job(job_id)
            except ApiError as exc:
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                if not _restarting(exc) or now - down_since > outage_s:
                    raise
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"job {job_id}: no answer from the server when the {timeout_s:g} s timeout "
                                       f"ran out (none for the last {now - down_since:.0f} s)") from exc
                time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - now)))
                continue
            down_since = None
            stage, pct = job.get("current_stage"), float(job.get("progress") or 0.0)
            if job["status"] in TERMINAL:
                # The final record has no stage: close the last bar at 100 % when the job completed.
                if progress is not None and job["status"] == "completed" and last[0] and last[1] < 100.0:
                    progress(last[0], 100.0)
                return job
            if progress is not None and stage is not None and (stage, pct) != last:
                progress(stage, pct)
            if stage is not None:
                last = (stage, pct)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s:g} s")
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    def download(self, job_id: str, path: str | os.PathLike, progress: BytesProgress | None = None) -> Path:
        """Stream a completed job's MP4 to ``path`` (via a temporary file in the same folder, then renamed:
        nothing is left at ``path`` if the download fails).  Returns the path."""
        out = Path(path)
        if out.is_dir():
            raise StylecastError(f"{out}: is a directory")
        check_replaceable(out)
        try:
            return self._download_to(job_id, out, progress)
        except _CallbackFailed as exc:
            raise exc.error from exc.error.__cause__
        except OSError as exc:  # the local side: a folder that cannot be made, a full disk, no permission
            raise StylecastError(f"{out}: cannot write the download: {exc.strerror or exc}") from None

    def _download_to(self, job_id: str, out: Path, progress: BytesProgress | None) -> Path:
        with atomic_output(out) as tmp, open(tmp, "xb") as fh:  # the file mode follows the umask
            try:
                with self._http.stream("GET", self._path("jobs", job_id, "output")) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise self._error(resp)
                    total = int(resp.headers.get("content-length") or 0)
                    done = 0
                    for chunk in resp.iter_bytes(CHUNK):
                        fh.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            _report(progress, done, total)
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None
            if total and done != total:
                raise ApiError(0, "incomplete_download", f"the download of job {job_id} ended after {done} "
                                                         f"of {total} bytes")
            fh.flush()
            os.fsync(fh.fileno())
        return out

    def style_cube(self, job_id: str) -> str:
        """The job's colour look as an Adobe/Resolve .cube LUT (text)."""
        return self._request("GET", self._path("jobs", job_id, "style.cube")).text

    def webhook_deliveries(self, job_id: str) -> list[dict]:
        """Every attempt to deliver the job's webhook, oldest first."""
        return self._data("GET", self._path("jobs", job_id, "webhook-deliveries"))


__all__ = ["Client", "ApiError", "ServerUnreachable", "DEFAULT_SERVER", "TERMINAL"]
