"""The virtual partner: feel, coupling to the drums, causality, determinism, and what the engine hears."""
from __future__ import annotations

import numpy as np
import pytest

from rolypoly.realtime.clock import RealClock, SimClock
from rolypoly.realtime.engine import Engine, EngineSettings
from rolypoly.onsets import detect
from rolypoly.lab.virtual_partner import VirtualPartner, beat_positions
from rolypoly.demo import demo_score
from rolypoly.score import score_from_grid

EIGHTH_MS = 250.0  # at 120 bpm


class ConstantAgent:
    """Stand-in performer: every hit ``y_ms`` late (a constant ŷ)."""

    def __init__(self, y_ms=0.0, bar_s=2.0):
        self.y = y_ms / 1000.0 / bar_s
        self.mean = np.zeros(15, np.float32)

    def prime(self, X):
        pass

    def step(self, row):
        return self.y


def eighths(bars=4, bpm=120.0):
    """Straight 8ths on the hi-hat, kick on the beats."""
    grid = np.zeros((24 * bars, 9), bool)
    grid[::3, 2] = True
    grid[::6, 0] = True
    return score_from_grid(grid, bpm=bpm, name="eighths")


@pytest.fixture(scope="module")
def score():
    return eighths()


def take(score, partner, y_ms=0.0, clock=None, **settings):
    settings.setdefault("partner_offset_s", partner.partner_offset_s)
    engine = Engine(score, ConstantAgent(y_ms, score.bar_ms[0] / 1000.0), partner, clock or SimClock(),
                    settings=EngineSettings(**settings))
    result = engine.run()
    return result, result.diff * score.bar_ms  # diff in ms, positive when the partner is late


def offbeat_rows(score):
    return (score.step % 6) == 3


# ---------------------------------------------------------------------------------------- feel

@pytest.mark.parametrize("instrument,tol", [("guitar", 0.5), ("bass", 3.0), ("keys", 0.5)])
def test_swing_third_delays_offbeats_by_a_third_of_an_eighth(score, instrument, tol):
    partner = VirtualPartner(score, instrument=instrument, swing=1 / 3)
    # The paper's morph widens the diff window to dur / 2.5: a third of an 8th is at dur / 3.
    result, diff = take(score, partner, window_factor=2.5)
    off = offbeat_rows(score)
    assert np.isfinite(diff).all()
    np.testing.assert_allclose(diff[off], EIGHTH_MS / 3, atol=tol)
    np.testing.assert_allclose(diff[~off], 0.0, atol=tol)
    assert partner.notes["offbeat"].tolist() == off.tolist()


def test_swing_follows_the_scores_tempo_and_meter():
    score = demo_score()  # 96 bpm 4/4, 6/8 in bars 4-7, 78 bpm from bar 12
    partner = VirtualPartner(score, classes=["closed_hihat", "ride"], swing=1 / 3)
    result, diff = take(score, partner, window_factor=2.5)
    notes = partner.notes
    rows = np.searchsorted(score.onset_s, notes["notated"])
    eighth_ms = 30_000.0 / score.tempo_bpm[rows]
    compound = score.timesig[rows] == 0.75
    steps = score.step[rows]
    assert notes["offbeat"].tolist() == ((steps % 6 == 3) & ~compound).tolist()  # 6/8 is not swung
    assert notes["offbeat"].sum() == 40
    expected = np.where(notes["offbeat"], eighth_ms / 3, 0.0)
    np.testing.assert_allclose(notes["swing_ms"], expected, atol=1e-3)
    np.testing.assert_allclose(diff[rows], expected, atol=0.5)


@pytest.mark.parametrize("offset_ms", [15.0, -15.0])
def test_offset_lays_back_or_rushes(score, offset_ms):
    partner = VirtualPartner(score, offset_ms=offset_ms, partner_offset_s=0.2)
    result, diff = take(score, partner)
    np.testing.assert_allclose(diff, offset_ms, atol=0.5)
    np.testing.assert_allclose(partner.true_onsets - score.onset_s, offset_ms / 1000, atol=1 / 48000)


def test_structure_dependent_timing(score):
    per_bar = [0.0, 20.0, -10.0, 5.0]
    result, diff = take(score, VirtualPartner(score, structure_ms=per_bar, partner_offset_s=0.1))
    for b, ms in enumerate(per_bar):
        np.testing.assert_allclose(diff[score.bar == b], ms, atol=0.5)
    phrase = VirtualPartner(score, structure_ms=[10.0, -10.0], phrase_bars=2)
    assert phrase.notes["structure_ms"].tolist() == [10.0] * 16 + [-10.0] * 16
    func = VirtualPartner(score, structure_ms=lambda bar, phase: 8.0 * bar + (5.0 if phase >= 0.5 else 0.0))
    np.testing.assert_allclose(func.notes["structure_ms"], 8.0 * score.bar + 5.0 * (score.step >= 12))


