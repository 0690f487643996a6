"""The drum kit rolypoly sounds with: one-shots per class and velocity layer, decoded once.

A kit is loaded once, at the output's sample rate, into plain float32
buffers: every drum class (:data:`rolypoly.drum_map.CLASS_NAMES`) has a few
*velocity layers* (the same drum struck softer or harder, which changes its
colour as well as its level). A hit of velocity ``v`` plays the layer at or
just above ``v``, scaled down to the level ``v`` should have -- the level is
interpolated between the measured levels of the neighbouring layers, so
the kit's own dynamics are kept. Everything that sounds -- the live output
callback and the offline ``mix.wav`` -- plays these same buffers with the
same gains, so what was heard and what is saved sound alike.

Where the one-shots come from (:func:`load_kit`):

* a General MIDI soundfont (``.sf2``/``.sf3``): its drum kit (bank 128) is
  played once by FluidSynth, note by note and layer by layer, straight at
  the output rate (no reverb, no chorus);
* a folder of WAV/FLAC files named after the drums: ``kick.wav``,
  ``snare_40.wav`` + ``snare_110.wav`` (layers by velocity), ``42.wav`` (a
  General MIDI pitch) ...; files at another rate are resampled once;
* the built-in synthesizer (:mod:`rolypoly.synth`), when nothing else is
  installed or asked for.

Each one-shot starts on its first audible sample (leading silence is cut,
so a hit placed on a sample *sounds* on that sample) and ends in a short
fade once it has decayed by 60 dB.

Examples
--------
>>> kit = load_kit("synth", 48000)
>>> kit.describe()[:62]
'built-in synthesizer, 9 drums x 8 velocity layers at 48000 Hz;'
>>> shot = kit.sample(1, 100)           # a snare at velocity 100
>>> shot.dtype.name, shot.ndim
('float32', 1)
>>> layer, gain = kit.layer_gain(1, 100)
>>> kit.velocities[1][layer], round(float(gain), 3) <= 1.0
(112, True)
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from rolypoly.drum_map import (CLASS_NAMES, CLASS_PITCHES, GM_DRUM_NAMES, N_CLASSES, OUTPUT_PITCHES, class_index,
                                class_of_pitch)
from rolypoly.errors import RolypolyError

__all__ = ["SampleKit", "KitError", "load_kit", "synth_kit", "default_soundfont", "LAYER_VELOCITIES",
           "SOUNDFONT_PATHS", "BANK_PAD"]

#: Velocities at which a soundfont (or the synthesizer) is played to make the layers.
LAYER_VELOCITIES = (16, 32, 48, 64, 80, 96, 112, 127)
#: The drum notes a soundfont is asked for, each its own sound: General MIDI's 35-81 and the GS
#: notes around them (27-34, 82-87). Other notes of the drum map (the TD-11's hi-hat edges 22, 26)
#: play their class's sound.
KIT_PITCHES = tuple(sorted(GM_DRUM_NAMES))
#: Soundfonts looked for, best first (Debian: fluid-soundfont-gm, timgm6mb-soundfont,
#: musescore-general-soundfont-small). ``$ROLYPOLY_KIT`` names another kit.
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
#: A one-shot ends once it has fallen this far below its peak...
TAIL_DB = -60.0
#: ...or at this length (seconds): cymbals ring for many seconds, a drum machine cuts them.
MAX_LENGTH_S = {"crash": 3.0, "ride": 3.0, "open_hihat": 2.0}
DEFAULT_MAX_LENGTH_S = 1.5
#: Fade at the cut, seconds.
FADE_S = 0.01
#: Loudest layer-127 peak of a kit after loading: headroom for hits that overlap.
KIT_PEAK = 0.5
#: The level of a layer is the RMS of its first 50 ms (the attack the ear judges loudness by).
LEVEL_WINDOW_S = 0.05
#: Zeros between the layers in :attr:`SampleKit.bank`: the longest block the live mixer reads at once.
BANK_PAD = 4096
#: Layers of a sound that differ by less than this (dB of the difference, after matching their
#: levels) are one layer played louder or softer: stored once.
SAME_LAYER_DB = -50.0
#: Notes that cut each other, as a drummer expects (General MIDI's exclusive classes, plus the
#: Roland TD-11's hi-hat edge notes 22 and 26): a closed or pedal hi-hat stops an open one; the
#: short/long whistle, guiro, cuica, triangle and surdo pairs.
CHOKE_GROUPS = ((22, 26, 42, 44, 46), (71, 72), (73, 74), (78, 79), (80, 81), (86, 87))
#: A choked hit fades out over this long (seconds) from the frame of the hit that cuts it.
CHOKE_S = 0.01
#: Frames a soundfont's note is rendered at a time, once it has been let go (until it has decayed).
RENDER_CHUNK = 2048
#: Soundfont note-on to note-off, seconds (drum presets mostly ignore it; MIDI out sends the same).
NOTE_GATE_S = 0.05
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")


class KitError(RolypolyError):
    """A drum kit (soundfont or sample folder) that cannot be used."""


class SampleKit:
    """One-shots per drum class and per MIDI note, by velocity layer, at one sample rate.

    A hit plays its *note's* own sound when the kit has one (a pedal hi-hat
    44 is not the closed hi-hat 42, a ride bell 53 not the ride 51), else its
    *class's* sound (:data:`rolypoly.drum_map.CLASS_NAMES`). Sounds 0..8 are
    the classes'; the notes' own sounds follow (a note whose own sound is its
    class's, like 42 in a soundfont, points at the class's).

    Parameters
    ----------
    layers : sequence of 9 lists of (velocity, np.ndarray)
        Per class, its layers sorted by velocity (mono float32 one-shots,
        first sample = onset). Every class needs at least one layer.
    sample_rate : int
    name : str
        What the kit is, for messages (``describe``).
    notes : list of str
        Things the musician should know about the kit (classes filled in
        from the synthesizer...).
    spec : what :func:`load_kit` was given (to load the kit again at another rate)
    pitch_layers : dict, optional
        MIDI pitch -> its own layers (as in ``layers``), or a class index
        when the note's own sound is that class's.
    chokes : bool
        Whether :data:`CHOKE_GROUPS` apply (False: a "kit" of other sounds, no note cuts another).

    Attributes
    ----------
    bank : np.ndarray
        Every distinct layer of every sound in one float32 array, with
        :data:`BANK_PAD` zeros before each and after the last (the live mixer
        reads whole blocks; outside a layer it reads silence). Layers that
        differ only in level (most soundfonts play one sample louder or
        softer) are kept once.
    velocities : tuple of tuples
        Layer velocities per sound (the first 9: the classes).
    starts, ends : np.ndarray
        (sounds, layers) bank indices of each layer's first sample and one past its last.
    sound_of_pitch : np.ndarray
        (128,) the sound of each MIDI pitch, -1 where the note plays its class's.
    choke_of_pitch : np.ndarray
        (128,) choke group of each pitch (0: none): a hit cuts the sounding
        hits of its group within :data:`CHOKE_S` (an open hi-hat stops when
        the hat closes, :data:`CHOKE_GROUPS`).
    choke_frames : int
        The fade of a choked hit, in frames.
    """

    def __init__(self, layers, sample_rate: int, name: str = "kit", notes=None, spec=None, pitch_layers=None,
                 chokes: bool = True):
        self.spec = spec
        if len(layers) != N_CLASSES:
            raise ValueError(f"a kit needs {N_CLASSES} classes of layers, got {len(layers)}")
        if any(not ls for ls in layers):
            raise ValueError("every drum class needs at least one layer")
        self.sample_rate = int(sample_rate)
        self.name = name
        self.notes = list(notes or [])
        sounds = [list(ls) for ls in layers]
        self.sound_of_pitch = np.full(128, -1, np.int64)
        for p, ls in sorted((pitch_layers or {}).items()):
            if isinstance(ls, (int, np.integer)):
                self.sound_of_pitch[int(p)] = _check_class(ls)
            elif ls:
                self.sound_of_pitch[int(p)] = len(sounds)
                sounds.append(list(ls))
        self.choke_of_pitch = np.zeros(128, np.int64)
        for g, group in enumerate(CHOKE_GROUPS if chokes else (), start=1):
            self.choke_of_pitch[list(group)] = g
        self.choke_frames = max(1, int(round(CHOKE_S * self.sample_rate)))
        n = len(sounds)
        width = max(len(ls) for ls in sounds)
        self.velocities = tuple(tuple(int(v) for v, _ in ls) for ls in sounds)
        # Where each layer lies in the bank, at what scale of what is stored there: a layer that is
        # another layer of the same sound louder or softer is stored once.
        self.starts = np.zeros((n, width), np.int64)
        self.ends = np.zeros((n, width), np.int64)
        scale = np.ones((n, width))
        levels = np.zeros((n, width))
        stored, pos = [], BANK_PAD
        for s_, ls in enumerate(sounds):
            mine = []  # (bank start, array, as float64, its energy) of this sound's stored layers
            for k in reversed(range(len(ls))):  # the loudest first: softer copies of it are scaled down
                x = np.asarray(ls[k][1], np.float32)
                levels[s_, k] = _level_db(x, self.sample_rate)
                x64 = x.astype(np.float64)
                same = next(((at, y, a) for at, y, y64, yy in mine
                             if (a := _scale_of(x64, y64, yy)) is not None), None)
                if same is None:
                    mine.append((pos, x, x64, float(np.dot(x64, x64))))
                    stored.append((pos, x))
                    at, a = pos, 1.0
                    pos += len(x) + BANK_PAD
                else:
                    at, x, a = same  # the layer is the stored one, scaled
                self.starts[s_, k], self.ends[s_, k], scale[s_, k] = at, at + len(x), a
        # BANK_PAD zeros before every layer and after the last: the live mixer reads a whole
        # block from wherever a voice is, and a voice that has not begun, or has ended, reads
        # silence there (no masks in the audio callback).
        self.bank = np.zeros(pos, np.float32)
        for at, x in stored:
            self.bank[at:at + len(x)] = x
        self.scales = scale
        self.levels_db = levels
        # Per sound and velocity 0..127: which layer plays and at what gain (the live path looks it up).
        self.layer_of = np.zeros((n, 128), np.int64)
        self.gain_of = np.zeros((n, 128), np.float32)
        for s_ in range(n):
            vel = np.array(self.velocities[s_], float)
            lev = levels[s_, :len(vel)]
            for v in range(1, 128):
                k = int(min(np.searchsorted(vel, v), len(vel) - 1))
                self.layer_of[s_, v] = k
                self.gain_of[s_, v] = scale[s_, k] * 10.0 ** ((_level_at(v, vel, lev) - lev[k]) / 20.0)

    # ------------------------------------------------------------------ what a hit plays
    def sound(self, class_index: int, pitch=None) -> int:
        """The sound a hit plays: its pitch's own, else its class's.

        >>> kit = load_kit("synth", 48000)
        >>> kit.sound(2, 44), kit.sound(2)      # the synthesizer has one sound per class
        (2, 2)
        """
        c = _check_class(class_index)
        if pitch is None or not 0 <= int(pitch) < 128:
            return c
        s_ = int(self.sound_of_pitch[int(pitch)])
        return c if s_ < 0 else s_

    def layer_gain(self, class_index: int, velocity, pitch=None) -> tuple[int, float]:
        """The layer a hit plays and its gain (<= 1 up to the top layer).

        >>> kit = load_kit("synth", 48000)
        >>> kit.layer_gain(0, 127)
        (7, 1.0)
        """
        v, s_ = _velocity(velocity), self.sound(class_index, pitch)
        return int(self.layer_of[s_, v]), float(self.gain_of[s_, v])

    def layer(self, class_index: int, layer: int, pitch=None) -> np.ndarray:
        """A layer's one-shot (a view into :attr:`bank` when stored at its own level)."""
        s_ = self.sound(class_index, pitch)
        x = self.bank[self.starts[s_, layer]:self.ends[s_, layer]]
        a = self.scales[s_, layer]
        return x if a == 1.0 else x * np.float32(a)

    def sample(self, class_index: int, velocity, pitch=None) -> np.ndarray:
        """The one-shot a hit of this class (and note) and velocity plays (float32, a new array).

        Velocities are clipped into 1..127: a notated hit always sounds.
        """
        s_, v = self.sound(class_index, pitch), _velocity(velocity)
        k = self.layer_of[s_, v]
        return self.bank[self.starts[s_, k]:self.ends[s_, k]] * self.gain_of[s_, v]

    def length(self, class_index: int, pitch=None) -> int:
        """Length in samples of the sound's longest layer."""
        s_ = self.sound(class_index, pitch)
        return int((self.ends[s_] - self.starts[s_]).max())

    def own_pitches(self) -> list[int]:
        """The MIDI pitches with a sound of their own (the others play their class's)."""
        return [int(p) for p in np.flatnonzero(self.sound_of_pitch >= 0)]

    def render(self, times, classes, velocities, pitches, length: int, limit: bool = False) -> np.ndarray:
        """Hits mixed offline as the live players mix them: by note, choke groups included.

        Parameters
        ----------
        times : seconds from sample 0 of each hit (non-finite: skipped)
        classes, velocities : per hit
        pitches : per hit, its MIDI pitch (< 0: the class's sound)
        length : samples out
        limit : scale the mix down to a peak of :data:`rolypoly.synth.CLIP_LEVEL` if it
            goes beyond (as :func:`rolypoly.synth.render_hits`); else as the live players mix it

        Returns float32.

        >>> kit = load_kit("synth", 48000)
        >>> out = kit.render([0.0, 0.01], [3, 2], [100, 100], [46, 42], 4800)
        >>> bool(np.all(out[480 + kit.choke_frames:] == kit.sample(2, 100)[kit.choke_frames:4320]))
        True
        """
        from rolypoly.limits import MAX_MIX_SECONDS, check_seconds

        check_seconds(int(length) / self.sample_rate, "drum mix", limit=MAX_MIX_SECONDS, what="would last")
        out = np.zeros(int(length), np.float32)
        order = np.argsort(np.asarray(times, np.float64), kind="stable")
        sounding: dict[int, list] = {}  # choke group -> [(start, one-shot)] not yet cut
        fade = np.linspace(1.0, 0.0, self.choke_frames + 1, dtype=np.float32)[:-1]  # frame j: (F - j) / F
        for i in order:
            t = float(times[i])
            if not math.isfinite(t):
                continue
            start = int(round(t * self.sample_rate))
            if start >= len(out):
                continue
            p = int(pitches[i])
            shot = self.sample(int(classes[i]), velocities[i], p if p >= 0 else None)
            group = int(self.choke_of_pitch[p if p >= 0 else OUTPUT_PITCHES[int(classes[i])]])
            if group:
                keep = []
                for a, x in sounding.get(group, []):
                    if a >= start:          # struck on the same frame: both sound
                        keep.append((a, x))
                        continue
                    # The live mixer fades a choked voice over choke_frames from the choking hit's frame.
                    lo, hi = max(start, 0), min(a + len(x), len(out))
                    if hi > lo:
                        gone = x[lo - a:hi - a].copy()
                        m = min(len(gone), len(fade))
                        gone[:m] *= 1.0 - fade[:m]
                        out[lo:hi] -= gone
                sounding[group] = keep + [(start, shot)]
            skip = max(0, -start)
            a, b = start + skip, min(len(out), start + len(shot))
            if b > a:
                out[a:b] += shot[skip:skip + b - a]
        if limit:
            from rolypoly.synth import limit_peak

            limit_peak(out)
        return out

    def at_rate(self, sample_rate: int) -> "SampleKit":
        """This kit at another sample rate (loaded again from its source; itself when the rate matches).

        >>> load_kit("synth", 48000).at_rate(44100).sample_rate
        44100
        """
        if int(sample_rate) == self.sample_rate:
            return self
        if self.spec is None:
            raise KitError(f"{self.name}: cannot be loaded again at {sample_rate} Hz (made in memory)")
        return load_kit(self.spec, sample_rate)

    def describe(self) -> str:
        """The kit in one line: sounds, layers, notes with their own sound, memory.

        >>> load_kit("synth", 48000).describe()[:62]
        'built-in synthesizer, 9 drums x 8 velocity layers at 48000 Hz;'
        """
        layers = sorted({len(v) for v in self.velocities})
        count = str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
        text = (f"{self.name}, {N_CLASSES} drums x {count} velocity layer{'s' if layers != [1] else ''} "
                f"at {self.sample_rate} Hz")
        own = self.own_pitches()
        if own:
            text += f"; {len(own)} notes with their own sound ({_ranges(own)}), the others their class's"
        else:
            text += "; every note plays its class's sound"
        return text + f"; {self.bank.nbytes / 1e6:.1f} MB"

    def __repr__(self) -> str:
        return f"SampleKit({self.describe()!r})"


