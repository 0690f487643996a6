"""MIDI, OSC and audio outputs against a real JACK server (dummy backend) and UDP.

The JACK tests use the session ``jack_server`` fixture and skip without jackd.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rtmidi
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from rolypoly.realtime import jack
from rolypoly.realtime.devices import format_devices, list_devices, resolve_input_device
from rolypoly.realtime.midi_out import MidiOut, api_status
from rolypoly.realtime.osc_out import OscOut
from rolypoly.drum_map import OUTPUT_PITCHES
from rolypoly.errors import DeviceError

KICK, SNARE, CLOSED_HAT = 0, 1, 2


def uniq(name: str) -> str:
    """A JACK client name of this process: names must differ across servers."""
    return f"{name}-{os.getpid()}"


def receive(midi_in, count: int, timeout_s: float = 5.0) -> list[tuple[list[int], float]]:
    """Up to ``count`` (message, delta_s) pairs from an rtmidi MidiIn."""
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        msg = midi_in.get_message()
        if msg is None:
            time.sleep(0.002)
        else:
            got.append(msg)
    return got


def sync(out: MidiOut, midi_in, timeout_s: float = 5.0) -> None:
    """Wait until MIDI from ``out`` reaches ``midi_in``, then drain ``midi_in``.

    JACK applies a new connection a cycle or more after ``jack_connect``
    returns (later on a loaded machine); notes sent before that are lost.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out.all_notes_off()  # harmless: nothing sounds yet
        if receive(midi_in, 1, timeout_s=0.05):
            time.sleep(0.1)
            while midi_in.get_message():
                pass
            return
    pytest.fail("MIDI never arrived over a fresh JACK connection")


@pytest.fixture
def listener(jack_server):
    """A JACK MIDI input client that plays the synth: opens ports on request."""
    midi_in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=uniq("rolypoly-test-in"))
    yield midi_in
    midi_in.close_port()
    midi_in.delete()  # rtmidi objects are never collected


# --- MIDI ---------------------------------------------------------------------------------------

def test_midi_virtual_port_plays_gm_drums_on_channel_10(listener):
    before = set(listener.get_ports())
    out = MidiOut(api="jack", client_name=uniq("rolypoly"), gate_s=0.05)
    try:
        assert out.api == "jack"
        new = sorted(set(listener.get_ports()) - before)
        assert new == [f"{uniq('rolypoly')}:rolypoly"]  # a virtual port named rolypoly
        listener.open_port(listener.get_ports().index(new[0]), "in")
        # the route is a real JACK connection
        assert new[0] in jack.connections()[f"{uniq('rolypoly-test-in')}:in"]
        sync(out, listener)
        sent = out.sent

        t0 = time.monotonic()
        assert out.hit([KICK, SNARE, CLOSED_HAT], [100, 64, 0], now=t0) == 2  # velocity 0: no hit
        assert out.release_due(t0 + 0.01) == 0  # gate still open
        time.sleep(0.05)
        assert out.release_due() == 2
        msgs = receive(listener, 4)
    finally:
        out.close()

    assert [m for m, _ in msgs] == [
        [0x99, OUTPUT_PITCHES[KICK], 100], [0x99, OUTPUT_PITCHES[SNARE], 64],
        [0x89, OUTPUT_PITCHES[KICK], 0], [0x89, OUTPUT_PITCHES[SNARE], 0]]
    deltas = [d for _, d in msgs]
    assert deltas[1] < 0.02  # sent together, they arrive together (same cycle or the next)
    # the 50 ms gate, as JACK stamped it: a period of jitter, more on a swamped machine
    assert 0.025 < deltas[2] < 0.5
    assert deltas[3] < 0.02
    assert out.error is None and out.failures == 0
    assert out.sent - sent == 5  # and All Notes Off at close


def test_midi_retrigger_clipping_and_all_notes_off(listener):
    out = MidiOut(api="jack", port_name="drums", client_name=uniq("rolypoly-t2"), gate_s=10.0)
    try:
        port = next(p for p in listener.get_ports() if p.endswith(":drums"))
        listener.open_port(listener.get_ports().index(port))
        sync(out, listener)
        out.hit([SNARE], [200])
        out.hit([SNARE], [0.4])  # rounds to 0: not a hit, the note keeps sounding
        out.hit([SNARE], [30.4])  # still sounding: ended, then struck again
        out.all_notes_off()
        msgs = [m for m, _ in receive(listener, 5)]
    finally:
        out.close()
    s = OUTPUT_PITCHES[SNARE]
    assert msgs == [[0x99, s, 127], [0x89, s, 0], [0x99, s, 30], [0x89, s, 0], [0xB9, 123, 0]], out


