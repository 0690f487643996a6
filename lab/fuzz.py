"""Hostile input for the fuzz harness: MIDI files, session.json files, weights headers and OSC datagrams.

Every generator takes a seed and returns the same bytes for it on every
machine (``numpy.random.default_rng(seed)``), so a case the harness finds
failing is named by its seed and becomes a regression test
(``tests/test_fuzz.py``). Cases are small: a few hundred bytes of MIDI, a
weights file shrunk to one tensor's worth of header change, an OSC
datagram under 2 kB; what they say inside (a gap of days, a model 12,000
units wide, 1e39 as a float) is what is hostile.

* :func:`midi_case` -- half random Standard MIDI Files written byte by
  byte (any division, format, running status, tempo 0, meters with a
  denominator of 2^255, gaps up to 2^28-1 ticks, junk metas, early
  end-of-track), half byte-level mutations of real drum files (bit flips,
  interesting values, inserted, deleted and repeated runs, truncation,
  chunk lengths overwritten);
* :func:`session_json_case` -- a session's session.json with fields set to
  junk of every JSON type, removed, nested, or the file cut or replaced by
  non-JSON;
* :func:`safetensors_case` -- a real weights file with a hostile header:
  config values huge, negative, of the wrong type or missing, tensors
  renamed, reshaped, retyped, offsets past the data, header lengths lying;
* :func:`osc_datagram` -- OSC messages and bundles at rolypoly's addresses
  and others, with every type tag python-osc knows and values at the edges
  (NaN, ±inf, 1e39, 2^31, huge strings and blobs, nested bundles).

Examples
--------
>>> a, b = midi_case(7), midi_case(7)
>>> a == b, len(a) < 4096
(True, True)
>>> osc_datagram(3) == osc_datagram(3)
True
"""
from __future__ import annotations

import json
import struct

import numpy as np

from rolypoly.drum_map import OUTPUT_PITCHES

#: Addresses of ``rolypoly serve`` (its handlers), used by the OSC fuzzer besides junk ones.
SERVICE_ADDRESSES = ("load_score", "load_session", "partner_file", "partner_device", "clock", "play", "stop",
                     "tempo", "window", "ab", "finetune", "humanize", "drumify", "agent", "status", "reply_to",
                     "quit")
#: How many arguments each address takes (its documented usage): the fuzzer mostly sends that many.
SERVICE_ARITY = {"load_score": (1,), "load_session": (1,), "partner_file": (1,), "partner_device": (1,),
                 "clock": (1,), "play": (0,), "stop": (0,), "tempo": (1,), "window": (1,), "ab": (2,),
                 "finetune": (0, 1, 2, 3), "humanize": (1, 2), "drumify": (1, 2), "agent": (1,), "status": (0,),
                 "reply_to": (1, 2), "quit": (0,)}
#: Numbers at the edges of what a file or a message can hold.
EDGE_FLOATS = (0.0, -0.0, 1e-45, 1e-300, 0.5, 1.0, -1.0, 2.5, 3.0, 400.0, 1e39, -1e39, 3.4e38, 1e308,
               float("nan"), float("inf"), float("-inf"))
EDGE_INTS = (0, 1, -1, 2, 127, 128, 255, 256, 32767, 65535, 2 ** 24 - 1, 2 ** 27, 2 ** 28 - 1, 2 ** 31 - 1,
             -2 ** 31, 2 ** 63 - 1)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


# ----------------------------------------------------------------------------- MIDI

def vlq(n: int) -> bytes:
    """A MIDI variable-length quantity (0 .. 2^28-1; larger values are cut to 28 bits).

    >>> vlq(0), vlq(128), vlq(2 ** 28 - 1)
    (b'\\x00', b'\\x81\\x00', b'\\xff\\xff\\xff\\x7f')
    """
    n = int(n) & 0x0FFFFFFF
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def smf(tracks, *, fmt: int = 1, division: int = 480) -> bytes:
    """A Standard MIDI File from the bytes of each track (events, delta times included)."""
    head = b"MThd" + struct.pack(">IHHH", 6, fmt & 0xFFFF, len(tracks) & 0xFFFF, division & 0xFFFF)
    return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def _delta(rng) -> int:
    """Mostly small gaps, sometimes long ones, now and then days at 480 ticks a beat."""
    u = rng.random()
    if u < 0.4:
        return 0
    if u < 0.8:
        return int(rng.integers(1, 481))
    if u < 0.95:
        return int(rng.integers(481, 20_000))
    return int(rng.integers(20_000, 2 ** 28))


