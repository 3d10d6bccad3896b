"""The benchmark suite: runs every benchmark of the project and writes ``results.json`` and ``REPORT.md``.

    bench/run [--quick] [--only e2e,profile,kernels,cluster,api] [--out DIR]
    python -m bench  (the same)

Benchmarks:

- ``e2e``: a source with audio (1080p30, 20 s; 3 s with ``--quick``) generated here and a template.  The
  colour-only ``stylecast run`` process (start-up included) alternated with the full style job (per-stage
  ``stage_seconds``), ``ffmpeg lut3d`` (the .cube that ``stylecast extract --cube`` wrote for the template) and
  the plain ``ffmpeg`` x264 transcode floor; peak RSS of each job's whole process tree sampled every 100 ms
  from /proc.
- ``profile``: the colour-only job under ``py-spy record --format raw``; top functions by own and total samples.
- ``kernels``, ``cluster``, ``api``: ``bench_kernels.py``, ``bench_cluster.py``, ``bench_api.py`` run as
  subprocesses with ``--json``.

Every figure in the outputs comes from this run on this machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import inputs  # noqa: E402
from bench.procs import tree_rss  # noqa: E402

COLOUR_ONLY = {"transfer": {"pacing": False, "motion": False, "transitions": False},
               "output": {"preset": "veryfast", "crf": 20}}
FULL_STYLE = {"output": {"preset": "veryfast", "crf": 20}}
ALL = ("e2e", "profile", "kernels", "cluster", "api")
GIB = 2**30

MODES = {
    # seconds/width/height: the source; template: which generated template; reps: A/B/C alternations
    # 5 rounds: two full runs of the same code an hour apart read 1.24 and 1.40 for full style / colour-only
    # with 3 rounds on this (shared, noisy) machine
    "full": dict(seconds=20, width=1920, height=1080, template="full", reps=5, full_reps=5, warmup=True,
                 kernel_frames=10, cluster_seconds=20, cluster_reps=2, api_duration=10, upload_mib=1024,
                 api_configs="serve_haproxy,serve_default_proxy,plain_uvicorn", only=ALL),
    "quick": dict(seconds=3, width=1920, height=1080, template="short", reps=2, full_reps=1, warmup=True,
                  kernel_frames=3, cluster_seconds=2, cluster_reps=1, api_duration=2, upload_mib=64,
                  api_configs="serve_haproxy", only=ALL),
    # for the test suite: minimal inputs, the quick benchmarks only
    "tiny": dict(seconds=1, width=320, height=180, template="tiny", reps=1, full_reps=1, warmup=False,
                 kernel_frames=1, cluster_seconds=2, cluster_reps=1, api_duration=1, upload_mib=0,
                 api_configs="serve_haproxy",
                 only=("e2e",)),
}


# ----------------------------------------------------------------------------------------------- helpers
def stats(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {"values": values, "n": len(values), "median": statistics.median(values) if values else None,
            "min": min(values) if values else None, "max": max(values) if values else None}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def stylecast_cmd() -> list[str]:
    script = Path(sys.executable).parent / "stylecast"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stylecast.cli"]


class TreeRSS:
    """Samples the summed VmRSS of a process and all its descendants every ``interval`` s; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak, self.peak_procs, self.samples = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            tree = tree_rss(self.pid)
            total = sum(tree.values())
            if total > self.peak:
                self.peak, self.peak_procs = total, len(tree)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_env() -> dict:
    """The environment for the processes the suite times: this checkout first on the module path, whatever
    the working directory (the jobs run in a scratch folder)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def timed(cmd: list[str], cwd: Path, label: str) -> dict:
    """Run ``cmd`` to completion; wall time of the whole process, CPU time (user + system, all its threads and
    the descendants it waited for), peak RSS of its process tree, its stdout.  Runs one at a time, so the
    change in this process's finished-children CPU time is that command's."""
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    with TreeRSS(proc.pid) as rss:
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed (exit {proc.returncode}): {err.strip()[-1500:]}")
    log(f"{label}: {wall:.2f} s, {cpu:.1f} CPU-s, peak tree RSS {rss.peak / 2**20:.0f} MiB")
    return {"label": label, "wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": rss.peak,
            "peak_rss_procs": rss.peak_procs, "rss_samples": rss.samples, "stdout": out}


def _json_from(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


# ---------------------------------------------------------------------------------------- machine, versions
def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) * 1024 / GIB if m else None
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0)),
            "memory_gib": mem, "platform": platform.platform(), "hostname": platform.node(),
            "loadavg_start": list(os.getloadavg())}


def code_version() -> dict:
    """The commit this run measured, and whether code differed from it (generated outputs and docs aside)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)*.md",
                      ":(exclude)bench/results.json", ":(exclude)bench/charts", ":(exclude)bench/quick").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changed), "changed": [line[3:] for line in changed][:20]}


def _x264_tag(data: bytes) -> str | None:
    m = re.search(rb"x264 - core (\d+)( r\d+ \w+)?", data)
    return m.group(0).decode() if m else None


def versions() -> dict:
    v = {"python": platform.python_version()}
    for pkg in ("numpy", "numba", "av", "ray", "opencv-python-headless", "matplotlib", "imageio-ffmpeg", "py-spy"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    # x264 as linked into PyAV (what stylecast encodes with): its version string is in the stream's SEI
    try:
        import io

        import av
        import numpy as np

        buf = io.BytesIO()
        with av.open(buf, "w", format="h264") as c:
            s = c.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
            for k in range(2):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * k, np.uint8), format="rgb24")
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        v["x264_pyav"] = _x264_tag(buf.getvalue())
    except Exception as exc:  # noqa: BLE001
        v["x264_pyav"] = f"unknown ({exc})"
    try:
        exe = ffmpeg_exe()
        first = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
        v["ffmpeg"] = first.split(" Copyright")[0].removeprefix("ffmpeg version ")
        data = subprocess.run([exe, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=30", "-frames:v",
                               "2", "-c:v", "libx264", "-f", "h264", "-"], capture_output=True).stdout
        v["x264_ffmpeg"] = _x264_tag(data)
    except Exception as exc:  # noqa: BLE001
        v["ffmpeg"] = f"unknown ({exc})"
    return v


# ----------------------------------------------------------------------------------------------- inputs
def make_source(seconds: float, width: int, height: int) -> Path:
    if not inputs.source_file(seconds, width, height).exists():
        log(f"generating the source: {seconds:g} s {width}x{height}, {inputs.source_origin()} picture")
    return inputs.source(seconds, width, height)


def make_template(kind: str) -> Path:
    return inputs.template(kind)


def describe(path: Path) -> dict:
    from stylecast.media.probe import probe

    p = probe(path)
    d = {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
         "bytes": path.stat().st_size}
    if path.name.startswith("source_"):
        d["origin"] = ("../shared/media/pyscenedetect/testvideo.mp4, upscaled and looped" if "_natural" in path.name
                       else "synthetic (stylecast.synth_clip shots)")
    d.update(width=p.display_width, height=p.display_height, fps=p.fps, duration_s=p.duration_s,
             frame_count=p.frame_count, video_codec=p.video_codec, has_audio=p.audio is not None,
             audio=f"{p.audio.codec} {p.audio.sample_rate} Hz {p.audio.channels} ch" if p.audio else None)
    return d


