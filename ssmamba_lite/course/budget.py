"""Does MAMIM pay, and after how many epochs? The budget curve's statistics and its figure.

benchmarks/mamim_budget.py writes one row per finished run (results.jsonl): split seed,
MAMIM budget E (epochs; 0 = a random encoder), arm ("probe" or "sft"), label fraction and the
held-out scores. Notebook 05 and docs/mamim.md read the rows the benchmark wrote; this module
turns them into tables and a figure, so that both compute the same verdicts.

    over the split seeds s = 1..S of one (arm, labels, budget):
        mean  m = (1/S) Σ_s x_s,   95 % interval  m ± t_{0.975, S-1} · sd(x) · √(1/S + ρ)
        ρ = n_test / n_train = 0.2 / 0.8 (Nadeau & Bengio's corrected resampled t: random
        80/20 patient splits share most of their training patients, so their scores are not
        independent and sd(x)/√S would be too narrow)
    paired against the random encoder, per split seed:
        d_s = x_s(E) - x_s(0),     its mean and t-interval as above
    verdict: "ahead" (interval above 0), "behind" (below 0), "within noise" (covers 0)

The interval is over patient splits (each split a different set of held-out patients and
training patients, one training seed each): with S = 3 it has 2 degrees of freedom and is
wide; more split seeds narrow it, but never below the ρ term (disjoint folds would remove it).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ssmamba_lite.course.bootstrap import verdict

METRICS = {"balanced_accuracy": "balanced accuracy", "auroc": "AUROC"}


SPLIT_RATIO = 0.2 / 0.8       # ρ = n_test / n_train of the benchmarks' random patient splits


def t_interval(values, test_train_ratio: float = 0.0) -> tuple[float, float, float]:
    """Mean and its 95 % t-interval (nan bounds for fewer than 2 values). With
    test_train_ratio ρ > 0, the corrected resampled t (Nadeau & Bengio 2003) for scores of
    random train/test splits: sd · √(1/S + ρ) in place of sd / √S."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) * np.sqrt(1 / len(v) +
                                                                      test_train_ratio)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def split_interval(values) -> tuple[float, float, float]:
    """t_interval of scores over the benchmarks' random 80/20 patient splits (ρ = SPLIT_RATIO)."""
    return t_interval(values, SPLIT_RATIO)


def split_verdict(lo: float, hi: float) -> str:
    """bootstrap.verdict in these tables' words (ahead, behind, within noise)."""
    if not np.isfinite(lo):
        return "one split: no interval"
    return verdict(lo, hi, above="ahead", below="behind")


def curves(rows: list[dict]) -> dict:
    """{(arm, labels): {budget: {split_seed: row}}} of the rows that hold scores."""
    out: dict = {}
    for r in rows:
        if "labels" in r:
            by_budget = out.setdefault((r["arm"], r["labels"]), {})
            by_budget.setdefault(r["budget"], {})[r["split_seed"]] = r
    return out


def arm_name(arm: str, labels: float) -> str:
    return "linear probe, all labels" if arm == "probe" else f"fine-tuning, {labels:.0%} labels"


def paired(rows: list[dict]) -> list[dict]:
    """Budget E minus budget 0, split by split: one dict per (arm, labels, E > 0, metric)."""
    out = []
    for (arm, labels), by_budget in sorted(curves(rows).items()):
        zero = by_budget.get(0, {})
        for budget, got in sorted(by_budget.items()):
            both = sorted(set(zero) & set(got))
            if budget == 0 or not both:
                continue
            for k in METRICS:
                m, lo, hi = split_interval([got[s][k] - zero[s][k] for s in both])
                out.append({"arm": arm_name(arm, labels), "budget": budget, "metric": k,
                            "splits": len(both), "difference": m, "low": lo, "high": hi,
                            "verdict": split_verdict(lo, hi)})
    return out


def summary_tables(rows: list[dict]) -> str:
    """Markdown: per (arm, budget) means with intervals, then the paired differences."""
    lines = ["| arm | MAMIM epochs | splits | balanced acc. | AUROC | epochs | fine-tune s |",
             "|---|---|---|---|---|---|---|"]
    for (arm, labels), by_budget in sorted(curves(rows).items()):
        for budget, got in sorted(by_budget.items()):
            cells = []
            for k in METRICS:
                m, lo, hi = split_interval([r[k] for r in got.values()])
                cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}]")
            epochs = "/".join(sorted({str(r["epochs"]) for r in got.values()}))
            secs = np.mean([r["seconds"] for r in got.values()])
            lines.append(f"| {arm_name(arm, labels)} | {budget} | {len(got)} | "
                         + " | ".join(cells) + f" | {epochs} | {secs:.0f} |")
    lines += ["", "Paired by split seed, budget E minus the random encoder (E = 0):", "",
              "| arm | MAMIM epochs | metric | difference [95 % CI] | verdict |",
              "|---|---|---|---|---|"]
    for d in paired(rows):
        lines.append(f"| {d['arm']} | {d['budget']} | {METRICS[d['metric']]} | "
                     f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | "
                     f"{d['verdict']} |")
    return "\n".join(lines) + "\n"


def budget_figure(rows: list[dict]):
    """One panel per arm: balanced accuracy and AUROC against the budget, 95 % intervals."""
    import matplotlib.pyplot as plt

    table = curves(rows)
    fig, axes = plt.subplots(1, len(table), figsize=(3.6 * len(table), 3.2), squeeze=False)
    for ax, ((arm, labels), by_budget) in zip(axes[0], sorted(table.items())):
        budgets = sorted(by_budget)
        xs = np.arange(len(budgets))
        for k, style in zip(METRICS, ("-o", "--s")):
            got = [split_interval([r[k] for r in by_budget[b].values()]) for b in budgets]
            mean = np.array([g[0] for g in got])
            err = np.nan_to_num(np.array([[g[0] - g[1], g[2] - g[0]] for g in got]).T)
            ax.errorbar(xs, mean, yerr=err, fmt=style, capsize=3, label=METRICS[k])
        ax.set_xticks(xs, [str(b) for b in budgets])
        ax.set_xlabel("MAMIM epochs (0 = random encoder)")
        ax.set_title(arm_name(arm, labels), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out patients (mean, 95 % CI)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
