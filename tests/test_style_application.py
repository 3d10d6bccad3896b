"""Transitions and camera motion carry over from a template to the rendered output; StyleJSON and options
are strict at the boundary."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from stylecast import engine
from stylecast.analyze import analyze_file
from stylecast.errors import OptionsError
from stylecast.options import Options, parse_options
from stylecast.style import StyleJSON
from stylecast.synth_clip import EditSpec, ShotSpec, make_clip

from .conftest import FPS, H, W


@pytest.fixture(scope="module")
def moving_template(media_dir):
    """Every shot pans right at 0.15 frame widths per second; shots join by dissolves and fades to black."""
    shots = [ShotSpec(frames=40, seed=200 + k, pan_x=0.15, n_objects=0) for k in range(6)]
    edits = [EditSpec("dissolve", 10), EditSpec("fade", 6), EditSpec("dissolve", 10), EditSpec("cut"),
             EditSpec("fade", 6)]
    return make_clip(media_dir / "moving_template.mp4", shots, edits, fps=FPS, width=W, height=H)


@pytest.fixture(scope="module")
def moving_job(tmp_path_factory, source_clip, moving_template):
    out = tmp_path_factory.mktemp("moving") / "out.mp4"
    style, _ = engine.extract(moving_template.path)
    path, plan = engine.apply(source_clip.path, style, out, Options())
    return style, path, plan


def test_template_transitions_and_motion_are_extracted(moving_job):
    style, _, _ = moving_job
    assert style.transitions.counts == {"cut": 1, "fade": 2, "dissolve": 2}
    assert style.transitions.fade_color == "black"
    assert set(style.motion.kind_fractions) == {"pan_right"}
    assert style.motion.typical["pan_right"].pan_x == pytest.approx(0.15, rel=0.15)


def test_plan_uses_the_template_transitions(moving_job):
    style, _, plan = moving_job
    kinds = [s.transition_in.kind for s in plan.segments[1:]]
    assert len(kinds) >= 4
    for kind in ("fade", "dissolve", "cut"):
        share = kinds.count(kind) / len(kinds)
        assert abs(share - style.transitions.fractions[kind]) <= 1.0 / len(kinds) + 1e-9, (kind, kinds)
    for seg in plan.segments[1:]:
        if seg.transition_in.kind == "dissolve":
            assert seg.transition_in.frames == pytest.approx(10, abs=2)


def test_rendered_output_shows_dissolves_fades_and_pans(moving_job):
    _, path, plan = moving_job
    out = analyze_file(path)
    found = {t.kind for t in out.transitions}
    planned = {s.transition_in.kind for s in plan.segments[1:]}
    assert {"fade", "dissolve"} & planned <= found, (found, planned)
    # The synthetic camera pans right like the template's: the content moves left in most output shots.
    long_shots = [s for s in out.shots if s.end_s - s.start_s >= 0.6]
    pans = [s for s in long_shots if s.motion.kind == "pan_right"]
    assert len(pans) >= 0.6 * len(long_shots), [s.motion.kind for s in long_shots]
    speeds = [s.motion.pan_x for s in pans]
    assert np.median(speeds) == pytest.approx(0.15, rel=0.35), speeds


def test_overscan_keeps_moves_inside_the_source(moving_job):
    _, _, plan = moving_job
    for seg in plan.segments:
        assert 1.0 <= seg.motion.overscan <= 1.3 + 1e-6


def test_stylejson_round_trip_and_strictness(moving_job):
    style, _, _ = moving_job
    text = style.model_dump_json()
    assert StyleJSON.model_validate_json(text) == style
    data = json.loads(text)
    data["color"]["surprise"] = 1
    with pytest.raises(ValidationError):
        StyleJSON.model_validate(data)
    data = json.loads(text)
    data["schema_version"] = "2.0"
    with pytest.raises(ValidationError):
        StyleJSON.model_validate(data)
    lut = style.color.look_lut.to_array()
    assert lut.shape == (33, 33, 33, 3) and np.isfinite(lut).all()


def test_template_without_audio_gives_null_audio_with_reason(moving_job):
    style, _, _ = moving_job
    assert style.audio is None
    assert "audio" in style.meta.failures and "no audio" in style.meta.failures["audio"]
    assert style.color is not None and style.pacing is not None


def test_options_are_strict():
    with pytest.raises(OptionsError, match="transfer.colour"):
        parse_options({"transfer": {"colour": False}})
    with pytest.raises(OptionsError, match="strength"):
        parse_options('{"strength": 1.5}')
    with pytest.raises(OptionsError, match="not valid JSON"):
        parse_options("{strength: 1}")
    with pytest.raises(OptionsError, match="preset"):
        parse_options({"output": {"preset": "warp9"}})
    opts = parse_options({"output": {"width": 641}, "max_duration_s": 3})
    assert opts.output.width == 640 and opts.max_duration_s == 3
    # no coercion of look-alikes: "off" is not false, "3" is not 3, true is not a strength
    for bad, field in (('{"transfer": {"color": "off"}}', "transfer.color"), ('{"seed": "3"}', "seed"),
                       ('{"strength": true}', "strength"), ('{"output": {"width": "640"}}', "output.width")):
        with pytest.raises(OptionsError, match=field):
            parse_options(bad)


def test_max_duration_and_output_size(tmp_path, source_clip, moving_job):
    style, _, _ = moving_job
    opts = Options.model_validate({"max_duration_s": 3.0, "output": {"width": 160}})
    path, plan = engine.apply(source_clip.path, style, tmp_path / "short.mp4", opts)
    from stylecast.media.probe import probe

    info = probe(path)
    assert (info.display_width, info.display_height) == (160, 90)
    assert info.duration_s == pytest.approx(3.0, abs=1.5 / FPS)


def test_strength_zero_keeps_the_source_look(tmp_path, source_clip, moving_job):
    style, _, _ = moving_job
    opts = Options.model_validate({"strength": 0.0, "transfer": {"pacing": False, "motion": False,
                                                                 "transitions": False, "framing": False}})
    path, plan = engine.apply(source_clip.path, style, tmp_path / "s0.mp4", opts)
    from stylecast.media.decode import read_frames

    _, a = read_frames(source_clip.path)
    _, b = read_frames(path)
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / mse) >= 35


def test_only_perceptible_moves_are_applied(moving_job):
    """The template pans right and nothing else: the plan applies its pan, not the estimation noise in the
    other components (it would only soften the picture); a static kind is applied as no move at all."""
    from stylecast.analysis.motion import STATIC_SPEED
    from stylecast.plan import _motion_effects

    style, _, plan = moving_job
    typical = style.motion.typical["pan_right"]
    assert typical.zoom_rate != 0.0 or typical.rotation_deg_s != 0.0 or typical.pan_y != 0.0  # noise is there
    for seg in plan.segments:
        m = seg.motion
        assert m.pan_x == pytest.approx(typical.pan_x)
        assert m.pan_y == 0.0 and m.zoom_rate == 0.0 and m.rotation_deg_s == 0.0
    # a "static" kind whose measured medians drift a little, and a pan with a real zoom
    static = typical.model_copy(update={"kind": "static", "pan_x": 0.3 * STATIC_SPEED, "zoom_rate": 0.001,
                                        "rotation_deg_s": 0.05, "shake_amp": 0.002, "shake_hz": 3.0})
    zooming_pan = typical.model_copy(update={"zoom_rate": 0.3})
    motion = style.motion.model_copy(update={"kind_fractions": {"static": 0.5, "pan_right": 0.5},
                                             "typical": {"static": static, "pan_right": zooming_pan}})
    effects = _motion_effects(style.model_copy(update={"motion": motion}), Options(), [1.0, 1.0, 1.0, 1.0])
    assert {e.kind for e in effects} == {"static", "pan_right"}
    for e in effects:
        if e.kind == "static":
            assert e.is_identity
        else:
            assert e.pan_x == pytest.approx(typical.pan_x) and e.zoom_rate == pytest.approx(0.3)


def test_hand_edited_motion_renders_or_stays_still(moving_job, source_clip, tmp_path):
    """Valid but odd motion groups: kinds listed at share 0 (and without typical parameters) are never
    chosen; a wild zoom rate is damped to at most MAX_ZOOM_RANGE over a segment instead of overflowing."""
    import math

    from stylecast.plan import MAX_ZOOM_RANGE, _motion_effects

    style, _, _ = moving_job
    zero = style.motion.model_copy(update={"kind_fractions": {k: 0.0 for k in style.motion.kind_fractions},
                                           "typical": {}})
    zero_style = StyleJSON.model_validate(style.model_copy(update={"motion": zero}).model_dump(mode="json"))
    assert all(e.is_identity for e in _motion_effects(zero_style, Options(), [1.0, 2.0, 0.5]))

    wild = style.motion.model_copy(update={"typical": {
        k: p.model_copy(update={"zoom_rate": 1000.0}) for k, p in style.motion.typical.items()}})
    wild_style = StyleJSON.model_validate(style.model_copy(update={"motion": wild}).model_dump(mode="json"))
    opts = Options.model_validate({"output": {"width": 96, "preset": "ultrafast"}})
    for doc in (zero_style, wild_style):
        out, plan = engine.apply(source_clip.path, doc, tmp_path / "o.mp4", opts)
        for seg in plan.segments:
            duration = seg.n_frames / plan.output.fps
            assert abs(seg.motion.zoom_rate) * duration <= math.log(MAX_ZOOM_RANGE) + 1e-9
            assert 1.0 <= seg.motion.overscan <= 1.3 + 1e-6
