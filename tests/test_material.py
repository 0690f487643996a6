"""A drummer's own file comes back as it went in: only note-on times and velocities change.

Every command that writes a drum part the player gave (``humanize``, the
groove tools, ``session export``, a take's ``drums.mid``) and the live MIDI
output are checked on :func:`tests.midi_factory.write_drummers_file`, which
has what the 9 drum classes of the models' features would lose: a pedal
hi-hat (44), a second crash (57), a ride bell (53), toms on five pitches,
note lengths, CC 4, program changes, markers, tempo and meter changes, a
note on another channel and a bass track. Files are compared event by
event with mido.
"""
from __future__ import annotations

import collections
import gc
import os
import pickle

import mido
import numpy as np
import pytest

from rolypoly.cli import main
from rolypoly.drum_map import DRUM_CHANNEL, class_of_pitch
from rolypoly.paths import DEMO_SCORE
from rolypoly.score import at_tempo, load_score, played_notes, write_midi
from tests.midi_factory import CRASH_2, LOW_MID_TOM, PEDAL_HAT, RIDE_BELL, write_drummers_file

HAT_CLASSES = (2, 3)


def _timed(track):
    tick = 0
    for msg in track:
        tick += msg.time
        yield tick, msg


def _is_drum_note(msg) -> bool:
    return (msg.type in ("note_on", "note_off") and msg.channel == DRUM_CHANNEL
            and class_of_pitch(msg.note) is not None)


def _notes(track):
    """Drum notes of a track: (channel, pitch) -> [(on tick, velocity, length, off velocity)], in time order."""
    sounding, out = collections.defaultdict(collections.deque), collections.defaultdict(list)
    for tick, msg in _timed(track):
        if not _is_drum_note(msg):
            continue
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[(msg.channel, msg.note)].append((tick, msg.velocity))
        else:
            on, vel = sounding[(msg.channel, msg.note)].popleft()
            out[(msg.channel, msg.note)].append((on, vel, tick - on, msg.velocity))
    assert not any(sounding.values()), "a drum note without its note-off"
    return {k: sorted(v) for k, v in out.items()}


def assert_only_timing_and_velocity(original, written, *, replaced_classes=()):
    """``written`` is ``original`` but for the drum notes' note-on times and velocities.

    Every other event is there, in the same order, with the same content and
    at the same tick -- except a controller on the tick of a drum note, which
    moves with it. Each drum note keeps its pitch, channel, length and
    note-off velocity. Notes of ``replaced_classes`` (infill) may be
    replaced: only their pitch and channel are checked.
    Returns the note-on shifts in ticks and the velocity changes.
    """
    a, b = mido.MidiFile(str(original)), mido.MidiFile(str(written))
    assert (b.type, b.ticks_per_beat, len(b.tracks)) == (a.type, a.ticks_per_beat, len(a.tracks))
    shifts, vel_changes = [], []
    for ta, tb in zip(a.tracks, b.tracks):
        na, nb = _notes(ta), _notes(tb)
        on_ticks = {on for notes in nb.values() for on, *_ in notes}
        rest_a = [(t, m) for t, m in _timed(ta) if not _is_drum_note(m)]
        rest_b = [(t, m) for t, m in _timed(tb) if not _is_drum_note(m)]
        assert [m.copy(time=0) for _, m in rest_b] == [m.copy(time=0) for _, m in rest_a], ta.name
        for (t0, m0), (t1, m1) in zip(rest_a, rest_b):
            if t1 != t0:
                moved_with_note = m0.type == "control_change" and any(on == t0 for on, *_ in
                                                                        _notes_at(na, t0))
                assert moved_with_note and (t1 in on_ticks or replaced_classes), (ta.name, t0, t1, m0)
        for key in set(na) | set(nb):
            if class_of_pitch(key[1]) in replaced_classes:
                continue
            old, new = na.get(key, []), nb.get(key, [])
            assert len(new) == len(old), (ta.name, key)
            for (on0, v0, len0, off0), (on1, v1, len1, off1) in zip(old, new):
                assert (len1, off1) == (len0, off0), (ta.name, key, on0)
                assert 1 <= v1 <= 127
                shifts.append(on1 - on0)
                vel_changes.append(v1 - v0)
    return np.array(shifts), np.array(vel_changes)


