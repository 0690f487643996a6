"""The duet engine: one take of a score with a partner, hit by hit.

For each score row t the engine

1. waits until the *decision time*: ``budget`` (10 ms) before the earliest
   moment hit t may sound (ŷ is kept within a third of the gap to the
   neighbouring rows, so that moment is known in advance);
2. takes the newest partner onsets and works out diff_{t-1}: the offset
   between hit t-1 as actually played and the closest partner onset within
   ``hit ± duration / window_factor`` (carried over when there is none),
   as a fraction of a bar, positive when the partner is late;
3. steps the agent on the feature row (score columns + descriptor and
   diff_{t-1}) on a worker thread. If ŷ_t is not there by the earliest
   moment hit t may sound, the previous ŷ is used and the miss counted:
   a late model never stalls the beat;
4. plays the hit at notated time + ŷ_t: outputs that place sound ahead of
   time (the sampled kit, JACK MIDI: ``drums``) get it as soon as ŷ_t is
   known and start it on its own sample; MIDI through rtmidi and OSC leave
   when the time comes.

All times are absolute on one clock, zero at the score's start plus a
lead-in, so no error accumulates from hit to hit. The same code serves a
live input, a recording played in real time and a simulated clock: only
the clock and the source differ (:mod:`rolypoly.realtime.clock`,
:mod:`rolypoly.realtime.sources`).

Examples
--------
>>> engine = Engine(score, Performer(agent), FileSource("bass.wav"), SimClock())  # doctest: +SKIP
>>> result = engine.run()                                                          # doctest: +SKIP
>>> result.misses, result.played[:3]                                               # doctest: +SKIP
"""
from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from rolypoly.features import fill_partner, score_features
from rolypoly.drum_map import class_of_pitch
from rolypoly.score import played_notes
from rolypoly.take import MAX_HEARD, empty_rows

#: The engine checks the partner and releases MIDI notes at least this often while waiting.
POLL_S = 0.002
#: Onsets remembered for the diff windows: far more than a bar holds.
ONSET_MEMORY = 512


@dataclass
class EngineSettings:
    """Knobs of a take; all in musicians' units."""

    budget_ms: float = 10.0      # decide this long before the earliest moment a hit may sound
    window_factor: float = 3.0   # partner onset window: hit ± duration / factor (paper: 3; swing morph: 2.5)
    clamp_factor: float = 3.0    # ŷ stays within gap / factor of the neighbouring rows
    lead_in_s: float = 0.5       # from start to the score's time zero
    # Where score time zero falls in the partner recording (s). None: a recording is aligned to the
    # score by itself before the take (rolypoly.align, in play_take); a live partner has none (0).
    partner_offset_s: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TakeResult:
    """What a take did, row by row (times in seconds from score time zero)."""

    notated: np.ndarray
    intended: np.ndarray
    played: np.ndarray
    yhat: np.ndarray
    diff: np.ndarray             # diff_t observed after hit t (NaN: no partner onset in the window)
    onsets: np.ndarray           # every partner onset heard: time (s from score zero)
    onsets_available: np.ndarray
    misses: int = 0
    xruns: int = 0
    stopped_early: bool = False
    t0: float = 0.0              # engine-clock time of the score's time zero
    problems: list[str] = field(default_factory=list)


def row_midi(score, notes) -> list[tuple]:
    """The MIDI messages of every row, made before the take: the player's own notes.

    ``notes`` are the score's :func:`rolypoly.score.played_notes`. The per-hit path then only
    sends them (:meth:`rolypoly.realtime.midi_out.MidiOut.play`).
    """
    from .midi_out import row_messages

    bounds = np.searchsorted(notes["row"], np.arange(len(score) + 1))
    return [row_messages(*(notes[f][a:b] for f in ("channel", "pitch", "velocity")))
            for a, b in zip(bounds[:-1], bounds[1:])]


