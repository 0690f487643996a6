"""The take format: every row of a duet, written as it happens, readable after a crash.

This module owns the take. A take is a JSON-lines file (``take.jsonl``):
the first line describes the take (:class:`TakeHeader`), then one line per
score row (:data:`ROW_DTYPE`), then a last line closing it (:class:`TakeEnd`)::

    {"type": "take", "score": "demo_score", "score_hash": "…", "agent": "lstm", …}
    {"type": "row", "row": 0, "bar": 0, "step": 0, "features": […], "yhat": 0.0012,
     "notated": 0.0, "intended": 0.003, "played": 0.0031, "onsets": [0.012], "diff": 0.004}
    …
    {"type": "end", "rows": 123, "misses": 0, "partner_onsets": […], …}

Units: times (``notated``, ``intended``, ``played``, ``onsets``) are seconds
from the score's time zero; ``yhat`` and ``diff`` are fractions of a bar
(``diff`` = partner onset − drum hit, positive when the partner is late,
null when no partner onset fell in the hit's window); ``features`` is the
feature row the agent decided on (:mod:`rolypoly.features`); ``onsets`` the
partner onsets heard in the hit's diff window (at most :data:`MAX_HEARD`).

In memory a take's rows are one numpy structured array of
:data:`ROW_DTYPE` (null diff and missing times are NaN): the engine fills
rows in place, targets and fine-tuning read columns (``rows["yhat"]``).
:func:`as_rows` turns row records (dicts, as in a file) into that array, so
a take can be built without the engine.

Writing (:class:`TakeWriter`): the engine hands each finished row to a
writer thread (no disk work on the live path); the writer flushes at every
bar line, so a crash or ``kill -9`` loses at most the bar being played. A
closed take is made read-only and never modified again.

Reading (:func:`read_take`): a complete or a truncated take alike (a
half-written last line is dropped and reported). Checking
(:func:`validate_take`): what of a take may train the agent.

Examples
--------
>>> rows = as_rows([{"row": 0, "bar": 0, "step": 0, "yhat": 0.01, "notated": 0.0, "diff": None},
...                 {"row": 1, "bar": 0, "step": 12, "yhat": -0.01, "notated": 1.0, "diff": 0.02}])
>>> rows["yhat"].tolist(), rows["diff"].tolist()
([0.01, -0.01], [nan, 0.02])
>>> take = Take(TakeHeader(score="song", score_hash="abc", rows=2), rows)
>>> check = validate_take(take, "abc", n_rows=2)
>>> check.usable, len(check.rows), check.reasons
(True, 2, ['take has no closing line, but all 2 rows are there: using them all'])
"""
from __future__ import annotations

import json
import math
import os
import queue
import stat
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import RolypolyError
from .features import N_FEATURES

TAKE_FILE = "take.jsonl"
#: Partner onsets a row keeps from its diff window (the closest ones; a window rarely holds two).
MAX_HEARD = 8

#: One row of a take: what happened at one score row. The one definition of the take row.
ROW_DTYPE = np.dtype([
    ("row", np.int32),                          # score row (0, 1, 2 ...)
    ("bar", np.int32),                          # bar of the score row, from 0
    ("step", np.int32),                         # grid step in its bar (rolypoly.grid)
    ("features", np.float32, (N_FEATURES,)),    # the feature row the agent decided on
    ("yhat", np.float64),                       # offset played, fraction of a bar
    ("notated", np.float64),                    # s from score zero
    ("intended", np.float64),                   # notated + yhat, s
    ("played", np.float64),                     # when the hit went out, s
    ("heard", np.float64, (MAX_HEARD,)),        # partner onsets in the diff window, s (NaN: none)
    ("diff", np.float64),                       # partner − drum, fraction of a bar (NaN: no onset)
])
_REQUIRED = ("row", "bar", "step", "yhat", "notated")
_TIMES = ("yhat", "notated", "intended", "played")


class TakeError(RolypolyError):
    """A take file that cannot be read or written."""


# ----------------------------------------------------------------------------- header and end

@dataclass
class TakeHeader:
    """The first line of a take: what was played, by whom, how.

    Fields a take file has that are not listed here are kept in ``extra``.
    """

    score: str = ""
    score_hash: str | None = None        # the piece's identity (rolypoly.session.score_hash)
    rows: int | None = None              # rows of the score played
    tempo_bpm: float | None = None
    agent: str | None = None             # "lstm" or "seq2seq"
    model_version: int | None = None     # the session's model version (None: explicit weights)
    pattern: dict | None = None          # how the score was played (rolypoly.session)
    weights: str | None = None
    settings: dict = field(default_factory=dict)   # the engine's settings
    source: str | None = None            # the partner source
    sample_rate: int | None = None
    clock: str | None = None             # "real" or "simulated"
    started: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> "TakeHeader":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known and k != "type"})


