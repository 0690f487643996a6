"""Live pattern generation measured on the Groove MIDI Dataset's test takes (issue 15).

::

    rolypoly evaluate live-groove --json live-groove.json            # the whole test split
    rolypoly evaluate live-groove --bars 40 --limit 8 --json q.json  # a quick run

Every figure comes from the bar generators as a live worker calls them
(:class:`rolypoly.generate.BarWriter`, one bar per call, the shipped weights
unless others are given) and from what the drummers of the official test
split played.

**Continuation.** For every bar k+1 ≥ 1 of a test ``beat`` take: the two bars
before it as the real drummer played them, and the drummer's taps for bar
k+1 (every hit of the bar collapsed to one voice, with the loudest hit's
accent and timing: GrooVAE's Tap2Drum, :func:`rolypoly.pretrain.train_generate.simulate_partner`)
as the partner. Each method writes bar k+1; note F1 per step (a cell is a
step and a drum class) and timing MAE in ms (on the notes both the method and
the drummer played) against what the drummer played:

* ``model`` — the continuation model, follow 0.5 (drums and partner, as the
  dataset's drummers), temperature 0, the take's style;
* ``repeat_last_bar`` — bar k again;
* ``drumify`` — the offline groove tool (``rolypoly groove drumify``'s
  model, GrooVAE's Tap2Drum on the 16th grid) on the taps of bars k and
  k+1, its second bar put back on the generation grid;
* ``knn`` — the 20 training bars whose previous bar and taps share the most
  hits with the query's (GrooVAE's KNN baseline, :func:`rolypoly.pretrain.groove_baselines.knn_generate`):
  a cell is hit where half of them hit it, with their mean velocity and offset.

**Fills.** Each test fill with a groove to leave (a beat take of the same
session, style and tempo, as in training) gets fills written by the fill
model from that groove, drawn at :data:`FILL_TEMPERATURE` (several seeds).
Their statistics — per class the histogram of hits per bar, and the share of
bars with a tom and with a crash — are compared with the drummers' test fills
as a KL divergence (:func:`fill_kl`, summed over the parts); ``kl_beats`` is
the same divergence between the drummers' test fills and their test beats.
A fill model that writes fills as drummers do has ``kl_model`` well below
``kl_beats``. The same at temperature 0 is reported beside it.

**Style.** A classifier (:class:`StyleClassifier`: multinomial logistic
regression on a bar's hits and velocities, class-balanced, trained here in
seconds, deterministic) learns the style of single bars of the train split's
beats, for the styles with at least :data:`MIN_STYLE_BARS` train bars. The
model then writes bars from the partner's taps alone (follow 1: the drums
hidden), the taps of test bars, once with each of those styles requested;
``accuracy`` is the share the classifier labels with the requested style,
``chance`` 1 / styles. Only the style changes between the bars written from
one tap pattern, so accuracy above chance is the style control's doing. The
classifier's accuracy on the drummers' own test bars is beside it
(``classifier_on_test_bars``: what a bar can tell of its style at all), and
so is the accuracy on the continuation bars written with the take's own style.

The command (``rolypoly/cli/training.py``) adds the live part's follow
experiment (:func:`rolypoly.lab.experiments.follow_experiment`, ``follow``)
and the next-bar time of ``rolypoly bench generate`` (``next_bar``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from rolypoly.drum_map import CLASS_NAMES, N_CLASSES, class_index
from rolypoly.generate import FILL_TEMPERATURE
from rolypoly.generate_model import GRID, STEPS_PER_BAR, STEPS_PER_BEAT, STYLES

from .bar_data import BarSet, concat_bars, load_bars
from .groove_baselines import K, knn_generate
from .train_generate import Examples, bar_metrics, hvo, simulate_partner

#: Fills drawn per test fill (different seeds).
FILL_DRAWS = 8
#: Styles the classifier learns: those with at least this many train beat bars.
MIN_STYLE_BARS = 500
#: Hits per bar per class above which the histogram bins are pooled.
MAX_COUNT_BIN = 12
TOMS = tuple(class_index(c) for c in ("low_tom", "mid_tom", "high_tom"))
CRASH = class_index("crash")


# ----------------------------------------------------------------------------- grids

def regrid(H, V, O, src_spb: int, dst_spb: int):
    """Bars (N, S, 9) from one grid to another (steps per beat), each hit at its played time.

    A hit lands on the destination step nearest its played time, the rest as
    its offset; a hit played before the bar's first step or after its last
    stays on that step, its offset clipped to half a step (it stays in its
    bar). Two hits of one class on one step keep the louder.

    >>> H = np.zeros((1, 48, 9)); H[0, 4, 0] = 1            # an 8th-note triplet
    >>> h, v, o = regrid(H, H, 0 * H, 12, 4)
    >>> int(np.flatnonzero(h[0, :, 0])[0]), round(float(o[0, 1, 0]), 3)
    (1, 0.333)
    """
    H, V, O = (np.asarray(a, np.float32) for a in (H, V, O))
    n, S, C = H.shape
    dst_S = S * dst_spb // src_spb
    out = [np.zeros((n, dst_S, C), np.float32) for _ in range(3)]
    b, s, c = np.nonzero(H > 0.5)
    t = (s + O[b, s, c]) * dst_spb / src_spb
    step = np.clip(np.rint(t).astype(np.int64), 0, dst_S - 1)
    off = np.clip(t - step, -0.5, 0.5)
    for i in np.argsort(V[b, s, c], kind="stable"):  # the loudest written last
        out[0][b[i], step[i], c[i]] = 1.0
        out[1][b[i], step[i], c[i]] = V[b[i], s[i], c[i]]
        out[2][b[i], step[i], c[i]] = off[i]
    return tuple(out)


def _figure(pred, true, bpm) -> dict:
    m = bar_metrics(pred, true, bpm)
    return {"f1": m["hit_f1"], "mae_ms": m["offset_mae_ms"], "precision": m["hit_precision"],
            "recall": m["hit_recall"], "hits_played": m["hits_played"], "hits_true": m["hits_true"]}


# ----------------------------------------------------------------------------- continuation

def _write_all(writer, contexts, partners, styles, controls_for, *, fill: bool = False):
    """The writer's bars (H, V, O) for contexts (N, 2, S, 27), partners (N, S, 3) and styles (N,)."""
    from rolypoly.generate import BarState

    out = [np.zeros((len(contexts), STEPS_PER_BAR, N_CLASSES), np.float32) for _ in range(3)]
    for i in range(len(contexts)):
        state = BarState(np.array(contexts[i], np.float32), np.array(partners[i], np.float32), bar=i)
        for part, a in zip(out, writer.write(state, controls_for(i, styles[i]), fill=fill)):
            part[i] = a
    return tuple(out)


