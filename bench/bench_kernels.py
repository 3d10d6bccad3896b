"""Benchmark: fused render kernel vs the same work composed from OpenCV + numpy.

Usage::

    python bench/bench_kernels.py [--frames N] [--json PATH]

Work per output frame (1920x1080), the typical frame of a render: a 1080p natural frame A warped by a
rotation + zoom affine with bilinear sampling (border replicate), graded by a 33^3 LUT and blended
(a fade, 30% towards black).  Measured side by side in one run:

(a) fused kernel, 1 Numba thread          -> Mpx/s per core
(b) fused kernel, all Numba threads
(c) composed, 1 OpenCV thread: ``cv2.warpAffine`` + numpy trilinear LUT + ``cv2.addWeighted``

and the worst case, a dissolve frame (two sources, each warped and graded, blended 60/40) — fused vs
``cv2.warpAffine`` x2 + numpy LUT x2 + ``cv2.addWeighted``.

What the renderer feeds x264 (I420), 1 thread each: the fused kernel writing I420 in the same pass
(``render_frame_i420``) vs the RGB kernel followed by swscale's rgb24 -> yuv420p (the earlier renderer),
for the typical frame and for a colour-only frame (identity warp of a same-size source: the unwarped path).

What the render does per decoded frame (1 thread each), from the decoder's YUV 4:2:0: the earlier path,
swscale yuv420p -> rgb24 then the RGB kernel writing I420, vs the YUV kernel (``kernels/render_yuv.py``,
65^3 YUV LUT) reading the planes directly, for the typical and the colour-only frame.

Targets (typical frame): (a) >= 60 Mpx/s per core and (a) >= 1.5x (c).  Times are wall-clock; the
best and the median over ``--frames`` renders are reported (best is the figure least
disturbed by other processes on a shared machine).  Also prints the CPU time per
frame of (a), which is robust to a busy machine.  This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numba  # noqa: E402

from kernels.render import affine_for, identity_lut, render_frame, render_frame_i420, rgb_to_i420, warmup  # noqa: E402
from kernels.render_yuv import render_frame_i420_yuv, yuv_lut  # noqa: E402
from kernels.render_yuv import warmup as warmup_yuv  # noqa: E402

try:
    import cv2
except ImportError:  # pragma: no cover - opencv is a dependency, but keep the script usable
    cv2 = None

OUT_W, OUT_H = 1920, 1080
MEDIA = REPO.parent / "shared" / "media"
BLEND_B = 0.4


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[1] == size[0] and frame.shape[0] == size[1]:
        return np.ascontiguousarray(frame)
    if cv2 is not None:
        return cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
    ys = np.linspace(0, frame.shape[0] - 1, size[1]).round().astype(int)
    xs = np.linspace(0, frame.shape[1] - 1, size[0]).round().astype(int)
    return np.ascontiguousarray(frame[ys][:, xs])


def natural_frames() -> tuple[np.ndarray, np.ndarray, str]:
    """Two different 1080p RGB frames from a real clip, or procedural ones."""
    for name in ("pyscenedetect/testvideo.mp4", "pyscenedetect/counter.mp4", "bikes.mp4"):
        path = MEDIA / name
        if not path.exists():
            continue
        try:
            import av

            frames = []
            with av.open(str(path)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in (5, 60):
                        frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) == 2:
                        break
            if len(frames) == 2:
                a, b = (_resize(f, (OUT_W, OUT_H)) for f in frames)
                return a, b, f"{name} frames 5 and 60, resized to {OUT_W}x{OUT_H}"
        except Exception as exc:  # noqa: BLE001 - fall back to procedural frames
            print(f"note: could not decode {path}: {exc}", file=sys.stderr)
    a = procedural_frame(1)
    b = procedural_frame(2)
    return a, b, "procedural textured frames"


def procedural_frame(seed: int) -> np.ndarray:
    """Natural-looking 1080p frame: smooth colour gradients + multi-scale texture + edges."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:OUT_H, 0:OUT_W].astype(np.float32)
    base = np.stack([0.5 + 0.4 * np.sin(xs / (300 + 80 * k) + ys / (500 - 60 * k) + rng.uniform(0, 6))
                     for k in range(3)], axis=-1)
    texture = np.zeros((OUT_H, OUT_W), np.float32)
    for scale in (4, 16, 64):
        small = rng.normal(0, 1, (OUT_H // scale + 1, OUT_W // scale + 1)).astype(np.float32)
        texture += _resize(small, (OUT_W, OUT_H)) * (0.04 * np.sqrt(scale / 4))
    edges = ((xs // 240 + ys // 180) % 2).astype(np.float32) * 0.15
    frame = base + texture[..., None] + edges[..., None]
    return np.clip(frame * 255, 0, 255).astype(np.uint8)


def graded_lut(n: int = 33) -> np.ndarray:
    """A plausible grade: gentle S-curve, warm shift, a little saturation boost."""
    lut = identity_lut(n).astype(np.float64)
    luma = lut @ np.array([0.2126, 0.7152, 0.0722])
    sat = luma[..., None] + 1.2 * (lut - luma[..., None])
    s_curve = 0.5 - 0.5 * np.cos(np.pi * np.clip(sat, 0, 1))
    graded = 0.7 * s_curve + 0.3 * sat + np.array([0.03, 0.0, -0.03])
    return np.clip(graded, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------
# composed baseline
# --------------------------------------------------------------------------------------
def lut_trilinear_numpy(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Vectorised numpy trilinear 3D LUT on a uint8 RGB frame -> uint8."""
    n = lut.shape[0]
    p = rgb.reshape(-1, 3).astype(np.float32) * np.float32((n - 1) / 255.0)
    i = np.minimum(p.astype(np.int32), n - 2)
    f = p - i
    base = (i[:, 0] * n + i[:, 1]) * n + i[:, 2]
    flat = lut.reshape(-1, 3)
    fr, fg, fb = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    gr, gg, gb = 1 - fr, 1 - fg, 1 - fb
    acc = np.zeros(p.shape, np.float32)
    for dr, wr in ((0, gr), (1, fr)):
        for dg, wg in ((0, gg), (1, fg)):
            wrg = wr * wg
            for db, wb in ((0, gb), (1, fb)):
                acc += (wrg * wb) * flat[base + (dr * n * n + dg * n + db)]
    return np.clip(acc * 255 + 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


FADE = 0.3


def composed_typical(a, aff_a, lut, black):
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    wa = cv2.warpAffine(a, aff_a, (OUT_W, OUT_H), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(lut_trilinear_numpy(wa, lut), 1 - FADE, black, FADE, 0.0)


def composed(a, b, aff_a, aff_b, lut):
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    wa = cv2.warpAffine(a, aff_a, (OUT_W, OUT_H), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    wb = cv2.warpAffine(b, aff_b, (OUT_W, OUT_H), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(lut_trilinear_numpy(wa, lut), 1 - BLEND_B,
                           lut_trilinear_numpy(wb, lut), BLEND_B, 0.0)


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------
def time_it(fn, repeats: int) -> dict:
    fn()  # warm caches / first-touch
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    mpx = OUT_W * OUT_H / 1e6
    return {
        "best_ms": 1e3 * min(walls),
        "median_ms": 1e3 * statistics.median(walls),
        "best_cpu_ms": 1e3 * min(cpus),
        "mpx_per_s_best": mpx / min(walls),
        "mpx_per_s_median": mpx / statistics.median(walls),
        "mpx_per_s_cpu": mpx / min(cpus),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10, help="timed renders per variant (default 10)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    repeats = max(1, args.frames)

    a, b, origin = natural_frames()
    lut = graded_lut(33)
    aff_a = affine_for((OUT_W, OUT_H), (a.shape[1], a.shape[0]), scale=1.25, rotation_deg=7.0, shift_x=12.0)
    aff_b = affine_for((OUT_W, OUT_H), (b.shape[1], b.shape[0]), scale=1.1, rotation_deg=-4.0, shift_y=-9.0)
    out = np.empty((OUT_H, OUT_W, 3), np.uint8)

    def fused():
        render_frame(out, a, aff_a, lut, fade_rgb=(0.0, 0.0, 0.0), fade_amount=FADE)

    def fused_dissolve():
        render_frame(out, a, aff_a, lut, b, aff_b, lut, blend_b=BLEND_B)

    warmup()
    max_threads = numba.config.NUMBA_NUM_THREADS
    results: dict = {"input": origin, "size": [OUT_W, OUT_H], "lut_n": 33, "fade": FADE, "blend_b": BLEND_B,
                     "frames": repeats, "numba_threads_max": max_threads,
                     "work": "typical frame: warp + 33^3 LUT + fade; dissolve_*: two sources + dissolve"}
    numba.set_num_threads(1)
    results["fused_1_thread"] = time_it(fused, repeats)
    results["dissolve_fused_1_thread"] = time_it(fused_dissolve, repeats)
    # What the encoder gets: I420 from the kernel's own pass vs RGB + swscale (single-threaded, as it runs).
    import av

    i420 = np.empty((OUT_H * 3 // 2, OUT_W), np.uint8)
    a_same = _resize(a, (OUT_W, OUT_H))
    unwarped = affine_for((OUT_W, OUT_H), (OUT_W, OUT_H))

    def rgb_then_swscale(src, aff, **kw):
        render_frame(out, src, aff, lut, **kw)
        av.VideoFrame.from_ndarray(out, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709",
                                                                 threads=1)

    results["i420_fused_1_thread"] = time_it(
        lambda: render_frame_i420(i420, a, aff_a, lut, fade_rgb=(0.0, 0.0, 0.0), fade_amount=FADE), repeats)
    results["i420_rgb_plus_swscale_1_thread"] = time_it(
        lambda: rgb_then_swscale(a, aff_a, fade_rgb=(0.0, 0.0, 0.0), fade_amount=FADE), repeats)
    results["colour_only_i420_fused_1_thread"] = time_it(lambda: render_frame_i420(i420, a_same, unwarped, lut),
                                                         repeats)
    results["colour_only_rgb_plus_swscale_1_thread"] = time_it(lambda: rgb_then_swscale(a_same, unwarped), repeats)
    # From the decoder's planes: swscale to RGB + RGB kernel (the earlier render) vs the YUV kernel.
    warmup_yuv()
    ylut = yuv_lut(lut, matrix="bt709", size=65)

    def decoded(rgb):
        h2, w2 = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
        i420_src = rgb_to_i420(np.ascontiguousarray(rgb[:h2, :w2]))
        frame = av.VideoFrame.from_ndarray(i420_src, format="yuv420p")
        frame.colorspace = 1  # BT.709, as the I420 was written
        planes = (i420_src[:h2], i420_src[h2:h2 + h2 // 4].reshape(h2 // 2, w2 // 2),
                  i420_src[h2 + h2 // 4:].reshape(h2 // 2, w2 // 2))
        return frame, planes

    frame_a, planes_a = decoded(a)
    frame_same, planes_same = decoded(a_same)
    aff_even = affine_for((OUT_W, OUT_H), (planes_a[0].shape[1], planes_a[0].shape[0]), scale=1.25,
                          rotation_deg=7.0, shift_x=12.0)

    def via_rgb(frame, aff, **kw):
        render_frame_i420(i420, frame.to_ndarray(format="rgb24", threads=1), aff, lut, **kw)

    results["decoded_typical_rgb_path_1_thread"] = time_it(
        lambda: via_rgb(frame_a, aff_even, fade_rgb=(0.0, 0.0, 0.0), fade_amount=FADE), repeats)
    results["decoded_typical_yuv_kernel_1_thread"] = time_it(
        lambda: render_frame_i420_yuv(i420, planes_a, aff_even, ylut, fade_rgb=(0.0, 0.0, 0.0), fade_amount=FADE,
                                      parallel=False), repeats)
    # A render's camera moves and framing are scale + shift, no rotation: the kernel samples those separably.
    aff_move = affine_for((OUT_W, OUT_H), (planes_a[0].shape[1], planes_a[0].shape[0]), scale=1.2, shift_x=12.0,
                          shift_y=-6.0)
    results["decoded_camera_move_yuv_kernel_1_thread"] = time_it(
        lambda: render_frame_i420_yuv(i420, planes_a, aff_move, ylut, parallel=False), repeats)
    aff_move_sheared = np.array(aff_move, np.float64)
    aff_move_sheared[0, 1] = 1e-30  # the same warp, but not axis-aligned: the four-tap path
    results["decoded_camera_move_four_tap_1_thread"] = time_it(
        lambda: render_frame_i420_yuv(i420, planes_a, aff_move_sheared, ylut, parallel=False), repeats)
    results["decoded_colour_only_rgb_path_1_thread"] = time_it(lambda: via_rgb(frame_same, unwarped), repeats)
    results["decoded_colour_only_yuv_kernel_1_thread"] = time_it(
        lambda: render_frame_i420_yuv(i420, planes_same, unwarped, ylut, parallel=False), repeats)
    results["yuv_kernel_speedup_typical"] = (results["decoded_typical_rgb_path_1_thread"]["best_ms"]
                                             / results["decoded_typical_yuv_kernel_1_thread"]["best_ms"])
    results["yuv_kernel_speedup_colour_only"] = (results["decoded_colour_only_rgb_path_1_thread"]["best_ms"]
                                                 / results["decoded_colour_only_yuv_kernel_1_thread"]["best_ms"])
    results["i420_speedup_vs_rgb_plus_swscale"] = (results["i420_rgb_plus_swscale_1_thread"]["best_ms"]
                                                   / results["i420_fused_1_thread"]["best_ms"])
    results["colour_only_speedup_vs_rgb_plus_swscale"] = (
        results["colour_only_rgb_plus_swscale_1_thread"]["best_ms"]
        / results["colour_only_i420_fused_1_thread"]["best_ms"])
    numba.set_num_threads(max_threads)
    results["fused_all_threads"] = time_it(fused, repeats)
    fused()
    fused_out = out.copy()

    if cv2 is not None:
        prev_cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        black = np.zeros((OUT_H, OUT_W, 3), np.uint8)
        composed_out = composed_typical(a, aff_a, lut, black)
        results["composed_cv2_numpy_1_thread"] = time_it(lambda: composed_typical(a, aff_a, lut, black),
                                                         max(1, min(repeats, 5)))
        results["dissolve_composed_cv2_numpy_1_thread"] = time_it(lambda: composed(a, b, aff_a, aff_b, lut),
                                                                  max(1, min(repeats, 3)))
        cv2.setNumThreads(prev_cv_threads)
        diff = np.abs(fused_out.astype(np.int16) - composed_out)
        results["fused_vs_composed_mean_abs_diff"] = float(diff.mean())
        # tetrahedral vs trilinear and cv2's 1/32-px positions: small, non-zero differences
        c1 = results["composed_cv2_numpy_1_thread"]
        f1 = results["fused_1_thread"]
        results["speedup_fused1_vs_composed1"] = c1["best_ms"] / f1["best_ms"]
        results["speedup_fused1_vs_composed1_median"] = c1["median_ms"] / f1["median_ms"]
        results["dissolve_speedup_fused1_vs_composed1"] = (results["dissolve_composed_cv2_numpy_1_thread"]["best_ms"]
                                                           / results["dissolve_fused_1_thread"]["best_ms"])
    results["parallel_speedup"] = (results["fused_1_thread"]["best_ms"]
                                   / results["fused_all_threads"]["best_ms"])
    results["targets"] = {
        "fused_mpx_per_s_per_core >= 60": results["fused_1_thread"]["mpx_per_s_best"] >= 60.0,
        "fused_vs_composed >= 1.5": results.get("speedup_fused1_vs_composed1", 0.0) >= 1.5,
    }

    print(f"input: {origin}; output {OUT_W}x{OUT_H}, 33^3 LUT; typical frame = warp + LUT + fade {FADE}; "
          f"dissolve frame = 2 x (warp + LUT) + blend {BLEND_B}; {repeats} frames")
    print(f"{'variant':<38}{'best ms':>9}{'median ms':>11}{'Mpx/s best':>12}{'Mpx/s med':>11}{'cpu ms':>9}")
    rows = [("(a) fused, 1 thread", "fused_1_thread"),
            (f"(b) fused, {max_threads} threads", "fused_all_threads"),
            ("(c) cv2+numpy composed, 1 thread", "composed_cv2_numpy_1_thread"),
            ("dissolve: fused, 1 thread", "dissolve_fused_1_thread"),
            ("dissolve: cv2+numpy, 1 thread", "dissolve_composed_cv2_numpy_1_thread"),
            ("-> I420: fused, 1 thread", "i420_fused_1_thread"),
            ("-> I420: RGB kernel + swscale", "i420_rgb_plus_swscale_1_thread"),
            ("colour-only -> I420: fused", "colour_only_i420_fused_1_thread"),
            ("colour-only -> I420: RGB + swscale", "colour_only_rgb_plus_swscale_1_thread"),
            ("decoded typical: swscale + RGB kernel", "decoded_typical_rgb_path_1_thread"),
            ("decoded typical: YUV kernel", "decoded_typical_yuv_kernel_1_thread"),
            ("decoded camera move: YUV kernel", "decoded_camera_move_yuv_kernel_1_thread"),
            ("decoded camera move: four-tap path", "decoded_camera_move_four_tap_1_thread"),
            ("decoded colour-only: swscale + RGB", "decoded_colour_only_rgb_path_1_thread"),
            ("decoded colour-only: YUV kernel", "decoded_colour_only_yuv_kernel_1_thread")]
    for label, key in rows:
        if key in results:
            r = results[key]
            print(f"{label:<38}{r['best_ms']:>9.1f}{r['median_ms']:>11.1f}{r['mpx_per_s_best']:>12.1f}"
                  f"{r['mpx_per_s_median']:>11.1f}{r['best_cpu_ms']:>9.1f}")
    if "speedup_fused1_vs_composed1" in results:
        print(f"fused / composed (1 thread each): {results['speedup_fused1_vs_composed1']:.1f}x best, "
              f"{results['speedup_fused1_vs_composed1_median']:.1f}x median; "
              f"mean |fused - composed| = {results['fused_vs_composed_mean_abs_diff']:.2f} levels")
    if "dissolve_speedup_fused1_vs_composed1" in results:
        print(f"dissolve frame, fused / composed (1 thread each): "
              f"{results['dissolve_speedup_fused1_vs_composed1']:.1f}x best")
    print(f"I420 for the encoder, fused / RGB kernel + swscale: typical frame "
          f"{results['i420_speedup_vs_rgb_plus_swscale']:.2f}x, colour-only frame "
          f"{results['colour_only_speedup_vs_rgb_plus_swscale']:.2f}x")
    print(f"from the decoder's YUV, YUV kernel / (swscale + RGB kernel): typical frame "
          f"{results['yuv_kernel_speedup_typical']:.2f}x, colour-only frame "
          f"{results['yuv_kernel_speedup_colour_only']:.2f}x")
    print(f"fused all threads / 1 thread: {results['parallel_speedup']:.2f}x")
    for target, ok in results["targets"].items():
        print(f"target {target}: {'met' if ok else 'NOT met'}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
