"""End to end against one real ``stylecast serve``: the Python SDK, the CLI's client commands, and submission
from a Ray connection straight to the JobManager (`actors.client`).

The server runs with an embedded Ray whose temp dir is private to this module (``RAY_TMPDIR``), so its GCS
address is read from that dir's session files and a separate Ray driver can join it.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stylecast.errors import StylecastError
from stylecast.media.probe import probe
from stylecast.options import Options
from stylecast.sdk import ApiError, Client, ServerUnreachable
from stylecast.synth_clip import ShotSpec, make_clip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"max_duration_s": 2}
STAGES = {"video_analysis", "audio_analysis", "motion_analysis", "style_extraction", "style_application", "rendering"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env(ray_tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "STYLECAST_API_KEYS", "STYLECAST_SERVER",
                                                            "STYLECAST_API_KEY")}
    env["RAY_TMPDIR"] = ray_tmp
    # A local Ray turns token auth on when a token exists; a second driver must then present it too.
    if "RAY_AUTH_MODE" not in env and (Path.home() / ".ray" / "auth_token").exists():
        env["RAY_AUTH_MODE"] = "token"
    return env


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("sdk_clips")
    src = make_clip(d / "src.mp4", [ShotSpec(frames=25, seed=1, palette="green", pan_x=0.04),
                                    ShotSpec(frames=25, seed=2, palette="urban")], fps=25, width=160, height=90)
    tpl = make_clip(d / "tpl.mp4", [ShotSpec(frames=25, seed=3, palette="warm"),
                                    ShotSpec(frames=25, seed=4, palette="cool", zoom_rate=0.04)],
                    fps=25, width=160, height=90)
    return Path(src.path), Path(tpl.path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("sdk_data")
    ray_tmp = tempfile.mkdtemp(prefix="scray", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    env = _ray_env(ray_tmp)
    log_path = data / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "stylecast.cli", "serve", "--port", str(port), "--data-dir",
                             str(data)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"stylecast serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"stylecast serve not ready in 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        ports = glob.glob(os.path.join(ray_tmp, "ray", "session_latest", "gcs_server_port_*"))
        ray_address = f"127.0.0.1:{Path(ports[0]).read_text().strip()}" if ports else None
        yield {"url": url, "data": data, "ray_tmp": ray_tmp, "ray_address": ray_address, "env": env}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server):
    with Client(server["url"]) as c:
        yield c


@pytest.fixture(scope="module")
def completed_job(client, clips):
    src, tpl = (client.upload(p) for p in clips)
    job = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS)
    final = client.wait(job["job_id"], poll_s=0.2, timeout_s=150)
    assert final["status"] == "completed", client.result(job["job_id"]).get("error")
    return final


def cli(server, *args, timeout=180):
    env = dict(server["env"], STYLECAST_SERVER=server["url"])
    return subprocess.run([sys.executable, "-m", "stylecast.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylecast: error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_submit_wait_downloads_mp4_then_status_result_list(server, clips, tmp_path):
    out = tmp_path / "out.mp4"
    p = cli(server, "submit", str(clips[0]), str(clips[1]), "--options", json.dumps(OPTIONS), "-o", str(out))
    assert p.returncode == 0, p.stderr
    job = json.loads(p.stdout)
    assert job["status"] == "completed" and job["progress"] == 100.0 and job["output"] == str(out)
    assert "upload source" in p.stderr and "rendering" in p.stderr and "download" in p.stderr
    info = probe(out)
    assert (info.display_width, info.display_height) == (160, 90)
    assert 1.5 <= info.duration_s <= 2.1
    assert not [f for f in tmp_path.iterdir() if f.name != "out.mp4"]

    p = cli(server, "status", job["job_id"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "completed"
    p = cli(server, "result", job["job_id"])
    assert p.returncode == 0, p.stderr
    detail = json.loads(p.stdout)
    assert detail["style_json"] and detail["output_url"] == f"/api/v1/jobs/{job['job_id']}/output"
    p = cli(server, "list", "--status", "completed", "--page-size", "100")
    assert p.returncode == 0, p.stderr
    page = json.loads(p.stdout)
    assert job["job_id"] in [j["job_id"] for j in page["items"]] and page["page_size"] == 100

    # Without --wait: the queued job is printed at once.
    p = cli(server, "-q", "submit", str(clips[0]), str(clips[1]), "--options", json.dumps(OPTIONS))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] in ("queued", "processing") and p.stderr == ""


def test_cli_submit_retried_with_its_idempotency_key_returns_the_same_job(server, client, clips):
    """The retry uploads the files again: the uploads carry keys derived from the job's, so they come back as
    the same videos, and the job's body (and so the job) is the same."""
    videos_before = client.list_videos(page_size=100)["total"]
    args = ("-q", "submit", str(clips[0]), str(clips[1]), "--options", json.dumps(OPTIONS),
            "--idempotency-key", "cli-retry-1")
    first = cli(server, *args)
    assert first.returncode == 0, first.stderr
    again = cli(server, *args)
    assert again.returncode == 0, again.stderr
    job = json.loads(first.stdout)
    assert json.loads(again.stdout)["job_id"] == job["job_id"]
    assert client.list_videos(page_size=100)["total"] == videos_before + 2
    with contextlib.suppress(ApiError):  # spare the CPU, unless it has ended already
        client.cancel(job["job_id"])


