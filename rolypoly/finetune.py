"""Between-take fine-tuning: the agent learns from how the duet actually went.

After a take, targets are built from the realised offsets (eqs. 1-2,
:mod:`rolypoly.targets`) and the agent is trained a few epochs on the take
(rolypoly~ paper, 3.3): MSE on the hits that had a partner onset. Two
validations watch the update:

* the take itself, on *all* realised hits: where the partner was heard the
  target is y_t, elsewhere the ŷ the drums played (nothing was learnt there,
  so the agent should not move);
* a subset of the Groove MIDI Dataset validation split, so the agent does
  not forget how drummers play. Adapting to one partner moves an agent
  away from the average GMD drummer, and should be allowed to; an update
  is refused (the session stays on its model) when it would play those
  grooves worse than a drum machine on the grid does -- the dataset MSE of
  zero offsets, :func:`grid_mse` -- or worse than the model it replaces,
  whichever is higher, by more than ``margin``. A runaway update (the
  reference implementation's "blowup" take, lr 1e-3 for 30 epochs) lands
  far beyond that line.

Every accepted update is a new model version; none is ever overwritten.

Examples
--------
>>> report = finetune_take(agent, take_rows, A=1, B=1)   # doctest: +SKIP
>>> report["accepted"], report["after"]["dataset_mse_bar"]  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import time
from collections import OrderedDict

import numpy as np
import torch

from .features import OFFSET_SCALE
from .take import as_rows
from .targets import take_arrays, take_targets

# -- fine-tuning knobs (paper 3.3, Fig. 2: 5 epochs, Adam, lr 0.001) -------------
EPOCHS = 5
LEARNING_RATE = 1e-3
#: How far past max(grid MSE, model before) the dataset validation MSE may go (relative).
DATASET_MARGIN = 0.10
#: GMD validation takes watched for forgetting (the first N, always the same ones).
DATASET_TAKES = 16
GRAD_CLIP = 1.0
#: Fine-tuning steps on chunks of the take (see train_on_take).
CHUNK_ROWS = 16
CHUNKS_PER_STEP = 4
#: A long take is stepped in bigger batches rather than more steps: past this many steps
#: per epoch (about 500 rows), more chunks go into each step. How far one take moves the
#: agent then stops growing with the take's length, and a dense 3-minute take at 180 bpm
#: (983 rows) fine-tunes in the time of a 96-bpm one: a step's cost is mostly fixed.
MAX_STEPS_PER_EPOCH = 16
#: Torch threads while fine-tuning (restored after). One, not two: these are small ops
#: (4 chunks of 16 rows), and on a 2-core machine where anything else runs, two OpenMP
#: threads wait for each other at every op -- measured 100 to 300 times slower.
THREADS = 1
#: Dataset MSEs a DatasetMSECache remembers (per weights and dataset).
DATASET_MSE_CACHE_SIZE = 64


def _mse_masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((pred - target)[mask] ** 2).mean()


@torch.no_grad()
def _predict(agent, X: np.ndarray) -> np.ndarray:
    return agent.predict(X)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: leave them), then restore the count."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _digest(arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def weights_digest(agent) -> str:
    """Hash of an agent's weights and normalisation: equal digests, equal predictions."""
    sd = agent.state_dict()
    return agent.kind + ":" + _digest([np.frombuffer(k.encode(), np.uint8) for k in sd]
                                      + [v.detach().cpu().numpy() for v in sd.values()])


class DatasetMSECache:
    """Dataset MSEs remembered by the hash of the weights and of the data.

    A model's "before" is the "after" of the fine-tune that made it, so a
    caller that keeps one of these across fine-tunes (the service, a
    session of experiments, the benchmark) pays one dataset pass per
    fine-tune instead of two. Holds at most ``size`` figures (oldest out first).

    >>> cache = DatasetMSECache()
    >>> len(cache)
    0
    """

    def __init__(self, size: int = DATASET_MSE_CACHE_SIZE):
        self.size = int(size)
        self._figures: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._figures)

    def clear(self) -> None:
        self._figures.clear()

    def get(self, key):
        if key in self._figures:
            self._figures.move_to_end(key)
        return self._figures.get(key)

    def put(self, key, value: float) -> None:
        self._figures[key] = value
        while len(self._figures) > self.size:
            self._figures.popitem(last=False)


def dataset_mse(agent, data, *, cache: DatasetMSECache | None = None) -> float:
    """MSE per bar of an agent on a GMD TakeSet, each take a whole score.

    With a ``cache`` the figure is remembered there by the hash of the
    weights and of the data, so the same model on the same takes is only
    ever run once. Takes go through one at a time: one padded batch of the
    16 validation takes (7 after pruning, 1,972 rows, the longest 1,237) was
    measured twice as slow, the padding costing more than the batching saves.
    """
    key = None
    if cache is not None:
        bounds = np.array([[s.start, s.stop] for s in (data.take(k) for k in range(len(data)))], np.int64)
        key = (weights_digest(agent), _digest([data.X, data.y, bounds]))
        known = cache.get(key)
        if known is not None:
            return known
    with torch.inference_mode():
        pred = np.concatenate([_predict(agent, data.X[data.take(k)]) for k in range(len(data))])
    mse = float(np.mean((pred - data.y) ** 2))
    if key is not None:
        cache.put(key, mse)
    return mse


