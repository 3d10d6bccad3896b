"""Colour analysis and colour/tone transfer for stylecast.

A *look* is summarised as statistics of sparse pixel samples in CIELAB (:class:`ColorStats`).
At render time a transfer from a source shot's statistics to the template's statistics is fitted
(:func:`fit_transfer`), baked into an RGB→RGB 3D LUT (:func:`transfer_lut`) and applied by the render
kernel (``kernels.render.lut_apply``, tetrahedral). This module also reads/writes Adobe/Resolve ``.cube``
files and provides the colour metrics the tests use.

Conventions (shared with the whole project):

* Frames are ``uint8`` ``(H, W, 3)`` RGB. CIELAB is ``cv2.cvtColor(rgb_float32_0_1, cv2.COLOR_RGB2Lab)``
  (sRGB, D65): L* in 0..100, a*/b* roughly -128..127.
* A 3D LUT is float32 ``(N, N, N, 3)`` in 0..1 indexed ``lut[r, g, b, channel]``, grid points at
  ``i / (N - 1)``.

Transfer model (see :func:`fit_transfer`): a Monge–Kantorovich linear (MKL) map in LAB for the global and
cross-channel part (e.g. split toning, where a*/b* depend on L*), followed by per-channel monotone 1-D
quantile-matching curves (PCHIP through regularised knots) that fix the non-Gaussian shape of each marginal
(S-curves, crushed highlights, lifted blacks). Everything is a pure, deterministic function of its inputs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "QUANTILE_LEVELS",
    "LUMA_PERCENTILES",
    "CHROMA_PERCENTILES",
    "ColorStats",
    "ToneCurve",
    "ColorTransfer",
    "rgb_to_lab",
    "lab_to_rgb",
    "color_stats",
    "merge_stats",
    "fit_transfer",
    "apply_transfer_lab",
    "transfer_lut",
    "identity_lut",
    "neutral_reference_stats",
    "look_lut",
    "write_cube",
    "read_cube",
    "apply_lut_reference",
    "palette_distance",
    "delta_e76",
]

#: Quantile levels (probabilities) at which :attr:`ColorStats.quantiles` are stored: 33 evenly spaced levels
#: ``0, 1/32, ..., 1`` with the two ends pulled in to 0.005 / 0.995 so single outlier pixels do not define them.
QUANTILE_LEVELS: tuple[float, ...] = tuple(
    float(v) for v in np.clip(np.linspace(0.0, 1.0, 33), 0.005, 0.995)
)
#: Percentiles (0..100) of L* stored in :attr:`ColorStats.luma_percentiles`.
LUMA_PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
#: Percentiles (0..100) of chroma C*ab stored in :attr:`ColorStats.chroma_percentiles`.
CHROMA_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
#: Number of equal-count L* bands of :attr:`ColorStats.chroma_by_luma` (tone-dependent colour cast).
LUMA_BANDS: int = 8

# Covariance floor (LAB units²) added to both covariances before fitting MKL: keeps the map finite for
# flat/grey shots and stops it from amplifying noise along near-degenerate directions.
_COV_FLOOR = 4.0
# Eigenvalue limits of the (symmetric) MKL matrix: no direction is stretched/compressed more than this.
_MKL_EIG_RANGE = (0.25, 4.0)
# Slope limits of the 1-D quantile curves (output units per input unit): avoids banding / posterisation.
_CURVE_SLOPE_RANGE = (0.25, 4.0)
# Slope limits used for linear extrapolation beyond the sampled range of a curve.
_EXTRAP_SLOPE_RANGE = (0.5, 1.5)
# Pseudo-pixels drawn (deterministically) when the source is given as statistics only.
_N_PSEUDO = 8192
# Source pixels used at most when fitting from raw pixels (deterministic stride subsample).
_N_FIT_MAX = 50_000


# ----------------------------------------------------------------------------------------------------------
# Colour space
# ----------------------------------------------------------------------------------------------------------


def _as_unit_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected trailing dimension 3 (RGB), got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / np.float32(255.0)
    return np.asarray(rgb, dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert RGB to CIELAB with the project convention.

    Parameters
    ----------
    rgb : np.ndarray, shape (..., 3)
        ``uint8`` (0..255) or float (0..1) sRGB values; any leading shape.

    Returns
    -------
    np.ndarray, float32, shape (..., 3)
        L* in 0..100, a*/b* roughly -128..127 (``cv2.COLOR_RGB2Lab`` on float32 input, D65).
    """
    unit = _as_unit_rgb(rgb)
    shape = unit.shape
    flat = np.ascontiguousarray(unit.reshape(-1, 1, 3))
    if flat.shape[0] == 0:
        return np.zeros(shape, dtype=np.float32)
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2Lab)
    return lab.reshape(shape).astype(np.float32, copy=False)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (project convention) back to sRGB.

    Parameters
    ----------
    lab : np.ndarray, shape (..., 3)
        L* in 0..100, a*/b* in LAB units; any leading shape.

    Returns
    -------
    np.ndarray, float32, shape (..., 3)
        sRGB in 0..1, clipped (out-of-gamut colours are clipped per channel).
    """
    lab = np.asarray(lab, dtype=np.float32)
    if lab.shape[-1] != 3:
        raise ValueError(f"expected trailing dimension 3 (LAB), got shape {lab.shape}")
    shape = lab.shape
    flat = np.ascontiguousarray(lab.reshape(-1, 1, 3))
    if flat.shape[0] == 0:
        return np.zeros(shape, dtype=np.float32)
    rgb = cv2.cvtColor(flat, cv2.COLOR_Lab2RGB)
    return np.clip(rgb.reshape(shape), 0.0, 1.0).astype(np.float32, copy=False)


def _as_lab_pixels(lab_pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(lab_pixels, dtype=np.float64)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected LAB pixels with trailing dimension 3, got shape {arr.shape}")
    arr = arr.reshape(-1, 3)
    return arr[np.all(np.isfinite(arr), axis=1)]


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------


class ColorStats(BaseModel):
    """Summary statistics of a set of CIELAB pixels (JSON-friendly).

    Attributes
    ----------
    mean : list[float], length 3
        Mean (L*, a*, b*).
    cov : list[list[float]], 3×3
        Covariance of (L*, a*, b*) in LAB units² (population covariance).
    quantile_levels : list[float]
        Probabilities of :attr:`quantiles` (``QUANTILE_LEVELS``: 33 levels 0.005, 1/32, ..., 31/32, 0.995).
    quantiles : list[list[float]], 3 × len(quantile_levels)
        Per-channel quantiles ``quantiles[channel][k]`` of L*, a*, b*.
    n_pixels : int
        Number of pixels the statistics were computed from (weights pooling).
    luma_percentiles : dict[str, float]
        Percentiles of L* (0..100) keyed ``"p1", "p5", "p25", "p50", "p75", "p95", "p99"``.
    contrast : float
        ``p95 - p5`` of L* (L* units): the tonal spread.
    saturation_mean : float
        Mean chroma ``C*ab = sqrt(a*² + b*²)`` (LAB units). Saturation here always means C*ab.
    chroma_percentiles : dict[str, float]
        Percentiles of C*ab keyed ``"p5", "p25", "p50", "p75", "p95"``.
    chroma_by_luma : list[list[float]], LUMA_BANDS × 3
        Tone-dependent colour cast: the pixels sorted by L* are split into ``LUMA_BANDS`` equal-count bands
        (darkest first); per band ``[median L*, mean a*, mean b*]``. Empty when unknown.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mean: list[float] = Field(min_length=3, max_length=3)
    cov: list[list[float]]
    quantile_levels: list[float]
    quantiles: list[list[float]]
    n_pixels: int = Field(ge=0)
    luma_percentiles: dict[str, float]
    contrast: float
    saturation_mean: float
    chroma_percentiles: dict[str, float]
    chroma_by_luma: list[list[float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shapes(self) -> ColorStats:
        _check_shape("cov", self.cov, 3, 3)
        # Shots are compared level by level (the plan stacks their quantiles): every one is on the same grid.
        if len(self.quantile_levels) != len(QUANTILE_LEVELS) or not np.allclose(self.quantile_levels,
                                                                                 QUANTILE_LEVELS, atol=1e-9):
            raise ValueError(f"quantile_levels must be the {len(QUANTILE_LEVELS)} levels stylecast measures "
                             f"({QUANTILE_LEVELS[0]}, {QUANTILE_LEVELS[1]}, ..., {QUANTILE_LEVELS[-1]})")
        _check_shape("quantiles", self.quantiles, 3, len(self.quantile_levels))
        check_percentile_keys("luma_percentiles", self.luma_percentiles, LUMA_PERCENTILES)
        check_percentile_keys("chroma_percentiles", self.chroma_percentiles, CHROMA_PERCENTILES)
        if self.chroma_by_luma:
            _check_shape("chroma_by_luma", self.chroma_by_luma, len(self.chroma_by_luma), 3)
        return self

    def mean_array(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float64)

    def cov_array(self) -> np.ndarray:
        return np.asarray(self.cov, dtype=np.float64).reshape(3, 3)

    def quantile_array(self) -> np.ndarray:
        """Quantiles as an array ``(3, K)``."""
        return np.asarray(self.quantiles, dtype=np.float64)


def _empty_stats() -> ColorStats:
    # A mid-grey point: degenerate, so any transfer fitted from/to it is shrunk to identity.
    k = len(QUANTILE_LEVELS)
    return ColorStats(
        mean=[50.0, 0.0, 0.0],
        cov=[[0.0] * 3 for _ in range(3)],
        quantile_levels=list(QUANTILE_LEVELS),
        quantiles=[[50.0] * k, [0.0] * k, [0.0] * k],
        n_pixels=0,
        luma_percentiles={f"p{p}": 50.0 for p in LUMA_PERCENTILES},
        contrast=0.0,
        saturation_mean=0.0,
        chroma_percentiles={f"p{p}": 0.0 for p in CHROMA_PERCENTILES},
        chroma_by_luma=[[50.0, 0.0, 0.0] for _ in range(LUMA_BANDS)],
    )


def color_stats(lab_pixels: np.ndarray) -> ColorStats:
    """Compute :class:`ColorStats` of CIELAB pixels.

    Parameters
    ----------
    lab_pixels : np.ndarray, shape (N, 3) (or (..., 3))
        CIELAB pixels (see :func:`rgb_to_lab`). Non-finite rows are ignored. ``N == 0`` gives a degenerate
        mid-grey statistic with ``n_pixels == 0``.

    Returns
    -------
    ColorStats
    """
    lab = _as_lab_pixels(lab_pixels)
    n = lab.shape[0]
    if n == 0:
        return _empty_stats()
    mean = lab.mean(axis=0)
    centred = lab - mean
    cov = centred.T @ centred / n
    quantiles = np.quantile(lab, QUANTILE_LEVELS, axis=0).T  # (3, K)
    luma = np.percentile(lab[:, 0], LUMA_PERCENTILES)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    chroma_p = np.percentile(chroma, CHROMA_PERCENTILES)
    return _make_stats(
        mean, cov, quantiles, n, luma, float(chroma.mean()), chroma_p, _chroma_by_luma(lab)
    )


def _chroma_by_luma(lab: np.ndarray, bands: int = LUMA_BANDS) -> np.ndarray:
    """``(bands, 3)``: per equal-count L* band (darkest first) ``[median L*, mean a*, mean b*]``."""
    order = np.argsort(lab[:, 0], kind="stable")
    out = np.empty((bands, 3))
    for k, idx in enumerate(np.array_split(order, bands)):
        if idx.size == 0:  # fewer pixels than bands: reuse the nearest pixel
            idx = order[min(k * lab.shape[0] // bands, lab.shape[0] - 1)][None]
        out[k, 0] = np.median(lab[idx, 0])
        out[k, 1:] = lab[idx, 1:].mean(axis=0)
    return out


def _make_stats(mean, cov, quantiles, n, luma, sat_mean, chroma_p, by_luma) -> ColorStats:
    luma = np.asarray(luma, dtype=np.float64)
    return ColorStats(
        mean=[float(v) for v in mean],
        cov=[[float(v) for v in row] for row in np.asarray(cov).reshape(3, 3)],
        quantile_levels=list(QUANTILE_LEVELS),
        quantiles=[[float(v) for v in row] for row in np.asarray(quantiles)],
        n_pixels=int(n),
        luma_percentiles={f"p{p}": float(v) for p, v in zip(LUMA_PERCENTILES, luma)},
        contrast=float(luma[LUMA_PERCENTILES.index(95)] - luma[LUMA_PERCENTILES.index(5)]),
        saturation_mean=float(sat_mean),
        chroma_percentiles={f"p{p}": float(v) for p, v in zip(CHROMA_PERCENTILES, chroma_p)},
        chroma_by_luma=[[float(v) for v in row] for row in np.asarray(by_luma).reshape(-1, 3)],
    )


def _mixture_quantiles(
    levels_in: np.ndarray, quantile_sets: Sequence[np.ndarray], weights: np.ndarray, levels_out: np.ndarray
) -> np.ndarray:
    """Quantiles of a weighted mixture of distributions each known through a few quantiles.

    Each component's CDF is the piecewise-linear interpolation of its (quantile, level) pairs (flat
    beyond the outermost stored levels); the mixture CDF is inverted on the union of all knots.
    """
    levels_in = np.asarray(levels_in, dtype=np.float64)
    grid = np.unique(np.concatenate([np.asarray(q, dtype=np.float64) for q in quantile_sets]))
    cdf = np.zeros_like(grid)
    for q, w in zip(quantile_sets, weights):
        q = np.maximum.accumulate(np.asarray(q, dtype=np.float64))
        if q[-1] - q[0] <= 0:  # point mass
            comp = (grid >= q[0]).astype(np.float64)
        else:
            comp = np.interp(grid, q, levels_in, left=0.0, right=1.0)
        cdf += w * comp
    cdf = np.maximum.accumulate(cdf)
    if grid.size == 1:
        return np.full(len(levels_out), grid[0])
    # Invert: first grid value reaching each level (interp on the non-decreasing CDF).
    cdf_u, idx = np.unique(cdf, return_index=True)
    if cdf_u.size == 1:
        return np.full(len(levels_out), grid[idx[0]])
    return np.interp(levels_out, cdf_u, grid[idx])


def merge_stats(stats: Sequence[ColorStats]) -> ColorStats:
    """Pool the statistics of several shots/frames, weighted by pixel count.

    Mean and covariance are pooled exactly (within- plus between-group covariance). Quantiles, L*
    percentiles and chroma percentiles are pooled by inverting the weighted mixture of the per-part CDFs
    (each interpolated from its stored quantiles) — accurate to within the quantile spacing. For exact
    pooled quantiles, concatenate the raw LAB pixels and call :func:`color_stats` instead.

    Parameters
    ----------
    stats : sequence of ColorStats
        Parts to pool; parts with ``n_pixels == 0`` are ignored.

    Returns
    -------
    ColorStats
    """
    parts = [s for s in stats if s.n_pixels > 0]
    if not parts:
        return _empty_stats()
    if len(parts) == 1:
        return parts[0].model_copy(deep=True)
    n = np.array([s.n_pixels for s in parts], dtype=np.float64)
    w = n / n.sum()
    means = np.stack([s.mean_array() for s in parts])
    mean = w @ means
    cov = np.zeros((3, 3))
    for wi, s, m in zip(w, parts, means):
        d = (m - mean)[:, None]
        cov += wi * (s.cov_array() + d @ d.T)
    levels = np.asarray(QUANTILE_LEVELS)
    quantiles = np.stack(
        [
            _mixture_quantiles(
                np.asarray(parts[0].quantile_levels), [s.quantile_array()[c] for s in parts], w, levels
            )
            for c in range(3)
        ]
    )
    luma_levels = np.asarray(LUMA_PERCENTILES, dtype=np.float64) / 100.0
    luma = _mixture_quantiles(
        luma_levels,
        [np.array([s.luma_percentiles[f"p{p}"] for p in LUMA_PERCENTILES]) for s in parts],
        w,
        luma_levels,
    )
    chroma_levels = np.asarray(CHROMA_PERCENTILES, dtype=np.float64) / 100.0
    chroma_p = _mixture_quantiles(
        chroma_levels,
        [np.array([s.chroma_percentiles[f"p{p}"] for p in CHROMA_PERCENTILES]) for s in parts],
        w,
        chroma_levels,
    )
    sat_mean = float(w @ np.array([s.saturation_mean for s in parts]))
    # Band tables are averaged band-by-band (bands are rank-based, so this is the pooled table when the
    # parts have similar L* distributions; approximate otherwise).
    tables = [np.asarray(s.chroma_by_luma, dtype=np.float64) for s in parts]
    if all(t.shape == (LUMA_BANDS, 3) for t in tables):
        by_luma = sum(wi * t for wi, t in zip(w, tables))
    else:
        by_luma = np.zeros((0, 3))
    return _make_stats(mean, cov, quantiles, int(n.sum()), luma, sat_mean, chroma_p, by_luma)


# ----------------------------------------------------------------------------------------------------------
# Transfer model
# ----------------------------------------------------------------------------------------------------------


def _check_shape(name: str, rows: list[list[float]], n_rows: int, n_cols: int) -> None:
    if len(rows) != n_rows or any(len(r) != n_cols for r in rows):
        raise ValueError(f"{name} must be {n_rows} rows of {n_cols} values")


def check_percentile_keys(name: str, values: dict[str, float], percentiles: tuple[int, ...]) -> None:
    """``values`` must be keyed by exactly ``p<percentile>`` for each of ``percentiles`` (what is measured)."""
    expected = {f"p{p}" for p in percentiles}
    if set(values) != expected:
        missing, unknown = sorted(expected - set(values)), sorted(set(values) - expected)
        raise ValueError(f"{name} must have the keys {', '.join(f'p{p}' for p in percentiles)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))


class ToneCurve(BaseModel):
    """A monotone 1-D curve: PCHIP through knots ``(x, y)``, linear beyond them.

    Attributes
    ----------
    x, y : list[float]
        Knots (input / output, LAB units); ``x`` strictly increasing, ``y`` non-decreasing.
    slope_low, slope_high : float
        Slopes of the linear extrapolation below ``x[0]`` / above ``x[-1]``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    x: list[float]
    y: list[float]
    slope_low: float = 1.0
    slope_high: float = 1.0

    @model_validator(mode="after")
    def _knots(self) -> ToneCurve:
        if len(self.x) != len(self.y) or len(self.x) < 2:
            raise ValueError(f"x and y must be two equally long lists of at least 2 knots, got {len(self.x)} "
                             f"and {len(self.y)}")
        if any(b <= a for a, b in zip(self.x, self.x[1:])):
            raise ValueError("x must be strictly increasing")
        return self


class ColorTransfer(BaseModel):
    """A fitted LAB→LAB colour/tone transfer (JSON-serialisable).

    ``out = x + strength_eff * (T(x) - x)`` where ``T(x)_c = curve_c((matrix @ (x - src_mean) + dst_mean)_c)``
    and ``strength_eff = strength * confidence``.

    Attributes
    ----------
    color, tone : bool
        Which channels are transferred: ``tone`` = L*, ``color`` = a*/b*.
    strength : float
        Blend with identity requested by the caller (0 = identity, 1 = full transfer).
    confidence : float
        0..1 shrink factor from the source statistics' reliability (flat, tiny or black shots get 0, i.e.
        identity).
    src_mean, dst_mean : list[float]
        Centre of the linear stage (LAB).
    matrix : list[list[float]]
        3×3 linear (MKL) matrix in LAB.
    curves : list[ToneCurve | None]
        Per-channel (L*, a*, b*) 1-D curves applied after the linear stage; ``None`` = identity.
    cast_luma, cast_ab : list[float], list[[da, db]]
        Tone-dependent colour-cast correction applied last: ``(a*, b*) += interp(L*_out, cast_luma,
        cast_ab)`` (constant beyond the ends). Empty = none.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    color: bool = True
    tone: bool = True
    strength: float = 1.0
    confidence: float = 1.0
    src_mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    dst_mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    matrix: list[list[float]] = Field(default_factory=lambda: np.eye(3).tolist())
    curves: list[ToneCurve | None] = Field(default_factory=lambda: [None, None, None])
    cast_luma: list[float] = Field(default_factory=list)
    cast_ab: list[list[float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shapes(self) -> ColorTransfer:
        for name in ("src_mean", "dst_mean"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must have 3 values, got {len(getattr(self, name))}")
        _check_shape("matrix", self.matrix, 3, 3)
        if len(self.curves) != 3:
            raise ValueError(f"curves must have 3 entries (L*, a*, b*; null for none), got {len(self.curves)}")
        _check_shape("cast_ab", self.cast_ab, len(self.cast_luma), 2)
        return self

    @property
    def effective_strength(self) -> float:
        return float(self.strength * self.confidence)


def _sqrtm_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric square root and inverse square root of a PSD matrix."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2.0)
    vals = np.maximum(vals, 1e-12)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    inv_root = (vecs / np.sqrt(vals)) @ vecs.T
    return root, inv_root


def _mkl_matrix(cov_src: np.ndarray, cov_dst: np.ndarray) -> np.ndarray:
    """Monge–Kantorovich linear map ``A`` with ``A Σs Aᵀ = Σt`` (symmetric PD), eigenvalues limited."""
    d = cov_src.shape[0]
    cs = cov_src + _COV_FLOOR * np.eye(d)
    ct = cov_dst + _COV_FLOOR * np.eye(d)
    cs_half, cs_inv_half = _sqrtm_psd(cs)
    middle, _ = _sqrtm_psd(cs_half @ ct @ cs_half)
    a = cs_inv_half @ middle @ cs_inv_half
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    vals = np.clip(vals, *_MKL_EIG_RANGE)
    return (vecs * vals) @ vecs.T


def _block_linear_map(cov_src: np.ndarray, cov_dst: np.ndarray) -> np.ndarray:
    """Block-triangular linear map in LAB that sends covariance ``Σs`` to ``Σt``.

    L* is mapped from L* alone (a tone gain); the chroma c = (a*, b*) is split into its regression on L*
    (``c = β L* + r``) and the residual r. The map scales L*, replaces the source slope β by the target slope
    (this is what split toning / tone-dependent casts are), and maps the residual with the 2-D MKL map of the
    residual covariances. Unlike the full symmetric 3-D MKL map it represents a chroma-vs-lightness shear
    exactly and never makes lightness depend on hue.
    """
    cs = cov_src + _COV_FLOOR * np.eye(3)
    ct = cov_dst + _COV_FLOOR * np.eye(3)
    gain = float(np.clip(np.sqrt(ct[0, 0] / cs[0, 0]), *_MKL_EIG_RANGE))
    beta_s = cs[1:, 0] / cs[0, 0]
    beta_t = ct[1:, 0] / ct[0, 0]
    res_s = cs[1:, 1:] - np.outer(cs[1:, 0], cs[1:, 0]) / cs[0, 0]
    res_t = ct[1:, 1:] - np.outer(ct[1:, 0], ct[1:, 0]) / ct[0, 0]
    m = _mkl_matrix(res_s, res_t)
    a = np.zeros((3, 3))
    a[0, 0] = gain
    # c' - μc' = β_t (L' - μL') + M (c - μc - β_s (L - μL))
    a[1:, 0] = beta_t * gain - m @ beta_s
    a[1:, 1:] = m
    return a


def _pseudo_pixels(stats: ColorStats, n: int = _N_PSEUDO) -> np.ndarray:
    """Deterministic pseudo-pixels that reproduce ``stats``: Gaussian copula with the stats' correlation
    and the stats' per-channel quantile functions as marginals (used when only statistics are known)."""
    rng = np.random.default_rng(0x5EED)
    cov = stats.cov_array()
    std = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = cov / np.outer(std, std)
    corr = (corr + corr.T) / 2.0 + 1e-6 * np.eye(3)
    vals, vecs = np.linalg.eigh(corr)
    root = vecs * np.sqrt(np.maximum(vals, 0.0))
    z = rng.standard_normal((n, 3)) @ root.T
    levels = np.asarray(stats.quantile_levels)
    q = stats.quantile_array()
    # Stratified marginals: the k-th smallest value of each channel is the quantile at (k + 0.5) / n, so the
    # pseudo-pixels reproduce the stored quantiles exactly (no sampling noise); z only sets the dependence.
    u_sorted = (np.arange(n) + 0.5) / n
    out = np.empty((n, 3))
    for c in range(3):
        qc = np.maximum.accumulate(q[c])
        ranks = np.argsort(np.argsort(z[:, c], kind="stable"), kind="stable")
        out[:, c] = np.interp(u_sorted, levels, qc)[ranks]
    # Reproduce the tone-dependent cast too: shift a*/b* per L* band to the stored band means.
    table = np.asarray(stats.chroma_by_luma, dtype=np.float64)
    if table.shape == (LUMA_BANDS, 3):
        order = np.argsort(out[:, 0], kind="stable")
        for k, idx in enumerate(np.array_split(order, LUMA_BANDS)):
            out[idx, 1:] += table[k, 1:] - out[idx, 1:].mean(axis=0)
        # ...and restore the exact a*/b* marginals by rank (keeps the band structure almost unchanged).
        for c in (1, 2):
            ranks = np.argsort(np.argsort(out[:, c], kind="stable"), kind="stable")
            out[:, c] = np.interp(u_sorted, levels, np.maximum.accumulate(q[c]))[ranks]
    return out


def _source_confidence(src_lab: np.ndarray) -> float:
    """0..1 reliability of a source sample: needs some pixels and some tonal or chromatic spread."""
    n = src_lab.shape[0]
    if n < 2:
        return 0.0
    n_conf = np.clip((n - 8.0) / (64.0 - 8.0), 0.0, 1.0)
    # Spread in L* (5..95 percentile range): below 2 units the shot is flat/black; full trust from 8 units.
    lo, hi = np.percentile(src_lab[:, 0], [5, 95])
    spread_conf = np.clip(((hi - lo) - 2.0) / (8.0 - 2.0), 0.0, 1.0)
    return float(n_conf * spread_conf)


# Quantile curves use every stored level (33 knots: 17 left 6 points of palette match on the table).  They may be pulled part-way towards the stage-1
# output (weights per L*, a*, b*): full marginal matching also "matches" content differences between the
# source and the template.  The planner already pairs each source shot with the template shots of similar
# content (see `stylecast.plan._color_targets`), so full matching is used: with 0.8/0.7 the palette of an
# output stayed measurably further from the template's (64% vs 70% palette-distance reduction).
_CURVE_KNOT_STEP = 1
_CURVE_SMOOTH_PASSES = 1
_CURVE_WEIGHT = (1.0, 1.0, 1.0)
# Tone-dependent cast correction (a*/b* offsets per L* band): gain, bound (LAB units) and the largest
# change per L* unit (steeper band-to-band differences are content differences between shots; measured on
# a bimodal sky/ground scene they otherwise cost ~40 points of ΔE recovery).
_CAST_WEIGHT = 1.0
_CAST_MAX = 15.0
_CAST_SLOPE = 0.3  # max change of the a*/b* cast per L* unit
# Linear stage: "block" (L* from L* alone, chroma-vs-L* shear, 2-D MKL on the chroma residual) or "mkl"
# (full symmetric 3-D Monge–Kantorovich map). "block" recovers split toning far better (74% vs 45% ΔE
# reduction on testvideo teal/orange) because a symmetric map cannot represent a shear.
_LINEAR = "block"


def _regularised_curve(
    x_knots: np.ndarray, y_knots: np.ndarray, weight: float = 1.0, smooth_passes: int = 1
) -> ToneCurve | None:
    """Monotone, slope-limited, lightly smoothed curve through quantile pairs ``(x_k, y_k)``."""
    x = np.maximum.accumulate(np.asarray(x_knots, dtype=np.float64))
    y = np.maximum.accumulate(np.asarray(y_knots, dtype=np.float64))
    y = x + weight * (y - x)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    span = x[-1] - x[0]
    if span < 1e-3:
        return None
    # Merge knots closer than 1/200 of the span (ties in the source quantiles) so slopes stay bounded.
    min_dx = max(span / 200.0, 1e-3)
    keep_x, keep_y, bucket_y = [x[0]], [], [y[0]]
    for xi, yi in zip(x[1:], y[1:]):
        if xi - keep_x[-1] < min_dx:
            bucket_y.append(yi)
        else:
            keep_y.append(float(np.mean(bucket_y)))
            keep_x.append(xi)
            bucket_y = [yi]
    keep_y.append(float(np.mean(bucket_y)))
    x = np.asarray(keep_x)
    y = np.asarray(keep_y)
    if x.size < 2:
        return None
    dx = np.diff(x)
    slopes = np.diff(y) / dx
    # Light smoothing of the slopes (quantiles of finite samples are noisy), then slope limits.
    for _ in range(smooth_passes if slopes.size >= 3 else 0):
        padded = np.concatenate([slopes[:1], slopes, slopes[-1:]])
        wts = np.concatenate([dx[:1], dx, dx[-1:]])
        num = 0.25 * padded[:-2] * wts[:-2] + 0.5 * padded[1:-1] * wts[1:-1] + 0.25 * padded[2:] * wts[2:]
        den = 0.25 * wts[:-2] + 0.5 * wts[1:-1] + 0.25 * wts[2:]
        slopes = num / den
    slopes = np.clip(slopes, *_CURVE_SLOPE_RANGE)
    y_new = np.concatenate([[0.0], np.cumsum(slopes * dx)])
    # Re-anchor: same average output as the matched quantiles (keeps the mean right).
    y_new += np.mean(y - y_new)
    tail = min(max(3, slopes.size // 4), slopes.size)
    slope_low = float(np.clip(np.sum(slopes[:tail] * dx[:tail]) / np.sum(dx[:tail]), *_EXTRAP_SLOPE_RANGE))
    slope_high = float(
        np.clip(np.sum(slopes[-tail:] * dx[-tail:]) / np.sum(dx[-tail:]), *_EXTRAP_SLOPE_RANGE)
    )
    return ToneCurve(
        x=[float(v) for v in x], y=[float(v) for v in y_new], slope_low=slope_low, slope_high=slope_high
    )


def pchip(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation through ``(x, y)`` (x strictly increasing), at ``v``
    within ``[x[0], x[-1]]``: what ``scipy.interpolate.PchipInterpolator(x, y)(v)`` computes (Fritsch-Carlson
    slopes: weighted harmonic means inside, zero at extrema; the one-sided three-point rule at the ends).

    Our own because importing scipy.interpolate costs ~0.15 s per process, on every job's critical path.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.zeros_like(y)
    if x.size == 2:
        d[:] = m[0]
    else:
        w1 = 2.0 * h[1:] + h[:-1]
        w2 = h[1:] + 2.0 * h[:-1]
        same = (np.sign(m[:-1]) * np.sign(m[1:])) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
        d[1:-1] = np.where(same, harmonic, 0.0)
        d[0] = _pchip_end_slope(h[0], h[1], m[0], m[1])
        d[-1] = _pchip_end_slope(h[-1], h[-2], m[-1], m[-2])
    v = np.asarray(v, np.float64)
    k = np.clip(np.searchsorted(x, v, side="right") - 1, 0, x.size - 2)
    t = (v - x[k]) / h[k]
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * y[k] + (t3 - 2 * t2 + t) * h[k] * d[k]
            + (-2 * t3 + 3 * t2) * y[k + 1] + (t3 - t2) * h[k] * d[k + 1])


def _pchip_end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """End slope of `pchip`: the non-centred three-point formula, kept shape-preserving."""
    d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3.0 * m0):
        return 3.0 * m0
    return float(d)


def _eval_curve(curve: ToneCurve, values: np.ndarray) -> np.ndarray:
    x = np.asarray(curve.x, dtype=np.float64)
    y = np.asarray(curve.y, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if x.size == 2:
        out = np.interp(v, x, y)
    else:
        out = pchip(x, y, np.clip(v, x[0], x[-1]))
    out = np.where(v < x[0], y[0] + curve.slope_low * (v - x[0]), out)
    out = np.where(v > x[-1], y[-1] + curve.slope_high * (v - x[-1]), out)
    return out


def _linear_stage(transfer: ColorTransfer, lab: np.ndarray) -> np.ndarray:
    a = np.asarray(transfer.matrix, dtype=np.float64)
    mu_s = np.asarray(transfer.src_mean, dtype=np.float64)
    mu_t = np.asarray(transfer.dst_mean, dtype=np.float64)
    return (lab - mu_s) @ a.T + mu_t


def _full_transfer(transfer: ColorTransfer, lab: np.ndarray) -> np.ndarray:
    out = _linear_stage(transfer, lab)
    for c, curve in enumerate(transfer.curves):
        if curve is not None:
            out[:, c] = _eval_curve(curve, out[:, c])
    if transfer.cast_luma:
        knots = np.asarray(transfer.cast_luma, dtype=np.float64)
        offsets = np.asarray(transfer.cast_ab, dtype=np.float64)
        for j in range(2):
            out[:, 1 + j] += np.interp(out[:, 0], knots, offsets[:, j])
    return out


def fit_transfer(
    src: ColorStats | np.ndarray,
    dst: ColorStats,
    *,
    color: bool = True,
    tone: bool = True,
    strength: float = 1.0,
) -> ColorTransfer:
    """Fit a LAB colour/tone transfer from a source look to a destination (template) look.

    Three stages, all fitted on the source distribution:

    1. A linear map in LAB that moves the mean and sends the source covariance to the template's
       (covariances floored by 4 LAB units²): L* is scaled from L* alone; chroma gets the template's
       regression on L* (the shear that split toning / warm-highlights casts are) and its residual is
       mapped by the 2-D Monge–Kantorovich (MKL) map, eigenvalues limited to 0.25..4 (see
       ``_block_linear_map``; a full symmetric 3-D MKL map cannot represent that shear).
    2. Per channel a monotone 1-D quantile-matching curve from the stage-1 output's quantiles to the
       template's (at every one of ``QUANTILE_LEVELS``; ``_CURVE_WEIGHT`` sets how far from identity, now
       all the way: the planner already pairs each source shot with template shots of similar content),
       slope-limited to 0.25..4, smoothed, PCHIP-interpolated, linearly extrapolated (end slopes 0.5..1.5).
    3. A tone-dependent cast correction: a*/b* offsets per equal-count L* band so the band means match
       ``dst.chroma_by_luma`` (±0.25-unit dead band, bounded to ±15 units and to 0.3 units change per L*
       unit, linear in L* between band medians, constant beyond).

    Stages 2-3 need the distribution of the stage-1 output. When ``src`` is raw LAB pixels it is computed
    exactly; when ``src`` is a :class:`ColorStats` it is approximated with deterministic pseudo-pixels
    (Gaussian copula of ``src.cov`` with ``src.quantiles`` marginals). Pass pixels when you have them.

    Parameters
    ----------
    src : ColorStats or np.ndarray, shape (N, 3)
        Source look: statistics, or pooled CIELAB pixels of the source shot (preferred).
    dst : ColorStats
        Destination (template) look.
    color : bool
        Transfer the chroma channels a*/b* (their dependence on L* included when ``tone`` is also on).
    tone : bool
        Transfer L* (lightness/contrast curve). With ``tone=False`` L* is left unchanged; with
        ``color=False`` a*/b* are left unchanged.
    strength : float
        0..1 blend with identity (0 = identity, values above 1 extrapolate).

    Returns
    -------
    ColorTransfer
        ``confidence`` is 0 (identity) for degenerate sources: fewer than 2 pixels, or an L* 5–95
        percentile range below 2 units (flat colour, black frame); it ramps to 1 at ≥ 64 pixels and ≥ 8
        L* units of spread.
    """
    src_moments = None
    if isinstance(src, ColorStats):
        src_lab = _pseudo_pixels(src) if src.n_pixels >= 2 else np.zeros((0, 3))
        src_moments = (src.mean_array(), src.cov_array())
    else:
        src_lab = _as_lab_pixels(src)
        if src_lab.shape[0] > _N_FIT_MAX:
            step = int(np.ceil(src_lab.shape[0] / _N_FIT_MAX))
            src_lab = src_lab[::step]
    base = ColorTransfer(color=bool(color), tone=bool(tone), strength=float(strength))
    if not (color or tone) or dst.n_pixels < 2:
        base.confidence = 0.0
        return base
    confidence = _source_confidence(src_lab)
    if isinstance(src, ColorStats):
        confidence *= float(np.clip((src.n_pixels - 8.0) / (64.0 - 8.0), 0.0, 1.0))
    if confidence <= 0.0:
        base.confidence = 0.0
        return base

    if src_moments is not None:
        mu_s, cov_s = src_moments
    else:
        mu_s = src_lab.mean(axis=0)
        centred = src_lab - mu_s
        cov_s = centred.T @ centred / src_lab.shape[0]
    mu_t = dst.mean_array()
    cov_t = dst.cov_array()

    if color and tone:
        a = _block_linear_map(cov_s, cov_t) if _LINEAR == "block" else _mkl_matrix(cov_s, cov_t)
        shift_t = mu_t
    elif tone:
        # L* only, as a function of L* only (a pure tone curve).
        a = np.eye(3)
        a[0, 0] = _mkl_matrix(cov_s[:1, :1], cov_t[:1, :1])[0, 0]
        shift_t = np.array([mu_t[0], mu_s[1], mu_s[2]])
    else:
        # a*/b* only, but allowed to depend on L* (split toning): take the full MKL rows for a*/b* and
        # keep L* fixed.
        a = _block_linear_map(cov_s, cov_t) if _LINEAR == "block" else _mkl_matrix(cov_s, cov_t)
        a[0] = [1.0, 0.0, 0.0]
        shift_t = np.array([mu_s[0], mu_t[1], mu_t[2]])

    base.src_mean = [float(v) for v in mu_s]
    base.dst_mean = [float(v) for v in shift_t]
    base.matrix = [[float(v) for v in row] for row in a]

    stage1 = _linear_stage(base, src_lab)
    levels = np.asarray(dst.quantile_levels)
    q_dst = dst.quantile_array()
    curves: list[ToneCurve | None] = [None, None, None]
    channels = ([0] if tone else []) + ([1, 2] if color else [])
    for c in channels:
        q_src = np.quantile(stage1[:, c], levels)
        sel = np.unique(np.r_[np.arange(0, levels.size, _CURVE_KNOT_STEP), levels.size - 1])
        curves[c] = _regularised_curve(q_src[sel], q_dst[c][sel], _CURVE_WEIGHT[c], _CURVE_SMOOTH_PASSES)
    base.curves = curves
    dst_table = np.asarray(dst.chroma_by_luma, dtype=np.float64)
    if color and _CAST_WEIGHT > 0 and dst_table.shape == (LUMA_BANDS, 3):
        out_table = _chroma_by_luma(_full_transfer(base, src_lab))
        knots = out_table[:, 0]
        if np.all(np.diff(knots) > 0.5):
            resid = dst_table[:, 1:] - out_table[:, 1:]
            # Light smoothing across neighbouring bands, shrink and bound: a correction, not a repaint.
            padded = np.concatenate([resid[:1], resid, resid[-1:]])
            resid = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
            # Soft dead-band: ignore sub-0.25-unit residuals (sampling noise of ~1/8 of the pixels).
            resid = np.sign(resid) * np.maximum(np.abs(resid) - 0.25, 0.0)
            resid = np.clip(_CAST_WEIGHT * resid, -_CAST_MAX, _CAST_MAX)
            # Limit how fast the cast may change with L* (real grades tone smoothly; steep changes between
            # close bands are content differences between the shots, and would posterise).
            dl = np.diff(knots)[:, None]
            steps = np.clip(np.diff(resid, axis=0), -_CAST_SLOPE * dl, _CAST_SLOPE * dl)
            limited = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
            resid = limited + (resid - limited).mean(axis=0)
            base.cast_luma = [float(v) for v in knots]
            base.cast_ab = [[float(v) for v in row] for row in resid]
    base.confidence = confidence
    return base


def apply_transfer_lab(transfer: ColorTransfer, lab: np.ndarray) -> np.ndarray:
    """Apply a :class:`ColorTransfer` to CIELAB values.

    Parameters
    ----------
    transfer : ColorTransfer
    lab : np.ndarray, shape (..., 3)
        CIELAB values.

    Returns
    -------
    np.ndarray, float32, shape (..., 3)
        Transferred CIELAB (not gamut-clipped; :func:`lab_to_rgb` clips). L* is clamped to 0..100.
    """
    lab = np.asarray(lab, dtype=np.float64)
    shape = lab.shape
    flat = lab.reshape(-1, 3)
    s = transfer.effective_strength
    if s == 0.0 or flat.shape[0] == 0:
        return lab.astype(np.float32)
    full = _full_transfer(transfer, flat)
    out = flat + s * (full - flat)
    if not transfer.tone:
        out[:, 0] = flat[:, 0]
    if not transfer.color:
        out[:, 1:] = flat[:, 1:]
    out[:, 0] = np.clip(out[:, 0], 0.0, 100.0)
    return out.reshape(shape).astype(np.float32)


def identity_lut(size: int = 33) -> np.ndarray:
    """Identity 3D LUT, float32 ``(size, size, size, 3)``, ``lut[r, g, b] = (r, g, b) / (size - 1)``."""
    if size < 2:
        raise ValueError("LUT size must be >= 2")
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def transfer_lut(transfer: ColorTransfer, size: int = 33) -> np.ndarray:
    """Bake a transfer into an RGB→RGB 3D LUT.

    Parameters
    ----------
    transfer : ColorTransfer
    size : int
        Grid points per axis (33 is standard).

    Returns
    -------
    np.ndarray, float32, shape (size, size, size, 3)
        Values in 0..1 (out-of-gamut results clipped), indexed ``lut[r, g, b, channel]``. The blend with
        identity is done in RGB (``grid + strength_eff * (full - grid)``), so strength 0 is exactly the
        identity LUT.
    """
    return np.clip(apply_transfer_rgb(transfer, identity_lut(size)), 0.0, 1.0).astype(np.float32)


def apply_transfer_rgb(transfer: ColorTransfer, rgb: np.ndarray) -> np.ndarray:
    """Apply a transfer to R'G'B' colours given as floats (``(..., 3)``, 0..1), exactly (no LUT).

    The grade is evaluated at the colour clipped to the RGB cube and added to it as an offset
    (``rgb + s * (graded(c) - c)``): inside the cube that is the transfer itself, and outside (YUV grid
    points a YUV LUT needs) it extends smoothly instead of bending at the cube's faces.  Not clipped.
    Strength 0 returns ``rgb`` exactly.
    """
    rgb = np.asarray(rgb, np.float64)
    s = transfer.effective_strength
    if s == 0.0:
        return rgb.copy()
    inside = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    lab = rgb_to_lab(inside).reshape(-1, 3).astype(np.float64)
    full = _full_transfer(transfer, lab)
    if not transfer.tone:
        full[:, 0] = lab[:, 0]
    if not transfer.color:
        full[:, 1:] = lab[:, 1:]
    full[:, 0] = np.clip(full[:, 0], 0.0, 100.0)
    rgb_full = lab_to_rgb(full.astype(np.float32)).reshape(rgb.shape)
    # Pin the identity part exactly (LAB round trip is accurate to ~1e-6 but not bit-exact).
    rgb_round = lab_to_rgb(lab.astype(np.float32)).reshape(rgb.shape)
    return rgb + s * (rgb_full.astype(np.float64) - rgb_round)


# ----------------------------------------------------------------------------------------------------------
# Neutral reference and look LUT
# ----------------------------------------------------------------------------------------------------------


def neutral_reference_stats() -> ColorStats:
    """Statistics of a documented "neutral footage" reference.

    Model: L* ~ Normal(mean 50, std 20) clipped to 0..100 (p5 ≈ 17, p95 ≈ 83: the tonal spread of typical
    well-exposed Rec.709 footage), a* and b* independent Normal(0, 9) (neutral mean, modest chroma:
    mean C*ab ≈ 11), all channels independent. Computed from 32768 deterministic pseudo-pixels, so the
    result is identical on every call.
    """
    rng = np.random.default_rng(20240601)
    n = 32768
    lab = np.empty((n, 3))
    lab[:, 0] = np.clip(rng.normal(50.0, 20.0, n), 0.0, 100.0)
    lab[:, 1] = rng.normal(0.0, 9.0, n)
    lab[:, 2] = rng.normal(0.0, 9.0, n)
    return color_stats(lab)


def look_lut(
    template_stats: ColorStats,
    size: int = 33,
    *,
    color: bool = True,
    tone: bool = True,
    strength: float = 1.0,
) -> np.ndarray:
    """The template's look as a standalone LUT: the transfer from :func:`neutral_reference_stats` to
    ``template_stats``, baked with :func:`transfer_lut`. Returns float32 ``(size, size, size, 3)``."""
    transfer = fit_transfer(
        neutral_reference_stats(), template_stats, color=color, tone=tone, strength=strength
    )
    return transfer_lut(transfer, size)


# ----------------------------------------------------------------------------------------------------------
# .cube I/O
# ----------------------------------------------------------------------------------------------------------


def write_cube(lut: np.ndarray, path_or_file: str | os.PathLike | IO[str], title: str = "stylecast") -> None:
    """Write a 3D LUT as an Adobe/Resolve ``.cube`` text file.

    Parameters
    ----------
    lut : np.ndarray, shape (N, N, N, 3)
        Indexed ``lut[r, g, b, channel]``, values 0..1.
    path_or_file : path or text file object
    title : str
        Written as ``TITLE "..."`` (double quotes removed from the text).

    Notes
    -----
    Rows are written with R changing fastest, then G, then B, 6 decimals, with ``DOMAIN_MIN 0 0 0`` and
    ``DOMAIN_MAX 1 1 1``.
    """
    lut = np.asarray(lut, dtype=np.float64)
    if lut.ndim != 4 or lut.shape[-1] != 3 or not (lut.shape[0] == lut.shape[1] == lut.shape[2]):
        raise ValueError(f"expected a LUT of shape (N, N, N, 3), got {lut.shape}")
    if not np.all(np.isfinite(lut)):
        raise ValueError("LUT contains non-finite values")
    n = lut.shape[0]
    safe_title = str(title).replace('"', "'").replace("\n", " ")
    lines = [
        f'TITLE "{safe_title}"',
        f"LUT_3D_SIZE {n}",
        "DOMAIN_MIN 0.0 0.0 0.0",
        "DOMAIN_MAX 1.0 1.0 1.0",
    ]
    # R fastest: iterate b (slowest), g, r -> transpose to [b, g, r].
    rows = lut.transpose(2, 1, 0, 3).reshape(-1, 3)
    body = "\n".join(f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in rows)
    text = "\n".join(lines) + "\n" + body + "\n"
    if hasattr(path_or_file, "write"):
        path_or_file.write(text)  # type: ignore[union-attr]
    else:
        Path(path_or_file).write_text(text, encoding="utf-8")


def read_cube(path_or_file: str | os.PathLike | IO[str]) -> np.ndarray:
    """Read a 3D ``.cube`` LUT (Adobe/Resolve/ffmpeg style).

    Accepts ``TITLE``, ``LUT_3D_SIZE``, ``DOMAIN_MIN``/``DOMAIN_MAX`` (values are rescaled to 0..1 output
    is *not* attempted: the domain only defines the input range and is returned unchanged), comments
    (``#``), blank lines and the Resolve ``LUT_3D_INPUT_RANGE`` keyword. Data rows are R-fastest.

    Returns
    -------
    np.ndarray, float32, shape (N, N, N, 3)
        Indexed ``lut[r, g, b, channel]``.

    Raises
    ------
    ValueError
        Missing/invalid ``LUT_3D_SIZE``, a 1D-only LUT, wrong number of data rows, rows that do not have
        exactly 3 numbers, non-finite values or unknown keywords.
    """
    if hasattr(path_or_file, "read"):
        text = path_or_file.read()  # type: ignore[union-attr]
    else:
        text = Path(path_or_file).read_text(encoding="utf-8", errors="replace")
    size: int | None = None
    rows: list[tuple[float, float, float]] = []
    for lineno, raw in enumerate(io.StringIO(text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head = line.split(None, 1)[0]
        key = head.upper()
        if key == "TITLE":
            continue
        if key == "LUT_3D_SIZE":
            parts = line.split()
            try:
                size = int(parts[1])
            except (IndexError, ValueError):
                raise ValueError(f"line {lineno}: invalid LUT_3D_SIZE: {line!r}") from None
            if size < 2 or size > 256 or len(parts) != 2:
                raise ValueError(f"line {lineno}: unsupported LUT_3D_SIZE {parts[1:]}")
            continue
        if key == "LUT_1D_SIZE":
            raise ValueError(f"line {lineno}: 1D LUTs are not supported (need a 3D .cube)")
        if key in ("DOMAIN_MIN", "DOMAIN_MAX", "LUT_3D_INPUT_RANGE", "LUT_1D_INPUT_RANGE"):
            parts = line.split()[1:]
            try:
                vals = [float(v) for v in parts]
            except ValueError:
                raise ValueError(f"line {lineno}: invalid {head}: {line!r}") from None
            if key.startswith("DOMAIN") and len(vals) != 3:
                raise ValueError(f"line {lineno}: {head} needs 3 numbers")
            continue
        if key[0].isalpha() and key not in ("NAN", "INF"):
            raise ValueError(f"line {lineno}: unknown keyword {head!r}")
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"line {lineno}: expected 3 numbers per data row, got {len(parts)}: {line!r}")
        try:
            r, g, b = (float(v) for v in parts)
        except ValueError:
            raise ValueError(f"line {lineno}: invalid number in data row: {line!r}") from None
        rows.append((r, g, b))
    if size is None:
        raise ValueError("missing LUT_3D_SIZE")
    if len(rows) != size**3:
        raise ValueError(f"expected {size ** 3} data rows for LUT_3D_SIZE {size}, got {len(rows)}")
    data = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("non-finite value in LUT data")
    # File order is [b][g][r] (R fastest) -> lut[r, g, b].
    return data.reshape(size, size, size, 3).transpose(2, 1, 0, 3).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Reference LUT application and metrics
# ----------------------------------------------------------------------------------------------------------


def apply_lut_reference(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 3D LUT with trilinear interpolation (plain numpy; a slow reference for tests).

    Parameters
    ----------
    rgb : np.ndarray, shape (..., 3)
        ``uint8`` (0..255) or float (0..1) RGB.
    lut : np.ndarray, shape (N, N, N, 3)
        Indexed ``lut[r, g, b, channel]``.

    Returns
    -------
    np.ndarray
        Same shape as ``rgb``: ``uint8`` (rounded) for ``uint8`` input, else float32 0..1.
    """
    lut = np.asarray(lut, dtype=np.float32)
    n = lut.shape[0]
    is_u8 = np.asarray(rgb).dtype == np.uint8
    unit = np.clip(_as_unit_rgb(rgb), 0.0, 1.0)
    shape = unit.shape
    pos = unit.reshape(-1, 3).astype(np.float64) * (n - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    f = pos - i0
    out = np.zeros((pos.shape[0], 3), dtype=np.float64)
    for dr in (0, 1):
        wr = f[:, 0] if dr else 1.0 - f[:, 0]
        for dg in (0, 1):
            wg = f[:, 1] if dg else 1.0 - f[:, 1]
            for db in (0, 1):
                wb = f[:, 2] if db else 1.0 - f[:, 2]
                w = (wr * wg * wb)[:, None]
                out += w * lut[i0[:, 0] + dr, i0[:, 1] + dg, i0[:, 2] + db]
    out = out.reshape(shape)
    if is_u8:
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


def palette_distance(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """Palette distance between two sets of CIELAB pixels (LAB units).

    Sum over L*, a*, b* of the 1-D Wasserstein-1 distance between the two marginal distributions
    (``scipy.stats.wasserstein_distance``). Inputs ``(..., 3)``, any number of pixels each.
    """
    from scipy.stats import wasserstein_distance

    a = _as_lab_pixels(lab_a)
    b = _as_lab_pixels(lab_b)
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("palette_distance needs at least one pixel in each set")
    return float(sum(wasserstein_distance(a[:, c], b[:, c]) for c in range(3)))


def delta_e76(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """Mean per-pixel CIE76 colour difference ``ΔE*ab = ||lab_a - lab_b||₂`` (LAB units).

    Inputs must have the same shape ``(..., 3)`` (pixel-aligned).
    """
    a = np.asarray(lab_a, dtype=np.float64)
    b = np.asarray(lab_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.mean(np.linalg.norm(a - b, axis=-1)))
