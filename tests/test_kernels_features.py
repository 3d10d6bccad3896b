"""kernels.features (Numba shift-search difference) against a plain numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from kernels import features as kf


def _ref_shifted(cur: np.ndarray, prev: np.ndarray, dx: int, dy: int, margin: int) -> float:
    h, w, _ = cur.shape
    a = cur[margin : h - margin, margin : w - margin].astype(np.float64)
    b = prev[margin + dy : h - margin + dy, margin + dx : w - margin + dx].astype(np.float64)
    return float(np.abs(a - b).mean())


def _ref_min_shift(cur, prev, cdx, cdy, radius, margin):
    best = None
    for j in range(-radius, radius + 1):
        for i in range(-radius, radius + 1):
            d = _ref_shifted(cur, prev, cdx + i, cdy + j, margin)
            key = (d, abs(i) + abs(j))
            if best is None or key < best[0]:
                best = (key, cdx + i, cdy + j)
    return best[0][0], best[1], best[2]


def _lab_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random 'image' in LAB-like ranges (L 0..100, a/b +-40), float32."""
    base = rng.normal(size=(h // 4 + 2, w // 4 + 2, 3))
    img = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    img += 0.3 * rng.normal(size=img.shape)
    return np.ascontiguousarray((img * [15.0, 10.0, 10.0] + [50.0, 0.0, 0.0]).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shifted_and_min_shift_match_numpy(seed):
    rng = np.random.default_rng(seed)
    cur = _lab_like(rng, 27, 48)
    prev = _lab_like(rng, 27, 48)
    for dx, dy in [(0, 0), (3, -2), (-3, 3)]:
        assert kf.shifted_mean_abs_diff(cur, prev, dx, dy, 3) == pytest.approx(
            _ref_shifted(cur, prev, dx, dy, 3), rel=1e-5)
    got = kf.min_shift_mean_abs_diff(cur, prev, 1, -1, 2, 3)
    ref = _ref_min_shift(cur, prev, 1, -1, 2, 3)
    assert got[0] == pytest.approx(ref[0], rel=1e-5) and got[1:] == ref[1:]


@pytest.mark.parametrize("shift", [(0, 0), (4, 0), (-6, 2), (7, -5), (-5, 3), (1, 1)])
def test_motion_compensated_diff_recovers_translation(shift):
    rng = np.random.default_rng(5)
    big = _lab_like(rng, 80, 140)
    sx, sy = shift
    # content moves by (sx, sy): cur[y, x] = prev[y - sy, x - sx]
    prev_fine = np.ascontiguousarray(big[10:64, 20:116])
    cur_fine = np.ascontiguousarray(big[10 - sy : 64 - sy, 20 - sx : 116 - sx])
    coarse = lambda im: np.ascontiguousarray(im.reshape(27, 2, 48, 2, 3).mean(axis=(1, 3)).astype(np.float32))
    d, dx, dy = kf.motion_compensated_diff(cur_fine, prev_fine, coarse(cur_fine), coarse(prev_fine), 3)
    assert (dx, dy) == (-sx, -sy)
    assert d == pytest.approx(0.0, abs=1e-6)
    # the reference: brute force over the whole fine window finds the same minimum
    ref = _ref_min_shift(cur_fine, prev_fine, 0, 0, 7, 7)
    assert ref[1:] == (dx, dy) and d == pytest.approx(ref[0], abs=1e-5)


def test_motion_compensated_diff_matches_reference_on_unrelated_frames():
    rng = np.random.default_rng(9)
    cur, prev = _lab_like(rng, 54, 96), _lab_like(rng, 54, 96)
    coarse = lambda im: np.ascontiguousarray(im.reshape(27, 2, 48, 2, 3).mean(axis=(1, 3)).astype(np.float32))
    d, dx, dy = kf.motion_compensated_diff(cur, prev, coarse(cur), coarse(prev), 3)
    # coarse-to-fine is a restricted search: never below the exhaustive minimum, never above the
    # zero-shift difference on the same interior
    exhaustive = _ref_min_shift(cur, prev, 0, 0, 7, 7)[0]
    assert exhaustive - 1e-5 <= d <= _ref_shifted(cur, prev, 0, 0, 7) + 1e-5
    assert d == pytest.approx(_ref_shifted(cur, prev, dx, dy, 7), rel=1e-5)
    assert d > 10.0  # unrelated content stays different whatever the shift
