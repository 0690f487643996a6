"""The output bench's capture side: a capture that missed cycles the player ran is laid on the player's cycles.

No JACK here: the player's output, its cycles and a capture that lost some
of them are made in numpy, as JACK would deliver them.
"""
from __future__ import annotations

import numpy as np

from rolypoly.lab.bench_output import capture_times, find_hits, midi_capture_times, on_player_cycles

PERIOD, RATE = 64, 48000


def _take(lost_blocks, rows=24, gap=2400, seed=0):
    """One-shots with long tails every ``gap`` frames; the capture misses ``lost_blocks`` of the player's cycles."""
    rng = np.random.default_rng(seed)
    shots = [(rng.standard_normal(6000) * np.exp(-np.arange(6000) / 1500)).astype(np.float32) for _ in range(rows)]
    starts = 1000 + gap * np.arange(rows) + rng.integers(0, PERIOD, rows)
    blocks = (starts[-1] + 7000) // PERIOD + 1
    out = np.zeros(blocks * PERIOD, np.float32)
    for s, x in zip(starts, shots):
        out[s:s + len(x)] += x
    frames = np.arange(blocks) * PERIOD  # JACK's frame counter at each cycle the player ran
    keep = np.setdiff1d(np.arange(blocks), lost_blocks)
    cycles = np.column_stack([frames[keep], frames[keep] / RATE * 1e6, np.full(len(keep), 1.0 / RATE)])
    data = {"period": PERIOD, "audio": out.reshape(blocks, PERIOD)[keep].reshape(-1), "cycles": cycles}
    return data, frames, [[x] for x in shots], starts


def _expected(times_us, starts):
    return np.searchsorted(times_us, starts / RATE * 1e6)


def test_a_capture_that_missed_a_cycle_in_a_tail_no_longer_loses_the_rows_after_it():
    lost = [(1000 + 2400 * 5 + 1500) // PERIOD]  # in the loud tail of row 5, before row 6
    data, frames, rows, starts = _take(lost)
    times, _ = capture_times(data)
    found, _ = find_hits(data["audio"], rows, _expected(times, starts), PERIOD, 32)
    assert (found[6:] < 0).any()  # the capture alone: the tail taken out one block off spoils what follows

    audio, heard, times, counts = on_player_cycles(data, frames)
    seams = counts.pop("seams")
    assert counts == {"capture_missed_player_cycles": 1, "capture_cycles_player_did_not_run": 0}
    found, quality = find_hits(audio, rows, _expected(times, starts), PERIOD, 32, heard=heard, seams=seams)
    assert found.tolist() == starts.tolist()
    assert np.nanmax(quality) < 1e-6


def test_a_row_half_heard_is_still_found_on_its_frame():
    head = (1000 + 2400 * 8) // PERIOD
    data, frames, rows, starts = _take([head, head + 1])  # the first frames of row 8's start
    audio, heard, times, counts = on_player_cycles(data, frames)
    found, _ = find_hits(audio, rows, _expected(times, starts), PERIOD, 32, heard=heard, seams=counts["seams"])
    assert found.tolist() == starts.tolist()


def test_a_row_whose_start_the_capture_missed_is_not_judged_and_spoils_nothing():
    head = (1000 + 2400 * 8) // PERIOD
    data, frames, rows, starts = _take(list(range(head, head + 6)))  # all of row 8's first 256 frames
    audio, heard, times, counts = on_player_cycles(data, frames)
    found, _ = find_hits(audio, rows, _expected(times, starts), PERIOD, 32, heard=heard, seams=counts["seams"])
    assert found[8] == -2
    others = np.arange(len(starts)) != 8
    assert found[others].tolist() == starts[others].tolist()


def test_cycles_the_player_did_not_run_are_left_out_of_the_capture():
    data, frames, rows, starts = _take([])
    skipped = (1000 + 2400 * 3 + 700) // PERIOD  # the player missed this cycle; the capture got something else
    player = np.delete(frames, skipped)
    audio, heard, times, counts = on_player_cycles(data, player)
    assert counts["capture_cycles_player_did_not_run"] == 1 and heard.all()
    assert len(audio) == len(data["audio"]) - PERIOD


def test_a_late_player_callback_that_read_the_next_cycle_is_put_back_one_cycle():
    data, frames, rows, starts = _take([])
    late = frames.copy()
    late[40] = late[41]  # the player's callback of cycle 40 ran late and read cycle 41's counter
    audio, heard, times, counts = on_player_cycles(data, late)
    assert counts["capture_missed_player_cycles"] == 0 and counts["capture_cycles_player_did_not_run"] == 0
    np.testing.assert_array_equal(audio, data["audio"])


def test_midi_capture_puts_a_late_callbacks_notes_back_and_finds_the_cycles_it_did_not_run():
    # Cycles 0..9 at 64 frames; the capture's callback for cycle 3 ran late and read cycle 4's times
    # (frame 256 twice), and it did not run cycles 6 and 7 (frame 384 -> 512).
    frames = np.array([0, 64, 128, 256, 256, 320, 512, 576])
    starts = frames / RATE
    starts[3] = 256 / RATE
    table = np.column_stack([np.arange(8), frames, starts, starts + 1e-4])
    table = np.vstack([[-1, -64, np.nan, np.nan], table])            # before the origin was set: left out
    events = np.array([[3, 0x99, 36, 90], [4, 0x99, 38, 90], [6, 0x99, 42, 90]])
    at = np.array([256 + 10, 256 + 20, 512 + 5]) / RATE             # as each callback stamped them
    data = {"period": PERIOD, "rate": RATE, "events": events, "event_times": at, "cycles": table}
    times, woke, start, missed = midi_capture_times(data)
    np.testing.assert_allclose(times * RATE, [192 + 10, 256 + 20, 512 + 5], atol=1e-6)
    np.testing.assert_allclose(start * RATE, [192, 256, 512], atol=1e-6)
    np.testing.assert_allclose(missed * RATE, [[384, 511]], atol=1e-6)
    assert np.all(woke > start)
