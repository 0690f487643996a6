"""The duet engine on the simulated clock (and once in real time): decisions, diff, misses, takes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rolypoly.realtime.clock import RealClock, SimClock
from rolypoly.realtime.engine import Engine, EngineSettings
from rolypoly.lab.partner_audio import clicks
from rolypoly.realtime.sources import FileSource
from rolypoly.take import TakeWriter, read_take, TakeError
from rolypoly.agents import Performer, make_agent
from rolypoly.demo import demo_score
from rolypoly.features import DIFF

SR = 48000
ROOT = Path(__file__).resolve().parents[1]


class ConstantAgent:
    """A stand-in performer with a known ŷ, to check the engine's arithmetic exactly."""

    def __init__(self, y=0.0, delay_s=0.0, slow_rows=()):
        self.y, self.delay_s, self.slow_rows = y, delay_s, set(slow_rows)
        self.mean = np.zeros(15, np.float32)
        self.rows = []

    def prime(self, X):
        self.t = 0
        self.rows = []

    def step(self, row):
        self.rows.append(row.copy())
        if self.t in self.slow_rows or (self.delay_s and not self.slow_rows):
            time.sleep(self.delay_s)
        self.t += 1
        return self.y


@pytest.fixture(scope="module")
def score():
    return demo_score()


def _partner(score, late_s=0.0, lead=0.0, jitter_s=0.0, seed=0, every=1):
    rng = np.random.default_rng(seed)
    times = score.onset_s[::every] + lead + late_s + rng.normal(0, jitter_s, len(score.onset_s[::every]))
    return clicks(times, sample_rate=SR), times


def test_partner_late_gives_positive_diff_of_the_right_size(score):
    audio, _ = _partner(score, late_s=0.012)
    agent = ConstantAgent(0.0)
    result = Engine(score, agent, FileSource(audio=audio), SimClock()).run()
    diff_ms = result.diff * score.bar_ms
    assert np.isfinite(diff_ms).mean() > 0.95
    assert np.nanmedian(diff_ms) == pytest.approx(12.0, abs=1.0)
    # The agent saw diff_{t-1} in the DIFF column of row t (fraction of a bar).
    seen = np.array(agent.rows)[1:, DIFF]
    np.testing.assert_allclose(seen[5:], result.diff[:-1][5:], atol=1e-6)


def test_hits_play_at_notated_time_plus_yhat_without_drift(score):
    audio, _ = _partner(score)
    y = 0.004
    result = Engine(score, ConstantAgent(y), FileSource(audio=audio), SimClock()).run()
    expected = score.onset_s + np.clip(y, -np.r_[score.duration_ms[0], score.duration_ms[:-1]] / 3 / score.bar_ms,
                                       score.duration_ms / 3 / score.bar_ms) * score.bar_ms / 1000
    np.testing.assert_allclose(result.played, expected, atol=1e-9)
    assert result.misses == 0


def test_yhat_is_kept_within_a_third_of_the_gaps(score):
    audio, _ = _partner(score)
    result = Engine(score, ConstantAgent(0.5), FileSource(audio=audio), SimClock()).run()
    assert np.all(result.yhat * score.bar_ms <= score.duration_ms / 3 + 1e-9)
    assert np.all(np.diff(result.played) > 0), "hits never cross each other"


def test_silent_partner_carries_diff_and_the_beat_goes_on(score):
    silence = np.zeros(int(score.onset_s[-1] * SR) + SR, np.float32)
    agent = ConstantAgent(0.0)
    result = Engine(score, agent, FileSource(audio=silence), SimClock()).run()
    assert len(result.played) == len(score) and np.all(np.isfinite(result.played))
    assert np.all(np.isnan(result.diff))
    assert np.all(np.array(agent.rows)[:, DIFF] == 0.0)


def test_diff_is_carried_over_when_the_partner_skips_a_hit(score):
    audio, _ = _partner(score, late_s=0.010, every=2)
    agent = ConstantAgent(0.0)
    result = Engine(score, agent, FileSource(audio=audio), SimClock()).run()
    seen = np.array(agent.rows)[:, DIFF]
    missing = np.flatnonzero(np.isnan(result.diff[:-1]))
    assert len(missing) > 10
    # Row t+1 after a hit with no partner onset keeps the last diff that was heard.
    for t in missing[missing > 2]:
        assert seen[t + 1] == seen[t]


def test_a_late_model_misses_but_never_stalls_the_beat(score):
    audio, _ = _partner(score)
    slow = [5, 6, 20]
    agent = ConstantAgent(0.002, delay_s=0.05, slow_rows=slow)
    result = Engine(score, agent, FileSource(audio=audio), SimClock()).run()
    assert result.misses >= 2
    # Every hit still played, each at notated time + a ŷ (the previous one on a miss).
    assert np.all(np.isfinite(result.played))
    late = result.played - result.notated
    assert np.abs(late).max() < 0.05


