"""Your own style from a dozen clips: fine-tune the groove models on the player's MIDI files.

::

    rolypoly groove learn my-clips/                       # version "my-clips" beside the shipped models
    rolypoly bench generate --continuation my-clips       # any option taking bar-model weights takes the name
    rolypoly groove humanize beat.mid -o out.mid --weights my-clips

R-VAE's point (Vigliensoni et al. 2020): a musician's own small corpus, a
few minutes of training on a laptop, a model that plays like the corpus. Two
of rolypoly's models learn from the clips, each starting from its shipped
weights:

* the **continuation** model of live generation (next bar from the last two,
  the partner's taps and a style; :mod:`rolypoly.pretrain.train_generate`),
  all its weights: the clips' 4/4 bars on the triplet grid, the partner
  simulated from each bar as in pretraining;
* the **humanize** model of the groove tools (GrooVAE), the output heads of
  every member of its ensemble only: the clips' 2-bar windows on its grid.
  Trained whole, its LSTMs learn a dozen clips by heart within 60 steps
  (train loss 2.4 → 0.9) and play other clips worse.

The clips are split by file: every fourth clip, from the second, is held out
(at least one), and the loss of each model on the held-out clips is measured
before and after, with the same fixed inputs (every onset tapped, style as
given); so are the continuation's note F1 and the humanizer's timing MAE. A
fixed number of steps (no early stopping on the held-out clips) at a small
learning rate, weights pulled towards the shipped ones (:data:`ANCHOR`), so
a dozen clips bend the model rather than replace it. A model whose held-out
loss did not go down (the humanizer: or whose timing MAE went up) is not kept: the version then plays the shipped one in
its place (:func:`rolypoly.paths.named_weights`), and when neither is kept
no version is written (one line says so).

The version is written to ``<weights>/learned/NAME/`` (:func:`rolypoly.paths.learned_dir`;
``$ROLYPOLY_WEIGHTS``, else the user data folder), never over the shipped
files, with ``learn.json`` (clips, bars, losses before and after, settings)
and each kept model's weights under its shipped file name.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rolypoly.errors import RolypolyError
from rolypoly.generate_model import GRID, NO_STYLE, STYLES, load_bar_model, save_bar_model, style_index

from .bar_data import BarSet, whole_bars
from .train_generate import Examples, _epoch_loss, bar_metrics, predict

#: Files read as clips.
MIDI_SUFFIXES = (".mid", ".midi")
#: Fewest bars (continuation targets) to learn from, and to hold out.
MIN_TRAIN_BARS = 8
MIN_HELD_OUT_BARS = 2
#: Every HOLD_OUT-th clip (from the second) is held out.
HOLD_OUT = 4
STEPS = 150                # optimiser steps per model
BATCH = 32
LEARNING_RATE = 1e-4
GRAD_CLIP = 1.0
#: Weight of the pull towards the shipped weights (L2-SP: Σ (θ − θ₀)², per parameter).
ANCHOR = 1e-2
SEED = 1234
THREADS = 1


def read_clips(folder, *, grids=(GRID,)):
    """The MIDI files of ``folder`` (and below), read on each grid; the ones that fail, one line each.

    Returns ``(clips, skipped)``: clips as ``(path, {grid: Groove})`` in
    name order, skipped as lines "file: problem".
    """
    from rolypoly.groove_grid import read_groove

    folder = Path(folder)
    if not folder.is_dir():
        raise RolypolyError(f"{folder}: not a folder of MIDI clips")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise RolypolyError(f"{folder}: no MIDI clips in it (.mid or .midi files)")
    clips, skipped = [], []
    for path in files:
        try:
            grooves = {g: read_groove(path, grid=g) for g in grids}
        except RolypolyError as e:
            skipped.append(str(e) if str(path) in str(e) else f"{path}: {e}")
            continue
        clips.append((path, grooves))
    return clips, skipped


def clip_bars(clips, style: int = NO_STYLE) -> tuple[BarSet, list[str]]:
    """The clips' whole 4/4 bars on the generation grid as a BarSet; clips without one, one line each."""
    parts, names, bpms, skipped = [], [], [], []
    for path, grooves in clips:
        groove = grooves[GRID]
        bars = whole_bars(groove)
        if bars is None:
            skipped.append(f"{path}: no whole 4/4 bar at its start")
            continue
        parts.append(bars)
        names.append(str(path))
        bpms.append(float(groove.bpm[0]))
    if not parts:
        return None, skipped
    H, V, O = (np.concatenate(a) for a in zip(*parts))
    starts = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])]).astype(np.int64)
    n = len(parts)
    return BarSet(H, V, O, starts, names, np.full(n, style, np.int64), np.zeros(n, bool), names,
                  np.array(bpms, np.float32)), skipped


