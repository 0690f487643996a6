"""A musician's units everywhere (issue 13): ms, early/late, bars from 1, meters as written, reports in words."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from rolypoly.cli import main
from rolypoly.features import score_features
from rolypoly.humanize import offsets_figure
from rolypoly.lab.experiments import straight_eighths
from rolypoly.lab.virtual_partner import VirtualPartner
from rolypoly.paths import DEMO_SCORE
from rolypoly.plotting import MIN_FONT_PT, figure, save
from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.display import ProgressLines
from rolypoly.realtime.duet import play_take
from rolypoly.realtime.engine import EngineSettings
from rolypoly.report import learning_report, take_report
from rolypoly.score import load_score, score_from_grid, write_midi
from rolypoly.session import Session
from rolypoly.session_plots import plot_session, session_figures
from rolypoly.take import as_rows

BAR_MS = 2000.0          # 4/4 at 120 bpm
LEAD = 0.3


def _texts(fig) -> list[str]:
    """Every text a figure shows, tick labels included (drawn first, so they exist)."""
    fig.canvas.draw()
    return [t.get_text().strip() for t in fig.findobj(Text) if t.get_text().strip()]


# ----------------------------------------------------------------------------- the report in words

def _backbeat_take(partner_ms):
    """Four bars of 4/4 at 120 bpm (kick 1 and 3, snare 2 and 4, hi-hat 8ths) as a take.

    ``partner_ms(row) -> ms``: where the partner was against the drums on each row (+ partner late);
    the drums played the score as written (offset 0).
    """
    grid = np.zeros((96, 9), bool)
    grid[::3, 2] = True
    grid[[b * 24 + s for b in range(4) for s in (0, 12)], 0] = True
    grid[[b * 24 + s for b in range(4) for s in (6, 18)], 1] = True
    score = score_from_grid(grid, bpm=120)
    X = score_features(score)
    rows = as_rows([{"row": i, "bar": int(score.bar[i]), "step": int(score.step[i]), "features": X[i].tolist(),
                     "yhat": 0.0, "notated": float(score.onset_s[i]), "diff": partner_ms(i) / BAR_MS}
                    for i in range(len(score))])
    return score, rows


def test_the_snare_moved_six_ms_later_is_said_in_words():
    """The partner is 6 ms late on every backbeat: the new model plays the snare 6 ms later there."""
    score, rows = _backbeat_take(lambda i: 6.0 if i % 4 == 2 else 0.0)
    snare = score.hits[:, 1]
    assert snare.sum() == 8 and (score.step[snare] % 12 == 6).all()
    before = np.zeros(len(score))
    after = np.where(snare, 6.0 / BAR_MS, 0.0)
    # Partner against the drums: 6 ms late on 8 of 32 hits -> mean 1.5, spread sqrt(9 - 2.25) = 2.6 ms;
    # with the snare 6 ms later the partner is with the drums everywhere.
    assert learning_report(score, before, after, rows=rows) == [
        "snare 6 ms later on beats 2 and 4",
        "drums against the partner: spread 2.6 → 0.0 ms; on average 1.5 ms early → with the partner"]
    # The same from the score alone: no partner line; and nothing said when nothing moved (by 3 ms).
    assert learning_report(score, before, after) == ["snare 6 ms later on beats 2 and 4"]
    assert learning_report(score, before, before + 2.0 / BAR_MS) == ["no drum moved by 3 ms or more"]


def test_swing_and_a_general_move_are_said_in_words():
    score, rows = _backbeat_take(lambda i: 0.0)
    offbeat = score.step % 6 == 3
    # Off-beat 8ths 40 ms later: at 120 bpm a beat is 500 ms, so the "and" moves from 50 % to 58 %.
    after = np.where(offbeat, 40.0 / BAR_MS, 0.0)
    lines = learning_report(score, np.zeros(len(score)), after)
    assert lines == ["closed hi-hat 40 ms later on the off-beats", "off-beats swung 50 % → 58 %"]
    # Everything 5 ms earlier but the kick: one general line, then the exception.
    after = np.where(score.hits[:, 0], 0.0, -5.0 / BAR_MS)
    assert learning_report(score, np.zeros(len(score)), after) == [
        "all drums about 5 ms earlier", "kick where it was on beats 1 and 3"]


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "eighths.mid"
    write_midi(straight_eighths(bars=4, bpm=120), path)
    return path


def _take(folder, song, **partner):
    score = Session.open(folder, song).score()
    p = VirtualPartner(score, classes=["closed_hihat"], partner_offset_s=LEAD, **partner)
    return play_take(song, p, SimClock(), session=folder, mix=False, plot=False,
                     settings=EngineSettings(partner_offset_s=LEAD))


def _no_lab_units(text: str) -> None:
    for word in ("None", "bar²", "MSE", "mse", "ŷ", "yhat", "e-0"):
        assert word not in text, f"{word!r} in:\n{text}"


def test_finetune_and_session_list_speak_in_ms(tmp_path, song, capsys):
    folder = tmp_path / "s"
    assert main(["session", "new", str(folder), "--score", str(song)]) == 0
    _take(folder, song, offset_ms=12, jitter_ms=3, seed=1)
    capsys.readouterr()
    assert main(["finetune", str(folder), "--no-dataset", "--epochs", "2", "--no-plot"]) == 0
    out = capsys.readouterr().out
    _no_lab_units(out)
    lines = out.splitlines()
    assert lines[0] == "take 0 → model version 1: accepted, the session plays it from the next take"
    assert any(line.strip().startswith("drums against the partner") for line in lines), out
    assert "ms early" in out or "ms late" in out or "with the partner" in out

    # The report the session UI shows between takes: the same words.
    report = take_report(Session(folder), 0)
    assert report[0] == "model version 1, learnt from take 0: the session plays it"
    _no_lab_units("\n".join(report))
    assert take_report(Session(folder), 0)[1:] == [line.strip() for line in lines[3:3 + len(report) - 1]]

    _take(folder, song, offset_ms=12, jitter_ms=3, seed=2)
    capsys.readouterr()
    assert main(["session", "list", str(folder)]) == 0
    out = capsys.readouterr().out
    _no_lab_units(out)
    for line in out.splitlines():
        assert line.count("accepted") <= 1, line
    table = out[out.index("model versions"):].splitlines()
    assert "shipped model" in table[2] and " 0 " in table[2]
    assert table[3].lstrip().startswith("*1") and "take 0" in table[3] and "accepted" in table[3]
    assert ("ms early" in table[3] or "ms late" in table[3]) and "spread" in table[3]
    takes = out[out.index("takes"):out.index("model versions")].splitlines()
    assert takes[1].split()[:2] == ["take", "model"] and len([t for t in takes[2:] if "spread" in t]) == 2
    # The machine-readable listing keeps its figures, now in ms too.
    assert main(["session", "list", str(folder), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["takes"][1]["partner"]["spread_ms"] > 0 and listing["versions"][1]["takes_played"] == 1


def test_a_refused_update_says_why_in_words(tmp_path, song, capsys):
    folder = tmp_path / "s"
    Session.open(folder, song)
    _take(folder, song, offset_ms=12, jitter_ms=3, seed=1)
    # A check no update can pass (the error on these grooves would have to fall to a thousandth).
    report = Session(folder).finetune(margin=-0.999, dataset=_Data(Session(folder)))
    assert not report["accepted"] and report["reason"].startswith("refused: Groove MIDI Dataset check")
    _no_lab_units(report["reason"])
    assert "% less timing error than the model before; at least 100 % less asked)" in report["reason"], report
    assert Session(folder).meta["model"] == 0
    assert take_report(Session(folder), 0)[0].startswith("model version 1, learnt from take 0: not played (")


class _Data:
    """A tiny forgetting-check set: the session's own score, drummed on the grid."""

    def __init__(self, session):
        X = score_features(session.score())
        self.X, self.y = X, np.zeros(len(X), np.float32)
        self.starts = np.array([0, len(X)])

    def __len__(self):
        return 1

    def take(self, k):
        return slice(0, len(self.X))


