"""Inputs and options at the edges: clips of a few frames, caps shorter than a frame, sizes derived from one side,
and output paths that cannot be written or would overwrite an input.  Each gives a valid output or a one-line
reason, before any work where the reason is known up front."""
from __future__ import annotations

import hashlib
import math
import shutil

import pytest

from stylecast import engine
from stylecast.errors import MediaError, OptionsError
from stylecast.media.probe import probe
from stylecast.options import Options
from stylecast.synth_clip import ShotSpec, make_clip, teal_orange

from .conftest import write_h264

FPS = 25.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    one = make_clip(d / "one.mp4", [ShotSpec(frames=1, seed=1)], fps=FPS, width=64, height=36)
    three = make_clip(d / "three.mp4", [ShotSpec(frames=3, seed=2)], fps=FPS, width=64, height=36)
    tpl = make_clip(d / "tpl.mp4", [ShotSpec(frames=6, seed=3, palette="warm"), ShotSpec(frames=6, seed=4),
                                    ShotSpec(frames=6, seed=5, palette="cool")],
                    fps=FPS, width=64, height=36, grade=teal_orange, bpm=120)
    src = make_clip(d / "src.mp4", [ShotSpec(frames=25, seed=6), ShotSpec(frames=25, seed=7, palette="urban")],
                    fps=FPS, width=64, height=36, bpm=120)
    return {"one": one.path, "three": three.path, "tpl": tpl.path, "src": src.path, "dir": d}


@pytest.fixture(scope="module")
def style(clips):
    return engine.extract(clips["tpl"], workers=1)[0]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_one_frame_source_gives_a_one_frame_output(clips, style, tmp_path):
    from stylecast.analyze import analyze_file

    shot = analyze_file(clips["one"]).shots[0]
    assert shot.end_s - shot.start_s == pytest.approx(1 / FPS)  # one frame lasts a frame, not 0 s
    _, plan = engine.apply(clips["one"], style, tmp_path / "o.mp4", workers=1)  # pacing on: nothing to re-cut
    assert plan.output.frame_count == 1 and probe(tmp_path / "o.mp4").frame_count == 1


def test_a_source_too_short_to_recut_keeps_its_timeline(clips, style, tmp_path):
    _, plan = engine.apply(clips["three"], style, tmp_path / "o.mp4", workers=1)
    assert plan.output.frame_count == 3


def test_max_duration_is_never_exceeded_and_a_cap_under_a_frame_is_refused(clips, style, tmp_path):
    for cap in (0.19, 0.5, 1.01):
        _, plan = engine.apply(clips["src"], style, tmp_path / "o.mp4", Options(max_duration_s=cap), workers=1)
        assert plan.output.frame_count == math.floor(cap * FPS + 1e-6), cap
    with pytest.raises(OptionsError, match="max_duration_s 0.001 is shorter than one output frame"):
        engine.apply(clips["src"], style, tmp_path / "none.mp4", Options(max_duration_s=0.001), workers=1)
    assert not (tmp_path / "none.mp4").exists()


def test_a_side_derived_from_the_other_stays_in_range(clips, style, tmp_path):
    wide = make_clip(tmp_path / "wide.mp4", [ShotSpec(frames=3, seed=8)], fps=FPS, width=640, height=16)
    with pytest.raises(OptionsError, match=r"output.width 64 makes the height 2 px .* set output.height too"):
        engine.apply(wide.path, style, tmp_path / "w.mp4", Options.model_validate({"output": {"width": 64}}),
                     workers=1)
    _, plan = engine.apply(clips["src"], style, tmp_path / "ok.mp4",
                           Options.model_validate({"output": {"height": 18}, "max_duration_s": 0.2}), workers=1)
    assert (plan.output.width, plan.output.height) == (32, 18)


def test_the_engine_never_overwrites_an_input(clips, tmp_path):
    victim = tmp_path / "victim.mp4"
    shutil.copy(clips["src"], victim)
    before = _sha(victim)
    with pytest.raises(MediaError, match="would overwrite"):
        engine.run(victim, clips["tpl"], victim, workers=1)
    with pytest.raises(MediaError, match="would overwrite"):
        engine.run(victim, clips["tpl"], tmp_path / "o.mp4", style_json_path=victim, workers=1)
    assert _sha(victim) == before


