"""Fetch the Groove MIDI Dataset (MIDI-only archive) for users without a copy.

The official archive is downloaded, its size and SHA-256 checked against the
published values, and only then unpacked::

    rolypoly data gmd --download ~/datasets

gives ``~/datasets/groove/info.csv`` and the MIDI files. An archive whose
checksum does not match is deleted and nothing is unpacked.
"""
from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

from rolypoly.errors import DatasetError

GMD_URL = "https://storage.googleapis.com/magentadata/datasets/groove/groove-v1.0.0-midionly.zip"
#: Published by TensorFlow Datasets for this exact file (url_checksums/groove.txt).
GMD_SHA256 = "651cbc524ffb891be1a3e46d89dc82a1cecb09a57c748c7b45b844c4841dcc1e"
GMD_SIZE = 3_260_318
CHUNK = 1 << 16


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (through a ``.part`` file), with a progress bar."""
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      file=sys.stderr) as bar:
                for block in iter(lambda: r.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise DatasetError(f"{url}: download failed ({getattr(e, 'reason', None) or e})") from None
    os.replace(part, dest)
    return dest


def verify(archive: Path, sha256: str, size: int | None) -> None:
    """Refuse an archive whose size or SHA-256 differ from the published ones."""
    actual_size = archive.stat().st_size
    if size is not None and actual_size != size:
        raise DatasetError(f"{archive}: size {actual_size} bytes, expected {size}: refusing a "
                           "damaged or different archive")
    digest = sha256_of(archive)
    if digest != sha256:
        raise DatasetError(f"{archive}: SHA-256 {digest[:16]}… does not match the published "
                           f"{sha256[:16]}…: refusing a damaged or different archive")


def extract(archive: Path, dest: Path) -> Path:
    """Unpack the archive into ``dest``; returns the folder holding ``info.csv``."""
    try:
        with zipfile.ZipFile(archive) as z:
            root = dest.resolve()
            for name in z.namelist():
                target = (dest / name).resolve()
                if root not in target.parents and target != root:
                    raise DatasetError(f"{archive}: member {name!r} would unpack outside {dest}")
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{archive}: not a zip archive ({e})") from None
    found = sorted(dest.glob("**/info.csv"), key=lambda p: len(p.parts))
    if not found:
        raise DatasetError(f"{archive}: no info.csv inside: not the Groove MIDI Dataset")
    return found[0].parent


def download_gmd(dest, *, url: str = GMD_URL, sha256: str = GMD_SHA256, size: int | None = GMD_SIZE,
                 progress: bool = True) -> Path:
    """Download, verify and unpack the dataset into ``dest``; returns its folder.

    Examples
    --------
    >>> download_gmd("~/datasets")   # doctest: +SKIP
    PosixPath('/home/me/datasets/groove')
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(url.split("?")[0]).name
    if not archive.is_file():
        fetch(url, archive, progress=progress)
    try:
        verify(archive, sha256, size)
    except DatasetError:
        archive.unlink(missing_ok=True)  # never leave a bad archive to be trusted next time
        raise
    folder = extract(archive, dest)
    return folder