def test_midi_existing_port_that_vanishes_mid_take(jack_server):
    synth = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=uniq("rolypoly-test-synth"))
    synth.open_virtual_port("midi_in")
    out = MidiOut(api="jack", existing=uniq("test-synth"), client_name=uniq("rolypoly-t3"),
                  check_interval_s=0.0)
    try:
        assert out.target == f"{uniq('rolypoly-test-synth')}:midi_in"
        sync(out, synth)
        assert out.hit([KICK], [90]) == 1
        assert [m for m, _ in receive(synth, 1)] == [[0x99, OUTPUT_PITCHES[KICK], 90]]

        synth.close_port()  # the synth quits
        synth.delete()
        for _ in range(5):
            out.hit([KICK], [90])  # must not raise
        assert out.broken
        assert "disappeared" in out.error and "\n" not in out.error
        assert out.failures >= 5
    finally:
        out.close()  # must not raise either


# Run in a child process: once a JACK server went away, libjack frees every client
# of the process at its next client open, so the session's own clients would go too.
DYING_SERVER = r"""
import json, time
from rolypoly.realtime import jack
from rolypoly.realtime.midi_out import MidiOut
server = jack.JackServer.private("rolypoly-doomed", portaudio=False)  # see jack.JackServer.stop
# named after the server: unique among running servers, and the same each run, so
# the semaphores jackd leaves in /dev/shm for clients it loses do not pile up
out = MidiOut(api="jack", client_name=f"rolypoly-on-{server.name}")
first = out.hit([0], [80])
server.proc.terminate()  # the server goes away under a playing MidiOut
server.proc.wait(5)
t = time.monotonic()
for _ in range(3000):  # far more than rtmidi's 16 KiB JACK queue holds
    out.hit([0, 1], [80, 80])
hits_s = time.monotonic() - t
out.close()
server.stop()
print(json.dumps(dict(first=first, error=out.error, failures=out.failures, hits_s=hits_s)))
"""


