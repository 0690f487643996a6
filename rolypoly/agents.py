"""The two timing agents and the streaming performer that runs them live.

Both agents read feature rows (:mod:`rolypoly.features`) and predict, for
each row, the microtiming offset ŷ of the hit from its notated time, as a
fraction of a bar (rolypoly~ paper, section 3.2):

* :class:`TimingLSTM` – a causal 2 × 256 LSTM: sight-reading the part.
* :class:`TimingSeq2Seq` – a bidirectional LSTM encoder reads the whole score
  (score columns only: no partner features exist before the take); its final
  states prime a causal 2 × 256 decoder, and its per-row annotations are fed
  to the decoder beside each feature row: knowing the part "backwards and
  forwards".

Whole sequences go through torch (training, offline humanizing). Live, a
:class:`Performer` runs the same weights one row at a time in numpy with
preallocated buffers: O(1) work per hit, no allocation, no torch dispatch.
The Seq2Seq encoder runs once in :meth:`Performer.prime`, not once per hit.

Examples
--------
>>> from rolypoly.features import score_features
>>> from rolypoly.paths import DEMO_SCORE
>>> from rolypoly.score import load_score
>>> X = score_features(load_score(DEMO_SCORE))
>>> agent = load_agent(default_weights("seq2seq"))
>>> performer = Performer(agent)
>>> performer.prime(X)
>>> yhat = [performer.step(row) for row in X[:4]]       # live: one hit at a time
>>> bool(np.allclose(yhat, agent.predict(X)[:4], atol=1e-5))   # the same as the whole score at once
True
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import AGENT_KINDS  # noqa: F401 (the package defines the kinds: reading them needs no torch)
from .errors import CheckpointError
from .paths import SHIPPED_WEIGHTS
from .features import DESCRIPTOR, DIFF, N_FEATURES, N_SCORE_FEATURES, OFFSET_SCALE
# One checked reader for every weights file (torch-free: the onset detector shares it).
from .weights_file import read_weights  # noqa: F401  (agents.read_weights is used elsewhere)

# -- model knobs (paper 3.2) ---------------------------------------------------
HIDDEN = 256          # units per LSTM layer
LAYERS = 2
DROPOUT = 0.3
ENCODER_HIDDEN = 128  # per direction, Seq2Seq encoder
#: Normalised features are clipped here so a freak value cannot saturate the cell.
FEATURE_CLIP = 8.0

WEIGHTS_DIR = SHIPPED_WEIGHTS  # read only: training writes where --out says


class _TimingAgent(nn.Module):
    """What both agents share: feature normalisation (stored with the weights) and the head."""

    kind = ""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(N_FEATURES))
        self.register_buffer("feature_scale", torch.ones(N_FEATURES))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def _silence_partner_inputs(self, first_layer: nn.LSTM) -> None:
        """Start the partner columns' input weights at zero.

        Drums-only pretraining never feeds a partner, so these weights get no
        gradient there: left at their random init they would make a
        pretrained agent react arbitrarily to the first partner it hears.
        At zero, it plays as the drummers did until fine-tuning on real takes
        teaches it how to listen.
        """
        with torch.no_grad():
            first_layer.weight_ih_l0[:, DESCRIPTOR] = 0.0
            first_layer.weight_ih_l0[:, DIFF] = 0.0

    def set_normalisation(self, mean, scale) -> None:
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.feature_mean) / self.feature_scale).clamp(-FEATURE_CLIP, FEATURE_CLIP)

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.tanh(h))).squeeze(-1)

    def config(self) -> dict:
        return {"kind": self.kind, "hidden": self.hidden, "layers": self.layers}

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        """ŷ for every row of one score (fraction of a bar), whole sequence at once.

        >>> yhat = agent.predict(score_features(score))   # doctest: +SKIP
        """
        was_training = self.training
        self.eval()
        y = self(torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))[None])[0]
        self.train(was_training)
        return y.numpy().astype(np.float64) / OFFSET_SCALE


class TimingLSTM(_TimingAgent):
    """Causal LSTM timing agent: rows in, ŷ × OFFSET_SCALE out, shape (batch, time)."""

    kind = "lstm"

    def __init__(self, hidden: int = HIDDEN, layers: int = LAYERS, dropout: float = DROPOUT):
        super().__init__(hidden, dropout)
        self.hidden, self.layers = hidden, layers
        self.lstm = nn.LSTM(N_FEATURES, hidden, layers, batch_first=True, dropout=dropout)
        self._silence_partner_inputs(self.lstm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.normalise(x))
        return self._out(h)


class TimingSeq2Seq(_TimingAgent):
    """Seq2Seq timing agent: a score encoder primes and informs a causal decoder."""

    kind = "seq2seq"

    def __init__(self, hidden: int = HIDDEN, layers: int = LAYERS, dropout: float = DROPOUT,
                 encoder_hidden: int = ENCODER_HIDDEN):
        super().__init__(hidden, dropout)
        self.hidden, self.layers, self.encoder_hidden = hidden, layers, encoder_hidden
        self.encoder = nn.LSTM(N_SCORE_FEATURES, encoder_hidden, 1, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * encoder_hidden, layers * 2 * hidden)
        self.decoder = nn.LSTM(N_FEATURES + 2 * encoder_hidden, hidden, layers, batch_first=True,
                               dropout=dropout)
        self._silence_partner_inputs(self.decoder)

    def config(self) -> dict:
        return super().config() | {"encoder_hidden": self.encoder_hidden}

    def encode(self, x: torch.Tensor):
        """Read the score once: per-row annotations and the decoder's initial state (from z)."""
        annotations, (h, _) = self.encoder(self.normalise(x)[..., :N_SCORE_FEATURES])
        z = torch.cat([h[0], h[1]], dim=-1)                       # (batch, 2E)
        init = torch.tanh(self.bridge(z)).view(-1, self.layers, 2, self.hidden)
        h0 = init[:, :, 0].transpose(0, 1).contiguous()
        c0 = init[:, :, 1].transpose(0, 1).contiguous()
        return annotations, (h0, c0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        annotations, state = self.encode(x)
        h, _ = self.decoder(torch.cat([self.normalise(x), annotations], dim=-1), state)
        return self._out(h)


def make_agent(kind: str, **config) -> _TimingAgent:
    """A fresh agent of kind ``"lstm"`` or ``"seq2seq"``."""
    if kind == "lstm":
        return TimingLSTM(**config)
    if kind == "seq2seq":
        return TimingSeq2Seq(**config)
    raise ValueError(f"unknown agent {kind!r}; choose lstm or seq2seq")


# ----------------------------------------------------------------------------- weights

def default_weights(kind: str) -> Path:
    """Path of the shipped, GMD-pretrained weights of an agent kind."""
    return WEIGHTS_DIR / f"timing_{kind}.safetensors"


def save_agent(agent: _TimingAgent, path, metadata: dict | None = None) -> None:
    """Save weights (safetensors) with the agent's config in the file header."""
    from safetensors.torch import save_file

    header = {"config": json.dumps(agent.config())}
    if metadata:
        header["metadata"] = json.dumps(metadata)
    tensors = {k: v.detach().contiguous() for k, v in agent.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, os.fspath(path), metadata=header)


def load_agent(path) -> _TimingAgent:
    """Load an agent from a safetensors file; pickled checkpoints are refused.

    The file's config is checked against its tensors' shapes, and against
    :data:`rolypoly.limits.MAX_MODEL_PARAMETERS`, before the agent is built
    (:func:`build_checked`): a small file cannot make a large model.

    Raises
    ------
    CheckpointError
        One line naming the file: missing, not safetensors, or not a timing agent.
    """
    path = os.fspath(path)
    header, tensors = read_weights(path)

    def make(config):
        kind = config.pop("kind")
        return lambda: make_agent(kind, **config)

    agent = build_checked(path, header, tensors, make, "rolypoly timing agent")
    agent.eval()
    return agent


def build_checked(path, header: dict, tensors: dict, make, what: str) -> nn.Module:
    """The model a weights file describes, built only once its config is known to match its tensors.

    ``make(config)`` returns a function that builds the model from the
    header's config (a dict). It is first built on the ``meta`` device,
    where tensors have shapes and no memory: its parameter count is checked
    against :data:`~rolypoly.limits.MAX_MODEL_PARAMETERS` and every tensor
    shape against the file's. Only then is it built for real and loaded.

    Raises
    ------
    CheckpointError
        One line naming the file: no config, a config that builds no
        ``what``, a model past the limits, or shapes that differ from the file's.

    Examples
    --------
    >>> agent = make_agent("lstm")
    >>> tensors = agent.state_dict()
    >>> header = {"config": json.dumps(agent.config() | {"hidden": 12000})}
    >>> build_checked("big.safetensors", header, tensors, lambda c: lambda: make_agent(c.pop("kind"), **c),
    ...               "timing agent")
    Traceback (most recent call last):
    ...
    rolypoly.errors.CheckpointError: big.safetensors: 1728924001 parameters in its config, more than the 32000000 rolypoly accepts
    """
    from .limits import MAX_MODEL_DEPTH, MAX_MODEL_PARAMETERS, check_count

    try:
        config = json.loads(header["config"])
        if not isinstance(config, dict):
            raise ValueError("config is not a JSON object")
        for key in ("layers", "members"):  # each layer is objects even on the meta device
            if key in config:
                if not (isinstance(config[key], int) and not isinstance(config[key], bool)):
                    raise ValueError(f"{key} must be a whole number, not {config[key]!r:.40}")
                check_count(key, config[key], MAX_MODEL_DEPTH, path, error=CheckpointError)
        build = make(config)
        with torch.device("meta"):
            skeleton = build()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a {what} ({_first_line(e)})") from None
    check_count("parameters in its config", sum(p.numel() for p in skeleton.parameters()), MAX_MODEL_PARAMETERS,
                path, error=CheckpointError)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    held = {k: tuple(v.shape) for k, v in tensors.items()}
    for key in sorted(expected.keys() | held.keys()):
        if expected.get(key) != held.get(key):
            says = "no such tensor" if key not in expected else f"shape {expected[key]}"
            has = "no such tensor" if key not in held else f"shape {held[key]}"
            raise CheckpointError(f"{path}: not a {what}: its config does not match its weights "
                                  f"({key}: the config says {says}, the file holds {has})")
    model = build()
    model.load_state_dict(tensors, strict=True)
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:120]


