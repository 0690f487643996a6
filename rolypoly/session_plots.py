"""Pictures of a session, as the rolypoly~ paper's Figs. 1 and 2 (PNG, matplotlib Agg).

- **Fig. 1, one take** (:func:`plot_take_fig1`): the score as dotted vertical
  lines at the rows' notated positions, the drums' offset from the score
  (the agent's ŷ) as blue stems and the partner against the drums (diff:
  partner onset − drum hit) as grey bars, in ms per hit. Silent rows (all
  nine hit features 0: the off-beat partner rows a session's score grows,
  paper footnote 6) are drawn in orange. Every take of a session is drawn
  on the same y scale (:func:`shared_ylim`).
- **Fig. 2, all takes** (:func:`plot_takes_fig2`): the moving average over
  6 hits of diff, one line per take, the first take (the pretrained agent)
  thick and light grey; the legend gives each take's spread, σ(diff).

The x axis is the notated position in quarter notes from the start (so a
3/4 bar is shorter than a 4/4 one), labelled with bar numbers from 1, the
meter written as it is in the score ("6/8") where it changes. Takes
are aligned on their rows' (bar, step), never on row index, so a take of a
grown score (extra rows) or one cut short by a crash lines up with the rest.

Offsets in a take are fractions of a bar; a row's bar length comes from its
feature row: ``bar_ms = 60000 / tempo_bpm × 4 × timesig``.

Examples
--------
>>> paths = plot_session("sessions/song")          # doctest: +SKIP
>>> [p.name for p in paths]                        # doctest: +SKIP
['take_000.png', 'take_001.png', 'takes.png']
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rolypoly.take import TAKE_FILE, Take, TakeError, read_take

from .errors import RolypolyError
from .features import HITS, TEMPO, TIMESIG
from .grid import STEPS_PER_BAR
from .plotting import colormap, figure, save
from .session import TAKES, take_folders

#: Hits per moving-average window in Fig. 2 (the paper's period).
PERIOD = 6
#: Rows beyond this bar are taken for corrupted (100,000 bars: over two days at 120 bpm).
MAX_BAR = 100_000
PLOTS = "plots"
_STEM, _SILENT, _DIFF = "C0", "C1", "0.55"


# ----------------------------------------------------------------------------- a take as arrays

@dataclass(frozen=True)
class TakeHits:
    """The plottable rows of one take, one entry per row, in take order.

    ``x`` is the notated position in quarter notes from the score's start;
    ``yhat_ms`` and ``diff_ms`` are in ms (``diff_ms`` is NaN where no
    partner onset fell in the hit's window); ``silent`` marks rows without a
    drum hit. ``bar_x`` maps each bar (from 0) to the x of its downbeat and
    ``end_x`` is where the last bar ends.
    """

    bar: np.ndarray
    step: np.ndarray
    x: np.ndarray
    bar_ms: np.ndarray
    yhat_ms: np.ndarray
    diff_ms: np.ndarray
    silent: np.ndarray
    bar_x: dict
    end_x: float
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.bar)

    @property
    def partner_hits(self) -> np.ndarray:
        """Drum hits (not silent rows) with a partner onset: where diff is a drum–partner offset."""
        return ~self.silent & np.isfinite(self.diff_ms)


def _bar_ms_from_notated(abs_step: np.ndarray, notated: np.ndarray) -> np.ndarray:
    """Bar length (ms) per row from its notated time and its neighbour's (a fallback).

    >>> _bar_ms_from_notated(np.array([0, 6, 12]), np.array([0.0, 0.5, 1.0])).tolist()
    [2000.0, 2000.0, 2000.0]
    """
    out = np.full(len(abs_step), np.nan)
    if len(abs_step) < 2:
        return out
    dstep = np.diff(abs_step).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dstep > 0, np.diff(notated) / dstep * STEPS_PER_BAR * 1000.0, np.nan)
    out[:-1] = slope          # each row from the gap to the next one,
    out[-1] = slope[-1]       # the last one from the gap before it
    return out


def bar_starts(bar: np.ndarray, quarters: np.ndarray) -> tuple[dict[int, float], float]:
    """Where every bar starts, in quarter notes from the score's start, and where the last ends.

    ``quarters`` is the length of each row's bar in quarter notes. A bar
    without rows takes the length of the bar before it (leading ones the
    first known length; 4 when nothing is known).

    Examples
    --------
    >>> bar_starts(np.array([0, 0, 1, 3]), np.array([4.0, 4.0, 3.0, 3.0]))
    ({0: 0.0, 1: 4.0, 2: 7.0, 3: 10.0}, 13.0)
    """
    known: dict[int, float] = {}
    for b, q in zip(bar.tolist(), quarters.tolist()):
        if math.isfinite(q) and q > 0:
            known.setdefault(int(b), float(q))
    length = next(iter(known.values()), 4.0)
    starts, at = {}, 0.0
    for b in range(int(bar.max()) + 1 if len(bar) else 0):
        length = known.get(b, length)
        starts[b] = at
        at += length
    return starts, at


def _fill(values: np.ndarray, fallback: np.ndarray, default: float) -> np.ndarray:
    """``values`` where finite and positive, else ``fallback``, else the median of the good ones."""
    out = np.where(np.isfinite(values) & (values > 0), values, fallback)
    bad = ~(np.isfinite(out) & (out > 0))
    good = out[~bad]
    out[bad] = np.median(good) if len(good) else default
    return out


def take_hits(take: Take) -> TakeHits:
    """The rows of a take as arrays in ms and quarter notes, ready to plot.

    A row's bar length comes from its feature row (tempo and time
    signature), else from the notated times around it. Rows without a
    usable ``bar``, ``step`` or ``yhat`` (missing, or out of range: ŷ is
    at most a bar) are left out and counted in ``skipped``; a null diff
    (no partner onset) becomes NaN.

    Examples
    --------
    >>> h = take_hits(read_take("sessions/song/takes/000"))   # doctest: +SKIP
    >>> h.x[:4].tolist()                                       # doctest: +SKIP
    [0.0, 1.0, 2.0, 3.0]
    """
    all_rows = take.rows
    good = ((all_rows["bar"] >= 0) & (all_rows["bar"] < MAX_BAR) & (all_rows["step"] >= 0)
            & (all_rows["step"] <= STEPS_PER_BAR) & (np.abs(all_rows["yhat"]) <= 1))
    rows = all_rows[good]
    bar = rows["bar"].astype(np.int64)
    step = rows["step"].astype(np.int64)
    yhat = rows["yhat"].astype(np.float64)
    features = rows["features"].astype(np.float64)
    tempo = features[:, TEMPO]
    quarters = features[:, TIMESIG] * 4
    notated = rows["notated"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bar_ms = 60_000.0 / tempo * quarters
    bar_ms = _fill(bar_ms, _bar_ms_from_notated(bar * STEPS_PER_BAR + step, notated), 2000.0)
    starts, end = bar_starts(bar, quarters)
    q = _fill(quarters, np.full(len(rows), np.nan), 4.0)
    x = np.array([starts[b] for b in bar.tolist()], dtype=np.float64) + step / STEPS_PER_BAR * q
    diff = rows["diff"].astype(np.float64)
    diff[~(np.abs(diff) <= 1)] = np.nan                  # a diff beyond a bar is not an offset
    silent = (features[:, HITS] == 0).all(axis=1)
    return TakeHits(bar, step, x, bar_ms, yhat * bar_ms, diff * bar_ms, silent, starts, end,
                    skipped=int(len(all_rows) - good.sum()))


# ----------------------------------------------------------------------------- Fig. 2's curve

def moving_average(values, period: int = PERIOD) -> np.ndarray:
    """Trailing moving average: entry i is the mean of entries i − period + 1 … i.

    The first ``period − 1`` entries are NaN (no full window yet).

    Examples
    --------
    >>> moving_average([1, 2, 3, 4, 5, 6, 7, 8], period=6).tolist()
    [nan, nan, nan, nan, nan, 3.5, 4.5, 5.5]
    """
    if period < 1:
        raise ValueError(f"period must be at least 1, not {period}")
    x = np.asarray(values, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) >= period:
        out[period - 1:] = np.lib.stride_tricks.sliding_window_view(x, period).mean(axis=1)
    return out


def offset_curve(hits: TakeHits, period: int = PERIOD) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 2's line for one take: x and the moving average of diff (ms).

    Only drum hits with a partner onset count (silent rows and hits where
    the partner was not heard are left out), so each window spans
    ``period`` heard hits; a value sits at the last hit of its window.

    >>> x, ma = offset_curve(take_hits(take))   # doctest: +SKIP
    """
    use = hits.partner_hits
    ma = moving_average(hits.diff_ms[use], period)
    full = np.isfinite(ma)
    return hits.x[use][full], ma[full]


