"""Reading partner recordings: one place that turns a file into mono samples at the engine's rate.

>>> x = load_audio("bass.flac", 48000)   # doctest: +SKIP
"""
from __future__ import annotations

import math
import os

import numpy as np

from rolypoly.errors import RolypolyError


#: Channels whose average is this far (dB) below the loudest channel cancel each other (antiphase:
#: a correlation below -0.8); one silent channel of two puts the average only 6 dB below.
CANCEL_DB = 10.0
#: Frames read at a time: the file is never held whole, only its mono mix.
BLOCK_FRAMES = 1 << 16


def load_audio(path, sample_rate: int = 48000, *, channel: int | None = None) -> np.ndarray:
    """A WAV/FLAC (anything libsndfile reads) as mono float32 at ``sample_rate``.

    Channels are averaged, unless that loses the partner: two channels in
    antiphase (a stereo partner with one side's polarity flipped) average to
    near silence, so when the average is more than :data:`CANCEL_DB` below
    the loudest channel, the loudest channel is used instead, with a
    warning. ``channel`` (from 0) picks one channel outright. Another rate
    is converted with ``scipy.signal.resample_poly`` (linear phase, delay
    compensated, so onset times do not move). Length, rate and channels are
    checked against :mod:`rolypoly.limits` before anything is read; the file
    is read in blocks. Problems raise :class:`RolypolyError` on one line
    naming the file.

    Examples
    --------
    >>> import tempfile, os, warnings
    >>> t = np.arange(4800) / 48000
    >>> bass = np.sin(2 * np.pi * 110 * t).astype(np.float32)
    >>> p = os.path.join(tempfile.mkdtemp(), "antiphase.wav")
    >>> write_wav(p, np.stack([bass, -bass], axis=1), 48000)
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     mono = load_audio(p)
    >>> round(float(np.abs(mono).max()), 3), "antiphase" in str(w[0].message)
    (1.0, True)
    >>> float(np.abs(load_audio(p, channel=1) + bass).max())
    0.0
    """
    import soundfile

    from .limits import (AUDIO_RATES_HZ, MAX_AUDIO_CHANNELS, MAX_AUDIO_FRAMES, MAX_AUDIO_SECONDS, LimitError,
                         check_count, check_seconds)

    name = os.fspath(path)
    if not os.path.exists(name):
        raise RolypolyError(f"{name}: no such file")
    if os.path.isdir(name):
        raise RolypolyError(f"{name}: is a directory, not an audio file")
    try:
        info = soundfile.info(name)
    except Exception as exc:  # libsndfile raises several types for bad files
        raise RolypolyError(f"{name}: cannot read audio ({_problem(exc)})") from None
    file_rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    lo, hi = AUDIO_RATES_HZ
    if not lo <= file_rate <= hi:
        raise LimitError(f"{name}: sample rate {file_rate} Hz, outside the {lo}-{hi} Hz rolypoly accepts")
    check_count("channels", channels, MAX_AUDIO_CHANNELS, name)
    check_seconds(frames / file_rate, name, limit=MAX_AUDIO_SECONDS)
    check_count("samples per channel", frames, MAX_AUDIO_FRAMES, name)
    if channel is not None and not 0 <= int(channel) < channels:
        raise RolypolyError(f"{name}: no channel {int(channel) + 1} (the file has {channels})")
    if frames == 0:
        raise RolypolyError(f"{name}: audio file is empty")
    mono = np.zeros(frames, np.float32)
    power = np.zeros(channels + 1)  # sum of squares per channel, and of their average
    alone = None if channel is None and channels > 1 else (channel or 0)
    try:
        n = _read_blocks(soundfile, name, frames, lambda a, block: _take(block, a, mono, power, alone))
        if alone is None and channels > 1:
            quiet = 10 * np.log10(max(power[-1], 1e-30) / max(power[:-1].max(), 1e-30))
            if quiet < -CANCEL_DB:
                c = int(np.argmax(power[:-1]))
                loudest = mono  # overwritten in place: the average is no use any more
                _read_blocks(soundfile, name, n, lambda a, block: loudest.__setitem__(
                    slice(a, a + len(block)), block[:, c]))
                import warnings

                warnings.warn(f"{name}: the channels are in antiphase (their average is {-quiet:.0f} dB below "
                              f"channel {c + 1}): using channel {c + 1} alone", UserWarning, stacklevel=2)
    except LimitError:
        raise
    except Exception as exc:
        raise RolypolyError(f"{name}: cannot read audio ({_problem(exc)})") from None
    mono = mono[:n]
    if n == 0:
        raise RolypolyError(f"{name}: audio file is empty")
    if not np.all(np.isfinite(mono)):
        raise RolypolyError(f"{name}: audio contains NaN or infinite samples")
    if file_rate != sample_rate:
        import scipy.signal

        g = math.gcd(int(file_rate), int(sample_rate))
        mono = scipy.signal.resample_poly(mono, sample_rate // g, file_rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _read_blocks(soundfile, name: str, frames: int, put) -> int:
    """Read ``name`` block by block into ``put(first_frame, block)``; the frames read (at most ``frames``).

    A header may promise fewer frames than the file holds (the rest is
    ignored) or more (the read stops where the data does).
    """
    a = 0
    with soundfile.SoundFile(name) as f:
        while a < frames:
            block = f.read(min(BLOCK_FRAMES, frames - a), dtype="float32", always_2d=True)
            if not len(block):
                break
            put(a, block)
            a += len(block)
    return a


def _take(block: np.ndarray, a: int, mono: np.ndarray, power: np.ndarray, alone: int | None) -> None:
    """One block into the mono mix (or the one channel), counting each channel's power."""
    if alone is not None:
        mono[a:a + len(block)] = block[:, alone]
        return
    mix = block.mean(axis=1)
    mono[a:a + len(block)] = mix
    power[:-1] += np.einsum("ij,ij->j", block, block, dtype=np.float64)
    power[-1] += float(np.dot(mix, mix))


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
