"""Reading safetensors weight files: one checked reader for every model (pickles are never opened).

Torch models read tensors (``framework="pt"``); the onset detector, which
runs in the audio callback without torch, reads numpy arrays
(``framework="np"``).
"""
from __future__ import annotations

import os

import numpy as np

from rolypoly.errors import CheckpointError


def read_weights(path, *, missing_hint: str = "", framework: str = "pt") -> tuple[dict, dict]:
    """Header metadata and tensors of a safetensors file, checked; pickles are never opened.

    Raises
    ------
    CheckpointError
        One line naming the file: missing, larger than
        :data:`~rolypoly.limits.MAX_WEIGHTS_BYTES`, not safetensors, or
        holding NaN/infinite values.

    Examples
    --------
    >>> read_weights("/no/such/file.safetensors", framework="np")
    Traceback (most recent call last):
    ...
    rolypoly.errors.CheckpointError: /no/such/file.safetensors: no such weights file
    """
    from safetensors import safe_open

    from rolypoly.limits import MAX_WEIGHTS_BYTES, check_file_size

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file{missing_hint}")
    check_file_size(path, MAX_WEIGHTS_BYTES, "weights file", error=CheckpointError)
    try:
        with safe_open(path, framework=framework) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:
        raise CheckpointError(f"{path}: not a safetensors weights file (pickled checkpoints are "
                              "refused: they can run code)") from None
    for k, v in tensors.items():
        finite = np.isfinite(v).all() if framework == "np" else bool(v.isfinite().all())
        if not finite:
            raise CheckpointError(f"{path}: weights contain NaN or infinite values ({k})")
    return header, tensors
