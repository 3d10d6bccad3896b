"""Per-frame video features and shot-boundary detection (cuts, fades, dissolves), letterbox.

Two halves, so the work can be split over time chunks:

(a) :func:`frame_features` turns one analysis-resolution RGB frame (and its predecessor) into a
    small :class:`FrameFeatures` record. It is a pure function of the two frames, so a chunk that
    starts mid-video and is given the previous frame produces exactly the same records as a single
    pass. :func:`stack_features` / :func:`concat_tracks` build a :class:`FeatureTrack`.
(b) Detectors run over a whole gathered :class:`FeatureTrack`: :class:`HardCutDetector`,
    :class:`FadeDetector`, :class:`DissolveDetector`, combined by :func:`detect_transitions`;
    :func:`shots_from_transitions` and :func:`detect_letterbox` work on their results.

Units: LAB as ``cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)`` (L 0..100),
"analysis px" = pixels of the frame given to :func:`frame_features` (~320 px wide), times in s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from kernels.features import motion_compensated_diff

# Downscaled working sizes (width, height). The fine level feeds the change scores; the thumbnail
# (exactly half of it) is stored for fade/dissolve reasoning and is the coarse motion-search level.
FINE_SIZE = (96, 54)
THUMB_SIZE = (48, 27)
# Fixed sampling grid for colour statistics: 32 x 16 = 512 LAB pixels per frame.
SAMPLE_GRID = (32, 16)
_COARSE_RADIUS = 3  # thumbnail px; 3 px at 48 wide = 20 px at 320 = 6 % of the width per frame


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> CIELAB float32 (L 0..100), the project's one definition."""
    arr = np.ascontiguousarray(rgb)
    flat = arr.reshape(-1, 1, 3) if arr.ndim != 3 else arr
    lab = cv2.cvtColor(flat.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab.reshape(arr.shape)


# --------------------------------------------------------------------------------------------
# (a) per-frame features
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameFeatures:
    """Features of one frame (all small; ~13 KB at 320x180).

    Attributes
    ----------
    thumb_lab : float16 (27, 48, 3) LAB thumbnail (area average).
    mean_luma : float, mean L (0..100) of the frame (from the 96x54 level).
    content_change : float, mean |LAB difference| vs the previous frame at 96x54, averaged over
        L, a, b (PySceneDetect ContentDetector-like); 0 for the first frame.
    motion_change : float, the same difference after the best global translation (searched up to
        ~6 % of the width per frame) on the interior of the frame: low for pans and shake, high for
        cuts and cross-fades; 0 for the first frame.
    shift_px : float32 (2,), the content translation (dx, dy) from the previous frame in analysis
        px (+x = content moved right, +y = moved down); (0, 0) for the first frame.
    row_luma_mean, row_luma_max : float32 (H,), uint8 (H,) per-row mean / max 8-bit luma
        (``cv2.COLOR_RGB2GRAY``, 0..255) at analysis resolution; ``col_*`` likewise (W,).
    lab_samples : float16 (512, 3) LAB pixels on a fixed 32x16 grid of cell centres.
    """

    thumb_lab: np.ndarray
    mean_luma: float
    content_change: float
    motion_change: float
    shift_px: np.ndarray
    row_luma_mean: np.ndarray
    row_luma_max: np.ndarray
    col_luma_mean: np.ndarray
    col_luma_max: np.ndarray
    lab_samples: np.ndarray


def _levels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAB at the fine (96x54) and thumbnail (48x27) levels, both float32 C-contiguous."""
    fine_rgb = cv2.resize(rgb, FINE_SIZE, interpolation=cv2.INTER_AREA)
    fine = rgb_to_lab(fine_rgb)
    thumb = np.ascontiguousarray(cv2.resize(fine, THUMB_SIZE, interpolation=cv2.INTER_AREA))
    return fine, thumb


def sample_grid_coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the fixed colour-sampling grid (cell centres), in analysis px."""
    gx, gy = SAMPLE_GRID
    xs = ((np.arange(gx) + 0.5) * width / gx).astype(np.intp)
    ys = ((np.arange(gy) + 0.5) * height / gy).astype(np.intp)
    return ys, xs


def frame_features(rgb: np.ndarray, prev_rgb: np.ndarray | None) -> FrameFeatures:
    """Compute the per-frame feature record.

    Parameters
    ----------
    rgb : uint8 (H, W, 3) RGB frame at analysis resolution (~320 px wide).
    prev_rgb : uint8 (H, W, 3) the frame before it in the video, or None for the video's first
        frame. Give a chunk's first frame its true predecessor so scores do not depend on chunking.

    Returns
    -------
    FrameFeatures
    """
    return FeatureStream(prev_rgb).push(rgb)


class FeatureStream:
    """:func:`frame_features` of consecutive frames, each frame downscaled once (not again as the next
    frame's predecessor): ``stream = FeatureStream(prev_rgb); records = [stream.push(f) for f in frames]``.

    prev_rgb : the frame before the first one pushed, or None at the video's start.
    """

    def __init__(self, prev_rgb: np.ndarray | None = None) -> None:
        self._prev_shape = None if prev_rgb is None else _check_rgb(np.asarray(prev_rgb), "prev_rgb")
        self._prev_levels = None if prev_rgb is None else _levels(np.asarray(prev_rgb))

    def push(self, rgb: np.ndarray) -> FrameFeatures:
        """The record of ``rgb``, scored against the frame pushed before it."""
        rgb = np.asarray(rgb)
        shape = _check_rgb(rgb, "frame")
        if self._prev_shape is not None and self._prev_shape != shape:
            raise ValueError(f"frame shape {shape} != previous frame shape {self._prev_shape}")
        levels = _levels(rgb)
        record = _features_from_levels(rgb, levels, self._prev_levels)
        self._prev_shape, self._prev_levels = shape, levels
        return record


def _check_rgb(rgb: np.ndarray, name: str) -> tuple[int, ...]:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name}: expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    return rgb.shape


