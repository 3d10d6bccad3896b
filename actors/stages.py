"""Stage actors: thin, warm wrappers around the engine's pure stage functions.

Each actor keeps what is expensive to set up (compiled Numba kernels, a loaded librosa, probe results of
the files it works on) and calls one stage function.  Chunk workers return small things only: feature
arrays, or a compressed H.264 segment — never raw frames.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import ray

from stylecast.analyze import RangeFeatures, analyze_audio_file, analyze_video_range, finish_analysis, merge_ranges
from stylecast.media.probe import ProbeInfo
from stylecast.style import extract_style
from stylecast.threads import opencv_single_threaded

# Chunk workers take half a core each so that an analysis pool and a render pool fit side by side on every
# node (the phases of a job hardly overlap, so each pool in practice gets the whole node).
CHUNK_WORKER_CPUS = 0.5
# How often a chunk worker asks its job's cancel flag (a round trip to one actor that every worker of the job
# shares): well inside the 5 s a cancellation may take, and no cost per frame.
FLAG_POLL_S = 0.2


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


class _Warm:
    """Common warm state: one core per worker, kernels compiled once, a cancel check."""

    def __init__(self) -> None:
        import numba

        # One core per chunk worker: parallelism comes from the chunks.  (Set at run time: the
        # NUMBA_NUM_THREADS variable may not change once Numba has started its threads.)
        numba.set_num_threads(1)
        opencv_single_threaded()
        self.node_id = _node_id()

    def ping(self) -> str:
        return self.node_id

    @staticmethod
    def _stopper(cancel_flag, every_s: float = FLAG_POLL_S):
        """A should-stop callable for the stage functions: asks the job's flag at most every ``every_s``."""
        if cancel_flag is None:
            return None
        state = {"next": 0.0, "stop": False}

        def should_stop() -> bool:
            now = time.monotonic()
            if state["stop"] or now < state["next"]:
                return state["stop"]
            try:
                state["stop"] = bool(ray.get(cancel_flag.is_set.remote(), timeout=10))
            except ray.exceptions.RayActorError:
                # The flag dies with its job (the orchestrator kills it when the job ends, and it lives on the
                # orchestrator's node): nobody will collect this result.
                state["stop"] = True
            except ray.exceptions.GetTimeoutError:
                pass  # a slow answer must not fail a healthy chunk: ask again next time
            state["next"] = time.monotonic() + every_s
            return state["stop"]

        return should_stop


@ray.remote(num_cpus=CHUNK_WORKER_CPUS, max_restarts=0)
class VideoAnalyzer(_Warm):
    """Per-frame video features and frame-to-frame camera motion of one time range (stages video_analysis
    and motion_analysis share one decode of the range)."""

    def __init__(self) -> None:
        super().__init__()
        from kernels.features import motion_compensated_diff  # noqa: F401 - compile/load once

    def analyze_range(self, path: str, t0: float, t1: float | None, info: ProbeInfo,
                      cancel_flag=None, motion: bool = True) -> tuple[RangeFeatures, str, float]:
        """(features, node id, seconds of work)."""
        t = time.perf_counter()
        features = analyze_video_range(path, t0, t1, info=info, should_stop=self._stopper(cancel_flag),
                                       motion=motion, threads=1)
        return features, self.node_id, time.perf_counter() - t


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=2)
class AudioAnalyzer(_Warm):
    """Tempo, beats and loudness of a whole audio track (small work: one call per video)."""

    def analyze(self, path: str, info: ProbeInfo):
        return analyze_audio_file(path, info)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=2)
class StyleExtractor(_Warm):
    """Merges gathered ranges into shots/transitions/per-shot colour and motion; extracts StyleJSON."""

    def finish(self, info: ProbeInfo, parts: list[RangeFeatures], audio, audio_reason, motion_analysed: bool = True):
        track, motion = merge_ranges(parts)
        return finish_analysis(info, track, motion, audio, audio_reason, motion_analysed=motion_analysed)

    def extract(self, analysis):
        return extract_style(analysis)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=2)
class StyleApplier(_Warm):
    """Builds the render plan (the edit decision list) from the source analysis, StyleJSON and options."""

    def plan(self, analysis, style, options):
        from stylecast.plan import build_plan, output_spec
        from stylecast.render import decode_size_for

        out = output_spec(analysis, style, options)
        return build_plan(analysis, style, options,
                          decode_size=decode_size_for((out.width, out.height), analysis.probe))


