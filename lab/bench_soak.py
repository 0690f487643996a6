"""Soak: a long real-clock take on JACK with a virtual partner and control traffic. Does anything grow or slip?

::

    rolypoly bench soak --minutes 30 --json soak.json

The OSC service (``rolypoly serve``'s :class:`~rolypoly.realtime.service.Service`,
in this process, on a loopback port) plays one take of the bench loop
(:func:`rolypoly.lab.bench_output.bench_score`: 16th-note hats, kick and
snare at 120 bpm) for ``minutes`` on the real clock. The drums go to a JACK
MIDI port that a capture client records (the machinery of
:mod:`rolypoly.lab.bench_output`: its server, capture process and figures):
``drums="midi"`` (the default) is rolypoly's own JACK client, which writes
each note on its frame, as ``rolypoly play`` opens it on JACK; ``"rtmidi"``
is python-rtmidi's JACK port (what rolypoly used before its own JACK client), every note at
the start of the next cycle, up to a period late by design,
and the partner is a :class:`~rolypoly.lab.virtual_partner.VirtualPartner`
(a bass on kick and snare, 8 ms laid back, 4 ms of jitter, following the
drums), so its onsets go through the detector as live ones do. The service
is given a partner recording as usual; its player puts the virtual partner
and the JACK port in (:func:`soak_player`), everything else is the
service's own take.

While it plays, a controller sends a control message every ``control_s``
seconds (status, tempo, window, A and B, agent, loading a score and a
session for the next take, in turn) and waits for each reply; a sampler
reads this process's resident memory (RSS) and CPU time every
``sample_s`` seconds.

Figures: ``rss_growth_mb`` (the last sample while the engine still plays
minus the first after the warm-up, the first tenth of the take or a
minute, whichever is shorter: buffers sized for the whole take are touched
before it starts, so what grows is what leaks; the take's files written
after its last hit do not count), ``misses`` and ``xruns`` (the take's),
``max_late_ms`` (the largest emitted − intended of any hit; with rtmidi
JACK's period wait included), ``drift`` and ``notes`` (as ``bench output`` works them
out) and ``control`` (messages sent, answered, refused, reply times).
Targets for 30 minutes: RSS growth ≤ 5 MB, no miss, no note missing,
drift ≤ 0.1 ms, no hit later than 2 ms, with control traffic.

The take's mix and plot are off (they are made after the take, off the
live path, and a 30-minute mix is 350 MB); the take file, partner audio
and drums MIDI are written as always.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rolypoly.errors import DeviceError
from rolypoly.lab import bench_output as bo
from rolypoly.realtime import jack

P = "/rolypoly/"
#: Targets of a 30-minute soak.
TARGETS = {"rss_growth_mb": 5.0, "misses": 0, "notes_missing": 0, "drift_ms": 0.1, "max_late_ms": 2.0}
#: The control messages the controller sends in turn, one every ``control_s`` seconds.
CONTROL = (("status",), ("tempo", 118.0), ("window", 2.5), ("ab", 0.8, 1.2), ("status",), ("agent", "lstm"),
           ("load_score", "small.mid"), ("status",), ("window", 3.0), ("load_session", "other"), ("tempo", 120.0),
           ("ab", 1.0, 1.0), ("load_score", "soak.mid"))
#: What the drums play through (``--drums``).
DRUMS_OUT = {"midi": "rolypoly's JACK client (JackIO), each note written on its own frame, handed over when its "
                     "offset is known (as rolypoly play opens it on JACK)",
             "rtmidi": "python-rtmidi's JACK MIDI port, every note at the start of the cycle after it is sent"}
#: How the partner plays: a bass on kick and snare, laid back and a little uneven, following the drums.
PARTNER = dict(classes=["kick", "snare"], instrument="bass", offset_ms=8.0, jitter_ms=4.0, gain=0.3, seed=0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0


class Sampler:
    """This process's RSS and CPU every ``interval_s`` seconds, with the engine's row at the time."""

    def __init__(self, interval_s: float, row=lambda: None):
        self.interval_s, self.row = interval_s, row
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._t0, self._cpu = time.perf_counter(), time.process_time()
        self._last = (self._t0, self._cpu)
        self._sample()
        self._thread.start()

    def _sample(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        wall = now - self._last[0]
        self.samples.append({"t_s": round(now - self._t0, 2), "rss_mb": round(_rss_mb(), 2),
                             "cpu_pct": round(100 * (cpu - self._last[1]) / wall, 1) if wall > 0 else None,
                             "row": self.row()})
        self._last = (now, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.samples


class Controller:
    """The controller's side of the OSC conversation: sends a message, waits for its reply."""

    def __init__(self, address):
        from pythonosc.udp_client import SimpleUDPClient

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client = SimpleUDPClient(*address) if address else None
        self.other: list = []  # replies that answer nothing asked (take_done, late ones)

    def connect(self, address) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        self.client = SimpleUDPClient(*address)

    def receive(self, timeout: float):
        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(max(timeout, 0.001))
        try:
            msg = OscMessage(self.sock.recv(65536))
        except socket.timeout:
            return None
        return msg.address, list(msg.params)

    def ask(self, *msg, timeout: float = 30.0):
        """Send ``msg`` and wait for its reply: (address, args, seconds), or None when none came."""
        name = msg[0]
        start = time.perf_counter()
        self.client.send_message(P + name, list(msg[1:]))
        answer = P + ("playing" if name == "play" else name)
        while time.perf_counter() - start < timeout:
            got = self.receive(timeout - (time.perf_counter() - start))
            if got is None:
                break
            address, args = got
            if address == answer or (address in (P + "ok", P + "error") and args and args[0] == P + name):
                return address, args, time.perf_counter() - start
            self.other.append(got)
        return None

    def wait_for(self, address: str, timeout: float):
        """The args of the first reply at ``address`` (kept ones first), or None after ``timeout``."""
        for k, (a, args) in enumerate(self.other):
            if a == address:
                return self.other.pop(k)[1]
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            got = self.receive(deadline - time.perf_counter())
            if got is not None and got[0] == address:
                return got[1]
            if got is not None:
                self.other.append(got)
        return None

    def close(self) -> None:
        self.sock.close()


