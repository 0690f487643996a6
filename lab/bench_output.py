"""Drum output timing on JACK: when hits sound (or reach JACK) against when they were meant to.

One take of a looped drum score (16th-note hi-hats with kick and snare at
120 bpm) is played by the real :class:`~rolypoly.realtime.engine.Engine` on a
:class:`~rolypoly.realtime.clock.RealClock`, with a partner (clicks from a file, or
the live JACK input), and each hit's *emitted* time is compared with its
*intended* time (notated time + ŷ, :attr:`~rolypoly.realtime.engine.TakeResult.intended`)::

    rolypoly bench output --drums audio|midi|rtmidi --json OUT [--minutes M] [--period N] [--rate HZ]

Three outputs can be measured (``--drums``):

* ``audio`` -- the sampled kit through rolypoly's JACK client
  (:class:`~rolypoly.realtime.jack_io.JackIO`, its C process callback). A
  capture client in a child process keeps every frame of the output with
  JACK's time of each cycle, and each row's one-shots are found in the
  capture by their known samples (:func:`find_hits`): *emitted* is the time
  of the frame the row starts on. The loop adds a ride and a crash so that
  all 16 voices sound; ``callback`` has the C callback's own cost per cycle.
* ``midi`` -- the same client's MIDI port, every note written at its own
  frame; *emitted* is the time of that frame on JACK's frame clock.
* ``rtmidi`` -- python-rtmidi's JACK MIDI (:class:`~rolypoly.realtime.midi_out.MidiOut`),
  every event at the start of the next cycle; *emitted* is that cycle's start.

Putting JACK's times on the engine clock
----------------------------------------
* The capture client is rolypoly's own JACK client
  (:class:`~rolypoly.realtime.jack_io.JackIO`) in a child process, with
  only an input: its process callback is C (``rtcore.c``), so it runs
  every cycle JACK gives it, never waiting for an interpreter. For MIDI it
  keeps every message with the time of the frame it came on (the cycle's
  start from ``jack_get_cycle_times`` plus the frame's place in the cycle:
  JACK's frame clock) and, per cycle, JACK's frame counter, the cycle's
  start and when its callback began; for audio every frame and the same
  per cycle. A frame-placed note is *emitted* at its frame's time; rtmidi
  writes every event at frame 0 of the first cycle after
  ``send_message``, so its notes are emitted at that cycle's start.
* ``jack_get_time()`` (jackd2 1.9.21 on Linux) reads CLOCK_MONOTONIC_RAW,
  not CLOCK_MONOTONIC: on this machine the two differ by ~225 ms, and
  CLOCK_MONOTONIC is slewed by NTP. RealClock uses ``time.perf_counter()``,
  which is CLOCK_MONOTONIC on Linux. rolypoly's C callback measures the
  offset between the two every 16 cycles and puts MIDI times on
  CLOCK_MONOTONIC itself (the capture's engine clock has its origin at 0);
  audio cycles keep JACK's µs, and the child samples CLOCK_MONOTONIC,
  ``jack_get_time()`` and CLOCK_MONOTONIC_RAW together every half second
  to map them (:func:`jack_us_to_monotonic`); both then go to engine time
  by RealClock's origin.
* Hits are matched to captured note-ons by pitch, velocity and time, not
  by order: a JACK server that starts a cycle late can drop the MIDI of
  that cycle, and the loop repeats the same notes.

Figures
-------
``emitted - intended`` is reported raw (|error| p50 / p99 / max) and with
its median taken out as ``constant_latency_ms`` (the JACK period makes
every hit wait for the next cycle: on average half a period). Drift is the
Theil-Sen slope of the signed error over the take (ms per minute: robust
to the few hits a skipped JACK cycle makes late, which are counted apart)
and the change of its median from the first minute to the last. The engine's
CPU load is its process CPU time over wall time, per thread from
``/proc/self/task/*/schedstat`` (which also tells how long each thread
waited for a CPU: other processes' load shows there), and the agent's
per-hit decision time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import platform
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from rolypoly.realtime import jack
from rolypoly.errors import DeviceError

__all__ = ["run", "bench_score", "timing_stats", "drift_stats", "MidiCapture"]

TARGET_P99_MS = 1.5               # rtmidi: the JACK period is in it
TARGET_P99_JACK_MIDI_MS = 0.05    # frame-placed JACK MIDI
TARGET_P99_AUDIO_MS = 0.05        # the sampled kit, around its constant latency
TARGET_CALLBACK_PCT = 10.0        # output callback p99, percent of the period
#: Drift target of the frame-placed outputs over the take.
DRIFT_TARGET_MS = 0.05
TARGET_PERIOD = 64
#: Drift counts as zero when the error moves less than this over the whole take.
DRIFT_TOLERANCE_MS = 0.1
#: The first and last stretch of the take compared for drift (shorter takes: a third each).
DRIFT_WINDOW_S = 60.0
#: How often the capture child samples JACK's clock against CLOCK_MONOTONIC.
CLOCK_SAMPLE_S = 0.5

NOTE_ON = 0x99  # channel 10
ROOT = Path(__file__).resolve().parents[1]

#: Columns of the MIDI capture's event table (its times are in ``event_times``).
EVENT_COLUMNS = ("cycle", "status", "data1", "data2")
#: Columns of the MIDI capture's cycle table.
CYCLE_COLUMNS = ("cycle", "frame", "start_s", "woke_s")


# ----------------------------------------------------------------------------- libjack (ctypes)

def _libjack() -> ctypes.CDLL:
    """The system libjack, for ``jack_get_time`` (valid once a client of the process is open)."""
    path = ctypes.util.find_library("jack")
    if path is None:
        raise DeviceError("libjack not found: install the Debian package jackd2")
    lib = ctypes.CDLL(path)
    lib.jack_get_time.restype, lib.jack_get_time.argtypes = ctypes.c_uint64, []
    return lib


def _clock_sample(lib, tries: int = 5) -> tuple[int, int, int]:
    """(CLOCK_MONOTONIC ns, jack_get_time() µs, CLOCK_MONOTONIC_RAW ns) read together.

    The tightest of a few tries, so a preemption between the reads does
    not skew the clock map.
    """
    best = None
    for _ in range(tries):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        j = lib.jack_get_time()
        r = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) // 2, int(j), r)
    return best[1], best[2], best[3]


class _Capture:
    """rolypoly's own JACK client with only an input, on CLOCK_MONOTONIC (engine time origin 0)."""

    def __init__(self, client_name: str, **ports):
        from rolypoly.realtime.jack_io import JackIO

        self.io = JackIO(name=client_name, **ports)
        self.io.set_origin(0.0)
        self._lib = _libjack()
        self.rate, self.period = self.io.rate, self.io.period

    def clock_sample(self, tries: int = 5) -> tuple[int, int, int]:
        return _clock_sample(self._lib, tries)

    def close(self) -> None:
        self.io.close()


class MidiCapture(_Capture):
    """A JACK MIDI input that keeps every message with the time of the frame it came on.

    rolypoly's own JACK client (:class:`~rolypoly.realtime.jack_io.JackIO`
    with only its ``midi_in`` port): a C process callback, so the capture
    runs every cycle JACK gives it (a Python callback there, which takes the
    interpreter lock each cycle, missed twenty times more cycles). Its
    engine clock is CLOCK_MONOTONIC (origin 0), the clock RealClock reads.
    :meth:`drain`, called every quarter second, moves what the callback kept
    into lists: every message, and per cycle JACK's frame counter, the
    cycle's start and when the callback began it -- which cycles it ran.

    Parameters
    ----------
    client_name : str
        JACK client name (must differ across servers: see :mod:`rolypoly.realtime.jack`).

    Attributes
    ----------
    port_name : str
        Full name of the input port to connect to.
    received : int
        Messages received so far.
    """

    def __init__(self, client_name: str):
        super().__init__(client_name, midi_in=True)
        self.port_name = self.io.midi_in_port.name
        self._events: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._cycles: list[np.ndarray] = []
        self._next_cycle = 0
        self.received = 0
        self.lost = 0           # messages or cycles overwritten before they were drained (never, at 4 a second)

    def drain(self) -> None:
        times, cycles, messages, lost = self.io.read_midi_in()
        first, frames, starts, woke = self.io.cycle_log(self._next_cycle)
        self.lost += lost + (first - self._next_cycle)
        self._events.append(np.column_stack([cycles, messages[:, 1:4]]).astype(np.int64))
        self._times.append(times.copy())
        self._cycles.append(np.column_stack([np.arange(first, first + len(frames)), frames, starts, woke]))
        self._next_cycle = first + len(frames)
        self.received += len(times)

    def result(self) -> dict:
        """``events`` (rows of :data:`EVENT_COLUMNS`), ``event_times`` (s, CLOCK_MONOTONIC), ``cycles``..."""
        self.drain()
        return {"events": np.concatenate(self._events).reshape(-1, len(EVENT_COLUMNS)),
                "event_times": np.concatenate(self._times),
                "cycles": np.concatenate(self._cycles).reshape(-1, len(CYCLE_COLUMNS)),
                "lost": self.lost, "callback_errors": 0}


