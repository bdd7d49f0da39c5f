"""The training engine's rules: weight decay and layer decay groups, the warm-up, seeds per
process, per-process batches, non-finite losses under DDP, the frozen encoder of a linear probe,
BatchNorm statistics after MAMIM, stratified patient splits and their checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import (
    DataError,
    find_labelled,
    has_patient_ids,
    own_split,
    patient_split,
    sample_dir,
)
from ssmamba_lite.engine.distributed import Env
from ssmamba_lite.engine.loop import epoch_seed, fit, make_loader, make_optimizer
from ssmamba_lite.engine.splits import labelled_parts
from ssmamba_lite.engine.train import FinetuneConfig, finetune, recalibrate_batchnorm
from ssmamba_lite.mamim import MAMIM
from tests.conftest import REPO

CPU = Env(torch.device("cpu"))


def groups_by_decay(module, **kw):
    names = {id(p): n for n, p in module.named_parameters()}
    decay, quiet = set(), set()
    for g in make_optimizer(module, 1e-3, 0.05, **kw).param_groups:
        (decay if g["weight_decay"] > 0 else quiet).update(names[id(p)] for p in g["params"])
    return decay, quiet


def test_one_weight_decay_rule():
    mamim = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0, mixer=("conv", "conv",
                                                                             "dms", "mamba1d")))
    decay, quiet = groups_by_decay(mamim)
    special = ("mask_token", "dt_proj_bias", "A_log", ".D", "fuse_logits", "dt_proj.bias")
    for name, p in mamim.named_parameters():
        expected_quiet = p.ndim <= 1 or name.endswith(special) or name == "mask_token"
        assert (name in quiet) == expected_quiet, name
    assert "mask_token" in quiet and any(n.endswith("dt_proj_bias") for n in quiet)
    assert any(n.endswith("mixer.mamba.dt_proj.bias") for n in quiet)      # Mamba's, 1-D
    assert any(n.endswith("x_proj_weight") for n in decay)


def test_layer_decay_scales_the_lr_by_depth():
    model = timm.create_model("ssmamba_lite_cpu", num_classes=2)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in make_optimizer(model, 1e-3, 0.05, 0.5).param_groups
             for p in g["params"]}
    assert lr_of["head.weight"] == pytest.approx(1e-3)
    assert lr_of["stem.0.weight"] < lr_of["stages.0.blocks.0.mlp.fc1.weight"] < \
        lr_of["stages.3.blocks.0.mlp.fc1.weight"] < lr_of["head.weight"]
    assert lr_of["stem.0.weight"] == pytest.approx(1e-3 * 0.5 ** 6)   # 5 blocks and the norm
    assert all(lr == 1e-3 for lr in {g["lr"] for g in make_optimizer(model, 1e-3, 0.05)
                                     .param_groups})


def toy_run(tmp_path, env=CPU, epochs=1, n=40, record=None, **kw):
    cfg = FinetuneConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=epochs,
                         batch_size=4, lr=0.1, min_lr=1e-4, progress=False, **kw)
    module = torch.nn.Linear(2, 2)
    data = torch.utils.data.TensorDataset(torch.randn(n, 2), torch.zeros(n, dtype=torch.long))

    def loss_fn(m, batch):
        if record is not None:
            record.append(float(torch.rand(())))             # what augmentations would draw
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return fit(cfg, env, module, data, loss_fn, lambda m: None)


def test_the_ema_warms_up_so_a_short_run_saves_trained_weights(tmp_path):
    # a fixed decay of 0.999 over 20 steps would save weights ~2 % of the way from the start
    cfg = FinetuneConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=2, batch_size=4,
                         lr=0.1, min_lr=1e-4, progress=False)
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 2)
    start = module.weight.detach().clone()
    data = torch.utils.data.TensorDataset(torch.randn(40, 2), torch.zeros(40, dtype=torch.long))
    saved = []
    fit(cfg, CPU, module, data, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
        lambda m: saved.append(m.weight.detach().clone()), ema_decay=0.999)
    moved = (module.weight.detach() - start).norm()
    assert (saved[-1] - start).norm() > 0.5 * moved


def test_the_weights_are_written_before_the_epoch_is_marked_done(tmp_path, monkeypatch):
    # killed between the two, a resume must not skip an epoch whose weights were never written
    from ssmamba_lite.engine import loop
    order = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **k: (order.append("done"),
                                                                  real(*a, **k)))
    cfg = FinetuneConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=2, batch_size=4,
                         lr=0.1, progress=False)
    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))
    fit(cfg, CPU, torch.nn.Linear(2, 2), data,
        lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
        lambda m: order.append("weights"))
    assert order == ["weights", "done"] * 2


def test_a_linear_probe_trains_the_heads_dropout_with_the_head(monkeypatch):
    from ssmamba_lite.engine import train
    modes = {}

    def fake_fit(cfg, env, model, *a, train_mode=None, **k):
        train_mode(model)
        modes.update(drop=model.head_drop.training, head=model.head.training,
                     stem=model.stem.training)
        return []

    monkeypatch.setattr(train, "fit", fake_fit)
    monkeypatch.setattr(train.ckpt, "save_json", lambda *a, **k: None)
    finetune(FinetuneConfig(data="sample:idc-breast", out="unused", model="ssmamba_lite_cpu",
                            model_args={"drop_rate": 0.3}, linear_probe=True, image_size=32,
                            progress=False))
    assert modes == {"drop": True, "head": True, "stem": False}


def test_a_one_epoch_run_is_not_all_warm_up(tmp_path):
    history = toy_run(tmp_path, epochs=1, warmup_fraction=0.1)   # 10 steps: warm-up 1
    assert history[-1]["lr"] < 0.01, "the cosine decay has run, not the warm-up"


def test_every_process_draws_its_own_augmentations(tmp_path):
    assert len({epoch_seed(0, 1, r) for r in range(4)}) == 4
    draws = []
    for rank in (0, 1):                   # the seeding of two data-parallel processes
        draws.append([])
        toy_run(tmp_path / str(rank), Env(torch.device("cpu"), rank=rank), record=draws[-1])
    assert draws[0] != draws[1]
    again = []
    toy_run(tmp_path / "again", Env(torch.device("cpu"), rank=0), record=again)
    assert again == draws[0], "and each repeats itself"


def test_each_process_gets_batches():
    cfg = FinetuneConfig(data=".", batch_size=8, progress=False)
    data = torch.utils.data.TensorDataset(torch.zeros(12, 2))
    loader = make_loader(data, cfg, Env(torch.device("cpu"), rank=1, world=2), shuffle=True)
    assert len(loader) == 1, "6 images per process and batches of 8: keep the short batch"


@pytest.mark.slow
def test_a_non_finite_loss_on_one_process_stops_all(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(REPO / "tests" / "ddp_worker.py"),
                        str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text())["error"] for r in (0, 1)]
    assert seen[1].startswith("loss is nan at epoch 1, step 0")
    assert seen[0].startswith("loss is not finite on 1 other process(es) at epoch 1, step 0")


def test_a_linear_probe_leaves_the_encoder_as_it_was(tmp_path):
    enc = timm.create_model("ssmamba_lite_cpu", num_classes=0)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)                  # statistics an update would move
    ckpt.save_weights(enc, tmp_path / "encoder.safetensors")
    finetune(FinetuneConfig(data="sample:idc-breast", out=str(tmp_path / "probe"),
                            model="ssmamba_lite_cpu", init=str(tmp_path), linear_probe=True,
                            epochs=1, max_steps_per_epoch=3, batch_size=8, image_size=32,
                            progress=False))
    after = ckpt.read_tensors(tmp_path / "probe" / "model.safetensors")
    for name, value in enc.state_dict().items():
        assert torch.equal(after[name], value), f"{name} changed"
    assert not torch.equal(after["head.weight"], torch.zeros_like(after["head.weight"]))


def test_batchnorm_recalibration_measures_clean_images():
    torch.manual_seed(0)
    model = timm.create_model("ssmamba_lite_cpu", num_classes=0)
    first = model.stem[1]
    first.running_mean.fill_(5.0)                              # stale (masked-image) statistics
    images = torch.rand(24, 3, 32, 32)
    inputs = []
    hook = first.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    loader = [(images[i:i + 8], None) for i in range(0, 24, 8)]
    assert recalibrate_batchnorm(model, loader, "cpu", batches=3) == 24
    hook.remove()
    seen = torch.cat(inputs)                                    # (24, C, h, w)
    torch.testing.assert_close(first.running_mean, seen.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert not model.training


def test_patient_splits_are_stratified_and_seeded():
    s = find_labelled(sample_dir("idc-breast"))
    share = np.mean(s.labels)
    vals = []
    for seed in range(4):
        train, val = patient_split(s, (0.8, 0.2), seed)
        assert not set(train.patients) & set(val.patients)
        assert abs(np.mean(val.labels) - share) < 0.05, seed
        assert abs(len(val) / len(s) - 0.2) < 0.04
        vals.append(val.paths)
    assert vals[0] != vals[1]


def test_splits_say_when_they_are_per_image(tmp_path, capsys):
    grouped = find_labelled(sample_dir("idc-breast"))
    plain = find_labelled(sample_dir("kather2016"))
    assert has_patient_ids(grouped) and not has_patient_ids(plain)
    labelled_parts(FinetuneConfig(data="sample:kather2016"))
    assert "gives no patient_id: the validation split is per image" in capsys.readouterr().out


def test_a_patient_on_both_sides_of_a_given_split_is_refused(tmp_path):
    rows = (sample_dir("idc-breast") / "labels.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    moved = body[0].replace(",train,", ",val,")               # one tile of a train patient
    (tmp_path / "labels.csv").write_text("\n".join([header, moved] + body[1:]) + "\n")
    for cls in ("idc_negative", "idc_positive"):
        (tmp_path / cls).symlink_to(sample_dir("idc-breast") / cls)
    with pytest.raises(DataError, match=r"patient\(s\) are in both train and val"):
        own_split(tmp_path)


def test_ema_weights_are_validated_saved_and_restored(tmp_path):
    finetune(FinetuneConfig(data="sample:idc-breast", out=str(tmp_path / "a"),
                            model="ssmamba_lite_cpu", epochs=2, max_steps_per_epoch=2,
                            batch_size=8, image_size=32, progress=False, ema_decay=0.5))
    saved = ckpt.read_tensors(tmp_path / "a" / "model.safetensors")
    raw = ckpt.read_tensors(tmp_path / "a" / "checkpoint-0002.safetensors")
    assert saved.keys() == raw.keys()
    assert any(not torch.equal(saved[k], raw[k]) for k in raw), "model.safetensors is the EMA"
    ema_state = ckpt.load_torch(tmp_path / "a" / "checkpoint-0002.pt")["ema"]
    for k, v in saved.items():
        assert torch.equal(ema_state[k], v), k


def test_the_loop_can_compile(tmp_path):
    history = toy_run(tmp_path, epochs=1, compile=True)
    assert history[-1]["step"] == 10 and history[-1]["loss"] > 0


def test_macro_f1_skips_a_class_absent_from_labels_and_predictions():
    from ssmamba_lite.engine.metrics import classification_metrics
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0]])
    m = classification_metrics([0, 1, 0], probs, ["a", "b", "c"])     # no "c" anywhere
    assert m["macro_f1"] == 1.0 and m["balanced_accuracy"] == 1.0
    wrong = classification_metrics([0, 1, 1], probs, ["a", "b", "c"])  # one mistake
    assert wrong["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_atomic_writes_are_readable_by_others_as_open_would_make_them(tmp_path):
    # mkstemp creates 0600 files: a feature folder shared by several users or machines
    # would then hold files only their writer can read
    ckpt.save_json({"a": 1}, tmp_path / "x.json")
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == \
        (tmp_path / "plain.json").stat().st_mode & 0o777
