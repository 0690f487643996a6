"""The Groove MIDI Dataset as whole bars, take by take, for the bar generators.

The continuation and fill models (:mod:`rolypoly.generate_model`) read and
write one bar at a time on the triplet grid (:data:`rolypoly.generate_model.GRID`:
12 steps a beat, 48 a 4/4 bar). Every 4/4 take of an official split is read
onto that grid and kept as its bars in order, with the take's style (the
first word of info.csv's ``style``: ``funk/groove1`` → ``funk``), its
``beat_type`` (beat or fill), session and tempo. Bars are consecutive within
a take, so "the bars before" and "the bar after" are plain index arithmetic.

Parsed bars are cached as ``.npz`` like the other GMD caches
(:mod:`rolypoly.pretrain.gmd`), under a key hashed from the MIDI bytes and
the settings; a cache from other settings is never used.

Examples
--------
>>> bars = load_bars("validation")          # doctest: +SKIP
>>> bars.H.shape                            # doctest: +SKIP
(3290, 48, 9)
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from rolypoly.errors import DatasetError, ScoreError
from rolypoly.generate_model import GRID, STEPS_PER_BAR, style_index
from rolypoly.groove_grid import read_groove

from .gmd import cache_dir, source_key, split_entries

#: Bump when the parsing changes: old caches then stop matching.
BAR_PIPELINE_VERSION = 1
METER = "4-4"


@dataclass
class BarSet:
    """Bars of many takes, concatenated: ``H``, ``V``, ``O`` (N, 48, 9) float32.

    ``starts[k]:starts[k+1]`` are take k's bars, in order; per take: its
    MIDI file, style index, beat type, session and tempo.
    """

    H: np.ndarray
    V: np.ndarray
    O: np.ndarray
    starts: np.ndarray        # (takes + 1,) int64
    names: list[str]
    style: np.ndarray         # (takes,) int64 index into rolypoly.generate_model.STYLES
    fill: np.ndarray          # (takes,) bool: beat_type == "fill"
    session: list[str]
    bpm: np.ndarray           # (takes,) float32
    key: str = ""

    @property
    def take_of_bar(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.names)), np.diff(self.starts))

    def bar_in_take(self) -> np.ndarray:
        """Index of every bar within its own take (0 for a take's first bar)."""
        return np.arange(len(self.H)) - self.starts[self.take_of_bar]


def load_bars(split: str, root=None, *, limit: int | None = None, use_cache: bool = True,
              progress: bool = False) -> BarSet:
    """All 4/4 takes (beats and fills) of one official split, as bars on the triplet grid.

    Parameters
    ----------
    split : "train", "validation" or "test"
    root : dataset folder (see :func:`rolypoly.pretrain.gmd.gmd_dir`)
    limit : keep only the first ``limit`` takes of the split (smoke runs and tests)
    """
    root, entries = split_entries(split, root, limit)
    entries = [e for e in entries if e.get("time_signature", METER) == METER]
    settings = {"bar_pipeline": BAR_PIPELINE_VERSION, "grid": GRID, "meter": METER}
    key = hashlib.sha256((source_key(root, entries) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    path = cache_dir() / f"bars-{split}-{key[:20]}.npz"
    arrays = ("H", "V", "O", "starts", "style", "fill", "bpm")
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return BarSet(**{k: z[k] for k in arrays}, names=list(z["names"]),
                                  session=list(z["session"]), key=key)
        except Exception:
            pass  # a damaged cache is rebuilt, never trusted
    data = _parse(root, entries, progress)
    data.key = key
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, key=key, names=np.array(data.names), session=np.array(data.session),
                 **{k: getattr(data, k) for k in arrays})
        os.replace(tmp, path)
    return data


def _parse(root, entries: list[dict], progress: bool) -> BarSet:
    from tqdm import tqdm

    parts, names, styles, fills, sessions, bpms = [], [], [], [], [], []
    for e in tqdm(entries, desc="GMD bars", unit="take", disable=not progress, file=sys.stderr):
        try:
            groove = read_groove(root / e["midi_filename"], grid=GRID)
        except ScoreError as err:
            warnings.warn(f"skipped {err}")
            continue
        # Whole 4/4 bars only: a stray meter event ends the take there.
        ok = groove.steps_per_bar == STEPS_PER_BAR
        n = int(np.argmin(ok)) if not ok.all() else len(ok)
        if n == 0:
            continue
        cut = int(groove.bar_starts[n])
        parts.append(tuple(a[:cut].reshape(n, STEPS_PER_BAR, -1) for a in (groove.H, groove.V, groove.O)))
        names.append(e["midi_filename"])
        styles.append(style_index(e.get("style", "").split("/")[0], strict=False))
        fills.append(e.get("beat_type") == "fill")
        sessions.append(e.get("session", ""))
        bpms.append(float(e.get("bpm") or groove.bpm[0]))
    if not parts:
        raise DatasetError(f"{root}: no usable 4/4 takes in this selection")
    H, V, O = (np.concatenate(a) for a in zip(*parts))
    starts = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])]).astype(np.int64)
    return BarSet(H, V, O, starts, names, np.array(styles, np.int64), np.array(fills, bool), sessions,
                  np.array(bpms, np.float32))


def concat_bars(sets) -> BarSet:
    """Several BarSets as one (takes of each in turn); its ``key`` joins theirs."""
    sets = list(sets)
    offsets = np.cumsum([0] + [len(s.H) for s in sets[:-1]])
    starts = np.concatenate([[0]] + [s.starts[1:] + o for s, o in zip(sets, offsets)]).astype(np.int64)
    cat = lambda k: np.concatenate([getattr(s, k) for s in sets])  # noqa: E731
    return BarSet(cat("H"), cat("V"), cat("O"), starts, sum((s.names for s in sets), []), cat("style"),
                  cat("fill"), sum((s.session for s in sets), []), cat("bpm"), "+".join(s.key for s in sets))
