"""Drums out: hits placed on their frames, fixed voices, MIDI events; the C core against the Python player.

The C real-time core (realtime/rtcore.c) is run here without JACK: its JACK
functions are stand-ins (ctypes callbacks) that hand it numpy buffers and a
frame clock of our choosing, so every cycle's output can be compared with
the Python :class:`DrumPlayer` and with the offline mix.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from rolypoly.drum_map import N_CLASSES, OUTPUT_PITCHES
from rolypoly.errors import DeviceError
from rolypoly.kit import synth_kit
from rolypoly.realtime.drum_out import HIT, NOTE_OFF, NOTE_ON, DrumPlayer, HitRing
from rolypoly.synth import render_hits

SR, N = 48000, 64


@pytest.fixture(scope="module")
def kit():
    return synth_kit(SR)


def random_hits(seconds: float, seed: int = 0, per_s: float = 12.0):
    """(time, class, velocity) in time order, rows of simultaneous classes."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0.01, seconds - 0.05, int(per_s * seconds)))
    out = []
    for t in times:
        for c in rng.choice(N_CLASSES, size=rng.integers(1, 3), replace=False):
            out.append((float(t), int(c), int(rng.integers(1, 128))))
    return out


def play_python(player, blocks: int, block_time0: float = 0.0):
    out = []
    for k in range(blocks):
        buf = np.zeros(N, np.float32)
        player.render(buf, block_time0 + k * N / SR, 1 / SR)
        out.append(buf)
    return np.concatenate(out)


def offline(kit, hits, length, pitches=None):
    """The kit's offline mix (mix.wav's): a closed hat chokes an open one there too."""
    t, c, v = (np.array(x) for x in zip(*hits))
    return kit.render(t, c, v, np.full(len(t), -1) if pitches is None else pitches, length)


def test_hits_start_on_their_own_frames(kit):
    hits = random_hits(3.0)
    player = DrumPlayer(kit, voices=64)  # enough voices: nothing is stolen
    for t, c, v in hits:
        player.schedule([c], [v], t)
    out = play_python(player, 3 * SR // N)
    # The offline mix puts each one-shot on round(t * SR): the live output must too, block or not.
    ref = offline(kit, hits, len(out))
    np.testing.assert_allclose(out, ref, atol=2e-6)
    assert player.stats()["late"] == 0 and player.stats()["stolen"] == 0


def test_the_oldest_voice_is_stolen_at_the_block_start(kit):
    player = DrumPlayer(kit, voices=2)
    for k, t in enumerate((0.0, 0.01, 0.02)):
        player.schedule([k], [100], t)
    out = play_python(player, 30)
    third = int(round(0.02 * SR))
    block = third - third % N
    a, b, c = (kit.sample(k, 100) for k in range(3))
    ref = np.zeros(len(out))
    ref[:block] += a[:block]                       # the first hit stops where the third one's block starts
    ref[480:480 + len(b)] += b[:len(out) - 480]
    ref[third:] += c[:len(out) - third]
    np.testing.assert_allclose(out, ref, atol=2e-6)
    assert player.voices.stolen == 1


def test_a_hit_handed_over_too_late_starts_at_once_and_is_counted(kit):
    player = DrumPlayer(kit)
    player.schedule([0], [100], 0.0)
    buf = np.zeros(N, np.float32)
    player.render(buf, 0.004, 1 / SR)              # the block starts 4 ms after the hit's time
    np.testing.assert_allclose(buf, kit.sample(0, 100)[:N], atol=1e-7)
    assert player.stats()["late"] == 1 and player.stats()["late_max_ms"] == pytest.approx(4.0, abs=0.02)


def test_midi_events_on_their_frames(kit):
    player = DrumPlayer(kit, audio=False, midi=True, gate_s=0.01, midi_latency_s=0.002)
    player.schedule([0, 2], [100, 70], 0.012)      # with the synth's 2 ms: frame 480 = block 7, offset 32
    player.schedule([2], [90], 0.020)              # hat again before its note-off: ended first
    events = []
    for k in range(40):
        for off, status, pitch, vel in player.midi_events(k * N / SR, 1 / SR, N):
            events.append((k * N + int(off), int(status), int(pitch), int(vel)))
    kick, hat = OUTPUT_PITCHES[0], OUTPUT_PITCHES[2]
    assert events == [(480, NOTE_ON, kick, 100), (480, NOTE_ON, hat, 70),
                      (864, NOTE_OFF, hat, 0), (864, NOTE_ON, hat, 90),
                      (960, NOTE_OFF, kick, 0), (1344, NOTE_OFF, hat, 0)]


def test_a_full_ring_refuses_hits():
    ring = HitRing(2)
    assert ring.push(0.1, 0, 100) and ring.push(0.2, 0, 100)
    assert not ring.push(0.3, 0, 100) and ring.dropped == 1


# --- the C core, run without JACK ---------------------------------------------------------------

GET_BUFFER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
CYCLE_TIMES = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32),
                               ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                               ctypes.POINTER(ctypes.c_float))
