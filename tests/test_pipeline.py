"""The job pipeline on a real multi-node Ray cluster (a head and two worker nodes on this machine):
chunks spread over nodes, the same answer however the videos are split, node loss, bad data, cancellation."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from actors.pipeline import Pipeline  # noqa: E402
from stylecast.analyze import analyze_file  # noqa: E402
from stylecast.errors import CancelledError, MediaError  # noqa: E402
from stylecast.media.decode import read_frames  # noqa: E402
from stylecast.options import Options  # noqa: E402

STORE = 120 * 1024**2
PACING_OFF = {"transfer": {"pacing": False}}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE})
    workers = [c.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(2)]
    ray.init(address=c.address, namespace="stylecast-tests")
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def pipeline(cluster):
    p = Pipeline()
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def runs(pipeline, source_clip, template_clip, tmp_path_factory):
    """The same jobs split in 1.3-s chunks and in one chunk, with pacing on and off."""
    out = tmp_path_factory.mktemp("pipeline")
    results = {}
    for pacing in ("on", "off"):
        opts = Options() if pacing == "on" else Options.model_validate(PACING_OFF)
        for chunks, seconds in (("split", 1.3), ("whole", 60.0)):
            results[pacing, chunks] = pipeline.run(source_clip.path, template_clip.path,
                                                   out / f"{pacing}-{chunks}.mp4", opts, chunk_seconds=seconds)
    return results


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


@pytest.mark.parametrize("pacing", ["on", "off"])
def test_same_answer_however_split(runs, pacing):
    split, whole = runs[pacing, "split"], runs[pacing, "whole"]
    assert split.style.pacing == whole.style.pacing
    assert [(t.time_s, t.kind) for t in split.style.transitions.items] == \
        [(t.time_s, t.kind) for t in whole.style.transitions.items]
    cuts_a = [(t.frame, t.kind) for t in analyze_file(split.output).transitions]
    cuts_b = [(t.frame, t.kind) for t in analyze_file(whole.output).transitions]
    assert cuts_a == cuts_b
    ta, fa = read_frames(split.output)
    tb, fb = read_frames(whole.output)
    assert len(ta) == len(tb) == split.plan.output.frame_count
    np.testing.assert_allclose(ta, tb, atol=1e-6)
    psnr = _psnr(fa, fb)
    assert psnr.mean() >= 40 and psnr.min() >= 35, (psnr.mean(), psnr.min())


def test_chunks_run_on_several_nodes(runs, cluster):
    _, workers = cluster
    worker_ids = {w.node_id for w in workers}
    split = runs["on", "split"]
    for stage in ("video_analysis", "rendering"):
        nodes = split.chunk_nodes[stage]
        assert len(nodes) >= 4
        assert set(nodes) <= worker_ids  # never the head: it has no CPU for chunk work
        assert len(set(nodes)) >= 2, (stage, nodes)


def test_bad_data_fails_fast_without_retries(pipeline, source_clip, template_clip, tmp_path):
    data = bytearray(source_clip.path.read_bytes())
    n = len(data)
    for i in range(n // 2, n // 2 + 6000):
        data[i] = (data[i] * 31 + 7) % 256
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    # Fails with the stage's own error (a retried chunk would end in ChunkFailed after MAX_ATTEMPTS).
    with pytest.raises(MediaError):
        pipeline.run(bad, template_clip.path, tmp_path / "out.mp4", Options(), chunk_seconds=1.3)
    assert not (tmp_path / "out.mp4").exists()


def test_cancel_stops_within_five_seconds(pipeline, source_clip, template_clip, tmp_path):
    cancel = threading.Event()
    asked: list[float] = []

    def progress(stage, done, total):
        if stage == "rendering" and done > 0 and not cancel.is_set():
            asked.append(time.monotonic())
            cancel.set()

    with pytest.raises(CancelledError):
        pipeline.run(source_clip.path, template_clip.path, tmp_path / "out.mp4", Options(), chunk_seconds=1.0,
                     progress=progress, cancel=cancel)
    # The functional bound (workers poll the cancel flag every few frames), not a speed target.
    assert asked and time.monotonic() - asked[0] < 5.0
    assert list(tmp_path.iterdir()) == []  # no output, no partial files
    # The workers are free again: a new job runs to completion.
    again = pipeline.run(source_clip.path, template_clip.path, tmp_path / "again.mp4",
                         Options.model_validate({"max_duration_s": 2.0}), chunk_seconds=1.0)
    assert again.output.exists()


def test_node_loss_during_rendering_still_completes(cluster, pipeline, runs, source_clip, template_clip, tmp_path):
    c, workers = cluster
    killed: list[str] = []

    def progress(stage, done, total):
        if stage == "rendering" and done > 0 and not killed:
            victim = workers[1]
            killed.append(victim.node_id)
            c.remove_node(victim, allow_graceful=False)

    result = pipeline.run(source_clip.path, template_clip.path, tmp_path / "survivor.mp4", Options(),
                          chunk_seconds=1.0, progress=progress)
    assert killed
    reference = runs["on", "whole"]
    ta, fa = read_frames(result.output)
    tb, fb = read_frames(reference.output)
    assert len(ta) == len(tb)
    psnr = _psnr(fa, fb)
    assert psnr.mean() >= 40 and psnr.min() >= 35
    # Chunks after the loss ran on the surviving node.
    assert result.chunk_nodes["rendering"][-1] != killed[0]
    workers[1] = c.add_node(num_cpus=1, object_store_memory=STORE)
    c.wait_for_nodes()


def test_motion_off_job_does_not_analyse_template_motion_on_ray_or_locally(pipeline, source_clip, template_clip,
                                                                           tmp_path):
    """The template's camera motion is estimated only when the job transfers it; both paths say so alike."""
    from stylecast import engine

    opts = Options.model_validate({"transfer": {"motion": False}, "max_duration_s": 2.0})
    on_ray = pipeline.run(source_clip.path, template_clip.path, tmp_path / "ray.mp4", opts, chunk_seconds=1.3)
    local = engine.run(source_clip.path, template_clip.path, tmp_path / "local.mp4", opts)
    for result in (on_ray, local):
        assert result.style.motion is None
        assert result.style.meta.failures["motion"] == "camera motion was not analysed: the job does not transfer motion"
        assert result.style.color is not None and result.style.pacing is not None
        assert result.output.exists()
    assert on_ray.style.pacing == local.style.pacing
    assert set(local.stage_seconds) == {"analysis", "style_extraction", "plan_and_render"}
    # The audio, cut and encoded beside the chunks on Ray and beside the ranges locally, is the same.
    assert _audio_packets(on_ray.output) == _audio_packets(local.output) != []


