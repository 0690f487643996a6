"""Per-hit decision latency: feature row build + agent step, on one thread.

The live engine decides each hit a few milliseconds before it sounds, so
what matters is the tail of this time. For each agent the benchmark primes a
:class:`~rolypoly.agents.Performer` with a score, warms up, then times at
least 2,000 decisions one by one. In the same run it times the floor: the
same agent's matrix-vector products alone, in plain numpy, so the figure can
be judged on whatever machine runs it::

    rolypoly bench decide --json decide.json

Targets on the 2-core reference machine: p99 ≤ 250 µs for both agents and
p50 ≤ 4 × the floor's p50.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from rolypoly.agents import AGENT_KINDS, Performer, default_weights, load_agent
from rolypoly.features import fill_partner, score_features
from rolypoly.score import load_score

TARGET_P99_US = 250.0
TARGET_FLOOR_RATIO = 4.0


def _percentiles(ns: np.ndarray) -> dict:
    us = ns / 1000.0
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1), "max_us": round(float(us.max()), 1), "steps": int(len(us))}


def time_decisions(performer: Performer, X: np.ndarray, steps: int, warmup: int) -> np.ndarray:
    """Nanoseconds of each decision: copy the score row, fill the partner columns, step."""
    row = np.zeros(X.shape[1], np.float32)
    out = np.zeros(steps, np.int64)
    rng = np.random.default_rng(0)
    partner = rng.normal(0, 0.01, size=(len(X), 2)).astype(np.float32)
    performer.prime(X)
    t = 0
    clock = time.perf_counter_ns
    for i in range(warmup + steps):
        if t == len(X):  # a new take of the score: priming is between takes, not timed
            performer.prime(X)
            t = 0
        start = clock()
        np.copyto(row, X[t])
        fill_partner(row, partner[t, 0], partner[t, 1])
        performer.step(row)
        stop = clock()
        if i >= warmup:
            out[i - warmup] = stop - start
        t += 1
    return out


def time_floor(performer: Performer, steps: int, warmup: int) -> np.ndarray:
    """Nanoseconds of the agent's matrix-vector products alone (the numpy floor)."""
    mats = []
    for cell in performer.cells:
        mats += [cell.w_ih, cell.w_hh]
    vecs = [np.ones(m.shape[1], np.float32) for m in mats]
    outs = [np.zeros(m.shape[0], np.float32) for m in mats]
    head, top = performer.head_w, np.ones(len(performer.head_w), np.float32)
    out = np.zeros(steps, np.int64)
    clock = time.perf_counter_ns
    for i in range(warmup + steps):
        start = clock()
        for m, v, o in zip(mats, vecs, outs):
            np.dot(m, v, out=o)
        head @ top
        stop = clock()
        if i >= warmup:
            out[i - warmup] = stop - start
    return out


def run(json_path=None, *, steps: int = 5000, warmup: int = 500, score_path=None, weights=None) -> dict:
    """Run the benchmark on one thread; returns (and optionally writes) the JSON figures."""
    from threadpoolctl import threadpool_limits
    import torch

    from rolypoly.demo import DEMO_SCORE

    score = load_score(score_path or DEMO_SCORE)
    X = score_features(score)
    result = {"what": "per-hit decision: feature row build + agent step, one thread",
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "numpy": np.__version__},
              "score": score.name, "steps": steps, "warmup": warmup, "agents": {}}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            for kind in AGENT_KINDS:
                performer = Performer(load_agent((weights or {}).get(kind) or default_weights(kind)))
                decide = _percentiles(time_decisions(performer, X, steps, warmup))
                floor = _percentiles(time_floor(performer, steps, warmup))
                ratio = decide["p50_us"] / floor["p50_us"]
                result["agents"][kind] = {
                    "decision": decide, "floor_numpy_matvec": floor,
                    "p50_over_floor_p50": round(ratio, 2),
                    "meets_p99_target": decide["p99_us"] <= TARGET_P99_US,
                    "meets_floor_target": ratio <= TARGET_FLOOR_RATIO,
                }
    finally:
        torch.set_num_threads(torch_threads)
    result["targets"] = {"p99_us": TARGET_P99_US, "p50_over_floor_p50": TARGET_FLOOR_RATIO}
    result["met"] = all(a["meets_p99_target"] and a["meets_floor_target"] for a in result["agents"].values())
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result
