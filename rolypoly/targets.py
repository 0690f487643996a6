"""Training targets from a take: what the drummer should have played.

After a duet take the agent is fine-tuned on targets built from what
happened (rolypoly~ paper, section 3.1, eqs. 1-2). For each hit t with a
partner onset in its window,

.. math::

    d_t = \\hat y_t + A \\cdot \\frac{diff_t}{\\sigma_{diff} / \\sigma_{\\hat y}}, \\qquad
    y_t = B \\cdot \\frac{d_t - \\mu_d}{\\sigma_d / \\sigma_{\\hat y}}

All offsets are fractions of a bar: ŷ_t is the drum's offset from the
notated time, diff_t the partner's offset from the drum as played
(partner minus drum, positive when the partner is late). d_t is where the
partner "was" relative to the grid, with the partner's spread brought to
the drum's; y_t centres it and gives it the drum's spread again.

**Alignment of diff (footnote 7).** ``diff_t`` must belong to hit t: the
distance from hit t *as played* to the closest partner onset within
``played_t ± duration_t / 3``. In a take file each row's ``"diff"`` is
exactly that: the engine records row t after it has listened to hit t's
window (``None`` when no partner onset fell in it). The feature row the
agent *saw* for hit t holds diff_{t-1} (column ``DIFF``, carried over when
hit t-1 had no onset), so from features alone diff_t is the ``DIFF``
column of row t + 1: :func:`diff_from_features` does that shift.

**Statistics.** μ and σ are taken over the hits that had a partner onset
(finite diff), the same hits that get a target; hits without one get no
target (``mask`` False, y and d NaN). σ is the population standard
deviation (``ddof=0``, as ``np.std``): y only depends on the *ratios*
σ_diff/σ_ŷ and σ_d/σ_ŷ, in which ddof cancels, and ddof=0 stays defined
(zero) for a single onset, which ddof=1 does not.

**Degenerate cases** (each one adds a line to ``stats.rules``):

* σ_ŷ = 0 (a first take from a model that plays on the grid, or any
  constant ŷ): the variance scaling would shrink the partner to nothing
  and leave every target at 0, so the drummer could never move. Then
  σ_ŷ := σ_diff: d = ŷ + A·diff and y = B·(d − μ_d)/(σ_d/σ_diff), the
  targets follow the partner at the partner's own spread (with A = B = 1,
  y = diff − μ_diff). With ``min_sigma`` set, σ_ŷ is instead floored at
  ``min_sigma`` (bar fractions) whenever it is smaller, so the targets get
  a spread of about B·min_sigma.
* σ_diff = 0 (every onset at the same distance, or a single onset): there
  is no spread to scale: d = ŷ + A·diff.
* σ_d = 0 (d the same on every hit, e.g. a single onset): no spread to
  normalise: y = B·(d − μ_d), i.e. zero targets.
* no partner onset at all: no update (``update`` False, with a reason).

"Zero" means below :data:`SIGMA_EPS` (10⁻⁶ of a bar, about 2 µs).

The partner's *off-beat notes* (footnote 6) are in :mod:`rolypoly.score_growth`;
checking a take before it trains anything is :func:`rolypoly.take.validate_take`.
Pure numpy, no torch.

Examples
--------
>>> from rolypoly.targets import take_targets
>>> res = take_targets([0.01, -0.01, 0.02, 0.0], [0.02, 0.0, -0.02, 0.04])
>>> res.d.round(4).tolist()
[0.02, -0.01, 0.01, 0.02]
>>> (res.y * 1.2 ** 0.5).round(4).tolist()
[0.01, -0.02, 0.0, 0.01]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .features import DESCRIPTOR, DIFF
from .grid import STEPS_PER_BAR
from .take import as_rows

#: A standard deviation below this (fraction of a bar; 2 µs in a 2 s bar) counts as zero.
SIGMA_EPS = 1e-6
#: Degrees of freedom of every σ here: population standard deviation, as ``np.std``.
DDOF = 0


# ----------------------------------------------------------------------------- input checks

def finite_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per row (1-D), got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if len(bad):
        raise ValueError(f"{name} has {len(bad)} NaN or infinite value(s) (first at row {bad[0]}: {a[bad[0]]})")
    return a


def _diff_1d(diff, name: str = "diff") -> np.ndarray:
    """diff as floats, ``None`` (JSON null) and NaN meaning "no partner onset"; inf refused."""
    if not isinstance(diff, np.ndarray):
        diff = [np.nan if v is None else v for v in diff]
    a = np.asarray(diff, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per row (1-D), got shape {a.shape}")
    bad = np.flatnonzero(np.isinf(a))
    if len(bad):
        raise ValueError(f"{name} has {len(bad)} infinite value(s) (first at row {bad[0]}); "
                         "use NaN or None for a hit without a partner onset")
    return a


def finite_number(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


# ----------------------------------------------------------------------------- eqs. (1)-(2)

@dataclass(frozen=True)
class TargetStats:
    """The numbers eqs. (1)-(2) used on one take (fractions of a bar).

    ``sigma_yhat`` is σ_ŷ as measured, ``sigma_yhat_used`` the one the
    equations used (they differ only in the σ_ŷ = 0 case or under
    ``min_sigma``). ``sigma_sum`` is σ(ŷ + diff), what σ_d becomes when A
    cancels the scaling (see :func:`cancel_scaling_ab`). ``rules`` lists
    the degenerate-case rules applied, in words. All σ use ``ddof`` (0).
    """

    n_rows: int
    n_onsets: int
    A: float
    B: float
    mu_yhat: float
    sigma_yhat: float
    sigma_yhat_used: float
    mu_diff: float
    sigma_diff: float
    mu_d: float
    sigma_d: float
    sigma_sum: float
    min_sigma: float | None = None
    ddof: int = DDOF
    rules: tuple[str, ...] = ()

    @property
    def scaled_diff(self) -> bool:
        """Whether eq. (1) divided diff by σ_diff/σ_ŷ."""
        return self.sigma_diff >= SIGMA_EPS and self.sigma_yhat_used >= SIGMA_EPS

    @property
    def scaled_d(self) -> bool:
        """Whether eq. (2) divided d − μ_d by σ_d/σ_ŷ."""
        return self.sigma_d >= SIGMA_EPS and self.sigma_yhat_used >= SIGMA_EPS

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready: NaN for statistics that do not exist)."""
        out = asdict(self)
        out["rules"] = list(self.rules)
        return out

    def __str__(self) -> str:
        if not self.n_onsets:
            return f"0/{self.n_rows} hits with a partner onset"
        s = (f"{self.n_onsets}/{self.n_rows} hits with a partner onset; A={self.A:g} B={self.B:g}; "
             f"σ_ŷ={self.sigma_yhat:.5f}" + (f" (used {self.sigma_yhat_used:.5f})"
                                              if self.sigma_yhat_used != self.sigma_yhat else "")
             + f" σ_diff={self.sigma_diff:.5f} μ_d={self.mu_d:+.5f} σ_d={self.sigma_d:.5f} (bar fractions)")
        return s + "".join(f"; {r}" for r in self.rules)


