"""The benchmark suite's entry point works and writes the documented result file (benchmarks never run here:
only the hidden ``--tiny`` mode on minimal inputs)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run"


def test_bench_run_help():
    proc = subprocess.run([str(RUN), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--only" in proc.stdout


def test_bench_tiny_run_writes_expected_keys(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    proc = subprocess.run([str(RUN), "--tiny", "--only", "e2e", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "tiny"
    assert {"cpu", "cores", "loadavg_start", "loadavg_end"} <= set(results["machine"])
    assert {"python", "numpy", "numba", "av", "ray", "x264_pyav", "x264_ffmpeg"} <= set(results["versions"])
    e2e = results["benchmarks"]["e2e"]
    assert "error" not in e2e
    for job in ("colour_only", "ffmpeg_lut3d", "ffmpeg_transcode", "full_style"):
        assert {"median", "min", "max", "values"} <= set(e2e[job]["wall_s"])
        assert e2e[job]["wall_s"]["median"] > 0
        assert e2e[job]["peak_rss_mib"]["max"] > 0
    assert set(e2e["colour_only"]["stage_seconds_median"]) == set(e2e["full_style"]["stage_seconds_median"])
    assert {"colour_only_vs_ffmpeg_lut3d", "colour_only_vs_ffmpeg_transcode",
            "full_style_vs_colour_only"} <= set(e2e["ratios"])
    names = [t["name"] for t in results["targets"]]
    assert len(names) == 4 and all(isinstance(t["met"], bool) for t in results["targets"])
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Targets" in report and "End to end" in report
    assert (tmp_path / "charts" / "stage_breakdown.png").stat().st_size > 0
