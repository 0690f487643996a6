"""Partner performances with real attacks, rendered from General MIDI soundfonts.

The onset detector has to hear real guitars, basses and pianos, whose
attacks are nothing like a Karplus-Strong string. A soundfont holds
recordings of real instruments, note by note; FluidSynth plays them from
MIDI. A performance written here as MIDI events and played through
FluidSynth gives audio with real attacks *and* onset times known by
construction:

* every note-on lands on a 64-frame block boundary of the synthesizer
  (FluidSynth applies events at block starts, so that is where it sounds);
* a recorded sample starts with a little silence or a slow rise before its
  attack, different for every instrument, key and velocity; the onset is
  where the note, played alone, first reaches :data:`ONSET_DB` below its
  early peak (measured once per note and cached, :class:`Soundfont.lead`);
* a *gesture* (a strummed chord, a rolled piano chord, two hands together)
  is one onset: the first of its notes to sound. Gestures are at least
  :data:`MIN_GAP_S` apart;
* slides and vibrato are pitch bends, and pedalling is CC 64: no onsets.

Styles (:data:`STYLES`) are what a partner plays: strummed chords (10-40 ms
from the first to the last string), finger-picking, single-note licks with
hammer-ons and slides, finger/pick/slap bass lines, legato and pedalled
piano from pp to ff, block chords and runs, electric-piano and organ
comping, sung lines. :func:`play_room` then puts the take in a room and
through a microphone or DI box: reverb, colour, noise, hum, level.

Soundfonts are Debian's (``fluid-soundfont-gm``, ``timgm6mb-soundfont``,
``musescore-general-soundfont-small``), found by :func:`find_soundfont`.

>>> sf = find_soundfont("timgm6mb")                          # doctest: +SKIP
>>> take = render_take("piano_legato", seed=1, soundfont=sf)  # doctest: +SKIP
>>> take.audio.shape, take.onsets[:3]                        # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.signal

__all__ = ["SOUNDFONTS", "STYLES", "FAMILIES", "ONSET_DB", "MIN_GAP_S", "Soundfont", "Performance",
           "RenderedTake", "SYNTHETIC", "find_soundfont", "perform", "render", "play_room", "room_tone",
           "render_take"]

#: Where Debian puts each soundfont (first one found wins).
SOUNDFONTS = {
    "fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"),
    "musescore": ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
                  "/usr/share/sounds/sf3/MuseScore_General.sf3",
                  "/usr/share/sounds/sf2/MuseScore_General.sf2"),
    "timgm6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2",),
}
#: A note's onset: where, played alone, it first reaches this far below its peak
#: over the first :data:`_PEAK_WINDOW_S` (dB). The visible start of the attack.
ONSET_DB = -25.0
_PEAK_WINDOW_S = 0.06
#: Gestures (each one onset) are at least this far apart: faster than any partner plays.
MIN_GAP_S = 0.06
#: Bumped whenever a change here changes the rendered audio (training caches are keyed by it).
RENDER_VERSION = 3
#: FluidSynth applies events at the start of its 64-frame blocks.
SYNTH_BLOCK = 64

#: General MIDI programs per instrument family.
FAMILIES = {
    "guitar": (24, 25, 26, 27, 28, 29),        # nylon, steel, jazz, clean, muted, overdriven
    "bass": (32, 33, 34, 35, 36, 37),          # acoustic, finger, pick, fretless, slap 1 and 2
    "piano": (0, 1, 2, 3),                     # grand, bright, electric grand, honky-tonk
    "keys": (4, 5, 6, 7, 11, 16, 17, 18),      # electric pianos, harpsichord, clavinet, vibes, organs
    "voice": (52, 53, 54),                     # choir aahs, voice oohs, synth voice
}


def find_soundfont(name: str) -> Path | None:
    """Path of a Debian soundfont by short name, or None where it is not installed.

    >>> find_soundfont("no-such-font") is None
    True
    """
    for candidate in SOUNDFONTS.get(name, ()):
        if os.path.exists(candidate):
            return Path(candidate)
    return None


# ---------------------------------------------------------------------------
# Performances: MIDI events with their gestures


@dataclass
class Performance:
    """One part as MIDI events (seconds) and the gestures that are its onsets.

    ``notes`` rows are (time, key, velocity 1..127, duration, gesture id);
    ``controls`` rows are (time, kind, value) with kind ``"pedal"`` (0/127)
    or ``"bend"`` (semitones; the bend range is :attr:`bend_range`).
    """

    program: int
    notes: list = field(default_factory=list)
    controls: list = field(default_factory=list)
    bend_range: int = 12
    _gestures: int = 0

    def gesture(self) -> int:
        self._gestures += 1
        return self._gestures - 1

    def note(self, t: float, key: int, velocity: float, duration: float, gesture: int) -> None:
        key = int(min(max(key, 21), 108))
        velocity = int(min(max(round(velocity), 1), 127))
        self.notes.append((float(t), key, velocity, max(float(duration), 0.02), gesture))

    def end(self) -> float:
        ends = [n[0] + n[3] for n in self.notes] + [c[0] for c in self.controls]
        return max(ends, default=0.0)


class _Clock:
    """Human timing on a metric grid: jittered, never closer than MIN_GAP_S to the last gesture."""

    def __init__(self, rng, bpm: float, start: float, jitter_ms: float):
        self.rng, self.beat, self.start, self.jitter = rng, 60.0 / bpm, start, jitter_ms / 1000.0
        self.last = -1.0

    def at(self, beats: float) -> float:
        t = self.start + beats * self.beat + self.rng.normal(0.0, self.jitter)
        t = max(t, self.last + MIN_GAP_S, 0.0)
        self.last = t
        return t


def _velocity(rng, dynamic: str | None = None) -> float:
    lo, hi = {"pp": (14, 40), "p": (30, 62), "mf": (55, 95), "f": (85, 127)}[
        dynamic or rng.choice(["pp", "p", "mf", "mf", "f"])]
    return rng.uniform(lo, hi)


# Open-position and barre voicings (low to high string), transposable.
_SHAPES = ((40, 47, 52, 56, 59, 64), (45, 52, 57, 61, 64), (50, 57, 62, 66), (43, 47, 50, 55, 59, 67),
           (40, 47, 52, 55, 59, 64), (45, 52, 57, 60, 64), (48, 52, 55, 60, 64), (41, 48, 53, 57, 60, 65))
_SCALE = (0, 2, 3, 5, 7, 9, 10)


def _guitar_strum(rng, p: Performance, seconds: float, clock: _Clock) -> None:
    beats, step = 0.0, rng.choice([0.5, 1.0, 0.5])
    shape = np.array(_SHAPES[rng.integers(len(_SHAPES))]) + rng.integers(0, 5)
    while True:
        t = clock.at(beats)
        if t > seconds:
            break
        if rng.random() < 0.15:
            shape = np.array(_SHAPES[rng.integers(len(_SHAPES))]) + rng.integers(0, 5)
        down = beats % 1.0 == 0.0 or rng.random() < 0.3
        strings = shape if down else shape[::-1][:rng.integers(3, len(shape) + 1)]
        spread = rng.uniform(0.010, 0.040)                  # first to last string
        gaps = rng.dirichlet(np.ones(len(strings) - 1)) * spread if len(strings) > 1 else []
        base = _velocity(rng) * (1.0 if down else 0.75)
        g = p.gesture()
        hold = step * clock.beat * (rng.uniform(0.3, 0.95) if rng.random() < 0.3 else rng.uniform(1.0, 2.5))
        at = t
        for i, key in enumerate(strings):
            p.note(at, key, base * rng.uniform(0.8, 1.1), hold - (at - t), g)
            if i < len(gaps):
                at += gaps[i]
        beats += step * (2 if rng.random() < 0.15 else 1)


def _guitar_fingerpick(rng, p: Performance, seconds: float, clock: _Clock) -> None:
    root = int(rng.integers(40, 48))
    beats, level = 0.0, _velocity(rng)
    while True:
        t = clock.at(beats)
        if t > seconds:
            break
        if beats % 2.0 == 0.0 and rng.random() < 0.4:
            root = int(rng.integers(40, 48))
        g = p.gesture()
        ring = clock.beat * rng.uniform(0.8, 3.0)
        on_beat = beats % 1.0 == 0.0
        if on_beat:                                          # thumb on the bass, sometimes a pinch
            p.note(t, root + (7 if beats % 2.0 else 0), level * rng.uniform(0.8, 1.1), ring, g)
            if rng.random() < 0.35:
                p.note(t + rng.uniform(0, 0.004), root + 12 + 4 * rng.integers(1, 4),
                       level * rng.uniform(0.6, 1.0), ring, g)
        else:
            p.note(t, root + 12 + int(rng.choice([3, 4, 7, 9, 12, 16])), level * rng.uniform(0.5, 1.0), ring, g)
        level = float(np.clip(level + rng.normal(0, 6), 20, 120))
        beats += rng.choice([0.5, 0.5, 0.25, 1.0 / 3.0])


def _steps(rng, clock: _Clock, seconds: float, steps, legato):
    """(time, step in beats, duration in s) of each note of a part, until ``seconds``."""
    beats = 0.0
    while True:
        t = clock.at(beats)
        if t > seconds:
            return
        step = float(rng.choice(steps))
        yield t, step, step * clock.beat * rng.uniform(*legato)
        beats += step


def _line(rng, p: Performance, seconds: float, clock: _Clock, low: int, high: int,
          steps=(0.5, 0.25, 0.5, 1.0), legato=(0.5, 1.1), hammer=0.15, slide=0.1, vibrato=0.1,
          ghost=0.0) -> None:
    """A single-note line: hammer-ons (new onset, softer), slides and vibrato (pitch bends, no onset)."""
    key, level = int(rng.integers(low, high)), _velocity(rng)
    for t, step, dur in _steps(rng, clock, seconds, steps, legato):
        g = p.gesture()
        vel = level * rng.uniform(0.75, 1.1)
        if rng.random() < ghost:
            vel = rng.uniform(12, 30)
        p.note(t, key, vel, dur, g)
        r = rng.random()
        if r < slide and dur > 0.12:                          # slide up or down into a new pitch
            target = int(np.clip(rng.integers(-5, 6), -p.bend_range, p.bend_range))
            t0 = t + dur * rng.uniform(0.3, 0.6)
            for k in range(1, 9):
                p.controls.append((t0 + k * 0.006, "bend", target * k / 8))
            p.controls.append((t + dur + 0.001, "bend", 0.0))
        elif r < slide + vibrato and dur > 0.2:                 # vibrato: wobble, no new note
            for k in range(int(dur / 0.02)):
                p.controls.append((t + 0.05 + k * 0.02, "bend", 0.3 * math.sin(k * 0.9)))
            p.controls.append((t + dur + 0.001, "bend", 0.0))
        elif r < slide + vibrato + hammer:                      # hammer-on / pull-off: legato, softer
            t2 = t + dur * rng.uniform(0.4, 0.7)
            if t2 - t >= MIN_GAP_S:
                clock.last = max(clock.last, t2)
                p.note(t2, key + int(rng.choice([-2, -1, 1, 2, 3])), vel * rng.uniform(0.4, 0.8),
                       dur * 0.6, p.gesture())
        key = int(np.clip(key + rng.choice([-5, -3, -2, -1, 1, 2, 3, 5, 7]), low, high))
        level = float(np.clip(level + rng.normal(0, 5), 20, 125))


def _guitar_lick(rng, p, seconds, clock):
    _line(rng, p, seconds, clock, 52, 80, steps=(0.25, 0.5, 0.5, 1.0 / 3.0, 1.0), hammer=0.2, slide=0.12,
          vibrato=0.12)


def _bass_line(rng, p, seconds, clock):
    _line(rng, p, seconds, clock, 28, 52, steps=(0.5, 0.5, 0.25, 1.0), legato=(0.4, 1.05), hammer=0.08,
          slide=0.08, vibrato=0.03, ghost=0.08)


def _voice_line(rng, p, seconds, clock):
    _line(rng, p, seconds, clock, 55, 76, steps=(1.0, 0.5, 2.0), legato=(0.9, 1.02), hammer=0.0,
          slide=0.15, vibrato=0.3)


def _piano(rng, p: Performance, seconds: float, clock: _Clock, pedal: bool, dynamic: str | None,
           steps=(0.5, 0.5, 1.0, 0.25), chord_p: float = 0.35, legato=(0.9, 1.6)) -> None:
    """Two hands: a melody, and left-hand bass notes or chords, together or apart."""
    beats, melody = 0.0, int(rng.integers(64, 80))
    level = _velocity(rng, dynamic)
    if pedal:
        p.controls.append((0.0, "pedal", 127))
    bar_end = 4.0
    for t, step, dur in _steps(rng, clock, seconds, steps, legato):
        g = p.gesture()
        vel = level * rng.uniform(0.8, 1.15)
        roll = rng.uniform(0.0, 0.02) if rng.random() < 0.3 else 0.003
        if rng.random() < chord_p:                           # a chord in both hands, maybe rolled
            root = int(rng.integers(36, 52))
            keys = [root, root + 7, root + 12 + int(rng.choice([3, 4])), melody]
            for i, key in enumerate(keys):
                p.note(t + i * roll / len(keys) * rng.uniform(0.5, 1.0), key, vel * rng.uniform(0.8, 1.0),
                       dur * rng.uniform(1.0, 2.0), g)
        else:
            p.note(t, melody, vel, dur, g)
            if rng.random() < 0.3:                           # left hand with it
                p.note(t + rng.uniform(0, 0.01), int(rng.integers(36, 55)), vel * 0.8, dur * 1.5, g)
        melody = int(np.clip(melody + rng.choice([-4, -2, -1, 1, 2, 3, 5]), 55, 96))
        if dynamic is None:
            level = float(np.clip(level + rng.normal(0, 7), 12, 127))   # crescendo, diminuendo
        beats += step
        if pedal and beats >= bar_end:                       # change pedal at the bar line
            pt = clock.start + bar_end * clock.beat
            p.controls.append((pt - 0.03, "pedal", 0))
            p.controls.append((pt + 0.05, "pedal", 127))
            bar_end += 4.0
    if pedal:
        p.controls.append((seconds + 0.5, "pedal", 0))


def _piano_legato(rng, p, seconds, clock):
    _piano(rng, p, seconds, clock, pedal=True, dynamic=rng.choice(["pp", "p", None]), chord_p=0.2,
           legato=(1.0, 1.8))


def _piano_chords(rng, p, seconds, clock):
    _piano(rng, p, seconds, clock, pedal=rng.random() < 0.5, dynamic=None, steps=(1.0, 0.5, 2.0),
           chord_p=0.8, legato=(0.5, 1.2))


def _piano_runs(rng, p, seconds, clock):
    _piano(rng, p, seconds, clock, pedal=rng.random() < 0.3, dynamic=None, steps=(0.25, 0.25, 1.0 / 3.0),
           chord_p=0.1, legato=(0.8, 1.3))


def _keys_comp(rng, p, seconds, clock):
    _piano(rng, p, seconds, clock, pedal=False, dynamic=None, steps=(0.5, 1.0, 0.25, 1.5), chord_p=0.7,
           legato=(0.3, 1.05))


#: style -> (family, player). Each player writes a :class:`Performance`.
STYLES = {
    "guitar_strum": ("guitar", _guitar_strum),
    "guitar_fingerpick": ("guitar", _guitar_fingerpick),
    "guitar_lick": ("guitar", _guitar_lick),
    "bass_line": ("bass", _bass_line),
    "piano_legato": ("piano", _piano_legato),
    "piano_chords": ("piano", _piano_chords),
    "piano_runs": ("piano", _piano_runs),
    "keys_comp": ("keys", _keys_comp),
    "voice_line": ("voice", _voice_line),
}


def perform(style: str, seed: int, seconds: float = 8.0, program: int | None = None) -> Performance:
    """Write one performance of ``style``: notes, pedal and bends, and its gestures.

    Examples
    --------
    >>> p = perform("guitar_strum", seed=3, seconds=4.0)
    >>> p.program in FAMILIES["guitar"], len({n[4] for n in p.notes}) > 3
    (True, True)
    """
    if style not in STYLES:
        raise ValueError(f"style {style!r}: choose one of {sorted(STYLES)}")
    family, player = STYLES[style]
    rng = np.random.default_rng(seed)
    if program is None:
        program = int(rng.choice(FAMILIES[family]))
    p = Performance(program=program)
    clock = _Clock(rng, bpm=rng.uniform(70, 160), start=rng.uniform(0.15, 0.6),
                   jitter_ms=rng.uniform(3, 15))
    player(rng, p, seconds, clock)
    return p


# ---------------------------------------------------------------------------
# FluidSynth


class Soundfont:
    """One soundfont loaded into FluidSynth, rendering float audio at ``sample_rate``.

    A second, silent synthesizer plays single notes to measure where their
    attacks start (:meth:`lead`).
    """

    def __init__(self, path, sample_rate: int = 48000):
        import fluidsynth

        self.path, self.sample_rate = Path(path), int(sample_rate)
        self._write = fluidsynth._fl.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._synths = []
        self.synth, self._sfid = self._new(fluidsynth)
        self._probe, self._probe_sfid = self._new(fluidsynth)
        self._probe_program = None

    def _new(self, fluidsynth):
        synth = fluidsynth.Synth(samplerate=float(self.sample_rate), gain=0.5)
        # No reverb or chorus of FluidSynth's own: they would carry state from take to take
        # (a room comes from play_room, seeded per take).
        synth.setting("synth.reverb.active", 0)
        synth.setting("synth.chorus.active", 0)
        synth.setting("synth.polyphony", 128)
        sfid = synth.sfload(str(self.path))
        if sfid < 0:
            raise RuntimeError(f"{self.path}: FluidSynth cannot load this soundfont")
        self._synths.append(synth)
        return synth, sfid

    def close(self) -> None:
        for synth in self._synths:
            synth.delete()
        self._synths = []

    def frames(self, synth, n: int) -> np.ndarray:
        """The next ``n`` frames of ``synth``, mono float64."""
        buf = np.zeros((n, 2), np.float32)
        if n:
            ptr = buf.ctypes.data
            self._write(synth.synth, n, ptr, 0, 2, ptr + 4, 1, 2)
        return buf.mean(axis=1, dtype=np.float64)

    @functools.lru_cache(maxsize=65536)
    def lead(self, program: int, key: int, velocity: int) -> int:
        """Frames from a note-on to where the note, alone, reaches :data:`ONSET_DB` below its early peak."""
        probe = self._probe
        if self._probe_program != program:
            probe.program_select(0, self._probe_sfid, 0, program)
            self._probe_program = program
        probe.noteon(0, key, velocity)
        x = np.abs(self.frames(probe, int(_PEAK_WINDOW_S * self.sample_rate)))
        probe.noteoff(0, key)
        probe.cc(0, 120, 0)                                  # all sound off: the next probe starts clean
        self.frames(probe, 4 * SYNTH_BLOCK)
        peak = x.max()
        if peak <= 0:
            return 0
        return int(np.argmax(x >= peak * 10.0 ** (ONSET_DB / 20.0)))


def render(performance: Performance, soundfont: Soundfont, tail_s: float = 1.0):
    """Play a performance through FluidSynth: mono float32 audio and the onset times (s).

    Every event is moved to the synthesizer block it takes effect in, so the
    audio and the onsets agree to the sample.
    """
    sr, synth = soundfont.sample_rate, soundfont.synth
    synth.system_reset()
    synth.program_select(0, soundfont._sfid, 0, performance.program)
    # Bend range (RPN 0) so slides can span several semitones.
    for cc, value in ((101, 0), (100, 0), (6, performance.bend_range), (38, 0), (101, 127), (100, 127)):
        synth.cc(0, cc, value)

    def frame(t):  # the block boundary at or after t
        return int(math.ceil(t * sr / SYNTH_BLOCK)) * SYNTH_BLOCK

    events = []          # (frame, order, kind, a, b): note-offs before note-ons at the same frame
    first = {}           # gesture -> first sounding frame
    for t, key, vel, dur, g in performance.notes:
        on = frame(t)
        events.append((on, 2, "on", key, vel))
        events.append((max(frame(t + dur), on + SYNTH_BLOCK), 0, "off", key, 0))
        sounds = on + soundfont.lead(performance.program, key, vel)
        first[g] = min(first.get(g, sounds), sounds)
    for t, kind, value in performance.controls:
        events.append((frame(max(t, 0.0)), 1, kind, value, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    end = frame(performance.end() + tail_s)
    chunks, at, sounding = [], 0, {}
    for f, _, kind, a, b in events:
        if f > at:
            chunks.append(soundfont.frames(synth, f - at))
            at = f
        if kind == "on":
            if sounding.get(a, 0) > 0:                       # the same key again: restrike
                synth.noteoff(0, a)
            synth.noteon(0, a, b)
            sounding[a] = sounding.get(a, 0) + 1
        elif kind == "off":
            if sounding.get(a, 0) > 0:
                sounding[a] -= 1
                if sounding[a] == 0:
                    synth.noteoff(0, a)
        elif kind == "pedal":
            synth.cc(0, 64, int(a))
        elif kind == "bend":
            synth.pitch_bend(0, int(np.clip(round(a / performance.bend_range * 8192), -8192, 8191)))
    chunks.append(soundfont.frames(synth, max(end - at, 0)))
    synth.cc(0, 120, 0)
    synth.cc(0, 64, 0)
    soundfont.frames(synth, 8 * SYNTH_BLOCK)                 # let the reset settle before the next take
    audio = np.concatenate(chunks).astype(np.float32)
    onsets = np.array(sorted(first.values()), dtype=np.float64) / sr
    return audio, onsets


# ---------------------------------------------------------------------------
# The room, the microphone, the DI box


def _biquad(kind: str, f0: float, sr: int, q: float = 0.707, gain_db: float = 0.0):
    """RBJ cookbook biquad (b, a)."""
    w = 2 * math.pi * min(f0, 0.45 * sr) / sr
    alpha, cw, amp = math.sin(w) / (2 * q), math.cos(w), 10 ** (gain_db / 40)
    if kind == "highpass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    else:  # peaking
        b = [1 + alpha * amp, -2 * cw, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cw, 1 - alpha / amp]
    return np.array(b) / a[0], np.array(a) / a[0]


def _pink(rng, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    pink = scipy.signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                                [1.0, -2.494956002, 2.017265875, -0.522189400], white)
    return pink / (np.sqrt(np.mean(pink ** 2)) + 1e-12)


def play_room(audio: np.ndarray, rng, sample_rate: int = 48000, amount: float = 1.0) -> np.ndarray:
    """The take as a microphone or DI box hears it: room, colour, noise, hum and level.

    None of it moves an onset: the room's reflections come after the direct
    sound, filters are causal and short. ``amount`` 0 leaves the audio
    clean (apart from the level).

    >>> x = np.zeros(48000, np.float32); x[1000] = 1.0
    >>> y = play_room(x, np.random.default_rng(0))
    >>> y.shape == x.shape and y.dtype == np.float32
    True
    """
    x = np.asarray(audio, dtype=np.float64)
    sr, n = sample_rate, len(audio)
    if rng.random() < 0.6 * amount:                          # a room: exponentially decaying noise tail
        rt60 = rng.uniform(0.15, 1.4)
        length = int(min(rt60, 1.0) * sr)
        t = np.arange(length) / sr
        tail = _pink(rng, length) * np.exp(-6.9 * t / rt60)
        tail[:int(rng.uniform(0.002, 0.02) * sr)] = 0.0      # reflections arrive after the direct sound
        # Direct-to-reverberant ratio: 15 dB for a close microphone, 0 dB across the room.
        drr_db = rng.uniform(0.0, 15.0)
        tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
        ir = np.zeros(length)
        ir[0] = 1.0
        ir += tail
        x = scipy.signal.fftconvolve(x, ir)[:n]
    if rng.random() < 0.7 * amount:                          # microphone or DI colour
        b, a = _biquad("highpass", rng.uniform(20, 150), sr)
        x = scipy.signal.lfilter(b, a, x)
        for _ in range(rng.integers(0, 3)):
            b, a = _biquad("peak", rng.uniform(100, 8000), sr, q=rng.uniform(0.5, 2.0),
                           gain_db=rng.uniform(-8, 8))
            x = scipy.signal.lfilter(b, a, x)
        if rng.random() < 0.4:
            b, a = _biquad("lowpass", rng.uniform(3500, 16000), sr)
            x = scipy.signal.lfilter(b, a, x)
    if rng.random() < 0.15 * amount:                         # a little amp drive
        drive = rng.uniform(1.5, 6.0)
        x = np.tanh(drive * x / (np.max(np.abs(x)) + 1e-12)) / math.tanh(drive) * np.max(np.abs(x))
    peak = np.max(np.abs(x)) + 1e-12
    level_db = rng.uniform(-36, -1)                          # a quiet take or a hot one
    x *= 10 ** (level_db / 20) / peak
    if rng.random() < 0.7 * amount:                          # hiss and room noise, below the music
        x += _pink(rng, n) * 10 ** ((level_db - rng.uniform(35, 70)) / 20)
    if rng.random() < 0.25 * amount:                         # mains hum with its harmonics
        f = rng.choice([50.0, 60.0])
        t = np.arange(n) / sr
        hum = sum(np.sin(2 * math.pi * f * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5))
        x += hum * 10 ** ((level_db - rng.uniform(40, 70)) / 20)
    return x.astype(np.float32)


def room_tone(rng, seconds: float, sample_rate: int = 48000) -> np.ndarray:
    """A room with nobody playing: hiss, hum, sometimes a DC offset -- no onset anywhere.

    >>> x = room_tone(np.random.default_rng(0), 1.0)
    >>> x.dtype.name, bool(np.abs(x).max() < 0.5)
    ('float32', True)
    """
    n = int(seconds * sample_rate)
    x = _pink(rng, n) * 10 ** (rng.uniform(-90, -45) / 20)
    if rng.random() < 0.5:
        f = rng.choice([50.0, 60.0])
        t = np.arange(n) / sample_rate
        x += sum(np.sin(2 * math.pi * f * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5)) \
            * 10 ** (rng.uniform(-80, -40) / 20)
    if rng.random() < 0.3:
        x += rng.uniform(-0.2, 0.2)
    return x.astype(np.float32)


@dataclass
class RenderedTake:
    """A rendered partner take: audio (mono float32), onset times (s) and what it is."""

    audio: np.ndarray
    onsets: np.ndarray
    style: str
    program: int
    soundfont: str
    sample_rate: int
    family: str


def render_take(style: str, seed: int, soundfont: Soundfont, seconds: float = 8.0, room: float = 1.0,
                program: int | None = None) -> RenderedTake:
    """Perform, render, and put in a room: one take with its true onsets.

    The take starts at a random sample within a synthesizer block, so the
    onsets fall anywhere relative to a detector's hops. Style ``synthetic``
    is a part played by the cheap synthesized instruments of
    :mod:`rolypoly.pretrain.synthetic_partner` instead (no soundfont needed).
    """
    rng = np.random.default_rng([seed, 7])
    sr = soundfont.sample_rate if soundfont is not None else 48000
    if style == SYNTHETIC:
        audio, onsets, program, family = _synthetic_part(rng, seconds, sr)
        font = "synthetic"
        # Half of them as the lab's fixtures are: straight from the synthesizer, no room, no noise.
        room = room if rng.random() < 0.5 else 0.0
    else:
        p = perform(style, seed, seconds, program)
        audio, onsets = render(p, soundfont)
        program, family, font = p.program, STYLES[style][0], soundfont.path.name
    shift = int(rng.integers(0, SYNTH_BLOCK))
    audio = np.concatenate([np.zeros(shift, np.float32), audio])
    onsets = onsets + shift / sr
    audio = play_room(audio, rng, sr, amount=room)
    return RenderedTake(audio=audio, onsets=onsets, style=style, program=program, soundfont=font,
                        sample_rate=sr, family=family)


#: The style whose takes come from the synthesized instruments, not a soundfont.
SYNTHETIC = "synthetic"


def _synthetic_part(rng, seconds: float, sample_rate: int):
    """A humanized part on a synthesized guitar, bass or electric piano: audio, onsets, -1, family."""
    from .synthetic_partner import humanized_part

    instrument = str(rng.choice(["guitar", "bass", "keys"]))
    bpm = rng.uniform(70, 160)
    steps = int(rng.choice([2, 4]))
    bars = max(1, int(seconds / (4 * 60.0 / bpm)))
    audio, onsets = humanized_part(instrument, bpm=bpm, bars=bars, steps_per_beat=steps,
                                   density=rng.uniform(0.4, 0.9), jitter_ms=rng.uniform(3, 15),
                                   swing=rng.uniform(0, 0.3) if rng.random() < 0.3 else 0.0,
                                   legato=rng.uniform(0.5, 1.8), velocity_range=(0.3, 1.0),
                                   seed=int(rng.integers(1 << 30)), sample_rate=sample_rate)
    return audio, onsets, -1, instrument
