"""Where a partner recording starts against the score: alignment by onsets.

A recording of the partner seldom starts on the score's first beat: a DAW
export begins with silence or a count-in, a phone recording wherever the
button was pressed. Played against the score from sample 0, such a take
hears the partner on a fraction of the hits and learns from noise. So the
recording is aligned to the score by itself before the take:

1. the score's first :data:`ALIGN_BARS` bars give *anchors*: the notated
   times of their rows, each weighted by what is hit (kick and snare most,
   cymbals least: a partner plays with the kick and the backbeat more than
   with the hi-hat) and where (the downbeat most), so that an 8th-note shift
   that puts a bass's notes on hi-hat-only rows scores lower than the truth;
2. the recording's onsets (the live detector's, :mod:`rolypoly.onsets`) are
   cross-correlated with the anchors: every lag that puts one onset exactly
   on one anchor is a candidate, and a candidate scores the anchors' weights,
   each times how close its nearest onset is (1 on it, 0 at
   :data:`TOLERANCE_S` or further);
3. among the lags that score within a tenth of a bar's worth of matches of
   the best, the smallest wins (a groove that repeats matches as well a bar
   later); at a smaller lag, a recording that starts with silence or a
   count-in loses the first bar's matches, or the off-beats of the count-in
   bar, so its lead is kept;
4. the lag is refined to the weighted median of the matched onsets' distances
   to their anchors, so the partner's jitter averages out.

The offset found includes the partner's average lean: a bass that plays
12 ms behind the beat throughout is aligned so that it is on it (from its
onsets alone, a late partner and a later start cannot be told apart).

Examples
--------
>>> import numpy as np
>>> times = np.arange(16) * 0.5                      # 8th notes at 60 bpm: 2 bars of 4/4
>>> weights = np.where(np.arange(16) % 2 == 0, 3.0, 1.0)  # the beats count more
>>> onsets = 1.75 + times[::2] + np.r_[0.004, -0.003, 0.002, 0.0, -0.001, 0.003, -0.002, 0.001]
>>> offset, matched = align_onsets(onsets, times, weights, max_lag=6.0, bars=2)
>>> round(offset, 3), round(matched, 2)
(1.75, 0.75)
"""
from __future__ import annotations

import numpy as np

from .drum_map import class_index
from .grid import STEPS_PER_BAR

__all__ = ["align_onsets", "score_anchors", "align_recording", "ALIGN_BARS", "TOLERANCE_S"]

#: Bars at the start of the score whose rows the partner's onsets are matched with.
ALIGN_BARS = 8
#: An onset this far from an anchor or further does not match it (s).
TOLERANCE_S = 0.035
#: The score may start up to this many of its first bars after the partner's first onset (a count-in).
COUNT_IN_BARS = 2
#: Lags scoring within this many bars' worth of matches of the best are near-equal: the smallest wins.
TIE_BARS = 0.1
#: Onsets are looked for this far into a recording at most before giving up on finding the partner (s).
MAX_LEAD_S = 30.0

# How much a row counts by what it hits (its loudest class): a partner locks to kick and snare.
_CLASS_WEIGHT = np.ones(9)
for _name, _w in (("kick", 3.0), ("snare", 3.0), ("low_tom", 2.0), ("mid_tom", 2.0), ("high_tom", 2.0)):
    _CLASS_WEIGHT[class_index(_name)] = _w


