"""The Groove MIDI Dataset as 2-bar GrooVAE windows.

Every 4/4 take of an official split is read onto the grid
(:mod:`rolypoly.groove_grid`) and cut into 2-bar windows with a 1-bar hop,
as GrooVAE does (Gillick et al. 2019, 3.2): hits, velocities and offsets of
the 9 drum classes, 32 steps a window on the 16th grid, 96 on the triplet
grid. Takes in other meters are left out, like GrooVAE (they are 12 of
1,150), and so are windows without a single hit.

Windows are cached as ``.npz`` in :func:`rolypoly.pretrain.gmd.cache_dir`, under a key
hashed from the MIDI bytes and the settings (grid, window, pipeline version);
a cache from other settings has another key and is never used.

Examples
--------
>>> train = load_groove_split("train")        # doctest: +SKIP
>>> train.H.shape, train.grid                  # doctest: +SKIP
((17940, 32, 9), '16th')
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, replace

import numpy as np

from rolypoly.errors import DatasetError, ScoreError
from rolypoly.groove_grid import HOP_BARS, WINDOW_BARS, read_groove, steps_per_beat, window_bounds, windows

from .gmd import cache_dir, source_key, split_entries

#: Bump when the windowing changes: old caches then stop matching.
GROOVE_PIPELINE_VERSION = 1
#: The meter GrooVAE keeps (info.csv spelling).
METER = "4-4"
BEATS_PER_BAR = 4


@dataclass
class GrooveSet:
    """Windows of many takes: ``H``, ``V``, ``O`` (N, T, 9) float32.

    ``take[i]`` indexes ``names`` (the GMD MIDI file of window i), ``bar[i]``
    is the window's first bar in that take and ``bpm[i]`` its tempo.
    """

    H: np.ndarray              # (N, T, 9) hits 0/1
    V: np.ndarray              # (N, T, 9) velocity / 127
    O: np.ndarray              # (N, T, 9) offset in steps, -0.5..0.5
    bpm: np.ndarray            # (N,) tempo, quarter notes per minute
    take: np.ndarray           # (N,) int64 index into names
    names: list[str]           # GMD MIDI file names (info.csv midi_filename)
    grid: str = "16th"
    steps_per_beat: int = 4
    bar: np.ndarray | None = None   # (N,) int64 first bar of each window in its take
    key: str = ""

    def __len__(self) -> int:
        return len(self.H)

    def subset(self, idx) -> "GrooveSet":
        """The windows picked by an index array, slice or boolean mask (names kept).

        >>> fast = train.subset(train.bpm > 140)   # doctest: +SKIP
        """
        pick = {k: getattr(self, k)[idx] for k in ("H", "V", "O", "bpm", "take")}
        return replace(self, **pick, names=list(self.names),
                       bar=None if self.bar is None else self.bar[idx])


def _settings(grid: str) -> dict:
    return {"groove_pipeline": GROOVE_PIPELINE_VERSION, "grid": grid, "window_bars": WINDOW_BARS,
            "hop_bars": HOP_BARS, "meter": METER}


def load_groove_split(split: str, root=None, *, grid: str = "16th", limit: int | None = None,
                      use_cache: bool = True, progress: bool = False) -> GrooveSet:
    """2-bar windows of one official split of the Groove MIDI Dataset.

    Parameters
    ----------
    split : "train", "validation" or "test"
    root : dataset folder (see :func:`rolypoly.pretrain.gmd.gmd_dir`)
    grid : "16th" (T = 32) or "triplet" (T = 96)
    limit : keep only the first ``limit`` takes of the split (smoke tests)
    use_cache : read and write the ``.npz`` cache
    progress : show a progress bar while parsing

    Returns
    -------
    GrooveSet
    """
    spb = steps_per_beat(grid)
    root, entries = split_entries(split, root, limit)
    key = hashlib.sha256((source_key(root, entries) + json.dumps(_settings(grid), sort_keys=True))
                         .encode()).hexdigest()
    path = cache_dir() / f"groove-{split}-{grid}-{key[:20]}.npz"
    fields = ("H", "V", "O", "bpm", "take", "bar")
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return GrooveSet(**{k: z[k] for k in fields}, names=list(z["names"]), grid=grid,
                                     steps_per_beat=spb, key=key)
        except Exception:
            pass  # a damaged cache is rebuilt, never trusted
    data = _parse(root, [e for e in entries if e.get("time_signature", METER) == METER], grid, progress)
    data.key = key
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per process, last rename wins
        np.savez(tmp, key=key, names=np.array(data.names), **{k: getattr(data, k) for k in fields})
        os.replace(tmp, path)
    return data


def _parse(root, entries: list[dict], grid: str, progress: bool) -> GrooveSet:
    from tqdm import tqdm

    spb = steps_per_beat(grid)
    parts, names = [], []
    for e in tqdm(entries, desc=f"GMD windows ({grid})", unit="take", disable=not progress, file=sys.stderr):
        try:
            groove = read_groove(root / e["midi_filename"], grid=grid)
        except ScoreError as err:
            warnings.warn(f"skipped {err}")
            continue
        H, V, O = windows(groove)
        bounds = window_bounds(groove.bar_starts)
        # Only whole windows of 4/4 bars: a take shorter than 2 bars, or a stray meter event, is left out.
        whole = (bounds[:, 1] - bounds[:, 0] == WINDOW_BARS * BEATS_PER_BAR * spb)
        bar_ok = groove.steps_per_bar == BEATS_PER_BAR * spb
        whole &= np.array([bar_ok[b:b + WINDOW_BARS].all() for b in range(len(bounds))], dtype=bool)
        keep = whole & (H.sum(axis=(1, 2)) > 0)
        if not keep.any():
            continue
        k = len(names)
        names.append(e["midi_filename"])
        parts.append((H[keep], V[keep], O[keep], groove.bpm[bounds[keep, 0]].astype(np.float32),
                      np.full(int(keep.sum()), k, np.int64), np.flatnonzero(keep).astype(np.int64)))
    if not parts:
        raise DatasetError(f"{root}: no usable 4/4 takes in this selection")
    H, V, O, bpm, take, bar = (np.concatenate(a) for a in zip(*parts))
    return GrooveSet(H, V, O, bpm, take, names, grid, spb, bar)