def _subset(bars: BarSet, takes) -> BarSet:
    takes = list(takes)
    H, V, O = (np.concatenate([a[bars.starts[k]:bars.starts[k + 1]] for k in takes]) for a in (bars.H, bars.V, bars.O))
    starts = np.concatenate([[0], np.cumsum([bars.starts[k + 1] - bars.starts[k] for k in takes])]).astype(np.int64)
    pick = lambda xs: [xs[k] for k in takes]  # noqa: E731
    return BarSet(H, V, O, starts, pick(bars.names), bars.style[takes], bars.fill[takes], pick(bars.session),
                  bars.bpm[takes])


def held_out_clips(n: int) -> np.ndarray:
    """Which of ``n`` clips are held out: every :data:`HOLD_OUT`-th from the second, at least one.

    >>> held_out_clips(12).tolist(), held_out_clips(2).tolist()
    ([1, 5, 9], [1])
    """
    return np.arange(1, n, HOLD_OUT) if n > 1 else np.zeros(0, np.int64)


class _Anchor:
    """Σ (θ − θ₀)² over a model's parameters: the pull towards the weights it started from."""

    def __init__(self, model: torch.nn.Module):
        self.start = [p.detach().clone() for p in model.parameters()]

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        return sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), self.start))


def _fit(model, batches, *, steps: int, lr: float, anchor: float, rng, only=None) -> list[float]:
    """Adam for ``steps`` steps on ``batches(rng) -> loss``, pulled towards the start; the loss per step.

    ``only``: the one sub-module trained (the others stay as they are).
    """
    pull = _Anchor(model)
    params = list((only or model).parameters())
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = batches(rng)
        total = loss + anchor * pull(model)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def learn_continuation(train: BarSet, held: BarSet, *, weights=None, steps: int = STEPS, lr: float = LEARNING_RATE,
                       anchor: float = ANCHOR, seed: int = SEED):
    """Fine-tune the continuation model; returns the model and its figures before and after."""
    model = load_bar_model("continuation", weights)
    tr, ho = Examples("continuation", train), Examples("continuation", held)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def figures():
        true = tuple(a[ho.target] for a in (held.H, held.V, held.O))
        m = bar_metrics(predict(model, ho), true, ho.bpm)
        return {"loss": round(_epoch_loss(model, ho), 4), "hit_f1": m["hit_f1"], "offset_mae_ms": m["offset_mae_ms"]}

    before = figures()
    batch = min(BATCH, len(tr))
    losses = _fit(model, lambda r: model.loss(*tr.batch(r.choice(len(tr), batch, replace=False), r))[0],
                  steps=steps, lr=lr, anchor=anchor, rng=rng)
    return model, {"train_bars": len(tr), "held_out_bars": len(ho), "before": before, "after": figures(),
                   "train_loss_first_last": [round(float(np.mean(losses[:10])), 4), round(float(np.mean(losses[-10:])), 4)]}


@dataclass
class _Windows:
    """2-bar windows (N, T, 9) and their tempi, as the groove trainer reads them."""

    H: np.ndarray
    V: np.ndarray
    O: np.ndarray
    bpm: np.ndarray

    def __len__(self) -> int:
        return len(self.H)


def _windows(clips, keep, grid: str):
    """The 2-bar windows of the clips ``keep`` on ``grid`` (H, V, O and tempo per window)."""
    from rolypoly.groove_grid import windows

    parts, bpm = [], []
    for k in keep:
        groove = clips[k][1][grid]
        w = windows(groove)
        if len(w[0]) and w[0].shape[1] == 2 * 4 * groove.steps_per_beat:  # 4/4 windows only
            parts.append(w)
            bpm.append(np.full(len(w[0]), float(groove.bpm[0])))
    if not parts:
        return None
    H, V, O = (np.concatenate(a) for a in zip(*parts))
    return _Windows(H, V, O, np.concatenate(bpm))