@pytest.mark.parametrize("where", ["file_as_folder", "proc"])
def test_unwritable_output_paths_are_refused_before_any_work(clips, tmp_path, where):
    from stylecast.cli import main

    out = tmp_path / "afile.mp4" / "o.mp4" if where == "file_as_folder" else "/proc/stylecast-test.mp4"
    (tmp_path / "afile.mp4").write_bytes(b"x")
    with pytest.raises(MediaError, match="cannot write"):
        engine.run(clips["src"], clips["tpl"], out, workers=1)
    assert main(["-q", "run", str(clips["src"]), str(clips["tpl"]), "-o", str(out)]) == 1


def test_an_output_path_naming_a_folder_is_refused(clips, tmp_path, capsys):
    from stylecast.cli import main

    assert main(["-q", "run", str(clips["src"]), str(clips["tpl"]), "-o", f"{tmp_path}/new.mp4/"]) == 1
    assert "names a folder" in capsys.readouterr().err
    assert not (tmp_path / "new.mp4").exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_leaves_no_files_behind(clips, tmp_path, sig):
    """Killed while rendering (once its first segment file exists), the command removes what it wrote."""
    import signal
    import subprocess
    import sys
    import time

    src = make_clip(tmp_path / "long.mp4", [ShotSpec(frames=250, seed=9), ShotSpec(frames=250, seed=10)],
                    fps=FPS, width=320, height=180)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "stylecast.cli", "-q", "run", str(src.path), str(clips["tpl"]),
                             "-o", str(out_dir / "o.mp4"), "--workers", "1",
                             "--options", '{"transfer": {"pacing": false}, "output": {"fps": 50}}'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(out_dir.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it wrote anything"
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if sig == "SIGTERM" else 130), err
    assert list(out_dir.iterdir()) == []


def test_unreadable_option_files_and_chunk_lengths_get_one_line(clips, tmp_path, capsys):
    from stylecast.cli import main
    from stylecast.options import parse_options

    binary = tmp_path / "options.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(OptionsError, match="not a UTF-8 JSON file"):
        parse_options(f"@{binary}")
    for bad in ("inf", "1e-9", "0", "nan"):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", str(clips["src"]), "--chunk-seconds", bad])
        assert exc.value.code == 2, bad
        assert "--chunk-seconds" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"stylecast: error: {tmp_path}: is a directory, not a video file"


def test_a_clip_trimmed_without_reencoding_starts_where_its_edit_list_says(tmp_path):
    """``ffmpeg -ss T -c copy`` keeps the keyframe's GOP head and an edit list that drops it: the packets
    before the cut are in the file but never shown, so they are not part of the timeline."""
    from fractions import Fraction

    import av
    import numpy as np

    from stylecast.media.decode import read_frames

    whole = write_h264(tmp_path / "whole.mp4", [(i, np.full((48, 64, 3), 4 * i, np.uint8)) for i in range(60)],
                       rate=30, options={"crf": "18", "x264-params": "keyint=60:bframes=0"})
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(whole)) as src, av.open(str(trimmed), "w") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        shift = int(Fraction(20, 30) / ist.time_base)  # the first 20 frames come before time 0
        for packet in src.demux(ist):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = ost
            dst.mux(packet)
    info = probe(trimmed)
    assert info.frame_count == 40 and info.start_time_s == 0.0
    assert math.isclose(info.duration_s, 40 / 30)
    times, frames = read_frames(trimmed)
    assert len(times) == 40 and times[0] == 0.0
    assert abs(int(frames[0].mean()) - 80) <= 2  # frame 20 of the whole clip is the first one shown


def test_the_default_video_stream_is_used_when_a_still_comes_first(tmp_path):
    """An MKV whose first video stream is a one-picture still (not flagged as a cover) and whose second is
    the default-flagged video: probe and decode read the video, as players do."""
    import av
    import numpy as np

    from stylecast.media.decode import read_frames

    path = tmp_path / "still_first.mkv"
    with av.open(str(path), "w") as c:
        still = c.add_stream("libx264", rate=1)
        video = c.add_stream("libx264", rate=25)
        for s, (w, h) in ((still, (32, 32)), (video, (64, 48))):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {"preset": "ultrafast"}
        still.disposition = av.stream.Disposition(0)
        video.disposition = av.stream.Disposition.default
        for s, n, size in ((still, 1, (32, 32)), (video, 20, (48, 64))):
            for i in range(n):
                f = av.VideoFrame.from_ndarray(np.full((*size, 3), 100, np.uint8), format="rgb24")
                f.pts = i
                for packet in s.encode(f):
                    c.mux(packet)
            for packet in s.encode(None):
                c.mux(packet)
    info = probe(path)
    assert (info.display_width, info.display_height, info.frame_count) == (64, 48, 20)
    times, frames = read_frames(path)
    assert len(times) == 20 and frames.shape[1:3] == (48, 64)
