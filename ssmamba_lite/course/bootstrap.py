"""Is a difference between two trained models more than noise? A paired cluster bootstrap.

The notebooks compare models (an ablation against the full model, one test zoom against
another) on the *same* held-out tiles. Tiles of one patient are alike, so the unit that is
sampled is the patient, not the tile (a cluster bootstrap); both arms see the same resampled
patients in every resample (paired), and the training seeds are paired too (arm a with seed s
against arm b with seed s; the patient split is the same for every seed).

    P patients, resample r draws P of them with replacement: c_rp = times patient p is drawn
    w_ri = c_r,patient(i)                              tile i's weight in resample r
    Δ_rs = Σ_a coef_a · metric(y, probs_as, w_r)       the contrast, seed s, resample r
    Δ_r  = (1/S) Σ_j Δ_r,s_rj                          S seeds s_r1..s_rS drawn with
                                                       replacement in each resample: seeds
                                                       are noise too, so seeds that disagree
                                                       widen the interval
    estimate = mean_s Δ_s (all weights 1);  interval = percentiles (α/2, 1 - α/2) of Δ_r

With S = 2 seeds a resample can only draw {s1, s1}, {s1, s2} or {s2, s2}: the seeds' share of
the interval is crude, and a notebook says so. Reporting m contrasts at once, each interval at
level 1 - α/m (Bonferroni, `family_level`) keeps the chance of any false "better" or "worse"
among them below α.

A weight w_ri is the same as repeating tile i w_ri times, so the weighted metrics below equal
engine.metrics on the resampled set (tests/test_analysis.py holds them to it):

    balanced accuracy  mean over classes k present of  Σ w [y=k][ŷ=k] / Σ w [y=k]
    AUROC              binary: of class 1; else the mean one-vs-rest over classes present,
                       Σ_ij w_i w_j ([s_i > s_j] + ½[s_i = s_j]) / (Σ_i w_i · Σ_j w_j),
                       i over positives, j over negatives

The verdict is read off the interval: above 0 "better", below 0 "worse", covering 0
"within noise". It speaks of these patients and seeds only; another split of patients or a
larger model can answer otherwise.

Glossary: coef = the contrast's coefficients (a - b: {a: 1, b: -1}), S = seeds, R =
resamples, α = 1 - level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "auroc": "AUROC"}


# ---------------------------------------------------------------------------------------------
# Metrics of weighted tiles: one value per row of weights w (R, n).
# ---------------------------------------------------------------------------------------------
def weighted_balanced_accuracy(labels, probs, w) -> np.ndarray:
    """Balanced accuracy of `probs` (n, K) against `labels` (n,) under each row of `w` (R, n)."""
    y, pred = np.asarray(labels), np.asarray(probs).argmax(1)
    recalls = []
    for k in np.unique(y):
        support = w @ (y == k)                                   # Σ w [y=k]
        hits = w @ ((y == k) & (pred == k))                      # Σ w [y=k][ŷ=k]
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(support > 0, hits / support, np.nan))
    return np.nanmean(np.stack(recalls), axis=0) if recalls else np.full(len(w), np.nan)


def _weighted_binary_auroc(positive, scores, w) -> np.ndarray:
    """Σ_ij w_i w_j ([s_i > s_j] + ½[s_i = s_j]) / (Σ w_pos · Σ w_neg); NaN without both."""
    values, group = np.unique(scores, return_inverse=True)       # ties share a group
    onehot = np.zeros((len(scores), len(values)))
    onehot[np.arange(len(scores)), group] = 1.0
    pos = (w * positive) @ onehot                                # (R, U) positive weight per score
    neg = (w * ~positive) @ onehot
    below = np.cumsum(neg, axis=1) - neg                         # negatives strictly below
    pairs = (pos * (below + 0.5 * neg)).sum(1)
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / total, np.nan)


def weighted_auroc(labels, probs, w) -> np.ndarray:
    """AUROC as engine.metrics.auroc computes it, under each row of `w` (R, n)."""
    y, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    if probs.shape[1] == 2:
        return _weighted_binary_auroc(y == 1, probs[:, 1], w)
    per_class = np.stack([_weighted_binary_auroc(y == k, probs[:, k], w) for k in np.unique(y)])
    present = np.stack([w @ (y == k) > 0 for k in np.unique(y)])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(present, per_class, np.nan), axis=0)
    return np.where(present.sum(0) >= 2, mean, np.nan)


METRICS = {"balanced_accuracy": weighted_balanced_accuracy, "auroc": weighted_auroc}


# ---------------------------------------------------------------------------------------------
# The bootstrap.
# ---------------------------------------------------------------------------------------------
def patient_resamples(patients, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(R, n) tile weights: how often each tile's patient is drawn in each resample of the
    patients with replacement."""
    ids, index = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_resamples)
    return counts[:, index].astype(float)


