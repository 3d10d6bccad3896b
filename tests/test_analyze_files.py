"""Several analyses on one thread pool (`analyze_files`), each finished by the thread that ends its last task,
and the render's head start (`prepare_in_background`)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stylecast.analyze import AnalysisJob, analyze_file, analyze_files

REPO = Path(__file__).resolve().parents[1]


def _same_analysis(a, b) -> None:
    assert a.report() == b.report()
    assert np.array_equal(a.motion, b.motion)
    for f in dataclasses.fields(a.track):
        x, y = getattr(a.track, f.name), getattr(b.track, f.name)
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, f.name


@pytest.mark.parametrize("chunk_seconds", [None, 0.7])
def test_analyses_side_by_side_match_each_alone(source_clip, template_clip, chunk_seconds):
    jobs = [AnalysisJob.plan(template_clip.path, chunk_seconds=chunk_seconds, parts=2, motion=True),
            AnalysisJob.plan(source_clip.path, chunk_seconds=chunk_seconds, parts=2, motion=False)]
    finished_on = []
    real_finish = AnalysisJob.finish

    def finish(self, audio, video):
        finished_on.append((Path(self.path).name, threading.current_thread().name))
        return real_finish(self, audio, video)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AnalysisJob, "finish", finish)
        template, source = analyze_files(jobs, workers=2)
    # Each job is finished once, on a pool thread (beside the other job's tasks, not after the pool).
    assert sorted(name for name, _ in finished_on) == sorted([Path(template_clip.path).name,
                                                              Path(source_clip.path).name])
    assert all(thread.startswith("stylecast") for _, thread in finished_on)
    _same_analysis(template, analyze_file(template_clip.path, workers=1))
    _same_analysis(source, analyze_file(source_clip.path, workers=1, motion=False))


def test_a_failing_finish_fails_the_analysis_and_stops_the_other_jobs(source_clip, template_clip, monkeypatch):
    real_finish = AnalysisJob.finish
    started = []

    def finish(self, audio, video):
        if self.path == str(template_clip.path):
            raise ValueError("finish failed")
        return real_finish(self, audio, video)

    monkeypatch.setattr(AnalysisJob, "finish", finish)
    jobs = [AnalysisJob.plan(template_clip.path, parts=1, motion=False),
            AnalysisJob.plan(source_clip.path, chunk_seconds=0.25, motion=False)]
    real_tasks = AnalysisJob.video_tasks

    def video_tasks(self):
        def counted(task):
            def run(stop):
                started.append(self.path)
                return task(stop)
            return run
        return [counted(t) for t in real_tasks(self)]

    monkeypatch.setattr(AnalysisJob, "video_tasks", video_tasks)
    with pytest.raises(ValueError, match="finish failed"):
        analyze_files(jobs, workers=2)
    # The failure stopped the pool: not every one of the source's short ranges was started.
    assert started.count(str(source_clip.path)) < len(jobs[1].ranges)


def test_prepare_in_background_loads_the_serial_kernel_and_scipy_without_numba_threads():
    # A fresh interpreter: what the render and the plan need is loaded on the helper thread, and for several
    # workers only the serial kernel (its threads never start Numba's threading layer).
    code = """
import sys, numba
from stylecast.render import prepare_in_background
from kernels import render_yuv
thread = prepare_in_background(2)
assert thread.daemon and thread.name == "stylecast-prepare"
thread.join(600)
assert "scipy.optimize" in sys.modules and "scipy.ndimage" in sys.modules
assert render_yuv._SERIAL[render_yuv._render_yuv_one].signatures
assert render_yuv._SERIAL[render_yuv._render_yuv_two].signatures
assert not render_yuv._render_yuv_one.signatures
try:
    numba.threading_layer()
except ValueError:
    print("OK")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK", result.stdout


def test_side_by_side_analysis_turns_off_opencv_threads_without_changing_results(template_clip):
    # A fresh interpreter: OpenCV starts with its own worker threads; analysis tasks side by side turn them off
    # (they would compete with the tasks for the same cores), and the motion measured is the same either way.
    code = f"""
import cv2, numpy as np
from stylecast.analyze import AnalysisJob, analyze_file, analyze_files
cv2.setNumThreads(4)
alone = analyze_file({str(template_clip.path)!r}, workers=1)
assert cv2.getNumThreads() == 4, cv2.getNumThreads()
job = AnalysisJob.plan({str(template_clip.path)!r}, parts=2, motion=True)
side_by_side, = analyze_files([job], workers=2)
assert cv2.getNumThreads() == 1, cv2.getNumThreads()
assert np.array_equal(alone.motion, side_by_side.motion)
assert alone.report() == side_by_side.report()
print("OK")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK", result.stdout


def test_the_schedule_counts_per_frame_and_motion_work(source_clip, template_clip, monkeypatch):
    # Longest first: a video range's cost is not only its decoded pixels.  Each frame is also analysed at
    # analysis size, and a template's frames are tracked for camera motion; counted by pixels alone, these
    # small clips' ranges looked cheaper than an audio task and ran last, the motion leaving a core idle.
    started: list[str] = []

    def counted(kind, task):
        def run(stop):
            started.append(kind)
            return task(stop)
        return run

    real_video, real_audio = AnalysisJob.video_tasks, AnalysisJob.audio_task
    monkeypatch.setattr(AnalysisJob, "video_tasks",
                        lambda self: [counted(f"video:{self.motion}", t) for t in real_video(self)])
    monkeypatch.setattr(AnalysisJob, "audio_task", lambda self: counted("audio", real_audio(self)))
    jobs = [AnalysisJob.plan(template_clip.path, parts=2, motion=True),
            AnalysisJob.plan(source_clip.path, parts=2, motion=False)]
    analyze_files(jobs, workers=2)
    assert sorted(started) == ["audio", "audio", "video:False", "video:False", "video:True", "video:True"]
    assert started.index("audio") > max(i for i, kind in enumerate(started) if kind.startswith("video"))
