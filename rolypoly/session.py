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

Examples
--------
>>> s = Session.open("sessions/song", "song.mid")      # doctest: +SKIP
>>> report = s.finetune()                                # doctest: +SKIP
>>> report["accepted"], report["version"]                # doctest: +SKIP
(True, 1)
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .agents import default_weights, load_agent, save_agent
from .errors import CheckpointError, RolypolyError
from .jsonfile import JsonFileError, edit_json, read_json, write_json
from .grid import STEPS_PER_BAR
from .score import Score, load_score, write_midi

SESSION_FILE = "session.json"
MODELS = "models"
TAKES = "takes"
WEIGHTS_FILE = "weights.safetensors"
VERSION_FILE = "version.json"


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


def with_rows(score: Score, positions) -> Score:
    """The score with silent rows added at ``(bar, step)`` positions.

    A silent row sounds no drum, but the agent decides an offset there and
    the engine listens for the partner around it: that is how an off-beat
    partner note becomes part of what the drummer knows (footnote 6).
    Positions already in the score are ignored.

    Examples
    --------
    >>> grown = with_rows(score, [(0, 3)])   # doctest: +SKIP
    >>> len(grown) - len(score)               # doctest: +SKIP
    1
    """
    have = set(zip(score.bar.tolist(), score.step.tolist()))
    new = sorted({(int(b), int(s)) for b, s in positions} - have)
    if not new:
        return score
    tmap = score.tempo_map
    end = float(score.tick[-1] + score.bar_ticks[-1]) if len(score) else 0.0
    bar_starts, bar_lens, bar_ts = tmap.bars(max(end, 0.0) + 4 * tmap.ticks_per_beat * (max(b for b, _ in new) + 2))
    nb = np.array([b for b, _ in new])
    ns = np.array([s for _, s in new])
    if (ns < 0).any() or (ns >= STEPS_PER_BAR).any() or (nb < 0).any():
        raise ValueError(f"positions must be bar >= 0 and step 0..{STEPS_PER_BAR - 1}: {new}")
    ntick = bar_starts[nb] + ns * bar_lens[nb] / STEPS_PER_BAR
    bpm = tmap.bpm_at(ntick)
    added = {
        "hits": np.zeros((len(new), score.hits.shape[1]), dtype=score.hits.dtype),
        "velocities": np.zeros((len(new), score.velocities.shape[1]), dtype=score.velocities.dtype),
        "bar": nb, "step": ns, "onset_s": tmap.seconds(ntick), "duration_ms": np.zeros(len(new)),
        "tempo_bpm": bpm, "timesig": bar_ts[nb], "bar_ms": 60_000.0 / bpm * 4 * bar_ts[nb],
        "tick": ntick, "bar_ticks": bar_lens[nb], "played_offset": np.zeros(len(new)),
    }
    rows = {k: np.concatenate([getattr(score, k), v]) for k, v in added.items()}
    order = np.argsort(rows["tick"], kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    last = int(np.argmax(rows["tick"]))
    end_s = tmap.seconds(rows["tick"][last] - rows["step"][last] * rows["bar_ticks"][last] / STEPS_PER_BAR
                         + rows["bar_ticks"][last])
    rows["duration_ms"] = np.diff(np.append(rows["onset_s"], end_s)) * 1000.0
    return replace(score, **rows, warnings=list(score.warnings))


# ----------------------------------------------------------------------------- helpers

def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()




def _numbered(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def take_folders(session_folder) -> list[Path]:
    """The ``takes/NNN`` folders of a session folder, in take order (none: empty list)."""
    takes = Path(session_folder) / TAKES
    return [takes / f"{k:03d}" for k in _numbered(takes)]


# ----------------------------------------------------------------------------- the session

class Session:
    """A session folder (see the module docstring).

    Use :meth:`open` to create or reopen one; the constructor only reopens.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        meta_path = self.folder / SESSION_FILE
        if not meta_path.is_file():
            raise SessionError(f"{self.folder}: not a session (no {SESSION_FILE})")
        self.meta = self._read()
        if not (self.folder / "score.mid").is_file():
            raise SessionError(f"{self.folder}: the session's score.mid is missing")
        self.base_score = load_score(self.folder / "score.mid")
        self.base_score.name = self.meta.get("score", self.base_score.name)
        if self.meta.get("score_hash") != score_hash(self.base_score):
            raise SessionError(f"{self.folder}: score.mid no longer matches the session "
                               "(hash differs): it was edited after the session began")
        (self.folder / TAKES).mkdir(exist_ok=True)

    # -- creating and opening
    @classmethod
    def open(cls, folder, score_path=None) -> "Session":
        """Reopen ``folder``, or create it from ``score_path``.

        Reopening with a score checks that it is the session's piece.
        """
        folder = Path(folder)
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
        shutil.copyfile(score_path, folder / "score.mid")
        meta = {"score": score.name, "score_hash": score_hash(score), "created": _now()}
        write_json(folder / SESSION_FILE, meta)
        return cls(folder)

    # -- session.json: one writer
    def _read(self) -> dict:
        try:
            return read_json(self.folder / SESSION_FILE)
        except JsonFileError as e:
            raise SessionError(str(e)) from None

    def _edit(self, change) -> dict:
        """Change session.json: re-read it under its lock, apply ``change(meta)``, write it back.

        Every change to the session goes through here, so a change made
        meanwhile by another writer (the service, a fine-tune on a thread,
        another command) is never lost to a stale copy. ``self.meta`` is the
        file as written.
        """
        try:
            self.meta = edit_json(self.folder / SESSION_FILE, change)
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

    @property
    def name(self) -> str:
        return self.folder.name

    # -- learning settings
    @property
    def ab(self) -> tuple[float, float]:
        """A and B of eqs. (1)-(2) for this session (1, 1 unless set)."""
        try:
            return float(self.meta.get("A", 1.0)), float(self.meta.get("B", 1.0))
        except (TypeError, ValueError):
            return 1.0, 1.0

    def stored_ab(self) -> tuple[float, float] | None:
        """A and B as stored in session.json, or None when they are not both set and finite."""
        try:
            a, b = float(self.meta["A"]), float(self.meta["B"])
        except (KeyError, TypeError, ValueError):
            return None
        return (a, b) if math.isfinite(a) and math.isfinite(b) else None

    def set_ab(self, a: float, b: float) -> None:
        self.update(A=float(a), B=float(b))

    # -- the score as it has grown
    def ledger(self):
        from .targets import OffbeatLedger

        data = self.meta.get("offbeat")
        if not data:
            return OffbeatLedger()
        try:
            return OffbeatLedger.from_dict(data)
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
        taken = _numbered(self.folder / TAKES)
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

    # -- model versions
    def version_dir(self, k: int) -> Path:
        return self.folder / MODELS / f"{int(k):03d}"

    def versions(self) -> list[dict]:
        """Every model version's record (``version.json``), oldest first; unreadable ones flagged."""
        out = []
        for k in _numbered(self.folder / MODELS):
            path = self.version_dir(k) / VERSION_FILE
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                rec = {"status": "broken", "problem": f"{path}: unreadable ({str(e).splitlines()[0]})"}
            rec["version"] = k
            out.append(rec)
        return out

    def _check_version(self, k: int) -> str | None:
        """What is wrong with version k's weights, or None when they are good."""
        folder = self.version_dir(k)
        try:
            rec = json.loads((folder / VERSION_FILE).read_text())
        except (OSError, ValueError):
            return f"{folder / VERSION_FILE}: missing or unreadable"
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            return f"{weights}: missing"
        if rec.get("sha256") and _sha256(weights) != rec["sha256"]:
            return f"{weights}: corrupted (its SHA-256 no longer matches the one recorded)"
        try:
            load_agent(weights)
        except CheckpointError as e:
            return str(e)
        return None

    def ensure_start(self, kind: str = "lstm", weights=None) -> int:
        """Version 000: a copy of the pretrained agent the session starts from."""
        if self.version_dir(0).is_dir():
            return 0
        src = Path(weights or default_weights(kind))
        agent = load_agent(src)  # refuses pickles and broken files before anything is written
        folder = self.version_dir(0)
        folder.mkdir(parents=True)
        shutil.copyfile(src, folder / WEIGHTS_FILE)
        rec = {"version": 0, "status": "start", "kind": agent.kind, "from": str(src),
               "sha256": _sha256(folder / WEIGHTS_FILE), "created": _now()}
        write_json(folder / VERSION_FILE, rec)
        self._edit(lambda meta: meta.update(model=0) if meta.get("model") is None else None)
        return 0

    def current_version(self) -> tuple[int | None, list[str]]:
        """The version the session plays and any warnings about versions skipped on the way."""
        wanted = self.meta.get("model")
        if wanted is None:
            return None, []
        warnings = []
        good = [r["version"] for r in self.versions() if r.get("status") in ("start", "accepted", "reverted")]
        candidates = [int(wanted)] + [k for k in reversed(good) if k < int(wanted)]
        for k in candidates:
            problem = self._check_version(k)
            if problem is None:
                if k != int(wanted):
                    warnings.append(f"{self.folder}: falling back to model version {k}")
                return k, warnings
            warnings.append(f"model version {k} unusable: {problem}")
        return None, warnings + [f"{self.folder}: no usable model version left"]

    def agent(self, kind: str | None = None, weights=None):
        """The agent the next take plays: (agent, version, warnings).

        Explicit ``weights`` win (version None). Otherwise the session's current
        version, created from the pretrained ``kind`` on first use.
        """
        if weights is not None:
            return load_agent(weights), None, []
        if self.meta.get("model") is None:
            self.ensure_start(kind or "lstm")
        k, warnings = self.current_version()
        if k is None:
            raise SessionError(f"{self.folder}: no usable model version ({'; '.join(warnings)})")
        agent = load_agent(self.version_dir(k) / WEIGHTS_FILE)
        if kind is not None and agent.kind != kind:
            raise SessionError(f"{self.folder}: the session plays a {agent.kind} agent (version {k}); "
                               f"asked for {kind}: use another session or --weights")
        return agent, k, warnings

    def revert(self, k: int) -> int:
        """Make version ``k`` current again (nothing is deleted)."""
        known = [r["version"] for r in self.versions()]
        if int(k) not in known:
            raise SessionError(f"{self.folder}: no model version {k} (versions: "
                               f"{', '.join(str(v) for v in known) or 'none'})")
        problem = self._check_version(int(k))
        if problem:
            raise SessionError(f"model version {k} cannot be used: {problem}")
        def change(meta):
            meta["model"] = int(k)
            meta.setdefault("history", []).append({"revert_to": int(k), "at": _now()})

        self._edit(change)
        return int(k)

    def _write_version(self, agent, rec: dict) -> int:
        k = (_numbered(self.folder / MODELS) or [-1])[-1] + 1
        folder = self.version_dir(k)
        folder.mkdir(parents=True)  # never an existing one: versions are never overwritten
        save_agent(agent, folder / WEIGHTS_FILE, metadata={"session": self.name, "version": k})
        rec = {"version": k, **rec, "sha256": _sha256(folder / WEIGHTS_FILE), "created": _now()}
        write_json(folder / VERSION_FILE, rec)
        return k

    # -- learning between takes
    def finetune(self, take: int | None = None, *, epochs: int | None = None, lr: float | None = None,
                 A: float | None = None, B: float | None = None, cancel: bool = False,
                 centre: str = "all", margin: float | None = None, dataset=None,
                 progress=None) -> dict:
        """Learn from a take (default: the latest) and write the next model version.

        Parameters
        ----------
        take : take number (default: the latest)
        epochs, lr : fine-tuning knobs (paper 3.3: 5 epochs, Adam 0.001)
        A, B : eqs. (1)-(2) weights; default the session's (session.json), else 1
        cancel : choose A and B that cancel the variance scaling (swing morph)
        centre : "all" (paper), "beats" (μ_d over the hits on the beat), "downbeats"
            (over the hits on the first beat of a bar) or "none"
        margin : largest relative growth of the dataset validation MSE accepted;
            None takes the default, ``float("inf")`` switches the refusal off
        dataset : GMD TakeSet watched for forgetting (None: that check is skipped)
        progress : callable(epoch, epochs, loss)

        Returns
        -------
        dict : ``accepted``, ``reason``, ``version`` (new version or None),
        ``current`` (the version the session now plays), ``take``, the
        ``before``/``after`` figures, target statistics and ``offbeat`` changes.
        """
        from rolypoly.take import TakeError, read_take

        from . import finetune as ft
        from .targets import beat_rows, cancel_scaling_ab, offbeat_notes, take_arrays, take_targets, \
            validate_take

        epochs = ft.EPOCHS if epochs is None else int(epochs)
        lr = ft.LEARNING_RATE if lr is None else float(lr)
        margin = ft.DATASET_MARGIN if margin is None else float(margin)
        take_dir = self.take_dir(take)
        k_take = int(take_dir.name)
        report = {"take": k_take, "accepted": False, "version": None, "epochs": epochs, "lr": lr,
                  "centre": centre, "margin": margin, "dataset": dataset is not None}
        try:
            t = read_take(take_dir)
        except TakeError as e:
            return self._log(report, f"refused: {e}")
        played = self.score_of_hash(str(t.header.get("score_hash")))
        if played is None:
            return self._log(report, f"refused: take {k_take} was recorded against another score "
                                     f"({t.header.get('score', '?')}, hash {t.header.get('score_hash')})")
        check = validate_take(t, str(t.header["score_hash"]), len(played))
        report["notes"] = check.reasons
        if not check.usable:
            return self._log(report, "refused: " + (check.reasons[-1] if check.reasons else "unusable take"))
        rows = check.rows

        # Off-beat partner notes: this take's proposals, and its verdict on earlier tentative rows.
        ledger = self.ledger()
        tentative = set(ledger.tentative())
        heard = [(int(r["bar"]), int(r["step"])) for r in rows
                 if (int(r["bar"]), int(r["step"])) in tentative and r.get("diff") is not None]
        notes = offbeat_notes(rows, (t.footer or {}).get("partner_onsets") or [])
        change = ledger.propose(k_take, list(notes) + heard)
        silent = [(int(r["bar"]), int(r["step"])) for r in rows
                  if (int(r["bar"]), int(r["step"])) in tentative and r.get("diff") is None]
        for key in silent:  # played as a tentative row and the partner was not there: dropped
            ledger.notes.pop(key, None)
        report["offbeat"] = {"new": change["new"], "confirmed": change["confirmed"], "dropped": silent,
                             "permanent": len(ledger.grown_rows()), "tentative": len(ledger.tentative())}
        self.update(offbeat=ledger.to_dict())
        bars = np.array([r["bar"] for r in rows])
        steps = np.array([r["step"] for r in rows])
        trainable = ledger.trainable_mask(bars, steps)

        if A is None and B is None and not cancel:
            A, B = self.ab
        A = 1.0 if A is None else float(A)
        B = 1.0 if B is None else float(B)
        yhat, diff = take_arrays(rows)
        if cancel:
            A, B = cancel_scaling_ab(take_targets(yhat, diff).stats)
        report.update(A=A, B=B)
        if centre == "beats":
            centre_on = beat_rows(played, np.array([r["row"] for r in rows]))
        elif centre == "downbeats":
            centre_on = np.array([int(r["step"]) == 0 for r in rows])
        elif centre in ("all", "none"):
            centre_on = centre
        else:
            raise SessionError(f"centre must be all, beats, downbeats or none, not {centre!r}")

        agent, k_from, warnings = self.agent()
        report["from_version"], report["warnings"] = k_from, warnings
        res = ft.finetune_take(agent, rows, A=A, B=B, epochs=epochs, lr=lr, dataset=dataset, margin=margin,
                               trainable=trainable, centre=centre_on, progress=progress)
        for key in ("targets", "before", "after", "losses", "seconds"):
            if key in res:
                report[key] = res[key]
        tuned = res.get("agent") if res["accepted"] else res.get("tuned")
        import torch

        if tuned is not None and all(torch.isfinite(p).all() for p in tuned.parameters()):
            rec = {"status": "accepted" if res["accepted"] else "refused", "kind": tuned.kind,
                   "parent": k_from, "take": k_take, "reason": res["reason"],
                   **{key: report.get(key) for key in ("A", "B", "centre", "epochs", "lr", "margin",
                                                        "targets", "before", "after", "losses")}}
            report["version"] = self._write_version(tuned, rec)
        report["accepted"] = bool(res["accepted"])
        reason = res["reason"]
        if res["accepted"] and report["version"] is not None:
            # The new version becomes current only if the session still plays the version it
            # grew from: a revert (or another fine-tune) made meanwhile is the player's choice.
            moved = self.reload().get("model")
            if moved is not None and int(moved) != int(k_from):
                reason += (f"; kept as version {report['version']} but not played: the session moved to "
                           f"version {moved} during fine-tuning")
            else:
                self._edit(lambda meta: meta.update(model=report["version"]))
        return self._log(report, reason)

    def _log(self, report: dict, reason: str) -> dict:
        report["reason"] = reason

        def change(meta):
            report["current"] = meta.get("model")
            entry = {key: report.get(key) for key in ("take", "accepted", "version", "current", "reason")}
            meta.setdefault("history", []).append({**entry, "at": _now()})

        self._edit(change)
        return report

    # -- export
    def export_midi(self, path, *, take: int | None = None) -> Path:
        """The current performance as MIDI: the score played with the current agent's offsets.

        The agent decides each hit as it would live, its partner columns fed
        from the latest take (or ``take``) where that take has the row, so
        what it learnt from the partner shows; silent rows are left out.
        """
        from .features import score_features

        score = self.score()
        agent, _, _ = self.agent()
        X = score_features(score)
        dirs = self.take_dirs()
        if dirs:
            from rolypoly.take import read_take

            t = read_take(self.take_dir(take))
            if self.score_of_hash(t.header.get("score_hash", "")) is not None and \
                    t.header.get("score_hash") == score_hash(score):
                for r in t.rows[:len(score)]:
                    if r.get("features") and len(r["features"]) == X.shape[1]:
                        X[r["row"], -2:] = r["features"][-2:]
        offsets = agent.predict(X)  # the whole score at once equals hit-by-hit streaming
        keep = np.flatnonzero(score.hits.any(axis=1))  # silent off-beat rows sound nothing
        path = Path(path)
        write_midi(score.select(keep), path, offsets=offsets[keep])
        return path
