"""Every real clip in ../shared/media renders (look only, small output) with the source's display aspect (after
rotation and sample aspect), orientation, frame rate and length.  Skipped when ../shared/media is absent."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stylecast import engine
from stylecast.media.probe import ProbeInfo, probe
from stylecast.options import parse_options

pytestmark = [pytest.mark.shared_media, pytest.mark.slow]

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"  # as tests/conftest.py's SHARED_MEDIA
TEMPLATE = "bikes.mp4"
OPTIONS = {"transfer": {"pacing": False, "motion": False, "transitions": False}, "output": {"width": 256}}
KNOWN = [
    "bikes.mp4",
    "pyscenedetect/counter.mp4",
    "pyscenedetect/delayed_start.mp4",
    "pyscenedetect/fades.mp4",
    "pyscenedetect/goldeneye-vfr-drop3.mp4",
    "pyscenedetect/issue-134-rotate.mp4",
    "pyscenedetect/issue-195-aspect-ratio.mp4",
    "pyscenedetect/issue-236-split-copy.mkv",
    "pyscenedetect/testvideo.mp4",
]


def all_clips() -> list[str]:
    """Every clip there (a new one is picked up, and must pass too); the known list when the folder is absent."""
    if not MEDIA.is_dir():
        return KNOWN
    found = [MEDIA / "bikes.mp4", *(MEDIA / "pyscenedetect").glob("*.mp4"), *(MEDIA / "pyscenedetect").glob("*.mkv")]
    return sorted(str(p.relative_to(MEDIA)) for p in found if p.is_file())


CLIPS = all_clips()
def nominal_frame_s(path: Path) -> float:
    """The most common frame duration (a VFR clip's nominal frame)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = np.unique([p.pts for p in c.demux(s) if p.pts is not None and p.size])
        return float(np.median(np.diff(pts)) * s.time_base)


@pytest.fixture(scope="module")
def style(shared_media):
    style, _ = engine.extract(shared_media / TEMPLATE)
    return style


@pytest.fixture(scope="module")
def rendered(shared_media, style, tmp_path_factory):
    """name → (source probe, output probe); each clip is rendered once for all the tests below."""
    out_dir = tmp_path_factory.mktemp("real_clips")
    cache: dict[str, tuple[ProbeInfo, ProbeInfo]] = {}

    def get(name: str) -> tuple[ProbeInfo, ProbeInfo]:
        if name not in cache:
            src = shared_media / name
            out = out_dir / (name.replace("/", "__") + ".mp4")
            path, plan = engine.apply(src, style, out, parse_options(OPTIONS))
            assert Path(path) == out
            info = probe(out)
            assert info.frame_count == plan.output.frame_count
            cache[name] = (probe(src), info)
        return cache[name]

    return get


def test_every_known_clip_is_there(shared_media):
    missing = [n for n in KNOWN if not (shared_media / n).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("name", CLIPS)
def test_real_clip_keeps_aspect_orientation_and_length(name, rendered, shared_media):
    src, out = rendered(name)

    # Display aspect, after rotation and sample aspect ratio.
    assert out.sample_aspect_ratio == (1, 1) and out.rotation_deg == 0
    assert out.display_width == 256
    assert out.display_aspect == pytest.approx(src.display_aspect, rel=0.02), (src.display_width,
                                                                               src.display_height)
    assert (out.display_height > out.display_width) == (src.display_height > src.display_width)
    if name.endswith("issue-134-rotate.mp4"):
        assert src.rotation_deg in (90, 270)
        assert out.display_height > out.display_width, "the rotated clip must come out portrait"
    if name.endswith("issue-195-aspect-ratio.mp4"):
        assert src.sample_aspect_ratio == (16, 11)
        assert out.display_aspect == pytest.approx(1024 / 576, rel=0.02)

    # Length: within one frame (a VFR clip: within two of its nominal frames), starting at 0.
    if src.is_vfr:
        tol = 2 * nominal_frame_s(shared_media / name)
    else:
        tol = 1.0 / src.fps
        assert abs(out.frame_count - src.frame_count) <= 1, (out.frame_count, src.frame_count)
    assert abs(out.duration_s - src.duration_s) <= tol + 1e-6, (out.duration_s, src.duration_s, tol)
    assert out.start_time_s == pytest.approx(0.0, abs=1e-3)
    if name.endswith("delayed_start.mp4"):
        assert src.start_time_s > 1.0
        assert out.frame_count == 24

    # Sound comes through when there is sound, and lasts as long as the picture.
    assert (out.audio is not None) == (src.audio is not None)
    if out.audio is not None and out.audio.duration_s is not None:
        assert out.audio.duration_s == pytest.approx(out.duration_s, abs=0.05)


@pytest.mark.parametrize("name", CLIPS)
def test_real_clip_keeps_its_frame_rate(name, rendered):
    src, out = rendered(name)
    if src.is_vfr:
        assert abs(out.fps - src.fps) <= 1.0  # a constant rate near the average
    else:
        assert Fraction(out.fps).limit_denominator(1001) == Fraction(src.fps).limit_denominator(1001), \
            (out.fps, src.fps)


def _planes_as_rgb(frame) -> np.ndarray:
    """A DecodedPlanes frame as RGB with the kernel's reading (nearest chroma, exact matrix)."""
    from kernels.render_yuv import yuv_to_rgb

    y, u, v = (p.astype(np.float64) for p in frame.planes)
    h, w = y.shape
    u = np.repeat(np.repeat(u, 2, 0), 2, 1)[:h, :w]
    v = np.repeat(np.repeat(v, 2, 0), 2, 1)[:h, :w]
    return np.clip(yuv_to_rgb(np.stack([y, u, v], -1), frame.matrix, frame.full_range) * 255, 0, 255)


@pytest.mark.parametrize("name", all_clips())
def test_decoded_planes_show_what_the_rgb_frames_show(name, shared_media):
    """The render reads the decoder's planes, the analysis RGB frames: same orientation, size, times and
    colours (up to chroma interpolation at edges) for every real clip, rotated and non-square ones included."""
    import itertools

    from stylecast.media.decode import iter_frames
    from stylecast.render import decode_size_for

    path = shared_media / name
    info = probe(path)
    size = decode_size_for((320, 320 * info.display_height // info.display_width // 2 * 2), info)
    rgb_frames = list(itertools.islice(iter_frames(path, 0.5, info=info, size=size), 3))
    yuv_frames = list(itertools.islice(iter_frames(path, 0.5, info=info, size=size, planes=True), 3))
    assert len(rgb_frames) == len(yuv_frames) == 3
    for rgb, yuv in zip(rgb_frames, yuv_frames):
        assert yuv.time_s == rgb.time_s
        assert yuv.size == (rgb.rgb.shape[1], rgb.rgb.shape[0]) == size
        err = np.abs(_planes_as_rgb(yuv) - rgb.rgb)
        assert err.mean() < 3.0, err.mean()
