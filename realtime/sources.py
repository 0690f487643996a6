"""Partner sources: where the engine hears the partner play.

Every source runs the same :class:`~rolypoly.onsets.OnsetDetector` over the
partner's audio in blocks, stamps each onset on the engine clock where it
*happened* and where it became *available*, and hands the engine the new
onsets when it asks (:meth:`poll`). Only the way blocks arrive differs:

* :class:`LiveSource` – a sounddevice input stream (ALSA, JACK, CoreAudio,
  WASAPI). The detector runs inside the audio callback, which does only
  bounded work on preallocated buffers: detect, stamp, copy into rings.
* :class:`FileSource` – a WAV/FLAC recording played as the partner. Its
  blocks arrive as the engine clock passes their end, exactly as a live
  stream would deliver them: in real time on a
  :class:`~rolypoly.realtime.clock.RealClock`, faster than real time on a
  :class:`~rolypoly.realtime.clock.SimClock`.

Examples
--------
>>> src = FileSource("bass.wav")                      # doctest: +SKIP
>>> src.start(clock, t0=0.5)                          # doctest: +SKIP
>>> onsets = src.poll(clock.now())                    # doctest: +SKIP
>>> onsets["time"], onsets["available"]               # doctest: +SKIP
"""
from __future__ import annotations

import threading
import time

import numpy as np

from rolypoly.errors import DeviceError, RolypolyError

from rolypoly.onsets import OnsetDetector

#: One partner onset as the engine sees it (engine-clock seconds).
ONSET = np.dtype([("time", np.float64), ("available", np.float64),
                  ("descriptor", np.float32), ("strength", np.float32)])
#: Onsets handed over per poll at most; the rest wait for the next poll.
POLL_CAPACITY = 256
DEFAULT_BLOCK = 64
DEFAULT_RATE = 48000
#: A recording is listened to from this long before the take starts (the detector settles in it).
WARM_UP_S = 0.5


class OnsetRing:
    """Single-producer single-consumer ring of onsets, preallocated.

    The producer (audio callback) writes a slot, then advances ``written``;
    the consumer reads up to ``written``. A Python int store is atomic under
    the GIL, so no lock is needed. When the consumer falls a whole ring
    behind, the oldest onsets are lost and counted.
    """

    def __init__(self, capacity: int = 1024):
        self.slots = np.zeros(capacity, ONSET)
        self.written = 0
        self.read = 0
        self.lost = 0
        self._out = np.zeros(POLL_CAPACITY, ONSET)

    def push(self, time_s: float, available_s: float, descriptor: float, strength: float) -> None:
        slot = self.slots[self.written % len(self.slots)]
        slot["time"], slot["available"] = time_s, available_s
        slot["descriptor"], slot["strength"] = descriptor, strength
        self.written += 1

    def pop_all(self) -> np.ndarray:
        """New onsets since the last call (a view, valid until the next call)."""
        written, cap = self.written, len(self.slots)
        if written - self.read > cap:
            self.lost += written - self.read - cap
            self.read = written - cap
        n = min(written - self.read, POLL_CAPACITY)
        for k in range(n):
            self._out[k] = self.slots[(self.read + k) % cap]
        self.read += n
        return self._out[:n]


class AudioRing:
    """Preallocated ring of mono audio: the callback writes, a recorder drains."""

    def __init__(self, seconds: float, sample_rate: int):
        self.buf = np.zeros(int(seconds * sample_rate), np.float32)
        self.written = 0
        self.read = 0
        self.lost = 0

    def write(self, x: np.ndarray) -> None:
        n, cap = len(x), len(self.buf)
        start = self.written % cap
        first = min(n, cap - start)
        self.buf[start:start + first] = x[:first]
        if first < n:
            self.buf[:n - first] = x[first:]
        self.written += n

    def drain(self) -> np.ndarray:
        """Copy out what was written since the last drain (outside the callback)."""
        written, cap = self.written, len(self.buf)
        if written - self.read > cap:
            self.lost += written - self.read - cap
            self.read = written - cap
        idx = np.arange(self.read, written) % cap
        self.read = written
        return self.buf[idx].copy()


