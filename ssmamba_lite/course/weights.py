"""The small pretrained weights that ship with the package, and a MAMIM model back from them.

    make_weights(out)          `ssmamba-lite course weights`: MAMIM on the training tiles of
                               `sample:idc-breast` plus its unlabelled pool (training patients
                               only), then an IDC classifier fine-tuned from that encoder; both
                               written as float16 safetensors with their records and a README
    save_float16(tensors, path)   floating tensors stored as float16 (engine.checkpoint.
                               load_weights puts them into float32 models)
    mean_masked_loss(mamim, images) the MAMIM loss over images, each under a random mask
    fit_decoder(mamim, images) MAMIM's linear decoder, fitted in closed form to the encoder
    shipped_mamim(folder, images)   the MAMIM module of the shipped folder and its masked loss

The shipped MAMIM file holds the encoder, the mask token and the hierarchical decoder (keys
encoder.*, mask_token, decoder.*; the decoder is 40k weights, 80 kB in float16). A folder made
with the linear head (SimMIM's) ships without it: a 1x1 convolution from the last stage's C4
channels to 3·s² pixels (s = 32), 0.4M weights (0.8 MB in float16), which would push
sample_data over its 25 MB budget. Given
the encoder that decoder is linear, so its best fit has a closed form (least squares on the
hidden pixels, the MAMIM loss itself):

    x̂_k = w_kᵀ [z; 1]      output channel k = a colour and a pixel offset inside an s x s block
    min Σ_n m_nk (w_kᵀ ẑ_n − y_nk)²   ->   (Σ_n m_nk ẑ_n ẑ_nᵀ + λ I) w_k = Σ_n m_nk y_nk ẑ_n

n runs over images and positions of the last stage's map, m_nk = 1 where pixel k of position n
is hidden, y the MAMIM target (per-patch standardised pixels). Channels whose pixels always
share a mask patch share the matrix on the left, so a few solves fit all 3·s² channels.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ssmamba_lite.course.analysis import validation_samples
from ssmamba_lite.course.handoff import KINDS, MAKER, SHIPPED, shown
from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import SAMPLE_ROOT, load_image
from ssmamba_lite.engine.factory import mamim_from_record
from ssmamba_lite.engine.inference import evaluate_samples, load_trained
from ssmamba_lite.engine.splits import PRETRAIN_PATIENTS, pretraining_samples
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain
from ssmamba_lite.engine.transforms import eval_transform
from ssmamba_lite.mamim import MAMIM, patch_normalize, upsample_mask

DATA, POOL = "sample:idc-breast", "sample:idc-breast-unlabeled"
RECIPE = dict(model="ssmamba_lite_cpu", image_size=64, batch_size=64, seed=0)
PRETRAIN = dict(lr=1.5e-3, mask_ratio=0.6, mask_patch_size=16, decoder="hierarchical")
FINETUNE = dict(lr=2e-3, layer_decay=0.75)
BUDGET = 25_000_000            # bytes: the whole sample_data folder, weights included


def save_float16(tensors: dict, path, metadata: dict | None = None) -> None:
    """{name: tensor} -> a .safetensors file, floating tensors as float16, atomically."""
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    ckpt.atomic_write(path, lambda tmp: save_file(half, tmp, metadata=meta))


def folder_bytes(folder) -> int:
    """The bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# The decoder in closed form, and the shipped MAMIM.
