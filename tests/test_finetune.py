"""Fine-tuning on a take: accepted updates, refusals, no-update cases."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.engine import Engine
from rolypoly.lab.partner_audio import clicks
from rolypoly.realtime.sources import FileSource
from rolypoly.take import TakeWriter, read_take
from rolypoly.agents import Performer, make_agent
from rolypoly.demo import demo_score
from rolypoly.features import fit_normalisation, score_features
from rolypoly import finetune as ft
from rolypoly.finetune import dataset_mse, finetune_take, torch_threads, weights_digest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small torch ops on a busy 2-core machine: two threads wait on each other (finetune.THREADS)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def take_rows(tmp_path_factory):
    """A simulated take against a partner 15 ms late with jitter."""
    score = demo_score()
    rng = np.random.default_rng(3)
    audio = clicks(score.onset_s + 0.015 + rng.normal(0, 0.004, len(score)), sample_rate=48000)
    torch.manual_seed(0)
    agent = make_agent("lstm")
    agent.set_normalisation(*fit_normalisation(score_features(score)))
    path = tmp_path_factory.mktemp("take") / "take.jsonl"
    writer = TakeWriter(path, {"score": score.name})
    Engine(score, Performer(agent), FileSource(audio=audio), SimClock(), take=writer).run()
    writer.close({})
    return agent, read_take(path).rows


def test_update_moves_towards_the_targets_and_leaves_the_original(take_rows):
    agent, rows = take_rows
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    r = finetune_take(agent, rows, epochs=5)
    assert r["accepted"], r["reason"]
    assert r["after"]["take_trained_mse_bar"] < r["before"]["take_trained_mse_bar"]
    assert len(r["losses"]) == 5
    assert all(torch.equal(before[k], v) for k, v in agent.state_dict().items()), "original untouched"


class _Data:
    """A tiny stand-in TakeSet: the take's feature rows as ``n`` "dataset" takes with labels ``y``."""

    def __init__(self, X, y, n=1):
        self.X, self.y = np.asarray(X, np.float32), np.asarray(y, np.float64)
        self.starts = np.linspace(0, len(self.y), n + 1).astype(int)

    def __len__(self):
        return len(self.starts) - 1

    def take(self, k):
        return slice(int(self.starts[k]), int(self.starts[k + 1]))


def _score_data(rows, n=1):
    return _Data([r["features"] for r in rows], np.zeros(len(rows)), n)


def test_update_that_forgets_the_dataset_is_refused(take_rows):
    agent, rows = take_rows
    r = finetune_take(agent, rows, dataset=_score_data(rows), margin=-0.999)
    assert not r["accepted"] and "forget" in r["reason"] and r["agent"] is None


def test_no_partner_means_no_update(take_rows):
    agent, rows = take_rows
    silent = rows.copy()
    silent["diff"] = np.nan
    r = finetune_take(agent, silent)
    assert not r["accepted"] and "no partner onset" in r["reason"]


def test_nan_in_a_take_is_refused(take_rows):
    agent, rows = take_rows
    broken = rows.copy()
    broken["yhat"][3] = float("nan")
    with pytest.raises(ValueError):
        finetune_take(agent, broken)


# -- the fast path (rolypoly bench finetune) against the plain one ---------------------------

