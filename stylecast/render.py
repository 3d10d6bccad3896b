"""Rendering a plan: output frame ranges → encoded closed-GOP segments; audio once over the timeline; join.

`render_range` is a worker's job: it decodes only the source ranges its output frames need, runs the fused
kernel once per output frame (warp + LUT + blend + fade in one pass, from the decoder's YUV planes straight to
the encoder's I420: no RGB frame in between) and encodes its own H.264 segment.
`render_audio` cuts the source audio with the plan (`encode_plan_audio` also encodes it, on a worker beside the
video ranges).  `render_plan` does all of it in this process.
"""
from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.render import identity_lut
from kernels.render_yuv import YuvLut, render_frame_i420_yuv, yuv_lut
from stylecast.color import ColorTransfer, apply_transfer_rgb
from stylecast.errors import CancelledError, MediaError
from stylecast.media.decode import DecodedPlanes, fit_size, iter_frames, read_audio
from stylecast.media.encode import AUDIO_RATE, SegmentEncoder, encode_audio, fps_fraction, gop_frames, join_segments
from stylecast.media.probe import ProbeInfo, probe
from stylecast.plan import Layer, RenderPlan, frame_recipe, layer_affine
from stylecast.threads import run_all

YUV_LUT_SIZE = 65
_EPS = 1e-4
_DECODE_EPS = 1e-6  # iter_frames keeps a frame this much before its start (timestamps are rounded)


def decode_size_for(plan_output_size: tuple[int, int], info: ProbeInfo, max_overscan: float = 1.3) -> tuple[int, int]:
    """Decode no larger than the output needs (with room for over-scan), never larger than the display size."""
    wo, ho = plan_output_size
    scale = min(1.0, max(wo / info.display_width, ho / info.display_height) * max_overscan)
    return fit_size(info, int(round(info.display_width * scale)) or 2, int(round(info.display_height * scale)) or 2)


class _SourceCursor:
    """Sample-and-hold access to a source video at increasing times, decoding sequentially from a start."""

    def __init__(self, path: str, start_s: float, info: ProbeInfo, size: tuple[int, int], threads: int) -> None:
        self._frames: Iterator[DecodedPlanes] = iter_frames(path, max(0.0, start_s), info=info, size=size,
                                                            threads=threads, planes=True)
        self._current: DecodedPlanes | None = next(self._frames, None)
        self._next: DecodedPlanes | None = next(self._frames, None)
        self.start_s = start_s
        if self._current is None:
            raise MediaError(f"no source frame at or after {start_s:.3f}s")

    def frame_at(self, t: float) -> DecodedPlanes:
        while self._next is not None and self._next.time_s <= t + _EPS:
            self._current, self._next = self._next, next(self._frames, None)
        return self._current

    def reaches(self, t: float, within_s: float) -> bool:
        """Whether time ``t`` lies at or after this cursor's frame and at most ``within_s`` ahead of it."""
        return self._current.time_s <= t + _EPS and t - self._current.time_s <= within_s

    def restart_at(self, start_s: float) -> None:
        """Continue as a cursor opened at ``start_s`` would: drop the frames before it (as `iter_frames` does).

        After that, `frame_at` returns what a fresh cursor's would, also where a variable-rate source has no
        frame between ``start_s`` and the time asked for (both then show the first frame after ``start_s``).
        """
        start_s = max(0.0, start_s)
        while self._current.time_s < start_s - _DECODE_EPS and self._next is not None:
            self._current, self._next = self._next, next(self._frames, None)
        if self._current.time_s < start_s - _DECODE_EPS:
            raise MediaError(f"no source frame at or after {start_s:.3f}s")
        self.start_s = start_s

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close:
            close()


