"""Synthetic partner parts for the lab's fixtures (clicks, plucked guitar, finger bass, electric keys).

The instruments live with the onset network's training data,
:mod:`rolypoly.pretrain.synthetic_partner` (the network also learns from
them, on other seeds); the lab's benchmarks, experiments and virtual
partners reach them here.

>>> from rolypoly.lab.partner_audio import humanized_part
>>> audio, onsets = humanized_part("guitar", bars=1, seed=3)
>>> audio.dtype.name, len(onsets) > 0
('float32', True)
"""
from rolypoly.pretrain.synthetic_partner import *  # noqa: F401,F403
from rolypoly.pretrain.synthetic_partner import __all__  # noqa: F401
