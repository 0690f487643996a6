"""Bar generators: the next bar of a groove, and a fill, one bar at a time.

Two models, one network (:class:`BarModel`), after MTG's GrooveTransformer
(a Transformer encoder that writes a whole pattern at once from the
partner's groove) with GrooVAE's hits/velocities/offsets (Gillick et al.
2019) on the grid that holds 16ths and triplets together (R-VAE, Vigliensoni
et al. 2020; :data:`GRID`):

* **continuation** — bar k+1 from the drums' bars k−1 and k, the partner's
  rhythm (onsets with accents, Tap2Drum-like, as drumify reads them), and a
  style (the Groove MIDI Dataset's labels, :data:`STYLES`);
* **fill** — a fill bar from the groove bar it leaves (bars k−1, k) and the style.

Every step of the bar to write sees, side by side, the same step of each
context bar (hits, velocities, offsets), the partner's onset there (onset,
accent, offset), and where the step is in its beat and bar; the style and two
flags (drums given, partner given) are added to every step. A few
Transformer layers let each step see the whole bar, and three heads give hit
logits, velocities (sigmoid) and offsets (tanh × 0.5 step); a linear path
from each step's inputs to its outputs is added to the heads (copying the
last bar or the partner's onsets is linear, and learnt fast that way). Hits are drawn
independently per cell, as GrooveTransformer does: the whole bar in one
forward pass, which is what makes a bar cost about a millisecond.

Training (:mod:`rolypoly.pretrain.train_generate`) hides the partner in some
bars and the drums in others, so that one network knows three ways to write
the next bar; :func:`follow_weights` blends them (the ``follow`` control):
drums only (0: keep the pattern), both (0.5: as the dataset's drummers
did), partner only (1: play the partner's rhythm in the style).

The loss is GrooVAE's eq. (4): hit cross-entropy over every cell plus
squared velocity and offset errors on the cells the drummer hit.

Examples
--------
>>> model = BarModel("continuation", d_model=16, layers=1, heads=2)
>>> x = torch.zeros(2, STEPS_PER_BAR, model.n_inputs)
>>> logits, v, o = model(x, torch.zeros(2, dtype=torch.long), torch.ones(2, 2))
>>> tuple(logits.shape)
(2, 48, 9)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .drum_map import N_CLASSES
from .errors import CheckpointError, RolypolyError
from .groove_grid import steps_per_beat
from .paths import SHIPPED_WEIGHTS

# -- the grid of generated bars (one place) -----------------------------------------------------
#: The generated bars' grid: :data:`rolypoly.groove_grid.GRIDS`' "triplet", 12 steps a quarter
#: note, so 16ths (every 3 steps), 8th-note triplets (4) and 16th-note triplets (2) all land
#: on a step: swing, shuffle and trap hats need both (R-VAE's compound grid).
GRID = "triplet"
STEPS_PER_BEAT = steps_per_beat(GRID)
BEATS_PER_BAR = 4
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
#: Bars of drums a model reads before the bar it writes.
CONTEXT_BARS = 2
#: The Groove MIDI Dataset's styles (the first word of info.csv's ``style``), most takes first.
STYLES = ("rock", "funk", "jazz", "latin", "hiphop", "soul", "afrocuban", "punk", "neworleans",
          "country", "pop", "reggae", "gospel", "afrobeat", "dance", "blues", "highlife", "middleeastern")
NO_STYLE = len(STYLES)  # "any style": the embedding trained on bars whose style was hidden
KINDS = ("continuation", "fill")

# -- model knobs -------------------------------------------------------------------------------
D_MODEL = 64           # small: a bar in about a millisecond, trained in minutes on one thread
LAYERS = 2
HEADS = 4
FF_MULT = 2            # feed-forward width = FF_MULT × D_MODEL
DROPOUT = 0.1
OFFSET_RANGE = 0.5     # offsets span half a step either way
#: ``pocket`` = ±1 moves the class that leans most (:func:`pocket_direction`) by this many
#: steps (12.5 ms at 120 bpm), laid back (+) or pushed (−); the others in proportion.
POCKET_STEPS = 0.3
#: ``density`` 0..1 adds (2·density − 1) × this to every hit logit: 0.5 is the model as trained.
DENSITY_LOGIT = 3.0

ROW = 3 * N_CLASSES    # one step of H, V and O side by side
PARTNER = 3            # one step of the partner: onset 0/1, accent 0..1, offset in steps
POSITION = STEPS_PER_BEAT + 2
WEIGHTS_DIR = SHIPPED_WEIGHTS


def style_index(style, *, strict: bool = True) -> int:
    """Index of a style name in :data:`STYLES` (None or "" or "any": :data:`NO_STYLE`).

    Spelling is forgiving ("Hip-Hop" is "hiphop"); an unknown name raises
    RolypolyError naming the styles, or gives NO_STYLE when not ``strict``.

    >>> style_index("Hip-Hop"), style_index(None)
    (4, 18)
    """
    if style is None:
        return NO_STYLE
    key = str(style).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if key in ("", "any", "none"):
        return NO_STYLE
    if key in STYLES:
        return STYLES.index(key)
    if strict:
        raise RolypolyError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    return NO_STYLE


def position_features(steps: int = STEPS_PER_BAR) -> np.ndarray:
    """Where each step of a bar is: one-hot step in the beat, sine and cosine of the bar phase.

    >>> position_features().shape
    (48, 14)
    """
    t = np.arange(steps)
    phase = 2 * np.pi * t / steps
    return np.concatenate([np.eye(STEPS_PER_BEAT)[t % STEPS_PER_BEAT], np.sin(phase)[:, None],
                           np.cos(phase)[:, None]], axis=1).astype(np.float32)


def step_inputs(context, partner=None) -> np.ndarray:
    """The per-step input of a batch of bars: context rows | partner | position.

    Parameters
    ----------
    context : array (N, bars, S, 27)
        The drums' last bars, oldest first, each step H|V|O.
    partner : array (N, S, 3), optional
        The partner's onset, accent and offset per step (omitted: a model without partner input).

    Returns
    -------
    np.ndarray (N, S, bars·27 [+ 3] + 14) float32
    """
    context = np.asarray(context, np.float32)
    n, bars, S, _ = context.shape
    parts = [context.transpose(0, 2, 1, 3).reshape(n, S, bars * ROW)]
    if partner is not None:
        parts.append(np.asarray(partner, np.float32).reshape(n, S, PARTNER))
    parts.append(np.broadcast_to(position_features(S), (n, S, POSITION)))
    return np.concatenate(parts, axis=-1)


class BarModel(nn.Module):
    """Per-step inputs → Transformer encoder over the bar → hit, velocity and offset heads.

    ``forward(x, style, flags)``: ``x`` (batch, steps, n_inputs) from
    :func:`step_inputs`, ``style`` (batch,) indices, ``flags`` (batch, 2):
    drums given, partner given (0 or 1).
    """

    def __init__(self, kind: str = "continuation", d_model: int = D_MODEL, layers: int = LAYERS,
                 heads: int = HEADS, ff_mult: int = FF_MULT, dropout: float = DROPOUT,
                 context_bars: int = CONTEXT_BARS, grid: str = GRID):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown bar model {kind!r}; choose one of {', '.join(KINDS)}")
        if grid != GRID:
            raise ValueError(f"bar models play the {GRID} grid, not {grid}")
        self.kind, self.d_model, self.layers, self.heads = kind, d_model, layers, heads
        self.ff_mult, self.dropout, self.context_bars, self.grid = ff_mult, dropout, context_bars, grid
        # A fill is written from the groove it leaves: no partner input.
        self.partner = kind == "continuation"
        self.n_inputs = context_bars * ROW + (PARTNER if self.partner else 0) + POSITION
        self.inp = nn.Linear(self.n_inputs, d_model)
        self.style = nn.Embedding(len(STYLES) + 1, d_model)
        self.flags = nn.Linear(2, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, ROW)
        # A straight path from each step's inputs to its outputs: "hit where the last bar hit" and
        # "hit where the partner played" are linear, and learnt in a few hundred steps this way.
        self.skip = nn.Linear(self.n_inputs, ROW)
        # The pushed / laid-back direction (:func:`pocket_direction`), in steps per unit of the knob,
        # and the residual offset spread per class (temperature > 0 draws offsets with it).
        self.register_buffer("pocket", torch.zeros(N_CLASSES))
        self.register_buffer("offset_sigma", torch.zeros(N_CLASSES))

    def config(self) -> dict:
        return {"kind": self.kind, "d_model": self.d_model, "layers": self.layers, "heads": self.heads,
                "ff_mult": self.ff_mult, "dropout": self.dropout, "context_bars": self.context_bars,
                "grid": self.grid}

    def forward(self, x: torch.Tensor, style: torch.Tensor, flags: torch.Tensor):
        h = self.inp(x) + (self.style(style) + self.flags(flags))[:, None]
        h = self.norm(self.encoder(h))
        logits, v, o = (self.head(h) + self.skip(x)).split(N_CLASSES, dim=-1)
        return logits, torch.sigmoid(v), OFFSET_RANGE * torch.tanh(o)

    def loss(self, x, style, flags, H, V, O) -> tuple[torch.Tensor, dict]:
        """Eq. (4) per bar, averaged over the batch, and its parts."""
        logits, v, o = self(x, style, flags)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, H, reduction="none")
        vel, off = (v - V) ** 2 * H, (o - O) ** 2 * H
        per_bar = (bce + vel + off).sum(dim=(1, 2))
        with torch.no_grad():
            n_hits = H.sum().clamp_min(1.0)
            parts = {"hit_bce": float(bce.mean()), "velocity_mse": float(vel.sum() / n_hits),
                     "offset_mse": float(off.sum() / n_hits), "hits": float(n_hits)}
        return per_bar.mean(), parts


def decode_hits(logits, temperature: float = 0.0, rng=None) -> np.ndarray:
    """Hits (0/1) of bars from their hit logits (…, steps, 9).

    Temperature 0: the cells with p > 0.5; but a bar where those are fewer
    than half its expected number of hits (the sum of p) plays that many of
    its most likely cells instead. Cells are drawn one by one, so where no
    single cell is likely (a fill: a roll could start on any of several
    steps) p > 0.5 alone would play nothing at all. Above 0: every cell
    drawn from sigmoid(logit / temperature) with ``rng``.

    >>> decode_hits(np.array([[[2.0, -0.1, -0.2, -5.0]]])).tolist()
    [[[1.0, 0.0, 0.0, 0.0]]]
    >>> decode_hits(np.array([[[-0.1, -0.2, -0.3, -5.0]]])).tolist()
    [[[1.0, 0.0, 0.0, 0.0]]]
    """
    logits = np.asarray(logits, np.float64)
    if temperature > 0:
        p = 1.0 / (1.0 + np.exp(-logits / temperature))
        return (rng.random(logits.shape) < p).astype(np.float32)
    flat = logits.reshape(*logits.shape[:-2], -1)
    expected = np.rint((1.0 / (1.0 + np.exp(-flat))).sum(-1)).astype(np.int64)
    likely = (flat > 0).sum(-1)
    k = np.where(2 * likely < expected, expected, likely)[..., None]
    rank = np.argsort(np.argsort(-flat, axis=-1, kind="stable"), axis=-1, kind="stable")
    return (rank < k).astype(np.float32).reshape(logits.shape)


def follow_weights(follow: float) -> tuple[float, float, float]:
    """Weights of the three ways of writing a bar: drums only, both, partner only.

    0 → drums only (keep the pattern), 0.5 → both (as the dataset's drummers),
    1 → partner only; in between, a straight-line blend of the two nearest.

    >>> follow_weights(0.0), follow_weights(0.25), follow_weights(1.0)
    ((1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0))
    """
    f = float(follow)
    if f <= 0.5:
        return (1.0 - 2 * f, 2 * f, 0.0)
    return (0.0, 2 - 2 * f, 2 * f - 1.0)


def pocket_direction(O, H, take, *, min_hits: int = 20) -> tuple[np.ndarray, float]:
    """How much each drum class moves when a drummer plays a whole take ahead or behind, learned from takes.

    For every take, its lean (the mean offset of all its hits) and the mean
    offset of each class with at least ``min_hits`` hits; a class's
    direction is the slope of its mean on the lean across takes (least
    squares), divided by the largest slope. Positive is later (laid back).
    Returns the direction and the spread (σ, in steps) of the takes' lean.

    Parameters
    ----------
    O, H : arrays (bars, S, 9)
    take : array (bars,) take index of each bar
    """
    O, H, take = np.asarray(O), np.asarray(H) > 0.5, np.asarray(take)
    lean, means = [], []
    for k in np.unique(take):
        h, o = H[take == k], O[take == k]
        n = h.sum(axis=(0, 1))
        if n.sum() < min_hits:
            continue
        lean.append(o[h].mean())
        means.append(np.where(n >= min_hits, (o * h).sum(axis=(0, 1)) / np.maximum(n, 1), np.nan))
    lean, means = np.asarray(lean), np.asarray(means)
    slope = np.zeros(means.shape[1])
    for c in range(means.shape[1]):
        ok = np.isfinite(means[:, c])
        if ok.sum() >= 3:
            x = lean[ok] - lean[ok].mean()
            slope[c] = (x * (means[ok, c] - means[ok, c].mean())).sum() / max((x * x).sum(), 1e-12)
    direction = np.clip(slope, 0.0, None)  # a class that leans against the kit stays put
    return (direction / max(direction.max(), 1e-12)).astype(np.float32), float(np.std(lean))


# ----------------------------------------------------------------------------- weights

def default_bar_weights(kind: str) -> Path:
    """Path of the shipped weights of a bar model (``continuation`` or ``fill``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown bar model {kind!r}; choose one of {', '.join(KINDS)}")
    return WEIGHTS_DIR / f"generate_{kind}.safetensors"


def save_bar_model(model: BarModel, path, metadata: dict | None = None) -> None:
    """Save weights (safetensors only) with the model's config in the file header."""
    from .agents import save_agent  # the same file layout as the other models'

    save_agent(model, path, metadata)


def load_bar_model(kind: str, path=None) -> BarModel:
    """Load a bar model; the shipped weights where ``path`` is omitted.

    Raises
    ------
    CheckpointError
        One line naming the file: missing, not safetensors (pickles are
        refused), not a bar model, or one of the other kind.
    """
    from .agents import read_weights

    path = os.fspath(path or default_bar_weights(kind))
    hint = f" (train it with: rolypoly pretrain {kind})" if path == os.fspath(default_bar_weights(kind)) else ""
    header, tensors = read_weights(path, missing_hint=hint)
    try:
        model = BarModel(**json.loads(header["config"]))
        model.load_state_dict(tensors, strict=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a rolypoly bar model ({str(e).splitlines()[0][:120]})") from None
    if model.kind != kind:
        raise CheckpointError(f"{path}: a {model.kind} model, not {kind}")
    model.eval()
    return model
