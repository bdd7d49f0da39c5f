"""The engine: everything between files on disk and a trained model.

    data.py         datasets of tiles, the labels-CSV reader, patient-grouped splits, the
                    sample sets that ship with the package (`sample_dir`, "sample:NAME")
    splits.py       which images a run sees; MAMIM never sees a held-out patient
    transforms.py   augmentations and the normalisation used in training and evaluation
    factory.py      a network by name (SSMamba preset or timm model) and its config record
    checkpoint.py   the one atomic writer and the one weight loader (safetensors)
    loop.py         the training loop both stages share: optimizer groups, schedule, DDP,
                    EMA, checkpoints
    train.py        MAMIM pretraining and supervised fine-tuning
    inference.py    a trained model back from its folder; evaluate, predict
    metrics.py      classification metrics
    device.py       device choice and seeding
    distributed.py  data parallel training under torchrun

A new dataset layout: teach `data.find_labelled` / `data.find_unlabelled` to read it (and
`data_scripts/` to download it into one of the layouts they already read).
"""
