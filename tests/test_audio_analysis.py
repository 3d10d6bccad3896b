"""Audio analysis against synthetic ground truth: tempo/beats, loudness (BS.1770-4), cut/beat alignment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

from stylecast.analysis import audio as audio_mod
from stylecast.analysis.audio import (
    AudioFeatures,
    analyze_audio,
    beat_alignment,
    gain_db_to_target,
    integrated_loudness,
    k_weighting_coefficients,
)
from stylecast.synth_audio import drum_track, silence, sine, tone_bed


def _median_beat_error_s(detected: list[float], truth: np.ndarray) -> float:
    detected_arr = np.asarray(detected)
    return float(np.median(np.abs(detected_arr[:, None] - truth[None, :]).min(axis=1)))


def _recall(detected: list[float], truth: np.ndarray, tol_s: float = 0.05) -> float:
    """Fraction of true beats (ends excluded) with a detected beat within tol_s."""
    detected_arr = np.asarray(detected)
    inner = truth[1:-1]
    return float(np.mean([np.abs(detected_arr - t).min() <= tol_s for t in inner]))


# --- synthetic material ----------------------------------------------------------------


def test_drum_track_shape_level_and_determinism():
    samples, beats = drum_track(100.0, 6.0, 22050, seed=3, first_beat_s=0.25, level_dbfs=-18.0)
    assert samples.dtype == np.float32 and samples.shape == (2, 6 * 22050)
    assert np.abs(samples).max() <= 1.0
    rms_db = 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert abs(rms_db - (-18.0)) < 1.0
    np.testing.assert_allclose(beats, 0.25 + 0.6 * np.arange(10))
    again, _ = drum_track(100.0, 6.0, 22050, seed=3, first_beat_s=0.25, level_dbfs=-18.0)
    np.testing.assert_array_equal(samples, again)
    other, _ = drum_track(100.0, 6.0, 22050, seed=4, first_beat_s=0.25, level_dbfs=-18.0)
    assert not np.array_equal(samples, other)
    mono, _ = drum_track(100.0, 1.0, 22050, channels=1)
    assert mono.shape == (1, 22050)
    # Every beat carries a kick: energy right after a beat exceeds energy just before it.
    x = samples.astype(np.float64).mean(axis=0)
    for t in beats[1:]:
        i = int(t * 22050)
        assert np.sum(x[i : i + 441] ** 2) > 3 * np.sum(x[i - 441 : i] ** 2)


def test_tone_bed_and_silence_helpers():
    bed = tone_bed(5.0, 22050, seed=1, channels=2, level_dbfs=-20.0)
    assert bed.dtype == np.float32 and bed.shape == (2, 5 * 22050)
    assert abs(20 * np.log10(np.sqrt(np.mean(bed.astype(np.float64) ** 2))) + 20.0) < 1.0
    assert silence(0.5, 8000, channels=1).shape == (1, 4000)
    assert not silence(0.5, 8000).any()


# --- tempo and beats -------------------------------------------------------------------


@pytest.mark.parametrize("sr", [44100, 22050])
@pytest.mark.parametrize("bpm", [72.0, 96.0, 120.0, 128.0, 150.0, 174.0])
def test_tempo_within_two_percent_and_beats_on_time(bpm, sr):
    first_beat_s = 0.05 + (bpm % 7) * 0.03  # vary the phase between cases
    samples, truth = drum_track(bpm, 16.0, sr, seed=int(bpm), first_beat_s=first_beat_s)
    features = analyze_audio(samples, sr)
    assert features.tempo_bpm is not None
    assert abs(features.tempo_bpm - bpm) / bpm < 0.02, features.tempo_bpm
    assert _median_beat_error_s(features.beats_s, truth) < 0.025
    assert _recall(features.beats_s, truth) >= 0.9
    assert features.beat_strength > 0.5
    assert features.sample_rate == sr and features.duration_s == pytest.approx(16.0)
    assert features.lufs == pytest.approx(integrated_loudness(samples, sr))
    # Kick/snare/hat: between one onset per beat and three per beat (eighths + snare).
    beats_per_s = bpm / 60.0
    assert beats_per_s * 0.8 <= features.onset_density_per_s <= beats_per_s * 3.0


def test_tempo_mono_1d_input_and_late_start():
    samples, truth = drum_track(108.0, 12.0, 22050, channels=1, seed=9)
    padded = np.concatenate([np.zeros(3 * 22050, np.float32), samples[0]])  # 3 s of silence first
    features = analyze_audio(padded, 22050)
    assert features.tempo_bpm == pytest.approx(108.0, rel=0.02)
    assert min(features.beats_s) > 2.9
    assert _median_beat_error_s(features.beats_s, truth + 3.0) < 0.025


def test_tempo_survives_an_ambient_bed_under_the_drums():
    drums, truth = drum_track(132.0, 12.0, 22050, level_dbfs=-20.0, seed=2)
    bed = tone_bed(12.0, 22050, level_dbfs=-17.0, seed=2)
    features = analyze_audio(drums + bed, 22050)
    assert features.tempo_bpm == pytest.approx(132.0, rel=0.02)
    assert _median_beat_error_s(features.beats_s, truth) < 0.025


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_tempo_on_tone_bed(seed):
    features = analyze_audio(tone_bed(20.0, 22050, seed=seed), 22050)
    assert features.tempo_bpm is None and features.beats_s == []
    assert features.beat_strength < 0.2
    assert features.lufs is not None
    assert features.onset_density_per_s < 0.5


def test_no_tempo_on_irregular_hits():
    # Kicks at random (Poisson) times: plenty of onsets but no pulse.
    sr = 22050
    rng = np.random.default_rng(5)
    regular, _ = drum_track(120.0, 0.3, sr, channels=1)  # first 0.3 s: one kick hit
    hit = regular[0, : int(0.3 * sr)]
    x = np.zeros(20 * sr, np.float32)
    for t in rng.uniform(0.0, 19.5, 60):
        i = int(t * sr)
        x[i : i + hit.size] += hit
    features = analyze_audio(x, sr)
    assert features.tempo_bpm is None and features.beats_s == []
    assert features.onset_density_per_s > 1.0


@pytest.mark.parametrize(
    "samples",
    [silence(10.0, 22050), np.zeros((2, 0), np.float32), np.zeros(0, np.float32), silence(0.01, 22050)],
    ids=["silence", "empty-2d", "empty-1d", "10ms"],
)
def test_silence_and_empty_give_no_tempo_and_no_loudness(samples):
    features = analyze_audio(samples, 22050)
    assert features.tempo_bpm is None and features.beats_s == []
    assert features.lufs is None and features.beat_strength == 0.0 and features.onset_density_per_s == 0.0


def test_short_clip_has_no_tempo_but_has_loudness():
    samples, _ = drum_track(120.0, 1.5, 22050)
    features = analyze_audio(samples, 22050)
    assert features.tempo_bpm is None and features.beats_s == []
    assert features.lufs is not None and features.duration_s == pytest.approx(1.5)


def test_audio_features_model_forbids_extra_fields_and_round_trips():
    features = analyze_audio(drum_track(120.0, 4.0, 22050)[0], 22050)
    assert AudioFeatures.model_validate_json(features.model_dump_json()) == features
    with pytest.raises(pydantic.ValidationError):
        AudioFeatures(sample_rate=22050, bogus=1)


# --- loudness --------------------------------------------------------------------------


def test_k_weighting_matches_bs1770_table_at_48k():
    (b1, a1), (b2, a2) = k_weighting_coefficients(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("sr", [48000, 44100, 22050])
def test_full_scale_sine_reference_levels(sr):
    # BS.1770: a 0 dBFS 997 Hz sine in both channels of a stereo pair reads 0.0 LUFS,
    # in one channel only -3.01 LUFS (half the power).
    assert integrated_loudness(sine(997.0, 5.0, sr), sr) == pytest.approx(0.0, abs=0.1)
    assert integrated_loudness(sine(997.0, 5.0, sr, active_channels=(0,)), sr) == pytest.approx(-3.01, abs=0.1)


def _concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts, axis=1)


def test_ebu_tech_3341_gating_cases():
    sr = 48000

    def tone(level_dbfs: float, seconds: float) -> np.ndarray:
        return sine(1000.0, seconds, sr, peak_dbfs=level_dbfs)

    # Cases 1/2: steady stereo 1 kHz at -23 / -33 dBFS reads -23 / -33 LUFS.
    assert integrated_loudness(tone(-23, 20), sr) == pytest.approx(-23.0, abs=0.1)
    assert integrated_loudness(tone(-33, 20), sr) == pytest.approx(-33.0, abs=0.1)
    # Case 3: quiet parts below the relative gate are ignored.
    assert integrated_loudness(_concat(tone(-36, 10), tone(-23, 60), tone(-36, 10)), sr) == pytest.approx(-23.0, abs=0.1)
    # Case 4: -72 dBFS parts fall under the absolute gate.
    case4 = _concat(tone(-72, 10), tone(-36, 10), tone(-23, 60), tone(-36, 10), tone(-72, 10))
    assert integrated_loudness(case4, sr) == pytest.approx(-23.0, abs=0.1)
    # Case 5: -26 / -20 / -26 dBFS, all above the relative gate, average to -23.
    assert integrated_loudness(_concat(tone(-26, 20), tone(-20, 20.1), tone(-26, 20)), sr) == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize("gain", [0.5, 0.1, 1.7])
def test_loudness_shifts_exactly_with_gain(gain):
    samples, _ = drum_track(120.0, 6.0, 44100, level_dbfs=-20.0)
    reference = integrated_loudness(samples, 44100)
    scaled = integrated_loudness(samples.astype(np.float64) * gain, 44100)
    assert scaled - reference == pytest.approx(20 * np.log10(gain), abs=1e-6)
    assert gain_db_to_target(samples, 44100, -23.0) == pytest.approx(-23.0 - reference)


def test_loudness_is_none_when_everything_is_gated():
    assert integrated_loudness(silence(3.0, 48000), 48000) is None
    assert integrated_loudness(sine(1000.0, 0.39, 48000), 48000) is None  # shorter than one block
    assert integrated_loudness(sine(1000.0, 3.0, 48000, peak_dbfs=-80.0), 48000) is None  # below -70 LUFS
    assert integrated_loudness(np.zeros((2, 0), np.float32), 48000) is None
    assert gain_db_to_target(silence(3.0, 48000), 48000, -14.0) is None


# --- cut / beat alignment --------------------------------------------------------------


def test_beat_alignment_high_for_cuts_on_beats():
    beats = 0.3 + 0.5 * np.arange(60)
    rng = np.random.default_rng(0)
    cuts = rng.choice(beats, 25, replace=False) + rng.uniform(-0.02, 0.02, 25)
    assert beat_alignment(cuts, beats) > 0.95
    # One cut in five off the beat still scores well above chance but below perfect.
    off = cuts.copy()
    off[::5] += 0.25
    assert 0.6 < beat_alignment(off, beats) < 0.9


def test_beat_alignment_near_zero_for_random_and_offbeat_cuts():
    beats = 0.3 + 0.5 * np.arange(60)
    rng = np.random.default_rng(1)
    random_cuts = rng.uniform(0.0, 30.0, 400)
    assert beat_alignment(random_cuts, beats) < 0.12
    assert beat_alignment(beats[:20] + 0.25, beats) == 0.0  # exactly off-beat


def test_beat_alignment_degenerate_inputs():
    assert beat_alignment([], [0.0, 0.5, 1.0]) == 0.0
    assert beat_alignment([0.5], []) == 0.0
    assert beat_alignment([0.5], [0.5]) == 0.0  # one beat: no period
    assert beat_alignment([100.0], [0.0, 0.5, 1.0]) == 0.0  # cut outside the music
    assert beat_alignment([0.5], [0.0, 0.1, 0.2]) == 0.0  # tolerance covers the whole period


def test_beats_from_analysis_align_with_cuts_on_true_beats():
    samples, truth = drum_track(120.0, 12.0, 22050, seed=7)
    features = analyze_audio(samples, 22050)
    assert beat_alignment(truth[2:-2:3], features.beats_s) > 0.9
    assert beat_alignment(truth[2:-2:3] + 0.25, features.beats_s) < 0.1


# --- runtime re-implementations vs the librosa / scipy references ----------------------
# The module avoids importing librosa (its onset/feature modules compile Numba gufuncs at import,
# ~2.3 s per process) and scipy.signal (~1 s).  These tests hold its own pieces to the references.

SR = audio_mod.ANALYSIS_SR


def _clicks(bpm: float, seconds: float, sr: int = SR, extra: int = 0) -> np.ndarray:
    y = np.zeros(int(seconds * sr) + extra, np.float32)
    click = np.hanning(64).astype(np.float32) * np.sin(np.arange(64) * 0.9).astype(np.float32)
    for t in np.arange(0.1, seconds - 0.05, 60.0 / bpm):
        i = int(t * sr)
        y[i : i + 64] += click
    return y


def _noise_bursts(seconds: float, extra: int = 0) -> np.ndarray:
    rng = np.random.default_rng(11)
    y = np.zeros(int(seconds * SR) + extra, np.float32)
    for t in rng.uniform(0.0, seconds - 0.2, 12):
        i = int(t * SR)
        n = int(rng.uniform(0.01, 0.15) * SR)
        y[i : i + n] += (rng.standard_normal(n) * rng.uniform(0.05, 0.5) * np.exp(-np.arange(n) / (0.3 * n))).astype(
            np.float32
        )
    return y


def _sweep(seconds: float, extra: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR) + extra) / SR
    return (0.3 * np.sin(2 * np.pi * (40.0 * t + (9000.0 - 40.0) / (2 * seconds) * t * t))).astype(np.float32)


def _one_click(seconds: float, extra: int = 0) -> np.ndarray:
    y = np.zeros(int(seconds * SR) + extra, np.float32)
    y[int(0.6 * y.size) : int(0.6 * y.size) + 40] = 0.8
    return y


_ENVELOPE_SIGNALS = {
    "clicks-120bpm": lambda: _clicks(120.0, 4.0),
    "clicks-97bpm-odd-length": lambda: _clicks(97.0, 3.0, extra=131),
    "drums-drum_track": lambda: drum_track(128.0, 3.0, SR, channels=1, seed=4)[0][0],
    "noise-bursts": lambda: _noise_bursts(3.0, extra=77),
    "sine-sweep": lambda: _sweep(2.5, extra=255),
    "silence+one-click": lambda: _one_click(2.0, extra=1),
    "one-window": lambda: _noise_bursts(1.0)[:1024],
    "one-window+1": lambda: _sweep(1.0)[:1025],
    "all-zero": lambda: np.zeros(3000, np.float32),
}


@pytest.mark.parametrize("name", list(_ENVELOPE_SIGNALS))
def test_onset_envelope_matches_librosa_onset_strength(name):
    import librosa

    y = _ENVELOPE_SIGNALS[name]()
    ref = librosa.onset.onset_strength(y=y, sr=SR, hop_length=audio_mod._HOP, n_fft=audio_mod._N_FFT)
    mine = audio_mod._onset_envelope(y)
    assert mine.dtype == np.float64 and mine.shape == ref.shape == (1 + y.size // audio_mod._HOP,)
    # librosa works in float32 (complex64 STFT, float32 mel); this is float64.  The envelope peaks
    # at tens of dB-units, the differences stay at float32 rounding level.
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-4)


def test_mel_filterbank_and_window_match_librosa():
    import librosa
    import scipy.signal

    for sr, n_fft in [(SR, audio_mod._N_FFT), (16000, 512), (44100, 2048)]:
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft)  # float32
        mine = audio_mod._mel_filterbank(sr, n_fft)
        assert mine.shape == ref.shape
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-9)
        assert not mine.flags.writeable  # cached: must not be mutated by callers
    np.testing.assert_array_equal(audio_mod._hann(1024), scipy.signal.get_window("hann", 1024, fftbins=True))


def _envelopes_for_peak_pick():
    rng = np.random.default_rng(123)
    yield "uniform", rng.uniform(0.0, 5.0, 700)
    yield "sparse-spikes", np.where(rng.random(900) < 0.08, rng.uniform(1.0, 8.0, 900), 0.0)
    # Integer values: plateaus (ties for the maximum) and means landing exactly on x - delta.
    yield "integer-plateaus", rng.integers(0, 4, 800).astype(np.float64)
    yield "integer-runs", np.repeat(rng.integers(0, 6, 120), rng.integers(1, 5, 120)).astype(np.float64)
    yield "short", np.array([3.0, 0.0, 0.0, 2.0, 5.0])
    yield "peak-at-0", np.concatenate([[9.0], np.zeros(30), [9.0, 9.0], np.zeros(5)])
    yield "constant", np.full(50, 2.0)
    yield "onset-envelope", audio_mod._onset_envelope(drum_track(140.0, 4.0, SR, channels=1, seed=1)[0][0])


@pytest.mark.parametrize("wait", [0, 1, 2, 4, 7, 30])
def test_peak_pick_matches_librosa(wait):
    import librosa

    for name, env in _envelopes_for_peak_pick():
        for pre_max, post_max, pre_avg, post_avg, delta in [
            (3, 3, 10, 10, 1.5),  # what _onset_frames uses
            (1, 1, 1, 1, 0.0),
            (0, 2, 0, 3, 0.5),
            (5, 1, 2, 7, 0.1),  # 0.1 is not a float32 value: librosa's kernel rounds it
        ]:
            ref = librosa.util.peak_pick(
                env, pre_max=pre_max, post_max=post_max, pre_avg=pre_avg, post_avg=post_avg, delta=delta, wait=wait
            )
            mine = audio_mod._peak_pick(env, pre_max, post_max, pre_avg, post_avg, delta, wait)
            assert np.array_equal(mine, ref), (name, pre_max, post_max, pre_avg, post_avg, delta, wait, mine, ref)


def test_onset_frames_match_librosa_peak_pick_on_real_envelopes():
    import librosa

    for bpm in (90.0, 128.0, 174.0):
        env = audio_mod._onset_envelope(drum_track(bpm, 6.0, SR, channels=1, seed=int(bpm))[0][0])
        wait = int(round(0.05 * audio_mod._FRAME_RATE))
        ref = librosa.util.peak_pick(env, pre_max=3, post_max=3, pre_avg=10, post_avg=10, delta=1.5, wait=wait)
        mine = audio_mod._onset_frames(env)
        assert mine.size > 0 and np.array_equal(mine, ref)


@pytest.mark.parametrize("orig_sr", [8000, 16000, 32000, 44100, 48000, 96000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resample_matches_librosa(orig_sr, dtype):
    import librosa

    rng = np.random.default_rng(orig_sr)
    for n in (orig_sr // 3 + 7, 2 * orig_sr + 1, 999):
        y = (0.3 * rng.standard_normal(n)).astype(dtype)
        ref = librosa.resample(y, orig_sr=orig_sr, target_sr=SR)
        mine = audio_mod._resample(y, orig_sr, SR)
        assert mine.shape == ref.shape and mine.dtype == ref.dtype == dtype
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-7)
    y = rng.standard_normal(100).astype(dtype)
    assert audio_mod._resample(y, SR, SR) is y


@pytest.mark.parametrize("sr", [48000, 44100, 22050, 8000])
def test_k_weighting_filter_matches_scipy_lfilter(sr):
    import scipy.signal

    rng = np.random.default_rng(sr)
    x = rng.uniform(-1.0, 1.0, (3, sr // 2 + 13))
    x[1, 1000:] = 0.0  # a decaying tail
    (b1, a1), (b2, a2) = k_weighting_coefficients(sr)
    ref = scipy.signal.lfilter(b2, a2, scipy.signal.lfilter(b1, a1, x, axis=1), axis=1)
    mine = audio_mod._lfilter(b2, a2, audio_mod._lfilter(b1, a1, x))
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(audio_mod._lfilter(b1, a1, x[0]), scipy.signal.lfilter(b1, a1, x[0]), rtol=0, atol=1e-9)


def test_lfilter_general_orders_and_unnormalised_a():
    import scipy.signal

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4000))
    b, a = scipy.signal.butter(4, 0.1)
    for bb, aa in [(b, a), (2.0 * b, 2.0 * a), (b[:3], a), ([0.5], [1.0, -0.9]), ([1.0, 2.0], [1.0])]:
        np.testing.assert_allclose(
            audio_mod._lfilter(bb, aa, x), scipy.signal.lfilter(bb, aa, x, axis=1), rtol=1e-12, atol=1e-9
        )


def test_analyze_audio_equals_the_librosa_scipy_pipeline(monkeypatch):
    """End to end: swapping the librosa / scipy.signal calls back in changes nothing that matters."""
    import librosa
    import scipy.signal

    sr = 44100
    samples, _ = drum_track(116.0, 10.0, sr, seed=21, first_beat_s=0.3)
    mine = analyze_audio(samples, sr)
    monkeypatch.setattr(
        audio_mod, "_onset_envelope",
        lambda y: librosa.onset.onset_strength(y=y, sr=SR, hop_length=audio_mod._HOP, n_fft=audio_mod._N_FFT).astype(
            np.float64
        ),
    )
    monkeypatch.setattr(audio_mod, "_resample", lambda y, o, t: librosa.resample(y, orig_sr=o, target_sr=t))
    monkeypatch.setattr(audio_mod, "_peak_pick", lambda env, **kw: librosa.util.peak_pick(env, **kw))
    monkeypatch.setattr(audio_mod, "_lfilter", lambda b, a, x: scipy.signal.lfilter(b, a, x, axis=-1))
    ref = analyze_audio(samples, sr)
    assert mine.tempo_bpm is not None and mine.tempo_bpm == pytest.approx(ref.tempo_bpm, rel=1e-7)
    np.testing.assert_allclose(mine.beats_s, ref.beats_s, rtol=0, atol=1e-6)
    assert mine.beat_strength == pytest.approx(ref.beat_strength, abs=1e-6)
    assert mine.onset_density_per_s == ref.onset_density_per_s
    assert mine.lufs == pytest.approx(ref.lufs, abs=1e-9)


def test_non_finite_audio_is_rejected():
    x = drum_track(120.0, 3.0, SR, channels=1)[0][0].copy()
    x[100] = np.nan
    with pytest.raises(ValueError, match="finite"):
        analyze_audio(x, SR)


def test_runtime_imports_neither_librosa_nor_scipy_signal():
    code = """
import sys
import numpy as np
import stylecast.analysis.audio as audio
sr = 44100
t = np.arange(5 * sr) / sr
x = 0.05 * np.sin(2 * np.pi * 220 * t)
for b in np.arange(0.2, 4.9, 0.5):
    i = int(b * sr)
    x[i : i + 300] += np.hanning(300) * np.sin(np.arange(300) * 0.3)
features = audio.analyze_audio(np.stack([x, x]).astype(np.float32), sr)
assert features.tempo_bpm is not None and features.lufs is not None and features.onset_density_per_s > 0, features
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "librosa" or m == "scipy.signal" or m.startswith("scipy.signal."))
print("LOADED", loaded)
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