def make_sessions(root: Path, minutes: float, bpm: float) -> Path:
    """The soak's sessions folder: ``soak.mid`` (the loop), ``small.mid``, a session ``other``, ``partner.wav``."""
    from rolypoly.audio_io import write_wav
    from rolypoly.score import write_midi
    from rolypoly.session import Session

    root.mkdir(parents=True, exist_ok=True)
    write_midi(bo.bench_score(minutes * 60.0, bpm), root / "soak.mid")
    write_midi(bo.bench_score(8.0, bpm), root / "small.mid")
    write_midi(bo.bench_score(4.0, bpm), root / "other.mid")
    Session.open(root / "other", root / "other.mid")
    write_wav(root / "partner.wav", np.zeros(48000, np.float32), 48000)  # stands in: see soak_player
    return root


class PlayerLog:
    """The C player's cycles over the whole take (its own ring holds 5.8 minutes): drained every few seconds.

    Its arrays are sized for the take and touched before it starts, as
    every buffer of the soak's process: a log that grew during the take
    would be counted as the service's memory growth (34 MB in 30 minutes).
    Only cycles run once the take's engine exists are kept: before, the
    player's engine time had the origin of the bench's sync, not the take's.
    """

    def __init__(self, io, seconds: float = 0.0):
        self.io, self.first, self.n = io, None, 0
        size = int(seconds * io.rate / io.period * 1.05) + 4096 if io is not None else 0
        self.frames = np.zeros(size, np.int64)
        self.starts, self.woke = np.zeros(size), np.zeros(size)   # np.zeros maps lazily:
        for a in (self.frames, self.starts, self.woke):
            a.fill(1)                                             # touched now, not during the take

    def drain(self, hooked: dict) -> None:
        if self.io is None or "engine" not in hooked or hooked["engine"].status.get("row", -1) < 0:
            return  # the take has not begun (its first hit sets the row)
        first, frames, starts, woke = self.io.cycle_log(self.first if self.first is not None else self.io.cycles)
        if self.first is None or first == self.first:
            k = min(len(frames), len(self.frames) - self.n)
            for a, b in ((self.frames, frames), (self.starts, starts), (self.woke, woke)):
                a[self.n:self.n + k] = b[:k]
            self.n += k
        self.first = first + len(frames)

    def cycles(self) -> tuple:
        """As :meth:`~rolypoly.realtime.jack_io.JackIO.cycle_log` returns them, for the take."""
        return 0, self.frames[:self.n], self.starts[:self.n], self.woke[:self.n]