@dataclass
class TargetResult:
    """Targets of one take (see :func:`take_targets`).

    ``mask`` marks the rows that get a target (a partner onset was heard in
    their window); ``y`` and ``d`` are NaN elsewhere, so train on
    ``y[mask]``. ``update`` is False when there is nothing to learn, and
    ``reason`` says why.
    """

    mask: np.ndarray
    y: np.ndarray
    d: np.ndarray
    stats: TargetStats
    update: bool = True
    reason: str = ""


def take_targets(yhat, diff, A: float = 1.0, B: float = 1.0, *, min_sigma: float | None = None,
                 centre="all") -> TargetResult:
    """Training targets y from a take's ŷ and diff (paper eqs. 1-2).

    Parameters
    ----------
    yhat : array_like, shape (n,)
        Drum offset of every hit as played (fraction of a bar). Must be finite.
    diff : array_like, shape (n,)
        diff_t of every hit t (fraction of a bar, partner minus drum,
        positive = partner late), aligned so that diff_t is the partner onset
        heard in hit t's own window: a take row's ``"diff"`` (see
        :func:`diff_from_features` for the shift from feature rows). NaN or
        None: no partner onset in the window, no target. Infinite values
        raise.
    A, B : float
        Weights of the partner offsets (eq. 1) and of the cumulated offsets
        (eq. 2); the paper's default is 1. :func:`cancel_scaling_ab` gives
        the values that undo the variance scaling (swing morph).
    min_sigma : float, optional
        Floor for σ_ŷ (fraction of a bar). Default: only a σ_ŷ of zero is
        replaced, by σ_diff (see the module docstring).
    centre : "all", "none" or array_like of bool, shape (n,)
        Which hits set μ_d in eq. (2). ``"all"`` is the paper: every hit with
        a partner onset, so the drums stay centred on the grid as a whole.
        A mask (e.g. the hits on the beat, :func:`beat_rows`) centres on
        those hits only: the beat stays where the grid has it and the
        subdivisions move freely, which is what a swing morph needs (with
        ``"all"``, a partner swinging its off-beats by S puts the fixed point
        at −S/2 on the beats and +S/2 off them). ``"none"`` keeps d as is
        (μ_d := 0): the drums follow the partner's overall lean too. A mask
        selecting no hit with a partner onset falls back to ``"all"``
        (a line in ``stats.rules`` says so).

    Returns
    -------
    TargetResult
        ``mask``, ``y``, ``d`` (shape (n,)), ``stats`` (:class:`TargetStats`),
        ``update`` and ``reason``.

    Raises
    ------
    ValueError
        ŷ not finite, diff infinite, lengths differ, A, B or min_sigma not
        usable numbers.

    Examples
    --------
    Hand-checkable: σ_diff/σ_ŷ = 2, so d = ŷ + diff/2.

    >>> res = take_targets([0.01, -0.01, 0.02, 0.0], [0.02, 0.0, -0.02, 0.04])
    >>> res.d.round(4).tolist(), round(res.stats.mu_d, 4)
    ([0.02, -0.01, 0.01, 0.02], 0.01)

    A first take from a model playing on the grid: targets follow the partner.

    >>> res = take_targets([0.0, 0.0, 0.0], [0.01, None, 0.03])
    >>> res.mask.tolist(), res.y.round(4).tolist()
    ([True, False, True], [-0.01, nan, 0.01])
    >>> res.stats.rules[0].split(":")[0]
    'σ_ŷ = 0'
    """
    yhat = finite_1d(yhat, "yhat")
    diff = _diff_1d(diff)
    if yhat.shape != diff.shape:
        raise ValueError(f"yhat has {len(yhat)} rows but diff has {len(diff)}")
    A, B = finite_number(A, "A"), finite_number(B, "B")
    if min_sigma is not None:
        min_sigma = finite_number(min_sigma, "min_sigma")
        if min_sigma <= 0:
            raise ValueError(f"min_sigma must be a positive fraction of a bar, got {min_sigma}")
    n = len(yhat)
    mask = np.isfinite(diff)
    k = int(mask.sum())
    nan = np.full(n, np.nan)
    if k == 0:
        stats = TargetStats(n, 0, A, B, *[math.nan] * 8, min_sigma=min_sigma)
        why = ("the take has no rows" if n == 0 else
               f"no partner onset in any hit window (0 of {n} hits): no update")
        return TargetResult(mask, nan, nan.copy(), stats, update=False, reason=why)

    yh, df = yhat[mask], diff[mask]
    mu_y, s_y = float(yh.mean()), float(yh.std(ddof=DDOF))
    mu_diff, s_diff = float(df.mean()), float(df.std(ddof=DDOF))
    s_sum = float((yh + df).std(ddof=DDOF))
    rules = []

    s_used = s_y
    if min_sigma is not None and s_y < min_sigma:
        s_used = min_sigma
        rules.append(f"σ_ŷ < min_sigma: σ_ŷ := {min_sigma:g}")
    elif s_y < SIGMA_EPS and s_diff >= SIGMA_EPS:
        s_used = s_diff
        rules.append("σ_ŷ = 0: σ_ŷ := σ_diff (targets follow the partner at its own spread)")

    # Eq. (1). ``ratio`` is computed the same way in cancel_scaling_ab, so that
    # A = ratio gives a gain of exactly 1.0 and d = ŷ + diff bit for bit.
    if s_diff >= SIGMA_EPS and s_used >= SIGMA_EPS:
        ratio = s_diff / s_used
        d = yhat + (A / ratio) * diff
    else:
        d = yhat + A * diff
        rules.append("single partner onset: no scaling, d = ŷ + A·diff" if k == 1 else
                     "σ_diff = 0: no scaling, d = ŷ + A·diff")
    d[~mask] = np.nan

    # Eq. (2).
    dm = d[mask]
    mu_d, s_d = float(dm.mean()), float(dm.std(ddof=DDOF))
    if isinstance(centre, str):
        if centre == "none":
            mu_d = 0.0
            rules.append("centre none: μ_d := 0, d is not centred")
        elif centre != "all":
            raise ValueError(f"centre must be 'all', 'none' or a boolean mask, got {centre!r}")
    else:
        on = np.asarray(centre, dtype=bool)
        if on.shape != mask.shape:
            raise ValueError(f"centre mask has {on.size} rows but the take has {n}")
        if (on & mask).any():
            mu_d = float(d[on & mask].mean())
            rules.append(f"centred on {int((on & mask).sum())} of {k} hits (μ_d over them)")
        else:
            rules.append("centre mask holds no hit with a partner onset: centred on all hits")
    if s_d >= SIGMA_EPS and s_used >= SIGMA_EPS:
        y = (B / (s_d / s_used)) * (d - mu_d)
    else:
        y = B * (d - mu_d)
        rules.append("σ_d = 0: no normalisation, y = B·(d − μ_d)")
    y[~mask] = np.nan
    stats = TargetStats(n, k, A, B, mu_y, s_y, s_used, mu_diff, s_diff, mu_d, s_d, s_sum,
                        min_sigma=min_sigma, rules=tuple(rules))
    return TargetResult(mask, y, d, stats)


