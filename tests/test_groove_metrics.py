"""Groove metrics, baselines and `rolypoly evaluate groove` (GrooVAE Table 1)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rolypoly import paths
from rolypoly.pretrain.evaluate_groove import evaluate, evaluate_sets, format_table
from rolypoly.pretrain.groove_baselines import knn, knn_generate, mean_velocity, neighbours, quantized
from rolypoly.pretrain.groove_data import GrooveSet
from rolypoly.pretrain.groove_metrics import (distribution_kl, gaussian_kl, groove_metrics, metrical_position,
                                     note_f1, timing_kl, timing_mae_ms, timing_mse_16th, velocity_kl)

needs_gmd = pytest.mark.skipif(not (paths.gmd_dir() / "info.csv").is_file(),
                               reason=f"Groove MIDI Dataset not at {paths.gmd_dir()}")


def grooves(H, V=None, O=None, bpm=120.0, take=None, spb=4) -> GrooveSet:
    H = np.asarray(H, np.float32)
    V = H * 0.5 if V is None else np.asarray(V, np.float32)
    O = np.zeros_like(H) if O is None else np.asarray(O, np.float32)
    n = len(H)
    take = np.arange(n) if take is None else np.asarray(take)
    return GrooveSet(H, V, O, np.full(n, bpm, np.float32), take, [f"t{i}" for i in range(n)],
                     "16th" if spb == 4 else "triplet", spb)


# ---- metrics ----------------------------------------------------------------------------

def test_timing_mae_and_mse_by_hand():
    H = np.zeros((2, 4, 1))
    H[0, 0] = H[1, 2] = 1
    O_t = np.zeros_like(H)
    O_p = np.zeros_like(H)
    O_p[0, 0], O_p[1, 2] = 0.1, -0.2
    O_p[0, 1] = 0.4                                   # no hit there: never counted
    # 0.1 of a 125 ms step (120 bpm) and 0.2 of a 250 ms step (60 bpm)
    assert timing_mae_ms(O_t, O_p, H, bpm=[120, 60]) == pytest.approx((12.5 + 50) / 2)
    assert timing_mse_16th(O_t, O_p, H) == pytest.approx((0.01 + 0.04) / 2)
    # on the triplet grid (12 steps a beat) 0.3 step = 0.1 of a 16th, 1/40 beat = 12.5 ms at 120 bpm
    O3 = np.zeros((1, 12, 1))
    O3[0, 0] = 0.3
    H3 = (O3 != 0).astype(float)
    assert timing_mse_16th(np.zeros_like(O3), O3, H3, steps_per_beat=12) == pytest.approx(0.01)
    assert timing_mae_ms(np.zeros_like(O3), O3, H3, [120], steps_per_beat=12) == pytest.approx(12.5)


def test_metrical_positions():
    assert metrical_position(8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # triplet grid: 16ths land on 0, 3, 6, 9; 8th triplets (4, 8) join the nearest 16th
    assert metrical_position(12, 12)[[0, 3, 6, 9, 4, 8]].tolist() == [0, 1, 2, 3, 1, 3]


def test_kl_of_identical_distributions_is_zero():
    rng = np.random.default_rng(1)
    H = (rng.random((10, 32, 9)) < 0.3).astype(float)
    O = rng.normal(0, 0.1, H.shape) * H
    V = rng.random(H.shape) * H
    assert timing_kl(O, H, O, H) == pytest.approx(0.0, abs=1e-9)
    assert velocity_kl(V, H, V, H) == pytest.approx(0.0, abs=1e-9)
    m = groove_metrics((H, V, O), (H, V, O), bpm=np.full(10, 100.0))
    assert m["timing_mae_ms"] == 0 and m["timing_kl"] == 0 and m["velocity_kl"] == 0
    assert "f1" not in m and groove_metrics((H, V, O), (H, V, O), bpm=np.full(10, 100.0),
                                            hits="predicted")["f1"] == 1


def test_kl_of_known_gaussians_matches_closed_form():
    # data on the "1" of the beat: -1, +1 (mean 0, var 1); model: -1, 3 (mean 1, var 4)
    H = np.zeros((1, 8, 1))
    H[0, [0, 4]] = 1
    data = np.zeros_like(H)
    data[0, [0, 4], 0] = [-1, 1]
    model = np.zeros_like(H)
    model[0, [0, 4], 0] = [-1, 3]
    closed = 0.5 * (math.log(4) + (1 + 1) / 4 - 1)
    mean, groups = distribution_kl(data, H, model, H)
    assert mean == pytest.approx(closed)
    assert groups[0] == pytest.approx(closed) and all(math.isnan(g) for g in groups[1:])
    assert float(gaussian_kl(0, 1, 1, 4)) == pytest.approx(closed)
    # a second group ("&", steps 2 and 6) with identical data and model: the mean halves
    H[0, [2, 6]] = 1
    data[0, [2, 6], 0] = model[0, [2, 6], 0] = [0.2, 0.4]
    assert distribution_kl(data, H, model, H)[0] == pytest.approx(closed / 2)


def test_degenerate_prediction_has_no_finite_kl():
    O = np.array([[[0.1], [-0.1], [0.05], [0.2]], [[0.0], [0.1], [-0.2], [0.1]]])
    H = np.ones_like(O)
    assert timing_kl(O, H, np.zeros_like(O), H) == math.inf
    m = groove_metrics((H, O + 0.5, O), (H, O + 0.5, np.zeros_like(O)), bpm=[120, 120])
    assert m["timing_kl"] is None and m["velocity_kl"] == 0   # the paper's "N/A"
    assert timing_kl(np.zeros_like(O), H, np.zeros_like(O), H) == 0   # point vs same point


def test_note_f1_by_hand():
    t = np.zeros((1, 4, 3))
    p = np.zeros((1, 4, 3))
    t[0, 0, 0] = t[0, 1, 0] = t[0, 2, 1] = 1          # 3 target notes
    p[0, 0, 0] = p[0, 2, 1] = p[0, 3, 1] = 1          # 2 right, 1 wrong
    p[0, 1, 2] = 1                                    # class 2 is not scored below
    assert note_f1(t, p, classes=[0, 1]) == {"precision": pytest.approx(2 / 3),
                                             "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3)}
    assert note_f1(t, p)["precision"] == pytest.approx(0.5)


def test_predicted_hits_score_matched_notes_and_bootstrap():
    rng = np.random.default_rng(0)
    H = (rng.random((40, 32, 9)) < 0.3).astype(float)
    O = rng.normal(0, 0.1, H.shape) * H
    V = rng.random(H.shape) * H
    P = H.copy()
    P[:, ::2] = 0                                     # half the steps missed
    m = groove_metrics((H, V, O), (P, V, O + 0.1 * P), bpm=np.full(40, 120.0), hits="predicted",
                       bootstrap=100)
    assert m["recall"] == pytest.approx(P.sum() / H.sum(), abs=1e-4) and m["precision"] == 1
    assert m["scored_notes"] == int(P.sum())
    assert m["timing_mae_ms"] == pytest.approx(12.5, abs=1e-3)    # 0.1 step at 120 bpm
    lo, hi = m["ci95"]["timing_mae_ms"]
    assert lo <= 12.5 <= hi


# ---- baselines --------------------------------------------------------------------------

def _patterns():
    """Training windows: 4 distinct patterns, each with its own offset and velocity."""
    T, C = 8, 3
    H = np.zeros((4, T, C))
    H[0, ::2, 0] = 1                                  # 8ths on class 0
    H[1, 1::2, 1] = 1                                 # off-beats on class 1
    H[2, :, 2] = 1                                    # every step on class 2
    H[3, ::4, 0] = 1                                  # quarters on class 0 (subset of 0)
    O = H * np.array([0.1, -0.1, 0.2, -0.2])[:, None, None]
    V = H * np.array([0.2, 0.4, 0.6, 0.8])[:, None, None]
    return grooves(H, V, O)


def test_knn_picks_the_nearest_windows():
    train = _patterns()
    q = train.H[[1, 2]]
    assert neighbours(train.H, q, k=1)[:, 0].tolist() == [1, 2]
    # the quarters share 2 hits with the 8ths and 2 with themselves: the tie goes to fewer own hits
    assert neighbours(train.H, train.H[[3]], k=2)[0].tolist() == [3, 0]
    assert neighbours(train.H, train.H[[3]], k=2, similarity="jaccard")[0].tolist() == [3, 0]
    # chunked = unchunked
    many = np.repeat(train.H, 5, axis=0)
    assert (neighbours(train.H, many, k=3, chunk=2) == neighbours(train.H, many, k=3)).all()
    H, V, O = knn(train, q, k=1)
    assert (H == q).all()
    np.testing.assert_allclose(V, train.V[[1, 2]])
    np.testing.assert_allclose(O, train.O[[1, 2]])


def test_knn_averages_the_neighbours_that_hit():
    train = _patterns()
    q = train.H[[0]]                                  # nearest: itself (4 shared), then quarters (2)
    H, V, O = knn(train, q, k=2)
    on_quarters = np.zeros(8, bool)
    on_quarters[::4] = True
    np.testing.assert_allclose(O[0, on_quarters, 0], (0.1 - 0.2) / 2)
    np.testing.assert_allclose(O[0, ~on_quarters & (q[0, :, 0] > 0), 0], 0.1)   # only window 0 hits
    _, _, O_all = knn(train, q, k=2, mean="all")      # the paper's plain mean counts the miss as 0
    np.testing.assert_allclose(O_all[0, 2, 0], 0.05)
    assert (V[q == 0] == 0).all() and (O[q == 0] == 0).all()


def test_quantized_has_zero_offsets_and_mean_velocity():
    train = _patterns()
    H, V, O = quantized(train, train.H)
    assert (O == 0).all() and (H == train.H).all()
    np.testing.assert_allclose(mean_velocity(train), [(4 * 0.2 + 2 * 0.8) / 6, 0.4, 0.6])
    np.testing.assert_allclose(V[0, 0], [(4 * 0.2 + 2 * 0.8) / 6, 0, 0])
    _, Vg, _ = quantized(train, train.H, per_class=False)
    assert np.allclose(Vg[train.H > 0], train.V[train.H > 0].mean())


def test_knn_generate_takes_the_majority_of_the_neighbours_hits():
    train = _patterns()
    keys = train.H.copy()
    keys[..., 2] = 0                                  # infill class 2: the input lacks it
    H, V, O = knn_generate(train, keys, keys[[1]], [2], k=1, base_H=keys[[1]])
    assert (H[0, :, 1] == train.H[1, :, 1]).all()     # the given part kept
    assert H[0, :, 2].sum() == 0                      # window 1 has no class 2
    H, V, O = knn_generate(train, train.H[..., :2], train.H[[2], :, :2], [2], k=1)
    assert H[0, :, 2].all() and np.allclose(O[0, :, 2], 0.2) and np.allclose(V[0, :, 2], 0.6)


# ---- evaluation -------------------------------------------------------------------------

class Oracle:
    """A 'model' that plays the test windows exactly as recorded (it knows them, in order)."""

    def __init__(self, test):
        self.test, self.at = test, 0

    def generate(self, H_in, V_in, O_in, *, H_target=None, z_from=None, temperature=0.0, velocity_spread=None,
                 seed=None):
        s = slice(self.at, self.at + len(H_in))
        self.at = (self.at + len(H_in)) % len(self.test.H)
        return self.test.H[s], self.test.V[s], self.test.O[s]


def _random_set(n, seed, takes=4):
    rng = np.random.default_rng(seed)
    H = (rng.random((n, 32, 9)) < 0.25).astype(np.float32)
    O = (rng.normal(-0.05, 0.15, H.shape).clip(-0.5, 0.5) * H).astype(np.float32)
    V = (rng.uniform(0.2, 1, H.shape) * H).astype(np.float32)
    return grooves(H, V, O, bpm=100.0, take=np.arange(n) % takes)


@pytest.mark.parametrize("task", ["humanize", "drumify", "infill", "transfer"])
def test_evaluate_sets_end_to_end(task):
    train, test = _random_set(60, 1), _random_set(20, 2)
    r = evaluate_sets(task, train, test, Oracle(test), split="test", bootstrap=20)
    json.dumps(r)                                     # plain JSON throughout
    assert r["windows"] == 20 and r["takes"] == 4 and set(r["rows"]) == {"quantized", "knn",
                                                                          "knn_jaccard", "model",
                                                                          "model_velocity_mean"}
    model = r["rows"]["model"]
    assert model["timing_mae_ms"] == 0 and model["timing_kl"] == 0 and model["velocity_kl"] == 0
    assert r["rows"]["knn"]["timing_mae_ms"] > 0
    if task == "humanize":
        assert all(t["met"] is True for t in r["targets"].values())
        assert r["lean"]["without_take_lean_ms"] == 0 and r["lean"]["without_window_lean_ms"] == 0
    if task in ("drumify", "infill"):
        assert "skipped" in r["rows"]["quantized"] and model["f1"] == 1
        assert r["classes"] == ([2, 3] if task == "infill" else list(range(9)))
    if task == "transfer":
        assert set(r["transfer"]) == {"shuffled", "humanize_by_transfer", "groove_transfer"}
    assert "knn" in format_table(r)


def test_evaluate_without_model_says_why():
    train, test = _random_set(30, 3), _random_set(10, 4)
    r = evaluate_sets("humanize", train, test, None, skip_reason="no weights at X")
    assert r["rows"]["model"] == {"skipped": "no weights at X"}
    assert all(t["met"] is None for t in r["targets"].values())
    assert "skipped: no weights at X" in format_table(r)


@needs_gmd
def test_evaluate_on_a_few_real_takes(tmp_path):
    r = evaluate("humanize", limit=3, weights=tmp_path / "none.safetensors", bootstrap=0)
    assert r["windows"] > 0 and "skipped" in r["rows"]["model"]
    q = r["rows"]["quantized"]
    assert q["timing_kl"] is None and q["timing_mae_ms"] > 0 and q["notes"] == r["notes"]


def test_cli_missing_dataset_is_one_line(tmp_path, capsys):
    from rolypoly.cli import main

    assert main(["evaluate", "groove", "--task", "humanize", "--gmd", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rolypoly: ") and "info.csv missing" in err and "\n" not in err


def test_lean_removed_mae_takes_away_each_groups_mean_error_only():
    from rolypoly.pretrain.groove_metrics import lean_removed_mae_ms

    O = np.zeros((2, 4, 1))
    H = np.ones_like(O)
    pred = np.array([0.1, 0.1, 0.1, 0.1, 0.3, 0.1, 0.3, 0.1])[:, None].reshape(2, 4, 1)
    # Take 0 leans by 0.1 step all through: nothing left. Take 1 wobbles ±0.1 step around 0.2.
    got = lean_removed_mae_ms(O, pred, H, bpm=[120.0, 120.0], groups=[0, 1])
    assert got == pytest.approx(0.5 * 0.1 * 125.0)
    assert lean_removed_mae_ms(O, pred, H, bpm=[120.0, 120.0], groups=[0, 0]) > got
