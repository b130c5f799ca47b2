"""space.yaml: the run schema (fixed settings) + ``search:`` (Tune primitives in YAML) + ``study:``.

Parsed and validated here without Ray, so ``iqa-tune validate`` is instant and errors name key paths. The space
is expanded here too, into the list of trials a study runs (:func:`expand`): grid points crossed with seeded
random draws, each distinct effective configuration once (alpha 0 makes the ranking granularity irrelevant, so
its two values are one trial), split seeds innermost so every sampled configuration meets every split. The
driver (:mod:`iqa_tune.study`) hands that list to Tune as its points to evaluate.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .config import (
    INERT_WHEN,
    RunConfig,
    _check,
    _positive,
    build_run_config,
    check_key_path,
    check_run_config,
    effective,
    from_dict,
    inert_keys,
    read_yaml,
    resolve_paths,
    with_values,
)
from .datasets import SHIPS_OFFICIAL_SPLIT
from .errors import UserError, did_you_mean
from .prepare import extra_catalogs
from .records import SELECTION_METRICS
from .storage import uri_problem


@dataclass(frozen=True)
class Primitive:
    """One search primitive, defined once: how its YAML arguments look, how a value is drawn, and the
    ``ray.tune`` domain that declares it to Tune (``tune.<sampler>(*args)``, or ``(args)`` for a list)."""

    sampler: str
    arity: int | None  # number of numeric bounds; None = a non-empty list of values
    draw: Callable[[list, np.random.Generator], Any] | None  # None: a grid axis, every value is taken
    draws_floats: bool = False  # uniform, loguniform, quniform: every draw is a float


PRIMITIVES: dict[str, Primitive] = {
    # one of the listed values per sample (under study.search.type grid: a grid axis)
    "choice": Primitive("choice", None, lambda a, rng: a[int(rng.integers(len(a)))]),
    # every listed value, crossed with the other grid axes; declared to Tune as its set of values
    "grid": Primitive("choice", None, None),
    "uniform": Primitive("uniform", 2, lambda a, rng: float(rng.uniform(a[0], a[1])), True),  # a float in [lo, hi]
    # a float whose log is uniform in [log lo, log hi]: learning rates, weight decay (lo > 0)
    "loguniform": Primitive("loguniform", 2,
                            lambda a, rng: float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))), True),
    # uniform in [lo, hi], rounded to a multiple of q (a float, also on a round q)
    "quniform": Primitive("quniform", 3, lambda a, rng: float(np.round(rng.uniform(a[0], a[1]) / a[2]) * a[2]),
                          True),
    "randint": Primitive("randint", 2, lambda a, rng: int(rng.integers(a[0], a[1]))),  # an int in [lo, hi): hi exclusive
}
SPLIT_SEED = "data.split.seed"


@dataclass
class SchedulerConfig:
    # asha: Tune's asynchronous successive halving; halving: synchronous (trials wait at each rung); none: no cuts
    type: Literal["asha", "halving", "none"] = "asha"
    max_t: int | None = field(default=None, metadata=_check(_positive))  # epochs; None = train.epochs
    grace_period: int = field(default=1, metadata=_check(_positive))  # epochs before the first cut
    # rungs at grace_period x reduction_factor^k epochs; the best 1/reduction_factor of a rung go on
    reduction_factor: float = field(default=3.0, metadata=_check(lambda v: None if v > 1 else "must be > 1"))


def halving_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs where a cut can happen: grace_period x reduction_factor^k, below max_t (a trial ends there
    anyway). 8 epochs, grace 1, factor 3: epochs 1 and 3."""
    rungs, t = [], float(grace_period)
    while round(t) < max_t:
        if not rungs or round(t) > rungs[-1]:
            rungs.append(round(t))
        t *= reduction_factor
    return rungs


