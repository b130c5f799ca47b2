"""space.yaml: the run schema (fixed settings) + ``search:`` (Tune primitives in YAML) + ``study:``.

Parsed and validated here without Ray, so ``iqa-tune validate`` is instant and errors name key paths. The
primitives become Tune objects in :mod:`iqa_tune.study`, the one place that imports Ray on the driver.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import RunConfig, _check, _positive, build_run_config, from_dict, read_yaml, set_path
from .errors import UserError, did_you_mean

PRIMITIVES = ("choice", "grid", "uniform", "loguniform", "quniform", "randint")


@dataclass
class SchedulerConfig:
    type: Literal["asha", "none"] = "asha"
    max_t: int | None = field(default=None, metadata=_check(_positive))  # epochs; None = train.epochs
    grace_period: int = field(default=1, metadata=_check(_positive))  # epochs before the first cut
    reduction_factor: float = field(default=3.0, metadata=_check(lambda v: None if v > 1 else "must be > 1"))


@dataclass
class ResourcesConfig:
    cpu: float = field(default=1.0, metadata=_check(_positive))  # CPUs per trial
    gpu: float = field(default=0.0, metadata=_check(lambda v: None if v >= 0 else "must be >= 0"))  # 0.5 packs 2


@dataclass
class StudyConfig:
    name: str = "study"
    storage: str = "ray_results"  # experiments go to STORAGE/NAME
    num_samples: int = field(default=1, metadata=_check(_positive))  # samples of the space (x grid size)
    metric: str = "val_srcc"  # image-level val SRCC: never select on test
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_concurrent: int | None = field(default=None, metadata=_check(_positive))  # None: as resources allow
    max_failures: int = field(default=0, metadata=_check(lambda v: None if v >= 0 else "must be >= 0"))
    search_seed: int | None = 0  # seed of the random sampling of the space; None = different every run


@dataclass
class Dimension:
    path: str  # dotted key of the run schema, e.g. "loss.alpha"
    kind: str  # one of PRIMITIVES
    args: list

    def describe(self) -> str:
        return f"{self.kind} {self.args}"

    def corners(self) -> list:
        """Representative values to validate: every listed value, or the bounds of a range."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args[:2])


@dataclass
class Space:
    source: str
    base: dict  # the fixed settings, as a mapping of the run schema
    base_config: RunConfig
    dims: list[Dimension]
    study: StudyConfig

    @property
    def grid_size(self) -> int:
        return math.prod(len(d.args) for d in self.dims if d.kind == "grid")

    @property
    def num_trials(self) -> int:
        return self.study.num_samples * self.grid_size

    @property
    def max_epochs(self) -> int:
        return self.study.scheduler.max_t or self.base_config.train.epochs


METRICS = ("val_srcc", "val_plcc", "val_krcc", "train_loss", "train_srcc_patch", "train_srcc_image")


def _schema_has(path: str) -> bool:
    cls: Any = RunConfig
    parts = path.split(".")
    for key in parts:
        if not dataclasses.is_dataclass(cls):
            return False
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            raise UserError(f"search.{path}: no key {key!r} in the run schema{did_you_mean(key, fields)}")
        tp = typing.get_type_hints(cls)[key]
        if typing.get_origin(tp) is dict:  # free-form mapping (backbone_kwargs): any sub-key
            return True
        cls = tp
    return True


