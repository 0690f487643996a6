"""JSON files that several writers share: atomic replacement, and edits under a lock.

A session's ``session.json`` is changed by the command line, the OSC service
and a fine-tune running on a thread, sometimes at once. Two rules keep every
change:

* a file is replaced atomically (written beside it, then renamed): a reader
  or a crash sees the old file or the new one, never half of one;
* an edit re-reads the file under an exclusive lock, changes only what it is
  about, and writes it back before letting go (:func:`edit_json`), so an edit
  made meanwhile by someone else is never overwritten by a stale copy.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "settings.json"
>>> write_json(path, {"A": 1.0})
>>> edit_json(path, lambda d: d.update(B=0.5))
{'A': 1.0, 'B': 0.5}
>>> read_json(path)
{'A': 1.0, 'B': 0.5}
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from pathlib import Path

from .errors import RolypolyError


class JsonFileError(RolypolyError):
    """A JSON file that cannot be read or written (one line, naming it)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def write_json(path, data) -> None:
    """Replace ``path`` with ``data`` as indented JSON, atomically.

    Raises
    ------
    JsonFileError
        It cannot be written, or ``data`` is not JSON (NaN and infinities are refused).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JsonFileError(f"{path}: cannot write ({_one_line(e)})") from None


def finite(data):
    """``data`` with every NaN or infinite float replaced by None (JSON has no such numbers).

    >>> finite({"margin": float("inf"), "losses": [1.0, float("nan")]})
    {'margin': None, 'losses': [1.0, None]}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def read_json(path) -> dict:
    """A JSON object from ``path``.

    Raises
    ------
    JsonFileError
        Missing, unreadable, larger than :data:`rolypoly.limits.MAX_JSON_BYTES`, not JSON, or not an object.
    """
    from .limits import MAX_JSON_BYTES, check_file_size

    path = Path(path)
    try:
        check_file_size(path, MAX_JSON_BYTES, "JSON file", error=JsonFileError)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise JsonFileError(f"{path}: unreadable ({_one_line(e)})") from None
    if not isinstance(data, dict):
        raise JsonFileError(f"{path}: not a JSON object")
    return data


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock tied to ``path`` (a ``.NAME.lock`` file beside it) for the block.

    Advisory (``flock``): every writer of the file takes it, threads and processes alike.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise JsonFileError(f"{path}: cannot lock ({_one_line(e)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def edit_json(path, change, *, missing_ok: bool = False) -> dict:
    """Re-read ``path`` under its lock, apply ``change(data)`` (in place), write it back; the new data.

    ``change`` may raise to abandon the edit (nothing is written). With
    ``missing_ok`` a missing file starts as ``{}``.
    """
    path = Path(path)
    with locked(path):
        data = {} if missing_ok and not path.exists() else read_json(path)
        change(data)
        write_json(path, data)
    return data
