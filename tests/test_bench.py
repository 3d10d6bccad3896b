"""The benchmark suite's entry point works and writes the documented result file (benchmarks never run here:
only the hidden ``--tiny`` mode on minimal inputs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run"


def test_bench_run_help():
    proc = subprocess.run([str(RUN), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--only" in proc.stdout


def test_python_m_bench_help():
    proc = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


def test_bench_tiny_run_writes_expected_keys(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    # its own input cache: a tiny run never touches (or collides with) a real run's generated files
    env = {**os.environ, "STYLECAST_BENCH_CACHE": str(tmp_path / "cache")}
    readme = (ROOT / "README.md").read_text()
    proc = subprocess.run([str(RUN), "--tiny", "--only", "e2e", "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=180, env=env)
    tmp_path = tmp_path / "out"
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "tiny"
    assert {"cpu", "cores", "loadavg_start", "loadavg_end"} <= set(results["machine"])
    assert {"python", "numpy", "numba", "av", "ray", "x264_pyav", "x264_ffmpeg"} <= set(results["versions"])
    assert {"commit", "dirty"} <= set(results["code"])
    assert "origin" in results["benchmarks"]["e2e"]["source"]
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
    assert (ROOT / "README.md").read_text() == readme  # only a run of every benchmark refreshes the README


def test_unmeasured_targets_are_listed_and_the_readme_block_is_generated(tmp_path):
    """A benchmark that was asked for but skipped keeps its targets in the count (as not measured, not met);
    the README's figures come from the results between their markers."""
    from bench import suite

    results = {"mode": "full", "machine": {"cpu": "test CPU", "cores": 2, "cores_available": 2, "memory_gib": 1.0},
               "config": {"only": ["api"]}, "benchmarks": {"api": {"skipped": "wrk is not installed"}},
               "finished_at": "2026-01-01T00:00:00+00:00", "duration_s": 1.0, "code": {"commit": "abc"}}
    rows = suite.targets(results)
    assert [t["measured"] for t in rows] == [False, False, False]
    assert not any(t["met"] for t in rows) and all("wrk is not installed" in t["note"] for t in rows)
    results["targets"] = rows
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:figures:begin -->\nstale figures\n<!-- bench:figures:end -->\n"
                      "Done: <!-- bench:status:begin -->stale<!-- bench:status:end --> end\n")
    assert suite.update_readme(results, None, readme)
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.rstrip().endswith("end")
    assert "| API req/s (service, wrk -c32) | – | >= 1500 | not measured |" in text
    assert "0 of its 3 targets met" in text
    readme.write_text("no markers\n")
    assert not suite.update_readme(results, None, readme)
    readme.write_text("<!-- bench:figures:end --> x <!-- bench:figures:begin -->\n")  # out of order
    assert not suite.update_readme(results, None, readme)
    # a --quick run's duration is a target only when every benchmark ran: a partial run proves nothing
    quick = dict(results, mode="quick")
    assert not any(t["name"].startswith("--quick") for t in suite.targets(quick))
