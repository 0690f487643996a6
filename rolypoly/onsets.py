"""Hearing the partner's notes start, within a few milliseconds.

rolypoly~ used a very fast time-domain onset detector (paper, footnote 5):
the drummer has to react while the note is still young. A time-domain
detector alone is fast but deaf to what real players do: a soft piano note
under a pedalled chord, a hammer-on, the second string of a strum. This
detector keeps the speed and listens the way onset research does, in three
stages, all streaming and real-time safe (madmom-like processors: the same
code runs over a file and inside the audio callback):

1. **Listening** (:class:`Listener`), one *hop* of 64 samples (1.3 ms at
   48 kHz) at a time:

   * a DC blocker, so offsets and rumble are never mistaken for level;
   * log energies in 22 bands (a third of an octave) of the spectrum of the
     last 21 ms -- fine enough in frequency to hear a low piano note start
     under a ringing chord -- with a window tapered only at its old end, so
     the newest samples count fully; and how much each band rose since one
     and three hops ago (log-spectral flux);
   * the energy in five time-domain bands (broadband, low, middle, presence
     above 3 kHz where a pick or hammer stands out, air above 8 kHz) for
     each of the last 8 quarter-hops: sharp in time, and where in a hop the
     attack fell.

2. **Deciding** (:class:`OnsetNet`): a small causal network -- one dense
   layer, one GRU, a head -- reads each hop's features and gives the
   probability that a note started within the last few hops, and how long
   ago. It is trained by ``rolypoly pretrain onsets`` on performances
   rendered from sampled instruments whose onsets are known by construction
   (:mod:`rolypoly.pretrain.partner_render`); the weights ship in
   ``rolypoly/weights/onsets.safetensors`` with their metrics JSON.

3. **Picking**, two ways to hear a note, one minimum interval between them:

   * the *fast trigger* (:class:`_Trigger`, rolypoly's original envelope
     detector on the listener's presence and air bands): fires within a hop
     of a clean attack (a pick, a hammer, a key) and places it
     sample-exactly, tracing fast - slow envelope back to where it rose.
     While the input clips (and :data:`CLIP_HOLD_MS` after) it is deaf:
     every edge of a flattened wave is a burst in those bands;
   * the *network*: an onset when the probability rises through
     ``threshold`` while the signal is above the ``silence_db`` gate and
     ``min_ioi_ms`` has passed since the last onset (else it was that note),
     and two bands rose clearly (or one by 9 dB: a steady buzz, a legato
     release, a low string's bursts never do); it re-arms once the
     probability has fallen below ``rearm``. It catches what the trigger
     misses: soft and legato notes, a low note under a ringing chord. The
     attack is placed where the second band to rise began (a lone band's
     earlier step is the note before), or where the trigger's rise began
     if that is later.

Presets per instrument (:data:`INSTRUMENTS`) set the threshold, gate and
minimum interval; a calibration from a minute of the partner playing alone
(:func:`calibrate`) sets the threshold and gate for that player's room.

Every buffer is made in ``__init__``: :meth:`OnsetDetector.process` does a
fixed amount of work per hop. Listening, the trigger's envelopes and the
network's step are one call of a small C kernel (``onsets_core.c``,
compiled on first use like the real-time core, :mod:`rolypoly.native`): at a
64-sample hop the hundred-odd numpy calls of the same work cost most of the
hop's budget in call overhead alone. The numpy code beside it is the
reference (the C kernel is tested to hear the same onsets) and the fallback
where there is no C compiler (said once); the picking stays in Python, on
the same arrays, for files and the live stream alike.

Each onset reports

``sample``
    stream sample index where the attack started;
``available``
    stream sample index at the end of the hop in which it was decided --
    the moment the drummer can use it;
``strength``
    how sure, between the threshold and 1: the network's probability at the
    decision, or for the trigger how far the attack rose (1 - e^(-dB/12)
    of the way from the threshold to 1);
``descriptor``
    spectral centroid of the last 21 ms, as a fraction of Nyquist
    (0 = dark, 1 = bright): a cheap "what did the partner play".

>>> import numpy as np
>>> from rolypoly.onsets import OnsetDetector
>>> det = OnsetDetector(sample_rate=48000)
>>> x = np.zeros(8000, dtype=np.float32); x[4000:4400] = 0.5 * np.sin(np.arange(400) * 0.3)
>>> found = det.process(x)
>>> int(found["sample"][0]), int(found["available"][0]) - 4000 <= 256
(4001, True)
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from rolypoly.errors import RolypolyError

__all__ = ["OnsetDetector", "Listener", "OnsetNet", "ONSET_DTYPE", "INSTRUMENTS", "N_FEATURES",
           "FEATURE_NAMES", "default_onset_weights", "detect", "detect_file", "calibrate",
           "calibrated_settings", "session_settings", "match_onsets"]

#: One reported onset; :meth:`OnsetDetector.process` returns an array of these.
ONSET_DTYPE = np.dtype([
    ("sample", np.int64),
    ("available", np.int64),
    ("strength", np.float32),
    ("descriptor", np.float32),
])

#: Reference rate: every length below is given at 48 kHz and scaled to the stream's rate.
REFERENCE_RATE = 48000
HOP = 64                          # 1.33 ms: detection is decided at hop ends
FRAME_HOPS = 16                   # 21 ms: frequency detail (a low note under a ringing chord)
TAPER = 32                        # the window falls to zero over its newest 0.7 ms only
SPECTRUM_BANDS = (40.0, 16000.0, 3)   # (lowest, highest centre in Hz, bands per octave)
FLUX_LAGS = (1, 3)                # hops back the band rises are measured against
#: Time-domain bands, heard a quarter hop at a time: (high-pass corner, sections, low-pass
#: corner, sections) in Hz and one-pole sections, 0 for none. Broadband first: its level is
#: the silence gate's.
BANDS = ((0.0, 0, 0.0, 0),        # broadband
         (0.0, 0, 300.0, 2),      # low: a bass note, the piano's left hand
         (300.0, 2, 2000.0, 2),   # middle
         (3000.0, 4, 0.0, 0),     # presence: pick, hammer, fingers
         (8000.0, 4, 0.0, 0))     # air
QUARTERS = 8                      # quarter-hop energies over the last two hops
HISTORY_HOPS = 4                  # how far back (hops) an attack may be traced

# Level floor: log of a true zero must still be a number (-140 dB is far
# below 24-bit noise, so it never matters musically).
_TINY = 1e-7
_FLOOR_DB = 20.0 * math.log10(_TINY)
_DB_PER_NEPER = 20.0 / math.log(10.0)
_DC_BLOCK_HZ = 20.0               # below the lowest bass string: removes DC, leaves the music
_RELEASE_MS = 12.0                # peak follower's fall when placing an attack
_ATTACK_RISE_DB = 6.0             # a band that rose this much since before the onset can place it,
_ATTACK_START_DB = 3.0            # at its first sample this far above where it started
#: An onset the network hears needs this many bands to have risen ``_ATTACK_RISE_DB`` around it: a
#: note brings energy across the spectrum. A steady buzz (a clipped square wave, a distorted drone)
#: never does, however onset-like its edges look to the network, nor does a lone band's wobble
#: (the release of a legato note, a low string's bursts).
_EVIDENCE_BANDS = 2
_EVIDENCE_LONE_DB = 9.0           # ... or one band this much (a soft low note under a ringing chord)

#: The fast trigger (:class:`_Trigger`): which of :data:`BANDS` it listens to (presence and air),
#: the rise of fast over slow envelope (dB) that fires it, the rise it must fall below to re-arm,
#: the rise below which the attack is traced back to, the slow envelope's time constant (ms), and
#: the lowest silence gate it fires above (dBFS, peak level: clean attacks only).
TRIGGER_BANDS = (3, 4)
TRIGGER_DB = 6.0
TRIGGER_REARM_DB = 2.0
TRIGGER_BACKTRACK_DB = 2.0
TRIGGER_SLOW_MS = 30.0
TRIGGER_GATE_DB = -50.0
#: A clipped input (a sample this close to full scale) makes every edge of the flattened wave a
#: burst in the presence and air bands, note or not: the trigger stays silent while the input
#: clips and for this long after (ms), and the network -- which needs bands across the spectrum
#: to agree -- decides alone.
CLIP_LEVEL = 0.99
CLIP_HOLD_MS = 30.0

#: Per-instrument presets: silence gate (dBFS) and minimum interval (ms). The decision
#: threshold of each is the one that scored best on that family's validation takes when the
#: network was trained (in the weights' config); ``auto`` takes the best over all of them.
INSTRUMENTS = {
    "auto": dict(silence_db=-70.0, min_ioi_ms=30.0),
    "guitar": dict(silence_db=-70.0, min_ioi_ms=30.0),
    "bass": dict(silence_db=-70.0, min_ioi_ms=40.0),
    "piano": dict(silence_db=-70.0, min_ioi_ms=30.0),
    "keys": dict(silence_db=-70.0, min_ioi_ms=30.0),
    "voice": dict(silence_db=-65.0, min_ioi_ms=60.0),
}
#: Who does each hop's work (:class:`OnsetDetector`'s ``kernel``).
KERNELS = ("auto", "c", "numpy")
#: The detector re-arms once the probability has fallen below this share of the threshold.
REARM_SHARE = 0.6


class OnsetSettingsError(RolypolyError, ValueError):
    """A detector setting out of range: one line at the command line, a ValueError to callers."""


def _scaled(n: int, sample_rate: int) -> int:
    return max(1, int(round(n * sample_rate / REFERENCE_RATE)))


def default_onset_weights():
    """Path of the shipped onset network (trained by ``rolypoly pretrain onsets``)."""
    from rolypoly.paths import SHIPPED_WEIGHTS

    return SHIPPED_WEIGHTS / "onsets.safetensors"


# ----------------------------------------------------------------------
# Time-domain pieces (from the original detector)


def _cascade_reference(x, state, sections):
    """One-pole sections in series over one hop (the definition).

    ``sections`` are ("hp" or "lp", coefficient R): a high-pass
    y[n] = R (y[n-1] + x[n] - x[n-1]) or a low-pass y[n] = (1 - R) x[n] + R y[n-1].
    ``state`` holds the input's last sample and each section's last output.
    """
    import scipy.signal

    src, last_in, new_state = x, state[0], [x[-1]]
    for i, (kind, c) in enumerate(sections):
        last_out = state[1 + i]
        if kind == "hp":
            src, _ = scipy.signal.lfilter([c, -c], [1.0, -c], src, zi=[c * (last_out - last_in)])
        else:
            src, _ = scipy.signal.lfilter([1.0 - c], [1.0, -c], src, zi=[c * last_out])
        last_in = last_out            # this section's output feeds the next
        new_state.append(src[-1])
    return src, np.asarray(new_state)


def _band_sections(sample_rate: int) -> list:
    """Each band's one-pole sections (after the DC blocker), from :data:`BANDS`."""
    def coef(hz):
        return math.exp(-2.0 * math.pi * min(hz, 0.4 * sample_rate) / sample_rate)

    return [[("hp", coef(hp))] * n_hp + [("lp", coef(lp))] * n_lp for hp, n_hp, lp, n_lp in BANDS]


