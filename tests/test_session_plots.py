"""Session plots: paper Fig. 1 per take, Fig. 2 across takes (rolypoly/session_plots.py)."""
from __future__ import annotations


import numpy as np
import pytest
from matplotlib.image import imread

from rolypoly.take import TakeWriter, read_take
from rolypoly.errors import RolypolyError
from rolypoly.session_plots import (moving_average, offset_curve, plot_session, plot_take_fig1,
                                    plot_takes_fig2, take_hits)

BAR_S = 2.0      # 4/4 at 120 bpm


def _row(bar, step, yhat, diff, *, silent=False, tempo=120.0, timesig=1.0):
    features = [0.0] * 15
    if not silent:
        features[0 if step % 6 == 0 else 2] = 1.0
    features[10], features[11] = tempo, timesig
    notated = (bar + step / 24) * BAR_S
    return {"row": 0, "bar": bar, "step": step, "features": features, "yhat": yhat,
            "notated": notated, "intended": notated, "played": notated, "onsets": [], "diff": diff}


def _eighths(n_bars, yhat=0.0, diff=0.01, extra=()):
    """Rows on the 8ths of n 4/4 bars, plus silent rows at the (bar, step) in ``extra``."""
    keys = sorted({(b, s) for b in range(n_bars) for s in range(0, 24, 3)} | set(extra))
    rows = [_row(b, s, yhat, diff, silent=(b, s) in extra) for b, s in keys]
    for i, r in enumerate(rows):
        r["row"] = i
    return rows


def _write_take(path, rows, *, close=True, version=0):
    writer = TakeWriter(path, {"score": "song", "score_hash": "abc", "rows": len(rows),
                               "agent": "lstm", "model_version": version})
    for r in rows:
        writer.row(r)
    writer.close({"rows": len(rows)})
    if not close:   # cut like a crash: no closing line, a half-written last row
        text = path.read_text()
        path.chmod(0o644)
        path.write_text(text[:text.index('{"type": "end"')] + '{"type": "row", "row": 9')
    return path


def _session(tmp_path, takes):
    folder = tmp_path / "song"
    for k, (rows, close) in enumerate(takes):
        _write_take(folder / "takes" / f"{k:03d}" / "take.jsonl", rows, close=close, version=k)
    return folder


def _png_ok(path):
    assert path.is_file() and path.stat().st_size > 1000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


# ----------------------------------------------------------------------------- the numbers

def test_moving_average_on_a_hand_case():
    # Windows of 6: (0+6+0+6+0+6)/6 = 3, (6+0+6+0+6+12)/6 = 5.
    ma = moving_average([0, 6, 0, 6, 0, 6, 12])
    assert np.isnan(ma[:5]).all()
    np.testing.assert_allclose(ma[5:], [3.0, 5.0])
    np.testing.assert_array_equal(moving_average([1.0, 2.0], period=1), [1.0, 2.0])
    assert np.isnan(moving_average([1.0, 2.0, 3.0])).all() and len(moving_average([])) == 0
    with pytest.raises(ValueError, match="period"):
        moving_average([1.0], period=0)


def test_take_hits_in_ms_and_quarter_notes(tmp_path):
    rows = _eighths(2, yhat=0.01, diff=-0.005, extra={(0, 6 + 3)})
    rows[1]["diff"] = None
    rows.append(_row(2, 0, 0.01, 0.0, tempo=120.0, timesig=0.75))     # a 3/4 bar after two 4/4 bars
    rows.append(_row(2, 8, 0.01, 0.0, tempo=120.0, timesig=0.75))
    h = take_hits(read_take(_write_take(tmp_path / "t.jsonl", rows)))
    assert len(h) == len(rows) and h.skipped == 0
    np.testing.assert_allclose(h.bar_ms[:-2], 2000.0)
    np.testing.assert_allclose(h.bar_ms[-2:], 1500.0)
    np.testing.assert_allclose(h.yhat_ms[:-2], 20.0)                  # 0.01 bar of 2 s
    assert np.isnan(h.diff_ms[1]) and h.diff_ms[0] == pytest.approx(-10.0)
    np.testing.assert_allclose(h.x[:3], [0.0, 0.5, 1.0])             # 8ths in quarter notes
    np.testing.assert_allclose(h.x[-2:], [8.0, 9.0])                 # step 8 of a 3/4 bar = beat 2
    assert h.bar_x == {0: 0.0, 1: 4.0, 2: 8.0} and h.end_x == 11.0
    assert h.silent.sum() == 1 and h.silent[[r["step"] for r in rows[:9]].index(9)]


