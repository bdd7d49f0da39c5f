"""Bad input, one table: every case is one error line on stderr naming the file or flag, a
non-zero exit, and a finished run beside it left byte for byte as it was.

The finished run (`good`) is a real fine-tuning of two steps on IDC patches. Each case builds
what it needs under its own folder (a broken labels.csv, a corrupt checkpoint, ...), runs the
command line in this process and checks the three things. A case that writes into the good
run's folder is the test that a failed or repeated run never changes a finished one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ssmamba_lite.cli import main
from ssmamba_lite.engine.data import find_labelled, sample_dir, write_labels_csv

FT = ["--model", "ssmamba_lite_cpu", "--image-size", "32", "--epochs", "1",
      "--max-steps-per-epoch", "1", "--batch-size", "4", "--device", "cpu", "--no-progress"]
SLIDE = sample_dir("cmu-small-region") / "cmu_small_region.svs"


def digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(data folder, finished run folder, its files' hashes)."""
    root = tmp_path_factory.mktemp("good")
    s = find_labelled(sample_dir("idc-breast"))
    picked = [i for k in (0, 1) for i in [j for j, y in enumerate(s.labels) if y == k][:10]]
    data = write_labels_csv(root / "data" / "labels.csv", s.subset(picked)).parent
    run = root / "run"
    assert main(["finetune", "--data", str(data), "--out", str(run), *FT]) == 0
    return data, run, digest(run)


def images(good):
    """Two real images of each class of the good data (relative paths into a new folder)."""
    data = good[0]
    rows = (data / "labels.csv").read_text().splitlines()[1:]
    return [r.split(",")[:2] for r in rows]


def labels_folder(tmp, good, text: str, encoding="utf-8"):
    """A data folder with copies of the good images and `text` as its labels.csv."""
    folder = tmp / "bad_data"
    folder.mkdir()
    for i, (path, _) in enumerate(images(good)):
        shutil.copy(path, folder / f"t{i}.png")
    (folder / "labels.csv").write_bytes(text.encode(encoding))
    return folder


def rows(n=8, start=0):
    return "".join(f"t{i}.png,{'neg' if i % 2 else 'pos'},p{i}\n" for i in range(start, n))


def with_image(tmp, good, content: bytes, name="t0.png"):
    """The good images as class folders, one of them replaced by `content`."""
    folder = tmp / "img_data"
    for i, (path, label) in enumerate(images(good)):
        (folder / label.split("_")[-1]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / label.split("_")[-1] / f"t{i}.png")
    target = next(folder.glob(f"*/{name}"))
    target.write_bytes(content)
    return folder


def truncated(good) -> bytes:
    return open(images(good)[0][0], "rb").read()[:200]


def copy_run(tmp, good):
    shutil.copytree(good[1], tmp / "copy")
    return tmp / "copy"


def ft(tmp, good, *extra, data=None, out=None):
    return ["finetune", "--data", str(data or good[0]), "--out", str(out or tmp / "new"), *FT,
            *extra]


def pt(tmp, good, *extra, out=None):
    return ["pretrain", "--data", str(good[0]), "--out", str(out or tmp / "new_pt"), *FT, *extra]


