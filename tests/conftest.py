"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The Groove MIDI Dataset of this workplace sits beside the checkout; a user's is wherever
# $ROLYPOLY_GMD (or --gmd) says. Set before any test module is imported.
os.environ.setdefault("ROLYPOLY_GMD", str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "groove"))

from rolypoly.realtime.jack import JackServer, jack_available, server_running
from rolypoly.errors import DeviceError


@pytest.fixture(scope="session")
def jack_server():
    """A JACK server on the dummy backend (48 kHz, 64 frames) for the session.

    Reuses the server named by ``$JACK_DEFAULT_SERVER`` when that one runs,
    otherwise starts one of its own, ``rolypoly-test-N`` with the first free N
    (parallel test runs never share one), and stops it at the end. While it
    runs, rtmidi, PortAudio and the ``jack_*`` tools in this process reach it.
    Skips with "JACK not available: ..." where jackd is missing or cannot start.
    """
    ok, reason = jack_available()
    if not ok:
        pytest.skip(f"JACK not available: {reason}")
    wanted = os.environ.get("JACK_DEFAULT_SERVER")
    try:
        if wanted and server_running(wanted):
            server = JackServer(wanted).start()
        else:
            server = JackServer.private("rolypoly-test")
    except DeviceError as exc:
        pytest.skip(f"JACK not available: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def played_session(tmp_path_factory):
    """A session folder with one take on the simulated clock, and its score: ``(folder, song)``.

    Shared by the whole run: tests that change it take a :func:`fresh_session` copy.
    """
    from rolypoly.lab.experiments import straight_eighths
    from rolypoly.lab.virtual_partner import VirtualPartner
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.engine import EngineSettings
    from rolypoly.score import write_midi
    from rolypoly.session import Session

    root = tmp_path_factory.mktemp("played")
    song = root / "eighths.mid"
    write_midi(straight_eighths(bars=4, bpm=120), song)
    folder = root / "s"
    score = Session.open(folder, song).score()
    partner = VirtualPartner(score, classes=["closed_hihat"], partner_offset_s=0.3, offset_ms=15, jitter_ms=3, seed=1)
    play_take(song, partner, SimClock(), session=folder, mix=False, plot=False,
              settings=EngineSettings(partner_offset_s=0.3))
    return folder, song


@pytest.fixture
def fresh_session(played_session, tmp_path):
    """A writable copy of :func:`played_session`'s folder (takes are written read-only)."""
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(played_session[0], folder)
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return folder
