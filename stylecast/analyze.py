"""Analysis of one video: per-range feature extraction (the chunk worker's job) and the merge that turns
gathered features into shots, transitions, per-shot colour and motion, framing and audio facts.

`analyze_video_range` is what a worker runs on ``[t0, t1)``: it decodes its own range at analysis resolution
(plus the one frame before it, so scores on a seam are the same however the video is split) and returns
small per-frame arrays.  `finish_analysis` runs once on the gathered, ordered arrays.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stylecast.analysis.audio import AudioFeatures, analyze_audio
from stylecast.analysis.motion import ShotMotion, estimate_pair_motion, summarize_motion
from stylecast.analysis.shots import (
    FeatureStream,
    FeatureTrack,
    Transition,
    concat_tracks,
    detect_letterbox,
    detect_transitions,
    shots_from_transitions,
    stack_features,
)
from stylecast.color import ColorStats, color_stats
from stylecast.errors import CancelledError
from stylecast.media.decode import fit_size, iter_frames, read_audio
from stylecast.media.probe import ProbeInfo, probe
from stylecast.style import Letterbox

ANALYSIS_MAX_SIDE = 320  # px: analysis frames fit in 320×320, aspect kept
AUDIO_ANALYSIS_RATE = 22050  # Hz
MAX_SHOT_PIXELS = 30000  # LAB samples kept per shot for colour fitting


@dataclass
class RangeFeatures:
    """What a worker returns for ``[t0, t1)``: per-frame features and motion, a few KB per frame."""

    t0: float
    t1: float
    track: FeatureTrack | None  # None when no frame falls in the range
    motion: np.ndarray  # (n, 5) content motion from the previous frame (zeros for the video's first frame)


def analysis_size(info: ProbeInfo) -> tuple[int, int]:
    return fit_size(info, ANALYSIS_MAX_SIDE, ANALYSIS_MAX_SIDE)


def analyze_video_range(path: str | Path, t0: float, t1: float | None, *, info: ProbeInfo | None = None,
                        should_stop: Callable[[], bool] | None = None, motion: bool = True,
                        threads: int = 0) -> RangeFeatures:
    """Features of the frames in ``[t0, t1)`` seconds, each scored against its true predecessor.

    should_stop: polled every few frames; when it returns True the range is abandoned (`CancelledError`).
    motion: estimate camera motion between frames.  A job's *source* needs none (the moves it gets are the
            template's), so the engine skips that work there; its shots then read as static.
    threads: decoder threads (0 = FFmpeg's choice; 1 when ranges run side by side).
    """
    info = info or probe(path)
    size = analysis_size(info)
    prev_rgb = prev_gray = None
    feats, times, pairs = [], [], []
    # One decode from a little before t0: the frames before t0 only provide the predecessor.  VFR streams can
    # drop frames, so the margin is widened if no predecessor turned up.
    for margin in (3.0 / info.fps, 1.0, t0):
        start = max(0.0, t0 - margin) if t0 > 0 else 0.0
        k, stream = 0, None
        for frame in iter_frames(path, start, t1, info=info, size=size, threads=threads, deblock=False):
            if frame.time_s < t0 - 1e-6:
                prev_rgb = frame.rgb
                continue
            if t0 > 0 and prev_rgb is None and k == 0 and start > 0:
                break  # no predecessor within the margin: widen it
            if should_stop is not None and k % 8 == 0 and should_stop():
                raise CancelledError("cancelled")
            if stream is None:
                stream = FeatureStream(prev_rgb)
            feats.append(stream.push(frame.rgb))
            if motion:
                if prev_gray is None and prev_rgb is not None:
                    prev_gray = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
                gray = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
                pairs.append(np.zeros(5) if prev_gray is None else estimate_pair_motion(prev_gray, gray))
            else:
                gray = None
                pairs.append(np.zeros(5))
            times.append(frame.time_s)
            prev_rgb, prev_gray = frame.rgb, gray
            k += 1
        if feats or t0 <= 0 or start <= 0:
            break
    if not feats:
        return RangeFeatures(t0, t1 if t1 is not None else t0, None, np.zeros((0, 5)))
    return RangeFeatures(
        t0, t1 if t1 is not None else times[-1], stack_features(feats, times, info.fps), np.asarray(pairs, np.float64)
    )


def merge_ranges(parts: Sequence[RangeFeatures]) -> tuple[FeatureTrack, np.ndarray]:
    """Concatenate range results (in time order) into one track and one motion array."""
    parts = sorted((p for p in parts if p.track is not None), key=lambda p: p.t0)
    if not parts:
        raise ValueError("no video frames were decoded")
    return concat_tracks([p.track for p in parts]), np.concatenate([p.motion for p in parts])


def analyze_audio_file(path: str | Path, info: ProbeInfo) -> tuple[AudioFeatures | None, str | None]:
    """Audio facts, or ``(None, reason)`` when there is no usable audio (a normal case)."""
    if info.audio is None:
        return None, "no audio track"
    samples = read_audio(path, info=info, sample_rate=AUDIO_ANALYSIS_RATE, channels=2, t1=info.duration_s)
    if samples is None or samples.shape[1] == 0:
        return None, "the audio track is empty"
    return analyze_audio(samples, AUDIO_ANALYSIS_RATE), None


@dataclass
class ShotAnalysis:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    color: ColorStats | None
    motion: ShotMotion
    pixels: np.ndarray  # (m, 3) float32 LAB samples (frames inside gradual transitions excluded)


@dataclass
class VideoAnalysis:
    probe: ProbeInfo
    track: FeatureTrack
    motion: np.ndarray
    transitions: list[Transition]
    shots: list[ShotAnalysis]
    letterbox: Letterbox
    audio: AudioFeatures | None
    audio_reason: str | None = None
    fade_colors: dict[int, str] = field(default_factory=dict)
    motion_analysed: bool = True  # False: camera motion was not estimated (every shot then reads as static)

    def report(self) -> dict:
        """The JSON document of ``stylecast analyze``."""
        return {
            "probe": self.probe.model_dump(),
            "cuts": [{"frame": t.frame, "time_s": round(t.time_s, 6), "kind": t.kind,
                      "duration_s": round(t.duration_s, 6)} for t in self.transitions],
            "shots": [
                {"start_s": round(s.start_s, 6), "end_s": round(s.end_s, 6), "start_frame": s.start_frame,
                 "end_frame": s.end_frame, "motion": s.motion.model_dump(),
                 "color": None if s.color is None else {"mean_lab": s.color.mean, "contrast": s.color.contrast,
                                                         "saturation_mean": s.color.saturation_mean}}
                for s in self.shots
            ],
            "framing": self.letterbox.model_dump(),
            "audio": None if self.audio is None else {
                "tempo_bpm": self.audio.tempo_bpm, "beats_s": self.audio.beats_s, "lufs": self.audio.lufs,
                "beat_strength": self.audio.beat_strength, "onset_density_per_s": self.audio.onset_density_per_s,
            },
            "audio_reason": self.audio_reason,
        }


def finish_analysis(
    info: ProbeInfo,
    track: FeatureTrack,
    motion: np.ndarray,
    audio: AudioFeatures | None,
    audio_reason: str | None = None,
    motion_analysed: bool = True,
) -> VideoAnalysis:
    """Shots, transitions, per-shot colour/motion and framing from a whole video's gathered features."""
    n = track.n_frames
    transitions = detect_transitions(track)
    # fps: a one-frame video's only shot still lasts one frame (no second timestamp to take a step from).
    shots = shots_from_transitions(transitions, n, fps=track.fps, times_s=track.times_s)
    in_transition = np.zeros(n, bool)
    for t in transitions:
        if t.kind != "cut":
            in_transition[t.start_frame : t.end_frame + 1] = True
    h, w = track.frame_size
    result = []
    for i, shot in enumerate(shots):
        frames = np.arange(shot.start_frame, shot.end_frame)
        clean = frames[~in_transition[frames]]
        if clean.size == 0:
            clean = frames
        pixels = track.lab_samples[clean].reshape(-1, 3).astype(np.float32)
        if pixels.shape[0] > MAX_SHOT_PIXELS:
            pixels = pixels[:: int(np.ceil(pixels.shape[0] / MAX_SHOT_PIXELS))]
        # Motion pair k is frame k-1 → k; the pair that enters the shot belongs to the cut, not the shot.
        pairs = motion[shot.start_frame + 1 : shot.end_frame]
        result.append(ShotAnalysis(
            index=i, start_frame=shot.start_frame, end_frame=shot.end_frame, start_s=shot.start_s, end_s=shot.end_s,
            color=color_stats(pixels) if pixels.size else None,
            motion=summarize_motion(pairs, track.fps, w, h),
            pixels=pixels,
        ))
    top, bottom, left, right = detect_letterbox(track)
    letterbox = Letterbox(top=top / h, bottom=bottom / h, left=left / w, right=right / w)
    fade_colors = {
        i: ("black" if float(track.mean_luma[t.frame]) < 50.0 else "white")
        for i, t in enumerate(transitions) if t.kind == "fade"
    }
    return VideoAnalysis(info, track, motion, transitions, result, letterbox, audio, audio_reason, fade_colors,
                         motion_analysed)


def split_ranges(duration_s: float, chunk_seconds: float | None) -> list[tuple[float, float | None]]:
    """Time ranges covering ``[0, duration)``; the last is open-ended so no trailing frame is lost."""
    if not chunk_seconds or chunk_seconds >= duration_s:
        return [(0.0, None)]
    edges = list(np.arange(0.0, duration_s, chunk_seconds))
    ranges: list[tuple[float, float | None]] = [(float(a), float(b)) for a, b in zip(edges, edges[1:])]
    ranges.append((float(edges[-1]), None))
    return ranges


@dataclass
class AnalysisJob:
    """One video's analysis cut into independent tasks (time ranges, then the audio) and the merge after them.

    The local engine runs the tasks of several jobs on one thread pool (`stylecast.threads.run_all`); the
    Ray pipeline sends the same range work to actors.
    """

    path: str
    info: ProbeInfo
    ranges: list[tuple[float, float | None]]
    motion: bool = True
    threads: int = 0  # decoder threads per range

    @classmethod
    def plan(cls, path: str | Path, *, info: ProbeInfo | None = None, chunk_seconds: float | None = None,
             parts: int = 1, motion: bool = True) -> AnalysisJob:
        """``chunk_seconds`` long ranges, or else ``parts`` equal ones (one per worker: one seek each)."""
        info = info or probe(path)
        if not chunk_seconds and parts > 1:
            chunk_seconds = info.duration_s / parts + 1e-6
        ranges = split_ranges(info.duration_s, chunk_seconds)
        # Ranges side by side: one decoder thread each; a single range keeps FFmpeg's own threading.
        return cls(str(path), info, ranges, motion, 1 if len(ranges) > 1 else 0)

    def audio_task(self) -> Callable[[Callable[[], bool]], object]:
        return lambda stop: analyze_audio_file(self.path, self.info)

    def video_tasks(self) -> list[Callable[[Callable[[], bool]], object]]:
        def video(t0, t1):
            return lambda stop: analyze_video_range(self.path, t0, t1, info=self.info, should_stop=stop,
                                                    motion=self.motion, threads=self.threads)

        return [video(t0, t1) for t0, t1 in self.ranges]

    def finish(self, audio_result: tuple, video_results: Sequence[RangeFeatures]) -> VideoAnalysis:
        """Merge the results of `audio_task` and `video_tasks` (in order)."""
        audio, reason = audio_result
        track, motion = merge_ranges(video_results)
        return finish_analysis(self.info, track, motion, audio, reason, motion_analysed=self.motion)


# Task costs for the scheduler, in decoded-pixel equivalents (about 2.2 ns each here).  Per frame a range also
# pays for its work at analysis size, whatever the source's size (~2 ms: as much as decoding ~1 Mpx), and,
# when camera motion is estimated, for tracking it (~4.3 ms).  Without these, a small template's ranges looked
# cheap beside an audio task and ran last, their motion leaving a core idle at the end.
_FRAME_COST = 1_000_000
_MOTION_FRAME_COST = 2_000_000
# An audio task: about that of 10 s of 640x360 frames' decoding.
_AUDIO_TASK_COST = 10 * 30 * 640 * 360


def analyze_files(
    jobs: Sequence[AnalysisJob],
    *,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[VideoAnalysis]:
    """Run the tasks of several analyses on one pool of ``workers`` threads; one `VideoAnalysis` per job.

    Each job is finished (`AnalysisJob.finish`: shots, colour and motion summaries) by the thread that ends
    its last task, while the other threads still work on the other jobs' tasks, so only the last job's
    finish is left to run after the pool has drained.
    """
    from stylecast.threads import opencv_single_threaded, run_all

    if workers > 1:
        opencv_single_threaded()  # the tasks already fill every core
    tasks = [job.audio_task() for job in jobs]
    owner = list(range(len(jobs)))  # the job each task belongs to
    costs = [0.0] * len(jobs)  # an audio task costs about as much as a short low-resolution video range
    spans = []
    for j, job in enumerate(jobs):
        video = job.video_tasks()
        spans.append((len(tasks), len(tasks) + len(video)))
        tasks += video
        owner += [j] * len(video)
        per_frame = (job.info.display_width * job.info.display_height + _FRAME_COST
                     + (_MOTION_FRAME_COST if job.motion else 0))
        costs += [((t1 if t1 is not None else job.info.duration_s) - t0) * job.info.fps * per_frame
                  for t0, t1 in job.ranges]
    results: list = [None] * len(tasks)
    left = [1 + b - a for a, b in spans]  # tasks of each job still running or queued
    finished: list[VideoAnalysis | None] = [None] * len(jobs)
    lock = threading.Lock()

    def task_then_finish(k: int) -> Callable[[Callable[[], bool]], None]:
        def run(stop: Callable[[], bool]) -> None:
            results[k] = tasks[k](stop)
            j = owner[k]
            with lock:
                left[j] -= 1
                last = left[j] == 0
            if last:
                a, b = spans[j]
                finished[j] = jobs[j].finish(results[j], results[a:b])

        return run

    # Longest first (LPT): the threads then end close together, the short tasks filling the gaps at the end.
    order = sorted(range(len(tasks)), key=lambda k: -costs[k] if k >= len(jobs) else -_AUDIO_TASK_COST)
    done = [0]

    def on_done(_: int) -> None:
        done[0] += 1
        if progress:
            progress("analysis", done[0], len(tasks))

    run_all([task_then_finish(k) for k in order], workers, should_stop=should_stop, on_done=on_done)
    return finished  # type: ignore[return-value]  (run_all returns only when every task, finish included, ran)


def analyze_file(
    path: str | Path,
    *,
    info: ProbeInfo | None = None,
    chunk_seconds: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    motion: bool = True,
    workers: int = 1,
) -> VideoAnalysis:
    """Analyse a whole video in this process, range by range (the same code path the cluster runs)."""
    job = AnalysisJob.plan(path, info=info, chunk_seconds=chunk_seconds, parts=workers, motion=motion)
    return analyze_files([job], workers=workers, progress=progress)[0]
