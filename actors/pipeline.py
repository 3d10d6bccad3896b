"""The job pipeline on Ray: split → dispatch → gather, with progress events and cancellation.

The orchestrator only decides time ranges, hands them to stage actors and gathers the results in order; all
media work happens in the actors.  Source and template are analysed concurrently (their ranges share one
worker pool), audio alongside; the render plan is split into GOP-aligned output ranges, each rendered and
encoded by a worker; the segments are joined by remux, with the audio, on the caller's node.
"""
from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.dispatch import STOP_WAIT_S, ActorPool, ChunkFailed, run_chunks
from actors.stages import AudioAnalyzer, CancelFlag, Renderer, StyleApplier, StyleExtractor, VideoAnalyzer
from stylecast.analyze import split_ranges
from stylecast.engine import write_json_atomic
from stylecast.errors import CancelledError
from stylecast.paths import atomic_output
from stylecast.media.probe import probe
from stylecast.options import Options
from stylecast.plan import RenderPlan
from stylecast.render import output_ranges
from stylecast.style import StyleJSON

DEFAULT_CHUNK_SECONDS = 2.0
Progress = Callable[[str, int, int], None]


@dataclass
class PipelineResult:
    output: Path
    style: StyleJSON
    plan: RenderPlan
    stage_seconds: dict[str, float] = field(default_factory=dict)
    chunk_nodes: dict[str, list[str]] = field(default_factory=dict)  # stage -> node id per chunk, in order
    chunk_work_seconds: dict[str, list[float]] = field(default_factory=dict)  # stage -> in-actor seconds per chunk