def _audio_packets(path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_cancel_during_the_join_leaves_no_file(pipeline, source_clip, template_clip, tmp_path):
    """Cancelled once every segment is rendered, i.e. while the joiner writes the output."""
    cancel = threading.Event()

    def progress(stage, done, total):
        if stage == "rendering" and total and done == total:
            cancel.set()

    with pytest.raises(CancelledError):
        pipeline.run(source_clip.path, template_clip.path, tmp_path / "out.mp4",
                     Options.model_validate({"max_duration_s": 2.0}), chunk_seconds=1.0, progress=progress,
                     cancel=cancel)
    assert cancel.is_set()
    assert list(tmp_path.iterdir()) == []  # the joiner's temporary file is gone too


def test_a_node_replaced_while_idle_gets_the_next_jobs_chunks(cluster, pipeline, source_clip, template_clip,
                                                              tmp_path):
    """Its pool actors die with the node between jobs: they are dropped, and the new node gets workers."""
    c, workers = cluster
    pipeline.run(source_clip.path, template_clip.path, tmp_path / "before.mp4",
                 Options.model_validate({"max_duration_s": 2.0}), chunk_seconds=1.0)  # pools on both nodes
    gone = workers[0]
    c.remove_node(gone, allow_graceful=False)
    workers[0] = c.add_node(num_cpus=1, object_store_memory=STORE)
    c.wait_for_nodes()
    result = pipeline.run(source_clip.path, template_clip.path, tmp_path / "after.mp4",
                          Options.model_validate({"max_duration_s": 2.0}), chunk_seconds=1.0)
    used = set(result.chunk_nodes["video_analysis"]) | set(result.chunk_nodes["rendering"])
    assert gone.node_id not in used
    assert workers[0].node_id in used


def test_a_draining_node_gets_no_chunks_and_its_workers_stop(cluster, pipeline, source_clip, template_clip,
                                                              tmp_path, capfd):
    """An admin drains a node (`ray drain-node`, as the autoscaler does): it stays alive until its deadline,
    but the next job's chunks go elsewhere, and the pools' workers there stop so the drain can finish."""
    from ray.core.generated import autoscaler_pb2

    c, workers = cluster
    short = Options.model_validate({"max_duration_s": 2.0})
    pipeline.run(source_clip.path, template_clip.path, tmp_path / "before.mp4", short, chunk_seconds=1.0)
    leaving = workers[1]
    pools = (pipeline.analyzers, pipeline.renderers)
    on_leaving = [a for pool in pools for a in pool.ready if pool.node(a) == leaving.node_id]
    assert on_leaving, "the pools should have workers on both nodes after a job"
    gcs = ray._private.worker.global_worker.gcs_client
    accepted, why = gcs.drain_node(leaving.node_id,
                                   autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                   "stylecast test", int(time.time() * 1000) + 600_000)
    assert accepted, why
    try:
        result = pipeline.run(source_clip.path, template_clip.path, tmp_path / "during.mp4", short,
                              chunk_seconds=1.0)
        assert result.output.exists()
        used = set(result.chunk_nodes["video_analysis"]) | set(result.chunk_nodes["rendering"])
        assert used == {workers[0].node_id}
        ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == leaving.node_id)
        assert f"node {ip} is being drained" in capfd.readouterr().err
        # The workers that were there are stopped (not only left idle, which would hold the drain up).
        # Between jobs the service's JobManager calls retire_draining every second; so does this loop.
        deadline = time.monotonic() + 90
        for actor in on_leaving:
            _wait_until_gone(actor, deadline, "a worker on the draining node kept running",
                             meanwhile=pipeline.retire_draining)
        assert all(pool.node(a) != leaving.node_id for pool in pools for a in pool.ready)
        # With nothing of stylecast left there, Ray completes the drain and stops the node itself.
        deadline = time.monotonic() + 90
        while any(n["Alive"] for n in ray.nodes() if n["NodeID"] == leaving.node_id):
            assert time.monotonic() < deadline, "the drained node kept running: something of stylecast is still there"
            time.sleep(0.2)
    finally:  # the node leaves for good; a fresh one takes its place for the next tests
        c.remove_node(leaving, allow_graceful=False)
        workers[1] = c.add_node(num_cpus=1, object_store_memory=STORE)
        c.wait_for_nodes()


