"""What JACK itself does on this machine, with no rolypoly in it: cycles a lone client missed or ran late.

::

    rolypoly bench jack --minutes 5 --json jack.json

A JACK server as ``bench output`` starts it (64 frames at 48 kHz, real-time
scheduling where allowed; the dummy backend where there is no sound card)
runs one client for ``minutes``: the output bench's audio capture
(:class:`~rolypoly.lab.bench_output.AudioCapture`, rolypoly's C process
callback, an input with nothing connected), in a process of its own. Its
callback keeps JACK's frame counter and time of every cycle it ran.
Afterwards:

* ``cycles.skipped``: cycles the frame counter jumped over between two
  callbacks (JACK ran them without the client, or did not run them);
* ``cycles.late_callbacks``: callbacks that ran so late that they read the
  next cycle's times (the output benches relabel these);
* ``cycles.time_lost_pct``: how far JACK's sample clock fell behind the wall
  clock over the run;
* the server's logged xruns, and the share of CPU time the hypervisor took
  away (``/proc/stat`` steal: 0 on real hardware).

What ``bench output`` and ``bench soak`` count as cycles the capture did not
run, notes left late by the player and notes due where the capture missed
the output come from here when this probe shows the same with no rolypoly
client at all: they are the machine's, not the drum machine's.
"""
from __future__ import annotations

import json
import os
import platform
import time

from rolypoly.lab import bench_output as bo


def run(json_path=None, *, minutes: float = 5.0, period: int = 64, rate: int = 48000, verbose: bool = False) -> dict:
    """Run the probe (see the module docstring); the report as a dict, also written to ``json_path``.

    Raises
    ------
    DeviceError
        JACK cannot run, or the client does not start.
    """
    load_before = os.getloadavg()
    server = bo._server(period, rate, portaudio=False)
    try:
        capture = bo.CaptureProcess(f"rolypoly-jack-probe-{os.getpid()}", audio=True)
        try:
            busy0 = bo._busy_jiffies()
            start = time.monotonic()
            end = start + minutes * 60.0
            while time.monotonic() < end:  # the child drains its rings by itself; this only waits
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
                if verbose:
                    print(f"  {(time.monotonic() - start) / 60:.1f} of {minutes:g} min", flush=True)
            wall = time.monotonic() - start
            busy1 = bo._busy_jiffies()
            data = capture.stop()
            capture = None
        finally:
            if capture is not None:
                capture.kill()
        info = {"name": server.name, "started_here": server.owned, "period": int(data["period"]),
                "rate": int(data.get("rate", rate)),
                "driver": server.driver if server.owned else "not known (reused)",
                "realtime": server.realtime if server.owned else "not known (reused)"}
        if server.owned:
            info["xruns_in_log"] = server.log().count("XRun")
    finally:
        server.stop()
    report = _report(data, info, minutes, wall, busy0, busy1, load_before)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report


def _report(data, server, minutes, wall, busy0, busy1, load_before) -> dict:
    total = max(busy1[1] - busy0[1], 1)
    cycles = bo.cycle_figures(data)
    per_min = 60.0 / max(wall, 1e-9)
    return {
        "what": "one JACK client with nothing but an input (rolypoly's C callback), alone on the server: the "
                "cycles this machine loses with no rolypoly client at all",
        "command": f"rolypoly bench jack --minutes {minutes:g}",
        "server": server,
        "minutes": round(wall / 60.0, 2),
        "cycles": {**cycles, "skipped_per_minute": round(cycles["skipped"] * per_min, 2),
                   "late_callbacks_per_minute": round(cycles["late_callbacks"] * per_min, 2)},
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "busy_pct_of_all_cores": round(100 * (busy1[0] - busy0[0]) / total, 1),
                    "hypervisor_steal_pct_of_all_cores": round(100 * (busy1[2] - busy0[2]) / total, 3),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
