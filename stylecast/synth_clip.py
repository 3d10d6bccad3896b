"""Whole synthetic clips with ground truth: shots from `synth_video`, edits (cuts, fades, dissolves), an
optional known colour grade, a drum track at a known tempo, encoded to a real MP4.

Used by the tests (cut/fade/tempo/motion ground truth) and by ``stylecast demo``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylecast.media.encode import SegmentEncoder, join_segments
from stylecast.synth_audio import drum_track
from stylecast.synth_video import camera_shot, dissolve, fade, fade_in, graded, make_canvas


@dataclass
class ShotSpec:
    """One shot: a canvas seed/palette and a camera move (units as in `synth_video.camera_shot`)."""

    frames: int
    seed: int
    palette: str | None = None
    pan_x: float = 0.0
    pan_y: float = 0.0
    zoom_rate: float = 0.0
    rotate_deg_s: float = 0.0
    shake_amp: float = 0.0
    shake_hz: float = 0.0
    n_objects: int = 2
    t0: float = 0.0  # start time within the take: the same location and move, filmed later



@dataclass
class EditSpec:
    """How shot k joins shot k+1: a cut, a fade through a colour (n frames out + n in), or a dissolve."""

    kind: str = "cut"  # cut | fade | dissolve
    frames: int = 0
    color: tuple[int, int, int] = (0, 0, 0)


@dataclass
class ClipTruth:
    path: Path
    fps: float
    width: int
    height: int
    n_frames: int
    transitions: list[dict] = field(default_factory=list)  # {frame, kind, start_frame, end_frame}
    shot_bounds: list[tuple[int, int]] = field(default_factory=list)  # per shot: first, last+1 frame (pure frames)
    bpm: float | None = None
    beats_s: list[float] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps


def _canvas_for(spec: ShotSpec, fps: float, width: int, height: int) -> np.ndarray:
    # The canvas (the "location") must not depend on how much of the take is filmed: size it for at least 6 s.
    seconds = max(spec.t0 + spec.frames / fps, 6.0)
    # Room for the whole camera path (pan distance, zoom-out, rotation and shake) plus a margin.
    travel_x = abs(spec.pan_x) * width * seconds
    travel_y = abs(spec.pan_y) * height * seconds
    zoom_out = np.exp(max(0.0, -spec.zoom_rate * seconds))
    diag = np.hypot(width, height)
    cw = int((max(diag, width) * zoom_out + travel_x) * 1.3 + 8 * spec.shake_amp * width + 64)
    ch = int((max(diag, height) * zoom_out + travel_y) * 1.3 + 8 * spec.shake_amp * width + 64)
    return make_canvas(cw, ch, spec.seed, palette=spec.palette)


def render_shot(spec: ShotSpec, fps: float, width: int, height: int) -> np.ndarray:
    canvas = _canvas_for(spec, fps, width, height)
    return camera_shot(canvas, spec.frames, width, height, fps, pan_x=spec.pan_x, pan_y=spec.pan_y,
                       zoom_rate=spec.zoom_rate, rotate_deg_s=spec.rotate_deg_s, shake_amp=spec.shake_amp,
                       shake_hz=spec.shake_hz, n_objects=spec.n_objects, seed=spec.seed,
                       t0=spec.t0)


def compose(shots: Sequence[ShotSpec], edits: Sequence[EditSpec] | None, fps: float, width: int, height: int,
            ) -> tuple[np.ndarray, list[dict], list[tuple[int, int]]]:
    """Frames of the edited clip, its transitions (ground truth) and each shot's untouched frame span."""
    edits = list(edits or [EditSpec() for _ in range(len(shots) - 1)])
    if len(edits) != len(shots) - 1:
        raise ValueError("need one edit between each pair of shots")
    pieces = [render_shot(s, fps, width, height) for s in shots]
    out: list[np.ndarray] = []
    truth: list[dict] = []
    bounds: list[tuple[int, int]] = []
    pos = 0
    lead_in = 0  # frames at the start of the current piece already consumed by the previous edit
    for k, piece in enumerate(pieces):
        edit_out = edits[k] if k < len(edits) else None
        body = piece[lead_in:]
        tail_n = 0
        if edit_out is not None and edit_out.kind in ("fade", "dissolve"):
            tail_n = edit_out.frames
        pure = body[: len(body) - tail_n] if tail_n else body
        bounds.append((pos, pos + len(pure)))
        out.append(pure)
        pos += len(pure)
        lead_in = 0
        if edit_out is None:
            break
        nxt = pieces[k + 1]
        if edit_out.kind == "cut":
            truth.append({"frame": pos, "kind": "cut", "start_frame": pos, "end_frame": pos})
        elif edit_out.kind == "fade":
            n = edit_out.frames
            down = fade(body[len(body) - n:], edit_out.color, n)
            up = fade_in(nxt[:n], edit_out.color, n)
            out += [down, up]
            truth.append({"frame": pos + n, "kind": "fade", "start_frame": pos, "end_frame": pos + 2 * n - 1})
            pos += 2 * n
            lead_in = n
        elif edit_out.kind == "dissolve":
            n = edit_out.frames
            mix = dissolve(body[len(body) - n:], nxt[:n])
            out.append(mix)
            truth.append({"frame": pos + (n - 1) // 2, "kind": "dissolve", "start_frame": pos,
                          "end_frame": pos + n - 1})
            pos += n
            lead_in = n
        else:
            raise ValueError(f"unknown edit kind {edit_out.kind!r}")
    return np.concatenate(out), truth, bounds


