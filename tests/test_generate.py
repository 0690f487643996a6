"""Bar generators (continuation and fill), the next-bar API a live worker calls, and their commands."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rolypoly import paths
from rolypoly.errors import CheckpointError, RolypolyError
from rolypoly.generate import ROW_DTYPE, BarState, BarWriter, Controls, bar_rows, partner_grid
from rolypoly.generate_model import (CONTEXT_BARS, STEPS_PER_BAR, BarModel, default_bar_weights, load_bar_model,
                                     pocket_direction, save_bar_model, step_inputs)

ROOT = Path(__file__).resolve().parents[1]
needs_gmd = pytest.mark.skipif(not (paths.gmd_dir() / "info.csv").is_file(),
                               reason=f"Groove MIDI Dataset not at {paths.gmd_dir()}")
KICK, SNARE, HAT, LOW_TOM, MID_TOM, HIGH_TOM = 0, 1, 2, 4, 5, 6
#: A syncopated riff the rock beat below does not play (16ths at steps 9, 21, 30, 42).
RIFF_STEPS = (9, 21, 30, 42)


def _rolypoly(capsys, *args):
    from rolypoly.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def rock_bar():
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat 8ths: H, V, O (48, 9)."""
    H = np.zeros((STEPS_PER_BAR, 9), np.float32)
    H[[0, 24], KICK] = 1
    H[[12, 36], SNARE] = 1
    H[::6, HAT] = 1
    return H, 0.7 * H, np.zeros_like(H)


def riff():
    return partner_grid(np.array(RIFF_STEPS) / STEPS_PER_BAR, [1.0, 0.8, 1.0, 0.8])


@pytest.fixture
def tiny_writer():
    torch.manual_seed(0)
    return BarWriter(BarModel("continuation", d_model=16, layers=1, heads=2),
                     BarModel("fill", d_model=16, layers=1, heads=2))


@pytest.fixture(scope="module")
def shipped():
    return BarWriter.load()


# ----------------------------------------------------------------------------- shapes and weights

def test_model_shapes_and_loss():
    model = BarModel("continuation", d_model=16, layers=1, heads=2)
    ctx = np.zeros((3, CONTEXT_BARS, STEPS_PER_BAR, 27), np.float32)
    x = step_inputs(ctx, np.zeros((3, STEPS_PER_BAR, 3)))
    assert x.shape == (3, STEPS_PER_BAR, model.n_inputs)
    H = torch.zeros(3, STEPS_PER_BAR, 9)
    H[:, ::12, 0] = 1
    with torch.no_grad():
        logits, v, o = model(torch.from_numpy(x), torch.zeros(3, dtype=torch.long), torch.ones(3, 2))
    assert logits.shape == v.shape == o.shape == (3, STEPS_PER_BAR, 9)
    assert float(o.abs().max()) <= 0.5 and 0 <= float(v.min()) and float(v.max()) <= 1
    loss, parts = model.loss(torch.from_numpy(x), torch.zeros(3, dtype=torch.long), torch.ones(3, 2), H, H * 0.5, H * 0)
    assert torch.isfinite(loss) and parts["hits"] == 12
    fill = BarModel("fill", d_model=16, layers=1, heads=2)
    assert fill.n_inputs == model.n_inputs - 3  # no partner input
    with pytest.raises(ValueError, match="unknown bar model"):
        BarModel("solo")


def test_config_round_trip_and_bad_weights(tmp_path, capsys):
    torch.manual_seed(1)
    model = BarModel("fill", d_model=16, layers=1, heads=2)
    model.pocket.fill_(0.1)
    save_bar_model(model, tmp_path / "f.safetensors", {"note": "tiny"})
    back = load_bar_model("fill", tmp_path / "f.safetensors")
    assert back.config() == model.config()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="a fill model, not continuation"):
        load_bar_model("continuation", tmp_path / "f.safetensors")
    torch.save(model.state_dict(), tmp_path / "pickled.safetensors")
    with pytest.raises(CheckpointError, match="pickled.safetensors: not a safetensors weights file"):
        load_bar_model("fill", tmp_path / "pickled.safetensors")
    from rolypoly.groove_model import GrooveModel, save_groove_model

    save_groove_model(GrooveModel("drumify", encoder_hidden=8, z_size=4, decoder_hidden=8), tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="g.safetensors: not a rolypoly bar model"):
        load_bar_model("fill", tmp_path / "g.safetensors")
    # On the command line: one line naming the file, exit status 2.
    (tmp_path / "garbage.safetensors").write_bytes(b"not weights at all")
    status, out, err = _rolypoly(capsys, "bench", "generate", "--calls", "1",
                                 "--continuation", tmp_path / "garbage.safetensors")
    assert status == 2 and out == ""
    assert err.strip().count("\n") == 0 and "garbage.safetensors: not a safetensors weights file" in err


