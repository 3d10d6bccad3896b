"""Rendering a plan: output frame ranges → encoded closed-GOP segments; audio once over the timeline; join.

`render_range` is a worker's job: it decodes only the source ranges its output frames need, runs the fused
kernel once per output frame (warp + LUT + blend + fade in one pass) and encodes its own H.264 segment.
`render_audio` cuts the source audio with the plan.  `render_plan` does all of it in this process.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.render import identity_lut, render_frame
from stylecast.color import transfer_lut
from stylecast.errors import CancelledError, MediaError
from stylecast.media.decode import DecodedFrame, fit_size, iter_frames, read_audio
from stylecast.media.encode import AUDIO_RATE, SegmentEncoder, join_segments
from stylecast.media.probe import ProbeInfo, probe
from stylecast.plan import Layer, RenderPlan, frame_recipe, layer_affine

LUT_SIZE = 33
_EPS = 1e-4


def decode_size_for(plan_output_size: tuple[int, int], info: ProbeInfo, max_overscan: float = 1.3) -> tuple[int, int]:
    """Decode no larger than the output needs (with room for over-scan), never larger than the display size."""
    wo, ho = plan_output_size
    scale = min(1.0, max(wo / info.display_width, ho / info.display_height) * max_overscan)
    return fit_size(info, int(round(info.display_width * scale)) or 2, int(round(info.display_height * scale)) or 2)


class _SourceCursor:
    """Sample-and-hold access to a source video at increasing times, decoding sequentially from a start."""

    def __init__(self, path: str, start_s: float, info: ProbeInfo, size: tuple[int, int], threads: int) -> None:
        self._frames: Iterator[DecodedFrame] = iter_frames(path, max(0.0, start_s), info=info, size=size,
                                                           threads=threads)
        self._current: DecodedFrame | None = next(self._frames, None)
        self._next: DecodedFrame | None = next(self._frames, None)
        self.start_s = start_s
        if self._current is None:
            raise MediaError(f"no source frame at or after {start_s:.3f}s")

    def frame_at(self, t: float) -> np.ndarray:
        while self._next is not None and self._next.time_s <= t + _EPS:
            self._current, self._next = self._next, next(self._frames, None)
        return self._current.rgb

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close:
            close()


@dataclass
class RangeResult:
    path: str
    n0: int
    n1: int
    frames: int


class _LutCache:
    def __init__(self, plan: RenderPlan) -> None:
        self._plan = plan
        self._cache: dict[int, np.ndarray] = {-1: identity_lut(2)}

    def get(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = transfer_lut(self._plan.colors[index], LUT_SIZE)
        return self._cache[index]


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
) -> RangeResult:
    """Render output frames ``[n0, n1)`` of ``plan`` into an independent H.264 segment at ``out_path``."""
    source_path = source_path or plan.source_path
    info = info or probe(source_path)
    out = plan.output
    size = decode_size_for((out.width, out.height), info)
    luts = _LutCache(plan)
    cursors: dict[int, _SourceCursor] = {}
    frame = np.empty((out.height, out.width, 3), np.uint8)
    top, bottom, left, right = out.letterbox_px

    def source(layer: Layer) -> np.ndarray:
        cur = cursors.get(layer.segment)
        if cur is None or layer.src_time_s < cur.start_s - _EPS:
            if cur is not None:
                cur.close()
            # Start a little before: the frame shown at t is the latest one at or before t.
            cur = cursors[layer.segment] = _SourceCursor(
                source_path, layer.src_time_s - 1.0 / plan.source_fps, info, size, threads)
        return cur.frame_at(layer.src_time_s)

    encoder = SegmentEncoder(out_path, out.width, out.height, out.fps, crf=out.crf, preset=out.preset,
                             threads=threads)
    try:
        for n in range(n0, n1):
            if should_stop is not None and should_stop():
                raise CancelledError("cancelled")
            recipe = frame_recipe(plan, n)
            a = recipe.a
            seg_a = plan.segments[a.segment]
            src_a = source(a)
            kwargs = {}
            if recipe.b is not None:
                b = recipe.b
                src_b = source(b)
                kwargs = dict(src_b=src_b, inv_affine_b=layer_affine(plan, b, (src_b.shape[1], src_b.shape[0])),
                              lut_b=luts.get(plan.segments[b.segment].color), blend_b=recipe.blend)
            render_frame(frame, src_a, layer_affine(plan, a, (src_a.shape[1], src_a.shape[0])),
                         luts.get(seg_a.color), fade_rgb=recipe.fade_rgb,
                         fade_amount=min(1.0, max(0.0, recipe.fade_amount)), **kwargs)
            if top:
                frame[:top] = 0
            if bottom:
                frame[out.height - bottom:] = 0
            if left:
                frame[:, :left] = 0
            if right:
                frame[:, out.width - right:] = 0
            encoder.write(frame)
            # Drop decoders of segments that can no longer be needed.
            for k in [k for k in cursors if k < a.segment]:
                cursors.pop(k).close()
            if on_frame is not None:
                on_frame(n)
        encoder.close()
    except BaseException:
        encoder.abort()
        raise
    finally:
        for cur in cursors.values():
            cur.close()
    return RangeResult(str(out_path), n0, n1, n1 - n0)


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
    if plan.audio.gain_db:
        out *= np.float32(10.0 ** (plan.audio.gain_db / 20.0))
    peak = float(np.abs(out).max(initial=0.0))
    if peak > 0.999:
        out *= np.float32(0.999 / peak)  # a loudness gain must not clip; a true-peak limiter would be gentler
    return out


def output_ranges(plan: RenderPlan, chunk_seconds: float | None) -> list[tuple[int, int]]:
    n = plan.output.frame_count
    if not chunk_seconds:
        return [(0, n)]
    step = max(1, int(round(chunk_seconds * plan.output.fps)))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def render_plan(
    plan: RenderPlan,
    out_path: str | Path,
    *,
    source_path: str | None = None,
    chunk_seconds: float | None = None,
    work_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Render the whole plan in this process (the cluster runs the same steps on workers)."""
    if plan.output.frame_count <= 0:
        raise MediaError("the render plan has no frames")
    out_path = Path(out_path)
    source_path = source_path or plan.source_path
    info = probe(source_path)
    work = Path(work_dir) if work_dir else out_path.parent
    ranges = output_ranges(plan, chunk_seconds)
    segments: list[Path] = []
    try:
        for k, (n0, n1) in enumerate(ranges):
            seg = work / f".{out_path.stem}.seg{k:05d}.mp4"
            segments.append(seg)
            render_range(plan, n0, n1, seg, source_path=source_path, info=info, should_stop=should_stop)
            if progress:
                progress("rendering", k + 1, len(ranges))
        join_segments(segments, out_path, audio=render_audio(plan, source_path, info))
    finally:
        for seg in segments:
            seg.unlink(missing_ok=True)
    return out_path