class PartnerSource:
    """What the engine needs from a partner source (see module docstring)."""

    sample_rate: int = DEFAULT_RATE
    xruns: int = 0
    name: str = "partner"

    def start(self, clock, t0: float) -> None:
        raise NotImplementedError

    def poll(self, now: float) -> np.ndarray:
        raise NotImplementedError

    def stop(self) -> None:
        pass

    def drum_played(self, notated: float, played: float) -> None:
        """The engine just played a hit (engine times). A partner that listens may react."""

    def known_audio(self) -> np.ndarray | None:
        """The partner's whole audio before the take, where there is one (a recording), else None.

        What a take aligns to its score (:func:`rolypoly.align.align_recording`) when no
        partner offset is given.
        """
        return None

    def recording(self) -> np.ndarray:
        """The partner audio heard during the take (for the take's WAV)."""
        raise NotImplementedError


class FileSource(PartnerSource):
    """A recording played as the partner, block by block on the engine clock.

    Parameters
    ----------
    path : WAV/FLAC file (mixed to mono, resampled to ``sample_rate``)
    sample_rate, block : the stream it stands in for
    detector : dict of :class:`OnsetDetector` settings
    audio : np.ndarray, optional
        Mono samples to use instead of reading ``path`` (virtual partners).
    """

    def __init__(self, path=None, *, sample_rate: int = DEFAULT_RATE, block: int = DEFAULT_BLOCK,
                 detector: dict | None = None, audio: np.ndarray | None = None):
        if audio is None:
            from rolypoly.audio_io import load_audio

            audio = load_audio(path, sample_rate)
        self.audio = np.ascontiguousarray(audio, dtype=np.float32)
        self.name = str(path or "partner audio")
        self.sample_rate, self.block = int(sample_rate), int(block)
        self.detector = OnsetDetector(sample_rate=self.sample_rate, **(detector or {}))
        self._ring = OnsetRing()
        self.t0 = 0.0
        self._next_block = 0
        self._stop_sample = len(self.audio)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def start(self, clock, t0: float) -> None:
        """Sample 0 of the file sounds at engine time ``t0``.

        Audio that sounded over :data:`WARM_UP_S` before now (a recording's lead or count-in
        before the score) is not listened to: the first poll would otherwise run the detector
        over all of it at once while the first hit waits.
        """
        self.t0 = float(t0)
        self._next_block = max(0, int((clock.now() - self.t0 - WARM_UP_S) * self.sample_rate) // self.block)
        self._stop_sample = len(self.audio)
        self.detector.reset()

    def poll(self, now: float) -> np.ndarray:
        """Run the detector over every block that has fully arrived by ``now``."""
        sr, block = self.sample_rate, self.block
        arrived = min(int((now - self.t0) * sr) // block, -(-self._stop_sample // block))
        while self._next_block < arrived:
            a = self._next_block * block
            found = self.detector.process(self.audio[a:a + block])
            block_end = self.t0 + (a + block) / sr
            for o in found:
                # Live, a block is handed over when it is complete: an onset is usable
                # at the later of its hop's end and its block's end.
                self._ring.push(self.t0 + o["sample"] / sr,
                                max(self.t0 + o["available"] / sr, block_end),
                                o["descriptor"], o["strength"])
            self._next_block += 1
        return self._ring.pop_all()

    def stop(self) -> None:
        self._stop_sample = min(self._stop_sample, self._next_block * self.block)

    def known_audio(self) -> np.ndarray | None:
        return self.audio

    def recording(self) -> np.ndarray:
        return self.audio[:self._stop_sample]


class LiveSource(PartnerSource):
    """A live input: a sounddevice stream with the detector in its callback.

    With ``drums``, the same stream plays them: one full-duplex stream on the
    device, so partner onsets and drum hits live on the device's one clock.
    Each output block's DAC time (PortAudio's ``outputBufferDacTime``, put on
    the engine clock and smoothed by a :class:`~rolypoly.realtime.drum_out.FrameClock`)
    tells the :class:`~rolypoly.realtime.drum_out.DrumPlayer` where in the
    block each hit starts. The source is then also the engine's ``drums``
    (``begin``, ``schedule``, ``end``, ``problems``). A device without outputs
    cannot play them (``DeviceError``).

    Parameters
    ----------
    device : index or (part of a) name; the default input where omitted
    channel : input channel the partner is on (0-based)
    sample_rate, block : stream settings (block = callback size in frames)
    detector : dict of :class:`OnsetDetector` settings
    record_seconds : size of the audio ring the recorder drains
    drums : rolypoly.realtime.drum_out.DrumPlayer, optional
        Drums to play through the device's outputs (at ``sample_rate``).
    output_latency_s, input_latency_s : float
        Latency beyond what PortAudio reports (``rolypoly calibrate``).

    Raises
    ------
    DeviceError
        Missing or busy device (the message lists the input devices),
        unsupported sample rate or channel, no outputs for the drums.
    """

    def __init__(self, device=None, *, channel: int = 0, sample_rate: int = DEFAULT_RATE,
                 block: int = DEFAULT_BLOCK, detector: dict | None = None, record_seconds: float = 8.0,
                 drums=None, output_latency_s: float = 0.0, input_latency_s: float = 0.0):
        import sounddevice as sd

        from .devices import resolve_input_device

        self.device = resolve_input_device(device)  # None: the default input, or a DeviceError listing them
        self.channel, self.sample_rate, self.block = int(channel), int(sample_rate), int(block)
        info = sd.query_devices(self.device, "input")
        self.name = f"{info['name']} (input {self.channel + 1})"
        if self.channel >= info["max_input_channels"]:
            raise DeviceError(f"{info['name']}: has {info['max_input_channels']} input channels, "
                              f"channel {self.channel + 1} asked for")
        try:
            sd.check_input_settings(self.device, channels=self.channel + 1, samplerate=self.sample_rate)
        except Exception as e:
            raise DeviceError(f"{info['name']}: cannot record at {self.sample_rate} Hz ({e}); its default "
                              f"rate is {info['default_samplerate']:g} Hz (--sample-rate)") from None
        self.player = drums
        self.out_channels = 0
        if drums is not None:
            out = sd.query_devices(self.device)
            self.out_channels = min(2, int(out["max_output_channels"]))
            if self.out_channels == 0:
                raise DeviceError(f"{info['name']}: has no outputs to play the drums on (--drums midi)")
            if drums.sample_rate != self.sample_rate:
                raise DeviceError(f"the drum kit is at {drums.sample_rate} Hz, the device at {self.sample_rate} Hz")
            from .drum_out import FrameClock

            self._frame_clock = FrameClock(self.sample_rate)
            self._mono = np.zeros(self.block, np.float32)
        self.output_latency_s, self.extra_input_latency_s = float(output_latency_s), float(input_latency_s)
        self.detector = OnsetDetector(sample_rate=self.sample_rate, max_block=max(8192, self.block),
                                      **(detector or {}))
        self._ring = OnsetRing()
        self._audio = AudioRing(record_seconds, self.sample_rate)
        self._recorded: list[np.ndarray] = []
        self._samples = 0
        self.xruns = 0
        self.input_latency = 0.0
        self.output_latency = 0.0
        self._clock = None
        self._stream = None
        self._recorder = None
        self._running = threading.Event()

    def _duplex(self, indata, outdata, frames, time_info, status) -> None:
        # Real-time: bounded work on preallocated buffers only. Drums first: they are due.
        now = self._clock.to_engine(time.perf_counter())
        if status.output_underflow or status.output_overflow:
            self.xruns += 1
        self._mono = _play_block(self.player, self._frame_clock, self._mono, outdata, frames,
                                 time_info.outputBufferDacTime, time_info.currentTime, now,
                                 self.output_latency, self.output_latency_s)
        self._callback(indata, frames, time_info, status, now)

    def _callback(self, indata, frames, time_info, status, now=None) -> None:
        # Real-time: bounded work on preallocated buffers only.
        if now is None:
            now = self._clock.to_engine(time.perf_counter())
        if status.input_overflow or status.input_underflow:
            self.xruns += 1
        adc, current = time_info.inputBufferAdcTime, time_info.currentTime
        lag = current - adc if adc > 0 and current >= adc else frames / self.sample_rate + self.input_latency
        block_start = now - lag - self.extra_input_latency_s
        first = self._samples
        x = indata[:, self.channel]
        for o in self.detector.process(x):
            self._ring.push(block_start + (o["sample"] - first) / self.sample_rate, now,
                            o["descriptor"], o["strength"])
        self._audio.write(x)
        self._samples = first + frames

    def start(self, clock, t0: float) -> None:
        import sounddevice as sd

        from .devices import input_devices_text

        if clock.simulated:
            raise RolypolyError("a live input cannot run on a simulated clock")
        self._clock = clock
        self._recorded = []  # this take's recording only (a session run starts the same input for every take)
        try:
            if self.player is None:
                self._stream = sd.InputStream(device=self.device, channels=self.channel + 1,
                                              samplerate=self.sample_rate, blocksize=self.block,
                                              dtype="float32", latency="low", callback=self._callback)
                self.input_latency = float(self._stream.latency)
            else:  # one full-duplex stream: onsets and drums on the device's one clock
                self._stream = sd.Stream(device=(self.device, self.device),
                                         channels=(self.channel + 1, self.out_channels),
                                         samplerate=self.sample_rate, blocksize=self.block,
                                         dtype="float32", latency="low", callback=self._duplex)
                self.input_latency, self.output_latency = (float(x) for x in self._stream.latency)
            self._stream.start()
        except Exception as e:
            raise DeviceError(f"cannot open input {self.name}: {str(e).splitlines()[0]} "
                              f"(busy or gone?); {input_devices_text()}") from None
        self._running.set()
        self._recorder = threading.Thread(target=self._record, name="partner-recorder", daemon=True)
        self._recorder.start()

    def _record(self) -> None:
        while self._running.is_set():
            time.sleep(0.05)
            self._recorded.append(self._audio.drain())
        self._recorded.append(self._audio.drain())

    def poll(self, now: float) -> np.ndarray:
        return self._ring.pop_all()

    # The engine's drums (with ``drums``): the stream opened in start() plays them.
    def begin(self, clock, t0: float, score=None) -> None:
        pass

    def schedule(self, classes, velocities, at: float, notes=None) -> int:
        return self.player.schedule(classes, velocities, at, notes)

    def end(self) -> None:
        pass

    def problems(self) -> list[str]:
        return _player_problems(self.player)

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        self._running.clear()
        if self._recorder is not None:
            self._recorder.join()

    def recording(self) -> np.ndarray:
        return np.concatenate(self._recorded) if self._recorded else np.zeros(0, np.float32)


def _play_block(player, frame_clock, mono, outdata, frames, dac, current, now, reported_latency, extra_latency):
    """Fill a PortAudio output block with the drums; returns the mono buffer (new only if the size changed).

    The block sounds at the stream's DAC time: ``now`` plus PortAudio's
    ``outputBufferDacTime - currentTime`` (its reported latency when it gives
    no times), smoothed by ``frame_clock``; placed ``extra_latency`` earlier
    (calibrated). Every output channel gets the same drums.
    """
    ahead = dac - current if dac > 0 and dac >= current else reported_latency
    block_time, frame_s = frame_clock.update(frames, now + ahead)
    if len(mono) != frames:  # only when the device changes its block size
        mono = np.zeros(frames, np.float32)
    player.render(mono, block_time + extra_latency, frame_s)  # sounds later still: hits go earlier
    for c in range(outdata.shape[1]):
        outdata[:, c] = mono
    return mono


def _player_problems(player) -> list[str]:
    st = player.stats() if player is not None else {}
    out = []
    if st.get("late"):
        out.append(f"{st['late']} drum hit(s) reached the output too late to sound on time "
                   f"(at most {st['late_max_ms']} ms)")
    if st.get("dropped"):
        out.append(f"{st['dropped']} drum hit(s) dropped (hit ring full)")
    return out


class AudioOut:
    """Drums through a sound card's output, on their own (a recorded partner, or an input without outputs).

    A PortAudio output stream on ``device`` (default: the default output)
    whose callback plays the :class:`~rolypoly.realtime.drum_out.DrumPlayer`,
    each hit on its frame by the block's DAC time (see :class:`LiveSource`).
    It is the engine's ``drums``: the stream opens when the take begins and
    plays until :meth:`close` (tails ring out).

    Raises
    ------
    DeviceError
        No such output device, or it cannot play at the kit's rate.
    """

    def __init__(self, player, device=None, *, sample_rate: int = DEFAULT_RATE, block: int = DEFAULT_BLOCK,
                 output_latency_s: float = 0.0):
        import sounddevice as sd

        from .drum_out import FrameClock

        self.player, self.sample_rate, self.block = player, int(sample_rate), int(block)
        try:
            info = sd.query_devices(device, "output")
            sd.check_output_settings(device, channels=1, samplerate=self.sample_rate)
        except Exception as e:
            raise DeviceError(f"audio output {device if device is not None else '(default)'}: "
                              f"{str(e).splitlines()[0]}") from None
        if player.sample_rate != self.sample_rate:
            raise DeviceError(f"the drum kit is at {player.sample_rate} Hz, the output at {self.sample_rate} Hz")
        self.device, self.name = device, info["name"]
        self.channels = min(2, int(info["max_output_channels"]))
        self.output_latency_s = float(output_latency_s)
        self._frame_clock = FrameClock(self.sample_rate)
        self._mono = np.zeros(self.block, np.float32)
        self._stream = None
        self._clock = None
        self.xruns = 0
        self.latency = 0.0

    def _callback(self, outdata, frames, time_info, status) -> None:
        now = self._clock.to_engine(time.perf_counter())
        if status.output_underflow:
            self.xruns += 1
        self._mono = _play_block(self.player, self._frame_clock, self._mono, outdata, frames,
                                 time_info.outputBufferDacTime, time_info.currentTime, now, self.latency,
                                 self.output_latency_s)

    def begin(self, clock, t0: float, score=None) -> None:
        import sounddevice as sd

        if self._stream is not None:
            return
        if clock.simulated:
            raise RolypolyError("an audio output cannot run on a simulated clock")
        self._clock = clock
        try:
            self._stream = sd.OutputStream(device=self.device, channels=self.channels, samplerate=self.sample_rate,
                                           blocksize=self.block, dtype="float32", latency="low",
                                           callback=self._callback)
            self.latency = float(self._stream.latency)
            self._stream.start()
        except Exception as e:
            self._stream = None
            raise DeviceError(f"cannot open audio output {self.name}: {str(e).splitlines()[0]} (busy or gone?)") from None

    def schedule(self, classes, velocities, at: float, notes=None) -> int:
        return self.player.schedule(classes, velocities, at, notes)

    def end(self) -> None:
        pass

    def problems(self) -> list[str]:
        out = _player_problems(self.player)
        if self.xruns:
            out.append(f"audio output {self.name}: {self.xruns} underrun(s)")
        return out

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
