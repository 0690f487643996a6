"""Latency calibration: how long rolypoly's sound takes to come back to its input.

``rolypoly calibrate`` plays a few clicks out of the drum output and listens
on the partner input (a loopback cable, or a microphone near the speaker).
Both run in one JACK client (:class:`~rolypoly.realtime.jack_io.JackIO`),
whose callback keeps what it played and what it heard side by side, frame
for frame; the round trip is the lag at which each click comes back (peak
of the cross-correlation, to a fraction of a frame), the median over the
clicks.

JACK reports a latency for the ports' connections (playback and capture);
what the round trip has beyond that -- converters, a sound card's safety
buffers, the air -- cannot be split between output and input from a loop
alone. It is split in half (both converters add about the same), and stored
for that device in ``calibration.json`` in the user data folder: the engine
then places the drums that much earlier and stamps onsets that much
earlier, so a hit *sounds* at its intended time and an onset is where it was
*played*.

The calibration also keeps the loop's response around the round trip (a
least-squares fit of what came back to what was played, 128 taps): with a
microphone near the speaker that is how the drums bleed into the partner
input, and the bleed canceller (:mod:`rolypoly.realtime.bleed`) starts from it.

Examples
--------
>>> result = calibrate_jack(playback=["system:playback_1"], capture="system:capture_1")   # doctest: +SKIP
>>> result["round_trip_ms"], result["output_latency_ms"]                                 # doctest: +SKIP
(5.333, 1.333)
"""
from __future__ import annotations

import math
import time

import numpy as np

from rolypoly.errors import DeviceError

#: One click: a burst of white noise (its correlation peak is one frame wide).
CLICK_S = 0.002
CLICK_PEAK = 0.5
#: Response kept: taps before and after the round trip's peak.
IR_LEAD, IR_TAPS = 16, 128
#: A click counts as heard when its correlation peak is this far above the rest.
MIN_PEAK_RATIO = 4.0


def click(sample_rate: int = 48000) -> np.ndarray:
    """The calibration click: 2 ms of seeded white noise, faded in and out.

    >>> x = click(48000)
    >>> len(x), float(np.abs(x).max()) <= 0.5
    (96, True)
    """
    n = max(16, int(CLICK_S * sample_rate))
    x = np.random.default_rng(20240607).standard_normal(n)
    x *= np.hanning(n + 2)[1:-1]
    return (CLICK_PEAK * x / np.abs(x).max()).astype(np.float32)


def click_kit(sample_rate: int = 48000):
    """A kit whose every drum is the click, at one layer (for the real-time core to play)."""
    from rolypoly.drum_map import N_CLASSES
    from rolypoly.kit import SampleKit

    x = click(sample_rate)
    return SampleKit([[(127, x)] for _ in range(N_CLASSES)], sample_rate, name="calibration click")