def row_hits(score, notes) -> tuple[list, list, list]:
    """Per row, the classes, velocities and notes (``channel * 128 + pitch``) it plays, made before the take.

    ``notes`` are the score's :func:`rolypoly.score.played_notes`, each given the drum class it
    belongs to, for outputs that place hits ahead of time (the sampled kit sounds by class,
    JACK MIDI sends the note).
    """
    classes = [class_of_pitch(int(p)) for p in notes["pitch"]]
    keep = [c is not None for c in classes]  # every drum note of a score has a class; kept safe
    notes = notes[np.asarray(keep, bool)]
    classes = [c for c in classes if c is not None]
    bounds = np.searchsorted(notes["row"], np.arange(len(score) + 1))
    codes = notes["channel"].astype(int) * 128 + notes["pitch"].astype(int)
    return ([classes[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            [notes["velocity"][a:b].astype(int).tolist() for a, b in zip(bounds[:-1], bounds[1:])],
            [codes[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])])


class Decider:
    """Agent steps on a worker thread, so the engine can give up on a late one."""

    def __init__(self, performer):
        self.performer = performer
        self._row = np.zeros(performer.mean.shape, np.float32)
        self._request, self._done = threading.Event(), threading.Event()
        self._done.set()
        self._value = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="agent", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            if self._stop:
                return
            try:
                self._value = self.performer.step(self._row)
            except Exception:  # a broken model must not kill the beat: it just misses
                self._value = math.nan
            self._done.set()

    def submit(self, row: np.ndarray) -> bool:
        """Start a step; False when the previous step is still running (it is not interrupted)."""
        if not self._done.is_set():
            return False
        np.copyto(self._row, row)
        self._done.clear()
        self._request.set()
        return True

    def result(self, clock, deadline: float) -> float | None:
        """ŷ if the step finished by ``deadline`` (engine time), else None."""
        return self._value if clock.wait(self._done, deadline) else None

    def close(self) -> None:
        self._stop = True
        self._request.set()
        self._thread.join(timeout=1.0)


class Engine:
    """One take: a score, an agent, a partner source and a clock (see module docstring).

    Parameters
    ----------
    score : rolypoly.score.Score
    performer : rolypoly.agents.Performer
    source : rolypoly.realtime.sources.PartnerSource
    clock : RealClock or SimClock
    midi, osc : optional outputs (rolypoly.realtime.midi_out.MidiOut, rolypoly.realtime.osc_out.OscOut)
    take : optional rolypoly.take.TakeWriter receiving every row (:data:`rolypoly.take.ROW_DTYPE`)
    settings : EngineSettings
    on_hit : optional callable(row, actual_time) for monitors (drum synth, tests)
    drums : optional output that places hits ahead of time, to the sample
        (rolypoly.realtime.jack_io.JackIO, rolypoly.realtime.sources.LiveSource
        with drums): ``begin(clock, t0, score)``, ``schedule(classes,
        velocities, at)``, ``end()``, ``problems()``. A hit then counts as
        played at its intended time: the output makes it *sound* then.
    midi_early_s : rtmidi MIDI leaves this much before the hit's time (an
        external synth's latency); JACK MIDI in ``drums`` shifts its own.
    """

    def __init__(self, score, performer, source, clock, *, midi=None, osc=None, take=None,
                 settings: EngineSettings | None = None, on_hit=None, drums=None, midi_early_s: float = 0.0):
        self.score, self.performer, self.source, self.clock = score, performer, source, clock
        self.midi, self.osc, self.take, self.on_hit = midi, osc, take, on_hit
        self.drums, self.midi_early_s = drums, float(midi_early_s) if midi is not None else 0.0
        self.settings = settings or EngineSettings()
        self.X = score_features(score)
        self._row = np.zeros(self.X.shape[1], np.float32)
        # The take as it happens, one row per score row (rolypoly.take): filled in place, never grown.
        self.rows = empty_rows(len(score))
        self.rows["row"] = np.arange(len(score))
        self.rows["bar"], self.rows["step"] = score.bar, score.step
        notes = played_notes(score)  # the player's own notes, once for both outputs
        self._messages = row_midi(score, notes)
        # The drums placed ahead of time (rolypoly.realtime.drum_out): the player's notes, each with
        # its class (the kit sounds by class; MIDI sends the note).
        self._classes, self._velocities, self._notes = row_hits(score, notes)
        self._on_times = np.zeros(ONSET_MEMORY)
        self._on_desc = np.zeros(ONSET_MEMORY, np.float32)
        self._on_count = 0
        self._stop = threading.Event()
        self.status = {"row": -1, "bar": 0, "yhat_ms": 0.0, "diff_ms": 0.0, "misses": 0, "xruns": 0,
                       "onsets": 0, "midi": "off" if midi is None else "ok"}

    def stop(self) -> None:
        """Ask a running take to end after the current hit (thread-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------ waiting
    def _wait(self, until: float) -> None:
        """Sleep until ``until``, hearing the partner and ending notes meanwhile."""
        clock = self.clock
        if clock.simulated:
            clock.sleep_until(until)
            self._hear()
            return
        while True:
            now = clock.now()
            self._hear()
            if self.midi is not None:
                self.midi.release_due()
            if now >= until - POLL_S:
                break
            # Only the last stretch needs precision: spinning every poll would burn a core.
            clock.nap_until(min(until - POLL_S, now + POLL_S))
        clock.sleep_until(until)

    def _hear(self) -> None:
        for o in self.source.poll(self.clock.now()):
            k = self._on_count % ONSET_MEMORY
            self._on_times[k] = o["time"]
            self._on_desc[k] = o["descriptor"]
            self._on_count += 1
            self._heard_time.append(o["time"] - self._t0)
            self._heard_avail.append(o["available"] - self._t0)
            if self.osc is not None:
                self.osc.onset(o["time"] - self._t0, o["available"] - self._t0, float(o["descriptor"]))
        self.status["onsets"] = self._on_count

    def _closest_onset(self, at: float, half_window: float):
        """Index (into the memory) of the onset closest to ``at`` within ± half_window, or -1."""
        n = min(self._on_count, ONSET_MEMORY)
        if n == 0:
            return -1
        d = np.abs(self._on_times[:n] - at)
        k = int(np.argmin(d))
        return k if d[k] < half_window else -1

    def _in_window(self, at: float, half_window: float, out: np.ndarray) -> None:
        """The partner onsets within ``at ± half_window`` (score time, the closest first) into ``out``."""
        out.fill(np.nan)
        n = min(self._on_count, ONSET_MEMORY)
        d = np.abs(self._on_times[:n] - at)
        near = np.flatnonzero(d < half_window)
        if len(near):
            near = near[np.argsort(d[near], kind="stable")][:MAX_HEARD]
            out[:len(near)] = np.sort(self._on_times[near]) - self._t0

    # ------------------------------------------------------------------ the take
    def run(self, start_at: float | None = None) -> TakeResult:
        """Play the whole score once; returns what happened.

        ``start_at``: engine time of the score's time zero (a bar of an
        incoming MIDI clock); default the lead-in from now.
        """
        s, clock, score = self.settings, self.clock, self.score
        n = len(score)
        t0 = clock.now() + s.lead_in_s if start_at is None else float(start_at)
        self._t0 = t0
        self._heard_time, self._heard_avail = [], []
        self.source.start(clock, t0 - (s.partner_offset_s or 0.0))
        if self.drums is not None:
            self.drums.begin(clock, t0, score)
        self.performer.prime(self.X)
        decider = Decider(self.performer)

        bar_s = score.bar_ms / 1000.0
        dur_s = score.duration_ms / 1000.0
        prev_dur = np.r_[dur_s[0], dur_s[:-1]]
        notated = t0 + score.onset_s
        lo = -prev_dur / s.clamp_factor / bar_s     # bar fractions: ŷ never crosses a third of a gap
        hi = dur_s / s.clamp_factor / bar_s
        earliest = notated + lo * bar_s
        window = dur_s / s.window_factor
        budget = s.budget_ms / 1000.0

        played = np.full(n, np.nan)
        intended = np.full(n, np.nan)
        yhat = np.zeros(n)
        diff = np.full(n, np.nan)
        misses, y_prev, diff_prev, desc_prev = 0, 0.0, 0.0, 0.0
        last = n
        try:
            for t in range(n):
                if self._stop.is_set():
                    last = t
                    break
                self._wait(earliest[t] - budget)
                if t > 0:
                    diff_prev, desc_prev = self._observe(t - 1, played, bar_s, window, diff,
                                                         diff_prev, desc_prev)
                np.copyto(self._row, self.X[t])
                fill_partner(self._row, desc_prev, diff_prev)
                self.rows["features"][t] = self._row
                y = decider.result(clock, earliest[t]) if decider.submit(self._row) else None
                if y is None or not math.isfinite(y):
                    misses += 1
                    y = y_prev
                y = min(max(y, lo[t]), hi[t])
                intended[t] = notated[t] + y * bar_s[t]
                if self.drums is not None:  # placed to the sample: handed over now, ahead of time
                    self.drums.schedule(self._classes[t], self._velocities[t], intended[t], self._notes[t])
                self._wait(intended[t] - self.midi_early_s)
                played[t] = self._play(t, intended[t], y)
                yhat[t] = y_prev = y
                if t > 0 and self.take is not None:
                    # Bookkeeping waits until the hit is out: it is not part of the decision.
                    self._record(t - 1, played, intended, yhat, notated, diff, window)
                new_bar = t == 0 or score.bar[t] != score.bar[t - 1]
                self.status.update(row=t, bar=int(score.bar[t]), yhat_ms=y * bar_s[t] * 1000,
                                   misses=misses, xruns=self.source.xruns)
                if new_bar and self.osc is not None:
                    self.osc.state(**self.status)
            if last == n and n:
                # Hear the last hit's window out, so its diff is known too.
                self._wait(played[n - 1] + window[n - 1])
            if last:
                self._observe(last - 1, played, bar_s, window, diff, diff_prev, desc_prev)
                if self.take is not None:
                    self._record(last - 1, played, intended, yhat, notated, diff, window)
        finally:
            decider.close()
            self.source.stop()
            if self.midi is not None:
                self.midi.all_notes_off()
            if self.drums is not None:
                self.drums.end()
        problems = []
        if self.midi is not None and self.midi.error:
            problems.append(f"MIDI output stopped: {self.midi.error}")
        if self.drums is not None:
            problems.extend(self.drums.problems())
        return TakeResult(notated=notated[:last] - t0, intended=intended[:last] - t0,
                          played=played[:last] - t0, yhat=yhat[:last], diff=diff[:last],
                          onsets=np.array(self._heard_time), onsets_available=np.array(self._heard_avail),
                          misses=misses, xruns=self.source.xruns, stopped_early=last < n,
                          problems=problems, t0=t0)

    def _observe(self, t, played, bar_s, window, diff, diff_prev, desc_prev):
        """diff_t and descriptor of hit t from the partner onsets around it (carried when none)."""
        self._hear()
        k = self._closest_onset(played[t], window[t])
        if k >= 0:
            diff[t] = (self._on_times[k] - played[t]) / bar_s[t]
            diff_prev, desc_prev = float(diff[t]), float(self._on_desc[k])
        self.status["diff_ms"] = diff_prev * bar_s[t] * 1000
        return diff_prev, desc_prev

    def _record(self, t, played, intended, yhat, notated, diff, window) -> None:
        """Complete take row t and hand it to the take writer (the disk work is on its own thread)."""
        t0, row = self._t0, self.rows[t]
        row["yhat"], row["notated"] = yhat[t], notated[t] - t0
        row["intended"], row["played"], row["diff"] = intended[t] - t0, played[t] - t0, diff[t]
        self._in_window(played[t], window[t], row["heard"])
        self.take.row(row)

    def _play(self, t: int, intended: float, y: float) -> float:
        actual = self.clock.now()
        if self.midi is not None:
            self.midi.play(self._messages[t])
            if self.midi.error and self.status["midi"] == "ok":
                self.status["midi"] = self.midi.error
            if self.midi_early_s:
                self._wait(intended)
                actual = self.clock.now()
        if self.drums is not None:
            actual = intended  # the output starts it on the sample that sounds then
        if self.osc is not None:
            self.osc.hit(t, intended - self._t0, actual - self._t0, y)
        if self.on_hit is not None:
            self.on_hit(t, actual - self._t0)
        self.source.drum_played(self._t0 + self.score.onset_s[t], actual)
        return actual
