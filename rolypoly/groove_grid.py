"""Drum parts as hits, velocities and offsets on a grid (the GrooVAE representation).

A drum part becomes three arrays of one row per grid step and one column per
drum class (:mod:`rolypoly.drum_map`), as in GrooVAE (Gillick et al. 2019,
3.3):

* ``H`` hits, 0 or 1;
* ``V`` velocities, MIDI velocity / 127 (0..1);
* ``O`` offsets: how far the hit was played from its step, in steps
  (−0.5..0.5, positive = late, "behind the beat").

The grid is a setting (:data:`GRIDS`): ``"16th"`` is GrooVAE's, four steps
per quarter note; ``"triplet"`` has twelve, so that 16ths, 8th-note triplets
and 16th-note triplets all land exactly on a step (R-VAE, Vigliensoni et
al. 2020: footwork, trap and swing need both). A bar has beats × steps per
beat steps, so other meters work (3/4 on 16ths: 12 steps a bar); tempo and
meter changes are followed through the MIDI file's tempo map, in ticks.

Models read 2-bar *windows* with a hop of 1 bar (:func:`windows`); a piece
of any length is rebuilt from its windows with :func:`stitch`.

Examples
--------
>>> from rolypoly.paths import DEMO_SCORE
>>> groove = read_groove(DEMO_SCORE)
>>> H, V, O = windows(groove)          # 2-bar windows, a bar apart, 16th grid
>>> H.shape
(16, 32, 9)
>>> write_groove(groove.with_parts(*stitch(H, V, O, groove.bar_starts)), "same.mid")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from .drum_map import CLASS_NAMES, N_CLASSES, class_index
from .errors import ScoreError
from .limits import MAX_BARS, MAX_GROOVE_WINDOW_STEPS, check_count
from .material import Material, write_performed
from .score import TempoMap, check_length, read_material, write_drum_notes

#: Steps per quarter note of each grid. "triplet" (12) holds 16ths (3 steps),
#: 8th-note triplets (4) and 16th-note triplets (2) together. R-VAE uses 24 to
#: reach 32nd-note triplets too; those are faster than a groove's single
#: strokes, still land within a 24th of a beat of a step through the offsets,
#: and would double the window to 192 steps, which an LSTM learns far slower.
GRIDS = {"16th": 4, "triplet": 12}
#: Window length and hop in bars (GrooVAE 3.2: 2-bar patterns, 1-bar hop).
WINDOW_BARS = 2
HOP_BARS = 1
#: MIDI velocity of V = 1.
MAX_VELOCITY = 127
#: What the groove models do (:mod:`rolypoly.groove_model`); each hides part of H, V, O.
GROOVE_TASKS = ("humanize", "drumify", "infill", "transfer")
#: Instruments infill can replace: drummers' names for groups of classes, and each class by name.
INSTRUMENTS = {"hihat": (2, 3), "toms": (4, 5, 6), "cymbals": (7, 8),
               **{name: (k,) for k, name in enumerate(CLASS_NAMES)}}


def instrument_classes(instrument: str) -> tuple[int, ...]:
    """Drum classes of an instrument name ("hihat" is closed and open hi-hat).

    >>> instrument_classes("hihat")
    (2, 3)
    """
    key = str(instrument).strip().lower().replace("-", "_").replace(" ", "_")
    if key in INSTRUMENTS:
        return INSTRUMENTS[key]
    try:
        return (class_index(key),)
    except ValueError:
        raise ValueError(f"unknown instrument {instrument!r}; choose one of {', '.join(INSTRUMENTS)}") from None


def steps_per_beat(grid: str) -> int:
    """Steps per quarter note of a grid name.

    >>> steps_per_beat("triplet")
    12
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    return GRIDS[grid]


