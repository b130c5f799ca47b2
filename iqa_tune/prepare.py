"""A dataset made ready for training: catalog -> checked split -> decoded cache, and every input check on them.

Torch-free on purpose: ``iqa-tune train`` reports a broken label file, an unscorable split or an unreadable image
before torch and timm load (seconds), and the solver receives data that has passed every check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import records
from .cache import ImageCache, build_or_open
from .config import RunConfig, cache_root, to_dict
from .datasets import Catalog, check_split, load_catalog, split_catalog, split_record
from .errors import UserError


@dataclass
class PreparedData:
    """A dataset ready for training: its catalog, its decoded cache and its split (indices into the catalog)."""

    catalog: Catalog
    cache: ImageCache
    split: dict[str, np.ndarray]

    def write_run_files(self, out: Path, cfg: RunConfig) -> None:
        """The resolved config and the split, next to a run's results."""
        records.write_run_files(out, to_dict(cfg), split_record(self.catalog, self.split))

    def save_test_predictions(self, path: Path, per_image: np.ndarray, epoch: int) -> None:
        idx = self.split["test"]
        records.save_predictions(path, [self.catalog.paths[i] for i in idx], self.catalog.scores[idx], per_image,
                                 epoch)


def check_sizes(cache: ImageCache, indices: np.ndarray, patch: int, paths: list[str]) -> None:
    small = [i for i in indices if min(cache.index[i, 1], cache.index[i, 2]) < patch]
    if small:
        i = small[0]
        raise UserError(f"{paths[i]}: image is {cache.index[i, 2]}x{cache.index[i, 1]} after resize, smaller than "
                        f"data.patch_size {patch} ({len(small)} such images); raise data.resize or lower patch_size")


def prepare_data(cfg: RunConfig, progress: bool = True) -> PreparedData:
    from .preflight import check_cache_folder

    check_cache_folder(cfg.data)  # the demo dataset and the decoded images go there
    cat = load_catalog(cfg.data)
    split = split_catalog(cat, cfg.data.split)
    check_split(cat, split, cfg.data)  # before decoding: a split that cannot be scored fails in seconds
    resize = cfg.data.resize if cfg.data.resize is not None else cat.resize
    cache = build_or_open(cat, resize, cache_root(cfg.data), progress=progress)
    for idx in split.values():
        check_sizes(cache, idx, cfg.data.patch_size, cat.paths)
    return PreparedData(cat, cache, split)
