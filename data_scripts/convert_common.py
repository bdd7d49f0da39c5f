"""What every converter shares: its error, its rows, finding images and placing them.

The converters (`convert.py`, `convert_families.py`) unpack verified source files into a
scratch folder, find the images in it and move each into the toolkit layout
`<out>/<split>/<label>/<name>`. The pieces they all use live here, so that neither converter
module imports the other:

    ConvertError           the source files do not have the structure a converter expects
    Row                    one image of the layout: {'path', 'label', 'split', ...}
    IMAGE_EXTS             the file suffixes counted as images
    visible_images(tree)   the images of an unpacked tree, macOS junk (`.*`, __MACOSX) left out
    place_image(...)       move one image into the layout; an exact duplicate is dropped
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

IMAGE_EXTS = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
Row = dict[str, str]


class ConvertError(Exception):
    """The source files do not have the structure the converter expects."""


def visible_images(tree: Path) -> Iterator[Path]:
    """The image files under `tree`, sorted, none inside a hidden or __MACOSX folder."""
    for f in sorted(tree.rglob("*")):
        rel = f.relative_to(tree).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in rel):
            continue
        if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
            yield f


def place_image(src: Path, out: Path, split: str, label: str) -> str | None:
    """Move `src` to out/split/label/<name>; return its relative path (None: exact duplicate)."""
    folder = out / split / label
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.name
    n = 0
    while target.exists():
        if target.stat().st_size == src.stat().st_size and target.read_bytes() == src.read_bytes():
            src.unlink()
            return None
        n += 1
        target = folder / f"{src.stem}-dup{n}{src.suffix}"
    shutil.move(src, target)
    return target.relative_to(out).as_posix()
