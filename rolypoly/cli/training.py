"""``rolypoly pretrain timing|groove|continuation|fill|onsets``, ``evaluate timing|groove|live-groove`` and ``data gmd``: training the models.

Timing, groove and bar models learn from the Groove MIDI Dataset; the onset
network from partner takes rendered from soundfonts.

``pretrain`` writes where ``--out`` says, by default
:func:`rolypoly.paths.weights_out_dir` (``$ROLYPOLY_WEIGHTS``, else the user
data folder), never into the installed package; the shipped weights are
remade with ``--out rolypoly/weights`` in a checkout. Several processes
train through ``python -m rolypoly.cli``::

    torchrun --nproc_per_node 4 -m rolypoly.cli pretrain timing --agent seq2seq
"""
from __future__ import annotations

import json

from rolypoly import AGENT_KINDS

from .common import add_agent, add_gmd, add_json_out, print_report


def add_parser(sub) -> None:
    from rolypoly.groove_grid import GRIDS, GROOVE_TASKS, INSTRUMENTS
    from rolypoly.pretrain.gmd import SPLITS

    pre = sub.add_parser("pretrain", help="train models: timing and groove on the Groove MIDI Dataset, onsets "
                                          "on partners rendered from soundfonts")
    what = pre.add_subparsers(dest="what", metavar="WHAT", required=True)
    t = what.add_parser("timing", help="pretrain a timing agent (lstm or seq2seq)")
    add_agent(t, required=True)
    _add_training(t, epochs=60, writes="the weights, their metadata and the training curve")
    t.set_defaults(run=run_pretrain_timing)
    g = what.add_parser("groove", help="train a groove model: humanize, drumify, infill or transfer")
    g.add_argument("--task", choices=GROOVE_TASKS, required=True)
    g.add_argument("--grid", choices=tuple(GRIDS), default="16th",
                   help="16th (GrooVAE) or triplet (12 steps a beat: 16ths and triplets)")
    g.add_argument("--instrument", choices=tuple(INSTRUMENTS), default="hihat",
                   help="infill: the instrument the model writes (default hihat: closed and open)")
    _add_training(g, epochs=100, writes="the weights and their metadata")
    g.add_argument("--minutes", type=float, default=14.0,
                   help="wall-clock budget of each network (default 14); the whole run stays within 30")
    g.add_argument("--recalibrate", metavar="WEIGHTS",
                   help="do not train: measure the residual spreads of these trained weights again on the "
                        "validation split and store them (weights file and its JSON)")
    g.add_argument("--members", type=int,
                   help="networks trained from consecutive seeds and shipped as one ensemble, two at a "
                        "time (default 4 for humanize, 1 for the others)")
    g.set_defaults(run=run_pretrain_groove)
    o = what.add_parser("onsets", help="train the onset network on partner takes rendered from General MIDI "
                                       "soundfonts (FluidSynth)")
    o.add_argument("--out", metavar="DIR",
                   help="folder for onsets.safetensors and onsets.json (default $ROLYPOLY_WEIGHTS, else weights/ in "
                        "the user data folder; --out rolypoly/weights remakes the shipped ones)")
    o.add_argument("--takes", type=int, help="training takes of 8 s (default 240; validation: a sixth as many)")
    o.add_argument("--minutes", type=float, help="training budget (default 25; never more than 30)")
    o.add_argument("--workers", type=int, default=2, help="processes rendering the takes (default 2)")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    o.set_defaults(run=run_pretrain_onsets)

    for kind, text in (("continuation", "the next bar from the drums' last bars, the partner's rhythm and a style"),
                       ("fill", "a fill bar from the groove bar it leaves (GMD fill takes)")):
        c = what.add_parser(kind, help=f"train the bar generator of live generation: {text}")
        _add_training(c, epochs=100, writes="the weights and their metrics JSON")
        c.add_argument("--minutes", type=float, default=15.0,
                       help="wall-clock budget of the training loop (default 15; never over 30)")
        c.add_argument("--refigure", metavar="WEIGHTS",
                       help="do not train: measure these trained weights again (offset spread, pocket, held-out "
                            "figures) and rewrite them and their JSON")
        c.set_defaults(run=run_pretrain_bars, kind=kind)

    ev = sub.add_parser("evaluate", help="measure models against the papers' tables")
    what = ev.add_subparsers(dest="what", metavar="WHAT", required=True)
    e = what.add_parser("timing", help="Table 1: timing error of baseline, LSTM and Seq2Seq")
    add_gmd(e)
    e.add_argument("--split", default="test", choices=SPLITS)
    add_json_out(e)
    for kind in AGENT_KINDS:
        e.add_argument(f"--{kind}", metavar="WEIGHTS", help=f"{kind} weights (default: shipped)")
    e.add_argument("--limit", type=int, help="only the first N takes of the split")
    e.set_defaults(run=run_evaluate_timing)
    eg = what.add_parser("groove", help="GrooVAE Table 1: quantized, KNN and the groove model of a task")
    eg.add_argument("--task", required=True, choices=GROOVE_TASKS)
    add_gmd(eg)
    eg.add_argument("--split", default="test", choices=SPLITS)
    eg.add_argument("--grid", default="16th", choices=tuple(GRIDS))
    eg.add_argument("--limit", type=int, help="only the first N takes of each split")
    add_json_out(eg)
    eg.add_argument("--weights", help="the model's weights (default: shipped groove_<task>.safetensors)")
    eg.add_argument("--instrument", default="hihat", help="infill: the instrument removed (default hihat)")
    eg.add_argument("--bootstrap", type=int, default=200, help="resamples for 95%% intervals (0: none)")
    eg.add_argument("--temperature", type=float, default=0.0,
                    help="the model's sampling temperature (default 0: its most likely performance)")
    eg.add_argument("--velocity-spread", type=float, metavar="X",
                    help="how widely the model draws velocities around its prediction, in units of its "
                         "validation error (default 1; the row model_velocity_mean is always spread 0)")
    eg.set_defaults(run=run_evaluate_groove)
    lg = what.add_parser("live-groove", help="live generation on GMD test takes: continuation against repeat, "
                                             "drumify and KNN; fills; style; next-bar time (issue 15)")
    add_gmd(lg)
    add_json_out(lg)
    lg.add_argument("--bars", type=int, metavar="N",
                    help="at most N test bars per section (continuation, fills, tap patterns): a quick run")
    lg.add_argument("--limit", type=int, metavar="N", help="only the first N takes of each split")
    lg.add_argument("--continuation", metavar="WEIGHTS|NAME",
                    help="continuation weights, or a version made by rolypoly groove learn (default: shipped)")
    lg.add_argument("--fill", metavar="WEIGHTS", help="fill weights (default: shipped)")
    lg.add_argument("--drumify", metavar="WEIGHTS", help="the drumify baseline's weights (default: shipped)")
    lg.add_argument("--fill-temperature", type=float, default=None,
                    help="temperature the fills are drawn at (default 1: the model's own probabilities)")
    lg.add_argument("--calls", type=int, default=300,
                    help="timed next-bar calls for next_bar.{p50_ms,p99_ms} (rolypoly bench generate; 0: skip)")
    lg.add_argument("--no-follow", action="store_true",
                    help="leave out the follow experiment (rolypoly experiment follow: two simulated 16-bar takes)")
    lg.set_defaults(run=run_evaluate_live_groove)

    data = sub.add_parser("data", help="get datasets")
    what = data.add_subparsers(dest="what", metavar="WHAT", required=True)
    d = what.add_parser("gmd", help="download and verify the Groove MIDI Dataset (MIDI only)")
    d.add_argument("--download", metavar="DIR", required=True,
                   help="folder to download and unpack the MIDI-only archive into")
    d.add_argument("--url", help="archive address (a mirror, or file:// for a local copy; default: the official one)")
    d.add_argument("--sha256", help="expected SHA-256 of the archive (default: the official archive's)")
    d.set_defaults(run=run_data_gmd)


