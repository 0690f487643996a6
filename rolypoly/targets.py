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

The module also finds the partner's *off-beat notes* (footnote 6,
:func:`offbeat_notes`, :class:`OffbeatLedger`) and checks a take before it
is used for training (:func:`validate_take`). Pure numpy, no torch.

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
from dataclasses import asdict, dataclass, field

import numpy as np

from .features import DESCRIPTOR, DIFF
from .grid import STEPS_PER_BAR

#: A standard deviation below this (fraction of a bar; 2 µs in a 2 s bar) counts as zero.
SIGMA_EPS = 1e-6
#: An onset this close (s) to one a hit heard in its window is that same onset.
HEARD_TOLERANCE_S = 1e-4
#: Degrees of freedom of every σ here: population standard deviation, as ``np.std``.
DDOF = 0


# ----------------------------------------------------------------------------- input checks

def _finite_1d(x, name: str) -> np.ndarray:
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


def _finite_number(x, name: str) -> float:
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
    yhat = _finite_1d(yhat, "yhat")
    diff = _diff_1d(diff)
    if yhat.shape != diff.shape:
        raise ValueError(f"yhat has {len(yhat)} rows but diff has {len(diff)}")
    A, B = _finite_number(A, "A"), _finite_number(B, "B")
    if min_sigma is not None:
        min_sigma = _finite_number(min_sigma, "min_sigma")
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
    """ŷ and diff of a take's rows, ready for :func:`take_targets` (null diff → NaN).

    >>> take_arrays([{"yhat": 0.01, "diff": None}, {"yhat": 0.0, "diff": 0.02}])
    (array([0.01, 0.  ]), array([ nan, 0.02]))
    """
    yhat = np.array([r["yhat"] for r in rows], dtype=np.float64)
    diff = np.array([np.nan if r.get("diff") is None else r["diff"] for r in rows], dtype=np.float64)
    return yhat, diff


# ----------------------------------------------------------------------------- off-beat notes

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
    rows : sequence of dict
        Take rows in order, each with ``row``, ``bar``, ``step`` and
        ``notated`` (s from score zero), as in :func:`rolypoly.take.read_take`.
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

    >>> rows = [{"row": 0, "bar": 0, "step": 0, "notated": 0.0},
    ...         {"row": 1, "bar": 0, "step": 12, "notated": 1.0}]
    >>> [(n.bar, n.step, n.after_row) for n in offbeat_notes(rows, [0.02, 0.49, 1.01])]
    [(0, 6, 0)]
    """
    on = np.sort(_finite_1d(np.atleast_1d(np.asarray(onsets, dtype=np.float64)), "onsets"))
    # An attack a hit listened to (in its diff window, the row's "onsets") is that hit's partner,
    # not an off-beat note: with a wide window (the swing morph's dur/2.5) a swung 8th reaches
    # into the middle third of the gap and would otherwise become a silent row of its own.
    heard = np.sort(np.array([x for r in rows for x in (r.get("onsets") or [])], dtype=np.float64))
    if len(heard) and len(on):
        j = np.clip(np.searchsorted(heard, on), 1, len(heard)) - 1
        near = np.minimum(np.abs(on - heard[j]), np.abs(on - heard[np.minimum(j + 1, len(heard) - 1)]))
        on = on[near > HEARD_TOLERANCE_S]
    steps_per_bar = int(steps_per_bar)
    if steps_per_bar <= 0:
        raise ValueError(f"steps_per_bar must be positive, got {steps_per_bar}")
    gap_s = _finite_number(min_gap_ms, "min_gap_ms") / 1000.0
    occupied = {(int(r["bar"]), int(r["step"])) for r in rows}
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


# ----------------------------------------------------------------------------- take checks

@dataclass
class TakeCheck:
    """Verdict on a take: the ``rows`` to train on, whether it is ``usable``, and why."""

    rows: list
    usable: bool
    reasons: list = field(default_factory=list)


_NUMBERS = ("yhat", "notated", "intended", "played")


def _row_problem(r: dict) -> str | None:
    """First thing wrong with a row's numbers, or None."""
    for key in ("row", "bar", "step", "yhat", "notated"):
        if key not in r:
            return f"has no {key!r}"
    for key in _NUMBERS:
        if key in r and not _is_finite(r[key]):
            return f"{key} is {r[key]!r}"
    if r.get("diff") is not None and not _is_finite(r["diff"]):
        return f"diff is {r['diff']!r}"
    for key in ("features", "onsets"):
        vals = r.get(key) or []
        if not all(_is_finite(v) for v in vals):
            return f"{key} hold NaN or infinite values"
    return None


