"""Fused per-pixel render kernel: affine warp + 3D LUT + dissolve + fade, in one pass.

Every output pixel is produced by one visit that

1. maps its centre through an inverse affine into each source frame and samples it
   with **bilinear** interpolation (border replicate),
2. grades the sample with a 3D LUT using **tetrahedral** interpolation
   (the 6-tetrahedra split by ordering of the fractional parts, as in Resolve and
   ffmpeg ``lut3d=interp=tetrahedral``),
3. dissolves source A into source B with weight ``blend_b``,
4. fades the result toward ``fade_rgb`` by ``fade_amount``,
5. rounds to ``uint8``,
6. (:func:`render_frame_i420` only) converts to the encoder's pixel format, I420
   (``yuv420p``, BT.709 limited range), in the same pass: rows are rendered in pairs
   and each pair is converted while it is still in L1.

Conventions (shared with the rest of stylecast)
-----------------------------------------------
- Frames are ``uint8`` ``(H, W, 3)`` RGB.
- Integer pixel coordinates are pixel *centres* (OpenCV convention); ``(x, y)`` is
  (column, row).
- A 3D LUT is float32 ``(N, N, N, 3)`` in 0..1 indexed ``lut[r, g, b, channel]``, grid
  point ``i`` sits at value ``i / (N - 1)``.
- ``inv_affine`` is a ``(2, 3)`` matrix mapping an OUTPUT pixel centre ``(x, y, 1)`` to
  the SOURCE position ``(x_src, y_src)`` that is sampled there.
- I420 is ``uint8`` ``(H * 3 // 2, W)``, H and W even: the Y plane (H rows), then the
  U plane and the V plane, each ``(H/2) x (W/2)`` values row-major, as
  ``av.VideoFrame.from_ndarray(i420, format="yuv420p")`` takes it.  BT.709, limited
  range; chroma is the mean of each 2x2 block (sited at the block centre, as
  swscale's ``AREA`` downsampling).  Encoders must tag the stream BT.709 / tv range.

The maths per output pixel (colours in 0..1)::

    c = (1 - blend_b) * LUT_a(bilinear(src_a, A_a @ [x, y, 1]))
        + blend_b     * LUT_b(bilinear(src_b, A_b @ [x, y, 1]))
    c = (1 - fade_amount) * c + fade_amount * fade_rgb
    out = clip(round(c * 255), 0, 255)

When ``blend_b == 0`` source B is not sampled at all, when ``blend_b == 1`` source A is
not sampled.  ``render_frame_i420(...) == rgb_to_i420(render_frame(...))`` bit for bit,
and ``parallel=True`` / ``False`` give identical frames (see ``_JIT_OPTIONS``).
The jitted cores work in float32 (the YUV conversion in fixed point) and are free of
Python objects, so they run without the GIL and can be called from threads or Ray
actors; with ``parallel=False`` they are plain serial code that never touches
Numba's threading layer (for callers that run several workers as Python threads).
Numba caches the compiled machine code next to this module (``cache=True``); call
:func:`warmup` once per process to pay the compile / cache-load cost up front.

Performance (1080p output, one thread of a shared 2-core AVX-512 machine, 33^3 LUT,
best of 15; +-10% from run to run): colour-only frame (identity warp) 17.5-18 ms,
zoom 1.25 + rotate 7 deg 20-22 ms, dissolve of two warped sources ~37 ms; some 30x
the same work composed from ``cv2.warpAffine`` + a numpy trilinear LUT +
``cv2.addWeighted`` (``bench/bench_kernels.py``).  :func:`render_frame_i420` adds
~1 ms for the conversion (on the row pair still in L1; :func:`rgb_to_i420` alone
takes 0.9 ms), where handing RGB to PyAV costs 4-8 ms of swscale rgb24->yuv420p:
render + conversion went from 27.3 to 19.8 ms (colour-only), 32.5 to 24.9 ms
(zoom/rotate) and 49.5 to 37.9 ms (dissolve).  Bit-identical results across
variants (no reassociation, explicit FMAs) cost ~3% against free fast-math.
``parallel=True`` splits rows (row pairs) over Numba's threads
(``numba.set_num_threads`` bounds them); ``parallel=False`` is as fast on one thread,
and two Python threads calling it render 2.1x the frames of one.
"""

from __future__ import annotations

import math
import platform
from types import FunctionType

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.core.extending import intrinsic

__all__ = [
    "render_frame",
    "render_frame_i420",
    "rgb_to_i420",
    "lut_apply",
    "identity_lut",
    "affine_for",
    "warmup",
]