@dataclass
class TakeEnd:
    """The closing line of a take: how it ended and what it left.

    ``summary`` holds the take's figures (``rolypoly.realtime.duet`` writes
    hits with a partner, mean and spread of ŷ and diff in ms, and so on).
    """

    rows: int | None = None
    misses: int = 0
    xruns: int = 0
    stopped_early: bool = False
    error: str | None = None             # set when the take ended on an error
    partner_onsets: np.ndarray = field(default_factory=lambda: np.zeros(0))  # every onset heard, s
    ended: str | None = None
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"rows": self.rows, "misses": self.misses, "xruns": self.xruns,
               "stopped_early": self.stopped_early, **self.summary, "ended": self.ended,
               "partner_onsets": [round(float(x), 6) for x in np.asarray(self.partner_onsets)]}
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TakeEnd":
        data = {k: v for k, v in data.items() if k != "type"}
        try:
            onsets = np.asarray(data.pop("partner_onsets", None) or [], dtype=np.float64).ravel()
        except (TypeError, ValueError):
            onsets = np.zeros(0)
        return cls(rows=data.pop("rows", None), misses=data.pop("misses", 0) or 0,
                   xruns=data.pop("xruns", 0) or 0, stopped_early=bool(data.pop("stopped_early", False)),
                   error=data.pop("error", None), partner_onsets=onsets, ended=data.pop("ended", None),
                   summary=data)


# ----------------------------------------------------------------------------- rows

def empty_rows(n: int) -> np.ndarray:
    """``n`` take rows, times and diff NaN (not played yet)."""
    rows = np.zeros(int(n), ROW_DTYPE)
    for key in ("intended", "played", "heard", "diff"):
        rows[key] = np.nan
    return rows


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _record_problem(r) -> str | None:
    """First thing wrong with a row record (a dict from a take file), or None."""
    if not isinstance(r, dict):
        return "is not a row"
    for key in _REQUIRED:
        if key not in r:
            return f"has no {key!r}"
    for key in ("row", "bar", "step"):
        if not (_is_number(r[key]) and float(r[key]).is_integer() and abs(r[key]) < 2**31):
            return f"{key} is {r[key]!r}"
    for key in _TIMES:
        if key in r and not (_is_number(r[key]) and math.isfinite(r[key])):
            return f"{key} is {r[key]!r}"
    if r.get("diff") is not None and not (_is_number(r["diff"]) and math.isfinite(r["diff"])):
        return f"diff is {r['diff']!r}"
    for key, width in (("features", N_FEATURES), ("onsets", None)):
        vals = r.get(key)
        if vals is None:
            continue
        if not isinstance(vals, list) or (width is not None and len(vals) != width):
            return f"{key} is not a list of {width or 'some'} numbers"
        if not all(_is_number(v) and math.isfinite(v) for v in vals):
            return f"{key} hold NaN or infinite values"
    return None


def as_rows(records, problems: dict | None = None) -> np.ndarray:
    """Take rows (:data:`ROW_DTYPE`) from row records (dicts as in a take file), or as given.

    A record's fields may be missing (NaN, zeros for features); with
    ``problems`` (a dict) the first problem of each bad record is noted
    there by its position, for :func:`validate_take`.

    Examples
    --------
    >>> rows = as_rows([{"row": 0, "bar": 0, "step": 6, "yhat": 0.0, "notated": 0.5, "onsets": [0.51]}])
    >>> int(rows[0]["step"]), rows[0]["heard"][:2].tolist(), float(rows[0]["diff"])
    (6, [0.51, nan], nan)
    """
    if isinstance(records, np.ndarray) and records.dtype == ROW_DTYPE:
        return records
    records = list(records)
    rows = empty_rows(len(records))
    for k, r in enumerate(records):
        problem = _record_problem(r)
        if problem is not None and problems is not None:
            problems.setdefault(k, problem)
        if not isinstance(r, dict):
            continue
        out = rows[k]
        for key in ("row", "bar", "step"):
            v = r.get(key)
            out[key] = int(v) if _is_number(v) and math.isfinite(v) and abs(v) < 2**31 else -1
        for key in _TIMES:
            v = r.get(key)
            out[key] = float(v) if _is_number(v) else np.nan
        d = r.get("diff")
        out["diff"] = float(d) if _is_number(d) else np.nan
        f = r.get("features")
        if isinstance(f, list) and len(f) == N_FEATURES and all(_is_number(v) for v in f):
            out["features"] = f
        heard = r.get("onsets")
        if isinstance(heard, list):
            good = sorted(float(v) for v in heard if _is_number(v))[:MAX_HEARD]
            out["heard"][:len(good)] = good
    return rows