def load_metadata(path) -> dict:
    """The training metadata stored in a weights file's header (empty if none)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("metadata", "{}"))


# ----------------------------------------------------------------------------- live

class _Cell:
    """One LSTM layer stepped in numpy, buffers preallocated.

    PyTorch orders gates (i, f, g, o); the rows are reordered to (i, f, o, g)
    so the three sigmoids are one contiguous slice.
    """

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray):
        H = w_hh.shape[1]
        order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
        self.H = H
        self.w_ih = np.ascontiguousarray(w_ih[order], dtype=np.float32)
        self.w_hh = np.ascontiguousarray(w_hh[order], dtype=np.float32)
        self.bias = np.ascontiguousarray(bias[order], dtype=np.float32)
        self.h = np.zeros(H, np.float32)
        self.c = np.zeros(H, np.float32)
        self._gates = np.zeros(4 * H, np.float32)
        self._rec = np.zeros(4 * H, np.float32)
        self._tmp = np.zeros(H, np.float32)

    def step(self, x: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        g, H = self._gates, self.H
        np.dot(self.w_ih, x, out=g)
        np.dot(self.w_hh, self.h, out=self._rec)
        g += self._rec
        g += self.bias if extra is None else extra  # extra: precomputed input terms incl. bias
        s = g[:3 * H]
        np.negative(s, out=s)
        np.exp(s, out=s)
        s += 1.0
        np.reciprocal(s, out=s)
        i, f, o, cand = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
        np.tanh(cand, out=cand)
        self.c *= f
        np.multiply(i, cand, out=i)
        self.c += i
        np.tanh(self.c, out=self._tmp)
        np.multiply(o, self._tmp, out=self.h)
        return self.h


class Performer:
    """Streams an agent one feature row at a time, in numpy (the live path).

    ``prime(score_rows)`` once per score, then ``step(row) -> ŷ`` for every
    row in order. ``step`` does a fixed amount of work with no allocation
    beyond numpy scalars, so its cost does not depend on the score's length.

    Examples
    --------
    >>> p = Performer(load_agent(default_weights("lstm")))  # doctest: +SKIP
    >>> p.prime(X); p.step(X[0])                            # doctest: +SKIP
    0.0031
    """

    def __init__(self, agent: _TimingAgent):
        sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in agent.state_dict().items()}
        self.kind = agent.kind
        self.agent = agent
        self.mean = sd["feature_mean"]
        self.inv_scale = (1.0 / sd["feature_scale"]).astype(np.float32)
        rnn = "lstm" if self.kind == "lstm" else "decoder"
        self.cells = [
            _Cell(sd[f"{rnn}.weight_ih_l{k}"], sd[f"{rnn}.weight_hh_l{k}"],
                  sd[f"{rnn}.bias_ih_l{k}"] + sd[f"{rnn}.bias_hh_l{k}"])
            for k in range(agent.layers)
        ]
        if self.kind == "seq2seq":
            # Layer 0 sees [row, annotation]: split its input weights, the annotation part
            # is applied once per score in prime().
            first = self.cells[0]
            self._w_annotation = first.w_ih[:, N_FEATURES:]
            first.w_ih = np.ascontiguousarray(first.w_ih[:, :N_FEATURES])
        self.head_w = sd["head.weight"][0]
        self.head_b = float(sd["head.bias"][0])
        self._x = np.zeros(N_FEATURES, np.float32)
        self._top = np.zeros(agent.hidden, np.float32)
        self._annotation_terms = None
        self.t = 0

    def prime(self, score_rows: np.ndarray) -> None:
        """Reset the state for a new take of a score (runs the Seq2Seq encoder once)."""
        self.t = 0
        for cell in self.cells:
            cell.h[:] = 0.0
            cell.c[:] = 0.0
        if self.kind != "seq2seq":
            return
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(score_rows, dtype=np.float32))[None]
            annotations, (h0, c0) = self.agent.encode(x)
        for k, cell in enumerate(self.cells):
            cell.h[:] = h0[k, 0].numpy()
            cell.c[:] = c0[k, 0].numpy()
        self._annotation_terms = np.ascontiguousarray(
            annotations[0].numpy() @ self._w_annotation.T + self.cells[0].bias, dtype=np.float32)

    def step(self, row: np.ndarray) -> float:
        """ŷ of the next row, fraction of a bar."""
        x = self._x
        np.subtract(row, self.mean, out=x)
        x *= self.inv_scale
        np.clip(x, -FEATURE_CLIP, FEATURE_CLIP, out=x)
        extra = None
        if self._annotation_terms is not None:
            extra = self._annotation_terms[min(self.t, len(self._annotation_terms) - 1)]
        h = self.cells[0].step(x, extra)
        for cell in self.cells[1:]:
            h = cell.step(h)
        self.t += 1
        np.tanh(h, out=self._top)
        return (float(self.head_w @ self._top) + self.head_b) / OFFSET_SCALE
