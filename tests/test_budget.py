"""The budget curve's statistics (course/budget.py): intervals, pairing and verdicts."""

from __future__ import annotations

import math

import matplotlib
import pytest
from scipy import stats

from ssmamba_lite.course.budget import budget_figure, paired, summary_tables, t_interval

matplotlib.use("Agg")


def rows_for(shift: dict) -> list[dict]:
    """Three split seeds, budgets 0 and 5: budget 5 = budget 0 + shift[split] (both metrics)."""
    out = []
    for s, base in zip((0, 1, 2), (0.70, 0.75, 0.80)):
        for budget in (0, 5):
            x = base + (shift[s] if budget else 0.0)
            out.append({"split_seed": s, "budget": budget, "arm": "sft", "labels": 1.0,
                        "epochs": 6, "seconds": 1.0, "balanced_accuracy": x, "auroc": x})
        out.append({"split_seed": s, "budget": 5, "arm": "pretrain", "seconds": 2.0})
    return out


def test_t_interval_is_the_textbook_one():
    m, lo, hi = t_interval([1.0, 2.0, 4.0])
    half = stats.t.ppf(0.975, 2) * stats.tstd([1.0, 2.0, 4.0]) / math.sqrt(3)
    assert m == pytest.approx(7 / 3) and hi - m == pytest.approx(half) and m - lo == pytest.approx(half)
    m, lo, hi = t_interval([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)


def test_intervals_over_random_splits_are_corrected_for_what_the_splits_share():
    # Nadeau & Bengio: sd * sqrt(1/S + n_test/n_train), not sd / sqrt(S)
    values = [1.0, 2.0, 4.0]
    m, lo, hi = t_interval(values, 0.25)
    half = stats.t.ppf(0.975, 2) * stats.tstd(values) * math.sqrt(1 / 3 + 0.25)
    assert hi - m == pytest.approx(half) and m - lo == pytest.approx(half)
    d = paired(rows_for({0: 0.05, 1: 0.06, 2: 0.04}))[0]
    diffs = [0.05, 0.06, 0.04]
    width = stats.t.ppf(0.975, 2) * stats.tstd(diffs) * math.sqrt(1 / 3 + 0.2 / 0.8)
    assert d["high"] - d["difference"] == pytest.approx(width)


@pytest.mark.parametrize("shift, expected", [({0: 0.05, 1: 0.06, 2: 0.04}, "ahead"),
                                             ({0: -0.05, 1: -0.06, 2: -0.04}, "behind"),
                                             ({0: 0.05, 1: -0.06, 2: 0.01}, "within noise")])
def test_the_verdict_is_read_off_the_paired_interval(shift, expected):
    got = paired(rows_for(shift))
    assert [d["verdict"] for d in got] == [expected, expected]
    d = got[0]
    assert d["difference"] == pytest.approx(sum(shift.values()) / 3)
    assert d["low"] <= d["difference"] <= d["high"] and d["splits"] == 3


def test_pairing_cancels_what_the_splits_share():
    """Splits differ by 0.05 each, the budget adds the same 0.02 everywhere: unpaired
    intervals overlap, the paired one excludes 0."""
    rows = rows_for({0: 0.02, 1: 0.021, 2: 0.019})
    (d, _), table = paired(rows), summary_tables(rows)
    assert d["verdict"] == "ahead" and d["low"] > 0
    zero = t_interval([0.70, 0.75, 0.80])
    assert zero[2] > 0.77                                   # the unpaired interval is wide
    assert "| fine-tuning, 100% labels | 5 | balanced accuracy |" in table
    assert "ahead" in table


def test_the_figure_has_a_panel_per_arm():
    rows = rows_for({0: 0.02, 1: 0.03, 2: 0.01})
    rows += [dict(r, arm="probe") for r in rows if r["arm"] == "sft"]
    fig = budget_figure(rows)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "5"]
