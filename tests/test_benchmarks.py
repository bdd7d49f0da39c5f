"""The benchmarks' own measuring tools, checked on cases whose answer is known."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensor_peak_counts_storages_alive_at_once():
    TensorPeak = load("bench_model").TensorPeak
    mib = 2**20
    with TensorPeak() as counter:
        a = torch.empty(30 * mib, dtype=torch.uint8).fill_(1)
        b = a + 1                                          # 60 MiB alive
        view = b[5:]                                       # a view: no new storage
        del a, b, view                                     # 0 alive
        c = torch.zeros(40 * mib, dtype=torch.uint8)       # 40 alive: the peak stays 60
        assert counter.now == 40 * mib
    assert counter.peak == 60 * mib
    w = torch.randn(64, 64, requires_grad=True)            # backward's buffers count too
    with TensorPeak() as counter:
        (w @ w).sum().backward()
    assert counter.peak >= 2 * w.numel() * 4, counter.peak
    del c


def test_learning_idc_finishes_a_cut_pretraining_instead_of_using_it(tmp_path, monkeypatch):
    # encoder.safetensors is written after every epoch: its presence does not mean finished
    bench = load("learning_idc")
    calls = []
    monkeypatch.setattr(bench, "pretrain", lambda cfg: calls.append(cfg.resume))
    out = tmp_path / "runs"
    (out / "split0" / "mamim").mkdir(parents=True)
    (out / "split0" / "mamim" / "encoder.safetensors").write_bytes(b"cut after epoch 3")
    argv = ["--out", str(out), "--split-seeds", "0", "--arms", "probe",
            "--label-fractions", "1.0", "--threads", "1"]
    monkeypatch.setattr(bench, "finetune", lambda cfg: None)
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: {
        "balanced_accuracy": 0.5, "auroc": 0.5, "macro_f1": 0.5, "n": 1})
    bench.main(argv)
    assert calls == [True], "a pretraining with no finished row must be resumed, not reused"
    bench.main(argv)                                       # its row is in results.jsonl now
    assert calls == [True]


def test_mamim_budget_keeps_one_recipe_per_out_folder(tmp_path, capsys):
    bench = load("mamim_budget")
    args = bench.argparse.Namespace(**{k: 0 for k in bench.RECIPE}, summarise_only=False)
    bench.check_recipe(tmp_path / "recipe.json", args, None)           # a new folder: written
    assert json.loads((tmp_path / "recipe.json").read_text())["mask_ratio"] == 0
    with pytest.raises(SystemExit) as exit_:                            # other settings: refused
        bench.main(["--out", str(tmp_path), "--mask-ratio", "0.4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "recipe.json" in err and "--mask-ratio 0 -> 0.4" in err, err
    assert not (tmp_path / "results.jsonl").exists()
