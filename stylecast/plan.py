"""The render plan: an explicit edit decision list built from a source analysis, a StyleJSON and options.

A plan says, for every output frame, which source frame(s) to show, through which colour transfer and which
synthetic camera move, with which transition — and how the audio is cut.  It is small, JSON-serialisable and
independent of how the render is split: any worker can render any range of output frames from it.

Time conventions: output frame ``n`` is at ``n / fps``.  A segment shows source time
``src_start_s + (n - out_start_frame) / fps`` at output frame ``n`` (sample-and-hold: the latest source
frame at or before that time).  Segments never cross a source shot boundary; the handles a dissolve needs
are clamped to the segment's source shot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernels.render import affine_for
from stylecast.analysis.motion import STATIC_SPEED
from stylecast.analyze import VideoAnalysis
from stylecast.color import ColorTransfer, apply_transfer_lab, fit_transfer, merge_stats
from stylecast.errors import OptionsError
from stylecast.options import MAX_OUTPUT_SIDE, MIN_OUTPUT_SIDE, Options
from stylecast.style import MotionParams, StyleJSON
from stylecast.synth_video import shake_offsets

PLAN_VERSION = 1
MAX_OVERSCAN = 1.3  # synthetic moves may zoom in at most 30% to hide borders; faster moves are damped
# A synthetic zoom changes the picture's scale at most this much over one segment (a long shot at a template's
# zoom rate would otherwise end magnified hundreds of times, and a wild rate would overflow); faster are damped.
MAX_ZOOM_RANGE = 8.0
MIN_SEGMENT_S = 0.2
AUDIO_CROSSFADE_S = 0.02


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MotionEffect(_Model):
    """A synthetic camera move over one segment; units as in `MotionParams` (output fractions per second)."""

    kind: str = "static"
    pan_x: float = 0.0
    pan_y: float = 0.0
    zoom_rate: float = 0.0
    rotation_deg_s: float = 0.0
    shake_amp: float = 0.0
    shake_hz: float = 0.0
    seed: int = 0
    overscan: float = Field(1.0, ge=1.0, description="constant extra zoom that keeps every border hidden")

    def transform(self, t_local: np.ndarray, duration_s: float, out_w: int, out_h: int) -> np.ndarray:
        """Per time: (scale, rotation_deg, shift_x, shift_y) for `kernels.render.affine_for`.

        Moves are centred on the segment's middle so the over-scan they need is symmetric.
        """
        t = np.atleast_1d(np.asarray(t_local, np.float64))
        tc = t - duration_s / 2.0
        # Zoom is ≥ 1 × overscan over the whole segment: it starts there (zoom in) or ends there (zoom out).
        scale = self.overscan * np.exp(self.zoom_rate * t - min(0.0, self.zoom_rate * duration_s))
        rot = self.rotation_deg_s * tc
        # Camera pans right (pan_x > 0) → content moves left; tilts up (pan_y > 0) → content moves down.
        sx = -self.pan_x * out_w * tc
        sy = self.pan_y * out_h * tc
        if self.shake_amp > 0 and self.shake_hz > 0:
            shake = shake_offsets(t, self.shake_amp, self.shake_hz, out_w, self.seed)
            sx = sx + shake[:, 0]
            sy = sy + shake[:, 1]
        return np.stack([scale, rot, sx, sy], axis=1)

    @property
    def is_identity(self) -> bool:
        return (self.overscan == 1.0 and not self.pan_x and not self.pan_y and not self.zoom_rate
                and not self.rotation_deg_s and not self.shake_amp)


class TransitionIn(_Model):
    kind: Literal["cut", "fade", "dissolve"] = "cut"
    frames: int = Field(0, ge=0, description="length of the transition in output frames, centred on the cut")
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Segment(_Model):
    index: int
    out_start_frame: int
    out_end_frame: int = Field(description="exclusive")
    src_start_s: float = Field(description="source time shown at out_start_frame")
    shot_index: int = Field(description="the source shot this segment comes from")
    shot_start_s: float = Field(description="handles are clamped to [shot_start_s, shot_end_s)")
    shot_end_s: float
    color: int = Field(description="index into RenderPlan.colors, or -1 for no colour change")
    motion: MotionEffect = Field(default_factory=MotionEffect)
    transition_in: TransitionIn = Field(default_factory=TransitionIn)

    @property
    def n_frames(self) -> int:
        return self.out_end_frame - self.out_start_frame


class OutputSpec(_Model):
    width: int
    height: int
    fps: float
    frame_count: int
    crf: int
    preset: str
    letterbox_px: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right

    @field_validator("letterbox_px")
    @classmethod
    def _even_bars(cls, bars: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        # Bars cover whole 4:2:0 chroma samples: an odd bar would grey one picture row's colour.
        if any(b < 0 or b % 2 for b in bars):
            raise ValueError(f"letterbox bars must be even, non-negative pixel counts, got {bars}")
        return bars

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


class AudioPiece(_Model):
    out_start_s: float
    out_end_s: float
    src_start_s: float


class AudioPlan(_Model):
    enabled: bool
    pieces: list[AudioPiece] = Field(default_factory=list)
    gain_db: float = 0.0
    crossfade_s: float = AUDIO_CROSSFADE_S


class RenderPlan(_Model):
    version: int = PLAN_VERSION
    source_path: str
    source_fps: float
    source_display_size: tuple[int, int]
    output: OutputSpec
    colors: list[ColorTransfer]
    segments: list[Segment]
    audio: AudioPlan

    def segment_at(self, n: int) -> int:
        starts = [s.out_start_frame for s in self.segments]
        return max(0, int(np.searchsorted(starts, n, side="right")) - 1)


# =================================================================================================== per frame
@dataclass(frozen=True)
class Layer:
    segment: int
    src_time_s: float
    t_local_s: float  # time since the segment's start (negative in a dissolve's lead-in)


@dataclass(frozen=True)
class FrameRecipe:
    """How to make one output frame: A (and B blended in by ``blend``), then a fade towards ``fade_rgb``."""

    a: Layer
    b: Layer | None = None
    blend: float = 0.0
    fade_amount: float = 0.0
    fade_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _layer(plan: RenderPlan, k: int, n: int) -> Layer:
    seg = plan.segments[k]
    fps = plan.output.fps
    t_local = (n - seg.out_start_frame) / fps
    src = seg.src_start_s + t_local
    # Handles stay inside the source shot: never show a frame across a source cut.
    src = min(max(src, seg.shot_start_s), max(seg.shot_start_s, seg.shot_end_s - 0.5 / plan.source_fps))
    return Layer(k, src, t_local)


def frame_recipe(plan: RenderPlan, n: int) -> FrameRecipe:
    """What output frame ``n`` shows; pure, so every worker computes the same thing for the same frame."""
    k = plan.segment_at(n)
    own = _layer(plan, k, n)
    # A transition into the NEXT segment whose lead-in starts before the next segment does.
    if k + 1 < len(plan.segments):
        nxt = plan.segments[k + 1]
        tr = nxt.transition_in
        if tr.kind != "cut" and tr.frames > 0:
            lead = tr.frames // 2
            if n >= nxt.out_start_frame - lead:
                pos = n - (nxt.out_start_frame - lead)
                if tr.kind == "dissolve":
                    return FrameRecipe(own, _layer(plan, k + 1, n), (pos + 0.5) / tr.frames)
                return FrameRecipe(own, fade_amount=(pos + 0.5) / max(lead, 1), fade_rgb=tr.color)
    seg = plan.segments[k]
    tr = seg.transition_in
    if k > 0 and tr.kind != "cut" and tr.frames > 0:
        lead = tr.frames // 2
        tail = tr.frames - lead
        pos = n - seg.out_start_frame  # 0 at the cut
        if pos < tail:
            if tr.kind == "dissolve":
                return FrameRecipe(_layer(plan, k - 1, n), own, (lead + pos + 0.5) / tr.frames)
            return FrameRecipe(own, fade_amount=1.0 - (pos + 0.5) / max(tail, 1), fade_rgb=tr.color)
    return FrameRecipe(own)


def layer_affine(plan: RenderPlan, layer: Layer, src_size: tuple[int, int]) -> np.ndarray:
    seg = plan.segments[layer.segment]
    out = plan.output
    scale, rot, sx, sy = seg.motion.transform(np.array([layer.t_local_s]), seg.n_frames / out.fps, out.width,
                                              out.height)[0]
    return affine_for((out.width, out.height), src_size, scale=float(scale), rotation_deg=float(rot),
                      shift_x=float(sx), shift_y=float(sy))


# =================================================================================================== building


def output_spec(source: VideoAnalysis, style: StyleJSON | None, options: Options) -> OutputSpec:
    p = source.probe
    o = options.output
    if o.width and o.height:
        w, h = o.width, o.height
    elif o.width or o.height:
        if o.width:
            w, h = o.width, int(round(o.width / p.display_aspect / 2)) * 2
        else:
            w, h = int(round(o.height * p.display_aspect / 2)) * 2, o.height
        given, other = ("width", "height") if o.width else ("height", "width")
        derived = h if o.width else w
        if not MIN_OUTPUT_SIDE <= derived <= MAX_OUTPUT_SIDE[other]:
            raise OptionsError(f"output.{given} {getattr(o, given)} makes the {other} {derived} px (outside "
                               f"{MIN_OUTPUT_SIDE}..{MAX_OUTPUT_SIDE[other]}) for this "
                               f"{p.display_width}x{p.display_height} source; set output.{other} too")
    else:
        w, h = p.display_width, p.display_height
    # A variable-rate source renders at its average rate, rounded (at least 1 fps: a slideshow averaging
    # 0.4 fps would round to 0).
    fps = o.fps or (p.fps if not p.is_vfr else max(1, round(p.fps)))
    letterbox = (0, 0, 0, 0)
    if options.transfer.framing and style is not None and style.framing is not None:
        lb = style.framing.letterbox
        # Only real bars (≥ 2% of the side) are reproduced; thin edges are encoder padding, not a look.
        # Even sizes: a bar then covers whole 4:2:0 chroma samples.
        letterbox = tuple(
            int(round(frac * side / 2)) * 2 if frac >= 0.02 else 0
            for frac, side in ((lb.top, h), (lb.bottom, h), (lb.left, w), (lb.right, w))
        )
    return OutputSpec(width=w, height=h, fps=float(fps), frame_count=0, crf=o.crf, preset=o.preset,
                      letterbox_px=letterbox)


def _shot_transport(cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optimal transport plan between source shots (mass ``a``) and template shots (mass ``b``)."""
    from scipy.optimize import linprog

    n, m = cost.shape
    a = a / a.sum()
    b = b / b.sum()
    rows = np.zeros((n, n * m))
    cols = np.zeros((m, n * m))
    for i in range(n):
        rows[i, i * m:(i + 1) * m] = 1.0
    for j in range(m):
        cols[j, j::m] = 1.0
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols])[:-1], b_eq=np.concatenate([a, b])[:-1],
                  bounds=(0, None), method="highs")
    if not res.success:
        return np.outer(a, b)
    return np.maximum(res.x.reshape(n, m), 0.0)


