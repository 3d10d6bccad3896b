"""The REST API: a FastAPI app (ingress of the Ray Serve deployment in `serve_app.deployment`).

Handlers only validate, authenticate and delegate: reads come straight from the SQLite store that the
JobManager keeps fresh (fast, no actor round trip), writes go to the JobManager actor.  Every response is
the envelope ``{success, message, data}``; errors add ``error: {code, detail}`` and never a 500 for bad input.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.config import ServiceConfig
from serve_app.models import TERMINAL, Envelope, VideoResponse, utcnow
from stylecast.errors import ApiError, validation_errors

API = "/api/v1"
_CHUNK = 1024 * 1024


class Service:
    """What a replica holds: the config, the store (reads), the JobManager handle (writes)."""

    def __init__(self, config: ServiceConfig, job_manager=None) -> None:
        from serve_app.store import Store

        self.config = config
        self.data_dir = Path(config.data_dir)
        (self.data_dir / "videos").mkdir(parents=True, exist_ok=True)
        self.store = Store(config.database())
        self.job_manager = job_manager

    async def call(self, method: str, *args):
        """Call a JobManager method; its failures come back as the ApiError they stand for (503 when the
        manager restarted during the call: the client retries, safely with an Idempotency-Key)."""
        import ray

        from actors.client import manager_error

        try:
            return await getattr(self.job_manager, method).remote(*args)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            error = manager_error(exc, method)
            if error is None:
                raise
            raise error from None


SERVICE: Service | None = None
app = FastAPI(title="stylecast", version="1", description="Video style transfer jobs: upload a source and a "
              "template video, create a job, follow its stage and progress, download the result.")


def _openapi() -> dict:
    from serve_app.openapi import build_openapi

    return build_openapi(app)


app.openapi = _openapi  # bodies, parameters and envelopes that the raw-request handlers read themselves


def ok(data, message: str = "ok", status: int = 200) -> JSONResponse:
    return JSONResponse(Envelope(success=True, message=message, data=data).model_dump(mode="json"),
                        status_code=status)


def err(status: int, code: str, message: str, detail=None, headers: dict | None = None) -> JSONResponse:
    body = {"success": False, "message": message, "data": None, "error": {"code": code, "detail": detail}}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=headers or None)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return err(exc.status, exc.code, exc.message, exc.detail, exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    errors = validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return err(400, "malformed_json", "the request body is not valid JSON", errors)
    return err(422, "validation_error", "; ".join(f"{'.'.join(e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                                                   for e in errors), errors)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    codes = {404: "not_found", 405: "method_not_allowed"}
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Allow: every method of the path (Starlette names only its first route's)
        methods = {m for r in request.app.router.routes
                   if getattr(r, "methods", None) and r.path_regex.match(request.url.path) for m in r.methods}
        headers["Allow"] = ", ".join(sorted(methods))
    return err(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers=headers)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception):
    return err(500, "internal_error", f"internal error: {type(exc).__name__}")


def service() -> Service:
    if SERVICE is None:
        raise ApiError(503, "not_ready", "the service is starting")
    return SERVICE


def owner_of(request: Request) -> str:
    """The API key's name ('' on an open server); 401 when keys are configured and none/invalid is given."""
    keys = service().config.api_keys
    if not keys:
        return ""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token.strip() not in keys:
        raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
    return keys[token.strip()]


MAX_PAGE = 10**9


