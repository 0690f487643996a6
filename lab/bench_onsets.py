"""Onset benchmark: rolypoly's live detector against aubio's defaults.

Both detectors hear the same synthetic partner parts, whose onsets are
known by construction (:mod:`rolypoly.lab.partner_audio`): clicks, plucked
guitar, finger bass and electric keys, played with human timing, some with
background noise, some legato so that notes overlap.

* rolypoly's detector runs exactly as live: 64-sample blocks through one
  :class:`~rolypoly.onsets.OnsetDetector`.
* aubio runs ``aubio.onset('default', 1024, 512, sr)`` with its default
  threshold, silence gate and minimum inter-onset interval.

Scores
------
latency
    time the onset became usable minus the time it truly happened (ms),
    over correctly detected onsets: median and 95th percentile.
precision, recall, F1
    detections matched one-to-one to true onsets within +-25 ms, greedily,
    nearest pairs first.
timing error
    median and 95th percentile of |estimated attack time - true time| (ms):
    how well the reported onset time itself is placed (separate from when
    it became available).

Run it::

    rolypoly bench onsets --json onsets.json [--quick] [--sample-rate HZ] [-v]

>>> from rolypoly.lab.bench_onsets import match_onsets
>>> match_onsets([1.0, 2.0], [1.01, 1.5])
[(0, 0)]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from rolypoly.onsets import OnsetDetector, detect
from rolypoly.lab.partner_audio import humanized_part

__all__ = ["FIXTURES", "QUICK_FIXTURES", "make_fixture", "match_onsets", "score", "run"]

TOLERANCE_S = 0.025
BLOCK_SIZE = 64
TARGET_MEDIAN_LATENCY_MS = 3.0

# name -> humanized_part() arguments. Seeds differ so fixtures differ.
FIXTURES: dict[str, dict] = {
    "clicks": dict(instrument="clicks", bpm=120, steps_per_beat=4, density=0.6,
                   jitter_ms=6, velocity_range=(0.1, 1.0), seed=11),
    "guitar": dict(instrument="guitar", bpm=110, steps_per_beat=2, density=0.75,
                   jitter_ms=12, legato=0.8, seed=12),
    "guitar_noisy_swing": dict(instrument="guitar", bpm=96, steps_per_beat=2, density=0.8,
                               jitter_ms=15, swing=0.25, legato=0.9, noise_db=-45, seed=13),
    "guitar_legato": dict(instrument="guitar", bpm=120, steps_per_beat=4, density=0.55,
                          jitter_ms=10, legato=1.8, seed=14),
    "bass": dict(instrument="bass", bpm=100, steps_per_beat=2, density=0.8,
                 jitter_ms=12, legato=0.85, seed=15),
    "bass_legato_noisy": dict(instrument="bass", bpm=112, steps_per_beat=4, density=0.5,
                              jitter_ms=10, legato=1.2, noise_db=-50, seed=16),
    "keys": dict(instrument="keys", bpm=90, steps_per_beat=2, density=0.7,
                 jitter_ms=15, legato=0.9, seed=17),
    "keys_legato_noisy": dict(instrument="keys", bpm=105, steps_per_beat=4, density=0.5,
                              jitter_ms=12, legato=1.6, noise_db=-45, seed=18),
}
QUICK_FIXTURES = ("clicks", "guitar_legato", "bass_legato_noisy")


def make_fixture(name: str, sample_rate: int = 48000, bars: int = 8):
    """Render one named fixture: (audio, true onset times in s).

    Examples
    --------
    >>> audio, onsets = make_fixture("clicks", sample_rate=16000, bars=1)
    >>> len(onsets) > 0
    True
    """
    return humanized_part(bars=bars, sample_rate=sample_rate, **FIXTURES[name])


def match_onsets(truth, found, tolerance: float = TOLERANCE_S):
    """Greedy one-to-one matching, nearest pairs first.

    Parameters
    ----------
    truth, found : sequence of float
        Onset times (s).
    tolerance : float
        Largest allowed |found - truth| (s).

    Returns
    -------
    list of (truth_index, found_index)

    Examples
    --------
    >>> match_onsets([0.0, 0.1], [0.095, 0.01, 0.5])
    [(1, 0), (0, 1)]
    """
    truth = np.asarray(truth, dtype=float)
    found = np.asarray(found, dtype=float)
    if len(truth) == 0 or len(found) == 0:
        return []
    dist = np.abs(truth[:, None] - found[None, :])
    ti, fi = np.nonzero(dist <= tolerance)
    order = np.argsort(dist[ti, fi], kind="stable")
    used_t, used_f, pairs = set(), set(), []
    for t, f in zip(ti[order], fi[order]):
        if t not in used_t and f not in used_f:
            used_t.add(int(t))
            used_f.add(int(f))
            pairs.append((int(t), int(f)))
    return pairs


def _summary(tp: int, n_true: int, n_found: int, latencies, errors) -> dict:
    precision = tp / n_found if n_found else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    lat = np.asarray(latencies, dtype=float)
    err = np.asarray(errors, dtype=float)
    return {
        "n_true": int(n_true), "n_detected": int(n_found), "true_positives": int(tp),
        "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
        "latency_median_ms": round(float(np.median(lat)), 3) if len(lat) else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
        "timing_error_median_ms": round(float(np.median(np.abs(err))), 3) if len(err) else None,
        "timing_error_p95_ms": round(float(np.percentile(np.abs(err), 95)), 3) if len(err) else None,
    }


def score(truth, onset_times, available_times, tolerance: float = TOLERANCE_S) -> dict:
    """Precision/recall/F1 and latency of one detector on one fixture.

    Examples
    --------
    >>> s = score([1.0], [1.001], [1.002])
    >>> s["f1"], s["latency_median_ms"]
    (1.0, 2.0)
    """
    pairs = match_onsets(truth, onset_times, tolerance)
    truth = np.asarray(truth, dtype=float)
    onset_times = np.asarray(onset_times, dtype=float)
    available_times = np.asarray(available_times, dtype=float)
    lat = [1000.0 * (available_times[f] - truth[t]) for t, f in pairs]
    err = [1000.0 * (onset_times[f] - truth[t]) for t, f in pairs]
    out = _summary(len(pairs), len(truth), len(onset_times), lat, err)
    out["_latencies"] = lat
    out["_errors"] = err
    return out


def _pool(per_fixture: dict) -> dict:
    tp = sum(s["true_positives"] for s in per_fixture.values())
    n_true = sum(s["n_true"] for s in per_fixture.values())
    n_found = sum(s["n_detected"] for s in per_fixture.values())
    lat = [x for s in per_fixture.values() for x in s["_latencies"]]
    err = [x for s in per_fixture.values() for x in s["_errors"]]
    return _summary(tp, n_true, n_found, lat, err)


def run(json_path=None, sample_rate: int = 48000, quick: bool = False,
        detector_params: dict | None = None, fixtures=None, verbose: bool = False) -> dict:
    """Run the benchmark and return (and optionally save) the results.

    Parameters
    ----------
    json_path : str or None
        Where to write the JSON report.
    sample_rate : int
        Rate the fixtures are rendered at and both detectors run at.
    quick : bool
        Three short fixtures only (for tests).
    detector_params : dict or None
        Overrides for :class:`~rolypoly.onsets.OnsetDetector`.
    fixtures : sequence of str or None
        Names from :data:`FIXTURES` (default: all, or the quick set).
    verbose : bool
        Print one progress line per fixture to stderr.

    Returns
    -------
    dict
        ``{"config", "fixtures", "detectors": {"rolypoly", "aubio"} ->
        {"overall", "per_fixture"}, "targets"}``.
    """
    params = dict(detector_params or {})
    names = list(fixtures) if fixtures else list(QUICK_FIXTURES if quick else FIXTURES)
    bars = 2 if quick else 8
    per = {"rolypoly": {}, "aubio": {}}
    fixture_info = {}
    elapsed = {"rolypoly": 0.0, "aubio": 0.0}
    total_audio_s = 0.0
    for name in names:
        audio, truth = make_fixture(name, sample_rate=sample_rate, bars=bars)
        total_audio_s += len(audio) / sample_rate
        fixture_info[name] = {"seconds": round(len(audio) / sample_rate, 2), "onsets": int(len(truth)),
                              **{k: v for k, v in FIXTURES[name].items() if k != "instrument"},
                              "instrument": FIXTURES[name]["instrument"]}
        t0 = time.perf_counter()
        on, avail, _ = detect(audio, sample_rate=sample_rate, block_size=BLOCK_SIZE, **params)
        elapsed["rolypoly"] += time.perf_counter() - t0
        per["rolypoly"][name] = score(truth, on, avail)
        t0 = time.perf_counter()
        a_on, a_avail = aubio_onsets(audio, sample_rate)
        elapsed["aubio"] += time.perf_counter() - t0
        per["aubio"][name] = score(truth, a_on, a_avail)
        if verbose:
            r, a = per["rolypoly"][name], per["aubio"][name]
            print(f"{name:20s} rolypoly F1 {r['f1']:.3f} lat {r['latency_median_ms']} ms | "
                  f"aubio F1 {a['f1']:.3f} lat {a['latency_median_ms']} ms", file=sys.stderr)

    detectors = {}
    for det, scores in per.items():
        detectors[det] = {
            "overall": _pool(scores),
            "per_fixture": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                            for k, v in scores.items()},
            "realtime_factor": round(total_audio_s / elapsed[det], 1) if elapsed[det] else None,
        }
    detectors["rolypoly"]["params"] = OnsetDetector(sample_rate=sample_rate, **params).params()
    detectors["rolypoly"]["params"]["block_size"] = BLOCK_SIZE
    detectors["aubio"]["params"] = {"method": "default", "buf_size": 1024, "hop_size": 512}

    ours, theirs = detectors["rolypoly"]["overall"], detectors["aubio"]["overall"]
    result = {
        "config": {"sample_rate": sample_rate, "tolerance_ms": TOLERANCE_S * 1000,
                   "quick": bool(quick), "bars": bars, "audio_seconds": round(total_audio_s, 2)},
        "fixtures": fixture_info,
        "detectors": detectors,
        "targets": {
            "median_latency_ms_max": TARGET_MEDIAN_LATENCY_MS,
            "median_latency_met": ours["latency_median_ms"] is not None
            and ours["latency_median_ms"] <= TARGET_MEDIAN_LATENCY_MS,
            "f1_at_least_aubio": ours["f1"] >= theirs["f1"],
        },
    }
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


def aubio_onsets(samples: np.ndarray, sr: int, buf: int = 1024, hop: int = 512,
                 method: str = "default"):
    """Baseline: aubio's onset detector with its default parameters.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio.
    sr : int
        Sample rate.
    buf, hop : int
        aubio window and hop sizes (aubio's defaults).
    method : str
        aubio onset method ('default' is high-frequency content).

    Returns
    -------
    onset_times : np.ndarray
        aubio's onset times in seconds (its own delay-corrected estimate).
    available_times : np.ndarray
        End of the hop in which aubio reported each onset, in seconds.

    Examples
    --------
    >>> from rolypoly.lab.partner_audio import plucked_guitar
    >>> y = plucked_guitar([0.5, 1.0], sample_rate=44100)
    >>> on, avail = aubio_onsets(y, 44100)
    >>> bool(np.all(avail >= on))
    True
    """
    import aubio

    x = np.asarray(samples, dtype=np.float32)
    pad = (-len(x)) % hop
    if pad:
        x = np.concatenate([x, np.zeros(pad, dtype=np.float32)])
    detector = aubio.onset(method, buf, hop, int(sr))
    onsets, available = [], []
    for i in range(0, len(x), hop):
        if detector(np.ascontiguousarray(x[i:i + hop]))[0]:
            onsets.append(detector.get_last() / sr)
            available.append((i + hop) / sr)
    return np.asarray(onsets), np.asarray(available)