def _drumify(model, ex: Examples, idx) -> tuple:
    """The offline drumify tool on the taps of bars k and k+1 (16th grid), bar k+1 back on the bar grid."""
    from rolypoly.groove_model import task_input

    b = ex.bars
    last, tgt = ex.context[idx, -1], ex.target[idx]
    two = [np.where((last >= 0)[:, None, None], a[np.maximum(last, 0)], 0.0) for a in (b.H, b.V, b.O)]
    pair = [np.concatenate([p, a[tgt]], axis=1) for p, a in zip(two, (b.H, b.V, b.O))]
    spb = model.spb
    windows = regrid(*pair, STEPS_PER_BEAT, spb)
    taps = task_input("drumify", *windows)
    played = []
    for a in range(0, len(idx), 512):
        played.append(model.generate(*(t[a:a + 512] for t in taps), temperature=0.0, velocity_spread=0.0))
    H, V, O = (np.concatenate(p) for p in zip(*played))
    half = H.shape[1] // 2
    return regrid(H[:, half:], V[:, half:], O[:, half:], spb, STEPS_PER_BEAT)


def _knn(train_ex: Examples, ex: Examples, idx) -> tuple:
    """KNN continuation: neighbours by the previous bar's hits and the taps of the bar to write."""
    def keys(e: Examples, which):
        prev = hvo(e.source, e.context[which, -1])[..., :N_CLASSES]
        t = e.target[which]
        taps = simulate_partner(e.bars.H[t], e.bars.V[t], e.bars.O[t])[..., :1]
        return np.concatenate([prev, taps], axis=-1)

    all_train = np.arange(len(train_ex))
    t = train_ex.target
    train = SimpleNamespace(H=train_ex.bars.H[t], V=train_ex.bars.V[t], O=train_ex.bars.O[t])
    return knn_generate(train, keys(train_ex, all_train), keys(ex, idx), range(N_CLASSES), K)


