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


# ----------------------------------------------------------------------------- a drummer's real file

#: Pitches of :func:`write_drummers_file`'s kit: what GM and e-kits send beyond the 9 classes.
PEDAL_HAT, CRASH_2, LOW_MID_TOM, RIDE_BELL, FLOOR_TOM = 44, 57, 45, 53, 41


def write_drummers_file(path, tpb: int = TPB) -> Path:
    """A drum file as a drummer's DAW writes it, with everything a round trip could lose.

    Type 1: a conductor track (tempo 100 -> 90 bpm, 4/4 -> 3/4, markers), a
    drum track on channel 10 (program change, hi-hat pedal CC 4 -- one on the
    tick of a pedal hi-hat note, one between notes -- closed, pedal and open
    hi-hat, two crashes, ride and ride bell, toms on five pitches, notes of
    several lengths, a cue note on channel 1 and a chord of two crashes), and
    a bass track on channel 1 (program change, pitch bend). 4 bars of 4/4,
    then 2 bars of 3/4. Same-pitch notes never overlap, even moved half a 16th.
    """
    bar, beat, e8 = 4 * tpb, tpb, tpb // 2
    three = 4 * bar  # the 3/4 section starts here
    conductor = [(0, mido.MetaMessage("set_tempo", tempo=tempo_us(100))),
                 (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
                 (0, mido.MetaMessage("marker", text="Verse")),
                 (2 * bar, mido.MetaMessage("marker", text="Chorus")),
                 (2 * bar, mido.MetaMessage("set_tempo", tempo=tempo_us(90))),
                 (three, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
                 (three, mido.MetaMessage("marker", text="Bridge"))]
    # The pedal position before the notes it is sent with: one on the tick of a pedal hi-hat, one between notes.
    drums = [(0, mido.Message("program_change", channel=DRUMS, program=25)),
             (3 * e8, mido.Message("control_change", channel=DRUMS, control=4, value=127)),
             (bar + 100, mido.Message("control_change", channel=DRUMS, control=4, value=20))]
    notes = []  # (tick, pitch, velocity, length)
    for b in range(4):
        t = b * bar
        for k in range(8):
            hat = PEDAL_HAT if k % 4 == 3 else (46 if k == 7 and b % 2 else 42)
            notes.append((t + k * e8, hat, 70 + 5 * (k % 2), 60))
        notes += [(t, 36, 110, 100), (t + 2 * beat, 36, 100, 100), (t + beat, 38, 105, 90),
                  (t + 3 * beat, 40 if b == 3 else 38, 108, 90)]
    notes += [(0, 49, 120, 900), (2 * bar, CRASH_2, 118, 900), (2 * bar, 49, 96, 700)]  # two crashes on one row
    for k, pitch in enumerate((50, 48, 47, LOW_MID_TOM, 43, FLOOR_TOM)):  # a fill down the toms
        notes.append((3 * bar + 2 * beat + k * tpb // 3, pitch, 90 + 3 * k, 120))
    for b in range(2):
        t = three + b * 3 * beat
        for k in range(3):
            notes.append((t + k * beat, RIDE_BELL if k == 0 else 51, 85, 200))
        notes += [(t, 36, 100, 100), (t + beat, 38, 95, 90), (t + 2 * beat, 38, 90, 90)]
    for tick, pitch, vel, length in notes:
        drums.append((tick, mido.Message("note_on", channel=DRUMS, note=pitch, velocity=vel)))
        drums.append((tick + length, mido.Message("note_off", channel=DRUMS, note=pitch, velocity=64)))
    drums.append((beat, mido.Message("note_on", channel=0, note=76, velocity=50)))                    # a cue note
    drums.append((beat + 30, mido.Message("note_off", channel=0, note=76, velocity=0)))
    bass = [(0, mido.Message("program_change", channel=0, program=33)),
            (bar - 10, mido.Message("pitchwheel", channel=0, pitch=1200))]
    for k in range(6 * 3):
        bass.append((k * beat, mido.Message("note_on", channel=0, note=40 + k % 5, velocity=80)))
        bass.append((k * beat + 400, mido.Message("note_off", channel=0, note=40 + k % 5, velocity=0)))
    midi = mido.MidiFile(type=1, ticks_per_beat=tpb)
    midi.tracks.append(_track(conductor, name="conductor"))
    midi.tracks.append(_track(drums, name="Drums"))
    midi.tracks.append(_track(bass, name="Bass"))
    path = Path(path)
    midi.save(str(path))
    return path
