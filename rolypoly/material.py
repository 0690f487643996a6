"""The player's own MIDI file, kept whole, and written back with new timing and velocity.

A score (:mod:`rolypoly.score`) and a groove (:mod:`rolypoly.groove_grid`)
see a drum part as 9 drum classes: that is what the models' features need.
What is written and played must stay the player's own material: the pitch
of every note (a pedal hi-hat stays 44, a second crash 57), its channel and
length, every other track, controllers (the hi-hat pedal, CC 4), program
changes, markers, the tempo map and meters. :class:`Material` is the file
as read plus, for each drum note the score uses, where it is in the file;
:func:`write_performed` writes the file back with only the note-on times and
velocities of those notes changed (their note-offs move with them).

Examples
--------
>>> from rolypoly.score import load_score
>>> from rolypoly.paths import DEMO_SCORE
>>> m = load_score(DEMO_SCORE).material
>>> len(m.notes), int(m.notes["pitch"][0]), int(m.notes["length"][0])
(191, 36, 60)
"""
from __future__ import annotations

import io
import os
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace

import mido
import numpy as np

from .drum_map import OUTPUT_PITCHES
from .errors import ScoreError

#: One drum note of the file: where it is (track, message index of its note-on
#: and note-off, -1 when it has none), when (absolute tick, length in ticks,
#: -1 without a note-off), what (channel, pitch, velocity) and its drum class.
NOTE_DTYPE = np.dtype([("track", np.int32), ("index", np.int64), ("off", np.int64), ("tick", np.int64),
                       ("length", np.int64), ("channel", np.int16), ("pitch", np.int16),
                       ("velocity", np.int16), ("cls", np.int16)])
#: Channel events that may belong to a stroke (see :func:`write_performed`).
CHANNEL_EVENTS = ("control_change", "program_change", "pitchwheel", "aftertouch", "polytouch")
#: Length of a note rolypoly adds (infill) when the player's file has none of its drum, in beats.
NEW_NOTE_BEATS = 0.125


@dataclass(frozen=True)
class Material:
    """A MIDI file as read (never modified) and its drum notes (:data:`NOTE_DTYPE`).

    ``key``, ``spread`` and ``peak`` say where each note sits in the score
    or groove that holds this material (:meth:`placed`): the row or grid
    step ``key``, its distance in ticks (score) or steps (groove) from the
    time of its row or cell as that one is written, and ``peak``, the
    loudest velocity of its class there (a new velocity for the class
    scales each note's own by new / peak, so two crashes on one row keep
    their balance).

    Between processes (the helper that opens a score while a take plays) a
    material travels as the file's bytes, ``source``, and is parsed again
    where ``midi`` is first used (writing the file back): unpickling the
    tens of thousands of mido messages of a long file held the interpreter
    lock in the process playing the take (72 ms for a 30-minute score),
    and its hits came late.
    """

    midi: mido.MidiFile
    notes: np.ndarray
    tempi: tuple = ()            # the file's own (tick, microseconds) tempo changes
    key: np.ndarray | None = None
    spread: np.ndarray | None = None
    peak: np.ndarray | None = None
    source: bytes | None = field(default=None, repr=False, compare=False)  # the file as read

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        midi = state.pop("midi", None)
        if state.get("source") is None and midi is not None:  # made in code: its bytes as mido writes them
            buffer = io.BytesIO()
            midi.save(file=buffer)
            state["source"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str):
        # Only for a field missing from the instance: ``midi`` after unpickling, parsed once from ``source``.
        source = self.__dict__.get("source")
        if name != "midi" or source is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        midi = mido.MidiFile(file=io.BytesIO(source), clip=True)
        self.__dict__["midi"] = midi
        return midi

    def placed(self, key, spread, peak) -> "Material":
        """The same file with each note's place in a score or groove."""
        return replace(self, key=np.asarray(key, np.int64), spread=np.asarray(spread, np.float64),
                       peak=np.maximum(np.asarray(peak, np.float64), 1.0))

    def scaled_velocities(self, class_velocity) -> np.ndarray:
        """Each note's velocity for new class velocities (one per note): own × new / peak.

        A class velocity equal to the old peak gives every note its own
        velocity back exactly.
        """
        return self.notes["velocity"] * np.asarray(class_velocity, np.float64) / self.peak

    def voice(self, cls: int) -> tuple[int, int, int, int]:
        """(track, channel, pitch, length) the player uses most for drum class ``cls``.

        For notes rolypoly adds (infill): they sound like the player's own
        drum of that class; the GM pitch on channel 10 when the file has none.
        """
        n = self.notes
        mine = n[n["cls"] == cls]
        pool = mine if len(mine) else n
        track = int(np.bincount(pool["track"]).argmax()) if len(pool) else 0
        default_len = max(1, int(round(NEW_NOTE_BEATS * self.midi.ticks_per_beat)))
        if not len(mine):
            channel = int(np.bincount(n["channel"]).argmax()) if len(n) else 9
            return track, channel, OUTPUT_PITCHES[cls], default_len
        pitch, channel = (int(np.bincount(mine[f]).argmax()) for f in ("pitch", "channel"))
        lengths = mine["length"][mine["length"] > 0]
        return track, channel, pitch, int(np.median(lengths)) if len(lengths) else default_len


