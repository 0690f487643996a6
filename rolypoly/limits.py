"""The largest inputs rolypoly accepts: one place for every size that comes from a file.

A 36-byte MIDI file can put two notes 194 hours apart, and a 3 MB weights
file can say its network is 12,000 units wide: sizes that come from a file
are checked here *before* anything is allocated for them, and a file past
a limit is refused with one line naming it and the limit (a
:class:`LimitError`, or the ScoreError / CheckpointError / SessionError of
the reader, which the command line prints and exits 2 on). Each limit is
far above what a musician's material needs (the Groove MIDI Dataset's
longest take is under 6 minutes and 156 kB; the shipped models have at
most 3.9 million parameters) and far below what would hurt the machine.

=====================  ==================================  =====================================
what                   limit                               why this value
=====================  ==================================  =====================================
MIDI file              4 MiB                               27x the largest GMD take; mido turns
                                                           every byte into Python objects
score                  1 hour to its last event            a whole set
bars                   10,000                              an hour of 4/4 at 400 bpm is 6,000
rows                   100,000                             an hour of 16ths at 400 bpm: 96,000
groove model input     1 million steps (all windows)       an hour at 400 bpm on the triplet
                                                           grid is 576,000; at most 108 MB
recording              1 hour, 172.8 M samples a channel,  as long as the longest score: 691 MB
                       8-384 kHz, 64 channels              of mono float32 at 48 kHz
mix                    61 minutes                          the longest score and a last decay
weights file           256 MiB                             17x the largest shipped (15 MB)
model                  32 million parameters, 16 layers    8x the largest shipped (3.9 M)
JSON file              16 MiB (session.json, version.json) ~200 bytes a fine-tune
take file              256 MiB (take.jsonl)                ~600 bytes a row: 100,000 rows: 60 MB
=====================  ==================================  =====================================

Examples
--------
>>> check_count("rows", 123, MAX_ROWS, "song.mid")
>>> check_count("rows", 10**6, MAX_ROWS, "song.mid")
Traceback (most recent call last):
...
rolypoly.limits.LimitError: song.mid: 1000000 rows, more than the 100000 rolypoly accepts
>>> check_seconds(3599.0, "song.mid")
>>> check_seconds(2.0 ** 27 / 96 / 2, "gap.mid")
Traceback (most recent call last):
...
rolypoly.limits.LimitError: gap.mid: lasts 194.2 hours, longer than the 1 hour rolypoly accepts
"""
from __future__ import annotations

import os

from .errors import RolypolyError

MiB = 1 << 20

#: Largest Standard MIDI File read (bytes).
MAX_MIDI_BYTES = 4 * MiB
#: Longest score, from its start to its last event (tempo, meter or note), in seconds.
MAX_SCORE_SECONDS = 3600.0
#: Most bars in a score (meters as short as 1/64 make many bars of a short piece).
MAX_BARS = 10_000
#: Most rows (sets of simultaneous hits) in a score, grown rows included.
MAX_ROWS = 100_000
#: Most grid steps in all the 2-bar windows a groove model reads at once (9 classes x 3 parts each).
MAX_GROOVE_WINDOW_STEPS = 1_000_000
#: Longest partner recording read, in seconds; and the sample rates and channels accepted.
MAX_AUDIO_SECONDS = MAX_SCORE_SECONDS
AUDIO_RATES_HZ = (8_000, 384_000)
MAX_AUDIO_CHANNELS = 64
#: Most samples per channel of a recording: an hour at 48 kHz (half an hour at 96 kHz), 691 MB mono.
MAX_AUDIO_FRAMES = 3600 * 48_000
#: Longest mix rendered (a take's mix.wav, a rendered MIDI file): the longest score and its last hit's decay.
MAX_MIX_SECONDS = MAX_SCORE_SECONDS + 60.0
#: Largest weights file (safetensors) read, and the most parameters a model it describes may have.
MAX_WEIGHTS_BYTES = 256 * MiB
MAX_MODEL_PARAMETERS = 32_000_000
#: Most layers (or ensemble members) a model's config may ask for (the shipped ones: 2 layers, 4 members).
MAX_MODEL_DEPTH = 16
#: Largest JSON file read whole (session.json, version.json).
MAX_JSON_BYTES = 16 * MiB
#: Largest take file read (take.jsonl).
MAX_TAKE_BYTES = 256 * MiB


class LimitError(RolypolyError):
    """An input past one of rolypoly's size limits (one line: the file, its size, the limit)."""


def _bytes(n: float) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{int(n)} bytes"


def check_file_size(path, limit: int, what: str = "file", error=LimitError) -> int:
    """The size of ``path`` in bytes, refused past ``limit`` (with ``error``, a RolypolyError class).

    >>> import tempfile
    >>> check_file_size(tempfile.mkstemp()[1], MAX_MIDI_BYTES)
    0
    """
    size = os.path.getsize(path)
    if size > limit:
        raise error(f"{os.fspath(path)}: {_bytes(size)}, larger than the {_bytes(limit)} a {what} may be")
    return size


def check_count(what: str, n, limit: int, name, error=LimitError) -> None:
    """Refuse ``n`` of ``what`` past ``limit`` (see the module examples)."""
    if n > limit:
        raise error(f"{name}: {int(n)} {what}, more than the {limit} rolypoly accepts")


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def check_seconds(seconds: float, name, limit: float = MAX_SCORE_SECONDS, what: str = "lasts",
                  error=LimitError) -> None:
    """Refuse a piece or recording longer than ``limit`` seconds (see the module examples)."""
    if not seconds <= limit:  # NaN too
        shown = "1 hour" if limit == 3600 else _duration(limit)
        raise error(f"{name}: {what} {_duration(seconds)}, longer than the {shown} rolypoly accepts")
