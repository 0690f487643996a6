"""What the drums learnt between two takes, said in a musician's words.

After a take the agent learns from it (:mod:`rolypoly.learning`). This
module says what that changed, in milliseconds, beats and percent, never
in the model's units::

    snare 6 ms later on beats 2 and 4
    off-beats swung 58 % → 63 %
    drums against the partner: spread 7.1 → 5.4 ms; on average 4.0 ms early → 1.2 ms early

Everything is computed from the take and from the offsets the old and the
new model play on the take's rows (the same feature rows, so the same
partner): per drum class and beat position, the mean move of the hits; the
swing of off-beat 8ths (and of 16ths where the grid holds them); and how
the drums sit against the partner. The partner figures before the update
are the take's, measured; after it, they are what the take would have
measured had the drums played the new model's offsets and the partner the
same as in the take.

Signs: a take's ``diff`` is partner − drum (positive: the partner is
late), so the drums against the partner are −diff: negative is "early".

Only what a player could hear is said (the thresholds below). The one
entry point for the command line, the demo and the session's terminal UI
is :func:`take_report` (a session, a take, a model version);
:func:`learning_report` does the same from arrays.

Examples
--------
Four bars of 4/4 at 120 bpm (a bar is 2000 ms): kick on 1 and 3, snare on
2 and 4, hi-hat on the 8ths; the new model plays every snare 6 ms later.

>>> import numpy as np
>>> from rolypoly.score import score_from_grid
>>> grid = np.zeros((96, 9), bool)
>>> grid[::3, 2] = True                                   # closed hi-hat on every 8th
>>> grid[[b * 24 + s for b in range(4) for s in (0, 12)], 0] = True   # kick on 1 and 3
>>> grid[[b * 24 + s for b in range(4) for s in (6, 18)], 1] = True   # snare on 2 and 4
>>> score = score_from_grid(grid, bpm=120)
>>> before = np.zeros(len(score))
>>> after = before + np.where(score.hits[:, 1], 6 / 2000, 0.0)      # 6 ms, as a fraction of a bar
>>> learning_report(score, before, after)
['snare 6 ms later on beats 2 and 4']
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .drum_map import CLASS_NAMES
from .features import HITS, TEMPO, TIMESIG
from .grid import STEPS_PER_BAR

# -- what is worth saying ------------------------------------------------------
#: Smallest mean move (ms) of a group of hits (one drum on one beat position) that is reported.
#: Listeners notice a single note displaced by about 6 ms in a fast sequence, and
#: about 2.5 % of the gap between notes in slower ones (Friberg & Sundberg 1995); a
#: whole group of hits moved together is heard at less, and 3 ms is still three times
#: the engine's own timing error (``rolypoly bench output``).
MOVE_MS = 3.0
#: Smallest change (ms) of the drums' average placement against the partner that is
#: reported: an average over every heard hit, so a smaller change is steadier than
#: one hit's move, yet below 1 ms nothing would be heard.
AVERAGE_MS = 1.0
#: Smallest change (ms) of the spread against the partner that is reported.
SPREAD_MS = 0.5
#: Most drum moves listed (the largest first): a report is read between two takes.
MAX_MOVES = 4
#: Fewest off-beat/beat pairs a swing figure is given on.
MIN_PAIRS = 2

#: Beat position of a hit (:func:`beat_positions`): beats are 1, 2, 3 ...; these are the others.
OFFBEAT, BETWEEN = 0, -1

_WORDS = {"closed_hihat": "closed hi-hat", "open_hihat": "open hi-hat", "low_tom": "low tom",
          "mid_tom": "mid tom", "high_tom": "high tom"}


def class_words(c: int) -> str:
    """A drum class as a musician says it.

    >>> class_words(2)
    'closed hi-hat'
    """
    name = CLASS_NAMES[int(c)]
    return _WORDS.get(name, name)


def _and(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ----------------------------------------------------------------------------- drums against the partner

def early_late(ms: float) -> str:
    """Where the drums sit, drums − partner in ms: '4.0 ms early', '1.2 ms late' or 'with the partner'.

    >>> early_late(-4.04), early_late(1.2), early_late(0.02)
    ('4.0 ms early', '1.2 ms late', 'with the partner')
    """
    if round(abs(ms), 1) == 0:
        return "with the partner"
    return f"{abs(ms):.1f} ms {'early' if ms < 0 else 'late'}"


@dataclass(frozen=True)
class PartnerFit:
    """How the drums sat against the partner over the hits where the partner was heard.

    ``drums_ms`` is the mean of drums − partner (negative: the drums early),
    ``spread_ms`` its standard deviation (population, as everywhere in rolypoly).
    """

    hits: int
    drums_ms: float
    spread_ms: float

    def words(self) -> str:
        """'4.0 ms early, spread 7.1 ms'."""
        return f"{early_late(self.drums_ms)}, spread {self.spread_ms:.1f} ms"

    def as_dict(self) -> dict:
        return asdict(self)


def partner_fit(diff_ms) -> PartnerFit | None:
    """The drums against the partner from a take's diff (partner − drum, ms; NaN where not heard).

    None when the partner was never heard.

    >>> partner_fit([10.0, 6.0, float("nan")])
    PartnerFit(hits=2, drums_ms=-8.0, spread_ms=2.0)
    >>> partner_fit([float("nan")]) is None
    True
    """
    d = np.asarray(diff_ms, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return None
    return PartnerFit(int(len(d)), round(float(-d.mean()), 3), round(float(d.std()), 3))


def partner_change(diff_ms, move_ms) -> dict | None:
    """The drums against the partner before and after the drums move by ``move_ms`` (the partner the same).

    Returns ``{"before": PartnerFit dict, "after": PartnerFit dict}``, None when the partner was never heard.

    >>> partner_change([10.0, 6.0], [2.0, -2.0])["after"]
    {'hits': 2, 'drums_ms': -8.0, 'spread_ms': 0.0}
    """
    before = partner_fit(diff_ms)
    if before is None:
        return None
    # diff is partner − drum: a drum moved later by m ms leaves the partner m ms less late.
    after = partner_fit(np.asarray(diff_ms, np.float64) - np.asarray(move_ms, np.float64))
    return {"before": before.as_dict(), "after": after.as_dict()}


def partner_words(change: dict) -> str:
    """One line from :func:`partner_change`: only the figures that moved enough to say so.

    >>> partner_words({"before": {"hits": 9, "drums_ms": -4.0, "spread_ms": 7.1},
    ...                "after": {"hits": 9, "drums_ms": -1.2, "spread_ms": 5.4}})
    'drums against the partner: spread 7.1 → 5.4 ms; on average 4.0 ms early → 1.2 ms early'
    >>> partner_words({"before": {"hits": 9, "drums_ms": -4.0, "spread_ms": 7.1},
    ...                "after": {"hits": 9, "drums_ms": -4.2, "spread_ms": 7.0}})
    'drums against the partner as before: 4.0 ms early, spread 7.1 ms'
    """
    b, a = PartnerFit(**change["before"]), PartnerFit(**change["after"])
    parts = []
    if abs(a.spread_ms - b.spread_ms) >= SPREAD_MS:
        parts.append(f"spread {b.spread_ms:.1f} → {a.spread_ms:.1f} ms")
    if abs(a.drums_ms - b.drums_ms) >= AVERAGE_MS:
        parts.append(f"on average {early_late(b.drums_ms)} → {early_late(a.drums_ms)}")
    if not parts:
        return f"drums against the partner as before: {b.words()}"
    return "drums against the partner: " + "; ".join(parts)


def row_bar_ms(rows) -> np.ndarray:
    """Bar length (ms) of each take row as played, from its feature row (tempo, meter); NaN where unknown.

    A take may be played at another tempo than its score's, so the take's own rows say.

    >>> from rolypoly.take import as_rows
    >>> row_bar_ms(as_rows([{"row": 0, "bar": 0, "step": 0, "yhat": 0.0, "notated": 0.0,
    ...                       "features": [0] * 10 + [120, 0.75, 0, 0, 0]}])).tolist()
    [1500.0]
    """
    features = np.asarray(rows["features"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ms = 60_000.0 / features[:, TEMPO] * 4 * features[:, TIMESIG]
    return np.where(np.isfinite(ms) & (ms > 0), ms, np.nan)


def take_partner_change(rows, after) -> dict | None:
    """:func:`partner_change` of a take had its drums played the offsets ``after`` (bar fractions).

    The take's drums played its rows' ``yhat``; the partner is taken to play the same.

    >>> from rolypoly.take import as_rows
    >>> rows = as_rows([{"row": 0, "bar": 0, "step": 0, "yhat": 0.0, "notated": 0.0, "diff": 0.005,
    ...                  "features": [0] * 10 + [120, 1.0, 0, 0, 0]}])
    >>> take_partner_change(rows, [0.001])
    {'before': {'hits': 1, 'drums_ms': -10.0, 'spread_ms': 0.0}, 'after': {'hits': 1, 'drums_ms': -8.0, 'spread_ms': 0.0}}
    """
    ms = row_bar_ms(rows)
    move = (np.asarray(after, np.float64) - np.asarray(rows["yhat"], np.float64)) * ms
    return partner_change(np.asarray(rows["diff"], np.float64) * ms, move)


# ----------------------------------------------------------------------------- beats

def beat_grid(numerator: int, denominator: int) -> tuple[int, int]:
    """Beats in a bar of this meter, and 8ths (or halves) per beat.

    Compound meters (6/8, 9/8, 12/8) count dotted quarters, three 8ths
    each; the others count their written note value, two halves each.

    >>> beat_grid(4, 4), beat_grid(6, 8), beat_grid(3, 4), beat_grid(7, 8)
    ((4, 2), (2, 3), (3, 2), (7, 2))
    """
    if denominator >= 8 and numerator % 3 == 0 and numerator > 3:
        return numerator // 3, 3
    return int(numerator), 2


def _position_table(numerator: int, denominator: int) -> list[int]:
    """Beat position of each of the 24 steps of a bar of this meter."""
    beats, sub = beat_grid(numerator, denominator)
    per_beat = STEPS_PER_BAR / beats
    table = [BETWEEN] * (STEPS_PER_BAR + 1)
    for j in range(beats * sub):
        step = int(np.rint(j * per_beat / sub))    # the grid rounds as the score does
        if table[step] == BETWEEN:
            table[step] = j // sub + 1 if j % sub == 0 else OFFBEAT
    return table[:STEPS_PER_BAR]


def beat_positions(steps, meters, whole=None) -> np.ndarray:
    """Where each hit sits: beat 1, 2, 3 …, :data:`OFFBEAT` or :data:`BETWEEN` (16ths, triplets).

    Parameters
    ----------
    steps : grid step of each row in its bar (0..23)
    meters : (numerator, denominator) of each row (:meth:`rolypoly.score.TempoMap.meter_at`)
    whole : optional bool per row, False for a bar a meter change cut short (no beats there)

    Examples
    --------
    >>> beat_positions([0, 3, 6, 2], [(4, 4)] * 4).tolist()
    [1, 0, 2, -1]
    >>> beat_positions([0, 4, 12], [(6, 8)] * 3).tolist()
    [1, 0, 2]
    """
    steps = np.asarray(steps, dtype=np.int64)
    meters = np.asarray(meters, dtype=np.int64).reshape(-1, 2)
    out = np.full(len(steps), BETWEEN, dtype=np.int64)
    tables: dict = {}
    for i, (s, (n, d)) in enumerate(zip(steps.tolist(), meters.tolist())):
        table = tables.get((n, d)) or tables.setdefault((n, d), _position_table(n, d))
        if 0 <= s < STEPS_PER_BAR:
            out[i] = table[s]
    if whole is not None:
        out[~np.asarray(whole, bool)] = BETWEEN
    return out


def _where(positions: set) -> str:
    """'on beat 1', 'on beats 2 and 4', 'on beats 1 and 3 and the off-beats', 'on the 16ths'.

    >>> _where({2, 4}), _where({OFFBEAT, BETWEEN})
    ('on beats 2 and 4', 'on the off-beats and the 16ths')
    """
    beats = sorted(p for p in positions if p >= 1)
    parts = []
    if beats:
        parts.append(("beat " if len(beats) == 1 else "beats ") + _and([str(b) for b in beats]))
    if OFFBEAT in positions:
        parts.append("the off-beats")
    if BETWEEN in positions:
        parts.append("the 16ths")
    return "on " + _and(parts)


# ----------------------------------------------------------------------------- swing

#: Swing levels: what is said, and how many beats a pair of notes spans (a beat of 8ths, an 8th of 16ths).
SWING_LEVELS = (("off-beats", 1.0), ("16ths", 0.5))


def swing_pairs(bars, steps, meters, level: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that make swing pairs: (first, second, pair length as a fraction of the bar).

    A pair is ``level`` beats long (1: a beat of two 8ths; 0.5: an 8th of two
    16ths); its second note sits half-way. Only meters of two halves per
    beat, and only where the half-way point is a grid step: 16ths in 4/4
    fall between two of the 24 steps, so their swing cannot be told there.

    >>> first, second, length = swing_pairs([0, 0, 0, 0], [0, 3, 6, 9], [(4, 4)] * 4)
    >>> first.tolist(), second.tolist(), length.tolist()
    ([0, 2], [1, 3], [0.25, 0.25])
    """
    bars = np.asarray(bars, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    meters = np.asarray(meters, dtype=np.int64).reshape(-1, 2)
    at = {(b, s): i for i, (b, s) in enumerate(zip(bars.tolist(), steps.tolist()))}
    first, second, length = [], [], []
    for i, (b, s, (n, d)) in enumerate(zip(bars.tolist(), steps.tolist(), meters.tolist())):
        beats, sub = beat_grid(n, d)
        pair = STEPS_PER_BAR / beats * level
        if sub != 2 or pair != int(pair) or pair % 2:
            continue
        pair = int(pair)
        if s % pair != pair // 2:
            continue
        j = at.get((b, s - pair // 2))
        if j is not None:
            first.append(j)
            second.append(i)
            length.append(pair / STEPS_PER_BAR)
    return np.array(first, np.int64), np.array(second, np.int64), np.array(length)


def swing_percent(first, second, length, offsets) -> float:
    """Where the second note of the pairs falls, in % of the pair (50: straight, 67: triplet swing).

    ``offsets`` are the hits' offsets from the score, fractions of a bar.

    >>> swing_percent([0], [1], [0.25], [0.0, 0.25 / 6])
    66.7
    """
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if not len(first):
        return math.nan
    offsets = np.asarray(offsets, np.float64)
    length = np.asarray(length, np.float64)
    return round(float(np.mean((length / 2 + offsets[second] - offsets[first]) / length)) * 100, 1)


# ----------------------------------------------------------------------------- the report

@dataclass
class _Move:
    classes: list
    ms: float                 # the hits' mean move (ms, + later)
    weight: float             # how much it stands out: |move − the drums' general move| × hits
    positions: set
    everywhere: bool
    coverage: float           # share of the drum's hits that moved so


def _class_moves(hits: np.ndarray, positions: np.ndarray, move_ms: np.ndarray, base: float) -> list[_Move]:
    """Per drum class, the beat positions where its hits moved apart from the general move ``base`` (ms).

    A group (one drum on one beat position) counts when its mean moved by
    :data:`MOVE_MS` or more beside ``base``, and most of its hits with it;
    groups of a drum that moved the same way by about as much make one move.
    The largest moves come first (by how far and how many hits).
    """
    moves: dict = {}
    apart = move_ms - base
    for c in range(hits.shape[1]):
        rows_c = np.flatnonzero(hits[:, c])
        if not len(rows_c):
            continue
        groups = []
        for p in sorted(set(positions[rows_c].tolist())):
            rows = rows_c[positions[rows_c] == p]
            m = apart[rows]
            # A group moved when its mean did, and most of its hits with it (not one far outlier).
            if abs(m.mean()) >= MOVE_MS and abs(m.mean()) > m.std():
                groups.append((float(m.mean()), p, rows))
        groups.sort(key=lambda g: g[0])
        clusters: list[list] = []
        for g in groups:   # same direction, within MOVE_MS of the cluster's first: one sentence
            last = clusters[-1] if clusters else None
            if last and (last[0][0] > 0) == (g[0] > 0) and abs(g[0] - last[0][0]) < MOVE_MS:
                last.append(g)
            else:
                clusters.append([g])
        played = set(positions[rows_c].tolist())
        for cl in clusters:
            rows = np.concatenate([g[2] for g in cl])
            where = {g[1] for g in cl}
            # "everywhere" says more than a list only when the drum plays in more than two places.
            move = _Move([c], float(move_ms[rows].mean()), abs(float(apart[rows].mean())) * len(rows), where,
                         where == played and len(played) > 2, len(rows) / len(rows_c))
            # The same hits moved, seen from two drums (a snare and a hi-hat on beats 2 and 4):
            # said once, by the drum for which this is most of what it plays.
            key = (frozenset(rows.tolist()), cl[0][0] > 0)
            known = moves.get(key)
            if known is None or move.coverage > known.coverage + 1e-9:
                moves[key] = move
            elif abs(move.coverage - known.coverage) <= 1e-9:
                known.classes.append(c)
    return sorted(moves.values(), key=lambda m: -m.weight)


def _general_move(move_ms: np.ndarray) -> float:
    """The move most hits made together (ms, their median), or 0 when there is none to speak of.

    Most hits: two thirds of them moved that way by at least half of :data:`MOVE_MS`.

    >>> _general_move(np.array([6.0, 6.5, 5.5, 9.0, -20.0])), _general_move(np.array([6.0, 0.0, -6.0]))
    (6.0, 0.0)
    """
    if not len(move_ms):
        return 0.0
    general = float(np.median(move_ms))
    along = np.mean(move_ms * np.sign(general) >= MOVE_MS / 2)
    return general if abs(general) >= MOVE_MS and along >= 2 / 3 else 0.0


def _moved(who: str, ms: float, where: str) -> str:
    if round(abs(ms)) == 0:
        return f"{who} where it was {where}".replace(" everywhere", "")
    return f"{who} {abs(ms):.0f} ms {'later' if ms > 0 else 'earlier'} {where}".rstrip()


def learning_report(score, before, after, *, rows=None) -> list[str]:
    """What changed between two models' offsets, in words: one sentence per line.

    Parameters
    ----------
    score : rolypoly.score.Score
        The score played (its meters say where the beats are).
    before, after : array_like
        Offsets the old and the new model play, fractions of a bar, one per
        entry of ``rows`` (or per score row when ``rows`` is None).
    rows : optional take rows (:data:`rolypoly.take.ROW_DTYPE`)
        The take: which score rows, each row's feature row (what sounds,
        tempo and meter as played) and its diff to the partner.

    Returns
    -------
    list of str
        Moves of a drum on some beat positions ("snare 6 ms later on beats
        2 and 4"; first "all drums about 4 ms later" when most hits moved
        together, the others then said where they moved apart from that),
        swing ("off-beats swung 58 % → 63 %"), "no drum moved by 3 ms or
        more" when none did; last, with ``rows``, the drums against the
        partner: the take's figures, then as they would have been with the
        new offsets (``after`` against the take's own ``yhat``).

    Examples
    --------
    See the module docstring.
    """
    before = np.asarray(before, np.float64)
    after = np.asarray(after, np.float64)
    if rows is None:
        idx = np.arange(len(score))
        hits, bars, steps, bar_ms = score.hits, score.bar, score.step, score.bar_ms
    else:
        idx = np.asarray(rows["row"], np.int64)
        hits = np.asarray(rows["features"])[:, HITS] > 0.5
        bars, steps = rows["bar"], rows["step"]
        played = row_bar_ms(rows)
        bar_ms = np.where(np.isnan(played), score.bar_ms[idx], played)
    if len(before) != len(idx) or len(after) != len(idx):
        raise ValueError(f"{len(before)} and {len(after)} offsets for {len(idx)} rows")
    meters = score.tempo_map.meter_at(score.tick[idx])
    whole = np.isclose(score.timesig[idx], meters[:, 0] / meters[:, 1])
    positions = beat_positions(steps, meters, whole)
    move_ms = (after - before) * bar_ms

    lines = []
    sounding = np.asarray(hits, bool).any(axis=1)
    general = _general_move(move_ms[sounding])
    if general:
        lines.append(_moved("all drums about", general, ""))
    moves = _class_moves(np.asarray(hits, bool), positions, move_ms, general)
    for m in moves[:MAX_MOVES]:
        lines.append(_moved(_and([class_words(c) for c in m.classes]), m.ms,
                            "everywhere" if m.everywhere else _where(m.positions)))
    if len(moves) > MAX_MOVES:
        lines.append(f"and {len(moves) - MAX_MOVES} smaller move{'s' if len(moves) > MAX_MOVES + 1 else ''}")
    for name, level in SWING_LEVELS:
        first, second, length = swing_pairs(np.asarray(bars)[sounding], np.asarray(steps)[sounding],
                                            meters[sounding], level)
        if len(first) < MIN_PAIRS:
            continue
        b, a = before[sounding], after[sounding]
        ms = bar_ms[sounding]
        shift = ((a[second] - a[first]) - (b[second] - b[first])) * ms[second]
        was, now = swing_percent(first, second, length, b), swing_percent(first, second, length, a)
        # The off-beats moved against their beats, most pairs alike (not a side effect of one drum's move).
        if abs(shift.mean()) >= MOVE_MS and abs(shift.mean()) > shift.std() and round(was) != round(now):
            lines.append(f"{name} swung {was:.0f} % → {now:.0f} %")
    if not lines:
        lines.append(f"no drum moved by {MOVE_MS:g} ms or more")
    if rows is not None:
        # Against the partner: from what the take's drums played to what the new model plays.
        change = partner_change(np.asarray(rows["diff"], np.float64) * bar_ms,
                                (after - np.asarray(rows["yhat"], np.float64)) * bar_ms)
        if change is not None:
            lines.append(partner_words(change))
    return lines


def take_report(session, take: int | None = None, version: int | None = None) -> list[str]:
    """What a session's model learnt from a take, in words: a heading line, then :func:`learning_report`'s.

    Parameters
    ----------
    session : rolypoly.session.Session
    take : take number (default: the latest)
    version : the model version learnt from that take (default: the last one learnt from it)

    Returns
    -------
    list of str
        The first line says which version came from which take and whether
        the session plays it; a version that was refused says why and
        nothing more; an accepted one is compared with the version it grew
        from, on the take's own rows.

    Examples
    --------
    >>> from rolypoly.session import Session          # doctest: +SKIP
    >>> take_report(Session("sessions/song"), 0)      # doctest: +SKIP
    ['model version 1, learnt from take 0: the session plays it',
     'snare 6 ms later on beats 2 and 4', 'off-beats swung 58 % → 63 %',
     'drums against the partner: spread 7.1 → 5.4 ms']
    """
    from .session import SessionError
    from .take import TakeError, read_take, validate_take

    take_dir = session.take_dir(take)
    k = int(take_dir.name)
    records = session.versions()
    if version is None:
        learnt = [r for r in records if r.get("take") == k]
        if not learnt:
            return [f"take {k}: nothing learnt from it yet"]
        rec = learnt[-1]
    else:
        rec = next((r for r in records if r["version"] == int(version)), None)
        if rec is None:
            raise SessionError(f"{session.folder}: no model version {version}")
    v = rec["version"]
    head = f"model version {v}, learnt from take {rec.get('take', k)}"
    if rec.get("status") != "accepted":
        why = str(rec.get("reason") or rec.get("problem") or rec.get("status"))
        return [f"{head}: not played ({why.removeprefix('refused: ')})"]
    current = session.reload().get("model")
    head += ": the session plays it" if current == v else f": kept; the session plays version {current}"
    try:
        t = read_take(take_dir)
    except TakeError as e:
        return [head, f"take {k} cannot be read again: {e}"]
    score = session.score_of_hash(str(t.header.score_hash))
    check = validate_take(t, str(t.header.score_hash), len(score)) if score is not None else None
    if check is None or not check.usable:
        return [head]
    rows = check.rows
    old, new = session.models.load(rec["parent"]), session.models.load(v)
    return [head] + learning_report(score, old.predict(rows["features"]), new.predict(rows["features"]),
                                    rows=rows)
