"""JACK clients the live tests need beside rolypoly's own: a delay line, a partner that plays notes.

* :class:`DelayLine` -- a JACK client in a process of its own (JACK-Client,
  a Python callback: its interpreter lock is its own) whose output is its
  input delayed by a number of frames and scaled: a loop of known latency,
  or the drums bleeding into the partner input at a known level.
* :func:`partner_kit` -- plucked notes as a "kit", so a partner can be
  played by a :class:`~rolypoly.realtime.jack_io.JackIO` of its own, each
  note starting on a known frame.

Examples
--------
>>> with DelayLine("rolypoly-delay", frames=300, gain=1.0) as delay:   # doctest: +SKIP
...     delay.input, delay.output
('rolypoly-delay:in', 'rolypoly-delay:out')
"""
from __future__ import annotations

import os
import select
import subprocess
import sys

import numpy as np

from rolypoly.errors import DeviceError

_DELAY = r"""
import sys, numpy as np, jack
name, delay, gain = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
client = jack.Client(name, no_start_server=True)
inp, out = client.inports.register("in"), client.outports.register("out")
ring = np.zeros(1 << 17, np.float32)
mask = len(ring) - 1
pos = [0]

@client.set_process_callback
def process(frames):
    idx = (pos[0] + np.arange(frames)) & mask
    ring[idx] = inp.get_array()
    out.get_array()[:] = gain * ring[(idx - delay) & mask]
    pos[0] += frames

client.activate()
print("ready", client.name, flush=True)
sys.stdin.read()
client.deactivate()
client.close()
"""


class DelayLine:
    """A JACK client (own process) whose ``out`` is its ``in`` ``frames`` later, times ``gain``.

    Raises
    ------
    DeviceError
        The process did not come up (no JACK server, no JACK-Client).
    """

    def __init__(self, name: str, frames: int, gain: float = 1.0, timeout_s: float = 15.0):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-c", _DELAY, name, str(int(frames)), str(float(gain))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=root)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        words = self.proc.stdout.readline().split() if ready else []
        if len(words) != 2 or words[0] != "ready":
            self.close()
            raise DeviceError(f"the delay line did not start: {self.proc.stderr.read()[-300:] if self.proc.poll() is not None else 'timeout'}")
        self.name = words[1]
        self.input, self.output = f"{self.name}:in", f"{self.name}:out"
        self.frames, self.gain = int(frames), float(gain)

    def close(self) -> None:
        """Stop the client (closing its stdin lets it leave JACK cleanly)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()

    def __enter__(self) -> "DelayLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def partner_kit(sample_rate: int = 48000, seconds: float = 0.1):
    """Nine plucked notes (E2 to E3 and up) as a kit's nine "drums", one layer each.

    A :class:`~rolypoly.realtime.jack_io.JackIO` with this kit plays a partner
    part note by note, each note starting on the frame of its time.
    """
    from rolypoly.kit import SampleKit
    from rolypoly.lab.partner_audio import plucked_guitar

    pitches = [40, 43, 45, 47, 50, 52, 55, 57, 59]
    layers = []
    for p in pitches:
        x = plucked_guitar([0.0], durations=seconds, pitches=[p], sample_rate=sample_rate)
        x = np.asarray(x, np.float32)
        first = int(np.flatnonzero(np.abs(x) > 0)[0])
        layers.append([(127, x[first:first + int(0.25 * sample_rate)])])
    return SampleKit(layers, sample_rate, name="plucked partner notes")
