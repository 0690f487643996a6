"""The bundled demo score and the ``make demo`` job.

The demo score is a short song of our own: a 4/4 groove at 96 bpm, a 6/8
section, a slower 4/4 outro at 78 bpm with a fill, so the offline job shows
the agents across a tempo change and a compound meter.

Examples
--------
>>> run_demo("demo-output")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .drum_map import class_index
from .grid import STEPS_PER_BAR
from .paths import DEMO_PARTNER, DEMO_RIFF, DEMO_SCORE  # noqa: F401  (the bundled demo files)
from .score import Score, score_from_grid

#: The bundled bass recording starts this long before the demo score (s).
PARTNER_LEAD_S = 0.5


def _bar(hits: dict, accents=()) -> tuple[np.ndarray, np.ndarray]:
    """One bar from {class: [steps]}; accented steps are louder."""
    g = np.zeros((STEPS_PER_BAR, 9), bool)
    v = np.zeros((STEPS_PER_BAR, 9), int)
    for name, steps in hits.items():
        c = class_index(name)
        for s in steps:
            g[s, c] = True
            v[s, c] = 112 if s in accents else (70 if name in ("closed_hihat", "ride") else 96)
    return g, v


def demo_score() -> Score:
    """The demo song as a quantised score (24 steps per bar, 17 bars)."""
    eighths, sixteenths = range(0, 24, 3), [0, 3, 6, 9, 12, 15, 18, 21]
    rock = _bar({"kick": [0, 9, 12], "snare": [6, 18], "closed_hihat": eighths}, accents=(0, 12))
    rock_b = _bar({"kick": [0, 9, 12, 15], "snare": [6, 18, 21], "closed_hihat": sixteenths})
    # 6/8: the bar holds six 8ths, i.e. one every 4 grid steps.
    six8 = _bar({"kick": [0, 16], "snare": [12], "ride": range(0, 24, 4)}, accents=(0, 12))
    fill = _bar({"kick": [0], "snare": [0, 6, 9], "high_tom": [12, 15], "mid_tom": [16, 18],
                 "low_tom": [20, 22], "crash": [0]})
    outro = _bar({"kick": [0, 12], "snare": [6, 18], "ride": eighths})
    end = _bar({"kick": [0], "crash": [0]})
    bars = [rock, rock, rock, rock_b, six8, six8, six8, six8, rock, rock_b, rock, fill,
            outro, outro, outro, fill, end]
    hits = np.concatenate([b[0] for b in bars])
    vels = np.concatenate([b[1] for b in bars])
    return score_from_grid(hits, vels, tempi=[(0, 96), (12, 78)],
                           meters=[(0, 4, 4), (4, 6, 8), (8, 4, 4)], name="demo_score")


#: The generation demo (``rolypoly demo --generate``): 16 bars of the demo's rock groove at 96 bpm
#: against a bass that plays straight 8ths, then from bar 9 a syncopated riff.
RIFF_BARS, RIFF_CHANGE_BAR = 16, 8
STRAIGHT_RIFF = tuple(k / 8 for k in range(8))
#: 3+3+4+3+3 16ths: the rock groove's kick and snare meet two of its five notes.
SYNCOPATED_RIFF = (0.0, 3 / 16, 6 / 16, 10 / 16, 13 / 16)


def riff_positions(bars: int = RIFF_BARS, change_bar: int = RIFF_CHANGE_BAR, before=STRAIGHT_RIFF,
                   after=SYNCOPATED_RIFF) -> list[float]:
    """Bar positions (bar + phase) of a partner who plays ``before`` until ``change_bar``, then ``after``.

    >>> riff_positions(2, 1, before=(0.0, 0.5), after=(0.25,))
    [0.0, 0.5, 1.25]
    """
    return [b + p for b in range(bars) for p in (before if b < change_bar else after)]


def riff_score(bars: int = RIFF_BARS, bpm: float = 96.0) -> Score:
    """The generation demo's drum part: the demo's rock bar, ``bars`` times, 4/4.

    >>> riff_score(2).n_bars
    2
    """
    eighths = range(0, 24, 3)
    g, v = _bar({"kick": [0, 9, 12], "snare": [6, 18], "closed_hihat": eighths}, accents=(0, 12))
    return score_from_grid(np.tile(g, (bars, 1)), np.tile(v, (bars, 1)), bpm=bpm, name="riff_score")


def run_demo(out_dir="demo-output") -> dict:
    """Humanize the demo score with both shipped agents; write MIDI files and a plot."""
    from .agents import AGENT_KINDS, default_weights, load_agent
    from .humanize import humanize, plot_offsets
    from .score import load_score, write_midi

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    score = load_score(DEMO_SCORE)
    offsets, written = {}, {}
    for kind in AGENT_KINDS:
        yhat = humanize(score, load_agent(default_weights(kind)))
        offsets[kind] = yhat
        path = out / f"demo_humanized_{kind}.mid"
        write_midi(score, path, offsets=yhat)
        written[kind] = path
    plot = out / "demo_offsets.png"
    plot_offsets(score, offsets, plot)
    return {"score": DEMO_SCORE, "midi": written, "plot": plot, "offsets": offsets, "rows": len(score)}
