"""``rolypoly demo``: the bundled score humanized, then played with the bundled bass recording."""
from __future__ import annotations

from .common import print_take


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="humanize the demo score, then play it with a bass recording")
    d.add_argument("--out", default="demo-output", help="folder for the results")
    d.add_argument("--no-realtime", action="store_true", help="skip the real-time take (40 s)")
    d.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from rolypoly.demo import run_demo as humanize_demo
    from rolypoly.realtime.demo import DEMO_PARTNER, run_duet_demo

    r = humanize_demo(args.out)
    print(f"demo score: {r['score']} ({r['rows']} rows: 4/4 at 96 bpm, 6/8, 4/4 at 78 bpm)")
    print("1. offline humanization, no partner:")
    for kind, path in r["midi"].items():
        print(f"  {kind:8s} humanized MIDI: {path}")
    print(f"  offsets plot: {r['plot']}")
    print(f"2. duet with a bass recording ({DEMO_PARTNER.name}), LSTM agent:")
    for how, summary in run_duet_demo(args.out, realtime=not args.no_realtime).items():
        if how == "finetune":
            print(f"  between the takes, fine-tuning on take {summary['take']}: {summary['reason']}; "
                  f"the next take plays model version {summary['current']}")
            continue
        print(f"  {how} (model version {summary.get('model_version')}), "
              f"drum-partner offset {summary.get('diff_ms_mean')} ± {summary.get('diff_ms_std')} ms: ", end="")
        print_take(summary)
    return 0
