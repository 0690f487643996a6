"""The GrooVAE Table 1 figures for 2-bar groove windows (Gillick et al. 2019, 6.2).

A window is three (T, C) matrices: hits ``H`` (0/1), velocities ``V`` (0..1)
and offsets ``O`` (fraction of a grid step, −0.5..0.5); a batch stacks them
to (N, T, C). Which notes count:

- ``hits="target"`` (humanize, groove transfer): the score is given, so every
  hit of the target is a note; the prediction's V and O are read at those
  cells whatever hits the model itself produced.
- ``hits="predicted"`` (drumify, infill): the model chooses the hits. Note F1
  compares hit cells (window, step, class) of the predicted classes; timing
  MAE/MSE are over cells hit in both; the KLs compare the distribution of the
  target's notes with that of the predicted notes.

Timing KL and velocity KL follow the paper: notes are grouped by the 16th of
the beat they sit on (1, e, &, a; on a finer grid, the nearest 16th), a
Gaussian is fitted to each group of the data and of the prediction, and the
four KL(data ‖ prediction) are averaged. A group where either side has fewer
than :data:`MIN_NOTES` notes is left out of the mean. A prediction whose
variance in a group is below :data:`VAR_FLOOR` (e.g. every offset 0) has an
infinite KL, reported as ``None`` — the paper's "N/A" for the quantized
baseline — unless the data is just as degenerate with the same mean (KL 0).

Every figure is computed from per-window sums, so a 95 % bootstrap interval
over windows (the paper's brackets) costs one matrix product.

Examples
--------
>>> H = np.array([[[1.], [0.], [1.], [0.]]])       # one window, 4 steps, 1 class
>>> O = np.array([[[0.1], [0.], [-0.1], [0.]]])
>>> timing_mae_ms(O, np.zeros_like(O), H, bpm=[120.])   # a 16th at 120 bpm is 125 ms
12.5
>>> timing_mse_16th(O, np.zeros_like(O), H)
0.01
"""
from __future__ import annotations

import numpy as np

#: Names of the four 16th positions of a beat.
POSITIONS = ("1", "e", "&", "a")
#: Variance below which a group's Gaussian is degenerate (a point).
VAR_FLOOR = 1e-9
#: Fewest notes a group needs, on each side, to take part in a KL.
MIN_NOTES = 2


def step_ms(bpm, steps_per_beat: int = 4) -> np.ndarray:
    """Length of one grid step in ms, per window.

    >>> step_ms(np.array([120.0, 60.0]))
    array([125., 250.])
    """
    return 60000.0 / np.asarray(bpm, np.float64) / steps_per_beat


def metrical_position(steps: int, steps_per_beat: int = 4) -> np.ndarray:
    """Index into :data:`POSITIONS` (0 = 1, 1 = e, 2 = &, 3 = a) of each step of a window.

    Windows start on a beat. On grids finer than 16ths a step joins the nearest 16th.

    >>> metrical_position(6).tolist()
    [0, 1, 2, 3, 0, 1]
    """
    frac = (np.arange(steps) % steps_per_beat) / steps_per_beat
    return (np.rint(frac * 4).astype(np.int64)) % 4


# ---- per-window sufficient statistics ---------------------------------------------

def _note_sums(target_O, pred_O, mask, bpm, steps_per_beat) -> np.ndarray:
    """(N, 3): notes, Σ|error| in ms, Σ error² in 16ths², per window."""
    mask = np.asarray(mask, bool)
    err = (np.asarray(pred_O, np.float64) - np.asarray(target_O, np.float64)) * mask
    n = mask.sum(axis=(1, 2))
    abs_steps = np.abs(err).sum(axis=(1, 2))
    sq_16th = (err ** 2).sum(axis=(1, 2)) * (4.0 / steps_per_beat) ** 2
    ms = abs_steps * step_ms(bpm, steps_per_beat) if bpm is not None else np.full(len(n), np.nan)
    return np.stack([n, ms, sq_16th], axis=1).astype(np.float64)


