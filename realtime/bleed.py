"""Listening to the partner, not to itself: the drums' own sound taken out of the partner input.

With speakers and a microphone the drums reach the partner input. rolypoly
knows, sample for sample, what it played (the real-time core keeps the drum
output beside the input, frame for frame), so it subtracts its estimate of
the bleed -- the drums through the loop's response -- before the onset
detector listens: an adaptive FIR filter (normalised LMS, block form) over
the lags around the loop's round trip.

The filter is the response ``rolypoly calibrate`` measured (the clicks are
played through the same path), so the first hit is already cancelled. It
can keep adapting (``step``), but by default it does not: measured on a
sampled kit bleeding at -10 dB into a partner at -26 dB RMS, a calibrated
filter leaves 1.8e-9 RMS, and adapting while the partner plays (to the
filter, the partner is noise) makes it worse: step 0.01 leaves 1.7e-3, 0.05
leaves 5.4e-3 (from zero, step 0.5 needs seconds to reach -20 dB).

Why subtraction rather than a gate that ignores onsets near the drums'
hits: the partner often plays *with* the drums, and a gate would drop those
notes too; subtraction leaves the partner's signal as it was.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> drums = rng.standard_normal(4800).astype(np.float32)
>>> partner = np.zeros(4800, np.float32)
>>> heard = partner.copy(); heard[100:] += 0.3 * drums[:-100]          # bleed: 100 frames late, -10 dB
>>> h = np.zeros(64); h[16] = 0.3                                         # what calibration measured
>>> canceller = BleedCanceller(48000, lag=84, taps=h)
>>> float(np.abs(canceller.process(heard, drums)).max()) < 1e-5
True
"""
from __future__ import annotations

import numpy as np

#: NLMS step (per block, normalised by the block's whole input energy: stable with drums);
#: 0: the calibrated response as it is (see the module docstring for why).
STEP = 0.0
#: No adaptation while the drums are quieter than this (RMS over the block).
QUIET = 1e-4


class BleedCanceller:
    """Subtracts the drums' bleed from the partner input (see module docstring).

    Parameters
    ----------
    sample_rate : int
    lag : int
        Frames from the drums played to the filter's first tap (the round
        trip minus a few taps of lead).
    taps : np.ndarray, optional
        Starting response (its length is the filter's); zeros of ``length`` when omitted.
    length : int
        Filter length when ``taps`` is not given.
    step : float
        NLMS step; 0 freezes the filter.
    """

    def __init__(self, sample_rate: int, lag: int = 0, taps=None, length: int = 128, step: float = STEP):
        self.sample_rate = int(sample_rate)
        self.lag = max(0, int(lag))
        self.initial = np.zeros(length) if taps is None else np.asarray(taps, np.float64).copy()
        self.h = self.initial.copy()
        self.step = float(step)
        self._history = np.zeros(self.lag + len(self.h) - 1, np.float64)  # drums before the block

    def reset(self) -> None:
        """Back to the starting response, nothing played yet."""
        self.h = self.initial.copy()
        self._history.fill(0.0)

    def estimate(self, drums: np.ndarray) -> np.ndarray:
        """The bleed expected in the input block that goes with this block of drums (history kept)."""
        d = np.concatenate([self._history, np.asarray(drums, np.float64)])
        # y[n] = sum_j h[j] d[n - lag - j]; d index of block sample n is len(history) + n
        y = np.convolve(d, self.h, "full")[len(self._history) - self.lag:len(d) - self.lag]
        self._d = d
        return y[:len(drums)]

    def process(self, heard: np.ndarray, drums: np.ndarray) -> np.ndarray:
        """``heard`` minus the drums' bleed (a new float32 array); adapts, then remembers ``drums``.

        ``heard`` and ``drums`` are the same frames of the input and of the
        drum output.
        """
        heard = np.asarray(heard, np.float64)
        n = len(heard)
        y = self.estimate(drums)
        e = heard - y
        d, k = self._d, len(self.h)
        # The drums that reach this block: X[n, j] = d[H + n - lag - j], rows of `window`.
        base = len(self._history) - self.lag
        window = d[base - k + 1:base + n]
        if self.step > 0 and n and np.sqrt(np.mean(window * window)) > QUIET:
            grad = np.correlate(window, e, "valid")[::-1]           # sum_n e[n] X[n, j]
            power = float(np.dot(window, window)) * k * n / len(window) + 1e-9  # ~ sum_n |X[n]|^2: stable for drums
            self.h += self.step * grad / power
        keep = len(self._history)
        if keep:
            self._history = d[-keep:].copy()
        return e.astype(np.float32)
