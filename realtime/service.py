"""``rolypoly serve``: the drum machine as a long-lived service, controlled over OSC.

A controller (a phone app, Max/MSP, SuperCollider, a foot switch...) sends
OSC messages over UDP; the service answers on a reply address
(``127.0.0.1:9101`` by default). Every address is under ``/rolypoly/``:

=========================  =====================================================
message                    effect
=========================  =====================================================
``load_score PATH``        score for the next takes (a MIDI file in the sessions
                           folder); opens its session ``<sessions>/<stem>``
``load_session NAME``      the session folder ``<sessions>/NAME`` (with score.mid); with
                           ``load_score`` and ``drumify``, how patterns are swapped between takes
``partner_file PATH``      the partner is this recording (in the sessions folder), aligned
                           to the score by itself at each take (rolypoly.align)
``partner_device DEV``     the partner is this audio input (index or name)
``clock sim|real``         simulated clock (file partner only) or real time
``play``                   start one take; ``/rolypoly/playing`` now,
                           ``/rolypoly/take_done TAKE_DIR ROWS MISSES`` at its end
``stop``                   end the current take after the current hit
``tempo BPM``              next takes at BPM (20-400): the score's first tempo
                           becomes BPM, later tempo changes keep their ratio
``window FACTOR``          partner onset window: hit ± duration / FACTOR (above 1, at most 100)
``ab A B``                 learning-step weights (within ±1000), kept in the session's session.json
``finetune [TAKE [EPOCHS [LR]]]``  learn from a take (default: the latest; TAKE -1 too)
                           between takes, on a thread: ``/rolypoly/finetuning`` now,
                           ``/rolypoly/finetune_progress EPOCH EPOCHS LOSS`` per epoch,
                           ``/rolypoly/finetuned ACCEPTED VERSION CURRENT REASON`` at the
                           end; the next take plays the session's current model version
``humanize ON [SEED]``      1: the session's score plays humanized by the groove model
                           (per-class velocities and offsets) under the agent's ŷ; 0: as written
``drumify PATH [BPM]``     score-agnostic start: a recording of the partner alone (in the
                           sessions folder) becomes a drum score by the drumify model, in a
                           new session ``<stem>-drums`` that is loaded for the next take
``agent lstm|seq2seq``     the timing agent
``revert [VERSION]``       the session plays model version VERSION from the next take
                           (default: the version the current one learnt from);
                           ``/rolypoly/ok /rolypoly/revert VERSION``
``run/next``, ``run/stop``,  the keys of ``rolypoly session run`` (enter, space, r, q):
``run/revert``, ``run/quit``  next take, stop the take and learn, revert, quit; refused
                           (an error reply) when no session run owns the service
``generate MODE [EVERY]``  bars written during the next takes: follow, fills or free (fills every
                           EVERY bars; 0: only when asked), or off (the score as written)
``generate/follow F``,     controls of generation, also while a take plays (the bar after the
``generate/density F``,    one being written hears them): follow and density within [0, 1],
``generate/temperature T``,  temperature [0, 5], pocket [-1, 1] (pushed .. laid back), seed a whole
``generate/pocket P``,     number, style one of the Groove MIDI Dataset's (rock, funk, jazz ...;
``generate/seed N``,       ``any``: none); a value out of range is an error reply and changes nothing
``generate/style NAME``
``generate/fill``          a fill in the next bar not yet written, into the downbeat after it (a take
                           with generation must be playing; refused during a fill)
``status``                 ``/rolypoly/status key value ...``
``reply_to HOST PORT``     send replies there (``reply_to sender``: to each sender)
``quit``                   end the service (a running take is stopped and kept)
=========================  =====================================================

A setting that is accepted is acknowledged as ``/rolypoly/ok ADDRESS ...``.
Anything malformed (unknown address, wrong argument count or type, NaN, out
of range, a path leaving the sessions folder, a score that does not load)
is answered ``/rolypoly/error ADDRESS REASON`` and changes nothing: every
handler works out the complete new state first and stores it last. Ranges
are checked on the way in, so nothing stored can make a later reply
unsendable; a reply that still cannot be packed as OSC is sent as an error
reply, never dropped. Every path the service writes through -- the ones a
message names and the session folders it works out from them (``<stem>``,
``<stem>-drums``) with what it writes in them -- must resolve inside the
sessions folder, symlinks followed.

**While a take plays** nothing that parses or loads runs in the service's
own process, where it would hold the take's interpreter lock and set off
garbage collections that delay hits:

- ``finetune``, ``humanize``, ``drumify`` and ``play`` are refused
  (``/rolypoly/error ADDRESS a take is playing; ...``);
- ``load_score``, ``load_session`` and ``ab`` (which rewrites the session's
  session.json) are done by a helper process
  (:mod:`rolypoly.realtime.offload`) and answered when it is done: a second
  or so, a few seconds for a large score, a few more the first time, while
  the helper starts. Their reply is the usual one, only later;
- until then the messages that come after them wait, and are answered in
  the order they came, as if each had been handled at once; ``status``,
  ``stop`` and ``quit`` are answered at once all the same (``status`` then
  ends with ``pending ADDRESS waiting N``). At most 32 messages wait; more
  are refused (``busy``). A load that fails, or whose helper process dies or
  takes longer than two minutes, is answered ``/rolypoly/error ADDRESS REASON``
  and changes nothing; messages still waiting at ``quit`` are answered
  ``/rolypoly/error ADDRESS not handled: the service quit first``.

Between takes every message is handled at once, its replies sent as it
arrives. A real-clock take plays in a tuned interpreter
(:func:`rolypoly.realtime.clock.steady_interpreter`).

The core, :meth:`Service.handle`, needs no sockets; :func:`serve` wires it
to a python-osc UDP server and sends the replies with a python-osc client.
Takes run on their own thread through :func:`rolypoly.realtime.duet.play_take`, never
on the thread that reads OSC, so ``stop`` and ``status`` work mid-take; replies
that come later (``take_done``, a load done by the helper process) go out
through :attr:`Service.emit`.

Examples
--------
>>> svc = Service("sessions")                                   # doctest: +SKIP
>>> svc.handle("/rolypoly/load_score", "song.mid")              # doctest: +SKIP
[('/rolypoly/ok', ['/rolypoly/load_score', 'song', 412, 'sessions/song', 138.0, 1.0, 1.0])]
>>> svc.handle("/rolypoly/window", float("nan"))                # doctest: +SKIP
[('/rolypoly/error', ['/rolypoly/window', 'FACTOR must be a finite number, got nan'])]
"""
from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import math
import os
import queue
import shutil
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path


