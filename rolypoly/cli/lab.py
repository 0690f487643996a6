"""``rolypoly bench decide|generate|onsets|finetune|output|service|soak`` and ``rolypoly experiment``: the lab's measurements.

Each prints its JSON report (and writes it with ``--json OUT``); the README's
figures come from these commands.
"""
from __future__ import annotations

import json
import sys

from .common import add_agent, add_forgetting_check, add_gmd, add_json_out, forgetting_check, print_report
from .devices import add_instrument

#: The paper's between-take experiments (:mod:`rolypoly.lab.experiments`).
EXPERIMENTS = ("morph", "tresillo", "tame", "follow")


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks that print JSON")
    what = b.add_subparsers(dest="what", metavar="WHAT", required=True)
    d = what.add_parser("decide", help="per-hit decision latency of both agents vs the numpy floor")
    add_json_out(d)
    d.add_argument("--steps", type=int, default=5000, help="timed decisions per agent (>= 2000)")
    d.set_defaults(run=run_bench_decide)

    g = what.add_parser("generate", help="time to write the next bar and a fill (live generation), one thread")
    add_json_out(g)
    g.add_argument("--calls", type=int, default=1000, help="timed calls per model (default 1000)")
    g.add_argument("--continuation", metavar="WEIGHTS", help="continuation weights (default: shipped)")
    g.add_argument("--fill", metavar="WEIGHTS", help="fill weights (default: shipped)")
    g.set_defaults(run=run_bench_generate)

    o = what.add_parser("onsets", help="onset F1, latency and live cost of the detector vs aubio (48 kHz)")
    add_json_out(o)
    o.add_argument("--real", metavar="DIR", help="annotated recordings: audio files with NAME.onsets beside "
                                                 "them (one onset time in seconds per line)")
    add_instrument(o)
    o.add_argument("--quick", action="store_true", help="a few short recordings per set (a check, not the figures)")
    o.add_argument("--kernel", choices=("auto", "c", "numpy"), default="auto",
                   help="who does each hop's work: the C kernel (default where a C compiler is) or the "
                        "numpy reference (to compare their cost)")
    o.add_argument("-v", "--verbose", action="store_true", help="one progress line per recording on stderr")
    o.set_defaults(run=run_bench_onsets)

    f = what.add_parser("finetune", help="fine-tuning after a 3-minute take, GMD validation included, both agents")
    add_json_out(f)
    f.add_argument("--repeats", type=int, default=5, help="timed runs per agent and figure")
    add_gmd(f)
    f.add_argument("--bpm", type=float, help="play the looped demo at this tempo (default its own, 96): more rows")
    f.set_defaults(run=run_bench_finetune)

    t = what.add_parser("output", help="drum output timing on JACK (|emitted - intended|, drift) and CPU load")
    add_json_out(t)
    t.add_argument("--minutes", type=float, default=5.0, help="length of the take (default 5)")
    t.add_argument("--quick", action="store_true", help="a 6-second take (a check, not the figures)")
    t.add_argument("--period", type=int, default=64, help="frames per cycle of a JACK server started here")
    t.add_argument("--rate", type=int, default=48000, metavar="HZ", help="sample rate of a JACK server started here")
    t.add_argument("--partner", choices=("clicks", "live"), default="clicks",
                   help="clicks from a file (default), or the live JACK input (silent on the dummy backend)")
    t.add_argument("--drums", choices=("audio", "midi", "rtmidi"), default="midi",
                   help="the sampled kit on a JACK audio port (found in a capture by its samples), MIDI written "
                        "on its frames (default), or python-rtmidi's JACK MIDI (every event at the next cycle)")
    t.add_argument("--kit", metavar="FILE.sf2|DIR", help="drum kit of --drums audio (default: the installed GM soundfont)")
    t.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    t.set_defaults(run=run_bench_output)

    s = what.add_parser("service", help="hits of a real-clock take while rolypoly serve loads scores mid-take")
    add_json_out(s)
    s.add_argument("--repeats", type=int, default=1, help="takes per scenario (default 1)")
    s.add_argument("--large-bars", type=int, default=2000, help="bars of the large score loaded mid-take")
    s.add_argument("-v", "--verbose", action="store_true", help="one line per take on stderr")
    s.set_defaults(run=run_bench_service)

    j = what.add_parser("jack", help="the JACK cycles this machine loses with no rolypoly client (one lone client)")
    add_json_out(j)
    j.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    j.add_argument("-v", "--verbose", action="store_true", help="progress on stdout")
    j.set_defaults(run=run_bench_jack)

    k = what.add_parser("soak", help="a long real-clock take on JACK through the service, with a virtual partner and "
                                     "control traffic: memory growth, misses, lateness, drift")
    add_json_out(k)
    k.add_argument("--minutes", type=float, default=30.0, help="length of the take (default 30)")
    k.add_argument("--control-every", type=float, default=3.0, metavar="S",
                   help="seconds between control messages (default 3)")
    k.add_argument("--sample-every", type=float, default=10.0, metavar="S",
                   help="seconds between memory and CPU samples (default 10)")
    k.add_argument("--drums", choices=("midi", "rtmidi"), default="midi",
                   help="midi: rolypoly's JACK client, each note on its frame, as play opens it on JACK (default); "
                        "rtmidi: python-rtmidi's JACK port, every note at the next cycle")
    k.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    k.set_defaults(run=run_bench_soak)

    e = sub.add_parser("experiment", help="the paper's between-take experiments, and live generation's follow "
                                          "experiment, on the simulated clock")
    e.add_argument("name", choices=EXPERIMENTS)
    add_json_out(e, "the report (per-take figures)")
    e.add_argument("--out", metavar="DIR", help="folder for the session and plots (default experiments/NAME)")
    e.add_argument("--takes", type=int, help="fine-tuning rounds (default: 3 for the morphs, 10 for tame)")
    e.add_argument("--style", help="follow: the style the bars are written in (default: any)")
    add_agent(e, help="timing agent (default: the experiment's own)")
    e.add_argument("--seed", type=int, default=0)
    add_forgetting_check(e, "tame's forgetting check")
    e.add_argument("--paper-ab", action="store_true",
                   help="learn with A = B = 1 centred on all hits (the paper's defaults) instead of the design's")
    e.set_defaults(run=run_experiment)


