"""Unusable inputs, as the source and as the template of ``stylecast run``: a non-zero exit, one line naming the
file and its problem, and nothing written where the output would go (no partial or temporary files either)."""
from __future__ import annotations

import hashlib
import random
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from stylecast import cli
from stylecast.style import StyleJSON
from stylecast.synth_clip import ShotSpec, make_clip, teal_orange

from .conftest import write_h264

W, H, FPS = 160, 90, 25.0


# ------------------------------------------------------------------------------------------------ the files
def _boxes(data: bytes):
    """Top-level MP4 boxes: (type, offset, size)."""
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
        elif size == 0:
            size = len(data) - i
        yield kind.decode("latin-1"), i, size
        i += size


def _write_sine_m4a(path: Path, seconds: float = 2.0, sr: int = 48000) -> None:
    n = int(seconds * sr)
    x = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(n) / sr)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sr)
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sr, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _video_packets(path: Path) -> list[tuple[int, int, bool]]:
    """(byte offset, size, is keyframe) of each video packet."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size, p.is_keyframe) for p in c.demux(video=0) if p.size and p.pos is not None]


def _overwrite(data: bytes, at: int, n: int, seed: int) -> bytes:
    out = bytearray(data)
    out[at:at + n] = random.Random(seed).randbytes(n)
    return bytes(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_input")
    # 3.2 s: more than one GOP, so a keyframe lies in the middle of the file (the "concealed" case needs one).
    src = make_clip(d / "good_source.mp4", [ShotSpec(frames=40, seed=1, palette="green", pan_x=0.04),
                                            ShotSpec(frames=40, seed=2, palette="urban")],
                    fps=FPS, width=W, height=H, bpm=120, audio_level_dbfs=-20.0)
    tpl = make_clip(d / "good_template.mp4", [ShotSpec(frames=20, seed=5, palette="cool", pan_x=0.3),
                                              ShotSpec(frames=20, seed=6, palette="sunset")],
                    fps=FPS, width=W, height=H, grade=teal_orange)
    data = src.path.read_bytes()
    f = {"good_source": src.path, "good_template": tpl.path}

    f["text"] = d / "notes.mp4"
    f["text"].write_text("This is a text file with a video's name.\n" * 20)
    f["empty"] = d / "empty.mp4"
    f["empty"].write_bytes(b"")
    f["truncated"] = d / "truncated.mp4"
    f["truncated"].write_bytes(data[: int(len(data) * 0.3)])
    f["random"] = d / "noise.mp4"
    f["random"].write_bytes(random.Random(1).randbytes(60_000))
    f["audio_only"] = d / "sine.m4a"
    _write_sine_m4a(f["audio_only"])
    # A real clip with 4 KB in the middle of its media data overwritten, from the start of a video packet (its
    # NAL length prefixes included): the container is intact, the decoder fails on those frames.
    mdat = [(off, size) for kind, off, size in _boxes(data) if kind == "mdat"]
    assert mdat, "the synthetic clip has no mdat box"
    off, size = mdat[0]
    packets = _video_packets(src.path)
    mid = min(packets, key=lambda p: abs(p[0] - (off + size // 2)))
    f["undecodable"] = d / "damaged_frame.mp4"
    f["undecodable"].write_bytes(_overwrite(data, mid[0], 4096, seed=0))
    # Garbage inside the slice data of the keyframe in the middle (its headers intact): FFmpeg conceals the
    # damage and flags the frame corrupt instead of failing.
    key = [p for p in packets if p[2] and p[0] > off + size // 4][0]
    assert key[1] > 3000, key
    f["concealed"] = d / "damaged_keyframe.mp4"
    f["concealed"].write_bytes(_overwrite(data, key[0] + 512, key[1] - 600, seed=1))
    f["missing"] = d / "does_not_exist.mp4"
    # Audio with cover art: its only video stream is one attached picture (made by ffmpeg: PyAV cannot mark it).
    import imageio_ffmpeg

    f["cover_art"] = d / "song_with_cover.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(f["audio_only"]), "-f", "lavfi",
                    "-i", "color=red:s=64x64", "-frames:v", "1", "-map", "0:a", "-map", "1:v", "-c:a", "copy",
                    "-c:v", "png", "-disposition:v", "attached_pic", str(f["cover_art"])], check=True)
    return f


# What the one line must say about each kind of file (besides its name); any of the words.
PROBLEM_WORDS = {
    "text": ["not a readable media file", "invalid data"],
    "empty": ["empty", "0 bytes"],
    "truncated": ["truncated", "damaged"],
    "random": ["not a readable media file", "invalid data"],
    "audio_only": ["audio-only", "no video"],
    "undecodable": ["undecodable", "damaged", "does not decode", "corrupt"],
    "missing": ["no such file", "not found", "does not exist"],
    "cover_art": ["cover picture"],
    "concealed": ["undecodable", "damaged", "does not decode", "corrupt"],
}

def kinds():
    return list(PROBLEM_WORDS)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(rc: int, stdout: str, err: str, name: str, words: list[str]) -> str:
    assert rc != 0
    assert stdout == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    line = lines[0]
    assert line.startswith("stylecast: error: ") and "Traceback" not in err, line
    assert name in line, (name, line)
    assert any(w in line.lower() for w in words), (words, line)
    assert "(run with --debug" not in line, f"a known bad input should not look like an internal error: {line}"
    return line


def run_main(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["-q", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("role", ["source", "template"])
@pytest.mark.parametrize("kind", kinds())
def test_bad_input_is_refused_with_one_line(kind, role, files, tmp_path, capsys):
    bad = files[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, style_json = out_dir / "result.mp4", out_dir / "style.json"
    inputs = (bad, files["good_template"]) if role == "source" else (files["good_source"], bad)
    before = {k: sha(p) for k, p in files.items() if p.exists()}
    rc, stdout, err = run_main(capsys, "run", *inputs, "-o", out, "--style-json", style_json)
    assert_refused(rc, stdout, err, bad.name, PROBLEM_WORDS[kind])
    assert rc == 1
    # Nothing at the output path, and no segment, partial or temporary file beside it.  Damage past the first
    # frame of a source shows only when the source is analysed, after the (good) template's StyleJSON was
    # written: that file may be there, but then complete and valid.
    left = sorted(p.name for p in out_dir.iterdir())
    assert not out.exists()
    assert left in ([], ["style.json"]), left
    if left:
        assert role == "source"
        StyleJSON.model_validate_json(style_json.read_text())
    # The inputs are untouched.
    assert {k: sha(p) for k, p in files.items() if p.exists()} == before
    if role == "template":
        # A bad template must fail before any work on the source: no StyleJSON was written.
        assert not style_json.exists()


@pytest.mark.parametrize("kind,role", [("truncated", "source"), ("audio_only", "template")])
def test_bad_input_in_a_real_process(kind, role, files, tmp_path):
    bad = files[kind]
    out = tmp_path / "result.mp4"
    inputs = (bad, files["good_template"]) if role == "source" else (files["good_source"], bad)
    proc = subprocess.run([sys.executable, "-m", "stylecast.cli", "run", *map(str, inputs), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    # Progress lines ("stage …") may precede it on a non-terminal; the error itself is the last, single line.
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("stylecast:")]
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(err_lines) == 1, proc.stderr
    assert_refused(proc.returncode, proc.stdout, err_lines[0], bad.name, PROBLEM_WORDS[kind])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["source", "template"])
@pytest.mark.parametrize("spelling", ["same", "dotted"])
def test_output_over_an_input_is_refused(which, spelling, files, tmp_path, capsys):
    target = files["good_" + which]
    out = target if spelling == "same" else target.parent / "." / ".." / target.parent.name / target.name
    before = sha(target)
    rc, stdout, err = run_main(capsys, "run", files["good_source"], files["good_template"], "-o", out)
    assert_refused(rc, stdout, err, target.name, ["overwrite"])
    assert sha(target) == before


@pytest.mark.parametrize("name", ["result.mov", "result.mkv", "result", "result.mp4.json", "result.MP3"])
def test_non_mp4_output_is_refused(name, files, tmp_path, capsys):
    out = tmp_path / name
    rc, stdout, err = run_main(capsys, "run", files["good_source"], files["good_template"], "-o", out)
    assert_refused(rc, stdout, err, name, [".mp4"])
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_directory_is_refused(files, tmp_path, capsys):
    out = tmp_path / "folder.mp4"
    out.mkdir()
    rc, stdout, err = run_main(capsys, "run", files["good_source"], files["good_template"], "-o", out)
    assert_refused(rc, stdout, err, "folder.mp4", ["directory"])
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_file_that_cannot_be_reached_is_input_unavailable_and_bad_content_is_not(tmp_path):
    # On a cluster the first means a node without the media share (the job's other nodes take its chunks);
    # the second is the file's own fault (the job fails at once).  Both are MediaErrors to a user.
    from stylecast.errors import InputUnavailable, MediaError
    from stylecast.media.decode import iter_frames
    from stylecast.media.probe import probe

    with pytest.raises(InputUnavailable, match="no such file"):
        probe(tmp_path / "gone.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01" * 4096)
    with pytest.raises(MediaError) as e:
        probe(garbage)
    assert not isinstance(e.value, InputUnavailable)
    clip = tmp_path / "clip.mp4"
    write_h264(clip, [(k, np.zeros((32, 32, 3), np.uint8)) for k in range(3)], rate=10)
    info = probe(clip)
    clip.unlink()  # probed on the driver, gone where the worker runs
    with pytest.raises(InputUnavailable, match="cannot open"):
        next(iter_frames(clip, 0.0, None, info=info))