def pair_note_offs(midi: mido.MidiFile) -> dict:
    """``(track, note-on index) -> (note-off index, length)`` for every note of the file.

    A note-off (or a note-on of velocity 0) ends the earliest note still
    sounding on its channel and pitch in its track, as synthesizers do.
    """
    ends = {}
    for k, track in enumerate(midi.tracks):
        sounding = defaultdict(deque)
        tick = 0
        for i, msg in enumerate(track):
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[(msg.channel, msg.note)].append((i, tick))
            elif msg.type in ("note_off", "note_on"):
                waiting = sounding[(msg.channel, msg.note)]
                if waiting:
                    on, at = waiting.popleft()
                    ends[(k, on)] = (i, tick - at)
    return ends


def material_from(midi: mido.MidiFile, found, tempi, source: bytes | None = None) -> Material:
    """Material from a file and its drum notes ``(track, index, tick, channel, pitch, velocity, cls)``.

    ``source``: the file's bytes as read, from which ``midi`` was parsed.
    """
    ends = pair_note_offs(midi)
    notes = np.zeros(len(found), NOTE_DTYPE)
    for j, (k, i, tick, channel, pitch, velocity, cls) in enumerate(found):
        off, length = ends.get((k, i), (-1, -1))
        notes[j] = (k, i, off, tick, length, channel, pitch, velocity, cls)
    return Material(midi, notes, tuple(tempi), source=source)


# ----------------------------------------------------------------------------- writing

def _tempo_at(tempi, tick: int) -> int:
    us = tempi[0][1]
    for t, u in tempi:
        if t > tick:
            break
        us = u
    return int(us)


def write_performed(material: Material, path, *, tick, velocity, keep=None, added=(), tempi=None) -> None:
    """Write the player's file with new note-on times and velocities for its drum notes.

    Parameters
    ----------
    material : Material
    path : output file
    tick : array (notes,)
        New note-on tick of each note (rounded; nothing goes before tick 0).
    velocity : array (notes,)
        New velocity of each note (rounded, clipped to 1..127).
    keep : bool array (notes,), optional
        False: the note is left out (with its note-off): a take stopped
        early, or an infill that replaces the instrument.
    added : iterable of (tick, class, velocity)
        Notes rolypoly adds (infill), in the player's voice for the class
        (:meth:`Material.voice`).
    tempi : list of (tick, microseconds), optional
        A tempo map to play at (a take at another tempo): the file's tempo
        events get its values; None keeps them.

    Everything else is the file's own: its type, ticks per beat, tracks and
    their order, every other note, controller, program change, marker,
    tempo and meter event, each at its own absolute tick. Each note's
    note-off moves with it, so its length stays.

    Non-note events keep their time, with one exception: a channel event
    (controller, program change, pitch bend, aftertouch) at exactly the
    tick of moved notes on its channel and track moves with them (with the
    earliest of them if they moved apart). It was written there for those
    strokes -- a hi-hat pedal position (CC 4) or a program sent with the
    note -- and must still come before them; one at another tick belongs to
    the time line (a pedal sweep, a program for the next section), not to a
    stroke, and stays. A note moved past the next stroke of the same drum
    ends where that stroke starts, as it did in the file.
    """
    midi, notes = material.midi, material.notes
    n = len(notes)
    on_tick = np.maximum(np.rint(np.asarray(tick, np.float64)), 0).astype(np.int64)
    vel = np.clip(np.rint(np.asarray(velocity, np.float64)), 1, 127).astype(np.int64)
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    if on_tick.shape != (n,) or vel.shape != (n,) or keep.shape != (n,):
        raise ValueError(f"tick, velocity and keep need one value per note ({n})")
    retempo = tempi is not None and tuple(map(tuple, tempi)) != tuple(map(tuple, material.tempi))

    by_track = defaultdict(list)
    for j in range(n):
        by_track[int(notes["track"][j])].append(j)
    adds = defaultdict(list)
    for a_tick, cls, a_vel in added:
        track, channel, pitch, length = material.voice(int(cls))
        at = max(int(round(float(a_tick))), 0)
        adds[track].append((at, channel, pitch, int(np.clip(round(float(a_vel)), 1, 127)), length))

    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat, charset=midi.charset)
    for k, track in enumerate(midi.tracks):
        out.tracks.append(_performed_track(track, k, notes, by_track[k], on_tick, vel, keep, adds[k],
                                           tempi if retempo else None))
    if retempo and not any(m.type == "set_tempo" and t == 0 for t, m in _timed(out.tracks[0])):
        # The file relied on the default 120 bpm, which is not the tempo asked for.
        out.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=_tempo_at(tempi, 0), time=0))
    try:
        out.save(os.fspath(path))
    except OSError as e:
        raise ScoreError(f"{path}: cannot write ({e.strerror or e})") from None