def _event(rng, running: list) -> bytes:
    """One random event (without its delta time); ``running`` holds the running status."""
    u = rng.random()
    drum = rng.random() < 0.8
    ch = 9 if drum else int(rng.integers(16))
    if u < 0.55:
        status = (0x90 if rng.random() < 0.8 else 0x80) | ch
        pitch = int(_pick(rng, OUTPUT_PITCHES)) if rng.random() < 0.7 else int(rng.integers(128))
        vel = int(rng.integers(128))
        if running[0] == status and rng.random() < 0.5:
            return bytes([pitch, vel])  # running status
        running[0] = status
        return bytes([status, pitch, vel])
    running[0] = None
    if u < 0.65:
        tempo = _pick(rng, (0, 1, 500_000, 150_000, 3_000_000, 2 ** 24 - 1, int(rng.integers(2 ** 24))))
        return b"\xff\x51\x03" + int(tempo).to_bytes(3, "big")
    if u < 0.75:
        num = int(_pick(rng, (0, 1, 3, 4, 6, 7, 64, 255)))
        den = int(_pick(rng, (0, 1, 2, 3, 6, 7, 255)))
        return b"\xff\x58\x04" + bytes([num, den, 24, 8])
    if u < 0.8:
        text = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        return bytes([0xFF, int(rng.integers(1, 8))]) + vlq(len(text)) + text
    if u < 0.85:
        data = rng.integers(0, 128, int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        return b"\xf0" + vlq(len(data) + 1) + data + b"\xf7"
    if u < 0.9:  # a meta whose length says more or less than follows
        return bytes([0xFF, int(rng.integers(0, 128))]) + vlq(int(rng.integers(0, 300))) + b"\x00" * 3
    if u < 0.93:
        return b"\xff\x2f\x00"  # end of track in the middle
    kind = _pick(rng, (0xB0, 0xC0, 0xD0, 0xE0, 0xA0))
    body = bytes([int(rng.integers(128))]) if kind in (0xC0, 0xD0) else bytes(rng.integers(0, 128, 2).tolist())
    return bytes([kind | ch]) + body


def random_midi(rng) -> bytes:
    """A random Standard MIDI File, written byte by byte (see the module docstring)."""
    division = int(_pick(rng, (96, 480, 960, 1, 0, 24, 32767, 0xE728, int(rng.integers(1, 2 ** 15)))))
    fmt = int(_pick(rng, (0, 1, 1, 1, 2)))
    tracks = []
    for _ in range(int(rng.integers(1, 4))):
        running = [None]
        events = b"".join(vlq(_delta(rng)) + _event(rng, running) for _ in range(int(rng.integers(0, 40))))
        if rng.random() < 0.9:
            events += b"\x00\xff\x2f\x00"
        tracks.append(events)
    return smf(tracks, fmt=fmt, division=division)


def drum_pattern(rng) -> bytes:
    """A plausible drum part (kick, snare, hi-hat on a grid, a tempo and a meter): mutation's raw material."""
    tpb = 480
    bars = int(rng.integers(1, 5))
    bpm = float(rng.uniform(60, 180))
    conductor = vlq(0) + b"\xff\x51\x03" + int(60e6 / bpm).to_bytes(3, "big") + vlq(0) + b"\xff\x58\x04\x04\x02\x18\x08"
    notes = []
    for step in range(bars * 16):
        t = step * tpb // 4
        notes.append((t, 42, int(rng.integers(40, 110))))
        if step % 8 == 0:
            notes.append((t, 36, 100))
        if step % 8 == 4:
            notes.append((t, 38, 95))
    events, now = b"", 0
    for t, pitch, vel in notes:
        events += vlq(t - now) + bytes([0x99, pitch, vel])
        now = t
    return smf([conductor + b"\x00\xff\x2f\x00", events + b"\x00\xff\x2f\x00"], fmt=1, division=tpb)


def mutate(data: bytes, rng, *, ops: int | None = None) -> bytes:
    """``data`` with 1-8 byte-level mutations (see the module docstring)."""
    buf = bytearray(data)
    for _ in range(ops or int(rng.integers(1, 9))):
        if not buf:
            buf = bytearray(b"MThd")
        n = len(buf)
        i = int(rng.integers(n))
        op = int(rng.integers(7))
        if op == 0:
            buf[i] ^= 1 << int(rng.integers(8))
        elif op == 1:
            buf[i] = int(_pick(rng, (0x00, 0x7F, 0x80, 0xFF, 0xF0, 0xF7, 0x90, 0x99)))
        elif op == 2:
            buf[i:i] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif op == 3:
            del buf[i:i + int(rng.integers(1, 16))]
        elif op == 4:
            j = min(n, i + int(rng.integers(1, 64)))
            buf[j:j] = buf[i:j] * int(rng.integers(1, 8))
        elif op == 5:
            del buf[int(rng.integers(max(1, n // 2), n + 1)):]
        else:  # a chunk length that lies
            k = buf.find(b"MTrk", int(rng.integers(n)))
            if k >= 0 and k + 8 <= len(buf):
                buf[k + 4:k + 8] = struct.pack(">I", int(_pick(rng, (0, 1, 2 ** 31, 2 ** 32 - 1,
                                                                     int(rng.integers(2 ** 16))))))
    return bytes(buf)


def midi_case(seed: int, corpus=()) -> bytes:
    """The MIDI file of fuzz case ``seed``: random, or a mutation of a drum file (``corpus`` or a made-up one)."""
    rng = np.random.default_rng([0x4D49, int(seed)])
    if rng.random() < 0.5:
        return random_midi(rng)
    base = _pick(rng, list(corpus)) if corpus and rng.random() < 0.5 else drum_pattern(rng)
    return mutate(base, rng)


# ----------------------------------------------------------------------------- session.json

def junk_value(rng, depth: int = 0):
    """A JSON value of any type, at the edges (NaN and infinities as Python floats)."""
    u = rng.random()
    if u < 0.15:
        return _pick(rng, EDGE_INTS)
    if u < 0.3:
        return _pick(rng, EDGE_FLOATS)
    if u < 0.45:
        return _pick(rng, ("", "abc", "0", "-1", "nan", "../..", "x" * 300, "\u0000", "lstm", "true"))
    if u < 0.55:
        return _pick(rng, (None, True, False))
    if u < 0.75 and depth < 3:
        return [junk_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if depth < 3:
        keys = ("humanize", "seed", "temperature", "version", "notes", "bar", "step", "status", "x", "")
        return {str(_pick(rng, keys)): junk_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))}
    return 0


#: session.json's fields (:func:`rolypoly.session.check_meta`).
SESSION_FIELDS = ("score", "score_hash", "created", "model", "A", "B", "history", "offbeat", "pattern",
                  "score_versions")


def session_json_case(meta: dict, seed: int) -> bytes:
    """The bytes of a mutated session.json: fields junked, removed or nested, or the file broken."""
    rng = np.random.default_rng([0x5E55, int(seed)])
    meta = json.loads(json.dumps(meta))
    u = rng.random()
    if u < 0.08:
        return json.dumps(meta).encode()[: int(rng.integers(0, 200))]  # cut short
    if u < 0.12:
        return rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
    if u < 0.15:
        return json.dumps(junk_value(rng)).encode()  # not an object, or an object of junk
    if u < 0.17:
        return b"[" * 100_000  # nested past the parser's recursion
    for _ in range(int(rng.integers(1, 4))):
        key = _pick(rng, SESSION_FIELDS)
        v = rng.random()
        if v < 0.15:
            meta.pop(key, None)
        elif v < 0.3 and key == "offbeat":
            meta[key] = {"version": 1, "notes": [{"bar": junk_value(rng), "step": junk_value(rng),
                                                  "status": _pick(rng, ("tentative", "permanent", "x")),
                                                  "proposed_by": junk_value(rng)}]}
        elif v < 0.45 and key == "pattern":
            meta[key] = {"humanize": junk_value(rng), "seed": junk_value(rng), "temperature": junk_value(rng)}
        elif v < 0.55 and key == "score_versions":
            meta[key] = {"h": [[junk_value(rng), junk_value(rng)]]}
        else:
            meta[key] = junk_value(rng)
    return json.dumps(meta, allow_nan=True).encode()


# ----------------------------------------------------------------------------- safetensors

def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join_safetensors(header: dict, body: bytes, *, length: int | None = None) -> bytes:
    text = json.dumps(header, allow_nan=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if length is None else length) + text + body


def safetensors_case(base: bytes, seed: int) -> bytes:
    """A weights file (``base``, a real one) with a hostile header or body (see the module docstring)."""
    rng = np.random.default_rng([0x5AFE, int(seed)])
    header, body = _split_safetensors(base)
    meta = header.setdefault("__metadata__", {})
    config = json.loads(meta.get("config", "{}"))
    names = [k for k in header if k != "__metadata__"]
    u = rng.random()
    if u < 0.35:  # the config says something else
        for _ in range(int(rng.integers(1, 3))):
            key = _pick(rng, list(config) + ["members", "layers", "hidden", "kind", "task", "x"])
            w = rng.random()
            config[key] = (_pick(rng, (0, -1, 1, 3, 17, 300, 12_000, 10 ** 6, 2 ** 31, 2 ** 62)) if w < 0.6
                           else junk_value(rng))
            if rng.random() < 0.1:
                config.pop(key, None)
        meta["config"] = json.dumps(config, allow_nan=True) if rng.random() < 0.9 else str(junk_value(rng))
    elif u < 0.55:  # a tensor's entry
        entry = header[_pick(rng, names)]
        what = int(rng.integers(4))
        if what == 0:
            entry["shape"] = [int(_pick(rng, (0, 1, 2 ** 31, 2 ** 62, 12_000))) for _ in range(int(rng.integers(0, 4)))]
        elif what == 1:
            entry["dtype"] = _pick(rng, ("F64", "I8", "BOOL", "F16", "U64", "X", ""))
        elif what == 2:
            entry["data_offsets"] = [int(_pick(rng, EDGE_INTS[:12])), int(_pick(rng, EDGE_INTS))]
        else:
            header[str(junk_value(rng))[:40] or "renamed"] = header.pop(_pick(rng, names))
    elif u < 0.65:  # a tensor missing, or one more
        if rng.random() < 0.5 and len(names) > 1:
            header.pop(_pick(rng, names))
        else:
            header["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif u < 0.75:  # NaN in the weights
        body = bytearray(body)
        k = int(rng.integers(0, max(1, len(body) // 4))) * 4
        body[k:k + 4] = struct.pack("<f", float("nan"))
        body = bytes(body)
    elif u < 0.85:  # the header length lies
        return _join_safetensors(header, body, length=int(_pick(rng, (0, 1, 7, 2 ** 32, 2 ** 63, len(base) + 8))))
    else:  # bytes anywhere
        return mutate(_join_safetensors(header, body), rng)
    return _join_safetensors(header, body)


# ----------------------------------------------------------------------------- OSC

def _osc_string(s: bytes) -> bytes:
    s += b"\0"
    return s + b"\0" * (-len(s) % 4)


def _osc_arg(rng, tags: str = "ifdsbhtTFNIc") -> tuple[bytes, bytes]:
    """(type tag, encoded value) of one random argument, its type one of ``tags``."""
    tag = _pick(rng, tags)
    if tag == "i":
        return b"i", struct.pack(">i", int(np.clip(_pick(rng, EDGE_INTS), -2 ** 31, 2 ** 31 - 1)))
    if tag == "h":
        return b"h", struct.pack(">q", int(_pick(rng, EDGE_INTS)))
    if tag == "f":  # float32: finite values past its range are clipped to it
        x = _pick(rng, EDGE_FLOATS)
        return b"f", struct.pack(">f", float(np.clip(x, -3.4e38, 3.4e38)) if np.isfinite(x) else x)
    if tag == "d":
        return b"d", struct.pack(">d", _pick(rng, EDGE_FLOATS))
    if tag == "s":
        text = _pick(rng, (b"", b"sim", b"real", b"lstm", b"seq2seq", b"sender", b"../../etc/passwd", b"/tmp",
                           b"x" * 1000, b"song.mid", b"demo", b"\xff\xfe", b"a/b", b"nan", b"127.0.0.1"))
        return b"s", _osc_string(text)
    if tag == "b":
        blob = rng.integers(0, 256, int(_pick(rng, (0, 1, 5, 600))), dtype=np.uint8).tobytes()
        return b"b", struct.pack(">i", len(blob)) + blob + b"\0" * (-len(blob) % 4)
    if tag == "t":
        return b"t", struct.pack(">Q", int(rng.integers(0, 2 ** 63)))
    if tag == "c":
        return b"c", struct.pack(">i", int(rng.integers(0, 256)))
    return tag.encode(), b""  # T, F, N, I carry no data


def osc_message(rng, *, addresses=SERVICE_ADDRESSES) -> bytes:
    """One OSC message: a rolypoly address (mostly) or junk, 0-4 random arguments."""
    u = rng.random()
    name = None
    if u < 0.8:
        name = _pick(rng, addresses)
        address = b"/rolypoly/" + name.encode()
    elif u < 0.9:
        address = _pick(rng, (b"/", b"/rolypoly", b"/rolypoly/", b"/other/thing", b"/rolypoly/x" * 50, b"//"))
    else:
        address = b"/" + rng.integers(33, 127, int(rng.integers(1, 30)), dtype=np.uint8).tobytes()
    # Mostly as many arguments as the address takes, mostly numbers: what gets past the count
    # and type checks is where a bad value can be stored.
    if name in SERVICE_ARITY and rng.random() < 0.75:
        count, kinds = int(_pick(rng, SERVICE_ARITY[name])), ("fdi" if rng.random() < 0.7 else "ifdsbhTFN")
    else:
        count, kinds = int(rng.integers(0, 5)), "ifdsbhtTFNIc"
    tags, values = b",", b""
    for _ in range(count):
        t, v = _osc_arg(rng, kinds)
        tags += t
        values += v
    if rng.random() < 0.05:
        values = values[: int(rng.integers(0, len(values) + 1))]  # cut short
    return _osc_string(address) + _osc_string(tags) + values


def osc_datagram(seed: int, *, addresses=SERVICE_ADDRESSES) -> bytes:
    """One UDP datagram: a message, a (nested) bundle of them, or bytes that are neither."""
    rng = np.random.default_rng([0x05C, int(seed)])
    u = rng.random()
    if u < 0.7:
        return osc_message(rng, addresses=addresses)
    if u < 0.9:
        def bundle(depth):
            parts = b""
            for _ in range(int(rng.integers(0, 4))):
                inner = bundle(depth + 1) if depth < 3 and rng.random() < 0.3 else osc_message(rng, addresses=addresses)
                parts += struct.pack(">i", len(inner) if rng.random() < 0.95 else int(rng.integers(-5, 5000))) + inner
            timetag = struct.pack(">Q", int(_pick(rng, (1, 0, 2 ** 63, int(rng.integers(0, 2 ** 63))))))
            return _osc_string(b"#bundle") + timetag + parts
        return bundle(0)
    return mutate(osc_message(rng, addresses=addresses), rng)