def corrupt_pt(tmp, good):
    run = copy_run(tmp, good)
    for f in run.glob("checkpoint-*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    return run


def extract(tmp, *extra, slides=None):
    return ["wsi", "extract", "--slides", str(slides or SLIDE), "--out", str(tmp / "feats"),
            "--checkpoint", "none", "--model", "ssmamba_lite_cpu", "--image-size", "32",
            "--device", "cpu", *extra]


def empty_dir(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def a_file(tmp, name="a_file", content=b"x"):
    (tmp / name).write_bytes(content)
    return tmp / name


def mil_labels(tmp, text, command="train", out=None):
    (tmp / "feats").mkdir()
    (tmp / "mil.csv").write_text(text)
    return ["mil", command, "--features", str(tmp / "feats"), "--labels", str(tmp / "mil.csv"),
            "--out", str(out or tmp / "mil"), "--device", "cpu"]


def evaluated(tmp, name):
    """A folder holding an earlier evaluation's `name`."""
    (tmp / "evaluated").mkdir()
    (tmp / "evaluated" / name).write_text("{}\n")
    return tmp / "evaluated"


HEADER = "path,label,patient_id\n"
CASES = {   # name: (argv builder (tmp, good), what the one line must say)
    # labels.csv
    "path listed twice": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows() + "t0.png,neg,p0\n")), "listed twice"),
    "empty label": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows(7) + "t7.png,,p7\n")), "label of t7.png is empty"),
    "short row": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows(7) + "t7.png\n")), "1 fields where the header has 3"),
    "long row": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows(7) + "t7.png,neg,p7,extra\n")), "4 fields where the header has 3"),
    "latin-1 labels": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows() + "t8.png,négatif,p8\n", "latin-1")), "is not UTF-8"),
    "path leaving the data folder": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows() + "../../../etc/passwd,neg,p9\n")), "leaves the data folder"),
    "missing image": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + rows() + "nope.png,neg,p9\n")), "nope.png does not exist"),
    "missing column": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, "file,label\n" + rows())), "needs the columns path"),
    "header only": (lambda t, g: ft(t, g, data=labels_folder(t, g, HEADER)),
                    "at least one row"),
    "one class": (lambda t, g: ft(t, g, data=labels_folder(
        t, g, HEADER + "".join(f"t{i}.png,pos,p{i}\n" for i in range(8)))), "at least 2 classes"),
    "data folder missing": (lambda t, g: ft(t, g, data=t / "absent"), "does not exist"),
    "no class folders": (lambda t, g: ft(t, g, data=empty_dir(t)), "no class folders"),
    # images
    "truncated PNG, split 0": (lambda t, g: ft(t, g, data=with_image(t, g, truncated(g))),
                               "unreadable"),
    "truncated PNG, split 1": (lambda t, g: ft(t, g, "--split-seed", "1",
                                               data=with_image(t, g, truncated(g))),
                               "unreadable"),
    "text named .png": (lambda t, g: ft(t, g, data=with_image(t, g, b"not an image")),
                        "unreadable"),
    "pretrain over a truncated PNG": (lambda t, g: ["pretrain", "--data", str(with_image(
        t, g, truncated(g))), "--out", str(t / "p"), *FT], "unreadable"),
    # values
    "--epochs 0": (lambda t, g: ft(t, g, "--epochs", "0"), "--epochs must be at least 1"),
    "--epochs -1": (lambda t, g: ft(t, g, "--epochs", "-1"), "--epochs must be at least 1"),
    "--batch-size 0": (lambda t, g: ft(t, g, "--batch-size", "0"), "--batch-size"),
    "--lr 0": (lambda t, g: ft(t, g, "--lr", "0"), "--lr must be a positive number"),
    "--lr nan": (lambda t, g: ft(t, g, "--lr", "nan"), "--lr must be a positive number"),
    "--val-fraction 1": (lambda t, g: ft(t, g, "--val-fraction", "1"), "--val-fraction"),
    "--label-fraction 0": (lambda t, g: ft(t, g, "--label-fraction", "0"), "--label-fraction"),
    "--label-fraction 1.5": (lambda t, g: ft(t, g, "--label-fraction", "1.5"),
                             "--label-fraction"),
    "--image-size 0": (lambda t, g: ft(t, g, "--image-size", "0"), "--image-size"),
    "--layer-decay 2": (lambda t, g: ft(t, g, "--layer-decay", "2"), "--layer-decay"),
    "--mask-ratio 0": (lambda t, g: pt(t, g, "--mask-ratio", "0"), "--mask-ratio"),
    "--min-zoom 0": (lambda t, g: pt(t, g, "--min-zoom", "0"), "--min-zoom"),
    "--decoder nope": (lambda t, g: pt(t, g, "--decoder", "nope"), "--decoder"),
    "unknown --model-args key": (lambda t, g: ft(t, g, "--model-args", '{"nope": 1}'),
                                 "not SSMambaConfig fields"),
    "unknown --model": (lambda t, g: ft(t, g, "--model", "no_such_model"), "unknown model"),
    # weights and checkpoints
    "corrupt --init": (lambda t, g: ft(t, g, "--init", str(a_file(
        t, "enc.safetensors", b"\x00" * 64))), "not a readable .safetensors file"),
    "missing --init": (lambda t, g: ft(t, g, "--init", str(t / "none.safetensors")),
                       "does not exist"),
    "--init of another model": (lambda t, g: ft(t, g, "--init", str(g[1] / "model.safetensors"),
                                                "--model", "ssmamba_lite_tiny"),
                                "does not fit"),
    "--resume over a truncated checkpoint": (lambda t, g: ft(
        t, g, "--resume", "--epochs", "2", out=corrupt_pt(t, g)), "not a readable checkpoint"),
    "--resume with another image size": (lambda t, g: ft(
        t, g, "--resume", "--image-size", "64", out=copy_run(t, g)), "image_size"),
    "--resume with another model": (lambda t, g: ft(
        t, g, "--resume", "--model", "ssmamba_lite_tiny", out=copy_run(t, g)), "model"),
    "corrupt config.json on --resume": (lambda t, g: ft(t, g, "--resume", out=(
        lambda r: (r / "config.json").write_text("{") and r)(copy_run(t, g))), "not valid JSON"),
    # the out folder
    "finetune into a finished run": (lambda t, g: ft(t, g, out=g[1]), "holds a run"),
    "finetune into it, other data": (lambda t, g: ft(t, g, out=g[1], data=with_image(
        t, g, truncated(g))), "unreadable"),
    "pretrain into a finished run": (lambda t, g: pt(t, g, out=g[1]), "holds a run"),
    "--out is a file": (lambda t, g: ft(t, g, out=a_file(t)), "is a file"),
    "--out under a file": (lambda t, g: ft(t, g, out=a_file(t) / "sub"), "cannot be written"),
    # evaluate and predict
    "evaluate a folder without a run": (lambda t, g: ["evaluate", "--data", str(g[0]),
                                                      "--checkpoint", str(empty_dir(t))],
                                        "expected config.json and model.safetensors"),
    "evaluate a run with a corrupt config": (lambda t, g: ["evaluate", "--data", str(g[0]),
                                                           "--checkpoint", str((
        lambda r: (r / "config.json").write_text("[1,") and r)(copy_run(t, g)))],
        "not valid JSON"),
    "evaluate on other classes": (lambda t, g: ["evaluate", "--data", str(labels_folder(
        t, g, HEADER + rows())), "--checkpoint", str(g[1])], "not among the model's classes"),
    "evaluate --out over an earlier evaluation": (lambda t, g: [
        "evaluate", "--data", str(g[0]), "--checkpoint", str(g[1]), "--out",
        str(evaluated(t, "metrics.json"))], "already holds metrics.json"),
    "evaluate --out is a file": (lambda t, g: [
        "evaluate", "--data", str(g[0]), "--checkpoint", str(g[1]), "--out", str(a_file(t))],
        "is a file"),
    "predict a text file": (lambda t, g: ["predict", "--checkpoint", str(g[1]),
                                          str(a_file(t, "x.png", b"text"))], "cannot read image"),
    # slides
    "wsi extract over an empty folder": (lambda t, g: extract(t, slides=empty_dir(t)),
                                         "no slide"),
    "wsi extract --tile-size 0": (lambda t, g: extract(t, "--tile-size", "0"), "--tile-size"),
    "wsi extract --tile-size -8": (lambda t, g: extract(t, "--tile-size", "-8"), "--tile-size"),
    "wsi extract --magnification 0": (lambda t, g: extract(t, "--magnification", "0"),
                                      "--magnification must be a positive number"),
    "wsi extract --tile-size 5000": (lambda t, g: extract(t, "--tile-size", "5000"),
                                     "no tile with tissue"),
    "wsi extract --mpp 1000": (lambda t, g: extract(t, "--mpp", "1000"), "no tile with tissue"),
    "wsi extract, a missing slide": (lambda t, g: extract(t, slides=t / "gone.svs"),
                                     "does not exist"),
    "wsi extract, a cohort CSV naming a missing slide": (lambda t, g: extract(
        t, slides=a_file(t, "cohort.csv", f"slide\n{SLIDE}\ngone.svs\n".encode())),
        "cohort.csv line 3: slide gone.svs does not exist"),
    "wsi extract, a cohort CSV without a slide column": (lambda t, g: extract(
        t, slides=a_file(t, "cohort.csv", b"path\na.svs\n")), "needs a 'slide' column"),
    "wsi extract --stale-after 0": (lambda t, g: extract(t, "--stale-after", "0"),
                                    "--stale-after must be a positive number"),
    "wsi pretrain into a finished run": (lambda t, g: ["wsi", "pretrain", "--slides", str(SLIDE),
                                                       "--out", str(g[1]), "--device", "cpu"],
                                         "holds a run"),
    "mil train, labels without slide": (lambda t, g: mil_labels(t, "name,label\na,b\n"),
                                        "needs the columns slide,label"),
    "mil train into a finished run": (lambda t, g: mil_labels(t, "slide,label\na,b\n",
                                                              out=g[1]), "holds a run"),
    "mil evaluate over an earlier evaluation": (lambda t, g: mil_labels(
        t, "slide,label\na,b\n", "evaluate", out=evaluated(t, "predictions.csv")),
        "already holds predictions.csv"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, good, tmp_path, capsys):
    build, says = CASES[case]
    argv = build(tmp_path, good)
    capsys.readouterr()
    code = main(argv)
    text = capsys.readouterr().err
    errors = [line for line in text.splitlines() if "error:" in line]   # (warnings may come too)
    assert code != 0, f"{case}: exit 0"
    assert "Traceback" not in text and len(errors) == 1, f"{case}: {text}"
    assert says in errors[0], f"{case}: {errors[0]!r} does not say {says!r}"
    assert digest(good[1]) == good[2], f"{case} changed the finished run"


