"""MIDI partners: note-ons from a second JACK client become the take's partner onsets.

A "keyboardist" (rolypoly's own JACK client with a MIDI output) writes
note-ons on planned frames; the engine
plays a take on a RealClock with a :class:`~rolypoly.realtime.midi_partner.MidiSource`
listening to it. The take's onsets must be the notes' own times (frame
accurate), one per chord, and its diffs the partner's offset from the hits.
Uses the session ``jack_server`` fixture; skips without jackd.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

jack_client = pytest.importorskip("jack", reason="JACK-Client not installed")

from rolypoly.errors import DeviceError  # noqa: E402
from rolypoly.lab.bench_output import bench_score  # noqa: E402
from rolypoly.realtime.clock import RealClock, SimClock  # noqa: E402
from rolypoly.realtime.engine import Engine, EngineSettings  # noqa: E402
from rolypoly.realtime.midi_partner import CombinedSource, MidiSource  # noqa: E402
from rolypoly.realtime.sources import FileSource  # noqa: E402

pytestmark = pytest.mark.jack

#: The keyboardist plays this late against every 8th note of the score (s).
LATE_S = 0.006


def uniq(name: str) -> str:
    return f"{name}-{os.getpid()}"


class Keyboardist:
    """A JACK client that plays note-ons at given engine times, each on its own frame.

    rolypoly's own JACK client with a MIDI output (frame-placed notes, as
    the drums go out); ``sent`` keeps each note's engine time, which its
    frame's time is to the nearest frame (+-10.4 us at 48 kHz).
    """

    def __init__(self, name: str):
        from rolypoly.realtime.jack_io import JackIO

        self.io = JackIO(midi=True, name=name)
        self.port = self.io.midi_port.name
        self.sent = []

    def play(self, clock, notes) -> None:
        """``notes``: (engine time, pitch, velocity), sorted; all handed over now."""
        self.io.begin(clock, clock.now())
        self.sent = []
        for k, (t, pitch, velocity) in enumerate(notes):
            # A class of its own per note of a chord (a class sounds one note at a time), channel 1.
            self.io.schedule([k % 3], [velocity], t, [pitch])
            self.sent.append((t, pitch, velocity, k))

    def close(self) -> None:
        self.io.close()


@pytest.fixture
def performer():
    """The shipped agent's architecture with random weights (ŷ stays within a millisecond)."""
    import torch

    from rolypoly.agents import Performer, make_agent

    torch.manual_seed(0)
    return Performer(make_agent("lstm"))


@pytest.fixture
def keyboardist(jack_server):
    player = Keyboardist(uniq("keyboardist"))
    yield player
    player.close()


