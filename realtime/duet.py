"""One take, end to end: session folder in, take files out.

:func:`play_take` is what ``rolypoly play``, ``rolypoly simulate``, the
service and the demo all call. It opens the session, runs the
:class:`~rolypoly.realtime.engine.Engine` with the given clock and source, and then
(off the live path) writes what a musician keeps from a take: the rows
(``take.jsonl``, written during the take), the partner audio, the drums as
played (MIDI), a mix of both (WAV) and a plot of the drums' offsets and the partner per hit.

Examples
--------
>>> summary = play_take("song.mid", FileSource("bass.wav"), SimClock(), session="sessions/song")  # doctest: +SKIP
>>> summary["take_dir"]                                                                           # doctest: +SKIP
'sessions/song/takes/000'
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from rolypoly.agents import Performer
from rolypoly.errors import RolypolyError
from rolypoly.limits import MAX_AUDIO_SECONDS, MAX_MIX_SECONDS
from rolypoly.score import write_midi
from rolypoly import paths
from rolypoly.session import Session

from .engine import Engine, EngineSettings
from rolypoly.take import TAKE_FILE, Take, TakeEnd, TakeHeader, TakeWriter

#: The range of each engine setting a take accepts (the command line's options, the service's messages).
SETTING_RANGES = {
    "budget_ms": (0.0, 1000.0),          # decide up to a second ahead
    "window_factor": (1.0, 100.0),       # window hit ± duration / factor: > 1 keeps it inside the gap
    "clamp_factor": (2.0, 100.0),        # ŷ within gap / factor: >= 2 keeps neighbouring hits in order
    "lead_in_s": (0.0, 60.0),
    "partner_offset_s": (-MAX_AUDIO_SECONDS, MAX_AUDIO_SECONDS),
}


def check_settings(settings: EngineSettings) -> EngineSettings:
    """``settings``, each a finite number in :data:`SETTING_RANGES`; else a RolypolyError naming it.

    ``partner_offset_s`` may also be None: the take aligns a recording to the score by itself
    (:func:`partner_offset`).

    >>> check_settings(EngineSettings(window_factor=2.5)).window_factor
    2.5
    >>> check_settings(EngineSettings(partner_offset_s=None)).partner_offset_s is None
    True
    >>> check_settings(EngineSettings(window_factor=1e39))
    Traceback (most recent call last):
    ...
    rolypoly.errors.RolypolyError: window_factor 1e+39 is outside 1-100
    """
    for name, (lo, hi) in SETTING_RANGES.items():
        value = getattr(settings, name)
        if value is None and name == "partner_offset_s":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RolypolyError(f"{name} must be a finite number, got {value!r}")
        left_open = name == "window_factor"
        if not ((lo < value) if left_open else (lo <= value)) or value > hi:
            raise RolypolyError(f"{name} {value:g} is outside {lo:g}-{hi:g}")
    return settings


def play_take(score_path, source, clock, *, session=None, agent: str | None = None, weights=None,
              settings: EngineSettings | None = None, tempo_bpm: float | None = None, midi=None,
              osc=None, on_engine=None, mix: bool = True, plot: bool = True, drums=None, kit=None,
              start_at=None, midi_early_s: float = 0.0, say=None, generate: dict | None = None) -> dict:
    """Play one take and keep everything it leaves behind.

    Parameters
    ----------
    score_path : the drum part (MIDI)
    source : a rolypoly.realtime.sources.PartnerSource
    clock : RealClock or SimClock
    session : session folder (default: ``<sessions folder>/<score name>``, :func:`rolypoly.paths.sessions_dir`)
    agent, weights : which timing agent; the shipped weights where ``weights`` is omitted
    tempo_bpm : play at this tempo instead of the score's (later tempo changes keep their ratio)
    on_engine : optional callable(engine) called before the take starts (live displays)
    drums : an output that plays the hits placed to the sample (rolypoly.realtime.jack_io.JackIO...)
    kit : the rolypoly.kit.SampleKit the drums sound with live; ``mix.wav`` is rendered with it
        (default: :func:`rolypoly.kit.load_kit`'s kit)
    start_at : optional callable(clock, score) -> engine time of the score's time zero (an incoming MIDI clock's bar)
    midi_early_s : rtmidi MIDI leaves this much early (an external synth's latency)
    say : optional callable(line) told, before the take, the partner offset found when
        ``settings.partner_offset_s`` is None and the partner is a recording
    generate : bars written during the take (:func:`bar_feed`'s keywords: ``mode``,
        ``controls``, ``fill_every``, ``bars``, ``writer`` or ``continuation``/``fill``
        weights); the take then records the rows it played, and the session's score stays

    Returns
    -------
    dict : a summary of the take, also stored in the take's closing line
    """
    settings = check_settings(settings or EngineSettings())
    name = Path(score_path).stem
    sess = Session.open(session or paths.sessions_dir() / name, score_path)
    score = sess.score(tempo_bpm)
    # The session's current model version (created from the pretrained agent on first use),
    # unless weights are given explicitly.
    model, version, warnings = sess.agent(agent, weights)
    settings, found = partner_offset(score, source, settings)
    if found is not None and say is not None:
        say(found)
    played_hash = sess.remember_score(score)
    feed, problem = (None, None) if generate is None else bar_feed(score, **generate)
    if problem is not None:
        warnings = [*warnings, problem]
        if say is not None:
            say(problem)
    take_dir = sess.next_take_dir()
    header = TakeHeader(
        score=score.name, score_hash=played_hash, rows=len(score) if feed is None else None,
        tempo_bpm=round(float(score.tempo_bpm[0]), 3),
        agent=model.kind, model_version=version, pattern=sess.pattern,
        weights=str(weights) if weights is not None else str(sess.version_dir(version) / "weights.safetensors"),
        settings=settings.as_dict(), source=source.name, sample_rate=source.sample_rate,
        clock="simulated" if clock.simulated else "real", started=_now(),
        extra={} if feed is None else {"generated": {"mode": feed.mode, "bars": feed.n_bars,
                                                     "fill_every": feed.fill_every,
                                                     "controls": dataclasses.asdict(feed.controls)}})
    take = TakeWriter(take_dir / TAKE_FILE, header)
    # When each row's hit sounded (NaN: not played): filled in place, nothing kept per hit.
    sounded = np.full(len(score) if feed is None else feed.plan.capacity, np.nan)

    def on_hit(t, at):
        sounded[t] = at

    engine = Engine(score, Performer(model), source, clock, midi=midi, osc=osc, take=take,
                    settings=settings, on_hit=on_hit, drums=drums, midi_early_s=midi_early_s, bars=feed)
    if on_engine is not None:
        on_engine(engine)
    try:
        result = engine.run(start_at(clock, score) if start_at is not None else None)
    except BaseException as e:
        # Whatever happened, the rows written so far stay a closed, readable take.
        take.close(TakeEnd(error=str(e).splitlines()[0] if str(e) else type(e).__name__, ended=_now()))
        raise
    if feed is not None:  # what was played: the bars written, not the score (which stays as it is)
        score = feed.plan.score()
    played = np.isfinite(result.played)
    rel = result.played - result.notated
    bar_s = score.bar_ms[:len(rel)] / 1000
    diff_ms = result.diff * bar_s * 1000
    summary = {
        "take_dir": str(take_dir), "rows": int(played.sum()), "misses": result.misses,
        "xruns": result.xruns, "stopped_early": result.stopped_early, "onsets": int(len(result.onsets)),
        "hits_with_partner": int(np.isfinite(result.diff).sum()),
        "yhat_ms_mean": _r(np.mean(result.yhat * bar_s * 1000)) if played.any() else None,
        "yhat_ms_std": _r(np.std(result.yhat * bar_s * 1000)) if played.any() else None,
        "diff_ms_mean": _r(np.nanmean(diff_ms)) if np.isfinite(diff_ms).any() else None,
        "diff_ms_std": _r(np.nanstd(diff_ms)) if np.isfinite(diff_ms).any() else None,
        "timing_error_ms_max": _r(np.nanmax(np.abs(result.played - result.intended)) * 1000)
        if played.any() else None,
        "problems": warnings + result.problems, "model_version": version,
        # As played (aligned to 0.1 ms): the offset that places partner.wav in mix.wav, and that a next take reuses.
        "partner_offset_s": round(float(settings.partner_offset_s or 0.0), 4),
    }
    summary["problems"] += partner_seldom_heard(result, score, settings)
    if feed is not None:
        summary["generated"] = feed.summary()
        summary["problems"] += [f"bar writer: {e}" for e in feed.errors]
    figures = {k: v for k, v in summary.items() if k not in ("rows", "misses", "xruns", "stopped_early")}
    # Every onset heard, not only those in the hit windows: off-beat partner notes need them.
    end = TakeEnd(rows=summary["rows"], misses=result.misses, xruns=result.xruns,
                  stopped_early=result.stopped_early, partner_onsets=result.onsets, ended=_now(), summary=figures)
    take.close(end)

    partner = source.recording()
    sr = source.sample_rate
    from rolypoly.audio_io import write_wav

    write_wav(take_dir / "partner.wav", partner, sr, subtype="PCM_16")
    offsets = np.zeros(len(score))
    offsets[:len(rel)] = np.where(played, rel / bar_s, 0.0)
    drums = score
    if result.stopped_early:
        drums = score.head(int(played.sum()))
    write_midi(drums, take_dir / "drums.mid", offsets=offsets[:len(drums)])
    if mix:
        from rolypoly.kit import load_kit
        from rolypoly.score import played_notes

        from .engine import row_hits

        rows = np.flatnonzero(np.isfinite(sounded))
        # The hits the engine handed to the live drums: the player's notes, at the velocities played.
        classes, velocities, notes = row_hits(score, played_notes(score))
        hits = np.array([(sounded[t], c, v, n % 128) for t in rows
                         for c, v, n in zip(classes[t], velocities[t], notes[t])], np.float64).reshape(-1, 4)
        start = int(round(-settings.partner_offset_s * sr))  # partner sample 0 on the score's time line
        last = float(sounded[rows].max()) if len(rows) else 0.0
        length = max(len(partner) + start, int((last + 2.0) * sr))
        if length > MAX_MIX_SECONDS * sr:  # the partner and drums are kept whole; the mix is a preview
            length = int(MAX_MIX_SECONDS * sr)
            summary["problems"].append(f"mix.wav cut at {MAX_MIX_SECONDS / 60:.0f} minutes (the longest mix)")
        # The kit heard live, at the recording's rate: what was heard and what is kept sound alike.
        kit = load_kit(None, sr) if kit is None else kit.at_rate(sr)
        drum_audio = kit.render(hits[:, 0], hits[:, 1].astype(int), hits[:, 2], hits[:, 3].astype(int), length,
                                limit=True)
        write_wav(take_dir / "mix.wav", _mix(drum_audio, partner, start), sr, subtype="PCM_16")
        summary["mix"] = str(take_dir / "mix.wav")
    if plot:
        from rolypoly.session_plots import bar_meters, plot_take_fig1, session_ylim

        # On the session's scale: this take's picture compares with the ones before it.
        plot_take_fig1(Take(header, engine.rows[:len(rel)], end), take_dir / "take.png",
                       ylim=session_ylim(sess.folder), meters=bar_meters(score))
        summary["plot"] = str(take_dir / "take.png")
    summary["partner"] = str(take_dir / "partner.wav")
    summary["drums"] = str(take_dir / "drums.mid")
    return summary


def bar_feed(score, *, mode: str = "follow", controls: dict | None = None, fill_every: int = 0,
             bars: int | None = None, writer=None, continuation=None, fill=None):
    """The take's :class:`~rolypoly.realtime.live_bars.BarFeed` and a problem line (or None).

    A bar model that does not load turns generation off, not the take: the
    score plays as written and the line says why. Bad controls, mode or
    ``fill_every`` are the player's mistake: RolypolyError before the take.
    """
    from rolypoly.errors import CheckpointError
    from rolypoly.generate import BarWriter

    from .live_bars import MODE_CONTROLS, BarFeed, mode_controls

    if mode in MODE_CONTROLS:
        mode_controls(mode, controls)  # checked before any model loads
    problem = None
    if writer is None:
        try:
            writer = BarWriter.load(continuation, fill)
        except CheckpointError as e:
            problem = f"generation off, the score plays as written: {e}"
    return BarFeed(score, writer, mode=mode, controls=controls, fill_every=fill_every, bars=bars), problem


def partner_offset(score, source, settings: EngineSettings) -> tuple[EngineSettings, str | None]:
    """The take's settings with the partner offset resolved, and what to say about it.

    A given offset stays. Without one, a recording (:meth:`known_audio`) is aligned to the
    score by itself (:func:`rolypoly.align.align_recording`); a live partner plays along, at 0.
    The second value is None when nothing was aligned, else the line that says the offset found.
    """
    if settings.partner_offset_s is not None:
        return settings, None
    audio = source.known_audio()
    if audio is None:
        return replace(settings, partner_offset_s=0.0), None
    from rolypoly.align import ALIGN_BARS, MAX_LEAD_S, align_recording

    offset, _ = align_recording(score, audio, source.sample_rate)
    if not np.isfinite(offset):
        return replace(settings, partner_offset_s=0.0), (
            f"partner offset 0 s: no partner onset in the first {MAX_LEAD_S:g} s of {source.name} to align")
    bars = min(ALIGN_BARS, score.n_bars)
    return replace(settings, partner_offset_s=round(float(offset), 4)), (
        f"partner offset {offset:.3f} s: the score starts there in {Path(source.name).name} "
        f"(its notes aligned to the score's first {bars} bars; --partner-offset S sets it)")


def partner_seldom_heard(result, score, settings: EngineSettings) -> list[str]:
    """A warning when the partner was heard on fewer than half the hits, and most of its notes missed them.

    A partner who plays fewer notes than the drums (a bass on the kicks) is heard on fewer than
    half the hits and is fine; one whose notes mostly fall between the hits' windows is not
    where the score expects it: a wrong partner offset, or the wrong input.
    """
    hits = int(np.isfinite(result.played).sum())
    heard = int(np.isfinite(result.diff).sum())
    if not hits or heard * 2 >= hits:
        return []
    window = score.duration_ms[:len(result.played)] / 1000.0 / settings.window_factor
    ok = np.isfinite(result.played)
    lo, hi = result.played[ok] - window[ok], result.played[ok] + window[ok]
    # The hits' windows by start, and how far the windows started so far reach: an onset is near a
    # hit when the last window starting before it still reaches past it. Sorted and searched, not
    # an onsets x hits matrix: an hour's take has 100,000 rows.
    order = np.argsort(lo, kind="stable")
    starts, reach = lo[order], np.maximum.accumulate(hi[order])
    onsets = np.asarray(result.onsets, np.float64)
    span = onsets[(onsets >= starts[0]) & (onsets <= reach[-1])]
    last = np.searchsorted(starts, span, side="left") - 1  # the last window starting strictly before
    on_hits = int(((last >= 0) & (reach[np.maximum(last, 0)] > span)).sum())
    if len(span) and on_hits * 2 >= len(span):
        return []
    offset = settings.partner_offset_s or 0.0
    return [f"the partner was heard on only {heard} of {hits} hits ({on_hits} of its {len(span)} notes "
            f"during the take near a hit): check the partner offset ({offset:g} s; --partner-offset S) "
            "and the partner input"]


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _r(x) -> float:
    return round(float(x), 3)


def _mix(drums: np.ndarray, partner: np.ndarray, partner_start: int) -> np.ndarray:
    """Drums plus partner, the partner placed at its sample on the score's time line."""
    out = drums.astype(np.float32, copy=False)  # in place: a long take's mix is hundreds of MB
    a = max(0, partner_start)
    b = min(len(out), partner_start + len(partner))
    if b > a:
        out[a:b] += partner[a - partner_start:b - partner_start]
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    return out / peak * 0.9 if peak > 0.9 else out
