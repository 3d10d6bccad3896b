"""The OpenAPI document of the REST API, with what the handlers read themselves.

The handlers take the raw request (uploads are streamed, bodies are validated into the error envelope), so
FastAPI cannot see their bodies, query parameters or envelopes.  This module adds them from the same pydantic
models the handlers use: request bodies, parameters, every response's envelope with its ``data`` schema, the
error envelope per status, and the optional bearer key — so a client generated from ``/openapi.json`` can
build requests and read answers.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from serve_app.models import (CreateJobRequest, ErrorEnvelope, JobDetailResponse, JobResponse, VideoResponse,
                              WebhookDelivery)

API = "/api/v1"
_REF = "#/components/schemas/{model}"

_ERRORS = {400: "malformed request (JSON, multipart)", 401: "missing or unknown API key",
           404: "no such video or job (or another key's)", 409: "conflict with the current state",
           413: "body larger than the limit", 415: "wrong content type", 416: "range outside the file",
           422: "invalid parameters or body", 429: "too many active jobs for this key", 503: "restarting; retry"}

_PAGE = [
    {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "page_size", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
]
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "retries with the same key and body return the first result (kept 24 h)"}
_RANGE = {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
          "description": "bytes=START-END (206); one that does not parse is ignored"}


def _schema(components: dict, model: type[BaseModel]) -> dict:
    """A $ref to ``model`` in components/schemas (its nested models registered there too)."""
    schema = model.model_json_schema(ref_template=_REF, mode="serialization")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return {"$ref": _REF.format(model=model.__name__)}


def _envelope(data: dict | None) -> dict:
    return {"type": "object", "required": ["success", "message", "data"],
            "properties": {"success": {"type": "boolean", "const": True}, "message": {"type": "string"},
                           "data": data if data is not None else {"type": "null"}}}


def _page_of(item: dict) -> dict:
    return {"type": "object", "required": ["items", "page", "page_size", "total", "pages"],
            "properties": {"items": {"type": "array", "items": item}, "page": {"type": "integer"},
                           "page_size": {"type": "integer"}, "total": {"type": "integer"},
                           "pages": {"type": "integer"}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    error = _schema(components, ErrorEnvelope)
    video, job = _schema(components, VideoResponse), _schema(components, JobResponse)
    detail, delivery = _schema(components, JobDetailResponse), _schema(components, WebhookDelivery)
    mp4 = {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}
    # (path, method) -> (success status, its content, error statuses, parameters, request body)
    ops: dict[tuple[str, str], tuple] = {
        (f"{API}/videos", "post"): (201, _envelope(video), (400, 401, 409, 413, 415, 422), [_IDEMPOTENCY], {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}}}),
        (f"{API}/videos", "get"): (200, _envelope(_page_of(video)), (401, 422), _PAGE, None),
        (f"{API}/videos/{{video_id}}", "get"): (200, _envelope(video), (401, 404), [], None),
        (f"{API}/videos/{{video_id}}", "delete"): (200, _envelope(None), (401, 404, 409, 503), [], None),
        (f"{API}/jobs", "post"): (201, _envelope(job), (400, 401, 404, 409, 413, 415, 422, 429, 503),
                                  [_IDEMPOTENCY], {"application/json": {"schema": _schema(components, CreateJobRequest)}}),
        (f"{API}/jobs", "get"): (200, _envelope(_page_of(job)), (401, 422), _PAGE + [
            {"name": "status", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["queued", "processing", "completed", "failed", "cancelled"]}}],
            None),
        (f"{API}/jobs/{{job_id}}", "get"): (200, _envelope(job), (401, 404), [], None),
        (f"{API}/jobs/{{job_id}}/result", "get"): (200, _envelope(detail), (401, 404), [], None),
        (f"{API}/jobs/{{job_id}}/cancel", "post"): (200, _envelope(job), (401, 404, 409, 503), [], None),
        (f"{API}/jobs/{{job_id}}/output", "get"): (200, mp4, (401, 404, 409, 416), [_RANGE], None),
        (f"{API}/jobs/{{job_id}}/output", "head"): (200, None, (401, 404, 409), [], None),
        (f"{API}/jobs/{{job_id}}/style.cube", "get"): (200, {"text/plain": {"schema": {"type": "string"}}},
                                                       (401, 404, 409, 503), [], None),
        (f"{API}/jobs/{{job_id}}/webhook-deliveries", "get"): (200, _envelope({"type": "array", "items": delivery}),
                                                               (401, 404), [], None),
    }
    for (path, method), (status, content, errors, params, body) in ops.items():
        op = doc["paths"][path][method]
        if isinstance(content, dict) and "type" in content:
            content = {"application/json": {"schema": content}}
        responses = {str(status): {"description": "success", **({"content": content} if content else {})}}
        if path.endswith("/cancel"):
            responses["202"] = {"description": "cancellation requested; the job is still stopping",
                                "content": {"application/json": {"schema": _envelope(job)}}}
        if path.endswith("/output") and method == "get":
            responses["206"] = {"description": "the requested byte range", "content": mp4}
        if (path, method) in ((f"{API}/videos", "post"), (f"{API}/jobs", "post")):
            responses["200"] = {"description": "a retry with the same Idempotency-Key: the first result",
                                "content": content}
        for code in errors:
            responses[str(code)] = {"description": _ERRORS[code],
                                    "content": {"application/json": {"schema": error}}}
        op["responses"] = responses
        op["parameters"] = [p for p in op.get("parameters", []) if p["in"] == "path"] + params
        if body:
            op["requestBody"] = {"required": True, "content": body}
    components.pop("HTTPValidationError", None)  # FastAPI's own 422 shape: never what this API answers
    components.pop("ValidationError", None)
    doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer",
                                                       "description": "required when the server has API keys"}}
    doc["security"] = [{"apiKey": []}, {}]  # a key, or none on an open server
    app.openapi_schema = doc
    return doc
