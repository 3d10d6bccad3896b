"""The local engine's thread pool: results in order, the first failure stops the rest, cancellation."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stylecast.errors import CancelledError, MediaError
from stylecast.threads import StopFlag, available_cores, run_all


def _poll_until_stopped(stop, started: threading.Event | None = None, limit_s: float = 20.0) -> str:
    if started is not None:
        started.set()
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if stop():
            raise CancelledError("cancelled")
        time.sleep(0.005)
    return "ran to the end"  # only if nobody stopped it: the tests below then fail


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_come_back_in_task_order(workers):
    def task(k):
        def run(stop):
            time.sleep(0.01 * ((7 * k) % 5))  # finish out of order
            return k * k
        return run

    done = []
    assert run_all([task(k) for k in range(9)], workers, on_done=done.append) == [k * k for k in range(9)]
    assert sorted(done) == list(range(9))


def test_tasks_really_run_side_by_side():
    barrier = threading.Barrier(2, timeout=10)

    def task(stop):
        barrier.wait()  # both must be running at once, or this times out
        return threading.get_ident()

    idents = run_all([task, task], 2)
    assert idents[0] != idents[1]


def test_first_failure_stops_the_others_and_is_raised():
    started = threading.Event()
    stopped = []

    def slow(stop):
        try:
            return _poll_until_stopped(stop, started)
        except CancelledError:
            stopped.append(True)
            raise

    def bad(stop):
        started.wait(10)
        raise MediaError("damaged video data")

    with pytest.raises(MediaError, match="damaged"):
        run_all([slow, bad], 2)
    # run_all waited for the slow task to notice the flag before returning.
    assert stopped == [True]


def test_outer_cancellation_reaches_every_task():
    cancel = threading.Event()
    started = [threading.Event(), threading.Event()]

    def task(k):
        return lambda stop: _poll_until_stopped(stop, started[k])

    def cancel_when_both_run():
        for e in started:
            e.wait(10)
        cancel.set()

    threading.Thread(target=cancel_when_both_run, daemon=True).start()
    # Tasks that were not stopped would return normally after 20 s, and nothing would be raised.
    with pytest.raises(CancelledError):
        run_all([task(0), task(1)], 2, should_stop=cancel.is_set)


def test_serial_path_checks_the_stop_flag_between_tasks():
    ran = []
    with pytest.raises(CancelledError):
        run_all([lambda stop: ran.append(1), lambda stop: ran.append(2)], 1,
                should_stop=lambda: bool(ran))
    assert ran == [1]


def test_stop_flag_latches_the_outer_signal():
    outer = [False]
    flag = StopFlag(lambda: outer[0])
    assert not flag()
    outer[0] = True
    assert flag()
    outer[0] = False
    assert flag()  # once stopped, stays stopped


def _plan_like(frames: int, fps: float, cuts: list[int]):
    """What the range splitters read of a plan: the output's length and rate, and where its segments start."""
    from types import SimpleNamespace

    return SimpleNamespace(output=SimpleNamespace(frame_count=frames, fps=fps),
                           segments=[SimpleNamespace(out_start_frame=c) for c in [0] + cuts])


@pytest.mark.parametrize("frames, fps, cuts", [(600, 30.0, []), (601, 30.0, [15, 30, 95, 400]), (45, 30.0, [44]),
                                                (1, 25.0, []), (299, 29.97, [120, 121, 122])])
def test_gop_starts_are_the_cuts_and_at_most_a_gop_apart(frames, fps, cuts):
    """Every cut is an IDR; no GOP is longer than gop_frames; nothing else starts a GOP."""
    from stylecast.media.encode import gop_frames
    from stylecast.render import plan_gop_starts

    starts = plan_gop_starts(_plan_like(frames, fps, cuts))
    longest = gop_frames(fps)
    assert starts[0] == 0 and starts == sorted(set(starts)) and all(0 <= s < frames for s in starts)
    assert set(cuts) <= set(starts)
    gaps = [b - a for a, b in zip(starts, starts[1:] + [frames])]
    assert all(0 < g <= longest for g in gaps)
    shot_edges = sorted({0, *cuts, frames})
    for s in starts:  # a start that is not a cut lies a whole number of GOPs into its shot
        shot = max(e for e in shot_edges if e <= s)
        assert (s - shot) % longest == 0


