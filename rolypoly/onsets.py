"""Hearing the partner's notes start, within a few milliseconds.

rolypoly~ used a very fast time-domain onset detector (Constanzo and
Tremblay's FluCoMa example, paper footnote 5) rather than a spectral one,
because the drummer has to react while the note is still young. This is
that idea, streaming and real-time safe:

1. a DC blocker, so offsets and rumble are never mistaken for level;
2. one or more *listening bands* -- steep high-passes that keep the bright
   part of the sound, where a new note's pick, finger or hammer stands out
   from the notes already ringing (a string loses its highs fast);
3. per band, a *fast envelope*: an instant-attack peak follower in dB with
   an exponential release, so a pluck registers on its first loud sample;
4. per band, a *slow envelope*: the fast one smoothed over tens of
   milliseconds -- the level the ear has got used to;
5. an onset when fast - slow (in any band) rises through ``threshold`` dB
   while the whole signal is above the ``silence_db`` gate; the detector
   re-arms only once fast - slow has dropped back below ``rearm_db``
   (hysteresis) and ``min_ioi_ms`` has passed. While it waits, the slow
   envelope is lifted to the new note's peak: the ear gets used to a note
   at once, so the note's own swell is not heard as another attack.

The audio callback may hand over any block size; internally the detector
works on fixed hops (64 samples = 1.3 ms at 48 kHz) aligned to the start
of the stream, so the result does not depend on the callback's block size.
Every recursive filter is evaluated a hop at a time as a small
matrix-vector product with carried state, which keeps the work per hop
bounded, vectorised and free of allocation: all buffers are made in
``__init__``.

Each onset reports

``sample``
    stream sample index where the attack started (backtracked from the
    detection point to where fast - slow began to rise);
``available``
    stream sample index at the end of the hop in which it was detected --
    the moment the drummer can use it;
``strength``
    how far the attack rose above what was sounding before, in dB
    (silence counts as the ``silence_db`` gate level);
``descriptor``
    spectral centroid of the last 256 samples, as a fraction of Nyquist
    (0 = dark, 1 = bright): a cheap "what did the partner play".

>>> import numpy as np
>>> from rolypoly.onsets import OnsetDetector
>>> det = OnsetDetector(sample_rate=48000)
>>> x = np.zeros(4800, dtype=np.float32); x[2000:2100] = 0.5
>>> found = det.process(x)
>>> int(found["sample"][0]), int(found["available"][0])
(2000, 2048)
"""
from __future__ import annotations

import math

import numpy as np


__all__ = ["OnsetDetector", "ONSET_DTYPE", "DEFAULT_BANDS", "detect", "detect_file"]

#: One reported onset; :meth:`OnsetDetector.process` returns an array of these.
ONSET_DTYPE = np.dtype([
    ("sample", np.int64),
    ("available", np.int64),
    ("strength", np.float32),
    ("descriptor", np.float32),
])

#: Listening bands: (high-pass corner in Hz, number of one-pole sections).
#: The presence band catches keys and guitar, the air band catches a bass
#: note starting under one that still rings.
DEFAULT_BANDS = ((3000.0, 4), (8000.0, 4))

# Level floor: log of a true zero must still be a number (-140 dB is far
# below 24-bit noise, so it never matters musically).
_TINY = 1e-7
_FLOOR_DB = 20.0 * math.log10(_TINY)
_DB_PER_NEPER = 20.0 / math.log(10.0)
# Below the lowest bass string: removes DC offset, leaves the music alone.
_DC_BLOCK_HZ = 20.0


def _one_pole_matrices(coef: float, hop: int):
    """Matrices that run y[n] = coef * y[n-1] + u[n] over a whole hop at once.

    y = M @ u + p * y[-1], with M[n, k] = coef**(n-k) for k <= n and
    p[n] = coef**(n+1). A (hop x hop) product is a few thousand
    multiply-adds -- cheaper than a Python loop by far, and with ``out=``
    it allocates nothing.
    """
    n = np.arange(hop)
    lag = n[:, None] - n[None, :]
    matrix = np.where(lag >= 0, coef ** np.maximum(lag, 0).astype(float), 0.0)
    powers = coef ** (n + 1.0)
    return np.ascontiguousarray(matrix), powers


