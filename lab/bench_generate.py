"""Time to write the next bar (and a fill), one call at a time on one thread.

The live engine asks for bar k+1 while bar k plays and needs it one beat
before its downbeat (a beat at 200 bpm: 300 ms). The benchmark loads the
shipped bar models, takes the demo score's bars on the generation grid as
the drums and a syncopated riff as the partner, warms up, then times
``next_bar`` and ``fill_bar`` call by call with the controls changing every
call (follow, density, temperature, seed; the sampling path included).
Wall-clock time per call, and beside it (``cpu``) the calling thread's CPU
time, which a machine shared with other work does not inflate::

    rolypoly bench generate --json generate.json

Target on the 2-core reference machine: ``next_bar`` p99 ≤ 20 ms (issue 15).
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

TARGET_P99_MS = 20.0


def _ms(ns) -> dict:
    ms = np.asarray(ns) / 1e6
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "max_ms": round(float(ms.max()), 3), "calls": int(len(ms))}


def run(json_out=None, *, calls: int = 1000, warmup: int = 50, continuation=None, fill=None) -> dict:
    import torch

    from rolypoly.generate import BarState, BarWriter, Controls, partner_grid
    from rolypoly.generate_model import GRID, STEPS_PER_BAR
    from rolypoly.groove_grid import read_groove
    from rolypoly.paths import DEMO_SCORE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        writer = BarWriter.load(continuation, fill)
        groove = read_groove(DEMO_SCORE, grid=GRID)
        whole = groove.steps_per_bar == STEPS_PER_BAR
        bars = [k for k in range(groove.n_bars - 1) if whole[k] and whole[k + 1]]  # two 4/4 bars of context
        riff = partner_grid([0, 3 / 16, 6 / 16, 10 / 16, 12 / 16], [1.0, 0.6, 0.9, 0.7, 0.8])
        results = {}
        for name, call in (("next_bar", writer.next_bar), ("fill_bar", writer.fill_bar)):
            ns, cpu_ns = [], []
            for i in range(warmup + calls):
                k = bars[i % len(bars)]
                a, b = groove.bar_starts[k], groove.bar_starts[k + 2]
                state = BarState.from_bars(groove.H[a:b], groove.V[a:b], groove.O[a:b], partner=riff, bar=i)
                controls = Controls(follow=(i % 11) / 10, density=0.3 + 0.4 * (i % 3) / 2,
                                    temperature=0.0 if i % 2 else 0.8, seed=i)
                start, cpu = time.perf_counter_ns(), time.thread_time_ns()
                rows = call(state, controls)
                stop, cpu_stop = time.perf_counter_ns(), time.thread_time_ns()
                if i >= warmup:
                    ns.append(stop - start)
                    cpu_ns.append(cpu_stop - cpu)
            results[name] = {**_ms(ns), "rows_last_bar": int(len(rows)),
                             "cpu": _ms(cpu_ns)}
    finally:
        torch.set_num_threads(threads)
    report = {
        **results,
        "target_p99_ms": TARGET_P99_MS, "met": results["next_bar"]["p99_ms"] <= TARGET_P99_MS,
        "grid": GRID, "steps_per_bar": STEPS_PER_BAR, "threads": 1,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    if json_out:
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report
