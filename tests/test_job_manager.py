"""The JobManager actor on its own (no HTTP): a job can never stay processing forever, and a restart of the
actor re-runs what was processing."""
from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from actors.job_manager import JobManager  # noqa: E402
from serve_app.models import ApiError  # noqa: E402
from serve_app.store import Store  # noqa: E402
from stylecast.synth_clip import ShotSpec, make_clip  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("jm")
    a = make_clip(d / "a.mp4", [ShotSpec(frames=40, seed=1), ShotSpec(frames=40, seed=2)], width=160, height=90)
    b = make_clip(d / "b.mp4", [ShotSpec(frames=12, seed=3), ShotSpec(frames=13, seed=4)], width=160, height=90)
    return a.path, b.path


def _wait(manager, job_id, states, timeout=180.0, owner=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ray.get(manager.get_job.remote(owner, job_id))
        if job["status"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states}")


def test_deadline_fails_a_job_that_runs_too_long(local_ray, clips, tmp_path):
    manager = JobManager.remote(str(tmp_path), job_deadline_s=1.5)
    src = ray.get(manager.register_video.remote("", str(clips[0])))
    tpl = ray.get(manager.register_video.remote("", str(clips[1])))
    job, created = ray.get(manager.create_job.remote("", {"video_id": src["video_id"],
                                                         "template_video_id": tpl["video_id"]}))
    assert created
    final = _wait(manager, job["job_id"], ("completed", "failed", "cancelled"))
    assert final["status"] == "failed"
    detail = ray.get(manager.get_result.remote("", job["job_id"]))
    assert detail["error"]["code"] == "deadline_exceeded"
    assert "deadline" in detail["error"]["message"]
    assert not (tmp_path / "outputs" / f"{job['job_id']}.mp4").exists()
    ray.kill(manager)


def test_restart_reruns_processing_jobs_and_keeps_finished_ones(local_ray, clips, tmp_path):
    manager = JobManager.remote(str(tmp_path))
    src = ray.get(manager.register_video.remote("", str(clips[0])))
    tpl = ray.get(manager.register_video.remote("", str(clips[1])))
    body = {"video_id": src["video_id"], "template_video_id": tpl["video_id"], "options": {"max_duration_s": 1}}
    done, _ = ray.get(manager.create_job.remote("", body))
    _wait(manager, done["job_id"], ("completed",))
    running, _ = ray.get(manager.create_job.remote("", {**body, "options": {"max_duration_s": 2}}))
    _wait(manager, running["job_id"], ("processing",))
    ray.kill(manager, no_restart=True)  # the process dies mid-job
    store = Store(tmp_path / "stylecast.db")
    assert store.get_job(running["job_id"]).status == "processing"
    # What a run killed mid-join leaves beside the outputs: the joiner's folder and partial files.
    outputs = tmp_path / "outputs"
    (outputs / ".stylecast-join-0123456789ab").mkdir()
    (outputs / ".stylecast-join-0123456789ab" / "00000.mp4").write_bytes(b"segment")
    (outputs / f".{running['job_id']}.1a2b3c4d.partial.mp4").write_bytes(b"partial")

    manager = JobManager.remote(str(tmp_path))  # a new process on the same data dir
    assert _wait(manager, done["job_id"], ("completed",))["status"] == "completed"
    # removed at start-up (the re-run makes scratch files of its own, under other names)
    assert not (outputs / ".stylecast-join-0123456789ab").exists()
    assert not (outputs / f".{running['job_id']}.1a2b3c4d.partial.mp4").exists()
    rerun = _wait(manager, running["job_id"], ("completed", "failed"))
    assert rerun["status"] == "completed"
    assert store.get_job(running["job_id"]).attempts == 2
    with pytest.raises(ray.exceptions.RayTaskError) as exc:
        ray.get(manager.cancel_job.remote("", done["job_id"]))
    assert isinstance(exc.value.cause, ApiError) and exc.value.cause.status == 409
    ray.kill(manager)


def test_a_job_interrupted_by_restarts_is_rerun_twice_then_failed(local_ray, clips, tmp_path):
    """``attempts`` counts the runs that started; a job found processing at start-up was interrupted."""
    from serve_app.models import utcnow
    from serve_app.store import JobRecord

    manager = JobManager.remote(str(tmp_path))
    src = ray.get(manager.register_video.remote("", str(clips[0])))
    tpl = ray.get(manager.register_video.remote("", str(clips[1])))
    ray.kill(manager, no_restart=True)
    store = Store(tmp_path / "stylecast.db")
    now = utcnow()
    for job_id, attempts in (("job_twice", 2), ("job_thrice", 3)):
        store.add_job(JobRecord(job_id=job_id, owner="", status="processing", video_id=src["video_id"],
                                template_video_id=tpl["video_id"], options={"max_duration_s": 1}, created_at=now,
                                updated_at=now, started_at=now, attempts=attempts))

    manager = JobManager.remote(str(tmp_path))
    assert _wait(manager, "job_twice", ("completed", "failed"))["status"] == "completed"  # its third run
    assert store.get_job("job_twice").attempts == 3
    failed = ray.get(manager.get_result.remote("", "job_thrice"))
    assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted"
    assert "3 times" in failed["error"]["message"]
    ray.kill(manager)


def test_a_later_service_start_configures_the_running_manager_or_is_refused(local_ray, tmp_path):
    """The manager is detached: a second start must not silently keep the first one's settings."""
    from actors.job_manager import get_or_create_job_manager
    from stylecast.errors import StylecastError

    manager = get_or_create_job_manager(str(tmp_path / "a"), max_concurrent_jobs=1, job_deadline_s=100.0)
    try:
        assert ray.get(manager.settings.remote())["job_deadline_s"] == 100.0
        again = get_or_create_job_manager(str(tmp_path / "a"), max_concurrent_jobs=3, job_deadline_s=50.0,
                                          webhook_schedule_s=(1.0, 2.0))
        settings = ray.get(again.settings.remote())
        assert (settings["max_concurrent_jobs"], settings["job_deadline_s"]) == (3, 50.0)
        assert settings["webhook_schedule_s"] == [1.0, 2.0]
        with pytest.raises(StylecastError, match="keeps its jobs in"):
            get_or_create_job_manager(str(tmp_path / "b"))
        with pytest.raises(StylecastError, match="keeps its jobs in"):  # the same data dir, another database
            get_or_create_job_manager(str(tmp_path / "a"), db_path=str(tmp_path / "elsewhere.db"))
        assert ray.get(manager.settings.remote())["data_dir"] == str((tmp_path / "a").resolve())
    finally:
        ray.kill(manager, no_restart=True)


@ray.remote(max_restarts=-1, max_task_retries=0)
class _DiesOnCall:
    def create_job(self, *args):
        import os

        os._exit(1)


def test_a_manager_dying_during_a_call_is_a_503_and_the_call_is_not_rerun(local_ray, tmp_path):
    import asyncio

    from serve_app.app import Service
    from serve_app.config import ServiceConfig

    assert JobManager._default_options["max_task_retries"] == 0  # Ray never re-runs a manager call
    service = Service(ServiceConfig(data_dir=str(tmp_path)), _DiesOnCall.remote())
    with pytest.raises(ApiError) as exc:
        asyncio.run(service.call("create_job", "", {}, None))
    assert exc.value.status == 503 and exc.value.code == "job_manager_restarting"
    assert exc.value.headers == {"Retry-After": "2"}


@ray.remote(max_restarts=-1, max_task_retries=0)
class _DiesOnRead:
    def get_job(self, *args):
        import os

        os._exit(1)


def test_waiting_on_a_restarting_manager_keeps_to_the_callers_timeout(local_ray, monkeypatch):
    from actors import client
    from actors.client import JobHandle

    monkeypatch.setattr(client, "_RESTART_WAIT_S", 600.0)  # a read would otherwise be retried this long
    manager = _DiesOnRead.remote()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="restarting when the 1 s timeout ran out"):
            JobHandle("job_x", "", manager).wait(timeout_s=1.0, poll_s=0.1)
        assert time.monotonic() - t0 < 60  # not the 600 s a read alone would retry
    finally:
        ray.kill(manager, no_restart=True)