# Fast-math WITHOUT "reassoc" and "contract": those let LLVM reorder / fuse float
# operations differently in each compiled loop (vector body vs remainder, parallel vs
# serial variant, RGB vs I420 kernel), and results then differ by a rounding tie here
# and there.  Without them every kernel computes every pixel bit-identically, and the
# hot expressions get their FMAs explicitly (_fma).
_JIT_OPTIONS = dict(cache=True, fastmath={"nnan", "ninf", "nsz"}, error_model="numpy", boundscheck=False,
                    nogil=True)


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
# - Rows are shaded tile by tile into a scratch buffer on the stack (see _TILE).
# - The serial variants are compiled without NRT (see _serial_variant).
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


def _target_has_fma() -> bool:
    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    try:
        features = numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        return False
    return "+fma" in features.split(",")


_HAS_FMA = _target_has_fma()


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 ``a * b + c``: one fused multiply-add (rounded once) where the CPU has
    the instruction, else a multiply and an add (without FMA hardware, ``llvm.fma``
    would be a slow library call).  Same result wherever it is compiled."""
    if not (a == b == c == types.float32):
        return None
    sig = types.float32(a, b, c)

    def codegen(context, builder, signature, args):
        x, y, z = args
        if _HAS_FMA:
            f32 = ir.FloatType()
            return builder.call(builder.module.declare_intrinsic("llvm.fma", [f32, f32, f32]), [x, y, z])
        return builder.fadd(builder.fmul(x, y), z)

    return sig, codegen


@numba.njit(inline="always", **_JIT_OPTIONS)
def _tetra_cell(n, a, b, c):
    """The tetrahedron of a 3D LUT holding a point given in grid units (0..n-1) per axis.

    For a C-contiguous ``(n, n, n, 3)`` LUT flattened to 1-D, returns the item offsets of its four
    vertices (channel 0) and their weights: ``(o0, o1, o2, o3, w0, w1, w2, w3)``.
    """
    nm2 = n - 2
    # a, b, c >= 0 up to rounding; truncation then equals floor.
    ai = min(np.int64(a), nm2)
    bi = min(np.int64(b), nm2)
    ci = min(np.int64(c), nm2)
    fa = a - np.float32(ai)
    fb = b - np.float32(bi)
    fc = c - np.float32(ci)
    step_c = np.int64(3)
    step_b = 3 * n
    step_a = 3 * n * n
    base = ai * step_a + bi * step_b + ci * step_c

    # The tetrahedron containing the point walks from corner 000 along the axis with
    # the largest fraction (o1), then the middle one (o2 = 111 minus the axis with the
    # smallest fraction), to corner 111.  Ties pick any axis: their weight is 0.
    f_hi = max(fa, max(fb, fc))
    f_lo = min(fa, min(fb, fc))
    f_mid = (fa + fb + fc) - f_hi - f_lo
    s_hi = step_a if (fa >= fb) & (fa >= fc) else (step_b if fb >= fc else step_c)
    s_lo = step_c if (fc <= fb) & (fc <= fa) else (step_b if fb <= fa else step_a)
    o3 = base + (step_a + step_b + step_c)
    o1 = base + s_hi
    o2 = o3 - s_lo
    return base, o1, o2, o3, np.float32(1.0) - f_hi, f_hi - f_mid, f_mid - f_lo, f_lo


@numba.njit(inline="always", **_JIT_OPTIONS)
def _tetra(lut_flat, n, r, g, b):
    """Tetrahedral LUT lookup of one colour given in LUT *grid units* (0..n-1).

    ``lut_flat`` is the C-contiguous ``(n, n, n, 3)`` float32 LUT flattened to 1-D.
    Returns the three interpolated channels (float32, LUT units).
    """
    base, o1, o2, o3, w0, w1, w2, w3 = _tetra_cell(n, r, g, b)
    c0 = (_fma(w1, lut_flat[_U(o1)], w0 * lut_flat[_U(base)])
          + _fma(w3, lut_flat[_U(o3)], w2 * lut_flat[_U(o2)]))
    c1 = (_fma(w1, lut_flat[_U(o1 + 1)], w0 * lut_flat[_U(base + 1)])
          + _fma(w3, lut_flat[_U(o3 + 1)], w2 * lut_flat[_U(o2 + 1)]))
    c2 = (_fma(w1, lut_flat[_U(o1 + 2)], w0 * lut_flat[_U(base + 2)])
          + _fma(w3, lut_flat[_U(o3 + 2)], w2 * lut_flat[_U(o2 + 2)]))
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
    v0 = (_fma(w01, np.float32(p01 & m), w00 * np.float32(p00 & m))
          + _fma(w11, np.float32(p11 & m), w10 * np.float32(p10 & m)))
    v1 = (_fma(w01, np.float32((p01 >> s8) & m), w00 * np.float32((p00 >> s8) & m))
          + _fma(w11, np.float32((p11 >> s8) & m), w10 * np.float32((p10 >> s8) & m)))
    v2 = (_fma(w01, np.float32((p01 >> s16) & m), w00 * np.float32((p00 >> s16) & m))
          + _fma(w11, np.float32((p11 >> s16) & m), w10 * np.float32((p10 >> s16) & m)))
    return v0, v1, v2


@numba.njit(inline="always", **_JIT_OPTIONS)
def _store_rgb(out_flat, o, r, g, b):
    """Clip float32 (already +0.5) to 0..255 and truncate, i.e. round half up."""
    zero = np.float32(0.0)
    top = np.float32(255.0)
    out_flat[_U(o)] = np.uint8(np.int32(min(max(r, zero), top)))
    out_flat[_U(o + 1)] = np.uint8(np.int32(min(max(g, zero), top)))
    out_flat[_U(o + 2)] = np.uint8(np.int32(min(max(b, zero), top)))


# Rows are shaded in tiles of _TILE pixels into a scratch buffer on the STACK (in L1),
# then copied (RGB) or converted (I420) to the output.  The stack buffer is what lets
# LLVM vectorise the serial variants too: it can prove that stores to a non-escaping
# alloca never alias the source / LUT reads, which for arrays passed in it can only
# assume when the function's pointer arguments are ``noalias`` (Numba sets that on
# parfor bodies only).
_TILE = 256
_SCRATCH_BYTES = 2 * 3 * _TILE  # two rows of one tile, RGB
_SUMS_ITEMS = 3 * _TILE  # vertical R, G, B sums of a row pair in one tile (I420 chroma)


def _stack_array_intrinsic(dtype):
    """An intrinsic ``f(n)``: 1-D C array of ``n`` (a compile-time constant) uninitialised
    ``dtype`` items on the STACK, allocated once in the entry block of the calling
    function: one per call, so one per thread in a parfor body.  Must not outlive the
    function (never return or store it)."""

    @intrinsic
    def stack_array(typingctx, nitems):
        if not isinstance(nitems, types.IntegerLiteral):
            return None
        size = nitems.literal_value
        array_type = types.Array(dtype, 1, "C")
        sig = array_type(nitems)

        def codegen(context, builder, signature, args):
            item = context.get_data_type(dtype)
            with builder.goto_entry_block():
                buf = builder.alloca(ir.ArrayType(item, size))
                buf.align = 64
            ary = context.make_array(array_type)(context, builder)
            intp = context.get_value_type(types.intp)
            itemsize = context.get_abi_sizeof(item)
            context.populate_array(ary, data=builder.bitcast(buf, item.as_pointer()),
                                   shape=[ir.Constant(intp, size)], strides=[ir.Constant(intp, itemsize)],
                                   itemsize=ir.Constant(intp, itemsize), meminfo=None)
            return ary._getvalue()

        return sig, codegen

    return stack_array


_stack_u8 = _stack_array_intrinsic(types.uint8)
_stack_u16 = _stack_array_intrinsic(types.uint16)


@numba.njit(inline="always", **_JIT_OPTIONS)
def _shade_one(dst, at, y, x0, count, src, h, w, aff, lut, n, weight, add_r, add_g, add_b):
    """Pixels ``x0 .. x0 + count - 1`` of output row ``y`` from one source, RGB uint8 into
    ``dst[at:at + 3 * count]``: ``weight * LUT(warp(src)) + add`` (add includes the +0.5
    of the rounding)."""
    scale = np.float32(n - 1) / np.float32(255.0)
    fy = np.float32(y)
    # The affine is linear: per row the source position starts at (x_start, y_start)
    # and advances by (a00, a10) per output pixel.
    a00 = aff[0]
    a10 = aff[3]
    x_start = _fma(aff[1], fy, aff[2])
    y_start = _fma(aff[4], fy, aff[5])
    for i in range(count):
        fx = np.float32(x0 + i)
        v0, v1, v2 = _bilinear(src, w, h, _fma(a00, fx, x_start), _fma(a10, fx, y_start))
        c0, c1, c2 = _tetra(lut, n, v0 * scale, v1 * scale, v2 * scale)
        _store_rgb(dst, at + 3 * i, _fma(weight, c0, add_r), _fma(weight, c1, add_g), _fma(weight, c2, add_b))


@numba.njit(inline="always", **_JIT_OPTIONS)
def _shade_one_unwarped(dst, at, y, x0, count, src, w, lut, n, weight, add_r, add_g, add_b):
    """:func:`_shade_one` when the warp is the identity and the source has the output's
    size: pixel (x, y) is read as it is, no bilinear taps (4 gathers fewer per pixel).
    Bit-identical to the warped path: at integer positions the bilinear weights are
    exactly (1, 0, 0, 0)."""
    scale = np.float32(n - 1) / np.float32(255.0)
    row = 3 * (y * w + x0)
    for i in range(count):
        o = row + 3 * i
        c0, c1, c2 = _tetra(lut, n, np.float32(src[_U(o)]) * scale, np.float32(src[_U(o + 1)]) * scale,
                            np.float32(src[_U(o + 2)]) * scale)
        _store_rgb(dst, at + 3 * i, _fma(weight, c0, add_r), _fma(weight, c1, add_g), _fma(weight, c2, add_b))


@numba.njit(inline="always", **_JIT_OPTIONS)
def _shade_two(dst, at, y, x0, count,
               src_a, ha, wa, aff_a, lut_a, na,
               src_b, hb, wb, aff_b, lut_b, nb,
               weight_a, weight_b, add_r, add_g, add_b):
    """As :func:`_shade_one` for two sources: ``wa * LUT_a(warp_a(a)) + wb * LUT_b(warp_b(b)) + add``."""
    scale_a = np.float32(na - 1) / np.float32(255.0)
    scale_b = np.float32(nb - 1) / np.float32(255.0)
    fy = np.float32(y)
    a00 = aff_a[0]
    a10 = aff_a[3]
    b00 = aff_b[0]
    b10 = aff_b[3]
    ax_start = _fma(aff_a[1], fy, aff_a[2])
    ay_start = _fma(aff_a[4], fy, aff_a[5])
    bx_start = _fma(aff_b[1], fy, aff_b[2])
    by_start = _fma(aff_b[4], fy, aff_b[5])
    for i in range(count):
        fx = np.float32(x0 + i)
        v0, v1, v2 = _bilinear(src_a, wa, ha, _fma(a00, fx, ax_start), _fma(a10, fx, ay_start))
        c0, c1, c2 = _tetra(lut_a, na, v0 * scale_a, v1 * scale_a, v2 * scale_a)
        u0, u1, u2 = _bilinear(src_b, wb, hb, _fma(b00, fx, bx_start), _fma(b10, fx, by_start))
        d0, d1, d2 = _tetra(lut_b, nb, u0 * scale_b, u1 * scale_b, u2 * scale_b)
        _store_rgb(dst, at + 3 * i,
                   _fma(weight_b, d0, _fma(weight_a, c0, add_r)),
                   _fma(weight_b, d1, _fma(weight_a, c1, add_g)),
                   _fma(weight_b, d2, _fma(weight_a, c2, add_b)))


@numba.njit(inline="always", **_JIT_OPTIONS)
def _copy_bytes(src, src_at, dst, dst_at, count):
    for i in range(count):
        dst[_U(dst_at + i)] = src[_U(src_at + i)]


# BT.709 limited ("tv") range, R'G'B' 0..255 -> Y 16..235, Cb/Cr 16..240, in fixed point
# with _Q fraction bits: exact integer arithmetic, identical in every kernel.  With
# 0..255 inputs the results stay inside 16..240 by construction (the chroma weights of
# each row sum to exactly 0), so no clipping is needed; every intermediate stays below
# 2^31 in magnitude.  Chroma takes the SUM of a 2x2 block, so its weights are a quarter.
_Q = 22
_KY = 219.0 / 255.0
_KCB = 224.0 / 255.0 / 1.8556
_KCR = 224.0 / 255.0 / 1.5748
_Y_R = round(_KY * 0.2126 * 2 ** _Q)
_Y_G = round(_KY * 0.7152 * 2 ** _Q)
_Y_B = round(_KY * 0.0722 * 2 ** _Q)
_CB_R = round(-_KCB * 0.2126 * 2 ** _Q / 4)
_CB_G = round(-_KCB * 0.7152 * 2 ** _Q / 4)
_CB_B = -(_CB_R + _CB_G)  # = round(_KCB * (1 - 0.0722) * 2**_Q / 4): grey -> exactly 128
_CR_G = round(-_KCR * 0.7152 * 2 ** _Q / 4)
_CR_B = round(-_KCR * 0.0722 * 2 ** _Q / 4)
_CR_R = -(_CR_G + _CR_B)  # = round(_KCR * (1 - 0.2126) * 2**_Q / 4)
_Y_ADD = int(16.5 * 2 ** _Q)  # offset + 0.5: the shift then rounds half up
_C_ADD = int(128.5 * 2 ** _Q)


@intrinsic
def _fixed_dot3_u8(typingctx, a, b, c, ka, kb, kc, offset):
    """``uint8((ka * a + kb * b + kc * c + offset) >> _Q)`` in 32-bit integer arithmetic.

    Numba widens integer arithmetic to 64 bits, which halves the vector width; the
    caller guarantees that every partial sum fits in int32 (see the constants).
    """
    sig = types.uint8(a, b, c, ka, kb, kc, offset)
    i32 = ir.IntType(32)

    def codegen(context, builder, signature, args):
        def as_i32(value, ty):
            width = value.type.width
            if width > 32:
                return builder.trunc(value, i32)
            if width < 32:
                return builder.sext(value, i32) if ty.signed else builder.zext(value, i32)
            return value

        va, vb, vc, vka, vkb, vkc, voff = (as_i32(v, t) for v, t in zip(args, signature.args))
        acc = builder.add(builder.mul(vka, va), voff)
        acc = builder.add(acc, builder.mul(vkb, vb))
        acc = builder.add(acc, builder.mul(vkc, vc))
        return builder.trunc(builder.ashr(acc, ir.Constant(i32, _Q)), ir.IntType(8))

    return sig, codegen


@numba.njit(inline="always", **_JIT_OPTIONS)
def _rgb_rows_to_i420(rgb, top, bottom, out, y_top, y_bottom, u_at, v_at, count, sums):
    """``count`` (even) pixels of two RGB rows (interleaved uint8 at byte offsets
    ``top``/``bottom`` of ``rgb``) into I420: ``count`` luma values at ``out[y_top:]``
    and at ``out[y_bottom:]``, ``count / 2`` Cb values at ``out[u_at:]`` and Cr values
    at ``out[v_at:]``.  ``sums`` is uint16 scratch of ``3 * _TILE`` items, count <= _TILE.

    Two simple loops rather than one over 2x2 blocks: stride-3 byte loads and stride-2
    loads are vectorised with shuffles, the 6-byte stride of a block would need gathers.
    """
    for x in range(count):
        t = top + 3 * x
        b = bottom + 3 * x
        rt = rgb[_U(t)]
        gt = rgb[_U(t + 1)]
        bt = rgb[_U(t + 2)]
        rb = rgb[_U(b)]
        gb = rgb[_U(b + 1)]
        bb = rgb[_U(b + 2)]
        out[_U(y_top + x)] = _fixed_dot3_u8(rt, gt, bt, _Y_R, _Y_G, _Y_B, _Y_ADD)
        out[_U(y_bottom + x)] = _fixed_dot3_u8(rb, gb, bb, _Y_R, _Y_G, _Y_B, _Y_ADD)
        # Vertical sums of the pair, planar.
        sums[_U(x)] = np.uint16(rt) + np.uint16(rb)
        sums[_U(_TILE + x)] = np.uint16(gt) + np.uint16(gb)
        sums[_U(2 * _TILE + x)] = np.uint16(bt) + np.uint16(bb)
    for i in range(count // 2):
        sr = sums[_U(2 * i)] + sums[_U(2 * i + 1)]
        sg = sums[_U(_TILE + 2 * i)] + sums[_U(_TILE + 2 * i + 1)]
        sb = sums[_U(2 * _TILE + 2 * i)] + sums[_U(2 * _TILE + 2 * i + 1)]
        out[_U(u_at + i)] = _fixed_dot3_u8(sr, sg, sb, _CB_R, _CB_G, _CB_B, _C_ADD)
        out[_U(v_at + i)] = _fixed_dot3_u8(sr, sg, sb, _CR_R, _CR_G, _CR_B, _C_ADD)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_one(out_flat, out_h, out_w, src, h, w, aff, lut, n, weight, add_r, add_g, add_b):
    """One source, RGB output: ``out = weight * LUT(warp(src)) + add``."""
    for y in prange(out_h):
        tile = _stack_u8(_SCRATCH_BYTES)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            _shade_one(tile, 0, y, x0, count, src, h, w, aff, lut, n, weight, add_r, add_g, add_b)
            _copy_bytes(tile, 0, out_flat, 3 * (y * out_w + x0), 3 * count)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_two(out_flat, out_h, out_w,
                src_a, ha, wa, aff_a, lut_a, na,
                src_b, hb, wb, aff_b, lut_b, nb,
                weight_a, weight_b, add_r, add_g, add_b):
    """Two sources, RGB output: ``out = wa * LUT_a(warp_a(a)) + wb * LUT_b(warp_b(b)) + add``."""
    for y in prange(out_h):
        tile = _stack_u8(_SCRATCH_BYTES)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            _shade_two(tile, 0, y, x0, count,
                       src_a, ha, wa, aff_a, lut_a, na, src_b, hb, wb, aff_b, lut_b, nb,
                       weight_a, weight_b, add_r, add_g, add_b)
            _copy_bytes(tile, 0, out_flat, 3 * (y * out_w + x0), 3 * count)


# The I420 cores work on row PAIRS: per tile, shade the two RGB rows into the stack
# scratch (in L1), then convert them (4 luma values + 1 Cb + 1 Cr per 2x2 block).
# _TILE and W are even, so a tile never splits a 2x2 block.
@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_one_i420(out_flat, out_h, out_w, src, h, w, aff, lut, n, weight, add_r, add_g, add_b):
    half_w = out_w // 2
    u_plane = out_h * out_w
    v_plane = u_plane + (out_h // 2) * half_w
    for p in prange(out_h // 2):
        tile = _stack_u8(_SCRATCH_BYTES)
        sums = _stack_u16(_SUMS_ITEMS)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            _shade_one(tile, 0, 2 * p, x0, count, src, h, w, aff, lut, n, weight, add_r, add_g, add_b)
            _shade_one(tile, 3 * _TILE, 2 * p + 1, x0, count, src, h, w, aff, lut, n,
                       weight, add_r, add_g, add_b)
            _rgb_rows_to_i420(tile, 0, 3 * _TILE, out_flat,
                              2 * p * out_w + x0, (2 * p + 1) * out_w + x0,
                              u_plane + p * half_w + x0 // 2, v_plane + p * half_w + x0 // 2, count, sums)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_one_i420_unwarped(out_flat, out_h, out_w, src, h, w, aff, lut, n, weight, add_r, add_g, add_b):
    """:func:`_render_one_i420` for an identity warp of a same-size source (a colour-only frame)."""
    half_w = out_w // 2
    u_plane = out_h * out_w
    v_plane = u_plane + (out_h // 2) * half_w
    for p in prange(out_h // 2):
        tile = _stack_u8(_SCRATCH_BYTES)
        sums = _stack_u16(_SUMS_ITEMS)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            _shade_one_unwarped(tile, 0, 2 * p, x0, count, src, w, lut, n, weight, add_r, add_g, add_b)
            _shade_one_unwarped(tile, 3 * _TILE, 2 * p + 1, x0, count, src, w, lut, n,
                                weight, add_r, add_g, add_b)
            _rgb_rows_to_i420(tile, 0, 3 * _TILE, out_flat,
                              2 * p * out_w + x0, (2 * p + 1) * out_w + x0,
                              u_plane + p * half_w + x0 // 2, v_plane + p * half_w + x0 // 2, count, sums)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _render_two_i420(out_flat, out_h, out_w,
                     src_a, ha, wa, aff_a, lut_a, na,
                     src_b, hb, wb, aff_b, lut_b, nb,
                     weight_a, weight_b, add_r, add_g, add_b):
    half_w = out_w // 2
    u_plane = out_h * out_w
    v_plane = u_plane + (out_h // 2) * half_w
    for p in prange(out_h // 2):
        tile = _stack_u8(_SCRATCH_BYTES)
        sums = _stack_u16(_SUMS_ITEMS)
        for x0 in range(0, out_w, _TILE):
            count = min(_TILE, out_w - x0)
            _shade_two(tile, 0, 2 * p, x0, count,
                       src_a, ha, wa, aff_a, lut_a, na, src_b, hb, wb, aff_b, lut_b, nb,
                       weight_a, weight_b, add_r, add_g, add_b)
            _shade_two(tile, 3 * _TILE, 2 * p + 1, x0, count,
                       src_a, ha, wa, aff_a, lut_a, na, src_b, hb, wb, aff_b, lut_b, nb,
                       weight_a, weight_b, add_r, add_g, add_b)
            _rgb_rows_to_i420(tile, 0, 3 * _TILE, out_flat,
                              2 * p * out_w + x0, (2 * p + 1) * out_w + x0,
                              u_plane + p * half_w + x0 // 2, v_plane + p * half_w + x0 // 2, count, sums)


@numba.njit(parallel=True, **_JIT_OPTIONS)
def _rgb_to_i420_core(rgb_flat, out_flat, h, w):
    half_w = w // 2
    u_plane = h * w
    v_plane = u_plane + (h // 2) * half_w
    for p in prange(h // 2):
        sums = _stack_u16(_SUMS_ITEMS)
        for x0 in range(0, w, _TILE):
            _rgb_rows_to_i420(rgb_flat, 3 * (2 * p * w + x0), 3 * ((2 * p + 1) * w + x0), out_flat,
                              2 * p * w + x0, (2 * p + 1) * w + x0,
                              u_plane + p * half_w + x0 // 2, v_plane + p * half_w + x0 // 2,
                              min(_TILE, w - x0), sums)


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
            _store_rgb(out_flat, i, _fma(c0, k, half), _fma(c1, k, half), _fma(c2, k, half))


def _serial_variant(core):
    """``core`` compiled WITHOUT ``parallel=True``: plain serial code (prange acts as
    range) that never enters Numba's threading layer, for callers that run several
    render workers as Python threads.

    The clone gets its own qualified name because Numba's on-disk cache keys a function
    by file + qualified name + signature + bytecode, not by the ``parallel`` flag: the
    serial and the parallel compilation of one function would load each other's code.

    It is compiled without NRT (``_nrt=False``; the cores allocate nothing): with NRT,
    the inlined helpers leave reference-count calls in the inner loop when LLVM's
    vectoriser sees it ("call instruction cannot be vectorized"), the loop stays
    scalar and the kernel is 3x slower.  The parfor bodies of the parallel variants
    vectorise as they are.
    """
    fn = core.py_func
    clone = FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                         fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_serial"
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return numba.njit(_nrt=False, **_JIT_OPTIONS)(clone)


# parallel core -> its serial variant
_SERIAL = {core: _serial_variant(core)
           for core in (_render_one, _render_two, _render_one_i420, _render_one_i420_unwarped, _render_two_i420,
                        _rgb_to_i420_core)}


def _variant(core, parallel: bool):
    return core if parallel else _SERIAL[core]


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
def _prepare(src_a, inv_affine_a, lut_a, src_b, inv_affine_b, lut_b, blend_b, fade_rgb, fade_amount):
    """Validate the sources and weights of a render.  Returns ``(kind, args)``: kind
    "one" or "two" (sources sampled), args the core arguments after the output ones."""
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
    add = tuple(np.float32(v) for v in fade_amount * fade * 255.0 + 0.5)

    def source(src, aff, lut):
        return (src.reshape(-1), np.int64(src.shape[0]), np.int64(src.shape[1]),
                aff, lut.reshape(-1), np.int64(lut.shape[0]))

    if use_a and use_b:
        return "two", (source(src_a, aff_a, lut_a) + source(src_b, aff_b, lut_b)
                       + (np.float32(keep * (1.0 - blend_b)), np.float32(keep * blend_b)) + add)
    one = source(src_a, aff_a, lut_a) if use_a else source(src_b, aff_b, lut_b)
    return "one", one + (np.float32(keep),) + add


def render_frame(out: np.ndarray,
                 src_a: np.ndarray,
                 inv_affine_a,
                 lut_a: np.ndarray,
                 src_b: np.ndarray | None = None,
                 inv_affine_b=None,
                 lut_b: np.ndarray | None = None,
                 blend_b: float = 0.0,
                 fade_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 fade_amount: float = 0.0,
                 *,
                 parallel: bool = True) -> np.ndarray:
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
    parallel : bool, keyword-only
        True: rows are split over Numba's threads.  False: serial compiled code that
        never enters Numba's threading layer (for callers that parallelise with their
        own Python threads; the kernel releases the GIL either way).

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
    kind, args = _prepare(src_a, inv_affine_a, lut_a, src_b, inv_affine_b, lut_b,
                          blend_b, fade_rgb, fade_amount)
    target = out if out.flags.c_contiguous else np.empty(out.shape, np.uint8)
    core = _variant(_render_two if kind == "two" else _render_one, parallel)
    core(target.reshape(-1), np.int64(out.shape[0]), np.int64(out.shape[1]), *args)
    if target is not out:
        out[...] = target
    return out


def _check_i420_out(out) -> tuple[int, int]:
    """(H, W) of a valid I420 output buffer ``(H * 3 // 2, W)``."""
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 2:
        desc = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a uint8 array of shape (H * 3 // 2, W), got {desc}")
    rows, w = out.shape
    if rows % 3 or rows < 3 or w % 2 or w < 2:
        raise ValueError(f"out must have shape (H * 3 // 2, W) with H, W even and >= 2, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous (I420 planes are packed back to back)")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return rows // 3 * 2, w


def render_frame_i420(out: np.ndarray,
                      src_a: np.ndarray,
                      inv_affine_a,
                      lut_a: np.ndarray,
                      src_b: np.ndarray | None = None,
                      inv_affine_b=None,
                      lut_b: np.ndarray | None = None,
                      blend_b: float = 0.0,
                      fade_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0),
                      fade_amount: float = 0.0,
                      *,
                      parallel: bool = True) -> np.ndarray:
    """:func:`render_frame`, written straight to the encoder's pixel format (I420).

    Same arguments, semantics and validation as :func:`render_frame`, except ``out``:

    out : np.ndarray, uint8, C-contiguous, shape (H * 3 // 2, W), H and W even, >= 2
        I420 (``yuv420p``) as ``av.VideoFrame.from_ndarray(out, format="yuv420p")``
        takes it: rows ``0..H-1`` are the Y plane; the remaining ``H / 2`` rows hold
        the U (Cb) plane, ``(H/2) x (W/2)`` values row-major, then the V (Cr) plane.

    The result is bit-identical to ``rgb_to_i420(render_frame(...))`` (BT.709,
    limited range, see :func:`rgb_to_i420`): each row pair is rendered to RGB uint8 by
    the same per-pixel code, then converted in the same pass.
    """
    h, w = _check_i420_out(out)
    kind, args = _prepare(src_a, inv_affine_a, lut_a, src_b, inv_affine_b, lut_b,
                          blend_b, fade_rgb, fade_amount)
    if kind == "two":
        core = _render_two_i420
    elif _is_unwarped(args, h, w):
        core = _render_one_i420_unwarped
    else:
        core = _render_one_i420
    _variant(core, parallel)(out.reshape(-1), np.int64(h), np.int64(w), *args)
    return out


_IDENTITY_AFFINE = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)


