"""The Table 1 comparison: timing error of the agents on a GMD split.

Every take of the split is performed as a whole score by each agent (no
partner: drums only) and compared with what the drummer played. The
baseline plays every row on the grid (ŷ = 0)::

    rolypoly evaluate timing --split test --json results.json

prints and writes ``{"rows": N, "baseline": {...}, "lstm": {...},
"seq2seq": {...}}``, each with ``mse_bar``, ``mse_16th`` and ``mae_ms``, and
each agent's ratio to the baseline.
"""
from __future__ import annotations

import numpy as np

from rolypoly.agents import AGENT_KINDS, default_weights, load_agent

from .gmd import load_split
from .metrics import timing_metrics
from .train_timing import predict_takes


def evaluate_timing(split: str = "test", gmd=None, weights: dict | None = None,
                    limit: int | None = None) -> dict:
    """Timing metrics of the baseline and both agents on one split.

    Parameters
    ----------
    weights : dict kind -> path, optional
        Weights to evaluate; the shipped ones where omitted.
    """
    data = load_split(split, gmd, limit=limit)
    result = {"split": split, "rows": int(len(data.y)), "takes": len(data), "data_key": data.key,
              "baseline": timing_metrics(np.zeros(len(data.y)), data.y, data.bar_ms, data.timesig)}
    base = result["baseline"]["mse_bar"]
    for kind in AGENT_KINDS:
        path = (weights or {}).get(kind) or default_weights(kind)
        agent = load_agent(path)
        m = timing_metrics(predict_takes(agent, data), data.y, data.bar_ms, data.timesig)
        m["ratio_to_baseline"] = round(m["mse_bar"] / base, 4) if base > 0 else None
        m["weights"] = str(path)
        result[kind] = m
    return result

