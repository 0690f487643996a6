"""``rolypoly serve``: every message through Service.handle, path confinement, and one take over UDP."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from rolypoly.audio_io import write_wav
from rolypoly.lab.partner_audio import clicks
from rolypoly.realtime.service import Service, serve
from rolypoly.score import at_tempo
from rolypoly.demo import demo_score
from rolypoly.errors import ScoreError
from rolypoly.score import load_score, score_from_grid, write_midi

SR = 48000
P = "/rolypoly/"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def score():
    return demo_score()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained LSTM weights: the shipped ones need pretraining, the service only needs a file."""
    from rolypoly.agents import make_agent, save_agent

    path = tmp_path_factory.mktemp("weights") / "lstm.safetensors"
    save_agent(make_agent("lstm"), path)
    return path


@pytest.fixture
def root(tmp_path, score):
    """A sessions folder with a score, a partner recording, a broken MIDI file and a file outside it."""
    root = tmp_path / "sessions"
    root.mkdir()
    write_midi(score, root / "demo.mid")
    write_wav(root / "partner.wav", clicks(score.onset_s[:8] + 0.3, sample_rate=SR), SR)
    (root / "broken.mid").write_bytes(b"not midi at all")
    write_midi(score, tmp_path / "outside.mid")
    write_wav(tmp_path / "outside.wav", np.zeros(SR, np.float32), SR)
    return root


@pytest.fixture
def svc(root, weights):
    service = Service(root, weights={"lstm": weights}, mix=False, plot=False)
    yield service
    service.close(timeout=10)  # a take still playing, the helper process


def call(svc, name, *args):
    return svc.handle(P + name, *args)


def ok(svc, name, *args):
    replies = call(svc, name, *args)
    assert replies[0][0] != P + "error", replies
    return replies


def rejected(svc, name, *args) -> str:
    """Send a bad message; assert an error reply naming the address and no change at all."""
    before = svc.snapshot()
    replies = call(svc, name, *args)
    assert len(replies) == 1 and replies[0][0] == P + "error", replies
    address, reason = replies[0][1]
    assert address == P + name and isinstance(reason, str) and "\n" not in reason and reason
    assert svc.snapshot() == before
    return reason


def loaded(svc):
    ok(svc, "load_score", "demo.mid")
    ok(svc, "partner_file", "partner.wav")
    return svc


# ----------------------------------------------------------------------------- tempo

def test_at_tempo_scales_times_and_tempi_and_keeps_ticks(score):
    fast = at_tempo(score, 120.0)
    r = 120.0 / 96.0
    np.testing.assert_allclose(fast.onset_s, score.onset_s / r)
    np.testing.assert_allclose(fast.duration_ms, score.duration_ms / r)
    np.testing.assert_allclose(fast.bar_ms, score.bar_ms / r)
    np.testing.assert_allclose(fast.tempo_bpm, score.tempo_bpm * r)
    assert fast.tempo_bpm[0] == 120.0 and fast.tempo_bpm[-1] == pytest.approx(78 * r, rel=1e-5)
    for name in ("tick", "bar_ticks", "bar", "step", "hits", "velocities", "timesig"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(score, name))
    assert score.tempo_bpm[0] == pytest.approx(96.0)  # the input is untouched
    fast.onset_s[0] = 99.0
    assert score.onset_s[0] == 0.0  # and shares no arrays


def test_at_tempo_writes_a_midi_file_at_the_new_tempo(score, tmp_path):
    write_midi(at_tempo(score, 144.0), tmp_path / "fast.mid")
    back = load_score(tmp_path / "fast.mid")
    np.testing.assert_allclose(back.onset_s, score.onset_s * 96 / 144, atol=1e-4)  # whole µs per beat in MIDI


@pytest.mark.parametrize("bpm", [24.0, 0.0, -10.0, math.nan, math.inf])
def test_at_tempo_refuses_unplayable_tempi(score, bpm):
    # At 24 bpm the change to 78 (ratio 0.8125) would be 19.5 bpm.
    with pytest.raises(ScoreError):
        at_tempo(score, bpm)


# ----------------------------------------------------------------------------- scores and sessions

def test_load_score_opens_its_session_with_a_and_b(svc, root):
    (_, args), = ok(svc, "load_score", "demo.mid")
    assert args[:3] == [P + "load_score", "demo", 123] and args[4:] == [96.0, 1.0, 1.0]
    assert Path(args[3]) == root / "demo" and (root / "demo" / "score.mid").is_file()
    meta = json.loads((root / "demo" / "session.json").read_text())
    assert meta["A"] == 1.0 and meta["B"] == 1.0
    assert svc.snapshot()["session"] == str(root / "demo")


