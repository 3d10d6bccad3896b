"""Store: SQLite (WAL) persistence of videos, jobs, idempotency keys and webhook events, on real files."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from serve_app.models import JobDetailResponse, JobResponse
from serve_app.store import (IDEMPOTENCY_TTL_S, SCHEMA_VERSION, JobRecord, Store, VideoRecord)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def video(video_id: str, owner: str = "", minutes: int = 0) -> VideoRecord:
    return VideoRecord(video_id=video_id, owner=owner, filename=f"{video_id}.mp4", path=f"/data/{video_id}.mp4",
                       size=1234, duration=8.0, fps=25.0, width=320, height=180, has_audio=True,
                       created_at=T0 + timedelta(minutes=minutes))


def job(job_id: str, owner: str = "", minutes: int = 0, status: str = "queued", src: str = "v1",
        tpl: str = "v2") -> JobRecord:
    when = T0 + timedelta(minutes=minutes)
    return JobRecord(job_id=job_id, owner=owner, status=status, video_id=src, template_video_id=tpl,
                     options={"strength": 0.5}, webhook_url="https://example.com/hook", created_at=when,
                     updated_at=when)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.close()


# ------------------------------------------------------------------------------------------------------ basics

def test_file_in_data_dir_wal_and_schema_version(tmp_path, store):
    assert store.path == tmp_path / "stylecast.db"
    assert store.path.exists()
    assert store.journal_mode().lower() == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_explicit_file_path_and_parents_created(tmp_path):
    with Store(tmp_path / "a" / "b" / "state.db") as s:
        assert s.path == tmp_path / "a" / "b" / "state.db"
        assert s.journal_mode() == "wal"


def test_newer_schema_refused(tmp_path):
    Store(tmp_path).close()
    raw = sqlite3.connect(tmp_path / "stylecast.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(RuntimeError, match="schema version"):
        Store(tmp_path)


# ------------------------------------------------------------------------------------------------------ videos

def test_video_crud_and_tenancy(store):
    store.add_video(video("v1", owner="alice"))
    got = store.get_video("v1", "alice")
    assert got == video("v1", owner="alice")
    assert got.created_at.tzinfo is not None and got.created_at == T0
    assert store.get_video("v1", "bob") is None  # someone else's
    assert store.get_video("v1", None) is not None  # any owner
    assert store.get_video("nope", "alice") is None
    with pytest.raises(sqlite3.IntegrityError):
        store.add_video(video("v1", owner="alice"))
    assert store.delete_video("v1", "bob") is False
    assert store.get_video("v1", "alice") is not None
    assert store.delete_video("v1", "alice") is True
    assert store.delete_video("v1", "alice") is False
    assert store.get_video("v1", "alice") is None


def test_video_response(store):
    store.add_video(video("v1"))
    resp = store.get_video("v1", "").to_response()
    assert resp.video_id == "v1" and resp.width == 320 and resp.has_audio is True


def test_list_videos_newest_first_pagination_and_owner(store):
    for i in range(5):
        store.add_video(video(f"a{i}", owner="alice", minutes=i))
    store.add_video(video("b0", owner="bob", minutes=10))
    items, total = store.list_videos("alice", page=1, page_size=2)
    assert total == 5 and [v.video_id for v in items] == ["a4", "a3"]
    items, total = store.list_videos("alice", page=3, page_size=2)
    assert total == 5 and [v.video_id for v in items] == ["a0"]  # partial last page
    items, total = store.list_videos("alice", page=4, page_size=2)
    assert total == 5 and items == []  # past the end
    items, total = store.list_videos("alice", page=1, page_size=100)
    assert len(items) == 5
    items, total = store.list_videos("carol", 1, 10)
    assert (items, total) == ([], 0)
    assert store.list_videos(None, 1, 10)[1] == 6
    with pytest.raises(ValueError):
        store.list_videos("alice", page=0, page_size=2)
    with pytest.raises(ValueError):
        store.list_videos("alice", page=1, page_size=0)


def test_same_timestamp_order_is_stable(store):
    for i in range(3):
        store.add_video(video(f"v{i}"))  # all at T0
    assert [v.video_id for v in store.list_videos("", 1, 10)[0]] == ["v2", "v1", "v0"]
    for i in range(3):
        store.add_job(job(f"j{i}"))
    assert [j.job_id for j in store.jobs_by_status(["queued"])] == ["j0", "j1", "j2"]


def test_video_in_active_job(store):
    store.add_job(job("j1", status="queued", src="s1", tpl="t1"))
    store.add_job(job("j2", status="completed", src="s2", tpl="t2"))
    assert store.video_in_active_job("s1") and store.video_in_active_job("t1")
    assert not store.video_in_active_job("s2") and not store.video_in_active_job("t2")
    assert not store.video_in_active_job("other")
    store.update_job("j1", status="processing")
    assert store.video_in_active_job("t1")
    store.update_job("j1", status="cancelled")
    assert not store.video_in_active_job("s1")


# -------------------------------------------------------------------------------------------------------- jobs

def test_job_roundtrip_and_update(store):
    store.add_job(job("j1", owner="alice"))
    got = store.get_job("j1")
    assert got == job("j1", owner="alice")
    assert store.get_job("j1", "alice") == got
    assert store.get_job("j1", "bob") is None
    assert store.get_job("missing") is None

    before = got.updated_at
    updated = store.update_job("j1", status="processing", current_stage="video_analysis", progress=12.5,
                               started_at=T0 + timedelta(seconds=3), attempts=1)
    assert updated.status == "processing" and updated.progress == 12.5 and updated.attempts == 1
    assert updated.updated_at > before  # set to now
    again = store.get_job("j1")
    assert again == updated
    assert again.started_at == T0 + timedelta(seconds=3)

    style = {"color": {"a": [1.5, 2.0]}, "shots": [1, 2, 3]}
    done = store.update_job("j1", status="completed", progress=100.0, style_json=style, output_path="/out/j1.mp4",
                            completed_at=T0 + timedelta(seconds=60), processing_time_seconds=57.0,
                            stage_timings={"video_analysis": 20.0, "rendering": 30.0})
    assert store.get_job("j1") == done
    assert done.style_json == style and done.stage_timings["rendering"] == 30.0


def test_update_job_validation_and_missing(store):
    store.add_job(job("j1"))
    assert store.update_job("missing", status="failed") is None
    with pytest.raises(ValueError, match="unknown job fields"):
        store.update_job("j1", colour="red")
    with pytest.raises(ValueError, match="cannot be changed"):
        store.update_job("j1", owner="mallory")
    with pytest.raises(ValueError):
        store.update_job("j1", status="exploded")  # not a JobStatus
    with pytest.raises(ValueError):
        store.update_job("j1", progress=150.0)
    assert store.get_job("j1").status == "queued"  # nothing written


def test_update_job_compare_and_set(store):
    store.add_job(job("j1", status="processing"))
    assert store.update_job("j1", status="cancelled", only_if_status=("queued", "processing")) is not None
    # a late progress report must not resurrect a cancelled job
    assert store.update_job("j1", progress=50.0, only_if_status=("queued", "processing")) is None
    assert store.get_job("j1").status == "cancelled" and store.get_job("j1").progress == 0.0


def test_list_jobs_filters_and_pages(store):
    for i in range(4):
        store.add_job(job(f"a{i}", owner="alice", minutes=i, status="completed" if i % 2 else "queued"))
    store.add_job(job("b0", owner="bob", minutes=9))
    items, total = store.list_jobs("alice", None, 1, 3)
    assert total == 4 and [j.job_id for j in items] == ["a3", "a2", "a1"]
    items, total = store.list_jobs("alice", "completed", 1, 10)
    assert total == 2 and [j.job_id for j in items] == ["a3", "a1"]
    items, total = store.list_jobs("alice", ["queued", "completed"], 2, 3)
    assert total == 4 and [j.job_id for j in items] == ["a0"]
    assert store.list_jobs("alice", "failed", 1, 10) == ([], 0)
    assert store.list_jobs("bob", None, 5, 10) == ([], 1)
    assert store.list_jobs(None, None, 1, 10)[1] == 5


def test_jobs_by_status_oldest_first(store):
    store.add_job(job("late", minutes=5))
    store.add_job(job("early", minutes=1))
    store.add_job(job("running", minutes=0, status="processing"))
    store.add_job(job("done", minutes=0, status="completed"))
    assert [j.job_id for j in store.jobs_by_status(["queued"])] == ["early", "late"]
    assert [j.job_id for j in store.jobs_by_status("queued")] == ["early", "late"]
    assert [j.job_id for j in store.jobs_by_status(["queued", "processing"])] == ["running", "early", "late"]
    assert store.jobs_by_status([]) == []


def test_to_response_and_detail(store):
    store.add_job(job("j1"))
    rec = store.update_job("j1", status="failed", error_code="bad_input", error_message="no video stream",
                           stage_timings={"video_analysis": 1.5})
    resp = store.to_response(rec)
    assert isinstance(resp, JobResponse) and type(resp) is JobResponse
    assert resp.options.strength == 0.5 and resp.status == "failed"
    detail = store.to_detail(rec, output_url=None)
    assert isinstance(detail, JobDetailResponse)
    assert detail.error.code == "bad_input" and detail.error.message == "no video stream"
    assert detail.stage_timings == {"video_analysis": 1.5}
    ok = store.update_job("j1", status="completed", error_code=None, error_message=None, style_json={"k": 1})
    detail = store.to_detail(ok, "https://api/outputs/j1.mp4")
    assert detail.error is None and detail.output_url == "https://api/outputs/j1.mp4"
    assert detail.style_json == {"k": 1}
    # the response serialises as the API sends it
    assert JobDetailResponse.model_validate_json(detail.model_dump_json()) == detail


# ------------------------------------------------------------------------------------------------ idempotency

def test_idempotency_put_get_expiry_and_purge(store):
    now = time.time()
    assert store.put_idempotency("alice", "k1", "hash1", "j1", now=now) is None
    got = store.get_idempotency("alice", "k1", now=now + 10)
    assert got[:2] == ("hash1", "j1") and abs(got[2].timestamp() - now) < 1e-3
    assert store.get_idempotency("bob", "k1", now=now) is None  # keys are per owner
    # first writer wins while live
    existing = store.put_idempotency("alice", "k1", "hash2", "j2", now=now + 5)
    assert existing[:2] == ("hash1", "j1")
    assert store.get_idempotency("alice", "k1", now=now + 5)[:2] == ("hash1", "j1")
    # older than 24 h: ignored, then replaceable, and purged
    assert store.get_idempotency("alice", "k1", now=now + IDEMPOTENCY_TTL_S + 1) is None
    store.put_idempotency("alice", "k2", "h", "j3", now=now + 100)
    assert store.purge_idempotency(now + IDEMPOTENCY_TTL_S + 1) == 1  # k1 only
    assert store.get_idempotency("alice", "k2", now=now + IDEMPOTENCY_TTL_S + 1) is not None
    assert store.put_idempotency("alice", "k1", "hash9", "j9", now=now + IDEMPOTENCY_TTL_S + 2) is None
    assert store.get_idempotency("alice", "k1", now=now + IDEMPOTENCY_TTL_S + 3)[:2] == ("hash9", "j9")


def test_idempotency_scopes_and_replace(store):
    """A key names a job and an upload independently; ``replace`` overwrites a live entry."""
    store.put_idempotency("alice", "k", "job-hash", "j1")
    assert store.get_idempotency("alice", "k", scope="videos") is None
    assert store.put_idempotency("alice", "k", "file-hash", "v1", scope="videos") is None
    assert store.get_idempotency("alice", "k")[:2] == ("job-hash", "j1")
    assert store.get_idempotency("alice", "k", scope="videos")[:2] == ("file-hash", "v1")
    assert store.put_idempotency("alice", "k", "file-hash", "v2", scope="videos")[:2] == ("file-hash", "v1")
    assert store.put_idempotency("alice", "k", "file-hash", "v2", scope="videos", replace=True) is None
    assert store.get_idempotency("alice", "k", scope="videos")[:2] == ("file-hash", "v2")


def test_version_1_file_migrates_with_its_idempotency_keys(tmp_path):
    from serve_app.store import _SCHEMA_V1

    raw = sqlite3.connect(tmp_path / "stylecast.db")
    raw.executescript(_SCHEMA_V1)
    raw.execute("INSERT INTO idempotency_keys (owner, key, request_hash, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
                ["alice", "k1", "h1", "j1", time.time()])
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Store(tmp_path) as s:
        assert s.schema_version() == SCHEMA_VERSION == 2
        assert s.get_idempotency("alice", "k1")[:2] == ("h1", "j1")
        assert s.get_idempotency("alice", "k1", scope="videos") is None


def test_idempotency_default_now(store):
    store.put_idempotency("", "k", "h", "j")
    assert store.get_idempotency("", "k")[:2] == ("h", "j")
    assert store.purge_idempotency() == 0


# --------------------------------------------------------------------------------------------- webhook events

def test_webhook_events_due_claim_and_deliveries(store):
    now = 1_700_000_000.0
    store.add_webhook_event("msg_1", "j1", "https://example.com/h", b'{"a":1}', next_attempt_at=now, now=now)
    store.add_webhook_event("msg_2", "j1", "https://example.com/h", b'{"a":2}', next_attempt_at=now + 60, now=now)
    due = store.due_webhook_events(now, 10)
    assert [e.webhook_id for e in due] == ["msg_1"] and due[0].payload == b'{"a":1}'
    assert len(store.due_webhook_events(now + 60, 10)) == 2
    assert len(store.due_webhook_events(now + 60, 1)) == 1

    claimed = store.claim_webhook_events(now, 10, lease_s=30)
    assert [e.webhook_id for e in claimed] == ["msg_1"]
    assert store.claim_webhook_events(now + 1, 10, lease_s=30) == []  # leased
    assert store.next_webhook_due().timestamp() == pytest.approx(now + 30)

    d1 = store.record_delivery_attempt("msg_1", delivery_id="d1", attempted_at=now, delivered=False,
                                       status_code=500, error="HTTP 500", duration_ms=12.0,
                                       next_attempt_at=now + 5)
    assert d1.attempt == 1 and not d1.delivered and d1.next_attempt_at.timestamp() == now + 5
    ev = store.get_webhook_event("msg_1")
    assert ev.attempts == 1 and ev.state == "pending" and ev.last_error == "HTTP 500"
    d2 = store.record_delivery_attempt("msg_1", delivery_id="d2", attempted_at=now + 5, delivered=True,
                                       status_code=204, duration_ms=8.0)
    assert d2.attempt == 2 and d2.delivered and d2.next_attempt_at is None
    assert store.get_webhook_event("msg_1").state == "delivered"
    assert store.due_webhook_events(now + 1000, 10)[0].webhook_id == "msg_2"  # delivered one never due again

    d3 = store.record_delivery_attempt("msg_2", delivery_id="d3", attempted_at=now + 60, delivered=False,
                                       error="ConnectError", next_attempt_at=None)
    assert d3.attempt == 1 and store.get_webhook_event("msg_2").state == "gave_up"
    assert store.due_webhook_events(now + 10_000, 10) == [] and store.next_webhook_due() is None

    deliveries = store.list_deliveries("j1")
    assert [(d.webhook_id, d.attempt, d.status_code, d.delivered) for d in deliveries] == [
        ("msg_1", 1, 500, False), ("msg_1", 2, 204, True), ("msg_2", 1, None, False)]
    assert deliveries[0] == d1 and deliveries[0].url == "https://example.com/h"
    assert store.list_deliveries("other") == []
    assert [e.webhook_id for e in store.list_webhook_events("j1")] == ["msg_1", "msg_2"]
    with pytest.raises(KeyError):
        store.record_delivery_attempt("msg_x", delivery_id="d4", attempted_at=now, delivered=True)


def test_a_late_failure_never_reopens_a_delivered_webhook(store):
    """Two attempts of one event overlap (the first sender's lease ran out): the second delivers, then the
    first's failure is recorded: it is history, and the event stays delivered (not pending: sent again)."""
    now = 1_700_000_000.0
    store.add_webhook_event("msg_1", "j1", "https://example.com/h", b"{}", next_attempt_at=now, now=now)
    assert store.claim_webhook_events(now, 10, lease_s=30)
    assert store.claim_webhook_events(now + 31, 10, lease_s=30)  # the lease ran out: claimed again
    store.record_delivery_attempt("msg_1", delivery_id="d2", attempted_at=now + 31, delivered=True, status_code=200)
    store.record_delivery_attempt("msg_1", delivery_id="d1", attempted_at=now, delivered=False, error="timeout",
                                  next_attempt_at=now + 60)
    event = store.get_webhook_event("msg_1")
    assert event.state == "delivered" and event.attempts == 2
    assert store.due_webhook_events(now + 1000, 10) == []
    assert [d.delivery_id for d in store.list_deliveries("j1")] == ["d1", "d2"]  # by when each attempt began


# ------------------------------------------------------------------------------------- persistence, processes

def test_second_store_sees_committed_writes(tmp_path):
    writer, reader = Store(tmp_path), Store(tmp_path)  # as the JobManager and a Serve replica would
    try:
        writer.add_job(job("j1"))
        assert reader.get_job("j1").status == "queued"
        writer.update_job("j1", status="processing", progress=40.0)
        got = reader.get_job("j1")
        assert got.status == "processing" and got.progress == 40.0
        writer.add_video(video("v1"))
        assert reader.list_videos("", 1, 10)[1] == 1
    finally:
        writer.close()
        reader.close()


def test_data_survives_reopen(tmp_path):
    with Store(tmp_path) as s:
        s.add_video(video("v1", owner="alice"))
        s.add_job(job("j1", owner="alice"))
        s.update_job("j1", style_json={"x": [1, 2]})
        s.put_idempotency("alice", "k", "h", "j1")
        s.add_webhook_event("msg_1", "j1", "https://example.com", b"{}", time.time())
    with Store(tmp_path) as s:
        assert s.get_video("v1", "alice").filename == "v1.mp4"
        assert s.get_job("j1", "alice").style_json == {"x": [1, 2]}
        assert s.get_idempotency("alice", "k")[1] == "j1"
        assert s.get_webhook_event("msg_1").state == "pending"
        assert s.schema_version() == SCHEMA_VERSION


def test_concurrent_writer_and_readers_do_not_lock(tmp_path):
    """One writer thread and three reader threads, each with its own Store (connection), hammer the file."""
    with Store(tmp_path) as s:
        s.add_job(job("j1", status="processing"))
    errors: list[BaseException] = []
    stop = threading.Event()
    n_updates = 300

    def write() -> None:
        try:
            with Store(tmp_path) as w:
                for i in range(n_updates):
                    w.update_job("j1", progress=min(100.0, i / 3))
                    if i % 10 == 0:
                        w.add_job(job(f"x{i}", minutes=i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    def read() -> None:
        try:
            with Store(tmp_path) as r:
                last = -1.0
                while not stop.is_set():
                    progress = r.get_job("j1").progress
                    assert progress >= last  # never goes back: readers see committed states in order
                    last = progress
                    r.list_jobs("", None, 1, 5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with Store(tmp_path) as s:
        assert s.get_job("j1").progress == pytest.approx((n_updates - 1) / 3)
        assert s.list_jobs("", None, 1, 1)[1] == 1 + n_updates // 10


def test_one_store_shared_by_threads(store):
    store.add_job(job("j1", status="processing"))
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(50):
                store.update_job("j1", progress=float(i))
                store.get_job("j1")
                store.add_webhook_event(f"msg_{k}_{i}", "j1", "https://e.com", b"{}", 0.0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(store.due_webhook_events(1.0, 1000)) == 200


def test_reader_in_another_process(tmp_path):
    """A real second process (as a Serve replica) reads while this one writes; neither sees 'locked'."""
    import subprocess
    import sys
    from pathlib import Path

    with Store(tmp_path) as s:
        s.add_job(job("j1", status="processing"))
    reader_code = (
        "import sys, time\n"
        "from serve_app.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "deadline = time.time() + 20\n"
        "reads = 0\n"
        "while time.time() < deadline:\n"
        "    j = s.get_job('j1'); reads += 1\n"
        "    s.list_jobs('', None, 1, 5)\n"
        "    if j.status == 'completed':\n"
        "        print('seen', j.progress, reads); break\n"
        "else:\n"
        "    sys.exit('never saw completion')\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", reader_code, str(tmp_path)], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Store(tmp_path) as w:
        for i in range(200):
            w.update_job("j1", progress=i / 2)
        time.sleep(0.2)
        w.update_job("j1", status="completed", progress=100.0)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith("seen 100.0")


def _open_fresh(args) -> str:
    folder, barrier, rounds = args
    from serve_app.store import Store

    errors = []
    for k in range(rounds):
        barrier.wait()
        try:
            Store(Path(folder) / f"round{k}.db").close()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(repr(exc))
    return "; ".join(errors)


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path):
    """The switch to WAL needs a moment of exclusive access that SQLite does not wait for: processes creating
    the same database at the same moment (a replica and the manager starting) must all succeed."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers, rounds = 4, 10
    barrier = ctx.Manager().Barrier(workers)
    with ctx.Pool(workers) as pool:
        errors = pool.map(_open_fresh, [(str(tmp_path), barrier, rounds)] * workers)
    assert errors == [""] * workers, errors