@dataclass
class Groove:
    """A whole drum part on a grid: ``H``, ``V``, ``O`` of shape (steps, 9).

    ``bar_starts`` (bars + 1) is the first step of each bar and, last, the
    number of steps; ``step_tick`` and ``step_ticks`` are the notated MIDI
    tick and the length in ticks of every step, which is all it takes to
    turn the arrays back into notes in the tempo map.
    """

    H: np.ndarray             # (steps, 9) float32: 1 where a class is hit
    V: np.ndarray             # (steps, 9) float32: velocity / 127
    O: np.ndarray             # (steps, 9) float32: offset from the step, in steps, + = late
    bar_starts: np.ndarray    # (bars + 1,) int64
    step_tick: np.ndarray     # (steps,) float64: notated tick of each step
    step_ticks: np.ndarray    # (steps,) float64: length of each step in ticks
    tempo_map: TempoMap
    grid: str = "16th"
    name: str = "groove"
    warnings: list[str] = field(default_factory=list)
    #: The player's file and its notes (None: a part made by rolypoly, written with GM pitches).
    material: Material | None = None

    def __len__(self) -> int:
        return len(self.H)

    @property
    def n_bars(self) -> int:
        return len(self.bar_starts) - 1

    @property
    def steps_per_beat(self) -> int:
        return steps_per_beat(self.grid)

    @property
    def steps_per_bar(self) -> np.ndarray:
        """Steps in each bar (16 for 4/4 on 16ths, 12 for 3/4)."""
        return np.diff(self.bar_starts)

    @property
    def bpm(self) -> np.ndarray:
        """Tempo at every step, quarter notes per minute."""
        return self.tempo_map.bpm_at(self.step_tick)

    def with_parts(self, H=None, V=None, O=None, *, name: str | None = None) -> "Groove":
        """The same bars and tempo map with other hits, velocities or offsets.

        >>> loud = groove.with_parts(V=np.minimum(groove.V * 1.2, 1))   # doctest: +SKIP
        """
        parts = {k: np.asarray(v, dtype=np.float32).reshape(self.H.shape)
                 for k, v in (("H", H), ("V", V), ("O", O)) if v is not None}
        return dataclasses.replace(self, **parts, name=name or self.name, warnings=list(self.warnings))


# ----------------------------------------------------------------------------- notes -> grid

def bar_layout(tempo_map: TempoMap, end_tick: float, grid: str = "16th"):
    """Bars up to ``end_tick``: start tick, length in ticks and steps of each bar.

    A bar has beats × steps-per-beat steps (4/4 on 16ths: 16, 6/8: 12); a
    bar a meter change cuts short keeps as many whole steps as fit, at least one.
    """
    spb = steps_per_beat(grid)
    starts, lengths, _ = tempo_map.bars(end_tick)
    steps = np.maximum(1, np.rint(lengths / tempo_map.ticks_per_beat * spb)).astype(np.int64)
    return starts, lengths, steps