def _add_training(parser, *, epochs: int, writes: str) -> None:
    """What both ``pretrain`` commands take: the dataset, where the weights go, how long, how repeatable."""
    add_gmd(parser)
    parser.add_argument("--out", metavar="DIR",
                        help=f"folder for {writes} (default $ROLYPOLY_WEIGHTS, else weights/ in the user data "
                             "folder; --out rolypoly/weights remakes the shipped ones)")
    parser.add_argument("--epochs", type=int, help=f"most epochs (default {epochs}; early stopping may end sooner)")
    parser.add_argument("--limit", type=int, help="use only the first N takes of each split (smoke runs)")
    parser.add_argument("--seed", type=int, help="random seed (default 1234)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run_pretrain_timing(args) -> int:
    """Train, then print the outcome as one JSON line (from the first process only, under torchrun)."""
    from rolypoly.paths import weights_out_dir
    from rolypoly.pretrain.train_timing import MAX_EPOCHS, SEED, is_main_process, train

    out = weights_out_dir(args.out)
    meta = train(args.agent, args.gmd, args.epochs or MAX_EPOCHS, out=out, limit=args.limit,
                 seed=SEED if args.seed is None else args.seed, progress=not args.quiet)
    if is_main_process():
        v, b = meta["validation"], meta["validation_baseline"]
        print(json.dumps({"agent": args.agent, "out": str(out),
                          "best_epoch": meta["best_epoch"], "validation_mse_bar": v["mse_bar"],
                          "baseline_mse_bar": b["mse_bar"], "ratio": round(v["mse_bar"] / b["mse_bar"], 4),
                          "train_seconds": meta["train_seconds"]}))
    return 0


def run_pretrain_groove(args) -> int:
    """Train (or only recalibrate), then print the outcome as one JSON line."""
    from rolypoly.paths import weights_out_dir
    from rolypoly.pretrain.train_groove import MAX_EPOCHS, SEED, recalibrate, train

    if args.recalibrate:
        print(json.dumps(recalibrate(args.task, args.recalibrate, args.gmd)))
        return 0
    out = weights_out_dir(args.out)
    meta = train(args.task, args.gmd, out=out, grid=args.grid, instrument=args.instrument,
                 minutes=args.minutes, epochs=args.epochs or MAX_EPOCHS, limit=args.limit,
                 seed=SEED if args.seed is None else args.seed, progress=not args.quiet,
                 members=args.members)
    v = meta["validation"]
    print(json.dumps({"task": args.task, "grid": args.grid, "out": str(out),
                      "members": meta["members"], "best_epoch": meta["best_epoch"], "stopped": meta["stopped"],
                      "validation_loss": round(meta["validation_loss"], 4),
                      "offset_mse_steps": round(v["offset_mse_steps"], 4),
                      "baseline_offset_mse_steps": round(v["baseline_offset_mse_steps"], 4),
                      "timing_mae_ms": round(v["timing_mae_ms"], 2), "hit_f1": round(v["hit_f1"], 3),
                      "train_seconds": meta["train_seconds"]}))
    return 0


def run_pretrain_onsets(args) -> int:
    """Render, train, save; print the outcome as one JSON line."""
    from rolypoly.paths import weights_out_dir
    from rolypoly.pretrain.train_onsets import pretrain

    out = weights_out_dir(args.out)
    meta = pretrain(out, takes=args.takes, minutes=args.minutes, workers=args.workers, progress=not args.quiet)
    v = meta["validation"]
    best = v["at_threshold"][str(v["best_threshold"])]
    print(json.dumps({"out": str(out), "threshold": v["best_threshold"], "validation_f1": best["f1"],
                      "latency_median_ms": best["latency_median_ms"],
                      "train_seconds": meta["training"]["train_seconds"]}))
    return 0


def run_pretrain_bars(args) -> int:
    """Train a bar generator, then print its held-out figures beside the baseline as one JSON line."""
    from rolypoly.paths import weights_out_dir
    from pathlib import Path

    from rolypoly.pretrain.train_generate import MAX_EPOCHS, SEED, refigure, train

    if args.refigure:
        out = Path(args.refigure).parent
        meta = refigure(args.kind, args.refigure, args.gmd)
    else:
        out = weights_out_dir(args.out)
        meta = train(args.kind, args.gmd, out=out, minutes=args.minutes, epochs=args.epochs or MAX_EPOCHS,
                     limit=args.limit, seed=SEED if args.seed is None else args.seed, progress=not args.quiet)
    base = "baseline_repeat_last_bar" if args.kind == "continuation" else "baseline_groove_bar"
    print(json.dumps({"model": args.kind, "out": str(out), "best_epoch": meta["best_epoch"],
                      "stopped": meta["stopped"], "train_seconds": meta["train_seconds"],
                      **{split: {k: meta[split][k] for k in ("model", base) if k in meta[split]}
                         for split in ("validation", "test")}}))
    return 0


def run_evaluate_timing(args) -> int:
    from rolypoly.pretrain.evaluate import evaluate_timing

    result = evaluate_timing(args.split, args.gmd, {kind: getattr(args, kind) for kind in AGENT_KINDS},
                             limit=args.limit)
    print_report(result, args.json_out)
    return 0


def run_evaluate_groove(args) -> int:
    from pathlib import Path

    from rolypoly.errors import RolypolyError
    from rolypoly.groove_grid import instrument_classes
    from rolypoly.pretrain.evaluate_groove import evaluate, format_table

    try:
        instrument_classes(args.instrument)
    except ValueError as e:
        raise RolypolyError(f"--instrument: {e}") from None
    result = evaluate(args.task, args.split, args.gmd, args.grid, args.weights, args.limit,
                      instrument=args.instrument, bootstrap=args.bootstrap,
                      temperature=args.temperature, velocity_spread=args.velocity_spread)
    print(format_table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"{args.json_out}: written")
    return 0


def run_evaluate_live_groove(args) -> int:
    """Continuation, fills, style (and the follow experiment, next-bar time) as one JSON report."""
    from rolypoly.errors import RolypolyError
    from rolypoly.generate import FILL_TEMPERATURE
    from rolypoly.pretrain.evaluate_live_groove import evaluate

    for name in ("bars", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RolypolyError(f"--{name} {value}: must be 1 or more")
    temperature = FILL_TEMPERATURE if args.fill_temperature is None else args.fill_temperature
    if not 0.0 <= temperature <= 5.0:
        raise RolypolyError(f"--fill-temperature {temperature:g}: must be within [0, 5]")
    result = evaluate(args.gmd, bars=args.bars, limit=args.limit, continuation_weights=args.continuation,
                      fill_weights=args.fill, drumify_weights=args.drumify, fill_temperature=temperature)
    if not args.no_follow:
        from rolypoly.generate import BarWriter
        from rolypoly.lab.experiments import follow_experiment

        report = follow_experiment(writer=BarWriter.load(args.continuation, args.fill))
        result["follow"] = {**report["follow"], "beat_never_stopped": report["beat_never_stopped"],
                            "targets": report["targets"], "measured_by": "rolypoly experiment follow"}
    if args.calls > 0:
        from rolypoly.lab.bench_generate import run as bench_generate

        bench = bench_generate(calls=args.calls, continuation=args.continuation, fill=args.fill)
        result["next_bar"] = {**bench["next_bar"], "target_p99_ms": bench["target_p99_ms"],
                              "met": bench["met"], "measured_by": f"rolypoly bench generate --calls {args.calls}"}
    print_report(result, args.json_out)
    return 0


def run_data_gmd(args) -> int:
    from rolypoly.pretrain.download import GMD_SHA256, GMD_SIZE, GMD_URL, download_gmd

    sha256 = args.sha256 or GMD_SHA256
    # The published size belongs to the published archive; another checksum means another file.
    folder = download_gmd(args.download, url=args.url or GMD_URL, sha256=sha256,
                          size=GMD_SIZE if sha256 == GMD_SHA256 else None)
    print(f"Groove MIDI Dataset ready in {folder} (use --gmd {folder}, or set ROLYPOLY_GMD)")
    return 0
