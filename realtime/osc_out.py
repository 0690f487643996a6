"""What rolypoly plays and hears, sent as OSC over UDP (python-osc).

Three addresses, all fire-and-forget:

``/rolypoly/hit``   row (i), intended_s (d), actual_s (d), then the model's outputs ``yhat`` (f...)
``/rolypoly/onset`` time_s (d), available_s (d), then the onset descriptor values (f...)
``/rolypoly/state`` key, value, key, value, ... (e.g. ``"bpm", 96.0``)

Times are 64-bit doubles (OSC type ``d``): a 32-bit float keeps only ~60 µs
of detail ten minutes into a take, too coarse to study timing.

The socket never blocks and nothing is raised into the engine: a failed send
is counted in :attr:`OscOut.failures` and the last reason kept in
:attr:`OscOut.error`.

Examples
--------
>>> from rolypoly.realtime.osc_out import OscOut
>>> osc = OscOut(port=57120)
>>> osc.state(take="warmup", bpm=96.0)
True
>>> osc.close()
"""
from __future__ import annotations

import socket

from pythonosc.osc_message_builder import OscMessageBuilder

_DOUBLE = OscMessageBuilder.ARG_TYPE_DOUBLE
from pythonosc.udp_client import UDPClient

from rolypoly.errors import DeviceError

#: Default destination port: SuperCollider's language (sclang) listens here.
DEFAULT_PORT = 57120


def _flat(values) -> list[float]:
    """Numbers (a scalar, a list or a numpy array of any shape) as plain floats."""
    if values is None:
        return []
    if hasattr(values, "ravel"):
        values = values.ravel().tolist()
    elif isinstance(values, (int, float)):
        values = [values]
    return [float(v) for v in values]


def _plain(value):
    """A value python-osc can pack: bool, int, float, str (numpy scalars included)."""
    if isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


class OscOut:
    """Non-blocking OSC sender for hits, onsets and engine state.

    Parameters
    ----------
    host : str
        Receiver's host name or address; resolved once here, not per message.
    port : int
        Receiver's UDP port.

    Raises
    ------
    DeviceError
        The host cannot be resolved or the port is out of range.

    Attributes
    ----------
    sent, failures : int
        Messages sent, and messages that could not be sent.
    error : str or None
        Why the last failed send failed (one line).

    Examples
    --------
    >>> osc = OscOut("127.0.0.1", 57120)
    >>> osc.hit(12, 6.0, 6.012, [0.01, -0.02])
    True
    >>> osc.onset(6.013, 6.020, [0.5, 0.1])
    True
    >>> osc.close()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        if not 0 < int(port) < 65536:
            raise DeviceError(f"OSC port {port} is out of range 1..65535")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
            # IPv4 first: "localhost" may resolve to ::1 while OSC receivers
            # (SuperCollider, Max, Pd) usually listen on IPv4 only.
            addr = sorted(infos, key=lambda info: info[0] != socket.AF_INET)[0][4][0]
        except (socket.gaierror, UnicodeError) as exc:
            raise DeviceError(f"OSC host {host!r} cannot be resolved: {exc}") from None
        self.host, self.port, self.address = host, int(port), addr
        # UDPClient makes a non-blocking socket; a numeric address keeps sendto off DNS.
        self._client = UDPClient(addr, self.port)
        self.sent = 0
        self.failures = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"OscOut({self.host}:{self.port}, sent={self.sent}, failures={self.failures})"

    def __enter__(self) -> "OscOut":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, address: str, args) -> bool:
        """Send one message; False (and counted) when it could not be sent.

        An argument may be a ``(value, type_tag)`` pair to force its OSC type.

        >>> OscOut().send("/rolypoly/ping", [1, (2.5, "d"), "x"])
        True
        """
        if self._client is None:
            self.failures += 1
            self.error = "OSC output is closed"
            return False
        try:
            builder = OscMessageBuilder(address=address)
            for a in args:
                if isinstance(a, tuple):  # (value, OSC type tag)
                    builder.add_arg(*a)
                else:
                    builder.add_arg(a)
            self._client.send(builder.build())
        except Exception as exc:  # full socket buffer, unreachable host, bad argument
            self.failures += 1
            self.error = f"OSC send {address} to {self.host}:{self.port} failed: {exc}"
            return False
        self.sent += 1
        return True

    def hit(self, row: int, intended_s: float, actual_s: float, yhat=()) -> bool:
        """``/rolypoly/hit row intended_s actual_s *yhat``: a step rolypoly played.

        ``yhat`` (the model's outputs for the row, any shape) is sent flat.
        """
        times = [(float(intended_s), _DOUBLE), (float(actual_s), _DOUBLE)]
        return self.send("/rolypoly/hit", [int(row), *times, *_flat(yhat)])

    def onset(self, time_s: float, available_s: float, descriptor=()) -> bool:
        """``/rolypoly/onset time_s available_s *descriptor``: an onset heard from the partner.

        ``available_s`` is when the onset became known to the engine.
        """
        times = [(float(time_s), _DOUBLE), (float(available_s), _DOUBLE)]
        return self.send("/rolypoly/onset", [*times, *_flat(descriptor)])

    def state(self, **fields) -> bool:
        """``/rolypoly/state key value ...``: engine state as key/value pairs.

        >>> OscOut().state(bpm=96.0, midi_error="")
        True
        """
        args = []
        for key, value in fields.items():
            args += [key, _plain(value)]
        return self.send("/rolypoly/state", args)

    def close(self) -> None:
        """Close the socket; later sends are counted as failures."""
        if self._client is not None:
            self._client._sock.close()
            self._client = None