def test_midi_survives_jack_server_dying(jack_server):
    """rtmidi's JACK output blocks forever once its queue is full and no server drains it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        res = subprocess.run([sys.executable, "-c", DYING_SERVER],
                             capture_output=True, text=True, timeout=30, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("MidiOut.hit blocked after the JACK server died")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["first"] == 1
    assert "JACK server" in report["error"] and "\n" not in report["error"]
    assert report["failures"] > 5000
    assert report["hits_s"] < 0.5  # nothing waits for the dead server


def test_midi_missing_port_lists_ports(jack_server):
    synths = [rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=uniq(f"rolypoly-synth{i}")) for i in (1, 2)]
    try:
        for synth in synths:
            synth.open_virtual_port("in")
        with pytest.raises(DeviceError, match="not found on jack; available: .*rolypoly-synth1") as err:
            MidiOut(api="jack", existing="no-such-synth", client_name=uniq("rolypoly-t4"))
        assert "\n" not in str(err.value)
        with pytest.raises(DeviceError, match="ambiguous on jack; matches: .*synth1.*synth2"):
            MidiOut(api="jack", existing="synth", client_name=uniq("rolypoly-t4"))
    finally:
        for synth in synths:
            synth.delete()
    with pytest.raises(DeviceError, match="unknown MIDI API"):
        MidiOut(api="coreaudio")
    reason = api_status("alsa")
    if reason is not None:  # e.g. no /dev/snd/seq in a container
        with pytest.raises(DeviceError, match="alsa"):
            MidiOut(api="alsa")


# --- OSC ----------------------------------------------------------------------------------------

@pytest.fixture
def osc_server():
    received = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    server.timeout = 2.0
    yield server, received
    server.server_close()


def test_osc_messages_arrive(osc_server):
    server, received = osc_server
    osc = OscOut("127.0.0.1", server.server_address[1])
    assert osc.hit(17, 612.125, 612.1375, np.array([[0.5, -0.25]], dtype=np.float32))
    assert osc.onset(612.14, 612.15, [0.75, 2.0])
    assert osc.state(bpm=np.float64(96.0), bar=np.int64(3), take="warmup", midi_ok=False)
    for _ in range(3):
        server.handle_request()
    osc.close()

    assert received == [
        ("/rolypoly/hit", (17, 612.125, 612.1375, 0.5, -0.25)),
        ("/rolypoly/onset", (612.14, 612.15, 0.75, 2.0)),
        ("/rolypoly/state", ("bpm", 96.0, "bar", 3, "take", "warmup", "midi_ok", False)),
    ]
    assert (osc.sent, osc.failures, osc.error) == (3, 0, None)


def test_osc_never_raises(osc_server):
    server, _ = osc_server
    osc = OscOut("localhost", server.server_address[1])
    assert osc.address == "127.0.0.1"  # IPv4 first, where OSC receivers listen
    osc.close()
    assert osc.hit(0, 0.0, 0.0) is False and osc.state(x=1) is False
    assert osc.failures == 2 and "closed" in osc.error
    assert OscOut("127.0.0.1", 9).state(nobody="listens")  # UDP: no error without a receiver
    with pytest.raises(DeviceError, match="cannot be resolved"):
        OscOut("no-such-host.invalid", 9000)


# --- audio through JACK -------------------------------------------------------------------------

def test_jack_audio_reaches_an_input_stream(jack_server):
    sd = pytest.importorskip("sounddevice")
    device = resolve_input_device("system")
    rate, every = 48000, 4800  # a click each 100 ms
    heard, played, armed = [], [0], threading.Event()

    def record(indata, frames, t, status):
        heard.append(indata[:, 0].copy())

    def click(outdata, frames, t, status):
        n = played[0] + np.arange(frames)
        outdata[:, 0] = np.where((n % every == 0) & armed.is_set(), 0.8, 0.0)
        played[0] += frames

    client = jack.portaudio_client_name()
    with sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32", callback=record):
        (inp,) = jack.ports(f"{client}:in_")
        with sd.OutputStream(device=device, channels=1, samplerate=rate, dtype="float32", callback=click):
            (outp,) = jack.ports(f"{client}:out_")
            # PortAudio wires itself to the "hardware"; reroute (silently, on a real server too)
            assert inp in jack.connections()["system:capture_1"]
            jack.disconnect("system:capture_1", inp)
            jack.disconnect(outp, "system:playback_1")
            jack.connect(outp, inp)
            jack.connect(outp, inp)  # twice is fine
            armed.set()
            # count frames, not seconds: an overloaded dummy server runs slow
            start, deadline = len(heard), time.monotonic() + 10
            while sum(map(len, heard[start:])) < 5 * every and time.monotonic() < deadline:
                time.sleep(0.05)
    audio = np.concatenate(heard)
    peaks = np.flatnonzero(audio > 0.5)
    assert len(peaks) >= 3, f"no clicks arrived ({len(audio)} frames, max {audio.max():.3f})"
    assert set(np.diff(peaks)) == {every}  # sample-exact through the JACK graph
    assert np.allclose(audio[peaks], 0.8)


# --- devices ------------------------------------------------------------------------------------

def test_devices_name_jack(jack_server):
    out = MidiOut(api="jack", port_name="listed", client_name=uniq("rolypoly-t5"))
    try:
        d = list_devices()
    finally:
        out.close()
    assert any("JACK" in h for h in d["hostapis"])
    system = [a for a in d["audio"] if a["name"] == "system"]
    assert system and system[0]["hostapi"] == "JACK Audio Connection Kit"
    assert system[0]["inputs"] >= 1 and system[0]["samplerate"] == jack_server.rate
    assert d["midi"]["jack"]["error"] is None
    assert f"{uniq('rolypoly-t5')}:listed" in d["midi"]["jack"]["inputs"]
    text = format_devices(d)
    assert "JACK Audio Connection Kit" in text and f"{uniq('rolypoly-t5')}:listed" in text


def test_resolve_input_device(jack_server):
    index = resolve_input_device("system")
    assert resolve_input_device(index) == index == resolve_input_device(str(index))
    assert resolve_input_device("SYST") == index
    with pytest.raises(DeviceError, match=r"not found; input devices: .*system") as err:
        resolve_input_device("no-such-microphone")
    assert "\n" not in str(err.value)
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_input_device(999)


def test_devices_without_portaudio_say_what_to_install():
    # A fresh interpreter whose library lookup cannot find libportaudio.
    code = ("import ctypes.util; find = ctypes.util.find_library\n"
            "ctypes.util.find_library = lambda n: None if 'portaudio' in n else find(n)\n"
            "from rolypoly.realtime.devices import list_devices\n"
            "from rolypoly.errors import DeviceError\n"
            "try:\n    list_devices()\nexcept DeviceError as e:\n    print(e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=root)
    assert "install the Debian package libportaudio2" in res.stdout, res.stderr[-2000:]


def test_format_devices_reports_unusable_midi():
    text = format_devices({"portaudio": "PortAudio V19", "hostapis": [], "audio": [], "midi": {
        "alsa": {"outputs": [], "inputs": [], "error": "no ALSA sequencer (/dev/snd/seq missing)"},
        "jack": {"outputs": ["synth:in"], "inputs": [], "error": None}}})
    assert "MIDI alsa: no ALSA sequencer" in text
    assert "send to:     synth:in" in text and "listen to:   none" in text


#: No JACK server for a subprocess of the test run (the session's test server is not the default one).
NO_JACK = dict(os.environ, JACK_DEFAULT_SERVER="rolypoly-no-such-server", JACK_NO_START_SERVER="1")


@pytest.fixture(scope="module")
def bare_machine(tmp_path_factory):
    """A 2-second loop and a silent partner, on a machine with no JACK, no sound card, no ALSA sequencer.

    Skips where this machine has an audio device or an ALSA sequencer (the case cannot happen there).
    """
    from rolypoly.audio_io import write_wav
    from rolypoly.lab.bench_output import bench_score
    from rolypoly.score import write_midi

    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; print(len(sd.query_devices()))"],
                           capture_output=True, text=True, env=NO_JACK)
    if probe.returncode != 0 or probe.stdout.strip() != "0":
        pytest.skip("this machine has audio devices (or no PortAudio): the bare-machine case cannot happen here")
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer: MIDI would play")
    folder = tmp_path_factory.mktemp("bare")
    write_midi(bench_score(2.0), folder / "loop.mid")
    write_wav(folder / "partner.wav", np.zeros(48000, np.float32), 48000)
    return folder


def play_on_bare_machine(folder, *options, env=NO_JACK) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rolypoly.cli", "play", str(folder / "loop.mid"), "--quiet",
                           "--session", str(folder / "s"), *options], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("options, says", [
    # nothing can sound: start JACK, or --midi off
    (["--partner-file", "partner.wav"],
     r"^rolypoly: nothing here can sound the drums \(no JACK server, no audio output device, no MIDI output "
     r"available: .*\): start JACK and run again \(jackd -d alsa -r 48000 -p 64 &; .*jackd -d dummy -r 48000 "
     r"-p 64 &\), or add --midi off to play the take and hear the drums afterwards, in mix.wav$"),
    (["--partner-file", "partner.wav", "--drums", "midi"], r"^rolypoly: nothing here can sound the drums .*--midi off"),
    # a live partner with no input: start JACK, or play with a recording
    ([], r"^rolypoly: no audio input to hear the partner on \(no JACK server, no input device\): start JACK "
         r"and run again .*, or play with a recording: --partner-file FILE$"),
])
def test_play_on_a_machine_with_nothing_says_what_to_do_in_one_line(bare_machine, options, says):
    """No JACK server and no sound card: one line, exit status 2, before anything slow is made."""
    import re

    options = [str(bare_machine / o) if o.endswith(".wav") else o for o in options]
    res = play_on_bare_machine(bare_machine, *options, env=dict(NO_JACK, PYTHONPROFILEIMPORTTIME="1"))
    assert res.returncode == 2, res.stderr
    imports = [ln.rsplit("|", 1)[-1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]
    assert len(lines) == 1, lines
    assert re.match(says, lines[0]), lines[0]
    assert "torch" not in imports    # said at once: before the agent (seconds of imports) is loaded


def test_play_with_midi_off_on_a_machine_with_nothing_plays_the_take(bare_machine):
    """What the one line offers works: --midi off plays the take, and says the drums are in mix.wav only."""
    res = play_on_bare_machine(bare_machine, "--partner-file", str(bare_machine / "partner.wav"), "--midi", "off")
    assert res.returncode == 0, res.stderr
    assert "the drums sound only afterwards, in mix.wav" in res.stderr
    assert "take written to" in res.stdout and (bare_machine / "s" / "takes" / "000" / "mix.wav").is_file()