MIDI_CLEAR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
MIDI_WRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_ubyte),
                              ctypes.c_size_t)


class FakeJack:
    """The C core with stand-ins for JACK: ports are numpy buffers, the frame clock ours.

    Port "addresses" 1, 2: audio out; 3: MIDI out; 4: clock out; 5: audio in.
    """

    def __init__(self, kit, voices=16, midi=False, clock=False, listen=False, rate=SR):
        from rolypoly.realtime import rtcore

        try:
            self.core = rtcore.load()
        except DeviceError as exc:
            pytest.skip(f"real-time core not available: {exc}")
        self.frame, self.rate = 0, rate
        self.audio = {1: np.zeros(N, np.float32), 2: np.zeros(N, np.float32), 5: np.zeros(N, np.float32)}
        self.midi: list[tuple[int, int, tuple]] = []
        s = self.s = rtcore.RtState()
        self.keep = []

        def arr(a):
            a = np.ascontiguousarray(a)
            self.keep.append(a)
            return a.ctypes.data

        def cycle_times(client, frames, usecs, next_usecs, period):
            frames[0] = self.frame
            usecs[0] = round(self.frame * 1e6 / rate)
            next_usecs[0] = round((self.frame + N) * 1e6 / rate)
            return 0

        def midi_write(buffer, time, data, size):
            self.midi.append((int(buffer), self.frame + int(time), tuple(data[i] for i in range(size))))
            return 0

        self._fns = [GET_BUFFER(lambda port, n: self.audio[port].ctypes.data if port in self.audio else port),
                     CYCLE_TIMES(cycle_times), MIDI_CLEAR(lambda b: None), MIDI_WRITE(midi_write)]
        addr = [ctypes.cast(f, ctypes.c_void_p).value for f in self._fns]
        s.get_buffer, s.cycle_times, s.midi_clear, s.midi_write = addr
        s.out_port[0], s.out_port[1] = 1, 2
        s.midi_port, s.clock_port, s.in_port = (3 if midi else None), (4 if clock else None), (5 if listen else None)
        s.clock_raw, s.rate = 0, rate
        rtcore.wire_kit(s, kit, lambda name, a: arr(a), voices)
        self.hits = np.zeros(1024, HIT)
        s.hits, s.hit_capacity, s.audio_on, s.midi_on = arr(self.hits), 1024, 1, int(midi)
        s.gate_s = 0.05
        for c in range(N_CLASSES):
            s.off_at[c] = -1.0
        s.ticks = arr(np.zeros(1))
        s.in_ring, s.drum_ring, s.ring_frames = arr(np.zeros(SR, np.float32)), arr(np.zeros(SR, np.float32)), SR
        s.cycle_ring, s.cycle_capacity = arr(np.zeros((SR // N + 8, 5))), SR // N + 8
        s.cost_ns, s.sounding, s.cost_capacity = arr(np.zeros(4096, np.int64)), arr(np.zeros(4096, np.int16)), 4096
        s.cycle_frames = arr(np.zeros(4096, np.int64))
        s.origin, s.have_origin = 0.0, 1   # engine time = frames / rate here

    def schedule(self, t, c, v, note=-1):
        w = self.s.hits_written
        self.hits[w % len(self.hits)] = (t, c, v, note)
        self.s.hits_written = w + 1

    def run(self, blocks):
        out = []
        for _ in range(blocks):
            self.core.rt_process(N, ctypes.addressof(self.s))
            assert np.array_equal(self.audio[1], self.audio[2])
            out.append(self.audio[1].copy())
            self.frame += N
        return np.concatenate(out)


def test_c_core_plays_what_the_python_player_plays(kit):
    hits = random_hits(4.0, seed=3, per_s=20.0)
    fake, player = FakeJack(kit, voices=16), DrumPlayer(kit, voices=16)
    for t, c, v in hits:
        fake.schedule(t, c, v)
        player.schedule([c], [v], t)
    c_out = fake.run(4 * SR // N)
    py_out = play_python(player, 4 * SR // N)
    # Same voices, same stealing, same placement; only the order of a float sum differs.
    np.testing.assert_allclose(c_out, py_out, atol=1e-6)
    assert fake.s.stolen == player.voices.stolen > 0 and fake.s.played == len(hits) and fake.s.late == 0


def test_c_core_midi_matches_the_python_player(kit):
    hits = random_hits(2.0, seed=4)
    fake = FakeJack(kit, midi=True)
    player = DrumPlayer(kit, midi=True, audio=False)
    for t, c, v in hits:
        fake.schedule(t, c, v)
        player.schedule([c], [v], t)
    fake.run(2 * SR // N)
    c_events = [(frame, data) for port, frame, data in fake.midi if port == 3]
    py_events = []
    for k in range(2 * SR // N):
        for off, status, pitch, vel in player.midi_events(k * N / SR, 1 / SR, N):
            py_events.append((k * N + int(off), (int(status), int(pitch), int(vel))))
    assert c_events == py_events and len(c_events) >= 2 * len(hits) - N_CLASSES


def test_the_players_own_notes_leave_as_midi_in_python_and_in_the_c_core(kit):
    # A pedal hi-hat (44) and a second crash (57) are classes 2 and 7 for the kit, but MIDI sends
    # the player's notes, on the player's channel; a note-off ends the note that was sent.
    from rolypoly.drum_map import class_of_pitch
    from rolypoly.realtime.drum_out import midi_note

    played = [(0.010, 44, 9, 80), (0.030, 57, 9, 100), (0.050, 44, 9, 60), (0.070, 36, 9, 110)]
    fake = FakeJack(kit, midi=True)
    player = DrumPlayer(kit, midi=True, audio=False, gate_s=0.005)
    fake.s.gate_s = 0.005
    for t, pitch, ch, v in played:
        c = class_of_pitch(pitch)
        fake.schedule(t, c, v, midi_note(ch, pitch))
        player.schedule([c], [v], t, [midi_note(ch, pitch)])
    fake.run(80)
    c_events = [data for port, frame, data in fake.midi if port == 3]
    py_events = []
    for k in range(80):
        py_events += [(int(s_), int(p), int(v)) for _, s_, p, v in player.midi_events(k * N / SR, 1 / SR, N)]
    assert [(s_, p, v) for s_, p, v in py_events if s_ == NOTE_ON and v] == [(NOTE_ON, p, v) for _, p, _, v in played]
    assert sorted(p for s_, p, _ in py_events if s_ == NOTE_OFF) == sorted(p for _, p, _, _ in played)
    assert [tuple(d) for d in c_events] == py_events
    # Without notes (a score made in code) the class's General MIDI note is sent.
    bare = DrumPlayer(kit, midi=True, audio=False)
    bare.schedule([2], [90], 0.001)
    assert [int(x) for x in bare.midi_events(0.0, 1 / SR, N)[0][1:]] == [NOTE_ON, OUTPUT_PITCHES[2], 90]


def test_c_core_midi_clock(kit):
    from rolypoly.realtime.midi_clock import tick_times
    from rolypoly.score import score_from_grid

    hits = np.zeros((24, N_CLASSES), bool)
    hits[0, 0] = True
    score = score_from_grid(hits, bpm=150)          # one 4/4 bar: 96 ticks, 16.7 ms apart
    fake = FakeJack(kit, clock=True)
    ticks = tick_times(score, 0.1)
    fake.keep.append(ticks)
    s = fake.s
    s.ticks, s.tick_count, s.clock_start_at = ticks.ctypes.data, len(ticks), 0.1 - 0.5 * (ticks[1] - ticks[0])
    s.clock_ready = 1
    fake.run(int(2.0 * SR / N))
    s.clock_stop = 1
    fake.run(2)
    events = [(frame, data) for port, frame, data in fake.midi if port == 4]
    assert events[0] == (round((0.1 - 1 / 150 * 60 / 48) * SR), (0xF2, 0, 0))  # song position 0 ...
    assert events[1][1] == (0xFA,)                                              # ... then Start
    tick_frames = [frame for frame, data in events if data == (0xF8,)]
    assert tick_frames == [round(t * SR) for t in ticks]                          # every tick on its frame
    assert events[-1][1] == (0xFC,)                                              # Stop when the take ends


def test_c_core_keeps_the_input_and_the_drums_side_by_side(kit):
    fake = FakeJack(kit, listen=True)
    fake.audio[5][:] = 0.25
    fake.schedule(0.001, 0, 100)
    fake.run(4)
    s = fake.s
    assert s.ring_written == 4 * N and s.cycles_written == 4
    drums = np.frombuffer((ctypes.c_float * (4 * N)).from_address(s.drum_ring), np.float32)
    heard = np.frombuffer((ctypes.c_float * (4 * N)).from_address(s.in_ring), np.float32)
    np.testing.assert_allclose(drums[48:48 + 100], kit.sample(0, 100)[:100], atol=1e-7)
    assert np.all(heard == 0.25)
    cycles = np.frombuffer((ctypes.c_double * 20).from_address(s.cycle_ring)).reshape(4, 5)
    np.testing.assert_allclose(cycles[:, 0], [0, 64, 128, 192])               # ring index of each cycle
    np.testing.assert_allclose(cycles[:, 1], np.arange(4) * N / SR, atol=1e-6)  # when it was played


def test_c_core_places_drums_ahead_of_the_output_latency_and_stamps_input_before_the_capture_latency(kit):
    # Calibrated: frame 0 of a cycle sounds JACK's playback latency (2 periods here) plus 1 ms later than the
    # cycle's time, so a hit due at 5 ms starts that much earlier in the output ...
    fake = FakeJack(kit, listen=True)
    s = fake.s
    s.playback_latency, s.output_latency_s = 2 * N, 0.001
    s.capture_latency, s.input_latency_s = N, 0.0005
    fake.schedule(0.005, 0, 100)
    out = fake.run(8)
    assert int(np.flatnonzero(out)[0]) == round((0.005 - 2 * N / SR - 0.001) * SR)   # frame 64, not 304
    # ... and what the input hears was played one capture latency plus 0.5 ms before its cycle's time.
    cycles = np.frombuffer((ctypes.c_double * 40).from_address(s.cycle_ring)).reshape(8, 5)
    np.testing.assert_allclose(cycles[:, 1], np.arange(8) * N / SR - N / SR - 0.0005, atol=1e-6)


def test_portaudio_block_places_drums_ahead_of_the_output_latency(kit):
    from rolypoly.realtime.drum_out import FrameClock
    from rolypoly.realtime.sources import _play_block

    # A sound card says its block sounds 2 ms after the callback (DAC time); calibration adds 1 ms.
    player, clock = DrumPlayer(kit), FrameClock(SR)
    player.schedule([0], [100], at=0.005)
    mono, out = np.zeros(N, np.float32), []
    for k in range(8):
        block = np.zeros((N, 2), np.float32)
        now = k * N / SR
        mono = _play_block(player, clock, mono, block, N, 10.002 + now, 10.0 + now, now, 0.0, 0.001)
        assert np.array_equal(block[:, 0], block[:, 1])
        out.append(block[:, 0])
    assert int(np.flatnonzero(np.concatenate(out))[0]) == round((0.005 - 0.002 - 0.001) * SR)   # frame 96


def test_c_core_and_python_player_sound_each_note_and_choke_the_open_hihat(kit):
    # A kit with sounds of their own for the pedal hi-hat, the ride bell and the second crash.
    from rolypoly.drum_map import class_of_pitch
    from rolypoly.kit import SampleKit
    from rolypoly.realtime.drum_out import midi_note

    rng = np.random.default_rng(5)
    layers = [[(v, kit.layer(c, k)) for k, v in enumerate(kit.velocities[c])] for c in range(N_CLASSES)]
    own = {p: [(127, (rng.standard_normal(n) * np.exp(-np.arange(n) / 3000.0)).astype(np.float32) * 0.3)]
           for p, n in ((44, 6000), (53, 40000), (57, 50000))}
    notes_kit = SampleKit(layers, SR, pitch_layers=own)
    pitches = [46, 44, 53, 51, 57, 49, 42, 46, 38, 46, 46, 36, 44]
    hits = [(0.01 + 0.037 * i, class_of_pitch(p), 70 + 4 * i, p) for i, p in enumerate(pitches)]
    fake, player = FakeJack(notes_kit, voices=16), DrumPlayer(notes_kit, voices=16)
    for t, c, v, p in hits:
        fake.schedule(t, c, v, midi_note(9, p))
        player.schedule([c], [v], t, [midi_note(9, p)])
    blocks = SR // N
    c_out, py_out = fake.run(blocks), play_python(player, blocks)
    t, c, v, p = (np.array(x) for x in zip(*hits))
    ref = notes_kit.render(t, c, v, p, blocks * N)
    np.testing.assert_allclose(py_out, ref, atol=2e-6)        # what mix.wav has is what was heard
    np.testing.assert_allclose(c_out, py_out, atol=1e-6)
    # By class alone, the pedal hi-hat would be the closed one, the bell the ride, crash 2 crash 1.
    by_class = notes_kit.render(t, c, v, np.full(len(t), -1), blocks * N)
    assert np.abs(by_class - ref).max() > 0.05
    # The open hi-hat rang until the pedal closed it: after its fade, the pedal's sample alone.
    a = round(hits[1][0] * SR) + notes_kit.choke_frames
    np.testing.assert_allclose(py_out[a:a + 1000], notes_kit.sample(2, hits[1][2], 44)[notes_kit.choke_frames:][:1000],
                               atol=1e-6)
