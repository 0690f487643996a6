"""The rig of a live take: what rolypoly listens to and what it plays through.

:func:`open_rig` turns the musician's choices (partner input or recording,
``--drums audio|midi|both``, ``--kit``, ``--midi``, ``--midi-latency-ms``,
``--clock-in``) into a :class:`Rig` -- the partner source and the outputs
the engine gets -- the best way this machine allows:

* **a JACK server runs**: one JACK client, :class:`~rolypoly.realtime.jack_io.JackIO`,
  plays the sampled kit (to the first two physical playback ports), the
  drums' MIDI at their frames, MIDI clock, and listens to the partner
  (``system:capture_N``) and to an incoming MIDI clock, all on JACK's
  clock; a stored calibration of those ports (``rolypoly calibrate``) sets
  the extra latencies and the bleed canceller;
* **otherwise PortAudio**: the kit plays through the partner's device in
  one full-duplex stream (:class:`~rolypoly.realtime.sources.LiveSource`),
  or through the default output beside a recorded partner
  (:class:`~rolypoly.realtime.sources.AudioOut`); MIDI through python-rtmidi
  (ALSA), shifted early by ``--midi-latency-ms``; an incoming MIDI clock
  through rtmidi too (stamped when it arrives).

What cannot be had is said in one line each (:attr:`Rig.notes`) and the take
goes on without it: no audio output means MIDI only; no MIDI system means
audio only. When nothing at all can sound the drums (or, live, hear the
partner), one :class:`~rolypoly.errors.DeviceError` line says exactly what
to do -- start JACK, or ``--midi off``, or ``--partner-file`` -- before
anything slow (a kit, the onset detector, the agent) is made.

Examples
--------
>>> rig = open_rig(partner_file="bass.wav", drums="both")       # doctest: +SKIP
>>> rig.notes                                                     # doctest: +SKIP
['no JACK server and no audio output device: drums as MIDI only']
>>> play_take(score, rig.source, RealClock(), drums=rig.drums, midi=rig.midi, kit=rig.kit)   # doctest: +SKIP
>>> rig.close()                                                   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rolypoly.errors import DeviceError, RolypolyError

DRUMS = ("audio", "midi", "both")


@dataclass
class Rig:
    """What a live take listens to and plays through (see :func:`open_rig`)."""

    source: object
    drums: object = None            # the engine's placed-to-the-sample output (JackIO, LiveSource, AudioOut)
    midi: object = None             # python-rtmidi output (MidiOut) when MIDI does not go through JACK
    kit: object = None              # the SampleKit heard (mix.wav is rendered with it)
    midi_early_s: float = 0.0       # rtmidi MIDI leaves this much early
    clock_follower: object = None   # an incoming MIDI clock, when asked for
    detector: dict | None = None    # the onset detector's settings (a session's calibration, an instrument)
    notes: list[str] = field(default_factory=list)
    describe: list[str] = field(default_factory=list)
    _closers: list = field(default_factory=list)

    def wait_for_clock(self, timeout_s: float = 30.0) -> float:
        """Wait until the incoming MIDI clock runs; returns its tempo (quarter notes per minute).

        Raises
        ------
        DeviceError
            No clock within ``timeout_s`` (is the sequencer playing?).
        """
        follower = self.clock_follower
        if not follower.wait(timeout_s):
            raise DeviceError(f"no running MIDI clock on {follower.source} within {timeout_s:g} s "
                              "(start the sequencer: rolypoly waits for Start or Continue and a few ticks)")
        return follower.tempo()

    def bar_start(self, clock, score, lead_s: float = 0.3) -> float:
        """Engine time of the incoming clock's next bar line at least ``lead_s`` from now (the take's start).

        A bar is the score's first meter in MIDI clock ticks (24 a quarter note).
        """
        _, num, den = score.tempo_map.meters[0]
        at = self.clock_follower.next_bar(clock.now() + lead_s, int(round(24 * 4 * num / den)))
        self.clock_follower.watch(at)
        return at

    def problems(self, now: float) -> list[str]:
        """What went wrong outside the engine's outputs (an rtmidi clock that stopped)."""
        if self.clock_follower is not None and not hasattr(self.drums, "clock_follower"):
            return self.clock_follower.problems(now)
        return []

    def close(self) -> None:
        """Close every device the rig opened (in reverse order; safe twice)."""
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:  # closing must never hide the take's own outcome
                pass


