"""The fused render kernel for sources as the decoder gives them: YUV 4:2:0 planes in, I420 out.

:func:`kernels.render.render_frame_i420` takes RGB sources, so every decoded frame first went through
swscale's yuv420p -> rgb24 pass (1.5-2.5 ms per 1080p frame plus a fresh 6 MB array), and the kernel then
sampled three channels per tap and graded every pixel in full colour.  Here the source stays in the
decoder's planes and the grade is a **YUV -> YUV 3D LUT** (:func:`yuv_lut`): the source's own YUV -> RGB
conversion, the RGB grade and the encoder's RGB -> YUV (BT.709, limited range) baked into one table.  Per
output 2x2 block the kernel

1. samples the four luma values (bilinear on the Y plane, or read directly when unwarped) and the block's
   chroma once, at the block centre (bilinear on the half-resolution U and V planes).  An axis-aligned warp
   (scale and shift: the camera moves and framing of a render) is sampled separably: each tile's two source
   rows are blended once per source column, then neighbouring columns are mixed at positions worked out once
   per frame, which costs about half of four taps per sample,
2. grades each luma value with a luma-only tetrahedral lookup ``LUT_Y(y, u, v)`` (4 gathers instead of 12),
3. grades the block's chroma once, with ``LUT_CbCr(mean of the four y, u, v)``,
4. dissolves and fades in YUV (both are linear, so this equals doing them in RGB), rounds, and writes I420.

That is about half the per-pixel work of the RGB kernel, and no RGB frame at all (measured in
``bench/bench_kernels.py``).  The ungraded table reproduces the planes bit for bit, and any affine grade is
exact.  Against grading in RGB the result differs by interpolation on another grid (65 points over the legal
YUV range are finer over real colours than 33 over RGB) and by the chroma rule, which differs from "grade each
pixel, then average the block" only where the grade bends within the luma range of one 2x2 block (hard
edges); ``tests/test_kernels_render_yuv.py`` bounds both.

Conventions as in :mod:`kernels.render` (pixel centres at integers, inverse affines, I420 layout, rounding
half up, float32 maths with explicit FMAs, serial variants without NRT).  A source is three uint8 planes
``(y, u, v)``: y ``(H, W)``, u and v ``((H + 1) // 2, (W + 1) // 2)``; rows may be padded (a row stride
larger than the width, as decoders allocate them).  Chroma samples sit at the centre of their 2x2 luma
block, as the encoder side (:func:`kernels.render.rgb_to_i420`) puts them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange
from numba.core import types

from kernels.render import (_JIT_OPTIONS, _TILE, _U, _check_affine, _check_i420_out, _check_unit, _copy_bytes,
                            _fma, _load_u32_unaligned, _serial_variant, _stack_array_intrinsic, _stack_u8,
                            _tetra_cell)

__all__ = ["MATRICES", "GRID_LIMITED", "GRID_FULL", "YuvLut", "yuv_lut", "yuv_to_rgb", "render_frame_i420_yuv",
           "warmup"]

#: (Kr, Kb) of the YUV matrices a source may be tagged with.
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020": (0.2627, 0.0593),
}

#: The codes a YUV LUT's grid spans per axis, (Y low, Y high, chroma low, chroma high), for limited and full
#: range sources: only the legal range, where pictures live (a grid over 0..255 would waste a sixth of its
#: points per axis).  Codes outside are clamped to the grid, as an RGB conversion would clip them.
GRID_LIMITED = (16.0, 235.0, 16.0, 240.0)
GRID_FULL = (0.0, 255.0, 0.0, 255.0)

# How far outside the RGB cube (in 0..1 units) a grid point still gets the grade evaluated: more than one
# cell in any direction (a cell spans at most ~0.09 of an RGB channel at 33 points, ~0.045 at 65).
_GRADE_MARGIN = 0.15

_stack_f32 = _stack_array_intrinsic(types.float32)
_HALF_TILE = _TILE // 2
# Stack scratch sizes must be literal constants: u8 tile (Y row, then U and V of a row pair), float samples.
_TILE_BYTES = 3 * _TILE
_CHROMA_ITEMS = _TILE
_LUMA_ITEMS = 2 * _TILE
# One tile's source rows blended vertically (axis-aligned warps): luma in all of it, or U in the first half and V
# in the second.  Room for source spans up to twice the tile, i.e. a downscale of up to 2x.
_ROW_ITEMS = 2 * _TILE + 4
_CHROMA_ROW_ITEMS = _ROW_ITEMS // 2

# How a source is sampled (see _sampling): pixels read as they are; an axis-aligned warp (scale and shift, the
# camera moves and framing of a render), separable; any other affine, four bilinear taps per sample.
_DIRECT, _AXIS, _GENERAL = 0, 1, 2


# --------------------------------------------------------------------------------------
# the YUV -> YUV LUT (numpy, once per shot)
# --------------------------------------------------------------------------------------
def yuv_to_rgb(yuv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """YUV codes ``(..., 3)`` (0..255, float) -> R'G'B' in 0..1, NOT clipped (out-of-gamut codes map outside).

    matrix:     a key of :data:`MATRICES`.
    full_range: True for "pc"/JPEG range (Y and chroma span 0..255), False for limited ("tv") range
                (Y 16..235, chroma 16..240).
    """
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    yuv = np.asarray(yuv, np.float64)
    if full_range:
        y, pb, pr = yuv[..., 0] / 255.0, (yuv[..., 1] - 128.0) / 255.0, (yuv[..., 2] - 128.0) / 255.0
    else:
        y, pb, pr = (yuv[..., 0] - 16.0) / 219.0, (yuv[..., 1] - 128.0) / 224.0, (yuv[..., 2] - 128.0) / 224.0
    r = y + 2.0 * (1.0 - kr) * pr
    b = y + 2.0 * (1.0 - kb) * pb
    g = (y - kr * r - kb * b) / kg
    return np.stack([r, g, b], axis=-1)


def _tetra_extrapolated(lut: np.ndarray, rgb01: np.ndarray) -> np.ndarray:
    """Tetrahedral lookup of float RGB (0..1, may lie outside) in an RGB LUT, extended linearly beyond it.

    Inside the cube this is the kernel's interpolation.  Outside, the border cell's tetrahedra are
    extended, so the result stays smooth across the gamut boundary: the YUV grid has points outside the
    RGB cube, and clipping them would put kinks into cells that in-gamut pixels are interpolated from.
    """
    n = lut.shape[0]
    x = rgb01 * (n - 1)
    i = np.clip(np.floor(x), 0, n - 2).astype(np.int64)
    f = x - i
    fr, fg, fb = f[..., 0], f[..., 1], f[..., 2]
    ri, gi, bi = i[..., 0], i[..., 1], i[..., 2]
    order = np.argsort(-f, axis=-1, kind="stable")  # axes by decreasing fraction
    f_sorted = np.take_along_axis(f, order, axis=-1)
    step = np.eye(3, dtype=np.int64)
    c0 = lut[ri, gi, bi]
    o1 = i + step[order[..., 0]]
    o2 = o1 + step[order[..., 1]]
    c1 = lut[o1[..., 0], o1[..., 1], o1[..., 2]]
    c2 = lut[o2[..., 0], o2[..., 1], o2[..., 2]]
    c3 = lut[ri + 1, gi + 1, bi + 1]
    del fr, fg, fb
    w0 = 1.0 - f_sorted[..., 0]
    w1 = f_sorted[..., 0] - f_sorted[..., 1]
    w2 = f_sorted[..., 1] - f_sorted[..., 2]
    w3 = f_sorted[..., 2]
    return w0[..., None] * c0 + w1[..., None] * c1 + w2[..., None] * c2 + w3[..., None] * c3


def _rgb01_to_yuv709_codes(rgb01: np.ndarray) -> np.ndarray:
    """R'G'B' 0..1 -> BT.709 limited-range codes (float), the encoder's format (see kernels.render.rgb_to_i420)."""
    r, g, b = rgb01[..., 0], rgb01[..., 1], rgb01[..., 2]
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return np.stack([16.0 + 219.0 * y, 128.0 + 224.0 * (b - y) / 1.8556, 128.0 + 224.0 * (r - y) / 1.5748], -1)


@dataclass(frozen=True)
class YuvLut:
    """A YUV -> YUV 3D LUT (:func:`yuv_lut`) and the source range its grid spans."""
    table: np.ndarray  # float32 (N, N, N, 3), indexed [y, u, v, channel]: output Y, Cb, Cr codes / 255
    full_range: bool  # grid over GRID_FULL (else GRID_LIMITED)

    def __post_init__(self) -> None:
        # Validated once here, not per rendered frame (a 65-point table is 3.3 MB).
        t = self.table
        if not isinstance(t, np.ndarray) or t.dtype != np.float32 or t.ndim != 4 or t.shape[3] != 3 \
                or not (t.shape[0] == t.shape[1] == t.shape[2]) or t.shape[0] < 2 or not t.flags.c_contiguous:
            desc = f"{t.dtype} {t.shape}" if isinstance(t, np.ndarray) else type(t).__name__
            raise ValueError(f"YuvLut.table must be a C-contiguous float32 (N, N, N, 3) array with N >= 2, got {desc}")
        if not np.all(np.isfinite(t)):
            raise ValueError("YuvLut.table must be finite")
        t.flags.writeable = False

    def grid(self) -> tuple[np.float32, np.float32, np.float32, np.float32]:
        """(luma scale, luma offset, chroma scale, chroma offset): grid units = code * scale + offset."""
        y_lo, y_hi, c_lo, c_hi = GRID_FULL if self.full_range else GRID_LIMITED
        top = self.table.shape[0] - 1
        ys, cs = top / (y_hi - y_lo), top / (c_hi - c_lo)
        return np.float32(ys), np.float32(-y_lo * ys), np.float32(cs), np.float32(-c_lo * cs)


@functools.lru_cache(maxsize=8)
def _grid_rgb(matrix: str, full_range: bool, size: int) -> tuple[np.ndarray, np.ndarray]:
    """R'G'B' (unclipped) of every grid point of a YUV LUT, and which of them lie near the RGB cube."""
    y_lo, y_hi, c_lo, c_hi = GRID_FULL if full_range else GRID_LIMITED
    y_axis, c_axis = np.linspace(y_lo, y_hi, size), np.linspace(c_lo, c_hi, size)
    rgb = yuv_to_rgb(np.stack(np.meshgrid(y_axis, c_axis, c_axis, indexing="ij"), axis=-1), matrix, full_range)
    near = np.all((rgb > -_GRADE_MARGIN) & (rgb < 1.0 + _GRADE_MARGIN), axis=-1)
    rgb.flags.writeable = False
    near.flags.writeable = False
    return rgb, near


