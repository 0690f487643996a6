"""``rolypoly play``, ``simulate`` and ``serve``: takes with a partner, and the OSC service."""
from __future__ import annotations

import sys
from pathlib import Path

from rolypoly import AGENT_KINDS

from .common import (add_agent, add_gmd, add_groove, add_sessions, groove_score, print_take, print_warnings,
                     session_folder)
from .devices import add_instrument

#: Addresses that only this machine can reach: serving on any other warns.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    for name, helptext in (("play", "play a take with a partner: live input, MIDI or a recording in real time"),
                           ("simulate", "play a take with a recorded partner on a simulated clock")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("score", nargs="?", help="drum part, Standard MIDI File (or --groove STYLE/N)")
        add_groove(p)
        if name == "play":
            src = p.add_mutually_exclusive_group()
            src.add_argument("--partner-device", metavar="DEV", help="audio input (index or name); default input if omitted")
            src.add_argument("--partner-file", metavar="FILE", help="WAV/FLAC recording played as the partner in real time")
            add_partner_midi(p)
            p.add_argument("--channel", type=int, default=1, help="input channel the partner is on (from 1)")
            p.add_argument("--sample-rate", type=int, default=48000)
            p.add_argument("--block", type=int, default=64, help="audio block size in frames")
            p.add_argument("--quiet", action="store_true", help="no live display")
            add_rig_options(p)
            p.add_argument("--clock-in", metavar="PORT",
                           help="follow this MIDI clock: the take starts on its next bar, at its tempo")
        else:
            p.add_argument("--partner-file", metavar="FILE", required=True, help="WAV/FLAC recording of the partner")
        p.add_argument("--session", metavar="DIR",
                       help="session folder, or its name in the sessions folder (default: the score's name there)")
        add_sessions(p)
        add_agent(p, help="agent kind of a new session (default lstm); a session keeps its own")
        p.add_argument("--weights", help="agent weights (.safetensors); default: the shipped ones")
        add_take_options(p, midi="virtual" if name == "play" else "off")
        add_generate_options(p, controller=name == "play")
        add_instrument(p, default="the session's calibration, else auto")
        add_kit(p)
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
    add_rig_options(p)
    add_kit(p)
    p.add_argument("--midi", default="virtual", help="'virtual' (a port named rolypoly), an existing port name, "
                                                     "or 'off'")
    add_partner_midi(p)
    add_instrument(p, default="each session's calibration, else auto")
    p.set_defaults(run=run_serve)


def add_partner_midi(parser) -> None:
    """``--partner-midi PORT``: a partner playing MIDI, alone or beside the audio partner."""
    parser.add_argument("--partner-midi", metavar="PORT",
                        help="a partner playing MIDI (keyboard, e-drums, MIDI guitar): their output port, exact "
                             "name or a unique part; alone, or with the audio partner")
def add_rig_options(p) -> None:
    """What the drums sound through live (``play``, ``session run``): see rolypoly.realtime.rig."""
    p.add_argument("--drums", choices=("audio", "midi", "both"), default="both",
                   help="the sampled kit through the audio output, MIDI, or both (default; with no audio "
                        "output: MIDI only)")
    p.add_argument("--midi-latency-ms", type=float, default=0.0, metavar="MS",
                   help="an external synth's latency: the drums' MIDI leaves this much earlier (default 0)")
    p.add_argument("--no-calibration", action="store_true",
                   help="ignore the stored calibration (rolypoly calibrate) of the audio ports")


def add_kit(p) -> None:
    p.add_argument("--kit", metavar="FILE.sf2|DIR",
                   help="the drum kit heard live and in mix.wav: a soundfont's drum kit (.sf2/.sf3), a folder "
                        "of samples (kick.wav, snare_40.wav, 42.wav ...) or 'synth' (default: the installed "
                        "General MIDI soundfont, else the built-in synthesizer)")


