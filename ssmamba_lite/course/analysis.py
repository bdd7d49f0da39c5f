"""Looking at models: receptive fields, predictions, magnification shifts, ablation variants.

The notebooks hold no model logic of their own; what they measure is computed here, where a
test holds it (tests/test_analysis.py).

Effective receptive field (Luo et al. 2016, "Understanding the effective receptive field in
deep CNNs"): how strongly the output at one position p depends on every input position q,

    ERF(q) = Σ_c | ∂ (Σ_c' y[c', p]) / ∂ x[c, q] |        normalised so that max_q ERF(q) = 1

A 3 x 3 convolution gives a 3 x 3 patch (LPR with its default zero initialisation gives the
single pixel p: it starts as the identity); a bare row-major selective scan gives everything
*before* p on its path (the rows above and the left part of p's row), and DMS's own 3 x 3
convolution in front of its scans widens that by one pixel (so one row below p counts, two do
not); four directions give the whole image; a coarser scale gives blocks. `erf_reach` reads
the ERF at p's neighbours.

Residual stream (`block_residuals`): per block of an SSMamba model, how far LPR moves its input,
max |LPR(x) - x| and |DWConv(x)| / |x|, and how much the block grows the stream, |x_out| / |x_in|
(Frobenius norms over the batch).

Magnification shift: the same tiles seen at another zoom z (`mamim.magnify`), the rest of the
evaluation unchanged. Made from the tile alone, only z > 1 is a change of magnification:
z > 1 is a crop, enlarged (a narrower field of view); z < 1 is down- then up-sampling, a blur
(the same field of view with less detail), not a wider field of view. `zoom_view_name` names
them so.

Ablations (`ABLATIONS`): SSMamba with one of its parts removed, as overrides of SSMambaConfig
and whether fine-tuning starts from a MAMIM encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssmamba_lite.engine.checkpoint import load_weights, read_json
from ssmamba_lite.engine.data import Samples
from ssmamba_lite.engine.factory import mamim_from_record
from ssmamba_lite.engine.inference import predict_probabilities
from ssmamba_lite.engine.metrics import classification_metrics
from ssmamba_lite.engine.splits import run_samples
from ssmamba_lite.engine.train import FinetuneConfig, config_from_dict
from ssmamba_lite.mamim import MAMIM, magnify
from ssmamba_lite.model import Block


# ---------------------------------------------------------------------------------------------
# Effective receptive field.
# ---------------------------------------------------------------------------------------------
def effective_receptive_field(module, x: torch.Tensor, point=None) -> torch.Tensor:
    """ERF of `module` at output position `point` (row, col; default: the centre), as an
    (H, W) map over the input x (batch, C, H, W), normalised to a maximum of 1.
    The module must map (batch, C, H, W) to (batch, C', H', W')."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    if y.dim() != 4:
        raise ValueError(f"effective_receptive_field: the module must return (batch, C, H, W), "
                         f"got shape {tuple(y.shape)}")
    r, c = point if point is not None else (y.shape[-2] // 2, y.shape[-1] // 2)
    y[:, :, r, c].sum().backward()                         # Σ_c' y[c', p]
    erf = x.grad.abs().sum(dim=(0, 1))                     # Σ_c |∂ · / ∂ x[c, q]|   (H, W)
    return erf / erf.max().clamp(min=1e-30)


NEIGHBOURS = {"above": (-1, 0), "below": (1, 0), "2 below": (2, 0), "left": (0, -1),
              "right": (0, 1), "2 right": (0, 2)}      # name: (row, column) offset from p


def erf_reach(erf: torch.Tensor, point=None) -> dict:
    """The ERF (an (H, W) map, max 1) at the neighbours of `point` (default: the centre) named
    in NEIGHBOURS (0.0 where a neighbour falls outside the map), and "area": the share of all
    input positions with a non-zero ERF (positions that reach the output at all)."""
    h, w = erf.shape
    r, c = point if point is not None else (h // 2, w // 2)
    out = {name: float(erf[r + dr, c + dc]) if 0 <= r + dr < h and 0 <= c + dc < w else 0.0
           for name, (dr, dc) in NEIGHBOURS.items()}
    out["area"] = float((erf > 0).float().mean())
    return out


@torch.no_grad()
def block_residuals(model, images: torch.Tensor) -> list[dict]:
    """Per Block of an SSMamba `model` on `images` (as the model is: put it in eval mode for
    deterministic numbers), one dict: "block" (its name), "lpr_change" = max |LPR(x) - x|,
    "dwconv_ratio" = |DWConv(x)| / |x| (both nan without LPR) and "growth" = |x_out| / |x_in|
    of the whole block (Frobenius norms over the batch)."""
    seen, hooks = {}, []
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, Block)]
    if not blocks:
        raise ValueError("block_residuals: the model has no SSMamba Block")

    def keep(key):
        def hook(_, inputs, output):
            seen[key] = (inputs[0], output)
        return hook

    for name, block in blocks:
        hooks.append(block.register_forward_hook(keep((name, "block"))))
        if hasattr(block.lpr, "dwconv"):
            hooks.append(block.lpr.register_forward_hook(keep((name, "lpr"))))
            hooks.append(block.lpr.dwconv.register_forward_hook(keep((name, "dwconv"))))
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name, _ in blocks:
        x_in, x_out = seen[(name, "block")]
        row = {"block": name, "lpr_change": float("nan"), "dwconv_ratio": float("nan"),
               "growth": float(x_out.norm() / x_in.norm())}
        if (name, "lpr") in seen:
            lpr_in, lpr_out = seen[(name, "lpr")]
            dw_in, dw_out = seen[(name, "dwconv")]
            row["lpr_change"] = float((lpr_out - lpr_in).abs().max())      # max |LPR(x) - x|
            row["dwconv_ratio"] = float(dw_out.norm() / dw_in.norm())      # |DWConv(x)| / |x|
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Predictions of a trained classifier.
# ---------------------------------------------------------------------------------------------
def validation_samples(checkpoint) -> Samples:
    """The validation images a fine-tuning run (its output folder) was validated on: the same
    patient-grouped split of the same data (or the data's own val/ folder)."""
    record = read_json(Path(checkpoint) / "config.json")
    cfg = config_from_dict(FinetuneConfig, record["run"])
    _, val, _ = run_samples(cfg, labelled=True)            # the very function finetune used
    if val is None or not len(val):
        raise ValueError(f"{checkpoint}: the run had no validation split")
    return val


def zoom_view_name(zoom: float) -> str:
    """What a test zoom does to a tile: "as trained" (1), "crop x2" (2: the centre half,
    enlarged), "blur x2" (0.5: down- then up-sampled by 2, same field of view)."""
    if zoom <= 0:
        raise ValueError(f"zoom_view_name: zoom must be > 0, got {zoom}")
    if zoom == 1:
        return "as trained"
    return f"crop x{zoom:.3g}" if zoom > 1 else f"blur x{1 / zoom:.3g}"


def probabilities_under_zoom(model, samples: Samples, image_size: int, zooms,
                             batch_size: int = 64, device="cpu") -> dict:
    """{zoom: class probabilities (n, K)} of `model` on `samples`, each tile resized to
    image_size, then seen at that zoom (`mamim.magnify`: z > 1 a crop enlarged, z < 1 a blur,
    1 unchanged)."""
    out = {}
    for z in zooms:
        view = None if z == 1 else (lambda img, z=float(z): magnify(img, z))
        out[float(z)] = predict_probabilities(model, samples, image_size, view, batch_size,
                                              device)
    return out


def metrics_under_zoom(model, samples: Samples, image_size: int, zooms,
                       batch_size: int = 64, device="cpu") -> list[dict]:
    """classification_metrics of `model` on `samples` seen at each zoom (1 = as trained;
    2 = a crop x2: the centre half enlarged; 0.5 = a blur x2: down- then up-sampled, the same
    field of view). One dict per zoom, with the keys "zoom" and "view" (zoom_view_name) added."""
    probs = probabilities_under_zoom(model, samples, image_size, zooms, batch_size, device)
    return [{"zoom": z, "view": zoom_view_name(z),
             **classification_metrics(samples.labels, p, samples.classes)}
            for z, p in probs.items()]


# ---------------------------------------------------------------------------------------------
# A MAMIM model back from its pretraining run.
# ---------------------------------------------------------------------------------------------
def load_mamim(run_dir, device="cpu") -> MAMIM:
    """The whole MAMIM module (encoder, mask token, decoder) of a `pretrain` output folder,
    from its latest epoch checkpoint; encoder.safetensors alone holds the encoder only."""
    run_dir = Path(run_dir)
    for name in ("config.json", "latest.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: no {name} (the output folder of `pretrain`)")
    mamim = mamim_from_record(read_json(run_dir / "config.json"))
    latest = read_json(run_dir / "latest.json")
    load_weights(mamim, run_dir / f"{latest['checkpoint']}.safetensors")
    return mamim.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Ablation variants.
# ---------------------------------------------------------------------------------------------
ABLATIONS = {
    # name: (SSMambaConfig overrides, fine-tune from a MAMIM encoder?)
    "full": ({}, True),                                           # everything on
    "no_mamim": ({}, False),                                      # - MAMIM: from scratch
    "no_dms": ({"directions": 1, "scales": [1]}, True),           # - DMS: 1 direction, 1 scale
    "no_lpr": ({"use_lpr": False}, True),                         # - LPR
    "attention": ({"mixer": "attention"}, True),                  # self-attention as mixer
}


def ablation(variant: str, model_args: dict | None = None) -> tuple[dict, bool]:
    """(model_args, use_mamim) of an ablation variant; `model_args` are the base overrides
    (e.g. a smaller model), the variant's own overrides go on top."""
    if variant not in ABLATIONS:
        raise ValueError(f"unknown ablation variant {variant!r}; known: {list(ABLATIONS)}")
    extra, use_mamim = ABLATIONS[variant]
    return {**dict(model_args or {}), **extra}, use_mamim