def _features_from_levels(
    rgb: np.ndarray,
    levels: tuple[np.ndarray, np.ndarray],
    prev_levels: tuple[np.ndarray, np.ndarray] | None,
) -> FrameFeatures:
    """:func:`frame_features` given the downscaled LAB levels (reused across consecutive frames)."""
    height, width = rgb.shape[:2]
    fine, thumb = levels
    if prev_levels is None:
        content_change = motion_change = 0.0
        shift = np.zeros(2, np.float32)
    else:
        prev_fine, prev_thumb = prev_levels
        content_change = float(np.abs(fine - prev_fine).mean())
        motion_change, dx, dy = motion_compensated_diff(fine, prev_fine, thumb, prev_thumb, _COARSE_RADIUS)
        # The kernel's shift maps cur -> prev; content motion is its negation, scaled to analysis px.
        shift = np.array([-dx * width / FINE_SIZE[0], -dy * height / FINE_SIZE[1]], np.float32)

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ys, xs = sample_grid_coords(height, width)
    samples = rgb_to_lab(rgb[ys[:, None], xs[None, :]].reshape(-1, 3))
    return FrameFeatures(
        thumb_lab=thumb.astype(np.float16),
        mean_luma=float(fine[..., 0].mean()),
        content_change=float(content_change),
        motion_change=float(motion_change),
        shift_px=shift,
        row_luma_mean=gray.mean(axis=1, dtype=np.float32),
        row_luma_max=gray.max(axis=1),
        col_luma_mean=gray.mean(axis=0, dtype=np.float32),
        col_luma_max=gray.max(axis=0),
        lab_samples=samples.astype(np.float16),
    )


