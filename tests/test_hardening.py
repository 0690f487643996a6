"""Issue 14's measured failures: tiny files that took the whole machine, session.json fields that
ended in tracebacks, an export that hid its fallback, over-long paths, antiphase partners.

Each test here failed on the main branch before the fix. Where the old code would allocate
gigabytes, the command runs in a child process with its address space capped, so that the old
behaviour fails fast instead of taking the machine with it.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from rolypoly.errors import CheckpointError, RolypolyError, ScoreError
from rolypoly.paths import DEMO_PARTNER, DEMO_SCORE
from rolypoly.score import load_score
from rolypoly.session import Session, SessionError

from .midi_factory import write_drum_midi

#: Address space a child process gets: torch imports in ~1 GB; the old code needed 7-25 GB.
CHILD_MEMORY = 4 << 30


def rolypoly_capped(*args, cwd=None, timeout=240) -> subprocess.CompletedProcess:
    """``rolypoly ARGS`` in a child process whose address space is capped at CHILD_MEMORY."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    return subprocess.run([sys.executable, "-m", "rolypoly.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap)


def one_line_refusal(proc, *words) -> str:
    """The command failed with exit status 2 and one line naming the problem (no traceback)."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def gap_midi(tmp_path):
    """Two drum notes 2^27 ticks apart: a file of a hundred bytes and 194 hours of music."""
    return write_drum_midi(tmp_path / "gap.mid", [(0, 36, 100), (2 ** 27, 38, 100)], tpb=96)


# ----------------------------------------------------------------------------- sizes from files

def test_a_score_longer_than_an_hour_is_refused_before_its_rows_are_made(gap_midi):
    assert gap_midi.stat().st_size < 200
    with pytest.raises(ScoreError, match=r"gap.mid: its last event \(tick 134217728\) is at 194.2 hours, longer "
                                         r"than the 1 hour"):
        load_score(gap_midi)


def test_a_far_meter_change_counts_as_the_end_of_the_piece(tmp_path):
    # One note, and a 3/4 two weeks later: making the bars up to it would loop for minutes.
    path = write_drum_midi(tmp_path / "meter.mid", [(0, 36, 100)], meters=[(0, 4, 4), (2 ** 31, 3, 4)])
    with pytest.raises(ScoreError, match="longer than the 1 hour"):
        load_score(path)


def test_too_many_bars_are_refused(tmp_path):
    # 1/64 bars at 400 bpm: 20 minutes are 128,000 bars.
    path = write_drum_midi(tmp_path / "short.mid", [(0, 36, 100), (480 * 400 * 20, 38, 100)],
                           tempi=[(0, 400)], meters=[(0, 1, 64)])
    with pytest.raises(ScoreError, match="bars, more than the 10000"):
        load_score(path)


def test_a_large_midi_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.mid"
    path.write_bytes(b"MThd" + b"\0" * (5 << 20))
    with pytest.raises(ScoreError, match="5 MiB, larger than the 4 MiB a MIDI file may be"):
        load_score(path)


def test_taps_at_a_slower_tempo_are_checked_again(tmp_path):
    from rolypoly.groove import read_taps

    # 50 minutes at 400 bpm are fine; at 20 bpm they are 16 hours.
    path = write_drum_midi(tmp_path / "taps.mid", [(0, 36, 100), (480 * 400 * 50, 38, 100)], tempi=[(0, 400)])
    assert read_taps(path).n_bars > 4000
    with pytest.raises(ScoreError, match="longer than the 1 hour"):
        read_taps(path, bpm=20)


def test_groove_windows_are_bounded_by_the_padding_of_the_longest_bar(tmp_path):
    from rolypoly.groove_grid import read_groove, windows

    # One 64/1 bar among 9,000 bars of 1/16: every window padded to the long one's 2 x 1,024 steps.
    meters = [(0, 64, 1), (480 * 256, 1, 16)]
    path = write_drum_midi(tmp_path / "odd.mid", [(0, 36, 100), (480 * 256 + 120 * 9000, 38, 100)],
                           tempi=[(0, 400)], meters=meters)
    groove = read_groove(path)
    with pytest.raises(ScoreError, match="grid steps in its .* windows .* more than the 1000000"):
        windows(groove)


def test_a_mix_longer_than_the_longest_take_is_refused_not_allocated():
    from rolypoly.synth import render_hits

    hits = np.zeros(9, bool)
    hits[0] = True
    with pytest.raises(RolypolyError, match="drum mix: would last .* longer than"):
        render_hits([(0.0, hits, np.full(9, 100))], 48000, 10 ** 12)


def test_engine_settings_out_of_range_are_refused_before_the_take(tmp_path):
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.engine import EngineSettings
    from rolypoly.realtime.sources import FileSource

    for settings, word in ((EngineSettings(partner_offset_s=-1e9), "partner_offset_s"),
                           (EngineSettings(window_factor=1e39), "window_factor"),
                           (EngineSettings(budget_ms=float("nan")), "budget_ms")):
        with pytest.raises(RolypolyError, match=word):
            play_take(DEMO_SCORE, FileSource(DEMO_PARTNER), SimClock(), session=tmp_path / "s", settings=settings,
                      mix=False, plot=False)
        assert not (tmp_path / "s").exists()


def test_groove_humanize_and_simulate_refuse_the_gap_file_in_one_line(tmp_path, gap_midi):
    # Before: groove humanize peaked at 19.8 GB, simulate wrote the take and crashed on a 25 GiB mix.
    one_line_refusal(rolypoly_capped("groove", "humanize", gap_midi, "-o", tmp_path / "out.mid"),
                     "gap.mid", "194.2 hours")
    one_line_refusal(rolypoly_capped("simulate", gap_midi, "--partner-file", DEMO_PARTNER, "--session",
                                     tmp_path / "s"), "gap.mid", "194.2 hours")
    assert not (tmp_path / "out.mid").exists() and not (tmp_path / "s").exists()


def _weights_with_config(tmp_path, src: Path, **change) -> Path:
    """A copy of a weights file whose header config says something else."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps(json.loads(meta["config"]) | change)
    out = tmp_path / f"{src.stem}-{'-'.join(f'{k}{v}' for k, v in change.items())}.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


