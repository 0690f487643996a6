"""Where rolypoly reads and writes: the one place that knows the folders.

Nothing here depends on where the source files sit, except the files the
package ships (weights, the demo score and partner), which are read, never
written. What rolypoly writes goes where the user says:

=================  =============================================================
sessions           ``--sessions DIR`` (or ``--session DIR``), else
                   ``$ROLYPOLY_SESSIONS``, else ``sessions/`` in the current folder
Groove MIDI        ``--gmd DIR``, else ``$ROLYPOLY_GMD``, else ``groove/`` in the
Dataset            user data folder (where ``rolypoly data gmd --download`` puts it)
trained weights    ``--out DIR``, else ``$ROLYPOLY_WEIGHTS``, else ``weights/`` in the
                   user data folder (the shipped ones are never overwritten by default)
caches             ``$ROLYPOLY_CACHE``, else the user cache folder
=================  =============================================================

The user data and cache folders are the platform's (``platformdirs``:
``~/.local/share/rolypoly`` and ``~/.cache/rolypoly`` on Linux).

Examples
--------
>>> import os
>>> os.environ["ROLYPOLY_SESSIONS"] = "/tmp/my-sessions"
>>> str(sessions_dir())
'/tmp/my-sessions'
>>> str(sessions_dir("gig"))
'gig'
>>> del os.environ["ROLYPOLY_SESSIONS"]
>>> SHIPPED_WEIGHTS.name, DEMO_SCORE.name
('weights', 'demo_score.mid')
"""
from __future__ import annotations

import os
from pathlib import Path

#: Files shipped inside the package (read only).
PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_WEIGHTS = PACKAGE_DIR / "weights"
DATA_DIR = PACKAGE_DIR / "data"
DEMO_SCORE = DATA_DIR / "demo_score.mid"
DEMO_PARTNER = DATA_DIR / "demo_partner.flac"

APP = "rolypoly"


def _env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def user_data_dir() -> Path:
    """The user's rolypoly data folder (not created here)."""
    from platformdirs import user_data_path

    return Path(user_data_path(APP, appauthor=False))


def sessions_dir(given=None) -> Path:
    """The sessions folder: ``given``, else $ROLYPOLY_SESSIONS, else ./sessions."""
    if given is not None:
        return Path(given)
    return _env("ROLYPOLY_SESSIONS") or Path.cwd() / "sessions"


def gmd_dir(given=None) -> Path:
    """Where the Groove MIDI Dataset is looked for: ``given``, $ROLYPOLY_GMD, the user data folder."""
    if given is not None:
        return Path(given)
    return _env("ROLYPOLY_GMD") or user_data_dir() / "groove"


def weights_out_dir(given=None) -> Path:
    """Where training writes weights: ``given``, $ROLYPOLY_WEIGHTS, the user data folder."""
    if given is not None:
        return Path(given)
    return _env("ROLYPOLY_WEIGHTS") or user_data_dir() / "weights"


def cache_dir() -> Path:
    """Caches (parsed datasets): $ROLYPOLY_CACHE, else the user cache folder."""
    env = _env("ROLYPOLY_CACHE")
    if env is not None:
        return env
    from platformdirs import user_cache_path

    return Path(user_cache_path(APP, appauthor=False))


#: Longest file name and path the system takes (Linux: 255 bytes a name, 4096 a path).
NAME_MAX, PATH_MAX = 255, 4096


def checked_path(path, what: str = "path") -> Path:
    """``path`` as a Path, refused on one line when the system could not open it by that name.

    An over-long name would otherwise surface as ``OSError: [Errno 36]``
    from wherever it is first used.

    >>> checked_path("sessions/song").as_posix()
    'sessions/song'
    >>> checked_path("x" * 300 + ".mid", "score")
    Traceback (most recent call last):
    ...
    rolypoly.errors.RolypolyError: score xxxxxxxxxxxxxxxxxxxx...: file name too long (304 bytes, at most 255)
    """
    from .errors import RolypolyError

    path = Path(path)
    text = os.fsencode(path)
    shown = str(path) if len(str(path)) <= 60 else str(path)[:20] + "..."
    if b"\0" in text:
        raise RolypolyError(f"{what} {shown!r}: contains a NUL byte")
    if len(text) > PATH_MAX:
        raise RolypolyError(f"{what} {shown}: path too long ({len(text)} bytes, at most {PATH_MAX})")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise RolypolyError(f"{what} {shown}: file name too long ({len(os.fsencode(part))} bytes, at most "
                                f"{NAME_MAX})")
    return path