# ------------------------------------------------------------------------------------------- benchmarks
def bench_e2e(cfg: dict, work: Path) -> dict:
    source, template = make_source(cfg["seconds"], cfg["width"], cfg["height"]), make_template(cfg["template"])
    ff = ffmpeg_exe()
    sc = stylecast_cmd()
    res: dict = {"source": describe(source), "template": describe(template), "reps": cfg["reps"], "runs": []}
    ext = timed(sc + ["-q", "extract", str(template), "-o", "style.json", "--cube", "look.cube"], work, "extract")
    res["extract_wall_s"] = ext["wall_s"]
    cube = work / "look.cube"
    res["cube_bytes"] = cube.stat().st_size
    colour = sc + ["-q", "run", str(source), str(template), "-o", "colour.mp4", "--options", json.dumps(COLOUR_ONLY)]
    full = sc + ["-q", "run", str(source), str(template), "-o", "full.mp4", "--options", json.dumps(FULL_STYLE)]
    lut3d = [ff, "-v", "error", "-y", "-i", str(source), "-vf", f"lut3d={cube.name}", "-c:v", "libx264",
             "-preset", "veryfast", "-crf", "20", "-c:a", "aac", "lut3d.mp4"]
    floor = [ff, "-v", "error", "-y", "-i", str(source), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
             "-c:a", "aac", "floor.mp4"]
    # The same transcode of the colour-only job's own output: decode + x264 of the picture the job has to encode.
    # A grade changes what x264 must spend (contrast, saturation), so this is the floor for that picture.
    graded_floor = [ff, "-v", "error", "-y", "-i", "colour.mp4", "-c:v", "libx264", "-preset", "veryfast", "-crf",
                    "20", "-c:a", "aac", "graded_floor.mp4"]
    outputs = {"colour_only": "colour.mp4", "ffmpeg_lut3d": "lut3d.mp4", "ffmpeg_transcode": "floor.mp4",
               "ffmpeg_transcode_graded": "graded_floor.mp4", "full_style": "full.mp4"}
    def shown(cmd: list[str], prog: str, skip: int) -> str:
        return shlex.join([prog] + [a.replace(str(inputs.cache_dir()) + "/", "") for a in cmd[skip:]])

    res["commands"] = {"colour_only": shown(colour, "stylecast", len(sc)),
                       "ffmpeg_lut3d": shown(lut3d, "ffmpeg", 1), "ffmpeg_transcode": shown(floor, "ffmpeg", 1),
                       "ffmpeg_transcode_graded": shown(graded_floor, "ffmpeg", 1),
                       "full_style": shown(full, "stylecast", len(sc))}
    if cfg["warmup"]:
        # One untimed run of each stylecast job first: Numba compiles the kernels into its on-disk cache the first
        # time they run on a machine (or after they change).  That is set-up, not what the comparison measures.
        res["warmup_wall_s"] = {name: timed(cmd, work, f"{name} warm-up (untimed)")["wall_s"]
                                for name, cmd in (("colour_only", colour), ("full_style", full))}
    groups: dict[str, list[dict]] = {"colour_only": [], "ffmpeg_lut3d": [], "ffmpeg_transcode": [],
                                     "ffmpeg_transcode_graded": [], "full_style": []}
    # alternate A B C D E A B C D E ...: whatever the machine's other load does, it hits every variant alike
    # (the full style job too: it is compared with the colour-only one, so it runs beside it in each round)
    for rep in range(max(cfg["reps"], cfg["full_reps"])):
        for name, cmd, reps in (("colour_only", colour, cfg["reps"]), ("full_style", full, cfg["full_reps"]),
                                ("ffmpeg_lut3d", lut3d, cfg["reps"]), ("ffmpeg_transcode", floor, cfg["reps"]),
                                ("ffmpeg_transcode_graded", graded_floor, cfg["reps"])):
            if rep >= reps:
                continue
            run = timed(cmd, work, f"{name} #{rep + 1}")
            run["output_bytes"] = (work / outputs[name]).stat().st_size
            groups[name].append(run)
    for name, runs in groups.items():
        entry = {"wall_s": stats([r["wall_s"] for r in runs]),
                 "cpu_s": stats([r["cpu_s"] for r in runs]),
                 "peak_rss_mib": stats([r["peak_rss_bytes"] / 2**20 for r in runs]),
                 "output_bytes": runs[-1]["output_bytes"]}
        if name in ("colour_only", "full_style"):
            outs = [_json_from(r["stdout"]) for r in runs]
            entry["frames"] = outs[0]["frames"]
            entry["segments"] = outs[0]["segments"]
            entry["stage_seconds_runs"] = [o["stage_seconds"] for o in outs]
            entry["stage_seconds_median"] = {k: statistics.median(o["stage_seconds"][k] for o in outs)
                                             for k in outs[0]["stage_seconds"]}
        res[name] = entry
        for r in runs:
            res["runs"].append({k: v for k, v in r.items() if k != "stdout"})
    med = {k: res[k]["wall_s"]["median"] for k in groups}
    res["ratios"] = {"colour_only_vs_ffmpeg_lut3d": med["colour_only"] / med["ffmpeg_lut3d"],
                     "colour_only_vs_ffmpeg_transcode": med["colour_only"] / med["ffmpeg_transcode"],
                     "full_style_vs_colour_only": med["full_style"] / med["colour_only"],
                     "colour_only_vs_ffmpeg_transcode_graded": med["colour_only"] / med["ffmpeg_transcode_graded"],
                     "ffmpeg_transcode_graded_vs_ffmpeg_transcode": med["ffmpeg_transcode_graded"]
                     / med["ffmpeg_transcode"]}
    # The same ratios within each round (runs side by side in time): how far the machine's noise moves them.
    walls = {k: [r["wall_s"] for r in runs] for k, runs in groups.items()}
    res["ratios_per_round"] = {
        name: [a / b for a, b in zip(walls[top], walls[bottom])]
        for name, top, bottom in (("colour_only_vs_ffmpeg_lut3d", "colour_only", "ffmpeg_lut3d"),
                                  ("colour_only_vs_ffmpeg_transcode", "colour_only", "ffmpeg_transcode"),
                                  ("full_style_vs_colour_only", "full_style", "colour_only"))}
    res["peak_rss_gib_all_jobs"] = max(r["peak_rss_bytes"] for r in res["runs"]) / GIB
    res["peak_rss_gib_stylecast_jobs"] = max(r["peak_rss_bytes"] for k in ("colour_only", "full_style")
                                             for r in groups[k]) / GIB
    frames_tpl = res["template"].get("frame_count")
    frames_src = res["source"].get("frame_count")
    # per-stage throughput: frames handled by each stage per second of that stage
    thr = {}
    for name in ("colour_only", "full_style"):
        st = res[name]["stage_seconds_median"]
        # "analysis" decodes both videos (side by side); extraction works on the template's shots.
        counts = {"analysis": (frames_tpl or 0) + (frames_src or 0), "style_extraction": frames_tpl,
                  "plan_and_render": res[name]["frames"]}
        thr[name] = {k: (counts[k] / v if counts.get(k) and v else None) for k, v in st.items()}
    res["stage_fps"] = thr
    return res