def continuation(writer, drumify_model, train: BarSet, test: BarSet, *, bars: int | None = None) -> dict:
    """Rows of the four methods on the test beats (module docstring); the first ``bars`` targets only."""
    from rolypoly.generate import Controls

    ex, train_ex = Examples("continuation", test), Examples("continuation", train)
    idx = np.arange(len(ex) if bars is None else min(bars, len(ex)))
    if not len(idx):
        return {"bars": 0}
    tgt = ex.target[idx]
    true = tuple(a[tgt] for a in (test.H, test.V, test.O))
    bpm = ex.bpm[idx]
    ctx = hvo(test, ex.context[idx])
    partner = simulate_partner(*true)
    started = time.perf_counter()
    model = _write_all(writer, ctx, partner, [STYLES[s] if s < len(STYLES) else None for s in ex.style[idx]],
                       lambda i, style: Controls(follow=0.5, temperature=0.0, style=style))
    model_s = time.perf_counter() - started
    last = ex.context[idx, -1]
    repeat = tuple(np.where((last >= 0)[:, None, None], a[np.maximum(last, 0)], 0.0) for a in (test.H, test.V, test.O))
    rows = {"model": _figure(model, true, bpm), "repeat_last_bar": _figure(repeat, true, bpm)}
    rows["drumify"] = _figure(_drumify(drumify_model, ex, idx), true, bpm) if drumify_model is not None else \
        {"skipped": "no drumify model"}
    rows["knn"] = _figure(_knn(train_ex, ex, idx), true, bpm)
    beaten = [m for m in ("repeat_last_bar", "drumify", "knn") if "f1" in rows[m]]
    return {"bars": int(len(idx)), "takes": int(len(np.unique(test.take_of_bar[tgt]))), **rows,
            "model_beats_all_on_f1": all(rows["model"]["f1"] > rows[m]["f1"] for m in beaten),
            "model_seconds": round(model_s, 2), "_generated": model, "_styles": ex.style[idx]}


# ----------------------------------------------------------------------------- fills

def fill_statistics(H) -> dict:
    """What a set of bars (N, S, 9) plays: per class the histogram of hits per bar, tom and crash use.

    >>> H = np.zeros((2, 48, 9)); H[0, :4, 4] = 1
    >>> s = fill_statistics(H)
    >>> float(s["counts"][4, 4]), s["tom_use"], s["crash_use"]
    (1.0, 0.5, 0.0)
    """
    H = np.asarray(H) > 0.5
    per_bar = np.minimum(H.sum(axis=1), MAX_COUNT_BIN)          # (N, 9)
    counts = np.stack([np.bincount(per_bar[:, c], minlength=MAX_COUNT_BIN + 1) for c in range(H.shape[-1])])
    n = max(len(H), 1)
    return {"bars": int(len(H)), "counts": counts.astype(np.float64),
            "tom_use": float(H[..., list(TOMS)].any(axis=(1, 2)).sum() / n),
            "crash_use": float(H[..., CRASH].any(axis=1).sum() / n),
            "hits_per_bar": {name: round(float(H[..., c].sum() / n), 3) for c, name in enumerate(CLASS_NAMES)}}


def _kl(p, q) -> float:
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return float(np.sum(np.where(p > 0, p * np.log(p / q), 0.0)))


