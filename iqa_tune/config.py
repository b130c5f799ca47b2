"""Typed configuration of one HyperIQA run: every default lives here, with its unit and origin.

A run config (``iqa-tune train``) is a YAML file with the sections below. A study file (``iqa-tune run``) is
the same schema plus ``search:`` and ``study:`` sections (see :mod:`iqa_tune.space`). Loading is strict:
unknown keys, wrong types and out-of-range values are :class:`UserError`s naming the key path.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import yamlfile
from .backbones import fixed_input_size
from .errors import UserError, did_you_mean


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def _open_fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


NAME_MAX = 100  # characters of a run or study name: a folder name, well under the 255 bytes file systems allow
NAME_RULE = (f"must be a folder name: 1 to {NAME_MAX} of the characters A-Z a-z 0-9 . _ -, not starting with "
             "'.' or '-'")


def name_problem(v: str) -> str | None:
    """The one rule for every name that becomes a folder (run name, study name, --name): it stays one folder
    inside its parent (no '/', '..' or empty name) and fits the file system."""
    ok = (0 < len(v) <= NAME_MAX and v[0] not in ".-"
          and all(c.isascii() and (c.isalnum() or c in "._-") for c in v))
    return None if ok else NAME_RULE


def check_name(value: str, key: str) -> str:
    """``value`` as a folder name, or a :class:`UserError` naming ``key`` (a key path, or a flag: --name)."""
    problem = name_problem(value)
    if problem:
        raise UserError(f"{key}: {problem}, got {value!r}")
    return value
def _seed(v: Any) -> str | None:
    return None if 0 <= v < 2 ** 32 else "must be 0 to 2**32 - 1 (numpy and torch seeds)"


def _threads(v: Any) -> str | None:
    return None if 1 <= v <= MAX_THREADS else f"must be 1 to {MAX_THREADS} (torch CPU threads; no machine has more cores)"


MAX_THREADS = 1024
INT64 = 2 ** 63  # ints in a config reach numpy and torch as 64-bit integers


def _folder_name(v: Any) -> str | None:
    return name_problem(v)


def _check(fn) -> dict:
    """Field metadata: ``fn(value)`` returns a problem ("must be > 0") or None."""
    return {"check": fn}


@dataclass
class SplitConfig:
    train: float = field(default=0.7, metadata=_check(_fraction))  # 0.7/0.1/0.2: common IQA protocol + a val set
    val: float = field(default=0.1, metadata=_check(_fraction))  # val selects the epoch; never the test set
    test: float = field(default=0.2, metadata=_check(_fraction))  # read at the epoch val chose, never to select
    seed: int = field(default=0, metadata=_check(_seed))  # which random split; search it to get the IQA convention of medians over splits
    official: bool = True  # use the release's own train/val/test sets where it ships them (KonIQ-10k)


@dataclass
class ColumnsConfig:
    """Column names for the generic ``csv`` dataset."""

    path: str = "path"  # image path, relative to data.root
    score: str = "score"  # quality score, higher is better
    # content id: images sharing one stay in one split. "ref" is used when the file has it, else every image is
    # its own content; another name must exist; null = ignore any such column
    ref: str | None = "ref"


# the dataset adapters of iqa_tune.datasets, by name (that module checks it implements exactly these)
DATASET_NAMES = ("demo", "koniq10k", "livec", "kadid10k", "spaq", "csv")


@dataclass
class ExtraTestConfig:
    """A cross-dataset test set (``data.extra_tests``): every image of it scored each epoch on fixed crops of the
    run's patch size, at image level, reported as ``xtest_<name>_srcc/plcc/krcc``; never used to select."""

    name: str | None = None  # [a-z0-9_]+, unique; None = the dataset's name (livec -> xtest_livec_srcc)
    dataset: Literal[DATASET_NAMES] | None = None  # which adapter reads root (required)
    root: str | None = None  # the set's folder; demo: built on first use under data.cache_dir
    label: str | None = None  # label column/scale, as data.label
    csv_file: str | None = None  # csv dataset: the label file, relative to root
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    resize: list[int] | int | None = None  # as data.resize; None = the dataset's default
    test_patches: int | None = field(default=None, metadata=_check(_positive))  # fixed crops; None = data.test_patches
    limit: int | None = field(default=None, metadata=_check(_positive))  # use only the first N images

    @property
    def key(self) -> str:
        """The set's name in metric columns and crop files (``xtest_<key>``)."""
        return self.name if self.name is not None else str(self.dataset)