def test_load_score_accepts_an_absolute_path_inside(svc, root):
    ok(svc, "load_score", str(root / "demo.mid"))
    assert svc.snapshot()["score"] == str(root / "demo.mid")


def test_load_score_of_a_sessions_own_score_reopens_that_session(svc, root):
    ok(svc, "load_score", "demo.mid")
    ok(svc, "load_score", "demo/score.mid")
    assert svc.snapshot()["session"] == str(root / "demo")
    assert not (root / "score").exists()


def test_load_score_errors_carry_the_score_error_text(svc, root):
    assert "not a readable Standard MIDI File" in rejected(svc, "load_score", "broken.mid")
    assert "no such file" in rejected(svc, "load_score", "missing.mid")
    assert not (root / "broken").exists() and not (root / "missing").exists()


def test_load_score_refuses_a_session_of_another_score(svc, root):
    from rolypoly.session import Session

    write_midi(score_from_grid(np.eye(24, 9, dtype=bool), bpm=100, name="other"), root / "other.mid")
    Session.open(root / "demo", root / "other.mid")
    assert "another score" in rejected(svc, "load_score", "demo.mid")


@pytest.mark.parametrize("kind", ["dotdot", "nested dotdot", "absolute", "symlink", "symlinked folder"])
def test_paths_cannot_leave_the_sessions_folder(svc, root, tmp_path, kind):
    for ext in (".mid", ".wav"):
        os.symlink(tmp_path / f"outside{ext}", root / f"link{ext}")
    os.symlink(tmp_path, root / "linkdir")
    base = {"dotdot": "../outside", "nested dotdot": "demo/../../outside", "absolute": str(tmp_path / "outside"),
            "symlink": "link", "symlinked folder": "linkdir/outside"}[kind]
    assert "outside the sessions folder" in rejected(svc, "load_score", base + ".mid")
    assert "outside the sessions folder" in rejected(svc, "partner_file", base + ".wav")
    assert not (root / "outside").exists() and not (root / "link").exists()


def test_a_symlink_inside_pointing_inside_is_fine(svc, root):
    os.symlink(root / "demo.mid", root / "alias.mid")
    ok(svc, "load_score", "alias.mid")


@pytest.mark.parametrize("args", [(), ("a.mid", "b.mid"), (5,), (1.5,), ("",), (None,), (b"demo.mid",),
                                  ("demo\0.mid",)])
def test_load_score_malformed_arguments(svc, args):
    rejected(svc, "load_score", *args)


def test_load_session_by_name(svc, root):
    ok(svc, "load_score", "demo.mid")
    svc2 = Service(root, weights=svc.weights)
    (_, args), = ok(svc2, "load_session", "demo")
    assert args[1] == "demo" and Path(args[3]) == root / "demo"
    assert svc2.snapshot()["score"] == str(root / "demo" / "score.mid")


@pytest.mark.parametrize("name", ["nope", "..", ".", "../sessions", "demo/takes", "", "LINK", 3])
def test_load_session_errors(svc, root, tmp_path, name):
    ok(svc, "load_score", "demo.mid")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_midi(demo_score(), outside / "score.mid")
    os.symlink(outside, root / "link")
    (root / "empty").mkdir()
    rejected(svc, "load_session", "link" if name == "LINK" else name)
    rejected(svc, "load_session", "empty")


def test_a_and_b_belong_to_the_session(svc, root):
    ok(svc, "ab", 0.5, 2)                               # no session yet: kept for the next one
    ok(svc, "load_score", "demo.mid")                   # a new session gets them
    assert json.loads((root / "demo" / "session.json").read_text())["B"] == 2.0
    ok(svc, "ab", -1.0, 3.0)
    meta = json.loads((root / "demo" / "session.json").read_text())
    assert (meta["A"], meta["B"]) == (-1.0, 3.0) and "score_hash" in meta
    svc2 = Service(root)
    ok(svc2, "load_session", "demo")                    # an existing session keeps its own
    assert (svc2.snapshot()["A"], svc2.snapshot()["B"]) == (-1.0, 3.0)


@pytest.mark.parametrize("args", [(math.nan, 1.0), (1.0, math.inf), ("1", 1.0), (1.0,), (1, 2, 3), (True, 1.0),
                                  (1.0, None)])
