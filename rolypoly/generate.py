"""The next bar, as a live worker asks for it: ``next_bar(state, controls) -> rows``.

While bar k plays, a worker thread calls :meth:`BarWriter.next_bar` with what
it knows (the drums' last bars, the partner's onsets of the last bar, the
controls) and gets bar k+1 as rows on the triplet grid
(:data:`rolypoly.generate_model.GRID`). A call is one forward pass of a small
network on fixed-size arrays, no loop over steps, so its time is bounded
(``rolypoly bench generate --json OUT`` measures it); nothing here blocks,
logs or touches a file after the models are loaded.

The partner's last bar stands for its next one: a bassist's riff repeats,
and the continuation model was trained with the partner's rhythm taken from
the very bar it writes (:mod:`rolypoly.pretrain.train_generate`).

Controls (:class:`Controls`): ``follow`` 0 keeps the drums' pattern, 1 plays
the partner's rhythm (:func:`rolypoly.generate_model.follow_weights`);
``density`` shifts every hit logit; ``temperature`` 0 plays the most likely
bar (:func:`rolypoly.generate_model.decode_hits`), above it hits (and
offsets) are drawn; ``seed`` makes drawing
repeatable; ``style`` one of :data:`rolypoly.generate_model.STYLES`;
``pocket`` −1 (pushed) … +1 (laid back) shifts the offsets along the
per-class direction learned from the dataset's takes
(:func:`rolypoly.generate_model.pocket_direction`).

Examples
--------
>>> writer = BarWriter.load()                                           # doctest: +SKIP
>>> state = BarState.from_bars(H, V, O, partner=partner_grid([0, .25, .5, .75]))  # doctest: +SKIP
>>> rows = writer.next_bar(state, Controls(follow=0.7, style="funk"))  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .drum_map import N_CLASSES
from .errors import RolypolyError
from .generate_model import (CONTEXT_BARS, DENSITY_LOGIT, OFFSET_RANGE, PARTNER, STEPS_PER_BAR,
                             BarModel, decode_hits, follow_weights, load_bar_model, step_inputs, style_index)
from .groove_grid import MAX_VELOCITY

#: One generated row: a step of the bar with at least one hit.
ROW_DTYPE = np.dtype([("step", np.int16), ("position", np.float32), ("hits", np.bool_, N_CLASSES),
                      ("velocities", np.uint8, N_CLASSES), ("offsets", np.float32, N_CLASSES)])


#: Fills are drawn, not taken at their most likely: at temperature 0 the fill model plays a snare
#: roll (toms in 33 % of fills, drummers 83 %). KL of per-class hit counts to GMD test fills,
#: ``rolypoly evaluate live-groove --fill-temperature T``: 0 -> 4.90, 0.5 -> 10.8, 0.7 -> 5.8,
#: 0.85 -> 3.3, 1.0 -> 2.73, 1.2 -> 4.3 (beats against fills: 5.69).
FILL_TEMPERATURE = 1.0


@dataclass(frozen=True)
class Controls:
    """What the player reaches while playing; checked on creation (RolypolyError, one line)."""

    follow: float = 0.5
    density: float = 0.5
    temperature: float = 0.0
    seed: int = 0
    style: str | None = None
    pocket: float = 0.0

    def __post_init__(self):
        for name in ("follow", "density"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise RolypolyError(f"{name} must be within [0, 1], not {v!r}")
        if not (np.isfinite(self.pocket) and -1.0 <= self.pocket <= 1.0):
            raise RolypolyError(f"pocket must be within [-1, 1] (pushed .. laid back), not {self.pocket!r}")
        if not (np.isfinite(self.temperature) and 0.0 <= self.temperature <= 5.0):
            raise RolypolyError(f"temperature must be within [0, 5], not {self.temperature!r}")
        style_index(self.style)  # an unknown style: one line naming the styles


@dataclass
class BarState:
    """What the writer knows when it writes the next bar.

    ``drums`` (CONTEXT_BARS, 48, 27): the last bars played, oldest first, each
    step H|V|O (offsets in steps); bars not played yet are zero.
    ``partner`` (48, 3): the partner's last bar on the grid (onset, accent,
    offset in steps; :func:`partner_grid`). ``bar``: the index of the bar to
    write (varies the draw from bar to bar under one seed).
    """

    drums: np.ndarray = field(default_factory=lambda: np.zeros((CONTEXT_BARS, STEPS_PER_BAR, 3 * N_CLASSES),
                                                                np.float32))
    partner: np.ndarray = field(default_factory=lambda: np.zeros((STEPS_PER_BAR, PARTNER), np.float32))
    bar: int = 0

    @classmethod
    def from_bars(cls, H, V, O, *, partner=None, bar: int = 0) -> "BarState":
        """From the last bars as arrays (bars, 48, 9); fewer than CONTEXT_BARS are padded before."""
        H, V, O = (np.asarray(a, np.float32).reshape(-1, STEPS_PER_BAR, N_CLASSES)[-CONTEXT_BARS:]
                   for a in (H, V, O))
        drums = np.zeros((CONTEXT_BARS, STEPS_PER_BAR, 3 * N_CLASSES), np.float32)
        if len(H):
            drums[-len(H):] = np.concatenate([H, V * H, O * H], axis=-1)
        part = np.zeros((STEPS_PER_BAR, PARTNER), np.float32) if partner is None else \
            np.asarray(partner, np.float32).reshape(STEPS_PER_BAR, PARTNER)
        return cls(drums, part, bar)

    def push(self, H, V, O, partner=None) -> None:
        """A bar has been played: it becomes the newest context bar (and the partner's bar, if given)."""
        self.drums[:-1] = self.drums[1:]
        self.drums[-1] = np.concatenate([H, V * H, O * H], axis=-1)
        if partner is not None:
            self.partner[:] = partner
        self.bar += 1


def partner_grid(positions, accents=None) -> np.ndarray:
    """The partner's onsets of one bar on the grid: (48, 3) onset, accent, offset in steps.

    ``positions`` are where the onsets fell, as fractions of the bar (0..1);
    ``accents`` their loudness 0..1 (default 1). Each onset goes to its
    nearest step (one just before the bar line is the next bar's, so it is
    dropped here); two on one step keep the louder.

    >>> g = partner_grid([0.0, 0.26], [1.0, 0.5])
    >>> g[0].tolist(), g[12].astype(float).round(2).tolist()
    ([1.0, 1.0, 0.0], [1.0, 0.5, 0.48])
    """
    pos = np.asarray(positions, np.float64).ravel() * STEPS_PER_BAR
    acc = np.ones_like(pos) if accents is None else np.clip(np.asarray(accents, np.float64).ravel(), 0, 1)
    out = np.zeros((STEPS_PER_BAR, PARTNER), np.float32)
    step = np.rint(pos).astype(np.int64)
    for s, a, p in sorted(zip(step, acc, pos), key=lambda x: x[1]):  # loudest written last
        if 0 <= s < STEPS_PER_BAR:
            out[s] = (1.0, a, np.clip(p - s, -OFFSET_RANGE, OFFSET_RANGE))
    return out


def bar_rows(H, V, O) -> np.ndarray:
    """A bar (48, 9) as rows (:data:`ROW_DTYPE`): the steps with hits, velocities in MIDI, offsets in bars.

    >>> H = np.zeros((48, 9)); H[0, 0] = H[12, 1] = 1
    >>> bar_rows(H, 0.8 * H, 0 * H)["step"].tolist()
    [0, 12]
    """
    H = np.asarray(H) > 0.5
    steps = np.flatnonzero(H.any(axis=1))
    rows = np.zeros(len(steps), ROW_DTYPE)
    rows["step"] = steps
    rows["position"] = steps / STEPS_PER_BAR
    rows["hits"] = H[steps]
    rows["velocities"] = np.where(H[steps], np.clip(np.rint(np.asarray(V)[steps] * MAX_VELOCITY), 1, MAX_VELOCITY), 0)
    rows["offsets"] = np.where(H[steps], np.asarray(O)[steps] / STEPS_PER_BAR, 0.0)
    return rows


class BarWriter:
    """The continuation and fill models, ready to write bars (:meth:`next_bar`, :meth:`fill_bar`)."""

    def __init__(self, continuation: BarModel, fill: BarModel | None = None):
        self.continuation, self.fill = continuation.eval(), None if fill is None else fill.eval()

    @classmethod
    def load(cls, continuation=None, fill=None) -> "BarWriter":
        """The shipped models, or the weights given (CheckpointError, one line, when one does not load)."""
        return cls(load_bar_model("continuation", continuation), load_bar_model("fill", fill))

    @torch.inference_mode()
    def write(self, state: BarState, controls: Controls, *, fill: bool = False):
        """The next bar as arrays H, V, O (48, 9): offsets in steps, velocities 0..1."""
        model = self.fill if fill else self.continuation
        if model is None:
            raise RolypolyError("no fill model loaded")
        drums = np.asarray(state.drums, np.float32)[None]
        have_drums = float(np.any(drums[..., :N_CLASSES] > 0.5))
        partner = np.asarray(state.partner, np.float32)
        have_partner = float(np.any(partner[:, 0] > 0.5))
        if model.partner:
            # Three ways in one batch: drums only, both, partner only (follow blends the one or two
            # it needs). A silent partner leaves only the first: the drums' pattern goes on.
            w = follow_weights(controls.follow) if have_partner else (1.0, 0.0, 0.0)
            if not have_drums:
                w = (0.0, 0.0, 1.0) if have_partner else (1.0, 0.0, 0.0)
            ctx = np.concatenate([drums, drums, 0 * drums])
            part = np.stack([0 * partner, partner, partner])
            flags = np.array([[have_drums, 0.0], [have_drums, have_partner], [0.0, have_partner]], np.float32)
            x = step_inputs(ctx, part)
        else:
            w = (1.0,)
            flags = np.array([[have_drums, 0.0]], np.float32)
            x = step_inputs(drums)
        use = [k for k, wk in enumerate(w) if wk > 0]  # only the ways the blend needs (one or two)
        x, flags, w = x[use], flags[use], [w[k] for k in use]
        style = torch.full((len(x),), style_index(controls.style), dtype=torch.long)
        logits, v, o = model(torch.from_numpy(x), style, torch.from_numpy(flags))
        wt = torch.tensor(w, dtype=torch.float32)[:, None, None]
        logits, v, o = ((a * wt).sum(0).numpy() for a in (logits, v, o))
        logits = logits + DENSITY_LOGIT * (2.0 * controls.density - 1.0)
        rng = np.random.default_rng([int(controls.seed), int(state.bar)])
        H = decode_hits(logits, controls.temperature, rng)
        if controls.temperature > 0:
            o = o + controls.temperature * model.offset_sigma.numpy() * rng.standard_normal(o.shape)
        o = o + controls.pocket * model.pocket.numpy()
        O = np.clip(o, -OFFSET_RANGE, OFFSET_RANGE).astype(np.float32) * H
        return H, (np.clip(v, 1 / MAX_VELOCITY, 1.0) * H).astype(np.float32), O

    def next_bar(self, state: BarState, controls: Controls = Controls()) -> np.ndarray:
        """The next bar of the groove as rows (:data:`ROW_DTYPE`)."""
        return bar_rows(*self.write(state, controls))

    def fill_bar(self, state: BarState, controls: Controls = Controls(),
                 temperature: float = FILL_TEMPERATURE) -> np.ndarray:
        """A fill out of the groove in ``state`` as rows (:data:`ROW_DTYPE`), drawn at ``temperature``."""
        return bar_rows(*self.write(state, replace(controls, temperature=temperature), fill=True))
