"""Building and loading rolypoly's real-time core (``rtcore.c``): the JACK process callback in C.

The callback runs on JACK's real-time thread. Written in Python it would
need the interpreter lock every cycle, and a thread of lower priority that
holds the lock (the engine, or anything else in the process) would make the
audio wait: on a busy machine, for milliseconds. So the callback is a small
C function (``rtcore.c``; what it does is described there) that shares one
struct and a few preallocated arrays with Python.

The C file is compiled once per version of its text, with the system's C
compiler (``cc -O2 -shared -fPIC``), into the cache folder
(:func:`rolypoly.paths.cache_dir`); gcc is among the Debian packages
``make`` installs. :class:`RtState` mirrors the C struct field by field, and
:func:`load` checks the two agree in size.

>>> core = load()                      # doctest: +SKIP
>>> core.rt_state_size() == ctypes.sizeof(RtState)   # doctest: +SKIP
True
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

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
        ("pitches", _vp),
        ("hits", _vp), ("hit_capacity", _i64), ("hits_written", _i64), ("audio_read", _i64), ("midi_read", _i64),
        ("audio_on", _i64), ("midi_on", _i64),
        ("voices", _i64), ("v_pos", _vp), ("v_start", _vp), ("v_end", _vp), ("v_age", _vp), ("v_gain", _vp),
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
        ("cost_ns", _vp), ("sounding", _vp), ("cost_capacity", _i64), ("cycles", _i64), ("late", _i64),
        ("late_max_s", _f64), ("midi_late", _i64), ("played", _i64), ("midi_sent", _i64), ("midi_errors", _i64),
    ]


_loaded = None


def library_path() -> Path:
    """Where the compiled core of this source text lives (in the cache folder)."""
    from rolypoly.paths import cache_dir

    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"rtcore-{digest}-{platform.machine()}.so"


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else cc or gcc on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc")


def build(target: Path | None = None) -> Path:
    """Compile ``rtcore.c`` into ``target`` (default :func:`library_path`); returns the path.

    Raises
    ------
    DeviceError
        No C compiler, or it failed (the message has its first error line).
    """
    target = library_path() if target is None else Path(target)
    cc = compiler()
    if cc is None:
        raise DeviceError("rolypoly's real-time core needs a C compiler: install gcc (apt-get install gcc)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        res = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).splitlines() if "error" in ln] or \
                (res.stderr or res.stdout).splitlines() or ["no message"]
            raise DeviceError(f"cannot build rolypoly's real-time core with {cc}: {lines[0].strip()}")
        os.replace(tmp, target)  # atomic: a parallel build never leaves half a library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


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
    path = library_path()
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writable = os.access(path.parent, os.W_OK)
        except OSError:
            writable = False
        if not writable:  # a read-only home: build beside the other temporary files
            path = Path(tempfile.gettempdir()) / path.name
        if not path.is_file():
            build(path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise DeviceError(f"cannot load rolypoly's real-time core {path}: {exc}") from None
    lib.rt_state_size.restype = ctypes.c_size_t
    lib.rt_process.restype = ctypes.c_int
    lib.rt_process.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
    if lib.rt_state_size() != ctypes.sizeof(RtState):
        raise DeviceError(f"rolypoly's real-time core {path} does not match this rolypoly "
                          f"(struct of {lib.rt_state_size()} bytes, expected {ctypes.sizeof(RtState)})")
    _loaded = lib
    return lib


def address(array) -> int:
    """Address of a numpy array's data (kept alive by the caller)."""
    return array.ctypes.data
