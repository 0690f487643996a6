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


def note_hits(channel, pitch, velocity) -> tuple[list, list, list]:
    """The classes, velocities and notes (``channel * 128 + pitch``) of one row's notes (drum notes only).

    >>> note_hits([9, 9, 9], [36, 44, 100], [100, 60, 90])   # 100 is no drum: left out
    ([0, 2], [100, 60], [1188, 1196])
    """
    keep = [k for k, p in enumerate(pitch) if class_of_pitch(int(p)) is not None]
    return ([class_of_pitch(int(pitch[k])) for k in keep], [int(velocity[k]) for k in keep],
            [int(channel[k]) * 128 + int(pitch[k]) for k in keep])


def row_hits(score, notes) -> tuple[list, list, list]:
    """Per row, the classes, velocities and notes (``channel * 128 + pitch``) it plays, made before the take.

    ``notes`` are the score's :func:`rolypoly.score.played_notes`, each given the drum class it
    belongs to, for outputs that place hits ahead of time (the sampled kit sounds the note's own sample,
    JACK MIDI sends the note).
    """
    bounds = np.searchsorted(notes["row"], np.arange(len(score) + 1))
    per_row = [note_hits(*(notes[f][a:b] for f in ("channel", "pitch", "velocity")))
               for a, b in zip(bounds[:-1], bounds[1:])]
    return [r[0] for r in per_row], [r[1] for r in per_row], [r[2] for r in per_row]


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
                 settings: EngineSettings | None = None, on_hit=None, drums=None, midi_early_s: float = 0.0,
                 bars=None):
        self.score, self.performer, self.source, self.clock = score, performer, source, clock
        self.midi, self.osc, self.take, self.on_hit = midi, osc, take, on_hit
        self.drums, self.midi_early_s = drums, float(midi_early_s) if midi is not None else 0.0
        self.settings = settings or EngineSettings()
        # What is played: the score's rows, or bars written during the take (rolypoly.realtime.live_bars),
        # committed one by one into preallocated rows: the same arrays either way.
        self.bars = bars
        self.plan = score if bars is None else bars.plan
        self.X = score_features(score) if bars is None else bars.plan.X
        cap = len(score) if bars is None else bars.plan.capacity
        self._row = np.zeros(self.X.shape[1], np.float32)
        # The take as it happens, one row per row played (rolypoly.take): filled in place, never grown.
        self.rows = empty_rows(cap)
        self.rows["row"] = np.arange(cap)
        if bars is None:
            self.rows["bar"], self.rows["step"] = score.bar, score.step
            self.rows["velocities"] = np.clip(score.velocities, 0, 127)
            notes = played_notes(score)  # the player's own notes, once for both outputs
            self._messages = row_midi(score, notes)
            # The drums placed ahead of time (rolypoly.realtime.drum_out): the player's notes, each with
            # its class (the kit sounds the note, or its class's sample when it has none; MIDI sends the note).
            self._classes, self._velocities, self._notes = row_hits(score, notes)
        else:
            self._messages, self._classes = [()] * cap, [[]] * cap
            self._velocities, self._notes = [[]] * cap, [[]] * cap
        self._on_times = np.zeros(ONSET_MEMORY)
        self._on_desc = np.zeros(ONSET_MEMORY, np.float32)
        self._on_strength = np.zeros(ONSET_MEMORY, np.float32)
        self._on_count = 0
        self._stop = threading.Event()
        self.status = {"row": -1, "bar": 0, "yhat_ms": 0.0, "diff_ms": 0.0, "misses": 0, "xruns": 0,
                       "onsets": 0, "midi": "off" if midi is None else "ok"}

    @property
    def n_bars(self) -> int:
        """Bars the take plays."""
        return self.score.n_bars if self.bars is None else self.bars.n_bars

    @property
    def length_s(self) -> float:
        """From the score's time zero to the end of the take's last bar (s)."""
        if self.bars is not None:
            return float(self.plan.bar_start_s[self.bars.n_bars])
        s = self.score
        return float(s.onset_s[-1] + s.duration_ms[-1] / 1000.0) if len(s) else 0.0

    def phase(self, t: int) -> float:
        """Where row ``t`` sits in its bar, [0, 1)."""
        return float(self.score.beat_phase[t] if self.bars is None else self.plan.position[t])

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
            self._on_strength[k] = o["strength"]
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
        """Play the whole score (or every bar written) once; returns what happened.

        ``start_at``: engine time of the score's time zero (a bar of an
        incoming MIDI clock); default the lead-in from now.
        """
        s, clock, plan, bars = self.settings, self.clock, self.plan, self.bars
        t0 = clock.now() + s.lead_in_s if start_at is None else float(start_at)
        self._t0 = t0
        self._heard_time, self._heard_avail = [], []
        cap = len(self.rows)
        # Per row, fixed once its bar is known (all at once for a score; bar by bar when written live).
        self._notated, self._lo, self._hi = np.zeros(cap), np.zeros(cap), np.zeros(cap)
        self._earliest, self._window = np.zeros(cap), np.zeros(cap)
        if bars is not None:
            bars.start()
            self._commit_rows(0, plan.n)
        n = len(plan) if bars is None else plan.n
        self._fix(0, n)
        notated, lo, hi, earliest, window = self._notated, self._lo, self._hi, self._earliest, self._window
        self.source.start(clock, t0 - (s.partner_offset_s or 0.0))
        if self.drums is not None:
            self.drums.begin(clock, t0, self.score)
        # Seq2Seq's encoder reads the session's score once: written bars use its annotations in turn.
        self.performer.prime(score_features(self.score) if bars is not None else self.X)
        decider = Decider(self.performer)
        budget = s.budget_ms / 1000.0

        played = np.full(cap, np.nan)
        intended = np.full(cap, np.nan)
        yhat = np.zeros(cap)
        diff = np.full(cap, np.nan)
        misses, y_prev, diff_prev, desc_prev = 0, 0.0, 0.0, 0.0
        last = 0
        t = 0
        try:
            requested = -1
            while True:
                if self._stop.is_set():
                    break
                if bars is not None and t < n and plan.bar[t] > requested:
                    start = t0 + plan.bar_start_s[plan.bar[t]]
                    if earliest[t] - budget > start:  # no hit on the downbeat: ask when the bar starts
                        self._wait(start)
                        requested = int(plan.bar[t])
                        self._request_bar(requested)
                if bars is not None and bars.committed_bars < bars.n_bars and (
                        t >= n or earliest[t] - budget >= t0 + bars.deadline(bars.committed_bars)):
                    # The next bar is due: the writer's if it is ready by its deadline, else the last again.
                    due = t0 + bars.deadline(bars.committed_bars)
                    if clock.simulated:
                        bars.wait_ready(bars.committed_bars, due)
                    self._wait(due)
                    a, n = bars.commit(bars.committed_bars)
                    self._commit_rows(a, n)
                    continue
                if t >= n:
                    break
                self._wait(earliest[t] - budget)
                bar_s = plan.bar_ms[t] / 1000.0
                if t > 0:
                    diff_prev, desc_prev = self._observe(t - 1, played, plan.bar_ms[t - 1] / 1000.0, window,
                                                         diff, diff_prev, desc_prev)
                np.copyto(self._row, self.X[t])
                fill_partner(self._row, desc_prev, diff_prev)
                self.rows["features"][t] = self._row
                y = decider.result(clock, earliest[t]) if decider.submit(self._row) else None
                if y is None or not math.isfinite(y):
                    misses += 1
                    y = y_prev
                y = min(max(y, lo[t]), hi[t])
                intended[t] = notated[t] + y * bar_s
                if self.drums is not None:  # placed to the sample: handed over now, ahead of time
                    self.drums.schedule(self._classes[t], self._velocities[t], intended[t], self._notes[t])
                self._wait(intended[t] - self.midi_early_s)
                played[t] = self._play(t, intended[t], y)
                yhat[t] = y_prev = y
                last = t + 1
                if t > 0 and self.take is not None:
                    # Bookkeeping waits until the hit is out: it is not part of the decision.
                    self._record(t - 1, played, intended, yhat, notated, diff, window)
                new_bar = t == 0 or plan.bar[t] != plan.bar[t - 1]
                if bars is not None:
                    if plan.bar[t] > requested:  # bar k started: the writer gets bar k-1's partner, writes bar k+1
                        requested = int(plan.bar[t])
                        self._request_bar(requested)
                    bars.after_hit()
                self.status.update(row=t, bar=int(plan.bar[t]), yhat_ms=y * bar_s * 1000,
                                   misses=misses, xruns=self.source.xruns)
                if new_bar and self.osc is not None:
                    self.osc.state(**self.status)
                t += 1
            stopped = last < n or (bars is not None and bars.committed_bars < bars.n_bars)
            if not stopped and n:
                # Hear the last hit's window out, so its diff is known too.
                self._wait(played[n - 1] + window[n - 1])
            if last:
                self._observe(last - 1, played, plan.bar_ms[last - 1] / 1000.0, window, diff, diff_prev, desc_prev)
                if self.take is not None:
                    self._record(last - 1, played, intended, yhat, notated, diff, window)
        finally:
            decider.close()
            if bars is not None:
                bars.close()
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
                          misses=misses, xruns=self.source.xruns, stopped_early=stopped,
                          problems=problems, t0=t0)

    def _fix(self, a: int, b: int) -> None:
        """Times of rows a..b-1 (and of row a-1, whose gap to the next row is now known)."""
        s, plan = self.settings, self.plan
        a = max(a - 1, 0)
        if b <= a:
            return
        bar_s = plan.bar_ms[a:b] / 1000.0
        dur = plan.duration_ms[a:b] / 1000.0
        prev = np.r_[plan.duration_ms[a - 1] / 1000.0 if a > 0 else dur[0], dur[:-1]]
        self._notated[a:b] = self._t0 + plan.onset_s[a:b]
        self._lo[a:b] = -prev / s.clamp_factor / bar_s     # bar fractions: ŷ never crosses a third of a gap
        self._hi[a:b] = dur / s.clamp_factor / bar_s
        self._earliest[a:b] = self._notated[a:b] + self._lo[a:b] * bar_s
        self._window[a:b] = dur / s.window_factor

    def _commit_rows(self, a: int, b: int) -> None:
        """Rows a..b-1 were written (a bar of :mod:`rolypoly.realtime.live_bars`): their take rows, notes, times."""
        from .midi_out import row_messages

        plan, bars = self.plan, self.bars
        self.rows["bar"][a:b], self.rows["step"][a:b] = plan.bar[a:b], plan.step[a:b]
        self.rows["velocities"][a:b] = np.clip(plan.velocities[a:b], 0, 127)
        for t in range(a, b):
            ch, pitch, vel = bars.row_notes(t)
            self._messages[t] = row_messages(ch, pitch, vel)
            self._classes[t], self._velocities[t], self._notes[t] = note_hits(ch, pitch, vel)
        self._fix(a, b)

    def _request_bar(self, bar: int) -> None:
        n = min(self._on_count, ONSET_MEMORY)
        self.bars.request(bar, self._on_times[:n] - self._t0, self._on_strength[:n], self.clock.now())

    def _observe(self, t, played, bar_s, window, diff, diff_prev, desc_prev):
        """diff_t and descriptor of hit t from the partner onsets around it (carried when none)."""
        self._hear()
        k = self._closest_onset(played[t], window[t])
        if k >= 0:
            diff[t] = (self._on_times[k] - played[t]) / bar_s
            diff_prev, desc_prev = float(diff[t]), float(self._on_desc[k])
        self.status["diff_ms"] = diff_prev * bar_s * 1000
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
        self.source.drum_played(self._t0 + self.plan.onset_s[t], actual)
        return actual
