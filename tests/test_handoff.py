"""The course's chain: where a notebook finds what an earlier one made (course/handoff.py), the
weights that ship with the package (course/weights.py), and MAMIM's decoder in closed form."""

from __future__ import annotations

import pytest
import torch

from ssmamba_lite.course import handoff, weights
from ssmamba_lite.engine.checkpoint import load_weights, read_tensors, save_json
from ssmamba_lite.engine.data import SAMPLE_ROOT, sample_names
from ssmamba_lite.engine.factory import build_model
from ssmamba_lite.engine.inference import load_trained
from ssmamba_lite.mamim import MAMIM
from ssmamba_lite.model import SSMamba

IDC = "sample:idc-breast"
SETTINGS = dict(data_dir=IDC, model="ssmamba_lite_cpu", model_args={}, image_size=64)


def fake_run(folder, kind, data=IDC, model="ssmamba_lite_cpu", image_size=64, classes=None):
    """A run folder as 04 or 05 leaves it: config.json and a weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    save_json({"model": model, "model_args": {}, "image_size": image_size,
               "classes": classes, "run": {"data": data}}, folder / "config.json")
    (folder / handoff.KINDS[kind].weights).write_bytes(b"")
    return folder


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An empty folder in place of the shipped weights."""
    folder = tmp_path / "shipped"
    monkeypatch.setattr(handoff, "SHIPPED", folder)
    return folder


def test_retrain_loads_nothing(tmp_path, shipped):
    fake_run(tmp_path / "run" / "04_mamim_pretraining" / "mamim", "mamim_encoder")
    found = handoff.find("mamim_encoder", tmp_path / "run" / "05_finetuning", **SETTINGS,
                         retrain=True)
    assert found.path is None and found.source == "retrain" and "retrain=True" in found.message


def test_the_predecessor_of_this_run_comes_first(tmp_path, shipped):
    made = fake_run(tmp_path / "run" / "04_mamim_pretraining" / "mamim", "mamim_encoder")
    fake_run(shipped / "mamim", "mamim_encoder")
    found = handoff.find("mamim_encoder", tmp_path / "run" / "05_finetuning", **SETTINGS)
    assert found.source == "predecessor" and found.path == made.resolve()
    assert found.weights == made.resolve() / "encoder.safetensors"
    assert found.message.startswith("loaded the MAMIM encoder made by 04_mamim_pretraining in "
                                    "this run: ")
    # the producer itself does not look for its own output
    found = handoff.find("mamim_encoder", tmp_path / "run" / "04_mamim_pretraining", **SETTINGS,
                         here="04_mamim_pretraining")
    assert found.source == "shipped"


def test_the_shipped_weights_when_no_predecessor_fits(tmp_path, shipped):
    fake_run(tmp_path / "run" / "04_mamim_pretraining" / "mamim", "mamim_encoder",
             image_size=32)
    fake_run(shipped / "mamim", "mamim_encoder")
    found = handoff.find("mamim_encoder", tmp_path / "run" / "05_finetuning", **SETTINGS)
    assert found.source == "shipped" and found.path == shipped / "mamim"
    assert "loaded the shipped MAMIM encoder" in found.message
    assert "made by `ssmamba-lite course weights`, see its README" in found.message


def test_nothing_fits_then_train_and_say_why(tmp_path, shipped):
    fake_run(shipped / "mamim", "mamim_encoder")
    found = handoff.find("mamim_encoder", tmp_path / "run" / "05_finetuning",
                         **{**SETTINGS, "image_size": 32})
    assert found.path is None and found.source == "train"
    assert "04_mamim_pretraining's: " in found.message and "does not exist" in found.message
    assert "made at image_size 64, this notebook uses 32" in found.message
    for change, words in [({"model": "ssmamba_lite_tiny"}, "it is a ssmamba_lite_cpu"),
                          ({"model_args": {"use_lpr": False}}, "model_args"),
                          ({"data_dir": "sample:kather2016"}, "it was made on sample:idc-breast")]:
        found = handoff.find("mamim_encoder", tmp_path / "x" / "05_finetuning",
                             **{**SETTINGS, **change})
        assert found.source == "train" and words in found.message, found.message


