"""Reading partner recordings: one place that turns a file into mono samples at the engine's rate.

>>> x = load_audio("bass.flac", 48000)   # doctest: +SKIP
"""
from __future__ import annotations

import math
import os

import numpy as np

from rolypoly.errors import RolypolyError


def load_audio(path, sample_rate: int = 48000) -> np.ndarray:
    """A WAV/FLAC (anything libsndfile reads) as mono float32 at ``sample_rate``.

    Channels are averaged; another rate is converted with
    ``scipy.signal.resample_poly`` (linear phase, delay compensated, so onset
    times do not move). Problems raise :class:`RolypolyError` on one line
    naming the file.
    """
    import soundfile

    name = os.fspath(path)
    if not os.path.exists(name):
        raise RolypolyError(f"{name}: no such file")
    if os.path.isdir(name):
        raise RolypolyError(f"{name}: is a directory, not an audio file")
    try:
        audio, file_rate = soundfile.read(name, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for bad files
        raise RolypolyError(f"{name}: cannot read audio ({_problem(exc)})") from None
    if audio.shape[0] == 0:
        raise RolypolyError(f"{name}: audio file is empty")
    mono = audio.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise RolypolyError(f"{name}: audio contains NaN or infinite samples")
    if file_rate != sample_rate:
        import scipy.signal

        g = math.gcd(int(file_rate), int(sample_rate))
        mono = scipy.signal.resample_poly(mono, sample_rate // g, file_rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _problem(exc: Exception) -> str:
    """First line of an exception message, without a repeated file path."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libsndfile says "Error opening '<path>': <reason>" -- keep the reason.
    if ": " in text and text.lower().startswith("error opening"):
        text = text.split(": ", 1)[1]
    return text.rstrip(".").lower() if text[:1].isupper() and not text[:2].isupper() else text.rstrip(".")


def write_wav(path, audio: np.ndarray, sr: int, subtype: str = "FLOAT") -> None:
    """Write mono or (frames, channels) audio to a WAV file.

    32-bit float by default so a fixture round-trips bit-exactly.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "part.wav")
    >>> write_wav(p, np.zeros(480, dtype=np.float32), 48000)
    """
    import soundfile

    try:
        soundfile.write(str(path), np.asarray(audio), int(sr), subtype=subtype, format="WAV")
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise RolypolyError(f"{path}: cannot write WAV ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
