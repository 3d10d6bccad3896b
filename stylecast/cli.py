"""The ``stylecast`` command line.

Errors are one line on stderr and a non-zero exit code (the traceback only with ``--debug``); outputs appear
at their path only when complete.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

from stylecast import __version__
from stylecast.errors import StylecastError

EXIT_ERROR = 1
EXIT_USAGE = 2


class ProgressPrinter:
    """One progress bar per stage on a terminal; quiet (a line per stage) when stderr is not a terminal."""

    def __init__(self, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._stage: str | None = None
        self._t0 = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            if self._stage is not None and self.tty:
                self.stream.write("\n")
            self._stage, self._t0 = stage, time.perf_counter()
            if not self.tty:
                self.stream.write(f"{stage} …\n")
        if self.tty:
            frac = done / max(total, 1)
            bar = "█" * int(frac * 30) + "·" * (30 - int(frac * 30))
            self.stream.write(f"\r{stage:<18} {bar} {done}/{total} {time.perf_counter() - self._t0:5.1f}s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty and self._stage is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._stage = None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


MIN_CHUNK_S = 0.1
DEMO_SECONDS = (1.0, 120.0)  # the clips are drawn in memory (about 9 MB a second each at 480x270)


def _demo_seconds(text: str) -> float:
    value = _positive_float(text)
    lo, hi = DEMO_SECONDS
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be {lo:g}..{hi:g} s, got {text}")
    return value


def _chunk_seconds(text: str) -> float:
    """A chunk length: finite and at least MIN_CHUNK_S (a render chunk is whole 2 s GOPs anyway)."""
    value = _positive_float(text)
    if value < MIN_CHUNK_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CHUNK_S} s, got {text}")
    return value


def _check_writable(path: str | None, others: list[str], suffix: str | None = None) -> Path | None:
    """Refuse an output path that is an input, a directory, unwritable or of the wrong type — before any work."""
    from stylecast.paths import check_output_path

    return None if path is None else check_output_path(path, [o for o in others if o is not None], suffix)


def _check_output(path: str, inputs: list[str]) -> Path:
    return _check_writable(path, inputs, ".mp4")


def _use_ray(args) -> bool:
    import os

    return bool(getattr(args, "ray", False) or getattr(args, "address", None) or os.environ.get("RAY_ADDRESS"))


def _run_job(args, source, template, out, options, style_json_path, progress):
    """The job on Ray (embedded or an existing cluster) when asked for, else in this process."""
    if not _use_ray(args):
        from stylecast import engine

        return engine.run(source, template, out, options, style_json_path=style_json_path,
                          chunk_seconds=args.chunk_seconds, workers=getattr(args, "workers", None),
                          progress=progress)
    from actors.pipeline import Pipeline
    from cluster import connect

    print("connecting to Ray …", file=sys.stderr) if not args.quiet else None
    connect(args.address)
    pipeline = Pipeline()
    try:
        return pipeline.run(source, template, out, options, chunk_seconds=args.chunk_seconds,
                            style_json_path=style_json_path, progress=progress)
    finally:
        pipeline.shutdown()


def cmd_run(args) -> int:
    from stylecast.options import parse_options
    from stylecast.media.probe import probe

    options = parse_options(args.options)
    out = _check_output(args.output, [args.source, args.template])
    _check_writable(args.style_json, [args.source, args.template, args.output])
    for path in (args.source, args.template):
        probe(path)  # bad input fails before any cluster is started
    progress = ProgressPrinter(enabled=not args.quiet)
    result = _run_job(args, args.source, args.template, out, options, args.style_json, progress)
    progress.finish()
    print(json.dumps({"output": str(result.output), "style_json": args.style_json,
                      "frames": result.plan.output.frame_count, "duration_s": round(result.plan.output.duration_s, 3),
                      "segments": len(result.plan.segments),
                      "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()}}, indent=2))
    return 0


def cmd_extract(args) -> int:
    from stylecast import engine
    from stylecast.color import write_cube
    from stylecast.paths import atomic_output

    _check_writable(args.output, [args.template])
    _check_writable(args.cube, [args.template, args.output])
    progress = ProgressPrinter(enabled=not args.quiet)
    style, _ = engine.extract(args.template, chunk_seconds=args.chunk_seconds, workers=args.workers,
                              progress=progress)
    progress.finish()
    if args.cube:  # first: a template with no look to export leaves no style.json behind either
        if style.color is None:
            raise StylecastError(f"no colour look to export: {style.meta.failures.get('color', 'unknown reason')}")
        with atomic_output(args.cube) as tmp:
            write_cube(style.color.look_lut.to_array(), tmp, title=f"stylecast look of {Path(args.template).name}")
    engine.write_json_atomic(args.output, style.model_dump(mode="json"))
    print(json.dumps({"style_json": args.output, "cube": args.cube, "failures": style.meta.failures,
                      "confidence": style.meta.confidence}, indent=2))
    return 0


def cmd_apply(args) -> int:
    from stylecast import engine
    from stylecast.options import parse_options

    options = parse_options(args.options)
    style = engine.load_style(args.style)
    out = _check_output(args.output, [args.source, args.style])
    progress = ProgressPrinter(enabled=not args.quiet)
    path, plan = engine.apply(args.source, style, out, options, chunk_seconds=args.chunk_seconds,
                              workers=args.workers, progress=progress)
    progress.finish()
    print(json.dumps({"output": str(path), "frames": plan.output.frame_count,
                      "duration_s": round(plan.output.duration_s, 3)}, indent=2))
    return 0


def cmd_analyze(args) -> int:
    from stylecast.analyze import analyze_file
    from stylecast.threads import available_cores

    progress = ProgressPrinter(enabled=not args.quiet)
    analysis = analyze_file(args.video, chunk_seconds=args.chunk_seconds, workers=args.workers or available_cores(),
                            progress=progress)
    progress.finish()
    json.dump(analysis.report(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_schema(args) -> int:
    from stylecast.style import stylejson_schema

    json.dump(stylejson_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_demo(args) -> int:
    from stylecast.options import parse_options
    from stylecast.synth_clip import demo_clips

    directory = Path(args.dir)
    progress = ProgressPrinter(enabled=not args.quiet)
    if not args.quiet:
        print(f"making demo clips in {directory} …", file=sys.stderr)
    source, template = demo_clips(directory, seconds=args.seconds)
    out = directory / "demo_output.mp4"
    style_path = directory / "demo_style.json"
    result = _run_job(args, source.path, template.path, out, parse_options(args.options), style_path, progress)
    progress.finish()
    print(json.dumps({"source": str(source.path), "template": str(template.path), "output": str(result.output),
                      "style_json": str(style_path),
                      "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()}}, indent=2))
    return 0


def cmd_serve(args) -> int:
    from serve_app.config import ServiceConfig
    from serve_app.server import run_server

    try:
        config = ServiceConfig.from_env(host=args.host, port=args.port, data_dir=args.data_dir,
                                        max_concurrent_jobs=args.max_concurrent_jobs)
    except ValueError as exc:
        raise StylecastError(f"invalid service configuration: {exc}") from None
    return run_server(config, address=args.address, ingress=args.ingress)


# ------------------------------------------------------------------------------------------------ API client
def _client(args):
    from stylecast.sdk import Client

    return Client(args.server, api_key=args.api_key or None)


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _bytes_bar(progress: ProgressPrinter, stage: str):
    return lambda done, total: progress(stage, done, total)


def _upload_key(job_key: str | None, role: str) -> str | None:
    """The Idempotency-Key of an upload made for a job submitted with ``job_key`` (a fixed length, whatever
    the job key's)."""
    if not job_key:
        return None
    import hashlib

    return f"submit-{role}-{hashlib.sha256(job_key.encode()).hexdigest()[:40]}"


def cmd_submit(args) -> int:
    """Upload both videos, create the job; with --wait (or -o) follow it and download the output."""
    from stylecast.options import parse_options

    body_options = None
    if args.options:
        parse_options(args.options)  # a clear error before any upload
        text = Path(args.options[1:]).read_text() if args.options.startswith("@") else args.options
        body_options = json.loads(text)
    out = _check_output(args.output, [args.source, args.template]) if args.output else None
    for path in (args.source, args.template):
        p = Path(path)
        if not p.is_file():
            raise StylecastError(f"{path}: {'not a file' if p.exists() else 'no such file'}")
    wait = args.wait or out is not None
    progress = ProgressPrinter(enabled=not args.quiet)
    # A retry with the same --idempotency-key must find the same uploads, or the job's body would differ.
    upload_key = {role: _upload_key(args.idempotency_key, role) for role in ("source", "template")}
    with _client(args) as client:
        src = client.upload(args.source, progress=_bytes_bar(progress, "upload source"),
                            idempotency_key=upload_key["source"])
        tpl = client.upload(args.template, progress=_bytes_bar(progress, "upload template"),
                            idempotency_key=upload_key["template"])
        progress.finish()
        job = client.create_job(src["video_id"], tpl["video_id"], options=body_options, webhook_url=args.webhook_url,
                                idempotency_key=args.idempotency_key)
        if not wait:
            _print_json(job)
            return 0
        if not args.quiet:
            print(f"job {job['job_id']} queued", file=sys.stderr)
        job = client.wait(job["job_id"], poll_s=args.poll,
                          progress=lambda stage, pct: progress(stage, int(round(pct)), 100))
        progress.finish()
        if job["status"] != "completed":
            detail = client.result(job["job_id"])
            _print_json(job)
            error = detail.get("error") or {}
            reason = f": {error.get('code')}: {error.get('message')}" if error else ""
            raise StylecastError(f"job {job['job_id']} {job['status']}{reason}")
        if out is not None:
            client.download(job["job_id"], out, progress=_bytes_bar(progress, "download"))
            progress.finish()
            job = {**job, "output": str(out)}
        _print_json(job)
    return 0


def cmd_status(args) -> int:
    with _client(args) as client:
        _print_json(client.get_job(args.job_id))
    return 0


def cmd_result(args) -> int:
    with _client(args) as client:
        _print_json(client.result(args.job_id))
    return 0


def cmd_list(args) -> int:
    with _client(args) as client:
        _print_json(client.list_jobs(page=args.page, page_size=args.page_size, status=args.status))
    return 0


def cmd_cancel(args) -> int:
    with _client(args) as client:
        _print_json(client.cancel(args.job_id))
    return 0


def _add_client_commands(sub) -> None:
    """submit / status / result / list / cancel: the REST API through `stylecast.sdk`."""
    import os

    def server_args(p):
        p.add_argument("--server", metavar="URL", default=os.environ.get("STYLECAST_SERVER") or "http://127.0.0.1:8000",
                       help="the stylecast service (default: $STYLECAST_SERVER or http://127.0.0.1:8000)")
        p.add_argument("--api-key", metavar="K", default=os.environ.get("STYLECAST_API_KEY"),
                       help="API key (default: $STYLECAST_API_KEY)")

    p = sub.add_parser("submit", help="upload a source and a template to a stylecast server and create a job")
    p.add_argument("source")
    p.add_argument("template")
    p.add_argument("--options", metavar="JSON|@file", help="job options as JSON, or @path to a JSON file")
    p.add_argument("--webhook-url", metavar="U", help="POSTed the job when it ends")
    p.add_argument("--idempotency-key", metavar="KEY", help="retrying with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("-o", "--output", metavar="OUT.mp4", help="download the output here (implies --wait)")
    p.add_argument("--poll", type=_positive_float, default=1.0, metavar="S", help="poll interval with --wait")
    server_args(p)
    p.set_defaults(func=cmd_submit)

    for name, func, text in (("status", cmd_status, "print a job (status, stage, progress) as JSON"),
                             ("result", cmd_result, "print a job's result (StyleJSON, error, timings) as JSON"),
                             ("cancel", cmd_cancel, "cancel a queued or processing job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id", metavar="JOB_ID")
        server_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("list", help="list jobs as JSON, newest first")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--status", choices=("queued", "processing", "completed", "failed", "cancelled"))
    server_args(p)
    p.set_defaults(func=cmd_list)


_GLOBAL_FLAGS = ((("--debug",), "show tracebacks on errors"), (("-q", "--quiet"), "no progress output"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylecast", description="Make a video look, cut and move like another one.")
    parser.add_argument("--version", action="version", version=f"stylecast {__version__}")
    for names, text in _GLOBAL_FLAGS:
        parser.add_argument(*names, action="store_true", help=text)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def chunk_arg(p):
        p.add_argument("--chunk-seconds", type=_chunk_seconds, default=None, metavar="S",
                       help="split videos into time chunks of S seconds (default: one chunk per worker in this "
                            "process, 2 s on Ray)")
        p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="threads working side by side in this process (default: one per core); "
                            "on Ray there is one stage actor per CPU instead")

    def ray_args(p):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--ray", action="store_true", help="run on an embedded local Ray cluster (stage actors)")
        g.add_argument("--address", metavar="ADDR",
                       help="run on an existing Ray cluster: auto, HOST:6379, or ray://HOST:10001 (Ray client); "
                            "RAY_ADDRESS does the same")

    p = sub.add_parser("run", help="analyse both videos, extract the template's style, render the source in it")
    p.add_argument("source")
    p.add_argument("template")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--style-json", metavar="F", help="also write the extracted StyleJSON here")
    p.add_argument("--options", metavar="JSON|@file", help="job options as JSON, or @path to a JSON file")
    chunk_arg(p)
    ray_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("extract", help="extract a template's StyleJSON (and its look as a .cube LUT)")
    p.add_argument("template")
    p.add_argument("-o", "--output", required=True, help="StyleJSON output path")
    p.add_argument("--cube", metavar="LOOK.cube", help="also write the colour look as an Adobe/Resolve .cube LUT")
    chunk_arg(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("apply", help="render a source in a saved StyleJSON")
    p.add_argument("source")
    p.add_argument("--style", required=True, help="StyleJSON file")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--options", metavar="JSON|@file")
    chunk_arg(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("analyze", help="print a video's analysis (probe, cuts, shots, motion, audio) as JSON")
    p.add_argument("video")
    chunk_arg(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("serve", help="run the REST service (embedded Ray + JobManager + Serve app)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default="stylecast-data", help="SQLite database, uploads and outputs")
    p.add_argument("--max-concurrent-jobs", type=int, default=None)
    p.add_argument("--address", metavar="ADDR", help="serve from an existing Ray cluster instead of an embedded one")
    p.add_argument("--ingress", choices=("auto", "haproxy", "default"), default="auto",
                   help="HTTP ingress: Ray Serve's HAProxy (fast; binds all interfaces) or its default proxy; "
                        "auto = HAProxy when available and --host is not loopback")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("schema", help="print the StyleJSON v1 JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("demo", help="make a neutral source and a graded, fast-cut template, and run a job")
    p.add_argument("--dir", default="stylecast-demo", help="where the clips and the output go")
    p.add_argument("--seconds", type=_demo_seconds, default=8.0,
                   help=f"length of the demo clips, {DEMO_SECONDS[0]:g}..{DEMO_SECONDS[1]:g} s (default 8)")
    p.add_argument("--options", metavar="JSON|@file")
    chunk_arg(p)
    ray_args(p)
    p.set_defaults(func=cmd_demo)
    _add_client_commands(sub)
    # The global flags also work after the command (`stylecast run A B -q`); SUPPRESS keeps a command's
    # parser from resetting a flag given before it.
    for command in sub.choices.values():
        for names, text in _GLOBAL_FLAGS:
            command.add_argument(*names, action="store_true", default=argparse.SUPPRESS, help=text)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a container stopping): unwinds like Ctrl-C, so every ``finally`` removes
    its temporary files, and the command exits 143."""


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return _main(args)
    finally:
        if on_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(args) -> int:
    try:
        return int(args.func(args) or 0)
    except StylecastError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"stylecast: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        print("stylecast: terminated" if isinstance(exc, Terminated) else "stylecast: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        # The reader went away (e.g. `stylecast analyze X | head`): not an error worth a message.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug gets the rest
        if args.debug:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if isinstance(exc, OSError) and exc.filename:
            msg = f"{exc.filename}: {exc.strerror or msg}"
        print(f"stylecast: error: {type(exc).__name__}: {msg} (run with --debug for details)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
