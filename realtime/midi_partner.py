"""MIDI partners: a keyboardist, an e-drummer or a MIDI guitarist plays through MIDI.

A note-on *is* an onset, at its exact time: nothing to detect. :class:`MidiSource`
is a partner source like the audio ones (:mod:`rolypoly.realtime.sources`),
so the engine does not know the difference:

* on JACK (a server runs and JACK-Client is installed) it is rolypoly's own
  JACK client (:class:`~rolypoly.realtime.jack_io.JackIO` with only its
  ``midi_in`` port) connected to the partner's port: its process callback
  is C, so JACK's real-time thread never waits for the interpreter lock
  (a Python callback there would, every cycle, while the engine holds it).
  Every message is kept with the time of the frame it came on, on JACK's
  frame clock -- the clock the drums are placed by and the audio partner
  is stamped by -- and the engine takes the note-ons when it polls:
  frame-accurate;
* elsewhere (ALSA) python-rtmidi delivers the messages; a note-on is
  stamped when it arrives.

The descriptor is the pitch (0..1 of the MIDI range: a high note is
"bright", as the audio descriptor's centroid), the strength the velocity
(0..1). Notes struck together (a chord, a flam, a strum on a MIDI guitar)
are one onset: a note-on within ``chord_ms`` of the last onset is not
another one.

:class:`CombinedSource` plays several partners as one: an audio input and a
MIDI keyboard, say. Their onsets are merged in time order.

Examples
--------
>>> src = MidiSource("keystation")                    # doctest: +SKIP
>>> src.start(clock, t0=0.5)                          # doctest: +SKIP
>>> src.poll(clock.now())["time"]                     # doctest: +SKIP
"""
from __future__ import annotations

import time

import numpy as np

from rolypoly.errors import DeviceError
from rolypoly.errors import one_line as _one_line

from . import jack
from .midi_out import list_ports, match_port, usable_apis
from .sources import ONSET, POLL_CAPACITY, OnsetRing, PartnerSource

NOTE_ON = 0x90
#: Note-ons closer than this to the last onset belong to it (a chord is one onset).
CHORD_MS = 30.0


def _jack_client_module():
    try:
        import jack as jack_client  # JACK-Client
    except (ImportError, OSError):
        return None
    return jack_client


