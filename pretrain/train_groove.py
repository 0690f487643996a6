"""Train a groove model (humanize, drumify, infill or transfer) on the Groove MIDI Dataset.

Adam, eq. (4) loss (:meth:`rolypoly.groove_model.GrooveModel.loss`), early
stopping on the validation split, fixed seeds, and a hard wall-clock cap so
that a model trains in at most :data:`HARD_CAP_MINUTES` on a 2-core laptop
(one thread each, so two can train side by side)::

    rolypoly pretrain groove --task humanize
    rolypoly pretrain groove --task transfer --grid triplet --minutes 5 --out /tmp/triplet

Writes ``groove_<task>.safetensors`` (weights and config) and
``groove_<task>.json`` (task, grid, sizes, data, per-epoch losses, measured
training time, validation figures) to ``out`` (the command's ``--out``, by
default :func:`rolypoly.paths.weights_out_dir`; the shipped weights are made
with ``--out rolypoly/weights``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rolypoly.groove_model import (GrooveEnsemble, GrooveModel, n_parameters,
                                   save_groove_model, steps_to_ms, tap, task_input, task_target_mask)

from .groove_data import load_groove_split

# -- training knobs ------------------------------------------------------------
LEARNING_RATE = 1e-3
BATCH = 64             # windows per step
MAX_EPOCHS = 100
PATIENCE = 5           # epochs without validation improvement before stopping
GRAD_CLIP = 1.0
SEED = 1234
THREADS = 1            # one thread: two models train side by side on 2 cores
MINUTES = 14.0         # default wall-clock budget of the training loop
HARD_CAP_MINUTES = 30.0  # never more, whatever --minutes says (issue 5)
#: Networks per task, trained from consecutive seeds and shipped as one ensemble. Humanize is
#: judged on timing MAE, where the members' mean beats any one of them.
MEMBERS = {"humanize": 4}
WORKERS = 2            # members trained at once (one thread each)
#: Share of drumify's training windows tapped from only some of the drums (:func:`partial_taps`).
PARTIAL_TAPS = 0.5
EVAL_BATCH = 512


def partial_taps(H, V, O, rng, p: float = PARTIAL_TAPS):
    """Drumify's training input: the taps of every hit or, in a share ``p`` of the windows, of some drums.

    A partner's rhythm (a bass line, a riff) is sparser than a drummer's
    taps: its onsets are where some of the drums would hit, not all of them.
    Windows whose taps come from a random half of the drum classes teach the
    model to write the rest of the kit around such a rhythm.

    >>> from rolypoly.groove_model import TAP_CLASS
    >>> rng = np.random.default_rng(0)
    >>> H = np.ones((4, 32, 9), np.float32)
    >>> taps = partial_taps(H, H, 0 * H, rng, p=1.0)[0]
    >>> bool(taps[..., TAP_CLASS].all())
    True
    """
    H, V, O = (np.asarray(a, np.float32) for a in (H, V, O))
    keep = rng.random((len(H), 1, H.shape[-1])) < 0.5
    some = rng.random(len(H)) < p
    sub = H * keep
    empty = sub.reshape(len(H), -1).sum(1) == 0
    use = some & ~empty  # a window whose chosen drums are silent keeps all its taps
    Hs = np.where(use[:, None, None], sub, H)
    return tap(Hs, V * Hs, O * Hs)


def _tensors(data, idx, task: str, instrument: str, rng=None):
    """Some windows as torch tensors: H_in, V_in, O_in (the task's input), H, V, O.

    With ``rng`` (training), drumify's taps are sometimes partial (:func:`partial_taps`).
    """
    H, V, O = data.H[idx], data.V[idx], data.O[idx]
    if task == "drumify" and rng is not None and PARTIAL_TAPS > 0:
        inputs = partial_taps(H, V, O, rng)
    else:
        inputs = task_input(task, H, V, O, instrument=instrument)
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in (*inputs, H, V, O)]


@torch.no_grad()
def evaluate_loss(model: GrooveModel, data, instrument: str) -> dict:
    """Teacher-forced loss per window over a whole split, and its parts (dropout off)."""
    model.eval()
    per_hit = ("velocity_mse", "offset_mse")
    total, sums, hits, n = 0.0, {}, 0.0, len(data)
    for a in range(0, n, EVAL_BATCH):
        idx = np.arange(a, min(n, a + EVAL_BATCH))
        loss, parts = model.loss(*_tensors(data, idx, model.task, instrument))
        total += float(loss) * len(idx)
        batch_hits = parts.pop("hits")
        hits += batch_hits
        for k, v in parts.items():
            # Per-hit figures are weighted by hits, the others by windows.
            sums[k] = sums.get(k, 0.0) + v * (batch_hits if k in per_hit else len(idx))
    return {"loss": total / n, **{k: v / (hits if k in per_hit else n) for k, v in sums.items()}}


def generate_split(model: GrooveModel, data, instrument: str, *, temperature: float = 0.0,
                   seed: int | None = None):
    """The model's (H, V, O) for every window of a split, at temperature 0 by default."""
    outs = []
    for a in range(0, len(data), EVAL_BATCH):
        idx = np.arange(a, min(len(data), a + EVAL_BATCH))
        H_in, V_in, O_in = task_input(model.task, data.H[idx], data.V[idx], data.O[idx], instrument=instrument)
        # Velocities at their mean: the residual measured here is what they are later drawn with.
        outs.append(model.generate(H_in, V_in, O_in, temperature=temperature, velocity_spread=0.0, seed=seed))
    return tuple(np.concatenate(p) for p in zip(*outs))


def residual_spreads(pred, data, both, min_notes: int = 10):
    """How far the drummers' velocities and offsets lie from the model's, on the notes of ``both``.

    Velocities: the standard deviation per class and per level of the
    predicted velocity (:data:`rolypoly.groove_model.VELOCITY_LEVELS`); a
    level with fewer than ``min_notes`` notes takes its class's. Offsets: per
    class. What generation draws velocities (and, above temperature 0,
    offsets) with.
    """
    from rolypoly.groove_model import VELOCITY_LEVELS

    (_, V, O), (_, V_true, O_true) = pred, data
    n_classes = V.shape[-1]
    sig_v = np.zeros((n_classes, len(VELOCITY_LEVELS) + 1), np.float32)
    sig_o = np.zeros(n_classes, np.float32)
    level = np.searchsorted(np.asarray(VELOCITY_LEVELS), V, side="left")
    for c in range(n_classes):
        sel = both[..., c]
        if sel.sum() < min_notes:
            continue
        resid = (V_true - V)[..., c]
        sig_o[c] = np.std((O_true - O)[..., c][sel])
        sig_v[c] = np.std(resid[sel])
        for k in range(sig_v.shape[1]):
            at = sel & (level[..., c] == k)
            if at.sum() >= min_notes:
                sig_v[c, k] = np.std(resid[at])
    return sig_v, sig_o


def validation_figures(model: GrooveModel, data, instrument: str, mean_velocity: float) -> dict:
    """Free-running figures on a split (temperature 0) beside the quantized baseline.

    Timing and velocity errors are on the drummer's hits of the predicted
    classes that the model also played; hits are scored by per-step F1.
    """
    H, V, O = generate_split(model, data, instrument)
    mask = task_target_mask(model.task, instrument=instrument)
    true = (data.H > 0.5) & mask
    pred = (H > 0.5) & mask
    both = true & pred
    bpm = np.broadcast_to(data.bpm[:, None, None], data.H.shape)
    err_o, err_v = (O - data.O)[both], (V - data.V)[both]
    tp, fp, fn = both.sum(), (pred & ~true).sum(), (true & ~pred).sum()
    figures = {
        "windows": len(data), "hits": int(true.sum()),
        "offset_mse_steps": float(np.mean(err_o ** 2)),
        "timing_mae_ms": float(np.mean(np.abs(steps_to_ms(err_o, bpm[both], data.grid)))),
        "velocity_mse": float(np.mean(err_v ** 2)),
        "hit_precision": float(tp / max(tp + fp, 1)), "hit_recall": float(tp / max(tp + fn, 1)),
        "hit_f1": float(2 * tp / max(2 * tp + fp + fn, 1)),
        "baseline_offset_mse_steps": float(np.mean(data.O[both] ** 2)),
        "baseline_timing_mae_ms": float(np.mean(np.abs(steps_to_ms(data.O[both], bpm[both], data.grid)))),
        "baseline_velocity_mse": float(np.mean((data.V[both] - mean_velocity) ** 2)),
    }
    sig_v, sig_o = residual_spreads((H, V, O), (data.H, data.V, data.O), both)
    figures["velocity_sigma"] = [[round(float(x), 4) for x in row] for row in sig_v]
    figures["offset_sigma"] = [round(float(x), 4) for x in sig_o]
    return figures


class BestState:
    """The model's state at its best validation loss so far, and the epochs since it last improved."""

    def __init__(self, min_delta: float):
        self.min_delta, self.loss, self.state, self.stale = min_delta, math.inf, None, 0

    def update(self, loss: float, model: torch.nn.Module) -> None:
        if loss < self.loss - self.min_delta:
            self.loss, self.stale = loss, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.stale += 1


class _Quiet:
    """A stand-in for a tqdm bar: the steps, nothing shown."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _fit(task: str, gmd, grid: str, instrument: str, seed: int, budget_s: float, epochs: int, patience: int,
         batch: int, limit: int | None, progress: bool, model_kwargs: dict | None, label: str = "") -> dict:
    """Train one network from a seed; its best state (by validation loss) and its history.

    Reads the splits itself (from the cache), so that it can run in a worker process.
    """
    from tqdm import tqdm

    started = time.time()
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_set = load_groove_split("train", gmd, grid=grid, limit=limit, progress=progress and not label)
    val_set = load_groove_split("validation", gmd, grid=grid, limit=limit and max(2, limit // 4),
                                progress=progress and not label)
    model = GrooveModel(task, grid=grid, instrument=instrument, **(model_kwargs or {}))
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    name = f"{task}{label}"
    history, best, stopped = [], BestState(1e-6), "max epochs"
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(train_set))
        n_steps = max(1, len(order) // batch)
        total, seen = 0.0, 0
        # Members in worker processes print one line per epoch, no bars (tqdm's lock would
        # leave a semaphore behind in each worker).
        bar = tqdm(range(n_steps), desc=f"{name} epoch {epoch}", unit="batch", disable=not progress,
                   file=sys.stderr, leave=False) if not label else _Quiet(n_steps)
        for i in bar:
            loss, _ = model.loss(*_tensors(train_set, order[i * batch:(i + 1) * batch], task, instrument, rng))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            total += loss.item() * batch
            seen += batch
            bar.set_postfix(loss=f"{total / seen:.3f}")
            if time.time() - started > budget_s:
                stopped = "time cap"
                break
        bar.close()
        val = evaluate_loss(model, val_set, instrument)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val["loss"],
                        "val_parts": {k: v for k, v in val.items() if k != "loss"},
                        "batches": i + 1, "seconds": round(time.time() - started, 1)})
        if progress:
            print(f"{name} epoch {epoch}: train {total / max(seen, 1):.4f} val {val['loss']:.4f} "
                  f"(velocity mse {val['velocity_mse']:.4f}, offset mse {val['offset_mse']:.4f}, "
                  f"hit bce {val['hit_bce']:.4f}) {time.time() - started:.0f} s", file=sys.stderr, flush=True)
        best.update(val["loss"], model)
        if stopped == "time cap":
            break
        if best.stale >= patience:
            stopped = "early stopping"
            break
    best_epoch = int(np.argmin([h["val_loss"] for h in history]) + 1)
    return {"seed": seed, "state": best.state, "epochs": history, "best_epoch": best_epoch, "stopped": stopped,
            "validation_loss": history[best_epoch - 1]["val_loss"], "train_seconds": round(time.time() - started, 1)}


def _fit_member(kwargs: dict) -> dict:
    return _fit(**kwargs)


def train(task: str, gmd=None, *, out, grid: str = "16th", instrument: str = "hihat",
          minutes: float = MINUTES, epochs: int = MAX_EPOCHS, limit: int | None = None, seed: int = SEED,
          patience: int = PATIENCE, batch: int = BATCH, progress: bool = True, model_kwargs=None,
          members: int | None = None) -> dict:
    """Train one task's model (or ensemble) into the folder ``out``; returns the metadata written there.

    ``members`` > 1 trains that many networks from seeds ``seed``, ``seed + 1``, ...,
    :data:`WORKERS` at a time, and ships them as one :class:`GrooveEnsemble`. Each
    member's budget is cut so that the whole stays within :data:`HARD_CAP_MINUTES`.
    """
    started = time.time()
    members = int(members or MEMBERS.get(task, 1))
    if members < 1:
        raise ValueError(f"members must be 1 or more, not {members}")
    workers = min(WORKERS, members)
    rounds = math.ceil(members / workers)
    # The cap covers every round plus the final figures (a couple of minutes).
    budget_min = min(float(minutes), (HARD_CAP_MINUTES - (2.0 if members > 1 else 0.0)) / rounds)
    jobs = [dict(task=task, gmd=gmd, grid=grid, instrument=instrument, seed=seed + k, budget_s=60.0 * budget_min,
                 epochs=epochs, patience=patience, batch=batch, limit=limit, progress=progress,
                 model_kwargs=model_kwargs, label=f" member {k + 1}/{members}" if members > 1 else "")
            for k in range(members)]
    if members == 1:
        fits = [_fit(**jobs[0])]
    else:
        import multiprocessing as mp

        # Load (and cache) the windows once before the workers read them.
        load_groove_split("train", gmd, grid=grid, limit=limit, progress=progress)
        load_groove_split("validation", gmd, grid=grid, limit=limit and max(2, limit // 4), progress=progress)
        with mp.get_context("spawn").Pool(workers) as pool:
            fits = pool.map(_fit_member, jobs, chunksize=1)

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    train_set = load_groove_split("train", gmd, grid=grid, limit=limit)
    val_set = load_groove_split("validation", gmd, grid=grid, limit=limit and max(2, limit // 4))
    nets = []
    for fit in fits:
        net = GrooveModel(task, grid=grid, instrument=instrument, **(model_kwargs or {}))
        net.load_state_dict(fit["state"])
        nets.append(net)
    model = nets[0] if members == 1 else GrooveEnsemble(nets)
    mean_velocity = float(train_set.V[train_set.H > 0.5].mean())
    figures = validation_figures(model, val_set, instrument, mean_velocity)
    model.velocity_sigma.copy_(torch.tensor(figures["velocity_sigma"]))
    model.offset_sigma.copy_(torch.tensor(figures["offset_sigma"]))
    torch.set_num_threads(threads)
    train_seconds = round(time.time() - started, 1)

    lead = fits[0]
    meta = {
        "task": task, "grid": grid, "instrument": instrument if task == "infill" else None,
        "config": model.config(), "parameters": n_parameters(model), "members": members,
        "data": {"dataset": "Groove MIDI Dataset, official split, 4/4 takes, 2-bar windows hop 1 bar",
                 "train_key": train_set.key, "validation_key": val_set.key,
                 "train_windows": len(train_set), "train_takes": len(train_set.names),
                 "validation_windows": len(val_set), "validation_takes": len(val_set.names),
                 "steps_per_window": int(train_set.H.shape[1]), "limit": limit,
                 "mean_train_velocity": round(mean_velocity, 4)},
        "settings": {"lr": LEARNING_RATE, "batch": batch, "max_epochs": epochs, "patience": patience,
                     "seed": seed, "threads": THREADS, "workers": workers,
                     "minutes_cap": min(float(minutes), HARD_CAP_MINUTES), "minutes_per_member": round(budget_min, 2),
                     "grad_clip": GRAD_CLIP, "torch": torch.__version__},
        "epochs": lead["epochs"], "best_epoch": lead["best_epoch"], "stopped": lead["stopped"],
        "validation_loss": lead["validation_loss"],
        "validation_loss_per_step": lead["validation_loss"] / train_set.H.shape[1],
        "validation": figures,
        "train_seconds": train_seconds,
        "train_minutes": round(train_seconds / 60, 2),
    }
    if members > 1:
        meta["member_runs"] = [{k: v for k, v in fit.items() if k != "state"} for fit in fits]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"groove_{task}"
    save_groove_model(model, stem.with_suffix(".safetensors"),
                      {"train_key": train_set.key, "best_epoch": lead["best_epoch"], "members": members,
                       "train_seconds": train_seconds})
    meta["weights_bytes"] = stem.with_suffix(".safetensors").stat().st_size
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def recalibrate(task: str, weights, gmd=None, *, instrument: str | None = None) -> dict:
    """Measure a trained model's residual spreads again on the validation split and store them.

    The weights are untouched; only the spreads that generation draws with
    (:func:`residual_spreads`) are rewritten, in the weights file and in the
    ``validation`` figures of the JSON beside it (when there is one). For
    models trained before a change in how the spreads are measured.
    """
    from rolypoly.agents import load_metadata
    from rolypoly.groove_model import load_groove_model

    started = time.time()
    weights = Path(weights)
    model = load_groove_model(task, weights)
    instrument = instrument or model.instrument
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    train_set = load_groove_split("train", gmd, grid=model.grid)
    val_set = load_groove_split("validation", gmd, grid=model.grid)
    mean_velocity = float(train_set.V[train_set.H > 0.5].mean())
    figures = validation_figures(model, val_set, instrument, mean_velocity)
    torch.set_num_threads(threads)
    model.velocity_sigma.copy_(torch.tensor(figures["velocity_sigma"]))
    model.offset_sigma.copy_(torch.tensor(figures["offset_sigma"]))
    save_groove_model(model, weights, load_metadata(weights))
    note = {"validation_key": val_set.key, "seconds": round(time.time() - started, 1)}
    meta_path = weights.with_suffix(".json")
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["validation"] = figures
        meta["recalibrated"] = note
        meta["weights_bytes"] = weights.stat().st_size
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {"task": task, "weights": str(weights), "velocity_sigma": figures["velocity_sigma"], **note}

