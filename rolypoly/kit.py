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
>>> kit.describe()
'built-in synthesizer, 9 drums x 8 velocity layers at 48000 Hz'
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

from rolypoly.drum_map import CLASS_NAMES, N_CLASSES, OUTPUT_PITCHES, class_index, class_of_pitch
from rolypoly.errors import RolypolyError

__all__ = ["SampleKit", "KitError", "load_kit", "synth_kit", "default_soundfont", "LAYER_VELOCITIES",
           "SOUNDFONT_PATHS", "BANK_PAD"]

#: Velocities at which a soundfont (or the synthesizer) is played to make the layers.
LAYER_VELOCITIES = (16, 32, 48, 64, 80, 96, 112, 127)
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
#: Soundfont note-on to note-off, seconds (drum presets mostly ignore it; MIDI out sends the same).
NOTE_GATE_S = 0.05
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")


class KitError(RolypolyError):
    """A drum kit (soundfont or sample folder) that cannot be used."""


class SampleKit:
    """One-shots per drum class and velocity layer, at one sample rate.

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

    Attributes
    ----------
    bank : np.ndarray
        Every layer of every class in one float32 array, with
        :data:`BANK_PAD` zeros before each and after the last (the live mixer
        reads whole blocks; outside a layer it reads silence).
    velocities : tuple of tuples
        Layer velocities per class.
    starts, ends : np.ndarray
        (9, layers) bank indices of each layer's first sample and one past its last.
    """

    def __init__(self, layers, sample_rate: int, name: str = "kit", notes=None, spec=None):
        self.spec = spec
        if len(layers) != N_CLASSES:
            raise ValueError(f"a kit needs {N_CLASSES} classes of layers, got {len(layers)}")
        self.sample_rate = int(sample_rate)
        self.name = name
        self.notes = list(notes or [])
        width = max(len(ls) for ls in layers)
        self.velocities = tuple(tuple(int(v) for v, _ in ls) for ls in layers)
        if any(not ls for ls in layers):
            raise ValueError("every drum class needs at least one layer")
        # BANK_PAD zeros before every layer and after the last: the live mixer reads a whole
        # block from wherever a voice is, and a voice that has not begun, or has ended, reads
        # silence there (no masks in the audio callback).
        total = BANK_PAD + sum(len(x) + BANK_PAD for ls in layers for _, x in ls)
        self.bank = np.zeros(total, np.float32)
        self.starts = np.zeros((N_CLASSES, width), np.int64)
        self.ends = np.zeros((N_CLASSES, width), np.int64)
        levels = np.zeros((N_CLASSES, width))
        pos = BANK_PAD
        for c, ls in enumerate(layers):
            for k, (_, x) in enumerate(ls):
                x = np.asarray(x, np.float32)
                self.bank[pos:pos + len(x)] = x
                self.starts[c, k], self.ends[c, k] = pos, pos + len(x)
                levels[c, k] = _level_db(x, self.sample_rate)
                pos += len(x) + BANK_PAD
        self.levels_db = levels
        # Per class and velocity 0..127: which layer plays and at what gain (the live path looks it up).
        self.layer_of = np.zeros((N_CLASSES, 128), np.int64)
        self.gain_of = np.zeros((N_CLASSES, 128), np.float32)
        for c in range(N_CLASSES):
            vel = np.array(self.velocities[c], float)
            lev = levels[c, :len(vel)]
            for v in range(1, 128):
                k = int(min(np.searchsorted(vel, v), len(vel) - 1))
                self.layer_of[c, v] = k
                self.gain_of[c, v] = 10.0 ** ((_level_at(v, vel, lev) - lev[k]) / 20.0)

    # ------------------------------------------------------------------ what a hit plays
    def layer_gain(self, class_index: int, velocity) -> tuple[int, float]:
        """The layer a hit plays and its gain (<= 1 up to the top layer).

        >>> kit = load_kit("synth", 48000)
        >>> kit.layer_gain(0, 127)
        (7, 1.0)
        """
        v = _velocity(velocity)
        return int(self.layer_of[class_index, v]), float(self.gain_of[class_index, v])

    def layer(self, class_index: int, layer: int) -> np.ndarray:
        """A layer's one-shot (a view into :attr:`bank`)."""
        return self.bank[self.starts[class_index, layer]:self.ends[class_index, layer]]

    def sample(self, class_index: int, velocity) -> np.ndarray:
        """The one-shot a hit of this class and velocity plays (float32, a new array).

        Velocities are clipped into 1..127: a notated hit always sounds.
        """
        c = _check_class(class_index)
        k, g = self.layer_gain(c, velocity)
        return self.layer(c, k) * np.float32(g)

    def length(self, class_index: int) -> int:
        """Length in samples of the class's longest layer."""
        c = _check_class(class_index)
        return int((self.ends[c] - self.starts[c]).max())

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
        layers = sorted({len(v) for v in self.velocities})
        count = "/".join(str(n) for n in layers)
        return (f"{self.name}, {N_CLASSES} drums x {count} velocity layer{'s' if layers != [1] else ''} "
                f"at {self.sample_rate} Hz")

    def __repr__(self) -> str:
        return f"SampleKit({self.describe()!r})"


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