@pytest.mark.parametrize("margin", [ft.DATASET_MARGIN, -0.999])
def test_fast_path_decides_and_learns_as_the_reference_path(take_rows, margin):
    """Fused Adam, one thread, cached dataset MSEs: same decision, same losses and figures."""
    agent, rows = take_rows
    data = _score_data(rows, n=3)
    cache = ft.DatasetMSECache()
    slow = finetune_take(agent, rows, dataset=data, margin=margin, fast=False)  # keeps the fixture's thread
    fast = finetune_take(agent, rows, dataset=data, margin=margin, mse_cache=cache)
    again = finetune_take(agent, rows, dataset=data, margin=margin, mse_cache=cache)  # "before" now from the cache
    assert slow["accepted"] == fast["accepted"] == again["accepted"] == (margin > 0)
    assert fast["reason"].split(":")[0] == slow["reason"].split(":")[0]
    np.testing.assert_allclose(fast["losses"], slow["losses"], rtol=1e-5)
    assert fast["losses"] == again["losses"], "a fixed seed gives the same update every time"
    for when in ("before", "after"):
        assert fast[when].keys() == slow[when].keys()
        for key in fast[when]:
            np.testing.assert_allclose(fast[when][key], slow[when][key], rtol=1e-5, err_msg=f"{when} {key}")
            assert again[when][key] == fast[when][key]
    X = np.array([r["features"] for r in rows], np.float32)
    np.testing.assert_allclose(fast["tuned"].predict(X), slow["tuned"].predict(X), atol=1e-7)
    assert not np.allclose(fast["tuned"].predict(X), agent.predict(X), atol=1e-6), "it did learn"


def test_dataset_mse_cache_is_keyed_by_the_weights(take_rows):
    agent, rows = take_rows
    data = _score_data(rows, n=2)
    cache = ft.DatasetMSECache()
    plain = dataset_mse(agent, data)
    assert dataset_mse(agent, data, cache=cache) == plain and len(cache) == 1
    assert dataset_mse(agent, data, cache=cache) == plain and len(cache) == 1
    other = copy.deepcopy(agent)
    with torch.no_grad():
        other.head.bias += 0.01
    assert weights_digest(other) != weights_digest(agent)
    assert dataset_mse(other, data, cache=cache) != plain and len(cache) == 2
    shifted = _Data(data.X, data.y + 0.01, n=2)  # other labels: another entry, not a stale hit
    assert dataset_mse(agent, shifted, cache=cache) == dataset_mse(agent, shifted) != plain


def test_finetuning_runs_on_one_thread_and_gives_the_threads_back(take_rows):
    agent, rows = take_rows
    seen = []
    with torch_threads(2):
        finetune_take(agent, rows, epochs=2, progress=lambda *a: seen.append(torch.get_num_threads()))
        assert torch.get_num_threads() == 2
    assert seen == [ft.THREADS] * 2


def test_bench_take_is_the_demo_looped_to_three_minutes():
    from rolypoly.lab.bench_finetune import loop_score

    demo = demo_score()
    looped = loop_score(demo, 180.0)
    n = len(demo)
    assert looped.onset_s[-1] + looped.duration_ms[-1] / 1000 >= 180.0
    assert looped.n_bars % demo.n_bars != 0 and looped.n_bars > 4 * demo.n_bars  # whole bars, cut at 3 min
    for k in range(looped.n_bars // demo.n_bars):  # every full loop is the demo, meters and tempi included
        part = slice(k * n, (k + 1) * n)
        assert np.array_equal(looped.hits[part], demo.hits) and np.array_equal(looped.step[part], demo.step)
        np.testing.assert_allclose(looped.onset_s[part] - looped.onset_s[k * n], demo.onset_s, atol=1e-6)
        np.testing.assert_allclose(looped.timesig[part], demo.timesig)


@pytest.mark.parametrize("rows, steps_per_epoch", [(200, 6), (983, ft.MAX_STEPS_PER_EPOCH)])
def test_a_long_take_is_stepped_in_bigger_batches_not_more_steps(rows, steps_per_epoch):
    from rolypoly.features import N_FEATURES

    agent = make_agent("lstm")
    batches = []
    agent.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    y = rng.normal(0, 0.01, rows).astype(np.float32)
    ft.train_on_take(agent, X, y, np.ones(rows, bool), epochs=1)
    chunks = len(ft._chunks(rows, ft.CHUNK_ROWS, ft.CHUNK_ROWS // 2))
    assert sum(batches) == chunks, "every chunk is trained on once an epoch"
    assert len(batches) == steps_per_epoch
    assert max(batches) == max(ft.CHUNKS_PER_STEP, -(-chunks // ft.MAX_STEPS_PER_EPOCH))