def _is_unwarped(one_args, out_h: int, out_w: int) -> bool:
    """True when a one-source render samples pixel (x, y) at exactly (x, y) of a same-size source."""
    _, src_h, src_w, aff = one_args[:4]
    return src_h == out_h and src_w == out_w and bool(np.array_equal(aff, _IDENTITY_AFFINE))


def rgb_to_i420(rgb: np.ndarray, out: np.ndarray | None = None, *, parallel: bool = True) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> I420 uint8 ``(H * 3 // 2, W)``, BT.709 limited range.

    ``Y = 16 + 219 * Y' / 255`` with ``Y' = 0.2126 R + 0.7152 G + 0.0722 B``,
    ``Cb = 128 + 224 * (B - Y') / 1.8556 / 255``, ``Cr = 128 + 224 * (R - Y') / 1.5748 / 255``
    (R, G, B in 0..255); Cb/Cr of each 2x2 block from the mean RGB of its four pixels
    (chroma sited at the block centre).  Rounded half up.  Y lands in 16..235 and
    Cb/Cr in 16..240 by construction, so nothing needs clipping.  Computed in fixed
    point (22 fraction bits, error < 0.0005 code before rounding): it can differ from
    the exactly rounded value, by 1, only where that value lies within 0.0005 of a
    .5 tie.

    H and W must be even (4:2:0).  ``out`` as in :func:`render_frame_i420` (a new array
    when None); ``parallel`` as in :func:`render_frame`.  Returns ``out``.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"rgb must be a uint8 array of shape (H, W, 3), got {desc}")
    h, w = rgb.shape[:2]
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"rgb must have even H and W (>= 2) for 4:2:0, got shape {rgb.shape}")
    if out is None:
        out = np.empty((h * 3 // 2, w), np.uint8)
    if _check_i420_out(out) != (h, w):
        raise ValueError(f"out shape {out.shape} does not match rgb shape {rgb.shape}: "
                         f"expected {(h * 3 // 2, w)}")
    _variant(_rgb_to_i420_core, parallel)(np.ascontiguousarray(rgb).reshape(-1), out.reshape(-1),
                                         np.int64(h), np.int64(w))
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
    """Compile (or load from Numba's cache) every jitted core, parallel and serial
    variants, using tiny arrays."""
    src = np.zeros((4, 5, 3), np.uint8)
    out = np.zeros((2, 4, 3), np.uint8)
    yuv = np.zeros((3, 4), np.uint8)
    lut = identity_lut(2)
    aff = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for parallel in (True, False):
        render_frame(out, src, aff, lut, parallel=parallel)
        render_frame(out, src, aff, lut, src, aff, lut, blend_b=0.5, fade_amount=0.25, parallel=parallel)
        render_frame_i420(yuv, src, aff, lut, parallel=parallel)
        render_frame_i420(yuv, np.ascontiguousarray(src[:2, :4]), aff, lut, parallel=parallel)  # unwarped
        render_frame_i420(yuv, src, aff, lut, src, aff, lut, blend_b=0.5, fade_amount=0.25,
                          parallel=parallel)
        rgb_to_i420(out, yuv, parallel=parallel)
    lut_apply(src, lut)
