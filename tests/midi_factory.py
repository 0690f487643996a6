"""Build small Standard MIDI Files for the score tests (with mido).

Everything is given in ticks so a test states exactly what is in the file:

>>> path = write_drum_midi(tmp_path / "a.mid", [(0, 36, 100), (960, 38, 90)],
...                        tempi=[(0, 90)], meters=[(0, 4, 4)])   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import mido

DRUMS = 9          # zero-based MIDI channel 10
TPB = 480


def tempo_us(bpm: float) -> int:
    """Microseconds per quarter note, as stored in the file."""
    return int(round(60_000_000 / bpm))


def _track(events, name: str | None = None) -> mido.MidiTrack:
    """A track from (tick, message) pairs (sorted stably by tick)."""
    track = mido.MidiTrack()
    if name is not None:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=int(tick) - now))
        now = int(tick)
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def note_events(notes, channel: int = DRUMS, length: int = 30):
    """(tick, message) pairs for (tick, pitch, velocity) notes: a note-on and a note-off each."""
    events = []
    for tick, pitch, vel in notes:
        events.append((tick, mido.Message("note_on", channel=channel, note=pitch, velocity=vel)))
        events.append((tick + length, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    return events


def conductor_events(tempi=((0, 120.0),), meters=((0, 4, 4),), tempi_us=None):
    """(tick, meta message) pairs for tempo and time-signature changes.

    ``tempi`` is ``[(tick, bpm)]``; ``tempi_us`` ``[(tick, microseconds)]`` overrides it
    to write raw values (e.g. 0) that no bpm maps to.
    """
    raw = list(tempi_us) if tempi_us is not None else [(t, tempo_us(b)) for t, b in tempi]
    events = [(t, mido.MetaMessage("set_tempo", tempo=us)) for t, us in raw]
    events += [(t, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters]
    return events


def write_drum_midi(path, notes, *, tempi=((0, 120.0),), meters=((0, 4, 4),), tempi_us=None,
                    tpb: int = TPB, channel: int = DRUMS, extra_drum_tracks=(), midi_type: int = 1) -> Path:
    """Write a type-1 file: a conductor track, then one track per list of notes.

    ``notes`` and each of ``extra_drum_tracks`` are lists of ``(tick, pitch, velocity)``.
    With ``midi_type=0`` everything goes to one track.
    """
    path = Path(path)
    conductor = conductor_events(tempi, meters, tempi_us)
    parts = [notes, *extra_drum_tracks]
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    if midi_type == 0:
        events = conductor + [e for part in parts for e in note_events(part, channel)]
        midi.tracks.append(_track(events))
    else:
        midi.tracks.append(_track(conductor, name="conductor"))
        for k, part in enumerate(parts):
            midi.tracks.append(_track(note_events(part, channel), name=f"drums {k}"))
    midi.save(str(path))
    return path


def read_conductor(path):
    """Tempo and meter events of a file as ([(tick, us)], [(tick, num, den)]), all tracks merged."""
    midi = mido.MidiFile(str(path))
    tempi, meters = [], []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempi.append((tick, msg.tempo))
            elif msg.type == "time_signature":
                meters.append((tick, msg.numerator, msg.denominator))
    return sorted(tempi), sorted(meters)


def read_drum_notes(path):
    """All drum note-ons of a file as sorted (tick, pitch, velocity)."""
    midi = mido.MidiFile(str(path))
    notes = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0 and msg.channel == DRUMS:
                notes.append((tick, msg.note, msg.velocity))
    return sorted(notes)
