"""Run, find and wire a JACK server, so rolypoly can play without a sound card.

A machine with no sound card (CI, a container) still gets real audio and MIDI
ports from a JACK server on the *dummy* backend: it clocks its process cycle
from the system timer (``jackd --no-realtime -d dummy -r 48000 -p 64``), and
PortAudio (through sounddevice), python-rtmidi and the ``jack_*`` command line
tools all talk to it as they would to a server on real hardware.

What this module knows about JACK here (jackd2 1.9.21, PortAudio 19.6):

* A server is found by name: clients read ``JACK_DEFAULT_SERVER`` when they
  open (``"default"`` when unset), the CLI tools take ``-s NAME``.
  :class:`JackServer` sets the variable for this process, so clients opened
  afterwards (rtmidi, PortAudio, the tools) all reach the same server.
* PortAudio looks for JACK only in ``Pa_Initialize``. sounddevice initialises
  at import, so when it was imported before the server was up it must be
  initialised again: :func:`reinit_portaudio` (``sd._terminate()`` then
  ``sd._initialize()``; no stream may be open). PortAudio then shows one
  device per JACK client with audio ports (``"system"`` for the hardware, or
  the dummy backend's fake hardware), and its own client is named
  ``"PortAudio"`` unless renamed before it initialises
  (``PaJack_SetClientName``; :func:`portaudio_client_name` tells the name).
* A PortAudio stream on device ``system`` connects itself to
  ``system:capture_N`` / ``system:playback_N`` when it starts; PortAudio 19.6
  has no environment variable or sounddevice ``extra_settings`` to turn that
  off. Other routes are added with :func:`connect` (``jack_connect``).
* python-rtmidi on ``rtmidi.API_UNIX_JACK`` opens a client named after its
  ``name`` argument, and ``open_virtual_port("p")`` makes port ``name:p``.
  Its objects are never garbage collected (a reference cycle through their
  error callback): only ``.delete()`` closes the client.
* JACK2 puts every client's socket at ``/dev/shm/jack_<client>_<uid>_0``,
  without the server name: two processes whose clients share a name on two
  servers can cross their notification channels and hang a server. Give
  clients names of their own when several servers run (tests in parallel).
* rtmidi and PortAudio open their clients with ``JackNoStartServer``; the CLI
  tools do not, so they get ``JACK_NO_START_SERVER=1`` here: asking whether a
  server runs must never spawn one.
* When the server dies, clients are not told through rtmidi: its JACK MIDI
  output keeps queueing into a ring buffer nobody drains, and once that is full
  ``send_message`` spins forever. :class:`JackWatch` notices a stopped server
  (its frame clock stops) so a sender can stop before that happens.
* PortAudio 19.6 (Debian's, asserts on) aborts the process when it closes a
  JACK client whose server is gone: in ``Pa_Terminate``, which sounddevice
  also calls at exit. So PortAudio lets go of a server before it stops
  (:meth:`JackServer.stop`, and at exit), and a server that dies under a
  running PortAudio takes the process with it when PortAudio terminates.
* libjack keeps process-wide state: after a server went away, the next client
  opened (on any server) makes libjack free *every* client whose server is
  gone, so such clients must never be closed later. Keep one server per
  process, and close clients before stopping it. (There are two libjacks in
  the process: the python-rtmidi wheel bundles its own, 1.9.22, while
  PortAudio and :class:`JackWatch` use the system's.)
* jackd registers at most 8 servers per machine in ``/dev/shm``; a server that
  is killed instead of stopped keeps its entry until a server of the *same
  name* starts. Hence :meth:`JackServer.private` picks from a few fixed names.

Examples
--------
>>> with JackServer.private("rolypoly-doc") as server:   # doctest: +SKIP
...     print(server.name, ports("system:capture"))
rolypoly-doc-0 ['system:capture_1', 'system:capture_2']
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

from rolypoly.errors import DeviceError

#: JACK's option bit that forbids clients from spawning a server (jack/types.h).
_JACK_NO_START_SERVER = 0x01

_INSTALL_HINT = "install the Debian package jackd2"


def server_name(name: str | None = None) -> str:
    """The JACK server a client would reach: ``name``, else ``$JACK_DEFAULT_SERVER``.

    >>> server_name("x")
    'x'
    """
    return name or os.environ.get("JACK_DEFAULT_SERVER") or "default"


def own_name(base: str) -> str:
    """A JACK client name no other server's client has: ``base-SERVER``.

    JACK2 keys client sockets by client name alone (see the module notes);
    on one server JACK itself renames a duplicate (``-01``).

    >>> own_name("rolypoly-probe") == "rolypoly-probe-" + server_name()
    True
    """
    return f"{base}-{server_name()}"


def _tool_env() -> dict:
    # The tools would otherwise try to start a server when none answers.
    return dict(os.environ, JACK_NO_START_SERVER="1")


def _socket_path(server: str | None) -> str:
    """Where jackd2 listens for clients (JACK2 keeps it in /dev/shm)."""
    return f"/dev/shm/jack_{server_name(server)}_{os.getuid()}_0"


def _tool(args: list[str], server: str | None, timeout_s: float = 5.0,
          attempts: int = 5) -> subprocess.CompletedProcess:
    """Run a ``jack_*`` tool against ``server`` and return its result.

    A tool that cannot open its client although the server's socket exists
    is tried again: an overloaded server misses the client handshake.
    """
    cmd = [args[0], "-s", server_name(server), *args[1:]]
    for attempt in range(attempts):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=_tool_env())
        except FileNotFoundError:
            raise DeviceError(f"JACK tool {args[0]} not found: {_INSTALL_HINT}") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"JACK tool {args[0]} did not answer within {timeout_s:g} s") from None
        refused = res.returncode != 0 and "connect to" in (res.stdout + res.stderr).lower()
        if not refused or not os.path.exists(_socket_path(server)) or attempt == attempts - 1:
            return res
        time.sleep(0.1 * 2 ** attempt)  # 0.1, 0.2, 0.4, 0.8 s
    return res


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _jackd_error(log: str) -> str:
    """The line of a jackd log that says why it failed (it ends with its banner)."""
    banner = ("jackdmp", "Copyright", "jackd", "This is free", "under certain", "JACK server starting",
              "no message buffer", "self-connect-mode")
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.strip().startswith(banner)]
    return "; ".join(lines[:2]) if lines else "no message"


def jack_available() -> tuple[bool, str]:
    """Whether this machine can run a JACK server, and why (not).

    Returns
    -------
    (bool, str)
        True with the jackd path, or False with what is missing.

    Examples
    --------
    >>> ok, reason = jack_available()
    >>> isinstance(ok, bool) and isinstance(reason, str)
    True
    """
    for tool in ("jackd", "jack_lsp", "jack_connect"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found on PATH ({_INSTALL_HINT})"
    if ctypes.util.find_library("jack") is None:
        return False, f"libjack not found ({_INSTALL_HINT})"
    return True, f"jackd at {shutil.which('jackd')}"


def server_running(name: str | None = None) -> bool:
    """Whether a JACK server called ``name`` answers (``jack_lsp`` succeeds).

    Never starts a server and prints nothing.

    >>> server_running("surely-no-such-jack-server")
    False
    """
    if shutil.which("jack_lsp") is None:
        return False
    try:
        return _tool(["jack_lsp"], name, timeout_s=3.0).returncode == 0
    except DeviceError:
        return False


def ports(pattern: str = "", server: str | None = None) -> list[str]:
    """Names of the JACK ports whose name contains ``pattern``.

    >>> ports("system:playback")                           # doctest: +SKIP
    ['system:playback_1', 'system:playback_2']
    """
    res = _tool(["jack_lsp", *([pattern] if pattern else [])], server)
    if res.returncode != 0:
        raise DeviceError(f"JACK server {server_name(server)!r} is not running: {_last_line(res.stderr)}")
    return [ln for ln in res.stdout.splitlines() if ln and not ln.startswith((" ", "\t"))]


def connections(server: str | None = None) -> dict[str, list[str]]:
    """Every JACK port with the ports it is connected to (``jack_lsp -c``).

    >>> connections()["system:capture_1"]                  # doctest: +SKIP
    ['PortAudio:in_0']
    """
    res = _tool(["jack_lsp", "-c"], server)
    if res.returncode != 0:
        raise DeviceError(f"JACK server {server_name(server)!r} is not running: {_last_line(res.stderr)}")
    out: dict[str, list[str]] = {}
    port = None
    for ln in res.stdout.splitlines():
        if ln.startswith((" ", "\t")) and port is not None:
            out[port].append(ln.strip())
        elif ln:
            port = ln
            out[port] = []
    return out


def connect(src: str, dst: str, server: str | None = None) -> None:
    """Connect JACK port ``src`` (an output) to ``dst`` (an input).

    Connecting twice is not an error.

    >>> connect("PortAudio:out_0", "PortAudio:in_0")       # doctest: +SKIP
    """
    res = _tool(["jack_connect", src, dst], server)
    msg = (res.stdout + res.stderr).strip()
    if res.returncode != 0 and "already connected" not in msg:
        raise DeviceError(f"cannot connect JACK port {src} to {dst}: {_last_line(msg)}")


def disconnect(src: str, dst: str, server: str | None = None) -> None:
    """Remove the connection from JACK port ``src`` to ``dst``.

    >>> disconnect("system:capture_1", "PortAudio:in_0")   # doctest: +SKIP
    """
    res = _tool(["jack_disconnect", src, dst], server)
    if res.returncode != 0:
        raise DeviceError(f"cannot disconnect JACK port {src} from {dst}: "
                          f"{_last_line(res.stdout + res.stderr)}")


#: PortAudio keeps the pointer it is given as its JACK client name: keep the buffer.
_pa_client_name = None


def reinit_portaudio(client_name: str | None = None, load: bool = False) -> bool:
    """Make PortAudio look for JACK (and devices) again.

    PortAudio scans host APIs only when it initialises, which sounddevice does
    at import. Call this after a JACK server came up or went away, with no
    stream open (terminating PortAudio closes them).

    Parameters
    ----------
    client_name : str, optional
        Name for PortAudio's JACK client from now on (default ``"PortAudio"``).
    load : bool
        Import sounddevice if it is not imported yet (needed to set a name).

    Returns
    -------
    bool
        False when sounddevice is not loaded (it will see the current server
        when it is) or cannot be.

    Examples
    --------
    >>> reinit_portaudio() in (True, False)
    True
    """
    global _pa_client_name
    sd = sys.modules.get("sounddevice")
    if sd is None and load:
        try:
            import sounddevice as sd
        except (OSError, ImportError):  # no PortAudio: nothing to point at JACK
            return False
    if sd is None:
        return False
    _terminate_portaudio(sd)
    if client_name:
        try:
            set_name = ctypes.CDLL(sd._libname).PaJack_SetClientName
        except (AttributeError, OSError):  # a PortAudio built without JACK
            set_name = None
        if set_name is not None:
            _pa_client_name = ctypes.create_string_buffer(client_name.encode())
            set_name(_pa_client_name)
    sd._initialize()
    return True


def _terminate_portaudio(sd) -> None:
    while sd._initialized > 0:
        try:
            sd._terminate()
        except Exception:  # Pa_Terminate fails only when PortAudio was not initialised
            sd._initialized -= 1


def portaudio_client_name() -> str | None:
    """Name of PortAudio's JACK client in this process, or None without JACK.

    Its ports are ``NAME:in_0``, ``NAME:in_1``... and ``NAME:out_0``...,
    numbered across all of this process's streams in the order they opened.

    >>> portaudio_client_name()                            # doctest: +SKIP
    'PortAudio'
    """
    sd = sys.modules.get("sounddevice")
    if sd is None or not any(h["name"].startswith("JACK") for h in sd.query_hostapis()):
        return None  # asking PortAudio without its JACK host API prints an assertion
    name = ctypes.c_char_p()
    if ctypes.CDLL(sd._libname).PaJack_GetClientName(ctypes.byref(name)) != 0 or not name.value:
        return None
    return name.value.decode()


_SHUTDOWN_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _libjack() -> ctypes.CDLL:
    path = ctypes.util.find_library("jack")
    if path is None:
        raise DeviceError(f"libjack not found: {_INSTALL_HINT}")
    lib = ctypes.CDLL(path)
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    for fn in ("jack_last_frame_time", "jack_get_sample_rate", "jack_get_buffer_size"):
        getattr(lib, fn).restype = ctypes.c_uint32
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN_CALLBACK, ctypes.c_void_p]
    lib.jack_on_shutdown.restype = None
    return lib


class JackWatch:
    """Tells cheaply whether the JACK server still runs its process cycles.

    A small JACK client (never activated) is told when the server shuts
    down (``jack_on_shutdown``) and reads the server's frame clock
    (``jack_last_frame_time``): the clock moving means cycles run and queued
    MIDI leaves; a clock still for ``stall_s`` means a hung server.

    Parameters
    ----------
    client_name : str
        Name of the watching client (JACK appends ``-01``... when taken).

    Raises
    ------
    DeviceError
        When no JACK server answers.

    Attributes
    ----------
    rate, period : int
        The server's sample rate and frames per cycle.
    stall_s : float
        How long a still clock is taken for a live server.
    moved_at : float
        ``time.monotonic()`` when the clock was last seen moving.
    shutdown : bool
        True once the server went away.

    Examples
    --------
    >>> watch = JackWatch.shared()                         # doctest: +SKIP
    >>> watch.alive()                                      # doctest: +SKIP
    True
    """

    #: One watch per server for the whole process (see :meth:`shared`).
    _shared: dict[str, "JackWatch"] = {}

    @classmethod
    def shared(cls) -> "JackWatch":
        """This process's watch on the current server, opened once and kept.

        Opening and closing system-libjack clients next to PortAudio's can
        deadlock libjack on a busy machine, so watches are not made per user.
        """
        name = server_name()
        watch = cls._shared.get(name)
        if watch is not None and (watch.shutdown or not watch._client):
            watch.abandon()
            watch = None
        if watch is None:
            watch = cls._shared[name] = cls(own_name("rolypoly-watch"))
        return watch

    @classmethod
    def close_shared(cls, name: str | None = None) -> None:
        """Close the shared watch on server ``name`` (before that server stops)."""
        watch = cls._shared.pop(server_name(name), None)
        if watch is not None:
            if watch.shutdown:
                watch.abandon()
            else:
                watch.close()

    def __init__(self, client_name: str = "rolypoly-watch"):
        self._lib = _libjack()
        status = ctypes.c_int(0)
        self._client = self._lib.jack_client_open(client_name.encode(), _JACK_NO_START_SERVER,
                                                  ctypes.byref(status))
        if not self._client:
            raise DeviceError(f"JACK server {server_name()!r} is not running (status 0x{status.value:x})")
        self.rate = int(self._lib.jack_get_sample_rate(self._client))
        self.period = int(self._lib.jack_get_buffer_size(self._client))
        # Long: a non-realtime server on a busy machine can stall for a good while
        # and recover, and the stall is only the fallback for a server that hangs.
        self.stall_s = max(2.0, 16.0 * self.period / max(self.rate, 1))
        self.shutdown = False
        # libjack calls this from its own thread when the server goes away.
        self._on_shutdown = _SHUTDOWN_CALLBACK(self._mark_shutdown)  # kept: libjack holds the pointer
        self._lib.jack_on_shutdown(self._client, self._on_shutdown, None)
        self._frame = self._lib.jack_last_frame_time(self._client)
        self.moved_at = time.monotonic()

    def _mark_shutdown(self, _arg) -> None:
        self.shutdown = True

    def alive(self, now: float | None = None) -> bool:
        """False once the server shut down, or its clock stood still for ``stall_s``."""
        if not self._client or self.shutdown:
            return False
        now = time.monotonic() if now is None else now
        frame = self._lib.jack_last_frame_time(self._client)
        if frame != self._frame:
            self._frame, self.moved_at = frame, now
            return True
        return now - self.moved_at < self.stall_s

    def close(self) -> None:
        """Close the watching client (fine when the server is gone)."""
        if self._client:
            self._lib.jack_client_close(self._client)
            self._client = None

    def abandon(self) -> None:
        """Forget the client without closing it, for a server that went away.

        libjack frees a dead server's clients when this process opens its
        next client; closing one after that would touch freed memory.
        """
        self._client = None


#: SCHED_FIFO priority of a started jackd's process thread (jackd's own default is 10; 70 is
#: what audio distributions give JACK, above interrupt threads of other devices).
REALTIME_PRIORITY = 70


def realtime_allowed() -> bool:
    """Whether this process may give jackd real-time scheduling (root, or an rtprio limit).

    >>> isinstance(realtime_allowed(), bool)
    True
    """
    import resource

    if os.geteuid() == 0:
        return True
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    except (AttributeError, ValueError, OSError):
        return False
    return soft == resource.RLIM_INFINITY or soft >= REALTIME_PRIORITY


#: Servers started here and not stopped yet: ended at interpreter exit.
_STARTED: set["JackServer"] = set()


@atexit.register
def _stop_started() -> None:
    if _STARTED and "sounddevice" in sys.modules:
        # before jackd goes: PortAudio aborts closing a client of a dead server
        _terminate_portaudio(sys.modules["sounddevice"])
    for server in list(_STARTED):
        server._discard()


class JackServer:
    """A JACK server for this process: reuses a running one or starts ``jackd``.

    Starting runs ``jackd -n NAME -R -P 70 -d DRIVER -r RATE -p PERIOD`` where
    real-time scheduling is allowed (:func:`realtime_allowed`; otherwise, or
    when jackd cannot get it, ``--no-realtime``) and waits until ``jack_lsp`` answers. While active, ``JACK_DEFAULT_SERVER``
    names the server so every client this process opens reaches it, and
    PortAudio is re-initialised to see it. :meth:`stop` ends only a server
    this object started; ``jackd`` is also ended at interpreter exit and,
    through ``setpriv --pdeathsig``, if this process is killed (the kernel
    ties that to the starting *thread*: start from a thread that lives on).

    Parameters
    ----------
    name : str, optional
        Server name; ``$JACK_DEFAULT_SERVER`` or ``"default"`` when None.
        :meth:`private` picks a free name of one's own.
    rate, period : int
        Sample rate and frames per process cycle of a started server.
    driver : str
        jackd backend of a started server; ``"dummy"`` needs no hardware.
    reuse : bool
        Use a server of that name that already runs instead of failing.
    timeout_s : float
        How long to wait for a started server to answer.
    portaudio : bool
        Re-initialise PortAudio on start and stop so sounddevice sees the
        server (no stream may be open then). False leaves PortAudio alone.
    portaudio_client : str, optional
        JACK client name for PortAudio (default ``"PortAudio"``). Client names
        must differ across *all* servers of a user: JACK2 puts each client's
        socket at ``/dev/shm/jack_<client>_<uid>_0``, without the server name.
    realtime : bool, optional
        Start jackd with real-time scheduling (``-R``); None: where this
        process may (:func:`realtime_allowed`).

    Attributes
    ----------
    owned : bool
        True when this object started (and will stop) the server.
    realtime : bool or None
        Whether a started jackd runs with real-time scheduling (None for a
        reused server: not known).

    Examples
    --------
    >>> with JackServer() as jack:        # the user's server, or a dummy one  # doctest: +SKIP
    ...     jack.name, jack.rate
    ('default', 48000)
    """

    def __init__(self, name: str | None = None, *, rate: int = 48000, period: int = 64,
                 driver: str = "dummy", reuse: bool = True, timeout_s: float = 5.0,
                 portaudio: bool = True, portaudio_client: str | None = None, realtime: bool | None = None):
        self.name = server_name(name)
        self.realtime = realtime_allowed() if realtime is None else bool(realtime)
        self.rate, self.period, self.driver = int(rate), int(period), driver
        self.reuse, self.timeout_s, self.portaudio = reuse, timeout_s, portaudio
        self.portaudio_client = portaudio_client
        self.owned = False
        self.proc: subprocess.Popen | None = None
        self._log = None  # jackd's output, see log()
        self._old_env: str | None = None
        self._active = False

    @classmethod
    def private(cls, prefix: str = "rolypoly", slots: int = 4, **kwargs) -> "JackServer":
        """Start a server of one's own under the first free name ``PREFIX-0``, ``PREFIX-1``...

        Fixed names rather than one per process: jackd registers at most 8
        servers per machine and frees the entry of one that died without
        stopping only when a server of the same name starts again. PortAudio's
        client is named ``PortAudio-NAME`` unless ``portaudio_client`` says
        otherwise, so private servers running side by side never share a
        client name.

        >>> with JackServer.private("rolypoly-test") as jack:     # doctest: +SKIP
        ...     jack.name
        'rolypoly-test-0'
        """
        error = DeviceError(f"JACK server names {prefix}-0..{slots - 1} are all in use")
        for i in range(slots):
            name = f"{prefix}-{i}"
            if server_running(name):
                continue
            options = {"portaudio_client": f"PortAudio-{name}", **kwargs}
            try:
                return cls(name, reuse=False, **options).start()
            except DeviceError as exc:  # lost a race for the name, or jackd cannot start
                error = exc
        raise error

    def __repr__(self) -> str:
        state = "started" if self.owned else ("reused" if self._active else "idle")
        return f"JackServer(name={self.name!r}, rate={self.rate}, period={self.period}, {state})"

    def __enter__(self) -> "JackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "JackServer":
        """Reuse or start the server, wait until it answers, point clients at it."""
        if self._active:
            return self
        ok, reason = jack_available()
        if not ok:
            raise DeviceError(reason)
        if server_running(self.name):
            if not self.reuse:
                raise DeviceError(f"JACK server {self.name!r} is already running")
            self.realtime = None  # someone else's server: its scheduling is not known here
        else:
            self._spawn()
        self._old_env = os.environ.get("JACK_DEFAULT_SERVER")
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        self._active = True
        if self.portaudio:
            reinit_portaudio(self.portaudio_client, load=self.portaudio_client is not None)
        return self

    def _spawn(self) -> None:
        try:
            self._spawn_once()
        except DeviceError:
            if not self.realtime:
                raise
            self.realtime = False  # no real-time scheduling after all (a container without CAP_SYS_NICE)
            self._spawn_once()

    def _spawn_once(self) -> None:
        mode = ["-R", "-P", str(REALTIME_PRIORITY)] if self.realtime else ["--no-realtime"]
        cmd = ["jackd", "-n", self.name, *mode, "-d", self.driver, "-r", str(self.rate), "-p", str(self.period)]
        if shutil.which("setpriv"):
            # Kernel sends jackd SIGTERM if we die without running atexit.
            cmd = ["setpriv", "--pdeathsig", "TERM", *cmd]
        # A file, not a pipe: jackd logs every xrun and would block on a full pipe.
        # An unnamed one, so that nothing is left behind however this process ends.
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")  # no D-Bus device reservation
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.owned = True
        _STARTED.add(self)
        deadline = time.monotonic() + self.timeout_s
        problem = None
        while problem is None and not server_running(self.name):
            if self.proc.poll() is not None:
                problem = f"jackd exited at start (status {self.proc.returncode})"
            elif time.monotonic() > deadline:
                problem = f"jackd did not answer within {self.timeout_s:g} s"
            time.sleep(0.05)
        if problem is None:
            time.sleep(0.05)
            if self.proc.poll() is not None:  # what answered was another process's server of that name
                problem = f"jackd exited at start (status {self.proc.returncode})"
        if problem is not None:
            why = _jackd_error(self.log())
            self._discard()
            raise DeviceError(f"{problem}: {why}")

    def log(self) -> str:
        """What a started jackd printed so far ('' for a reused server)."""
        if self._log is None:
            return ""
        fd = self._log.fileno()
        # pread: the file offset is shared with jackd's own writes
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _discard(self) -> None:
        """End our jackd and forget it and its output."""
        self._kill()
        _STARTED.discard(self)
        self.owned = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop a server this object started, restore the environment.

        PortAudio's JACK client is closed first, while the server still runs
        (PortAudio 19.6 aborts the process when it closes a client whose
        server is gone), then jackd is ended and PortAudio initialised again.
        Close rtmidi clients (``MidiOut.close``) before calling this.
        """
        if not self._active:
            return
        self._active = False
        if self.owned:
            sd = sys.modules.get("sounddevice")
            if self.portaudio and sd is not None:
                _terminate_portaudio(sd)
            JackWatch.close_shared(self.name)  # after PortAudio: no other libjack client left
            self._discard()
        if self._old_env is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = self._old_env
        if self.portaudio:
            reinit_portaudio()
