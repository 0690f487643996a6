"""Control messages during a real-clock take: does the service delay a hit?

``rolypoly serve`` plays a take on its own thread while it goes on
answering OSC. For each scenario the benchmark starts the service on a
loopback UDP port (mix and plot off), plays a real-clock take of a short
score (4 bars of 8th-note triplets at 120 bpm: 48 hits in 8 s) against a
recording of clicks 10 ms behind the drums (a
:class:`~rolypoly.realtime.sources.FileSource`, so the onset detector runs
as it does live) and, ``send_at_s`` into the take, sends the scenario's
control messages one after the other, the way a controller would::

    rolypoly bench service --json service.json
    chrt -f 20 rolypoly bench service --repeats 3   # on a shared machine: see below

Scenarios: ``idle`` (no message), ``load_score`` (the demo score, 123
rows), ``load_score_large`` (a score of ``large_bars`` bars: 16,000 rows
by default, seconds of MIDI parsing), ``control`` (status, tempo, window,
humanize, drumify, ab, load_session, load_score of the large score, status
again) and ``status_flood`` (500 ``status`` messages in a second).

Per take, from the take file: ``misses`` (the agent's ŷ not ready in
time), ``late_ms_max`` and ``late_ms_p99`` (|played - intended| over the
hits) and ``hits_over_2ms``; the garbage collections the service's
process ran during the take (``gc_runs``, ``gc_ms_max``); per message the
time to its reply (``reply_s``) and the reply's address. Target: in every
scenario no miss and no hit more than 2 ms from its intended time, as when
idle.

The service runs in this process (its threads are the ones measured), at
this process's scheduling: on a machine other programs keep busy, their
load shows in every scenario, idle included. Run under ``chrt -f 20`` (real
time, where allowed) to keep it out: the service's own interpreter lock and
garbage collector, what this measures, are untouched by it. The policy
and the load average are recorded with the figures.
"""
from __future__ import annotations

import gc
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

P = "/rolypoly/"
SR = 48000
#: A hit further than this from its intended time counts as delayed.
LATE_LIMIT_MS = 2.0
#: ``status_flood`` sends this many ``status`` messages in a second.
FLOOD = 500
SCENARIOS = ("idle", "load_score", "load_score_large", "control", "status_flood")


def groove(bars: int, *, hat_every: int = 3, bpm: float = 120.0, name: str = "groove"):
    """``bars`` bars of hats every ``hat_every`` grid steps (3: 8ths, 2: 8th triplets), kick on 1
    and 3, snare on 2 and 4."""
    from rolypoly.score import score_from_grid

    grid = np.zeros((bars * 24, 9), bool)
    grid[::hat_every, 2] = True
    grid[::12, 0] = True
    grid[6::12, 1] = True
    return score_from_grid(grid, bpm=bpm, name=name)


def large_score_file(path, bars: int = 2000) -> Path:
    """A MIDI file of ``bars`` bars of 8th-note hats, kick and snare at 120 bpm (8 rows a bar)."""
    from rolypoly.score import write_midi

    write_midi(groove(bars, name=Path(path).stem), path)
    return Path(path)


def make_sessions(root, *, take_bars: int = 4, large_bars: int = 2000, large_file=None) -> Path:
    """A sessions folder: ``song.mid`` (``take_bars`` bars of 8th-triplet hats at 120 bpm: 2 s
    and 12 hits a bar), ``partner.wav`` (clicks 10 ms behind it), ``demo.mid`` (the demo score,
    123 rows), ``large.mid`` (``large_bars`` bars, copied from ``large_file`` when given) and a
    session ``other`` to ``load_session``."""
    from rolypoly.audio_io import write_wav
    from rolypoly.demo import demo_score
    from rolypoly.lab.partner_audio import clicks
    from rolypoly.score import write_midi
    from rolypoly.session import Session

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    song = groove(take_bars, hat_every=2, name="song")
    write_midi(song, root / "song.mid")
    write_wav(root / "partner.wav", clicks(song.onset_s + 0.010, sample_rate=SR), SR)
    score = demo_score()
    write_midi(score, root / "demo.mid")
    if large_file is not None:
        shutil.copyfile(large_file, root / "large.mid")
    else:
        large_score_file(root / "large.mid", large_bars)
    write_midi(score.head(40), root / "other.mid")
    Session.open(root / "other", root / "other.mid")
    return root


def scenario_messages(name: str) -> list[tuple]:
    """The control messages a scenario sends mid-take (``status_flood``: see :func:`run_take`)."""
    return {
        "idle": [],
        "load_score": [("load_score", "demo.mid")],
        "load_score_large": [("load_score", "large.mid")],
        "control": [("status",), ("tempo", 100.0), ("window", 2.5), ("humanize", 1, 3),
                    ("drumify", "partner.wav"), ("ab", 0.5, 1.5), ("load_session", "other"),
                    ("load_score", "large.mid"), ("status",)],
        "status_flood": [],
    }[name]


class _Listener:
    """The controller's side: a UDP socket receiving the service's replies."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # a flood of replies
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def next(self, timeout: float):
        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(timeout)
        msg = OscMessage(self.sock.recv(65536))
        return time.perf_counter(), msg.address, list(msg.params)

    def close(self):
        self.sock.close()


def _gc_timer(pauses: list):
    """A :data:`gc.callbacks` entry appending each collection's duration (ms) to ``pauses``."""
    started = []

    def timer(phase, info):
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append((time.perf_counter() - started[0]) * 1000)

    return timer


def _answers(address: str, args: list, name: str) -> bool:
    """Whether a reply answers message ``name``."""
    if address in (P + "ok", P + "error"):
        return bool(args) and args[0] == P + name
    return address == P + name  # status