def round_trip(played: np.ndarray, heard: np.ndarray, sample_rate: int, max_s: float = 0.5) -> dict:
    """Lag (frames) at which each click of ``played`` comes back in ``heard`` (same frame axis).

    Returns the median lag (sub-frame, parabolic peak), the spread and the
    clicks found, and the response around the lag (least squares).

    Examples
    --------
    >>> sr = 48000; x = click(sr)
    >>> played = np.zeros(sr, np.float32); heard = np.zeros(sr, np.float32)
    >>> for k in (1000, 20000): played[k:k + len(x)] = x; heard[k + 333:k + 333 + len(x)] = 0.3 * x
    >>> r = round_trip(played, heard, sr)
    >>> round(r["lag_frames"], 3), r["clicks"]
    (333.0, 2)
    """
    template = click(sample_rate)
    m = len(template)
    energy = np.abs(played) > 0
    starts = np.flatnonzero(energy & ~np.r_[False, energy[:-1]])
    # a click's first non-zero sample; clicks closer than their own length are one click
    starts = starts[np.r_[True, np.diff(starts) > m]] if len(starts) else starts
    max_lag = int(max_s * sample_rate)
    lags, peaks = [], []
    for a in starts:
        seg = heard[a:a + max_lag + m].astype(np.float64)
        if len(seg) < m + 2:
            continue
        c = np.correlate(seg, played[a:a + m].astype(np.float64), "valid")
        k = int(np.argmax(np.abs(c)))
        rest = np.delete(np.abs(c), range(max(0, k - m), min(len(c), k + m)))
        if not len(rest) or abs(c[k]) < MIN_PEAK_RATIO * (np.percentile(rest, 99.9) + 1e-12):
            continue
        frac = 0.0
        if 0 < k < len(c) - 1:
            y0, y1, y2 = abs(c[k - 1]), abs(c[k]), abs(c[k + 1])
            denom = y0 - 2 * y1 + y2
            frac = 0.5 * (y0 - y2) / denom if denom else 0.0
        lags.append(k + frac)
        peaks.append(float(abs(c[k])))
    if not lags:
        return {"clicks": 0, "sent": int(len(starts))}
    lag = float(np.median(lags))
    return {"clicks": len(lags), "sent": int(len(starts)), "lag_frames": lag,
            "spread_frames": float(np.max(lags) - np.min(lags)),
            "response": _response(played, heard, int(round(lag)) - IR_LEAD, IR_TAPS).tolist(),
            "response_lag_frames": int(round(lag)) - IR_LEAD}


def _response(played: np.ndarray, heard: np.ndarray, lag0: int, taps: int) -> np.ndarray:
    """Least-squares FIR h (taps) with heard[n] ~ sum_k h[k] played[n - lag0 - k], where clicks sound."""
    n = len(heard)
    idx = np.flatnonzero(np.convolve(np.abs(played) > 0, np.ones(taps + 1), "full")[:n] > 0) + lag0
    idx = idx[(idx >= lag0 + taps) & (idx < n)]
    if len(idx) < taps:
        return np.zeros(taps)
    cols = idx[:, None] - lag0 - np.arange(taps)[None, :]
    X = played[cols].astype(np.float64)
    h, *_ = np.linalg.lstsq(X, heard[idx].astype(np.float64), rcond=None)
    return h