from rolypoly import paths
from rolypoly.errors import DeviceError, RolypolyError
from rolypoly.errors import one_line as _one_line
from rolypoly.paths import checked_path
from rolypoly.score import Score, at_tempo
from rolypoly.session import AB_LIMIT

from . import duet
from .clock import steady_interpreter
from .offload import Worker

PREFIX = "/rolypoly/"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100
DEFAULT_REPLY = ("127.0.0.1", 9101)
#: Tempi a ``tempo`` message may ask for (quarter notes per minute).
TEMPO_LIMITS = (20.0, 400.0)
AGENTS = ("lstm", "seq2seq")
CLOCKS = ("real", "sim")
#: Largest whole number a message may give as a seed, device or take (an OSC int32).
MAX_INDEX = 2 ** 31 - 1
#: How long ``quit`` waits for a stopped take to write its files.
TAKE_JOIN_S = 120.0
#: The serve loop looks for ``quit`` at least this often.
POLL_S = 0.1
#: Messages answered at once even while another one's work is in the worker process.
IMMEDIATE = ("status", "stop", "quit", "run/stop", "run/quit", "generate/fill",
             *(f"generate/{c}" for c in ("follow", "density", "temperature", "pocket", "seed", "style")))
#: Generation modes a ``generate`` message may choose (``off``: the score as written).
GENERATE_MODES = ("follow", "fills", "free", "off")
#: The commands of ``rolypoly session run`` (:mod:`rolypoly.realtime.run`), as ``run/<command>``.
RUN_COMMANDS = ("next", "stop", "revert", "quit", "fill")
#: At most this many messages wait for work in the worker process; more are refused.
MAX_WAITING = 32


class Rejected(RolypolyError):
    """A message the service refuses; the text is the one-line reason."""


Reply = tuple  # (OSC address, [arguments])


# ----------------------------------------------------------------------------- argument checks

