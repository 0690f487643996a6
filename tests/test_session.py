"""Sessions: model versions, fine-tuning between takes, refusals, revert, export, grown scores."""
import json

import numpy as np
import pytest

from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.duet import play_take
from rolypoly.realtime.engine import EngineSettings
from rolypoly.lab.experiments import straight_eighths
from rolypoly.take import read_take
from rolypoly.lab.virtual_partner import VirtualPartner
from rolypoly.cli import main
from rolypoly.score import load_score, write_midi
from rolypoly.score_growth import with_rows
from rolypoly.session import Session, SessionError, score_hash

LEAD = 0.3


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "eighths.mid"
    write_midi(straight_eighths(bars=4, bpm=120), path)
    return path


def _take(session_dir, song, window=3.0, **partner):
    score = Session.open(session_dir, song).score()
    p = VirtualPartner(score, classes=["closed_hihat"], partner_offset_s=LEAD, **partner)
    return play_take(song, p, SimClock(), session=session_dir, mix=False, plot=False,
                     settings=EngineSettings(partner_offset_s=LEAD, window_factor=window))


def _take_lines(session_dir):
    """The first take's file, made writable (takes are written read-only), and its lines."""
    take = session_dir / "takes" / "000" / "take.jsonl"
    take.chmod(0o644)
    return take, take.read_text().splitlines()


def test_first_take_starts_version_zero_and_finetune_writes_the_next(tmp_path, song):
    folder = tmp_path / "s"
    summary = _take(folder, song, offset_ms=15, jitter_ms=3, seed=1)
    s = Session(folder)
    assert summary["model_version"] == 0 and s.meta["model"] == 0
    assert read_take(summary["take_dir"]).header.model_version == 0
    report = s.finetune()
    assert report["accepted"] and report["version"] == 1 and report["current"] == 1
    rec = json.loads((folder / "models" / "001" / "version.json").read_text())
    assert rec["status"] == "accepted" and rec["parent"] == 0 and rec["take"] == 0
    # The next take plays the new version.
    summary = _take(folder, song, offset_ms=15, jitter_ms=3, seed=1)
    assert summary["model_version"] == 1


def test_versions_are_never_overwritten_and_refused_ones_are_kept_but_not_played(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, swing=1 / 3, window=2.5)
    s = Session(folder)
    before = (folder / "models" / "000" / "weights.safetensors").read_bytes()
    # A stand-in "dataset" the model before plays perfectly (labels = its own offsets, close to
    # the grid): learning a full swing from the take moves it far away, and is refused.
    from rolypoly.pretrain.gmd import TakeSet
    X = np.array([r["features"] for r in read_take(s.take_dir()).rows], np.float32)
    X[:, -2:] = 0  # as in GMD: no partner
    y = s.agent()[0].predict(X).astype(np.float32)
    ds = TakeSet(X, y, np.full(len(X), 2000, np.float32), np.ones(len(X), np.float32),
                 np.array([0, len(X)]), ["fake"], "fake")
    report = s.finetune(dataset=ds, cancel=True, centre="beats")
    assert not report["accepted"] and report["reason"].startswith("refused: Groove MIDI Dataset")
    assert report["version"] == 1 and report["current"] == 0
    assert json.loads((folder / "models" / "001" / "version.json").read_text())["status"] == "refused"
    assert (folder / "models" / "000" / "weights.safetensors").read_bytes() == before
    assert Session(folder).current_version()[0] == 0
    ok = s.finetune()
    assert ok["accepted"] and ok["version"] == 2  # a new number, 1 is not reused


def test_corrupted_version_falls_back_to_the_last_good_one(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10, jitter_ms=3)
    s = Session(folder)
    assert s.finetune()["version"] == 1
    weights = folder / "models" / "001" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    agent, k, warnings = Session(folder).agent()
    assert k == 0 and any("corrupted" in w for w in warnings)
    summary = _take(folder, song, offset_ms=10)
    assert summary["model_version"] == 0
    assert any("falling back" in p for p in summary["problems"])


def test_pickled_version_is_refused_not_loaded(tmp_path, song):
    import pickle
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10)
    s = Session(folder)
    s.finetune()
    (folder / "models" / "001" / "weights.safetensors").write_bytes(pickle.dumps({"w": 1}))
    rec = json.loads((folder / "models" / "001" / "version.json").read_text())
    rec.pop("sha256")  # even without a hash to compare, the file must not load
    (folder / "models" / "001" / "version.json").write_text(json.dumps(rec))
    _, k, warnings = Session(folder).agent()
    assert k == 0 and any("safetensors" in w or "not" in w for w in warnings)


def test_revert_and_unknown_version(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10)
    s = Session(folder)
    s.finetune()
    assert s.revert(0) == 0 and Session(folder).meta["model"] == 0
    with pytest.raises(SessionError, match="no model version 9"):
        s.revert(9)


def test_take_of_another_score_is_refused(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10)
    take, lines = _take_lines(folder)
    head = json.loads(lines[0])
    head["score_hash"] = "0123456789abcdef"
    take.write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")
    report = Session(folder).finetune()
    assert not report["accepted"] and "another score" in report["reason"] and report["version"] is None


def test_truncated_take_trains_on_complete_bars(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10, jitter_ms=2)
    take, lines = _take_lines(folder)
    take.write_text("\n".join(lines[:20]) + "\n" + lines[20][:25])  # crash mid-row, no end line
    report = Session(folder).finetune()
    assert report["accepted"]
    assert any("cut short" in n for n in report["notes"])


