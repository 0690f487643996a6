"""A minimal SoundFont 2 writer, for test kits: known samples, chosen presets.

Real General MIDI soundfonts are tens of megabytes and their sounds are
whatever they are; a test needs a soundfont whose every detail it knows --
one with no drum kit at all, or a drum kit whose notes are given samples.
:func:`write_sf2` writes the smallest file FluidSynth accepts (SoundFont
2.01: INFO, one ``smpl`` chunk of 16-bit mono samples, the nine ``pdta``
tables): each preset has one instrument, each instrument one zone per
sample, a zone covering the given key range.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "piano.sf2")
>>> write_sf2(path, [("Piano", 0, 0, [(0, 127, np.sin(np.arange(4800) / 10.0))])])
>>> os.path.getsize(path) > 9600
True
"""
from __future__ import annotations

import struct

import numpy as np

#: Generator numbers (SoundFont 2.01, section 8.1.3).
GEN_KEY_RANGE, GEN_INSTRUMENT, GEN_SAMPLE_MODES, GEN_SAMPLE_ID = 43, 41, 54, 53
#: Zero samples after each sample (the format asks for at least 46).
SAMPLE_PAD = 46


def _chunk(tag: bytes, data: bytes) -> bytes:
    if len(data) % 2:
        data += b"\0"
    return tag + struct.pack("<I", len(data)) + data


def _list(kind: bytes, chunks: list[bytes]) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode("ascii", "replace")[:19].ljust(20, b"\0")


def write_sf2(path, presets, sample_rate: int = 48000) -> None:
    """Write a soundfont.

    Parameters
    ----------
    path : where to write it
    presets : list of (name, bank, program, zones)
        ``zones``: list of (low key, high key, samples) -- mono samples in
        -1..1, played at their own pitch on every key of the range (root key
        60; a drum kit in bank 128 gives one zone per drum key).
    sample_rate : rate of every sample
    """
    smpl, shdr, inst, ibag, igen, phdr, pbag, pgen = [], [], [], [], [], [], [], []
    pos = 0
    for p, (name, bank, program, zones) in enumerate(presets):
        inst.append(_name(f"{name} inst") + struct.pack("<H", len(ibag)))
        for low, high, samples in zones:
            x = np.clip(np.asarray(samples, np.float64), -1.0, 1.0)
            pcm = np.round(x * 32767).astype("<i2")
            start, end = pos, pos + len(pcm)
            smpl.append(pcm.tobytes() + b"\0\0" * SAMPLE_PAD)
            pos = end + SAMPLE_PAD
            shdr.append(_name(f"s{len(shdr)}") + struct.pack("<IIIIIBbHH", start, end, start, end, sample_rate,
                                                              60, 0, 0, 1))
            ibag.append(struct.pack("<HH", len(igen), 0))
            igen.append(struct.pack("<HBB", GEN_KEY_RANGE, low, high))
            igen.append(struct.pack("<HH", GEN_SAMPLE_MODES, 0))
            igen.append(struct.pack("<HH", GEN_SAMPLE_ID, len(shdr) - 1))
        phdr.append(_name(name) + struct.pack("<HHHIII", program, bank, len(pbag), 0, 0, 0))
        pbag.append(struct.pack("<HH", len(pgen), 0))
        pgen.append(struct.pack("<HH", GEN_INSTRUMENT, p))
    # Terminal records.
    phdr.append(_name("EOP") + struct.pack("<HHHIII", 0, 0, len(pbag), 0, 0, 0))
    pbag.append(struct.pack("<HH", len(pgen), 0))
    pgen.append(struct.pack("<HH", 0, 0))
    inst.append(_name("EOI") + struct.pack("<H", len(ibag)))
    ibag.append(struct.pack("<HH", len(igen), 0))
    igen.append(struct.pack("<HH", 0, 0))
    shdr.append(_name("EOS") + struct.pack("<IIIIIBbHH", 0, 0, 0, 0, 0, 0, 0, 0, 0))
    modulator_end = b"\0" * 10
    info = _list(b"INFO", [_chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", b"EMU8000\0"),
                           _chunk(b"INAM", b"rolypoly test\0")])
    sdta = _list(b"sdta", [_chunk(b"smpl", b"".join(smpl))])
    pdta = _list(b"pdta", [_chunk(b"phdr", b"".join(phdr)), _chunk(b"pbag", b"".join(pbag)),
                           _chunk(b"pmod", modulator_end), _chunk(b"pgen", b"".join(pgen)),
                           _chunk(b"inst", b"".join(inst)), _chunk(b"ibag", b"".join(ibag)),
                           _chunk(b"imod", modulator_end), _chunk(b"igen", b"".join(igen)),
                           _chunk(b"shdr", b"".join(shdr))])
    with open(path, "wb") as f:
        f.write(_chunk(b"RIFF", b"sfbk" + info + sdta + pdta))