class _CursorPool:
    """The open source decoders of one render range, reused across segments.

    A re-cut plan comes back to a source shot several times, each time a little further on (segment 5 may
    continue where segment 1 stopped).  A decoder that already stands at or shortly before the time a segment
    needs is moved on by decoding forward, which costs less than a fresh decoder: opening one, seeking and
    decoding from the keyframe (~65 ms per 1080p segment start here).  At most ``MAX_OPEN`` decoders stay open
    (the least recently used is closed), which bounds memory.  Reuse never changes a frame: a decoder returns
    the same pictures whether it seeked or decoded its way to a time.
    """

    MAX_OPEN = 4
    REUSE_WITHIN_S = 0.8  # forward decoding up to this far beats a new decoder (~2.4 ms per skipped frame)

    def __init__(self, path: str, info: ProbeInfo, size: tuple[int, int], threads: int, source_fps: float) -> None:
        self._args = (path, info, size, threads)
        self._frame_s = 1.0 / source_fps
        self._by_segment: dict[int, _SourceCursor] = {}
        self._clock = 0
        self._used: dict[int, int] = {}  # id(cursor) → last use

    def frame(self, layer: Layer, other: Layer | None = None) -> DecodedPlanes:
        """The source frame shown for ``layer``; ``other`` is the frame's other layer (its decoder is kept)."""
        t = layer.src_time_s
        cur = self._by_segment.get(layer.segment)
        if cur is None or t < cur.start_s - _EPS:
            if cur is not None:
                self._close(layer.segment)
            # Start a little before: the frame shown at t is the latest one at or before t.
            start = t - self._frame_s
            cur = self._reusable(t, keep=None if other is None else other.segment)
            if cur is not None:
                cur.restart_at(start)
            else:
                cur = _SourceCursor(self._args[0], start, *self._args[1:])
            self._by_segment[layer.segment] = cur
            self._trim(keep={layer.segment} | ({other.segment} if other is not None else set()))
        self._clock += 1
        self._used[id(cur)] = self._clock
        return cur.frame_at(t)

    def _reusable(self, t: float, keep: int | None) -> _SourceCursor | None:
        best_seg = None
        for seg, cur in self._by_segment.items():
            if seg != keep and cur.reaches(t, self.REUSE_WITHIN_S):
                if best_seg is None or self._used.get(id(cur), 0) > self._used.get(id(self._by_segment[best_seg]), 0):
                    best_seg = seg
        return None if best_seg is None else self._by_segment.pop(best_seg)

    def _trim(self, keep: set[int]) -> None:
        while len(self._by_segment) > self.MAX_OPEN:
            spare = [s for s in self._by_segment if s not in keep]
            if not spare:
                break
            self._close(min(spare, key=lambda s: self._used.get(id(self._by_segment[s]), 0)))

    def _close(self, segment: int) -> None:
        cur = self._by_segment.pop(segment)
        self._used.pop(id(cur), None)
        cur.close()

    def close(self) -> None:
        for cur in self._by_segment.values():
            cur.close()
        self._by_segment.clear()


@dataclass
class RangeResult:
    path: str
    n0: int
    n1: int
    frames: int


class _LutCache:
    """The YUV -> YUV LUT of each shot colour (index -1: no grade) for a source's YUV matrix and range."""

    def __init__(self, plan: RenderPlan) -> None:
        self._plan = plan
        self._tables: dict[tuple[int, str, bool], YuvLut] = {}

    def get(self, index: int, frame: DecodedPlanes) -> YuvLut:
        key = (index, frame.matrix, frame.full_range)
        table = self._tables.get(key)
        if table is None:
            if index < 0:  # ungraded: an affine table, exact with 2 points per axis
                table = _identity_yuv_lut(frame.matrix, frame.full_range)
            else:  # shared by the ranges this process renders
                table = _transfer_yuv_lut(self._plan.colors[index].model_dump_json(), frame.matrix,
                                          frame.full_range)
            self._tables[key] = table
        return table


@functools.lru_cache(maxsize=8)
def _identity_yuv_lut(matrix: str, full_range: bool) -> YuvLut:
    return yuv_lut(identity_lut(2), matrix=matrix, full_range=full_range, size=2)


