"""Train the onset network on partner takes rendered from sampled instruments.

``rolypoly pretrain onsets`` renders performances through FluidSynth
(:mod:`rolypoly.pretrain.partner_render`: guitar, bass, piano, keys and
voice styles, in rooms, through microphones and DI boxes, with noise), runs
the live detector's :class:`~rolypoly.onsets.Listener` over them hop by hop
exactly as live, and trains the small causal network of
:class:`~rolypoly.onsets.OnsetNet`:

* a hop is *positive* from the hop holding the true onset for
  :data:`POSITIVE_HOPS` hops (the network may say "a note just started"
  for up to 4 ms), *don't care* for :data:`CARE_HOPS` hops after that
  (the detector is not re-armed yet), negative elsewhere;
* the second output learns how many hops ago the note started (smooth L1,
  on positive hops);
* the soundfonts :data:`TRAIN_SOUNDFONTS` are used for training and
  validation (different seeds); :data:`HELD_OUT_SOUNDFONT` is never seen in
  training: the onset bench renders its set from it.

After training, the detector's picking (threshold, re-arm, gate, minimum
interval) is run over the validation takes for a range of thresholds; the
best overall and per instrument family go into the weights' config. The
weights (safetensors) and a metrics JSON (data, every epoch, validation
figures, time) are written to ``--out`` (default: the user's weights
folder; ``--out rolypoly/weights`` replaces the shipped ones)::

    rolypoly pretrain onsets
    rolypoly pretrain onsets --minutes 5 --takes 80 --out /tmp/onsets

Rendered features are cached (``$ROLYPOLY_CACHE/onsets``), so a second run
starts training at once. Seeds are fixed: the same command gives the same
weights.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from rolypoly.onsets import (FEATURE_NAMES, HOP, INSTRUMENTS, N_FEATURES, QUARTERS, REARM_SHARE, REFERENCE_RATE,
                             match_onsets)

# -- data ------------------------------------------------------------------------------
TRAIN_SOUNDFONTS = ("fluidr3", "musescore")
HELD_OUT_SOUNDFONT = "timgm6mb"
#: How often each style is drawn (the rest of the mix: room tone without a note).
STYLE_WEIGHTS = {"guitar_strum": 2.0, "guitar_fingerpick": 2.0, "guitar_lick": 2.0, "bass_line": 2.0,
                 "piano_legato": 2.5, "piano_chords": 1.5, "piano_runs": 1.5, "keys_comp": 1.5,
                 "voice_line": 0.5, "synthetic": 2.5}
ROOM_TONE_SHARE = 0.04
CLIPPED_SHARE = 0.05
TAKE_SECONDS = 8.0
TRAIN_TAKES = 240
VAL_TAKES = 40
SEED = 20240
LICENCES = {"fluidr3": "FluidR3_GM.sf2 (Debian fluid-soundfont-gm): MIT",
            "musescore": "MuseScore_General_Lite.sf3 (Debian musescore-general-soundfont-small): MIT",
            "timgm6mb": "TimGM6mb.sf2 (Debian timgm6mb-soundfont): GPL-2"}

# -- labels ----------------------------------------------------------------------------
POSITIVE_HOPS = 4
CARE_HOPS = 3
WARM_UP_HOPS = 40       # the first hops of a training crop have no past: not scored

# -- model and training ----------------------------------------------------------------
DENSE = 64
HIDDEN = 48
CROP_HOPS = 256        # 0.34 s: a GRU step costs the same for 1 or 128 crops, so many short ones
BATCH = 128
BATCHES_PER_EPOCH = 40
LEARNING_RATE = 2e-3
POS_WEIGHT = 3.0
AGO_WEIGHT = 0.2
THREADS = 1
MINUTES = 25.0
HARD_CAP_MINUTES = 30.0
PATIENCE = 8
TOLERANCE_S = 0.025
THRESHOLDS = tuple(np.round(np.arange(0.2, 0.91, 0.05), 2))
EPOCH_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)   # a coarse look after every epoch


# ---------------------------------------------------------------------------------------
# Data


def plan_takes(n: int, seed: int, soundfonts=TRAIN_SOUNDFONTS) -> list[tuple]:
    """(style, seed, soundfont, clipped) for ``n`` takes, drawn with :data:`STYLE_WEIGHTS`.

    ``style`` None is room tone: noise, hum and no note.

    >>> plan = plan_takes(5, 1)
    >>> len(plan), all(p[2] in TRAIN_SOUNDFONTS for p in plan)
    (5, True)
    """
    rng = np.random.default_rng(seed)
    styles = list(STYLE_WEIGHTS)
    w = np.array([STYLE_WEIGHTS[s] for s in styles])
    w = w / w.sum() * (1.0 - ROOM_TONE_SHARE)
    choices = styles + [None]
    p = np.append(w, ROOM_TONE_SHARE)
    plan = []
    for i in range(n):
        style = choices[rng.choice(len(choices), p=p)]
        plan.append((style, int(rng.integers(1 << 30)), soundfonts[i % len(soundfonts)],
                     bool(rng.random() < CLIPPED_SHARE)))
    return plan


def _render_one(item, fonts: dict, sample_rate: int):
    """Features and onset samples of one planned take."""
    from rolypoly.onsets import Listener

    from .partner_render import render_take, room_tone

    style, seed, font, clipped = item
    if style is None:
        audio, onsets, family = room_tone(np.random.default_rng(seed), TAKE_SECONDS, sample_rate), np.zeros(0), "none"
    else:
        take = render_take(style, seed, fonts[font], seconds=TAKE_SECONDS)
        audio, onsets, family = take.audio, take.onsets, take.family
    if clipped:
        gain = np.random.default_rng(seed + 1).uniform(3.0, 12.0)
        audio = np.clip(audio * gain / (np.max(np.abs(audio)) + 1e-9) * 0.5, -1.0, 1.0).astype(np.float32)
    rows = Listener(sample_rate).listen(audio)
    return rows.astype(np.float16), np.round(onsets * sample_rate).astype(np.int64), family


def _render_chunk(args):
    items, sample_rate = args
    from .partner_render import Soundfont, find_soundfont

    fonts = {}
    for name in {it[2] for it in items}:
        path = find_soundfont(name)
        if path is None:
            raise RuntimeError(f"soundfont {name!r} is not installed (apt-get install "
                               "fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont)")
        fonts[name] = Soundfont(path, sample_rate)
    return [_render_one(it, fonts, sample_rate) for it in items]


def render_split(plan: list, *, workers: int = 2, cache: Path | None = None, sample_rate: int = REFERENCE_RATE,
                 progress: bool = False) -> dict:
    """Feature rows, onset samples and families of planned takes (cached by the plan and the feature layout)."""
    import hashlib

    from . import partner_render

    key = hashlib.sha256(json.dumps([plan, FEATURE_NAMES, sample_rate, TAKE_SECONDS,
                                     partner_render.RENDER_VERSION]).encode()).hexdigest()[:16]
    path = cache / f"onsets-{key}.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        lengths = z["lengths"]
        rows = np.split(z["rows"], np.cumsum(lengths)[:-1])
        onsets = np.split(z["onsets"], np.cumsum(z["n_onsets"])[:-1])
        return {"rows": rows, "onsets": onsets, "families": list(z["families"])}
    chunks = [plan[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_chunk, [(c, sample_rate) for c in chunks])
    else:
        parts = [_render_chunk((chunks[0], sample_rate))]
    # Back to plan order.
    results = [None] * len(plan)
    for w, part in enumerate(parts):
        for j, r in enumerate(part):
            results[w + j * workers] = r
    if progress:
        print(f"rendered {len(plan)} takes in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    data = {"rows": [r[0] for r in results], "onsets": [r[1] for r in results],
            "families": [r[2] for r in results]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, rows=np.concatenate(data["rows"]), lengths=[len(r) for r in data["rows"]],
                 onsets=np.concatenate(data["onsets"]) if data["onsets"] else np.zeros(0, np.int64),
                 n_onsets=[len(o) for o in data["onsets"]], families=np.array(data["families"]))
    return data


def labels(n_rows: int, onset_samples: np.ndarray, hop: int = HOP):
    """Per hop: target (0/1), care (0/1: scored or not) and hops since the onset.

    >>> t, c, ago = labels(12, np.array([130]), hop=64)
    >>> t.astype(int).tolist(), c.astype(int).tolist()
    ([0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1])
    >>> [round(float(a), 2) for a in ago[2:6]]
    [0.97, 1.97, 2.97, 3.97]
    """
    target = np.zeros(n_rows, np.float32)
    care = np.ones(n_rows, np.float32)
    ago = np.zeros(n_rows, np.float32)
    for s in onset_samples:
        h0 = int(s) // hop
        lo, hi = max(h0, 0), min(h0 + POSITIVE_HOPS, n_rows)
        if lo >= n_rows:
            continue
        rows = np.arange(lo, hi)
        target[lo:hi] = 1.0
        ago[lo:hi] = ((rows + 1) * hop - s) / hop
        care[hi:min(hi + CARE_HOPS, n_rows)] = 0.0
    care[target > 0] = 1.0
    return target, care, ago


# ---------------------------------------------------------------------------------------
# Model


def make_model(n_in: int = N_FEATURES, dense: int = DENSE, hidden: int = HIDDEN):
    """The torch twin of :class:`rolypoly.onsets.OnsetNet` (same parameter names)."""
    import torch
    from torch import nn

    class OnsetModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(n_in))
            self.register_buffer("scale", torch.ones(n_in))
            self.inp = nn.Linear(n_in, dense)
            self.gru = nn.GRU(dense, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 2)

        def forward(self, x):
            h = torch.relu(self.inp((x - self.mean) / self.scale))
            h, _ = self.gru(h)
            return self.head(h)

    return OnsetModel()


def save_model(model, path: Path, config: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})


# ---------------------------------------------------------------------------------------
# Picking and scoring, as the live detector does it (at hop resolution)


_LEVEL_COLUMNS = [FEATURE_NAMES.index(f"band0_quarter{i}_log_energy") for i in range(4, 8)]
_QUARTER_DB = 10.0 * np.log10((QUARTERS // 2) / HOP)   # as Listener.level_db: dB of a quarter's mean power


def pick(prob: np.ndarray, level_db: np.ndarray, threshold: float, rearm: float, silence_db: float,
         min_ioi_hops: int) -> np.ndarray:
    """Hops at which the detector's picking fires, given its per-hop probabilities and levels.

    >>> pick(np.array([0, .9, .9, .1, .9, .2, .2, .9]), np.zeros(8), 0.5, 0.3, -60, 2).tolist()
    [1, 4, 7]
    """
    fired, armed, next_allowed = [], True, 0
    for i, p in enumerate(prob):
        if not armed:
            armed = p < rearm
            continue
        if p >= threshold and level_db[i] >= silence_db and i >= next_allowed:
            fired.append(i)
            armed = False
            next_allowed = i + min_ioi_hops
    return np.asarray(fired, dtype=np.int64)


def score_hops(truth_samples, fired_hops, hop: int = HOP, sample_rate: int = REFERENCE_RATE) -> dict:
    """True positives, counts and usable latencies (ms) of picks against the truth (±25 ms)."""
    truth = np.asarray(truth_samples, float) / sample_rate
    avail = (np.asarray(fired_hops, float) + 1) * hop / sample_rate
    # Placed roughly where the note began: matched on the hop the network fired in.
    placed = avail - 1.5 * hop / sample_rate
    pairs = match_onsets(truth, placed, TOLERANCE_S)
    lat = [1000.0 * (avail[f] - truth[t]) for t, f in pairs]
    return {"tp": len(pairs), "n_true": len(truth), "n_found": len(placed), "latencies": lat}


def _f1(tp, n_true, n_found):
    p = tp / n_found if n_found else 1.0
    r = tp / n_true if n_true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def probabilities(model, rows: list) -> list:
    """The network's per-hop onset probability over whole takes (all takes in one batch, as live from hop 0)."""
    import torch

    model.eval()
    longest = max(len(r) for r in rows)
    x = np.zeros((len(rows), longest, rows[0].shape[1]), np.float32)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(x))[..., 0]).numpy()
    return [p[i, :len(r)] for i, r in enumerate(rows)]