def fill_kl(data: dict, model: dict, smoothing: float = 0.5) -> dict:
    """KL(data ‖ model) of :func:`fill_statistics`: per-class count histograms (summed over classes), tom and crash use.

    Histograms are smoothed by ``smoothing`` counts a bin, and the shares of
    bars with toms or a crash the same way, so a bin one side never plays
    gives a large but finite divergence.

    >>> H = np.zeros((4, 48, 9)); H[:, ::12, 1] = 1
    >>> fill_kl(fill_statistics(H), fill_statistics(H))["kl"]
    0.0
    """
    def smooth(counts):
        c = counts + smoothing
        return c / c.sum(axis=-1, keepdims=True)

    def share(x, n):
        p = (x * n + smoothing) / (n + 2 * smoothing)
        return np.array([p, 1 - p])

    counts = sum(_kl(p, q) for p, q in zip(smooth(data["counts"]), smooth(model["counts"])))
    tom = _kl(share(data["tom_use"], data["bars"]), share(model["tom_use"], model["bars"]))
    crash = _kl(share(data["crash_use"], data["bars"]), share(model["crash_use"], model["bars"]))
    return {"kl": round(counts + tom + crash, 4), "counts": round(counts, 4), "tom_use": round(tom, 4),
            "crash_use": round(crash, 4)}


def fills(writer, splits: dict, *, bars: int | None = None, temperature: float = FILL_TEMPERATURE,
          draws: int = FILL_DRAWS, seed: int = 0) -> dict:
    """``kl_model`` and ``kl_beats`` (module docstring) on the test fills; the first ``bars`` fills only."""
    from rolypoly.generate import Controls

    test = splits["test"]
    ex = Examples("fill", test, concat_bars(splits.values()))
    with_groove = np.flatnonzero(ex.context[:, -1] >= 0)
    idx = with_groove if bars is None else with_groove[:bars]
    beats = ~test.fill[test.take_of_bar]
    beat_bars = test.H[beats & (test.H.sum(axis=(1, 2)) > 0)]
    if not len(idx) or not len(beat_bars):
        return {"fills": int(len(idx)), "skipped": "no test fill with a groove to leave in this selection"}
    true = test.H[ex.target[idx]]
    ctx = hvo(ex.source, ex.context[idx])
    silent = np.zeros((len(idx), STEPS_PER_BAR, 3), np.float32)
    styles = [STYLES[s] if s < len(STYLES) else None for s in ex.style[idx]]

    def draw(temp, n_draws):
        out = []
        for d in range(n_draws):
            H, _, _ = _write_all(writer, ctx, silent, styles,
                                 lambda i, style: Controls(temperature=temp, seed=seed + d, style=style), fill=True)
            out.append(H)
        return np.concatenate(out)

    data = fill_statistics(true)
    drawn = fill_statistics(draw(temperature, draws))
    most_likely = fill_statistics(draw(0.0, 1))
    beat_stats = fill_statistics(beat_bars)
    km, kb, k0 = fill_kl(data, drawn), fill_kl(data, beat_stats), fill_kl(data, most_likely)
    return {"kl_model": km["kl"], "kl_beats": kb["kl"], "kl_model_temperature_0": k0["kl"],
            "temperature": temperature, "draws": draws, "fills": int(len(idx)), "beat_bars": int(len(beat_bars)),
            "parts": {"model": km, "beats": kb, "model_temperature_0": k0},
            "model_closer_to_fills_than_beats": bool(km["kl"] < kb["kl"]),
            "tom_use": {"drummers_fills": round(data["tom_use"], 4), "model": round(drawn["tom_use"], 4),
                        "model_temperature_0": round(most_likely["tom_use"], 4), "beats": round(beat_stats["tom_use"], 4)},
            "crash_use": {"drummers_fills": round(data["crash_use"], 4), "model": round(drawn["crash_use"], 4),
                          "model_temperature_0": round(most_likely["crash_use"], 4),
                          "beats": round(beat_stats["crash_use"], 4)},
            "hits_per_bar": {"drummers_fills": data["hits_per_bar"], "model": drawn["hits_per_bar"],
                             "model_temperature_0": most_likely["hits_per_bar"], "beats": beat_stats["hits_per_bar"]}}