class AudioCapture(_Capture):
    """A JACK audio input that keeps every frame it receives and JACK's time of each cycle.

    rolypoly's own JACK client (:class:`~rolypoly.realtime.jack_io.JackIO`, a
    C process callback: no interpreter lock on JACK's thread, so the capture
    itself never runs late) with only a partner input; its rings are drained
    into growing lists every quarter second. Per cycle it keeps JACK's frame
    counter and JACK's time (µs, ``jack_get_cycle_times``) at the cycle's
    start and the cycle's seconds per frame, so any captured frame can be put
    on JACK's clock exactly as a client in that cycle would.

    Parameters
    ----------
    client_name : str
    """

    def __init__(self, client_name: str):
        super().__init__(client_name, listen=True)
        self.port_name = self.io.input_port.name
        self._audio: list[np.ndarray] = []
        self._cycles: list[np.ndarray] = []
        self._read = self._cycles_read = 0
        self.lost = 0
        self.frames = 0

    def drain(self) -> None:
        io, s = self.io, self.io.state
        written, cycles = int(s.ring_written), int(s.cycles_written)
        cap, ccap = len(io.in_ring), len(io.cycle_ring)
        if written - self._read > cap or cycles - self._cycles_read > ccap:
            self.lost += 1
            self._read, self._cycles_read = max(self._read, written - cap), max(self._cycles_read, cycles - ccap)
        idx = np.arange(self._read, written) % cap
        self._audio.append(io.in_ring[idx].copy())
        self._cycles.append(io.cycle_ring[np.arange(self._cycles_read, cycles) % ccap][:, [3, 4, 2]].copy())
        self.frames += len(idx)
        self._read, self._cycles_read = written, cycles

    def result(self) -> dict:
        self.drain()
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        cycles = np.concatenate(self._cycles) if self._cycles else np.zeros((0, 3))
        return {"audio": audio, "cycles": cycles, "callback_errors": 0, "lost": self.lost}


def _audio_capture_child(client_name: str, out_path: str) -> None:
    """Body of the audio capture process: stdin takes ``count`` and ``stop`` (or EOF)."""
    cap = AudioCapture(client_name)
    print(f"port {cap.port_name} {cap.rate} {cap.period}", flush=True)
    clock = [cap.clock_sample()]
    heard = 0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], CLOCK_SAMPLE_S / 2)
        cap.drain()
        clock.append(cap.clock_sample())
        if not ready:
            continue
        command = sys.stdin.readline().strip()
        if command == "count":
            heard += sum(int(np.count_nonzero(a)) for a in cap._audio[-4:])  # frames heard not silent, lately
            print(heard, flush=True)
        elif command in ("stop", ""):
            break
    data = cap.result()
    cap.close()
    np.savez(out_path, **data, clock=np.array(clock, np.int64), rate=cap.rate, period=cap.period)
    print("saved", flush=True)


def _capture_child(client_name: str, out_path: str) -> None:
    """Body of the MIDI capture process: stdin takes ``count`` and ``stop`` (or EOF)."""
    cap = MidiCapture(client_name)
    print(f"port {cap.port_name} {cap.rate} {cap.period}", flush=True)
    clock = [cap.clock_sample()]
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], CLOCK_SAMPLE_S / 2)
        cap.drain()
        clock.append(cap.clock_sample())
        if not ready:
            continue
        command = sys.stdin.readline().strip()
        if command == "count":
            print(cap.received, flush=True)
        elif command in ("stop", ""):  # "": the parent is gone
            break
    time.sleep(0.05)  # the last cycles' messages
    data = cap.result()
    cap.close()
    np.savez(out_path, **data, clock=np.array(clock, np.int64), rate=cap.rate, period=cap.period)
    print("saved", flush=True)


_CHILD = "import sys; from rolypoly.lab.bench_output import _capture_child; _capture_child(sys.argv[1], sys.argv[2])"
_AUDIO_CHILD = ("import sys; from rolypoly.lab.bench_output import _audio_capture_child; "
                "_audio_capture_child(sys.argv[1], sys.argv[2])")


class CaptureProcess:
    """Runs a :class:`MidiCapture` (or an :class:`AudioCapture`) in a child process and collects what it recorded.

    Parameters
    ----------
    client_name : str
        JACK client name of the capture client.
    timeout_s : float
        How long to wait for the child to answer.
    audio : bool
        Capture audio instead of MIDI.

    Examples
    --------
    >>> cap = CaptureProcess("rolypoly-bench-capture")        # doctest: +SKIP
    >>> jack.connect("rolypoly:rolypoly", cap.port_name)      # doctest: +SKIP
    >>> data = cap.stop()                                      # doctest: +SKIP
    """

    def __init__(self, client_name: str, timeout_s: float = 15.0, audio: bool = False):
        self.timeout_s = timeout_s
        fd, self._out = tempfile.mkstemp(prefix="rolypoly-capture-", suffix=".npz")
        os.close(fd)
        self._err = tempfile.TemporaryFile("w+")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        child = [_AUDIO_CHILD if audio else _CHILD, client_name, self._out]
        self.proc = subprocess.Popen([sys.executable, "-c", *child],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, cwd=str(ROOT), env=env)
        words = self._answer().split()
        if len(words) != 4 or words[0] != "port":
            self.kill()
            raise DeviceError(f"the MIDI capture process did not start: {self._stderr_tail()}")
        self.port_name, self.rate, self.period = words[1], int(words[2]), int(words[3])

    def _answer(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        return self.proc.stdout.readline().strip() if ready else ""

    def _stderr_tail(self) -> str:
        self._err.seek(0)
        lines = [ln for ln in self._err.read().splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {self.proc.poll()}"

    def count(self) -> int:
        """Events captured so far."""
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if not answer.isdigit():
            raise DeviceError(f"the MIDI capture process stopped: {self._stderr_tail()}")
        return int(answer)

    def cpu_s(self) -> float:
        """CPU seconds the child used so far (0 once it exited)."""
        return _proc_cpu_s(self.proc.pid)

    def stop(self) -> dict:
        """End the capture; returns ``events`` (rows of :data:`EVENT_COLUMNS`), ``clock``, ``rate``..."""
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            done = self._answer()
        except (BrokenPipeError, ValueError):
            done = ""
        if done != "saved":
            self.kill()
            raise DeviceError(f"the MIDI capture process failed: {self._stderr_tail()}")
        self.proc.wait(timeout=self.timeout_s)
        with np.load(self._out) as f:
            data = {k: f[k] for k in f.files}
        self._cleanup()
        return data

    def kill(self) -> None:
        """End the child without its results (safe to call twice)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        try:
            os.unlink(self._out)
        except OSError:
            pass


# ----------------------------------------------------------------------------- clocks

def jack_us_to_monotonic(us: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """Seconds on CLOCK_MONOTONIC of JACK times (µs, CLOCK_MONOTONIC_RAW).

    ``clock`` rows are (CLOCK_MONOTONIC ns, jack µs, CLOCK_MONOTONIC_RAW ns)
    sampled together; the offset between the clocks is interpolated between
    samples (NTP may change the rate of CLOCK_MONOTONIC during a take) and
    held at the ends.

    >>> clock = np.array([[1_000_000_000, 800_000, 0], [2_000_000_000, 1_800_000, 0]])
    >>> jack_us_to_monotonic(np.array([1_300_000]), clock)
    array([1.5])
    """
    mono_s = clock[:, 0] / 1e9
    jack_s = clock[:, 1] / 1e6
    offset = mono_s - jack_s
    at = np.asarray(us, np.float64) / 1e6
    return at + np.interp(at, jack_s, offset)


def clock_report(clock: np.ndarray) -> dict:
    """Which system clock ``jack_get_time()`` reads, and how far CLOCK_MONOTONIC moved from it."""
    jack_minus_mono = clock[:, 1] / 1e3 - clock[:, 0] / 1e6   # ms
    jack_minus_raw = clock[:, 1] / 1e3 - clock[:, 2] / 1e6
    return {
        "jack_get_time_reads": ("CLOCK_MONOTONIC_RAW" if np.abs(jack_minus_raw).max() < 0.1
                                else "CLOCK_MONOTONIC" if np.abs(jack_minus_mono).max() < 0.1 else "unknown"),
        "jack_minus_monotonic_ms": round(float(jack_minus_mono[0]), 3),
        "jack_minus_monotonic_change_us": round(float((jack_minus_mono[-1] - jack_minus_mono[0]) * 1e3), 2),
        "jack_minus_monotonic_raw_max_abs_us": round(float(np.abs(jack_minus_raw).max() * 1e3), 1),
        "samples": int(len(clock)),
    }


# ----------------------------------------------------------------------------- the take

def bench_score(seconds: float, bpm: float = 120.0, dense: bool = False):
    """A drum loop lasting at least ``seconds``: 16th-note hats, kick and snare.

    The grid has 24 steps per bar, which holds 16th notes only in 2/4 (12
    steps a beat), so the loop is written as 2/4 bars: kick on 1 (and on the
    last 16th of beat 1 every other bar), snare on 2, accented 8th hats.
    ``dense`` adds a ride on every 16th and a crash on every bar: with a
    sampled kit the cymbals ring for seconds, so a 16-voice output has all
    its voices sounding (and steals the oldest; the hats, a choke group, cut
    each other and keep one voice).

    >>> score = bench_score(4.0)
    >>> len(score), float(score.bar_ms[0])
    (32, 1000.0)
    >>> int(bench_score(4.0, dense=True).hits.sum()) - int(score.hits.sum())
    36
    """
    from rolypoly.drum_map import class_index
    from rolypoly.grid import STEPS_PER_BAR
    from rolypoly.score import score_from_grid

    bar_s = 2 * 60.0 / bpm
    bars = max(1, math.ceil(seconds / bar_s))
    kick, snare, hat = class_index("kick"), class_index("snare"), class_index("closed_hihat")
    ride, crash = class_index("ride"), class_index("crash")
    hits = np.zeros((bars * STEPS_PER_BAR, 9), bool)
    vels = np.zeros(hits.shape, int)
    for b in range(bars):
        s = b * STEPS_PER_BAR
        for k in range(0, STEPS_PER_BAR, 3):  # 16ths
            hits[s + k, hat], vels[s + k, hat] = True, 88 if k % 6 == 0 else 62
        hits[s, kick], vels[s, kick] = True, 112
        hits[s + 12, snare], vels[s + 12, snare] = True, 104
        if b % 2:
            hits[s + 9, kick], vels[s + 9, kick] = True, 90
        if dense:
            for k in range(0, STEPS_PER_BAR, 3):  # 16ths: the hats choke each other, the ride rings on
                hits[s + k, ride], vels[s + k, ride] = True, 100 if k % 12 == 0 else 76
            hits[s, crash], vels[s, crash] = True, 96
    return score_from_grid(hits, vels, bpm=bpm, meter=(2, 4), name=f"bench loop {bpm:g} bpm")


def partner_clicks(score, sample_rate: int, late_s: float = 0.004, jitter_s: float = 0.002, seed: int = 0):
    """Clicks on every beat of ``score``, a little late and uneven, and their times."""
    from rolypoly.lab.partner_audio import clicks

    beats = score.onset_s[score.step % 12 == 0]
    rng = np.random.default_rng(seed)
    times = np.maximum(beats + late_s + rng.normal(0.0, jitter_s, len(beats)), 0.0)
    return clicks(times, sample_rate=sample_rate), times


class TimedPerformer:
    """Wraps a performer and times each ``step`` (ns), on whichever thread calls it."""

    def __init__(self, performer, capacity: int):
        self.performer = performer
        self.mean = performer.mean
        self.ns = np.zeros(capacity, np.int64)
        self.n = 0

    def prime(self, X) -> None:
        self.performer.prime(X)
        self.n = 0

    def step(self, row) -> float:
        start = time.perf_counter_ns()
        y = self.performer.step(row)
        if self.n < len(self.ns):
            self.ns[self.n] = time.perf_counter_ns() - start
            self.n += 1
        return y


class TimedDrums:
    """Wraps the drum output and keeps when each row was handed over (engine time) and when it is due.

    A hit handed to the C player after its frame's cycle began can only go
    out late: the engine's lead (``EngineSettings.budget_ms``) was eaten by
    a stall of the engine's thread, not by JACK.
    """

    def __init__(self, drums, clock, capacity: int):
        self._drums, self._clock = drums, clock
        self.handed = np.full((capacity, 2), np.nan)
        self.n = 0

    def schedule(self, classes, velocities, at: float, notes=None) -> int:
        if self.n < len(self.handed):
            self.handed[self.n] = (self._clock.now(), at)
            self.n += 1
        return self._drums.schedule(classes, velocities, at, notes)

    def __getattr__(self, name):
        return getattr(self._drums, name)


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> tuple[int, int, int]:
    """(busy, total, stolen) jiffies of all CPUs from /proc/stat.

    Stolen: time a hypervisor ran something else while this machine's
    virtual CPUs wanted to run (0 on real hardware): a JACK cycle due then
    starts late whatever its priority.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values), (values[7] if len(values) > 7 else 0)


class ThreadCpu:
    """Samples every thread's CPU and run-queue wait of this process while a take plays.

    Threads that end during the take (the agent's) keep their last sample,
    so sampling every ``interval_s`` loses at most that much of them.
    """

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.start_ns: dict[int, tuple[int, int]] = {}
        self.last_ns: dict[int, tuple[int, int]] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)

    @staticmethod
    def _read() -> dict[int, tuple[int, int]]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    run_ns, wait_ns = f.read().split()[:2]
            except (OSError, ValueError):
                continue
            out[int(tid)] = (int(run_ns), int(wait_ns))
        return out

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is not None:
                self.names.setdefault(t.native_id, t.name)
        for tid, v in self._read().items():
            self.start_ns.setdefault(tid, (0, 0))  # born during the take
            self.last_ns[tid] = v

    def start(self) -> None:
        self.start_ns = self._read()
        self.last_ns = dict(self.start_ns)
        self.proc_cpu = time.process_time()
        self.usage = _rusage()
        self.busy = _busy_jiffies()
        self.wall = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> dict:
        """Stop sampling; returns the CPU figures of the take."""
        self._sample()
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self.wall
        usage = _rusage()
        busy, total, stolen = _busy_jiffies()
        threads = []
        for tid, (run_ns, wait_ns) in self.last_ns.items():
            run0, wait0 = self.start_ns.get(tid, (0, 0))
            name = self.names.get(tid) or _comm(tid) or "native"
            if name == "MainThread":
                name = "MainThread (engine)"
            threads.append({"name": name, "tid": tid,
                            "cpu_pct": round(100 * (run_ns - run0) / 1e9 / wall, 2),
                            "runqueue_wait_pct": round(100 * (wait_ns - wait0) / 1e9 / wall, 2)})
        threads.sort(key=lambda t: -t["cpu_pct"])
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "process_pct_of_one_core": round(100 * (time.process_time() - self.proc_cpu) / wall, 2),
            "threads": [t for t in threads if t["cpu_pct"] > 0 or t["runqueue_wait_pct"] > 0],
            "voluntary_context_switches": usage[0] - self.usage[0],
            "involuntary_context_switches": usage[1] - self.usage[1],
            "machine_busy_pct_of_all_cores": round(100 * (busy - self.busy[0]) / max(total - self.busy[1], 1), 1),
            "hypervisor_steal_pct_of_all_cores": round(100 * (stolen - self.busy[2]) / max(total - self.busy[1], 1),
                                                       3),
            "cores": cores,
        }