def add_take_options(p, midi: str) -> None:
    """The engine's knobs and the outputs of a take (``play``, ``simulate``, ``session run``)."""
    p.add_argument("--window", type=float, default=3.0, help="partner window: hit ± duration / WINDOW")
    p.add_argument("--budget-ms", type=float, default=10.0, help="decide this long before a hit may sound")
    p.add_argument("--partner-offset", type=float, metavar="S",
                   help="seconds into the partner recording where the score starts (default: found by "
                        "aligning the recording's onsets to the score)")
    p.add_argument("--midi", default=midi, help="'virtual' (a port named rolypoly), an existing port name, or 'off'")
    p.add_argument("--osc", metavar="HOST:PORT", help="send /rolypoly/hit, /onset, /state events here")


#: Generation controls settable on the command line (rolypoly.generate.Controls).
CONTROL_OPTIONS = ("follow", "density", "temperature", "seed", "style", "pocket")


def add_generate_options(p, controller: bool = False, one_take: bool = True) -> None:
    """``--generate MODE`` and its controls (``play``, ``simulate``; ``session run`` without ``one_take``)."""
    g = p.add_argument_group("generation", "bars written during the take, following the partner "
                                           "(the session's score is not changed; the take keeps what it played)")
    g.add_argument("--generate", choices=("follow", "fills", "free"),
                   help="follow: every bar written, leaning on the partner's rhythm; fills: the score as "
                        "written with fills; free: every bar written from the drums' own groove")
    g.add_argument("--follow", type=float, metavar="F", help="0 = the drums' pattern, 1 = the partner's rhythm")
    g.add_argument("--density", type=float, metavar="F", help="0 sparse .. 1 busy (default 0.5)")
    g.add_argument("--fill-every", type=int, default=0, metavar="N", help="a fill every N bars (default: only "
                                                                          "when asked: pedal, OSC)")
    g.add_argument("--style", help="a Groove MIDI Dataset style: rock, funk, jazz, latin, hiphop, soul, "
                                   "afrocuban, punk ... (default: any)")
    g.add_argument("--temperature", type=float, metavar="T", help="0 = the most likely bar; above, drawn")
    g.add_argument("--seed", type=int, help="repeatable drawing (default 0)")
    g.add_argument("--pocket", type=float, metavar="P", help="-1 pushed .. 0 .. +1 laid back")
    if one_take:
        g.add_argument("--bars", type=int, metavar="N", help="the take's length in bars (default: the score's; "
                                                            "the score repeats)")
        g.add_argument("--continuation-weights", metavar="FILE", help="continuation model (default: shipped)")
        g.add_argument("--fill-weights", metavar="FILE", help="fill model (default: shipped)")
    if controller:
        g.add_argument("--control-cc", action="append", metavar="CC:NAME",
                       help="a MIDI controller for generation: NAME fill (a press: a fill into the next "
                            "downbeat), follow, density, temperature or pocket (default 64:fill 1:follow "
                            "11:density; 'off': none)")
        g.add_argument("--control-port", metavar="NAME", help="listen to this MIDI output (default: a virtual "
                                                             "input 'rolypoly-control')")


def generate_options(args) -> dict | None:
    """The ``generate`` keywords of :func:`rolypoly.realtime.duet.play_take` from the command line (None: off)."""
    from rolypoly.errors import RolypolyError

    given = {k: getattr(args, k) for k in CONTROL_OPTIONS if getattr(args, k) is not None}
    bars = getattr(args, "bars", None)
    if args.generate is None:
        extra = [k for k in given] + (["fill-every"] if args.fill_every else []) + (["bars"] if bars else [])
        if extra:
            raise RolypolyError(f"--{extra[0].replace('_', '-')} needs --generate follow|fills|free")
        return None
    return {"mode": args.generate, "controls": given, "fill_every": args.fill_every, "bars": bars,
            "continuation": getattr(args, "continuation_weights", None), "fill": getattr(args, "fill_weights", None)}


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


def _outputs(args, midi: bool = True):
    """The rtmidi output (``--midi``; not for play, whose rig has its own) and OSC (``--osc``)."""
    midi_out = osc = None
    if midi and args.midi != "off":
        from rolypoly.realtime.midi_out import MidiOut

        midi_out = MidiOut(existing=None if args.midi == "virtual" else args.midi)
    if args.osc:
        from rolypoly.realtime.osc_out import OscOut

        osc = OscOut(*host_port(args.osc, "--osc", default_host="127.0.0.1"))
    return midi_out, osc


def _say(line: str) -> None:
    """What a take tells before it starts (the partner offset found), shown at once."""
    print(line, flush=True)