_RENDER_DIR_PREFIX = "stylecast-render-"


def _remove_dead_workers_dirs() -> None:
    """A Renderer's scratch folder (``stylecast-render-<pid>-…`` in the temp dir) outlives a worker that was
    killed (pools are shut down with ray.kill) or crashed; the next Renderer on the node removes those whose
    process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_RENDER_DIR_PREFIX}*-*"):
        pid = folder.name[len(_RENDER_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another user's process: alive
            pass


@ray.remote(num_cpus=CHUNK_WORKER_CPUS, max_restarts=0)
class Renderer(_Warm):
    """Renders output-frame ranges into independent closed-GOP H.264 segments (returned as bytes); the one
    pinned to the caller's node also cuts the audio and joins the segments into the output file."""

    def __init__(self) -> None:
        super().__init__()
        from kernels.render_yuv import warmup

        warmup()
        _remove_dead_workers_dirs()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{_RENDER_DIR_PREFIX}{os.getpid()}-"))
        self._probes: dict = {}

    def _probe(self, path: str):
        """Probe results of the files this worker renders from, kept warm."""
        from stylecast.media.probe import probe

        if path not in self._probes:
            if len(self._probes) > 16:
                self._probes.clear()
            self._probes[path] = probe(path)
        return self._probes[path]

    def render_range(self, plan, n0: int, n1: int, cancel_flag=None) -> tuple[bytes, str, int, float]:
        """(encoded segment, node id, frames, seconds of work)."""
        from stylecast.render import render_range

        t = time.perf_counter()
        seg = self._tmp / f"seg-{os.getpid()}-{n0}-{n1}.mp4"
        try:
            render_range(plan, n0, n1, seg, info=self._probe(plan.source_path), threads=1,
                         should_stop=self._stopper(cancel_flag))
            return seg.read_bytes(), self.node_id, n1 - n0, time.perf_counter() - t
        finally:
            seg.unlink(missing_ok=True)

    def encode_audio(self, plan, cancel_flag=None) -> bytes | None:
        """The plan's audio, cut and AAC-encoded (an .m4a file's bytes; None when the output has none).  The
        orchestrator asks for it while the chunks render, so the join after them only remuxes."""
        from stylecast.render import encode_plan_audio

        path = self._tmp / f"audio-{os.getpid()}-{time.monotonic_ns()}.m4a"
        try:
            written = encode_plan_audio(plan, path, info=self._probe(plan.source_path),
                                        should_stop=self._stopper(cancel_flag))
            return None if written is None else written.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def join(self, out_path: str, *segments: bytes, audio: bytes | None, cancel_flag=None,
             work_dir: str | None = None) -> str:
        """Join ``segments`` and ``audio`` (`encode_audio`'s result) into ``out_path``; scratch files go to
        ``work_dir`` (made here, removed when done; the caller names it, so that it can remove it too if this
        process is killed)."""
        from stylecast.errors import CancelledError
        from stylecast.media.encode import join_segments

        stop = self._stopper(cancel_flag, every_s=0.0) or (lambda: False)
        if stop():  # given up while this call waited (for the audio, or behind another job's join)
            raise CancelledError("cancelled")
        if work_dir is None:
            work = Path(tempfile.mkdtemp(prefix="stylecast-join-", dir=str(Path(out_path).parent)))
        else:
            work = Path(work_dir)
            shutil.rmtree(work, ignore_errors=True)  # a retry after this process died starts clean
            work.mkdir()  # not its parents: a folder the caller has removed meanwhile must stay removed
        paths = []
        try:
            for k, data in enumerate(segments):
                p = work / f"{k:05d}.mp4"
                p.write_bytes(data)
                paths.append(p)
            audio_file = None
            if audio is not None:
                audio_file = work / "audio.m4a"
                audio_file.write_bytes(audio)
            if stop():
                raise CancelledError("cancelled")
            join_segments(paths, out_path, audio_file=audio_file)
            if stop():  # cancelled while joining: the caller has given the file up
                Path(out_path).unlink(missing_ok=True)
                raise CancelledError("cancelled")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out_path


@ray.remote(num_cpus=0)
class CancelFlag:
    """Set once to ask every worker of a job to stop; workers ask it every FLAG_POLL_S seconds.  Killed when the
    job ends: a worker that finds it gone stops too."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set