def _scale_of(x: np.ndarray, y: np.ndarray, yy: float):
    """``a`` when ``x`` is ``a * y`` within :data:`SAME_LAYER_DB`, else None (both float64).

    Their lengths may differ (where each fell below :data:`TAIL_DB`): what one has beyond the
    other counts as difference.
    """
    if yy <= 0.0 or abs(len(x) - len(y)) > 0.1 * max(len(x), len(y)):
        return None
    m = min(len(x), len(y))
    xm, ym = x[:m], y[:m]
    xy, ymm, xx = float(np.dot(xm, ym)), float(np.dot(ym, ym)), float(np.dot(x, x))
    a = xy / (ymm or 1.0)
    if a <= 0.0 or xx <= 0.0:
        return None
    # |x - a y|^2 over the common part, plus what either has beyond it.
    err = (float(np.dot(xm, xm)) - 2.0 * a * xy + a * a * ymm) + float(np.dot(x[m:], x[m:])) + a * a * (yy - ymm)
    return a if err <= xx * 10.0 ** (SAME_LAYER_DB / 10.0) else None


def _ranges(pitches) -> str:
    """Pitches as short ranges.

    >>> _ranges([35, 36, 37, 40, 42, 43])
    '35-37, 40, 42-43'
    """
    out, run = [], []
    for p in sorted(pitches):
        if run and p != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(p)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _velocity(velocity) -> int:
    return int(min(max(int(round(float(velocity))), 1), 127))


