"""The demo duet: the bundled demo score with the bundled bass recording.

``rolypoly demo`` humanizes the score offline with both agents, then plays
the duet on the simulated clock, fine-tunes the agent on that take, and
plays it again with the new model version in real time from the file. (The
bass itself was made by :mod:`rolypoly.lab.demo_partner`.)

Examples
--------
>>> run_duet_demo("demo-output")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from rolypoly.demo import DEMO_PARTNER, DEMO_SCORE, PARTNER_LEAD_S


def run_duet_demo(out_dir="demo-output", realtime: bool = True) -> dict:
    """Play the demo duet on the simulated clock, learn from it, and play it again.

    A fresh session each run: take 0 on the simulated clock with the
    pretrained agent, a fine-tune on it (model version 1), then take 1 with
    the new version in real time (or on the simulated clock without
    ``realtime``). Returns the take summaries and the fine-tune report.

    Both takes' ``mix.wav`` sound with the sampled kit (the installed General
    MIDI soundfont's drum kit, else the built-in synthesizer); when a JACK
    server runs, the real-time take also plays it through JACK, each hit on
    its frame (``drums`` in the summary says where).
    """
    import shutil

    from rolypoly.session import Session

    from .clock import RealClock, SimClock
    from .duet import play_take
    from .engine import EngineSettings
    from .sources import FileSource

    session = Path(out_dir) / "demo-session"
    if (session / "session.json").is_file():
        shutil.rmtree(session)  # the demo's own folder: every run starts from the pretrained agent
    settings = EngineSettings(partner_offset_s=PARTNER_LEAD_S)
    out = {"simulated": play_take(DEMO_SCORE, FileSource(DEMO_PARTNER), SimClock(), session=session,
                                  settings=settings)}
    out["finetune"] = Session(session).finetune()
    clock, how = (RealClock(), "real time") if realtime else (SimClock(), "simulated again")
    drums, heard = _jack_drums() if realtime else (None, None)
    try:
        out[how] = play_take(DEMO_SCORE, FileSource(DEMO_PARTNER), clock, session=session, settings=settings,
                             drums=drums, kit=drums.kit if drums is not None else None)
    finally:
        if drums is not None:
            drums.close()
    if heard:
        out[how]["heard"] = heard
    return out


def _jack_drums():
    """The sampled kit on JACK's playback ports when a JACK server runs (else None), and where it plays."""
    from rolypoly.errors import DeviceError
    from rolypoly.kit import load_kit
    from rolypoly.realtime import jack

    if not jack.server_running():
        return None, None
    from .jack_io import JackIO

    try:
        watch = jack.JackWatch.shared()
        io = JackIO(kit=load_kit(None, watch.rate), name=jack.own_name("rolypoly-demo"))
        where = io.connect_outputs()
    except DeviceError:
        return None, None  # no JACK client after all: the demo still writes its files
    return io, f"{io.kit.describe()} through JACK ({', '.join(where) or 'no playback ports: connect ' + io.audio_ports[0].name})"
