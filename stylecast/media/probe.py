"""Probing: the one place that reads container and stream facts.

Everything else asks `probe()` for durations, rates, sizes and orientation, so that decode, analysis and
render agree on what a viewer sees.  Times here are seconds; ``start_time_s`` is the presentation time of
the first video frame, and every other time in stylecast is relative to it (frame 0 is at t = 0).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stylecast.errors import InputUnavailable, MediaError


class AudioInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codec: str
    sample_rate: int = Field(description="Hz")
    channels: int
    start_time_s: float = Field(description="first audio sample's presentation time, seconds")
    duration_s: float | None = None


class ProbeInfo(BaseModel):
    """What a viewer sees of a video file, plus what a decoder needs to know."""

    model_config = ConfigDict(extra="forbid")

    path: str
    container: str
    size_bytes: int
    video_codec: str
    duration_s: float = Field(description="from the first video frame to the end of the last, seconds")
    fps: float = Field(description="average frame rate, frames per second")
    is_vfr: bool = Field(description="frame durations vary by more than 10%")
    frame_count: int
    coded_width: int
    coded_height: int
    sample_aspect_ratio: tuple[int, int] = Field(description="pixel aspect ratio (SAR) as num, den")
    rotation_deg: int = Field(description="counter-clockwise rotation to apply for display: 0, 90, 180, 270")
    display_width: int = Field(description="width as shown, after SAR and rotation, pixels")
    display_height: int
    start_time_s: float = Field(description="presentation time of the first video frame, seconds")
    time_base: tuple[int, int]
    audio: AudioInfo | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def display_aspect(self) -> float:
        return self.display_width / self.display_height


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def probe(path: str | Path) -> ProbeInfo:
    """Read a video file's facts; raises `MediaError` with a one-line reason for anything unusable.

    The video packets are demuxed (not decoded) to count frames and measure frame-duration spread exactly,
    and the first frame is decoded to read the display matrix and to prove that the stream decodes.
    """
    path = Path(path)
    if not path.exists():
        raise InputUnavailable(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not a video file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"{path.name}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore", options=OPEN_OPTIONS)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise open_error(path, exc, "not a readable media file") from None
    try:
        return _probe_open(container, path, size)
    finally:
        container.close()


def open_error(path: str | Path, exc: BaseException, what: str) -> MediaError:
    """The error for a file FFmpeg could not open: `InputUnavailable` when the file could not be reached (it is
    missing or may not be read here), else `MediaError` (an I/O error may be the content's: FFmpeg's demuxers
    report truncated data as EIO); ``what`` says what failed ("cannot open")."""
    cls = InputUnavailable if isinstance(exc, (FileNotFoundError, PermissionError)) else MediaError
    return cls(f"{Path(path).name}: {what} ({_reason(exc)})")


def describe_error(exc: BaseException) -> str:
    """FFmpeg's words for an error, without errno numbers and paths."""
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # PyAV prefixes "[Errno 1094995529] Invalid data found when processing input: 'path'"; keep the words.
    if "]" in text and text.startswith("[Errno"):
        text = text.split("]", 1)[1].strip()
    text = text.split(": '", 1)[0]
    return text.replace("[Errno", "").strip()


# Containers users upload videos in.  Anything else is refused before any decoding: FFmpeg would otherwise
# "demux" text files into pictures of the text, and playlist formats (HLS, concat) would open other files.
ALLOWED_FORMATS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv",
                   "ogg", "asf", "m4v", "h264", "hevc", "mpegvideo", "m4v", "ivf", "yuv4mpegpipe"}
# Only local files: never let a container reference a URL or another protocol.
OPEN_OPTIONS = {"protocol_whitelist": "file"}

# FFmpeg "demuxes" text files (by extension) into pictures of the text; those are not videos.
_NOT_VIDEO_FORMATS = {"tty", "ansi", "bin", "xbin", "idf", "adf", "srt", "webvtt", "ass", "subviewer"}
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "text"}


def main_video_stream(container: av.container.InputContainer):
    """The video stream a viewer sees: not a cover picture; of several, the one flagged default (players
    pick it), else the first.  Probing and decoding both use it."""
    pictures = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    defaults = [s for s in pictures if s.disposition & av.stream.Disposition.default]
    return (defaults or pictures or list(container.streams.video))[0]


