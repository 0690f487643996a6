"""``rolypoly demo``: the bundled score humanized, then played with the bundled bass recording."""
from __future__ import annotations

import sys

from .common import print_take


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="humanize the demo score, then play it with a bass recording")
    d.add_argument("--out", default="demo-output", help="folder for the results")
    d.add_argument("--no-realtime", action="store_true", help="play the second take on the simulated clock too "
                                                              "(not in real time: 40 s)")
    d.add_argument("--quick", action="store_true", help="a short demo: both takes of the score's first bars "
                                                        "on the simulated clock (seconds)")
    d.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from pathlib import Path

    from rolypoly.demo import run_demo as humanize_demo
    from rolypoly.realtime.demo import DEMO_PARTNER, QUICK_BARS, SESSION, run_duet_demo
    from rolypoly.realtime.display import ProgressLines
    from rolypoly.report import early_late
    from rolypoly.score import load_score
    from rolypoly.session import Session

    from .sessions import print_learning

    r = humanize_demo(args.out)
    print(f"demo score: {r['score']} ({r['rows']} rows: 4/4 at 96 bpm, 6/8, 4/4 at 78 bpm)")
    print("1. offline humanization, no partner:")
    for kind, path in r["midi"].items():
        print(f"  {kind:8s} humanized MIDI: {path}")
    print(f"  offsets plot: {r['plot']}")
    print(f"2. duet with a bass recording ({DEMO_PARTNER.name}), LSTM agent"
          f"{f', the first {QUICK_BARS} bars' if args.quick else ''}:", flush=True)
    # The real-time take is followed bar by bar (a line every few bars); the simulated ones take seconds.
    follow = ProgressLines(enabled=False, stream=sys.stdout, indent="    ")
    score = load_score(r["score"])
    length = f"{score.n_bars} bars, about {score.onset_s[-1] + score.duration_ms[-1] / 1000:.0f} s"

    def on_step(how, result):
        nonlocal follow
        if result is None:     # the second take is about to start
            follow = ProgressLines(enabled=how == "real time", stream=sys.stdout, indent="    ")
            print(f"  {how}, model version 1" + (f": {length}" if how == "real time" else ""), flush=True)
            return
        if how == "finetune":
            print("  between the takes, learning from take 0:")
            print_learning(Session(Path(args.out) / SESSION), result, indent="    ")
            return
        follow.close()
        mean, spread = result.get("diff_ms_mean"), result.get("diff_ms_std")
        against = ("partner not heard" if mean is None else
                   f"drums {early_late(-mean)} against the partner, spread {spread:.1f} ms")
        print(f"  {how} (model version {result.get('model_version')}): {against}")
        print_take(result, indent="    ")
        sys.stdout.flush()

    run_duet_demo(args.out, realtime=not args.no_realtime, quick=args.quick, on_step=on_step,
                  on_engine=lambda engine: follow.watch(engine), say=lambda line: print(f"  {line}", flush=True))
    return 0
