"""Numba kernels for the per-frame shot-analysis feature pass.

The only part of the per-frame pass that numpy/OpenCV do badly is the *motion-compensated*
frame difference: the minimum, over a small window of integer translations, of the mean
absolute LAB difference between the current and the previous downscaled frame. In numpy that
is one temporary array per candidate shift (~50-100 shifts per frame); here it is one fused
loop with no temporaries. Resizing and the sRGB -> CIELAB conversion stay in OpenCV (fast, and
the project's single definition of LAB).

Conventions: images are float32 ``(H, W, C)`` C-contiguous arrays in the same units (LAB here).
A shift ``(dx, dy)`` compares ``cur[y, x]`` with ``prev[y + dy, x + dx]``, so content that moved
RIGHT by ``s`` pixels between ``prev`` and ``cur`` is matched at ``dx = -s``.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def shifted_mean_abs_diff(cur, prev, dx, dy, margin):
    """Mean |cur[y, x] - prev[y + dy, x + dx]| over the interior ``margin`` px in from each edge.

    Parameters
    ----------
    cur, prev : float32 (H, W, C)
    dx, dy : int, shift in pixels; ``|dx|, |dy| <= margin`` is required (not checked).
    margin : int, pixels excluded at every edge of ``cur`` so all shifts see the same pixels.

    Returns
    -------
    float, mean absolute difference per channel value (input units).
    """
    h, w, c = cur.shape
    acc = 0.0
    for y in range(margin, h - margin):
        py = y + dy
        for x in range(margin, w - margin):
            px = x + dx
            for k in range(c):
                acc += abs(cur[y, x, k] - prev[py, px, k])
    count = (h - 2 * margin) * (w - 2 * margin) * c
    return acc / max(count, 1)


@numba.njit(cache=True, nogil=True)
def min_shift_mean_abs_diff(cur, prev, center_dx, center_dy, radius, margin):
    """Exhaustive search of the translation that best aligns ``prev`` onto ``cur``.

    Tries every integer shift ``(center_dx + i, center_dy + j)`` with ``|i|, |j| <= radius`` and
    returns the lowest :func:`shifted_mean_abs_diff`. Ties keep the shift closest to the centre
    (searched first), so a static scene reports ``(0, 0)``.

    Parameters
    ----------
    cur, prev : float32 (H, W, C)
    center_dx, center_dy : int, centre of the search window in pixels.
    radius : int, search radius in pixels.
    margin : int, edge exclusion in pixels; must be >= ``max(|center|) + radius``.

    Returns
    -------
    (best_diff, best_dx, best_dy) : (float, int, int)
    """
    best = shifted_mean_abs_diff(cur, prev, center_dx, center_dy, margin)
    best_dx = center_dx
    best_dy = center_dy
    best_r = 0
    for j in range(-radius, radius + 1):
        for i in range(-radius, radius + 1):
            if i == 0 and j == 0:
                continue
            d = shifted_mean_abs_diff(cur, prev, center_dx + i, center_dy + j, margin)
            r = abs(i) + abs(j)
            if d < best or (d == best and r < best_r):
                best = d
                best_dx = center_dx + i
                best_dy = center_dy + j
                best_r = r
    return best, best_dx, best_dy


def motion_compensated_diff(cur_fine, prev_fine, cur_coarse, prev_coarse, coarse_radius=3):
    """Coarse-to-fine motion-compensated mean abs difference between two frames.

    The coarse level (half the fine resolution) is searched exhaustively within
    ``coarse_radius`` px; the fine level refines ``2 * coarse_shift`` by +-1 px.

    Parameters
    ----------
    cur_fine, prev_fine : float32 (H, W, C), e.g. 96x54 LAB.
    cur_coarse, prev_coarse : float32 (H // 2, W // 2, C), e.g. 48x27 LAB.
    coarse_radius : int, search radius at the coarse level in coarse pixels.

    Returns
    -------
    (diff, dx, dy) : mean abs difference at the fine level (input units) and the best shift in
        fine pixels (see module docstring for the sign).
    """
    _, cdx, cdy = min_shift_mean_abs_diff(cur_coarse, prev_coarse, 0, 0, coarse_radius, coarse_radius)
    fine_margin = 2 * coarse_radius + 1
    # The fine search must also consider the zero shift, so a static or nearly static scene is
    # never scored worse than its plain difference on the same interior.
    d0 = shifted_mean_abs_diff(cur_fine, prev_fine, 0, 0, fine_margin)
    d, dx, dy = min_shift_mean_abs_diff(cur_fine, prev_fine, 2 * cdx, 2 * cdy, 1, fine_margin)
    if d0 <= d:
        return float(d0), 0, 0
    return float(d), int(dx), int(dy)