def _notes_at(notes, tick):
    return [n for ns in notes.values() for n in ns if n[0] == tick]


def _pedal_cc_follows_its_note(path):
    """The CC 4 sent on the first pedal hi-hat's tick is still on that note's tick, before it."""
    drums = mido.MidiFile(str(path)).tracks[1]
    events = list(_timed(drums))
    cc = next(k for k, (_, m) in enumerate(events) if m.type == "control_change" and m.value == 127)
    pedal = next(k for k, (_, m) in enumerate(events) if m.type == "note_on" and m.note == PEDAL_HAT)
    assert cc < pedal and events[cc][0] == events[pedal][0]


@pytest.fixture
def drummers_file(tmp_path):
    return write_drummers_file(tmp_path / "drummer.mid")


def test_the_score_keeps_the_players_notes_beside_the_classes(drummers_file):
    score = load_score(drummers_file)
    notes = score.material.notes
    assert {PEDAL_HAT, CRASH_2, LOW_MID_TOM, RIDE_BELL} <= set(notes["pitch"].tolist())
    assert set(notes["channel"].tolist()) == {DRUM_CHANNEL}
    assert sorted(set(notes["length"].tolist())) == [60, 90, 100, 120, 200, 700, 900]
    np.testing.assert_array_equal(notes["cls"], [class_of_pitch(p) for p in notes["pitch"]])
    played = played_notes(score)
    assert len(played) == len(notes) and {PEDAL_HAT, CRASH_2, LOW_MID_TOM, RIDE_BELL} <= set(played["pitch"].tolist())


def test_written_unchanged_the_file_comes_back_event_for_event(drummers_file, tmp_path):
    write_midi(load_score(drummers_file), tmp_path / "same.mid", offsets=load_score(drummers_file).played_offset)
    a, b = mido.MidiFile(str(drummers_file)), mido.MidiFile(str(tmp_path / "same.mid"))
    assert [list(t) for t in a.tracks] == [list(t) for t in b.tracks]


def test_a_score_sent_between_processes_carries_the_file_as_bytes_and_writes_it_back_the_same(drummers_file, tmp_path):
    # The helper process opens a score mid-take and sends it back pickled: rebuilding every mido message there held
    # the interpreter lock of the take's process (72 ms for a 30-minute file) and hits came late.
    score = load_score(drummers_file)
    sent = pickle.dumps(score)
    gc.collect()
    before = len(gc.get_objects())
    back = pickle.loads(sent)
    assert len(gc.get_objects()) - before < 50  # arrays and a few objects, no messages
    assert "midi" not in back.material.__dict__
    np.testing.assert_array_equal(back.material.notes, score.material.notes)
    write_midi(back, tmp_path / "back.mid", offsets=back.played_offset)  # parses the bytes on first use
    write_midi(score, tmp_path / "here.mid", offsets=score.played_offset)
    assert (tmp_path / "back.mid").read_bytes() == (tmp_path / "here.mid").read_bytes()
    assert [list(t) for t in back.material.midi.tracks] == [list(t) for t in mido.MidiFile(drummers_file).tracks]


def test_a_take_stopped_before_its_first_hit_writes_the_file_without_drum_notes(drummers_file, tmp_path):
    score = load_score(drummers_file)
    write_midi(score.head(0), tmp_path / "none.mid")  # a take's drums.mid when stopped at once
    written = mido.MidiFile(tmp_path / "none.mid")
    assert not [m for t in written.tracks for m in t if _is_drum_note(m)]
    assert [m for t in written.tracks for m in t if m.type == "set_tempo"]


def test_humanize_changes_only_timing_and_velocity(drummers_file, tmp_path):
    out = tmp_path / "human.mid"
    assert main(["humanize", str(drummers_file), "-o", str(out)]) == 0
    shifts, vel = assert_only_timing_and_velocity(drummers_file, out)
    assert np.count_nonzero(shifts) > len(shifts) // 2, "the agent moved the notes"
    assert not vel.any(), "the timing agent leaves velocities alone"
    _pedal_cc_follows_its_note(out)