def learn_humanize(clips, train_idx, held_idx, *, weights=None, steps: int = STEPS, lr: float = LEARNING_RATE,
                   anchor: float = ANCHOR, seed: int = SEED, head_only: bool = True):
    """Fine-tune every member of the humanize model; returns it and its figures (None: no 4/4 windows)."""
    from rolypoly.groove_model import load_groove_model, task_input

    from .groove_metrics import timing_mae_ms
    from .train_groove import _tensors, evaluate_loss

    model = load_groove_model("humanize", weights)
    train, held = _windows(clips, train_idx, model.grid), _windows(clips, held_idx, model.grid)
    if train is None or held is None:
        return None, {"skipped": "no whole 4/4 two-bar windows among the training or the held-out clips"}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def figures():
        loss = float(np.mean([evaluate_loss(m, held, model.instrument)["loss"] for m in model.networks()]))
        _, _, O = model.generate(*task_input("humanize", held.H, held.V, held.O), velocity_spread=0.0)
        mae = timing_mae_ms(held.O, O, held.H > 0.5, held.bpm, steps_per_beat=model.spb)
        return {"loss": round(loss, 4), "timing_mae_ms": round(float(mae), 3)}

    before = figures()
    batch = min(BATCH, len(train.H))
    for net in model.networks():
        _fit(net, lambda r: net.loss(*_tensors(train, r.choice(len(train.H), batch, replace=False), "humanize",
                                               model.instrument))[0],
             steps=steps, lr=lr, anchor=anchor, rng=rng, only=net.head if head_only else None)
    model.eval()
    return model, {"members": len(model.networks()), "train_windows": int(len(train.H)),
                   "held_out_windows": int(len(held.H)), "before": before, "after": figures()}