# ----------------------------------------------------------------------------- the API

def test_rows_and_seed_repeatability(tiny_writer):
    H, V, O = rock_bar()
    state = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]), partner=riff(), bar=3)
    hot = Controls(temperature=1.0, seed=7, follow=0.7)
    a, b = tiny_writer.next_bar(state, hot), tiny_writer.next_bar(state, hot)
    assert a.dtype == ROW_DTYPE and len(a) > 0
    np.testing.assert_array_equal(a, b)
    c = tiny_writer.next_bar(state, Controls(temperature=1.0, seed=8, follow=0.7))
    assert not np.array_equal(a, c)
    # Temperature 0 does not depend on the seed.
    np.testing.assert_array_equal(tiny_writer.next_bar(state, Controls(seed=1)),
                                  tiny_writer.next_bar(state, Controls(seed=2)))
    rows = bar_rows(H, V, O)
    assert rows["step"].tolist() == sorted(set(range(0, 48, 6)))
    assert (rows["velocities"][rows["hits"]] == 89).all() and rows["position"][1] == 6 / 48


def test_controls_refuse_bad_values():
    for kwargs, match in (({"follow": 1.5}, "follow must be within"), ({"density": -0.1}, "density"),
                          ({"pocket": 2.0}, "pocket must be within"), ({"style": "polka"}, "unknown style 'polka'"),
                          ({"temperature": float("nan")}, "temperature")):
        with pytest.raises(RolypolyError, match=match):
            Controls(**kwargs)
    assert Controls(style="Hip-Hop").style == "Hip-Hop"


def test_state_push_and_partner_grid():
    state = BarState()
    H, V, O = rock_bar()
    state.push(H, V, O, riff())
    assert state.bar == 1 and state.drums[0].sum() == 0 and state.drums[1][:, 0].sum() == 2
    assert state.partner[list(RIFF_STEPS), 0].tolist() == [1, 1, 1, 1]
    g = partner_grid([0.999, 0.5, 0.5], [1.0, 0.3, 0.9])  # just before the bar line: next bar's
    assert g[:, 0].sum() == 1 and g[24, 1] == pytest.approx(0.9)


def test_pocket_direction_follows_the_takes():
    rng = np.random.default_rng(0)
    H = np.zeros((40, 48, 9), np.float32)
    H[:, ::6, HAT] = 1
    H[:, ::12, KICK] = 1
    lean = rng.normal(0, 0.1, 40)[:, None, None]
    O = H * (lean * np.array([0.2, 0, 1.0] + [0] * 6))  # the hats lean with the take, the kick a little
    d, sigma = pocket_direction(O, H, np.arange(40), min_hits=4)
    assert d[HAT] == pytest.approx(1.0) and 0.1 < d[KICK] < 0.3 and sigma > 0


# ----------------------------------------------------------------------------- the shipped models

def test_shipped_follow_keeps_the_pattern_or_follows_the_partner(shipped):
    H, V, O = rock_bar()
    state = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]), partner=riff())
    keep, _, _ = shipped.write(state, Controls(follow=0.0))
    np.testing.assert_array_equal(keep, H)  # the pattern as it was
    steps = list(RIFF_STEPS)

    def on_riff(follow):
        Hf, _, _ = shipped.write(state, Controls(follow=follow))
        return int((Hf[steps][:, [KICK, SNARE]].max(axis=1) > 0).sum())

    assert on_riff(0.0) == 0 and on_riff(1.0) >= 3 and on_riff(0.5) >= on_riff(0.0)
    # A silent partner: the pattern whatever follow says.
    silent = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]))
    np.testing.assert_array_equal(shipped.write(silent, Controls(follow=1.0))[0], H)


