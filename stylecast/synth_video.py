"""Synthetic footage with known ground truth, for tests and demos.

A *canvas* is a large still "scene" (natural-looking image statistics: dead-leaves shapes over multi-octave
1/f noise, soft lighting, textured everywhere so motion estimation has corners to track). A *shot* is a
virtual camera looking at the canvas: it pans, tilts, zooms, rolls and shakes with exactly the speeds you ask
for, so the parameters you pass ARE the ground truth that the analysis stages must recover.

Conventions (shared with :mod:`stylecast.analysis.motion`):

* Frames are ``uint8`` RGB ``(H, W, 3)``; shots are stacked ``(n, H, W, 3)``. Frame ``i`` is at time
  ``t0 + i / fps`` seconds.
* ``pan_x`` > 0: the camera turns right, so picture content moves LEFT by ``pan_x * out_w`` px/s.
* ``pan_y`` > 0: the camera tilts up, so content moves DOWN by ``pan_y * out_h`` px/s.
* Pan speeds are in the camera's own frame and in *output* pixels, so content moves by the same number of
  output pixels per frame for the whole shot, even while zooming or rolling.
* ``zoom_rate`` = d(log scale)/dt in 1/s; > 0 zooms in (content grows about the image centre).
* ``rotate_deg_s`` > 0: picture content turns COUNTER-CLOCKWISE as seen on screen (the camera rolls
  clockwise), about the image centre.
* ``shake_amp``: handheld shake, RMS content displacement per axis (x and y each) as a fraction of
  ``out_w``; ``shake_hz`` is its dominant frequency (the shake is a sum of three sinusoids at
  1, 1.45 and 2.1 times ``shake_hz`` with amplitudes 1, 0.45 and 0.3, random phases per ``seed``).

Everything is a pure, deterministic function of its arguments (no global RNG state).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

__all__ = [
    "PALETTES",
    "make_canvas",
    "camera_shot",
    "shake_offsets",
    "fade",
    "fade_in",
    "dissolve",
    "graded",
    "solid_frames",
]

# Base colours (linear-ish sRGB, 0..1) per palette; each seed picks weights and jitter around these.
PALETTES: dict[str, list[tuple[float, float, float]]] = {
    "warm": [(0.85, 0.55, 0.30), (0.60, 0.35, 0.20), (0.95, 0.80, 0.55), (0.70, 0.25, 0.15),
             (0.45, 0.30, 0.20), (0.90, 0.70, 0.40)],
    "cool": [(0.25, 0.40, 0.60), (0.15, 0.30, 0.40), (0.55, 0.70, 0.80), (0.30, 0.55, 0.60),
             (0.80, 0.85, 0.90), (0.20, 0.25, 0.35)],
    "green": [(0.25, 0.45, 0.20), (0.45, 0.60, 0.25), (0.15, 0.30, 0.15), (0.55, 0.50, 0.30),
              (0.35, 0.28, 0.18), (0.60, 0.75, 0.45)],
    "urban": [(0.45, 0.45, 0.47), (0.30, 0.30, 0.32), (0.65, 0.63, 0.60), (0.60, 0.30, 0.22),
              (0.15, 0.15, 0.17), (0.85, 0.75, 0.25)],
    "sunset": [(0.95, 0.55, 0.25), (0.80, 0.30, 0.35), (0.45, 0.20, 0.40), (0.98, 0.80, 0.40),
               (0.20, 0.10, 0.20), (0.60, 0.35, 0.55)],
}

# Handheld shake spectrum: frequency multipliers and relative amplitudes of its sinusoids.
_SHAKE_MULTS = np.array([1.0, 1.45, 2.1])
_SHAKE_WEIGHTS = np.array([1.0, 0.45, 0.3])
# Render at this multiple of the output size, then INTER_AREA down: cheap anti-aliasing.
_SUPERSAMPLE = 2


# --------------------------------------------------------------------------------------------- canvas
def _fractal_noise(h: int, w: int, rng: np.random.Generator, *, min_cell: int = 2,
                   exponent: float = 0.6) -> np.ndarray:
    """Zero-mean, unit-std multi-octave value noise ``(h, w)`` float32.

    Octave with cell size ``c`` px gets amplitude ``c ** exponent``: exponent 1 would be a 1/f amplitude
    spectrum; a bit less keeps fine texture strong enough for corner tracking.
    """
    out = np.zeros((h, w), np.float32)
    cell = min_cell
    while cell <= 2 * max(h, w):
        gh, gw = h // cell + 4, w // cell + 4
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        oy, ox = rng.uniform(1.0, 2.0, size=2)
        # Bicubic upsampling of the lattice straight to (h, w): output px x samples grid at x / cell + ox.
        m = np.float32([[1.0 / cell, 0, ox], [0, 1.0 / cell, oy]])
        up = cv2.warpAffine(grid, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
        out += up * np.float32(cell ** exponent)
        cell *= 2
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _jitter(rgb: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) * (1.0 + rng.normal(0.0, amount, 3)) + rng.normal(0.0, amount / 3, 3),
                   0.0, 1.0)


def make_canvas(width: int, height: int, seed: int, *, palette: str | None = None) -> np.ndarray:
    """Render a still scene ``(height, width, 3)`` uint8 RGB with natural image statistics.

    Layout: a sky/ground split at a random, bumpy horizon; a few large textured shapes ("hills",
    "buildings"); thousands of occluding small-to-medium shapes with power-law sizes (the dead-leaves model,
    which has a ~1/f spectrum and corners everywhere); multi-octave luminance/chroma noise texture; a soft
    large-scale lighting gradient.

    Parameters
    ----------
    width, height : int
        Canvas size in pixels. For :func:`camera_shot` make it ~2-4x the output size along the pan
        direction (the canvas pixel is the output pixel at zoom 1).
    seed : int
        Everything (layout, colours, palette when ``palette`` is None) derives from it.
    palette : str or None
        One of :data:`PALETTES` (``"warm"``, ``"cool"``, ``"green"``, ``"urban"``, ``"sunset"``) or None
        to pick one from the seed.
    """
    if width < 16 or height < 16:
        raise ValueError(f"canvas too small: {width}x{height}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xCA7A5])
    names = sorted(PALETTES)
    if palette is None:
        palette = names[int(rng.integers(len(names)))]
    if palette not in PALETTES:
        raise ValueError(f"unknown palette {palette!r}; choose one of {names}")
    base = np.array(PALETTES[palette], np.float64)
    # Per-seed tint and colour weights so two seeds with the same palette still differ in mean colour.
    tint = np.exp(rng.normal(0.0, 0.12, 3))
    base = np.clip(base * tint, 0.0, 1.0)
    weights = rng.dirichlet(np.full(len(base), 0.8))
    h, w = int(height), int(width)

    def pick() -> np.ndarray:
        return _jitter(base[rng.choice(len(base), p=weights)], rng, 0.12)

    # Sky / ground with a bumpy horizon; the horizon height is the main per-seed layout cue.
    sky_top, sky_bottom, ground = pick(), pick(), pick()
    horizon = rng.uniform(0.25, 0.7) * h
    xs = np.arange(w, dtype=np.float32)
    bumps = _fractal_noise(1, w, rng, min_cell=max(8, w // 64), exponent=1.0)[0] * (0.06 * h)
    horizon_y = horizon + bumps
    ys = np.arange(h, dtype=np.float32)[:, None]
    sky_frac = np.clip(ys / max(horizon, 1.0), 0.0, 1.0)[..., None]
    img = (sky_top * (1 - sky_frac) + sky_bottom * sky_frac).astype(np.float32)
    img = np.broadcast_to(img, (h, w, 3)).copy()
    ground_mask = (ys >= horizon_y[None, :]).astype(np.float32)[..., None]
    img = img * (1 - ground_mask) + ground.astype(np.float32) * ground_mask
    del xs

    # A handful of large shapes (hills / buildings) across the scene.
    for _ in range(int(rng.integers(3, 7))):
        colour = tuple(float(c) for c in pick())
        if rng.random() < 0.5:
            x0 = rng.uniform(-0.1, 0.9) * w
            bw = rng.uniform(0.08, 0.3) * w
            top = rng.uniform(0.1, 0.6) * h
            cv2.rectangle(img, (int(x0), int(top)), (int(x0 + bw), h), colour, -1, cv2.LINE_AA)
        else:
            cx, cy = rng.uniform(0, w), horizon + rng.uniform(-0.1, 0.3) * h
            ax = (int(rng.uniform(0.15, 0.45) * w), int(rng.uniform(0.1, 0.3) * h))
            cv2.ellipse(img, (int(cx), int(cy)), ax, float(rng.uniform(-15, 15)), 0, 360, colour, -1,
                        cv2.LINE_AA)

    # Dead leaves: occluding shapes with density ~ r^-3 between r_min and r_max.
    r_min, r_max = 3.0, max(6.0, min(h, w) / 5.0)
    mean_area = np.pi * 2 * r_min ** 2 * np.log(r_max / r_min) / (1 - (r_min / r_max) ** 2)
    n_shapes = int(1.6 * h * w / mean_area)
    u = rng.random(n_shapes)
    radii = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
    radii = np.sort(radii)[::-1]  # big first, so small ones land on top (like leaves falling later)
    centres = rng.uniform([-r_max, -r_max], [w + r_max, h + r_max], size=(n_shapes, 2))
    kinds = rng.integers(0, 3, n_shapes)
    angles = rng.uniform(0, np.pi, n_shapes)
    aspects = rng.uniform(0.4, 1.0, n_shapes)
    # Most leaves take a shade of the scene colour under them (keeps the per-seed layout readable),
    # the rest a palette colour (accents).
    under = img[np.clip(centres[:, 1].astype(int), 0, h - 1), np.clip(centres[:, 0].astype(int), 0, w - 1)]
    shade = rng.uniform(0.6, 1.35, n_shapes)
    accent = rng.random(n_shapes) < 0.3
    for j, (r, (cx, cy), kind, ang, asp) in enumerate(zip(radii, centres, kinds, angles, aspects)):
        leaf = pick() if accent[j] else _jitter(under[j] * shade[j], rng, 0.06)
        colour = tuple(float(c) for c in leaf)
        centre = (int(round(cx * 4)), int(round(cy * 4)))  # shift=2: quarter-pixel precision
        if kind == 0:
            axes = (max(1, int(r * 4)), max(1, int(r * asp * 4)))
            cv2.ellipse(img, centre, axes, float(np.degrees(ang)), 0, 360, colour, -1, cv2.LINE_AA, 2)
        else:
            n_vert = 4 if kind == 1 else 3
            t = ang + np.arange(n_vert) * 2 * np.pi / n_vert + rng.uniform(-0.3, 0.3, n_vert)
            rad = r * np.where(np.arange(n_vert) % 2 == 0, 1.0, asp)
            pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)
            cv2.fillPoly(img, [np.round(pts * 4).astype(np.int32)], colour, cv2.LINE_AA, 2)

    # Texture: multiplicative luminance noise plus gentle chroma noise.
    lum = _fractal_noise(h, w, rng, min_cell=2, exponent=0.5)
    img *= (1.0 + 0.2 * lum)[..., None]
    for ch in range(3):
        img[..., ch] += 0.03 * _fractal_noise(h, w, rng, min_cell=16, exponent=1.0)
    # Soft lighting: a directional ramp and a broad blob of light.
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(ang) * (xx / w - 0.5) + np.sin(ang) * (yy / h - 0.5)).astype(np.float32)
    lx, ly = rng.uniform(0, w), rng.uniform(0, h)
    blob = np.exp(-(((xx - lx) / (0.6 * w)) ** 2 + ((yy - ly) / (0.6 * h)) ** 2)).astype(np.float32)
    light = 0.85 + rng.uniform(0.2, 0.5) * ramp + 0.25 * blob
    img *= light[..., None]
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- camera
def shake_offsets(t: np.ndarray, shake_amp: float, shake_hz: float, out_w: int, seed: int) -> np.ndarray:
    """Handheld shake content displacement ``(len(t), 2)`` in output px (x right, y down) at times ``t`` s.

    Each axis has RMS ``shake_amp * out_w`` (over a long shot) and dominant frequency ``shake_hz``.
    """
    t = np.asarray(t, np.float64)
    if shake_amp == 0.0:
        return np.zeros((t.size, 2))
    if shake_hz <= 0:
        raise ValueError("shake_amp > 0 needs shake_hz > 0")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A4E])
    phases = rng.uniform(0, 2 * np.pi, (2, len(_SHAKE_MULTS)))
    # RMS of a sum of sinusoids with amplitudes w_k is sqrt(sum w_k^2 / 2).
    norm = shake_amp * out_w / np.sqrt(np.sum(_SHAKE_WEIGHTS ** 2) / 2.0)
    arg = 2 * np.pi * shake_hz * _SHAKE_MULTS[None, :] * t[:, None]
    sx = (np.sin(arg + phases[0]) * _SHAKE_WEIGHTS).sum(axis=1)
    sy = (np.sin(arg + phases[1]) * _SHAKE_WEIGHTS).sum(axis=1)
    return np.stack([sx, sy], axis=1) * norm


def _object_sprites(n_objects: int, out_w: int, rng: np.random.Generator) -> list[dict]:
    objs = []
    for _ in range(n_objects):
        half = int(rng.uniform(0.045, 0.08) * out_w) + 2
        size = 2 * half + 1
        colour = rng.uniform(0.1, 1.0, 3)
        colour[rng.integers(3)] = rng.uniform(0.8, 1.0)  # saturated-ish so objects pop out
        tex = _fractal_noise(size, size, rng, min_cell=2, exponent=0.3)
        rgb = np.clip(colour[None, None, :] * (1.0 + 0.35 * tex[..., None]), 0, 1)
        yy, xx = np.mgrid[0:size, 0:size] - half
        a = rng.uniform(0.6, 1.0)
        alpha = np.clip(half - np.sqrt(xx ** 2 + (yy / a) ** 2), 0.0, 1.0)  # anti-aliased ellipse
        speed = rng.uniform(0.2, 0.45) * out_w
        direction = rng.uniform(0, 2 * np.pi)
        objs.append(dict(rgb=(rgb * 255).astype(np.float32), alpha=alpha.astype(np.float32), half=half,
                         p0=rng.uniform(0, 4 * out_w, 2),
                         v=speed * np.array([np.cos(direction), np.sin(direction)])))
    return objs


def _bounce(u: float, lo: float, hi: float) -> float:
    """Position that moves at unit speed along ``u`` and bounces between ``lo`` and ``hi``."""
    span = hi - lo
    m = u % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


def _paste_objects(frame: np.ndarray, objs: list[dict], t: float) -> None:
    h, w = frame.shape[:2]
    for ob in objs:
        half = ob["half"]
        px = _bounce(ob["p0"][0] + ob["v"][0] * t, half + 1, w - half - 2)
        py = _bounce(ob["p0"][1] + ob["v"][1] * t, half + 1, h - half - 2)
        ix, iy = int(np.floor(px)), int(np.floor(py))
        fx, fy = px - ix, py - iy
        size = 2 * half + 1
        m = np.float32([[1, 0, fx], [0, 1, fy]])
        rgba = np.dstack([ob["rgb"], ob["alpha"]])
        moved = cv2.warpAffine(rgba, m, (size + 1, size + 1), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        y0, x0 = iy - half, ix - half
        y1, x1 = min(h, y0 + size + 1), min(w, x0 + size + 1)
        ys, xs = max(0, y0), max(0, x0)
        if ys >= y1 or xs >= x1:
            continue
        patch = moved[ys - y0:y1 - y0, xs - x0:x1 - x0]
        a = patch[..., 3:4]
        roi = frame[ys:y1, xs:x1].astype(np.float32)
        frame[ys:y1, xs:x1] = np.clip(roi * (1 - a) + patch[..., :3] * a + 0.5, 0, 255).astype(np.uint8)


def camera_shot(canvas: np.ndarray, n_frames: int, out_w: int, out_h: int, fps: float, *,
                pan_x: float = 0.0, pan_y: float = 0.0, zoom_rate: float = 0.0, rotate_deg_s: float = 0.0,
                shake_amp: float = 0.0, shake_hz: float = 0.0, n_objects: int = 0, seed: int = 0,
                t0: float = 0.0) -> np.ndarray:
    """Film ``canvas`` with a virtual camera; returns ``(n_frames, out_h, out_w, 3)`` uint8 RGB.

    Parameters (these are the ground truth; see the module docstring for sign conventions)
    ----------
    canvas : (H, W, 3) uint8
        Scene from :func:`make_canvas`; one canvas pixel = one output pixel at zoom 1 (the zoom at t = 0).
    n_frames : int
        Number of frames; frame ``i`` is at time ``t0 + i / fps`` s.
    out_w, out_h : int
        Output size in px.
    fps : float
        Frames per second.
    pan_x : float
        Pan speed, fraction of ``out_w`` per s; + = camera turns right = content moves left.
    pan_y : float
        Tilt speed, fraction of ``out_h`` per s; + = camera tilts up = content moves down.
    zoom_rate : float
        d(log scale)/dt in 1/s; + = zoom in (content grows about the image centre).
    rotate_deg_s : float
        Roll in degrees/s; + = content turns counter-clockwise on screen.
    shake_amp, shake_hz : float
        Handheld shake: per-axis RMS content displacement as a fraction of ``out_w``, dominant frequency Hz.
    n_objects : int
        Small textured objects (each ~9-16% of ``out_w`` across) moving independently at 0.2-0.45
        ``out_w``/s in output coordinates, bouncing off the frame edges.
    seed : int
        Seeds the shake phases and the objects (the canvas has its own seed).
    t0 : float
        Start time in s; rendering ``[0, n)`` or ``[0, k)`` + ``[k, n)`` with ``t0 = k / fps`` gives
        identical frames (the camera start depends only on the canvas and the motion parameters).

    Raises
    ------
    ValueError
        If the camera path leaves the canvas; make a bigger canvas or a shorter/slower shot.

    Notes
    -----
    The camera starts (at t = 0) at the canvas edge opposite to its pan direction (centre on axes without
    pan, and always centred when zooming out or rolling) at zoom 1. Each frame is rendered at 2x with
    ``cv2.warpAffine`` (bilinear) from a mip level of the canvas chosen so the sampling step is <= 1
    canvas-level pixel, then ``INTER_AREA``-downsampled: anti-aliased when zoomed out.
    """
    canvas = np.ascontiguousarray(canvas)
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ValueError("canvas must be (H, W, 3) uint8")
    if fps <= 0 or out_w <= 0 or out_h <= 0 or n_frames < 0:
        raise ValueError("need fps > 0, positive output size and n_frames >= 0")
    ch, cw = canvas.shape[:2]
    t = t0 + np.arange(n_frames) / float(fps)
    k = float(zoom_rate)
    omega = np.radians(float(rotate_deg_s))
    scale = np.exp(k * t)
    theta = omega * t
    shake = shake_offsets(t, shake_amp, shake_hz, out_w, seed)
    shake_max = 0.0 if shake_amp == 0 else shake_amp * out_w * _SHAKE_WEIGHTS.sum() / np.sqrt(
        np.sum(_SHAKE_WEIGHTS ** 2) / 2.0)

    # Camera centre in canvas px (complex x + iy). Camera-frame velocity v (output px/s, canvas
    # orientation at theta = 0): dc/dt = v * exp(i theta(t)) / s(t)  =>  closed-form integral.
    v = complex(pan_x * out_w, -pan_y * out_h)
    a = complex(-k, omega)
    if abs(a) > 1e-12:
        travel = v * (np.exp(a * t) - 1.0) / a
    else:
        travel = v * t
    # Start position: depends only on the canvas and the motion (never on n_frames / t0).
    half_x, half_y = out_w / 2.0 + shake_max, out_h / 2.0 + shake_max
    if omega != 0.0:
        half_x = half_y = float(np.hypot(out_w / 2.0, out_h / 2.0)) + shake_max
    start = []
    for axis_v, half, size in ((v.real, half_x, cw), (v.imag, half_y, ch)):
        lo, hi = half + 1.0, size - 2.0 - half
        if k < 0 or omega != 0.0 or axis_v == 0.0 or hi <= lo:
            start.append((size - 1) / 2.0)
        else:
            start.append(lo if axis_v > 0 else hi)
    centre = complex(start[0], start[1]) + travel

    # Inverse map output px -> canvas px:  z_c = c + (z_out - o + shake) * exp(i theta) / s.
    o = complex((out_w - 1) / 2.0, (out_h - 1) / 2.0)
    rot = np.exp(1j * theta) / scale
    corners = np.array([-0.5 - 0.5j, out_w - 0.5 - 0.5j, -0.5 + (out_h - 0.5) * 1j,
                        out_w - 0.5 + (out_h - 0.5) * 1j])
    if n_frames:
        shake_c = shake[:, 0] + 1j * shake[:, 1]
        pts = centre[:, None] + (corners[None, :] - o + shake_c[:, None]) * rot[:, None]
        if pts.real.min() < 0 or pts.imag.min() < 0 or pts.real.max() > cw - 1 or pts.imag.max() > ch - 1:
            raise ValueError(
                f"camera path leaves the {cw}x{ch} canvas (needs x in [{pts.real.min():.0f}, "
                f"{pts.real.max():.0f}], y in [{pts.imag.min():.0f}, {pts.imag.max():.0f}]); "
                "use a bigger canvas or a shorter/slower shot")

    objs = _object_sprites(int(n_objects), out_w, np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x0B1E]))
    pyramid = [canvas]
    out = np.empty((n_frames, out_h, out_w, 3), np.uint8)
    ss = _SUPERSAMPLE
    for i in range(n_frames):
        # Mip level so that one output px spans <= 2 level px (the 2x supersample then covers it).
        level = max(0, int(np.floor(np.log2(1.0 / scale[i]) + 1e-9)))
        while len(pyramid) <= level:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        lvl = 2.0 ** -level  # pyrDown: level px x_L = x_0 / 2^L
        r = rot[i] + 0j
        # Supersampled px q -> output px p = (q + 0.5) / ss - 0.5.
        lin = np.array([[r.real, -r.imag], [r.imag, r.real]]) / ss
        p_at_q0 = complex(0.5 / ss - 0.5, 0.5 / ss - 0.5)
        off = centre[i] + (p_at_q0 - o + complex(shake[i, 0], shake[i, 1])) * r
        m = np.array([[lin[0, 0], lin[0, 1], off.real], [lin[1, 0], lin[1, 1], off.imag]]) * lvl
        big = cv2.warpAffine(pyramid[level], m, (out_w * ss, out_h * ss),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        frame = cv2.resize(big, (out_w, out_h), interpolation=cv2.INTER_AREA)
        if objs:
            _paste_objects(frame, objs, float(t[i]))
        out[i] = frame
    return out


# --------------------------------------------------------------------------------------------- edits
def _as_rgb_float(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32).reshape(3)


def fade(frames_a_tail: np.ndarray, to_rgb, n: int) -> np.ndarray:
    """Fade the last ``n`` frames of ``frames_a_tail`` ``(m, H, W, 3)`` uint8 towards colour ``to_rgb``.

    Returns a new array of the same shape; frame ``m - n + k`` (k = 0..n-1) is
    ``(1 - w_k) * frame + w_k * to_rgb`` with ``w_k = (k + 1) / n``, so the last frame is exactly
    ``to_rgb`` (0..255 values, e.g. ``(0, 0, 0)`` for a fade to black). Frames before are untouched.
    """
    frames = np.asarray(frames_a_tail)
    m = frames.shape[0]
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= {m} frames, got n={n}")
    out = frames.copy()
    w = ((np.arange(n) + 1) / n).astype(np.float32)[:, None, None, None]
    tail = frames[m - n:].astype(np.float32)
    out[m - n:] = np.clip(tail * (1 - w) + _as_rgb_float(to_rgb) * w + 0.5, 0, 255).astype(np.uint8)
    return out


def fade_in(frames_b_head: np.ndarray, from_rgb, n: int) -> np.ndarray:
    """Mirror of :func:`fade`: frame ``k`` (k = 0..n-1) is ``w_k * from_rgb + (1 - w_k) * frame`` with
    ``w_k = (n - k) / n``, so frame 0 is exactly ``from_rgb`` and frame ``n`` is untouched."""
    return fade(np.asarray(frames_b_head)[::-1], from_rgb, n)[::-1].copy()


def dissolve(frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
    """Linear cross-fade of two equal-length ``(n, H, W, 3)`` uint8 stacks.

    Frame ``k`` is ``(1 - w_k) * a_k + w_k * b_k`` with ``w_k = (k + 1) / (n + 1)``: the transition
    strictly lies between a pure-A frame before it and a pure-B frame after it.
    """
    a, b = np.asarray(frames_a), np.asarray(frames_b)
    if a.shape != b.shape:
        raise ValueError(f"dissolve needs equal shapes, got {a.shape} and {b.shape}")
    n = a.shape[0]
    w = ((np.arange(n) + 1) / (n + 1)).astype(np.float32)[:, None, None, None]
    return np.clip(a.astype(np.float32) * (1 - w) + b.astype(np.float32) * w + 0.5, 0, 255).astype(np.uint8)


def graded(frames: np.ndarray, fn: Callable[[np.ndarray], np.ndarray] | np.ndarray) -> np.ndarray:
    """Colour-grade ``(..., 3)`` uint8 frames with a ground-truth grade.

    ``fn`` is either a function mapping float32 RGB in 0..1 (any shape ending in 3, e.g. the whole
    ``(n, H, W, 3)`` stack) to the same shape, or a 3D LUT ``(N, N, N, 3)`` float in 0..1 indexed
    ``lut[r, g, b, channel]`` (applied trilinearly). Result is clipped and rounded back to uint8.
    """
    x = np.asarray(frames).astype(np.float32) / 255.0
    if isinstance(fn, np.ndarray):
        if fn.ndim != 4 or fn.shape[3] != 3 or not (fn.shape[0] == fn.shape[1] == fn.shape[2]):
            raise ValueError("LUT must have shape (N, N, N, 3)")
        from stylecast.color import apply_lut_reference  # the project's one trilinear LUT reference

        y = apply_lut_reference(x, fn.astype(np.float32))
    else:
        y = np.asarray(fn(x), np.float32)
        if y.shape != x.shape:
            raise ValueError(f"grade function changed the shape {x.shape} -> {y.shape}")
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def solid_frames(n: int, height: int, width: int, rgb=(0, 0, 0)) -> np.ndarray:
    """``(n, height, width, 3)`` uint8 frames of one colour (e.g. black slug between fades)."""
    out = np.empty((n, height, width, 3), np.uint8)
    out[...] = np.clip(np.round(_as_rgb_float(rgb)), 0, 255).astype(np.uint8)
    return out
