"""The paper's between-take experiments (section 4.2), measured end to end.

Each experiment is a session played take after take on the simulated clock
against a :class:`~rolypoly.lab.virtual_partner.VirtualPartner`, through the
whole chain: partner audio, onset detection, the engine, take files, eqs.
(1)-(2), fine-tuning with its safety checks, model versions. Only the clock
differs from a live session.

* **morph** (Fig. 1): a straight-8ths drum part, the partner swinging
  (off-beats late by a third of an 8th). The agent should move its
  off-beats to the partner's and keep its beats on the grid. Also the
  tresillo x--x--x- against a partner playing three even (half-note)
  triplets.
* **tame** (Fig. 2): the partner's timing depends on the structure of the
  piece (laid back on the backbeat, rushing the fills...) plus noise; the
  drum-partner offset spread should shrink and stay down.

Examples
--------
>>> report = run_experiment("tame", "experiments/tame")   # doctest: +SKIP
>>> report["targets"]["met"]                              # doctest: +SKIP
True
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from rolypoly.demo import riff_positions
from rolypoly.drum_map import class_index
from rolypoly.errors import RolypolyError
from rolypoly.report import alignment_per_bar
from rolypoly.score import load_score, score_from_grid, write_midi
from rolypoly.finetune import DatasetMSECache
from rolypoly.session import Session

from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.duet import play_take
from rolypoly.realtime.engine import EngineSettings
from rolypoly.lab.virtual_partner import VirtualPartner

MARKER = "experiment.json"
PARTNER_LEAD_S = 0.3
BAR = 24  # grid steps per bar


# ----------------------------------------------------------------------------- scores

def _grid(bars: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((bars * BAR, 9), bool), np.zeros((bars * BAR, 9), np.int16)


def straight_eighths(bars: int = 16, bpm: float = 96.0):
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat on every 8th."""
    hits, vel = _grid(bars)
    k, s, h = class_index("kick"), class_index("snare"), class_index("closed_hihat")
    for b in range(bars):
        o = b * BAR
        hits[o + np.arange(0, BAR, 3), h] = True
        vel[o + np.arange(0, BAR, 3), h] = [90, 60] * 4
        hits[[o, o + 12], k] = True
        vel[[o, o + 12], k] = 110
        hits[[o + 6, o + 18], s] = True
        vel[[o + 6, o + 18], s] = 105
    return score_from_grid(hits, vel, bpm=bpm, name="straight_eighths")


def tresillo(bars: int = 32, bpm: float = 96.0):
    """x--x--x- in 8ths (3+3+2): kick on steps 0, 9 and 18 of every bar."""
    hits, vel = _grid(bars)
    k = class_index("kick")
    for b in range(bars):
        hits[[b * BAR, b * BAR + 9, b * BAR + 18], k] = True
        vel[[b * BAR, b * BAR + 9, b * BAR + 18], k] = [110, 95, 95]
    return score_from_grid(hits, vel, bpm=bpm, name="tresillo")


