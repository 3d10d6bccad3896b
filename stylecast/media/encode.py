"""Encoding and joining: the one place that writes media files.

Video is H.264 (libx264, yuv420p) with closed GOPs, so that segments encoded independently — one per render
chunk, possibly on different machines — join by remux into one stream without re-encoding.  Pictures are BT.709
limited range and tagged so (matrix, primaries, transfer, range), so every player and our own decoder turn them
back into the RGB that was rendered.  Audio is AAC.
Final files are MP4 with the index at the front (faststart) and appear at their path only when complete.
"""
from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stylecast.errors import CancelledError, MediaError
from stylecast.paths import atomic_output

AUDIO_RATE = 48000
# Every GOP starts at a multiple of this: chunks cut on GOP boundaries encode the same.  It is the render's chunk
# granularity, and each GOP costs an IDR frame: measured on 20 s of graded 1080p at CRF 20, 1 s GOPs made the
# file 29% larger than 2 s ones (and x264 ~8% slower), while 4 s GOPs saved only 11% more but would leave a
# 20 s render 5 chunks to share between workers.
GOP_SECONDS = 2.0
AUDIO_CHANNELS = 2
_AAC_FRAME = 1024


# x264 CPU feature names and the /proc/cpuinfo flag each needs (x86-64).
_X264_CPU_FLAGS = (("MMX2", "sse"), ("SSE", "sse"), ("SSE2", "sse2"), ("SSE3", "pni"), ("SSSE3", "ssse3"),
                   ("SSE4.1", "sse4_1"), ("SSE4.2", "sse4_2"), ("LZCNT", "abm"), ("AVX", "avx"), ("FMA3", "fma"),
                   ("BMI1", "bmi1"), ("BMI2", "bmi2"), ("AVX2", "avx2"))