def test_the_database_can_live_apart_from_the_data_dir(local_ray, clips, tmp_path):
    """On a cluster the data dir (uploads, outputs) is on the share, the SQLite file on the head's own disk."""
    from serve_app.app import Service
    from serve_app.config import ServiceConfig

    db = tmp_path / "local" / "jobs.db"
    manager = JobManager.remote(str(tmp_path / "share"), db_path=str(db))
    try:
        video = ray.get(manager.register_video.remote("", str(clips[0])))
        assert ray.get(manager.settings.remote())["db_path"] == str(db)
        assert db.exists() and not (tmp_path / "share" / "stylecast.db").exists()
        service = Service(ServiceConfig(data_dir=str(tmp_path / "share"), db_path=str(db)), manager)
        assert service.store.get_video(video["video_id"], "").path == str(clips[0])
    finally:
        ray.kill(manager, no_restart=True)


def test_one_key_may_have_only_so_many_active_jobs(local_ray, clips, tmp_path):
    manager = JobManager.remote(str(tmp_path), max_active_jobs_per_key=2)
    try:
        src = ray.get(manager.register_video.remote("alice", str(clips[0])))
        tpl = ray.get(manager.register_video.remote("alice", str(clips[1])))
        body = {"video_id": src["video_id"], "template_video_id": tpl["video_id"]}
        first = [ray.get(manager.create_job.remote("alice", body))[0] for _ in range(2)]
        with pytest.raises(ray.exceptions.RayTaskError) as exc:
            ray.get(manager.create_job.remote("alice", body))
        err = exc.value.cause
        assert isinstance(err, ApiError) and (err.status, err.code) == (429, "too_many_active_jobs")
        assert err.headers == {"Retry-After": "30"} and err.detail == {"limit": 2}
        # a retry with the Idempotency-Key of an existing job is not a new job
        keyed = {**body, "options": {"max_duration_s": 1}}
        ray.get(manager.cancel_job.remote("alice", first[1]["job_id"]))
        job, created = ray.get(manager.create_job.remote("alice", keyed, "k1"))
        assert created
        again, created = ray.get(manager.create_job.remote("alice", keyed, "k1"))
        assert again["job_id"] == job["job_id"] and not created
        # another key has its own allowance; a finished job frees a place
        other_src = ray.get(manager.register_video.remote("bob", str(clips[0])))
        other = {"video_id": other_src["video_id"], "template_video_id": other_src["video_id"]}
        assert ray.get(manager.create_job.remote("bob", other))[1]
        _wait(manager, first[0]["job_id"], ("completed", "failed", "cancelled"), owner="alice")  # ends on its own
        assert ray.get(manager.create_job.remote("alice", body))[1]
    finally:
        ray.kill(manager, no_restart=True)