def _rusage() -> tuple[int, int]:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw, r.ru_nivcsw


def _comm(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f"native ({f.read().strip()})"
    except OSError:
        return ""


# ----------------------------------------------------------------------------- figures

def timing_stats(err_ms: np.ndarray) -> dict:
    """|error| p50 / p99 / max and the signed range, in ms.

    >>> timing_stats(np.array([-1.0, 0.5, 2.0]))["max_abs_ms"]
    2.0
    """
    a = np.abs(err_ms)
    return {"p50_abs_ms": round(float(np.percentile(a, 50)), 3), "p99_abs_ms": round(float(np.percentile(a, 99)), 3),
            "max_abs_ms": round(float(a.max()), 3), "mean_ms": round(float(err_ms.mean()), 3),
            "min_ms": round(float(err_ms.min()), 3), "max_ms": round(float(err_ms.max()), 3), "n": int(len(a))}


def drift_stats(t_s: np.ndarray, err_ms: np.ndarray) -> dict:
    """Drift of a signed error over time: a robust slope and the first-vs-last change.

    Drift is the clock walking away from the score, slowly and for every hit.
    A hit that left late because JACK skipped cycles is not drift (it is counted
    in ``max_abs_ms`` and the late and missing hits), yet a least-squares line
    bends towards a few such hits. So the slope is Theil-Sen's (the median of
    the slopes between pairs of hits, on up to 1,500 hits spread over the take);
    the least-squares slope is kept beside it.

    >>> t = np.arange(600.0)
    >>> d = drift_stats(t, t / 60)   # 1 ms per minute
    >>> d["slope_ms_per_min"], d["window_s"]
    (1.0, 60.0)
    >>> late = t / 60 + np.where(t % 97 == 96, 20.0, 0.0)   # a few hits 20 ms late
    >>> drift_stats(t, late)["slope_ms_per_min"]
    1.0
    """
    minutes = (t_s - t_s[0]) / 60.0
    slope, intercept = np.polyfit(minutes, err_ms, 1)
    resid = err_ms - (slope * minutes + intercept)
    spread = np.sum((minutes - minutes.mean()) ** 2)
    stderr = float(np.sqrt(np.sum(resid ** 2) / max(len(t_s) - 2, 1) / spread)) if spread > 0 else math.nan
    pick = np.unique(np.linspace(0, len(t_s) - 1, min(len(t_s), 1500)).astype(int))
    dm = minutes[pick][None, :] - minutes[pick][:, None]
    de = err_ms[pick][None, :] - err_ms[pick][:, None]
    upper = dm > 1e-9
    robust = float(np.median(de[upper] / dm[upper])) if upper.any() else 0.0
    window = min(DRIFT_WINDOW_S, (t_s[-1] - t_s[0]) / 3)
    first = np.median(err_ms[t_s <= t_s[0] + window])
    last = np.median(err_ms[t_s >= t_s[-1] - window])
    return {"slope_ms_per_min": round(robust, 4), "method": "Theil-Sen (median of pairwise slopes)",
            "total_over_take_ms": round(robust * float(minutes[-1]), 4),
            "least_squares_slope_ms_per_min": round(float(slope), 4),
            "least_squares_stderr_ms_per_min": round(stderr, 4),
            "least_squares_total_over_take_ms": round(float(slope * minutes[-1]), 4),
            "first_window_median_ms": round(float(first), 4), "last_window_median_ms": round(float(last), 4),
            "change_first_to_last_ms": round(float(last - first), 4), "window_s": round(float(window), 2)}


def expected_notes(score, rows: int) -> list[tuple[int, int, int]]:
    """(row, pitch, velocity) of every note-on the first ``rows`` rows send, in order."""
    from rolypoly.score import played_notes

    notes = played_notes(score)
    notes = notes[(notes["row"] < rows) & (notes["velocity"] > 0)]
    return [(int(n["row"]), int(n["pitch"]), int(n["velocity"])) for n in notes]


def match_notes(expected, intended_s: np.ndarray, notes: np.ndarray, at_s: np.ndarray, window_s: float):
    """Pair each expected note-on with the captured one nearest its row's intended time.

    Matching by time, not by order: JACK drops events of a client that
    misses its cycle, and a drum loop repeats the same notes, so an order
    walk would pair a note with a later row's copy after one loss.

    Parameters
    ----------
    expected : list of (row, pitch, velocity)
    intended_s : intended time of each row
    notes : array (n, 2)
        Captured note-ons: pitch, velocity.
    at_s : array (n,)
        When each captured note-on reached JACK (same clock as ``intended_s``).
    window_s : float
        Largest |captured - intended| taken for a match (half the shortest
        gap between rows keeps neighbours apart).

    Returns
    -------
    index : np.ndarray
        Index into ``notes`` for each expected note, -1 when none matched.
    unmatched : int
        Captured note-ons no expected note took.

    Examples
    --------
    >>> idx, extra = match_notes([(0, 42, 80), (1, 42, 80)], np.array([0.0, 0.125]),
    ...                          np.array([[42, 80]]), np.array([0.126]), 0.06)
    >>> idx.tolist(), extra
    ([-1, 0], 0)
    """
    index = np.full(len(expected), -1)
    used = np.zeros(len(notes), bool)
    for k, (row, pitch, vel) in enumerate(expected):
        cand = np.flatnonzero((notes[:, 0] == pitch) & (notes[:, 1] == vel) & ~used
                              & (np.abs(at_s - intended_s[row]) <= window_s))
        if len(cand):
            best = cand[np.argmin(np.abs(at_s[cand] - intended_s[row]))]
            index[k], used[best] = best, True
    return index, int((~used).sum())


def row_times(expected, index: np.ndarray, at_s: np.ndarray, rows: int) -> np.ndarray:
    """Earliest matched arrival of each row's note-ons (NaN for a row with none)."""
    out = np.full(rows, np.inf)
    for (row, _, _), i in zip(expected, index):
        if i >= 0:
            out[row] = min(out[row], at_s[i])
    out[np.isinf(out)] = np.nan
    return out


def _stats_us(ns: np.ndarray) -> dict:
    us = ns / 1e3
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1), "n": int(len(us))}


