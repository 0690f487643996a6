"""A MIDI foot switch: control changes in, commands out, through python-rtmidi.

:class:`FootSwitch` offers a virtual MIDI input port (``rolypoly-control``)
that a foot controller, a keyboard's sustain pedal or a DAW connects to, or
connects itself to an existing output port. Each control change it is told
about (``{cc: command}``) becomes a command when the pedal goes down (value
64 or more, the MIDI convention for switches); letting it up does nothing.
JACK is used where a server runs, else ALSA, as for the drums' output
(:func:`rolypoly.realtime.midi_out.usable_apis`).

The rtmidi callback only looks the controller up and hands the command on
(``on_command``, e.g. a queue's ``put``): bounded work, no allocation
beyond the call, never the engine's thread.

Examples
--------
>>> parse_foot(["64", "65:revert"])
{64: 'go', 65: 'revert'}
>>> switch = FootSwitch({64: "go"}, commands.put)               # doctest: +SKIP
>>> switch.describe()                                           # doctest: +SKIP
"jack virtual input 'rolypoly-control' (CC 64: go)"
"""
from __future__ import annotations

from rolypoly.errors import DeviceError, RolypolyError
from rolypoly.realtime import jack
from rolypoly.realtime.midi_out import _api_id, match_port, rtmidi, usable_apis

#: What a foot switch can ask for: ``go`` is the one-pedal take cycle
#: (the next take when ready, stop and learn while one plays).
FOOT_COMMANDS = ("go", "next", "stop", "revert", "quit", "fill")
CONTROL_CHANGE = 0xB0
#: A switch is down at this value and above.
PRESSED = 64


def parse_foot(specs) -> dict[int, str]:
    """``["64", "65:revert"]`` (``--foot CC[:COMMAND]``) as ``{cc: command}``; ``go`` when no command is given.

    >>> parse_foot(["66:quit"])
    {66: 'quit'}
    >>> parse_foot(["128"])
    Traceback (most recent call last):
    ...
    rolypoly.errors.RolypolyError: --foot 128: CC must be a controller number 0-127
    """
    out = {}
    for spec in specs:
        cc, _, command = str(spec).partition(":")
        command = command or "go"
        if not cc.strip().isdigit() or not 0 <= int(cc) <= 127:
            raise RolypolyError(f"--foot {spec}: CC must be a controller number 0-127")
        if command not in FOOT_COMMANDS:
            raise RolypolyError(f"--foot {spec}: COMMAND must be one of {', '.join(FOOT_COMMANDS)}")
        out[int(cc)] = command
    return out


#: Generation controls a controller may reach: ``fill`` is a switch (a press: a fill into the
#: next downbeat), the others knobs or expression pedals (0..127 as 0..1).
GENERATE_CCS = ("fill", "follow", "density", "temperature", "pocket")
#: ``--control-cc`` when none is given: the sustain pedal fills, the mod wheel follows, the expression pedal sets density.
DEFAULT_GENERATE_CCS = ("64:fill", "1:follow", "11:density")


def parse_generate_cc(specs) -> tuple[dict[int, str], dict[int, str]]:
    """``--control-cc CC:NAME`` as ``({cc: "fill"}, {cc: knob name})``: switches and knobs.

    >>> parse_generate_cc(["64:fill", "1:follow"])
    ({64: 'fill'}, {1: 'follow'})
    >>> parse_generate_cc(["7:tempo"])
    Traceback (most recent call last):
    ...
    rolypoly.errors.RolypolyError: --control-cc 7:tempo: NAME must be one of fill, follow, density, temperature, pocket
    """
    switches, knobs = {}, {}
    for spec in specs:
        cc, _, name = str(spec).partition(":")
        if not cc.strip().isdigit() or not 0 <= int(cc) <= 127:
            raise RolypolyError(f"--control-cc {spec}: CC must be a controller number 0-127")
        if name not in GENERATE_CCS:
            raise RolypolyError(f"--control-cc {spec}: NAME must be one of {', '.join(GENERATE_CCS)}")
        (switches if name == "fill" else knobs)[int(cc)] = name
    return switches, knobs