def _query(request: Request, name: str) -> str | None:
    """A query parameter given at most once (``?page=1&page=2`` is refused, not read as one of them)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(422, "validation_error", f"{name} is given {len(values)} times; give it once", {"field": name})
    return values[0] if values else None


_DIGITS = re.compile(r"[0-9]{1,30}")  # ASCII digits only: int() would also take "1_0", " 5" and "５"


def _page_args(request: Request) -> tuple[int, int]:
    def number(name: str, default: int, lo: int, hi: int | None) -> int:
        raw = _query(request, name)
        if raw is None:
            return default
        if not _DIGITS.fullmatch(raw):
            raise ApiError(422, "validation_error", f"{name} must be an integer", {"field": name})
        value = int(raw)
        if value < lo or (hi is not None and value > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ApiError(422, "validation_error", f"{name} must be in {rng}", {"field": name})
        return value

    # page is bounded so that the row offset stays a 64-bit integer (SQLite's OFFSET).
    return number("page", 1, 1, MAX_PAGE), number("page_size", 20, 1, 100)


def _page(items, total: int, page: int, page_size: int) -> dict:
    return {"items": items, "page": page, "page_size": page_size, "total": total,
            "pages": max(1, math.ceil(total / page_size)) if total else 0}


# ------------------------------------------------------------------------------------------------ health
@app.get("/healthz", tags=["health"])
async def healthz():
    return ok({"status": "ok"})


@app.get("/readyz", tags=["health"])
async def readyz():
    svc = service()
    try:
        svc.store.count_jobs() if hasattr(svc.store, "count_jobs") else svc.store.list_jobs("", None, 1, 1)
        if svc.job_manager is not None:
            await svc.job_manager.ready.remote()
    except Exception as exc:  # noqa: BLE001
        return err(503, "not_ready", f"not ready: {type(exc).__name__}")
    return ok({"status": "ready"})


# ------------------------------------------------------------------------------------------------ videos
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@app.post(f"{API}/videos", status_code=201, tags=["videos"])
async def upload_video(request: Request):
    """Multipart upload (field ``file``), streamed to storage; probed; refused (422) if not a usable video."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    from stylecast.errors import MediaError
    from stylecast.media.probe import probe
    from serve_app.store import VideoRecord

    svc = service()
    owner = owner_of(request)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "unsupported_media_type", "upload the video as multipart/form-data with a 'file' field")
    key = _idempotency_key(request)
    limit = svc.config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ApiError(413, "too_large", f"the upload is larger than the limit of {limit} bytes")

    video_id = f"vid_{uuid.uuid4().hex[:20]}"
    folder = svc.data_dir / "videos" / video_id
    folder.mkdir(parents=True, exist_ok=True)
    state = {"name": None, "filename": None, "fh": None, "size": 0, "too_large": False, "found": False,
             "header_field": b"", "header_value": b"", "headers": {}}
    digest = hashlib.sha256()  # of the file's bytes: what an Idempotency-Key's retries must repeat

    def on_header_field(data, start, end):
        state["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        state["header_value"] += data[start:end]

    def on_header_end():
        state["headers"][state["header_field"].decode("latin-1").lower()] = state["header_value"]
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        if name == "file" and not state["found"]:
            state["found"] = True
            raw = disp.get(b"filename", b"upload").decode("utf-8", "replace")
            # "." and ".." name no file (Path("..").name is ".."): they are stored as "upload", like no name.
            name = Path(raw).name
            state["filename"] = name if name.strip(".") else "upload"
            safe = _SAFE.sub("_", state["filename"])[-120:] or "upload"
            state["fh"] = open(folder / safe, "wb")  # noqa: SIM115 - closed in on_part_end / finally
            state["path"] = folder / safe

    def on_part_data(data, start, end):
        if state["fh"] is None or state["too_large"]:
            return
        state["size"] += end - start
        if state["size"] > limit:
            state["too_large"] = True
            return
        state["fh"].write(data[start:end])
        digest.update(data[start:end])

    def on_part_end():
        if state["fh"] is not None:
            state["fh"].close()
            state["fh"] = None
        state["headers"] = {}

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if state["too_large"]:
                break
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken body is the client's problem, not a 500
        _remove(folder)
        raise ApiError(400, "bad_upload", f"the multipart body could not be read: {type(exc).__name__}") from None
    finally:
        if state["fh"] is not None:
            state["fh"].close()
    if state["too_large"]:
        _remove(folder)
        raise ApiError(413, "too_large", f"the upload is larger than the limit of {limit} bytes")
    if not state["found"]:
        _remove(folder)
        raise ApiError(422, "missing_file", "the multipart body has no 'file' field", {"field": "file"})
    try:
        info = probe(state["path"])
    except MediaError as exc:
        _remove(folder)
        raise ApiError(422, "invalid_video", str(exc), {"field": "file"}) from None
    rec = VideoRecord(video_id=video_id, owner=owner, filename=state["filename"], path=str(state["path"]),
                      size=state["size"], duration=info.duration_s, fps=info.fps, width=info.display_width,
                      height=info.display_height, has_audio=info.audio is not None, created_at=utcnow())
    svc.store.add_video(rec)
    if key is None:
        return ok(_video(rec), "video uploaded", 201)
    # Stored first, claimed second: of concurrent retries with one key, the first claim wins and the others
    # withdraw their copies.
    file_hash = digest.hexdigest()
    seen = svc.store.put_idempotency(owner, key, file_hash, video_id, scope="videos")
    same_file = seen is not None and seen[0] == file_hash
    earlier = svc.store.get_video(seen[1], owner) if same_file else None
    if seen is None or (same_file and earlier is None):  # first use, or the earlier upload was deleted since
        if seen is not None:
            svc.store.put_idempotency(owner, key, file_hash, video_id, scope="videos", replace=True)
        return ok(_video(rec), "video uploaded", 201)
    svc.store.delete_video(video_id, owner)  # a retry: withdraw this copy
    _remove(folder)
    if not same_file:
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used to upload a different file")
    return ok(_video(earlier), "video already uploaded with this Idempotency-Key", 200)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255):
        raise ApiError(422, "validation_error", "Idempotency-Key must be 1-255 characters")
    return key


