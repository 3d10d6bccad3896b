"""Camera-motion analysis against the synthetic generator's ground truth."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from stylecast.analysis.motion import (
    SHAKE_MIN,
    ShotMotion,
    estimate_pair_motion,
    motion_track,
    summarize_motion,
)
from stylecast.synth_video import camera_shot, make_canvas

W, H, FPS, N = 320, 180, 25.0, 50
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"

# (expected kind, camera_shot kwargs) — every kind, each sign.
SHOTS = [
    ("static", dict()),
    ("pan_right", dict(pan_x=0.15)),
    ("pan_left", dict(pan_x=-0.12)),
    ("tilt_up", dict(pan_y=0.2)),
    ("tilt_down", dict(pan_y=-0.25)),
    ("zoom_in", dict(zoom_rate=0.25)),
    ("zoom_out", dict(zoom_rate=-0.2)),
    ("rotate", dict(rotate_deg_s=8.0)),
    ("rotate", dict(rotate_deg_s=-6.0)),
    ("handheld", dict(shake_amp=0.012, shake_hz=4.0)),
    ("handheld", dict(shake_amp=0.02, shake_hz=2.5)),
    ("pan_right", dict(pan_x=0.2, shake_amp=0.006, shake_hz=5.0)),  # mild shake on a pan: still a pan
]


@pytest.fixture(scope="module")
def canvas():
    return make_canvas(1200, 700, seed=21, palette="green")


def _gray(frames):
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]


def _summary(frames, fps=FPS):
    return summarize_motion(motion_track(_gray(frames)), fps, frames.shape[2], frames.shape[1])


def _check_against_truth(m: ShotMotion, kind, kw):
    assert m.kind == kind, (kw, m)
    pan_x, pan_y = kw.get("pan_x", 0.0), kw.get("pan_y", 0.0)
    zoom, rot = kw.get("zoom_rate", 0.0), kw.get("rotate_deg_s", 0.0)
    # Speeds within 15 % of the ground truth (small absolute slack for components that are zero).
    assert m.pan_x == pytest.approx(pan_x, rel=0.15, abs=0.006)
    assert m.pan_y == pytest.approx(pan_y, rel=0.15, abs=0.006)
    assert m.zoom_rate == pytest.approx(zoom, rel=0.15, abs=0.01)
    assert m.rotation_deg_s == pytest.approx(rot, rel=0.15, abs=0.3)
    amp = kw.get("shake_amp", 0.0)
    if amp >= SHAKE_MIN:
        assert m.shake_amp == pytest.approx(amp, rel=0.3)
        assert m.shake_hz == pytest.approx(kw["shake_hz"], rel=0.2)
    else:
        assert m.shake_amp < SHAKE_MIN
    assert m.confidence > 0.5


@pytest.mark.parametrize("n_objects", [0, 3])
@pytest.mark.parametrize("kind,kw", SHOTS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SHOTS)])
def test_kind_and_speed_match_ground_truth(canvas, kind, kw, n_objects):
    frames = camera_shot(canvas, N, W, H, FPS, n_objects=n_objects, seed=4, **kw)
    _check_against_truth(_summary(frames), kind, kw)


def test_pair_motion_units_and_signs(canvas):
    frames = camera_shot(canvas, 2, W, H, FPS, pan_x=0.1, pan_y=0.1, zoom_rate=0.5, rotate_deg_s=25.0)
    g = _gray(frames)
    dx, dy, log_s, rot, conf = estimate_pair_motion(g[0], g[1])
    assert dx == pytest.approx(-0.1 * W / FPS, abs=0.1)   # camera right -> content left
    assert dy == pytest.approx(0.1 * H / FPS, abs=0.1)    # camera up -> content down
    assert log_s == pytest.approx(0.5 / FPS, rel=0.1)
    assert rot == pytest.approx(np.radians(25.0 / FPS), rel=0.1)  # counter-clockwise positive
    assert conf > 0.5


def test_blank_frames_give_zero_confidence():
    blank = np.full((H, W), 128, np.uint8)
    np.testing.assert_array_equal(estimate_pair_motion(blank, blank), np.zeros(5))
    m = summarize_motion(np.zeros((10, 5)), FPS, W, H)
    assert m.kind == "static" and m.confidence == 0.0


def test_very_short_shots_are_static_low_confidence(canvas):
    frames = camera_shot(canvas, 2, W, H, FPS, pan_x=0.3)
    for n in (1, 2):
        m = _summary(frames[:n])
        assert m.kind == "static" and m.confidence <= 0.1
    assert motion_track(_gray(frames[:1])).shape == (0, 5)


def test_low_confidence_pairs_are_bridged(canvas):
    frames = camera_shot(canvas, N, W, H, FPS, pan_x=0.15)
    track = motion_track(_gray(frames))
    track[10:14] = 0.0  # e.g. a flash frame: nothing measured there
    m = summarize_motion(track, FPS, W, H)
    assert m.kind == "pan_right" and m.pan_x == pytest.approx(0.15, rel=0.05)
    assert m.shake_amp < SHAKE_MIN


def test_shot_motion_forbids_extra_fields():
    with pytest.raises(Exception):
        ShotMotion(kind="static", pan_x=0, pan_y=0, zoom_rate=0, rotation_deg_s=0, shake_amp=0, shake_hz=0,
                   confidence=1, bogus=1)


def _h264_roundtrip(frames, path, fps=25):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)])


@pytest.mark.parametrize("grain", [0.0, 4.0])
@pytest.mark.parametrize("kind,kw", [("static", dict()), ("static", dict(n_objects=3)),
                                     ("pan_left", dict(pan_x=-0.15)),
                                     ("handheld", dict(shake_amp=0.012, shake_hz=4.0))])
def test_h264_compression_noise_keeps_kind(canvas, tmp_path, kind, kw, grain):
    frames = camera_shot(canvas, N, W, H, FPS, seed=9, **kw)
    if grain:  # sensor-like grain, different every frame, so the encoder's noise differs per frame too
        noise = np.random.default_rng(0).normal(0.0, grain, frames.shape)
        frames = np.clip(frames + noise, 0, 255).astype(np.uint8)
    decoded = _h264_roundtrip(frames, tmp_path / "clip.mp4")
    assert decoded.shape == frames.shape
    m = _summary(decoded)
    kw.pop("n_objects", None)
    _check_against_truth(m, kind, kw)


@pytest.mark.shared_media
def test_real_clip_runs_and_is_sane():
    clip = MEDIA / "bikes.mp4"
    if not clip.exists():
        pytest.skip("shared media not available")
    av = pytest.importorskip("av")
    grays = []
    with av.open(str(clip)) as container:
        fps = float(container.streams.video[0].average_rate or 25)
        for i, fr in enumerate(container.decode(video=0)):
            if i >= 40:
                break
            rgb = fr.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            small = cv2.resize(rgb, (320, int(round(320 * h / w))), interpolation=cv2.INTER_AREA)
            grays.append(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    track = motion_track(grays)
    assert track.shape == (len(grays) - 1, 5) and np.isfinite(track).all()
    m = summarize_motion(track, fps, grays[0].shape[1], grays[0].shape[0])
    assert 0.0 <= m.confidence <= 1.0 and np.isfinite([m.pan_x, m.pan_y, m.zoom_rate]).all()
