"""The groove generator as the live engine's pattern source: humanized scores, drumified starts."""
import numpy as np
import pytest

from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.duet import play_take
from rolypoly.realtime.engine import EngineSettings
from rolypoly.take import read_take
from rolypoly.lab.virtual_partner import VirtualPartner
from rolypoly.demo import DEMO_SCORE
from rolypoly.groove_model import default_groove_weights
from rolypoly.score import load_score
from rolypoly.session import Session, score_hash

needs = {t: pytest.mark.skipif(not default_groove_weights(t).is_file(), reason=f"no shipped {t} model")
         for t in ("humanize", "drumify")}


@needs["humanize"]
def test_humanized_score_keeps_the_piece_and_moves_velocities_and_timing():
    from rolypoly.pattern import humanized_score
    score = load_score(DEMO_SCORE)
    human = humanized_score(score, DEMO_SCORE, seed=0)
    assert score_hash(human) == score_hash(score) and len(human) == len(score)
    assert (human.hits == score.hits).all()
    assert (human.velocities[~score.hits] == 0).all()
    assert (human.velocities != score.velocities).any()
    shift_ms = (human.onset_s - score.onset_s) * 1000
    assert np.abs(shift_ms).max() > 0.5
    # The model's offsets are at most half a 16th (at the score's tempo).
    sixteenth_ms = 60_000 / score.tempo_bpm / 4
    assert (np.abs(shift_ms) <= sixteenth_ms / 2 + 1e-6).all()
    again = humanized_score(score, DEMO_SCORE, seed=0)
    assert np.array_equal(again.onset_s, human.onset_s)  # repeatable


@needs["humanize"]
def test_a_humanized_session_plays_the_humanized_pattern_under_the_agent(tmp_path):
    folder = tmp_path / "s"
    s = Session.open(folder, DEMO_SCORE)
    s.set_pattern(humanize=True, seed=3)
    score = Session(folder).score()
    partner = VirtualPartner(load_score(DEMO_SCORE), classes=["kick"], partner_offset_s=0.3)
    summary = play_take(DEMO_SCORE, partner, SimClock(), session=folder, mix=False, plot=False,
                        settings=EngineSettings(partner_offset_s=0.3))
    take = read_take(summary["take_dir"])
    assert take.header.pattern == {"humanize": True, "seed": 3, "temperature": 0.0}
    notated = np.array([r["notated"] for r in take.rows])
    np.testing.assert_allclose(notated, score.onset_s[:len(notated)], atol=1e-6)
    plain = load_score(DEMO_SCORE).onset_s[:len(notated)]
    assert np.abs(notated - plain).max() > 0.0005
    # Learning goes on as usual: the session is the same piece.
    assert Session(folder).finetune()["accepted"]


@needs["drumify"]
def test_drumify_a_partner_recording_starts_a_session(tmp_path):
    from rolypoly.cli import main
    folder = tmp_path / "jam"
    partner = DEMO_SCORE.with_name("demo_partner.flac")
    assert main(["session", "new", str(folder), "--from-partner", str(partner), "--bpm", "96"]) == 0
    s = Session(folder)
    score = s.score()
    assert len(score) > 16 and score.hits.any(axis=1).all()
    assert abs(float(score.tempo_bpm[0]) - 96) < 0.5


def test_drumify_errors_are_one_line(tmp_path, capsys):
    from rolypoly.cli import main
    assert main(["session", "new", str(tmp_path / "x"), "--from-partner", str(tmp_path / "none.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rolypoly: ") and len(err.strip().splitlines()) == 1
    assert main(["session", "new", str(tmp_path / "y")]) == 2
    assert "--score" in capsys.readouterr().err
