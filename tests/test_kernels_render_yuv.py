"""The YUV-source render kernel (kernels/render_yuv.py) vs a plain-numpy reference of the same maths,
and vs the RGB kernel it replaces in the render.

The reference is written independently of the kernel: vectorised float64 numpy, bilinear via floor/frac
with clamped taps, the tetrahedral lookup via one explicit mask per tetrahedron.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from kernels.render import affine_for, identity_lut, render_frame_i420, rgb_to_i420
from kernels.render_yuv import (_AXIS, _GENERAL, GRID_FULL, GRID_LIMITED, YuvLut, _sampling, render_frame_i420_yuv,
                                warmup, yuv_lut, yuv_to_rgb)


# --------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------
def ref_bilinear(plane: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = np.clip(x0i, 0, w - 1), np.clip(x0i + 1, 0, w - 1)
    ya, yb = np.clip(y0i, 0, h - 1), np.clip(y0i + 1, 0, h - 1)
    p = plane.astype(np.float64)
    top = p[ya, xa] * (1 - fx) + p[ya, xb] * fx
    bottom = p[yb, xa] * (1 - fx) + p[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def ref_tetra(table: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Tetrahedral lookup at grid coordinates ``g`` (..., 3), already clamped to [0, n-1]."""
    t = table.astype(np.float64)
    n = t.shape[0]
    i = np.minimum(np.floor(g).astype(np.int64), n - 2)
    f = g - i
    a, b, c = i[..., 0], i[..., 1], i[..., 2]
    fa, fb, fc = f[..., 0:1], f[..., 1:2], f[..., 2:3]

    def at(da, db, dc):
        return t[a + da, b + db, c + dc]

    c000, c111 = at(0, 0, 0), at(1, 1, 1)
    out = np.empty(g.shape[:-1] + (3,))
    cases = [  # (mask, first corner, second corner, weights)
        ((fa >= fb) & (fb >= fc), at(1, 0, 0), at(1, 1, 0), (1 - fa, fa - fb, fb - fc, fc)),
        ((fa >= fc) & (fc > fb), at(1, 0, 0), at(1, 0, 1), (1 - fa, fa - fc, fc - fb, fb)),
        ((fc > fa) & (fa >= fb), at(0, 0, 1), at(1, 0, 1), (1 - fc, fc - fa, fa - fb, fb)),
        ((fb > fa) & (fa >= fc), at(0, 1, 0), at(1, 1, 0), (1 - fb, fb - fa, fa - fc, fc)),
        ((fb >= fc) & (fc > fa), at(0, 1, 0), at(0, 1, 1), (1 - fb, fb - fc, fc - fa, fa)),
        ((fc > fb) & (fb > fa), at(0, 0, 1), at(0, 1, 1), (1 - fc, fc - fb, fb - fa, fa)),
    ]
    done = np.zeros(g.shape[:-1], bool)
    for mask, c1, c2, (w0, w1, w2, w3) in cases:
        m = mask[..., 0] & ~done
        val = w0 * c000 + w1 * c1 + w2 * c2 + w3 * c111
        out[m] = val[m]
        done |= m
    assert done.all()
    return out


def ref_grid(lut: YuvLut, y, u, v) -> np.ndarray:
    y_lo, y_hi, c_lo, c_hi = GRID_FULL if lut.full_range else GRID_LIMITED
    top = lut.table.shape[0] - 1
    g = np.stack([(y - y_lo) / (y_hi - y_lo), (u - c_lo) / (c_hi - c_lo), (v - c_lo) / (c_hi - c_lo)], -1) * top
    return np.clip(g, 0, top)


