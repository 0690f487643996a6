"""Feature rows, normalisation, the two timing agents, the streaming Performer and weight files."""
from __future__ import annotations

import gc
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rolypoly import features as F
from rolypoly.agents import (AGENT_KINDS, WEIGHTS_DIR, Performer, TimingLSTM, TimingSeq2Seq, default_weights,
                             load_agent, load_metadata, make_agent, save_agent)
from rolypoly.errors import CheckpointError, RolypolyError
from rolypoly.features import fill_partner, fit_normalisation, score_features
from rolypoly.score import score_from_grid

KICK, SNARE, CHH = 0, 1, 2


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small LSTMs run far faster (and steadier) on one intra-op thread on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pattern_score(bars: int = 18, seed: int = 0, density: float = 0.12):
    """A random drum part with tempo and meter changes (a few hundred rows)."""
    rng = np.random.default_rng(seed)
    hits = rng.random((bars * 24, 9)) < density
    hits[::24, KICK] = True  # every bar has a downbeat
    vel = np.where(hits, rng.integers(30, 128, hits.shape), 0)
    return score_from_grid(hits, vel, tempi=[(0, 96), (bars // 2, 78)],
                           meters=[(0, 4, 4), (bars // 3, 3, 4), (2 * bars // 3, 6, 8)])


@pytest.fixture(scope="module")
def score():
    s = _pattern_score()
    assert 250 <= len(s) <= 500
    return s


@pytest.fixture(scope="module")
def X(score):
    """Score features plus random partner columns (descriptor in 0..1, diff ~ 1/100 bar)."""
    rng = np.random.default_rng(1)
    X = score_features(score)
    X[:, F.DESCRIPTOR] = rng.random(len(X))
    X[:, F.DIFF] = rng.normal(0.0, 0.01, len(X))
    return X


@pytest.fixture(scope="module")
def norm(score):
    return fit_normalisation(score_features(score))


def _agent(kind, norm, seed=0, **config):
    """A random-init agent with a fitted normalisation.

    The head is scaled up so ŷ spreads over ~1e-2 of a bar instead of ~1e-4: a 1e-5
    tolerance then tells a right answer from a wrong one. The partner columns'
    input weights, which a fresh agent starts at zero, get random values as a
    fine-tuned agent's would, so the partner path is exercised too.
    """
    torch.manual_seed(seed)
    agent = make_agent(kind, **config)
    agent.set_normalisation(*norm)
    first = agent.lstm if kind == "lstm" else agent.decoder
    with torch.no_grad():
        agent.head.weight.mul_(100.0)
        agent.head.bias.uniform_(-0.5, 0.5)
        first.weight_ih_l0[:, F.DESCRIPTOR:F.DIFF + 1].uniform_(-0.1, 0.1)
    return agent


@pytest.fixture(scope="module", params=AGENT_KINDS)
def agent(request, norm):
    return _agent(request.param, norm)


def _stream(performer, X, prime_rows=None):
    performer.prime(X if prime_rows is None else prime_rows)
    return np.array([performer.step(row) for row in X])


# ============================================================================ features

def test_feature_layout():
    assert F.N_FEATURES == 15 and F.N_SCORE_FEATURES == 13
    assert (F.DURATION, F.TEMPO, F.TIMESIG, F.PHASE, F.DESCRIPTOR, F.DIFF) == (9, 10, 11, 12, 13, 14)
    assert F.HITS == slice(0, 9)
    assert F.NAMES == ("hit_0", "hit_1", "hit_2", "hit_3", "hit_4", "hit_5", "hit_6", "hit_7", "hit_8",
                       "duration_ms", "tempo_bpm", "timesig", "beat_phase", "descriptor", "diff_prev")


def test_score_features_hand_values():
    """Bar 0 4/4 at 90 bpm: kick+hat on 1, snare on 3; bar 1 3/4 at 70 bpm: kick on 1, hat on 2."""
    g = np.zeros((48, 9), bool)
    g[0, [KICK, CHH]] = True
    g[12, SNARE] = True
    g[24, KICK] = True
    g[32, CHH] = True
    s = score_from_grid(g, tempi=[(0, 90), (1, 70)], meters=[(0, 4, 4), (1, 3, 4)])
    X = score_features(s)
    assert X.shape == (4, 15) and X.dtype == np.float32
    expected_hits = np.zeros((4, 9), np.float32)
    expected_hits[0, [KICK, CHH]] = 1
    expected_hits[1, SNARE] = 1
    expected_hits[2, KICK] = 1
    expected_hits[3, CHH] = 1
    np.testing.assert_array_equal(X[:, F.HITS], expected_hits)
    # durations: half a 90-bpm bar twice, one 70-bpm beat, then two beats to the end of the 3/4 bar
    np.testing.assert_allclose(X[:, F.DURATION], [4000 / 3, 4000 / 3, 60_000 / 70, 120_000 / 70], rtol=1e-5)
    np.testing.assert_allclose(X[:, F.TEMPO], [90, 90, 70, 70], rtol=1e-5)
    np.testing.assert_array_equal(X[:, F.TIMESIG], [1.0, 1.0, 0.75, 0.75])
    np.testing.assert_allclose(X[:, F.PHASE], [0.0, 0.5, 0.0, 1 / 3], rtol=1e-6)
    np.testing.assert_array_equal(X[:, F.DESCRIPTOR], 0.0)
    np.testing.assert_array_equal(X[:, F.DIFF], 0.0)


def test_score_features_clip_long_durations():
    """At 40 bpm a 4/4 bar is 6 s: the duration column stops at MAX_DURATION_MS."""
    g = np.zeros((48, 9), bool)
    g[[0, 24, 30], KICK] = True
    s = score_from_grid(g, bpm=40)
    assert F.MAX_DURATION_MS == 4000.0
    np.testing.assert_allclose(s.duration_ms, [6000, 1500, 4500])
    np.testing.assert_allclose(score_features(s)[:, F.DURATION], [4000, 1500, 4000])


def test_score_feature_phase_in_unit_interval(score):
    X = score_features(score)
    assert X.shape == (len(score), 15)
    assert (X[:, F.PHASE] >= 0).all() and (X[:, F.PHASE] < 1).all()
    assert set(np.unique(X[:, F.TIMESIG])) == {0.75, 1.0}
    assert set(np.unique(X[:, F.HITS])) == {0.0, 1.0}
    assert np.isfinite(X).all()


def test_fill_partner_in_place():
    row = np.zeros(15, np.float32)
    out = fill_partner(row, 0.25, -0.0125)
    assert out is row
    assert row[F.DESCRIPTOR] == 0.25 and row[F.DIFF] == np.float32(-0.0125)
    assert not row[:F.DESCRIPTOR].any()


def test_fit_normalisation(score, X):
    mean, scale = fit_normalisation(X)  # X has random partner columns: they must not matter
    assert mean.shape == scale.shape == (15,)
    assert mean.dtype == scale.dtype == np.float32
    # hit columns untouched
    np.testing.assert_array_equal(mean[F.HITS], 0.0)
    np.testing.assert_array_equal(scale[F.HITS], 1.0)
    assert X[:, F.HITS].mean() > 0.05  # ...although their data mean is not 0
    # partner columns: fixed, whatever the data
    assert mean[F.DESCRIPTOR] == 0.0 and mean[F.DIFF] == 0.0
    assert scale[F.DESCRIPTOR] == 1.0
    assert scale[F.DIFF] == np.float32(1 / 48)
    # score columns standardised on the data
    for c in (F.DURATION, F.TEMPO, F.TIMESIG, F.PHASE):
        assert mean[c] == pytest.approx(X[:, c].astype(np.float64).mean(), rel=1e-5)
        assert scale[c] == pytest.approx(X[:, c].astype(np.float64).std(), rel=1e-4)
        z = (X[:, c] - mean[c]) / scale[c]
        assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, abs=1e-4)
    # same answer without partner data
    m2, s2 = fit_normalisation(score_features(score))
    np.testing.assert_array_equal(m2, mean)
    np.testing.assert_array_equal(s2, scale)


def test_fit_normalisation_constant_column_has_floor_scale():
    g = np.zeros((24 * 4, 9), bool)
    g[::6, KICK] = True
    X = score_features(score_from_grid(g, bpm=100))  # tempo, timesig, duration all constant
    mean, scale = fit_normalisation(X)
    assert mean[F.TEMPO] == pytest.approx(100.0, rel=1e-5)
    assert scale[F.TEMPO] == np.float32(1e-3) and scale[F.TIMESIG] == np.float32(1e-3)
    assert np.isfinite((X - mean) / scale).all()


# ============================================================================ agents

def test_make_agent_kinds():
    lstm, s2s = make_agent("lstm", hidden=16), make_agent("seq2seq", hidden=16, encoder_hidden=8)
    assert isinstance(lstm, TimingLSTM) and lstm.kind == "lstm"
    assert isinstance(s2s, TimingSeq2Seq) and s2s.kind == "seq2seq"
    assert lstm.config() == {"kind": "lstm", "hidden": 16, "layers": 2}
    assert s2s.config() == {"kind": "seq2seq", "hidden": 16, "layers": 2, "encoder_hidden": 8}
    assert AGENT_KINDS == ("lstm", "seq2seq")
    # the paper's sizes by default: 2 x 256 LSTM
    big = make_agent("lstm")
    assert (big.lstm.hidden_size, big.lstm.num_layers, big.lstm.input_size) == (256, 2, 15)
    s2s = make_agent("seq2seq")
    assert s2s.encoder.input_size == 13 and s2s.encoder.bidirectional  # score columns only
    assert s2s.decoder.input_size == 15 + 2 * s2s.encoder_hidden
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("transformer")


def test_predict_shape_determinism_and_training_flag(agent, X):
    agent.train()
    try:
        y1 = agent.predict(X)
        assert agent.training  # restored
        y2 = agent.predict(X)
    finally:
        agent.eval()
    assert y1.shape == (len(X),) and y1.dtype == np.float64
    assert np.isfinite(y1).all()
    np.testing.assert_array_equal(y1, y2)  # no dropout at prediction time
    assert y1.std() > 1e-3  # the agent's answers vary: comparisons below are meaningful


@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_a_fresh_agent_does_not_listen_yet(kind, X):
    """Pretraining has no partner: its input weights start (and stay) at zero."""
    torch.manual_seed(0)
    fresh = make_agent(kind)
    X0 = X.copy()
    X0[:, F.DESCRIPTOR:] = 0.0
    np.testing.assert_array_equal(fresh.predict(X), fresh.predict(X0))


def test_partner_columns_reach_the_agent(agent, X):
    X0 = X.copy()
    X0[:, F.DESCRIPTOR:] = 0.0
    assert np.abs(agent.predict(X) - agent.predict(X0)).max() > 1e-4


def test_seq2seq_is_bidirectional_over_the_score(norm, X):
    """Changing the last row changes ŷ of the first for Seq2Seq (it reads ahead), never for the LSTM."""
    X2 = X.copy()
    X2[-1, F.HITS] = 1.0 - X2[-1, F.HITS]
    s2s, lstm = _agent("seq2seq", norm), _agent("lstm", norm)
    assert abs(s2s.predict(X)[0] - s2s.predict(X2)[0]) > 1e-7
    np.testing.assert_array_equal(lstm.predict(X)[:-1], lstm.predict(X2)[:-1])


# ============================================================================ Performer

def test_performer_streaming_equals_predict(agent, X):
    whole = agent.predict(X)
    performer = Performer(agent)
    streamed = _stream(performer, X)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
    # and far tighter in network units (ŷ x OFFSET_SCALE): float32 rounding only
    np.testing.assert_allclose(streamed * F.OFFSET_SCALE, whole * F.OFFSET_SCALE, rtol=0, atol=1e-5)


def test_performer_prime_resets_state(agent, X, norm):
    performer = Performer(agent)
    first = _stream(performer, X)
    second = _stream(performer, X)
    np.testing.assert_array_equal(first, second)
    # a different take in between, then the first score again
    other = score_features(_pattern_score(bars=6, seed=5))
    other_y = _stream(performer, other)
    np.testing.assert_allclose(other_y, agent.predict(other), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(_stream(performer, X), first)
    # half a take, then prime: the state of the broken take is gone
    performer.prime(X)
    for row in X[: len(X) // 2]:
        performer.step(row)
    np.testing.assert_array_equal(_stream(performer, X), first)


def test_seq2seq_performer_depends_on_the_primed_score(norm, X):
    """Priming with another score must change Seq2Seq ŷ (the encoder ran on it), not the LSTM's."""
    other = score_features(_pattern_score(bars=6, seed=5))
    for kind, differs in (("seq2seq", True), ("lstm", False)):
        p = Performer(_agent(kind, norm))
        right = _stream(p, X[:50], prime_rows=X)
        wrong = _stream(p, X[:50], prime_rows=other)
        assert (np.abs(right - wrong).max() > 1e-6) == differs, kind


def test_performer_step_keeps_no_arrays(agent, X):
    performer = Performer(agent)
    performer.prime(X)
    y = performer.step(X[0])
    assert type(y) is float

    def snapshot():
        ids = {k: id(v) for k, v in vars(performer).items() if k != "t"}  # t: the position counter
        cells = [{k: (id(v), v.shape) for k, v in vars(c).items() if isinstance(v, np.ndarray)}
                 for c in performer.cells]
        return ids, cells, [id(c) for c in performer.cells]

    before = snapshot()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for row in X[1:]:
            y = performer.step(row)
            assert type(y) is float
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert snapshot() == before  # same buffers, same shapes, no new attributes
    assert performer.t == len(X)
    # nothing kept per step (a float per step would be > 7 kB here), and no big temporaries
    assert current - base < 1024, f"{current - base} bytes kept after {len(X) - 1} steps"
    assert peak - base < 64 * 1024, f"peak {peak - base} bytes during steps"


def test_performer_clips_freak_values_like_predict(agent, X):
    """Rows far outside the training range are clipped at FEATURE_CLIP standard units on both paths."""
    Xf = X[:60].copy()
    Xf[::3, F.DIFF] = 0.5            # half a bar: 24 units of 1/48
    Xf[1::3, F.TEMPO] = 390.0        # far above the fitted tempi
    Xf[2::3, F.DESCRIPTOR] = -40.0
    whole = agent.predict(Xf)
    np.testing.assert_allclose(_stream(Performer(agent), Xf), whole, rtol=0, atol=1e-7)
    Xc = Xf.copy()
    Xc[::3, F.DIFF] = 0.4            # still beyond the clip: same answer
    np.testing.assert_allclose(agent.predict(Xc), whole, rtol=0, atol=1e-9)


def test_performer_step_accepts_float64_rows(agent, X):
    p = Performer(agent)
    a = _stream(p, X[:40])
    b = _stream(p, X[:40].astype(np.float64))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_performer_small_configs_match_predict(norm, X):
    for kind, config in (("lstm", dict(hidden=24, layers=3)),
                         ("seq2seq", dict(hidden=24, layers=3, encoder_hidden=8))):
        agent = _agent(kind, norm, seed=3, **config)
        np.testing.assert_allclose(_stream(Performer(agent), X), agent.predict(X), rtol=0, atol=1e-7)


# ============================================================================ weight files

@pytest.mark.parametrize("kind, config", [("lstm", {}), ("seq2seq", {}),
                                          ("lstm", dict(hidden=24, layers=3)),
                                          ("seq2seq", dict(hidden=24, layers=3, encoder_hidden=8))])
def test_save_load_round_trip(tmp_path, norm, X, kind, config):
    agent = _agent(kind, norm, seed=11, **config)
    path = tmp_path / "sub" / f"{kind}.safetensors"  # the folder is created
    save_agent(agent, path, metadata={"epochs": 3, "note": "test"})
    loaded = load_agent(path)
    assert type(loaded) is type(agent) and not loaded.training
    assert loaded.config() == agent.config()
    np.testing.assert_array_equal(loaded.feature_mean.numpy(), norm[0])
    np.testing.assert_array_equal(loaded.feature_scale.numpy(), norm[1])
    for k, v in agent.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    np.testing.assert_array_equal(loaded.predict(X), agent.predict(X))
    np.testing.assert_array_equal(_stream(Performer(loaded), X), _stream(Performer(agent), X))
    assert load_metadata(path) == {"epochs": 3, "note": "test"}
    assert load_agent(str(path)).config() == agent.config()


def test_save_without_metadata(tmp_path, norm):
    path = tmp_path / "plain.safetensors"
    save_agent(_agent("lstm", norm, hidden=8), path)
    assert load_metadata(path) == {}


def _checkpoint_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_agent(path)
    assert isinstance(info.value, RolypolyError)
    msg = str(info.value)
    assert msg.startswith(os.fspath(path) + ":"), msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_torch_checkpoint_is_refused(tmp_path, norm, zip_format):
    path = tmp_path / "agent.pt"
    torch.save(_agent("lstm", norm, hidden=8).state_dict(), path, _use_new_zipfile_serialization=zip_format)
    msg = _checkpoint_error(path)
    assert "pickled checkpoints are refused" in msg


class _Trap:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "trap.pt"
    torch.save({"lstm.weight_ih_l0": _Trap(marker)}, path)
    assert "pickled checkpoints are refused" in _checkpoint_error(path)
    assert not marker.exists()


def test_missing_weights_file(tmp_path):
    assert "no such weights file" in _checkpoint_error(tmp_path / "missing.safetensors")


def test_folder_is_not_a_weights_file(tmp_path):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    _checkpoint_error(folder)


@pytest.mark.parametrize("content", [b"", b"hello, not weights\n", bytes(range(256)) * 4])
def test_junk_weights_file(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    assert "not a safetensors weights file" in _checkpoint_error(path)


def _config_header(kind, **config):
    return {"config": json.dumps({"kind": kind, "hidden": 8, "layers": 2, **config})}


def test_safetensors_with_wrong_tensors(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(3), "bar": torch.ones(2, 2)}, str(path), metadata=_config_header("lstm"))
    assert "not a rolypoly timing agent" in _checkpoint_error(path)


def test_safetensors_without_config(tmp_path, norm):
    path = tmp_path / "noconfig.safetensors"
    sd = {k: v.contiguous() for k, v in _agent("lstm", norm, hidden=8).state_dict().items()}
    save_file(sd, str(path))
    assert "not a rolypoly timing agent" in _checkpoint_error(path)


def test_safetensors_with_wrong_shapes(tmp_path, norm):
    """Weights of an 8-unit LSTM under a header that says 16 units."""
    path = tmp_path / "shapes.safetensors"
    sd = {k: v.contiguous() for k, v in _agent("lstm", norm, hidden=8).state_dict().items()}
    save_file(sd, str(path), metadata=_config_header("lstm", hidden=16))
    assert "not a rolypoly timing agent" in _checkpoint_error(path)


def test_safetensors_of_the_other_kind(tmp_path, norm):
    path = tmp_path / "kind.safetensors"
    sd = {k: v.contiguous() for k, v in _agent("lstm", norm, hidden=8).state_dict().items()}
    save_file(sd, str(path), metadata=_config_header("seq2seq", encoder_hidden=4))
    _checkpoint_error(path)


def test_safetensors_missing_a_tensor(tmp_path, norm):
    path = tmp_path / "missing_tensor.safetensors"
    sd = {k: v.contiguous() for k, v in _agent("lstm", norm, hidden=8).state_dict().items()}
    del sd["head.bias"]
    save_file(sd, str(path), metadata=_config_header("lstm"))
    _checkpoint_error(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("tensor", ["lstm.weight_hh_l1", "feature_scale"])
def test_weights_with_nan_or_inf(tmp_path, norm, bad, tensor):
    agent = _agent("lstm", norm, hidden=8)
    path = tmp_path / "nan.safetensors"
    save_agent(agent, path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    sd = load_file(str(path))
    sd[tensor].view(-1)[3] = bad
    save_file(sd, str(path), metadata=header)
    msg = _checkpoint_error(path)
    assert "NaN or infinite" in msg and tensor in msg


def test_default_weights_paths():
    for kind in AGENT_KINDS:
        p = default_weights(kind)
        assert isinstance(p, Path) and p.parent == WEIGHTS_DIR and p.name == f"timing_{kind}.safetensors"


@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_shipped_weights_load_and_stream(kind, score):
    path = default_weights(kind)
    if not path.is_file():
        pytest.skip(f"no shipped weights at {path}")
    agent = load_agent(path)
    assert agent.kind == kind
    X = score_features(score)
    y = agent.predict(X)
    assert np.isfinite(y).all() and np.abs(y).max() < 0.25  # a quarter of a bar would be absurd
    np.testing.assert_allclose(_stream(Performer(agent), X), y, rtol=0, atol=1e-5)
