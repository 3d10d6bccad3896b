"""Audio analysis: loudness (ITU-R BS.1770-4), tempo/beats, onset density, cut/beat alignment.

All functions are pure and deterministic. Audio is ``samples: np.ndarray`` shaped
``(channels, n_samples)`` (a 1-D array is taken as mono), float, nominally in
``[-1, 1]``, with sample rate ``sr`` in Hz. Times are float seconds.

Tempo pipeline (:func:`analyze_audio`): mono mixdown -> resample to 22050 Hz (soxr, as
``librosa.resample``) -> log-mel spectral-flux onset envelope (11.6 ms hop, as
``librosa.onset.onset_strength``) -> autocorrelation period estimate (70-180 BPM)
-> dynamic-programming beat tracking (Ellis 2007, as ``librosa.beat``) -> metrical-level choice
(prefer the level where the pulse is strongest inside 70-180 BPM) -> per-beat refinement to the
onset peak -> least-squares fit of a regular grid to the beats for the tempo.

Neither librosa nor ``scipy.signal`` is imported at run time: librosa's onset / feature /
spectrum modules build Numba gufuncs when imported (1-2.5 s in every process, depending on
Numba's cache) and ``scipy.signal`` alone takes ~1 s to import -- a cost every
``stylecast run`` process would pay.  The few pieces used (centred STFT + mel filterbank +
log-flux, peak picking, soxr resampling, the K-weighting biquads) are re-implemented below
with numpy, soxr (what librosa resamples with) and one cached Numba kernel; the tests hold
them to librosa and ``scipy.signal.lfilter``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numba
import numpy as np
import soxr
from pydantic import BaseModel, ConfigDict, Field

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


@numba.njit(cache=True, nogil=True)
def _lfilter_rows(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """IIR filter of each row of ``x`` (float64, 2-D), direct form II transposed, zero initial
    state -- what ``scipy.signal.lfilter(b, a, x, axis=1)`` computes.  ``b`` and ``a`` have
    the same length and ``a[0] == 1``."""
    order = b.size - 1
    out = np.empty_like(x)
    z = np.zeros(order + 1)  # z[order] stays 0
    for c in range(x.shape[0]):
        z[:] = 0.0
        for i in range(x.shape[1]):
            xi = x[c, i]
            yi = b[0] * xi + z[0]
            for k in range(order):
                z[k] = z[k + 1] + b[k + 1] * xi - a[k + 1] * yi
            out[c, i] = yi
    return out


def _lfilter(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.lfilter(b, a, x, axis=-1)`` for a 1-D or 2-D float signal, in float64.

    (Numba instead of scipy.signal, whose import costs ~1 s per process.)"""
    b = np.asarray(b, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or a[0] == 0:
        raise ValueError("a[0] must be non-zero")
    size = max(a.size, b.size)
    b = np.pad(b, (0, size - b.size)) / a[0]
    a = np.pad(a, (0, size - a.size)) / a[0]
    x = np.asarray(x, dtype=np.float64)
    rows = np.ascontiguousarray(np.atleast_2d(x))
    out = _lfilter_rows(b, a, rows)
    return out.reshape(x.shape)


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
    weighted = _lfilter(b2, a2, _lfilter(b1, a1, x))
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


_N_MELS = 128
_ENV_FLOOR_DB = 80.0  # power_to_db's top_db
_STFT_BLOCK = 1024  # frames per FFT block (bounds memory on long clips)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (``librosa.hz_to_mel(htk=False)``): linear below 1 kHz, log above."""
    hz = np.atleast_1d(np.asarray(hz, dtype=np.float64))
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mels = hz / f_sp
    log_t = hz >= min_log_hz
    mels[log_t] = min_log_mel + np.log(hz[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel` (``librosa.mel_to_hz(htk=False)``)."""
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    hz = f_sp * mels
    log_t = mels >= min_log_mel
    hz[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return hz


@functools.lru_cache(maxsize=8)
def _mel_filterbank(sr: int, n_fft: int, n_mels: int = _N_MELS) -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, 1 + n_fft // 2)``: ``librosa.filters.mel`` with
    its defaults (Slaney scale, fmin 0, fmax sr/2, 'slaney' area normalisation), in float64.
    Cached; the returned array is read-only."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    min_mel, max_mel = _hz_to_mel(np.array([0.0, sr / 2.0]))
    mel_f = _mel_to_hz(np.linspace(min_mel, max_mel, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window('hann', n, fftbins=True)``, librosa's STFT window)."""
    w = (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n + 1)))[:n]
    w.setflags(write=False)
    return w


def _mel_power(y: np.ndarray, sr: int, n_fft: int, hop: int) -> np.ndarray:
    """Mel power spectrogram ``(n_mels, 1 + len(y) // hop)`` of a centred (zero-padded by
    ``n_fft // 2`` both sides), Hann-windowed STFT: ``librosa.feature.melspectrogram``."""
    padded = np.pad(np.asarray(y, dtype=np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window, basis = _hann(n_fft), _mel_filterbank(sr, n_fft)
    mel = np.empty((basis.shape[0], frames.shape[0]))
    for start in range(0, frames.shape[0], _STFT_BLOCK):
        spectrum = np.fft.rfft(frames[start : start + _STFT_BLOCK] * window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        mel[:, start : start + _STFT_BLOCK] = basis @ power.T
    return mel


def _onset_envelope(y: np.ndarray) -> np.ndarray:
    """Log-mel spectral flux at ANALYSIS_SR, one value per 11.6 ms frame (dB units).

    ``librosa.onset.onset_strength(y=y, sr=ANALYSIS_SR, hop_length=_HOP, n_fft=_N_FFT)``
    re-implemented: 128-band mel power spectrogram -> dB (ref 1, amin 1e-10, floor 80 dB
    below the maximum) -> positive frame-to-frame difference (lag 1) averaged over the bands
    -> shifted right by 1 + n_fft // (2 hop) frames (zeros in front; the lag and the STFT
    centring, as librosa does) and trimmed to the number of STFT frames.
    """
    mel = _mel_power(y, ANALYSIS_SR, _N_FFT, _HOP)
    db = 10.0 * np.log10(np.maximum(1e-10, mel))
    db = np.maximum(db, db.max() - _ENV_FLOOR_DB)
    flux = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(axis=0)
    shift = 1 + _N_FFT // (2 * _HOP)
    return np.concatenate([np.zeros(shift), flux])[: db.shape[1]]


def _resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=..., target_sr=...)`` (its default 'soxr_hq'): soxr HQ,
    then cut / zero-padded to ``ceil(len(y) * target_sr / orig_sr)`` samples."""
    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(y.shape[-1] * (float(target_sr) / orig_sr)))
    out = soxr.resample(y, orig_sr, target_sr, quality="soxr_hq")
    if out.shape[-1] > n_out:
        out = out[:n_out]
    elif out.shape[-1] < n_out:
        out = np.pad(out, (0, n_out - out.shape[-1]))
    return np.asarray(out, dtype=y.dtype)


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
    """Beat frames from the DP tracker (:func:`_dp_beats`) at a fixed tempo, with the ends cleaned.

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
    if not np.all(np.isfinite(mono)):
        raise ValueError("audio samples must be finite (no NaN or inf)")
    y = _resample(mono, sr, ANALYSIS_SR)
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


def _peak_pick(
    x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """Indices of the peaks of a 1-D float64 array: ``librosa.util.peak_pick`` (sparse output).

    ``x[n]`` is a peak when it equals the maximum of ``x[max(0, n - pre_max) : n + post_max]``,
    is at least ``delta`` above the mean of ``x[max(0, n - pre_avg) : n + post_avg]`` (windows
    clipped at the ends; the mean summed left to right, as librosa's Numba loop does, so ties
    come out the same), and comes more than ``wait`` frames after the previous peak (peaks are
    taken greedily from the left).  ``delta`` is rounded to float32 as librosa's kernel takes it.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    padded = np.concatenate([np.full(pre_max, -np.inf), x, np.full(post_max - 1, -np.inf)])
    local_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max).max(axis=1)
    zero_padded = np.concatenate([np.zeros(pre_avg), x, np.zeros(post_avg - 1)])
    total = np.zeros(n)
    for k in range(pre_avg + post_avg):
        total += zero_padded[k : k + n]
    idx = np.arange(n)
    count = np.minimum(idx + post_avg, n) - np.maximum(0, idx - pre_avg)
    candidates = np.flatnonzero((x == local_max) & (x >= total / count + float(np.float32(delta))))
    peaks: list[int] = []
    allowed = 0
    for c in candidates.tolist():
        if c >= allowed:
            peaks.append(c)
            allowed = c + wait + 1
    return np.asarray(peaks, dtype=np.intp)


def _onset_frames(env: np.ndarray) -> np.ndarray:
    """Peak-picked onsets: local maxima that rise >= 1.5 dB (band-averaged flux) over
    the local mean, at most one per 50 ms. An absolute threshold in dB keeps smooth
    pads from producing spurious onsets."""
    if env.size < 3:
        return np.zeros(0, dtype=int)
    wait = int(round(0.05 * _FRAME_RATE))
    return _peak_pick(env, pre_max=3, post_max=3, pre_avg=10, post_avg=10, delta=1.5, wait=wait)


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
