"""rolypoly as one JACK client: drums out (audio and MIDI) placed to the frame, the partner in.

One client (``rolypoly`` by default; made with the ``jack-client`` package,
JACK-Client for Python) owns every port a performance needs, all served by
one process callback, so partner input, drum audio, drum MIDI and MIDI clock
share one clock -- JACK's frame counter:

=================  ==================================================================
``out_1, out_2``   the sampled kit, each hit starting on its own frame inside the cycle
``midi_out``       the same hits as General MIDI notes on channel 10, each written
                   at its own frame offset (rtmidi would put them all at frame 0)
``clock_out``      MIDI clock, 24 ppqn, with start/stop/song position
                   (:mod:`rolypoly.realtime.midi_clock`)
``in``             the partner (:attr:`JackIO.source`, a
                   :class:`~rolypoly.realtime.sources.PartnerSource`)
``clock_in``       an incoming MIDI clock (:attr:`JackIO.clock_follower`)
``midi_in``        any MIDI, every message kept with the engine time of its frame
                   (:meth:`JackIO.read_midi_in`)
=================  ==================================================================

The process callback is C (:mod:`rolypoly.realtime.rtcore`): it runs on
JACK's real-time thread without the Python interpreter lock. It does what
:class:`~rolypoly.realtime.drum_out.DrumPlayer` does in Python (the two are
tested against each other): hits come in through a preallocated ring the
engine writes (:meth:`JackIO.schedule`), a fixed set of voices with
oldest-voice stealing mixes the kit's preloaded buffers. The partner input is
copied to a ring, with the engine time each cycle was played; the onset
detector runs on it when the engine polls (:class:`JackSource`), off the
real-time thread.

Engine time of a frame
----------------------
Each cycle the callback reads ``jack_get_cycle_times``: the frame counter at
the cycle's first frame and JACK's own (DLL-filtered) estimate of when that
cycle started and when the next one will, in ``jack_get_time()``
microseconds. ``jack_get_time`` reads CLOCK_MONOTONIC_RAW on Linux (jackd2
1.9.21; checked when the client opens), the engine's RealClock
CLOCK_MONOTONIC (``time.perf_counter``): their offset, which NTP slews by a
few ppm, is measured every 16 cycles from a tight pair of clock reads and
smoothed. So frame ``f`` of the cycle is at engine time ``cycle_start + f *
frame_s`` (``frame_s`` from JACK's estimate of the cycle's length: the
device's clock, not the nominal rate), and it *sounds* one playback latency
later (what JACK reports for the port's connections, plus the calibrated
extra of ``rolypoly calibrate``). An input frame was *played* one capture
latency before its frame's time.

Examples
--------
>>> io = JackIO(kit=load_kit(), midi=True)              # doctest: +SKIP
>>> io.connect_outputs()                                 # to system:playback_1/2   # doctest: +SKIP
>>> engine = Engine(score, performer, source, clock, drums=io)   # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time

import numpy as np

from rolypoly.drum_map import N_CLASSES
from rolypoly.errors import DeviceError
from rolypoly.realtime import jack as jackctl

from . import rtcore
from .drum_out import HIT, RING
from .sources import OnsetRing, PartnerSource

#: Callback costs remembered (cycles); at 64 frames and 48 kHz, about 5.8 minutes.
COST_RING = 1 << 18
#: Partner input (and drums played) kept for the engine to read, seconds.
INPUT_RING_S = 8.0
#: Columns of the cycle ring: ring index of the cycle's first frame, engine time it was
#: played, seconds per frame, JACK's frame counter and time (µs) at the cycle's start.
CYCLE_COLUMNS = 5
#: Incoming MIDI clock messages kept.
CLOCK_IN_RING = 4096
#: Messages of the MIDI input kept until read (a drum loop's notes for minutes).
MIDI_IN_RING = 1 << 16

_JACK_CAPTURE_LATENCY, _JACK_PLAYBACK_LATENCY = 0, 1


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


def _libjack():
    path = ctypes.util.find_library("jack")
    if path is None:
        raise DeviceError("libjack not found: install the Debian package jackd2")
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p
    lib.jack_get_time.argtypes, lib.jack_get_time.restype = [], ctypes.c_uint64
    lib.jack_port_get_latency_range.argtypes = [vp, ctypes.c_int, ctypes.POINTER(_LatencyRange)]
    lib.jack_port_get_latency_range.restype = None
    lib.jack_set_process_callback.argtypes = [vp, vp, vp]
    lib.jack_set_process_callback.restype = ctypes.c_int
    for fn in ("jack_set_xrun_callback", "jack_set_graph_order_callback"):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = [vp, vp, vp], ctypes.c_int
    lib.jack_on_shutdown.argtypes, lib.jack_on_shutdown.restype = [vp, vp, vp], None
    return lib


def _ptr(cffi_pointer) -> int:
    import jack

    return int(jack._ffi.cast("uintptr_t", cffi_pointer))


def _fn(lib, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


def jack_time_clock(lib) -> int:
    """Which system clock ``jack_get_time()`` reads: ``time.CLOCK_MONOTONIC_RAW`` or ``CLOCK_MONOTONIC``.

    Needs an open client (libjack's clock source is set up then).
    """
    best = None
    for _ in range(5):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        r = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        j = lib.jack_get_time() * 1000
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) // 2, r, j)
    _, mono, raw, jt = best
    return time.CLOCK_MONOTONIC_RAW if abs(jt - raw) < abs(jt - mono) else time.CLOCK_MONOTONIC


class JackIO:
    """One JACK client for a performance (see module docstring).

    Parameters
    ----------
    kit : rolypoly.kit.SampleKit, optional
        Drums as audio (ports ``out_1``, ``out_2``); must be at the server's rate.
    midi : bool
        Drums as frame-placed MIDI (port ``midi_out``).
    clock_out : bool
        MIDI clock out (port ``clock_out``).
    listen : bool
        A partner input (port ``in``): see :attr:`source`.
    clock_in : bool
        A MIDI clock input (port ``clock_in``): see :attr:`clock_follower`.
    midi_in : bool
        A MIDI input (port ``midi_in``) whose every message is kept with the
        engine time of the frame it came on: see :meth:`read_midi_in`.
    name : str
        JACK client name (JACK appends ``-01``... when it is taken).
    voices : int
        Voices sounding at once; the oldest is stolen.
    midi_latency_s : float
        MIDI notes leave this much earlier (an external synth's latency).
    gate_s : float
        Note-on to note-off of MIDI notes.
    output_latency_s, input_latency_s : float
        Latency beyond what JACK reports, from ``rolypoly calibrate``: the
        drums are placed this much earlier, onsets stamped this much earlier.
    detector : dict, optional
        :class:`~rolypoly.onsets.OnsetDetector` settings of the partner input.
    bleed : dict, optional
        A calibration (:func:`rolypoly.realtime.calibrate.calibrate_jack`, its
        ``response`` and ``response_lag_frames``) of the path from the drum
        output to the partner input: the drums' own sound is taken out of
        the input before listening (:class:`~rolypoly.realtime.bleed.BleedCanceller`).

    Raises
    ------
    DeviceError
        No JACK server, the JACK-Client package or the real-time core
        missing, or a kit at another rate.
    """

    def __init__(self, *, kit=None, midi: bool = False, clock_out: bool = False, listen: bool = False,
                 clock_in: bool = False, midi_in: bool = False, name: str = "rolypoly", voices: int = 16,
                 midi_latency_s: float = 0.0,
                 gate_s: float = 0.05, output_latency_s: float = 0.0, input_latency_s: float = 0.0,
                 detector: dict | None = None, bleed: dict | None = None, hit_capacity: int = RING):
        try:
            import jack
        except (ImportError, OSError) as exc:
            raise DeviceError(f"JACK-Client cannot be loaded ({str(exc).splitlines()[0]}): "
                              "pip install JACK-Client; apt-get install jackd2") from None
        core = rtcore.load()
        self._jack = jack
        try:
            self.client = jack.Client(name, no_start_server=True, servername=jackctl.server_name())
        except jack.JackError as exc:
            raise DeviceError(f"JACK server {jackctl.server_name()!r} is not running ({exc})") from None
        self._closed = False
        self.name = self.client.name
        self.rate = int(self.client.samplerate)
        self.period = int(self.client.blocksize)
        if kit is not None and kit.sample_rate != self.rate:
            self.client.close()
            raise DeviceError(f"the drum kit is at {kit.sample_rate} Hz but JACK runs at {self.rate} Hz "
                              "(load the kit at the server's rate)")
        self.kit = kit
        self._lib = lib = _libjack()
        self._client_ptr = _ptr(self.client._ptr)
        self.audio_ports = [self.client.outports.register(f"out_{i}") for i in (1, 2)] if kit is not None else []
        self.midi_port = self.client.midi_outports.register("midi_out") if midi else None
        self.clock_port = self.client.midi_outports.register("clock_out") if clock_out else None
        self.input_port = self.client.inports.register("in") if listen else None
        self.clock_in_port = self.client.midi_inports.register("clock_in") if clock_in else None
        self.midi_in_port = self.client.midi_inports.register("midi_in") if midi_in else None

        s = self.state = rtcore.RtState()
        keep = self._keep = {}

        def arr(key, a):
            keep[key] = a = np.ascontiguousarray(a)
            return rtcore.address(a)

        s.client = self._client_ptr
        for i, port in enumerate(self.audio_ports):
            s.out_port[i] = _ptr(port._ptr)
        for field, port in (("midi_port", self.midi_port), ("clock_port", self.clock_port),
                            ("in_port", self.input_port), ("clock_in_port", self.clock_in_port),
                            ("midi_in_port", self.midi_in_port)):
            setattr(s, field, _ptr(port._ptr) if port is not None else None)
        s.get_buffer, s.cycle_times = _fn(lib, "jack_port_get_buffer"), _fn(lib, "jack_get_cycle_times")
        s.midi_clear, s.midi_write = _fn(lib, "jack_midi_clear_buffer"), _fn(lib, "jack_midi_event_write")
        s.midi_count, s.midi_get = _fn(lib, "jack_midi_get_event_count"), _fn(lib, "jack_midi_event_get")
        s.clock_raw = int(jack_time_clock(lib) == time.CLOCK_MONOTONIC_RAW)
        s.rate = self.rate
        rtcore.wire_kit(s, kit, arr, voices)
        self.voice_count = int(voices)
        self._hits = np.zeros(hit_capacity, HIT)
        s.hits, s.hit_capacity = arr("hits", self._hits), hit_capacity
        s.audio_on, s.midi_on = int(kit is not None), int(midi)
        s.output_latency_s, s.input_latency_s = float(output_latency_s), float(input_latency_s)
        s.midi_latency_s, s.gate_s = float(midi_latency_s), float(gate_s)
        for c in range(N_CLASSES):
            s.off_at[c] = -1.0
        self._ticks = np.zeros(1)
        s.ticks = arr("ticks", self._ticks)
        frames = int(INPUT_RING_S * self.rate)
        self.in_ring, self.drum_ring = np.zeros(frames, np.float32), np.zeros(frames, np.float32)
        s.in_ring, s.drum_ring, s.ring_frames = arr("in", self.in_ring), arr("drum", self.drum_ring), frames
        self.cycle_ring = np.zeros((frames // max(self.period, 1) + 64, CYCLE_COLUMNS))
        s.cycle_ring, s.cycle_capacity = arr("cycle_ring", self.cycle_ring), len(self.cycle_ring)
        self.clock_in_times = np.zeros(CLOCK_IN_RING)
        self.clock_in_bytes = np.zeros((CLOCK_IN_RING, 4), np.uint8)
        s.clock_in_times, s.clock_in_bytes = arr("cit", self.clock_in_times), arr("cib", self.clock_in_bytes)
        s.clock_in_capacity = CLOCK_IN_RING
        size = MIDI_IN_RING if midi_in else 1
        self.midi_in_times, self.midi_in_cycles = np.zeros(size), np.zeros(size, np.int64)
        self.midi_in_bytes = np.zeros((size, 4), np.uint8)
        s.midi_in_times, s.midi_in_cycles = arr("mit", self.midi_in_times), arr("mic", self.midi_in_cycles)
        s.midi_in_bytes, s.midi_in_capacity = arr("mib", self.midi_in_bytes), size
        self.cost_ns = np.zeros(COST_RING, np.int64)
        self.voices_sounding = np.zeros(COST_RING, np.int16)
        self.cycle_frames = np.zeros(COST_RING, np.int64)
        s.cost_ns, s.sounding, s.cost_capacity = arr("cost", self.cost_ns), arr("sounding", self.voices_sounding), COST_RING
        s.cycle_frames = arr("cycle_frames", self.cycle_frames)
        self.cycle_starts, self.cycle_woke = np.full(COST_RING, np.nan), np.full(COST_RING, np.nan)
        s.cycle_starts, s.cycle_woke = arr("cycle_starts", self.cycle_starts), arr("cycle_woke", self.cycle_woke)

        self.hits_dropped = 0
        self._clock_in_read = self._midi_in_read = 0
        self.clock_follower = None
        if clock_in:
            from .midi_clock import ClockFollower

            self.clock_follower = ClockFollower(self.rate, source=f"MIDI clock into {self.clock_in_port.name}",
                                                pump=self.read_clock_in)
        self.source = JackSource(self, detector=detector, bleed=bleed) if listen else None

        self._core = core
        self._callback_address = ctypes.cast(core.rt_process, ctypes.c_void_p).value
        if lib.jack_set_process_callback(self._client_ptr, self._callback_address, ctypes.addressof(s)) != 0:
            self.client.close()
            raise DeviceError("JACK refused rolypoly's process callback")
        # JACK's notifications go to C (rtcore.c: rt_xrun, rt_graph_order, rt_shutdown), never to Python:
        # libjack's thread would need the interpreter lock, held meanwhile by a thread that opens another
        # JACK client (python-rtmidi: a MIDI partner, a foot switch) and waits for the server: a deadlock.
        address = lambda fn: ctypes.cast(fn, ctypes.c_void_p).value  # noqa: E731
        state = ctypes.addressof(s)
        lib.jack_set_xrun_callback(self._client_ptr, address(core.rt_xrun), state)
        lib.jack_set_graph_order_callback(self._client_ptr, address(core.rt_graph_order), state)
        lib.jack_on_shutdown(self._client_ptr, address(core.rt_shutdown), state)
        self._graph_seen = 0
        self.client.activate()

    # ------------------------------------------------------------------ wiring
    def port_names(self) -> dict:
        """Full JACK names of this client's ports, by role."""
        names = {"audio": [p.name for p in self.audio_ports]}
        for role, port in (("midi", self.midi_port), ("clock_out", self.clock_port), ("in", self.input_port),
                           ("clock_in", self.clock_in_port), ("midi_in", self.midi_in_port)):
            if port is not None:
                names[role] = port.name
        return names

    def _connect(self, src, dst) -> None:
        try:
            self.client.connect(src, dst)
        except self._jack.JackError as exc:
            name = lambda p: p if isinstance(p, str) else p.name  # noqa: E731
            raise DeviceError(f"cannot connect JACK port {name(src)} to {name(dst)}: {exc}") from None
        self._refresh_latency()

    def connect_outputs(self, targets=None) -> list[str]:
        """Connect the drum audio to ``targets`` (default: the first two physical playback ports).

        Returns the ports connected to; [] when there is nowhere to play.
        """
        if targets is None:
            targets = [p.name for p in self.client.get_ports(is_audio=True, is_input=True, is_physical=True)][:2]
        done = []
        for port, dst in zip(self.audio_ports, targets):  # mono playback: out_1 only
            self._connect(port, dst)
            done.append(dst)
        return done

    def connect_input(self, source_port: str) -> None:
        """Listen to ``source_port`` (e.g. ``system:capture_1``)."""
        if self.input_port is None:
            raise DeviceError("this JACK client has no partner input")
        self._connect(source_port, self.input_port)

    def connect_midi(self, target: str) -> None:
        """Send the drums' MIDI to ``target`` (a JACK MIDI input port)."""
        if self.midi_port is None:
            raise DeviceError("this JACK client has no MIDI output")
        self._connect(self.midi_port, target)

    # ------------------------------------------------------------------ engine interface
    def begin(self, clock, t0: float, score=None) -> None:
        """A take starts: map engine time (``clock``) and queue the MIDI clock of ``score``."""
        self.set_clock(clock)
        self._graph_changed()
        if self.clock_port is not None and score is not None:
            from .midi_clock import tick_times

            s = self.state
            s.clock_ready = 0  # the callback stops reading the ticks while they change
            self._ticks = tick_times(score, t0)
            s.ticks, s.tick_count, s.next_tick = rtcore.address(self._ticks), len(self._ticks), 0
            s.clock_start_at = t0 - 0.5 * (self._ticks[1] - self._ticks[0]) if len(self._ticks) > 1 else t0
            s.clock_started = s.clock_stopped = s.clock_stop = s.ticks_sent = 0
            s.clock_ready = 1
        if self.clock_follower is not None:
            self.clock_follower.watch(t0)

    def set_clock(self, clock) -> None:
        """Engine time from now on: ``clock`` (a RealClock)."""
        if clock.simulated:
            raise DeviceError("JACK output needs the real clock, not a simulated one")
        self.set_origin(-clock.to_engine(0.0))

    def set_origin(self, monotonic_s: float) -> None:
        """Engine time 0 is this CLOCK_MONOTONIC time (0: engine time is CLOCK_MONOTONIC)."""
        self.state.origin = float(monotonic_s)
        self.state.have_origin = 1

    def schedule(self, classes, velocities, at: float, notes=None) -> int:
        """Queue a row's hits to sound at engine time ``at``; returns how many were queued.

        Velocities <= 0 are no hit; others are clipped to 127. A full ring
        (the callback not running) drops the hit and counts it.
        """
        self._graph_changed()  # a connection made mid-take changes the latency the callback places hits by
        s, hits, cap = self.state, self._hits, len(self._hits)
        reads = [r for r, on in ((s.audio_read, s.audio_on), (s.midi_read, s.midi_on)) if on]
        oldest = min(reads) if reads else s.hits_written
        count = 0
        for i, (c, v) in enumerate(zip(classes, velocities)):
            v = int(round(float(v)))
            if v <= 0:
                continue
            w = s.hits_written
            if w - oldest >= cap:
                self.hits_dropped += 1
                continue
            slot = hits[w % cap]
            slot["time"], slot["cls"], slot["vel"] = at, int(c), min(v, 127)
            slot["note"] = -1 if notes is None else int(notes[i])
            s.hits_written = w + 1  # after the slot: the callback reads up to here
            count += 1
        return count

    def end(self) -> None:
        """The take is over: stop the MIDI clock (notes ring out)."""
        if self.clock_port is not None:
            self.state.clock_stop = 1

    def problems(self) -> list[str]:
        """One line per thing that went wrong, for the take's report."""
        s, out = self.state, []
        if self.shutdown:
            out.append(f"JACK server stopped during the take ({self.shutdown})")
        if self.xruns:
            out.append(f"JACK reported {self.xruns} xrun(s)")
        if s.late:
            out.append(f"{s.late} drum hit(s) reached the output too late to sound on time "
                       f"(at most {s.late_max_s * 1e3:.3f} ms)")
        if s.midi_late:
            out.append(f"{s.midi_late} MIDI note(s) left late")
        if self.hits_dropped:
            out.append(f"{self.hits_dropped} drum hit(s) dropped (hit ring full: is JACK running?)")
        if s.midi_errors:
            out.append(f"{s.midi_errors} MIDI event(s) did not fit in JACK's buffer")
        if self.clock_follower is not None:
            out.extend(self.clock_follower.problems(s.cycle_time))
        return out

    def stats(self) -> dict:
        """What the callback did: hits played, late, stolen voices..."""
        s = self.state
        return {"hits": int(s.played), "midi_notes": int(s.midi_sent), "late": int(s.late),
                "late_max_ms": round(s.late_max_s * 1e3, 3), "midi_late": int(s.midi_late),
                "voices": int(s.voices), "stolen": int(s.stolen), "dropped": int(self.hits_dropped),
                "clock_ticks_sent": int(s.ticks_sent), "midi_errors": int(s.midi_errors)}

    @property
    def cycles(self) -> int:
        return int(self.state.cycles)

    def callback_costs(self, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cost ns, voices sounding) of the last ``last`` cycles remembered, oldest first."""
        idx = self._last_cycles(last)
        return self.cost_ns[idx], self.voices_sounding[idx]

    def _last_cycles(self, last: int | None) -> np.ndarray:
        """Ring indices of the last ``last`` cycles remembered (all: None), oldest first."""
        n = min(self.cycles, COST_RING, self.cycles if last is None else last)
        return (self.cycles - n + np.arange(n)) % COST_RING

    def cycle_frames_run(self, last: int | None = None) -> np.ndarray:
        """JACK's frame counter at the start of each of the last ``last`` cycles this client ran, oldest first.

        A cycle JACK ran without this client (or the client without JACK's
        next cycle) shows as a step of more than one period.
        """
        return self.cycle_frames[self._last_cycles(last)]

    def cycle_log(self, first: int = 0) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """The cycles run from the ``first``-th on (as many as are still remembered).

        Returns
        -------
        first : int
            The number of the first cycle returned (later than asked when the
            ring no longer holds the ones asked for).
        frames : np.ndarray of int64
            JACK's frame counter at each cycle's start.
        starts, woke : np.ndarray of float
            Engine time of each cycle's first frame (JACK's estimate) and of
            the moment the callback began it; NaN before the origin was set.
        """
        now = self.cycles
        first = max(int(first), now - COST_RING)
        idx = np.arange(first, now) % COST_RING
        return first, self.cycle_frames[idx], self.cycle_starts[idx], self.cycle_woke[idx]

    # ------------------------------------------------------------------ notifications (JACK's non-RT thread)
    def _refresh_latency(self) -> int:
        lat, get = _LatencyRange(), self._lib.jack_port_get_latency_range
        for port, mode, field in ((self.audio_ports[0] if self.audio_ports else None, _JACK_PLAYBACK_LATENCY,
                                   "playback_latency"),
                                  (self.midi_port, _JACK_PLAYBACK_LATENCY, "midi_playback_latency"),
                                  (self.input_port, _JACK_CAPTURE_LATENCY, "capture_latency")):
            if port is not None:
                get(_ptr(port._ptr), mode, ctypes.byref(lat))
                setattr(self.state, field, int(lat.max))
        return 0

    @property
    def xruns(self) -> int:
        """Xruns JACK reported since the client opened."""
        return int(self.state.xrun_count)

    @property
    def shutdown(self) -> str | None:
        """Why the server went away (None while it runs)."""
        return "the server shut down" if self.state.server_gone else None

    def _graph_changed(self) -> None:
        """Read the ports' latencies again if JACK's graph changed since they were read (cheap otherwise)."""
        seen = int(self.state.graph_changes)
        if seen != self._graph_seen:
            self._graph_seen = seen
            self._refresh_latency()

    # ------------------------------------------------------------------ clock in
    def read_clock_in(self) -> None:
        """Hand the MIDI clock messages the callback received to :attr:`clock_follower`."""
        s, follower = self.state, self.clock_follower
        written, cap = s.clock_in_written, CLOCK_IN_RING
        k = max(self._clock_in_read, written - cap)
        while k < written:
            b = self.clock_in_bytes[k % cap]
            follower.message(bytes(b[1:1 + int(b[0])]), float(self.clock_in_times[k % cap]))
            k += 1
        self._clock_in_read = written

    # ------------------------------------------------------------------ MIDI in
    def read_midi_in(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The messages the MIDI input received since the last call.

        Returns
        -------
        times : np.ndarray of float
            Engine time of the frame each message came on.
        cycles : np.ndarray of int64
            The number of the cycle it came in (see :meth:`cycle_log`).
        messages : np.ndarray of uint8, shape (n, 4)
            Size in bytes, then up to three bytes (0 beyond the size).
        lost : int
            Messages overwritten before they were read (the ring holds
            :data:`MIDI_IN_RING`).
        """
        written, cap = int(self.state.midi_in_written), len(self.midi_in_times)
        k = max(self._midi_in_read, written - cap)
        lost = k - self._midi_in_read
        idx = np.arange(k, written) % cap
        self._midi_in_read = written
        return self.midi_in_times[idx], self.midi_in_cycles[idx], self.midi_in_bytes[idx], lost

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Deactivate and close the client (safe twice; the server may be gone)."""
        if self._closed:
            return
        self._closed = True
        if self.shutdown:
            return  # libjack frees a dead server's clients itself (see rolypoly.realtime.jack)
        try:
            self.client.deactivate()
            self.client.close()
        except Exception:  # the server went away meanwhile
            pass

    def __enter__(self) -> "JackIO":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JackSource(PartnerSource):
    """The partner input of a :class:`JackIO`, as a :class:`~rolypoly.realtime.sources.PartnerSource`.

    The callback copies every input frame to a ring, with the engine time at
    which each cycle's first frame was played; :meth:`poll` runs the same
    :class:`~rolypoly.onsets.OnsetDetector` as every source over the frames
    that arrived (after taking the drums' own sound out, with ``bleed``) and
    stamps each onset where it was played. An onset is available from the
    poll that found it.
    """

    def __init__(self, io: JackIO, *, detector: dict | None = None, bleed: dict | None = None):
        from rolypoly.onsets import OnsetDetector

        self.io = io
        self.sample_rate = io.rate
        self.name = f"JACK {io.input_port.name}"
        self.detector = OnsetDetector(sample_rate=self.sample_rate, max_block=8192, **(detector or {}))
        self.bleed = None
        if bleed:
            from .bleed import BleedCanceller

            self.bleed = BleedCanceller(self.sample_rate, lag=bleed["response_lag_frames"],
                                        taps=np.asarray(bleed["response"]))
        self._ring = OnsetRing()
        self._chunks: list[np.ndarray] = []
        self._read = 0        # ring frame index read up to
        self._base = 0        # ring frame index of the detector's sample 0
        self._listening = False
        self.lost = 0

    @property
    def xruns(self) -> int:
        return self.io.xruns

    def start(self, clock, t0: float) -> None:
        self.io.set_clock(clock)
        self.detector.reset()
        if self.bleed is not None:
            self.bleed.reset()
        self._chunks = []
        self._read = self._base = int(self.io.state.ring_written)
        self._listening = True

    def _time_of(self, frames: np.ndarray) -> np.ndarray:
        """Engine time at which ring frames (absolute indices) were played."""
        s, ring = self.io.state, self.io.cycle_ring
        n = min(int(s.cycles_written), len(ring))
        idx = (int(s.cycles_written) - n + np.arange(n)) % len(ring)
        first, at, frame_s = ring[idx, 0], ring[idx, 1], ring[idx, 2]
        k = np.clip(np.searchsorted(first, frames, side="right") - 1, 0, n - 1)
        return at[k] + (frames - first[k]) * frame_s[k]

    def poll(self, now: float) -> np.ndarray:
        """Run the detector over the frames that arrived since the last poll."""
        if not self._listening:
            return self._ring.pop_all()
        io = self.io
        io._graph_changed()
        written, cap = int(io.state.ring_written), len(io.in_ring)
        if written - self._read > cap:  # the engine did not poll for a whole ring
            self.lost += written - self._read - cap
            self._read = written - cap
        while self._read < written:
            a = self._read % cap
            n = min(written - self._read, cap - a, self.detector.max_block)
            x = io.in_ring[a:a + n]
            floor = None
            if self.bleed is not None:
                x = self.bleed.process(x, io.drum_ring[a:a + n])
                floor = self.bleed.residual_db      # what the canceller leaves of the drums: no onset
            found = self.detector.process(x, floor_db=floor)
            if len(found):
                at = self._time_of(self._base + found["sample"])
                for o, t in zip(found, at):
                    self._ring.push(float(t), max(now, float(t)), o["descriptor"], o["strength"])
            self._chunks.append(np.array(x, np.float32))
            self._read += n
        return self._ring.pop_all()

    def stop(self) -> None:
        self._listening = False

    def recording(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