#: Foot-switch inputs on JACK, kept (silenced) until the process ends: see FootSwitch.close.
_RETIRED: list = []


class FootSwitch:
    """Control changes from a MIDI input as commands (see the module docstring).

    Parameters
    ----------
    controls : {cc number: command}
    on_command : callable(command), called on rtmidi's thread
    port : an existing MIDI output to listen to (exact name or unique part of it); None: a
        virtual input port named ``port_name`` others connect to
    api : "auto" (JACK when a server runs, else ALSA), "jack" or "alsa"
    channel : only this MIDI channel (0-15), None: any

    Raises
    ------
    DeviceError
        No MIDI API usable, or the port is not there.
    """

    def __init__(self, controls: dict[int, str], on_command, *, port: str | None = None,
                 port_name: str = "rolypoly-control", api: str = "auto", channel: int | None = None,
                 knobs: dict[int, str] | None = None, on_knob=None):
        self.controls = {int(k): v for k, v in controls.items()}
        # Continuous controllers (a knob, an expression pedal): every value, as 0..1, to on_knob(name, value).
        self.knobs, self.on_knob = {int(k): v for k, v in (knobs or {}).items()}, on_knob
        self.on_command, self.channel = on_command, channel
        self.pressed = 0
        self._midi = None
        why: dict = {}
        apis = usable_apis(api, why)
        if not apis:
            raise DeviceError("no MIDI input for a foot switch: " + "; ".join(f"{k}: {v}" for k, v in why.items()))
        self.api = apis[0]
        try:
            self._midi = rtmidi.MidiIn(rtapi=_api_id(self.api), name=jack.own_name(port_name))
            self._midi.ignore_types(sysex=True, timing=True, active_sense=True)
            if port is None:
                self._midi.open_virtual_port(port_name)
                self.port = port_name
            else:
                names = self._midi.get_ports()
                k = match_port(port, names, "MIDI input", f" ({self.api})")
                self._midi.open_port(k)
                self.port = names[k]
            self._midi.set_callback(self._on_message)
        except RolypolyError:
            self.close()
            raise
        except Exception as e:  # rtmidi's own errors
            self.close()
            raise DeviceError(f"MIDI foot switch ({self.api}): {e}") from None
        self.virtual = port is None

    def _on_message(self, event, _data=None) -> None:
        message, _delta = event
        if len(message) != 3 or message[0] & 0xF0 != CONTROL_CHANGE:
            return
        if self.channel is not None and message[0] & 0x0F != self.channel:
            return
        knob = self.knobs.get(message[1])
        if knob is not None and self.on_knob is not None:
            self.on_knob(knob, message[2] / 127.0)
            return
        command = self.controls.get(message[1])
        if command is not None and message[2] >= PRESSED:
            self.pressed += 1
            self.on_command(command)

    def describe(self) -> str:
        """Where to connect the pedal, for the player: e.g. ``jack virtual input 'rolypoly-control' (CC 64: go)``."""
        ccs = ", ".join(f"CC {cc}: {c}" for cc, c in sorted({**self.controls, **self.knobs}.items()))
        where = f"virtual input {self.port!r}" if self.virtual else f"input from {self.port!r}"
        return f"{self.api} {where} ({ccs})"

    def close(self) -> None:
        midi, self._midi = self._midi, None
        if midi is not None:
            try:
                midi.cancel_callback()
            except Exception:  # no callback set yet
                pass
            if self.api == "jack":
                # RtMidi's JACK input unregisters its port while JACK's process thread may be reading
                # it (no lock between them): closing crashed the process once (SIGSEGV in close_port).
                # The pedal is silenced (no callback) and its client ends with the process.
                _RETIRED.append(midi)
                return
            midi.close_port()
            midi.delete()  # rtmidi objects are never collected: close the client now
