"""``rolypoly session run``: take, learn, take — the player never types between takes.

A :class:`Runner` drives a :class:`rolypoly.realtime.service.Service` (the
machinery of ``rolypoly serve``: takes on their own thread, fine-tuning on
another, loads off the take's process) the way a musician would: it plays a
take, learns from it as soon as the take ends
(:func:`rolypoly.learning.learn_from_take`, through the service's
``finetune``), shows what was learnt, and is ready for the next take.

Commands come from anywhere and land in one queue, in order:

=======  =========  ================  ========================================
key      foot (CC)  OSC               what
=======  =========  ================  ========================================
enter    ``next``   /rolypoly/run/next    the next take (while one plays: stop
                                      it, learn, then start the next)
space    ``stop``   /rolypoly/run/stop    stop the take and learn from it
r        ``revert`` /rolypoly/run/revert  back to the model version the current
                                      one learnt from (from the next take)
q        ``quit``   /rolypoly/run/quit    quit (a take playing is stopped and kept)
f        ``fill``   /rolypoly/run/fill    a fill into the next downbeat but one
                                      (a run with ``--generate``)
..       ``go``                       one pedal: next when ready, stop while playing
=======  =========  ================  ========================================

On a terminal the keys are read one by one (cbreak); from a pipe the same
commands come as lines (``next``, ``stop``, ``revert``, ``quit``, or the
keys' names ``enter``, ``space``, ``r``, ``q``). ``takes=N`` plays N takes
back to back, learning after each, with no commands at all.

The runner's loop (:meth:`Runner.run`) owns every decision and the screen;
the take's engine is only read (its ``status`` and its rows) by the screen,
never waited for: nothing here runs on the take's thread.

Examples
--------
>>> runner = Runner(service, LineScreen(sys.stdout), takes=2)   # doctest: +SKIP
>>> runner.run()                                                # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import queue
import select
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .service import PREFIX

#: Commands, and the words and keys that mean them.
COMMANDS = ("next", "stop", "revert", "quit", "go", "fill")
KEYS = {" ": "stop", "\n": "next", "\r": "next", "r": "revert", "R": "revert", "q": "quit", "Q": "quit",
        "f": "fill", "F": "fill"}
WORDS = {"next": "next", "enter": "next", "": "next", "stop": "stop", "space": "stop", "revert": "revert",
         "r": "revert", "quit": "quit", "q": "quit", "go": "go", "fill": "fill", "f": "fill"}
#: The screen is redrawn this often while nothing else happens.
REFRESH_S = 0.125
#: Hits the live "drums vs partner" figure averages over.
RECENT_HITS = 8


# ----------------------------------------------------------------------------- what a take and a fine-tune say

def learning_lines(take: dict | None, learned: dict | None, bar_ms: float, before: dict | None = None,
                   words: list[str] | None = None) -> list[str]:
    """The between-take report in words and ms, from a take's figures and what learning returned.

    ``words``: what the drums learnt, in words (:func:`rolypoly.report.take_report`), said in
    place of the distance to the targets when given.

    Parameters
    ----------
    take : the take's closing figures (``rolypoly.take.TakeEnd.summary``: diff_ms_mean, diff_ms_std,
        hits_with_partner), with ``take`` (number) and ``rows``
    learned : what :func:`rolypoly.learning.learn_from_take` returned, or None (no learning)
    bar_ms : length of a bar of the score, to say bar fractions in ms
    before : the previous take's figures, to say how the spread moved

    Examples
    --------
    >>> take = {"take": 1, "rows": 120, "hits_with_partner": 118, "diff_ms_mean": 3.0, "diff_ms_std": 5.4}
    >>> learned = {"accepted": True, "reason": "accepted", "version": 2, "current": 2,
    ...            "before": {"take_mse_bar": 1e-4}, "after": {"take_mse_bar": 2.5e-5}}
    >>> for line in learning_lines(take, learned, 2000.0, before={"diff_ms_std": 7.1}):
    ...     print(line)
    take 1: partner heard on 118 of 120 hits; the drums sat 3.0 ms early, spread 5.4 ms (previous take 7.1 ms)
    learnt: the drums' offsets were 20.0 ms (RMS) from where the partner asks for them, 10.0 ms after learning
    accepted: model version 2 plays the next take
    """
    lines = []
    if take:
        mean, std = take.get("diff_ms_mean"), take.get("diff_ms_std")
        heard = f"partner heard on {take.get('hits_with_partner', 0)} of {take.get('rows', '?')} hits"
        if mean is None:
            lines.append(f"take {take['take']}: {heard}")
        else:
            # diff = partner onset - drum hit: a partner after the drums means drums early.
            where = f"{abs(mean):.1f} ms {'early' if mean > 0 else 'late'}" if abs(mean) >= 0.05 else "on the partner"
            was = before.get("diff_ms_std") if before else None
            lines.append(f"take {take['take']}: {heard}; the drums sat {where}, spread {std:.1f} ms"
                         + (f" (previous take {was:.1f} ms)" if was is not None else ""))
    if learned is None:
        return lines
    b, a = (learned.get("before") or {}), (learned.get("after") or {})
    if words:
        lines.extend(words)
    elif "take_mse_bar" in b and "take_mse_bar" in a:
        rms = [math.sqrt(max(x["take_mse_bar"], 0.0)) * bar_ms for x in (b, a)]
        lines.append(f"learnt: the drums' offsets were {rms[0]:.1f} ms (RMS) from where the partner asks for "
                     f"them, {rms[1]:.1f} ms after learning")
    if "dataset_mse_bar" in b and "dataset_mse_bar" in a:
        rms = [math.sqrt(max(x["dataset_mse_bar"], 0.0)) * bar_ms for x in (b, a)]
        lines.append(f"drummers' timing (Groove MIDI validation): {rms[0]:.1f} -> {rms[1]:.1f} ms (RMS)")
    if learned.get("accepted"):
        lines.append(f"accepted: model version {learned.get('current')} plays the next take")
    else:
        kept = "" if learned.get("version") is None else f" (kept as version {learned['version']}, not played)"
        lines.append(f"not learnt{kept}: {learned.get('reason', '')}; model version {learned.get('current')} "
                     "plays the next take")
    return lines


def live_view(engine) -> dict:
    """What the screen shows of a take playing now, read from its engine without waiting for it.

    Bar and beat (from 1), time left, the drums' distance to the partner over
    the last :data:`RECENT_HITS` hits that heard one (ms, positive: drums
    early), misses, xruns and the partner onsets heard.
    """
    s = engine.status
    score, row = engine.plan, int(s.get("row", -1))  # the rows played: the score's, or the bars written
    view = {"bar": 1, "beat": 1, "left_s": engine.length_s,
            "drums_ms": None, "misses": int(s.get("misses", 0)), "xruns": int(s.get("xruns", 0)),
            "onsets": int(s.get("onsets", 0)), "row": row, "rows": len(score)}
    if row < 0 or not len(score):
        return view
    row = min(row, len(score) - 1)
    beats = max(1, int(round(score.bar_ms[row] * score.tempo_bpm[row] / 60000.0)))  # quarter notes per bar
    view["bar"] = int(score.bar[row]) + 1
    view["beat"] = int(engine.phase(row) * beats) + 1
    view["left_s"] = max(0.0, view["left_s"] - float(score.onset_s[row]))
    diffs = engine.rows["diff"][max(0, row - 4 * RECENT_HITS):row]  # rows before row are complete
    bars = score.bar_ms[max(0, row - 4 * RECENT_HITS):row]
    heard = np.isfinite(diffs)
    if heard.any():
        view["drums_ms"] = float(np.mean((diffs * bars)[heard][-RECENT_HITS:]))
    return view


# ----------------------------------------------------------------------------- where commands come from

class Keys:
    """The terminal's keys as commands, read one at a time (cbreak) on a thread; restored on close."""

    def __init__(self, put, stream=None):
        import termios
        import tty

        self.put, self.stream = put, stream or sys.stdin
        self.fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="rolypoly-keys", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self.fd, 32)
            if not data:
                return
            for ch in data.decode(errors="ignore"):
                if ch in KEYS:
                    self.put(KEYS[ch])

    def close(self) -> None:
        import termios

        self._stop.set()
        self._thread.join(1.0)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class Lines:
    """Commands as lines on a stream that is not a terminal (tests, pipes), read on a thread."""

    def __init__(self, put, say, stream=None):
        self.put, self.say, self.stream = put, say, stream or sys.stdin
        self._thread = threading.Thread(target=self._read, name="rolypoly-lines", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.stream:
            word = line.strip().lower()
            if word in WORDS:
                self.put(WORDS[word])
            else:
                self.say(f"unknown command {word!r}: next, stop, revert or quit (enter, space, r, q)")
        self.say("stdin closed: commands from OSC or the foot switch only")

    def close(self) -> None:
        pass  # a daemon thread blocked in a read ends with the process


# ----------------------------------------------------------------------------- the run

class Runner:
    """Take, learn, take (see the module docstring).

    Parameters
    ----------
    service : a Service with its session and partner set (its ``emit`` is taken over: replies the
        service sends later come here, and go on to ``forward`` too)
    screen : a :class:`rolypoly.realtime.screen.RichScreen` or :class:`~rolypoly.realtime.screen.LineScreen`
    takes : play this many takes back to back, learning after each, then quit (None: wait for commands)
    forward : callable(destination, replies) the service's later replies also go to (an OSC replier)
    """

    def __init__(self, service, screen, *, takes: int | None = None, forward=None):
        self.service, self.screen, self.takes = service, screen, takes
        self.events: queue.Queue = queue.Queue()
        self.forward = forward
        service.emit = self._emitted
        service.on_run = self.command
        self.state = "ready"          # ready, playing, learning
        self.quitting = False
        self.next_after = False       # start the next take once this one is learnt
        self.played = 0
        self.take: dict | None = None        # figures of the latest take
        self.previous: dict | None = None    # and of the one before
        self.report: list[str] = []
        self.progress = ""
        self.messages: list[str] = []
        self._version: int | None = None
        self._playing_take = 0
        #: why a run of ``takes`` takes ended early (a take that could not start or failed)
        self.failure: str | None = None

    # -- inputs (any thread)
    def command(self, name: str) -> None:
        """A command from a key, a line, the foot switch or OSC (thread-safe)."""
        self.events.put(("command", name))

    def _emitted(self, dest, replies) -> None:
        if self.forward is not None:
            self.forward(dest, replies)
        for address, args in replies:
            self.events.put(("reply", address, list(args)))

    # -- what the screen shows
    def version(self) -> int | None:
        from rolypoly.session import Session

        return Session(self.service.settings.session).meta.get("model")

    def view(self) -> dict:
        s = self.service.settings
        engine = self.service.engine
        take = self._playing_take if self.state == "playing" else self.next_take()
        view = {"session": Path(str(s.session)).name, "state": self.state, "take": take,
                "version": self._version, "report": self.report, "messages": self.messages[-6:],
                "progress": self.progress, "takes": self.takes, "played": self.played, "quitting": self.quitting}
        if engine is not None and self.state == "playing":
            view["live"] = live_view(engine)
        return view

    def next_take(self) -> int:
        """Number of the next take."""
        from rolypoly.session import take_folders

        done = take_folders(self.service.settings.session)
        return int(done[-1].name) + 1 if done else 0

    def say(self, line: str) -> None:
        self.events.put(("say", line))

    def _say(self, line: str) -> None:
        self.messages.append(line)
        self.screen.say(line)

    # -- the loop
    def run(self) -> int:
        """Run until quit (or ``takes`` takes are played and learnt); the number of takes played."""
        self._version = self.version()
        self.screen.start()
        try:
            if self.takes is not None and self.takes > 0:
                self._play()
            else:
                self._say(f"ready: take {self.next_take()} plays model version {self._version}")
            last = 0.0
            while not self._done():
                try:
                    event = self.events.get(timeout=REFRESH_S)
                except queue.Empty:
                    event = None
                if event is not None:
                    self._handle(event)
                if time.monotonic() - last >= REFRESH_S:
                    last = time.monotonic()
                    self.screen.show(self.view())
        finally:
            self.screen.show(self.view())
            self.screen.stop()
        return self.played

    def _done(self) -> bool:
        if self.state != "ready":
            return False
        if self.quitting:
            return True
        return self.takes is not None and self.played >= self.takes

    def _handle(self, event) -> None:
        kind = event[0]
        if kind == "say":
            self._say(event[1])
        elif kind == "command":
            getattr(self, f"_{event[1]}")()
        else:
            self._reply(event[1], event[2])

    # -- commands
    def _go(self) -> None:
        (self._stop if self.state == "playing" else self._next)()

    def _next(self) -> None:
        if self.state == "ready":
            self._play()
        elif self.state == "playing":
            self.next_after = True
            self._stop()
        else:
            self.next_after = True
            self._say("the next take starts once learning is done")

    def _stop(self) -> None:
        if self.state != "playing":
            self._say("no take is playing (enter: the next take)")
            return
        self._call("stop")

    def _revert(self) -> None:
        self._call("revert")

    def _fill(self) -> None:
        # The service says why not (no take playing, no generation, a fill already coming) in its reply.
        self._call("generate/fill")

    def _quit(self) -> None:
        self.quitting = True
        self.next_after = False
        if self.state == "playing":
            self._say("quitting: the take is stopped and kept (learn from it later: rolypoly finetune)")
            self._call("stop")
        elif self.state == "learning":
            self._say("quitting once learning is done")

    def _call(self, name: str, *args) -> list:
        """Send the service a message; its replies are handled here and go on to ``forward``.

        A message that waits behind a load or revert done by the worker process is answered
        later, through the service's ``emit``: its replies come back as events.
        """
        replies = self.service.handle(PREFIX + name, *args)
        if replies and self.forward is not None:
            with self.service.emit_lock:
                self.forward(self.service.destination(), replies)
        for address, values in replies:
            self._reply(address, list(values))
        return replies

    def _play(self) -> None:
        self.report, self.progress = [], ""
        self._version = self.version()
        self._playing_take = self.next_take()
        self._call("play")

    # -- what the service says
    def _reply(self, address: str, args: list) -> None:
        if address == PREFIX + "playing":
            self.state = "playing"
            self._say(f"take {self._playing_take} playing, model version {self._version}")
        elif address == PREFIX + "take_done":
            self._take_done(Path(args[0]), int(args[1]))
        elif address == PREFIX + "finetune_progress":
            self.progress = f"learning: epoch {args[0]} of {args[1]}"
        elif address == PREFIX + "finetuned":
            self._learned()
        elif address == PREFIX + "ok" and args and args[0] == PREFIX + "revert":
            self._version = int(args[1])
            self._say(f"reverted: model version {args[1]} plays the next take")
        elif address == PREFIX + "error":
            self._error(str(args[0]), str(args[1]))

    def _error(self, address: str, reason: str) -> None:
        self._say(f"{address.removeprefix(PREFIX)}: {reason}")
        if address == PREFIX + "play":  # refused, or the take failed
            self.state = "ready"
            if self.takes is not None:  # no one is there to try again: the run ends, saying why
                self.failure, self.quitting = reason, True
        elif address == PREFIX + "finetune" and self.state == "learning":
            self.state = "ready"
            self._ready()

    def _take_done(self, take_dir: Path, rows: int) -> None:
        from rolypoly.take import TakeError, read_take

        self.played += 1
        self.previous, self.take = self.take, {"take": int(take_dir.name), "rows": rows}
        try:
            self.take.update((read_take(take_dir).end.summary or {}))
        except (TakeError, AttributeError) as e:
            self._say(f"take {take_dir.name}: {e}")
        self._say(f"take {take_dir.name} done: {rows} hits, written to {take_dir}")
        for problem in self.take.get("problems") or []:  # e.g. a partner hardly heard: a wrong offset or input
            self._say(f"warning: {problem}")
        if self.quitting:
            self.state = "ready"
            return
        self.state = "learning"
        self.progress = "learning"
        # /rolypoly/finetuning, or an error (see _error); none yet when it waits behind the worker.
        self._call("finetune")

    def _learned(self) -> None:
        learned = self.service.last_learning
        self.service.last_learning = None
        self.state = "ready"
        self.progress = ""
        self._version = self.version()
        score = self.service.settings.score
        bar_ms = float(np.median(score.bar_ms)) / self.service.settings.tempo_factor
        self.report = learning_lines(self.take, learned, bar_ms, before=self.previous,
                                     words=self._words(learned))
        for line in self.report:
            self.screen.say(line)
        self._ready()

    def _words(self, learned: dict | None) -> list[str]:
        """What the drums learnt from the take, in words (its heading is said by the accepted line)."""
        if not learned or not learned.get("accepted") or learned.get("version") is None or not self.take:
            return []
        from rolypoly.errors import RolypolyError
        from rolypoly.report import take_report
        from rolypoly.session import Session

        try:
            return take_report(Session(self.service.settings.session), self.take["take"], learned["version"])[1:]
        except (RolypolyError, OSError) as exc:  # the report is a courtesy: the take and version stand
            return [f"(no report: {exc})"]

    def _ready(self) -> None:
        if self.quitting:
            return
        if self.next_after or (self.takes is not None and self.played < self.takes):
            self.next_after = False
            self._play()
        elif self.takes is None:
            self._say(f"ready: take {self.next_take()} plays model version {self._version} (enter: play it)")
