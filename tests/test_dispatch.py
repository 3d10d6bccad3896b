"""The chunk dispatcher on one Ray node: a job waits while other jobs hold the cluster's CPUs, and fails
clearly only where no node could ever host a worker; the service releases its workers when idle."""
from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")

from actors import dispatch  # noqa: E402
from actors.dispatch import ActorPool, ChunkFailed, run_chunks  # noqa: E402
from actors.stages import VideoAnalyzer  # noqa: E402


def _fill(pool: ActorPool, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(pool.ready) < pool.target() and time.monotonic() < deadline:
        pool.refresh(force=True)
        time.sleep(0.1)
    assert len(pool.ready) == pool.target()


def test_a_job_waits_for_cpus_that_another_job_holds(local_ray, monkeypatch):
    monkeypatch.setattr(dispatch, "START_TIMEOUT_S", 0.5)
    holder = ActorPool(VideoAnalyzer)  # another driver's pool: one worker per CPU, half a CPU each ...
    other = ActorPool(VideoAnalyzer)  # ... and its second pool: together they hold every CPU
    try:
        _fill(holder)
        _fill(other)
        assert ray.available_resources().get("CPU", 0.0) < 0.5
        waiting = ActorPool(VideoAnalyzer)
        outcome: dict = {}

        def job() -> None:
            try:
                outcome["result"] = run_chunks(waiting, [("k", lambda actor: actor.ping.remote())])
            except Exception as exc:  # noqa: BLE001 - the test reads it
                outcome["error"] = exc

        thread = threading.Thread(target=job)
        thread.start()
        thread.join(timeout=3.0)  # six times the start timeout
        assert thread.is_alive() and not outcome, outcome  # still waiting, not failed
        holder.shutdown()  # the other job ends
        thread.join(timeout=60)
        assert not thread.is_alive() and "error" not in outcome, outcome
        assert set(outcome["result"]) == {"k"}
        waiting.shutdown()
    finally:
        holder.shutdown()
        other.shutdown()


@ray.remote(num_cpus=64)
class _Huge:
    def ping(self) -> str:
        return "never"


def test_a_job_no_node_can_host_fails_clearly(local_ray, monkeypatch):
    monkeypatch.setattr(dispatch, "START_TIMEOUT_S", 0.5)
    pool = ActorPool(_Huge, max_size=1)
    try:
        assert not pool.can_ever_start()
        with pytest.raises(ChunkFailed, match="no node of the cluster has the 64 CPU"):
            run_chunks(pool, [("k", lambda actor: actor.ping.remote())])
    finally:
        pool.shutdown()


def test_the_service_releases_its_workers_when_idle(local_ray, tmp_path):
    from actors.job_manager import JobManager
    from stylecast.synth_clip import ShotSpec, make_clip

    a = make_clip(tmp_path / "a.mp4", [ShotSpec(frames=20, seed=1), ShotSpec(frames=20, seed=2)], width=96, height=54)
    b = make_clip(tmp_path / "b.mp4", [ShotSpec(frames=10, seed=3), ShotSpec(frames=10, seed=4)], width=96, height=54)
    manager = JobManager.remote(str(tmp_path / "data"), pool_idle_s=1.0)
    try:
        src = ray.get(manager.register_video.remote("", str(a.path)))
        tpl = ray.get(manager.register_video.remote("", str(b.path)))
        job, _ = ray.get(manager.create_job.remote("", {"video_id": src["video_id"],
                                                         "template_video_id": tpl["video_id"]}))
        deadline = time.monotonic() + 180
        while ray.get(manager.get_job.remote("", job["job_id"]))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ray.get(manager.get_job.remote("", job["job_id"]))["status"] == "completed"
        deadline = time.monotonic() + 30
        while ray.get(manager.stats.remote())["workers_held"] or ray.available_resources().get("CPU", 0) < 2:
            assert time.monotonic() < deadline, (ray.get(manager.stats.remote()), ray.available_resources())
            time.sleep(0.2)
    finally:
        ray.kill(manager, no_restart=True)


def test_a_new_renderer_removes_the_scratch_folders_of_dead_workers(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from actors.stages import _RENDER_DIR_PREFIX, _remove_dead_workers_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (dead.pid, alive.pid):
            folder = tmp_path / f"{_RENDER_DIR_PREFIX}{pid}-abc"
            folder.mkdir()
            (folder / "seg-1-0-60.mp4").write_bytes(b"half a segment")
        _remove_dead_workers_dirs()
        assert [p.name for p in tmp_path.iterdir()] == [f"{_RENDER_DIR_PREFIX}{alive.pid}-abc"]
    finally:
        alive.kill()
        alive.wait()


@ray.remote(num_cpus=0.5, max_restarts=0)
class _BrokenWorker:
    def __init__(self) -> None:
        raise ImportError("no module named 'kernels' on this node")

    def ping(self) -> str:
        return "never"


def test_workers_that_fail_to_start_fail_the_job_with_their_error(local_ray):
    pool = ActorPool(_BrokenWorker)
    try:
        with pytest.raises(ChunkFailed, match="no module named 'kernels' on this node"):
            run_chunks(pool, [("k", lambda actor: actor.ping.remote())])
    finally:
        pool.shutdown()


@ray.remote(num_cpus=0.5, max_restarts=0)
class _StuckWorker:
    """A worker whose chunk never sees the job's cancel flag (a hung mount, a stopped process)."""

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"


def test_a_worker_stuck_past_the_stop_wait_is_killed_and_replaced(local_ray, monkeypatch):
    monkeypatch.setattr(dispatch, "STOP_WAIT_S", 0.5)
    pool = ActorPool(_StuckWorker, max_size=1)
    try:
        _fill(pool)
        stuck = pool.ready[0]
        started = time.monotonic()
        with pytest.raises(dispatch.CancelledError):
            run_chunks(pool, [("k", lambda actor: actor.work.remote(600))],
                       should_stop=lambda: time.monotonic() - started > 1.0)
        assert stuck not in pool.ready
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(stuck.ping.remote(), timeout=30)
        # The next job gets a fresh worker instead of queueing behind the stuck chunk.
        assert run_chunks(pool, [("k2", lambda actor: actor.work.remote(0))]) == {"k2": "done"}
    finally:
        pool.shutdown()


def test_a_chunk_queued_on_a_worker_another_job_killed_is_rerun_without_losing_an_attempt(local_ray, monkeypatch):
    """Job A is cancelled while its chunk hangs; the worker is killed after the stop wait.  Job B's chunk, queued
    on the same worker behind A's, fails for want of a worker: that is not B's loss, and with one attempt
    allowed per chunk B still completes on the fresh worker."""
    monkeypatch.setattr(dispatch, "STOP_WAIT_S", 0.5)
    monkeypatch.setattr(dispatch, "MAX_ATTEMPTS", 1)
    pool = ActorPool(_StuckWorker, max_size=1)
    try:
        _fill(pool)
        shared = pool.ready[0]
        cancel_a = threading.Event()
        outcome: dict = {}

        def job_a() -> None:
            try:
                run_chunks(pool, [("a", lambda actor: actor.work.remote(600))], should_stop=cancel_a.is_set)
            except BaseException as exc:  # noqa: BLE001 - looked at below
                outcome["a"] = exc

        b_workers: list = []

        def submit_b(actor):
            b_workers.append(actor)
            return actor.work.remote(0.1)

        def job_b() -> None:
            try:
                outcome["b"] = run_chunks(pool, [("b", submit_b)])
            except BaseException as exc:  # noqa: BLE001 - looked at below
                outcome["b"] = exc

        a = threading.Thread(target=job_a)
        a.start()
        time.sleep(1.0)  # A's chunk is running on the pool's one worker
        b = threading.Thread(target=job_b)
        b.start()
        deadline = time.monotonic() + 60
        while not b_workers:  # B's chunk is queued on that worker, behind A's
            assert time.monotonic() < deadline, "job B never submitted its chunk"
            time.sleep(0.05)
        assert b_workers == [shared]
        cancel_a.set()
        a.join(60)
        b.join(120)
        assert isinstance(outcome.get("a"), dispatch.CancelledError)
        assert outcome.get("b") == {"b": "done"}
        assert len(b_workers) == 2 and b_workers[1] is not shared  # re-run once, on the fresh worker
        assert shared not in pool.ready
    finally:
        pool.shutdown()


def test_the_worker_start_timeout_comes_from_the_environment_and_reaches_the_cluster(monkeypatch):
    from cluster.connect import project_runtime_env

    monkeypatch.delenv("STYLECAST_WORKER_START_TIMEOUT_S", raising=False)
    assert dispatch.start_timeout_s() == 120.0
    assert "STYLECAST_WORKER_START_TIMEOUT_S" not in project_runtime_env()["env_vars"]
    monkeypatch.setenv("STYLECAST_WORKER_START_TIMEOUT_S", "900")
    assert dispatch.start_timeout_s() == 900.0  # read per job, not at import
    # A job dispatched by the cluster's JobManager reads it there: the driver's runtime_env carries it.
    assert project_runtime_env()["env_vars"]["STYLECAST_WORKER_START_TIMEOUT_S"] == "900"
    for bad in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv("STYLECAST_WORKER_START_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="STYLECAST_WORKER_START_TIMEOUT_S"):
            dispatch.start_timeout_s()


@ray.remote(num_cpus=0.5, max_restarts=0)
class _OnceStuckWorker:
    """The first worker to take chunk "slow" hangs on it (a hung mount); a second attempt is quick."""

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def work(self, key: str, marker: str) -> str:
        from pathlib import Path

        if key == "slow" and not Path(marker).exists():
            Path(marker).touch()
            time.sleep(600)
        time.sleep(0.05)
        return key


def test_a_chunk_stuck_on_one_worker_is_run_again_on_another(local_ray, monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(dispatch, "STRAGGLER_MIN_S", 1.0)
    pool = ActorPool(_OnceStuckWorker, max_size=2)
    marker = str(tmp_path / "slow-started")
    try:
        _fill(pool)
        keys = ["slow"] + [f"k{i}" for i in range(5)]
        before = list(pool.ready)
        t0 = time.monotonic()
        results = run_chunks(pool, [(k, lambda actor, k=k: actor.work.remote(k, marker)) for k in keys])
        assert results == {k: k for k in keys}
        assert time.monotonic() - t0 < 60  # not the stuck worker's 600 s
        assert "chunk slow has run" in capfd.readouterr().err
        gone = [a for a in before if a not in pool.ready]
        assert len(gone) == 1
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(gone[0].ping.remote(), timeout=30)
        # The stuck worker was killed; the pool has a fresh one in its place for the next job.
        assert run_chunks(pool, [(k, lambda actor, k=k: actor.work.remote(k, marker)) for k in keys]) == \
            {k: k for k in keys}
        _fill(pool)
        assert len(pool.ready) == 2
    finally:
        pool.shutdown()
