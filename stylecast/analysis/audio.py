"""Audio analysis: loudness (ITU-R BS.1770-4), tempo/beats, onset density, cut/beat alignment.

All functions are pure and deterministic. Audio is ``samples: np.ndarray`` shaped
``(channels, n_samples)`` (a 1-D array is taken as mono), float, nominally in
``[-1, 1]``, with sample rate ``sr`` in Hz. Times are float seconds.

Tempo pipeline (:func:`analyze_audio`): mono mixdown -> resample to 22050 Hz ->
log-mel spectral-flux onset envelope (11.6 ms hop) -> autocorrelation period estimate (70-180 BPM)
-> dynamic-programming beat tracking (librosa) -> metrical-level choice (prefer the
level where the pulse is strongest inside 70-180 BPM) -> per-beat refinement to the
onset peak -> least-squares fit of a regular grid to the beats for the tempo.
"""

from __future__ import annotations

from typing import Sequence

import librosa
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.signal import lfilter

__all__ = [
    "AudioFeatures",
    "k_weighting_coefficients",
    "integrated_loudness",
    "gain_db_to_target",
    "analyze_audio",
    "beat_alignment",
]

# --- analysis constants --------------------------------------------------------------

ANALYSIS_SR = 22050  # Hz; tempo analysis rate
_HOP = 256  # samples at ANALYSIS_SR -> 11.6 ms onset-envelope frames
_N_FFT = 1024  # 46 ms window: sharp enough onsets for < 25 ms beat placement
_FRAME_RATE = ANALYSIS_SR / _HOP  # onset-envelope frames per second

PREFERRED_BPM = (70.0, 180.0)  # metrical level we report when the music allows
_RANGE_SLACK = 1.1  # tolerance factor at the edges of PREFERRED_BPM
MIN_TEMPO_DURATION_S = 2.0  # shorter clips get no tempo
MIN_BEAT_STRENGTH = 0.2  # below this the pulse is not trusted (tempo None)
_MIN_BEATS = 4

# --- loudness (ITU-R BS.1770-4) --------------------------------------------------------

_BLOCK_S = 0.4  # gating block length
_BLOCK_STEP_S = 0.1  # 75 % overlap
_ABS_GATE_LUFS = -70.0
_REL_GATE_LU = -10.0


