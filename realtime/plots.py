"""Pictures of a take: ŷ and diff per hit (as rolypoly~ Fig. 1).

>>> plot_take(score, result, "take.png")   # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np


def plot_take(score, result, path, title: str | None = None) -> None:
    """PNG: the score grid, ŷ as stems and the drum–partner diff as bars, in ms per hit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.played)
    x = score.bar_position[:n]
    bar_ms = score.bar_ms[:n]
    yhat_ms = result.yhat * bar_ms
    diff_ms = result.diff * bar_ms
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    for b in range(int(score.bar[0]), int(score.bar[n - 1]) + 2 if n else 1):
        ax.axvline(b, color="0.85", lw=0.8)
        ax2.axvline(b, color="0.85", lw=0.8)
    ax.vlines(x, 0, yhat_ms, color="C0", lw=1.2)
    ax.plot(x, yhat_ms, "o", color="C0", ms=3, label="ŷ (drum offset from the score)")
    ok = np.isfinite(diff_ms)
    width = 0.6 / 24
    ax2.bar(x[ok], diff_ms[ok], width=width, color="0.55", label="diff (partner − drum)")
    for a in (ax, ax2):
        a.axhline(0, color="k", lw=0.6)
        a.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("ŷ (ms, + late)")
    ax2.set_ylabel("diff (ms, + partner late)")
    ax2.set_xlabel("bar")
    stats = f"misses {result.misses}, partner heard on {int(ok.sum())}/{n} hits"
    if ok.any():
        stats += f", diff {np.nanmean(diff_ms):+.1f} ± {np.nanstd(diff_ms):.1f} ms"
    ax.set_title(title or f"{score.name}: take ({stats})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
