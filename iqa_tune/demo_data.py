"""The embedded demo dataset: synthetic distortions of photographs that ship inside scikit-image.

16 photos (15 contents: the two motorcycle views share one), each seen in 3 views (the centre 4:3 crop and two
zoomed 4:3 crops of 60% its width, top left and bottom right) resized to 192x144, then distorted KADID-10k style:
Gaussian blur, white noise, JPEG, contrast loss, pixelation and impulse noise, each at 5 levels, plus the pristine
view: 1488 images. The views of a photo share its content id, so they never straddle splits. The pseudo-MOS of an image is 100 x SSIM (Wang et al.
2004, Gaussian window sigma 1.5, on luminance) against its undistorted photo, the way synthetic sets are labelled
with a full-reference measure. Higher is better, 0-100. Built offline in seconds; splits go by content (``ref``).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .errors import UserError

DEMO_VERSION = "demo-v2"  # v2: 3 views per photo (v1: the centre crop only, 496 images)
SIZE = (192, 144)  # width, height

# (content id, scikit-image loader name, index into a tuple-returning loader)
PHOTOS = [
    ("astronaut", "astronaut", None), ("chelsea", "chelsea", None), ("coffee", "coffee", None),
    ("rocket", "rocket", None), ("hubble", "hubble_deep_field", None), ("retina", "retina", None),
    ("ihc", "immunohistochemistry", None), ("motorcycle", "stereo_motorcycle", 0),
    ("motorcycle", "stereo_motorcycle", 1), ("brick", "brick", None), ("grass", "grass", None),
    ("gravel", "gravel", None), ("camera", "camera", None), ("moon", "moon", None), ("clock", "clock", None),
    ("coins", "coins", None),
]


# (name, fraction of the centre crop's width, horizontal and vertical position of the crop in [0, 1])
VIEWS = [("full", 1.0, 0.5, 0.5), ("zoom_tl", 0.6, 0.0, 0.0), ("zoom_br", 0.6, 1.0, 1.0)]


def photo_pixels(loader: str, index: int | None) -> np.ndarray:
    """One scikit-image photo at its own resolution, as an RGB uint8 array (grey photos repeated on 3 channels)."""
    import skimage.data

    arr = getattr(skimage.data, loader)()
    if index is not None:
        arr = arr[index]
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3].astype(np.uint8)


def photo(loader: str, index: int | None, view: tuple[str, float, float, float] = VIEWS[0]) -> Image.Image:
    """One scikit-image photo as RGB, cropped to 4:3 (the centre, or a zoomed view inside it) and resized to the
    demo's size."""
    im = Image.fromarray(photo_pixels(loader, index))
    w, h = im.size  # centre crop to 4:3, then resize
    cw, ch = (w, round(w * 3 / 4)) if w * 3 / 4 <= h else (round(h * 4 / 3), h)
    left, top = (w - cw) // 2, (h - ch) // 2
    _, scale, fx, fy = view
    vw, vh = round(cw * scale), round(ch * scale)
    left, top = left + round((cw - vw) * fx), top + round((ch - vh) * fy)
    return im.crop((left, top, left + vw, top + vh)).resize(SIZE, Image.BICUBIC)


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _noise(im: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, size=(SIZE[1], SIZE[0], 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _impulse(im: Image.Image, density: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im).copy()
    hit = rng.random(a.shape[:2]) < density
    a[hit] = np.where(rng.random((int(hit.sum()), 1)) < 0.5, 0, 255)
    return Image.fromarray(a)


def _contrast(im: Image.Image, factor: float) -> Image.Image:
    a = np.asarray(im, dtype=np.float32)
    return Image.fromarray(np.clip((a - a.mean()) * factor + a.mean(), 0, 255).astype(np.uint8))


def _pixelate(im: Image.Image, factor: float) -> Image.Image:
    small = im.resize((max(1, round(SIZE[0] / factor)), max(1, round(SIZE[1] / factor))), Image.BOX)
    return small.resize(SIZE, Image.NEAREST)


# distortion name -> (function(image, level value, rng), 5 levels from mild to severe)
DISTORTIONS = {
    "blur": (lambda im, v, rng: im.filter(ImageFilter.GaussianBlur(v)), [0.5, 1.0, 1.5, 2.5, 4.0]),
    "noise": (_noise, [4, 8, 14, 24, 40]),
    "jpeg": (lambda im, v, rng: _jpeg(im, v), [40, 20, 12, 7, 3]),
    "contrast": (lambda im, v, rng: _contrast(im, v), [0.8, 0.6, 0.45, 0.3, 0.2]),
    "pixelate": (lambda im, v, rng: _pixelate(im, v), [1.5, 2.0, 3.0, 4.0, 6.0]),
    "impulse": (_impulse, [0.01, 0.03, 0.06, 0.1, 0.16]),
}


def pseudo_mos(reference: Image.Image, distorted: Image.Image) -> float:
    """100 x SSIM on luminance (Gaussian window, sigma 1.5) against the pristine photo."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference.convert("L"), dtype=np.float64) / 255
    dist = np.asarray(distorted.convert("L"), dtype=np.float64) / 255
    ssim = structural_similarity(ref, dist, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return round(100 * max(ssim, 0.0), 3)


def _check_target(out: Path) -> None:
    """The demo dataset is a folder of its own: refuse a file, or a folder holding something else, by path."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: a file; the demo dataset is a folder (images/ and labels.csv): give a new or "
                        "empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out}: a folder that holds other files; the demo dataset needs a new or empty folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{out}: {parent} is a file, not a folder")
            break


def build_demo(out: Path, progress: bool = False) -> Path:
    """Write the demo dataset to ``out`` (images/ + labels.csv); does nothing if it is already there."""
    out = Path(out)
    if (out / "labels.csv").is_file():
        return out
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable by every user's trials
    try:
        (tmp / "images").mkdir()
        rows = []
        rng = np.random.default_rng(0)
        for k, (ref, loader, index) in enumerate(PHOTOS):
            for v, view in enumerate(VIEWS):
                pristine = photo(loader, index, view)
                stem = f"{k:02d}_{ref}_{view[0]}"
                pristine.save(tmp / "images" / f"{stem}_pristine.png")
                rows.append((v, f"images/{stem}_pristine.png", 100.0, ref, "pristine", 0))
                for name, (fn, levels) in DISTORTIONS.items():
                    for level, value in enumerate(levels, start=1):
                        im = fn(pristine, value, rng)
                        path = f"images/{stem}_{name}_{level}.png"
                        im.save(tmp / path)
                        rows.append((v, path, pseudo_mos(pristine, im), ref, name, level))
        # listed view by view, photos in order within each: the first N rows (data.limit) span many contents
        rows = [row[1:] for row in sorted(rows, key=lambda row: row[0])]
        with open(tmp / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "score", "ref", "distortion", "level"])
            w.writerows(rows)
        try:
            tmp.rename(out)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "labels.csv").is_file():  # or something else took the place: never claim a build
                _check_target(out)
                raise UserError(f"{out}: could not put the demo dataset there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
