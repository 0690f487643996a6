"""The GrooVAE baselines (Gillick et al. 2019, 5.1), computed on our own windows.

- :func:`quantized` (5.1.1): every given hit on its step (offset 0) at the mean
  training velocity. We take the mean *per drum class* (kick 0.48 … toms
  0.73 on the GMD train split) rather than one global mean: it is as simple,
  scores a little better, and gives the velocity KL a finite value (the
  paper's single mean has zero variance, its "N/A").
- :func:`knn` (5.1.3): the k = 20 training windows sharing the most hits
  with the query (similarity Σ H_i ∘ H_j, the Hadamard product summed, a
  matrix product over flattened hit matrices taken in chunks so memory stays
  bounded) lend their velocities and offsets. Ties in the count of shared
  hits — frequent on sparse patterns — go to the window with fewer hits of
  its own (fewer notes the query lacks), then to the earlier window.
  A cell's V and O are the mean over the neighbours that *hit* that cell; a
  cell none of them hits falls back to the quantized values. (The paper's
  eq. (2)–(3) average over all k, counting a neighbour without that hit as
  velocity 0 and offset 0; ``mean="all"`` does that.) ``similarity="jaccard"``
  (shared hits / hits of either window) is a stronger variant reported
  beside it: it stops dense training windows from being everyone's neighbour.
- :func:`knn_generate` (drumify, infill): the similarity is taken on the task
  inputs (the tapped track; the part without the removed instrument), and
  the neighbours' hits of the predicted classes are averaged too: a cell is
  hit when at least half of them hit it.

Examples
--------
>>> train = load_groove_split("train")                     # doctest: +SKIP
>>> H, V, O = knn(train, test.H)                           # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

#: Neighbours of the KNN baseline (paper: best of a grid search on the development set).
K = 20
#: Bytes the similarity block of one chunk of queries may take.
CHUNK_BYTES = 32 << 20


def mean_velocity(train, per_class: bool = True) -> np.ndarray:
    """Mean training velocity of the hits, per class (C,) or one value broadcast to (C,).

    Classes without a single training hit get the global mean.
    """
    H = np.asarray(train.H) > 0.5
    V = np.asarray(train.V, np.float64)
    overall = V[H].mean() if H.any() else 0.0
    if not per_class:
        return np.full(H.shape[-1], overall)
    n = H.sum(axis=(0, 1))
    s = (V * H).sum(axis=(0, 1))
    return np.where(n > 0, s / np.maximum(n, 1), overall)


def quantized(train, H, *, per_class: bool = True):
    """The quantized baseline: (H, V, O) with offsets 0 and the mean training velocity.

    Parameters
    ----------
    train : GrooveSet the velocities are averaged over
    H : (N, T, C) hits of the scores
    per_class : one mean per class (default) or the paper's single mean
    """
    H = (np.asarray(H) > 0.5).astype(np.float32)
    V = (H * mean_velocity(train, per_class)).astype(np.float32)
    return H, V, np.zeros_like(H)


def neighbours(train_keys, query_keys, k: int = K, chunk: int | None = None, *,
               similarity: str = "hadamard") -> np.ndarray:
    """Indices (Q, k) of the training windows most similar to each query, best first.

    Parameters
    ----------
    train_keys : (N, T, C') binary matrices of the training windows
    query_keys : (Q, T, C') binary matrices of the queries
    k : neighbours per query (at most N)
    chunk : queries per block (default: as many as fit :data:`CHUNK_BYTES`)
    similarity : "hadamard" (the paper: shared hits, Σ H_i ∘ H_j) or "jaccard"
        (shared hits / hits of either)

    Notes
    -----
    The Hadamard score is shared hits × (cells + 1) − own hits, exact in float32: the
    most shared hits first, ties to the training window with fewer hits, then the
    lower index.
    """
    if similarity not in ("hadamard", "jaccard"):
        raise ValueError(f"similarity must be 'hadamard' or 'jaccard', not {similarity!r}")
    A = (np.asarray(train_keys) > 0.5).reshape(len(train_keys), -1).astype(np.float32)
    Q = (np.asarray(query_keys) > 0.5).reshape(len(query_keys), -1).astype(np.float32)
    k = min(k, len(A))
    own = A.sum(axis=1)
    scale = np.float32(A.shape[1] + 1)
    chunk = chunk or max(1, CHUNK_BYTES // (4 * max(len(A), 1)))
    out = np.empty((len(Q), k), np.int64)
    for start in range(0, len(Q), chunk):
        S = Q[start:start + chunk] @ A.T
        if similarity == "hadamard":
            S = S * scale - own                  # fewer own hits wins a tie
        else:
            S = S / np.maximum(Q[start:start + chunk].sum(axis=1)[:, None] + own - S, 1)
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        # Order the k by score, then index (argpartition leaves ties beyond k arbitrary but fixed).
        order = np.lexsort((top, -np.take_along_axis(S, top, axis=1)), axis=1)
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def _neighbour_means(train, idx, mean: str, fallback_v):
    """Mean hit rate, V and O over the neighbours ``idx`` (Q, k): each (Q, T, C)."""
    Hn = (np.asarray(train.H)[idx] > 0.5).astype(np.float32)     # (Q, k, T, C)
    Vn, On = np.asarray(train.V)[idx], np.asarray(train.O)[idx]
    rate = Hn.mean(axis=1)
    if mean == "all":
        return rate, Vn.mean(axis=1), On.mean(axis=1)
    if mean != "hits":
        raise ValueError(f"mean must be 'hits' or 'all', not {mean!r}")
    n = Hn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        V = np.where(n > 0, (Vn * Hn).sum(axis=1) / n, fallback_v)
        O = np.where(n > 0, (On * Hn).sum(axis=1) / n, 0.0)
    return rate, V.astype(np.float32), O.astype(np.float32)


def _batched(fn, n: int, size: int = 256):
    """Concatenate fn(slice) over slices of ``size`` queries (bounded memory for the gathers)."""
    parts = [fn(slice(s, s + size)) for s in range(0, n, size)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def knn(train, query_H, k: int = K, *, mean: str = "hits", similarity: str = "hadamard",
        chunk: int | None = None):
    """KNN humanization: (H, V, O) of the scores ``query_H`` played as their neighbours play.

    Parameters
    ----------
    train : GrooveSet to draw neighbours from (nothing is excluded: splits are disjoint)
    query_H : (Q, T, C) hits of the scores
    k : neighbours
    mean : "hits" (mean over the neighbours hitting the cell) or "all" (the paper's eq. 2–3)
    similarity : "hadamard" (the paper) or "jaccard" (see :func:`neighbours`)
    chunk : queries per similarity block (see :func:`neighbours`)
    """
    H = (np.asarray(query_H) > 0.5).astype(np.float32)
    idx = neighbours(train.H, H, k, chunk, similarity=similarity)
    vbar = mean_velocity(train)

    def part(s):
        _, V, O = _neighbour_means(train, idx[s], mean, vbar)
        return V * H[s], O * H[s]

    V, O = _batched(part, len(H))
    return H, V.astype(np.float32), O.astype(np.float32)


def knn_generate(train, train_keys, query_keys, classes, k: int = K, *, base_H=None,
                 similarity: str = "hadamard", chunk: int | None = None):
    """KNN for drumify and infill: the hits of ``classes`` too come from the neighbours.

    Parameters
    ----------
    train : GrooveSet to draw neighbours from
    train_keys, query_keys : task inputs (hit matrices) of training windows and queries
    classes : indices of the predicted classes
    k : neighbours
    base_H : (Q, T, C) hits kept outside ``classes`` (infill: the given part); zeros when None
    similarity : "hadamard" (the paper) or "jaccard" (see :func:`neighbours`)
    chunk : queries per similarity block

    Returns
    -------
    (H, V, O) : (Q, T, C); outside ``classes`` H is ``base_H`` and V, O are 0.
    """
    idx = neighbours(train_keys, query_keys, k, chunk, similarity=similarity)
    cls = np.zeros(np.asarray(train.H).shape[-1], bool)
    cls[list(classes)] = True
    vbar = mean_velocity(train)

    def part(s):
        rate, V, O = _neighbour_means(train, idx[s], "hits", vbar)
        hit = (rate >= 0.5) & cls
        if base_H is not None:
            keep = (np.asarray(base_H[s]) > 0.5) & ~cls
        else:
            keep = np.zeros_like(hit)
        return (hit | keep).astype(np.float32), V * hit, O * hit

    return tuple(a.astype(np.float32) for a in _batched(part, len(idx)))
