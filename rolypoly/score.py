"""A drum score: rows of simultaneous hits on a 24-step-per-bar grid.

A score is read from a Standard MIDI File. Every drum note is placed on the
nearest grid step of its bar (:mod:`rolypoly.grid`); notes on the same step
form one *row*. A row knows what is hit (9 classes, :mod:`rolypoly.drum_map`),
how loud, where it is notated (seconds and bar position), how long until the
next row, and the local tempo and time signature. The distance of the played
notes from the notated step is kept as ``played_offset`` (fraction of a bar):
the drummer's microtiming, which the Groove MIDI Dataset pipeline uses as
labels and a quantised score has as zeros.

Tempo changes and time-signature changes are honoured: positions are worked
out in MIDI ticks, bar by bar, and converted to seconds through the tempo
map. Writing back (:func:`write_midi`) works in ticks too, so the tempo map
and the meters survive a round trip untouched.

Examples
--------
>>> from rolypoly.score import load_score, write_midi
>>> from rolypoly.paths import DEMO_SCORE
>>> score = load_score(DEMO_SCORE)
>>> len(score), float(score.tempo_bpm[0]), float(score.timesig[0])
(123, 96.0, 1.0)
>>> len(score.head(8)), int(score.n_bars)
(8, 17)
>>> write_midi(score, "late.mid", offsets=score.played_offset)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
from dataclasses import dataclass, field, replace

import mido
import numpy as np

from .drum_map import DRUM_CHANNEL, N_CLASSES, OUTPUT_PITCHES, class_of_pitch
from .errors import ScoreError
from .grid import STEPS_PER_BAR, timesig_value
from .limits import MAX_BARS, MAX_MIDI_BYTES, MAX_ROWS, check_count, check_file_size, check_seconds
from .material import Material, material_from, write_performed

#: Tempi outside this range (quarter notes per minute) are taken as a broken file.
TEMPO_RANGE_BPM = (20.0, 400.0)
DEFAULT_TEMPO_US = 500_000  # 120 bpm, the MIDI default
#: Length of written drum notes, in beats: drums ignore note-offs, DAWs want one.
NOTE_LENGTH_BEATS = 0.125


@dataclass
class TempoMap:
    """Tempo and meter of a piece, in MIDI ticks.

    ``tempi`` is a list of ``(tick, microseconds_per_quarter)`` and
    ``meters`` a list of ``(tick, numerator, denominator)``, both sorted
    and both starting at tick 0.
    """

    ticks_per_beat: int
    tempi: list[tuple[int, int]] = field(default_factory=lambda: [(0, DEFAULT_TEMPO_US)])
    meters: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 4, 4)])

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Seconds at each tick position (ticks may be fractional)."""
        ticks = np.asarray(ticks, dtype=np.float64)
        starts = np.array([t for t, _ in self.tempi], dtype=np.float64)
        sec_per_tick = np.array([us for _, us in self.tempi], dtype=np.float64) / 1e6 / self.ticks_per_beat
        seg_start_s = np.concatenate([[0.0], np.cumsum(np.diff(starts) * sec_per_tick[:-1])])
        i = np.clip(np.searchsorted(starts, ticks, side="right") - 1, 0, None)
        return seg_start_s[i] + (ticks - starts[i]) * sec_per_tick[i]

    def bpm_at(self, ticks: np.ndarray) -> np.ndarray:
        """Tempo in quarter notes per minute at each tick position."""
        starts = np.array([t for t, _ in self.tempi])
        i = np.clip(np.searchsorted(starts, np.asarray(ticks), side="right") - 1, 0, None)
        return 60e6 / np.array([us for _, us in self.tempi], dtype=np.float64)[i]

    def meter_at(self, ticks) -> np.ndarray:
        """Time signature at each tick position as (numerator, denominator) pairs, shape (N, 2).

        The score's ``timesig`` column folds a meter into one value (3/4 and
        6/8 are both 0.75); this is the meter as written, for what is shown
        to a musician ("6/8") and for where the beats are.

        >>> TempoMap(480, meters=[(0, 4, 4), (1920, 6, 8)]).meter_at([0, 1919, 1920]).tolist()
        [[4, 4], [4, 4], [6, 8]]
        """
        starts = np.array([t for t, _, _ in self.meters])
        i = np.clip(np.searchsorted(starts, np.asarray(ticks, dtype=np.float64), side="right") - 1, 0, None)
        return np.array([(n, d) for _, n, d in self.meters], dtype=np.int64).reshape(-1, 2)[i]

    def bars(self, end_tick: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bar start ticks, bar lengths in ticks and time-signature values up to ``end_tick``.

        A time-signature change starts a new bar, as in notation software; a
        bar the change cuts short keeps only its length up to the change.
        """
        starts, lengths, values = [], [], []
        whole = 4 * self.ticks_per_beat
        for k, (tick, num, den) in enumerate(self.meters):
            last = k + 1 == len(self.meters)
            stop = max(end_tick, tick) + 1 if last else self.meters[k + 1][0]
            length = num * whole / den
            t = float(tick)
            while t < stop:
                this = length if last else min(length, stop - t)
                starts.append(t)
                lengths.append(this)
                values.append(timesig_value(num, den) if this == length else this / whole)
                t += this
        return np.array(starts), np.array(lengths), np.array(values)

    def n_bars(self, end_tick: float) -> int:
        """How many bars :meth:`bars` gives up to ``end_tick``, counted without making them.

        >>> TempoMap(480, meters=[(0, 4, 4), (3840, 3, 4)]).n_bars(3840 + 10 * 1440)
        13
        """
        whole = 4 * self.ticks_per_beat
        n = 0
        for k, (tick, num, den) in enumerate(self.meters):
            last = k + 1 == len(self.meters)
            stop = max(end_tick, tick) + 1 if last else self.meters[k + 1][0]
            n += math.ceil((stop - tick) / (num * whole / den))
        return n


@dataclass
class Score:
    """A drum part as rows of simultaneous hits (see module docstring).

    Arrays have one entry per row; ``hits`` and ``velocities`` are (rows, 9).
    """

    hits: np.ndarray            # (N, 9) bool: which drum classes sound in the row
    velocities: np.ndarray      # (N, 9) int: MIDI velocity per class, 0 where silent
    bar: np.ndarray             # (N,) int: bar index from 0
    step: np.ndarray            # (N,) int: grid step in the bar, 0..23
    onset_s: np.ndarray         # (N,) notated onset, seconds
    duration_ms: np.ndarray     # (N,) time to the next row (last row: to the end of its bar)
    tempo_bpm: np.ndarray       # (N,) local tempo, quarter notes per minute
    timesig: np.ndarray         # (N,) local time signature as one value (3/4, 6/8 -> 0.75)
    bar_ms: np.ndarray          # (N,) length of the row's bar in ms
    tick: np.ndarray            # (N,) notated position in MIDI ticks
    bar_ticks: np.ndarray       # (N,) length of the row's bar in ticks
    played_offset: np.ndarray   # (N,) played minus notated time, fraction of a bar
    tempo_map: TempoMap
    name: str = "score"
    warnings: list[str] = field(default_factory=list)
    #: The player's file and its notes (None: a score made in code, played with the GM pitch of each class).
    material: Material | None = None

    def __len__(self) -> int:
        return len(self.bar)

    @property
    def beat_phase(self) -> np.ndarray:
        """Position of each row in its bar, in [0, 1)."""
        return self.step / STEPS_PER_BAR

    @property
    def bar_position(self) -> np.ndarray:
        """Bar index plus phase: 3.5 is half-way through the fourth bar."""
        return self.bar + self.beat_phase

    def head(self, n: int) -> "Score":
        """The score's first ``n`` rows (a take cut short, a short test piece).

        >>> len(score.head(8))   # doctest: +SKIP
        8
        """
        return self.select(slice(0, n))

    def select(self, rows) -> "Score":
        """The score's rows picked by an index, slice or boolean mask (tempo map kept).

        >>> len(score.select(score.hits.any(axis=1)))   # doctest: +SKIP
        412
        """
        picked = {f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **picked, warnings=list(self.warnings))

    @property
    def n_bars(self) -> int:
        return int(self.bar[-1]) + 1 if len(self) else 0



# ----------------------------------------------------------------------------- reading

def _fail(path, problem: str) -> ScoreError:
    return ScoreError(f"{path}: {problem}")


def _read_midi(path) -> tuple[mido.MidiFile, bytes]:
    """The parsed file and its bytes as read (the bytes travel between processes: see Material)."""
    if not os.path.exists(path):
        raise _fail(path, "no such file")
    if os.path.isdir(path):
        raise _fail(path, "is a folder, not a MIDI file")
    if os.path.getsize(path) == 0:
        raise _fail(path, "file is empty")
    check_file_size(path, MAX_MIDI_BYTES, "MIDI file", error=ScoreError)
    try:
        with open(path, "rb") as f:
            data = f.read()
        return mido.MidiFile(path, file=io.BytesIO(data), clip=True), data
    except Exception as e:  # mido raises OSError, EOFError, KeyError, ValueError... for junk
        reason = str(e).strip() or type(e).__name__
        raise _fail(path, f"not a readable Standard MIDI File ({reason})") from None


def _events(midi: mido.MidiFile):
    """Yield (absolute_tick, track_index, message_index, message) for every message."""
    if midi.type == 2:
        # Type 2 tracks are independent sequences: no shared time line to quantise to.
        raise ValueError("type 2 (multi-song) MIDI files are not supported")
    for k, track in enumerate(midi.tracks):
        tick = 0
        for i, msg in enumerate(track):
            tick += msg.time
            yield tick, k, i, msg


def read_drum_notes(path, *, taps: bool = False) -> tuple[np.ndarray, TempoMap, list[str]]:
    """The drum notes of a Standard MIDI File, unquantised, with its tempo map.

    Drum notes are the note-ons on MIDI channel 10 whose pitch is in the drum
    map; the rest are dropped and reported. Anything that makes the file
    unusable raises :class:`~rolypoly.errors.ScoreError` with one line naming
    the file.

    With ``taps=True`` every note-on of any channel and pitch counts (a
    rhythm tapped on a keyboard or pad): drums keep their class, any other
    note gets class 2 (closed hi-hat).

    Returns
    -------
    notes : np.ndarray (n, 3) float64
        ``(tick, class, velocity)`` of every drum note, in file order.
    tempo_map : TempoMap
    warnings : list of str
        Dropped pitches and merged drum tracks, one line each.

    Examples
    --------
    >>> notes, tmap, warnings = read_drum_notes("song.mid")   # doctest: +SKIP
    >>> notes[0]                                               # doctest: +SKIP
    array([  0.,   0., 100.])
    """
    notes, tmap, warnings, _ = read_material(path, taps=taps)
    return notes, tmap, warnings


def read_material(path, *, taps: bool = False) -> tuple[np.ndarray, TempoMap, list[str], Material]:
    """:func:`read_drum_notes` and the file itself with where each of those notes is in it.

    Returns
    -------
    notes, tempo_map, warnings : as :func:`read_drum_notes`
    material : rolypoly.material.Material
        The file as read; its ``notes`` are the drum notes, in the same order.
    """
    path = os.fspath(path)
    midi, data = _read_midi(path)
    if midi.ticks_per_beat <= 0:
        raise _fail(path, f"ticks per beat is {midi.ticks_per_beat}")
    try:
        events = list(_events(midi))
    except ValueError as e:
        raise _fail(path, str(e)) from None

    tempi, meters, notes, drum_tracks, unmapped, found = {}, {}, [], set(), {}, []
    for tick, k, i, msg in events:
        if msg.type == "set_tempo":
            if msg.tempo <= 0:
                raise _fail(path, f"tempo of 0 microseconds per beat at tick {tick} is not a playable tempo")
            bpm = mido.tempo2bpm(msg.tempo)
            if not TEMPO_RANGE_BPM[0] <= bpm <= TEMPO_RANGE_BPM[1]:
                raise _fail(path, f"tempo {bpm:g} bpm at tick {tick} is not a playable tempo "
                                  f"({TEMPO_RANGE_BPM[0]:g}-{TEMPO_RANGE_BPM[1]:g} bpm)")
            tempi[tick] = msg.tempo
        elif msg.type == "time_signature":
            if not (1 <= msg.numerator <= 64 and msg.denominator in (1, 2, 4, 8, 16, 32, 64)):
                raise _fail(path, f"time signature {msg.numerator}/{msg.denominator} at tick {tick} "
                                  "is not a usable meter")
            meters[tick] = (msg.numerator, msg.denominator)
        elif msg.type == "note_on" and msg.velocity > 0 and (msg.channel == DRUM_CHANNEL or taps):
            c = class_of_pitch(msg.note) if msg.channel == DRUM_CHANNEL else None
            if c is None and taps:
                c = class_of_pitch(42)  # the GM closed hi-hat: a tap is most like one
            if c is None:
                unmapped[msg.note] = unmapped.get(msg.note, 0) + 1
                continue
            drum_tracks.add(k)
            notes.append((tick, c, msg.velocity))
            found.append((k, i, tick, msg.channel, msg.note, msg.velocity, c))

    warnings = []
    if unmapped:
        n = sum(unmapped.values())
        warnings.append(f"{path}: dropped {n} note{'s' * (n != 1)} with pitches outside the drum map: "
                        + ", ".join(str(p) for p in sorted(unmapped)))
    if not notes:
        why = " (only unmapped pitches)" if unmapped else ""
        raise _fail(path, "no notes" if taps else f"no drum notes on MIDI channel 10{why}")
    if len(drum_tracks) > 1:
        warnings.append(f"{path}: merged {len(drum_tracks)} drum tracks into one part")

    tempi.setdefault(0, DEFAULT_TEMPO_US)
    meters.setdefault(0, (4, 4))
    tmap = TempoMap(ticks_per_beat=midi.ticks_per_beat, tempi=sorted(tempi.items()),
                    meters=[(t, n, d) for t, (n, d) in sorted(meters.items())])
    notes = np.array(notes, dtype=np.float64)
    check_length(path, tmap, max(float(notes[:, 0].max()), max(tempi), max(meters)))
    return notes, tmap, warnings, material_from(midi, found, tmap.tempi, source=data)


def check_length(path, tmap: TempoMap, last_tick: float) -> None:
    """Refuse a piece whose last event is too far in, before any bar or row is made for it.

    Two notes 2^27 ticks apart are a 63-byte file and days of music: everything
    after reading (rows, bars, grid windows, a take's mix) grows with the length.
    """
    check_seconds(float(tmap.seconds(last_tick)), path, what=f"its last event (tick {int(last_tick)}) is at",
                  error=ScoreError)
    check_count("bars", tmap.n_bars(last_tick), MAX_BARS, path, error=ScoreError)


def load_score(path, *, name: str | None = None) -> Score:
    """Read a drum part from a Standard MIDI File.

    Drum notes are the notes on MIDI channel 10. Pitches outside the drum map
    are dropped, several drum tracks are merged; both are reported in
    ``score.warnings``. Anything that makes the file unusable raises
    :class:`~rolypoly.errors.ScoreError` with one line naming the file.

    Parameters
    ----------
    path : str or os.PathLike
        The MIDI file.
    name : str, optional
        Name of the score; defaults to the file name.

    Examples
    --------
    >>> score = load_score("song.mid")   # doctest: +SKIP
    >>> score.warnings                    # doctest: +SKIP
    ['song.mid: dropped 3 notes with pitches outside the drum map: 21']
    """
    path = os.fspath(path)
    notes, tmap, warnings, material = read_material(path)
    score = _rows_from_notes(notes, tmap, material)
    check_count("rows", len(score), MAX_ROWS, path, error=ScoreError)
    score.name = name or os.path.splitext(os.path.basename(path))[0]
    score.warnings = warnings
    return score


def _rows_from_notes(notes: np.ndarray, tmap: TempoMap, material: Material | None = None) -> Score:
    """Quantise (tick, class, velocity) notes to grid rows (``material``: the same notes in their file)."""
    ticks, classes, vels = notes[:, 0], notes[:, 1].astype(int), notes[:, 2].astype(int)
    bar_starts, bar_lens, bar_ts = tmap.bars(ticks.max() + 4 * tmap.ticks_per_beat * 8)
    bar = np.searchsorted(bar_starts, ticks, side="right") - 1
    step = np.rint((ticks - bar_starts[bar]) / bar_lens[bar] * STEPS_PER_BAR).astype(int)
    # A note played just before a downbeat belongs to the next bar's step 0.
    wrap = step >= STEPS_PER_BAR
    bar[wrap] += 1
    step[wrap] = 0
    notated = bar_starts[bar] + step * bar_lens[bar] / STEPS_PER_BAR
    residual = (ticks - notated) / bar_lens[bar]

    key = bar * STEPS_PER_BAR + step
    row_keys, row_of_note = np.unique(key, return_inverse=True)
    n = len(row_keys)
    hits = np.zeros((n, N_CLASSES), dtype=bool)
    velocities = np.zeros((n, N_CLASSES), dtype=np.int16)
    hits[row_of_note, classes] = True
    np.maximum.at(velocities, (row_of_note, classes), vels)  # doubled strokes: keep the loudest
    offset = np.bincount(row_of_note, weights=residual, minlength=n) / np.bincount(row_of_note, minlength=n)

    rbar, rstep = row_keys // STEPS_PER_BAR, row_keys % STEPS_PER_BAR
    rtick = bar_starts[rbar] + rstep * bar_lens[rbar] / STEPS_PER_BAR
    onset_s = tmap.seconds(rtick)
    end_s = tmap.seconds(bar_starts[rbar[-1]] + bar_lens[rbar[-1]])
    duration_ms = np.diff(np.append(onset_s, end_s)) * 1000.0
    bpm = tmap.bpm_at(rtick)
    ts = bar_ts[rbar]
    bar_ms = 60_000.0 / bpm * 4 * ts
    if material is not None:
        # Each note's row, how far it is from its row's played time (a flam stays a flam) and
        # the loudest note of its class in the row (velocities scale from it).
        spread = (residual - offset[row_of_note]) * bar_lens[bar]
        material = material.placed(key, spread, velocities[row_of_note, classes])
    return Score(hits=hits, velocities=velocities, bar=rbar, step=rstep, onset_s=onset_s,
                 duration_ms=duration_ms, tempo_bpm=bpm, timesig=ts, bar_ms=bar_ms,
                 tick=rtick, bar_ticks=bar_lens[rbar], played_offset=offset, tempo_map=tmap,
                 material=material)


def score_from_grid(hits, velocities=None, *, bpm: float = 120.0, meter=(4, 4),
                    tempi=None, meters=None, ticks_per_beat: int = 480, name="pattern") -> Score:
    """Build a quantised score from a grid of 24 steps per bar.

    Parameters
    ----------
    hits : array (bars * 24, 9) of bool
        Which classes sound on each step, bar after bar.
    velocities : array like ``hits``, optional
        MIDI velocities; 100 where omitted.
    bpm, meter : the tempo and time signature when ``tempi``/``meters`` are not given.
    tempi, meters : lists of ``(bar, bpm)`` and ``(bar, numerator, denominator)``
        Changes at bar starts, for pieces that change tempo or meter.

    Examples
    --------
    >>> grid = np.zeros((24, 9), bool); grid[::6, 0] = True
    >>> len(score_from_grid(grid, bpm=90))
    4
    """
    hits = np.asarray(hits, dtype=bool)
    velocities = np.where(hits, 100, 0) if velocities is None else np.asarray(velocities)
    meters = meters or [(0, *meter)]
    tempi = tempi or [(0, bpm)]
    n_bars = -(-len(hits) // STEPS_PER_BAR)
    # Bar b starts at a tick we can only know by walking the meters.
    bar_tick, tick, meter_at = [], 0.0, dict((b, (n, d)) for b, n, d in meters)
    num, den = meter_at.get(0, (4, 4))
    for b in range(n_bars + 1):
        num, den = meter_at.get(b, (num, den))
        bar_tick.append(tick)
        tick += num * ticks_per_beat * 4 / den
    tmap = TempoMap(
        ticks_per_beat=ticks_per_beat,
        tempi=[(int(round(bar_tick[b])), int(round(mido.bpm2tempo(t)))) for b, t in tempi],
        meters=[(int(round(bar_tick[b])), n, d) for b, n, d in meters],
    )
    _, lens, _ = tmap.bars(bar_tick[-1])
    idx_step, idx_class = np.nonzero(hits)
    b = idx_step // STEPS_PER_BAR
    ticks = np.array(bar_tick)[b] + (idx_step % STEPS_PER_BAR) * lens[b] / STEPS_PER_BAR
    notes = np.stack([ticks, idx_class, velocities[idx_step, idx_class]], axis=1).astype(np.float64)
    if not len(notes):
        raise ScoreError(f"{name}: the pattern has no hits")
    score = _rows_from_notes(notes, tmap)
    score.name = name
    return score


def at_tempo(score: Score, bpm: float) -> Score:
    """The score with its first tempo at ``bpm``; later tempo changes keep their ratio.

    Every time (``onset_s``, ``duration_ms``, ``bar_ms``) is divided by the
    ratio ``bpm / first tempo`` and every tempo (``tempo_bpm`` and the tempo
    map, so a written MIDI file has the new tempo) multiplied by it. Tick
    positions, bars and steps are unchanged: the notes are the same, only
    faster or slower. The input score is not modified.

    Raises
    ------
    ScoreError
        ``bpm`` is not a positive finite number, or a later tempo change
        would leave the playable range (20-400 bpm).

    Examples
    --------
    >>> from rolypoly.demo import demo_score
    >>> score = demo_score()                        # 96 bpm, then 78 bpm from bar 13
    >>> fast = at_tempo(score, 192)
    >>> round(float(fast.tempo_bpm[0]), 3), round(float(fast.tempo_bpm[-1]), 3)
    (192.0, 156.0)
    >>> float(fast.onset_s[5] / score.onset_s[5]), bool((fast.tick == score.tick).all())
    (0.5, True)
    """
    if not (isinstance(bpm, (int, float)) and math.isfinite(bpm) and bpm > 0):
        raise ScoreError(f"{score.name}: tempo {bpm!r} is not a positive number of bpm")
    ratio = float(bpm) / float(score.tempo_bpm[0])
    tempi = [(tick, us / ratio) for tick, us in score.tempo_map.tempi]
    lo, hi = TEMPO_RANGE_BPM
    for tick, us in tempi:
        if not lo <= 60e6 / us <= hi:
            bar = int(score.bar[np.searchsorted(score.tick, tick)]) if tick <= score.tick[-1] else None
            where = f"the tempo change in bar {bar + 1}" if bar is not None else "a tempo change"
            raise ScoreError(f"{score.name}: at {bpm:g} bpm {where} would be {60e6 / us:.4g} bpm, "
                             f"outside {lo:g}-{hi:g} bpm")
    tmap = TempoMap(score.tempo_map.ticks_per_beat, tempi=[(t, int(round(us))) for t, us in tempi],
                    meters=list(score.tempo_map.meters))
    # Arrays are copied so that the new score shares nothing mutable with the old one.
    copied = {f.name: np.copy(getattr(score, f.name)) for f in dataclasses.fields(score)
              if isinstance(getattr(score, f.name), np.ndarray)}
    copied.update(onset_s=score.onset_s / ratio, duration_ms=score.duration_ms / ratio,
                  bar_ms=score.bar_ms / ratio, tempo_bpm=score.tempo_bpm * ratio)
    return replace(score, **copied, tempo_map=tmap, warnings=list(score.warnings))


# ----------------------------------------------------------------------------- writing

def write_midi(score: Score, path, *, offsets=None, velocities=None) -> None:
    """Write a score to a Standard MIDI File, optionally performed.

    Parameters
    ----------
    score : Score
    path : output file
    offsets : array (rows,), optional
        Timing offset of each row, fraction of a bar (positive = late). Zero
        (the notated time) where omitted.
    velocities : array (rows, 9), optional
        MIDI velocity of each hit; the score's velocities where omitted.

    A score read from a file writes that file back (:func:`rolypoly.material.write_performed`):
    the player's own notes -- pitch, channel, length -- every other track and
    event, with only the drum notes' times and velocities new. Each row's
    notes move together to its offset (keeping their distance from each
    other); two notes of one class in a row (two crashes) keep the balance
    of their velocities. Notes of rows the score does not have (a take
    stopped early) are left out. A score made in code (no file) goes to
    channel 10 with the GM pitch of each class. Either way the tempo map and
    time signatures are the score's, so a DAW shows the same bars.

    Examples
    --------
    >>> write_midi(score, "out.mid", offsets=yhat)  # doctest: +SKIP
    """
    tmap = score.tempo_map
    offsets = np.zeros(len(score)) if offsets is None else np.asarray(offsets, dtype=np.float64)
    velocities = score.velocities if velocities is None else np.asarray(velocities)
    if offsets.shape != (len(score),):
        raise ValueError(f"offsets has shape {offsets.shape}, the score has {len(score)} rows")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets contain NaN or infinite values")

    ticks = score.tick + offsets * score.bar_ticks
    if score.material is not None:
        m = score.material
        row, keep = note_rows(score)
        if not len(score):  # a take stopped before its first hit: no drum note is kept, every row is 0
            ticks = np.zeros(1)
            velocities = np.zeros((1,) + score.velocities.shape[1:], score.velocities.dtype)
        cls = m.notes["cls"]
        write_performed(m, path, tick=ticks[row] + m.spread,
                        velocity=m.scaled_velocities(np.asarray(velocities)[row, cls]), keep=keep,
                        tempi=tmap.tempi)
        return
    r, c = np.nonzero(score.hits)
    notes = np.stack([ticks[r], c, np.asarray(velocities)[r, c]], axis=1) if len(r) else np.zeros((0, 3))
    write_drum_notes(path, notes, tmap, name=score.name)


def note_rows(score: Score) -> tuple[np.ndarray, np.ndarray]:
    """The row of each of the score's file notes, and whether the score still sounds it.

    A note is sounded when the score has its row (not cut by :meth:`Score.head`)
    and its class is hit there. Rows of notes not sounded are 0.
    """
    m = score.material
    keys = score.bar.astype(np.int64) * STEPS_PER_BAR + score.step
    order = np.argsort(keys, kind="stable")
    at = np.clip(np.searchsorted(keys[order], m.key), 0, max(len(keys) - 1, 0))
    row = order[at] if len(keys) else np.zeros(len(m.key), np.int64)
    found = (keys[row] == m.key) if len(keys) else np.zeros(len(m.key), bool)
    keep = found & score.hits[row, m.notes["cls"]] if len(keys) else found
    return np.where(keep, row, 0), keep


#: What a row sends: one entry per note (row, channel, pitch, velocity), by row.
PLAYED_DTYPE = np.dtype([("row", np.int64), ("channel", np.int16), ("pitch", np.int16), ("velocity", np.int16)])


def played_notes(score: Score) -> np.ndarray:
    """The notes each row plays live (:data:`PLAYED_DTYPE`), in row order.

    The player's own notes (pitch, channel) when the score has a file, with
    its velocities scaled as :func:`write_midi` does; otherwise the GM pitch
    of each class on channel 10. A row's notes sound at one moment, so one
    drum (channel and pitch) sounds once per row, the loudest.
    Velocities are rounded, 0..127 (0: nothing sounds).

    Examples
    --------
    >>> from rolypoly.paths import DEMO_SCORE
    >>> notes = played_notes(load_score(DEMO_SCORE))
    >>> [(int(n["pitch"]), int(n["velocity"])) for n in notes[:2]]
    [(36, 112), (42, 112)]
    """
    if score.material is None:
        r, c = np.nonzero(score.hits)
        rows, channels = r, np.full(len(r), DRUM_CHANNEL)
        pitches, vels = np.asarray(OUTPUT_PITCHES)[c], np.asarray(score.velocities)[r, c]
    else:
        m = score.material
        row, keep = note_rows(score)
        rows, channels, pitches = row[keep], m.notes["channel"][keep], m.notes["pitch"][keep]
        vels = m.scaled_velocities(np.asarray(score.velocities)[row, m.notes["cls"]])[keep]
    out = np.zeros(len(rows), PLAYED_DTYPE)
    out["row"], out["channel"], out["pitch"] = rows, channels, pitches
    out["velocity"] = np.clip(np.rint(np.asarray(vels, np.float64)), 0, 127)
    # By row, then drum, loudest first; then the first of each drum in a row.
    out = out[np.lexsort((-out["velocity"], out["pitch"], out["channel"], out["row"]))]
    first = np.r_[True, (np.diff(out["row"]) != 0) | (np.diff(out["channel"]) != 0) | (np.diff(out["pitch"]) != 0)]
    return out[first] if len(out) else out


def write_drum_notes(path, notes, tempo_map: TempoMap, *, name: str = "drums") -> None:
    """Write drum notes to a Standard MIDI File with a tempo map.

    Parameters
    ----------
    path : output file
    notes : array (n, 3)
        ``(tick, class, velocity)``; ticks may be fractional (rounded, at
        least 0), velocities are clipped to 1..127 and truncated to integers.
    tempo_map : TempoMap
        Written unchanged (tempo and time-signature events), so a DAW shows
        the same bars.
    name : str
        Name of the conductor track.

    Drums go to channel 10 with the GM pitch of each class
    (:data:`~rolypoly.drum_map.OUTPUT_PITCHES`).

    Examples
    --------
    >>> write_drum_notes("out.mid", [(0, 0, 100), (480, 1, 90)], TempoMap(480))  # doctest: +SKIP
    """
    tmap = tempo_map
    notes = np.asarray(notes, dtype=np.float64).reshape(-1, 3)
    ticks = np.maximum(np.rint(notes[:, 0]).astype(np.int64), 0)
    length = max(1, int(round(NOTE_LENGTH_BEATS * tmap.ticks_per_beat)))

    conductor = [(t, mido.MetaMessage("set_tempo", tempo=us, time=0)) for t, us in tmap.tempi]
    conductor += [(t, mido.MetaMessage("time_signature", numerator=n, denominator=d, time=0))
                  for t, n, d in tmap.meters]
    drums = []
    for tick, c, vel in zip(ticks, notes[:, 1].astype(int), notes[:, 2]):
        v = int(np.clip(vel, 1, 127))
        pitch = OUTPUT_PITCHES[c]
        # Sort key puts note-offs before note-ons at the same tick, so repeated hits retrigger.
        drums.append((tick, 1, mido.Message("note_on", channel=DRUM_CHANNEL, note=pitch, velocity=v)))
        drums.append((tick + length, 0, mido.Message("note_off", channel=DRUM_CHANNEL, note=pitch, velocity=0)))

    midi = mido.MidiFile(type=1, ticks_per_beat=tmap.ticks_per_beat)
    midi.tracks.append(_track(sorted(conductor, key=lambda e: e[0]), name=name))
    midi.tracks.append(_track([(t, m) for t, _, m in sorted(drums, key=lambda e: (e[0], e[1]))],
                              name="drums"))
    try:
        midi.save(os.fspath(path))
    except OSError as e:
        raise ScoreError(f"{path}: cannot write ({e.strerror or e})") from None


def _track(timed, name: str) -> mido.MidiTrack:
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, msg in timed:
        track.append(msg.copy(time=int(tick - now)))
        now = tick
    return track