def _filters_reference(x, state, sample_rate):
    """The DC blocker, then each band's sections, over one hop (the definition).

    Returns the bands' outputs stacked and the new state.
    """
    dc = [("hp", math.exp(-2.0 * math.pi * _DC_BLOCK_HZ / sample_rate))]
    dry, dc_state = _cascade_reference(x, state[:2], dc)
    outputs, states, at = [], [dc_state], 2
    for sections in _band_sections(sample_rate):
        if not sections:
            outputs.append(dry)
            continue
        y, st = _cascade_reference(dry, state[at:at + len(sections) + 1], sections)
        outputs.append(y)
        states.append(st)
        at += len(sections) + 1
    return np.concatenate(outputs), np.concatenate(states)


class _Filters:
    """DC blocker and the bands' filters, a hop at a time, as one product.

    Everything is linear, so a hop of every band's output *and* the carried
    state after it are one matrix times [input hop; state before]. The
    matrix is built by running the plain definition on unit vectors.

    >>> f = _Filters(48000, 64)
    >>> x = np.zeros(64); x[10] = 1.0
    >>> out = f.run(x)
    >>> out.shape, round(float(out[0, 10]), 4)
    ((5, 64), 0.9974)
    """

    def __init__(self, sample_rate: int, hop: int):
        n_state = 2 + sum(len(sections) + 1 for sections in _band_sections(sample_rate) if sections)
        n_bands = len(BANDS)
        n_out = n_bands * hop
        size_in = hop + n_state
        matrix = np.empty((n_out + n_state, size_in))
        for j, unit in enumerate(np.eye(size_in)):
            y, state = _filters_reference(unit[:hop], unit[hop:], sample_rate)
            matrix[:n_out, j] = y
            matrix[n_out:, j] = state
        self._matrix = matrix
        self._hop, self._n_out = hop, n_out
        self._io = np.zeros(size_in)            # [input hop; carried state]
        self._result = np.zeros(n_out + n_state)
        self.out = self._result[:n_out].reshape(n_bands, hop)

    def reset(self) -> None:
        self._io.fill(0.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Filter one hop: (bands, hop) view, the DC-blocked signal in row 0."""
        self._io[:self._hop] = x
        np.dot(self._matrix, self._io, out=self._result)
        self._io[self._hop:] = self._result[self._n_out:]
        return self.out


# ----------------------------------------------------------------------
# Spectra


def _window(n: int, taper: int) -> np.ndarray:
    """Rises (half Hann) over all but the newest ``taper`` samples, falls over those.

    The attack that just arrived sits at the *end* of the frame: a
    symmetric window would hide it under its tail for half a frame.

    >>> w = _window(256, 32)
    >>> float(w[0]), round(float(w.max()), 3), float(w[-1]) < 0.01
    (0.0, 1.0, True)
    """
    rise = n - taper
    w = np.empty(n)
    w[:rise] = np.sin(0.5 * np.pi * np.arange(rise) / rise) ** 2
    w[rise:] = np.cos(0.5 * np.pi * (np.arange(taper) + 1) / (taper + 1)) ** 2
    return w


def _filterbank(sample_rate: int, n_fft: int, low: float, high: float, per_octave: int) -> np.ndarray:
    """Triangular bands on log-spaced centres, rows summing to one (band = mean power).

    Centres closer than one FFT bin are merged, so every band holds at least one bin.

    >>> fb = _filterbank(48000, 1024, 40.0, 16000.0, 3)
    >>> fb.shape[1], bool(np.allclose(fb.sum(axis=1), 1.0))
    (513, True)
    """
    n_bins = n_fft // 2 + 1
    bin_hz = sample_rate / n_fft
    high = min(high, 0.45 * sample_rate)
    n_centres = int(math.floor(math.log2(high / low) * per_octave)) + 1
    centres = low * 2.0 ** (np.arange(n_centres) / per_octave)
    bins = np.unique(np.round(centres / bin_hz).astype(int))
    bins = bins[(bins >= 1) & (bins < n_bins - 1)]
    edges = np.concatenate([[max(bins[0] - 1, 0)], bins, [min(bins[-1] + 1, n_bins - 1)]])
    fb = np.zeros((len(bins), n_bins))
    k = np.arange(n_bins)
    for i in range(len(bins)):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (k - lo) / max(mid - lo, 1)
        down = (hi - k) / max(hi - mid, 1)
        fb[i] = np.clip(np.minimum(up, down), 0.0, None)
        fb[i, mid] = 1.0
    return fb / fb.sum(axis=1, keepdims=True)


class _Spectrum:
    """Log band energies (in bels: the network's input is normalised anyway) of the newest frame of
    audio, and how much each rose over the last hops."""

    def __init__(self, sample_rate: int, hop: int):
        self.size = FRAME_HOPS * hop
        self.window = _window(self.size, _scaled(TAPER, sample_rate))
        self.fb = np.ascontiguousarray(_filterbank(sample_rate, self.size, *SPECTRUM_BANDS))
        self.n_bands = self.fb.shape[0]
        n_bins = self.size // 2 + 1
        self._frame = np.zeros(self.size)
        self._spec = np.zeros(n_bins, np.complex128)
        # Fewer calls per hop (at a 64-sample hop the calls cost more than the arithmetic): the
        # filterbank reads the squared real and imaginary parts directly (each bin's weight twice)
        # and a last input held at 1 adds the level floor in the same product.
        # Only the bins some band uses.
        used = np.flatnonzero(self.fb.any(axis=0))
        lo, hi = int(used[0]), int(used[-1]) + 1
        self._parts = self._spec.view(np.float64)[2 * lo:2 * hi]
        self._squares = np.ones(2 * (hi - lo) + 1)
        self._fb_parts = np.zeros((self.n_bands, 2 * (hi - lo) + 1))
        self._fb_parts[:, 0:-1:2] = self.fb[:, lo:hi]
        self._fb_parts[:, 1:-1:2] = self.fb[:, lo:hi]
        self._fb_parts[:, -1] = _TINY * _TINY
        self.power = np.zeros(n_bins)         # |X|^2 of the newest frame (by :meth:`update_power`)
        self.history = np.zeros((max(FLUX_LAGS) + 1, self.n_bands))   # ring of band levels
        self._at = 0
        self.reset()

    def reset(self) -> None:
        self.history.fill(2 * math.log10(_TINY))
        self._at = 0

    def run(self, recent: np.ndarray, out: np.ndarray) -> None:
        """``out`` = [levels, rise over each lag]; ``recent`` is the newest frame of audio, oldest first."""
        np.multiply(recent, self.window, out=self._frame)
        np.fft.rfft(self._frame, out=self._spec)
        np.square(self._parts, out=self._squares[:-1])
        n = self.n_bands
        level = out[:n]
        np.dot(self._fb_parts, self._squares, out=level)
        np.log10(level, out=level)
        depth = len(self.history)
        self._at = (self._at + 1) % depth
        self.history[self._at] = level
        for i, lag in enumerate(FLUX_LAGS):
            np.subtract(level, self.history[(self._at - lag) % depth], out=out[n * (i + 1):n * (i + 2)])

    def update_power(self) -> np.ndarray:
        """|X|^2 of the newest frame into :attr:`power` (only when it is wanted: at a detection)."""
        np.abs(self._spec, out=self.power)
        np.square(self.power, out=self.power)
        return self.power


class Listener:
    """The detector's ears: one feature row per hop (see the module docstring).

    Parameters
    ----------
    sample_rate : int
        Stream rate; every length is scaled from its 48 kHz value.

    Attributes
    ----------
    features : np.ndarray
        The newest hop's feature row (:data:`N_FEATURES` values, see
        :data:`FEATURE_NAMES`), overwritten by every :meth:`run`.
    trace : np.ndarray
        (bands, hops * hop): the bands' audio over the last few hops, a ring
        of hops along time whose newest hop is hop number ``trace_at``.
    level_db : float
        Level of the newest hop (dBFS: mean power of its loudest quarter, DC blocked).

    Examples
    --------
    >>> ears = Listener(48000)
    >>> rows = ears.listen(np.zeros(4800, np.float32))
    >>> rows.shape == (75, N_FEATURES)
    True
    """

    def __init__(self, sample_rate: int = REFERENCE_RATE):
        sr = self.sample_rate = int(sample_rate)
        self.hop = hop = _scaled(HOP, sr)
        self.filters = _Filters(sr, hop)
        self.spectrum = _Spectrum(sr, hop)
        # Newest audio: every hop written twice, so the newest frame is always one slice.
        self._size = self.spectrum.size
        self._ring = np.zeros(2 * self._size)
        self._pos = 0                           # where the next hop goes (a multiple of hop)
        n_spec = self.spectrum.n_bands * (1 + len(FLUX_LAGS))
        self._spec_out = slice(0, n_spec)
        # Energy per quarter hop and band over the last two hops: sharp in time, and where in a hop.
        n_bands, half = len(BANDS), QUARTERS // 2
        quarter = hop // half
        self._quarter_in = self.filters.out[:, :quarter * half].reshape(n_bands, half, quarter)
        self._quarter_sq = np.zeros(self._quarter_in.shape)
        self._quarter_db = 10.0 * math.log10(1.0 / quarter)     # log10 of a sum of squares -> dB of mean power
        self.n_features = n_spec + n_bands * QUARTERS
        self.features = np.zeros(self.n_features)
        # log10 of each quarter's sum of squares, per band; the features' own memory.
        self._quarters = self.features[n_spec:].reshape(n_bands, QUARTERS)
        # The bands' audio of the last few hops (a ring of hops), for placing an attack.
        self.trace = np.zeros((n_bands, (HISTORY_HOPS + 1) * hop))
        self.trace_at = 0
        self.level_db = _FLOOR_DB
        self._bin_pos = np.linspace(0.0, 1.0, len(self.spectrum.power))
        self._magnitude = np.zeros(len(self.spectrum.power))
        self.reset()

    def reset(self) -> None:
        self.filters.reset()
        self.spectrum.reset()
        self._ring.fill(0.0)
        self._pos = 0
        self.features.fill(0.0)
        self._quarters.fill(2 * math.log10(_TINY))
        self.trace.fill(0.0)
        self.trace_at = 0
        self.level_db = _FLOOR_DB

    def recent(self, n: int) -> np.ndarray:
        """The newest ``n`` DC-blocked samples (up to a frame), oldest first (a view)."""
        end = (self._pos or self._size) + self._size
        return self._ring[end - n:end]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Hear one hop (``hop`` samples); returns :attr:`features` (a view, overwritten next hop)."""
        bands = self.filters.run(x)
        size, hop, pos = self._size, self.hop, self._pos
        self._ring[pos:pos + hop] = bands[0]
        self._ring[size + pos:size + pos + hop] = bands[0]
        self._pos = (pos + hop) % size
        self.trace_at = (self.trace_at + 1) % (HISTORY_HOPS + 1)
        self.trace[:, self.trace_at * hop:(self.trace_at + 1) * hop] = bands
        f = self.features
        self.spectrum.run(self.recent(size), f[self._spec_out])
        q, half = self._quarters, QUARTERS // 2
        q[:, :half] = q[:, half:]
        new = q[:, half:]
        np.square(self._quarter_in, out=self._quarter_sq)
        np.add.reduce(self._quarter_sq, axis=2, out=new, initial=_TINY * _TINY)
        np.log10(new, out=new)
        self.level_db = 10.0 * float(new[0].max()) + self._quarter_db
        return f

    def listen(self, audio: np.ndarray) -> np.ndarray:
        """Feature rows of a whole mono signal, hop by hop exactly as live (from a fresh state)."""
        self.reset()
        audio = np.asarray(audio, dtype=np.float64)
        n = len(audio) // self.hop
        rows = np.zeros((n, self.n_features), np.float32)
        for i in range(n):
            rows[i] = self.run(audio[i * self.hop:(i + 1) * self.hop])
        return rows

    def centroid(self) -> float:
        """Spectral centroid (of magnitudes) of the newest frame, 0..1 of Nyquist (at a detection only)."""
        mag = self._magnitude
        np.sqrt(self.spectrum.update_power(), out=mag)
        total = mag.sum()
        if total <= 1e-12:
            return 0.0
        return float(np.dot(mag, self._bin_pos) / total)


# ----------------------------------------------------------------------
# The fast trigger (the original envelope detector)


def _one_pole_matrix(coef: float, hop: int):
    """Matrix and powers that run y[n] = coef * y[n-1] + u[n] over a hop: y = u @ M.T + p * y[-1].

    >>> m, p = _one_pole_matrix(0.5, 3)
    >>> m.tolist(), p.tolist()
    ([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.25, 0.5, 1.0]], [0.5, 0.25, 0.125])
    """
    n = np.arange(hop)
    lag = n[:, None] - n[None, :]
    matrix = np.where(lag >= 0, coef ** np.maximum(lag, 0).astype(float), 0.0)
    return np.ascontiguousarray(matrix), coef ** (n + 1.0)


class _Trigger:
    """The fast path: rolypoly's original time-domain detector, on the listener's bands.

    In the presence and air bands (where a pick, finger or hammer stands out
    from notes already ringing) a *fast* envelope -- a peak follower in dB,
    instant attack, 12 ms release -- and a *slow* one, the fast one smoothed
    over 30 ms: the level the ear has got used to. An attack is fast - slow
    rising through :data:`TRIGGER_DB` while the peak level of the whole
    signal is above the gate. It fires within a hop of a clean attack and
    places it sample-exactly: just after the last sample where fast - slow
    was still below :data:`TRIGGER_BACKTRACK_DB`. The network catches what it
    misses (a soft note under a loud one, a legato change).

    Works on a (bands, hop) block of the listener's filter outputs; all
    buffers are made here.
    """

    def __init__(self, sample_rate: int, hop: int, floor_db: float):
        n = 1 + len(TRIGGER_BANDS)                          # broadband level first
        assert TRIGGER_BANDS == tuple(range(TRIGGER_BANDS[0], TRIGGER_BANDS[-1] + 1)), "one slice"
        self.hop, self.floor_db = hop, floor_db
        self._drop = _DB_PER_NEPER / (_RELEASE_MS * 1e-3 * sample_rate)
        self._ramp = np.arange(hop) * self._drop
        s = math.exp(-1.0 / (TRIGGER_SLOW_MS * 1e-3 * sample_rate))
        m, powers = _one_pole_matrix(s, hop)
        # The slow envelopes in one product: each band row carries, after its hop, the slow
        # envelope's last value, which the matrix's last row (its powers) carries over the hop.
        self._slow_t = np.ascontiguousarray(np.vstack([((1.0 - s) * m).T, powers[None, :]]))
        self._rows = np.zeros((n, hop + 1))
        self.fast = self._rows[:, :hop]                    # fast envelopes, dB
        self.level = self.fast[0]                          # the whole signal's
        self._bands = self.fast[1:]
        self._slow_in = self._rows[1:]                     # [band envelopes, last slow value]
        self._slow_last = self._rows[1:, hop]
        self.slow = np.zeros((n - 1, hop))
        self._quiet = np.zeros((n - 1, hop), dtype=bool)
        self._rises = np.zeros((n - 1, hop))
        self.rise = np.zeros(hop)                          # the largest band's fast - slow
        self.previous_rise = np.zeros(hop)
        self._last = np.zeros(n)
        self._peak = np.zeros(n - 1)
        self._mask = np.zeros(hop, dtype=bool)
        self.reset()

    def reset(self) -> None:
        self._last.fill(_FLOOR_DB)
        self._slow_last.fill(_FLOOR_DB)
        self.rise.fill(0.0)
        self.previous_rise.fill(0.0)

    def run(self, bands: np.ndarray) -> None:
        """Envelopes and rise of one hop of the listener's filter outputs ((bands, hop))."""
        fast = self.fast
        np.abs(bands[0], out=fast[0])
        np.abs(bands[TRIGGER_BANDS[0]:TRIGGER_BANDS[-1] + 1], out=self._bands)
        fast += _TINY
        np.log10(fast, out=fast)
        fast *= 20.0
        fast += self._ramp
        self._last -= self._drop                           # the release carried over the hop edge
        np.maximum(fast[:, 0], self._last, out=fast[:, 0])
        np.maximum.accumulate(fast, axis=1, out=fast)
        fast -= self._ramp
        self._last[:] = fast[:, -1]
        np.dot(self._slow_in, self._slow_t, out=self.slow)
        self._slow_last[:] = self.slow[:, -1]
        np.subtract(self._bands, self.slow, out=self._rises)
        # A band with almost nothing in it (keys have no air) flickers by many dB on noise: no say.
        np.less(self._bands, self.floor_db, out=self._quiet)
        np.copyto(self._rises, 0.0, where=self._quiet)
        np.copyto(self.previous_rise, self.rise)           # (fixed arrays: the C kernel writes them too)
        np.maximum.reduce(self._rises, axis=0, out=self.rise)

    def get_used_to(self, upto: int) -> None:
        """Lift the slow envelopes to the peak of the hop's first ``upto`` samples (a note just heard)."""
        np.max(self._bands[:, :upto], axis=1, out=self._peak)
        np.maximum(self._slow_last, self._peak, out=self._slow_last)

    def backtrack(self, k: int) -> int:
        """Samples back from the hop's start to just after fast - slow last sat below the backtrack level.

        (0 .. k + 1 within this hop, negative into the previous hop, -hop at most.)
        """
        hop, quiet = self.hop, self._mask
        np.less(self.rise[:k + 1], TRIGGER_BACKTRACK_DB, out=quiet[:k + 1])
        if quiet[:k + 1].any():
            return k + 1 - int(np.argmax(quiet[k::-1]))
        np.less(self.previous_rise, TRIGGER_BACKTRACK_DB, out=quiet)
        if quiet.any():
            return -int(np.argmax(quiet[::-1]))
        return -hop


def _feature_names() -> list[str]:
    n_bands = _filterbank(REFERENCE_RATE, FRAME_HOPS * HOP, *SPECTRUM_BANDS).shape[0]
    bands = [f"spec{i}" for i in range(n_bands)]
    names = [f"{b}_bels" for b in bands]
    for lag in FLUX_LAGS:
        names += [f"{b}_rise{lag}_bels" for b in bands]
    for b in range(len(BANDS)):
        names += [f"band{b}_quarter{i}_log_energy" for i in range(QUARTERS)]
    return names


#: What each column of a feature row is (the one place that defines the layout).
FEATURE_NAMES = _feature_names()
N_FEATURES = len(FEATURE_NAMES)


# ----------------------------------------------------------------------
# The network, streamed in numpy


class OnsetNet:
    """The onset network stepped one hop at a time in numpy (weights from ``rolypoly pretrain onsets``).

    Dense (ReLU) -> GRU -> head with two outputs: the logit that a note
    started within the last few hops, and how long ago (in hops). Gates as
    in PyTorch's GRU (r, z, n), so the trained torch weights load as they are.

    The work per hop is a fixed handful of numpy calls: the feature
    normalisation is folded into the dense layer, every bias into its
    weights (as a column that meets a constant 1), and the gates' sigmoids
    are tanh of halved pre-activations (the halving folded in too).

    Parameters
    ----------
    tensors : dict of np.ndarray
        ``mean``, ``scale`` (feature normalisation), ``inp.weight``,
        ``inp.bias``, ``gru.weight_ih_l0``, ``gru.weight_hh_l0``,
        ``gru.bias_ih_l0``, ``gru.bias_hh_l0``, ``head.weight``, ``head.bias``.
    """

    def __init__(self, tensors: dict):
        t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
        w_in = t["inp.weight"] / t["scale"][None, :]
        b_in = t["inp.bias"] - w_in @ t["mean"]
        self.n_in, dense = w_in.shape[1], w_in.shape[0]
        H = self.hidden = t["gru.weight_hh_l0"].shape[1]
        # [x; 1] -> dense; a last dense unit that is always 1 (its ReLU keeps it) carries the GRU's biases.
        w = np.zeros((dense + 1, self.n_in + 1))
        w[:dense, :self.n_in], w[:dense, -1], w[dense, -1] = w_in, b_in, 1.0
        self._w_in = w.astype(np.float32)
        half = np.ones((3 * H, 1))
        half[:2 * H] = 0.5                      # r and z: sigmoid(a) = (1 + tanh(a / 2)) / 2
        w_ih = np.hstack([t["gru.weight_ih_l0"], t["gru.bias_ih_l0"][:, None]]) * half
        w_hh = np.hstack([t["gru.weight_hh_l0"], t["gru.bias_hh_l0"][:, None]]) * half
        # Both of the GRU's products in one, over [dense output; h; 1]: the rows give r and z's
        # pre-activations already summed, then n's input part, then n's hidden part (r scales it).
        w = np.zeros((4 * H, dense + 1 + H + 1))
        w[:2 * H, :dense + 1], w[:2 * H, dense + 1:] = w_ih[:2 * H], w_hh[:2 * H]
        w[2 * H:3 * H, :dense + 1] = w_ih[2 * H:]
        w[3 * H:, dense + 1:] = w_hh[2 * H:]
        self._w_gru = w.astype(np.float32)
        self._w_head = np.hstack([t["head.weight"], t["head.bias"][:, None]]).astype(np.float32)
        self._x = np.zeros(self.n_in + 1, np.float32)
        self._x[-1] = 1.0
        self._v = np.zeros(dense + 1 + H + 1, np.float32)    # [dense output (last unit 1); h; 1]
        self._a = self._v[:dense + 1]
        self._h1 = self._v[dense + 1:]             # [h; 1]
        self.h = self._h1[:H]
        self._g = np.zeros(4 * H, np.float32)
        self._tmp = np.zeros(H, np.float32)
        self.out = np.zeros(2, np.float32)
        self.reset()

    def reset(self) -> None:
        self._h1.fill(0.0)
        self._h1[-1] = 1.0

    def step(self, features: np.ndarray) -> np.ndarray:
        """[onset logit, hops since the onset] for one feature row (a view, overwritten next step)."""
        H = self.hidden
        self._x[:-1] = features
        np.dot(self._w_in, self._x, out=self._a)
        np.maximum(self._a, 0.0, out=self._a)
        g = self._g
        np.dot(self._w_gru, self._v, out=g)
        rz = g[:2 * H]
        np.tanh(rz, out=rz)
        rz += 1.0
        rz *= 0.5                               # r, z = sigmoid of the pre-activations
        r, z, n = g[:H], g[H:2 * H], g[2 * H:3 * H]
        np.multiply(r, g[3 * H:], out=self._tmp)
        n += self._tmp
        np.tanh(n, out=n)
        # h = (1 - z) * n + z * h = n + z * (h - n)
        np.subtract(self.h, n, out=self._tmp)
        self._tmp *= z
        np.add(n, self._tmp, out=self.h)
        np.dot(self._w_head, self._h1, out=self.out)
        return self.out


def load_onset_net(path=None) -> tuple[OnsetNet, dict]:
    """The onset network and its metadata from a safetensors file (default: the shipped one).

    Raises
    ------
    CheckpointError
        One line naming the file: missing, not safetensors, or not an onset network.
    """
    from rolypoly.errors import CheckpointError
    from rolypoly.weights_file import read_weights

    path = os.fspath(path or default_onset_weights())
    header, tensors = read_weights(path, framework="np",
                                   missing_hint=" (train one with: rolypoly pretrain onsets)")
    try:
        config = json.loads(header.get("config", "{}"))
        net = OnsetNet(tensors)
    except Exception as e:
        raise CheckpointError(f"{path}: not a rolypoly onset network ({str(e).splitlines()[0][:120]})") from None
    if net.n_in != N_FEATURES or config.get("features") != FEATURE_NAMES:
        raise CheckpointError(f"{path}: trained on another feature layout ({net.n_in} features, "
                              f"this detector has {N_FEATURES}); train again with: rolypoly pretrain onsets")
    return net, config


# ----------------------------------------------------------------------
# The per-hop kernel in C

_KERNEL_SOURCE = Path(__file__).with_name("onsets_core.c")
_MAX_BANDS, _MAX_SECTIONS, _MAX_LAGS, _MAX_FACTORS = 8, 8, 4, 32
_kernel_lib = None            # the loaded library, or False: no C compiler here (numpy then)


_CI, _CD, _CP = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p


class _KernelState(ctypes.Structure):
    """The C struct ``od_state`` of ``onsets_core.c``, field for field (see the comments there)."""

    _fields_ = [(name, _CI) for name in ("hop", "size", "n_bins", "n_spec", "depth", "n_lags")] + [
        ("lags", _CI * _MAX_LAGS)] + [(name, _CI) for name in ("trace_hops", "n_bands", "quarter", "half")] + [
        ("dc_coef", _CD), ("dc_in", _CD), ("dc_out", _CD),
        ("n_sec", _CI * _MAX_BANDS), ("sec_kind", _CI * (_MAX_BANDS * _MAX_SECTIONS)),
        ("sec_coef", _CD * (_MAX_BANDS * _MAX_SECTIONS)), ("sec_in", _CD * (_MAX_BANDS * _MAX_SECTIONS)),
        ("sec_out", _CD * (_MAX_BANDS * _MAX_SECTIONS)),
        ("bands", _CP), ("ring", _CP), ("ring_pos", _CI), ("window", _CP),
        ("m", _CI), ("n_factors", _CI), ("factors", _CI * (2 * _MAX_FACTORS)),
        ("twiddles", _CP), ("post", _CP), ("z", _CP), ("zz", _CP), ("scratch", _CP), ("bitrev", _CP), ("spec", _CP),
        ("fb_start", _CP), ("fb_len", _CP), ("fb_w", _CP), ("history", _CP), ("hist_at", _CI), ("features", _CP),
        ("quarter_db", _CD), ("level_db", _CD), ("trace", _CP), ("trace_at", _CI),
        ("trig_first", _CI), ("trig_count", _CI), ("drop", _CD), ("slow_coef", _CD), ("trig_floor_db", _CD),
        ("rows", _CP), ("slow", _CP), ("rise", _CP), ("previous_rise", _CP), ("last", _CP),
        ("rise_max", _CD), ("rise_min", _CD),
        ("n_in", _CI), ("dense", _CI), ("hidden", _CI),
        ("w_in", _CP), ("w_gru", _CP), ("w_head", _CP), ("x", _CP), ("v", _CP), ("g", _CP), ("out", _CP),
        ("env", _CP), ("span", _CP), ("peak", _CD),
    ]


def _kernel_library():
    """The compiled kernel, or None where it cannot be built (said once, on stderr: numpy runs then)."""
    global _kernel_lib
    if _kernel_lib is None:
        from rolypoly import native

        try:
            # -O3: the network's products vectorised (sums of columns, no reassociation needed)
            lib = native.load_library(_KERNEL_SOURCE, "the onset detector's C kernel", flags=("-O3",))
        except RolypolyError as exc:
            print(f"rolypoly: {exc}; the onset detector runs in numpy (slower per block)", file=sys.stderr)
            _kernel_lib = False
            return None
        lib.od_state_size.restype = ctypes.c_size_t
        lib.od_hear.restype = None
        lib.od_hear.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.od_place.restype = ctypes.c_int64
        lib.od_place.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_int64, ctypes.c_void_p]
        if lib.od_state_size() != ctypes.sizeof(_KernelState):
            raise RolypolyError(f"the onset detector's C kernel {lib._name} does not match this rolypoly "
                                f"(struct of {lib.od_state_size()} bytes, expected {ctypes.sizeof(_KernelState)})")
        _kernel_lib = lib
    return _kernel_lib or None


