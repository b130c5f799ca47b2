"""A dataset made ready for training: catalog -> checked split -> decoded cache, and every input check on them.

Torch-free on purpose: ``iqa-tune train`` reports a broken label file, an unscorable split or an unreadable image
before torch and timm load (seconds), and the solver receives data that has passed every check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import records
from .cache import ImageCache, build_or_open
from .config import DataConfig, ExtraTestConfig, RunConfig, cache_root, to_dict
from .datasets import MIN_EVAL, Catalog, check_split, load_catalog, split_catalog, split_record, train_eval_subset
from .errors import UserError


@dataclass
class ExtraTest:
    """A cross-dataset test set ready for scoring: all its images, on its own cache."""

    key: str  # its evaluation set's name: xtest_<name>
    catalog: Catalog
    cache: ImageCache
    test_patches: int


@dataclass
class PreparedData:
    """A dataset ready for training: its catalog, its decoded cache and its split (indices into the catalog), the
    training images scored like test (``train_eval``, indices into the catalog) and the cross-dataset test sets."""

    catalog: Catalog
    cache: ImageCache
    split: dict[str, np.ndarray]
    train_eval: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    extra: list[ExtraTest] = field(default_factory=list)

    def write_run_files(self, out: Path, cfg: RunConfig) -> None:
        """The resolved config and the split (with the train-eval subset and the extra test sets), next to a run's
        results."""
        record = split_record(self.catalog, self.split)
        record["train_eval"] = [self.catalog.paths[i] for i in self.train_eval]
        record["extra_tests"] = {x.key: {"dataset": x.catalog.name, "root": str(x.catalog.root),
                                         "images": len(x.catalog)} for x in self.extra}
        records.write_run_files(out, to_dict(cfg), record)

    def save_test_predictions(self, path: Path, per_image: np.ndarray, epoch: int) -> None:
        idx = self.split["test"]
        records.save_predictions(path, [self.catalog.paths[i] for i in idx], self.catalog.scores[idx], per_image,
                                 epoch)


def check_sizes(cache: ImageCache, indices: np.ndarray, patch: int, paths: list[str],
                resize_key: str = "data.resize") -> None:
    small = [i for i in indices if min(cache.index[i, 1], cache.index[i, 2]) < patch]
    if small:
        i = small[0]
        raise UserError(f"{paths[i]}: image is {cache.index[i, 2]}x{cache.index[i, 1]} after resize, smaller than "
                        f"data.patch_size {patch} ({len(small)} such images); raise {resize_key} or lower patch_size")


@contextmanager
def _naming_entry(i: int) -> Iterator[None]:
    """Errors about ``data.extra_tests[i]`` name it: ``data.root: ...`` becomes ``data.extra_tests[i].root: ...``,
    anything else (a label file's row) is prefixed with the entry."""
    try:
        yield
    except UserError as e:
        text, entry = str(e), f"data.extra_tests[{i}]"
        raise UserError(entry + text[4:] if text.startswith("data.") else f"{entry}: {text}") from None


def _as_data_config(x: ExtraTestConfig, d: DataConfig) -> DataConfig:
    """An extra test set as the adapters read a dataset (the run's cache folder)."""
    return DataConfig(dataset=x.dataset, root=x.root, label=x.label, csv_file=x.csv_file, columns=x.columns,
                      resize=x.resize, cache_dir=d.cache_dir, limit=x.limit)


def extra_catalogs(d: DataConfig) -> list[Catalog]:
    """Every ``data.extra_tests`` entry's catalog, its labels read and checked (no decoding): a missing root,
    an unreadable label file or too few distinct scores is a :class:`UserError` naming the entry's key path."""
    out = []
    for i, x in enumerate(d.extra_tests):
        with _naming_entry(i):
            cat = load_catalog(_as_data_config(x, d))
            if len(np.unique(cat.scores)) < MIN_EVAL:
                raise UserError(f"{cat.label_file}: {len(cat)} image(s) with {len(np.unique(cat.scores))} distinct "
                                f"score(s); scoring it needs at least {MIN_EVAL} distinct scores")
        out.append(cat)
    return out


def _extra_tests(cfg: RunConfig, catalogs: list[Catalog], progress: bool) -> list[ExtraTest]:
    d, out = cfg.data, []
    for i, (x, cat) in enumerate(zip(d.extra_tests, catalogs)):
        with _naming_entry(i):
            cache = build_or_open(cat, x.resize if x.resize is not None else cat.resize, cache_root(d), progress)
            check_sizes(cache, np.arange(len(cat)), d.patch_size, cat.paths, f"data.extra_tests[{i}].resize")
        out.append(ExtraTest(f"xtest_{x.key}", cat, cache, x.test_patches or d.test_patches))
    return out


def prepare_data(cfg: RunConfig, progress: bool = True) -> PreparedData:
    extra = extra_catalogs(cfg.data)  # labels first: a broken extra set fails before the main set is decoded
    cat = load_catalog(cfg.data)
    split = split_catalog(cat, cfg.data.split)
    check_split(cat, split, cfg.data)  # before decoding: a split that cannot be scored fails in seconds
    resize = cfg.data.resize if cfg.data.resize is not None else cat.resize
    cache = build_or_open(cat, resize, cache_root(cfg.data), progress=progress)
    for idx in split.values():
        check_sizes(cache, idx, cfg.data.patch_size, cat.paths)
    n = cfg.data.train_eval_images
    train_eval = train_eval_subset(split["train"], len(split["test"]) if n is None else n)
    return PreparedData(cat, cache, split, train_eval, _extra_tests(cfg, extra, progress))