def groove_from_notes(notes, tempo_map: TempoMap, *, grid: str = "16th", name: str = "groove",
                      n_bars: int | None = None, material: Material | None = None) -> Groove:
    """Place drum notes on the grid.

    Each note goes to the nearest step of its bar; a note played just before
    a downbeat (nearer to it than to the bar's last step) belongs to the next
    bar's first step. When several notes of one class land on one step the
    loudest is kept (GrooVAE 3.2), on a tie the one nearest the grid.

    Parameters
    ----------
    notes : array (n, 3)
        ``(tick, class, velocity)``, as from :func:`rolypoly.score.read_drum_notes`.
    tempo_map : TempoMap
    grid : "16th" or "triplet"
    name : str
    n_bars : int, optional
        Length of the piece in bars; by default up to the bar of the last note.
    material : rolypoly.material.Material, optional
        The same notes in the player's file (:func:`rolypoly.score.read_material`):
        the groove then writes that file back (:func:`write_groove`).

    Returns
    -------
    Groove
    """
    notes = np.asarray(notes, dtype=np.float64).reshape(-1, 3)
    ticks, classes, vels = notes[:, 0], notes[:, 1].astype(np.int64), notes[:, 2]
    whole = 4 * tempo_map.ticks_per_beat
    last_tick = ticks.max() if len(ticks) else 0.0
    # Taps at another tempo, or onsets of a recording, have not been through the score's check.
    check_length(name, tempo_map, last_tick)
    if n_bars is not None:
        check_count("bars", n_bars, MAX_BARS, name, error=ScoreError)
    starts, lengths, steps = bar_layout(tempo_map, last_tick + 2 * 16 * whole, grid)

    bar = np.clip(np.searchsorted(starts, ticks, side="right") - 1, 0, None)
    step = np.rint((ticks - starts[bar]) / lengths[bar] * steps[bar]).astype(np.int64)
    wrap = step >= steps[bar]
    bar[wrap] += 1
    step[wrap] = 0
    step_len = lengths[bar] / steps[bar]
    unclipped = (ticks - (starts[bar] + step * step_len)) / step_len
    offset = np.clip(unclipped, -0.5, 0.5)

    used = int(bar.max()) + 1 if len(bar) else 1
    n_bars = used if n_bars is None else int(n_bars)
    if n_bars < used:
        raise ValueError(f"n_bars={n_bars} but the notes reach bar {used}")
    if n_bars > len(starts):
        starts, lengths, steps = bar_layout(tempo_map, starts[-1] + (n_bars - len(starts) + 2) * 16 * whole, grid)
    starts, lengths, steps = starts[:n_bars], lengths[:n_bars], steps[:n_bars]
    bar_starts = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
    n_steps = int(bar_starts[-1])
    bar_of_step = np.repeat(np.arange(n_bars), steps)
    step_ticks = lengths[bar_of_step] / steps[bar_of_step]
    step_tick = starts[bar_of_step] + (np.arange(n_steps) - bar_starts[bar_of_step]) * step_ticks

    H = np.zeros((n_steps, N_CLASSES), np.float32)
    V = np.zeros_like(H)
    O = np.zeros_like(H)
    if len(notes):
        cell = (bar_starts[bar] + step) * N_CLASSES + classes
        # Sorted by cell, then velocity, then nearness to the grid: the last of each cell wins.
        order = np.lexsort((-np.abs(offset), vels, cell))
        last = np.r_[cell[order][1:] != cell[order][:-1], True]
        keep = order[last]
        s, c = np.divmod(cell[keep], N_CLASSES)
        H[s, c] = 1.0
        V[s, c] = np.clip(vels[keep] / MAX_VELOCITY, 0.0, 1.0)
        O[s, c] = offset[keep]
    if material is not None:
        # Each note's cell, its distance in steps from the note the cell keeps (a flam stays a
        # flam) and the cell's velocity (the loudest: other notes scale from it).
        s = bar_starts[bar] + step
        material = material.placed(s, unclipped - O[s, classes], np.rint(V[s, classes] * MAX_VELOCITY))
    return Groove(H, V, O, bar_starts, step_tick, step_ticks, tempo_map, grid, name, material=material)


def read_groove(path, *, grid: str = "16th", name: str | None = None) -> Groove:
    """Read a drum MIDI file onto the grid.

    Raises :class:`~rolypoly.errors.ScoreError` (one line naming the file)
    for a file that is not a usable drum part, as :func:`rolypoly.score.load_score`.

    >>> groove = read_groove("beat.mid", grid="triplet")   # doctest: +SKIP
    """
    path = os.fspath(path)
    notes, tmap, warnings, material = read_material(path)
    groove = groove_from_notes(notes, tmap, grid=grid, material=material,
                               name=name or os.path.splitext(os.path.basename(path))[0])
    groove.warnings = warnings
    return groove


# ----------------------------------------------------------------------------- grid -> notes

def groove_notes(groove: Groove) -> np.ndarray:
    """The groove's hits as ``(tick, class, velocity)`` notes, sorted by time.

    Ticks are fractional (notated tick + offset × step length); velocities
    are MIDI integers 1..127.
    """
    s, c = np.nonzero(groove.H > 0.5)
    ticks = groove.step_tick[s] + groove.O[s, c] * groove.step_ticks[s]
    vel = np.clip(np.rint(groove.V[s, c] * MAX_VELOCITY), 1, MAX_VELOCITY)
    notes = np.stack([ticks, c, vel], axis=1).astype(np.float64)
    return notes[np.argsort(ticks, kind="stable")]


def write_groove(groove: Groove, path) -> None:
    """Write a groove as MIDI with its tempo map and meters.

    A groove read from the player's file writes that file back
    (:func:`rolypoly.material.write_performed`): each of its notes keeps its
    pitch, channel and length and takes its cell's new offset and velocity;
    everything else in the file stays. A note whose cell no longer sounds is
    left out (infill replaces the instrument) and a hit where the file had
    none is added in the player's voice for that drum. A groove rolypoly
    made (drumify) is a General MIDI drum file.

    >>> write_groove(groove, "out.mid")   # doctest: +SKIP
    """
    if not (np.all(np.isfinite(groove.V)) and np.all(np.isfinite(groove.O))):
        raise ValueError("velocities or offsets contain NaN or infinite values")
    m = groove.material
    if m is None:
        write_drum_notes(path, groove_notes(groove), groove.tempo_map, name=groove.name)
        return
    s, c = m.key, m.notes["cls"].astype(np.int64)
    velocity = np.clip(np.rint(groove.V * MAX_VELOCITY), 1, MAX_VELOCITY)
    tick = groove.step_tick[s] + (groove.O[s, c] + m.spread) * groove.step_ticks[s]
    hit = groove.H > 0.5
    covered = np.zeros_like(hit)
    covered[s, c] = True
    new = groove_notes(groove.with_parts(H=hit & ~covered))
    write_performed(m, path, tick=tick, velocity=m.scaled_velocities(velocity[s, c]), keep=hit[s, c],
                    added=new, tempi=groove.tempo_map.tempi)


