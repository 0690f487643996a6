"""MIDI clock with the studio: rolypoly leads (clock out) or follows (clock in).

MIDI clock is 24 ticks (``0xF8``) per quarter note; Start (``0xFA``) means
the next tick is the song's first, Song Position Pointer (``0xF2``) says
where the song is in sixteenths, Stop (``0xFC``) ends it.

* clock out -- a take's ticks (:func:`tick_times`), placed to the frame on
  the ``clock_out`` JACK MIDI port by :class:`~rolypoly.realtime.jack_io.JackIO`:
  tick ``k`` sits on the score's *notated* quarter-note grid (its tempo
  map), so a DAW or a hardware sequencer follows rolypoly's tempo and bar;
  the drummer's microtiming stays in the notes. Song position 0 and Start
  go out half a tick before the first tick, which is at score time zero;
  Stop when the take ends.
* :class:`ClockFollower` -- reads an incoming clock: the tempo (a line
  fitted to the last ticks' times) and where the bars fall (ticks counted
  from Start or a song position; a tick lost on the way, which an xrun does
  to a cycle's MIDI, is counted from the gap it leaves), so a take can start
  on the next bar at the clock's tempo. Within the take rolypoly keeps its
  own time; when the clock stops or vanishes mid-take it keeps playing at
  the tempo it had, and :meth:`ClockFollower.problems` says so (and how many
  ticks were lost).

Examples
--------
>>> f = ClockFollower(48000)
>>> f.message(b"\\xfa", 0.0)
>>> for k in range(48):                     # two beats at 120 bpm
...     f.message(b"\\xf8", 0.1 + k * 0.5 / 24)
>>> round(f.tempo(), 3), f.position
(120.0, 48)
>>> round(f.next_bar(after=0.5, ticks_per_bar=96), 4)     # bar 2 starts 4 beats after tick 0
2.1
"""
from __future__ import annotations

import threading
import time

import numpy as np

TICK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
PPQN = 24
#: Ticks the tempo is fitted on (four beats).
FIT_TICKS = 96
#: A tick later than this against the fitted line is left out of the fit (it arrived late).
LATE_S = 0.0002
#: A clock silent for this many of its ticks (and at least STALL_MIN_S) has stopped.
STALL_TICKS = 12
STALL_MIN_S = 0.25
#: A gap this many ticks long (or more, up to STALL_TICKS) between two ticks means ticks were lost on the way.
LOST_GAP = 1.5


def tick_times(score, t0: float = 0.0) -> np.ndarray:
    """Engine times of the MIDI clock ticks of ``score`` played from ``t0``, to the end of its last bar.

    >>> from rolypoly.score import score_from_grid
    >>> hits = np.zeros((24, 9), bool); hits[0, 0] = True
    >>> t = tick_times(score_from_grid(hits, bpm=120))    # one 4/4 bar at 120 bpm
    >>> len(t), float(t[1]), float(t[-1])
    (96, 0.020833333333333332, 1.9791666666666667)
    """
    tmap = score.tempo_map
    end_tick = float(score.tick[-1] + score.bar_ticks[-1] - (score.step[-1] * score.bar_ticks[-1] / 24.0))
    per_tick = tmap.ticks_per_beat / PPQN
    k = np.arange(int(np.ceil(end_tick / per_tick - 1e-9)))
    return t0 + tmap.seconds(k * per_tick)