def test_a_weights_header_asking_for_a_huge_model_is_refused_without_building_it(tmp_path):
    from rolypoly.agents import default_weights
    from rolypoly.groove_model import default_groove_weights

    # Before: 7 GB and 51 s, then "not a rolypoly timing agent".
    big = _weights_with_config(tmp_path, default_weights("lstm"), hidden=12000)
    assert big.stat().st_size < 4 << 20
    one_line_refusal(rolypoly_capped("humanize", DEMO_SCORE, "-o", tmp_path / "x.mid", "--weights", big),
                     "1728924001 parameters in its config, more than the 32000000")
    groove = _weights_with_config(tmp_path, default_groove_weights("infill"), decoder_hidden=20000)
    one_line_refusal(rolypoly_capped("groove", "infill", DEMO_SCORE, "-o", tmp_path / "y.mid", "--weights",
                                     groove), "parameters in its config")
    assert not (tmp_path / "x.mid").exists() and not (tmp_path / "y.mid").exists()


def test_a_weights_header_that_does_not_match_its_tensors_names_the_first_difference(tmp_path):
    from rolypoly.agents import default_weights, load_agent

    wide = _weights_with_config(tmp_path, default_weights("lstm"), hidden=300)
    with pytest.raises(CheckpointError, match=r"config does not match its weights \(head.weight: the config says "
                                              r"shape \(1, 300\), the file holds shape \(1, 256\)\)"):
        load_agent(wide)
    deep = _weights_with_config(tmp_path, default_weights("lstm"), layers=10 ** 6)
    with pytest.raises(CheckpointError, match="1000000 layers, more than the 16"):
        load_agent(deep)


# ----------------------------------------------------------------------------- session.json

def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


BAD_FIELDS = [
    ({"model": "abc"}, '"model" must be a model version number'),
    ({"model": -1}, '"model" must be a model version number'),
    ({"A": float("nan")}, '"A" must be a finite number'),
    ({"B": 1e39}, '"B" must be a finite number within ±1000'),
    ({"history": "a string"}, '"history" must be a list of objects'),
    ({"pattern": "junk"}, '"pattern" must be an object'),
    ({"pattern": {"humanize": True, "seed": "x"}}, '"pattern" seed must be a whole number'),
    ({"pattern": {"temperature": -1}}, '"pattern" temperature must be a number 0-100'),
    ({"offbeat": {"version": 1, "notes": [{"bar": 10 ** 9, "step": 3, "status": "tentative",
                                           "proposed_by": 0}]}}, '"offbeat" position bar 1000000000'),
    ({"offbeat": [1, 2]}, '"offbeat" not an off-beat ledger'),
    ({"score_versions": {"abc": [[2, 99]]}}, '"score_versions" position bar 2 step 99'),
    ({"score": None}, '"score" must be a non-empty string'),
]


@pytest.mark.parametrize("change,message", BAD_FIELDS, ids=[next(iter(c)) + str(i) for i, (c, _) in
                                                            enumerate(BAD_FIELDS)])
