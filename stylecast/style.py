"""StyleJSON v1: the one model of a template's editing style, and its extraction from an analysis.

Each group (`color`, `tone`, `pacing`, `transitions`, `motion`, `audio`, `framing`) is extracted on its own;
a group whose extraction fails (or has nothing to work from, e.g. a template without audio) is ``null`` and
``meta.failures[group]`` says why, while the other groups still come through.  Field meanings, units and how
each is measured and applied: ``docs/stylejson.md``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import math
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stylecast import __version__
from stylecast.color import (CHROMA_PERCENTILES, LUMA_PERCENTILES, ColorStats, ColorTransfer, check_percentile_keys,
                             fit_transfer, merge_stats, neutral_reference_stats, transfer_lut)

SCHEMA_VERSION = "1.0"
GROUPS = ("color", "tone", "pacing", "transitions", "motion", "audio", "framing")
MOTION_KINDS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "rotate", "handheld")
TRANSITION_KINDS = ("cut", "fade", "dissolve")


class _Model(BaseModel):
    # Unknown fields and NaN/±Infinity (which JSON parsers accept) are errors, not values to render with.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
MotionKind = Literal[MOTION_KINDS]  # type: ignore[valid-type]
TransitionKind = Literal[TRANSITION_KINDS]  # type: ignore[valid-type]


# --------------------------------------------------------------------------------------------------- meta
class TemplateFacts(_Model):
    filename: str
    duration_s: float
    fps: float
    frame_count: int
    display_width: int
    display_height: int
    has_audio: bool


class Meta(_Model):
    template: TemplateFacts
    generator: str = f"stylecast {__version__}"
    created_at: str = Field(description="ISO 8601 UTC time of extraction")
    confidence: dict[str, float] = Field(description="per group, 0..1: how much the extracted values can be trusted")
    failures: dict[str, str] = Field(default_factory=dict, description="group → why it is null")


# --------------------------------------------------------------------------------------------------- color
class LutData(_Model):
    """A 3D LUT, ``lut[r, g, b, channel]`` in 0..1, stored compactly: little-endian uint16 (value × 65535),
    C order (b fastest), base64."""

    size: int = Field(ge=2, le=65)
    encoding: Literal["uint16le-base64"] = "uint16le-base64"
    data: str

    @classmethod
    def from_array(cls, lut: np.ndarray) -> LutData:
        q = np.round(np.clip(lut, 0.0, 1.0) * 65535.0).astype("<u2")
        return cls(size=int(lut.shape[0]), data=base64.b64encode(q.tobytes()).decode("ascii"))

    def to_array(self) -> np.ndarray:
        raw = np.frombuffer(base64.b64decode(self.data), dtype="<u2")
        n = self.size
        if raw.size != n * n * n * 3:
            raise ValueError(f"LUT data has {raw.size} values, expected {n ** 3 * 3}")
        return (raw.astype(np.float32) / 65535.0).reshape(n, n, n, 3)


class ColorGroup(_Model):
    template: ColorStats = Field(description="CIELAB statistics of the whole template (pooled over shots)")
    shots: list[ColorStats] = Field(description="per template shot")
    look_transfer: ColorTransfer = Field(description="transfer from the neutral reference to the template")
    look_lut: LutData = Field(description="look_transfer baked into a 33³ RGB LUT (export: .cube)")


# --------------------------------------------------------------------------------------------------- tone
class ToneGroup(_Model):
    luma_percentiles: dict[str, float] = Field(description="L* percentiles p1…p99 (0..100)")
    mean_luma: float = Field(description="mean L*")
    contrast: float = Field(description="p95 − p5 of L*, L* units")
    key: Literal["low", "normal", "high"] = Field(description="low-key (median L* < 35), high-key (> 65)")
    saturation_mean: float = Field(description="mean chroma C*ab")
    chroma_percentiles: dict[str, float]

    @model_validator(mode="after")
    def _percentile_keys(self) -> ToneGroup:
        check_percentile_keys("luma_percentiles", self.luma_percentiles, LUMA_PERCENTILES)
        check_percentile_keys("chroma_percentiles", self.chroma_percentiles, CHROMA_PERCENTILES)
        return self


# --------------------------------------------------------------------------------------------------- pacing
class ShotLengthStats(_Model):
    mean: float
    median: float
    cv: float = Field(description="coefficient of variation: std / mean")
    min: float
    max: float


class RateWindow(_Model):
    start_s: float
    end_s: float
    cuts_per_minute: float


class PacingGroup(_Model):
    cut_times_s: list[float] = Field(description="shot boundaries (middle of gradual transitions), seconds")
    shot_lengths_s: list[NonNegative]
    shot_length: ShotLengthStats
    cuts_per_minute: float
    cuts_per_minute_timeline: list[RateWindow]
    beat_alignment: float | None = Field(description="0..1 above chance; null without audio beats")
    cuts_on_beat: bool = Field(description="beat_alignment ≥ 0.5: the renderer snaps cuts to beats")


# --------------------------------------------------------------------------------------------------- transitions
class TransitionItem(_Model):
    time_s: float
    kind: Literal["cut", "fade", "dissolve"]
    duration_s: NonNegative
    color: Literal["black", "white"] | None = Field(None, description="for fades: the colour faded through")


class TransitionsGroup(_Model):
    items: list[TransitionItem]
    counts: dict[TransitionKind, Annotated[int, Field(ge=0)]]
    fractions: dict[TransitionKind, Fraction01] = Field(description="share of each kind among all transitions")
    median_duration_s: dict[Literal["fade", "dissolve"], NonNegative] = Field(
        description="per gradual kind that occurs")
    fade_color: Literal["black", "white"] = "black"


# --------------------------------------------------------------------------------------------------- motion
class MotionParams(_Model):
    """Camera motion of one shot (or typical of one kind).  Units as in `stylecast.analysis.motion`."""

    kind: MotionKind
    pan_x: float = Field(description="fraction of frame width per second, + = camera turns right")
    pan_y: float = Field(description="fraction of frame height per second, + = camera tilts up")
    zoom_rate: float = Field(description="d(ln scale)/dt per second, + = zoom in")
    rotation_deg_s: float
    shake_amp: float = Field(description="RMS shake, fraction of frame width")
    shake_hz: float
    confidence: float


class MotionShot(_Model):
    start_s: float
    end_s: float
    motion: MotionParams


class MotionGroup(_Model):
    shots: list[MotionShot]
    kind_fractions: dict[MotionKind, Fraction01] = Field(description="share of template time per motion kind")
    typical: dict[MotionKind, MotionParams] = Field(description="per kind that occurs: median parameters")

    @model_validator(mode="after")
    def _typical_for_every_kind(self) -> MotionGroup:
        missing = sorted(k for k, share in self.kind_fractions.items() if share > 0 and k not in self.typical)
        if missing:
            raise ValueError(f"typical has no parameters for kind(s) {', '.join(missing)} of kind_fractions")
        return self


# --------------------------------------------------------------------------------------------------- audio
class AudioGroup(_Model):
    tempo_bpm: float | None
    beats_s: list[float]
    beat_strength: float
    onset_density_per_s: float
    lufs: float | None = Field(description="integrated loudness, ITU-R BS.1770-4, LUFS")


# --------------------------------------------------------------------------------------------------- framing
class Letterbox(_Model):
    top: float = Field(ge=0.0, le=0.5, description="fraction of the height that is a black bar")
    bottom: float = Field(ge=0.0, le=0.5)
    left: float = Field(ge=0.0, le=0.5, description="fraction of the width")
    right: float = Field(ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _leaves_a_picture(self) -> Letterbox:
        if self.top + self.bottom >= 1.0 or self.left + self.right >= 1.0:
            raise ValueError("the bars cover the whole frame")
        return self


class FramingGroup(_Model):
    display_width: int
    display_height: int
    display_aspect: float
    letterbox: Letterbox
    active_aspect: float = Field(description="aspect ratio of the picture inside the bars")


class StyleJSON(_Model):
    """A template's editing style.  ``null`` groups are explained in ``meta.failures``."""

    schema_version: Literal["1.0"] = Field(description="required: the version this document follows")
    meta: Meta
    color: ColorGroup | None
    tone: ToneGroup | None
    pacing: PacingGroup | None
    transitions: TransitionsGroup | None
    motion: MotionGroup | None
    audio: AudioGroup | None
    framing: FramingGroup | None


