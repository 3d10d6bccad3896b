"""Fused per-pixel render kernel: affine warp + 3D LUT + dissolve + fade, in one pass.

Every output pixel is produced by one visit that

1. maps its centre through an inverse affine into each source frame and samples it
   with **bilinear** interpolation (border replicate),
2. grades the sample with a 3D LUT using **tetrahedral** interpolation
   (the 6-tetrahedra split by ordering of the fractional parts, as in Resolve and
   ffmpeg ``lut3d=interp=tetrahedral``),
3. dissolves source A into source B with weight ``blend_b``,
4. fades the result toward ``fade_rgb`` by ``fade_amount``,
5. rounds to ``uint8``.

Conventions (shared with the rest of stylecast)
-----------------------------------------------
- Frames are ``uint8`` ``(H, W, 3)`` RGB.
- Integer pixel coordinates are pixel *centres* (OpenCV convention); ``(x, y)`` is
  (column, row).
- A 3D LUT is float32 ``(N, N, N, 3)`` in 0..1 indexed ``lut[r, g, b, channel]``, grid
  point ``i`` sits at value ``i / (N - 1)``.
- ``inv_affine`` is a ``(2, 3)`` matrix mapping an OUTPUT pixel centre ``(x, y, 1)`` to
  the SOURCE position ``(x_src, y_src)`` that is sampled there.

The maths per output pixel (colours in 0..1)::

    c = (1 - blend_b) * LUT_a(bilinear(src_a, A_a @ [x, y, 1]))
        + blend_b     * LUT_b(bilinear(src_b, A_b @ [x, y, 1]))
    c = (1 - fade_amount) * c + fade_amount * fade_rgb
    out = clip(round(c * 255), 0, 255)

When ``blend_b == 0`` source B is not sampled at all, when ``blend_b == 1`` source A is
not sampled.  The jitted cores work in float32 and are free of Python objects, so they
run without the GIL and can be called from threads or Ray actors.  Numba caches the
compiled machine code next to this module (``cache=True``); call :func:`warmup` once
per process to pay the compile / cache-load cost up front.

Performance (1080p output, two 1080p sources, rotation + zoom, 33^3 LUTs, dissolve):
about 50-65 Mpx/s of output per core (AVX-512 machine), some 30x the same work
composed from ``cv2.warpAffine`` + a numpy trilinear LUT + ``cv2.addWeighted``; see
``bench/bench_kernels.py``.  Output rows are split over Numba's threads
(``numba.set_num_threads`` bounds them).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.core.extending import intrinsic

__all__ = [
    "render_frame",
    "lut_apply",
    "identity_lut",
    "affine_for",
    "warmup",
]

_JIT_OPTIONS = dict(cache=True, fastmath=True, error_model="numpy", boundscheck=False, nogil=True)



# --------------------------------------------------------------------------------------
# jitted building blocks
#
# Performance notes (why the code looks the way it does):
# - Every array index is cast to an unsigned type (``_U``).  Numba otherwise emits
#   Python negative-index wraparound for each access, which both costs instructions
#   and stops LLVM from vectorising the loop.  With it, the per-row loop is
#   vectorised with AVX-512/AVX2 gathers (about 5x faster).
# - A bilinear tap reads its RGB bytes with ONE unaligned 32-bit load (a single
#   dword gather when vectorised) instead of three byte loads, which x86 cannot
#   gather and LLVM would scalarise.
# - Everything is float32 (a float64 anywhere, e.g. from ``math.floor`` returning
#   an int, silently promotes the whole expression).
# --------------------------------------------------------------------------------------
_U = np.uint64
_MAX_AFFINE_ABS = 1e6


@intrinsic
def _load_u32_unaligned(typingctx, data, byte_offset):
    """Little-endian uint32 from 4 bytes of a 1-D uint8 array at ``byte_offset``.

    No bounds check: the caller guarantees ``0 <= byte_offset <= data.size - 4``.
    """
    sig = types.uint32(data, byte_offset)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]], inbounds=True)
        ptr32 = builder.bitcast(ptr, ir.IntType(32).as_pointer())
        return builder.load(ptr32, align=1)

    return sig, codegen


@numba.njit(inline="always", **_JIT_OPTIONS)
def _tetra(lut_flat, n, r, g, b):
    """Tetrahedral LUT lookup of one colour given in LUT *grid units* (0..n-1).

    ``lut_flat`` is the C-contiguous ``(n, n, n, 3)`` float32 LUT flattened to 1-D.
    Returns the three interpolated channels (float32, LUT units).
    """
    nm2 = n - 2
    # r, g, b >= 0 up to rounding; truncation then equals floor.
    ri = min(np.int64(r), nm2)
    gi = min(np.int64(g), nm2)
    bi = min(np.int64(b), nm2)
    fr = r - np.float32(ri)
    fg = g - np.float32(gi)
    fb = b - np.float32(bi)
    step_b = np.int64(3)
    step_g = 3 * n
    step_r = 3 * n * n
    base = ri * step_r + gi * step_g + bi * step_b

    # The tetrahedron containing the point walks from corner 000 along the axis with
    # the largest fraction (o1), then the middle one (o2 = 111 minus the axis with the
    # smallest fraction), to corner 111.  Ties pick any axis: their weight is 0.
    f_hi = max(fr, max(fg, fb))
    f_lo = min(fr, min(fg, fb))
    f_mid = (fr + fg + fb) - f_hi - f_lo
    s_hi = step_r if (fr >= fg) & (fr >= fb) else (step_g if fg >= fb else step_b)
    s_lo = step_b if (fb <= fg) & (fb <= fr) else (step_g if fg <= fr else step_r)
    o3 = base + (step_r + step_g + step_b)
    o1 = base + s_hi
    o2 = o3 - s_lo

    w0 = np.float32(1.0) - f_hi
    w1 = f_hi - f_mid
    w2 = f_mid - f_lo
    w3 = f_lo
    c0 = (w0 * lut_flat[_U(base)] + w1 * lut_flat[_U(o1)]
          + w2 * lut_flat[_U(o2)] + w3 * lut_flat[_U(o3)])
    c1 = (w0 * lut_flat[_U(base + 1)] + w1 * lut_flat[_U(o1 + 1)]
          + w2 * lut_flat[_U(o2 + 1)] + w3 * lut_flat[_U(o3 + 1)])
    c2 = (w0 * lut_flat[_U(base + 2)] + w1 * lut_flat[_U(o1 + 2)]
          + w2 * lut_flat[_U(o2 + 2)] + w3 * lut_flat[_U(o3 + 2)])
    return c0, c1, c2


@numba.njit(inline="always", **_JIT_OPTIONS)
def _tap(src_flat, byte_index, last_offset):
    """RGB of one pixel packed in a uint32 (R in the low byte)."""
    # Only the very last pixel of the frame would read one byte past the end: load
    # one byte earlier there and shift that byte out.
    offset = min(byte_index, last_offset)
    return _load_u32_unaligned(src_flat, _U(offset)) >> np.uint32(8 * (byte_index - offset))


@numba.njit(inline="always", **_JIT_OPTIONS)
def _bilinear(src_flat, width, height, sx, sy):
    """Bilinear sample (border replicate) of an interleaved RGB uint8 frame.

    ``src_flat`` is the C-contiguous frame flattened to 1-D.  ``sx, sy`` are float32
    source coordinates (pixel centres at integers).  Returns float32 0..255.
    """
    # Clamping the position to [-1, size] changes nothing (beyond the edge both taps
    # clamp to the border pixel anyway) but makes int truncation a floor and keeps
    # the int conversion in range.
    sx = min(max(sx, np.float32(-1.0)), np.float32(width))
    sy = min(max(sy, np.float32(-1.0)), np.float32(height))
    x0 = np.int64(sx + np.float32(1.0)) - 1
    y0 = np.int64(sy + np.float32(1.0)) - 1
    fx = sx - np.float32(x0)
    fy = sy - np.float32(y0)
    xm = width - 1
    ym = height - 1
    x1 = min(max(x0 + 1, 0), xm)
    y1 = min(max(y0 + 1, 0), ym)
    x0 = min(max(x0, 0), xm)
    y0 = min(max(y0, 0), ym)
    last = height * width * 3 - 4
    p00 = _tap(src_flat, (y0 * width + x0) * 3, last)
    p01 = _tap(src_flat, (y0 * width + x1) * 3, last)
    p10 = _tap(src_flat, (y1 * width + x0) * 3, last)
    p11 = _tap(src_flat, (y1 * width + x1) * 3, last)
    gx = np.float32(1.0) - fx
    gy = np.float32(1.0) - fy
    w00 = gx * gy
    w01 = fx * gy
    w10 = gx * fy
    w11 = fx * fy
    m = np.uint32(255)
    s8 = np.uint32(8)
    s16 = np.uint32(16)
    v0 = (w00 * np.float32(p00 & m) + w01 * np.float32(p01 & m)
          + w10 * np.float32(p10 & m) + w11 * np.float32(p11 & m))
    v1 = (w00 * np.float32((p00 >> s8) & m) + w01 * np.float32((p01 >> s8) & m)
          + w10 * np.float32((p10 >> s8) & m) + w11 * np.float32((p11 >> s8) & m))
    v2 = (w00 * np.float32((p00 >> s16) & m) + w01 * np.float32((p01 >> s16) & m)
          + w10 * np.float32((p10 >> s16) & m) + w11 * np.float32((p11 >> s16) & m))
    return v0, v1, v2


@numba.njit(inline="always", **_JIT_OPTIONS)
def _store_rgb(out_flat, o, r, g, b):
    """Clip float32 (already +0.5) to 0..255 and truncate, i.e. round half up."""
    zero = np.float32(0.0)
    top = np.float32(255.0)
    out_flat[_U(o)] = np.uint8(np.int32(min(max(r, zero), top)))
    out_flat[_U(o + 1)] = np.uint8(np.int32(min(max(g, zero), top)))
    out_flat[_U(o + 2)] = np.uint8(np.int32(min(max(b, zero), top)))


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_one(out_flat, out_h, out_w, src, h, w, aff, lut, n, weight, add_r, add_g, add_b):
    """One source: ``out = weight * LUT(warp(src)) + add`` (add includes the +0.5)."""
    scale = np.float32(n - 1) / np.float32(255.0)
    a00 = aff[0]
    a01 = aff[1]
    a02 = aff[2]
    a10 = aff[3]
    a11 = aff[4]
    a12 = aff[5]
    for y in prange(out_h):
        fy = np.float32(y)
        # The affine is linear: per row the source position starts at (x0, y0) and
        # advances by (a00, a10) per output pixel.
        x_start = a01 * fy + a02
        y_start = a11 * fy + a12
        row = y * out_w * 3
        for x in range(out_w):
            fx = np.float32(x)
            v0, v1, v2 = _bilinear(src, w, h, a00 * fx + x_start, a10 * fx + y_start)
            c0, c1, c2 = _tetra(lut, n, v0 * scale, v1 * scale, v2 * scale)
            _store_rgb(out_flat, row + 3 * x,
                       weight * c0 + add_r, weight * c1 + add_g, weight * c2 + add_b)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_two(out_flat, out_h, out_w,
                src_a, ha, wa, aff_a, lut_a, na,
                src_b, hb, wb, aff_b, lut_b, nb,
                weight_a, weight_b, add_r, add_g, add_b):
    """Two sources: ``out = wa * LUT_a(warp_a(a)) + wb * LUT_b(warp_b(b)) + add``."""
    scale_a = np.float32(na - 1) / np.float32(255.0)
    scale_b = np.float32(nb - 1) / np.float32(255.0)
    a00 = aff_a[0]
    a01 = aff_a[1]
    a02 = aff_a[2]
    a10 = aff_a[3]
    a11 = aff_a[4]
    a12 = aff_a[5]
    b00 = aff_b[0]
    b01 = aff_b[1]
    b02 = aff_b[2]
    b10 = aff_b[3]
    b11 = aff_b[4]
    b12 = aff_b[5]
    for y in prange(out_h):
        fy = np.float32(y)
        ax_start = a01 * fy + a02
        ay_start = a11 * fy + a12
        bx_start = b01 * fy + b02
        by_start = b11 * fy + b12
        row = y * out_w * 3
        for x in range(out_w):
            fx = np.float32(x)
            v0, v1, v2 = _bilinear(src_a, wa, ha, a00 * fx + ax_start, a10 * fx + ay_start)
            c0, c1, c2 = _tetra(lut_a, na, v0 * scale_a, v1 * scale_a, v2 * scale_a)
            u0, u1, u2 = _bilinear(src_b, wb, hb, b00 * fx + bx_start, b10 * fx + by_start)
            d0, d1, d2 = _tetra(lut_b, nb, u0 * scale_b, u1 * scale_b, u2 * scale_b)
            _store_rgb(out_flat, row + 3 * x,
                       weight_a * c0 + weight_b * d0 + add_r,
                       weight_a * c1 + weight_b * d1 + add_g,
                       weight_a * c2 + weight_b * d2 + add_b)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _lut_apply_core(rgb_flat, out_flat, n_pixels, lut_flat, n):
    scale = np.float32(n - 1) / np.float32(255.0)
    k = np.float32(255.0)
    half = np.float32(0.5)
    # Chunks of pixels keep the parallel overhead negligible on small inputs.
    chunk = 4096
    n_chunks = (n_pixels + chunk - 1) // chunk
    for c in prange(n_chunks):
        start = c * chunk
        stop = min(start + chunk, n_pixels)
        for p in range(start, stop):
            i = p * 3
            c0, c1, c2 = _tetra(lut_flat, n,
                                np.float32(rgb_flat[_U(i)]) * scale,
                                np.float32(rgb_flat[_U(i + 1)]) * scale,
                                np.float32(rgb_flat[_U(i + 2)]) * scale)
            _store_rgb(out_flat, i, c0 * k + half, c1 * k + half, c2 * k + half)


# --------------------------------------------------------------------------------------
# validation helpers (plain Python)
# --------------------------------------------------------------------------------------
def _check_frame(name: str, frame) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {frame.shape}")
    if frame.shape[0] * frame.shape[1] == 1:
        # The kernel reads 4 bytes per tap; a 1x2 copy of a single pixel samples the same.
        frame = np.repeat(frame, 2, axis=1)
    return np.ascontiguousarray(frame)


def _check_lut(name: str, lut) -> np.ndarray:
    lut = np.asarray(lut)
    if not (np.issubdtype(lut.dtype, np.floating)):
        raise ValueError(f"{name} must be a float array (float32 in 0..1), got dtype {lut.dtype}")
    if lut.ndim != 4 or lut.shape[3] != 3 or not (lut.shape[0] == lut.shape[1] == lut.shape[2]):
        raise ValueError(f"{name} must have shape (N, N, N, 3), got {lut.shape}")
    if lut.shape[0] < 2:
        raise ValueError(f"{name} must have N >= 2 grid points per axis, got N={lut.shape[0]}")
    lut = np.ascontiguousarray(lut, dtype=np.float32)
    if not np.all(np.isfinite(lut)):
        raise ValueError(f"{name} must be finite (float32 in 0..1)")
    return lut


def _check_affine(name: str, affine) -> np.ndarray:
    try:
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a (2, 3) numeric array") from exc
    if affine.shape != (2, 3):
        raise ValueError(f"{name} must have shape (2, 3), got {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"{name} must be finite, got {affine.tolist()}")
    # The kernel clamps source positions in float32 with fastmath (no inf/NaN allowed);
    # bounded coefficients keep every position finite.  Real warps are far inside this.
    if np.abs(affine).max() > _MAX_AFFINE_ABS:
        raise ValueError(f"{name} entries must be within +-{_MAX_AFFINE_ABS:g}, got {affine.tolist()}")
    return np.ascontiguousarray(affine, dtype=np.float32).ravel()


def _check_unit(name: str, value) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def render_frame(out: np.ndarray,
                 src_a: np.ndarray,
                 inv_affine_a,
                 lut_a: np.ndarray,
                 src_b: np.ndarray | None = None,
                 inv_affine_b=None,
                 lut_b: np.ndarray | None = None,
                 blend_b: float = 0.0,
                 fade_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 fade_amount: float = 0.0) -> np.ndarray:
    """Render one output frame: warp + LUT each source, dissolve, fade, round to uint8.

    Parameters
    ----------
    out : np.ndarray, uint8, shape (H, W, 3)
        Output frame (RGB), written in place and returned.
    src_a : np.ndarray, uint8, shape (Ha, Wa, 3)
        Source frame A (RGB).
    inv_affine_a : array-like, shape (2, 3)
        Maps an OUTPUT pixel centre ``(x, y, 1)`` (pixels) to the SOURCE-A position
        ``(x, y)`` (pixels) sampled for it.  See :func:`affine_for`.
    lut_a : np.ndarray, float, shape (N, N, N, 3), values 0..1
        3D LUT for A, ``lut[r, g, b, channel]``, N >= 2.  Use :func:`identity_lut` for
        "no colour change".
    src_b, inv_affine_b, lut_b : optional
        Same for source B; required when ``blend_b > 0``.  ``lut_b`` defaults to
        ``lut_a`` and ``inv_affine_b`` to ``inv_affine_a`` when omitted.
    blend_b : float in [0, 1]
        Dissolve weight of B: 0 = only A (B is not sampled), 1 = only B (A is not
        sampled).
    fade_rgb : (r, g, b), each in [0, 1]
        Colour faded toward.
    fade_amount : float in [0, 1]
        0 = no fade, 1 = fully ``fade_rgb``.

    Returns
    -------
    np.ndarray
        ``out``.

    Raises
    ------
    ValueError
        On wrong dtypes / shapes / out-of-range weights.

    Notes
    -----
    Sampling outside a source replicates its border pixels.  Rounding is half-up
    after clipping to 0..255 (differs from numpy's half-to-even only on exact ties).
    """
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        desc = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a uint8 array of shape (H, W, 3), got {desc}")
    if out.shape[0] < 1 or out.shape[1] < 1:
        raise ValueError(f"out must be non-empty, got shape {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    src_a = _check_frame("src_a", src_a)
    aff_a = _check_affine("inv_affine_a", inv_affine_a)
    lut_a = _check_lut("lut_a", lut_a)
    blend_b = _check_unit("blend_b", blend_b)
    fade_amount = _check_unit("fade_amount", fade_amount)
    fade = np.asarray(fade_rgb, dtype=np.float64)
    if fade.shape != (3,) or not np.all(np.isfinite(fade)):
        raise ValueError(f"fade_rgb must be three finite floats, got {fade_rgb!r}")

    use_b = blend_b > 0.0
    use_a = blend_b < 1.0
    if use_b:
        if src_b is None:
            raise ValueError("blend_b > 0 requires src_b")
        src_b = _check_frame("src_b", src_b)
        aff_b = _check_affine("inv_affine_b", inv_affine_a if inv_affine_b is None else inv_affine_b)
        lut_b = lut_a if lut_b is None else _check_lut("lut_b", lut_b)

    keep = (1.0 - fade_amount) * 255.0
    add = fade_amount * fade * 255.0 + 0.5

    target = out if out.flags.c_contiguous else np.empty(out.shape, np.uint8)
    out_flat = target.reshape(-1)
    oh, ow = np.int64(out.shape[0]), np.int64(out.shape[1])
    add_r, add_g, add_b = (np.float32(v) for v in add)
    if use_a and use_b:
        _render_two(out_flat, oh, ow,
                    src_a.reshape(-1), np.int64(src_a.shape[0]), np.int64(src_a.shape[1]),
                    aff_a, lut_a.reshape(-1), np.int64(lut_a.shape[0]),
                    src_b.reshape(-1), np.int64(src_b.shape[0]), np.int64(src_b.shape[1]),
                    aff_b, lut_b.reshape(-1), np.int64(lut_b.shape[0]),
                    np.float32(keep * (1.0 - blend_b)), np.float32(keep * blend_b),
                    add_r, add_g, add_b)
    else:
        src, aff, lut = (src_a, aff_a, lut_a) if use_a else (src_b, aff_b, lut_b)
        _render_one(out_flat, oh, ow,
                    src.reshape(-1), np.int64(src.shape[0]), np.int64(src.shape[1]),
                    aff, lut.reshape(-1), np.int64(lut.shape[0]),
                    np.float32(keep), add_r, add_g, add_b)
    if target is not out:
        out[...] = target
    return out


def lut_apply(rgb_uint8: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 3D LUT (tetrahedral interpolation) to a uint8 RGB image; no warp.

    Parameters
    ----------
    rgb_uint8 : np.ndarray, uint8, shape (..., 3)
        RGB pixels (any leading shape, e.g. (H, W, 3) or (P, 3)).
    lut : np.ndarray, float, shape (N, N, N, 3), values 0..1

    Returns
    -------
    np.ndarray, uint8, same shape as the input (new array).
    """
    if not isinstance(rgb_uint8, np.ndarray) or rgb_uint8.dtype != np.uint8:
        raise ValueError("rgb_uint8 must be a uint8 numpy array")
    if rgb_uint8.ndim < 1 or rgb_uint8.shape[-1] != 3:
        raise ValueError(f"rgb_uint8 must have shape (..., 3), got {rgb_uint8.shape}")
    lut = _check_lut("lut", lut)
    rgb = np.ascontiguousarray(rgb_uint8)
    out = np.empty_like(rgb)
    n_pixels = rgb.size // 3
    if n_pixels:
        _lut_apply_core(rgb.reshape(-1), out.reshape(-1), np.int64(n_pixels),
                        lut.reshape(-1), np.int64(lut.shape[0]))
    return out


def identity_lut(n: int = 2) -> np.ndarray:
    """Identity 3D LUT, float32 ``(n, n, n, 3)``: ``lut[r, g, b] = (r, g, b) / (n - 1)``.

    Tetrahedral interpolation is exact for any LUT that is affine in RGB, so every
    ``n >= 2`` (and ``n = 2``, the cheapest) is an exact "no colour change" LUT.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"identity_lut needs n >= 2, got {n}")
    axis = np.linspace(0.0, 1.0, n, dtype=np.float32)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.ascontiguousarray(np.stack([r, g, b], axis=-1), dtype=np.float32)


def affine_for(out_size: tuple[int, int], src_size: tuple[int, int], *,
               scale: float = 1.0, rotation_deg: float = 0.0,
               shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """Inverse affine (output pixel -> source pixel) for a cover-fit + zoom/rotate/shift.

    Parameters
    ----------
    out_size : (width, height)
        Output frame size in pixels (note: width first, as in OpenCV).
    src_size : (width, height)
        Source frame size in pixels.
    scale : float > 0
        Extra zoom about the frame centre; 1 = plain cover fit, 2 = content twice as
        large (``zoom_in``).
    rotation_deg : float
        Rotation of the picture content about the output centre, in degrees;
        positive = counter-clockwise as seen on screen (same sense as
        ``cv2.getRotationMatrix2D``).
    shift_x, shift_y : float
        Translation of the picture content in OUTPUT pixels after zoom/rotation;
        +x moves content right, +y moves it down (so ``pan_right`` is a negative
        ``shift_x``).

    Returns
    -------
    np.ndarray, float64, shape (2, 3)
        ``A`` such that ``A @ [x_out, y_out, 1] = [x_src, y_src]``.

    Notes
    -----
    Exactly, with pixel centres at integers, ``c_src = ((Ws-1)/2, (Hs-1)/2)``,
    ``c_out = ((Wo-1)/2, (Ho-1)/2)``, ``s = scale * max(Wo/Ws, Ho/Hs)`` (cover: the
    source fills the output, the overflowing axis is centre-cropped) and
    ``R(t) = [[cos t, sin t], [-sin t, cos t]]`` (counter-clockwise on screen, y down),
    the forward map is ``p_out = c_out + (shift_x, shift_y) + s * R(t) @ (p_src - c_src)``
    and the returned matrix is its inverse
    ``p_src = c_src + R(-t) @ (p_out - c_out - shift) / s``.
    A rotated picture at ``scale=1`` leaves corners outside the source; those pixels
    replicate the source border.  ``scale >= |cos t| + |sin t| * max(Wo/Ho, Ho/Wo)``
    (for a same-aspect source) keeps them covered.
    """
    wo, ho = (float(v) for v in out_size)
    ws, hs = (float(v) for v in src_size)
    if min(wo, ho, ws, hs) <= 0:
        raise ValueError(f"sizes must be positive, got out_size={out_size}, src_size={src_size}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite float, got {scale}")
    s = float(scale) * max(wo / ws, ho / hs)
    t = math.radians(float(rotation_deg))
    cos_t, sin_t = math.cos(t), math.sin(t)
    # R(-t) / s
    inv = np.array([[cos_t, -sin_t], [sin_t, cos_t]], dtype=np.float64) / s
    c_src = np.array([(ws - 1.0) / 2.0, (hs - 1.0) / 2.0])
    c_out = np.array([(wo - 1.0) / 2.0 + shift_x, (ho - 1.0) / 2.0 + shift_y])
    affine = np.empty((2, 3), dtype=np.float64)
    affine[:, :2] = inv
    affine[:, 2] = c_src - inv @ c_out
    return affine


def warmup() -> None:
    """Compile (or load from Numba's cache) every jitted core using tiny arrays."""
    src = np.zeros((4, 5, 3), np.uint8)
    out = np.zeros((3, 2, 3), np.uint8)
    lut = identity_lut(2)
    aff = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    render_frame(out, src, aff, lut)
    render_frame(out, src, aff, lut, src, aff, lut, blend_b=0.5, fade_amount=0.25)
    lut_apply(src, lut)