def test_take_without_partner_onsets_gives_no_update(tmp_path, song):
    folder = tmp_path / "s"
    score = Session.open(folder, song).score()
    silent = VirtualPartner(score, times_s=[], partner_offset_s=LEAD)
    play_take(song, silent, SimClock(), session=folder, settings=EngineSettings(partner_offset_s=LEAD),
              mix=False, plot=False)
    report = Session(folder).finetune()
    assert not report["accepted"] and "no partner onset" in report["reason"] and report["version"] is None


def test_nan_in_a_take_is_refused(tmp_path, song):
    folder = tmp_path / "s"
    _take(folder, song, offset_ms=10)
    take, lines = _take_lines(folder)
    row = json.loads(lines[3])
    row["yhat"] = float("nan")
    lines[3] = json.dumps(row)
    take.write_text("\n".join(lines) + "\n")
    report = Session(folder).finetune()
    assert not report["accepted"] and "yhat is nan" in report["reason"]


def test_offbeat_partner_notes_grow_the_score(tmp_path):
    # Drums on the quarter notes, the partner on every 8th: its "and"s fall in the middle of
    # the gaps -> tentative silent rows after take 0, confirmed (permanent) by take 1.
    from rolypoly.score import score_from_grid
    grid = np.zeros((4 * 24, 9), bool)
    grid[::6, 0] = True
    song = tmp_path / "quarters.mid"
    write_midi(score_from_grid(grid, bpm=100), song)
    folder = tmp_path / "s"
    n0 = len(load_score(song))

    def take():
        score = Session.open(folder, song).score()
        p = VirtualPartner(load_score(song), bar_positions=[b + k / 8 for b in range(4) for k in range(8)],
                           partner_offset_s=LEAD, instrument="keys")
        return play_take(song, p, SimClock(), session=folder, settings=EngineSettings(partner_offset_s=LEAD),
                         mix=False, plot=False), score

    take()
    r0 = Session(folder).finetune()
    assert len(r0["offbeat"]["new"]) >= 12 and r0["offbeat"]["tentative"] == len(r0["offbeat"]["new"])
    grown = Session(folder).score()
    assert len(grown) == n0 + len(r0["offbeat"]["new"])
    assert not grown.hits[~np.isin(grown.step, [0, 6, 12, 18])].any()  # silent rows
    summary, played = take()
    assert read_take(summary["take_dir"]).header.rows == len(grown)
    r1 = Session(folder).finetune()
    assert len(r1["offbeat"]["confirmed"]) >= 12 and r1["offbeat"]["permanent"] >= 12
    assert r1["accepted"]
    out = tmp_path / "export.mid"
    Session(folder).export_midi(out)
    assert len(load_score(out)) == n0  # silent rows sound nothing


def test_with_rows_places_silent_rows_in_time(song):
    score = load_score(song)
    grown = with_rows(score, [(1, 1), (0, 0)])  # (0, 0) already there
    assert len(grown) == len(score) + 1
    k = int(np.flatnonzero((grown.bar == 1) & (grown.step == 1))[0])
    assert not grown.hits[k].any()
    assert grown.onset_s[k] == pytest.approx(2.0 + 2.0 / 24)  # 120 bpm 4/4: 2 s bars
    assert np.all(np.diff(grown.onset_s) > 0)
    assert grown.duration_ms[k - 1] == pytest.approx(2000 / 24)
    assert score_hash(grown) != score_hash(score)


def test_session_of_another_score_is_refused(tmp_path, song):
    Session.open(tmp_path / "s", song)
    other = tmp_path / "other.mid"
    write_midi(straight_eighths(bars=2), other)
    with pytest.raises(SessionError, match="another score"):
        Session.open(tmp_path / "s", other)


def test_cli_session_commands(tmp_path, song, capsys):
    folder = tmp_path / "s"
    assert main(["session", "new", str(folder), "--score", str(song)]) == 0
    _take(folder, song, offset_ms=12, jitter_ms=3)
    assert main(["finetune", str(folder), "--no-dataset", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "take 0 → model version 1: accepted" in out
    assert main(["session", "list", str(folder), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["current"] == 1 and [v["version"] for v in listing["versions"]] == [0, 1]
    assert main(["session", "revert", str(folder), "0"]) == 0
    assert main(["session", "export", str(folder), "-o", str(tmp_path / "perf.mid")]) == 0
    assert len(load_score(tmp_path / "perf.mid")) == len(load_score(song))
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "nowhere"), "--no-dataset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rolypoly: ") and "not a session" in err and len(err.strip().splitlines()) == 1


def test_broken_session_json_is_one_line(tmp_path, song):
    folder = tmp_path / "s"
    Session.open(folder, song)
    (folder / "session.json").write_text("{not json")
    with pytest.raises(SessionError, match="unreadable"):
        Session(folder)


def test_a_revert_made_during_a_fine_tune_stays(tmp_path, song):
    """Issue 10: `finetune S --epochs 300 & sleep 0.5; session revert S 0` lost the revert and its history."""
    import threading
    import time

    folder = tmp_path / "s"
    _take(folder, song, offset_ms=15, jitter_ms=3, seed=1)
    assert Session(folder).finetune(epochs=1)["current"] == 1
    reports = []
    tuning = threading.Thread(target=lambda: reports.append(Session(folder).finetune(epochs=400)))
    tuning.start()
    time.sleep(0.5)
    assert tuning.is_alive(), "the fine-tune must still be running when the revert comes"
    assert main(["session", "revert", str(folder), "0"]) == 0
    tuning.join(120)
    report = reports[0]
    meta = json.loads((folder / "session.json").read_text())
    assert meta["model"] == 0, "the revert stays"
    assert {"revert_to": 0} in [{k: v for k, v in h.items() if k == "revert_to"} for h in meta["history"]]
    assert report["accepted"] and report["version"] == 2 and report["current"] == 0
    assert "not played" in report["reason"]
    assert (folder / "models" / "002" / "weights.safetensors").is_file()
