"""Groove generators (issue 5): the H/V/O grid, GMD windows, the models and their tools."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rolypoly import paths
from rolypoly.drum_map import class_of_pitch
from rolypoly.errors import CheckpointError, ScoreError
from rolypoly.groove_grid import (GRIDS, groove_from_notes, read_groove, stitch, window_bounds, windows,
                                  write_groove)
from rolypoly.groove_model import (GROOVE_TASKS, TAP_CLASS, GrooveEnsemble, GrooveModel, load_groove_model,
                                   save_groove_model, tap, task_input, task_target_mask, VELOCITY_LEVELS)
from rolypoly.score import TempoMap, read_drum_notes

from .midi_factory import TPB, write_drum_midi

ROOT = Path(__file__).resolve().parents[1]
needs_gmd = pytest.mark.skipif(not (paths.gmd_dir() / "info.csv").is_file(),
                               reason=f"Groove MIDI Dataset not at {paths.gmd_dir()}")
KICK, SNARE, HAT = 36, 38, 42
SIXTEENTH = TPB // 4
TINY = dict(encoder_hidden=16, z_size=8, decoder_hidden=16, layers=2, dropout=0.0)


def _rolypoly(capsys, *args):
    """Run the command line in this process (fast); returns (status, stdout, stderr)."""
    from rolypoly.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _human_beat(bars: int, rng, bar_ticks: int = 4 * TPB):
    """(tick, pitch, velocity) of a played rock beat: hats on 8ths, kick 1 and 3, snare 2 and 4."""
    notes = []
    for b in range(bars):
        for k in range(8):
            notes.append((b * bar_ticks + k * 2 * SIXTEENTH, HAT, int(rng.integers(40, 110))))
        notes += [(b * bar_ticks, KICK, 100), (b * bar_ticks + 2 * TPB, KICK, 90),
                  (b * bar_ticks + TPB, SNARE, 110), (b * bar_ticks + 3 * TPB, SNARE, 105)]
    # Played timing: up to 0.45 of a 16th either way, never before the start of the piece.
    return [(max(0, t + int(rng.integers(-54, 55))) if t else t, p, v) for t, p, v in notes]


def _as_classes(notes):
    return sorted((t, class_of_pitch(p), v) for t, p, v in notes)


# ----------------------------------------------------------------------------- representation

def test_midi_windows_midi_round_trip_keeps_every_hit(tmp_path):
    rng = np.random.default_rng(0)
    played = _human_beat(5, rng)
    src = write_drum_midi(tmp_path / "in.mid", played, tempi=[(0, 96.0), (2 * 4 * TPB, 120.0)])
    groove = read_groove(src)
    assert groove.n_bars == 5 and len(groove) == 80
    H, V, O = windows(groove)
    assert H.shape == (4, 32, 9) and np.abs(O).max() <= 0.5
    rebuilt = groove.with_parts(*stitch(H, V, O, groove.bar_starts))
    write_groove(rebuilt, tmp_path / "out.mid")
    got, tmap, _ = read_drum_notes(tmp_path / "out.mid")
    want = np.array(_as_classes(played), dtype=float)
    got = got[np.lexsort((got[:, 1], got[:, 0]))]
    assert len(got) == len(want)
    assert np.abs(got[:, 0] - want[:, 0]).max() <= 1, "timing kept within a tick"
    np.testing.assert_array_equal(got[:, 1:], want[:, 1:])
    assert tmap.tempi == groove.tempo_map.tempi


def test_other_meters_have_beats_times_steps(tmp_path):
    notes = [(0, KICK, 100), (3 * TPB, KICK, 100), (3 * TPB + 4 * TPB, SNARE, 90)]
    src = write_drum_midi(tmp_path / "m.mid", notes, meters=[(0, 3, 4), (3 * TPB, 4, 4)])
    g16, g3 = read_groove(src), read_groove(src, grid="triplet")
    assert list(g16.steps_per_bar) == [12, 16, 16]
    assert list(g3.steps_per_bar) == [36, 48, 48]
    H, _, _ = windows(g16)
    assert H.shape == (2, 32, 9), "windows of unequal length are padded with silence"
    np.testing.assert_array_equal(stitch(*windows(g16), g16.bar_starts)[0], g16.H)


def test_triplet_grid_holds_triplets_the_16th_grid_cannot(tmp_path):
    # 8th-note triplets on beat 1, 16th-note triplets on beat 2.
    eighth_triplets = [(k * TPB // 3, HAT, 80) for k in range(3)]
    sixteenth_triplets = [(TPB + k * TPB // 6, SNARE, 70) for k in range(6)]
    src = write_drum_midi(tmp_path / "t.mid", eighth_triplets + sixteenth_triplets)
    tri = read_groove(src, grid="triplet")
    assert tri.H.sum() == 9 and np.all(tri.O == 0), "every triplet exactly on a step"
    assert GRIDS["triplet"] % 4 == 0 and GRIDS["triplet"] % 6 == 0
    six = read_groove(src, grid="16th")
    assert six.H.sum() < 9, "16th triplets collide on the 16th grid"
    assert np.abs(six.O[six.H > 0]).max() > 0.3, "8th triplets sit a third of a step off the 16th grid"


def test_collisions_keep_the_loudest_and_late_notes_wrap_to_the_downbeat():
    tmap = TempoMap(TPB)
    notes = [(0, 1, 50), (10, 1, 90), (20, 1, 60),      # a flam: three snares on one step
             (4 * TPB - 5, 0, 100)]                      # a kick 5 ticks before bar 2
    g = groove_from_notes(notes, tmap)
    assert g.H[0, 1] == 1 and g.V[0, 1] == pytest.approx(90 / 127)
    assert g.O[0, 1] == pytest.approx(10 / SIXTEENTH)
    assert g.n_bars == 2 and g.H[16, 0] == 1 and g.O[16, 0] == pytest.approx(-5 / SIXTEENTH)
    assert g.H.sum() == 2


def test_stitch_rebuilds_pieces_of_any_length():
    rng = np.random.default_rng(1)
    for bars in (1, 2, 3, 7):
        notes = [(t, int(rng.integers(0, 9)), int(rng.integers(1, 128)))
                 for t in rng.integers(0, bars * 4 * TPB - 60, 20 * bars)]
        g = groove_from_notes(notes, TempoMap(TPB), n_bars=bars)
        H, V, O = windows(g)
        assert H.shape == (max(1, bars - 1), 32, 9)
        for a, b in zip(stitch(H, V, O, g.bar_starts), (g.H, g.V, g.O)):
            np.testing.assert_array_equal(a, b)
    assert window_bounds(np.arange(0, 80, 16)).tolist() == [[0, 32], [16, 48], [32, 64]]


def test_read_groove_bad_midi_is_one_line(tmp_path):
    (tmp_path / "junk.mid").write_bytes(b"not midi at all")
    with pytest.raises(ScoreError, match="junk.mid: not a readable Standard MIDI File"):
        read_groove(tmp_path / "junk.mid")
    src = write_drum_midi(tmp_path / "piano.mid", [(0, 60, 100)], channel=0)
    with pytest.raises(ScoreError, match="no drum notes on MIDI channel 10"):
        read_groove(src)


# ----------------------------------------------------------------------------- tasks and model

def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    H = (rng.random((n, 32, 9)) < 0.2).astype(np.float32)
    V = H * rng.uniform(0.2, 1, H.shape).astype(np.float32)
    O = H * rng.uniform(-0.4, 0.4, H.shape).astype(np.float32)
    return H, V, O


def test_task_inputs():
    H, V, O = _batch()
    h, v, o = task_input("humanize", H, V, O)
    assert np.array_equal(h, H) and not v.any() and not o.any()
    h, v, o = task_input("drumify", H, V, O)
    assert np.array_equal(h[..., TAP_CLASS], H.max(-1)) and h.sum() == h[..., TAP_CLASS].sum()
    assert np.allclose(v[..., TAP_CLASS], V.max(-1))
    h, v, o = task_input("infill", H, V, O, instrument="hihat")
    assert not h[..., 2:4].any() and np.array_equal(h[..., :2], H[..., :2])
    assert task_target_mask("infill", instrument="snare").nonzero()[0].tolist() == [1]
    assert task_target_mask("humanize").all()
    with pytest.raises(ValueError, match="unknown groove task"):
        task_input("dance", H, V, O)


@pytest.mark.parametrize("task", GROOVE_TASKS)
def test_model_shapes_loss_and_generation(task):
    torch.manual_seed(0)
    model = GrooveModel(task, **TINY)
    H, V, O = _batch()
    inputs = task_input(task, H, V, O)
    loss, parts = model.loss(*(torch.from_numpy(a) for a in (*inputs, H, V, O)))
    assert loss.ndim == 0 and torch.isfinite(loss) and parts["velocity_mse"] > 0
    assert (parts["kl"] > 0) == (task == "transfer")
    out = model.generate(*inputs)
    assert [a.shape for a in out] == [(6, 32, 9)] * 3
    again = model.generate(*inputs)
    assert all(np.array_equal(a, b) for a, b in zip(out, again)), "temperature 0 is deterministic"
    Ho, Vo, Oo = out
    assert np.all(Vo[Ho == 0] == 0) and np.abs(Oo).max() <= 0.5
    if task == "humanize":
        assert np.array_equal(Ho, H)
    if task == "infill":
        keep = ~task_target_mask("infill")
        assert np.array_equal(Ho[..., keep], H[..., keep]) and np.array_equal(Vo[..., keep], V[..., keep])
    model.velocity_sigma.fill_(0.1)
    model.offset_sigma.fill_(0.1)
    s1 = model.generate(*inputs, temperature=1.0, seed=3)
    s2 = model.generate(*inputs, temperature=1.0, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(s1, s2)), "a seed makes sampling repeatable"
    assert not np.array_equal(s1[1], out[1])


def test_transfer_plays_the_target_score_with_the_clip_groove():
    model = GrooveModel("transfer", **TINY)
    A, B = _batch(1, seed=1), _batch(4, seed=2)
    H, V, O = model.generate(*B, z_from=A)
    assert np.array_equal(H, B[0])
    H2, _, _ = model.generate(*B, H_target=A[0].repeat(4, 0))
    assert np.array_equal(H2, A[0].repeat(4, 0))
    with pytest.raises(ValueError, match="transfer"):
        GrooveModel("humanize", **TINY).generate(*B, z_from=A)


def test_prefix_fixes_the_first_steps():
    model = GrooveModel("drumify", **TINY)
    H, V, O = _batch(2)
    out = model.generate(*task_input("drumify", H, V, O), prefix=(H[:, :16], V[:, :16], O[:, :16]))
    assert np.array_equal(out[0][:, :16], H[:, :16]) and np.array_equal(out[2][:, :16], O[:, :16])


def test_tiny_training_reduces_the_loss():
    torch.manual_seed(0)
    H, V, O = _batch(16, seed=4)
    # A groove to learn: every off-beat 16th late, every on-beat early, accents on the beat.
    late = np.arange(32) % 2 == 1
    O = H * np.where(late, 0.3, -0.1)[None, :, None].astype(np.float32)
    V = H * np.where(np.arange(32) % 4 == 0, 0.9, 0.4)[None, :, None].astype(np.float32)
    model = GrooveModel("humanize", **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tensors = [torch.from_numpy(a) for a in (*task_input("humanize", H, V, O), H, V, O)]
    first = model.loss(*tensors)[0].item()
    for _ in range(60):
        loss, _ = model.loss(*tensors)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(*tensors)[0].item() < 0.3 * first


# ----------------------------------------------------------------------------- weights

def test_weights_round_trip_and_pickles_are_refused(tmp_path):
    model = GrooveModel("infill", instrument="snare", **TINY)
    save_groove_model(model, tmp_path / "g.safetensors")
    back = load_groove_model("infill", tmp_path / "g.safetensors")
    assert back.instrument == "snare" and back.config() == model.config()
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="a infill model, not humanize"):
        load_groove_model("humanize", tmp_path / "g.safetensors")
    torch.save(model.state_dict(), tmp_path / "pickled.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_groove_model("infill", tmp_path / "pickled.safetensors")
    assert "pickled.safetensors: not a safetensors weights file" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_groove_model("infill", tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- data and training

@needs_gmd
def test_gmd_windows_and_cache(tmp_path, monkeypatch):
    from rolypoly.pretrain.groove_data import load_groove_split

    monkeypatch.setenv("ROLYPOLY_CACHE", str(tmp_path / "cache"))
    data = load_groove_split("validation", limit=3)
    assert data.H.shape[1:] == (32, 9) and data.H.dtype == np.float32
    assert data.grid == "16th" and data.steps_per_beat == 4
    assert len(data.bpm) == len(data.take) == len(data) and data.take.max() < len(data.names)
    assert np.abs(data.O).max() <= 0.5 and data.V.max() <= 1 and np.all(data.V[data.H == 0] == 0)
    assert np.all(data.H.sum(axis=(1, 2)) > 0)
    assert len(list((tmp_path / "cache").glob("groove-validation-16th-*.npz"))) == 1
    again = load_groove_split("validation", limit=3)
    np.testing.assert_array_equal(again.O, data.O)
    sub = data.subset(data.take == 0)
    assert len(sub) == (data.take == 0).sum() and sub.names == data.names
    # Windows match the take read directly.
    direct = windows(read_groove(paths.gmd_dir() / data.names[0]))[2]
    np.testing.assert_array_equal(sub.O[0], direct[sub.bar[0]])
    tri = load_groove_split("validation", limit=3, grid="triplet")
    assert tri.H.shape[1] == 96 and tri.steps_per_beat == 12


@needs_gmd
def test_pretrain_groove_command_writes_safetensors_and_json(tmp_path):
    env_cache = {"ROLYPOLY_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "rolypoly.cli", "pretrain", "groove", "--task", "drumify",
                        "--limit", "4", "--epochs", "1", "--out", str(tmp_path), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env_cache}, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["task"] == "drumify"
    meta = json.loads((tmp_path / "groove_drumify.json").read_text())
    assert meta["grid"] == "16th" and meta["train_seconds"] > 0 and meta["epochs"][0]["val_loss"] > 0
    assert meta["settings"]["minutes_cap"] <= 30
    model = load_groove_model("drumify", tmp_path / "groove_drumify.safetensors")
    assert model.task == "drumify"


@needs_gmd
def test_pretrain_humanize_ensemble_trains_members_side_by_side(tmp_path):
    env_cache = {"ROLYPOLY_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "rolypoly.cli", "pretrain", "groove", "--task", "humanize",
                        "--members", "2", "--limit", "4", "--epochs", "1", "--out", str(tmp_path), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env_cache}, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "groove_humanize.json").read_text())
    assert meta["members"] == 2 and [m["seed"] for m in meta["member_runs"]] == [1234, 1235]
    assert meta["config"]["members"] == 2 and meta["settings"]["workers"] == 2
    model = load_groove_model("humanize", tmp_path / "groove_humanize.safetensors")
    assert isinstance(model, GrooveEnsemble) and len(model.networks()) == 2
    a, b = model.networks()
    assert not torch.equal(a.head.weight, b.head.weight), "members start from different seeds"
    assert float(model.velocity_sigma.max()) > 0, "the ensemble's own residual spread is stored"
    H, V, O = _batch(2, seed=5)
    out = model.generate(*task_input("humanize", H, V, O), velocity_spread=0.0)
    one = [net.generate(*task_input("humanize", H, V, O), velocity_spread=0.0) for net in (a, b)]
    assert np.allclose(out[2], (one[0][2] + one[1][2]) / 2, atol=1e-5), "the ensemble plays the members' mean"


# ----------------------------------------------------------------------------- offline tools and CLI

@pytest.fixture
def tiny_weights(tmp_path):
    """Tiny untrained models of all four tasks, saved as safetensors."""
    torch.manual_seed(0)
    paths = {}
    for task in GROOVE_TASKS:
        paths[task] = tmp_path / f"groove_{task}.safetensors"
        save_groove_model(GrooveModel(task, **TINY), paths[task])
    return paths


def test_perform_pieces_of_any_length_keep_bars_and_tempo(tmp_path, tiny_weights):
    from rolypoly.groove import humanize_midi, infill_midi, transfer_midi

    rng = np.random.default_rng(2)
    src = write_drum_midi(tmp_path / "in.mid", _human_beat(5, rng), tempi=[(0, 90.0), (4 * 4 * TPB, 100.0)])
    before, after = humanize_midi(src, tmp_path / "h.mid", weights=tiny_weights["humanize"])
    assert np.array_equal(after.H, before.H) and after.n_bars == 5
    notes, tmap, _ = read_drum_notes(tmp_path / "h.mid")
    assert len(notes) == before.H.sum() and tmap.tempi == before.tempo_map.tempi
    a1 = humanize_midi(src, tmp_path / "h1.mid", weights=tiny_weights["humanize"], temperature=1, seed=5)[1]
    a2 = humanize_midi(src, tmp_path / "h2.mid", weights=tiny_weights["humanize"], temperature=1, seed=5)[1]
    assert np.array_equal(a1.O, a2.O)
    _, filled = infill_midi(src, tmp_path / "i.mid", weights=tiny_weights["infill"])
    assert np.array_equal(filled.H[:, :2], before.H[:, :2])
    short = write_drum_midi(tmp_path / "clip.mid", _human_beat(2, rng))
    score, played = transfer_midi(short, src, tmp_path / "t.mid", weights=tiny_weights["transfer"])
    assert np.array_equal(played.H, score.H)


def test_drumify_reads_taps_from_any_channel(tmp_path, tiny_weights, capsys):
    from rolypoly.groove import read_taps

    src = write_drum_midi(tmp_path / "taps.mid", [(k * 240, 60, 90) for k in range(16)], channel=0)
    taps = read_taps(src)
    assert taps.H.sum() == 16 and taps.n_bars == 2
    status, out, err = _rolypoly(capsys, "groove", "drumify", src, "-o", tmp_path / "d.mid", "--weights",
                                 tiny_weights["drumify"], "--bpm", "100", "--plot", tmp_path / "d.png")
    assert status == 0, err
    assert "d.mid: drumify, 2 bars" in out and (tmp_path / "d.png").stat().st_size > 0
    assert read_drum_notes(tmp_path / "d.mid")[1].tempi == [(0, 600000)]


def test_drumify_from_a_recording(tmp_path, tiny_weights, capsys):
    import soundfile

    from rolypoly.groove import taps_from_audio

    sr = 48000
    x = np.zeros(sr * 3, np.float32)
    for k in range(8):  # 8th notes at 120 bpm, accents on the beat
        i = int((0.1 + k * 0.25) * sr)
        x[i:i + 2000] = (0.8 if k % 2 == 0 else 0.3) * np.sin(np.arange(2000) * 0.3) * np.exp(-np.arange(2000) / 400)
    soundfile.write(tmp_path / "partner.wav", x, sr)
    taps = taps_from_audio(tmp_path / "partner.wav", bpm=120)
    assert taps.H.sum() == 8 and np.abs(taps.O[taps.H > 0]).max() < 0.1
    assert taps.V[0, 2] > taps.V[2, 2], "louder onsets tap harder"
    status, _, err = _rolypoly(capsys, "groove", "drumify", tmp_path / "partner.wav", "-o", tmp_path / "d.mid",
                               "--bpm", "120", "--weights", tiny_weights["drumify"])
    assert status == 0, err


def test_groove_cli_errors_are_one_line(tmp_path, tiny_weights, capsys):
    (tmp_path / "bad.mid").write_bytes(b"MThd junk")
    messages = []
    for args in (["groove", "humanize", str(tmp_path / "bad.mid"), "-o", str(tmp_path / "o.mid"),
                  "--weights", str(tiny_weights["humanize"])],
                 ["groove", "transfer", "--groove", str(tmp_path / "missing.mid"), "--score",
                  str(tmp_path / "bad.mid"), "-o", str(tmp_path / "o.mid"), "--weights", str(tiny_weights["transfer"])],
                 ["groove", "infill", str(tmp_path / "bad.mid"), "--instrument", "snare", "-o",
                  str(tmp_path / "o.mid"), "--weights", str(tiny_weights["infill"])],
                 ["groove", "humanize", str(tmp_path / "bad.mid"), "-o", str(tmp_path / "o.mid"),
                  "--weights", str(tiny_weights["drumify"])],
                 ["groove", "humanize", str(tmp_path / "bad.mid"), "-o", str(tmp_path / "o.mid"),
                  "--temperature", "-1"]):
        status, _, err = _rolypoly(capsys, *args)
        assert status == 2, (args, err)
        assert err.startswith("rolypoly: ") and err.count("\n") == 1, err
        messages.append(err)
    assert "bad.mid: not a readable Standard MIDI File" in messages[0]
    assert "missing.mid: no such file" in messages[1]
    assert "the infill model adds the hihat, not the snare" in messages[2]
    assert "a drumify model, not humanize" in messages[3]
    assert "--temperature -1" in messages[4]


def test_velocity_spread_widens_velocities_but_not_timing():
    """Velocities are drawn around the mean at the model's residual spread; offsets stay at the mean."""
    torch.manual_seed(0)
    model = GrooveModel("humanize", **TINY)
    model.velocity_sigma.fill_(0.15)
    inputs = task_input("humanize", *_batch(8, seed=4))
    mean = model.generate(*inputs, velocity_spread=0.0)
    drawn = model.generate(*inputs)
    again = model.generate(*inputs)
    hit = mean[0] > 0.5
    assert all(np.array_equal(a, b) for a, b in zip(drawn, again)), "the default draw repeats"
    assert np.array_equal(drawn[2], mean[2]) and np.array_equal(drawn[0], mean[0])
    spread = np.std((drawn[1] - mean[1])[hit & (drawn[1] > 0.05) & (drawn[1] < 0.95)])
    assert 0.10 < spread < 0.20, spread
    other = model.generate(*inputs, seed=9)
    assert not np.array_equal(other[1], drawn[1])


