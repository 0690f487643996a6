"""The score grows: the partner's off-beat notes become silent rows (rolypoly~ footnote 6).

A partner attack in the middle third between two drum hits, heard by
neither hit's diff window, is an *off-beat note* (:func:`offbeat_notes`).
A take proposes such notes as *tentative* rows; the next take plays them
silently (nothing sounds, but the agent decides an offset there and the
engine listens); a later take that hears the partner there again makes them
*permanent* (:class:`OffbeatLedger`). :func:`with_rows` adds the rows to a
score. Tentative rows are skipped in training.

Examples
--------
>>> from rolypoly.score import score_from_grid
>>> score = score_from_grid(np.eye(24, 9, dtype=bool)[[0, 12]], bpm=120)
>>> rows = [{"row": 0, "bar": 0, "step": 0, "yhat": 0.0, "notated": 0.0},
...         {"row": 1, "bar": 0, "step": 12, "yhat": 0.0, "notated": 1.0}]
>>> notes = offbeat_notes(rows, [0.5])
>>> ledger = OffbeatLedger()
>>> ledger.propose(0, notes)
{'new': [(0, 6)], 'confirmed': []}
>>> len(with_rows(score, ledger.tentative())) - len(score)
1
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .grid import STEPS_PER_BAR
from .score import Score
from .take import as_rows, heard_onsets
from .targets import finite_1d, finite_number

#: An onset this close (s) to one a hit heard in its window is that same onset.
HEARD_TOLERANCE_S = 1e-4


@dataclass(frozen=True)
class OffbeatNote:
    """A partner attack between two drum hits, as a candidate no-hit row.

    ``bar`` and ``step`` are its quantised grid position, ``time`` the
    attack (s from score zero), ``after_row`` the hit before it and
    ``length_ms`` the time to the next attack (partner onset or drum hit).
    """

    bar: int
    step: int
    time: float
    after_row: int
    length_ms: float

    @property
    def key(self) -> tuple[int, int]:
        return (self.bar, self.step)


def offbeat_notes(rows, onsets, steps_per_bar: int = STEPS_PER_BAR, min_gap_ms: float = 10.0) -> list[OffbeatNote]:
    """Partner attacks in the middle of the gaps between hits (footnote 6).

    For consecutive hits t and t + 1 (the *window*), an attack strictly
    inside the middle third of the gap between their notated times,
    ``(n_t + g/3, n_t + 2g/3)``, is an off-beat note, unless a hit heard it
    in its diff window (it is in that row's ``onsets``). Its grid position is
    interpolated between the two rows' positions (bar + step/steps_per_bar)
    and rounded to the nearest step (half-way rounds up); an attack that
    lands on an existing row's step is not off-beat.

    *"Only one such note, with a length > 10 ms, may be added per window,
    per performance"* is read as: partner attacks mark only where notes
    start, so a note's length is the time to the next attack, the next
    partner onset or hit t + 1 (notated), whichever comes first, and it
    must be more than ``min_gap_ms``; the attack must also be more than
    ``min_gap_ms`` after the previous attack (partner onset or hit t), so
    that neither of an onset detector's double triggers counts. Of the
    notes left in a window the longest is kept (the earliest on a tie).
    The last row has no window (no hit after it).

    Parameters
    ----------
    rows : take rows (:data:`rolypoly.take.ROW_DTYPE`, or records)
        In order; ``row``, ``bar``, ``step``, ``notated`` (s from score zero)
        and ``heard`` (the onsets in each hit's window) are used.
    onsets : array_like
        Every partner onset of the take (s from score zero), not only those
        in the hit windows.
    steps_per_bar : int
        The grid of the score (the rows' steps are on it).
    min_gap_ms : float

    Returns
    -------
    list of OffbeatNote, in time order, at most one per window.

    Examples
    --------
    Two hits half a bar apart (2 s bars) and an attack near the middle:

    >>> rows = [{"row": 0, "bar": 0, "step": 0, "yhat": 0.0, "notated": 0.0},
    ...         {"row": 1, "bar": 0, "step": 12, "yhat": 0.0, "notated": 1.0}]
    >>> [(n.bar, n.step, n.after_row) for n in offbeat_notes(rows, [0.02, 0.49, 1.01])]
    [(0, 6, 0)]
    """
    on = np.sort(finite_1d(np.atleast_1d(np.asarray(onsets, dtype=np.float64)), "onsets"))
    # An attack a hit listened to (in its diff window, the row's "onsets") is that hit's partner,
    # not an off-beat note: with a wide window (the swing morph's dur/2.5) a swung 8th reaches
    # into the middle third of the gap and would otherwise become a silent row of its own.
    rows = as_rows(rows)
    heard = heard_onsets(rows)
    if len(heard) and len(on):
        j = np.clip(np.searchsorted(heard, on), 1, len(heard)) - 1
        near = np.minimum(np.abs(on - heard[j]), np.abs(on - heard[np.minimum(j + 1, len(heard) - 1)]))
        on = on[near > HEARD_TOLERANCE_S]
    steps_per_bar = int(steps_per_bar)
    if steps_per_bar <= 0:
        raise ValueError(f"steps_per_bar must be positive, got {steps_per_bar}")
    gap_s = finite_number(min_gap_ms, "min_gap_ms") / 1000.0
    occupied = set(zip(rows["bar"].tolist(), rows["step"].tolist()))
    notes: list[OffbeatNote] = []
    for a, b in zip(rows[:-1], rows[1:]):
        if int(b["row"]) != int(a["row"]) + 1:
            continue  # not neighbours: no window between them
        n0, n1 = float(a["notated"]), float(b["notated"])
        g = n1 - n0
        if not (math.isfinite(g) and g > 0):
            continue
        p0 = int(a["bar"]) + int(a["step"]) / steps_per_bar
        p1 = int(b["bar"]) + int(b["step"]) / steps_per_bar
        lo, hi = n0 + g / 3, n0 + 2 * g / 3
        best = None
        for j in range(np.searchsorted(on, lo, "right"), np.searchsorted(on, hi, "left")):
            t = float(on[j])
            before = max(float(on[j - 1]) if j else -math.inf, n0)
            after = min(float(on[j + 1]) if j + 1 < len(on) else math.inf, n1)
            if not (t - before > gap_s and after - t > gap_s):
                continue
            q = math.floor((p0 + (t - n0) / g * (p1 - p0)) * steps_per_bar + 0.5)
            key = (q // steps_per_bar, q % steps_per_bar)
            if key in occupied:
                continue
            if best is None or after - t > best.length_ms / 1000.0:
                best = OffbeatNote(key[0], key[1], t, int(a["row"]), (after - t) * 1000.0)
        if best is not None:
            occupied.add(best.key)
            notes.append(best)
    return notes


TENTATIVE, PERMANENT = "tentative", "permanent"


@dataclass
class OffbeatLedger:
    """Off-beat notes of a session across takes: tentative, then permanent.

    A note proposed by a take is *tentative*: it is skipped in training
    (:meth:`trainable_mask`) and not part of the score. When another take
    (normally a later one) proposes the same bar and step, it becomes
    *permanent*: a no-hit row of the grown score (:meth:`grown_rows`).
    Proposing the same take twice confirms nothing. Pure data: store it
    with :meth:`to_dict`, get it back with :meth:`from_dict`.

    Examples
    --------
    >>> ledger = OffbeatLedger()
    >>> n = OffbeatNote(bar=2, step=9, time=4.8, after_row=17, length_ms=120.0)
    >>> ledger.propose(0, [n])
    {'new': [(2, 9)], 'confirmed': []}
    >>> ledger.grown_rows(), ledger.trainable_mask([2, 2], [6, 9]).tolist()
    ([], [True, False])
    >>> ledger.propose(1, [n])["confirmed"], ledger.grown_rows()
    ([(2, 9)], [(2, 9)])
    >>> OffbeatLedger.from_dict(ledger.to_dict()) == ledger
    True
    """

    notes: dict = field(default_factory=dict)  # (bar, step) -> {"status", "proposed_by", "confirmed_by"}

    def propose(self, take_index: int, notes) -> dict:
        """Record a take's off-beat notes; returns the keys that are ``new`` and ``confirmed``."""
        take_index = int(take_index)
        new, confirmed = [], []
        for n in notes:
            key = n.key if isinstance(n, OffbeatNote) else (int(n[0]), int(n[1]))
            entry = self.notes.get(key)
            if entry is None:
                self.notes[key] = {"status": TENTATIVE, "proposed_by": take_index, "confirmed_by": None}
                new.append(key)
            elif entry["status"] == TENTATIVE and entry["proposed_by"] != take_index:
                entry.update(status=PERMANENT, confirmed_by=take_index)
                confirmed.append(key)
        return {"new": new, "confirmed": confirmed}

    def status(self, bar: int, step: int) -> str | None:
        """``"tentative"``, ``"permanent"`` or None for a position no take proposed."""
        entry = self.notes.get((int(bar), int(step)))
        return entry["status"] if entry else None

    def tentative(self) -> list[tuple[int, int]]:
        """Positions still waiting for confirmation, in score order."""
        return sorted(k for k, e in self.notes.items() if e["status"] == TENTATIVE)

    def grown_rows(self) -> list[tuple[int, int]]:
        """Permanent positions (bar, step), in score order: no-hit rows to add to the score."""
        return sorted(k for k, e in self.notes.items() if e["status"] == PERMANENT)

    def trainable_mask(self, bar, step) -> np.ndarray:
        """False for rows at a tentative note's position, True elsewhere.

        Parameters
        ----------
        bar, step : array_like of int, shape (n,)
            Positions of the training rows.
        """
        bar, step = np.asarray(bar, dtype=int), np.asarray(step, dtype=int)
        if bar.shape != step.shape:
            raise ValueError(f"bar has shape {bar.shape} but step has {step.shape}")
        pending = set(self.tentative())
        return np.array([(int(b), int(s)) not in pending for b, s in zip(bar.ravel(), step.ravel())],
                        dtype=bool).reshape(bar.shape)

    def to_dict(self) -> dict:
        """JSON-ready form (for ``session.json``)."""
        return {"version": 1, "notes": [{"bar": b, "step": s, **e} for (b, s), e in sorted(self.notes.items())]}

    @classmethod
    def from_dict(cls, data: dict) -> "OffbeatLedger":
        """Inverse of :meth:`to_dict`; ValueError on anything else."""
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("notes"), list):
            raise ValueError("not an off-beat ledger (expected {'version': 1, 'notes': [...]})")
        notes = {}
        for e in data["notes"]:
            try:
                key = (int(e["bar"]), int(e["step"]))
                status, by, conf = e["status"], int(e["proposed_by"]), e.get("confirmed_by")
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"off-beat ledger entry {e!r} is incomplete") from None
            if status not in (TENTATIVE, PERMANENT):
                raise ValueError(f"off-beat ledger entry {e!r}: status must be tentative or permanent")
            notes[key] = {"status": status, "proposed_by": by,
                          "confirmed_by": None if conf is None else int(conf)}
        return cls(notes)


# ----------------------------------------------------------------------------- the grown score

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