def beat_rows(score, rows=None) -> np.ndarray:
    """True for rows that sit on a beat of their bar (the counted beats of the meter).

    A beat is a quarter note in simple meters (x/4, x/2) and a dotted quarter
    in compound ones (6/8, 9/8, 12/8); in a meter whose beats do not fall on
    the 24-step grid only the downbeat counts.

    Parameters
    ----------
    score : rolypoly.score.Score
    rows : array_like of int, optional
        Row indices (default: every row).

    Examples
    --------
    >>> beat_rows(score)[:8].tolist()     # doctest: +SKIP
    [True, False, False, False, True, False, False, False]
    """
    idx = np.arange(len(score)) if rows is None else np.asarray(rows, dtype=int)
    meters = score.tempo_map.meters
    starts = np.array([t for t, _, _ in meters], dtype=np.float64)
    k = np.clip(np.searchsorted(starts, score.tick[idx], side="right") - 1, 0, None)
    out = np.zeros(len(idx), dtype=bool)
    for j, (_, num, den) in enumerate(meters):
        compound = den >= 8 and num % 3 == 0 and num > 3
        beats = num // 3 if compound else num
        # Steps per beat in the bar's 24-step grid; a cut-short bar still counts from its start.
        per = STEPS_PER_BAR // beats if beats and STEPS_PER_BAR % beats == 0 else STEPS_PER_BAR
        sel = k == j
        out[sel] = score.step[idx][sel] % per == 0
    return out