@dataclass
class DataConfig:
    dataset: Literal[DATASET_NAMES] = "demo"  # which adapter reads data.root
    root: str | None = None  # dataset folder; demo: built on first use under cache_dir
    label: str | None = None  # label column/scale; None = the dataset's default (KonIQ: mos_zscore, 0-100)
    csv_file: str | None = None  # csv dataset: the label file, relative to root
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    # [width, height], or one int = shorter side; None = the dataset's default (KonIQ: 512 wide x 384 tall)
    resize: list[int] | int | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    patch_size: int = field(default=224, metadata=_check(_positive))  # 224: HyperIQA paper
    train_patches: int = field(default=25, metadata=_check(_positive))  # random crops per image per epoch: paper
    test_patches: int = field(default=25, metadata=_check(_positive))  # fixed crops per val/test image: paper
    flip: bool = True  # random horizontal flip of training patches: reference
    cache_dir: str | None = None  # decoded-image cache; None = $IQA_TUNE_CACHE or ~/.cache/iqa-tune
    limit: int | None = field(default=None, metadata=_check(_positive))  # use only the first N images (smoke runs)
    # training images scored like test each epoch (fixed crops, eval mode), evenly spaced over the train split:
    # the generalisation gap at one scale (train_eval_srcc - test_srcc). None = as many as the test split; 0 = off
    train_eval_images: int | None = field(default=None, metadata=_check(_non_negative))
    extra_tests: list[ExtraTestConfig] = field(default_factory=list)  # cross-dataset test sets, never selected on


@dataclass
class ModelConfig:
    backbone: str = "swin_tiny_patch4_window7_224"  # any timm model with features_only and 4 stages
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model (tiny configs)
    # ImageNet weights: from a package on disk where the registry names one (efficientnet_lite0), else timm's
    # (needs internet or a warm hub cache)
    pretrained: bool = False
    checkpoint: str | None = None  # local .pth/.safetensors backbone weights (offline clusters)
    dropout: float = field(default=0.0, metadata=_check(_open_fraction))  # in the target net; reference: off
    # where model.dropout acts: after every hidden layer of the target net ("all"), or after the first only
    # ("first": the reference's one place, p=0.5 there, commented out)
    dropout_layers: Literal["all", "first"] = "all"
    lda_channels: int = field(default=16, metadata=_check(_positive))  # 16: reference LDA output per stage
    target_in: int = field(default=224, metadata=_check(_positive))  # 224: reference target input size
    hyper_channels: int = field(default=112, metadata=_check(_positive))  # 112: reference
    target_dims: list[int] = field(default_factory=lambda: [112, 56, 28, 14])  # reference target net widths
    feature_size: int = field(default=7, metadata=_check(_positive))  # 7: reference hyper feature grid
    # freeze the stem and the first N of the 4 backbone stages (weights and batch-norm statistics); 0 = train all
    freeze_stages: int = field(default=0, metadata=_check(lambda v: None if 0 <= v <= 4 else "must be 0 to 4"))


@dataclass
class LossConfig:
    alpha: float = field(default=0.0, metadata=_check(_non_negative))  # ranking weight; 0 = plain L1 (reference)
    ranking: Literal["patch", "image"] = "patch"  # pairs of patches in the batch, or of per-image mean predictions
    margin: float = field(default=0.1, metadata=_check(_non_negative))  # hinge margin, in label units