def _highpass_reference(x, state, coef, sections):
    """Plain one-pole high-pass sections in series (the definition).

    y[n] = R (y[n-1] + x[n] - x[n-1]); ``state`` holds the input's last
    sample and each section's last output. Used once, to build the hop
    matrix of :class:`_HighPass`.
    """
    import scipy.signal

    src, last_in, new_state = x, state[0], [x[-1]]
    for i in range(sections):
        last_out = state[1 + i]
        src, _ = scipy.signal.lfilter([coef, -coef], [1.0, -coef], src,
                                      zi=[coef * (last_out - last_in)])
        last_in = last_out            # this section's output feeds the next
        new_state.append(src[-1])
    return src, np.asarray(new_state)


class _HighPass:
    """One-pole high-pass sections in series, a hop at a time.

    The whole cascade is linear, so one hop of output *and* the carried
    state after it are a single matrix times [input hop; state before]:
    one matrix-vector product however many sections there are. The matrix
    is built by running the plain definition on unit vectors.
    """

    def __init__(self, corner_hz: float, sections: int, sample_rate: int, hop: int):
        coef = math.exp(-2.0 * math.pi * corner_hz / sample_rate)
        size = hop + sections + 1
        matrix = np.empty((size, size))
        for j, unit in enumerate(np.eye(size)):
            y, state = _highpass_reference(unit[:hop], unit[hop:], coef, sections)
            matrix[:hop, j] = y
            matrix[hop:, j] = state
        self._matrix = matrix
        self._hop = hop
        self._io = np.zeros(size)       # [input hop; carried state]
        self._result = np.zeros(size)   # [output hop; state after]

    def reset(self) -> None:
        self._io.fill(0.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Filter one hop; returns a view valid until the next call."""
        hop = self._hop
        self._io[:hop] = x
        np.dot(self._matrix, self._io, out=self._result)
        self._io[hop:] = self._result[hop:]
        return self._result[:hop]


class _PeakFollower:
    """Instant attack, exponential release, in dB.

    env[n] = max(level[n], env[n-1] - drop). Unrolled over a hop this is
    n*(-drop) + running max of (level[k] + k*drop): one cumulative max.
    """

    def __init__(self, release_ms: float, sample_rate: int, hop: int):
        self._drop = _DB_PER_NEPER / (release_ms * 1e-3 * sample_rate)
        self._ramp = np.arange(hop) * self._drop
        self.last = _FLOOR_DB

    def reset(self) -> None:
        self.last = _FLOOR_DB

    def run(self, signal: np.ndarray, out: np.ndarray) -> None:
        np.abs(signal, out=out)
        out += _TINY
        np.log10(out, out=out)
        out *= 20.0
        out += self._ramp
        carried = self.last - self._drop
        if out[0] < carried:
            out[0] = carried
        np.maximum.accumulate(out, out=out)
        out -= self._ramp
        self.last = out[-1]


class _Band:
    """One listening band: high-pass, fast envelope, slow envelope, rise."""

    def __init__(self, corner_hz, sections, sample_rate, hop, fast_release_ms, slow_ms, floor_db):
        self.floor_db = floor_db
        self._quiet = np.zeros(hop, dtype=bool)
        self.highpass = _HighPass(corner_hz, sections, sample_rate, hop)
        self.fast_env = _PeakFollower(fast_release_ms, sample_rate, hop)
        s = math.exp(-1.0 / (slow_ms * 1e-3 * sample_rate))
        m, self._slow_powers = _one_pole_matrices(s, hop)
        self._slow_matrix = (1.0 - s) * m
        self.slow_last = _FLOOR_DB
        self.fast = np.zeros(hop)
        self.slow = np.zeros(hop)
        self.rise = np.zeros(hop)

    def reset(self) -> None:
        self.highpass.reset()
        self.fast_env.reset()
        self.slow_last = _FLOOR_DB

    def run(self, dry: np.ndarray) -> None:
        self.fast_env.run(self.highpass.run(dry), self.fast)
        np.dot(self._slow_matrix, self.fast, out=self.slow)
        self.slow += np.multiply(self._slow_powers, self.slow_last, out=self.rise)
        self.slow_last = self.slow[-1]
        np.subtract(self.fast, self.slow, out=self.rise)
        # A band with almost nothing in it (keys have no air) flickers by
        # many dB on noise; it has no say there.
        np.less(self.fast, self.floor_db, out=self._quiet)
        np.copyto(self.rise, 0.0, where=self._quiet)

    def get_used_to(self, upto: int) -> None:
        """Lift the slow envelope to the peak of the first ``upto`` samples."""
        peak = self.fast[:upto].max()
        if peak > self.slow_last:
            self.slow_last = peak


class OnsetDetector:
    """Streaming onset detector for a partner's instrument (guitar, bass, keys).

    Parameters
    ----------
    sample_rate : int
        Stream sample rate in Hz.
    hop : int
        Internal analysis hop in samples (<= 128 at 48 kHz, scaled with the
        rate). Detection is reported at hop ends, so the hop bounds latency.
    threshold : float
        dB the fast envelope must rise above the slow one to count as an
        onset.
    rearm_db : float
        fast - slow must drop below this (dB) before another onset can fire;
        the gap to ``threshold`` is the hysteresis.
    silence_db : float
        Gate in dBFS on the peak level of the whole (DC-blocked) signal:
        nothing quieter is an onset.
    min_ioi_ms : float
        Minimum time between reported onsets (ms); at least one hop.
    bands : sequence of (float, int)
        Listening bands as (high-pass corner in Hz, number of one-pole
        sections -- 1 is gentle, 4 is steep). An onset in any band counts.
        Corners above 40 % of the sample rate are lowered to it.
    fast_release_ms : float
        Time constant of the fast envelope's fall (ms). Long enough to ride
        over the gaps between the bright bursts a low string gives once per
        period.
    slow_ms : float
        Time constant of the slow envelope (ms).
    band_floor_db : float or None
        A band whose own level is below this (dBFS) has no say: a nearly
        empty band flickers by many dB on noise alone. None means 20 dB
        below ``silence_db`` (bands hold only part of the signal's level).
    backtrack_db : float
        The attack is placed just after the last sample (within two hops
        of the detection) where fast - slow was below this.
    get_used_to : bool
        Lift the slow envelope to a new note's peak until the detector
        re-arms (on by default; off is the plain FluCoMa-style detector).
    max_block : int
        Largest block :meth:`process` accepts; sizes the preallocated result.

    Notes
    -----
    :meth:`process` is real-time safe: no allocation that grows with use,
    no locks, no I/O, bounded work per sample. The array it returns is a
    view of an internal buffer, valid until the next call -- copy what you
    want to keep.

    At most one onset is reported per hop (1.3 ms at 48 kHz); no partner
    plays faster than that.

    Examples
    --------
    >>> import numpy as np
    >>> det = OnsetDetector(sample_rate=48000, threshold=6.0, silence_db=-60)
    >>> block = np.zeros(256, dtype=np.float32)
    >>> len(det.process(block))
    0
    """

    def __init__(self, sample_rate: int = 48000, hop: int = 64, threshold: float = 6.0,
                 rearm_db: float = 2.0, silence_db: float = -50.0, min_ioi_ms: float = 40.0,
                 bands=DEFAULT_BANDS, fast_release_ms: float = 12.0, slow_ms: float = 30.0,
                 band_floor_db: float | None = None, backtrack_db: float = 2.0, get_used_to: bool = True,
                 max_block: int = 8192):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        max_hop = max(128, int(128 * sample_rate / 48000))
        if not 1 <= int(hop) <= max_hop:
            raise ValueError(f"hop must be 1..{max_hop} samples at {sample_rate} Hz, got {hop}")
        if rearm_db >= threshold:
            raise ValueError(f"rearm_db ({rearm_db}) must be below threshold ({threshold})")
        # At low sample rates the air band would sit above Nyquist: pull any
        # corner down to 40 % of the rate, where there is still something.
        bands = tuple((min(float(hz), 0.4 * sample_rate), int(sections)) for hz, sections in bands)
        if not bands:
            raise ValueError("bands: need at least one listening band")
        for hz, sections in bands:
            if not hz > 0 or not 1 <= sections <= 6:
                raise ValueError(f"bands: ({hz}, {sections}) needs a positive corner and 1..6 sections")
        if fast_release_ms <= 0 or slow_ms <= 0:
            raise ValueError("fast_release_ms and slow_ms must be positive")
        if min_ioi_ms < 0:
            raise ValueError(f"min_ioi_ms must be >= 0, got {min_ioi_ms}")
        self.sample_rate = int(sample_rate)
        self.hop = hop = int(hop)
        self.threshold = float(threshold)
        self.rearm_db = float(rearm_db)
        self.silence_db = float(silence_db)
        self.min_ioi_ms = float(min_ioi_ms)
        self.bands = bands
        self.fast_release_ms = float(fast_release_ms)
        self.slow_ms = float(slow_ms)
        self.band_floor_db = float(silence_db - 20.0 if band_floor_db is None else band_floor_db)
        self.backtrack_db = float(backtrack_db)
        self.get_used_to = bool(get_used_to)
        self.max_block = int(max_block)
        if self.max_block < 1:
            raise ValueError(f"max_block must be >= 1, got {max_block}")
        self._min_ioi = max(int(round(min_ioi_ms * sample_rate / 1000.0)), hop)

        self._dc_block = _HighPass(_DC_BLOCK_HZ, 1, sample_rate, hop)
        self._level_env = _PeakFollower(fast_release_ms, sample_rate, hop)
        self._bands = [_Band(hz, sections, sample_rate, hop, fast_release_ms, slow_ms,
                             self.band_floor_db)
                       for hz, sections in bands]

        # Descriptor: centroid of the last 256 samples (scaled with the rate)
        # by a DFT written as two fixed matrices -- no FFT plan, no allocation.
        size = max(hop, int(round(256 * sample_rate / 48000)))
        self._desc_size = size
        bins = np.arange(size // 2 + 1)
        t = np.arange(size)
        # Rising half-Hann then flat: the attack sits at the *end* of the
        # window, so it must not be tapered away.
        taper = np.ones(size)
        half = size // 2
        taper[:half] = np.sin(0.5 * np.pi * (np.arange(half) + 0.5) / half) ** 2
        angle = 2.0 * np.pi * np.outer(bins, t) / size
        self._dft_re = np.ascontiguousarray(np.cos(angle) * taper)
        self._dft_im = np.ascontiguousarray(np.sin(angle) * taper)
        self._bin_pos = bins / (size / 2.0)          # 0 .. 1 of Nyquist
        self._ring = np.zeros(size)
        self._frame = np.zeros(size)
        self._re = np.zeros(len(bins))
        self._im = np.zeros(len(bins))

        # Work buffers, one hop each.
        self._x = np.zeros(hop)
        self._level = np.zeros(hop)
        self._rise = np.zeros(hop)
        self._rise_prev = np.zeros(hop)
        self._mask = np.zeros(hop, dtype=bool)
        self._mask2 = np.zeros(hop, dtype=bool)

        # Result buffer: one onset per hop at most.
        self._capacity = (self.max_block + hop - 1) // hop + 1
        self._events = np.zeros(self._capacity, dtype=ONSET_DTYPE)
        self._count = 0
        self.reset()

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
        self._dc_block.reset()
        self._level_env.reset()
        for band in self._bands:
            band.reset()
        self._armed = True
        self._next_allowed = 0          # refractory end (min IOI), stream index
        self._ring_pos = 0
        self._ring.fill(0.0)
        self._rise.fill(0.0)
        self._rise_prev.fill(0.0)
        self._count = 0

    @property
    def position(self) -> int:
        """Stream samples consumed so far (including a partly filled hop)."""
        return self._position + self._fill

    def params(self) -> dict:
        """The settings this detector runs with, as keyword arguments.

        Examples
        --------
        >>> OnsetDetector(threshold=7.0).params()["threshold"]
        7.0
        """
        return {
            "sample_rate": self.sample_rate, "hop": self.hop, "threshold": self.threshold,
            "rearm_db": self.rearm_db, "silence_db": self.silence_db,
            "min_ioi_ms": self.min_ioi_ms, "bands": [list(b) for b in self.bands],
            "fast_release_ms": self.fast_release_ms, "slow_ms": self.slow_ms,
            "band_floor_db": self.band_floor_db, "backtrack_db": self.backtrack_db,
            "get_used_to": self.get_used_to, "max_block": self.max_block,
        }

    @property
    def hop_ms(self) -> float:
        """Length of one internal hop in milliseconds."""
        return 1000.0 * self.hop / self.sample_rate

    # ------------------------------------------------------------------
    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed one audio block; return the onsets completed during it.

        Parameters
        ----------
        block : np.ndarray
            Mono float samples, any length up to ``max_block`` (shape
            ``(n,)`` or ``(n, 1)``).

        Returns
        -------
        np.ndarray of :data:`ONSET_DTYPE`
            Fields ``sample``, ``available``, ``strength``, ``descriptor``.
            A view of a preallocated buffer, overwritten by the next call.

        Examples
        --------
        >>> det = OnsetDetector()
        >>> x = np.zeros(1024, dtype=np.float32); x[500] = 0.9
        >>> [int(s) for s in det.process(x)["sample"]]
        [500]
        """
        if block.ndim == 2 and block.shape[1] == 1:
            block = block[:, 0]
        if block.ndim != 1:
            raise ValueError(f"process() takes a mono block, got shape {block.shape}")
        n = block.shape[0]
        if n > self.max_block:
            raise ValueError(f"block of {n} samples exceeds max_block={self.max_block}")
        self._count = 0
        hop = self.hop
        i = 0
        while i < n:
            take = min(hop - self._fill, n - i)
            self._x[self._fill:self._fill + take] = block[i:i + take]
            self._fill += take
            i += take
            if self._fill == hop:
                self._process_hop()
                self._fill = 0
                self._position += hop
        return self._events[:self._count]

    # ------------------------------------------------------------------
    def _process_hop(self) -> None:
        hop = self.hop
        x = self._x
        np.isfinite(x, out=self._mask)
        if not self._mask.all():
            # A NaN would poison the filter state for good; treat it as a dropout.
            np.nan_to_num(x, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)

        dry = self._dc_block.run(x)
        self._remember(dry)
        self._level_env.run(dry, self._level)

        # Keep the previous hop's rise for backtracking across the hop edge.
        self._rise, self._rise_prev = self._rise_prev, self._rise
        rise = self._rise
        for i, band in enumerate(self._bands):
            band.run(dry)
            if i == 0:
                rise[:] = band.rise
            else:
                np.maximum(rise, band.rise, out=rise)

        self._decide(rise, self._level)

        refractory = self._next_allowed - self._position
        if self.get_used_to and refractory > 0:
            upto = min(hop, refractory)
            for band in self._bands:
                band.get_used_to(upto)

    def _remember(self, dry: np.ndarray) -> None:
        """Write the hop into the descriptor ring buffer."""
        size, pos, hop = self._desc_size, self._ring_pos, self.hop
        first = min(hop, size - pos)
        self._ring[pos:pos + first] = dry[:first]
        if first < hop:
            self._ring[:hop - first] = dry[first:]
        self._ring_pos = (pos + hop) % size

    def _decide(self, rise: np.ndarray, level: np.ndarray) -> None:
        """Hysteresis state machine over one hop, vectorised."""
        hop = self.hop
        pos = self._position
        start = max(0, self._next_allowed - pos)
        if start >= hop:
            return
        below = self._mask
        if not self._armed:
            np.less_equal(rise[start:], self.rearm_db, out=below[start:])
            if not below[start:].any():
                return
            start += int(np.argmax(below[start:]))
            self._armed = True
        ready = self._mask2
        np.greater_equal(rise[start:], self.threshold, out=ready[start:])
        np.greater_equal(level[start:], self.silence_db, out=below[start:])
        ready[start:] &= below[start:]
        if not ready[start:].any():
            return
        k = start + int(np.argmax(ready[start:]))
        self._armed = False

        attack = max(self._backtrack(rise, k), self._next_allowed)
        self._next_allowed = attack + self._min_ioi

        event = self._events[self._count]
        event["sample"] = attack
        event["available"] = pos + hop
        # Out of digital silence the rise is ~100 dB of nothing; count the
        # silence as sitting at the gate so strength stays musical.
        event["strength"] = min(rise[k:].max(), level[k:].max() - self.silence_db)
        event["descriptor"] = self._centroid()
        self._count += 1

        # Short min IOI: the detector may re-arm later in this same hop.
        rest = max(k + 1, self._next_allowed - pos)
        if rest < hop:
            np.less_equal(rise[rest:], self.rearm_db, out=below[rest:])
            if below[rest:].any():
                self._armed = True

    def _backtrack(self, rise: np.ndarray, k: int) -> int:
        """Stream index just after fast - slow last sat below ``backtrack_db``."""
        pos, hop = self._position, self.hop
        quiet = self._mask2
        np.less(rise[:k + 1], self.backtrack_db, out=quiet[:k + 1])
        if quiet[:k + 1].any():
            j = k - int(np.argmax(quiet[k::-1]))
            return pos + j + 1
        np.less(self._rise_prev, self.backtrack_db, out=quiet)
        if quiet.any():
            j = hop - 1 - int(np.argmax(quiet[::-1]))
            return pos - hop + j + 1
        return max(pos - hop, 0)

    def _centroid(self) -> float:
        """Spectral centroid of the recent audio, 0..1 of Nyquist."""
        size, pos = self._desc_size, self._ring_pos
        frame = self._frame
        frame[:size - pos] = self._ring[pos:]
        frame[size - pos:] = self._ring[:pos]
        re, im = self._re, self._im
        np.dot(self._dft_re, frame, out=re)
        np.dot(self._dft_im, frame, out=im)
        re *= re
        im *= im
        re += im
        np.sqrt(re, out=re)
        total = re.sum()
        if total <= 1e-12:
            return 0.0
        return float(np.dot(re, self._bin_pos) / total)


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
        Passed to :class:`OnsetDetector` (``threshold``, ``silence_db`` ...).

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
    >>> x = np.zeros(48000, dtype=np.float32); x[24000] = 1.0
    >>> on, avail, desc = detect(x, 48000)
    >>> float(on[0]), round(float(avail[0] - on[0]) * 1000, 2)
    (0.5, 1.33)
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
    ``sample_rate``, resampled to it with ``scipy.signal.resample_poly``
    (a linear-phase polyphase filter whose delay is compensated, so onset
    times are not shifted). Resampling rather than running the detector at
    the file's rate keeps every time constant and threshold exactly as
    tuned at 48 kHz. Then the audio is fed in ``block_size`` blocks, as
    live.

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
    >>> x = np.zeros(44100, dtype=np.float32); x[11025] = 0.8
    >>> soundfile.write(p, x, 44100)
    >>> on, avail, desc = detect_file(p)
    >>> round(float(on[0]), 3)
    0.25
    """
    from .audio_io import load_audio

    mono = load_audio(path, sample_rate)
    return detect(mono, sample_rate=sample_rate, block_size=block_size, **params)