def _score(args) -> str:
    """The score file of a take: the MIDI file given, or the file of ``--groove``."""
    from rolypoly.errors import RolypolyError

    score = groove_score(args, args.score)
    if score is None:
        raise RolypolyError(f"{args.command}: give a score (a drum MIDI file) or --groove STYLE/N "
                            "(rolypoly grooves list shows the beats)")
    return score


def _session(args) -> Path:
    """The take's session folder: ``--session``, else the score's (or groove's) name in the sessions folder."""
    from rolypoly.grooves import session_name
    from rolypoly.paths import sessions_dir

    if args.session is not None:
        return session_folder(args.session, args.sessions)
    return sessions_dir(args.sessions) / (session_name(args.groove) if args.groove else Path(args.score).stem)


def partner_source(args):
    """The take's partner: a recording or an audio input, a MIDI port, or both at once.

    Audio is heard with the session's calibration (``rolypoly onsets --calibrate``),
    if it has one, and the instrument asked for.
    """
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.sources import FileSource, LiveSource

    partner_midi = getattr(args, "partner_midi", None)          # (a session run has no MIDI partner)
    detector = session_settings(_session(args), getattr(args, "instrument", None))
    sources = []
    if args.partner_file:
        sources.append(FileSource(args.partner_file, detector=detector))
    elif args.partner_device is not None or not partner_midi:
        sources.append(LiveSource(args.partner_device, channel=args.channel - 1, sample_rate=args.sample_rate,
                                  block=args.block, detector=detector))
    if partner_midi:
        from rolypoly.realtime.midi_partner import CombinedSource, MidiSource

        sources.append(MidiSource(partner_midi))
    return sources[0] if len(sources) == 1 else CombinedSource(*sources)


def run_simulate(args) -> int:
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.sources import FileSource

    score = _score(args)
    kit = None
    if args.kit is not None:
        from rolypoly.kit import load_kit

        kit = load_kit(args.kit)
        print_warnings(kit.notes)
    generate = generate_options(args)
    midi, osc = _outputs(args)
    try:
        source = FileSource(args.partner_file, detector=session_settings(_session(args), args.instrument))
        summary = play_take(score, source, SimClock(), session=_session(args),
                            agent=args.agent, weights=args.weights, settings=_engine_settings(args),
                            midi=midi, osc=osc, kit=kit, say=_say, generate=generate)
    finally:
        if midi is not None:
            midi.close()
    print_take(summary)
    return 0


def run_play(args) -> int:
    from rolypoly.onsets import session_settings
    from rolypoly.realtime.clock import RealClock, steady_interpreter
    from rolypoly.realtime.rig import open_rig

    score = _score(args)
    generate = generate_options(args)
    clock = RealClock()
    _, osc = _outputs(args, midi=False)
    # What this machine allows: a JACK client for everything, else PortAudio and rtmidi (realtime/rig.py);
    # opened before the agent (torch) is imported, so that "nothing can sound here" comes at once.
    rig = open_rig(partner_device=args.partner_device, partner_file=args.partner_file, channel=args.channel - 1,
                   sample_rate=args.sample_rate, block=args.block, drums=args.drums, kit=args.kit, midi=args.midi,
                   midi_latency_ms=args.midi_latency_ms, clock_in=args.clock_in,
                   calibration=not args.no_calibration, clock=clock,
                   detector=session_settings(_session(args), args.instrument))
    source = rig.source
    display = None
    try:
        from rolypoly.realtime.display import take_display
        from rolypoly.realtime.duet import play_take

        if args.partner_midi:                 # a MIDI partner beside the audio one
            from rolypoly.realtime.midi_partner import CombinedSource, MidiSource

            source = CombinedSource(rig.source, MidiSource(args.partner_midi))
            rig._closers.append(source.close)
        print_warnings(rig.notes)
        for line in rig.describe:
            print(line, file=sys.stderr)
        tempo = start_at = None
        if args.clock_in is not None:
            tempo = rig.wait_for_clock()
            start_at = rig.bar_start
            print(f"following the MIDI clock at {tempo:.2f} bpm, from its next bar", file=sys.stderr)
        display = take_display(quiet=args.quiet)
        pedal, switch = _generation_controller(args) if generate is not None else (None, None)

        def on_engine(engine):
            display.watch(engine)
            if pedal is not None:
                pedal.attach(engine)

        with steady_interpreter():
            summary = play_take(score, source, clock, session=_session(args), agent=args.agent,
                                weights=args.weights, settings=_engine_settings(args), midi=rig.midi, osc=osc,
                                on_engine=on_engine, drums=rig.drums, kit=rig.kit, tempo_bpm=tempo,
                                start_at=start_at, midi_early_s=rig.midi_early_s, say=_say, generate=generate)
        summary["problems"] = summary.get("problems", []) + rig.problems(clock.now())
        if pedal is not None:
            summary["problems"] += [f"controller: {p}" for p in pedal.problems]
    finally:
        if display is not None:
            display.close()
        if generate is not None and switch is not None:
            switch.close()
        rig.close()
    print_take(summary)
    return 0


