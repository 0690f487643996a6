"""One take, end to end: session folder in, take files out.

:func:`play_take` is what ``rolypoly play``, ``rolypoly simulate``, the
service and the demo all call. It opens the session, runs the
:class:`~realtime.engine.Engine` with the given clock and source, and then
(off the live path) writes what a musician keeps from a take: the rows
(``take.jsonl``, written during the take), the partner audio, the drums as
played (MIDI), a mix of both (WAV) and a plot of ŷ and diff per hit.

Examples
--------
>>> summary = play_take("song.mid", FileSource("bass.wav"), SimClock(), session="sessions/song")  # doctest: +SKIP
>>> summary["take_dir"]                                                                           # doctest: +SKIP
'sessions/song/takes/000'
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from rolypoly.agents import Performer, default_weights, load_agent
from rolypoly.errors import RolypolyError
from rolypoly.score import Score, at_tempo, load_score, write_midi

from .engine import Engine, EngineSettings
from .takes import TAKE_FILE, TakeWriter

SESSIONS_DIR = Path(__file__).resolve().parents[1] / "sessions"


def score_hash(score: Score) -> str:
    """Identity of a piece: its rows and meters, not its file name nor its tempo.

    A session may play its score faster or slower; it is the same piece.
    """
    h = hashlib.sha256()
    for a in (score.hits, score.bar, score.step, score.timesig):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def open_session(session, score_path) -> tuple[Path, Score]:
    """Create or reopen a session folder for a score; returns it and the score.

    A new session gets a copy of the score (``score.mid``) and a
    ``session.json``; an existing one must be of the same score.
    """
    session = Path(session)
    score = load_score(score_path)
    meta_path = session / "session.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("score_hash") != score_hash(score):
            raise RolypolyError(f"{session}: this session is of another score ({meta.get('score')}); "
                                f"use a new --session for {score_path}")
    else:
        session.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(score_path, session / "score.mid")
        meta = {"score": score.name, "score_hash": score_hash(score),
                "created": _dt.datetime.now().isoformat(timespec="seconds")}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    (session / "takes").mkdir(exist_ok=True)
    return session, score


def next_take_dir(session: Path) -> Path:
    taken = [int(p.name) for p in (session / "takes").iterdir() if p.name.isdigit()]
    return session / "takes" / f"{(max(taken) + 1) if taken else 0:03d}"


def play_take(score_path, source, clock, *, session=None, agent: str = "lstm", weights=None,
              settings: EngineSettings | None = None, tempo_bpm: float | None = None, midi=None,
              osc=None, on_engine=None, mix: bool = True, plot: bool = True) -> dict:
    """Play one take and keep everything it leaves behind.

    Parameters
    ----------
    score_path : the drum part (MIDI)
    source : a realtime.sources.PartnerSource
    clock : RealClock or SimClock
    session : session folder (default: ``sessions/<score name>``)
    agent, weights : which timing agent; the shipped weights where ``weights`` is omitted
    tempo_bpm : play at this tempo instead of the score's (later tempo changes keep their ratio)
    on_engine : optional callable(engine) called before the take starts (live displays)

    Returns
    -------
    dict : a summary of the take, also stored in the take's closing line
    """
    settings = settings or EngineSettings()
    name = Path(score_path).stem
    session, score = open_session(session or SESSIONS_DIR / name, score_path)
    if tempo_bpm is not None:
        score = at_tempo(score, tempo_bpm)
    take_dir = next_take_dir(session)
    weights = Path(weights or default_weights(agent))
    model = load_agent(weights)
    header = {"score": score.name, "score_hash": score_hash(score), "rows": len(score),
              "tempo_bpm": round(float(score.tempo_bpm[0]), 3),
              "agent": model.kind, "weights": str(weights), "settings": settings.as_dict(),
              "source": source.name, "sample_rate": source.sample_rate,
              "clock": "simulated" if clock.simulated else "real",
              "started": _dt.datetime.now().isoformat(timespec="seconds")}
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
        take.close({"error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                    "ended": _dt.datetime.now().isoformat(timespec="seconds")})
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
        "problems": result.problems,
    }
    # Every onset heard, not only those in the hit windows: off-beat partner notes need them.
    take.close({**summary, "ended": _dt.datetime.now().isoformat(timespec="seconds"),
                "partner_onsets": [round(float(x), 6) for x in result.onsets]})

    partner = source.recording()
    sr = source.sample_rate
    from .partner_audio import write_wav

    write_wav(take_dir / "partner.wav", partner, sr, subtype="PCM_16")
    offsets = np.zeros(len(score))
    offsets[:len(rel)] = np.where(played, rel / bar_s, 0.0)
    drums = score
    if result.stopped_early:
        drums = score.head(int(played.sum()))
    write_midi(drums, take_dir / "drums.mid", offsets=offsets[:len(drums)])
    if mix:
        from .synth import render_hits

        events = [(at, score.hits[t], score.velocities[t]) for t, at in hits]
        start = int(round(-settings.partner_offset_s * sr))  # partner sample 0 on the score's time line
        length = max(len(partner) + start, int((max((at for _, at in hits), default=0) + 2.0) * sr))
        drum_audio = render_hits(events, sr, length)
        write_wav(take_dir / "mix.wav", _mix(drum_audio, partner, start), sr, subtype="PCM_16")
        summary["mix"] = str(take_dir / "mix.wav")
    if plot:
        from .plots import plot_take

        plot_take(score, result, take_dir / "take.png")
        summary["plot"] = str(take_dir / "take.png")
    summary["partner"] = str(take_dir / "partner.wav")
    summary["drums"] = str(take_dir / "drums.mid")
    return summary


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