def test_a_take_at_another_tempo_writes_that_tempo_and_nothing_else_new(drummers_file, tmp_path):
    out = tmp_path / "fast.mid"
    write_midi(at_tempo(load_score(drummers_file), 150), out)
    tempi = [m.tempo for _, m in _timed(mido.MidiFile(str(out)).tracks[0]) if m.type == "set_tempo"]
    assert [round(mido.tempo2bpm(t), 1) for t in tempi] == [150.0, 135.0]
    a, b = mido.MidiFile(str(drummers_file)), mido.MidiFile(str(out))
    assert [m for m in a.tracks[2]] == [m for m in b.tracks[2]]
    assert [m.type for m in a.tracks[0]] == [m.type for m in b.tracks[0]]


@pytest.mark.parametrize("tool", ["humanize", "transfer"])
def test_groove_tools_change_only_timing_and_velocity(drummers_file, tmp_path, tool):
    out = tmp_path / f"{tool}.mid"
    args = (["groove", "humanize", str(drummers_file)] if tool == "humanize" else
            ["groove", "transfer", "--groove", str(DEMO_SCORE), "--score", str(drummers_file)])
    assert main(args + ["-o", str(out)]) == 0
    shifts, vel = assert_only_timing_and_velocity(drummers_file, out)
    assert np.count_nonzero(shifts) > len(shifts) // 2 and np.count_nonzero(vel) > len(vel) // 2
    _pedal_cc_follows_its_note(out)


def test_infill_replaces_only_the_hihat_and_keeps_the_rest_as_played(drummers_file, tmp_path):
    out = tmp_path / "infill.mid"
    assert main(["groove", "infill", str(drummers_file), "-o", str(out)]) == 0
    shifts, vel = assert_only_timing_and_velocity(drummers_file, out, replaced_classes=HAT_CLASSES)
    assert not shifts.any() and not vel.any(), "the other instruments stay exactly as played"
    hats = [m for _, m in _timed(mido.MidiFile(str(out)).tracks[1])
            if m.type == "note_on" and class_of_pitch(m.note) in HAT_CLASSES]
    assert hats and all(m.channel == DRUM_CHANNEL for m in hats)


def test_session_export_and_a_takes_drums_change_only_timing_and_velocity(drummers_file, tmp_path):
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.sources import FileSource

    session = tmp_path / "sessions" / "drummer"
    summary = play_take(drummers_file, FileSource(audio=np.zeros(48000 * 20, np.float32)), SimClock(),
                        session=session, mix=False, plot=False)
    # (how far the notes moved depends on the decisions made in time: on a swamped machine they are late)
    assert_only_timing_and_velocity(drummers_file, summary["drums"])
    out = tmp_path / "export.mid"
    assert main(["session", "export", str(session), "-o", str(out)]) == 0
    shifts, vel = assert_only_timing_and_velocity(drummers_file, out)
    assert np.count_nonzero(shifts) > len(shifts) // 2 and not vel.any()


def test_live_midi_sends_the_players_own_notes(drummers_file, jack_server):
    import rtmidi

    from rolypoly.agents import Performer, default_weights, load_agent
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.engine import Engine
    from rolypoly.realtime.midi_out import MidiOut
    from rolypoly.realtime.sources import FileSource

    score = load_score(drummers_file)
    name = f"rolypoly-material-{os.getpid()}"
    listener = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-in")
    out = MidiOut(api="jack", client_name=name, gate_s=0.01)
    try:
        port = next(p for p in listener.get_ports() if p.startswith(name + ":"))
        listener.open_port(listener.get_ports().index(port))
        from tests.test_outputs import sync

        sync(out, listener)
        Engine(score, Performer(load_agent(default_weights("lstm"))), FileSource(audio=np.zeros(48000, np.float32)),
               SimClock(), midi=out).run()
        out.close()
        from tests.test_outputs import receive

        msgs = [m for m, _ in receive(listener, 10_000, timeout_s=3.0)]
    finally:
        out.close()
        listener.close_port()
        listener.delete()
    assert out.error is None, out.error
    sent = collections.Counter((m[0] & 0x0F, m[1], m[2]) for m in msgs if m[0] & 0xF0 == 0x90 and m[2] > 0)
    own = collections.Counter((m.channel, m.note, m.velocity) for _, m in _timed(mido.MidiFile(str(drummers_file)).tracks[1])
                              if _is_drum_note(m) and m.type == "note_on" and m.velocity > 0)
    assert sent == own
    assert {PEDAL_HAT, CRASH_2, LOW_MID_TOM, RIDE_BELL} <= {p for _, p, _ in sent}