def open_rig(*, partner_device=None, partner_file=None, channel: int = 0, sample_rate: int = 48000,
             block: int = 64, drums: str = "both", kit=None, midi: str = "virtual", midi_latency_ms: float = 0.0,
             clock_in: str | None = None, calibration: bool = True, name: str = "rolypoly", clock=None,
             detector: dict | None = None, partner: bool = True) -> Rig:
    """Open the partner source and the drum outputs (see module docstring).

    Parameters
    ----------
    partner_device : audio input (index or name; JACK: ``system`` or a capture port), default input
    partner_file : a recording played as the partner instead
    channel : input channel of the partner (0-based)
    sample_rate, block : PortAudio stream settings (JACK brings its own)
    drums : ``audio`` (the sampled kit), ``midi`` or ``both``
    kit : ``--kit`` (a soundfont, a folder, ``synth``; default the installed GM soundfont)
    midi : ``virtual`` (a port of rolypoly's own), an existing port to connect to, or ``off``
    midi_latency_ms : an external synth's latency: MIDI leaves this much early
    clock_in : a MIDI port sending MIDI clock: the take follows it (see rolypoly.realtime.midi_clock)
    calibration : use the stored calibration of the JACK ports
    clock : the RealClock of the take (an incoming MIDI clock is stamped on it from now on)
    detector : the partner's onset detector settings (:func:`rolypoly.onsets.session_settings`)
    partner : False: the outputs only (``rolypoly serve``, whose partner each take names); ``source`` stays None

    Raises
    ------
    DeviceError, RolypolyError
        A device or port named that does not exist, a kit that cannot be used.
    """
    if drums not in DRUMS:
        raise RolypolyError(f"--drums {drums!r}: use audio, midi or both")
    if midi_latency_ms < 0:
        raise RolypolyError(f"--midi-latency-ms {midi_latency_ms:g}: an external synth's latency is >= 0 ms")
    from rolypoly.realtime import jack as jackctl

    rig = Rig(source=None, detector=detector)
    try:
        if jackctl.server_running():
            _jack_rig(rig, partner_device, partner_file, channel, drums, kit, midi, midi_latency_ms, clock_in,
                      calibration, name, clock, partner)
        else:
            _portaudio_rig(rig, partner_device, partner_file, channel, sample_rate, block, drums, kit, midi,
                           midi_latency_ms, clock_in, clock, partner)
    except BaseException:
        rig.close()
        raise
    return rig


def _load_kit(kit, rate: int, rig: Rig):
    from rolypoly.kit import load_kit

    loaded = load_kit(kit, rate)
    rig.notes.extend(loaded.notes)
    rig.kit = loaded
    return loaded