def score_anchors(score, bars: int = ALIGN_BARS) -> tuple[np.ndarray, np.ndarray]:
    """Notated times and weights of the rows of a score's first ``bars`` bars.

    Parameters
    ----------
    score : rolypoly.score.Score
    bars : int
        How many bars from the start.

    Returns
    -------
    times : np.ndarray
        Seconds from score time zero, one per row.
    weights : np.ndarray
        Kick and snare 3, toms 2, cymbals 1 (the row's heaviest class),
        times 2 on the downbeat, 1.5 on the half bar, 1.25 on the other
        quarters of a 24-step bar.

    Examples
    --------
    >>> from rolypoly.score import load_score
    >>> from rolypoly.paths import DEMO_SCORE
    >>> times, weights = score_anchors(load_score(DEMO_SCORE), bars=1)
    >>> times[:3].tolist(), weights[:3].tolist()
    ([0.0, 0.3125, 0.625], [6.0, 1.0, 3.75])
    """
    rows = np.flatnonzero(score.bar < bars)
    hits = np.asarray(score.hits[rows], bool)
    what = np.where(hits, _CLASS_WEIGHT, 0.0).max(axis=1)
    step = np.asarray(score.step[rows])
    where = np.select([step == 0, step % (STEPS_PER_BAR // 2) == 0, step % (STEPS_PER_BAR // 4) == 0],
                      [2.0, 1.5, 1.25], 1.0)
    return np.asarray(score.onset_s[rows], np.float64), what * where


def _nearest(onsets: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Signed distance from each time in ``at`` to its nearest onset (onsets sorted, not empty)."""
    i = np.clip(np.searchsorted(onsets, at), 1, len(onsets) - 1) if len(onsets) > 1 else np.zeros(at.shape, int)
    before, after = onsets[i - 1] - at, onsets[i] - at
    return np.where(np.abs(before) < np.abs(after), before, after) if len(onsets) > 1 else after


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, cum[-1] / 2)])


def align_onsets(onsets, times, weights, *, max_lag: float, min_lag: float = 0.0, bars: float = 1.0,
                 tolerance: float = TOLERANCE_S) -> tuple[float, float]:
    """Seconds into a recording where score time zero falls, from onsets and score anchors.

    Parameters
    ----------
    onsets : array_like
        Partner onset times, seconds from the start of the recording.
    times, weights : array_like
        Anchors: notated times (seconds from score zero) and how much each
        counts (:func:`score_anchors`).
    max_lag, min_lag : float
        The range searched, seconds into the recording.
    bars : float
        How many bars the anchors span: lags within :data:`TIE_BARS` of a
        bar's worth of matches of the best are near-equal, and the smallest
        of them wins.
    tolerance : float
        An onset this far from an anchor or further does not match it (s).

    Returns
    -------
    offset : float
        Seconds into the recording where score time zero falls (NaN when
        there are no onsets or anchors in reach).
    matched : float
        Fraction of the anchors' weight with a partner onset within
        ``tolerance`` at that offset (0..1).

    Examples
    --------
    Two bars of rock 8ths at 120 bpm (kick, hi-hat, snare, kick, kick, hi-hat,
    snare, hi-hat) and a bass on the kicks and snares, after a second of
    silence and a count-in of four clicks on the beats. With the count-in on
    the first bar, that bar's off-beat kick has no note, so the lag a bar
    later, where the bass starts, wins:

    >>> import numpy as np
    >>> times = np.arange(16) * 0.25
    >>> weights = np.tile([6.0, 1.0, 3.75, 3.0, 4.5, 1.0, 3.75, 1.0], 2)   # as score_anchors gives
    >>> bass = 3.0 + times[[0, 2, 3, 4, 6, 8, 10, 11, 12, 14]]
    >>> count_in = 1.0 + np.array([0.0, 0.5, 1.0, 1.5])
    >>> offset, matched = align_onsets(np.r_[count_in, bass], times, weights, max_lag=5.0, bars=2)
    >>> round(offset, 3), round(matched, 3)
    (3.0, 0.875)
    """
    onsets = np.sort(np.asarray(onsets, np.float64))
    times, weights = np.asarray(times, np.float64), np.asarray(weights, np.float64)
    if not len(onsets) or not len(times) or not weights.sum() > 0:
        return float("nan"), 0.0
    # Every lag that puts one onset exactly on one anchor (within the range), to 0.1 ms.
    lags = (onsets[:, None] - times[None, :]).ravel()
    lags = np.unique(np.round(lags[(lags >= min_lag - tolerance) & (lags <= max_lag)], 4))
    if not len(lags):
        return float("nan"), 0.0
    closeness = np.clip(1.0 - np.abs(_nearest(onsets, times[None, :] + lags[:, None])) / tolerance, 0.0, None)
    score = closeness @ weights
    best = float(score.max())
    if best <= 0:
        return float("nan"), 0.0
    lag = float(lags[np.flatnonzero(score >= best - TIE_BARS * best / max(bars, 1.0))[0]])
    # Refine: the weighted median of the matched onsets' distances (twice: the matches may change).
    for _ in range(2):
        d = _nearest(onsets, times + lag)
        ok = np.abs(d) < tolerance
        if ok.any():
            lag += _weighted_median(d[ok], weights[ok])
    ok = np.abs(_nearest(onsets, times + lag)) < tolerance
    return lag, float(weights[ok].sum() / weights.sum())


def recording_onsets(audio, sample_rate: int, *, after_first: float, within: float = MAX_LEAD_S,
                     block: int = 4096, **detector) -> np.ndarray:
    """Onset times (s) of a recording, by the live detector, until ``after_first`` s past the first one.

    Reading stops there (or at ``within`` s when no onset has come by then):
    the alignment needs only the recording's start.

    Examples
    --------
    >>> x = np.zeros(48000 * 3, np.float32); x[[24000, 48000, 96000]] = 0.8
    >>> recording_onsets(x, 48000, after_first=1.0).tolist()
    [0.5, 1.0]
    """
    from .onsets import OnsetDetector

    audio = np.asarray(audio, np.float32)
    det = OnsetDetector(sample_rate=sample_rate, max_block=block, **detector)
    stop, found = min(len(audio), int(within * sample_rate)), []
    a = 0
    while a < stop:
        events = det.process(audio[a:min(a + block, stop)])
        if len(events):
            if not found:
                stop = min(len(audio), int(events["sample"][0] + after_first * sample_rate))
            found.append(events["sample"].copy())
        a += block
    onsets = np.concatenate(found) / sample_rate if found else np.zeros(0)
    return onsets[onsets <= onsets[0] + after_first] if len(onsets) else onsets


def align_recording(score, audio, sample_rate: int, *, bars: int = ALIGN_BARS,
                    detector: dict | None = None) -> tuple[float, float]:
    """Where ``score`` starts in a partner recording (s), and the fraction of its anchors matched.

    The recording's first onsets are found with the live detector: only as
    far as the alignment needs (the first onset, a count-in of up to
    :data:`COUNT_IN_BARS` bars, then the anchors' span). The score may start
    anywhere from the recording's start to :data:`COUNT_IN_BARS` bars after
    the first onset. NaN when no onset is found in the first
    :data:`MAX_LEAD_S` seconds.

    Examples
    --------
    >>> from rolypoly.audio_io import load_audio
    >>> from rolypoly.paths import DEMO_PARTNER, DEMO_SCORE
    >>> from rolypoly.score import load_score
    >>> offset, matched = align_recording(load_score(DEMO_SCORE), load_audio(DEMO_PARTNER), 48000)
    >>> round(offset, 2)                       # recorded 0.5 s before the score, the bass 12 ms laid back
    0.51
    """
    times, weights = score_anchors(score, bars)
    if not len(times):
        return float("nan"), 0.0
    count_in = COUNT_IN_BARS * float(score.bar_ms[0]) / 1000.0
    span = float(times[-1]) + TOLERANCE_S
    onsets = recording_onsets(audio, sample_rate, after_first=count_in + span, **(detector or {}))
    if not len(onsets):
        return float("nan"), 0.0
    max_lag = float(onsets[0]) + count_in
    return align_onsets(onsets, times, weights, max_lag=max_lag, bars=min(bars, score.n_bars))