def bench_profile(cfg: dict, work: Path) -> dict:
    pyspy = Path(sys.executable).parent / "py-spy"
    pyspy = str(pyspy) if pyspy.exists() else shutil.which("py-spy")
    if not pyspy:
        return {"skipped": "py-spy is not installed"}
    source, template = make_source(cfg["seconds"], cfg["width"], cfg["height"]), make_template(cfg["template"])
    raw = work / "profile.raw"
    cmd = [pyspy, "record", "--format", "raw", "--rate", "100", "--subprocesses", "-o", str(raw), "--",
           sys.executable, "-m", "stylecast.cli", "-q", "run", str(source), str(template), "-o", "profiled.mp4",
           "--options", json.dumps(COLOUR_ONLY)]
    run = timed(cmd, work, "colour_only under py-spy")
    own, total = Counter(), Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))] or ["(no Python frame)"]
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n

    def top(counter: Counter) -> list[dict]:
        return [{"function": f, "samples": c, "share": c / samples} for f, c in counter.most_common(15)]

    # every function with at least 0.1% of the samples, for the report's "what was done" shares
    keep = max(1, samples // 1000)
    return {"tool": "py-spy record --format raw --rate 100 --subprocesses", "wall_s": run["wall_s"],
            "samples": samples, "top_own": top(own), "top_total": top(total),
            "own_by_function": {f: c for f, c in own.items() if c >= keep},
            "total_by_function": {f: c for f, c in total.items() if c >= keep}}


def _script(name: str, args: list[str], work: Path, label: str) -> dict:
    out = work / f"{label}.json"
    cmd = [sys.executable, str(BENCH / name), *args, "--json", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - t0
    log(f"{name}: {wall:.1f} s (exit {proc.returncode})")
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{name} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
    data = json.loads(out.read_text())
    data["_command"] = " ".join(["python", f"bench/{name}", *args])
    data["_wall_s"] = wall
    data["_stdout"] = proc.stdout
    return data


def bench_kernels(cfg: dict, work: Path) -> dict:
    return _script("bench_kernels.py", ["--frames", str(cfg["kernel_frames"])], work, "kernels")


def bench_cluster(cfg: dict, work: Path) -> dict:
    return _script("bench_cluster.py", ["--seconds", str(cfg["cluster_seconds"]), "--reps", str(cfg["cluster_reps"])],
                   work, "cluster")


def bench_api(cfg: dict, work: Path) -> dict:
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed"}
    return _script("bench_api.py", ["--duration", str(cfg["api_duration"]), "--upload-mib", str(cfg["upload_mib"]),
                                    "--configs", cfg["api_configs"]], work, "api")


RUNNERS = {"e2e": bench_e2e, "profile": bench_profile, "kernels": bench_kernels, "cluster": bench_cluster,
           "api": bench_api}


# ------------------------------------------------------------------------------------------------ targets
# Each benchmark's targets (name, target): a benchmark that was asked for but failed or was skipped still lists
# them, as not measured, so "N of M met" never shrinks because something did not run.
TARGETS = {
    "e2e": [("colour-only job / ffmpeg lut3d (ratio of medians)", "<= 1.0"),
            ("colour-only job / ffmpeg transcode floor", "<= 1.5"),
            ("full style job / colour-only job", "<= 1.3"),
            ("peak RSS of a job's process tree (GiB)", "<= 1.5")],
    "kernels": [("fused kernel Mpx/s per core (best)", ">= 60"),
                ("fused kernel / OpenCV composition (1 thread)", ">= 1.5")],
    "cluster": [("cluster speed-up 2 vs 1 worker", ">= 1.7"), ("Ray overhead share, 2 workers", "< 0.10")],
    "api": [("API req/s (service, wrk -c32)", ">= 1500"), ("API p99 ms (service)", "<= 60"),
            ("largest RSS growth of any process during upload (MiB)", "<= 100")],
}
QUICK_LIMIT_S = 300


def targets(results: dict) -> list[dict]:
    b = results["benchmarks"]
    out = []

    def add(name, value, target, met, note=""):
        out.append({"name": name, "value": value, "target": target, "met": bool(met), "measured": True,
                    "note": note})

    e = b.get("e2e", {})
    if "ratios" in e:
        size = f"{e['source'].get('width')}x{e['source'].get('height')}, {e['source'].get('duration_s')} s"
        r = e["ratios"]
        add("colour-only job / ffmpeg lut3d (ratio of medians)", r["colour_only_vs_ffmpeg_lut3d"], "<= 1.0",
            r["colour_only_vs_ffmpeg_lut3d"] <= 1.0, size)
        add("colour-only job / ffmpeg transcode floor", r["colour_only_vs_ffmpeg_transcode"], "<= 1.5",
            r["colour_only_vs_ffmpeg_transcode"] <= 1.5, size)
        add("full style job / colour-only job", r["full_style_vs_colour_only"], "<= 1.3",
            r["full_style_vs_colour_only"] <= 1.3, size)
        add("peak RSS of a job's process tree (GiB)", e["peak_rss_gib_all_jobs"], "<= 1.5",
            e["peak_rss_gib_all_jobs"] <= 1.5, size)
    k = b.get("kernels", {})
    if "fused_1_thread" in k:
        v = k["fused_1_thread"]["mpx_per_s_best"]
        add("fused kernel Mpx/s per core (best)", v, ">= 60", v >= 60)
        if "speedup_fused1_vs_composed1" in k:
            v = k["speedup_fused1_vs_composed1"]
            add("fused kernel / OpenCV composition (1 thread)", v, ">= 1.5", v >= 1.5)
    c = b.get("cluster", {})
    if "speedup" in c:
        add("cluster speed-up 2 vs 1 worker", c["speedup"], ">= 1.7", c["speedup"] >= 1.7,
            f"{c.get('two_workers', {}).get('frames')} frames")
        v = c["two_workers"]["overhead_share"]
        add("Ray overhead share, 2 workers", v, "< 0.10", v < 0.10)
    a = b.get("api", {})
    svc = a.get("serve_haproxy") or a.get("serve_default_proxy")
    if svc:
        add("API req/s (service, wrk -c32)", svc["rps"], ">= 1500", svc["rps"] >= 1500)
        add("API p99 ms (service)", svc["p99_ms"], "<= 60", svc["p99_ms"] <= 60)
    if a.get("upload"):
        u = a["upload"]
        accepted = u.get("status") == 201
        add("largest RSS growth of any process during upload (MiB)", u["max_growth_mib"], "<= 100",
            accepted and u["max_growth_mib"] <= 100,
            f"{u['bytes'] / 2**20:.0f} MiB upload via {u.get('via')}, HTTP {u.get('status')}"
            + ("" if accepted else " (not accepted: measures nothing)"))
    if results.get("mode") == "quick" and results.get("duration_s") and _complete(results):
        add("--quick run duration (s)", results["duration_s"], f"<= {QUICK_LIMIT_S}",
            results["duration_s"] <= QUICK_LIMIT_S, f"{results['machine'].get('cores_available')} cores")
    seen = {t["name"] for t in out}
    for bench in results.get("config", {}).get("only", []):
        entry = b.get(bench, {})
        if entry and "error" not in entry and "skipped" not in entry:
            continue  # it ran: a target it has no figure for was not asked of this mode (e.g. no upload)
        lines = (entry.get("skipped") or entry.get("error") or "no result").strip().splitlines()
        why = lines[-1] if lines else "no result"  # a script's traceback ends with the reason
        for name, target in TARGETS.get(bench, []):
            if name not in seen:
                out.append({"name": name, "value": None, "target": target, "met": False, "measured": False,
                            "note": f"not measured: {why[:200]}"})
    return out


def _complete(results: dict) -> bool:
    """Every benchmark was asked for and produced its figures (none failed or was skipped)."""
    b = results.get("benchmarks", {})
    return (set(results.get("config", {}).get("only", [])) == set(ALL)
            and all(x in b and "error" not in b[x] and "skipped" not in b[x] for x in ALL))


# ------------------------------------------------------------------------------------------------- output
def charts(results: dict, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    b = results["benchmarks"]
    e = b.get("e2e", {})
    if "ratios" in e:
        # throughput per stage (frames/s)
        fig, ax = plt.subplots(figsize=(8, 4))
        stages = list(e["stage_fps"]["colour_only"])
        width = 0.38
        for i, job in enumerate(("colour_only", "full_style")):
            vals = [e["stage_fps"][job][s] or 0 for s in stages]
            bars = ax.bar([x + (i - 0.5) * width for x in range(len(stages))], vals, width, label=job)
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(stages)), [s.replace("_", " ") for s in stages], fontsize=8)
        ax.set_ylabel("frames per second of stage time")
        ax.set_title(f"Throughput per stage ({e['source'].get('width')}x{e['source'].get('height')} source)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "stage_throughput.png", dpi=100)
        plt.close(fig)
        made["stage_throughput"] = "stage_throughput.png"
        # time breakdown per stage vs ffmpeg
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = ["colour_only", "full_style", "ffmpeg_lut3d", "ffmpeg_transcode"]
        for i, job in enumerate(labels[:2]):
            left = 0.0
            st = e[job]["stage_seconds_median"]
            for j, (s, v) in enumerate(st.items()):
                ax.barh(i, v, left=left, color=f"C{j}", label=s.replace("_", " ") if i == 0 else None)
                left += v
            other = e[job]["wall_s"]["median"] - left
            ax.barh(i, max(other, 0), left=left, color="lightgrey",
                    label="process start-up, probing, other" if i == 0 else None)
        for i, job in enumerate(labels[2:], start=2):
            ax.barh(i, e[job]["wall_s"]["median"], color="C7")
        for i, job in enumerate(labels):
            ax.text(e[job]["wall_s"]["median"], i, f" {e[job]['wall_s']['median']:.1f} s", va="center", fontsize=8)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("seconds (median wall time of the whole process)")
        ax.set_title("Time breakdown per stage")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out_dir / "stage_breakdown.png", dpi=100)
        plt.close(fig)
        made["stage_breakdown"] = "stage_breakdown.png"
    k, c = b.get("kernels", {}), b.get("cluster", {})
    if "fused_1_thread" in k or "speedup" in c:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        if "fused_1_thread" in k:
            names = ["fused 1 thread", f"fused {k.get('numba_threads_max')} threads", "cv2+numpy 1 thread"]
            keys = ["fused_1_thread", "fused_all_threads", "composed_cv2_numpy_1_thread"]
            vals = [k[x]["mpx_per_s_best"] if x in k else 0 for x in keys]
            bars = axes[0].bar(names, vals, color=["C0", "C1", "C7"])
            axes[0].bar_label(bars, fmt="%.0f", fontsize=8)
            axes[0].set_ylabel("Mpx/s (best)")
            axes[0].set_title("Render kernel scaling", fontsize=10)
            axes[0].tick_params(axis="x", labelsize=7)
        if "speedup" in c:
            walls = [c["one_worker"]["wall_s"], c["two_workers"]["wall_s"]]
            bars = axes[1].bar(["1 worker", "2 workers"], walls, color=["C0", "C1"])
            axes[1].bar_label(bars, fmt="%.1f s", fontsize=8)
            axes[1].set_ylabel("job wall time (s)")
            axes[1].set_title(f"Ray scaling: {c['speedup']:.2f}x (ideal 2x)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out_dir / "scaling.png", dpi=100)
        plt.close(fig)
        made["scaling"] = "scaling.png"
    return made


def _fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report(results: dict, chart_files: dict[str, str], chart_rel: str) -> str:
    m, v, b = results["machine"], results["versions"], results["benchmarks"]
    L = [f"# stylecast benchmark report ({results['mode']} run)", "",
         f"Generated by `{results['command']}` on {results['finished_at']} in {results['duration_s']:.0f} s. "
         "Every figure below comes from that run on the machine named here; no figure is typed by hand.", "",
         f"**Machine:** {m['cpu']}, {m['cores']} cores ({m['cores_available']} available), "
         f"{_fmt(m['memory_gib'], 1)} GiB RAM; {m['platform']}. Load average at start "
         f"{', '.join(f'{x:.1f}' for x in m['loadavg_start'])}, at end "
         f"{', '.join(f'{x:.1f}' for x in m['loadavg_end'])}"
         + (" (other work was running at the start, so wall times are noisier than usual)"
            if m["loadavg_start"][0] > 1.0 else "")
         + "; the A/B runs are alternated so that any noise hits every variant alike.", "",
         f"**Code:** {_code_line(results.get('code') or {})}", "",
         "**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items() if val), ""]
    L += ["## Targets", "", "| figure | measured | target | result | conditions |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        verdict = "met" if t["met"] else "**NOT met**" if t.get("measured", True) else "not measured"
        L.append(f"| {t['name']} | {_fmt(t['value'])} | {t['target']} | {verdict} | {t['note']} |")
    met = sum(t["met"] for t in results["targets"])
    L += ["", f"{met} of {len(results['targets'])} targets met.", ""]
    if results["mode"] != "full":
        L += [f"This is a `{results['mode']}` run: smaller inputs and fewer repetitions than the targets are defined "
              "for (a 20 s 1080p30 source, `bench/run` without `--quick`), so process start-up and template "
              "analysis weigh more in every stylecast figure; take the verdicts as indicative.", ""]
    for name, entry in b.items():
        if "error" in entry or "skipped" in entry:
            why = (entry.get("error") or entry.get("skipped")).strip().splitlines()
            reason = why[-1] if len(why) > 1 else why[0]  # a script's traceback ends with the reason
            L += [f"- `{name}`: **{'failed' if 'error' in entry else 'skipped'}** — {reason[:400]} "
                  "(full text in results.json)"]
    L.append("")
    e = b.get("e2e", {})
    if "ratios" in e:
        s, t = e["source"], e["template"]
        L += ["## End to end", "",
              f"Source `{s['file']}`: {s.get('width')}x{s.get('height')} @ {_fmt(s.get('fps'))} fps, "
              f"{_fmt(s.get('duration_s'))} s, {s.get('frame_count')} frames, audio {s.get('has_audio')}. "
              f"Template `{t['file']}`: {t.get('width')}x{t.get('height')}, {t.get('frame_count')} frames. "
              f"`stylecast extract --cube` took {e['extract_wall_s']:.1f} s. Runs alternated in rounds "
              f"(colour-only, full style, lut3d, transcode, transcode of the colour-only output; "
              f"{e['reps']} rounds, the full style job in the first {e['full_style']['wall_s']['n']}"
              "); each is the whole process (start-up included); CPU is user + system time of the "
              "process and its children; peak RSS is the summed VmRSS of the process and all its "
              "descendants, sampled every 100 ms.", "",
              "| job | median s | min s | max s | runs | CPU s (median) | peak RSS MiB (max) | output MiB |",
              "|---|---|---|---|---|---|---|---|"]
        for job in ("colour_only", "ffmpeg_lut3d", "ffmpeg_transcode", "ffmpeg_transcode_graded", "full_style"):
            if job not in e:
                continue
            w = e[job]["wall_s"]
            size_mib = e[job].get("output_bytes")
            cpu = e[job].get("cpu_s", {}).get("median")
            L.append(f"| {job} | {w['median']:.2f} | {w['min']:.2f} | {w['max']:.2f} | {w['n']} | "
                     f"{_fmt(cpu)} | {e[job]['peak_rss_mib']['max']:.0f} | "
                     f"{_fmt(size_mib / 2**20 if size_mib else None)} |")
        spread = _round_spread(e)
        if spread:
            L += ["", spread]
        L += ["", "Commands:", ""] + [f"- {k}: `{c}`" for k, c in e["commands"].items()] + [""]
        L += ["Per-stage seconds (engine `stage_seconds`, median) and throughput (frames / stage second):", "",
              "| stage | colour-only s | colour-only fps | full style s | full style fps |", "|---|---|---|---|---|"]
        for st in e["colour_only"]["stage_seconds_median"]:
            L.append(f"| {st} | {_fmt(e['colour_only']['stage_seconds_median'].get(st))} | "
                     f"{_fmt(e['stage_fps']['colour_only'].get(st), 1)} | "
                     f"{_fmt(e['full_style']['stage_seconds_median'].get(st))} | "
                     f"{_fmt(e['stage_fps']['full_style'].get(st), 1)} |")
        L.append("")
    for key, title in (("stage_throughput", "Throughput per stage"), ("stage_breakdown", "Time breakdown"),
                       ("scaling", "Scaling")):
        if key in chart_files:
            L += [f"![{title}]({chart_rel}/{chart_files[key]})", ""]
    p = b.get("profile", {})
    if "top_own" in p:
        L += ["## Profile of the colour-only job", "",
              f"`{p['tool']}`: {p['samples']} samples over {p['wall_s']:.1f} s (Python frames; time inside "
              "Numba kernels, x264 and other native code is attributed to the Python function that called it).", "",
              "Top by own samples:", "", "| function | samples | share |", "|---|---|---|"]
        L += [f"| `{r['function']}` | {r['samples']} | {r['share']:.1%} |" for r in p["top_own"][:12]]
        L += ["", "Top by total samples (inclusive):", "", "| function | samples | share |", "|---|---|---|"]
        L += [f"| `{r['function']}` | {r['samples']} | {r['share']:.1%} |" for r in p["top_total"][:12]]
        L.append("")
    L += _levers(b) + _unmet(results)
    k = b.get("kernels", {})
    if "fused_1_thread" in k:
        L += ["## Render kernel (`bench/bench_kernels.py`)", "", f"`{k['_command']}` — input: {k['input']}, "
              f"{k['frames']} timed frames per variant.", "",
              "| variant | best ms | median ms | Mpx/s best | Mpx/s median |", "|---|---|---|---|---|"]
        for label, key in (("fused, 1 thread", "fused_1_thread"), (f"fused, {k['numba_threads_max']} threads",
                           "fused_all_threads"), ("cv2 + numpy composed, 1 thread", "composed_cv2_numpy_1_thread"),
                           ("typical frame -> I420: fused, 1 thread", "i420_fused_1_thread"),
                           ("typical frame -> I420: RGB kernel + swscale, 1 thread", "i420_rgb_plus_swscale_1_thread"),
                           ("colour-only frame -> I420: fused (unwarped path), 1 thread",
                            "colour_only_i420_fused_1_thread"),
                           ("colour-only frame -> I420: RGB kernel + swscale, 1 thread",
                            "colour_only_rgb_plus_swscale_1_thread"),
                           ("decoded typical frame: swscale to RGB + RGB kernel, 1 thread",
                            "decoded_typical_rgb_path_1_thread"),
                           ("decoded typical frame: YUV kernel (the render), 1 thread",
                            "decoded_typical_yuv_kernel_1_thread"),
                           ("decoded camera-move frame (zoom + pan, no rotation): YUV kernel, 1 thread",
                            "decoded_camera_move_yuv_kernel_1_thread"),
                           ("decoded camera-move frame: the same warp on the four-tap path, 1 thread",
                            "decoded_camera_move_four_tap_1_thread"),
                           ("decoded colour-only frame: swscale to RGB + RGB kernel, 1 thread",
                            "decoded_colour_only_rgb_path_1_thread"),
                           ("decoded colour-only frame: YUV kernel (the render), 1 thread",
                            "decoded_colour_only_yuv_kernel_1_thread")):
            if key in k:
                r = k[key]
                L.append(f"| {label} | {r['best_ms']:.1f} | {r['median_ms']:.1f} | {r['mpx_per_s_best']:.1f} | "
                         f"{r['mpx_per_s_median']:.1f} |")
        L.append("")
    c = b.get("cluster", {})
    if "speedup" in c:
        L += ["## Ray cluster scaling (`bench/bench_cluster.py`)", "", f"`{c['_command']}` — "
              f"{c['two_workers']['frames']} output frames; each configuration pinned to as many cores as workers.",
              "", "| stage | 1 worker s | 2 workers s |", "|---|---|---|"]
        for st in c["one_worker"]["stage_s"]:
            L.append(f"| {st} | {c['one_worker']['stage_s'][st]:.2f} | {c['two_workers']['stage_s'].get(st, 0):.2f} |")
        L += [f"| total (wall) | {c['one_worker']['wall_s']:.2f} | {c['two_workers']['wall_s']:.2f} |", "",
              f"Speed-up {c['speedup']:.2f}x (efficiency {c['efficiency']:.0%}); Ray overhead share with 2 workers "
              f"{c['two_workers']['overhead_share']:.1%}.", ""]
    a = b.get("api", {})
    if any(x in a for x in ("serve_haproxy", "serve_default_proxy", "plain_uvicorn")):
        L += ["## REST API (`bench/bench_api.py`)", "", f"`{a['_command']}` — `GET /api/v1/jobs/{{id}}`, "
              f"wrk -t2 -c32 for {a.get('duration_s')} s per configuration on loopback.", "",
              "| configuration | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|"]
        for name in ("serve_haproxy", "serve_default_proxy", "plain_uvicorn"):
            if name in a:
                r = a[name]
                L.append(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['non_2xx']} |")
        uploads = a.get("uploads") or ({a["upload"].get("via", "service"): a["upload"]} if a.get("upload") else {})
        for name, u in uploads.items():
            counted = " (the figure the target counts)" if u == a.get("upload") else ""
            L += ["", f"Upload of a valid {u['bytes'] / 2**20:.0f} MiB video through `{name}`{counted}: HTTP "
                  f"{u['status']} in {u['seconds']:.1f} s; largest RSS growth of any process "
                  f"{u['max_growth_mib']:.1f} MiB (`{u['worst_pid_cmd']}`); processes started during the upload: "
                  f"{len(u.get('new_processes', []))}."]
        L.append("")
    return "\n".join(L)


def _code_line(code: dict) -> str:
    if not code.get("commit"):
        return "not a git checkout (commit unknown)"
    line = f"commit `{code['commit'][:12]}`"
    if code.get("dirty"):
        line += " **with uncommitted changes** (" + ", ".join(f"`{p}`" for p in code.get("changed", [])[:6]) + ")"
    return line


# What was done about the profile's top entries: (profile functions it concerns, counted by own samples or, for
# "total:" names, inclusive samples), title, what was done.  The share each group had in this run's profile is
# printed beside it; the effects that this run measures are in the kernel table.
LEVERS = [
    (("SegmentEncoder.write_i420", "SegmentEncoder.close"), "x264: one thread per GOP encoder, whole GOPs per range",
     "The render starts a fresh encoder per 2 s closed GOP, so a chunked render is bit-identical to a whole one. "
     "x264's frame threads fill and drain their pipeline on every short GOP; independent GOP encoders, one per "
     "core, do not. Render ranges are whole GOPs taken from a queue in shrinking sizes (big ranges first, single "
     "GOPs last), so both cores stay busy to the end. The GOP length was chosen by measurement (the figures are "
     "in the comment on `GOP_SECONDS` in `stylecast/media/encode.py`): every GOP starts with an IDR frame, and "
     "1 s GOPs made larger files and slower encodes than 2 s ones."),
    (("_decode.<locals>.packets", "iter_frames"), "Decoding: at the size each use needs",
     "The render reads the decoder's YUV 4:2:0 planes as they are (no swscale pass, no RGB frame). The analysis "
     "scales to 320 px wide in YUV before converting the small frame to RGB, runs swscale single-threaded (its "
     "automatic threading cost more than it saved per frame here), and skips H.264's deblocking filter on "
     "non-reference frames (invisible at that size; reference frames stay exact, so no error builds up). An "
     "open decoder standing shortly before a re-cut segment decodes forward instead of a fresh one seeking back "
     "to the keyframe."),
    (("render_frame_i420_yuv",), "The grade: one fused kernel pass from the decoder's planes to the encoder's",
     "`kernels/render_yuv.py` grades with a YUV -> YUV LUT that bakes the source's matrix, the shot's grade and "
     "the encoder's BT.709 into one 65^3 table; per 2x2 block it samples luma four times and chroma once, and "
     "writes I420 in the same pass as warp, blend and fade, so there is no colour-space round trip. An identity "
     "warp (every colour-only frame) reads pixels directly instead of four bilinear taps, bit-identical. A warp "
     "without rotation (a render's camera moves and framing) is sampled separably: two source rows are blended "
     "once per column, then columns are mixed at positions worked out once per frame (the camera-move row of "
     "the kernel table)."),
    (("_encode_audio_packets",), "Audio: beside the video, not after it",
     "The audio is cut and AAC-encoded on a worker beside the video ranges; the final join only remuxes, so no "
     "core idles while one encodes the audio at the end."),
    (("rgb_to_lab", "_levels", "motion_compensated_diff", "_features_from_levels"),
     "Analysis features: small frames, each downscaled once",
     "Change scores work on 96x54 LAB levels, each frame's computed once (a frame's levels serve again as the "
     "next frame's predecessor). Camera motion is estimated only for a template whose motion is transferred "
     "(never for the colour-only job, never for the source), with 200 tracked corners and 15 px Lucas-Kanade "
     "windows. OpenCV runs single-threaded inside the analysis tasks: its own worker threads competed with the "
     "tasks for the same cores (the template's motion pass cost 2.0 CPU-s with them, 1.3 without)."),
    (("total:_find_and_load",), "Start-up",
     "librosa and scipy.signal are not imported at run time (their imports compile Numba code); the onset "
     "envelope, peak picking, resampling and loudness filter are stylecast's own, checked against librosa and "
     "scipy in the tests. Numba kernels are cached on disk (`cache=True`)."),
    (("total:finish_analysis", "total:prepare_in_background.<locals>.load"),
     "From the last analysis task to the first rendered frame",
     "This stretch had one core idle. Each video's analysis is now finished (shots, colour and motion "
     "summaries) by the thread that ends its last task, beside the other video's remaining tasks, so only the "
     "last one's finish is left after the pool drains. Loading the render kernel from Numba's cache and "
     "importing scipy's `optimize` (the plan) and `ndimage` (motion smoothing, the audio limiter) happen on a "
     "helper thread while the analysis runs, instead of there."),
]


def _round_spread(e: dict) -> str:
    """One sentence: each ratio measured within each round (its runs side by side), against the ratio of medians."""
    per = e.get("ratios_per_round") or {}
    labels = {"colour_only_vs_ffmpeg_lut3d": "colour-only / lut3d",
              "colour_only_vs_ffmpeg_transcode": "colour-only / floor",
              "full_style_vs_colour_only": "full style / colour-only"}
    parts = [f"{label} {', '.join(f'{v:.2f}' for v in per[name])} (median {statistics.median(per[name]):.2f})"
             for name, label in labels.items() if per.get(name)]
    if not parts:
        return ""
    return ("The same ratios within each round, runs side by side (the targets use the ratio of the medians): "
            + "; ".join(parts) + ".")


def _levers(b: dict) -> list[str]:
    """What was done about the profile's top entries, each with the share its functions had in this run."""
    p, k = b.get("profile", {}), b.get("kernels", {})
    L = ["### What was done about it", ""]
    samples = p.get("samples") or 0

    def share(names: tuple[str, ...]) -> float | None:
        if not samples or "own_by_function" not in p:
            return None
        n = 0
        for name in names:
            table, name = ((p["total_by_function"], name[6:]) if name.startswith("total:")
                           else (p["own_by_function"], name))
            n += sum(c for f, c in table.items() if f.split(" (")[0] == name)
        return n / samples

    for names, title, text in LEVERS:
        sh = share(names)
        where = ", ".join(f"`{n.removeprefix('total:')}`" for n in names)
        measured = f" — {sh:.1%} of this profile's samples ({where})" if sh is not None else f" ({where})"
        L.append(f"- **{title}**{measured}. {text}")
    if "yuv_kernel_speedup_typical" in k:
        L.append(f"- Measured in this run (kernel table): the YUV kernel against swscale to RGB + the RGB kernel, "
                 f"{k['yuv_kernel_speedup_typical']:.2f}x on a typical frame and "
                 f"{k['yuv_kernel_speedup_colour_only']:.2f}x on a colour-only frame; writing I420 in the kernel "
                 f"against the RGB kernel + swscale, {k['i420_speedup_vs_rgb_plus_swscale']:.2f}x and "
                 f"{k['colour_only_speedup_vs_rgb_plus_swscale']:.2f}x.")
    return L + [""]


def _unmet(results: dict) -> list[str]:
    """Where the end-to-end targets that are not met lose their time, from this run's own figures."""
    b = results["benchmarks"]
    e, k = b.get("e2e", {}), b.get("kernels", {})
    if "ratios" not in e:
        return []
    missed = {t["name"] for t in results.get("targets", []) if not t["met"]}
    colour, full = e["colour_only"], e["full_style"]
    st_c, st_f = colour["stage_seconds_median"], full["stage_seconds_median"]
    wall_c = colour["wall_s"]["median"]
    other_c = wall_c - sum(st_c.values())
    n = colour["frames"]
    L = []
    cores = results.get("machine", {}).get("cores_available") or os.cpu_count() or 1
    if "colour-only job / ffmpeg transcode floor" in missed:
        floor = e["ffmpeg_transcode"]["wall_s"]["median"]
        L += [f"- **Colour-only job vs the transcode floor.** 1.5x the floor is {1.5 * floor:.1f} s; the job took "
              f"{wall_c:.1f} s."]
        if "ffmpeg_transcode_graded" in e:
            g = e["ffmpeg_transcode_graded"]
            ratio = e["ratios"]["ffmpeg_transcode_graded_vs_ffmpeg_transcode"]
            bytes_ratio = g["output_bytes"] / e["ffmpeg_transcode"]["output_bytes"]
            L[-1] += (f" The same ffmpeg transcode of the colour-only job's own output takes "
                      f"{g['wall_s']['median']:.1f} s ({ratio:.2f}x the floor) and writes {bytes_ratio:.2f}x its "
                      f"bytes")
            L[-1] += (": the graded picture costs x264 more than the source does" if ratio > 1.0
                      else ": the graded picture costs x264 no more than the source does")
            L[-1] += f"; against that transcode the job is {e['ratios']['colour_only_vs_ffmpeg_transcode_graded']:.2f}x."
        L[-1] += (f" The job spent {st_c['analysis']:.1f} s analysing both videos (the plan pairs every source shot "
                  "with the template's before the first frame is graded, so the source is decoded twice: once to "
                  f"analyse, once to render), {st_c['plan_and_render']:.1f} s planning and rendering {n} frames, and "
                  f"{other_c:.1f} s starting the process and writing the result.")
        if "decoded_colour_only_yuv_kernel_1_thread" in k:
            per = k["decoded_colour_only_yuv_kernel_1_thread"]["best_ms"]
            L[-1] += (f" The grade kernel costs {per:.1f} ms per 1080p frame per core ({per * n / 1e3:.1f} CPU-s "
                      f"for {n} frames).")
        if st_c["plan_and_render"] > floor:
            L[-1] += " The render alone takes longer than the floor's whole run."
        if "cpu_s" in colour and "cpu_s" in e["ffmpeg_transcode"]:
            cpu = {k: e[k]["cpu_s"]["median"] for k in ("colour_only", "ffmpeg_transcode", "ffmpeg_transcode_graded")
                   if "cpu_s" in e.get(k, {})}
            budget = 1.5 * floor * cores
            L[-1] += (f" In CPU time the job takes {cpu['colour_only']:.1f} s against the floor's "
                      f"{cpu['ffmpeg_transcode']:.1f} s")
            if "ffmpeg_transcode_graded" in cpu:
                L[-1] += f" and {cpu['ffmpeg_transcode_graded']:.1f} s for the graded picture's transcode"
            L[-1] += (f"; 1.5x the floor's wall time on {cores} cores is {budget:.1f} CPU-seconds, even with every "
                      "core busy from start to end")
            L[-1] += (", less than the job needs." if cpu["colour_only"] > budget
                      else "; the CPU time would fit, the wall time does not (cores idle part of the time).")
    if "full style job / colour-only job" in missed:
        L += [f"- **Full style job vs the colour-only job.** The full job renders {full['frames']} frames in "
              f"{st_f['plan_and_render']:.1f} s against {st_c['plan_and_render']:.1f} s, and analyses for "
              f"{st_f['analysis']:.1f} s against {st_c['analysis']:.1f} s (the template's camera motion is "
              "estimated only here)"]
        if "decoded_typical_yuv_kernel_1_thread" in k:
            L[-1] += (f"; its frames are warped (camera moves, dissolves), and the kernel costs "
                      f"{k['decoded_typical_yuv_kernel_1_thread']['best_ms']:.1f} ms per typical warped frame")
            if "decoded_camera_move_yuv_kernel_1_thread" in k:
                L[-1] += (f" ({k['decoded_camera_move_yuv_kernel_1_thread']['best_ms']:.1f} ms for a camera move "
                          "without rotation)")
            L[-1] += f" against {k['decoded_colour_only_yuv_kernel_1_thread']['best_ms']:.1f} ms unwarped"
        if "cpu_s" in full and "cpu_s" in colour:
            L[-1] += (f" (in all: {full['cpu_s']['median']:.1f} CPU-seconds against {colour['cpu_s']['median']:.1f}, "
                      f"for an output of {full['output_bytes'] / 2**20:.1f} MiB against "
                      f"{colour['output_bytes'] / 2**20:.1f} MiB)")
        L[-1] += "."
    return ["### Targets not met, and where their time goes", ""] + L + [""] if L else []


# ------------------------------------------------------------------------------------------------ README
README = ROOT / "README.md"
README_MARKS = {"figures": ("<!-- bench:figures:begin -->", "<!-- bench:figures:end -->"),
                "status": ("<!-- bench:status:begin -->", "<!-- bench:status:end -->")}


def readme_blocks(results: dict, quick: dict | None) -> dict[str, str]:
    """The README's benchmark figures and its status sentence, from a full run's results (and the last
    ``--quick`` run's, for its duration): the README quotes only what a run measured."""
    m, b = results["machine"], results["benchmarks"]
    e, k, c, a = (b.get(x, {}) for x in ("e2e", "kernels", "cluster", "api"))
    day = results["finished_at"][:10]
    code = results.get("code") or {}
    L = []
    if quick and quick.get("duration_s") and _complete(quick):
        L.append(f"`bench/run --quick` took {quick['duration_s']:.0f} s on its last run here "
                 f"({quick['finished_at'][:10]}).")
    L.append(f"Figures from the committed full run (`bench/run`, {results['duration_s']:.0f} s, {day}, "
             f"{_code_line(code)}) on {m['cpu']}, {m['cores']} cores, "
             f"{_fmt(m['memory_gib'], 0)} GiB; its targets:")
    L += ["", "| figure | measured | target | result |", "|---|---|---|---|"]
    for t in results["targets"]:
        verdict = "met" if t["met"] else "**not met**" if t.get("measured", True) else "not measured"
        L.append(f"| {t['name']} | {_fmt(t['value'])} | {t['target']} | {verdict} |")
    if "ratios" in e:
        s_ = e["source"]
        L += ["", f"**End to end against ffmpeg** ({s_.get('duration_s'):.0f} s {s_.get('width')}x{s_.get('height')} "
              f"source with audio, {s_.get('origin', 'generated')}; {e['template'].get('width')}x"
              f"{e['template'].get('height')} template; medians of alternating whole-process runs, start-up "
              "included):", "",
              "| job | median s | CPU s | output MiB |", "|---|---|---|---|"]
        names = {"colour_only": "`stylecast run`, colour only (`pacing`, `motion`, `transitions` off; veryfast, CRF 20)",
                 "ffmpeg_lut3d": "`ffmpeg -vf lut3d=<the template's .cube> -c:v libx264 -preset veryfast -crf 20 -c:a aac`",
                 "ffmpeg_transcode": "`ffmpeg -c:v libx264 -preset veryfast -crf 20 -c:a aac` (the floor)",
                 "ffmpeg_transcode_graded": "the same transcode of the colour-only job's output",
                 "full_style": "`stylecast run`, full style (everything on)"}
        for job, label in names.items():
            if job in e:
                L.append(f"| {label} | {e[job]['wall_s']['median']:.2f} | {_fmt(e[job]['cpu_s']['median'], 1)} | "
                         f"{e[job]['output_bytes'] / 2**20:.1f} |")
        st_c, st_f = e["colour_only"]["stage_seconds_median"], e["full_style"]["stage_seconds_median"]
        L += ["", f"Per stage (colour-only / full): analysis of both videos {st_c['analysis']:.1f} / "
              f"{st_f['analysis']:.1f} s, plan + render {st_c['plan_and_render']:.1f} / {st_f['plan_and_render']:.1f} s."]
        spread = _round_spread(e)
        if spread:
            L += ["", spread]
    if "fused_1_thread" in k:
        L += ["", "**Render kernel** (`python bench/bench_kernels.py`, 1080p frames, 1 thread, best of the run):", "",
              "| work per 1920×1080 frame | fused kernel ms | alternative ms | ratio |", "|---|---|---|---|"]
        rows = (("warp + 33³ LUT + fade (RGB) vs `warpAffine` + numpy LUT + `addWeighted`", "fused_1_thread",
                 "composed_cv2_numpy_1_thread"),
                ("decoded typical frame: YUV kernel vs swscale to RGB + RGB kernel", "decoded_typical_yuv_kernel_1_thread",
                 "decoded_typical_rgb_path_1_thread"),
                ("decoded colour-only frame: the same", "decoded_colour_only_yuv_kernel_1_thread",
                 "decoded_colour_only_rgb_path_1_thread"),
                ("decoded camera-move frame (zoom + pan): separable sampling vs four bilinear taps",
                 "decoded_camera_move_yuv_kernel_1_thread", "decoded_camera_move_four_tap_1_thread"))
        for label, fast, slow in rows:
            if fast in k and slow in k:
                L.append(f"| {label} | {k[fast]['best_ms']:.1f} | {k[slow]['best_ms']:.1f} | "
                         f"{k[slow]['best_ms'] / k[fast]['best_ms']:.1f}× |")
    if "speedup" in c:
        L += ["", f"**Cluster scaling** (`python bench/bench_cluster.py`, one job on Ray, {c.get('reps', 1)} run(s) "
              f"per configuration): 1 worker {c['one_worker']['wall_s']:.1f} s, 2 workers "
              f"{c['two_workers']['wall_s']:.1f} s: speed-up {c['speedup']:.2f}×, Ray overhead "
              f"{c['two_workers']['overhead_share']:.1%} of the wall time."]
    if any(x in a for x in ("serve_haproxy", "serve_default_proxy", "plain_uvicorn")):
        L += ["", f"**API** (`python bench/bench_api.py`, `GET /api/v1/jobs/{{id}}`, wrk -t2 -c32 for "
              f"{a.get('duration_s')} s on loopback):", "", "| configuration | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]
        labels = {"serve_haproxy": "`stylecast serve --ingress haproxy`",
                  "serve_default_proxy": "`stylecast serve --ingress default` (Serve's Python proxy)",
                  "plain_uvicorn": "the same FastAPI app on plain uvicorn (no Ray)"}
        for name, label in labels.items():
            if name in a:
                r = a[name]
                L.append(f"| {label} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
        for name, u in (a.get("uploads") or {}).items():
            L.append("")
            L.append(f"Uploading a {u['bytes'] / 2**20:.0f} MiB video through `{name}`: HTTP {u['status']}, largest "
                     f"RSS growth of any process {u['max_growth_mib']:.1f} MiB.")
    met = [t for t in results["targets"] if t["met"]]
    missed = [t for t in results["targets"] if not t["met"]]
    status = f"the benchmark suite, with {len(met)} of its {len(results['targets'])} targets met at the last full run"
    if missed:
        status += " (not met: " + "; ".join(
            f"{t['name']} {_fmt(t['value'])}, target {t['target']}" if t.get("measured", True)
            else f"{t['name']}, not measured" for t in missed) + "; why, in `bench/REPORT.md`)"
    status += "."
    floor_missed = any(t["name"] == "colour-only job / ffmpeg transcode floor" and not t["met"] for t in missed)
    if floor_missed and "cpu_s" in e.get("colour_only", {}) and "ffmpeg_transcode_graded" in e:
        cores = m.get("cores_available") or m.get("cores") or 1
        budget = 1.5 * e["ffmpeg_transcode"]["wall_s"]["median"] * cores
        cpu = e["colour_only"]["cpu_s"]["median"]
        if cpu > budget:
            status += (f" In CPU time the colour-only job needs {cpu:.0f} s where 1.5× the plain transcode's wall time "
                       f"on {cores} cores allows {budget:.0f} s even with every core busy throughout; ffmpeg's "
                       f"transcode of the graded output alone takes "
                       f"{e['ffmpeg_transcode_graded']['cpu_s']['median']:.0f} CPU-s, and the analysis (a second "
                       "decode of the source), the grade and the audio do not fit in the rest.")
        else:
            status += (f" In CPU time the colour-only job ({cpu:.0f} s) would fit in 1.5× the plain transcode's wall "
                       f"time on {cores} cores ({budget:.0f} s); its wall time does not, as cores idle part of the time.")
    if "ratios" in e:
        r = e["ratios"]["colour_only_vs_ffmpeg_lut3d"]
        status += (f" A colour-only job takes {1 - r:.0%} less time than the hand-written `ffmpeg -vf lut3d` command."
                   if r < 1 else f" A colour-only job takes {r:.2f}× the hand-written `ffmpeg -vf lut3d` command.")
    return {"figures": "\n".join(L), "status": status}


def refresh_readme() -> bool:
    """Rewrite the README's figures from the committed full run (bench/results.json) and the last quick run."""
    full_file, quick_file = BENCH / "results.json", BENCH / "quick" / "results.json"
    if not full_file.exists():
        return False
    full = json.loads(full_file.read_text())
    if full.get("mode") != "full" or "targets" not in full:
        return False
    quick = json.loads(quick_file.read_text()) if quick_file.exists() else None
    return update_readme(full, quick)


def update_readme(results: dict, quick: dict | None, path: Path = README) -> bool:
    """Replace the text between each pair of README markers; False when the markers are missing."""
    text = path.read_text()
    for key, block in readme_blocks(results, quick).items():
        begin, end = README_MARKS[key]
        if begin not in text or end not in text.split(begin, 1)[1]:
            return False
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block}\n{end}{tail}"
    path.write_text(text)
    return True


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description="Run every benchmark of stylecast; write "
                                 "results.json, REPORT.md and charts/ (default: into bench/).")
    ap.add_argument("--quick", action="store_true", help="smaller sources, fewer repetitions (< 5 min on 2 cores)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # minimal inputs, for the tests
    ap.add_argument("--only", help=f"comma list of benchmarks to run ({','.join(ALL)}); default: all of the mode's")
    ap.add_argument("--out", type=Path, help="where results.json, REPORT.md and charts/ go (default: bench/, or "
                    "bench/quick/ with --quick); a run of every benchmark into the default place also refreshes "
                    "the README's figures")
    ap.add_argument("--rerender", action="store_true", help=argparse.SUPPRESS)  # REPORT.md + charts from results.json
    args = ap.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    default_out = {"full": BENCH, "quick": BENCH / "quick", "tiny": BENCH / "tiny"}[mode]
    args.out = args.out or default_out
    if args.rerender:
        results = json.loads((args.out / "results.json").read_text())
        results["targets"] = targets(results)
        _write_json(args.out / "results.json", results)
        chart_files = charts(results, args.out / "charts")
        (args.out / "REPORT.md").write_text(report(results, chart_files, "charts") + "\n")
        if args.out.resolve() in (BENCH.resolve(), (BENCH / "quick").resolve()):
            refresh_readme()
        return 0
    cfg = dict(MODES[mode])
    only = tuple(x for x in (args.only.split(",") if args.only else cfg["only"]) if x)
    bad = [x for x in only if x not in RUNNERS]
    if bad:
        ap.error(f"unknown benchmark(s) {', '.join(bad)}; choose from {', '.join(ALL)}")
    started = time.time()
    command = "bench/run" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    results: dict = {"schema": 1, "mode": mode, "command": command, "config": {k: v for k, v in cfg.items()},
                     "started_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "machine": machine_info(), "versions": versions(), "code": code_version(), "benchmarks": {}}
    results["config"]["only"] = list(only)
    failed = False
    work = Path(tempfile.mkdtemp(prefix="work-", dir=inputs.cache_dir()))
    try:
        for name in only:
            log(f"--- {name}")
            t0 = time.perf_counter()
            try:
                results["benchmarks"][name] = RUNNERS[name](cfg, work)
            except Exception as exc:  # noqa: BLE001 - record and go on with the other benchmarks
                failed = True
                results["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()[-3000:]}
                log(f"{name} FAILED: {exc}")
            results["benchmarks"][name]["_suite_wall_s"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["finished_at"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results["duration_s"] = time.time() - started
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", results)  # the measurements first: a report bug must not lose a run
    results["targets"] = targets(results)
    try:
        chart_files = charts(results, out / "charts")
    except Exception as exc:  # noqa: BLE001
        failed = True
        chart_files = {}
        results["charts_error"] = f"{type(exc).__name__}: {exc}"
    results["charts"] = {k: f"charts/{v}" for k, v in chart_files.items()}
    _write_json(out / "results.json", results)
    (out / "REPORT.md").write_text(report(results, chart_files, "charts") + "\n")
    log(f"wrote {out / 'results.json'} and {out / 'REPORT.md'} in {results['duration_s']:.0f} s")
    if out.resolve() == default_out.resolve() and set(only) == set(ALL) and mode != "tiny" and refresh_readme():
        log(f"refreshed the benchmark figures in {README}")
    for t in results["targets"]:
        print(f"{t['name']}: {_fmt(t['value'])} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