def test_ab_malformed(svc, root, args):
    ok(svc, "load_score", "demo.mid")
    rejected(svc, "ab", *args)
    assert json.loads((root / "demo" / "session.json").read_text())["A"] == 1.0


# ----------------------------------------------------------------------------- partner and clock

def test_partner_file_and_device(svc, root):
    (_, args), = ok(svc, "partner_file", "partner.wav")
    assert args[1] == str(root / "partner.wav") and args[2] > 0
    ok(svc, "partner_device", "USB Audio")
    assert svc.snapshot()["partner"] == "device:USB Audio"
    ok(svc, "partner_device", 2)
    assert svc.snapshot()["partner"] == "device:2"


@pytest.mark.parametrize("path", ["missing.wav", "demo.mid", "", ".", 7])
def test_partner_file_errors(svc, path):
    rejected(svc, "partner_file", path)


@pytest.mark.parametrize("dev", [-1, 1.5, True, "", None, b"x"])
def test_partner_device_errors(svc, dev):
    rejected(svc, "partner_device", dev)


def test_clock_sim_only_with_a_file_partner(svc):
    ok(svc, "clock", "sim")
    assert "real clock" in rejected(svc, "partner_device", "hw:1")
    ok(svc, "partner_file", "partner.wav")
    ok(svc, "clock", "real")
    ok(svc, "partner_device", "hw:1")
    assert "partner file" in rejected(svc, "clock", "sim")


@pytest.mark.parametrize("args", [("fast",), (1,), (), ("sim", "real"), ("SIM",)])
def test_clock_malformed(svc, args):
    rejected(svc, "clock", *args)


# ----------------------------------------------------------------------------- take settings

def test_tempo_scales_the_next_take_and_says_by_how_much(svc):
    ok(svc, "load_score", "demo.mid")
    assert call(svc, "tempo", 120) == [(P + "ok", [P + "tempo", 120.0, 1.25])]
    snap = svc.snapshot()
    assert snap["tempo"] == 120.0 and snap["tempo_factor"] == 1.25
    ok(svc, "load_score", "demo.mid")                    # a score (re)loaded plays at its own tempo
    assert svc.snapshot()["tempo"] == 96.0


def test_tempo_needs_a_score(svc):
    assert "load a score" in rejected(svc, "tempo", 100.0)


@pytest.mark.parametrize("bpm", [19.9, 400.5, 0, -96, math.nan, math.inf, "120", True, None, 24.0])
def test_tempo_malformed(svc, bpm):
    ok(svc, "load_score", "demo.mid")
    rejected(svc, "tempo", bpm)                          # 24 bpm: the change to 78 would leave 20-400


def test_window_and_agent(svc):
    assert call(svc, "window", 2.5) == [(P + "ok", [P + "window", 2.5])]
    ok(svc, "agent", "seq2seq")
    assert svc.snapshot()["window"] == 2.5 and svc.snapshot()["agent"] == "seq2seq"


@pytest.mark.parametrize("f", [1, 1.0, 0.5, -3, math.nan, math.inf, "3", False])
def test_window_malformed(svc, f):
    rejected(svc, "window", f)


@pytest.mark.parametrize("args", [("gru",), ("LSTM",), (1,), (), ("lstm", "seq2seq")])
def test_agent_malformed(svc, args):
    rejected(svc, "agent", *args)


def test_reply_to_an_address_or_the_sender(svc):
    assert svc.destination(("10.0.0.9", 5555)) == ("127.0.0.1", 9101)
    ok(svc, "reply_to", "127.0.0.1", 9200)
    assert svc.destination(("10.0.0.9", 5555)) == ("127.0.0.1", 9200)
    ok(svc, "reply_to", "sender")
    assert svc.destination(("10.0.0.9", 5555)) == ("10.0.0.9", 5555)


@pytest.mark.parametrize("args", [("127.0.0.1",), ("127.0.0.1", 0), ("127.0.0.1", 70000), ("127.0.0.1", "9101"),
                                  ("127.0.0.1", 9101.0), ("", 9101), (9101, "127.0.0.1"), ()])
def test_reply_to_malformed(svc, args):
    rejected(svc, "reply_to", *args)


@pytest.mark.parametrize("address", [P + "nope", "/other/play", P, "/rolypoly", "play", P + "PLAY"])
def test_unknown_addresses(svc, address):
    before = svc.snapshot()
    (reply, (echo, reason)), = svc.handle(address)
    assert reply == P + "error" and echo == address and "unknown address" in reason
    assert svc.snapshot() == before