@functools.lru_cache(maxsize=1)
def x264_asm_option() -> str:
    """``asm=…`` for x264-params: every SIMD level this CPU has except AVX-512, or '' for x264's own choice.

    x264's AVX-512 code reads past the end of frame rows whose chroma width is not a multiple of 64 bytes
    (e.g. 320-pixel-wide video), so the bitstream depends on whatever memory lies there: the same frames
    then encode differently from run to run, and independently encoded chunks would not match a whole
    render.  Without AVX-512 x264 is deterministic (and, measured here, no slower).
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    if not any(f.startswith("avx512") for f in flags):
        return ""
    names = [name for name, flag in _X264_CPU_FLAGS if flag in flags]
    return "asm=" + ",".join(names) if names else ""


def gop_frames(fps: float) -> int:
    """Frames per GOP at ``fps``: render chunks are whole multiples of it."""
    return max(1, int(round(GOP_SECONDS * fps)))


def fps_fraction(fps: float) -> Fraction:
    """An exact rate for a float fps: 29.97 → 30000/1001, 25.0 → 25, 12.5 → 25/2."""
    # 1e-4 relative: 24000/1001 must not become 24 (they differ by 1e-3), 29.97 must become 30000/1001.
    # Between them, rates that ARE a simple fraction (12.5, 7.5) keep it: the 1001 family is near enough to
    # them too (12512/1001), and picture and sound would drift apart (0.14 s an hour at 12.5 fps).
    for den, tolerance in ((1, 1e-4), (2, 1e-9), (4, 1e-9), (5, 1e-9), (8, 1e-9), (10, 1e-9), (1001, 1e-4)):
        num = round(fps * den)
        if num > 0 and abs(num / den - fps) < tolerance * fps:
            return Fraction(num, den)
    return Fraction(fps).limit_denominator(1001)


# BT.709 tags (ITU-T H.273 code points) written into every stream: the I420 pictures are BT.709 limited range.
_BT709 = 1
_RANGE_LIMITED = 1  # AVCOL_RANGE_MPEG


class SegmentEncoder:
    """Encodes frames into an H.264 MP4 segment (video only), frame n at time n / fps.

    Frames come either as I420 (`write_i420`, what the render kernel writes: no conversion here) or as RGB
    (`write`, converted with `kernels.render.rgb_to_i420`).  Both are BT.709 limited range.
    ``threads`` is the x264 thread count (0 = x264's choice); workers that encode several segments side by
    side pass 1, which on a short GOP is also faster than x264's frame threads (no pipeline fill and drain).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        threads: int = 0,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
        self.path = Path(path)
        self.rate = fps_fraction(fps)
        self.frames_written = 0
        self._container = av.open(str(self.path), "w", format="mp4")
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        cc = stream.codec_context
        cc.time_base = 1 / self.rate
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = _BT709, _BT709, _BT709, _RANGE_LIMITED
        self.width, self.height = width, height
        keyint = gop_frames(float(self.rate))
        stream.options = {
            "crf": str(crf),
            "preset": preset,
            # Closed GOPs of a fixed length and no scene-cut keyframes: a segment never references another
            # one, and a chunk that starts on a GOP boundary is encoded as it would be inside a whole render.
            "x264-params": ":".join(filter(None, [
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:open-gop=0:threads={threads}", x264_asm_option()])),
        }
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 ``(height, width, 3)`` frame."""
        from kernels.render import rgb_to_i420

        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) frame, got {rgb.shape}")
        self.write_i420(rgb_to_i420(rgb, parallel=False))

    def write_i420(self, i420: np.ndarray) -> None:
        """Encode one I420 uint8 ``(height * 3 // 2, width)`` frame (Y rows, then the U and V planes).

        The array is wrapped, not copied: libx264 copies the picture into its look-ahead while this call
        runs, so the caller may overwrite the array as soon as it returns (the renderer reuses one buffer).
        """
        if i420.shape != (self.height * 3 // 2, self.width) or i420.dtype != np.uint8:
            raise ValueError(f"expected a uint8 I420 array of shape ({self.height * 3 // 2}, {self.width}), "
                             f"got {i420.dtype} {i420.shape}")
        if self.height % 4 == 0:
            frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(i420), format="yuv420p")
        else:  # PyAV's wrapper assumes a height that is a multiple of 4 (it takes rows // 6 * 4): copy instead
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.colorspace, frame.color_range = _BT709, _RANGE_LIMITED
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
        self._container = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> SegmentEncoder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _encode_audio_packets(container, audio: np.ndarray, sample_rate: int,
                          should_stop=None) -> tuple[av.audio.stream.AudioStream, list]:
    """Encode float32 (channels, n) audio into AAC packets for ``container``; ``should_stop`` is asked every
    100 AAC frames (about 2 s of audio), and `CancelledError` raised when it says so."""
    channels = audio.shape[0]
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "stereo" if channels == 2 else "mono"
    stream.bit_rate = 192_000 if channels == 2 else 128_000
    stream.codec_context.time_base = Fraction(1, sample_rate)
    packets = []
    audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).astype(np.float32))
    for k, start in enumerate(range(0, audio.shape[1], _AAC_FRAME)):
        if should_stop is not None and k % 100 == 0 and should_stop():
            raise CancelledError("cancelled")
        block = np.ascontiguousarray(audio[:, start : start + _AAC_FRAME])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=stream.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return stream, packets


def fit_audio(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """``audio`` (channels, n) trimmed or zero-padded to exactly ``n_samples``."""
    audio = audio[:, :n_samples]
    if audio.shape[1] < n_samples:
        audio = np.pad(audio, ((0, 0), (0, n_samples - audio.shape[1])))
    return audio


def encode_audio(audio: np.ndarray, path: str | Path, *, duration_s: float, sample_rate: int = AUDIO_RATE,
                 should_stop=None) -> Path:
    """Encode float32 ``(channels, n)`` audio to an AAC ``.m4a`` of exactly ``duration_s`` (trimmed or padded).

    A render encodes its audio this way on a worker while the video ranges render, so the join that follows
    only remuxes (`join_segments` with ``audio_file=``) instead of encoding AAC on its own at the end.
    """
    path = Path(path)
    audio = fit_audio(audio, int(round(duration_s * sample_rate)))
    with atomic_output(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            _, packets = _encode_audio_packets(out, audio, sample_rate, should_stop)
            for packet in packets:
                out.mux(packet)
    return path


def _reorder_delay(path: str | Path) -> int:
    """How far (in stream ticks) a segment's first decode time lies before its first presentation time."""
    with av.open(str(path)) as c:
        for packet in c.demux(c.streams.video[0]):
            if packet.dts is not None and packet.pts is not None:  # the first: the GOP's IDR, shown first
                return max(0, int(packet.pts) - int(packet.dts))
    return 0


def join_segments(
    segments: Sequence[str | Path],
    out_path: str | Path,
    *,
    audio: np.ndarray | None = None,
    audio_file: str | Path | None = None,
    sample_rate: int = AUDIO_RATE,
) -> Path:
    """Join H.264 segments by remux (no re-encode), add AAC audio, write ``out_path`` with faststart.

    Segments must come from `SegmentEncoder` with one size and rate.  The audio is either ``audio``, float32
    ``(channels, n)`` at ``sample_rate`` covering the whole timeline (trimmed or padded to the video, encoded
    here), or ``audio_file``, an `encode_audio` result for the same duration (remuxed, not re-encoded).
    """
    if not segments:
        raise ValueError("no segments to join")
    if audio is not None and audio_file is not None:
        raise ValueError("pass audio or audio_file, not both")
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp, contextlib.ExitStack() as opened:
        inputs = [opened.enter_context(av.open(str(s))) for s in segments]
        audio_in = opened.enter_context(av.open(str(audio_file))) if audio_file is not None else None
        out = opened.enter_context(av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}))
        first = inputs[0].streams.video[0]
        vstream = out.add_stream_from_template(first)
        in_tb = first.time_base
        rate = first.average_rate or first.guessed_rate
        frame_ticks = int(round(1 / (rate * in_tb)))
        total_frames = sum(int(inp.streams.video[0].frames) for inp in inputs)
        video_s = total_frames / float(rate)

        apackets: list = []
        if audio is not None and audio.size:
            _, apackets = _encode_audio_packets(out, fit_audio(audio, int(round(video_s * sample_rate))), sample_rate)
        elif audio_in is not None and audio_in.streams.audio:
            src = audio_in.streams.audio[0]
            astream = out.add_stream_from_template(src)
            for packet in audio_in.demux(src):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's flush packet
                packet.stream = astream
                apackets.append(packet)

        # A segment's decode times start before its presentation times by the encoder's reorder delay (B frames),
        # which is shorter in a GOP of one or two frames (the last GOP of a render can be that short).  Every
        # segment's decode times are shifted to the longest delay, so they keep rising across joins;
        # presentation times are never touched.
        delays = [_reorder_delay(path) for path in segments]
        delay = max(delays)

        def video_packets():
            offset = 0
            for inp, own_delay in zip(inputs, delays):
                s = inp.streams.video[0]
                if s.time_base != in_tb or (s.average_rate or s.guessed_rate) != rate:
                    raise MediaError("segments differ in rate or time base; cannot join by remux")
                for packet in inp.demux(s):
                    if packet.dts is None and packet.pts is None:
                        continue  # the demuxer's flush packet
                    packet.pts = None if packet.pts is None else packet.pts + offset
                    packet.dts = None if packet.dts is None else packet.dts + offset - (delay - own_delay)
                    packet.stream = vstream
                    yield packet
                offset += int(s.frames) * frame_ticks

        # Interleave by time so players need no large buffers.
        ai = 0
        for packet in video_packets():
            t = float(packet.dts * in_tb) if packet.dts is not None else 0.0
            while ai < len(apackets) and apackets[ai].pts is not None and float(apackets[ai].pts * apackets[ai].time_base) <= t:
                out.mux(apackets[ai])
                ai += 1
            out.mux(packet)
        for packet in apackets[ai:]:
            out.mux(packet)
    return out_path
