"""Offline groove tools: humanize, drumify, infill and groove transfer on MIDI of any length.

The models play 2-bar windows (:mod:`rolypoly.groove_model`). A piece is
played window by window with a 1-bar hop: each window starts with the bar
the previous window already played (given to the model as a prefix, so the
performance carries on from it) and adds one new bar; :func:`rolypoly.groove_grid.stitch`
puts the bars together. The tempo map and meters of the input are kept.

Examples
--------
>>> before, after = humanize_midi("beat.mid", "human.mid", temperature=0.5, seed=1)   # doctest: +SKIP
>>> plot_groove(before, after, "human.png")                                          # doctest: +SKIP
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .drum_map import CLASS_NAMES
from .errors import RolypolyError
from .groove_grid import Groove, groove_from_notes, read_groove, stitch, window_bounds, windows, write_groove
from .score import TempoMap, read_drum_notes

#: Files drumify reads as audio (anything else is read as MIDI).
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")
TICKS_PER_BEAT = 480
#: Tap velocities of a recording: the quietest and the loudest onsets map here.
TAP_VELOCITY_RANGE = (40, 120)
#: Window steps played in one batch (humanize, transfer): bounds the memory of a long piece.
BATCH_STEPS = 16384


def perform(model, groove: Groove, *, inputs=None, H_target=None, z_from=None,
            temperature: float = 0.0, velocity_spread: float | None = None, seed: int | None = None) -> Groove:
    """Play a whole piece with a model, window by window (see the module docstring).

    Parameters
    ----------
    model : rolypoly.groove_model.GrooveModel
    groove : Groove
        The piece (its bars, tempo map and, unless ``inputs`` is given, the
        material the task input is made from).
    inputs : (H, V, O) windows, optional
        The model's input per window; by default :func:`task_input` of the
        piece's windows.
    H_target : array (N, T, 9), optional
        Transfer: the hits to play, per window.
    z_from : (H, V, O) windows, optional
        Transfer: the groove windows; window k of the piece takes the groove
        of window k modulo their number.
    temperature, velocity_spread, seed : see :meth:`GrooveModel.generate`
        (``velocity_spread`` None: the model's default)

    Returns
    -------
    Groove
        The performance, with the same bars and tempo map.
    """
    from .groove_model import task_input

    if inputs is None:
        inputs = task_input(model.task, *windows(groove), instrument=model.instrument)
    bounds = window_bounds(groove.bar_starts)
    # At temperature 0 only velocities are drawn: a fixed seed keeps the piece the same every
    # time, and a seed per window keeps bars from repeating one another's velocity pattern.
    base_seed = seed if seed is not None or temperature > 0 else 0
    common = {} if velocity_spread is None else {"velocity_spread": velocity_spread}
    if model.task in ("humanize", "transfer") and model.networks()[0].feedback == "hits":
        # These tasks play given hits and the decoder hears only hits: no window depends on
        # what another one played, so the whole piece is one batch (an ensemble of four
        # plays 100 bars in well under a second instead of several).
        # The batch goes in chunks of about BATCH_STEPS steps: the decoder's inputs take a few
        # kB a step, so a whole hour in one batch would take GBs; a chunk takes ~100 MB.
        n, T = len(bounds), inputs[0].shape[1]
        size = max(1, BATCH_STEPS // T)
        outs = []
        for j, a in enumerate(range(0, n, size)):
            part = slice(a, a + size)
            kwargs = {}
            if H_target is not None:
                kwargs["H_target"] = H_target[part]
            if z_from is not None:
                clip = np.arange(n)[part] % len(z_from[0])
                kwargs["z_from"] = tuple(p[clip] for p in z_from)
            outs.append(model.generate(*(p[part] for p in inputs), temperature=temperature,
                                       seed=None if base_seed is None else base_seed + j, **common, **kwargs))
        H, V, O = (np.concatenate(p) for p in zip(*outs))
        return groove.with_parts(*stitch(H, V, O, groove.bar_starts))
    outs = []
    for k, (a, b) in enumerate(bounds):
        kwargs = {}
        if H_target is not None:
            kwargs["H_target"] = H_target[k:k + 1]
        if z_from is not None:
            j = k % len(z_from[0])
            kwargs["z_from"] = tuple(part[j:j + 1] for part in z_from)
        prefix = None
        if k:  # the bars this window shares with the one before are already played
            done = int(a - bounds[k - 1][0])
            shared = int(min(bounds[k - 1][1], b) - a)
            prefix = tuple(p[:, done:done + shared] for p in outs[-1])
        out = model.generate(*(part[k:k + 1] for part in inputs), temperature=temperature,
                             seed=None if base_seed is None else base_seed + k, prefix=prefix, **common, **kwargs)
        outs.append(out)
    H, V, O = (np.concatenate(p) for p in zip(*outs))
    return groove.with_parts(*stitch(H, V, O, groove.bar_starts))


def _model(task: str, weights=None, grid: str | None = None):
    from .groove_model import default_groove_weights

    path = Path(weights or default_groove_weights(task))
    try:
        stat = path.stat()
        key = (task, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # missing: the loader says so in its own words
        key = (task, str(path), 0, 0)
    model = _loaded(*key)
    if grid is not None and grid != model.grid:
        raise RolypolyError(f"the {task} model plays the {model.grid} grid, not {grid}")
    return model


@functools.lru_cache(maxsize=8)
def _loaded(task: str, path: str, mtime_ns: int, size: int):
    """A groove model, loaded once per process and file version (the model only plays: never changed)."""
    from .groove_model import load_groove_model  # torch: only when a model plays

    return load_groove_model(task, path)


def humanize_midi(in_path, out_path, *, weights=None, temperature: float = 0.0,
                  velocity_spread: float | None = None,
              seed: int | None = None) -> tuple[Groove, Groove]:
    """Perform a drum score: the same hits, with velocities and timing a drummer would play.

    Parameters
    ----------
    in_path : drum MIDI file (velocities and timing in it are ignored: it is read as a score)
    out_path : MIDI file to write
    weights : path, optional
        Humanize model weights; the shipped ones where omitted.
    temperature : float
        0: the most likely performance; above 0, a different one each seed.
    velocity_spread : float, optional
        How widely velocities vary around the model's prediction (default
        :data:`rolypoly.groove_model.VELOCITY_SPREAD`; 0: the mean).
    seed : int, optional

    Returns
    -------
    before, after : Groove
    """
    model = _model("humanize", weights)
    before = read_groove(in_path, grid=model.grid)
    after = perform(model, before, temperature=temperature, velocity_spread=velocity_spread, seed=seed)
    write_groove(after, out_path)
    return before, after


def taps_from_audio(path, *, bpm: float | None = None, grid: str = "16th") -> Groove:
    """A partner's recording as taps on a grid: one tap per detected onset.

    Onsets come from the project's live onset detector (as
    :func:`rolypoly.onsets.detect_file`), loudness from the peak of the
    30 ms after each onset. The tempo is ``bpm``, or librosa's estimate;
    the first onset is taken as the first downbeat, the meter as 4/4.
    """
    from rolypoly.audio_io import load_audio
    from rolypoly.onsets import detect

    sr = 48000
    audio = load_audio(path, sr)
    onsets, _, _ = detect(audio, sample_rate=sr)
    name = os.fspath(path)
    if len(onsets) == 0:
        raise RolypolyError(f"{name}: no onsets found in the recording")
    if bpm is None:
        import librosa

        tempo, _ = librosa.beat.beat_track(y=audio, sr=sr)
        bpm = float(np.atleast_1d(tempo)[0])
        if not bpm > 0:
            raise RolypolyError(f"{name}: could not estimate a tempo; give one with --bpm")
    _check_bpm(bpm)
    peak = np.array([np.abs(audio[int(t * sr):int(t * sr) + int(0.03 * sr) + 1]).max() for t in onsets])
    db = 20 * np.log10(np.maximum(peak, 1e-6))
    lo, hi = TAP_VELOCITY_RANGE
    span = max(float(db.max() - db.min()), 1e-9)
    vel = lo + (hi - lo) * (db - db.min()) / span if len(db) > 1 else np.full(len(db), hi)
    ticks = (onsets - onsets[0]) * bpm / 60.0 * TICKS_PER_BEAT
    tmap = TempoMap(TICKS_PER_BEAT, tempi=[(0, int(round(60e6 / bpm)))], meters=[(0, 4, 4)])
    notes = np.stack([ticks, np.full(len(ticks), 2), np.rint(vel)], axis=1)
    return groove_from_notes(notes, tmap, grid=grid, name=os.path.splitext(os.path.basename(name))[0])


def _check_bpm(bpm) -> None:
    from .score import TEMPO_RANGE_BPM

    lo, hi = TEMPO_RANGE_BPM
    if not (np.isfinite(bpm) and lo <= bpm <= hi):
        raise RolypolyError(f"tempo {bpm:g} bpm is not a playable tempo ({lo:g}-{hi:g} bpm)")


def read_taps(path, *, bpm: float | None = None, grid: str = "16th") -> Groove:
    """Taps from a MIDI file (every note of any channel) or from a recording (see :func:`taps_from_audio`).

    ``bpm`` sets the tempo of a recording, or replaces the tempo of a MIDI file.
    """
    if os.fspath(path).lower().endswith(AUDIO_SUFFIXES):
        return taps_from_audio(path, bpm=bpm, grid=grid)
    notes, tmap, warnings = read_drum_notes(path, taps=True)
    if bpm is not None:
        _check_bpm(bpm)
        tmap = TempoMap(tmap.ticks_per_beat, tempi=[(0, int(round(60e6 / bpm)))], meters=tmap.meters)
    taps = groove_from_notes(notes, tmap, grid=grid, name=os.path.splitext(os.path.basename(os.fspath(path)))[0])
    taps.warnings = warnings
    return taps


def drumify_midi(in_path, out_path, *, bpm: float | None = None, weights=None, temperature: float = 0.0,
                 velocity_spread: float | None = None,
             seed: int | None = None) -> tuple[Groove, Groove]:
    """Turn a tapped rhythm (MIDI) or a partner's recording (audio) into a drum part (Tap2Drum).

    Returns
    -------
    taps, drums : Groove
    """
    model = _model("drumify", weights)
    taps = read_taps(in_path, bpm=bpm, grid=model.grid)
    drums = perform(model, taps, temperature=temperature, velocity_spread=velocity_spread, seed=seed)
    write_groove(drums, out_path)
    return taps, drums


def infill_midi(in_path, out_path, *, instrument: str = "hihat", weights=None, temperature: float = 0.0,
                velocity_spread: float | None = None,
            seed: int | None = None) -> tuple[Groove, Groove]:
    """Write a new part for one instrument (default the hi-hat) to go with the rest of the kit.

    The instrument's hits in the input are replaced; the other instruments
    are kept as played. The model must have been trained for that instrument.
    """
    model = _model("infill", weights)
    if instrument != model.instrument:
        raise RolypolyError(f"the infill model adds the {model.instrument}, not the {instrument}; train one with "
                            f"rolypoly pretrain groove --task infill --instrument {instrument} --out DIR "
                            "and pass --weights DIR/groove_infill.safetensors")
    before = read_groove(in_path, grid=model.grid)
    after = perform(model, before, temperature=temperature, velocity_spread=velocity_spread, seed=seed)
    write_groove(after, out_path)
    return before, after


def transfer_midi(groove_path, score_path, out_path, *, weights=None, temperature: float = 0.0,
                  velocity_spread: float | None = None,
              seed: int | None = None) -> tuple[Groove, Groove]:
    """Play the score of one file with the groove (velocities and timing) of another.

    The score keeps its hits, bars and tempo map. A groove clip shorter than
    the score is repeated: the score's window k takes the groove of the
    clip's window k modulo its number of windows.

    Returns
    -------
    score, performed : Groove
    """
    model = _model("transfer", weights)
    clip = read_groove(groove_path, grid=model.grid)
    score = read_groove(score_path, grid=model.grid)
    H, V, O = windows(score)
    clip_windows = windows(clip)
    if clip_windows[0].shape[1] != H.shape[1]:
        raise RolypolyError(f"{groove_path}: its windows have {clip_windows[0].shape[1]} steps, the score's "
                            f"{H.shape[1]}: groove and score need the same meter")
    performed = perform(model, score, inputs=(H, V, O), H_target=H, z_from=clip_windows,
                        temperature=temperature, velocity_spread=velocity_spread, seed=seed)
    write_groove(performed, out_path)
    return score, performed


def plot_groove(before: Groove, after: Groove, path, *, bars: int | None = 4, title: str | None = None,
                labels=("before", "after")) -> None:
    """Before/after piano roll (PNG) of the first ``bars`` bars (None: all).

    One row per drum class; each hit is a dot at its played time, its size
    and colour the velocity. Thin lines mark the grid steps, thicker ones
    beats and bars, so timing off the grid shows at a glance.
    """
    from .plotting import figure

    n_bars = min(before.n_bars, after.n_bars) if bars is None else min(bars, before.n_bars, after.n_bars)
    stop = int(before.bar_starts[n_bars])
    tpb = before.tempo_map.ticks_per_beat
    end_beat = (before.step_tick[stop - 1] + before.step_ticks[stop - 1]) / tpb
    fig, axes = figure(2, 1, figsize=(max(8.0, 3.0 * n_bars), 5.5), sharex=True)
    for ax, g, label in zip(axes, (before, after), labels):
        s, c = np.nonzero(g.H[:stop] > 0.5)
        beats = (g.step_tick[s] + g.O[s, c] * g.step_ticks[s]) / tpb
        v = g.V[s, c]
        dots = ax.scatter(beats, c, s=15 + 70 * v, c=v, cmap="viridis", vmin=0, vmax=1, edgecolors="k",
                          linewidths=0.3, zorder=3)
        step_beats = g.step_tick[:stop] / tpb
        for k, x in enumerate(step_beats):
            on_bar = k in set(g.bar_starts[:-1].tolist())
            on_beat = abs(x - round(x)) < 1e-9
            ax.axvline(x, color="0.4" if on_bar else "0.7" if on_beat else "0.9", lw=1.2 if on_bar else 0.6,
                       zorder=1)
        ax.set_yticks(range(len(CLASS_NAMES)), [n.replace("_", " ") for n in CLASS_NAMES], fontsize=7)
        ax.set_ylim(-0.7, len(CLASS_NAMES) - 0.3)
        ax.set_xlim(-0.3, end_beat)
        ax.set_ylabel(f"{label}\n({int((g.H[:stop] > 0.5).sum())} hits)")
    fig.colorbar(dots, ax=axes, shrink=0.6, label="velocity (0-1)")
    axes[-1].set_xlabel("beats (lines: grid steps, beats, bars)")
    axes[0].set_title(title or f"{after.name}: first {n_bars} bars before and after")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def describe(groove: Groove) -> str:
    """One line about a performance: hits, velocity range, timing spread in ms."""
    hit = groove.H > 0.5
    if not hit.any():
        return "no hits"
    ms = (groove.O * (groove.step_ticks[:, None] / groove.tempo_map.ticks_per_beat)
          * (60_000.0 / groove.bpm[:, None]))[hit]
    vel = np.rint(groove.V[hit] * 127)
    return (f"{int(hit.sum())} hits, velocities {int(vel.min())}-{int(vel.max())}, "
            f"timing {ms.mean():+.1f} ± {ms.std():.1f} ms")