def test_the_table_is_large_and_the_docs_count_it():
    assert len(CASES) >= 40
    page = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    said = re.search(r"tests/test_bad_input.py` holds (\d+) bad inputs", page)
    assert said and int(said.group(1)) == len(CASES), "docs/training.md's count is stale"


def test_a_bom_header_is_read(good, tmp_path):
    # Excel writes UTF-8 with a byte-order mark: the first column is still "path"
    folder = labels_folder(tmp_path, good, HEADER + rows(), "utf-8-sig")
    assert len(find_labelled(folder)) == 8


def test_overwrite_replaces_and_resume_continues(good, tmp_path):
    run = copy_run(tmp_path, good)
    before = json.loads((run / "history.json").read_text())
    assert main(ft(tmp_path, good, "--resume", "--epochs", "2", out=run)) == 0
    assert len(json.loads((run / "history.json").read_text())) == len(before) + 1
    assert main(ft(tmp_path, good, "--overwrite", out=run)) == 0
    assert len(json.loads((run / "history.json").read_text())) == 1
    Image.open(images(good)[0][0]).verify()              # the data was never touched


def test_listing_notebooks_reads_their_parameters_without_running_them(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "00_evil.py").write_text(
        "# %% tags=[\"parameters\"]\nseed = 0\nopen(" + repr(str(tmp_path / "ran")) +
        ", 'w')\n")
    assert main(["tutorial", "--list", "--notebooks-dir", str(folder)]) != 0
    assert not (tmp_path / "ran").exists(), "a parameters cell was executed"
    assert "only `name = literal` lines" in capsys.readouterr().err
