"""Bars written during the take: while bar k plays, a worker writes bar k+1.

:class:`BarFeed` is what the engine (:mod:`rolypoly.realtime.engine`) plays
from when generation is on (``rolypoly play ... --generate follow|fills|free``).
It holds the take's rows as planned (:class:`PlannedRows`, preallocated for
the longest take: a row per step of every bar) and a worker thread with a
:class:`~rolypoly.generate.BarWriter`:

1. when bar k starts (after its first hit), the engine hands the feed the
   partner onsets it heard in bar k-1 (:meth:`BarFeed.request`: a copy into
   a preallocated job, then an event); the worker turns them into the
   partner's grid (onsets, accents from their strength), reads the drums'
   last two bars and the controls, and writes bar k+1 into one of two
   preallocated slots (bar parity picks the slot), publishing it by index;
2. one beat before bar k+1 starts (or before the last hit of bar k is
   decided, if that comes first), the engine commits bar k+1
   (:meth:`BarFeed.commit`): the worker's bar if it is there, else bar k's
   pattern again, and the miss is counted (``late``). Nothing waits on the
   worker beyond that moment: a late model never stalls the beat.

What a bar is made of depends on the mode: ``follow`` and ``free`` play the
continuation model's bar (``follow`` leans on the partner, ``free`` on the
drums' own groove, drawn with some temperature); ``fills`` plays the
session's score as written. In every mode a fill (every ``fill_every`` bars,
or asked for with :meth:`BarFeed.fill`: a pedal press, OSC) replaces the
next bar not yet written with the fill model's bar, leading into the
downbeat after it. A partner silent for :data:`SILENT_BARS` bars gets the
session's score as written until it plays again. The models write 4/4 bars:
a bar in another meter plays the score as written.

Controls (:class:`~rolypoly.generate.Controls`) change while playing
(:meth:`BarFeed.set`, checked; the worker reads one immutable object per
bar, swapped by reference).

Examples
--------
>>> feed = BarFeed(score, BarWriter.load(), mode="follow")        # doctest: +SKIP
>>> engine = Engine(score, performer, source, SimClock(), bars=feed)  # doctest: +SKIP
>>> feed.set(follow=0.9); feed.fill()                              # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from rolypoly.drum_map import DRUM_CHANNEL, N_CLASSES, OUTPUT_PITCHES
from rolypoly.errors import RolypolyError
from rolypoly.features import DURATION, HITS, MAX_DURATION_MS, N_FEATURES, PHASE, TEMPO, TIMESIG
from rolypoly.generate import BarState, Controls, partner_grid
from rolypoly.generate_model import BEATS_PER_BAR, STEPS_PER_BAR as GEN_STEPS
from rolypoly.grid import STEPS_PER_BAR as SCORE_STEPS
from rolypoly.groove_grid import MAX_VELOCITY
from rolypoly.limits import MAX_ROWS, MAX_SCORE_SECONDS
from rolypoly.score import Score, played_notes

MODES = ("follow", "fills", "free")
#: Bars without a partner onset after which the session's score plays as written.
SILENT_BARS = 2
#: Partner onsets a bar's job keeps (a bar rarely holds more than 32).
BAR_ONSETS = 128
#: Controls each mode starts from (the command line and OSC change them).
MODE_CONTROLS = {"follow": dict(follow=0.9), "fills": dict(), "free": dict(follow=0.3, temperature=0.5)}


def mode_controls(mode: str | None, controls: dict | None = None) -> Controls:
    """The controls a mode starts from with the player's on top, checked (RolypolyError, one line).

    >>> mode_controls("free", {"seed": 3}).follow, mode_controls("free", {"seed": 3}).seed
    (0.3, 3)
    """
    return Controls(**{**MODE_CONTROLS.get(mode or "follow", {}), **(controls or {})})


#: Bar sources, as counted in the take's summary.
KINDS = ("generated", "fill", "score", "late", "silent")
#: What was asked for each bar when the bar before it started.
ASK_SCORE, ASK_BAR, ASK_FILL, ASK_BUSY, ASK_SILENT = range(5)


class PlannedRows:
    """The take's rows as planned, score columns first, filled bar by bar (never grown).

    Has the :class:`~rolypoly.score.Score` arrays the engine reads
    (``onset_s``, ``duration_ms``, ``bar_ms``, ``hits`` ...) at their full
    capacity; ``n`` of them are committed. :meth:`score` is the rows played
    as a Score (for the take's MIDI, mix and plot).
    """

    def __init__(self, score: Score, n_bars: int):
        tmap = score.tempo_map
        end = float(score.tick[-1] + score.bar_ticks[-1]) if len(score) else 0.0
        starts, lens, ts = tmap.bars(max(end, 0.0) + 8 * tmap.ticks_per_beat * (n_bars + 2))
        if len(starts) < n_bars + 1:
            raise RolypolyError(f"{score.name}: fewer bars than the take's {n_bars}")
        self.tempo_map, self.name = tmap, score.name
        self.bar_tick, self.bar_len_tick = starts[:n_bars + 1].astype(np.float64), lens[:n_bars + 1].astype(np.float64)
        self.bar_start_s = tmap.seconds(self.bar_tick)
        self.bar_len_s = tmap.seconds(self.bar_tick + self.bar_len_tick) - self.bar_start_s
        self.bar_ts = np.asarray(ts[:n_bars + 1], np.float64)
        self.bpm = tmap.bpm_at(self.bar_tick)
        # The models write 4/4 bars: a bar in another meter plays the score as written.
        self.four_four = np.abs(self.bar_ts - 1.0) < 1e-9
        self.n_bars = int(n_bars)
        cap = self.capacity = n_bars * GEN_STEPS
        self.hits = np.zeros((cap, N_CLASSES), bool)
        self.velocities = np.zeros((cap, N_CLASSES), np.int16)
        self.bar = np.zeros(cap, np.int64)
        self.step = np.zeros(cap, np.int64)          # on the score's grid (rolypoly.grid), rounded
        self.position = np.zeros(cap, np.float64)    # exact place in the bar, [0, 1)
        for name in ("onset_s", "duration_ms", "tempo_bpm", "timesig", "bar_ms", "tick", "bar_ticks",
                     "played_offset"):
            setattr(self, name, np.zeros(cap, np.float64))
        self.X = np.zeros((cap, N_FEATURES), np.float32)
        self.kind = np.zeros(cap, np.int8)           # index into KINDS
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def append(self, bar: int, position, hits, velocities, offsets, kind: int) -> tuple[int, int]:
        """Commit bar ``bar``'s rows (positions in [0, 1), offsets in bars); returns their row range.

        A bar with no hit gets one silent row on its downbeat: the agent
        still decides there and the engine still hears the partner.
        """
        m = len(position)
        if m == 0:
            position, hits = np.zeros(1), np.zeros((1, N_CLASSES), bool)
            velocities, offsets, m = np.zeros((1, N_CLASSES)), np.zeros(1), 1
        a, b = self.n, self.n + m
        L, Lt = self.bar_len_s[bar], self.bar_len_tick[bar]
        pos = np.asarray(position, np.float64)
        off = np.asarray(offsets, np.float64)
        self.hits[a:b] = hits
        self.velocities[a:b] = np.where(hits, velocities, 0)
        self.bar[a:b], self.position[a:b] = bar, pos
        self.step[a:b] = np.minimum(np.floor(pos * SCORE_STEPS + 0.5), SCORE_STEPS - 1)
        self.onset_s[a:b] = self.bar_start_s[bar] + (pos + off) * L
        self.tick[a:b] = self.bar_tick[bar] + (pos + off) * Lt
        self.bar_ticks[a:b], self.bar_ms[a:b] = Lt, L * 1000.0
        self.tempo_bpm[a:b], self.timesig[a:b] = self.bpm[bar], self.bar_ts[bar]
        self.played_offset[a:b] = off
        self.kind[a:b] = kind
        # The last row of a bar lasts to the end of its bar until the next bar is known.
        end = self.bar_start_s[bar] + L
        self.duration_ms[a:b] = np.diff(np.append(self.onset_s[a:b], end)) * 1000.0
        if a > 0:
            self.duration_ms[a - 1] = (self.onset_s[a] - self.onset_s[a - 1]) * 1000.0
        self.n = b
        lo = max(a - 1, 0)
        X = self.X
        X[lo:b, HITS] = self.hits[lo:b]
        X[lo:b, DURATION] = np.clip(self.duration_ms[lo:b], 0.0, MAX_DURATION_MS)
        X[lo:b, TEMPO], X[lo:b, TIMESIG] = self.tempo_bpm[lo:b], self.timesig[lo:b]
        X[lo:b, PHASE] = self.position[lo:b]
        return a, b

    def score(self) -> Score:
        """The committed rows as a Score (General MIDI pitches: generated rows have no file)."""
        n = self.n
        return Score(hits=self.hits[:n].copy(), velocities=self.velocities[:n].copy(), bar=self.bar[:n].copy(),
                     step=self.step[:n].copy(), onset_s=self.onset_s[:n].copy(),
                     duration_ms=self.duration_ms[:n].copy(), tempo_bpm=self.tempo_bpm[:n].copy(),
                     timesig=self.timesig[:n].copy(), bar_ms=self.bar_ms[:n].copy(), tick=self.tick[:n].copy(),
                     bar_ticks=self.bar_ticks[:n].copy(), played_offset=self.played_offset[:n].copy(),
                     tempo_map=self.tempo_map, name=self.name)


def _bar_grid(position, hits, velocities, offsets):
    """Rows of one bar as the writer's context: H, V, O (48, 9), V in 0..1, O in generation steps."""
    H = np.zeros((GEN_STEPS, N_CLASSES), np.float32)
    V, O = np.zeros_like(H), np.zeros_like(H)
    s = np.clip(np.rint(np.asarray(position) * GEN_STEPS).astype(np.int64), 0, GEN_STEPS - 1)
    H[s] = np.maximum(H[s], hits)
    V[s] = np.where(hits, np.asarray(velocities, np.float32) / MAX_VELOCITY, V[s])
    O[s] = np.where(hits, np.asarray(offsets, np.float32)[:, None] * GEN_STEPS, O[s])
    return H, V, O


class BarFeed:
    """Bars for the engine, written during the take (see module docstring).

    Parameters
    ----------
    score : rolypoly.score.Score
        The session's score: its bars play where nothing is generated, its
        tempo map places every bar, its first bars start the drums' context.
    writer : rolypoly.generate.BarWriter or None
        None: generation is off (a model that did not load); the score plays.
    mode : 'follow', 'fills' or 'free'
    controls : dict of :class:`~rolypoly.generate.Controls` fields over the mode's
    fill_every : a fill every N bars (the N-th bar of each N); 0: only when asked
    bars : the take's length in bars (default: the score's); the score repeats to fill it
    """

    def __init__(self, score: Score, writer=None, *, mode: str = "follow", controls: dict | None = None,
                 fill_every: int = 0, bars: int | None = None):
        if mode not in MODES:
            raise RolypolyError(f"generate mode must be {', '.join(MODES)}, not {mode!r}")
        if isinstance(fill_every, bool) or not isinstance(fill_every, (int, np.integer)) or not 0 <= fill_every <= 1000:
            raise RolypolyError(f"fill every must be a whole number of bars in 0-1000, not {fill_every!r}")
        self.score, self.writer, self.mode, self.fill_every = score, writer, mode, int(fill_every)
        self.controls = mode_controls(mode, controls)
        self.score_bars = score.n_bars
        n_bars = self.score_bars if bars is None else bars
        # Room for a row on every step of every bar: within the take limits (rolypoly.limits).
        most = MAX_ROWS // GEN_STEPS
        if isinstance(n_bars, bool) or not isinstance(n_bars, (int, np.integer)) or not 1 <= n_bars <= most:
            raise RolypolyError(f"a generated take is 1-{most} bars, not {n_bars!r}")
        n_bars = int(n_bars)
        self.plan = PlannedRows(score, n_bars)
        if self.plan.bar_start_s[n_bars] > MAX_SCORE_SECONDS:
            raise RolypolyError(f"{n_bars} bars last {self.plan.bar_start_s[n_bars] / 60:.0f} minutes; "
                                f"a take lasts at most {MAX_SCORE_SECONDS / 60:.0f}")
        self.n_bars = n_bars
        # The score's bars as rows, and their notes (the player's own pitches), made once.
        self._score_rows = [np.flatnonzero(score.bar == b) for b in range(self.score_bars)]
        notes = played_notes(score)
        self._score_notes = notes
        self._note_bounds = np.searchsorted(notes["row"], np.arange(len(score) + 1))
        self.row_source = np.full(self.plan.capacity, -1, np.int64)  # score row a planned row plays (-1: written)
        # Context: the drums' last bars and the partner's bar (one BarState, read by the worker).
        self._ctx = BarState()
        self._job = BarState()
        self._job_onsets = np.zeros(BAR_ONSETS)
        self._job_accents = np.zeros(BAR_ONSETS)
        self._job_n = 0
        self._job_bar, self._job_fill = -1, False
        self._slots = [None, None]           # rows (rolypoly.generate.ROW_DTYPE) of the bar written
        self._slot_bar = [-1, -1]            # which bar each slot holds (published last)
        self._busy = False
        self._request, self._ready = threading.Event(), threading.Event()
        self._stop = False
        self._asked = np.zeros(n_bars + 1, np.int8)   # ASK_* per bar
        self._asked_at = np.zeros(n_bars + 1)          # engine time of each bar's request
        self._asked_real = np.zeros(n_bars + 1)        # and the machine's (perf_counter)
        self._now = 0.0
        self._fill_at = -1                   # the bar a fill was asked for
        self._fill_bars: set = set()         # bars committed as fills
        self._silent = 0                     # bars in a row without a partner onset
        self.playing_bar = 0
        self.committed_bars = 0
        self.counts = dict.fromkeys(KINDS, 0)
        self.errors: list[str] = []
        self._thread = None
        if writer is not None:
            self._thread = threading.Thread(target=self._work, name="bar-writer", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ controls
    def set(self, **changes) -> Controls:
        """Change controls while playing (checked: RolypolyError, one line; nothing changes then)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(Controls)}
        if unknown:
            raise RolypolyError(f"unknown control {sorted(unknown)[0]!r}")
        self.controls = dataclasses.replace(self.controls, **changes)
        return self.controls

    def fill(self) -> int:
        """A fill in the next bar not yet committed, into the downbeat after it; returns that bar (from 0).

        RolypolyError when a fill is already playing or coming, or there is no fill model.
        """
        if self.writer is None or self.writer.fill is None:
            raise RolypolyError("no fill: generation is off")
        playing, target = self.playing_bar, self.committed_bars
        if playing in self._fill_bars:
            raise RolypolyError(f"a fill is already playing (bar {playing + 1})")
        coming = [b for b in (self._fill_at, target, target - 1) if b > playing and
                  (b in self._fill_bars or (b == self._fill_at) or (b >= target and self._is_fill(b)))]
        if coming:
            raise RolypolyError(f"a fill is already coming (bar {coming[0] + 1})")
        if target >= self.n_bars:
            raise RolypolyError("no fill: the take ends with this bar")
        self._fill_at = target
        return target

    def _is_fill(self, bar: int) -> bool:
        every = self.fill_every and (bar + 1) % self.fill_every == 0
        return (bool(every or bar == self._fill_at) and self.writer is not None and self.writer.fill is not None
                and bool(self.plan.four_four[bar]))

    # ------------------------------------------------------------------ the engine's side
    def start(self) -> None:
        """Commit the first bar (the score's, as written): the drums' context starts from it."""
        self._commit_score_bar(0, KINDS.index("score"))

    def deadline(self, bar: int) -> float:
        """Score time (s) by which bar ``bar`` must be written: one beat before it starts."""
        p = self.plan
        return p.bar_start_s[bar] - p.bar_len_s[bar] / BEATS_PER_BAR

    def request(self, bar: int, onsets: np.ndarray, strengths: np.ndarray, now: float = 0.0) -> None:
        """Bar ``bar`` started: write bar ``bar + 1`` from the partner onsets of bar ``bar - 1``.

        ``onsets`` are score times (s) of the partner onsets heard lately (any
        order, at most :data:`BAR_ONSETS` used), ``strengths`` their loudness;
        called on the engine's thread between hits: a copy and an event, no model work.
        ``now``: the engine's time (for :meth:`wait_ready` on a simulated clock).
        """
        self._now = now
        nxt = bar + 1
        if nxt >= self.n_bars:
            return
        p = self.plan
        n = 0
        if bar >= 1:
            prev = bar - 1
            half = 0.5 / GEN_STEPS * p.bar_len_s[prev]
            inside = np.flatnonzero((onsets >= p.bar_start_s[prev] - half) & (onsets < p.bar_start_s[bar] - half))
            n = min(len(inside), BAR_ONSETS)
            self._job_onsets[:n] = (onsets[inside[:n]] - p.bar_start_s[prev]) / p.bar_len_s[prev]
            self._job_accents[:n] = strengths[inside[:n]]
            self._silent = 0 if n else self._silent + 1
        self.playing_bar = bar
        fill = self._is_fill(nxt)
        if self.writer is None or (self.mode == "fills" and not fill) or not p.four_four[nxt]:
            self._asked[nxt] = ASK_SCORE
        elif self._silent >= SILENT_BARS and not fill:
            self._asked[nxt] = ASK_SILENT   # a silent partner: the session's score as written
        elif self._busy:
            self._asked[nxt] = ASK_BUSY     # the last job still runs: this bar repeats (counted late)
        else:
            self._job_n = n
            self._submit(nxt, fill)

    def after_hit(self) -> None:
        """A fill asked for after its bar's job started: write that bar again, as a fill, if there is time."""
        f = self._fill_at
        if (f == self.playing_bar + 1 and f >= self.committed_bars and self._asked[f] != ASK_FILL
                and not self._busy and self.writer is not None and self.plan.four_four[f]):
            self._submit(f, True)

    def _submit(self, bar: int, fill: bool) -> None:
        self._asked[bar] = ASK_FILL if fill else ASK_BAR
        self._asked_at[bar] = self._now
        self._asked_real[bar] = time.perf_counter()
        np.copyto(self._job.drums, self._ctx.drums)
        self._job.bar = bar
        self._slot_bar[bar % 2] = -1
        self._job_bar, self._job_fill = bar, fill
        self._busy = True
        self._ready.clear()
        self._request.set()

    def ready(self) -> threading.Event:
        """Set when the worker has published a bar."""
        return self._ready

    def wait_ready(self, bar: int, due: float) -> None:
        """On a simulated clock: give the writer of ``bar`` the real time its bar gives it.

        Virtual time jumps; the writer works in real time. It had from its
        request (engine time) to ``due``: what of that it has not used in
        real time yet, it may still use now. (On a real clock the engine
        just plays on until ``due``.)
        """
        if self._asked[bar] in (ASK_BAR, ASK_FILL) and self._slot_bar[bar % 2] != bar:
            left = (due - self._asked_at[bar]) - (time.perf_counter() - self._asked_real[bar])
            self._ready.wait(max(0.0, left))

    def commit(self, bar: int) -> tuple[int, int]:
        """Commit bar ``bar`` (the worker's if published, else the fallback); returns its row range."""
        asked = int(self._asked[bar])
        if bar == self._fill_at and asked != ASK_FILL:  # asked too late for this bar: the next one
            self._fill_at = bar + 1
        if asked in (ASK_BAR, ASK_FILL) and self._slot_bar[bar % 2] == bar:
            rows = self._slots[bar % 2]
            if asked == ASK_FILL:
                self._fill_bars.add(bar)
            hits = rows["hits"]
            off = (rows["offsets"] * hits).sum(axis=1) / np.maximum(hits.sum(axis=1), 1)
            return self._commit_rows(bar, rows["position"], hits, rows["velocities"], off,
                                     KINDS.index("fill" if asked == ASK_FILL else "generated"))
        if asked in (ASK_BAR, ASK_FILL, ASK_BUSY):  # asked for and not there: the last bar again
            self.counts["late"] += 1
            return self._repeat(bar)
        return self._commit_score_bar(bar, KINDS.index("silent" if asked == ASK_SILENT else "score"))

    def _repeat(self, bar: int) -> tuple[int, int]:
        p = self.plan
        prev = np.flatnonzero(p.bar[:p.n] == bar - 1)
        src = self.row_source[prev]
        a, b = self._commit_rows(bar, p.position[prev], p.hits[prev], p.velocities[prev],
                                 p.played_offset[prev], KINDS.index("late"), count=False)
        self.row_source[a:b] = src
        return a, b

    def _commit_score_bar(self, bar: int, kind: int) -> tuple[int, int]:
        s = self.score
        rows = self._score_rows[bar % self.score_bars] if self.score_bars else np.zeros(0, int)
        # On the grid, as the engine plays a score (its file's own timing is the agent's to decide).
        a, b = self._commit_rows(bar, s.step[rows] / SCORE_STEPS, s.hits[rows], s.velocities[rows],
                                 np.zeros(len(rows)), kind)
        if len(rows) == b - a:
            self.row_source[a:b] = rows
        return a, b

    def _commit_rows(self, bar, position, hits, velocities, offsets, kind, count=True) -> tuple[int, int]:
        a, b = self.plan.append(bar, position, hits, velocities, offsets, kind)
        self.row_source[a:b] = -1
        self._ctx.push(*_bar_grid(position, hits, velocities, offsets))
        self.committed_bars = bar + 1
        if count:
            self.counts[KINDS[kind]] += 1
        return a, b

    def row_notes(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Channels, pitches and velocities row ``t`` plays: the player's notes for a score row, else GM."""
        src = int(self.row_source[t])
        if src >= 0:
            a, b = self._note_bounds[src], self._note_bounds[src + 1]
            n = self._score_notes[a:b]
            return n["channel"], n["pitch"], n["velocity"]
        c = np.flatnonzero(self.plan.hits[t])
        return np.full(len(c), DRUM_CHANNEL), np.asarray(OUTPUT_PITCHES)[c], self.plan.velocities[t, c]

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            if self._stop:
                return
            bar, fill = self._job_bar, self._job_fill
            try:
                n = self._job_n
                acc = self._job_accents[:n]
                acc = acc / acc.max() if n and acc.max() > 0 else np.ones(n)
                self._job.partner[:] = partner_grid(self._job_onsets[:n], acc)
                controls = self.controls
                write = self.writer.fill_bar if fill else self.writer.next_bar
                self._slots[bar % 2] = write(self._job, controls)
                self._slot_bar[bar % 2] = bar    # published: the engine may take it from now
            except Exception as e:  # a broken model must not stop the beat: the bar repeats
                if len(self.errors) < 8:
                    self.errors.append(f"bar {bar + 1}: {type(e).__name__}: {e}")
            finally:
                self._busy = False
                self._ready.set()

    def close(self) -> None:
        self._stop = True
        self._request.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def summary(self) -> dict:
        """What the bars of the take were: counts by source, the controls at the end, problems."""
        return {"mode": self.mode, "bars": self.committed_bars, **{f"bars_{k}": v for k, v in self.counts.items()},
                "fill_every": self.fill_every, "controls": dataclasses.asdict(self.controls),
                "errors": list(self.errors)}


class PedalControls:
    """A MIDI controller's presses and knobs, to the take's bar feed (on rtmidi's thread).

    ``attach(engine)`` (a take's ``on_engine`` hook) points it at the take's
    feed. A press asks for a fill (:meth:`BarFeed.fill`), a knob sets a
    control (0..1; ``pocket`` spans −1..1). What is refused (a fill during a
    fill, no take) is kept, at most :data:`KEPT` lines, for after the take.

    >>> pedal = PedalControls()
    >>> pedal.press("fill"); pedal.problems
    ['fill: no take with generation is playing']
    """

    KEPT = 16

    def __init__(self):
        self.feed = None
        self.problems: list[str] = []
        self.fills = 0

    def attach(self, engine) -> None:
        self.feed = getattr(engine, "bars", None)

    def _refused(self, what: str, why: str) -> None:
        if len(self.problems) < self.KEPT:
            self.problems.append(f"{what}: {why}")

    def press(self, command: str) -> None:
        feed = self.feed
        if feed is None:
            return self._refused(command, "no take with generation is playing")
        try:
            feed.fill()
            self.fills += 1
        except RolypolyError as e:
            self._refused(command, str(e))

    def knob(self, name: str, value: float) -> None:
        feed = self.feed
        if feed is None:
            return
        try:
            feed.set(**{name: 2.0 * value - 1.0 if name == "pocket" else float(value)})
        except RolypolyError as e:
            self._refused(name, str(e))