def yuv_lut(grade, *, matrix: str = "bt601", full_range: bool = False, size: int = 33) -> YuvLut:
    """Bake "source YUV -> R'G'B', grade, -> BT.709 limited-range YUV" into one 3D LUT.

    Parameters
    ----------
    grade : float array (N, N, N, 3), values 0..1, indexed ``lut[r, g, b, channel]``, or a callable
        The grade: an RGB LUT as :func:`kernels.render.render_frame` takes it (looked up tetrahedrally,
        extended linearly beyond the cube, :func:`_tetra_extrapolated`), or a function mapping float R'G'B'
        ``(M, 3)`` to graded R'G'B' ``(M, 3)``, evaluated at the grid points themselves (more accurate: a
        LUT of a LUT interpolates twice).  A function gets grid points outside the RGB cube too and should
        extend smoothly there (e.g. :func:`stylecast.color.apply_transfer_rgb`); it is only called for
        grid points within a margin of the cube (farther ones keep their colour).
    matrix, full_range :
        How the SOURCE's YUV is to be read (see :func:`yuv_to_rgb`; FFmpeg reads untagged video as BT.601
        limited range, and so does the analysis, so that is the default).
    size : int >= 2
        Grid points per axis, evenly spaced over the source's legal range (:data:`GRID_LIMITED` or
        :data:`GRID_FULL`).

    Returns
    -------
    YuvLut
        ``table``: float32 ``(size, size, size, 3)`` indexed ``[y, u, v, channel]``, output Y, Cb, Cr codes
        divided by 255 (about 0..1, like an RGB LUT).  Not clipped (the kernel clips its result): an affine
        grade gives an affine table, which tetrahedral interpolation reproduces exactly.
    """
    if not callable(grade):
        rgb_lut = np.asarray(grade, np.float64)
        if rgb_lut.ndim != 4 or rgb_lut.shape[3] != 3 or len(set(rgb_lut.shape[:3])) != 1 or rgb_lut.shape[0] < 2:
            raise ValueError(f"grade must be an RGB LUT of shape (N, N, N, 3) with N >= 2 or a callable, "
                             f"got shape {rgb_lut.shape}")
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {sorted(MATRICES)}, got {matrix!r}")
    size = int(size)
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    rgb, near = _grid_rgb(matrix, bool(full_range), size)
    if callable(grade):
        # Only about a fifth of the grid lies in or next to the RGB cube; the rest is never a corner of a
        # cell that a legal colour falls into, and keeps its colour (no grade) at a quarter of the cost.
        graded = rgb.copy()
        graded[near] = np.asarray(grade(rgb[near]), np.float64).reshape(-1, 3)
    else:
        graded = _tetra_extrapolated(rgb_lut, rgb)
    table = _rgb01_to_yuv709_codes(graded) / 255.0
    if not np.all(np.isfinite(table)):
        raise ValueError("the grade returned non-finite colours")
    return YuvLut(np.ascontiguousarray(table, dtype=np.float32), bool(full_range))