def run_bench_decide(args) -> int:
    from rolypoly.lab.bench_decide import run

    print_report(run(args.json_out, steps=args.steps))
    return 0


def run_bench_generate(args) -> int:
    from rolypoly.lab.bench_generate import run

    print_report(run(args.json_out, calls=max(1, args.calls), continuation=args.continuation, fill=args.fill))
    return 0


def run_bench_onsets(args) -> int:
    from rolypoly.lab.bench_onsets import run

    params = {"instrument": args.instrument} if args.instrument else {}
    if args.kernel != "auto":
        params["kernel"] = args.kernel
    print_report(run(args.json_out, real=args.real, quick=args.quick, detector_params=params, verbose=args.verbose))
    return 0


def run_bench_finetune(args) -> int:
    from rolypoly.lab.bench_finetune import run

    print_report(run(args.json_out, repeats=args.repeats, gmd=args.gmd, tempo_bpm=args.bpm))
    return 0


def run_bench_output(args) -> int:
    from rolypoly.lab.bench_output import run

    print_report(run(args.json_out, minutes=0.1 if args.quick else args.minutes, period=args.period,
                     rate=args.rate, partner=args.partner, verbose=args.verbose, drums=args.drums, kit=args.kit))
    return 0


def run_bench_service(args) -> int:
    from rolypoly.lab.bench_service import run

    def progress(take):
        print(f"{take['scenario']}: {take['misses']} misses, max {take['late_ms_max']} ms", file=sys.stderr)

    print_report(run(args.json_out, repeats=args.repeats, large_bars=args.large_bars,
                     progress=progress if args.verbose else None))
    return 0

def run_bench_jack(args) -> int:
    from rolypoly.errors import RolypolyError
    from rolypoly.lab.bench_jack import run

    if not args.minutes > 0:
        raise RolypolyError("bench jack: --minutes must be above 0")
    print_report(run(args.json_out, minutes=args.minutes, verbose=args.verbose))
    return 0


def run_bench_soak(args) -> int:
    from rolypoly.errors import RolypolyError
    from rolypoly.lab.bench_soak import run

    if not (args.minutes > 0 and args.control_every > 0 and args.sample_every > 0):
        raise RolypolyError("bench soak: --minutes, --control-every and --sample-every must be above 0")
    report = run(args.json_out, minutes=args.minutes, control_s=args.control_every, sample_s=args.sample_every,
                 drums=args.drums, verbose=args.verbose)
    print_report(report)
    return 0 if report["targets"]["all_met"] else 1


def run_experiment(args) -> int:
    from rolypoly.lab import experiments

    out = args.out or f"experiments/{args.name}"
    if args.name == "follow":
        report = experiments.follow_experiment(out, seed=args.seed, agent=args.agent or "lstm",
                                               generate={"controls": {"style": args.style}} if args.style else None)
        print_report(report, args.json_out)
        return 0 if report["targets"]["met"] else 1
    dataset = None if args.name != "tame" else forgetting_check(args)
    report = experiments.run_experiment(args.name, out, takes=args.takes, agent=args.agent, seed=args.seed, dataset=dataset,
                            paper_ab=args.paper_ab, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report["targets"], indent=1))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json_out}")
    return 0 if report["targets"]["met"] else 1
