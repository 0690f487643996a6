"""The Groove MIDI Dataset as feature rows and timing labels.

Each take of the dataset is read as a score (:mod:`rolypoly.score`); its
feature rows have the partner columns at zero (drums only), and its label is
the residual offset of each row from its 24-step grid position, as a fraction
of a bar: how the drummer pushed and pulled against the grid. Takes of 1 s
or less, or of a single bar, are pruned (rolypoly~ paper, 3.3). The official
train/validation/test split of ``info.csv`` is used.

Parsed arrays are cached as ``.npz`` under a key hashed from the MIDI bytes,
the settings and the pipeline version; a cache from other settings has
another key and is never used.

Examples
--------
>>> train = load_split("train")             # doctest: +SKIP
>>> train.X.shape, train.y.shape            # doctest: +SKIP
((229433, 15), (229433,))
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rolypoly import paths
from rolypoly.errors import DatasetError, ScoreError
from rolypoly.features import score_features
from rolypoly.grid import STEPS_PER_BAR
from rolypoly.score import load_score

SPLITS = ("train", "validation", "test")
#: Bump when the parsing or labelling changes: old caches then stop matching.
PIPELINE_VERSION = 2
MIN_TAKE_SECONDS = 1.0
MIN_TAKE_BARS = 2


def gmd_dir(path=None) -> Path:
    """The dataset folder: ``path``, else $ROLYPOLY_GMD, else the user data folder (:mod:`rolypoly.paths`)."""
    p = paths.gmd_dir(path)
    if not (p / "info.csv").is_file():
        raise DatasetError(f"{p}: no Groove MIDI Dataset here (info.csv missing); pass --gmd DIR or set "
                           f"ROLYPOLY_GMD, or get it with: rolypoly data gmd --download {p.parent}")
    return p


def read_index(root) -> list[dict]:
    """Rows of ``info.csv`` (one per take), with the split as given there."""
    root = gmd_dir(root)
    with open(root / "info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    bad = [r.get("split") for r in rows if r.get("split") not in SPLITS]
    if not rows or "midi_filename" not in rows[0] or bad:
        raise DatasetError(f"{root / 'info.csv'}: not the Groove MIDI Dataset index "
                           "(needs midi_filename and split columns)")
    return rows


@dataclass
class TakeSet:
    """Feature rows of many takes, concatenated; ``starts[k]:starts[k+1]`` is take k."""

    X: np.ndarray        # (N, 15) float32 feature rows
    y: np.ndarray        # (N,) float32 label: played offset, fraction of a bar
    bar_ms: np.ndarray   # (N,) float32 bar length, ms
    timesig: np.ndarray  # (N,) float32
    starts: np.ndarray   # (takes + 1,) int64
    names: list[str]
    key: str             # hash of sources and settings

    def __len__(self) -> int:
        return len(self.starts) - 1

    def take(self, k: int) -> slice:
        return slice(int(self.starts[k]), int(self.starts[k + 1]))

    def subset(self, takes) -> "TakeSet":
        takes = list(takes)
        parts = [self.take(k) for k in takes]
        lengths = [s.stop - s.start for s in parts]
        cat = lambda a: np.concatenate([a[s] for s in parts]) if parts else a[:0]  # noqa: E731
        return TakeSet(cat(self.X), cat(self.y), cat(self.bar_ms), cat(self.timesig),
                       np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                       [self.names[k] for k in takes], self.key + f"/subset{len(takes)}")


def _settings() -> dict:
    return {"pipeline": PIPELINE_VERSION, "steps_per_bar": STEPS_PER_BAR,
            "min_take_seconds": MIN_TAKE_SECONDS, "min_take_bars": MIN_TAKE_BARS}


def source_key(root, entries: list[dict]) -> str:
    """Hash of the MIDI bytes of ``entries`` and the pipeline settings."""
    h = hashlib.sha256(json.dumps(_settings(), sort_keys=True).encode())
    for e in entries:
        h.update(e["midi_filename"].encode())
        h.update(hashlib.sha256((Path(root) / e["midi_filename"]).read_bytes()).digest())
    return h.hexdigest()


def cache_dir() -> Path:
    return paths.cache_dir()


def split_entries(split: str, root=None, limit: int | None = None) -> tuple[Path, list[dict]]:
    """The dataset folder and the index entries of one official split, all present on disk.

    Raises DatasetError for an unknown split, a missing index or missing MIDI files.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = gmd_dir(root)
    entries = [e for e in read_index(root) if e["split"] == split][:limit]
    missing = [e["midi_filename"] for e in entries if not (root / e["midi_filename"]).is_file()]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} MIDI files listed in info.csv are missing "
                           f"(first: {missing[0]})")
    return root, entries


def forgetting_set(root=None) -> "TakeSet":
    """The takes fine-tuning watches so the agent does not forget how drummers play.

    The first :data:`rolypoly.finetune.DATASET_TAKES` takes of the official
    validation split, always the same ones; the one way the command line,
    the service, the benchmarks and the experiments load them.
    """
    from rolypoly.finetune import DATASET_TAKES

    return load_split("validation", root, limit=DATASET_TAKES)


def load_split(split: str, root=None, *, limit: int | None = None, use_cache: bool = True,
               progress: bool = False) -> TakeSet:
    """Feature rows and labels of one official split.

    Parameters
    ----------
    split : "train", "validation" or "test"
    root : dataset folder (see :func:`gmd_dir`)
    limit : keep only the first ``limit`` takes of the split (smoke tests)
    use_cache : read and write the ``.npz`` cache
    """
    root, entries = split_entries(split, root, limit)
    key = source_key(root, entries)
    path = cache_dir() / f"gmd-{split}-{key[:20]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return TakeSet(z["X"], z["y"], z["bar_ms"], z["timesig"], z["starts"],
                                   list(z["names"]), key)
        except Exception:
            pass  # a damaged cache is rebuilt, never trusted
    takes = _parse(root, entries, progress)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several training processes may build the same cache at once: each writes its own
        # file and the last rename wins (the contents are identical).
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, key=key, X=takes.X, y=takes.y, bar_ms=takes.bar_ms, timesig=takes.timesig,
                 starts=takes.starts, names=np.array(takes.names))
        os.replace(tmp, path)
    takes.key = key
    return takes


def _parse(root: Path, entries: list[dict], progress: bool) -> TakeSet:
    from tqdm import tqdm

    X, y, bar_ms, ts, lengths, names = [], [], [], [], [], []
    for e in tqdm(entries, desc="parsing GMD", unit="take", disable=not progress, file=sys.stderr):
        try:
            score = load_score(root / e["midi_filename"])
        except ScoreError as err:
            warnings.warn(f"skipped {err}")
            continue
        if score.onset_s[-1] + score.duration_ms[-1] / 1000 <= MIN_TAKE_SECONDS or score.n_bars < MIN_TAKE_BARS:
            continue
        X.append(score_features(score))
        y.append(score.played_offset.astype(np.float32))
        bar_ms.append(score.bar_ms.astype(np.float32))
        ts.append(score.timesig.astype(np.float32))
        lengths.append(len(score))
        names.append(e["midi_filename"])
    if not X:
        raise DatasetError(f"{root}: no usable takes in this selection")
    return TakeSet(np.concatenate(X), np.concatenate(y), np.concatenate(bar_ms), np.concatenate(ts),
                   np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), names, "")
