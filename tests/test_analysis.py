"""course/analysis.py (receptive fields, predictions under zoom, MAMIM reload, ablation
variants) and course/figures.py (figures written as PNG)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from ssmamba_lite.course import bootstrap, figures
from ssmamba_lite.course.analysis import (
    ABLATIONS,
    ablation,
    block_residuals,
    effective_receptive_field,
    erf_reach,
    load_mamim,
    metrics_under_zoom,
    validation_samples,
    zoom_view_name,
)
from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.engine.data import Samples, find_labelled, sample_dir, write_labels_csv
from ssmamba_lite.engine.inference import load_trained, predict_probabilities
from ssmamba_lite.engine.metrics import classification_metrics
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain
from ssmamba_lite.lpr import LocalPerceptionResidual

matplotlib.use("Agg")


def test_erf_of_a_3x3_convolution_is_a_3x3_patch():
    torch.manual_seed(0)
    erf = effective_receptive_field(LocalPerceptionResidual(4, zero_init=False),
                                   torch.randn(1, 4, 9, 9))
    assert erf.shape == (9, 9) and erf.max() == 1
    support = (erf > 0).nonzero()
    assert support.min(0).values.tolist() == [3, 3] and support.max(0).values.tolist() == [5, 5]


def test_erf_of_a_row_major_scan_is_causal_and_four_directions_are_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 12, 12)
    one = effective_receptive_field(DirectionalMultiScale(8, directions=1, scales=(1,)), x)
    four = effective_receptive_field(DirectionalMultiScale(8, directions=4, scales=(1,)), x)
    # DMS's 3x3 convolution before the scan reaches one row below; the scan itself none.
    assert one[8:].abs().max() == 0 and one[:6].sum() > 0
    assert four[8:].sum() > 0


def test_erf_reach_reads_the_neighbours_of_the_output():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 12, 12)
    scan_only = DirectionalMultiScale(8, directions=1, scales=(1,), d_conv=1)   # no 3x3 conv
    bare, dms = (erf_reach(effective_receptive_field(m, x)) for m in
                 (scan_only, DirectionalMultiScale(8, directions=1, scales=(1,))))
    assert bare["above"] > 0 and bare["left"] > 0 and bare["below"] == bare["right"] == 0
    assert dms["below"] > 0 and dms["right"] > 0 and dms["2 below"] == 0
    assert bare["area"] == pytest.approx((6 * 12 + 7) / 144) and dms["area"] > bare["area"]
    identity = erf_reach(effective_receptive_field(LocalPerceptionResidual(8), x))
    assert identity["area"] == pytest.approx(1 / 144) and max(v for k, v in identity.items() if k != "area") == 0
    corner = erf_reach(torch.ones(4, 4), point=(3, 3))
    assert corner["below"] == corner["right"] == 0 and corner["above"] == 1


def test_block_residuals_measure_lpr_and_the_stream():
    from ssmamba_lite.model import SSMamba

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    kw = dict(dims=(8, 16), depths=(1, 2), conv_stages=1, num_classes=2)
    fresh = block_residuals(SSMamba(**kw).eval(), x)
    assert [r["block"] for r in fresh] == ["stages.0.blocks.0", "stages.1.blocks.0",
                                           "stages.1.blocks.1"]
    assert all(r["lpr_change"] == 0 and r["dwconv_ratio"] == 0 and r["growth"] > 0
               for r in fresh)
    default = block_residuals(SSMamba(**kw, lpr_zero_init=False).eval(), x)
    assert all(r["lpr_change"] > 0 and r["dwconv_ratio"] > 0.1 for r in default)
    none = block_residuals(SSMamba(**kw, use_lpr=False).eval(), x)
    assert all(r["dwconv_ratio"] != r["dwconv_ratio"] and r["growth"] > 0 for r in none)  # nan
    with pytest.raises(ValueError, match="no SSMamba Block"):
        block_residuals(torch.nn.Conv2d(3, 3, 1), x)


def test_erf_needs_a_map():
    with pytest.raises(ValueError, match=r"\(batch, C, H, W\)"):
        effective_receptive_field(torch.nn.Flatten(), torch.randn(1, 2, 4, 4))


def test_zoom_views_are_named_for_what_they_do():
    assert [zoom_view_name(z) for z in (0.5, 0.71, 1, 1.41, 2)] == \
        ["blur x2", "blur x1.41", "as trained", "crop x1.41", "crop x2"]
    with pytest.raises(ValueError, match="zoom must be > 0"):
        zoom_view_name(0)


def test_ablation_variants():
    base = {"d_state": 4}                                 # the overrides a variant changes
    assert ablation("full", base) == (base, True)
    args, mamim = ablation("no_dms", base)
    assert args["directions"] == 1 and args["scales"] == [1] and args["d_state"] == 4
    assert ablation("no_mamim")[1] is False and ablation("no_lpr")[0] == {"use_lpr": False}
    assert ablation("attention")[0] == {"mixer": "attention"}
    assert set(ABLATIONS) == {"full", "no_mamim", "no_dms", "no_lpr", "attention"}
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation("no_head")


def _subset(tmp_path, per_class=12):
    """2 tiles from each of several patients per class (labels.csv into the IDC sample)."""
    s = find_labelled(sample_dir("idc-breast"))
    picked = []
    for k in (0, 1):
        seen: dict = {}
        for i, (y, g) in enumerate(zip(s.labels, s.patients)):
            if y == k and seen.get(g, 0) < 2 and len(picked) < per_class * (1 + k):
                seen[g] = seen.get(g, 0) + 1
                picked.append(i)
    return write_labels_csv(tmp_path / "ds" / "labels.csv", s.subset(picked)).parent


def test_trained_models_are_analysed(tmp_path):
    data = _subset(tmp_path)
    common = dict(model="ssmamba_lite_cpu", image_size=32, epochs=1, batch_size=8, progress=False,
                  max_steps_per_epoch=1, seed=3)
    pretrain(PretrainConfig(data=str(data), out=str(tmp_path / "pt"), **common))
    mamim = load_mamim(tmp_path / "pt")
    images = torch.randn(2, 3, 32, 32)
    masked, result, mask = mamim.reconstruct(images)
    assert masked.shape == result.shape == images.shape and mask.shape == (2, 8, 8)

    history = finetune(FinetuneConfig(data=str(data), out=str(tmp_path / "ft"), **common))
    val = validation_samples(tmp_path / "ft")
    assert len(val) == history[-1]["val"]["n"] > 0
    assert set(val.paths) < set(find_labelled(data).paths)
    model, record = load_trained(tmp_path / "ft")
    probs = predict_probabilities(model, val, record["image_size"])
    assert probs.shape == (len(val), 2)
    rows = metrics_under_zoom(model, val, record["image_size"], [0.5, 1, 2])
    assert [r["zoom"] for r in rows] == [0.5, 1.0, 2.0] and all(r["n"] == len(val) for r in rows)
    assert [r["view"] for r in rows] == ["blur x2", "as trained", "crop x2"]
    assert rows[1]["accuracy"] == pytest.approx(history[-1]["val"]["accuracy"])
    with pytest.raises(FileNotFoundError, match="output folder of `pretrain`"):
        load_mamim(tmp_path)


def test_figures_are_written(tmp_path):
    samples = find_labelled(sample_dir("kather2016"))
    small = Samples(samples.paths[::10], samples.labels[::10], samples.patients[::10],
                    samples.classes)
    made = {
        "tiles": figures.tiles_by_class_figure(small, per_class=2),
        "orders": figures.scan_orders_figure(4, 4, range(8)),
        "maps": figures.maps_figure({"a": torch.rand(5, 5), "b": torch.rand(5, 5)}),
        "history": figures.history_figure({"run": [{"epoch": 1, "loss": 1.0, "val": {"auroc": 0.6}},
                                               {"epoch": 2, "loss": 0.5, "val": {"auroc": 0.7}}]},
                                      metrics=("loss", "auroc")),
        "confusion": figures.confusion_figure({"m": [[3, 1], [0, 4]]}, ["a", "b"]),
        "roc2": figures.roc_figure([0, 1, 1, 0], {"m": torch.tensor([[.8, .2], [.3, .7], [.4, .6],
                                                                 [.6, .4]]).numpy()}, ["a", "b"]),
        "roc3": figures.roc_figure([0, 1, 2], {"m": torch.eye(3).numpy()}, ["a", "b", "c"]),
        "row": figures.image_row([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8)],
                             ["uint8", "normalised"]),
    }
    for name, fig in made.items():
        path = figures.save_figure(fig, tmp_path / "figs", name)
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_the_roc_figure_shows_the_auroc_of_the_metrics_table():
    import numpy as np

    from ssmamba_lite.engine.metrics import auroc, one_vs_rest_auroc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 80)
    y[y == 3] = 2                                        # class 3 absent from the labels
    logits = rng.normal(size=(80, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = ["a", "b", "c", "d"]
    fig = figures.roc_figure(y, {"m1": probs, "m2": probs[:, [1, 0, 2, 3]]}, classes)
    for ax, p in zip(fig.axes, (probs, probs[:, [1, 0, 2, 3]])):
        labels = {line.get_label(): line for line in ax.get_lines()}
        macro = f"macro one-vs-rest (AUROC {auroc(y, p):.3f})"
        assert macro in labels, list(labels)
        assert "macro one-vs-rest" in ax.get_title() and "1 class(es) absent" in ax.get_title()
        for k, area in one_vs_rest_auroc(y, p).items():
            assert f"{classes[k]} vs rest ({area:.3f})" in labels
        assert "d vs rest" not in " ".join(labels)
        fpr, tpr = labels[macro].get_data()              # the drawn curve has that area
        assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(y, p), abs=1e-12)
    yb = (y == 1).astype(int)
    pb = np.stack([1 - probs[:, 1], probs[:, 1]], 1)
    ax = figures.roc_figure(yb, {"m": pb}, ["no", "yes"]).axes[0]
    assert [line.get_label() for line in ax.get_lines()][0] == f"m (AUROC {auroc(yb, pb):.3f})"


# ---------------------------------------------------------------------------------------------
# The paired cluster bootstrap (course/bootstrap.py).
# ---------------------------------------------------------------------------------------------
def _held_out(n_patients=30, per_patient=4, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    labels = rng.integers(0, classes, len(patients))
    labels[:classes] = np.arange(classes)                     # every class present
    return labels, patients, rng


def _probs(labels, classes, skill, rng):
    """Probabilities whose true-class logit is raised by `skill` (0: chance)."""
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 3])
def test_weighted_metrics_equal_the_metrics_of_the_repeated_tiles(classes):
    labels, patients, rng = _held_out(12, 3, classes)
    probs = _probs(labels, classes, 1.0, rng)
    probs[5] = probs[6]                                       # a tie between two tiles
    w = bootstrap.patient_resamples(patients, 20, seed=1)
    bal = bootstrap.weighted_balanced_accuracy(labels, probs, w)
    auc = bootstrap.weighted_auroc(labels, probs, w)
    for r in range(len(w)):
        idx = np.repeat(np.arange(len(labels)), w[r].astype(int))
        m = classification_metrics(labels[idx], probs[idx], [str(k) for k in range(classes)])
        assert bal[r] == pytest.approx(m["balanced_accuracy"])
        assert auc[r] == pytest.approx(m["auroc"]) or np.isnan(auc[r]) and np.isnan(m["auroc"])


def test_resamples_draw_whole_patients():
    labels, patients, _ = _held_out(10, 3)
    w = bootstrap.patient_resamples(patients, 50)
    assert w.shape == (50, 30) and (w.sum(1) == 30).all()  # 10 patients of 3 tiles each
    assert (w.reshape(50, 10, 3) == w.reshape(50, 10, 3)[..., :1]).all()   # a patient's tiles alike


def test_an_interval_that_covers_zero_reads_within_noise():
    labels, patients, rng = _held_out()
    same = _probs(labels, 2, 1.0, rng)
    noisy = np.clip(same + rng.normal(0, 0.05, same.shape), 0, 1)
    for metric in ("balanced_accuracy", "auroc"):
        c = bootstrap.paired_difference(labels, patients, noisy[None], same[None], metric,
                                        n_resamples=300)
        assert c.low <= 0 <= c.high and c.verdict == "within noise"
        assert "within noise" in c.sentence("variant", "full")
    twin = bootstrap.paired_difference(labels, patients, same, same, "auroc", n_resamples=50)
    assert twin.estimate == twin.low == twin.high == 0 and twin.verdict == "within noise"


def test_a_clear_effect_reads_better_or_worse_and_seeds_are_pooled():
    labels, patients, rng = _held_out()
    good = np.stack([_probs(labels, 2, 4.0, rng) for _ in range(3)])    # 3 seeds
    poor = np.stack([_probs(labels, 2, 0.0, rng) for _ in range(3)])
    for metric in ("balanced_accuracy", "auroc"):
        c = bootstrap.paired_difference(labels, patients, good, poor, metric, n_resamples=300)
        assert c.low > 0 and c.verdict == "better" and len(c.per_seed) == 3
        assert c.estimate == pytest.approx(np.mean(c.per_seed))
        assert c.sentence("full", "no_lpr").endswith("full is better than no_lpr")
        back = bootstrap.paired_difference(labels, patients, poor, good, metric, n_resamples=300)
        assert back.verdict == "worse" and back.estimate == pytest.approx(-c.estimate)
    # a difference of differences: the drop of one arm against the drop of another
    drop = bootstrap.bootstrap_contrast(labels, patients, {"a1": good, "az": poor, "b1": good,
                                                           "bz": good},
                                        {"az": 1, "a1": -1, "bz": -1, "b1": 1}, "auroc", 200)
    assert drop.verdict == "worse"


def test_seeds_that_disagree_widen_the_interval():
    # seed 0: the variant far ahead; seed 1: far behind. Patients alone would call the mean
    # difference (about 0) precise; the seeds say it is not.
    labels, patients, rng = _held_out()
    good, poor = _probs(labels, 2, 4.0, rng), _probs(labels, 2, 0.0, rng)
    c = bootstrap.paired_difference(labels, patients, np.stack([good, poor]),
                                    np.stack([poor, good]), "auroc", n_resamples=400)
    spread = abs(c.per_seed[0] - c.per_seed[1]) / 2
    assert c.verdict == "within noise" and c.high - c.low > spread


def test_the_family_level_is_bonferroni():
    assert bootstrap.family_level(0.95, 8) == pytest.approx(1 - 0.05 / 8)
    assert bootstrap.family_level(0.95, 1) == pytest.approx(0.95)


def test_the_bootstrap_says_what_is_wrong():
    labels, patients, rng = _held_out(5, 2)
    p = _probs(labels, 2, 1.0, rng)
    with pytest.raises(ValueError, match="metric 'f1'"):
        bootstrap.paired_difference(labels, patients, p, p, "f1")
    with pytest.raises(ValueError, match="every arm needs"):
        bootstrap.paired_difference(labels, patients, p, p[:-1])
    with pytest.raises(ValueError, match="no predictions for"):
        bootstrap.bootstrap_contrast(labels, patients, {"a": p}, {"a": 1, "b": -1})
    with pytest.raises(ValueError, match="undefined in every resample"):
        bootstrap.paired_difference(np.zeros(10, int), patients, p, p, "auroc", 20)
    with pytest.raises(ValueError, match="low <= high"):
        bootstrap.verdict(0.2, 0.1)


def test_forest_rows_draws_one_row_per_difference_coloured_by_verdict():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssmamba_lite.course.figures import VERDICT_COLOURS, forest_rows

    rows = [dict(difference=0.05, low=0.01, high=0.09, verdict="better", per_seed=[0.04, 0.06]),
            dict(difference=-0.01, low=-0.04, high=0.02, verdict="within noise", per_seed=[0.0])]
    fig, ax = plt.subplots()
    forest_rows(ax, rows, ["a − full", "b − full"], "difference")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a − full", "b − full"]
    assert len(ax.containers) == 2                          # one error bar per row
    assert matplotlib.colors.same_color(ax.containers[0].lines[0].get_color(),
                                        VERDICT_COLOURS["better"])
    plt.close(fig)