def _kind(value) -> str:
    """OSC-ish name of an argument's type, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an int", float: "a float", str: "a string", bytes: "a blob",
            type(None): "nil"}.get(type(value), type(value).__name__)


def _number(value, name: str) -> float:
    """A finite int or float argument as a float.

    >>> _number(3, "FACTOR")
    3.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(f"{name} must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise Rejected(f"{name} must be a finite number, got {value}")
    return float(value)


def _text(value, name: str) -> str:
    """A non-empty one-line string argument."""
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, got {_kind(value)}")
    if not value.strip() or "\0" in value or "\n" in value:
        raise Rejected(f"{name} must be a non-empty one-line string")
    return value


def _choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        shown = value if isinstance(value, str) else _kind(value)
        raise Rejected(f"{name} must be {' or '.join(options)}, got {shown}")
    return value


def _inside(root: Path, rel, name: str = "PATH") -> Path:
    """``rel`` (relative to ``root``, or absolute) as a resolved path that stays inside ``root``.

    Symlinks are followed before the check, so a link pointing out of the
    folder is refused like ``..`` or an absolute path elsewhere.

    >>> _inside(Path("/srv/sessions"), "song/score.mid").as_posix()  # doctest: +SKIP
    '/srv/sessions/song/score.mid'
    """
    rel = _text(rel, name)
    checked_path(root / rel, name)  # a name too long for the system: said so, not an OSError later
    try:
        path = (root / rel).resolve()  # an absolute rel replaces root here
    except (OSError, RuntimeError, ValueError) as e:  # symlink loops, odd bytes
        raise Rejected(f"{name} {rel}: {_one_line(e)}") from None
    if path != root and root not in path.parents:
        raise Rejected(f"{name} {rel}: outside the sessions folder {root}")
    return path


#: What the service writes in a session folder (rolypoly.session, rolypoly.realtime.duet, session_plots).
SESSION_ENTRIES = ("session.json", "score.mid", "takes", "models", "plots")


def _confined(root: Path, folder: Path) -> Path:
    """A session folder the service derived (from a file's name, a recording's), checked as :func:`_inside`
    checks the paths it is given: the folder and everything it writes there must resolve inside ``root``.

    One rule for every path: ``<sessions>/sym`` linking elsewhere is refused
    whether a message names it or the service works it out.
    """
    for path in (folder, *(folder / entry for entry in SESSION_ENTRIES)):
        if path is folder or os.path.lexists(path):
            _inside(root, os.path.relpath(path, root), "session folder")
    return folder


def _synth_available() -> bool:
    """Whether rolypoly.synth (the drum sounds of a take's mix) is installed."""
    try:
        return importlib.util.find_spec("rolypoly.synth") is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- state

@dataclass(frozen=True)
class Settings:
    """What the next take will use. Frozen: a handler builds a new one and stores it last."""

    score_path: Path | None = None
    score: Score | None = None
    session: Path | None = None
    partner: tuple | None = None          # ("file", Path) or ("device", index or name)
    clock: str = "real"
    agent: str = "lstm"
    tempo_bpm: float | None = None        # None: the score's own tempo
    window: float = 3.0
    a: float = 1.0
    b: float = 1.0
    reply: tuple | None = DEFAULT_REPLY   # None: reply to each message's sender
    last_take: str = ""
    # A partner source made by the local command line for each take (use_partner); None: from ``partner``.
    make_source: object = None
    generate: str | None = None           # bars written during the take: follow, fills, free (None: off)
    fill_every: int = 0
    controls: dict = field(default_factory=dict)   # generation controls set so far (rolypoly.generate.Controls)

    @property
    def bpm(self) -> float:
        """Tempo the next take starts at (0 without a score)."""
        if self.tempo_bpm is not None:
            return self.tempo_bpm
        return float(self.score.tempo_bpm[0]) if self.score is not None else 0.0

    @property
    def tempo_factor(self) -> float:
        """How much faster than written the next take plays."""
        if self.score is None or self.tempo_bpm is None:
            return 1.0
        return self.tempo_bpm / float(self.score.tempo_bpm[0])

    def partner_text(self) -> str:
        if self.partner is None:
            return ""
        return f"{self.partner[0]}:{self.partner[1]}"


class _Take:
    """A take in progress: its thread, its engine once built, and what it needs afterwards."""

    def __init__(self, lock: threading.Lock, sender):
        self.lock, self.sender = lock, sender
        self.engine = None
        self.result = None
        self.stop_requested = False
        self.thread: threading.Thread | None = None

    def attach(self, engine) -> None:
        """``on_engine`` hook of play_take: runs on the take thread before the first hit."""
        with self.lock:
            self.engine = engine
            if self.stop_requested:  # a stop that came while the model was loading
                engine.stop()

    def request_stop(self) -> None:
        """Stop the take (call with ``lock`` held)."""
        self.stop_requested = True
        if self.engine is not None:
            self.engine.stop()

    def status(self) -> list:
        """Engine status as key/value pairs (empty until the engine exists)."""
        if self.engine is None:
            return []
        s = dict(self.engine.status)
        out = []
        for key in ("row", "bar", "yhat_ms", "diff_ms", "misses", "xruns"):
            value = s.get(key, 0)
            out += [key, int(value) if key in ("row", "bar", "misses", "xruns") else float(value)]
        return out


# ----------------------------------------------------------------------------- the service

class Service:
    """State of ``rolypoly serve`` and the handling of its messages (see module docstring).

    Parameters
    ----------
    sessions_dir : folder every path a message names must stay in (created if missing)
    reply : (host, port) replies go to, or None to reply to each message's sender
    weights : optional {agent: weights file}; the shipped weights where omitted
    mix, plot : passed to play_take (the mix only when rolypoly.synth exists)
    emit : callable(destination, replies) for replies sent later (``take_done``,
        a failed take). Default: put them on :attr:`outbox`.
    player : what plays a take (default :func:`rolypoly.realtime.duet.play_take`; tests swap it)
    forgetting_set : callable() -> the Groove MIDI Dataset takes fine-tuning's forgetting check
        watches (``rolypoly.pretrain.gmd.forgetting_set``, given by the command line), called on
        the first fine-tune; None, or a RolypolyError from it: fine-tuning goes on and says the
        check was skipped
    worker : the :class:`rolypoly.realtime.offload.Worker` that loads scores and sessions while a
        take plays (default: a new one)
    midi, osc : outputs every take plays through (a MidiOut, an OscOut; default none: the take's
        files only); the caller closes them
    drums, kit, midi_early_s : the drums placed to the sample on every real-clock take (a
        :class:`~rolypoly.realtime.rig.Rig`'s ``drums``: JackIO, AudioOut, a duplex LiveSource),
        the kit they and ``mix.wav`` sound with, how early rtmidi MIDI leaves; the caller closes them
    engine : EngineSettings every take starts from (budget, partner offset); the ``window``
        message sets its window

    Examples
    --------
    >>> svc = Service(tmp_sessions)                                     # doctest: +SKIP
    >>> svc.handle("/rolypoly/agent", "seq2seq")                        # doctest: +SKIP
    [('/rolypoly/ok', ['/rolypoly/agent', 'seq2seq'])]
    >>> svc.handle("/rolypoly/agent", "gru")                            # doctest: +SKIP
    [('/rolypoly/error', ['/rolypoly/agent', 'AGENT must be lstm or seq2seq, got gru'])]
    """

    def __init__(self, sessions_dir=None, *, reply=DEFAULT_REPLY, weights: dict | None = None,
                 mix: bool = True, plot: bool = True, emit=None, player=None, forgetting_set=None,
                 worker: Worker | None = None, midi=None, osc=None, engine=None,
                 partner_midi: str | None = None, instrument: str | None = None, drums=None, kit=None,
                 midi_early_s: float = 0.0):
        root = paths.sessions_dir(sessions_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RolypolyError(f"{root}: cannot use as the sessions folder ({_one_line(e)})") from None
        self.root = root.resolve()
        self.settings = Settings(reply=tuple(reply) if reply is not None else None)
        self.weights = dict(weights or {})
        self.mix, self.plot = mix, plot
        self.partner_midi, self.instrument = partner_midi, instrument   # heard in every take
        self.midi, self.osc, self.engine_settings = midi, osc, engine
        self.drums, self.kit, self.midi_early_s = drums, kit, midi_early_s
        #: callable(command) taking the ``run/<command>`` messages (set by a session run), else None
        self.on_run = None
        #: what the latest fine-tune returned (rolypoly.learning.learn_from_take), for a session run's report
        self.last_learning: dict | None = None
        self.outbox: queue.Queue = queue.Queue()
        self.emit = emit or (lambda dest, replies: self.outbox.put((dest, replies)))
        self.player = player
        self.quitting = False
        self._take: _Take | None = None
        self._tuning: threading.Thread | None = None
        self._dataset = None                 # GMD validation subset, loaded on the first finetune
        self._mse_cache = None               # its MSEs per model, kept across fine-tunes
        self.forgetting_set = forgetting_set
        self.worker = worker or Worker()     # loads and parses while a take plays
        self._job: _Job | None = None        # a message whose work is in the worker process
        self._waiting: collections.deque = collections.deque()  # messages that came after it
        self._lock = threading.Lock()        # guards settings and the current take
        # Held while a message is handled and its replies sent, and while a take thread
        # sends its own: so /rolypoly/playing always goes out before /rolypoly/take_done.
        self.emit_lock = threading.Lock()

    # ------------------------------------------------------------------ entry point
    def handle(self, address, *args, sender=None) -> list[Reply]:
        """Handle one message; the replies to send now, as ``(address, [args])`` pairs.

        Never raises: a problem becomes ``/rolypoly/error address reason``
        and leaves the state as it was. While a take plays, a message whose
        work goes to the worker process is answered later, through
        :attr:`emit`, and so are the messages that come after it (except
        ``status``, ``stop`` and ``quit``): the list is then empty.
        """
        name = address[len(PREFIX):] if isinstance(address, str) and address.startswith(PREFIX) else None
        with self._lock:
            if (self._job is not None or self._waiting) and name not in IMMEDIATE:
                if len(self._waiting) >= MAX_WAITING:
                    return [_error(address, f"busy: {MAX_WAITING} messages wait for {PREFIX}{self._job_name()}; "
                                            "send this again after its reply")]
                self._waiting.append((address, args, sender))
                return []
            return self._dispatch(address, args, sender)

    def _dispatch(self, address, args, sender) -> list[Reply]:
        """Check and handle one message (with ``_lock`` held)."""
        name = address[len(PREFIX):] if isinstance(address, str) and address.startswith(PREFIX) else None
        entry = self._HANDLERS.get(name)
        if entry is None:
            known = ", ".join(sorted(self._HANDLERS))
            return [_error(address, f"unknown address; known under {PREFIX}: {known}")]
        method, counts, usage = entry
        if len(args) not in counts:
            return [_error(address, f"takes {usage or 'no arguments'}, got {len(args)} argument"
                                    f"{'s' * (len(args) != 1)}")]
        return _answer(address, getattr(self, method), *args, sender=sender)

    def destination(self, sender=None):
        """(host, port) replies go to: the reply address, or the sender in sender mode."""
        return self.settings.reply if self.settings.reply is not None else sender

    @property
    def playing(self) -> bool:
        return self._take is not None

    @property
    def engine(self):
        """The engine of the take playing now, or None: for displays, which only read its ``status``."""
        take = self._take
        return take.engine if take is not None else None

    @property
    def tuning(self) -> bool:
        return self._tuning is not None

    def use_partner(self, kind: str, label: str, make) -> None:
        """The partner of the next takes, from the local command line: ``make()`` gives each take its source.

        The command line may name any file or device (and its channel, rate,
        block), where a message may only name files in the sessions folder;
        ``kind`` ("file" or "device") keeps the clock checks.
        """
        with self._lock:
            self.settings = replace(self.settings, partner=(_choice(kind, "KIND", ("file", "device")), label),
                                    make_source=make)

    def snapshot(self) -> dict:
        """Settings as plain values (for tests and logs)."""
        s = self.settings
        return {"state": "playing" if self.playing else "fine-tuning" if self._tuning else "idle", "score": str(s.score_path or ""),
                "session": str(s.session or ""), "partner": s.partner_text(), "clock": s.clock,
                "agent": s.agent, "tempo": s.bpm, "tempo_factor": s.tempo_factor, "window": s.window,
                "A": s.a, "B": s.b, "reply": s.reply, "last_take": s.last_take}

    def close(self, timeout: float = TAKE_JOIN_S) -> None:
        """Stop a running take and wait until its files (and a running fine-tune or load) are written.

        Messages still waiting for a load are answered with an error: they were not handled.
        """
        with self._lock:
            take, tuning, job = self._take, self._tuning, self._job
            self.quitting = True  # nothing waiting starts now (see _drain)
            if take is not None:
                take.request_stop()
        if take is not None and take.thread is not None:
            take.thread.join(timeout)
        if tuning is not None:
            tuning.join(timeout)
        if job is not None:
            job.thread.join(timeout)
        self.worker.close()
        with self.emit_lock:
            with self._lock:
                waiting, self._waiting = list(self._waiting), collections.deque()
            for address, args, sender in waiting:
                self.emit(self.destination(sender), [_error(address, "not handled: the service quit first")])

    # ------------------------------------------------------------------ work off the take's process
    def _off_take(self, what: str, job, args: tuple, apply, sender) -> list[Reply]:
        """``apply(job(*args))``: here and now between takes, in the worker process while a take plays.

        ``job`` is a module-level function doing the parsing and loading (it
        may raise RolypolyError: the error reply), ``apply`` stores its
        small result in the settings and returns the replies. Mid-take the
        replies go out when the worker is done (:meth:`_run_job`); until
        then later messages wait (:meth:`handle`).
        """
        if self._take is None:
            return apply(job(*args))
        pending = _Job(what, self.destination(sender), apply)
        pending.thread = threading.Thread(target=self._run_job, args=(pending, job, args),
                                          name=f"rolypoly-{what}", daemon=True)
        self._job = pending
        pending.thread.start()
        return []

    def _run_job(self, pending: "_Job", job, args: tuple) -> None:
        """Body of a job's thread: the worker does the work; its result is stored and answered."""
        address = PREFIX + pending.what
        try:
            result, failure = self.worker.run(job, *args), None
        except RolypolyError as e:  # the job's own refusal, or a worker that died or hung
            result, failure = None, _one_line(e)
        except Exception as e:  # noqa: BLE001 -- a bug must not end the service either
            result, failure = None, f"internal error: {type(e).__name__}: {_one_line(e)}"
        with self.emit_lock:
            with self._lock:
                self._job = None
                if failure is None:
                    replies = _answer(address, pending.apply, result)
                else:
                    replies = [_error(address, failure)]
                out = [(pending.dest, replies)] + self._drain()
            for dest, replies in out:
                if replies:
                    self.emit(dest, replies)

    def _drain(self) -> list:
        """Handle the messages that waited, in order, until one goes to the worker again (``_lock`` held)."""
        out = []
        while self._job is None and self._waiting and not self.quitting:
            address, args, sender = self._waiting.popleft()
            replies = self._dispatch(address, args, sender)
            out.append((self.destination(sender), replies))
        return out

    def _job_name(self) -> str:
        return self._job.what if self._job is not None else "the messages before it"

    # ------------------------------------------------------------------ score and session
    def _load_score(self, path, *, sender) -> list[Reply]:
        midi = _inside(self.root, path)
        # A session's own score.mid reopens that session; any other file gets <sessions>/<stem>.
        own = midi.name == "score.mid" and (midi.parent / "session.json").is_file()
        folder = _confined(self.root, midi.parent if own else self.root / midi.stem)
        return self._open(folder, midi, "load_score", sender=sender)

    def _load_session(self, name, *, sender) -> list[Reply]:
        name = _text(name, "NAME")
        if name in (".", "..") or "/" in name or (os.altsep and os.altsep in name) or os.sep in name:
            raise Rejected(f"NAME {name}: a session is a folder name, without / or ..")
        folder = _confined(self.root, _inside(self.root, name, "NAME"))
        if not (folder / "score.mid").is_file():
            raise Rejected(f"no session {name} in {self.root} (a folder with score.mid)")
        return self._open(folder, folder / "score.mid", "load_session", name=name, sender=sender)

    def _open(self, session: Path, midi: Path, what: str, name: str | None = None, *, sender) -> list[Reply]:
        def opened(result) -> list[Reply]:
            folder, score, ab = result
            # A new score plays at its own tempo until told otherwise.
            self.settings = replace(self.settings, score_path=midi, score=score, session=folder,
                                    tempo_bpm=None, a=ab[0], b=ab[1])
            return [_ok(what, score.name, len(score), str(folder), float(score.tempo_bpm[0]), *ab)]

        ab = (self.settings.a, self.settings.b)
        return self._off_take(what, _open_session, (session, midi, name, ab), opened, sender)

    # ------------------------------------------------------------------ partner and clock
    def _partner_file(self, path, *, sender) -> list[Reply]:
        wav = _inside(self.root, path)
        if not wav.is_file():
            raise Rejected(f"PATH {path}: no such file in {self.root}")
        try:
            import soundfile

            info = soundfile.info(str(wav))
        except Exception as e:  # libsndfile's errors come in several types
            raise Rejected(f"PATH {path}: not a readable audio file ({_one_line(e)})") from None
        self.settings = replace(self.settings, partner=("file", wav), make_source=None)
        return [_ok("partner_file", str(wav), float(info.duration))]

    def _partner_device(self, device, *, sender) -> list[Reply]:
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise Rejected(f"DEV must be a device index or name, got {_kind(device)}")
        if isinstance(device, int) and not 0 <= device <= MAX_INDEX:
            raise Rejected(f"DEV {device}: a device index is 0-{MAX_INDEX}")
        if isinstance(device, str):
            device = _text(device, "DEV")
        if self.settings.clock == "sim":
            raise Rejected("a live input needs the real clock; send clock real first")
        # The device itself is opened at play: it may be plugged in meanwhile.
        self.settings = replace(self.settings, partner=("device", device), make_source=None)
        return [_ok("partner_device", device)]

    def _clock(self, kind, *, sender) -> list[Reply]:
        kind = _choice(kind, "CLOCK", CLOCKS)
        if kind == "sim" and self.settings.partner and self.settings.partner[0] == "device":
            raise Rejected("the simulated clock needs a partner file (partner_file PATH)")
        self.settings = replace(self.settings, clock=kind)
        return [_ok("clock", kind)]

    # ------------------------------------------------------------------ take settings
    def _tempo(self, bpm, *, sender) -> list[Reply]:
        bpm = _number(bpm, "BPM")
        lo, hi = TEMPO_LIMITS
        if not lo <= bpm <= hi:
            raise Rejected(f"BPM {bpm:g} is outside {lo:g}-{hi:g}")
        score = self.settings.score
        if score is None:
            raise Rejected("load a score first (the tempo scales the score's own tempo)")
        at_tempo(score, bpm)  # refuses a tempo whose later changes leave the playable range
        self.settings = replace(self.settings, tempo_bpm=bpm)
        return [_ok("tempo", bpm, self.settings.tempo_factor)]

    def _window(self, factor, *, sender) -> list[Reply]:
        factor = _number(factor, "FACTOR")
        lo, hi = duet.SETTING_RANGES["window_factor"]  # the range a take accepts, checked on the way in
        if not lo < factor <= hi:
            raise Rejected(f"FACTOR {factor:g} must be > {lo:g} and at most {hi:g} "
                           "(window: hit ± duration / FACTOR)")
        self.settings = replace(self.settings, window=factor)
        return [_ok("window", factor)]

    def _ab(self, a, b, *, sender) -> list[Reply]:
        a, b = _number(a, "A"), _number(b, "B")
        if not (abs(a) <= AB_LIMIT and abs(b) <= AB_LIMIT):  # what session.json may hold
            raise Rejected(f"A {a:g} and B {b:g} must be within ±{AB_LIMIT:g}")

        def stored(_) -> list[Reply]:
            self.settings = replace(self.settings, a=a, b=b)
            return [_ok("ab", a, b)]

        if self.settings.session is None:
            return stored(None)
        # Into session.json first, so a failed write changes nothing.
        return self._off_take("ab", _set_ab, (self.settings.session, a, b), stored, sender)

    # ------------------------------------------------------------------ the pattern
    def _humanize(self, on, seed=0, *, sender) -> list[Reply]:
        from rolypoly.session import Session

        if self.settings.session is None:
            raise Rejected("no session: send load_score PATH or load_session NAME first")
        if self._take is not None:
            raise Rejected("a take is playing; change the pattern between takes")
        on, seed = _number(on, "ON"), _number(seed, "SEED")
        if on not in (0.0, 1.0) or seed != int(seed) or not 0 <= seed <= MAX_INDEX:
            raise Rejected(f"ON must be 0 or 1 and SEED a whole number 0-{MAX_INDEX}")
        Session(self.settings.session).set_pattern(humanize=bool(on), seed=int(seed))
        return [_ok("humanize", int(on), int(seed))]

    def _drumify(self, path, bpm=None, *, sender) -> list[Reply]:
        recording = _inside(self.root, path)
        if not recording.is_file():
            raise Rejected(f"PATH {path}: no such file in {self.root}")
        if self._take is not None:
            raise Rejected("a take is playing; drumify between takes")
        from rolypoly.pattern import drumify_recording  # torch models: imported only when used
        bpm = None if bpm is None else _number(bpm, "BPM")
        if bpm is not None and not TEMPO_LIMITS[0] <= bpm <= TEMPO_LIMITS[1]:
            raise Rejected(f"BPM {bpm:g} is outside {TEMPO_LIMITS[0]:g}-{TEMPO_LIMITS[1]:g}")
        k, name = 0, f"{recording.stem}-drums"
        while os.path.lexists(self.root / name):  # never into an existing session (nor through a link)
            k += 1
            name = f"{recording.stem}-drums-{k}"
        folder = _confined(self.root, self.root / name)
        folder.mkdir()
        try:
            midi = drumify_recording(recording, folder / "drumified.mid", bpm=bpm)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self._open(folder, midi, "drumify", name=name, sender=sender)

    def _agent(self, kind, *, sender) -> list[Reply]:
        kind = _choice(kind, "AGENT", AGENTS)
        self.settings = replace(self.settings, agent=kind)
        return [_ok("agent", kind)]

    def _reply_to(self, *args, sender) -> list[Reply]:
        if len(args) == 1:
            if args[0] != "sender":
                raise Rejected("takes HOST PORT, or the word sender")
            self.settings = replace(self.settings, reply=None)
            return [_ok("reply_to", "sender")]
        host, port = _text(args[0], "HOST"), args[1]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise Rejected(f"PORT must be an int in 1..65535, got {port if isinstance(port, int) else _kind(port)}")
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as e:
            raise Rejected(f"HOST {host} cannot be resolved ({_one_line(e)})") from None
        self.settings = replace(self.settings, reply=(host, port))
        return [_ok("reply_to", host, port)]

    # ------------------------------------------------------------------ generation
    def _generate(self, mode, every=0, *, sender) -> list[Reply]:
        mode = _choice(mode, "MODE", GENERATE_MODES)
        every = _number(every, "EVERY")
        if every != int(every) or not 0 <= every <= 1000:
            raise Rejected(f"EVERY must be a whole number of bars 0-1000, got {every:g}")
        if mode != "off":
            self._checked_controls(mode, self.settings.controls)
        self.settings = replace(self.settings, generate=None if mode == "off" else mode, fill_every=int(every))
        return [_ok("generate", mode, int(every))]

    @staticmethod
    def _checked_controls(mode: str | None, controls: dict):
        from .live_bars import mode_controls

        return mode_controls(mode, controls)  # RolypolyError: the reply

    def _feed(self):
        """The bar feed of the take playing now (None: no take, or one without generation)."""
        engine = self.engine
        return getattr(engine, "bars", None) if engine is not None else None

    def _control(self, name: str, value) -> list[Reply]:
        if name == "style":
            value = _text(value, "NAME").strip().lower()
            value = None if value == "any" else value
        else:
            value = _number(value, name.upper())
            if name == "seed":
                if value != int(value) or not 0 <= value <= MAX_INDEX:
                    raise Rejected(f"SEED must be a whole number 0-{MAX_INDEX}, got {value:g}")
                value = int(value)
        controls = {**self.settings.controls, name: value}
        self._checked_controls(self.settings.generate, controls)
        feed = self._feed()
        if feed is not None:
            feed.set(**{name: value})  # the take playing hears it from the next bar written
        self.settings = replace(self.settings, controls=controls)
        return [_ok(f"generate/{name}", "any" if value is None else value)]

    def _generate_follow(self, value, *, sender) -> list[Reply]:
        return self._control("follow", value)

    def _generate_density(self, value, *, sender) -> list[Reply]:
        return self._control("density", value)

    def _generate_temperature(self, value, *, sender) -> list[Reply]:
        return self._control("temperature", value)

    def _generate_pocket(self, value, *, sender) -> list[Reply]:
        return self._control("pocket", value)

    def _generate_seed(self, value, *, sender) -> list[Reply]:
        return self._control("seed", value)

    def _generate_style(self, value, *, sender) -> list[Reply]:
        return self._control("style", value)

    def _generate_fill(self, *, sender) -> list[Reply]:
        feed = self._feed()
        if feed is None:
            raise Rejected("no take with generation is playing (generate MODE, then play)")
        bar = feed.fill()  # RolypolyError (a fill already playing or coming): the error reply
        return [_ok("generate/fill", bar + 1)]

    # ------------------------------------------------------------------ takes
    def _play(self, *, sender) -> list[Reply]:
        s = self.settings
        if self.quitting:
            raise Rejected("the service is quitting")
        if self._take is not None:
            raise Rejected("a take is playing; send stop first")
        if self._tuning is not None:
            raise Rejected("fine-tuning; wait for /rolypoly/finetuned")
        if s.score is None:
            raise Rejected("no score: send load_score PATH or load_session NAME first")
        if s.partner is None and self.partner_midi is None:
            raise Rejected("no partner: send partner_file PATH or partner_device DEV first")
        if s.clock == "sim" and (s.partner is None or s.partner[0] != "file" or self.partner_midi):
            raise Rejected("the simulated clock needs a partner file")
        weights = self._weights(s)
        source, clock = self._source(s), self._make_clock(s.clock)
        take = _Take(self._lock, sender)
        kwargs = self._take_kwargs(s, source, clock, weights, take)
        take.thread = threading.Thread(target=self._run_take, args=(take, s, kwargs),
                                       name="rolypoly-take", daemon=False)
        self._take = take
        take.thread.start()
        return [("/rolypoly/playing", [s.score.name, s.bpm, s.tempo_factor])]

    def _weights(self, s: Settings) -> Path | None:
        """Weights given to the service for this agent kind, else None: the session's model version."""
        from rolypoly.session import Session

        explicit = self.weights.get(s.agent)
        if explicit:
            if not Path(explicit).is_file():
                raise Rejected(f"no weights for the {s.agent} agent ({explicit}); pretrain it or choose another")
            return Path(explicit)
        Session(s.session).agent(s.agent)  # refuses here, before the take, when it cannot play
        return None

    def _source(self, s: Settings):
        from rolypoly.onsets import session_settings

        from .sources import FileSource, LiveSource

        from .midi_partner import CombinedSource, MidiSource

        if s.make_source is not None:
            return s.make_source()
        if s.partner is None:                # a MIDI partner alone (serve --partner-midi)
            return MidiSource(self.partner_midi)
        kind, where = s.partner
        # The session's calibration (rolypoly onsets --calibrate) and the instrument served with.
        detector = session_settings(s.session, self.instrument)
        if kind == "file":
            audio = FileSource(where, detector=detector)  # unreadable audio: RolypolyError, the error reply
        else:
            try:
                audio = LiveSource(where, detector=detector)  # DeviceError (missing, busy): the error reply
            except (OSError, ImportError) as e:  # no PortAudio at all
                raise DeviceError(f"audio input {where}: {_one_line(e)}") from None
        if self.partner_midi is None:
            return audio
        return CombinedSource(audio, MidiSource(self.partner_midi))

    @staticmethod
    def _make_clock(kind: str):
        from .clock import RealClock, SimClock

        return SimClock() if kind == "sim" else RealClock()

    def _take_kwargs(self, s: Settings, source, clock, weights: Path | None, take: _Take) -> dict:
        from .engine import EngineSettings

        settings = replace(self.engine_settings or EngineSettings(), window_factor=s.window)
        return dict(score_path=s.score_path, source=source, clock=clock, session=s.session,
                    agent=s.agent, weights=weights, settings=settings,
                    tempo_bpm=s.tempo_bpm if s.tempo_factor != 1.0 else None, midi=self.midi, osc=self.osc,
                    drums=self.drums if s.clock == "real" else None, kit=self.kit, midi_early_s=self.midi_early_s,
                    on_engine=take.attach, mix=self.mix and _synth_available(), plot=self.plot,
                    generate=None if s.generate is None else {"mode": s.generate, "fill_every": s.fill_every,
                                                              "controls": dict(s.controls)})

    def _run_take(self, take: _Take, s: Settings, kwargs: dict) -> None:
        """Body of the take thread: play, finish the files, report, go idle."""
        last = None
        try:
            with steady_interpreter() if s.clock == "real" else contextlib.nullcontext():
                summary = (self.player or duet.play_take)(**kwargs)
            take_dir = Path(summary["take_dir"])
            _write_take_settings(take_dir, s)
            last = str(take_dir)
            replies = [("/rolypoly/take_done", [last, int(summary["rows"]), int(summary["misses"])])]
        except Exception as e:  # a failed take is reported; the service goes on
            replies = [_error(PREFIX + "play", f"take failed: {_one_line(e)}")]
        finally:
            with self._lock:
                self._take = None
                if last is not None:
                    self.settings = replace(self.settings, last_take=last)
        with self.emit_lock:
            self.emit(self.destination(take.sender), replies)

    # ------------------------------------------------------------------ learning between takes
    def _finetune(self, take=-1, epochs=None, lr=None, *, sender) -> list[Reply]:
        from rolypoly.finetune import EPOCHS, LEARNING_RATE
        from rolypoly.session import Session

        if self.settings.session is None:
            raise Rejected("no session: send load_score PATH or load_session NAME first")
        if self._take is not None:
            raise Rejected("a take is playing; fine-tune between takes")
        if self._tuning is not None:
            raise Rejected("already fine-tuning; wait for /rolypoly/finetuned")
        take = int(_number(take, "TAKE"))
        if not -1 <= take <= MAX_INDEX:
            raise Rejected(f"TAKE {take} must be a take number, or -1 for the latest")
        epochs = EPOCHS if epochs is None else int(_number(epochs, "EPOCHS"))
        lr = LEARNING_RATE if lr is None else _number(lr, "LR")
        if not 1 <= epochs <= 200:
            raise Rejected(f"EPOCHS must be 1..200, got {epochs}")
        if not 0 < lr <= 0.1:
            raise Rejected(f"LR must be in (0, 0.1], got {lr}")
        session = Session(self.settings.session)
        session.take_dir(None if take < 0 else take)  # no such take: refused now, not on the thread
        dest = self.destination(sender)
        self._tuning = threading.Thread(target=self._run_finetune, name="rolypoly-finetune", daemon=False,
                                        args=(session, None if take < 0 else take, epochs, lr, dest))
        self._tuning.start()
        return [("/rolypoly/finetuning", [str(session.folder), take, epochs, lr])]

    def _run_finetune(self, session, take, epochs, lr, dest) -> None:
        """Body of the fine-tuning thread: learn, report progress and the result, go idle."""
        def progress(epoch, total, loss):
            with self.emit_lock:
                self.emit(dest, [("/rolypoly/finetune_progress", [epoch, total, float(loss)])])

        try:
            dataset, note = self._gmd_subset()
            report = session.finetune(take, epochs=epochs, lr=lr, dataset=dataset, mse_cache=self._mse_cache,
                                      progress=progress)
            if self.plot:
                from rolypoly.session_plots import plot_session

                plot_session(session.folder)
            self.last_learning = report
            reason = report["reason"] + (f" ({note})" if note else "")
            version = -1 if report["version"] is None else int(report["version"])
            replies = [("/rolypoly/finetuned", [int(bool(report["accepted"])), version,
                                                int(report["current"]), reason, int(report["take"])])]
        except Exception as e:  # a failed fine-tune is reported; the service goes on
            replies = [_error(PREFIX + "finetune", f"fine-tuning failed: {_one_line(e)}")]
        finally:
            with self._lock:
                self._tuning = None
        with self.emit_lock:
            self.emit(dest, replies)

    def _gmd_subset(self):
        """The GMD validation subset for the forgetting check (cached), or None and why."""
        if self._dataset is None:
            if self.forgetting_set is None:
                return None, "no forgetting check: no dataset given"
            try:
                self._dataset = self.forgetting_set()
                from rolypoly.finetune import DatasetMSECache

                self._mse_cache = DatasetMSECache()
            except RolypolyError as e:
                return None, f"no forgetting check: {_one_line(e)}"
        return self._dataset, ""

    def _stop(self, *, sender) -> list[Reply]:
        if self._take is None:
            raise Rejected("no take is playing")
        self._take.request_stop()
        return [("/rolypoly/stopping", [])]

    def _revert(self, version=None, *, sender) -> list[Reply]:
        if self.settings.session is None:
            raise Rejected("no session: send load_score PATH or load_session NAME first")
        if version is not None:
            version = _number(version, "VERSION")
            if version != int(version) or version < 0:
                raise Rejected(f"VERSION must be a model version number (0, 1, ...), got {version:g}")
            version = int(version)

        def reverted(k) -> list[Reply]:
            return [_ok("revert", k)]

        # Reading version records and checking weights loads torch: off the take's process mid-take.
        return self._off_take("revert", _revert_session, (self.settings.session, version), reverted, sender)

    def _run(self, command: str, sender) -> list[Reply]:
        if self.on_run is None:
            raise Rejected("no session run here (rolypoly session run NAME takes these)")
        self.on_run(command)
        return [_ok(f"run/{command}")]

    def _run_next(self, *, sender) -> list[Reply]:
        return self._run("next", sender)

    def _run_stop(self, *, sender) -> list[Reply]:
        return self._run("stop", sender)

    def _run_revert(self, *, sender) -> list[Reply]:
        return self._run("revert", sender)

    def _run_quit(self, *, sender) -> list[Reply]:
        return self._run("quit", sender)

    def _status(self, *, sender) -> list[Reply]:
        s, snap = self.settings, self.snapshot()
        args = ["state", snap["state"], "score", s.score.name if s.score is not None else "",
                "session", snap["session"], "agent", s.agent, "tempo", s.bpm,
                "tempo_factor", s.tempo_factor, "window", s.window, "A", s.a, "B", s.b,
                "clock", s.clock, "partner", snap["partner"], "last_take", s.last_take,
                "generate", s.generate or "off"]
        if self._take is not None:
            args += self._take.status()
            feed = self._feed()
            if feed is not None:
                args += ["bars_late", int(feed.counts["late"]), "bars_generated", int(feed.counts["generated"])]
        if self._job is not None:
            args += ["pending", PREFIX + self._job.what, "waiting", len(self._waiting)]
        return [("/rolypoly/status", args)]

    def _quit(self, *, sender) -> list[Reply]:
        self.quitting = True
        if self._take is not None:
            self._take.request_stop()  # serve() waits for its files after the loop
        return [("/rolypoly/bye", [])]

    #: message name -> (method, allowed argument counts, usage)
    _HANDLERS = {
        "load_score": ("_load_score", (1,), "PATH"),
        "load_session": ("_load_session", (1,), "NAME"),
        "partner_file": ("_partner_file", (1,), "PATH"),
        "partner_device": ("_partner_device", (1,), "DEV"),
        "clock": ("_clock", (1,), "sim|real"),
        "play": ("_play", (0,), ""),
        "stop": ("_stop", (0,), ""),
        "tempo": ("_tempo", (1,), "BPM"),
        "window": ("_window", (1,), "FACTOR"),
        "ab": ("_ab", (2,), "A B"),
        "finetune": ("_finetune", (0, 1, 2, 3), "[TAKE [EPOCHS [LR]]]"),
        "humanize": ("_humanize", (1, 2), "ON [SEED]"),
        "drumify": ("_drumify", (1, 2), "PATH [BPM]"),
        "agent": ("_agent", (1,), "lstm|seq2seq"),
        "status": ("_status", (0,), ""),
        "reply_to": ("_reply_to", (1, 2), "HOST PORT (or: sender)"),
        "quit": ("_quit", (0,), ""),
        "revert": ("_revert", (0, 1), "[VERSION]"),
        **{f"run/{c}": (f"_run_{c}", (0,), "") for c in RUN_COMMANDS},
        "generate": ("_generate", (1, 2), "follow|fills|free|off [EVERY]"),
        "generate/fill": ("_generate_fill", (0,), ""),
        **{f"generate/{c}": (f"_generate_{c}", (1,), "NAME" if c == "style" else "VALUE")
           for c in ("follow", "density", "temperature", "pocket", "seed", "style")},
    }


class _Job:
    """A message whose work is in the worker process: where its reply goes and how its result is stored."""

    def __init__(self, what: str, dest, apply):
        self.what, self.dest, self.apply = what, dest, apply
        self.thread: threading.Thread | None = None


def _open_session(session: Path, midi: Path, name: str | None, ab: tuple) -> tuple:
    """Open (or create) a session and read its score: ``(folder, score, (A, B))``.

    A job for :meth:`Service._off_take` (in the worker process while a take
    plays). The session keeps its own A and B; a new one gets ``ab``.
    """
    from rolypoly.session import Session

    opened = Session.open(session, midi)  # ScoreError text goes into the reply
    score = opened.score()
    if name is not None:
        score = replace(score, name=name)  # shown as the session, not as "score" (its file)
    stored = opened.stored_ab()
    if stored is None:
        stored = tuple(ab)
        opened.set_ab(*stored)
    return opened.folder, score, stored


def _revert_session(session: Path, version: int | None) -> int:
    """Make ``version`` (None: the one the current version learnt from) current; the version now played.

    A job for :meth:`Service._off_take` (in the worker process while a take plays).
    """
    from rolypoly.session import Session

    opened = Session(session)
    if version is None:
        current, _ = opened.current_version()
        if current is None:
            raise Rejected("the session has no model version yet: play a take first")
        record = next((r for r in opened.versions() if r["version"] == current), {})
        if record.get("parent") is None:
            raise Rejected(f"model version {current} is where the session started; nothing earlier to revert to")
        version = int(record["parent"])
    return opened.revert(version)


def _set_ab(session: Path, a: float, b: float) -> None:
    """Store A and B in the session's session.json (a job for :meth:`Service._off_take`)."""
    from rolypoly.session import Session

    Session(session).set_ab(a, b)


def _answer(address, handler, *args, **kwargs) -> list[Reply]:
    """``handler(*args, **kwargs)``; a RolypolyError (or a bug) as the one error reply."""
    try:
        return handler(*args, **kwargs)
    except RolypolyError as e:
        return [_error(address, _one_line(e))]
    except OSError as e:  # a file the system refuses: name it and the problem
        where = f"{e.filename}: " if e.filename else ""
        return [_error(address, f"{where}{e.strerror or _one_line(e)}")]
    except Exception as e:  # a bug must not end the service either
        return [_error(address, f"internal error: {type(e).__name__}: {_one_line(e)}")]


def _ok(name: str, *values) -> Reply:
    return ("/rolypoly/ok", [PREFIX + name, *values])


def _error(address, reason: str) -> Reply:
    shown = address if isinstance(address, str) else repr(address)
    return ("/rolypoly/error", [shown, " ".join(str(reason).split())])  # always one line


def _write_take_settings(take_dir: Path, s: Settings) -> None:
    """service.json next to the take: what the take header does not say (tempo, A, B)."""
    meta = {"tempo_bpm": s.bpm, "tempo_factor": s.tempo_factor, "score_tempo_bpm":
            float(s.score.tempo_bpm[0]), "window_factor": s.window, "agent": s.agent,
            "A": s.a, "B": s.b, "clock": s.clock, "partner": s.partner_text()}
    (take_dir / "service.json").write_text(json.dumps(meta, indent=2) + "\n")


# ----------------------------------------------------------------------------- sockets

class Replier:
    """Sends replies with one python-osc UDP client per destination (made on first use)."""

    def __init__(self):
        self._outs = {}
        self.failures = 0

    def send(self, dest, replies) -> None:
        """Send ``replies`` to ``dest`` (host, port); a failed send is counted, never raised."""
        if dest is None or not replies:
            return
        from .osc_out import OscOut

        out = self._outs.get(dest)
        if out is None:
            try:
                out = self._outs[dest] = OscOut(*dest)
            except RolypolyError:
                self.failures += len(replies)
                return
        for address, args in replies:
            args = [_packable(a) for a in args]
            problem = _unsendable(address, args)
            if problem:  # a reply that cannot be sent is said, never dropped in silence
                about = args[0] if address in (PREFIX + "ok", PREFIX + "error") and args else address
                address, args = _error(about, f"the reply {address} could not be sent as OSC ({problem})")
            if not out.send(address, args):
                self.failures += 1

    def close(self) -> None:
        for out in self._outs.values():
            out.close()
        self._outs.clear()


def _unsendable(address, args) -> str | None:
    """Why a reply cannot be packed as an OSC message (a float past float32, an int past int64), or None."""
    from pythonosc.osc_message_builder import OscMessageBuilder

    try:
        builder = OscMessageBuilder(address=address)
        for a in args:
            builder.add_arg(a)
        builder.build()
    except Exception as e:  # python-osc raises struct.error, OverflowError, BuildError...
        return _one_line(e)
    return None


def _packable(value):
    """A reply argument as a value python-osc can pack (numpy scalars, paths, None)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return "" if value is None else str(value)


def open_server(service: Service, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, replier=None):
    """A python-osc UDP server whose every message goes to ``service``; port 0 picks a free one.

    Raises
    ------
    DeviceError
        The address cannot be bound (port in use, host not local).
    """
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import BlockingOSCUDPServer

    replier = replier or Replier()
    service.emit = replier.send

    def on_message(client, address, *args):
        with service.emit_lock:
            replies = service.handle(address, *args, sender=client)
            replier.send(service.destination(client), replies)
        # None: python-osc itself sends nothing back.

    # No strict timing: a bundle stamped for the future must not stall the server.
    dispatcher = Dispatcher(strict_timing=False)
    dispatcher.set_default_handler(on_message, needs_reply_address=True)
    try:
        server = BlockingOSCUDPServer((host, int(port)), dispatcher)
    except (OSError, OverflowError) as e:
        raise DeviceError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})") from None
    server.timeout = POLL_S
    server.replier = replier
    return server


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, reply=DEFAULT_REPLY, sessions_dir=None,
          ready=None, service: Service | None = None, **options) -> None:
    """Run the service until ``/rolypoly/quit`` (or Ctrl-C).

    Parameters
    ----------
    host, port : where to listen (UDP); port 0 picks a free port
    reply : (host, port) for replies, None to answer each sender
    sessions_dir : the sessions folder (default :func:`rolypoly.paths.sessions_dir`)
    ready : optional callable((host, port)) called once listening (tests, logs)
    service : an existing Service (else one is made with ``options``)

    Examples
    --------
    >>> serve("127.0.0.1", 9100, reply=("127.0.0.1", 9101))   # doctest: +SKIP
    """
    service = service or Service(sessions_dir, reply=reply, **options)
    server = open_server(service, host, port)
    try:
        if ready is not None:
            ready(server.server_address[:2])
        while not service.quitting:
            server.handle_request()  # returns after POLL_S without a message
    finally:
        service.close()  # the take's files first, then its take_done, then the sockets
        server.server_close()
        server.replier.close()
