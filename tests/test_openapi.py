"""/openapi.json describes what the handlers really read and answer (they read raw requests, so FastAPI
alone would list no bodies, no query parameters and no envelopes)."""
from __future__ import annotations

import pytest

from serve_app.app import app

API = "/api/v1"


@pytest.fixture(scope="module")
def doc():
    app.openapi_schema = None
    return app.openapi()


def _resolve(doc: dict, node):
    """Every $ref in ``node`` points at a schema that exists."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            assert ref.startswith("#/components/schemas/"), ref
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
        for value in node.values():
            _resolve(doc, value)
    elif isinstance(node, list):
        for value in node:
            _resolve(doc, value)


def test_every_reference_resolves_and_no_foreign_error_shape(doc):
    _resolve(doc, doc)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "required when the server has API keys"}


def test_request_bodies_and_parameters_are_described(doc):
    create = doc["paths"][f"{API}/jobs"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateJobRequest"}
    spec = doc["components"]["schemas"]["CreateJobRequest"]
    assert set(spec["required"]) == {"video_id", "template_video_id"} and spec["additionalProperties"] is False
    assert {p["name"] for p in create["parameters"]} == {"Idempotency-Key"}
    upload = doc["paths"][f"{API}/videos"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    listing = {p["name"]: p for p in doc["paths"][f"{API}/jobs"]["get"]["parameters"]}
    assert set(listing) == {"page", "page_size", "status"}
    assert listing["page_size"]["schema"]["maximum"] == 100
    assert "cancelled" in listing["status"]["schema"]["enum"]
    output = doc["paths"][f"{API}/jobs/{{job_id}}/output"]
    assert {p["name"] for p in output["get"]["parameters"]} == {"job_id", "Range"}
    assert {"200", "206", "416"} <= set(output["get"]["responses"]) and "head" in output


def test_responses_are_envelopes_of_the_models(doc):
    get = doc["paths"][f"{API}/jobs/{{job_id}}"]["get"]["responses"]
    envelope = get["200"]["content"]["application/json"]["schema"]
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/JobResponse"}
    assert get["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    result = doc["paths"][f"{API}/jobs/{{job_id}}/result"]["get"]["responses"]["200"]
    assert result["content"]["application/json"]["schema"]["properties"]["data"]["$ref"].endswith("JobDetailResponse")
    assert "429" in doc["paths"][f"{API}/jobs"]["post"]["responses"]
    assert "202" in doc["paths"][f"{API}/jobs/{{job_id}}/cancel"]["post"]["responses"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert "422" not in op["responses"] or \
                op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorEnvelope"), \
                (path, method)
