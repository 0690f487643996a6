"""A library of real drummers' beats to play with: the Groove MIDI Dataset as scores.

A musician with no drum file of their own picks a beat by style, tempo and
meter (``rolypoly grooves list --style funk --bpm 90-110``) and plays it as
the score (``rolypoly play --groove funk/12``). The beats are the Groove MIDI
Dataset's (Gillick et al. 2019, Google Magenta; CC BY 4.0, see
:data:`ATTRIBUTION`): 1,150 takes by ten drummers on an electronic kit, each
with its style, tempo, meter and kind (beat or fill) in the dataset's
``info.csv``.

Names are stable: ``STYLE/N`` is the N-th take of that style (the part of
the dataset's style before the slash: ``funk/purdieshuffle`` is funk) in the
order of ``info.csv``, counting from 1, fills included. The same name is the
same take whether it is read from the dataset or from the subset shipped with
rolypoly (``rolypoly/data/grooves``, made by :func:`make_subset`, listed in
its own ``info.csv`` with the same columns plus ``name`` and where the file
came from), so a session made with one plays with the other.

Without the dataset, the shipped subset is the library; with it
(``--gmd DIR``, ``$ROLYPOLY_GMD``, :func:`rolypoly.paths.gmd_dir`), the whole
dataset.

Examples
--------
>>> grooves, where = library(gmd="/nonexistent")
>>> where
'shipped'
>>> [g.name for g in find(grooves, style="funk", meter="4/4")]
['funk/4', 'funk/118', 'funk/139']
>>> groove_path("funk/118", gmd="/nonexistent").name
'funk-118.mid'
"""
from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import RolypolyError

#: The shipped subset: MIDI files, their info.csv and the dataset's attribution.
SHIPPED_DIR = paths.DATA_DIR / "grooves"
INDEX = "info.csv"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
#: Said wherever the beats are listed or shipped (the dataset's licence asks for it).
ATTRIBUTION = ("Beats from the Groove MIDI Dataset by Jon Gillick, Adam Roberts, Jesse Engel, Douglas Eck "
               "and David Bamman (Google Magenta, 2019), licensed under CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/); https://magenta.tensorflow.org/datasets/groove")

#: What the shipped subset holds: beats (not fills) this long (s), and how many per style in 4/4
#: (spread over the style's tempi) and in each other meter.
SUBSET_SECONDS = (15.0, 300.0)
SUBSET_PER_STYLE = 3
SUBSET_PER_OTHER_METER = 1
SUBSET_MAX_BYTES = 1_000_000


class GrooveError(RolypolyError):
    """A groove name that is not in the library, or a library that cannot be read."""


@dataclass(frozen=True)
class Groove:
    """One take of the library."""

    name: str          # "funk/12": stable (module docstring)
    style: str         # "funk"
    substyle: str      # what follows the slash in the dataset's style ("purdieshuffle"), or ""
    bpm: int
    kind: str          # "beat" or "fill"
    meter: str         # "4/4"
    seconds: float
    drummer: str
    split: str         # the dataset's train/validation/test split
    path: Path         # the MIDI file
    source: str        # the file's path in the dataset (its provenance)