# ----------------------------------------------------------------------------- style

def bar_features(H, V) -> np.ndarray:
    """What the style classifier reads of a bar (N, S, 9): hits and velocities per cell, hits per class.

    >>> bar_features(np.zeros((2, 48, 9)), np.zeros((2, 48, 9))).shape
    (2, 873)
    """
    H = (np.asarray(H) > 0.5).astype(np.float32)
    V = np.asarray(V, np.float32) * H
    return np.concatenate([H.reshape(len(H), -1), V.reshape(len(V), -1), H.sum(axis=1) / 8.0], axis=1)


@dataclass
class StyleClassifier:
    """Multinomial logistic regression on :func:`bar_features`, class-balanced, L2-regularised.

    Trained full-batch with L-BFGS from zeros on one thread: the same weights
    every run, in seconds.
    """

    styles: tuple          # indices into STYLES, in the order of the outputs
    weight: np.ndarray = None
    bias: np.ndarray = None
    mean: np.ndarray = None
    scale: np.ndarray = None
    l2: float = 1e-3

    def fit(self, H, V, labels, *, iterations: int = 200) -> "StyleClassifier":
        import torch

        X = bar_features(H, V)
        self.mean, self.scale = X.mean(0), X.std(0) + 1e-3
        y = np.searchsorted(np.asarray(self.styles), labels)
        counts = np.bincount(y, minlength=len(self.styles))
        class_w = torch.tensor(len(y) / (len(self.styles) * np.maximum(counts, 1)), dtype=torch.float32)
        Xt = torch.from_numpy((X - self.mean) / self.scale)
        yt = torch.from_numpy(y)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            W = torch.zeros(X.shape[1], len(self.styles), requires_grad=True)
            b = torch.zeros(len(self.styles), requires_grad=True)
            opt = torch.optim.LBFGS([W, b], max_iter=iterations, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(Xt @ W + b, yt, weight=class_w) + self.l2 * (W ** 2).sum()
                loss.backward()
                return loss

            opt.step(closure)
        finally:
            torch.set_num_threads(threads)
        self.weight, self.bias = W.detach().numpy(), b.detach().numpy()
        return self

    def predict(self, H, V) -> np.ndarray:
        """Style indices (into STYLES) of bars."""
        X = (bar_features(H, V) - self.mean) / self.scale
        return np.asarray(self.styles)[np.argmax(X @ self.weight + self.bias, axis=1)]


def style_classifier(train: BarSet, min_bars: int = MIN_STYLE_BARS) -> StyleClassifier:
    """The classifier trained on the train split's beat bars of the styles with ``min_bars`` bars or more."""
    beat = ~train.fill[train.take_of_bar] & (train.H.sum(axis=(1, 2)) > 0)
    style = train.style[train.take_of_bar]
    counts = np.bincount(style[beat], minlength=len(STYLES) + 1)[:len(STYLES)]
    styles = tuple(int(s) for s in np.flatnonzero(counts >= min_bars))
    if len(styles) < 2:
        styles = tuple(int(s) for s in np.argsort(-counts)[:2] if counts[s] > 0)
    keep = beat & np.isin(style, styles)
    return StyleClassifier(styles).fit(train.H[keep], train.V[keep], style[keep])


def style(writer, train: BarSet, test: BarSet, *, bars: int | None = None, generated=None) -> dict:
    """``accuracy`` and ``chance`` (module docstring); ``bars`` tap patterns at most."""
    from rolypoly.generate import Controls

    started = time.perf_counter()
    clf = style_classifier(train)
    fit_s = time.perf_counter() - started
    styles = clf.styles
    if len(styles) < 2:
        return {"skipped": "fewer than two styles in this selection of the train split"}
    beat = ~test.fill[test.take_of_bar] & (test.H.sum(axis=(1, 2)) > 0)
    test_style = test.style[test.take_of_bar]
    known = beat & np.isin(test_style, styles)
    real = float(np.mean(clf.predict(test.H[known], test.V[known]) == test_style[known])) if known.any() else None
    pattern_bars = np.flatnonzero(beat)
    if bars is not None:
        pattern_bars = pattern_bars[:bars]
    # Spread over the split (not only the first takes): every len/n-th beat bar.
    step = max(1, len(np.flatnonzero(beat)) // max(len(pattern_bars), 1))
    pattern_bars = np.flatnonzero(beat)[::step][:len(pattern_bars)]
    partner = simulate_partner(test.H[pattern_bars], test.V[pattern_bars], test.O[pattern_bars])
    hidden = np.zeros((len(pattern_bars), 2, STEPS_PER_BAR, 3 * N_CLASSES), np.float32)
    hits, labels = [], []
    for s in styles:
        H, V, _ = _write_all(writer, hidden, partner, [STYLES[s]] * len(pattern_bars),
                             lambda i, name: Controls(follow=1.0, temperature=0.0, style=name))
        hits.append(clf.predict(H, V))
        labels.append(np.full(len(pattern_bars), s))
    predicted, requested = np.concatenate(hits), np.concatenate(labels)
    out = {"accuracy": round(float(np.mean(predicted == requested)), 4), "chance": round(1.0 / len(styles), 4),
           "styles": [STYLES[s] for s in styles], "tap_patterns": int(len(pattern_bars)),
           "bars_labelled": int(len(predicted)),
           "per_style": {STYLES[s]: round(float(np.mean(predicted[requested == s] == s)), 4) for s in styles},
           "classifier_on_test_bars": None if real is None else round(real, 4),
           "classifier_test_bars": int(known.sum()), "classifier_seconds": round(fit_s, 2)}
    out["at_least_2x_chance"] = bool(out["accuracy"] >= 2 * out["chance"])
    if generated is not None:
        (H, V, _), req = generated
        ok = np.isin(req, styles)
        if ok.any():
            out["continuation_bars_own_style"] = round(float(np.mean(clf.predict(H[ok], V[ok]) == req[ok])), 4)
    return out


# ----------------------------------------------------------------------------- all of it

def evaluate(root=None, *, bars: int | None = None, limit: int | None = None, continuation_weights=None,
             fill_weights=None, drumify_weights=None, fill_temperature: float = FILL_TEMPERATURE,
             fill_draws: int = FILL_DRAWS) -> dict:
    """Continuation, fills and style (module docstring) as one report.

    Parameters
    ----------
    root : dataset folder (see :func:`rolypoly.pretrain.gmd.gmd_dir`)
    bars : at most this many test bars per section (continuation targets, fills, tap patterns)
    limit : only the first ``limit`` takes of each split (as ``pretrain --limit``)
    continuation_weights, fill_weights : the bar models' weights (default: shipped)
    drumify_weights : the offline drumify model (default: shipped)
    """
    import torch

    from rolypoly.generate import BarWriter
    from rolypoly.groove_model import load_groove_model

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        writer = BarWriter.load(continuation_weights, fill_weights)
        drumify_model = load_groove_model("drumify", drumify_weights)
        splits = {s: load_bars(s, root, limit=limit) for s in ("train", "validation", "test")}
        cont = continuation(writer, drumify_model, splits["train"], splits["test"], bars=bars)
        generated = cont.pop("_generated", None), cont.pop("_styles", None)
        result = {
            "continuation": cont,
            "fills": fills(writer, splits, bars=bars, temperature=fill_temperature, draws=fill_draws),
            "style": style(writer, splits["train"], splits["test"], bars=bars,
                           generated=generated if generated[0] is not None else None),
        }
    finally:
        torch.set_num_threads(threads)
    result["setup"] = {"grid": GRID, "steps_per_bar": STEPS_PER_BAR, "split": "test", "bars": bars,
                       "limit": limit, "threads": 1,
                       "continuation_weights": str(continuation_weights or "shipped"),
                       "fill_weights": str(fill_weights or "shipped"),
                       "drumify_weights": str(drumify_weights or "shipped"),
                       "seconds": round(time.perf_counter() - started, 1)}
    return result
