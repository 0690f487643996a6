"""The pattern the live engine plays: a humanized score, or drums made from the partner.

The groove generator (:mod:`rolypoly.groove`) supplies the pattern; the
adaptive agent then adds its own offset ŷ each hit, take after take.

* :func:`humanized_score`: a plain (quantised) score performed by the
  humanize model: every class gets the model's velocity, and every row moves
  by its notes' offset (the mean over the classes sounding together: the
  engine plays a row's notes at one moment, as the rolypoly~ agents predict
  one offset per row -- spreading them would be flamming, paper footnote 13).
  Rows, bars and steps do not change, so the session, its takes and its
  model versions are the same piece (:func:`rolypoly.session.score_hash`).
* :func:`drumify_recording`: score-agnostic start. The partner plays a first
  take alone; its onsets become taps and the drumify model turns them into
  a drum score for the next take, which then adapts as usual.

Examples
--------
>>> score = humanized_score(load_score("beat.mid"), "beat.mid", seed=1)   # doctest: +SKIP
>>> drumify_recording("sessions/jam/takes/000/partner.wav", "jam.mid", bpm=100)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import RolypolyError
from .score import Score


def humanized_score(score: Score, score_path, *, weights=None, temperature: float = 0.0,
                    seed: int | None = 0) -> Score:
    """``score`` as the humanize model plays it (velocities per class, an offset per row).

    Parameters
    ----------
    score : Score
        The score to play, as loaded from ``score_path`` (it may have silent
        off-beat rows added: they stay where they are).
    score_path : path of the MIDI file the score comes from (the model reads its notes)
    weights : humanize model weights (default: the shipped ones)
    temperature, seed : 0 is the most likely performance; a seed makes it repeatable

    Returns
    -------
    Score
        Same rows; ``velocities`` from the model, ``onset_s`` moved by each
        row's humanized offset (``played_offset`` gets it too, in bars).
    """
    from .groove import perform
    from .groove_grid import read_groove
    from .groove_model import load_groove_model

    model = load_groove_model("humanize", weights)
    before = read_groove(score_path, grid=model.grid)
    after = perform(model, before, temperature=temperature, seed=seed)
    tmap = score.tempo_map
    if tmap.ticks_per_beat != before.tempo_map.ticks_per_beat:
        raise RolypolyError(f"{score_path}: not the file this score was read from")
    # Each note of a row sits at the row's tick plus its rounding to 24 steps per bar.
    ticks = score.tick + score.played_offset * score.bar_ticks
    right = np.clip(np.searchsorted(after.step_tick, ticks), 1, len(after) - 1)
    step = np.where(ticks - after.step_tick[right - 1] <= after.step_tick[right] - ticks, right - 1, right)
    velocities = score.velocities.copy()
    shift_s = np.zeros(len(score))
    played = np.zeros(len(score))
    for r in np.flatnonzero(score.hits.any(axis=1)):
        classes = np.flatnonzero(score.hits[r])
        s = step[r]
        hit = after.H[s, classes] > 0.5
        if not hit.any():
            continue
        velocities[r, classes[hit]] = np.clip(np.rint(after.V[s, classes[hit]] * 127), 1, 127)
        # The model's microtiming around the note as written (a triplet stays a triplet).
        off_ticks = float(np.mean(after.O[s, classes[hit]])) * after.step_ticks[s]
        shift_s[r] = float(tmap.seconds(ticks[r] + off_ticks) - tmap.seconds(ticks[r]))
        played[r] = off_ticks / score.bar_ticks[r]
    return replace(score, velocities=velocities.astype(score.velocities.dtype), onset_s=score.onset_s + shift_s,
                   played_offset=score.played_offset + played, warnings=list(score.warnings))


def drumify_recording(recording, out_path, *, bpm: float | None = None, weights=None,
                      temperature: float = 0.0, seed: int | None = 0) -> Path:
    """A drum score (MIDI) from a partner's recording or tapped MIDI, for a session to start from.

    Parameters
    ----------
    recording : WAV/FLAC of the partner playing alone (or a MIDI file of taps)
    out_path : the drum MIDI file to write
    bpm : the partner's tempo (default: estimated with librosa)

    Examples
    --------
    >>> drumify_recording("partner.wav", "drums.mid", bpm=96)   # doctest: +SKIP
    PosixPath('drums.mid')
    """
    from .groove import drumify_midi

    recording = os.fspath(recording)
    if not os.path.isfile(recording):
        raise RolypolyError(f"{recording}: no such recording")
    taps, drums = drumify_midi(recording, out_path, bpm=bpm, weights=weights, temperature=temperature, seed=seed)
    if not np.asarray(drums.H).any():
        raise RolypolyError(f"{recording}: the drumify model played nothing for these {int(taps.H.sum())} taps")
    return Path(out_path)
