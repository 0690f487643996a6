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
    """PNG of the offset (ms) of every row for each agent, over the bars (:func:`offsets_figure`)."""
    from .plotting import save

    save(offsets_figure(score, offsets, title), path)


def offsets_figure(score: Score, offsets: dict, title: str | None = None):
    """The offset (ms) of every row for each agent, over the bars (counted from 1): a figure.

    Tempo and meter changes are marked (meters as written, "6/8"), since
    microtiming in ms follows them.
    """
    from .plotting import figure

    fig, ax = figure()
    x = score.bar_position + 1          # bar 1 starts at 1, as musicians count
    for k, (name, yhat) in enumerate(offsets.items()):
        ms = np.asarray(yhat) * score.bar_ms
        ax.plot(x, ms, ".-", lw=1.0, ms=6, label=f"{name} (spread {ms.std():.1f} ms)", color=f"C{k}")
    bottom, top = ax.get_ylim()
    meters = [f"{n}/{d}" for n, d in score.tempo_map.meter_at(score.tick).tolist()]
    tempi = [f"{round(float(t), 2):g} bpm" for t in score.tempo_bpm]
    for labels, y in ((tempi, top), (meters, bottom)):
        for i in range(len(labels)):
            if i == 0 or labels[i] != labels[i - 1]:
                ax.axvline(x[i], color="0.7", lw=0.8, ls="--")
                ax.text(x[i], y, " " + labels[i], va="top" if y == top else "bottom", color="0.3")
    ax.axhline(0, color="k", lw=0.6)
    every = max(1, -(-score.n_bars // 24))
    ax.set_xticks(range(1, score.n_bars + 2, every))
    ax.set_xlim(0.75, score.n_bars + 1.25)
    ax.set_xlabel("bar")
    ax.set_ylabel("drums' offset from the score (ms, + late)")
    ax.set_title(title or f"{score.name}: each agent's timing, hit by hit")
    ax.legend(loc="lower right")
    return fig