def _check_class(class_index) -> int:
    c = int(class_index)
    if c != class_index or not 0 <= c < N_CLASSES:
        raise ValueError(f"drum class {class_index!r} is not one of 0..{N_CLASSES - 1} ({', '.join(CLASS_NAMES)})")
    return c


def _level_db(x: np.ndarray, sr: int) -> float:
    head = x[:max(1, int(LEVEL_WINDOW_S * sr))].astype(np.float64)
    return 10.0 * math.log10(float(np.mean(head * head)) + 1e-20)


def _level_at(v: int, vel: np.ndarray, lev: np.ndarray) -> float:
    """Level (dB) of velocity ``v``: between layers, interpolated; outside them, the synth's curve."""
    from rolypoly.synth import velocity_gain

    if v >= vel[-1]:
        return float(lev[-1])
    if v <= vel[0]:
        return float(lev[0] + 20.0 * math.log10(velocity_gain(v) / velocity_gain(vel[0])))
    return float(np.interp(v, vel, lev))


# ----------------------------------------------------------------------------- shaping one-shots

def shape_one_shot(x: np.ndarray, sample_rate: int, max_length_s: float = DEFAULT_MAX_LENGTH_S) -> np.ndarray:
    """Cut leading silence and the tail below :data:`TAIL_DB`, fade the end.

    Returns float32; an all-silent input gives an empty array.

    >>> x = np.r_[np.zeros(100), np.exp(-np.arange(48000) / 2000.0)]
    >>> y = shape_one_shot(x, 48000)
    >>> float(y[0]), len(y) < 48000
    (1.0, True)
    """
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    peak = float(a.max()) if len(a) else 0.0
    if peak <= 0.0:
        return np.zeros(0, np.float32)
    floor = peak * 10.0 ** (TAIL_DB / 20.0)
    loud = np.flatnonzero(a >= floor)
    start, stop = int(loud[0]), int(loud[-1]) + 1
    stop = min(stop, start + int(max_length_s * sample_rate))
    y = x[start:stop].copy()
    n = min(len(y) // 2, int(FADE_S * sample_rate))
    if n > 1:
        y[-n:] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, n)))
    return y.astype(np.float32)


