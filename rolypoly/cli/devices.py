"""``rolypoly devices``, ``calibrate`` and ``onsets``: what the machine offers, how late it is, what the onset detector hears."""
from __future__ import annotations

import json
import sys

#: (rolypoly.onsets.INSTRUMENTS is checked when the detector is made: --help stays instant.)
INSTRUMENT_HELP = "what the partner plays, the onset detector's preset: guitar, bass, piano, keys, voice or auto"


def add_instrument(parser, default: str = "auto") -> None:
    """``--instrument NAME``: the onset detector's preset for what the partner plays."""
    parser.add_argument("--instrument", metavar="NAME", help=f"{INSTRUMENT_HELP} (default {default})")


def add_parser(sub) -> None:
    from .common import add_sessions

    d = sub.add_parser("devices", help="list audio devices and MIDI ports")
    d.set_defaults(run=run_devices)

    c = sub.add_parser("calibrate", help="measure how late the drums come back to the partner input (JACK)",
                       description="Plays clicks from the drum output and listens on the partner input (a loopback "
                                   "cable, or a microphone near the speaker); stores the latency beyond JACK's own "
                                   "figures, and the drums' bleed into the input, for these ports.")
    c.add_argument("--playback", action="append", metavar="PORT",
                   help="JACK port the clicks go to (default: the first physical playback port; repeat for more)")
    c.add_argument("--capture", metavar="PORT", help="JACK port they come back on (default: the first physical capture port)")
    c.add_argument("--clicks", type=int, default=8, help="how many clicks (default 8)")
    c.add_argument("--json", dest="json_out", metavar="OUT", help="also write the result here")
    c.add_argument("--no-save", action="store_true", help="measure only; keep the stored calibration as it is")
    c.set_defaults(run=run_calibrate)

    o = sub.add_parser("onsets", help="run the live onset detector over a recording, or calibrate it to a player")
    o.add_argument("input", nargs="?", help="WAV or FLAC file")
    o.add_argument("--json", action="store_true", help="JSON with the moment each onset became usable")
    add_instrument(o)
    o.add_argument("--threshold", type=float, help="the network's probability an onset needs (0..1)")
    o.add_argument("--session", metavar="DIR",
                   help="use this session's calibration; with --calibrate, store the calibration there")
    add_sessions(o)
    o.add_argument("--calibrate", action="store_true",
                   help="set threshold and silence gate from a minute of the partner playing alone in their "
                        "room: the recording given, else the live input (--partner-device, --seconds)")
    o.add_argument("--partner-device", metavar="DEV", help="--calibrate from this audio input (default input)")
    o.add_argument("--channel", type=int, default=1, help="input channel the partner is on (from 1)")
    o.add_argument("--seconds", type=float, default=60.0, help="how long --calibrate listens to the live input")
    o.set_defaults(run=run_onsets)


def run_devices(args) -> int:
    from rolypoly.realtime.devices import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def run_calibrate(args) -> int:
    from rolypoly.errors import RolypolyError
    from rolypoly.realtime import calibrate, jack

    if not jack.server_running():
        raise RolypolyError(f"rolypoly calibrate needs a running JACK server ({jack.server_name()!r} is not "
                            "running): start one on the audio interface, e.g. jackd -d alsa -d hw:0")
    if args.clicks < 1:
        raise RolypolyError(f"--clicks {args.clicks}: at least one click")
    result = calibrate.calibrate_jack(playback=args.playback, capture=args.capture, clicks=args.clicks)
    print(f"round trip {result['playback'][0]} -> {result['capture']}: {result['round_trip_ms']:.3f} ms "
          f"({result['round_trip_frames']:.1f} frames at {result['rate']} Hz; {result['clicks']} of "
          f"{result['sent']} clicks, spread {result['spread_ms']:.3f} ms)")
    print(f"  JACK reports {result['reported_playback_frames']} + {result['reported_capture_frames']} frames; "
          f"beyond that {result['extra_frames']:.1f} frames: output {result['output_latency_ms']:.3f} ms, "
          f"input {result['input_latency_ms']:.3f} ms (split in half)")
    if not args.no_save:
        key = calibrate.save(result)
        print(f"  stored as {key} in {calibrate.calibration_file()}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json_out}")
    return 0


def _session(args):
    from .common import session_folder

    return session_folder(args.session, args.sessions) if args.session else None


def run_onsets(args) -> int:
    from rolypoly.errors import RolypolyError
    from rolypoly.onsets import detect_file, session_settings

    if args.calibrate:
        return run_onset_calibration(args)
    if args.input is None:
        raise RolypolyError("onsets: give a recording (WAV or FLAC), or --calibrate")
    settings = session_settings(_session(args), args.instrument)
    if args.threshold is not None:
        settings["threshold"] = args.threshold
    onsets, available, descriptors = detect_file(args.input, **settings)
    if args.json:
        print(json.dumps([{"time_s": round(float(t), 6), "available_s": round(float(a), 6),
                           "descriptor": round(float(d), 4)}
                          for t, a, d in zip(onsets, available, descriptors)], indent=1))
    else:
        for t in onsets:
            print(f"{t:.6f}")
    return 0


def run_onset_calibration(args) -> int:
    """``rolypoly onsets --calibrate``: threshold and gate from the partner playing alone, kept in the session."""
    from rolypoly.audio_io import load_audio
    from rolypoly.onsets import calibrate

    rate = 48000
    if args.input is not None:
        audio, name = load_audio(args.input, rate), args.input
    else:
        audio, name = _record(args, rate), f"input {args.partner_device or 'default'}"
    result = calibrate(audio, rate, instrument=args.instrument or "auto", name=name)
    folder = _session(args)
    if folder is not None:
        from rolypoly.session import Session

        Session(folder).update(onset_calibration=result)
        result = {**result, "stored_in": str(folder)}
    print(json.dumps(result, indent=1))
    return 0


def _record(args, rate: int):
    """``--seconds`` of the live input, the partner's channel only."""
    import numpy as np

    from rolypoly.errors import DeviceError, RolypolyError
    from rolypoly.realtime.devices import resolve_input_device

    if not args.seconds > 0:
        raise RolypolyError(f"onsets --calibrate: --seconds must be positive, got {args.seconds:g}")
    try:
        import sounddevice as sd
    except (OSError, ImportError) as e:
        raise DeviceError(f"no audio input: {str(e).splitlines()[0]}") from None
    device = resolve_input_device(args.partner_device)
    print(f"listening for {args.seconds:g} s: play alone, as you would in the take...", file=sys.stderr)
    try:
        audio = sd.rec(int(args.seconds * rate), samplerate=rate, channels=args.channel, device=device,
                       dtype="float32", blocking=True)
    except Exception as e:
        raise DeviceError(f"cannot record from input {args.partner_device or 'default'}: "
                          f"{str(e).splitlines()[0]}") from None
    return np.ascontiguousarray(audio[:, args.channel - 1])
