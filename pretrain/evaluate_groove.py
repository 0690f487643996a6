"""The GrooVAE Table 1 comparison for one groove task: baselines and our model.

::

    rolypoly evaluate groove --task humanize --split test --json OUT

Every 2-bar window of the split is given to each method as the task's input
(:func:`rolypoly.groove_model.task_input`) and the output is scored against
what the drummer played (:mod:`rolypoly.pretrain.groove_metrics`):

- ``humanize``: the score's hits → V and O; quantized, KNN (k = 20, the
  paper's Hadamard similarity), KNN with Jaccard similarity, and the model.
  The targets (MAE ≤ 17.5 ms, timing KL ≤ 1.5, velocity KL ≤ 0.13) are
  checked on the model row.
- ``drumify`` / ``infill``: the taps / the part without the instrument →
  hits, V and O of the predicted classes; note F1 per step, timing and
  velocity KL, against KNN (a quantized baseline has no hits to offer).
- ``transfer``: the model reads a groove clip into z and plays a score with
  it. *Reconstruction* (the main ``model`` row): each window's own groove
  onto its own hits, scored like humanize. *Shuffled*: the groove of a window
  of another take onto each score; with no recording of that pairing, the
  notes both windows hit are compared with the groove clip's V and O
  (``vs_groove``, low when the groove carried over) and with the score's own
  (``vs_own``); the KNN humanizer, which never sees the groove, is the
  reference. *Humanize by transfer* (k = 1): the groove of the score's nearest
  training window (KNN distance) onto the score, scored like humanize; and
  *groove transfer*, the paper's "Groove Transfer" row of Table 1: the mean
  z of the 3 nearest training windows.

Nothing is excluded from the training split: the official splits are disjoint.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from rolypoly.groove_grid import GROOVE_TASKS as TASKS

from .groove_baselines import K, knn, knn_generate, neighbours, quantized
from .groove_data import load_groove_split
from .groove_metrics import groove_metrics

#: The issue's targets for the humanize model: figure -> largest acceptable value.
TARGETS = {"timing_mae_ms": 17.5, "timing_kl": 1.5, "velocity_kl": 0.13}
#: GrooVAE Table 1 (humanization, GMD test split): MAE ms, MSE 16th, timing KL, velocity KL.
PAPER = {"quantized": (22.6, 0.041, None, None), "knn": (20.9, 0.037, 2.43, 0.233),
         "seq2seq": (18.7, 0.030, 1.64, 0.519), "groove_transfer": (22.05, 0.038, 1.70, 0.138)}
FIGURES = ("timing_mae_ms", "timing_mse_16th", "timing_kl", "velocity_kl")
#: Windows per generate() call (bounds the model's memory).
BATCH = 512


def _generate(model, inputs, *, seed: int, temperature: float = 0.0, velocity_spread: float | None = None,
              H_target=None, z_from=None):
    """model.generate over batches of windows (temperature 0: the most likely performance)."""
    n = len(inputs[0])
    parts = []
    for s in range(0, n, BATCH):
        sl = slice(s, s + BATCH)
        kw = {} if velocity_spread is None else {"velocity_spread": velocity_spread}
        if H_target is not None:
            kw["H_target"] = H_target[sl]
        if z_from is not None:
            kw["z_from"] = tuple(a[sl] for a in z_from)
        parts.append(model.generate(*(a[sl] for a in inputs), temperature=temperature,
                                    seed=seed + s, **kw))
    return tuple(np.concatenate(p).astype(np.float32) for p in zip(*parts))


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown groove task {task!r}; choose one of {', '.join(TASKS)}")


def _other_take(take, seed: int) -> np.ndarray:
    """For each window, a random window of another take (of another window where there is one take)."""
    rng = np.random.default_rng(seed)
    n = len(take)
    j = rng.permutation(n)
    distinct = len(np.unique(take)) > 1
    for _ in range(100):
        bad = (take[j] == take) if distinct else (j == np.arange(n))
        if n < 2 or not bad.any():
            break
        j[bad] = rng.integers(0, n, int(bad.sum()))
    return j


def evaluate_sets(task: str, train, test, model=None, *, split: str | None = None,
                  skip_reason: str | None = None, k: int = K, instrument: str = "hihat",
                  bootstrap: int = 0, seed: int = 0, temperature: float = 0.0,
                  velocity_spread: float | None = None) -> dict:
    """Rows of every method for ``task`` on the windows of ``test`` (see the module docstring).

    Parameters
    ----------
    task : one of :data:`TASKS`
    train, test : GrooveSet (train gives the baselines' neighbours and mean velocities)
    model : object with ``generate`` as :class:`rolypoly.groove_model.GrooveModel`, or None
    split : name of the test split (for the record)
    skip_reason : why there is no model (shown in its row)
    k : neighbours of the KNN baselines
    instrument : infill's removed instrument
    bootstrap : resamples for 95 % intervals (0: none)
    seed : seed of the bootstrap, the shuffled pairing and the model
    temperature : the model's sampling temperature (0: its most likely performance)
    velocity_spread : how widely the model draws velocities around its prediction (None: its
        default, :data:`rolypoly.groove_model.VELOCITY_SPREAD`). The row ``model_velocity_mean``
        shows the same model with velocities at their mean (spread 0), for comparison.
    """
    from rolypoly.groove_model import task_input, task_target_mask

    _check(task)
    H, V, O = test.H, test.V, test.O
    cls = np.flatnonzero(task_target_mask(task, instrument=instrument))
    predicts_hits = task in ("drumify", "infill")
    spec = {"bpm": test.bpm, "steps_per_beat": test.steps_per_beat, "bootstrap": bootstrap,
            "seed": seed, "classes": cls, "hits": "predicted" if predicts_hits else "target"}
    score = lambda pred: groove_metrics((H, V, O), pred, **spec)  # noqa: E731
    inputs = task_input(task, H, V, O, instrument=instrument)
    rows = {}
    if predicts_hits:
        rows["quantized"] = {"skipped": "no hits to offer: the paper compares this task with KNN only"}
        keys = task_input(task, train.H, train.V, train.O, instrument=instrument)[0]
        base = inputs[0] if task == "infill" else None
        for name, sim in (("knn", "hadamard"), ("knn_jaccard", "jaccard")):
            rows[name] = score(knn_generate(train, keys, inputs[0], cls, k, base_H=base, similarity=sim))
    else:
        rows["quantized"] = score(quantized(train, H))
        rows["knn"] = score(knn(train, H, k))
        rows["knn_jaccard"] = score(knn(train, H, k, similarity="jaccard"))
    extra, lean = {}, None
    if model is None:
        rows["model"] = {"skipped": skip_reason or "no model"}
    elif task == "transfer":
        play = partial(_generate, model, seed=seed, temperature=temperature, velocity_spread=velocity_spread)
        rows["model"] = score(play(inputs, H_target=H))
        rows["model_velocity_mean"] = score(play(inputs, H_target=H, velocity_spread=0.0))
        extra = _transfer_cases(play, train, test, spec, seed)
    else:
        play = partial(_generate, model, inputs, seed=seed, temperature=temperature)
        played = play(velocity_spread=velocity_spread)
        rows["model"] = score(played)
        rows["model_velocity_mean"] = score(play(velocity_spread=0.0))
        if task == "humanize":
            lean = _lean(test, played[2], cls)
    for name, row in rows.items():
        if "skipped" not in row:
            row["method"] = _METHODS.get(name) or f"our {task} model" + (
                ", velocities at the predicted mean" if name == "model_velocity_mean" else "")
    result = {"task": task, "split": split, "grid": test.grid,
              "windows": int(len(H)), "takes": int(len(np.unique(test.take))),
              "notes": int((H[..., cls] > 0.5).sum()), "train_windows": int(len(train.H)),
              "classes": [int(c) for c in cls], "k": k, "bootstrap": bootstrap, "rows": rows}
    if task == "infill":
        result["instrument"] = instrument
    if task in ("humanize", "transfer"):
        result["paper"] = {name: dict(zip(FIGURES, figs)) for name, figs in PAPER.items()}
    if task == "humanize":
        m = rows["model"]
        result["targets"] = {f: {"max": lim, "value": m.get(f),
                                 "met": None if m.get(f) is None else bool(m[f] <= lim)}
                             for f, lim in TARGETS.items()}
    if lean is not None:
        result["lean"] = lean
    if extra:
        result["transfer"] = extra
    return result


_METHODS = {"quantized": "offsets 0, mean training velocity of the class",
            "knn": "mean V, O of the 20 training windows sharing most hits (paper 5.1.3)",
            "knn_jaccard": "as knn, similarity = shared hits / hits of either window"}


def _lean(test, pred_O, cls) -> dict:
    """How much of the model's timing error is each take's (or window's) overall lean.

    A drummer plays a whole take a little ahead of or behind the beat; the
    score does not show by how much. Taking away each take's mean error
    shows what is left for a humanizer that reads only the score.
    """
    from .groove_metrics import lean_removed_mae_ms

    mask = np.zeros(test.H.shape, bool)
    mask[..., cls] = test.H[..., cls] > 0.5
    figure = partial(lean_removed_mae_ms, test.O, pred_O, mask, test.bpm, steps_per_beat=test.steps_per_beat)
    return {"about": "timing MAE (ms) of the model once the mean error of each take / each window is taken away",
            "without_take_lean_ms": round(figure(groups=test.take), 3),
            "without_window_lean_ms": round(figure(groups=np.arange(len(test.H))), 3)}


def _transfer_cases(play, train, test, spec, seed: int) -> dict:
    """The shuffled pairing and humanize-by-transfer (see the module docstring)."""
    H, V, O = test.H, test.V, test.O
    j = _other_take(test.take, seed)
    shared = H * H[j]
    out = {"shuffled": {"pairing": "each score with the groove of a random window of another take",
                        "shared_notes": int(shared.sum())}}
    preds = {"model": play((H, V, O), H_target=H, z_from=(H[j], V[j], O[j])),
             "knn": knn(train, H)}
    for name, pred in preds.items():
        out["shuffled"][name] = {
            "vs_groove": groove_metrics((shared, V[j], O[j]), pred, **spec),
            "vs_own": groove_metrics((shared, V, O), pred, **spec)}
    near = neighbours(train.H, H, 1)[:, 0]
    clip = (train.H[near], train.V[near], train.O[near])
    out["humanize_by_transfer"] = groove_metrics(
        (H, V, O), play((H, V, O), H_target=H, z_from=clip), **spec)
    out["humanize_by_transfer"]["groove"] = "the nearest training window (KNN distance, k = 1)"
    near = neighbours(train.H, H, 3)
    clips = (train.H[near], train.V[near], train.O[near])      # (N, 3, T, 9): their mean z
    out["groove_transfer"] = groove_metrics((H, V, O), play((H, V, O), H_target=H, z_from=clips), **spec)
    out["groove_transfer"]["groove"] = "mean z of the 3 nearest training windows (the paper's Table 1 row)"
    return out


def evaluate(task: str, split: str = "test", root=None, grid: str = "16th", weights=None,
             limit: int | None = None, *, instrument: str = "hihat", bootstrap: int = 200,
             seed: int = 0, temperature: float = 0.0, velocity_spread: float | None = None) -> dict:
    """The Table 1 comparison of one task on a GMD split (see the module docstring).

    Parameters
    ----------
    task : "humanize", "drumify", "infill" or "transfer"
    split : the split evaluated; the baselines learn from "train"
    root : dataset folder (see :func:`rolypoly.pretrain.gmd.gmd_dir`)
    grid : "16th" or "triplet"
    weights : the model's weights; the shipped ``groove_<task>.safetensors`` where None.
        A missing file skips the model row with the reason.
    limit : only the first N takes of each split (smoke runs)
    instrument, bootstrap, seed, temperature, velocity_spread : as in :func:`evaluate_sets`
    """
    from pathlib import Path

    from rolypoly.groove_model import VELOCITY_SPREAD, default_groove_weights, load_groove_model

    _check(task)
    train = load_groove_split("train", root, grid=grid, limit=limit)
    test = load_groove_split(split, root, grid=grid, limit=limit)
    path = Path(weights or default_groove_weights(task))
    model, reason = None, None
    if path.is_file():
        model = load_groove_model(task, path)
    else:
        reason = f"{path}: no weights yet (train them with: rolypoly pretrain groove --task {task})"
    result = evaluate_sets(task, train, test, model, split=split, skip_reason=reason, instrument=instrument,
                           bootstrap=bootstrap, seed=seed, temperature=temperature,
                           velocity_spread=velocity_spread)
    result["weights"] = str(path) if model is not None else None
    result["temperature"] = temperature
    result["velocity_spread"] = VELOCITY_SPREAD if velocity_spread is None else velocity_spread
    if limit:
        result["limit"] = limit
    return result


def format_table(result: dict) -> str:
    """The rows as a small text table (``-`` where a figure is undefined)."""
    cols = [("MAE ms", "timing_mae_ms", "{:.2f}"), ("MSE 16th", "timing_mse_16th", "{:.4f}"),
            ("timing KL", "timing_kl", "{:.3f}"), ("velocity KL", "velocity_kl", "{:.3f}")]
    if result["task"] in ("drumify", "infill"):
        cols.append(("note F1", "f1", "{:.3f}"))
    head = f"{'':21s}" + "".join(f"{c[0]:>13s}" for c in cols)
    lines = [f"{result['task']} on {result['split']}: {result['windows']} windows of "
             f"{result['takes']} takes, {result['notes']} notes", head]
    for name, row in result["rows"].items():
        if "skipped" in row:
            lines.append(f"{name:21s}skipped: {row['skipped']}")
            continue
        cells = ["-" if row.get(key) is None else fmt.format(row[key]) for _, key, fmt in cols]
        lines.append(f"{name:21s}" + "".join(f"{c:>13s}" for c in cells))
    if "paper" in result:
        for name in ("quantized", "knn", "seq2seq"):
            figs = result["paper"][name]
            cells = ["-" if figs[key] is None else fmt.format(figs[key]) for _, key, fmt in cols[:4]]
            lines.append(f"{'paper ' + name:21s}" + "".join(f"{c:>13s}" for c in cells))
    if "lean" in result:
        lean = result["lean"]
        lines.append(f"model MAE without each take's lean: {lean['without_take_lean_ms']:.2f} ms, "
                     f"without each window's: {lean['without_window_lean_ms']:.2f} ms")
    for f, t in result.get("targets", {}).items():
        verdict = {True: "met", False: "NOT met", None: "no model"}[t["met"]]
        lines.append(f"target {f} <= {t['max']}: {verdict}")
    return "\n".join(lines)