def _max_length(c: int) -> float:
    return MAX_LENGTH_S.get(CLASS_NAMES[c], DEFAULT_MAX_LENGTH_S)


def _normalised(layers, pitch_layers=None):
    """Scale the whole kit so its loudest top layer peaks at :data:`KIT_PEAK` (balance kept).

    Returns the class layers, and the pitch layers when given.
    """
    own = [ls for ls in (pitch_layers or {}).values() if not isinstance(ls, (int, np.integer)) and ls]
    peak = max(float(np.abs(ls[-1][1]).max()) for ls in [*layers, *own] if len(ls[-1][1]))
    g = KIT_PEAK / peak if peak > 0 else 1.0

    def scaled(ls):
        return [(v, (x * g).astype(np.float32)) for v, x in ls]

    if pitch_layers is None:
        return [scaled(ls) for ls in layers]
    return ([scaled(ls) for ls in layers],
            {p: ls if isinstance(ls, (int, np.integer)) else scaled(ls) for p, ls in pitch_layers.items()})


# ----------------------------------------------------------------------------- sources of kits

def synth_kit(sample_rate: int = 48000) -> SampleKit:
    """The built-in synthesizer's kit (:class:`rolypoly.synth.DrumKit`) as velocity layers.

    >>> synth_kit(44100).sample_rate
    44100
    """
    from rolypoly.synth import DrumKit

    synth = DrumKit(sample_rate)
    layers = [[(v, synth.sample(c, v)) for v in LAYER_VELOCITIES] for c in range(N_CLASSES)]
    return SampleKit(_normalised(layers), sample_rate, name="built-in synthesizer", spec="synth")