# ---------------------------------------------------------------------------------------------
def _groups(s: int, h: int, w: int, patch: int) -> list[list[int]]:
    """Pixel offsets (i·s + j) of an s x s block that lie in the same mask patch at every block
    position of an h x w map: their mask columns are equal, so they share a Gram matrix."""
    keys: dict = {}
    for i in range(s):
        for j in range(s):
            key = tuple(((I * s + i) // patch, (J * s + j) // patch)
                        for I in range(h) for J in range(w))
            keys.setdefault(key, []).append(i * s + j)
    return list(keys.values())


@torch.no_grad()
def fit_decoder(mamim: MAMIM, images: torch.Tensor, draws: int = 2, batch_size: int = 64,
                ridge: float = 1e-3, generator: torch.Generator | None = None) -> float:
    """Set mamim.decoder's 1x1 convolution to the least-squares fit (module docstring) on
    `images` (n, 3, H, W; normalised as in training), each seen with `draws` random masks.
    Returns the masked loss of the fitted decoder on those images (one more draw)."""
    if mamim.decoder_kind != "linear":
        raise ValueError(f"fit_decoder: only the linear decoder has a closed form, this MAMIM "
                         f"has the {mamim.decoder_kind} one")
    mamim.eval()
    conv, s = mamim.decoder[0], mamim.stride
    device = conv.weight.device
    K, feats = conv.out_channels, conv.in_channels + 1
    captured = {}
    hook = mamim.decoder.register_forward_pre_hook(lambda m, a: captured.update(z=a[0][-1]))
    gram, rhs, groups = None, torch.zeros(feats, K, dtype=torch.float64), None
    masks = mamim.mask_generator(images.shape[-1])
    patch = mamim.patch_size(images.shape[-1])
    for _ in range(draws):
        for x in images.split(batch_size):
            x = x.to(device)
            mask = masks(len(x), generator).to(device)
            mamim(x, mask)                                             # z -> captured["z"]
            z = captured["z"].float()
            b, c, h, w = z.shape
            zn = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, c),
                            torch.ones(b * h * w, 1, device=device)], 1).double().cpu()
            m_px = upsample_mask(mask, mamim.stem_stride).expand(-1, 3, -1, -1)
            y = patch_normalize(x.float(), patch)[0] if mamim.norm_pix_loss \
                else x.float()
            m = F.pixel_unshuffle(m_px, s).permute(0, 2, 3, 1).reshape(-1, K).double().cpu()
            y = F.pixel_unshuffle(y, s).permute(0, 2, 3, 1).reshape(-1, K).double().cpu()
            if groups is None:
                offsets = _groups(s, h, w, patch)
                groups = [[c * s * s + o for c in range(3) for o in g] for g in offsets]
                gram = torch.zeros(len(groups), feats, feats, dtype=torch.float64)
            rhs += zn.T @ (m * y)                                      # Σ m_nk y_nk ẑ_n
            for g, ks in enumerate(groups):
                gram[g] += (zn * m[:, ks[0], None]).T @ zn             # Σ m_nk ẑ_n ẑ_nᵀ
    hook.remove()
    weight = torch.zeros(K, feats, dtype=torch.float64)
    eye = torch.eye(feats, dtype=torch.float64)
    for g, ks in enumerate(groups):
        lam = ridge * gram[g].diagonal().mean().clamp(min=1e-12)
        weight[ks] = torch.linalg.solve(gram[g] + lam * eye, rhs[:, ks]).T
    conv.weight.copy_(weight[:, :-1].reshape(conv.weight.shape).to(conv.weight))
    conv.bias.copy_(weight[:, -1].to(conv.bias))
    return mean_masked_loss(mamim, images, batch_size, generator)


@torch.no_grad()
def mean_masked_loss(mamim: MAMIM, images: torch.Tensor, batch_size: int = 64,
                generator: torch.Generator | None = None) -> float:
    """The MAMIM loss over `images` (n, 3, H, W), each under one random mask, in eval mode."""
    mamim.eval()
    device = mamim.mask_token.device
    masks = mamim.mask_generator(images.shape[-1])
    losses = [float(mamim(x.to(device), masks(len(x), generator).to(device))[0]) * len(x)
              for x in images.split(batch_size)]
    return sum(losses) / len(images)


def scoring_tiles(samples, image_size: int, n: int = 256, seed: int = 0) -> torch.Tensor:
    """Up to n of `samples`' images, drawn at random, un-augmented: (n, 3, size, size)."""
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([eval_transform(image_size)(load_image(samples.paths[i]))
                        for i in pick.tolist()])


def shipped_mamim(folder, images: torch.Tensor, device="cpu", generator=None) -> tuple:
    """(MAMIM module, masked loss on `images`) from a folder of `make_weights`. A folder of the
    linear head ships no decoder: it is fitted by `fit_decoder` on `images` (use the images
    MAMIM trained on)."""
    folder = Path(folder)
    mamim = mamim_from_record(ckpt.read_json(folder / "config.json"))
    linear = mamim.decoder_kind == "linear"
    ckpt.load_weights(mamim, folder / KINDS["mamim_encoder"].weights,
                      ignore=("decoder.",) if linear else ())
    mamim = mamim.to(device).eval()
    if linear:
        return mamim, fit_decoder(mamim, images, generator=generator)
    return mamim, mean_masked_loss(mamim, images, generator=generator)