# ----------------------------------------------------------------------------- running it

def _server(period: int, rate: int, portaudio: bool, realtime: bool | None = None) -> jack.JackServer:
    """The JACK server that runs (``$JACK_DEFAULT_SERVER`` or ``default``), else a private one."""
    if jack.server_running():
        return jack.JackServer(portaudio=portaudio).start()
    return jack.JackServer.private("rolypoly-bench", rate=rate, period=period, portaudio=portaudio,
                                   realtime=realtime)


def _source(kind: str, score, rate: int, period: int):
    from rolypoly.realtime.sources import FileSource, LiveSource

    if kind == "clicks":
        audio, _ = partner_clicks(score, rate)
        return FileSource(audio=audio, sample_rate=rate, block=period), "clicks on every beat (FileSource)"
    if kind == "live":
        return LiveSource("system", sample_rate=rate, block=period), "live JACK input 'system' (silent dummy capture)"
    raise ValueError(f"partner {kind!r}: use 'clicks' or 'live'")


def _sync(midi, capture: CaptureProcess, timeout_s: float = 5.0) -> int:
    """Wait until MIDI reaches the capture client; returns the events captured by then.

    JACK applies a connection a cycle or more after ``jack_connect`` returns.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        midi.all_notes_off()  # harmless: nothing sounds yet
        time.sleep(0.02)
        if capture.count():
            time.sleep(0.1)
            return capture.count()
    raise DeviceError("MIDI from rolypoly never reached the capture client over JACK")


def _port_of(client_name: str, port: str) -> str:
    """Full JACK name of ``port`` of the client ``client_name`` (JACK may have suffixed the client)."""
    names = [p for p in jack.ports(f"{client_name}") if p.endswith(f":{port}")]
    if not names:
        raise DeviceError(f"JACK port {client_name}:{port} not found")
    return min(names, key=len)


def _play(minutes: float, partner: str, server_period: int, rate: int, bpm: float, say, drums: str = "midi",
          kit=None, voices: int = 16) -> dict:
    """Play one take and capture it; returns everything the figures need.

    ``drums``: ``"audio"`` (the sampled kit on a JACK audio port, captured as
    audio), ``"midi"`` (frame-placed JACK MIDI) or ``"rtmidi"`` (python-rtmidi's
    JACK MIDI, every event at the start of the next cycle).
    """
    import torch
    from threadpoolctl import threadpool_limits

    from rolypoly.realtime.clock import RealClock, steady_interpreter
    from rolypoly.realtime.engine import Engine, EngineSettings
    from rolypoly.agents import Performer, make_agent

    score = bench_score(minutes * 60.0, bpm, dense=drums == "audio")
    source, source_desc = _source(partner, score, rate, server_period)
    torch.manual_seed(0)
    performer = TimedPerformer(Performer(make_agent("lstm")), len(score) + 16)
    name = f"rolypoly-bench-{os.getpid()}"
    midi = io = capture = None
    extra = {}
    try:
        if drums == "rtmidi":
            from rolypoly.realtime.midi_out import MidiOut

            midi = MidiOut(api="jack", client_name=name)
            capture = CaptureProcess(f"{name}-capture")
            jack.connect(_port_of(name, "rolypoly"), capture.port_name)
            before = _sync(midi, capture)
        else:
            from rolypoly.kit import load_kit
            from rolypoly.realtime.jack_io import JackIO

            loaded = load_kit(kit, rate) if drums == "audio" else None
            io = JackIO(kit=loaded, midi=drums == "midi", name=name, voices=voices)
            if drums == "audio":
                capture = CaptureProcess(f"{name}-capture", audio=True)
                jack.connect(io.audio_ports[0].name, capture.port_name)
                extra["kit"] = loaded
            else:
                capture = CaptureProcess(f"{name}-capture")
                jack.connect(io.midi_port.name, capture.port_name)
            before = _sync_jackio(io, capture, drums)
        clock = RealClock()
        drums_out = TimedDrums(io, clock, len(score) + 16) if io is not None else None
        engine = Engine(score, performer, source, clock, midi=midi, settings=EngineSettings(), drums=drums_out)
        say(f"playing {len(score)} rows ({score.onset_s[-1] / 60:.1f} min) through JACK ({drums})...")
        cpu = ThreadCpu()
        child_cpu0 = capture.cpu_s()
        cycles0 = io.cycles if io is not None else 0
        with threadpool_limits(1), steady_interpreter():  # as rolypoly play runs a take
            cpu.start()
            result = engine.run()
            cpu_figures = cpu.stop()
        cpu_figures["capture_child_pct_of_one_core"] = round(
            100 * (capture.cpu_s() - child_cpu0) / cpu_figures["wall_s"], 2)
        time.sleep(0.2 if drums != "audio" else 3.5)  # the last note-offs / the last one-shots ring out
        if io is not None:
            extra["callback"] = _callback_stats(io, io.cycles - cycles0)
            extra["player"] = io.stats()
            extra["voices"] = io.voice_count
            extra["player_frames"] = io.cycle_frames_run()
            extra["player_cycles"] = io.cycle_log(cycles0)
            extra["handed"] = drums_out.handed[:drums_out.n]
        data = capture.stop()
        capture = None
    finally:
        if capture is not None:
            capture.kill()
        if midi is not None:
            midi.close()
        if io is not None:
            io.close()
    return {"score": score, "result": result, "data": data, "skip": before, "cpu": cpu_figures,
            "t0": result.t0, "origin": -clock.to_engine(0.0), "decide_ns": performer.ns[:performer.n],
            "source": source_desc, "drums": drums, **extra}


def _sync_jackio(io, capture: CaptureProcess, drums: str, timeout_s: float = 5.0) -> int:
    """Wait until the client's output reaches the capture child (a connection takes a cycle or more).

    MIDI: a velocity-1 note is sent until one arrives (the events seen by then are
    skipped); audio: the capture hears the frames once the connection is there, and
    nothing is played before the take, so nothing needs skipping.
    """
    from rolypoly.realtime.clock import RealClock

    clock = RealClock()
    io.begin(clock, clock.now())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if drums == "audio":
            io.schedule([2], [1], clock.now() + 0.01)  # a ghost hat: proves the route, then silence
        else:
            io.schedule([0], [1], clock.now() + 0.01)
        time.sleep(0.05)
        if capture.count():
            time.sleep(0.6 if drums == "audio" else 0.1)
            return capture.count() if drums != "audio" else 0
    raise DeviceError(f"{drums} from rolypoly never reached the capture client over JACK")


def _callback_stats(io, cycles: int) -> dict:
    """The output callback's own cost over the last ``cycles`` cycles, against the period."""
    cost, sounding = io.callback_costs(cycles)
    us = cost / 1e3
    period_us = 1e6 * io.period / io.rate
    full = int(np.sum(sounding >= io.voice_count))
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1), "period_us": round(period_us, 1),
            "p99_pct_of_period": round(100 * float(np.percentile(us, 99)) / period_us, 2), "cycles": int(len(us)),
            "voices": io.voice_count,
            "voices_sounding_p50": int(np.percentile(sounding, 50)), "voices_sounding_max": int(sounding.max()),
            "cycles_with_all_voices_sounding_pct": round(100 * full / max(len(us), 1), 1),
            "xruns": int(io.xruns), "implementation": "C (rolypoly/realtime/rtcore.c), timed with CLOCK_MONOTONIC"}


# ----------------------------------------------------------------------------- audio: finding each hit

def signed_step(step):
    """A step of JACK's frame counter, signed (the counter wraps at 2**32); an int or an array.

    >>> signed_step(64 - 2 ** 32), signed_step(-64)
    (64, -64)
    """
    return ((step + 2 ** 31) % 2 ** 32) - 2 ** 31


def frame_steps(frames) -> np.ndarray:
    """Steps of JACK's frame counter from one cycle to the next, signed.

    >>> frame_steps([2 ** 32 - 64, 0, 64, 0]).tolist()
    [64, 64, -64]
    """
    return signed_step(np.diff(np.asarray(frames, np.int64)))


def put_back_late_callbacks(frames, period: int) -> tuple[np.ndarray, np.ndarray]:
    """JACK's frame counter of each cycle a callback ran, a late callback's reading put back.

    A callback that ran late reads the *next* cycle's frame counter, so that
    cycle's frame shows twice (a run of late callbacks, several times); the
    first of such a pair is put back one period before the one after it.
    Returns the frames and which were put back.

    >>> frames, moved = put_back_late_callbacks([0, 192, 192, 192, 256], 64)
    >>> frames.tolist(), moved.tolist()
    ([0, 64, 128, 192, 256], [False, True, True, False, False])
    """
    frames = [int(f) for f in frames]
    moved = np.zeros(len(frames), bool)
    for j in range(len(frames) - 2, -1, -1):
        if signed_step(frames[j + 1] - frames[j]) <= 0:
            frames[j] = frames[j + 1] - period
            moved[j] = True
    return np.array(frames, np.int64), moved