@dataclass
class FeatureTrack:
    """Stacked per-frame features of a clip (or a chunk of one); arrays have ``n`` rows.

    Field meanings/units as in :class:`FrameFeatures`; ``times_s`` (n,) float64 presentation
    times in seconds, ``fps`` the nominal frame rate (frames/s).
    """

    thumb_lab: np.ndarray  # (n, 27, 48, 3) float16
    mean_luma: np.ndarray  # (n,) float32
    content_change: np.ndarray  # (n,) float32
    motion_change: np.ndarray  # (n,) float32
    shift_px: np.ndarray  # (n, 2) float32
    row_luma_mean: np.ndarray  # (n, H) float32
    row_luma_max: np.ndarray  # (n, H) uint8
    col_luma_mean: np.ndarray  # (n, W) float32
    col_luma_max: np.ndarray  # (n, W) uint8
    lab_samples: np.ndarray  # (n, 512, 3) float16
    times_s: np.ndarray  # (n,) float64
    fps: float = field(default=25.0)

    @property
    def n_frames(self) -> int:
        return int(self.mean_luma.shape[0])

    def __len__(self) -> int:
        return self.n_frames

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the analysis frames in px."""
        return int(self.row_luma_mean.shape[1]), int(self.col_luma_mean.shape[1])


_ARRAY_FIELDS = (
    "thumb_lab", "mean_luma", "content_change", "motion_change", "shift_px", "row_luma_mean",
    "row_luma_max", "col_luma_mean", "col_luma_max", "lab_samples",
)
_DTYPES = {
    "thumb_lab": np.float16, "mean_luma": np.float32, "content_change": np.float32,
    "motion_change": np.float32, "shift_px": np.float32, "row_luma_mean": np.float32,
    "row_luma_max": np.uint8, "col_luma_mean": np.float32, "col_luma_max": np.uint8,
    "lab_samples": np.float16,
}


def stack_features(
    features: Sequence[FrameFeatures], times_s: Sequence[float] | np.ndarray, fps: float
) -> FeatureTrack:
    """Stack per-frame records (in display order) into a :class:`FeatureTrack`.

    Parameters
    ----------
    features : sequence of FrameFeatures, one per frame, in order.
    times_s : (n,) presentation times in seconds.
    fps : nominal frame rate in frames/s.
    """
    times = np.asarray(times_s, dtype=np.float64)
    if len(features) != times.shape[0]:
        raise ValueError(f"{len(features)} feature records but {times.shape[0]} times")
    if not features:
        raise ValueError("stack_features needs at least one frame")
    arrays = {
        name: np.stack([np.asarray(getattr(f, name)) for f in features]).astype(_DTYPES[name], copy=False)
        for name in _ARRAY_FIELDS
    }
    return FeatureTrack(**arrays, times_s=times, fps=float(fps))


def concat_tracks(tracks: Sequence[FeatureTrack]) -> FeatureTrack:
    """Concatenate chunk tracks (in time order) into one track; fps is taken from the first."""
    if not tracks:
        raise ValueError("concat_tracks needs at least one track")
    arrays = {name: np.concatenate([getattr(t, name) for t in tracks]) for name in _ARRAY_FIELDS}
    times = np.concatenate([t.times_s for t in tracks])
    return FeatureTrack(**arrays, times_s=times, fps=float(tracks[0].fps))


def compute_track(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    fps: float,
    prev_rgb: np.ndarray | None = None,
    times_s: Sequence[float] | np.ndarray | None = None,
    start_frame: int = 0,
) -> FeatureTrack:
    """Feature track of consecutive frames (a whole clip or one chunk of it).

    Parameters
    ----------
    frames : sequence of uint8 (H, W, 3) RGB frames at analysis resolution.
    fps : frame rate in frames/s.
    prev_rgb : the frame just before ``frames[0]`` in the video (None at the video start).
    times_s : presentation times in s; default ``(start_frame + i) / fps``.
    start_frame : index of ``frames[0]`` in the video, only used for default times.
    """
    stream = FeatureStream(prev_rgb)
    feats = [stream.push(frame) for frame in frames]
    if times_s is None:
        times_s = (start_frame + np.arange(len(feats))) / float(fps)
    return stack_features(feats, times_s, fps)


# --------------------------------------------------------------------------------------------
# (b) detection over a track
# --------------------------------------------------------------------------------------------

TransitionKind = Literal["cut", "fade", "dissolve"]


class Transition(BaseModel):
    """A shot transition. Frame indices are into the analysed track.

    ``start_frame``..``end_frame`` (inclusive) are the frames that belong to the transition:
    for a cut both equal ``frame``, the first frame of the new shot; for a fade/dissolve they are
    the first and last mixed (or black/white) frames and ``frame`` is the middle one.
    ``duration_s`` is 0 for a cut, else ``(end_frame - start_frame + 1) / fps``; ``score`` is the
    detector's confidence-like value (higher = stronger; not comparable across kinds).
    """

    model_config = ConfigDict(extra="forbid")

    frame: int
    time_s: float
    kind: TransitionKind
    start_frame: int
    end_frame: int
    duration_s: float
    score: float


class Shot(BaseModel):
    """A shot: frames ``start_frame`` (inclusive) .. ``end_frame`` (exclusive); times in s."""

    model_config = ConfigDict(extra="forbid")

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float


def _time_of(track: FeatureTrack, frame: int) -> float:
    return float(track.times_s[min(max(frame, 0), track.n_frames - 1)])


def _make_transition(
    track: FeatureTrack, kind: str, start: int, end: int, frame: int, score: float
) -> Transition:
    duration = 0.0 if kind == "cut" else (end - start + 1) / float(track.fps)
    return Transition(
        frame=int(frame), time_s=_time_of(track, frame), kind=kind, start_frame=int(start),
        end_frame=int(end), duration_s=float(duration), score=float(score),
    )


@dataclass(frozen=True)
class HardCutDetector:
    """Hard cuts from the motion-compensated change score (PySceneDetect AdaptiveDetector style).

    Rule: frame ``i`` starts a new shot when its score (``motion_change[i]``, see :meth:`scores`)
    is >= ``min_change`` AND >= ``adaptive_ratio`` x (mean score of the ``window_frames`` frames on
    each side) + ``min_margin``. The motion compensation removes pans/shake; the adaptive ratio removes
    sustained change (zooms, rotations, moving objects, fades, dissolves), which has no isolated
    spike. Cuts closer than ``min_shot_s`` keep the stronger one.

    Parameters
    ----------
    min_change : float, LAB mean abs difference units.
    max_shift_jump : float, fraction of the frame width; see :meth:`scores`.
    adaptive_ratio : float, required spike factor over the local mean.
    min_margin : float, LAB units added to the adaptive threshold (stabilises still scenes).
    window_frames : int, frames on each side used for the local mean.
    """

    min_change: float = 5.0
    max_shift_jump: float = 0.025
    adaptive_ratio: float = 2.5
    min_margin: float = 2.0
    window_frames: int = 3

    def _local_mean(self, s: np.ndarray) -> np.ndarray:
        """Mean of the ``window_frames`` values on each side (edges padded)."""
        n = s.shape[0]
        w = self.window_frames
        padded = np.pad(s, w, mode="edge")
        csum = np.concatenate([[0.0], np.cumsum(padded)])
        total = csum[2 * w + 1 : 2 * w + 1 + n] - csum[:n]  # sum over [i - w, i + w]
        return (total - s) / (2 * w)

    def scores(self, track: FeatureTrack) -> tuple[np.ndarray, np.ndarray]:
        """(change score, local mean of the neighbours' scores) per frame.

        The score is ``motion_change``, except where the best-match translation is an isolated
        jump (differs by more than ``max_shift_jump`` x width from BOTH neighbours' translations):
        a camera cannot jerk for one frame only, so the match is a coincidence between two
        framings of the same scene and the plain ``content_change`` is used instead (compared
        with the neighbours' plain change).
        """
        mc = track.motion_change.astype(np.float64)
        cc = track.content_change.astype(np.float64)
        shift = track.shift_px.astype(np.float64)
        limit = self.max_shift_jump * track.frame_size[1]
        jump = np.zeros(mc.shape[0] + 1)
        if mc.shape[0] > 1:
            jump[1:-1] = np.hypot(*(shift[1:] - shift[:-1]).T)  # jump[i] = |shift[i] - shift[i-1]|
        jump[1] = 0.0  # frame 0 has no translation of its own (no predecessor)
        jump[-1] = np.inf
        isolated = (jump[:-1] > limit) & (jump[1:] > limit)
        score = np.where(isolated, cc, mc)
        local = np.where(isolated, self._local_mean(cc), self._local_mean(mc))
        return score, local

    def detect(self, track: FeatureTrack, min_shot_s: float = 0.25) -> list[Transition]:
        s, local = self.scores(track)
        ok = (s >= self.min_change) & (s >= self.adaptive_ratio * local + self.min_margin)
        ok[0] = False
        candidates = np.flatnonzero(ok)
        min_gap = max(1, int(round(min_shot_s * track.fps)))
        kept: list[int] = []
        for i in candidates[np.argsort(-s[candidates], kind="stable")]:
            if all(abs(int(i) - k) >= min_gap for k in kept):
                kept.append(int(i))
        kept.sort()
        return [_make_transition(track, "cut", i, i, i, s[i] / max(local[i], 1.0)) for i in kept]


def _thumb_stats(track: FeatureTrack) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame mean, 5th and 95th percentile of thumbnail L."""
    lum = track.thumb_lab[..., 0].astype(np.float32).reshape(track.n_frames, -1)
    p05, p95 = np.percentile(lum, [5, 95], axis=1)
    return lum.mean(axis=1), p05, p95


@dataclass(frozen=True)
class FadeDetector:
    """Fades to/from black and white.

    Rule: a *hold* is a run of frames whose thumbnail is uniformly black (95th percentile
    L <= ``black_l``) or uniformly white (5th percentile L >= ``white_l``). From a hold the detector
    walks back over the fade-out (mean L heading towards the hold by ``min_step_l``..``max_step_l``
    per frame; a bigger jump is a cut, left to the cut detector) and forward over the fade-in. If
    the ramps have ``min_ramp_frames`` frames and change mean L by ``min_ramp_l`` in total, hold +
    ramps are ONE ``fade`` transition: a fade-out + fade-in pair, or a fade on one side and a cut
    on the other. Its middle frame is the centre of the darkest (brightest) part of the hold.
    Fades that share a ramp (black -> white -> black) are split half-way.

    Parameters
    ----------
    black_l, white_l : float, L (0..100) thresholds of a black / white frame.
    min_step_l, max_step_l : float, per-frame mean-L change (L units) that counts as fading;
        a bigger jump is a cut.
    min_ramp_frames : int, minimum frames on the ramps (both sides together).
    hold_tolerance_l : float, the middle is the centre of the hold frames within this many L
        units of the hold's darkest (brightest) frame.
    min_ramp_l : float, minimum total mean-L change over the ramps (L units).
    max_ramp_s : float, longest single ramp followed, in seconds.
    """

    black_l: float = 10.0
    white_l: float = 92.0
    min_step_l: float = 0.1
    min_ramp_l: float = 12.0
    max_step_l: float = 15.0
    min_ramp_frames: int = 3
    hold_tolerance_l: float = 1.0
    max_ramp_s: float = 4.0

    def _fading(self, far_l: float, near_l: float, towards: float) -> bool:
        """Is the step from ``far_l`` (further from the hold) to ``near_l`` a fading step?"""
        return self.min_step_l <= towards * (near_l - far_l) <= self.max_step_l

    def detect(self, track: FeatureTrack) -> list[Transition]:
        n = track.n_frames
        mean_l, p05, p95 = _thumb_stats(track)
        max_ramp = max(2, int(round(self.max_ramp_s * track.fps)))
        spans: list[tuple[int, int, int, float]] = []  # start, end, middle, score
        for is_hold, towards in ((p95 <= self.black_l, -1.0), (p05 >= self.white_l, 1.0)):
            i = 0
            while i < n:
                if not is_hold[i]:
                    i += 1
                    continue
                h0 = i
                while i < n and is_hold[i]:
                    i += 1
                h1 = i - 1  # hold is [h0, h1]
                # fade-out: going back in time, L moves AWAY from the hold level, gradually (a jump
                # larger than max_step_l is a cut to black/white, left to the cut detector)
                s = h0
                while s - 1 >= 0 and h0 - (s - 1) <= max_ramp and self._fading(mean_l[s - 1], mean_l[s], towards):
                    s -= 1
                e = h1
                while e + 1 < n and (e + 1) - h1 <= max_ramp and self._fading(mean_l[e + 1], mean_l[e], towards):
                    e += 1
                ramp = abs(mean_l[s] - mean_l[h0]) + abs(mean_l[e] - mean_l[h1])
                if ramp >= self.min_ramp_l and (h0 - s) + (e - h1) >= self.min_ramp_frames:
                    # middle: centre of the darkest (brightest) part of the hold
                    hold_l = towards * mean_l[h0 : h1 + 1]
                    extreme = np.flatnonzero(hold_l >= hold_l.max() - self.hold_tolerance_l) + h0
                    middle = (int(extreme[0]) + int(extreme[-1]) + 1) // 2
                    spans.append((s, e, middle, float(ramp)))
        spans.sort()
        # Adjacent fades can share a ramp (black -> white -> black): split the overlap half-way.
        fixed: list[list] = [list(sp) for sp in spans]
        for a, b in zip(fixed, fixed[1:]):
            if b[0] <= a[1]:
                cut = (max(a[2], b[0]) + min(b[2], a[1]) + 1) // 2
                cut = min(max(cut, a[2] + 1), b[2])
                a[1] = cut - 1
                b[0] = cut
        return [_make_transition(track, "fade", s, e, m, sc) for s, e, m, sc in fixed if e >= s]


@dataclass(frozen=True)
class DissolveDetector:
    """Cross-fades between two different shots.

    Rule: a window ``[c - h, c + h]`` (h in ``half_windows``) whose end thumbnails A, B differ by
    >= ``min_end_diff`` (mean |LAB|) holds a dissolve when ALL of:

    1. linear mix: each frame's projection ``alpha_k = <T_k - A, B - A> / |B - A|^2`` leaves a
       mean residual <= ``max_residual`` x |A - B|;
    2. gradual: alpha never steps up by > ``max_alpha_step`` (a cut jumps 0 -> 1) nor down by
       > 0.15, and >= ``min_mixed_frames`` frames have 0.1 < alpha < 0.9;
    3. not a translation: mean ``motion_change`` >= ``min_motion_ratio`` x mean
       ``content_change`` over the mixed frames (pans give ~0.1);
    4. global: >= ``min_changed_blocks`` of a 4x3 block grid change by >= ``min_block_change`` x
       |A - B| (moving objects over a still background do not);
    5. variance dip: the thumbnails' spatial variance at 0.3 < alpha < 0.7 is <=
       ``max_variance_ratio`` x the alpha-interpolated variance of A and B. Blending two unrelated
       pictures halves it; camera motion keeps it. This is the decisive test against slow zooms
       and rotations, whose low-resolution frames ARE nearly linear mixes of their neighbours.

    Thumbnails are cropped to the picture inside letterbox bars first. Overlapping candidates keep
    windows that contain the whole ramp, then the highest ``|A - B| x (1 - residual /
    max_residual)``. The kept ramp is re-fitted on its tightest window; the transition spans the
    frames with 0.05 < alpha < 0.95 and its middle is where a line fitted to alpha crosses 0.5.

    Parameters
    ----------
    half_windows : half window lengths in frames.
    min_end_diff : float, LAB mean-abs units.
    max_residual : float, relative residual (dimensionless).
    max_alpha_step, min_mixed_frames, min_motion_ratio, min_block_change, min_changed_blocks,
    max_variance_ratio : see the rule.
    """

    half_windows: tuple[int, ...] = (4, 6, 9, 13, 18, 25)
    min_end_diff: float = 6.0
    max_residual: float = 0.4
    max_variance_ratio: float = 0.8
    min_block_change: float = 0.25
    min_changed_blocks: float = 0.8
    max_alpha_step: float = 0.4
    min_mixed_frames: int = 4
    min_motion_ratio: float = 0.5

    def detect(self, track: FeatureTrack) -> list[Transition]:
        n = track.n_frames
        thumbs = _active_thumbs(track)
        th, tw = thumbs.shape[1:3]
        # half resolution (~24x14) is plenty for the linear-mix test and keeps it cheap
        even = thumbs[:, : th - th % 2, : tw - tw % 2]
        small = 0.25 * (even[:, 0::2, 0::2] + even[:, 1::2, 0::2] + even[:, 0::2, 1::2] + even[:, 1::2, 1::2])
        flat = np.ascontiguousarray(small.reshape(n, -1))
        # spatial variance (summed over L, a, b) of each thumbnail: the blend of two unrelated
        # pictures has about half the variance of either, a moving camera keeps it
        variance = thumbs.reshape(n, -1, 3).var(axis=1).sum(axis=1)
        # 3 x 4 blocks of the half-resolution thumbnail: block means by sums over row / column runs
        row_starts = [int(r[0]) for r in np.array_split(np.arange(small.shape[1]), 3)]
        col_starts = [int(q[0]) for q in np.array_split(np.arange(small.shape[2]), 4)]
        block_sizes = np.outer(np.diff(row_starts + [small.shape[1]]), np.diff(col_starts + [small.shape[2]]))
        cands: list[tuple] = []  # (incomplete, -score, start, end, middle, score)
        for h in self.half_windows:
            if 2 * h + 1 > n:
                continue
            centers = np.arange(h, n - h)
            a = flat[centers - h]
            b = flat[centers + h]
            d = b - a
            end_diff = np.abs(d).mean(axis=1)
            for c in centers[end_diff >= self.min_end_diff]:
                idx = np.arange(c - h, c + h + 1)
                x = flat[idx] - flat[c - h]
                dv = flat[c + h] - flat[c - h]
                alpha = x @ dv / float(dv @ dv)
                resid = np.abs(x - alpha[:, None] * dv[None, :]).mean(axis=1)
                diff_ab = float(np.abs(dv).mean())
                rel = float(resid.mean() / diff_ab)
                if rel > self.max_residual:
                    continue
                steps = np.diff(alpha)
                if steps.max() > self.max_alpha_step or steps.min() < -0.15:
                    continue
                mixed = (alpha > 0.1) & (alpha < 0.9)
                if int(mixed.sum()) < self.min_mixed_frames:
                    continue
                mixed_frames = idx[mixed]
                mc = float(track.motion_change[mixed_frames].mean())
                cc = float(track.content_change[mixed_frames].mean())
                if mc < self.min_motion_ratio * cc:
                    continue
                # the change must cover the frame (moving objects over a still background don't)
                block_diff = np.abs(small[c + h] - small[c - h]).mean(axis=-1)
                blocks = np.add.reduceat(np.add.reduceat(block_diff, row_starts, axis=0), col_starts, axis=1) / block_sizes
                if np.mean(blocks >= self.min_block_change * diff_ab) < self.min_changed_blocks:
                    continue
                central = (alpha > 0.3) & (alpha < 0.7)
                if not central.any():
                    central = np.abs(alpha - 0.5) == np.abs(alpha - 0.5).min()
                a_c = alpha[central]
                expected = (1.0 - a_c) * variance[c - h] + a_c * variance[c + h]
                dip = float(np.mean(variance[idx[central]] / np.maximum(expected, 1e-6)))
                if dip > self.max_variance_ratio:
                    continue
                start, end, middle = _ramp_extent(alpha, idx)
                # Rank: windows containing the whole ramp (flat alpha at both ends) first, then by
                # end difference x fit quality -- the partial windows inside a long dissolve fit a
                # line slightly better but see a smaller end difference.
                complete = bool(alpha[1] < 0.05 and alpha[-2] > 0.95)
                score = diff_ab * (1.0 - rel / self.max_residual)
                cands.append((not complete, -score, start, end, middle, score))
        cands.sort()
        kept: list[tuple[int, int, int, float]] = []
        for _, _, start, end, middle, score in cands:
            if all(end < k[0] or start > k[1] for k in kept):
                kept.append((start, end, middle, score))
        kept.sort()
        result = []
        for start, end, middle, score in kept:
            # Re-fit on the tightest window around the found ramp: the end frames of a long window
            # have drifted (camera motion), which biases alpha and so the middle.
            for _ in range(2):
                lo, hi = max(start - 1, 0), min(end + 1, n - 1)
                dv = flat[hi] - flat[lo]
                if hi - lo < 2 or float(dv @ dv) <= 0.0:
                    break
                idx = np.arange(lo, hi + 1)
                alpha = (flat[idx] - flat[lo]) @ dv / float(dv @ dv)
                start, end, middle = _ramp_extent(alpha, idx, start, end, middle)
            result.append(_make_transition(track, "dissolve", start, end, middle, score))
        return result


def _active_thumbs(track: FeatureTrack) -> np.ndarray:
    """float32 thumbnails cropped to the picture inside letterbox/pillarbox bars."""
    thumbs = track.thumb_lab.astype(np.float32)
    height, width = track.frame_size
    th, tw = thumbs.shape[1:3]
    top, bottom, left, right = detect_letterbox(track)
    r0, r1 = int(np.ceil(top * th / height)), th - int(np.ceil(bottom * th / height))
    c0, c1 = int(np.ceil(left * tw / width)), tw - int(np.ceil(right * tw / width))
    if r1 - r0 < 6 or c1 - c0 < 8:
        return thumbs
    return np.ascontiguousarray(thumbs[:, r0:r1, c0:c1])


def _ramp_extent(alpha: np.ndarray, idx: np.ndarray, *fallback: int) -> tuple[int, int, int]:
    """(first, last, middle) frame of a 0 -> 1 mixing ramp: frames with 0.05 < alpha < 0.95, and
    where a straight line fitted to alpha over the mixed frames (0.1 < alpha < 0.9) crosses 0.5 --
    a fit, because camera motion inside the shots makes single alpha values noisy.
    ``fallback`` is returned if undefined."""
    inside = np.flatnonzero((alpha > 0.05) & (alpha < 0.95))
    mixed = np.flatnonzero((alpha > 0.1) & (alpha < 0.9))
    if inside.size == 0:
        return fallback if fallback else (int(idx[0]), int(idx[-1]), int(idx[len(idx) // 2]))
    first, last = int(idx[inside[0]]), int(idx[inside[-1]])
    if mixed.size >= 2:
        slope, offset = np.polyfit(idx[mixed].astype(np.float64), alpha[mixed].astype(np.float64), 1)
        middle = (0.5 - offset) / slope if slope > 1e-6 else 0.5 * (first + last)
    else:
        middle = 0.5 * (first + last)
    return first, last, int(round(min(max(middle, first), last)))


def detect_transitions(
    track: FeatureTrack,
    *,
    min_shot_s: float = 0.25,
    cut_detector: HardCutDetector | None = None,
    fade_detector: FadeDetector | None = None,
    dissolve_detector: DissolveDetector | None = None,
) -> list[Transition]:
    """All transitions of a track, sorted by frame and non-overlapping.

    Precedence: fades, then dissolves not overlapping a fade, then cuts not inside (or touching)
    a gradual transition's span.

    Parameters
    ----------
    track : the whole video's FeatureTrack.
    min_shot_s : float, minimum distance between two cuts in seconds.
    """
    cut_detector = cut_detector or HardCutDetector()
    fade_detector = fade_detector or FadeDetector()
    dissolve_detector = dissolve_detector or DissolveDetector()
    gradual = fade_detector.detect(track)
    for t in dissolve_detector.detect(track):
        if all(t.end_frame < g.start_frame or t.start_frame > g.end_frame for g in gradual):
            gradual.append(t)
    result = list(gradual)
    for t in cut_detector.detect(track, min_shot_s=min_shot_s):
        if all(t.frame < g.start_frame - 1 or t.frame > g.end_frame + 1 for g in gradual):
            result.append(t)
    result.sort(key=lambda t: t.frame)
    return result


def shots_from_transitions(
    transitions: Sequence[Transition],
    n_frames: int,
    fps: float | None = None,
    times_s: Sequence[float] | np.ndarray | None = None,
) -> list[Shot]:
    """Split ``n_frames`` frames into shots at the transitions' ``frame`` (the middle frame of a
    gradual one; the first frame of the new shot for a cut).

    A transition that touches the first or last frame (an opening fade-in / closing fade-out)
    separates no shots and is ignored. Times come from ``times_s`` (per-frame, s; the end of the
    last shot is extrapolated by one frame) or else ``frame / fps``.
    """
    if times_s is None and fps is None:
        raise ValueError("give fps or times_s")
    if times_s is not None:
        times = np.asarray(times_s, dtype=np.float64)
        step = float(np.median(np.diff(times))) if times.shape[0] > 1 else (1.0 / fps if fps else 0.0)
        times = np.append(times, times[-1] + step if times.shape[0] else 0.0)
    else:
        times = np.arange(n_frames + 1) / float(fps)
    bounds = sorted({
        t.frame for t in transitions
        if 0 < t.frame < n_frames and t.start_frame > 0 and t.end_frame < n_frames - 1
    })
    edges = [0, *bounds, n_frames]
    return [
        Shot(start_frame=s, end_frame=e, start_s=float(times[s]), end_s=float(times[e]))
        for s, e in zip(edges, edges[1:])
        if e > s
    ]


def detect_letterbox(
    track: FeatureTrack,
    *,
    black_mean: float = 16.0,
    black_max: float = 40.0,
    min_fraction: float = 0.97,
) -> tuple[int, int, int, int]:
    """Letterbox / pillarbox bars as ``(top_px, bottom_px, left_px, right_px)`` at analysis size.

    A row (column) is a bar row if, in at least ``min_fraction`` of the frames, its mean 8-bit
    luma is <= ``black_mean`` and its max <= ``black_max`` (0..255). Bars are the runs of such
    rows from each edge. Frames that are entirely black (fades) say nothing and are skipped. Bars
    that would leave less than half of a side as picture are not reported on that side: that is a
    dark picture with a few bright lines (a night shot, the first second of a fade-in), not a
    letterbox (the widest in use, 2.76:1 in 16:9, leaves 64%).
    """
    height, width = track.frame_size
    informative = ~(
        (track.row_luma_mean.max(axis=1) <= black_mean) & (track.row_luma_max.max(axis=1) <= black_max)
    )
    if not informative.any():
        return 0, 0, 0, 0

    def bar_lines(mean: np.ndarray, mx: np.ndarray) -> np.ndarray:
        black = (mean[informative] <= black_mean) & (mx[informative] <= black_max)
        return black.mean(axis=0) >= min_fraction

    rows = bar_lines(track.row_luma_mean, track.row_luma_max)
    cols = bar_lines(track.col_luma_mean, track.col_luma_max)

    def run(mask: np.ndarray) -> int:
        not_black = np.flatnonzero(~mask)
        return int(not_black[0]) if not_black.size else int(mask.shape[0])

    top, bottom = run(rows), run(rows[::-1])
    left, right = run(cols), run(cols[::-1])
    if 2 * (top + bottom) > height:
        top = bottom = 0
    if 2 * (left + right) > width:
        left = right = 0
    return top, bottom, left, right
