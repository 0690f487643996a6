"""``rolypoly session run``: take -> learn -> take from stdin lines, terminal keys, OSC and a MIDI foot switch."""
from __future__ import annotations

import io
import json
import os
import pty
import queue
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from rolypoly.audio_io import write_wav
from rolypoly.demo import demo_score
from rolypoly.lab.partner_audio import clicks
from rolypoly.score import write_midi

SR = 48000
P = "/rolypoly/"
#: Long enough to learn from, short enough to play in seconds on the simulated clock.
ROWS = 40


@pytest.fixture(scope="module")
def piece(tmp_path_factory):
    """A short drum part and a partner 12 ms behind it, as files."""
    folder = tmp_path_factory.mktemp("piece")
    score = demo_score().head(ROWS)
    write_midi(score, folder / "song.mid")
    write_wav(folder / "bass.wav", clicks(score.onset_s + 0.012, sample_rate=SR), SR)
    whole = demo_score()  # 123 rows, 40 s: a real-clock take long enough to be stopped however busy the machine
    write_midi(whole, folder / "long.mid")
    write_wav(folder / "long.wav", clicks(whole.onset_s + 0.012, sample_rate=SR), SR)
    return folder


def run_args(piece, sessions, *extra) -> list[str]:
    return [sys.executable, "-m", "rolypoly.cli", "session", "run", "song", "--sessions", str(sessions),
            "--score", str(piece / "song.mid"), "--partner", str(piece / "bass.wav"), "--clock", "sim",
            "--midi", "off", "--foot", "off", "--no-dataset", "--no-mix", "--no-plot", *extra]


class Output:
    """What a process writes, collected on a thread; ``wait_for`` a text in it."""

    def __init__(self, read):
        self.text, self._read = "", read
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        while True:
            try:
                chunk = self._read()
            except OSError:  # the pty closed
                return
            if not chunk:
                return
            with self._lock:
                self.text += chunk.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 240.0, start: int = 0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                at = self.text.find(needle, start)
            if at >= 0:
                return at + len(needle)
            time.sleep(0.05)
        raise AssertionError(f"never saw {needle!r}; output was:\n{self.text[-3000:]}")


def model_of_take(sessions: Path, k: int) -> int:
    header = json.loads((sessions / "song" / "takes" / f"{k:03d}" / "take.jsonl").read_text().splitlines()[0])
    return header["model_version"]