def k_weighting_coefficients(sr: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Biquad coefficients ``((b1, a1), (b2, a2))`` of the BS.1770 K-weighting at ``sr`` Hz.

    Stage 1 is the head-related high shelf, stage 2 the RLB high-pass. BS.1770 lists
    coefficients only for 48 kHz; here both stages come from their analog prototypes
    (centre frequency, Q, shelf gain -- the parameters libebur128 uses) through the
    bilinear transform with ``K = tan(pi f0 / sr)``, which reproduces the 48 kHz table
    to ~1e-8 and works at any rate.
    """
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    # Stage 1: high shelf, +4 dB above ~1.7 kHz.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = np.tan(np.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b_shelf = np.array([(vh + vb * k / q + k * k), 2.0 * (k * k - vh), (vh - vb * k / q + k * k)]) / a0
    a_shelf = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # Stage 2: 2nd-order high-pass at ~38 Hz (RLB weighting).
    f0, q = 38.13547087602444, 0.5003270373238773
    k = np.tan(np.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    b_hp = np.array([1.0, -2.0, 1.0])
    a_hp = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (b_shelf, a_shelf), (b_hp, a_hp)


def _as_channels(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"samples must be (channels, n) or (n,), got shape {x.shape}")
    return x


def _channel_weights(n_channels: int) -> np.ndarray:
    """BS.1770 channel weights: 1.0 for L/R/C; surrounds 1.41; LFE (5.1 slot 3) excluded."""
    weights = np.ones(n_channels)
    if n_channels == 5:  # L R C Ls Rs
        weights[3:5] = 1.41
    elif n_channels == 6:  # L R C LFE Ls Rs (SMPTE order)
        weights[3] = 0.0
        weights[4:6] = 1.41
    return weights


def integrated_loudness(samples: np.ndarray, sr: int) -> float | None:
    """Integrated loudness in LUFS per ITU-R BS.1770-4 (gated, K-weighted).

    Parameters
    ----------
    samples : np.ndarray, shape (channels, n) or (n,)
        Audio in [-1, 1] full scale. Channels are weighted 1.0 (L, R, C); for 5 or 6
        channels the surrounds get 1.41 and the 5.1 LFE is excluded. Mono is measured
        as one channel (no +3 dB dual-mono convention).
    sr : int
        Sample rate in Hz (any rate; the K-weighting is designed for it).

    Returns
    -------
    float or None
        Loudness in LUFS, or None when no 400 ms block survives the gates
        (digital silence, everything below -70 LUFS, or a clip shorter than 400 ms).
    """
    x = _as_channels(samples).astype(np.float64, copy=False)
    block = int(round(_BLOCK_S * sr))
    step = int(round(_BLOCK_STEP_S * sr))
    n = x.shape[1]
    if x.shape[0] == 0 or n < block:
        return None
    (b1, a1), (b2, a2) = k_weighting_coefficients(sr)
    weighted = lfilter(b2, a2, lfilter(b1, a1, x, axis=1), axis=1)
    # Mean square per 400 ms block via cumulative sums (exact, O(n)).
    csum = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(weighted * weighted, axis=1)], axis=1)
    starts = np.arange(0, n - block + 1, step)
    z = (csum[:, starts + block] - csum[:, starts]) / block  # (channels, n_blocks)
    power = _channel_weights(x.shape[0]) @ z  # weighted sum over channels per block
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(power)
    gated = block_lufs > _ABS_GATE_LUFS
    if not gated.any():
        return None
    relative_gate = -0.691 + 10.0 * np.log10(power[gated].mean()) + _REL_GATE_LU
    gated &= block_lufs > relative_gate
    if not gated.any():
        return None
    return float(-0.691 + 10.0 * np.log10(power[gated].mean()))


def gain_db_to_target(samples: np.ndarray, sr: int, target_lufs: float) -> float | None:
    """Gain in dB that brings ``samples`` to ``target_lufs`` integrated loudness.

    Returns None when the loudness is undefined (silence / too short), so callers
    can leave such audio untouched.
    """
    lufs = integrated_loudness(samples, sr)
    return None if lufs is None else float(target_lufs - lufs)


# --- tempo / beats ---------------------------------------------------------------------


class AudioFeatures(BaseModel):
    """Audio description of a clip, as stored in the StyleJSON."""

    model_config = ConfigDict(extra="forbid")

    tempo_bpm: float | None = Field(None, description="Tempo in BPM; None when there is no reliable beat.")
    beats_s: list[float] = Field(default_factory=list, description="Beat times in seconds.")
    beat_strength: float = Field(0.0, ge=0.0, le=1.0, description="Pulse clarity, 0 (none) .. 1 (very clear).")
    onset_density_per_s: float = Field(0.0, ge=0.0, description="Detected onsets per second.")
    lufs: float | None = Field(None, description="Integrated loudness in LUFS (BS.1770-4); None if silent.")
    duration_s: float = Field(0.0, ge=0.0, description="Clip length in seconds.")
    sample_rate: int = Field(..., gt=0, description="Sample rate of the analysed input in Hz.")


def _onset_envelope(y: np.ndarray) -> np.ndarray:
    """Log-mel spectral flux at ANALYSIS_SR, one value per 11.6 ms frame (dB units)."""
    return librosa.onset.onset_strength(
        y=y, sr=ANALYSIS_SR, hop_length=_HOP, n_fft=_N_FFT
    ).astype(np.float64)


def _normalized_autocorrelation(env: np.ndarray, max_lag: int) -> np.ndarray:
    """Unbiased autocorrelation of the mean-removed envelope, 1.0 at lag 0."""
    centered = env - env.mean()
    n = centered.size
    max_lag = min(max_lag, n - 1)
    spectrum = np.fft.rfft(centered, 2 * n)
    ac = np.fft.irfft(spectrum * np.conj(spectrum))[: max_lag + 1]
    ac = ac / (n - np.arange(max_lag + 1))
    return ac / ac[0] if ac[0] > 0 else np.zeros_like(ac)


def _interp(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.interp(positions, np.arange(values.size), values)


def _peak_near(env: np.ndarray, position: float, radius: int) -> tuple[float, float]:
    """Largest envelope value within ``radius`` frames of ``position``, and its
    sub-frame location (parabolic interpolation)."""
    centre = int(round(position))
    lo, hi = max(0, centre - radius), min(env.size, centre + radius + 1)
    if lo >= hi:
        return 0.0, float(position)
    i = lo + int(np.argmax(env[lo:hi]))
    offset = 0.0
    if 0 < i < env.size - 1:
        left, mid, right = env[i - 1], env[i], env[i + 1]
        denom = left - 2.0 * mid + right
        if denom < 0:
            offset = float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))
    return float(env[i]), i + offset


def _dp_beats(env: np.ndarray, period: float, tightness: float = 100.0) -> np.ndarray:
    """Beat frames by dynamic programming at a fixed period (Ellis 2007), untrimmed.

    The same method as ``librosa.beat.beat_track`` (which this replaced: importing ``librosa.beat`` compiles
    several Numba gufuncs, about 2.5 s at every process start).  ``period`` is in onset frames.
    score[t] = local[t] + max over t-2p <= u <= t-p/2 of (score[u] - tightness * ln((t-u)/p)^2).
    """
    env = np.asarray(env, np.float64)
    n = env.size
    if n == 0 or period <= 0:
        return np.zeros(0)
    std = env.std(ddof=1) if n > 1 else 0.0
    onset = env / std if std > 0 else env
    half = int(round(period))
    window = np.exp(-0.5 * (np.arange(-half, half + 1) * 32.0 / period) ** 2)
    local = np.convolve(onset, window, "same")
    lo, hi = int(round(period / 2.0)), int(round(2.0 * period))
    offsets = np.arange(hi, lo - 1, -1)  # t - u, largest first (as librosa: ties go to the farthest)
    penalty = -tightness * np.log(offsets / period) ** 2
    score = np.empty(n)
    backlink = np.full(n, -1, dtype=np.int64)
    first = True
    for t in range(n):
        prev = t - offsets
        valid = prev >= 0
        if valid.any():
            cand = score[prev[valid]] + penalty[valid]
            k = int(np.argmax(cand))
            best = cand[k]
            if first and local[t] < 0.01 * local.max():
                score[t], backlink[t] = local[t], -1
                continue
            score[t] = local[t] + best
            backlink[t] = prev[valid][k]
        else:
            score[t] = local[t]
        if local[t] >= 0.01 * local.max():
            first = False
    # The last beat: the last local maximum of the score that is at least half the median of the maxima.
    maxima = np.flatnonzero((score[1:-1] > score[:-2]) & (score[1:-1] >= score[2:])) + 1
    if maxima.size == 0:
        return np.zeros(0)
    med = np.median(score[maxima])
    last = int(maxima[score[maxima] >= 0.5 * med][-1])
    beats = [last]
    while backlink[beats[-1]] >= 0:
        beats.append(int(backlink[beats[-1]]))
    return np.asarray(beats[::-1], dtype=np.float64)


def _track(env: np.ndarray, bpm: float) -> np.ndarray:
    """Beat frames from librosa's DP tracker at a fixed tempo, with the ends cleaned.

    librosa's own trimming can drop several real beats at the ends, so the track is
    taken untrimmed; then leading/trailing beats are removed while they are weak
    (onset peak below half the median beat's) or off the grid (gap to the neighbour
    more than 25 % away from the median gap) -- the DP tends to wander there.
    """
    beats = _dp_beats(env, 60.0 * ANALYSIS_SR / _HOP / float(bpm), tightness=100.0)
    if beats.size < 3:
        return beats
    strength = np.array([_peak_near(env, b, 2)[0] for b in beats])
    floor = 0.5 * np.median(strength)
    median_gap = np.median(np.diff(beats))

    def bad(i: int, neighbour: int) -> bool:
        off_grid = abs(abs(beats[i] - beats[neighbour]) - median_gap) > 0.25 * median_gap
        return bool(strength[i] < floor or off_grid)

    first, last = 0, beats.size - 1
    while last - first >= 2 and bad(first, first + 1):
        first += 1
    while last - first >= 2 and bad(last, last - 1):
        last -= 1
    return beats[first : last + 1]


def _fit_grid(beat_frames: np.ndarray) -> float:
    """Beat period in frames from a least-squares line through (beat index, time).

    Indices allow for a skipped or doubled beat: each gap counts as round(gap / median gap) beats.
    """
    gaps = np.diff(beat_frames)
    median_gap = np.median(gaps)
    steps = np.maximum(1, np.round(gaps / median_gap))
    index = np.concatenate([[0.0], np.cumsum(steps)])
    slope, _ = np.polyfit(index, beat_frames, 1)
    return float(slope)


def _level_strengths(env: np.ndarray, beats: np.ndarray) -> tuple[float, float, float, float]:
    """Median onset strength on the beats, on the midpoints between beats, and on the
    even / odd beats -- evidence for doubling or halving the metrical level."""
    on = np.array([_peak_near(env, b, 2)[0] for b in beats])
    mids = 0.5 * (beats[:-1] + beats[1:])
    between = np.array([_peak_near(env, m, 2)[0] for m in mids])
    return float(np.median(on)), float(np.median(between)), float(np.median(on[0::2])), float(np.median(on[1::2]))


def _choose_metrical_level(env: np.ndarray, bpm: float, beats: np.ndarray) -> tuple[float, np.ndarray]:
    """Move between half/double tempo towards the level with the strongest pulse in 70-180 BPM.

    Double when the points half-way between beats are nearly as strong as the beats
    (the grid is a half-tempo reading of an even pulse), or when the tempo is well
    below the range and an off-beat pulse exists. Halve when beats clearly alternate
    strong/weak (we are counting subdivisions), or when the tempo is well above the
    range. The range edges get 10 % slack both ways: evidence may move the tempo to
    63-198 BPM (a clear 66 or 190 BPM is kept), and only tempos beyond that are
    forced back towards the range.
    """
    lo, hi = PREFERRED_BPM[0] / _RANGE_SLACK, PREFERRED_BPM[1] * _RANGE_SLACK
    for _ in range(3):
        if beats.size < _MIN_BEATS:
            break
        on, between, even, odd = _level_strengths(env, beats)
        if on <= 0:
            break
        even_pulse = between >= 0.6 * on and bpm * 2.0 <= hi
        too_slow = bpm < lo and between >= 0.25 * on
        if even_pulse or too_slow:
            bpm *= 2.0
            beats = _track(env, bpm)
            continue
        alternating = min(even, odd) < 0.5 * max(even, odd) and bpm / 2.0 >= lo
        too_fast = bpm > hi
        if alternating or too_fast:
            bpm /= 2.0
            beats = beats[0::2] if even >= odd else beats[1::2]
            continue
        break
    return bpm, beats


def _pulse_clarity(env: np.ndarray, period_frames: float) -> float:
    """Mean normalised autocorrelation of the onset envelope at 1..4 beat periods
    (those within the first third of the clip, at least one), clipped to [0, 1]."""
    multiples = [k for k in range(1, 5) if k * period_frames <= env.size / 3.0] or [1]
    lags = period_frames * np.array(multiples, dtype=np.float64)
    ac = _normalized_autocorrelation(env, int(np.ceil(lags.max())) + 2)
    if ac.size < 2 or lags.max() > ac.size - 1:
        return 0.0
    return float(np.clip(np.mean(_interp(ac, lags)), 0.0, 1.0))


def analyze_audio(samples: np.ndarray, sr: int) -> AudioFeatures:
    """Tempo, beats, pulse clarity, onset density and loudness of a clip.

    Parameters
    ----------
    samples : np.ndarray, shape (channels, n) or (n,)
        Audio in [-1, 1]; may be empty.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    AudioFeatures
        ``tempo_bpm`` is None (and ``beats_s`` empty) for clips under 2 s, silence,
        or audio whose pulse clarity is below ``MIN_BEAT_STRENGTH``. Never raises for
        silent, short or empty input.
    """
    x = _as_channels(samples)
    n = x.shape[1]
    duration_s = n / float(sr)
    features = dict(duration_s=duration_s, sample_rate=int(sr), lufs=integrated_loudness(x, sr) if n else None)
    mono = x.astype(np.float64).mean(axis=0) if x.shape[0] else np.zeros(n)
    # An onset envelope needs at least one STFT window; silence has nothing to find.
    if n == 0 or not np.any(mono) or duration_s * ANALYSIS_SR < _N_FFT:
        return AudioFeatures(**features)
    y = mono if sr == ANALYSIS_SR else librosa.resample(mono, orig_sr=sr, target_sr=ANALYSIS_SR)
    env = _onset_envelope(np.ascontiguousarray(y, dtype=np.float32))
    onsets = _onset_frames(env)
    features["onset_density_per_s"] = onsets.size / duration_s
    if duration_s < MIN_TEMPO_DURATION_S or env.max() <= 0:
        return AudioFeatures(**features)

    # 1. Strongest periodicity of the onset envelope within the preferred range. (Its
    #    multiples -- two beats, a bar -- often correlate even better, so the search
    #    stays inside one octave-plus; the metrical step below may still move it.)
    min_lag = int(np.floor(60.0 * _FRAME_RATE / PREFERRED_BPM[1]))
    max_lag = int(np.ceil(60.0 * _FRAME_RATE / PREFERRED_BPM[0]))
    ac = _normalized_autocorrelation(env, max_lag + 1)
    if ac.size < max_lag + 2:
        return AudioFeatures(**features)
    lag = min_lag + int(np.argmax(ac[min_lag : max_lag + 1]))
    bpm = 60.0 * _FRAME_RATE / _peak_near(ac, lag, 1)[1]

    # 2. Track beats at that tempo, settle the metrical level.
    beats = _track(env, bpm)
    bpm, beats = _choose_metrical_level(env, bpm, beats)
    if beats.size < _MIN_BEATS:
        return AudioFeatures(**features)

    # 3. Refine every beat to its onset peak; flux at frame k measures the change
    #    between frames k-1 and k, so the onset sits half a frame earlier.
    refined = np.array([_peak_near(env, b, 2)[1] for b in beats]) - 0.5
    refined = np.maximum.accumulate(refined)  # keep order if two beats share a peak
    period_frames = _fit_grid(refined)
    if not np.isfinite(period_frames) or period_frames <= 0:
        return AudioFeatures(**features)

    # 4. Pulse clarity: envelope self-similarity 1..4 beats apart. Averaging several
    #    multiples keeps chance peaks of irregular material (one lucky lag) low.
    strength = _pulse_clarity(env, period_frames)
    features["beat_strength"] = strength
    if strength < MIN_BEAT_STRENGTH:
        return AudioFeatures(**features)
    features["tempo_bpm"] = 60.0 * _FRAME_RATE / period_frames
    features["beats_s"] = [float(t) for t in np.clip(refined / _FRAME_RATE, 0.0, duration_s)]
    return AudioFeatures(**features)


def _onset_frames(env: np.ndarray) -> np.ndarray:
    """Peak-picked onsets: local maxima that rise >= 1.5 dB (band-averaged flux) over
    the local mean, at most one per 50 ms. An absolute threshold in dB keeps smooth
    pads from producing spurious onsets."""
    if env.size < 3:
        return np.zeros(0, dtype=int)
    wait = int(round(0.05 * _FRAME_RATE))
    return librosa.util.peak_pick(
        env, pre_max=3, post_max=3, pre_avg=10, post_avg=10, delta=1.5, wait=wait
    )


# --- cut / beat alignment --------------------------------------------------------------


def beat_alignment(
    cut_times_s: Sequence[float], beats_s: Sequence[float], tolerance_s: float = 0.07
) -> float:
    """How strongly cuts follow the beat, 0 (chance level or worse) .. 1 (every cut on a beat).

    ``observed`` is the fraction of cuts within ``tolerance_s`` of some beat;
    ``expected = 2 * tolerance_s / median beat period`` is that fraction for cuts placed
    at random; the score is ``(observed - expected) / (1 - expected)`` clipped to [0, 1].
    Only cuts inside the span covered by the beats (first beat - half a period ..
    last beat + half a period) are judged, since audio may cover only part of a video.

    Parameters
    ----------
    cut_times_s : sequence of float
        Cut times in seconds.
    beats_s : sequence of float
        Beat times in seconds (at least two are needed to know the period).
    tolerance_s : float
        Half-width in seconds of the window counted as "on the beat".

    Returns
    -------
    float
        0.0 when there are no cuts, fewer than two beats, or no cut inside the beat span.
    """
    cuts = np.asarray(cut_times_s, dtype=np.float64).ravel()
    beats = np.sort(np.asarray(beats_s, dtype=np.float64).ravel())
    if cuts.size == 0 or beats.size < 2:
        return 0.0
    period = float(np.median(np.diff(beats)))
    if period <= 0:
        return 0.0
    expected = min(1.0, 2.0 * tolerance_s / period)
    if expected >= 1.0:
        return 0.0
    cuts = cuts[(cuts >= beats[0] - period / 2) & (cuts <= beats[-1] + period / 2)]
    if cuts.size == 0:
        return 0.0
    idx = np.clip(np.searchsorted(beats, cuts), 1, beats.size - 1)
    nearest = np.minimum(np.abs(cuts - beats[idx - 1]), np.abs(cuts - beats[idx]))
    observed = float(np.mean(nearest <= tolerance_s))
    return float(np.clip((observed - expected) / (1.0 - expected), 0.0, 1.0))
