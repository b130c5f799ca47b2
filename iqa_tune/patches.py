"""Patches from the decoded-image cache: image-grouped training batches and fixed evaluation crops.

Crops are slices of the memory-mapped cache (no decoding); batches travel as uint8 and are normalised in torch
on the target device, because converting each patch to float in numpy costs ~12x the crop itself.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .backbones import IMAGENET_MEAN, IMAGENET_STD
from .cache import ImageCache

try:  # the compiled crop kernel (setup.py builds it where it can; see crop)
    from . import _gather
except ImportError:
    _gather = None


@dataclass
class PatchBatch:
    pixels: torch.Tensor  # uint8 (B, P, P, 3)
    labels: torch.Tensor  # float32 (B,)
    image: torch.Tensor  # int64 (B,): position of the image in its split (groups patches for image metrics)
    flips: torch.Tensor | None = None  # int64 positions of the patches to mirror, done on the device by Normalizer


def crop_offsets(cache: ImageCache, img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each crop starts in the cache (the byte of its top-left pixel) and its row stride in bytes (its image's
    width x 3): the crop's rows are evenly spaced from there."""
    off, _, w = cache.index[img].T
    stride = w * 3
    return off + ys * stride + xs * 3, stride


def crop(cache: ImageCache, img: np.ndarray, ys: np.ndarray, xs: np.ndarray, patch: int,
         pin: bool = False) -> torch.Tensor:
    """The crops as one uint8 (B, P, P, 3) tensor.

    A batch's crops are B x P rows of P x 3 bytes in the cache, evenly spaced within each crop. The compiled
    kernel (``iqa_tune/_gather.c``, built at install where a C compiler is present) copies them with one
    ``memcpy`` per row, without the GIL, straight into the batch's tensor. With ``pin`` (training on a GPU) that
    tensor is page-locked, so the host-to-device copy can start at once with no staging copy. Without the kernel,
    a numpy fancy index on :meth:`ImageCache.rows` gathers them (1.2-1.5x slower in the data bench: numpy's
    per-row overhead), and the pinned path writes crop by crop instead. ``torch.index_select`` on the same view
    gathers faster on its threads, but from the prefetch thread those threads fight the model's for the cores (a
    2-thread CPU epoch took 72 s against 52). Rows stay contiguous: mirroring here cost half the crop's time, so
    flips happen after the transfer (:class:`Normalizer`)."""
    kernel = _gather  # read once: numpy_crops() may swap the global between two reads
    shape = (len(img), patch, patch, 3)
    first, stride = crop_offsets(cache, img, ys, xs)
    if kernel is None and not pin:
        starts = (first[:, None] + np.arange(patch)[None, :] * stride[:, None]).reshape(-1)
        return torch.from_numpy(cache.rows(patch * 3)[starts].view(np.uint8)).view(shape)
    # not torch.empty when unpinned: glibc hands numpy the last batch's freed block back, where torch's allocator
    # took fresh pages from the kernel (280-700 page faults per 224 px batch, measured: a third of the time)
    out = torch.empty(shape, dtype=torch.uint8, pin_memory=True) if pin else torch.from_numpy(np.empty(shape, np.uint8))
    if kernel is not None:
        kernel.crops(cache.pixels, first.astype(np.int64), stride.astype(np.int64), patch, patch * 3, out.numpy())
        return out
    dst = out.numpy()
    for k in range(len(img)):
        dst[k] = cache.image(img[k])[ys[k]:ys[k] + patch, xs[k]:xs[k] + patch]
    return out


def crop_kernel() -> str:
    """Which gather :func:`crop` uses: ``compiled`` (the C kernel) or ``numpy`` (no compiler at install)."""
    return "numpy" if _gather is None else "compiled"


@contextlib.contextmanager
def numpy_crops():
    """Crop with numpy inside the block even where the kernel is built: the bench's and tests' comparison. It swaps
    a module global, so it is for a single-threaded caller with no prefetch thread running."""
    global _gather
    saved, _gather = _gather, None
    try:
        yield
    finally:
        _gather = saved


def random_offsets(cache: ImageCache, img: np.ndarray, patch: int, rng: np.random.Generator):
    h, w = cache.index[img, 1], cache.index[img, 2]
    return (rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1))


def fixed_offsets(cache: ImageCache, img: np.ndarray, paths: list[str], patch: int, n: int):
    """The same ``n`` crops of an image in every epoch and every trial: seeded by the image's path."""
    ys, xs = [], []
    for i in img:
        rng = np.random.default_rng([zlib.crc32(paths[i].encode()), patch, n])
        h, w = cache.index[i, 1], cache.index[i, 2]
        ys.append(rng.integers(0, h - patch + 1, size=n))
        xs.append(rng.integers(0, w - patch + 1, size=n))
    return np.concatenate(ys), np.concatenate(xs)


