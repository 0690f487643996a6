"""Errors that reach the musician as one clear line.

Anything the user can cause (a broken MIDI file, a missing device, a bad
checkpoint) raises a subclass of :class:`RolypolyError`; the command line
prints ``rolypoly: <message>`` and exits with status 2, never a traceback.
"""


class RolypolyError(Exception):
    """A user-facing problem: the message names the thing and what is wrong."""


def one_line(exc: BaseException) -> str:
    """An exception as one line (its first), or its type's name where it has no text.

    >>> one_line(ValueError("bad value\\nmore detail")), one_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ScoreError(RolypolyError):
    """A drum score (MIDI file) that cannot be used."""


class CheckpointError(RolypolyError):
    """Model weights that cannot be loaded."""


class DatasetError(RolypolyError):
    """The Groove MIDI Dataset is missing, incomplete or corrupt."""


class DeviceError(RolypolyError):
    """An audio or MIDI device that is missing, busy or unusable."""
