"""The feature row: what the timing agent knows about each hit.

One row per score row, 15 values (rolypoly~ paper, section 3.1)::

    0-8   hits          which of the 9 drum classes sound (0/1)
    9     duration_ms   time to the next row
    10    tempo_bpm     local tempo
    11    timesig       local time signature as one value (3/4, 6/8 -> 0.75)
    12    beat_phase    position in the bar, [0, 1)
    13    descriptor    partner descriptor at the previous hit (0..1)
    14    diff_prev     drum-partner offset of the previous hit, fraction of a bar

Columns 0-12 come from the score; 13-14 from the partner, so they are zero
without one (offline humanization, Groove MIDI Dataset pretraining).

Normalisation lives here too and travels with the model weights: a model
stores the ``mean`` and ``scale`` it was trained with (see
:func:`fit_normalisation`) and applies ``(row - mean) / scale`` itself.

Examples
--------
>>> from rolypoly.features import score_features, N_FEATURES
>>> from rolypoly.paths import DEMO_SCORE
>>> from rolypoly.score import load_score
>>> score = load_score(DEMO_SCORE)
>>> X = score_features(score)
>>> X.shape == (len(score), N_FEATURES)
True
"""
from __future__ import annotations

import numpy as np

from .drum_map import N_CLASSES

HITS = slice(0, N_CLASSES)
DURATION, TEMPO, TIMESIG, PHASE, DESCRIPTOR, DIFF = range(N_CLASSES, N_CLASSES + 6)
N_FEATURES = N_CLASSES + 6
#: Columns known before the performance: what the Seq2Seq encoder reads.
N_SCORE_FEATURES = DESCRIPTOR
NAMES = (*[f"hit_{i}" for i in range(N_CLASSES)], "duration_ms", "tempo_bpm", "timesig",
         "beat_phase", "descriptor", "diff_prev")

#: Offsets (targets, ŷ, diff) are fractions of a bar, around 0.01: the agents
#: predict them multiplied by this, so losses and weights are of order one.
OFFSET_SCALE = 100.0

#: Partner columns have no data in drums-only pretraining, so their scale is
#: fixed by what they mean: descriptors are already in 0..1, and a diff of
#: 1/48 bar (half a grid step) is a big drum-partner offset.
_PARTNER_SCALE = {DESCRIPTOR: 1.0, DIFF: 1.0 / 48}
#: Long silences make durations heavy-tailed; beyond this they all mean "a long wait".
MAX_DURATION_MS = 4000.0


def score_features(score) -> np.ndarray:
    """Feature rows of a score with the partner columns at zero.

    Parameters
    ----------
    score : rolypoly.score.Score

    Returns
    -------
    np.ndarray, shape (len(score), 15), float32
    """
    X = np.zeros((len(score), N_FEATURES), dtype=np.float32)
    X[:, HITS] = score.hits
    X[:, DURATION] = np.minimum(score.duration_ms, MAX_DURATION_MS)
    X[:, TEMPO] = score.tempo_bpm
    X[:, TIMESIG] = score.timesig
    X[:, PHASE] = score.beat_phase
    return X


def fill_partner(row: np.ndarray, descriptor: float, diff_prev: float) -> np.ndarray:
    """Write the partner columns of one feature row in place (live path: no allocation)."""
    row[DESCRIPTOR] = descriptor
    row[DIFF] = diff_prev
    return row


def fit_normalisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale for each column, from training rows.

    Hit columns stay 0/1 (mean 0, scale 1); score columns are standardised
    on the data; partner columns get their fixed scale.

    Returns
    -------
    mean, scale : np.ndarray, shape (15,), float32
    """
    mean = np.zeros(N_FEATURES, dtype=np.float32)
    scale = np.ones(N_FEATURES, dtype=np.float32)
    for c in (DURATION, TEMPO, TIMESIG, PHASE):
        mean[c] = X[:, c].mean()
        scale[c] = max(float(X[:, c].std()), 1e-3)
    for c, s in _PARTNER_SCALE.items():
        scale[c] = s
    return mean, scale
