"""Drum hits out as MIDI notes, through python-rtmidi.

A score read from the player's file plays the player's own notes (pitch and
channel, :func:`rolypoly.score.played_notes`); the messages of every row are
built before the take (:func:`row_messages`), so a hit only sends them. A
score made in code plays General MIDI drums on channel 10.

:class:`MidiOut` either offers a virtual output port (``rolypoly``) that a
synth or DAW connects to, or connects itself to an existing port. Note-offs
follow each note-on after a short gate; they are sent by the next
:meth:`MidiOut.hit` or :meth:`MidiOut.release_due` call, so there is no timer
thread and each call does bounded work (at most one pending note per drum).

A MIDI output must never stop the performance: when the port vanishes, the
JACK server stops or a send fails, the object marks itself broken, counts the
dropped messages and keeps a one-line :attr:`MidiOut.error`; the engine keeps
playing OSC and reports it.

Examples
--------
>>> from rolypoly.realtime.midi_out import MidiOut
>>> with MidiOut() as out:                                  # doctest: +SKIP
...     out.hit([0, 2], [110, 70])      # kick and closed hi-hat (GM pitches)
...     out.release_due()               # later: the note-offs whose gate ended
2
0
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

from rolypoly.drum_map import DRUM_CHANNEL, OUTPUT_PITCHES
from rolypoly.errors import DeviceError
from rolypoly.realtime import jack

try:
    import rtmidi
except ImportError:  # reported as a DeviceError where MIDI is used
    rtmidi = None

ALL_NOTES_OFF = 123


def row_messages(channels, pitches, velocities) -> tuple:
    """The MIDI of one row, ready to send: ``((drum, note-on, note-off), ...)``.

    ``drum`` is ``channel * 128 + pitch`` (what a note-off ends). Notes of
    velocity 0 (after rounding) are left out; velocities are clipped to 127.

    >>> row_messages([9, 9], [44, 57], [80, 0])
    ((1196, (153, 44, 80), (137, 44, 0)),)
    """
    out = []
    for ch, p, v in zip(channels, pitches, velocities):
        v = int(round(float(v)))
        if v > 0:
            ch, p = int(ch), int(p)
            out.append((ch * 128 + p, (0x90 | ch, p, min(v, 127)), (0x80 | ch, p, 0)))
    return tuple(out)

#: rtmidi's JACK output queues into a 16 KiB ring buffer (~2300 short messages)
#: and blocks forever when it is full; never queue this many without seeing
#: the server's clock move.
MAX_UNCONFIRMED = 256

ALSA_SEQ = "/dev/snd/seq"


def _api_id(name: str) -> int:
    if rtmidi is None:
        raise DeviceError("python-rtmidi is not installed: pip install python-rtmidi")
    ids = {"jack": rtmidi.API_UNIX_JACK, "alsa": rtmidi.API_LINUX_ALSA}
    if name not in ids:
        raise DeviceError(f"unknown MIDI API {name!r}; use auto, jack or alsa")
    return ids[name]


def api_status(api: str) -> str | None:
    """Why MIDI API ``"jack"`` or ``"alsa"`` cannot be used now, or None if it can.

    Checked without opening a client, so nothing is printed.

    >>> api_status("alsa") in (None, "no ALSA sequencer (/dev/snd/seq missing)")
    True
    """
    if rtmidi is None:
        return "python-rtmidi is not installed"
    if _api_id(api) not in rtmidi.get_compiled_api():
        return f"python-rtmidi was built without {api}"
    if api == "alsa" and not os.path.exists(ALSA_SEQ):
        return f"no ALSA sequencer ({ALSA_SEQ} missing)"
    if api == "jack" and not jack.server_running():
        return f"no JACK server {jack.server_name()!r} running"
    return None


def usable_apis(api: str = "auto", why: dict | None = None) -> list[str]:
    """The MIDI APIs to try, best first: JACK when a server runs, then ALSA.

    ``why``, when given, receives the reason for each API left out.

    >>> set(usable_apis()) <= {"jack", "alsa"}
    True
    """
    names = ["jack", "alsa"] if api == "auto" else [api]
    usable = []
    for name in names:
        reason = api_status(name)
        if reason is None:
            usable.append(name)
        elif why is not None:
            why[name] = reason
    return usable


def list_ports(api: str = "auto", direction: str = "output") -> dict[str, list[str]]:
    """MIDI ports per usable API: where rolypoly can send (``"output"``) or
    listen (``"input"``).

    >>> list_ports("jack")                                  # doctest: +SKIP
    {'jack': ['fluidsynth:midi_00']}
    """
    out = {}
    for name in usable_apis(api):
        cls = rtmidi.MidiOut if direction == "output" else rtmidi.MidiIn
        try:
            # JACK client names must differ across servers
            probe = cls(rtapi=_api_id(name), name=jack.own_name("rolypoly-probe"))
        except Exception:  # the API went away between the check and the open
            continue
        try:
            out[name] = list(probe.get_ports())
        finally:
            probe.delete()  # rtmidi objects are never collected: close the client now
    return out


def match_port(spec: str, names: list[str], what: str = "MIDI port", where: str = "") -> int:
    """Index of the port named ``spec``: exact name, else a unique substring.

    Raises
    ------
    DeviceError
        Nothing or more than one port matches; the message lists them.

    Examples
    --------
    >>> match_port("fluid", ["Midi Through", "FluidSynth:midi_00"])
    1
    """
    exact = [i for i, n in enumerate(names) if n == spec]
    if exact:
        return exact[0]
    hits = [i for i, n in enumerate(names) if spec.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(names) if names else "none"
    if not hits:
        raise DeviceError(f"{what} {spec!r} not found{where}; available: {listing}")
    raise DeviceError(f"{what} {spec!r} is ambiguous{where}; matches: {', '.join(names[i] for i in hits)}")


class MidiOut:
    """Sends drum hits as GM note-on/note-off on channel 10.

    Parameters
    ----------
    port_name : str
        Name of rolypoly's own port (a virtual port, or the port that
        connects to ``existing``).
    api : {"auto", "jack", "alsa"}
        MIDI system; ``"auto"`` takes JACK when a server runs, else ALSA.
    existing : str, optional
        Connect to this existing input port (exact name or unique substring)
        instead of offering a virtual port.
    client_name : str
        MIDI client name; under JACK the virtual port is ``client:port``
        (JACK appends ``-01``... when the name is taken on that server, and
        names must differ across servers: see :mod:`rolypoly.realtime.jack`).
    gate_s : float
        Time from a note-on to its note-off.
    check_interval_s : float
        How often (at most) to check that ``existing`` is still there.

    Raises
    ------
    DeviceError
        No usable MIDI API, or ``existing`` not found (lists the ports).

    Attributes
    ----------
    error : str or None
        One line saying why output stopped, None while it works.
    failures : int
        Messages dropped since output broke.
    sent : int
        Messages sent.

    Examples
    --------
    >>> out = MidiOut(api="jack")                            # doctest: +SKIP
    >>> out.hit([1], [96]); out.error is None                # doctest: +SKIP
    1
    True
    >>> out.close()                                          # doctest: +SKIP
    """

    def __init__(self, port_name: str = "rolypoly", api: str = "auto", existing: str | None = None,
                 *, client_name: str = "rolypoly", gate_s: float = 0.05, check_interval_s: float = 0.5):
        if api not in ("auto", "jack", "alsa"):
            raise DeviceError(f"unknown MIDI API {api!r}; use auto, jack or alsa")
        self.port_name, self.gate_s, self.check_interval_s = port_name, float(gate_s), float(check_interval_s)
        self.error: str | None = None
        self.failures = 0
        self.sent = 0
        self.target: str | None = None
        self._pending: dict[int, float] = {}  # drum (channel * 128 + pitch) -> when its note-off is due
        self._offs: dict[int, tuple] = {}     # drum -> its note-off message
        self._channels = {DRUM_CHANNEL}       # channels All Notes Off goes to
        self._lock = threading.Lock()
        self._midi = None
        self._watch: jack.JackWatch | None = None
        self.api = self._open(api, existing, client_name)
        self._checked_at = time.monotonic()
        self._unconfirmed = 0
        self._moved_at = self._watch.moved_at if self._watch else 0.0

    def _open(self, api: str, existing: str | None, client_name: str) -> str:
        why: dict[str, str] = {}
        apis = usable_apis(api, why)
        if not apis:
            raise DeviceError("no MIDI output available: " + "; ".join(f"{a}: {r}" for a, r in why.items()))
        if existing is not None and len(apis) > 1:
            # auto: the first API that has such a port (else the first API, whose ports the error lists)
            found = [a for a, names in list_ports(api).items() if any(existing.lower() in n.lower() for n in names)]
            apis = found[:1] or apis
        name = apis[0]
        try:
            self._midi = rtmidi.MidiOut(rtapi=_api_id(name), name=client_name)
            if existing is None:
                self._midi.open_virtual_port(self.port_name)
            else:
                ports = list(self._midi.get_ports())
                idx = match_port(existing, ports, "MIDI output port", f" on {name}")
                self.target = ports[idx]
                self._midi.open_port(idx, self.port_name)
            if name == "jack":
                self._watch = jack.JackWatch.shared()
        except DeviceError:
            self._release_handles()
            raise
        except Exception as exc:  # rtmidi.SystemError, InvalidPortError...
            self._release_handles()
            raise DeviceError(f"cannot open MIDI output {existing or self.port_name!r} on {name}: "
                              f"{_one_line(exc)}") from None
        return name

    def __repr__(self) -> str:
        state = f"broken: {self.error}" if self.error else "ok"
        return f"MidiOut({self.describe()}, {state})"

    def __enter__(self) -> "MidiOut":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        """Which port this is, for messages: e.g. ``jack virtual port 'rolypoly'``."""
        if self.target:
            return f"{self.api} port {self.target!r}"
        return f"{self.api} virtual port {self.port_name!r}"

    @property
    def broken(self) -> bool:
        """True once output stopped; see :attr:`error`."""
        return self.error is not None

    def hit(self, classes, velocities, now: float | None = None) -> int:
        """Play drum classes (GM pitches on channel 10) with MIDI velocities; see :meth:`play`.

        Velocities are clipped to 1..127, zero means no hit.

        Parameters
        ----------
        classes : sequence of int
            Drum class indices (see ``rolypoly.drum_map.CLASS_NAMES``).
        velocities : sequence of int
            MIDI velocity per class.
        now : float, optional
            Time of the hit on the caller's clock (``time.monotonic()`` when
            omitted); the gate counts from it, so :meth:`release_due` must
            get times on the same clock.

        Examples
        --------
        >>> out.hit([0, 1], [100, 0])                        # doctest: +SKIP
        1
        """
        classes = [int(c) for c in classes]
        return self.play(row_messages([DRUM_CHANNEL] * len(classes), [OUTPUT_PITCHES[c] for c in classes],
                                      velocities), now)

    def play(self, messages, now: float | None = None) -> int:
        """Send a row's notes (:func:`row_messages`); returns how many note-ons went out.

        Due note-offs are sent first; a drum still sounding is ended before
        it is struck again. Nothing here builds a message: the live path
        sends what was made before the take.

        >>> out.play(row_messages([9], [44], [90]))            # doctest: +SKIP
        1
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self._release(now, everything=False)
            count = 0
            for drum, on, off in messages:
                if drum in self._pending:
                    del self._pending[drum]
                    self._send(self._offs[drum])
                if self._send(on):
                    self._pending[drum] = now + self.gate_s
                    if drum not in self._offs:
                        self._offs[drum] = off
                        self._channels.add(drum >> 7)
                    count += 1
            return count

    def release_due(self, now: float | None = None) -> int:
        """Send the note-offs whose gate has ended; returns how many.

        >>> out.release_due()                                # doctest: +SKIP
        0
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._release(now, everything=False)

    def all_notes_off(self) -> None:
        """End every sounding note and send All Notes Off (CC 123) on channel 10 and every channel played."""
        now = time.monotonic()
        with self._lock:
            self._release(now, everything=True)
            for ch in sorted(self._channels):
                self._send((0xB0 | ch, ALL_NOTES_OFF, 0))

    def close(self) -> None:
        """Silence and close the port; safe to call twice and after failures."""
        if self._midi is not None:
            self.all_notes_off()
            with self._lock:
                self._release_handles()

    def _release_handles(self) -> None:
        midi = self._midi
        self._midi = self._watch = None
        if midi is not None:
            try:
                midi.close_port()  # waits (at most 1 s) for queued notes to leave
            except Exception:
                pass
            midi.delete()  # closes the client; python-rtmidi never collects its objects
        # the watch is shared and stays open (jack.JackWatch.shared)

    def _abandon_handles(self) -> None:
        """Drop the clients of a JACK server that went away, without closing them.

        Closing would block the caller for a second (rtmidi waits that long,
        holding the GIL, for a server to drain its queue), and once this
        process opens any new JACK client libjack frees the dead server's
        clients itself, so closing them later would touch freed memory. The
        few bytes are left behind on purpose.
        """
        midi = self._midi
        self._midi = self._watch = None
        if midi is not None:  # no delete(); and its destructor must never run
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(midi))
        # the shared watch knows its server is gone: JackWatch.shared() drops it

    def _release(self, now: float, everything: bool) -> int:
        due = [d for d, t in self._pending.items() if everything or t <= now]
        for drum in due:
            del self._pending[drum]
            self._send(self._offs[drum])
        return len(due)

    def _fail(self, message: str, jack_dead: bool = False) -> None:
        if self.error is None:
            self.error = message
        if jack_dead:
            self._abandon_handles()

    def _healthy(self) -> bool:
        # Real time, not the caller's ``now``: that may be a scheduled time.
        now = time.monotonic()
        if self.error is not None:
            return False
        if self._midi is None:
            self.error = f"MIDI output {self.describe()} is closed"
            return False
        if self._watch is not None:
            if not self._watch.alive(now):
                self._fail(f"JACK server {jack.server_name()!r} stopped; MIDI output {self.describe()} is gone",
                           jack_dead=True)
                return False
            if self._watch.moved_at != self._moved_at:
                self._moved_at, self._unconfirmed = self._watch.moved_at, 0
            elif self._unconfirmed >= MAX_UNCONFIRMED:
                self._fail(f"JACK server {jack.server_name()!r} is not taking MIDI; {self.describe()} stopped",
                           jack_dead=True)
                return False
        if self.target is not None and now - self._checked_at >= self.check_interval_s:
            self._checked_at = now
            try:
                present = self.target in self._midi.get_ports()
            except Exception:
                present = False
            if not present:
                self._fail(f"MIDI port {self.target!r} ({self.api}) disappeared")
                return False
        return True

    def _send(self, message: tuple[int, int, int]) -> bool:
        if not self._healthy():
            self.failures += 1
            return False
        try:
            self._midi.send_message(message)
        except Exception as exc:  # ALSA reports a vanished port here
            self._fail(f"MIDI send to {self.describe()} failed: {_one_line(exc)}")
            self.failures += 1
            return False
        self.sent += 1
        self._unconfirmed += 1
        return True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
