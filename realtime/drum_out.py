"""Drums out as audio and as frame-placed MIDI: each hit starts on its own sample.

The engine decides a hit about ten milliseconds before it is due and hands
it over at once (:meth:`DrumPlayer.schedule`: its engine time, classes and
velocities) through a preallocated single-producer single-consumer ring,
:class:`HitRing`. The audio callback knows, on the engine clock, when the
first frame of the block it is filling will *sound*, and how long a frame
lasts on the device's clock; :meth:`DrumPlayer.render` starts every hit due
in the block at its own frame inside it and mixes the sounding voices.

The callback's work is bounded and allocates nothing: :class:`Voices` is a
fixed set of voices (the oldest is stolen when all sound) mixed in one
gather and one matrix-vector product over preallocated buffers, whatever
the number sounding; a hit costs two table look-ups (its layer and gain in
the :class:`~rolypoly.kit.SampleKit`). Nothing is locked: the ring's
counters are plain integers, written by one side only.

This is the player of the PortAudio streams (:class:`~rolypoly.realtime.sources.LiveSource`,
:class:`~rolypoly.realtime.sources.AudioOut`, whose callbacks are Python
anyway) and the reference of the JACK client's C callback
(``realtime/rtcore.c``), which does the same in C and is tested against it,
MIDI included (:meth:`DrumPlayer.midi_events`: note-ons at their frame,
note-offs a gate later, shifted earlier by an external synth's latency).
:class:`FrameClock` smooths a sound card's block times into the device's clock.

Examples
--------
>>> import numpy as np
>>> from rolypoly.kit import load_kit
>>> player = DrumPlayer(load_kit("synth", 48000))
>>> player.schedule([0], [100], at=0.001)     # a kick 1 ms (48 frames) into the first block
1
>>> out = np.zeros(64, np.float32)
>>> player.render(out, block_time=0.0, frame_s=1 / 48000)
>>> int(np.flatnonzero(out)[0])
48
"""
from __future__ import annotations

import math

import numpy as np

from rolypoly.drum_map import DRUM_CHANNEL, N_CLASSES, OUTPUT_PITCHES

#: Voices sounding at once; the oldest is stolen for a new hit when all sound.
VOICES = 16
#: Hits waiting in the ring at most (a take schedules a few tens of milliseconds ahead).
RING = 4096

NOTE_ON = 0x90 | DRUM_CHANNEL
NOTE_OFF = 0x80 | DRUM_CHANNEL

INF = float("inf")

#: A scheduled hit. ``note`` is the MIDI note the player's file has for it, ``channel * 128 + pitch``
#: (:func:`midi_note`), or -1 for the class's General MIDI note on channel 10 (scores made in code).
HIT = np.dtype([("time", np.float64), ("cls", np.int64), ("vel", np.int64), ("note", np.int64)])


def midi_note(channel: int, pitch: int) -> int:
    """A hit's ``note`` field: channel (0-15) and pitch in one number.

    >>> midi_note(9, 44), divmod(midi_note(9, 44), 128)
    (1196, (9, 44))
    """
    return int(channel) * 128 + int(pitch)


def _default_note(cls: int) -> int:
    return midi_note(DRUM_CHANNEL, OUTPUT_PITCHES[cls])


class HitRing:
    """Preallocated single-producer single-consumer ring of scheduled hits.

    The producer fills a slot, then advances :attr:`written`; consumers
    keep their own read counters (audio and MIDI read the same hits). A
    Python int store is atomic under the GIL, so no lock is needed. A
    producer a whole ring ahead of a consumer overwrites the oldest hits;
    :meth:`push` refuses instead, and counts it.

    >>> ring = HitRing(4)
    >>> ring.push(0.5, 1, 90), ring.written
    (True, 1)
    """

    def __init__(self, capacity: int = RING):
        self.slots = np.zeros(capacity, HIT)
        self.capacity = capacity
        self.written = 0
        self.dropped = 0
        self.oldest_unread = 0  # the slowest consumer's counter, kept by the consumer side

    def push(self, time_s: float, cls: int, vel: int, note: int = -1) -> bool:
        if self.written - self.oldest_unread >= self.capacity:
            self.dropped += 1
            return False
        slot = self.slots[self.written % self.capacity]
        slot["time"], slot["cls"], slot["vel"], slot["note"] = time_s, cls, vel, note
        self.written += 1
        return True


