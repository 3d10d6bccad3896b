"""The engine in one process: analyse → extract StyleJSON → plan → render.

The Ray pipeline (`actors/`) runs the same steps with the ranges spread over workers; this module is the
reference path, used by the CLI's local mode and by the tests.  It runs the same independent pieces (analysis
ranges of both videos, render ranges, the audio) on a pool of threads, one per core (``workers``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from stylecast.analyze import AnalysisJob, VideoAnalysis, analyze_file, analyze_files
from stylecast.errors import MediaError, OptionsError
from stylecast.paths import check_output_path
from stylecast.media.probe import probe
from stylecast.options import Options, format_validation_error
from stylecast.plan import RenderPlan, build_plan
from stylecast.render import decode_size_for, prepare_in_background, render_plan
from stylecast.style import StyleJSON, extract_style
from stylecast.plan import output_spec
from stylecast.threads import available_cores

Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    output: Path
    style: StyleJSON
    plan: RenderPlan
    stage_seconds: dict[str, float] = field(default_factory=dict)


def load_style(path: str | Path) -> StyleJSON:
    """Read and validate a StyleJSON file; raises `OptionsError` with a one-line reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionsError(f"cannot read style file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OptionsError(f"{path}: not a StyleJSON file (not UTF-8 JSON text)") from None
    try:
        return StyleJSON.model_validate_json(text)
    except ValidationError as exc:
        raise OptionsError(f"{Path(path).name} is not a valid StyleJSON v1 document: "
                           f"{format_validation_error(exc)}") from None


def extract(template: str | Path, *, chunk_seconds: float | None = None, workers: int | None = None,
            progress: Progress | None = None) -> tuple[StyleJSON, VideoAnalysis]:
    """Analyse ``template`` and extract its StyleJSON.  ``workers``: threads (default: one per core)."""
    analysis = analyze_file(template, chunk_seconds=chunk_seconds, progress=progress,
                            workers=workers or available_cores())
    style = extract_style(analysis)
    if progress:
        progress("style_extraction", 1, 1)
    return style, analysis


def apply(
    source: str | Path | VideoAnalysis,
    style: StyleJSON,
    out_path: str | Path,
    options: Options | None = None,
    *,
    chunk_seconds: float | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Path, RenderPlan]:
    """Render ``source`` (a path, or its analysis) in ``style``.  ``workers``: threads (default: one per core)."""
    options = options or Options()
    workers = workers or available_cores()
    check_output_path(out_path, [source.probe.path if isinstance(source, VideoAnalysis) else source])
    if not isinstance(source, VideoAnalysis):
        prepare_in_background(workers)
    analysis = source if isinstance(source, VideoAnalysis) else analyze_file(
        source, chunk_seconds=chunk_seconds, progress=progress, motion=False, workers=workers)
    out = output_spec(analysis, style, options)
    plan = build_plan(analysis, style, options, decode_size=decode_size_for((out.width, out.height), analysis.probe))
    if progress:
        progress("style_application", 1, 1)
    path = render_plan(plan, out_path, source_path=analysis.probe.path, chunk_seconds=chunk_seconds,
                       workers=workers, progress=progress, should_stop=should_stop)
    return path, plan


def run(
    source: str | Path,
    template: str | Path,
    out_path: str | Path,
    options: Options | None = None,
    *,
    style_json_path: str | Path | None = None,
    chunk_seconds: float | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Analyse both videos, extract the template's style, render the source in it.

    Both inputs are probed first so that a bad template fails before any work is done on the source.  The
    two analyses run side by side on ``workers`` threads (default: one per core); so does the render.
    ``stage_seconds``: ``analysis`` (both videos, wall time), ``style_extraction``, ``plan_and_render``.
    """
    options = options or Options()
    workers = workers or available_cores()
    check_output_path(out_path, [source, template])
    if style_json_path:
        check_output_path(style_json_path, [source, template, out_path])
    infos = [probe(path) for path in (source, template)]
    prepare_in_background(workers)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    # Camera motion is estimated only where it is used: the template's, when the job transfers motion (the
    # source's own moves are never used).  Without it the StyleJSON's motion group is null, with that reason.
    jobs = [AnalysisJob.plan(template, info=infos[1], chunk_seconds=chunk_seconds, parts=workers,
                             motion=options.transfer.motion),
            AnalysisJob.plan(source, info=infos[0], chunk_seconds=chunk_seconds, parts=workers, motion=False)]
    template_analysis, source_analysis = analyze_files(jobs, workers=workers, progress=progress)
    timings["analysis"] = time.perf_counter() - t
    t = time.perf_counter()
    style = extract_style(template_analysis)
    if progress:
        progress("style_extraction", 1, 1)
    timings["style_extraction"] = time.perf_counter() - t
    t = time.perf_counter()
    path, plan = apply(source_analysis, style, out_path, options, chunk_seconds=chunk_seconds, workers=workers,
                       progress=progress)
    timings["plan_and_render"] = time.perf_counter() - t
    if style_json_path:  # last: a run that fails or is stopped leaves no file behind (the output neither)
        write_json_atomic(style_json_path, style.model_dump(mode="json"))
    return RunResult(path, style, plan, timings)


def write_json_atomic(path: str | Path, data) -> None:
    from stylecast.paths import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


__all__ = ["RunResult", "extract", "apply", "run", "load_style", "MediaError"]
