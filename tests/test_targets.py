"""Training targets (eqs. 1-2), the diff alignment, off-beat notes and take checks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rolypoly.take import Take, TakeWriter, read_take, validate_take
from rolypoly.features import DESCRIPTOR, DIFF
from rolypoly.score_growth import OffbeatLedger, OffbeatNote, offbeat_notes
from rolypoly.targets import cancel_scaling_ab, diff_from_features, take_arrays, take_targets

YHAT = [0.01, -0.01, 0.02, 0.0]
DIFFS = [0.02, 0.0, -0.02, 0.04]


# ----------------------------------------------------------------------------- eqs. (1)-(2)

def test_formula_on_a_hand_computed_case():
    # By hand, population σ (ddof=0): μ_ŷ = 0.005, σ_ŷ² = (25+225+225+25)e-6/4 = 1.25e-4;
    # μ_diff = 0.01, σ_diff² = (1+1+9+9)e-4/4 = 5e-4; σ_diff/σ_ŷ = sqrt(4) = 2.
    # d = ŷ + diff/2 = [0.02, -0.01, 0.01, 0.02]; μ_d = 0.01; σ_d² = (1+4+0+1)e-4/4 = 1.5e-4;
    # σ_d/σ_ŷ = sqrt(1.2); y = (d - μ_d)/sqrt(1.2).
    res = take_targets(YHAT, DIFFS)
    assert res.update and res.mask.all()
    np.testing.assert_allclose(res.d, [0.02, -0.01, 0.01, 0.02], atol=1e-15)
    np.testing.assert_allclose(res.y, np.array([0.01, -0.02, 0.0, 0.01]) / math.sqrt(1.2), atol=1e-15)
    s = res.stats
    assert s.ddof == 0 and s.n_onsets == 4 and s.rules == ()
    assert s.sigma_yhat == pytest.approx(math.sqrt(1.25e-4), rel=1e-12)   # ddof=1 would be sqrt(500e-6/3)
    assert s.sigma_diff == pytest.approx(math.sqrt(5e-4), rel=1e-12)
    assert s.mu_d == pytest.approx(0.01, rel=1e-12) and s.sigma_d == pytest.approx(math.sqrt(1.5e-4), rel=1e-12)
    # Targets have the drum's spread and are centred.
    assert res.y.std() == pytest.approx(s.sigma_yhat, rel=1e-12) and abs(res.y.mean()) < 1e-15
    assert "σ_diff=0.02236" in str(s) and json.dumps(s.as_dict())


def test_A_and_B_weights():
    # A = 2 cancels the ratio 2: d = ŷ + diff = [0.03, -0.01, 0, 0.04], μ_d = 0.015,
    # σ_d² = (2.25+6.25+2.25+6.25)e-4/4 = 4.25e-4, σ_d/σ_ŷ = sqrt(3.4); B = 0.5 halves y.
    res = take_targets(YHAT, DIFFS, A=2.0, B=0.5)
    np.testing.assert_allclose(res.d, [0.03, -0.01, 0.0, 0.04], atol=1e-15)
    np.testing.assert_allclose(res.y, 0.5 * np.array([0.015, -0.025, -0.015, 0.025]) / math.sqrt(3.4), atol=1e-15)
    # A = 0: the partner is ignored, y = B·(ŷ - μ_ŷ) (σ_d = σ_ŷ).
    res0 = take_targets(YHAT, DIFFS, A=0.0, B=3.0)
    np.testing.assert_allclose(res0.d, YHAT)
    np.testing.assert_allclose(res0.y, 3 * (np.array(YHAT) - 0.005), atol=1e-15)
    # B is a plain factor; a negative A turns the partner term around.
    np.testing.assert_allclose(take_targets(YHAT, DIFFS, B=-2).y, -2 * take_targets(YHAT, DIFFS).y)
    np.testing.assert_allclose(take_targets(YHAT, DIFFS, A=-1).d, np.array(YHAT) - np.array(DIFFS) / 2)


def test_rows_without_partner_onset_get_no_target_and_do_not_enter_the_statistics():
    yhat = [0.5, 0.01, -0.01, -0.3, 0.02, 0.0]      # ŷ of onset-less rows must not matter
    diff = [None, 0.02, 0.0, float("nan"), -0.02, 0.04]
    res = take_targets(yhat, diff)
    assert res.mask.tolist() == [False, True, True, False, True, True]
    assert np.isnan(res.y[~res.mask]).all() and np.isnan(res.d[~res.mask]).all()
    np.testing.assert_allclose(res.y[res.mask], take_targets(YHAT, DIFFS).y, atol=1e-15)
    assert res.stats.n_rows == 6 and res.stats.n_onsets == 4


def test_first_take_from_zero_offsets_follows_the_partner():
    # σ_ŷ = 0: σ_ŷ := σ_diff, so d = diff and y = diff - μ_diff (not all zeros).
    res = take_targets([0.0] * 4, DIFFS)
    np.testing.assert_allclose(res.d, DIFFS, atol=1e-15)
    np.testing.assert_allclose(res.y, np.array(DIFFS) - 0.01, atol=1e-15)
    assert res.stats.sigma_yhat == 0 and res.stats.sigma_yhat_used == pytest.approx(math.sqrt(5e-4))
    assert res.stats.rules[0].startswith("σ_ŷ = 0")
    # A late swung 8th (positive diff) gets a later target than the on-beats.
    assert res.y[3] > 0 > res.y[2]
    # A constant non-zero ŷ is the same case.
    np.testing.assert_allclose(take_targets([0.004] * 4, DIFFS).y, res.y, atol=1e-15)


def test_min_sigma_floors_sigma_yhat():
    res = take_targets([0.0] * 4, DIFFS, min_sigma=0.005)
    np.testing.assert_allclose(res.y, (np.array(DIFFS) - 0.01) * 0.005 / math.sqrt(5e-4), atol=1e-15)
    assert res.y.std() == pytest.approx(0.005, rel=1e-12)
    assert "min_sigma" in res.stats.rules[0]
    # Only a floor: a σ_ŷ above it is left alone.
    np.testing.assert_allclose(take_targets(YHAT, DIFFS, min_sigma=0.001).y, take_targets(YHAT, DIFFS).y)
    for bad in (0.0, -0.01, float("nan")):
        with pytest.raises(ValueError, match="min_sigma"):
            take_targets(YHAT, DIFFS, min_sigma=bad)


def test_single_onset_is_not_scaled():
    res = take_targets([0.01, 0.02, -0.01], [None, 0.03, None], A=2.0)
    assert res.mask.tolist() == [False, True, False]
    assert res.d[1] == pytest.approx(0.02 + 2 * 0.03)          # d = ŷ + A·diff
    assert res.y[1] == 0.0                                      # one value, centred
    assert any("single partner onset" in r for r in res.stats.rules)
    assert any("σ_d = 0" in r for r in res.stats.rules)
    assert res.update


def test_constant_diff_is_not_scaled():
    yhat = np.array(YHAT)
    res = take_targets(yhat, [0.01] * 4, A=3.0)
    np.testing.assert_array_equal(res.d, yhat + 3.0 * 0.01)
    np.testing.assert_allclose(res.y, yhat - yhat.mean(), atol=1e-15)   # σ_d = σ_ŷ
    assert res.stats.rules == ("σ_diff = 0: no scaling, d = ŷ + A·diff",)


def test_constant_d_gives_zero_targets():
    # diff = -2ŷ: σ_diff/σ_ŷ = 2, so d = ŷ - ŷ = 0 everywhere; no normalisation, y = B·(d - μ_d).
    res = take_targets([0.01, 0.0, -0.01], [-0.02, 0.0, 0.02], B=5.0)
    np.testing.assert_allclose(res.y, 0.0, atol=1e-15)
    assert any(r.startswith("σ_d = 0") for r in res.stats.rules)
    # A σ_d below SIGMA_EPS (1e-6 bar) counts as zero: its noise is kept as is, not blown up to σ_ŷ.
    res = take_targets([0.01, 0.0, -0.01], [-0.02, 0.0, 0.02 + 3e-8], B=5.0)
    assert 0 < res.stats.sigma_d < 1e-6 and np.abs(res.y).max() < 1e-6
    np.testing.assert_array_equal(res.y, 5.0 * (res.d - res.stats.mu_d))


def test_no_partner_onset_means_no_update():
    res = take_targets(YHAT, [None] * 4)
    assert not res.update and "no partner onset" in res.reason
    assert not res.mask.any() and np.isnan(res.y).all()
    assert res.stats.n_onsets == 0 and "0/4" in str(res.stats)
    with pytest.raises(ValueError, match="no partner onset"):
        cancel_scaling_ab(res.stats)
    empty = take_targets([], [])
    assert not empty.update and "no rows" in empty.reason


@pytest.mark.parametrize("yhat, diff, match", [
    ([0.0, float("nan")], [0.0, 0.0], "yhat .*row 1"),
    ([0.0, float("inf")], [0.0, 0.0], "yhat"),
    ([0.0, 0.0], [0.0, float("-inf")], "diff .*row 1"),
    ([0.0, 0.0], [0.0], "rows"),
    ([[0.0]], [0.0], "1-D"),
])
def test_bad_numbers_are_refused(yhat, diff, match):
    with pytest.raises(ValueError, match=match):
        take_targets(yhat, diff)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="A must be finite"):
        take_targets(YHAT, DIFFS, A=float("nan"))
    with pytest.raises(ValueError, match="B must be a number"):
        take_targets(YHAT, DIFFS, B="x")


@pytest.mark.parametrize("yhat", [YHAT, [0.0] * 4])
def test_cancel_scaling_gives_plain_sum_exactly(yhat):
    A, B = cancel_scaling_ab(take_targets(yhat, DIFFS).stats)
    res = take_targets(yhat, DIFFS, A, B)
    d = np.array(yhat) + np.array(DIFFS)
    np.testing.assert_array_equal(res.d, d)
    np.testing.assert_array_equal(res.y, d - res.stats.mu_d)


def test_cancel_scaling_on_a_noisy_take():
    rng = np.random.default_rng(1)
    yhat = rng.normal(0, 0.005, 64)
    diff = rng.normal(0.01, 0.03, 64)
    diff[rng.random(64) < 0.3] = np.nan
    first = take_targets(yhat, diff)
    A, B = cancel_scaling_ab(first.stats)
    assert A == first.stats.sigma_diff / first.stats.sigma_yhat
    res = take_targets(yhat, diff, A, B)
    m = res.mask
    np.testing.assert_array_equal(res.d[m], yhat[m] + diff[m])
    np.testing.assert_array_equal(res.y[m], res.d[m] - res.stats.mu_d)
    # Degenerate: constant diff has no scaling to cancel (A = 1), B still cancels σ_d.
    A, B = cancel_scaling_ab(take_targets(YHAT, [0.01] * 4).stats)
    assert A == 1.0
    np.testing.assert_array_equal(take_targets(YHAT, [0.01] * 4, A, B).d, np.array(YHAT) + 0.01)


# ----------------------------------------------------------------------------- diff alignment

def test_diff_from_features_is_the_next_rows_diff_column():
    X = np.zeros((5, 15))
    # Row t+1 holds diff_t; carried-over rows repeat both DIFF and DESCRIPTOR.
    X[1:, DIFF] = [0.01, 0.01, -0.02, -0.02]
    X[1:, DESCRIPTOR] = [0.5, 0.5, 0.3, 0.7]
    np.testing.assert_array_equal(diff_from_features(X), [0.01, np.nan, -0.02, -0.02, np.nan])
    np.testing.assert_array_equal(diff_from_features(X, mark_carried=False), [0.01, 0.01, -0.02, -0.02, np.nan])
    # Before any partner onset the engine shows 0: no diff for row 0 here.
    assert np.isnan(diff_from_features(np.zeros((3, 15)))).all()
    with pytest.raises(ValueError, match="shape"):
        diff_from_features(np.zeros(15))
    X[2, 3] = np.inf
    with pytest.raises(ValueError, match="row 2, column 3"):
        diff_from_features(X)


class _Agent:
    mean = np.zeros(15, np.float32)

    def prime(self, X):
        self.t = 0

    def step(self, row):
        self.t += 1
        return 0.003 * ((self.t % 3) - 1)


def test_take_diff_and_shifted_features_agree(tmp_path):
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.engine import Engine
    from rolypoly.lab.partner_audio import clicks
    from rolypoly.realtime.sources import FileSource
    from rolypoly.demo import demo_score

    score = demo_score().head(40)
    rng = np.random.default_rng(0)
    times = score.onset_s[::2] + 0.01 + rng.normal(0, 0.004, len(score.onset_s[::2]))  # every other hit
    writer = TakeWriter(tmp_path / "take.jsonl", {"score": score.name})
    Engine(score, _Agent(), FileSource(audio=clicks(times, sample_rate=48000)), SimClock(), take=writer).run()
    writer.close({})
    rows = read_take(tmp_path / "take.jsonl").rows
    _, diff = take_arrays(rows)
    shifted = diff_from_features([r["features"] for r in rows])
    assert np.isfinite(diff).sum() >= 10 and np.isnan(diff).sum() >= 10
    # Same hits with and without a partner onset, same values (features are stored to 6 decimals).
    np.testing.assert_array_equal(np.isnan(shifted[:-1]), np.isnan(diff[:-1]))
    np.testing.assert_allclose(shifted[:-1], diff[:-1], atol=1e-6)
    # Unshifted, the column is one hit off: it would not match.
    seen = np.array([r["features"][DIFF] for r in rows])
    both = np.isfinite(diff)
    assert not np.allclose(seen[both], diff[both], atol=1e-6)


# ----------------------------------------------------------------------------- off-beat notes

def _rows(steps, bar_s=2.0):
    """Take rows at the given absolute steps (24 per bar), bars of ``bar_s`` seconds."""
    return [{"row": i, "bar": s // 24, "step": s % 24, "notated": s * bar_s / 24} for i, s in enumerate(steps)]


def test_offbeat_middle_third_in_outer_thirds_out():
    rows = _rows([0, 12])                      # one gap of 1 s: middle third is (1/3, 2/3) s
    assert [n.key for n in offbeat_notes(rows, [0.5])] == [(0, 6)]
    assert offbeat_notes(rows, [0.30]) == []   # first third
    assert offbeat_notes(rows, [0.70]) == []   # last third
    assert offbeat_notes(rows, [1 / 3 - 1e-9, 2 / 3 + 1e-9]) == []
    assert [n.key for n in offbeat_notes(rows, [0.34])] == [(0, 4)]
    n = offbeat_notes(rows, [0.5])[0]
    assert (n.after_row, n.time, n.length_ms) == (0, 0.5, pytest.approx(500.0))


def test_offbeat_quantises_to_24_steps_per_bar():
    rows = _rows([0, 12])                      # 1/24 bar = 1/12 s
    for t, step in ((0.40, 5), (0.45, 5), (0.46, 6), (0.54, 6), (0.55, 7), (0.625, 8)):
        assert [n.key for n in offbeat_notes(rows, [t])] == [(0, step)], t
    # Across a bar line: hits at step 18 of bar 0 and step 6 of bar 1; the middle lands on bar 1, step 0.
    rows = _rows([18, 30])
    assert [n.key for n in offbeat_notes(rows, [rows[0]["notated"] + 0.5])] == [(1, 0)]
    # A tight gap (1 step) quantises onto a neighbour's step: not off-beat.
    rows = _rows([0, 1])
    assert offbeat_notes(rows, [rows[1]["notated"] * 0.4]) == []
    assert offbeat_notes(rows, [rows[1]["notated"] * 0.6]) == []


def test_offbeat_one_per_window_the_longest():
    rows = _rows([0, 12, 24])
    notes = offbeat_notes(rows, [0.40, 0.55, 1.5])
    assert [n.key for n in notes] == [(0, 7), (0, 18)]  # 0.55 lasts to the hit at 1.0 s; 0.40 only to 0.55
    assert [n.after_row for n in notes] == [0, 1]
    assert len(offbeat_notes(rows, np.linspace(0.35, 0.65, 7))) == 1
    # The longest wins wherever it is (0.70 is outside the middle third but ends the 0.60 note) ...
    assert [n.time for n in offbeat_notes(rows, [0.35, 0.60, 0.70])] == [0.35]
    # ... and the earliest on a tie (both last 0.125 s).
    assert [n.key for n in offbeat_notes(rows, [0.4375, 0.5625, 0.6875])] == [(0, 5)]


def test_offbeat_length_must_exceed_10_ms():
    rows = _rows([0, 12])
    assert offbeat_notes(rows, [0.5, 0.505]) == []           # a double trigger: neither counts
    assert len(offbeat_notes(rows, [0.5, 0.515])) == 1        # 15 ms apart: two notes, one kept
    assert offbeat_notes(rows, [0.5, 0.515], min_gap_ms=20) == []
    # The last row has no window after it.
    assert offbeat_notes(_rows([0]), [0.5]) == []
    with pytest.raises(ValueError, match="onsets"):
        offbeat_notes(rows, [0.5, float("nan")])


def test_ledger_tentative_then_permanent():
    a, b = OffbeatNote(0, 6, 0.5, 0, 500.0), OffbeatNote(3, 18, 7.5, 9, 200.0)
    ledger = OffbeatLedger()
    assert ledger.propose(0, [a, b]) == {"new": [(0, 6), (3, 18)], "confirmed": []}
    assert ledger.status(0, 6) == "tentative" and ledger.grown_rows() == []
    # Tentative notes are skipped in training.
    assert ledger.trainable_mask([0, 0, 3], [0, 6, 18]).tolist() == [True, False, False]
    # The same take again confirms nothing.
    assert ledger.propose(0, [a])["confirmed"] == []
    # A later take confirms a; b stays tentative; a new one comes in.
    c = OffbeatNote(5, 3, 10.2, 20, 80.0)
    assert ledger.propose(1, [a, c]) == {"new": [(5, 3)], "confirmed": [(0, 6)]}
    assert ledger.grown_rows() == [(0, 6)] and ledger.tentative() == [(3, 18), (5, 3)]
    assert ledger.trainable_mask([0, 3], [6, 18]).tolist() == [True, False]
    assert ledger.propose(2, [a])["confirmed"] == []          # permanent stays permanent
    # Session storage: JSON round trip.
    back = OffbeatLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back == ledger and back.notes[(0, 6)]["confirmed_by"] == 1
    with pytest.raises(ValueError, match="ledger"):
        OffbeatLedger.from_dict({"notes": []})
    with pytest.raises(ValueError, match="status"):
        OffbeatLedger.from_dict({"version": 1, "notes": [{"bar": 0, "step": 1, "status": "maybe",
                                                          "proposed_by": 0}]})


# ----------------------------------------------------------------------------- take checks

def _take(n=8, footer=None, score_hash="abc", diff=0.01, changes=None):
    rows = [{"row": i, "bar": i // 4, "step": 6 * (i % 4), "yhat": 0.0, "notated": 0.5 * i,
             "intended": 0.5 * i, "played": 0.5 * i, "features": [0.0] * 15, "onsets": [],
             "diff": diff} for i in range(n)]
    for (i, key), v in (changes or {}).items():
        rows[i][key] = v
    return Take({"score": "song", "score_hash": score_hash, "rows": 12}, rows, footer)


def test_validate_complete_take():
    check = validate_take(_take(12, footer={"rows": 12}), "abc", 12)
    assert check.usable and len(check.rows) == 12 and check.reasons == []


def test_validate_refuses_another_score():
    check = validate_take(_take(12, footer={}, score_hash="zzz"), "abc", 12)
    assert not check.usable and len(check.rows) == 0 and "another score" in check.reasons[0]
    take = _take(12, footer={})
    take.header.score_hash = None
    assert "no score hash" in validate_take(take, "abc", 12).reasons[0]
    assert "12 rows" in validate_take(_take(12, footer={}), "abc", 13).reasons[0]


def test_validate_truncated_take_keeps_complete_bars(tmp_path):
    # Written and cut like a crash: 10 of 12 rows, no closing line.
    writer = TakeWriter(tmp_path / "t.jsonl", {"score": "song", "score_hash": "abc", "rows": 12})
    for r in _take(10).rows:
        writer.row(r)
    writer.close({})
    text = (tmp_path / "t.jsonl").read_text()
    (tmp_path / "t.jsonl").chmod(0o644)
    (tmp_path / "t.jsonl").write_text(text[:text.index('"type": "end"') - 1])
    take = read_take(tmp_path / "t.jsonl")
    assert not take.complete
    check = validate_take(take, "abc", 12)
    assert check.usable and [r["row"] for r in check.rows] == list(range(8))   # the third bar (rows 8, 9) dropped
    assert "cut short" in check.reasons[0] and "bar 3" in check.reasons[0]  # bars counted from 1: the third bar
    # A take closed after an error is cut short too.
    check = validate_take(_take(10, footer={"error": "MIDI gone"}), "abc", 12)
    assert len(check.rows) == 8 and "MIDI gone" in check.reasons[0]
    # Stopped early on purpose: every row written is complete.
    check = validate_take(_take(10, footer={"stopped_early": True}), "abc", 12)
    assert check.usable and len(check.rows) == 10 and "stopped early" in check.reasons[0]
    # All rows there but no closing line: nothing to drop.
    assert len(validate_take(_take(12), "abc", 12).rows) == 12
    # Only a partial first bar: nothing usable.
    check = validate_take(_take(3), "abc", 12)
    assert not check.usable and "no complete bar" in check.reasons[-1]


def test_validate_no_partner_onsets_is_no_update():
    check = validate_take(_take(12, footer={}, diff=None), "abc", 12)
    assert not check.usable and "no partner onset" in check.reasons[-1] and len(check.rows) == 12


@pytest.mark.parametrize("key, value", [("yhat", float("nan")), ("played", float("inf")),
                                        ("diff", float("nan")), ("features", [float("nan")] * 15),
                                        ("yhat", None)])
def test_validate_refuses_non_finite_numbers(key, value):
    check = validate_take(_take(12, footer={}, changes={(5, key): value}), "abc", 12)
    assert not check.usable and check.reasons[0].startswith("row 5:") and key in check.reasons[0]


def test_validate_refuses_rows_out_of_order():
    take = _take(12, footer={})
    take.rows[[3, 4]] = take.rows[[4, 3]]
    assert "not in order" in validate_take(take, "abc", 12).reasons[0]


def test_an_onset_a_hit_heard_in_its_window_is_not_an_offbeat_note():
    rows = [{"row": 0, "bar": 0, "step": 0, "notated": 0.0, "onsets": [0.36]},
            {"row": 1, "bar": 0, "step": 12, "notated": 1.0}]
    assert offbeat_notes(rows, [0.36]) == []              # heard by hit 0 (a wide window)
    rows[0]["onsets"] = []
    assert [(n.bar, n.step) for n in offbeat_notes(rows, [0.36])] == [(0, 4)]