def _video(rec) -> dict:
    return VideoResponse(video_id=rec.video_id, filename=rec.filename, size=rec.size, duration=rec.duration,
                         fps=rec.fps, width=rec.width, height=rec.height, has_audio=rec.has_audio,
                         created_at=rec.created_at).model_dump(mode="json")


def _remove(folder: Path) -> None:
    for p in folder.glob("*"):
        p.unlink(missing_ok=True)
    folder.rmdir() if folder.exists() else None


@app.get(f"{API}/videos/{{video_id}}", tags=["videos"])
async def get_video(video_id: str, request: Request):
    rec = service().store.get_video(video_id, owner_of(request))
    if rec is None:
        raise ApiError(404, "video_not_found", f"video {video_id!r} does not exist")
    return ok(_video(rec))


@app.get(f"{API}/videos", tags=["videos"])
async def list_videos(request: Request):
    owner = owner_of(request)
    page, size = _page_args(request)
    items, total = service().store.list_videos(owner, page, size)
    return ok(_page([_video(v) for v in items], total, page, size))


@app.delete(f"{API}/videos/{{video_id}}", tags=["videos"])
async def delete_video(video_id: str, request: Request):
    await service().call("delete_video", owner_of(request), video_id)
    return ok(None, "video deleted")


# ------------------------------------------------------------------------------------------------ jobs
@app.post(f"{API}/jobs", status_code=201, tags=["jobs"])
async def create_job(request: Request):
    svc = service()
    owner = owner_of(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the job as application/json")
    raw = await _body_at_most(request, MAX_JSON_BODY)
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "the request body must be a JSON object")
    from pydantic import ValidationError

    from serve_app.models import CreateJobRequest

    try:
        CreateJobRequest.model_validate(body)
    except ValidationError as exc:
        raise ApiError.from_validation(exc) from None
    except RecursionError:
        raise ApiError(422, "validation_error", "the request body is nested too deeply") from None
    key = _idempotency_key(request)
    job, created = await svc.call("create_job", owner, body, key)
    return ok(job, "job created" if created else "job already exists for this Idempotency-Key",
              201 if created else 200)


# A job request is a few KiB at most (options and a URL); a larger body is refused before it is buffered.
MAX_JSON_BODY = 1024 * 1024