def write_frames(path: str | Path, frames: np.ndarray, fps: float, *, audio: np.ndarray | None = None,
                 crf: int = 16, preset: str = "veryfast") -> Path:
    """Encode frames (and float32 stereo 48 kHz audio) to an MP4 with the project's own encoder."""
    path = Path(path)
    seg = path.with_name(f".{path.stem}.video.mp4")
    try:
        with SegmentEncoder(seg, frames.shape[2], frames.shape[1], fps, crf=crf, preset=preset) as enc:
            for f in frames:
                enc.write(f)
        join_segments([seg], path, audio=audio)
    finally:
        seg.unlink(missing_ok=True)
    return path


def make_clip(
    path: str | Path,
    shots: Sequence[ShotSpec],
    edits: Sequence[EditSpec] | None = None,
    *,
    fps: float = 25.0,
    width: int = 320,
    height: int = 180,
    grade: Callable[[np.ndarray], np.ndarray] | None = None,
    bpm: float | None = None,
    beat_offset_s: float = 0.0,
    audio_level_dbfs: float = -16.0,
    letterbox: float = 0.0,
    crf: int = 16,
) -> ClipTruth:
    """Compose, grade, add music and encode a clip; returns the ground truth."""
    frames, truth, bounds = compose(shots, edits, fps, width, height)
    if grade is not None:
        frames = graded(frames, grade)
    if letterbox > 0:
        bar = int(round(letterbox * height))
        frames[:, :bar] = 0
        frames[:, height - bar:] = 0
    audio, beats = None, []
    if bpm:
        audio, beat_times = drum_track(bpm, len(frames) / fps, 48000, seed=int(bpm), level_dbfs=audio_level_dbfs,
                                       first_beat_s=beat_offset_s)
        beats = [float(b) for b in beat_times]
    write_frames(path, frames, fps, audio=audio, crf=crf)
    return ClipTruth(Path(path), fps, width, height, len(frames), truth, bounds, bpm, beats)


# ------------------------------------------------------------------------------------------- grades
def teal_orange(x: np.ndarray) -> np.ndarray:
    """A strong 'blockbuster' grade: S-curve contrast, shadows pushed to teal, highlights to orange."""
    luma = 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]
    s = x + 0.35 * (x - 0.5) * (1 - np.abs(2 * x - 1))  # S-curve
    shadow = np.clip(1 - 2 * luma, 0, 1)[..., None]
    high = np.clip(2 * luma - 1, 0, 1)[..., None]
    s = s + shadow * np.array([-0.08, 0.03, 0.10], np.float32) + high * np.array([0.12, 0.03, -0.10], np.float32)
    return np.clip(s, 0, 1)


def warm_faded(x: np.ndarray) -> np.ndarray:
    """A vintage look: lifted blacks, rolled-off highlights, warm cast, lower saturation."""
    luma = (0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2])[..., None]
    desat = luma + 0.7 * (x - luma)
    toned = 0.08 + 0.84 * desat
    return np.clip(toned * np.array([1.08, 1.0, 0.86], np.float32), 0, 1)


def demo_clips(directory: str | Path, *, seconds: float = 8.0, width: int = 480, height: int = 270,
               fps: float = 24.0) -> tuple[ClipTruth, ClipTruth]:
    """A neutral, slow source (long shots, gentle moves) and a strongly graded, fast-cut, beat-driven template
    (teal-orange grade, shots of about half a second cut on the beat of a 120 BPM drum track, pans, zooms and
    handheld shake, a dissolve and a fade)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n_src = int(seconds * fps)
    src_shots = [
        ShotSpec(frames=n_src // 3, seed=11, palette="green", pan_x=0.03),
        ShotSpec(frames=n_src // 3, seed=12, palette="urban"),
        ShotSpec(frames=n_src - 2 * (n_src // 3), seed=13, palette="warm", zoom_rate=0.03),
    ]
    source = make_clip(directory / "demo_source.mp4", src_shots, fps=fps, width=width, height=height, bpm=96,
                       audio_level_dbfs=-24.0)
    beat = 60.0 / 120.0
    frames_per_beat = int(round(beat * fps))
    moves = [dict(pan_x=0.25), dict(zoom_rate=0.5), dict(shake_amp=0.01, shake_hz=3.0), dict(pan_x=-0.25),
             dict(pan_y=0.2), dict(zoom_rate=-0.4)]
    n_tpl = int(seconds * fps)
    tpl_shots, used, k = [], 0, 0
    while used < n_tpl:
        beats_long = (1, 2, 1, 1, 2)[k % 5]
        n = min(beats_long * frames_per_beat, n_tpl - used)
        tpl_shots.append(ShotSpec(frames=n, seed=100 + k, palette=("sunset", "urban", "cool")[k % 3],
                                  **moves[k % len(moves)]))
        used += n
        k += 1
    edits = [EditSpec() for _ in range(len(tpl_shots) - 1)]
    if len(edits) > 6:
        edits[len(edits) // 2] = EditSpec("dissolve", frames_per_beat)
    template = make_clip(directory / "demo_template.mp4", tpl_shots, edits, fps=fps, width=width, height=height,
                         grade=teal_orange, bpm=120, audio_level_dbfs=-12.0)
    return source, template