@dataclass
class Contrast:
    """A contrast Σ coef · metric, its estimate, its bootstrap interval and the verdict."""

    metric: str
    estimate: float               # mean over seeds, on the held-out tiles as they are
    low: float
    high: float
    per_seed: tuple               # the contrast of each seed
    level: float
    n_patients: int
    n_resamples: int              # resamples with a defined value (of those drawn)

    @property
    def verdict(self) -> str:
        """ "better" when the interval lies above 0, "worse" below, else "within noise"."""
        return verdict(self.low, self.high)

    def numbers(self, a: str, b: str) -> str:
        """The contrast a - b, its interval and what it rests on, in one line."""
        name = METRIC_NAMES.get(self.metric, self.metric)
        return (f"{name} {a} − {b} = {self.estimate:+.3f}, {100 * self.level:.4g}% interval "
                f"[{self.low:+.3f}, {self.high:+.3f}] ({self.n_patients} patients, "
                f"{len(self.per_seed)} seed(s))")

    def sentence(self, a: str, b: str) -> str:
        """One line that reports the contrast a - b and its verdict."""
        if self.verdict == "within noise":
            return f"{self.numbers(a, b)}: within noise (the interval covers 0)"
        return f"{self.numbers(a, b)}: {a} is {self.verdict} than {b}"


def verdict(low: float, high: float, above: str = "better", below: str = "worse") -> str:
    """The verdict an interval [low, high] supports about a difference: `above` when it lies
    above 0, `below` when it lies below, "within noise" when it covers 0."""
    if not low <= high:
        raise ValueError(f"verdict: need low <= high, got [{low}, {high}]")
    return above if low > 0 else below if high < 0 else "within noise"


def family_level(level: float, contrasts: int) -> float:
    """Bonferroni: the level of each of `contrasts` intervals such that all of them cover
    their true values together with probability at least `level`."""
    return 1 - (1 - level) / max(1, contrasts)


def bootstrap_contrast(labels, patients, arms: dict, coefs: dict, metric: str = "auroc",
                       n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Contrast:
    """The contrast Σ_a coefs[a] · metric(arms[a]) over held-out tiles, with a paired
    bootstrap interval over patients (cluster) and training seeds. `arms[a]`: probabilities
    (S, n, K) of arm a for S seeds (or (n, K): one seed) on the same n tiles (labels, patients)
    in the same order; seed s of every arm is paired. `seed` seeds the resampling."""
    if metric not in METRICS:
        raise ValueError(f"bootstrap_contrast: metric {metric!r}; known: {list(METRICS)}")
    missing = sorted(set(coefs) - set(arms))
    if missing:
        raise ValueError(f"bootstrap_contrast: no predictions for {missing}")
    labels = np.asarray(labels)
    probs = {a: np.asarray(arms[a], dtype=float) for a in coefs}
    probs = {a: p[None] if p.ndim == 2 else p for a, p in probs.items()}
    shapes = {a: p.shape for a, p in probs.items()}
    first = next(iter(shapes.values()))
    if len(set(shapes.values())) != 1 or first[1] != len(labels) or len(patients) != len(labels):
        raise ValueError(f"bootstrap_contrast: every arm needs probabilities (seeds, "
                         f"{len(labels)} tiles, classes) for {len(labels)} labels and patients; "
                         f"got {shapes} and {len(patients)} patients")
    fn = METRICS[metric]
    w = np.vstack([np.ones(len(labels)), patient_resamples(patients, n_resamples, seed)])
    per_seed = sum(coef * np.stack([fn(labels, p, w) for p in probs[a]])   # (S, 1 + R)
                   for a, coef in coefs.items())
    n_seeds = per_seed.shape[0]
    picks = np.random.default_rng([seed, 1]).integers(0, n_seeds, (n_resamples, n_seeds))
    pooled = per_seed[picks, np.arange(1, n_resamples + 1)[:, None]].mean(1)   # Δ_r, seeds drawn
    draws = pooled[np.isfinite(pooled)]
    if not len(draws):
        raise ValueError(f"bootstrap_contrast: {metric} is undefined in every resample "
                         f"(a single class among the held-out tiles?)")
    alpha = 1 - level
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Contrast(metric, float(per_seed[:, 0].mean()), float(low), float(high),
                    tuple(float(v) for v in per_seed[:, 0]), level,
                    len(set(np.asarray(patients).astype(str))), int(len(draws)))


def paired_difference(labels, patients, probs_a, probs_b, metric: str = "auroc",
                      n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Contrast:
    """metric(a) - metric(b), seed by seed, with its paired cluster bootstrap interval."""
    return bootstrap_contrast(labels, patients, {"a": probs_a, "b": probs_b},
                              {"a": 1.0, "b": -1.0}, metric, n_resamples, level, seed)
