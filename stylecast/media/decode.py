"""Decoding: frame-accurate video ranges and audio, as a viewer sees them.

A range ``[t0, t1)`` is in seconds relative to the first video frame (see `probe`).  A frame belongs to the
range when its presentation time does, so consecutive ranges partition a video's frames exactly — the
property the chunked pipeline relies on.  Frames come out display-oriented: rotation metadata applied and
non-square pixels resampled to square ones.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from stylecast.errors import MediaError
from stylecast.media.probe import OPEN_OPTIONS, ProbeInfo, describe_error, main_video_stream, open_error, probe

# A frame whose time is within this much before t0 still counts as "at t0" (timestamps are rounded).
_TIME_EPS = 1e-6
# swscale's default YUV -> RGB is 1-1.5 codes too dark per channel (it truncates, and interpolates chroma
# horizontally at reduced precision); with accurate rounding and full chroma interpolation it is exact to
# rounding, i.e. what `kernels.render_yuv.yuv_to_rgb` computes, so the analysis sees the colours the render
# grades.  (+0.2 ms per 320 px analysis frame.)
_RGB_SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class DecodedFrame:
    time_s: float  # relative to the first video frame
    rgb: np.ndarray  # (H, W, 3) uint8, display-oriented


@dataclass(frozen=True)
class DecodedPlanes:
    """A frame as the decoder's 4:2:0 planes (no RGB conversion), display-oriented like `DecodedFrame`."""
    time_s: float
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]  # y (H, W), u and v ((H+1)//2, (W+1)//2), uint8
    matrix: str  # how to read the YUV: a key of kernels.render_yuv.MATRICES
    full_range: bool  # "pc"/JPEG range rather than limited ("tv") range

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.planes[0].shape[1], self.planes[0].shape[0]


# AVColorSpace -> the matrix swscale reads it with (an untagged or unknown one is read as BT.601, as swscale
# does, so the planes mean what the RGB frames of the analysis show).
_MATRIX_OF_COLORSPACE = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_COLOR_RANGE_PC = 2  # AVCOL_RANGE_JPEG


def yuv_matrix(frame: av.VideoFrame) -> tuple[str, bool]:
    """(matrix, full_range) with which a decoded frame's YUV is read (see `DecodedPlanes`)."""
    full = frame.color_range == _COLOR_RANGE_PC or frame.format.name.startswith("yuvj")
    return _MATRIX_OF_COLORSPACE.get(int(frame.colorspace), "bt601"), bool(full)


def _planes_of(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views (no copy) of an 8-bit 4:2:0 frame's planes, row padding cut off."""
    return tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes[:3])


def _yuv420_like(frame: av.VideoFrame) -> str:
    """8-bit 4:2:0 in the frame's own range (swscale would convert a "yuvj" frame to limited range)."""
    return "yuvj420p" if frame.format.name.startswith("yuvj") else "yuv420p"


