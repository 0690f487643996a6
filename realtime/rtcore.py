"""Building and loading rolypoly's real-time core (``rtcore.c``): the JACK process callback in C.

The callback runs on JACK's real-time thread. Written in Python it would
need the interpreter lock every cycle, and a thread of lower priority that
holds the lock (the engine, or anything else in the process) would make the
audio wait: on a busy machine, for milliseconds. So the callback is a small
C function (``rtcore.c``; what it does is described there) that shares one
struct and a few preallocated arrays with Python.

The C file is compiled once per version of its text, with the system's C
compiler (``cc -O2 -shared -fPIC``), into the cache folder
(:mod:`rolypoly.native`, which builds the onset detector's kernel the same
way); gcc is among the Debian packages ``make`` installs. :class:`RtState` mirrors the C struct field by field, and
:func:`load` checks the two agree in size.

>>> core = load()                      # doctest: +SKIP
>>> core.rt_state_size() == ctypes.sizeof(RtState)   # doctest: +SKIP
True
"""
from __future__ import annotations

import ctypes
from pathlib import Path

from rolypoly import native
from rolypoly.errors import DeviceError

SOURCE = Path(__file__).with_name("rtcore.c")

_c = ctypes
_vp, _i64, _f64 = _c.c_void_p, _c.c_int64, _c.c_double


class RtState(ctypes.Structure):
    """The C struct ``rt_state`` of ``rtcore.c``, field for field (see the comments there)."""

    _fields_ = [
        ("client", _vp), ("out_port", _vp * 2), ("midi_port", _vp), ("clock_port", _vp), ("in_port", _vp),
        ("clock_in_port", _vp),
        ("get_buffer", _vp), ("cycle_times", _vp), ("midi_clear", _vp), ("midi_write", _vp), ("midi_count", _vp),
        ("midi_get", _vp),
        ("clock_raw", _i64), ("rate", _i64),
        ("bank", _vp), ("starts", _vp), ("ends", _vp), ("layers", _i64), ("layer_of", _vp), ("gain_of", _vp),
        ("pitches", _vp), ("sound_of_pitch", _vp), ("choke_of_pitch", _vp), ("choke_frames", _i64),
        ("hits", _vp), ("hit_capacity", _i64), ("hits_written", _i64), ("audio_read", _i64), ("midi_read", _i64),
        ("audio_on", _i64), ("midi_on", _i64),
        ("voices", _i64), ("v_pos", _vp), ("v_start", _vp), ("v_end", _vp), ("v_age", _vp), ("v_gain", _vp),
        ("v_group", _vp), ("v_fade_end", _vp),
        ("started", _i64), ("stolen", _i64),
        ("origin", _f64), ("have_origin", _i64), ("offset_ns", _f64), ("have_offset", _i64), ("cycle_time", _f64),
        ("frame_s", _f64), ("cycle_frame", _i64), ("output_latency_s", _f64), ("input_latency_s", _f64),
        ("midi_latency_s", _f64), ("playback_latency", _i64), ("midi_playback_latency", _i64),
        ("capture_latency", _i64),
        ("gate_s", _f64), ("off_at", _f64 * 9), ("off_note", _i64 * 9),
        ("ticks", _vp), ("tick_count", _i64), ("next_tick", _i64), ("clock_start_at", _f64), ("clock_ready", _i64),
        ("clock_stop", _i64), ("clock_started", _i64), ("clock_stopped", _i64), ("ticks_sent", _i64),
        ("in_ring", _vp), ("drum_ring", _vp), ("ring_frames", _i64), ("ring_written", _i64), ("cycle_ring", _vp),
        ("cycle_capacity", _i64), ("cycles_written", _i64),
        ("clock_in_times", _vp), ("clock_in_bytes", _vp), ("clock_in_capacity", _i64), ("clock_in_written", _i64),
        ("midi_in_port", _vp), ("midi_in_times", _vp), ("midi_in_cycles", _vp), ("midi_in_bytes", _vp),
        ("midi_in_capacity", _i64), ("midi_in_written", _i64),
        ("cost_ns", _vp), ("sounding", _vp), ("cycle_frames", _vp), ("cycle_starts", _vp), ("cycle_woke", _vp),
        ("cost_capacity", _i64), ("cycles", _i64), ("late", _i64),
        ("late_max_s", _f64), ("midi_late", _i64), ("played", _i64), ("midi_sent", _i64), ("midi_errors", _i64),
        ("xrun_count", _i64), ("graph_changes", _i64), ("server_gone", _i64),
    ]