def test_drumify_trains_on_partial_taps_as_well_as_full_ones():
    from rolypoly.pretrain.train_groove import partial_taps

    H, V, O = _batch(400, seed=6)
    full = tap(H, V, O)[0][..., TAP_CLASS]
    taps = partial_taps(H, V, O, np.random.default_rng(0), p=0.5)[0][..., TAP_CLASS]
    assert np.all(taps <= full), "a partial tap is always one of the full taps"
    thinner = taps.sum(axis=1) < full.sum(axis=1)
    assert 0.25 < thinner.mean() < 0.55, thinner.mean()
    assert np.all(taps.sum(axis=1)[full.sum(axis=1) > 0] > 0), "no window loses all its taps"
    none = partial_taps(H, V, O, np.random.default_rng(0), p=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(none, tap(H, V, O)))


def test_velocity_spread_is_measured_per_class_and_level():
    from rolypoly.pretrain.train_groove import residual_spreads

    rng = np.random.default_rng(0)
    n = (300, 32, 9)
    V = rng.uniform(0.05, 0.95, n).astype(np.float32)      # the model's velocities
    soft = V <= VELOCITY_LEVELS[0]
    V_true = V + rng.normal(0, 1, n).astype(np.float32) * np.where(soft, 0.05, 0.2)
    both = np.ones(n, bool)
    both[..., 8] = False                                      # a class never played: no spread
    zeros = np.zeros(n, np.float32)
    sig_v, sig_o = residual_spreads((zeros, V, zeros), (zeros, V_true, zeros), both)
    assert sig_v.shape == (9, len(VELOCITY_LEVELS) + 1)
    assert np.allclose(sig_v[:8, 0], 0.05, atol=0.01) and np.allclose(sig_v[:8, 1:], 0.2, atol=0.02)
    assert np.all(sig_v[8] == 0) and np.all(sig_o == 0)