def test_cli_errors_are_one_line(server, clips, tmp_path):
    assert "does not exist" in one_line_error(cli(server, "status", "job_nope"))
    assert "does not exist" in one_line_error(cli(server, "result", "job_nope"))
    assert "does not exist" in one_line_error(cli(server, "cancel", "job_nope"))
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli(server, "list", "--server", dead))
    assert "unreachable" in line and dead in line
    line = one_line_error(cli(server, "submit", str(clips[0]), str(clips[1]), "--server", dead))
    assert "unreachable" in line
    assert "no such file" in one_line_error(cli(server, "submit", str(tmp_path / "nope.mp4"), str(clips[1])))
    assert "options" in one_line_error(cli(server, "submit", str(clips[0]), str(clips[1]), "--options", "{bad"))
    # An id is one path segment: "../videos" or "x?y" name a (missing) job, never another endpoint.
    for weird in ("../videos", "x?y", "..", "a/b", "%2e%2e"):
        p = cli(server, "status", weird)
        line = one_line_error(p)  # exit 1, one line
        assert "does not exist" in line or "not found" in line.lower(), (weird, line)
        assert p.stdout == "", weird  # nothing else was read and printed as if it were the job
    assert "does not exist" in one_line_error(cli(server, "cancel", "x?y"))
    assert "empty" in one_line_error(cli(server, "status", ""))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert "bad.mp4" in one_line_error(cli(server, "-q", "submit", str(bad), str(clips[1])))


