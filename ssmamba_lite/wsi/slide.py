"""Reading whole-slide image files: OpenSlide first, tifffile as the fallback.

A whole-slide image is a pyramid: level 0 is the full-resolution scan (W0 x H0 pixels, often
100k x 100k), each further level a downsampled copy. `Slide` hides the library behind three
calls: `size`, `read(x, y, size0, out)` and `thumbnail(max_size)`.

Glossary
    level 0         the full-resolution image, `size` = (W0, H0) pixels
    mpp             microns per pixel at level 0 (None when the file does not record it)
    magnification   objective power of level 0, e.g. 20 for a 20x scan (None when unknown)
    downsample d    level-0 pixels per pixel of a coarser level or of a tile

OpenSlide (openslide-python + the openslide-bin wheel, which ships the C library) reads the
vendor formats (Aperio .svs, Hamamatsu .ndpi, MIRAX, ...). tifffile reads plain and Aperio
TIFFs when OpenSlide refuses them; it decodes one pyramid level into memory at a time, which
is fine for small slides only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


class SlideError(RuntimeError):
    """A slide that cannot be read; the message names the file."""


class Slide:
    """A whole-slide image. `size` = (W0, H0); `read(x, y, size0, out)` -> RGB (out, out, 3).

    backend: "auto" (OpenSlide, else tifffile), "openslide" or "tifffile"."""

    def __init__(self, path, backend: str = "auto"):
        self.path = Path(path)
        if backend not in ("auto", "openslide", "tifffile"):
            raise ValueError(f"Slide: backend must be auto, openslide or tifffile, got {backend!r}")
        if not self.path.is_file():
            raise SlideError(f"slide {self.path} does not exist")
        self._osr, self._tiff_cache, errors = None, {}, []
        if backend in ("auto", "openslide"):
            try:
                self._open_openslide()
                return
            except Exception as err:
                errors.append(f"OpenSlide: {err}")
        if backend in ("auto", "tifffile"):
            try:
                self._open_tifffile()
                return
            except Exception as err:
                errors.append(f"tifffile: {err}")
        raise SlideError(f"cannot read slide {self.path} ({'; '.join(errors)})")

    def _open_openslide(self) -> None:
        import openslide

        self._osr = openslide.OpenSlide(str(self.path))
        props = self._osr.properties
        self.size = tuple(self._osr.dimensions)
        self.mpp = _float(props.get("openslide.mpp-x"))
        self.magnification = _float(props.get("openslide.objective-power"))

    def _open_tifffile(self) -> None:
        import tifffile

        with tifffile.TiffFile(self.path) as tf:
            self._tiff_levels = [(lv.shape[1], lv.shape[0]) for lv in tf.series[0].levels]
            page = tf.pages[0]
            meta = _aperio_metadata(page.description or "")
            res, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
            if "MPP" not in meta and res is not None and unit is not None and unit.value == 3:
                meta["MPP"] = 1e4 * res.value[1] / res.value[0]   # pixels per cm -> µm per pixel
        self.size = self._tiff_levels[0]
        self.mpp = _float(meta.get("MPP"))
        self.magnification = _float(meta.get("AppMag"))

    def _tiff_level(self, level: int) -> np.ndarray:
        if level not in self._tiff_cache:
            import tifffile

            img = tifffile.imread(self.path, series=0, level=level)
            self._tiff_cache = {level: np.dstack([img] * 3) if img.ndim == 2 else img[..., :3]}
        return self._tiff_cache[level]

    def _best_level(self, downsample: float) -> tuple[int, float]:
        """Coarsest pyramid level that is still at least as fine as `downsample`."""
        if self._osr is not None:
            level = self._osr.get_best_level_for_downsample(downsample)
            return level, float(self._osr.level_downsamples[level])
        ds = [self.size[0] / w for w, _ in self._tiff_levels]
        level = max(i for i, d in enumerate(ds) if d <= downsample + 1e-6)
        return level, ds[level]

    def read(self, x: int, y: int, size0: int, out: int) -> np.ndarray:
        """The square of side `size0` level-0 pixels at (x, y), resized to (out, out, 3) uint8."""
        level, ds = self._best_level(size0 / out)
        side = max(1, round(size0 / ds))
        try:
            if self._osr is not None:
                rgba = self._osr.read_region((x, y), level, (side, side))
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                img = img.convert("RGB")
            else:
                xs, ys = round(x / ds), round(y / ds)
                img = Image.fromarray(self._tiff_level(level)[ys:ys + side, xs:xs + side])
        except Exception as err:                                 # a corrupt tile of the file
            raise SlideError(f"cannot read slide {self.path} at ({x}, {y}), level {level}: "
                             f"{err}") from None
        if img.size != (out, out):
            img = img.resize((out, out), Image.BILINEAR)   # Pillow filters the whole footprint:
                                                           # antialiased, as training's resize
        return np.asarray(img)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide with its longest side `max_size` pixels: (h, w, 3) uint8."""
        scale = max_size / max(self.size)
        w, h = max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale))
        if self._osr is not None:
            img = self._osr.get_thumbnail((w, h)).convert("RGB")
        else:
            img = Image.fromarray(self._tiff_level(len(self._tiff_levels) - 1))
        return np.asarray(img.resize((w, h), Image.BILINEAR))

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
        self._tiff_cache = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _aperio_metadata(description: str) -> dict:
    """Aperio's ImageDescription "header|AppMag = 20|MPP = 0.4990|..." -> {"AppMag": "20", ...}."""
    fields = (part.split("=", 1) for part in description.split("|")[1:] if "=" in part)
    return {k.strip(): v.strip() for k, v in fields}


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


DEFAULT_MPP = 0.5      # µm/px: the physical scale tiles are cut at unless told otherwise


def target_downsample(slide: Slide, magnification=None, mpp=None, slide_mpp=None) -> float:
    """d = target µm/px / level-0 µm/px (1 when neither target is given: level 0).

    The level-0 µm/px is the slide's metadata, else `slide_mpp` (what the user knows of a
    file that does not record it); without either, a target in µm/px is an error that says
    what to pass, so mixed 20x / 40x cohorts never end up tiled at different physical scales.
    """
    if magnification is None and mpp is None:
        return 1.0
    for flag, value in (("--magnification", magnification), ("--mpp", mpp),
                        ("--slide-mpp", slide_mpp)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} must be a positive number, got {value}")
    level0 = slide.mpp or slide_mpp
    if mpp is not None:
        if level0 is None:
            raise ValueError(f"slide {slide.path} records no microns per pixel: pass --slide-mpp "
                             f"(its level-0 µm/px, e.g. 0.25 for a 40x scan), or "
                             f"--magnification, or --level0 to tile at full resolution")
        d = mpp / level0
    elif slide.magnification is not None:
        d = slide.magnification / magnification
    elif level0 is not None:
        d = (10.0 / magnification) / level0
    else:
        raise ValueError(f"slide {slide.path} records neither magnification nor microns per "
                         f"pixel: pass --slide-mpp, or --level0 to tile at full resolution")
    if d < 1 - 1e-2:
        raise ValueError(f"slide {slide.path} was scanned at {slide.magnification}x / "
                         f"{level0} µm/px: it cannot be tiled finer (asked for "
                         f"magnification={magnification}, mpp={mpp})")
    return max(d, 1.0)
