"""Fine-tuning on a take: accepted updates, refusals, no-update cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.clock import SimClock
from realtime.engine import Engine
from realtime.partner_audio import clicks
from realtime.sources import FileSource
from realtime.takes import TakeWriter, read_take
from rolypoly.agents import Performer, make_agent
from rolypoly.demo import demo_score
from rolypoly.features import fit_normalisation, score_features
from rolypoly.finetune import finetune_take


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


def test_update_that_forgets_the_dataset_is_refused(take_rows):
    agent, rows = take_rows

    class Data:  # a tiny stand-in TakeSet of one "dataset" take: the score rows with zero labels
        X = np.array([r["features"] for r in rows], np.float32)
        y = np.zeros(len(rows))

        def __len__(self):
            return 1

        def take(self, k):
            return slice(0, len(rows))

    r = finetune_take(agent, rows, dataset=Data(), margin=-0.999)
    assert not r["accepted"] and "forget" in r["reason"] and r["agent"] is None


def test_no_partner_means_no_update(take_rows):
    agent, rows = take_rows
    silent = [dict(r, diff=None) for r in rows]
    r = finetune_take(agent, silent)
    assert not r["accepted"] and "no partner onset" in r["reason"]


def test_nan_in_a_take_is_refused(take_rows):
    agent, rows = take_rows
    broken = [dict(r) for r in rows]
    broken[3]["yhat"] = float("nan")
    with pytest.raises(ValueError):
        finetune_take(agent, broken)
