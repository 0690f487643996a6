"""The demo's bass player, of our own making: how ``rolypoly/data/demo_partner.flac`` was made.

The partner is a synthesized finger-style bass (Karplus–Strong, see
:mod:`rolypoly.lab.partner_audio`) that plays on the kicks and the backbeat
of the demo score, a little laid back (+12 ms on average) with human jitter
(σ 6 ms), through the tempo change and the 6/8 section, starting
:data:`rolypoly.demo.PARTNER_LEAD_S` before the score.

Examples
--------
>>> audio, onsets = demo_partner()   # doctest: +SKIP
>>> write_demo_partner()              # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rolypoly.demo import DEMO_PARTNER, DEMO_RIFF, PARTNER_LEAD_S, demo_score, riff_positions, riff_score
from rolypoly.drum_map import class_index

PARTNER_SR = 48000
LAID_BACK_S = 0.012
JITTER_S = 0.006
#: Root notes per bar (MIDI): a I–vi–IV–V feel in E, a 6/8 turn, an outro.
ROOTS = [40, 40, 37, 45, 40, 43, 45, 47, 40, 37, 45, 47, 40, 45, 47, 40, 40]


def demo_partner(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Audio (float32, 48 kHz) and true onset times (s, recording time) of the demo bass."""
    from .partner_audio import electric_bass

    score = demo_score()
    rng = np.random.default_rng(seed)
    kick, snare = class_index("kick"), class_index("snare")
    plays = score.hits[:, kick] | (score.hits[:, snare] & (score.step % 12 == 6))
    rows = np.flatnonzero(plays)
    times = PARTNER_LEAD_S + score.onset_s[rows] + LAID_BACK_S + rng.normal(0, JITTER_S, len(rows))
    pitches = [ROOTS[min(int(score.bar[r]), len(ROOTS) - 1)] + (7 if score.hits[r, snare] else 0) for r in rows]
    gaps = np.diff(np.r_[times, times[-1] + 0.6])
    velocities = np.clip(0.75 + 0.15 * (score.step[rows] == 0) + rng.normal(0, 0.05, len(rows)), 0.4, 1.0)
    audio = electric_bass(times, durations=np.minimum(gaps * 0.9, 0.8), pitches=pitches,
                          velocities=velocities, sample_rate=PARTNER_SR)
    audio = np.concatenate([audio, np.zeros(PARTNER_SR, np.float32)])
    return audio, times


def write_demo_partner(path=DEMO_PARTNER) -> Path:
    """(Re)make the bundled partner recording."""
    import soundfile

    audio, _ = demo_partner()
    soundfile.write(path, audio / max(1.0, float(np.abs(audio).max()) / 0.9), PARTNER_SR, subtype="PCM_16")
    return Path(path)


def demo_riff_partner(seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Audio and true onsets (s, recording time) of the generation demo's bass: 8ths, then a riff at bar 9.

    Played against :func:`rolypoly.demo.riff_score` (16 bars at 96 bpm), a little laid back with
    human jitter, starting :data:`rolypoly.demo.PARTNER_LEAD_S` before it; accents on the riff's
    first note of each half bar.
    """
    from .partner_audio import electric_bass

    score = riff_score()
    rng = np.random.default_rng(seed)
    pos = np.asarray(riff_positions())
    bar = np.floor(pos).astype(int)
    bar_s = float(score.bar_ms[0]) / 1000.0
    times = PARTNER_LEAD_S + pos * bar_s + LAID_BACK_S + rng.normal(0, JITTER_S, len(pos))
    pitches = [ROOTS[b % 4] for b in bar]
    phase = pos - bar
    velocities = np.clip(0.7 + 0.2 * np.isin(np.round(phase * 16), (0, 6, 10)) + rng.normal(0, 0.04, len(pos)),
                         0.4, 1.0)
    gaps = np.diff(np.r_[times, times[-1] + 0.6])
    audio = electric_bass(times, durations=np.minimum(gaps * 0.85, 0.8), pitches=pitches,
                          velocities=velocities, sample_rate=PARTNER_SR)
    audio = np.concatenate([audio, np.zeros(PARTNER_SR, np.float32)])
    return audio, times


def write_demo_riff(path=DEMO_RIFF) -> Path:
    """(Re)make the bundled riff-changing bass recording."""
    import soundfile

    audio, _ = demo_riff_partner()
    soundfile.write(path, audio / max(1.0, float(np.abs(audio).max()) / 0.9), PARTNER_SR, subtype="PCM_16")
    return Path(path)