def _moment_sums(values, mask, steps_per_beat) -> np.ndarray:
    """(N, 4, 3): per window and 16th position, count, Σx and Σx² of the masked values."""
    mask = np.asarray(mask, bool)
    x = np.asarray(values, np.float64) * mask
    pos = metrical_position(mask.shape[1], steps_per_beat)
    onehot = np.eye(4)[pos]                                   # (T, 4)
    per_step = np.stack([mask.sum(2), x.sum(2), (x ** 2).sum(2)], axis=-1)  # (N, T, 3)
    return np.einsum("ntk,tg->ngk", per_step, onehot)


def _f1_sums(target_H, pred_H) -> np.ndarray:
    """(N, 3): true positives, false positives, false negatives per window."""
    t = np.asarray(target_H) > 0.5
    p = np.asarray(pred_H) > 0.5
    return np.stack([(t & p).sum((1, 2)), (~t & p).sum((1, 2)), (t & ~p).sum((1, 2))],
                    axis=1).astype(np.float64)


# ---- figures from summed statistics ------------------------------------------------

def gaussian_kl(mu_p, var_p, mu_q, var_q):
    """KL(P ‖ Q) of two univariate Gaussians, elementwise.

    Degenerate variances (≤ :data:`VAR_FLOOR`): 0 when both are points at the same
    place, otherwise ``inf``.

    >>> float(gaussian_kl(0.0, 1.0, 1.0, 1.0))
    0.5
    >>> float(gaussian_kl(0.0, 1.0, 0.0, 0.0))
    inf
    """
    mu_p, var_p, mu_q, var_q = (np.asarray(a, np.float64) for a in (mu_p, var_p, mu_q, var_q))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = 0.5 * (np.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1.0)
    p_point, q_point = var_p <= VAR_FLOOR, var_q <= VAR_FLOOR
    same = np.isclose(mu_p, mu_q, rtol=0.0, atol=1e-9)
    kl = np.where(q_point | p_point, np.where(p_point & q_point & same, 0.0, np.inf), kl)
    return kl


def _grouped_kl(data_m: np.ndarray, model_m: np.ndarray):
    """Mean KL over usable groups and the per-group KLs, from (..., 4, 3) summed moments."""
    def fit(m):
        n = m[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = m[..., 1] / n
            var = np.maximum(m[..., 2] / n - mu ** 2, 0.0)
        return n, mu, var

    n_p, mu_p, var_p = fit(data_m)
    n_q, mu_q, var_q = fit(model_m)
    usable = (n_p >= MIN_NOTES) & (n_q >= MIN_NOTES)
    kl = np.where(usable, gaussian_kl(np.where(usable, mu_p, 0), np.where(usable, var_p, 1),
                                      np.where(usable, mu_q, 0), np.where(usable, var_q, 1)), 0.0)
    count = usable.sum(-1)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, kl.sum(-1) / np.maximum(count, 1), np.nan)
    return mean, np.where(usable, kl, np.nan)


def _finish(sums: dict, weights=None) -> dict:
    """Figures from per-window sums, each window counted ``weights`` times (default once).

    ``weights`` may be (B, N) for B bootstrap resamples; each figure then has shape (B,).
    """
    n_windows = len(next(iter(sums.values())))
    w = np.ones(n_windows) if weights is None else np.asarray(weights, np.float64)
    tot = {k: np.tensordot(w, v, axes=(-1, 0)) for k, v in sums.items()}
    notes = tot["notes"]
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["timing_mae_ms"] = notes[..., 1] / notes[..., 0]
        out["timing_mse_16th"] = notes[..., 2] / notes[..., 0]
        for name in ("timing", "velocity"):
            out[f"{name}_kl"], out[f"{name}_kl_groups"] = _grouped_kl(tot[f"{name}_data"],
                                                                     tot[f"{name}_model"])
    out.update(_f1_figures(tot["f1"]))
    return out