# --------------------------------------------------------------------------------------
# jitted building blocks
# --------------------------------------------------------------------------------------
@numba.njit(inline="always", **_JIT_OPTIONS)
def _tetra_luma(lut, n, y, u, v):
    """Channel 0 (Y) of a tetrahedral lookup; inputs in grid units."""
    base, o1, o2, o3, w0, w1, w2, w3 = _tetra_cell(n, y, u, v)
    return _fma(w1, lut[_U(o1)], w0 * lut[_U(base)]) + _fma(w3, lut[_U(o3)], w2 * lut[_U(o2)])


@numba.njit(inline="always", **_JIT_OPTIONS)
def _tetra_chroma(lut, n, y, u, v):
    """Channels 1 and 2 (Cb, Cr) of a tetrahedral lookup; inputs in grid units."""
    base, o1, o2, o3, w0, w1, w2, w3 = _tetra_cell(n, y, u, v)
    cb = (_fma(w1, lut[_U(o1 + 1)], w0 * lut[_U(base + 1)])
          + _fma(w3, lut[_U(o3 + 1)], w2 * lut[_U(o2 + 1)]))
    cr = (_fma(w1, lut[_U(o1 + 2)], w0 * lut[_U(base + 2)])
          + _fma(w3, lut[_U(o3 + 2)], w2 * lut[_U(o2 + 2)]))
    return cb, cr


