"""A dataset made ready for training: catalog -> checked split -> decoded cache, and every input check on them.

Torch-free on purpose: ``iqa-tune train`` reports a broken label file, an unscorable split or an unreadable image
before torch and timm load (seconds), and the solver receives data that has passed every check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cache import ImageCache, build_or_open
from .config import RunConfig, cache_root
from .datasets import Catalog, check_split, load_catalog, split_catalog
from .errors import UserError


@dataclass
class PreparedData:
    """A dataset ready for training: its catalog, its decoded cache and its split (indices into the catalog)."""

    catalog: Catalog
    cache: ImageCache
    split: dict[str, np.ndarray]


def check_sizes(cache: ImageCache, indices: np.ndarray, patch: int, paths: list[str]) -> None:
    small = [i for i in indices if min(cache.index[i, 1], cache.index[i, 2]) < patch]
    if small:
        i = small[0]
        raise UserError(f"{paths[i]}: image is {cache.index[i, 2]}x{cache.index[i, 1]} after resize, smaller than "
                        f"data.patch_size {patch} ({len(small)} such images); raise data.resize or lower patch_size")


def prepare_data(cfg: RunConfig, progress: bool = True) -> PreparedData:
    cat = load_catalog(cfg.data)
    split = split_catalog(cat, cfg.data.split)
    check_split(cat, split, cfg.data)  # before decoding: a split that cannot be scored fails in seconds
    resize = cfg.data.resize if cfg.data.resize is not None else cat.resize
    cache = build_or_open(cat, resize, cache_root(cfg.data), progress=progress)
    for idx in split.values():
        check_sizes(cache, idx, cfg.data.patch_size, cat.paths)
    return PreparedData(cat, cache, split)
