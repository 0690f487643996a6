"""Train a bar generator (continuation or fill) on the Groove MIDI Dataset.

::

    rolypoly pretrain continuation --out rolypoly/weights    # the shipped weights
    rolypoly pretrain fill --out rolypoly/weights

Data (:mod:`rolypoly.pretrain.bar_data`): the official train split, 4/4
takes as bars on the triplet grid; early stopping on the validation split;
figures on the validation and test splits. Adam, fixed seeds, one thread, a
wall-clock cap (:data:`MINUTES`, never over :data:`HARD_CAP_MINUTES`).

**Continuation.** Every bar j ≥ 1 of a ``beat`` take, with at least one
hit, is a target; its context is bars j−2 and j−1 of the same take (j−2
silent for j = 1). The partner is simulated from bar j itself — the bassist
plays with the drummer, so the partner's rhythm in a bar is where that
bar's drums hit (:func:`simulate_partner`):

* in :data:`ALL_TAPS` of the bars, every drum onset of bar j collapsed to
  one voice (Tap2Drum, GrooVAE 4.3): onset at each step with a hit, accent =
  the loudest hit's velocity, offset = that hit's offset;
* in the others, a partner who plays with only part of the kit: the kick
  always, each other class with probability :data:`KEEP_CLASS`, the same
  collapse, then each onset dropped with probability :data:`DROP_ONSET`.

Live, the partner's *last* bar stands for its next one (a riff repeats).
So that one network can play every ``follow`` setting, each training bar
hides the partner with probability :data:`HIDE_PARTNER` (learns to continue
the drums alone: follow 0), hides the drums with :data:`HIDE_DRUMS` (learns
to play the partner's rhythm alone: follow 1), and hides the style with
:data:`HIDE_STYLE` (the "any style" embedding).

**Fill.** Every bar of a ``fill`` take with at least :data:`FILL_MIN_HITS`
hits is a target. The GMD records fills as takes of their own, so the
groove a fill leaves is taken from the same drummer's session: a bar (and
the one before it) of a ``beat`` take of the same session, style and tempo,
drawn anew every epoch in training and fixed (the middle one) in
evaluation. Those beat takes are looked for in all three splits (only 35 of
the 128 validation and test fills have one in their own split); they are
the fill's input, never a target. A fill with no such beat take is written
from its style alone. What the fill returns to is not given: the GMD's fill
takes end with the fill.

Figures (``<out>/generate_<kind>.json`` beside the weights): hit
precision, recall and F1 against the true bar (temperature 0), velocity
MAE (MIDI units) and offset MAE (ms) on the hits both played, for the model
and for the baseline "repeat the previous bar" (fill: "play the groove bar
it leaves").
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rolypoly.drum_map import CLASS_NAMES, N_CLASSES
from rolypoly.generate_model import (CONTEXT_BARS, GRID, NO_STYLE, POCKET_STEPS, STYLES, BarModel,
                                     decode_hits, pocket_direction, save_bar_model,
                                     step_inputs)
from rolypoly.groove_model import n_parameters, steps_to_ms, tap, TAP_CLASS

from .bar_data import BarSet, concat_bars, load_bars
from .train_groove import BestState

# -- training knobs ------------------------------------------------------------
LEARNING_RATE = 1e-3
BATCH = 64
MAX_EPOCHS = 100
PATIENCE = 4
GRAD_CLIP = 1.0
SEED = 1234
THREADS = 1              # one thread: the two models train side by side on 2 cores
MINUTES = 15.0           # default wall-clock budget of the training loop
HARD_CAP_MINUTES = 30.0  # never more, whatever --minutes says
EVAL_BATCH = 256
# -- the simulated partner and the hidden inputs (continuation) -----------------
ALL_TAPS = 0.5           # share of bars whose partner taps every drum onset
KEEP_CLASS = 0.5         # otherwise: each class but the kick kept with this probability
DROP_ONSET = 0.2         # ... and each onset left out with this one
HIDE_PARTNER = 0.25
HIDE_DRUMS = 0.2
HIDE_STYLE = 0.15
# -- fills ---------------------------------------------------------------------
FILL_MIN_HITS = 3


def simulate_partner(H, V, O, rng=None) -> np.ndarray:
    """The partner's rhythm simulated from drum bars (N, S, 9): (N, S, 3) onset, accent, offset.

    Without ``rng``, every onset tapped (Tap2Drum, the evaluation's partner);
    with it, the mixture of the module docstring.

    >>> H = np.zeros((1, 48, 9), np.float32); H[0, ::12, 0] = 1; H[0, 6, 2] = 1
    >>> int(simulate_partner(H, 0.5 * H, 0 * H)[0, :, 0].sum())
    5
    """
    H, V, O = (np.asarray(a, np.float32) for a in (H, V, O))
    if rng is not None:
        n = len(H)
        keep = rng.random((n, 1, N_CLASSES)) < KEEP_CLASS
        keep[..., 0] = True  # the bass locks to the kick
        everything = rng.random(n) < ALL_TAPS
        keep = keep | everything[:, None, None]
        H = H * keep
    th, tv, to = (a[..., TAP_CLASS] for a in tap(H, V * H, O * H))
    if rng is not None:
        drop = (rng.random(th.shape) < DROP_ONSET) & ~everything[:, None]
        th = th * ~drop
    return np.stack([th, tv * th, to * th], axis=-1).astype(np.float32)


def hvo(bars: BarSet, idx) -> np.ndarray:
    """Bars as steps of H|V|O (…, S, 27); index −1 (no bar) gives silence."""
    idx = np.asarray(idx)
    out = np.concatenate([bars.H[idx], bars.V[idx] * bars.H[idx], bars.O[idx] * bars.H[idx]], axis=-1)
    return np.where((idx >= 0)[..., None, None], out, 0.0).astype(np.float32)


class Examples:
    """Targets and their context bars (indices into a BarSet) for one kind of model."""

    def __init__(self, kind: str, bars: BarSet, grooves: BarSet | None = None):
        """``grooves``: fill only, the bars the grooves fills leave are found in (default ``bars``)."""
        self.kind, self.bars = kind, bars
        self.source = bars if kind == "continuation" or grooves is None else grooves
        take, j = bars.take_of_bar, bars.bar_in_take()
        hits = bars.H.sum(axis=(1, 2))
        if kind == "continuation":
            self.target = np.flatnonzero(~bars.fill[take] & (j >= 1) & (hits > 0))
            self.context = np.stack([np.where(j[self.target] >= k, self.target - k, -1)
                                     for k in range(CONTEXT_BARS, 0, -1)], axis=1)
            self.choices = None
        else:
            self.target = np.flatnonzero(bars.fill[take] & (hits >= FILL_MIN_HITS))
            # The groove each fill leaves: bars of beat takes of the same session, style and tempo.
            src = self.source
            groove = {}
            for k in np.flatnonzero(~src.fill):
                groove.setdefault((src.session[k], int(src.style[k]), float(src.bpm[k])), []).append(k)
            ok = (src.bar_in_take() >= 1) & (src.H.sum(axis=(1, 2)) > 0) & ~src.fill[src.take_of_bar]
            self.choices = []
            for t in self.target:
                ks = groove.get((bars.session[take[t]], int(bars.style[take[t]]), float(bars.bpm[take[t]])), [])
                self.choices.append(np.concatenate([np.flatnonzero(ok[src.starts[k]:src.starts[k + 1]])
                                                    + src.starts[k] for k in ks]).astype(np.int64)
                                    if ks else np.zeros(0, np.int64))
            self.context = self.fixed_context()
        self.style = bars.style[take[self.target]]
        self.bpm = bars.bpm[take[self.target]]

    def __len__(self) -> int:
        return len(self.target)

    def fixed_context(self, rng=None) -> np.ndarray:
        """Fill: the groove bar each fill leaves (random with ``rng``, else the middle candidate), and the one before."""
        last = np.array([(c[rng.integers(len(c))] if rng is not None else c[len(c) // 2]) if len(c) else -1
                         for c in self.choices], np.int64)
        return np.stack([np.where(last >= 0, last - 1, -1), last], axis=1)[:, -CONTEXT_BARS:]

    def batch(self, idx, rng=None, *, partner: str = "both"):
        """Tensors for examples ``idx``: inputs, style, flags, and the target H, V, O.

        With ``rng`` (training): the simulated partner and the hidden inputs of the module
        docstring. Without: every onset tapped, the style given, and ``partner`` one of
        "both", "drums" (partner hidden: follow 0), "partner" (drums hidden: follow 1).
        """
        b = self.bars
        tgt = self.target[idx]
        ctx = hvo(self.source, self.context[idx])
        H, V, O = b.H[tgt], b.V[tgt], b.O[tgt]
        style = self.style[idx].copy()
        n = len(idx)
        if rng is not None:
            style[rng.random(n) < HIDE_STYLE] = NO_STYLE
        if self.kind == "fill":
            flags = np.stack([(ctx[..., :N_CLASSES].sum(axis=(1, 2, 3)) > 0), np.zeros(n, bool)], 1)
            x = step_inputs(ctx)
        else:
            part = simulate_partner(H, V, O, rng)
            if rng is not None:
                r = rng.random(n)
                hide_p, hide_d = r < HIDE_PARTNER, (r >= HIDE_PARTNER) & (r < HIDE_PARTNER + HIDE_DRUMS)
            else:
                hide_p = np.full(n, partner == "drums")
                hide_d = np.full(n, partner == "partner")
            part[hide_p] = 0.0
            ctx[hide_d] = 0.0
            flags = np.stack([ctx[..., :N_CLASSES].sum(axis=(1, 2, 3)) > 0, part[..., 0].sum(1) > 0], 1)
            x = step_inputs(ctx, part)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
        return t(x), t(style, torch.long), t(flags), t(H), t(V), t(O)


@torch.no_grad()
def predict(model: BarModel, ex: Examples, *, partner: str = "both"):
    """The model's bars (temperature 0, density 0.5, no pocket) for every example: H, V, O."""
    model.eval()
    outs = []
    for a in range(0, len(ex), EVAL_BATCH):
        x, style, flags, *_ = ex.batch(np.arange(a, min(len(ex), a + EVAL_BATCH)), partner=partner)
        logits, v, o = model(x, style, flags)
        H = decode_hits(logits.numpy())
        outs.append((H, v.numpy() * H, o.numpy() * H))
    return tuple(np.concatenate(p) for p in zip(*outs))


def bar_metrics(pred, true, bpm) -> dict:
    """Hit precision, recall and F1 per cell; velocity MAE (MIDI) and offset MAE (ms) on the hits both played.

    >>> H = np.zeros((1, 48, 9)); H[0, 0, 0] = 1
    >>> bar_metrics((H, H, H * 0.1), (H, H, H * 0), np.array([120.0]))["hit_f1"]
    1.0
    """
    (H, V, O), (Ht, Vt, Ot) = pred, true
    p, t = np.asarray(H) > 0.5, np.asarray(Ht) > 0.5
    both = p & t
    tp, fp, fn = int(both.sum()), int((p & ~t).sum()), int((t & ~p).sum())
    bpm_cell = np.broadcast_to(np.asarray(bpm, np.float64)[:, None, None], p.shape)
    err_ms = np.abs(steps_to_ms((np.asarray(O) - Ot)[both], bpm_cell[both], GRID))
    return {"hit_precision": round(tp / max(tp + fp, 1), 4), "hit_recall": round(tp / max(tp + fn, 1), 4),
            "hit_f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4),
            "velocity_mae": round(float(np.mean(np.abs(np.asarray(V) - Vt)[both]) * 127), 2) if tp else None,
            "offset_mae_ms": round(float(err_ms.mean()), 2) if tp else None,
            "hits_true": int(t.sum()), "hits_played": int(p.sum())}


def class_shares(H) -> dict:
    """Share of the hits on each drum class."""
    n = np.asarray(H).reshape(-1, N_CLASSES).sum(0)
    return {name: round(float(c / max(n.sum(), 1)), 4) for name, c in zip(CLASS_NAMES, n)}


def figures(model: BarModel, ex: Examples) -> dict:
    """The model against the baseline on one split (module docstring)."""
    if not len(ex):
        return {"bars": 0}
    b = ex.bars
    true = tuple(a[ex.target] for a in (b.H, b.V, b.O))
    last = ex.context[:, -1]
    src = ex.source
    prev = tuple(np.where((last >= 0)[:, None, None], a[last], 0.0) for a in (src.H, src.V, src.O))
    out = {"bars": len(ex), "model": bar_metrics(predict(model, ex), true, ex.bpm)}
    if ex.kind == "continuation":
        out["baseline_repeat_last_bar"] = bar_metrics(prev, true, ex.bpm)
        out["model_follow_0"] = bar_metrics(predict(model, ex, partner="drums"), true, ex.bpm)
        out["model_follow_1"] = bar_metrics(predict(model, ex, partner="partner"), true, ex.bpm)
        out["partner"] = "every drum onset of the true next bar, one voice (Tap2Drum)"
    else:
        out["baseline_groove_bar"] = bar_metrics(prev, true, ex.bpm)
        out["with_groove"] = int((last >= 0).sum())
        out["class_shares"] = {"true_fills": class_shares(true[0]), "model": class_shares(predict(model, ex)[0]),
                               "groove_bars": class_shares(prev[0])}
    return out


def _epoch_loss(model: BarModel, ex: Examples) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for a in range(0, len(ex), EVAL_BATCH):
            idx = np.arange(a, min(len(ex), a + EVAL_BATCH))
            total += float(model.loss(*ex.batch(idx))[0]) * len(idx)
    return total / len(ex)


def train(kind: str, gmd=None, *, out, minutes: float = MINUTES, epochs: int = MAX_EPOCHS,
          limit: int | None = None, seed: int = SEED, patience: int = PATIENCE, progress: bool = True) -> dict:
    """Train a bar model into the folder ``out``; returns the metadata written beside the weights."""
    started = time.time()
    budget_s = 60.0 * min(float(minutes), HARD_CAP_MINUTES)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    splits = {s: load_bars(s, gmd, limit=limit if s == "train" else limit and max(2, limit // 2), progress=progress)
              for s in ("train", "validation", "test")}
    grooves = concat_bars(splits.values()) if kind == "fill" else None
    ex = {s: Examples(kind, b, grooves) for s, b in splits.items()}
    if not len(ex["train"]) or not len(ex["validation"]):
        from rolypoly.errors import DatasetError
        raise DatasetError(f"no {kind} bars in this selection of the dataset")
    model = BarModel(kind)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    history, best, stopped = [], BestState(1e-4), "max epochs"
    train_ex = ex["train"]
    for epoch in range(1, epochs + 1):
        model.train()
        if kind == "fill":
            train_ex.context = train_ex.fixed_context(rng)
        order = rng.permutation(len(train_ex))
        n_steps = max(1, len(order) // BATCH)
        total = 0.0
        for i in range(n_steps):
            loss, _ = model.loss(*train_ex.batch(order[i * BATCH:(i + 1) * BATCH], rng))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            total += loss.item()
            if time.time() - started > budget_s:
                stopped = "time cap"
                break
        val = _epoch_loss(model, ex["validation"])
        history.append({"epoch": epoch, "train_loss": round(total / (i + 1), 4), "val_loss": round(val, 4),
                        "batches": i + 1, "seconds": round(time.time() - started, 1)})
        if progress:
            print(f"{kind} epoch {epoch}: train {total / (i + 1):.3f} val {val:.3f} "
                  f"{time.time() - started:.0f} s", file=sys.stderr, flush=True)
        best.update(val, model)
        if stopped == "time cap":
            break
        if best.stale >= patience:
            stopped = "early stopping"
            break
    model.load_state_dict(best.state)
    best_epoch = int(np.argmin([h["val_loss"] for h in history]) + 1)
    meta = {"epochs": history, "best_epoch": best_epoch, "stopped": stopped,
            "train_seconds": round(time.time() - started, 1)}
    meta["train_minutes"] = round(meta["train_seconds"] / 60, 2)
    settings = {"lr": LEARNING_RATE, "batch": BATCH, "max_epochs": epochs, "patience": patience, "seed": seed,
                "threads": THREADS, "minutes_cap": budget_s / 60, "grad_clip": GRAD_CLIP,
                "all_taps": ALL_TAPS, "keep_class": KEEP_CLASS, "drop_onset": DROP_ONSET,
                "hide_partner": HIDE_PARTNER, "hide_drums": HIDE_DRUMS, "hide_style": HIDE_STYLE,
                "torch": torch.__version__}
    try:
        return _finish(kind, model, splits, ex, Path(out), {**meta, "settings": settings, "limit": limit})
    finally:
        torch.set_num_threads(threads)


def refigure(kind: str, weights, gmd=None) -> dict:
    """Measure trained weights again (spreads, pocket, held-out figures) without training; rewrites both files.

    For weights whose figures were measured by an earlier version of the
    decoding or the figures; the training record in the JSON is kept.
    """
    from rolypoly.agents import load_metadata
    from rolypoly.generate_model import load_bar_model

    weights = Path(weights)
    model = load_bar_model(kind, weights)
    meta_path = weights.with_suffix(".json")
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        limit = old.get("data", {}).get("limit")
        splits = {s: load_bars(s, gmd, limit=limit if s == "train" else limit and max(2, limit // 2))
                  for s in ("train", "validation", "test")}
        grooves = concat_bars(splits.values()) if kind == "fill" else None
        ex = {s: Examples(kind, b, grooves) for s, b in splits.items()}
        keep = {k: old[k] for k in ("epochs", "best_epoch", "stopped", "train_seconds", "train_minutes", "settings")
                if k in old}
        header = load_metadata(weights)
        return _finish(kind, model, splits, ex, weights.parent, {**keep, "limit": limit}, header)
    finally:
        torch.set_num_threads(threads)


def _finish(kind, model, splits, ex, out: Path, meta: dict, header: dict | None = None) -> dict:
    """Pocket direction, offset spreads and held-out figures; write the weights and their JSON."""
    model.eval()
    # Pushed / laid back: the direction drummers' takes lean in, from the train beats.
    tr = splits["train"]
    beat = ~tr.fill[tr.take_of_bar]
    direction, sigma = pocket_direction(tr.O[beat], tr.H[beat], tr.take_of_bar[beat])
    model.pocket.copy_(torch.from_numpy(direction * POCKET_STEPS))
    # Offsets drawn above temperature 0 spread as the model's validation residual.
    H, _, O = predict(model, ex["validation"])
    t = ex["validation"].target
    both = (H > 0.5) & (splits["validation"].H[t] > 0.5)
    resid = O - splits["validation"].O[t]
    model.offset_sigma.copy_(torch.tensor([float(np.std(resid[..., c][both[..., c]])) if both[..., c].sum() > 10
                                           else 0.0 for c in range(N_CLASSES)]))
    results = {s: figures(model, ex[s]) for s in ("validation", "test")}

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"generate_{kind}.safetensors"
    limit = meta.pop("limit", None)
    save_bar_model(model, weights, header or {"train_key": tr.key, "best_epoch": meta.get("best_epoch"),
                                              "train_seconds": meta.get("train_seconds")})
    meta = {
        "kind": kind, "grid": GRID, "config": model.config(), "parameters": n_parameters(model),
        "styles": list(STYLES),
        "data": {"dataset": "Groove MIDI Dataset, official split, 4/4 takes, bars on the triplet grid",
                 "train_key": tr.key, "train_bars": len(ex["train"]), "validation_bars": len(ex["validation"]),
                 "test_bars": len(ex["test"]), "limit": limit},
        **meta,
        "pocket": {"direction": [round(float(x), 4) for x in direction], "take_lean_sigma_steps": round(sigma, 4),
                   "steps_per_unit": POCKET_STEPS,
                   "ms_per_unit_at_120bpm": {c: round(float(steps_to_ms(x, 120.0, GRID)), 2)
                                             for c, x in zip(CLASS_NAMES, model.pocket.numpy())}},
        "offset_sigma_steps": [round(float(x), 4) for x in model.offset_sigma],
        **results,
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