@pytest.mark.parametrize("name", ["play", "stop", "status", "quit"])
def test_messages_without_arguments_refuse_arguments(svc, name):
    rejected(svc, name, 1)


def test_nothing_raises_whatever_arrives(svc):
    junk = [None, True, 0, -1, 2 ** 40, 1e308, math.nan, "", "x" * 5000, "../../etc/passwd", b"\x00", "/"]
    for name in Service._HANDLERS:
        if name in ("play", "quit"):
            continue
        for a in junk:
            for args in ((a,), (a, a), (a, a, a)):
                replies = call(svc, name, *args)
                assert replies and all(isinstance(r[0], str) for r in replies)
    assert svc.snapshot()["state"] == "idle"


def test_status_when_idle(svc, root):
    ok(svc, "load_score", "demo.mid")
    (address, args), = call(svc, "status")
    status = dict(zip(args[::2], args[1::2]))
    assert address == P + "status"
    assert status == {"state": "idle", "score": "demo", "session": str(root / "demo"), "agent": "lstm",
                      "tempo": 96.0, "tempo_factor": 1.0, "window": 3.0, "A": 1.0, "B": 1.0, "clock": "real",
                      "partner": "", "last_take": "", "generate": "off"}


# ----------------------------------------------------------------------------- takes (stand-in player)

class FakeEngine:
    def __init__(self):
        self.stopped = threading.Event()
        self.status = {"row": 7, "bar": 1, "yhat_ms": 1.5, "diff_ms": -2.0, "misses": 0, "xruns": 0,
                       "onsets": 3, "midi": "off"}

    def stop(self):
        self.stopped.set()


class FakePlayer:
    """Stands in for play_take: builds an engine, plays until stopped, leaves a take folder."""

    def __init__(self, fail=None, attach_after=None, hold_s=5.0):
        self.engine = FakeEngine()
        self.calls = []
        self.started = threading.Event()
        self.fail, self.attach_after, self.hold_s = fail, attach_after, hold_s

    def __call__(self, **kw):
        self.calls.append(kw)
        self.started.set()
        if self.attach_after is not None:
            self.attach_after.wait(5)
        kw["on_engine"](self.engine)
        if self.fail:
            raise self.fail
        assert self.engine.stopped.wait(self.hold_s)
        take_dir = Path(kw["session"]) / "takes" / "000"
        take_dir.mkdir(parents=True)
        return {"take_dir": str(take_dir), "rows": 8, "misses": 1}


def test_play_status_stop_take_done(svc, root):
    player = svc.player = FakePlayer()
    loaded(svc)
    ok(svc, "clock", "sim")
    ok(svc, "window", 2.0)
    assert call(svc, "play") == [(P + "playing", ["demo", 96.0, 1.0])]
    assert player.started.wait(5)
    kw = player.calls[0]
    assert kw["clock"].simulated and kw["settings"].window_factor == 2.0 and kw["mix"] is False
    assert kw["session"] == root / "demo" and kw["source"].sample_rate == SR
    assert kw["drums"] is None and kw["kit"] is None  # a simulated take: nothing sounds live

    assert "playing" in rejected(svc, "play")                     # a second play changes nothing
    _wait_for(lambda: svc._take.engine is not None)
    status = dict(zip(*[iter(call(svc, "status")[0][1])] * 2))
    assert status["state"] == "playing" and status["row"] == 7 and status["diff_ms"] == -2.0
    assert call(svc, "stop") == [(P + "stopping", [])]
    dest, replies = svc.outbox.get(timeout=5)
    take_dir = root / "demo" / "takes" / "000"
    assert dest == ("127.0.0.1", 9101) and replies == [(P + "take_done", [str(take_dir), 8, 1])]
    assert json.loads((take_dir / "service.json").read_text())["window_factor"] == 2.0
    _wait_for(lambda: not svc.playing)
    snap = svc.snapshot()
    assert snap["state"] == "idle" and snap["last_take"] == str(take_dir)


def test_stop_before_the_engine_exists_still_stops_it(svc):
    gate = threading.Event()
    player = svc.player = FakePlayer(attach_after=gate)
    loaded(svc)
    ok(svc, "play")
    assert player.started.wait(5)
    ok(svc, "stop")
    gate.set()
    assert player.engine.stopped.wait(5)
    assert svc.outbox.get(timeout=5)[1][0][0] == P + "take_done"