def validate(model, data: dict, thresholds=THRESHOLDS) -> dict:
    """Picking over the validation takes at each threshold, overall and per family."""
    probs = probabilities(model, data["rows"])
    figures = {}
    for threshold in thresholds:
        per_family = {}
        for rows, prob, onsets, family in zip(data["rows"], probs, data["onsets"], data["families"]):
            preset = INSTRUMENTS["auto"]
            level = 10.0 * rows[:, _LEVEL_COLUMNS].astype(np.float32).max(axis=1) + _QUARTER_DB
            fired = pick(prob, level, threshold, REARM_SHARE * threshold, preset["silence_db"],
                         max(1, int(round(preset["min_ioi_ms"] / 1000 * REFERENCE_RATE / HOP))))
            s = score_hops(onsets, fired)
            acc = per_family.setdefault(family, {"tp": 0, "n_true": 0, "n_found": 0, "latencies": []})
            for k in ("tp", "n_true", "n_found"):
                acc[k] += s[k]
            acc["latencies"] += s["latencies"]
        total = {k: sum(v[k] for v in per_family.values()) for k in ("tp", "n_true", "n_found")}
        lat = [x for v in per_family.values() for x in v["latencies"]]
        p, r, f1 = _f1(total["tp"], total["n_true"], total["n_found"])
        figures[str(threshold)] = {
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "latency_median_ms": round(float(np.median(lat)), 3) if lat else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 3) if lat else None,
            "families": {fam: {"f1": round(_f1(v["tp"], v["n_true"], v["n_found"])[2], 4),
                               "false": v["n_found"] - v["tp"], "onsets": v["n_true"]}
                         for fam, v in sorted(per_family.items())},
        }
    return figures