def soak_player(outputs: dict, hooked: dict):
    """A player for the service: its own take (:func:`~rolypoly.realtime.duet.play_take`) with the
    virtual partner in place of the recording and the drums on ``outputs`` (``drums`` or ``midi``);
    ``hooked`` gets the engine, clock and partner."""
    from rolypoly.lab.virtual_partner import VirtualPartner
    from rolypoly.realtime.duet import play_take
    from rolypoly.session import Session

    def player(**kw):
        score = Session.open(kw["session"], kw["score_path"]).score(kw.get("tempo_bpm"))
        partner = VirtualPartner(score, **PARTNER, sample_rate=kw["source"].sample_rate)
        partner.audio[:] = 0.0  # touched now: its pages are the take's, not growth during it
        attach = kw["on_engine"]

        def on_engine(engine):
            hooked.update(engine=engine, clock=kw["clock"], partner=partner)
            attach(engine)

        drums = dict(outputs)
        if "drums" in drums:  # when the engine hands each row to the C player (bench output's causes)
            drums["drums"] = hooked["timed"] = bo.TimedDrums(drums["drums"], kw["clock"], len(score) + 16)
        return play_take(**{**kw, "source": partner, **drums, "on_engine": on_engine})

    return player


def _soak(work: Path, minutes: float, bpm: float, control_s: float, sample_s: float, period: int, rate: int,
          say, drums: str = "midi") -> dict:
    from rolypoly.realtime.service import Service, serve
    from rolypoly.take import read_take

    root = make_sessions(work / "sessions", minutes, bpm)
    name = f"rolypoly-soak-{os.getpid()}"
    capture = controller = out = None
    hooked: dict = {}
    try:
        capture = bo.CaptureProcess(f"{name}-capture")
        if drums == "midi":  # rolypoly's own JACK client, as play opens it on JACK: each note on its frame
            from rolypoly.realtime.jack_io import JackIO

            out = JackIO(midi=True, name=name)
            jack.connect(out.midi_port.name, capture.port_name)
            skip = bo._sync_jackio(out, capture, "midi")
            outputs = {"drums": out}
        else:  # python-rtmidi's JACK port: every note at the start of the next cycle
            from rolypoly.realtime.midi_out import MidiOut

            out = MidiOut(api="jack", client_name=name)
            jack.connect(bo._port_of(name, "rolypoly"), capture.port_name)
            skip = bo._sync(out, capture)
            outputs = {"midi": out}
        controller = Controller(None)
        service = Service(root, reply=("127.0.0.1", controller.port), mix=False, plot=False,
                          player=soak_player(outputs, hooked))
        bound, ready = [], threading.Event()
        thread = threading.Thread(target=serve, name="soak-service", daemon=True, kwargs=dict(
            host="127.0.0.1", port=0, service=service, ready=lambda a: (bound.append(a), ready.set())))
        thread.start()
        if not ready.wait(30):
            raise DeviceError("the OSC service did not start")
        controller.connect(bound[0])
        for msg in (("load_score", "soak.mid"), ("partner_file", "partner.wav"), ("clock", "real")):
            got = controller.ask(*msg, timeout=120)
            if got is None or got[0] == P + "error":
                raise DeviceError(f"the service refused {msg}: {got}")
        log = PlayerLog(out if drums == "midi" else None, minutes * 60.0 + 60.0)  # before the take: see there
        sampler = Sampler(sample_s, row=lambda: int(hooked["engine"].status.get("row", 0))
                          if "engine" in hooked else None)
        cpu = bo.ThreadCpu()
        say(f"playing {minutes:g} minutes through JACK, a control message every {control_s:g} s...")
        got = controller.ask("play", timeout=60)
        if got is None or got[0] == P + "error":
            raise DeviceError(f"the service did not play: {got}")
        sampler.start()
        cpu.start()
        child_cpu0 = capture.cpu_s()
        sent, answers, k = [], [], 0
        take_done = None
        next_at = time.perf_counter() + control_s
        while take_done is None:
            take_done = controller.wait_for(P + "take_done", max(0.0, next_at - time.perf_counter()))
            if take_done is not None:
                break
            failed = controller.wait_for(P + "error", 0.0)
            if failed is not None and failed[0] == P + "play":
                raise DeviceError(f"the take failed: {failed[1]}")
            log.drain(hooked)
            msg = CONTROL[k % len(CONTROL)]
            k += 1
            sent.append(msg)
            got = controller.ask(*msg, timeout=control_s * 10)
            answers.append(None if got is None else {"message": " ".join(map(str, msg)), "reply": got[0],
                                                     "reason": got[1][1] if got[0] == P + "error" else "",
                                                     "reply_s": round(got[2], 4)})
            next_at += control_s
            if len(sent) % 20 == 0:
                say(f"  {len(sent)} control messages, RSS {_rss_mb():.1f} MB, "
                    f"row {hooked['engine'].status.get('row') if 'engine' in hooked else '?'}")
        samples = sampler.stop()
        cpu_figures = cpu.stop()
        cpu_figures["capture_child_pct_of_one_core"] = round(100 * (capture.cpu_s() - child_cpu0)
                                                             / cpu_figures["wall_s"], 2)
        last_status = controller.ask("status", timeout=30)
        controller.client.send_message(P + "quit", [])
        thread.join(60)
        time.sleep(0.2)
        player = out.stats() if drums == "midi" else None  # what the C player says it wrote
        log.drain(hooked)
        data = capture.stop()
        capture = None
    finally:
        if capture is not None:
            capture.kill()
        if controller is not None:
            controller.close()
        if out is not None:
            out.close()
    take = read_take(take_done[0])
    rows = take.rows
    engine, clock = hooked["engine"], hooked["clock"]
    result = SimpleNamespace(intended=rows["intended"], played=rows["played"])
    score = bo.bench_score(minutes * 60.0, bpm)
    # bench output's figures for the same output ("midi": frame-placed JACK MIDI; "rtmidi").
    causes = {"player_cycles": log.cycles(), "handed": hooked["timed"].handed[:hooked["timed"].n]} \
        if drums == "midi" and "timed" in hooked else {}
    figures = bo._figures({"score": score, "result": result, "data": data, "skip": skip, "drums": drums,
                           "origin": -clock.to_engine(0.0), "t0": engine._t0, **causes}, period, rate)
    return {"take": take, "take_dir": take_done[0], "samples": samples, "answers": answers, "sent": sent,
            "figures": figures, "player": player, "cpu": cpu_figures, "status_after": last_status is not None,
            "partner_problems": list(hooked["partner"].problems)}