@functools.lru_cache(maxsize=24)  # 3.3 MB each: every shot of a typical job, shared by the render threads
def _transfer_yuv_lut(transfer_json: str, matrix: str, full_range: bool) -> YuvLut:
    """A shot's grade evaluated at the YUV grid points (a LUT baked from an RGB LUT would interpolate twice).

    65 points per axis: only about a fifth of the YUV cube holds RGB colours, so a 33-point YUV grid is
    coarser over real colours than a 33-point RGB one (measured: the graded palette lands 15% further from
    the template's); 65 points are finer than both and cost the kernel nothing measurable."""
    transfer = ColorTransfer.model_validate_json(transfer_json)
    return yuv_lut(lambda rgb: apply_transfer_rgb(transfer, rgb), matrix=matrix, full_range=full_range,
                   size=YUV_LUT_SIZE)


def render_range(
    plan: RenderPlan,
    n0: int,
    n1: int,
    out_path: str | Path,
    *,
    source_path: str | None = None,
    info: ProbeInfo | None = None,
    threads: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_frame: Callable[[int], None] | None = None,
    overlap: bool = False,
) -> RangeResult:
    """Render output frames ``[n0, n1)`` of ``plan`` into an independent H.264 segment at ``out_path``.

    overlap: make the pictures (decode + kernel) on a second thread while x264 encodes the previous one; for
             the last ranges of a render, when the other cores run out of work (same output either way).

    threads: 0 lets the decoder and the kernel use every core; 1 keeps this call on one core (for workers
             that run side by side: Ray actors, or the threads of `render_plan`).  x264 always runs one
             thread per GOP encoder: its output then does not depend on the machine or the split, and on a
             short GOP its frame threads cost more than they give (pipeline fill and drain per GOP).
    """
    source_path = source_path or plan.source_path
    info = info or probe(source_path)
    out = plan.output
    size = decode_size_for((out.width, out.height), info)
    luts = _LutCache(plan)
    parallel_kernel = threads != 1
    bars = _letterbox_slices(out.width, out.height, out.letterbox_px)

    def pictures(stop: Callable[[], bool], ring: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(n, I420 picture) for every output frame, in ``ring`` buffers used in turn: a picture must be
        encoded before its buffer comes round again."""
        # The kernel reads the decoder's planes and writes the encoder's pixel format (I420): no RGB frame and
        # no swscale pass on either side.
        buffers = [np.empty((out.height * 3 // 2, out.width), np.uint8) for _ in range(ring)]
        cursors = _CursorPool(source_path, info, size, threads, plan.source_fps)
        try:
            for n in range(n0, n1):
                frame = buffers[n % ring]
                if stop():
                    raise CancelledError("cancelled")
                recipe = frame_recipe(plan, n)
                a = recipe.a
                seg_a = plan.segments[a.segment]
                src_a = cursors.frame(a, recipe.b)
                kwargs = {}
                if recipe.b is not None:
                    b = recipe.b
                    src_b = cursors.frame(b, a)
                    kwargs = dict(src_b=src_b.planes, inv_affine_b=layer_affine(plan, b, src_b.size),
                                  lut_b=luts.get(plan.segments[b.segment].color, src_b), blend_b=recipe.blend)
                render_frame_i420_yuv(frame, src_a.planes, layer_affine(plan, a, src_a.size),
                                      luts.get(seg_a.color, src_a), fade_rgb=recipe.fade_rgb,
                                      fade_amount=min(1.0, max(0.0, recipe.fade_amount)), parallel=parallel_kernel,
                                      **kwargs)
                for plane, region, value in bars:
                    plane(frame)[region] = value
                yield n, frame
        finally:
            cursors.close()

    stop = should_stop or (lambda: False)
    frames = _made_ahead(pictures, stop) if overlap else pictures(stop)

    # Each GOP gets a fresh encoder: x264 carries rate-control state from frame to frame, so a GOP encoded
    # after other GOPs would differ from the same GOP encoded first in a chunk.  Fresh encoders make the
    # joined stream identical however the render is split into chunks (all chunks start on GOP bounds).
    out_path = Path(out_path)
    gop = gop_frames(out.fps)
    gop_paths: list[Path] = []
    encoder: SegmentEncoder | None = None
    try:
        for n, frame in frames:
            if encoder is None or n % gop == 0:
                if encoder is not None:
                    encoder.close()
                gop_paths.append(out_path.with_name(f".{out_path.stem}.g{n:07d}.mp4"))
                encoder = SegmentEncoder(gop_paths[-1], out.width, out.height, out.fps, crf=out.crf,
                                         preset=out.preset, threads=1)
            encoder.write_i420(frame)
            if on_frame is not None:
                on_frame(n)
        if encoder is not None:
            encoder.close()
            encoder = None
        join_segments(gop_paths, out_path)
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    finally:
        frames.close()
        for p in gop_paths:
            p.unlink(missing_ok=True)
    return RangeResult(str(out_path), n0, n1, n1 - n0)


def _made_ahead(pictures: Callable[..., Iterator[tuple[int, np.ndarray]]],
                stop: Callable[[], bool]) -> Iterator[tuple[int, np.ndarray]]:
    """``pictures(stop, ring=3)`` made on a helper thread, at most one picture ahead of the one being encoded.

    Three buffers: the helper fills one while one waits in the queue and the caller encodes the third; the
    helper can only start refilling a buffer after the caller took the next picture, i.e. finished encoding
    that buffer's previous picture.  Closing the generator (the caller is done or failed) stops the helper.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    done = threading.Event()
    end = object()

    def put(item) -> bool:
        while not done.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in pictures(lambda: done.is_set() or stop(), ring=3):
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # handed to the caller, raised there
            put(exc)

    helper = threading.Thread(target=make, name="stylecast-pictures", daemon=True)
    helper.start()
    try:
        while True:
            item = handoff.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                if isinstance(item, CancelledError) and done.is_set():
                    return
                raise item
            yield item
    finally:
        done.set()
        helper.join()


def _letterbox_slices(width: int, height: int, letterbox_px: tuple[int, int, int, int]) -> list:
    """(plane view, region, value) triples that paint the bars black in an I420 frame.

    Black is Y 16 and Cb = Cr = 128 (limited range).  Bars are whole 2x2 blocks (the plan makes them even)
    so no chroma sample mixes bar and picture.
    """
    top, bottom, left, right = letterbox_px
    hw, hh = width // 2, height // 2

    def luma(f):
        return f[:height]

    def chroma(f):  # U and V planes stacked: (2 * height/2, width/2)
        return f[height:].reshape(height, hw)

    bars = []
    for lo, hi, axis in ((0, top, 0), (height - bottom, height, 0), (0, left, 1), (width - right, width, 1)):
        if hi <= lo:
            continue
        if axis == 0:
            bars.append((luma, np.s_[lo:hi], 16))
            c_lo, c_hi = lo // 2, (hi + 1) // 2
            bars.append((chroma, np.s_[c_lo:c_hi], 128))
            bars.append((chroma, np.s_[hh + c_lo: hh + c_hi], 128))
        else:
            bars.append((luma, np.s_[:, lo:hi], 16))
            bars.append((chroma, np.s_[:, lo // 2:(hi + 1) // 2], 128))
    return bars


def render_audio(plan: RenderPlan, source_path: str | None = None, info: ProbeInfo | None = None) -> np.ndarray | None:
    """The output's audio (float32 stereo at 48 kHz), cut with the plan's segments, gain applied."""
    if not plan.audio.enabled:
        return None
    source_path = source_path or plan.source_path
    info = info or probe(source_path)
    src = read_audio(source_path, info=info, sample_rate=AUDIO_RATE, channels=2)
    if src is None:
        return None
    sr = AUDIO_RATE
    n_total = int(round(plan.output.duration_s * sr))
    out = np.zeros((2, n_total), np.float32)
    xf = max(1, int(plan.audio.crossfade_s * sr))
    for piece in plan.audio.pieces:
        o0, o1 = int(round(piece.out_start_s * sr)), min(n_total, int(round(piece.out_end_s * sr)))
        # Take a little extra on both sides and crossfade, so joins do not click.
        a0 = o0 - xf // 2
        s0 = int(round(piece.src_start_s * sr)) - xf // 2
        length = (o1 - o0) + xf
        chunk = np.zeros((2, length), np.float32)
        lo = max(0, s0)
        hi = min(src.shape[1], s0 + length)
        if hi > lo:
            chunk[:, lo - s0: hi - s0] = src[:, lo:hi]
        ramp = np.ones(length, np.float32)
        ramp[:xf] = np.linspace(0.0, 1.0, xf, dtype=np.float32)
        ramp[-xf:] = np.minimum(ramp[-xf:], np.linspace(1.0, 0.0, xf, dtype=np.float32))
        d0, d1 = max(0, a0), min(n_total, a0 + length)
        if d1 > d0:
            out[:, d0:d1] += (chunk * ramp)[:, d0 - a0: d1 - a0]
    return _apply_loudness(out, sr, plan.audio.gain_db)


def encode_plan_audio(plan: RenderPlan, path: str | Path, source_path: str | None = None,
                      info: ProbeInfo | None = None, should_stop: Callable[[], bool] | None = None) -> Path | None:
    """`render_audio`, encoded to an AAC file of the output's exact length for `join_segments(audio_file=)`;
    None when the output has no audio.  Encoding here, beside the video ranges, keeps AAC off the final join.
    ``should_stop``: asked while encoding (a long video's audio takes a while); `CancelledError` if it says so."""
    audio = render_audio(plan, source_path, info)
    if audio is None or not audio.size:
        return None
    duration_s = plan.output.frame_count / float(fps_fraction(plan.output.fps))
    return encode_audio(audio, path, duration_s=duration_s, should_stop=should_stop)


def _peak_limit(x: np.ndarray, sr: int, ceiling: float = 0.98, window_s: float = 0.005) -> np.ndarray:
    """Look-ahead peak limiter: the gain at each sample is at most ceiling/peak over ±window, smoothed.

    The gain is a moving minimum followed by a moving average of the same width, so it never exceeds what
    any sample under it allows (no overshoot) and changes smoothly (no clicks).
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(x).max(axis=0)
    if peak.size == 0 or float(peak.max()) <= ceiling:
        return x
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    width = 2 * int(window_s * sr) + 1
    gain = uniform_filter1d(minimum_filter1d(need, size=width, mode="nearest"), size=width, mode="nearest")
    return (x * gain[None, :]).astype(np.float32)


def _apply_loudness(audio: np.ndarray, sr: int, gain_db: float) -> np.ndarray:
    """Apply a loudness gain without clipping: limit peaks, then make up what the limiter took away."""
    from stylecast.analysis.audio import integrated_loudness

    if not gain_db:
        return _peak_limit(audio, sr)
    before = integrated_loudness(audio, sr)
    out = _peak_limit(audio * np.float32(10.0 ** (gain_db / 20.0)), sr)
    if before is None:
        return out
    target = before + gain_db
    for _ in range(3):
        now = integrated_loudness(out, sr)
        if now is None or abs(target - now) < 0.1:
            break
        out = _peak_limit(out * np.float32(10.0 ** ((target - now) / 20.0)), sr)
    return out


def output_ranges(plan: RenderPlan, chunk_seconds: float | None, parts: int = 1) -> list[tuple[int, int]]:
    """Output frame ranges for chunked rendering: whole GOPs, so the joined result does not depend on the split.

    chunk_seconds: range length (rounded to whole GOPs); when None, the frames are split into ``parts``
                   ranges of (nearly) equal GOP counts — one per worker, so each decodes from one seek.
    """
    n = plan.output.frame_count
    gop = gop_frames(plan.output.fps)
    if chunk_seconds:
        step = max(1, int(round(chunk_seconds * plan.output.fps / gop))) * gop
        return [(a, min(n, a + step)) for a in range(0, n, step)]
    gops = -(-n // gop)
    parts = max(1, min(parts, gops))
    edges = [min(n, (gops * k // parts) * gop) for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def guided_ranges(plan: RenderPlan, workers: int) -> list[tuple[int, int]]:
    """Output frame ranges for ``workers`` threads taking them from a queue in order: whole GOPs, shrinking.

    Content makes equal ranges cost unequal time (x264 spends twice as long on some GOPs as on others), so
    equal shares leave a core idle at the end.  Each range here is what is left divided by twice the workers
    ("factoring"): big ranges first (few seeks), single GOPs last, so the threads finish at most about one GOP
    apart.  Each range costs one seek and its keyframe pre-roll.
    """
    n = plan.output.frame_count
    gop = gop_frames(plan.output.fps)
    left = -(-n // gop)
    ranges, start = [], 0
    while left > 0:
        take = max(1, -(-left // (2 * max(1, workers))))
        ranges.append((start * gop, min(n, (start + take) * gop)))
        start, left = start + take, left - take
    return ranges


def prepare_in_background(workers: int) -> threading.Thread:
    """Load what planning and rendering will need on a background thread, while the analysis runs.

    Loading the render kernel from Numba's cache (~0.4 s), ``scipy.optimize`` (the plan's shot transport,
    ~0.3 s) and ``scipy.ndimage`` (motion smoothing, the audio limiter, ~0.2 s) otherwise happens between the
    analysis and the first rendered frame, with one core busy and the other idle.  ``workers``: as for
    `render_plan` (its threads use the serial kernel when there are several).
    """
    def load() -> None:
        try:
            import scipy.ndimage  # noqa: F401
            import scipy.optimize  # noqa: F401
            from kernels.render_yuv import warmup

            warmup((workers <= 1,))
        except Exception:  # noqa: BLE001 - only a head start: the real use reports any failure
            pass

    thread = threading.Thread(target=load, name="stylecast-prepare", daemon=True)
    thread.start()
    return thread


def render_plan(
    plan: RenderPlan,
    out_path: str | Path,
    *,
    source_path: str | None = None,
    chunk_seconds: float | None = None,
    workers: int = 1,
    work_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Render the whole plan in this process (the cluster runs the same steps on workers).

    workers: render ranges side by side on this many threads, each on one core (decode, kernel and x264
             single-threaded: independent GOP encoders scale better than x264's frame threads on short GOPs);
             the audio is cut and encoded on the same pool.  1 renders one range with every library's own
             threading.
    """
    if plan.output.frame_count <= 0:
        raise MediaError("the render plan has no frames")
    out_path = Path(out_path)
    source_path = source_path or plan.source_path
    info = probe(source_path)
    work = Path(work_dir) if work_dir else out_path.parent
    work.mkdir(parents=True, exist_ok=True)
    if chunk_seconds or workers <= 1:
        ranges = output_ranges(plan, chunk_seconds)
    else:
        ranges = guided_ranges(plan, workers)
    segments = [work / f".{out_path.stem}.seg{k:05d}.mp4" for k in range(len(ranges))]
    # Ranges side by side: each on one core.  A single range (a short video) keeps the libraries' threading.
    threads = 1 if workers > 1 and len(ranges) > 1 else 0

    def range_task(k: int):
        n0, n1 = ranges[k]
        # The last ranges run when the other threads have nothing left to take: each makes its pictures on a
        # second thread, so a core that would idle until the last range ends does its decoding and grading.
        tail = threads == 1 and k >= len(ranges) - workers
        return lambda stop: render_range(plan, n0, n1, segments[k], source_path=source_path, info=info,
                                         threads=threads, should_stop=stop, overlap=tail)

    done = [0]

    def on_done(k: int) -> None:
        if k > 0:  # task 0 is the audio
            done[0] += 1
            if progress:
                progress("rendering", done[0], len(ranges))

    # The audio first (cut and encoded): queued last, it would run alone at the end while the other cores idle.
    audio_path = work / f".{out_path.stem}.audio.m4a"
    tasks = [lambda stop: encode_plan_audio(plan, audio_path, source_path, info, should_stop=stop)]
    tasks += [range_task(k) for k in range(len(ranges))]
    try:
        results = run_all(tasks, workers, should_stop=should_stop, on_done=on_done)
        join_segments(segments, out_path, audio_file=results[0])  # segments in output order
    finally:
        for seg in segments + [audio_path]:
            seg.unlink(missing_ok=True)
    return out_path
