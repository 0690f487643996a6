"""The drum kit: soundfont drum kits, sample folders and the synthesizer as velocity layers."""
from __future__ import annotations

import os

import numpy as np
import pytest

from rolypoly.audio_io import write_wav
from rolypoly.drum_map import CLASS_NAMES, N_CLASSES, class_index
from rolypoly.kit import LAYER_VELOCITIES, KitError, load_kit, shape_one_shot, synth_kit
from rolypoly.lab.soundfont import write_sf2
from rolypoly.synth import render_hits

SR = 48000
TIMGM = "/usr/share/sounds/sf2/TimGM6mb.sf2"


def _fluidsynth():
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"FluidSynth not available: {exc}")


@pytest.fixture(scope="module")
def synth():
    return synth_kit(SR)


def _centroid(x, sr):
    spec = np.abs(np.fft.rfft(x[:4096], 8192))
    return float(np.sum(np.fft.rfftfreq(8192, 1 / sr) * spec) / np.sum(spec))


def test_synth_kit_has_every_class_at_every_layer(synth):
    assert synth.velocities == tuple(LAYER_VELOCITIES for _ in range(N_CLASSES))
    for c in range(N_CLASSES):
        top = synth.layer(c, len(LAYER_VELOCITIES) - 1)
        assert np.array_equal(synth.sample(c, 127), top)
        assert abs(top[0]) >= 1e-3 * np.abs(top).max()  # starts on its first audible sample
    assert float(max(np.abs(synth.layer(c, 7)).max() for c in range(N_CLASSES))) == pytest.approx(0.5, abs=1e-6)


def test_louder_velocity_is_never_quieter(synth):
    for c in range(N_CLASSES):
        level = [20 * np.log10(np.sqrt(np.mean(synth.sample(c, v)[:2400] ** 2))) for v in range(1, 128)]
        assert np.all(np.diff(level) > -0.01), CLASS_NAMES[c]
        assert level[-1] - level[0] > 20  # a ghost note is far softer than a full stroke


def test_a_hit_plays_the_layer_at_or_above_its_velocity(synth):
    assert synth.layer_gain(1, 100)[0] == LAYER_VELOCITIES.index(112)
    assert synth.layer_gain(1, 112) == (LAYER_VELOCITIES.index(112), 1.0)
    k, g = synth.layer_gain(1, 5)          # below the lowest layer: the synthesizer's curve
    assert k == 0 and 0 < g < 1
    assert synth.layer_gain(1, 0) == synth.layer_gain(1, 1)       # clipped: a notated hit always sounds
    assert synth.layer_gain(1, 300) == synth.layer_gain(1, 127)


def test_mix_is_the_kit_placed_on_the_sample(synth):
    hits = np.zeros(N_CLASSES, bool)
    hits[[0, 2]] = True
    vels = np.full(N_CLASSES, 90)
    audio = render_hits([(0.25, hits, vels), (0.5, hits, vels)], SR, SR, kit=synth)
    expected = np.zeros(SR)
    for start in (12000, 24000):
        for c in (0, 2):
            x = synth.sample(c, 90)
            expected[start:start + len(x)] += x[:SR - start]
    np.testing.assert_allclose(audio, expected, atol=1e-6)


def test_shape_one_shot_cuts_silence_and_fades():
    x = np.r_[np.zeros(500), 0.8 * np.exp(-np.arange(48000) / 3000.0)]
    y = shape_one_shot(x, SR)
    assert y[0] == pytest.approx(0.8) and len(y) < 48000 and y[-1] == 0.0
    assert len(shape_one_shot(np.zeros(100), SR)) == 0


def test_soundfont_drum_kit(tmp_path):
    _fluidsynth()
    if not os.path.isfile(TIMGM):
        pytest.skip(f"{TIMGM} not installed (Debian timgm6mb-soundfont)")
    kit = load_kit(TIMGM, SR)
    assert kit.describe().startswith("TimGM6mb.sf2 drum kit 0") and kit.notes == []
    for c in range(N_CLASSES):
        x = kit.sample(c, 127)
        assert len(x) > 0.05 * SR and abs(x[0]) >= 1e-3 * np.abs(x).max()
    kick, hat = kit.sample(class_index("kick"), 110), kit.sample(class_index("hihat"), 110)
    assert _centroid(kick, SR) < 0.25 * _centroid(hat, SR)
    # Rendered straight at the device's rate: the same sound, in fewer samples at 44.1 kHz.
    at44 = load_kit(TIMGM, 44100)
    ratio = at44.length(class_index("snare")) / kit.length(class_index("snare"))
    assert ratio == pytest.approx(44100 / 48000, rel=0.03)
    assert kit.at_rate(44100) is at44 and kit.at_rate(SR) is kit


def test_soundfont_layers_follow_velocity(tmp_path):
    _fluidsynth()
    path = tmp_path / "kit.sf2"
    rng = np.random.default_rng(0)
    hit = rng.standard_normal(4800) * np.exp(-np.arange(4800) / 600.0) * 0.5
    write_sf2(path, [("Test Kit", 128, 0, [(35, 81, hit)])])
    kit = load_kit(path, SR)
    assert kit.describe().startswith("kit.sf2 drum kit 0 (Test Kit)")
    levels = kit.levels_db[class_index("snare")]
    assert np.all(np.diff(levels) > 0)                 # every layer louder than the one below
    assert kit.gain_of[1, 127] == 1.0