def diff_sigma_ms(hits: TakeHits) -> float:
    """σ of diff in ms (population) over the drum hits with a partner onset; NaN when none.

    >>> diff_sigma_ms(take_hits(take))   # doctest: +SKIP
    12.4
    """
    d = hits.diff_ms[hits.partner_hits]
    return float(np.std(d)) if len(d) else math.nan


# ----------------------------------------------------------------------------- drawing

def _as_take(take) -> Take:
    """A Take, or a take file / take folder to read."""
    return take if isinstance(take, Take) else read_take(take)


#: Steps of the y scale (ms): the shared limit is the first one that holds every take.
Y_STEPS_MS = (5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 300, 500, 1000)


def shared_ylim(hits_list: list[TakeHits]) -> tuple[float, float]:
    """One y scale (ms) for Fig. 1 of every take of a session: ± the first step of :data:`Y_STEPS_MS`
    holding every drum offset and every diff of every take (with a little room).

    Symmetric, so "early" and "late" are as far from the zero line in every picture.

    Examples
    --------
    >>> h = take_hits(take)                       # doctest: +SKIP
    >>> shared_ylim([h])                           # doctest: +SKIP
    (-30.0, 30.0)
    """
    peak = 0.0
    for h in hits_list:
        values = np.concatenate([h.yhat_ms, h.diff_ms])
        values = values[np.isfinite(values)]
        if len(values):
            peak = max(peak, float(np.abs(values).max()))
    limit = next((float(v) for v in Y_STEPS_MS if v >= peak * 1.08), float(Y_STEPS_MS[-1]))
    return -limit, limit


