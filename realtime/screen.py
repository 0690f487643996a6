"""What ``rolypoly session run`` shows: a terminal screen (rich), or plain lines where there is no terminal.

Both take the runner's :meth:`~rolypoly.realtime.run.Runner.view` (plain
values, read from the engine without waiting for it) and its messages;
neither touches the engine. :class:`RichScreen` draws bar and beat in large
digits, the take and model version, time left, the drums' distance to the
partner, misses, xruns and, between takes, the report in words.
:class:`LineScreen` prints the messages and reports as lines, for pipes,
logs and tests.

>>> print("\\n".join(big("12.3")))
▄█  ▀▀█   ▀▀█
 █  ▄▀     ▀█
▄█▄ █▄▄ ▄ ▄▄█
"""
from __future__ import annotations

import sys

#: Three rows per character, half blocks: readable across a room.
FONT = {
    "0": ("█▀█", "█ █", "█▄█"), "1": ("▄█ ", " █ ", "▄█▄"), "2": ("▀▀█", "▄▀ ", "█▄▄"),
    "3": ("▀▀█", " ▀█", "▄▄█"), "4": ("█ █", "▀▀█", "  █"), "5": ("█▀▀", "▀▀▄", "▄▄▀"),
    "6": ("█▀▀", "█▀▄", "▀▄▀"), "7": ("▀▀█", "  █", "  █"), "8": ("█▀█", "█▀█", "█▄█"),
    "9": ("█▀█", "▀▀█", "▄▄▀"), ".": (" ", " ", "▄"), " ": (" ", " ", " "),
}
HELP = "enter: next take   space: stop and learn   r: revert   f: fill   q: quit"


def big(text: str) -> list[str]:
    """``text`` (digits, dots, spaces) in large characters, as three lines."""
    glyphs = [FONT.get(ch, FONT[" "]) for ch in text]
    return [" ".join(g[k] for g in glyphs).rstrip() for k in range(3)]


def _mmss(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def drums_words(ms) -> str:
    """The drums' distance to the partner in words.

    >>> drums_words(3.24), drums_words(-1.0), drums_words(None)
    ('drums 3.2 ms early', 'drums 1.0 ms late', 'partner not heard yet')
    """
    if ms is None:
        return "partner not heard yet"
    if abs(ms) < 0.05:
        return "drums on the partner"
    return f"drums {abs(ms):.1f} ms {'early' if ms > 0 else 'late'}"


class LineScreen:
    """Messages as lines on a stream (no live drawing): pipes, logs, tests."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def start(self) -> None:
        self.stream.write(f"commands: {HELP.replace('   ', ', ')} (as words or keys, one a line)\n")
        self.stream.flush()

    def say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def show(self, view: dict) -> None:
        pass

    def stop(self) -> None:
        self.stream.flush()


class RichScreen:
    """The terminal screen, redrawn by the runner's loop (rich, no refresh thread of its own)."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self._live = None

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(console=self.console, auto_refresh=False, transient=False, screen=False)
        self._live.start()

    def say(self, line: str) -> None:
        pass  # the messages are part of the view

    def render(self, view: dict):
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        live = view.get("live")
        state = {"playing": "playing", "learning": view.get("progress") or "learning",
                 "ready": "ready"}[view["state"]]
        head = Text(f"take {view['take']}   model version {view['version']}   {state}", style="bold")
        parts = []
        if live is not None:
            parts.append(Text("\n".join(big(f"{live['bar']}.{live['beat']}")), style="bold cyan"))
            parts.append(Text(f"bar {live['bar']} beat {live['beat']}   {_mmss(live['left_s'])} left   "
                              f"hit {live['row'] + 1} of {live['rows']}"))
            parts.append(Text(drums_words(live["drums_ms"]) + " (last hits with the partner)",
                              style="bold green" if live["drums_ms"] is not None and abs(live["drums_ms"]) < 10
                              else "bold yellow"))
            parts.append(Text(f"misses {live['misses']}   xruns {live['xruns']}   partner onsets {live['onsets']}",
                              style="red" if live["misses"] or live["xruns"] else ""))
        if view["report"] and view["state"] != "playing":
            parts.append(Text("\n".join(view["report"])))
        if view["messages"]:
            parts.append(Text("\n".join(view["messages"][-4:]), style="dim"))
        parts.append(Text(HELP, style="reverse"))
        return Panel(Group(head, *parts), title=f"rolypoly · session {view['session']}", expand=False)

    def show(self, view: dict) -> None:
        if self._live is not None:
            self._live.update(self.render(view), refresh=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