# ----------------------------------------------------------------------------- plots

def _session_folder(tmp_path, song):
    """A session of the demo score's meters with two takes of very different spreads."""
    folder = tmp_path / "s"
    Session.open(folder, song)
    _take(folder, song, offset_ms=5, jitter_ms=1, seed=1)
    _take(folder, song, offset_ms=-20, jitter_ms=25, seed=2)
    return folder


def test_plots_share_one_scale_count_bars_from_one_and_read_well(tmp_path, song):
    folder = _session_folder(tmp_path, song)
    figures = session_figures(folder)
    assert [name for name, _ in figures] == ["take_000.png", "take_001.png", "takes.png"]
    limits = [fig.axes[0].get_ylim() for _, fig in figures[:2]]
    assert limits[0] == limits[1] and limits[0][1] >= 20, limits
    for _, fig in figures:
        texts = _texts(fig)
        assert not any("ŷ" in t or "0.75" in t for t in texts), texts
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert ticks[0] == "1", ticks
        assert "4/4" in texts
    for path in plot_session(folder):
        assert imread(path).shape[:2] == (900, 1600)


def test_meters_are_written_as_meters_and_bars_from_one(tmp_path):
    score = load_score(DEMO_SCORE)                     # 4/4, then 6/8 from bar 5, then 4/4
    fig = offsets_figure(score, {"lstm": np.zeros(len(score))})
    texts = _texts(fig)
    assert "6/8" in texts and "4/4" in texts and not any("0.75" in t for t in texts), texts
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "1"
    assert fig.axes[0].get_xlim()[0] > 0.5              # nothing drawn before bar 1
    # Every take's picture on a session with the demo score gets its meters too.
    folder = tmp_path / "demo"
    Session.open(folder, DEMO_SCORE)
    p = VirtualPartner(Session(folder).score(), classes=["kick", "snare"], partner_offset_s=LEAD, seed=1)
    play_take(DEMO_SCORE, p, SimClock(), session=folder, mix=False, plot=False,
              settings=EngineSettings(partner_offset_s=LEAD))
    texts = _texts(session_figures(folder)[0][1])
    assert texts.count("6/8") == 1 and "0.75" not in texts