def test_real_clock_take_is_on_time(score):
    short = demo_score().head(24)
    audio, _ = _partner(short, lead=0.0)
    result = Engine(short, ConstantAgent(0.0), FileSource(audio=audio), RealClock(),
                    settings=EngineSettings(lead_in_s=0.2)).run()
    err_ms = np.abs(result.played - result.intended) * 1000
    # Loose bounds: this checks the real-clock path works; `rolypoly bench output` measures it.
    assert np.median(err_ms) < 2.0 and err_ms.max() < 25.0
    assert result.misses == 0
    assert np.isfinite(result.diff).mean() > 0.8


def test_real_agent_streams_through_the_engine(score):
    torch.manual_seed(0)
    agent = make_agent("lstm")
    audio, _ = _partner(score, late_s=0.008)
    result = Engine(score, Performer(agent), FileSource(audio=audio), SimClock()).run()
    assert result.misses <= 1
    assert np.all(np.isfinite(result.yhat))


# ----------------------------------------------------------------------------- takes

def test_take_file_has_every_row_and_is_read_only(score, tmp_path):
    audio, _ = _partner(score, late_s=0.01)
    take = TakeWriter(tmp_path / "take.jsonl", {"score": score.name})
    result = Engine(score, ConstantAgent(0.0), FileSource(audio=audio), SimClock(), take=take).run()
    take.close({"rows": len(result.played)})
    t = read_take(tmp_path / "take.jsonl")
    assert t.complete and len(t.rows) == len(score)
    assert [r["row"] for r in t.rows] == list(range(len(score)))
    r = t.rows[10]
    assert set(t.rows.dtype.names) >= {"features", "yhat", "intended", "played", "heard", "diff", "bar"}
    assert len(r["features"]) == 15
    assert not os.access(tmp_path / "take.jsonl", os.W_OK) or os.geteuid() == 0
    assert (os.stat(tmp_path / "take.jsonl").st_mode & 0o222) == 0
    with pytest.raises(TakeError, match="never overwritten"):
        TakeWriter(tmp_path / "take.jsonl", {})


def test_truncated_take_is_readable(tmp_path):
    take = TakeWriter(tmp_path / "t.jsonl", {"score": "x"})
    for i in range(30):
        take.row({"row": i, "bar": i // 8})
    take.close({})
    text = (tmp_path / "t.jsonl").read_text()
    cut = text[: text.index('"row": 20') + 5]
    os.chmod(tmp_path / "t.jsonl", 0o644)
    (tmp_path / "t.jsonl").write_text(cut)
    t = read_take(tmp_path / "t.jsonl")
    assert not t.complete and len(t.rows) == 20 and t.dropped_lines == 1


def test_not_a_take_is_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"type": "row"}\n')
    with pytest.raises(TakeError, match="not a rolypoly take"):
        read_take(tmp_path / "x.jsonl")


KILL_SCRIPT = r"""
import sys, numpy as np
from rolypoly.realtime.clock import RealClock
from rolypoly.realtime.engine import Engine, EngineSettings
from rolypoly.realtime.sources import FileSource
from rolypoly.take import TakeWriter
from rolypoly.lab.partner_audio import clicks
from rolypoly.demo import demo_score
sys.path.insert(0, sys.argv[2])
from test_engine import ConstantAgent
score = demo_score()
audio = clicks(score.onset_s, sample_rate=48000)
take = TakeWriter(sys.argv[1], {"score": score.name})
Engine(score, ConstantAgent(0.0), FileSource(audio=audio), RealClock(), take=take,
       settings=EngineSettings(lead_in_s=0.1)).run()
"""


def test_kill_9_mid_take_loses_at_most_the_current_bar(tmp_path):
    path = tmp_path / "take.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(Path(__file__).parent)],
                            cwd=ROOT)
    # 96 bpm 4/4: a bar is 2.5 s. Kill in the middle of the third bar.
    deadline = time.time() + 60
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(6.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    take = read_take(path)
    assert not take.complete
    bars = {r["bar"] for r in take.rows}
    assert bars >= {0, 1}, f"complete bars must survive a crash, got {sorted(bars)}"
    # Every bar present except maybe the last is complete.
    score = demo_score()
    for b in sorted(bars)[:-1]:
        assert sum(r["bar"] == b for r in take.rows) == int((score.bar == b).sum())
    json.dumps(take.header.to_dict())