def _bar_axis(ax, hits_list: list[TakeHits]) -> None:
    """Bar lines and bar-number ticks (from 1), quarter-note minor ticks, on a beats axis."""
    from matplotlib.ticker import MultipleLocator

    bars: dict[int, float] = {}
    for h in hits_list:
        for b, x in h.bar_x.items():
            bars.setdefault(b, x)
    if not bars:
        return
    end = max(h.end_x for h in hits_list)
    for x in [*bars.values(), end]:
        ax.axvline(x, color="0.82", lw=0.8, zorder=0)
    order = sorted(bars)
    every = max(1, math.ceil(len(order) / 24))
    ax.set_xticks([bars[b] for b in order[::every]], [str(b + 1) for b in order[::every]])
    ax.xaxis.set_minor_locator(MultipleLocator(1.0))
    ax.set_xlim(min(bars.values()) - 0.25, end + 0.25)
    ax.set_xlabel("bar (small ticks: quarter notes)")


def bar_meters(score) -> dict[int, str]:
    """The meter of every bar of a score that has rows, as written: ``{0: "4/4", 4: "6/8", …}``.

    >>> from rolypoly.score import load_score
    >>> from rolypoly.paths import DEMO_SCORE
    >>> m = bar_meters(load_score(DEMO_SCORE))
    >>> m[0], m[4], m[8]
    ('4/4', '6/8', '4/4')
    """
    meters = score.tempo_map.meter_at(score.tick)
    return {int(b): f"{n}/{d}" for b, (n, d) in zip(score.bar.tolist(), meters.tolist())}