def default_soundfont() -> Path | None:
    """The first General MIDI soundfont installed (:data:`SOUNDFONT_PATHS`), or None.

    >>> default_soundfont() is None or default_soundfont().suffix in (".sf2", ".sf3")
    True
    """
    for p in SOUNDFONT_PATHS:
        if os.path.isfile(p):
            return Path(p)
    return None


def load_kit(spec=None, sample_rate: int = 48000) -> SampleKit:
    """Load a drum kit at ``sample_rate``.

    Parameters
    ----------
    spec : str, os.PathLike or None
        A soundfont (``.sf2``/``.sf3``), a folder of samples, ``"synth"``
        (the built-in synthesizer) or None: ``$ROLYPOLY_KIT`` if set, else the
        first General MIDI soundfont installed, else the synthesizer (the
        kit's :attr:`~SampleKit.notes` then say why).
    sample_rate : int
        The output's rate; everything is decoded or resampled to it once.

    Raises
    ------
    KitError
        One line naming the kit: no such file, not a soundfont, a soundfont
        without a drum kit, a folder without usable samples.

    Examples
    --------
    >>> load_kit("/no/such/kit.sf2")
    Traceback (most recent call last):
    ...
    rolypoly.kit.KitError: /no/such/kit.sf2: no such drum kit (a .sf2/.sf3 soundfont or a folder of samples)
    """
    if int(sample_rate) < 8000:
        raise KitError(f"sample rate {sample_rate} Hz is too low for drums (need >= 8000)")
    if spec is None:
        spec = os.environ.get("ROLYPOLY_KIT") or None
    if spec is None:
        found = default_soundfont()
        if found is None:
            kit = synth_kit(sample_rate)
            kit.notes.append("no General MIDI soundfont installed (Debian: fluid-soundfont-gm): "
                             "drums from the built-in synthesizer")
            return kit
        try:
            return soundfont_kit(found, sample_rate)
        except KitError as exc:  # e.g. libfluidsynth missing: still sound, and say why
            kit = synth_kit(sample_rate)
            kit.notes.append(f"{exc}; drums from the built-in synthesizer")
            return kit
    if str(spec) == "synth":
        return synth_kit(sample_rate)
    path = Path(spec)
    if path.is_dir():
        return folder_kit(path, sample_rate)
    if not path.exists():
        raise KitError(f"{path}: no such drum kit (a .sf2/.sf3 soundfont or a folder of samples)")
    if path.suffix.lower() in (".sf2", ".sf3"):
        return soundfont_kit(path, sample_rate)
    raise KitError(f"{path}: not a drum kit (give a .sf2/.sf3 soundfont or a folder of samples)")