def _generation_controller(args):
    """The MIDI controller of generation (``--control-cc``): (PedalControls, FootSwitch), or (pedal, None).

    No MIDI input here is a warning, not a reason to stop: the take plays, controlled over OSC or not at all.
    """
    from rolypoly.errors import RolypolyError
    from rolypoly.realtime.live_bars import PedalControls
    from rolypoly.realtime.midi_in import DEFAULT_GENERATE_CCS, FootSwitch, parse_generate_cc

    pedal = PedalControls()
    if args.control_cc == ["off"]:
        return pedal, None
    switches, knobs = parse_generate_cc(args.control_cc or DEFAULT_GENERATE_CCS)
    try:
        switch = FootSwitch(switches, pedal.press, port=args.control_port, knobs=knobs, on_knob=pedal.knob)
    except RolypolyError as e:
        if args.control_port is not None:
            raise
        print(f"rolypoly: warning: no MIDI controller for generation ({e})", file=sys.stderr)
        return pedal, None
    print(f"generation controller: {switch.describe()}", file=sys.stderr)
    return pedal, switch


def run_serve(args) -> int:
    from rolypoly.pretrain.gmd import forgetting_set
    from rolypoly.realtime.service import Service

    reply = host_port(args.reply, "--reply")
    weights = {k: getattr(args, f"{k}_weights") for k in AGENT_KINDS}
    rig = _serve_rig(args)
    try:
        service = Service(args.sessions, reply=reply, weights={k: v for k, v in weights.items() if v},
                          mix=not args.no_mix, plot=not args.no_plot,
                          forgetting_set=lambda: forgetting_set(args.gmd),
                          partner_midi=args.partner_midi, instrument=args.instrument,
                          midi=rig.midi if rig else None, drums=rig.drums if rig else None,
                          kit=rig.kit if rig else None, midi_early_s=rig.midi_early_s if rig else 0.0)
        _serve(args, service, reply)
    finally:
        if rig is not None:
            rig.close()
    return 0


def _serve_rig(args):
    """The drums' outputs of every real-clock take the service plays (each take names its partner).

    Nothing here to sound them is one warning, not a refusal: the service still plays takes, whose
    drums are heard afterwards, in mix.wav.
    """
    from rolypoly.errors import DeviceError
    from rolypoly.realtime.rig import open_rig

    try:
        rig = open_rig(partner=False, drums=args.drums, kit=args.kit, midi=args.midi,
                       midi_latency_ms=args.midi_latency_ms, calibration=not args.no_calibration)
    except DeviceError as e:
        print(f"rolypoly: warning: the drums sound only afterwards, in mix.wav ({e})", file=sys.stderr)
        return None
    print_warnings(rig.notes)
    for line in rig.describe:
        print(line, file=sys.stderr)
    return rig


def _serve(args, service, reply) -> None:
    from rolypoly.realtime.service import serve

    if args.host not in LOCAL_HOSTS:
        print(f"rolypoly: warning: listening on {args.host}: anyone who can reach port {args.port} "
              "can control the drum machine", file=sys.stderr)

    def ready(address):
        print(f"rolypoly serve: OSC on udp {address[0]}:{address[1]}, replies to {reply[0]}:{reply[1]}, "
              f"sessions in {service.root} (send /rolypoly/quit to end)", flush=True)

    serve(args.host, args.port, service=service, ready=ready)
