"""Small C kernels compiled on the user's machine and loaded with ctypes.

Two parts of rolypoly must do fixed, bounded work many times a second
without the Python interpreter in the way: the JACK process callback
(``realtime/rtcore.c``) and the onset detector's per-hop kernel
(``rolypoly/onsets_core.c``). Each is one plain C file without headers
beyond libc and libm. It is compiled once per version of its text, with the
system's C compiler (``$CC``, else cc or gcc; ``cc -O2 -shared -fPIC``, or the
flags the caller asks for), into
the cache folder (:func:`rolypoly.paths.cache_dir`), or the temporary folder
where that is read-only; gcc is among the Debian packages ``make``
installs.

>>> from pathlib import Path
>>> library_path(Path("kernel.c"), b"int f(void) { return 1; }").name.startswith("kernel-")
True
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from rolypoly.errors import RolypolyError

__all__ = ["compiler", "library_path", "build", "load_library"]

_loaded: dict = {}


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else cc or gcc on PATH (None: there is none)."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc")


def library_path(source: Path, text: bytes | None = None, flags: tuple = ("-O2",)) -> Path:
    """Where the compiled library of this source text (and compiler flags) lives (in the cache folder)."""
    from rolypoly.paths import cache_dir

    text = Path(source).read_bytes() if text is None else text
    digest = hashlib.sha256(text + " ".join(flags).encode()).hexdigest()[:16]
    return cache_dir() / f"{Path(source).stem}-{digest}-{platform.machine()}.so"


def build(source: Path, target: Path, what: str, error=RolypolyError, flags: tuple = ("-O2",)) -> Path:
    """Compile ``source`` with ``flags`` into the shared library ``target``; returns the path.

    Raises
    ------
    error
        No C compiler, or it failed (the message names ``what`` and has the
        compiler's first error line).
    """
    target = Path(target)
    cc = compiler()
    if cc is None:
        raise error(f"{what} needs a C compiler: install gcc (apt-get install gcc)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:
            res = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, str(source), "-lm"],
                                 capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise error(f"cannot build {what} with {cc}: {exc}") from None
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).splitlines() if "error" in ln] or \
                (res.stderr or res.stdout).splitlines() or ["no message"]
            raise error(f"cannot build {what} with {cc}: {lines[0].strip()}")
        os.replace(tmp, target)  # atomic: a parallel build never leaves half a library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_library(source: Path, what: str, error=RolypolyError, flags: tuple = ("-O2",)) -> ctypes.CDLL:
    """The compiled ``source`` (built first if needed), loaded once per process.

    Raises
    ------
    error
        It cannot be built or loaded (one line naming ``what``).
    """
    source = Path(source)
    path = library_path(source, flags=flags)
    if path in _loaded:
        return _loaded[path]
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writable = os.access(path.parent, os.W_OK)
        except OSError:
            writable = False
        if not writable:  # a read-only home: build beside the other temporary files
            path = Path(tempfile.gettempdir()) / path.name
        if not path.is_file():
            build(source, path, what, error, flags)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise error(f"cannot load {what} {path}: {exc}") from None
    _loaded[library_path(source, flags=flags)] = lib
    return lib
