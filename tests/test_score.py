"""Drum map, grid, score loading (tempo/meter maps, quantisation), writing and bad input.

Expected values are worked out by hand from the ticks written into each file
(480 ticks per beat unless said otherwise): a 4/4 bar is 1920 ticks, a grid
step of a 4/4 bar 80 ticks, a 3/4 or 6/8 bar 1440 ticks.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import mido
import numpy as np
import pytest

from rolypoly import grid
from rolypoly.drum_map import (CLASS_NAMES, CLASS_PITCHES, DRUM_CHANNEL, N_CLASSES, OUTPUT_PITCHES,
                               class_index, class_of_pitch)
from rolypoly.errors import RolypolyError, ScoreError
from rolypoly.score import Score, TempoMap, load_score, score_from_grid, write_midi
from tests.midi_factory import (TPB, read_conductor, read_drum_notes, tempo_us, write_drum_midi)

GMD_FILE = Path("/work/shared/datasets/groove/drummer1/eval_session/1_funk-groove1_138_beat_4-4.mid")

KICK, SNARE, CHH, OHH, LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE = range(9)
BAR = 4 * TPB  # ticks in a 4/4 bar


def approx(x, rel=1e-6, abs=1e-6):
    """Tempi are stored as whole microseconds per beat: 90 bpm is off by 5e-7 relative."""
    return pytest.approx(x, rel=rel, abs=abs)


def assert_one_line_naming(err: Exception, path) -> str:
    msg = str(err)
    assert msg.startswith(os.fspath(path) + ":"), msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert len(msg) < 300, msg
    return msg


# ============================================================================ drum map

def test_class_names_and_order():
    assert CLASS_NAMES == ("kick", "snare", "closed_hihat", "open_hihat", "low_tom", "mid_tom",
                           "high_tom", "crash", "ride")
    assert N_CLASSES == 9 == len(CLASS_PITCHES)
    assert DRUM_CHANNEL == 9


def test_class_pitch_groups_are_disjoint():
    seen = {}
    for c, pitches in enumerate(CLASS_PITCHES):
        assert len(set(pitches)) == len(pitches), f"{CLASS_NAMES[c]} lists a pitch twice"
        for p in pitches:
            assert p not in seen, f"pitch {p} is in {CLASS_NAMES[seen[p]]} and {CLASS_NAMES[c]}"
            assert 0 <= p <= 127
            seen[p] = c
    # and class_of_pitch agrees with the table for every pitch, None for the rest
    for p in range(128):
        assert class_of_pitch(p) == seen.get(p)


def test_output_pitches_are_general_midi_and_map_back():
    assert OUTPUT_PITCHES == (36, 38, 42, 46, 43, 47, 50, 49, 51)
    for c, p in enumerate(OUTPUT_PITCHES):
        assert CLASS_PITCHES[c][0] == p
        assert class_of_pitch(p) == c  # what we write reads back as the same class


@pytest.mark.parametrize("pitch, cls", [
    # Roland TD-11 pitches of the Groove MIDI Dataset and their GrooVAE class
    (36, KICK), (38, SNARE), (40, SNARE), (37, SNARE),
    (42, CHH), (22, CHH), (44, CHH), (46, OHH), (26, OHH),
    (43, LOW_TOM), (47, MID_TOM), (50, HIGH_TOM),
    (49, CRASH), (55, CRASH), (57, CRASH), (52, CRASH),
    (51, RIDE), (59, RIDE), (53, RIDE),
    # General MIDI extras
    (35, KICK), (39, SNARE), (41, LOW_TOM), (82, RIDE),
])
def test_class_of_pitch(pitch, cls):
    assert class_of_pitch(pitch) == cls
    assert class_of_pitch(np.int64(pitch)) == cls


def test_roland_tom3_rim_58_is_low_tom():
    assert class_of_pitch(58) == LOW_TOM


@pytest.mark.parametrize("pitch", [0, 20, 21, 88, 100, 127])
def test_unmapped_pitches(pitch):
    assert class_of_pitch(pitch) is None


@pytest.mark.parametrize("name, idx", [
    ("kick", 0), ("bd", 0), ("snare", 1), ("sd", 1), ("SD", 1),
    ("hihat", 2), ("hh", 2), ("hat", 2), ("closed_hihat", 2), ("Closed-HiHat", 2), ("closed hihat", 2),
    ("oh", 3), ("open_hihat", 3), ("low_tom", 4), ("Low Tom", 4), ("mid_tom", 5), ("high-tom", 6),
    ("crash", 7), (" ride ", 8),
])
def test_class_index_names_and_aliases(name, idx):
    assert class_index(name) == idx


@pytest.mark.parametrize("name", ["cowbell", "", "tom", "open"])
def test_class_index_unknown_raises(name):
    with pytest.raises(ValueError, match="unknown drum class"):
        class_index(name)


# ============================================================================ grid

def test_grid_steps_and_timesig_values():
    assert grid.STEPS_PER_BAR == 24
    assert grid.step_of(0.0) == 0
    assert grid.step_of(0.5) == 12
    assert grid.step_of(1 / 3) == 8
    assert grid.step_of(0.99) == 24  # just before the next downbeat: the caller wraps it
    assert grid.timesig_value(4, 4) == 1.0
    assert grid.timesig_value(3, 4) == 0.75
    assert grid.timesig_value(6, 8) == 0.75
    assert grid.timesig_value(6, 4) == 1.5
    assert grid.timesig_value(7, 8) == 0.875


# ============================================================================ loading: timing

def test_tempo_change_90_to_70(tmp_path):
    """Bar 0 at 90 bpm (beat 2/3 s, bar 8/3 s), bar 1 at 70 bpm (beat 6/7 s, bar 24/7 s)."""
    notes = [(0, 36, 100), (960, 38, 90), (BAR, 36, 80), (BAR + 480, 42, 70),
             (2 * BAR - 1, 36, 60)]  # one tick before bar 2: belongs to bar 2, step 0
    path = write_drum_midi(tmp_path / "tempo.mid", notes, tempi=[(0, 90), (BAR, 70)])
    s = load_score(path)
    assert isinstance(s, Score) and len(s) == 5 and s.n_bars == 3
    assert s.name == "tempo" and s.warnings == []
    np.testing.assert_array_equal(s.bar, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(s.step, [0, 12, 0, 6, 0])
    np.testing.assert_array_equal(s.tick, [0, 960, 1920, 2400, 3840])
    np.testing.assert_array_equal(s.bar_ticks, [BAR] * 5)
    bar90, bar70 = 4 * 60 / 90, 4 * 60 / 70
    assert list(s.onset_s) == approx([0.0, bar90 / 2, bar90, bar90 + 60 / 70, bar90 + bar70])
    assert list(s.duration_ms) == approx([1000 * bar90 / 2, 1000 * bar90 / 2, 60_000 / 70,
                                          3 * 60_000 / 70, 1000 * bar70])  # last: to the end of its bar
    assert list(s.tempo_bpm) == approx([90, 90, 70, 70, 70])
    assert list(s.bar_ms) == approx([1000 * bar90] * 2 + [1000 * bar70] * 3)
    np.testing.assert_array_equal(s.timesig, [1.0] * 5)
    np.testing.assert_allclose(s.beat_phase, [0, 0.5, 0, 0.25, 0])
    np.testing.assert_allclose(s.bar_position, [0, 0.5, 1, 1.25, 2])
    np.testing.assert_allclose(s.played_offset, [0, 0, 0, 0, -1 / BAR], atol=1e-12)
    # hits and velocities
    expected_hits = np.zeros((5, 9), bool)
    expected_hits[[0, 2, 4], KICK] = True
    expected_hits[1, SNARE] = True
    expected_hits[3, CHH] = True
    np.testing.assert_array_equal(s.hits, expected_hits)
    np.testing.assert_array_equal(s.velocities[s.hits], [100, 90, 80, 70, 60])
    assert (s.velocities[~s.hits] == 0).all()


def test_tempo_change_in_the_middle_of_a_bar(tmp_path):
    """120 bpm for two beats (1 s), then 60 bpm: beat 4 is at 2 s, the next downbeat at 3 s."""
    notes = [(0, 36, 100), (1440, 38, 100), (BAR, 36, 100)]
    s = load_score(write_drum_midi(tmp_path / "mid.mid", notes, tempi=[(0, 120), (960, 60)]))
    assert list(s.onset_s) == approx([0.0, 2.0, 3.0])
    assert list(s.duration_ms) == approx([2000.0, 1000.0, 4000.0])
    assert list(s.tempo_bpm) == approx([120, 60, 60])
    np.testing.assert_array_equal(s.step, [0, 18, 0])


def test_default_tempo_and_meter_when_the_file_has_none(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "bare.mid", [(0, 36, 100), (480, 38, 100)],
                                   tempi=[], meters=[]))
    assert list(s.tempo_bpm) == approx([120, 120])
    np.testing.assert_array_equal(s.timesig, [1.0, 1.0])
    assert list(s.onset_s) == approx([0.0, 0.5])
    assert s.tempo_map.tempi == [(0, 500_000)] and s.tempo_map.meters == [(0, 4, 4)]


def test_three_four_at_120(tmp_path):
    """3/4 at 120 bpm: bar 1440 ticks, 1.5 s; beats on steps 0, 8, 16."""
    notes = [(0, 36, 100), (480, 38, 100), (960, 38, 100), (1440, 36, 100)]
    s = load_score(write_drum_midi(tmp_path / "waltz.mid", notes, meters=[(0, 3, 4)]))
    np.testing.assert_array_equal(s.bar, [0, 0, 0, 1])
    np.testing.assert_array_equal(s.step, [0, 8, 16, 0])
    np.testing.assert_array_equal(s.timesig, [0.75] * 4)
    assert list(s.bar_ms) == approx([1500.0] * 4)
    np.testing.assert_array_equal(s.bar_ticks, [1440] * 4)
    np.testing.assert_allclose(s.beat_phase, [0, 1 / 3, 2 / 3, 0])
    assert list(s.onset_s) == approx([0.0, 0.5, 1.0, 1.5])
    assert list(s.duration_ms) == approx([500, 500, 500, 1500])


def test_six_eight_at_120(tmp_path):
    """6/8: bar 1440 ticks, eighths every 240 ticks (0.25 s) on steps 0, 4, ..., 20."""
    notes = [(k * 240, 42, 80) for k in range(6)] + [(0, 36, 110), (720, 38, 100)]
    s = load_score(write_drum_midi(tmp_path / "six8.mid", notes, meters=[(0, 6, 8)]))
    assert len(s) == 6
    np.testing.assert_array_equal(s.step, [0, 4, 8, 12, 16, 20])
    np.testing.assert_array_equal(s.timesig, [0.75] * 6)
    assert list(s.bar_ms) == approx([1500.0] * 6)
    assert list(s.onset_s) == approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    assert list(s.duration_ms) == approx([250.0] * 6)
    np.testing.assert_array_equal(s.hits[:, KICK], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(s.hits[:, SNARE], [0, 0, 0, 1, 0, 0])
    assert s.hits[:, CHH].all()
    np.testing.assert_array_equal(s.velocities[0, [KICK, CHH]], [110, 80])


def test_meter_changes_4_4_to_6_4_to_4_4(tmp_path):
    """At 120 bpm: 4/4 bar [0 s, 2 s), 6/4 bar [2 s, 5 s), 4/4 bar [5 s, 7 s)."""
    six = BAR + 6 * TPB  # tick where the second 4/4 starts
    notes = [(0, 36, 100), (BAR, 49, 100), (BAR + 4 * TPB, 38, 100), (six, 36, 100), (six + 3 * TPB, 38, 100)]
    path = write_drum_midi(tmp_path / "meters.mid", notes,
                           meters=[(0, 4, 4), (BAR, 6, 4), (six, 4, 4)])
    s = load_score(path)
    np.testing.assert_array_equal(s.bar, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.step, [0, 0, 16, 0, 18])
    np.testing.assert_array_equal(s.timesig, [1.0, 1.5, 1.5, 1.0, 1.0])
    np.testing.assert_array_equal(s.bar_ticks, [1920, 2880, 2880, 1920, 1920])
    assert list(s.bar_ms) == approx([2000, 3000, 3000, 2000, 2000])
    assert list(s.onset_s) == approx([0.0, 2.0, 4.0, 5.0, 6.5])
    assert list(s.duration_ms) == approx([2000, 2000, 1000, 1500, 500])
    np.testing.assert_allclose(s.beat_phase, [0, 0, 2 / 3, 0, 0.75])
    assert s.tempo_map.meters == [(0, 4, 4), (BAR, 6, 4), (six, 4, 4)]


def test_three_four_then_six_eight_then_four_four_with_tempo_change(tmp_path):
    """3/4 at 120 (1.5 s), 6/8 at 120 (1.5 s), then 4/4 at 60 bpm (4 s a bar)."""
    notes = [(0, 36, 100), (960, 38, 100), (1440, 36, 100), (1440 + 960, 38, 100),
             (2880, 36, 100), (2880 + 960, 38, 100)]
    path = write_drum_midi(tmp_path / "mix.mid", notes, tempi=[(0, 120), (2880, 60)],
                           meters=[(0, 3, 4), (1440, 6, 8), (2880, 4, 4)])
    s = load_score(path)
    np.testing.assert_array_equal(s.bar, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.step, [0, 16, 0, 16, 0, 12])
    np.testing.assert_array_equal(s.timesig, [0.75, 0.75, 0.75, 0.75, 1.0, 1.0])
    assert list(s.bar_ms) == approx([1500, 1500, 1500, 1500, 4000, 4000])
    assert list(s.onset_s) == approx([0.0, 1.0, 1.5, 2.5, 3.0, 5.0])
    assert list(s.duration_ms) == approx([1000, 500, 1000, 500, 2000, 2000])
    assert list(s.tempo_bpm) == approx([120, 120, 120, 120, 60, 60])


def test_beat_three_of_four_four_has_phase_one_half(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "b3.mid", [(2 * TPB, 38, 100)]))
    assert len(s) == 1
    assert s.beat_phase[0] == 0.5 and s.step[0] == 12 and s.bar[0] == 0
    assert s.onset_s[0] == pytest.approx(1.0)
    assert s.duration_ms[0] == pytest.approx(1000.0)  # to the end of its bar


# ============================================================================ loading: grid

def test_same_step_notes_form_one_row_and_offset_is_residual(tmp_path):
    """Step 12 of bar 0 is tick 960; 30 ticks is 30/1920 of a bar."""
    notes = [(930 + 0, 36, 90), (990, 38, 70),   # both round to step 12: one row, mean residual 0
             (BAR + 30, 42, 50),                 # 30 ticks late of bar 1's downbeat
             (BAR + 960 - 25, 46, 40)]           # 25 ticks early of bar 1 step 12
    s = load_score(write_drum_midi(tmp_path / "grid.mid", notes))
    assert len(s) == 3
    np.testing.assert_array_equal(s.bar, [0, 1, 1])
    np.testing.assert_array_equal(s.step, [12, 0, 12])
    assert s.hits[0, KICK] and s.hits[0, SNARE] and s.hits[0].sum() == 2
    np.testing.assert_array_equal(s.velocities[0, [KICK, SNARE]], [90, 70])
    np.testing.assert_allclose(s.played_offset, [0.0, 30 / BAR, -25 / BAR], atol=1e-12)
    np.testing.assert_array_equal(s.tick, [960, BAR, BAR + 960])  # the notated, not the played, tick
    assert list(s.onset_s) == approx([1.0, 2.0, 3.0])


def test_one_late_note_in_a_row_gives_its_residual(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "late.mid", [(0, 36, 100), (480 + 12, 38, 100)]))
    np.testing.assert_allclose(s.played_offset, [0.0, 12 / BAR], atol=1e-12)
    np.testing.assert_array_equal(s.step, [0, 6])


def test_note_just_before_a_downbeat_goes_to_next_bar_step_0(tmp_path):
    """Tick 1915 is step 23.94 of bar 0: it is bar 1's downbeat, played 5 ticks early."""
    s = load_score(write_drum_midi(tmp_path / "early.mid", [(0, 36, 100), (BAR - 5, 49, 100)]))
    np.testing.assert_array_equal(s.bar, [0, 1])
    np.testing.assert_array_equal(s.step, [0, 0])
    np.testing.assert_allclose(s.played_offset, [0.0, -5 / BAR], atol=1e-12)
    assert s.onset_s[1] == pytest.approx(2.0)
    assert s.n_bars == 2