# ----------------------------------------------------------------------------- soundfonts

_soundfont_cache: dict = {}


def soundfont_kit(path, sample_rate: int = 48000, preset: int | None = None) -> SampleKit:
    """The drum kit (bank 128) of a soundfont, played by FluidSynth into velocity layers.

    Every drum note of :data:`KIT_PITCHES` the kit sounds is played at every
    :data:`LAYER_VELOCITIES` into its own layers, rendered at ``sample_rate``
    with reverb and chorus off; each class's sound is its General MIDI note's
    (:data:`rolypoly.drum_map.OUTPUT_PITCHES`), and notes the soundfont leaves
    silent play their class's. Loaded kits are kept per (file, rate, preset)
    for the process.

    Parameters
    ----------
    path : the soundfont
    preset : drum preset number in bank 128 (default: 0, Standard, else the first there is)

    Raises
    ------
    KitError
        FluidSynth missing, the file is not a soundfont, or it has no drum kit.
    """
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime if path.exists() else 0, int(sample_rate), preset)
    if key in _soundfont_cache:
        return _soundfont_cache[key]
    if not path.is_file():
        raise KitError(f"{path}: no such soundfont")
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":  # checked here: FluidSynth would print its own errors
        raise KitError(f"{path}: not a soundfont (no RIFF sfbk header)")
    try:
        import fluidsynth
    except (ImportError, OSError) as exc:
        raise KitError(f"{path}: FluidSynth cannot be loaded ({_first_line(exc)}); install the Debian "
                       "package libfluidsynth3 and pip install pyfluidsynth") from None
    synth = fluidsynth.Synth(gain=1.0, samplerate=float(sample_rate),
                             **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 64})
    try:
        sfid = synth.sfload(str(path))
        if sfid < 0:
            raise KitError(f"{path}: not a soundfont FluidSynth can read")
        programs = [preset] if preset is not None else [0, *range(1, 128)]
        chosen = next((p for p in programs if synth.sfpreset_name(sfid, 128, p)), None)
        if chosen is None:
            raise KitError(f"{path}: the soundfont has no drum kit (no preset in bank 128)"
                           if preset is None else f"{path}: no drum preset {preset} in bank 128")
        if synth.program_select(9, sfid, 128, chosen) != 0:
            raise KitError(f"{path}: FluidSynth cannot select drum preset {chosen}")
        write = _float_writer(fluidsynth)
        # Every drum note the soundfont sounds, each in its own layers (the class's note is the class's sound).
        own, silent_pitches = {}, []
        for p in KIT_PITCHES:
            c = class_of_pitch(p)
            shots = []
            for v in LAYER_VELOCITIES:
                x = _play_note(synth, write, p, v, sample_rate, _max_length(c))
                shots.append((v, shape_one_shot(x, sample_rate, _max_length(c))))
            shots = [(v, x) for v, x in shots if len(x)]
            if shots:
                own[p] = shots
            else:
                silent_pitches.append(p)
        name = f"{path.name} drum kit {chosen} ({synth.sfpreset_name(sfid, 128, chosen).strip()})"
    finally:
        synth.delete()
    layers = [own.get(OUTPUT_PITCHES[c], []) for c in range(N_CLASSES)]
    silent = [CLASS_NAMES[c] for c in range(N_CLASSES) if not layers[c]]
    if len(silent) == N_CLASSES:
        raise KitError(f"{path}: the drum kit is silent")
    notes = []
    if silent:
        fill = synth_kit(sample_rate)
        for c in range(N_CLASSES):
            if not layers[c]:
                layers[c] = [(v, fill.layer(c, k).copy()) for k, v in enumerate(fill.velocities[c])]
        notes.append(f"{path.name}: no sound for {', '.join(silent)}; taken from the built-in synthesizer")
    pitch_layers = {p: (OUTPUT_PITCHES.index(p) if p in OUTPUT_PITCHES else ls) for p, ls in own.items()}
    layers, pitch_layers = _normalised(layers, pitch_layers)
    kit = SampleKit(layers, sample_rate, name=name, notes=notes, spec=str(path), pitch_layers=pitch_layers)
    _soundfont_cache[key] = kit
    return kit


