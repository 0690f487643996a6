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