def test_early_note_before_a_meter_change_is_a_fraction_of_the_new_bar(tmp_path):
    """5 ticks before a 4/4 -> 6/4 change: bar 1 step 0, offset -5/2880 (a 6/4 bar is 2880 ticks)."""
    s = load_score(write_drum_midi(tmp_path / "early64.mid", [(0, 36, 100), (BAR - 5, 36, 100)],
                                   meters=[(0, 4, 4), (BAR, 6, 4)]))
    np.testing.assert_array_equal(s.bar, [0, 1])
    np.testing.assert_array_equal(s.step, [0, 0])
    np.testing.assert_allclose(s.played_offset, [0.0, -5 / 2880], atol=1e-12)
    np.testing.assert_array_equal(s.timesig, [1.0, 1.5])


def test_doubled_stroke_keeps_the_loudest_velocity(tmp_path):
    # 38 and 40 are both snare: one hit, the louder velocity
    s = load_score(write_drum_midi(tmp_path / "flam.mid", [(0, 38, 60), (5, 40, 110), (10, 38, 80)]))
    assert len(s) == 1 and s.hits[0].sum() == 1 and s.hits[0, SNARE]
    assert s.velocities[0, SNARE] == 110


def test_type_0_file_and_other_ticks_per_beat(tmp_path):
    """96 ticks per beat, everything in one track: a 4/4 bar is 384 ticks, a step 16."""
    notes = [(0, 36, 100), (96, 42, 100), (192, 38, 100), (384 + 16, 42, 100)]
    s = load_score(write_drum_midi(tmp_path / "t0.mid", notes, tpb=96, midi_type=0, tempi=[(0, 100)]))
    np.testing.assert_array_equal(s.bar, [0, 0, 0, 1])
    np.testing.assert_array_equal(s.step, [0, 6, 12, 1])
    assert list(s.onset_s) == approx([0.0, 0.6, 1.2, 2.4 + 0.1])  # step 1 of bar 1: 2.4 s + 2.4 s / 24
    np.testing.assert_array_equal(s.bar_ticks, [384] * 4)