def test_soundfont_without_a_drum_kit_is_one_line(tmp_path):
    _fluidsynth()
    path = tmp_path / "piano.sf2"
    write_sf2(path, [("Piano", 0, 0, [(0, 127, np.sin(np.arange(4800) / 10.0))])])
    with pytest.raises(KitError, match=r"piano.sf2: the soundfont has no drum kit \(no preset in bank 128\)") as e:
        load_kit(path, SR)
    assert "\n" not in str(e.value)


def test_broken_soundfont_is_one_line(tmp_path, capfd):
    path = tmp_path / "broken.sf2"
    path.write_bytes(b"this is not a soundfont" * 20)
    with pytest.raises(KitError, match=r"broken.sf2: not a soundfont"):
        load_kit(path, SR)
    assert capfd.readouterr().err == ""  # refused before FluidSynth could print its own errors


def test_sample_folder_kit(tmp_path):
    rng = np.random.default_rng(1)
    shot = lambda n: (rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 6))).astype(np.float32) * 0.4  # noqa: E731
    write_wav(tmp_path / "kick.wav", shot(9600), SR)
    write_wav(tmp_path / "snare_40.wav", 0.3 * shot(7200), SR)
    write_wav(tmp_path / "snare_110.wav", shot(7200), SR)
    write_wav(tmp_path / "42.wav", shot(4410), 44100)       # a General MIDI pitch, another sample rate
    write_wav(tmp_path / "cowbell.wav", shot(100), SR)      # no such drum: ignored
    (tmp_path / "notes.txt").write_text("not audio")
    kit = load_kit(tmp_path, SR)
    snare, hat = class_index("snare"), class_index("hihat")
    assert kit.velocities[snare] == (40, 110) and kit.velocities[class_index("kick")] == (127,)
    assert kit.length(hat) == pytest.approx(4800, abs=4)    # resampled once, at load
    assert kit.layer_gain(snare, 30)[0] == 0 and kit.layer_gain(snare, 60)[0] == 1
    assert any("no samples for open_hihat" in n and "built-in synthesizer" in n for n in kit.notes)
    assert kit.velocities[class_index("ride")] == LAYER_VELOCITIES  # filled from the synthesizer


def test_unusable_kits_are_one_line(tmp_path):
    with pytest.raises(KitError, match=r"no usable drum samples: no audio files"):
        load_kit(tmp_path, SR)
    write_wav(tmp_path / "take1.wav", np.ones(100, np.float32) * 0.1, SR)
    with pytest.raises(KitError, match=r"not named after a drum \(e.g. 'take1.wav'"):
        load_kit(tmp_path, SR)
    with pytest.raises(KitError, match=r"no/such/kit: no such drum kit"):
        load_kit("/no/such/kit", SR)
    text = tmp_path / "kit.txt"
    text.write_text("x")
    with pytest.raises(KitError, match=r"kit.txt: not a drum kit"):
        load_kit(text, SR)
    with pytest.raises(KitError, match="too low"):
        load_kit("synth", 4000)


def test_default_kit_without_soundfonts_is_the_synthesizer(monkeypatch):
    import rolypoly.kit as kit_module

    monkeypatch.delenv("ROLYPOLY_KIT", raising=False)
    monkeypatch.setattr(kit_module, "SOUNDFONT_PATHS", ("/no/such.sf2",))
    kit = load_kit(None, SR)
    assert kit.name == "built-in synthesizer" and "no General MIDI soundfont installed" in kit.notes[0]
    monkeypatch.setenv("ROLYPOLY_KIT", "synth")
    assert load_kit(None, SR).notes == []


def test_mix_wav_is_rendered_with_the_kit_heard_live(tmp_path):
    import soundfile

    from rolypoly.audio_io import load_audio
    from rolypoly.lab.bench_output import bench_score, partner_clicks
    from rolypoly.realtime.clock import SimClock
    from rolypoly.realtime.duet import play_take
    from rolypoly.realtime.sources import FileSource
    from rolypoly.score import write_midi
    from rolypoly.take import read_take

    score = bench_score(4.0)
    write_midi(score, tmp_path / "loop.mid")
    clicks, _ = partner_clicks(score, SR)
    write_wav(tmp_path / "partner.wav", clicks, SR)
    kit = synth_kit(44100).at_rate(SR)        # a kit made at another rate is loaded again at the take's
    assert kit.sample_rate == SR
    summary = play_take(tmp_path / "loop.mid", FileSource(tmp_path / "partner.wav"), SimClock(),
                        session=tmp_path / "s", kit=kit, plot=False)
    mix, sr = soundfile.read(summary["mix"], dtype="float64")
    recorded = load_audio(summary["partner"], sr)
    # The partner where the take placed it: sample 0 at minus its offset (aligned by the take: ~4 ms late).
    start = int(round(-summary["partner_offset_s"] * sr))
    a, b = max(0, start), min(len(mix), start + len(recorded))
    partner = np.zeros(len(mix))
    partner[a:b] = recorded[a - start:b - start]
    # The drums in the mix are the kit on the take's played times (the mix may be scaled as a whole).
    take = read_take(summary["take_dir"])
    events = [(float(r["played"]), score.hits[i], score.velocities[i]) for i, r in enumerate(take.rows)]
    ref = render_hits(events, sr, len(mix), kit=kit).astype(np.float64)
    basis = np.stack([ref, partner], axis=1)
    coef, *_ = np.linalg.lstsq(basis, mix, rcond=None)
    residual = mix - basis @ coef
    assert coef[0] == pytest.approx(coef[1], rel=1e-3)      # one scale for both
    assert np.sqrt(np.mean(residual ** 2)) < 0.01 * np.sqrt(np.mean(mix ** 2))
