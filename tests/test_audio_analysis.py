"""Audio analysis against synthetic ground truth: tempo/beats, loudness (BS.1770-4), cut/beat alignment."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

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
