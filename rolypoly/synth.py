"""A small built-in drum synthesizer, so a take can be heard without a DAW.

Each of the 9 drum classes (:data:`rolypoly.drum_map.CLASS_NAMES`) is a
cheap analogue-style voice rendered with numpy and scipy:

* kick -- a sine whose pitch drops fast, plus a short click.
* snare -- two tuned body partials and band-passed noise.
* closed / open hi-hat -- six detuned square waves (the TR-808 recipe) and
  noise, high-passed; the open hat only decays longer.
* low / mid / high tom -- pitched sines with a pitch drop and a stick tick.
* crash -- long, bright, noisy metallic decay.
* ride -- inharmonic bell partials over a metallic shimmer.

Velocity (1-127) sets the level on a dB curve and, a little, the brightness.
All noise comes from fixed per-class seeds, so a render is reproducible
sample for sample. The one-shots are rendered once per class and sample rate
and kept by a :class:`DrumKit`.

Examples
--------
>>> import numpy as np
>>> from rolypoly.synth import DrumKit, render_hits
>>> kit = DrumKit(48000)
>>> hits = np.zeros(9, bool); hits[[0, 2]] = True          # kick + closed hat
>>> vels = np.full(9, 100)
>>> audio = render_hits([(0.0, hits, vels), (0.5, hits, vels)], 48000, 48000, kit=kit)
>>> audio.shape, audio.dtype.name
((48000,), 'float32')
"""
from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np
import scipy.signal

from rolypoly.drum_map import CLASS_NAMES, N_CLASSES

__all__ = ["DrumKit", "drum_sample", "render_hits", "render_midi", "velocity_gain"]

#: Level change from velocity 127 down to velocity 1, in dB: about the dynamic
#: range of an acoustic kit from a full stroke to the softest ghost note.
VELOCITY_RANGE_DB = 30.0
#: Level of the high band ("air") at velocity 1 relative to velocity 127, in dB:
#: soft strokes sound slightly duller, as on a real drum.
BRIGHTNESS_RANGE_DB = -4.5
#: Output peak above which :func:`render_hits` scales the mix down.
CLIP_LEVEL = 0.99

# Seed of each class's noise: fixed, so every render is identical.
_SEED_BASE = 0x5EED_D8


# ----------------------------------------------------------------------------- building blocks

def velocity_gain(velocity) -> np.ndarray | float:
    """Linear gain of a MIDI velocity: 0 dB at 127, -30 dB at 1, linear in dB.

    Parameters
    ----------
    velocity : int or array of int
        MIDI velocity; values outside 1-127 are clipped into it.

    Returns
    -------
    gain : float or ndarray

    Examples
    --------
    >>> float(velocity_gain(127))
    1.0
    >>> round(float(20 * np.log10(velocity_gain(1))), 1)
    -30.0
    """
    v = np.clip(np.asarray(velocity, dtype=np.float64), 1.0, 127.0)
    gain = 10.0 ** (-VELOCITY_RANGE_DB * (127.0 - v) / 126.0 / 20.0)
    return float(gain) if gain.ndim == 0 else gain


def _brightness(velocity) -> float:
    """Gain of the high band of a one-shot at this velocity (1.0 at 127)."""
    v = float(np.clip(velocity, 1, 127))
    return 10.0 ** (BRIGHTNESS_RANGE_DB * (127.0 - v) / 126.0 / 20.0)


def _time(duration_s: float, sr: int) -> np.ndarray:
    return np.arange(int(round(duration_s * sr))) / sr


def _sweep(f_start: float, f_end: float, tau_s: float, t: np.ndarray, sr: int) -> np.ndarray:
    """Sine whose frequency glides exponentially from ``f_start`` to ``f_end``.

    Integrating the frequency (rather than ``sin(2 pi f(t) t)``) keeps the
    phase continuous, so the glide has no chirp artefacts.
    """
    freq = f_end + (f_start - f_end) * np.exp(-t / tau_s)
    phase = 2.0 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase - phase[0])  # starts at phase 0: no step at the onset


def _filter(x: np.ndarray, kind: str, freq, sr: int, order: int = 4) -> np.ndarray:
    """Causal Butterworth filter; cut-offs are kept below Nyquist for low rates.

    Causal (``sosfilt``, not ``sosfiltfilt``) so nothing leaks before the onset.
    """
    nyq = 0.5 * sr
    freq = np.minimum(np.atleast_1d(np.asarray(freq, dtype=float)), 0.45 * sr)
    sos = scipy.signal.butter(order, freq / nyq if freq.size > 1 else float(freq[0] / nyq),
                              btype=kind, output="sos")
    return scipy.signal.sosfilt(sos, x)


