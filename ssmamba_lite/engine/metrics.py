"""Classification metrics, one dictionary for every evaluation in the toolkit.

    accuracy            fraction of correct predictions
    balanced_accuracy   mean recall over classes (robust to class imbalance)
    macro_f1            unweighted mean of the per-class F1 scores over the classes in the
                        labels or the predictions (a class absent from both has no F1; counted
                        as 0 it would score a perfect 2-of-3-class prediction 0.667)
    auroc               area under the ROC curve; binary: of the positive class,
                        multi-class: macro one-vs-rest, the mean over classes k of the AUROC of
                        "k against the rest" (classes absent from y_true are skipped)
    confusion_matrix    rows = true class, columns = predicted class
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


def one_vs_rest_auroc(y_true: np.ndarray, probs: np.ndarray) -> dict[int, float]:
    """{class k: AUROC of "k against the rest", scored by probs[:, k]} for the classes present
    in y_true (a class absent from y_true has no positives: its AUROC is undefined); {} when
    fewer than two classes are present."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    present = np.unique(y_true)
    if len(present) < 2:
        return {}
    return {int(k): float(roc_auc_score(y_true == k, probs[:, k])) for k in present}


def auroc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary: AUROC of class 1; multi-class: macro one-vs-rest AUROC, the unweighted mean of
    `one_vs_rest_auroc` over the classes present. NaN when it is undefined (a single class in
    y_true)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(np.mean(list(one_vs_rest_auroc(y_true, probs).values())))


def classification_metrics(y_true, probs, classes: list[str]) -> dict:
    """Metrics of predicted class probabilities `probs` (n, K) against labels `y_true` (n,)."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(classes)):
        raise ValueError(f"classification_metrics: probs must have shape ({len(y_true)}, "
                         f"{len(classes)}), got {probs.shape}")
    y_pred = probs.argmax(1)
    labels = list(range(len(classes)))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=np.union1d(y_true, y_pred),
                                   average="macro", zero_division=0)),
        "auroc": auroc(y_true, probs),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
        "classes": list(classes),
    }


def format_metrics(m: dict) -> str:
    """One line for logs and progress bars."""
    return (f"acc {m['accuracy']:.3f}  bal_acc {m['balanced_accuracy']:.3f}  "
            f"macro_f1 {m['macro_f1']:.3f}  auroc {m['auroc']:.3f}  (n={m['n']})")
