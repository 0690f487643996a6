"""Installable: the wheel carries what the commands need and runs from any folder, writing nothing into itself.

The wheel is built from the files a checkout has (a copy of what the build
reads, so the checkout itself gets no build folders), installed into a new
virtual environment (PyTorch 2.13.0 first, the CPU build, as the Makefile
does), and run from another folder: the quick demo and the groove list
without the dataset. Then no file in the environment's site-packages may
have been added or changed.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the build reads: pyproject.toml names these (packages, readme, licence files).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "rolypoly", "realtime", "pretrain", "lab")
TORCH = "torch==2.13.0"
MINUTES = 60


def _torch_wheel_at_hand() -> str | None:
    """A torch 2.13.0 wheel in pip's find-links folders ($PIP_FIND_LINKS or pip's configuration), or None."""
    places = os.environ.get("PIP_FIND_LINKS", "").split()
    r = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    places += [v.strip("'\"") for line in r.stdout.splitlines() if "find-links" in line
               for v in line.split("=", 1)[1].split()]
    for place in places:
        folder = Path(place.removeprefix("file://"))
        if folder.is_dir() and any(folder.glob("torch-2.13.0*.whl")):
            return str(folder)
    return None


def _build_isolation() -> list[str]:
    """``--no-build-isolation`` when this interpreter has the build back-end pyproject.toml asks for.

    The build then uses it instead of installing setuptools into a throw-away environment first
    (10 of the test's seconds); the wheel is the same.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 77 else []  # pyproject.toml: setuptools>=77


def _registry_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _run(argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    if _torch_wheel_at_hand() is None and not _registry_reachable():
        pytest.skip("cannot build the wheel's environment here: no network and no torch 2.13.0 wheel in "
                    "pip's find-links folders")
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.pyc")}
                                        if (ROOT / name).is_dir() else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}
    _run([*pip, "wheel", "--no-deps", *_build_isolation(), "-w", str(tmp_path / "dist"), str(src)], env=quiet,
         timeout=5 * MINUTES)
    wheel, = (tmp_path / "dist").glob("rolypoly-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=MINUTES)
    python = venv / "bin" / "python"
    # Into the new environment with this pip (the environment has none of its own: nothing to upgrade).
    # No byte-compiling: the commands below run with PYTHONDONTWRITEBYTECODE, so the check that nothing
    # is written into site-packages is about rolypoly's own files, not Python's caches.
    into = [*pip, "--python", str(python), "install", "--no-compile"]
    _run([*into, TORCH], env=quiet, timeout=10 * MINUTES)
    _run([*into, str(wheel)], env=quiet, timeout=10 * MINUTES)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    assert (site / "rolypoly" / "data" / "demo_partner.flac").is_file()
    assert list(site.glob("rolypoly-*.dist-info/licenses/LICENSE"))
    before = _files(site)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLYPOLY_")}
    env.update(PYTHONDONTWRITEBYTECODE="1", MPLCONFIGDIR=str(tmp_path / "mpl"), HOME=str(tmp_path / "home"),
               ROLYPOLY_GMD=str(tmp_path / "no-dataset"))
    rolypoly = str(venv / "bin" / "rolypoly")
    demo = _run([rolypoly, "demo", "--quick"], cwd=work, env=env, timeout=5 * MINUTES)
    assert "simulated again (model version 1)" in demo.stdout, demo.stdout
    assert (work / "demo-output" / "demo-session" / "takes" / "001" / "take.jsonl").is_file()
    grooves = _run([rolypoly, "grooves", "list"], cwd=work, env=env, timeout=MINUTES)
    assert "shipped with rolypoly" in grooves.stdout and "CC BY 4.0" in grooves.stdout
    assert len([line for line in grooves.stdout.splitlines() if " beat " in line]) >= 40

    after = _files(site)
    assert sorted(set(after) - set(before)) == [], "files written into site-packages"
    assert sorted(k for k in before if after.get(k) != before[k]) == [], "files changed in site-packages"
