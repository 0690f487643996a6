"""Streaming onset detector, its network, partner audio (synthetic and rendered) and the onset benchmark."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import soundfile

from rolypoly.errors import CheckpointError, RolypolyError
from rolypoly.lab import bench_onsets
from rolypoly.lab.bench_onsets import aubio_onsets, match_onsets, read_onsets_file, score
from rolypoly.lab.partner_audio import (background_noise, clicks, electric_bass, electric_keys,
                                        humanized_part, plucked_guitar, write_wav)
from rolypoly.onsets import (FEATURE_NAMES, N_FEATURES, ONSET_DTYPE, Listener, OnsetDetector, calibrate,
                             calibrated_settings, default_onset_weights, detect_file, load_onset_net)

SR = 48000


def stream(audio, block_size=64, **params):
    """Feed audio block by block as a callback would; collect every onset."""
    det = OnsetDetector(sample_rate=SR, max_block=max(block_size, 64), **params)
    found = [det.process(audio[i:i + block_size]).copy() for i in range(0, len(audio), block_size)]
    return np.concatenate(found) if found else np.zeros(0, ONSET_DTYPE)


def assert_found(truth_s, onsets, tolerance_ms, min_f1=1.0):
    times = onsets["sample"] / SR
    pairs = match_onsets(truth_s, times, tolerance_ms / 1000.0)
    f1 = 2 * len(pairs) / (len(truth_s) + len(times))
    assert f1 >= min_f1, f"F1 {f1:.3f}: {len(truth_s)} true, {len(times)} found, {len(pairs)} matched"
    return pairs


# ---------------------------------------------------------------------------
# Finding the notes


def test_clicks_found_sample_exact():
    truth = np.array([0.25, 0.5, 0.61, 0.9, 1.3, 1.31 + 0.05])
    audio = clicks(truth, velocities=[1.0, 0.2, 0.7, 0.05, 0.5, 1.0], sample_rate=SR)
    onsets = stream(audio)
    assert len(onsets) == len(truth)
    np.testing.assert_array_equal(onsets["sample"], np.round(truth * SR).astype(int))


@pytest.mark.parametrize("instrument, tolerance_ms", [("guitar", 1.0), ("keys", 2.0), ("bass", 5.0)])
def test_notes_found_near_true_times(instrument, tolerance_ms):
    audio, truth = humanized_part(instrument, bars=2, jitter_ms=15, seed=4, sample_rate=SR)
    onsets = stream(audio)
    pairs = assert_found(truth, onsets, 25.0, min_f1=0.95)
    errors = np.array([onsets["sample"][f] / SR - truth[t] for t, f in pairs]) * 1000
    assert np.median(np.abs(errors)) <= tolerance_ms, errors


def test_legato_and_noise_still_found():
    audio, truth = humanized_part("guitar", bars=2, steps_per_beat=4, density=0.6,
                                  legato=1.8, noise_db=-45, seed=9, sample_rate=SR)
    assert_found(truth, stream(audio), 25.0, min_f1=0.95)


def test_latency_is_a_few_hops():
    audio, truth = humanized_part("keys", bars=2, seed=5, sample_rate=SR)
    onsets = stream(audio)
    pairs = assert_found(truth, onsets, 25.0)
    latency_ms = np.array([onsets["available"][f] / SR - truth[t] for t, f in pairs]) * 1000
    assert np.median(latency_ms) <= 3.0
    assert latency_ms.max() <= 6.0
    # Usable at the end of the deciding hop, never before the attack.
    assert np.all(onsets["available"] % 64 == 0)
    assert np.all(onsets["available"] > onsets["sample"])


def test_onset_fields():
    onsets = stream(plucked_guitar([0.2], pitches=64, sample_rate=SR))
    assert onsets.dtype == ONSET_DTYPE and len(onsets) == 1
    det = OnsetDetector()
    assert det.threshold <= onsets["strength"][0] <= 1.0      # the network's probability
    assert 0.0 < onsets["descriptor"][0] <= 1.0


def test_descriptor_hears_bright_and_dark():
    t = [0.2, 0.7, 1.2]
    guitar = stream(plucked_guitar(t, pitches=64, velocities=1.0, sample_rate=SR))
    bass = stream(electric_bass(t, pitches=28, velocities=1.0, sample_rate=SR))
    assert guitar["descriptor"].mean() > bass["descriptor"].mean() + 0.05


# ---------------------------------------------------------------------------
# Not inventing notes


def test_silence_and_a_quiet_room_give_nothing():
    assert len(stream(np.zeros(2 * SR, dtype=np.float32))) == 0
    assert len(stream(background_noise(3 * SR, -80.0))) == 0
    assert len(stream(background_noise(3 * SR, -50.0, seed=3))) <= 1


def test_hum_dc_and_a_noisy_room_no_storm():
    t = np.arange(4 * SR) / SR
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5)) * 0.01
    assert len(stream((hum + 0.2).astype(np.float32))) <= 1
    loud_room = background_noise(4 * SR, -35.0, seed=5) + hum.astype(np.float32)
    assert len(stream(loud_room)) <= 2


def test_silence_gate_is_configurable():
    quiet = clicks([0.3, 0.8], velocities=0.001, sample_rate=SR)  # -60 dBFS clicks
    assert len(stream(quiet, silence_db=-50)) == 0
    assert len(stream(quiet, silence_db=-90)) == 2


def test_threshold_is_configurable():
    audio, truth = humanized_part("keys", bars=2, legato=1.6, noise_db=-50, seed=7, sample_rate=SR)
    counts = [len(stream(audio, threshold=th)) for th in (0.1, 0.5, 0.97)]
    assert counts[0] >= counts[1] >= counts[2]
    assert counts[0] > counts[2]


def test_dc_offset_and_clipping_no_storm():
    audio, truth = humanized_part("keys", bars=2, seed=6, sample_rate=SR)
    abused = np.clip(audio * 20.0 + 0.4, -1.0, 1.0).astype(np.float32)
    onsets = stream(abused)
    # The DC step at the very start may count once; nothing else extra.
    assert len(onsets) <= len(truth) + 1
    assert_found(truth, onsets[onsets["sample"] > 0], 25.0, min_f1=0.9)
    # A stuck offset or a clipped, DC-shifted square wave: at most the start.
    assert len(stream(np.full(2 * SR, 0.5, dtype=np.float32))) <= 1
    square = np.sign(np.sin(2 * np.pi * 82.4 * np.arange(2 * SR) / SR))
    assert len(stream(np.clip(square + 0.3, -1, 1).astype(np.float32))) <= 1


def test_min_ioi_respected():
    truth = np.arange(0.1, 1.5, 0.015)
    audio = clicks(truth, velocities=1.0, sample_rate=SR)
    counts = []
    for min_ioi_ms in (40.0, 100.0):
        onsets = stream(audio, min_ioi_ms=min_ioi_ms)
        assert np.diff(onsets["sample"]).min() >= min_ioi_ms * SR / 1000
        counts.append(len(onsets))
    assert counts[0] > counts[1] >= 2


def test_nan_block_does_not_kill_the_detector():
    audio = clicks([0.2, 0.6], sample_rate=SR)
    audio[int(0.4 * SR):int(0.4 * SR) + 100] = np.nan
    onsets = stream(audio)
    assert np.round(0.6 * SR) in onsets["sample"]


# ---------------------------------------------------------------------------
# Streaming behaviour


def test_block_size_independence():
    audio, _ = humanized_part("bass", bars=2, legato=1.2, noise_db=-50, seed=8, sample_rate=SR)
    reference = stream(audio, block_size=64)
    assert len(reference) > 5
    for block_size in (100, 512, 37):
        other = stream(audio, block_size=block_size)
        np.testing.assert_array_equal(other["sample"], reference["sample"])
        np.testing.assert_array_equal(other["available"], reference["available"])
        np.testing.assert_allclose(other["strength"], reference["strength"], rtol=1e-5)
        np.testing.assert_allclose(other["descriptor"], reference["descriptor"], rtol=1e-5)


def test_reset_starts_a_new_stream():
    audio = clicks([0.1, 0.3], sample_rate=SR)
    det = OnsetDetector()
    first = det.process(audio[:8192]).copy()
    det.reset()
    again = det.process(audio[:8192]).copy()
    np.testing.assert_array_equal(first, again)


def test_process_is_preallocated_and_bounded():
    audio, _ = humanized_part("guitar", bars=2, seed=1, sample_rate=SR)
    det = OnsetDetector(max_block=256)
    first = det.process(audio[:256])
    for i in range(256, 20 * 256, 256):
        assert det.process(audio[i:i + 256]).base is first.base
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    total = 0
    for i in range(20 * 256, len(audio) - 256, 256):
        total += len(det.process(audio[i:i + 256]))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert total > 0
    assert grown < 8192, f"process() kept {grown} bytes"
    with pytest.raises(ValueError, match="max_block"):
        det.process(np.zeros(257, dtype=np.float32))


def test_bad_parameters_rejected():
    with pytest.raises(ValueError, match="rearm"):
        OnsetDetector(threshold=0.3, rearm=0.4)
    with pytest.raises(ValueError, match="threshold"):
        OnsetDetector(threshold=1.5)
    with pytest.raises(RolypolyError) as info:
        OnsetDetector(instrument="theremin")
    assert "theremin" in str(info.value) and "guitar" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("instrument", ["auto", "guitar", "bass", "piano", "keys", "voice"])
def test_every_instrument_preset_runs(instrument):
    audio, truth = humanized_part("keys", bars=1, seed=2, sample_rate=SR)
    det = OnsetDetector(instrument=instrument)
    assert 0.0 < det.threshold < 1.0 and det.params()["instrument"] == instrument
    assert len(stream(audio, instrument=instrument)) > 0


def test_other_sample_rates():
    truth = np.array([0.3, 0.7, 1.1])
    for rate in (44100, 96000):
        audio = electric_keys(truth, pitches=[52, 57, 64], sample_rate=rate)
        det = OnsetDetector(sample_rate=rate)
        found = det.process(audio[:8192]).copy()
        found = np.concatenate([found] + [det.process(audio[i:i + 8192]).copy()
                                          for i in range(8192, len(audio), 8192)])
        np.testing.assert_allclose(found["sample"] / rate, truth, atol=0.002)


# ---------------------------------------------------------------------------
# The listener and the network


def test_listener_rows_are_the_live_features():
    audio, _ = humanized_part("guitar", bars=1, seed=3, sample_rate=SR)
    ears = Listener(SR)
    rows = ears.listen(audio)
    assert rows.shape == (len(audio) // 64, N_FEATURES) and len(FEATURE_NAMES) == N_FEATURES
    again = Listener(SR)
    live = np.stack([again.run(audio[i * 64:(i + 1) * 64].astype(np.float64)).copy() for i in range(len(rows))])
    np.testing.assert_allclose(live, rows, rtol=1e-5, atol=1e-4)
    assert np.all(np.isfinite(rows))


def test_numpy_network_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from rolypoly.pretrain.train_onsets import make_model, save_model

    torch.manual_seed(0)
    model = make_model()
    with torch.no_grad():
        model.mean.normal_()
        model.scale.uniform_(0.5, 2.0)
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    path = tmp_path / "net.safetensors"
    save_model(model, path, {"features": FEATURE_NAMES, "threshold": 0.5})
    net, config = load_onset_net(path)
    x = np.random.default_rng(1).normal(size=(50, N_FEATURES)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)[None])[0].numpy()
    got = np.stack([net.step(row).copy() for row in x])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_shipped_network_and_its_metrics():
    path = default_onset_weights()
    net, config = load_onset_net(path)
    assert config["features"] == FEATURE_NAMES and 0 < config["threshold"] < 1
    metrics = json.loads(path.with_suffix(".json").read_text())
    assert metrics["command"].startswith("rolypoly pretrain onsets")
    assert metrics["training"]["train_seconds"] <= 30 * 60
    assert metrics["validation"]["at_threshold"][str(config["threshold"])]["f1"] > 0.5


def test_bad_weights_are_one_line(tmp_path):
    pickled = tmp_path / "net.safetensors"
    pickled.write_bytes(b"\x80\x04\x95pickle")
    for path, problem in ((tmp_path / "none.safetensors", "no such weights file"),
                          (pickled, "not a safetensors weights file")):
        with pytest.raises(CheckpointError) as info:
            OnsetDetector(weights=path)
        assert str(info.value).startswith(str(path)) and problem in str(info.value)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# Files


def test_detect_file_on_wav(tmp_path):
    audio, truth = humanized_part("keys", bars=2, seed=2, sample_rate=SR)
    path = tmp_path / "take.wav"
    write_wav(path, audio, SR)
    on, avail, desc = detect_file(path)
    pairs = assert_found(truth, np.rec.fromarrays([np.round(on * SR).astype(int)], names="sample"), 25.0)
    errors_ms = np.array([on[f] - truth[t] for t, f in pairs]) * 1000
    assert np.median(np.abs(errors_ms)) < 0.1 and np.abs(errors_ms).max() < 5.0, errors_ms
    assert np.all(avail > on) and np.all((desc >= 0) & (desc <= 1))
    # Same answer as the live detector on the same samples.
    np.testing.assert_allclose(on, stream(audio)["sample"] / SR)


def test_detect_file_resamples_and_mixes_to_mono(tmp_path):
    truth = np.array([0.3, 0.7, 1.1])
    mono = electric_keys(truth, pitches=[52, 57, 64], sample_rate=44100)
    path = tmp_path / "stereo_44k.flac"
    soundfile.write(str(path), np.stack([mono, 0.5 * mono], axis=1), 44100)
    on, _, _ = detect_file(path)
    assert len(on) == 3
    np.testing.assert_allclose(on, truth, atol=0.002)


@pytest.mark.parametrize("kind", ["missing", "not_audio", "directory", "empty"])
def test_bad_file_is_one_clear_line(tmp_path, kind):
    if kind == "missing":
        path = tmp_path / "nope.wav"
    elif kind == "not_audio":
        path = tmp_path / "notes.wav"
        path.write_text("this is not a wav file\nsecond line\n")
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "empty.wav"
        write_wav(path, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(RolypolyError) as info:
        detect_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert len(message) > len(str(path)) + 5


# ---------------------------------------------------------------------------
# Calibration


def test_calibration_sets_gate_and_threshold_from_the_room():
    audio, truth = humanized_part("keys", bars=6, legato=0.3, density=0.5, noise_db=-70, seed=21, sample_rate=SR)
    c = calibrate(audio, SR, instrument="keys")
    assert c["noise_floor_db"] < c["silence_db"] < c["playing_level_db"] - 29
    assert c["threshold"] >= c["trained_threshold"]
    assert c["onsets"] == pytest.approx(len(truth), rel=0.1)
    settings = calibrated_settings(c)
    assert settings == {"instrument": "keys", "threshold": c["threshold"], "silence_db": c["silence_db"]}
    on = stream(audio, **settings)
    assert_found(truth, on, 25.0, min_f1=0.95)
    # The gate keeps a noisier room's noise out.
    loud = audio + background_noise(len(audio), -50.0, seed=4)
    assert calibrate(loud, SR)["silence_db"] > c["silence_db"] + 10


def test_calibration_refuses_what_it_cannot_use():
    with pytest.raises(RolypolyError, match="too short"):
        calibrate(np.zeros(SR, np.float32), SR, name="x.wav")
    with pytest.raises(RolypolyError, match="no playing heard") as info:
        calibrate(background_noise(8 * SR, -60.0), SR, name="room.wav")
    assert str(info.value).startswith("room.wav: ")
    with pytest.raises(RolypolyError, match="unknown instrument"):
        calibrated_settings({"instrument": "kazoo"})


# ---------------------------------------------------------------------------
# aubio baseline and the benchmark


def test_aubio_baseline_finds_notes_late():
    audio, truth = humanized_part("guitar", bars=2, seed=3, sample_rate=SR)
    on, avail = aubio_onsets(audio, SR)
    s = score(truth, on, avail)
    assert s["f1"] >= 0.9
    assert np.all(avail >= on)
    assert s["latency_median_ms"] > 10.0     # a 1024-sample window cannot be fast


def test_match_onsets_is_greedy_one_to_one():
    assert match_onsets([1.0, 1.03], [1.01, 1.02]) == [(0, 0), (1, 1)]
    assert match_onsets([1.0], [1.01, 1.005]) == [(0, 1)]
    assert match_onsets([1.0], [1.03]) == []
    s = score([1.0, 2.0], [1.0, 1.5], [1.001, 1.501])
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert score([1.0, 2.0], [0.998, 1.996], [1.0, 2.0])["timing_error_median_ms"] == -3.0


def test_annotation_files(tmp_path):
    good = tmp_path / "a.onsets"
    good.write_text("# onsets of a.wav\n0.5\n0.25\t note\n\n1.0,x\n")
    assert read_onsets_file(good).tolist() == [0.25, 0.5, 1.0]
    for text, problem in (("0.5\nabc\n", ":2: not an onset time"), ("-1\n", ":1: onset time must be")):
        bad = tmp_path / "b.onsets"
        bad.write_text(text)
        with pytest.raises(RolypolyError) as info:
            read_onsets_file(bad)
        assert str(info.value).startswith(f"{bad}{problem}") and "\n" not in str(info.value)


def _real_folder(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for name, instrument, seed in (("gtr", "guitar", 31), ("keys", "keys", 32)):
        audio, truth = humanized_part(instrument, bars=2, seed=seed, sample_rate=44100)
        soundfile.write(str(folder / f"{name}.flac"), audio, 44100)
        (folder / f"{name}.onsets").write_text("".join(f"{t:.6f}\n" for t in truth))
    write_wav(folder / "unannotated.wav", np.zeros(1000, np.float32), SR)
    return folder


def test_bench_quick(tmp_path):
    path = tmp_path / "onsets.json"
    result = bench_onsets.run(json_path=str(path), real=_real_folder(tmp_path), quick=True)
    assert set(result) >= {"config", "sets", "detectors", "live_cost", "targets"}
    assert set(result["sets"]) >= {"real", "fixtures"}
    assert set(result["sets"]["real"]["files"]) == {"gtr.flac", "keys.flac"}
    assert set(result["sets"]["fixtures"]["files"]) == set(bench_onsets.QUICK_FIXTURES)
    for name in ("rolypoly", "aubio", "aubio_hfc_512", "aubio_hfc_256"):
        overall = result["detectors"][name]["overall"]
        for key in ("precision", "recall", "f1", "latency_median_ms", "latency_p95_ms", "timing_error_median_ms"):
            assert key in overall
        assert set(result["detectors"][name]["per_file"]) == {"gtr.flac", "keys.flac"}
    assert result["targets"]["instrument_set"] == "real"
    assert result["sets"]["fixtures"]["detectors"]["rolypoly"]["overall"]["latency_median_ms"] <= 3.0
    assert result["live_cost"]["blocks"] > 1000 and result["live_cost"]["p99_us"] > 0
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))


def test_bench_real_folder_problems(tmp_path):
    with pytest.raises(RolypolyError, match="no such folder"):
        bench_onsets.read_real_set(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RolypolyError, match="no audio file with a NAME.onsets"):
        bench_onsets.read_real_set(empty)


# ---------------------------------------------------------------------------
# Partner audio


def test_partner_audio_onsets_are_exact():
    truth = [0.1, 0.35, 0.6]
    for render in (plucked_guitar, electric_bass, electric_keys, clicks):
        y = render(truth, sample_rate=SR)
        assert y.dtype == np.float32
        for t in truth:
            assert y[round(t * SR)] != 0.0
        assert np.flatnonzero(y)[0] == round(truth[0] * SR)
        assert np.max(np.abs(y)) <= 1.0


def test_humanized_part_deterministic_and_human():
    a1, t1 = humanized_part("guitar", bars=2, jitter_ms=10, seed=42)
    a2, t2 = humanized_part("guitar", bars=2, jitter_ms=10, seed=42)
    a3, t3 = humanized_part("guitar", bars=2, jitter_ms=10, seed=43)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t1, t3)
    # Jitter moves notes off the grid; without it they sit on the grid.
    _, straight = humanized_part("clicks", bars=2, jitter_ms=0, density=1.0, bpm=120, lead_in_s=0.5)
    np.testing.assert_allclose(np.diff(straight), 0.25, atol=1e-4)
    _, swung = humanized_part("clicks", bars=2, jitter_ms=0, density=1.0, bpm=120, lead_in_s=0.5,
                              swing=1 / 3)
    np.testing.assert_allclose(np.diff(swung)[:2], [1 / 3, 1 / 6], atol=1e-4)
    off_grid = (t1 - 0.3) / (60 / 110 / 2)
    assert np.abs(off_grid - np.round(off_grid)).max() > 0.02


def test_write_wav_round_trip(tmp_path):
    y = plucked_guitar([0.0], sample_rate=22050)
    path = tmp_path / "g.wav"
    write_wav(path, y, 22050)
    back, sr = soundfile.read(str(path), dtype="float32")
    assert sr == 22050
    np.testing.assert_array_equal(back, y)
    with pytest.raises(RolypolyError, match="cannot write"):
        write_wav(tmp_path / "no_such_dir" / "x.wav", y, 22050)


# ---------------------------------------------------------------------------
# The command line


def _rolypoly(capsys, *args):
    """Run the command line in this process; returns (status, stdout, stderr)."""
    from rolypoly.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_onsets_command_and_its_bad_input(tmp_path, capsys):
    audio, truth = humanized_part("keys", bars=2, seed=2, sample_rate=SR)
    path = tmp_path / "take.wav"
    write_wav(path, audio, SR)
    status, out, _ = _rolypoly(capsys, "onsets", path, "--instrument", "keys")
    assert status == 0
    assert_found(truth, np.rec.fromarrays([np.round(np.array(out.split(), float) * SR).astype(int)],
                                          names="sample"), 25.0, min_f1=0.95)
    for args, problem in ((("--instrument", "theremin"), "unknown instrument 'theremin'"),
                          (("--threshold", "3"), "threshold must be a probability")):
        status, _, err = _rolypoly(capsys, "onsets", path, *args)
        assert status == 2 and problem in err and err.count("\n") == 1, err
    bad = tmp_path / "real"
    bad.mkdir()
    write_wav(bad / "a.wav", audio, SR)
    (bad / "a.onsets").write_text("0.5\nnot a time\n")
    status, _, err = _rolypoly(capsys, "bench", "onsets", "--real", bad, "--quick")
    assert status == 2 and f"{bad / 'a.onsets'}:2: not an onset time" in err and err.count("\n") == 1


def test_calibration_is_stored_in_the_session_and_heard_in_takes(tmp_path, capsys):
    from rolypoly.lab.experiments import straight_eighths
    from rolypoly.onsets import session_settings
    from rolypoly.score import write_midi
    from rolypoly.session import Session

    audio, _ = humanized_part("keys", bars=6, legato=0.3, density=0.5, noise_db=-70, seed=21, sample_rate=SR)
    recording = tmp_path / "alone.wav"
    write_wav(recording, audio, SR)
    folder = tmp_path / "song"
    write_midi(straight_eighths(bars=2, bpm=120), tmp_path / "song.mid")
    Session.open(folder, tmp_path / "song.mid")
    status, out, _ = _rolypoly(capsys, "onsets", "--calibrate", recording, "--session", folder,
                               "--instrument", "keys")
    assert status == 0
    stored = Session(folder).meta["onset_calibration"]
    assert stored == {k: v for k, v in json.loads(out).items() if k != "stored_in"}
    assert session_settings(folder) == {"instrument": "keys", "threshold": stored["threshold"],
                                        "silence_db": stored["silence_db"]}
    # A take's source hears with it (the CLI's partner source for this session).
    from rolypoly.cli import build_parser
    from rolypoly.cli.live import partner_source

    args = build_parser().parse_args(["play", str(tmp_path / "song.mid"), "--partner-file", str(recording),
                                      "--session", str(folder)])
    source = partner_source(args)
    assert source.detector.threshold == stored["threshold"] and source.detector.silence_db == stored["silence_db"]
    status, _, err = _rolypoly(capsys, "onsets", "--calibrate", recording, "--session", tmp_path / "none")
    assert status == 2 and "not a session" in err


def test_the_c_kernel_runs_here_and_numpy_without_a_compiler(tmp_path):
    """Where gcc is (make setup installs it) the detector's hops run in C; without a C compiler it
    says so in one line, once, and the numpy reference hears the same onsets."""
    import shutil
    import subprocess
    import sys

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here (apt-get install gcc)")
    assert OnsetDetector().kernel == "c"
    with pytest.raises(RolypolyError, match="kernel"):
        OnsetDetector(kernel="fortran")
    code = ("import numpy as np\n"
            "from rolypoly.onsets import OnsetDetector, detect\n"
            "x = np.zeros(48000, np.float32); x[12000:12400] = 0.5; x[30000:30400] = -0.5\n"
            "print(OnsetDetector().kernel, [round(float(t), 4) for t in detect(x)[0]], detect(x)[0].size)\n")
    env = {**__import__("os").environ, "CC": str(tmp_path / "no-such-cc"), "ROLYPOLY_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "numpy"
    said = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "C kernel" in said[0] and "numpy" in said[0], said
    from rolypoly.onsets import detect

    on = detect(np.concatenate([np.zeros(12000), np.full(400, 0.5), np.zeros(17600), np.full(400, -0.5),
                                np.zeros(18000)]).astype(np.float32))[0]
    assert res.stdout.split("] ")[0] + "]" == "numpy " + str([round(float(t), 4) for t in on])


def _drums(times, sample_rate=SR, seed=0):
    """Drum-like hits: a decaying noise burst and a low thump each, louder on the beat."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int((max(times) + 0.5) * sample_rate))
    n = np.arange(int(0.12 * sample_rate))
    for k, t in enumerate(times):
        i = int(round(t * sample_rate))
        hit = rng.standard_normal(len(n)) * np.exp(-n / (0.01 * sample_rate))
        hit += 2.0 * np.sin(2 * np.pi * 70 * n / sample_rate) * np.exp(-n / (0.04 * sample_rate))
        out[i:i + len(n)] += (0.5 if k % 4 == 0 else 0.25) * hit
    return out