@pytest.mark.parametrize("frames, fps, parts, cuts", [(600, 30.0, 4, []), (601, 30.0, 4, [15, 30, 95, 400]),
                                                      (45, 30.0, 6, [10, 20]), (1, 25.0, 3, []),
                                                      (299, 29.97, 2, [150]), (90, 30.0, 1, [])])
def test_render_ranges_partition_the_frames_on_gop_starts(frames, fps, parts, cuts):
    """The ranges a render is split into: every frame once, in order, each range starting on a GOP start (so
    segments join into the same stream however the job is split); ``parts`` of them when there are as many
    GOPs, each within a GOP of its equal share; ``chunk_seconds`` ranges at least that long but the last."""
    from stylecast.media.encode import gop_frames
    from stylecast.render import output_ranges, plan_gop_starts

    plan = _plan_like(frames, fps, cuts)
    starts = set(plan_gop_starts(plan))
    for ranges in (output_ranges(plan, None, parts=parts), output_ranges(plan, 1.3)):
        assert ranges[0][0] == 0 and ranges[-1][1] == frames
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(n0 in starts and n1 > n0 for n0, n1 in ranges)
    ranges = output_ranges(plan, None, parts=parts)
    assert len(ranges) == min(parts, len(starts))
    if len(ranges) == parts:
        assert all(abs(n0 - frames * k / parts) <= gop_frames(fps) for k, (n0, _) in enumerate(ranges))
    chunked = output_ranges(plan, 1.3)
    assert all(n1 - n0 >= round(1.3 * fps) for n0, n1 in chunked[:-1])


@pytest.mark.parametrize("cpu_max, cap", [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 2),
                                           ("50000 100000", 1), ("garbage", None)])
def test_available_cores_honours_a_cgroup_cpu_quota(tmp_path, cpu_max, cap):
    """In a container limited to N CPUs the local engine starts N workers, not one per host core."""
    import os

    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    want = affinity if cap is None else min(affinity, cap)
    assert available_cores(str(path)) == want
    assert available_cores(str(tmp_path / "absent")) == affinity


def test_plan_refuses_odd_letterbox_bars():
    """I420 bars must cover whole chroma samples."""
    from pydantic import ValidationError

    from stylecast.plan import OutputSpec

    ok = OutputSpec(width=64, height=48, fps=30.0, frame_count=1, crf=20, preset="veryfast", letterbox_px=(4, 4, 0, 0))
    assert ok.letterbox_px == (4, 4, 0, 0)
    with pytest.raises(ValidationError, match="even"):
        OutputSpec(width=64, height=48, fps=30.0, frame_count=1, crf=20, preset="veryfast", letterbox_px=(3, 4, 0, 0))


@pytest.mark.parametrize("frames, fps, workers, cuts", [(600, 30.0, 2, []), (601, 30.0, 2, [15, 30, 95, 400]),
                                                       (45, 30.0, 6, [20]), (1, 25.0, 3, []),
                                                       (299, 29.97, 2, [7, 150]), (3000, 25.0, 4, [1000])])
def test_guided_ranges_shrink_to_single_gops(frames, fps, workers, cuts):
    """The local render's queue: every frame once, on GOP starts, big ranges first and single GOPs at the end
    (so the threads finish close together however unevenly the content costs)."""
    from stylecast.render import guided_ranges, plan_gop_starts

    plan = _plan_like(frames, fps, cuts)
    starts = plan_gop_starts(plan)
    ranges = guided_ranges(plan, workers)
    assert ranges[0][0] == 0 and ranges[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(n0 in starts and n1 > n0 for n0, n1 in ranges)
    gops = [sum(1 for s in starts if n0 <= s < n1) for n0, n1 in ranges]
    assert gops[-1] == 1
    # each range holds about (frames left) / (2 workers): never less, and less one GOP it would be less
    for (n0, n1), g in zip(ranges, gops):
        want = -(-(frames - n0) // (2 * workers))
        inner = [s for s in starts if n0 < s < n1]
        assert n1 - n0 >= want or n1 == frames
        assert not inner or inner[-1] - n0 < want
    assert len(ranges) <= len(starts)
