"""``rolypoly devices`` and ``rolypoly onsets``: what the machine offers, what the onset detector hears."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    d = sub.add_parser("devices", help="list audio devices and MIDI ports")
    d.set_defaults(run=run_devices)

    o = sub.add_parser("onsets", help="run the live onset detector over a recording")
    o.add_argument("input", help="WAV or FLAC file")
    o.add_argument("--json", action="store_true", help="JSON with the moment each onset became usable")
    o.set_defaults(run=run_onsets)


def run_devices(args) -> int:
    from rolypoly.realtime.devices import format_devices, list_devices

    print(format_devices(list_devices()))
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
