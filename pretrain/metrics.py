"""Timing error figures, as in rolypoly~ Table 1.

>>> timing_metrics(np.zeros(2), np.array([0.01, -0.01]), np.array([2000., 2000.]), np.ones(2))
{'mse_bar': 0.0001, 'mse_16th': 0.0256, 'mae_ms': 20.0}
"""
from __future__ import annotations

import numpy as np


def timing_metrics(pred, target, bar_ms, timesig) -> dict:
    """MSE in bars², MSE in 16th notes² and MAE in ms of predicted offsets.

    Parameters
    ----------
    pred, target : offsets as fractions of a bar
    bar_ms : bar length of each row in ms (to express errors in time)
    timesig : time signature value of each row (a bar holds 16 × timesig 16ths)
    """
    err = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return {
        "mse_bar": round(float(np.mean(err ** 2)), 9),
        "mse_16th": round(float(np.mean((err * 16 * np.asarray(timesig)) ** 2)), 6),
        "mae_ms": round(float(np.mean(np.abs(err) * np.asarray(bar_ms))), 3),
    }