class Voices:
    """A fixed number of voices playing layers of a kit's :attr:`~rolypoly.kit.SampleKit.bank`.

    A voice is a read position into the bank, the end of its layer and a
    gain. The bank has :data:`~rolypoly.kit.BANK_PAD` zeros around every
    layer, so mixing a block is: every voice's block of bank indices at once
    (a voice that has not begun yet reads the zeros before its layer, one
    that has ended the zeros after it), one gather, one matrix-vector
    product with the gains, then the positions move on and ended voices are
    held on their layer's end. Five numpy calls with ``out=`` buffers,
    whatever the number of voices sounding; blocks longer than the padding
    are mixed in pieces.

    Parameters
    ----------
    bank : np.ndarray
        float32 samples, :data:`~rolypoly.kit.BANK_PAD` zeros around every layer.
    voices : int

    Examples
    --------
    >>> from rolypoly.kit import BANK_PAD
    >>> bank = np.zeros(2 * BANK_PAD + 3, np.float32); bank[BANK_PAD:BANK_PAD + 3] = [1, 2, 3]
    >>> v = Voices(bank, 2)
    >>> v.start_voice(BANK_PAD, BANK_PAD + 3, 0.5, offset=2)
    0
    >>> v.mix(4).tolist(), v.mix(4).tolist()
    ([0.0, 0.0, 0.5, 1.0], [1.5, 0.0, 0.0, 0.0])
    """

    def __init__(self, bank: np.ndarray, voices: int = VOICES):
        from rolypoly.kit import BANK_PAD

        self.bank = bank
        self.pad = BANK_PAD
        self.count = int(voices)
        self.pos = np.zeros(voices, np.int64)     # bank index the next block's first frame reads
        self.end = np.zeros(voices, np.int64)     # one past the voice's layer (zeros from there)
        self.gain = np.zeros(voices, np.float32)
        self.age = np.zeros(voices, np.int64)
        self.cls = np.full(voices, -1, np.int64)
        self._free = np.zeros(voices, bool)
        self._pos2 = self.pos[:, None]
        self._started = 0
        self.stolen = 0
        self._n = 0
        self._buffers(64)

    def _buffers(self, n: int) -> None:
        """Work buffers for blocks of ``n`` frames (made again only when the block size changes)."""
        self._n = n
        self._ramp = np.arange(n, dtype=np.int64)
        self._idx = np.zeros((self.count, n), np.int64)
        self._gathered = np.zeros((self.count, n), np.float32)
        self._mix = np.zeros(n, np.float32)

    def reset(self) -> None:
        """Silence every voice."""
        self.pos.fill(0)
        self.end.fill(0)
        self.gain.fill(0)
        self.cls.fill(-1)

    def sounding(self) -> int:
        """Voices playing (or about to start in the next block)."""
        np.less(self.pos, self.end, out=self._free)
        return int(np.count_nonzero(self._free))

    def start_voice(self, start: int, end: int, gain: float, offset: int, cls: int = -1) -> int:
        """Start a layer (bank range) ``offset`` frames into the next block; returns the voice.

        A free voice if there is one, else the one started longest ago.
        """
        np.greater_equal(self.pos, self.end, out=self._free)
        k = int(np.argmax(self._free))
        if not self._free[k]:
            k = int(np.argmin(self.age))
            self.stolen += 1
        self.end[k] = end
        self.pos[k] = start - offset
        self.gain[k] = gain
        self.cls[k] = cls
        self._started += 1
        self.age[k] = self._started
        return k

    def mix(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` frames of all voices summed, into ``out`` (float32, contiguous) or a view."""
        if out is None:
            if n != self._n:
                self._buffers(n)
            out = self._mix
        if n > self.pad:  # longer than the zeros around a layer: in pieces
            for a in range(0, n, self.pad):
                self.mix(min(self.pad, n - a), out[a:a + self.pad])
            return out
        if n != self._n:
            self._buffers(n)
        idx = self._idx
        np.add(self._pos2, self._ramp, out=idx)
        np.take(self.bank, idx, out=self._gathered, mode="clip")
        np.dot(self.gain, self._gathered, out=out)
        self.pos += n
        np.minimum(self.pos, self.end, out=self.pos)
        return out


class DrumPlayer:
    """Scheduled hits in, audio (and MIDI events) out, placed to the frame.

    Parameters
    ----------
    kit : rolypoly.kit.SampleKit
        At the output's sample rate.
    voices : int
        Voices sounding at once (oldest stolen).
    midi_latency_s : float
        MIDI leaves this much earlier than the audio would sound (an
        external synth's own latency).
    gate_s : float
        Note-on to note-off of MIDI notes.
    capacity : int
        Size of the hit ring.

    Attributes
    ----------
    late : int
        Hits whose frame had already gone when their block was filled
        (started at the block's first frame instead).
    late_max_s : float
        The latest of them, in seconds.
    """

    def __init__(self, kit, *, voices: int = VOICES, midi_latency_s: float = 0.0, gate_s: float = 0.05,
                 capacity: int = RING, audio: bool = True, midi: bool = False):
        self.kit = kit
        self.sample_rate = kit.sample_rate
        self.ring = HitRing(capacity)
        self.voices = Voices(kit.bank, voices)
        self.audio, self.midi = bool(audio), bool(midi)
        self.midi_latency_s = float(midi_latency_s)
        self.gate_s = float(gate_s)
        self._audio_read = 0
        self._midi_read = 0
        self.late = 0
        self.late_max_s = 0.0
        self.midi_late = 0
        self.played = 0
        self.midi_sent = 0
        # MIDI: per class, note-off due time (engine s; inf = none pending), and the cycle's events.
        self._off_at = [INF] * N_CLASSES
        self._off_note = [-1] * N_CLASSES  # the note (midi_note) each pending note-off ends
        self._offs = 0  # note-offs pending
        self.midi_buffer = np.zeros((4 * N_CLASSES + 256, 4), np.int64)  # offset, status, pitch, velocity
        self._layer_of, self._gain_of = kit.layer_of, kit.gain_of
        self._starts, self._ends = kit.starts, kit.ends

    # ------------------------------------------------------------------ producer (engine thread)
    def schedule(self, classes, velocities, at: float, notes=None) -> int:
        """Queue a row's hits to sound at engine time ``at``; returns how many were queued.

        Velocities <= 0 are no hit; others are clipped to 127. ``notes`` (one
        per hit, :func:`midi_note`; -1 or None: the class's GM note) are what
        MIDI sends: the player's own pitch and channel.
        """
        count = 0
        for i, (c, v) in enumerate(zip(classes, velocities)):
            v = int(round(float(v)))
            note = -1 if notes is None else int(notes[i])
            if v > 0 and self.ring.push(at, int(c), min(v, 127), note):
                count += 1
        return count

    def pending(self) -> int:
        """Hits queued and not yet started by the audio (or MIDI) callback."""
        return self.ring.written - min(self._audio_read if self.audio else self.ring.written,
                                       self._midi_read if self.midi else self.ring.written)

    # ------------------------------------------------------------------ consumer (audio callback)
    def render(self, out: np.ndarray, block_time: float, frame_s: float) -> None:
        """Fill ``out`` (float32, one block) with the drums.

        Parameters
        ----------
        out : np.ndarray
            The block to fill, mono float32, C-contiguous (written, not added
            to). Not limited: the kit peaks at -6 dBFS, and a pile-up beyond
            full scale is clipped by the device as by any synth.
        block_time : float
            Engine time at which ``out[0]`` will sound.
        frame_s : float
            Duration of one frame on the device's clock, in engine seconds.
        """
        n = len(out)
        ring, slots, cap = self.ring, self.ring.slots, self.ring.capacity
        read, written = self._audio_read, ring.written
        limit = n - 0.5
        while read < written:
            slot = slots[read % cap]
            where = (slot["time"] - block_time) / frame_s
            if where >= limit:
                break  # hits are scheduled in time order: the rest are for later blocks
            offset = int(where + 0.5) if where > -0.5 else 0
            if where <= -0.5:
                self.late += 1
                late_s = -where * frame_s
                if late_s > self.late_max_s:
                    self.late_max_s = late_s
            c, v = int(slot["cls"]), int(slot["vel"])
            k = self._layer_of[c, v]
            self.voices.start_voice(self._starts[c, k], self._ends[c, k], self._gain_of[c, v], offset, c)
            self.played += 1
            read += 1
        self._audio_read = read
        self._update_oldest()
        self.voices.mix(n, out)

    def skip(self, n: int) -> None:
        """Advance the voices by ``n`` frames without output (MIDI-only players keep time too)."""
        self.voices.pos += n

    def midi_events(self, block_time: float, frame_s: float, n: int) -> np.ndarray:
        """This block's MIDI events, in time order: rows of (offset, status, pitch, velocity).

        A view of :attr:`midi_buffer`, valid until the next call. Note-offs
        are due ``gate_s`` after their note-on; a drum struck again while
        its note is on is ended first, on the same frame.
        """
        ring, slots, cap = self.ring, self.ring.slots, self.ring.capacity
        read, written = self._midi_read, ring.written
        buf = self.midi_buffer
        count = 0
        shifted = block_time + self.midi_latency_s  # an event at frame f sounds at shifted + f * frame_s
        limit = n - 0.5
        while read < written and count < len(buf) - 2:
            slot = slots[read % cap]
            where = (slot["time"] - shifted) / frame_s
            if where >= limit:
                break
            if where <= -0.5:
                self.midi_late += 1
            offset = int(where + 0.5) if where > -0.5 else 0
            if self._offs:
                count = self._note_offs_until(buf, count, shifted, frame_s, offset)
            c, v, note = int(slot["cls"]), int(slot["vel"]), int(slot["note"])
            if note < 0:
                note = _default_note(c)
            if self._off_at[c] != INF:  # still on: end it first
                ch, p = divmod(self._off_note[c], 128)
                buf[count] = (offset, 0x80 | ch, p, 0)
                count += 1
            else:
                self._offs += 1
            ch, p = divmod(note, 128)
            buf[count] = (offset, 0x90 | ch, p, v)
            count += 1
            self._off_at[c] = shifted + (offset * frame_s) + self.gate_s
            self._off_note[c] = note
            self.midi_sent += 1
            read += 1
        self._midi_read = read
        self._update_oldest()
        if self._offs:
            count = self._note_offs_until(buf, count, shifted, frame_s, n)
        return buf[:count]

    def _note_offs_until(self, buf, count, shifted, frame_s, upto) -> int:
        """Append the note-offs due before frame ``upto`` of the block, in time order."""
        off_at = self._off_at
        while count < len(buf) and self._offs:
            due = min(off_at)
            c = off_at.index(due)
            where = (due - shifted) / frame_s
            if where >= upto - 0.5:
                break
            offset = max(int(where + 0.5), 0) if where > -0.5 else 0
            if count and buf[count - 1, 0] > offset:
                offset = int(buf[count - 1, 0])  # never before an event already written
            ch, p = divmod(self._off_note[c], 128)
            buf[count] = (offset, 0x80 | ch, p, 0)
            off_at[c] = INF
            self._offs -= 1
            count += 1
        return count

    def all_off_events(self) -> list[tuple[int, int, int]]:
        """Note-offs for every MIDI note still on (when output stops)."""
        out = [(0x80 | self._off_note[c] // 128, self._off_note[c] % 128, 0)
               for c in range(N_CLASSES) if self._off_at[c] != INF]
        self._off_at = [INF] * N_CLASSES
        self._offs = 0
        return out

    def _update_oldest(self) -> None:
        reads = []
        if self.audio:
            reads.append(self._audio_read)
        if self.midi:
            reads.append(self._midi_read)
        self.ring.oldest_unread = min(reads) if reads else self.ring.written

    def stats(self) -> dict:
        """What the player did: hits played, late, stolen voices, hits dropped (ring full)."""
        return {"hits": self.played, "midi_notes": self.midi_sent, "late": self.late,
                "late_max_ms": round(self.late_max_s * 1e3, 3), "midi_late": self.midi_late,
                "voices": self.voices.count, "stolen": self.voices.stolen, "dropped": self.ring.dropped}


class FrameClock:
    """When each block of a sound card's stream sounds, on the engine clock, smoothed by a DLL.

    A PortAudio callback learns the DAC time of its block (``now`` + the
    stream's ``outputBufferDacTime - currentTime``), but ``now`` is read
    whenever the callback happens to run: it jitters by the scheduler's
    whims. The device's clock is steady, so a second-order delay-locked loop
    (F. Adriaensen, "Using a DLL to filter time", 2005) follows the measured
    block times: it keeps the block period the device really runs at and
    takes out the jitter. A jump of more than ``reset_s`` (an xrun) restarts it.

    Parameters
    ----------
    sample_rate : int
    bandwidth_hz : float
        Loop bandwidth: lower is smoother, higher follows faster.

    Examples
    --------
    >>> clock = FrameClock(48000)
    >>> rng = np.random.default_rng(0)
    >>> for k in range(2000):    # 64-frame blocks, measured with 0.2 ms of jitter
    ...     t, frame_s = clock.update(64, k * 64 / 48000 + rng.uniform(0, 2e-4))
    >>> abs(t - 1999 * 64 / 48000 - 1e-4) < 3e-5, round(frame_s * 48000, 2)
    (True, 1.0)
    """

    def __init__(self, sample_rate: int, bandwidth_hz: float = 0.5, reset_s: float = 0.01):
        self.sample_rate = int(sample_rate)
        self.bandwidth_hz = float(bandwidth_hz)
        self.reset_s = float(reset_s)
        self.resets = 0
        self._t0 = self._t1 = self._e2 = None

    def update(self, frames: int, measured: float) -> tuple[float, float]:
        """Engine time of this block's first frame and seconds per frame, from a measured time."""
        period = frames / self.sample_rate
        if self._t1 is None or abs(measured - self._t1) > self.reset_s:
            if self._t1 is not None:
                self.resets += 1
            omega = 2.0 * math.pi * self.bandwidth_hz * period
            self._b, self._c = math.sqrt(2.0) * omega, omega * omega
            self._e2 = period
            self._t0 = measured
            self._t1 = measured + period
            return self._t0, self._e2 / frames
        err = measured - self._t1
        self._t0 = self._t1
        self._t1 += self._b * err + self._e2
        self._e2 += self._c * err
        return self._t0, (self._t1 - self._t0) / frames
