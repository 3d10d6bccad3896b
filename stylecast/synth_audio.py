"""Deterministic synthetic audio with known ground truth, for tests and demos.

Everything here is a pure function of its arguments (randomness comes only from
``numpy.random.default_rng(seed)``), returns ``float32`` arrays shaped
``(channels, n_samples)`` with values in ``[-1, 1]``, and uses seconds for time.

- :func:`drum_track` -- a simple 4/4 groove (kick on every beat, snare on 2 and 4,
  closed hi-hats on eighths, a bass note with every kick) plus the exact beat times.
- :func:`tone_bed` -- an unmetered ambient pad with slow swells and no pulse, for
  "no tempo" cases.
- :func:`silence` -- digital silence of a given length.
"""

from __future__ import annotations

import numpy as np

__all__ = ["drum_track", "tone_bed", "silence", "sine"]

# Bass line roots in Hz (A1, F1, C2, G1): one root per bar, a common pop progression.
_BASS_ROOTS_HZ = (55.0, 43.65, 65.41, 49.0)


def _n_samples(duration_s: float, sr: int) -> int:
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    return max(0, int(round(float(duration_s) * sr)))


def _set_rms_level(mix: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale ``mix`` so its RMS (over all channels) is ``level_dbfs``, then soft-limit to [-1, 1]."""
    rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64)))) if mix.size else 0.0
    if rms > 0.0:
        mix = mix * (10.0 ** (level_dbfs / 20.0) / rms)
    # Soft knee above 0.9 instead of hard clipping: rare drum peaks stay musical.
    knee = 0.9
    over = np.abs(mix) > knee
    if over.any():
        mag = np.abs(mix[over])
        mix[over] = np.sign(mix[over]) * (knee + (1.0 - knee) * np.tanh((mag - knee) / (1.0 - knee)))
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def _to_channels(mono: np.ndarray, channels: int, pan: float = 0.0) -> np.ndarray:
    """Constant-power pan of a mono signal; ``pan`` in -1 (left) .. 1 (right)."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if channels == 1:
        return mono[None, :]
    theta = (pan + 1.0) * np.pi / 4.0
    gains = np.ones(channels)
    gains[0], gains[1] = np.sqrt(2.0) * np.cos(theta), np.sqrt(2.0) * np.sin(theta)
    return gains[:, None] * mono[None, :]


def _add_at(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Mix ``sound`` into ``out`` starting at sample ``start`` (truncated at the end)."""
    if start >= out.shape[-1] or start < 0:
        return
    stop = min(out.shape[-1], start + sound.shape[-1])
    out[..., start:stop] += sound[..., : stop - start]


def _release(sound: np.ndarray, sr: int, release_s: float = 0.02) -> np.ndarray:
    """Fade the last ``release_s`` seconds out (raised cosine): a truncated tail would click."""
    n = min(sound.size, max(1, int(release_s * sr)))
    fade = 0.5 * (1.0 + np.cos(np.pi * np.arange(1, n + 1) / n))
    out = sound.copy()
    out[-n:] *= fade
    return out


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.35 * sr)) / sr
    # Pitch sweep 150 Hz -> 48 Hz: the classic "thump"; phase is the integral of frequency.
    freq = 48.0 + 102.0 * np.exp(-t / 0.03)
    phase = 2.0 * np.pi * np.cumsum(freq) / sr
    body = np.sin(phase) * np.exp(-t / 0.12)
    click = np.exp(-t / 0.002) * 0.5
    return _release(body + click, sr)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    noise = rng.standard_normal(t.size)
    # First difference tilts the noise towards the top end (a cheap high-pass).
    noise = np.diff(noise, prepend=0.0) * 0.5
    body = np.sin(2.0 * np.pi * 185.0 * t) * np.exp(-t / 0.05)
    return _release(0.6 * noise * np.exp(-t / 0.07) + 0.5 * body, sr)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.06 * sr)) / sr
    noise = rng.standard_normal(t.size)
    noise = np.diff(np.diff(noise, prepend=0.0), prepend=0.0) * 0.25  # steeper tilt: hiss
    return _release(noise * np.exp(-t / 0.015), sr, 0.01)


def _bass_note(freq_hz: float, length_s: float, sr: int) -> np.ndarray:
    t = np.arange(int(length_s * sr)) / sr
    # A few harmonics of a saw, softened: reads as a bass guitar/synth, not a sine beep.
    tone = sum(np.sin(2.0 * np.pi * k * freq_hz * t) / k**1.5 for k in range(1, 6))
    attack = np.minimum(1.0, t / 0.005)
    return _release(tone * attack * np.exp(-t / (0.6 * length_s + 1e-9)), sr, 0.03)


def drum_track(
    bpm: float,
    duration_s: float,
    sr: int = 44100,
    *,
    seed: int = 0,
    channels: int = 2,
    first_beat_s: float = 0.0,
    level_dbfs: float = -14.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic 4/4 drum-and-bass groove with known beat times.

    Kick and a bass note on every beat, snare on beats 2 and 4 of each bar, closed
    hi-hats on every eighth note (quieter on the off-beats). Hit velocities vary
    slightly with ``seed``; timing is exact, so the returned beat times are ground
    truth.

    Parameters
    ----------
    bpm : float
        Tempo in beats per minute (> 0).
    duration_s : float
        Length in seconds.
    sr : int
        Sample rate in Hz.
    seed : int
        Seed for the noise of snares/hats and the velocity variation.
    channels : int
        Number of output channels (1 = mono; 2 = stereo with hats panned a little right).
    first_beat_s : float
        Time of the first beat (bar line) in seconds, >= 0.
    level_dbfs : float
        Target RMS level over all channels in dBFS (approximate: peaks are clipped to +-1).

    Returns
    -------
    samples : np.ndarray, float32, shape (channels, n)
        The audio, in [-1, 1].
    beat_times_s : np.ndarray, float64, shape (n_beats,)
        Times of every beat (kick onset) in seconds that falls inside the clip.
    """
    if bpm <= 0:
        raise ValueError(f"bpm must be positive, got {bpm}")
    if first_beat_s < 0:
        raise ValueError(f"first_beat_s must be >= 0, got {first_beat_s}")
    n = _n_samples(duration_s, sr)
    period_s = 60.0 / float(bpm)
    n_beats = int(np.floor((n / sr - first_beat_s) / period_s - 1e-9)) + 1 if n else 0
    beat_times_s = first_beat_s + period_s * np.arange(max(0, n_beats))
    beat_times_s = beat_times_s[beat_times_s < n / sr]

    rng = np.random.default_rng(seed)
    center = np.zeros(n)
    hats = np.zeros(n)
    kick = _kick(sr)
    for i, t_beat in enumerate(beat_times_s):
        start = int(round(t_beat * sr))
        beat_in_bar = i % 4
        velocity = 1.0 + 0.05 * rng.standard_normal()
        _add_at(center, start, velocity * kick)
        root = _BASS_ROOTS_HZ[(i // 4) % len(_BASS_ROOTS_HZ)]
        _add_at(center, start, 0.35 * _bass_note(root, 0.9 * period_s, sr))
        if beat_in_bar in (1, 3):
            _add_at(center, start, (0.8 + 0.05 * rng.standard_normal()) * _snare(sr, rng))
        for eighth in (0, 1):
            t_hat = t_beat + eighth * period_s / 2.0
            level = 0.35 if eighth == 0 else 0.25
            _add_at(hats, int(round(t_hat * sr)), level * (1.0 + 0.1 * rng.standard_normal()) * _hat(sr, rng))

    mix = _to_channels(center, channels) + _to_channels(hats, channels, pan=0.3)
    return _set_rms_level(mix, level_dbfs), beat_times_s


def tone_bed(
    duration_s: float,
    sr: int = 44100,
    *,
    seed: int = 0,
    channels: int = 2,
    level_dbfs: float = -20.0,
) -> np.ndarray:
    """An unmetered ambient pad: sustained chord tones and soft noise with slow, irregular swells.

    No transients and no periodic accents, so a beat tracker should find no tempo.
    Chord changes are long crossfades at irregular times; amplitude swells use slow
    LFOs at incommensurate rates (well below 1 Hz).

    Parameters
    ----------
    duration_s : float
        Length in seconds.
    sr : int
        Sample rate in Hz.
    seed : int
        Seed for the noise, chord timing and LFO phases.
    channels : int
        Number of output channels.
    level_dbfs : float
        Target RMS level over all channels in dBFS.

    Returns
    -------
    np.ndarray, float32, shape (channels, n)
    """
    n = _n_samples(duration_s, sr)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    chords_hz = (
        (220.0, 277.18, 329.63, 415.30),  # A maj7
        (174.61, 220.0, 261.63, 329.63),  # F maj7
        (196.0, 246.94, 293.66, 369.99),  # G maj7-ish
    )
    # Irregular chord change times (4..9 s apart), each with a 3 s raised-cosine crossfade.
    changes = [0.0]
    while changes[-1] < duration_s:
        changes.append(changes[-1] + rng.uniform(4.0, 9.0))
    out = np.zeros((channels, n))
    for ci in range(len(changes)):
        start_s = changes[ci] - 1.5
        stop_s = (changes[ci + 1] + 1.5) if ci + 1 < len(changes) else duration_s + 3.0
        fade_in = np.clip((t - start_s) / 3.0, 0.0, 1.0)
        fade_out = np.clip((stop_s - t) / 3.0, 0.0, 1.0)
        env = np.sin(0.5 * np.pi * fade_in) * np.sin(0.5 * np.pi * fade_out)
        if ci == 0:
            env = np.sin(0.5 * np.pi * fade_out) * np.clip(t / 2.0, 0.0, 1.0)
        active = env > 0
        if not active.any():
            continue
        chord = chords_hz[ci % len(chords_hz)]
        for ch in range(channels):
            voice = np.zeros(int(active.sum()))
            ta = t[active]
            for f in chord:
                detune = 1.0 + 0.002 * rng.standard_normal()
                lfo = 0.7 + 0.3 * np.sin(2.0 * np.pi * rng.uniform(0.03, 0.11) * ta + rng.uniform(0, 2 * np.pi))
                voice += lfo * np.sin(2.0 * np.pi * f * detune * ta + rng.uniform(0, 2 * np.pi))
            out[ch, active] += env[active] * voice
    # Soft air: low-passed noise (moving average) under a very slow swell.
    if n:
        kernel = np.ones(32) / 32.0
        for ch in range(channels):
            noise = np.convolve(rng.standard_normal(n), kernel, mode="same")
            swell = 0.6 + 0.4 * np.sin(2.0 * np.pi * 0.047 * t + rng.uniform(0, 2 * np.pi))
            out[ch] += 0.8 * noise * swell
    return _set_rms_level(out, level_dbfs)


def silence(duration_s: float, sr: int = 44100, *, channels: int = 2) -> np.ndarray:
    """Digital silence, float32 ``(channels, n)``, ``n = round(duration_s * sr)``."""
    return np.zeros((channels, _n_samples(duration_s, sr)), dtype=np.float32)


def sine(
    freq_hz: float,
    duration_s: float,
    sr: int = 48000,
    *,
    peak_dbfs: float = 0.0,
    channels: int = 2,
    active_channels: tuple[int, ...] | None = None,
) -> np.ndarray:
    """A steady sine, float32 ``(channels, n)``, peak amplitude ``peak_dbfs`` (dBFS).

    ``active_channels`` lists which channels carry the tone (default: all); the others
    are silent. Handy for loudness reference checks (EBU Tech 3341 style).
    """
    n = _n_samples(duration_s, sr)
    tone = (10.0 ** (peak_dbfs / 20.0)) * np.sin(2.0 * np.pi * freq_hz * np.arange(n) / sr)
    out = np.zeros((channels, n), dtype=np.float32)
    for ch in range(channels) if active_channels is None else active_channels:
        out[ch] = tone
    return out