@dataclass
class TrainConfig:
    optimizer: Literal["adam", "adamw"] = "adam"  # adam: reference
    lr: float = field(default=2e-5, metadata=_check(_positive))  # backbone lr: HyperIQA paper
    lr_ratio: float = field(default=10.0, metadata=_check(_positive))  # hyper network lr = lr x this: paper
    weight_decay: float = field(default=5e-4, metadata=_check(_non_negative))  # 5e-4: reference
    epochs: int = field(default=16, metadata=_check(_positive))  # 16: reference
    # patches per batch; 96: reference. At least 2: batch norm cannot train on one value per channel
    batch_size: int = field(default=96, metadata=_check(lambda v: None if v >= 2 else "must be >= 2"))
    patches_per_image: int = field(default=1, metadata=_check(_positive))  # patches of one image in a batch
    schedule: Literal["step", "cosine"] = "step"  # step: lr / 10^(epoch // 6) as in the reference
    step_size: int = field(default=6, metadata=_check(_positive))  # epochs per step: reference
    step_factor: float = field(default=0.1, metadata=_check(_positive))  # lr multiplier per step: reference
    warmup_epochs: float = field(default=0.0, metadata=_check(_non_negative))  # epochs of linear warmup, both schedules
    cosine_floor: float = field(default=0.0, metadata=_check(_fraction))  # cosine: final lr as a fraction of lr
    patience: int = field(default=0, metadata=_check(_non_negative))  # early stop after N epochs w/o val gain; 0=off
    seed: int = field(default=0, metadata=_check(_seed))  # model init, patch sampling, shuffling
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int | None = field(default=None, metadata=_check(_threads))  # torch CPU threads; None = torch default
    eval_batch_size: int = field(default=128, metadata=_check(_positive))  # patches per forward pass at eval
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype of the forward pass (GPU path)
    channels_last: bool = False  # NHWC memory format for conv backbones: GPUs, and 1.4x a lite0 epoch on a CPU
    compile: bool = False  # torch.compile the model (GPU path; minutes of compile on a CPU)
    # reproduce the reference solver's dynamics (SSL92/hyperIQA rebuilds Adam after every epoch from an exhausted
    # filter): the hyper network trains in epoch 1 only, then the backbone and LDA layers train at the constant
    # base lr with Adam's moments restarted each epoch; schedule and warmup are not applied
    reference_compat: bool = False


