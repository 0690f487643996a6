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

What subtraction leaves: a loop that changed since it was calibrated (a
microphone moved, a gain turned), or a cycle JACK lost, leaves part of each
drum hit in the input, and the onset detector -- made to hear a soft note
under a loud one -- would take it for the partner. So the canceller also
says, sample for sample, how loud what it leaves is expected to be
(:attr:`BleedCanceller.residual_db`): the envelope of the bleed it
subtracted times how deep it has been cancelling lately (per hop of a drum
hit, the share of the bleed still in the residual: the least-squares gain
of the bleed in the residual over the recent hits, so the partner playing
along does not count), plus
:data:`RESIDUAL_MARGIN_DB`. The detector takes no onset quieter than that
(:meth:`~rolypoly.onsets.OnsetDetector.process`'s ``floor_db``): a partner
note louder than the drums' leftovers is heard as before.

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
#: The expected residual: hops of this many samples whose bleed peaks above ``HIT_LEVEL`` measure
#: how deep the cancelling is (the share of the bleed left in the residual, a least-squares gain over
#: the last ``DEPTH_HOPS`` of them), ``DEPTH_START`` until ``DEPTH_MIN_HOPS`` were measured
#: (nothing measured yet: the first hit may leave all of itself).
DEPTH_HOP = 64
HIT_LEVEL = 1e-3
DEPTH_HOPS = 64
DEPTH_MIN_HOPS = 8
DEPTH_START = 1.0
DEPTH_MAX = 2.0
#: The gate sits this far above the expected residual (dB), and follows the bleed's power down
#: with this release (ms per neper: a drum's leftovers fade as the drum does).
RESIDUAL_MARGIN_DB = 6.0
RESIDUAL_RELEASE_MS = 20.0
#: Samples the residual's power is averaged over: a quarter of the detector's 64-sample hop.
QUARTER = 16
_TINY = 1e-12


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
        self._drop = 20.0 / np.log(10.0) / (RESIDUAL_RELEASE_MS * 1e-3 * self.sample_rate)  # dB per sample
        self._num, self._den = np.zeros(DEPTH_HOPS), np.zeros(DEPTH_HOPS)
        self._squares = np.zeros(QUARTER - 1)
        self._measured = 0
        self._envelope_db = -np.inf         # the bleed's power envelope at the end of the last block
        self.depth = DEPTH_START
        #: Expected level of what the last :meth:`process` left of the drums, per sample (dBFS of power).
        self.residual_db = np.zeros(0)

    def reset(self) -> None:
        """Back to the starting response, nothing played yet."""
        self.h = self.initial.copy()
        self._history.fill(0.0)
        self._measured = 0
        self._num.fill(0.0)
        self._den.fill(0.0)
        self._envelope_db = -np.inf
        self._squares.fill(0.0)
        self.depth = DEPTH_START
        self.residual_db = np.zeros(0)

    def _expect(self, y: np.ndarray, e: np.ndarray) -> None:
        """How deep the last hops of drum hits were cancelled, and the residual expected per sample."""
        hops = len(y) // DEPTH_HOP
        if hops:
            yh = y[:hops * DEPTH_HOP].reshape(hops, DEPTH_HOP)
            eh = e[:hops * DEPTH_HOP].reshape(hops, DEPTH_HOP)
            hit = np.abs(yh).max(axis=1) > HIT_LEVEL
            # The share of the bleed still in the residual: the least-squares gain of the bleed
            # subtracted in the residual over the recent hops of hits (the partner, playing along,
            # is no echo of the drums and averages out).
            for num, den in zip(np.einsum("ij,ij->i", eh[hit], yh[hit])[-DEPTH_HOPS:],
                                np.einsum("ij,ij->i", yh[hit], yh[hit])[-DEPTH_HOPS:]):
                k = self._measured % DEPTH_HOPS
                self._num[k], self._den[k] = num, den
                self._measured += 1
            if self._measured >= DEPTH_MIN_HOPS:
                # (At most twice the bleed: a loop off by whole cycles leaves the bleed and its echo.)
                self.depth = min(abs(float(self._num.sum())) / float(self._den.sum()), DEPTH_MAX)
        # The bleed's power over each quarter hop (as the detector hears energy), in dB, followed
        # with an instant attack and a RESIDUAL_RELEASE_MS release, carried over blocks.
        square = np.concatenate([self._squares, y * y])
        power = np.convolve(square, np.full(QUARTER, 1.0 / QUARTER), "valid")[-len(y):] if len(y) else square[:0]
        self._squares = square[-(QUARTER - 1):]
        ramp = np.arange(len(y)) * self._drop
        env = 10.0 * np.log10(power + _TINY) + ramp
        if len(env):
            env[0] = max(env[0], self._envelope_db - self._drop)
            np.maximum.accumulate(env, out=env)
            env -= ramp
            self._envelope_db = float(env[-1])
        self.residual_db = env + (20.0 * np.log10(max(self.depth, 1e-6)) + RESIDUAL_MARGIN_DB)

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
        drum output. Afterwards :attr:`residual_db` holds the level expected
        of what is left of the drums in the result, per sample.
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
        self._expect(y, e)
        return e.astype(np.float32)
