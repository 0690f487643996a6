"""A partner recording finds its place against the score by itself; a take that hardly heard its partner says so."""
from __future__ import annotations

import numpy as np
import pytest

from rolypoly.align import align_onsets, align_recording, score_anchors
from rolypoly.audio_io import load_audio, write_wav
from rolypoly.cli import main
from rolypoly.demo import PARTNER_LEAD_S
from rolypoly.lab.demo_partner import LAID_BACK_S
from rolypoly.paths import DEMO_PARTNER, DEMO_SCORE
from rolypoly.score import load_score, write_midi
from rolypoly.take import TAKE_FILE, read_take

SR = 48000
#: Where the demo score starts in the bundled recording, as the recording was made: its lead plus the
#: bass's lean (its notes are 12 ms behind the score on average; the alignment puts them on it).
TRUE_OFFSET = PARTNER_LEAD_S + LAID_BACK_S


@pytest.fixture(scope="module")
def demo():
    return load_score(DEMO_SCORE), load_audio(DEMO_PARTNER, SR)


def _take(folder):
    return read_take(folder / "takes" / "000" / TAKE_FILE)


def test_the_readme_example_without_an_offset_hears_the_partner_on_most_hits(tmp_path, capsys):
    # As a new user types it: the bundled bass recording, no --partner-offset 0.5. Before alignment
    # this take heard the partner on 19 of 123 hits and said nothing.
    status = main(["simulate", str(DEMO_SCORE), "--partner-file", str(DEMO_PARTNER),
                   "--session", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert status == 0, err
    said = [line for line in out.splitlines() if line.startswith("partner offset")]
    assert len(said) == 1 and "demo_partner.flac" in said[0], out
    take = _take(tmp_path / "s")
    offset = take.header.settings["partner_offset_s"]
    assert abs(offset - TRUE_OFFSET) < 0.004, offset
    assert float(said[0].split()[2]) == pytest.approx(offset, abs=0.001)
    heard, rows = take.end.summary["hits_with_partner"], take.header.rows
    # The bass plays 62 notes (kicks and backbeats): every one is heard, on more than half the hits.
    assert heard * 2 > rows and heard >= take.end.summary["onsets"] - 1, (heard, rows)
    assert take.end.summary["problems"] == [] and "warning" not in err


def _with_clicks(audio, at_s, lead_s):
    """``audio`` delayed by ``lead_s``, with short bright clicks (a count-in) at ``at_s``."""
    out = np.r_[np.zeros(int(round(lead_s * SR)), np.float32), audio]
    rng = np.random.default_rng(0)
    for t in at_s:
        k = int(round(t * SR))
        out[k:k + 240] += (0.5 * rng.standard_normal(240) * np.exp(-np.arange(240) / 48)).astype(np.float32)
    return out


@pytest.mark.parametrize("how", ["1.2345 s more silence", "0.3 s cut", "a bar of count-in"])
def test_a_shifted_recording_is_aligned_within_a_few_ms(demo, how):
    score, audio = demo
    # (As recorded, the README example's test checks it.)
    shift = {"1.2345 s more silence": 1.2345, "0.3 s cut": -0.3, "a bar of count-in": 2.0}[how]
    if shift < 0:
        shifted = audio[int(round(-shift * SR)):]
    elif how == "a bar of count-in":
        # Four clicks on the beats of the bar before the score (96 bpm): the score starts on the next one.
        beat = 60.0 / 96
        shifted = _with_clicks(audio, [TRUE_OFFSET + shift - beat * k for k in (4, 3, 2, 1)], shift)
    else:
        shifted = np.r_[np.zeros(int(round(shift * SR)), np.float32), audio]
    offset, matched = align_recording(score, shifted, SR)
    assert abs(offset - (TRUE_OFFSET + shift)) < 0.004, (how, offset)
    assert matched > 0.5


def test_a_groove_that_repeats_is_aligned_at_the_smallest_lag():
    # A bar that repeats, the recording starting on the score's first beat and going on past the
    # anchors: every bar later matches as well, and the start is the one that was meant.
    bar = np.array([0.0, 0.5, 0.75, 1.0, 1.5])
    times = np.concatenate([bar + 2.0 * b for b in range(4)])
    weights = np.tile([6.0, 3.75, 3.0, 4.5, 3.75], 4)
    onsets = np.concatenate([bar + 2.0 * b for b in range(8)])
    offset, matched = align_onsets(onsets, times, weights, max_lag=6.0, bars=4)
    assert offset == pytest.approx(0.0, abs=1e-9) and matched == pytest.approx(1.0)


def test_anchors_weigh_kick_and_snare_on_the_beats_most(demo):
    score, _ = demo
    times, weights = score_anchors(score, bars=1)
    # Bar 1 of the demo: kick on 1, 3 and the "and" of 2, snare on 2 and 4, hi-hat 8ths.
    assert times.tolist() == pytest.approx(score.onset_s[score.bar < 1].tolist())
    assert weights.tolist() == [6.0, 1.0, 3.75, 3.0, 4.5, 1.0, 3.75, 1.0]


def test_a_given_offset_wins_and_a_silent_recording_is_said(tmp_path, capsys):
    score = load_score(DEMO_SCORE)
    short = tmp_path / "four_bars.mid"
    write_midi(score.head(int((score.bar < 4).sum())), short)
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(SR * 2, np.float32), SR)
    assert main(["simulate", str(short), "--partner-file", str(silent), "--session", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "partner offset 0 s: no partner onset" in out
    assert _take(tmp_path / "a").header.settings["partner_offset_s"] == 0.0
    assert main(["simulate", str(short), "--partner-file", str(DEMO_PARTNER), "--partner-offset", "0.25",
                 "--session", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "partner offset" not in out
    assert _take(tmp_path / "b").header.settings["partner_offset_s"] == 0.25


def test_a_take_that_hardly_heard_its_partner_warns_and_keeps_the_warning(tmp_path, capsys):
    score = load_score(DEMO_SCORE)
    short = tmp_path / "four_bars.mid"
    write_midi(score.head(int((score.bar < 4).sum())), short)
    # The README's old mistake on the first 4 bars: the bass recording played from its sample 0.
    assert main(["simulate", str(short), "--partner-file", str(DEMO_PARTNER), "--partner-offset", "0",
                 "--session", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    take = _take(tmp_path / "s")
    heard, rows = take.end.summary["hits_with_partner"], take.header.rows
    assert heard * 2 < rows
    warnings = [line for line in err.splitlines() if "partner was heard on only" in line]
    assert len(warnings) == 1 and warnings[0].startswith("rolypoly: warning: ")
    assert f"only {heard} of {rows} hits" in warnings[0] and "--partner-offset" in warnings[0]
    assert any("partner was heard on only" in p for p in take.end.summary["problems"])


def test_a_partner_who_plays_little_but_on_the_hits_is_not_warned_about(tmp_path, capsys):
    # A bass on the downbeats only: heard on 4 of 32 hits, every note on a hit. Nothing is wrong.
    score = load_score(DEMO_SCORE)
    short = tmp_path / "four_bars.mid"
    first = score.head(int((score.bar < 4).sum()))
    write_midi(first, short)
    downbeats = first.onset_s[first.step == 0] + 0.5
    partner = tmp_path / "downbeats.wav"
    write_wav(partner, _with_clicks(np.zeros(SR * 11, np.float32), downbeats, 0.0), SR)
    assert main(["simulate", str(short), "--partner-file", str(partner), "--partner-offset", "0.5",
                 "--session", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    take = _take(tmp_path / "s")
    assert take.end.summary["hits_with_partner"] == 4 and take.header.rows == 32
    assert take.end.summary["problems"] == [] and "warning" not in err
