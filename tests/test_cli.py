"""The ``stylecast`` command line, driven for real: JSON outputs, files written, exit codes and one-line errors.

A few checks run the CLI as a separate process (``python -m stylecast.cli``) to see real exit codes and stderr;
the rest call ``stylecast.cli.main`` in-process, which is the same code without the interpreter start-up.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from stylecast import cli
from stylecast.color import read_cube
from stylecast.media.probe import probe
from stylecast.style import StyleJSON
from stylecast.synth_clip import ShotSpec, make_clip, teal_orange

FPS = 25.0
W, H = 160, 90
GROUPS = ("color", "tone", "pacing", "transitions", "motion", "audio", "framing")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli_clips")


@pytest.fixture(scope="module")
def src(clip_dir):
    """3 s, three 1 s shots, 120 BPM drums (has audio)."""
    shots = [ShotSpec(frames=25, seed=1, palette="green", pan_x=0.04), ShotSpec(frames=25, seed=2, palette="urban"),
             ShotSpec(frames=25, seed=3, palette="warm", zoom_rate=0.04)]
    return make_clip(clip_dir / "src.mp4", shots, fps=FPS, width=W, height=H, bpm=120, audio_level_dbfs=-20.0)


@pytest.fixture(scope="module")
def tpl(clip_dir):
    """2.4 s, three shots (0.8 s, 0.6 s, 1.0 s) with camera moves, graded teal-orange, no audio."""
    shots = [ShotSpec(frames=20, seed=5, palette="cool", pan_x=0.3),
             ShotSpec(frames=15, seed=6, palette="sunset", zoom_rate=0.4),
             ShotSpec(frames=25, seed=7, palette="urban")]
    return make_clip(clip_dir / "tpl.mp4", shots, fps=FPS, width=W, height=H, grade=teal_orange)


def run_cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylecast.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def call(capsys, *args: str) -> tuple[int, str, str]:
    """``stylecast ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(["-q", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    line = lines[0]
    assert line.startswith("stylecast: error: "), line
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    return line


def assert_empty_dir(d: Path) -> None:
    """Nothing was written: no output, no temporary or partial files."""
    assert not d.exists() or list(d.iterdir()) == [], sorted(p.name for p in d.iterdir())


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def extracted(tpl, tmp_path_factory):
    """``stylecast extract TEMPLATE -o style.json --cube look.cube``, as a separate process."""
    d = tmp_path_factory.mktemp("extract")
    style, cube = d / "style.json", d / "look.cube"
    proc = run_cli_process("-q", "extract", str(tpl.path), "-o", str(style), "--cube", str(cube))
    assert proc.returncode == 0, proc.stderr
    return style, cube, json.loads(proc.stdout), d


@pytest.fixture(scope="module")
def schema() -> dict:
    proc = run_cli_process("schema")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ------------------------------------------------------------------------------------------------ analyze
@pytest.mark.parametrize("which", ["src", "tpl"])
def test_analyze_reports_probe_cuts_shots_and_audio(which, request, capsys):
    clip = request.getfixturevalue(which)
    rc, out, err = call(capsys, "analyze", clip.path)
    assert rc == 0, err
    report = json.loads(out)
    assert {"probe", "cuts", "shots", "audio"} <= set(report)

    p = report["probe"]
    assert p["frame_count"] == clip.n_frames
    assert (p["display_width"], p["display_height"]) == (W, H)
    assert p["fps"] == pytest.approx(FPS)
    assert p["duration_s"] == pytest.approx(clip.n_frames / FPS, abs=1e-6)

    # Cuts: the ground truth, each within one frame, and nothing else.
    cuts = report["cuts"]
    assert all({"frame", "time_s", "kind"} <= set(c) for c in cuts), cuts
    truth = [t["frame"] for t in clip.transitions]
    assert len(cuts) == len(truth), (cuts, truth)
    for c, f in zip(cuts, truth):
        assert abs(c["frame"] - f) <= 1, (c, f)
        assert c["kind"] == "cut"
        assert c["time_s"] == pytest.approx(c["frame"] / FPS, abs=0.5 / FPS)

    # Shots tile the clip: contiguous frame spans from 0 to the end, with times and a motion kind.
    shots = report["shots"]
    assert len(shots) == len(truth) + 1
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == clip.n_frames
    for a, b in zip(shots, shots[1:]):
        assert a["end_frame"] == b["start_frame"]
    for s in shots:
        assert {"start_s", "end_s", "start_frame", "end_frame", "motion"} <= set(s)
        assert s["end_frame"] > s["start_frame"] and s["end_s"] > s["start_s"]
        assert s["start_s"] == pytest.approx(s["start_frame"] / FPS, abs=0.5 / FPS)
        assert isinstance(s["motion"], dict) and isinstance(s["motion"].get("kind"), str) and s["motion"]["kind"]

    if which == "tpl":
        assert report["audio"] is None  # no audio track
        # The template's first shot pans right fast, the second zooms in.
        assert shots[0]["motion"]["kind"] == "pan_right"
        assert shots[1]["motion"]["kind"] == "zoom_in"
    else:
        a = report["audio"]
        assert a is not None
        assert {"tempo_bpm", "beats_s", "lufs"} <= set(a)
        assert a["tempo_bpm"] == pytest.approx(120, rel=0.05)
        assert len(a["beats_s"]) >= 4 and all(0 <= b <= clip.duration_s for b in a["beats_s"])
        assert math.isfinite(a["lufs"]) and -40 < a["lufs"] < 0


# ------------------------------------------------------------------------------------------------ schema / extract
def test_schema_is_a_json_schema_that_a_real_stylejson_meets(schema, extracted):
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads(extracted[0].read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    # …and the schema is not vacuous: what the model refuses, the schema refuses too.
    for bad in ({**doc, "extra_field": 1}, {**doc, "schema_version": "2.0"},
                {k: v for k, v in doc.items() if k != "meta"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)


def test_extract_writes_stylejson_and_cube(extracted, schema, tpl):
    style_path, cube_path, report, d = extracted
    doc = json.loads(style_path.read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    style = StyleJSON.model_validate(doc)
    assert style.schema_version == "1.0"
    assert style.meta.template.filename == tpl.path.name
    assert style.meta.template.frame_count == tpl.n_frames
    assert style.meta.template.has_audio is False

    # No audio in the template: the audio group is null and explained; every other group came through.
    assert doc["audio"] is None
    reason = style.meta.failures.get("audio")
    assert reason and "audio" in reason.lower()
    for g in GROUPS:
        if g != "audio":
            assert doc[g] is not None, (g, style.meta.failures.get(g))
    assert set(style.meta.failures) == {"audio"}
    assert report["failures"] == style.meta.failures
    assert report["style_json"] == str(style_path) and report["cube"] == str(cube_path)

    lut = read_cube(cube_path)
    assert lut.shape == (33, 33, 33, 3)
    assert float(lut.min()) >= -1e-3 and float(lut.max()) <= 1 + 1e-3
    assert float(lut.std()) > 0.1  # a real LUT, not a constant
    # Only the two outputs in the folder: no temporaries left behind.
    assert sorted(p.name for p in d.iterdir()) == sorted([style_path.name, cube_path.name])


# ------------------------------------------------------------------------------------------------ apply / run
def test_apply_renders_a_playable_mp4(extracted, src, tmp_path, capsys):
    out = tmp_path / "applied.mp4"
    opts = {"transfer": {"pacing": False, "motion": False}, "strength": 0.8, "output": {"width": 128, "crf": 28}}
    rc, stdout, err = call(capsys, "apply", src.path, "--style", extracted[0], "-o", out, "--options",
                           json.dumps(opts))
    assert rc == 0, err
    info = probe(out)
    assert (info.display_width, info.display_height) == (128, 72)
    assert info.video_codec == "h264"
    assert info.frame_count == src.n_frames  # no re-cut: the source's length
    assert info.audio is not None  # the source's audio comes through
    report = json.loads(stdout)
    assert report["output"] == str(out) and report["frames"] == info.frame_count
    assert report["duration_s"] == pytest.approx(info.duration_s, abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["applied.mp4"]


def test_run_end_to_end_with_options_file_and_chunks(src, tpl, tmp_path, schema):
    """The whole job as a separate process: options from a file, chunked, StyleJSON written alongside."""
    (tmp_path / "out").mkdir()
    out, style, opts = tmp_path / "out" / "run.mp4", tmp_path / "run_style.json", tmp_path / "opts.json"
    opts.write_text(json.dumps({"transfer": {"audio": False}, "output": {"fps": 25, "preset": "ultrafast"},
                                "seed": 3}))
    proc = run_cli_process("run", str(src.path), str(tpl.path), "-o", str(out), "--style-json", str(style),
                           "--options", f"@{opts}", "--chunk-seconds", "1.3")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    info = probe(out)
    assert (info.display_width, info.display_height) == (W, H)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count > 0
    report = json.loads(proc.stdout)
    assert report["frames"] == info.frame_count
    assert report["duration_s"] == pytest.approx(info.duration_s, abs=1e-3)
    assert report["style_json"] == str(style)
    jsonschema.validate(json.loads(style.read_text()), schema, cls=jsonschema.Draft202012Validator)
    StyleJSON.model_validate_json(style.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.mp4"]  # no segments or partials left


BAD_OPTIONS = [
    ('{"transfer":{"colour":true}}', ["colour"]),
    ('{"strength": 2}', ["strength"]),
    ('{"output": {"preset": "ludicrous"}}', ["preset"]),
    ('{"transfer":', ["json"]),
    ("[1, 2]", ["object"]),
    ("@/nonexistent/opts.json", ["/nonexistent/opts.json"]),
    ('{"max_duration_s": Infinity}', ["max_duration_s", "finite"]),
]


@pytest.mark.parametrize("command", ["run", "apply"])
@pytest.mark.parametrize("options,words", BAD_OPTIONS, ids=["unknown-key", "out-of-range", "bad-enum", "malformed",
                                                            "not-object", "missing-file", "infinite"])
def test_bad_options_are_refused_before_any_work(command, options, words, src, tpl, extracted, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out = out_dir / "o.mp4"
    if command == "run":
        args = ["run", src.path, tpl.path, "-o", out, "--style-json", out_dir / "s.json", "--options", options]
    else:
        args = ["apply", src.path, "--style", extracted[0], "-o", out, "--options", options]
    rc, stdout, err = call(capsys, *args)
    assert rc == 1
    assert stdout == ""
    assert_one_line_error(err, *words)
    assert_empty_dir(out_dir)


@pytest.mark.parametrize("options", ['{"output": {"width": 8}}', '{"max_duration_s": 0.001}'])
def test_run_that_fails_after_the_analysis_leaves_no_style_json(options, src, tpl, tmp_path, capsys):
    """Options that only the plan can refuse (too small, shorter than a frame): nothing is left behind."""
    out_dir = tmp_path / "out"
    rc, stdout, err = call(capsys, "run", src.path, tpl.path, "-o", out_dir / "o.mp4",
                           "--style-json", out_dir / "s.json", "--options", options)
    assert rc == 1 and stdout == ""
    assert_one_line_error(err)
    assert_empty_dir(out_dir)


def _style_variant(extracted, tmp_path: Path, name: str, mutate) -> Path:
    doc = json.loads(extracted[0].read_text())
    text = mutate(doc)
    p = tmp_path / name
    p.write_text(text if isinstance(text, str) else json.dumps(doc))
    return p


@pytest.mark.parametrize("case,words", [
    ("extra-field", ["bad_style.json", "StyleJSON", "surprise"]),
    ("wrong-version", ["bad_style.json", "StyleJSON", "schema_version"]),
    ("missing-group", ["bad_style.json", "StyleJSON", "tone"]),
    ("wrong-type", ["bad_style.json", "StyleJSON", "meta"]),
    ("not-json", ["bad_style.json", "StyleJSON"]),
    ("missing-file", ["bad_style.json"]),
    ("missing-version", ["bad_style.json", "schema_version"]),
    ("bars-cover-the-frame", ["bad_style.json", "framing.letterbox", "whole frame"]),
    ("negative-bar", ["bad_style.json", "framing.letterbox.top"]),
    ("nan", ["bad_style.json", "framing.display_aspect"]),
    ("unknown-motion-kind", ["bad_style.json", "motion.kind_fractions", "spin"]),
    ("kind-without-typical", ["bad_style.json", "motion", "typical", "rotate"]),
    ("unknown-transition-kind", ["bad_style.json", "transitions.fractions", "wipe"]),
    ("ragged-cov", ["bad_style.json", "color.template", "cov"]),
    ("short-quantiles", ["bad_style.json", "color.shots", "quantiles"]),
    ("binary", ["bad_style.json", "not a StyleJSON file"]),
    ("renamed-percentile", ["bad_style.json", "color.template", "luma_percentiles", "median"]),
    ("missing-tone-percentile", ["bad_style.json", "tone", "chroma_percentiles", "p5"]),
    ("other-quantile-levels", ["bad_style.json", "color.shots", "quantile_levels"]),
])
def test_invalid_style_file_is_refused(case, words, extracted, src, tmp_path, capsys):
    def mutate(doc):
        if case == "extra-field":
            doc["surprise"] = 1
        elif case == "wrong-version":
            doc["schema_version"] = "2.0"
        elif case == "missing-group":
            del doc["tone"]
        elif case == "wrong-type":
            doc["meta"] = "hello"
        elif case == "not-json":
            return "{ this is not json"
        elif case == "missing-version":
            del doc["schema_version"]
        elif case == "bars-cover-the-frame":
            doc["framing"]["letterbox"].update(top=0.5, bottom=0.5)
        elif case == "negative-bar":
            doc["framing"]["letterbox"]["top"] = -0.5
        elif case == "nan":
            doc["framing"]["display_aspect"] = float("nan")  # json.dumps writes NaN, which JSON parsers take
        elif case == "unknown-motion-kind":
            doc["motion"]["kind_fractions"]["spin"] = 0.5
        elif case == "kind-without-typical":
            doc["motion"]["typical"].pop("rotate", None)
            doc["motion"]["kind_fractions"]["rotate"] = 0.1
        elif case == "unknown-transition-kind":
            doc["transitions"]["fractions"]["wipe"] = 1.0
        elif case == "ragged-cov":
            doc["color"]["template"]["cov"][2] = [1.0, 2.0]
        elif case == "short-quantiles":
            doc["color"]["shots"][0]["quantiles"][0] = doc["color"]["shots"][0]["quantiles"][0][:5]
        elif case == "renamed-percentile":
            doc["color"]["template"]["luma_percentiles"]["median"] = doc["color"]["template"]["luma_percentiles"].pop("p50")
        elif case == "missing-tone-percentile":
            del doc["tone"]["chroma_percentiles"]["p5"]
        elif case == "other-quantile-levels":  # consistent in itself, but not comparable with other shots
            shot = doc["color"]["shots"][0]
            shot["quantile_levels"] = shot["quantile_levels"][1:]
            shot["quantiles"] = [q[1:] for q in shot["quantiles"]]
        elif case == "binary":
            return "placeholder"  # replaced below by bytes that are not UTF-8
        return None

    style = _style_variant(extracted, tmp_path, "bad_style.json", mutate)
    if case == "missing-file":
        style.unlink()
    elif case == "binary":
        style.write_bytes(b"\xff\xfe\x00binary")
    out_dir = tmp_path / "out"
    rc, stdout, err = call(capsys, "apply", src.path, "--style", style, "-o", out_dir / "o.mp4")
    assert rc == 1 and stdout == ""
    assert_one_line_error(err, *words)
    assert_empty_dir(out_dir)


# ------------------------------------------------------------------------------------------------ demo
def test_demo_runs_and_says_where_its_outputs_are(tmp_path, capsys):
    d = tmp_path / "demo"
    rc, stdout, err = call(capsys, "demo", "--dir", d, "--seconds", "3",
                           "--options", '{"output": {"width": 240, "preset": "ultrafast"}}')
    assert rc == 0, err
    report = json.loads(stdout)
    out, style = Path(report["output"]), Path(report["style_json"])
    assert out.parent == d and style.parent == d
    info = probe(out)
    assert info.display_width == 240 and info.frame_count > 0
    StyleJSON.model_validate_json(style.read_text())
    for key in ("source", "template"):
        assert probe(report[key]).duration_s == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("seconds", ["0.01", "121", "1e6"])
def test_demo_lengths_it_cannot_make_are_refused_up_front(seconds, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        call(capsys, "demo", "--dir", tmp_path / "d", "--seconds", seconds)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--seconds" in err and "1..120" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_quiet_demo_prints_only_its_report(tmp_path, capsys):
    rc, stdout, err = call(capsys, "-q", "demo", "--dir", tmp_path / "d", "--seconds", "1",
                           "--options", '{"output": {"width": 96, "preset": "ultrafast"}}')
    assert rc == 0 and err == ""
    assert Path(json.loads(stdout)["output"]).exists()


# ------------------------------------------------------------------------------------------------ error style
def test_error_is_one_line_without_debug_and_a_traceback_with_it(src, tmp_path):
    missing = tmp_path / "no_such_template.mp4"
    out = tmp_path / "o.mp4"
    plain = run_cli_process("run", str(src.path), str(missing), "-o", str(out))
    assert plain.returncode == 1
    line = assert_one_line_error(plain.stderr, "no_such_template.mp4", "no such file")
    assert plain.stdout == ""

    debug = run_cli_process("--debug", "run", str(src.path), str(missing), "-o", str(out))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line  # the same one-line message ends it
    assert not out.exists()


def test_unexpected_exception_is_one_line_too(monkeypatch, src, tpl, tmp_path, capsys):
    """A bug (not a StylecastError) still gives one line, naming the type and pointing at --debug."""
    from stylecast import engine

    def boom(*a, **k):
        raise RuntimeError("internal failure\nsecond line of detail")

    monkeypatch.setattr(engine, "run", boom)
    rc, _, err = call(capsys, "run", src.path, tpl.path, "-o", tmp_path / "o.mp4")
    assert rc == 1
    line = assert_one_line_error(err, "RuntimeError", "internal failure", "--debug")
    assert "second line" not in line

    capsys.readouterr()
    rc = cli.main(["--debug", "-q", "run", str(src.path), str(tpl.path), "-o", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err and "RuntimeError" in err


@pytest.mark.parametrize("args", [
    ["run", "a.mp4"],  # missing template and -o
    ["apply", "a.mp4", "-o", "o.mp4"],  # missing --style
    ["run", "a.mp4", "b.mp4", "-o", "o.mp4", "--chunk-seconds", "0"],
    ["demo", "--seconds", "-3"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("stylecast ")


# ------------------------------------------------------------------------------------------------ outputs never clobber inputs
@pytest.mark.parametrize("flag", ["-o", "--cube"])
def test_extract_refuses_to_overwrite_its_template(flag, tpl, tmp_path, capsys):
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(tpl.path.read_bytes())
    before = sha(victim)
    args = ["extract", victim, "-o", victim] if flag == "-o" else \
        ["extract", victim, "-o", tmp_path / "s.json", "--cube", victim]
    rc, _, err = call(capsys, *args)
    assert sha(victim) == before, "the template was overwritten"
    assert rc == 1
    assert_one_line_error(err, "overwrite")


def test_run_refuses_style_json_over_an_input(src, tpl, tmp_path, capsys):
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(src.path.read_bytes())
    before = sha(victim)
    rc, _, err = call(capsys, "run", victim, tpl.path, "-o", tmp_path / "o.mp4", "--style-json", victim)
    assert sha(victim) == before, "the source was overwritten"
    assert rc == 1
    assert_one_line_error(err, "overwrite")


def test_outputs_never_replace_a_pipe_or_device(src, tpl, tmp_path, capsys):
    """Outputs are renamed into place: where a FIFO (or /dev/null, as root) stands, that would replace it."""
    import stat

    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)
    cases = [("extract", tpl.path, "-o", pipe),
             ("extract", tpl.path, "-o", tmp_path / "s.json", "--cube", pipe),
             ("run", src.path, tpl.path, "-o", pipe),
             ("run", src.path, tpl.path, "-o", tmp_path / "o.mp4", "--style-json", pipe)]
    for args in cases:
        rc, _, err = call(capsys, *args)
        assert rc == 1, args
        assert_one_line_error(err, "not a regular file")
        assert stat.S_ISFIFO(pipe.stat().st_mode), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.mp4"]  # nothing else written


def test_output_in_a_new_directory_is_made_or_clearly_refused(src, tpl, tmp_path, capsys):
    out = tmp_path / "newdir" / "o.mp4"
    rc, _, err = call(capsys, "run", src.path, tpl.path, "-o", out, "--options", '{"output": {"width": 64}}')
    if rc == 0:
        assert probe(out).frame_count > 0
    else:
        assert rc == 1
        assert_one_line_error(err, "newdir")
        assert not out.exists()


def test_global_flags_work_before_and_after_the_command():
    parser = cli.build_parser()
    after = parser.parse_args(["run", "s.mp4", "t.mp4", "-o", "o.mp4", "-q", "--debug"])
    assert after.quiet and after.debug
    before = parser.parse_args(["-q", "submit", "s.mp4", "t.mp4"])
    assert before.quiet and not before.debug  # the command's parser does not reset a flag given before it
    neither = parser.parse_args(["status", "JOB"])
    assert not neither.quiet and not neither.debug
