"""Checks that ``validate`` shares with ``train`` and ``run``: whatever ``validate`` accepts must not fail later
for a reason it could have checked.

The schema (:mod:`iqa_tune.config`) checks each value on its own; the checks here need the world around it: the
folders a run writes into, the backbone timm builds from ``model.backbone`` and ``model.backbone_kwargs`` (built
on the meta device: shapes only, no memory, no weights). ``train`` meets the same checks before it decodes or
builds anything, so both commands refuse the same config with the same line. The data itself is not read here:
a space names data that may live on a cluster (``run`` checks it before the first trial).
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
    check_folder(cache_root(cfg), cache_key_name(cfg))


# ----------------------------------------------------------------------------------------------------------------
# the model


def _needs_build(m: ModelConfig) -> bool:
    """A registry entry with its own kwargs is known to build (the tests build every entry, frozen or not);
    anything else is built here once."""
    return bool(m.backbone_kwargs) or m.backbone not in BACKBONES


def check_model(m: ModelConfig, patch_size: int) -> None:
    """HyperIQA with this backbone builds, and its backbone takes a batch of ``patch_size`` patches: built on the
    meta device (shapes only), so a Swin costs a fraction of a second. timm's own message names the problem."""
    if not _needs_build(m):
        return
    slim = {k: v for k, v in dataclasses.asdict(m).items() if k not in ("pretrained", "checkpoint", "dropout", "dropout_layers")}
    _check_model(json.dumps(slim, sort_keys=True, default=str), patch_size)


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


def check_run(cfg: RunConfig) -> None:
    """Everything ``validate`` checks beyond the schema, for one run config (``train``, and every corner of a
    space)."""
    check_folder(cfg.out_dir, "out_dir")  # iqa-tune train writes there (a study writes to study.storage)
    check_cache_folder(cfg.data)
    check_model(cfg.model, cfg.data.patch_size)
