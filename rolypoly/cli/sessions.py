"""``rolypoly session new|pattern|list|revert|export|run``, ``finetune`` and ``plot``: a session between takes."""
from __future__ import annotations

import json
import sys
import threading

import numpy as np

from .common import (add_agent, add_forgetting_check, add_groove, add_session, forgetting_check, groove_score,
                     print_warnings, session_folder)
from .live import (_engine_settings, _outputs, _session, add_generate_options, add_kit, add_rig_options,
                   add_take_options, generate_options, host_port, partner_source)


def add_parser(sub) -> None:
    p = sub.add_parser("session", help="create, list, revert and export sessions")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    n = what.add_parser("new", help="create a session from a score")
    add_session(n)
    n.add_argument("--score", help="the drum part, MIDI")
    add_groove(n)
    n.add_argument("--from-partner", metavar="RECORDING",
                   help="or: a recording of the partner alone (or tapped MIDI): drumify makes the score")
    n.add_argument("--bpm", type=float, help="the recording's tempo (default: estimated)")
    n.add_argument("--humanize", action="store_true",
                   help="play the score humanized by the groove model (velocities, offsets) under the agent")
    n.add_argument("--seed", type=int, default=0, help="seed of drumify and humanize")
    add_agent(n, default="lstm")
    n.set_defaults(run=run_session_new)
    pt = what.add_parser("pattern", help="play the score as written or humanized by the groove model")
    add_session(pt)
    pt.add_argument("--humanize", choices=("on", "off"), required=True)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--temperature", type=float, default=0.0)
    pt.set_defaults(run=run_session_pattern)
    ls = what.add_parser("list", help="takes and model versions with their figures")
    add_session(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_session_list)
    r = what.add_parser("revert", help="play an earlier model version again")
    add_session(r)
    r.add_argument("version", type=int)
    r.set_defaults(run=run_session_revert)
    x = what.add_parser("export", help="the current performance (score + agent offsets) as MIDI")
    add_session(x)
    x.add_argument("-o", "--output", required=True)
    x.add_argument("--take", type=int, help="take whose partner timing feeds the agent (default: latest)")
    x.set_defaults(run=run_session_export)
    add_session_run(what)

    f = sub.add_parser("finetune", help="learn from a take: the next model version of a session")
    add_session(f)
    f.add_argument("--take", type=int, help="take number (default: the latest)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--A", type=float, help="eq. (1) weight (default: the session's, else 1)")
    f.add_argument("--B", type=float, help="eq. (2) weight (default: the session's, else 1)")
    f.add_argument("--cancel", action="store_true", help="A and B that cancel the variance scaling (morphing)")
    f.add_argument("--centre", choices=("all", "beats", "downbeats", "none"), default="all",
                   help="hits whose mean offset is the centre (eq. 2's μ_d); all = the paper")
    f.add_argument("--margin", type=float, default=None,
                   help="largest accepted growth of the GMD validation MSE (relative; default 0.10)")
    add_forgetting_check(f)
    f.add_argument("--no-plot", action="store_true", help="do not rewrite the session's plots (Fig. 1, Fig. 2)")
    f.set_defaults(run=run_finetune)

    pl = sub.add_parser("plot", help="a session's plots: each take (paper Fig. 1) and all takes (Fig. 2)")
    add_session(pl)
    pl.set_defaults(run=run_plot)


def _open(args):
    from rolypoly.session import Session

    return Session(session_folder(args.session, args.sessions))


def run_session_new(args) -> int:
    from pathlib import Path

    from rolypoly.errors import RolypolyError
    from rolypoly.session import Session

    folder = session_folder(args.session, args.sessions)
    score = groove_score(args, args.score)
    if (score is None) == (args.from_partner is None):
        raise RolypolyError("session new: give a drum part (--score MIDI or --groove STYLE/N) "
                            "or a partner recording (--from-partner)")
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


def run_session_pattern(args) -> int:
    s = _open(args)
    s.set_pattern(humanize=args.humanize == "on", seed=args.seed, temperature=args.temperature)
    print(f"session {s.folder}: the score plays {'humanized' if args.humanize == 'on' else 'as written'} "
          "from the next take")
    return 0