def stylejson_schema() -> dict:
    return StyleJSON.model_json_schema()


# =================================================================================================== extraction
def _stats(values) -> ShotLengthStats:
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    return ShotLengthStats(
        mean=mean, median=float(np.median(v)), cv=float(v.std() / mean) if mean > 0 else 0.0,
        min=float(v.min()), max=float(v.max()),
    )


def extract_color(analysis) -> tuple[ColorGroup, float]:
    shot_stats = [s.color for s in analysis.shots if s.color is not None and s.color.n_pixels > 0]
    if not shot_stats:
        raise ValueError("no colour samples in the template")
    overall = merge_stats(shot_stats)
    look = fit_transfer(neutral_reference_stats(), overall)
    confidence = min(1.0, overall.n_pixels / 20000.0)
    return ColorGroup(template=overall, shots=shot_stats, look_transfer=look,
                      look_lut=LutData.from_array(transfer_lut(look, 33))), confidence


def extract_tone(analysis) -> tuple[ToneGroup, float]:
    overall = merge_stats([s.color for s in analysis.shots if s.color is not None and s.color.n_pixels > 0])
    p50 = overall.luma_percentiles["p50"]
    key = "low" if p50 < 35 else "high" if p50 > 65 else "normal"
    group = ToneGroup(
        luma_percentiles=overall.luma_percentiles, mean_luma=overall.mean[0], contrast=overall.contrast, key=key,
        saturation_mean=overall.saturation_mean, chroma_percentiles=overall.chroma_percentiles,
    )
    return group, min(1.0, overall.n_pixels / 20000.0)