def _parse_leaf(path: str, spec: dict) -> Dimension:
    (kind, args), = spec.items()
    where = f"search.{path}.{kind}"
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: expected a non-empty list of values")
        return Dimension(path, kind, args)
    n = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != n or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise UserError(f"{where}: expected [{'lo, hi, q' if n == 3 else 'lo, hi'}] numbers, got {args!r}")
    lo, hi = args[0], args[1]
    if lo >= hi:
        raise UserError(f"{where}: lo ({lo}) must be < hi ({hi})")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{where}: loguniform needs lo > 0, got {lo}")
    if kind == "quniform" and args[2] <= 0:
        raise UserError(f"{where}: q must be > 0, got {args[2]}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise UserError(f"{where}: randint bounds must be integers (hi exclusive), got {args!r}")
    return Dimension(path, kind, list(args))


def parse_search(tree: Any, prefix: str = "") -> list[Dimension]:
    """Nested or dotted keys down to leaves of the form {primitive: args}."""
    if not isinstance(tree, dict):
        raise UserError(f"search{'.' + prefix if prefix else ''}: expected a mapping of keys to "
                        f"{{{' | '.join(PRIMITIVES)}: ...}}, got {tree!r}")
    dims = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in PRIMITIVES:
            _schema_has(path)
            dims.append(_parse_leaf(path, value))
        elif isinstance(value, dict) and any(k in PRIMITIVES for k in value):
            raise UserError(f"search.{path}: one primitive per key, got {list(value)}")
        elif isinstance(value, dict) and value:
            dims.extend(parse_search(value, path))
        else:
            hint = did_you_mean(str(key), PRIMITIVES)
            raise UserError(f"search.{path}: expected {{{' | '.join(PRIMITIVES)}: ...}}, got {value!r}{hint}")
    return dims


def _validate_values(base: dict, dims: list[Dimension], source: str) -> None:
    """Every value a dimension can take must pass the run schema, and so must their combinations."""
    for d in dims:
        for v in d.corners():
            trial = copy.deepcopy(base)
            set_path(trial, d.path, v)
            try:
                build_run_config(trial)
            except UserError as e:
                raise UserError(f"{source}: search.{d.path} value {v!r}: {e}") from None
    for d in dims:
        if d.path == "model.backbone":
            from .model import resolve_backbone

            for v in d.args:
                try:
                    resolve_backbone(v)
                except UserError as e:
                    raise UserError(f"{source}: search.model.backbone value {v!r}: {e}") from None
    combos = list(itertools.islice(itertools.product(*[d.corners() for d in dims]), 4096))
    for values in combos:
        trial = copy.deepcopy(base)
        for d, v in zip(dims, values):
            set_path(trial, d.path, v)
        try:
            build_run_config(trial)
        except UserError as e:
            where = ", ".join(f"{d.path}={v!r}" for d, v in zip(dims, values))
            raise UserError(f"{source}: the combination {where} is invalid: {e}") from None


def load_space(path: str) -> Space:
    data = read_yaml(path)
    search = data.pop("search", None) or {}
    study_data = data.pop("study", None) or {}  # read_yaml refuses `study:` left null
    try:
        study = from_dict(StudyConfig, study_data, "study")
        dims = parse_search(search)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    base_config = build_run_config(data, str(path))
    seen = set()
    for d in dims:
        if d.path in seen:
            raise UserError(f"{path}: search.{d.path} appears twice")
        seen.add(d.path)
    _validate_values(data, dims, str(path))
    metric = study.metric
    if metric not in METRICS:
        raise UserError(f"{path}: study.metric: {metric!r} is not a selection metric{did_you_mean(metric, METRICS)};"
                        f" choose one of {', '.join(METRICS)} (test metrics are never used to select)")
    return Space(str(path), data, base_config, dims, study)


def trial_config(space: Space, sampled: dict[str, Any]) -> RunConfig:
    """The run config of one trial: fixed settings with the sampled values applied."""
    data = copy.deepcopy(space.base)
    for key, value in sampled.items():
        set_path(data, key, value)
    return build_run_config(data)


def describe(space: Space) -> str:
    c, s = space.base_config, space.study
    lines = [f"{space.source}: valid",
             f"  fixed: {c.data.dataset} data, {c.model.backbone}, {c.train.epochs} epochs, batch {c.train.batch_size}",
             f"  study: {s.name!r} -> {s.storage}/{s.name}, metric {s.metric} ({s.mode}), "
             f"scheduler {s.scheduler.type}, {s.resources.cpu:g} CPU + {s.resources.gpu:g} GPU per trial",
             f"  search ({len(space.dims)} dimensions):"]
    lines += [f"    {d.path}: {d.describe()}" for d in space.dims] or ["    (none: one configuration)"]
    lines.append(f"  trials: {space.num_trials} ({s.num_samples} samples x {space.grid_size} grid points)")
    return "\n".join(lines)
