"""Pretrain a timing agent on the Groove MIDI Dataset (rolypoly~ paper, 3.3).

Adam at lr 1e-3, MSE on the residual offsets, early stopping on the
validation split, fixed seeds. One process by default; several through
``torchrun`` (DDP, gloo backend), each process training on its own share of
the windows::

    rolypoly pretrain timing --agent seq2seq
    torchrun --nproc_per_node 2 -m rolypoly.cli pretrain timing --agent lstm --epochs 3

Writes ``timing_<agent>.safetensors`` (weights, normalisation, config),
``timing_<agent>.json`` (data hash, settings, per-epoch losses, final
metrics) and ``timing_<agent>.png`` (training curve) to ``out`` (the
command's ``--out``, by default :func:`rolypoly.paths.weights_out_dir`; the
shipped weights are made with ``--out rolypoly/weights``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rolypoly.agents import make_agent, save_agent
from rolypoly.features import OFFSET_SCALE, fit_normalisation

from .gmd import load_split
from .metrics import timing_metrics

# -- training knobs ------------------------------------------------------------
LEARNING_RATE = 1e-3   # paper 3.3
BATCH = 32             # windows per step (per process)
WINDOW = 256           # rows per training window: long enough to hold a few bars of context
MAX_EPOCHS = 60
PATIENCE = 4           # epochs without validation improvement before stopping
GRAD_CLIP = 1.0
SEED = 1234


def windows(starts: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Start rows of training windows: each take cut into windows at a random phase."""
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        if b - a < window:
            out.append(max(0, b - window))  # a short take ends its window, led in by the take before
            continue
        first = a + rng.integers(0, min(window, b - a - window + 1))
        out.extend(range(first, b - window + 1, window))
    return np.array(out, dtype=np.int64)


def batches(data, starts: np.ndarray, window: int):
    """Tensors (batch, window, 15) and labels (batch, window), in OFFSET_SCALE units."""
    idx = starts[:, None] + np.arange(window)[None]
    idx = np.minimum(idx, len(data.y) - 1)
    return (torch.from_numpy(data.X[idx]), torch.from_numpy(data.y[idx] * OFFSET_SCALE))


@torch.no_grad()
def predict_takes(agent, data) -> np.ndarray:
    """ŷ (fraction of a bar) for every row, each take as one whole score."""
    agent.eval()
    out = np.zeros(len(data.y), dtype=np.float64)
    for k in range(len(data)):
        s = data.take(k)
        out[s] = agent.predict(data.X[s])
    return out


def is_main_process() -> bool:
    """True in a single process, and in the first of several (torchrun): the one that writes and reports."""
    return not dist.is_initialized() or dist.get_rank() == 0


def train(agent_kind: str, gmd=None, epochs: int = MAX_EPOCHS, *, out,
          limit: int | None = None, seed: int = SEED, patience: int = PATIENCE,
          progress: bool = True, batch: int = BATCH, window: int = WINDOW) -> dict:
    """Pretrain one agent into the folder ``out``; returns the metadata written beside the weights."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.time()
    train_set = load_split("train", gmd, limit=limit, progress=progress and rank == 0)
    val_set = load_split("validation", gmd, limit=limit and max(2, limit // 4), progress=progress and rank == 0)

    agent = make_agent(agent_kind)
    agent.set_normalisation(*fit_normalisation(train_set.X))
    model = torch.nn.parallel.DistributedDataParallel(agent) if distributed else agent
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    from tqdm import tqdm

    history, best, best_state, stale = [], math.inf, None, 0
    for epoch in range(1, epochs + 1):
        agent.train()
        starts = windows(train_set.starts, window, rng)
        rng.shuffle(starts)
        # Every process takes the same number of steps, or DDP's all-reduce would hang.
        n_steps = max(1, len(starts) // world // batch)
        starts = starts[rank::world]
        total, seen = 0.0, 0
        bar = tqdm(range(n_steps), desc=f"{agent_kind} epoch {epoch}", unit="batch",
                   disable=not (progress and rank == 0), file=sys.stderr, leave=False)
        for i in bar:
            x, y = batches(train_set, starts[i * batch:(i + 1) * batch], window)
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        train_loss = total / max(seen, 1) / OFFSET_SCALE ** 2
        val_pred = predict_takes(agent, val_set)
        val_loss = float(np.mean((val_pred - val_set.y) ** 2))
        history.append({"epoch": epoch, "train_mse_bar": train_loss, "val_mse_bar": val_loss,
                        "seconds": round(time.time() - started, 1)})
        if rank == 0 and progress:
            print(f"{agent_kind} epoch {epoch}: train {train_loss:.7f} val {val_loss:.7f} per bar",
                  file=sys.stderr)
        if val_loss < best - 1e-9:
            best, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in agent.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    agent.load_state_dict(best_state)
    val_pred = predict_takes(agent, val_set)

    meta = {
        "agent": agent_kind,
        "config": agent.config(),
        "data": {"train_key": train_set.key, "validation_key": val_set.key,
                 "train_rows": int(len(train_set.y)), "train_takes": len(train_set),
                 "validation_rows": int(len(val_set.y)), "limit": limit},
        "settings": {"lr": LEARNING_RATE, "batch": batch, "window": window, "max_epochs": epochs,
                     "patience": patience, "seed": seed, "processes": world,
                     "torch": torch.__version__},
        "epochs": history,
        "best_epoch": int(np.argmin([h["val_mse_bar"] for h in history]) + 1),
        "validation": timing_metrics(val_pred, val_set.y, val_set.bar_ms, val_set.timesig),
        "validation_baseline": timing_metrics(np.zeros_like(val_pred), val_set.y, val_set.bar_ms,
                                              val_set.timesig),
        "train_seconds": round(time.time() - started, 1),
    }
    if is_main_process():
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"timing_{agent_kind}"
        save_agent(agent, stem.with_suffix(".safetensors"), {"train_key": train_set.key,
                                                             "best_epoch": meta["best_epoch"]})
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        plot_curve(history, stem.with_suffix(".png"), agent_kind)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return meta


def plot_curve(history: list[dict], path, title: str) -> None:
    from rolypoly.plotting import figure, save

    ep = [h["epoch"] for h in history]
    fig, ax = figure(figsize=(6, 3.5))
    ax.plot(ep, [h["train_mse_bar"] for h in history], "o-", label="train")
    ax.plot(ep, [h["val_mse_bar"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (fraction of a bar)²")
    ax.set_title(f"timing agent: {title}")
    ax.legend()
    save(fig, path)