def test_shipped_density_and_pocket(shipped):
    H, V, O = rock_bar()
    state = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]), partner=riff())
    counts = [shipped.write(state, Controls(density=d, follow=0.5))[0].sum() for d in (0.1, 0.5, 0.9)]
    assert counts[0] < counts[1] < counts[2]
    Hs, _, O0 = shipped.write(state, Controls(follow=0.0))
    _, _, late = shipped.write(state, Controls(follow=0.0, pocket=1.0))
    _, _, early = shipped.write(state, Controls(follow=0.0, pocket=-1.0))
    shift = shipped.continuation.pocket.numpy()
    hit = Hs > 0.5
    expected = np.clip(O0 + shift, -0.5, 0.5)
    np.testing.assert_allclose(late[hit], expected[hit], atol=1e-6)
    assert (late[hit] >= O0[hit]).all() and (early[hit] <= O0[hit]).all() and shift.max() > 0


def test_shipped_fill_differs_from_the_groove(shipped):
    H, V, O = rock_bar()
    state = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]), partner=riff())
    fill, _, _ = shipped.write(state, Controls(), fill=True)
    groove, _, _ = shipped.write(state, Controls(follow=0.0))
    assert (fill != groove).sum() >= 8
    toms_and_snare = lambda a: a[:, [SNARE, LOW_TOM, MID_TOM, HIGH_TOM]].sum()  # noqa: E731
    assert toms_and_snare(fill) > toms_and_snare(groove)
    assert len(shipped.fill_bar(state)) > 0


def test_shipped_fills_are_drawn_and_reach_the_toms(shipped):
    # At temperature 0 the fill model plays a snare roll; fill_bar draws (FILL_TEMPERATURE), one
    # fill per seed, the same fill for the same seed, and across seeds the toms come in.
    from rolypoly.generate import FILL_TEMPERATURE

    assert FILL_TEMPERATURE > 0
    H, V, O = rock_bar()
    state = BarState.from_bars(np.stack([H, H]), np.stack([V, V]), np.stack([O, O]), partner=riff())
    fills = [shipped.fill_bar(state, Controls(seed=s)) for s in range(8)]
    again = shipped.fill_bar(state, Controls(seed=3))
    np.testing.assert_array_equal(again["hits"], fills[3]["hits"])
    assert len({f["hits"].tobytes() for f in fills}) > 1
    toms = sum(int(f["hits"][:, [LOW_TOM, MID_TOM, HIGH_TOM]].sum()) for f in fills)
    most_likely = shipped.fill_bar(state, Controls(), temperature=0.0)
    assert toms > 8 * int(most_likely["hits"][:, [LOW_TOM, MID_TOM, HIGH_TOM]].sum())


@pytest.mark.parametrize("kind", ["continuation", "fill"])
def test_shipped_metrics_json_matches_its_weights(kind):
    from rolypoly.agents import read_weights

    weights = default_bar_weights(kind)
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["weights_bytes"] == weights.stat().st_size
    header, _ = read_weights(weights)
    assert json.loads(header["config"]) == meta["config"] == load_bar_model(kind).config()
    assert meta["settings"]["minutes_cap"] <= 30 and meta["train_minutes"] <= 30
    base = "baseline_repeat_last_bar" if kind == "continuation" else "baseline_groove_bar"
    for split in ("validation", "test"):
        fig = meta[split]
        assert fig["bars"] > 0 and set(fig["model"]) >= {"hit_f1", "velocity_mae", "offset_mae_ms"}
        assert 0 <= fig[base]["hit_f1"] <= 1
    if kind == "continuation":  # with the partner's taps, the next bar is better than a repeat
        assert meta["test"]["model"]["hit_f1"] > meta["test"][base]["hit_f1"]


def test_bench_generate_prints_json(capsys, tmp_path):
    status, out, _ = _rolypoly(capsys, "bench", "generate", "--calls", "5", "--json", tmp_path / "g.json")
    assert status == 0
    report = json.loads(out)
    assert report["next_bar"]["calls"] == 5 and report["next_bar"]["p50_ms"] > 0
    assert json.loads((tmp_path / "g.json").read_text())["fill_bar"]["calls"] == 5


# ----------------------------------------------------------------------------- training

@needs_gmd
@pytest.mark.parametrize("kind", ["continuation", "fill"])
def test_pretrain_command_writes_weights_and_metrics(tmp_path, kind):
    env = {**os.environ, "ROLYPOLY_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "rolypoly.cli", "pretrain", kind, "--limit", "8", "--epochs", "1",
                        "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"] == kind and summary["best_epoch"] == 1
    meta = json.loads((tmp_path / f"generate_{kind}.json").read_text())
    weights = tmp_path / f"generate_{kind}.safetensors"
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert load_bar_model(kind, weights).config() == meta["config"]
    assert meta["validation"]["bars"] > 0 and "test" in meta and meta["data"]["limit"] == 8
