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

import datetime as _dt
from pathlib import Path

import numpy as np

from rolypoly.agents import Performer
from rolypoly.score import write_midi
from rolypoly import paths
from rolypoly.session import Session

from .engine import Engine, EngineSettings
from rolypoly.take import TAKE_FILE, Take, TakeEnd, TakeHeader, TakeWriter

def play_take(score_path, source, clock, *, session=None, agent: str | None = None, weights=None,
              settings: EngineSettings | None = None, tempo_bpm: float | None = None, midi=None,
              osc=None, on_engine=None, mix: bool = True, plot: bool = True) -> dict:
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

    Returns
    -------
    dict : a summary of the take, also stored in the take's closing line
    """
    settings = settings or EngineSettings()
    name = Path(score_path).stem
    sess = Session.open(session or paths.sessions_dir() / name, score_path)
    score = sess.score(tempo_bpm)
    # The session's current model version (created from the pretrained agent on first use),
    # unless weights are given explicitly.
    model, version, warnings = sess.agent(agent, weights)
    played_hash = sess.remember_score(score)
    take_dir = sess.next_take_dir()
    header = TakeHeader(
        score=score.name, score_hash=played_hash, rows=len(score), tempo_bpm=round(float(score.tempo_bpm[0]), 3),
        agent=model.kind, model_version=version, pattern=sess.pattern,
        weights=str(weights) if weights is not None else str(sess.version_dir(version) / "weights.safetensors"),
        settings=settings.as_dict(), source=source.name, sample_rate=source.sample_rate,
        clock="simulated" if clock.simulated else "real", started=_now())
    take = TakeWriter(take_dir / TAKE_FILE, header)
    hits = []
    engine = Engine(score, Performer(model), source, clock, midi=midi, osc=osc, take=take,
                    settings=settings, on_hit=lambda t, at: hits.append((t, at)))
    if on_engine is not None:
        on_engine(engine)
    try:
        result = engine.run()
    except BaseException as e:
        # Whatever happened, the rows written so far stay a closed, readable take.
        take.close(TakeEnd(error=str(e).splitlines()[0] if str(e) else type(e).__name__, ended=_now()))
        raise
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
    }
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
        from rolypoly.synth import render_hits

        events = [(at, score.hits[t], score.velocities[t]) for t, at in hits]
        start = int(round(-settings.partner_offset_s * sr))  # partner sample 0 on the score's time line
        length = max(len(partner) + start, int((max((at for _, at in hits), default=0) + 2.0) * sr))
        drum_audio = render_hits(events, sr, length)
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


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _r(x) -> float:
    return round(float(x), 3)


def _mix(drums: np.ndarray, partner: np.ndarray, partner_start: int) -> np.ndarray:
    """Drums plus partner, the partner placed at its sample on the score's time line."""
    out = drums.astype(np.float32)
    a = max(0, partner_start)
    b = min(len(out), partner_start + len(partner))
    if b > a:
        out[a:b] += partner[a - partner_start:b - partner_start]
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    return out / peak * 0.9 if peak > 0.9 else out