def _float_writer(fluidsynth):
    """FluidSynth's float renderer (pyfluidsynth only wraps the 16-bit one)."""
    import ctypes

    fn = fluidsynth._fl.fluid_synth_write_float
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                   ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int

    def write(synth, frames: np.ndarray) -> None:
        # frames: (n, 2) float32, C order: left at offset 0, right at 1, stride 2.
        p = frames.ctypes.data
        fn(synth.synth, len(frames), p, 0, 2, p, 1, 2)

    return write


def _play_note(synth, write, pitch: int, velocity: int, sample_rate: int, seconds: float) -> np.ndarray:
    """One note from silence: note-on, the gate, note-off, the ring; mono float64.

    The ring is rendered in chunks until one is all below :data:`TAIL_DB` of the peak
    (:func:`shape_one_shot` would cut it anyway): most drums are gone long before ``seconds``.
    """
    n = int(seconds * sample_rate) + 1
    gate = min(n, int(NOTE_GATE_S * sample_rate))
    frames = np.zeros((n, 2), np.float32)
    synth.noteon(9, pitch, velocity)
    write(synth, frames[:gate])
    synth.noteoff(9, pitch)
    peak, at = float(np.abs(frames[:gate]).max(initial=0.0)), gate
    floor = 10.0 ** (TAIL_DB / 20.0)
    while at < n:
        chunk = frames[at:at + RENDER_CHUNK]
        write(synth, chunk)
        loud = float(np.abs(chunk).max())
        at += len(chunk)
        if peak > 0.0 and loud < peak * floor:
            break
        peak = max(peak, loud)
    # The next note starts from silence: cut whatever still rings.
    synth.cc(9, 120, 0)  # all sound off
    tail = np.zeros((512, 2), np.float32)
    write(synth, tail)
    return frames[:at].mean(axis=1, dtype=np.float64)


# ----------------------------------------------------------------------------- sample folders

_LAYER_SUFFIX = re.compile(r"^(?P<name>.+?)(?:[_\- ]v?(?P<vel>\d{1,3}))?$", re.IGNORECASE)
_PITCH_OF_NAME = {name: p for p, name in GM_DRUM_NAMES.items()}


def _drum_of_name(stem: str) -> tuple[int, int | None, int | None] | None:
    """(class, MIDI pitch or None, layer velocity or None) a sample file's name gives, or None.

    A drum class (or alias) names the class's sound; a pitch of the drum map, or a General
    MIDI drum name (:data:`rolypoly.drum_map.GM_DRUM_NAMES`) that is not a class's, names that
    note's own sound.

    >>> _drum_of_name("snare_40"), _drum_of_name("44"), _drum_of_name("Kick"), _drum_of_name("ride_bell")
    ((1, None, 40), (2, 44, None), (0, None, None), (8, 53, None))
    >>> _drum_of_name("guitar") is None
    True
    """
    stem = stem.strip()
    m = _LAYER_SUFFIX.match(stem)
    candidates = [(m.group("name"), m.group("vel"))] if m and m.group("vel") else []
    candidates.append((stem, None))
    for name, vel in candidates:
        v = None if vel is None else int(vel)
        if v is not None and not 1 <= v <= 127:
            continue
        if name.isdigit():
            c = class_of_pitch(int(name))
            if c is not None:
                return c, int(name), v
            continue
        c = _class_index_or_none(name)
        if c is not None:
            return c, None, v
        p = _PITCH_OF_NAME.get(name.strip().lower().replace("-", "_").replace(" ", "_"))
        if p is not None:
            return class_of_pitch(p), p, v
    return None