def learn(folder, *, name: str | None = None, style: str | None = None, steps: int = STEPS, replace: bool = False,
          humanize: bool = True, continuation_weights=None, humanize_weights=None, seed: int = SEED,
          progress=None) -> dict:
    """Learn a version of the groove models from the MIDI clips in ``folder`` (module docstring).

    Parameters
    ----------
    folder : folder of MIDI clips (read recursively)
    name : the version's name (default: the folder's name)
    style : the style the clips are learned as (default: none, the "any style" embedding)
    steps : optimiser steps per model
    replace : write over an earlier version of that name
    humanize : also fine-tune the humanize model
    continuation_weights, humanize_weights : start from these (default: shipped)
    progress : callable taking one line (None: quiet)
    """
    from rolypoly.groove_model import save_groove_model
    from rolypoly.paths import checked_path, learned_dir

    say = progress or (lambda line: None)
    started = time.perf_counter()
    folder = Path(folder)
    name = name or folder.resolve().name
    if not name or Path(name).name != name or name.startswith("."):
        raise RolypolyError(f"version name {name!r}: must be a plain name (letters, digits, - or _)")
    if steps < 1:
        raise RolypolyError(f"--steps {steps}: must be 1 or more")
    out = checked_path(learned_dir() / name, "version")
    if out.exists() and not replace:
        raise RolypolyError(f"{out}: a version named {name!r} exists already (choose another --name, or --replace)")
    s = style_index(style)
    from rolypoly.groove_model import default_groove_weights, load_groove_model

    grids = {GRID}
    if humanize:
        grids.add(load_groove_model("humanize", humanize_weights).grid)
    clips, skipped = read_clips(folder, grids=tuple(sorted(grids)))
    bars, no_bars = clip_bars(clips, s)
    skipped += no_bars
    for line in skipped:
        say(f"skipped {line}")
    if bars is None:
        raise RolypolyError(f"{folder}: none of its {len(clips) + len(skipped)} MIDI files is a usable clip "
                            "(a drum part with whole 4/4 bars)")
    usable = [k for k, (p, _) in enumerate(clips) if str(p) in bars.names]
    clips = [clips[k] for k in usable]
    if len(clips) < 2:
        raise RolypolyError(f"{folder}: too few clips to learn from: {len(clips)} usable (need 2 or more: "
                            "one at least is held out to measure the new version)")
    held = held_out_clips(len(clips))
    train_idx = [k for k in range(len(clips)) if k not in set(held.tolist())]
    train_bars, held_bars = _subset(bars, train_idx), _subset(bars, held)
    n_train, n_held = len(Examples("continuation", train_bars)), len(Examples("continuation", held_bars))
    if n_train < MIN_TRAIN_BARS or n_held < MIN_HELD_OUT_BARS:
        raise RolypolyError(
            f"{folder}: too few bars to learn from: {n_train} bars to learn and {n_held} held out in {len(clips)} "
            f"clips (need {MIN_TRAIN_BARS} and {MIN_HELD_OUT_BARS}; a bar counts when it has hits and is not its "
            "clip's first)")
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        say(f"learning from {len(train_idx)} clips ({n_train} bars), holding out {len(held)} ({n_held} bars)")
        cont, cont_fig = learn_continuation(train_bars, held_bars, weights=continuation_weights, steps=steps,
                                            seed=seed)
        say(f"continuation: held-out loss {cont_fig['before']['loss']} -> {cont_fig['after']['loss']}")
        hum, hum_fig = (None, {"skipped": "not asked for"})
        if humanize:
            hum, hum_fig = learn_humanize(clips, train_idx, held.tolist(), weights=humanize_weights, steps=steps,
                                          seed=seed)
            if hum is not None:
                say(f"humanize: held-out loss {hum_fig['before']['loss']} -> {hum_fig['after']['loss']}")
    finally:
        torch.set_num_threads(threads)
    # A model that plays the held-out clips worse than it started is not kept (the version then
    # plays the shipped one there): a dozen clips can pull a model towards those clips alone.
    # The humanizer's loss mixes velocity and timing: its timing must not get worse either.
    cont_fig["kept"] = bool(cont_fig["after"]["loss"] < cont_fig["before"]["loss"])
    if hum is not None:
        hum_fig["kept"] = bool(hum_fig["after"]["loss"] < hum_fig["before"]["loss"]
                               and hum_fig["after"]["timing_mae_ms"] <= hum_fig["before"]["timing_mae_ms"])
    if not cont_fig["kept"] and not hum_fig.get("kept"):
        raise RolypolyError(f"{folder}: no version written: learning from these clips made no model play the "
                            f"held-out clips better (continuation loss {cont_fig['before']['loss']} -> "
                            f"{cont_fig['after']['loss']})")
    out.mkdir(parents=True, exist_ok=True)
    record = {"version": name, "folder": str(out), "clips": str(folder), "humanize_part": "output heads",
              "style": STYLES[s] if s < len(STYLES) else None,
              "learned_from": [Path(bars.names[k]).name for k in train_idx],
              "held_out": [Path(bars.names[k]).name for k in held], "skipped": skipped,
              "continuation": cont_fig, "humanize": hum_fig,
              "settings": {"steps": steps, "batch": BATCH, "lr": LEARNING_RATE, "anchor": ANCHOR, "seed": seed,
                           "threads": THREADS, "torch": torch.__version__},
              "started_from": {"continuation": str(continuation_weights or "shipped"),
                               "humanize": str(humanize_weights or "shipped") if humanize else None}}
    files = []
    for stale in ("generate_continuation.safetensors", default_groove_weights("humanize").name):
        (out / stale).unlink(missing_ok=True)  # --replace: no file of the earlier version stays behind
    if cont_fig["kept"]:
        cont_path = out / "generate_continuation.safetensors"
        save_bar_model(cont, cont_path, {"learned_from": str(folder), "version": name})
        files.append(cont_path.name)
    if hum is not None and hum_fig["kept"]:
        hum_path = out / default_groove_weights("humanize").name
        save_groove_model(hum, hum_path, {"learned_from": str(folder), "version": name})
        files.append(hum_path.name)
    record["files"] = files
    record["seconds"] = round(time.perf_counter() - started, 1)
    (out / "learn.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