def cancel_scaling_ab(stats: TargetStats) -> tuple[float, float]:
    """A and B that cancel the variance scaling of eqs. (1)-(2) (swing morph).

    With ``A = σ_diff/σ_ŷ`` and ``B = σ_d'/σ_ŷ`` (σ_d' = σ(ŷ + diff), the
    spread d has once A cancels), :func:`take_targets` on the same take
    gives ``d = ŷ + diff`` and ``y = d − μ_d`` exactly: the drum is asked to
    go where the partner was, at the partner's spread, centred. Where a
    scaling was not applied (degenerate case) its weight is 1.

    Parameters
    ----------
    stats : TargetStats
        From :func:`take_targets` on the take (any A and B; same ``min_sigma``).

    Returns
    -------
    (A, B) : tuple of float

    Raises
    ------
    ValueError
        The take had no partner onset, so there is nothing to cancel.

    Examples
    --------
    >>> yhat, diff = [0.01, -0.01, 0.02, 0.0], [0.02, 0.0, -0.02, 0.04]
    >>> A, B = cancel_scaling_ab(take_targets(yhat, diff).stats)
    >>> round(A, 6), round(B, 6)
    (2.0, 1.843909)
    >>> take_targets(yhat, diff, A, B).d.round(4).tolist()
    [0.03, -0.01, 0.0, 0.04]
    """
    if not stats.n_onsets:
        raise ValueError("the take had no partner onset: there is no scaling to cancel")
    s_used = stats.sigma_yhat_used
    A = stats.sigma_diff / s_used if stats.scaled_diff else 1.0
    B = stats.sigma_sum / s_used if stats.sigma_sum >= SIGMA_EPS and s_used >= SIGMA_EPS else 1.0
    return A, B