def test_a_failed_take_is_reported_and_the_service_goes_idle(svc):
    svc.player = FakePlayer(fail=RuntimeError("disk full\nmore"))
    loaded(svc)
    ok(svc, "play")
    dest, replies = svc.outbox.get(timeout=5)
    assert replies == [(P + "error", [P + "play", "take failed: disk full"])]
    _wait_for(lambda: not svc.playing)
    assert svc.snapshot()["last_take"] == ""


def test_play_needs_score_partner_and_weights(svc, root):
    assert "no score" in rejected(svc, "play")
    ok(svc, "load_score", "demo.mid")
    assert "no partner" in rejected(svc, "play")
    ok(svc, "partner_file", "partner.wav")
    svc.weights["seq2seq"] = root / "none.safetensors"
    ok(svc, "agent", "seq2seq")
    assert "no weights" in rejected(svc, "play")


def test_stop_when_idle_is_an_error(svc):
    assert "no take" in rejected(svc, "stop")


def test_quit_stops_a_take(svc):
    player = svc.player = FakePlayer()
    loaded(svc)
    ok(svc, "play")
    _wait_for(lambda: svc._take is not None and svc._take.engine is not None)
    assert call(svc, "quit") == [(P + "bye", [])]
    assert svc.quitting and player.engine.stopped.is_set()
    svc.close()
    assert not svc.playing


def test_finetune_between_takes_reports_progress_and_the_result(svc, root):
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.engine import EngineSettings
    from rolypoly.realtime.sources import FileSource

    assert "no session" in rejected(svc, "finetune")
    loaded(svc)
    assert "no takes" in rejected(svc, "finetune")
    play_take(root / "demo.mid", FileSource(root / "partner.wav"), SimClock(), session=root / "demo",
              settings=EngineSettings(partner_offset_s=0.0), mix=False, plot=False)
    assert "no take 4" in rejected(svc, "finetune", 4)
    assert "EPOCHS" in rejected(svc, "finetune", -1, 0)
    assert "LR" in rejected(svc, "finetune", -1, 3, float("nan"))
    gate, load_gmd = threading.Event(), svc._gmd_subset
    svc._gmd_subset = lambda: (gate.wait(30), load_gmd())[1]  # hold the fine-tune at its start
    assert call(svc, "finetune", -1, 3) == [(P + "finetuning", [str(root / "demo"), -1, 3, 1e-3])]
    assert "fine-tuning" in rejected(svc, "play")
    assert "already fine-tuning" in rejected(svc, "finetune")
    gate.set()
    got = []
    while not got or got[-1][0] != P + "finetuned":
        got += svc.outbox.get(timeout=60)[1]
    progress = [args for address, args in got if address == P + "finetune_progress"]
    assert [p[:2] for p in progress] == [[1, 3], [2, 3], [3, 3]] and all(p[2] >= 0 for p in progress)
    accepted, version, current, reason, take = got[-1][1]
    assert (accepted, version, current, take) == (1, 1, 1, 0) and reason.startswith("accepted")
    _wait_for(lambda: svc._tuning is None)
    assert json.loads((root / "demo" / "session.json").read_text())["model"] == 1


def test_settings_sent_during_a_fine_tune_are_kept(svc, root):
    """Issue 10: /finetune, then /ab and /humanize while it runs: both were answered ok, then lost."""
    from rolypoly.groove_model import default_groove_weights
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.engine import EngineSettings
    from rolypoly.realtime.sources import FileSource
    from rolypoly.session import Session

    loaded(svc)
    play_take(root / "demo.mid", FileSource(root / "partner.wav"), SimClock(), session=root / "demo",
              settings=EngineSettings(partner_offset_s=0.0), mix=False, plot=False)
    gate, load_gmd = threading.Event(), svc._gmd_subset
    svc._gmd_subset = lambda: (gate.wait(30), load_gmd())[1]  # hold the fine-tune at its start
    ok(svc, "finetune", -1, 3)
    assert call(svc, "ab", 0.3, 0.7) == [(P + "ok", [P + "ab", 0.3, 0.7])]
    humanize = default_groove_weights("humanize").is_file()
    if humanize:
        assert call(svc, "humanize", 1, 5) == [(P + "ok", [P + "humanize", 1, 5])]
    gate.set()
    got = []
    while not got or got[-1][0] != P + "finetuned":
        got += svc.outbox.get(timeout=60)[1]
    _wait_for(lambda: svc._tuning is None)
    session = Session(root / "demo")
    assert session.stored_ab() == (0.3, 0.7) and session.meta["model"] == 1
    if humanize:
        assert session.pattern == {"humanize": True, "seed": 5, "temperature": 0.0}
    status = dict(zip(*[iter(call(svc, "status")[0][1])] * 2))
    assert (status["A"], status["B"]) == (0.3, 0.7)