def _probe_open(container: av.container.InputContainer, path: Path, size: int) -> ProbeInfo:
    fmt_names = set(container.format.name.split(","))
    if not fmt_names & ALLOWED_FORMATS and not fmt_names & _NOT_VIDEO_FORMATS:
        raise MediaError(f"{path.name}: unsupported container format ({container.format.name}); "
                         "use MP4, MOV, MKV, WebM, AVI or MPEG-TS")
    if fmt_names & _NOT_VIDEO_FORMATS or (container.streams.video
                                          and main_video_stream(container).codec_context.name in _NOT_VIDEO_CODECS):
        raise MediaError(f"{path.name}: a text file, not a video")
    if not container.streams.video:
        kind = "an audio-only file" if container.streams.audio else "a file with no video stream"
        raise MediaError(f"{path.name}: {kind}; a video stream is required")
    if all(s.disposition & av.stream.Disposition.attached_pic for s in container.streams.video):
        raise MediaError(f"{path.name}: an audio file with a cover picture, not a video; a video stream is "
                         "required")
    stream = main_video_stream(container)
    cc = stream.codec_context
    if cc.width <= 0 or cc.height <= 0:
        raise MediaError(f"{path.name}: video stream has no frame size")
    tb = stream.time_base or Fraction(1, 90000)

    pts: list[int] = []
    readable = 0  # packets read, with those the container says to drop (they count in stream.frames)
    damaged = False
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size > 0:
                readable += 1
                # An edit list can start the timeline after the first keyframe (``ffmpeg -ss T -c copy`` keeps
                # the GOP's head to decode from): the decoder drops those frames, so they are not shown.
                if not packet.is_discard:
                    pts.append(packet.pts)
    except av.FFmpegError as exc:
        if not pts:
            raise MediaError(f"{path.name}: cannot read video packets ({_reason(exc)})") from None
        damaged = True
    declared = int(stream.frames or 0)
    if damaged or (declared and readable < declared):
        raise MediaError(f"{path.name}: the file is truncated or damaged "
                         f"({readable} of {declared or 'an unknown number of'} video frames are readable)")
    if not pts:
        raise MediaError(f"{path.name}: the video stream has no frames")
    pts_arr = np.unique(np.asarray(pts, dtype=np.int64))
    frame_count = int(pts_arr.size)

    deltas = np.diff(pts_arr).astype(np.float64) * float(tb)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if deltas.size:
        median_delta = float(np.median(deltas))
        last_duration = median_delta
        is_vfr = bool(deltas.size >= 2 and (deltas.max() - deltas.min()) > 0.1 * median_delta)
    else:
        last_duration = 1.0 / float(rate) if rate else 1.0 / 25.0
        is_vfr = False
    start_time = float(pts_arr[0] * tb)
    duration = float((pts_arr[-1] - pts_arr[0]) * tb) + last_duration
    fps = frame_count / duration if duration > 0 else (float(rate) if rate else 25.0)
    if not is_vfr and rate:
        fps = float(rate)  # the nominal rate is exact (29.97 stays 30000/1001), the ratio may be rounded

    rotation = _first_frame_rotation(path)
    rotation = (int(round(rotation / 90.0)) * 90) % 360

    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio or Fraction(1, 1)
    if sar <= 0:
        sar = Fraction(1, 1)
    width_sq = cc.width * float(sar)
    height_sq = float(cc.height)
    if rotation in (90, 270):
        width_sq, height_sq = height_sq, width_sq

    audio = None
    if container.streams.audio:
        a = container.streams.audio[0]
        acc = a.codec_context
        if acc.sample_rate and acc.channels:
            atb = a.time_base or Fraction(1, acc.sample_rate)
            audio = AudioInfo(
                codec=acc.name,
                sample_rate=int(acc.sample_rate),
                channels=int(acc.channels),
                start_time_s=float(a.start_time * atb) if a.start_time is not None else start_time,
                duration_s=float(a.duration * atb) if a.duration else None,
            )

    return ProbeInfo(
        path=str(path),
        container=container.format.name,
        size_bytes=size,
        video_codec=cc.name,
        duration_s=duration,
        fps=fps,
        is_vfr=is_vfr,
        frame_count=frame_count,
        coded_width=cc.width,
        coded_height=cc.height,
        sample_aspect_ratio=(sar.numerator, sar.denominator),
        rotation_deg=rotation,
        display_width=_even(width_sq),
        display_height=_even(height_sq),
        start_time_s=start_time,
        time_base=(tb.numerator, tb.denominator),
        audio=audio,
    )


def _first_frame_rotation(path: Path) -> int:
    """Decode the first frame (proves the stream decodes) and read its display-matrix rotation."""
    try:
        with av.open(str(path), metadata_errors="ignore", options=OPEN_OPTIONS) as container:
            for frame in container.decode(main_video_stream(container)):
                return int(round(getattr(frame, "rotation", 0) or 0))
    except av.FFmpegError as exc:
        raise MediaError(f"{path.name}: the video does not decode ({_reason(exc)})") from None
    raise MediaError(f"{path.name}: no decodable video frame")