def _is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_take(take, score_hash: str, n_rows: int) -> TakeCheck:
    """Check a take before it trains anything; keep what can be used.

    * recorded against another score (``score_hash`` in its header differs,
      or is missing): refused;
    * rows not numbered 0, 1, 2 … or beyond the score, missing fields,
      NaN or infinite numbers: refused, naming the row;
    * cut short (no closing line, or a closing line with an ``error``) before
      the score's last row: the last bar may be partial, so only the bars
      before it are used, and the reasons say so;
    * no partner onset in any hit window: not usable (nothing to learn).

    Parameters
    ----------
    take : rolypoly.take.Take
        As read by :func:`rolypoly.take.read_take` (``header``, ``rows``,
        ``footer``, ``problems``).
    score_hash : str
        Hash of the session's score (:func:`rolypoly.realtime.duet.score_hash`).
    n_rows : int
        Rows in the session's score.

    Returns
    -------
    TakeCheck
        ``rows`` (possibly fewer than the take's), ``usable``, ``reasons``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> rows = [{"row": i, "bar": i // 2, "step": 12 * (i % 2), "yhat": 0.0, "notated": i * 1.0,
    ...          "diff": 0.01} for i in range(6)]
    >>> take = SimpleNamespace(header={"score_hash": "abc"}, rows=rows, footer=None, problems=[])
    >>> check = validate_take(take, "abc", n_rows=8)
    >>> check.usable, len(check.rows), check.reasons[0][:30]
    (True, 4, 'take cut short (no closing lin')
    >>> validate_take(take, "xyz", n_rows=8).usable
    False
    """
    header = getattr(take, "header", None) or {}
    rows = list(getattr(take, "rows", None) or [])
    footer = getattr(take, "footer", None)
    reasons = list(getattr(take, "problems", None) or [])

    def refuse(why: str) -> TakeCheck:
        return TakeCheck([], False, reasons + [why])

    theirs = header.get("score_hash")
    if theirs is None:
        return refuse("take has no score hash: cannot tell which score it was recorded against")
    if theirs != score_hash:
        return refuse(f"take was recorded against another score ({header.get('score', '?')!s}, "
                      f"hash {theirs}; this score's hash is {score_hash})")
    if header.get("rows") is not None and header["rows"] != n_rows:
        return refuse(f"take was of a score with {header['rows']} rows; this one has {n_rows}")
    if not rows:
        return refuse("take has no rows")
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            return refuse(f"take line {k + 2} is not a row")
        problem = _row_problem(r)
        if problem:
            return refuse(f"row {r.get('row', k)}: {problem}")
        if r["row"] != k:
            return refuse(f"rows are not in order: row {r['row']} where row {k} was expected")
    if len(rows) > n_rows:
        return refuse(f"take has {len(rows)} rows; the score has only {n_rows}")

    ended_badly = footer is None or "error" in footer
    how = "no closing line" if footer is None else f"ended with an error: {footer.get('error')}"
    if ended_badly and len(rows) < n_rows:
        last_bar = rows[-1]["bar"]
        kept = [r for r in rows if r["bar"] != last_bar]
        reasons.append(f"take cut short ({how}): using its {len(kept)} rows of complete bars, "
                       f"dropped the last, possibly partial bar {last_bar} ({len(rows) - len(kept)} rows)")
        rows = kept
        if not rows:
            return TakeCheck([], False, reasons + ["no complete bar left"])
    elif ended_badly:
        reasons.append(f"take has {how}, but all {n_rows} rows are there: using them all")
    elif footer.get("stopped_early"):
        reasons.append(f"take was stopped early: using its {len(rows)} of {n_rows} rows")

    if all(r.get("diff") is None for r in rows):
        return TakeCheck(rows, False, reasons + [
            f"no partner onset in any hit window (0 of {len(rows)} hits): no update"])
    return TakeCheck(rows, True, reasons)