def test_a_bad_session_json_field_is_one_line_and_nothing_is_written(played_session, fresh_session, change,
                                                                     message):
    folder = fresh_session
    meta = json.loads((folder / "session.json").read_text())
    meta.update(change)
    (folder / "session.json").write_text(json.dumps(meta))  # NaN as JSON's NaN, as a careless edit leaves it
    before = _tree(folder)
    for action in (lambda: Session(folder).finetune(), lambda: Session(folder).set_ab(0.5, 0.5),
                   lambda: Session.open(folder, played_session[1])):
        with pytest.raises(SessionError, match=message.replace("(", r"\(").replace("[", r"\[")):
            action()
    # Before: "history" a string left an orphan models/001 behind a traceback.
    assert _tree(folder) == before


def test_a_deleted_session_json_is_not_started_over(played_session, fresh_session):
    folder = fresh_session
    (folder / "session.json").unlink()
    before = _tree(folder)
    with pytest.raises(SessionError, match="session.json is missing but the folder holds a session "
                                           r"\(models and takes\)"):
        Session.open(folder, played_session[1])
    assert _tree(folder) == before


def test_bad_values_are_not_stored(fresh_session):
    folder = fresh_session
    before = _tree(folder)
    for a, b in ((float("nan"), 1.0), (1e39, 1.0), (1.0, -1e4)):
        with pytest.raises(SessionError, match="must be a finite number within"):
            Session(folder).set_ab(a, b)
    assert _tree(folder) == before


