"""``rolypoly session run``: take, learn, take, driven by keys, a MIDI foot switch or OSC (thin glue).

The run itself is :mod:`rolypoly.realtime.run` on the OSC service's
machinery; the partner and the outputs are set up as ``rolypoly play`` sets
them up (:mod:`rolypoly.cli.live`).
"""
from __future__ import annotations

import sys
import threading

from .common import add_agent, add_forgetting_check, add_session, session_folder
from .live import _engine_settings, _outputs, add_take_options, host_port, partner_source


def add_session_run(what) -> None:
    r = what.add_parser("run", help="play a take, learn from it, be ready for the next: no typing between takes",
                        description="Take -> learn -> take. Keys: enter = next take, space = stop the take and "
                                    "learn, r = revert to the previous model version, q = quit; the same from a "
                                    "MIDI foot switch (--foot) and OSC (/rolypoly/run/next|stop|revert|quit).")
    add_session(r)
    r.add_argument("--score", help="the drum part (MIDI) of a new session")
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
    r.add_argument("--control-port", default="9100", metavar="PORT",
                   help="OSC control port on 127.0.0.1 (0: any free port; off: none)")
    r.add_argument("--reply", default="127.0.0.1:9101", metavar="HOST:PORT", help="where OSC replies go")
    r.add_argument("--foot", action="append", metavar="CC[:COMMAND]",
                   help="a MIDI foot switch on controller CC (default 64, the sustain pedal); COMMAND go (the "
                        "default: next take when ready, stop and learn while playing), next, stop, revert or "
                        "quit; repeat for more pedals; 'off': none")
    r.add_argument("--foot-port", metavar="NAME",
                   help="listen to this MIDI output (default: a virtual input 'rolypoly-control' to connect to)")
    add_forgetting_check(r)
    r.add_argument("--no-mix", action="store_true", help="do not write each take's mix.wav")
    r.add_argument("--no-plot", action="store_true", help="do not plot each take")
    r.add_argument("--plain", action="store_true", help="lines instead of the screen, even on a terminal")
    r.set_defaults(run=run_session_run)


def _open_session(args):
    """The session folder, created from ``--score`` when new; refuses a new one without a score."""
    from pathlib import Path

    from rolypoly.errors import RolypolyError
    from rolypoly.session import Session

    folder = session_folder(args.session, args.sessions)
    if not (folder / "score.mid").is_file() and args.score is None:
        raise RolypolyError(f"session run: {folder} is not a session yet; give its drum part with --score MIDI")
    s = Session.open(folder, Path(args.score) if args.score else None)
    if s.meta.get("model") is None:
        s.ensure_start(args.agent or "lstm", args.weights)
    s.agent()  # refuses an unusable session now, and loads torch before the first take, not in it
    return s.folder.resolve()


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
    port = {"off": None, "0": 0}.get(args.control_port)
    if args.control_port not in ("off", "0"):
        port = host_port(f"127.0.0.1:{args.control_port}", "--control-port")[1]
    folder = _open_session(args)
    reply = host_port(args.reply, "--reply")
    midi, osc = _outputs(args)
    service = server = switch = keys = None
    try:
        service = Service(folder.parent, reply=reply, mix=not args.no_mix, plot=not args.no_plot,
                          forgetting_set=None if args.no_dataset else (lambda: forgetting_set(args.gmd)),
                          midi=midi, osc=osc, engine=_engine_settings(args))
        _checked(service.handle("/rolypoly/load_session", folder.name), "session")
        _checked(service.handle("/rolypoly/window", args.window), "--window")
        label = args.partner_file or str(args.partner_device)
        service.use_partner("file" if args.partner_file else "device", label, lambda: partner_source(args))
        _checked(service.handle("/rolypoly/clock", args.clock), "--clock")
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
        if midi is not None:
            midi.close()
    from rolypoly.session import Session

    print(f"session run: {played} take{'s' * (played != 1)} played; {folder} plays model version "
          f"{Session(folder).meta.get('model')}")
    return 0