# ---------------------------------------------------------------------------------------------
# `ssmamba-lite course weights`.
# ---------------------------------------------------------------------------------------------
def _record(folder: Path, shipped: Path, **changes) -> dict:
    """A run's config.json as it ships: paths relative to the repository, data by sample name."""
    record = ckpt.read_json(folder / "config.json")
    record["run"].update(out=shown(shipped), device="auto", progress=True, **changes)
    return record


def make_weights(out=SHIPPED, work="runs/course_weights", pretrain_epochs: int = 6,
                 epochs: int = 6, device: str = "auto", progress: bool = True) -> dict:
    """Pretrain, fine-tune, write the float16 weights, records and README into `out`; returns
    the record (seconds, validation metrics of the shipped float16 classifier)."""
    out, work = Path(out), Path(work)
    t0 = time.perf_counter()
    history_p = pretrain(PretrainConfig(data=DATA, extra_data=POOL, out=str(work / "mamim"),
                                        overwrite=True, epochs=pretrain_epochs, device=device,
                                        progress=progress, **RECIPE, **PRETRAIN))
    t1 = time.perf_counter()
    history_f = finetune(FinetuneConfig(data=DATA, init=str(work / "mamim"), epochs=epochs,
                                        overwrite=True, out=str(work / "idc_classifier"),
                                        device=device,
                                        progress=progress, **RECIPE, **FINETUNE))
    t2 = time.perf_counter()

    enc, cls = out / KINDS["mamim_encoder"].shipped, out / KINDS["classifier"].shipped
    for folder in (enc, cls):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    latest = ckpt.read_json(work / "mamim" / "latest.json")["checkpoint"]
    whole = ckpt.read_tensors(work / "mamim" / f"{latest}.safetensors")
    encoder = ckpt.read_tensors(work / "mamim" / "encoder.safetensors")   # BatchNorm recalibrated
    decoder = {} if PRETRAIN["decoder"] == "linear" else \
        {k: v for k, v in whole.items() if k.startswith("decoder.")}   # the linear one is refitted
    save_float16({**{f"encoder.{k}": v for k, v in encoder.items()},
                  "mask_token": whole["mask_token"], **decoder},
                 enc / KINDS["mamim_encoder"].weights)
    ckpt.save_json(_record(work / "mamim", enc), enc / "config.json")
    shutil.copy(work / "mamim" / PRETRAIN_PATIENTS, enc / PRETRAIN_PATIENTS)
    ckpt.save_json(history_p, enc / "history.json")
    save_float16(ckpt.read_tensors(work / "idc_classifier" / "model.safetensors"),
                 cls / KINDS["classifier"].weights)
    ckpt.save_json(_record(work / "idc_classifier", cls, init=shown(enc)), cls / "config.json")
    ckpt.save_json(history_f, cls / "history.json")

    model, record = load_trained(cls)                     # the float16 file, into float32
    val = validation_samples(cls)
    seen = pretraining_samples(PretrainConfig(data=DATA, extra_data=POOL, **RECIPE))
    masked = {name: shipped_mamim(enc, scoring_tiles(samples, 64),
                                  generator=torch.Generator().manual_seed(0))[1]
              for name, samples in (("training_tiles", seen), ("held_out_tiles", val))}
    shipped = evaluate_samples(model, val, record["classes"], record["image_size"], 64, "cpu")
    keys = ("balanced_accuracy", "auroc", "accuracy", "macro_f1", "n")
    summary = {
        "command": f"{MAKER} --pretrain-epochs {pretrain_epochs} --epochs {epochs}",
        "seconds": {"pretrain": round(t1 - t0, 1), "finetune": round(t2 - t1, 1),
                    "total": round(t2 - t0, 1)},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
                   f"{torch.__version__}",
        "pretrain": {"images": ckpt.read_json(enc / PRETRAIN_PATIENTS)["images"],
                     "patients": len(ckpt.read_json(enc / PRETRAIN_PATIENTS)["patients"]),
                     "epochs": pretrain_epochs, "last_loss": round(history_p[-1]["loss"], 4),
                     **RECIPE, **PRETRAIN},
        "finetune": {"epochs": epochs, **RECIPE, **FINETUNE},
        "validation_float32": {k: history_f[-1]["val"][k] for k in keys},
        "validation_float16": {k: shipped[k] for k in keys},
        "masked_loss": {k: round(v, 4) for k, v in masked.items()},
    }
    ckpt.save_json(summary, out / "record.json")
    (out / "README.md").write_text(readme(summary))
    inside = out.resolve().is_relative_to(SAMPLE_ROOT.resolve())
    summary["bytes"] = {"weights": folder_bytes(out),
                        "sample_data": folder_bytes(SAMPLE_ROOT) if inside else None}
    return summary


