"""The timing grid a score is quantised to.

rolypoly quantises a drum part to 24 steps per bar (rolypoly~ paper,
footnote 11): 24 holds 16ths in 3/4 and 6/8, 8th-note triplets and 16ths in
4/4 (the "e" and "a" land half-way between steps and round to a neighbour),
and swing. A step is always 1/24 of the bar it is in, whatever the meter.

>>> from rolypoly.grid import STEPS_PER_BAR, step_of
>>> step_of(0.5)
12
"""
from __future__ import annotations

STEPS_PER_BAR = 24


def step_of(bar_fraction: float) -> int:
    """Nearest grid step of a position given as a fraction of a bar (may be 24)."""
    return int(round(bar_fraction * STEPS_PER_BAR))


def timesig_value(numerator: int, denominator: int) -> float:
    """A time signature as one value: the bar length in whole notes.

    3/4 and 6/8 both give 0.75, 4/4 gives 1.0, 6/4 gives 1.5.

    >>> timesig_value(6, 8)
    0.75
    """
    return numerator / denominator