class MidiSource(PartnerSource):
    """A partner playing MIDI: its note-ons are the onsets (see the module docstring).

    Parameters
    ----------
    port : str
        The partner's MIDI output port (exact name or a unique part of it).
    api : {"auto", "jack", "alsa"}
        MIDI system; ``"auto"`` takes JACK when a server runs, else ALSA.
    client_name : str
        Name of rolypoly's MIDI client.
    chord_ms : float
        Note-ons this close to the last onset are the same onset.
    channels : set of int, optional
        MIDI channels (0-15) to hear; all where omitted.
    sample_rate : int
        Rate of the (silent) recording a take keeps for this source.

    Raises
    ------
    DeviceError
        No MIDI system, or no such port (the message lists the ports).
    """

    def __init__(self, port: str, *, api: str = "auto", client_name: str = "rolypoly-partner",
                 chord_ms: float = CHORD_MS, channels=None, sample_rate: int = 48000):
        if api not in ("auto", "jack", "alsa"):
            raise DeviceError(f"unknown MIDI API {api!r}; use auto, jack or alsa")
        self.port_spec = str(port)
        self.chord_s = float(chord_ms) / 1000.0
        self.channels = None if channels is None else frozenset(int(c) for c in channels)
        self.sample_rate = int(sample_rate)
        self._ring = OnsetRing()
        self._last = -1e9
        self._clock = None
        self._running = False
        self._t0 = self._stopped_at = 0.0
        self.notes = 0
        self._io = self._midi = None
        self._xruns = 0                  # JACK's count, kept when the client is let go
        why: dict[str, str] = {}
        apis = usable_apis(api, why)
        if "jack" in apis and _jack_client_module() is None:
            why["jack"] = "JACK-Client is not installed"
            apis.remove("jack")
        if not apis:
            raise DeviceError("no MIDI input available: " + "; ".join(f"{a}: {r}" for a, r in why.items()))
        self.api = apis[0]
        if self.api == "jack":
            self._open_jack(client_name)
        else:
            self._open_rtmidi(client_name)
        self.name = f"MIDI {self.source_port} ({self.api})"

    # -- opening ------------------------------------------------------------------------
    def _open_jack(self, client_name: str) -> None:
        from .jack_io import JackIO

        try:
            io = JackIO(midi_in=True, name=jack.own_name(client_name))
        except DeviceError as e:
            raise DeviceError(f"cannot open a JACK MIDI input: {e}") from None
        try:
            names = [p.name for p in io.client.get_ports(is_midi=True, is_output=True)]
            self.source_port = names[match_port(self.port_spec, names, "MIDI input port", " on jack")]
            io._connect(self.source_port, io.midi_in_port)
        except DeviceError:
            io.close()
            raise
        except Exception as e:
            io.close()
            raise DeviceError(f"cannot listen to MIDI port {self.port_spec!r} on jack: {_one_line(e)}") from None
        self._io = io

    def _open_rtmidi(self, client_name: str) -> None:
        import rtmidi

        from .midi_out import _api_id

        names = list_ports(self.api, "input").get(self.api, [])
        index = match_port(self.port_spec, names, "MIDI input port", f" on {self.api}")
        try:
            midi = rtmidi.MidiIn(rtapi=_api_id(self.api), name=client_name)
            midi.open_port(index, "partner")
            midi.set_callback(self._arrived)
        except Exception as e:
            raise DeviceError(f"cannot listen to MIDI port {names[index]!r} on {self.api}: {_one_line(e)}") from None
        self.source_port = names[index]
        self._midi = midi

    # -- the MIDI thread (rtmidi) and the engine's poll (JACK) ------------------------------------
    @property
    def xruns(self) -> int:
        """Cycles JACK reported late while this input listened (0 off JACK); still there after :meth:`close`."""
        return self._io.xruns if self._io is not None else self._xruns

    def _take_jack_notes(self, now: float) -> None:
        """The note-ons rolypoly's JACK client kept since the last poll, each at its frame's time."""
        times, _, messages, _ = self._io.read_midi_in()
        for at, m in zip(times, messages):
            if m[0] >= 3 and m[1] & 0xF0 == NOTE_ON and m[3] > 0:
                self._note(float(at), now, int(m[1] & 0x0F), int(m[2]), int(m[3]))

    def _arrived(self, message, _data=None) -> None:
        """rtmidi callback (ALSA): a note-on is stamped when it arrives."""
        if not self._running:
            return
        data, _delta = message
        if len(data) >= 3 and data[0] & 0xF0 == NOTE_ON and data[2] > 0:
            now = self._clock.to_engine(time.perf_counter())
            self._note(now, now, data[0] & 0x0F, data[1], data[2])

    def _note(self, at: float, available: float, channel: int, pitch: int, velocity: int) -> None:
        if self.channels is not None and channel not in self.channels:
            return
        self.notes += 1
        if at - self._last < self.chord_s:
            return                       # the rest of a chord: the same onset
        self._last = at
        self._ring.push(at, max(available, at), pitch / 127.0, velocity / 127.0)

    # -- the partner source ---------------------------------------------------------------
    def start(self, clock, t0: float) -> None:
        if clock.simulated:
            raise DeviceError("a MIDI input plays in real time: it cannot run on a simulated clock")
        self._clock, self._t0 = clock, float(t0)
        self._last = -1e9
        if self._io is not None:
            self._io.set_clock(clock)        # its callback keeps messages from now on, on this clock
            self._io.read_midi_in()          # nothing from before the take
        self._ring.pop_all()
        self._running = True

    def poll(self, now: float) -> np.ndarray:
        if self._io is not None and self._running:
            self._take_jack_notes(now)
        return self._ring.pop_all()

    def stop(self) -> None:
        """End of the take: stop listening and let go of the MIDI client (a source plays one take)."""
        if self._running and self._clock is not None:
            self._stopped_at = self._clock.now()
        self._running = False
        self.close()

    def close(self) -> None:
        """Let go of the MIDI client (idempotent)."""
        self._running = False
        if self._io is not None:
            self._xruns = self._io.xruns
            self._io.close()
            self._io = None
        if self._midi is not None:
            self._midi.close_port()
            self._midi.delete()          # rtmidi objects are never collected: close the client now
            self._midi = None

    def recording(self) -> np.ndarray:
        """Silence as long as the take: a MIDI partner leaves no audio (its onsets are in the take file)."""
        return np.zeros(max(int((self._stopped_at - self._t0) * self.sample_rate), 0), np.float32)


class CombinedSource(PartnerSource):
    """Several partner sources heard as one: their onsets merged in time order.

    The first source that records audio gives the take's partner audio.

    Examples
    --------
    >>> both = CombinedSource(LiveSource(2), MidiSource("keys"))   # doctest: +SKIP
    """

    def __init__(self, *sources: PartnerSource):
        if not sources:
            raise ValueError("CombinedSource needs at least one source")
        self.sources = sources
        self.sample_rate = sources[0].sample_rate
        self.name = " + ".join(s.name for s in sources)
        self._out = np.zeros(POLL_CAPACITY * len(sources), ONSET)

    @property
    def xruns(self) -> int:
        return sum(s.xruns for s in self.sources)

    def start(self, clock, t0: float) -> None:
        for s in self.sources:
            s.start(clock, t0)

    def poll(self, now: float) -> np.ndarray:
        n = 0
        for s in self.sources:
            got = s.poll(now)
            self._out[n:n + len(got)] = got
            n += len(got)
        out = self._out[:n]
        out.sort(order="time")
        return out

    def stop(self) -> None:
        for s in self.sources:
            s.stop()

    def drum_played(self, notated: float, played: float) -> None:
        for s in self.sources:
            s.drum_played(notated, played)

    def recording(self) -> np.ndarray:
        recordings = [s.recording() for s in self.sources]
        audible = [r for r in recordings if len(r) and np.any(r)]
        return (audible or recordings)[0]

    def close(self) -> None:
        for s in self.sources:
            if hasattr(s, "close"):
                s.close()