def ref_render(h, w, sources, fade_rgb=(0.0, 0.0, 0.0), fade_amount=0.0) -> np.ndarray:
    """sources: [(planes, inv_affine, YuvLut, weight)] with weights summing to 1 (before the fade)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    by, bx = np.mgrid[0:h // 2, 0:w // 2].astype(np.float64)
    keep = (1 - fade_amount) * 255
    r, g, b = fade_rgb
    yf = 0.2126 * r + 0.7152 * g + 0.0722 * b
    fade = np.array([16 + 219 * yf, 128 + 224 * (b - yf) / 1.8556, 128 + 224 * (r - yf) / 1.5748]) * fade_amount
    out_y = np.full((h, w), fade[0] + 0.5)
    out_c = np.zeros((h // 2, w // 2, 2)) + fade[1:] + 0.5
    for (py, pu, pv), aff, lut, weight in sources:
        a = np.asarray(aff, np.float64)
        luma = ref_bilinear(py, a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2])
        cx, cy = 2 * bx + 0.5, 2 * by + 0.5
        sx = a[0, 0] * cx + a[0, 1] * cy + a[0, 2]
        sy = a[1, 0] * cx + a[1, 1] * cy + a[1, 2]
        u = ref_bilinear(pu, (sx - 0.5) / 2, (sy - 0.5) / 2)
        v = ref_bilinear(pv, (sx - 0.5) / 2, (sy - 0.5) / 2)
        u_full = np.repeat(np.repeat(u, 2, 0), 2, 1)
        v_full = np.repeat(np.repeat(v, 2, 0), 2, 1)
        g = ref_grid(lut, luma, u_full, v_full)
        out_y += keep * weight * ref_tetra(lut.table, g)[..., 0]
        mean_g = g[..., 0].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        gc = np.stack([mean_g, ref_grid(lut, luma[::2, ::2], u, v)[..., 1], ref_grid(lut, luma[::2, ::2], u, v)[..., 2]],
                      -1)
        out_c += keep * weight * ref_tetra(lut.table, gc)[..., 1:]
    out = np.empty((h * 3 // 2, w))
    out[:h] = out_y
    out[h:] = np.concatenate([out_c[..., 0].ravel(), out_c[..., 1].ravel()]).reshape(h // 2, w)
    return np.floor(np.clip(out, 0, 255))


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def random_planes(rng, h, w, padded=False):
    """Random 4:2:0 planes; ``padded`` gives rows a stride larger than the width, as decoders do."""
    def plane(ph, pw):
        if padded:
            return rng.integers(0, 256, (ph, pw + 13), dtype=np.uint8)[:, :pw]
        return rng.integers(0, 256, (ph, pw), dtype=np.uint8)
    return plane(h, w), plane((h + 1) // 2, (w + 1) // 2), plane((h + 1) // 2, (w + 1) // 2)


def smooth_rgb_lut(n=17, seed=0):
    """A smooth non-linear grade: an S-curve, a saturation boost and a cross-channel tint."""
    g = identity_lut(n).astype(np.float64)
    m = g.mean(-1, keepdims=True)
    g = np.clip(m + 1.4 * (g - m), 0, 1)
    g = 0.5 + 0.5 * np.tanh(2.0 * (g - 0.5)) / np.tanh(1.0)
    g[..., 2] = np.clip(g[..., 2] + 0.05 * np.sin(3 * g[..., 0] + seed), 0, 1)
    return g.astype(np.float32)


def i420_planes(i420, h, w):
    chroma = i420[h:].reshape(2, h // 2, w // 2)
    return i420[:h], chroma[0], chroma[1]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warmup()


# --------------------------------------------------------------------------------------
# kernel vs reference
# --------------------------------------------------------------------------------------
CASES = {
    "unwarped": dict(src_hw=(36, 52), aff=np.eye(2, 3)),
    "zoom-rotate": dict(src_hw=(36, 52), aff=affine_for((52, 36), (52, 36), scale=1.3, rotation_deg=7, shift_x=3.5)),
    "odd-source-cover": dict(src_hw=(41, 37), aff=affine_for((52, 36), (37, 41), scale=1.1, rotation_deg=-4)),
    "out-of-frame": dict(src_hw=(36, 52), aff=affine_for((52, 36), (52, 36), scale=0.6, shift_y=9.0)),
    # Axis-aligned warps (a render's camera moves and framing) are sampled separably.
    "pan-zoom": dict(src_hw=(40, 60), aff=affine_for((52, 36), (60, 40), scale=1.3, shift_x=3.5, shift_y=-2.25)),
    "mirrored": dict(src_hw=(36, 52), aff=np.array([[-1.1, 0.0, 50.3], [0.0, 0.95, 1.2]])),
    # 13x narrower: a tile's source columns overflow the row buffer, so these tiles take the four-tap path.
    "shrink-13x": dict(src_hw=(30, 700), aff=np.array([[13.0, 0.0, 1.5], [0.0, 0.8, 0.6]])),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("blend_b,fade_amount", [(0.0, 0.0), (0.0, 0.4), (0.35, 0.0), (1.0, 0.2), (0.6, 0.3)])
def test_kernel_matches_reference(case, blend_b, fade_amount):
    rng = np.random.default_rng(zlib.crc32(repr((case, blend_b, fade_amount)).encode()))  # the same every run
    h, w = 36, 52
    spec = CASES[case]
    src_a = random_planes(rng, *spec["src_hw"], padded=True)
    src_b = random_planes(rng, 30, 44)
    aff_b = affine_for((w, h), (44, 30), scale=1.05, rotation_deg=2)
    lut_a = yuv_lut(smooth_rgb_lut(seed=1), matrix="bt709", size=9)
    lut_b = yuv_lut(smooth_rgb_lut(seed=2), matrix="bt601", full_range=True, size=5)
    fade = (0.9, 0.2, 0.4)
    kw = dict(src_b=src_b, inv_affine_b=aff_b, lut_b=lut_b, blend_b=blend_b, fade_rgb=fade, fade_amount=fade_amount)
    got = {}
    for parallel in (True, False):
        got[parallel] = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), src_a, spec["aff"], lut_a,
                                              **kw, parallel=parallel)
    assert np.array_equal(got[True], got[False])
    sources = [s for s in ((src_a, spec["aff"], lut_a, 1 - blend_b), (src_b, aff_b, lut_b, blend_b)) if s[3] > 0]
    ref = ref_render(h, w, sources, fade, fade_amount)
    err = np.abs(got[True].astype(np.int16) - ref)
    # float32 vs float64: only values within a hair of a rounding step may differ, by one code
    assert err.max() <= 1 and (err > 0).mean() < 0.01, (err.max(), (err > 0).mean())


AXIS_ALIGNED = {
    "zoom-in": (affine_for((600, 40), (640, 48), scale=1.25, shift_x=-7.3, shift_y=1.6), (48, 640)),
    "zoom-out-past-the-border": (affine_for((600, 40), (640, 48), scale=0.7, shift_x=20.0), (48, 640)),
    "wider-than-the-row-buffer": (np.array([[2.6, 0.0, 3.0], [0.0, 1.0, 0.0]]), (40, 1600)),
    "one-pixel-source": (np.array([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0]]), (1, 1)),
    "odd-width-source": (np.array([[0.9, 0.0, 4.2], [0.0, 1.1, -3.0]]), (37, 333)),
    "flipped-and-mirrored": (np.array([[-1.05, 0.0, 640.0], [0.0, -1.1, 45.0]]), (48, 641)),
    "2x-just-fits-the-row-buffer": (np.array([[2.0, 0.0, 0.25], [0.0, 1.0, 0.0]]), (40, 1300)),
    "2.02x-just-overflows-it": (np.array([[2.02, 0.0, 0.25], [0.0, 1.0, 0.0]]), (40, 1300)),
}


@pytest.mark.parametrize("case", sorted(AXIS_ALIGNED))
def test_axis_aligned_warps_sample_separably_like_the_four_tap_path(case):
    # Several tiles per row; a shear of 1e-30 sends the same warp down the four-tap path, which must agree but
    # for float rounding (the separable path mixes rows first, then columns).
    aff, src_hw = AXIS_ALIGNED[case]
    aff = np.asarray(aff, np.float64)
    h, w = 40, 600
    planes = random_planes(np.random.default_rng(len(case)), *src_hw, padded=True)
    lut = yuv_lut(smooth_rgb_lut(seed=3), matrix="bt709", size=17)
    flat = np.ascontiguousarray(aff, np.float32).ravel()
    assert _sampling(flat, *src_hw, h, w)[0] == _AXIS
    sheared = aff.copy()
    sheared[0, 1] = 1e-30
    assert _sampling(np.ascontiguousarray(sheared, np.float32).ravel(), *src_hw, h, w)[0] == _GENERAL
    got = {}
    for name, a in (("axis", aff), ("four-tap", sheared)):
        for parallel in (True, False):
            got[name, parallel] = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), planes, a, lut,
                                                         fade_rgb=(0.1, 0.2, 0.3), fade_amount=0.2,
                                                         parallel=parallel)
    assert np.array_equal(got["axis", True], got["axis", False])
    diff = np.abs(got["axis", True].astype(np.int16) - got["four-tap", True])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    ref = ref_render(h, w, [(planes, aff, lut, 1.0)], (0.1, 0.2, 0.3), 0.2)
    err = np.abs(got["axis", True].astype(np.int16) - ref)
    assert err.max() <= 1 and (err > 0).mean() < 0.01, (err.max(), (err > 0).mean())


def test_a_dissolve_of_two_axis_aligned_sources_matches_the_reference():
    # Both sources take the separable path, one after the other through the same row buffer.
    h, w = 40, 600
    rng = np.random.default_rng(11)
    src_a, src_b = random_planes(rng, 48, 640, padded=True), random_planes(rng, 30, 500)
    aff_a = np.array([[1.0 / 1.2, 0.0, 30.0], [0.0, 1.0 / 1.2, 2.0]])
    aff_b = np.array([[0.8, 0.0, -3.0], [0.0, 0.7, 1.5]])
    lut_a = yuv_lut(smooth_rgb_lut(seed=4), matrix="bt709", size=17)
    lut_b = yuv_lut(smooth_rgb_lut(seed=5), matrix="bt601", size=9)
    for aff, (sh, sw) in ((aff_a, (48, 640)), (aff_b, (30, 500))):
        assert _sampling(np.ascontiguousarray(aff, np.float32).ravel(), sh, sw, h, w)[0] == _AXIS
    got = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), src_a, aff_a, lut_a, src_b, aff_b, lut_b,
                                blend_b=0.4, fade_rgb=(0.3, 0.3, 0.1), fade_amount=0.1)
    ref = ref_render(h, w, [(src_a, aff_a, lut_a, 0.6), (src_b, aff_b, lut_b, 0.4)], (0.3, 0.3, 0.1), 0.1)
    err = np.abs(got.astype(np.int16) - ref)
    assert err.max() <= 1 and (err > 0).mean() < 0.01, (err.max(), (err > 0).mean())


def test_identity_grade_reproduces_the_planes_exactly():
    rng = np.random.default_rng(3)
    h, w = 24, 40
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (h // 2, w // 2), dtype=np.uint8) for _ in range(2))
    lut = yuv_lut(identity_lut(2), matrix="bt709", size=2)  # the encoder's own matrix: an exact identity
    out = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), (y, u, v), np.eye(2, 3), lut)
    oy, ou, ov = i420_planes(out, h, w)
    assert np.array_equal(oy, y) and np.array_equal(ou, u) and np.array_equal(ov, v)


def test_affine_grade_gives_an_affine_table_that_is_exact():
    # BT.601 in, BT.709 out with an affine colour matrix: every step is affine, so a 2-point table is exact
    # and agrees with a 33-point one.
    m = np.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.2, 0.7]])
    rgb = identity_lut(2).astype(np.float64) @ m.T + 0.05
    small = yuv_lut(rgb, matrix="bt601", size=2)
    big = yuv_lut(rgb, matrix="bt601", size=33)
    rng = np.random.default_rng(4)
    planes = random_planes(rng, 20, 30)
    a = render_frame_i420_yuv(np.empty((30, 30), np.uint8), planes, np.eye(2, 3), small)
    b = render_frame_i420_yuv(np.empty((30, 30), np.uint8), planes, np.eye(2, 3), big)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_yuv_path_matches_the_rgb_path_on_smooth_content():
    """The same grade through the RGB kernel (RGB source) and through this one (the I420 of that source)."""
    h, w = 96, 160
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 90 * np.sin(xs / 40 + 2 * k + ys / 55) for k in range(3)], -1).round().astype(np.uint8)
    planes = i420_planes(rgb_to_i420(rgb), h, w)
    grade = smooth_rgb_lut(33)
    via_rgb = render_frame_i420(np.empty((h * 3 // 2, w), np.uint8), rgb, np.eye(2, 3), grade)
    via_yuv = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), planes, np.eye(2, 3),
                                    yuv_lut(grade, matrix="bt709", size=65))
    err = np.abs(via_rgb.astype(np.int16) - via_yuv)
    # The I420 source itself is a rounded, chroma-subsampled copy of the RGB one; beyond that the two
    # paths differ only by interpolation on different grids.
    assert err[:h].mean() < 1.0 and err[h:].mean() < 1.0 and err.max() <= 4, (err.mean(), err.max())


# --------------------------------------------------------------------------------------
# yuv_lut and yuv_to_rgb
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("colorspace,matrix", [(1, "bt709"), (5, "bt601"), (9, "bt2020")])
@pytest.mark.parametrize("full_range", [False, True])
def test_yuv_to_rgb_matches_swscale_accurate_conversion(colorspace, matrix, full_range):
    av = pytest.importorskip("av")
    from stylecast.media.decode import _RGB_SWS_FLAGS

    rng = np.random.default_rng(colorspace + 10 * full_range)
    lo, hi = (0, 256) if full_range else (16, 236)
    y, u, v = rng.integers(lo, hi, (8, 8)), rng.integers(lo, hi if full_range else 241, (8, 8)), \
        rng.integers(lo, hi if full_range else 241, (8, 8))
    block = 8  # flat 8x8 blocks: chroma interpolation cannot matter at their centres
    i420 = np.concatenate([np.kron(y, np.ones((block, block))), np.kron(u, np.ones((4, 4))).reshape(-1, 64),
                           np.kron(v, np.ones((4, 4))).reshape(-1, 64)]).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    frame.colorspace = colorspace
    frame.color_range = 2 if full_range else 1
    got = frame.to_ndarray(format="rgb24", interpolation=_RGB_SWS_FLAGS)[block // 2::block, block // 2::block]
    want = np.clip(yuv_to_rgb(np.stack([y, u, v], -1), matrix, full_range) * 255, 0, 255)
    assert np.abs(got - want).max() <= 1.0


def test_callable_grade_is_evaluated_at_grid_points_near_the_cube_only():
    calls = []

    def warm(rgb):
        calls.append(len(rgb))
        assert np.all(rgb > -0.2) and np.all(rgb < 1.2)
        return rgb * 0.9 + 0.05

    lut = yuv_lut(warm, matrix="bt709", size=17)
    assert 0 < calls[0] < 17 ** 3 / 2
    # near the cube it is the function; check the exact grid point of mid grey
    table = lut.table.astype(np.float64) * 255
    grey = table[8, 8, 8]  # Y 125.5, Cb = Cr = 128
    y709 = (125.5 - 16) / 219 * 0.9 + 0.05
    assert np.allclose(grey, [16 + 219 * y709, 128, 128], atol=1e-3)


def test_yuv_lut_validation():
    with pytest.raises(ValueError, match="matrix"):
        yuv_lut(identity_lut(2), matrix="bt999")
    with pytest.raises(ValueError, match="RGB LUT"):
        yuv_lut(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="size"):
        yuv_lut(identity_lut(2), size=1)
    with pytest.raises(ValueError, match="non-finite"):
        yuv_lut(lambda rgb: rgb * np.nan, size=3)
    with pytest.raises(ValueError, match="float32"):
        YuvLut(np.zeros((3, 3, 3, 3)), False)
    with pytest.raises(ValueError, match="finite"):
        YuvLut(np.full((2, 2, 2, 3), np.inf, np.float32), False)


def _kernel_args(**change):
    rng = np.random.default_rng(0)
    args = dict(out=np.empty((12, 8), np.uint8), src_a=random_planes(rng, 8, 8), inv_affine_a=np.eye(2, 3),
                lut_a=yuv_lut(identity_lut(2), size=2))
    args.update(change)
    return args


@pytest.mark.parametrize("change,match", [
    (dict(src_a=(np.zeros((8, 8), np.uint8),) * 2), "tuple"),
    (dict(src_a=(np.zeros((8, 8), np.uint8), np.zeros((3, 4), np.uint8), np.zeros((4, 4), np.uint8))), "4:2:0"),
    (dict(src_a=(np.zeros((8, 8), np.float32),) + (np.zeros((4, 4), np.uint8),) * 2), "uint8"),
    (dict(lut_a=identity_lut(2)), "YuvLut"),
    (dict(inv_affine_a=np.eye(3)), "shape"),
    (dict(out=np.empty((11, 8), np.uint8)), "out"),
    (dict(blend_b=0.5), "src_b"),
    (dict(fade_amount=0.5, fade_rgb=(2.0, 0.0, 0.0)), "fade_rgb"),
    (dict(blend_b=1.5), "blend_b"),
])
def test_kernel_validation(change, match):
    with pytest.raises(ValueError, match=match):
        render_frame_i420_yuv(**_kernel_args(**change))


def test_non_contiguous_planes_are_read_correctly():
    rng = np.random.default_rng(7)
    planes = random_planes(rng, 20, 28)
    flipped = tuple(p[::-1] for p in planes)  # negative row strides: copied
    lut = yuv_lut(smooth_rgb_lut(), size=9)
    a = render_frame_i420_yuv(np.empty((30, 28), np.uint8), flipped, np.eye(2, 3), lut)
    b = render_frame_i420_yuv(np.empty((30, 28), np.uint8), tuple(np.ascontiguousarray(p) for p in flipped),
                              np.eye(2, 3), lut)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("src_hw", [(1, 1), (1, 3), (2, 1), (3, 2)])
def test_tiny_sources(src_hw):
    """Planes shorter than one 4-byte load are padded; a tiny source is sampled like the reference."""
    rng = np.random.default_rng(sum(src_hw))
    planes = random_planes(rng, *src_hw)
    h, w = 6, 8
    aff = affine_for((w, h), (src_hw[1], src_hw[0]), scale=1.2, rotation_deg=10)
    lut = yuv_lut(smooth_rgb_lut(), size=5)
    got = render_frame_i420_yuv(np.empty((h * 3 // 2, w), np.uint8), planes, aff, lut)
    ref = ref_render(h, w, [(planes, aff, lut, 1.0)])
    assert np.abs(got.astype(np.int16) - ref).max() <= 1
