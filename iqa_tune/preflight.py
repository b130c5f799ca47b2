"""Checks that ``validate`` shares with ``train`` and ``run``: whatever ``validate`` accepts must not fail later
for a reason it could have checked.

The schema (:mod:`iqa_tune.config`) checks each value on its own; the checks here need the world around it: the
folders a run writes into, the backbone timm builds from ``model.backbone`` and ``model.backbone_kwargs`` (built
on the meta device: shapes only, no memory, no weights). ``train`` meets the same checks before it decodes or
builds anything, so both commands refuse the same config with the same line. The data is read as far as
``train`` reads it before decoding (label file, split, image headers) where it is on this machine: a space may
name data that only a cluster's nodes hold.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache
from pathlib import Path

from .backbones import BACKBONES
from .config import DataConfig, ModelConfig, RunConfig, cache_root
from .errors import UserError


def check_folder(path: str | os.PathLike, key: str) -> Path:
    """``path`` is a folder this process can write into, or one it can create: no part of it is a file."""
    p = Path(path).expanduser()
    existing = next(q for q in (p, *p.parents) if q.exists())
    if not existing.is_dir():
        what = f"{p}: {existing} is a file" if existing != p else f"{p} is a file"
        raise UserError(f"{key}: {what}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}: no permission to write into {existing}")
    return p


def cache_key_name(cfg: DataConfig) -> str:
    """Which setting names the decoded-image cache: data.cache_dir, else the environment variable."""
    return "data.cache_dir" if cfg.cache_dir else ("$IQA_TUNE_CACHE" if os.environ.get("IQA_TUNE_CACHE")
                                                   else "data.cache_dir (default ~/.cache/iqa-tune)")


def check_cache_folder(cfg: DataConfig) -> None:
    """The folders the data step writes into: the cache, and the demo's data.root (built there on first use)."""
    check_folder(cache_root(cfg), cache_key_name(cfg))
    if cfg.dataset == "demo" and cfg.root:
        check_folder(cfg.root, "data.root")


# ----------------------------------------------------------------------------------------------------------------
# the model


def _needs_build(m: ModelConfig) -> bool:
    """A registry entry with its own kwargs is known to build (the tests build every entry, frozen or not);
    anything else is built here once."""
    return bool(m.backbone_kwargs) or m.backbone not in BACKBONES


def check_model(m: ModelConfig, patch_size: int) -> None:
    """HyperIQA with this backbone builds, and its backbone takes a batch of ``patch_size`` patches: built on the
    meta device (shapes only), so a Swin costs a fraction of a second. timm's own message names the problem."""
    _check_weights(m)
    if not _needs_build(m):
        return
    slim = {k: v for k, v in dataclasses.asdict(m).items() if k not in ("pretrained", "checkpoint", "dropout", "dropout_layers")}
    _check_model(json.dumps(slim, sort_keys=True, default=str), patch_size)


def _check_weights(m: ModelConfig) -> None:
    """Weights that cannot exist: a checkpoint file that is not there, or pretrained weights for a registry entry
    whose widths are its own (the micro and nano test configurations)."""
    if m.checkpoint:
        if not Path(m.checkpoint).expanduser().is_file():
            raise UserError(f"model.checkpoint: no such file: {Path(m.checkpoint).expanduser()}")
        return
    entry = BACKBONES.get(m.backbone)
    if m.pretrained and entry is not None and entry.kwargs and not entry.offline_weights:
        raise UserError(f"model.pretrained: {m.backbone} is a test configuration with widths of its own; no "
                        f"pretrained weights fit it: set model.pretrained: false, or use {entry.timm_name}")


@lru_cache(maxsize=256)
def _check_model(key: str, patch_size: int) -> None:
    import torch

    from .model import HyperIQA, build_backbone

    cfg = ModelConfig(**json.loads(key))
    try:
        with torch.device("meta"):
            model = HyperIQA(build_backbone(cfg), cfg)
            model.backbone(torch.empty(2, 3, patch_size, patch_size))
    except UserError:
        raise
    except Exception as e:  # timm's and torch's messages say what does not fit; the key paths say where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        keys = "model.backbone, model.backbone_kwargs" if cfg.backbone_kwargs else "model.backbone"
        raise UserError(f"{keys}, data.patch_size: {_model_name(cfg)} does not build, or does not take "
                        f"{patch_size}x{patch_size} patches: {first}") from None


def _model_name(cfg: ModelConfig) -> str:
    return f"{cfg.backbone} with {cfg.backbone_kwargs}" if cfg.backbone_kwargs else cfg.backbone


# ----------------------------------------------------------------------------------------------------------------
# the data: label file, split and image sizes, nothing decoded


def data_here(d: DataConfig) -> bool:
    """Whether the dataset is on this machine (a space may name data that only a cluster's nodes hold; the demo
    counts once built)."""
    from .datasets import dataset_root

    try:
        root = dataset_root(d)
    except UserError:
        return d.dataset != "demo"  # no data.root for a dataset that needs one: load_catalog says so
    return (root / "labels.csv").is_file() if d.dataset == "demo" else root.is_dir()


def _data_key(d: DataConfig) -> str:
    skip = ("patch_size", "train_patches", "test_patches", "flip", "split")
    return json.dumps({k: v for k, v in dataclasses.asdict(d).items() if k not in skip}, sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _catalog(key: str):
    from .config import from_dict
    from .datasets import load_catalog

    return load_catalog(from_dict(DataConfig, json.loads(key)))


@lru_cache(maxsize=16)
def _header_sizes(root: str, paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(width, height) of every image from its header (PIL reads no pixels for this)."""
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(Path(root) / p) as im:
                out.append(im.size)
        except (OSError, ValueError) as e:
            raise UserError(f"{Path(root) / p}: not a readable image: {e}") from None
    return tuple(out)


def check_data(d: DataConfig) -> None:
    """What ``train`` checks of the data before decoding, where the data is on this machine: the label file, the
    split (content-disjoint, every part scorable, two training patches at least) and every image's size after
    ``data.resize`` against ``data.patch_size`` (from the headers)."""
    from .cache import target_size
    from .datasets import check_split, split_catalog

    if not data_here(d):
        return
    cat = _catalog(_data_key(d))
    split = split_catalog(cat, d.split)
    check_split(cat, split, d)
    resize = d.resize if d.resize is not None else cat.resize
    sizes = _header_sizes(str(cat.root), tuple(cat.paths))
    small = [i for idx in split.values() for i in idx if min(target_size(*sizes[i], resize)) < d.patch_size]
    if small:
        w, h = target_size(*sizes[small[0]], resize)
        raise UserError(f"{cat.paths[small[0]]}: image is {w}x{h} after resize, smaller than data.patch_size "
                        f"{d.patch_size} ({len(small)} such images); raise data.resize or lower patch_size")


def check_run(cfg: RunConfig) -> None:
    """Everything ``validate`` checks beyond the schema, for one run config (``train``, and every corner of a
    space)."""
    check_folder(cfg.out_dir, "out_dir")  # iqa-tune train writes there (a study writes to study.storage)
    check_cache_folder(cfg.data)
    check_model(cfg.model, cfg.data.patch_size)