def run_take(root, scenario: str, *, send_at_s: float = 1.0, timeout_s: float = 120.0) -> dict:
    """One real-clock take in a fresh service on ``root`` with ``scenario``'s messages sent mid-take."""
    from pythonosc.udp_client import SimpleUDPClient

    from rolypoly.realtime.service import serve
    from rolypoly.take import read_take

    listener = _Listener()
    gc_pauses = []
    timer = _gc_timer(gc_pauses)  # collections in this process (the service's) during the take
    bound, ready = [], threading.Event()
    server = threading.Thread(target=serve, daemon=True, kwargs=dict(
        host="127.0.0.1", port=0, reply=("127.0.0.1", listener.port), sessions_dir=root, mix=False,
        plot=False, ready=lambda addr: (bound.append(addr), ready.set())))
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the service did not start")
        client = SimpleUDPClient(*bound[0])

        def ask(*msg):
            client.send_message(P + msg[0], list(msg[1:]))
            _, address, args = listener.next(60)
            if address == P + "error":
                raise RuntimeError(f"{msg}: {args}")
            return args

        for msg in (("load_score", "song.mid"), ("partner_file", "partner.wav"), ("clock", "real")):
            ask(*msg)
        gc.callbacks.append(timer)
        ask("play")
        start = time.perf_counter()
        time.sleep(send_at_s)
        messages = scenario_messages(scenario)
        sent = []
        for msg in messages:
            sent.append(time.perf_counter())
            client.send_message(P + msg[0], list(msg[1:]))
        if scenario == "status_flood":
            for _ in range(FLOOD):
                client.send_message(P + "status", [])
                messages.append(("status",))
                sent.append(time.perf_counter())
                time.sleep(1.0 / FLOOD)
        replies, take_done, deadline = [], None, start + timeout_s
        while take_done is None or len(replies) < len(messages):
            at, address, args = listener.next(max(0.1, deadline - time.perf_counter()))
            if address == P + "take_done":
                take_done = args
                gc.callbacks.remove(timer)  # what the take lived through
            elif address == P + "error" and args and args[0] == P + "play":
                raise RuntimeError(f"the take failed: {args}")
            else:
                replies.append((at, address, args))
        answered = []
        for (msg, t_sent) in zip(messages, sent):
            k = next(i for i, r in enumerate(replies) if _answers(r[1], r[2], msg[0]))
            at, address, args = replies.pop(k)
            answered.append({"message": " ".join(str(m) for m in msg), "reply": address,
                             "reason": args[1] if address == P + "error" else "",
                             "reply_s": round(at - t_sent, 4)})
        client.send_message(P + "quit", [])
        server.join(30)
    finally:
        listener.close()
        if timer in gc.callbacks:
            gc.callbacks.remove(timer)
    take = read_take(take_done[0])
    rows = take.rows
    late = np.abs(rows["played"] - rows["intended"]) * 1000
    return {"scenario": scenario, "rows": len(rows), "misses": int(take.end.misses),
            "late_ms_max": round(float(late.max()), 3), "late_ms_p99": round(float(np.percentile(late, 99)), 3),
            "hits_over_2ms": int((late > LATE_LIMIT_MS).sum()),
            "gc_runs": len(gc_pauses), "gc_ms_max": round(max(gc_pauses, default=0.0), 3),
            "messages": len(answered) if scenario == "status_flood" else answered,
            "reply_s_max": round(max((a["reply_s"] for a in answered), default=0.0), 4)}


def run(json_out=None, *, scenarios=SCENARIOS, repeats: int = 1, large_bars: int = 2000, folder=None,
        progress=None) -> dict:
    """Every scenario ``repeats`` times, each take in a fresh sessions folder; the figures as a dict
    (also written to ``json_out``). ``progress(take)`` is called after each take."""
    import json

    work = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="rolypoly-bench-service-"))
    try:
        t = time.perf_counter()
        large = large_score_file(work / "large.mid", large_bars)
        make_s = time.perf_counter() - t
        results = []
        for name in scenarios:
            takes = []
            for k in range(repeats):
                root = make_sessions(work / f"{name}-{k}", large_file=large)
                load = os.getloadavg()[0]
                takes.append({**run_take(root, name), "load_1min": round(load, 2)})
                if progress is not None:
                    progress(takes[-1])
            results.append({"scenario": name, "takes": len(takes),
                            "misses": sum(t["misses"] for t in takes),
                            "late_ms_max": max(t["late_ms_max"] for t in takes),
                            "hits_over_2ms": sum(t["hits_over_2ms"] for t in takes),
                            "clean_takes": sum(t["misses"] == 0 and t["hits_over_2ms"] == 0 for t in takes),
                            "reply_s_max": max(t["reply_s_max"] for t in takes), "per_take": takes})
        out = {"bench": "service", "large_bars": large_bars, "large_score_write_s": round(make_s, 2),
               "late_limit_ms": LATE_LIMIT_MS, "scenarios": results,
               "ok": all(r["clean_takes"] == r["takes"] for r in results),
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "scheduling": _scheduling()}}
    finally:
        if folder is None:
            shutil.rmtree(work, ignore_errors=True)
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2) + "\n")
    return out


def _scheduling() -> str:
    """This process's scheduling policy, e.g. ``SCHED_OTHER nice 0`` or ``SCHED_FIFO 20``."""
    try:
        policy = os.sched_getscheduler(0)
    except (AttributeError, OSError):
        return "unknown"
    names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
             if hasattr(os, n)}
    if policy in (getattr(os, "SCHED_FIFO", None), getattr(os, "SCHED_RR", None)):
        return f"{names[policy]} {os.sched_getparam(0).sched_priority}"
    return f"{names.get(policy, policy)} nice {os.getpriority(os.PRIO_PROCESS, 0)}"
