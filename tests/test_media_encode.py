"""The encoder: I420 in, BT.709-tagged H.264 out; buffers may be reused; RGB round trip."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from stylecast.media.decode import read_frames
from stylecast.media.encode import SegmentEncoder, fps_fraction, join_segments


def _flat_i420(h: int, w: int, y: int, u: int, v: int, out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((h * 3 // 2, w), np.uint8) if out is None else out
    out[:h] = y
    chroma = out[h:].reshape(-1)
    half = chroma.size // 2
    chroma[:half] = u
    chroma[half:] = v
    return out


def test_reused_i420_buffer_encodes_every_frame_as_written(tmp_path):
    """write_i420 wraps the array without copying: x264 must have taken the picture before it returns."""
    h, w, n = 64, 96, 12
    buf = np.empty((h * 3 // 2, w), np.uint8)
    levels = [30 + 15 * k for k in range(n)]
    with SegmentEncoder(tmp_path / "seg.mp4", w, h, 30.0, crf=0, preset="ultrafast") as enc:
        for y in levels:
            enc.write_i420(_flat_i420(h, w, y, 128, 128, out=buf))  # the same memory every time
    with av.open(str(tmp_path / "seg.mp4")) as c:
        got = [int(np.median(f.to_ndarray()[:h])) for f in c.decode(video=0)]
    assert got == levels


@pytest.mark.parametrize("h", [90, 92, 270, 272])
def test_every_even_height_encodes_its_planes_where_they_are(tmp_path, h):
    """A lossless round trip of textured planes gives them back exactly, also for heights that are not a
    multiple of 4 (PyAV's zero-copy wrapper assumes one: it would read the chroma from the wrong rows)."""
    from stylecast.media.decode import iter_frames

    w = 48
    rng = np.random.default_rng(h)
    pictures = [rng.integers(16, 236, (h * 3 // 2, w), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "odd.mp4"
    with SegmentEncoder(path, w, h, 25.0, crf=0, preset="ultrafast") as enc:
        for picture in pictures:
            enc.write_i420(picture)
    frames = list(iter_frames(path, planes=True))
    assert len(frames) == len(pictures)
    for frame, picture in zip(frames, pictures):
        y, u, v = frame.planes
        assert y.shape == (h, w)
        assert np.array_equal(y, picture[:h])
        assert np.array_equal(u.reshape(-1), picture[h:].reshape(-1)[: h * w // 4])
        assert np.array_equal(v.reshape(-1), picture[h:].reshape(-1)[h * w // 4:])


def _flat_segments(tmp_path, h: int, w: int, yuv: tuple[int, int, int], count: int = 2, frames: int = 25) -> list:
    """``count`` one-second segments at 25 fps of one flat I420 colour."""
    paths = []
    for k in range(count):
        paths.append(tmp_path / f"s{k}.mp4")
        with SegmentEncoder(paths[-1], w, h, 25.0) as enc:
            for _ in range(frames):
                enc.write_i420(_flat_i420(h, w, *yuv))
    return paths


def test_stream_is_tagged_bt709_limited_and_join_keeps_it(tmp_path):
    paths = _flat_segments(tmp_path, 32, 48, (100, 120, 140))
    joined = join_segments(paths, tmp_path / "joined.mp4")
    for path in paths + [joined]:
        with av.open(str(path)) as c:
            cc = c.streams.video[0].codec_context
            assert (int(cc.colorspace), int(cc.color_primaries), int(cc.color_trc), int(cc.color_range)) == (1, 1, 1, 1)
            frame = next(c.decode(video=0))
            assert int(frame.colorspace) == 1 and int(frame.color_range) == 1


def test_rgb_frames_round_trip_through_encode_and_decode(tmp_path):
    """What the renderer computes in RGB is what a viewer (and our decoder) gets back: the matrix written
    and the matrix tagged agree."""
    h, w = 72, 128
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 2) % 256, (yy * 3) % 256, ((xx + yy) * 1.5) % 256], axis=-1).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(rgb[::8, ::8], 8, 0), 8, 1))  # flat 8x8 patches
    with SegmentEncoder(tmp_path / "rgb.mp4", w, h, 30.0, crf=0, preset="ultrafast") as enc:
        for _ in range(3):
            enc.write(rgb)
    _, frames = read_frames(tmp_path / "rgb.mp4")
    err = (frames[1].astype(int) - rgb).reshape(h // 8, 8, w // 8, 8, 3)[:, 2:6, :, 2:6]  # inside flat patches
    # 8-bit YCbCr quantisation gives a code or two; swscale's fast YCbCr->RGB reads about one code dark
    # (it did so before too; our RGB->YCbCr is unbiased: see test_kernels_render).
    assert np.abs(err).max() <= 4
    assert np.all(np.abs(err.mean(axis=(0, 1, 2, 3))) < 1.6)
    # The tag is what makes this work: read as BT.601, the same pictures are far off.
    with av.open(str(tmp_path / "rgb.mp4")) as c:
        as_601 = list(c.decode(video=0))[1].to_ndarray(format="rgb24", src_colorspace="ITU601")
    assert np.abs(as_601.astype(int) - rgb).max() > 15


@pytest.mark.parametrize("method, frame", [
    ("write_i420", np.zeros((40, 48), np.uint8)),        # not (32 * 3 / 2, 48)
    ("write_i420", np.zeros((48, 48), np.uint16)),       # wrong dtype
    ("write", np.zeros((30, 48, 3), np.uint8)),          # RGB of another size
])
def test_wrong_frames_are_refused(tmp_path, method, frame):
    enc = SegmentEncoder(tmp_path / "x.mp4", 48, 32, 30.0)
    try:
        with pytest.raises(ValueError, match="expected"):
            getattr(enc, method)(frame)
    finally:
        enc.abort()
    assert not (tmp_path / "x.mp4").exists()


def test_pre_encoded_audio_file_joins_like_audio_encoded_in_the_join(tmp_path):
    """The renderer encodes its audio beside the video ranges (`encode_audio`) and the join only remuxes it:
    the result must decode to the same samples, start and length as audio encoded by the join itself."""
    from stylecast.media.decode import read_audio
    from stylecast.media.encode import encode_audio

    paths = _flat_segments(tmp_path, 32, 48, (100, 128, 128))
    sr = 48000
    t = np.arange(int(2.3 * sr)) / sr  # longer than the 2 s of video: trimmed either way
    audio = (0.5 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])).astype(np.float32)
    in_join = join_segments(paths, tmp_path / "in_join.mp4", audio=audio)
    m4a = encode_audio(audio, tmp_path / "audio.m4a", duration_s=2.0)
    remuxed = join_segments(paths, tmp_path / "remuxed.mp4", audio_file=m4a)
    a, b = read_audio(in_join), read_audio(remuxed)
    assert a.shape == b.shape and np.array_equal(a, b)
    for path in (in_join, remuxed):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            assert s.start_time == 0 and float(s.duration * s.time_base) == pytest.approx(2.0, abs=1e-3)
    short = encode_audio(audio[:, : sr // 2], tmp_path / "short.m4a", duration_s=2.0)  # padded with silence
    padded = read_audio(join_segments(paths, tmp_path / "padded.mp4", audio_file=short))
    assert padded.shape[1] >= 2 * sr and np.abs(padded[:, int(0.6 * sr):]).max() < 1e-3
    with pytest.raises(ValueError):
        join_segments(paths, tmp_path / "both.mp4", audio=audio, audio_file=m4a)


def test_an_audio_encode_stops_when_asked_and_leaves_no_file(tmp_path):
    """A long video's audio takes a while to encode: a cancelled job's encode stops (asked every ~2 s of
    audio) instead of holding up the worker, and leaves nothing behind."""
    from stylecast.errors import CancelledError
    from stylecast.media.encode import encode_audio

    sr = 48000
    audio = np.zeros((2, 30 * sr), np.float32)
    asked = []

    def stop_after_two_asks() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(CancelledError):
        encode_audio(audio, tmp_path / "a.m4a", duration_s=30.0, should_stop=stop_after_two_asks)
    assert len(asked) == 3 and list(tmp_path.iterdir()) == []
    assert encode_audio(audio[:, :sr], tmp_path / "b.m4a", duration_s=1.0, should_stop=lambda: False).exists()


def test_gops_of_one_or_two_frames_join_between_longer_ones(tmp_path):
    """A GOP of one or two frames has no B-frame reorder delay, the GOPs around it have one: the join keeps
    decode times rising (the muxer refuses anything else) and every frame is shown once, in order."""
    h, w = 32, 48
    lengths = [30, 1, 2, 30, 1]
    rng = np.random.default_rng(3)
    paths, levels, k = [], [], 0
    for i, n in enumerate(lengths):
        paths.append(tmp_path / f"g{i}.mp4")
        with SegmentEncoder(paths[-1], w, h, 30.0, crf=20, preset="veryfast") as enc:
            for _ in range(n):
                levels.append(40 + (k * 7) % 160)
                frame = _flat_i420(h, w, levels[-1], 128, 128)
                # Noise that changes every frame: x264 then uses B frames (a reorder delay) in the longer GOPs.
                frame[:h] = np.clip(levels[-1] + rng.integers(-12, 13, (h, w)), 0, 255)
                enc.write_i420(frame)
                k += 1
    joined = join_segments(paths, tmp_path / "joined.mp4")
    with av.open(str(joined)) as c:
        dts = [p.dts for p in c.demux(video=0) if p.size]
    assert all(a < b for a, b in zip(dts, dts[1:]))
    times, frames = read_frames(joined)
    assert len(times) == sum(lengths)
    np.testing.assert_allclose(times, np.arange(sum(lengths)) / 30.0, atol=1e-3)
    got = [float(f[..., 1].mean()) for f in frames]  # grey: G follows Y
    assert all(abs(g - (lv - 16) * 255 / 219) <= 3 for g, lv in zip(got, levels)), (got, levels)


def test_decoded_planes_are_the_encoded_planes_with_their_matrix(tmp_path):
    """iter_frames(planes=True) hands the decoder's planes over as they are (lossless stream: exactly what
    was encoded), tagged with the stream's matrix and range, at the times the RGB frames have."""
    from stylecast.media.decode import iter_frames

    h, w = 48, 64
    levels = [(40 + 20 * k, 100 + 5 * k, 150 - 5 * k) for k in range(6)]
    path = tmp_path / "lossless.mp4"
    with SegmentEncoder(path, w, h, 25.0, crf=0, preset="ultrafast") as enc:
        for yuv in levels:
            enc.write_i420(_flat_i420(h, w, *yuv))
    frames = list(iter_frames(path, planes=True))
    rgb_times = [f.time_s for f in iter_frames(path)]
    assert [f.time_s for f in frames] == rgb_times and len(frames) == len(levels)
    for frame, (y, u, v) in zip(frames, levels):
        assert (frame.matrix, frame.full_range, frame.size) == ("bt709", False, (w, h))
        assert [p.shape for p in frame.planes] == [(h, w), (h // 2, w // 2), (h // 2, w // 2)]
        assert all(np.all(p == want) for p, want in zip(frame.planes, (y, u, v)))
    # A decode size other than the coded one goes through swscale, still 4:2:0 with the same colours.
    small = next(iter_frames(path, planes=True, size=(32, 24)))
    assert small.size == (32, 24) and [p.shape for p in small.planes] == [(24, 32), (12, 16), (12, 16)]
    assert all(abs(int(np.median(p)) - want) <= 1 for p, want in zip(small.planes, levels[0]))


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv422p10le", "yuvj420p"])
def test_other_pixel_formats_decode_to_420_planes_with_their_range(tmp_path, pix_fmt):
    """4:4:4, 10-bit 4:2:2 and full-range sources reach the render kernel as 8-bit 4:2:0 planes that mean
    the same colours (read with the frame's matrix and range)."""
    from kernels.render_yuv import yuv_to_rgb
    from stylecast.media.decode import iter_frames

    h, w = 32, 48
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = (200, 60, 40)
    rgb[:, w // 2:] = (30, 120, 210)
    path = tmp_path / f"{pix_fmt}.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"crf": "0", "preset": "ultrafast"}
        for _ in range(3):
            for packet in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    frame = next(iter_frames(path, planes=True))
    assert [p.shape for p in frame.planes] == [(h, w), (h // 2, w // 2), (h // 2, w // 2)]
    assert frame.full_range == (pix_fmt == "yuvj420p")
    y, u, v = (p.astype(np.float64) for p in frame.planes)
    for x in (w // 4, 3 * w // 4):  # the middle of each flat half
        got = yuv_to_rgb(np.array([y[h // 2, x], u[h // 4, x // 2], v[h // 4, x // 2]]), frame.matrix,
                         frame.full_range) * 255
        assert np.abs(got - rgb[h // 2, x]).max() <= 4, (pix_fmt, got, rgb[h // 2, x])


def test_range_decode_skips_only_frames_before_the_range(tmp_path):
    """A range's decoder does not decode the B-frames of its pre-roll (nothing refers to them); every frame of
    the range is still exactly the frame a decode from the start gives, wherever the range starts."""
    from stylecast.media.decode import iter_frames

    h, w, n = 48, 64, 75
    path = tmp_path / "bframes.mp4"
    rng = np.random.default_rng(5)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "medium", "x264-params": "keyint=25:min-keyint=25:bframes=3:b-pyramid=normal"}
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for k in range(n):
            for packet in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * k, axis=1), format="rgb24")):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    with av.open(str(path)) as c:
        assert any(int(f.pict_type) == 3 for f in c.decode(video=0)), "the clip must have B-frames"  # AV_PICTURE_TYPE_B
    full = list(iter_frames(path, planes=True))
    assert len(full) == n
    for t0 in (0.5, 0.53, 0.97, 1.02, 1.5, 2.3):
        got = list(iter_frames(path, t0, planes=True))
        want = [f for f in full if f.time_s >= t0 - 1e-6]
        assert [f.time_s for f in got] == [f.time_s for f in want]
        for a, b in zip(got, want):
            assert all(np.array_equal(p, q) for p, q in zip(a.planes, b.planes)), (t0, a.time_s)


@pytest.mark.parametrize("fps,exact", [(25.0, Fraction(25)), (30000 / 1001, Fraction(30000, 1001)),
                                       (29.97, Fraction(30000, 1001)), (23.976, Fraction(24000, 1001)),
                                       (12.5, Fraction(25, 2)), (7.5, Fraction(15, 2)), (0.5, Fraction(1, 2)),
                                       (59.94, Fraction(60000, 1001))])
def test_fps_fraction_keeps_simple_rates_and_the_ntsc_family(fps, exact):
    # 12.5 fps as 12512/1001 would put picture and sound 0.14 s apart after an hour.
    assert fps_fraction(fps) == exact
