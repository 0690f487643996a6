"""Figures without global state: matplotlib's object API, never pyplot.

Plots are written from the command line, from the service's threads and
from training processes alike; pyplot's current figure and backend are
process-wide state (and ``matplotlib.use`` changes it for everyone), so
every picture here is a :class:`matplotlib.figure.Figure` of its own,
saved straight to PNG.

Pictures are for a musician to read on a laptop screen: :data:`SIZE` at
:data:`DPI` is 1600 × 900 pixels, and :func:`save` raises every text of a
figure to at least :data:`MIN_FONT_PT` (set per figure, not in matplotlib's
process-wide settings, for the reason above).

Examples
--------
>>> import tempfile, os
>>> fig, ax = figure()
>>> _ = ax.plot([0, 1], [1, 0])
>>> _ = ax.set_title("small", fontsize=6)
>>> path = save(fig, os.path.join(tempfile.mkdtemp(), "line.png"))
>>> path.stat().st_size > 1000, ax.title.get_fontsize()
(True, 12.0)
"""
from __future__ import annotations

from pathlib import Path

#: Figure size in inches (16:9) and resolution: 1600 × 900 pixels.
SIZE = (16.0, 9.0)
DPI = 100
#: Smallest text in a figure, in points (at 100 dpi, 12 pt is 17 pixels high).
MIN_FONT_PT = 12.0


def figure(nrows: int = 1, ncols: int = 1, *, figsize=SIZE, **subplots):
    """A new figure and its axes (as ``Figure.subplots`` returns them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def readable(fig, min_pt: float = MIN_FONT_PT):
    """Raise every text of ``fig`` (titles, labels, tick labels, legends, notes) to ``min_pt`` points.

    Tick labels are made as the figure is drawn, so they are set on the axes
    (``tick_params``) as well as on the ones already there.
    """
    from matplotlib.text import Text

    for ax in fig.axes:
        for axis in ("x", "y"):
            for which in ("major", "minor"):
                ticks = ax.xaxis if axis == "x" else ax.yaxis
                labels = ticks.get_ticklabels(which=which)
                size = max([min_pt] + [t.get_fontsize() for t in labels])
                ax.tick_params(axis=axis, which=which, labelsize=size)
    for text in fig.findobj(Text):
        if text.get_fontsize() < min_pt:
            text.set_fontsize(min_pt)
    return fig


def save(fig, path, *, dpi: int = DPI) -> Path:
    """Make the text readable, lay the figure out and write it as PNG (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    readable(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