def extract_pacing(analysis) -> tuple[PacingGroup, float]:
    from stylecast.analysis.audio import beat_alignment

    duration = analysis.probe.duration_s
    cuts = [t.time_s for t in analysis.transitions]
    lengths = [s.end_s - s.start_s for s in analysis.shots]
    window = 10.0 if duration >= 20 else max(duration / 2.0, 1.0)
    timeline, start = [], 0.0
    while start < duration - 1e-6:
        end = min(duration, start + window)
        n = sum(1 for c in cuts if start <= c < end)
        timeline.append(RateWindow(start_s=start, end_s=end, cuts_per_minute=60.0 * n / max(end - start, 1e-6)))
        start = end
    alignment = None
    if analysis.audio is not None and analysis.audio.beats_s and cuts:
        alignment = float(beat_alignment(cuts, analysis.audio.beats_s))
    group = PacingGroup(
        cut_times_s=cuts, shot_lengths_s=lengths, shot_length=_stats(lengths),
        cuts_per_minute=60.0 * len(cuts) / max(duration, 1e-6), cuts_per_minute_timeline=timeline,
        beat_alignment=alignment, cuts_on_beat=bool(alignment is not None and alignment >= 0.5),
    )
    # Few shots say little about a distribution.
    return group, min(1.0, len(lengths) / 6.0)


def extract_transitions(analysis) -> tuple[TransitionsGroup, float]:
    items = [
        TransitionItem(time_s=t.time_s, kind=t.kind, duration_s=t.duration_s, color=analysis.fade_colors.get(i))
        for i, t in enumerate(analysis.transitions)
    ]
    counts = {k: sum(1 for it in items if it.kind == k) for k in TRANSITION_KINDS}
    total = max(1, len(items))
    fractions = {k: counts[k] / total for k in TRANSITION_KINDS}
    durations = {
        k: float(np.median([it.duration_s for it in items if it.kind == k])) for k in ("fade", "dissolve") if counts[k]
    }
    fade_colors = [it.color for it in items if it.kind == "fade" and it.color]
    fade_color = "white" if fade_colors and fade_colors.count("white") > fade_colors.count("black") else "black"
    group = TransitionsGroup(items=items, counts=counts, fractions=fractions, median_duration_s=durations,
                             fade_color=fade_color)
    return group, min(1.0, len(items) / 5.0) if items else 0.5


