"""A virtual partner: a synthetic player with a known feel who listens to the drums.

Experiments and tests need a partner whose timing is known exactly, that
reacts to the drums the way people do, and that the engine still has to
*hear*: :class:`VirtualPartner` renders its notes as audio (guitar, bass or
keys from :mod:`rolypoly.lab.partner_audio`) and feeds that audio to the same
:class:`~rolypoly.onsets.OnsetDetector` as every other source, block by
block as the engine clock passes them (it is a
:class:`~rolypoly.realtime.sources.FileSource` whose audio is written while the take
runs). Onset detection is thus part of every experiment.

Every note n, at notated score time ``s_n`` (seconds from the score's time
zero), is played at ::

    s_n + feel_n + jitter_n + gain * follow_n

``feel_n``
    systematic: ``swing`` (off-beat 8ths late by ``swing`` of an 8th -- 1/3
    is the triplet shuffle of the paper's Fig. 1 morph), ``offset_ms``
    (> 0 laid back, < 0 rushing) and ``structure_ms`` (per-bar or
    per-phrase offsets, or any function of the position: the "tame"
    experiment's structure-dependent timing);
``jitter_n``
    seeded Gaussian noise of standard deviation ``jitter_ms``, drawn afresh
    for every take (take k of a partner made with seed s is the same
    whichever process plays it);
``follow_n``
    the mean deviation (played - notated) of the last ``listen`` drum hits
    heard *before the note was decided*, clipped to ``max_follow_ms``.

A note is decided causally: when the engine clock reaches ``lookahead_ms``
before the note's earliest possible time (its notated time, or earlier when
its feel and jitter pull it earlier), using only the drum hits played
before that moment (:meth:`drum_played`). It is then mixed into the take's
preallocated audio buffer, always after the audio the detector has already
been fed, so the engine never hears a note before it was decided.

Times: partner audio sample 0 sounds at the ``t0`` the engine passes to
:meth:`start`; the score's time zero falls ``partner_offset_s`` into the
partner audio. Give the engine the same value
(``EngineSettings(partner_offset_s=partner.partner_offset_s)``); a
mismatch is noticed at the first drum hit and reported in ``problems``.

Which beats are off-beats is worked out from the score's tempo map and
meters: in meters counted in quarters or halves (4/4, 3/4, 2/2 ...) a note
half-way through a quarter note is an off-beat 8th; meters counted in 8ths
(6/8, 7/8 ...) are not swung. Accents (``accents``) are velocities per beat
of the bar: the quarter in x/4, the half in x/2, the dotted quarter in
compound meters (6/8, 9/8, 12/8), the 8th in other x/8 meters.

Examples
--------
>>> from rolypoly.demo import demo_score
>>> from rolypoly.realtime.clock import SimClock
>>> score = demo_score()
>>> partner = VirtualPartner(score, classes=["snare"], instrument="keys", swing=1/3,
...                          offset_ms=10, jitter_ms=5, gain=0.5, seed=1)
>>> partner.start(SimClock(), t0=0.0)
>>> onsets = partner.poll(4.0)                 # the detector heard what sounded by 4 s
>>> bool(len(onsets) > 0), partner.notes["decided"][:2].tolist()
(True, [True, True])
>>> rec = partner.notes[partner.notes["decided"]]
>>> float(abs(rec["played"][0] - rec["notated"][0] - (rec["feel_ms"][0] + rec["jitter_ms"][0]) / 1000)) < 1e-4
True
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from rolypoly.drum_map import class_index

from rolypoly.lab.partner_audio import INSTRUMENTS, background_noise
from rolypoly.realtime.sources import DEFAULT_BLOCK, DEFAULT_RATE, FileSource

__all__ = ["VirtualPartner", "NOTE", "beat_positions"]

#: One note of the part, as decided and played (times in score seconds, offsets in ms).
NOTE = np.dtype([
    ("notated", np.float64),      # notated time, s from score zero
    ("bar", np.int32),            # bar index from 0
    ("bar_phase", np.float64),    # position in the bar, [0, 1)
    ("beat", np.int32),           # beat of the bar (accents)
    ("offbeat", np.bool_),        # an off-beat 8th (swung)
    ("velocity", np.float32),
    ("swing_ms", np.float64),
    ("offset_ms", np.float64),
    ("structure_ms", np.float64),
    ("feel_ms", np.float64),      # swing + offset + structure
    ("jitter_ms", np.float64),
    ("heard", np.int32),          # drum hits the coupling averaged (0: none heard yet)
    ("drums_ms", np.float64),     # their mean deviation played - notated (NaN: none heard)
    ("coupling_ms", np.float64),  # gain * clip(drums_ms, ±max_follow_ms) (0 when none heard)
    ("decided_at", np.float64),   # when the note was fixed, s from score zero
    ("played", np.float64),       # true onset, s from score zero (sample-exact; NaN: never decided)
    ("clamped", np.bool_),        # pushed later: it would have sounded before it was decided
    ("decided", np.bool_),
])

#: Pitch patterns: a four-bar progression (roots per bar) and the notes within a bar.
_ROOTS = (33, 29, 36, 31)  # A, F, C, G
_PATTERN = {
    "bass": (0, 0, 7, 12),
    "guitar": (12, 19, 24, 19),
    "clicks": (0,),
}
_KEYS_CHORDS = ((57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62))  # Am F C G


def _tempo_segments(tmap):
    starts = np.array([t for t, _ in tmap.tempi], dtype=np.float64)
    sec_per_tick = np.array([us for _, us in tmap.tempi], dtype=np.float64) / 1e6 / tmap.ticks_per_beat
    return starts, sec_per_tick, tmap.seconds(starts)


def _ticks_of_seconds(tmap, seconds: np.ndarray) -> np.ndarray:
    """Inverse of ``TempoMap.seconds`` (the tempo map is piecewise linear and increasing)."""
    starts, sec_per_tick, seg_s = _tempo_segments(tmap)
    seconds = np.asarray(seconds, dtype=np.float64)
    i = np.clip(np.searchsorted(seg_s, seconds, side="right") - 1, 0, None)
    return starts[i] + (seconds - seg_s[i]) / sec_per_tick[i]


def _bars_until(tmap, tick: float):
    """Bar starts and lengths (ticks) covering positions up to ``tick``."""
    return tmap.bars(max(float(tick), 0.0) + 1.0)[:2]


def _longest_bar_ticks(tmap) -> float:
    return max(n * 4 * tmap.ticks_per_beat / d for _, n, d in tmap.meters)


def beat_positions(tmap, ticks: np.ndarray) -> dict:
    """Where notes fall in bar and beat, from their MIDI tick positions.

    Returns a dict of arrays: ``bar`` (index), ``bar_phase`` ([0, 1)),
    ``beat`` (beat of the bar, see the module docstring for what a beat is
    in each meter) and ``offbeat`` (half-way through a quarter note, in
    meters counted in quarters or halves).

    Examples
    --------
    >>> from rolypoly.score import TempoMap
    >>> tm = TempoMap(480)                         # 4/4 at 120 bpm
    >>> pos = beat_positions(tm, np.array([0, 240, 480, 1200, 1920]))
    >>> pos["offbeat"].tolist(), pos["beat"].tolist(), pos["bar"].tolist()
    ([False, True, False, True, False], [0, 0, 1, 2, 0], [0, 0, 0, 0, 1])
    """
    ticks = np.asarray(ticks, dtype=np.float64)
    tpb = tmap.ticks_per_beat
    starts, lengths = _bars_until(tmap, ticks.max() if len(ticks) else 0.0)
    bar = np.clip(np.searchsorted(starts, ticks + 1e-6, side="right") - 1, 0, None)
    into = ticks - starts[bar]
    meter_ticks = np.array([t for t, _, _ in tmap.meters], dtype=np.float64)
    m = np.clip(np.searchsorted(meter_ticks, ticks + 1e-6, side="right") - 1, 0, None)
    num = np.array([tmap.meters[k][1] for k in m], dtype=np.int64)
    den = np.array([tmap.meters[k][2] for k in m], dtype=np.int64)
    compound = (den == 8) & (num % 3 == 0) & (num >= 6)
    beat_ticks = np.where(compound, 1.5 * tpb, 4.0 * tpb / den)
    beat = np.floor(into / beat_ticks + 1e-6).astype(np.int32)
    in_quarter = np.mod(into, tpb) / tpb
    offbeat = (den <= 4) & (np.abs(in_quarter - 0.5) < 0.05)
    return {"bar": bar.astype(np.int32), "bar_phase": into / lengths[bar], "beat": beat,
            "offbeat": offbeat}


class VirtualPartner(FileSource):
    """A synthetic partner that plays a part with a feel and follows the drums.

    Parameters
    ----------
    score : rolypoly.score.Score
        The session's score: its tempo map and meters place the part, and
        its rows may be the part.
    rows : None, bool mask or row indices
        Play these rows of the score (all rows when no part is given).
    classes : str, int or sequence of them
        Play the rows where any of these drum classes sound (e.g. ``"snare"``).
    times_s : sequence of float
        Or: the partner's own notated times, seconds from score zero.
    bar_positions : sequence of float
        Or: its own notated positions as bar index + phase (3.5: half-way
        through the fourth bar), placed through the score's tempo map.
    instrument : {'guitar', 'bass', 'keys', 'clicks'}
    swing : float
        Off-beat 8ths late by this fraction of an 8th (1/3: triplet shuffle).
    offset_ms : float
        Constant lateness: > 0 laid back, < 0 rushing.
    accents : sequence of float, optional
        Velocity (0..1) per beat of the bar, cycled; ``velocity`` everywhere when omitted.
    velocity : float
    jitter_ms : float
        Standard deviation of the Gaussian timing noise.
    structure_ms : sequence of float or callable, optional
        Structure-dependent timing: ms per bar (or per phrase of
        ``phrase_bars`` bars), cycled; or ``f(bar, bar_phase) -> ms``.
    phrase_bars : int
    gain : float in 0..1
        How much of the drums' recent deviation the partner follows.
    listen : int
        How many of the latest drum hits the deviation is averaged over.
    max_follow_ms : float
        The followed deviation is clipped to ± this (people stop following).
    lookahead_ms : float
        A note is decided this long before its earliest possible time.
    partner_offset_s : float
        Where score time zero falls in the partner audio (as the engine's
        setting of the same name); notes are never placed before sample 0.
    legato : float
        Note length as a fraction of the gap to the next notated note.
    noise_db : float, optional
        Background noise under the part (RMS dBFS).
    seed : int
    sample_rate, block, detector : as for :class:`~rolypoly.realtime.sources.FileSource`

    Attributes
    ----------
    notes : np.ndarray of :data:`NOTE`
        Every note of the current (or last) take, decided or not.
    true_onsets : np.ndarray
        Score-relative seconds of every note as actually played.
    problems : list of str
        E.g. a ``partner_offset_s`` that does not match the engine's.
    """

    def __init__(self, score, *, rows=None, classes=None, times_s: Sequence[float] | None = None,
                 bar_positions: Sequence[float] | None = None, instrument: str = "guitar",
                 swing: float = 0.0, offset_ms: float = 0.0, accents: Sequence[float] | None = None,
                 velocity: float = 0.8, jitter_ms: float = 0.0,
                 structure_ms: Sequence[float] | Callable[[int, float], float] | None = None,
                 phrase_bars: int = 1, gain: float = 0.0, listen: int = 4,
                 max_follow_ms: float = 150.0, lookahead_ms: float = 60.0,
                 partner_offset_s: float = 0.0, legato: float = 0.9, noise_db: float | None = None,
                 seed: int = 0, sample_rate: int = DEFAULT_RATE, block: int = DEFAULT_BLOCK,
                 detector: dict | None = None):
        if instrument not in INSTRUMENTS:
            raise ValueError(f"instrument {instrument!r}: choose one of {sorted(INSTRUMENTS)}")
        if not 0.0 <= gain <= 1.0:
            raise ValueError(f"gain {gain!r}: must be within 0..1")
        if listen < 1 or phrase_bars < 1:
            raise ValueError("listen and phrase_bars must be >= 1")
        if jitter_ms < 0 or lookahead_ms < 0 or max_follow_ms < 0:
            raise ValueError("jitter_ms, lookahead_ms and max_follow_ms must be >= 0")
        self.score, self.instrument = score, instrument
        self.swing, self.offset_ms, self.jitter_ms = float(swing), float(offset_ms), float(jitter_ms)
        self.gain, self.listen = float(gain), int(listen)
        self.max_follow_ms, self.lookahead_ms = float(max_follow_ms), float(lookahead_ms)
        self.partner_offset_s, self.seed = float(partner_offset_s), int(seed)
        self.structure_ms, self.phrase_bars = structure_ms, int(phrase_bars)
        self.accents = None if accents is None else [float(a) for a in accents]
        self.problems: list[str] = []

        tmap = score.tempo_map
        notated, ticks = self._part(score, rows, classes, times_s, bar_positions)
        order = np.argsort(notated, kind="stable")
        notated, ticks = notated[order], ticks[order]
        n = len(notated)
        pos = beat_positions(tmap, ticks) if n else {k: np.zeros(0) for k in ("bar", "bar_phase", "beat", "offbeat")}

        rec = np.zeros(n, NOTE)
        rec["notated"] = notated
        rec["bar"], rec["bar_phase"], rec["beat"] = pos["bar"], pos["bar_phase"], pos["beat"]
        rec["offbeat"] = pos["offbeat"]
        half_quarter = tmap.ticks_per_beat / 2.0
        rec["swing_ms"] = np.where(pos["offbeat"],
                                   (tmap.seconds(ticks + self.swing * half_quarter) - tmap.seconds(ticks)) * 1000.0,
                                   0.0)
        rec["offset_ms"] = self.offset_ms
        rec["structure_ms"] = [self._structure(int(b), float(p)) for b, p in zip(pos["bar"], pos["bar_phase"])]
        rec["feel_ms"] = rec["swing_ms"] + rec["offset_ms"] + rec["structure_ms"]
        if self.accents:
            rec["velocity"] = [self.accents[int(b) % len(self.accents)] for b in pos["beat"]]
        else:
            rec["velocity"] = velocity
        self._template = rec

        # Pitches and lengths do not depend on timing: render each distinct note once, now.
        gaps = np.diff(np.append(notated, notated[-1] + 0.6)) if n else np.zeros(0)
        durations = np.clip(gaps * legato, 0.05, 1.5)
        self._note_audio: list[np.ndarray] = []
        cache: dict = {}
        render = INSTRUMENTS[instrument]
        for k in range(n):
            pitch = self._pitch(instrument, int(pos["bar"][k]), k)
            key = (pitch, round(float(durations[k]), 4), round(float(rec["velocity"][k]), 4))
            if key not in cache:
                cache[key] = render([0.0], durations=key[1], pitches=[pitch], velocities=key[2],
                                    sample_rate=int(sample_rate))
            self._note_audio.append(cache[key])

        # The take's buffer: room for the latest any note can sound, however the drums go.
        sr = int(sample_rate)
        self._jitter_room_ms = 5.0 * self.jitter_ms
        follow_room = self.gain * self.max_follow_ms
        ends = [partner_offset_s + notated[k] + (max(rec["feel_ms"][k], 0.0) + self._jitter_room_ms
                                                 + follow_room + lookahead_ms) / 1000.0
                + len(self._note_audio[k]) / sr for k in range(n)]
        length = int(math.ceil((max(ends, default=0.0) + 0.25) * sr))
        super().__init__(audio=np.zeros(length, np.float32), sample_rate=sr, block=block, detector=detector)
        self._noise = None
        if noise_db is not None:
            # The amp fades up over the first half second: noise starting out of digital
            # silence would be heard as an onset, and a room never does that.
            self._noise = background_noise(length, noise_db, seed=self.seed + 7919)
            fade = min(length, sr // 2)
            self._noise[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)

        self.take = -1
        self.notes = rec.copy()
        self._decide_at = np.zeros(n)
        self._order = np.arange(n)
        self._next = 0
        self._hist_played = np.zeros(max(len(score) + 16, 64))
        self._hist_dev = np.zeros_like(self._hist_played)
        self._hits = 0
        self._t0 = None
        self.name = self._describe()

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _part(score, rows, classes, times_s, bar_positions):
        """Notated times (s) and ticks of the part."""
        given = sum(x is not None for x in (rows, classes, times_s, bar_positions))
        if given > 1 and not (given == 2 and rows is not None and classes is not None):
            raise ValueError("give the part as rows/classes of the score, or times_s, or bar_positions")
        tmap = score.tempo_map
        if times_s is not None:
            notated = np.asarray(times_s, dtype=np.float64).ravel()
            return notated, _ticks_of_seconds(tmap, notated)
        if bar_positions is not None:
            p = np.asarray(bar_positions, dtype=np.float64).ravel()
            if np.any(p < 0):
                raise ValueError("bar positions must be >= 0")
            bar = np.floor(p).astype(np.int64)
            end = (bar.max() + 2) * _longest_bar_ticks(tmap) if len(p) else 0.0
            starts, lengths = _bars_until(tmap, end)
            ticks = starts[bar] + (p - bar) * lengths[bar]
            return tmap.seconds(ticks), ticks
        keep = np.ones(len(score), bool)
        if rows is not None:
            rows = np.asarray(rows)
            mask = np.zeros(len(score), bool)
            mask[rows] = True  # a bool mask or indices
            keep &= mask
        if classes is not None:
            classes = [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)
            idx = [class_index(c) if isinstance(c, str) else int(c) for c in classes]
            keep &= score.hits[:, idx].any(axis=1)
        return score.onset_s[keep].astype(np.float64), score.tick[keep].astype(np.float64)

    def _structure(self, bar: int, phase: float) -> float:
        s = self.structure_ms
        if s is None:
            return 0.0
        if callable(s):
            return float(s(bar, phase))
        s = list(s)
        return float(s[(bar // self.phrase_bars) % len(s)]) if s else 0.0

    @staticmethod
    def _pitch(instrument: str, bar: int, k: int):
        root = _ROOTS[bar % len(_ROOTS)]
        if instrument == "keys":
            return _KEYS_CHORDS[bar % len(_KEYS_CHORDS)]
        if instrument == "clicks":
            return 0
        pattern = _PATTERN[instrument]
        return root + pattern[k % len(pattern)]

    def _describe(self) -> str:
        parts = [f"virtual {self.instrument}"]
        if self.swing:
            parts.append(f"swing {self.swing:.3g}")
        if self.offset_ms:
            parts.append(f"{self.offset_ms:+g} ms")
        if self.structure_ms is not None:
            parts.append("structured")
        if self.jitter_ms:
            parts.append(f"jitter {self.jitter_ms:g} ms")
        parts.append(f"gain {self.gain:g}")
        return f"{parts[0]} ({', '.join(parts[1:])}, {len(self._template)} notes, seed {self.seed})"

    # ------------------------------------------------------------------ PartnerSource
    def start(self, clock, t0: float) -> None:
        """Begin a take: audio sample 0 sounds at engine time ``t0``; fresh jitter per take."""
        super().start(clock, t0)
        self._t0 = float(t0)
        self.take += 1
        self.audio.fill(0.0)
        if self._noise is not None:
            self.audio += self._noise
        rng = np.random.default_rng([self.seed, self.take])
        self.notes = self._template.copy()
        n = len(self.notes)
        jitter = rng.normal(0.0, self.jitter_ms, n) if self.jitter_ms else np.zeros(n)
        # The buffer has room for 5 sigma; a rarer draw (1 in 1.7 million) is held there.
        self.notes["jitter_ms"] = np.clip(jitter, -self._jitter_room_ms, self._jitter_room_ms)
        self.notes["played"] = np.nan
        self.notes["decided_at"] = np.nan
        self.notes["drums_ms"] = np.nan
        early = np.minimum(self.notes["feel_ms"] + self.notes["jitter_ms"], 0.0)
        # Engine time at which each note is fixed.
        self._decide_at = (self._t0 + self.partner_offset_s + self.notes["notated"]
                           + (early - self.lookahead_ms) / 1000.0)
        self._order = np.argsort(self._decide_at, kind="stable")
        self._next = 0
        self._hits = 0

    def poll(self, now: float) -> np.ndarray:
        """Decide the notes due by ``now``, then feed the detector every block arrived by ``now``."""
        if self._t0 is not None:
            order, decide_at = self._order, self._decide_at
            while self._next < len(order) and decide_at[order[self._next]] <= now:
                self._decide(int(order[self._next]))
                self._next += 1
        return super().poll(now)

    def drum_played(self, notated: float, played: float) -> None:
        """The engine played a drum hit (engine times): remember how far off it was."""
        if self._hits == len(self._hist_played):
            self._hist_played = np.concatenate([self._hist_played, np.zeros_like(self._hist_played)])
            self._hist_dev = np.concatenate([self._hist_dev, np.zeros_like(self._hist_dev)])
        self._hist_played[self._hits] = played
        self._hist_dev[self._hits] = played - notated
        self._hits += 1
        if self._hits == 1 and self._t0 is not None and len(self.score):
            at = notated - self._t0 - self.partner_offset_s
            near = float(np.min(np.abs(self.score.onset_s - at)))
            if near > 1e-3:
                self.problems.append(
                    f"{self.name}: the first drum hit is notated {at:.3f} s from this partner's score "
                    f"zero, {near * 1000:.1f} ms from any score row: set the engine's partner_offset_s "
                    f"to the partner's ({self.partner_offset_s:g} s)")

    def known_audio(self) -> None:
        """None: the partner's notes are written as the take plays (give the engine ``partner_offset_s``)."""
        return None

    def recording(self) -> np.ndarray:
        """The partner audio of the take (a copy: the buffer is reused by the next take)."""
        return super().recording().copy()

    # ------------------------------------------------------------------ deciding a note
    def _decide(self, k: int) -> None:
        note = self.notes[k]
        sr, t0 = self.sample_rate, self._t0
        d = self._decide_at[k]
        # Drum hits played before the decision (they arrive in time order).
        heard = int(np.searchsorted(self._hist_played[:self._hits], d, side="left"))
        lo = max(0, heard - self.listen)
        coupling = 0.0
        if heard > lo:
            dev_ms = float(np.mean(self._hist_dev[lo:heard])) * 1000.0
            note["drums_ms"] = dev_ms
            coupling = self.gain * min(max(dev_ms, -self.max_follow_ms), self.max_follow_ms)
        note["heard"] = heard - lo
        note["coupling_ms"] = coupling
        shift_ms = note["feel_ms"] + note["jitter_ms"] + coupling
        start = int(round((self.partner_offset_s + note["notated"] + shift_ms / 1000.0) * sr))
        # Never before the decision, never into audio the detector has already been fed.
        earliest = max(int(math.ceil((d - t0) * sr)), self._next_block * self.block, 0)
        if start < earliest:
            start, note["clamped"] = earliest, True
        x = self._note_audio[k]
        end = min(start + len(x), len(self.audio))
        if end > start:
            self.audio[start:end] += x[:end - start]
        note["decided_at"] = d - t0 - self.partner_offset_s
        note["played"] = start / sr - self.partner_offset_s
        note["decided"] = True

    # ------------------------------------------------------------------ analysis
    @property
    def true_onsets(self) -> np.ndarray:
        """Score-relative seconds of every note played so far this take (notated order)."""
        return self.notes["played"][self.notes["decided"]].copy()

    @property
    def notated_s(self) -> np.ndarray:
        """Notated times of the part, seconds from score zero."""
        return self._template["notated"].copy()

    def record(self) -> dict:
        """The decided notes as plain lists (for JSON), one key per :data:`NOTE` field."""
        rec = self.notes[self.notes["decided"]]
        return {name: rec[name].tolist() for name in NOTE.names}