def test_a_crashed_joiner_is_restarted_for_the_next_job(pipeline, source_clip, template_clip, tmp_path):
    ray.kill(pipeline.joiner, no_restart=False)  # as if its process had died
    result = pipeline.run(source_clip.path, template_clip.path, tmp_path / "o.mp4",
                          Options.model_validate({"max_duration_s": 2.0}), chunk_seconds=1.0)
    assert result.output.exists()


def _wait_until_gone(actor, deadline: float, message: str, meanwhile=lambda: None) -> None:
    """Until ``actor`` no longer answers (a kill takes effect asynchronously); ``meanwhile`` runs between tries."""
    while True:
        meanwhile()
        try:
            ray.get(actor.ping.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def test_a_worker_whose_process_died_between_jobs_leaves_the_pool(pipeline):
    pool = pipeline.renderers
    deadline = time.monotonic() + 120
    while len(pool.ready) < 2 and time.monotonic() < deadline:  # its workers are up (one per CPU: two)
        pool.refresh(force=True)
        time.sleep(0.1)
    victim = pool.ready[0]
    ray.kill(victim, no_restart=True)  # as if its process had crashed while idle
    # The kill takes effect asynchronously (a call made just after it may still be answered): wait until the
    # actor is gone, so that it died "between jobs".
    _wait_until_gone(victim, time.monotonic() + 60, "the killed actor kept answering")
    pool.refresh(force=True)
    assert victim not in pool.ready
    assert pool.ready  # and the others stay


def _library_threads(worker) -> tuple[int, int]:
    import cv2
    import numba

    return numba.get_num_threads(), cv2.getNumThreads()


def test_chunk_workers_keep_numba_and_opencv_to_one_thread(pipeline):
    # Parallelism comes from the chunks (one worker per CPU); the libraries' own threads would compete with them.
    for pool in (pipeline.analyzers, pipeline.renderers):
        deadline = time.monotonic() + 120
        while not pool.ready and time.monotonic() < deadline:
            pool.refresh(force=True)
            time.sleep(0.1)
        assert pool.ready
        for worker in pool.ready:
            assert ray.get(worker.__ray_call__.remote(_library_threads), timeout=60) == (1, 1)


@ray.remote(num_cpus=0, max_restarts=0)  # no CPU: it never waits for the CPUs earlier tests' actors hold
class _ShareReader:
    """A chunk worker whose node may lack the media share: there, opening the job's file fails."""

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def read(self, nodes_without_share: list[str]) -> str:
        from stylecast.errors import InputUnavailable

        node = ray.get_runtime_context().get_node_id()
        if node in nodes_without_share:
            raise InputUnavailable("src.mp4: cannot open (No such file or directory)")
        return node


def test_a_node_without_the_share_is_left_out_and_named(cluster, capfd):
    from actors.dispatch import ActorPool, run_chunks
    from stylecast.errors import InputUnavailable

    pool = ActorPool(_ShareReader, per_cpu=3)
    try:
        deadline = time.monotonic() + 60
        while len({pool.node_of[a._actor_id.hex()] for a in pool.ready}) < 2 and time.monotonic() < deadline:
            pool.refresh(force=True)
            time.sleep(0.1)
        nodes = sorted({pool.node_of[a._actor_id.hex()] for a in pool.ready})
        assert len(nodes) >= 2, "the pool's workers should be spread over several nodes"
        bad = nodes[0]
        tasks = [(k, lambda actor: actor.read.remote([bad])) for k in range(12)]
        results = run_chunks(pool, tasks)
        # Every chunk ran, on nodes that have the share; the other node is named on stderr.
        assert set(results) == set(range(12)) and bad not in set(results.values())
        ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == bad)
        assert f"node {ip} cannot read this job's files" in capfd.readouterr().err
        # No node with the share: the job fails at once, naming the nodes, with the media error's code.
        with pytest.raises(InputUnavailable, match="on every node with stylecast workers") as e:
            every = [n["NodeID"] for n in ray.nodes()]
            run_chunks(pool, [(k, lambda actor: actor.read.remote(every)) for k in range(4)])
        assert e.value.code == "media_error"
    finally:
        pool.shutdown()