def _relabelled(data: dict) -> tuple[np.ndarray, int]:
    """The capture's cycles (JACK frame, JACK µs, seconds per frame), late callbacks put right.

    See :func:`put_back_late_callbacks`; a cycle put back gets its time one
    period before the next one's. Returns the cycles and how many were put back.
    """
    cycles = np.array(data["cycles"], np.float64)
    period = int(data["period"])
    if not len(cycles):
        return cycles, 0
    frames, moved = put_back_late_callbacks(cycles[:, 0], period)
    cycles[:, 0] = frames
    for j in np.flatnonzero(moved)[::-1]:
        cycles[j, 1] = cycles[j + 1, 1] - period * cycles[j + 1, 2] * 1e6
    return cycles, int(moved.sum())


def capture_times(data: dict) -> tuple[np.ndarray, dict]:
    """JACK's time (µs, float) of every captured frame, in the order the frames were captured.

    Frames stay in callback order: a voice of the mixer moves on one block
    per callback, so a cycle JACK skipped (an xrun: the frame counter jumps)
    delays what is still sounding, and the capture shows exactly that. Each
    block's time is its cycle's start plus its place in the cycle (late
    callbacks' cycles relabelled: :func:`_relabelled`).
    """
    cycles, relabelled = _relabelled(data)
    period = int(data["period"])
    steps = frame_steps(cycles[:, 0])
    times = cycles[:, 1:2] + np.arange(period)[None, :] * cycles[:, 2:3] * 1e6
    return times.reshape(-1), {"relabelled_cycles": relabelled,
                               "cycles_skipped_by_jack": int(np.sum(steps[steps > period] // period - 1))}


def on_player_cycles(data: dict, player_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The capture laid out on the cycles the player ran: ``(audio, heard, times_us, counts)``.

    The mixer's voices move on one block per cycle *the player* runs. When
    the capture client missed a cycle the player ran (JACK ran the graph
    without it), that block of the output never reached the capture; when
    it ran one the player did not, what it got is not the voices' next
    block. Either way what follows is shifted against the hits already
    found, and their tails, taken out at the wrong place, spoil the next
    rows. So each of the player's cycles (JACK's frame counter at its
    start, :meth:`~rolypoly.realtime.jack_io.JackIO.cycle_frames_run`) gets
    the capture's block of that cycle, or a block of silence marked not
    heard (``heard`` 0) when the capture has none; the capture's blocks of
    cycles the player did not run are left out. Outside the cycles the
    player remembers, the capture stays as it is.

    Examples
    --------
    >>> data = {"period": 2, "audio": np.arange(8, dtype=np.float32),
    ...         "cycles": [[0, 0.0, 1e-6], [2, 2.0, 1e-6], [6, 6.0, 1e-6], [8, 8.0, 1e-6]]}
    >>> audio, heard, times, counts = on_player_cycles(data, np.array([0, 2, 4, 8]))
    >>> audio.tolist(), heard.tolist(), times.tolist()
    ([0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 6.0, 7.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 9.0])
    >>> {k: counts[k] for k in ("capture_missed_player_cycles", "capture_cycles_player_did_not_run")}
    {'capture_missed_player_cycles': 1, 'capture_cycles_player_did_not_run': 1}
    >>> counts["seams"].tolist()  # where the capture is cut: the block it lacks, and where a block was left out
    [4, 6]
    """
    period = int(data["period"])
    cycles, _ = _relabelled(data)
    # The player's own late callbacks read the next cycle's frame counter too.
    player_frames, _ = put_back_late_callbacks(player_frames, period)
    audio = np.asarray(data["audio"], np.float32)
    blocks = min(len(cycles), len(audio) // period)
    cycles = cycles[:blocks]
    base = int(cycles[0, 0]) if blocks else 0
    # Frame counters relative to the capture's first cycle (JACK's counter wraps at 2**32).
    rel = lambda f: signed_step(np.asarray(f, np.int64) - base)  # noqa: E731
    cap = rel(cycles[:, 0].astype(np.int64))
    play = rel(player_frames)
    play = play[(play >= 0) & (play <= cap[-1])] if blocks else play[:0]
    if not len(play):
        times = cycles[:, 1:2] + np.arange(period)[None, :] * cycles[:, 2:3] * 1e6
        return audio[:blocks * period].copy(), np.ones(blocks * period), times.reshape(-1), {
            "capture_missed_player_cycles": 0, "capture_cycles_player_did_not_run": 0, "seams": np.zeros(0, int)}
    # Capture blocks before the player's first remembered cycle stay; from there on, the player's cycles.
    head = int(np.searchsorted(cap, play[0]))
    where = {int(f): j for j, f in enumerate(cap[head:], head)}
    order = np.concatenate([np.arange(head), [where.get(int(f), -1) for f in play]]).astype(np.int64)
    frames = np.concatenate([cap[:head], play])
    have = order >= 0
    out = np.zeros((len(order), period), np.float32)
    out[have] = audio[:blocks * period].reshape(blocks, period)[order[have]]
    heard = np.repeat(have.astype(np.float64), period)
    # Where a capture block was left out, the first frame after it is a seam too (heard, but next to a cut).
    cut = np.zeros(len(order), bool)
    kept = order[head:]
    after_drop = np.flatnonzero(np.diff(kept[kept >= 0]) > 1)
    cut[head + np.flatnonzero(kept >= 0)[after_drop + 1]] = True
    seams = np.flatnonzero(np.diff(np.r_[1.0, heard]) != 0)
    seams = np.union1d(seams, np.flatnonzero(cut) * period)
    # A block the capture lacks: its time from the nearest block before it that the capture has.
    start_us = np.empty(len(order))
    frame_us = np.empty(len(order))
    last = None
    for i, j in enumerate(order):
        if j >= 0:
            start_us[i], frame_us[i], last = cycles[j, 1], cycles[j, 2] * 1e6, i
        else:
            ref = last if last is not None else int(np.flatnonzero(have)[0])
            frame_us[i] = frame_us[ref] if last is not None else cycles[order[ref], 2] * 1e6
            start_us[i] = (cycles[order[ref], 1] + (frames[i] - frames[ref]) * frame_us[i])
    times = start_us[:, None] + np.arange(period)[None, :] * frame_us[:, None]
    counts = {"capture_missed_player_cycles": int((~have).sum()),
              "capture_cycles_player_did_not_run": int(blocks - head - have[head:].sum()),
              "seams": seams}
    return out.reshape(-1), heard, times.reshape(-1), counts


def _best_start(residual: np.ndarray, s: np.ndarray, lo: int, hi: int, heard: np.ndarray | None = None,
                min_heard: float = 0.5, tolerance: float = 1e-2):
    """Start within ``lo..hi`` where ``residual`` differs least from ``s``: (start, error / energy).

    With ``heard`` (1 where the capture has the output, 0 where it missed
    it) only what was heard counts: the error and the energy are summed
    over heard samples, and a start where less than ``min_heard`` of the
    one-shots' energy was heard cannot be judged. When no start that can be
    judged matches within ``tolerance`` and some could not be judged, the
    error is NaN: the row may have started where the capture did not hear.
    """
    m = len(s)
    lo, hi = max(0, lo), min(len(residual) - m, hi)
    if hi < lo:
        return None, np.inf
    seg = residual[lo:hi + m]
    energy = float(s @ s)
    if heard is None:
        sq = np.concatenate([[0.0], np.cumsum(seg * seg)])
        err = (sq[m:] - sq[:-m]) - 2 * np.correlate(seg, s, "valid") + energy
        k = int(np.argmin(err))
        return lo + k, (float(err[k] / energy) if energy > 0 else np.inf)
    w = heard[lo:hi + m]
    seg = seg * w
    sq = np.concatenate([[0.0], np.cumsum(seg * seg)])
    part = np.correlate(w, s * s, "valid")  # the one-shots' energy where the capture heard
    err = (sq[m:] - sq[:-m]) - 2 * np.correlate(seg, s, "valid") + part
    judged = part >= min_heard * energy
    if not judged.any():
        return lo, np.nan
    rel = np.where(judged, err / np.maximum(part, 1e-30), np.inf)
    k = int(np.argmin(rel))
    if rel[k] > tolerance and not judged.all():
        return lo + k, np.nan
    return lo + k, float(rel[k])


def find_hits(audio: np.ndarray, rows: list, expected: np.ndarray, period: int, voices: int,
              window: int = 480, head: int = 256, tolerance: float = 1e-2, late_window: int = 24000,
              groups: list | None = None, fade: int = 1, heard: np.ndarray | None = None,
              seams: np.ndarray | None = None):
    """Where each row's one-shots start in a captured output, to the frame.

    Rows are taken in the order they were played; a row's hits all start on
    the same frame, so they are looked for together (the sum of their
    one-shots). For each row, the capture minus the one-shots already found
    (the *residual*) is compared with the row's first ``head`` samples at
    every start within ``± window`` frames of its expected index (then up to
    ``late_window`` later, before the next row is due: a hit handed over too
    late starts at once); the start where they
    differ least is the row's, if what is left there is below ``tolerance``
    of the one-shots' energy (otherwise the row is missing). Then its
    one-shots are taken out of the residual (those of a row missed only
    narrowly too, so that one damaged row -- a cycle the capture lost --
    does not spoil the rows after it). A voice stolen for a
    later hit stops at the start of that hit's block, as in the mixer
    (:class:`~rolypoly.realtime.drum_out.Voices`: ``voices`` of them, the
    oldest stolen), so its tail is put back from there; and a voice of a
    choke group is faded out over ``fade`` frames from the start of a later
    hit of its group (a closed hi-hat cuts the one before it), as the mixer does.

    Parameters
    ----------
    audio : captured output (float32)
    rows : per row, the one-shots (float32) of its hits, as the mixer plays them (layer x gain), in play order
    expected : index where each row should start
    period : frames per block (the mixer frees and steals voices per block)
    groups : per row, the choke group of each one-shot (0: none; default none)
    fade : frames a choked voice fades over (:attr:`rolypoly.kit.SampleKit.choke_frames`)
    heard : 1 where the capture has the output, 0 where it missed it (:func:`on_player_cycles`);
        only heard samples are compared, and a row whose start was mostly not heard cannot be judged
    seams : indices where the capture was cut (:func:`on_player_cycles`): a row that does not match
        with a cut within its window or ``late_window`` before it cannot be judged either (which side
        of the cut it started on, and how the tails before it line up there, the capture cannot tell)

    Returns
    -------
    found : np.ndarray
        Start index of each row, -1 where missing, -2 where the capture did not hear enough of it to tell.
    quality : np.ndarray
        Residual energy at the match / one-shots' energy (0 = exact).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.standard_normal(300).astype(np.float32), rng.standard_normal(200).astype(np.float32)
    >>> audio = np.zeros(4000, np.float32); audio[1000:1300] += a; audio[1000:1200] += b; audio[1100:1400] += a
    >>> found, q = find_hits(audio, [[a, b], [a]], np.array([990, 1110]), 64, 16, window=50, head=64)
    >>> found.tolist(), bool(q.max() < 1e-6)
    ([1000, 1100], True)
    """
    residual = np.array(audio, np.float64)
    found = np.full(len(rows), -1)
    quality = np.full(len(rows), np.inf)
    active: list[list] = []  # [start, end, age, shot, group] per voice in use
    age = 0
    ramp = 1.0 - (fade - np.arange(fade)) / fade  # the part of a choked voice the mixer leaves out
    for r, (shots, at) in enumerate(zip(rows, expected)):
        m = min(head, max(len(x) for x in shots))
        s = np.zeros(m)
        for x in shots:
            s[:min(m, len(x))] += x[:m]
        best = None
        # On time, else late (handed over too late: started at once, but before the next row is due).
        following = int(expected[r + 1]) - window if r + 1 < len(expected) else int(at) + late_window
        unjudged = None
        for lo, hi in ((int(at) - window, int(at) + window), (int(at), min(int(at) + late_window, following))):
            k, q = _best_start(residual, s, lo, hi, heard, tolerance=tolerance)
            if k is not None and np.isnan(q):
                unjudged = k if unjudged is None else unjudged
                continue
            if k is not None and (best is None or q < best[1]):
                best = (k, q)
            if best is not None and best[1] <= tolerance:
                break
        if (best is None or best[1] > tolerance) and unjudged is None and seams is not None and len(seams):
            # A cut within its window, or within the half second before it (the tails of the rows before
            # it reach across the cut, and where they line up after it the capture cannot tell).
            k = int(np.searchsorted(seams, int(at) - window - late_window))
            if k < len(seams) and seams[k] <= int(at) + window + m:
                unjudged = int(at)
        if (best is None or best[1] > tolerance) and unjudged is not None:
            # Its place fell where the capture missed the output: not judged, and taken out at the expected
            # place (the player starts a hit on its frame), so that its tail does not spoil the rows after it.
            found[r], quality[r] = -2, np.nan
            best = (int(at), 0.0) if best is None or best[1] > 0.5 else best
        if best is None:
            continue
        start, q = best
        if found[r] != -2:
            quality[r] = max(q, 0.0)
            if q <= tolerance:
                found[r] = start
            elif q > 0.5:
                continue  # nothing like it there: leave the capture as it is
        # Found, or nearly (the capture lost a cycle in its tail): take it out either way, so that
        # one damaged row does not spoil the rows after it.
        block = start - start % period
        for k, shot in enumerate(shots):
            group = groups[r][k] if groups is not None else 0
            active = [v for v in active if v[1] > block]  # voices whose layer ended before the block are free
            for v in active if group else ():
                a, e, _, old, g = v
                if g != group or a >= start or e <= start:
                    continue
                # Choked: what it would have played from here is put back, but the fade's share.
                e = min(e, len(residual))
                cut = np.ones(e - start)
                cut[:min(fade, len(cut))] = ramp[:len(cut)]
                residual[start:e] += old[start - a:e - a] * cut
                v[1] = start + fade
            if len(active) >= voices:
                oldest = min(active, key=lambda v: v[2])
                a, e, _, old, _ = oldest
                e = min(e, len(residual))
                residual[block:e] += old[block - a:e - a]  # its tail stopped at the block's start
                active.remove(oldest)
            end = min(start + len(shot), len(residual))
            residual[start:end] -= shot[:end - start]
            active.append([start, start + len(shot), age, shot, group])
            age += 1
    return found, quality


def _audio_figures(take: dict, period: int, rate: int) -> dict:
    """The timing figures of a take captured as audio."""
    score, result, data, kit = take["score"], take["result"], take["data"], take["kit"]
    rows = len(result.intended)
    base = take["origin"] + take["t0"]
    intended_row = base + result.intended                       # CLOCK_MONOTONIC seconds
    expected = expected_notes(score, rows)
    times_us, repair = capture_times(data)
    audio, heard = data["audio"], None
    seams = None
    if take.get("player_frames") is not None:  # on the cycles the player ran (see on_player_cycles)
        audio, heard, times_us, laid = on_player_cycles(data, take["player_frames"])
        seams = laid.pop("seams")
        repair.update(laid)
    mono_s = jack_us_to_monotonic(times_us, data["clock"])
    from rolypoly.drum_map import class_of_pitch

    per_row: dict[int, list] = {}
    groups: dict[int, list] = {}
    for row, pitch, vel in expected:  # each note's own sound, as the mixer plays it (chokes included)
        per_row.setdefault(row, []).append(kit.sample(class_of_pitch(pitch), vel, pitch))
        groups.setdefault(row, []).append(int(kit.choke_of_pitch[pitch]))
    rows_of = np.array(sorted(per_row))
    at = np.searchsorted(mono_s, intended_row[rows_of])
    found, quality = find_hits(audio, [per_row[r] for r in rows_of], at, int(data["period"]),
                               take["voices"], groups=[groups[r] for r in rows_of], fade=kit.choke_frames,
                               heard=heard, seams=seams)
    ok = found >= 0
    unheard = found == -2
    emitted = mono_s[found[ok]]
    intended = intended_row[rows_of[ok]]
    err = (emitted - intended) * 1e3
    missing_hits = sum(len(per_row[r]) for r in rows_of[found == -1])
    unheard_hits = sum(len(per_row[r]) for r in rows_of[unheard])
    latency = float(np.median(err)) if len(err) else math.nan
    q = quality[ok]
    return {
        "notes": {"expected": len(expected), "missing": int(missing_hits),
                  "not_judged_at_a_capture_cut": int(unheard_hits), "rows": rows,
                  "rows_matched": int(ok.sum()),
                  "match": {"method": "least-squares start of each row's one-shots in the capture (see find_hits)",
                            "residual_p50": float(f"{np.percentile(q, 50):.3g}") if len(q) else None,
                            "residual_p99": float(f"{np.percentile(q, 99):.3g}") if len(q) else None}},
        "emitted_minus_intended": {
            "raw": timing_stats(err),
            "constant_latency_ms": round(latency, 4),
            "constant_latency_samples": round(latency * rate / 1e3, 2),
            "compensated": timing_stats(err - latency),
        },
        "drift": drift_stats(intended - intended[0], err),
        "clock_map": clock_report(data["clock"]),
        "capture": {"frames": int(len(data["audio"])), "cycles": int(len(data["cycles"])),
                    "ring_overruns": int(data["lost"]), **repair},
    }


def cycle_figures(data: dict) -> dict:
    """Skipped cycles, late callbacks and time lost of a capture's per-cycle record.

    ``data["cycles"]`` rows are (JACK frame counter, cycle start in µs, seconds
    per frame). A skipped cycle is a step of the frame counter of more than a
    period; time lost is how far the frames counted fall short of the time
    the cycles' starts moved on (the dummy backend restarts its schedule
    after a late cycle).

    >>> data = {"period": 64, "audio": np.zeros(64 * 4, np.float32),
    ...         "cycles": [[0, 0.0, 1 / 48000], [64, 1333.3, 1 / 48000], [192, 4000.0, 1 / 48000],
    ...                    [256, 5333.3, 1 / 48000]]}
    >>> cycle_figures(data)["skipped"]
    1
    """
    cycles, relabelled = _relabelled(data)
    period = int(data["period"])
    steps = frame_steps(cycles[:, 0])
    jumps = steps[steps > period]
    frames_s = (cycles[-1, 0] - cycles[0, 0]) * float(np.median(cycles[:, 2])) if len(cycles) > 1 else 0.0
    wall_s = (cycles[-1, 1] - cycles[0, 1]) / 1e6 if len(cycles) > 1 else 0.0
    return {"callbacks": int(len(cycles)), "skipped": int(np.sum(jumps // period - 1)),
            "skips": int(len(jumps)), "longest_skip_cycles": int(jumps.max() // period - 1) if len(jumps) else 0,
            "late_callbacks": int(relabelled),
            "time_lost_pct": round(100 * (wall_s - frames_s) / wall_s, 4) if wall_s > 0 else None}


def _midi_cycles(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """The MIDI capture's timed cycles, and the same in the audio capture's layout (frame, start µs, s/frame)."""
    table = np.asarray(data["cycles"], np.float64).reshape(-1, len(CYCLE_COLUMNS))
    table = table[np.isfinite(table[:, 2])]
    return table, np.column_stack([table[:, 1], table[:, 2] * 1e6, np.full(len(table), 1.0 / int(data["rate"]))])


def midi_capture_times(data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """When each captured MIDI message came, and the stretches the capture did not run.

    The capture keeps each message with its frame's time as its cycle's
    callback read it. A callback that ran late reads the *next* cycle's
    times (its cycle's frame counter shows twice): its messages are put back
    one period (:func:`_relabelled`). A step of the frame counter of more
    than a period is a stretch of cycles the capture did not run: what JACK
    carried then never reached it.

    Returns
    -------
    at_s : np.ndarray
        Time of each message's frame (s, CLOCK_MONOTONIC).
    woke_s : np.ndarray
        When the callback that took each message began (same clock).
    cycle_start_s : np.ndarray
        Start of each message's cycle (same clock).
    missed : np.ndarray, shape (n, 2)
        First and last frame's time of each stretch not run.

    Examples
    --------
    >>> data = {"period": 2, "rate": 1000, "events": np.array([[11, 0x99, 36, 90]]),
    ...         "event_times": np.array([0.009]),
    ...         "cycles": np.array([[10, 4, 0.004, 0.0041], [11, 8, 0.008, 0.0085], [12, 8, 0.008, 0.0081]])}
    >>> at, woke, start, missed = midi_capture_times(data)
    >>> at.round(4).tolist(), missed.round(4).tolist()   # cycle 11 ran late: it was the one at frame 6
    ([0.007], [])
    """
    period, rate = int(data["period"]), int(data["rate"])
    table, layout = _midi_cycles(data)
    cycles, _ = _relabelled({"cycles": layout, "period": period})
    shift = cycles[:, 1] / 1e6 - table[:, 2]
    events = np.asarray(data["events"], np.int64).reshape(-1, len(EVENT_COLUMNS))
    row = np.clip(np.searchsorted(table[:, 0], events[:, 0]), 0, max(len(table) - 1, 0))
    if len(table) and not np.all(table[row, 0] == events[:, 0]):
        raise ValueError("a captured MIDI message came in a cycle the capture has no record of")
    at = np.asarray(data["event_times"], np.float64) + (shift[row] if len(table) else 0.0)
    woke = table[row, 3] if len(table) else np.full(len(events), np.nan)
    start = cycles[row, 1] / 1e6 if len(table) else np.full(len(events), np.nan)
    steps = frame_steps(cycles[:, 0])
    j = np.flatnonzero(steps > period)
    missed = np.column_stack([cycles[j, 1] / 1e6 + period / rate, cycles[j + 1, 1] / 1e6 - 1.0 / rate])
    return at, woke, start, missed.reshape(-1, 2)


#: A step of JACK's frame clock against its frame counter larger than this is a jump (ms).
JUMP_MS = 0.05


def frame_clock_jumps(frames: np.ndarray, starts: np.ndarray, rate: int, above_ms: float = JUMP_MS) -> np.ndarray:
    """Cycles after which JACK's frame clock moved against its frame counter by more than ``above_ms``.

    From one cycle to the next, JACK's estimate of the cycle's start should
    move by the frames counted over the rate (to a few ppm). On the dummy
    backend of a busy virtual machine it restarts its schedule after a late
    cycle and the estimate jumps (by up to 150 ms here): a note placed on its
    frame just before such a jump is at another time by the estimate after it.
    Returns a boolean per cycle, True where the step to the next cycle jumped.

    >>> frame_clock_jumps(np.array([0, 64, 128, 192]), np.array([0.0, 64, 128 + 20, 192 + 20]) / 48000, 48000)
    array([False,  True, False, False])
    """
    return np.append(frame_clock_moves_ms(frames, starts, rate) > above_ms, False)


def frame_clock_moves_ms(frames: np.ndarray, starts: np.ndarray, rate: int) -> np.ndarray:
    """How far JACK's estimate of each next cycle's start moved against the frames counted (ms)."""
    return np.abs(np.diff(np.asarray(starts, np.float64)) - frame_steps(frames) / rate) * 1e3


def _player_cycles(take: dict) -> tuple[np.ndarray, np.ndarray]:
    """The player's timed cycles of the take: frame counter and start (engine time)."""
    _, frames, starts, _ = take["player_cycles"]
    ok = np.isfinite(starts)
    return np.asarray(frames)[ok], np.asarray(starts)[ok]


def late_note_causes(late_rows: np.ndarray, intended_s: np.ndarray, take: dict, period: int, rate: int) -> dict:
    """Why each late or missing row was: counts by cause (see the returned keys).

    * ``handed_over_late``: the engine handed the row to the C player less
      than a period before its time (the player writes a note in the cycle
      its frame falls in; one handed later goes out in the next cycle);
    * ``jack_cycle_late_or_skipped``: the player's own cycle log shows, within
      three cycles of the row's, a cycle JACK skipped or a callback that ran
      late (it read the next cycle's frame counter);
    * ``jack_frame_clock_jumped``: within three cycles of the row's, JACK's
      estimate of the cycles' start jumped against its frame counter
      (:func:`frame_clock_jumps`);
    * ``not_in_the_players_log``: the row fell outside the cycles the
      player's log holds (its ring keeps 5.8 minutes);
    * ``unexplained``: none of these.

    ``intended_s`` is on the same clock as the player's cycle starts plus
    ``take["origin"]`` (CLOCK_MONOTONIC).
    """
    if "handed" not in take or "player_cycles" not in take:
        return {}
    causes = {"handed_over_late": 0, "jack_cycle_late_or_skipped": 0, "jack_frame_clock_jumped": 0,
              "not_in_the_players_log": 0, "unexplained": 0}
    handed = np.asarray(take["handed"], np.float64)
    frames, starts = _player_cycles(take)
    starts = starts + take["origin"]
    steps = frame_steps(frames)
    skipped = np.zeros(len(frames), bool)
    skipped[1:] |= steps != period
    skipped[:-1] |= steps != period
    jumped = frame_clock_jumps(frames, starts, rate)
    for row in late_rows:
        ahead = handed[row, 1] - handed[row, 0] if row < len(handed) else np.inf
        j = int(np.searchsorted(starts, intended_s[row])) - 1
        near = slice(max(j - 3, 0), j + 4)
        if ahead < period / rate:
            causes["handed_over_late"] += 1
        elif not 0 <= j < len(frames) - 1:
            causes["not_in_the_players_log"] += 1
        elif skipped[near].any():
            causes["jack_cycle_late_or_skipped"] += 1
        elif jumped[near].any():
            causes["jack_frame_clock_jumped"] += 1
        else:
            causes["unexplained"] += 1
    return causes


def _jumps(take: dict, rate: int) -> dict | None:
    """How often JACK's frame clock jumped over the player's cycles, and by how much."""
    if "player_cycles" not in take:
        return None
    frames, starts = _player_cycles(take)
    moved_ms = frame_clock_moves_ms(frames, starts, rate)
    return {"cycles": int(len(frames)), "jumps_over_0_05_ms": int(np.sum(moved_ms > JUMP_MS)),
            "largest_ms": round(float(moved_ms.max()), 3) if len(moved_ms) else 0.0}


def _figures(take: dict, period: int, rate: int) -> dict:
    """The timing figures of a captured MIDI take (see module docstring)."""
    score, result, data = take["score"], take["result"], take["data"]
    period_ms = 1e3 * period / rate
    at_all, woke_all, start_all, spans = midi_capture_times(data)
    events = np.asarray(data["events"], np.int64)
    col = {c: i for i, c in enumerate(EVENT_COLUMNS)}
    keep = np.arange(len(events)) >= take["skip"]
    keep &= (events[:, col["status"]] == NOTE_ON) & (events[:, col["data2"]] > 0)
    on, at, woke, start = events[keep], at_all[keep], woke_all[keep], start_all[keep]
    rows = len(result.intended)
    base = take["origin"] + take["t0"]                      # engine score zero on CLOCK_MONOTONIC
    intended_all = base + result.intended
    # A frame-placed note is emitted on its own frame; rtmidi writes at frame 0 of the next
    # cycle, so its note's frame is that cycle's start: the same column serves both.
    expected = expected_notes(score, rows)
    window = float(np.min(score.duration_ms[:rows])) / 2000.0
    index, unmatched = match_notes(expected, intended_all, on[:, [col["data1"], col["data2"]]], at, window)
    # A note due while the capture's callback did not run never reached it: it cannot be checked.
    margin = 1e-3 * period_ms
    unheard = np.array([(index[k] < 0 and bool(np.any((intended_all[row] >= spans[:, 0] - margin)
                                                      & (intended_all[row] <= spans[:, 1] + margin))))
                        for k, (row, _, _) in enumerate(expected)], bool)
    per_row = {c: row_times(expected, index, t, rows) for c, t in (("at", at), ("woke", woke), ("start", start))}
    ok = np.isfinite(per_row["at"])
    intended = intended_all[ok]
    emitted = per_row["at"][ok]
    err = (emitted - intended) * 1e3
    sent_err = (base + result.played[ok] - intended) * 1e3   # clock read just before the hit was handed over
    latency = float(np.median(err))
    cycles = cycle_figures({"cycles": _midi_cycles(data)[1], "period": period})
    # Rows off their frame by more than the target, or missing: why (the player's and the engine's records).
    off_rows = np.flatnonzero(ok)[np.abs(err - latency) > TARGET_P99_JACK_MIDI_MS]
    lost_rows = sorted({row for k, (row, _, _) in enumerate(expected) if index[k] < 0 and not unheard[k]})
    handed = np.asarray(take.get("handed", np.zeros((0, 2))), np.float64)
    ahead_ms = (handed[:, 1] - handed[:, 0]) * 1e3 if len(handed) else np.zeros(0)
    return {
        "notes": {"expected": len(expected), "received": int(len(on)),
                  "missing": int((index < 0).sum() - unheard.sum()),
                  "due_while_the_capture_did_not_run": int(unheard.sum()),
                  "capture_cycles_not_run": cycles["skipped"],
                  "unmatched_received": unmatched, "rows": rows, "rows_matched": int(ok.sum()),
                  "match_window_ms": round(window * 1e3, 1)},
        "emitted_minus_intended": {
            "raw": timing_stats(err),
            "constant_latency_ms": round(latency, 3),
            "compensated": timing_stats(err - latency),
        },
        "drift": drift_stats(intended - intended[0], err),
        "stages_minus_intended": {
            "engine_send": timing_stats(sent_err),
            "jack_frame_clock": timing_stats(err),
            "capture_callback": timing_stats((per_row["woke"][ok] - intended) * 1e3),
        },
        "jack_cycle": {
            "period_frames": period, "rate": rate, "period_ms": round(period_ms, 4),
            "emitted_minus_engine_send": timing_stats(err - sent_err),
            "callback_began_minus_cycle_start": timing_stats((per_row["woke"][ok] - per_row["start"][ok]) * 1e3),
            "capture_cycles": cycles,
            "time_lost_to_late_cycles_pct": cycles.get("time_lost_pct"),
            "hits_later_than_one_period": int(np.sum(err > period_ms)),
            "player_frame_clock_jumps": _jumps(take, rate),
        },
        "off_by_more_than_target": {
            "rows": int(len(off_rows)),
            "why": late_note_causes(off_rows, intended_all, take, period, rate),
            "missing_why": late_note_causes(np.array(lost_rows, int), intended_all, take, period, rate),
            "handed_over_ahead_ms": ({"p1": round(float(np.percentile(ahead_ms, 1)), 3),
                                      "min": round(float(ahead_ms.min()), 3),
                                      "p50": round(float(np.median(ahead_ms)), 3)} if len(ahead_ms) else None),
        },
        "clock_map": clock_report(data["clock"]),
        "capture_lost": int(data["lost"]),
    }


def run(json_path=None, minutes: float = 5.0, period: int = 64, rate: int = 48000, *,
        partner: str = "clicks", bpm: float = 120.0, verbose: bool = False, drums: str = "midi",
        kit=None, voices: int = 16, realtime: bool | None = None) -> dict:
    """Play a take of ``minutes`` on JACK and measure when its hits reached JACK.

    Parameters
    ----------
    json_path : str or Path, optional
        Also write the JSON report here.
    minutes : float
        Length of the take (0.1 is a quick check).
    period, rate : int
        Frames per cycle and sample rate of the JACK server started when
        none runs (a running server is used as it is: see ``server``).
    partner : {"clicks", "live"}
        A FileSource of clicks on the beats, or the live JACK input
        (``system``, silent on the dummy backend: its audio callback runs).
    bpm : float
        Tempo of the loop (16th-note hats).
    verbose : bool
        Progress on stderr.
    drums : {"audio", "midi", "rtmidi"}
        The sampled kit as audio (found in an audio capture by each one-shot's
        known samples), frame-placed JACK MIDI, or python-rtmidi's JACK MIDI.
    kit : the drum kit for ``"audio"`` (default: :func:`rolypoly.kit.load_kit`'s)
    voices : voices of the audio output
    realtime : start jackd with real-time scheduling (None: where allowed)

    Returns
    -------
    dict
        The report (also written to ``json_path``).

    Raises
    ------
    DeviceError
        JACK cannot run, or the drums do not reach the capture client.
    """
    if drums not in ("audio", "midi", "rtmidi"):
        raise DeviceError(f"--drums {drums!r}: use audio, midi or rtmidi")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    load_before = os.getloadavg()
    server = _server(period, rate, portaudio=partner == "live", realtime=realtime)
    try:
        watch = jack.JackWatch(f"rolypoly-bench-watch-{os.getpid()}")
        actual_period, actual_rate = watch.period, watch.rate
        watch.close()
        jackd_cpu0 = _proc_cpu_s(server.proc.pid) if server.owned else None
        take = _play(minutes, partner, actual_period, actual_rate, bpm, say, drums=drums, kit=kit, voices=voices)
        if jackd_cpu0 is not None:
            take["cpu"]["jackd_pct_of_one_core"] = round(
                100 * (_proc_cpu_s(server.proc.pid) - jackd_cpu0) / take["cpu"]["wall_s"], 2)
        server_info = {"name": server.name, "started_here": server.owned, "period": actual_period,
                       "rate": actual_rate, "driver": server.driver if server.owned else "not known (reused)",
                       "realtime": server.realtime if server.owned else "not known (reused)"}
        if server.owned:
            server_info["xruns_in_log"] = server.log().count("XRun")
    finally:
        server.stop()
    report = _report(take, server_info, minutes, partner, bpm, load_before)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report


_MIDI_CAPTURE = (
    "The capture is rolypoly's own JACK client (its C process callback, in a child process) with a MIDI input "
    "only: it keeps every message with its frame's time (jack_get_cycle_times' start of the cycle plus the "
    "frame's place in it: JACK's frame clock) and, per cycle, JACK's frame counter, the cycle's start and when "
    "its callback began (stages_minus_intended.capture_callback). jack_get_time reads CLOCK_MONOTONIC_RAW "
    "(clock_map), RealClock CLOCK_MONOTONIC: the callback measures their offset every 16 cycles and keeps times "
    "on CLOCK_MONOTONIC, put on the engine clock by RealClock's origin. A callback that ran late reads the next "
    "cycle's times: its messages are put back one period. Intended = engine score zero + TakeResult.intended "
    "(notated + yhat). Hits are matched to note-ons by pitch, velocity and time (+- half the shortest row gap); "
    "a note due while the capture's callback did not run (a step of its frame counter of more than a period) "
    "never reached it and is counted in due_while_the_capture_did_not_run, not in missing. constant_latency_ms "
    "is the median of emitted - intended; 'compensated' figures are |error - constant_latency_ms|."
)
METHOD = (
    "Emitted = start of the JACK cycle that carried the hit's first note-on: rtmidi writes each event at frame 0 "
    "of the first cycle after send_message. " + _MIDI_CAPTURE
)
METHOD_MIDI = (
    "Emitted = the time of the frame each note-on was written on (rolypoly's JACK client writes it at its own "
    "frame offset in the cycle). " + _MIDI_CAPTURE
)
METHOD_AUDIO = (
    "Emitted = the frame where each row's one-shots start in a capture of rolypoly's audio output: a JACK client "
    "in a child process (rolypoly's C callback, input only) keeps every frame and, per cycle, "
    "jack_get_cycle_times (frame counter, JACK's estimate of the cycle's start and its length). Each row's "
    "one-shots (kit layer x gain, as the mixer plays them) are searched +-10 ms around their expected frame by "
    "least squares over their first 256 samples in the capture minus the one-shots already found (a stolen "
    "voice's tail put back from its block; then up to 0.5 s later, before the next row, for a hit handed over "
    "late), and must match to 1e-2 of their energy (-20 dB; at any other start they differ by about their "
    "whole energy), else the row's hits are missing. The capture is first laid on the cycles the player ran "
    "(rolypoly's callback keeps JACK's frame counter of each cycle it ran): a cycle the capture client missed "
    "becomes a block marked not heard and only heard samples are compared; a cycle only the capture ran is left "
    "out. A row less than half heard, or one that does not match with such a cut in its window or in the half "
    "second before it (the tails before it line up across the cut as the capture cannot tell), is counted in "
    "not_judged_at_a_capture_cut, not in missing (the player's own count of hits started is in player). "
    "The frame's time is its cycle's start plus "
    "its place in the cycle on JACK's clock (CLOCK_MONOTONIC_RAW, mapped to CLOCK_MONOTONIC by clock samples "
    "taken every 0.5 s, then to the engine clock by RealClock's origin). Intended = engine score zero + "
    "TakeResult.intended. constant_latency_ms is the median of emitted - intended, 'compensated' figures are "
    "|error - constant_latency_ms|. callback: the output's JACK process callback timed from entry to exit "
    "(time.perf_counter_ns) every cycle of the take."
)


def _report(take: dict, server: dict, minutes: float, partner: str, bpm: float, load_before) -> dict:
    drums = take["drums"]
    if drums == "audio":
        figures = _audio_figures(take, server["period"], server["rate"])
        method, target_p99 = METHOD_AUDIO, TARGET_P99_AUDIO_MS
        what = "the sampled kit on a JACK audio port through the real Engine: |emitted - intended| per hit, drift, CPU"
    else:
        figures = _figures(take, server["period"], server["rate"])
        method, target_p99 = (METHOD, TARGET_P99_MS) if drums == "rtmidi" else (METHOD_MIDI, TARGET_P99_JACK_MIDI_MS)
        what = "drum hits through the real Engine on RealClock to JACK MIDI: |emitted - intended|, drift, CPU"
    result = take["result"]
    raw = figures["emitted_minus_intended"]["raw"]
    comp = figures["emitted_minus_intended"]["compensated"]
    drift = figures["drift"]
    drift_tolerance = DRIFT_TOLERANCE_MS if drums == "rtmidi" else DRIFT_TARGET_MS
    drift_met = (abs(drift["total_over_take_ms"]) <= drift_tolerance
                 and abs(drift["change_first_to_last_ms"]) <= drift_tolerance)
    decide = take["decide_ns"]
    targets = {
        "p99_abs_ms": target_p99, "at_period": TARGET_PERIOD, "drift_tolerance_ms": drift_tolerance,
        "period_matches": server["period"] == TARGET_PERIOD,
        "raw_p99_met": raw["p99_abs_ms"] <= target_p99,
        "compensated_p99_met": comp["p99_abs_ms"] <= target_p99,
        "drift_met": bool(drift_met),
        "no_hit_missing": figures["notes"]["missing"] == 0,
    }
    extra = {}
    if "callback" in take:
        extra["callback"] = take["callback"]
        extra["player"] = take["player"]
        if drums == "audio":
            targets["callback_p99_pct_of_period"] = TARGET_CALLBACK_PCT
            targets["callback_met"] = take["callback"]["p99_pct_of_period"] <= TARGET_CALLBACK_PCT
    return {
        "what": what,
        "method": method,
        "server": server,
        "take": {"minutes": minutes, "rows": len(result.intended), "bpm": bpm, "drums": drums,
                 "score": take["score"].name + " (16th hats, kick, snare" + (
                     ", ride 16ths, crash every bar" if drums == "audio" else "") + "; 2/4 bars)",
                 "kit": take["kit"].describe() if "kit" in take else None,
                 "partner": take["source"], "agent": "lstm, random init (shipped size), numpy Performer",
                 "misses": int(result.misses), "xruns": int(result.xruns), "problems": list(result.problems),
                 "onsets_heard": int(len(result.onsets))},
        **figures,
        **extra,
        "cpu": {**take["cpu"], "decision_step": _stats_us(decide) if len(decide) else None},
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "targets": targets,
    }