def _class_index_or_none(name: str) -> int | None:
    try:
        return class_index(name)
    except ValueError:
        return None


def folder_kit(folder, sample_rate: int = 48000) -> SampleKit:
    """A kit from a folder of samples named after the drums, or after the notes.

    A file is ``<drum>[_<velocity>].wav`` (or .flac/.aiff/.ogg). The drum is
    either a class name or alias (``kick``, ``snare``, ``hihat``,
    ``open_hihat``, ``low_tom``, ``mid_tom``, ``high_tom``, ``crash``,
    ``ride``...): the sound of every note of that class without a file of
    its own; or a MIDI note of the drum map, by number or General MIDI name
    (``44.wav`` or ``pedal_hihat.wav``, ``53.wav`` or ``ride_bell.wav``): that
    note's own sound. The optional velocity makes the file one layer of
    several (a file without one is the top layer, 127). A class without a
    file of its own takes its General MIDI note's (``42.wav`` for the closed
    hi-hat), else another note's of the class, else the built-in
    synthesizer's; :attr:`SampleKit.notes` says which classes came from the
    synthesizer and, when the folder names notes, which General MIDI notes
    play their class's sample.

    Raises
    ------
    KitError
        The folder has no usable sample (none named after a drum, or none readable).
    """
    from rolypoly.audio_io import load_audio

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    by_class: dict[int, dict[int, np.ndarray]] = {}
    by_pitch: dict[int, dict[int, np.ndarray]] = {}
    problems, unnamed = [], []
    for p in files:
        which = _drum_of_name(p.stem)
        if which is None:
            unnamed.append(p.name)
            continue
        c, pitch, v = which
        try:
            x = shape_one_shot(load_audio(p, sample_rate), sample_rate, _max_length(c))
        except RolypolyError as exc:
            problems.append(str(exc))
            continue
        if not len(x):
            problems.append(f"{p.name}: silent")
            continue
        (by_class.setdefault(c, {}) if pitch is None else by_pitch.setdefault(pitch, {}))[127 if v is None else v] = x
    if not by_class and not by_pitch:
        why = []
        if not files:
            why.append(f"no audio files ({', '.join(AUDIO_SUFFIXES)})")
        if unnamed:
            why.append(f"{len(unnamed)} file(s) not named after a drum (e.g. {unnamed[0]!r}; use kick.wav, "
                       f"snare_100.wav, 44.wav, ride_bell.wav ...)")
        if problems:
            why.append(problems[0])
        raise KitError(f"{folder}: no usable drum samples: {'; '.join(why)}")
    notes = [f"{folder.name}: skipped {p}" for p in problems]
    pitch_layers: dict = {p: sorted(found.items()) for p, found in by_pitch.items()}
    layers, missing, fill = [], [], None
    for c in range(N_CLASSES):
        if c in by_class:
            layers.append(sorted(by_class[c].items()))
            continue
        # The class's General MIDI note first, then its other notes in the drum map's order.
        p = next((p for p in CLASS_PITCHES[c] if p in by_pitch), None)
        if p is not None:
            layers.append(pitch_layers[p])
            pitch_layers[p] = c
            continue
        missing.append(CLASS_NAMES[c])
        fill = fill or synth_kit(sample_rate)
        layers.append([(v, fill.layer(c, k).copy()) for k, v in enumerate(fill.velocities[c])])
    if missing:
        notes.append(f"{folder.name}: no samples for {', '.join(missing)}; taken from the built-in synthesizer")
    if by_pitch:
        lacking: dict[int, list] = {}
        for p in range(35, 82):  # General MIDI's drum notes (a class's own note is its class's sound)
            if p not in pitch_layers and p not in OUTPUT_PITCHES:
                lacking.setdefault(class_of_pitch(p), []).append(p)
        if lacking:
            notes.append(f"{folder.name}: no sample of their own for General MIDI notes "
                         + "; ".join(f"{_ranges(ps)} (play {CLASS_NAMES[c]})" for c, ps in sorted(lacking.items())))
    layers, pitch_layers = _normalised(layers, pitch_layers)
    return SampleKit(layers, sample_rate, name=f"samples from {folder}", notes=notes, spec=str(folder),
                     pitch_layers=pitch_layers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

