"""``rolypoly humanize`` (a timing agent, no partner), ``rolypoly groove humanize|drumify|infill|transfer``
and ``rolypoly grooves list|subset`` (the library of drummers' beats)."""
from __future__ import annotations

from .common import add_agent, add_gmd, print_warnings

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

    lib = sub.add_parser("grooves", help="the library of drummers' beats (Groove MIDI Dataset) to play as the score")
    what = lib.add_subparsers(dest="what", metavar="WHAT", required=True)
    ls = what.add_parser("list", help="the beats by style, tempo and meter (play one with --groove NAME)")
    ls.add_argument("--style", help="e.g. funk, rock, jazz, latin")
    ls.add_argument("--bpm", metavar="LO-HI", help="a tempo or a range, e.g. 96 or 90-110")
    ls.add_argument("--meter", help="e.g. 4/4, 3/4, 6/8")
    ls.add_argument("--kind", choices=("beat", "fill", "all"), default="beat", help="beats (default), fills or all")
    add_gmd(ls, "the whole library (default: the shipped subset when there is no dataset)")
    ls.add_argument("--json", action="store_true", help="the list as JSON")
    ls.set_defaults(run=run_grooves_list)
    sb = what.add_parser("subset", help="remake the subset of beats shipped with rolypoly from the dataset")
    add_gmd(sb)
    sb.add_argument("--out", required=True, metavar="DIR", help="where to write it (the shipped one: rolypoly/data/grooves)")
    sb.set_defaults(run=run_grooves_subset)


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


def run_grooves_list(args) -> int:
    """``rolypoly grooves list``: one line per groove, then where they come from and whose they are."""
    import json

    from rolypoly.grooves import ATTRIBUTION, find, library, parse_bpm

    grooves, where = library(args.gmd)
    found = find(grooves, style=args.style, bpm=parse_bpm(args.bpm) if args.bpm else None, meter=args.meter,
                 kind=None if args.kind == "all" else args.kind)
    if args.json:
        print(json.dumps({"source": where, "attribution": ATTRIBUTION, "grooves": [
            {"name": g.name, "style": g.style, "substyle": g.substyle, "bpm": g.bpm, "meter": g.meter,
             "kind": g.kind, "seconds": round(g.seconds, 1), "drummer": g.drummer, "file": str(g.path)}
            for g in found]}, indent=2))
        return 0
    if found:
        print(f"{'name':16s} {'meter':5s} {'bpm':>4s} {'length':>6s}  {'kind':4s}  {'drummer':9s} style")
    for g in found:
        minutes, seconds = divmod(int(round(g.seconds)), 60)
        print(f"{g.name:16s} {g.meter:5s} {g.bpm:4d} {minutes:3d}:{seconds:02d}  {g.kind:4s}  {g.drummer:9s} "
              f"{g.style}{'/' + g.substyle if g.substyle else ''}")
    kinds = "takes" if args.kind == "all" else f"{args.kind}s"
    if where == "dataset":
        print(f"{len(found)} {kinds} of {len(grooves)} in the Groove MIDI Dataset")
    else:
        print(f"{len(found)} {kinds} of the {len(grooves)} shipped with rolypoly; the whole Groove MIDI Dataset "
              "(1,150 takes) with --gmd DIR or $ROLYPOLY_GMD (rolypoly data gmd --download DIR gets it)")
    if found:
        print(f"play one: rolypoly play --groove {found[0].name} (with --partner-device DEV or --partner-file FILE)")
    print(ATTRIBUTION)
    return 0


def run_grooves_subset(args) -> int:
    """``rolypoly grooves subset``: the shipped subset, chosen by rule from the dataset."""
    from rolypoly.grooves import make_subset

    chosen = make_subset(args.gmd, args.out)
    size = sum(g.path.stat().st_size for g in chosen)
    print(f"{args.out}: {len(chosen)} beats of {len({g.style for g in chosen})} styles "
          f"({', '.join(sorted({g.meter for g in chosen}))}), {size / 1000:.0f} kB, with info.csv and ATTRIBUTION.md")
    return 0