def row_record(row) -> dict:
    """One take row as the JSON object of its line (features to 6 decimals, NaN diff → null)."""
    diff = float(row["diff"])
    return {"row": int(row["row"]), "bar": int(row["bar"]), "step": int(row["step"]),
            "features": [round(float(v), 6) for v in row["features"]],
            "yhat": float(row["yhat"]), "notated": float(row["notated"]),
            "intended": float(row["intended"]), "played": float(row["played"]),
            "onsets": [float(v) for v in row["heard"] if math.isfinite(v)],
            "diff": None if math.isnan(diff) else diff}


def heard_onsets(rows) -> np.ndarray:
    """Every partner onset the rows heard in their diff windows (s), sorted."""
    h = np.asarray(as_rows(rows)["heard"], np.float64).ravel()
    return np.sort(h[np.isfinite(h)])


# ----------------------------------------------------------------------------- writing

class TakeWriter:
    """Append rows to a take file from a background thread.

    ``row(r)`` never blocks and never touches the disk: it puts the row on
    a queue (the engine passes a row of its own preallocated array, which it
    does not change afterwards). The thread writes rows as they come and
    flushes when a row starts a new bar (and at close).
    """

    def __init__(self, path, header):
        self.path = Path(path)
        if isinstance(header, dict):
            header = TakeHeader.from_dict(header)
        if self.path.exists():
            raise TakeError(f"{self.path}: a take is already there; takes are never overwritten")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "x", encoding="utf-8")
            self._file.write(json.dumps({"type": "take", **header.to_dict()}) + "\n")
            self._file.flush()
        except OSError as e:
            raise TakeError(f"{self.path}: cannot write the take ({e.strerror or e})") from None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._bar = None
        self.rows_written = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="take-writer", daemon=True)
        self._thread.start()

    def row(self, row) -> None:
        """Queue one row (a :data:`ROW_DTYPE` row, or a record dict); returns at once."""
        self._queue.put(as_rows([row])[0] if isinstance(row, dict) else row)

    def _run(self) -> None:
        while True:
            row = self._queue.get()
            if row is None:
                return
            try:
                bar = int(row["bar"])
                if bar != self._bar and self._bar is not None:
                    self._file.flush()  # the previous bar is complete: make it survive a crash
                self._bar = bar
                self._file.write(json.dumps({"type": "row", **row_record(row)}) + "\n")
                self.rows_written += 1
            except (OSError, ValueError, TypeError) as e:
                # Disk full or the like: the take goes on, the problem is reported at close.
                self.error = f"{self.path}: {e}"

    def close(self, end=None) -> None:
        """Write the closing line, flush, and make the take read-only."""
        if isinstance(end, dict) or end is None:
            end = TakeEnd.from_dict(end or {})
        self._queue.put(None)
        self._thread.join()
        self._file.write(json.dumps({"type": "end", **end.to_dict()}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


# ----------------------------------------------------------------------------- reading

@dataclass
class Take:
    """A take as read back from disk (or built in memory: headers, ends and rows as dicts are converted)."""

    header: TakeHeader
    rows: np.ndarray                     # ROW_DTYPE, in file order
    end: TakeEnd | None = None           # None: no closing line (a crash)
    dropped_lines: int = 0
    problems: list[str] = field(default_factory=list)
    row_problems: dict = field(default_factory=dict)   # position in rows -> first problem

    def __post_init__(self):
        if isinstance(self.header, dict):
            self.header = TakeHeader.from_dict(self.header)
        if isinstance(self.end, dict):
            self.end = TakeEnd.from_dict(self.end)
        if not (isinstance(self.rows, np.ndarray) and self.rows.dtype == ROW_DTYPE):
            self.rows = as_rows(self.rows, self.row_problems)

    @property
    def complete(self) -> bool:
        return self.end is not None

    @property
    def partner_onsets(self) -> np.ndarray:
        """Every partner onset of the take (s), from its closing line (empty without one)."""
        return self.end.partner_onsets if self.end is not None else np.zeros(0)


def read_take(path) -> Take:
    """Read a take file (or a take folder), complete or cut short by a crash.

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
    from .limits import MAX_TAKE_BYTES, check_file_size

    check_file_size(path, MAX_TAKE_BYTES, "take file", error=TakeError)
    header, records, end, dropped, problems = None, [], None, 0, []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    dropped += 1
                    problems.append(f"{path}:{n}: unreadable line dropped (take cut short?)")
                    continue
                kind = rec.pop("type", None) if isinstance(rec, dict) else None
                if n == 1:
                    if kind != "take":
                        raise TakeError(f"{path}: not a rolypoly take (no header line)")
                    header = TakeHeader.from_dict(rec)
                elif kind == "row":
                    records.append(rec)
                elif kind == "end":
                    end = TakeEnd.from_dict(rec)
    except OSError as e:
        raise TakeError(f"{path}: unreadable ({e.strerror or e})") from None
    if header is None:
        raise TakeError(f"{path}: empty take file")
    take = Take(header, records, end, dropped, problems)
    return take


# ----------------------------------------------------------------------------- checking

@dataclass
class TakeCheck:
    """Verdict on a take: the ``rows`` to train on, whether it is ``usable``, and why."""

    rows: np.ndarray
    usable: bool
    reasons: list = field(default_factory=list)


def validate_take(take: Take, score_hash: str, n_rows: int) -> TakeCheck:
    """Check a take before it trains anything; keep what can be used.

    * recorded against another score (``score_hash`` in its header differs,
      or is missing): refused;
    * rows not numbered 0, 1, 2 … or beyond the score, missing fields,
      NaN or infinite numbers: refused, naming the row;
    * cut short (no closing line, or a closing line with an ``error``) before
      the score's last row: the last bar may be partial, so only the bars
      before it are used, and the reasons say so;
    * no partner onset in any hit window: not usable (nothing to learn).

    Parameters
    ----------
    take : Take
        As read by :func:`read_take`.
    score_hash : str
        Hash of the score the take should have played (:func:`rolypoly.session.score_hash`).
    n_rows : int
        Rows in that score.

    Returns
    -------
    TakeCheck
        ``rows`` (possibly fewer than the take's), ``usable``, ``reasons``.

    Examples
    --------
    >>> rows = [{"row": i, "bar": i // 2, "step": 12 * (i % 2), "yhat": 0.0, "notated": i * 1.0,
    ...          "diff": 0.01} for i in range(6)]
    >>> take = Take(TakeHeader(score_hash="abc"), rows)
    >>> check = validate_take(take, "abc", n_rows=8)
    >>> check.usable, len(check.rows), check.reasons[0][:30]
    (True, 4, 'take cut short (no closing lin')
    >>> validate_take(take, "xyz", n_rows=8).usable
    False
    """
    header, rows, end = take.header, take.rows, take.end
    reasons = list(take.problems)

    def refuse(why: str) -> TakeCheck:
        return TakeCheck(rows[:0], False, reasons + [why])

    theirs = header.score_hash
    if theirs is None:
        return refuse("take has no score hash: cannot tell which score it was recorded against")
    if theirs != score_hash:
        return refuse(f"take was recorded against another score ({header.score or '?'!s}, "
                      f"hash {theirs}; this score's hash is {score_hash})")
    if header.rows is not None and header.rows != n_rows:
        return refuse(f"take was of a score with {header.rows} rows; this one has {n_rows}")
    if not len(rows):
        return refuse("take has no rows")
    if take.row_problems:
        k = min(take.row_problems)
        number = int(rows[k]["row"]) if rows[k]["row"] >= 0 else k
        return refuse(f"row {number}: {take.row_problems[k]}")
    out_of_order = np.flatnonzero(rows["row"] != np.arange(len(rows)))
    if len(out_of_order):
        k = int(out_of_order[0])
        return refuse(f"rows are not in order: row {int(rows[k]['row'])} where row {k} was expected")
    if len(rows) > n_rows:
        return refuse(f"take has {len(rows)} rows; the score has only {n_rows}")

    ended_badly = end is None or end.error is not None
    how = "no closing line" if end is None else f"ended with an error: {end.error}"
    if ended_badly and len(rows) < n_rows:
        last_bar = int(rows[-1]["bar"])   # from 0 in the take; said from 1, as musicians count bars
        kept = rows[rows["bar"] != last_bar]
        reasons.append(f"take cut short ({how}): using its {len(kept)} rows of complete bars, "
                       f"dropped the last, possibly partial bar {last_bar + 1} ({len(rows) - len(kept)} rows)")
        rows = kept
        if not len(rows):
            return TakeCheck(rows, False, reasons + ["no complete bar left"])
    elif ended_badly:
        reasons.append(f"take has {how}, but all {n_rows} rows are there: using them all")
    elif end.stopped_early:
        reasons.append(f"take was stopped early: using its {len(rows)} of {n_rows} rows")

    if not np.isfinite(rows["diff"]).any():
        return TakeCheck(rows, False, reasons + [
            f"no partner onset in any hit window (0 of {len(rows)} hits): no update"])
    return TakeCheck(rows, True, reasons)
