"""The real service over HTTP on loopback: `stylecast serve` subprocesses (embedded Ray + JobManager + Serve app).

Three server starts in all (each costs 10-15 s): the open server "A" (small upload limit, loopback webhooks
allowed, a fast webhook retry schedule "0,1,2" and a signing secret), the API-key server "B" (tenancy, and
loopback webhooks refused; launched first so that its start and first job overlap A's tests), and a
stop/start of A on the same data dir for restart survival (the last test).
Webhooks go to a real HTTP receiver on loopback and their Standard Webhooks signatures are checked.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from serve_app.models import JobDetailResponse, JobResponse, VideoResponse, WebhookDelivery
from serve_app.webhooks import generate_secret, parse_secret, verify
from stylecast.color import read_cube
from stylecast.media.probe import probe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
UPLOAD_LIMIT = 2_000_000  # the clips are ~0.5 and ~0.7 MB
FAST = {"output": {"width": 160}, "max_duration_s": 3}
LONG = {"output": {"width": 640}}  # the whole 8 s source at 640 px: several seconds of processing
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
JOB_TIMEOUT_S = 120


# ------------------------------------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `stylecast serve` subprocess on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path) -> None:
        self.data_dir, self.extra_env, self.log_path = data_dir, env, log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        return self.launch().wait_ready()

    def launch(self) -> Server:
        """Start the process; `wait_ready` waits for /readyz."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECAST_") and k != "RAY_ADDRESS"}
        env.update(self.extra_env)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # A Ray temp dir of its own: with the default one, ray.init() joins whatever cluster a `ray start` on
        # this machine recorded in /tmp/ray/ray_current_cluster instead of starting the embedded one.
        self.ray_tmp = tempfile.mkdtemp(prefix="scray-", dir="/tmp")  # short: Ray's socket paths must fit
        env["RAY_TMPDIR"] = self.ray_tmp
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stylecast.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.launched = time.monotonic()
        return self

    def wait_ready(self) -> Server:
        if self.client is not None:
            return self
        assert self.proc is not None, "not launched"
        deadline = self.launched + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"stylecast serve exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"/readyz not 200 within {READY_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM; returns the exit status (killed and failed if it takes longer than STOP_TIMEOUT_S)."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                self._log.close()
                pytest.fail(f"stylecast serve did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n{self.log_tail()}")
        else:
            rc = proc.returncode
        self._log.close()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self._kill(self.proc)
            self.proc = None
            shutil.rmtree(self.ray_tmp, ignore_errors=True)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: Ray's processes go with it
        except ProcessLookupError:
            pass
        proc.wait(10)


class Receiver:
    """A real webhook receiver on loopback: records (path, headers, body) of every POST and answers 200."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.got = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                receiver.got.set()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def wait(self, n: int = 1, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    """The error envelope {success: false, message, data: null, error: {code, detail}} with this status."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert body["success"] is False, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body.get("data") is None, body
    assert isinstance(body["error"], dict) and set(body["error"]) >= {"code", "detail"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


def data(resp: httpx.Response, status: int = 200):
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert body["success"] is True and isinstance(body["message"], str), body
    return body["data"]


def upload(client: httpx.Client, path: Path, name: str | None = None, headers: dict | None = None) -> httpx.Response:
    with open(path, "rb") as fh:
        return client.post(f"{API}/videos", files={"file": (name or path.name, fh, "video/mp4")}, headers=headers)


def create_job(client: httpx.Client, vids: dict, options=None, headers=None, **extra) -> httpx.Response:
    body = {"video_id": vids["source"], "template_video_id": vids["template"], **extra}
    if options is not None:
        body["options"] = options
    return client.post(f"{API}/jobs", json=body, headers=headers)


def wait_job(client: httpx.Client, job_id: str, statuses=("completed", "failed", "cancelled"),
             timeout: float = JOB_TIMEOUT_S, headers=None, seen: list | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = data(client.get(f"{API}/jobs/{job_id}", headers=headers))
        if seen is not None:
            seen.append((job["status"], job["current_stage"], job["progress"]))
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
        time.sleep(0.15)


def wait_idle(client: httpx.Client, headers=None, timeout: float = JOB_TIMEOUT_S) -> None:
    """Until no job is queued or processing."""
    deadline = time.monotonic() + timeout
    while any(data(client.get(f"{API}/jobs", params={"status": s}, headers=headers))["total"]
              for s in ("queued", "processing")):
        assert time.monotonic() < deadline, "jobs still active"
        time.sleep(0.25)


def video_dirs(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "videos").iterdir()} if (data_dir / "videos").is_dir() else set()


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def webhook_secret() -> str:
    return generate_secret()


class ServerA:
    """Holder of the open server, so that the restart test can replace it."""

    server: Server
    data_dir: Path


@pytest.fixture(scope="module")
def b_launched(tmp_path_factory):
    """The API-key server (no STYLECAST_ALLOW_PRIVATE_WEBHOOKS), launched first so that its start overlaps A's
    tests (starting is mostly waiting); TestTenancy uses it through `b`."""
    d = tmp_path_factory.mktemp("service_b")
    server = Server(d / "data", {"STYLECAST_API_KEYS": "alice=ka,bob=kb",
                                 "STYLECAST_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}, d / "serve.log").launch()
    yield server
    server.wait_ready()
    rc = server.stop()
    assert rc == 0, server.log_tail()


@pytest.fixture(scope="module")
def a(tmp_path_factory, webhook_secret, b_launched):
    holder = ServerA()
    holder.data_dir = tmp_path_factory.mktemp("service_a")
    env = {"STYLECAST_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "STYLECAST_ALLOW_PRIVATE_WEBHOOKS": "1",
           "STYLECAST_WEBHOOK_SCHEDULE_S": "0,1,2", "STYLECAST_WEBHOOK_SECRET": webhook_secret,
           "STYLECAST_MAX_CONCURRENT_JOBS": "1"}
    holder.env = env
    holder.server = Server(holder.data_dir / "data", env, holder.data_dir / "serve.log").start()
    yield holder
    rc = holder.server.stop()
    assert rc == 0, holder.server.log_tail()


@pytest.fixture(scope="module")
def videos(a, source_clip, template_clip) -> dict:
    c = a.server.client
    src = upload(c, source_clip.path)
    tpl = upload(c, template_clip.path)
    return {"source": data(src, 201)["video_id"], "template": data(tpl, 201)["video_id"],
            "source_resp": src.json()["data"], "template_resp": tpl.json()["data"]}


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def lifecycle(a, videos, receiver, alice) -> dict:
    """One job from creation to completion, watched closely; its webhook goes to a live receiver.
    (`alice` is requested here only so that B's first job, slow like every first job, overlaps this one.)"""
    c = a.server.client
    created_at_unix = int(time.time())
    resp = create_job(c, videos, FAST, webhook_url=receiver.url)
    created = data(resp, 201)
    seen: list = []
    final = wait_job(c, created["job_id"], seen=seen)
    return {"create_resp": resp, "created": created, "seen": seen, "final": final,
            "created_at_unix": created_at_unix}


@pytest.fixture(scope="module")
def output_bytes(a, lifecycle) -> bytes:
    resp = a.server.client.get(f"{API}/jobs/{lifecycle['created']['job_id']}/output")
    assert resp.status_code == 200, resp.text[:300]
    return resp.content


# ------------------------------------------------------------------------------------------------ health, docs
def test_health_ready_and_openapi(a):
    c = a.server.client
    assert data(c.get("/healthz")) == {"status": "ok"}
    assert data(c.get("/readyz")) == {"status": "ready"}
    spec = c.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for p in (f"{API}/videos", f"{API}/videos/{{video_id}}", f"{API}/jobs", f"{API}/jobs/{{job_id}}",
              f"{API}/jobs/{{job_id}}/result", f"{API}/jobs/{{job_id}}/cancel", f"{API}/jobs/{{job_id}}/output",
              f"{API}/jobs/{{job_id}}/style.cube", f"{API}/jobs/{{job_id}}/webhook-deliveries"):
        assert p in paths, p
    docs = c.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ------------------------------------------------------------------------------------------------ lifecycle
def test_upload_response(videos, source_clip, template_clip):
    for role, clip in (("source", source_clip), ("template", template_clip)):
        v = videos[f"{role}_resp"]
        VideoResponse.model_validate(v)  # exactly the documented fields
        assert v["video_id"].startswith("vid_") and v["filename"] == clip.path.name
        assert v["size"] == clip.path.stat().st_size
        assert (v["width"], v["height"], v["fps"]) == (320, 180, 25.0)
        assert v["duration"] == pytest.approx(clip.n_frames / 25.0, abs=0.1)
        assert v["has_audio"] is True and v["created_at"]


def test_video_get_list(a, videos):
    c = a.server.client
    got = data(c.get(f"{API}/videos/{videos['source']}"))
    assert got == videos["source_resp"]
    listed = data(c.get(f"{API}/videos"))
    assert {v["video_id"] for v in listed["items"]} >= {videos["source"], videos["template"]}
    assert listed["total"] >= 2 and listed["page"] == 1 and listed["page_size"] == 20
    one = data(c.get(f"{API}/videos", params={"page": 2, "page_size": 1}))
    assert len(one["items"]) == 1 and one["pages"] == one["total"]
    assert data(c.get(f"{API}/videos", params={"page": 1000}))["items"] == []
    for bad in ({"page": 0}, {"page_size": 0}, {"page_size": 101}, {"page": "abc"}):
        assert_error(c.get(f"{API}/videos", params=bad), 422)


def test_create_job_response(lifecycle, videos, receiver):
    resp = lifecycle["create_resp"]
    assert resp.status_code == 201
    job = lifecycle["created"]
    JobResponse.model_validate(job)
    assert set(job) == set(JobResponse.model_fields)
    assert job["job_id"].startswith("job_") and job["status"] == "queued" and job["progress"] == 0.0
    assert job["video_id"] == videos["source"] and job["template_video_id"] == videos["template"]
    assert job["options"]["output"]["width"] == 160 and job["options"]["max_duration_s"] == 3
    assert job["options"]["strength"] == 1.0  # defaults filled in
    assert job["webhook_url"] == receiver.url and job["created_at"] and job["completed_at"] is None


def test_progress_moves_to_completed(lifecycle):
    final, seen = lifecycle["final"], lifecycle["seen"]
    assert final["status"] == "completed", final
    assert final["progress"] == 100.0 and final["current_stage"] is None and final["completed_at"]
    processing = [s for s in seen if s[0] == "processing"]
    assert processing, seen
    stages = [s[1] for s in processing]
    assert None not in stages and len(set(stages)) >= 2, seen
    progress = [s[2] for s in processing]
    assert progress == sorted(progress), seen  # never goes back
    assert any(0 < p < 100 for p in progress) and len(set(progress)) >= 2, seen


def test_result(a, lifecycle):
    job_id = lifecycle["created"]["job_id"]
    res = data(a.server.client.get(f"{API}/jobs/{job_id}/result"))
    JobDetailResponse.model_validate(res)
    assert set(res) == set(JobDetailResponse.model_fields)
    assert res["status"] == "completed" and res["error"] is None
    assert isinstance(res["style_json"], dict) and res["style_json"].get("color")
    assert res["output_url"] == f"{API}/jobs/{job_id}/output"
    assert res["processing_time_seconds"] > 0
    assert res["stage_timings"] and all(v >= 0 for v in res["stage_timings"].values())


def test_output_is_mp4(a, lifecycle, output_bytes, tmp_path):
    job_id = lifecycle["created"]["job_id"]
    head = a.server.client.get(f"{API}/jobs/{job_id}/output", headers={"Range": "bytes=0-0"})
    assert head.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(output_bytes)
    info = probe(path)
    assert info.display_width == 160 and info.display_height == 90
    assert 0.5 < info.duration_s <= 3.2
    assert info.audio is not None


def test_output_range(a, lifecycle, output_bytes):
    c, job_id, n = a.server.client, lifecycle["created"]["job_id"], len(output_bytes)
    for rng, lo, hi in (("bytes=0-99", 0, 99), ("bytes=100-299", 100, 299), (f"bytes={n - 50}-", n - 50, n - 1),
                        ("bytes=-64", n - 64, n - 1)):
        r = c.get(f"{API}/jobs/{job_id}/output", headers={"Range": rng})
        assert r.status_code == 206, (rng, r.status_code)
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{n}", rng
        assert r.content == output_bytes[lo:hi + 1], rng
    # A range past the end: 416 in the envelope, with the size (RFC 9110 15.5.17).
    r = c.get(f"{API}/jobs/{job_id}/output", headers={"Range": f"bytes={n + 10}-{n + 20}"})
    assert_error(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"] == f"bytes */{n}"
    # A Range that does not parse, or in another unit, is ignored: the whole file (RFC 9110 14.2).
    for rng in ("bytes=abc", "bytes=5-1", "bytes=1e3-", "items=0-5", "bytes"):
        r = c.get(f"{API}/jobs/{job_id}/output", headers={"Range": rng})
        assert r.status_code == 200 and r.content == output_bytes, rng
    # If-Range: a stale validator means "send it all" (RFC 9110 13.1.5), even for a range past the end.
    etag = c.head(f"{API}/jobs/{job_id}/output").headers["etag"]
    for rng in ("bytes=0-99", f"bytes={n + 10}-"):
        r = c.get(f"{API}/jobs/{job_id}/output", headers={"Range": rng, "If-Range": '"stale"'})
        assert r.status_code == 200 and r.content == output_bytes, rng
    r = c.get(f"{API}/jobs/{job_id}/output", headers={"Range": "bytes=0-99", "If-Range": etag})
    assert r.status_code == 206 and r.content == output_bytes[:100]
    # HEAD: what download managers ask first (the size, and that ranges work), without the body
    r = c.head(f"{API}/jobs/{job_id}/output")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == n and r.headers["accept-ranges"] == "bytes"


def test_style_cube(a, lifecycle):
    r = a.server.client.get(f"{API}/jobs/{lifecycle['created']['job_id']}/style.cube")
    assert r.status_code == 200
    lut = read_cube(io.StringIO(r.text))
    assert lut.ndim == 4 and lut.shape[:3] == (lut.shape[0],) * 3 and lut.shape[3] == 3 and lut.shape[0] >= 2
    assert np.isfinite(lut).all()
    identity = np.linspace(0, 1, lut.shape[0], dtype=np.float32)
    assert not np.allclose(lut[..., 0], identity[:, None, None], atol=1e-3)  # a real look, not identity


def test_webhook_on_completion(a, lifecycle, receiver, webhook_secret):
    job_id = lifecycle["created"]["job_id"]
    reqs = receiver.wait(1)
    assert len(reqs) == 1, reqs
    path, headers, body = reqs[0]
    assert path == "/hook"
    key = parse_secret(webhook_secret)
    assert headers["webhook-id"].startswith("msg_")
    # Signed when sent: after the job was created, not after this test read it.
    assert headers["webhook-timestamp"].isdigit()
    assert lifecycle["created_at_unix"] <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert headers["webhook-signature"].startswith("v1,")
    assert verify(key, headers, body)
    assert not verify(key, headers, body + b" ")  # the signature covers the body
    envelope = json.loads(body)
    assert envelope["success"] is True and isinstance(envelope["message"], str)
    assert set(envelope["data"]) == set(JobResponse.model_fields)
    job = JobResponse.model_validate(envelope["data"])
    assert job.job_id == job_id and job.status == "completed" and job.progress == 100.0
    deadline = time.monotonic() + 5
    while True:  # the attempt is recorded just after the receiver answered
        deliveries = data(a.server.client.get(f"{API}/jobs/{job_id}/webhook-deliveries"))
        if deliveries or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(deliveries) == 1, deliveries
    d = WebhookDelivery.model_validate(deliveries[0])
    assert d.delivered and d.status_code == 200 and d.attempt == 1 and d.error is None
    assert d.webhook_id == headers["webhook-id"] and d.url == receiver.url


# ------------------------------------------------------------------------------------------------ errors
def test_unknown_ids_are_404(a):
    c = a.server.client
    assert_error(c.get(f"{API}/videos/vid_nope"), 404, "video_not_found")
    assert_error(c.delete(f"{API}/videos/vid_nope"), 404, "video_not_found")
    assert_error(c.get(f"{API}/jobs/job_nope"), 404, "job_not_found")
    for suffix in ("result", "output", "style.cube", "webhook-deliveries"):
        assert_error(c.get(f"{API}/jobs/job_nope/{suffix}"), 404, "job_not_found")
    assert_error(c.post(f"{API}/jobs/job_nope/cancel"), 404, "job_not_found")
    assert_error(c.get(f"{API}/nothing-here"), 404)
    r = c.put(f"{API}/jobs")
    assert_error(r, 405)
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}  # RFC 9110 15.5.6


def test_job_body_errors(a, videos):
    c = a.server.client
    url = f"{API}/jobs"
    before = data(c.get(url))["total"]
    good = {"video_id": videos["source"], "template_video_id": videos["template"], "options": FAST}
    assert_error(c.post(url, content=b'{"video_id": ', headers={"content-type": "application/json"}), 400,
                 "malformed_json")
    assert_error(c.post(url, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    assert_error(c.post(url, content=json.dumps(good), headers={"content-type": "text/plain"}), 415)
    assert_error(c.post(url, data={"video_id": "x"}), 415)  # form-encoded
    body = assert_error(c.post(url, json={**good, "options": {**FAST, "bogus_knob": 1}}), 422, "validation_error")
    assert "bogus_knob" in body["message"]
    body = assert_error(c.post(url, json={**good, "options": {"output": {"widht": 100}}}), 422)
    assert "widht" in body["message"]
    body = assert_error(c.post(url, json={**good, "colour": "teal"}), 422)
    assert "colour" in body["message"]
    body = assert_error(c.post(url, json={}), 422)
    assert "video_id" in body["message"] and "template_video_id" in body["message"]
    assert_error(c.post(url, json=[good]), 422)
    assert_error(c.post(url, json={**good, "options": {"strength": 2}}), 422)
    assert_error(c.post(url, json={**good, "options": "fast"}), 422)
    assert_error(c.post(url, json={**good, "video_id": "vid_nope"}), 404, "video_not_found")
    assert_error(c.post(url, json={**good, "webhook_url": "ftp://example.com/x"}), 422, "invalid_webhook_url")
    assert_error(c.post(url, json=good, headers={"Idempotency-Key": "k" * 256}), 422)
    assert_error(c.post(url, json={**good, "webhook_url": ""}), 422)  # not a URL: never silently no webhook
    # Nested past what a parser follows: a client error, not a 500.
    deep_options = json.dumps({k: v for k, v in good.items() if k != "options"})[:-1] + ', "options": ' \
        + '{"x": ' * 3000 + "{}" + "}" * 3000 + "}"
    for deep in ("[" * 100_000 + "]" * 100_000, deep_options):
        assert_error(c.post(url, content=deep, headers={"content-type": "application/json"}), 400, "malformed_json")
    # A body far larger than any job request is refused before it is buffered.
    huge = json.dumps({**good, "webhook_url": "https://example.com/" + "a" * 2_000_000})
    assert_error(c.post(url, content=huge, headers={"content-type": "application/json"}), 413, "too_large")
    assert data(c.get(url))["total"] == before  # nothing was created
    assert data(c.get("/healthz"))["status"] == "ok"


def test_upload_errors_store_nothing(a):
    c = a.server.client
    videos_dir = a.server.data_dir
    total = data(c.get(f"{API}/videos"))["total"]
    dirs = video_dirs(videos_dir)
    big = os.urandom(UPLOAD_LIMIT + 1_000_000)
    # declared too large (Content-Length)
    assert_error(c.post(f"{API}/videos", files={"file": ("big.mp4", big, "video/mp4")}), 413, "too_large")

    # streamed (chunked, no Content-Length): the limit is enforced while reading
    boundary = "xxBOUNDARYxx"

    def chunks():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
               f"Content-Type: video/mp4\r\n\r\n").encode()
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = c.post(f"{API}/videos", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(r, 413, "too_large")
    except httpx.TransportError:
        pass  # the server may answer 413 and close before the client has sent everything

    # not a video (a text file under a video name; a .txt name: see test_text_file_upload_refused)
    body = assert_error(c.post(f"{API}/videos", files={"file": ("notes.mp4", b"hello, not a video\n" * 50,
                                                                  "video/mp4")}), 422, "invalid_video")
    assert "not a readable media file" in body["message"] and body["error"]["detail"] == {"field": "file"}
    assert_error(c.post(f"{API}/videos", files={"file": ("empty.mp4", b"", "video/mp4")}), 422, "invalid_video")
    # not multipart
    assert_error(c.post(f"{API}/videos", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(c.post(f"{API}/videos", content=b"raw", headers={"content-type": "video/mp4"}), 415)
    # multipart without the 'file' field
    assert_error(c.post(f"{API}/videos", files={"other": ("a.mp4", b"abc", "video/mp4")}), 422, "missing_file")
    # broken multipart body
    r = c.post(f"{API}/videos", content=b"--b\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=b"})
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code)

    assert data(c.get(f"{API}/videos"))["total"] == total
    assert video_dirs(videos_dir) == dirs
    assert data(c.get("/readyz"))["status"] == "ready"


@pytest.mark.parametrize("name", ["..", ".", "...", "a/.."])
def test_upload_named_dots_is_stored_as_upload(a, source_clip, name):
    c = a.server.client
    video = data(upload(c, source_clip.path, name), 201)
    assert video["filename"] == "upload"
    assert data(c.delete(f"{API}/videos/{video['video_id']}")) is None


def test_text_file_upload_refused(a):
    c = a.server.client
    r = c.post(f"{API}/videos", files={"file": ("notes.txt", b"hello, not a video\n" * 50, "text/plain")})
    if r.status_code == 201:  # keep the store clean for the other tests
        c.delete(f"{API}/videos/{r.json()['data']['video_id']}")
    body = assert_error(r, 422, "invalid_video")
    assert body["message"]


def test_list_jobs_pagination_and_filter(a, lifecycle):
    c = a.server.client
    # at least two jobs
    extra = data(create_job(c, {"source": lifecycle["created"]["video_id"],
                                "template": lifecycle["created"]["template_video_id"]}, FAST), 201)
    all_jobs = data(c.get(f"{API}/jobs", params={"page_size": 100}))
    total = all_jobs["total"]
    assert total >= 2 and len(all_jobs["items"]) == total
    for j in all_jobs["items"]:
        JobResponse.model_validate(j)
    first = data(c.get(f"{API}/jobs", params={"page": 1, "page_size": 1}))
    assert len(first["items"]) == 1 and first["total"] == total and first["pages"] == total
    assert first["page"] == 1 and first["page_size"] == 1
    second = data(c.get(f"{API}/jobs", params={"page": 2, "page_size": 1}))
    assert len(second["items"]) == 1 and second["items"][0]["job_id"] != first["items"][0]["job_id"]
    beyond = data(c.get(f"{API}/jobs", params={"page": total + 1, "page_size": 1}))
    assert beyond["items"] == [] and beyond["total"] == total
    for bad in ({"page": 0}, {"page_size": 0}, {"page_size": 101}, {"page": "abc"}, {"page_size": "1.5"},
                {"page": -1}, {"page": 922337203685477581}, {"page": 10**20}):
        assert_error(c.get(f"{API}/jobs", params=bad), 422, "validation_error")
        assert_error(c.get(f"{API}/videos", params=bad), 422, "validation_error")
    assert_error(c.get(f"{API}/jobs", params={"status": "done"}), 422, "validation_error")
    # Strict query parameters: ASCII digits only, and each given once (not "whichever came last").
    for query in ("page_size=1_0", "page=%EF%BC%95", "page=%205", "page=%2B5", "page=1&page=abc", "page=abc&page=1",
                  "status=bogus&status=queued", "page=1&page=1"):
        assert_error(c.get(f"{API}/jobs?{query}"), 422, "validation_error")
    assert_error(c.get(f"{API}/videos?page_size=1_0"), 422, "validation_error")
    done = data(c.get(f"{API}/jobs", params={"status": "completed", "page_size": 100}))
    assert done["total"] >= 1 and all(j["status"] == "completed" for j in done["items"])
    assert lifecycle["created"]["job_id"] in {j["job_id"] for j in done["items"]}
    assert done["total"] == sum(j["status"] == "completed" for j in all_jobs["items"])
    # While a job runs its status is read fresh: once /result says it completed (as its webhook does), the
    # status endpoint, polled all along, says so too.
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "the job did not end"
        polled = data(c.get(f"{API}/jobs/{extra['job_id']}"))["status"]
        result = data(c.get(f"{API}/jobs/{extra['job_id']}/result"))["status"]
        if result in ("completed", "failed", "cancelled"):
            assert data(c.get(f"{API}/jobs/{extra['job_id']}"))["status"] == result, polled
            break
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------ cancel
def test_cancel_in_every_state(a, videos, lifecycle, source_clip):
    c = a.server.client
    wait_idle(c)
    long_job = data(create_job(c, videos, LONG), 201)
    wait_job(c, long_job["job_id"], statuses=("processing",), timeout=20)
    queued = data(create_job(c, videos, FAST), 201)
    assert data(c.get(f"{API}/jobs/{queued['job_id']}"))["status"] == "queued"

    # a video used by an active job cannot be deleted
    assert_error(c.delete(f"{API}/videos/{videos['source']}"), 409, "video_in_use")
    assert_error(c.delete(f"{API}/videos/{videos['template']}"), 409, "video_in_use")

    # queued -> cancelled at once: the cancel response itself already says so (no wall-clock bound needed)
    cancelled = data(c.post(f"{API}/jobs/{queued['job_id']}/cancel"))
    assert cancelled["status"] == "cancelled"
    assert data(c.get(f"{API}/jobs/{queued['job_id']}"))["status"] == "cancelled"
    assert_error(c.post(f"{API}/jobs/{queued['job_id']}/cancel"), 409, "job_terminal")  # twice
    assert_error(c.get(f"{API}/jobs/{queued['job_id']}/output"), 409, "no_output")

    # processing -> cancelled, visible within ~5 s
    assert data(c.get(f"{API}/jobs/{long_job['job_id']}"))["status"] == "processing", "the long job ended too soon"
    t0 = time.monotonic()
    resp = c.post(f"{API}/jobs/{long_job['job_id']}/cancel")
    body = data(resp)
    seen = wait_job(c, long_job["job_id"], timeout=5)
    assert seen["status"] == "cancelled" and time.monotonic() - t0 < 5.5, (seen, time.monotonic() - t0)
    assert body["status"] == "cancelled"
    res = data(c.get(f"{API}/jobs/{long_job['job_id']}/result"))
    assert res["output_url"] is None and res["style_json"] is None
    assert res["processing_time_seconds"] is None  # the contract: null unless the job completed
    assert_error(c.get(f"{API}/jobs/{long_job['job_id']}/output"), 409)
    assert_error(c.get(f"{API}/jobs/{long_job['job_id']}/style.cube"), 409)
    assert_error(c.post(f"{API}/jobs/{long_job['job_id']}/cancel"), 409, "job_terminal")
    assert not (a.server.data_dir / "outputs" / f"{long_job['job_id']}.mp4").exists()

    # completed -> 409
    assert_error(c.post(f"{API}/jobs/{lifecycle['created']['job_id']}/cancel"), 409, "job_terminal")
    assert data(c.get(f"{API}/jobs/{lifecycle['created']['job_id']}"))["status"] == "completed"

    cancelled_list = data(c.get(f"{API}/jobs", params={"status": "cancelled"}))
    assert {queued["job_id"], long_job["job_id"]} <= {j["job_id"] for j in cancelled_list["items"]}

    # a video no active job uses can be deleted; then it is gone
    spare = data(upload(c, source_clip.path, "spare.mp4"), 201)["video_id"]
    assert spare in video_dirs(a.server.data_dir)
    assert data(c.delete(f"{API}/videos/{spare}")) is None
    assert_error(c.get(f"{API}/videos/{spare}"), 404, "video_not_found")
    assert_error(c.delete(f"{API}/videos/{spare}"), 404, "video_not_found")
    assert spare not in {v["video_id"] for v in data(c.get(f"{API}/videos", params={"page_size": 100}))["items"]}
    assert not any((a.server.data_dir / "videos" / spare).glob("*"))


# ------------------------------------------------------------------------------------------------ webhooks
def test_webhook_retried_until_receiver_is_up(a, videos, webhook_secret):
    c = a.server.client
    port = free_port()  # nothing listens here yet: connection refused
    late = Receiver(port)
    job = data(create_job(c, videos, FAST, webhook_url=late.url), 201)
    done = wait_job(c, job["job_id"])
    assert done["status"] == "completed"
    deadline = time.monotonic() + 10
    while True:
        deliveries = data(c.get(f"{API}/jobs/{job['job_id']}/webhook-deliveries"))
        if deliveries:
            break
        assert time.monotonic() < deadline, "no delivery attempt recorded"
        time.sleep(0.05)
    late.start()  # the receiver comes up after the first attempt failed
    try:
        reqs = late.wait(1, timeout=15)
        assert len(reqs) == 1, reqs
        _, headers, body = reqs[0]
        assert verify(parse_secret(webhook_secret), headers, body)
        assert json.loads(body)["data"]["job_id"] == job["job_id"]
        deadline = time.monotonic() + 5
        while True:
            deliveries = [WebhookDelivery.model_validate(d)
                          for d in data(c.get(f"{API}/jobs/{job['job_id']}/webhook-deliveries"))]
            if any(d.delivered for d in deliveries) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        deliveries.sort(key=lambda d: d.attempt)
        assert len(deliveries) >= 2, deliveries
        failed, last = deliveries[:-1], deliveries[-1]
        assert all(not d.delivered and d.error and d.status_code is None for d in failed), failed
        assert failed[0].next_attempt_at is not None
        assert last.delivered and last.status_code == 200 and last.attempt == len(deliveries)
        assert len({d.webhook_id for d in deliveries}) == 1 and deliveries[0].webhook_id == headers["webhook-id"]
    finally:
        late.stop()


# ------------------------------------------------------------------------------------------------ idempotency
@pytest.fixture(scope="module")
def idempotent_job(a, videos) -> dict:
    body = {"video_id": videos["source"], "template_video_id": videos["template"], "options": FAST}
    r1 = a.server.client.post(f"{API}/jobs", json=body, headers={"Idempotency-Key": "idem-1"})
    return {"body": body, "r1": r1}


def test_idempotency(a, videos, idempotent_job):
    c = a.server.client
    body, r1 = idempotent_job["body"], idempotent_job["r1"]
    first = data(r1, 201)
    second = data(c.post(f"{API}/jobs", json=body, headers={"Idempotency-Key": "idem-1"}), 200)
    assert second["job_id"] == first["job_id"]
    assert_error(c.post(f"{API}/jobs", json={**body, "options": {**FAST, "seed": 7}},
                        headers={"Idempotency-Key": "idem-1"}), 409, "idempotency_conflict")
    # the same request written differently (3.0 for 3, keys in another order) is the same request
    same = {"options": {**FAST, "max_duration_s": float(FAST["max_duration_s"])},
            "template_video_id": body["template_video_id"], "video_id": body["video_id"]}
    assert data(c.post(f"{API}/jobs", json=same, headers={"Idempotency-Key": "idem-1"}), 200)["job_id"] \
        == first["job_id"]
    # another key, same body: a new job
    third = data(c.post(f"{API}/jobs", json=body, headers={"Idempotency-Key": "idem-2"}), 201)
    assert third["job_id"] != first["job_id"]
    c.post(f"{API}/jobs/{third['job_id']}/cancel")  # not needed further: spare the CPU


def test_concurrent_retries_with_one_idempotency_key_make_one_job(a, videos):
    import concurrent.futures

    c = a.server.client
    body = {"video_id": videos["source"], "template_video_id": videos["template"], "options": FAST}
    before = data(c.get(f"{API}/jobs"))["total"]

    def post(_):
        with httpx.Client(base_url=c.base_url, timeout=60) as own:
            return own.post(f"{API}/jobs", json=body, headers={"Idempotency-Key": "idem-race"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["data"]["job_id"] for r in answers}) == 1
    assert data(c.get(f"{API}/jobs"))["total"] == before + 1
    c.post(f"{API}/jobs/{answers[0].json()['data']['job_id']}/cancel")


def test_upload_idempotency_key(a, source_clip, template_clip):
    c = a.server.client
    first = data(upload(c, source_clip.path, headers={"Idempotency-Key": "up-1"}), 201)
    dirs = video_dirs(a.server.data_dir)
    total = data(c.get(f"{API}/videos"))["total"]
    # a retry of the same file: the same video, nothing new stored
    again = data(upload(c, source_clip.path, "renamed.mp4", headers={"Idempotency-Key": "up-1"}), 200)
    assert again == first
    # another file under the key: refused, nothing stored
    assert_error(upload(c, template_clip.path, headers={"Idempotency-Key": "up-1"}), 409, "idempotency_conflict")
    assert video_dirs(a.server.data_dir) == dirs and data(c.get(f"{API}/videos"))["total"] == total
    # once that video is deleted, the key's retry uploads afresh
    assert data(c.delete(f"{API}/videos/{first['video_id']}")) is None
    fresh = data(upload(c, source_clip.path, headers={"Idempotency-Key": "up-1"}), 201)
    assert fresh["video_id"] != first["video_id"]
    assert data(upload(c, source_clip.path, headers={"Idempotency-Key": "up-1"}), 200)["video_id"] \
        == fresh["video_id"]
    # concurrent retries of one upload: one video
    import concurrent.futures

    def post(_):
        with httpx.Client(base_url=c.base_url, timeout=60) as own:
            return upload(own, template_clip.path, headers={"Idempotency-Key": "up-race"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, range(4)))
    assert sorted(r.status_code for r in answers) == [200] * 3 + [201]
    assert len({r.json()["data"]["video_id"] for r in answers}) == 1
    for vid in (fresh["video_id"], answers[0].json()["data"]["video_id"]):
        c.delete(f"{API}/videos/{vid}")


# ------------------------------------------------------------------------------------------------ tenancy
def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def b(b_launched) -> Server:
    return b_launched.wait_ready()


@pytest.fixture(scope="module")
def alice(b, source_clip, template_clip) -> dict:
    c, ka = b.client, bearer("ka")
    vids = {"source": data(upload(c, source_clip.path, headers=ka), 201)["video_id"],
            "template": data(upload(c, template_clip.path, headers=ka), 201)["video_id"]}
    job = data(create_job(c, vids, FAST, headers=ka), 201)
    return {"videos": vids, "job": job}


class TestTenancy:
    """STYLECAST_API_KEYS="alice=ka,bob=kb"."""

    def test_keys_required(self, b, source_clip):
        c = b.client
        assert data(c.get("/healthz"))["status"] == "ok"  # health is open
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "ka"}, {"Authorization": "Basic ka"}):
            r = c.get(f"{API}/videos", headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
            assert_error(c.get(f"{API}/jobs", headers=headers), 401)
            assert_error(c.post(f"{API}/jobs", json={}, headers=headers), 401)
            assert_error(c.get(f"{API}/jobs/job_x/output", headers=headers), 401)
        total = data(c.get(f"{API}/videos", headers=bearer("ka")))["total"]
        assert_error(upload(c, source_clip.path, headers={"Authorization": "Bearer nope"}), 401)
        assert data(c.get(f"{API}/videos", headers=bearer("ka")))["total"] == total

    def test_loopback_webhook_refused(self, b, alice):
        c = b.client
        before = data(c.get(f"{API}/jobs", headers=bearer("ka")))["total"]
        for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook",
                    "http://10.0.0.1/hook"):
            body = assert_error(create_job(c, alice["videos"], FAST, headers=bearer("ka"), webhook_url=url), 422,
                                "invalid_webhook_url")
            assert "webhook_url" in body["message"]
        assert data(c.get(f"{API}/jobs", headers=bearer("ka")))["total"] == before

    def test_isolation(self, b, alice):
        c, ka, kb = b.client, bearer("ka"), bearer("kb")
        vids, job_id = alice["videos"], alice["job"]["job_id"]
        done = wait_job(c, job_id, headers=ka)
        assert done["status"] == "completed"
        out = c.get(f"{API}/jobs/{job_id}/output", headers=ka)
        assert out.status_code == 200 and len(out.content) > 1000
        # bob sees nothing of alice's
        for vid in vids.values():
            assert_error(c.get(f"{API}/videos/{vid}", headers=kb), 404)
            assert_error(c.delete(f"{API}/videos/{vid}", headers=kb), 404)
        assert_error(c.get(f"{API}/jobs/{job_id}", headers=kb), 404)
        for suffix in ("result", "output", "style.cube", "webhook-deliveries"):
            assert_error(c.get(f"{API}/jobs/{job_id}/{suffix}", headers=kb), 404)
        assert_error(c.post(f"{API}/jobs/{job_id}/cancel", headers=kb), 404)
        # bob cannot use alice's videos in a job
        assert_error(create_job(c, vids, FAST, headers=kb), 404, "video_not_found")
        assert data(c.get(f"{API}/videos", headers=kb))["total"] == 0
        assert data(c.get(f"{API}/jobs", headers=kb))["total"] == 0
        # alice sees hers
        assert {v["video_id"] for v in data(c.get(f"{API}/videos", headers=ka))["items"]} == set(vids.values())
        assert [j["job_id"] for j in data(c.get(f"{API}/jobs", headers=ka))["items"]] == [job_id]
        assert data(c.get(f"{API}/videos/{vids['source']}", headers=ka))["video_id"] == vids["source"]
        # bob's own upload is his, not alice's
        bob_vid = data(c.post(f"{API}/videos", files={"file": ("b.mp4", out.content, "video/mp4")}, headers=kb),
                       201)["video_id"]
        assert [v["video_id"] for v in data(c.get(f"{API}/videos", headers=kb))["items"]] == [bob_vid]
        assert_error(c.get(f"{API}/videos/{bob_vid}", headers=ka), 404)
        assert bob_vid not in {v["video_id"] for v in data(c.get(f"{API}/videos", headers=ka))["items"]}
        # alice still reads her results
        assert data(c.get(f"{API}/jobs/{job_id}/result", headers=ka))["status"] == "completed"


# ------------------------------------------------------------------------------------------------ restart
def test_restart_survival(a, videos, lifecycle, output_bytes, idempotent_job):
    """Last: stop A with SIGTERM (exit 0) and start a new server on the same data dir."""
    c = a.server.client
    wait_idle(c)
    done_id = lifecycle["created"]["job_id"]
    first = data(idempotent_job["r1"], 201)
    running = data(create_job(c, videos, FAST), 201)  # a few seconds: still processing when we stop
    wait_job(c, running["job_id"], statuses=("processing",), timeout=20)
    queued = data(create_job(c, videos, FAST), 201)
    assert data(c.get(f"{API}/jobs/{queued['job_id']}"))["status"] == "queued"
    total_before = data(c.get(f"{API}/jobs"))["total"]

    t0 = time.monotonic()
    rc = a.server.stop()
    assert rc == 0, a.server.log_tail()
    assert time.monotonic() - t0 < STOP_TIMEOUT_S
    a.server = Server(a.data_dir / "data", a.env, a.data_dir / "serve.log").start()
    c = a.server.client

    # the completed job: still listed, same result, output still downloadable (and byte-identical)
    assert data(c.get(f"{API}/jobs"))["total"] == total_before
    assert done_id in {j["job_id"] for j in data(c.get(f"{API}/jobs", params={"status": "completed",
                                                                               "page_size": 100}))["items"]}
    res = data(c.get(f"{API}/jobs/{done_id}/result"))
    assert res["status"] == "completed" and res["style_json"]
    out = c.get(f"{API}/jobs/{done_id}/output")
    assert out.status_code == 200 and hashlib.sha256(out.content).digest() == hashlib.sha256(output_bytes).digest()
    r = c.get(f"{API}/jobs/{done_id}/output", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == output_bytes[10:20]
    assert data(c.get(f"{API}/videos/{videos['source']}"))["video_id"] == videos["source"]

    # idempotency survives the restart
    again = c.post(f"{API}/jobs", json=idempotent_job["body"], headers={"Idempotency-Key": "idem-1"})
    assert data(again, 200)["job_id"] == first["job_id"]
    assert_error(c.post(f"{API}/jobs", json={**idempotent_job["body"], "options": {}},
                        headers={"Idempotency-Key": "idem-1"}), 409, "idempotency_conflict")

    # the queued job runs to completion; the interrupted one is re-run
    q = wait_job(c, queued["job_id"])
    assert q["status"] == "completed", q
    assert c.get(f"{API}/jobs/{queued['job_id']}/output").status_code == 200
    p = wait_job(c, running["job_id"])
    assert p["status"] == "completed", p
