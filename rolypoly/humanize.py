"""Offline humanization: a timing agent performs a score with no partner.

The notes, pitches and velocities stay; each row moves by the agent's ŷ
(fraction of a bar, converted to ticks in its own bar, so tempo changes and
meters are respected). The tempo map and time signatures are kept.

Examples
--------
>>> score, yhat = humanize_file("straight.mid", "human.mid", agent="seq2seq")  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from .agents import default_weights, load_agent
from .features import score_features
from .score import Score, load_score, write_midi


def humanize(score: Score, agent) -> np.ndarray:
    """ŷ of every row of ``score`` (fraction of a bar), partner features zero."""
    return agent.predict(score_features(score))


def humanize_file(in_path, out_path, *, agent: str = "lstm", weights=None) -> tuple[Score, np.ndarray]:
    """Read ``in_path``, humanize it with an agent, write ``out_path``.

    Parameters
    ----------
    agent : "lstm" or "seq2seq"
    weights : path, optional
        Agent weights; the shipped pretrained ones where omitted.
    """
    score = load_score(in_path)
    model = load_agent(weights or default_weights(agent))
    yhat = humanize(score, model)
    write_midi(score, out_path, offsets=yhat)
    return score, yhat


def plot_offsets(score: Score, offsets: dict, path, title: str | None = None) -> None:
    """PNG of the offset (ms) of every row for each agent, over bar positions.

    Tempo and meter changes are marked, since microtiming in ms follows them.
    """
    from .plotting import figure, save

    fig, ax = figure(figsize=(11, 4))
    x = score.bar_position
    for k, (name, yhat) in enumerate(offsets.items()):
        ms = np.asarray(yhat) * score.bar_ms
        ax.plot(x, ms, ".-", lw=0.8, ms=4, label=f"{name} (σ {ms.std():.1f} ms)", color=f"C{k}")
    top, bottom = ax.get_ylim()[1], ax.get_ylim()[0]
    for attr, label, y in ((score.tempo_bpm, "{:g} bpm", top), (score.timesig, "meter {:g}", bottom)):
        change = np.flatnonzero(np.diff(attr)) + 1
        for i in np.r_[0, change]:
            ax.axvline(x[i], color="0.7", lw=0.8, ls="--")
            ax.text(x[i], y, " " + label.format(round(float(attr[i]), 2)),
                    va="top" if y == top else "bottom", fontsize=8, color="0.3")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("bar")
    ax.set_ylabel("offset from the grid (ms, + = late)")
    ax.set_title(title or f"{score.name}: agent microtiming per hit")
    ax.legend(loc="lower right", fontsize=8)
    save(fig, path, dpi=110)
