"""Live generation: bars written during the take (realtime/live_bars.py), takes with their own rows,
the controls (command line, OSC, MIDI), the follow experiment and the demo."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from rolypoly.demo import riff_positions, riff_score
from rolypoly.errors import RolypolyError
from rolypoly.generate import BarWriter
from rolypoly.lab.virtual_partner import VirtualPartner
from rolypoly.realtime.clock import SimClock
from rolypoly.realtime.duet import play_take
from rolypoly.realtime.engine import EngineSettings
from rolypoly.realtime.live_bars import KINDS, BarFeed, PedalControls
from rolypoly.score import load_score, write_midi
from rolypoly.take import read_take

LEAD = 0.3


@pytest.fixture(scope="module")
def writer():
    return BarWriter.load()


@pytest.fixture
def song(tmp_path):
    """8 bars of rock at 160 bpm, as a file (a session's score): ``(path, score)``."""
    path = tmp_path / "rock.mid"
    write_midi(riff_score(8, bpm=160.0), path)
    return path, load_score(path)


def _partner(score, positions, **kw):
    return VirtualPartner(score, bar_positions=positions, instrument="bass", partner_offset_s=LEAD, **kw)


def _take(path, partner, tmp_path, generate, **kw):
    return play_take(path, partner, SimClock(), session=tmp_path / "session", settings=EngineSettings(partner_offset_s=LEAD),
                     mix=False, plot=False, generate=generate, **kw)


class SlowWriter(BarWriter):
    """The shipped models, made late for one bar (as a loaded machine would make them)."""

    def __init__(self, writer, late_bar, delay_s):
        super().__init__(writer.continuation, writer.fill)
        self.late_bar, self.delay_s = late_bar, delay_s

    def next_bar(self, state, controls):
        if state.bar == self.late_bar:
            time.sleep(self.delay_s)
        return super().next_bar(state, controls)


# ----------------------------------------------------------------------------- the feed and the engine

def test_a_generated_take_records_the_rows_it_played_and_leaves_the_score(song, tmp_path, writer):
    path, score = song
    before = path.read_bytes()
    partner = _partner(score, riff_positions(8, 3))
    summary = _take(path, partner, tmp_path, {"mode": "follow", "writer": writer})
    take = read_take(summary["take_dir"])
    g = summary["generated"]
    assert g["bars"] == 8 and g["bars_generated"] == 7 and g["bars_late"] == 0 and not summary["stopped_early"]
    assert take.own_rows and take.header.rows is None and take.header.extra["generated"]["mode"] == "follow"
    rows = take.rows
    assert len(rows) == summary["rows"] and (rows["row"] == np.arange(len(rows))).all()
    assert rows["bar"].max() == 7 and np.isfinite(rows["played"]).all()
    # What was played differs from the score, and the take says what: hits and velocities of its own.
    hits = rows["features"][:, :9] > 0.5
    assert (rows["velocities"][hits] > 0).all() and (rows["velocities"][~hits] == 0).all()
    assert len(rows) != len(score) or not np.array_equal(hits, score.hits)
    assert path.read_bytes() == before                       # the session's score was not rewritten
    from rolypoly.session import Session

    sess = Session(tmp_path / "session")
    assert (sess.folder / "score.mid").read_bytes() == before


def test_a_late_bar_repeats_the_bar_before_and_is_counted(song, tmp_path, writer):
    path, score = song
    partner = _partner(score, riff_positions(8, 8))
    summary = _take(path, partner, tmp_path, {"mode": "follow", "writer": SlowWriter(writer, 4, 2.0)})
    g = summary["generated"]
    # Bar 5 is not there a beat before it (and while its job runs, the next bars are not asked for).
    assert g["bars_late"] >= 1 and g["bars"] == 8 and not summary["stopped_early"]   # the beat went on
    rows = read_take(summary["take_dir"]).rows
    bar3, bar4 = rows[rows["bar"] == 3], rows[rows["bar"] == 4]
    assert np.array_equal(bar3["step"], bar4["step"])
    assert np.array_equal(bar3["features"][:, :9], bar4["features"][:, :9])
    assert np.array_equal(bar3["velocities"], bar4["velocities"])
    assert read_take(summary["take_dir"]).end.summary["generated"]["bars_late"] == g["bars_late"]  # in the take


def test_a_silent_partner_gets_the_score_as_written(song, tmp_path, writer):
    path, score = song
    partner = _partner(score, [b + k / 4 for b in range(2) for k in range(4)])   # plays bars 1-2 only
    summary = _take(path, partner, tmp_path, {"mode": "follow", "writer": writer})
    g = summary["generated"]
    assert g["bars_silent"] >= 3 and g["bars_late"] == 0
    rows = read_take(summary["take_dir"]).rows
    last = rows[rows["bar"] == 7]
    want = score.bar == 7
    assert np.array_equal(last["step"], score.step[want])
    assert np.array_equal(last["features"][:, :9] > 0.5, score.hits[want])


def test_a_model_that_does_not_load_turns_generation_off_not_the_take(song, tmp_path):
    path, score = song
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 a pickle, not weights")
    said = []
    summary = _take(path, _partner(score, riff_positions(8, 4)), tmp_path,
                    {"mode": "follow", "continuation": bad}, say=said.append)
    assert len(said) == 1 and said[0].startswith("generation off, the score plays as written:") and "bad.safetensors" in said[0]
    assert summary["generated"]["bars_score"] == 8 and summary["rows"] == len(score)
    assert any("generation off" in p for p in summary["problems"])


def test_fills_every_n_bars_and_on_request(song, tmp_path, writer):
    path, score = song
    summary = _take(path, _partner(score, riff_positions(8, 8)), tmp_path,
                    {"mode": "fills", "writer": writer, "fill_every": 4})
    g = summary["generated"]
    assert g["bars_fill"] == 2 and g["bars_score"] == 6                # bars 4 and 8
    rows = read_take(summary["take_dir"]).rows
    for b in (0, 1, 2, 4, 5, 6):                                      # the others as written
        assert np.array_equal(rows["step"][rows["bar"] == b], score.step[score.bar == b])


def test_controls_are_checked_and_a_fill_during_a_fill_is_refused(song, writer):
    _, score = song
    feed = BarFeed(score, writer, mode="follow")
    try:
        for bad in ({"follow": 1.5}, {"density": -0.1}, {"style": "polka"}, {"temperature": float("nan")},
                    {"tempo": 1}):
            with pytest.raises(RolypolyError):
                feed.set(**bad)
        assert feed.controls.follow == 0.9                             # nothing changed
        assert feed.set(follow=0.2, style="funk").style == "funk"
        feed.start()
        assert feed.fill() == 1
        with pytest.raises(RolypolyError, match="a fill is already coming"):
            feed.fill()
        with pytest.raises(RolypolyError, match="generate mode"):
            BarFeed(score, writer, mode="solo")
    finally:
        feed.close()
    off = BarFeed(score, None)
    with pytest.raises(RolypolyError, match="generation is off"):
        off.fill()
    pedal = PedalControls()
    pedal.press("fill")
    assert pedal.problems == ["fill: no take with generation is playing"]


def test_a_fill_asked_for_while_playing_fills_the_next_bar(song, tmp_path, writer):
    path, score = song
    asked = []

    def on_engine(engine):
        feed = engine.bars
        original = feed.after_hit

        def after_hit():  # the player presses the pedal early in bar 3
            if feed.playing_bar == 2 and not asked:
                asked.append(feed.fill())
            original()
        feed.after_hit = after_hit

    summary = _take(path, _partner(score, riff_positions(8, 8)), tmp_path, {"mode": "follow", "writer": writer},
                    on_engine=on_engine)
    assert asked == [3] and summary["generated"]["bars_fill"] == 1
    take = read_take(summary["take_dir"])
    assert take.end.summary["generated"]["bars_fill"] == 1


# ----------------------------------------------------------------------------- learning from such a take

def test_targets_offbeat_rule_and_finetuning_accept_a_take_with_its_own_rows(song, tmp_path, writer):
    from rolypoly.session import Session
    from rolypoly.take import validate_take

    path, score = song
    summary = _take(path, _partner(score, riff_positions(8, 3)), tmp_path, {"mode": "follow", "writer": writer})
    take = read_take(summary["take_dir"])
    sess = Session(tmp_path / "session")
    played = sess.score_of_hash(take.header.score_hash)
    assert played is not None and len(take.rows) != len(played)
    check = validate_take(take, take.header.score_hash, len(played))
    assert check.usable and len(check.rows) == len(take.rows), check.reasons
    score_before = (sess.folder / "score.mid").read_bytes()
    report = sess.finetune(epochs=1, centre="beats")
    assert report["accepted"], report
    assert report["version"] == 1 and report["targets"]["n_onsets"] > 0
    assert (sess.folder / "score.mid").read_bytes() == score_before


def test_an_old_take_without_velocities_still_reads(tmp_path, song):
    from rolypoly.take import Take, TakeHeader, played_hits, validate_take

    _, score = song
    lines = [{"type": "take", "score": "rock", "score_hash": "h", "rows": 2}]
    for t in range(2):  # a take file as written before takes carried velocities
        features = [float(x) for x in score.hits[t]] + [0.0] * 6
        lines.append({"type": "row", "row": t, "bar": 0, "step": int(score.step[t]), "features": features,
                      "yhat": 0.0, "notated": float(score.onset_s[t]), "diff": 0.01})
    lines.append({"type": "end", "rows": 2})
    f = tmp_path / "take.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    take = read_take(f)
    assert not take.own_rows and validate_take(take, "h", 2).usable
    hits, vel = played_hits(take, score)
    assert np.array_equal(hits, score.hits[:2]) and np.array_equal(vel, np.where(score.hits[:2], score.velocities[:2], 0))
    assert not played_hits(Take(TakeHeader(), take.rows))[1].any()


# ----------------------------------------------------------------------------- the follow experiment

def test_the_follow_experiment_meets_its_target(writer):
    from rolypoly.lab.experiments import follow_experiment

    report = follow_experiment(writer=writer, bars=12, change_bar=6)
    f = report["follow"]
    assert set(f) >= {"alignment_before", "alignment_after", "alignment_fixed_pattern", "bars_to_adapt"}
    assert f["alignment_after"] >= 1.5 * f["alignment_fixed_pattern"], f
    assert f["bars_to_adapt"] is not None and f["bars_to_adapt"] <= 2 and report["beat_never_stopped"]
    assert report["takes"]["follow"]["generated"]["bars_late"] == 0


# ----------------------------------------------------------------------------- the command line

def test_cli_controls_need_generate_and_valid_values(tmp_path, capsys, song):
    from rolypoly.cli import main

    path, _ = song
    wav = tmp_path / "p.wav"
    from rolypoly.audio_io import write_wav

    write_wav(wav, np.zeros(4800, np.float32), 48000)
    base = ["simulate", str(path), "--partner-file", str(wav), "--sessions", str(tmp_path / "s"), "--midi", "off"]
    for extra, said in ((["--follow", "0.5"], "--follow needs --generate"),
                        (["--generate", "follow", "--follow", "1.5"], "follow must be within [0, 1]"),
                        (["--generate", "free", "--style", "polka"], "polka"),
                        (["--generate", "fills", "--fill-every", "-2"], "fill every")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rolypoly: ") and said in err[0], err


def test_generate_cc_specs():
    from rolypoly.realtime.midi_in import parse_generate_cc

    assert parse_generate_cc(["64:fill", "1:follow", "11:density"]) == ({64: "fill"}, {1: "follow", 11: "density"})
    for bad in ("200:fill", "1:tempo", "x:follow"):
        with pytest.raises(RolypolyError, match="--control-cc"):
            parse_generate_cc([bad])


# ----------------------------------------------------------------------------- OSC

def test_osc_generation_messages(tmp_path, song, writer):
    from rolypoly.realtime.service import Service

    path, score = song
    root = tmp_path / "sessions"
    root.mkdir()
    (root / "rock.mid").write_bytes(path.read_bytes())
    svc = Service(root, mix=False, plot=False)
    P = "/rolypoly/"
    try:
        assert svc.handle(P + "generate", "follow", 4) == [(P + "ok", [P + "generate", "follow", 4])]
        assert svc.settings.generate == "follow" and svc.settings.fill_every == 4
        for name, value, said in (("follow", 1.5, "follow must be within [0, 1]"),
                                  ("density", float("nan"), "finite"),
                                  ("style", "polka", "polka"), ("seed", 1.5, "SEED"), ("follow", "a", "number")):
            (address, args), = svc.handle(P + f"generate/{name}", value)
            assert address == P + "error" and said in args[1], args
        assert svc.settings.controls == {}
        assert svc.handle(P + "generate/follow", 0.25)[0] == (P + "ok", [P + "generate/follow", 0.25])
        assert svc.handle(P + "generate/style", "funk")[0][0] == P + "ok"
        assert svc.settings.controls == {"follow": 0.25, "style": "funk"}
        (address, args), = svc.handle(P + "generate/fill")
        assert address == P + "error" and "no take with generation" in args[1]
        assert svc.handle(P + "generate", "solo")[0][0] == P + "error"

        # While a take plays: controls reach its feed, a fill is answered with its bar, a second refused.
        class Engine:
            bars = BarFeed(score, writer, mode="follow")
            status = {}

        class Take:
            engine = Engine()

            def status(self):
                return []
        svc._take = Take()
        Engine.bars.start()
        assert svc.handle(P + "generate/density", 0.8)[0][0] == P + "ok" and Engine.bars.controls.density == 0.8
        assert svc.handle(P + "generate/fill") == [(P + "ok", [P + "generate/fill", 2])]
        (address, args), = svc.handle(P + "generate/fill")
        assert address == P + "error" and "a fill is already coming" in args[1]
        Engine.bars.close()
        svc._take = None
        (address, args), = svc.handle(P + "status")
        assert dict(zip(args[::2], args[1::2]))["generate"] == "follow"
    finally:
        svc.close(timeout=10)


# ----------------------------------------------------------------------------- live, through JACK

@pytest.mark.jack
def test_a_generated_take_in_real_time_through_jack_with_a_pedal_fill(jack_server, tmp_path, song, writer):
    import rtmidi

    from rolypoly.audio_io import write_wav
    from rolypoly.realtime import jack
    from rolypoly.realtime.clock import RealClock, steady_interpreter
    from rolypoly.realtime.midi_in import FootSwitch
    from rolypoly.realtime.rig import open_rig

    path, score = song
    partner = _partner(score, riff_positions(8, 4))
    partner.start(SimClock(), 0.0)
    partner.poll(30.0)
    wav = tmp_path / "bass.wav"
    write_wav(wav, partner.recording(), partner.sample_rate)
    clock = RealClock()
    rig = open_rig(partner_file=wav, drums="audio", midi="off", name=jack.own_name("rolypoly-gen-test"), clock=clock)
    pedal_in = PedalControls()
    switch = FootSwitch({64: "fill"}, pedal_in.press, api="jack", port_name="rolypoly-gen-control")
    pedal = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=jack.own_name("rolypoly-gen-pedal"))
    pressed = threading.Event()

    def press_when_bar_3_plays(engine):
        pedal_in.attach(engine)

        def press():
            while engine.status["bar"] < 2:
                time.sleep(0.01)
            for _ in range(100):               # a fresh JACK connection may drop its first events
                pedal.send_message([0xB0, 64, 127])
                time.sleep(0.02)
                if switch.pressed:
                    break
            pressed.set()
        threading.Thread(target=press, daemon=True).start()

    try:
        ports = pedal.get_ports()
        pedal.open_port(next(i for i, p in enumerate(ports) if p.endswith(":rolypoly-gen-control")))
        with steady_interpreter():
            summary = play_take(path, rig.source, clock, session=tmp_path / "live", settings=EngineSettings(
                partner_offset_s=LEAD), drums=rig.drums, kit=rig.kit, mix=False, plot=False,
                on_engine=press_when_bar_3_plays, generate={"mode": "follow", "writer": writer})
    finally:
        pedal.close_port()
        pedal.delete()
        switch.close()
        rig.close()
    g = summary["generated"]
    assert pressed.is_set() and switch.pressed >= 1
    assert g["bars"] == 8 and not summary["stopped_early"] and summary["rows"] > 0
    assert g["bars_fill"] == 1, (g, pedal_in.problems)
    assert sum(g[f"bars_{k}"] for k in KINDS) == 8
    # The drums went out on JACK, each written bar's hits with them.
    take = read_take(summary["take_dir"])
    assert np.isfinite(take.rows["played"]).all() and len(take.rows) == summary["rows"]


def test_the_generation_demo_follows_the_bundled_bass(tmp_path, capsys):
    from rolypoly.cli import main

    assert main(["demo", "--generate", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "kick or snare on" in line]
    assert len(lines) == 2, out
    after = [int(line.split(", ")[1].split("%")[0]) for line in lines]   # "... 40% from bar 11 on"
    assert after[1] >= 1.5 * after[0], lines
    assert (tmp_path / "generate-session" / "takes" / "001" / "mix.wav").is_file()
