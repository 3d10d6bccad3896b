"""The benchmarks' inputs, generated once and cached: a 1080p30 source with audio and the graded templates.

The cache folder is ``bench/.cache``, or ``$STYLECAST_BENCH_CACHE`` (the test suite points it at a temporary
folder so that a tiny run never touches a real run's files).  A source's file name says where its picture
came from — ``natural`` (``../shared/media/pyscenedetect/testvideo.mp4`` upscaled, when that folder is
present) or ``synthetic`` — because x264's cost, and with it every ratio against ffmpeg, depends on it.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIP = ROOT.parent / "shared" / "media" / "pyscenedetect" / "testvideo.mp4"


def cache_dir() -> Path:
    # absolute: the jobs run with a scratch folder inside it as their working directory
    path = Path(os.environ.get("STYLECAST_BENCH_CACHE") or ROOT / "bench" / ".cache").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_origin() -> str:
    """``natural`` when the shared clip is there to be upscaled, else ``synthetic``."""
    return "natural" if SHARED_CLIP.exists() else "synthetic"


def source_file(seconds: float, width: int = 1920, height: int = 1080) -> Path:
    """Where `source` keeps that source (it may not exist yet)."""
    size = "1080p30" if (width, height) == (1920, 1080) else f"{width}x{height}p30"
    return cache_dir() / f"source_{size}_{int(seconds)}s_{source_origin()}.mp4"


def source(seconds: float, width: int = 1920, height: int = 1080) -> Path:
    """A ``seconds`` long 30 fps source with a drum track at ``width`` x ``height`` (made on first use)."""
    path = source_file(seconds, width, height)
    if not path.exists():
        tmp = path.with_name(f".tmp-{path.name}")
        _make_source(tmp, seconds, width, height)
        tmp.rename(path)  # atomic: an interrupted run leaves no half-written source under the real name
    return path


def template(kind: str = "full") -> Path:
    """A graded (teal/orange), fast-cut template at 120 bpm with one dissolve: ``full`` (16 shots, 640x360),
    ``short`` (8 shots, 640x360) or ``tiny`` (3 shots, 160x90)."""
    from stylecast.synth_clip import EditSpec, ShotSpec, make_clip, teal_orange

    shots_n, size = {"full": (16, (640, 360)), "short": (8, (640, 360)), "tiny": (3, (160, 90))}[kind]
    path = cache_dir() / f"template_{kind}_{size[0]}x{size[1]}.mp4"
    if not path.exists():
        frames = (lambda k: 10) if kind == "tiny" else (lambda k: 15 if k % 3 else 30)
        shots = [ShotSpec(frames=frames(k), seed=40 + k, pan_x=0.2 if k % 2 else 0.0,
                          zoom_rate=0.3 if k % 3 == 1 else 0.0) for k in range(shots_n)]
        edits = [EditSpec("dissolve", 4 if kind == "tiny" else 8) if k == min(7, shots_n - 2) else EditSpec()
                 for k in range(shots_n - 1)]
        tmp = path.with_name(f".tmp-{path.name}")
        make_clip(tmp, shots, edits, fps=30.0, width=size[0], height=size[1], grade=teal_orange, bpm=120)
        tmp.rename(path)
    return path


def _make_source(path: Path, seconds: float, width: int, height: int) -> None:
    """Stream 30 fps frames straight into the encoder (never all in memory), then add the audio."""
    import cv2

    from stylecast.media.decode import iter_frames
    from stylecast.media.encode import SegmentEncoder, join_segments
    from stylecast.synth_audio import drum_track
    from stylecast.synth_clip import ShotSpec, render_shot

    n = int(seconds * 30)
    video = path.with_name(f".video-{path.name}")
    with SegmentEncoder(video, width, height, 30.0, crf=18, preset="veryfast") as enc:
        written = 0
        if source_origin() == "natural":
            while written < n:  # loop the clip if it is shorter than asked
                for f in iter_frames(SHARED_CLIP, 0.0, None, size=(1280, 720)):
                    enc.write(cv2.resize(f.rgb, (width, height), interpolation=cv2.INTER_CUBIC))
                    written += 1
                    if written == n:
                        break
        else:
            for k in range(4):
                count = n // 4 if k < 3 else n - 3 * (n // 4)
                for start in range(0, count, 30):  # one continuous take, rendered 1 s at a time
                    spec = ShotSpec(frames=min(30, count - start), seed=k, pan_x=0.03 * (k - 1.5), t0=start / 30.0)
                    for f in render_shot(spec, 30.0, width, height):
                        enc.write(f)
    audio, _ = drum_track(110, n / 30.0, 48000, level_dbfs=-20)
    join_segments([video], path, audio=audio)
    video.unlink()
