"""The fuzz harness: hostile MIDI files, session.json files, weights headers and OSC messages.

Each part draws its cases from :mod:`rolypoly.lab.fuzz` by seed (seeds 0..N-1, N bounded so the
whole harness runs within a minute on 2 cores), runs them through what reads them, and collects every
case that ends in anything but success or one clear line (a RolypolyError): a traceback, an
exception of another kind, memory past a cap, or a case that takes too long. A failure names its
seed; that seed then goes into the REGRESSION list of its part, which runs every time.

``ROLYPOLY_FUZZ_SCALE=10`` (an environment variable) runs ten times as many cases, for a longer
hunt outside ``make test``; ``ROLYPOLY_FUZZ_FIRST=K`` starts at seed K.

Everything stays on this machine: files in a temporary folder, OSC on the loopback interface.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import socket
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from rolypoly.errors import RolypolyError
from rolypoly.lab import fuzz
from rolypoly.limits import MAX_ROWS, MAX_SCORE_SECONDS
from rolypoly.paths import DEMO_PARTNER, DEMO_SCORE

SCALE = int(os.environ.get("ROLYPOLY_FUZZ_SCALE", "1"))
FIRST = int(os.environ.get("ROLYPOLY_FUZZ_FIRST", "0"))
#: Memory a fuzz case may take on top of the test process's (address space: what is mapped).
CASE_MEMORY = 1 << 30
#: Most CPU time a case may spend (this process's, all threads): a runaway case spends it, while a
#: machine busy with other work only stretches the clock. A command case includes loading its model
#: and, the first time, importing PyTorch; a session case may fine-tune for an epoch.
CASE_SECONDS, COMMAND_SECONDS = 10.0, 30.0
#: A case that waits instead (a lock, a socket) fails past this many times its CPU limit on the clock.
WAIT_FACTOR = 10
P = "/rolypoly/"


def seeds(n: int, regressions=()) -> list[int]:
    """The seeds of a part: its regression seeds, then ``n`` × SCALE fresh ones from FIRST."""
    return list(regressions) + [s for s in range(FIRST, FIRST + n * SCALE) if s not in regressions]


@contextlib.contextmanager
def memory_cap(extra: int = CASE_MEMORY):
    """Cap this process's address space at what it maps now plus ``extra``: past it, MemoryError."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Failures:
    """The cases of a part that failed: (seed, what happened), reported together at the end."""

    def __init__(self, part: str):
        self.part, self.items = part, []

    @contextlib.contextmanager
    def case(self, seed, what: str, limit_s: float = CASE_SECONDS):
        """Run a case: a RolypolyError is its one clear line; anything else, or spending over ``limit_s``
        of CPU (or ``WAIT_FACTOR`` times that on the clock), fails it."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        except RolypolyError:
            pass
        except Exception as e:  # noqa: BLE001 -- exactly what the harness looks for
            traceback.clear_frames(e.__traceback__)  # what a MemoryError's frames held goes now
            self.items.append((seed, f"{what}: {type(e).__name__}: {str(e).strip()[:200]}"))
        took, spent = time.perf_counter() - start, time.process_time() - cpu
        if spent > limit_s or took > WAIT_FACTOR * limit_s:
            self.items.append((seed, f"{what}: took {took:.1f} s ({spent:.1f} s of CPU)"))

    def check(self):
        lines = "\n".join(f"  seed {s}: {w}" for s, w in self.items)
        assert not self.items, f"{self.part}: {len(self.items)} failing case(s) (add the seed to the regressions):\n" \
                               f"{lines}"


# ----------------------------------------------------------------------------- MIDI files

#: MIDI seeds that once failed (none yet).
MIDI_REGRESSIONS: list[int] = []


def _corpus():
    return [DEMO_SCORE.read_bytes()]


def test_fuzz_midi_readers(tmp_path):
    """Every reader of drum MIDI (score, groove grid on both grids, taps with and without a tempo,
    the service's load_score and the tempo it then accepts)."""
    from rolypoly.groove import read_taps
    from rolypoly.groove_grid import read_groove, windows
    from rolypoly.realtime.service import Service
    from rolypoly.score import load_score

    failures, corpus, accepted = Failures("MIDI readers"), _corpus(), 0
    root = tmp_path / "sessions"
    service = Service(root, reply=None, mix=False, plot=False)
    with memory_cap(), contextlib.closing(service):
        cases = seeds(200, MIDI_REGRESSIONS)
        for seed in cases:
            path = root / f"case{seed}.mid"
            path.write_bytes(fuzz.midi_case(seed, corpus))
            with failures.case(seed, "serve: load_score, tempo, status"):
                for message in (("load_score", path.name), ("tempo", 20.0), ("tempo", 400.0), ("status",)):
                    replies = service.handle(P + message[0], *message[1:])
                    bad = [r for r in replies if r[0] == P + "error" and "internal error" in str(r[1])]
                    if not replies or bad:
                        raise AssertionError(f"{message}: {replies or 'no reply'}")
            with failures.case(seed, "load_score"):
                score = load_score(path)
                accepted += 1
                assert len(score) <= MAX_ROWS and score.onset_s[-1] <= MAX_SCORE_SECONDS
                assert np.all(np.isfinite(score.onset_s)) and np.all(score.duration_ms >= 0), "bad rows"
            for grid in ("16th", "triplet"):
                with failures.case(seed, f"read_groove {grid}"):
                    windows(read_groove(path, grid=grid))
            with failures.case(seed, "read_taps"):
                read_taps(path)
            with failures.case(seed, "read_taps at 20 bpm"):
                windows(read_taps(path, bpm=20.0))
            path.unlink()
    failures.check()
    assert accepted >= len(cases) // 20  # the generator makes usable files too (9% of them), not only junk


def _run_cli(argv) -> tuple[int, str]:
    """``rolypoly ARGV`` in this process: exit status and stderr."""
    from rolypoly.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([str(a) for a in argv])
    return status, err.getvalue()


def test_fuzz_midi_commands(tmp_path):
    """Every command that reads a drum MIDI file, on accepted and refused fuzz files: 0, or 2 and one line."""
    from rolypoly.score import load_score

    failures, corpus = Failures("MIDI commands"), _corpus()
    picked = {"accepted": [], "refused": []}
    for seed in seeds(200, MIDI_REGRESSIONS):  # the first few of each kind (refused ones are cheap)
        path = tmp_path / f"case{seed}.mid"
        path.write_bytes(fuzz.midi_case(seed, corpus))
        try:
            kind = "accepted" if load_score(path).onset_s[-1] < 30 else None
        except RolypolyError:
            kind = "refused"
        if kind and len(picked[kind]) < (1 if kind == "accepted" else 4) * SCALE:
            picked[kind].append((seed, path))
    assert len(picked["accepted"]) == SCALE and len(picked["refused"]) == 4 * SCALE
    for seed, path in picked["accepted"] + picked["refused"]:
        out = tmp_path / f"out{seed}"
        commands = {
            "humanize": ["humanize", path, "-o", f"{out}-h.mid"],
            "groove humanize": ["groove", "humanize", path, "-o", f"{out}-gh.mid"],
            "groove drumify": ["groove", "drumify", path, "-o", f"{out}-gd.mid"],
            "groove infill": ["groove", "infill", path, "-o", f"{out}-gi.mid"],
            "groove transfer": ["groove", "transfer", "--groove", path, "--score", path, "-o", f"{out}-gt.mid"],
            "simulate": ["simulate", path, "--partner-file", DEMO_PARTNER, "--session", f"{out}-sim"],
            "session new": ["session", "new", f"{out}-new", "--score", path],
        }
        for name, argv in commands.items():
            with failures.case(seed, name, COMMAND_SECONDS):
                status, err = _run_cli(argv)
                lines = [line for line in err.splitlines() if line.strip()]
                if status not in (0, 2) or "Traceback" in err or any(not x.startswith(("rolypoly:", "  "))
                                                                      for x in lines):
                    raise AssertionError(f"exit {status}: {err.strip()[-300:]}")
                if status == 2 and len([x for x in lines if not x.startswith("rolypoly: warning:")]) != 1:
                    raise AssertionError(f"exit 2 with {len(lines)} lines: {err.strip()[-300:]}")
    failures.check()


# ----------------------------------------------------------------------------- session.json

#: session.json seeds that once failed (none yet).
SESSION_REGRESSIONS: list[int] = []


def _listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_fuzz_session_json(fresh_session):
    """A session whose session.json was mangled: every use of it works, or one line and nothing written."""
    from rolypoly.session import Session, check_meta

    folder, failures = fresh_session, Failures("session.json")
    meta_path = folder / "session.json"
    original = json.loads(meta_path.read_text())
    files = _listing(folder)
    tuned = 0
    with memory_cap():
        for seed in seeds(50, SESSION_REGRESSIONS):
            data = fuzz.session_json_case(original, seed)
            meta_path.write_bytes(data)
            with failures.case(seed, "session"):
                try:
                    s = Session(folder)
                    s.score(), s.current_version(), s.ab, s.pattern, s.ledger(), s.versions()
                    s.agent()
                    s.set_ab(0.5, 0.25)
                    s.revert(0)
                    if tuned < SCALE:  # a fine-tune costs a second: only the first that opens
                        tuned += 1
                        s.finetune(epochs=1)
                    check_meta(json.loads(meta_path.read_text()), meta_path, s.base_score)
                except RolypolyError:
                    if meta_path.read_bytes() != data or _listing(folder) != files:
                        raise AssertionError("refused, but something was written") from None
                    raise
            with failures.case(seed, "session list"):
                status, err = _run_cli(["session", "list", folder])
                if status not in (0, 2) or "Traceback" in err:
                    raise AssertionError(f"exit {status}: {err.strip()[-300:]}")
            # The next case starts from the session as it was.
            for extra in sorted(_listing(folder) - files, reverse=True):
                p = folder / extra
                p.chmod(0o755)
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    failures.check()


# ----------------------------------------------------------------------------- weights files

#: Weights seeds that once failed (none yet).
WEIGHTS_REGRESSIONS: list[int] = []


def test_fuzz_weights_headers(tmp_path):
    """Hostile safetensors headers and bodies: a model that loads and plays, or one line."""
    from rolypoly.agents import Performer, default_weights, load_agent
    from rolypoly.features import N_FEATURES
    from rolypoly.groove_model import default_groove_weights, load_groove_model

    failures = Failures("weights")
    bases = {"lstm": default_weights("lstm").read_bytes(), "transfer": default_groove_weights("transfer").read_bytes()}
    path = tmp_path / "case.safetensors"
    with memory_cap():
        for seed in seeds(40, WEIGHTS_REGRESSIONS):
            kind = ("lstm", "transfer")[seed % 2]
            path.write_bytes(fuzz.safetensors_case(bases[kind], seed))
            with failures.case(seed, f"load {kind}"):
                if kind == "lstm":
                    p = Performer(load_agent(path))
                    p.prime(np.zeros((4, N_FEATURES), np.float32))
                    assert np.isfinite(p.step(np.zeros(N_FEATURES, np.float32)))
                else:
                    model = load_groove_model("transfer", path)
                    H = np.zeros((1, 32, 9), np.float32)
                    model.generate(H, H, H, z_from=(H, H, H))
    failures.check()


# ----------------------------------------------------------------------------- OSC messages

#: OSC seeds that once failed (none yet).
OSC_REGRESSIONS: list[int] = []
#: Addresses the fuzzer leaves out: quit ends the service, reply_to would send its answers elsewhere.
OSC_SPARED = ("quit", "reply_to")


class _Replies:
    """The controller's side: every reply the service sends, kept in order."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list = []

    def until(self, address: str, timeout: float = 30.0, count: int = 1):
        """Wait until ``count`` replies at ``address`` were seen; the last one's args (None: timed out)."""
        from pythonosc.osc_message import OscMessage

        deadline = time.monotonic() + timeout
        while sum(a == address for a, _ in self.seen) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = OscMessage(self.sock.recv(65536))
            except socket.timeout:
                return None
            self.seen.append((msg.address, list(msg.params)))
        return [args for a, args in self.seen if a == address][count - 1]


def test_fuzz_osc_messages_during_a_take(tmp_path):
    """Random OSC at the service while a simulated take plays: status still answers, the take ends."""
    from pythonosc.udp_client import SimpleUDPClient

    from rolypoly.audio_io import write_wav
    from rolypoly.lab.experiments import straight_eighths
    from rolypoly.lab.partner_audio import clicks
    from rolypoly.realtime.service import serve
    from rolypoly.score import write_midi
    from rolypoly.session import Session

    root = tmp_path / "sessions"
    root.mkdir()
    song = straight_eighths(bars=48, bpm=120)  # 96 s of music: a few seconds on the simulated clock
    write_midi(song, root / "song.mid")
    write_wav(root / "partner.wav", clicks(song.onset_s[::2] + 0.01, sample_rate=48000), 48000)
    write_midi(straight_eighths(bars=2, bpm=100), root / "demo.mid")
    Session.open(root / "demo", root / "demo.mid")
    replies = _Replies()
    bound, ready = [], threading.Event()
    thread = threading.Thread(target=serve, daemon=True, kwargs=dict(
        host="127.0.0.1", port=0, reply=("127.0.0.1", replies.port), sessions_dir=root, mix=False, plot=False,
        ready=lambda addr: (bound.append(addr), ready.set())))
    thread.start()
    assert ready.wait(30)
    client = SimpleUDPClient(*bound[0])
    for k, msg in enumerate((("load_score", "song.mid"), ("partner_file", "partner.wav"), ("clock", "sim"))):
        client.send_message(P + msg[0], list(msg[1:]))
        assert replies.until(P + "ok", count=k + 1) is not None, replies.seen
    client.send_message(P + "play", [])
    assert replies.until(P + "playing") is not None
    addresses = tuple(a for a in fuzz.SERVICE_ADDRESSES if a not in OSC_SPARED)
    cases = seeds(200, OSC_REGRESSIONS)
    problems, asked, burst = [], 0, []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for k, seed in enumerate(cases, 1):
            raw.sendto(fuzz.osc_datagram(seed, addresses=addresses), bound[0])
            burst.append(seed)
            if k % 20 == 0 or k == len(cases):
                # status must answer after every burst: one bad value stored must not silence it.
                client.send_message(P + "status", [])
                asked += 1
                if replies.until(P + "status", timeout=30, count=asked) is None:
                    problems.append(f"status unanswered after seeds {burst[0]}..{burst[-1]}")
                    asked = sum(a == P + "status" for a, _ in replies.seen)
                burst = []
    # Every take that started (the fuzzer may stop one and play another) ends and is reported.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        replies.until(P + "status", timeout=0.5, count=10 ** 9)  # collect what came
        started = sum(a == P + "playing" for a, _ in replies.seen)
        ended = sum(a == P + "take_done" or (a == P + "error" and args[:1] == [P + "play"]
                                             and "take failed" in str(args)) for a, args in replies.seen)
        if ended >= started:
            break
    else:
        problems.append(f"{started} takes started, {ended} ended")
    asked = sum(a == P + "status" for a, _ in replies.seen) + 1
    client.send_message(P + "status", [])  # after the take(s) too
    status = replies.until(P + "status", timeout=30, count=asked)
    if status is None:
        problems.append("status went unanswered after the fuzz")
    for address, args in replies.seen:
        if address == P + "error" and len(args) > 1 and "internal error" in str(args[1]):
            problems.append(f"internal error: {args}")
        if address == P + "error" and "take failed" in str(args):
            problems.append(f"a take failed: {args}")
    client.send_message(P + "quit", [])
    thread.join(60)
    replies.sock.close()
    assert not thread.is_alive(), "the service did not quit"
    assert not problems, f"OSC fuzz (seeds {cases[0]}..{cases[-1]}): " + "; ".join(problems[:10])
