"""Takes: every row of a duet, written as it happens, readable after a crash.

A take is a JSON-lines file. The first line describes the take, then one
line per score row, then a last line closing it::

    {"type": "take", "score": "demo_score", "score_hash": "…", "agent": "lstm", …}
    {"type": "row", "row": 0, "bar": 0, "features": […], "yhat": 0.0012, "intended": 1.0, …}
    …
    {"type": "end", "rows": 123, "misses": 0, …}

The engine hands rows to a writer thread through a queue (no disk work on
the live path); the writer flushes at every bar line, so a crash or
``kill -9`` loses at most the bar being played. A closed take is made
read-only and never modified again. :func:`read_take` reads a complete or a
truncated take alike (a half-written last line is dropped and reported).

Examples
--------
>>> take = read_take("sessions/song/takes/000/take.jsonl")   # doctest: +SKIP
>>> take.complete, len(take.rows)                            # doctest: +SKIP
(True, 123)
"""
from __future__ import annotations

import json
import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rolypoly.errors import RolypolyError

TAKE_FILE = "take.jsonl"


class TakeError(RolypolyError):
    """A take file that cannot be read."""


class TakeWriter:
    """Append rows to a take file from a background thread.

    ``row(record)`` never blocks and never touches the disk: it puts the
    record on a queue. The thread writes records as they come and flushes
    when a record starts a new bar (and at close).
    """

    def __init__(self, path, header: dict):
        self.path = Path(path)
        if self.path.exists():
            raise TakeError(f"{self.path}: a take is already there; takes are never overwritten")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "x", encoding="utf-8")
        self._file.write(json.dumps({"type": "take", **header}) + "\n")
        self._file.flush()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._bar = None
        self.rows_written = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="take-writer", daemon=True)
        self._thread.start()

    def row(self, record: dict) -> None:
        """Queue one row record (must hold ``bar``); returns at once."""
        self._queue.put(record)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                if record.get("bar") != self._bar and self._bar is not None:
                    self._file.flush()  # the previous bar is complete: make it survive a crash
                self._bar = record.get("bar")
                self._file.write(json.dumps({"type": "row", **record}) + "\n")
                self.rows_written += 1
            except (OSError, ValueError, TypeError) as e:
                # Disk full or the like: the take goes on, the problem is reported at close.
                self.error = f"{self.path}: {e}"

    def close(self, footer: dict) -> None:
        """Write the closing line, flush, and make the take read-only."""
        self._queue.put(None)
        self._thread.join()
        self._file.write(json.dumps({"type": "end", **footer}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


@dataclass
class Take:
    """A take as read back from disk."""

    header: dict
    rows: list[dict]
    footer: dict | None
    dropped_lines: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.footer is not None


def read_take(path) -> Take:
    """Read a take file, complete or cut short by a crash.

    Raises
    ------
    TakeError
        When the file is missing or is not a take (no header line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TAKE_FILE
    if not path.is_file():
        raise TakeError(f"{path}: no such take")
    header, rows, footer, dropped, problems = None, [], None, 0, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                problems.append(f"{path}:{n}: unreadable line dropped (take cut short?)")
                continue
            kind = rec.pop("type", None) if isinstance(rec, dict) else None
            if n == 1:
                if kind != "take":
                    raise TakeError(f"{path}: not a rolypoly take (no header line)")
                header = rec
            elif kind == "row":
                rows.append(rec)
            elif kind == "end":
                footer = rec
    if header is None:
        raise TakeError(f"{path}: empty take file")
    return Take(header, rows, footer, dropped, problems)