def test_name_argument_and_pathlike(tmp_path):
    path = write_drum_midi(tmp_path / "named.mid", [(0, 36, 100)])
    assert load_score(path, name="groove").name == "groove"
    assert load_score(str(path)).name == "named"


def test_meter_change_mid_bar_rows_never_share_a_tick(tmp_path):
    """4/4 then 3/4 from tick 2880 (beat 3 of bar 1): tick 2870 is 10 ticks before the 3/4 downbeat."""
    notes = [(0, 36, 100), (2870, 38, 100), (2880, 36, 100)]
    s = load_score(write_drum_midi(tmp_path / "cut.mid", notes, meters=[(0, 4, 4), (2880, 3, 4)]))
    assert np.all(np.diff(s.tick) > 0), (s.bar, s.step, s.tick)
    assert np.all(s.duration_ms > 0)


# ============================================================================ loading: real data

@pytest.mark.skipif(not GMD_FILE.parent.is_dir(), reason=f"Groove MIDI Dataset folder {GMD_FILE.parent} absent")
def test_groove_midi_dataset_file_loads():
    s = load_score(GMD_FILE)
    assert s.warnings == []
    assert s.name == "1_funk-groove1_138_beat_4-4"
    assert list(s.tempo_bpm) == approx([138.0] * len(s), rel=1e-5)
    np.testing.assert_array_equal(s.timesig, 1.0)
    assert list(s.bar_ms) == approx([4 * 60_000 / 138] * len(s), rel=1e-5)
    assert s.tempo_map.ticks_per_beat == 480
    assert ((s.step >= 0) & (s.step < 24)).all()
    assert np.all(np.diff(s.bar * 24 + s.step) > 0)  # rows in time order, one per step
    assert np.all(s.duration_ms > 0)
    assert np.abs(s.played_offset).max() <= 1 / 48 + 1e-12  # never more than half a step
    assert np.abs(s.played_offset).max() > 0  # a human performance, not a quantised score

    # Cross-check against the notes themselves (constant 138 bpm, 4/4, 1920-tick bars).
    notes = read_drum_notes(GMD_FILE)
    keys, per_class_max = set(), np.zeros(9, int)
    for tick, pitch, vel in notes:
        step = round(tick / 80)  # 80 ticks per step; round() is half-to-even like np.rint
        keys.add(step)
        c = class_of_pitch(pitch)
        per_class_max[c] = max(per_class_max[c], vel)
    np.testing.assert_array_equal(s.bar * 24 + s.step, sorted(keys))
    np.testing.assert_array_equal(s.velocities.max(axis=0), per_class_max)
    assert s.hits.sum() <= len(notes)
    # every note is within half a step of its row's notated onset
    sec_per_tick = 434_783 / 1e6 / 480
    for tick, _, _ in notes:
        row = np.searchsorted(s.bar * 24 + s.step, round(tick / 80))
        assert abs(tick * sec_per_tick - s.onset_s[row]) <= s.bar_ms[row] / 48 / 1000 + 1e-9


