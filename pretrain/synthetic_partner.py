"""Synthetic partner parts whose note onsets are known by construction.

The onset detector is judged against recordings where the truth is exact:
each note is rendered so that its first non-zero sample *is* the onset.
The instruments are deliberately cheap but musically plausible:

* :func:`plucked_guitar` -- Karplus-Strong plucked string, bright and fast.
* :func:`electric_bass` -- Karplus-Strong at bass pitch, darker excitation
  and a finger-style attack of a few milliseconds (the hard case for a
  fast detector).
* :func:`electric_keys` -- a few exponentially decaying partials, a tine
  partial and a short hammer thump, roughly a Rhodes.
* :func:`clicks` -- short impulses, the ground truth for latency.

:func:`humanized_part` puts one of them on a rhythm played with human
timing (seeded Gaussian jitter, optional swing, legato overlaps, background
noise) and returns the audio with the true onset times.

Everything is deterministic for a given ``seed``. These parts are the lab's
onset fixtures (:mod:`rolypoly.lab.partner_audio`) and, on other seeds, a
share of the onset network's training takes
(:func:`rolypoly.pretrain.partner_render.render_take`, style ``synthetic``).

>>> from rolypoly.pretrain.synthetic_partner import humanized_part
>>> audio, onsets = humanized_part("guitar", bars=1, seed=3)
>>> audio.dtype.name, len(onsets) > 0
('float32', True)
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import scipy.signal

from rolypoly.audio_io import write_wav  # noqa: F401  (fixtures are written with it)

__all__ = [
    "midi_to_hz",
    "plucked_guitar",
    "electric_bass",
    "electric_keys",
    "clicks",
    "humanized_part",
    "background_noise",
    "write_wav",
    "INSTRUMENTS",
]


def midi_to_hz(pitch: float) -> float:
    """Frequency in Hz of a MIDI note number (A4 = 69 = 440 Hz).

    >>> midi_to_hz(69)
    440.0
    """
    return float(440.0 * 2.0 ** ((pitch - 69.0) / 12.0))


# ---------------------------------------------------------------------------
# Shared plumbing


def _as_notes(onsets, durations, pitches, velocities):
    """Broadcast the note lists to equal length (scalars allowed)."""
    onsets = np.atleast_1d(np.asarray(onsets, dtype=float))
    n = len(onsets)

    def spread(values, name):
        if np.isscalar(values):
            return [values] * n
        values = list(values)
        if len(values) != n:
            raise ValueError(f"{name}: {len(values)} values for {n} onsets")
        return values

    return onsets, spread(durations, "durations"), spread(pitches, "pitches"), spread(velocities, "velocities")


def _render(onsets, durations, pitches, velocities, sample_rate, voice, tail_s):
    """Mix one rendered note per onset into a float32 buffer.

    Each onset is rounded to a sample, and that sample is where the note's
    first non-zero value lands -- so the returned times are exact truth.
    """
    onsets, durations, pitches, velocities = _as_notes(onsets, durations, pitches, velocities)
    if len(onsets) == 0:
        return np.zeros(0, dtype=np.float32)
    if np.any(onsets < 0):
        raise ValueError("onset times must be >= 0 s")
    starts = np.round(onsets * sample_rate).astype(np.int64)
    lengths = [int(round((float(d) + tail_s) * sample_rate)) for d in durations]
    total = int(max(s + n for s, n in zip(starts, lengths)))
    out = np.zeros(total, dtype=np.float64)
    for start, length, dur, pitch, vel in zip(starts, lengths, durations, pitches, velocities):
        for p in np.atleast_1d(pitch):  # a tuple of pitches is a chord
            note = voice(float(p), float(dur), float(vel), sample_rate, length)
            out[start:start + len(note)] += note[: total - start]
    return out.astype(np.float32)


def _release(note, dur_samples, release_samples):
    """Damp a note after it is let go (finger or damper on the string)."""
    if dur_samples >= len(note):
        return note
    tail = len(note) - dur_samples
    fade = np.exp(-np.arange(tail) / max(release_samples / 5.0, 1.0))
    note[dur_samples:] *= fade
    return note


def _note_rng(pitch, dur, vel, length):
    """A per-note generator: the same note always sounds the same.

    Seeding from the note itself keeps rendering deterministic without a
    global seed, while different notes still get different noise.
    """
    key = [int(round(pitch * 1000)) % 2**32, int(round(dur * 1e5)) % 2**32,
           int(round(vel * 1e5)) % 2**32, int(length) % 2**32]
    return np.random.default_rng(key)


def _karplus_strong(freq, length, sample_rate, excitation, loss):
    """Karplus-Strong string: a delay line fed back through a two-tap average.

    The recursion y[n] = x[n] + loss/2 * (y[n-N] + y[n-N-1]) is an all-pole
    filter, so scipy's ``lfilter`` runs it in C instead of a Python loop.
    """
    period = max(int(round(sample_rate / freq - 0.5)), 2)
    a = np.zeros(period + 2)
    a[0] = 1.0
    a[period] = -0.5 * loss
    a[period + 1] = -0.5 * loss
    x = np.zeros(length)
    x[: min(len(excitation), length)] = excitation[:length]
    return scipy.signal.lfilter([1.0], a, x), period


# ---------------------------------------------------------------------------
# Instruments


def _guitar_voice(pitch, dur, vel, sample_rate, length):
    rng = _note_rng(pitch, dur, vel, length)
    freq = midi_to_hz(pitch)
    period = max(int(round(sample_rate / freq - 0.5)), 2)
    burst = rng.uniform(-1.0, 1.0, period)
    # Softer plucks are darker: low-pass the burst more at low velocity.
    brightness = 0.25 + 0.7 * vel
    burst = scipy.signal.lfilter([brightness], [1.0, -(1.0 - brightness)], burst)
    # Plucking at 1/5 of the string notches out the 5th harmonic family.
    pick = max(period // 5, 1)
    burst[pick:] -= burst[:-pick].copy()
    burst -= burst.mean()
    burst /= np.max(np.abs(burst)) + 1e-12
    # Longer decay for low strings, like a real guitar.
    loss = 0.996 if freq < 200 else 0.993 if freq < 500 else 0.985
    note, _ = _karplus_strong(freq, length, sample_rate, burst, loss)
    note = _release(note, int(dur * sample_rate), int(0.06 * sample_rate))
    return 0.5 * vel * note / (np.max(np.abs(note[:period * 4])) + 1e-12)


def _bass_voice(pitch, dur, vel, sample_rate, length):
    rng = _note_rng(pitch, dur, vel, length)
    freq = midi_to_hz(pitch)
    period = max(int(round(sample_rate / freq - 0.5)), 2)
    burst = rng.uniform(-1.0, 1.0, period)
    # Fingers on a round-wound string: a dark excitation.
    smooth = 0.08 + 0.12 * vel
    burst = scipy.signal.lfilter([smooth], [1.0, -(1.0 - smooth)], burst)
    burst = scipy.signal.lfilter([smooth], [1.0, -(1.0 - smooth)], burst)
    burst -= burst.mean()
    burst /= np.max(np.abs(burst)) + 1e-12
    note, _ = _karplus_strong(freq, length, sample_rate, burst, 0.998)
    # Finger-style attack: a few ms raised-cosine swell rather than a click.
    attack = int(round((0.004 + 0.004 * (1.0 - vel)) * sample_rate))
    attack = min(attack, length)
    note[:attack] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(attack) + 1.0) / attack)
    note = _release(note, int(dur * sample_rate), int(0.05 * sample_rate))
    return 0.6 * vel * note / (np.max(np.abs(note[:period * 6])) + 1e-12)


def _keys_voice(pitch, dur, vel, sample_rate, length):
    rng = _note_rng(pitch, dur, vel, length)
    freq = midi_to_hz(pitch)
    t = np.arange(length) / sample_rate
    nyquist = sample_rate / 2
    # (frequency ratio, level, decay time in s): a warm fundamental, a few
    # harmonics, and the bell-like tine partial that makes the "ding".
    partials = [(1.0, 1.0, 1.6), (2.0, 0.35 * vel, 0.9), (3.0, 0.12 * vel, 0.5),
                (4.0, 0.06 * vel, 0.35), (7.1, 0.25 * vel ** 2, 0.08)]
    note = np.zeros(length)
    for ratio, level, decay in partials:
        f = freq * ratio
        if f < 0.9 * nyquist:
            phase = rng.uniform(0, 2 * np.pi)
            note += level * np.exp(-t / decay) * np.sin(2 * np.pi * f * t + phase)
    # The hammer: ~3 ms of band-limited thump, louder when played harder.
    n_hammer = min(int(0.003 * sample_rate), length)
    thump = rng.standard_normal(n_hammer) * np.hanning(2 * n_hammer)[n_hammer:]
    thump = scipy.signal.lfilter([0.3], [1.0, -0.7], thump)
    note[:n_hammer] += 0.4 * vel * thump
    # 1 ms ramp keeps the start free of a step (it is a piano, not a click);
    # it starts above zero so the onset sample is the first non-zero one.
    ramp = min(int(0.001 * sample_rate), length)
    note[:ramp] *= (np.arange(ramp) + 1.0) / ramp
    note = _release(note, int(dur * sample_rate), int(0.15 * sample_rate))
    return 0.35 * vel * note / (np.max(np.abs(note)) + 1e-12)


def _click_voice(pitch, dur, vel, sample_rate, length, decay_ms=4.0):
    # A woodblock-ish metronome click: full level on the first sample, then a
    # bright ring dying away over a few ms. decay_ms=0 is a bare impulse.
    note = np.zeros(length)
    if decay_ms <= 0:
        note[:1] = vel
        return note
    n = min(int(decay_ms * 6e-3 * sample_rate), length)
    t = np.arange(n) / sample_rate
    ring = np.cos(2 * np.pi * 2500.0 * t) + 0.4 * np.cos(2 * np.pi * 4100.0 * t)
    note[:n] = vel * np.exp(-t / (decay_ms * 1e-3)) * ring / 1.4
    return note


def plucked_guitar(onsets: Sequence[float], durations=0.4, pitches=52, velocities=0.8,
                   sample_rate: int = 48000) -> np.ndarray:
    """Render plucked-string (guitar-like) notes with Karplus-Strong.

    Parameters
    ----------
    onsets : sequence of float
        Note start times in seconds; the first sample of each note lands
        on ``round(onset * sample_rate)``.
    durations : float or sequence of float
        How long each note is held (s) before the string is damped.
    pitches : int, tuple or sequence
        MIDI note numbers; a tuple at one onset is a chord.
    velocities : float or sequence of float
        0..1; louder plucks are also brighter.
    sample_rate : int

    Returns
    -------
    np.ndarray, float32, mono

    Examples
    --------
    >>> y = plucked_guitar([0.1, 0.6], pitches=[52, 59], sample_rate=16000)
    >>> int(np.flatnonzero(y)[0]) == round(0.1 * 16000)
    True
    """
    return _render(onsets, durations, pitches, velocities, sample_rate, _guitar_voice, 0.08)


def electric_bass(onsets: Sequence[float], durations=0.4, pitches=33, velocities=0.8,
                  sample_rate: int = 48000) -> np.ndarray:
    """Render finger-style electric bass notes (low Karplus-Strong string).

    The attack swells over 4-8 ms (softer notes swell longer), which is
    what makes bass the slow, hard case for an onset detector.

    Parameters and return value as in :func:`plucked_guitar`.

    Examples
    --------
    >>> y = electric_bass([0.0], pitches=28, sample_rate=16000)
    >>> y.shape[0] > 0
    True
    """
    return _render(onsets, durations, pitches, velocities, sample_rate, _bass_voice, 0.07)


def electric_keys(onsets: Sequence[float], durations=0.5, pitches=60, velocities=0.8,
                  sample_rate: int = 48000) -> np.ndarray:
    """Render electric-piano-ish notes: decaying partials plus a hammer thump.

    Parameters and return value as in :func:`plucked_guitar`; chords are
    given as tuples of pitches, e.g. ``pitches=[(60, 64, 67)]``.

    Examples
    --------
    >>> y = electric_keys([0.0, 0.5], pitches=[(60, 64, 67), 62], sample_rate=16000)
    >>> y.dtype.name
    'float32'
    """
    return _render(onsets, durations, pitches, velocities, sample_rate, _keys_voice, 0.2)


def clicks(onsets: Sequence[float], velocities=0.8, sample_rate: int = 48000,
           durations=0.05, pitches=0, decay_ms: float = 4.0) -> np.ndarray:
    """Render metronome-like clicks at the given times.

    Each click is at full level on its first sample and rings (2.5 and
    4.1 kHz) for a few milliseconds; ``decay_ms=0`` gives bare one-sample
    impulses. ``durations`` and ``pitches`` are accepted (and ignored) so
    that all instruments share one calling convention.

    Examples
    --------
    >>> y = clicks([0.25], sample_rate=1000, decay_ms=0)
    >>> int(np.argmax(np.abs(y)))
    250
    """
    voice = functools.partial(_click_voice, decay_ms=decay_ms)
    return _render(onsets, durations, pitches, velocities, sample_rate, voice,
                   max(decay_ms, 0.0) * 6e-3)


INSTRUMENTS: dict[str, Callable[..., np.ndarray]] = {
    "guitar": plucked_guitar,
    "bass": electric_bass,
    "keys": electric_keys,
    "clicks": clicks,
}

# Pitch pools a partner might plausibly play (MIDI numbers).
_PITCHES = {
    "guitar": [40, 43, 45, 47, 50, 52, 55, 57, 59, 62, 64, 67],
    "bass": [28, 31, 33, 35, 36, 38, 40, 43],
    "keys": [(48, 55, 64), (50, 57, 65), (52, 55, 60), (53, 57, 64), (60,), (62,), (64,), (67,)],
    "clicks": [0],
}


def background_noise(n_samples: int, level_db: float, seed: int = 0) -> np.ndarray:
    """Pink-ish room/amp noise at an RMS level in dBFS.

    Examples
    --------
    >>> n = background_noise(48000, -40.0)
    >>> round(float(20 * np.log10(np.sqrt(np.mean(n.astype(float) ** 2)))))
    -40
    """
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n_samples)
    # Paul Kellet's economy pink filter: hiss plus hum-ish low end, the way
    # an amp in a room sounds, rather than pure white noise.
    pink = scipy.signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                                [1.0, -2.494956002, 2.017265875, -0.522189400], white)
    pink /= np.sqrt(np.mean(pink ** 2)) + 1e-12
    return (pink * 10.0 ** (level_db / 20.0)).astype(np.float32)


def humanized_part(instrument: str = "guitar", bpm: float = 110.0, bars: int = 4,
                   steps_per_beat: int = 2, density: float = 0.7, jitter_ms: float = 12.0,
                   swing: float = 0.0, legato: float = 0.8, velocity_range=(0.45, 1.0),
                   noise_db: float | None = None, lead_in_s: float = 0.3,
                   seed: int = 0, sample_rate: int = 48000):
    """A rhythm played with human timing, and the exact onset times.

    The part is laid on a grid of ``steps_per_beat`` steps per beat in 4/4;
    each step sounds with probability ``density`` (the downbeat always
    sounds). Every onset is pushed by Gaussian jitter and, on off-beats,
    by swing.

    Parameters
    ----------
    instrument : {'guitar', 'bass', 'keys', 'clicks'}
    bpm : float
        Tempo in beats per minute.
    bars : int
        Number of 4/4 bars.
    steps_per_beat : int
        2 = eighth notes, 4 = sixteenths.
    density : float
        Probability that a grid step is played.
    jitter_ms : float
        Standard deviation of the timing error (ms). Human players sit
        around 5-20 ms.
    swing : float
        0 = straight; 1/3 pushes every off-beat step to the triplet
        position (a full shuffle).
    legato : float
        Note length as a multiple of the gap to the next onset; above 1
        notes overlap (let ring), below 1 they are cut short.
    velocity_range : (float, float)
        Velocities are drawn uniformly from this range.
    noise_db : float or None
        Background noise RMS level in dBFS, or None for a clean part.
    lead_in_s : float
        Silence before the first grid step (jitter can pull notes earlier).
    seed : int
        Same seed, same part.
    sample_rate : int

    Returns
    -------
    audio : np.ndarray, float32, mono
    onsets : np.ndarray, float64
        True onset times in seconds (sample-exact: ``k / sample_rate``).

    Examples
    --------
    >>> a, t = humanized_part("bass", bars=2, jitter_ms=8, swing=0.2, seed=1)
    >>> bool(np.all(np.diff(t) > 0))
    True
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"instrument {instrument!r}: choose one of {sorted(INSTRUMENTS)}")
    rng = np.random.default_rng(seed)
    step_s = 60.0 / bpm / steps_per_beat
    n_steps = int(bars * 4 * steps_per_beat)
    played = rng.random(n_steps) < density
    played[0] = True
    grid = np.arange(n_steps) * step_s
    # Swing delays every second step by a fraction of a step pair.
    offbeat = (np.arange(n_steps) % 2) == 1
    grid = grid + offbeat * swing * step_s
    times = lead_in_s + grid[played] + rng.normal(0.0, jitter_ms / 1000.0, played.sum())
    times = np.sort(np.maximum(times, 0.0))
    # Keep human timing but never let two notes collapse into one.
    min_gap = 0.06
    for i in range(1, len(times)):
        times[i] = max(times[i], times[i - 1] + min_gap)
    times = np.round(times * sample_rate) / sample_rate

    gaps = np.diff(np.append(times, times[-1] + 2 * step_s))
    durations = np.maximum(gaps * legato, 0.03)
    pool = _PITCHES[instrument]
    pitches = [pool[i] for i in rng.integers(0, len(pool), len(times))]
    lo, hi = velocity_range
    velocities = rng.uniform(lo, hi, len(times))

    render = INSTRUMENTS[instrument]
    audio = render(times, durations=durations, pitches=pitches, velocities=velocities,
                   sample_rate=sample_rate)
    audio = np.concatenate([audio, np.zeros(int(0.2 * sample_rate), dtype=np.float32)])
    if noise_db is not None:
        audio = audio + background_noise(len(audio), noise_db, seed=seed + 7919)
    return audio.astype(np.float32), times