def test_humanize_and_drumify_swap_the_pattern_between_takes(svc, root):
    from rolypoly.groove_model import default_groove_weights
    from rolypoly.session import Session

    assert "no session" in rejected(svc, "humanize", 1)
    loaded(svc)
    assert "ON must be" in rejected(svc, "humanize", 2)
    if not default_groove_weights("humanize").is_file():
        pytest.skip("no shipped humanize model")
    assert call(svc, "humanize", 1, 7) == [(P + "ok", [P + "humanize", 1, 7])]
    assert Session(root / "demo").pattern == {"humanize": True, "seed": 7, "temperature": 0.0}
    ok(svc, "humanize", 0)
    assert Session(root / "demo").pattern["humanize"] is False
    assert "no such file" in rejected(svc, "drumify", "nothing.wav")
    assert "outside" in rejected(svc, "drumify", "../outside.wav")
    if not default_groove_weights("drumify").is_file():
        pytest.skip("no shipped drumify model")
    replies = call(svc, "drumify", "partner.wav", 96.0)
    assert replies[0][0] == P + "ok" and replies[0][1][:2] == [P + "drumify", "partner-drums"], replies
    assert svc.snapshot()["session"] == str(root / "partner-drums")
    assert (root / "partner-drums" / "score.mid").is_file()
    assert call(svc, "drumify", "partner.wav", 96.0)[0][1][1] == "partner-drums-1"  # never overwrites


# ----------------------------------------------------------------------------- control work mid-take

def _playing(svc):
    """Start a stand-in take that plays until stopped; the service is then mid-take."""
    player = svc.player = FakePlayer(hold_s=120.0)
    loaded(svc)
    ok(svc, "play")
    _wait_for(lambda: svc._take is not None and svc._take.engine is not None)
    return player


def _later(svc, timeout=90.0):
    """The next replies the service sends on its own (through its outbox)."""
    return svc.outbox.get(timeout=timeout)[1]


def _status(svc) -> dict:
    (address, args), = call(svc, "status")
    return dict(zip(args[::2], args[1::2]))


def test_loads_mid_take_are_done_by_the_worker_and_answered_in_order(svc, root):
    from rolypoly.session import Session

    write_midi(score_from_grid(np.eye(24, 9, dtype=bool), bpm=100, name="next"), root / "next.mid")
    _playing(svc)
    assert "outside the sessions folder" in rejected(svc, "load_score", "../outside.mid")  # checked at once
    assert call(svc, "load_score", "next.mid") == []          # the worker parses it
    assert call(svc, "tempo", 120.0) == []                      # waits for it: the next score's tempo
    assert call(svc, "window", 2.5) == [] and call(svc, "ab", 0.5, 2.0) == []
    status = _status(svc)                                       # answered at once
    assert status["pending"] == P + "load_score" and status["waiting"] == 3 and status["score"] == "demo"
    assert status["state"] == "playing"
    (address, args), = _later(svc)
    assert address == P + "ok" and args[:4] == [P + "load_score", "next", len(load_score(root / "next.mid")),
                                                 str(root / "next")] and args[4:] == [100.0, 1.0, 1.0]
    assert _later(svc) == [(P + "ok", [P + "tempo", 120.0, 1.2])]
    assert _later(svc) == [(P + "ok", [P + "window", 2.5])]
    assert _later(svc) == [(P + "ok", [P + "ab", 0.5, 2.0])]
    assert Session(root / "next").stored_ab() == (0.5, 2.0)    # written by the worker too
    snap = svc.snapshot()
    assert (snap["session"], snap["tempo"], snap["window"], snap["A"]) == (str(root / "next"), 120.0, 2.5, 0.5)
    assert "pending" not in _status(svc)
    assert call(svc, "window", 3.0) == [(P + "ok", [P + "window", 3.0])]  # nothing waits: at once again

    assert call(svc, "load_score", "broken.mid") == []          # a load that fails changes nothing
    before = svc.snapshot()
    (address, (echo, reason)), = _later(svc)
    assert (address, echo) == (P + "error", P + "load_score") and "not a readable Standard MIDI File" in reason
    assert svc.snapshot() == before and not (root / "broken").exists()
    assert call(svc, "load_session", "demo") == []
    assert _later(svc)[0][1][:2] == [P + "load_session", "demo"]
    assert svc.worker.started == 1                               # one helper process for all of it