def _meter_marks(ax, hits_list: list[TakeHits], meters: dict[int, str] | None) -> None:
    """The meter written above the first bar and wherever it changes (bars from 1)."""
    if not meters:
        return
    starts: dict[int, float] = {}
    for h in hits_list:
        for b, x in h.bar_x.items():
            starts.setdefault(b, x)
    before = None
    for b in sorted(starts):
        m = meters.get(b, before)
        if m is not None and m != before:
            ax.text(starts[b], 1.0, f" {m}", transform=ax.get_xaxis_transform(), va="bottom", ha="left",
                    fontweight="bold", color="0.25")
        before = m


def _mean_sd(x: np.ndarray) -> str:
    return f"{np.mean(x):+.1f} ± {np.std(x):.1f} ms" if len(x) else "n/a"


def take_summary(take: Take, hits: TakeHits | None = None) -> str:
    """One line about a take: score, agent, hits, where the drums sat against the partner and the score.

    >>> take_summary(take)   # doctest: +SKIP
    'song, lstm model version 0, 96 hits: drums 3.1 ms early against the partner, spread 12.4 ms
    (heard on 80 of 96 hits); drums' offset from the score +1.2 ± 4.0 ms'
    """
    from .report import partner_fit

    h = hits if hits is not None else take_hits(take)
    head = take.header
    parts = [str(head.score or "take"), str(head.agent or "?")]
    if head.model_version is not None:
        parts[-1] += f" model version {head.model_version}"
    sounding = ~h.silent
    rows = f"{int(sounding.sum())} hits" + ("" if take.complete else " (cut short)")
    fit = partner_fit(h.diff_ms[h.partner_hits])
    partner = ("partner not heard" if fit is None else
               f"drums {fit.words().replace(', ', ' against the partner, ', 1)} "
               f"(heard on {fit.hits} of {int(sounding.sum())} hits)")
    return f"{', '.join(parts)}, {rows}: {partner}; drums' offset from the score {_mean_sd(h.yhat_ms[sounding])}"


def take_figure(take, *, title: str | None = None, ylim=None, meters: dict | None = None):
    """Paper Fig. 1 of one take as a figure: score (dotted), drums' offsets (stems), partner (bars), in ms.

    Parameters
    ----------
    take : rolypoly.take.Take, or the path of a take file or folder
    title : default: :func:`take_summary`
    ylim : (low, high) in ms, the same for every take of a session (default: :func:`shared_ylim` of this take)
    meters : optional ``{bar: "6/8"}`` (:func:`bar_meters`), written where the meter changes

    Returns
    -------
    matplotlib.figure.Figure
    """
    take = _as_take(take)
    h = take_hits(take)
    fig, ax = figure()
    _bar_axis(ax, [h])
    top = ax.get_xaxis_transform()
    s = h.silent
    ax.vlines(h.x[~s], 0, 1, transform=top, colors="0.3", linestyles=":", lw=0.9, label="score")
    if s.any():
        ax.vlines(h.x[s], 0, 1, transform=top, colors=_SILENT, linestyles=":", lw=0.9,
                  label="silent row (partner's off-beat note)")
    heard = np.isfinite(h.diff_ms)
    # Each bar starts at its hit's stem (the paper draws both at the hit): both stay visible.
    ax.bar(h.x[heard], h.diff_ms[heard], width=0.12, align="edge", color=_DIFF, zorder=2,
           label="partner against the drums (+ partner late)")
    ax.vlines(h.x[~s], 0, h.yhat_ms[~s], colors=_STEM, lw=1.3, zorder=3)
    ax.plot(h.x[~s], h.yhat_ms[~s], "o", color=_STEM, ms=4, zorder=4,
            label="drums' offset from the score (+ late)")
    if s.any():
        ax.vlines(h.x[s], 0, h.yhat_ms[s], colors=_SILENT, lw=1.0, zorder=3)
        ax.plot(h.x[s], h.yhat_ms[s], "o", mfc="none", color=_SILENT, ms=4, zorder=4)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(*(ylim if ylim is not None else shared_ylim([h])))
    ax.set_ylabel("ms (+ late, − early)")
    _meter_marks(ax, [h], meters)
    if len(h):
        _legend(ax)
    else:
        ax.text(0.5, 0.5, "no rows in this take", transform=ax.transAxes, ha="center")
        ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(_wrap(title or take_summary(take, h)), pad=22 if meters else 6)
    return fig


