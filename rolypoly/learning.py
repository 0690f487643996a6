"""Learning between takes: the fine-tune policy of a session, in one place.

After a take, :func:`learn_from_take` reads it (:mod:`rolypoly.take`),
checks it against the score it played, lets it grow the score with the
partner's off-beat notes (:mod:`rolypoly.score_growth`), builds the targets
(eqs. 1-2, :mod:`rolypoly.targets`), fine-tunes a copy of the session's
current agent (:mod:`rolypoly.finetune`) and writes the result as the next
model version (:mod:`rolypoly.versions`). :class:`LearningSettings` is every
knob of that, with its default: A and B (the session's own unless given, or
cancelling the variance scaling), the centre of eq. (2), the forgetting
margin, epochs and learning rate.

The session plays the new version only if the update was accepted and the
session still plays the version it grew from: a revert or another
fine-tune made meanwhile is the player's choice and stays.

:func:`export_performance` writes what the session's current agent plays
as MIDI.

Examples
--------
>>> from rolypoly.session import Session                  # doctest: +SKIP
>>> report = learn_from_take(Session("sessions/song"))     # doctest: +SKIP
>>> report["accepted"], report["version"], report["current"]  # doctest: +SKIP
(True, 1, 1)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import finetune as ft
from .features import DESCRIPTOR, DIFF, score_features
from .report import take_partner_change
from .score import write_midi
from .score_growth import offbeat_notes
from .take import TakeError, read_take, validate_take
from .targets import beat_rows, cancel_scaling_ab, take_arrays, take_targets

CENTRES = ("all", "beats", "downbeats", "none")


@dataclass(frozen=True)
class LearningSettings:
    """How a session learns from a take (defaults: the paper's 3.3, and this project's safety line).

    ``A`` and ``B`` None take the session's stored values (else 1); ``cancel``
    picks the A and B that cancel eq. (1)-(2)'s variance scaling (the swing
    morph); ``centre`` says which hits set μ_d in eq. (2): ``all`` (the
    paper), ``beats``, ``downbeats`` or ``none``; ``margin`` is the largest
    relative growth of the dataset validation MSE accepted (``inf``: no
    refusal).
    """

    epochs: int = ft.EPOCHS
    lr: float = ft.LEARNING_RATE
    A: float | None = None
    B: float | None = None
    cancel: bool = False
    centre: str = "all"
    margin: float = ft.DATASET_MARGIN

    def __post_init__(self):
        if self.centre not in CENTRES:
            from .session import SessionError

            raise SessionError(f"centre must be {', '.join(CENTRES[:-1])} or {CENTRES[-1]}, not {self.centre!r}")

    @classmethod
    def given(cls, *, epochs=None, lr=None, margin=None, **kw) -> "LearningSettings":
        """Settings from optional values (None: the default)."""
        return cls(epochs=ft.EPOCHS if epochs is None else int(epochs),
                   lr=ft.LEARNING_RATE if lr is None else float(lr),
                   margin=ft.DATASET_MARGIN if margin is None else float(margin), **kw)


def _centre_rows(centre: str, score, rows):
    if centre == "beats":
        return beat_rows(score, rows["row"])
    if centre == "downbeats":
        return rows["step"] == 0
    return centre


def learn_from_take(session, take: int | None = None, settings: LearningSettings | None = None, *,
                    dataset=None, mse_cache=None, progress=None) -> dict:
    """Learn from a take of ``session`` (default: the latest) and write the next model version.

    Parameters
    ----------
    session : rolypoly.session.Session
    take : take number (default: the latest)
    settings : LearningSettings (default: the defaults)
    dataset : GMD TakeSet watched for forgetting (``rolypoly.pretrain.gmd.forgetting_set``;
        None: that check is skipped)
    mse_cache : rolypoly.finetune.DatasetMSECache kept across fine-tunes (optional)
    progress : callable(epoch, epochs, loss)

    Returns
    -------
    dict : ``accepted``, ``reason``, ``version`` (new version or None),
    ``current`` (the version the session now plays), ``take``, the
    ``before``/``after`` figures, target statistics, ``offbeat`` changes and
    ``partner_ms``: the drums against the partner in the take and as the new
    model would have played it (:func:`rolypoly.report.take_partner_change`).
    """
    s = settings or LearningSettings()
    mark = session.history_mark()  # a revert made from here on is the player's choice: it stays
    take_dir = session.take_dir(take)
    k_take = int(take_dir.name)
    report = {"take": k_take, "accepted": False, "version": None, "epochs": s.epochs, "lr": s.lr,
              "centre": s.centre, "margin": s.margin, "dataset": dataset is not None}
    try:
        t = read_take(take_dir)
    except TakeError as e:
        return session.log(report, f"refused: {e}")
    played = session.score_of_hash(str(t.header.score_hash))
    if played is None:
        return session.log(report, f"refused: take {k_take} was recorded against another score "
                                   f"({t.header.score or '?'}, hash {t.header.score_hash})")
    check = validate_take(t, str(t.header.score_hash), len(played))
    report["notes"] = check.reasons
    if not check.usable:
        return session.log(report, "refused: " + (check.reasons[-1] if check.reasons else "unusable take"))
    rows = check.rows

    # Off-beat partner notes: this take's proposals, and its verdict on earlier tentative rows.
    report["offbeat"], trainable = session.grow_score(k_take, rows, offbeat_notes(rows, t.partner_onsets))

    A, B = (s.A, s.B) if (s.A is not None or s.B is not None or s.cancel) else session.ab
    A = 1.0 if A is None else float(A)
    B = 1.0 if B is None else float(B)
    if s.cancel:
        A, B = cancel_scaling_ab(take_targets(*take_arrays(rows)).stats)
    report.update(A=A, B=B)

    agent, k_from, warnings = session.agent()
    report["from_version"], report["warnings"] = k_from, warnings
    res = ft.finetune_take(agent, rows, A=A, B=B, epochs=s.epochs, lr=s.lr, dataset=dataset, margin=s.margin,
                           trainable=trainable, centre=_centre_rows(s.centre, played, rows), progress=progress,
                           mse_cache=mse_cache)
    for key in ("targets", "before", "after", "losses", "seconds"):
        if key in res:
            report[key] = res[key]
    if "offsets" in res:  # how the drums sat against the partner, and would with the new model (ms)
        report["partner_ms"] = take_partner_change(rows, res["offsets"]["after"])
    tuned = res.get("agent") if res["accepted"] else res.get("tuned")
    if tuned is not None and ft.all_finite(tuned):
        record = {"status": "accepted" if res["accepted"] else "refused", "kind": tuned.kind,
                  "parent": k_from, "take": k_take, "reason": res["reason"],
                  **{key: report.get(key) for key in ("A", "B", "centre", "epochs", "lr", "margin",
                                                       "targets", "before", "after", "losses", "partner_ms")}}
        report["version"] = session.models.write(tuned, record, metadata={"session": session.name})
    report["accepted"] = bool(res["accepted"])
    reason = res["reason"]
    if res["accepted"] and report["version"] is not None:
        if not session.play_version_if_still(report["version"], k_from, since=mark):
            reason += (f"; kept as version {report['version']} but not played: the session moved to "
                       f"version {session.meta.get('model')} during fine-tuning")
    return session.log(report, reason)


def export_performance(session, path, *, take: int | None = None) -> Path:
    """The session's performance as MIDI: its score played with the current agent's offsets.

    The agent decides each hit as it would live, its partner columns fed
    from the latest take (or ``take``) where that take has the row, so what
    it learnt from the partner shows; silent rows are left out. When the
    current version cannot be played and an earlier one stands in, a
    UserWarning says so.
    """
    score = session.score()
    agent, version, problems = session.agent()
    if problems:
        # The performance is not the one the player chose: say which version plays it and why.
        import warnings

        warnings.warn(f"exporting with model version {version}, not the session's current "
                      f"{session.meta.get('model')}: {'; '.join(problems)}", UserWarning, stacklevel=2)
    X = score_features(score)
    if session.take_dirs():
        from .session import score_hash

        t = read_take(session.take_dir(take))
        if t.header.score_hash == score_hash(score):
            rows = t.rows[(t.rows["row"] >= 0) & (t.rows["row"] < len(score))]
            X[rows["row"], DESCRIPTOR:DIFF + 1] = rows["features"][:, DESCRIPTOR:DIFF + 1]
    offsets = agent.predict(X)  # the whole score at once equals hit-by-hit streaming
    keep = np.flatnonzero(score.hits.any(axis=1))  # silent off-beat rows sound nothing
    path = Path(path)
    write_midi(score.select(keep), path, offsets=offsets[keep])
    return path
