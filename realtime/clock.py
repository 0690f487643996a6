"""Engine clocks: the only thing, with the partner source, that differs between runs.

Every time in the engine is an absolute time in seconds on one clock, so
nothing accumulates: a late hit never pushes the next one.

* :class:`RealClock` – the machine's monotonic clock. ``sleep_until`` sleeps
  coarsely, then spins the last stretch, so hits leave within microseconds
  of their time.
* :class:`SimClock` – virtual time for experiments and tests: ``sleep_until``
  jumps, so a take runs as fast as the CPU allows. Work the engine really
  does (an agent step) still advances it by the real time it took, so a
  slow model misses its deadlines in a simulation too.

>>> clock = SimClock()
>>> clock.sleep_until(2.5); clock.now()
2.5
"""
from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time

#: RealClock spins (instead of sleeping) for the last stretch before a deadline:
#: the OS wakes a sleeper up to a millisecond or so late.
SPIN_S = 0.0015
#: While a real-clock take plays, a thread holding the interpreter lock is asked
#: to pass it on after this long (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005


class RealClock:
    """Monotonic wall clock, zero at construction."""

    simulated = False

    def __init__(self):
        self._origin = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._origin

    def to_engine(self, perf_counter_s: float) -> float:
        """Engine time of a ``time.perf_counter()`` reading."""
        return perf_counter_s - self._origin

    def sleep_until(self, t: float) -> None:
        while True:
            left = t - self.now()
            if left <= 0:
                return
            if left > SPIN_S:
                time.sleep(left - SPIN_S)
            # else spin: time.sleep(0) yields the GIL to the audio thread meanwhile
            else:
                time.sleep(0)

    def nap_until(self, t: float) -> None:
        """Sleep until about ``t`` without spinning: for waits that need no precision."""
        left = t - self.now()
        if left > 0:
            time.sleep(left)

    def wait(self, event: threading.Event, until: float) -> bool:
        """Wait for ``event`` until engine time ``until``; True if it was set."""
        return event.wait(max(0.0, until - self.now()))


class SimClock:
    """Virtual time, advanced only by sleeping (jumps) and by real work done."""

    simulated = True

    def __init__(self, start: float = 0.0):
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def to_engine(self, perf_counter_s: float) -> float:
        return self._now

    def sleep_until(self, t: float) -> None:
        if t > self._now:
            self._now = t

    nap_until = sleep_until

    def wait(self, event: threading.Event, until: float) -> bool:
        """Wait (for real) for ``event``; the virtual clock advances by the time it took.

        The real wait is capped by the virtual time left, so a model that is
        slow in real time is late in virtual time as well.
        """
        start = time.perf_counter()
        ok = event.wait(max(0.0, until - self._now))
        self._now += time.perf_counter() - start
        return ok


_steady_lock = threading.Lock()
_steady_takes = 0
_steady_saved = 0.005


@contextlib.contextmanager
def steady_interpreter():
    """The interpreter tuned for a real-clock take while the block runs (restored after).

    * Another Python thread holding the interpreter lock passes it on after
      :data:`SWITCH_INTERVAL_S` rather than 5 ms: a hit whose thread wakes
      while the OSC thread parses a message is not held back by it.
    * Every object that exists when the take starts is frozen out of the
      garbage collector (:func:`gc.freeze`): a full collection during the take
      then scans only what the take made, not the hundreds of thousands of
      objects torch and the score brought, which took 100 ms and more with the
      interpreter lock held.

    Process-wide settings: nested or overlapping blocks share them, and the
    last to end restores them.

    >>> with steady_interpreter():
    ...     sys.getswitchinterval() == SWITCH_INTERVAL_S
    True
    """
    global _steady_takes, _steady_saved
    with _steady_lock:
        if _steady_takes == 0:
            _steady_saved = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            gc.freeze()
        _steady_takes += 1
    try:
        yield
    finally:
        with _steady_lock:
            _steady_takes -= 1
            if _steady_takes == 0:
                gc.unfreeze()
                sys.setswitchinterval(_steady_saved)
