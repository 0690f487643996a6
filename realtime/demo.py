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

from rolypoly.demo import DEMO_PARTNER, DEMO_SCORE

#: The demo's session, inside its output folder.
SESSION = "demo-session"

#: ``--quick`` plays this many bars of the demo score (the 4/4 groove before the 6/8 section).
QUICK_BARS = 4


def run_duet_demo(out_dir="demo-output", realtime: bool = True, quick: bool = False, *, on_step=None,
                  on_engine=None, say=None) -> dict:
    """Play the demo duet on the simulated clock, learn from it, and play it again.

    A fresh session each run: take 0 on the simulated clock with the
    pretrained agent, a fine-tune on it (model version 1), then take 1 with
    the new version in real time (or on the simulated clock without
    ``realtime``). With ``quick``, both takes play the score's first
    :data:`QUICK_BARS` bars on the simulated clock. The partner recording is
    aligned to the score by itself (``say`` is told the offset found).
    Returns the take summaries and the fine-tune report.

    Both takes' ``mix.wav`` sound with the sampled kit (the installed General
    MIDI soundfont's drum kit, else the built-in synthesizer); the real-time
    take also plays it live, through JACK when a server runs (each hit on its
    frame), else through the audio output (``heard`` in the summary says
    where, or why not).

    ``on_step(name, result)`` is called as each step ends ("simulated",
    "finetune", then "real time" or "simulated again"), and before the
    second take with ``(name, None)``; ``on_engine(engine)`` before each take
    starts (a display that follows the take, :mod:`rolypoly.realtime.display`).
    """
    import shutil

    from rolypoly.score import load_score, write_midi
    from rolypoly.session import Session

    from .clock import RealClock, SimClock
    from .duet import play_take
    from .engine import EngineSettings
    from .sources import FileSource

    step = on_step or (lambda name, result: None)
    session = Path(out_dir) / SESSION
    if (session / "session.json").is_file():
        shutil.rmtree(session)  # the demo's own folder: every run starts from the pretrained agent
    score = DEMO_SCORE
    if quick:
        whole = load_score(DEMO_SCORE)
        score = Path(out_dir) / "demo_score_quick.mid"
        write_midi(whole.head(int((whole.bar < QUICK_BARS).sum())), score)
        realtime = False
    # No partner offset: the recording is aligned to the score by itself, as a user's would be.
    out = {"simulated": play_take(score, FileSource(DEMO_PARTNER), SimClock(), session=session, say=say,
                                  on_engine=on_engine)}
    step("simulated", out["simulated"])
    out["finetune"] = Session(session).finetune()
    step("finetune", out["finetune"])
    clock, how = (RealClock(), "real time") if realtime else (SimClock(), "simulated again")
    step(how, None)
    settings = EngineSettings(partner_offset_s=out["simulated"]["partner_offset_s"])  # aligned once
    rig, heard = _live_rig(clock) if realtime else (None, None)
    try:
        source = rig.source if rig is not None else FileSource(DEMO_PARTNER)
        out[how] = play_take(score, source, clock, session=session, settings=settings,
                             drums=rig.drums if rig is not None else None, kit=rig.kit if rig is not None else None,
                             on_engine=on_engine)
    finally:
        if rig is not None:
            rig.close()
    if heard:
        out[how]["heard"] = heard
    step(how, out[how])
    return out


def _live_rig(clock):
    """The demo partner, and the sampled kit through what this machine sounds with; and where it plays.

    The rig of ``rolypoly play --drums audio --midi off`` (:func:`~rolypoly.realtime.rig.open_rig`):
    JACK when a server runs, else the default audio output; with neither, the take still plays and
    the drums sound in its ``mix.wav``.
    """
    from rolypoly.errors import DeviceError
    from rolypoly.realtime import jack

    from .rig import open_rig

    try:
        rig = open_rig(partner_file=DEMO_PARTNER, drums="audio", midi="off", name=jack.own_name("rolypoly-demo"),
                       clock=clock)
    except DeviceError as exc:  # a device that went away: the demo still writes its files
        return None, f"nowhere live ({exc}); the drums sound in mix.wav"
    drums = [d.removeprefix("drums: ") for d in rig.describe if d.startswith("drums: ")]
    return rig, "; ".join(drums) or "; ".join(rig.notes) or None