def _metal(t: np.ndarray, sr: int, scale: float = 1.0) -> np.ndarray:
    """Six detuned square waves, the TR-808 cymbal and hi-hat oscillator bank.

    Their inharmonic ratios (and the aliasing of naive squares) give the
    clangy, non-pitched spectrum that high-passing turns into a metal sound.
    """
    freqs = scale * np.array([205.3, 304.4, 369.6, 522.7, 540.0, 800.0])
    return np.sign(np.sin(2.0 * np.pi * freqs[:, None] * t[None, :])).sum(axis=0) / len(freqs)


def _fade_tail(x: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    """Fade the last ``fraction`` of a one-shot to zero.

    The decays are cut while still audible (a crash would otherwise ring for
    ten seconds); a long fade makes the cut sound like a natural choke.
    """
    n = int(len(x) * fraction)
    if n > 1:
        x[-n:] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, n)))
    return x


# ----------------------------------------------------------------------------- voices
# Each voice returns a float64 one-shot whose first sample is its onset.

def _kick(sr, rng):
    t = _time(0.6, sr)
    body = _sweep(170.0, 48.0, 0.035, t, sr) * np.exp(-t / 0.22)
    click = _filter(rng.standard_normal(len(t)), "bandpass", (1500.0, 5000.0), sr, 2) * np.exp(-t / 0.0015)
    x = body + 0.25 * click / max(np.max(np.abs(click)), 1e-12)
    x[0] += 0.3  # the beater transient: a kick must speak on its first sample
    return np.tanh(1.4 * x)  # a little saturation adds weight without new highs


def _snare(sr, rng):
    t = _time(0.45, sr)
    body = (_sweep(230.0, 185.0, 0.02, t, sr) * np.exp(-t / 0.07)
            + 0.5 * _sweep(380.0, 330.0, 0.02, t, sr) * np.exp(-t / 0.05))
    noise = _filter(rng.standard_normal(len(t)), "bandpass", (1200.0, 9000.0), sr, 2)
    noise *= np.exp(-t / 0.11) / max(np.max(np.abs(noise)), 1e-12)
    x = 0.5 * body + 1.1 * noise
    x[0] += 0.2  # stick on the head
    return x


def _hihat(sr, rng, decay_s, duration_s):
    t = _time(duration_s, sr)
    raw = 0.7 * _metal(t, sr, scale=1.7) + 0.5 * rng.standard_normal(len(t))
    bright = _filter(_filter(raw, "bandpass", (6500.0, 13000.0), sr, 2), "highpass", 6000.0, sr, 4)
    env = np.exp(-t / decay_s)
    return bright * env


def _tom(sr, rng, pitch_hz, decay_s):
    t = _time(decay_s * 5.0, sr)
    body = _sweep(1.45 * pitch_hz, pitch_hz, 0.05, t, sr) * np.exp(-t / decay_s)
    overtone = _sweep(2.5 * pitch_hz, 1.6 * pitch_hz, 0.05, t, sr) * np.exp(-t / (0.3 * decay_s))
    stick = _filter(rng.standard_normal(len(t)), "bandpass", (1000.0, 5000.0), sr, 2) * np.exp(-t / 0.004)
    x = body + 0.25 * overtone + 0.15 * stick / max(np.max(np.abs(stick)), 1e-12)
    x[0] += 0.2
    return np.tanh(1.2 * x)


def _crash(sr, rng):
    t = _time(2.8, sr)
    raw = 0.6 * _metal(t, sr, scale=2.3) + rng.standard_normal(len(t))
    wash = _filter(raw, "highpass", 3500.0, sr, 4)
    # A fast bloom on top of the long decay: the crash "splashes" then rings.
    env = 0.55 * np.exp(-t / 0.9) + 0.45 * np.exp(-t / 0.12)
    return wash * env


def _ride(sr, rng):
    t = _time(2.2, sr)
    partials = [(523.0, 0.9, 1.2), (787.0, 0.6, 0.9), (1109.0, 0.5, 0.8),
                (2489.0, 0.35, 0.6), (3377.0, 0.3, 0.5), (4711.0, 0.2, 0.4)]
    bell = sum(a * np.sin(2.0 * np.pi * f * t) * np.exp(-t / d) for f, a, d in partials)
    raw = 0.6 * _metal(t, sr, scale=3.1) + 0.6 * rng.standard_normal(len(t))
    shimmer = _filter(raw, "highpass", 5000.0, sr, 4) * (0.6 * np.exp(-t / 0.8) + 0.4 * np.exp(-t / 0.05))
    ping = _filter(rng.standard_normal(len(t)), "bandpass", (2500.0, 8000.0), sr, 2) * np.exp(-t / 0.006)
    x = 0.25 * bell + shimmer + 0.8 * ping
    return x


