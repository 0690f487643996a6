"""Figures without global state: matplotlib's object API, never pyplot.

Plots are written from the command line, from the service's threads and
from training processes alike; pyplot's current figure and backend are
process-wide state (and ``matplotlib.use`` changes it for everyone), so
every picture here is a :class:`matplotlib.figure.Figure` of its own,
saved straight to PNG.

Examples
--------
>>> import tempfile, os
>>> fig, ax = figure(figsize=(3, 2))
>>> _ = ax.plot([0, 1], [1, 0])
>>> path = save(fig, os.path.join(tempfile.mkdtemp(), "line.png"))
>>> path.stat().st_size > 1000
True
"""
from __future__ import annotations

from pathlib import Path


def figure(nrows: int = 1, ncols: int = 1, *, figsize, **subplots):
    """A new figure and its axes (as ``Figure.subplots`` returns them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def save(fig, path, *, dpi: int = 100) -> Path:
    """Lay the figure out and write it as PNG (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