def diff_from_features(features, *, mark_carried: bool = True) -> np.ndarray:
    """diff_t of every hit, recovered from the feature rows the agent saw.

    Row t + 1 of the features holds diff_t in column ``DIFF`` (the agent
    decides hit t + 1 knowing how hit t went), so diff_t is that column
    shifted one row back (footnote 7). The engine carries the previous diff
    (and descriptor) over when a hit has no partner onset; with
    ``mark_carried`` such rows, recognised by ``DIFF`` and ``DESCRIPTOR``
    both unchanged from the row before, become NaN, as in the take's
    ``"diff"``. (A new onset with exactly the same diff and descriptor, to
    the 6 decimals a take stores, would be taken for a carry-over.)

    Parameters
    ----------
    features : array_like, shape (n, 15)
    mark_carried : bool
        NaN for carried-over values (default); False returns the column as seen.

    Returns
    -------
    np.ndarray, shape (n,)
        diff_t; the last row is NaN (no row after it to read it from: the
        take's own ``"diff"`` has it).

    Examples
    --------
    >>> X = np.zeros((4, 15)); X[1, DIFF], X[2, DIFF], X[3, DIFF] = 0.01, 0.01, -0.02
    >>> X[1, DESCRIPTOR] = X[2, DESCRIPTOR] = 0.5; X[3, DESCRIPTOR] = 0.3
    >>> diff_from_features(X).tolist()
    [0.01, nan, -0.02, nan]
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] <= DIFF:
        raise ValueError(f"features must be (rows, {DIFF + 1}) feature rows, got shape {X.shape}")
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        raise ValueError(f"features have {len(bad)} NaN or infinite value(s) "
                         f"(first at row {bad[0][0]}, column {bad[0][1]})")
    out = np.full(len(X), np.nan)
    if len(X) > 1:
        nxt = X[1:, DIFF].copy()
        if mark_carried:
            carried = (X[1:, DIFF] == X[:-1, DIFF]) & (X[1:, DESCRIPTOR] == X[:-1, DESCRIPTOR])
            nxt[carried] = np.nan
        out[:-1] = nxt
    return out


def take_arrays(rows) -> tuple[np.ndarray, np.ndarray]:
    """ŷ and diff of a take's rows (:data:`rolypoly.take.ROW_DTYPE`, or records), ready for :func:`take_targets`.

    >>> take_arrays([{"row": 0, "bar": 0, "step": 0, "notated": 0.0, "yhat": 0.01, "diff": None},
    ...              {"row": 1, "bar": 0, "step": 6, "notated": 0.5, "yhat": 0.0, "diff": 0.02}])
    (array([0.01, 0.  ]), array([ nan, 0.02]))
    """
    rows = as_rows(rows)
    return rows["yhat"].astype(np.float64), rows["diff"].astype(np.float64)
