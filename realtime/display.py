"""What a take shows while it plays: ``rolypoly play``'s status line, and a line every few bars.

Both run on their own thread and only read the engine's ``status`` and its
take rows as they fill: the engine never waits for the terminal, and
nothing here runs in the per-hit decision.

- :class:`LiveDisplay` redraws one status line a few times a second on a
  terminal: bar, the drums' last offset from the score, the partner against
  the drums, misses and xruns.
- :class:`ProgressLines` prints a line every few bars, for output that is
  not redrawn (``make demo``, a log): bar n/N and how the drums have sat
  against the partner so far.
"""
from __future__ import annotations

import sys
import threading

from rolypoly.report import PartnerFit, partner_fit


def partner_so_far(engine, *, ended: bool = False) -> PartnerFit | None:
    """How the drums sat against the partner over the hits of this take so far (None: not heard yet).

    Reads the take rows the engine has completed (a row's diff is written
    once the hit after it is out, or at the end); a snapshot, never a wait.
    """
    done = len(engine.rows) if ended else max(int(engine.status["row"]), 0)
    diff = engine.rows["diff"][:done] * engine.score.bar_ms[:done]
    return partner_fit(diff)


def _bars(engine) -> int:
    return int(engine.score.n_bars)


class _Watcher:
    """A thread that wakes every ``interval_s`` while a take plays and writes what ``_tick`` says."""

    def __init__(self, enabled: bool, interval_s: float, stream):
        self.enabled, self.interval_s, self.stream = enabled, interval_s, stream
        self._engine = None
        self._stop = threading.Event()
        self._thread = None

    def watch(self, engine) -> None:
        """Start showing ``engine`` (called just before the take starts)."""
        self._engine = engine
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="display", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def _tick(self) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._end()


class LiveDisplay(_Watcher):
    """Redraws one status line a few times a second while a take plays (on a terminal only)."""

    def __init__(self, enabled: bool = True, interval_s: float = 0.2, stream=sys.stderr):
        super().__init__(enabled and stream.isatty(), interval_s, stream)

    def line(self) -> str:
        s = self._engine.status
        midi = "" if s["midi"] in ("ok", "off") else f"  MIDI: {s['midi']}"
        return (f"bar {s['bar'] + 1:3d}/{_bars(self._engine)}  drums {s['yhat_ms']:+6.1f} ms off the score  "
                f"partner {s['diff_ms']:+6.1f} ms against the drums  onsets {s['onsets']:4d}  "
                f"misses {s['misses']}  xruns {s['xruns']}{midi}")

    def _tick(self) -> None:
        self.stream.write("\r" + self.line() + "\033[K")
        self.stream.flush()

    def _end(self) -> None:
        self.stream.write("\r" + self.line() + "\033[K\n")


class ProgressLines(_Watcher):
    """A line every ``every_bars`` bars while a take plays, and one when it ends.

    ::

        bar 5/17: drums 18.2 ms early against the partner so far, spread 7.0 ms (20 hits heard)
    """

    def __init__(self, enabled: bool = True, every_bars: int = 4, interval_s: float = 0.25, stream=sys.stdout,
                 indent: str = ""):
        super().__init__(enabled, interval_s, stream)
        self.every_bars, self.indent = max(1, int(every_bars)), indent
        self._said = 0   # bars finished at the last line

    def line(self, bars_done: int) -> str:
        fit = partner_so_far(self._engine)
        where = ("partner not heard yet" if fit is None else
                 f"drums {fit.words().replace(', ', ' against the partner so far, ', 1)} ({fit.hits} hits heard)")
        return f"{self.indent}bar {min(bars_done + 1, _bars(self._engine))}/{_bars(self._engine)}: {where}"

    def _tick(self) -> None:
        done = int(self._engine.status["bar"])    # the bar playing now, from 0: as many are finished
        if done >= self._said + self.every_bars:
            self._said = done
            self.stream.write(self.line(done) + "\n")
            self.stream.flush()

    def _end(self) -> None:
        fit = partner_so_far(self._engine, ended=True)
        where = ("the partner was not heard" if fit is None else
                 f"drums {fit.words().replace(', ', ' against the partner, ', 1)} ({fit.hits} hits heard)")
        self.stream.write(f"{self.indent}take over: {where}\n")
        self.stream.flush()


def take_display(quiet: bool = False, stream=sys.stderr):
    """What ``rolypoly play`` shows: the redrawn line on a terminal, else a line every few bars."""
    if stream.isatty():
        return LiveDisplay(enabled=not quiet, stream=stream)
    return ProgressLines(enabled=not quiet, stream=stream)