def test_accents_set_velocity_per_beat(score):
    partner = VirtualPartner(score, instrument="clicks", accents=[1.0, 0.4, 0.7, 0.4])
    assert partner.notes["velocity"][:8].tolist() == pytest.approx([1.0, 1.0, 0.4, 0.4, 0.7, 0.7, 0.4, 0.4])
    partner.start(SimClock(), 0.0)
    partner.poll(10.0)
    audio, sr = partner.recording(), partner.sample_rate
    peak = [np.abs(audio[int(t * sr):int(t * sr) + 480]).max() for t in score.onset_s[:8]]
    np.testing.assert_allclose(peak, partner.notes["velocity"][:8], rtol=1e-6)


# ---------------------------------------------------------------------------------------- coupling

def test_gain_one_follows_late_drums_gain_zero_does_not(score):
    _, diff0 = take(score, VirtualPartner(score, gain=0.0), y_ms=20.0)
    np.testing.assert_allclose(diff0, -20.0, atol=0.5)
    partner = VirtualPartner(score, gain=1.0)
    _, diff1 = take(score, partner, y_ms=20.0)
    assert diff1[0] == pytest.approx(-20.0, abs=0.5)     # nothing heard yet before the first note
    assert abs(np.mean(diff1[3:])) < 1.0
    np.testing.assert_allclose(partner.notes["coupling_ms"][1:], 20.0, atol=1e-6)
    _, diff_half = take(score, VirtualPartner(score, gain=0.5), y_ms=20.0)
    np.testing.assert_allclose(diff_half[3:], -10.0, atol=0.5)


def test_notes_use_only_drum_hits_heard_before_they_were_decided(score):
    played = []
    partner = VirtualPartner(score, gain=1.0, listen=3, lookahead_ms=60.0, swing=0.2, jitter_ms=5, seed=2)
    engine = Engine(score, ConstantAgent(20.0), partner, SimClock(),
                    on_hit=lambda t, at: played.append(at))
    engine.run()
    played = np.array(played)
    notes = partner.notes
    assert notes["decided"].all()
    before = np.searchsorted(played, notes["decided_at"], side="left")
    assert notes["heard"].tolist() == np.minimum(before, 3).tolist()
    # Decided a lookahead before the note's earliest time, and sounding no earlier than that.
    early = np.minimum(notes["feel_ms"] + notes["jitter_ms"], 0.0)
    np.testing.assert_allclose(notes["decided_at"], notes["notated"] + (early - 60.0) / 1000, atol=1e-9)
    assert (notes["played"] >= notes["decided_at"]).all() and not notes["clamped"].any()


def drive(partner, hits, step_s):
    """Play drum hits at engine times (notated, played) into the partner, polling every ``step_s``."""
    partner.start(SimClock(), 0.0)
    found, k, now, end = [], 0, 0.0, hits[-1][1] + 1.0
    while now < end:
        now += step_s
        while k < len(hits) and hits[k][1] <= now:
            found.append(partner.poll(hits[k][1]).copy())   # the engine polls, then plays
            partner.drum_played(*hits[k])
            k += 1
        found.append(partner.poll(now).copy())
    return np.concatenate(found), partner.notes.copy(), partner.recording()


def test_decisions_do_not_depend_on_how_often_the_engine_polls(score):
    rng = np.random.default_rng(0)
    hits = [(t, t + d) for t, d in zip(score.onset_s, rng.normal(0.0, 0.015, len(score)))]
    kw = dict(gain=0.7, jitter_ms=6.0, swing=0.25, partner_offset_s=0.0, seed=4)
    fine = drive(VirtualPartner(score, **kw), hits, 0.001)
    coarse = drive(VirtualPartner(score, **kw), hits, 0.7)
    assert fine[1].tobytes() == coarse[1].tobytes()
    assert np.array_equal(fine[2], coarse[2])
    np.testing.assert_array_equal(fine[0]["time"], coarse[0]["time"])


def test_a_note_is_never_placed_in_audio_already_heard(score):
    # Drums 120 ms early, fully followed, decided only 10 ms ahead: the note cannot go back in time.
    partner = VirtualPartner(score, gain=1.0, lookahead_ms=10.0, partner_offset_s=0.5)
    hits = [(t + 0.5, t + 0.5 - 0.12) for t in score.onset_s]
    drive(partner, hits, 0.003)
    notes = partner.notes
    assert notes["clamped"][1:].all()
    np.testing.assert_allclose(notes["played"][1:], notes["decided_at"][1:], atol=1 / 48000)


# ---------------------------------------------------------------------------------------- noise, truth, determinism

def test_jitter_matches_the_requested_sigma():
    score = eighths(bars=4, bpm=240.0)  # a 4/4 grid the 200 notes can sit on
    times = np.arange(200) * 0.25 + 0.1
    partner = VirtualPartner(score, times_s=times, jitter_ms=8.0, seed=11)
    partner.start(SimClock(), 0.0)
    onsets = partner.poll(60.0)
    jitter = partner.notes["jitter_ms"]
    assert np.std(jitter) == pytest.approx(8.0, rel=0.15) and abs(np.mean(jitter)) < 2.0
    np.testing.assert_allclose((partner.true_onsets - times) * 1000, jitter, atol=0.011)
    assert len(onsets) == 200
    np.testing.assert_allclose(onsets["time"], partner.true_onsets, atol=0.5e-3)


