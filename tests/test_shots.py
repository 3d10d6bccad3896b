"""Shot-boundary detection on synthetic clips with known ground truth (and on the real test clips)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from stylecast import synth_video as sv
from stylecast.analysis import shots

W, H, FPS = 320, 180, 25.0
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="module")
def canvases() -> list[np.ndarray]:
    return [sv.make_canvas(1024, 576, seed=seed) for seed in range(5)]


def _shot(canvas: np.ndarray, n: int, *, crop: tuple[int, int] = (0, 0), seed: int = 0, **motion) -> np.ndarray:
    """A shot of ``canvas`` (optionally of a sub-region starting at ``crop`` = (x, y) px)."""
    x0, y0 = crop
    sub = np.ascontiguousarray(canvas[y0 : y0 + 360, x0 : x0 + 640])
    return sv.camera_shot(sub, n, W, H, FPS, seed=seed, **motion)


def _track(frames: np.ndarray) -> shots.FeatureTrack:
    return shots.compute_track(frames, fps=FPS)


def _match(found: list[int], truth: list[float], tol: float) -> tuple[int, int, int]:
    """Greedy one-to-one matching; returns (true positives, false positives, false negatives)."""
    unused = list(truth)
    tp = 0
    for f in found:
        best = min(unused, key=lambda t: abs(t - f), default=None)
        if best is not None and abs(best - f) <= tol:
            unused.remove(best)
            tp += 1
    return tp, len(found) - tp, len(unused)


# ------------------------------------------------------------------------------------ cuts


@pytest.fixture(scope="module")
def cut_clip(canvases) -> tuple[np.ndarray, list[int]]:
    """~30 shots, 8..30 frames, varied camera motion; every other cut is between two framings of the
    SAME canvas (same palette and texture statistics: similar-looking shots)."""
    rng = np.random.default_rng(7)
    motions = [
        {}, {"pan_x": 0.4}, {"pan_x": -0.3, "pan_y": 0.2}, {"zoom_rate": 0.25}, {"n_objects": 3},
        {"shake_amp": 0.006, "shake_hz": 3.0}, {"rotate_deg_s": 8.0},
    ]
    parts, cuts, pos = [], [], 0
    canvas_idx = 0
    for k in range(30):
        if k % 2 == 0:
            canvas_idx = int(rng.integers(0, len(canvases)))
        crop = (int(rng.integers(0, 160)), int(rng.integers(0, 90)))
        n = int(rng.integers(8, 31))
        frames = _shot(canvases[canvas_idx], n, crop=crop, seed=k, **motions[k % len(motions)])
        if pos:
            cuts.append(pos)
        parts.append(frames)
        pos += n
    return np.concatenate(parts), cuts


def test_cuts_f1(cut_clip):
    frames, truth = cut_clip
    found = shots.detect_transitions(_track(frames))
    assert all(t.kind == "cut" for t in found), [(t.kind, t.frame) for t in found]
    tp, fp, fn = _match([t.frame for t in found], truth, tol=1)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.98, (f1, tp, fp, fn, [t.frame for t in found], truth)
    for t in found:
        assert t.start_frame == t.end_frame == t.frame and t.duration_s == 0.0
        assert t.time_s == pytest.approx(t.frame / FPS)


def test_chunked_track_identical(cut_clip):
    frames, _ = cut_clip
    whole = _track(frames)
    bounds = [0, 1, 37, 38, 120, 257, len(frames)]
    pieces = [
        shots.compute_track(
            frames[a:b], fps=FPS, prev_rgb=frames[a - 1] if a else None, start_frame=a,
        )
        for a, b in zip(bounds, bounds[1:])
    ]
    chunked = shots.concat_tracks(pieces)
    # compute_track reuses the previous frame's downscale: same numbers as frame_features
    for i in (0, 1, 38, 200):
        single = shots.frame_features(frames[i], frames[i - 1] if i else None)
        assert single.motion_change == whole.motion_change[i]
        np.testing.assert_array_equal(single.thumb_lab, whole.thumb_lab[i])
    for name in shots._ARRAY_FIELDS + ("times_s",):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
    assert shots.detect_transitions(chunked) == shots.detect_transitions(whole)
    # small and picklable (it travels between Ray workers)
    restored = pickle.loads(pickle.dumps(chunked))
    np.testing.assert_array_equal(restored.thumb_lab, whole.thumb_lab)
    assert whole.thumb_lab.nbytes / len(whole) < 10_000


MOTIONS = {
    "fast_pan": {"pan_x": 1.0},
    "fast_tilt": {"pan_y": -0.9},
    "diagonal_pan": {"pan_x": -0.6, "pan_y": 0.6},
    "zoom_in": {"zoom_rate": 0.5},
    "zoom_out": {"zoom_rate": -0.4},
    "rotation": {"rotate_deg_s": 25.0},
    "handheld_shake": {"shake_amp": 0.012, "shake_hz": 4.0},
    "moving_objects": {"n_objects": 6},
    "combined": {"pan_x": 0.5, "zoom_rate": 0.2, "shake_amp": 0.006, "shake_hz": 2.0, "n_objects": 2},
}


@pytest.mark.parametrize("name", list(MOTIONS))
def test_no_transitions_on_camera_motion(canvases, name):
    frames = sv.camera_shot(canvases[len(name) % 5], 50, W, H, FPS, seed=3, **MOTIONS[name])
    found = shots.detect_transitions(_track(frames))
    assert found == [], [(t.kind, t.frame) for t in found]


# ------------------------------------------------------------------------------------ fades


def test_fades_black_and_white(canvases):
    a = _shot(canvases[0], 40, pan_x=0.3)
    b = _shot(canvases[1], 40, n_objects=2)
    c = _shot(canvases[2], 40, zoom_rate=0.2)
    d = _shot(canvases[3], 40, shake_amp=0.005, shake_hz=2.0)
    black, white = (0, 0, 0), (255, 255, 255)
    clip = np.concatenate([
        sv.fade(a, black, 12), sv.solid_frames(5, H, W, black), sv.fade_in(b, black, 12),  # hold 40..44
        sv.fade(c, white, 10), sv.solid_frames(3, H, W, white), sv.fade_in(d, white, 10),  # hold 125..127
        sv.fade(a, black, 16), sv.fade_in(c, black, 8),  # black at 207, 208; no hold
    ])
    found = shots.detect_transitions(_track(clip))
    got = [(t.kind, t.frame) for t in found]
    # b -> c (frame 85) and d -> a (frame 168) are plain cuts between unfaded frames.
    expected = [("fade", 42), ("cut", 85), ("fade", 126), ("cut", 168), ("fade", 207.5)]
    assert [k for k, _ in got] == [k for k, _ in expected], got
    for (_, f), (_, e) in zip(got, expected):
        assert abs(f - e) <= 1, got
    fades = [t for t in found if t.kind == "fade"]
    # spans cover the ramps (12 + 5 + 12 frames for the first)
    assert fades[0].start_frame <= 30 and fades[0].end_frame >= 54, fades[0]
    assert fades[1].start_frame <= 117 and fades[1].end_frame >= 135, fades[1]
    assert fades[2].start_frame <= 194 and fades[2].end_frame >= 213, fades[2]
    shot_list = shots.shots_from_transitions(found, len(clip), fps=FPS)
    assert [s.start_frame for s in shot_list] == [0] + [t.frame for t in found]


# ------------------------------------------------------------------------------------ dissolves


def test_dissolves(canvases):
    lengths = [8, 12, 16, 24]
    speeds = [0.1, -0.2, 0.0, 0.25, -0.15]
    segs = [_shot(canvases[i], 80, pan_x=speeds[i], seed=i, n_objects=i % 2) for i in range(5)]
    parts, truth, pos = [segs[0][:30]], [], 30
    tail = 30
    for k, n in enumerate(lengths, start=1):
        parts.append(sv.dissolve(segs[k - 1][tail : tail + n], segs[k][:n]))
        truth.append(pos + (n - 1) / 2)
        pos += n
        parts.append(segs[k][n : n + 30])
        pos += 30
        tail = n + 30
    found = shots.detect_transitions(_track(np.concatenate(parts)))
    assert [t.kind for t in found] == ["dissolve"] * len(lengths), [(t.kind, t.frame) for t in found]
    for t, mid, n in zip(found, truth, lengths):
        assert abs(t.frame - mid) <= 2, (t, mid)
        assert t.duration_s == pytest.approx((t.end_frame - t.start_frame + 1) / FPS)
        assert n - 6 <= t.end_frame - t.start_frame + 1 <= n + 2, (t, n)


# ------------------------------------------------------------------------------------ misc


def test_letterbox(canvases):
    content = _shot(canvases[4], 30, pan_x=0.3)
    rng = np.random.default_rng(1)
    # 320x180 frame: 22 px bars top and bottom, 12 px pillars; bars carry a little coding noise
    frames = rng.integers(0, 6, size=(30, H, W, 3)).astype(np.uint8)
    frames[:, 22 : H - 22, 12 : W - 12] = content[:, 22 : H - 22, 12 : W - 12]
    frames[10:14] = 0  # a black frame inside must not matter
    assert shots.detect_letterbox(_track(frames)) == (22, 22, 12, 12)
    assert shots.detect_letterbox(_track(content)) == (0, 0, 0, 0)
    # a dark picture with a bright strip near the bottom (a night shot, a fade-in) is not a letterbox
    dark = rng.integers(0, 6, size=(30, H, W, 3)).astype(np.uint8)
    dark[:, H - 30 : H - 10] = content[:, H - 30 : H - 10]
    assert shots.detect_letterbox(_track(dark)) == (0, 0, 0, 0)


def test_shots_from_transitions_and_models():
    t = [
        shots.Transition(frame=0, time_s=0.0, kind="fade", start_frame=0, end_frame=9, duration_s=0.4, score=1),
        shots.Transition(frame=30, time_s=1.2, kind="cut", start_frame=30, end_frame=30, duration_s=0, score=1),
        shots.Transition(frame=62, time_s=2.48, kind="dissolve", start_frame=58, end_frame=66, duration_s=0.36, score=1),
        shots.Transition(frame=95, time_s=3.8, kind="fade", start_frame=90, end_frame=99, duration_s=0.4, score=1),
    ]
    result = shots.shots_from_transitions(t, 100, fps=25.0)
    assert [(s.start_frame, s.end_frame) for s in result] == [(0, 30), (30, 62), (62, 100)]
    assert result[1].start_s == pytest.approx(1.2) and result[-1].end_s == pytest.approx(4.0)
    with_times = shots.shots_from_transitions(t, 100, times_s=np.arange(100) / 25.0 + 1.0)
    assert with_times[0].start_s == pytest.approx(1.0) and with_times[-1].end_s == pytest.approx(5.0)
    with pytest.raises(ValidationError):
        shots.Transition(frame=1, time_s=0, kind="cut", start_frame=1, end_frame=1, duration_s=0, score=1, x=1)
    with pytest.raises(ValidationError):
        shots.Transition(frame=1, time_s=0, kind="wipe", start_frame=1, end_frame=1, duration_s=0, score=1)


def test_frame_features_fields():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    shifted = np.roll(frame, 10, axis=1)  # content moves right by 10 px
    first = shots.frame_features(frame, None)
    assert first.content_change == 0.0 and first.motion_change == 0.0
    assert first.thumb_lab.shape == (27, 48, 3) and first.lab_samples.shape == (512, 3)
    assert first.row_luma_mean.shape == (H,) and first.col_luma_max.shape == (W,)
    feat = shots.frame_features(shifted, frame)
    assert feat.content_change > 5 * feat.motion_change
    assert feat.shift_px[0] == pytest.approx(10.0, abs=W / 96) and abs(feat.shift_px[1]) <= H / 54
    ys, xs = shots.sample_grid_coords(H, W)
    expect = shots.rgb_to_lab(frame[ys[:, None], xs[None, :]].reshape(-1, 3))
    np.testing.assert_allclose(first.lab_samples.astype(np.float32), expect, atol=0.1)


# ------------------------------------------------------------------------------------ real clips


def _decode(path: Path, width: int = 320) -> tuple[list[np.ndarray], float]:
    av = pytest.importorskip("av")
    import cv2

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            height = int(round(rgb.shape[0] * width / rgb.shape[1] / 2)) * 2
            frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
    return frames, fps


@pytest.mark.shared_media
def test_pyscenedetect_testvideo():
    path = MEDIA / "pyscenedetect" / "testvideo.mp4"
    if not path.exists():
        pytest.skip("shared media absent")
    frames, fps = _decode(path)
    found = shots.detect_transitions(shots.compute_track(frames, fps=fps))
    # black 0..29 -> cut to the leaf at 30; cut to black at 180 + fade-in (deer) ~218..240;
    # fade-out ~330..360 + fade-in ~400..423; cross-dissolve ~529..557; closing fade-out ~663..719
    kinds = [(t.kind, t.frame) for t in found]
    assert [k for k, _ in kinds] == ["cut", "fade", "fade", "dissolve", "fade"], kinds
    assert abs(found[0].frame - 30) <= 1
    assert 180 <= found[1].frame <= 218 and found[1].end_frame >= 235
    assert 360 <= found[2].frame <= 400
    assert abs(found[3].frame - 543) <= 3 and found[3].start_frame <= 532 and found[3].end_frame >= 554
    assert found[4].end_frame == len(frames) - 1


@pytest.mark.shared_media
def test_pyscenedetect_fades():
    path = MEDIA / "pyscenedetect" / "fades.mp4"
    if not path.exists():
        pytest.skip("shared media absent")
    frames, fps = _decode(path)
    found = shots.detect_transitions(shots.compute_track(frames, fps=fps))
    assert found and all(t.kind == "fade" for t in found), [(t.kind, t.frame) for t in found]
    # mid-clip black points at frames 83..84 and 166..167 (uniform grey ramps black <-> white)
    for black in (83.5, 166.5):
        assert any(abs(t.frame - black) <= 1 for t in found), [(t.kind, t.frame) for t in found]