def _f1_figures(counts) -> dict:
    """Precision, recall and F1 from summed (..., 3) true/false positive, false negative counts."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"precision": tp / (tp + fp), "recall": tp / (tp + fn),
                "f1": 2 * tp / (2 * tp + fp + fn)}


# ---- the public figures --------------------------------------------------------------

def timing_mae_ms(target_O, pred_O, mask, bpm, steps_per_beat: int = 4) -> float:
    """Mean absolute timing error in ms over the cells of ``mask``.

    Parameters
    ----------
    target_O, pred_O : (N, T, C) offsets as fractions of a grid step
    mask : (N, T, C) the notes that count
    bpm : (N,) tempo of each window
    steps_per_beat : grid steps per quarter note (4 for 16ths)
    """
    s = _note_sums(target_O, pred_O, mask, bpm, steps_per_beat).sum(0)
    return round(float(s[1] / s[0]), 6) if s[0] else float("nan")


def timing_mse_16th(target_O, pred_O, mask, steps_per_beat: int = 4) -> float:
    """Mean squared timing error over the cells of ``mask``, in 16th notes².

    Parameters
    ----------
    target_O, pred_O : (N, T, C) offsets as fractions of a grid step
    mask : (N, T, C) the notes that count
    steps_per_beat : grid steps per quarter note (4 for 16ths)
    """
    s = _note_sums(target_O, pred_O, mask, None, steps_per_beat).sum(0)
    return round(float(s[2] / s[0]), 9) if s[0] else float("nan")


def distribution_kl(data_values, data_mask, model_values, model_mask,
                    steps_per_beat: int = 4) -> tuple[float, list]:
    """Mean over the 16th positions of KL(data ‖ model), one Gaussian per position.

    Parameters
    ----------
    data_values, model_values : (N, T, C) offsets or velocities
    data_mask, model_mask : (N, T, C) the notes of each side
    steps_per_beat : grid steps per quarter note (4 for 16ths)

    Returns
    -------
    mean : float
        ``inf`` when a usable group of the model is degenerate, ``nan`` when no group is usable.
    per_group : list of 4 floats (``nan`` for groups left out)
    """
    mean, groups = _grouped_kl(_moment_sums(data_values, data_mask, steps_per_beat).sum(0),
                               _moment_sums(model_values, model_mask, steps_per_beat).sum(0))
    return float(mean), [float(g) for g in groups]


def timing_kl(target_O, target_H, pred_O, pred_H, steps_per_beat: int = 4) -> float:
    """Timing KL: :func:`distribution_kl` of the offsets at the hits of each side."""
    return distribution_kl(target_O, np.asarray(target_H) > 0.5, pred_O,
                           np.asarray(pred_H) > 0.5, steps_per_beat)[0]


def velocity_kl(target_V, target_H, pred_V, pred_H, steps_per_beat: int = 4) -> float:
    """Velocity KL: :func:`distribution_kl` of the velocities at the hits of each side."""
    return distribution_kl(target_V, np.asarray(target_H) > 0.5, pred_V,
                           np.asarray(pred_H) > 0.5, steps_per_beat)[0]


def note_f1(target_H, pred_H, classes=None) -> dict:
    """Precision, recall and F1 of hit cells (window, step, class) on ``classes``.

    >>> note_f1(np.array([[[1, 0], [1, 0]]]), np.array([[[1, 0], [0, 1]]]))
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """
    t, p = _select(classes, np.asarray(target_H), np.asarray(pred_H))
    out = _f1_figures(_f1_sums(t, p).sum(0))
    return {k: round(float(v), 6) for k, v in out.items()}


def _select(classes, *arrays):
    return arrays if classes is None else tuple(a[..., list(classes)] for a in arrays)


def window_sums(target, pred, *, bpm, steps_per_beat: int = 4, classes=None,
                hits: str = "target") -> dict:
    """Per-window sums behind :func:`groove_metrics` (see there for the arguments)."""
    if hits not in ("target", "predicted"):
        raise ValueError(f"hits must be 'target' or 'predicted', not {hits!r}")
    tH, tV, tO = _select(classes, *(np.asarray(a) for a in target))
    pH, pV, pO = _select(classes, *(np.asarray(a) for a in pred))
    t_hit = tH > 0.5
    p_hit = t_hit if hits == "target" else pH > 0.5
    return {"notes": _note_sums(tO, pO, t_hit & p_hit, bpm, steps_per_beat),
            "timing_data": _moment_sums(tO, t_hit, steps_per_beat),
            "timing_model": _moment_sums(pO, p_hit, steps_per_beat),
            "velocity_data": _moment_sums(tV, t_hit, steps_per_beat),
            "velocity_model": _moment_sums(pV, p_hit, steps_per_beat),
            "f1": _f1_sums(tH, pH)}


def _clean(x, digits):
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def groove_metrics(target, pred, *, bpm, steps_per_beat: int = 4, classes=None,
                   hits: str = "target", bootstrap: int = 0, seed: int = 0) -> dict:
    """All figures of one prediction of a batch of windows.

    Parameters
    ----------
    target, pred : tuples (H, V, O) of (N, T, C) arrays
    bpm : (N,) tempo of each window (for ms)
    steps_per_beat : grid steps per quarter note (4 for 16ths)
    classes : indices of the predicted classes (infill); all when None
    hits : "target" when the score's hits are given (humanize, transfer), "predicted"
        when the model chooses them (drumify, infill); see the module docstring
    bootstrap : resamples of the windows for 95 % intervals (0: none)
    seed : seed of the bootstrap

    Returns
    -------
    dict
        ``notes`` (target notes), ``pred_notes``, ``timing_mae_ms``, ``timing_mse_16th``,
        ``timing_kl``, ``velocity_kl`` (``None`` where infinite or undefined), the per-position
        KLs, with ``hits="predicted"`` the note ``precision``, ``recall`` and ``f1``, and with
        ``bootstrap`` a ``ci95`` dict.
    """
    sums = window_sums(target, pred, bpm=bpm, steps_per_beat=steps_per_beat, classes=classes,
                       hits=hits)
    fig = _finish(sums)
    scalars = {"timing_mae_ms": 3, "timing_mse_16th": 5, "timing_kl": 4, "velocity_kl": 4}
    if hits == "predicted":
        scalars.update(precision=4, recall=4, f1=4)
    out = {"notes": int(sums["velocity_data"][..., 0].sum()),
           "pred_notes": int(sums["velocity_model"][..., 0].sum()),
           "scored_notes": int(sums["notes"][:, 0].sum())}
    out.update({k: _clean(fig[k], d) for k, d in scalars.items()})
    for name in ("timing", "velocity"):
        out[f"{name}_kl_groups"] = dict(zip(POSITIONS, (_clean(g, 4) for g in fig[f"{name}_kl_groups"])))
    if bootstrap:
        n = len(sums["f1"])
        w = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=bootstrap)
        boot = _finish(sums, w)
        out["ci95"] = {}
        for k, d in scalars.items():
            b = boot[k]
            ok = np.isfinite(b)
            out["ci95"][k] = ([_clean(q, d) for q in np.percentile(b[ok], [2.5, 97.5])]
                              if ok.mean() > 0.95 else None)
    return out


def lean_removed_mae_ms(target_O, pred_O, mask, bpm, groups, steps_per_beat: int = 4) -> float:
    """Timing MAE (ms) once each group's mean timing error is taken away.

    With ``groups`` the take of each window, this is what a model would
    score if it also knew how far each take as a whole sat ahead of or
    behind the beat (its lean), which no score shows: the part of the
    error that a humanizer reading only the score cannot remove.

    >>> O = np.array([[[0.1]], [[0.3]]]); H = np.ones_like(O)
    >>> lean_removed_mae_ms(O, np.zeros_like(O), H, bpm=[120., 120.], groups=[0, 1])
    0.0
    """
    mask = np.asarray(mask, bool)
    err_ms = (np.asarray(pred_O, np.float64) - np.asarray(target_O, np.float64)) \
        * step_ms(bpm, steps_per_beat)[:, None, None]
    group = np.broadcast_to(np.asarray(groups)[:, None, None], mask.shape)[mask]
    e = err_ms[mask]
    _, g = np.unique(group, return_inverse=True)
    lean = np.bincount(g, e) / np.bincount(g)
    return float(np.mean(np.abs(e - lean[g])))
