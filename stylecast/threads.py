"""Running a job's independent pieces side by side in one process (the local engine's small orchestrator).

The pieces are the same ones the Ray pipeline sends to actors — analysis ranges, render ranges, the audio —
and they spend their time in code that releases the GIL (FFmpeg decode, x264, swscale, OpenCV, the Numba
kernels), so plain threads keep every core busy without starting worker processes.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from stylecast.errors import CancelledError


def available_cores(cpu_max_path: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit).

    ``cpu.max`` holds ``"<quota> <period>"`` in microseconds, or ``"max <period>"`` when unlimited; a pod
    limited to 2 CPUs on a 64-core host gets 2 workers, not 64.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = open(cpu_max_path).read().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible: the affinity is the limit
    return max(1, cores)


def opencv_single_threaded() -> None:
    """Stop OpenCV from running its own worker threads, for the rest of the process.

    Call this where the work already runs one task per core (the analysis threads of `analyze_files`, a
    Ray stage actor).  OpenCV's workers would then compete with those tasks for the same cores: measured
    here, a template's camera-motion pass cost 2.0 CPU-s with OpenCV's 2 threads and 1.3 CPU-s with one.
    """
    import cv2

    cv2.setNumThreads(1)


class StopFlag:
    """A should-stop callable that trips when asked or when an outer should-stop does."""

    def __init__(self, outer: Callable[[], bool] | None = None) -> None:
        self._event = threading.Event()
        self._outer = outer

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        if self._event.is_set():
            return True
        if self._outer is not None and self._outer():
            self._event.set()
            return True
        return False


def run_all(
    tasks: Sequence[Callable[[Callable[[], bool]], Any]],
    workers: int,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Any]:
    """Run ``tasks`` (each called with a should-stop callable) on ``workers`` threads; results in task order.

    The first failure stops the rest (they see should-stop turn True at their next poll) and is re-raised;
    a cancellation from ``should_stop`` raises `CancelledError`.  ``on_done(k)`` is called as task k ends.
    """
    stop = StopFlag(should_stop)
    if workers <= 1 or len(tasks) <= 1:
        results = []
        for k, task in enumerate(tasks):
            if stop():
                raise CancelledError("cancelled")
            results.append(task(stop))
            if on_done:
                on_done(k)
        return results
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="stylecast") as pool:
        futures: list[Future] = [pool.submit(task, stop) for task in tasks]
        index = {f: k for k, f in enumerate(futures)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()
                    if on_done:
                        on_done(index[f])
        except BaseException:
            stop.set()
            for f in pending:
                f.cancel()
            # Wait for running tasks to notice the flag, so none outlives the call (or its temp files).
            wait(pending)
            raise
    return [f.result() for f in futures]