def test_what_the_bleed_canceller_leaves_of_the_drums_is_not_heard_as_the_partner():
    """The loop changed since it was calibrated (the bleed 2 dB louder): the canceller leaves a fifth
    of every drum hit. Without its expected residual the detector takes those for the partner (and
    misses the notes 8 ms after them); with it, every partner note and nothing else."""
    from rolypoly.onsets import match_onsets
    from rolypoly.realtime.bleed import BleedCanceller

    sixteenths = 0.3 + np.arange(32) * 0.125
    notes = sixteenths[::2] + 0.008                       # the partner plays 8ths, 8 ms behind the drums
    drums = _drums(sixteenths)
    partner = plucked_guitar(notes, durations=0.06, pitches=57, velocities=0.7, sample_rate=SR)
    n = min(len(drums), len(partner))
    lag, gain = 100, 0.3                                  # the room: 100 frames, -10 dB
    drums, heard = drums[:n], partner[:n].astype(np.float64)
    heard[lag:] += gain * drums[:n - lag]
    taps = np.zeros(64)
    taps[16] = gain * 0.8                                 # as calibrated, before the loop got louder

    def listen(use_floor):
        canceller = BleedCanceller(SR, lag=lag - 16, taps=taps)
        det = OnsetDetector(max_block=256)
        found = []
        for i in range(0, n, 256):
            x = canceller.process(heard[i:i + 256], drums[i:i + 256])
            found += list(det.process(x, floor_db=canceller.residual_db if use_floor else None)["sample"])
        return np.array(found) / SR, canceller

    found, _ = listen(False)
    assert len(found) - len(match_onsets(notes, found, 0.005)) >= 4        # the drums heard: it can fail
    found, canceller = listen(True)
    assert 0.2 < canceller.depth < 0.3            # it knows it leaves a quarter of what it takes away
    assert len(match_onsets(notes, found, 0.005)) == len(notes)
    assert len(found) == len(notes), np.round(found, 3)