@dataclass
class RunConfig:
    name: str = field(default="run", metadata=_check(_folder_name))  # the run's folder under out_dir
    out_dir: str = "runs"  # iqa-tune train writes OUT_DIR/NAME/
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------------------------------------------
# strict loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        sections = [o for o in typing.get_args(tp) if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(sections) == 1:  # an optional section: its own error names the inner key
            return from_dict(sections[0], value, path)
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, path)
            except UserError:
                continue
        names = [str(a) for o in typing.get_args(tp) if typing.get_origin(o) is Literal for a in typing.get_args(o)]
        hint = did_you_mean(str(value), names) if names else ""
        raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}{hint}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise UserError(f"{path}: must be one of {_type_name(tp)}, got {value!r}{did_you_mean(str(value), map(str, typing.get_args(tp)))}")
    if tp is type(None):
        if value is None:
            return None
        raise UserError(f"{path}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64 <= value < INT64:
                raise UserError(f"{path}: {value} does not fit a 64-bit integer")
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys, wrong types and bad ranges name their key path."""
    where = path or "top level"
    if data is None and path:  # `split:` with nothing under it: a section whose keys were lost, not "defaults"
        raise UserError(f"{path}: empty (null); give it keys or remove the line")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise UserError(f"{key_path}: unknown key{did_you_mean(str(key), fields)}; valid keys here: {', '.join(fields)}")
        kwargs[key] = _field_value(cls, fields[key], value, key_path)
    return cls(**kwargs)


def _field_value(cls: type, f: dataclasses.Field, value: Any, path: str) -> Any:
    """``value`` checked against one field: its type, then its range check."""
    value = _coerce(value, typing.get_type_hints(cls)[f.name], path)
    check = f.metadata.get("check")
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            raise UserError(f"{path}: {problem}, got {value!r}")
    return value


def _cross_checks(cfg: RunConfig) -> None:
    """Rules between keys; each message says how to fix it."""
    t, d, s = cfg.train, cfg.data, cfg.data.split
    if t.batch_size % t.patches_per_image:
        raise UserError(f"train.batch_size ({t.batch_size}) must be a multiple of train.patches_per_image ({t.patches_per_image})")
    if d.train_patches % t.patches_per_image:
        raise UserError(f"data.train_patches ({d.train_patches}) must be a multiple of train.patches_per_image ({t.patches_per_image})")
    if cfg.loss.ranking == "image" and cfg.loss.alpha > 0 and t.patches_per_image < 2:
        raise UserError(
            "loss.ranking: 'image' averages each image's patches in a batch, but train.patches_per_image is "
            f"{t.patches_per_image}: set train.patches_per_image >= 2 (e.g. 4), or use loss.ranking: patch")
    if abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise UserError(f"data.split: train + val + test must be 1, got {s.train + s.val + s.test:g}")
    if s.train <= 0 or s.test <= 0 or s.val <= 0:
        raise UserError("data.split: train, val and test must all be > 0 (the best epoch is chosen on val, "
                        "never on test)")
    _check_resize(d.resize, "data.resize")
    _check_extra_tests(d)
    m = cfg.model
    if len(m.target_dims) != 4 or min(m.target_dims) <= 0:
        raise UserError(f"model.target_dims: expected 4 positive widths, got {m.target_dims!r}")
    dims = [m.target_in, *m.target_dims]
    for a, b in zip(dims, dims[1:]):
        if (a * b) % (m.feature_size ** 2):
            raise UserError(f"model: target layer {a}x{b} is not divisible by feature_size^2 = {m.feature_size ** 2}")
    if m.target_in <= 3 * m.lda_channels:
        raise UserError(f"model.target_in ({m.target_in}) must exceed 3 x model.lda_channels ({3 * m.lda_channels})")
    if t.device not in ("auto", "cpu") and not t.device.startswith("cuda"):
        raise UserError(f"train.device: expected auto, cpu, cuda or cuda:N, got {t.device!r}")
    _check_keys_act(cfg)
    fixed = fixed_input_size(m.backbone, m.backbone_kwargs)
    if fixed is not None and fixed != d.patch_size:
        raise UserError(f"data.patch_size ({d.patch_size}) must equal the input size of model.backbone {m.backbone} "
                        f"({fixed}): Swin builds its attention windows for one input size; set data.patch_size: "
                        f"{fixed}, or model.backbone_kwargs.img_size: {d.patch_size}")


# evaluation sets of the solver: an extra test set named like one would read as it in tables and crop files
BUILTIN_SETS = ("train", "val", "test", "train_eval")


def _check_resize(resize: Any, path: str) -> None:
    if isinstance(resize, list) and (len(resize) != 2 or min(resize) <= 0):
        raise UserError(f"{path}: expected [width, height] with positive values, got {resize!r}")
    if isinstance(resize, int) and resize <= 0:
        raise UserError(f"{path}: the shorter side must be > 0, got {resize!r}")


def _check_extra_tests(d: DataConfig) -> None:
    """What can be checked of ``data.extra_tests`` without reading files (those checks: ``prepare.extra_catalogs``)."""
    seen: dict[str, int] = {}
    for i, x in enumerate(d.extra_tests):
        path = f"data.extra_tests[{i}]"
        if x.dataset is None:
            raise UserError(f"{path}.dataset: required; one of {', '.join(DATASET_NAMES)}")
        if not re.fullmatch(r"[a-z0-9_]+", x.key):
            raise UserError(f"{path}.name: {x.key!r} must be lower-case letters, digits and '_' (it names the "
                            f"metrics xtest_<name>_srcc...)")
        if x.key in BUILTIN_SETS:
            raise UserError(f"{path}.name: {x.key!r} is the name of a built-in evaluation set "
                            f"({', '.join(BUILTIN_SETS)}); choose another")
        if x.key in seen:
            other = f"data.extra_tests[{seen[x.key]}]"
            how = "" if x.name else f" (unnamed sets take their dataset's name: set {path}.name)"
            raise UserError(f"{path}.name: {x.key!r} is already the name of {other}{how}")
        seen[x.key] = i
        _check_resize(x.resize, f"{path}.resize")
# datasets whose release has one label: data.label has nothing to choose there (the koniq10k adapter reads it)
ONE_LABEL = {"demo": "score (100 x SSIM)", "livec": "MOS (AllMOS_release)", "kadid10k": "dmos (a MOS)",
             "spaq": "MOS"}


def _check_keys_act(cfg: RunConfig) -> None:
    """Keys whose value the rest of the config ignores, whatever is searched: refused, naming the key that does
    the job (a key accepted and ignored is a run that silently differs from what its config.yaml says)."""
    d = cfg.data
    if d.label is not None and d.dataset == "csv":
        raise UserError(f"data.label: the csv dataset reads its label from the column named by data.columns.score "
                        f"(now {d.columns.score!r}); set data.columns.score: {d.label} and remove data.label")
    if d.label is not None and d.dataset in ONE_LABEL:
        raise UserError(f"data.label: the {d.dataset} dataset has one label, {ONE_LABEL[d.dataset]}; remove "
                        "data.label")
    if d.dataset != "csv" and d.csv_file is not None:
        raise UserError(f"data.csv_file: only the csv dataset reads it; {d.dataset} reads its release's own label "
                        "file: remove data.csv_file, or set data.dataset: csv")
    if d.dataset != "csv" and d.columns != ColumnsConfig():
        raise UserError(f"data.columns: only the csv dataset reads it; {d.dataset} reads its release's own "
                        "columns: remove data.columns, or set data.dataset: csv")
    if cfg.model.checkpoint and cfg.model.pretrained:
        raise UserError("model.pretrained: model.checkpoint gives the backbone's weights, so pretrained does "
                        "nothing; remove one of the two")


def refuse_inert_settings(cfg: RunConfig, searched: set[str] | frozenset[str] = frozenset()) -> None:
    """A fixed setting, away from its default, that another fixed setting makes inert (:data:`INERT_WHEN`, and the
    schedule under train.reference_compat) is refused, naming both keys. Where either key is searched
    (``searched``: dotted keys), the study folds the trials it makes identical and says why instead."""
    defaults = RunConfig()
    for key, (depends, values, why) in INERT_WHEN.items():
        if key in searched or depends in searched or get_value(cfg, depends) not in values:
            continue
        if get_value(cfg, key) != get_value(defaults, key):
            raise UserError(f"{key}: {why}, so {key} ({get_value(cfg, key)!r}) does nothing; remove it, or "
                            f"change {depends}")
    if cfg.train.reference_compat and "train.reference_compat" not in searched:
        for key in ("train.schedule", "train.warmup_epochs", "train.step_size", "train.step_factor",
                    "train.cosine_floor"):
            if key not in searched and get_value(cfg, key) != get_value(defaults, key):
                raise UserError(f"{key}: train.reference_compat trains with the reference solver's dynamics, "
                                f"which apply no schedule or warmup, so {key} does nothing; remove it, or set "
                                "train.reference_compat: false")


def check_run_config(cfg: RunConfig, source: str = "") -> RunConfig:
    """The rules between keys; ``source`` (a file name) prefixes every error."""
    try:
        _cross_checks(cfg)
    except UserError as e:
        raise UserError(f"{source}: {e}" if source else str(e)) from None
    return cfg


def build_run_config(data: dict, source: str = "") -> RunConfig:
    """Parse and validate a mapping as a run config, once. ``source`` (a file name) prefixes every error."""
    try:
        cfg = from_dict(RunConfig, data)
    except UserError as e:
        raise UserError(f"{source}: {e}" if source else str(e)) from None
    return check_run_config(cfg, source)


def read_yaml(path: str | os.PathLike) -> dict:
    return yamlfile.read_yaml(path)  # strict: duplicate keys, empty files and null sections are errors


def load_run_config(path: str | os.PathLike) -> RunConfig:
    cfg = build_run_config(read_yaml(path), str(path))
    try:
        refuse_inert_settings(cfg)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------------------------
# derived configs: pure functions that return a new config


def check_key_path(path: str) -> None:
    """A dotted key must exist in the run schema (any sub-key of a free-form mapping such as backbone_kwargs)."""
    cls: Any = RunConfig
    for key in path.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            raise UserError(f"{path}: no key {key!r} in the run schema{did_you_mean(key, fields)}")
        tp = typing.get_type_hints(cls)[key]
        if typing.get_origin(tp) is dict:
            return
        if not dataclasses.is_dataclass(tp):
            if key != path.split(".")[-1]:
                raise UserError(f"{path}: {key!r} is a value, it has no sub-keys")
            return
        cls = tp
    raise UserError(f"{path}: is a section; search one of its keys")


def with_values(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of ``cfg`` with dotted keys set (a trial's sampled values); each value is checked like its field."""
    for path, value in values.items():
        cfg = _replace(cfg, path.split("."), value, path)
    return cfg


def _replace(obj: Any, keys: list[str], value: Any, path: str) -> Any:
    f = next((f for f in dataclasses.fields(obj) if f.name == keys[0]), None)
    if f is None:
        check_key_path(path)  # names the nearest valid key
        raise UserError(f"{path}: no such key in the run schema")
    current = getattr(obj, f.name)
    if len(keys) == 1:
        new = _field_value(type(obj), f, value, path)
    elif dataclasses.is_dataclass(current):
        new = _replace(current, keys[1:], value, path)
    else:  # a free-form mapping (model.backbone_kwargs.embed_dim)
        new = copy.deepcopy(current)
        inner = new
        for k in keys[1:-1]:
            inner = inner.setdefault(k, {})
        inner[keys[-1]] = value
    return dataclasses.replace(obj, **{f.name: new})


# keys that have no effect on a config, and when: key -> (the key it depends on, the values of that key that make
# it inert, the reason in words)
INERT_WHEN: dict[str, tuple[str, tuple, str]] = {
    "loss.ranking": ("loss.alpha", (0.0,), "loss.alpha = 0 turns the ranking loss off"),
    "loss.margin": ("loss.alpha", (0.0,), "loss.alpha = 0 turns the ranking loss off"),
    "train.cosine_floor": ("train.schedule", ("step",), "a step schedule has no cosine floor"),
    "train.step_size": ("train.schedule", ("cosine",), "a cosine schedule has no steps"),
    "train.step_factor": ("train.schedule", ("cosine",), "a cosine schedule has no steps"),
    "model.dropout_layers": ("model.dropout", (0.0,), "model.dropout = 0 turns dropout off"),
}


def get_value(cfg: Any, path: str) -> Any:
    for key in path.split("."):
        cfg = getattr(cfg, key)
    return cfg


def inert_keys(cfg: RunConfig) -> dict[str, str]:
    """The keys whose value changes nothing in this config, each with the reason."""
    return {key: why for key, (depends, values, why) in INERT_WHEN.items() if get_value(cfg, depends) in values}


def effective(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every inert key at its default: two configs that train the same way become equal."""
    defaults = RunConfig()
    return with_values(cfg, {key: get_value(defaults, key) for key in inert_keys(cfg)})


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """The same config with every path absolute: trials run in their own folders, maybe on other nodes."""
    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else p

    extra = [dataclasses.replace(x, root=absolute(x.root)) for x in cfg.data.extra_tests]
    data = dataclasses.replace(cfg.data, root=absolute(cfg.data.root), cache_dir=str(cache_root(cfg.data).resolve()),
                               extra_tests=extra)
    model = dataclasses.replace(cfg.model, checkpoint=absolute(cfg.model.checkpoint))
    return dataclasses.replace(cfg, data=data, model=model)


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("IQA_TUNE_CACHE", "~/.cache/iqa-tune")).expanduser()
