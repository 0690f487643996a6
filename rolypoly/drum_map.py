"""The drum map: which MIDI pitches belong to which of the 9 drum classes.

This is the only place that knows MIDI drum pitches. The 9 classes and their
pitch groups are the GrooVAE / Magenta "Roland" mapping used by the Groove
MIDI Dataset (Gillick et al. 2019): every pitch a Roland TD-11 kit emits,
including its edge and bow variants (22, 26, 58, ...), folds into one class.

Examples
--------
>>> from rolypoly.drum_map import class_of_pitch, CLASS_NAMES
>>> CLASS_NAMES[class_of_pitch(40)]
'snare'
>>> class_of_pitch(100) is None
True
"""
from __future__ import annotations

#: Class names in feature-row order.
CLASS_NAMES: tuple[str, ...] = (
    "kick", "snare", "closed_hihat", "open_hihat",
    "low_tom", "mid_tom", "high_tom", "crash", "ride",
)
N_CLASSES = len(CLASS_NAMES)

#: Pitches of each class; the first one is what rolypoly plays for that class.
#: The Roland TD-11 pitches of the Groove MIDI Dataset follow GrooVAE exactly
#: (low tom 43/58, mid tom 47/45, high tom 50/48, crash 49/52/55/57, ride
#: 51/53/59); the other General MIDI drum pitches join the class that sounds
#: closest, as in Magenta's drum map.
CLASS_PITCHES: tuple[tuple[int, ...], ...] = (
    (36, 35),
    (38, 37, 40, 27, 28, 31, 32, 33, 34, 39, 56, 65, 66, 75, 85),
    (42, 22, 44, 54, 68, 69, 70, 71, 73, 78, 80),
    (46, 26, 67, 72, 74, 79, 81),
    (43, 58, 41, 29, 61, 64, 84),
    (47, 45, 60, 63, 77, 86, 87),
    (50, 48, 30, 62, 76, 83),
    (49, 52, 55, 57),
    (51, 53, 59, 82),
)

#: MIDI pitch rolypoly emits for each class (GM: 36 kick, 38 snare, 42/46 hats,
#: 43/47/50 toms, 49 crash, 51 ride).
OUTPUT_PITCHES: tuple[int, ...] = tuple(p[0] for p in CLASS_PITCHES)

#: Names of the General MIDI drum notes 35-81 and of the GS notes around them (27-34, 82-87),
#: as a sampled kit names its sounds (``44.wav`` or ``pedal_hihat.wav``).
GM_DRUM_NAMES: dict[int, str] = dict(enumerate((
    "high_q", "slap", "scratch_push", "scratch_pull", "sticks", "square_click", "metronome_click",
    "metronome_bell", "acoustic_bass_drum", "bass_drum", "side_stick", "acoustic_snare", "hand_clap",
    "electric_snare", "low_floor_tom", "closed_hihat", "high_floor_tom", "pedal_hihat", "low_tom",
    "open_hihat", "low_mid_tom", "high_mid_tom", "crash_cymbal_1", "high_tom", "ride_cymbal_1",
    "chinese_cymbal", "ride_bell", "tambourine", "splash_cymbal", "cowbell", "crash_cymbal_2", "vibraslap",
    "ride_cymbal_2", "high_bongo", "low_bongo", "mute_high_conga", "open_high_conga", "low_conga",
    "high_timbale", "low_timbale", "high_agogo", "low_agogo", "cabasa", "maracas", "short_whistle",
    "long_whistle", "short_guiro", "long_guiro", "claves", "high_wood_block", "low_wood_block", "mute_cuica",
    "open_cuica", "mute_triangle", "open_triangle", "shaker", "jingle_bell", "belltree", "castanets",
    "mute_surdo", "open_surdo"), start=27))

#: MIDI channel of drums (General MIDI channel 10, zero-based 9).
DRUM_CHANNEL = 9

_PITCH_TO_CLASS = {p: c for c, ps in enumerate(CLASS_PITCHES) for p in ps}
assert len(_PITCH_TO_CLASS) == sum(map(len, CLASS_PITCHES)), "a pitch is in two classes"


def class_of_pitch(pitch: int) -> int | None:
    """Class index of a MIDI pitch, or None when the pitch is not a mapped drum.

    >>> class_of_pitch(36)
    0
    """
    return _PITCH_TO_CLASS.get(int(pitch))


def class_index(name: str) -> int:
    """Class index from a name such as ``"hihat"`` or ``"closed_hihat"``.

    ``"hihat"`` is accepted for the closed hi-hat, the way musicians say it.

    >>> class_index("hihat")
    2
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {"hihat": "closed_hihat", "hh": "closed_hihat", "bd": "kick",
               "sd": "snare", "oh": "open_hihat", "hat": "closed_hihat"}
    key = aliases.get(key, key)
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown drum class {name!r}; known: {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(key)
