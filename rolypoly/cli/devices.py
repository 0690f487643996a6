"""``rolypoly devices``, ``calibrate`` and ``onsets``: what the machine offers, how late it is, what the onset detector hears."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
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

    o = sub.add_parser("onsets", help="run the live onset detector over a recording")
    o.add_argument("input", help="WAV or FLAC file")
    o.add_argument("--json", action="store_true", help="JSON with the moment each onset became usable")
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


def run_onsets(args) -> int:
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
