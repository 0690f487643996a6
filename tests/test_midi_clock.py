"""The MIDI clock follower: tempo and bars of an incoming clock, with ticks lost or late on the way."""
from __future__ import annotations

import numpy as np
import pytest

from rolypoly.realtime.midi_clock import PPQN, ClockFollower


def feed(follower, times, start=True):
    if start:
        follower.message(b"\xfa", times[0] - 0.001)
    for t in times:
        follower.message(b"\xf8", float(t))


def ticks_at(bpm, n, t0=0.1):
    return t0 + np.arange(n) * 60.0 / (bpm * PPQN)


def test_lost_ticks_are_counted_from_their_gap_and_the_bars_stay_on_the_leaders():
    times = ticks_at(90.0, 80)
    kept = np.delete(np.arange(80), [30, 31, 55])          # an xrun dropped two ticks, another one
    f = ClockFollower(48000)
    feed(f, times[kept])
    assert f.position == 80 and f.lost == 3
    assert f.tempo() == pytest.approx(90.0, abs=1e-6)
    bar = f.next_bar(times[-1] + 0.01, 96)
    assert bar == pytest.approx(times[0] + 96 * 60.0 / (90.0 * PPQN), abs=1e-9)   # tick 96, not 93


def test_late_ticks_and_a_pause_are_not_taken_for_lost_ones():
    times = ticks_at(120.0, 60)
    times[[10, 20, 21]] += 0.006                                  # a late cycle: ticks late, none lost
    f = ClockFollower(48000)
    feed(f, times[:40])
    f.message(b"\xfc", times[39] + 0.01)                          # Stop ... Continue two seconds on
    f.message(b"\xfb", times[39] + 2.0)
    feed(f, times[40:] + 2.0, start=False)
    assert f.lost == 0 and f.position == 60


def test_a_tick_late_by_more_than_half_a_tick_is_not_counted_as_lost():
    times = ticks_at(180.0, 60)                                   # 13.9 ms a tick
    times[[20, 41]] += 0.6 * 60.0 / (180.0 * PPQN)               # stamped on arrival by a busy thread
    f = ClockFollower(48000)
    feed(f, times)
    assert f.lost == 0 and f.position == 60
    assert f.next_bar(times[-1] + 0.001, 96) == pytest.approx(times[0] + 96 * 60.0 / (180.0 * PPQN), abs=1e-9)


def test_lost_ticks_during_a_take_are_reported():
    times = ticks_at(100.0, 120)
    f = ClockFollower(48000, source="MIDI clock into test")
    feed(f, times[:50])
    f.watch(times[49])
    feed(f, np.delete(times[50:], [10]), start=False)
    assert f.lost == 1
    assert any("1 tick(s) lost" in p for p in f.problems(times[-1]))