def rock_song(bars: int = 16, bpm: float = 100.0):
    """A groove with a fill closing every four-bar phrase (the fills are where a player rushes)."""
    hits, vel = _grid(bars)
    k, s, h = class_index("kick"), class_index("snare"), class_index("closed_hihat")
    toms = [class_index(c) for c in ("high_tom", "mid_tom", "low_tom")]
    crash = class_index("crash")
    for b in range(bars):
        o = b * BAR
        fill = b % 4 == 3
        eighths = np.arange(0, 12 if fill else BAR, 3)
        hits[o + eighths, h] = True
        vel[o + eighths, h] = 80
        hits[[o, o + 9], k] = True
        vel[[o, o + 9], k] = 105
        hits[o + 6, s] = True
        vel[o + 6, s] = 105
        if fill:  # 8ths on the toms, high to low, over the last two beats
            for j, st in enumerate(range(12, BAR, 3)):
                hits[o + st, toms[min(j // 2, 2)]] = True
                vel[o + st, toms[min(j // 2, 2)]] = 100
        else:
            hits[o + 18, s] = True
            vel[o + 18, s] = 105
            hits[o + 15, k] = True
            vel[o + 15, k] = 90
        if b % 4 == 0:
            hits[o, crash] = True
            vel[o, crash] = 100
    return score_from_grid(hits, vel, bpm=bpm, name="rock_song")


# ----------------------------------------------------------------------------- the designs

def _tame_structure(bar: int, phase: float) -> float:
    """The partner's structure-dependent timing, ms: what a player does in this song, every time.

    Laid back on the backbeat, pushing the "and" of 4 into the next bar,
    rushing the fill bar that closes each phrase and settling back after it.
    """
    beat = phase * 4
    ms = 0.0
    if abs(beat - 1) < 1e-6 or abs(beat - 3) < 1e-6:
        ms += 14.0          # lays back on 2 and 4
    if abs(beat - 3.5) < 1e-6:
        ms -= 12.0          # pushes into the next bar
    if bar % 4 == 3 and beat >= 2:
        ms -= 18.0          # rushes the fill
    if bar % 4 == 0 and beat < 1:
        ms += 8.0           # settles back after it
    return ms


DESIGNS = {
    "morph": {
        "what": "straight 8ths against a partner swinging its off-beats by a third of an 8th (paper Fig. 1)",
        "score": straight_eighths, "partner": dict(classes=["closed_hihat"], instrument="guitar", swing=1 / 3,
                                                   jitter_ms=2.0, gain=0.0),
        "agent": "seq2seq", "takes": 3, "window_factor": 2.5,
        "learn": dict(cancel=True, centre="beats", margin=float("inf")),
    },
    "tresillo": {
        "what": "x--x--x- against a partner playing three even triplets per bar (paper 4.2)",
        "score": tresillo, "partner": dict(bar_positions=None, instrument="keys", jitter_ms=2.0, gain=0.0),
        "agent": "seq2seq", "takes": 3, "window_factor": 2.5,
        # Beat 4 (step 18) is one of the hits that must move: only the downbeat anchors the bar.
        "learn": dict(cancel=True, centre="downbeats", margin=float("inf")),
    },
    "tame": {
        "what": "a partner with structure-dependent timing plus noise, 10 takes (paper Fig. 2)",
        "score": rock_song, "partner": dict(classes=["kick", "snare", "closed_hihat", "high_tom", "mid_tom",
                                                     "low_tom"], instrument="guitar",
                                            structure_ms=_tame_structure, jitter_ms=4.0, gain=0.2),
        "agent": "lstm", "takes": 10, "window_factor": 3.0,
        "learn": dict(cancel=True),
    },
}


# ----------------------------------------------------------------------------- running

def _prepare(out: Path, name: str) -> Path:
    """A fresh experiment folder; only ever removes a folder an earlier run of it made."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise RolypolyError(f"{out}: exists and is not an experiment folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"experiment": name, "running": True}) + "\n")
    return out


def _partner(design: dict, score, seed: int) -> VirtualPartner:
    kw = dict(design["partner"])
    if "bar_positions" in kw:  # the tresillo's partner: three even notes per bar
        kw["bar_positions"] = [b + j / 3 for b in range(score.n_bars) for j in range(3)]
    return VirtualPartner(score, partner_offset_s=PARTNER_LEAD_S, seed=seed, **kw)


def take_figures(take_rows: list[dict], score) -> dict:
    """ms figures of one take: ŷ on beats / off-beats, diff spread."""
    from rolypoly.targets import beat_rows

    idx = take_rows["row"].astype(int)
    bar_ms = score.bar_ms[idx]
    yhat_ms = take_rows["yhat"] * bar_ms
    diff = take_rows["diff"] * bar_ms
    sounding = score.hits[idx].any(axis=1)
    on = beat_rows(score, idx) & sounding
    off8 = (score.step[idx] % 6 == 3) & sounding
    fin = np.isfinite(diff) & sounding  # a silent (off-beat) row's diff is no drum-partner offset

    def stat(x):
        return round(float(x), 3)

    return {
        "hits": int(sounding.sum()), "hits_with_partner": int(fin.sum()),
        "yhat_ms_mean": stat(yhat_ms[sounding].mean()), "yhat_ms_std": stat(yhat_ms[sounding].std()),
        "onbeat_yhat_ms_mean": stat(yhat_ms[on].mean()) if on.any() else None,
        "onbeat_yhat_ms_absmax": stat(np.abs(yhat_ms[on]).max()) if on.any() else None,
        "onbeat_yhat_ms_p90abs": stat(np.percentile(np.abs(yhat_ms[on]), 90)) if on.any() else None,
        "offbeat_yhat_ms_mean": stat(yhat_ms[off8].mean()) if off8.any() else None,
        "diff_ms_mean": stat(np.mean(diff[fin])) if fin.any() else None,
        "diff_ms_std": stat(np.std(diff[fin])) if fin.any() else None,
        "steps_yhat_ms": {int(s): round(float(yhat_ms[sounding & (score.step[idx] == s)].mean()), 3)
                          for s in np.unique(score.step[idx][sounding])},
    }


def run_experiment(name: str, out, *, takes: int | None = None, agent: str | None = None, seed: int = 0,
                   dataset=None, paper_ab: bool = False, progress=print) -> dict:
    """Run one experiment; returns (and writes as ``report.json``) its per-take figures.

    Parameters
    ----------
    name : "morph", "tresillo" or "tame"
    out : folder for the session, plots and report (replaced if an earlier run made it)
    takes : fine-tuning rounds (default: the design's; the report covers takes 0..takes)
    agent : "lstm" or "seq2seq" (default: the design's)
    dataset : GMD TakeSet for the forgetting check (tame; the morphs leave GMD feel on purpose)
    paper_ab : learn with the paper's defaults (A = B = 1, centred on all hits) instead of the
        design's cancelling A and B: for comparison
    """
    from rolypoly.take import read_take

    if name not in DESIGNS:
        raise RolypolyError(f"unknown experiment {name!r}; choose one of {', '.join(DESIGNS)}")
    design = DESIGNS[name]
    takes = design["takes"] if takes is None else int(takes)
    agent = agent or design["agent"]
    out = _prepare(Path(out), name)
    score = design["score"]()
    score_path = out / f"{score.name}.mid"
    write_midi(score, score_path)
    score = load_score(score_path)
    partner = _partner(design, score, seed)
    settings = EngineSettings(window_factor=design["window_factor"], partner_offset_s=PARTNER_LEAD_S)
    folder = out / "session"
    learn = dict(design["learn"])
    if paper_ab:
        learn.update(cancel=False, A=1.0, B=1.0, centre="all")
    use_dataset = dataset if learn.get("margin", 0.0) != float("inf") else None
    mse_cache = DatasetMSECache()  # a version's "before" is the "after" of the fine-tune that made it
    report = {"experiment": name, "what": design["what"], "agent": agent, "seed": seed,
              "window_factor": settings.window_factor, "learning": {k: (None if v == float("inf") else v)
                                                                    for k, v in learn.items()},
              "dataset_check": use_dataset is not None, "partner": partner.name, "takes": []}
    t_start = time.perf_counter()
    for k in range(takes + 1):
        t0 = time.perf_counter()
        summary = play_take(score_path, partner, SimClock(), session=folder, agent=agent, settings=settings,
                            mix=False, plot=False)
        take = read_take(summary["take_dir"])
        session = Session(folder)
        played = session.score_of_hash(take.header.score_hash)
        fig = take_figures(take.rows, played)
        # Virtual time advances by the real work done (SimClock): on a busy machine decisions come
        # late and play the previous offset, which changes what is learned. Counted, so a run
        # spoiled by load says so.
        fig.update(take=k, model_version=take.header.model_version, misses=int(take.end.misses) if take.end else 0,
                   take_seconds=round(time.perf_counter() - t0, 2))
        if k < takes:
            t1 = time.perf_counter()
            ft = session.finetune(dataset=use_dataset, mse_cache=mse_cache, **learn)
            fig["finetune"] = {"accepted": ft["accepted"], "reason": ft["reason"], "version": ft["version"],
                               "A": ft.get("A"), "B": ft.get("B"), "seconds": round(time.perf_counter() - t1, 2),
                               "offbeat": ft.get("offbeat"),
                               "train_loss": ft.get("losses", [None])[-1] if ft.get("losses") else None}
        report["takes"].append(fig)
        if progress:
            progress(_line(name, fig))
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["targets"] = _targets(name, report, partner, score)
    try:
        from rolypoly.session_plots import plot_session

        report["plots"] = [str(p) for p in plot_session(folder, out / "plots")]
    except ImportError:
        report["plots"] = []
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / MARKER).write_text(json.dumps({"experiment": name, "running": False}) + "\n")
    return report


def _line(name: str, fig: dict) -> str:
    ft = fig.get("finetune") or {}
    bits = [f"{name} take {fig['take']}", f"model v{fig['model_version']}",
            f"σ diff {fig['diff_ms_std']} ms", f"beats {fig['onbeat_yhat_ms_mean']} ms",
            f"off-beats {fig['offbeat_yhat_ms_mean']} ms"]
    if fig.get("misses"):
        bits.append(f"{fig['misses']} late decisions (busy machine?)")
    if ft:
        bits.append(("accepted" if ft["accepted"] else ft["reason"]) + f" ({ft['seconds']} s)")
    return " | ".join(bits)


def _targets(name: str, report: dict, partner, score) -> dict:
    takes = report["takes"]
    if name == "morph":
        swing = float(np.mean(partner._template["swing_ms"][partner._template["offbeat"]]))
        last = takes[min(3, len(takes) - 1)]
        reach = last["offbeat_yhat_ms_mean"] / swing
        beats = last["onbeat_yhat_ms_mean"]
        return {"swing_ms": round(swing, 3), "after_takes": last["take"],
                "offbeat_reach": round(reach, 3), "offbeat_target": 0.8,
                "onbeat_mean_ms": beats, "onbeat_p90abs_ms": last["onbeat_yhat_ms_p90abs"], "onbeat_target_ms": 5.0,
                "met": bool(reach >= 0.8 and abs(beats) <= 5.0)}
    if name == "tresillo":
        bar_ms = float(score.bar_ms[0])
        last = takes[min(3, len(takes) - 1)]
        want = {9: -bar_ms / BAR, 18: -2 * bar_ms / BAR}  # to 8 and 16 of 24: three even triplets
        reach = {s: last["steps_yhat_ms"].get(s, 0.0) / w for s, w in want.items()}
        return {"want_ms": {s: round(w, 3) for s, w in want.items()}, "after_takes": last["take"],
                "reach": {s: round(r, 3) for s, r in reach.items()}, "target": 0.8,
                "downbeat_ms": last["steps_yhat_ms"].get(0), "downbeat_target_ms": 5.0,
                "met": bool(all(r >= 0.8 for r in reach.values())
                            and abs(last["steps_yhat_ms"].get(0, 0.0)) <= 5.0)}
    s0 = takes[0]["diff_ms_std"]
    s3 = takes[min(3, len(takes) - 1)]["diff_ms_std"]
    later = [t["diff_ms_std"] for t in takes[4:]]
    return {"diff_std_take0_ms": s0, "diff_std_take3_ms": s3, "ratio_take3": round(s3 / s0, 3),
            "ratio_target": 0.6, "later_max_ratio": round(max(later) / s0, 3) if later else None,
            "met": bool(s3 / s0 <= 0.6 and all(x / s0 <= 0.6 for x in later))}


# ----------------------------------------------------------------------------- follow (live generation)

def follow_experiment(out=None, *, bars: int = 16, change_bar: int = 8, bpm: float = 96.0, seed: int = 0,
                      agent: str = "lstm", writer=None, score_path=None, instrument: str = "bass",
                      generate: dict | None = None) -> dict:
    """Do the drums follow a partner who changes riff? The issue's follow figures, on the simulated clock.

    A :class:`~rolypoly.lab.virtual_partner.VirtualPartner` plays straight 8ths, then from bar
    ``change_bar + 1`` (bar 9 by default) the syncopated :data:`rolypoly.demo.SYNCOPATED_RIFF`. The same engine
    plays two takes against it: the score as written (the fixed pattern), and bars written live
    (``--generate follow``). Alignment is the fraction of partner notes with a kick or snare
    within ±1 step of the score's grid (1/24 bar), as played (:func:`rolypoly.report.alignment_per_bar`).

    Returns ``{"follow": {alignment_before, alignment_after, alignment_fixed_pattern,
    bars_to_adapt, ...}, ...}``: before = bars 1..change_bar, after = from 2 bars after the
    change to the end; bars_to_adapt = bars from the change until a bar's alignment reaches
    1.5× the fixed pattern's after the change (None: never). The evaluation
    (``rolypoly evaluate live-groove``) calls this for its ``follow`` part.

    Parameters
    ----------
    out : folder for the sessions and takes (a temporary one, removed after, when None)
    writer : a loaded :class:`~rolypoly.generate.BarWriter` (default: the shipped models)
    score_path : the drum part (default: a rock beat, kick 1 and 3, snare 2 and 4, 8th hi-hats)
    generate : the generation keywords (mode, controls, fill_every) over ``mode="follow"``
    """
    import tempfile

    from rolypoly.take import read_take

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="rolypoly-follow-")
        out = Path(tmp.name) / "follow"
    out = _prepare(Path(out), "follow")
    try:
        if score_path is None:
            score_path = out / "rock.mid"
            write_midi(straight_eighths(bars, bpm), score_path)
        score = load_score(score_path)
        if score.n_bars < bars:
            raise RolypolyError(f"{score_path}: {score.n_bars} bars; the follow experiment needs {bars}")
        partner = VirtualPartner(score, bar_positions=riff_positions(bars, change_bar), instrument=instrument,
                                 accents=(1.0, 0.7, 0.85, 0.7), partner_offset_s=PARTNER_LEAD_S, seed=seed)
        settings = EngineSettings(partner_offset_s=PARTNER_LEAD_S)
        ks = [class_index("kick"), class_index("snare")]
        per_bar, takes = {}, {}
        for name, gen in (("fixed", None), ("follow", {"mode": "follow", **(generate or {}), "bars": bars,
                                                        **({"writer": writer} if writer is not None else {})})):
            t0 = time.perf_counter()
            summary = play_take(score_path, partner, SimClock(), session=out / f"session-{name}", agent=agent,
                                settings=settings, mix=False, plot=False, generate=gen)
            take = read_take(summary["take_dir"])
            rows = take.rows
            hit = rows["features"][:, ks].max(axis=1) > 0.5
            notes = partner.notes[partner.notes["decided"]]
            bar_s = float(score.bar_ms[0]) / 1000.0
            per_bar[name] = alignment_per_bar(notes["played"], notes["bar"], rows["played"], hit, bar_s, bars)
            takes[name] = {"take_dir": summary["take_dir"], "rows": summary["rows"], "misses": summary["misses"],
                           "stopped_early": summary["stopped_early"], "seconds": round(time.perf_counter() - t0, 2),
                           **({"generated": summary["generated"]} if "generated" in summary else {})}
        before = slice(0, change_bar)
        after = slice(min(change_bar + 2, bars), bars)
        fixed_after = float(np.nanmean(per_bar["fixed"][after]))
        aligned = np.flatnonzero(per_bar["follow"][change_bar:] >= 1.5 * fixed_after - 1e-9)
        follow = {
            "alignment_before": round(float(np.nanmean(per_bar["follow"][before])), 4),
            "alignment_after": round(float(np.nanmean(per_bar["follow"][after])), 4),
            "alignment_fixed_pattern": round(fixed_after, 4),
            "alignment_fixed_pattern_before": round(float(np.nanmean(per_bar["fixed"][before])), 4),
            "bars_to_adapt": int(aligned[0]) if len(aligned) else None,
            "per_bar": {k: [None if np.isnan(x) else round(float(x), 3) for x in v] for k, v in per_bar.items()},
        }
        follow["ratio_after"] = round(follow["alignment_after"] / fixed_after, 3) if fixed_after > 0 else None
        beat_kept = all(t["rows"] > 0 and not t["stopped_early"] for t in takes.values())
        met = bool(follow["ratio_after"] is not None and follow["ratio_after"] >= 1.5
                   and follow["bars_to_adapt"] is not None and follow["bars_to_adapt"] <= 2 and beat_kept)
        report = {"experiment": "follow", "bars": bars, "change_bar": change_bar + 1, "bpm": bpm, "seed": seed,
                  "partner": partner.name, "follow": follow, "takes": takes, "beat_never_stopped": beat_kept,
                  "targets": {"ratio_target": 1.5, "bars_to_adapt_target": 2, "met": met}}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / MARKER).write_text(json.dumps({"experiment": "follow", "running": False}) + "\n")
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()
