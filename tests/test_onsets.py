"""Streaming onset detector, partner-audio fixtures and the onset benchmark."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import soundfile

from rolypoly.lab import bench_onsets
from rolypoly.lab.bench_onsets import match_onsets, score
from rolypoly.lab.bench_onsets import aubio_onsets
from rolypoly.onsets import ONSET_DTYPE, OnsetDetector, detect_file
from rolypoly.lab.partner_audio import (background_noise, clicks, electric_bass, electric_keys,
                                    humanized_part, plucked_guitar, write_wav)
from rolypoly.errors import RolypolyError

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


@pytest.mark.parametrize("instrument, tolerance_ms", [("guitar", 1.0), ("keys", 1.0), ("bass", 4.0)])
def test_notes_found_near_true_times(instrument, tolerance_ms):
    audio, truth = humanized_part(instrument, bars=2, jitter_ms=15, seed=4, sample_rate=SR)
    onsets = stream(audio)
    pairs = assert_found(truth, onsets, 25.0, min_f1=0.95)
    errors = np.array([onsets["sample"][f] / SR - truth[t] for t, f in pairs]) * 1000
    assert np.all(np.abs(errors) <= tolerance_ms), errors


def test_legato_and_noise_still_found():
    audio, truth = humanized_part("guitar", bars=2, steps_per_beat=4, density=0.6,
                                  legato=1.8, noise_db=-45, seed=9, sample_rate=SR)
    assert_found(truth, stream(audio), 25.0, min_f1=0.95)


def test_latency_is_a_hop_or_two():
    audio, truth = humanized_part("guitar", bars=2, seed=5, sample_rate=SR)
    onsets = stream(audio)
    pairs = assert_found(truth, onsets, 25.0)
    latency_ms = np.array([onsets["available"][f] / SR - truth[t] for t, f in pairs]) * 1000
    assert np.median(latency_ms) <= 2.0
    assert latency_ms.max() <= 3.0
    # Usable at the end of the detecting hop, never before the attack.
    assert np.all(onsets["available"] % 64 == 0)
    assert np.all(onsets["available"] > onsets["sample"])


def test_onset_fields():
    onsets = stream(plucked_guitar([0.2], pitches=64, sample_rate=SR))
    assert onsets.dtype == ONSET_DTYPE and len(onsets) == 1
    assert onsets["strength"][0] >= 6.0                      # at least the threshold
    assert 0.0 < onsets["descriptor"][0] <= 1.0


def test_descriptor_hears_bright_and_dark():
    t = [0.2, 0.7, 1.2]
    guitar = stream(plucked_guitar(t, pitches=64, velocities=1.0, sample_rate=SR))
    bass = stream(electric_bass(t, pitches=28, velocities=1.0, sample_rate=SR))
    assert guitar["descriptor"].mean() > bass["descriptor"].mean() + 0.1


# ---------------------------------------------------------------------------
# Not inventing notes


def test_silence_gives_nothing():
    assert len(stream(np.zeros(2 * SR, dtype=np.float32))) == 0
    # Room noise at -80 dBFS is below the -50 dB gate.
    assert len(stream(background_noise(2 * SR, -80.0))) == 0


def test_silence_gate_is_configurable():
    quiet = clicks([0.3, 0.8], velocities=0.001, sample_rate=SR)  # -60 dBFS clicks
    assert len(stream(quiet, silence_db=-50)) == 0
    assert len(stream(quiet, silence_db=-70)) == 2


def test_threshold_is_configurable():
    # Noise that steps up by 8 dB at 0.5 s and by 20 dB at 1.5 s.
    noise = np.random.default_rng(1).standard_normal(2 * SR)
    gain = np.full(2 * SR, 10 ** (-40 / 20))
    gain[SR // 2:SR] = 10 ** (-32 / 20)
    gain[3 * SR // 2:] = 10 ** (-20 / 20)
    audio = (noise * gain).astype(np.float32)
    for threshold, expected in ((6.0, [0.0, 0.5, 1.5]), (12.0, [0.0, 1.5]), (30.0, [0.0])):
        found = stream(audio, threshold=threshold, rearm_db=1.0)["sample"] / SR
        np.testing.assert_allclose(found, expected, atol=0.002, err_msg=f"threshold {threshold}")


def test_dc_offset_and_clipping_no_storm():
    audio, truth = humanized_part("guitar", bars=2, seed=6, sample_rate=SR)
    abused = np.clip(audio * 20.0 + 0.4, -1.0, 1.0).astype(np.float32)
    onsets = stream(abused)
    # The DC step at the very start may count once; nothing else extra.
    assert len(onsets) <= len(truth) + 1
    assert_found(truth, onsets[onsets["sample"] > 0], 25.0, min_f1=0.95)
    # A stuck offset or a clipped, DC-shifted square wave: at most the start.
    assert len(stream(np.full(2 * SR, 0.5, dtype=np.float32))) <= 1
    square = np.sign(np.sin(2 * np.pi * 82.4 * np.arange(2 * SR) / SR))
    assert len(stream(np.clip(square + 0.3, -1, 1).astype(np.float32))) <= 1


def test_min_ioi_respected():
    # A loud click every 30 ms (ghost clicks between): each would count.
    truth = np.arange(0.1, 1.5, 0.015)
    velocities = np.where(np.arange(len(truth)) % 2, 0.03, 1.0)
    audio = clicks(truth, velocities=velocities, sample_rate=SR)
    assert len(stream(audio, min_ioi_ms=10.0)) == len(truth[::2])
    counts = []
    for min_ioi_ms in (40.0, 100.0):
        onsets = stream(audio, min_ioi_ms=min_ioi_ms)
        assert np.diff(onsets["sample"]).min() >= min_ioi_ms * SR / 1000
        counts.append(len(onsets))
    assert len(truth[::2]) > counts[0] > counts[1] >= 2


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
    with pytest.raises(ValueError, match="hop"):
        OnsetDetector(hop=512)
    with pytest.raises(ValueError, match="rearm_db"):
        OnsetDetector(threshold=3.0, rearm_db=4.0)


# ---------------------------------------------------------------------------
# Files


def test_detect_file_on_wav(tmp_path):
    audio, truth = humanized_part("guitar", bars=2, seed=2, sample_rate=SR)
    path = tmp_path / "take.wav"
    write_wav(path, audio, SR)
    on, avail, desc = detect_file(path)
    assert_found(truth, np.rec.fromarrays([np.round(on * SR).astype(int)], names="sample"), 1.0)
    assert np.all(avail > on) and np.all((desc >= 0) & (desc <= 1))
    # Same answer as the live detector on the same samples.
    np.testing.assert_allclose(on, stream(audio)["sample"] / SR)


def test_detect_file_resamples_and_mixes_to_mono(tmp_path):
    truth = np.array([0.3, 0.7, 1.1])
    mono = plucked_guitar(truth, pitches=[52, 57, 64], sample_rate=44100)
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


def test_bench_quick(tmp_path, capsys):
    from rolypoly.cli import main

    path = tmp_path / "onsets.json"
    assert main(["bench", "onsets", "--quick", "--json", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"config", "fixtures", "detectors", "targets"}
    assert set(result["fixtures"]) == set(bench_onsets.QUICK_FIXTURES)
    for name in ("rolypoly", "aubio"):
        overall = result["detectors"][name]["overall"]
        for key in ("latency_median_ms", "latency_p95_ms", "precision", "recall", "f1"):
            assert key in overall
        assert set(result["detectors"][name]["per_fixture"]) == set(bench_onsets.QUICK_FIXTURES)
    assert result["detectors"]["rolypoly"]["overall"]["latency_median_ms"] <= 3.0
    assert result["targets"]["median_latency_met"] and result["targets"]["f1_at_least_aubio"]
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))


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
