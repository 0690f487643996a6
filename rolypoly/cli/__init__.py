"""The ``rolypoly`` command.

Every subcommand imports what it needs when it runs, so ``rolypoly --help``
is instant. Problems the user can cause end as one line on stderr
(``rolypoly: <file>: <problem>``) and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings


def _humanize(args) -> int:
    from rolypoly.humanize import humanize_file, plot_offsets

    score, yhat = humanize_file(args.input, args.output, agent=args.agent, weights=args.weights)
    _print_warnings(score.warnings)
    ms = yhat * score.bar_ms
    print(f"{args.output}: {len(score)} rows humanized by the {args.agent} agent "
          f"(offsets {ms.mean():+.1f} ± {ms.std():.1f} ms)")
    if args.plot:
        plot_offsets(score, {args.agent: yhat}, args.plot)
        print(f"{args.plot}: offsets per hit")
    return 0


def _demo(args) -> int:
    from rolypoly.realtime.demo import DEMO_PARTNER, run_duet_demo

    from rolypoly.demo import run_demo

    r = run_demo(args.out)
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
        _report_take(summary)
    return 0


def _pretrain_timing(args) -> int:
    from rolypoly.pretrain.train_timing import run

    return run(args)


def _groove(args) -> int:
    from rolypoly.groove import run

    return run(args)


def _pretrain_groove(args) -> int:
    from rolypoly.pretrain.train_groove import run

    return run(args)


def _evaluate_timing(args) -> int:
    from rolypoly.pretrain.evaluate import run

    return run(args)


def _evaluate_groove(args) -> int:
    from rolypoly.pretrain.evaluate_groove import run

    return run(args)


def _data_gmd(args) -> int:
    from rolypoly.pretrain.download import run

    return run(args)


def _bench_decide(args) -> int:
    from rolypoly.lab.bench_decide import run

    print(json.dumps(run(args.json_out, steps=args.steps), indent=2))
    return 0


def _bench_onsets(args) -> int:
    from rolypoly.lab.bench_onsets import run

    print(json.dumps(run(args.json_out), indent=2))
    return 0


def _bench_finetune(args) -> int:
    from rolypoly.lab.bench_finetune import run

    print(json.dumps(run(args.json_out, repeats=args.repeats, gmd=args.gmd, tempo_bpm=args.bpm), indent=2))
    return 0


def _bench_output(args) -> int:
    from rolypoly.lab.bench_output import run

    print(json.dumps(run(args.json_out, minutes=args.minutes), indent=2))
    return 0


def _devices(args) -> int:
    from rolypoly.realtime.devices import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def _onsets(args) -> int:
    from rolypoly.onsets import detect_file

    onsets, available, descriptors = detect_file(args.input)
    if args.json:
        print(json.dumps([{"time_s": round(float(t), 6), "available_s": round(float(a), 6),
                           "descriptor": round(float(d), 4)}
                          for t, a, d in zip(onsets, available, descriptors)], indent=1))
    else:
        for t in onsets:
            print(f"{t:.6f}")
    return 0


def _engine_settings(args):
    from rolypoly.realtime.engine import EngineSettings

    return EngineSettings(budget_ms=args.budget_ms, window_factor=args.window,
                          partner_offset_s=args.partner_offset)


def _outputs(args):
    midi = osc = None
    if args.midi != "off":
        from rolypoly.realtime.midi_out import MidiOut

        midi = MidiOut(existing=None if args.midi == "virtual" else args.midi)
    if args.osc:
        from rolypoly.realtime.osc_out import OscOut

        host, _, port = args.osc.rpartition(":")
        if not port.isdigit():
            from rolypoly.errors import RolypolyError
            raise RolypolyError(f"--osc {args.osc}: expected HOST:PORT, e.g. 127.0.0.1:9000")
        osc = OscOut(host or "127.0.0.1", int(port))
    return midi, osc


def _report_take(summary) -> None:
    print(f"take written to {summary['take_dir']}: {summary['rows']} hits, "
          f"partner heard on {summary['hits_with_partner']}, deadline misses {summary['misses']}, "
          f"xruns {summary['xruns']}")
    for key in ("drums", "partner", "mix", "plot"):
        if key in summary:
            print(f"  {key:8s} {summary[key]}")
    for p in summary.get("problems", []):
        print(f"rolypoly: warning: {p}", file=sys.stderr)


def _simulate(args) -> int:
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.sources import FileSource

    midi, osc = _outputs(args)
    summary = play_take(args.score, FileSource(args.partner_file), SimClock(), session=args.session,
                        agent=args.agent, weights=args.weights, settings=_engine_settings(args),
                        midi=midi, osc=osc)
    _report_take(summary)
    return 0


def _play(args) -> int:
    from rolypoly.realtime.clock import RealClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.display import LiveDisplay
    from rolypoly.realtime.sources import FileSource, LiveSource

    if args.partner_file:
        source = FileSource(args.partner_file)
    else:
        source = LiveSource(args.partner_device, channel=args.channel - 1, sample_rate=args.sample_rate,
                            block=args.block)
    midi, osc = _outputs(args)
    display = LiveDisplay(enabled=not args.quiet)
    try:
        summary = play_take(args.score, source, RealClock(), session=args.session, agent=args.agent,
                            weights=args.weights, settings=_engine_settings(args), midi=midi, osc=osc,
                            on_engine=display.watch)
    finally:
        display.close()
        if midi is not None:
            midi.close()
    _report_take(summary)
    return 0


def _session_folder(name):
    """A session given as a folder, or as a name under sessions/."""
    from pathlib import Path

    from rolypoly.paths import sessions_dir

    path = Path(name)
    if not path.exists() and len(path.parts) == 1 and (sessions_dir() / name).exists():
        return sessions_dir() / name
    return path


def _gmd_check(args):
    """The GMD validation subset watched for forgetting, or None with a warning."""
    if args.no_dataset:
        return None
    from rolypoly.errors import DatasetError
    from rolypoly.pretrain.gmd import forgetting_set

    try:
        return forgetting_set(args.gmd)
    except DatasetError as e:
        print(f"rolypoly: warning: no forgetting check ({e}); pass --gmd DIR or --no-dataset", file=sys.stderr)
        return None


def _finetune(args) -> int:
    from tqdm import tqdm

    from rolypoly.session import Session

    session = Session(_session_folder(args.session))
    dataset = _gmd_check(args)
    bar = tqdm(total=args.epochs, desc="fine-tuning", unit="epoch", file=sys.stderr, leave=False)

    def progress(epoch, epochs, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.2e}")

    try:
        report = session.finetune(args.take, epochs=args.epochs, lr=args.lr, A=args.A, B=args.B,
                                  cancel=args.cancel, centre=args.centre, margin=args.margin,
                                  dataset=dataset, progress=progress)
    finally:
        bar.close()
    _print_finetune(report)
    if not args.no_plot:
        _plot_session(session.folder)
    return 0 if report["accepted"] else 1


def _print_finetune(report: dict) -> None:
    for note in report.get("notes", []) + report.get("warnings", []):
        print(f"rolypoly: note: {note}", file=sys.stderr)
    print(f"take {report['take']}: {report['reason']}")
    t = report.get("targets")
    if t:
        print(f"  targets: A {report['A']:.3g}, B {report['B']:.3g}, centre {report['centre']}, "
              f"{t.get('n_onsets', '?')} hits with a partner onset")
    before, after = report.get("before"), report.get("after")
    if before and after:
        for key in before:
            print(f"  {key:22s} {before[key]:.3e} -> {after[key]:.3e}")
    off = report.get("offbeat")
    if off and (off["new"] or off["confirmed"] or off["dropped"]):
        print(f"  off-beat rows: {len(off['new'])} new (tentative), {len(off['confirmed'])} confirmed, "
              f"{len(off['dropped'])} dropped; score has {off['permanent']} permanent, {off['tentative']} tentative")
    if report.get("version") is not None:
        print(f"  wrote model version {report['version']} ({'current' if report['accepted'] else 'kept, not used'})")
    print(f"  the session plays model version {report['current']}")


def _session_new(args) -> int:
    from pathlib import Path

    from rolypoly.errors import RolypolyError
    from rolypoly.session import Session

    folder = _session_folder(args.session)
    score = args.score
    if (score is None) == (args.from_partner is None):
        raise RolypolyError("session new: give a drum part (--score MIDI) or a partner recording (--from-partner)")
    if args.from_partner is not None:
        from rolypoly.pattern import drumify_recording

        if (folder / "session.json").is_file():
            raise RolypolyError(f"{folder}: a session already; drumify into a new one")
        folder.mkdir(parents=True, exist_ok=True)
        score = drumify_recording(args.from_partner, folder / "drumified.mid", bpm=args.bpm, seed=args.seed)
        print(f"drumified {args.from_partner} -> {score}")
    s = Session.open(folder, Path(score))
    k = s.ensure_start(args.agent)
    if args.humanize:
        s.set_pattern(humanize=True, seed=args.seed)
    print(f"session {s.folder}: score {s.meta['score']} ({len(s.score())} rows), model version {k}"
          + (", humanized" if args.humanize else ""))
    return 0


def _session_pattern(args) -> int:
    from rolypoly.session import Session

    s = Session(_session_folder(args.session))
    s.set_pattern(humanize=args.humanize == "on", seed=args.seed, temperature=args.temperature)
    print(f"session {s.folder}: the score plays {'humanized' if args.humanize == 'on' else 'as written'} "
          "from the next take")
    return 0


def _session_list(args) -> int:
    import json

    from rolypoly.take import TakeError, read_take

    from rolypoly.session import Session

    s = Session(_session_folder(args.session))
    current, warnings = s.current_version()
    _print_warnings(warnings)
    takes = []
    for d in s.take_dirs():
        try:
            t = read_take(d)
        except TakeError as e:
            takes.append({"take": int(d.name), "problem": str(e)})
            continue
        foot = t.end.summary if t.end is not None else {}
        takes.append({"take": int(d.name), "rows": len(t.rows), "model_version": t.header.model_version,
                      "clock": t.header.clock, "complete": t.complete,
                      "hits_with_partner": foot.get("hits_with_partner"),
                      "diff_ms_mean": foot.get("diff_ms_mean"), "diff_ms_std": foot.get("diff_ms_std"),
                      "yhat_ms_std": foot.get("yhat_ms_std")})
    versions = [{k: v.get(k) for k in ("version", "status", "kind", "parent", "take", "reason", "after")}
                for v in s.versions()]
    if args.json:
        print(json.dumps({"session": str(s.folder), "score": s.meta.get("score"), "current": current,
                          "A": s.ab[0], "B": s.ab[1], "takes": takes, "versions": versions}, indent=1))
        return 0
    print(f"session {s.folder} - score {s.meta.get('score')}, A {s.ab[0]:g}, B {s.ab[1]:g}, "
          f"playing model version {current}")
    print("takes:")
    for t in takes:
        if "problem" in t:
            print(f"  {t['take']:3d}  {t['problem']}")
            continue
        print(f"  {t['take']:3d}  model v{t['model_version']}  {t['rows']} rows  {t['clock']}  "
              f"diff {t['diff_ms_mean']} ± {t['diff_ms_std']} ms  "
              f"{'' if t['complete'] else '(cut short)'}")
    print("model versions:")
    for v in versions:
        mark = "*" if v["version"] == current else " "
        fig = v.get("after") or {}
        dm = fig.get("dataset_mse_bar")
        print(f" {mark}{v['version']:3d}  {v['status']:8s}  from take {v.get('take')}  "
              f"{'' if dm is None else f'GMD mse {dm:.3e}  '}{v.get('reason') or ''}")
    return 0


def _session_revert(args) -> int:
    from rolypoly.session import Session

    s = Session(_session_folder(args.session))
    k = s.revert(args.version)
    print(f"session {s.folder} plays model version {k} again")
    return 0


def _session_export(args) -> int:
    from rolypoly.session import Session

    s = Session(_session_folder(args.session))
    path = s.export_midi(args.output, take=args.take)
    print(f"wrote {path}")
    return 0


def _plot_session(folder) -> None:
    from rolypoly.session_plots import plot_session

    for p in plot_session(folder):
        print(f"wrote {p}")


def _plot(args) -> int:
    _plot_session(_session_folder(args.session))
    return 0


def _experiment(args) -> int:
    import json

    from rolypoly.lab.experiments import run_experiment

    out = args.out or f"experiments/{args.name}"
    dataset = None if args.name != "tame" else _gmd_check(args)
    report = run_experiment(args.name, out, takes=args.takes, agent=args.agent, seed=args.seed, dataset=dataset,
                            paper_ab=args.paper_ab, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report["targets"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0 if report["targets"]["met"] else 1


def _serve(args) -> int:
    from rolypoly.pretrain.gmd import forgetting_set
    from rolypoly.realtime.service import main

    args.forgetting_set = lambda: forgetting_set(args.gmd)
    return main(args)


def _print_warnings(lines) -> None:
    for w in lines:
        print(f"rolypoly: warning: {w}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rolypoly",
        description="An adaptive drum machine that learns to sit in the pocket with you.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    h = sub.add_parser("humanize", help="perform a drum MIDI file with a timing agent (no partner)")
    h.add_argument("input", help="drum part, Standard MIDI File")
    h.add_argument("-o", "--output", required=True, help="humanized MIDI file to write")
    h.add_argument("--agent", choices=("lstm", "seq2seq"), default="lstm")
    h.add_argument("--weights", help="agent weights (.safetensors); default: the shipped ones")
    h.add_argument("--plot", metavar="PNG", help="also plot the offsets per hit")
    h.set_defaults(func=_humanize)

    from rolypoly.groove import add_arguments as groove_args
    gr = sub.add_parser("groove", help="groove models on MIDI of any length: humanize, drumify, infill, transfer")
    groove_args(gr)
    gr.set_defaults(func=_groove)

    d = sub.add_parser("demo", help="humanize the demo score, then play it with a bass recording")
    d.add_argument("--out", default="demo-output", help="folder for the results")
    d.add_argument("--no-realtime", action="store_true", help="skip the real-time take (40 s)")
    d.set_defaults(func=_demo)

    pre = sub.add_parser("pretrain", help="train models on the Groove MIDI Dataset")
    pre_sub = pre.add_subparsers(dest="what", metavar="WHAT", required=True)
    t = pre_sub.add_parser("timing", help="pretrain a timing agent (lstm or seq2seq)")
    t.add_argument("--agent", choices=("lstm", "seq2seq"), required=True)
    t.add_argument("--gmd", help="Groove MIDI Dataset folder (default ../shared/datasets/groove)")
    t.add_argument("--epochs", type=int, help="most epochs (default 60; early stopping may end sooner)")
    t.add_argument("--out", help="folder for weights, metadata and curve (default: the shipped weights folder)")
    t.add_argument("--limit", type=int, help="use only the first N takes of each split (smoke runs)")
    t.add_argument("--seed", type=int, help="random seed (default 1234)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_pretrain_timing)
    from rolypoly.groove_grid import GRIDS, GROOVE_TASKS, INSTRUMENTS
    pg = pre_sub.add_parser("groove", help="train a groove model: humanize, drumify, infill or transfer")
    pg.add_argument("--task", choices=GROOVE_TASKS, required=True)
    pg.add_argument("--grid", choices=tuple(GRIDS), default="16th",
                    help="16th (GrooVAE) or triplet (12 steps a beat: 16ths and triplets)")
    pg.add_argument("--instrument", choices=tuple(INSTRUMENTS), default="hihat",
                    help="infill: the instrument the model writes (default hihat: closed and open)")
    pg.add_argument("--gmd", help="Groove MIDI Dataset folder (default ../shared/datasets/groove)")
    pg.add_argument("--out", help="folder for weights and metadata (default: the shipped weights folder)")
    pg.add_argument("--minutes", type=float, default=14.0,
                    help="wall-clock budget of each network (default 14); the whole run stays within 30")
    pg.add_argument("--recalibrate", metavar="WEIGHTS",
                    help="do not train: measure the residual spreads of these trained weights again on the "
                         "validation split and store them (weights file and its JSON)")
    pg.add_argument("--members", type=int,
                    help="networks trained from consecutive seeds and shipped as one ensemble, two at a "
                         "time (default 4 for humanize, 1 for the others)")
    pg.add_argument("--epochs", type=int, help="most epochs (default 100; early stopping may end sooner)")
    pg.add_argument("--limit", type=int, help="use only the first N takes of each split (smoke runs)")
    pg.add_argument("--seed", type=int, help="random seed (default 1234)")
    pg.add_argument("--quiet", action="store_true", help="no progress output")
    pg.set_defaults(func=_pretrain_groove)

    ev = sub.add_parser("evaluate", help="measure models against the papers' tables")
    ev_sub = ev.add_subparsers(dest="what", metavar="WHAT", required=True)
    e = ev_sub.add_parser("timing", help="Table 1: timing error of baseline, LSTM and Seq2Seq")
    e.add_argument("--gmd", help="Groove MIDI Dataset folder (default ../shared/datasets/groove)")
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    e.add_argument("--lstm", help="LSTM weights (default: shipped)")
    e.add_argument("--seq2seq", help="Seq2Seq weights (default: shipped)")
    e.add_argument("--limit", type=int, help="only the first N takes of the split")
    e.set_defaults(func=_evaluate_timing)
    eg = ev_sub.add_parser("groove", help="GrooVAE Table 1: quantized, KNN and the groove model of a task")
    eg.add_argument("--task", required=True, choices=("humanize", "drumify", "infill", "transfer"))
    eg.add_argument("--gmd", help="Groove MIDI Dataset folder (default ../shared/datasets/groove)")
    eg.add_argument("--split", default="test", choices=("train", "validation", "test"))
    eg.add_argument("--grid", default="16th", choices=("16th", "triplet"))
    eg.add_argument("--limit", type=int, help="only the first N takes of each split")
    eg.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    eg.add_argument("--weights", help="the model's weights (default: shipped groove_<task>.safetensors)")
    eg.add_argument("--instrument", default="hihat", help="infill: the instrument removed (default hihat)")
    eg.add_argument("--bootstrap", type=int, default=200, help="resamples for 95%% intervals (0: none)")
    eg.add_argument("--temperature", type=float, default=0.0,
                    help="the model's sampling temperature (default 0: its most likely performance)")
    eg.add_argument("--velocity-spread", type=float, metavar="X",
                    help="how widely the model draws velocities around its prediction, in units of its "
                         "validation error (default 1; the row model_velocity_mean is always spread 0)")
    eg.set_defaults(func=_evaluate_groove)

    data = sub.add_parser("data", help="get datasets")
    data_sub = data.add_subparsers(dest="what", metavar="WHAT", required=True)
    from rolypoly.pretrain.download import add_arguments as dl_args
    g = data_sub.add_parser("gmd", help="download and verify the Groove MIDI Dataset (MIDI only)")
    dl_args(g)
    g.set_defaults(func=_data_gmd)

    b = sub.add_parser("bench", help="benchmarks that print JSON")
    b_sub = b.add_subparsers(dest="what", metavar="WHAT", required=True)
    bd = b_sub.add_parser("decide", help="per-hit decision latency of both agents vs the numpy floor")
    bd.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    bd.add_argument("--steps", type=int, default=5000, help="timed decisions per agent (>= 2000)")
    bd.set_defaults(func=_bench_decide)
    bo = b_sub.add_parser("onsets", help="onset latency and F1 of the live detector vs aubio")
    bo.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    bo.set_defaults(func=_bench_onsets)
    bf = b_sub.add_parser("finetune", help="fine-tuning after a 3-minute take, GMD validation included, both agents")
    bf.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    bf.add_argument("--repeats", type=int, default=5, help="timed runs per agent and figure")
    bf.add_argument("--gmd", metavar="DIR", help="Groove MIDI Dataset folder (default: ../shared/datasets/groove)")
    bf.add_argument("--bpm", type=float, help="play the looped demo at this tempo (default its own, 96): more rows")
    bf.set_defaults(func=_bench_finetune)
    bt = b_sub.add_parser("output", help="drum output timing on JACK (|emitted - intended|, drift) and CPU load")
    bt.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON here")
    bt.add_argument("--minutes", type=float, default=5.0, help="length of the take")
    bt.set_defaults(func=_bench_output)

    for name, helptext in (("play", "play a take with a partner: live input or a recording in real time"),
                           ("simulate", "play a take with a recorded partner on a simulated clock")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("score", help="drum part, Standard MIDI File")
        if name == "play":
            src = sp.add_mutually_exclusive_group()
            src.add_argument("--partner-device", metavar="DEV", help="audio input (index or name); default input if omitted")
            src.add_argument("--partner-file", metavar="FILE", help="WAV/FLAC recording played as the partner in real time")
            sp.add_argument("--channel", type=int, default=1, help="input channel the partner is on (from 1)")
            sp.add_argument("--sample-rate", type=int, default=48000)
            sp.add_argument("--block", type=int, default=64, help="audio block size in frames")
            sp.add_argument("--quiet", action="store_true", help="no live display")
        else:
            sp.add_argument("--partner-file", metavar="FILE", required=True, help="WAV/FLAC recording of the partner")
        sp.add_argument("--session", metavar="DIR", help="session folder (default sessions/<score name>)")
        sp.add_argument("--agent", choices=("lstm", "seq2seq"), default=None,
                        help="agent kind of a new session (default lstm); a session keeps its own")
        sp.add_argument("--weights", help="agent weights (.safetensors); default: the shipped ones")
        sp.add_argument("--window", type=float, default=3.0, help="partner window: hit ± duration / WINDOW")
        sp.add_argument("--budget-ms", type=float, default=10.0, help="decide this long before a hit may sound")
        sp.add_argument("--partner-offset", type=float, default=0.0,
                        help="seconds into the partner recording where the score starts")
        sp.add_argument("--midi", default="virtual" if name == "play" else "off",
                        help="'virtual' (a port named rolypoly), an existing port name, or 'off'")
        sp.add_argument("--osc", metavar="HOST:PORT", help="send /rolypoly/hit, /onset, /state events here")
        sp.set_defaults(func=_play if name == "play" else _simulate)

    sv = sub.add_parser("serve", help="a long-lived service controlled over OSC (load, play, stop, tempo...)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=9100, help="OSC port to listen on")
    sv.add_argument("--reply", default="127.0.0.1:9101", metavar="HOST:PORT", help="where replies go")
    sv.add_argument("--sessions", help="sessions folder; every path in a message must stay inside it")
    sv.add_argument("--gmd", metavar="DIR", help="Groove MIDI Dataset folder (fine-tuning's forgetting check)")
    sv.set_defaults(func=_serve)

    dv = sub.add_parser("devices", help="list audio devices and MIDI ports")
    dv.set_defaults(func=_devices)

    ft = sub.add_parser("finetune", help="learn from a take: the next model version of a session")
    ft.add_argument("session", help="session folder (or a name under sessions/)")
    ft.add_argument("--take", type=int, help="take number (default: the latest)")
    ft.add_argument("--epochs", type=int, default=5)
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--A", type=float, help="eq. (1) weight (default: the session's, else 1)")
    ft.add_argument("--B", type=float, help="eq. (2) weight (default: the session's, else 1)")
    ft.add_argument("--cancel", action="store_true", help="A and B that cancel the variance scaling (morphing)")
    ft.add_argument("--centre", choices=("all", "beats", "downbeats", "none"), default="all",
                    help="hits whose mean offset is the centre (eq. 2's μ_d); all = the paper")
    ft.add_argument("--margin", type=float, default=None,
                    help="largest accepted growth of the GMD validation MSE (relative; default 0.10)")
    ft.add_argument("--gmd", metavar="DIR", help="Groove MIDI Dataset folder (default ../shared/datasets/groove)")
    ft.add_argument("--no-dataset", action="store_true", help="skip the forgetting check on GMD")
    ft.add_argument("--no-plot", action="store_true", help="do not rewrite the session's plots (Fig. 1, Fig. 2)")
    ft.set_defaults(func=_finetune)

    se = sub.add_parser("session", help="create, list, revert and export sessions")
    se_sub = se.add_subparsers(dest="what", metavar="WHAT", required=True)
    sn = se_sub.add_parser("new", help="create a session from a score")
    sn.add_argument("session", help="session folder (or a name under sessions/)")
    sn.add_argument("--score", help="the drum part, MIDI")
    sn.add_argument("--from-partner", metavar="RECORDING",
                    help="or: a recording of the partner alone (or tapped MIDI): drumify makes the score")
    sn.add_argument("--bpm", type=float, help="the recording's tempo (default: estimated)")
    sn.add_argument("--humanize", action="store_true",
                    help="play the score humanized by the groove model (velocities, offsets) under the agent")
    sn.add_argument("--seed", type=int, default=0, help="seed of drumify and humanize")
    sn.add_argument("--agent", choices=("lstm", "seq2seq"), default="lstm")
    sn.set_defaults(func=_session_new)
    sp_ = se_sub.add_parser("pattern", help="play the score as written or humanized by the groove model")
    sp_.add_argument("session")
    sp_.add_argument("--humanize", choices=("on", "off"), required=True)
    sp_.add_argument("--seed", type=int, default=0)
    sp_.add_argument("--temperature", type=float, default=0.0)
    sp_.set_defaults(func=_session_pattern)
    sl = se_sub.add_parser("list", help="takes and model versions with their figures")
    sl.add_argument("session")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=_session_list)
    sr = se_sub.add_parser("revert", help="play an earlier model version again")
    sr.add_argument("session")
    sr.add_argument("version", type=int)
    sr.set_defaults(func=_session_revert)
    sx = se_sub.add_parser("export", help="the current performance (score + agent offsets) as MIDI")
    sx.add_argument("session")
    sx.add_argument("-o", "--output", required=True)
    sx.add_argument("--take", type=int, help="take whose partner timing feeds the agent (default: latest)")
    sx.set_defaults(func=_session_export)

    pl = sub.add_parser("plot", help="a session's plots: each take (paper Fig. 1) and all takes (Fig. 2)")
    pl.add_argument("session")
    pl.set_defaults(func=_plot)

    ex = sub.add_parser("experiment", help="the paper's between-take experiments on the simulated clock")
    ex.add_argument("name", choices=("morph", "tresillo", "tame"))
    ex.add_argument("--json", metavar="OUT", help="write the report (per-take figures) here")
    ex.add_argument("--out", metavar="DIR", help="folder for the session and plots (default experiments/NAME)")
    ex.add_argument("--takes", type=int, help="fine-tuning rounds (default: 3 for the morphs, 10 for tame)")
    ex.add_argument("--agent", choices=("lstm", "seq2seq"))
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--gmd", metavar="DIR", help="Groove MIDI Dataset folder (tame's forgetting check)")
    ex.add_argument("--no-dataset", action="store_true", help="skip the forgetting check")
    ex.add_argument("--paper-ab", action="store_true",
                    help="learn with A = B = 1 centred on all hits (the paper's defaults) instead of the design's")
    ex.set_defaults(func=_experiment)

    o = sub.add_parser("onsets", help="run the live onset detector over a recording")
    o.add_argument("input", help="WAV or FLAC file")
    o.add_argument("--json", action="store_true", help="JSON with the moment each onset became usable")
    o.set_defaults(func=_onsets)
    return p


def main(argv=None) -> int:
    from rolypoly.errors import RolypolyError

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            status = args.func(args)
        _print_warnings(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        return status
    except RolypolyError as e:
        print(f"rolypoly: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rolypoly: stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0