def _normalised(layers) -> list:
    """Scale the whole kit so its loudest top layer peaks at :data:`KIT_PEAK` (balance kept)."""
    peak = max(float(np.abs(ls[-1][1]).max()) for ls in layers if len(ls[-1][1]))
    g = KIT_PEAK / peak if peak > 0 else 1.0
    return [[(v, (x * g).astype(np.float32)) for v, x in ls] for ls in layers]


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

    Each class plays its General MIDI pitch (:data:`rolypoly.drum_map.OUTPUT_PITCHES`,
    the note rolypoly's MIDI output sends) at every :data:`LAYER_VELOCITIES`,
    rendered at ``sample_rate`` with reverb and chorus off. Loaded kits are
    kept per (file, rate, preset) for the process.

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
        layers, silent = [], []
        for c in range(N_CLASSES):
            shots = []
            for v in LAYER_VELOCITIES:
                x = _play_note(synth, write, OUTPUT_PITCHES[c], v, sample_rate, _max_length(c))
                shots.append((v, shape_one_shot(x, sample_rate, _max_length(c))))
            shots = [(v, x) for v, x in shots if len(x)]
            if not shots:
                silent.append(CLASS_NAMES[c])
            layers.append(shots)
        name = f"{path.name} drum kit {chosen} ({synth.sfpreset_name(sfid, 128, chosen).strip()})"
    finally:
        synth.delete()
    if len(silent) == N_CLASSES:
        raise KitError(f"{path}: the drum kit is silent")
    notes = []
    if silent:
        fill = synth_kit(sample_rate)
        for c in range(N_CLASSES):
            if not layers[c]:
                layers[c] = [(v, fill.layer(c, k).copy()) for k, v in enumerate(fill.velocities[c])]
        notes.append(f"{path.name}: no sound for {', '.join(silent)}; taken from the built-in synthesizer")
    kit = SampleKit(_normalised(layers), sample_rate, name=name, notes=notes, spec=str(path))
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
    """One note from silence: note-on, the gate, note-off, the ring; mono float64."""
    n = int(seconds * sample_rate) + 1
    gate = min(n, int(NOTE_GATE_S * sample_rate))
    frames = np.zeros((n, 2), np.float32)
    synth.noteon(9, pitch, velocity)
    write(synth, frames[:gate])
    synth.noteoff(9, pitch)
    write(synth, frames[gate:])
    # The next note starts from silence: cut whatever still rings.
    synth.cc(9, 120, 0)  # all sound off
    tail = np.zeros((512, 2), np.float32)
    write(synth, tail)
    return frames.mean(axis=1, dtype=np.float64)


# ----------------------------------------------------------------------------- sample folders

_LAYER_SUFFIX = re.compile(r"^(?P<name>.+?)(?:[_\- ]v?(?P<vel>\d{1,3}))?$", re.IGNORECASE)


def _class_of_name(stem: str) -> tuple[int, int | None] | None:
    """(class, layer velocity or None) of a sample file's name, or None when it names no drum.

    >>> _class_of_name("snare_40"), _class_of_name("42"), _class_of_name("Kick"), _class_of_name("cowbell")
    ((1, 40), (2, None), (0, None), None)
    """
    stem = stem.strip()
    if stem.isdigit():
        c = class_of_pitch(int(stem))
        return None if c is None else (c, None)
    m = _LAYER_SUFFIX.match(stem)
    candidates = [(m.group("name"), m.group("vel"))] if m and m.group("vel") else []
    candidates.append((stem, None))
    for name, vel in candidates:
        c = class_of_pitch(int(name)) if name.isdigit() else _class_index_or_none(name)
        if c is not None:
            v = None if vel is None else int(vel)
            if v is not None and not 1 <= v <= 127:
                return None
            return c, v
    return None


def _class_index_or_none(name: str) -> int | None:
    try:
        return class_index(name)
    except ValueError:
        return None


def folder_kit(folder, sample_rate: int = 48000) -> SampleKit:
    """A kit from a folder of samples named after the drums.

    A file is ``<drum>[_<velocity>].wav`` (or .flac/.aiff/.ogg): the drum is a
    class name or alias (``kick``, ``snare``, ``hihat``, ``open_hihat``,
    ``low_tom``, ``mid_tom``, ``high_tom``, ``crash``, ``ride``...) or a General MIDI
    pitch (``38``); the optional velocity makes it one layer of several (a
    file without one is the top layer, 127). Drums the folder lacks come
    from the built-in synthesizer (and :attr:`SampleKit.notes` says so).

    Raises
    ------
    KitError
        The folder has no usable sample (none named after a drum, or none readable).
    """
    from rolypoly.audio_io import load_audio

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    found: dict[int, dict[int, np.ndarray]] = {}
    problems, unnamed = [], []
    for p in files:
        which = _class_of_name(p.stem)
        if which is None:
            unnamed.append(p.name)
            continue
        c, v = which
        try:
            x = shape_one_shot(load_audio(p, sample_rate), sample_rate, _max_length(c))
        except RolypolyError as exc:
            problems.append(str(exc))
            continue
        if not len(x):
            problems.append(f"{p.name}: silent")
            continue
        found.setdefault(c, {})[127 if v is None else v] = x
    if not found:
        why = []
        if not files:
            why.append(f"no audio files ({', '.join(AUDIO_SUFFIXES)})")
        if unnamed:
            why.append(f"{len(unnamed)} file(s) not named after a drum (e.g. {unnamed[0]!r}; use kick.wav, "
                       f"snare_100.wav, 42.wav ...)")
        if problems:
            why.append(problems[0])
        raise KitError(f"{folder}: no usable drum samples: {'; '.join(why)}")
    notes = [f"{folder.name}: skipped {p}" for p in problems]
    missing = [CLASS_NAMES[c] for c in range(N_CLASSES) if c not in found]
    fill = synth_kit(sample_rate) if missing else None
    layers = []
    for c in range(N_CLASSES):
        if c in found:
            layers.append(sorted(found[c].items()))
        else:
            layers.append([(v, fill.layer(c, k).copy()) for k, v in enumerate(fill.velocities[c])])
    if missing:
        notes.append(f"{folder.name}: no samples for {', '.join(missing)}; taken from the built-in synthesizer")
    return SampleKit(_normalised(layers), sample_rate, name=f"samples from {folder}", notes=notes, spec=str(folder))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