def check_asha(max_t: int, grace_period: int, reduction_factor: float) -> None:
    """ASHA's arguments, checked by ``validate`` and by the scheduler itself; each message names the key."""
    if max_t < 1:
        raise UserError(f"study.scheduler.max_t: must be >= 1 epoch, got {max_t}")
    if grace_period < 1:
        raise UserError(f"study.scheduler.grace_period: must be >= 1 epoch, got {grace_period}")
    if grace_period > max_t:
        raise UserError(f"study.scheduler.grace_period ({grace_period}) exceeds max_t ({max_t}): no trial could "
                        "reach a rung; lower grace_period, or raise study.scheduler.max_t (default: train.epochs)")
    if not reduction_factor > 1:
        raise UserError(f"study.scheduler.reduction_factor: must be > 1 (3 keeps a third at each rung), "
                        f"got {reduction_factor}")


@dataclass
class SearchConfig:
    """How trials are chosen. random: grid axes crossed with seeded draws of the other primitives (num_samples
    draws of each grid point). grid: every combination of listed values (choice counts as a grid axis; ranges
    are refused). optuna: num_samples trials proposed one after another by Optuna's TPE sampler from the results
    so far (seeded by study.search_seed), asking for a key only where it matters (no ranking granularity at
    alpha 0)."""

    type: Literal["random", "grid", "optuna"] = "random"  # how trials are chosen, as above
    # optuna: trials drawn at random before TPE models the results; None = a third of the budget, at least 2
    startup_trials: int | None = field(default=None, metadata=_check(_positive))


@dataclass
class ResourcesConfig:
    cpu: float = field(default=1.0, metadata=_check(_positive))  # CPUs per trial
    gpu: float = field(default=0.0, metadata=_check(lambda v: None if v >= 0 else "must be >= 0"))  # 0.5 packs 2


@dataclass
class ConfirmConfig:
    """``study.confirm``: after the search, retrain its top configurations over seeds (``iqa-tune confirm``)."""

    top: int = field(default=3, metadata=_check(lambda v: None if v >= 1 else "must be >= 1"))  # configurations
    # training seeds per configuration, the same for each (paired); two at least: an interval needs a spread
    seeds: int = field(default=3, metadata=_check(lambda v: None if v >= 2 else "must be >= 2 (a spread over "
                                                                                  "seeds needs two)"))
    # x split seeds (data.split.seed), only where the dataset has no official split
    split_seeds: int = field(default=1, metadata=_check(lambda v: None if v >= 1 else "must be >= 1"))


def check_confirm_splits(cfg: RunConfig, split_seeds: int, key: str) -> None:
    """More than one split only on a seeded split (the rule of searched split seeds, :func:`_check_split_seeds`)."""
    if split_seeds > 1 and cfg.data.split.official and cfg.data.dataset in SHIPS_OFFICIAL_SPLIT:
        raise UserError(f"{key}: {cfg.data.dataset} uses its official split, which ignores the seed; confirm with "
                        f"one split (split_seeds 1), or set data.split.official: false to vary splits")


@dataclass
class StudyConfig:
    name: str = "study"  # the experiment's folder under storage (iqa-tune run --name overrides it)
    # experiments go to STORAGE/NAME: a folder, or a URI (s3://bucket/prefix, gs://, file://; iqa_tune.storage)
    storage: str = field(default="ray_results", metadata=_check(uri_problem))
    # random: samples of the space (x grid size); optuna: the number of trials; grid: must stay 1
    num_samples: int = field(default=1, metadata=_check(_positive))
    metric: str = "val_srcc"  # image-level val SRCC: never select on test
    mode: Literal["max", "min"] = "max"  # whether a larger study.metric is better
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_concurrent: int | None = field(default=None, metadata=_check(_positive))  # None: as resources allow
    max_failures: int = field(default=0, metadata=_check(lambda v: None if v >= 0 else "must be >= 0"))  # retries
    # seed of the random sampling of the space; None = a fresh seed, drawn once when the file is loaded and
    # recorded in study.yaml, so the count printed, the trials run and a resume agree
    search_seed: int | None = 0
    confirm: ConfirmConfig | None = None  # null: no confirmation after the search (iqa-tune confirm runs one later)