def _growth(samples: list[dict], minutes: float, last_row: int) -> dict:
    """RSS growth over the take after its warm-up (see the module docstring).

    Only samples taken while the engine still plays count (its row before
    ``last_row``, the take's last): once the last hit is out the take
    writes its files (partner.wav, the rows), which is not the live path;
    those samples are reported (``after_take``, ``max``) but not counted.

    >>> rows = [{"t_s": 0, "rss_mb": 500.0, "row": None}, {"t_s": 70, "rss_mb": 600.0, "row": 10},
    ...         {"t_s": 80, "rss_mb": 601.0, "row": 98}, {"t_s": 90, "rss_mb": 700.0, "row": 99},
    ...         {"t_s": 91, "rss_mb": 610.0, "row": 99}]
    >>> _growth(rows, 10.0, 99)["rss_growth_mb"]
    1.0
    """
    warmup = min(60.0, minutes * 6.0)  # a tenth of the take, at most a minute
    playing = [s for s in samples if s["row"] is not None and s["row"] < last_row]
    during = [s for s in playing if s["t_s"] >= warmup] or playing[-1:] or samples[-1:]
    rss = [s["rss_mb"] for s in samples]
    return {"rss_growth_mb": round(during[-1]["rss_mb"] - during[0]["rss_mb"], 2),
            "rss_mb": {"start": rss[0], "after_warmup": during[0]["rss_mb"], "end_of_take": during[-1]["rss_mb"],
                       "after_take": rss[-1], "max": max(rss)},
            "warmup_s": warmup}