def test_two_takes_driven_by_lines_on_stdin(piece, tmp_path):
    sessions = tmp_path / "sessions"
    proc = subprocess.Popen(run_args(piece, sessions, "--control-port", "off"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(lambda: os.read(proc.stdout.fileno(), 4096))

    def send(line):
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    try:
        at = out.wait_for("ready: take 0 plays model version 0")
        send("next")                                                  # take 0 plays version 0, then learns
        at = out.wait_for("take 0 playing, model version 0", start=at)
        at = out.wait_for("accepted: model version 1 plays the next take", start=at)
        assert (sessions / "song" / "models" / "001" / "weights.safetensors").is_file()
        assert json.loads((sessions / "song" / "session.json").read_text())["model"] == 1
        send("bogus")
        at = out.wait_for("unknown command 'bogus'", start=at)
        send("")                                                      # enter: take 1 plays version 1
        at = out.wait_for("take 1 playing, model version 1", start=at)
        at = out.wait_for("model version 2 plays the next take", start=at)
        assert model_of_take(sessions, 0) == 0 and model_of_take(sessions, 1) == 1
        send("r")                                                     # back to what version 2 learnt from
        at = out.wait_for("reverted: model version 1 plays the next take", start=at)
        send("q")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.wait_for("session run: 2 takes played", timeout=10)
    assert "plays model version 1" in out.text and "Traceback" not in out.text
    assert json.loads((sessions / "song" / "session.json").read_text())["model"] == 1
    assert {p.name for p in (sessions / "song" / "takes").iterdir()} == {"000", "001"}
    # The between-take report speaks ms and says where the drums sat.
    assert "partner heard on" in out.text and "ms early" in out.text


def test_takes_n_runs_without_any_command(piece, tmp_path):
    sessions = tmp_path / "sessions"
    done = subprocess.run(run_args(piece, sessions, "--control-port", "off", "--takes", "2"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "session run: 2 takes played" in done.stdout and "plays model version 2" in done.stdout
    assert model_of_take(sessions, 1) == 1


def test_a_run_with_generation_writes_its_bars_and_a_bad_control_is_one_line(piece, tmp_path):
    sessions = tmp_path / "sessions"
    bad = subprocess.run(run_args(piece, sessions, "--control-port", "off", "--takes", "1", "--generate", "follow",
                                  "--follow", "2"),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["rolypoly: follow must be within [0, 1], not 2.0"]
    assert not (sessions / "song" / "takes").exists()
    done = subprocess.run(run_args(piece, sessions, "--control-port", "off", "--takes", "1", "--generate", "follow",
                                   "--style", "funk", "--seed", "7"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header = json.loads((sessions / "song" / "takes" / "000" / "take.jsonl").read_text().splitlines()[0])
    generated = header["generated"]
    assert generated["mode"] == "follow" and generated["controls"]["style"] == "funk", generated
    assert generated["controls"]["seed"] == 7


def test_a_groove_with_a_recording_that_starts_late_is_aligned_before_the_first_take(tmp_path):
    """``--groove`` makes a new session's score; a partner recording without ``--partner-offset`` is
    aligned to it once, said in one line, and the take plays with that offset."""
    import re

    from rolypoly.grooves import groove_path
    from rolypoly.score import load_score

    lead = 1.25  # the recording starts this long before the groove's first beat
    score = load_score(groove_path("funk/118", None))
    write_wav(tmp_path / "bass.wav", clicks(score.onset_s + lead, sample_rate=SR), SR)
    sessions = tmp_path / "sessions"
    done = subprocess.run([sys.executable, "-m", "rolypoly.cli", "session", "run", "gig", "--sessions", str(sessions),
                           "--groove", "funk/118", "--partner", str(tmp_path / "bass.wav"), "--clock", "sim",
                           "--midi", "off", "--foot", "off", "--no-dataset", "--no-mix", "--no-plot",
                           "--control-port", "off", "--takes", "1"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = re.search(r"partner offset (-?[0-9.]+) s: the score starts there in bass.wav", done.stderr)
    assert said is not None, done.stderr
    assert abs(float(said.group(1)) - lead) < 0.005
    assert len(load_score(sessions / "gig" / "score.mid")) == len(score)
    header = json.loads((sessions / "gig" / "takes" / "000" / "take.jsonl").read_text().splitlines()[0])
    assert header["settings"]["partner_offset_s"] == pytest.approx(float(said.group(1)), abs=1e-3)
    assert "warning" not in done.stdout + done.stderr  # heard on the hits: nothing to warn about


def test_keys_on_a_terminal(piece, tmp_path):
    """The key path: a pty is the terminal, the keys go in one by one (cbreak), the screen comes out."""
    sessions = tmp_path / "sessions"
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="40")
    proc = subprocess.Popen(run_args(piece, sessions, "--control-port", "off"), stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = Output(lambda: os.read(master, 4096))
    try:
        at = out.wait_for("enter: next take")                       # the screen's help line
        at = out.wait_for("ready: take 0", start=at)
        os.write(master, b"\r")                                      # enter (a terminal sends CR)
        at = out.wait_for("model version 1 plays the next take", start=at)
        os.write(master, b" ")                                       # space with no take: said so
        at = out.wait_for("no take is playing", start=at)
        os.write(master, b"q")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert "session run: 1 take played" in out.text and "Traceback" not in out.text
    assert "model version" in out.text and "rolypoly · session song" in out.text


class Listener:
    """A UDP socket that receives the run's OSC replies."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.port = self.sock.getsockname()[1]
        self.seen = []

    def until(self, address, timeout: float = 240.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = OscMessage(self.sock.recv(65536))
            except socket.timeout:
                continue
            self.seen.append((msg.address, list(msg.params)))
            if msg.address == address:
                return list(msg.params)
        raise AssertionError(f"no {address}; got {self.seen}")


def test_osc_next_stop_revert_quit(piece, tmp_path):
    sessions = tmp_path / "sessions"
    listener = Listener()
    # The real clock: the take lasts long enough to be stopped.
    args = run_args(piece, sessions, "--control-port", "0", "--reply", f"127.0.0.1:{listener.port}")
    args[args.index("--clock") + 1] = "real"
    args[args.index("--score") + 1] = str(piece / "long.mid")
    args[args.index("--partner") + 1] = str(piece / "long.wav")
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(lambda: os.read(proc.stdout.fileno(), 4096))
    try:
        at = out.wait_for("OSC control on udp 127.0.0.1:")
        port = int(out.text[at:].split(":")[0])
        out.wait_for("ready: take 0")
        client = SimpleUDPClient("127.0.0.1", port)
        client.send_message(P + "run/nope", [])
        assert listener.until(P + "error")[0] == P + "run/nope"
        client.send_message(P + "run/next", [])
        assert listener.until(P + "ok") == [P + "run/next"]
        out.wait_for("take 0 playing")
        row = -1
        while row < ROWS // 2:                                        # a third of the way through the take
            client.send_message(P + "status", [])
            status = listener.until(P + "status")
            row = dict(zip(status[::2], status[1::2])).get("row", -1)
            time.sleep(0.2)
        client.send_message(P + "run/stop", [])
        take_dir, rows, _ = listener.until(P + "take_done")
        assert Path(take_dir).parent == sessions / "song" / "takes" and ROWS // 2 <= rows < 123  # cut short
        accepted, version, current, reason, take = listener.until(P + "finetuned")
        assert (accepted, version, current, take) == (1, 1, 1, 0), reason
        client.send_message(P + "run/revert", [])
        assert listener.until(P + "ok") == [P + "run/revert"]
        out.wait_for("reverted: model version 0")
        client.send_message(P + "status", [])                        # the service's own addresses too
        status = listener.until(P + "status")
        assert dict(zip(status[::2], status[1::2]))["state"] == "idle"
        client.send_message(P + "run/quit", [])
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "session run: 1 take played" in out.text
    assert json.loads((sessions / "song" / "session.json").read_text())["model"] == 0


# ----------------------------------------------------------------------------- in process: service and foot switch

@pytest.fixture
def service(piece, tmp_path):
    from rolypoly.realtime.service import Service
    from rolypoly.realtime.sources import FileSource

    root = tmp_path / "sessions"
    root.mkdir()
    write_midi(demo_score().head(ROWS), root / "song.mid")
    svc = Service(root, mix=False, plot=False)
    assert svc.handle(P + "load_score", "song.mid")[0][0] == P + "ok"
    svc.use_partner("file", str(piece / "bass.wav"), lambda: FileSource(piece / "bass.wav"))
    assert svc.handle(P + "clock", "sim")[0][0] == P + "ok"
    yield svc
    svc.close(timeout=30)


def test_revert_and_run_addresses_of_the_service(service):
    from rolypoly.agents import make_agent
    from rolypoly.session import Session

    err = service.handle(P + "run/next")
    assert err[0][0] == P + "error" and "no session run" in err[0][1][1]
    assert "no model version yet" in service.handle(P + "revert")[0][1][1]
    session = Session(service.settings.session)
    session.ensure_start("lstm")
    assert "where the session started" in service.handle(P + "revert")[0][1][1]
    k = session.models.write(make_agent("lstm"), {"status": "accepted", "kind": "lstm", "parent": 0})
    session.revert(k)
    assert service.handle(P + "revert") == [(P + "ok", [P + "revert", 0])]
    assert service.handle(P + "revert", 1) == [(P + "ok", [P + "revert", 1])]
    assert service.handle(P + "revert", 7)[0][0] == P + "error"
    assert "VERSION" in service.handle(P + "revert", 1.5)[0][1][1]
    got = []
    service.on_run = got.append
    assert service.handle(P + "run/quit") == [(P + "ok", [P + "run/quit"])] and got == ["quit"]


@pytest.mark.jack
def test_a_foot_switch_on_jack_plays_a_take_and_quits(service, jack_server):
    import rtmidi

    from rolypoly.realtime import jack
    from rolypoly.realtime.midi_in import FootSwitch
    from rolypoly.realtime.run import Runner
    from rolypoly.realtime.screen import LineScreen

    from rolypoly.session import Session

    Session(service.settings.session).ensure_start("lstm")  # as session run does (rolypoly.cli.run)
    screen = io.StringIO()
    runner = Runner(service, LineScreen(screen))
    switch = FootSwitch({64: "go", 65: "stop", 66: "quit"}, runner.command, api="jack",
                        port_name="rolypoly-control")
    pedal = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=jack.own_name("rolypoly-test-pedal"))
    result = queue.Queue()
    thread = threading.Thread(target=lambda: result.put(runner.run()), daemon=True)
    try:
        assert switch.api == "jack" and "virtual input 'rolypoly-control'" in switch.describe()
        ports = pedal.get_ports()
        pedal.open_port(next(i for i, p in enumerate(ports) if p.endswith(":rolypoly-control")))
        thread.start()
        # A fresh JACK connection may drop its first events: press the harmless pedal until one arrives.
        for _ in range(100):
            pedal.send_message([0xB0, 65, 127])
            time.sleep(0.05)
            if switch.pressed:
                break
        assert switch.pressed, "no control change ever arrived over JACK"
        pedal.send_message([0xB0, 64, 0])      # pedal up: nothing
        pedal.send_message([0xB0, 64, 127])    # pedal down: the next take, learnt from when it ends
        end = time.monotonic() + 240
        while "plays the next take" not in screen.getvalue() and time.monotonic() < end:
            time.sleep(0.1)
        assert "accepted: model version 1 plays the next take" in screen.getvalue(), screen.getvalue()
        pedal.send_message([0xB0, 66, 127])    # quit
        assert result.get(timeout=30) == 1
    finally:
        pedal.close_port()
        pedal.delete()
        switch.close()
    assert "take 0 playing, model version 0" in screen.getvalue()
    assert "no take is playing" in screen.getvalue()  # the sync presses of the stop pedal


def test_foot_switch_options():
    from rolypoly.errors import RolypolyError
    from rolypoly.realtime.midi_in import parse_foot

    assert parse_foot(["64", "65:revert", "66:quit"]) == {64: "go", 65: "revert", 66: "quit"}
    for bad in ("x", "64:dance", "-1"):
        with pytest.raises(RolypolyError, match="--foot"):
            parse_foot([bad])


def test_a_run_whose_take_cannot_start_ends_in_one_line(piece, tmp_path):
    args = run_args(piece, tmp_path / "sessions", "--control-port", "off", "--takes", "2")
    k = args.index("--partner")
    args[k:k + 2] = ["--partner-device", "99"]
    args[args.index("--clock") + 1] = "real"
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    # The input is opened once, before the first take (as play does); or, where it opens, the take says why not.
    assert last.startswith("rolypoly: ") and "99" in last, done.stderr


def test_a_real_time_run_on_jack_plays_every_take_through_the_kit(jack_server, piece, tmp_path):
    # What play opens is what every take of a run plays through: the sampled kit on JACK, placed to the frame.
    sessions = tmp_path / "sessions"
    args = run_args(piece, sessions, "--control-port", "off", "--takes", "2", "--kit", "synth")
    args[args.index("--clock") + 1] = "real"
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = next(line for line in done.stderr.splitlines() if line.startswith("drums: built-in synthesizer"))
    assert said.endswith("-> system:playback_1, system:playback_2 (JACK, placed to the frame)"), said
    assert "session run: 2 takes played" in done.stdout
    from rolypoly.take import read_take

    for k in range(2):
        take = read_take(sessions / "song" / "takes" / f"{k:03d}")
        assert take.complete and len(take.rows) == ROWS and np.isfinite(take.rows["played"]).all()
        # (xruns are this machine's: JACK's dummy backend skips cycles here with no client at all)
        assert not [p for p in take.end.summary["problems"] if "JACK" in p and "xrun" not in p], \
            take.end.summary["problems"]
        assert np.isfinite(take.rows["diff"]).sum() > ROWS // 2  # the partner file was heard in every take