def test_small_text_is_raised_to_a_readable_size(tmp_path):
    fig, ax = figure()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_title("tiny", fontsize=5)
    ax.set_xlabel("x", fontsize=6)
    ax.legend(fontsize=4)
    ax.text(0.5, 0.5, "note", fontsize=3)
    path = save(fig, tmp_path / "f.png")
    assert imread(path).shape[:2] == (900, 1600)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
    assert min(sizes) >= MIN_FONT_PT, sizes


# ----------------------------------------------------------------------------- a take that speaks

def test_a_take_prints_where_the_drums_sit_every_few_bars(tmp_path, song):
    """The line is built from the engine's take rows on the display's own thread, never in the hit loop."""
    folder = tmp_path / "s"
    Session.open(folder, song)
    out = io.StringIO()
    lines = ProgressLines(stream=out, every_bars=2, interval_s=0.001)
    engines = []

    def watch(engine):
        engines.append(engine)
        lines.watch(engine)

    score = Session(folder).score()
    p = VirtualPartner(score, classes=["closed_hihat"], partner_offset_s=LEAD, offset_ms=10, seed=1)
    play_take(song, p, SimClock(), session=folder, mix=False, plot=False,
              settings=EngineSettings(partner_offset_s=LEAD), on_engine=watch)
    lines.close()
    text = out.getvalue().splitlines()
    # The partner 10 ms late: the drums about 10 ms early (and the sign right).
    assert text[-1].startswith("take over: drums ") and "ms early against the partner" in text[-1], text
    early = float(text[-1].split("drums ")[1].split(" ms")[0])
    assert 6 < early < 14, text
    assert all(line.startswith("bar ") and "/4: " in line for line in text[:-1]), text
    # Mid-take lines count bars from 1 (here: the take had finished bar 2 of 4).
    assert lines.line(2).startswith("bar 3/4: drums ")


def test_a_cut_short_take_names_its_bar_from_one(tmp_path, song):
    from rolypoly.take import read_take, validate_take

    folder = tmp_path / "s"
    Session.open(folder, song)
    summary = _take(folder, song, offset_ms=10, seed=1)
    take_file = folder / "takes" / "000" / "take.jsonl"
    take_file.chmod(0o644)
    lines = take_file.read_text().splitlines()
    take_file.write_text("\n".join(lines[:1 + 28]) + "\n")       # header and rows of bars 1 to 3, half of bar 4
    check = validate_take(read_take(take_file), read_take(take_file).header.score_hash, summary["rows"])
    assert "possibly partial bar 4 " in check.reasons[-1], check.reasons
    shutil.rmtree(folder)
