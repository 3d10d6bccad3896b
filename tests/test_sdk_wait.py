"""`Client.wait` across a server restart, against a real HTTP server on loopback that answers what a restarting
``stylecast serve`` answers: nothing at first (connection refused), then the HTTP proxy's plain-text 404 while
the API is being deployed, a 503, and then the job again."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stylecast.sdk import ApiError, Client, ServerUnreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(status: str, progress: float) -> dict:
    return {"job_id": "job_1", "status": status, "current_stage": None if status == "completed" else "rendering",
            "progress": progress}


class _Script:
    """Answers to GET /api/v1/jobs/job_1, one per request; the last one repeats."""

    def __init__(self, answers: list[tuple[int, str, bytes]]) -> None:
        self.answers, self.seen = answers, 0

    def next(self) -> tuple[int, str, bytes]:
        answer = self.answers[min(self.seen, len(self.answers) - 1)]
        self.seen += 1
        return answer


def _envelope(status: int, data=None, code: str | None = None) -> tuple[int, str, bytes]:
    body = {"success": code is None, "message": "ok" if code is None else code, "data": data}
    if code is not None:
        body["error"] = {"code": code, "detail": None}
    return status, "application/json", json.dumps(body).encode()


PROXY_404 = (404, "text/plain", b"Path '/api/v1/jobs/job_1' not found. Ping http://127.0.0.1:8000/-/routes")


def _serve(port: int, script: _Script) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, ctype, body = script.next()
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_wait_rides_out_a_restart():
    port = _free_port()
    script = _Script([PROXY_404, _envelope(503, code="not_ready"), _envelope(200, _job("processing", 50.0)),
                      _envelope(200, _job("completed", 100.0))])
    server = None

    def start_later():
        nonlocal server
        time.sleep(0.6)  # the first polls find no server at all
        server = _serve(port, script)

    starter = threading.Thread(target=start_later)
    starter.start()
    seen: list[tuple[str, float]] = []
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            job = client.wait("job_1", poll_s=0.1, timeout_s=30, progress=lambda s, p: seen.append((s, p)))
    finally:
        starter.join()
        if server is not None:
            server.shutdown()
    assert job["status"] == "completed"
    assert script.seen == 4  # the 404, the 503, processing, completed
    assert seen == [("rendering", 50.0), ("rendering", 100.0)]


def test_wait_raises_the_apis_own_errors_at_once_and_gives_up_after_the_outage_budget():
    port = _free_port()
    server = _serve(port, _Script([_envelope(404, code="job_not_found")]))
    try:
        with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ApiError) as exc:
            client.wait("job_1", poll_s=0.05, timeout_s=30)
        assert (exc.value.status, exc.value.code) == (404, "job_not_found")
    finally:
        server.shutdown()
    with Client(f"http://127.0.0.1:{_free_port()}") as client, pytest.raises(ServerUnreachable):
        client.wait("job_1", poll_s=0.05, outage_s=0.3)
    with Client(f"http://127.0.0.1:{_free_port()}") as client, pytest.raises(TimeoutError):
        client.wait("job_1", poll_s=0.05, timeout_s=0.3)
