"""The groove library: drummers' beats from the Groove MIDI Dataset as scores, with and without the dataset."""
from __future__ import annotations

import csv
import filecmp
import json

import numpy as np
import pytest

from rolypoly.audio_io import write_wav
from rolypoly.cli import main
from rolypoly.grooves import SHIPPED_DIR, SUBSET_MAX_BYTES, library, make_subset, read_library
from rolypoly.paths import gmd_dir


@pytest.fixture
def gmd():
    root = gmd_dir()
    if not (root / "info.csv").is_file():
        pytest.skip(f"Groove MIDI Dataset not at {root} (set ROLYPOLY_GMD)")
    return root


@pytest.fixture
def no_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLYPOLY_GMD", str(tmp_path / "no-dataset-here"))


def _names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if "/" in line.split(" ", 1)[0] and line[0] != " "]


def test_list_without_the_dataset_shows_the_shipped_beats_and_whose_they_are(no_dataset, capsys):
    assert main(["grooves", "list", "--style", "funk"]) == 0
    out = capsys.readouterr().out
    names = _names(out)
    shipped = [g.name for g in read_library(SHIPPED_DIR) if g.style == "funk"]
    assert names and sorted(names) == sorted(shipped)
    assert "shipped with rolypoly" in out and "--gmd DIR" in out
    assert out.rstrip().splitlines()[-1].startswith("Beats from the Groove MIDI Dataset")
    assert "CC BY 4.0" in out.splitlines()[-1]


def test_list_filters_the_whole_dataset_by_style_tempo_and_meter(gmd, capsys):
    assert main(["grooves", "list", "--style", "funk", "--bpm", "90-110", "--meter", "4/4", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["source"] == "dataset" and "CC BY 4.0" in listed["attribution"]
    # The same question asked of info.csv directly.
    with open(gmd / "info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = {r["midi_filename"] for r in rows if r["style"].split("/")[0] == "funk"
                and 90 <= int(r["bpm"]) <= 110 and r["time_signature"] == "4-4" and r["beat_type"] == "beat"}
    assert {str(p["file"]).removeprefix(str(gmd) + "/") for p in listed["grooves"]} == expected
    assert main(["grooves", "list", "--meter", "6/8"]) == 0
    out = capsys.readouterr().out
    assert _names(out) and all(line.split()[1] == "6/8" for line in out.splitlines()
                               if line.split(" ", 1)[0] in _names(out))


def test_a_groove_has_the_same_name_and_notes_with_and_without_the_dataset(gmd):
    shipped = read_library(SHIPPED_DIR)
    whole = {g.name: g for g in read_library(gmd)}
    assert len(whole) == 1150
    for g in shipped:
        assert filecmp.cmp(g.path, whole[g.name].path, shallow=False), g.name
        assert (g.style, g.bpm, g.meter, g.kind) == (whole[g.name].style, whole[g.name].bpm,
                                                       whole[g.name].meter, whole[g.name].kind)


def test_the_shipped_subset_is_what_the_command_makes(gmd, tmp_path, capsys):
    assert main(["grooves", "subset", "--gmd", str(gmd), "--out", str(tmp_path / "sub")]) == 0
    assert "beats of" in capsys.readouterr().out
    made = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert made == sorted(p.name for p in SHIPPED_DIR.iterdir())
    for name in made:
        assert filecmp.cmp(tmp_path / "sub" / name, SHIPPED_DIR / name, shallow=False), name


def test_the_shipped_subset_is_small_and_varied(no_dataset):
    grooves, where = library()
    assert where == "shipped"
    assert sum(p.stat().st_size for p in SHIPPED_DIR.iterdir()) < SUBSET_MAX_BYTES
    assert all(g.kind == "beat" and g.path.is_file() for g in grooves)
    assert len({g.style for g in grooves}) >= 10 and {"4/4", "3/4", "6/8"} <= {g.meter for g in grooves}
    for style in {g.style for g in grooves}:
        assert 1 <= sum(g.style == style and g.meter == "4/4" for g in grooves) <= 3
    attribution = (SHIPPED_DIR / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "Groove MIDI Dataset" in attribution


def test_play_a_groove_as_the_score_without_the_dataset(no_dataset, tmp_path, capsys):
    partner = tmp_path / "click.wav"
    clicks = np.zeros(48000, np.float32)
    clicks[24000:24100] = 0.5
    write_wav(partner, clicks, 48000)
    assert main(["simulate", "--groove", "funk/118", "--partner-file", str(partner), "--partner-offset", "0",
                 "--sessions", str(tmp_path / "sessions")]) == 0
    out = capsys.readouterr().out
    session = tmp_path / "sessions" / "funk-118"
    assert f"take written to {session}/takes/000" in out
    assert filecmp.cmp(session / "score.mid", SHIPPED_DIR / "funk-118.mid", shallow=False)
    assert main(["session", "new", "mine", "--groove", "rock/157", "--sessions", str(tmp_path / "sessions")]) == 0
    assert "session " in capsys.readouterr().out
    assert filecmp.cmp(tmp_path / "sessions" / "mine" / "score.mid", SHIPPED_DIR / "rock-157.mid", shallow=False)


@pytest.mark.parametrize("argv, problem", [
    (["simulate", "--groove", "funk/9999", "--partner-file", "x.wav"], "groove funk/9999: not in the library"),
    (["simulate", "--groove", "funky", "--partner-file", "x.wav"], "groove funky: a groove is named STYLE/N"),
    (["simulate", "--partner-file", "x.wav"], "simulate: give a score (a drum MIDI file) or --groove STYLE/N"),
    (["grooves", "list", "--bpm", "fast"], "--bpm fast: expected a tempo or a range"),
])
def test_a_wrong_groove_is_one_line(no_dataset, argv, problem, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rolypoly: {problem}") and err.count("\n") == 1