# ----------------------------------------------------------------------------- windows

def window_bounds(bar_starts, *, bars: int = WINDOW_BARS, hop: int = HOP_BARS) -> np.ndarray:
    """Step ranges ``(start, stop)`` of the windows over a piece, shape (N, 2).

    Window k covers bars ``k·hop .. k·hop + bars``; the last window ends with
    the last bar. A piece shorter than one window gives one short window.
    """
    bar_starts = np.asarray(bar_starts)
    n_bars = len(bar_starts) - 1
    first = list(range(0, max(n_bars - bars, 0) + 1, hop))
    if first[-1] + bars < n_bars:
        first.append(n_bars - bars)  # a hop that does not divide the piece: one more to cover the end
    return np.array([(bar_starts[b], bar_starts[min(b + bars, n_bars)]) for b in first], dtype=np.int64)


def windows(groove: Groove, *, bars: int = WINDOW_BARS, hop: int = HOP_BARS):
    """Slice a groove into windows of ``bars`` bars, ``hop`` bars apart.

    Returns
    -------
    H, V, O : np.ndarray (N, T, 9) float32
        T is the longest window (2 bars of 4/4 on 16ths: 32). Shorter
        windows (a piece of one bar, or meter changes) are padded with silence.

    Examples
    --------
    >>> H, V, O = windows(groove)   # doctest: +SKIP
    """
    bounds = window_bounds(groove.bar_starts, bars=bars, hop=hop)
    T = int(max(b - a for a, b in bounds))
    if groove.n_bars < bars:  # pad a short piece to a whole window of its own bar length
        T = int(groove.steps_per_bar[-1]) * bars
    # Every window is as long as the longest: one very long bar among many short ones would
    # make the padding, not the music, fill the memory.
    check_count(f"grid steps in its {len(bounds)} windows of {T} steps", len(bounds) * T,
                MAX_GROOVE_WINDOW_STEPS, groove.name, error=ScoreError)
    out = [np.zeros((len(bounds), T, N_CLASSES), np.float32) for _ in range(3)]
    for k, (a, b) in enumerate(bounds):
        for dst, src in zip(out, (groove.H, groove.V, groove.O)):
            dst[k, :b - a] = src[a:b]
    return tuple(out)


def stitch(H, V, O, bar_starts, *, bars: int = WINDOW_BARS, hop: int = HOP_BARS):
    """Rebuild a whole piece from its windows (the inverse of :func:`windows`).

    The first window gives its bars; every later window gives only the bars
    no window before it covered (with a 1-bar hop: its second bar). A
    window's later bars are the ones its model decoded with a bar of context
    before them, and, when windows are generated one after another with the
    first bar given (:mod:`rolypoly.groove`), the bars it shares with the
    previous window are that window's own output anyway.

    Parameters
    ----------
    H, V, O : arrays (N, T, 9)
        The windows, in order, as from :func:`windows`.
    bar_starts : array (bars + 1,)
        The piece's ``Groove.bar_starts``.

    Returns
    -------
    H, V, O : np.ndarray (steps, 9) float32
    """
    bounds = window_bounds(bar_starts, bars=bars, hop=hop)
    if len(H) != len(bounds):
        raise ValueError(f"{len(H)} windows given, the piece has {len(bounds)}")
    n_steps = int(np.asarray(bar_starts)[-1])
    out = [np.zeros((n_steps, N_CLASSES), np.float32) for _ in range(3)]
    done = 0
    for k, (a, b) in enumerate(bounds):
        for dst, src in zip(out, (H, V, O)):
            dst[done:b] = np.asarray(src[k])[done - a:b - a]
        done = max(done, int(b))
    return tuple(out)