def run_session_list(args) -> int:
    from rolypoly.report import PartnerFit, partner_fit
    from rolypoly.session_plots import take_hits
    from rolypoly.take import TakeError, read_take

    s = _open(args)
    current, warnings = s.current_version()
    print_warnings(warnings)
    takes, heard_by_version = [], {}
    for d in s.take_dirs():
        try:
            t = read_take(d)
        except TakeError as e:
            takes.append({"take": int(d.name), "problem": str(e)})
            continue
        h = take_hits(t)
        heard = h.diff_ms[h.partner_hits]
        fit = partner_fit(heard)
        foot = t.end.summary if t.end is not None else {}
        takes.append({"take": int(d.name), "rows": len(t.rows), "hits": int((~h.silent).sum()),
                      "model_version": t.header.model_version, "clock": t.header.clock, "complete": t.complete,
                      "stopped_early": bool(t.end is not None and t.end.stopped_early),
                      "hits_with_partner": len(heard), "partner": None if fit is None else fit.as_dict(),
                      "diff_ms_mean": foot.get("diff_ms_mean"), "diff_ms_std": foot.get("diff_ms_std"),
                      "yhat_ms_std": foot.get("yhat_ms_std")})
        heard_by_version.setdefault(t.header.model_version, []).append(heard)
    versions = []
    for v in s.versions():
        rec = {k: v.get(k) for k in ("version", "status", "kind", "parent", "take", "reason", "after")}
        played = heard_by_version.get(v["version"])
        fit = partner_fit(np.concatenate(played)) if played else None
        rec["takes_played"] = len(played or [])
        rec["partner"] = None if fit is None else fit.as_dict()
        rec["partner_expected"] = ((v.get("partner_ms") or {}).get("after")) if fit is None else None
        versions.append(rec)
    if args.json:
        print(json.dumps({"session": str(s.folder), "score": s.meta.get("score"), "current": current,
                          "A": s.ab[0], "B": s.ab[1], "takes": takes, "versions": versions}, indent=1))
        return 0

    def against(fit: dict | None, expected: dict | None = None, nothing: str = "partner not heard") -> str:
        if fit is not None:
            return PartnerFit(**fit).words()
        if expected is not None:
            return PartnerFit(**expected).words() + " (expected from its take)"
        return nothing

    print(f"session {s.folder}: score {s.meta.get('score')}, A {s.ab[0]:g}, B {s.ab[1]:g}, "
          + ("no model version yet" if current is None else f"playing model version {current}"))
    print("\ntakes (drums against the partner: early/late on average, spread):")
    rows = []
    for t in takes:
        if "problem" in t:
            rows.append([str(t["take"]), "", "", "", f"unreadable: {t['problem']}"])
            continue
        v = t["model_version"]
        note = "" if t["complete"] and not t["stopped_early"] else (" (stopped early)" if t["stopped_early"]
                                                                     else " (cut short)")
        rows.append([str(t["take"]), "own weights" if v is None else str(v), str(t["hits"]),
                     str(t["hits_with_partner"]), against(t["partner"]) + note])
    print_table(["take", "model", "hits", "partner heard", "drums against the partner"], rows)
    print("\nmodel versions (* = the one the next take plays):")
    rows = []
    for v in versions:
        mark = "*" if v["version"] == current else " "
        source = "shipped model" if v["status"] == "start" else (
            f"take {v['take']}" if v.get("take") is not None else "?")
        status = {"start": "", "accepted": "accepted", "refused": "refused"}.get(v["status"], v["status"] or "?")
        if v["status"] in ("accepted", "start"):
            what = against(v["partner"], v["partner_expected"],
                           "partner not heard" if v["takes_played"] else "no take played yet")
            if v["takes_played"]:
                what += f" over {v['takes_played']} take{'s' if v['takes_played'] > 1 else ''}"
        else:
            what = str(v.get("reason") or "").removeprefix("refused: ") or "not played"
        rows.append([f"{mark}{v['version']}", source, status, what])
    print_table([" version", "learnt from", "status", "drums against the partner"], rows)
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns aligned on the widest cell, two spaces apart; the last column as long as it is.

    >>> print_table(["take", "model"], [["0", "shipped"], ["12", "3"]])
      take  model
      0     shipped
      12    3
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        print("  " + "  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip())


def run_session_revert(args) -> int:
    s = _open(args)
    k = s.revert(args.version)
    print(f"session {s.folder} plays model version {k} again")
    return 0


def run_session_export(args) -> int:
    s = _open(args)
    path = s.export_midi(args.output, take=args.take)
    print(f"wrote {path}")
    return 0


def run_finetune(args) -> int:
    from tqdm import tqdm

    session = _open(args)
    dataset = forgetting_check(args)
    bar = tqdm(total=args.epochs, desc="learning from the take", unit="pass", file=sys.stderr, leave=False)

    def progress(epoch, epochs, loss):
        bar.update(1)

    try:
        report = session.finetune(args.take, epochs=args.epochs, lr=args.lr, A=args.A, B=args.B,
                                  cancel=args.cancel, centre=args.centre, margin=args.margin,
                                  dataset=dataset, progress=progress)
    finally:
        bar.close()
    print_learning(session, report)
    if not args.no_plot:
        _plot_session(session.folder)
    return 0 if report["accepted"] else 1


def print_learning(session, report: dict, indent: str = "") -> None:
    """What a fine-tune did, in words: accepted or not and why, then what the drums learnt."""
    from rolypoly.report import take_report

    for note in report.get("notes", []) + report.get("warnings", []):
        print(f"rolypoly: note: {note}", file=sys.stderr)
    k, version, current = report["take"], report.get("version"), report.get("current")
    verdict, _, why = report["reason"].partition(": ")
    if report["accepted"]:
        print(f"{indent}take {k} → model version {version}: accepted"
              + (", the session plays it from the next take" if current == version
                 else f"; the session plays version {current}"))
    elif version is not None:
        print(f"{indent}take {k} → model version {version}: {verdict}, kept for inspection only; "
              f"the session plays version {current}")
    else:
        print(f"{indent}take {k}: nothing learnt; the session plays version {current}")
    if why or not report["accepted"]:
        print(f"{indent}  why: {why or verdict}")
    t = report.get("targets")
    if t and t.get("n_onsets"):
        print(f"{indent}  learnt from the {t['n_onsets']} of {t['n_rows']} hits where the partner was heard "
              f"(A {report['A']:.3g}, B {report['B']:.3g}, centre {report['centre']})")
    if report["accepted"] and version is not None:
        print(f"{indent}  what the drums learnt (against this take's partner):")
        for line in take_report(session, k, version)[1:]:
            print(f"{indent}    {line}")
    off = report.get("offbeat")
    if off and (off["new"] or off["confirmed"] or off["dropped"]):
        print(f"{indent}  off-beat rows: {len(off['new'])} new (tentative), {len(off['confirmed'])} confirmed, "
              f"{len(off['dropped'])} dropped; score has {off['permanent']} permanent, {off['tentative']} tentative")


def _plot_session(folder) -> None:
    from rolypoly.session_plots import plot_session

    for p in plot_session(folder):
        print(f"wrote {p}")


def run_plot(args) -> int:
    _plot_session(session_folder(args.session, args.sessions))
    return 0


# ----------------------------------------------------------------------------- session run
# The run itself is rolypoly.realtime.run on the OSC service's machinery; the partner and the
# outputs are set up as `rolypoly play` sets them up (rolypoly.cli.live).

def add_session_run(what) -> None:
    r = what.add_parser("run", help="play a take, learn from it, be ready for the next: no typing between takes",
                        description="Take -> learn -> take. Keys: enter = next take, space = stop the take and "
                                    "learn, r = revert to the previous model version, f = a fill (with --generate), "
                                    "q = quit; the same from a MIDI foot switch (--foot) and OSC "
                                    "(/rolypoly/run/next|stop|revert|fill|quit).")
    add_session(r)
    r.add_argument("--score", help="the drum part (MIDI) of a new session")
    add_groove(r, gmd=False)  # --gmd comes with the forgetting check below
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--partner-file", "--partner", metavar="FILE", help="WAV/FLAC recording played as the partner")
    src.add_argument("--partner-device", metavar="DEV", help="live audio input (index or name)")
    r.add_argument("--channel", type=int, default=1, help="input channel the partner is on (from 1)")
    r.add_argument("--sample-rate", type=int, default=48000)
    r.add_argument("--block", type=int, default=64, help="audio block size in frames")
    r.add_argument("--clock", choices=("real", "sim"), default="real",
                   help="real time, or a simulated clock (a partner file only: takes run faster than real time)")
    r.add_argument("--takes", type=int, metavar="N", help="play N takes back to back, learning after each, then quit")
    add_agent(r, help="agent kind of a new session (default lstm); a session keeps its own")
    r.add_argument("--weights", help="the pretrained agent a new session starts from (default: the shipped one)")
    add_take_options(r, midi="virtual")
    add_rig_options(r)
    add_kit(r)
    r.add_argument("--control-port", default="9100", metavar="PORT",
                   help="OSC control port on 127.0.0.1 (0: any free port; off: none)")
    r.add_argument("--reply", default="127.0.0.1:9101", metavar="HOST:PORT", help="where OSC replies go")
    r.add_argument("--foot", action="append", metavar="CC[:COMMAND]",
                   help="a MIDI foot switch on controller CC (default 64, the sustain pedal); COMMAND go (the "
                        "default: next take when ready, stop and learn while playing), next, stop, revert, fill "
                        "(with --generate) or quit; repeat for more pedals; 'off': none")
    r.add_argument("--foot-port", metavar="NAME",
                   help="listen to this MIDI output (default: a virtual input 'rolypoly-control' to connect to)")
    add_forgetting_check(r)
    r.add_argument("--no-mix", action="store_true", help="do not write each take's mix.wav")
    r.add_argument("--no-plot", action="store_true", help="do not plot each take")
    r.add_argument("--plain", action="store_true", help="lines instead of the screen, even on a terminal")
    add_generate_options(r, one_take=False)
    r.set_defaults(run=run_session_run)


def _open_run_rig(args):
    """The partner input and the drums' outputs of a real-time session run: opened once, used by every take."""
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.rig import open_rig

    rig = open_rig(partner_device=args.partner_device, partner_file=args.partner_file, channel=args.channel - 1,
                   sample_rate=args.sample_rate, block=args.block, drums=args.drums, kit=args.kit, midi=args.midi,
                   midi_latency_ms=args.midi_latency_ms, calibration=not args.no_calibration,
                   detector=session_settings(_session(args), getattr(args, "instrument", None)))
    print_warnings(rig.notes)
    for line in rig.describe:
        print(line, file=sys.stderr)
    return rig


def _run_kit(args):
    """The kit of a simulated session run's mix.wav (``--kit``; None: the default kit)."""
    if args.kit is None:
        return None
    from rolypoly.kit import load_kit

    kit = load_kit(args.kit)
    print_warnings(kit.notes)
    return kit


def _open_run_session(args):
    """The session folder, created from ``--score`` (or ``--groove``) when new; refuses a new one without a score."""
    from pathlib import Path

    from rolypoly.errors import RolypolyError
    from rolypoly.session import Session

    folder = session_folder(args.session, args.sessions)
    score = groove_score(args, args.score)
    if not (folder / "score.mid").is_file() and score is None:
        raise RolypolyError(f"session run: {folder} is not a session yet; give its drum part with --score MIDI "
                            "or --groove STYLE/N")
    s = Session.open(folder, Path(score) if score else None)
    if s.meta.get("model") is None:
        s.ensure_start(args.agent or "lstm", args.weights)
    s.agent()  # refuses an unusable session now, and loads torch before the first take, not in it
    return s.folder.resolve()


def _run_engine_settings(args, folder):
    """The engine settings of every take of the run; a partner recording aligned to the score once.

    Without ``--partner-offset`` the recording is aligned here, before the first take, as
    ``rolypoly play`` aligns it (:func:`rolypoly.realtime.duet.partner_offset`), and the line
    saying the offset found is printed: every take of the run plays with the same offset.
    """
    from rolypoly.realtime.duet import partner_offset
    from rolypoly.session import Session

    settings = _engine_settings(args)
    if settings.partner_offset_s is not None or not args.partner_file:
        return settings  # an offset given, or a live partner (it has none)
    settings, found = partner_offset(Session(folder).score(), partner_source(args), settings)
    if found is not None:
        print(found, file=sys.stderr, flush=True)
    return settings


def _checked(replies, what: str) -> None:
    from rolypoly.errors import RolypolyError

    if replies and replies[0][0] == "/rolypoly/error":
        raise RolypolyError(f"session run: {what}: {replies[0][1][1]}")


def run_session_run(args) -> int:
    from rolypoly.errors import DeviceError, RolypolyError
    from rolypoly.pretrain.gmd import forgetting_set
    from rolypoly.realtime.midi_in import FootSwitch, parse_foot
    from rolypoly.realtime.run import Keys, Lines, Runner
    from rolypoly.realtime.screen import LineScreen, RichScreen
    from rolypoly.realtime.service import Service, open_server

    if args.takes is not None and args.takes < 1:
        raise RolypolyError(f"--takes {args.takes}: at least 1")
    if args.clock == "sim" and not args.partner_file:
        raise RolypolyError("--clock sim needs a partner recording (--partner FILE)")
    foot = {} if args.foot == ["off"] else parse_foot(args.foot or ["64"])
    generate = generate_options(args)
    if generate is not None:
        from rolypoly.realtime.live_bars import mode_controls

        mode_controls(generate["mode"], generate["controls"])  # a wrong control: one line before anything opens
    port = {"off": None, "0": 0}.get(args.control_port)
    if args.control_port not in ("off", "0"):
        port = host_port(f"127.0.0.1:{args.control_port}", "--control-port")[1]
    folder = _open_run_session(args)
    reply = host_port(args.reply, "--reply")
    rig = None
    if args.clock == "real":  # what play opens: the sampled kit and MIDI through JACK, else PortAudio and rtmidi
        rig = _open_run_rig(args)
        midi, (_, osc) = rig.midi, _outputs(args, midi=False)
    else:
        midi, osc = _outputs(args)
    service = server = switch = keys = None
    try:
        service = Service(folder.parent, reply=reply, mix=not args.no_mix, plot=not args.no_plot,
                          forgetting_set=None if args.no_dataset else (lambda: forgetting_set(args.gmd)),
                          midi=midi, osc=osc, engine=_run_engine_settings(args, folder),
                          drums=rig.drums if rig else None, kit=rig.kit if rig else _run_kit(args),
                          midi_early_s=rig.midi_early_s if rig else 0.0)
        _checked(service.handle("/rolypoly/load_session", folder.name), "session")
        _checked(service.handle("/rolypoly/window", args.window), "--window")
        label = args.partner_file or str(args.partner_device)
        # The rig's partner input is started again for every take; on a simulated clock each take reads the file.
        make = (lambda: rig.source) if rig is not None else (lambda: partner_source(args))
        service.use_partner("file" if args.partner_file else "device", label, make)
        _checked(service.handle("/rolypoly/clock", args.clock), "--clock")
        if generate is not None:  # every take of the run writes its bars; OSC and the fill key change them
            for name, value in generate["controls"].items():
                _checked(service.handle(f"/rolypoly/generate/{name}", value), f"--{name}")
            _checked(service.handle("/rolypoly/generate", generate["mode"], generate["fill_every"]), "--generate")
        screen = RichScreen() if sys.stdout.isatty() and not args.plain else LineScreen()
        if port is not None:
            server = open_server(service, "127.0.0.1", port)  # before the runner: both take the service's replies
        runner = Runner(service, screen, takes=args.takes, forward=server.replier.send if server else None)
        if server is not None:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="rolypoly-osc", daemon=True).start()
            host, bound = server.server_address[:2]
            print(f"OSC control on udp {host}:{bound}: /rolypoly/run/next, /run/stop, /run/revert, /run/quit "
                  f"(replies to {reply[0]}:{reply[1]})", file=sys.stderr, flush=True)
        if foot:
            try:
                switch = FootSwitch(foot, runner.command, port=args.foot_port)
                print(f"foot switch: {switch.describe()}", file=sys.stderr, flush=True)
            except DeviceError as e:
                if args.foot_port is not None:
                    raise
                print(f"rolypoly: warning: no foot switch ({e})", file=sys.stderr, flush=True)
        if sys.stdin.isatty():
            keys = Keys(runner.command)
        elif args.takes is None:
            Lines(runner.command, runner.say)
        played = runner.run()
    finally:
        if keys is not None:
            keys.close()
        if switch is not None:
            switch.close()
        if server is not None:
            server.shutdown()
            server.server_close()
        if service is not None:
            service.close()  # a take still playing is stopped and written, a fine-tune finished
        if server is not None:
            server.replier.close()
        if rig is not None:
            rig.close()
        elif midi is not None:
            midi.close()
    from rolypoly.session import Session

    print(f"session run: {played} take{'s' * (played != 1)} played; {folder} plays model version "
          f"{Session(folder).meta.get('model')}")
    if runner.failure is not None:
        raise RolypolyError(f"session run: {played} of {args.takes} takes played: {runner.failure}")
    return 0
