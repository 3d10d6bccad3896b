"""Fused render kernel vs a plain-numpy reference of the same maths.

The reference below is written independently of the kernel: vectorised float64 numpy,
bilinear via floor/frac with clamped taps, tetrahedral LUT via one explicit mask per
tetrahedron (6 cases by ordering of the fractional parts), and the BT.709 limited-range
RGB -> I420 conversion straight from its formulas.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kernels import render as kr
from kernels.render import (affine_for, identity_lut, lut_apply, render_frame, render_frame_i420, rgb_to_i420,
                            warmup)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------
def ref_bilinear(src: np.ndarray, inv_affine: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear warp, border replicate, pixel centres at integers -> float64 0..255."""
    h, w = out_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.asarray(inv_affine, dtype=np.float64)
    sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    hs, ws = src.shape[:2]
    x0i = np.clip(x0.astype(np.int64), 0, ws - 1)
    x1i = np.clip(x0.astype(np.int64) + 1, 0, ws - 1)
    y0i = np.clip(y0.astype(np.int64), 0, hs - 1)
    y1i = np.clip(y0.astype(np.int64) + 1, 0, hs - 1)
    s = src.astype(np.float64)
    top = s[y0i, x0i] * (1 - fx) + s[y0i, x1i] * fx
    bottom = s[y1i, x0i] * (1 - fx) + s[y1i, x1i] * fx
    return top * (1 - fy) + bottom * fy