def to_planes(frame: av.VideoFrame, width: int, height: int, rot_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded frame as 8-bit 4:2:0 planes of the coded-orientation size ``width x height``, then rotated
    by ``rot_k`` quarter turns (as `np.rot90`).  8-bit 4:2:0 frames of that size are not copied; anything
    else (another size, 10-bit, 4:2:2, 4:4:4) goes through one swscale pass that keeps matrix and range."""
    name = frame.format.name
    if name not in ("yuv420p", "yuvj420p") or (frame.width, frame.height) != (width, height):
        frame = frame.reformat(width=width, height=height, format=_yuv420_like(frame), threads=1)
    planes = _planes_of(frame)
    if rot_k:
        planes = tuple(np.ascontiguousarray(np.rot90(p, k=rot_k)) for p in planes)
    return planes


def fit_size(info: ProbeInfo, max_width: int | None = None, max_height: int | None = None) -> tuple[int, int]:
    """Display-oriented (width, height), even, no larger than the display size, aspect kept."""
    w, h = float(info.display_width), float(info.display_height)
    scale = 1.0
    if max_width:
        scale = min(scale, max_width / w)
    if max_height:
        scale = min(scale, max_height / h)
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def iter_frames(
    path: str | Path,
    t0: float = 0.0,
    t1: float | None = None,
    *,
    info: ProbeInfo | None = None,
    size: tuple[int, int] | None = None,
    threads: int = 0,
    deblock: bool = True,
    planes: bool = False,
) -> Iterator[DecodedFrame] | Iterator[DecodedPlanes]:
    """Yield the frames whose presentation time lies in ``[t0, t1)`` seconds, in order.

    size:    display-oriented (width, height) to scale to; default: the display size.
    planes:  yield `DecodedPlanes` (the decoder's YUV 4:2:0, for the render kernel) instead of RGB frames.
    threads: decoder threads (0 = FFmpeg's choice).  Seeks to the keyframe before ``t0`` and drops frames
             before it, so the result does not depend on where the previous range ended.
    deblock: run the codec's loop (deblocking) filter on every frame.  Analysis, which looks at frames
             scaled down to a few hundred pixels, skips it on frames no other frame refers to (invisible at
             that size, ~5% of decode time); reference frames stay exact, so no error builds up over a GOP.
    """
    info = info or probe(path)
    out_w, out_h = size or (info.display_width, info.display_height)
    rot_k = (info.rotation_deg // 90) % 4
    # Scale before rotating: swscale works on the coded orientation.
    scale_w, scale_h = (out_h, out_w) if rot_k % 2 else (out_w, out_h)
    t_end = float("inf") if t1 is None else t1
    if t_end <= t0:
        return
    try:
        container = av.open(str(path), metadata_errors="ignore", options=OPEN_OPTIONS)
    except av.FFmpegError as exc:
        raise open_error(path, exc, "cannot open") from None
    with container:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        if not deblock:
            stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": "noref"}
        tb = stream.time_base
        for attempt_back in (0.0, 2.0, None):
            if t0 > 0 and attempt_back is not None:
                target = max(0.0, t0 - attempt_back) + info.start_time_s
                container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
            elif t0 > 0:
                container.seek(0, stream=stream, backward=True, any_frame=False)
            frames = _decode(container, stream, info, path, skip_before=t0)
            first = next(frames, None)
            if first is None:
                return
            rel, frame = first
            # Landed after t0 (sparse index, open GOP): seek further back.
            if t0 > 0 and rel > t0 + _TIME_EPS and attempt_back is not None and rel - t0 > 0.5 / info.fps:
                continue
            break
        pending = [(rel, frame)]
        for rel, frame in _chain(pending, frames):
            if rel < t0 - _TIME_EPS:
                continue
            if rel >= t_end - _TIME_EPS:
                break
            if planes:
                matrix, full_range = yuv_matrix(frame)
                yield DecodedPlanes(rel, to_planes(frame, scale_w, scale_h, rot_k), matrix, full_range)
                continue
            # swscale's automatic threading costs more than it saves per frame (4.1 vs 1.4 ms at 1080p here).
            if (scale_w, scale_h) != (frame.width, frame.height) and frame.format.name.startswith("yuv"):
                # Scale in YUV, then convert the small frame: the same picture (to 1 code), in 70% of the time
                # of one pass, whose accurate conversion interpolates chroma at the full size first.
                frame = frame.reformat(width=scale_w, height=scale_h, format=_yuv420_like(frame),
                                       threads=threads or 1, interpolation=Interpolation.BILINEAR)
            rgb = frame.to_ndarray(format="rgb24", threads=threads or 1, interpolation=_RGB_SWS_FLAGS)
            if rot_k:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=rot_k))
            yield DecodedFrame(rel, rgb)


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _decode(container, stream, info: ProbeInfo, path, skip_before: float = 0.0
            ) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time, frame) in presentation order.  Frames that no other frame refers to and that would show before
    ``skip_before`` (the pre-roll from a keyframe to a range's start) are not decoded at all."""
    name = Path(path).name
    ctx = stream.codec_context
    skipping = False
    tb = stream.time_base

    def packets():
        nonlocal skipping
        for packet in container.demux(stream):
            # Per packet: a B-frame shown before the range is dropped anyway, and nothing depends on it.
            early = packet.pts is not None and float(packet.pts * tb) - info.start_time_s < skip_before - _TIME_EPS
            if early != skipping:
                ctx.skip_frame = "NONREF" if early else "DEFAULT"
                skipping = early
            yield from packet.decode()

    try:
        for frame in packets():
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base) - info.start_time_s
            if getattr(frame, "is_corrupt", False):
                # FFmpeg concealed a decoding error: the picture is damaged, not the source's.
                raise MediaError(f"{name}: damaged video data (a corrupt frame at {max(t, 0.0):.3f}s)")
            yield t, frame
    except av.FFmpegError as exc:
        raise MediaError(f"{name}: undecodable video data ({describe_error(exc)})") from None


def read_frames(path, t0: float = 0.0, t1: float | None = None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Decode a range into ``(times_s (n,), frames (n, H, W, 3) uint8)``; for tests and small clips."""
    times, frames = [], []
    for f in iter_frames(path, t0, t1, **kwargs):
        times.append(f.time_s)
        frames.append(f.rgb)
    if not frames:
        return np.zeros(0), np.zeros((0, 0, 0, 3), np.uint8)
    return np.asarray(times), np.stack(frames)


def read_audio(
    path: str | Path,
    *,
    info: ProbeInfo | None = None,
    sample_rate: int = 48000,
    channels: int = 2,
    t0: float = 0.0,
    t1: float | None = None,
) -> np.ndarray | None:
    """Decode the first audio track to float32 ``(channels, n)`` at ``sample_rate`` Hz, or None if absent.

    Time 0 is the first VIDEO frame, so the result lines up with the picture: audio that starts later is
    padded with silence, audio before the first frame is dropped.
    """
    info = info or probe(path)
    if info.audio is None:
        return None
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    try:
        with av.open(str(path), metadata_errors="ignore", options=OPEN_OPTIONS) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if first_time is None and frame.pts is not None:
                    first_time = float(frame.pts * stream.time_base) - info.start_time_s
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.FFmpegError as exc:
        if not chunks:
            raise open_error(path, exc, "undecodable audio") from None
    if not chunks:
        return None
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    offset = int(round((first_time or 0.0) * sample_rate))
    if offset > 0:
        audio = np.concatenate([np.zeros((audio.shape[0], offset), np.float32), audio], axis=1)
    elif offset < 0:
        audio = audio[:, -offset:]
    start = int(round(t0 * sample_rate))
    stop = None if t1 is None else int(round(t1 * sample_rate))
    return np.ascontiguousarray(audio[:, start:stop])
