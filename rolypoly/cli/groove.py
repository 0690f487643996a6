"""``rolypoly humanize`` (a timing agent, no partner) and ``rolypoly groove humanize|drumify|infill|transfer``."""
from __future__ import annotations

from .common import add_agent, print_warnings

#: The groove tools and what each does (their help lines).
GROOVE_TOOLS = {"humanize": "play a drum score with a drummer's velocities and timing",
                "drumify": "turn taps (MIDI) or a partner's recording (WAV) into a drum part",
                "infill": "write a new part for one instrument (default the hi-hat) to go with the rest",
                "transfer": "play one file's score with another file's groove"}


def add_parser(sub) -> None:
    from rolypoly.groove_grid import INSTRUMENTS

    h = sub.add_parser("humanize", help="perform a drum MIDI file with a timing agent (no partner)")
    h.add_argument("input", help="drum part, Standard MIDI File")
    h.add_argument("-o", "--output", required=True, help="humanized MIDI file to write")
    add_agent(h, default="lstm")
    h.add_argument("--weights", help="agent weights (.safetensors); default: the shipped ones")
    h.add_argument("--plot", metavar="PNG", help="also plot the offsets per hit")
    h.set_defaults(run=run_humanize)

    g = sub.add_parser("groove", help="groove models on MIDI of any length: humanize, drumify, infill, transfer")
    tools = g.add_subparsers(dest="tool", metavar="TOOL", required=True)
    for tool, text in GROOVE_TOOLS.items():
        p = tools.add_parser(tool, help=text, description=text)
        if tool == "transfer":
            p.add_argument("--groove", required=True, metavar="A.mid", help="the clip whose groove is used")
            p.add_argument("--score", required=True, metavar="B.mid", help="the drum part to play")
        else:
            p.add_argument("input", metavar="TAPS.mid|PARTNER.wav" if tool == "drumify" else "IN.mid")
        p.add_argument("-o", "--output", required=True, metavar="OUT.mid", help="MIDI file to write")
        if tool == "drumify":
            p.add_argument("--bpm", type=float, help="tempo (default: a MIDI file's own, estimated for audio)")
        if tool == "infill":
            p.add_argument("--instrument", choices=tuple(INSTRUMENTS), default="hihat",
                           help="the instrument to write (default hihat: closed and open)")
        p.add_argument("--temperature", type=float, default=0.0,
                       help="0 (default): the most likely performance; higher: more varied")
        p.add_argument("--velocity-spread", type=float, metavar="X",
                       help="how widely velocities vary around the model's prediction, in units of its "
                            "validation error (default 1: as widely as the drummers; 0: the mean)")
        p.add_argument("--seed", type=int, help="makes a performance repeatable (default: the same "
                                                "performance every time at temperature 0)")
        p.add_argument("--weights", help="model weights (.safetensors); default: the shipped ones")
        p.add_argument("--plot", metavar="PNG", help="also write a before/after piano roll")
        p.set_defaults(run=run_groove)


def run_humanize(args) -> int:
    from rolypoly.humanize import humanize_file, plot_offsets

    score, yhat = humanize_file(args.input, args.output, agent=args.agent, weights=args.weights)
    print_warnings(score.warnings)
    ms = yhat * score.bar_ms
    print(f"{args.output}: {len(score)} rows humanized by the {args.agent} agent "
          f"(offsets {ms.mean():+.1f} ± {ms.std():.1f} ms)")
    if args.plot:
        plot_offsets(score, {args.agent: yhat}, args.plot)
        print(f"{args.plot}: offsets per hit")
    return 0


def _not_negative(value, option: str) -> None:
    import math

    from rolypoly.errors import RolypolyError

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise RolypolyError(f"{option} {value:g}: must be 0 or more")


def run_groove(args) -> int:
    """``rolypoly groove TOOL``: write the MIDI file, print one line about it (and the plot)."""
    from rolypoly import groove

    _not_negative(args.temperature, "--temperature")
    _not_negative(args.velocity_spread, "--velocity-spread")
    common = {"weights": args.weights, "temperature": args.temperature, "velocity_spread": args.velocity_spread,
              "seed": args.seed}
    if args.tool == "humanize":
        before, after = groove.humanize_midi(args.input, args.output, **common)
    elif args.tool == "drumify":
        before, after = groove.drumify_midi(args.input, args.output, bpm=args.bpm, **common)
    elif args.tool == "infill":
        before, after = groove.infill_midi(args.input, args.output, instrument=args.instrument, **common)
    else:
        before, after = groove.transfer_midi(args.groove, args.score, args.output, **common)
    print_warnings(before.warnings)
    print(f"{args.output}: {args.tool}, {before.n_bars} bars: {groove.describe(after)}")
    if args.plot:
        groove.plot_groove(before, after, args.plot, labels=("taps" if args.tool == "drumify" else "before", "after"))
        print(f"{args.plot}: before and after")
    return 0