def test_export_says_when_it_plays_another_version_than_the_current(fresh_session, tmp_path):
    folder = fresh_session
    s = Session(folder)
    assert s.finetune()["current"] == 1
    (folder / "models" / "001" / "weights.safetensors").write_bytes(b"broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.export_midi(tmp_path / "out.mid")
    text = " ".join(str(w.message) for w in caught)
    assert "exporting with model version 0, not the session's current 1" in text, text


# ----------------------------------------------------------------------------- paths and audio

def test_an_over_long_path_is_named_not_an_internal_error(tmp_path, capsys):
    from rolypoly.cli import main

    long = tmp_path / ("a" * 300)
    for argv in (["session", "new", str(long), "--score", str(DEMO_SCORE)], ["session", "list", str(long)],
                 ["simulate", str(DEMO_SCORE), "--partner-file", str(DEMO_PARTNER), "--session", str(long)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "too long" in err, err


def test_a_stereo_partner_in_antiphase_is_not_silenced(tmp_path):
    from rolypoly.audio_io import load_audio, write_wav
    from rolypoly.onsets import detect

    mono = load_audio(DEMO_PARTNER)[: 48000 * 8]
    path = tmp_path / "antiphase.wav"
    write_wav(path, np.stack([mono, -mono], axis=1), 48000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        heard = load_audio(path)
    assert any("antiphase" in str(w.message) for w in caught)
    np.testing.assert_array_equal(heard, mono)  # the louder (here: first) channel, untouched
    assert len(detect(heard, sample_rate=48000)[0]) == len(detect(mono, sample_rate=48000)[0]) > 5
    # An ordinary stereo file is still the average of its channels, without a word.
    write_wav(path, np.stack([mono, 0.5 * mono], axis=1), 48000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        np.testing.assert_allclose(load_audio(path), 0.75 * mono, atol=1e-6)
    assert not caught


def test_a_recording_past_the_limits_is_refused_from_its_header(tmp_path):
    import soundfile

    from rolypoly.audio_io import load_audio

    path = tmp_path / "long.flac"  # two hours of silence: a small file, 691 MB of samples at 48 kHz
    with soundfile.SoundFile(str(path), "w", 8000, 1, "PCM_16", format="FLAC") as f:
        block = np.zeros(8000 * 600, np.int16)
        for _ in range(12):
            f.write(block)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(RolypolyError, match="long.flac: lasts 2.0 hours, longer than the 1 hour"):
        load_audio(path)
    with soundfile.SoundFile(str(path), "w", 4000, 1, "PCM_16", format="FLAC") as f:
        f.write(np.zeros(4000, np.int16))
    with pytest.raises(RolypolyError, match="sample rate 4000 Hz, outside the 8000-384000 Hz"):
        load_audio(path)


# ----------------------------------------------------------------------------- the OSC service

P = "/rolypoly/"


@pytest.fixture
def service_root(tmp_path):
    """A sessions folder with a short score and a partner recording, and a folder outside it."""
    from rolypoly.audio_io import write_wav
    from rolypoly.lab.experiments import straight_eighths
    from rolypoly.lab.partner_audio import clicks
    from rolypoly.score import write_midi

    root = tmp_path / "sessions"
    root.mkdir()
    song = straight_eighths(bars=2, bpm=120)
    write_midi(song, root / "song.mid")
    write_wav(root / "partner.wav", clicks(song.onset_s + 0.01, sample_rate=48000), 48000)
    (tmp_path / "outside").mkdir()
    return root


class _Udp:
    """A service on a loopback port and the controller's socket its replies come to."""

    def __init__(self, root):
        import socket
        import threading

        from pythonosc.udp_client import SimpleUDPClient

        from rolypoly.realtime.service import serve

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        bound, ready = [], threading.Event()
        self.thread = threading.Thread(target=serve, daemon=True, kwargs=dict(
            host="127.0.0.1", port=0, reply=("127.0.0.1", self.sock.getsockname()[1]), sessions_dir=root,
            mix=False, plot=False, ready=lambda a: (bound.append(a), ready.set())))
        self.thread.start()
        assert ready.wait(30)
        self.address = bound[0]
        self.client = SimpleUDPClient(*bound[0])

    def send_raw(self, name, *typed):
        """A message with explicit OSC types: ``("d", 1e39)``..."""
        from pythonosc.osc_message_builder import OscMessageBuilder

        b = OscMessageBuilder(P + name)
        for tag, value in typed:
            b.add_arg(value, tag)
        self.client.send(b.build())

    def ask(self, name, *args, timeout=10.0):
        """Send a message; its reply (address, args), or None when none comes."""
        self.client.send_message(P + name, list(args))
        return self.reply(timeout)

    def reply(self, timeout=10.0):
        import socket

        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(timeout)
        try:
            msg = OscMessage(self.sock.recv(65536))
        except socket.timeout:
            return None
        return msg.address, list(msg.params)

    def close(self):
        self.client.send_message(P + "quit", [])
        self.thread.join(30)
        self.sock.close()


def test_a_number_too_large_for_a_reply_is_refused_and_status_still_answers(service_root):
    udp = _Udp(service_root)
    try:
        assert udp.ask("load_score", "song.mid")[0] == P + "ok"
        # Before: accepted without a reply, and no status answered afterwards (1e39 is no float32).
        udp.send_raw("window", ("d", 1e39))
        got = udp.reply()
        assert got is not None and got[0] == P + "error" and got[1][0] == P + "window", got
        udp.send_raw("tempo", ("d", 1e39))
        assert udp.reply()[0] == P + "error"
        status = udp.ask("status")
        assert status is not None and status[0] == P + "status"
        # Before: A = 1e39 went into session.json, and every later load_session went unanswered.
        udp.send_raw("ab", ("d", 1e39), ("f", 1.0))
        got = udp.reply()
        assert got is not None and got[0] == P + "error" and got[1][0] == P + "ab", got
        assert json.loads((service_root / "song" / "session.json").read_text())["A"] == 1.0
        got = udp.ask("load_session", "song")
        assert got is not None and got[0] == P + "ok", got
    finally:
        udp.close()


def test_a_reply_that_cannot_be_sent_becomes_an_error_reply(service_root):
    import socket

    from pythonosc.osc_message import OscMessage

    from rolypoly.realtime.service import Replier

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        replier = Replier()
        replier.send(("127.0.0.1", sock.getsockname()[1]), [("/rolypoly/ok", ["/rolypoly/window", 1e39])])
        msg = OscMessage(sock.recv(65536))
        replier.close()
    assert msg.address == P + "error" and msg.params[0] == P + "window"
    assert "could not be sent" in msg.params[1], msg.params


def test_a_symlinked_session_folder_is_not_written_through(service_root, tmp_path):
    from rolypoly.realtime.service import Service

    outside = tmp_path / "outside"
    (service_root / "sym").symlink_to(outside, target_is_directory=True)
    (service_root / "sym.mid").write_bytes((service_root / "song.mid").read_bytes())
    svc = Service(service_root, reply=None, mix=False, plot=False)
    # Before: session.json and score.mid were created in the folder the link points to.
    replies = svc.handle(P + "load_score", "sym.mid")
    assert replies[0][0] == P + "error" and "outside the sessions folder" in replies[0][1][1], replies
    assert list(outside.iterdir()) == []
    assert svc.handle(P + "ab", 0.5, 0.5)[0][0] == P + "ok"  # no session loaded: nothing written anywhere
    assert list(outside.iterdir()) == []


def test_an_over_long_path_in_a_message_is_named(service_root):
    from rolypoly.realtime.service import Service

    svc = Service(service_root, reply=None, mix=False, plot=False)
    for name in ("load_score", "partner_file", "drumify", "load_session"):
        (address, (what, reason)), = svc.handle(P + name, "x" * 1000 + ".mid")
        assert address == P + "error" and "internal error" not in reason and "too long" in reason, reason