def plot_take_fig1(take, path, *, title: str | None = None, ylim=None, meters: dict | None = None) -> Path:
    """PNG of one take as paper Fig. 1 (:func:`take_figure`): score, drums' offsets, partner, in ms.

    Silent rows (the off-beat partner rows a grown score holds) get orange
    dotted lines and hollow orange stems; the drum plays nothing there.

    Examples
    --------
    >>> plot_take_fig1("sessions/song/takes/000", "take_000.png")   # doctest: +SKIP
    PosixPath('take_000.png')
    """
    return save(take_figure(take, title=title, ylim=ylim, meters=meters), path)


def _wrap(text: str, width: int = 110) -> str:
    """A long title on two lines, broken at the last '; ' or ': ' that fits."""
    if len(text) <= width:
        return text
    for sep in ("; ", ": ", ", "):
        k = text.rfind(sep, 0, width)
        if k > 0:
            return text[:k + len(sep)].rstrip() + "\n" + text[k + len(sep):]
    return text


def _legend(ax) -> None:
    """The legend under the axes, where it hides no hit."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, frameon=False)


def takes_figure(takes, *, labels=None, meters: dict | None = None):
    """Paper Fig. 2 as a figure: moving average (6 hits) of the partner against the drums, one line per take.

    See :func:`plot_takes_fig2`.
    """
    takes = [_as_take(t) for t in takes]
    labels = list(labels) if labels is not None else [f"take {i}" for i in range(len(takes))]
    if len(labels) != len(takes):
        raise ValueError(f"{len(labels)} labels for {len(takes)} takes")
    hits_list = [take_hits(t) for t in takes]
    fig, ax = figure()
    _bar_axis(ax, hits_list)
    cmap = colormap("viridis")
    for i, (h, label) in enumerate(zip(hits_list, labels)):
        x, ma = offset_curve(h)
        sigma = diff_sigma_ms(h)
        label += "" if takes[i].complete else " (cut short)"
        label += f": spread {sigma:.1f} ms" if math.isfinite(sigma) else ": partner not heard"
        if i == 0:
            style = dict(color="0.75", lw=4.0, zorder=2)
        else:
            style = dict(color=cmap(0.85 * (i - 1) / max(1, len(takes) - 2)), lw=1.6, zorder=3)
        ax.plot(x, ma, label=label, **style)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(f"partner against the drums, ms (+ partner late)\nmoving average of {PERIOD} hits")
    _meter_marks(ax, hits_list, meters)
    score = (takes[0].header.score or "session") if takes else "session"
    ax.set_title(f"{score}: the partner against the drums over {len(takes)} takes "
                 "(spread over the hits where the partner was heard)", pad=22 if meters else 6)
    _legend(ax)
    return fig


def plot_takes_fig2(takes, path, *, labels=None, meters: dict | None = None) -> Path:
    """PNG of several takes as paper Fig. 2: moving average (6 hits) of diff, one line per take.

    The first take is the baseline (the pretrained agent): thick, light
    grey. Takes are placed by the notated position of their rows, so takes
    of different lengths (grown or cut short) line up. The legend gives each
    take's spread (σ of diff) over its drum hits with a partner onset.

    Parameters
    ----------
    takes : sequence of rolypoly.take.Take (or take paths), in take order
    path : the PNG to write
    labels : one per take (default "take 0", "take 1", …)
    meters : optional ``{bar: "6/8"}`` (:func:`bar_meters`)

    Examples
    --------
    >>> plot_takes_fig2([take0, take1, take2], "takes.png")   # doctest: +SKIP
    PosixPath('takes.png')
    """
    return save(takes_figure(takes, labels=labels, meters=meters), path)


# ----------------------------------------------------------------------------- a session

def _warn(message: str) -> None:
    print(f"rolypoly: warning: {message}", file=sys.stderr)


def session_takes(folder) -> list[tuple[int, Take]]:
    """Every readable take of a session folder, as (number, take), in take order.

    Unreadable takes are skipped with a one-line warning on stderr.

    Raises
    ------
    RolypolyError
        When the folder holds no take, or none that can be read.

    Examples
    --------
    >>> [k for k, _ in session_takes("sessions/song")]   # doctest: +SKIP
    [0, 1, 2]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RolypolyError(f"{folder}: no such session folder")
    dirs = take_folders(folder)
    if not dirs:
        raise RolypolyError(f"{folder}: no takes to plot (no {TAKES}/NNN/{TAKE_FILE})")
    out = []
    for d in dirs:
        try:
            out.append((int(d.name), read_take(d / TAKE_FILE)))
        except (TakeError, OSError) as e:
            _warn(f"skipping take {d.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if not out:
        raise RolypolyError(f"{folder}: none of its {len(dirs)} takes could be read")
    return out


def session_meters(folder) -> dict[int, str] | None:
    """The meters of a session's score by bar (:func:`bar_meters`), None when it has no readable score.mid."""
    from .score import load_score

    path = Path(folder) / "score.mid"
    if not path.is_file():
        return None
    try:
        return bar_meters(load_score(path))
    except RolypolyError:
        return None


def session_ylim(folder) -> tuple[float, float]:
    """The y scale (ms) every take of a session is drawn on (:func:`shared_ylim` of its readable takes)."""
    return shared_ylim([take_hits(t) for _, t in session_takes(folder)])


def session_figures(session_folder) -> list[tuple[str, object]]:
    """A session's figures, named: ``take_NNN.png`` per take (Fig. 1), then ``takes.png`` (Fig. 2).

    Every take is drawn on the same y scale (:func:`shared_ylim`), and
    bars are counted from 1 with the meters as written when the session's
    score is there.

    Raises
    ------
    RolypolyError
        When the session has no take that can be read.
    """
    folder = Path(session_folder)
    takes = session_takes(folder)
    meters = session_meters(folder)
    hits = {k: take_hits(t) for k, t in takes}
    ylim = shared_ylim(list(hits.values()))
    out, labels = [], []
    for k, take in takes:
        h = hits[k]
        if h.skipped:
            _warn(f"take {k:03d}: {h.skipped} unusable rows left out of the plots")
        out.append((f"take_{k:03d}.png", take_figure(take, title=f"take {k} · {take_summary(take, h)}",
                                                     ylim=ylim, meters=meters)))
        version = take.header.model_version
        labels.append(f"take {k}" + (f", model version {version}" if version is not None else "")
                      + (" (first)" if not labels else ""))
    out.append(("takes.png", takes_figure([t for _, t in takes], labels=labels, meters=meters)))
    return out


def plot_session(session_folder, out_dir=None) -> list[Path]:
    """Write a session's plots: ``take_NNN.png`` per take (Fig. 1) and ``takes.png`` (Fig. 2).

    Parameters
    ----------
    session_folder : the session (``sessions/<name>``)
    out_dir : where to write (default: ``<session>/plots``)

    Returns
    -------
    list of Path : the PNGs written, the takes' first and ``takes.png`` last

    Raises
    ------
    RolypolyError
        When the session has no take that can be read.

    Examples
    --------
    >>> [p.name for p in plot_session("sessions/song")]   # doctest: +SKIP
    ['take_000.png', 'take_001.png', 'takes.png']
    """
    folder = Path(session_folder)
    out = Path(out_dir) if out_dir is not None else folder / PLOTS
    return [save(fig, out / name) for name, fig in session_figures(folder)]