# ============================================================================ bad input

def _raises_score_error(path) -> str:
    with pytest.raises(ScoreError) as info:
        load_score(path)
    assert isinstance(info.value, RolypolyError)
    return assert_one_line_naming(info.value, path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mid"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    assert "not a readable Standard MIDI File" in _raises_score_error(path)


def test_random_bytes_after_a_midi_header_tag(tmp_path):
    path = tmp_path / "mthd.mid"
    path.write_bytes(b"MThd" + np.random.default_rng(1).bytes(300))
    assert "MIDI" in _raises_score_error(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("kick snare kick snare\nthis is not MIDI\n")
    assert "not a readable Standard MIDI File" in _raises_score_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mid"
    path.write_bytes(b"")
    assert "empty" in _raises_score_error(path)


def test_missing_file(tmp_path):
    assert "no such file" in _raises_score_error(tmp_path / "nope.mid")


def test_folder(tmp_path):
    folder = tmp_path / "folder.mid"
    folder.mkdir()
    assert "folder" in _raises_score_error(folder)


def test_no_drum_notes_only_channel_1(tmp_path):
    path = write_drum_midi(tmp_path / "piano.mid", [(0, 60, 100), (480, 64, 100), (0, 36, 100)], channel=0)
    assert "no drum notes" in _raises_score_error(path)


def test_only_unmapped_drum_pitches(tmp_path):
    path = write_drum_midi(tmp_path / "odd.mid", [(0, 21, 100), (480, 100, 100)])
    msg = _raises_score_error(path)
    assert "no drum notes" in msg and "unmapped" in msg


def test_pitches_outside_the_map_are_dropped_with_a_warning(tmp_path):
    notes = [(0, 36, 100), (480, 21, 90), (960, 21, 90), (960, 100, 80), (1440, 38, 100)]
    s = load_score(write_drum_midi(tmp_path / "unmapped.mid", notes))
    assert len(s) == 2  # the 21s and the 100 are gone: rows at steps 0 and 18 only
    np.testing.assert_array_equal(s.step, [0, 18])
    assert len(s.warnings) == 1
    w = s.warnings[0]
    assert w.startswith(str(tmp_path / "unmapped.mid") + ":") and "\n" not in w
    assert "dropped 3 notes" in w and "21" in w and "100" in w


@pytest.mark.parametrize("n_tracks", [2, 3])
def test_several_drum_tracks_are_merged_with_a_warning(tmp_path, n_tracks):
    extra = [[(480, 38, 90), (960, 42, 80)], [(1440, 38, 70)]][: n_tracks - 1]
    path = write_drum_midi(tmp_path / "multi.mid", [(0, 36, 100), (960, 36, 100)], extra_drum_tracks=extra)
    s = load_score(path)
    np.testing.assert_array_equal(s.step, [0, 6, 12, 18][: n_tracks + 1])
    assert s.hits[2, KICK] and s.hits[2, CHH]
    assert len(s.warnings) == 1
    assert s.warnings[0].startswith(str(path) + ":") and f"merged {n_tracks} drum tracks" in s.warnings[0]


def test_one_drum_track_beside_a_channel_1_track_gives_no_warning(tmp_path):
    path = write_drum_midi(tmp_path / "band.mid", [(0, 36, 100)])
    midi = mido.MidiFile(str(path))
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", channel=0, note=60, velocity=100, time=0),
                                       mido.Message("note_on", channel=0, note=60, velocity=0, time=480)]))
    midi.save(str(path))
    s = load_score(path)
    assert len(s) == 1 and s.warnings == []


