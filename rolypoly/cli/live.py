"""``rolypoly play``, ``simulate`` and ``serve``: takes with a partner, and the OSC service."""
from __future__ import annotations

import sys
from pathlib import Path

from rolypoly import AGENT_KINDS

from .common import add_agent, add_gmd, add_sessions, print_take, session_folder
from .devices import add_instrument

#: Addresses that only this machine can reach: serving on any other warns.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    for name, helptext in (("play", "play a take with a partner: live input, MIDI or a recording in real time"),
                           ("simulate", "play a take with a recorded partner on a simulated clock")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("score", help="drum part, Standard MIDI File")
        if name == "play":
            src = p.add_mutually_exclusive_group()
            src.add_argument("--partner-device", metavar="DEV", help="audio input (index or name); default input if omitted")
            src.add_argument("--partner-file", metavar="FILE", help="WAV/FLAC recording played as the partner in real time")
            add_partner_midi(p)
            p.add_argument("--channel", type=int, default=1, help="input channel the partner is on (from 1)")
            p.add_argument("--sample-rate", type=int, default=48000)
            p.add_argument("--block", type=int, default=64, help="audio block size in frames")
            p.add_argument("--quiet", action="store_true", help="no live display")
        else:
            p.add_argument("--partner-file", metavar="FILE", required=True, help="WAV/FLAC recording of the partner")
        p.add_argument("--session", metavar="DIR",
                       help="session folder, or its name in the sessions folder (default: the score's name there)")
        add_sessions(p)
        add_agent(p, help="agent kind of a new session (default lstm); a session keeps its own")
        p.add_argument("--weights", help="agent weights (.safetensors); default: the shipped ones")
        p.add_argument("--window", type=float, default=3.0, help="partner window: hit ± duration / WINDOW")
        p.add_argument("--budget-ms", type=float, default=10.0, help="decide this long before a hit may sound")
        p.add_argument("--partner-offset", type=float, default=0.0,
                       help="seconds into the partner recording where the score starts")
        p.add_argument("--midi", default="virtual" if name == "play" else "off",
                       help="'virtual' (a port named rolypoly), an existing port name, or 'off'")
        p.add_argument("--osc", metavar="HOST:PORT", help="send /rolypoly/hit, /onset, /state events here")
        add_instrument(p, default="the session's calibration, else auto")
        p.set_defaults(run=run_play if name == "play" else run_simulate)

    p = sub.add_parser("serve", help="a long-lived service controlled over OSC (load, play, stop, tempo...)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=9100, help="OSC port to listen on")
    p.add_argument("--reply", default="127.0.0.1:9101", metavar="HOST:PORT", help="where replies go")
    add_sessions(p, help="sessions folder; every path in a message must stay inside it "
                         "(default $ROLYPOLY_SESSIONS, else ./sessions)")
    add_gmd(p, "fine-tuning's forgetting check")
    for kind in AGENT_KINDS:
        p.add_argument(f"--{kind}-weights", metavar="FILE", help=f"{kind} weights of new sessions (default: shipped)")
    p.add_argument("--no-mix", action="store_true", help="do not write each take's mix.wav")
    p.add_argument("--no-plot", action="store_true", help="do not plot each take")
    add_partner_midi(p)
    add_instrument(p, default="each session's calibration, else auto")
    p.set_defaults(run=run_serve)


def add_partner_midi(parser) -> None:
    """``--partner-midi PORT``: a partner playing MIDI, alone or beside the audio partner."""
    parser.add_argument("--partner-midi", metavar="PORT",
                        help="a partner playing MIDI (keyboard, e-drums, MIDI guitar): their output port, exact "
                             "name or a unique part; alone, or with the audio partner")


def host_port(text: str, option: str, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` as a pair; a user's mistake is one line naming the option.

    >>> host_port("127.0.0.1:9101", "--reply")
    ('127.0.0.1', 9101)
    >>> host_port(":9000", "--osc", default_host="127.0.0.1")
    ('127.0.0.1', 9000)
    """
    from rolypoly.errors import RolypolyError

    host, _, port = str(text).rpartition(":")
    host = host or default_host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RolypolyError(f"{option} {text}: expected HOST:PORT, e.g. 127.0.0.1:9101")
    return host, int(port)


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

        osc = OscOut(*host_port(args.osc, "--osc", default_host="127.0.0.1"))
    return midi, osc


def _session(args):
    """The take's session folder: ``--session``, else the score's name in ``--sessions``, else play_take's default."""
    if args.session is not None:
        return session_folder(args.session, args.sessions)
    if args.sessions is not None:
        return session_folder(Path(args.score).stem, args.sessions)
    return None


def _take_session(args) -> Path:
    """The folder the take goes to (as play_take decides), whose calibration the detector uses."""
    from rolypoly import paths

    return _session(args) or paths.sessions_dir() / Path(args.score).stem


def partner_source(args):
    """The take's partner: a recording or an audio input, a MIDI port, or both at once.

    Audio is heard with the session's calibration (``rolypoly onsets --calibrate``),
    if it has one, and the instrument asked for.
    """
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.sources import FileSource, LiveSource

    detector = session_settings(_take_session(args), args.instrument)
    sources = []
    if args.partner_file:
        sources.append(FileSource(args.partner_file, detector=detector))
    elif args.partner_device is not None or not args.partner_midi:
        sources.append(LiveSource(args.partner_device, channel=args.channel - 1, sample_rate=args.sample_rate,
                                  block=args.block, detector=detector))
    if args.partner_midi:
        from rolypoly.realtime.midi_in import CombinedSource, MidiSource

        sources.append(MidiSource(args.partner_midi))
    return sources[0] if len(sources) == 1 else CombinedSource(*sources)


def run_simulate(args) -> int:
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.sources import FileSource

    midi, osc = _outputs(args)
    source = FileSource(args.partner_file, detector=session_settings(_take_session(args), args.instrument))
    summary = play_take(args.score, source, SimClock(), session=_session(args),
                        agent=args.agent, weights=args.weights, settings=_engine_settings(args),
                        midi=midi, osc=osc)
    print_take(summary)
    return 0


def run_play(args) -> int:
    from rolypoly.realtime.clock import RealClock
    from rolypoly.realtime.display import LiveDisplay
    from rolypoly.realtime.duet import play_take

    source = partner_source(args)
    midi, osc = _outputs(args)
    display = LiveDisplay(enabled=not args.quiet)
    try:
        summary = play_take(args.score, source, RealClock(), session=_session(args), agent=args.agent,
                            weights=args.weights, settings=_engine_settings(args), midi=midi, osc=osc,
                            on_engine=display.watch)
    finally:
        display.close()
        if midi is not None:
            midi.close()
        if hasattr(source, "close"):
            source.close()
    print_take(summary)
    return 0


def run_serve(args) -> int:
    from rolypoly.pretrain.gmd import forgetting_set
    from rolypoly.realtime.service import Service, serve

    reply = host_port(args.reply, "--reply")
    weights = {k: getattr(args, f"{k}_weights") for k in AGENT_KINDS}
    service = Service(args.sessions, reply=reply, weights={k: v for k, v in weights.items() if v},
                      mix=not args.no_mix, plot=not args.no_plot,
                      forgetting_set=lambda: forgetting_set(args.gmd),
                      partner_midi=args.partner_midi, instrument=args.instrument)
    if args.host not in LOCAL_HOSTS:
        print(f"rolypoly: warning: listening on {args.host}: anyone who can reach port {args.port} "
              "can control the drum machine", file=sys.stderr)

    def ready(address):
        print(f"rolypoly serve: OSC on udp {address[0]}:{address[1]}, replies to {reply[0]}:{reply[1]}, "
              f"sessions in {service.root} (send /rolypoly/quit to end)", flush=True)

    serve(args.host, args.port, service=service, ready=ready)
    return 0
