"""Tests for stylecast.color: grade recovery on real footage, transfer controls, LUT sanity, .cube I/O."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from stylecast import color as C

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
WIDTH = 224  # analysis width (px) of decoded frames
SAMPLES_PER_FRAME = 400  # sparse LAB samples per frame, like the analysis stage


# ------------------------------------------------------------------------------------------------------
# Footage
# ------------------------------------------------------------------------------------------------------


def _decode(path: Path, times: list[float], width: int = WIDTH) -> list[np.ndarray]:
    import av

    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        wanted = {int(round(t * fps)) for t in times}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                h, w = rgb.shape[:2]
                out.append(cv2.resize(rgb, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA))
            if i >= max(wanted):
                break
    assert len(out) == len(times)
    return out


def _procedural_frames(frame_indices: list[int], seed: int = 1) -> list[np.ndarray]:
    """Natural-looking stand-in clip: sky gradient, textured ground, soft coloured blobs drifting slowly
    (frame ``i`` of one fixed scene), grain."""
    rng = np.random.default_rng(seed)
    h, w = 126, WIDTH
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    sky = np.stack([0.45 + 0.3 * yy, 0.6 + 0.25 * yy, 0.9 - 0.1 * yy], -1)
    texture = cv2.GaussianBlur(rng.random((h, 2 * w)).astype(np.float32), (0, 0), 3)
    blobs = [(rng.random(), rng.random(), 0.05 + 0.12 * rng.random(), rng.random(3), rng.normal(0, 0.02, 2))
             for _ in range(6)]
    frames = []
    for i in frame_indices:
        noise = np.roll(texture, 3 * i, axis=1)[:, :w, None]
        ground = np.array([0.35, 0.3, 0.18]) * (0.6 + 0.8 * noise) * (1.2 - 0.6 * yy[..., None])
        img = np.where((yy < 0.45)[..., None], sky, ground)
        for cy, cx, r, col, vel in blobs:
            cy, cx = cy + vel[0] * i, cx + vel[1] * i
            mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - 0.8 * mask) + 0.8 * mask * col
        img = img + 0.015 * np.random.default_rng(seed * 1000 + i).standard_normal(img.shape)
        frames.append(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    return frames


def _clips() -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """name -> (source frames, template frames): different frames of similar content, seconds apart."""
    clips = {}
    bikes = MEDIA / "bikes.mp4"
    testvideo = MEDIA / "pyscenedetect" / "testvideo.mp4"
    try:
        import av  # noqa: F401

        have_av = True
    except ImportError:
        have_av = False
    if have_av and bikes.exists():
        # Same street scene; template frames are ~2.8 s later (different bikes, framing moved).
        clips["bikes"] = (_decode(bikes, [5.6, 6.2, 6.8]), _decode(bikes, [8.4, 9.0, 9.6]))
    if have_av and testvideo.exists():
        # Four shots (the leaf-on-a-rock shot at 14-17 s has a moving camera), each sampled twice ~1-2 s apart.
        clips["testvideo"] = (
            _decode(testvideo, [2.0, 9.0, 14.0, 20.0], width=160),
            _decode(testvideo, [4.0, 10.5, 16.0, 21.5], width=160),
        )
    if not clips:
        clips["procedural"] = (_procedural_frames([0, 1, 2]), _procedural_frames([5, 6, 7]))
    return clips


@pytest.fixture(scope="module")
def clips():
    return _clips()


def _lab(frames: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([C.rgb_to_lab(f).reshape(-1, 3) for f in frames])


def _sparse(frames: list[np.ndarray], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        lab = C.rgb_to_lab(f).reshape(-1, 3)
        out.append(lab[rng.choice(lab.shape[0], SAMPLES_PER_FRAME, replace=False)])
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------------------
# Known grades (RGB uint8 -> RGB uint8)
# ------------------------------------------------------------------------------------------------------


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def grade_teal_orange(img: np.ndarray) -> np.ndarray:
    """Split toning: shadows pushed to teal, highlights to orange (smooth in L*)."""
    lab = C.rgb_to_lab(img).astype(np.float64)
    w = np.clip((lab[..., 0] / 100.0 - 0.15) / 0.7, 0, 1)
    w = w * w * (3 - 2 * w)
    lab[..., 1] += -9 * (1 - w) + 8 * w
    lab[..., 2] += -11 * (1 - w) + 16 * w
    return _to_u8(C.lab_to_rgb(lab.astype(np.float32)))


def grade_warm_scurve(img: np.ndarray) -> np.ndarray:
    """Warm cast, lifted blacks, S-curve contrast and crushed (capped) highlights."""
    x = img.astype(np.float64) / 255.0 * np.array([1.08, 1.0, 0.86])
    x = np.clip(0.06 + 0.9 * x, 0, 1)
    x = x + 0.6 * (x * x * (3 - 2 * x) - x)
    return _to_u8(np.minimum(x, 0.93))


def grade_cool_film(img: np.ndarray) -> np.ndarray:
    """Desaturated, cool, low-contrast film look."""
    lab = C.rgb_to_lab(img).astype(np.float64)
    lab[..., 1] = 0.45 * lab[..., 1] - 3
    lab[..., 2] = 0.45 * lab[..., 2] - 9
    lab[..., 0] = 8 + 0.84 * lab[..., 0]
    return _to_u8(C.lab_to_rgb(lab.astype(np.float32)))


def grade_mixer_gamma(img: np.ndarray) -> np.ndarray:
    """3x3 channel mixer followed by a gamma lift."""
    mix = np.array([[0.85, 0.25, -0.05], [0.05, 0.8, 0.15], [-0.1, 0.2, 0.95]])
    x = np.clip((img.astype(np.float64) / 255.0) @ mix.T, 0, 1) ** 0.8
    return _to_u8(x)


GRADES = {
    "teal_orange": grade_teal_orange,
    "warm_scurve": grade_warm_scurve,
    "cool_film": grade_cool_film,
    "mixer_gamma": grade_mixer_gamma,
}


# ------------------------------------------------------------------------------------------------------
# Baselines (for the report): Reinhard (per-channel mean/std in LAB) and plain MKL
# ------------------------------------------------------------------------------------------------------


def _lut_from_lab_fn(fn, size: int = 33) -> np.ndarray:
    grid = C.identity_lut(size)
    lab = C.rgb_to_lab(grid).reshape(-1, 3).astype(np.float64)
    return C.lab_to_rgb(fn(lab).astype(np.float32)).reshape(grid.shape)


def _reinhard_lut(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    ms, ss, mt, st = src.mean(0), src.std(0) + 1e-6, dst.mean(0), dst.std(0)
    return _lut_from_lab_fn(lambda lab: (lab - ms) / ss * st + mt)


def _mkl_lut(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    ms, mt = src.mean(0), dst.mean(0)
    cs, ct = np.cov(src.T) + 1e-3 * np.eye(3), np.cov(dst.T) + 1e-3 * np.eye(3)
    vals, vecs = np.linalg.eigh(cs)
    half = (vecs * np.sqrt(vals)) @ vecs.T
    inv_half = (vecs / np.sqrt(vals)) @ vecs.T
    vals2, vecs2 = np.linalg.eigh(half @ ct @ half)
    mid = (vecs2 * np.sqrt(np.maximum(vals2, 0))) @ vecs2.T
    a = inv_half @ mid @ inv_half
    return _lut_from_lab_fn(lambda lab: (lab - ms) @ a.T + mt)


# ------------------------------------------------------------------------------------------------------
# Grade recovery
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grade_name", list(GRADES))
def test_grade_recovery(clips, grade_name):
    grade = GRADES[grade_name]
    for clip_name, (src_frames, tpl_frames) in clips.items():
        graded_src = [grade(f) for f in src_frames]  # ground truth
        template = [grade(f) for f in tpl_frames]
        src_lab, truth_lab, tpl_lab = _lab(src_frames), _lab(graded_src), _lab(template)
        src_samples = _sparse(src_frames, seed=1)
        tpl_stats = C.color_stats(_sparse(template, seed=2))

        transfer = C.fit_transfer(src_samples, tpl_stats)
        lut = C.transfer_lut(transfer, 33)
        out_lab = _lab([C.apply_lut_reference(f, lut) for f in src_frames])

        # Same fit from statistics only (pseudo-pixel path).
        lut_stats = C.transfer_lut(C.fit_transfer(C.color_stats(src_samples), tpl_stats), 33)
        out_stats_lab = _lab([C.apply_lut_reference(f, lut_stats) for f in src_frames])

        tpl_samples = _sparse(template, seed=2)
        out_rh = _lab([C.apply_lut_reference(f, _reinhard_lut(src_samples, tpl_samples)) for f in src_frames])
        out_mkl = _lab([C.apply_lut_reference(f, _mkl_lut(src_samples, tpl_samples)) for f in src_frames])

        de0 = C.delta_e76(src_lab, truth_lab)
        gain = {
            name: 1.0 - C.delta_e76(lab, truth_lab) / de0
            for name, lab in [("ours", out_lab), ("ours_stats", out_stats_lab), ("reinhard", out_rh), ("mkl", out_mkl)]
        }
        pd0 = C.palette_distance(src_lab, tpl_lab)
        pd_gain = {
            name: 1.0 - C.palette_distance(lab, tpl_lab) / pd0
            for name, lab in [("ours", out_lab), ("reinhard", out_rh), ("mkl", out_mkl), ("truth", truth_lab)]
        }
        print(
            f"\n[{clip_name}/{grade_name}] dE76 src->truth {de0:.2f}; dE reduction "
            + ", ".join(f"{k} {v:.0%}" for k, v in gain.items())
            + f"; palette {pd0:.2f}, reduction "
            + ", ".join(f"{k} {v:.0%}" for k, v in pd_gain.items())
        )
        assert gain["ours"] >= 0.45, (clip_name, gain)
        assert gain["ours_stats"] >= 0.40, (clip_name, gain)
        # The template differs in content, so even the true G(source) does not reach it; where the truth
        # itself stays below 80% the bar is "within 15 points of the truth".
        assert pd_gain["ours"] >= min(0.65, pd_gain["truth"] - 0.15), (clip_name, pd_gain)


# ------------------------------------------------------------------------------------------------------
# Transfer controls
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded_pair(clips):
    src_frames, tpl_frames = next(iter(clips.values()))
    template = [grade_teal_orange(grade_warm_scurve(f)) for f in tpl_frames]
    return src_frames, _sparse(src_frames, 3), C.color_stats(_sparse(template, 4))


def test_strength_blends_with_identity(graded_pair):
    src_frames, src_samples, tpl_stats = graded_pair
    ident = C.identity_lut(33)
    lut0 = C.transfer_lut(C.fit_transfer(src_samples, tpl_stats, strength=0.0))
    assert np.max(np.abs(lut0 - ident)) <= 1e-4
    lut1 = C.transfer_lut(C.fit_transfer(src_samples, tpl_stats, strength=1.0))
    lut_half = C.transfer_lut(C.fit_transfer(src_samples, tpl_stats, strength=0.5))
    src_lab = _lab(src_frames)
    full = _lab([C.apply_lut_reference(f, lut1) for f in src_frames])
    half = _lab([C.apply_lut_reference(f, lut_half) for f in src_frames])
    d_full = C.delta_e76(src_lab, full)
    assert d_full > 5.0
    assert 0.3 * d_full < C.delta_e76(src_lab, half) < 0.7 * d_full
    assert 0.3 * d_full < C.delta_e76(full, half) < 0.7 * d_full


def test_tone_only_and_color_only(graded_pair):
    _, src_samples, tpl_stats = graded_pair
    # Mid-gamut probe colours: clipping does not interfere there.
    rng = np.random.default_rng(5)
    probe = C.rgb_to_lab(rng.uniform(0.25, 0.75, (2000, 3)).astype(np.float32))
    full = C.fit_transfer(src_samples, tpl_stats)
    tone = C.fit_transfer(src_samples, tpl_stats, color=False)
    col = C.fit_transfer(src_samples, tpl_stats, tone=False)

    out_full = C.apply_transfer_lab(full, probe)
    out_tone = C.apply_transfer_lab(tone, probe)
    out_col = C.apply_transfer_lab(col, probe)
    assert np.abs(out_tone[:, 1:] - probe[:, 1:]).max() < 1e-4
    assert np.abs(out_col[:, 0] - probe[:, 0]).max() < 1e-4
    assert np.abs(out_tone[:, 0] - probe[:, 0]).mean() > 2.0
    assert np.abs(out_col[:, 1:] - probe[:, 1:]).mean() > 2.0
    assert np.abs(out_full - probe).mean() > 2.0

    # Through the baked LUT (RGB round trip + gamut clipping): still nearly unchanged.
    probe_rgb = C.lab_to_rgb(probe)
    via_tone = C.rgb_to_lab(C.apply_lut_reference(probe_rgb, C.transfer_lut(tone)))
    via_col = C.rgb_to_lab(C.apply_lut_reference(probe_rgb, C.transfer_lut(col)))
    assert np.abs(via_tone[:, 1:] - probe[:, 1:]).mean() < 1.5
    assert np.abs(via_col[:, 0] - probe[:, 0]).mean() < 1.0
    assert np.abs(via_tone[:, 0] - probe[:, 0]).mean() > 2.0


def _check_lut_sane(lut: np.ndarray, max_step: float = 0.2):
    assert lut.shape == (33, 33, 33, 3) and lut.dtype == np.float32
    assert np.all(np.isfinite(lut))
    assert lut.min() >= 0.0 and lut.max() <= 1.0
    for axis in range(3):
        assert np.abs(np.diff(lut, axis=axis)).max() <= max_step, axis
    # Grey axis: lightness must not decrease.
    diag = np.stack([lut[i, i, i] for i in range(33)])
    lum = C.rgb_to_lab(diag)[:, 0]
    assert np.all(np.diff(lum) >= -0.5)


def test_luts_smooth_and_monotone(clips, graded_pair):
    _, src_samples, tpl_stats = graded_pair
    for kw in ({}, {"color": False}, {"tone": False}):
        _check_lut_sane(C.transfer_lut(C.fit_transfer(src_samples, tpl_stats, **kw)))
    for grade in GRADES.values():
        src_frames, tpl_frames = next(iter(clips.values()))
        tpl = C.color_stats(_sparse([grade(f) for f in tpl_frames], 6))
        _check_lut_sane(C.transfer_lut(C.fit_transfer(src_samples, tpl)))
        _check_lut_sane(C.look_lut(tpl))


@pytest.mark.parametrize(
    "degenerate",
    [
        np.tile([[60.0, 20.0, -10.0]], (500, 1)),  # constant-colour shot
        np.array([[40.0, 5.0, 5.0]]),  # one pixel
        np.zeros((800, 3)),  # black frame
        np.zeros((0, 3)),  # nothing sampled
    ],
    ids=["constant", "one_pixel", "black", "empty"],
)
def test_degenerate_source_is_near_identity(graded_pair, degenerate):
    _, src_samples, tpl_stats = graded_pair
    ident = C.identity_lut(33)
    for src in (degenerate, C.color_stats(degenerate)):
        t = C.fit_transfer(src, tpl_stats)
        lut = C.transfer_lut(t)
        assert np.all(np.isfinite(lut))
        assert np.abs(lut - ident).max() < 1e-3
        C.ColorTransfer.model_validate_json(t.model_dump_json())
    # Degenerate template: also sane (finite, in range).
    t = C.fit_transfer(src_samples, C.color_stats(degenerate))
    lut = C.transfer_lut(t)
    assert np.all(np.isfinite(lut)) and lut.min() >= 0 and lut.max() <= 1


def test_neutral_look_is_identity_and_look_moves_towards_template(graded_pair):
    neutral = C.neutral_reference_stats()
    assert neutral == C.neutral_reference_stats()  # deterministic
    assert abs(neutral.mean[1]) < 0.5 and abs(neutral.mean[2]) < 0.5
    assert 50 < neutral.contrast < 80
    ident = C.identity_lut(33)
    assert np.abs(C.look_lut(neutral) - ident).max() < 0.03
    src_frames, _, tpl_stats = graded_pair
    lut = C.look_lut(tpl_stats)
    assert np.abs(lut - ident).max() > 0.05
    # A warm/teal-orange template: applying its look warms the (b* up) average of grey-ish content.
    greys = C.identity_lut(9).reshape(-1, 3)
    greys = greys[np.ptp(greys, axis=1) < 0.3]
    out = C.rgb_to_lab(C.apply_lut_reference(greys, lut))
    assert out[:, 2].mean() > C.rgb_to_lab(greys)[:, 2].mean() + 2.0


# ------------------------------------------------------------------------------------------------------
# Stats, serialisation, metrics, colour conversion
# ------------------------------------------------------------------------------------------------------


def test_color_stats_and_merge(clips):
    src_frames, tpl_frames = next(iter(clips.values()))
    a, b = _sparse(src_frames, 7), _sparse(tpl_frames, 8)[:700]
    sa, sb, sab = C.color_stats(a), C.color_stats(b), C.color_stats(np.concatenate([a, b]))
    assert sa.n_pixels == len(a) and len(sa.quantiles) == 3 and len(sa.quantiles[0]) == len(C.QUANTILE_LEVELS)
    assert set(sa.luma_percentiles) == {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}
    assert sa.contrast == pytest.approx(sa.luma_percentiles["p95"] - sa.luma_percentiles["p5"])
    assert sa.saturation_mean == pytest.approx(np.hypot(a[:, 1], a[:, 2]).mean(), rel=1e-6)
    merged = C.merge_stats([sa, sb])
    assert merged.n_pixels == sab.n_pixels
    np.testing.assert_allclose(merged.mean, sab.mean, atol=1e-6)
    np.testing.assert_allclose(merged.cov, sab.cov, atol=1e-4)
    assert np.abs(np.array(merged.quantiles) - np.array(sab.quantiles)).mean() < 1.0
    assert abs(merged.contrast - sab.contrast) < 3.0
    again = C.ColorStats.model_validate_json(merged.model_dump_json())
    assert again == merged
    with pytest.raises(Exception):
        C.ColorStats.model_validate({**merged.model_dump(), "extra_field": 1})


def test_transfer_json_round_trip(graded_pair):
    src_frames, src_samples, tpl_stats = graded_pair
    t = C.fit_transfer(src_samples, tpl_stats, strength=0.8)
    t2 = C.ColorTransfer.model_validate_json(t.model_dump_json())
    np.testing.assert_array_equal(C.transfer_lut(t), C.transfer_lut(t2))


def test_metrics_and_lab_conversion():
    lab = np.random.default_rng(0).normal([50, 0, 0], [15, 10, 10], (3000, 3))
    shifted = lab + np.array([3.0, 4.0, 0.0])
    assert C.delta_e76(lab, shifted) == pytest.approx(5.0)
    assert C.palette_distance(lab, shifted) == pytest.approx(7.0, abs=1e-6)
    assert C.palette_distance(lab, lab[::-1]) == pytest.approx(0.0, abs=1e-9)
    white = C.rgb_to_lab(np.array([255, 255, 255], dtype=np.uint8))
    np.testing.assert_allclose(white, [100, 0, 0], atol=0.01)
    rgb = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    lab_img = C.rgb_to_lab(rgb)
    assert lab_img.shape == (7, 5, 3) and lab_img.dtype == np.float32
    np.testing.assert_allclose(lab_img, C.rgb_to_lab(rgb.astype(np.float32) / 255), atol=1e-5)
    # cv2's float Lab->RGB uses a gamma approximation: the round trip is good to ~0.5 level.
    np.testing.assert_allclose(C.lab_to_rgb(lab_img) * 255, rgb, atol=0.6)
    assert C.lab_to_rgb(np.array([[50, 120, -120]], np.float32)).max() <= 1.0


# ------------------------------------------------------------------------------------------------------
# .cube I/O
# ------------------------------------------------------------------------------------------------------


def _some_lut(size: int = 17) -> np.ndarray:
    g = C.identity_lut(size)
    return np.clip(g**0.8 * np.array([1.0, 0.95, 0.85]) + 0.02, 0, 1).astype(np.float32)


def test_cube_round_trip_and_layout(tmp_path):
    lut = _some_lut()
    path = tmp_path / "look.cube"
    C.write_cube(lut, path, title='my "look"')
    text = path.read_text().splitlines()
    assert text[0].startswith("TITLE ") and "LUT_3D_SIZE 17" in text
    assert "DOMAIN_MIN 0.0 0.0 0.0" in text and "DOMAIN_MAX 1.0 1.0 1.0" in text
    rows = [ln for ln in text if ln and (ln[0].isdigit() or ln[0] == "-")]
    assert len(rows) == 17**3
    # R changes fastest: row 1 is lut[1, 0, 0], row 17 is lut[0, 1, 0].
    np.testing.assert_allclose([float(v) for v in rows[1].split()], lut[1, 0, 0], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in rows[17].split()], lut[0, 1, 0], atol=1e-6)
    assert all(len(v.split(".")[1]) == 6 for v in rows[5].split())
    back = C.read_cube(path)
    assert back.shape == lut.shape and back.dtype == np.float32
    assert np.abs(back - lut).max() <= 5e-7
    buf = io.StringIO()
    C.write_cube(lut, buf)
    assert np.abs(C.read_cube(io.StringIO(buf.getvalue())) - lut).max() <= 5e-7


def test_read_cube_resolve_style():
    lut = _some_lut(2)
    body = "\n".join(f"{r:.4f} {g:.4f} {b:.4f}" for r, g, b in lut.transpose(2, 1, 0, 3).reshape(-1, 3))
    text = f"# Created by Resolve\n\nTITLE \"x\"\nLUT_3D_SIZE 2\nLUT_3D_INPUT_RANGE 0.0 1.0\n\n{body}\n"
    np.testing.assert_allclose(C.read_cube(io.StringIO(text)), lut, atol=1e-4)


@pytest.mark.parametrize(
    "text",
    [
        "0 0 0\n1 1 1\n",  # no LUT_3D_SIZE
        "LUT_3D_SIZE 2\n" + "0 0 0\n" * 7,  # too few rows
        "LUT_3D_SIZE 2\n" + "0 0 0\n" * 9,  # too many rows
        "LUT_3D_SIZE 2\n" + "0 0\n" * 8,  # two numbers per row
        "LUT_3D_SIZE 2\n" + "0 x 0\n" * 8,  # not a number
        "LUT_3D_SIZE two\n" + "0 0 0\n" * 8,
        "LUT_1D_SIZE 2\n0 0 0\n1 1 1\n",
        "LUT_3D_SIZE 2\nBOGUS_KEY 1\n" + "0 0 0\n" * 8,
        "LUT_3D_SIZE 2\n" + "0 0 nan\n" * 8,
    ],
)
def test_read_cube_malformed(text):
    with pytest.raises(ValueError):
        C.read_cube(io.StringIO(text))


def _ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return shutil.which("ffmpeg")


def test_ffmpeg_lut3d_agrees_with_reference(tmp_path, graded_pair):
    exe = _ffmpeg_exe()
    if exe is None:
        pytest.skip("no ffmpeg available")
    src_frames, src_samples, tpl_stats = graded_pair
    lut = C.transfer_lut(C.fit_transfer(src_samples, tpl_stats))
    cube = tmp_path / "look.cube"
    C.write_cube(lut, cube, title="stylecast test")
    img = src_frames[0]
    inp, outp = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(inp), img[..., ::-1])
    subprocess.run(
        [exe, "-v", "error", "-y", "-i", str(inp), "-vf", f"lut3d=file={cube}:interp=trilinear",
         "-pix_fmt", "rgb24", str(outp)],
        check=True, timeout=60,
    )
    ff = cv2.imread(str(outp), cv2.IMREAD_COLOR)[..., ::-1].astype(np.int16)
    ours = C.apply_lut_reference(img, lut).astype(np.int16)
    diff = np.abs(ff - ours)
    assert np.abs(ours - img.astype(np.int16)).mean() > 3  # the LUT does something
    assert diff.mean() < 0.6 and np.percentile(diff, 99.9) <= 1


def test_pchip_is_scipys_pchip():
    from scipy.interpolate import PchipInterpolator

    from stylecast.color import pchip

    rng = np.random.default_rng(12)
    cases = [np.sort(rng.random(2)), np.linspace(0, 1, 3), np.sort(rng.random(9)), np.sort(rng.random(33))]
    for x in cases:
        x = np.unique(x)
        for y in (np.cumsum(rng.random(x.size)), rng.normal(size=x.size),
                  np.r_[np.zeros(x.size // 2), np.ones(x.size - x.size // 2)]):
            v = np.concatenate([np.linspace(x[0], x[-1], 257), x])
            assert np.allclose(pchip(x, y, v), PchipInterpolator(x, y)(v), rtol=1e-12, atol=1e-12)