class TrainPatches:
    """One epoch of training batches: ``train_patches`` random crops of each image, kept together in groups of
    ``patches_per_image``, groups shuffled, ``batch_size // patches_per_image`` groups per batch. 1 patch per
    image is the reference's fully shuffled patches; >= 2 lets the image-level ranking loss average an image
    within a batch. Keyword names follow the config (``data.*`` and ``train.*``)."""

    def __init__(self, cache: ImageCache, indices: np.ndarray, scores: np.ndarray, *, patch_size: int,
                 train_patches: int, patches_per_image: int, batch_size: int, flip: bool):
        self.cache, self.indices, self.scores = cache, indices, scores
        self.patch_size, self.train_patches, self.patches_per_image = patch_size, train_patches, patches_per_image
        self.batch_size, self.flip = batch_size, flip

    def __len__(self) -> int:
        return len(self._sizes())

    def _sizes(self) -> list[int]:
        """Groups per batch. A last batch of a single patch is dropped: batch norm cannot train on it."""
        groups = len(self.indices) * (self.train_patches // self.patches_per_image)
        per_batch = self.batch_size // self.patches_per_image
        sizes = [per_batch] * (groups // per_batch) + ([groups % per_batch] if groups % per_batch else [])
        if len(sizes) > 1 and sizes[-1] * self.patches_per_image < 2:
            sizes.pop()
        return sizes

    def plan(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Positions (into ``indices``) of each batch's patches, grouped by image."""
        group = self.patches_per_image
        groups = np.repeat(np.arange(len(self.indices)), self.train_patches // group)
        groups = groups[rng.permutation(len(groups))]
        starts = np.cumsum([0, *self._sizes()])
        return [np.repeat(groups[a:b], group) for a, b in zip(starts, starts[1:])]

    def batches(self, seed: int, epoch: int, pin: bool = False) -> Iterator[PatchBatch]:
        rng = np.random.default_rng([seed, epoch])  # a function of (seed, epoch): a resumed run repeats it
        for pos in self.plan(rng):
            img = self.indices[pos]
            ys, xs = random_offsets(self.cache, img, self.patch_size, rng)
            flips = torch.from_numpy(np.flatnonzero(rng.random(len(img)) < 0.5)) if self.flip else None
            yield PatchBatch(crop(self.cache, img, ys, xs, self.patch_size, pin),
                             torch.from_numpy(self.scores[img].astype(np.float32)), torch.from_numpy(pos), flips)


class EvalPatches:
    """The fixed crops of an evaluation set (val, test, training images scored like test, a cross-dataset set), in
    batches; patch k belongs to image ``image[k]``, and image i's crops are patches i x test_patches onwards."""

    def __init__(self, cache: ImageCache, indices: np.ndarray, scores: np.ndarray, paths: list[str], *,
                 patch_size: int, test_patches: int, batch_size: int):
        self.cache, self.scores, self.patch_size, self.batch_size = cache, scores, patch_size, batch_size
        self.indices, self.test_patches = indices, test_patches
        self.paths = [paths[i] for i in indices]  # the set's images, in its order
        self.image = np.repeat(np.arange(len(indices)), test_patches)
        self.ys, self.xs = fixed_offsets(cache, indices, paths, patch_size, test_patches)

    @property
    def labels(self) -> np.ndarray:
        return self.scores[self.indices]

    def batches(self, pin: bool = False) -> Iterator[PatchBatch]:
        for s in range(0, len(self.image), self.batch_size):
            pos = self.image[s:s + self.batch_size]
            img = self.indices[pos]
            yield PatchBatch(crop(self.cache, img, self.ys[s:s + len(pos)], self.xs[s:s + len(pos)], self.patch_size,
                                  pin), torch.from_numpy(self.scores[img].astype(np.float32)), torch.from_numpy(pos))


def prefetch(it: Iterator[PatchBatch], depth: int = 2) -> Iterator[PatchBatch]:
    """Build the next batches in a thread while the model runs on the current one. When the consumer stops
    early (an error, a benchmark's cut-off), the producer stops too instead of waiting forever on a full queue."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for b in it:
                if not put(b):
                    return
        except BaseException as e:  # hand the error to the consumer
            put(e)
        put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class Normalizer:
    """uint8 NHWC -> normalised float NCHW on the device (optionally channels_last).

    The permute happens on the uint8 batch, then one float conversion and in-place arithmetic: 3.3x faster on a
    CPU than normalising the permuted float view (43 vs 142 ms for 96 patches of 224, 2 cores). ``mean`` and
    ``std`` are per channel for inputs in [0, 1]: the backbone registry's (ImageNet's, or 0.5 for EfficientNet-Lite).
    """

    def __init__(self, device: torch.device, channels_last: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
        self.channels_last = channels_last

    def __call__(self, pixels: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        x = pixels.to(self.device, non_blocking=True)
        if flips is not None and len(flips):
            # mirrored on the uint8 batch, where it is cheapest; integer positions, so no host-device sync
            at = flips.to(self.device, non_blocking=True)
            x[at] = x[at].flip(2)
        x = x.permute(0, 3, 1, 2)
        # channels_last: the NHWC bytes already are that layout; float() keeps it (preserve_format)
        x = x.float() if self.channels_last else x.contiguous().float()
        return x.sub_(self.mean).mul_(self.inv_std)