def test_a_worker_that_hangs_or_dies_is_an_error_reply_and_the_service_goes_on(svc, root):
    _playing(svc)
    before = svc.snapshot()
    svc.worker.timeout_s = 0.05  # less than the helper process needs to start
    assert call(svc, "load_score", "demo.mid") == [] and call(svc, "window", 2.5) == []
    (address, (echo, reason)), = _later(svc)
    assert (address, echo) == (P + "error", P + "load_score") and "took too long" in reason
    assert _later(svc) == [(P + "ok", [P + "window", 2.5])]     # what waited is handled all the same
    assert svc.snapshot() == {**before, "window": 2.5}

    svc.worker.timeout_s = 60.0
    assert call(svc, "load_score", "demo.mid") == []
    _wait_for(lambda: svc.worker.pid is not None)
    os.kill(svc.worker.pid, signal.SIGKILL)                      # while it starts: the job is lost
    (address, (echo, reason)), = _later(svc)
    assert (address, echo) == (P + "error", P + "load_score") and "died" in reason
    assert svc.snapshot() == {**before, "window": 2.5}
    assert call(svc, "load_score", "demo.mid") == []             # a new process takes the next one
    assert _later(svc)[0] == (P + "ok", [P + "load_score", "demo", 123, str(root / "demo"), 96.0, 1.0, 1.0])
    assert svc.worker.started == 3


def test_quit_answers_what_still_waits_and_ends_the_worker(svc, root):
    _playing(svc)
    assert call(svc, "load_score", "demo.mid") == [] and call(svc, "play") == []
    assert call(svc, "quit") == [(P + "bye", [])]
    svc.close(timeout=90)  # what serve() does after quit: the take's files, the load in progress
    replies = []
    while not svc.outbox.empty():
        replies += svc.outbox.get()[1]
    assert [address for address, _ in replies if address != P + "take_done"] == [P + "ok", P + "error"]
    assert replies[-1] == (P + "error", [P + "play", "not handled: the service quit first"])
    assert svc.worker.pid is None and not svc.playing


def test_messages_waiting_are_bounded(svc):
    from rolypoly.realtime.service import MAX_WAITING

    _playing(svc)
    assert call(svc, "load_score", "demo.mid") == []
    for _ in range(MAX_WAITING):
        assert call(svc, "agent", "seq2seq") == []
    (address, (echo, reason)), = call(svc, "agent", "lstm")
    assert (address, echo) == (P + "error", P + "agent") and reason.startswith("busy")
    assert _later(svc)[0][1][0] == P + "load_score"
    for _ in range(MAX_WAITING):
        assert _later(svc) == [(P + "ok", [P + "agent", "seq2seq"])]


@contextlib.contextmanager
def _real_time_priority():
    """This thread and the threads it starts at real-time priority (SCHED_FIFO 20), where allowed.

    So that other programs on a busy machine do not count against the
    service; the service's own interpreter lock and garbage collector are
    untouched by it. Where it is not allowed, the block runs as it is.
    """
    try:
        saved = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, *saved)


@pytest.mark.slow
def test_control_messages_during_a_real_clock_take_never_delay_a_hit(tmp_path):
    """Issue 10: a real-clock take over UDP while a large score (8,000 rows), a session, A/B, tempo,
    window, humanize, drumify and status arrive: no miss, every hit within 2 ms of its intended
    time, as when nothing arrives (before: misses, hits 100-600 ms late).

    A lone late hit or miss can be the machine's (a virtual CPU paused, a BLAS thread of another
    priority: idle takes show it too, about one in ten here); then the take is played again and
    must be clean: the service's own delays repeat.
    """
    from rolypoly.lab.bench_service import LATE_LIMIT_MS, make_sessions, run_take

    root = make_sessions(tmp_path / "sessions", take_bars=3, large_bars=1000)
    for _ in range(2):
        with _real_time_priority():
            result = run_take(root, "control", send_at_s=0.5)
        replies = {m["message"].split()[0]: m for m in result["messages"]}
        for name in ("tempo", "window", "ab", "load_session", "load_score"):
            assert replies[name]["reply"] == P + "ok", replies[name]
        for name in ("humanize", "drumify"):
            assert replies[name]["reply"] == P + "error" and "between takes" in replies[name]["reason"]
        assert replies["status"]["reply"] == P + "status" and result["rows"] == 36
        clean = result["misses"] == 0 and result["hits_over_2ms"] == 0
        if clean or result["misses"] > 1 or result["hits_over_2ms"] > 1:  # not a lone hiccup
            break
    assert result["misses"] == 0 and result["late_ms_max"] <= LATE_LIMIT_MS, result