def test_midi_partner_take_through_jack(jack_server, keyboardist, performer):
    score = bench_score(4.0, bpm=120)           # 4 bars of 2/4, 16th hats: 32 rows
    eighths = np.flatnonzero(score.step % 6 == 0)

    class Listening(MidiSource):
        def start(self, clock, t0):
            super().start(clock, t0)
            notes = []
            for k, row in enumerate(eighths):
                at = t0 + score.onset_s[row] + LATE_S
                notes.append((at, 48 + k % 12, 60 + k))
                if k % 4 == 0:                   # a chord: two more keys a few ms later, still one onset
                    notes += [(at + 0.004, 55, 50), (at + 0.009, 64, 50)]
            keyboardist.play(clock, sorted(notes))

    source = Listening(keyboardist.port, client_name=uniq("rolypoly-partner"))
    try:
        assert source.api == "jack" and source.source_port == keyboardist.port
        result = Engine(score, performer, source, RealClock(), settings=EngineSettings(lead_in_s=0.5)).run()
    finally:
        source.close()

    firsts = np.array([t for t, p, v, f in keyboardist.sent if v >= 60])    # not the chords' other keys
    frames = np.array([f for t, p, v, f in keyboardist.sent if v >= 60])
    heard = result.onsets + result.t0                       # back on the engine clock
    lost = len(firsts) - len(heard)
    # A non-realtime JACK server drops the MIDI of a client that misses its cycle (busy machine).
    assert lost == 0 or (0 < lost <= 2 and source.xruns > 0), f"{lost} notes lost, {source.xruns} xruns"
    assert source.notes >= len(heard)
    # Each onset is its note's own time (the frame it was written at), one per chord. Both clients
    # read the engine clock in the same cycle: a few microseconds apart, more when preempted.
    k = np.argmin(np.abs(firsts[None, :] - heard[:, None]), axis=1)
    err_us = np.abs(heard - firsts[k]) * 1e6
    if not (np.median(err_us) < 50 and np.all(err_us < 2000)) and source.xruns + lost > 0:
        pytest.skip(f"JACK ran late ({source.xruns} xruns, {lost} notes lost): on a busy machine a "
                    f"non-realtime JACK server's cycles say nothing about frame timing (errors {err_us.max():.0f} us)")
    assert np.median(err_us) < 50 and np.all(err_us < 2000), err_us
    assert len(set(frames[k])) == len(heard)                 # every onset a different note
    assert np.all(result.onsets_available >= result.onsets - 1e-9)
    # diff: the keyboardist is LATE_S behind every 8th-note hit (the hits' own jitter aside).
    diff_ms = result.diff[eighths] * score.bar_ms[eighths]
    found = np.isfinite(diff_ms)
    window = score.duration_ms[eighths] / 1000 / EngineSettings().window_factor
    near = np.abs(nearest_to(heard - result.t0, result.played[eighths]) - result.played[eighths]) < window
    np.testing.assert_array_equal(found, near)          # a diff wherever the partner played near the hit
    assert found.sum() >= len(eighths) - lost - 2        # ...which is nearly everywhere
    played = result.played[eighths][found]
    expected = (nearest_to(heard - result.t0, played) - played) * 1000
    np.testing.assert_allclose(diff_ms[found], expected, atol=1e-6)
    assert abs(np.median(diff_ms[found]) - LATE_S * 1000) < 3.0


def nearest_to(onsets: np.ndarray, at: np.ndarray) -> np.ndarray:
    return onsets[np.argmin(np.abs(onsets[None, :] - at[:, None]), axis=1)]


def test_missing_midi_port_is_one_line(jack_server, keyboardist):
    with pytest.raises(DeviceError) as info:
        MidiSource("no-such-keyboard", client_name=uniq("rolypoly-missing"))
    message = str(info.value)
    assert "no-such-keyboard" in message and "not found" in message and keyboardist.port in message
    assert "\n" not in message


def test_midi_source_refuses_a_simulated_clock(jack_server, keyboardist):
    source = MidiSource(keyboardist.port, client_name=uniq("rolypoly-sim"))
    try:
        with pytest.raises(DeviceError, match="real time"):
            source.start(SimClock(), 0.0)
    finally:
        source.close()


def test_audio_and_midi_partners_together(jack_server, keyboardist, tmp_path):
    from rolypoly.lab.partner_audio import clicks, write_wav

    path = tmp_path / "clicks.wav"
    write_wav(path, clicks([0.2, 0.6], sample_rate=48000), 48000)
    midi = MidiSource(keyboardist.port, client_name=uniq("rolypoly-both"))
    both = CombinedSource(FileSource(path), midi)
    clock = RealClock()
    try:
        t0 = clock.now() + 0.1
        both.start(clock, t0)
        keyboardist.play(clock, [(t0 + 0.4, 60, 100)])
        clock.sleep_until(t0 + 0.9)
        got = both.poll(clock.now())
        both.stop()
    finally:
        both.close()
    assert "clicks.wav" in both.name and "MIDI" in both.name
    times = got["time"] - t0
    np.testing.assert_allclose(np.sort(times), times)                              # in time order
    on_time = len(times) == 3 and np.allclose(times, [0.2, 0.4, 0.6], atol=0.002)
    if not on_time and midi.xruns > 0:
        # An xrun drops or delays the cycle's MIDI on its way (the other JACK tests allow it the same way).
        pytest.skip(f"JACK ran late ({midi.xruns} xruns) while the note played: onsets at {times.round(4)} s")
    np.testing.assert_allclose(times, [0.2, 0.4, 0.6], atol=0.002)
    assert len(both.recording()) > 0