def read_library(folder) -> list[Groove]:
    """The grooves listed in ``folder/info.csv`` (the dataset's own, or the shipped subset's)."""
    folder = Path(folder)
    try:
        with open(folder / INDEX, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise GrooveError(f"{folder / INDEX}: cannot be read ({e.strerror or e})") from None
    need = {"style", "bpm", "beat_type", "time_signature", "midi_filename", "duration"}
    if not rows or not need <= set(rows[0]):
        raise GrooveError(f"{folder / INDEX}: not a Groove MIDI Dataset index (needs {', '.join(sorted(need))})")
    counts: dict[str, int] = {}
    out = []
    for r in rows:
        style, _, sub = r["style"].partition("/")
        counts[style] = counts.get(style, 0) + 1
        out.append(Groove(
            name=r.get("name") or f"{style}/{counts[style]}", style=style, substyle=sub,
            bpm=int(float(r["bpm"])), kind=r["beat_type"], meter=r["time_signature"].replace("-", "/"),
            seconds=float(r["duration"]), drummer=r.get("drummer", ""), split=r.get("split", ""),
            path=folder / r["midi_filename"], source=r.get("source") or r["midi_filename"]))
    return out


def library(gmd=None) -> tuple[list[Groove], str]:
    """Every groove at hand, and where from: ``"dataset"`` (at ``gmd`` or its default) or ``"shipped"``.

    An explicit ``gmd`` that holds no dataset is an error; the default
    place without one falls back to the shipped subset.
    """
    root = paths.gmd_dir(gmd)
    if (root / INDEX).is_file():
        return read_library(root), "dataset"
    if gmd is not None and Path(gmd).exists() and not Path(gmd).is_dir():
        raise GrooveError(f"{gmd}: not a folder (the Groove MIDI Dataset folder holds info.csv)")
    return read_library(SHIPPED_DIR), "shipped"


def parse_bpm(text) -> tuple[float, float]:
    """A tempo range from ``"90-110"`` or ``"96"``.

    >>> parse_bpm("90-110"), parse_bpm("96")
    ((90.0, 110.0), (96.0, 96.0))
    """
    lo, sep, hi = str(text).partition("-")
    try:
        lo_f = float(lo)
        hi_f = float(hi) if sep else lo_f
    except ValueError:
        raise GrooveError(f"--bpm {text}: expected a tempo or a range, e.g. 96 or 90-110") from None
    if not 0 < lo_f <= hi_f:
        raise GrooveError(f"--bpm {text}: expected a tempo or a range, e.g. 96 or 90-110")
    return lo_f, hi_f


def find(grooves, *, style: str | None = None, bpm=None, meter: str | None = None,
         kind: str | None = "beat") -> list[Groove]:
    """The grooves of a style, a tempo range (``(lo, hi)`` or ``"90-110"``), a meter (``"4/4"``) and kind,
    by style and number.

    >>> g = Groove("rock/1", "rock", "", 100, "beat", "4/4", 30.0, "drummer1", "train", Path("r.mid"), "r.mid")
    >>> len(find([g], style="Rock", bpm="90-110", meter="4-4")), len(find([g], bpm=(120, 140)))
    (1, 0)
    """
    lo, hi = parse_bpm(bpm) if isinstance(bpm, str) else (bpm or (0, float("inf")))
    meter = meter.replace("-", "/") if meter else None
    found = [g for g in grooves
             if (style is None or g.style == style.lower()) and lo <= g.bpm <= hi
             and (meter is None or g.meter == meter) and (kind is None or g.kind == kind)]
    return sorted(found, key=_order)


def _order(g: Groove) -> tuple[str, int]:
    return g.style, int(g.name.rpartition("/")[2])


def groove_path(name: str, gmd=None) -> Path:
    """The MIDI file of the groove ``name`` (``"funk/12"``).

    Raises
    ------
    GrooveError
        An unknown name, in one line that says what the library holds.
    """
    key = str(name).strip().lower()
    if not key.rpartition("/")[2].isdigit():
        raise GrooveError(f"groove {name}: a groove is named STYLE/N, e.g. funk/12; "
                          "rolypoly grooves list shows them")
    grooves, where = library(gmd)
    for g in grooves:
        if g.name == key:
            if not g.path.is_file():
                raise GrooveError(f"groove {name}: its file {g.path} is missing")
            return g.path
    styles = sorted({g.style for g in grooves})
    hint = "" if where == "dataset" else " (the shipped subset; the whole Groove MIDI Dataset with --gmd DIR)"
    raise GrooveError(f"groove {name}: not in the library{hint}; styles: {', '.join(styles)}; "
                      "rolypoly grooves list shows them")


def session_name(name: str) -> str:
    """The default session of a groove: ``funk/12`` plays in ``funk-12``.

    >>> session_name("funk/12")
    'funk-12'
    """
    return str(name).strip().lower().replace("/", "-")


def choose_subset(grooves) -> list[Groove]:
    """The beats the shipped subset holds, chosen from the whole dataset by rule.

    Beats (not fills) of :data:`SUBSET_SECONDS`; per style, in 4/4 up to
    :data:`SUBSET_PER_STYLE` spread over its tempi (slowest, middle,
    fastest), and in every other meter up to :data:`SUBSET_PER_OTHER_METER`
    (the middle tempo). Ties go to the earlier name, so the same dataset
    always gives the same subset.
    """
    pool = [g for g in grooves if g.kind == "beat" and SUBSET_SECONDS[0] <= g.seconds <= SUBSET_SECONDS[1]]
    chosen = []
    for style in sorted({g.style for g in pool}):
        for meter in sorted({g.meter for g in pool if g.style == style}):
            these = sorted((g for g in pool if g.style == style and g.meter == meter),
                           key=lambda g: (g.bpm, _order(g)))
            n = SUBSET_PER_STYLE if meter == "4/4" else SUBSET_PER_OTHER_METER
            picks = [len(these) // 2] if n == 1 else sorted({0, len(these) // 2, len(these) - 1})[:n]
            chosen += [these[i] for i in picks]
    return sorted(chosen, key=_order)


def make_subset(gmd, out=SHIPPED_DIR) -> list[Groove]:
    """Write the shipped subset (:func:`choose_subset`) from the dataset at ``gmd`` into ``out``.

    The MIDI files are copied byte for byte as ``STYLE-N.mid``; ``out/info.csv``
    has the dataset's columns for them plus ``name`` and ``source`` (the file's
    path in the dataset); ``out/ATTRIBUTION.md`` credits the dataset. Files of
    an earlier subset in ``out`` are removed.
    """
    root = paths.gmd_dir(gmd)
    if not (root / INDEX).is_file():
        raise GrooveError(f"{root}: no Groove MIDI Dataset here (info.csv missing); pass --gmd DIR")
    with open(root / INDEX, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    chosen = choose_subset(read_library(root))
    by_source = {r["midi_filename"]: r for r in rows}
    size = sum(g.path.stat().st_size for g in chosen)
    if size > SUBSET_MAX_BYTES:
        raise GrooveError(f"the subset would take {size} bytes, over {SUBSET_MAX_BYTES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.mid"):
        old.unlink()
    keep = [c for c in columns if c != "audio_filename"]  # the audio is not shipped
    with open(out / INDEX, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", *keep, "source"], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for g in chosen:
            file = f"{session_name(g.name)}.mid"
            shutil.copyfile(g.path, out / file)
            w.writerow({**by_source[g.source], "name": g.name, "midi_filename": file, "source": g.source})
    (out / ATTRIBUTION_FILE).write_text(attribution_text(len(chosen)))
    return read_library(out)


def attribution_text(n: int) -> str:
    """The shipped subset's ATTRIBUTION.md."""
    return f"""# Attribution: the Groove MIDI Dataset

The {n} MIDI files in this folder are takes of the Groove MIDI Dataset (version 1.0.0),
copied unchanged and renamed `STYLE-N.mid` (the take's name in rolypoly, `STYLE/N`);
`info.csv` lists them with the dataset's own columns and `source`, each file's path
in the dataset. They were chosen by rule, not by hand, with
`rolypoly grooves subset --gmd DIR --out rolypoly/data/grooves`
(`rolypoly.grooves.choose_subset`).

{ATTRIBUTION}.

Jon Gillick, Adam Roberts, Jesse Engel, Douglas Eck, David Bamman. "Learning to Groove
with Inverse Sequence Transformations." International Conference on Machine Learning
(ICML), 2019.

The dataset is licensed under the Creative Commons Attribution 4.0 International
License. To view a copy of this license, visit http://creativecommons.org/licenses/by/4.0/
or send a letter to Creative Commons, PO Box 1866, Mountain View, CA 94042, USA.
"""