@numba.njit(inline="always", **_JIT_OPTIONS)
def _pair(plane, at, last):
    """Bytes ``at`` and ``at + 1`` of a flat plane in the low 16 bits of one unaligned 32-bit load (one
    gather when vectorised instead of two).  Near the plane's end the load starts earlier (``last`` is
    ``plane.size - 4``) and shifts; a byte past the end reads as 0 (only ever needed with weight 0)."""
    offset = min(at, last)
    return _load_u32_unaligned(plane, _U(offset)) >> np.uint32(8 * (at - offset))


@numba.njit(inline="always", **_JIT_OPTIONS)
def _row_pair(s, size):
    """Rows (first, second) and the fraction between them for a vertical source position, border replicated."""
    s = min(max(s, np.float32(0.0)), np.float32(size - 1))
    first = np.int64(s)
    return first, min(first + 1, size - 1), s - np.float32(first)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _bilinear_plane(plane, stride, width, height, sx, sy):
    """Bilinear sample (border replicate) of one uint8 plane (flat, ``stride`` items per row, at least 4
    items); float32 0..255.  Clamping the position to the pixel centres of the border is the same as
    replicating the border, and leaves x0 + 1 as the only tap that may lie outside a row (weight 0)."""
    sx = min(max(sx, np.float32(0.0)), np.float32(width - 1))
    x0 = np.int64(sx)
    fx = sx - np.float32(x0)
    y0, y1, fy = _row_pair(sy, height)
    last = plane.size - 4
    top_pair = _pair(plane, y0 * stride + x0, last)
    bottom_pair = _pair(plane, y1 * stride + x0, last)
    m = np.uint32(255)
    s8 = np.uint32(8)
    p00 = np.float32(top_pair & m)
    p01 = np.float32((top_pair >> s8) & m)
    p10 = np.float32(bottom_pair & m)
    p11 = np.float32((bottom_pair >> s8) & m)
    top = _fma(fx, p01 - p00, p00)
    bottom = _fma(fx, p11 - p10, p10)
    return _fma(fy, bottom - top, top)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _blend_rows(buf, at, plane, row0, row1, lo, span, fy):
    """``buf[at + j]`` = plane rows ``row0`` and ``row1`` (item offsets) mixed ``fy`` of the way, columns
    ``lo .. lo + span - 1``: the vertical half of bilinear sampling, once per source column."""
    for j in range(span):
        p0 = np.float32(plane[_U(row0 + lo + j)])
        buf[_U(at + j)] = _fma(fy, np.float32(plane[_U(row1 + lo + j)]) - p0, p0)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _to_u8(v):
    return np.uint8(np.int32(min(max(v, np.float32(0.0)), np.float32(255.0))))