#: Per class: voice, peak level at velocity 127 (a rough mix balance), and the
#: corner (Hz) above which velocity controls brightness.
_VOICES = (
    (_kick, 0.90, 900.0),
    (_snare, 0.80, 3000.0),
    (lambda sr, rng: _hihat(sr, rng, 0.035, 0.25), 0.45, 9000.0),
    (lambda sr, rng: _hihat(sr, rng, 0.35, 1.5), 0.45, 9000.0),
    (lambda sr, rng: _tom(sr, rng, 98.0, 0.32), 0.75, 1200.0),
    (lambda sr, rng: _tom(sr, rng, 138.0, 0.27), 0.72, 1500.0),
    (lambda sr, rng: _tom(sr, rng, 185.0, 0.22), 0.70, 1800.0),
    (_crash, 0.55, 7000.0),
    (_ride, 0.40, 6000.0),
)
assert len(_VOICES) == N_CLASSES


# ----------------------------------------------------------------------------- kit

class DrumKit:
    """The 9 synthesized one-shots at one sample rate, rendered on first use.

    Each one-shot is kept as two layers -- a low "body" and the high "air"
    above a per-class corner -- so a velocity is applied by one weighted sum
    instead of re-filtering every hit.

    Parameters
    ----------
    sample_rate : int
        Sample rate of the one-shots, Hz.

    Examples
    --------
    >>> kit = DrumKit(48000)
    >>> snare = kit.sample(1, 100)
    >>> snare.dtype.name, len(snare) == kit.length(1)
    ('float32', True)
    """

    def __init__(self, sample_rate: int = 48000):
        sample_rate = int(sample_rate)
        if sample_rate < 8000:
            raise ValueError(f"sample rate {sample_rate} Hz is too low for drums (need >= 8000)")
        self.sample_rate = sample_rate
        self._layers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def layers(self, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (body, air) float32 layers of a class; their sum is the velocity-127 one-shot."""
        c = _check_class(class_index)
        key = (c, self.sample_rate)
        if key not in self._layers:
            self._layers[key] = _render_layers(c, self.sample_rate)
        return self._layers[key]

    def length(self, class_index: int) -> int:
        """Length in samples of a class's one-shot."""
        return len(self.layers(class_index)[0])

    def sample(self, class_index: int, velocity: int) -> np.ndarray:
        """The one-shot of a class at a velocity (float32, a new array).

        Parameters
        ----------
        class_index : int
            Drum class, 0-8 (:data:`rolypoly.drum_map.CLASS_NAMES`).
        velocity : int
            MIDI velocity; clipped into 1-127.
        """
        body, air = self.layers(class_index)
        g = velocity_gain(velocity)
        return (g * body + (g * _brightness(velocity)) * air).astype(np.float32)

    def __repr__(self) -> str:
        return f"DrumKit(sample_rate={self.sample_rate}, rendered={sorted(c for c, _ in self._layers)})"


def _check_class(class_index) -> int:
    c = int(class_index)
    if c != class_index or not 0 <= c < N_CLASSES:
        raise ValueError(f"drum class {class_index!r} is not one of 0..{N_CLASSES - 1} "
                         f"({', '.join(CLASS_NAMES)})")
    return c


def _render_layers(c: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    voice, peak, corner = _VOICES[c]
    x = _fade_tail(np.asarray(voice(sr, np.random.default_rng(_SEED_BASE + c)), dtype=np.float64))
    x *= peak / np.max(np.abs(x))
    body = _filter(x, "lowpass", corner, sr, 2)
    return body.astype(np.float32), (x - body).astype(np.float32)


def drum_sample(class_index: int, velocity: int, sample_rate: int = 48000) -> np.ndarray:
    """Synthesize one drum hit.

    A convenience for one-off use; it renders the class from scratch, so
    keep a :class:`DrumKit` when rendering many hits.

    Parameters
    ----------
    class_index : int
        Drum class, 0-8 (kick, snare, closed_hihat, open_hihat, low_tom,
        mid_tom, high_tom, crash, ride).
    velocity : int
        MIDI velocity 1-127 (clipped into that range).
    sample_rate : int
        Hz.

    Returns
    -------
    audio : ndarray, float32, mono
        The one-shot; its first sample is the onset.

    Examples
    --------
    >>> kick = drum_sample(0, 110)
    >>> kick.dtype.name, 0.2 < len(kick) / 48000 < 1.0
    ('float32', True)
    """
    return DrumKit(sample_rate).sample(class_index, velocity)


# ----------------------------------------------------------------------------- rendering

def render_hits(events: Iterable, sample_rate: int, length: int, kit: DrumKit | None = None) -> np.ndarray:
    """Mix drum hits into a mono buffer.

    Parameters
    ----------
    events : iterable of (time_s, hits, velocities)
        ``time_s`` is seconds from sample 0; ``hits`` a bool vector of 9
        classes and ``velocities`` their MIDI velocities (clipped into
        1-127, so a flagged hit always sounds). A hit before 0 s
        contributes the part of its decay that falls after 0; hits at or
        after ``length`` and non-finite times are skipped.
    sample_rate : int
        Hz.
    length : int
        Number of output samples; decays running past the end are cut.
    kit : DrumKit, optional
        Kit to render with (reuse one across calls to skip re-synthesis);
        a new one at ``sample_rate`` when omitted.

    Returns
    -------
    audio : ndarray, float32, shape (length,)
        The mix, scaled down to a peak of 0.99 only when it would exceed
        that; otherwise at the velocity levels.

    Examples
    --------
    >>> hits = np.zeros(9, bool); hits[0] = True
    >>> audio = render_hits([(0.25, hits, np.full(9, 100))], 48000, 48000)
    >>> int(np.flatnonzero(np.abs(audio) > 1e-3)[0])
    12000
    """
    length = int(length)
    if length < 0:
        raise ValueError(f"length must be >= 0 samples, got {length}")
    from .limits import MAX_MIX_SECONDS, check_seconds

    check_seconds(length / sample_rate, "drum mix", limit=MAX_MIX_SECONDS, what="would last")
    if kit is None:
        kit = DrumKit(sample_rate)
    elif kit.sample_rate != int(sample_rate):
        raise ValueError(f"kit renders at {kit.sample_rate} Hz, asked for {sample_rate} Hz")
    # float32 throughout: only a handful of tails overlap at any sample, so
    # float64 would buy no audible precision and cost half the mixing speed.
    out = np.zeros(length, dtype=np.float32)
    # A take repeats few (class, velocity) pairs, so each one-shot is made once
    # and every hit is then a single add; local to the call so memory stays bounded.
    shots: dict[tuple[int, int], np.ndarray] = {}
    for time_s, hits, velocities in events:
        time_s = float(time_s)
        if not math.isfinite(time_s):
            continue
        start = int(round(time_s * sample_rate))
        if start >= length:
            continue
        hits = np.asarray(hits, dtype=bool).reshape(-1)
        velocities = np.asarray(velocities).reshape(-1)
        if hits.shape != (N_CLASSES,) or velocities.shape != (N_CLASSES,):
            raise ValueError(f"an event needs {N_CLASSES} hits and {N_CLASSES} velocities, "
                             f"got {hits.size} and {velocities.size}")
        for c in np.flatnonzero(hits):
            key = (int(c), int(np.clip(np.rint(velocities[c]), 1, 127)))
            shot = shots.get(key)
            if shot is None:
                shot = shots[key] = kit.sample(*key)
            skip = max(0, -start)           # the part of a hit before sample 0 is gone
            a, b = start + skip, min(length, start + len(shot))
            if b > a:
                out[a:b] += shot[skip:skip + b - a]
    peak = float(np.max(np.abs(out))) if length else 0.0
    if peak > CLIP_LEVEL:
        out *= np.float32(CLIP_LEVEL / peak)
    return out


def render_midi(path, sample_rate: int = 48000, kit: DrumKit | None = None) -> np.ndarray:
    """Render a drum MIDI file with the built-in kit, as played (microtiming included).

    Rows are read with :func:`rolypoly.score.load_score` and sounded at their
    played time, ``onset_s + played_offset * bar_ms / 1000``, so humanized
    files are heard with their timing.

    Parameters
    ----------
    path : str or os.PathLike
        A Standard MIDI File with drums on channel 10.
    sample_rate : int
        Hz.
    kit : DrumKit, optional
        Kit to render with.

    Returns
    -------
    audio : ndarray, float32, mono
        Sample 0 is 0 s of the file (a first hit played ahead of it loses
        its start), long enough for the last hit to ring out.

    Examples
    --------
    >>> audio = render_midi("groove.mid")                          # doctest: +SKIP
    >>> import soundfile; soundfile.write("groove.wav", audio, 48000)  # doctest: +SKIP
    """
    from rolypoly.score import load_score

    score = load_score(os.fspath(path))
    kit = DrumKit(sample_rate) if kit is None else kit
    times = score.onset_s + score.played_offset * score.bar_ms / 1000.0
    ends = [t + max(kit.length(c) for c in np.flatnonzero(h)) / sample_rate
            for t, h in zip(times, score.hits)]
    length = int(math.ceil(max(ends) * sample_rate))
    return render_hits(zip(times, score.hits, score.velocities), sample_rate, length, kit=kit)