class Pipeline:
    """Warm stage actors for running jobs on the connected Ray cluster (see `cluster.connect`)."""

    def __init__(self) -> None:
        if not ray.is_initialized():
            raise RuntimeError("connect to Ray first (cluster.connect)")
        self.analyzers = ActorPool(VideoAnalyzer, per_cpu=1.0)
        self.renderers = ActorPool(Renderer, per_cpu=1.0)
        here = ray.get_runtime_context().get_node_id()
        local = self._local = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
        # The job's single small actors live on this node, beside the joiner: worker nodes then hold chunk
        # workers only, which the pools stop when a node is drained, so a drained node soon stands idle.
        self.audio = AudioAnalyzer.options(scheduling_strategy=local).remote()
        self.extractor = StyleExtractor.options(scheduling_strategy=local).remote()
        self.applier = StyleApplier.options(scheduling_strategy=local).remote()
        # The joiner writes the output file, so it lives where the caller can read it; if its process dies it
        # is restarted there and the join re-run (a join only reads segments and writes one temporary file).
        self.joiner = Renderer.options(num_cpus=0, scheduling_strategy=local, max_restarts=-1,
                                       max_task_retries=1).remote()

    def retire_draining(self) -> None:
        """Let drained nodes go: see `ActorPool.retire_draining` (for pools that no job is dispatching on)."""
        for pool in (self.analyzers, self.renderers):
            pool.retire_draining()

    def shutdown(self) -> None:
        self.analyzers.shutdown()
        self.renderers.shutdown()
        for actor in (self.audio, self.extractor, self.applier, self.joiner):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass

    def run(
        self,
        source: str | Path,
        template: str | Path,
        out_path: str | Path,
        options: Options | None = None,
        *,
        chunk_seconds: float | None = None,
        style_json_path: str | Path | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> PipelineResult:
        """Run one job; raises the stage's error (e.g. `MediaError`), or `CancelledError` when cancelled."""
        options = options or Options()
        chunk_seconds = chunk_seconds or DEFAULT_CHUNK_SECONDS
        source, template, out_path = str(Path(source).resolve()), str(Path(template).resolve()), Path(out_path)
        progress = progress or (lambda stage, done, total: None)
        should_stop = (lambda: cancel.is_set()) if cancel is not None else None
        # The flag lives on this node, with the orchestrator: losing a worker node must not lose it.
        flag = CancelFlag.options(scheduling_strategy=self._local).remote()
        timings: dict[str, float] = {}
        nodes: dict[str, list[str]] = {}
        work: dict[str, list[float]] = {}
        try:
            infos = {"template": probe(template), "source": probe(source)}
            paths = {"template": template, "source": source}

            # --- analysis: both videos' ranges in one pool, audio alongside
            t = time.perf_counter()
            tasks = []
            # Camera motion is estimated only where it is used: the template's, when the job transfers motion
            # (the source's own moves are never used).
            motion_wanted = {"template": options.transfer.motion, "source": False}
            for name in ("template", "source"):
                for k, (t0, t1) in enumerate(split_ranges(infos[name].duration_s, chunk_seconds)):
                    tasks.append(((name, k), _analyze_task(paths[name], t0, t1, infos[name], flag,
                                                           motion=motion_wanted[name])))
            audio_refs = {name: self.audio.analyze.remote(paths[name], infos[name]) for name in paths}
            done = [0]

            def analysed(key, value):
                done[0] += 1
                progress("video_analysis", done[0], len(tasks))

            progress("video_analysis", 0, len(tasks))
            results = run_chunks(self.analyzers, tasks, on_done=analysed, should_stop=should_stop,
                                 on_cancel=lambda: flag.set.remote())
            timings["video_analysis"] = time.perf_counter() - t
            nodes["video_analysis"] = [results[key][1] for key, _ in tasks]
            work["video_analysis"] = [results[key][2] for key, _ in tasks]

            t = time.perf_counter()
            progress("audio_analysis", 0, 2)
            audio = {}
            for i, name in enumerate(("template", "source")):
                audio[name] = self._get(audio_refs[name], should_stop)
                progress("audio_analysis", i + 1, 2)
            timings["audio_analysis"] = time.perf_counter() - t

            t = time.perf_counter()
            progress("motion_analysis", 0, 2)
            analyses = {}
            finish_refs = {}
            for name in ("template", "source"):
                parts = [results[key][0] for key, _ in tasks if key[0] == name]
                finish_refs[name] = self.extractor.finish.remote(infos[name], parts, *audio[name],
                                                                  motion_wanted[name])
            for i, name in enumerate(("template", "source")):
                analyses[name] = finish_refs[name]  # keep as refs: they go straight to the next actors
                self._wait(finish_refs[name], should_stop)
                progress("motion_analysis", i + 1, 2)
            timings["motion_analysis"] = time.perf_counter() - t

            t = time.perf_counter()
            progress("style_extraction", 0, 1)
            style: StyleJSON = self._get(self.extractor.extract.remote(analyses["template"]), should_stop)
            progress("style_extraction", 1, 1)
            timings["style_extraction"] = time.perf_counter() - t

            t = time.perf_counter()
            progress("style_application", 0, 1)
            plan: RenderPlan = self._get(self.applier.plan.remote(analyses["source"], style, options), should_stop)
            progress("style_application", 1, 1)
            timings["style_application"] = time.perf_counter() - t

            # --- render: GOP-aligned output ranges, each an independent segment
            t = time.perf_counter()
            plan_ref = ray.put(plan)
            # The audio is cut and encoded beside the chunks (on the joiner's node), not after them: the join
            # then only remuxes, and no worker idles while one core encodes the audio at the end.
            audio_ref = self.joiner.encode_audio.remote(plan_ref, cancel_flag=flag)
            ranges = output_ranges(plan, chunk_seconds)
            render_tasks = [(k, _render_task(plan_ref, n0, n1, flag)) for k, (n0, n1) in enumerate(ranges)]
            frames_done = [0]

            def rendered(key, value):
                self.analyzers.retire_draining()  # idle while the job renders: no refresh of its own
                frames_done[0] += value[2]
                progress("rendering", frames_done[0], plan.output.frame_count)

            progress("rendering", 0, plan.output.frame_count)
            segments = run_chunks(self.renderers, render_tasks, on_done=rendered, should_stop=should_stop,
                                  on_cancel=lambda: flag.set.remote())
            nodes["rendering"] = [segments[k][1] for k in range(len(ranges))]
            work["rendering"] = [segments[k][3] for k in range(len(ranges))]
            seg_refs = [ray.put(segments[k][0]) for k in range(len(ranges))]
            del segments
            with atomic_output(out_path) as tmp:
                # Named here, so that this process can remove it if the joiner's process is killed mid-join.
                join_dir = tmp.parent / f".stylecast-join-{uuid.uuid4().hex[:12]}"
                join = self.joiner.join.remote(str(tmp), *seg_refs, audio=audio_ref,
                                               cancel_flag=flag, work_dir=str(join_dir))
                try:
                    self._get(join, should_stop)
                except BaseException:
                    # Cancelled, failed, Ctrl-C or SIGTERM: the joiner sees the flag and removes what it wrote;
                    # wait for that before atomic_output cleans up (or the file would appear after the
                    # cleanup), then remove whatever a killed joiner left: its scratch folder, its output.
                    flag.set.remote()
                    ray.wait([join], timeout=STOP_WAIT_S)
                    shutil.rmtree(join_dir, ignore_errors=True)
                    for partial in tmp.parent.glob(f".{tmp.stem}.*.partial{tmp.suffix}"):
                        partial.unlink(missing_ok=True)
                    raise
            timings["rendering"] = time.perf_counter() - t
            if style_json_path:  # last: a job that fails or is stopped leaves no file behind
                write_json_atomic(style_json_path, style.model_dump(mode="json"))
            return PipelineResult(out_path, style, plan, timings, nodes, work)
        finally:
            try:
                ray.kill(flag)
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _wait(ref, should_stop) -> None:
        while True:
            if should_stop is not None and should_stop():  # first: a cancel may have come before this step
                raise CancelledError("cancelled")
            ready, _ = ray.wait([ref], timeout=0.25)
            if ready:
                return

    def _get(self, ref, should_stop):
        self._wait(ref, should_stop)
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:  # one line for the user, not Ray's multi-line report
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ChunkFailed(f"a stage worker died and could not be restarted: {first}") from None


def _analyze_task(path, t0, t1, info, flag, motion=True):
    return lambda actor: actor.analyze_range.remote(path, t0, t1, info, flag, motion)


def _render_task(plan_ref, n0, n1, flag):
    return lambda actor: actor.render_range.remote(plan_ref, n0, n1, flag)