def _factors(n: int) -> list[int]:
    """[p, n / p, q, n / (p q), ...]: the mixed-radix FFT's stages, twos first.

    >>> _factors(512)[:4], _factors(472)[-2:]
    ([2, 256, 2, 128], [59, 1])
    """
    out, p = [], 2
    while n > 1:
        while n % p:
            p = 3 if p == 2 else p + 2
            if p * p > n:
                p = n
        n //= p
        out += [p, n]
    return out


class _Kernel:
    """The C kernel (``onsets_core.c``) over a detector's own arrays: one call per hop.

    It writes the very arrays the numpy reference writes (the listener's
    features, trace and spectrum, the trigger's envelopes and rise, the
    network's state), so the picking in Python reads the same things
    whichever ran. Only the filters', ring's and history's positions live
    in the C struct.
    """

    def __init__(self, lib, det: "OnsetDetector"):
        ears, spec, trig, net = det.ears, det.ears.spectrum, det.trigger, det.net
        hop, size = det.hop, spec.size
        if size % 2 or len(_factors(size // 2)) > 2 * _MAX_FACTORS or len(BANDS) > _MAX_BANDS:
            raise ValueError("no C kernel for this frame")
        s = self.state = _KernelState()
        self._lib, self._det = lib, det
        self._keep = []

        def ptr(array):
            assert array.flags.c_contiguous or array.ndim == 1 and array.strides[0] == array.itemsize
            self._keep.append(array)
            return array.ctypes.data

        s.hop, s.size, s.n_bins, s.n_spec = hop, size, size // 2 + 1, spec.n_bands
        s.depth, s.n_lags = len(spec.history), len(FLUX_LAGS)
        for i, lag in enumerate(FLUX_LAGS):
            s.lags[i] = lag
        s.trace_hops, s.n_bands, s.half = HISTORY_HOPS + 1, len(BANDS), QUARTERS // 2
        s.quarter = hop // s.half
        s.dc_coef = math.exp(-2.0 * math.pi * _DC_BLOCK_HZ / det.sample_rate)
        for b, sections in enumerate(_band_sections(det.sample_rate)):
            if len(sections) > _MAX_SECTIONS:
                raise ValueError("no C kernel for this filter")
            s.n_sec[b] = len(sections)
            for i, (kind, c) in enumerate(sections):
                s.sec_kind[b * _MAX_SECTIONS + i] = 0 if kind == "hp" else 1
                s.sec_coef[b * _MAX_SECTIONS + i] = c
        s.bands, s.ring, s.window = ptr(ears.filters.out), ptr(ears._ring), ptr(spec.window)
        m = size // 2
        factors = _factors(m)
        s.m, s.n_factors = m, len(factors) // 2
        for i, f in enumerate(factors):
            s.factors[i] = f
        self._twiddles = np.exp(-2j * np.pi * np.arange(m) / m)
        self._post = np.exp(-2j * np.pi * np.arange(m + 1) / size)
        self._z, self._zz = np.zeros(m, complex), np.zeros(m, complex)
        self._scratch = np.zeros(max(factors[0::2]), complex)
        s.twiddles, s.post, s.z, s.zz = ptr(self._twiddles), ptr(self._post), ptr(self._z), ptr(self._zz)
        s.scratch, s.spec = ptr(self._scratch), ptr(spec._spec)
        if m & (m - 1) == 0:
            bits = m.bit_length() - 1
            self._bitrev = np.array([int(format(n, f"0{bits}b")[::-1], 2) if bits else 0 for n in range(m)], np.int64)
            s.bitrev = ptr(self._bitrev)
        fb = spec.fb
        used = [np.flatnonzero(row) for row in fb]
        self._fb_start = np.array([u[0] for u in used], np.int64)
        self._fb_len = np.array([u[-1] + 1 - u[0] for u in used], np.int64)
        self._fb_w = np.concatenate([row[u[0]:u[-1] + 1] for row, u in zip(fb, used)])
        s.fb_start, s.fb_len, s.fb_w = ptr(self._fb_start), ptr(self._fb_len), ptr(self._fb_w)
        s.history, s.features = ptr(spec.history), ptr(ears.features)
        s.quarter_db = ears._quarter_db
        s.trace = ptr(ears.trace)
        s.trig_first, s.trig_count = TRIGGER_BANDS[0], len(TRIGGER_BANDS)
        s.drop, s.slow_coef = trig._drop, math.exp(-1.0 / (TRIGGER_SLOW_MS * 1e-3 * det.sample_rate))
        s.trig_floor_db = trig.floor_db
        s.rows, s.slow, s.rise, s.previous_rise = ptr(trig._rows), ptr(trig.slow), ptr(trig.rise), ptr(trig.previous_rise)
        s.last = ptr(trig._last)
        s.n_in, s.dense, s.hidden = net.n_in, net._w_in.shape[0] - 1, net.hidden
        self._w_in_t, self._w_gru_t = np.ascontiguousarray(net._w_in.T), np.ascontiguousarray(net._w_gru.T)
        self._w_head_t = np.ascontiguousarray(net._w_head.T)
        s.w_in, s.w_gru, s.w_head = ptr(self._w_in_t), ptr(self._w_gru_t), ptr(self._w_head_t)
        s.x, s.v, s.g, s.out = ptr(net._x), ptr(net._v), ptr(net._g), ptr(net.out)
        s.env, s.span = ptr(det._env), ptr(det._span)
        self._state_p = ctypes.addressof(s)
        self._x_p = ptr(det._x)
        self._agreeing = np.zeros(1, np.int64)
        self._agreeing_p = ptr(self._agreeing)
        self._hear, self._place = lib.od_hear, lib.od_place
        self.reset()

    def reset(self) -> None:
        """The C struct's own state back to a fresh stream (the arrays are the detector's to reset)."""
        s = self.state
        s.dc_in = s.dc_out = 0.0
        for i in range(_MAX_BANDS * _MAX_SECTIONS):
            s.sec_in[i] = s.sec_out[i] = 0.0
        s.ring_pos = s.hist_at = s.trace_at = 0
        s.rise_max = s.rise_min = 0.0

    def hear(self) -> tuple[float, float, float]:
        """One hop (the detector's ``_x``): (peak, logit, hops ago), as :meth:`OnsetDetector._hear`."""
        self._hear(self._state_p, self._x_p)
        s, ears, out = self.state, self._det.ears, self._det.net.out
        ears.level_db, ears.trace_at = s.level_db, s.trace_at
        return s.peak, float(out[0]), float(out[1])

    def rise_range(self) -> tuple[float, float]:
        return self.state.rise_max, self.state.rise_min

    def place(self, ago: float, position: int) -> tuple[int, int]:
        """(attack, bands that agreed), as :meth:`OnsetDetector._place`."""
        attack = self._place(self._state_p, ago, position, self._agreeing_p)
        return int(attack), int(self._agreeing[0])


# ----------------------------------------------------------------------
# The detector


class OnsetDetector:
    """Streaming onset detector for a partner's instrument (guitar, bass, piano, keys, voice).

    Parameters
    ----------
    sample_rate : int
        Stream sample rate in Hz.
    instrument : str
        Preset from :data:`INSTRUMENTS` (``auto`` suits any of them).
    threshold : float, optional
        Probability (0..1) the network must reach for an onset; where
        omitted, the one tuned for ``instrument`` when the network was
        trained. Higher: fewer false onsets, fewer soft notes.
    rearm : float, optional
        The probability must fall below this before another onset can fire
        (default: :data:`REARM_SHARE` of the threshold).
    silence_db : float, optional
        Gate in dBFS on the peak level of the (DC-blocked) signal: nothing
        quieter is an onset.
    min_ioi_ms : float, optional
        Minimum time between reported onsets (ms).
    weights : path, optional
        Onset network (default: the shipped ``onsets.safetensors``).
    max_block : int
        Largest block :meth:`process` accepts; sizes the preallocated result.
    kernel : {"auto", "c", "numpy"}
        Who does each hop's work: the C kernel (``onsets_core.c``, compiled
        on first use; ``auto`` falls back to numpy, saying so once, where
        there is no C compiler) or the numpy reference. Both give the same
        onsets.

    Notes
    -----
    :meth:`process` is real-time safe: no allocation that grows with use,
    no locks, no I/O, bounded work per sample. The array it returns is a
    view of an internal buffer, valid until the next call -- copy what you
    want to keep. At most one onset is reported per hop.

    Examples
    --------
    >>> det = OnsetDetector(sample_rate=48000, instrument="piano")
    >>> len(det.process(np.zeros(256, dtype=np.float32)))
    0
    """

    def __init__(self, sample_rate: int = REFERENCE_RATE, instrument: str = "auto",
                 threshold: float | None = None, rearm: float | None = None,
                 silence_db: float | None = None, min_ioi_ms: float | None = None,
                 weights=None, max_block: int = 8192, kernel: str = "auto"):
        if sample_rate <= 0 or int(sample_rate) < 16000:
            raise OnsetSettingsError(f"sample_rate must be at least 16000 Hz, got {sample_rate}")
        if instrument not in INSTRUMENTS:
            raise RolypolyError(f"unknown instrument {instrument!r}: choose one of {', '.join(INSTRUMENTS)}")
        preset = INSTRUMENTS[instrument]
        self.instrument = instrument
        self.weights = os.fspath(weights or default_onset_weights())
        self.net, self.config = load_onset_net(self.weights)
        if threshold is None:
            threshold = self.config.get("thresholds", {}).get(instrument, self.config.get("threshold", 0.5))
        self.threshold = float(threshold)
        self.rearm = float(REARM_SHARE * self.threshold if rearm is None else rearm)
        self.silence_db = float(preset["silence_db"] if silence_db is None else silence_db)
        self.min_ioi_ms = float(preset["min_ioi_ms"] if min_ioi_ms is None else min_ioi_ms)
        if not 0.0 < self.threshold < 1.0:
            raise OnsetSettingsError(f"threshold must be a probability between 0 and 1, got {self.threshold}")
        if not 0.0 <= self.rearm < self.threshold:
            raise OnsetSettingsError(f"rearm ({self.rearm}) must be below threshold ({self.threshold})")
        if self.min_ioi_ms < 0:
            raise OnsetSettingsError(f"min_ioi_ms must be >= 0, got {self.min_ioi_ms}")
        self.max_block = int(max_block)
        if self.max_block < 1:
            raise ValueError(f"max_block must be >= 1, got {max_block}")
        self.sample_rate = int(sample_rate)
        self.ears = Listener(self.sample_rate)
        self.hop = hop = self.ears.hop
        self._min_ioi = max(int(round(self.min_ioi_ms * self.sample_rate / 1000.0)), hop)
        self._max_lag = HISTORY_HOPS * hop
        self._x = np.zeros(hop)
        # Placing an attack: the listener's trace in time order, its envelopes, scratch.
        n_bands, length = len(BANDS), (HISTORY_HOPS + 1) * hop
        self._env = np.zeros((n_bands, length))
        self._drop = _DB_PER_NEPER / (_RELEASE_MS * 1e-3 * self.sample_rate)
        self._ramp = np.arange(length) * self._drop
        self._above = np.zeros((n_bands, length), dtype=bool)
        self._base = np.zeros((n_bands, 1))
        self._span = np.zeros(n_bands)
        self.agreeing = 0               # bands that rose clearly at the last network decision
        self._first = np.zeros(n_bands, dtype=np.int64)
        # The fast trigger fires only well above the room (never below its own gate).
        self._trigger_gate = max(self.silence_db, TRIGGER_GATE_DB)
        self.trigger = _Trigger(self.sample_rate, hop, floor_db=self._trigger_gate - 20.0)
        self._ready = np.zeros(hop, dtype=bool)
        self._magnitude = np.zeros(hop)
        self._clip_hold = int(round(CLIP_HOLD_MS * self.sample_rate / 1000.0))
        self._quarter_len = hop // (QUARTERS // 2)
        self._gate = np.zeros(hop, dtype=bool)
        self._capacity = (self.max_block + hop - 1) // hop + 1
        self._events = np.zeros(self._capacity, dtype=ONSET_DTYPE)
        self._count = 0
        self._kernel = None
        self.reset()
        if kernel not in KERNELS:
            raise OnsetSettingsError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if kernel != "numpy":
            lib = _kernel_library()
            if lib is None and kernel == "c":
                raise RolypolyError("the onset detector's C kernel cannot be built here (no C compiler)")
            if lib is not None:
                try:
                    self._kernel = _Kernel(lib, self)
                except ValueError as exc:               # a layout the C kernel was not made for
                    if kernel == "c":
                        raise OnsetSettingsError(f"the onset detector's C kernel: {exc}") from None
        self.kernel = "numpy" if self._kernel is None else "c"

    # ------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next sample processed is stream sample 0.

        Examples
        --------
        >>> det = OnsetDetector()
        >>> _ = det.process(np.ones(640, dtype=np.float32))
        >>> det.reset(); det.position
        0
        """
        self._fill = 0
        self._position = 0              # stream index of the current hop's start
        self.ears.reset()
        self.net.reset()
        self.trigger.reset()
        self._armed = True
        self._trigger_armed = True
        self._next_allowed = 0          # refractory end (min IOI), stream index
        self._clipped_until = 0         # the trigger is deaf before this stream index (clipping)
        self._count = 0
        self.probability = 0.0
        self._rise_top = self._rise_bottom = 0.0
        self._hop_floor = -math.inf     # the caller's floor (process's floor_db) over the current hop
        if self._kernel is not None:
            self._kernel.reset()

    @property
    def position(self) -> int:
        """Stream samples consumed so far (including a partly filled hop)."""
        return self._position + self._fill

    @property
    def hop_ms(self) -> float:
        """Length of one internal hop in milliseconds."""
        return 1000.0 * self.hop / self.sample_rate

    def params(self) -> dict:
        """The settings this detector runs with, as keyword arguments.

        Examples
        --------
        >>> OnsetDetector(threshold=0.7).params()["threshold"]
        0.7
        """
        return {"sample_rate": self.sample_rate, "instrument": self.instrument,
                "threshold": self.threshold, "rearm": self.rearm, "silence_db": self.silence_db,
                "min_ioi_ms": self.min_ioi_ms, "weights": os.path.basename(self.weights),
                "max_block": self.max_block}

    # ------------------------------------------------------------------
    def process(self, block: np.ndarray, floor_db: np.ndarray | None = None) -> np.ndarray:
        """Feed one audio block; return the onsets completed during it.

        Parameters
        ----------
        block : np.ndarray
            Mono float samples, any length up to ``max_block`` (shape
            ``(n,)`` or ``(n, 1)``).
        floor_db : np.ndarray, optional
            Per sample of ``block``, a level (dBFS) no onset is taken below,
            above the silence gate: what something upstream knows is there
            but is not the partner (the drums' leftovers after the bleed
            canceller, :attr:`rolypoly.realtime.bleed.BleedCanceller.residual_db`).
            Each hop takes the highest of its samples.

        Returns
        -------
        np.ndarray of :data:`ONSET_DTYPE`
            Fields ``sample``, ``available``, ``strength``, ``descriptor``.
            A view of a preallocated buffer, overwritten by the next call.

        Examples
        --------
        >>> det = OnsetDetector()
        >>> x = np.zeros(4096, dtype=np.float32); x[1500:1800] = 0.9
        >>> [int(s) for s in det.process(x)["sample"]]
        [1500]
        """
        if block.ndim == 2 and block.shape[1] == 1:
            block = block[:, 0]
        if block.ndim != 1:
            raise ValueError(f"process() takes a mono block, got shape {block.shape}")
        n = block.shape[0]
        if n > self.max_block:
            raise ValueError(f"block of {n} samples exceeds max_block={self.max_block}")
        if floor_db is not None and len(floor_db) != n:
            raise ValueError(f"floor_db has {len(floor_db)} values for a block of {n} samples")
        self._count = 0
        hop = self.hop
        i = 0
        while i < n:
            take = min(hop - self._fill, n - i)
            self._x[self._fill:self._fill + take] = block[i:i + take]
            if floor_db is not None:
                self._hop_floor = max(self._hop_floor, float(np.max(floor_db[i:i + take])))
            self._fill += take
            i += take
            if self._fill == hop:
                self._process_hop()
                self._fill = 0
                self._position += hop
                self._hop_floor = -math.inf
        return self._events[:self._count]

    # ------------------------------------------------------------------
    def _hear(self) -> tuple[float, float, float]:
        """The numpy reference of one hop's work (:mod:`rolypoly.onsets_core.c` does the same):
        listening, the trigger's envelopes, the network's step; (peak, logit, hops ago)."""
        x = self._x
        peak = float(np.abs(x, out=self._magnitude).max())
        if not math.isfinite(peak):
            # A NaN would poison the filter state for good; treat it as a dropout.
            np.nan_to_num(x, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
            peak = float(np.abs(x, out=self._magnitude).max())
        features = self.ears.run(x)
        self.trigger.run(self.ears.filters.out)
        self._rise_top, self._rise_bottom = float(self.trigger.rise.max()), float(self.trigger.rise.min())
        logit, ago = self.net.step(features)
        return peak, float(logit), float(ago)

    def _process_hop(self) -> None:
        hop = self.hop
        if self._kernel is None:
            peak, logit, ago = self._hear()
        else:
            peak, logit, ago = self._kernel.hear()
            self._rise_top, self._rise_bottom = self._kernel.rise_range()
        if peak >= CLIP_LEVEL:
            self._clipped_until = self._position + hop + self._clip_hold
        ears = self.ears
        if self._position >= self._clipped_until:
            self._trigger_decide()
        p = 1.0 / (1.0 + math.exp(-max(min(logit, 30.0), -30.0)))
        self.probability = p
        pos = self._position
        refractory = self._next_allowed - pos
        if refractory > 0:
            # The ear gets used to a note just heard: its own swell is not another attack.
            self.trigger.get_used_to(min(hop, refractory))
        if not self._armed:
            if p < self.rearm:
                self._armed = True
            return
        if p < self.threshold or ears.level_db < self.silence_db or not self._clears_floor():
            return
        self._armed = False
        if pos + hop <= self._next_allowed:
            return                              # the note the trigger (or the network) just heard
        if self._kernel is None:
            attack = self._place(ago)
        else:
            attack, self.agreeing = self._kernel.place(ago, pos)
        if self.agreeing < _EVIDENCE_BANDS and self._span.max() < _EVIDENCE_LONE_DB:
            return                              # nothing rose: not heard (and not re-armed until it falls)
        rise = self.trigger.rise
        k = int(np.argmax(rise))
        if rise[k] >= TRIGGER_BACKTRACK_DB:
            # The trigger heard this attack rise (not enough to fire): where its rise began is
            # sharper than the bands' envelopes, and never earlier than the attack itself.
            attack = max(attack, pos + self.trigger.backtrack(k))
        attack = max(attack, self._next_allowed - hop, 0)
        self._emit(attack, p)

    def _emit(self, attack: int, strength: float) -> None:
        self._next_allowed = attack + self._min_ioi
        event = self._events[self._count]
        event["sample"] = attack
        event["available"] = self._position + self.hop
        event["strength"] = strength
        event["descriptor"] = self.ears.centroid()
        self._count += 1

    def _trigger_decide(self) -> None:
        """The fast trigger's hysteresis over one hop, sample by sample (vectorised)."""
        hop, pos, trig = self.hop, self._position, self.trigger
        rise, level = trig.rise, trig.level
        start = max(0, self._next_allowed - pos)
        if start >= hop:
            return
        ok, ready = self._gate, self._ready
        if not self._trigger_armed:
            if start == 0 and self._rise_bottom > TRIGGER_REARM_DB:
                return                          # most hops after a trigger: still risen (no call)
            np.less_equal(rise[start:], TRIGGER_REARM_DB, out=ok[start:])
            if not ok[start:].any():
                return
            start += int(np.argmax(ok[start:]))
            self._trigger_armed = True
        if (self._rise_top if start == 0 else np.maximum.reduce(rise[start:])) < TRIGGER_DB:
            return                              # most hops: nothing rose enough (no call)
        np.greater_equal(rise[start:], TRIGGER_DB, out=ready[start:])
        np.greater_equal(level[start:], self._trigger_gate, out=ok[start:])
        ready[start:] &= ok[start:]
        if not ready[start:].any():
            return
        k = start + int(np.argmax(ready[start:]))
        self._trigger_armed = False
        if not self._clears_floor():
            return                              # no more than what the caller said is not the partner
        # How far it rose (out of silence, counted from the gate): the strength, between the
        # network's threshold and 1.
        db = min(float(rise[k:].max()), float(level[k:].max()) - self._trigger_gate)
        strength = self.threshold + (1.0 - self.threshold) * (1.0 - math.exp(-max(db, 0.0) / (2 * TRIGGER_DB)))
        self._emit(max(pos + trig.backtrack(k), self._next_allowed), strength)
        # A short minimum interval: the trigger may re-arm later in this same hop.
        rest = max(k + 1, self._next_allowed - pos)
        if rest < hop:
            np.less_equal(rise[rest:], TRIGGER_REARM_DB, out=ok[rest:])
            if ok[rest:].any():
                self._trigger_armed = True

    def _clears_floor(self) -> bool:
        """Whether this hop is louder than the caller's floor (``process``'s ``floor_db``).

        The floor is what is there but is not the partner -- the drums' leftovers after the
        bleed canceller, as the power of a quarter hop, as :attr:`Listener.level_db` is. (A
        leftover on top of a partner's chord still ringing louder than it passes: the level
        cannot tell the two apart.)
        """
        return self.ears.level_db >= self._hop_floor

    def _place(self, ago_hops: float) -> int:
        """Stream index of the attack just decided.

        The network says roughly how many hops ago the note began; the audio
        says exactly where: in each band a peak follower in dB over the last
        few hops, and the attack just after the last sample before the
        band's peak that was still within ``_ATTACK_START_DB`` of where the
        band stood before the onset (the earliest such band of those that
        rose clearly wins). Sample-exact on a clean attack; where no
        band rose clearly (a soft note under a loud one) the network's
        estimate stands.
        """
        hop, end = self.hop, self._position + self.hop
        ago = min(max(ago_hops, 0.0), float(HISTORY_HOPS))
        guess = end - int(round((ago + 0.5) * hop))
        env, trace, at = self._env, self.ears.trace, (self.ears.trace_at + 1) * hop
        length = env.shape[1]
        older = length - at
        # The ring of hops in time order, newest last.
        env[:, :older] = trace[:, at:]
        env[:, older:] = trace[:, :at]
        np.abs(env, out=env)
        env += _TINY
        np.log10(env, out=env)
        env *= 20.0
        env += self._ramp
        np.maximum.accumulate(env, axis=1, out=env)
        env -= self._ramp
        start = max(0, length - int(round((ago + 2.0) * hop)))
        np.copyto(self._base[:, 0], env[:, start])
        window = env[:, start:]
        np.argmax(window, axis=1, out=self._first)            # each band's peak
        np.max(window, axis=1, out=self._span)
        self._span -= self._base[:, 0]
        self._base += _ATTACK_START_DB
        low = self._above[:, start:]
        np.less(window, self._base, out=low)
        # Each band that rose clearly says where the attack began; a second band must agree: a
        # lone band's earlier step is more likely the note before (a low string's bursts, noise).
        first = second = length
        self.agreeing = 0
        for b in range(env.shape[0]):
            peak = int(self._first[b])
            if self._span[b] < _ATTACK_RISE_DB or not low[b, :peak + 1].any():
                continue
            # Just after the last sample, before the peak, still near where the band started:
            # a wobble of the note before does not pull the attack early.
            at = start + peak - int(np.argmax(low[b, peak::-1])) + 1
            self.agreeing += 1
            if at < first:
                first, second = at, first
            elif at < second:
                second = at
        best = second if second < length else first
        if best == length:
            return max(guess, 0)
        return max(end - length + best, 0)


# ----------------------------------------------------------------------
# Scoring against the truth


def match_onsets(truth, found, tolerance: float = 0.025):
    """Greedy one-to-one matching of detected to true onsets, nearest pairs first.

    The usual way onset detectors are scored (a detection within
    ``tolerance`` seconds of a true onset, each used once).

    Parameters
    ----------
    truth, found : sequence of float
        Onset times (s).
    tolerance : float
        Largest allowed |found - truth| (s).

    Returns
    -------
    list of (truth_index, found_index)

    Examples
    --------
    >>> match_onsets([0.0, 0.1], [0.095, 0.01, 0.5])
    [(1, 0), (0, 1)]
    """
    truth = np.asarray(truth, dtype=float)
    found = np.asarray(found, dtype=float)
    if len(truth) == 0 or len(found) == 0:
        return []
    dist = np.abs(truth[:, None] - found[None, :])
    ti, fi = np.nonzero(dist <= tolerance)
    order = np.argsort(dist[ti, fi], kind="stable")
    used_t, used_f, pairs = set(), set(), []
    for t, f in zip(ti[order], fi[order]):
        if t not in used_t and f not in used_f:
            used_t.add(int(t))
            used_f.add(int(f))
            pairs.append((int(t), int(f)))
    return pairs


# ----------------------------------------------------------------------
# Calibration to the player

#: Calibration wants at least this much of the partner playing alone (s).
CALIBRATION_MIN_S = 5.0


def calibrate(audio: np.ndarray, sample_rate: int = REFERENCE_RATE, instrument: str = "auto",
              weights=None, name: str = "recording") -> dict:
    """Threshold and silence gate for one player in one room, from a recording of them playing alone.

    * The gate sits 12 dB above the room's noise floor (the 10th percentile
      of the hop levels: the quiet between notes), but at least 30 dB below
      the playing level (the 90th percentile), so soft notes still pass.
    * The threshold is the trained one for ``instrument``, raised above what
      the room alone makes the network say (its 99.9th percentile over the
      hops near the noise floor, plus 0.1) so the room never fires.

    Returns the settings (``instrument``, ``threshold``, ``silence_db``: the
    keyword arguments of :class:`OnsetDetector`) and what they rest on.

    Raises
    ------
    RolypolyError
        One line naming ``name``: too short, or no playing to be heard above the room.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = (rng.standard_normal(48000 * 8) * 1e-4).astype(np.float32)
    >>> for k in range(16): x[k * 24000 + 2000:k * 24000 + 6000] += 0.3 * np.sin(np.arange(4000) * 0.2)
    >>> c = calibrate(x)
    >>> c["silence_db"] < c["playing_level_db"] - 29, 0 < c["threshold"] < 1
    (True, True)
    """
    audio = np.asarray(audio, dtype=np.float32)
    seconds = len(audio) / sample_rate
    if seconds < CALIBRATION_MIN_S:
        raise RolypolyError(f"{name}: {seconds:.1f} s is too short to calibrate to; play alone for a "
                            f"minute (at least {CALIBRATION_MIN_S:g} s)")
    det = OnsetDetector(sample_rate=sample_rate, instrument=instrument, weights=weights,
                        silence_db=-200.0, max_block=_scaled(HOP, sample_rate))
    hop = det.hop
    n = len(audio) // hop
    prob, level = np.zeros(n), np.zeros(n)
    for i in range(n):
        det.process(audio[i * hop:(i + 1) * hop])
        prob[i], level[i] = det.probability, det.ears.level_db
    floor, playing = float(np.percentile(level, 10)), float(np.percentile(level, 90))
    if playing - floor < 12.0:
        raise RolypolyError(f"{name}: no playing heard above the room (playing {playing:.0f} dBFS, "
                            f"room {floor:.0f} dBFS); record the partner playing alone")
    gate = max(min(floor + 12.0, playing - 30.0), -120.0)
    quiet = prob[level < floor + 6.0]
    room = float(np.percentile(quiet, 99.9)) if len(quiet) >= 200 else 0.0
    threshold = float(np.clip(max(det.threshold, room + 0.1), 0.05, 0.95))
    found, _, _ = detect(audio, sample_rate=sample_rate, instrument=instrument, weights=weights,
                         threshold=threshold, silence_db=gate)
    return {"instrument": instrument, "threshold": round(threshold, 3), "silence_db": round(gate, 1),
            "trained_threshold": round(det.threshold, 3), "room_probability": round(room, 3),
            "noise_floor_db": round(floor, 1), "playing_level_db": round(playing, 1),
            "seconds": round(seconds, 1), "onsets": int(len(found)),
            "onsets_per_second": round(len(found) / seconds, 2)}


def calibrated_settings(calibration: dict | None, instrument: str | None = None) -> dict:
    """Keyword arguments of :class:`OnsetDetector` from a stored calibration (and an instrument).

    An instrument given now overrides the calibrated one, and then only the
    gate is kept (the threshold was tuned for the other instrument).

    >>> calibrated_settings({"instrument": "piano", "threshold": 0.6, "silence_db": -58.0})
    {'instrument': 'piano', 'threshold': 0.6, 'silence_db': -58.0}
    >>> calibrated_settings({"instrument": "piano", "threshold": 0.6, "silence_db": -58.0}, "bass")
    {'instrument': 'bass', 'silence_db': -58.0}
    >>> calibrated_settings(None, "guitar")
    {'instrument': 'guitar'}
    """
    settings = {}
    if calibration:
        settings = {k: calibration[k] for k in ("instrument", "threshold", "silence_db") if k in calibration}
    if instrument is not None and instrument != settings.get("instrument", instrument):
        settings.pop("threshold", None)
    if instrument is not None:
        settings["instrument"] = instrument
    if "instrument" in settings and settings["instrument"] not in INSTRUMENTS:
        raise RolypolyError(f"unknown instrument {settings['instrument']!r}: choose one of {', '.join(INSTRUMENTS)}")
    return settings


def session_settings(session_folder=None, instrument: str | None = None) -> dict:
    """Detector settings for a take in a session: its stored calibration, and the instrument asked for.

    ``rolypoly onsets --calibrate`` stores a calibration in the session
    (``onset_calibration`` in session.json); a folder that is not (yet) a
    session has none.

    >>> session_settings(None, "bass")
    {'instrument': 'bass'}
    """
    from pathlib import Path

    calibration = None
    if session_folder is not None and (Path(session_folder) / "session.json").is_file():
        from rolypoly.session import Session

        calibration = Session(session_folder).meta.get("onset_calibration")
    return calibrated_settings(calibration, instrument)


# ----------------------------------------------------------------------
# Offline helpers: the same streaming detector, fed block by block.


def detect(audio: np.ndarray, sample_rate: int = 48000, block_size: int = 64, **params):
    """Run :class:`OnsetDetector` over a whole mono signal exactly as live.

    The signal is cut into ``block_size`` blocks and fed in order, as an
    audio callback would; nothing looks ahead.

    Parameters
    ----------
    audio : np.ndarray
        Mono samples.
    sample_rate : int
        Rate of ``audio`` (and of the detector).
    block_size : int
        Callback block size to simulate.
    **params
        Passed to :class:`OnsetDetector` (``instrument``, ``threshold``, ``silence_db`` ...).

    Returns
    -------
    onset_times : np.ndarray
        Estimated attack times in seconds.
    available_times : np.ndarray
        When each onset became usable, in seconds.
    descriptors : np.ndarray
        Spectral centroid at detection, 0..1 of Nyquist.

    Examples
    --------
    >>> x = np.zeros(48000, dtype=np.float32); x[24000:24480] = 0.8
    >>> on, avail, desc = detect(x, 48000)
    >>> float(on[0]), bool(avail[0] - on[0] < 0.005)
    (0.5, True)
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"detect() takes mono audio, got shape {audio.shape}")
    det = OnsetDetector(sample_rate=sample_rate, max_block=max(block_size, 1), **params)
    found = []
    for i in range(0, len(audio), block_size):
        events = det.process(audio[i:i + block_size])
        if len(events):
            found.append(events.copy())
    events = np.concatenate(found) if found else np.zeros(0, dtype=ONSET_DTYPE)
    return (events["sample"] / sample_rate, events["available"] / sample_rate,
            events["descriptor"].astype(np.float64))


def detect_file(path, sample_rate: int = 48000, block_size: int = 64, **params):
    """Detect onsets in a WAV/FLAC file with the live detector.

    The file is mixed to mono and, if its rate differs from
    ``sample_rate``, resampled to it (:func:`rolypoly.audio_io.load_audio`:
    linear phase, delay compensated, so onset times do not move). Then the
    audio is fed in ``block_size`` blocks, as live.

    Parameters
    ----------
    path : str or os.PathLike
        Audio file readable by libsndfile (WAV, FLAC, AIFF, OGG ...).
    sample_rate : int
        Rate the detector runs at.
    block_size : int
        Callback block size to simulate.
    **params
        Passed to :class:`OnsetDetector`.

    Returns
    -------
    onset_times, available_times, descriptors : np.ndarray
        As :func:`detect`, times in seconds from the start of the file.

    Raises
    ------
    RolypolyError
        ``"<path>: <problem>"`` on one line if the file is missing,
        unreadable, empty or not audio.

    Examples
    --------
    >>> import tempfile, os, soundfile
    >>> p = os.path.join(tempfile.mkdtemp(), "take.wav")
    >>> x = np.zeros(44100, dtype=np.float32); x[11025:11400] = 0.8
    >>> soundfile.write(p, x, 44100)
    >>> on, avail, desc = detect_file(p)
    >>> round(float(on[0]), 3)
    0.25
    """
    from .audio_io import load_audio

    mono = load_audio(path, sample_rate)
    return detect(mono, sample_rate=sample_rate, block_size=block_size, **params)