def calibrate_jack(playback=None, capture: str | None = None, *, clicks: int = 8, spacing_s: float = 0.25,
                   io=None, connect: bool = True) -> dict:
    """Play clicks out of a JACK client, hear them back, and measure the round trip.

    Parameters
    ----------
    playback : list of str, optional
        JACK ports the clicks go to (default: the first physical playback port).
    capture : str, optional
        JACK port the clicks come back on (default: the first physical capture port).
    clicks, spacing_s : how many clicks, how far apart
    io : a JackIO with the click kit and an input, to use instead of opening one (tests)

    Returns
    -------
    dict
        ``round_trip_ms`` and frames, JACK's reported playback and capture
        latencies, the extra beyond them, ``output_latency_ms`` and
        ``input_latency_ms`` (the extra split in half), the spread over the
        clicks, and the loop's response (``response``, from frame
        ``response_lag_frames``).

    Raises
    ------
    DeviceError
        JACK not running, no such ports, or no click came back.
    """
    from rolypoly.realtime.clock import RealClock

    from .jack_io import JackIO

    own = io is None
    if own:
        from rolypoly.realtime import jack as jackctl

        io = JackIO(kit=click_kit(_server_rate()), listen=True, name=jackctl.own_name("rolypoly-calibrate"))
    try:
        if connect:
            physical_out = [p.name for p in io.client.get_ports(is_audio=True, is_input=True, is_physical=True)]
            physical_in = [p.name for p in io.client.get_ports(is_audio=True, is_output=True, is_physical=True)]
            playback = playback or physical_out[:1]
            capture = capture or (physical_in[0] if physical_in else None)
            if not playback or capture is None:
                raise DeviceError("calibration needs a playback and a capture port; JACK has "
                                  f"playback {physical_out or 'none'}, capture {physical_in or 'none'}")
            io.connect_outputs(playback)
            io.connect_input(capture)
        clock = RealClock()
        io.set_clock(clock)
        time.sleep(0.1)  # connections take a cycle or two
        start = int(io.state.ring_written)
        first = clock.now() + 0.1
        for k in range(clicks):
            io.schedule([0], [127], first + k * spacing_s)
        time.sleep(0.1 + clicks * spacing_s + 0.5)
        written = int(io.state.ring_written)
        cap = len(io.in_ring)
        span = np.arange(max(start, written - cap), written) % cap
        played, heard = io.drum_ring[span].copy(), io.in_ring[span].copy()
        found = round_trip(played, heard, io.rate, max_s=min(0.5, spacing_s * 0.9))
        reported_play, reported_cap = int(io.state.playback_latency), int(io.state.capture_latency)
        rate, period, xruns = io.rate, io.period, io.xruns
    finally:
        if own:
            io.close()
    if not found["clicks"]:
        raise DeviceError(f"none of the {found['sent']} clicks came back on {capture}: connect the output to the "
                          "input (a loopback cable, or a microphone near the speaker) and turn it up")
    lag = found["lag_frames"]
    extra = lag - reported_play - reported_cap
    ms = 1e3 / rate
    return {
        "round_trip_frames": round(lag, 3), "round_trip_ms": round(lag * ms, 4),
        "reported_playback_frames": reported_play, "reported_capture_frames": reported_cap,
        "extra_frames": round(extra, 3),
        "output_latency_ms": round(extra / 2 * ms, 4), "input_latency_ms": round(extra / 2 * ms, 4),
        "spread_ms": round(found["spread_frames"] * ms, 4), "clicks": found["clicks"], "sent": found["sent"],
        "rate": rate, "period": period, "xruns": xruns, "playback": list(playback or []), "capture": capture,
        "response": [round(float(v), 6) for v in found["response"]],
        "response_lag_frames": found["response_lag_frames"],
        "note": "the loop's latency beyond what JACK reports is split in half between output and input",
    }


def _server_rate() -> int:
    from rolypoly.realtime import jack as jackctl

    watch = jackctl.JackWatch.shared()
    return watch.rate


# ----------------------------------------------------------------------------- stored calibrations

def calibration_file():
    from rolypoly.paths import user_data_dir

    return user_data_dir() / "calibration.json"


def device_key(playback, capture, rate: int, period: int) -> str:
    """The name a calibration is stored under: ``jack:PLAYBACK>CAPTURE@RATE/PERIOD``.

    >>> device_key(["system:playback_1"], "system:capture_1", 48000, 64)
    'jack:system:playback_1>system:capture_1@48000/64'
    """
    return f"jack:{','.join(playback)}>{capture}@{rate}/{period}"


def save(result: dict, path=None) -> str:
    """Store a calibration under its device key; returns the key."""
    from rolypoly.jsonfile import edit_json

    key = device_key(result["playback"], result["capture"], result["rate"], result["period"])
    edit_json(path or calibration_file(), lambda d: d.__setitem__(key, {**result, "measured": time.time()}),
              missing_ok=True)
    return key


def load(playback, capture, rate: int, period: int, path=None) -> dict | None:
    """The stored calibration of this device, or None."""
    from rolypoly.jsonfile import read_json

    p = path or calibration_file()
    if not p.is_file():
        return None
    return read_json(p).get(device_key(playback, capture, rate, period))


def latencies(result: dict | None) -> tuple[float, float]:
    """(output, input) latency in seconds beyond what JACK reports, from a calibration (0 without)."""
    if not result:
        return 0.0, 0.0
    out, inp = result.get("output_latency_ms", 0.0), result.get("input_latency_ms", 0.0)
    return (out / 1e3 if math.isfinite(out) else 0.0), (inp / 1e3 if math.isfinite(inp) else 0.0)
