"""A session: one piece, its takes, and the agent that learns it take after take.

A session folder (layout in ``sessions/README.md``) holds the score, every
take, and every *model version* the between-take fine-tuning produced::

    sessions/<name>/
      session.json      score hash, A/B, current model version, off-beat ledger
      score.mid         the drum part as the session started
      takes/NNN/        what each take left behind (rolypoly.realtime.duet.play_take)
      models/NNN/       weights.safetensors + version.json, never overwritten

Version 000 is the pretrained agent the session started from (a copy, so a
session keeps playing the same way whatever happens to the shipped
weights). Each ``finetune`` writes the next version; an update the safety
checks refuse is kept for inspection but the session stays where it was.
A version whose weights no longer load (or no longer match their
recorded hash) is skipped: the session falls back to the last good one.

Off-beat partner notes (paper footnote 6) grow the score: a take proposes
them as *tentative* no-hit rows, which the next take plays (silently) and
measures; a later take that hears the partner there again makes them
*permanent*. ``Session.score()`` is the score with those rows.

Who does what: this module is the folder and ``session.json``, its only
writer (every change re-reads the file under a lock and writes it back
atomically, :mod:`rolypoly.jsonfile`, so the command line, the service and a
fine-tune on a thread never undo each other's changes). The model versions
are :mod:`rolypoly.versions`, the grown score :mod:`rolypoly.score_growth`,
learning from a take and exporting :mod:`rolypoly.learning`.

Examples
--------
>>> s = Session.open("sessions/song", "song.mid")      # doctest: +SKIP
>>> report = s.finetune()                                # doctest: +SKIP
>>> report["accepted"], report["version"]                # doctest: +SKIP
(True, 1)
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np

from .errors import RolypolyError
from .grid import STEPS_PER_BAR
from .jsonfile import JsonFileError, edit_json, read_json, write_json
from .limits import MAX_BARS, MAX_ROWS
from .paths import checked_path
from .score import Score, load_score
from .score_growth import OffbeatLedger, with_rows
from .versions import MODELS, VERSION_FILE, WEIGHTS_FILE, ModelVersions, now, numbered  # noqa: F401

SESSION_FILE = "session.json"
TAKES = "takes"


class SessionError(RolypolyError):
    """A session folder that cannot be used as asked (one line, naming it)."""


# ----------------------------------------------------------------------------- the score

def score_hash(score: Score) -> str:
    """Identity of a piece: its rows and meters, not its file name nor its tempo.

    A session may play its score faster or slower; it is the same piece.
    """
    h = hashlib.sha256()
    for a in (score.hits, score.bar, score.step, score.timesig):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- session.json

#: The learning weights A and B a session stores (eqs. 1-2) stay within ± this.
AB_LIMIT = 1000.0
#: Largest model version number (``models/NNN``).
MAX_VERSION = 99_999


def check_meta(meta: dict, where, score: Score | None = None) -> dict:
    """``meta`` if it follows session.json's schema; else a SessionError naming the field.

    ============== ==========================================================
    field          what it may hold
    ============== ==========================================================
    score          the score's name: a non-empty string (required)
    score_hash     :func:`score_hash` of score.mid: a non-empty string (required)
    created        a string (the time)
    model          the version the next take plays: a whole number 0-99999, or null
    A, B           learning weights: finite numbers within ±1000
    history        a list of objects (fine-tunes, reverts)
    offbeat        the off-beat ledger (:class:`~rolypoly.score_growth.OffbeatLedger`)
    pattern        {"humanize": true/false, "seed": whole number, "temperature": number >= 0}
    score_versions {hash: [[bar, step], ...]}: the silent rows of each grown score played
    onset_calibration the onset detector's calibration (``rolypoly onsets --calibrate``):
                   an object whose "threshold" is a number between 0 and 1, "silence_db"
                   a finite number, "instrument" a string
    ============== ==========================================================

    Other fields are kept as they are. Positions (bar, step) must be on
    the grid (step 0-23) and, given ``score``, within its bars.

    Examples
    --------
    >>> check_meta({"score": "song", "score_hash": "ab12", "model": 0, "A": 0.5}, "session.json")["model"]
    0
    >>> check_meta({"score": "song", "score_hash": "ab12", "model": "abc"}, "session.json")
    Traceback (most recent call last):
    ...
    rolypoly.session.SessionError: session.json: "model" must be a model version number (0-99999), not 'abc'
    """
    def bad(key, problem):
        raise SessionError(f"{where}: \"{key}\" {problem}")

    def shown(value) -> str:
        text = json.dumps(value, allow_nan=True)
        return repr(value) if isinstance(value, str) else text if len(text) <= 40 else text[:37] + "..."

    for key in ("score", "score_hash"):
        if not (isinstance(meta.get(key), str) and meta[key].strip()):
            bad(key, f"must be a non-empty string, not {shown(meta.get(key))}")
    if "created" in meta and not isinstance(meta["created"], str):
        bad("created", f"must be a string (a time), not {shown(meta['created'])}")
    model = meta.get("model")
    if model is not None and not (_whole(model) and 0 <= model <= MAX_VERSION):
        bad("model", f"must be a model version number (0-{MAX_VERSION}), not {shown(model)}")
    for key in ("A", "B"):
        if key in meta and not (_number(meta[key]) and abs(meta[key]) <= AB_LIMIT):
            bad(key, f"must be a finite number within ±{AB_LIMIT:g}, not {shown(meta[key])}")
    history = meta.get("history", [])
    if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        bad("history", f"must be a list of objects, not {shown(history)}")
    pattern = meta.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, dict):
            bad("pattern", f"must be an object {{humanize, seed, temperature}}, not {shown(pattern)}")
        if not isinstance(pattern.get("humanize", False), bool):
            bad("pattern", f"humanize must be true or false, not {shown(pattern['humanize'])}")
        if not _whole(pattern.get("seed", 0)):
            bad("pattern", f"seed must be a whole number, not {shown(pattern['seed'])}")
        t = pattern.get("temperature", 0.0)
        if not (_number(t) and 0 <= t <= 100):
            bad("pattern", f"temperature must be a number 0-100, not {shown(t)}")
    bars = score.n_bars if score is not None else MAX_BARS
    if meta.get("offbeat"):
        try:
            ledger = OffbeatLedger.from_dict(meta["offbeat"])
        except ValueError as e:
            bad("offbeat", str(e))
        _check_positions("offbeat", list(ledger.notes), bars, bad)
    versions = meta.get("score_versions", {})
    if not isinstance(versions, dict):
        bad("score_versions", f"must be an object {{hash: [[bar, step], ...]}}, not {shown(versions)}")
    for h, extra in versions.items():
        if not (isinstance(extra, list) and all(isinstance(p, list) and len(p) == 2 and all(map(_whole, p))
                                                for p in extra)):
            bad("score_versions", f"{h}: must be a list of [bar, step] pairs")
        _check_positions("score_versions", extra, bars, bad)
    calibration = meta.get("onset_calibration")
    if calibration is not None:
        if not isinstance(calibration, dict):
            bad("onset_calibration", f"must be an object (rolypoly onsets --calibrate), not {shown(calibration)}")
        t = calibration.get("threshold", 0.5)
        if not (_number(t) and 0 < t < 1):
            bad("onset_calibration", f"threshold must be a number between 0 and 1, not {shown(t)}")
        if not _number(calibration.get("silence_db", 0.0)):
            bad("onset_calibration", f"silence_db must be a finite number, not {shown(calibration.get('silence_db'))}")
        if not isinstance(calibration.get("instrument", ""), str):
            bad("onset_calibration", f"instrument must be a string, not {shown(calibration.get('instrument'))}")
    return meta


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_positions(key: str, positions, bars: int, bad) -> None:
    if len(positions) > MAX_ROWS:
        bad(key, f"holds {len(positions)} rows, more than the {MAX_ROWS} a score may have")
    for b, s in positions:
        if not (0 <= b < bars and 0 <= s < STEPS_PER_BAR):
            bad(key, f"position bar {b} step {s} is not on the score's grid (bars 0-{bars - 1}, steps 0-"
                     f"{STEPS_PER_BAR - 1})")


# ----------------------------------------------------------------------------- takes

def take_folders(session_folder) -> list[Path]:
    """The ``takes/NNN`` folders of a session folder, in take order (none: empty list)."""
    takes = Path(session_folder) / TAKES
    return [takes / f"{k:03d}" for k in numbered(takes)]


# ----------------------------------------------------------------------------- the session

class Session:
    """A session folder (see the module docstring).

    Use :meth:`open` to create or reopen one; the constructor only reopens.
    """

    def __init__(self, folder):
        self.folder = checked_path(folder, "session folder")
        meta_path = self.folder / SESSION_FILE
        if not meta_path.is_file():
            raise SessionError(f"{self.folder}: not a session (no {SESSION_FILE})")
        self.base_score = None
        self.meta = self._read()
        if not (self.folder / "score.mid").is_file():
            raise SessionError(f"{self.folder}: the session's score.mid is missing")
        self.base_score = load_score(self.folder / "score.mid")
        self.base_score.name = self.meta.get("score", self.base_score.name)
        if self.meta.get("score_hash") != score_hash(self.base_score):
            raise SessionError(f"{self.folder}: score.mid no longer matches the session "
                               "(hash differs): it was edited after the session began")
        self._check(self.meta)  # now against the score's bars too
        self.models = ModelVersions(self.folder)
        (self.folder / TAKES).mkdir(exist_ok=True)

    # -- creating and opening
    @classmethod
    def open(cls, folder, score_path=None) -> "Session":
        """Reopen ``folder``, or create it from ``score_path``.

        Reopening with a score checks that it is the session's piece.
        """
        folder = checked_path(folder, "session folder")
        left = [name for name in (MODELS, TAKES) if (folder / name).is_dir() and any((folder / name).iterdir())]
        if left and not (folder / SESSION_FILE).exists():
            # Starting it over would forget which version plays and how the score grew.
            raise SessionError(f"{folder}: {SESSION_FILE} is missing but the folder holds a session "
                               f"({' and '.join(left)}); restore {SESSION_FILE} or use another folder")
        if (folder / SESSION_FILE).is_file():
            session = cls(folder)
            if score_path is not None:
                score = load_score(score_path)
                if score_hash(score) != session.meta.get("score_hash"):
                    raise SessionError(f"{folder}: this session is of another score "
                                       f"({session.meta.get('score')}); use a new session for {score_path}")
            return session
        if score_path is None:
            raise SessionError(f"{folder}: no such session (give a score to create it)")
        score = load_score(score_path)
        folder.mkdir(parents=True, exist_ok=True)
        if not ((folder / "score.mid").exists() and (folder / "score.mid").samefile(score_path)):
            shutil.copyfile(score_path, folder / "score.mid")
        write_json(folder / SESSION_FILE, {"score": score.name, "score_hash": score_hash(score), "created": now()})
        return cls(folder)

    # -- session.json: one writer
    def _read(self) -> dict:
        try:
            return self._check(read_json(self.folder / SESSION_FILE))
        except JsonFileError as e:
            raise SessionError(str(e)) from None

    def _check(self, meta: dict) -> dict:
        """``meta`` checked against the schema (:func:`check_meta`), positions against the score."""
        return check_meta(meta, self.folder / SESSION_FILE, self.base_score)

    def _edit(self, change) -> dict:
        """Change session.json: re-read it under its lock, apply ``change(meta)``, write it back.

        Every change to the session goes through here, so a change made
        meanwhile by another writer (the service, a fine-tune on a thread,
        another command) is never lost to a stale copy. The file is checked
        against the schema as read and as changed: a bad field found or
        made is a SessionError and nothing is written. ``self.meta`` is the
        file as written.
        """
        def checked(meta):
            self._check(meta)
            change(meta)
            self._check(meta)

        try:
            self.meta = edit_json(self.folder / SESSION_FILE, checked)
        except JsonFileError as e:
            raise SessionError(str(e)) from None
        return self.meta

    def reload(self) -> dict:
        """Read session.json again (what other writers changed since)."""
        self.meta = self._read()
        return self.meta

    def update(self, **fields) -> dict:
        """Set top-level fields of session.json (other fields kept, whoever wrote them)."""
        return self._edit(lambda meta: meta.update(fields))

    def log(self, report: dict, reason: str) -> dict:
        """Close a learning report: its reason, the version the session plays now, a history entry."""
        report["reason"] = reason

        def change(meta):
            report["current"] = meta.get("model")
            entry = {key: report.get(key) for key in ("take", "accepted", "version", "current", "reason")}
            meta.setdefault("history", []).append({**entry, "at": now()})

        self._edit(change)
        return report

    @property
    def name(self) -> str:
        return self.folder.name

    # -- learning settings
    @property
    def ab(self) -> tuple[float, float]:
        """A and B of eqs. (1)-(2) for this session (1, 1 unless set)."""
        return self.stored_ab() or (1.0, 1.0)

    def stored_ab(self) -> tuple[float, float] | None:
        """A and B as stored in session.json, or None when they are not both set and finite."""
        try:
            a, b = float(self.meta["A"]), float(self.meta["B"])
        except (KeyError, TypeError, ValueError):
            return None
        return (a, b) if math.isfinite(a) and math.isfinite(b) else None

    def set_ab(self, a: float, b: float) -> None:
        """Store A and B (finite, within ±:data:`AB_LIMIT`; else a SessionError and nothing written)."""
        self.update(A=float(a), B=float(b))

    # -- the score as it has grown
    def ledger(self) -> OffbeatLedger:
        return self.ledger_of(self.meta)

    def grow_score(self, take: int, rows, notes) -> tuple[dict, np.ndarray]:
        """Record a take's off-beat notes and its verdict on the tentative rows it played.

        A tentative row heard again becomes permanent, one played in silence
        is dropped (see :mod:`rolypoly.score_growth`). Returns what changed
        and which of ``rows`` may train (not the still tentative ones).
        """
        change: dict = {}

        def grow(meta):
            ledger = self.ledger_of(meta)
            tentative = set(ledger.tentative())
            keys = list(zip(rows["bar"].tolist(), rows["step"].tolist()))
            heard = np.isfinite(rows["diff"])
            confirmed = [k for k, h in zip(keys, heard) if k in tentative and h]
            silent = [k for k, h in zip(keys, heard) if k in tentative and not h]
            change.update(ledger.propose(take, list(notes) + confirmed))
            for key in silent:  # played as a tentative row and the partner was not there: dropped
                ledger.notes.pop(key, None)
            change.update(dropped=silent, permanent=len(ledger.grown_rows()), tentative=len(ledger.tentative()))
            meta["offbeat"] = ledger.to_dict()

        self._edit(grow)
        return change, self.ledger().trainable_mask(rows["bar"], rows["step"])

    def ledger_of(self, meta: dict) -> OffbeatLedger:
        data = meta.get("offbeat")
        try:
            return OffbeatLedger.from_dict(data) if data else OffbeatLedger()
        except ValueError as e:
            raise SessionError(f"{self.folder / SESSION_FILE}: off-beat ledger: {e}") from None

    @property
    def pattern(self) -> dict:
        """How the score is played before the agent's offsets: ``{"humanize": bool, "seed", "temperature"}``."""
        p = self.meta.get("pattern") or {}
        return {"humanize": bool(p.get("humanize", False)), "seed": int(p.get("seed", 0)),
                "temperature": float(p.get("temperature", 0.0))}

    def set_pattern(self, *, humanize: bool, seed: int = 0, temperature: float = 0.0) -> None:
        """Play the score as written, or humanized by the groove model (per-class velocities and offsets)."""
        if humanize:
            from .groove_model import default_groove_weights

            if not default_groove_weights("humanize").is_file():
                raise SessionError("no humanize model: train it with rolypoly pretrain groove --task humanize")
        self.update(pattern={"humanize": bool(humanize), "seed": int(seed), "temperature": float(temperature)})

    def score(self, tempo_bpm: float | None = None) -> Score:
        """The session's score, with its tentative and permanent off-beat rows, humanized if set."""
        ledger = self.ledger()
        grown = with_rows(self.base_score, ledger.grown_rows() + ledger.tentative())
        pattern = self.pattern
        if pattern["humanize"]:
            from .pattern import humanized_score

            grown = humanized_score(grown, self.folder / "score.mid", seed=pattern["seed"],
                                    temperature=pattern["temperature"])
        if tempo_bpm is not None:
            from .score import at_tempo

            grown = at_tempo(grown, tempo_bpm)
        return grown

    def remember_score(self, score: Score) -> str:
        """Record a score version a take is about to play (so the take can be checked later)."""
        h = score_hash(score)
        if h not in self.meta.get("score_versions", {}) and h != self.meta.get("score_hash"):
            extra = sorted(set(zip(score.bar.tolist(), score.step.tolist()))
                           - set(zip(self.base_score.bar.tolist(), self.base_score.step.tolist())))
            self._edit(lambda meta: meta.setdefault("score_versions", {}).setdefault(
                h, [[int(b), int(s)] for b, s in extra]))
        return h

    def score_of_hash(self, h: str) -> Score | None:
        """The score version with hash ``h`` (None: not a score of this session)."""
        if h == self.meta.get("score_hash"):
            return self.base_score
        extra = self.meta.get("score_versions", {}).get(h)
        if extra is None:
            return None
        return with_rows(self.base_score, [tuple(p) for p in extra])

    # -- takes
    def take_dirs(self) -> list[Path]:
        return take_folders(self.folder)

    def next_take_dir(self) -> Path:
        taken = numbered(self.folder / TAKES)
        return self.folder / TAKES / f"{(taken[-1] + 1) if taken else 0:03d}"

    def take_dir(self, take: int | None = None) -> Path:
        dirs = self.take_dirs()
        if not dirs:
            raise SessionError(f"{self.folder}: no takes yet (play one first)")
        if take is None:
            return dirs[-1]
        path = self.folder / TAKES / f"{int(take):03d}"
        if path not in dirs:
            raise SessionError(f"{self.folder}: no take {take} (takes: "
                               f"{', '.join(str(int(p.name)) for p in dirs)})")
        return path

    # -- model versions (the registry is rolypoly.versions; which one plays is session.json's)
    def version_dir(self, k: int) -> Path:
        return self.models.dir(k)

    def versions(self) -> list[dict]:
        """Every model version's record, oldest first; unreadable ones flagged."""
        return self.models.records()

    def ensure_start(self, kind: str = "lstm", weights=None) -> int:
        """Version 000: a copy of the pretrained agent the session starts from."""
        self.models.create_start(kind, weights)
        self._edit(lambda meta: meta.update(model=0) if meta.get("model") is None else None)
        return 0

    def current_version(self) -> tuple[int | None, list[str]]:
        """The version the session plays and any warnings about versions skipped on the way."""
        wanted = self.meta.get("model")
        if wanted is None:
            return None, []
        return self.models.usable(int(wanted))

    def agent(self, kind: str | None = None, weights=None):
        """The agent the next take plays: (agent, version, warnings).

        Explicit ``weights`` win (version None). Otherwise the session's current
        version, created from the pretrained ``kind`` on first use.
        """
        if weights is not None:
            from .agents import load_agent  # torch: only when an agent is asked for

            return load_agent(weights), None, []
        if self.meta.get("model") is None:
            self.ensure_start(kind or "lstm")
        k, warnings = self.current_version()
        if k is None:
            raise SessionError(f"{self.folder}: no usable model version ({'; '.join(warnings)})")
        agent = self.models.load(k)
        if kind is not None and agent.kind != kind:
            raise SessionError(f"{self.folder}: the session plays a {agent.kind} agent (version {k}); "
                               f"asked for {kind}: use another session or --weights")
        return agent, k, warnings

    def revert(self, k: int) -> int:
        """Make version ``k`` current again (nothing is deleted)."""
        known = self.models.numbers()
        if int(k) not in known:
            raise SessionError(f"{self.folder}: no model version {k} (versions: "
                               f"{', '.join(str(v) for v in known) or 'none'})")
        problem = self.models.check(int(k))
        if problem:
            raise SessionError(f"model version {k} cannot be used: {problem}")

        def change(meta):
            meta["model"] = int(k)
            meta.setdefault("history", []).append({"revert_to": int(k), "at": now()})

        self._edit(change)
        return int(k)

    def history_mark(self) -> int:
        """Where session.json's history ends now (see :meth:`play_version_if_still`)."""
        return len(self.reload().get("history", []))

    def play_version_if_still(self, k: int, parent: int | None, since: int | None = None) -> bool:
        """Play version ``k`` from now on, unless the player moved the session meanwhile; whether it plays.

        The session moved when it no longer plays ``parent`` (the version
        ``k`` grew from), or when a revert was made after the history mark
        ``since``: the player's choice stays.
        """
        moved = []

        def change(meta):
            history = meta.get("history", [])
            reverted = since is not None and any("revert_to" in h for h in history[since:] if isinstance(h, dict))
            if reverted or (parent is not None and meta.get("model") is not None and int(meta["model"]) != int(parent)):
                moved.append(meta.get("model"))
                return
            meta["model"] = int(k)

        self._edit(change)
        return not moved

    # -- learning between takes (rolypoly.learning)
    def finetune(self, take: int | None = None, *, epochs: int | None = None, lr: float | None = None,
                 A: float | None = None, B: float | None = None, cancel: bool = False,
                 centre: str = "all", margin: float | None = None, dataset=None, mse_cache=None,
                 progress=None) -> dict:
        """Learn from a take (default: the latest) and write the next model version.

        The knobs are :class:`rolypoly.learning.LearningSettings`' (None: its
        default); see :func:`rolypoly.learning.learn_from_take` for the rest.
        """
        from .learning import LearningSettings, learn_from_take

        settings = LearningSettings.given(epochs=epochs, lr=lr, margin=margin, A=A, B=B, cancel=cancel,
                                          centre=centre)
        return learn_from_take(self, take, settings, dataset=dataset, mse_cache=mse_cache, progress=progress)

    def export_midi(self, path, *, take: int | None = None) -> Path:
        """The current performance as MIDI (:func:`rolypoly.learning.export_performance`)."""
        from .learning import export_performance

        return export_performance(self, path, take=take)
