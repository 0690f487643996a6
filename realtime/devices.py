"""Audio and MIDI devices, for ``rolypoly devices`` and for picking the input.

Audio devices come from PortAudio (sounddevice), MIDI ports from
python-rtmidi for each MIDI system that can be used now. Under JACK,
PortAudio shows one device per JACK client with audio ports (``system`` is
the hardware, or the dummy backend's stand-in).

Examples
--------
>>> from rolypoly.realtime.devices import list_devices, format_devices
>>> print(format_devices(list_devices()))                   # doctest: +SKIP
Audio (PortAudio V19.6.0-devel):
  [0] system  JACK Audio Connection Kit  in 2  out 2  48000 Hz  default in, default out
MIDI jack:
  send to:     none
  listen to:   rolypoly:rolypoly
MIDI alsa: no ALSA sequencer (/dev/snd/seq missing)
"""
from __future__ import annotations

from rolypoly.errors import DeviceError
from rolypoly.realtime import midi_out


def _sounddevice():
    """sounddevice, or a DeviceError when PortAudio cannot be loaded."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(f"PortAudio cannot be loaded ({exc}): install the Debian package "
                          "libportaudio2 (apt-get install libportaudio2)") from None
    except ImportError:
        raise DeviceError("sounddevice is not installed: pip install sounddevice") from None
    return sounddevice


def audio_devices() -> list[dict]:
    """PortAudio's devices as plain dicts (index, name, hostapi, inputs, outputs...).

    >>> all("hostapi" in d for d in audio_devices())
    True
    """
    sd = _sounddevice()
    apis = sd.query_hostapis()
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    out = []
    for d in sd.query_devices():
        out.append({
            "index": d["index"],
            "name": d["name"],
            "hostapi": apis[d["hostapi"]]["name"],
            "inputs": d["max_input_channels"],
            "outputs": d["max_output_channels"],
            "samplerate": d["default_samplerate"],
            "default_input": d["index"] == default_in,
            "default_output": d["index"] == default_out,
        })
    return out


def _default_index(sd, kind: str) -> int:
    try:
        return sd.query_devices(kind=kind)["index"]
    except Exception:  # no default device of that kind
        return -1


def list_devices() -> dict:
    """Everything ``rolypoly devices`` shows, as a dict.

    Returns
    -------
    dict
        ``portaudio`` (version text), ``hostapis`` (names), ``audio`` (see
        :func:`audio_devices`) and ``midi``: for ``"jack"`` and ``"alsa"`` a
        dict with ``outputs`` (ports rolypoly can send to), ``inputs`` (ports
        it can listen to) and ``error`` (why the API is unusable, or None).

    Raises
    ------
    DeviceError
        PortAudio cannot be loaded.

    Examples
    --------
    >>> sorted(list_devices())
    ['audio', 'hostapis', 'midi', 'portaudio']
    """
    sd = _sounddevice()
    midi = {}
    for api in ("jack", "alsa"):
        reason = midi_out.api_status(api)
        entry = {"outputs": [], "inputs": [], "error": reason}
        if reason is None:
            entry["outputs"] = midi_out.list_ports(api, "output").get(api, [])
            entry["inputs"] = midi_out.list_ports(api, "input").get(api, [])
        midi[api] = entry
    return {
        "portaudio": sd.get_portaudio_version()[1],
        "hostapis": [h["name"] for h in sd.query_hostapis()],
        "audio": audio_devices(),
        "midi": midi,
    }


def format_devices(d: dict) -> str:
    """Text for ``rolypoly devices`` from :func:`list_devices`.

    >>> print(format_devices({"portaudio": "PortAudio V19", "hostapis": [], "audio": [],
    ...                       "midi": {"alsa": {"outputs": [], "inputs": [], "error": "no sequencer"}}}))
    Audio (PortAudio V19):
      no audio devices
    MIDI alsa: no sequencer
    """
    lines = [f"Audio ({d['portaudio']}):"]
    if not d["audio"]:
        lines.append("  no audio devices")
    for a in d["audio"]:
        defaults = [w for w, flag in (("default in", a["default_input"]), ("default out", a["default_output"])) if flag]
        lines.append(f"  [{a['index']}] {a['name']}  {a['hostapi']}  in {a['inputs']}  out {a['outputs']}  "
                     f"{a['samplerate']:.0f} Hz" + (f"  {', '.join(defaults)}" if defaults else ""))
    for api, m in d["midi"].items():
        if m["error"]:
            lines.append(f"MIDI {api}: {m['error']}")
            continue
        lines.append(f"MIDI {api}:")
        lines.append(f"  send to:     {', '.join(m['outputs']) or 'none'}")
        lines.append(f"  listen to:   {', '.join(m['inputs']) or 'none'}")
    return "\n".join(lines)


def _input_listing(inputs) -> str:
    return "; ".join(f"[{a['index']}] {a['name']} ({a['hostapi']})" for a in inputs) or "none"


def input_devices_text() -> str:
    """One line listing the audio inputs, for error messages.

    >>> input_devices_text()                                 # doctest: +SKIP
    'input devices: [0] system (JACK Audio Connection Kit)'
    """
    try:
        return "input devices: " + _input_listing([a for a in audio_devices() if a["inputs"] > 0])
    except DeviceError as e:
        return str(e)


def resolve_input_device(spec=None) -> int:
    """PortAudio index of the audio input named by ``spec``.

    Parameters
    ----------
    spec : int, str or None
        A device index (``3`` or ``"3"``), an exact name or a unique
        case-insensitive part of one (``"system"``), or None for the default
        input device.

    Raises
    ------
    DeviceError
        No such input device, or the name is ambiguous; the message lists the
        input devices.

    Examples
    --------
    >>> resolve_input_device("system")                       # doctest: +SKIP
    0
    """
    inputs = [a for a in audio_devices() if a["inputs"] > 0]
    listing = _input_listing(inputs)
    if spec is None:
        default = [a for a in inputs if a["default_input"]]
        if not default:
            raise DeviceError(f"no default audio input device; input devices: {listing}")
        return default[0]["index"]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        if not any(a["index"] == index for a in inputs):
            raise DeviceError(f"audio input device {index} does not exist or has no inputs; "
                              f"input devices: {listing}")
        return index
    spec = str(spec).strip()
    exact = [a for a in inputs if a["name"] == spec]
    hits = exact or [a for a in inputs if spec.lower() in a["name"].lower()]
    if len(hits) == 1:
        return hits[0]["index"]
    if not hits:
        raise DeviceError(f"audio input device {spec!r} not found; input devices: {listing}")
    names = "; ".join(f"[{a['index']}] {a['name']}" for a in hits)
    raise DeviceError(f"audio input device {spec!r} is ambiguous ({names}); give its index")