# Per row pair and tile: (1) the chroma of each 2x2 block, in LUT grid units, into cuv (u at [i], v at
# [_HALF_TILE + i]); (2) per row the luma samples (grid units) into ys ([x] top row, [_TILE + x] bottom),
# their graded Y into the u8 tile, copied out; (3) per block the graded chroma from the mean luma sample.
# All scratch is on the stack (see kernels.render: it lets LLVM vectorise the serial variants).
@numba.njit(inline="always", **_JIT_OPTIONS)
def _grid(code, scale, offset, top):
    """A code (float32) in LUT grid units, clamped to the grid."""
    return min(max(_fma(code, scale, offset), np.float32(0.0)), top)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _block_chroma(cuv, buf, p, x0, nb, up, vp, cstride, cw, ch, aff, mode, cols_i, cols_f, out_w,
                  scale, offset, top):
    if mode == _DIRECT:
        row = p * cstride + x0 // 2
        for i in range(nb):
            cuv[_U(i)] = _grid(np.float32(up[_U(row + i)]), scale, offset, top)
            cuv[_U(_HALF_TILE + i)] = _grid(np.float32(vp[_U(row + i)]), scale, offset, top)
        return
    half = np.float32(0.5)
    if mode == _AXIS:
        # One chroma row position for the row pair; the columns' positions come from the tables.
        r0, r1, fy = _row_pair((_fma(aff[4], np.float32(2 * p) + half, aff[5]) - half) * half, ch)
        half_w = out_w // 2
        first, last = x0 // 2, x0 // 2 + nb - 1
        left, right = 2 * out_w, 2 * out_w + half_w  # where the tables' chroma columns start
        lo = min(cols_i[_U(left + first)], cols_i[_U(left + last)])
        span = max(cols_i[_U(right + first)], cols_i[_U(right + last)]) - lo + 1
        if span <= _CHROMA_ROW_ITEMS:
            _blend_rows(buf, 0, up, r0 * cstride, r1 * cstride, lo, span, fy)
            _blend_rows(buf, _CHROMA_ROW_ITEMS, vp, r0 * cstride, r1 * cstride, lo, span, fy)
            for i in range(nb):
                c = first + i
                k0 = cols_i[_U(left + c)] - lo
                k1 = cols_i[_U(right + c)] - lo
                fx = cols_f[_U(out_w + c)]
                a = buf[_U(k0)]
                cuv[_U(i)] = _grid(_fma(fx, buf[_U(k1)] - a, a), scale, offset, top)
                a = buf[_U(_CHROMA_ROW_ITEMS + k0)]
                cuv[_U(_HALF_TILE + i)] = _grid(_fma(fx, buf[_U(_CHROMA_ROW_ITEMS + k1)] - a, a), scale, offset,
                                                top)
            return
    fy = np.float32(2 * p) + half  # block centre, in output luma pixels
    x_start = _fma(aff[1], fy, aff[2])
    y_start = _fma(aff[4], fy, aff[5])
    for i in range(nb):
        fx = np.float32(x0 + 2 * i) + half
        # Source luma position -> chroma plane position (chroma sample j sits at luma 2j + 0.5).
        cx = (_fma(aff[0], fx, x_start) - half) * half
        cy = (_fma(aff[3], fx, y_start) - half) * half
        cuv[_U(i)] = _grid(_bilinear_plane(up, cstride, cw, ch, cx, cy), scale, offset, top)
        cuv[_U(_HALF_TILE + i)] = _grid(_bilinear_plane(vp, cstride, cw, ch, cx, cy), scale, offset, top)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _luma_samples(ys, buf, at, y, x0, count, yp, ystride, w, h, aff, mode, cols_i, cols_f, out_w,
                  scale, offset, top):
    """Luma of output pixels ``x0 ..`` of row ``y``, in LUT grid units, into ``ys[at:]``."""
    if mode == _DIRECT:
        row = y * ystride + x0
        for x in range(count):
            ys[_U(at + x)] = _grid(np.float32(yp[_U(row + x)]), scale, offset, top)
        return
    if mode == _AXIS:
        # Separable: blend the two source rows once per source column (contiguous, vectorised), then mix
        # neighbouring columns at each output pixel's position from the tables.
        r0, r1, fy = _row_pair(_fma(aff[4], np.float32(y), aff[5]), h)
        first, last = x0, x0 + count - 1
        lo = min(cols_i[_U(first)], cols_i[_U(last)])
        span = max(cols_i[_U(out_w + first)], cols_i[_U(out_w + last)]) - lo + 1
        if span <= _ROW_ITEMS:
            _blend_rows(buf, 0, yp, r0 * ystride, r1 * ystride, lo, span, fy)
            for x in range(count):
                c = x0 + x
                a = buf[_U(cols_i[_U(c)] - lo)]
                b = buf[_U(cols_i[_U(out_w + c)] - lo)]
                ys[_U(at + x)] = _grid(_fma(cols_f[_U(c)], b - a, a), scale, offset, top)
            return
    fy = np.float32(y)
    a00 = aff[0]
    a10 = aff[3]
    x_start = _fma(aff[1], fy, aff[2])
    y_start = _fma(aff[4], fy, aff[5])
    for x in range(count):
        fx = np.float32(x0 + x)
        ys[_U(at + x)] = _grid(_bilinear_plane(yp, ystride, w, h, _fma(a00, fx, x_start), _fma(a10, fx, y_start)),
                               scale, offset, top)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_yuv_one(out, out_h, out_w,
                    yp, ystride, h, w, up, vp, cstride, aff, lut, n, mode, cols_i, cols_f, gy, oy, gc, oc,
                    weight, add_y, add_u, add_v):
    """One source: ``out = weight * LUT(warp(src)) + add`` (YUV, add includes the +0.5 of the rounding)."""
    half_w = out_w // 2
    u_plane = out_h * out_w
    v_plane = u_plane + (out_h // 2) * half_w
    top = np.float32(n - 1)
    quarter = np.float32(0.25)
    ch = (h + 1) // 2
    cw = (w + 1) // 2
    for p in prange(out_h // 2):
        tile = _stack_u8(_TILE_BYTES)
        cuv = _stack_f32(_CHROMA_ITEMS)
        ys = _stack_f32(_LUMA_ITEMS)
        buf = _stack_f32(_ROW_ITEMS)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            nb = count // 2
            _block_chroma(cuv, buf, p, x0, nb, up, vp, cstride, cw, ch, aff, mode, cols_i, cols_f, out_w,
                          gc, oc, top)
            for r in range(2):
                _luma_samples(ys, buf, r * _TILE, 2 * p + r, x0, count, yp, ystride, w, h, aff, mode, cols_i,
                              cols_f, out_w, gy, oy, top)
                for x in range(count):
                    yv = _tetra_luma(lut, n, ys[_U(r * _TILE + x)], cuv[_U(x >> 1)], cuv[_U(_HALF_TILE + (x >> 1))])
                    tile[_U(x)] = _to_u8(_fma(weight, yv, add_y))
                _copy_bytes(tile, 0, out, (2 * p + r) * out_w + x0, count)
            for i in range(nb):
                mean = (ys[_U(2 * i)] + ys[_U(2 * i + 1)] + ys[_U(_TILE + 2 * i)] + ys[_U(_TILE + 2 * i + 1)]) * quarter
                cb, cr = _tetra_chroma(lut, n, mean, cuv[_U(i)], cuv[_U(_HALF_TILE + i)])
                tile[_U(_TILE + i)] = _to_u8(_fma(weight, cb, add_u))
                tile[_U(2 * _TILE + i)] = _to_u8(_fma(weight, cr, add_v))
            _copy_bytes(tile, _TILE, out, u_plane + p * half_w + x0 // 2, nb)
            _copy_bytes(tile, 2 * _TILE, out, v_plane + p * half_w + x0 // 2, nb)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_yuv_two(out, out_h, out_w,
                    yp_a, ystride_a, ha, wa, up_a, vp_a, cstride_a, aff_a, lut_a, na, mode_a, cols_i_a, cols_f_a,
                    gy_a, oy_a, gc_a, oc_a,
                    yp_b, ystride_b, hb, wb, up_b, vp_b, cstride_b, aff_b, lut_b, nb_, mode_b, cols_i_b, cols_f_b,
                    gy_b, oy_b, gc_b, oc_b,
                    weight_a, weight_b, add_y, add_u, add_v):
    """Two sources: ``out = wa * LUT_a(warp_a(a)) + wb * LUT_b(warp_b(b)) + add`` (YUV)."""
    half_w = out_w // 2
    u_plane = out_h * out_w
    v_plane = u_plane + (out_h // 2) * half_w
    top_a = np.float32(na - 1)
    top_b = np.float32(nb_ - 1)
    quarter = np.float32(0.25)
    cha = (ha + 1) // 2
    cwa = (wa + 1) // 2
    chb = (hb + 1) // 2
    cwb = (wb + 1) // 2
    for p in prange(out_h // 2):
        tile = _stack_u8(_TILE_BYTES)
        cuv_a = _stack_f32(_CHROMA_ITEMS)
        cuv_b = _stack_f32(_CHROMA_ITEMS)
        ys_a = _stack_f32(_LUMA_ITEMS)
        ys_b = _stack_f32(_LUMA_ITEMS)
        buf = _stack_f32(_ROW_ITEMS)  # each sampling pass uses it only until it returns
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            nb = count // 2
            _block_chroma(cuv_a, buf, p, x0, nb, up_a, vp_a, cstride_a, cwa, cha, aff_a, mode_a, cols_i_a, cols_f_a,
                          out_w, gc_a, oc_a, top_a)
            _block_chroma(cuv_b, buf, p, x0, nb, up_b, vp_b, cstride_b, cwb, chb, aff_b, mode_b, cols_i_b, cols_f_b,
                          out_w, gc_b, oc_b, top_b)
            for r in range(2):
                at = r * _TILE
                _luma_samples(ys_a, buf, at, 2 * p + r, x0, count, yp_a, ystride_a, wa, ha, aff_a, mode_a,
                              cols_i_a, cols_f_a, out_w, gy_a, oy_a, top_a)
                _luma_samples(ys_b, buf, at, 2 * p + r, x0, count, yp_b, ystride_b, wb, hb, aff_b, mode_b,
                              cols_i_b, cols_f_b, out_w, gy_b, oy_b, top_b)
                for x in range(count):
                    ya = _tetra_luma(lut_a, na, ys_a[_U(at + x)], cuv_a[_U(x >> 1)],
                                     cuv_a[_U(_HALF_TILE + (x >> 1))])
                    yb = _tetra_luma(lut_b, nb_, ys_b[_U(at + x)], cuv_b[_U(x >> 1)],
                                     cuv_b[_U(_HALF_TILE + (x >> 1))])
                    tile[_U(x)] = _to_u8(_fma(weight_b, yb, _fma(weight_a, ya, add_y)))
                _copy_bytes(tile, 0, out, (2 * p + r) * out_w + x0, count)
            for i in range(nb):
                mean_a = (ys_a[_U(2 * i)] + ys_a[_U(2 * i + 1)] + ys_a[_U(_TILE + 2 * i)]
                          + ys_a[_U(_TILE + 2 * i + 1)]) * quarter
                mean_b = (ys_b[_U(2 * i)] + ys_b[_U(2 * i + 1)] + ys_b[_U(_TILE + 2 * i)]
                          + ys_b[_U(_TILE + 2 * i + 1)]) * quarter
                cb_a, cr_a = _tetra_chroma(lut_a, na, mean_a, cuv_a[_U(i)], cuv_a[_U(_HALF_TILE + i)])
                cb_b, cr_b = _tetra_chroma(lut_b, nb_, mean_b, cuv_b[_U(i)], cuv_b[_U(_HALF_TILE + i)])
                tile[_U(_TILE + i)] = _to_u8(_fma(weight_b, cb_b, _fma(weight_a, cb_a, add_u)))
                tile[_U(2 * _TILE + i)] = _to_u8(_fma(weight_b, cr_b, _fma(weight_a, cr_a, add_v)))
            _copy_bytes(tile, _TILE, out, u_plane + p * half_w + x0 // 2, nb)
            _copy_bytes(tile, 2 * _TILE, out, v_plane + p * half_w + x0 // 2, nb)


_SERIAL = {core: _serial_variant(core) for core in (_render_yuv_one, _render_yuv_two)}


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def _flat_plane(name: str, plane) -> tuple[np.ndarray, int]:
    """A 2-D uint8 plane as (1-D view from its first item, row stride in items); copies only when its
    rows are not contiguous."""
    if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8 or plane.ndim != 2:
        desc = f"{plane.dtype} {plane.shape}" if isinstance(plane, np.ndarray) else type(plane).__name__
        raise ValueError(f"{name} must be a 2-D uint8 array, got {desc}")
    if plane.strides[1] != 1 or plane.strides[0] < plane.shape[1]:
        plane = np.ascontiguousarray(plane)
    rows, cols = plane.shape
    stride = plane.strides[0]
    length = (rows - 1) * stride + cols
    if length < 4:  # the bilinear taps read 4 bytes at a time
        padded = np.zeros(4, np.uint8)
        padded[:length] = np.lib.stride_tricks.as_strided(plane, shape=(length,), strides=(1,))
        return padded, stride
    return np.lib.stride_tricks.as_strided(plane, shape=(length,), strides=(1,)), stride


def _check_planes(name: str, planes) -> tuple:
    """Validate a ``(y, u, v)`` 4:2:0 source; returns the core arguments (flat planes, strides, sizes)."""
    if not isinstance(planes, (tuple, list)) or len(planes) != 3:
        raise ValueError(f"{name} must be a (y, u, v) tuple of uint8 planes, got {type(planes).__name__}")
    y, u, v = planes
    yp, ystride = _flat_plane(f"{name}[0] (Y)", y)
    up, cstride = _flat_plane(f"{name}[1] (U)", u)
    vp, vstride = _flat_plane(f"{name}[2] (V)", v)
    h, w = y.shape
    if h < 1 or w < 1:
        raise ValueError(f"{name} Y plane must be non-empty, got {y.shape}")
    chroma = ((h + 1) // 2, (w + 1) // 2)
    if u.shape != chroma or v.shape != chroma:
        raise ValueError(f"{name} U and V planes must have shape {chroma} for a {y.shape} Y plane (4:2:0), "
                         f"got {u.shape} and {v.shape}")
    if vstride != cstride:
        vp, vstride = _flat_plane(f"{name}[2] (V)", np.ascontiguousarray(v))
        up, cstride = _flat_plane(f"{name}[1] (U)", np.ascontiguousarray(u))
    return yp, np.int64(ystride), np.int64(h), np.int64(w), up, vp, np.int64(cstride)


def _check_yuv_lut(name: str, lut) -> YuvLut:
    if not isinstance(lut, YuvLut):
        raise ValueError(f"{name} must be a YuvLut (see yuv_lut), got {type(lut).__name__}")
    return lut


_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
_NO_COLUMNS = (np.zeros(1, np.int32), np.zeros(1, np.float32))


def _sampling(aff: np.ndarray, src_h: int, src_w: int, out_h: int, out_w: int) -> tuple:
    """(mode, column tables) for sampling a ``src_h`` x ``src_w`` source through inverse affine ``aff``.

    For an axis-aligned warp a source column depends only on the output column, so the horizontal positions
    are worked out once per frame here: ``cols_i`` (int32) holds the left and right source columns of every
    output luma column, then those of every chroma block column; ``cols_f`` (float32) the fractions between
    them, luma then chroma.  Positions are clamped to the border, as the bilinear taps are.
    """
    if src_h == out_h and src_w == out_w and np.array_equal(aff, _IDENTITY):
        return (_DIRECT,) + _NO_COLUMNS
    if aff[1] != 0.0 or aff[3] != 0.0:
        return (_GENERAL,) + _NO_COLUMNS
    scale, shift = np.float32(aff[0]), np.float32(aff[2])
    half = np.float32(0.5)
    luma_x = np.arange(out_w, dtype=np.float32)
    chroma_x = np.arange(out_w // 2, dtype=np.float32) * np.float32(2.0) + half  # block centres, luma pixels
    luma = np.clip(scale * luma_x + shift, np.float32(0.0), np.float32(src_w - 1))
    chroma = np.clip((scale * chroma_x + shift - half) * half, np.float32(0.0), np.float32((src_w + 1) // 2 - 1))
    luma_left, chroma_left = luma.astype(np.int32), chroma.astype(np.int32)
    cols_i = np.concatenate([luma_left, np.minimum(luma_left + 1, src_w - 1),
                             chroma_left, np.minimum(chroma_left + 1, (src_w + 1) // 2 - 1)]).astype(np.int32)
    cols_f = np.concatenate([luma - luma_left, chroma - chroma_left]).astype(np.float32)
    return _AXIS, cols_i, cols_f


def render_frame_i420_yuv(out: np.ndarray,
                          src_a, inv_affine_a, lut_a: np.ndarray,
                          src_b=None, inv_affine_b=None, lut_b: np.ndarray | None = None,
                          blend_b: float = 0.0,
                          fade_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0),
                          fade_amount: float = 0.0,
                          *,
                          parallel: bool = True) -> np.ndarray:
    """Render one I420 output frame from 4:2:0 sources: warp + YUV LUT each, dissolve, fade.

    Parameters as :func:`kernels.render.render_frame_i420`, except:

    src_a, src_b : (y, u, v) uint8 planes, see the module docstring.
    lut_a, lut_b : YuvLut from :func:`yuv_lut` for the source's matrix and range (``lut_b`` defaults to
                   ``lut_a``).
    fade_rgb : (r, g, b) in 0..1, the colour faded toward (converted to BT.709 limited range here).
    """
    h, w = _check_i420_out(out)
    a = _check_planes("src_a", src_a)
    aff_a = _check_affine("inv_affine_a", inv_affine_a)
    lut_a = _check_yuv_lut("lut_a", lut_a)
    blend_b = _check_unit("blend_b", blend_b)
    fade_amount = _check_unit("fade_amount", fade_amount)
    fade = np.asarray(fade_rgb, dtype=np.float64)
    if fade.shape != (3,) or not np.all(np.isfinite(fade)) or fade.min() < 0.0 or fade.max() > 1.0:
        raise ValueError(f"fade_rgb must be three floats in 0..1, got {fade_rgb!r}")
    keep = (1.0 - fade_amount) * 255.0
    add = tuple(np.float32(c) for c in fade_amount * _rgb01_to_yuv709_codes(fade) + 0.5)
    use_a, use_b = blend_b < 1.0, blend_b > 0.0
    out_flat = out.reshape(-1)

    def source(args, aff, lut):
        mode, cols_i, cols_f = _sampling(aff, int(args[2]), int(args[3]), h, w)
        return args + (aff, lut.table.reshape(-1), np.int64(lut.table.shape[0]), np.int64(mode), cols_i,
                       cols_f) + lut.grid()

    if use_b:
        if src_b is None:
            raise ValueError("blend_b > 0 requires src_b")
        b = _check_planes("src_b", src_b)
        aff_b = _check_affine("inv_affine_b", inv_affine_a if inv_affine_b is None else inv_affine_b)
        lut_b = lut_a if lut_b is None else _check_yuv_lut("lut_b", lut_b)
    if use_a and use_b:
        core = _render_yuv_two if parallel else _SERIAL[_render_yuv_two]
        core(out_flat, np.int64(h), np.int64(w), *source(a, aff_a, lut_a), *source(b, aff_b, lut_b),
             np.float32(keep * (1.0 - blend_b)), np.float32(keep * blend_b), *add)
    else:
        one = source(a, aff_a, lut_a) if use_a else source(b, aff_b, lut_b)
        core = _render_yuv_one if parallel else _SERIAL[_render_yuv_one]
        core(out_flat, np.int64(h), np.int64(w), *one, np.float32(keep), *add)
    return out


def warmup(variants: tuple[bool, ...] = (True, False)) -> None:
    """Compile (or load from Numba's cache) both cores on tiny frames; ``variants``: which of the parallel
    (True) and serial (False) variants."""
    src = (np.zeros((4, 6), np.uint8), np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8))
    lut = yuv_lut(np.stack(np.meshgrid(*[np.linspace(0, 1, 2)] * 3, indexing="ij"), -1), size=2)
    out = np.zeros((6, 6), np.uint8)
    for parallel in variants:
        render_frame_i420_yuv(out, src, np.eye(2, 3), lut, parallel=parallel)
        render_frame_i420_yuv(out, src, np.eye(2, 3), lut, src, np.eye(2, 3) * 1.5, lut, blend_b=0.5,
                              fade_amount=0.25, parallel=parallel)