_loaded = None
_WHAT = "rolypoly's real-time core"


def library_path() -> Path:
    """Where the compiled core of this source text lives (in the cache folder)."""
    return native.library_path(SOURCE)


def build(target: Path | None = None) -> Path:
    """Compile ``rtcore.c`` into ``target`` (default :func:`library_path`); returns the path.

    Raises
    ------
    DeviceError
        No C compiler, or it failed (the message has its first error line).
    """
    return native.build(SOURCE, library_path() if target is None else Path(target), _WHAT, DeviceError)


def load() -> ctypes.CDLL:
    """The compiled core (built first if needed), once per process.

    Raises
    ------
    DeviceError
        It cannot be built or loaded, or its struct differs from :class:`RtState`.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    lib = native.load_library(SOURCE, _WHAT, DeviceError)
    lib.rt_state_size.restype = ctypes.c_size_t
    lib.rt_process.restype = ctypes.c_int
    lib.rt_process.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
    if lib.rt_state_size() != ctypes.sizeof(RtState):
        raise DeviceError(f"rolypoly's real-time core {lib._name} does not match this rolypoly "
                          f"(struct of {lib.rt_state_size()} bytes, expected {ctypes.sizeof(RtState)})")
    _loaded = lib
    return lib


def address(array) -> int:
    """Address of a numpy array's data (kept alive by the caller)."""
    return array.ctypes.data


def wire_kit(state: RtState, kit, arr, voices: int) -> None:
    """Point ``state`` at a kit's preloaded tables and give it ``voices`` voices.

    ``kit`` is a :class:`~rolypoly.kit.SampleKit`, or None (MIDI only: nothing to play);
    ``arr(name, array)`` keeps an array alive and returns its address.
    """
    import numpy as np

    from rolypoly.drum_map import N_CLASSES, OUTPUT_PITCHES

    if kit is not None:
        state.bank = arr("bank", kit.bank)
        state.starts, state.ends = arr("starts", kit.starts), arr("ends", kit.ends)
        state.layers = kit.starts.shape[1]
        state.layer_of, state.gain_of = arr("layer_of", kit.layer_of), arr("gain_of", kit.gain_of)
        state.sound_of_pitch = arr("sound_of_pitch", kit.sound_of_pitch)
        state.choke_of_pitch = arr("choke_of_pitch", kit.choke_of_pitch)
        state.choke_frames = kit.choke_frames
    else:  # MIDI only: no layers to play
        state.bank = arr("bank", np.zeros(1, np.float32))
        state.starts = state.ends = arr("starts", np.zeros((N_CLASSES, 1), np.int64))
        state.layers = 1
        state.layer_of = arr("layer_of", np.zeros((N_CLASSES, 128), np.int64))
        state.gain_of = arr("gain_of", np.zeros((N_CLASSES, 128), np.float32))
        state.sound_of_pitch = arr("sound_of_pitch", np.full(128, -1, np.int64))
        state.choke_of_pitch = arr("choke_of_pitch", np.zeros(128, np.int64))
        state.choke_frames = 1
    state.pitches = arr("pitches", np.array(OUTPUT_PITCHES, np.int64))
    state.voices = int(voices)
    for field, dtype in (("v_pos", np.int64), ("v_start", np.int64), ("v_end", np.int64),
                         ("v_age", np.int64), ("v_gain", np.float32), ("v_group", np.int64),
                         ("v_fade_end", np.int64)):
        setattr(state, field, arr(field, np.zeros(voices, dtype)))