def test_a_classifier_needs_the_same_classes(tmp_path, shipped):
    out = tmp_path / "run" / "07_explainability"
    fake_run(tmp_path / "run" / "05_finetuning" / "from_MAMIM", "classifier",
             classes=["a", "b"])
    found = handoff.find("classifier", out, **SETTINGS)
    assert found.source == "train" and "its classes are ['a', 'b']" in found.message
    made = fake_run(tmp_path / "run" / "05_finetuning" / "from_MAMIM", "classifier",
                    classes=["idc_negative", "idc_positive"])
    found = handoff.find("classifier", out, **SETTINGS)
    assert found.source == "predecessor" and found.path == made.resolve()
    assert "IDC classifier fine-tuned from MAMIM made by 05_finetuning" in found.message
    with pytest.raises(ValueError, match="unknown kind"):
        handoff.find("decoder", out, **SETTINGS)


def test_float16_files_load_into_float32_models(tmp_path):
    torch.manual_seed(0)
    model = build_model("ssmamba_lite_cpu", 2, 64)
    weights.save_float16(model.state_dict(), tmp_path / "half.safetensors")
    assert {v.dtype for v in read_tensors(tmp_path / "half.safetensors").values()} == \
        {torch.float16, torch.int64}                       # num_batches_tracked stays an int
    other = build_model("ssmamba_lite_cpu", 2, 64)
    load_weights(other, tmp_path / "half.safetensors")
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert b.dtype == a.dtype, k
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-3, atol=1e-4)


def test_fit_decoder_is_the_least_squares_optimum():
    """At the fitted decoder the gradient of the MAMIM loss (same images, same masks) is ~0,
    and the loss is below that of the random decoder."""
    torch.manual_seed(0)
    net = SSMamba(num_classes=0, dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), d_state=2)
    mamim = MAMIM(net, mask_patch_size=8, decoder="linear").eval()
    images = torch.randn(6, 3, 64, 64)
    mask = mamim.mask_generator(64)(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = float(mamim(images, mask)[0])
    weights.fit_decoder(mamim, images, draws=1, batch_size=6, ridge=1e-9,
                        generator=torch.Generator().manual_seed(3))
    loss = mamim(images, mask)[0]
    loss.backward()
    assert loss.item() < before
    grad = mamim.decoder[0].weight.grad
    assert grad.abs().max() < 1e-4 * max(1.0, float(loss)), grad.abs().max()


def test_the_shipped_weights_stay_within_the_sample_budget():
    assert weights.folder_bytes(SAMPLE_ROOT) <= weights.BUDGET
    assert "weights" not in sample_names()                 # weights are not a data set


@pytest.mark.skipif(not (handoff.SHIPPED / "README.md").is_file(), reason="no shipped weights")
def test_the_shipped_weights_load_and_are_found():
    enc, cls = handoff.shipped_folder("mamim_encoder"), handoff.shipped_folder("classifier")
    assert {v.dtype for v in read_tensors(enc / "encoder.safetensors").values()} <= \
        {torch.float16, torch.int64}
    encoder = build_model("ssmamba_lite_cpu", 0, 64)
    load_weights(encoder, enc / "encoder.safetensors")     # the encoder.* keys, prefix dropped
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    model, record = load_trained(cls)
    assert record["classes"] == ["idc_negative", "idc_positive"]
    assert record["run"]["data"] == IDC and not record["run"]["out"].startswith("/")
    for kind, folder in (("mamim_encoder", enc), ("classifier", cls)):
        found = handoff.find(kind, "runs/notebooks/07_explainability_absent", **SETTINGS)
        assert found.source == "shipped" and found.path == folder, found.message