class ClockFollower:
    """Tempo and bar position of an incoming MIDI clock (see module docstring).

    :meth:`message` is called with each clock message and its engine time
    (by the JACK callback, or a MIDI input thread); the rest may be called
    from any thread.

    Parameters
    ----------
    sample_rate : int
        Of the source of times (for messages only).
    source : str
        What the clock comes from, for messages.
    pump : callable, optional
        Called first by every query: hands over messages received meanwhile
        (:meth:`rolypoly.realtime.jack_io.JackIO.read_clock_in`).
    """

    def __init__(self, sample_rate: int = 48000, source: str = "MIDI clock", pump=None):
        self.source = source
        self._pump = pump or (lambda: None)
        self.times = np.zeros(FIT_TICKS)
        self.positions = np.zeros(FIT_TICKS, np.int64)
        self.received = 0              # ticks received (ring counter)
        self.position = 0              # song position of the next tick, in ticks
        self.running = False
        self.started = threading.Event()
        self.stopped_at = None         # engine time of a Stop
        self.last_tick = None
        self.lost = 0                  # ticks lost on the way, counted from the gaps they left
        self._gap_ok = False           # the newest tick followed another without a pause
        self._just_counted = 0         # ticks counted lost before the newest tick
        self._watch_from = None
        self._lost_at_watch = 0
        self._tempo_at_start = None

    def message(self, data: bytes, at: float, frame: int | None = None) -> None:
        status = data[0]
        if status == TICK:
            self._count_lost(at)
            k = self.received % FIT_TICKS
            self.times[k], self.positions[k] = at, self.position
            self.received += 1
            self.position += 1
            self.last_tick = at
            self._gap_ok = True
            if self.running and self.received >= 2:
                self.started.set()
        elif status == START:
            self.position, self.running, self.stopped_at = 0, True, None
            self.received, self._gap_ok = 0, False
        elif status == CONTINUE:
            self.running, self.stopped_at, self._gap_ok = True, None, False
        elif status == STOP:
            self.running, self.stopped_at = False, at
        elif status == SONG_POSITION and len(data) >= 3:
            self.position = 6 * (data[1] | (data[2] << 7))
            self.received, self._gap_ok = 0, False

    def _count_lost(self, at: float) -> None:
        """Move the song position past ticks lost on the way (an xrun drops a cycle's MIDI).

        The bars are counted in ticks, so one tick lost puts every later bar a
        tick off. A gap of about ``m`` ticks between two ticks (from the median
        of the last intervals) means ``m - 1`` were lost; a longer pause (a
        stalled sender, Stop and Continue) is not counted, and a tick that was
        only late (the next one comes less than half a tick after it) is
        taken back.
        """
        counted, self._just_counted = self._just_counted, 0
        if not self._gap_ok or self.received < 3:
            return
        n = min(self.received, 9)
        idx = (self.received - n + np.arange(n)) % FIT_TICKS
        per_tick = np.median(np.diff(self.times[idx]) / np.maximum(np.diff(self.positions[idx]), 1))
        gap = (at - self.last_tick) / per_tick if per_tick > 0 else 0.0
        if counted and gap < 2.0 - LOST_GAP:
            # The tick before came this much too early for ticks to have been lost: it was late
            # (stamped on arrival by a busy thread), so the count is taken back.
            self.position -= counted
            self.lost -= counted
            self.positions[(self.received - 1) % FIT_TICKS] -= counted
        elif LOST_GAP <= gap < STALL_TICKS:
            missed = int(round(gap)) - 1
            self.position += missed
            self.lost += missed
            self._just_counted = missed

    def _fit(self) -> tuple[float, float, int]:
        """(seconds per tick, time of the newest tick, its position) from a line through the last ticks."""
        n = min(self.received, FIT_TICKS)
        if n < 2:
            raise ValueError("not enough clock ticks yet")
        idx = (self.received - n + np.arange(n)) % FIT_TICKS
        pos = self.positions[idx].astype(np.float64) - self.positions[idx[-1]]
        t = self.times[idx]
        slope, intercept = np.polyfit(pos, t, 1)
        # A tick can only arrive late (a busy sender, a lost cycle), never early: fit again on the
        # ticks that are not late against the first line.
        late = t - (slope * pos + intercept) > np.median(t - (slope * pos + intercept)) + LATE_S
        if 2 <= n - late.sum() < n:
            slope, intercept = np.polyfit(pos[~late], t[~late], 1)
        return float(slope), float(intercept), int(self.positions[idx[-1]])

    def tempo(self) -> float:
        """Quarter notes per minute of the clock now."""
        self._pump()
        spt, _, _ = self._fit()
        return 60.0 / (PPQN * spt)

    def next_bar(self, after: float, ticks_per_bar: int) -> float:
        """Engine time of the first bar line (a multiple of ``ticks_per_bar`` in song position) at or after ``after``."""
        self._pump()
        spt, t_last, p_last = self._fit()
        p = p_last + max(0.0, (after - t_last) / spt)
        bar = int(np.ceil(p / ticks_per_bar - 1e-9)) * ticks_per_bar
        return t_last + (bar - p_last) * spt

    def wait(self, timeout_s: float, ticks: int = PPQN) -> bool:
        """Wait until the clock runs (Start or Continue, then ``ticks`` ticks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pump()
            if self.started.is_set() and self.received >= ticks:
                return True
            time.sleep(0.01)
        return False

    def watch(self, from_time: float) -> None:
        """From engine time ``from_time`` on (the take), note whether the clock keeps going."""
        self._pump()
        self._watch_from, self._lost_at_watch = from_time, self.lost
        try:
            self._tempo_at_start = self.tempo()
        except ValueError:
            self._tempo_at_start = None

    def alive(self, now: float) -> bool:
        """Whether ticks are still coming at engine time ``now``."""
        self._pump()
        if self.last_tick is None:
            return False
        try:
            spt = self._fit()[0]
        except ValueError:
            spt = STALL_MIN_S
        return now - self.last_tick < max(STALL_TICKS * spt, STALL_MIN_S)

    def problems(self, now: float | None = None) -> list[str]:
        """What happened to the clock during the take (watched since :meth:`watch`)."""
        self._pump()
        if self._watch_from is None:
            return []
        tempo = f"{self._tempo_at_start:.1f} bpm" if self._tempo_at_start else "its tempo"
        n_lost = self.lost - self._lost_at_watch
        lost = [f"{self.source}: {n_lost} tick(s) lost on the way, counted from the gaps"] if n_lost else []
        if self.stopped_at is not None and self.stopped_at >= self._watch_from:
            return [f"{self.source} sent Stop {self.stopped_at - self._watch_from:.1f} s into the take; "
                    f"kept playing at {tempo}"] + lost
        if now is not None and not self.alive(now):
            last = "before the take" if self.last_tick is None or self.last_tick < self._watch_from else \
                f"{self.last_tick - self._watch_from:.1f} s into the take"
            return [f"{self.source} stopped ({last}); kept playing at {tempo}"] + lost
        return lost


class RtmidiClockIn:
    """An incoming MIDI clock through python-rtmidi (ALSA, CoreMIDI...), for when JACK does not run.

    Messages are stamped on the engine clock when rtmidi hands them over (its
    own thread): without JACK there is no frame to place them on, so the
    tempo fit averages the arrival jitter out over :data:`FIT_TICKS` ticks.

    Parameters
    ----------
    port : the MIDI port sending clock (exact name or a unique part of one)
    clock : the take's RealClock

    Raises
    ------
    DeviceError
        No MIDI system, or no such port (the message lists them).
    """

    def __init__(self, port: str, clock):
        from .midi_out import _api_id, match_port, rtmidi, usable_apis

        apis = usable_apis()
        if not apis:
            from rolypoly.errors import DeviceError

            raise DeviceError("no MIDI input available for --clock-in (no JACK server, no ALSA sequencer)")
        self._in = rtmidi.MidiIn(rtapi=_api_id(apis[0]), name="rolypoly-clock-in")
        names = list(self._in.get_ports())
        index = match_port(port, names, "MIDI clock port", f" on {apis[0]}")
        self.port = names[index]
        self._clock = clock
        self.follower = ClockFollower(source=f"MIDI clock from {self.port}")
        self._in.ignore_types(sysex=True, timing=False, active_sense=True)
        self._in.set_callback(self._message)
        self._in.open_port(index, "clock_in")

    def _message(self, event, _data=None) -> None:
        message, _delta = event
        if message and message[0] >= 0xF0:
            self.follower.message(bytes(message), self._clock.to_engine(time.perf_counter()))

    def close(self) -> None:
        if self._in is not None:
            self._in.close_port()
            self._in.delete()  # rtmidi objects are never collected
            self._in = None