def test_engine_diffs_are_the_partners_jitter(score):
    partner = VirtualPartner(score, jitter_ms=8.0, seed=3, partner_offset_s=0.2)
    _, diff = take(score, partner)
    np.testing.assert_allclose(diff, partner.notes["jitter_ms"], atol=0.5)
    assert 5.0 < np.std(diff) < 11.0


@pytest.mark.parametrize("instrument,tol_ms", [("guitar", 0.5), ("bass", 3.0), ("keys", 0.5)])
def test_detected_onsets_are_the_notes_played(score, instrument, tol_ms):
    partner = VirtualPartner(score, instrument=instrument, swing=0.3, jitter_ms=10.0, seed=5,
                             partner_offset_s=0.2, noise_db=-60.0)
    result, _ = take(score, partner)
    truth = partner.true_onsets
    assert len(result.onsets) == len(truth) == len(score)
    err = (result.onsets - truth) * 1000
    assert (err > -0.5).all() and (err < tol_ms).all()   # noise may move a backtrack a few samples
    # The recording is what was heard: detecting it offline finds the same onsets.
    offline, _, _ = detect(partner.recording(), partner.sample_rate)
    np.testing.assert_allclose(offline - partner.partner_offset_s, result.onsets, atol=1e-9)


def test_same_seed_same_take_other_seed_other_take(score):
    def play(seed, takes=1):
        p = VirtualPartner(score, jitter_ms=10.0, gain=0.5, seed=seed)
        for _ in range(takes):
            _, diff = take(score, p, y_ms=10.0)
        return p.true_onsets, p.recording(), diff

    a, b, c = play(7), play(7), play(8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2], equal_nan=True)
    assert not np.array_equal(a[0], c[0])
    # Each take of one partner has fresh noise, the same in every process.
    second, second_again = play(7, takes=2), play(7, takes=2)
    assert not np.array_equal(second[0], a[0])
    assert np.array_equal(second[1], second_again[1])


# ---------------------------------------------------------------------------------------- the part

def test_part_from_rows_classes_times_or_bar_positions():
    score = demo_score()
    snare = score.hits[:, 1]
    by_class = VirtualPartner(score, classes="snare")
    assert np.array_equal(by_class.notated_s, score.onset_s[snare])
    assert np.array_equal(VirtualPartner(score, rows=snare).notated_s, by_class.notated_s)
    assert np.array_equal(VirtualPartner(score, rows=np.flatnonzero(snare)).notated_s, by_class.notated_s)
    by_times = VirtualPartner(score, times_s=score.onset_s[snare])
    assert by_times.notes.tobytes() == by_class.notes.tobytes()
    positions = (score.bar + score.step / 24)[snare]
    by_bars = VirtualPartner(score, bar_positions=positions)
    np.testing.assert_allclose(by_bars.notated_s, by_class.notated_s, atol=1e-9)
    assert np.array_equal(by_bars.notes["beat"], by_class.notes["beat"])
    # Snares half-way through a beat (the fills, the "and" of 4) are off-beats.
    assert by_class.notes["offbeat"].tolist() == ((score.step[snare] % 6 == 3) & (score.timesig[snare] == 1)).tolist()
    with pytest.raises(ValueError):
        VirtualPartner(score, times_s=[0.0], bar_positions=[0.0])
    with pytest.raises(ValueError):
        VirtualPartner(score, gain=1.5)


def test_beat_positions_in_three_four_and_six_eight():
    grid = np.zeros((48, 9), bool)
    grid[::4, 2] = True                                    # 6 per bar
    score = score_from_grid(grid, meters=[(0, 3, 4), (1, 6, 8)])
    pos = beat_positions(score.tempo_map, score.tick)
    assert pos["offbeat"].tolist() == [False, True] * 3 + [False] * 6
    assert pos["beat"].tolist() == [0, 0, 1, 1, 2, 2] + [0, 0, 0, 1, 1, 1]


def test_mismatched_partner_offset_is_reported(score):
    partner = VirtualPartner(score, partner_offset_s=0.3)
    take(score, partner, partner_offset_s=0.1)
    assert partner.problems and "partner_offset_s" in partner.problems[0]
    assert "virtual guitar" in partner.name


def test_real_clock_take():
    score = eighths(bars=1)
    partner = VirtualPartner(score, offset_ms=15.0, swing=1 / 3, partner_offset_s=0.1)
    result, diff = take(score, partner, clock=RealClock(), lead_in_s=0.2, window_factor=2.5)
    assert len(result.onsets) == len(partner.true_onsets) == len(score)
    np.testing.assert_allclose(result.onsets, partner.true_onsets, atol=0.5e-3)
    expected = 15.0 + offbeat_rows(score) * EIGHTH_MS / 3
    # Hits leave within a millisecond or so of their time on a busy machine.
    assert np.median(np.abs(diff - expected)) < 3.0