def test_weights_with_one_velocity_spread_per_class_still_load(tmp_path):
    from safetensors.torch import save_file

    model = GrooveModel("humanize", **TINY)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["velocity_sigma"] = torch.full((9,), 0.2)        # the layout before per-level spreads
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"config": json.dumps(model.config())})
    old = load_groove_model("humanize", tmp_path / "old.safetensors")
    assert old.velocity_sigma.shape == (9, len(VELOCITY_LEVELS) + 1) and torch.all(old.velocity_sigma == 0.2)


def test_transfer_with_several_clips_per_window_uses_their_mean_z():
    torch.manual_seed(0)
    model = GrooveModel("transfer", **TINY)
    score, a, b = _batch(2, seed=7), _batch(2, seed=8), _batch(2, seed=9)
    one = model.generate(*score, z_from=a, velocity_spread=0.0)
    same = model.generate(*score, z_from=tuple(np.stack([x, x, x], axis=1) for x in a), velocity_spread=0.0)
    assert all(np.allclose(p, q, atol=1e-6) for p, q in zip(one, same)), "3 copies of a clip: its own z"
    mixed = model.generate(*score, z_from=tuple(np.stack([x, y], axis=1) for x, y in zip(a, b)),
                           velocity_spread=0.0)
    assert not np.allclose(mixed[2], one[2]), "two different clips: between them"


def test_humanize_plays_a_piece_in_one_batch_as_it_would_window_by_window(tmp_path):
    from rolypoly.groove import perform

    torch.manual_seed(0)
    model = GrooveModel("humanize", **TINY)
    rng = np.random.default_rng(3)
    piece = read_groove(write_drum_midi(tmp_path / "in.mid", _human_beat(6, rng)))
    inputs = task_input("humanize", *windows(piece))
    one_by_one = [model.generate(*(p[k:k + 1] for p in inputs), velocity_spread=0.0) for k in range(len(inputs[0]))]
    expected = stitch(*(np.concatenate(p) for p in zip(*one_by_one)), piece.bar_starts)
    played = perform(model, piece, velocity_spread=0.0)
    np.testing.assert_allclose(played.O, expected[2], atol=1e-6)
    np.testing.assert_allclose(played.V, expected[1], atol=1e-6)
    model.velocity_sigma.fill_(0.15)
    drawn = perform(model, piece)
    bars = drawn.V.reshape(6, 16, 9) - played.V.reshape(6, 16, 9)
    assert not np.allclose(bars[1], bars[2]), "each bar draws its own velocities"