async def _body_at_most(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the request body is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _job_or_404(job_id: str, owner: str):
    rec = service().store.get_job(job_id, owner)
    if rec is None:
        raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
    return rec


# Status polling is the hot path: the replica keeps a finished job's serialised response for a moment
# instead of reading SQLite and re-serialising on every request.  Only finished jobs: their state no longer
# changes, while an active job's must be current (a webhook receiver reads it the moment it hears "completed").
STATUS_TTL_S = 0.25
_status_cache: dict[str, tuple[float, str, bytes]] = {}


@app.get(f"{API}/jobs/{{job_id}}", tags=["jobs"])
async def get_job(job_id: str, request: Request):
    owner = owner_of(request)
    now = time.monotonic()
    hit = _status_cache.get(job_id)
    if hit is None or now - hit[0] > STATUS_TTL_S:
        rec = service().store.get_job(job_id)
        if rec is None:
            _status_cache.pop(job_id, None)
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        body = json.dumps(Envelope(success=True, message="ok", data=service().store.to_response(rec)
                                   .model_dump(mode="json")).model_dump(mode="json")).encode()
        hit = (now, rec.owner, body)
        if rec.status in TERMINAL:
            if len(_status_cache) > 10000:
                _status_cache.clear()
            _status_cache[job_id] = hit
    if hit[1] != owner:  # someone else's job is indistinguishable from no job
        raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
    return Response(hit[2], media_type="application/json")


@app.get(f"{API}/jobs/{{job_id}}/result", tags=["jobs"])
async def get_result(job_id: str, request: Request):
    rec = _job_or_404(job_id, owner_of(request))
    url = f"{API}/jobs/{job_id}/output" if rec.status == "completed" else None
    return ok(service().store.to_detail(rec, url).model_dump(mode="json"))


@app.get(f"{API}/jobs", tags=["jobs"])
async def list_jobs(request: Request):
    owner = owner_of(request)
    page, size = _page_args(request)
    status = _query(request, "status")
    if status is not None and status not in ("queued", "processing", "completed", "failed", "cancelled"):
        raise ApiError(422, "validation_error", f"status must be one of queued, processing, completed, failed, "
                                                f"cancelled; got {status!r}", {"field": "status"})
    items, total = service().store.list_jobs(owner, status, page, size)
    data = [service().store.to_response(r).model_dump(mode="json") for r in items]
    return ok(_page(data, total, page, size))


@app.post(f"{API}/jobs/{{job_id}}/cancel", tags=["jobs"])
async def cancel_job(job_id: str, request: Request):
    job = await service().call("cancel_job", owner_of(request), job_id)
    if job["status"] == "cancelled":
        return ok(job, "job cancelled")
    return ok(job, "cancellation requested: the job is stopping", 202)


@app.get(f"{API}/jobs/{{job_id}}/output", tags=["jobs"])
@app.head(f"{API}/jobs/{{job_id}}/output", tags=["jobs"])
async def get_output(job_id: str, request: Request):
    path = _job_or_404(job_id, owner_of(request)).output_file()
    info = os.stat(path)
    response = FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4", stat_result=info)
    if _ignored_range(request.headers.get("range"), request.headers.get("if-range"), response, info.st_size):
        response = _WholeFileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4", stat_result=info)
    return response


def _ignored_range(header: str | None, if_range: str | None, response: FileResponse, size: int) -> bool:
    """Whether a Range header is to be ignored (RFC 9110 14.2: an unknown unit or a range set that does not
    parse is ignored and the whole file sent; 13.1.5: so is one whose If-Range validator does not match);
    raises the 416 envelope when a range starts past the end (Starlette refuses the whole set then).
    Starlette's FileResponse would answer these with a plain-text 400/416 outside the envelope."""
    from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

    if header is None:
        return False
    if if_range is not None and not response._should_use_range(if_range):
        return True
    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader:
        return True
    except RangeNotSatisfiable:
        raise ApiError(416, "range_not_satisfiable", f"the range {header!r} lies outside the file ({size} bytes)",
                       {"size": size}, headers={"Content-Range": f"bytes */{size}"}) from None
    return False


class _WholeFileResponse(FileResponse):
    """A FileResponse that does not see the request's Range header (it was found unusable)."""

    async def __call__(self, scope, receive, send) -> None:
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        await super().__call__(scope, receive, send)


@app.get(f"{API}/jobs/{{job_id}}/style.cube", tags=["jobs"])
async def get_cube(job_id: str, request: Request):
    data = await service().call("cube", owner_of(request), job_id)
    return Response(data, media_type="text/plain", headers={"content-disposition": f'attachment; filename="{job_id}.cube"'})


@app.get(f"{API}/jobs/{{job_id}}/webhook-deliveries", tags=["jobs"])
async def webhook_deliveries(job_id: str, request: Request):
    _job_or_404(job_id, owner_of(request))
    return ok([d.model_dump(mode="json") for d in service().store.list_deliveries(job_id)])
