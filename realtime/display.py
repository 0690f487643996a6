"""The live terminal line of ``rolypoly play``: bar, last ŷ, last diff, misses, xruns.

It runs on its own thread and only reads the engine's ``status``: the engine
never waits for the terminal.
"""
from __future__ import annotations

import sys
import threading


class LiveDisplay:
    """Redraws one status line a few times a second while a take plays."""

    def __init__(self, enabled: bool = True, interval_s: float = 0.2, stream=sys.stderr):
        self.enabled = enabled and stream.isatty()
        self.interval_s, self.stream = interval_s, stream
        self._engine = None
        self._stop = threading.Event()
        self._thread = None

    def watch(self, engine) -> None:
        """Start showing ``engine.status`` (called just before the take starts)."""
        self._engine = engine
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="display", daemon=True)
            self._thread.start()

    def line(self) -> str:
        s = self._engine.status
        midi = "" if s["midi"] in ("ok", "off") else f"  MIDI: {s['midi']}"
        return (f"bar {s['bar'] + 1:4d}  ŷ {s['yhat_ms']:+6.1f} ms  diff {s['diff_ms']:+6.1f} ms  "
                f"onsets {s['onsets']:4d}  misses {s['misses']}  xruns {s['xruns']}{midi}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r" + self.line() + "\033[K\n")
