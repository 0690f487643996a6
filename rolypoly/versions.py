"""Model versions of a session: every agent the session has played or learnt, none ever overwritten.

A session's ``models/`` folder holds one numbered folder per version::

    models/000/   weights.safetensors  version.json   the pretrained agent the session started from
    models/001/   ...                                   the first fine-tune, and so on

``version.json`` says where a version came from (status ``start``,
``accepted`` or ``refused``; parent version; the take it learnt from; the
learning settings and figures) and the SHA-256 of its weights. A version
whose weights no longer load, or no longer match that hash, is unusable:
:meth:`ModelVersions.usable` falls back to the last good version before it.
Which version the session plays is the session's choice
(``session.json``, :class:`rolypoly.session.Session`), not this registry's.

Examples
--------
>>> import tempfile
>>> versions = ModelVersions(tempfile.mkdtemp())
>>> versions.create_start("lstm")
0
>>> versions.check(0) is None, versions.records()[0]["status"]
(True, 'start')
>>> versions.usable(0)
(0, [])
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
from pathlib import Path

from .errors import CheckpointError

# The agents (and torch) are imported where a version's weights are read or written, not here:
# opening a session to read its score or settings must not pay for torch.
from .jsonfile import JsonFileError, finite, read_json, write_json

MODELS = "models"
WEIGHTS_FILE = "weights.safetensors"
VERSION_FILE = "version.json"
#: Statuses of versions the session may play.
PLAYABLE = ("start", "accepted", "reverted")


def now() -> str:
    """The time, as session and version records store it."""
    return _dt.datetime.now().isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def numbered(folder: Path) -> list[int]:
    """The numbers of the ``NNN`` sub-folders of ``folder``, sorted (none: empty)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


class ModelVersions:
    """The ``models/`` folder of a session (see the module docstring)."""

    def __init__(self, session_folder):
        self.folder = Path(session_folder) / MODELS

    def dir(self, k: int) -> Path:
        return self.folder / f"{int(k):03d}"

    def weights(self, k: int) -> Path:
        return self.dir(k) / WEIGHTS_FILE

    def numbers(self) -> list[int]:
        return numbered(self.folder)

    def records(self) -> list[dict]:
        """Every version's record (``version.json``), oldest first; unreadable ones flagged ``broken``."""
        out = []
        for k in self.numbers():
            try:
                rec = read_json(self.dir(k) / VERSION_FILE)
            except JsonFileError as e:
                rec = {"status": "broken", "problem": str(e)}
            rec["version"] = k
            out.append(rec)
        return out

    def check(self, k: int) -> str | None:
        """What is wrong with version k, or None when it can be played."""
        folder = self.dir(k)
        try:
            rec = read_json(folder / VERSION_FILE)
        except JsonFileError:
            return f"{folder / VERSION_FILE}: missing or unreadable"
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            return f"{weights}: missing"
        if rec.get("sha256") and sha256_of(weights) != rec["sha256"]:
            return f"{weights}: corrupted (its SHA-256 no longer matches the one recorded)"
        from .agents import load_agent

        try:
            load_agent(weights)
        except CheckpointError as e:
            return str(e)
        return None

    def create_start(self, kind: str = "lstm", weights=None) -> int:
        """Version 000: a copy of the pretrained agent (``weights``, else the shipped ``kind``)."""
        if self.dir(0).is_dir():
            return 0
        from .agents import default_weights, load_agent

        src = Path(weights or default_weights(kind))
        agent = load_agent(src)  # refuses pickles and broken files before anything is written
        folder = self.dir(0)
        folder.mkdir(parents=True)
        shutil.copyfile(src, folder / WEIGHTS_FILE)
        write_json(folder / VERSION_FILE, {"version": 0, "status": "start", "kind": agent.kind, "from": str(src),
                                           "sha256": sha256_of(folder / WEIGHTS_FILE), "created": now()})
        return 0

    def write(self, agent, record: dict, metadata: dict | None = None) -> int:
        """A new version from ``agent`` with ``record`` (status, parent, take, figures); its number."""
        from .agents import save_agent

        k = (self.numbers() or [-1])[-1] + 1
        folder = self.dir(k)
        folder.mkdir(parents=True)  # never an existing one: versions are never overwritten
        save_agent(agent, folder / WEIGHTS_FILE, metadata={**(metadata or {}), "version": k})
        # Figures that are not numbers (an infinite margin: no refusal) are stored as null.
        write_json(folder / VERSION_FILE, finite({"version": k, **record, "sha256": sha256_of(folder / WEIGHTS_FILE),
                                                  "created": now()}))
        return k

    def usable(self, wanted: int) -> tuple[int | None, list[str]]:
        """``wanted`` if it can be played, else the last good version before it; and what was skipped."""
        warnings = []
        good = [r["version"] for r in self.records() if r.get("status") in PLAYABLE]
        for k in [int(wanted)] + [k for k in reversed(good) if k < int(wanted)]:
            problem = self.check(k)
            if problem is None:
                if k != int(wanted):
                    warnings.append(f"{self.folder.parent}: falling back to model version {k}")
                return k, warnings
            warnings.append(f"model version {k} unusable: {problem}")
        return None, warnings + [f"{self.folder.parent}: no usable model version left"]

    def load(self, k: int):
        from .agents import load_agent

        return load_agent(self.weights(k))