# ---------------------------------------------------------------------------------------
# Training


def _batches(data: dict, rng, n_batches: int):
    """Random crops of the training takes: (x, target, care, ago) tensors."""
    import torch

    lengths = np.array([len(r) for r in data["rows"]])
    weights = np.maximum(lengths - CROP_HOPS, 1).astype(float)
    weights /= weights.sum()
    for _ in range(n_batches):
        xs, ts, cs, ags = [], [], [], []
        for k in rng.choice(len(lengths), size=BATCH, p=weights):
            rows = data["rows"][k]
            start = int(rng.integers(0, max(len(rows) - CROP_HOPS, 0) + 1))
            x = rows[start:start + CROP_HOPS].astype(np.float32)
            t, c, a = data["labels"][k]
            sl = slice(start, start + len(x))
            pad = CROP_HOPS - len(x)
            c = c[sl].copy()
            c[:WARM_UP_HOPS] = 0.0
            xs.append(np.pad(x, ((0, pad), (0, 0))))
            ts.append(np.pad(t[sl], (0, pad)))
            cs.append(np.pad(c, (0, pad)))
            ags.append(np.pad(a[sl], (0, pad)))
        yield tuple(torch.from_numpy(np.stack(v)) for v in (xs, ts, cs, ags))


def train(train_data: dict, val_data: dict, *, minutes: float = MINUTES, epochs: int = 200,
          batches_per_epoch: int = BATCHES_PER_EPOCH, seed: int = SEED, progress: bool = True):
    """Fit the network; returns the best model (by validation F1 at the best threshold) and the history."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(seed)
    model = make_model()
    allrows = np.concatenate(train_data["rows"]).astype(np.float32)
    model.mean.copy_(torch.from_numpy(allrows.mean(axis=0)))
    model.scale.copy_(torch.from_numpy(np.maximum(allrows.std(axis=0), 1e-3)))
    del allrows
    train_data["labels"] = [labels(len(r), o) for r, o in zip(train_data["rows"], train_data["onsets"])]
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.tensor(POS_WEIGHT))
    budget = min(minutes, HARD_CAP_MINUTES) * 60.0
    t0 = time.perf_counter()
    history, best, best_state, stale = [], -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, t, c, a in _batches(train_data, rng, batches_per_epoch):
            out = model(x)
            loss_on = (bce(out[..., 0], t) * c).sum() / c.sum().clamp(min=1)
            pos = t > 0
            loss_ago = torch.nn.functional.smooth_l1_loss(out[..., 1][pos], a[pos]) if pos.any() else 0.0
            loss = loss_on + AGO_WEIGHT * loss_ago
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach())
            count += 1
        figures = validate(model, val_data, EPOCH_THRESHOLDS)
        top = max(figures, key=lambda k: figures[k]["f1"])
        elapsed = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": round(total / max(count, 1), 5),
                        "val_best_threshold": float(top), "val_f1": figures[top]["f1"],
                        "val_latency_median_ms": figures[top]["latency_median_ms"],
                        "seconds": round(elapsed, 1)})
        if progress:
            h = history[-1]
            print(f"epoch {h['epoch']:3d} loss {h['train_loss']:.4f} val F1 {h['val_f1']:.4f} "
                  f"@ {top} latency {h['val_latency_median_ms']} ms ({elapsed:.0f} s)", file=sys.stderr)
        if figures[top]["f1"] > best:
            best, stale = figures[top]["f1"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history[-1]["best"] = True
        else:
            stale += 1
        if stale >= PATIENCE or elapsed + elapsed / (epoch + 1) > budget:
            break
    model.load_state_dict(best_state)
    return model, history


def pretrain(out, *, takes: int | None = None, minutes: float | None = None, workers: int = 2,
             progress: bool = True) -> dict:
    """``rolypoly pretrain onsets``: render (or read the cache), train, pick thresholds, save.

    Writes ``onsets.safetensors`` and ``onsets.json`` into ``out``; returns the metrics.
    """
    from rolypoly import paths

    out_dir = Path(out)
    n_train = int(takes or TRAIN_TAKES)
    n_val = max(8, n_train // 6)
    minutes = float(minutes or MINUTES)
    cache = paths.cache_dir() / "onsets"
    t_start = time.perf_counter()
    train_data = render_split(plan_takes(n_train, SEED), workers=workers, cache=cache, progress=progress)
    val_data = render_split(plan_takes(n_val, SEED + 1), workers=workers, cache=cache, progress=progress)
    t_render = time.perf_counter() - t_start
    model, history = train(train_data, val_data, minutes=minutes, progress=progress)
    figures = validate(model, val_data)
    best = max(figures, key=lambda k: figures[k]["f1"])
    families = {}
    for fam in ("guitar", "bass", "piano", "keys", "voice"):
        scored = {k: v["families"].get(fam, {}).get("f1", 0.0) for k, v in figures.items()}
        families[fam] = float(max(scored, key=lambda k: (scored[k], -abs(float(k) - float(best)))))
    config = {"features": FEATURE_NAMES, "dense": DENSE, "hidden": HIDDEN, "hop": HOP,
              "sample_rate": REFERENCE_RATE, "threshold": float(best), "thresholds": families,
              "positive_hops": POSITIVE_HOPS}
    weights = out_dir / "onsets.safetensors"
    save_model(model, weights, config)
    metrics = {
        "command": "rolypoly pretrain onsets" + (f" --takes {n_train}" if n_train != TRAIN_TAKES else "")
        + (f" --minutes {minutes:g}" if minutes != MINUTES else ""),
        "data": {"train_takes": n_train, "val_takes": n_val, "take_seconds": TAKE_SECONDS,
                 "train_onsets": int(sum(len(o) for o in train_data["onsets"])),
                 "val_onsets": int(sum(len(o) for o in val_data["onsets"])),
                 "soundfonts": {k: LICENCES[k] for k in TRAIN_SOUNDFONTS},
                 "held_out_soundfont": LICENCES[HELD_OUT_SOUNDFONT],
                 "styles": STYLE_WEIGHTS, "room_tone_share": ROOM_TONE_SHARE,
                 "clipped_share": CLIPPED_SHARE},
        "model": {"features": N_FEATURES, "dense": DENSE, "hidden": HIDDEN,
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "training": {"minutes_budget": minutes, "render_seconds": round(t_render, 1),
                     "train_seconds": history[-1]["seconds"] if history else 0.0,
                     "threads": THREADS, "batch": BATCH, "crop_hops": CROP_HOPS, "lr": LEARNING_RATE,
                     "epochs": history},
        "validation": {"best_threshold": float(best), "family_thresholds": families, "at_threshold": figures},
    }
    (out_dir / "onsets.json").write_text(json.dumps(metrics, indent=1))
    return metrics