def _jack_rig(rig, partner_device, partner_file, channel, drums, kit, midi, midi_latency_ms, clock_in,
              calibration, name, clock, partner=True) -> None:
    from rolypoly.realtime import jack as jackctl

    from . import calibrate as cal
    from .jack_io import JackIO

    watch = jackctl.JackWatch.shared()
    rate, period = watch.rate, watch.period
    listen = partner and partner_file is None
    capture = None
    if listen:
        captures = [p for p in jackctl.ports(":capture_") if p.startswith("system:")] or jackctl.ports(":capture_")
        spec = str(partner_device or "system")
        exact = [p for p in jackctl.ports(spec) if p == spec]
        if exact:
            capture = exact[0]
        else:
            named = [p for p in captures if p.startswith(spec.rstrip(":") + ":")]
            if not named and (partner_device is None or spec == "system"):
                named = captures  # no system ports by that name: the first capture ports there are
            if not named:
                raise DeviceError(f"no JACK capture port for the partner ({spec!r}); JACK ports: "
                                  f"{', '.join(jackctl.ports()) or 'none'}")
            if channel >= len(named):
                raise DeviceError(f"{spec}: has {len(named)} capture ports, channel {channel + 1} asked for")
            capture = named[channel]
    playback = [p for p in jackctl.ports(":playback_") if p.startswith("system:")][:2]
    audio = drums in ("audio", "both")
    if audio and not playback:
        rig.notes.append("JACK has no playback ports: drums as MIDI only")
        audio = False
    want_midi = drums in ("midi", "both") or not audio
    stored = cal.load(playback[:1], capture, rate, period) if calibration and capture and playback else None
    out_lat, in_lat = cal.latencies(stored)
    io = JackIO(kit=_load_kit(kit, rate, rig) if audio else None, midi=want_midi and midi != "off",
                clock_out=True, listen=listen, clock_in=clock_in is not None, name=name,
                midi_latency_s=midi_latency_ms / 1e3, output_latency_s=out_lat, input_latency_s=in_lat,
                bleed=stored, detector=rig.detector)
    rig._closers.append(io.close)
    rig.drums = io
    if clock is not None:
        io.set_clock(clock)
    if audio:
        io.connect_outputs(playback)
        rig.describe.append(f"drums: {rig.kit.describe()} -> {', '.join(playback)} (JACK, placed to the frame)")
    if io.midi_port is not None:
        if midi not in ("virtual", "off"):
            io.connect_midi(_match(midi, jackctl.ports(), "MIDI port"))
        rig.describe.append(f"drums MIDI: {io.midi_port.name} (JACK, each note on its frame)"
                            + (f", {midi_latency_ms:g} ms early" if midi_latency_ms else ""))
    rig.describe.append(f"MIDI clock out: {io.clock_port.name}")
    if listen:
        io.connect_input(capture)
        rig.source = io.source
        rig.describe.append(f"partner: {capture} (JACK)" + (", calibrated" if stored else ""))
    elif partner:
        from .sources import FileSource

        rig.source = FileSource(partner_file, sample_rate=rate, block=period, detector=rig.detector)
        rig.describe.append(f"partner: {partner_file} (in real time)")
    if stored is None and listen and audio and calibration:
        rig.notes.append(f"no calibration stored for {playback[0]} > {capture}: run rolypoly calibrate "
                         "(latency beyond JACK's own figures, and the drums' bleed into the partner input)")
    if clock_in is not None:
        io._connect(_match(clock_in, jackctl.ports(), "MIDI clock port"), io.clock_in_port)
        rig.clock_follower = io.clock_follower
        rig.describe.append(f"MIDI clock in: {clock_in} -> {io.clock_in_port.name}")


def _match(spec: str, names: list[str], what: str) -> str:
    from .midi_out import match_port

    return names[match_port(spec, names, what, " on JACK")]


#: What to start when nothing on this machine can sound the drums or hear the partner.
START_JACK = ("start JACK and run again (jackd -d alsa -r 48000 -p 64 &; to try it without a sound card: "
              "jackd -d dummy -r 48000 -p 64 &)")


def _start_jack() -> str:
    """The clause saying how to get JACK going (installing it first where jackd is missing)."""
    import shutil

    return START_JACK if shutil.which("jackd") else f"install JACK (apt-get install jackd2), then {START_JACK}"