def _color_targets(source: VideoAnalysis, style: StyleJSON, screen_time: list[float]) -> list:
    """Per source shot, the part of the template's look it should take on.

    A grade treats similar content alike, so a forest shot should look like the template's forest shots,
    not like the template's average; and the whole output should carry the template's whole palette.
    Both hold with an optimal transport between shots: the template's overall look is first mapped onto
    the whole source (one global transfer) so that shots can be compared through it; then the template
    shots' screen time is distributed over the source shots (by screen time), moving as little "colour
    distance" as possible.  Each source shot's target is the mixture of template shots sent to it.
    """
    shot_stats = [t for t in (style.color.shots or []) if t.n_pixels > 0]
    usable = [i for i, s in enumerate(source.shots) if s.pixels.shape[0] >= 16]
    if len(shot_stats) < 2 or not usable:
        return [style.color.template] * len(source.shots)
    pooled = np.concatenate([source.shots[i].pixels for i in usable])
    pooled = pooled[:: max(1, pooled.shape[0] // 60000)]
    global_fit = fit_transfer(pooled, style.color.template)
    t_quant = np.stack([t.quantile_array() for t in shot_stats])  # (m, 3, K)
    levels = np.asarray(shot_stats[0].quantile_levels)
    cost = np.empty((len(usable), len(shot_stats)))
    for row, i in enumerate(usable):
        seen = apply_transfer_lab(global_fit, source.shots[i].pixels)
        q = np.quantile(seen, levels, axis=0).T  # (3, K)
        cost[row] = np.abs(t_quant - q[None]).mean(axis=(1, 2))  # ≈ mean per-channel W1 distance
    a = np.array([max(screen_time[i], 1e-3) for i in usable])
    b = np.array([t.n_pixels for t in shot_stats], np.float64)
    transport = _shot_transport(cost, a, b)
    targets = [style.color.template] * len(source.shots)
    for row, i in enumerate(usable):
        w = transport[row]
        parts = [t.model_copy(update={"n_pixels": max(1, int(round(1e6 * wj / w.sum())))})
                 for t, wj in zip(shot_stats, w) if wj > 1e-6 * w.sum()]
        targets[i] = merge_stats(parts) if parts else style.color.template
    return targets


def _color_transfers(source: VideoAnalysis, style: StyleJSON | None, options: Options,
                     screen_time: list[float]) -> list[ColorTransfer | None]:
    """One transfer per source shot, fitted from that shot's pixels to its part of the template's look.

    screen_time: seconds each source shot is shown in the output."""
    t = options.transfer
    if style is None or style.color is None or not (t.color or t.tone) or options.strength == 0:
        return [None] * len(source.shots)
    targets = _color_targets(source, style, screen_time)
    out = []
    for shot, target in zip(source.shots, targets):
        if shot.pixels.shape[0] < 16:
            out.append(None)
            continue
        out.append(fit_transfer(shot.pixels, target, color=t.color, tone=t.tone, strength=options.strength))
    return out


def _diffuse(weights: dict[str, float], durations: list[float]) -> list[str]:
    """Assign a label per item so that label shares (by duration) follow ``weights`` (error diffusion)."""
    labels = sorted(weights, key=lambda k: -weights[k])
    total = sum(weights.values()) or 1.0
    share = {k: weights[k] / total for k in labels}
    given = dict.fromkeys(labels, 0.0)
    out, elapsed = [], 0.0
    for d in durations:
        elapsed += d
        best = max(labels, key=lambda k: share[k] * elapsed - given[k])
        given[best] += d
        out.append(best)
    return out


def _source_beats(source: VideoAnalysis) -> np.ndarray:
    if source.audio is None or not source.audio.beats_s:
        return np.zeros(0)
    return np.asarray(source.audio.beats_s, np.float64)


def _template_lengths(style: StyleJSON) -> list[float]:
    lengths = list(style.pacing.shot_lengths_s)
    # The first and last shots are cut by the clip's ends; interior shots show the editor's rhythm.
    if len(lengths) >= 5:
        lengths = lengths[1:-1]
    return [max(MIN_SEGMENT_S, float(x)) for x in lengths]


BEAT_SNAP_TOLERANCE = 0.15  # a cut moves to a beat only if that changes the shot length by at most 15%


def _snap_to_beat(beats: np.ndarray, start: float, length: float, end_limit: float) -> float:
    """Length that ends the piece on a beat (else a half-beat) of the audio playing then, if one is near.

    The output audio is the source audio cut with the picture, so the beat heard at the cut is the source's
    own beat inside this piece.  Shot lengths stay within BEAT_SNAP_TOLERANCE of the template's, so the
    rhythm of the cuts is kept even when the music's tempo differs from the template's.
    """
    want = start + length
    halves = (beats[:-1] + beats[1:]) / 2.0 if beats.size > 1 else np.zeros(0)
    for grid in (beats, halves):
        cand = grid[(grid > start + MIN_SEGMENT_S) & (grid <= end_limit + 1e-9)]
        if cand.size:
            best = float(cand[np.argmin(np.abs(cand - want))])
            if abs(best - want) <= BEAT_SNAP_TOLERANCE * length:
                return best - start
    return length


def _recut(source: VideoAnalysis, style: StyleJSON, duration: float, seed: int) -> list[tuple[int, float, float]]:
    """Choose (shot, src_start, length) pieces following the template's shot lengths.

    Source shots are used in parallel, each in its own order, always switching shot at a cut (so every cut
    is visible) and never reusing material.  A lone shot is cut into pieces with a jump between them.
    """
    targets = _template_lengths(style)
    beats = _source_beats(source) if style.pacing.cuts_on_beat else np.zeros(0)
    period = float(np.median(np.diff(beats))) if beats.size > 1 else 0.0
    shots = [(s.start_s, s.end_s) for s in source.shots]
    cursor = [a for a, _ in shots]
    used = [0.0] * len(shots)
    pieces: list[tuple[int, float, float]] = []
    total, prev, k = 0.0, -1, 0
    while total < duration - 1e-6:
        target = min(targets[k % len(targets)], duration - total)
        k += 1
        avail = [i for i, (a, b) in enumerate(shots) if b - cursor[i] >= min(target, MIN_SEGMENT_S * 2) * 0.999]
        if not avail:
            break
        choices = [i for i in avail if i != prev] or avail
        i = min(choices, key=lambda j: (used[j] / max(shots[j][1] - shots[j][0], 1e-6), j))
        start = cursor[i]
        if i == prev:
            start += 0.5 * target  # a jump within one shot, so the cut shows
        if beats.size:
            # Start on a beat too, so that a piece of n template beats ends on a beat of its own music.
            ahead = beats[(beats >= start - 1e-9) & (beats <= start + 0.5 * period)]
            if ahead.size:
                start = float(ahead[0])
        if shots[i][1] - start < MIN_SEGMENT_S:
            cursor[i] = shots[i][1]
            continue
        end_limit = shots[i][1]
        length = min(target, end_limit - start)
        if beats.size:
            length = _snap_to_beat(beats, start, length, end_limit)
        if duration - total - length < MIN_SEGMENT_S:
            length = min(end_limit - start, duration - total)
        pieces.append((i, start, length))
        cursor[i] = start + length
        used[i] += length
        total += length
        prev = i
    return pieces


def _motion_effects(style: StyleJSON | None, options: Options, lengths: list[float],
                    aspect: float = 16 / 9) -> list[MotionEffect]:
    if not options.transfer.motion or style is None or style.motion is None or not style.motion.kind_fractions:
        return [MotionEffect() for _ in lengths]
    shares = {k: v for k, v in style.motion.kind_fractions.items() if v > 0}  # a kind at 0 is never chosen
    if not shares:
        return [MotionEffect() for _ in lengths]
    kinds = _diffuse(shares, lengths)
    effects = []
    s = options.strength
    for i, kind in enumerate(kinds):
        p = _perceptible(style.motion.typical[kind], aspect)
        effects.append(MotionEffect(
            kind=kind, pan_x=s * p.pan_x, pan_y=s * p.pan_y, zoom_rate=s * p.zoom_rate,
            rotation_deg_s=s * p.rotation_deg_s, shake_amp=s * p.shake_amp, shake_hz=p.shake_hz,
            seed=options.seed * 1000 + i,
        ))
    return effects


def _perceptible(p: MotionParams, aspect: float) -> MotionParams:
    """The part of a kind's typical move worth applying.

    A component slower than the speed below which the analysis calls a shot static (`STATIC_SPEED`, in the
    analysis's own speed measure) is estimation noise or drift that no viewer sees; applied, it would only
    resample the picture (softer) and make every frame move a little (more work and bits for x264).  So it
    is left out, and a static shot gets no move at all (its shake stayed below what counts as handheld).
    """
    if p.kind == "static":
        return p.model_copy(update={"pan_x": 0.0, "pan_y": 0.0, "zoom_rate": 0.0, "rotation_deg_s": 0.0,
                                    "shake_amp": 0.0, "shake_hz": 0.0})
    speeds = {"pan_x": abs(p.pan_x), "pan_y": abs(p.pan_y) / aspect, "zoom_rate": 0.5 * abs(p.zoom_rate),
              "rotation_deg_s": 0.5 * abs(math.radians(p.rotation_deg_s))}
    return p.model_copy(update={k: 0.0 for k, v in speeds.items() if v < STATIC_SPEED})


def _corners_inside(effect: MotionEffect, duration: float, out: OutputSpec, src_size: tuple[int, int]) -> bool:
    n = max(2, int(math.ceil(duration * out.fps)) + 1)
    params = effect.transform(np.linspace(0.0, duration, n), duration, out.width, out.height)
    corners = np.array([[0, 0, 1], [out.width - 1, 0, 1], [0, out.height - 1, 1],
                        [out.width - 1, out.height - 1, 1]], np.float64).T
    ws, hs = src_size
    for scale, rot, sx, sy in params:
        m = affine_for((out.width, out.height), src_size, scale=scale, rotation_deg=rot, shift_x=sx, shift_y=sy)
        p = m @ corners
        if p[0].min() < -0.01 or p[1].min() < -0.01 or p[0].max() > ws - 0.99 or p[1].max() > hs - 0.99:
            return False
    return True


def fit_overscan(effect: MotionEffect, duration: float, out: OutputSpec, src_size: tuple[int, int]) -> MotionEffect:
    """Smallest constant zoom (≤ MAX_OVERSCAN) that hides every border; damps the move if that is not enough."""
    if effect.is_identity:
        return effect
    for damp in (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.0):
        e = effect.model_copy(update={
            "pan_x": effect.pan_x * damp, "pan_y": effect.pan_y * damp, "zoom_rate": effect.zoom_rate * damp,
            "rotation_deg_s": effect.rotation_deg_s * damp, "shake_amp": effect.shake_amp * damp,
        })
        if abs(e.zoom_rate) * duration > math.log(MAX_ZOOM_RANGE) or \
                not _corners_inside(e.model_copy(update={"overscan": MAX_OVERSCAN}), duration, out, src_size):
            continue
        lo, hi = 1.0, MAX_OVERSCAN
        for _ in range(14):
            mid = (lo + hi) / 2
            if _corners_inside(e.model_copy(update={"overscan": mid}), duration, out, src_size):
                hi = mid
            else:
                lo = mid
        return e.model_copy(update={"overscan": hi})
    return MotionEffect()


def _transitions(style: StyleJSON | None, options: Options, seg_frames: list[int], fps: float) -> list[TransitionIn]:
    plain = [TransitionIn() for _ in seg_frames]
    if not options.transfer.transitions or style is None or style.transitions is None or len(seg_frames) < 2:
        return plain
    group = style.transitions
    fractions = {k: v for k, v in group.fractions.items() if v > 0} or {"cut": 1.0}
    kinds = _diffuse(fractions, [1.0] * (len(seg_frames) - 1))
    color = (1.0, 1.0, 1.0) if group.fade_color == "white" else (0.0, 0.0, 0.0)
    out = [TransitionIn()]
    for j, kind in enumerate(kinds, start=1):
        if kind == "cut":
            out.append(TransitionIn())
            continue
        want = int(round(group.median_duration_s.get(kind, 0.5) * fps))
        # Never longer than 40% of either neighbour, so each shot is still seen on its own.
        frames = min(want, int(0.4 * seg_frames[j - 1]) * 2, int(0.4 * seg_frames[j]) * 2)
        out.append(TransitionIn(kind=kind, frames=frames, color=color) if frames >= 2 else TransitionIn())
    return out


def build_plan(
    source: VideoAnalysis,
    style: StyleJSON | None,
    options: Options,
    *,
    decode_size: tuple[int, int] | None = None,
) -> RenderPlan:
    """The edit decision list for rendering ``source`` in ``style`` with ``options``.

    decode_size: the size the renderer decodes source frames at (default: the source's display size); the
    over-scan of camera moves is computed against it.
    """
    p = source.probe
    out = output_spec(source, style, options)
    fps = out.fps
    src_size = decode_size or (p.display_width, p.display_height)
    limit = min(p.duration_s, options.max_duration_s or math.inf)

    use_pacing = options.transfer.pacing and style is not None and style.pacing is not None \
        and len(style.pacing.shot_lengths_s) >= 2
    # A source too short to re-cut (no piece of MIN_SEGMENT_S fits) keeps its own timeline.
    pieces = _recut(source, style, limit, options.seed) if use_pacing else []
    use_pacing = bool(pieces)
    if not use_pacing:
        # Keep the source's timeline frame for frame: one segment per source shot, up to the limit.
        pieces = [(i, s.start_s, min(s.end_s, limit) - s.start_s) for i, s in enumerate(source.shots)
                  if s.start_s < limit - 1e-9]

    # Quantise to output frames; boundaries are rounded from accumulated time so lengths do not drift.
    segments: list[Segment] = []
    t_out = 0.0
    bounds = [0]
    for _, _, length in pieces:
        t_out += length
        bounds.append(int(round(t_out * fps)))
    if not use_pacing and not p.is_vfr and abs(fps - p.fps) < 1e-6:
        # Frame for frame: the output has exactly the source's frames (bounded by the limit).
        bounds[-1] = min(p.frame_count, int(round(limit * fps)))
    if options.max_duration_s is not None:  # a cap is never exceeded, not even by part of a frame
        cap = int(math.floor(options.max_duration_s * fps + 1e-6))
        bounds = [min(b, cap) for b in bounds]
    frames_per = [b - a for a, b in zip(bounds, bounds[1:])]
    keep = [i for i, f in enumerate(frames_per) if f > 0]
    pieces = [pieces[i] for i in keep]
    starts = [bounds[i] for i in keep]
    ends = [bounds[i + 1] for i in keep]
    lengths = [(e - s) / fps for s, e in zip(starts, ends)]
    screen_time = [0.0] * len(source.shots)
    for (shot_i, _, _), length in zip(pieces, lengths):
        screen_time[shot_i] += length
    transfers = _color_transfers(source, style, options, screen_time)
    effects = _motion_effects(style, options, lengths, out.width / out.height)
    transitions = _transitions(style, options, [e - s for s, e in zip(starts, ends)], fps)

    colors: list[ColorTransfer] = []
    color_index: dict[int, int] = {}
    for j, ((shot_i, src_start, _), a, b) in enumerate(zip(pieces, starts, ends)):
        shot = source.shots[shot_i]
        transfer = transfers[shot_i]
        if transfer is None:
            ci = -1
        else:
            if shot_i not in color_index:
                color_index[shot_i] = len(colors)
                colors.append(transfer)
            ci = color_index[shot_i]
        effect = fit_overscan(effects[j], (b - a) / fps, out, src_size)
        segments.append(Segment(
            index=j, out_start_frame=a, out_end_frame=b, src_start_s=src_start, shot_index=shot_i,
            shot_start_s=shot.start_s, shot_end_s=shot.end_s, color=ci, motion=effect,
            transition_in=transitions[j],
        ))
    out.frame_count = ends[-1] if ends else 0
    if out.frame_count == 0:
        raise OptionsError(_no_frames_reason(p, options, fps))
    return RenderPlan(
        source_path=p.path, source_fps=p.fps, source_display_size=(p.display_width, p.display_height),
        output=out, colors=colors, segments=segments, audio=_audio_plan(source, style, options, segments, fps),
    )


def _no_frames_reason(p, options: Options, fps: float) -> str:
    frame = f"one output frame ({1.0 / fps:.3g} s at {fps:g} fps)"
    if options.max_duration_s is not None and options.max_duration_s * fps < 1.0:
        return f"max_duration_s {options.max_duration_s:g} is shorter than {frame}"
    return f"the output would have no frames: the source's {p.duration_s:.3g} s is shorter than {frame}"


def _audio_plan(source: VideoAnalysis, style: StyleJSON | None, options: Options, segments: list[Segment],
                fps: float) -> AudioPlan:
    if source.probe.audio is None or not segments:
        return AudioPlan(enabled=False)
    pieces = [AudioPiece(out_start_s=s.out_start_frame / fps, out_end_s=s.out_end_frame / fps,
                         src_start_s=s.src_start_s) for s in segments]
    gain = 0.0
    if (options.transfer.audio and style is not None and style.audio is not None and style.audio.lufs is not None
            and source.audio is not None and source.audio.lufs is not None):
        gain = options.strength * (style.audio.lufs - source.audio.lufs)
        gain = float(np.clip(gain, -30.0, 30.0))
    return AudioPlan(enabled=True, pieces=pieces, gain_db=gain)
