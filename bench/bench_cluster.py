"""Cluster benchmark: one job on a 1080p30 source, wall time with 1 worker vs 2 workers, side by side.

    python bench/bench_cluster.py [--seconds 20] [--reps 1] [--json PATH]

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
from bench.inputs import cache_dir, source as make_source, template as make_template  # noqa: E402


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
    ap.add_argument("--reps", type=int, default=1, help="runs of each configuration, alternated 1 2 1 2 ...; the "
                    "figures are medians (default 1)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    source, template = make_source(args.seconds), make_template("full")
    out_dir = cache_dir() / "out"
    out_dir.mkdir(exist_ok=True)
    if args.one:
        result = run_config(args.one, source, template, out_dir)
        Path(args.result).write_text(json.dumps(result))
        return 0
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(max(1, args.reps)):
        for workers in (1, 2):
            # Each configuration in its own process, pinned to as many cores as it has workers: "1 worker" is a
            # 1-core machine (its driver, audio analysis and joining get no spare core for free).
            result_file = out_dir / f"result{workers}.json"
            cores = sorted(os.sched_getaffinity(0))[:workers]
            subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--one", str(workers),
                            "--result", str(result_file)], check=True,
                           preexec_fn=lambda c=cores: os.sched_setaffinity(0, set(c)))
            runs[workers].append(json.loads(result_file.read_text()))
    one, two = (_median_config(runs[w]) for w in (1, 2))
    speedup = one["wall_s"] / two["wall_s"]
    print(f"source: {source.name} ({args.seconds:.0f} s 1080p30 with audio); template: {template.name}; "
          f"{len(runs[1])} run(s) per configuration, medians")
    print(f"{'stage':<20}{'1 worker s':>12}{'2 workers s':>13}")
    for stage in one["stage_s"]:
        print(f"{stage:<20}{one['stage_s'][stage]:>12.2f}{two['stage_s'][stage]:>13.2f}")
    print(f"{'total (wall)':<20}{one['wall_s']:>12.2f}{two['wall_s']:>13.2f}")
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}x  (parallel efficiency {speedup / 2:.0%}; target >= 1.7x)")
    print(f"Ray overhead share (2 workers): {two['overhead_share']:.1%} (target < 10%)")
    figures = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
               "source": source.name, "reps": len(runs[1]), "one_worker": one, "two_workers": two,
               "speedup": speedup, "efficiency": speedup / 2,
               "wall_s": {str(w): _spread([r["wall_s"] for r in runs[w]]) for w in (1, 2)}}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _spread(values: list[float]) -> dict:
    return {"values": values, "median": float(np.median(values)), "min": min(values), "max": max(values)}


def _median_config(runs: list[dict]) -> dict:
    """One configuration's figures, each the median over its runs (stages and Ray overhead too)."""
    def med(key: str, sub: str | None = None) -> float:
        return float(np.median([r[key][sub] if sub else r[key] for r in runs]))

    first = runs[0]
    return {"workers": first["workers"], "runs": len(runs), "wall_s": med("wall_s"),
            "stage_s": {k: med("stage_s", k) for k in first["stage_s"]},
            "chunk_work_s": {k: med("chunk_work_s", k) for k in first["chunk_work_s"]},
            "chunks": first["chunks"], "overhead_s": med("overhead_s"), "overhead_share": med("overhead_share"),
            "frames": first["frames"]}


if __name__ == "__main__":
    sys.exit(main())
