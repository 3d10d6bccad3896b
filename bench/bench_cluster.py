"""Cluster benchmark: one job on a 1080p30 source, wall time with 1 worker vs 2 workers, side by side.

    python bench/bench_cluster.py [--seconds 20] [--json PATH]

Prints the speed-up (target ≥ 1.7× on 2 cores, i.e. parallel efficiency ≥ 85%), per-stage times, and the
share of wall time that is Ray overhead (scheduling, object transfer, joining): for the chunked stages, the
stage's wall time minus the in-actor work spread over the workers; plus the join.  Each configuration runs a
short warm-up job first (actor start-up and kernel compilation are not what is measured).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache"
SHARED = ROOT.parent / "shared" / "media"


def make_inputs(seconds: float) -> tuple[Path, Path]:
    """A 1080p30 source with music (natural footage upscaled when ../shared is present, else synthetic) and a
    fast-cut graded template."""
    from stylecast.synth_clip import EditSpec, ShotSpec, make_clip, teal_orange

    CACHE.mkdir(parents=True, exist_ok=True)
    source = CACHE / f"source_1080p30_{int(seconds)}s.mp4"
    template = CACHE / "template_720p.mp4"
    if not source.exists():
        _make_source(source, seconds)
    if not template.exists():
        shots = [ShotSpec(frames=15 if k % 3 else 30, seed=40 + k, pan_x=0.2 if k % 2 else 0.0,
                          zoom_rate=0.3 if k % 3 == 1 else 0.0) for k in range(16)]
        edits = [EditSpec("dissolve", 8) if k == 7 else EditSpec() for k in range(15)]
        make_clip(template, shots, edits, fps=30.0, width=640, height=360, grade=teal_orange, bpm=120)
    return source, template


def _make_source(path: Path, seconds: float, width: int = 1920, height: int = 1080) -> None:
    """Stream 30 fps frames (1080p by default) straight into the encoder (never all in memory)."""
    import cv2

    from stylecast.media.decode import iter_frames
    from stylecast.media.encode import SegmentEncoder, join_segments
    from stylecast.synth_audio import drum_track
    from stylecast.synth_clip import ShotSpec, render_shot

    n = int(seconds * 30)
    real = SHARED / "pyscenedetect" / "testvideo.mp4"
    video = path.with_name(".video.mp4")
    with SegmentEncoder(video, width, height, 30.0, crf=18, preset="veryfast") as enc:
        written = 0
        if real.exists():
            while written < n:  # loop the clip if it is shorter than asked
                for f in iter_frames(real, 0.0, None, size=(1280, 720)):
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


def run_config(workers: int, source: Path, template: Path, out_dir: Path) -> dict:
    import ray

    from actors.pipeline import Pipeline
    from cluster import connect
    from stylecast.options import Options

    connect(num_cpus=workers)
    pipeline = Pipeline()
    try:
        pipeline.run(source, template, out_dir / f"warm{workers}.mp4", Options.model_validate({"max_duration_s": 2}))
        t = time.perf_counter()
        result = pipeline.run(source, template, out_dir / f"out{workers}.mp4", Options())
        wall = time.perf_counter() - t
    finally:
        pipeline.shutdown()
        ray.shutdown()
    stages = result.stage_seconds
    overhead = 0.0
    for stage, work in result.chunk_work_seconds.items():
        overhead += max(0.0, stages[stage] - sum(work) / workers)
    return {"workers": workers, "wall_s": wall, "stage_s": stages,
            "chunk_work_s": {k: sum(v) for k, v in result.chunk_work_seconds.items()},
            "chunks": {k: len(v) for k, v in result.chunk_work_seconds.items()},
            "overhead_s": overhead, "overhead_share": overhead / wall,
            "frames": result.plan.output.frame_count}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="source length (default 20)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    source, template = make_inputs(args.seconds)
    out_dir = CACHE / "out"
    out_dir.mkdir(exist_ok=True)
    if args.one:
        result = run_config(args.one, source, template, out_dir)
        Path(args.result).write_text(json.dumps(result))
        return 0
    runs = {}
    for workers in (1, 2):
        # Each configuration in its own process, pinned to as many cores as it has workers: "1 worker" is a
        # 1-core machine (its driver, audio analysis and joining get no spare core for free).
        result_file = out_dir / f"result{workers}.json"
        cores = sorted(os.sched_getaffinity(0))[:workers]
        subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--one", str(workers),
                        "--result", str(result_file)], check=True,
                       preexec_fn=lambda c=cores: os.sched_setaffinity(0, set(c)))
        runs[workers] = json.loads(result_file.read_text())
    one, two = runs[1], runs[2]
    speedup = one["wall_s"] / two["wall_s"]
    print(f"source: {source.name} ({args.seconds:.0f} s 1080p30 with audio); template: {template.name}")
    print(f"{'stage':<20}{'1 worker s':>12}{'2 workers s':>13}")
    for stage in one["stage_s"]:
        print(f"{stage:<20}{one['stage_s'][stage]:>12.2f}{two['stage_s'][stage]:>13.2f}")
    print(f"{'total (wall)':<20}{one['wall_s']:>12.2f}{two['wall_s']:>13.2f}")
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}x  (parallel efficiency {speedup / 2:.0%}; target >= 1.7x)")
    print(f"Ray overhead share (2 workers): {two['overhead_share']:.1%} (target < 10%)")
    figures = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
               "one_worker": one, "two_workers": two, "speedup": speedup, "efficiency": speedup / 2}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