def _timed(track):
    tick = 0
    for msg in track:
        tick += msg.time
        yield tick, msg


def _performed_track(track, k, notes, mine, on_tick, vel, keep, adds, tempi) -> mido.MidiTrack:
    """One track of :func:`write_performed`."""
    ticks = [t for t, _ in _timed(track)]
    on_of = {int(notes["index"][j]): j for j in mine}
    off_of = {int(notes["off"][j]): j for j in mine if notes["off"][j] >= 0}
    delta = {j: int(on_tick[j] - notes["tick"][j]) for j in mine}
    follow = {}  # (tick, channel) -> shift of the channel events there (see write_performed)
    for j in mine:
        if keep[j] and delta[j]:
            where = (int(notes["tick"][j]), int(notes["channel"][j]))
            follow[where] = min(follow.get(where, delta[j]), delta[j])

    items = []      # [new tick, order, message]; order: the message's place in the file
    voices = defaultdict(list)  # (channel, pitch) -> [on item, off item or None, original on, original off]
    end = None
    for i, msg in enumerate(track):
        t = ticks[i]
        if i in on_of:
            j = on_of[i]
            if not keep[j]:
                continue
            item = [int(on_tick[j]), float(i), msg.copy(velocity=int(vel[j]), time=0)]
            items.append(item)
            off, off_item = int(notes["off"][j]), None
            if off >= 0:
                off_item = [ticks[off] + delta[j], float(off), track[off].copy(time=0)]
                items.append(off_item)
            voices[(msg.channel, msg.note)].append([item, off_item, t, ticks[off] if off >= 0 else None])
        elif i in off_of:
            continue  # written with its note-on
        elif msg.type == "end_of_track":
            end = (t, msg)
        else:
            shift = follow.get((t, msg.channel), 0) if msg.type in CHANNEL_EVENTS else 0
            if tempi is not None and msg.type == "set_tempo":
                msg = msg.copy(tempo=_tempo_at(tempi, t))
            items.append([t + shift, float(i), msg.copy(time=0)])
    order = float(len(track))
    for at, channel, pitch, velocity, length in adds:
        on = [at, order, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)]
        off = [at + length, order + 0.5, mido.Message("note_off", channel=channel, note=pitch, velocity=0)]
        items += [on, off]
        voices[(channel, pitch)].append([on, off, None, None])
        order += 1.0
    _end_before_next_stroke(voices)

    items.sort(key=lambda e: (e[0], e[1]))
    result = mido.MidiTrack()
    now = 0
    for at, _, msg in items:
        result.append(msg.copy(time=at - now))
        now = at
    if end is not None:
        result.append(end[1].copy(time=max(end[0] - now, 0)))
    return result


def _end_before_next_stroke(voices) -> None:
    """A note whose note-off now falls after the next stroke of its drum ends at that stroke.

    Only where the file had it end before that stroke: overlaps the player
    wrote stay.
    """
    for strokes in voices.values():
        strokes.sort(key=lambda s: (s[0][0], s[0][1]))
        for a, b in zip(strokes, strokes[1:]):
            off = a[1]
            if off is None or off[0] <= b[0][0]:
                continue
            was_apart = a[3] is None or b[2] is None or a[3] <= b[2]
            if was_apart:
                off[0], off[1] = b[0][0], b[0][1] - 0.25
