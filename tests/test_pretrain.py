"""GMD pipeline, pretraining, evaluation, humanizing and the dataset download path."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rolypoly import paths
from rolypoly.pretrain import gmd
from rolypoly.pretrain.download import download_gmd
from rolypoly.agents import AGENT_KINDS, default_weights, load_agent
from rolypoly.errors import DatasetError
from rolypoly.score import load_score

ROOT = Path(__file__).resolve().parents[1]
needs_gmd = pytest.mark.skipif(not (paths.gmd_dir() / "info.csv").is_file(),
                               reason=f"Groove MIDI Dataset not at {paths.gmd_dir()}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLYPOLY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _rolypoly(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "rolypoly.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


# ----------------------------------------------------------------------------- pipeline

@needs_gmd
def test_split_labels_are_grid_residuals(cache):
    data = gmd.load_split("test", limit=6)
    assert data.X.shape == (len(data.y), 15)
    assert np.all(data.X[:, 13:] == 0), "drums-only data has no partner features"
    # A residual from the nearest of 24 steps is at most half a step.
    assert np.abs(data.y).max() <= 1 / 48 + 1e-6
    assert 0 < np.abs(data.y).mean() < 1 / 96
    # Rows match the score parsed directly.
    first = load_score(paths.gmd_dir() / data.names[0])
    np.testing.assert_allclose(data.y[data.take(0)], first.played_offset, atol=1e-7)


@needs_gmd
def test_pruning_drops_short_takes(cache):
    entries = [e for e in gmd.read_index(None) if e["split"] == "test"]
    data = gmd.load_split("test")
    assert len(data) < len(entries)
    for name in data.names[:20]:
        s = load_score(paths.gmd_dir() / name)
        assert s.n_bars >= 2 and s.onset_s[-1] + s.duration_ms[-1] / 1000 > 1.0


@needs_gmd
def test_cache_is_keyed_by_sources_and_settings(cache, monkeypatch):
    a = gmd.load_split("validation", limit=3)
    files = list(cache.glob("gmd-validation-*.npz"))
    assert len(files) == 1
    again = gmd.load_split("validation", limit=3)
    assert again.key == a.key and np.array_equal(again.y, a.y)
    # Other settings: another key, another file; the old cache is not used.
    monkeypatch.setattr(gmd, "MIN_TAKE_BARS", 3)
    b = gmd.load_split("validation", limit=3)
    assert b.key != a.key
    assert len(list(cache.glob("gmd-validation-*.npz"))) == 2
    # A cache whose stored key does not match its name is rebuilt, not trusted.
    with np.load(files[0]) as z:
        doctored = {k: z[k] for k in z.files}
    doctored["key"] = np.array("something else")
    doctored["y"] = doctored["y"] + 1
    np.savez(files[0], **doctored)
    monkeypatch.setattr(gmd, "MIN_TAKE_BARS", 2)
    c = gmd.load_split("validation", limit=3)
    np.testing.assert_array_equal(c.y, a.y)


def test_missing_dataset_is_one_clear_line(tmp_path):
    with pytest.raises(DatasetError) as e:
        gmd.load_split("train", tmp_path)
    assert str(tmp_path) in str(e.value) and "rolypoly data gmd --download" in str(e.value)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- training

@needs_gmd
@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_smoke_pretraining_writes_weights_metadata_and_curve(kind, tmp_path, cache):
    # --out wins over $ROLYPOLY_WEIGHTS; without --out the weights go there (never into the package).
    out = ["--out", str(tmp_path)] if kind == "lstm" else []
    weights_env = str(tmp_path / "not-here") if out else str(tmp_path)
    r = _rolypoly("pretrain", "timing", "--agent", kind, "--epochs", "1", "--limit", "6", *out, "--quiet",
                  env={"ROLYPOLY_CACHE": str(cache), "ROLYPOLY_WEIGHTS": weights_env})
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["agent"] == kind and summary["out"] == str(tmp_path)
    assert not (tmp_path / "not-here").exists()
    meta = json.loads((tmp_path / f"timing_{kind}.json").read_text())
    assert meta["settings"]["lr"] == 1e-3 and len(meta["epochs"]) == 1
    assert meta["data"]["train_key"] and meta["validation"]["mse_bar"] > 0
    assert (tmp_path / f"timing_{kind}.png").stat().st_size > 1000
    agent = load_agent(tmp_path / f"timing_{kind}.safetensors")
    assert agent.kind == kind
    # The normalisation travelled with the weights.
    assert float(agent.feature_scale[9]) != 1.0


@needs_gmd
def test_training_is_repeatable_with_fixed_seeds(tmp_path, cache):
    from rolypoly.pretrain.train_timing import train

    a = train("lstm", epochs=1, out=tmp_path / "a", limit=4, progress=False, batch=4, window=64)
    b = train("lstm", epochs=1, out=tmp_path / "b", limit=4, progress=False, batch=4, window=64)
    assert a["epochs"][0]["train_mse_bar"] == b["epochs"][0]["train_mse_bar"]
    wa = load_agent(tmp_path / "a" / "timing_lstm.safetensors").state_dict()
    wb = load_agent(tmp_path / "b" / "timing_lstm.safetensors").state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


@needs_gmd
@pytest.mark.slow
def test_ddp_two_processes(tmp_path, cache):
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "rolypoly.cli", "pretrain", "timing", "--agent", "lstm", "--epochs", "1", "--limit", "6",
           "--out", str(tmp_path), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "ROLYPOLY_CACHE": str(cache), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-6000:]
    meta = json.loads((tmp_path / "timing_lstm.json").read_text())
    assert meta["settings"]["processes"] == 2
    load_agent(tmp_path / "timing_lstm.safetensors")


# ----------------------------------------------------------------------------- shipped weights

@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_shipped_weights_load_with_metadata(kind):
    path = default_weights(kind)
    agent = load_agent(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["agent"] == kind and meta["data"]["limit"] is None, "shipped weights use the full split"
    assert agent.config() == meta["config"]


def test_shipped_weights_are_small():
    total = sum(default_weights(k).stat().st_size for k in AGENT_KINDS)
    assert total < 20 * 2 ** 20


@needs_gmd
def test_evaluation_on_test_split_beats_baseline(tmp_path, cache):
    out = tmp_path / "eval.json"
    # The first 40 takes of the test split (the figures of record come from the command on all of it).
    r = _rolypoly("evaluate", "timing", "--split", "test", "--limit", "40", "--json", str(out),
                  env={"ROLYPOLY_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert set(result) >= {"rows", "baseline", "lstm", "seq2seq"}
    assert result["rows"] > 5_000
    for kind in AGENT_KINDS:
        assert set(result[kind]) >= {"mse_bar", "mse_16th", "mae_ms"}
    base = result["baseline"]["mse_bar"]
    assert result["lstm"]["mse_bar"] <= 0.80 * base
    assert result["seq2seq"]["mse_bar"] <= 0.72 * base


# ----------------------------------------------------------------------------- humanize

def test_humanize_round_trip_keeps_notes_and_moves_timing(tmp_path):
    from rolypoly.demo import DEMO_SCORE

    out = tmp_path / "human.mid"
    r = _rolypoly("humanize", str(DEMO_SCORE), "-o", str(out), "--agent", "seq2seq",
                  "--plot", str(tmp_path / "h.png"))
    assert r.returncode == 0, r.stderr
    before, after = load_score(DEMO_SCORE), load_score(out)
    assert len(after) == len(before)
    np.testing.assert_array_equal(after.hits, before.hits)
    np.testing.assert_array_equal(after.velocities, before.velocities)
    assert after.tempo_map.tempi == before.tempo_map.tempi
    assert after.tempo_map.meters == before.tempo_map.meters
    agent = load_agent(default_weights("seq2seq"))
    from rolypoly.humanize import humanize
    expected = humanize(before, agent)
    # Nothing can sound before the file starts: a first hit pushed early stays at tick 0.
    expected = np.maximum(expected, -before.tick / before.bar_ticks)
    # Written offsets are the agent's, within tick rounding (half a tick of the bar).
    np.testing.assert_allclose(after.played_offset, expected, atol=0.6 / before.bar_ticks.min())
    assert np.abs(expected).max() > 1e-4, "the agent moved nothing"
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_humanize_refuses_pickled_weights(tmp_path):
    import torch

    bad = tmp_path / "agent.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    from rolypoly.demo import DEMO_SCORE
    r = _rolypoly("humanize", str(DEMO_SCORE), "-o", str(tmp_path / "x.mid"), "--weights", str(bad))
    assert r.returncode == 2
    assert "pickled" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- download

def _archive(tmp_path, corrupt=False) -> tuple[Path, str]:
    """A small archive laid out like the official one: groove/info.csv and MIDI files."""
    zpath = tmp_path / "groove-v1.0.0-midionly.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("groove/info.csv", "drummer,session,id,style,bpm,beat_type,time_signature,"
                   "midi_filename,audio_filename,duration,split\n"
                   "drummer1,s,1,funk,120,beat,4-4,drummer1/a.mid,,10,test\n")
        from rolypoly.demo import DEMO_SCORE
        z.write(DEMO_SCORE, "groove/drummer1/a.mid")
    digest = hashlib.sha256(zpath.read_bytes()).hexdigest()
    if corrupt:
        data = bytearray(zpath.read_bytes())
        data[40] ^= 0xFF
        zpath.write_bytes(bytes(data))
    return zpath, digest


def test_download_verifies_and_extracts(tmp_path):
    zpath, digest = _archive(tmp_path)
    dest = tmp_path / "data"
    folder = download_gmd(dest, url=zpath.as_uri(), sha256=digest, size=None, progress=False)
    assert (folder / "info.csv").is_file()
    data = gmd.load_split("test", folder, use_cache=False)
    assert data.names == ["drummer1/a.mid"]


def test_download_refuses_bad_checksum_and_unpacks_nothing(tmp_path):
    zpath, digest = _archive(tmp_path, corrupt=True)
    dest = tmp_path / "data"
    with pytest.raises(DatasetError, match="does not match"):
        download_gmd(dest, url=zpath.as_uri(), sha256=digest, size=None, progress=False)
    assert not (dest / "groove").exists()
    assert not list(dest.glob("*.zip")), "a refused archive must not stay to be trusted later"


def test_download_command_reports_unreachable_source(tmp_path):
    r = _rolypoly("data", "gmd", "--download", str(tmp_path), "--url", (tmp_path / "nothing.zip").as_uri())
    assert r.returncode == 2
    assert "download failed" in r.stderr and "Traceback" not in r.stderr