def test_a_database_folder_is_accepted_on_first_start_and_again(local_ray, tmp_path):
    """db_path may name a folder (stylecast.db inside, as Store reads it): starting and restarting the
    service with it is not mistaken for another database."""
    from actors.job_manager import get_or_create_job_manager

    folder = tmp_path / "db"
    folder.mkdir()
    manager = get_or_create_job_manager(str(tmp_path / "share"), db_path=str(folder))
    try:
        assert ray.get(manager.settings.remote())["db_path"] == str(folder / "stylecast.db")
        get_or_create_job_manager(str(tmp_path / "share"), db_path=str(folder), job_deadline_s=10.0)
        get_or_create_job_manager(str(tmp_path / "share"), db_path=str(folder / "stylecast.db"))
    finally:
        ray.kill(manager, no_restart=True)


@ray.remote(max_restarts=-1, max_task_retries=0)
class _DiesOnce:
    """Its process dies on the first call of each method (a marker file remembers), then answers."""

    def __init__(self, marker_dir: str) -> None:
        self.marker_dir = marker_dir

    def _once(self, name: str) -> None:
        import os

        marker = os.path.join(self.marker_dir, name)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    def get_job(self, owner, job_id):
        self._once("get_job")
        return {"job_id": job_id, "status": "queued"}

    def create_job(self, owner, body, key=None):
        self._once("create_job")
        return {"job_id": "job_x"}, True


def test_ray_client_calls_ride_out_a_manager_restart_or_say_so(local_ray, tmp_path):
    from actors.client import _call

    manager = _DiesOnce.remote(str(tmp_path))
    try:
        assert _call(manager, "get_job", "", "job_x")["job_id"] == "job_x"  # a read is asked again
        with pytest.raises(ApiError) as exc:
            _call(manager, "create_job", "", {})  # a change is not repeated behind the caller's back
        assert (exc.value.status, exc.value.code) == (503, "job_manager_restarting")
    finally:
        ray.kill(manager, no_restart=True)


def test_webhook_settings_travel_with_the_start_and_old_keys_are_purged(local_ray, tmp_path, monkeypatch):
    """On a cluster the manager's process does not see the serve command's environment: the secret and the
    private-address switch are passed along, also to a manager that already runs.  Expired Idempotency-Keys
    are deleted, not only ignored."""
    from actors.job_manager import get_or_create_job_manager
    from serve_app.webhooks import generate_secret
    from stylecast.errors import StylecastError

    store = Store(tmp_path / "stylecast.db")
    store.put_idempotency("", "old-key", "h", "job_old", now=time.time() - 2 * 24 * 3600)
    store.put_idempotency("", "new-key", "h", "job_new")
    monkeypatch.delenv("STYLECAST_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("STYLECAST_ALLOW_PRIVATE_WEBHOOKS", raising=False)
    manager = get_or_create_job_manager(str(tmp_path))
    try:
        assert not ray.get(manager.settings.remote())["webhooks_signed"]
        monkeypatch.setenv("STYLECAST_WEBHOOK_SECRET", generate_secret())
        monkeypatch.setenv("STYLECAST_ALLOW_PRIVATE_WEBHOOKS", "1")
        get_or_create_job_manager(str(tmp_path))
        settings = ray.get(manager.settings.remote())
        assert settings["webhooks_signed"] and settings["allow_private_webhooks"]
        monkeypatch.setenv("STYLECAST_WEBHOOK_SECRET", "whsec_not*base64!")
        with pytest.raises(StylecastError, match="STYLECAST_WEBHOOK_SECRET"):
            get_or_create_job_manager(str(tmp_path))
        deadline = time.monotonic() + 10
        while _rows(tmp_path / "stylecast.db", "idempotency_keys") != 1:  # purged at start, then hourly
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert store.get_idempotency("", "new-key") is not None
    finally:
        ray.kill(manager, no_restart=True)


def _rows(db, table: str) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