@pytest.mark.parametrize("tempo_us_value", [0, tempo_us(5), tempo_us(1000), 0xFFFFFF],
                         ids=["zero", "5bpm", "1000bpm", "3.6bpm"])
def test_unplayable_tempo(tmp_path, tempo_us_value):
    path = write_drum_midi(tmp_path / "tempo.mid", [(0, 36, 100)], tempi_us=[(0, tempo_us_value)])
    assert "tempo" in _raises_score_error(path)


def test_unplayable_tempo_change_later_in_the_file(tmp_path):
    path = write_drum_midi(tmp_path / "later.mid", [(0, 36, 100), (BAR, 36, 100)],
                           tempi_us=[(0, tempo_us(100)), (BAR, tempo_us(1000))])
    msg = _raises_score_error(path)
    assert "1000" in msg and str(BAR) in msg


def test_playable_tempo_extremes_load(tmp_path):
    for bpm in (25, 390):
        s = load_score(write_drum_midi(tmp_path / f"t{bpm}.mid", [(0, 36, 100)], tempi=[(0, bpm)]))
        assert s.tempo_bpm[0] == pytest.approx(bpm, rel=1e-5)


def test_truncated_file_cut_in_half(tmp_path):
    notes = [(k * 240, 42, 80) for k in range(64)] + [(k * 960, 36, 100) for k in range(16)]
    whole = write_drum_midi(tmp_path / "whole.mid", notes, tempi=[(0, 100), (BAR * 2, 110)])
    assert len(load_score(whole)) == 64
    data = whole.read_bytes()
    half = tmp_path / "half.mid"
    half.write_bytes(data[: len(data) // 2])
    assert "not a readable Standard MIDI File" in _raises_score_error(half)


def test_every_truncation_of_a_file_is_a_score_error(tmp_path):
    whole = write_drum_midi(tmp_path / "small.mid", [(0, 36, 100), (480, 38, 90)], tempi=[(0, 100)])
    data = whole.read_bytes()
    cut = tmp_path / "cut.mid"
    for n in range(len(data) - 1):  # the last byte may be end-of-track padding only
        cut.write_bytes(data[:n])
        with pytest.raises(ScoreError) as info:
            load_score(cut)
        assert_one_line_naming(info.value, cut)


@pytest.mark.parametrize("division", [0, 0xE728])  # 0 ticks per beat; SMPTE (-25 fps, 40 ticks)
def test_bad_ticks_per_beat(tmp_path, division):
    good = write_drum_midi(tmp_path / "good.mid", [(0, 36, 100)]).read_bytes()
    assert good[:4] == b"MThd"
    path = tmp_path / "division.mid"
    path.write_bytes(good[:12] + division.to_bytes(2, "big") + good[14:])
    _raises_score_error(path)


def test_type_2_file(tmp_path):
    midi = mido.MidiFile(type=2)
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", channel=9, note=36, velocity=100)]))
    path = tmp_path / "type2.mid"
    midi.save(str(path))
    assert "type 2" in _raises_score_error(path)


class _Timeout(Exception):
    pass


def test_zero_numerator_time_signature_is_a_score_error_not_a_hang(tmp_path):
    path = write_drum_midi(tmp_path / "zero_meter.mid", [(0, 36, 100)], meters=[(0, 0, 4)])

    def on_alarm(signum, frame):
        raise _Timeout("load_score did not return within 1 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(ScoreError) as info:
            load_score(path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert_one_line_naming(info.value, path)


# ============================================================================ writing

def _meter_tempo_file(tmp_path):
    """Tempo 90 -> 70 and meters 4/4 -> 6/4 -> 4/4 -> 3/4 -> 6/8, with every drum class."""
    six, back, waltz, jig = BAR, BAR + 2880, BAR + 2880 + BAR, BAR + 2880 + BAR + 1440
    notes = [(0, 36, 100), (0, 42, 60), (480, 42, 61), (960, 38, 110), (1440, 46, 70),
             (six, 49, 120), (six, 36, 101), (six + 960, 45, 80), (six + 1920, 48, 81), (six + 2400, 50, 82),
             (back, 51, 90), (back + 240, 51, 91), (back + 960, 40, 99), (back + 1600, 38, 98),
             (waltz, 36, 95), (waltz + 480, 38, 96), (waltz + 960, 38, 97),
             (jig, 36, 93), (jig + 720, 38, 94), (jig + 1200, 42, 55)]
    return write_drum_midi(tmp_path / "orig.mid", notes, tempi=[(0, 90), (BAR, 70)],
                           meters=[(0, 4, 4), (six, 6, 4), (back, 4, 4), (waltz, 3, 4), (jig, 6, 8)])


def test_write_without_offsets_reproduces_the_notated_score(tmp_path):
    orig = _meter_tempo_file(tmp_path)
    s = load_score(orig)
    out = tmp_path / "out.mid"
    write_midi(s, out)
    t = load_score(out)
    for k in ("hits", "velocities", "bar", "step", "tick", "bar_ticks", "timesig", "onset_s",
              "duration_ms", "tempo_bpm", "bar_ms"):
        np.testing.assert_array_equal(getattr(t, k), getattr(s, k), err_msg=k)
    np.testing.assert_array_equal(t.played_offset, 0.0)
    assert read_conductor(out) == read_conductor(orig)
    # the player's own drums (a low-mid tom stays 45, a ride bell 53...) on channel 10, at the notated ticks
    assert read_drum_notes(out) == read_drum_notes(orig)
    midi = mido.MidiFile(str(out))
    assert midi.type == 1 and midi.ticks_per_beat == TPB
    channels = {m.channel for tr in midi.tracks for m in tr if m.type in ("note_on", "note_off")}
    assert channels == {DRUM_CHANNEL}


def test_round_trip_with_offsets_and_velocities(tmp_path):
    orig = _meter_tempo_file(tmp_path)
    s = load_score(orig)
    rng = np.random.default_rng(7)
    offsets = rng.uniform(-0.018, 0.018, len(s))  # under half a step (1/48 = 0.0208)
    offsets[0] = abs(offsets[0])                  # nothing can be played before tick 0
    offsets[1] = -0.015
    velocities = np.where(s.hits, rng.integers(1, 128, s.hits.shape), 0)
    out = tmp_path / "performed.mid"
    write_midi(s, out, offsets=offsets, velocities=velocities)

    t = load_score(out)
    np.testing.assert_array_equal(t.hits, s.hits)
    np.testing.assert_array_equal(t.bar, s.bar)
    np.testing.assert_array_equal(t.step, s.step)
    np.testing.assert_array_equal(t.tick, s.tick)
    np.testing.assert_array_equal(t.velocities, velocities)
    # within tick rounding: half a tick of the row's bar
    np.testing.assert_array_less(np.abs(t.played_offset - offsets), 0.5 / s.bar_ticks + 1e-12)
    assert read_conductor(out) == read_conductor(orig)
    # the notes themselves moved by the offsets
    written = read_drum_notes(out)
    pitch_of = {(t, class_of_pitch(p)): p for t, p, _ in read_drum_notes(orig)}  # the file's own pitches
    expected = sorted((int(np.rint(s.tick[r] + offsets[r] * s.bar_ticks[r])), pitch_of[(int(s.tick[r]), c)],
                       int(velocities[r, c])) for r, c in zip(*np.nonzero(s.hits)))
    assert written == expected

    # and a second trip keeps everything (offsets now exact in ticks)
    out2 = tmp_path / "again.mid"
    write_midi(t, out2, offsets=t.played_offset)
    u = load_score(out2)
    np.testing.assert_array_equal(u.tick, t.tick)
    np.testing.assert_allclose(u.played_offset, t.played_offset, atol=1e-12)
    assert read_drum_notes(out2) == read_drum_notes(out)


def test_round_trip_with_ticks_per_beat_not_divisible_by_the_grid(tmp_path):
    """100 ticks per beat: a 4/4 step is 16.67 ticks, written notes round to whole ticks."""
    notes = [(0, 36, 100), (100, 42, 100), (200, 38, 100), (300, 42, 100), (400 + 50, 36, 100)]
    s = load_score(write_drum_midi(tmp_path / "tpb100.mid", notes, tpb=100, tempi=[(0, 97)]))
    offsets = np.array([0.01, -0.01, 0.005, -0.02, 0.0])
    write_midi(s, tmp_path / "o.mid", offsets=offsets)
    t = load_score(tmp_path / "o.mid")
    np.testing.assert_array_equal(t.step, s.step)
    np.testing.assert_array_less(np.abs(t.played_offset - offsets), 0.5 / 400 + 1e-12)
    assert t.tempo_map.ticks_per_beat == 100


def test_large_offset_to_next_bar_and_negative_clip(tmp_path):
    """An offset of -1/96 bar on a downbeat is written before the bar line and read back there."""
    s = load_score(write_drum_midi(tmp_path / "two.mid", [(0, 36, 100), (BAR, 36, 100)]))
    write_midi(s, tmp_path / "o.mid", offsets=[-0.5, -1 / 96])
    notes = read_drum_notes(tmp_path / "o.mid")
    assert [n[0] for n in notes] == [0, BAR - 20]  # the first can only go as early as tick 0
    t = load_score(tmp_path / "o.mid")
    np.testing.assert_array_equal(t.bar, [0, 1])
    np.testing.assert_allclose(t.played_offset, [0.0, -1 / 96])


def test_write_rejects_bad_offsets(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "s.mid", [(0, 36, 100), (480, 38, 100)]))
    with pytest.raises(ValueError, match="shape"):
        write_midi(s, tmp_path / "o.mid", offsets=np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        write_midi(s, tmp_path / "o.mid", offsets=[0.0, np.nan])
    assert not (tmp_path / "o.mid").exists()


def test_write_velocities_are_clipped_to_midi_range(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "s.mid", [(0, 36, 100), (480, 38, 100)]))
    v = np.zeros((2, 9), int)
    v[0, KICK], v[1, SNARE] = 500, -3
    write_midi(s, tmp_path / "o.mid", velocities=v)
    assert [n[2] for n in read_drum_notes(tmp_path / "o.mid")] == [127, 1]


def test_write_to_unwritable_place_is_a_score_error(tmp_path):
    s = load_score(write_drum_midi(tmp_path / "s.mid", [(0, 36, 100)]))
    target = tmp_path / "no" / "such" / "dir" / "o.mid"
    with pytest.raises(ScoreError) as info:
        write_midi(s, target)
    assert_one_line_naming(info.value, target)


# ============================================================================ score_from_grid, TempoMap

def test_score_from_grid_quarter_notes_at_90():
    g = np.zeros((24, 9), bool)
    g[::6, KICK] = True
    s = score_from_grid(g, bpm=90)
    assert len(s) == 4 and s.name == "pattern"
    assert list(s.onset_s) == approx([0, 2 / 3, 4 / 3, 2])
    assert list(s.duration_ms) == approx([2000 / 3] * 4)
    np.testing.assert_array_equal(s.step, [0, 6, 12, 18])
    np.testing.assert_array_equal(s.velocities[:, KICK], 100)
    np.testing.assert_array_equal(s.played_offset, 0.0)


def test_score_from_grid_with_tempo_and_meter_changes(tmp_path):
    """Bar 0 4/4 at 90, bar 1 6/4 at 70, bar 2 3/4 at 70: downbeats and step 12 of each."""
    g = np.zeros((72, 9), bool)
    g[[0, 12, 24, 36, 48, 60], SNARE] = True
    vel = np.where(g, 77, 0)
    s = score_from_grid(g, vel, tempi=[(0, 90), (1, 70)], meters=[(0, 4, 4), (1, 6, 4), (2, 3, 4)], name="x")
    np.testing.assert_array_equal(s.bar, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.step, [0, 12, 0, 12, 0, 12])
    np.testing.assert_array_equal(s.tick, [0, 960, 1920, 1920 + 1440, 4800, 4800 + 720])
    np.testing.assert_array_equal(s.timesig, [1, 1, 1.5, 1.5, 0.75, 0.75])
    bar0 = 8 / 3
    beat70 = 60 / 70
    assert list(s.onset_s) == approx([0, bar0 / 2, bar0, bar0 + 3 * beat70, bar0 + 6 * beat70,
                                      bar0 + 7.5 * beat70])
    assert list(s.bar_ms) == approx([bar0 * 1000] * 2 + [6000 * beat70] * 2 + [3000 * beat70] * 2)
    np.testing.assert_array_equal(s.velocities[:, SNARE], 77)
    assert s.tempo_map.meters == [(0, 4, 4), (1920, 6, 4), (4800, 3, 4)]
    assert s.tempo_map.tempi == [(0, tempo_us(90)), (1920, tempo_us(70))]
    # and it survives a trip through a file
    write_midi(s, tmp_path / "g.mid")
    t = load_score(tmp_path / "g.mid")
    np.testing.assert_array_equal(t.tick, s.tick)
    np.testing.assert_array_equal(t.hits, s.hits)
    assert t.tempo_map.meters == s.tempo_map.meters and t.tempo_map.tempi == s.tempo_map.tempi


def test_score_from_grid_without_hits_raises():
    with pytest.raises(ScoreError, match="^silence: the pattern has no hits$"):
        score_from_grid(np.zeros((24, 9), bool), name="silence")


def test_tempo_map_seconds_and_bpm():
    tm = TempoMap(ticks_per_beat=480, tempi=[(0, 500_000), (960, 1_000_000), (1920, 250_000)])
    np.testing.assert_allclose(tm.seconds([0, 480, 960, 1440, 1920, 2400]), [0, 0.5, 1, 2, 3, 3.25])
    np.testing.assert_allclose(tm.seconds(np.array([720.0])), [0.75])
    np.testing.assert_allclose(tm.bpm_at([0, 959, 960, 1919, 5000]), [120, 120, 60, 60, 240])


def test_tempo_map_bars():
    tm = TempoMap(ticks_per_beat=480, meters=[(0, 4, 4), (1920, 3, 4), (3360, 6, 8)])
    starts, lengths, values = tm.bars(5000)
    np.testing.assert_array_equal(starts, [0, 1920, 3360, 4800])  # the last bar holds tick 5000
    np.testing.assert_array_equal(lengths, [1920, 1440, 1440, 1440])
    np.testing.assert_array_equal(values, [1, 0.75, 0.75, 0.75])
