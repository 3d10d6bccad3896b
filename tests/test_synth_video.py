"""Synthetic footage generator: determinism, shapes, ground-truth camera motion, edit helpers."""

import cv2
import numpy as np
import pytest

from stylecast.synth_video import (
    PALETTES,
    camera_shot,
    dissolve,
    fade,
    fade_in,
    graded,
    make_canvas,
    shake_offsets,
    solid_frames,
)

W, H, FPS = 320, 180, 25.0


@pytest.fixture(scope="module")
def canvas():
    return make_canvas(960, 540, seed=7)


def _gray(frame):
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _shift(a, b):
    """Content shift (dx, dy) from frame a to frame b via windowed phase correlation."""
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(_gray(a), _gray(b), win)
    return dx, dy


def test_canvas_deterministic_and_shape():
    a = make_canvas(400, 300, seed=3)
    b = make_canvas(400, 300, seed=3)
    assert a.shape == (300, 400, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_canvas_seeds_differ_visibly():
    means = np.array([make_canvas(320, 240, seed=s).reshape(-1, 3).mean(axis=0) for s in range(6)])
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            # Mean colour differs by a visible amount between any two seeds.
            assert np.abs(means[i] - means[j]).max() > 4.0, (i, j, means[i], means[j])


@pytest.mark.parametrize("palette", sorted(PALETTES))
def test_canvas_palettes_and_texture(palette):
    img = make_canvas(320, 240, seed=1, palette=palette)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    # Plenty of corners in every 80x80 tile (motion estimation needs texture everywhere).
    for y in range(0, 240, 80):
        for x in range(0, 320, 80):
            pts = cv2.goodFeaturesToTrack(gray[y:y + 80, x:x + 80], 50, 0.01, 4)
            assert pts is not None and len(pts) >= 10, (palette, x, y)
    assert 8 < gray.std() < 90


def test_unknown_palette_raises():
    with pytest.raises(ValueError):
        make_canvas(100, 100, 0, palette="neon")


def test_shot_shape_determinism_and_pieces(canvas):
    kw = dict(pan_x=0.1, zoom_rate=0.1, rotate_deg_s=4.0, shake_amp=0.01, shake_hz=4.0, n_objects=2, seed=5)
    a = camera_shot(canvas, 20, W, H, FPS, **kw)
    assert a.shape == (20, H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, camera_shot(canvas, 20, W, H, FPS, **kw))
    pieces = np.concatenate([camera_shot(canvas, 8, W, H, FPS, **kw),
                             camera_shot(canvas, 12, W, H, FPS, t0=8 / FPS, **kw)])
    assert np.array_equal(a, pieces)


@pytest.mark.parametrize("pan_x,pan_y", [(0.125, 0.0), (-0.125, 0.0), (0.0, 0.2), (0.0, -0.2)])
def test_pan_moves_content_by_requested_pixels(canvas, pan_x, pan_y):
    frames = camera_shot(canvas, 12, W, H, FPS, pan_x=pan_x, pan_y=pan_y)
    k = 10
    dx, dy = _shift(frames[1], frames[1 + k])
    # pan_x > 0: content moves left; pan_y > 0 (tilt up): content moves down.
    assert dx == pytest.approx(-pan_x * W / FPS * k, abs=0.35)
    assert dy == pytest.approx(pan_y * H / FPS * k, abs=0.35)


def test_zoom_in_grows_content(canvas):
    frames = camera_shot(canvas, 11, W, H, FPS, zoom_rate=0.5)
    a, b = _gray(frames[0]), _gray(frames[10])
    # Undo the expected scale (exp(0.5 * 0.4 s)) about the centre: the frames should then match closely.
    s = np.exp(0.5 * 10 / FPS)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    m = np.hstack([np.eye(2) * s, (c - s * c)[:, None]]).astype(np.float32)
    a_scaled = cv2.warpAffine(a, m, (W, H), flags=cv2.INTER_LINEAR)
    inner = (slice(30, H - 30), slice(50, W - 50))
    err_right = np.abs(a_scaled - b)[inner].mean()
    err_none = np.abs(a - b)[inner].mean()
    assert err_right < 0.4 * err_none


def test_rotation_sign_counter_clockwise(canvas):
    frames = camera_shot(canvas, 11, W, H, FPS, rotate_deg_s=20.0)
    a, b = _gray(frames[0]), _gray(frames[10])
    c = ((W - 1) / 2, (H - 1) / 2)
    errs = {}
    for sign in (+1, -1):
        # cv2.getRotationMatrix2D with a positive angle rotates counter-clockwise on screen.
        m = cv2.getRotationMatrix2D(c, sign * 20.0 * 10 / FPS, 1.0)
        errs[sign] = np.abs(cv2.warpAffine(a, m, (W, H)) - b)[40:-40, 60:-60].mean()
    assert errs[+1] < 0.5 * errs[-1]


def test_shake_ground_truth_rms():
    t = np.arange(0, 60, 1 / 30)
    off = shake_offsets(t, 0.02, 3.0, W, seed=1)
    rms = np.sqrt((off ** 2).mean(axis=0))
    np.testing.assert_allclose(rms, 0.02 * W, rtol=0.03)
    spec = np.abs(np.fft.rfft(off[:, 0]))
    assert np.fft.rfftfreq(len(t), 1 / 30)[spec.argmax()] == pytest.approx(3.0, abs=0.05)
    with pytest.raises(ValueError):
        shake_offsets(t, 0.02, 0.0, W, seed=1)


def test_moving_objects_change_frames_but_not_background(canvas):
    plain = camera_shot(canvas, 5, W, H, FPS)
    objs = camera_shot(canvas, 5, W, H, FPS, n_objects=3, seed=2)
    changed = np.any(plain != objs, axis=-1).mean(axis=(1, 2))
    assert np.all(changed > 0.01) and np.all(changed < 0.35)
    # Static camera: background pixels identical over time.
    assert np.array_equal(plain[0], plain[4])


def test_camera_path_outside_canvas_raises(canvas):
    with pytest.raises(ValueError, match="canvas"):
        camera_shot(canvas, 100, W, H, FPS, pan_x=1.0)
    with pytest.raises(ValueError, match="canvas"):
        camera_shot(canvas, 50, W, H, FPS, zoom_rate=-1.0)


def test_fade_dissolve_graded_solid():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    f = fade(a, (0, 0, 0), 4)
    assert np.array_equal(f[:2], a[:2]) and np.all(f[-1] == 0)
    np.testing.assert_allclose(f[2].astype(float), a[2].astype(float) * 0.75, atol=1)
    fi = fade_in(b, (255, 255, 255), 3)
    assert np.all(fi[0] == 255) and np.array_equal(fi[3:], b[3:])
    d = dissolve(a, b)
    np.testing.assert_allclose(d[0].astype(float), a[0].astype(float) * 6 / 7 + b[0].astype(float) / 7, atol=1)
    with pytest.raises(ValueError):
        dissolve(a, b[:3])
    g = graded(a, lambda x: x * 0.5)
    np.testing.assert_allclose(g.astype(float), a.astype(float) * 0.5, atol=1)
    n = 9
    grid = np.linspace(0, 1, n, dtype=np.float32)
    identity = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1)
    np.testing.assert_allclose(graded(a, identity).astype(int), a.astype(int), atol=1)
    swap = identity[..., ::-1].copy()  # r <-> b
    np.testing.assert_allclose(graded(a, swap).astype(int), a[..., ::-1].astype(int), atol=1)
    s = solid_frames(2, 3, 4, (10, 20, 30))
    assert s.shape == (2, 3, 4, 3) and np.all(s[..., 1] == 20)