def ref_tetrahedral(rgb01: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Tetrahedral 3D-LUT interpolation of float RGB in 0..1 (any leading shape)."""
    lut = np.asarray(lut, dtype=np.float64)
    n = lut.shape[0]
    p = np.clip(rgb01, 0.0, 1.0) * (n - 1)
    i = np.minimum(np.floor(p).astype(np.int64), n - 2)
    f = p - i
    r, g, b = i[..., 0], i[..., 1], i[..., 2]
    fr, fg, fb = f[..., 0:1], f[..., 1:2], f[..., 2:3]

    def c(dr, dg, db):
        return lut[r + dr, g + dg, b + db]

    c000, c111 = c(0, 0, 0), c(1, 1, 1)
    out = np.zeros(rgb01.shape, dtype=np.float64)
    frs, fgs, fbs = fr[..., 0], fg[..., 0], fb[..., 0]
    cases = [
        # (mask, first corner, second corner, (f_hi, f_mid, f_lo))
        ((frs >= fgs) & (fgs >= fbs), c(1, 0, 0), c(1, 1, 0), (fr, fg, fb)),
        ((frs >= fbs) & (fbs > fgs), c(1, 0, 0), c(1, 0, 1), (fr, fb, fg)),
        ((fbs > frs) & (frs >= fgs), c(0, 0, 1), c(1, 0, 1), (fb, fr, fg)),
        ((fgs > frs) & (frs >= fbs), c(0, 1, 0), c(1, 1, 0), (fg, fr, fb)),
        ((fgs >= fbs) & (fbs > frs), c(0, 1, 0), c(0, 1, 1), (fg, fb, fr)),
        ((fbs > fgs) & (fgs > frs), c(0, 0, 1), c(0, 1, 1), (fb, fg, fr)),
    ]
    covered = np.zeros(frs.shape, dtype=np.int64)
    for mask, c1, c2, (hi, mid, lo) in cases:
        val = (1 - hi) * c000 + (hi - mid) * c1 + (mid - lo) * c2 + lo * c111
        out = np.where(mask[..., None], val, out)
        covered += mask
    assert np.all(covered == 1), "tetrahedral cases must partition the cube"
    return out


def ref_render(out_hw, src_a, aff_a, lut_a, src_b=None, aff_b=None, lut_b=None,
               blend_b=0.0, fade_rgb=(0.0, 0.0, 0.0), fade_amount=0.0) -> np.ndarray:
    c = 0.0
    if blend_b < 1.0:
        c = c + (1 - blend_b) * ref_tetrahedral(ref_bilinear(src_a, aff_a, out_hw) / 255.0, lut_a)
    if blend_b > 0.0:
        c = c + blend_b * ref_tetrahedral(ref_bilinear(src_b, aff_b, out_hw) / 255.0, lut_b)
    c = (1 - fade_amount) * c + fade_amount * np.asarray(fade_rgb, dtype=np.float64)
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# test data
# --------------------------------------------------------------------------------------
def random_frame(rng, h, w) -> np.ndarray:
    """Random frame: half white noise, half smooth gradients (both are hard cases)."""
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 2 * np.pi, 3)
    smooth = np.stack([127.5 + 127.5 * np.sin(xs / (7 + 5 * k) + ys / (11 + 3 * k) + phase[k])
                       for k in range(3)], axis=-1)
    frame = noise.copy()
    frame[:, w // 2:] = np.round(smooth[:, w // 2:]).astype(np.uint8)
    return frame


def smooth_lut(rng, n: int) -> np.ndarray:
    """Identity + a random smooth colour twist, clipped to 0..1."""
    axis = np.linspace(0.0, 1.0, n)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    mix = rng.uniform(-0.25, 0.25, (3, 3)) + np.eye(3)
    base = np.einsum("ij,jrgb->rgbi", mix, np.stack([r, g, b]))
    wave = 0.1 * np.sin(3 * r[..., None] + 2 * g[..., None] - b[..., None] + rng.uniform(0, 6, 3))
    return np.clip(base + wave + rng.uniform(-0.05, 0.05, 3), 0.0, 1.0).astype(np.float32)


def random_affine(rng, out_hw, src_hw) -> np.ndarray:
    (ho, wo), (hs, ws) = out_hw, src_hw
    return affine_for((wo, ho), (ws, hs),
                      scale=float(rng.uniform(0.6, 2.0)),
                      rotation_deg=float(rng.uniform(-40, 40)),
                      shift_x=float(rng.uniform(-0.3, 0.3) * wo),
                      shift_y=float(rng.uniform(-0.3, 0.3) * ho))


def assert_close_u8(got: np.ndarray, want: np.ndarray, max_err=1, mean_err=0.05):
    err = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert err.max() <= max_err, f"max abs error {err.max()} > {max_err}"
    assert err.mean() <= mean_err, f"mean abs error {err.mean():.4f} > {mean_err}"


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warmup()


# --------------------------------------------------------------------------------------
# kernel vs reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("blend_b, fade_amount", [(0.0, 0.0), (0.0, 0.6), (0.35, 0.0),
                                                  (0.7, 0.3), (1.0, 0.0), (1.0, 1.0)])
def test_render_matches_reference(seed, blend_b, fade_amount):
    rng = np.random.default_rng(1000 * seed + int(100 * blend_b) + int(10 * fade_amount))
    out_hw = (int(rng.integers(60, 121)), int(rng.integers(160, 241)))
    src_a = random_frame(rng, int(rng.integers(50, 150)), int(rng.integers(80, 260)))
    src_b = random_frame(rng, int(rng.integers(50, 150)), int(rng.integers(80, 260)))
    aff_a = random_affine(rng, out_hw, src_a.shape[:2])
    aff_b = random_affine(rng, out_hw, src_b.shape[:2])
    lut_a = smooth_lut(rng, int(rng.choice([2, 5, 17, 33])))
    lut_b = smooth_lut(rng, int(rng.choice([3, 9, 33])))
    fade_rgb = tuple(rng.uniform(0, 1, 3))
    out = np.zeros(out_hw + (3,), np.uint8)
    got = render_frame(out, src_a, aff_a, lut_a, src_b, aff_b, lut_b,
                       blend_b=blend_b, fade_rgb=fade_rgb, fade_amount=fade_amount)
    assert got is out
    want = ref_render(out_hw, src_a, aff_a, lut_a, src_b, aff_b, lut_b,
                      blend_b=blend_b, fade_rgb=fade_rgb, fade_amount=fade_amount)
    assert_close_u8(got, want)


def test_out_of_bounds_replicates_border():
    rng = np.random.default_rng(7)
    src = random_frame(rng, 40, 50)
    # Shift the sampling far right/below the source: every pixel is the corner pixel.
    aff = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 300.0]])
    out = render_frame(np.zeros((20, 30, 3), np.uint8), src, aff, identity_lut())
    assert np.array_equal(out, np.broadcast_to(src[-1, -1], out.shape))
    # Half a pixel left of the first column: still exactly the first column.
    aff = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]])
    out = render_frame(np.zeros((40, 1, 3), np.uint8), src, aff, identity_lut())
    assert np.array_equal(out[:, 0], src[:, 0])


def test_non_contiguous_inputs_and_output():
    rng = np.random.default_rng(3)
    big = random_frame(rng, 90, 200)
    src = big[::2, ::3]  # non-contiguous view
    lut = smooth_lut(rng, 9)
    aff = random_affine(rng, (40, 60), src.shape[:2])
    out_big = np.zeros((40, 120, 3), np.uint8)
    out = out_big[:, ::2]
    render_frame(out, src, aff, lut, fade_rgb=(1, 0.5, 0), fade_amount=0.2)
    want = ref_render((40, 60), np.ascontiguousarray(src), aff, lut,
                      fade_rgb=(1, 0.5, 0), fade_amount=0.2)
    assert_close_u8(out_big[:, ::2], want)
    assert not out_big[:, 1::2].any(), "pixels outside the view must stay untouched"


# --------------------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 33])
def test_identity_affine_and_lut_reproduce_input(n):
    rng = np.random.default_rng(n)
    src = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    src[0, 0] = (0, 0, 0)
    src[0, 1] = (255, 255, 255)
    out = render_frame(np.empty_like(src), src, np.eye(2, 3), identity_lut(n))
    assert np.array_equal(out, src)
    assert np.array_equal(lut_apply(src, identity_lut(n)), src)


def test_identity_affine_lut_blend_of_same_frame_is_exact():
    rng = np.random.default_rng(11)
    src = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = render_frame(np.empty_like(src), src, np.eye(2, 3), identity_lut(),
                       src, np.eye(2, 3), identity_lut(5), blend_b=0.37)
    assert np.array_equal(out, src)


def test_lut_reproduces_grid_points_exactly():
    # With N = 18, grid point i sits at 255 * i / 17 = 15 * i: an exact uint8 value.
    rng = np.random.default_rng(5)
    n = 18
    # LUT entries are whole uint8 levels, so "exact" means exactly that level (a
    # float32 ulp of interpolation weight must not be able to flip a rounding tie).
    lut = (rng.integers(0, 256, (n, n, n, 3)) / 255.0).astype(np.float32)
    idx = rng.integers(0, n, (500, 3))
    rgb = (idx * 15).astype(np.uint8)
    want = np.round(lut[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64) * 255).astype(np.uint8)
    got = lut_apply(rgb, lut)
    assert np.array_equal(got, want)  # grid points come back unchanged
    # Same through the fused kernel (identity warp), as a 1-row frame.
    frame = rgb.reshape(1, -1, 3)
    out = render_frame(np.empty_like(frame), frame, np.eye(2, 3), lut)
    assert np.array_equal(out[0], want)


def test_lut_exact_for_affine_colour_matrix():
    # Tetrahedral interpolation is exact for colour maps affine in RGB (trilinear is
    # too, but e.g. a wrong tetrahedron choice would not be).
    rng = np.random.default_rng(9)
    n = 5
    # Random (non-round) coefficients, so exact results never sit on rounding ties.
    matrix = rng.uniform(0.0, 0.2, (3, 3)) + 0.3 * np.eye(3)  # stays within 0..1
    offset = rng.uniform(0.0, 0.05, 3)
    axis = np.linspace(0, 1, n)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    lut = (grid @ matrix.T + offset).astype(np.float32)
    rgb = rng.integers(0, 256, (4000, 3), dtype=np.uint8)
    exact = rgb.astype(np.float64) / 255 @ matrix.T + offset
    want = np.round(exact * 255).astype(np.int16)
    got = lut_apply(rgb, lut).astype(np.int16)
    err = np.abs(got - want)
    # float32 LUT storage can flip a rounding tie by one level, nothing more.
    assert err.max() <= 1 and err.mean() < 0.01
    # And the continuous interpolant: compare unrounded against the reference too.
    np.testing.assert_allclose(ref_tetrahedral(rgb / 255.0, lut), exact, atol=1e-6)


def test_tetrahedral_differs_from_trilinear_on_nonlinear_lut():
    # A LUT whose only non-zero corner is (1, 0, 0) in a 2-grid: tetrahedral weight is
    # max(fr - max(fg, fb), 0) style, trilinear is fr*(1-fg)*(1-fb).  Pin tetrahedral.
    lut = np.zeros((2, 2, 2, 3), np.float32)
    lut[1, 0, 0] = 1.0
    rgb = np.array([[204, 102, 51]], np.uint8)  # fr=.8, fg=.4, fb=.2
    got = lut_apply(rgb, lut)
    assert got[0, 0] == round((0.8 - 0.4) * 255)  # tetrahedral: 102
    assert got[0, 0] != round(0.8 * 0.6 * 0.8 * 255)  # trilinear would give 98


def test_lut_apply_matches_reference():
    rng = np.random.default_rng(2)
    lut = smooth_lut(rng, 33)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    want = np.clip(np.round(ref_tetrahedral(rgb / 255.0, lut) * 255), 0, 255).astype(np.uint8)
    assert_close_u8(lut_apply(rgb, lut), want)


# --------------------------------------------------------------------------------------
# affine_for semantics
# --------------------------------------------------------------------------------------
def _apply(aff, x, y):
    return aff @ np.array([x, y, 1.0])


def test_affine_for_cover_fit_centres_and_crops():
    aff = affine_for((320, 180), (640, 480))  # source 4:3 -> output 16:9: crop top/bottom
    np.testing.assert_allclose(_apply(aff, 159.5, 89.5), [319.5, 239.5], atol=1e-9)
    # Width fits exactly: output left/right edges map onto source left/right edges.
    np.testing.assert_allclose(_apply(aff, -0.5, 89.5)[0], -0.5, atol=1e-9)
    np.testing.assert_allclose(_apply(aff, 319.5, 89.5)[0], 639.5, atol=1e-9)
    # Vertical is centre-cropped: output covers 360 of 480 source rows.
    top, bottom = _apply(aff, 0, -0.5)[1], _apply(aff, 0, 179.5)[1]
    np.testing.assert_allclose([top, bottom], [59.5, 419.5], atol=1e-9)


def test_affine_for_scale_rotation_shift_directions():
    size = (200, 100)
    # Zoom 2x: an output pixel 10 px right of centre shows source 5 px right of centre.
    aff = affine_for(size, size, scale=2.0)
    np.testing.assert_allclose(_apply(aff, 99.5 + 10, 49.5), [99.5 + 5, 49.5], atol=1e-9)
    # Shift content right by 7: output pixel at centre+7 shows the source centre.
    aff = affine_for(size, size, shift_x=7.0, shift_y=-3.0)
    np.testing.assert_allclose(_apply(aff, 99.5 + 7, 49.5 - 3), [99.5, 49.5], atol=1e-9)
    # Rotate counter-clockwise by 90 deg: content right of centre moves up on screen.
    aff = affine_for(size, size, rotation_deg=90.0)
    np.testing.assert_allclose(_apply(aff, 99.5, 49.5 - 10), [99.5 + 10, 49.5], atol=1e-9)


def test_affine_for_matches_cv2_rotation_sense():
    cv2 = pytest.importorskip("cv2")
    size = (160, 120)
    fwd = cv2.getRotationMatrix2D(((size[0] - 1) / 2, (size[1] - 1) / 2), 25.0, 1.5)
    inv = cv2.invertAffineTransform(fwd)
    np.testing.assert_allclose(affine_for(size, size, scale=1.5, rotation_deg=25.0), inv, atol=1e-9)


def test_render_with_affine_for_matches_cv2_warp():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    src = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (0, 0), 2.0)
    aff = affine_for((120, 90), (120, 90), scale=1.3, rotation_deg=-12.0, shift_x=4.0)
    out = render_frame(np.empty((90, 120, 3), np.uint8), src, aff, identity_lut())
    want = cv2.warpAffine(src, aff, (120, 90), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    # OpenCV quantises the sub-pixel position to 1/32 px; allow a little slack.
    err = np.abs(out.astype(int) - want)
    assert err.max() <= 3 and err.mean() < 0.3


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _ok_args():
    src = np.zeros((8, 8, 3), np.uint8)
    return dict(out=np.zeros((4, 4, 3), np.uint8), src_a=src,
                inv_affine_a=np.eye(2, 3), lut_a=identity_lut())


@pytest.mark.parametrize("change, match", [
    (dict(out=np.zeros((4, 4, 3), np.float32)), "out must be a uint8"),
    (dict(out=np.zeros((4, 4), np.uint8)), "out must be a uint8"),
    (dict(src_a=np.zeros((8, 8, 3), np.float32)), "src_a must have dtype uint8"),
    (dict(src_a=np.zeros((8, 8, 4), np.uint8)), r"src_a must have shape \(H, W, 3\)"),
    (dict(src_a=np.zeros((0, 8, 3), np.uint8)), "src_a must be non-empty"),
    (dict(inv_affine_a=np.eye(3)), r"inv_affine_a must have shape \(2, 3\)"),
    (dict(inv_affine_a=[[1, 0, np.nan], [0, 1, 0]]), "inv_affine_a must be finite"),
    (dict(inv_affine_a=[[1e9, 0, 0], [0, 1, 0]]), "inv_affine_a entries must be within"),
    (dict(lut_a=np.full((2, 2, 2, 3), np.nan, np.float32)), "lut_a must be finite"),
    (dict(lut_a=np.zeros((4, 4, 3, 3), np.float32)), r"lut_a must have shape \(N, N, N, 3\)"),
    (dict(lut_a=np.zeros((1, 1, 1, 3), np.float32)), "N >= 2"),
    (dict(lut_a=np.zeros((2, 2, 2, 3), np.uint8)), "lut_a must be a float array"),
    (dict(blend_b=0.5), "requires src_b"),
    (dict(blend_b=1.5, src_b=np.zeros((8, 8, 3), np.uint8)), r"blend_b must be in \[0, 1\]"),
    (dict(fade_amount=-0.1), r"fade_amount must be in \[0, 1\]"),
    (dict(fade_rgb=(1, 0)), "fade_rgb must be three"),
    (dict(src_b=np.zeros((8, 8), np.uint8), blend_b=0.5), "src_b must have shape"),
])
def test_validation_errors(change, match):
    args = _ok_args()
    args.update(change)
    with pytest.raises(ValueError, match=match):
        render_frame(**args)


def test_lut_apply_validation_and_helpers():
    with pytest.raises(ValueError, match="uint8"):
        lut_apply(np.zeros((4, 3), np.float32), identity_lut())
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        lut_apply(np.zeros((4, 4), np.uint8), identity_lut())
    with pytest.raises(ValueError, match="n >= 2"):
        identity_lut(1)
    with pytest.raises(ValueError, match="scale"):
        affine_for((10, 10), (10, 10), scale=0.0)
    lut = identity_lut(4)
    assert lut.shape == (4, 4, 4, 3) and lut.dtype == np.float32
    np.testing.assert_allclose(lut[1, 2, 3], [1 / 3, 2 / 3, 1.0], atol=1e-7)
    assert math.isclose(float(lut[3, 0, 0, 0]), 1.0)


def test_tiny_sources_and_outputs():
    # A 1x1 source is a flat colour whatever the warp; 1-pixel rows/cols are handled.
    src = np.array([[[10, 200, 30]]], np.uint8)
    aff = affine_for((7, 5), (1, 1), scale=1.7, rotation_deg=33)
    out = render_frame(np.zeros((5, 7, 3), np.uint8), src, aff, identity_lut())
    assert np.array_equal(out, np.broadcast_to(src[0, 0], out.shape))
    rng = np.random.default_rng(8)
    col = rng.integers(0, 256, (9, 1, 3), dtype=np.uint8)
    out = render_frame(np.zeros((9, 1, 3), np.uint8), col, np.eye(2, 3), identity_lut(3))
    assert np.array_equal(out, col)


# --------------------------------------------------------------------------------------
# parallel=False
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("blend_b, fade_amount", [(0.0, 0.0), (0.45, 0.3), (1.0, 0.0)])
def test_render_serial_equals_parallel(blend_b, fade_amount):
    rng = np.random.default_rng(21)
    out_hw = (97, 331)
    src_a, src_b = random_frame(rng, 120, 200), random_frame(rng, 90, 150)
    args = (src_a, random_affine(rng, out_hw, src_a.shape[:2]), smooth_lut(rng, 17),
            src_b, random_affine(rng, out_hw, src_b.shape[:2]), smooth_lut(rng, 9))
    kw = dict(blend_b=blend_b, fade_rgb=(0.2, 0.9, 0.4), fade_amount=fade_amount)
    par = render_frame(np.empty(out_hw + (3,), np.uint8), *args, **kw)
    ser = render_frame(np.empty(out_hw + (3,), np.uint8), *args, **kw, parallel=False)
    assert np.array_equal(par, ser)


def test_warmup_compiles_every_core():
    for core, serial in kr._SERIAL.items():
        assert core.signatures, f"{core.py_func.__name__} not compiled by warmup()"
        assert serial.signatures, f"{serial.py_func.__name__} not compiled by warmup()"


def test_serial_variants_never_start_numba_threading_layer():
    # A fresh interpreter (the cores load from Numba's cache, which this module's
    # warmup filled): calls with parallel=False must not initialise the threading layer.
    code = """
import numba, numpy as np
from kernels.render import identity_lut, render_frame, render_frame_i420, rgb_to_i420
src = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
aff, lut = np.eye(2, 3), identity_lut(3)
render_frame(np.empty((4, 6, 3), np.uint8), src, aff, lut, src, aff, lut, blend_b=0.5, parallel=False)
render_frame(np.empty((4, 6, 3), np.uint8), src, aff, lut, parallel=False)
render_frame_i420(np.empty((6, 6), np.uint8), src, aff, lut, parallel=False)
render_frame_i420(np.empty((6, 6), np.uint8), src, aff, lut, src, aff, lut, blend_b=0.5, parallel=False)
rgb_to_i420(src, parallel=False)
try:
    layer = numba.threading_layer()
except ValueError:
    print("NO-THREADING-LAYER")
else:
    print("threading layer started:", layer)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NO-THREADING-LAYER", result.stdout


# --------------------------------------------------------------------------------------
# I420 (BT.709, limited range)
# --------------------------------------------------------------------------------------
def ref_rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """BT.709 limited range, float64, straight from the formulas; 2x2 box-mean chroma."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 219 * (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
    m = f.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    mr, mg, mb = m[..., 0], m[..., 1], m[..., 2]
    luma = 0.2126 * mr + 0.7152 * mg + 0.0722 * mb
    cb = 128 + 224 * (mb - luma) / 1.8556 / 255
    cr = 128 + 224 * (mr - luma) / 1.5748 / 255

    def q(v):  # round half up, clip
        return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)

    return np.concatenate([q(y).ravel(), q(cb).ravel(), q(cr).ravel()]).reshape(h * 3 // 2, w)


def i420_planes(i420: np.ndarray):
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    chroma = i420[h:].reshape(-1)
    n = (h // 2) * (w // 2)
    return i420[:h], chroma[:n].reshape(h // 2, w // 2), chroma[n:].reshape(h // 2, w // 2)


def test_rgb_to_i420_known_colours():
    # Published BT.709 limited-range codes (e.g. the 75%/100% colour-bar tables).
    colours = {(0, 0, 0): (16, 128, 128), (255, 255, 255): (235, 128, 128),
               (255, 0, 0): (63, 102, 240), (0, 255, 0): (173, 42, 26), (0, 0, 255): (32, 240, 118),
               (0, 255, 255): (188, 154, 16), (255, 0, 255): (78, 214, 230), (255, 255, 0): (219, 16, 138),
               (128, 128, 128): (126, 128, 128)}
    for rgb, want in colours.items():
        frame = np.broadcast_to(np.array(rgb, np.uint8), (2, 4, 3))
        y, u, v = i420_planes(rgb_to_i420(frame))
        assert (int(y[0, 0]), int(u[0, 0]), int(v[0, 0])) == want, rgb
        assert np.all(y == y[0, 0]) and np.all(u == u[0, 0]) and np.all(v == v[0, 0])


@pytest.mark.parametrize("hw", [(2, 2), (4, 6), (6, 4), (180, 318), (62, 514), (1080, 1920)])
def test_rgb_to_i420_matches_reference(hw):
    rng = np.random.default_rng(hw[0] * 7 + hw[1])
    rgb = random_frame(rng, *hw)
    want = ref_rgb_to_i420(rgb)
    for parallel in (True, False):
        got = rgb_to_i420(rgb, parallel=parallel)
        assert got.shape == (hw[0] * 3 // 2, hw[1]) and got.dtype == np.uint8
        # The kernel computes in 22-bit fixed point (error < 0.0005 code before rounding),
        # the reference in float64: they can only round apart where the exact value lies
        # within a hair of a .5 tie - by 1, and rarely.
        err = np.abs(got.astype(np.int16) - want)
        assert err.max() <= 1
        assert (err > 0).mean() < 1e-3
    y, u, v = i420_planes(got)
    assert y.min() >= 16 and y.max() <= 235 and u.min() >= 16 and u.max() <= 240 and v.min() >= 16 and v.max() <= 240


def test_rgb_to_i420_all_colours_exact_but_for_ties():
    # Every 2x2 block a flat colour: 2^18 colours from the whole cube, luma and chroma.
    rng = np.random.default_rng(12)
    colours = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    colours[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                      [0, 255, 255], [255, 0, 255]]
    rgb = np.repeat(np.repeat(colours, 2, axis=0), 2, axis=1)
    err = np.abs(rgb_to_i420(rgb).astype(np.int16) - ref_rgb_to_i420(rgb))
    assert err.max() <= 1 and (err > 0).mean() < 1e-4


def test_rgb_to_i420_out_argument_and_non_contiguous_input():
    rng = np.random.default_rng(4)
    big = random_frame(rng, 40, 100)
    rgb = big[::2, ::2]  # (20, 50, 3) view
    out = np.full((30, 50), 7, np.uint8)
    assert rgb_to_i420(rgb, out) is out
    assert np.array_equal(out, rgb_to_i420(np.ascontiguousarray(rgb)))


def _i420_case(name, rng, out_hw):
    src_a = random_frame(rng, 70 + int(rng.integers(0, 60)), 90 + int(rng.integers(0, 200)))
    src_b = random_frame(rng, 50 + int(rng.integers(0, 60)), 80 + int(rng.integers(0, 200)))
    if name == "identity":
        src_a = random_frame(rng, *out_hw)
        return (src_a, np.eye(2, 3), smooth_lut(rng, 33)), {}
    aff_a = random_affine(rng, out_hw, src_a.shape[:2])
    aff_b = random_affine(rng, out_hw, src_b.shape[:2])
    lut_a, lut_b = smooth_lut(rng, 17), smooth_lut(rng, 33)
    fade = tuple(rng.uniform(0, 1, 3))
    return {
        "warp": ((src_a, aff_a, lut_a), {}),
        "fade": ((src_a, aff_a, lut_a), dict(fade_rgb=fade, fade_amount=0.55)),
        "dissolve": ((src_a, aff_a, lut_a, src_b, aff_b, lut_b), dict(blend_b=0.4, fade_rgb=fade, fade_amount=0.2)),
        "only_b": ((src_a, aff_a, lut_a, src_b, aff_b, lut_b), dict(blend_b=1.0)),
    }[name]


@pytest.mark.parametrize("hw", [(2, 2), (4, 6), (6, 4), (180, 318), (34, 514), (1080, 1920)])
@pytest.mark.parametrize("case", ["identity", "warp", "fade", "dissolve", "only_b"])
def test_render_frame_i420_equals_rgb_then_convert(case, hw):
    rng = np.random.default_rng([sum(map(ord, case)), *hw])
    args, kw = _i420_case(case, rng, hw)
    rgb = render_frame(np.empty(hw + (3,), np.uint8), *args, **kw)
    want = rgb_to_i420(rgb)
    for parallel in (True, False):
        out = np.full((hw[0] * 3 // 2, hw[1]), 3, np.uint8)
        got = render_frame_i420(out, *args, **kw, parallel=parallel)
        assert got is out
        # Same per-pixel float code, compiled without reassociation / contraction (so
        # bit-identical in every kernel and variant), then the same integer conversion.
        assert np.array_equal(got, want), f"{case} {hw} parallel={parallel}: " \
            f"{np.count_nonzero(got != want)} values differ, max {np.abs(got.astype(int) - want).max()}"


def test_render_frame_i420_identity_is_conversion_of_source():
    rng = np.random.default_rng(15)
    src = random_frame(rng, 48, 70)
    got = render_frame_i420(np.empty((72, 70), np.uint8), src, np.eye(2, 3), identity_lut(5))
    assert np.array_equal(got, rgb_to_i420(src))
    err = np.abs(got.astype(np.int16) - ref_rgb_to_i420(src))
    assert err.max() <= 1


def _ok_i420_args():
    args = _ok_args()
    args["out"] = np.zeros((6, 4), np.uint8)
    return args


@pytest.mark.parametrize("change, match", [
    (dict(out=np.zeros((4, 4, 3), np.uint8)), r"out must be a uint8 array of shape \(H \* 3 // 2, W\)"),
    (dict(out=np.zeros((6, 4), np.float32)), "out must be a uint8"),
    (dict(out=[[0] * 4] * 6), "out must be a uint8"),
    (dict(out=np.zeros((4, 4), np.uint8)), "H, W even"),  # 4 rows: H would be 8/3
    (dict(out=np.zeros((6, 5), np.uint8)), "H, W even"),  # odd W
    (dict(out=np.zeros((9, 3), np.uint8)), "H, W even"),
    (dict(out=np.zeros((0, 4), np.uint8)), "H, W even"),
    (dict(out=np.zeros((6, 8), np.uint8)[:, ::2]), "C-contiguous"),
    (dict(src_a=np.zeros((8, 8, 4), np.uint8)), r"src_a must have shape \(H, W, 3\)"),
    (dict(blend_b=0.5), "requires src_b"),
    (dict(fade_amount=2.0), r"fade_amount must be in \[0, 1\]"),
])
def test_render_frame_i420_validation(change, match):
    args = _ok_i420_args()
    args.update(change)
    with pytest.raises(ValueError, match=match):
        render_frame_i420(**args)


def test_i420_read_only_out_and_rgb_to_i420_validation():
    args = _ok_i420_args()
    args["out"].setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        render_frame_i420(**args)
    with pytest.raises(ValueError, match="even H and W"):
        rgb_to_i420(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="even H and W"):
        rgb_to_i420(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb must be a uint8 array of shape \(H, W, 3\)"):
        rgb_to_i420(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        rgb_to_i420(np.zeros((4, 4, 3), np.uint8), np.zeros((9, 4), np.uint8))


# --------------------------------------------------------------------------------------
# I420 through PyAV
# --------------------------------------------------------------------------------------
def smooth_frame(h, w, period=80.0) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([128 + 100 * np.sin(xs / period + 2 * k + ys / (1.3 * period)) for k in range(3)],
                    axis=-1).round().astype(np.uint8)


def test_i420_layout_is_what_pyav_expects():
    av = pytest.importorskip("av")
    rng = np.random.default_rng(6)
    h, w = 36, 50
    i420 = rgb_to_i420(random_frame(rng, h, w))
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    assert (frame.width, frame.height, frame.format.name) == (w, h, "yuv420p")
    y, u, v = i420_planes(i420)
    for plane, want in zip(frame.planes, (y, u, v)):
        got = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
        assert np.array_equal(got, want)
    assert np.array_equal(frame.to_ndarray(), i420)


def test_i420_matches_swscale_bt709_conversion():
    # swscale's own rgb24 -> yuv420p, BT.709 / MPEG (limited) range, AREA (box) chroma
    # downsampling: the same conversion, up to rounding.
    av = pytest.importorskip("av")
    rng = np.random.default_rng(8)
    rgb = random_frame(rng, 64, 98)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG", interpolation="AREA").to_ndarray()
    err = np.abs(rgb_to_i420(rgb).astype(np.int16) - ref)
    assert err.max() <= 1 and err.mean() < 0.1


def test_i420_round_trip_through_pyav():
    av = pytest.importorskip("av")
    # help(av.video.reformatter.VideoReformatter.reformat): src_colorspace / src_color_range.
    kw = dict(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG")
    # Flat colours: only quantisation (Y step 1.16 codes, chroma ~2) and swscale's rounding.
    rng = np.random.default_rng(10)
    blocks = np.repeat(np.repeat(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 4, 0), 4, 1)
    back = av.VideoFrame.from_ndarray(rgb_to_i420(blocks), format="yuv420p").to_ndarray(**kw)
    err = np.abs(back.astype(np.int16) - blocks)
    print(f"\nPyAV round trip, flat 4x4 blocks: max {err.max()}, mean {err.mean():.2f} codes")
    assert err.max() <= 3 and err.mean() < 2.0
    # Smooth content through the full renderer: within a few codes (chroma subsampling).
    h, w = 90, 160
    src = smooth_frame(h, w)
    i420 = render_frame_i420(np.empty((h * 3 // 2, w), np.uint8), src, np.eye(2, 3), identity_lut())
    back = av.VideoFrame.from_ndarray(i420, format="yuv420p").to_ndarray(**kw)
    err = np.abs(back.astype(np.int16) - src)
    print(f"PyAV round trip, smooth frame: max {err.max()}, mean {err.mean():.2f} codes")
    assert err.max() <= 6 and err.mean() < 2.0


# --------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------
def test_concurrent_serial_i420_from_python_threads():
    rng = np.random.default_rng(30)
    h, w = 1080, 1920
    srcs = [random_frame(rng, h, w), random_frame(rng, 720, 1280)]
    jobs = [(srcs[0], affine_for((w, h), (w, h), scale=1.2, rotation_deg=6.0), smooth_lut(rng, 33), {}),
            (srcs[1], affine_for((w, h), (1280, 720), scale=1.1, rotation_deg=-3.0), smooth_lut(rng, 33),
             dict(fade_rgb=(0.1, 0.0, 0.3), fade_amount=0.25))]
    reps = 3

    def run(job, out):
        src, aff, lut, kw = job
        for _ in range(reps):
            render_frame_i420(out, src, aff, lut, **kw, parallel=False)

    want = [np.empty((h * 3 // 2, w), np.uint8) for _ in jobs]
    t0 = time.perf_counter()
    for job, out in zip(jobs, want):
        run(job, out)
    serial_s = time.perf_counter() - t0

    got = [np.zeros((h * 3 // 2, w), np.uint8) for _ in jobs]
    threads = [threading.Thread(target=run, args=(job, out)) for job, out in zip(jobs, got)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent_s = time.perf_counter() - t0
    for g, want_i in zip(got, want):
        assert np.array_equal(g, want_i)
    print(f"\n2 Python threads x {reps} 1080p I420 frames, parallel=False: serial {serial_s * 1e3 / (2 * reps):.1f} "
          f"ms/frame, concurrent {concurrent_s * 1e3 / (2 * reps):.1f} ms/frame, "
          f"speed-up {serial_s / concurrent_s:.2f}x (GIL released)")


@pytest.mark.parametrize("hw", [(2, 2), (6, 4), (180, 318), (1080, 1920)])
def test_unwarped_fast_path_equals_warped_core_and_reference(hw):
    """An identity warp of a same-size source (every colour-only frame) skips the bilinear taps; the
    result must be the warped core's, bit for bit, and the plain numpy reference's within 1."""
    from kernels import render as kr

    rng = np.random.default_rng(list(hw))
    src = random_frame(rng, *hw)
    lut = smooth_lut(rng, 33)
    kind, args = kr._prepare(src, np.eye(2, 3), lut, None, None, None, 0.0, (0.2, 0.1, 0.0), 0.3)
    assert kind == "one" and kr._is_unwarped(args, *hw)
    assert not kr._is_unwarped(args, hw[0] + 2, hw[1])  # another size: warped path
    for parallel in (True, False):
        fast = render_frame_i420(np.empty((hw[0] * 3 // 2, hw[1]), np.uint8), src, np.eye(2, 3), lut,
                                 fade_rgb=(0.2, 0.1, 0.0), fade_amount=0.3, parallel=parallel)
        slow = np.empty_like(fast)
        kr._variant(kr._render_one_i420, parallel)(slow.reshape(-1), np.int64(hw[0]), np.int64(hw[1]), *args)
        assert np.array_equal(fast, slow)
    want_rgb = ref_render(hw, src, np.eye(2, 3), lut, fade_rgb=(0.2, 0.1, 0.0), fade_amount=0.3)
    assert np.abs(fast.astype(np.int16) - ref_rgb_to_i420(want_rgb)).max() <= 2