def readme(r: dict) -> str:
    v, p, s, m = r["validation_float16"], r["pretrain"], r["seconds"], r["masked_loss"]
    return f"""# Pretrained weights of the course (`ssmamba_lite_cpu`, 64 px, IDC)

What a student who opens notebook 04, 05 or 07 on its own loads instead of training
(`ssmamba_lite/course/handoff.py` decides; `retrain=True` in a notebook trains instead).

| folder | what |
|---|---|
| `mamim/` | MAMIM (masked image modelling) of `ssmamba_lite_cpu` at 64 px: `encoder.safetensors` (keys `encoder.*`: the encoder, BatchNorm re-estimated on unmasked tiles; `mask_token`; `decoder.*`: the {p['decoder']} decoder), `config.json`, `history.json` (loss per epoch), `pretrain_patients.json` (whom it saw) |
| `idc_classifier/` | an IDC classifier (2 classes) fine-tuned from that encoder: `model.safetensors`, `config.json`, `history.json` |
| `mamim_decoders.json` | the masked loss per epoch of MAMIM's two decoders (hierarchical, linear), 20 epochs side by side, and their scores on training and held-out tiles; written by `python benchmarks/mamim_decoders.py --skip cost --record ssmamba_lite/sample_data/weights/mamim_decoders.json` (its command inside); notebook 04 draws it |
| `mamim_budget.jsonl` | the runs of the MAMIM budget curve (`runs/mamim_budget/results.jsonl` of `python benchmarks/mamim_budget.py` at its defaults, copied as it is, then the rows of `--budgets 0 200 --split-seeds S --threads 1` for each split seed S appended): a random encoder and MAMIM encoders of several budgets, probed and fine-tuned over three patient splits; notebook 05 draws it |

Weights are float16 (`engine.checkpoint.load_weights` loads them into float32 models).

**How they were made** ({r['machine']}; one run, seed 0):

    {r['command']}

- MAMIM: {p['epochs']} epochs on {p['images']} tiles of {p['patients']} patients: the training
  tiles of `sample:idc-breast` plus `sample:idc-breast-unlabeled` (training patients only),
  labels unused; mask ratio {p['mask_ratio']}, mask patches of {p['mask_patch_size']} px, batch
  {p['batch_size']}, lr {p['lr']}, {p['decoder']} decoder; last epoch's masked loss
  {p['last_loss']} (on the zoomed, jittered training views). {s['pretrain']} s.
- Masked loss of the shipped MAMIM (eval mode, un-augmented tiles, one random mask each; 1.0 =
  every hidden patch flat in its true mean colour): {m['training_tiles']} on 256 of its
  training tiles, {m['held_out_tiles']} on 256 tiles of the held-out patients.
- Fine-tuning: {r['finetune']['epochs']} epochs on the labelled training tiles, batch
  {r['finetune']['batch_size']}, lr {r['finetune']['lr']}, layer-wise lr decay
  {r['finetune']['layer_decay']}. {s['finetune']} s.
- Total {s['total']} s on a shared 2-core CPU machine.

**Validation** on the sample's held-out patients ({v['n']} tiles of the `val` split, patients
that neither stage saw; the last epoch, nothing selected), float16 weights as shipped:
balanced accuracy {v['balanced_accuracy']:.3f}, AUROC {v['auroc']:.3f} (accuracy
{v['accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f}). Small data, one seed: expect several
points of spread between runs.

**Licence.** The weights are derived from the IDC breast patches of `sample:idc-breast` and
`sample:idc-breast-unlabeled`; their source and licence are in `../ATTRIBUTION.md`.
"""
