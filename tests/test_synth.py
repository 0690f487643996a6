"""The built-in drum synth: voices, velocity, placement of hits, rendering a MIDI file.

Spectral checks use the power spectrum of a whole one-shot; "onset" means the
first sample whose magnitude exceeds 1e-3 of the hit's own peak.
"""
from __future__ import annotations


import numpy as np
import pytest

from rolypoly.synth import DrumKit, drum_sample, render_hits, render_midi, velocity_gain
from rolypoly.drum_map import CLASS_NAMES, N_CLASSES
from tests.midi_factory import TPB, write_drum_midi

SR = 48000
KICK, SNARE, CHH, OHH, LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE = range(9)
MS = SR // 1000


@pytest.fixture(scope="module")
def kit():
    return DrumKit(SR)


def band_fraction(x, lo, hi, sr=SR):
    """Fraction of the signal's energy between lo and hi Hz."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return power[(freqs >= lo) & (freqs < hi)].sum() / power.sum()


def peak_hz(x, sr=SR):
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(power)]


def centroid_hz(x, sr=SR):
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return (np.fft.rfftfreq(len(x), 1 / sr) * power).sum() / power.sum()


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def onset(x, level=1e-3):
    """First sample above ``level`` times the peak (None when silent)."""
    idx = np.flatnonzero(np.abs(x) > level * np.max(np.abs(x)))
    return int(idx[0]) if len(idx) else None


def event(t, classes, velocity=100):
    hits = np.zeros(N_CLASSES, bool)
    hits[list(classes)] = True
    return (t, hits, np.where(hits, velocity, 0))


# ----------------------------------------------------------------------------- voices

@pytest.mark.parametrize("c", range(N_CLASSES), ids=CLASS_NAMES)
def test_every_class_is_audible_finite_mono_float32(kit, c):
    x = kit.sample(c, 100)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.1 * SR < len(x) < 4 * SR
    assert np.all(np.isfinite(x))
    assert rms(x) > 1e-3
    assert np.max(np.abs(x)) < 1.0
    assert onset(x) == 0          # the one-shot speaks on its first sample
    assert abs(x[-1]) < 1e-3      # and fades out instead of being cut


def test_kick_energy_is_low(kit):
    for v in (30, 100, 127):
        assert band_fraction(kit.sample(KICK, v), 0, 200) > 0.9


@pytest.mark.parametrize("c", [CHH, OHH])
def test_hihats_energy_is_high(kit, c):
    for v in (30, 100, 127):
        assert band_fraction(kit.sample(c, v), 5000, SR / 2) > 0.9


def test_cymbals_are_bright_and_toms_low(kit):
    assert band_fraction(kit.sample(CRASH, 100), 3000, SR / 2) > 0.9
    assert band_fraction(kit.sample(RIDE, 100), 400, SR / 2) > 0.95
    for c in (LOW_TOM, MID_TOM, HIGH_TOM):
        assert band_fraction(kit.sample(c, 100), 0, 500) > 0.9


def test_snare_has_body_and_noise(kit):
    x = kit.sample(SNARE, 100)
    assert band_fraction(x, 120, 450) > 0.15      # tuned body
    assert band_fraction(x, 1000, 12000) > 0.3    # snare wires


def test_toms_are_tuned_low_to_high(kit):
    pitches = [peak_hz(kit.sample(c, 100)) for c in (LOW_TOM, MID_TOM, HIGH_TOM)]
    assert pitches[0] < pitches[1] < pitches[2]
    assert 60 < pitches[0] and pitches[2] < 300


def test_open_hihat_rings_longer_than_closed(kit):
    def decay_s(x):  # time until the level falls 40 dB below its peak for good
        loud = np.flatnonzero(np.abs(x) > 0.01 * np.max(np.abs(x)))
        return loud[-1] / SR
    assert decay_s(kit.sample(OHH, 100)) > 3 * decay_s(kit.sample(CHH, 100))
    assert decay_s(kit.sample(CRASH, 100)) > decay_s(kit.sample(OHH, 100))


def test_other_sample_rates_keep_their_character():
    kit = DrumKit(22050)
    kick, hat = kit.sample(KICK, 100), kit.sample(CHH, 100)
    assert 0.5 < len(kick) / 22050 < 0.7
    assert band_fraction(kick, 0, 200, 22050) > 0.9
    assert band_fraction(hat, 5000, 11025, 22050) > 0.9


# ----------------------------------------------------------------------------- velocity

@pytest.mark.parametrize("c", range(N_CLASSES), ids=CLASS_NAMES)
def test_louder_velocity_gives_higher_rms(kit, c):
    levels = [rms(kit.sample(c, v)) for v in (1, 20, 50, 80, 110, 127)]
    assert all(a < b for a, b in zip(levels, levels[1:])), levels
    # Roughly a dB curve: a ghost note is tens of dB below a full stroke.
    assert 15 < 20 * np.log10(levels[-1] / levels[1]) < 40


def test_velocity_curve_and_brightness(kit):
    assert velocity_gain(127) == 1.0
    assert np.all(np.diff(velocity_gain(np.arange(1, 128))) > 0)
    # Harder strokes are a little brighter, not just louder.
    for c in (SNARE, CHH, CRASH):
        assert centroid_hz(kit.sample(c, 127)) > centroid_hz(kit.sample(c, 30))
    # Out-of-range velocities clip to MIDI's 1..127.
    assert np.array_equal(kit.sample(SNARE, 0), kit.sample(SNARE, 1))
    assert np.array_equal(kit.sample(SNARE, 300), kit.sample(SNARE, 127))


def test_bad_class_is_refused(kit):
    for c in (-1, 9, 1.5):
        with pytest.raises(ValueError, match="drum class"):
            kit.sample(c, 100)


# ----------------------------------------------------------------------------- determinism, caching

def test_deterministic_across_kits_and_calls(kit):
    for c in range(N_CLASSES):
        assert np.array_equal(DrumKit(SR).sample(c, 90), kit.sample(c, 90))
    assert np.array_equal(drum_sample(RIDE, 70, SR), kit.sample(RIDE, 70))
    events = [event(0.1 * k, [k % N_CLASSES, (3 * k) % N_CLASSES], 40 + k) for k in range(20)]
    a = render_hits(events, SR, 3 * SR)
    b = render_hits(events, SR, 3 * SR, kit=kit)
    assert np.array_equal(a, b)


def test_kit_renders_each_class_once():
    kit = DrumKit(SR)
    first = kit.layers(SNARE)
    assert kit.layers(SNARE) is first
    body, air = first
    assert np.allclose(body + air, kit.sample(SNARE, 127), atol=1e-6)


def test_kit_sample_rate_must_match():
    with pytest.raises(ValueError, match="Hz"):
        render_hits([], 44100, 100, kit=DrumKit(48000))


# ----------------------------------------------------------------------------- render_hits

def test_hits_land_on_their_samples(kit):
    times = [0.0, 0.1234, 0.5, 0.50001, 1.777, 2.9]
    classes = [KICK, CHH, SNARE, CRASH, LOW_TOM, RIDE]
    length = 3 * SR
    mix = np.zeros(length)
    for t, c in zip(times, classes):
        alone = render_hits([event(t, [c])], SR, length, kit=kit)
        assert abs(onset(alone) - t * SR) <= 1 * MS, (CLASS_NAMES[c], t)
        # Exactly the one-shot, placed at the rounded sample and cut at the end.
        start = int(round(t * SR))
        shot = kit.sample(c, 100)[:length - start]
        assert np.array_equal(alone[start:start + len(shot)], shot)
        assert not alone[:start].any() and not alone[start + len(shot):].any()
        mix += alone
    together = render_hits([event(t, [c]) for t, c in zip(times, classes)], SR, length, kit=kit)
    assert np.max(np.abs(together)) < 0.99           # quiet enough: left at its level
    assert np.allclose(together, mix, atol=1e-6)


def test_simultaneous_classes_add_up(kit):
    both = render_hits([event(0.25, [KICK, CHH], 90)], SR, SR, kit=kit)
    apart = (render_hits([event(0.25, [KICK], 90)], SR, SR, kit=kit)
             + render_hits([event(0.25, [CHH], 90)], SR, SR, kit=kit))
    assert np.allclose(both, apart, atol=1e-6)


@pytest.mark.parametrize("length", [0, 1, 1000, SR])
def test_output_length_is_exact(kit, length):
    out = render_hits([event(0.0, [KICK]), event(0.01, [CRASH])], SR, length, kit=kit)
    assert out.shape == (length,) and out.dtype == np.float32


def test_events_outside_the_buffer_are_safe(kit):
    length = SR // 2
    events = [event(-10.0, [CRASH]), event(5.0, [KICK]), event(0.5, [SNARE]),  # 0.5 s == length
              event(float("nan"), [SNARE]), event(float("inf"), [KICK]), event(-float("inf"), [KICK])]
    assert not render_hits(events, SR, length, kit=kit).any()
    assert not render_hits([], SR, length, kit=kit).any()
    # A hit that began before sample 0 is still ringing: its tail is heard.
    early = render_hits([event(-0.1, [CRASH])], SR, length, kit=kit)
    shot = kit.sample(CRASH, 100)
    assert np.array_equal(early, shot[int(0.1 * SR):int(0.1 * SR) + length])
    # A hit just before the end is cut at the end.
    late = render_hits([event((length - 10) / SR, [KICK])], SR, length, kit=kit)
    assert np.array_equal(late[-10:], kit.sample(KICK, 100)[:10])


def test_malformed_event_is_refused(kit):
    with pytest.raises(ValueError, match="9 hits"):
        render_hits([(0.0, np.ones(8, bool), np.full(8, 100))], SR, SR, kit=kit)


def test_loud_mix_is_scaled_below_clipping(kit):
    events = [event(0.01 * k, range(N_CLASSES), 127) for k in range(8)]
    out = render_hits(events, SR, SR, kit=kit)
    assert np.max(np.abs(out)) <= 0.99 + 1e-6
    assert np.max(np.abs(out)) > 0.9     # scaled to the limit, not squashed further


def test_three_minute_take_renders_within_range(kit):
    rng = np.random.default_rng(1)
    p = np.array([0.22, 0.2, 0.33, 0.04, 0.03, 0.03, 0.03, 0.05, 0.07])  # roughly a groove's mix
    events = [event(t, [rng.choice(N_CLASSES, p=p)], int(rng.integers(30, 128)))
              for t in np.sort(rng.uniform(0, 180, 2000))]
    out = render_hits(events, SR, 180 * SR, kit=kit)
    assert out.shape == (180 * SR,) and np.max(np.abs(out)) <= 0.99 + 1e-6


# ----------------------------------------------------------------------------- render_midi

def test_render_midi_plays_the_file_with_its_timing(tmp_path):
    # 120 bpm, 480 ticks a beat: the kick at tick 10 sits on the downbeat's grid
    # step but is played 10/960 s late; render_midi must sound it there.
    notes = [(10, 36, 110), (TPB, 42, 80), (2 * TPB, 38, 100)]
    audio = render_midi(write_drum_midi(tmp_path / "g.mid", notes), SR)
    kit = DrumKit(SR)
    assert audio.dtype == np.float32
    assert len(audio) >= SR + kit.length(SNARE)    # the last hit rings out
    assert abs(onset(audio) - 10 / 960 * SR) <= MS
    expected = [event(10 / 960, [KICK], 110), event(0.5, [CHH], 80), event(1.0, [SNARE], 100)]
    assert np.allclose(audio, render_hits(expected, SR, len(audio), kit=kit), atol=1e-6)
