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


@pytest.mark.parametrize("frames, fps, parts", [(600, 30.0, 4), (601, 30.0, 4), (45, 30.0, 6), (1, 25.0, 3),
                                                (299, 29.97, 2), (90, 30.0, 1)])
def test_render_ranges_partition_the_frames_on_gop_bounds(frames, fps, parts):
    """The ranges the local render hands its threads: every frame once, in order, each range starting on a
    GOP (so segments join into the same stream however the job is split), as even as whole GOPs allow."""
    from types import SimpleNamespace

    from stylecast.media.encode import gop_frames
    from stylecast.render import output_ranges

    plan = SimpleNamespace(output=SimpleNamespace(frame_count=frames, fps=fps))
    ranges = output_ranges(plan, None, parts=parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    gop = gop_frames(fps)
    assert all(n0 % gop == 0 and n1 > n0 for n0, n1 in ranges)
    gops = -(-frames // gop)
    assert len(ranges) == min(parts, gops)
    sizes = [-(-(n1 - n0) // gop) for n0, n1 in ranges]
    assert max(sizes) - min(sizes) <= 1


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


@pytest.mark.parametrize("frames, fps, workers", [(600, 30.0, 2), (601, 30.0, 2), (45, 30.0, 6), (1, 25.0, 3),
                                                  (299, 29.97, 2), (3000, 25.0, 4)])
def test_guided_ranges_shrink_to_single_gops(frames, fps, workers):
    """The local render's queue: every frame once, on GOP bounds, big ranges first and single GOPs at the end
    (so the threads finish close together however unevenly the content costs)."""
    from types import SimpleNamespace

    from stylecast.media.encode import gop_frames
    from stylecast.render import guided_ranges

    plan = SimpleNamespace(output=SimpleNamespace(frame_count=frames, fps=fps))
    ranges = guided_ranges(plan, workers)
    gop = gop_frames(fps)
    assert ranges[0][0] == 0 and ranges[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(n0 % gop == 0 and n1 > n0 for n0, n1 in ranges)
    sizes = [-(-(n1 - n0) // gop) for n0, n1 in ranges]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    gops = -(-frames // gop)
    assert sizes[0] == max(1, -(-gops // (2 * workers)))
    assert len(ranges) <= min(gops, 2 * workers * (1 + int(np.log2(max(gops, 1)))))
