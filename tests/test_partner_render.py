"""Partner takes rendered from sampled instruments (FluidSynth), and the onset network's training data."""
from __future__ import annotations

import numpy as np
import pytest

from rolypoly.pretrain import partner_render as pr
from rolypoly.pretrain.train_onsets import CARE_HOPS, POSITIVE_HOPS, labels, pick, plan_takes, score_hops

SR = 48000


@pytest.fixture(scope="module")
def small_font():
    path = pr.find_soundfont("timgm6mb")
    if path is None:
        pytest.skip("TimGM6mb soundfont not installed (apt-get install timgm6mb-soundfont)")
    pytest.importorskip("fluidsynth", reason="pyfluidsynth/libfluidsynth not available")
    font = pr.Soundfont(path, SR)
    yield font
    font.close()


def test_rendered_onsets_are_where_the_notes_start(small_font):
    p = pr.Performance(program=0)
    for k, t in enumerate((0.2, 0.7, 1.3)):
        p.note(t, 60 + 4 * k, 100, 0.3, p.gesture())
    audio, onsets = pr.render(p, small_font, tail_s=0.3)
    assert audio.dtype == np.float32 and len(onsets) == 3
    for t, on in zip((0.2, 0.7, 1.3), onsets):
        assert 0.0 <= on - t < 0.02                 # at the note-on, plus the sample's own lead-in
        i = int(round(on * SR))
        before = np.abs(audio[i - 480:i - 48]).max()
        after = np.abs(audio[i:i + 480]).max()
        assert after > 5 * before                   # the attack is right there


def test_a_strum_is_one_onset_at_its_first_string(small_font):
    p = pr.Performance(program=25)
    g = p.gesture()
    for i, key in enumerate((40, 47, 52, 56, 59, 64)):
        p.note(0.3 + 0.006 * i, key, 90, 0.8, g)
    audio, onsets = pr.render(p, small_font, tail_s=0.2)
    assert len(onsets) == 1
    first_string = 0.3 + small_font.lead(25, 40, 90) / SR
    assert abs(onsets[0] - np.ceil(0.3 * SR / 64) * 64 / SR - small_font.lead(25, 40, 90) / SR) < 1e-9
    assert abs(onsets[0] - first_string) < 64 / SR


@pytest.mark.parametrize("style", sorted(pr.STYLES))
def test_every_style_renders_a_few_seconds(small_font, style):
    take = pr.render_take(style, seed=5, soundfont=small_font, seconds=2.5)
    assert take.audio.dtype == np.float32 and np.all(np.isfinite(take.audio))
    assert len(take.onsets) >= 2 and np.all(np.diff(take.onsets) >= pr.MIN_GAP_S - 1.5 / 750)
    assert take.onsets[-1] < len(take.audio) / SR
    fresh = pr.Soundfont(small_font.path, SR)
    try:
        first = pr.render_take(style, seed=5, soundfont=fresh, seconds=2.5)
    finally:
        fresh.close()
    again = pr.Soundfont(small_font.path, SR)
    try:                                 # same seed on a fresh synthesizer: the same take
        np.testing.assert_array_equal(first.audio, pr.render_take(style, seed=5, soundfont=again, seconds=2.5).audio)
    finally:
        again.close()


def test_room_and_room_tone():
    rng = np.random.default_rng(3)
    x = np.zeros(SR, np.float32)
    x[1000] = 1.0
    y = pr.play_room(x, rng, SR)
    assert np.flatnonzero(np.abs(y) > 0.5 * np.abs(y).max())[0] >= 1000   # nothing before the direct sound
    tone = pr.room_tone(np.random.default_rng(1), 2.0, SR)
    assert tone.shape == (2 * SR,) and np.abs(tone - tone.mean()).max() < 0.1


def test_training_plan_and_labels():
    assert plan_takes(12, 7) == plan_takes(12, 7)
    styles = {p[0] for p in plan_takes(200, 7)}
    assert set(pr.STYLES) <= styles and None in styles            # every style, and some room tone
    target, care, ago = labels(20, np.array([64 * 5 + 10, 64 * 6 + 3]))
    end = 6 + POSITIVE_HOPS                                      # the second onset's positives end here
    assert target[5:end].all() and target[:5].sum() == 0 and target[end:].sum() == 0
    assert not care[end:end + CARE_HOPS].any() and care[end + CARE_HOPS:].all() and care[:end].all()
    assert ago[5] == pytest.approx((64 * 6 - (64 * 5 + 10)) / 64)
    assert pick(np.array([0.9, 0.9, 0.1, 0.9]), np.full(4, -90.0), 0.5, 0.3, -60.0, 1).tolist() == []
    s = score_hops([64 * 10], [11])
    assert s["tp"] == 1 and 0 < s["latencies"][0] < 3.0


def test_the_c_kernel_hears_what_the_numpy_reference_hears(small_font):
    """One hop's work in C (rolypoly/onsets_core.c) against the numpy reference, on rendered takes:
    the same onsets, where they are, and the same descriptors (within float tolerance)."""
    from rolypoly.onsets import detect

    compared = 0
    for seed, style in enumerate(("guitar_strum", "piano_legato", "bass_line", "keys_comp", "synthetic")):
        take = pr.render_take(style, 300 + seed, small_font, seconds=4.0)
        audio = take.audio.copy()
        if seed == 0:
            audio[SR:SR + 4800] = np.clip(audio[SR:SR + 4800] * 40, -1, 1)   # clipping: the trigger is deaf
        ref_on, ref_avail, ref_desc = detect(audio, SR, kernel="numpy")
        on, avail, desc = detect(audio, SR, kernel="c")
        assert len(on) == len(ref_on), style
        np.testing.assert_allclose(on, ref_on, atol=2 / SR, err_msg=style)
        np.testing.assert_allclose(avail, ref_avail, atol=0, err_msg=style)
        np.testing.assert_allclose(desc, ref_desc, atol=1e-6, err_msg=style)
        compared += len(on)
    assert compared > 40