def all_finite(agent) -> bool:
    """Whether every weight of ``agent`` is a finite number."""
    return all(bool(torch.isfinite(p).all()) for p in agent.parameters())


def grid_mse(dataset) -> float:
    """MSE per bar of playing every hit of a GMD TakeSet on the grid (ŷ = 0)."""
    return float(np.mean(np.asarray(dataset.y, np.float64) ** 2))


def take_validation_targets(yhat: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Targets for validating on every realised hit: y where heard, the played ŷ elsewhere."""
    return np.where(mask, y, yhat)


def _chunks(n: int, rows: int, hop: int) -> np.ndarray:
    """Start rows of overlapping chunks covering ``n`` rows (the last one ends at row n)."""
    if n <= rows:
        return np.array([0])
    starts = np.arange(0, n - rows + 1, hop)
    return starts if starts[-1] == n - rows else np.append(starts, n - rows)


def train_on_take(agent, X: np.ndarray, y: np.ndarray, mask: np.ndarray, *, epochs: int = EPOCHS,
                  lr: float = LEARNING_RATE, seed: int = 0, chunk_rows: int = CHUNK_ROWS,
                  chunks_per_step: int = CHUNKS_PER_STEP, max_steps: int | None = MAX_STEPS_PER_EPOCH,
                  progress=None, fused: bool = True) -> list[float]:
    """Fine-tune ``agent`` in place on one take; returns the training loss per epoch (bar²).

    The take is cut into overlapping chunks of ``chunk_rows`` rows (hop half
    a chunk), shuffled each epoch and stepped ``chunks_per_step`` at a time,
    or, where that would take more than ``max_steps`` steps an epoch, in
    ``max_steps`` steps of more chunks each (None: no limit).
    One step per epoch on the whole take (5 steps per take) mostly moves the
    agent's overall lean: a pattern (a swung off-beat, a tresillo turning
    into triplets) needs more, smaller steps, as in pretraining.

    ``fused`` steps ``torch.optim.Adam(fused=True)`` (one kernel per step)
    and clips with the multi-tensor norm; False is the plain per-tensor path,
    the reference the fast one is tested against.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float32)
    t = np.nan_to_num(np.asarray(y, np.float32)) * OFFSET_SCALE
    m = np.asarray(mask, bool)
    n = len(X)
    rows = min(int(chunk_rows), n)
    starts = _chunks(n, rows, max(1, rows // 2))
    starts = starts[[m[s:s + rows].any() for s in starts]]  # chunks with nothing to learn: skipped
    idx = starts[:, None] + np.arange(rows)[None, :]
    xs, ts, ms = torch.as_tensor(X[idx]), torch.as_tensor(t[idx]), torch.as_tensor(m[idx])
    counts = m[idx].sum(axis=1)
    if max_steps:
        chunks_per_step = max(int(chunks_per_step), -(-len(starts) // int(max_steps)))
    params = list(agent.parameters())
    opt = torch.optim.Adam(params, lr=lr, fused=True) if fused else torch.optim.Adam(params, lr=lr, foreach=False)
    losses = []
    agent.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        order = rng.permutation(len(starts))
        for b in range(0, len(order), chunks_per_step):
            chosen = order[b:b + chunks_per_step]
            sel = torch.as_tensor(chosen)
            loss = _mse_masked(agent(xs[sel]), ts[sel], ms[sel])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP, foreach=True if fused else None)
            opt.step()
            k = int(counts[chosen].sum())
            total, count = total + float(loss.item()) * k, count + k
        losses.append(total / max(count, 1) / OFFSET_SCALE ** 2)
        if progress is not None:
            progress(epoch + 1, epochs, losses[-1])
    agent.eval()
    return losses


def finetune_take(agent, rows, *, A: float = 1.0, B: float = 1.0, epochs: int = EPOCHS,
                  lr: float = LEARNING_RATE, dataset=None, margin: float = DATASET_MARGIN,
                  trainable=None, centre="all", progress=None, fast: bool = True,
                  mse_cache: DatasetMSECache | None = None) -> dict:
    """Fine-tune a copy of ``agent`` on a take's rows; the caller keeps or discards it.

    Parameters
    ----------
    agent : a timing agent (left untouched)
    rows : the take's rows (:data:`rolypoly.take.ROW_DTYPE`, e.g. ``validate_take(...).rows``;
        row records are converted), already validated
    A, B : eq. 1-2 weights
    dataset : GMD TakeSet for the forgetting check (skipped when None)
    trainable : optional bool mask of rows allowed in training (off-beat rows still tentative)
    centre : which hits set μ_d in eq. (2) (see :func:`rolypoly.targets.take_targets`)
    fast : :data:`THREADS` torch threads and fused Adam (``rolypoly bench finetune``);
        False is the plain reference path. Same decisions, losses equal within float rounding.
    mse_cache : a :class:`DatasetMSECache` kept by the caller across fine-tunes (the "before"
        of a model made by the previous fine-tune is then known); None: none kept

    Returns
    -------
    dict with ``accepted`` (bool), ``reason``, ``agent`` (the fine-tuned copy or None),
    ``tuned`` (the fine-tuned copy, also when refused, for inspection),
    ``targets`` (statistics), ``before``/``after`` figures, ``offsets``
    (``before``/``after``: what the model played and what the fine-tuned one
    plays on the take's rows, fractions of a bar), ``losses`` and ``seconds``
    (where the time went). ``reason`` says in words why the update was
    accepted or refused.
    """
    with torch_threads(THREADS if fast else None):
        return _finetune_take(agent, as_rows(rows), A=A, B=B, epochs=epochs, lr=lr, dataset=dataset,
                              margin=margin, trainable=trainable, centre=centre, progress=progress, fast=fast,
                              mse_cache=mse_cache if mse_cache is not None else DatasetMSECache())


def _finetune_take(agent, rows, *, A, B, epochs, lr, dataset, margin, trainable, centre, progress,
                   fast, mse_cache) -> dict:
    marks, times = [time.perf_counter()], {}

    def lap(name: str) -> None:  # seconds since the previous lap, and in all
        marks.append(time.perf_counter())
        times[name] = round(marks[-1] - marks[-2], 4)
        times["total"] = round(marks[-1] - marks[0], 4)

    yhat, diff = take_arrays(rows)
    X = np.ascontiguousarray(rows["features"], dtype=np.float32)
    result = take_targets(yhat, diff, A, B, centre=centre)
    report = {"rows": len(rows), "targets": result.stats.as_dict(), "accepted": False, "agent": None}
    if not result.update:
        report["reason"] = result.reason
        return report
    mask = result.mask if trainable is None else result.mask & np.asarray(trainable, bool)
    if not mask.any():
        report["reason"] = "no trainable hit with a partner onset (tentative off-beat rows only)"
        return report
    val_target = take_validation_targets(yhat, result.y, result.mask)
    report["seconds"] = times
    lap("targets")

    offsets = {}

    def figures(model, when: str) -> dict:
        with torch.inference_mode():
            pred = offsets[when] = _predict(model, X)
        out = {"take_mse_bar": float(np.mean((pred - val_target) ** 2)),
               "take_trained_mse_bar": float(np.mean((pred[mask] - result.y[mask]) ** 2))}
        if dataset is not None:
            out["dataset_mse_bar"] = dataset_mse(model, dataset, cache=mse_cache)
        return out

    report["before"] = figures(agent, "before")
    lap("before")
    tuned = copy.deepcopy(agent)
    report["losses"] = train_on_take(tuned, X, result.y, mask, epochs=epochs, lr=lr, progress=progress,
                                     fused=fast)
    report["tuned"] = tuned
    lap("train")
    report["after"] = after = figures(tuned, "after")
    report["offsets"] = offsets
    lap("after")
    bad = [k for k, v in after.items() if not math.isfinite(v)]
    if bad or not all_finite(tuned):
        report["reason"] = "refused: the update produced NaN or infinite values"
        return report
    reason = "accepted"
    if dataset is not None:
        grid = grid_mse(dataset)
        line = max(grid, report["before"]["dataset_mse_bar"])
        report["dataset_limit"] = limit = line * (1 + margin)
        report["dataset_grid_mse_bar"] = grid
        # In words: how far from the drummers' timing, against the model before or, when that
        # was worse than a drum machine on the grid, against the grid (the line that was drawn).
        what = "a drum machine on the grid" if grid >= report["before"]["dataset_mse_bar"] else "the model before"
        grew = after["dataset_mse_bar"] / line - 1
        allowed = ("no limit set" if not math.isfinite(margin) else f"up to {margin * 100:.0f} % more allowed"
                   if margin >= 0 else f"at least {-margin * 100:.0f} % less asked")
        change = f"{abs(grew) * 100:.0f} % {'more' if grew > 0 else 'less'} timing error than {what}; {allowed}"
        if after["dataset_mse_bar"] > limit:
            report["reason"] = (f"refused: Groove MIDI Dataset check: the drums would forget how drummers "
                                f"play ({change})")
            return report
        reason = f"accepted: the drums still play the Groove MIDI Dataset's grooves ({change})"
    report.update(accepted=True, agent=tuned, reason=reason)
    return report