def nothing_sounds(drums: str, audio_output: bool, midi_problem: str) -> str:
    """The one line for a take nothing can sound: why, and exactly what to do.

    >>> nothing_sounds("both", False, "no MIDI output available")  # doctest: +ELLIPSIS
    'nothing here can sound the drums (no JACK server, no audio output device, no MIDI output available): ...'
    >>> nothing_sounds("midi", True, "no MIDI output available")  # doctest: +ELLIPSIS
    '--drums midi, but no MIDI output available: start JACK ..., or use --drums audio (the sampled kit)'
    """
    if drums == "midi" and audio_output:
        return f"--drums midi, but {midi_problem}: {_start_jack()}, or use --drums audio (the sampled kit)"
    return (f"nothing here can sound the drums (no JACK server, no audio output device, {midi_problem}): "
            f"{_start_jack()}, or add --midi off to play the take and hear the drums afterwards, in mix.wav")


def _portaudio_rig(rig, partner_device, partner_file, channel, sample_rate, block, drums, kit, midi,
                   midi_latency_ms, clock_in, clock, partner=True) -> None:
    from .devices import audio_devices
    from .drum_out import DrumPlayer
    from .sources import AudioOut, FileSource, LiveSource

    devices = audio_devices()
    if partner and partner_file is None and partner_device is None and not any(d["inputs"] > 0 for d in devices):
        raise DeviceError(f"no audio input to hear the partner on (no JACK server, no input device): "
                          f"{_start_jack()}, or play with a recording: --partner-file FILE")
    audio = drums in ("audio", "both")
    audio_output = any(d["outputs"] > 0 for d in devices)
    no_audio_output = audio and not audio_output
    # MIDI first: when nothing at all can sound, that is said before a kit or an onset detector is made.
    want_midi = drums in ("midi", "both") or no_audio_output
    if want_midi and midi != "off":
        from .midi_out import MidiOut

        try:
            out = MidiOut(existing=None if midi == "virtual" else midi)
        except DeviceError as exc:
            if not audio or no_audio_output:
                raise DeviceError(nothing_sounds(drums, audio_output, str(exc))) from None
            rig.notes.append(f"drums as audio only: {exc}")
        else:
            rig.midi = out
            rig._closers.append(out.close)
            rig.midi_early_s = midi_latency_ms / 1e3
            rig.describe.append(f"drums MIDI: {out.describe()}" + (f", {midi_latency_ms:g} ms early"
                                                                      if midi_latency_ms else ""))
            if no_audio_output:
                rig.notes.append("no JACK server and no audio output device: drums as MIDI only")
    elif no_audio_output:
        rig.notes.append("no JACK server, no audio output device and --midi off: the drums sound only "
                         "afterwards, in mix.wav")
    player = DrumPlayer(_load_kit(kit, sample_rate, rig)) if audio and not no_audio_output else None
    if not partner:
        pass  # the outputs only: each take brings its partner
    elif partner_file is None:
        source = None
        if player is not None:
            try:
                source = LiveSource(partner_device, channel=channel, sample_rate=sample_rate, block=block,
                                    drums=player, detector=rig.detector)
                rig.drums = source
                rig.describe.append(f"drums: {rig.kit.describe()} through {source.name} (one full-duplex stream)")
            except DeviceError as exc:
                if "no outputs" not in str(exc):
                    raise
                rig.notes.append(f"{exc}; drums through the default output instead (a clock of its own)")
        if source is None:
            source = LiveSource(partner_device, channel=channel, sample_rate=sample_rate, block=block,
                                detector=rig.detector)
        rig.source = source
    else:
        rig.source = FileSource(partner_file, sample_rate=sample_rate, block=block, detector=rig.detector)
    if player is not None and rig.drums is None:
        out = AudioOut(player, sample_rate=sample_rate, block=block)
        rig.drums = out
        rig._closers.append(out.close)
        rig.describe.append(f"drums: {rig.kit.describe()} through {out.name}")
    if clock_in is not None:
        from .midi_clock import RtmidiClockIn

        listener = RtmidiClockIn(clock_in, clock)
        rig._closers.append(listener.close)
        rig.clock_follower = listener.follower
        rig.describe.append(f"MIDI clock in: {listener.port} (rtmidi, stamped on arrival)")
