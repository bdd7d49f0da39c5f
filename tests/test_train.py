"""The engine end to end on real IDC patches: CLI contract, MAMIM -> fine-tuning, resume after
SIGKILL, distributed data parallel (2 processes, gloo), and the clear stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import (
    DataError,
    find_labelled,
    own_split,
    sample_dir,
    write_labels_csv,
)
from ssmamba_lite.engine.distributed import Env
from ssmamba_lite.engine.factory import build_model
from ssmamba_lite.engine.inference import evaluate_samples, load_trained
from ssmamba_lite.engine.loop import fit, lr_factor
from ssmamba_lite.engine.splits import check_unseen, labelled_parts, pretraining_samples
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig

MODEL = "ssmamba_lite_cpu"


def subset(tmp_path, per_class=24, name="ds"):
    """labels.csv (no split column) over the first images of each class of the IDC sample."""
    s = find_labelled(sample_dir("idc-breast"))
    picked = [i for k in (0, 1) for i in [j for j, y in enumerate(s.labels) if y == k][:per_class]]
    return write_labels_csv(tmp_path / name / "labels.csv", s.subset(picked)).parent


def cli(*args, env=None, **kw):
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "ssmamba_lite.cli", *args], capture_output=True,
                          text=True, timeout=600, env=e, **kw)


COMMON = ["--model", MODEL, "--image-size", "64", "--batch-size", "8", "--no-progress",
          "--seed", "1"]


def test_cli_pretrain_finetune_evaluate_predict(tmp_path):
    data = subset(tmp_path)
    pt, ft, ev = tmp_path / "pt", tmp_path / "ft", tmp_path / "ev"
    # MAMIM on the target data itself: its training patients only (the split finetune makes)
    r = cli("pretrain", "--data", str(data), "--out", str(pt), "--epochs", "1",
            "--max-steps-per-epoch", "2", "--grad-checkpointing", *COMMON)
    assert r.returncode == 0, r.stderr
    assert json.loads((pt / "config.json").read_text())["run"]["grad_checkpointing"] is True
    assert (pt / "encoder.safetensors").is_file()
    seen = json.loads((pt / "pretrain_patients.json").read_text())
    assert f"MAMIM pretrains on {seen['images']} images" in r.stdout and seen["images"] < 48
    r = cli("finetune", "--data", str(data), "--out", str(ft), "--epochs", "1",
            "--init", str(pt / "encoder.safetensors"), *COMMON)
    assert r.returncode == 0, r.stderr
    assert "every encoder weight loaded; head.weight, head.bias start fresh" in r.stdout
    # another split seed holds other patients out, some of which MAMIM saw: refused, one line
    r = cli("finetune", "--data", str(data), "--out", str(tmp_path / "leak"), "--epochs", "1",
            "--init", str(pt), *COMMON, "--split-seed", "2")
    assert r.returncode == 2 and "MAMIM pretrained on images of" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    config = json.loads((ft / "config.json").read_text())
    assert config["classes"] == ["idc_negative", "idc_positive"] and config["image_size"] == 64
    r = cli("evaluate", "--data", str(data), "--checkpoint", str(ft), "--out", str(ev))
    assert r.returncode == 0, r.stderr
    m = json.loads((ev / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "confusion_matrix", "n",
            "classes"} <= set(m)
    # the data the run was trained on: only the images of the patients it held out are scored
    held = set(json.loads((ft / "split.json").read_text())["held_out_patients"])
    n_held = sum(g in held for g in find_labelled(data).patients)
    assert 0 < m["n"] == n_held < 48 and sum(map(sum, m["confusion_matrix"])) == n_held
    assert f"scoring the {n_held} images of the {len(held)} patients" in r.stdout
    image = next((sample_dir("idc-breast") / "idc_positive").glob("*.png"))
    r = cli("predict", "--checkpoint", str(ft), str(image))
    assert r.returncode == 0, r.stderr
    path, cls, prob = r.stdout.strip().split("\t")
    assert path == str(image) and cls in config["classes"] and 0.5 <= float(prob) <= 1.0


def test_finetune_loads_every_encoder_weight(tmp_path):
    enc = build_model(MODEL, 0, 64)
    ckpt.save_weights(enc, tmp_path / "encoder.safetensors")
    model = build_model(MODEL, 2, 64)
    fresh = ckpt.load_weights(model, tmp_path / "encoder.safetensors", ignore=("head.",))
    assert fresh == ["head.weight", "head.bias"]
    for k, v in enc.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_evaluate_refuses_unknown_classes(tmp_path):
    data = subset(tmp_path, per_class=8)
    ft = tmp_path / "ft"
    assert cli("finetune", "--data", str(data), "--out", str(ft), "--epochs", "1",
               "--max-steps-per-epoch", "1", *COMMON).returncode == 0
    other = tmp_path / "other"
    (other / "tumour").mkdir(parents=True)
    (other / "idc_negative").mkdir()
    for p in sorted((sample_dir("idc-breast") / "idc_negative").glob("*.png"))[:2]:
        (other / "tumour" / p.name).write_bytes(p.read_bytes())
        (other / "idc_negative" / p.name).write_bytes(p.read_bytes())
    r = cli("evaluate", "--data", str(other), "--checkpoint", str(ft))
    assert r.returncode == 2
    assert "classes ['tumour'] are not among the model's classes" in r.stderr


def test_truncated_png_stops_with_its_name(tmp_path):
    root = tmp_path / "ds"
    for cls in ("idc_negative", "idc_positive"):
        (root / cls).mkdir(parents=True)
        for p in sorted((sample_dir("idc-breast") / cls).glob("*.png"))[:4]:
            (root / cls / p.name).write_bytes(p.read_bytes())
    bad = sorted((root / "idc_negative").glob("*.png"))[1]
    bad.write_bytes(bad.read_bytes()[:100])
    args = ["finetune", "--data", str(root), "--out", str(tmp_path / "ft"), "--epochs", "1",
            "--val-fraction", "0.25", *COMMON]
    r = cli(*args)
    assert r.returncode == 2 and f"cannot read image {bad}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, "one line, no traceback"
    r = cli(*args, "--skip-bad-images")
    assert r.returncode == 0 and "skipped 1 unreadable" in r.stdout


def test_killed_run_resumes_to_the_same_result(tmp_path):
    data = subset(tmp_path, per_class=40)
    args = ["finetune", "--data", str(data), "--epochs", "3", "--max-steps-per-epoch", "6",
            *COMMON]
    straight = tmp_path / "straight"
    assert cli(*args, "--out", str(straight)).returncode == 0
    out = tmp_path / "killed"
    e = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "ssmamba_lite.cli", *args, "--out", str(out)],
                            env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "latest.json").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done_epochs = json.loads((out / "latest.json").read_text())["epoch"]
    assert done_epochs < 3
    # SIGKILL may land inside an atomic write; plant such a half file so the sweep is always tested
    (out / ".model.safetensors.k1ll3d.tmp").write_bytes(b"half a file")
    r = cli(*args, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} after epoch {done_epochs}" in r.stdout
    a, b = (json.loads((d / "latest.json").read_text()) for d in (straight, out))
    assert a["step"] == b["step"] == 18 and b["epoch"] == 3
    wa, wb = (ckpt.read_tensors(d / "model.safetensors") for d in (straight, out))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), f"{k} differs after resume"
    assert not list(out.glob(".*.tmp")), "no temporary files left behind"


def test_two_process_ddp_on_cpu(tmp_path):
    data = subset(tmp_path, per_class=40)    # ~64 training images, 32 per rank
    out = tmp_path / "ddp"
    e = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "ssmamba_lite.cli", "finetune", "--data",
                        str(data), "--out", str(out), "--epochs", "2", "--max-steps-per-epoch",
                        "2", "--device", "cpu", *COMMON], capture_output=True, text=True,
                       timeout=600, env=e)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 2/2") == 1, "only rank 0 reports"
    assert (out / "model.safetensors").is_file()
    latest = json.loads((out / "latest.json").read_text())
    assert latest["step"] == 4
    assert all(h["images_per_s"] > 0 for h in latest["history"])
    # validation ran on both processes, each on half of the images, and was gathered whole:
    # the same metrics as one process evaluating the saved weights on all of them
    val = labelled_parts(FinetuneConfig(data=str(data), split_seed=0))[1]
    model, record = load_trained(out)
    alone = evaluate_samples(model, val, record["classes"], 64, 8, "cpu")
    seen = latest["history"][-1]["val"]
    assert seen["n"] == len(val) == alone["n"]
    assert seen["confusion_matrix"] == alone["confusion_matrix"]
    assert seen["auroc"] == pytest.approx(alone["auroc"], abs=1e-6)


def test_nan_loss_stops_clearly(tmp_path):
    cfg = FinetuneConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=1, progress=False)
    module = torch.nn.Linear(2, 2)
    dataset = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 0"):
        fit(cfg, Env(torch.device("cpu")), module, dataset,
             lambda m, b: m(b[0]).sum() * float("nan"), lambda m: None)


def test_learning_rate_schedule():
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])), "cosine decay is monotone"
    assert f[-1] == pytest.approx(0.01, abs=0.01)


def test_mamim_never_sees_a_held_out_patient(tmp_path, capsys):
    # data with a split of its own (the IDC sample): the train part, plus the pool
    cfg = PretrainConfig(data="sample:idc-breast", out=str(tmp_path / "p"),
                         extra_data="sample:idc-breast-unlabeled")
    seen = pretraining_samples(cfg)
    val = own_split(sample_dir("idc-breast"))["val"]
    assert len(seen) == 697 + 464 and set(seen.labels) == {-1}
    assert not set(seen.patients) & set(val.patients)
    # labelled data without a split: the patients finetune holds out with the same seed
    data = subset(tmp_path, per_class=40)
    for seed in (0, 1, 2):
        _, val, held = labelled_parts(FinetuneConfig(data=str(data), split_seed=seed))
        seen = pretraining_samples(PretrainConfig(data=str(data), split_seed=seed))
        assert held == set(val.patients) and not set(seen.patients) & held
        assert len(seen) + len(val) == 80
    # a pool holding images of held-out patients: those are left out
    pool = tmp_path / "pool"
    write_labels_csv(pool / "images.csv", find_labelled(data), labelled=False)
    _, val, held = labelled_parts(FinetuneConfig(data=str(data), split_seed=0))
    seen = pretraining_samples(PretrainConfig(data=str(data), split_seed=0, extra_data=str(pool)))
    assert len(seen) == 2 * (80 - len(val)) and not set(seen.patients) & held
    # an encoder whose MAMIM run saw a held-out patient is refused
    (tmp_path / "enc").mkdir()
    ckpt.save_json({"patients": sorted(held)[:1]}, tmp_path / "enc" / "pretrain_patients.json")
    with pytest.raises(DataError, match="MAMIM pretrained on images of 1 patient"):
        check_unseen(tmp_path / "enc" / "encoder.safetensors", held)
    check_unseen(tmp_path / "enc" / "encoder.safetensors", {"someone else"})
    # an encoder without the record cannot be checked, and the run says so
    (tmp_path / "foreign").mkdir()
    check_unseen(tmp_path / "foreign" / "encoder.safetensors", held)
    assert "pretrain_patients.json beside it" in capsys.readouterr().err