def test_bar_length_falls_back_on_notated_times_and_bad_rows_are_left_out(tmp_path):
    rows = _eighths(1, yhat=0.01)
    for r in rows:
        r["features"] = None
    rows[3]["yhat"] = None
    rows[4]["bar"] = "x"
    rows[5]["bar"] = 1e12                                   # corrupted: must not hang or overflow
    rows[6]["diff"] = 1e300
    h = take_hits(read_take(_write_take(tmp_path / "t.jsonl", rows)))
    assert h.skipped == 3 and len(h) == len(rows) - 3 and np.isnan(h.diff_ms[-2])
    np.testing.assert_allclose(h.bar_ms, 2000.0)
    np.testing.assert_allclose(h.yhat_ms, 20.0)


def test_offset_curve_uses_heard_drum_hits_on_the_score_position(tmp_path):
    diffs = [0.0, 0.003, None, 0.0, 0.003, 0.0, 0.003, 0.0, 0.009]   # ms: 0, 6, -, 0, 6, 0, 6, 0, 18
    rows = [_row(0, 3 * i, 0.0, d) for i, d in enumerate(diffs[:8])] + [_row(1, 0, 0.0, diffs[8])]
    rows.insert(3, _row(0, 8, 0.0, 0.05, silent=True))                  # silent row: not a drum hit
    x, ma = offset_curve(take_hits(read_take(_write_take(tmp_path / "t.jsonl", rows))))
    # Heard drum hits: 0, 6, 0, 6, 0, 6, 0, 18 (ms) at x 0, 0.5, 1.5, 2, 2.5, 3, 3.5, 4 quarters.
    np.testing.assert_allclose(ma, [3.0, 3.0, 5.0])
    np.testing.assert_allclose(x, [3.0, 3.5, 4.0])


# ----------------------------------------------------------------------------- the pictures

def test_plot_session_writes_one_figure_per_take_and_the_comparison(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = _eighths(4)
    for r in base:
        r["diff"] = float(rng.normal(0, 0.01))
    tighter = _eighths(4)
    for r in tighter:
        r["diff"] = None if r["row"] % 5 == 0 else float(rng.normal(0, 0.004))
    grown = _eighths(5, yhat=0.005, extra={(1, 10), (2, 10)})     # longer, with off-beat partner rows
    folder = _session(tmp_path, [(base, True), (tighter, True), (grown, True)])
    paths = plot_session(folder)
    assert [p.name for p in paths] == ["take_000.png", "take_001.png", "take_002.png", "takes.png"]
    assert all(p.parent == folder / "plots" for p in paths)
    for p in paths:
        _png_ok(p)
    assert capsys.readouterr().err == ""
    # Elsewhere when asked.
    assert [p.parent for p in plot_session(folder, tmp_path / "out")] == [tmp_path / "out"] * 4


def test_single_plots_take_paths_and_labels(tmp_path):
    path = _write_take(tmp_path / "a" / "take.jsonl", _eighths(2, diff=None))      # never heard the partner
    _png_ok(plot_take_fig1(path.parent, tmp_path / "fig1.png", title="no partner"))
    _png_ok(plot_takes_fig2([path, read_take(path)], tmp_path / "fig2.png", labels=["x", "y"]))
    with pytest.raises(ValueError, match="labels"):
        plot_takes_fig2([path], tmp_path / "bad.png", labels=["x", "y"])


def test_truncated_take_is_plotted(tmp_path, capsys):
    folder = _session(tmp_path, [(_eighths(3), True), (_eighths(3, diff=0.002), False)])
    take = read_take(folder / "takes" / "001")
    assert not take.complete and take.dropped_lines == 1
    paths = plot_session(folder)
    assert len(paths) == 3
    for p in paths:
        _png_ok(p)


def test_unreadable_take_is_skipped_with_a_warning(tmp_path, capsys):
    folder = _session(tmp_path, [(_eighths(2), True)])
    (folder / "takes" / "001").mkdir()
    (folder / "takes" / "001" / "take.jsonl").write_text("garbage\n")
    (folder / "takes" / "002").mkdir()                                  # no take file at all
    paths = plot_session(folder)
    assert [p.name for p in paths] == ["take_000.png", "takes.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "take 001" in err[0] and "take 002" in err[1]


def test_a_session_without_takes_is_one_clear_error(tmp_path):
    with pytest.raises(RolypolyError, match="no such session folder"):
        plot_session(tmp_path / "nowhere")
    (tmp_path / "song" / "takes").mkdir(parents=True)
    with pytest.raises(RolypolyError, match="no takes") as e:
        plot_session(tmp_path / "song")
    assert str(tmp_path / "song") in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "song" / "takes" / "000").mkdir()
    (tmp_path / "song" / "takes" / "000" / "take.jsonl").write_text("")
    with pytest.raises(RolypolyError, match="none of its 1 takes"):
        plot_session(tmp_path / "song")
    assert not (tmp_path / "song" / "plots").exists()
