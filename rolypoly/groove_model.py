"""Groove generators after GrooVAE: humanize, drumify, infill and groove transfer.

One model, four tasks (Gillick et al. 2019, "Learning to Groove with Inverse
Sequence Transformations"). Each task throws away part of a real 2-bar
performance (:func:`task_input`) and the model learns to put it back:

* ``humanize``: the score (hits only) → velocities and offsets;
* ``drumify`` (Tap2Drum): every hit collapsed into one tapped row, with the
  tap's velocity and timing → which drums, how hard, when;
* ``infill``: every instrument but one (the hi-hat by default) → that one;
* ``transfer``: a variational encoder reads a whole groove (hits, velocities,
  offsets) into z; the decoder, given another score's hits, plays that score
  with the groove of z.

The network (section 5.2): a bidirectional LSTM encoder reads the input
window into z, which sets the state of a 2-layer LSTM decoder and is fed to it
at every step; the decoder is autoregressive on the hits it has played
(teacher forcing in training; see :data:`FEEDBACK`) and has three heads: hits (sigmoid), velocities (sigmoid) and offsets
(tanh, × 0.5 so they span a half step either way). As in the paper's Groove
Transfer decoder, the decoder also reads the task input's row for the step it
is playing (for transfer: the target hits only), and, except for transfer,
the encoder's own output at that step; this lets a small network learn in
minutes what the paper's bigger one learned through z alone. Both LSTMs also
read where the step is in its beat and bar.

The loss is eq. (4): hit cross-entropy plus squared velocity and offset
errors, summed over classes and steps. Velocity and offset errors count only
where the drummer hit: a silent cell has neither, and counting it would pull
the velocity of an uncertain hit towards zero. Humanize and transfer play the
hits they are given, so their loss has no hit term (the paper's decoder had
to rebuild the hits from z; ours reads them). For transfer the β-weighted
KL of the variational information bottleneck is added (β = 0.2, section 5.2.3).

Examples
--------
>>> model = load_groove_model("humanize")                        # doctest: +SKIP
>>> H, V, O = model.generate(*task_input("humanize", H, V, O))    # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .drum_map import N_CLASSES, class_index
from .errors import CheckpointError
from .paths import SHIPPED_WEIGHTS
from .groove_grid import GRIDS, GROOVE_TASKS, INSTRUMENTS, WINDOW_BARS, instrument_classes, steps_per_beat

__all__ = ["GROOVE_TASKS", "INSTRUMENTS", "GrooveEnsemble", "GrooveModel", "instrument_classes",
           "load_groove_model", "save_groove_model", "task_input", "task_target_mask", "tap"]

# -- model knobs (paper 5.2: encoder 512, z 256, decoder 2 x 256; smaller fits the time) ----
ENCODER_HIDDEN = 128   # per direction
Z_SIZE = 64
DECODER_HIDDEN = 192
DECODER_LAYERS = 2
DROPOUT = 0.3
#: What the decoder hears of the step it just played: "hits" (what was hit) or "all"
#: (hits, velocities and offsets, the paper's). Fed back velocities and offsets are the
#: drummer's own in training but the model's at play time, and the difference costs more
#: timing accuracy than the feedback brings.
FEEDBACK = "hits"
BETA = 0.2             # weight of the KL term of groove transfer (paper 5.2.3)
OFFSET_RANGE = 0.5     # offsets span half a step either way
#: How widely velocities are drawn around the prediction, in units of the model's own
#: validation residual. The mean alone is blurred: every hit of a class at one level, far
#: narrower than a drummer plays (GrooVAE's velocity KL penalises exactly that); 1 gives
#: the notes the spread the drummer had. Timing stays at the most likely offset.
VELOCITY_SPREAD = 1.0
#: The spread is measured per class and per level of the predicted velocity (bins split at
#: these): a hit predicted soft varies less than one predicted mid-loud, and one spread for
#: all would push ghost notes down to silence.
VELOCITY_LEVELS = (0.3, 0.45, 0.6, 0.75)

WEIGHTS_DIR = SHIPPED_WEIGHTS  # read only: training writes where --out says
#: The column a tapped rhythm is written to: a tap is most like a closed hi-hat (as Magenta's Tap2Drum).
TAP_CLASS = class_index("closed_hihat")
ROW = 3 * N_CLASSES    # one step of H, V and O side by side


def _check_task(task: str) -> str:
    if task not in GROOVE_TASKS:
        raise ValueError(f"unknown groove task {task!r}; choose one of {', '.join(GROOVE_TASKS)}")
    return task


def task_target_mask(task: str, *, instrument: str = "hihat") -> np.ndarray:
    """Which classes (bool, 9) the model of a task predicts.

    Infill predicts only the removed instrument and copies the others from
    its input; the other tasks predict every class. Humanize and transfer
    predict velocities and offsets only: their hits are the given score's.

    >>> task_target_mask("infill").nonzero()[0]
    array([2, 3])
    """
    mask = np.ones(N_CLASSES, bool)
    if _check_task(task) == "infill":
        mask[:] = False
        mask[list(instrument_classes(instrument))] = True
    return mask


def tap(H, V, O):
    """Collapse a groove onto one tapped row (Tap2Drum's input).

    A step with any hit becomes a tap in the :data:`TAP_CLASS` column, with
    the velocity and offset of the loudest hit of the step.
    """
    H, V, O = (np.asarray(a, dtype=np.float32) for a in (H, V, O))
    hit = H > 0.5
    loudest = np.argmax(np.where(hit, V, -1.0), axis=-1)[..., None]
    any_hit = hit.any(axis=-1)
    out = [np.zeros_like(H) for _ in range(3)]
    out[0][..., TAP_CLASS] = any_hit
    out[1][..., TAP_CLASS] = np.where(any_hit, np.take_along_axis(V, loudest, -1)[..., 0], 0.0)
    out[2][..., TAP_CLASS] = np.where(any_hit, np.take_along_axis(O, loudest, -1)[..., 0], 0.0)
    return tuple(out)


def task_input(task: str, H, V, O, *, instrument: str = "hihat"):
    """What the model of a task sees of a groove (numpy in and out, any leading shape).

    * humanize: the hits, velocities and offsets zero (a quantised score);
    * drumify: the taps (:func:`tap`);
    * infill: everything but ``instrument`` (its classes zero);
    * transfer: the whole groove (the encoder's input; the decoder gets the
      target's hits separately).

    >>> H_in, V_in, O_in = task_input("infill", H, V, O, instrument="hihat")  # doctest: +SKIP
    """
    H, V, O = (np.asarray(a, dtype=np.float32) for a in (H, V, O))
    task = _check_task(task)
    if task == "humanize":
        return H.copy(), np.zeros_like(V), np.zeros_like(O)
    if task == "drumify":
        return tap(H, V, O)
    if task == "infill":
        keep = ~task_target_mask(task, instrument=instrument)
        return H * keep, V * keep, O * keep
    return H.copy(), V.copy(), O.copy()


def position_features(T: int, spb: int) -> np.ndarray:
    """Where each step of a window is: one-hot step in the beat, sine and cosine of the bar phase.

    A window is :data:`WINDOW_BARS` bars of equal length starting on a downbeat.
    """
    t = np.arange(T)
    bar = max(1, T // WINDOW_BARS)
    phase = 2 * np.pi * (t % bar) / bar
    return np.concatenate([np.eye(spb)[t % spb], np.sin(phase)[:, None], np.cos(phase)[:, None]],
                          axis=1).astype(np.float32)


class GrooveModel(nn.Module):
    """Bidirectional LSTM encoder → z → 2-layer LSTM decoder with hit, velocity and offset heads.

    Tensors are (batch, steps, 9) per part; see the module docstring.
    """

    def __init__(self, task: str = "humanize", grid: str = "16th", instrument: str = "hihat",
                 encoder_hidden: int = ENCODER_HIDDEN, z_size: int = Z_SIZE,
                 decoder_hidden: int = DECODER_HIDDEN, layers: int = DECODER_LAYERS,
                 dropout: float = DROPOUT, beta: float = BETA, feedback: str = FEEDBACK):
        super().__init__()
        self.task, self.grid, self.instrument = _check_task(task), grid, instrument
        self.spb = steps_per_beat(grid)
        self.encoder_hidden, self.z_size, self.decoder_hidden = encoder_hidden, z_size, decoder_hidden
        self.layers, self.dropout, self.beta = layers, dropout, beta
        if feedback not in ("hits", "all"):
            raise ValueError(f"feedback is 'hits' or 'all', not {feedback!r}")
        self.feedback = feedback
        self.n_prev = N_CLASSES if feedback == "hits" else ROW
        self.variational = task == "transfer"
        # Humanize and transfer play the given score's hits; the others decide them.
        self.predicts_hits = task in ("drumify", "infill")
        # Transfer's decoder must not see the groove clip step by step, only through z.
        self.annotate = not self.variational
        n_pos = self.spb + 2
        self.encoder = nn.LSTM(ROW + n_pos, encoder_hidden, batch_first=True, bidirectional=True)
        self.to_z = nn.Linear(2 * encoder_hidden, z_size * (2 if self.variational else 1))
        self.bridge = nn.Linear(z_size, layers * 2 * decoder_hidden)
        n_in = self.n_prev + z_size + ROW + n_pos + (2 * encoder_hidden if self.annotate else 0)
        self.decoder = nn.LSTM(n_in, decoder_hidden, layers, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(decoder_hidden, ROW)
        self.register_buffer("target_mask", torch.as_tensor(
            task_target_mask(task, instrument=instrument), dtype=torch.float32))
        # Residual spread of the validation predictions: velocities per class and level of the
        # predicted velocity (drawn with velocity_spread), offsets per class (temperature > 0).
        self.register_buffer("velocity_sigma", torch.zeros(N_CLASSES, len(VELOCITY_LEVELS) + 1))
        self.register_buffer("offset_sigma", torch.zeros(N_CLASSES))

    def networks(self) -> list:
        """The networks that play (one; an ensemble has several)."""
        return [self]

    def config(self) -> dict:
        return {"task": self.task, "grid": self.grid, "instrument": self.instrument,
                "encoder_hidden": self.encoder_hidden, "z_size": self.z_size,
                "decoder_hidden": self.decoder_hidden, "layers": self.layers,
                "dropout": self.dropout, "beta": self.beta, "feedback": self.feedback}

    # -- pieces ------------------------------------------------------------------------------
    def positions(self, T: int, n: int) -> torch.Tensor:
        """Where each step of the windows is in its beat and bar (:func:`position_features`)."""
        return torch.from_numpy(position_features(T, self.spb)).expand(n, T, -1)

    def encode(self, x: torch.Tensor, pos: torch.Tensor, *, sample: bool = False, temperature: float = 1.0,
               generator: torch.Generator | None = None):
        """Read rows (batch, T, 27) once: annotations, z, and the KL of z (0 unless variational)."""
        n = x.shape[0]
        annotations, (h, _) = self.encoder(torch.cat([x, pos], dim=-1))
        stats = self.to_z(torch.cat([h[0], h[1]], dim=-1))
        if not self.variational:
            return annotations, stats, torch.zeros(n)
        mu, logvar = stats.chunk(2, dim=-1)
        logvar = logvar.clamp(-12.0, 8.0)
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(-1)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, generator=generator)
            z = mu + temperature * (0.5 * logvar).exp() * eps
        return annotations, z, kl

    def _initial_state(self, z: torch.Tensor):
        init = torch.tanh(self.bridge(z)).view(-1, self.layers, 2, self.decoder_hidden)
        return init[:, :, 0].transpose(0, 1).contiguous(), init[:, :, 1].transpose(0, 1).contiguous()

    def _heads(self, out: torch.Tensor):
        y = self.head(self.drop(out))
        logits, v, o = y.split(N_CLASSES, dim=-1)
        return logits, torch.sigmoid(v), OFFSET_RANGE * torch.tanh(o)

    def _decoder_inputs(self, prev, z, cond, annotations, pos):
        n, T, _ = cond.shape
        parts = [prev, z[:, None].expand(n, T, -1), cond, pos]
        if self.annotate:
            parts.append(annotations)
        return torch.cat(parts, dim=-1)

    # -- training ----------------------------------------------------------------------------
    def forward(self, x_in: torch.Tensor, target: torch.Tensor, cond: torch.Tensor | None = None):
        """Teacher-forced pass. ``x_in`` and ``target`` are (batch, T, 27) rows of H|V|O.

        ``cond`` is what the decoder reads at each step (default: ``x_in``;
        transfer: the target's hits with zero velocities and offsets).
        Returns hit logits, velocities, offsets (batch, T, 9) and the KL (batch,).
        """
        pos = self.positions(x_in.shape[1], x_in.shape[0])
        annotations, z, kl = self.encode(x_in, pos, sample=self.training)
        cond = x_in if cond is None else cond
        prev = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)[..., :self.n_prev]
        out, _ = self.decoder(self._decoder_inputs(prev, z, cond, annotations, pos), self._initial_state(z))
        return (*self._heads(out), kl)

    def loss(self, H_in, V_in, O_in, H, V, O) -> tuple[torch.Tensor, dict]:
        """Eq. (4) per window (+ β·KL for transfer), averaged over the batch.

        Returns the loss and its parts: hit cross-entropy per cell, velocity
        and offset squared error per hit, KL per window (predicted classes only).
        """
        x_in = torch.cat([H_in, V_in, O_in], dim=-1)
        target = torch.cat([H, V, O], dim=-1)
        cond = torch.cat([H, torch.zeros_like(V), torch.zeros_like(O)], dim=-1) if self.variational else None
        logits, v, o, kl = self(x_in, target, cond)
        m = self.target_mask
        bce = nn.functional.binary_cross_entropy_with_logits(logits, H, reduction="none") * m
        if not self.predicts_hits:
            bce = bce * 0.0  # the hits are given: nothing to learn there
        hit = H * m
        vel, off = (v - V) ** 2 * hit, (o - O) ** 2 * hit
        per_window = (bce + vel + off).sum(dim=(1, 2)) + self.beta * kl
        with torch.no_grad():
            n_hits = hit.sum().clamp_min(1.0)
            parts = {"hit_bce": float(bce.sum() / (m.sum() * H.shape[0] * H.shape[1])),
                     "velocity_mse": float(vel.sum() / n_hits), "offset_mse": float(off.sum() / n_hits),
                     "kl": float(kl.mean()), "hits": float(n_hits)}
        return per_window.mean(), parts

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, H_in, V_in, O_in, *, H_target=None, z_from=None, temperature: float = 0.0,
                 velocity_spread: float = VELOCITY_SPREAD, seed: int | None = None, prefix=None):
        """Play windows: numpy (N, T, 9) in (the task's input, :func:`task_input`), (H, V, O) out.

        Parameters
        ----------
        H_in, V_in, O_in : arrays (N, T, 9) or (T, 9)
        H_target : array like ``H_in``, optional
            Transfer: the score to play (default ``H_in``).
        z_from : (H, V, O), optional
            Transfer: the groove clip(s) whose z is used: one clip, N (one per
            window), or (N, k, T, 9) arrays: k clips per window, whose mean z
            is used (the paper's Groove Transfer humanization: the 3 nearest
            training windows).
        temperature : float
            0 plays the most likely hits and timing, the same every time:
            hits where p > 0.5, the predicted offset. Above 0 hits are drawn
            from the sharpened or flattened p, offsets from a Gaussian around
            the prediction whose spread is the model's validation error ×
            temperature, and transfer draws z.
        velocity_spread : float
            Velocities are drawn from a Gaussian around the prediction whose
            spread is the model's validation error × this
            (:data:`VELOCITY_SPREAD`; 0: the predicted mean).
        seed : int, optional
            Makes sampling repeatable. Without one, velocities at temperature
            0 are drawn with seed 0, so that the output is the same every time.
        prefix : (H, V, O) arrays (N, P, 9), optional
            Steps already played: the first P steps are these, not the
            model's (how windows of a long piece follow one another).

        Returns
        -------
        H, V, O : np.ndarray float32, shaped like ``H_in``. Humanize keeps the
        input hits, transfer the target's, infill the input's other instruments.
        """
        squeeze = np.ndim(H_in) == 2
        arr = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(-1, *np.shape(a)[-2:]))  # noqa: E731
        H_in, V_in, O_in = arr(H_in), arr(V_in), arr(O_in)
        n, T, _ = H_in.shape
        if self.task != "transfer" and (z_from is not None or H_target is not None):
            raise ValueError(f"z_from and H_target are for the transfer task, not {self.task}")
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        rng = np.random.default_rng(seed)
        velocity_rng = np.random.default_rng(0 if seed is None and temperature <= 0 else seed)
        x_in = torch.cat([H_in, V_in, O_in], dim=-1)
        sample = temperature > 0
        nets = self.networks()
        clips_per_window = 1
        if z_from is not None and np.ndim(z_from[0]) == 4:
            clips_per_window = np.shape(z_from[0])[1]
        if self.variational:
            H_target = H_in if H_target is None else arr(H_target)
            zx = x_in if z_from is None else torch.cat([arr(a) for a in z_from], dim=-1)
            cond = torch.cat([H_target, torch.zeros_like(H_target), torch.zeros_like(H_target)], dim=-1)
        else:
            zx, cond = x_in, x_in
        pos, clip_pos = self.positions(T, n), self.positions(T, len(zx))
        states, inputs = [], []
        for net in nets:
            annotations, z, _ = net.encode(zx, clip_pos, sample=sample and self.variational,
                                           temperature=temperature, generator=gen)
            if clips_per_window > 1:
                z = z.view(-1, clips_per_window, z.shape[-1]).mean(1)
            z = z.expand(n, -1) if len(z) == 1 else z
            if len(z) != n:
                raise ValueError(f"z_from has {len(z)} clips for {n} windows")
            states.append(net._initial_state(z))
            inputs.append(net._decoder_inputs(torch.zeros(n, T, self.n_prev), z, cond, annotations, pos))
        pre = None if prefix is None else [arr(a) for a in prefix]
        given = torch.cat([H_in, V_in, O_in], -1) if self.task != "transfer" else cond
        keep = 1.0 - self.target_mask  # infill: classes copied from the input
        vs, os_ = self.velocity_sigma * float(velocity_spread), self.offset_sigma * temperature
        levels, classes = torch.tensor(VELOCITY_LEVELS), torch.arange(N_CLASSES)

        prev = torch.zeros(n, ROW)
        out_rows = torch.zeros(n, T, ROW)
        for t in range(T):
            heads = []
            for k, net in enumerate(nets):
                inputs[k][:, t, :self.n_prev] = prev[:, :self.n_prev]
                h, states[k] = net.decoder(inputs[k][:, t:t + 1], states[k])
                heads.append([a[:, 0] for a in net._heads(h)])
            # An ensemble plays the mean of its members' logits, velocities and offsets.
            logits, v, o = heads[0] if len(heads) == 1 else (torch.stack(a).mean(0) for a in zip(*heads))
            if sample:
                hit = (torch.rand(logits.shape, generator=gen) < torch.sigmoid(logits / temperature)).float()
                o = o + os_ * torch.from_numpy(rng.standard_normal(o.shape).astype(np.float32))
            else:
                hit = (logits > 0).float()
            if velocity_spread > 0:
                sigma = vs[classes, torch.bucketize(v, levels)]
                v = v + sigma * torch.from_numpy(velocity_rng.standard_normal(v.shape).astype(np.float32))
            if self.task in ("humanize", "transfer"):
                hit = given[:, t, :N_CLASSES] if self.task == "humanize" else H_target[:, t]
            elif self.task == "infill":
                g = given[:, t]
                hit = keep * g[:, :N_CLASSES] + (1 - keep) * hit
                v = keep * g[:, N_CLASSES:2 * N_CLASSES] + (1 - keep) * v
                o = keep * g[:, 2 * N_CLASSES:] + (1 - keep) * o
            row = torch.cat([hit, hit * v.clamp(1 / 127, 1), hit * o.clamp(-OFFSET_RANGE, OFFSET_RANGE)], dim=-1)
            if pre is not None and t < pre[0].shape[1]:
                row = torch.cat([p[:, t] for p in pre], dim=-1)
            out_rows[:, t] = prev = row
        self.train(was_training)
        H, V, O = (a.numpy().copy() for a in out_rows.split(N_CLASSES, dim=-1))
        return (H[0], V[0], O[0]) if squeeze else (H, V, O)


class GrooveEnsemble(nn.Module):
    """Several :class:`GrooveModel` of one task, trained from different seeds, playing as one.

    At every step the members' logits, velocities and offsets are averaged:
    each member's errors are partly its own, so the mean errs less than any
    of them (for humanize, a third of a millisecond to half a millisecond of
    timing MAE with three or four members). Generation, sampling and the
    residual spreads are those of a single model (:meth:`GrooveModel.generate`).

    >>> ens = GrooveEnsemble([GrooveModel("humanize"), GrooveModel("humanize")])
    >>> len(ens.networks())
    2
    """

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0].config()
        if any(m.config() != first for m in members):
            raise ValueError("ensemble members must share one config")
        self.members = nn.ModuleList(members)
        lead = members[0]
        self.task, self.grid, self.instrument, self.spb = lead.task, lead.grid, lead.instrument, lead.spb
        self.variational, self.n_prev = lead.variational, lead.n_prev
        self.register_buffer("target_mask", lead.target_mask.clone())
        self.register_buffer("velocity_sigma", torch.zeros(N_CLASSES, len(VELOCITY_LEVELS) + 1))
        self.register_buffer("offset_sigma", torch.zeros(N_CLASSES))

    def networks(self) -> list:
        return list(self.members)

    def config(self) -> dict:
        return {**self.members[0].config(), "members": len(self.members)}

    positions = GrooveModel.positions
    generate = GrooveModel.generate


# ----------------------------------------------------------------------------- weights

def default_groove_weights(task: str) -> Path:
    """Path of the shipped weights of a task's model."""
    return WEIGHTS_DIR / f"groove_{_check_task(task)}.safetensors"


def save_groove_model(model: GrooveModel | GrooveEnsemble, path, metadata: dict | None = None) -> None:
    """Save weights (safetensors only) with the model's config in the file header."""
    from .agents import save_agent  # the same file layout as the timing agents'

    save_agent(model, path, metadata)


def load_groove_model(task: str, path=None) -> GrooveModel | GrooveEnsemble:
    """Load a task's groove model (or ensemble); the shipped weights where ``path`` is omitted.

    Raises
    ------
    CheckpointError
        One line naming the file: missing, not safetensors (pickled
        checkpoints are refused), not a groove model, or one of another task.
    """
    from .agents import build_checked, read_weights

    task = _check_task(task)
    path = os.fspath(path or default_groove_weights(task))
    hint = f" (train it with: rolypoly pretrain groove --task {task})" if path == os.fspath(
        default_groove_weights(task)) else ""
    header, tensors = read_weights(path, missing_hint=hint)
    for key, sigma in list(tensors.items()):
        if key.endswith("velocity_sigma") and sigma.ndim == 1:  # from before the per-level spread
            tensors[key] = sigma[:, None].expand(-1, len(VELOCITY_LEVELS) + 1).contiguous()

    def make(config):
        members = int(config.pop("members", 0))
        if members:
            return lambda: GrooveEnsemble(GrooveModel(**config) for _ in range(members))
        return lambda: GrooveModel(**config)

    model = build_checked(path, header, tensors, make, "rolypoly groove model")
    if model.task != task:
        raise CheckpointError(f"{path}: a {model.task} model, not {task}")
    model.eval()
    return model


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def steps_to_ms(offsets, bpm, grid: str = "16th"):
    """Offsets in steps → milliseconds at a tempo (quarter notes per minute)."""
    return np.asarray(offsets) * 60_000.0 / (np.asarray(bpm) * GRIDS[grid])