def test_cli_cancel_prints_the_cancelled_job(server, client, clips):
    src, tpl = (client.upload(p) for p in clips)
    job = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS)
    p = cli(server, "cancel", job["job_id"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "cancelled"
    assert "already cancelled" in one_line_error(cli(server, "cancel", job["job_id"]))


# ------------------------------------------------------------------------------------------------------ SDK
def test_sdk_upload_reports_bytes_and_errors_carry_the_envelope(client, clips):
    seen: list[tuple[int, int]] = []
    size = clips[0].stat().st_size
    video = client.upload(clips[0], progress=lambda done, total: seen.append((done, total)))
    assert video["size"] == size and video["filename"] == "src.mp4" and (video["width"], video["height"]) == (160, 90)
    assert seen and seen[-1] == (size, size) and all(t == size for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert client.get_video(video["video_id"])["video_id"] == video["video_id"]

    with pytest.raises(ApiError) as e:
        client.get_job("job_nope")
    assert (e.value.status, e.value.code) == (404, "job_not_found") and "does not exist" in e.value.message
    with pytest.raises(ApiError) as e:
        client.create_job(video["video_id"], "vid_nope")
    assert (e.value.status, e.value.code) == (404, "video_not_found")
    with pytest.raises(ApiError) as e:
        client.create_job(video["video_id"], video["video_id"], options={"nope": 1})
    assert (e.value.status, e.value.code) == (422, "validation_error")
    with pytest.raises(ApiError) as e:
        client.list_jobs(status="bogus")
    assert e.value.status == 422
    with Client(f"http://127.0.0.1:{free_port()}") as dead, pytest.raises(ServerUnreachable) as e:
        dead.get_job("job_x")
    assert e.value.status == 0 and "unreachable" in str(e.value)


def test_an_error_from_the_callers_progress_callback_comes_out_unchanged(client, clips, completed_job, tmp_path):
    # An OSError raised by the callback (say, printing to a closed pipe) is the caller's, not a read or write
    # error of the file: it is not wrapped, and a download still leaves nothing behind.
    broken = BrokenPipeError(32, "the progress display went away")

    def report(done, total):
        raise broken

    with pytest.raises(BrokenPipeError) as e:
        client.upload(clips[0], progress=report)
    assert e.value is broken
    out = tmp_path / "out.mp4"
    with pytest.raises(BrokenPipeError) as e:
        client.download(completed_job["job_id"], out, progress=report)
    assert e.value is broken and list(tmp_path.iterdir()) == []


def test_options_payload_keeps_nested_changes_and_makes_numpy_values_plain():
    from stylecast.errors import OptionsError
    from stylecast.options import options_payload

    opts = Options()
    opts.transfer.pacing = False
    opts.output.width = 640
    assert options_payload(opts) == {"transfer": {"pacing": False}, "output": {"width": 640}}
    assert options_payload(Options()) == {}
    plain = options_payload({"strength": np.float32(0.5), "seed": np.int64(3), "transfer": {"motion": np.bool_(False)}})
    assert plain == {"strength": 0.5, "seed": 3, "transfer": {"motion": False}}
    assert type(plain["seed"]) is int and type(plain["transfer"]["motion"]) is bool
    assert json.loads(json.dumps(plain)) == plain
    assert options_payload('{"seed": 4}') == {"seed": 4}
    for bad in ("[1]", "{nope", 3):
        with pytest.raises(OptionsError):
            options_payload(bad)


def test_sdk_sends_an_options_models_nested_changes_and_numpy_values(client, clips):
    src, tpl = (client.upload(p) for p in clips)
    opts = Options.model_validate(OPTIONS)
    opts.transfer.pacing = False  # set on the default sub-model: pydantic does not count it as "set"
    opts.output.width = 96
    job = client.create_job(src["video_id"], tpl["video_id"], options=opts)
    assert job["options"]["transfer"]["pacing"] is False and job["options"]["output"]["width"] == 96
    assert job["options"]["max_duration_s"] == OPTIONS["max_duration_s"]
    client.cancel(job["job_id"])
    job = client.create_job(src["video_id"], tpl["video_id"],
                            options={**OPTIONS, "strength": np.float32(0.5), "seed": np.int64(7)})
    assert (job["options"]["strength"], job["options"]["seed"]) == (0.5, 7)
    client.cancel(job["job_id"])
    job = client.create_job(src["video_id"], tpl["video_id"], options=json.dumps({**OPTIONS, "seed": 3}))
    assert job["options"]["seed"] == 3
    client.cancel(job["job_id"])
    with pytest.raises(StylecastError, match="JSON object"):
        client.create_job(src["video_id"], tpl["video_id"], options="[1, 2]")


def test_sdk_wait_download_cube_deliveries_idempotency(client, clips, tmp_path):
    src, tpl = (client.upload(p) for p in clips)
    job = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS, idempotency_key="sdk-test-1")
    again = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS, idempotency_key="sdk-test-1")
    assert again["job_id"] == job["job_id"]
    calls: list[tuple[str, float]] = []
    final = client.wait(job["job_id"], poll_s=0.1, timeout_s=150, progress=lambda s, p: calls.append((s, p)))
    assert final["status"] == "completed"
    assert calls and {s for s, _ in calls} <= STAGES and calls[-1][1] == 100.0
    assert all(b != a for a, b in zip(calls, calls[1:]))  # only changes are reported

    got: list[tuple[int, int]] = []
    out = client.download(job["job_id"], tmp_path / "sub" / "o.mp4", progress=lambda d, t: got.append((d, t)))
    assert out.exists() and probe(out).display_width == 160
    assert got[-1] == (out.stat().st_size, out.stat().st_size)
    assert [f.name for f in out.parent.iterdir()] == ["o.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes, not mkstemp's 0600

    cube = client.style_cube(job["job_id"])
    assert "LUT_3D_SIZE" in cube
    assert client.webhook_deliveries(job["job_id"]) == []
    page = client.list_jobs(page=1, page_size=1)
    assert page["page_size"] == 1 and len(page["items"]) == 1 and page["total"] >= 1
    with pytest.raises(TimeoutError):
        queued = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS)
        client.wait(queued["job_id"], poll_s=0.05, timeout_s=0.1)
    client.cancel(queued["job_id"])


def test_sdk_download_failure_leaves_nothing_at_the_path(client, clips, completed_job, tmp_path):
    src, tpl = (client.upload(p) for p in clips)
    job = client.create_job(src["video_id"], tpl["video_id"], options=OPTIONS)
    assert client.cancel(job["job_id"])["status"] == "cancelled"
    out = tmp_path / "x.mp4"
    with pytest.raises(ApiError) as e:
        client.download(job["job_id"], out)
    assert (e.value.status, e.value.code) == (409, "no_output")
    assert list(tmp_path.iterdir()) == []

    def boom(done, total):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        client.download(completed_job["job_id"], out, progress=boom)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous")  # a failed download leaves an existing file as it was
    with pytest.raises(RuntimeError):
        client.download(completed_job["job_id"], out, progress=boom)
    assert out.read_bytes() == b"previous" and [f.name for f in tmp_path.iterdir()] == ["x.mp4"]
    with Client(f"http://127.0.0.1:{free_port()}") as dead, pytest.raises(ServerUnreachable):
        dead.download(completed_job["job_id"], tmp_path / "y.mp4")
    assert [f.name for f in tmp_path.iterdir()] == ["x.mp4"]
    with pytest.raises(RuntimeError):  # the folders made for a failed download go with it
        client.download(completed_job["job_id"], tmp_path / "new" / "deeper" / "z.mp4", progress=boom)
    assert [f.name for f in tmp_path.iterdir()] == ["x.mp4"]
    with pytest.raises(StylecastError, match="cannot write the download"):  # not a raw FileExistsError
        client.download(completed_job["job_id"], tmp_path / "x.mp4" / "under_a_file.mp4")
    import stat

    pipe = tmp_path / "pipe.mp4"  # renamed into place, the download would replace the pipe (as root: /dev/null)
    os.mkfifo(pipe)
    with pytest.raises(StylecastError, match="not a regular file"):
        client.download(completed_job["job_id"], pipe)
    assert stat.S_ISFIFO(pipe.stat().st_mode) and sorted(f.name for f in tmp_path.iterdir()) == ["pipe.mp4", "x.mp4"]


# ------------------------------------------------------------------------------------------------ Ray client
RAY_SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from cluster.connect import NAMESPACE
    from actors.client import JobHandle, submit_job
    from serve_app.models import ApiError
    from stylecast.options import Options

    ray.init(address=sys.argv[1], namespace=NAMESPACE, log_to_driver=False)
    errors = {}
    for name, call in (("bad_video", lambda: submit_job(sys.argv[4], sys.argv[3])),
                       ("missing", lambda: submit_job(sys.argv[4] + ".nope", sys.argv[3])),
                       ("bad_options", lambda: submit_job(sys.argv[2], sys.argv[3], {"nope": 1})),
                       ("options_not_an_object", lambda: submit_job(sys.argv[2], sys.argv[3], "[1]")),
                       ("bad_webhook", lambda: submit_job(sys.argv[2], sys.argv[3], webhook_url="ftp://example.com/x")),
                       ("unknown_job", lambda: JobHandle("job_nope").status())):
        try:
            call()
            errors[name] = None
        except ApiError as exc:
            errors[name] = [exc.status, exc.code]
    import stylecast.sdk
    from stylecast.errors import StylecastError
    errors["one_error_class"] = ApiError is stylecast.sdk.ApiError and issubclass(ApiError, StylecastError)
    options = Options(max_duration_s=2)
    options.transfer.motion = False  # a nested change on a model
    handle = submit_job(sys.argv[2], sys.argv[3], options)
    first = handle.status()
    try:
        handle.output_path()
        errors["output_before_done"] = None
    except ApiError as exc:
        errors["output_before_done"] = [exc.status, exc.code]
    final = handle.wait(timeout_s=150, poll_s=0.2)
    result = handle.result()
    result["output_path"] = handle.output_path()
    try:
        handle.cancel()
        errors["cancel_done"] = None
    except ApiError as exc:
        errors["cancel_done"] = [exc.status, exc.code]
    print(json.dumps({"job_id": handle.job_id, "first": first, "final": final, "result": result, "errors": errors}))
""")


def test_ray_client_submits_straight_to_the_job_manager(server, client, clips, tmp_path):
    assert server["ray_address"], "the embedded Ray's GCS port was not found under RAY_TMPDIR"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    videos_before = client.list_videos(page_size=100)["total"]
    p = subprocess.run([sys.executable, "-c", RAY_SCRIPT, server["ray_address"], str(clips[0]), str(clips[1]),
                        str(bad)], cwd=ROOT, env=server["env"], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["errors"] == {"bad_video": [422, "invalid_video"], "missing": [422, "invalid_video"],
                             "bad_options": [422, "validation_error"], "unknown_job": [404, "job_not_found"],
                             "options_not_an_object": [422, "validation_error"],
                             "bad_webhook": [422, "invalid_webhook_url"], "one_error_class": True,
                             "output_before_done": [409, "no_output"],
                             "cancel_done": [409, "job_terminal"]}
    # Only the job that was made registered its two videos: refused submissions leave none behind.
    assert client.list_videos(page_size=100)["total"] == videos_before + 2
    assert out["final"]["options"]["transfer"]["motion"] is False
    job_id = out["job_id"]
    assert out["first"]["status"] in ("queued", "processing")
    assert out["final"]["status"] == "completed"
    assert out["result"]["style_json"] and out["result"]["output_url"] == f"/api/v1/jobs/{job_id}/output"

    # The same job over HTTP: listed, readable, its inputs registered in place, its output downloadable.
    assert client.get_job(job_id)["status"] == "completed"
    assert job_id in [j["job_id"] for j in client.list_jobs(page_size=100)["items"]]
    video = client.get_video(out["final"]["video_id"])
    assert video["filename"] == "src.mp4" and video["size"] == clips[0].stat().st_size
    mp4 = client.download(job_id, tmp_path / "ray.mp4")
    assert 1.5 <= probe(mp4).duration_s <= 2.1
    assert Path(out["result"]["output_path"]).read_bytes() == mp4.read_bytes()  # the same file, read in place

    # Deleting a video registered in place removes the record, never the researcher's own file.
    template_id = out["final"]["template_video_id"]
    before = clips[1].read_bytes()
    client.delete_video(template_id)
    assert clips[1].exists() and clips[1].read_bytes() == before
    with pytest.raises(Exception):
        client.get_video(template_id)