def _wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


# ----------------------------------------------------------------------------- over UDP

class Listener:
    """The controller's side: a UDP socket receiving the service's replies."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def next(self, timeout=30.0):
        self.sock.settimeout(timeout)
        msg = OscMessage(self.sock.recv(65536))
        return msg.address, list(msg.params)

    def until(self, address, timeout=60.0):
        seen = []
        end = time.monotonic() + timeout
        while True:
            got = self.next(max(0.1, end - time.monotonic()))
            seen.append(got)
            if got[0] == address:
                return got, seen


def test_a_take_over_udp(root, weights, score):
    # A partner playing along, 10 ms late, for the whole score.
    write_wav(root / "bass.wav", clicks(score.onset_s + 0.01, sample_rate=SR), SR)
    listener = Listener()
    bound = []
    ready = threading.Event()
    thread = threading.Thread(target=serve, kwargs=dict(
        host="127.0.0.1", port=0, reply=("127.0.0.1", 9), sessions_dir=root, weights={"lstm": weights},
        mix=False, plot=False, ready=lambda addr: (bound.append(addr), ready.set())), daemon=True)
    thread.start()
    assert ready.wait(10)
    client = SimpleUDPClient(*bound[0])

    def send(name, *args):
        client.send_message(P + name, list(args))

    send("reply_to", "127.0.0.1", listener.port)
    assert listener.next() == (P + "ok", [P + "reply_to", "127.0.0.1", listener.port])
    send("window", float("nan"))
    address, args = listener.next()
    assert address == P + "error" and args[0] == P + "window"
    send("nope", 1, "x")
    assert listener.next()[1][0] == P + "nope"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\xffnot osc at all", bound[0])  # dropped by python-osc; the server goes on
    for msg in (("load_score", "demo.mid"), ("partner_file", "bass.wav"), ("clock", "sim"), ("tempo", 120.0)):
        send(*msg)
        assert listener.next()[0] == P + "ok"
    send("play")
    assert listener.next() == (P + "playing", ["demo", 120.0, 1.25])
    send("play")
    assert listener.next()[0] == P + "error"
    send("status")
    (_, status), _ = listener.until(P + "status")
    assert dict(zip(status[::2], status[1::2]))["state"] in ("playing", "idle")
    (_, (take_dir, rows, misses)), _ = listener.until(P + "take_done")
    take = Path(take_dir)
    assert take.is_dir() and take.parent == root / "demo" / "takes" and rows == len(score)
    assert {"take.jsonl", "partner.wav", "drums.mid", "service.json"} <= {p.name for p in take.iterdir()}
    np.testing.assert_allclose(load_score(take / "drums.mid").tempo_bpm[0], 120.0, rtol=1e-5)
    send("status")
    (_, status), _ = listener.until(P + "status")
    status = dict(zip(status[::2], status[1::2]))
    assert status["state"] == "idle" and status["last_take"] == take_dir and status["tempo"] == 120.0
    send("quit")
    assert listener.until(P + "bye")[0] == (P + "bye", [])
    thread.join(10)
    assert not thread.is_alive()


def test_serve_command_serves_until_quit(root, capsys):
    from rolypoly.cli import build_parser
    from rolypoly.cli.live import run_serve

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = Listener()
    args = build_parser().parse_args(["serve", "--host", "127.0.0.1", "--port", str(port),
                                      "--reply", f"127.0.0.1:{listener.port}", "--sessions", str(root)])
    done = []
    thread = threading.Thread(target=lambda: done.append(run_serve(args)), daemon=True)
    thread.start()
    client = SimpleUDPClient("127.0.0.1", port)
    for _ in range(100):  # until it listens
        client.send_message(P + "status", [])
        try:
            address, _ = listener.next(timeout=0.1)
            break
        except socket.timeout:
            continue
    assert address == P + "status"
    client.send_message(P + "quit", [])
    thread.join(10)
    assert done == [0] and f"udp 127.0.0.1:{port}" in capsys.readouterr().out


def test_serve_command_refuses_a_bad_reply_address(root):
    from rolypoly.cli import build_parser
    from rolypoly.cli.live import run_serve
    from rolypoly.errors import RolypolyError

    with pytest.raises(RolypolyError, match="HOST:PORT"):
        run_serve(build_parser().parse_args(["serve", "--port", "0", "--reply", "9101", "--sessions", str(root)]))
