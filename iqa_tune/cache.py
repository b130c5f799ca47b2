"""Decode-once image cache: every image decoded and resized once into one flat uint8 file, memory-mapped.

The reference decodes the full image once per patch, 25 times per image per epoch. Here an image is decoded once
per (dataset, resize) for all runs, and crops come from memory. The file is mapped read-only, so concurrent
trials on one machine share one copy in the page cache. A cache is built in a temporary folder and renamed into
place, so two processes building the same cache never see a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from .datasets import Catalog
from .errors import UserError

CACHE_FORMAT = 2  # 2: keyed on KEY_FIELDS (1: size and whole-second mtime)


def target_size(w: int, h: int, resize: list[int] | int | None) -> tuple[int, int]:
    if resize is None:
        return w, h
    if isinstance(resize, int):
        scale = resize / min(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))
    return int(resize[0]), int(resize[1])


def _wide_to_8bit(im: Image.Image, path: Path) -> np.ndarray:
    """Grayscale wider than 8 bits as uint8: 16-bit values / 257, floats in [0, 1] x 255 (or [0, 255] as is).

    ``convert("RGB")`` clips these to 0..255 instead of scaling, so a mid-gray 16-bit image comes out white.
    """
    a = np.asarray(im).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255
    elif im.mode == "F" and lo >= 0 and hi <= 255:
        pass
    elif im.mode != "F" and lo >= 0 and hi <= 65535:  # I;16*, and 32-bit I holding 16-bit data (older PNGs)
        a = a / 257
    else:
        raise UserError(f"{path}: {im.mode} image with values {lo:g}..{hi:g}: unknown range (expected 16-bit "
                        f"0..65535, or floats in 0..1); convert it to 8 or 16 bits")
    return np.round(a).astype(np.uint8)


def to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """Any PIL mode as 8-bit RGB; alpha is dropped (its colour channels kept), palettes expanded."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_wide_to_8bit(im, path), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
    elif im.mode == "PA":
        im = im.convert("RGBA")
    return im.convert("RGB")


def resized(im: Image.Image, resize: list[int] | int | None, path: Path | str = "image") -> np.ndarray:
    """An opened image as RGB uint8 (H, W, 3), resized bilinearly as the reference does (``path`` names it in
    errors). What the cache stores, and what ``iqa-tune predict`` scores."""
    im = to_rgb(im, Path(path))
    size = target_size(*im.size, resize)
    if size != im.size:
        im = im.resize(size, Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def decode(path: Path, resize: list[int] | int | None) -> np.ndarray:
    """RGB uint8 (H, W, 3), resized bilinearly as the reference does; errors name the file."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            return resized(im, resize, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: unreadable or truncated image ({e})") from None


@dataclass
class ImageCache:
    """All images of a catalog as one read-only memory map; ``image(i)`` is a zero-copy (H, W, 3) view."""

    folder: Path
    pixels: np.ndarray  # flat uint8 memmap
    index: np.ndarray  # (N, 3) int64: offset, height, width
    decoded: int  # images decoded to build it in this process (0 when it was reused)

    def image(self, i: int) -> np.ndarray:
        off, h, w = self.index[i]
        return self.pixels[off:off + h * w * 3].reshape(h, w, 3)

    def rows(self, width: int) -> np.ndarray:
        """Every run of ``width`` bytes in the cache, as a zero-copy, read-only 1-D view whose items are
        ``width``-byte voids with stride 1: item k starts at byte k. One fancy index on it gathers any set of image
        rows, which is how :func:`iqa_tune.patches.crop` cuts a whole batch in one call when the compiled kernel is
        missing. Void items copy one ``memcpy`` each: 1.3-1.5x a (rows, width) uint8 view's fancy index."""
        view = np.ndarray((len(self.pixels) - width + 1,), np.dtype((np.void, width)), buffer=self.pixels,
                          strides=(1,))
        view.flags.writeable = False  # whatever the map's mode: crops never write to the cache
        return view

    def __len__(self) -> int:
        return len(self.index)

    def record(self) -> dict:
        """How this run's pixels were found, for its records: the cache folder, the key fields that matched, and
        whether this process decoded the images (False: an existing cache matched every file's stamp)."""
        return {"folder": str(self.folder), "key": "+".join(KEY_FIELDS), "decoded_here": self.decoded > 0}


# what identifies an image's bytes in the cache key, recorded with every run (split.json, "cache"): a rewrite
# changes the change time (ctime, which no tool can set back) and, unless a tool sets it back, the mtime, both in
# nanoseconds; a file replaced by another (a rename over it) changes the inode. Not a content hash: it would read
# every image at every trial start (the figure is in the README's performance section)
KEY_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


def file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def cache_key(cat: Catalog, resize) -> str:
    """Names the cache of (catalog, resize): the paths, and each file's :data:`KEY_FIELDS`."""
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_FORMAT, cat.name, str(cat.root), resize, cat.paths]).encode())
    for p in cat.paths:
        h.update(file_stamp(cat.root / p).encode())
    return h.hexdigest()[:16]


def _open(folder: Path, decoded: int) -> ImageCache:
    index = np.load(folder / "index.npy")
    pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r")
    return ImageCache(folder, pixels, index, decoded)


def build_or_open(cat: Catalog, resize, root: Path, progress: bool = True, workers: int | None = None) -> ImageCache:
    """Open the cache for (catalog, resize) under ``root``, building it first if needed, decoding in ``workers``
    threads (default: one per core)."""
    folder = root / "images" / f"{cat.name}-{cache_key(cat, resize)}"
    if (folder / "index.npy").is_file():
        return _open(folder, 0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable by every user's trials
    try:
        index = _write(cat, resize, tmp / "pixels.u8", progress, workers or os.cpu_count() or 2)
        np.save(tmp / "index.npy", index)
        (tmp / "meta.json").write_text(json.dumps(
            {"dataset": cat.name, "root": str(cat.root), "resize": resize, "images": len(cat),
             "paths": cat.paths}, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(folder, len(cat))


def _write(cat: Catalog, resize, out: Path, progress: bool, workers: int) -> np.ndarray:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    index = np.zeros((len(cat), 3), dtype=np.int64)
    offset = 0
    # PIL releases the GIL while decoding and resizing: threads decode on every core, and the write stays in order
    with ThreadPoolExecutor(max_workers=workers) as pool, open(out, "wb") as f, Progress(
            TextColumn(f"decoding {cat.name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            disable=not progress, transient=True) as bar:
        task = bar.add_task("decode", total=len(cat))
        for i, arr in enumerate(pool.map(lambda p: decode(cat.root / p, resize), cat.paths)):
            f.write(arr.tobytes())
            index[i] = (offset, arr.shape[0], arr.shape[1])
            offset += arr.size
            bar.advance(task)
    return index