@dataclass
class Dimension:
    path: str  # dotted key of the run schema, e.g. "loss.alpha"
    kind: str  # one of PRIMITIVES
    args: list

    def describe(self) -> str:
        return f"{self.kind} {self.args}"

    @property
    def primitive(self) -> Primitive:
        return PRIMITIVES[self.kind]

    def corners(self) -> list:
        """Representative values to validate: every listed value, or the bounds of a range as they are drawn
        (a float primitive draws floats, so an int key is caught here rather than in every trial)."""
        if self.primitive.arity is None:
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        if self.kind == "quniform":  # draws are rounded to multiples of q, bounds included
            lo, hi, q = self.args
            return [float(np.round(lo / q) * q), float(np.round(hi / q) * q)]
        return [float(a) for a in self.args[:2]]


@dataclass
class Space:
    source: str
    base: RunConfig  # the fixed settings every trial shares
    dims: list[Dimension]
    study: StudyConfig
    # an explicit list of trials instead of the expansion of dims (a confirmation: configurations x seeds), and
    # how to say its size
    points: list[dict[str, Any]] | None = None
    points_note: str = ""

    @property
    def num_trials(self) -> int:
        return self.study.num_samples if self.proposed else len(expand(self).points)

    @property
    def proposed(self) -> bool:
        """Trials are proposed during the study (optuna), not listed before it (random, grid)."""
        return self.study.search.type == "optuna" and self.points is None

    @property
    def startup_trials(self) -> int:
        return self.study.search.startup_trials or max(2, self.study.num_samples // 3)

    @property
    def max_epochs(self) -> int:
        """ASHA's horizon: study.scheduler.max_t, else the longest train.epochs any trial can have."""
        searched = [max(d.corners()) for d in self.dims if d.path == "train.epochs"]
        return self.study.scheduler.max_t or max([self.base.train.epochs, *searched])


def _parse_leaf(path: str, spec: dict) -> Dimension:
    (kind, args), = spec.items()
    where = f"search.{path}.{kind}"
    n = PRIMITIVES[kind].arity
    if n is None:
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: expected a non-empty list of values")
        return Dimension(path, kind, args)
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
            try:
                check_key_path(path)
            except UserError as e:
                raise UserError(f"search.{e}") from None
            dims.append(_parse_leaf(path, value))
        elif isinstance(value, dict) and any(k in PRIMITIVES for k in value):
            raise UserError(f"search.{path}: one primitive per key, got {list(value)}")
        elif isinstance(value, dict) and value:
            dims.extend(parse_search(value, path))
        else:
            hint = did_you_mean(str(key), PRIMITIVES)
            raise UserError(f"search.{path}: expected {{{' | '.join(PRIMITIVES)}: ...}}, got {value!r}{hint}")
    return dims


def _validate_values(base: RunConfig, dims: list[Dimension], source: str) -> None:
    """Every value a dimension can take must pass the run schema, and so must their combinations."""
    for d in dims:
        for v in d.corners():
            try:
                check_run_config(with_values(base, {d.path: v}))
            except UserError as e:
                hint = " (a float primitive on an integer key: use randint)" if d.primitive.draws_floats else ""
                raise UserError(f"{source}: search.{d.path} value {v!r}: {e}{hint}") from None
    combos = list(itertools.islice(itertools.product(*[d.corners() for d in dims]), 4096))
    for values in combos:
        try:
            check_run_config(with_values(base, {d.path: v for d, v in zip(dims, values)}))
        except UserError as e:
            where = ", ".join(f"{d.path}={v!r}" for d, v in zip(dims, values))
            raise UserError(f"{source}: the combination {where} is invalid: {e}") from None


def load_space(path: str) -> Space:
    """Parse and validate a space file once: the typed fixed settings, the dimensions and the study."""
    data = read_yaml(path)
    search = data.pop("search", None) or {}
    study_data = data.pop("study", None) or {}  # read_yaml refuses `study:` left null
    try:
        study = from_dict(StudyConfig, study_data, "study")
        dims = parse_search(search)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    base = build_run_config(data, str(path))
    if study.search_seed is None:
        study.search_seed = int(np.random.SeedSequence().entropy % 2**31)
    seen = set()
    for d in dims:
        if d.path in seen:
            raise UserError(f"{path}: search.{d.path} appears twice")
        seen.add(d.path)
    _validate_values(base, dims, str(path))
    space = Space(str(path), base, dims, study)
    try:
        _check_search(space)
        _check_split_seeds(space)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    if study.scheduler.type in ("asha", "halving"):
        s = study.scheduler
        try:
            check_asha(space.max_epochs, s.grace_period, s.reduction_factor)
            if s.type == "halving":
                _check_halving(space)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    if study.confirm is not None:
        try:
            _check_confirm(space)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    metric = study.metric
    if metric not in SELECTION_METRICS:
        raise UserError(f"{path}: study.metric: {metric!r} is not a selection metric"
                        f"{did_you_mean(metric, SELECTION_METRICS)}; choose one of {', '.join(SELECTION_METRICS)} "
                        "(test metrics are never used to select)")
    try:
        extra_catalogs(base.data)  # labels of the cross-dataset sets read here: validate refuses what run would
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return space


@dataclass
class Expansion:
    """The trials of a study, in order, and what expanding the space folded away."""

    points: list[dict[str, Any]]  # searched values of each trial, by dotted key
    grid_points: int  # distinct grid points (split seeds apart)
    folded_grid: int  # grid points that repeated an earlier one's effective configuration
    folded: int  # further trials whose whole configuration repeated an earlier trial's
    why: dict[str, str]  # inert key -> reason, over everything folded


def _grid_key(space: Space, point: dict, drawn: set[str]) -> tuple[str, dict[str, str]]:
    """A grid point's identity with its inert keys at their defaults (only where the key that makes them inert
    is fixed or on the grid: a drawn alpha may turn out non-zero)."""
    cfg = with_values(space.base, point)
    inert = {k: why for k, why in inert_keys(cfg).items() if k in point and INERT_WHEN[k][0] not in drawn}
    canon = {k: ("inert" if k in inert else v) for k, v in point.items()}
    return json.dumps(canon, sort_keys=True, default=str), inert


def expand(space: Space) -> Expansion:
    """Every trial of the study: the distinct grid points (a point whose effective configuration repeats an
    earlier one's is dropped), for each sample each with its own random draws (seeded by study.search_seed),
    crossed last with the split seeds, which share those draws; a trial identical to an earlier one is run once."""
    if space.points is not None:
        return Expansion(list(space.points), len(space.points), 0, 0, {})
    rng = np.random.default_rng(space.study.search_seed)
    seeds = next((d.args for d in space.dims if d.path == SPLIT_SEED), [None])
    if space.proposed:
        raise ValueError("an optuna study proposes its trials while it runs: there is no list to expand")
    on_grid = (lambda d: d.primitive.arity is None) if space.study.search.type == "grid" else (
        lambda d: d.primitive.draw is None)
    grid = [d for d in space.dims if on_grid(d) and d.path != SPLIT_SEED]
    drawn = [d for d in space.dims if not on_grid(d)]
    distinct, seen, why = [], set(), {}
    for combo in itertools.product(*[d.args for d in grid]):
        point = {d.path: v for d, v in zip(grid, combo)}
        key, inert = _grid_key(space, point, {d.path for d in drawn})
        why.update(inert)
        if key not in seen:
            seen.add(key)
            distinct.append(point)
    points, trials, folded = [], set(), 0
    for _ in range(space.study.num_samples):
        for grid_point in distinct:
            shared = {**grid_point, **{d.path: d.primitive.draw(d.args, rng) for d in drawn}}
            for seed in seeds:
                point = shared if seed is None else {**shared, SPLIT_SEED: seed}
                cfg = with_values(space.base, point)
                key = json.dumps(dataclasses.asdict(effective(cfg)), sort_keys=True, default=str)
                if key in trials:
                    folded += 1
                    why.update({k: v for k, v in inert_keys(cfg).items() if k in point})
                    continue
                trials.add(key)
                points.append(point)
    folded_grid = math.prod(len(d.args) for d in grid) - len(distinct)
    return Expansion(points, len(distinct), folded_grid, folded, why if folded_grid or folded else {})


def _check_search(space: Space) -> None:
    s = space.study
    if s.search.type == "grid":
        ranges = [d for d in space.dims if d.primitive.arity is not None]
        if ranges:
            d = ranges[0]
            raise UserError(f"search.{d.path}: study.search.type grid takes listed values (grid or choice), and "
                            f"{d.kind} has none; list the values, or use study.search.type random or optuna")
        if s.num_samples != 1:
            raise UserError(f"study.num_samples: a grid runs each combination once; got {s.num_samples} (repeat "
                            "a configuration over seeds with iqa-tune confirm)")
    if s.search.startup_trials is not None and s.search.type != "optuna":
        raise UserError(f"study.search.startup_trials: only optuna has startup trials (type is {s.search.type})")
    if s.search.type == "optuna" and not space.dims:
        raise UserError("study.search.type optuna: nothing to search (no search: section)")


def _check_split_seeds(space: Space) -> None:
    """Split seeds are a grid axis, on a seeded split, without ASHA; each message says why and where to go."""
    d = next((d for d in space.dims if d.path == SPLIT_SEED), None)
    if d is None:
        return
    if d.kind != "grid":
        raise UserError(f"search.{SPLIT_SEED}: search split seeds with grid: every configuration is then trained "
                        f"on every split and the report groups them; {d.kind} would repeat seeds and never pair them")
    if len(set(d.args)) != len(d.args):
        raise UserError(f"search.{SPLIT_SEED}: a split seed is listed twice: {d.args}")
    if space.proposed:
        raise UserError(f"search.{SPLIT_SEED}: optuna proposes one configuration per trial and would not train it "
                        "on every split; search without split seeds and confirm the winners over seeds afterwards "
                        "(iqa-tune confirm)")
    if space.base.data.split.official and space.base.data.dataset in SHIPS_OFFICIAL_SPLIT:
        raise UserError(f"search.{SPLIT_SEED}: {space.base.data.dataset} uses its official split, which ignores the "
                        "seed; set data.split.official: false to search split seeds")
    if space.study.scheduler.type in ("asha", "halving"):
        name = "ASHA" if space.study.scheduler.type == "asha" else "synchronous halving"
        raise UserError(f"search.{SPLIT_SEED}: {name} would compare val SRCC measured on different val sets; use "
                        "study.scheduler: {type: none}, or search without split seeds and confirm the winners "
                        "over seeds afterwards")


def _check_halving(space: Space) -> None:
    """Synchronous halving waits at each rung for every trial of the study: they must all be known up front and
    all be let in."""
    s = space.study
    if space.proposed:
        raise UserError("study.scheduler.type: halving waits at each rung for every trial, but optuna proposes "
                        "each trial from the results of earlier ones; use {type: asha} with optuna, or "
                        "study.search: {type: random} or {type: grid} with halving")
    if s.max_concurrent and s.max_concurrent < space.num_trials:
        raise UserError(f"study.max_concurrent ({s.max_concurrent}) is below the study's {space.num_trials} "
                        "trials: halving pauses each trial at a rung until all have reached it, and a paused "
                        "trial holds its place, so the study would wait forever; remove max_concurrent "
                        "(study.resources still limit how many trials train at once)")


def _suggest(d: Dimension, trial) -> Any:
    """One value of ``d`` from an Optuna trial, over the same values the random search draws from."""
    a = d.args
    if d.primitive.arity is None:
        return trial.suggest_categorical(d.path, a)
    if d.kind == "uniform":
        return trial.suggest_float(d.path, a[0], a[1])
    if d.kind == "loguniform":
        return trial.suggest_float(d.path, a[0], a[1], log=True)
    if d.kind == "quniform":
        lo, hi = d.corners()
        return trial.suggest_float(d.path, lo, hi, step=a[2])
    return trial.suggest_int(d.path, a[0], a[1] - 1)  # randint: hi exclusive


@dataclass
class ProposalSpace:
    """Optuna's define-by-run space for a study (picklable: the searcher is saved with the experiment). Keys that
    decide whether others matter come first, and a key that the values so far make inert (ranking granularity at
    alpha 0, the cosine floor of a step schedule) is not asked for: TPE then models only what changes training."""

    space: Space

    def __call__(self, trial) -> None:
        controllers = {INERT_WHEN[k][0] for k in INERT_WHEN}
        values: dict[str, Any] = {}
        for d in sorted(self.space.dims, key=lambda d: d.path not in controllers):
            if d.path in inert_keys(with_values(self.space.base, values)):
                continue
            values[d.path] = _suggest(d, trial)
        return None


def _check_confirm(space: Space) -> None:
    """study.confirm fits this space: no more configurations than it runs, splits only on a seeded split."""
    c = space.study.confirm
    check_confirm_splits(space.base, c.split_seeds, "study.confirm.split_seeds")
    if space.proposed:  # optuna: as many configurations as trials, at most
        count = space.num_trials
    else:
        count = len({json.dumps({k: v for k, v in p.items() if k not in (SPLIT_SEED, "train.seed")},
                                sort_keys=True, default=str) for p in expand(space).points})
    if c.top > count:
        raise UserError(f"study.confirm.top: {c.top} exceeds the {count} configuration(s) this space "
                        "runs; lower it")


def with_resolved_paths(space: Space) -> Space:
    """The same space with every path of its fixed settings absolute (see :func:`config.resolve_paths`)."""
    return dataclasses.replace(space, base=resolve_paths(space.base))


def trial_config(space: Space, sampled: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the fixed settings with the sampled values applied."""
    return with_values(space.base, sampled)


def describe(space: Space) -> str:
    c, s = space.base, space.study
    lines = [f"{space.source}: valid",
             f"  fixed: {c.data.dataset} data, {c.model.backbone}, {c.train.epochs} epochs, batch {c.train.batch_size}",
             f"  study: {s.name!r} -> {s.storage}/{s.name}, metric {s.metric} ({s.mode}), "
             f"scheduler {s.scheduler.type}, {s.resources.cpu:g} CPU + {s.resources.gpu:g} GPU per trial",
             f"  search ({len(space.dims)} dimensions):"]
    lines += [f"    {d.path}: {d.describe()}" for d in space.dims] or ["    (none: one configuration)"]
    lines.append(f"  trials: {trial_count(space)}")
    if s.confirm is not None:
        c = s.confirm
        splits = f" x {c.split_seeds} splits" if c.split_seeds > 1 else ""
        lines.append(f"  then confirm: the top {c.top} by {s.metric} x {c.seeds} training seeds{splits} = "
                     f"{c.top * c.seeds * c.split_seeds} trials, without ASHA")
    return "\n".join(lines)


def trial_count(space: Space) -> str:
    """'6 (1 samples x 6 grid points; ...folded...)': the line validate and run both print."""
    if space.points is not None:
        return f"{len(space.points)} ({space.points_note or 'listed'})"
    if space.proposed:
        return (f"{space.num_trials} (proposed by optuna TPE, seed {space.study.search_seed}, the first "
                f"{min(space.startup_trials, space.num_trials)} at random)")
    e = expand(space)
    seeds = next((len(d.args) for d in space.dims if d.path == SPLIT_SEED), 1)
    size = f"{space.study.num_samples} samples x {e.grid_points} grid points"
    size += f" x {seeds} split seeds" if seeds > 1 else ""
    folds = []
    if e.folded_grid:
        folds.append(f"{e.folded_grid} grid point{'s' if e.folded_grid > 1 else ''} folded into an identical one")
    if e.folded:
        folds.append(f"{e.folded} repeated trials run once")
    if folds:
        size += f"; {', '.join(folds)}: " + "; ".join(f"{k}: {v}" for k, v in sorted(e.why.items()))
    return f"{len(e.points)} ({size})"