def _control(sent, answers) -> dict:
    got = [a for a in answers if a is not None]
    times = np.array([a["reply_s"] for a in got]) if got else np.zeros(1)
    refused: dict = {}
    for a in got:
        if a["reply"] == P + "error":
            refused[a["message"]] = a["reason"]
    return {"sent": len(sent), "answered": len(got), "unanswered": len(answers) - len(got),
            "errors": sum(a["reply"] == P + "error" for a in got), "refused": refused,
            "reply_s_p50": round(float(np.median(times)), 4), "reply_s_max": round(float(times.max()), 4)}


def run(json_path=None, *, minutes: float = 30.0, control_s: float = 3.0, sample_s: float = 10.0,
        bpm: float = 120.0, period: int = 64, rate: int = 48000, drums: str = "midi",
        verbose: bool = False) -> dict:
    """Play the soak (see the module docstring); the report as a dict, also written to ``json_path``.

    Raises
    ------
    DeviceError
        JACK cannot run, MIDI does not reach the capture client, or the service does not answer.
    """
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
    load_before = os.getloadavg()
    server = bo._server(period, rate, portaudio=False)
    work = Path(tempfile.mkdtemp(prefix="rolypoly-soak-"))
    try:
        watch = jack.JackWatch(f"rolypoly-soak-watch-{os.getpid()}")
        actual_period, actual_rate = watch.period, watch.rate
        watch.close()
        jackd_cpu0 = bo._proc_cpu_s(server.proc.pid) if server.owned else None
        soak = _soak(work, minutes, bpm, control_s, sample_s, actual_period, actual_rate, say, drums)
        if jackd_cpu0 is not None:
            soak["cpu"]["jackd_pct_of_one_core"] = round(
                100 * (bo._proc_cpu_s(server.proc.pid) - jackd_cpu0) / soak["cpu"]["wall_s"], 2)
        server_info = {"name": server.name, "started_here": server.owned, "period": actual_period,
                       "rate": actual_rate}
    finally:
        server.stop()
    report = _report(soak, server_info, minutes, bpm, control_s, sample_s, load_before, drums)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return report


def _report(soak: dict, server: dict, minutes: float, bpm: float, control_s: float, sample_s: float,
            load_before, drums: str = "midi") -> dict:
    take, figures = soak["take"], soak["figures"]
    raw = figures["emitted_minus_intended"]["raw"]
    growth = _growth(soak["samples"], minutes, len(take.rows) - 1)
    control = _control(soak["sent"], soak["answers"])
    end = take.end
    misses = int(end.misses) if end is not None else None
    xruns = int(end.xruns) if end is not None else None
    drift = figures["drift"]
    met = {
        "rss_growth": growth["rss_growth_mb"] <= TARGETS["rss_growth_mb"],
        "misses": misses == TARGETS["misses"],
        "notes_missing": figures["notes"]["missing"] == TARGETS["notes_missing"],
        "drift": abs(drift["total_over_take_ms"]) <= TARGETS["drift_ms"],
        "max_late": raw["max_ms"] <= TARGETS["max_late_ms"],
        "control_answered": control["unanswered"] == 0 and soak["status_after"],
    }
    return {
        "what": "a long real-clock take through the OSC service on JACK with a virtual partner and a control "
                "message every few seconds: memory growth, misses, lateness, drift, missing notes",
        "command": f"rolypoly bench soak --minutes {minutes:g} --drums {drums}",
        "drums": DRUMS_OUT[drums],
        "server": server,
        "take": {"minutes": minutes, "bpm": bpm, "rows": int(len(take.rows)), "take_dir": soak["take_dir"],
                 "partner": f"VirtualPartner {PARTNER}", "complete": bool(take.complete),
                 "partner_problems": soak["partner_problems"]},
        "rss_growth_mb": growth["rss_growth_mb"],
        "rss_mb": growth["rss_mb"],
        "misses": misses,
        "xruns": xruns,
        "max_late_ms": raw["max_ms"],
        "emitted_minus_intended": figures["emitted_minus_intended"],
        "drift": drift,
        "notes": figures["notes"],
        "player": soak["player"],
        "control": {**control, "every_s": control_s, "status_answered_after_take": soak["status_after"]},
        "samples": {"every_s": sample_s, "warmup_s": growth["warmup_s"], "rows": soak["samples"]},
        "cpu": soak["cpu"],
        "jack_cycle": figures["jack_cycle"],
        "off_by_more_than_target": figures["off_by_more_than_target"],
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "targets": {**TARGETS, "met": met, "all_met": all(met.values())},
    }
