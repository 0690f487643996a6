"""Between-take fine-tuning: the agent learns from how the duet actually went.

After a take, targets are built from the realised offsets (eqs. 1-2,
:mod:`rolypoly.targets`) and the agent is trained a few epochs on the take
(rolypoly~ paper, 3.3): MSE on the hits that had a partner onset. Two
validations watch the update:

* the take itself, on *all* realised hits: where the partner was heard the
  target is y_t, elsewhere the ŷ the drums played (nothing was learnt there,
  so the agent should not move);
* a subset of the Groove MIDI Dataset validation split, so the agent does
  not forget how drummers play. An update whose dataset MSE grows by more
  than ``margin`` is refused, and the session stays on its model.

Every accepted update is a new model version; none is ever overwritten.

Examples
--------
>>> report = finetune_take(agent, take_rows, A=1, B=1)   # doctest: +SKIP
>>> report["accepted"], report["after"]["dataset_mse_bar"]  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .features import OFFSET_SCALE
from .targets import take_arrays, take_targets

# -- fine-tuning knobs (paper 3.3, Fig. 2: 5 epochs, Adam, lr 0.001) -------------
EPOCHS = 5
LEARNING_RATE = 1e-3
#: An update may make the dataset validation MSE at most this much worse (relative).
DATASET_MARGIN = 0.10
#: GMD validation takes watched for forgetting (the first N, always the same ones).
DATASET_TAKES = 16
GRAD_CLIP = 1.0


def _mse_masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((pred - target)[mask] ** 2).mean()


@torch.no_grad()
def _predict(agent, X: np.ndarray) -> np.ndarray:
    return agent.predict(X)


def dataset_mse(agent, data) -> float:
    """MSE per bar of an agent on a GMD TakeSet, each take a whole score."""
    pred = np.concatenate([_predict(agent, data.X[data.take(k)]) for k in range(len(data))])
    return float(np.mean((pred - data.y) ** 2))


def take_validation_targets(yhat: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Targets for validating on every realised hit: y where heard, the played ŷ elsewhere."""
    return np.where(mask, y, yhat)


def train_on_take(agent, X: np.ndarray, y: np.ndarray, mask: np.ndarray, *, epochs: int = EPOCHS,
                  lr: float = LEARNING_RATE, seed: int = 0, progress=None) -> list[float]:
    """Fine-tune ``agent`` in place on one take; returns the training loss per epoch (bar²)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(X, np.float32))[None]
    t = torch.as_tensor(np.nan_to_num(np.asarray(y, np.float32)) * OFFSET_SCALE)[None]
    m = torch.as_tensor(np.asarray(mask, bool))[None]
    opt = torch.optim.Adam(agent.parameters(), lr=lr)
    losses = []
    agent.train()
    for epoch in range(epochs):
        loss = _mse_masked(agent(x), t, m)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), GRAD_CLIP)
        opt.step()
        losses.append(float(loss.item()) / OFFSET_SCALE ** 2)
        if progress is not None:
            progress(epoch + 1, epochs, losses[-1])
    agent.eval()
    return losses


def finetune_take(agent, rows: list[dict], *, A: float = 1.0, B: float = 1.0, epochs: int = EPOCHS,
                  lr: float = LEARNING_RATE, dataset=None, margin: float = DATASET_MARGIN,
                  trainable=None, progress=None) -> dict:
    """Fine-tune a copy of ``agent`` on a take's rows; the caller keeps or discards it.

    Parameters
    ----------
    agent : a timing agent (left untouched)
    rows : the take's row records (``read_take(...).rows``), already validated
    A, B : eq. 1-2 weights
    dataset : GMD TakeSet for the forgetting check (skipped when None)
    trainable : optional bool mask of rows allowed in training (off-beat rows still tentative)

    Returns
    -------
    dict with ``accepted`` (bool), ``reason``, ``agent`` (the fine-tuned copy or None),
    ``targets`` (statistics), ``before``/``after`` figures and ``losses``.
    """
    yhat, diff = take_arrays(rows)
    X = np.array([r["features"] for r in rows], dtype=np.float32)
    result = take_targets(yhat, diff, A, B)
    report = {"rows": len(rows), "targets": result.stats.as_dict(), "accepted": False, "agent": None}
    if not result.update:
        report["reason"] = result.reason
        return report
    mask = result.mask if trainable is None else result.mask & np.asarray(trainable, bool)
    if not mask.any():
        report["reason"] = "no trainable hit with a partner onset (tentative off-beat rows only)"
        return report
    val_target = take_validation_targets(yhat, result.y, result.mask)

    def figures(model) -> dict:
        pred = _predict(model, X)
        out = {"take_mse_bar": float(np.mean((pred - val_target) ** 2)),
               "take_trained_mse_bar": float(np.mean((pred[mask] - result.y[mask]) ** 2))}
        if dataset is not None:
            out["dataset_mse_bar"] = dataset_mse(model, dataset)
        return out

    report["before"] = figures(agent)
    tuned = copy.deepcopy(agent)
    report["losses"] = train_on_take(tuned, X, result.y, mask, epochs=epochs, lr=lr, progress=progress)
    report["after"] = after = figures(tuned)
    bad = [k for k, v in after.items() if not math.isfinite(v)]
    if bad or not all(torch.isfinite(p).all() for p in tuned.parameters()):
        report["reason"] = "refused: the update produced NaN or infinite values"
        return report
    if dataset is not None:
        limit = report["before"]["dataset_mse_bar"] * (1 + margin)
        if after["dataset_mse_bar"] > limit:
            grown = after["dataset_mse_bar"] / report["before"]["dataset_mse_bar"] - 1
            report["reason"] = (f"refused: Groove MIDI Dataset validation MSE grew {grown:.0%} "
                                f"(limit {margin:.0%}): the agent would forget how drummers play")
            return report
    report.update(accepted=True, agent=tuned, reason="accepted")
    return report