def extract_motion(analysis) -> tuple[MotionGroup, float]:
    if not getattr(analysis, "motion_analysed", True):
        raise ValueError("camera motion was not analysed: the job does not transfer motion")
    shots = [
        MotionShot(start_s=s.start_s, end_s=s.end_s, motion=MotionParams(**s.motion.model_dump()))
        for s in analysis.shots
    ]
    total = sum(s.end_s - s.start_s for s in shots) or 1.0
    seconds: dict[str, float] = {}
    for s in shots:
        seconds[s.motion.kind] = seconds.get(s.motion.kind, 0.0) + (s.end_s - s.start_s)
    # Time per kind over the total (not a sum of per-shot shares, which can round to just above 1).
    fractions = {kind: min(1.0, t / total) for kind, t in seconds.items()}
    typical = {}
    for kind in fractions:
        members = [s.motion for s in shots if s.motion.kind == kind]
        med = {f: float(np.median([getattr(m, f) for m in members]))
               for f in ("pan_x", "pan_y", "zoom_rate", "rotation_deg_s", "shake_amp", "shake_hz", "confidence")}
        typical[kind] = MotionParams(kind=kind, **med)
    confidence = float(np.mean([s.motion.confidence for s in shots])) if shots else 0.0
    return MotionGroup(shots=shots, kind_fractions=fractions, typical=typical), confidence


def extract_audio(analysis) -> tuple[AudioGroup, float]:
    if analysis.audio is None:
        raise ValueError(analysis.audio_reason or "the template has no audio track")
    a = analysis.audio
    group = AudioGroup(tempo_bpm=a.tempo_bpm, beats_s=a.beats_s, beat_strength=a.beat_strength,
                       onset_density_per_s=a.onset_density_per_s, lufs=a.lufs)
    return group, float(a.beat_strength) if a.tempo_bpm else 0.3


def extract_framing(analysis) -> tuple[FramingGroup, float]:
    p = analysis.probe
    lb = analysis.letterbox
    active_w = p.display_width * (1.0 - lb.left - lb.right)
    active_h = p.display_height * (1.0 - lb.top - lb.bottom)
    group = FramingGroup(display_width=p.display_width, display_height=p.display_height,
                         display_aspect=p.display_width / p.display_height, letterbox=lb,
                         active_aspect=active_w / max(active_h, 1e-6))
    return group, 1.0


EXTRACTORS: dict[str, Callable] = {
    "color": extract_color, "tone": extract_tone, "pacing": extract_pacing, "transitions": extract_transitions,
    "motion": extract_motion, "audio": extract_audio, "framing": extract_framing,
}


def extract_style(analysis) -> StyleJSON:
    """Build the StyleJSON of a template from its `VideoAnalysis`; each group fails on its own."""
    p = analysis.probe
    groups: dict[str, BaseModel | None] = {}
    confidence: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name, extractor in EXTRACTORS.items():
        try:
            groups[name], conf = extractor(analysis)
            confidence[name] = round(float(conf), 4) if math.isfinite(conf) else 0.0
        except Exception as exc:  # noqa: BLE001 - a failed group must not take the others down
            groups[name] = None
            confidence[name] = 0.0
            failures[name] = str(exc) or type(exc).__name__
    meta = Meta(
        template=TemplateFacts(
            filename=p.path.rsplit("/", 1)[-1], duration_s=p.duration_s, fps=p.fps, frame_count=p.frame_count,
            display_width=p.display_width, display_height=p.display_height, has_audio=p.audio is not None,
        ),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        confidence=confidence,
        failures=failures,
    )
    return StyleJSON(schema_version=SCHEMA_VERSION, meta=meta, **groups)
