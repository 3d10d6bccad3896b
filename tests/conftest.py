"""Shared fixtures: synthetic clips with ground truth, made once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from stylecast.synth_clip import EditSpec, ShotSpec, make_clip, teal_orange

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
FPS = 25.0
W, H = 320, 180


def write_h264(path: Path, pictures, *, rate: int, time_base=None, options: dict | None = None) -> Path:
    """An H.264 MP4/MKV of ``pictures`` — ``(pts, rgb uint8 array)`` in order — for inputs with exact
    timestamps (gaps, variable rates).  ``time_base`` defaults to ``1/rate``."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        h, w = pictures[0][1].shape[:2]
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = time_base or Fraction(1, rate)
        s.options = {"preset": "ultrafast", **(options or {})}
        for pts, rgb in pictures:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = pts
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def local_ray():
    """One single-node Ray per test module (2 CPUs, a small object store)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, namespace="stylecast-tests")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip("../shared/media is absent")
    return SHARED_MEDIA


def source_shots(seed_base: int = 0) -> list[ShotSpec]:
    """Four neutral shots, 2 s each, gentle camera moves."""
    return [
        ShotSpec(frames=50, seed=seed_base + 1, palette="green", pan_x=0.04),
        ShotSpec(frames=50, seed=seed_base + 2, palette="urban"),
        ShotSpec(frames=50, seed=seed_base + 3, palette="warm", zoom_rate=0.04),
        ShotSpec(frames=50, seed=seed_base + 4, palette="cool", pan_y=0.03),
    ]


@pytest.fixture(scope="session")
def source_clip(media_dir):
    return make_source_clip(media_dir)


@pytest.fixture(scope="session")
def template_clip(media_dir):
    return make_template_clip(media_dir)


def make_source_clip(directory: Path):
    """8 s neutral source with quiet music at 120 BPM, its beats 0.2 s off the frame grid's."""
    return make_clip(directory / "source.mp4", source_shots(0), fps=FPS, width=W, height=H, bpm=120,
                     beat_offset_s=0.2, audio_level_dbfs=-26.0)


def make_template_clip(directory: Path):
    """The source's locations in other takes, graded teal-orange, cut fast on the beat of 120 BPM music,
    camera moves, one dissolve and one fade to black."""
    palettes = ["green", "urban", "warm", "cool"]
    moves = [dict(pan_x=0.3), dict(zoom_rate=0.4), dict(shake_amp=0.012, shake_hz=3.0), dict(pan_x=-0.3), {}]
    # 120 BPM at 25 fps: a beat is 12.5 frames; shot lengths of 1-2 beats, cut exactly on beats.
    beats_per_shot = [2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1, 1]
    shots, edits = [], []
    t_beats = 0
    for k, nb in enumerate(beats_per_shot):
        start = round(t_beats * 12.5)
        end = round((t_beats + nb) * 12.5)
        # The same four locations as the source, filmed with other camera moves ("other takes").
        shots.append(ShotSpec(frames=end - start, seed=1 + k % 4, palette=palettes[k % 4], **moves[k % len(moves)]))
        t_beats += nb
    edits = [EditSpec() for _ in range(len(shots) - 1)]
    return make_clip(directory / "template.mp4", shots, edits, fps=FPS, width=W, height=H, grade=teal_orange,
                     bpm=120, audio_level_dbfs=-12.0)


def make_graded_twin_clip(directory: Path):
    """The source's four takes filmed on for another 2 s each (same locations, same camera moves), graded
    teal-orange: footage like the source, graded with a known function G."""
    shots = source_shots(0)
    for spec in shots:
        spec.t0 = 2.0
    return make_clip(directory / "graded_twin.mp4", shots, fps=FPS, width=W, height=H, grade=teal_orange,
                     bpm=100, audio_level_dbfs=-14.0)


@pytest.fixture(scope="session")
def graded_twin_clip(media_dir):
    return make_graded_twin_clip(media_dir)
