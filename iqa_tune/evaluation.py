"""The evaluation forward, shared by :meth:`iqa_tune.solver.Solver.evaluate` and by scoring (``iqa-tune predict``,
``iqa_tune.load``, ``iqa-tune export``): fixed crops in, one prediction per crop out.

One copy of it, so that a model scored after its study cannot differ from the figures its study reported through a
second copy of the preprocessing: both sides cut the crops with :class:`iqa_tune.patches.EvalPatches` (offsets
seeded by each image's path), normalise them with :class:`iqa_tune.patches.Normalizer` and run the model under
the autocast of :func:`autocast_for`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from .cache import ImageCache
from .patches import Normalizer, PatchBatch, prefetch


def flush_subnormals() -> None:
    """Compute subnormal floats as zero in this process, on the CPU (it changes nothing on a GPU). Fine-tuning at a
    low lr breeds them in the backward pass (about 1% of the demo backbone's nonzero gradient values; none stored
    in its weights or Adam's moments), and x86 CPUs take many times longer on them: the demo's lr 1e-4 epochs ran
    2.2x faster by epoch 3 with bit-identical metrics (``iqa-tune bench --only denormal``). The solver and the
    scorer both call it, so a scorer computes as the solver that evaluated the model did."""
    torch.set_flush_denormal(True)


def autocast_for(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The forward pass's autocast for ``train.precision`` (fp32: none)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext


@torch.no_grad()
def crop_predictions(forward: Callable[[torch.Tensor], torch.Tensor], normalize: Normalizer,
                     autocast: Callable[[], AbstractContextManager], batches: Iterable[PatchBatch]) -> np.ndarray:
    """Every crop's prediction (float32, in the batches' order), the batches cut in a thread meanwhile. The model
    must be in eval mode."""
    preds = [np.zeros(0, np.float32)]
    for batch in prefetch(iter(batches)):
        with autocast():
            preds.append(forward(normalize(batch.pixels)).float().cpu().numpy())
    return np.concatenate(preds)


def memory_cache(images: list[np.ndarray]) -> ImageCache:
    """Decoded images (uint8 (H, W, 3) each) as an :class:`ImageCache` in memory, so the evaluation's crops
    (:class:`iqa_tune.patches.EvalPatches`) cut images that are in no catalog exactly as they cut a split's."""
    sizes = [a.size for a in images]
    offsets = np.cumsum([0, *sizes[:-1]]) if images else np.zeros(0, np.int64)
    index = np.array([(o, a.shape[0], a.shape[1]) for o, a in zip(offsets, images)], np.int64).reshape(-1, 3)
    pixels = np.concatenate([a.reshape(-1) for a in images]) if images else np.zeros(0, np.uint8)
    return ImageCache(None, pixels, index, len(images))
