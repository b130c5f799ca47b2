"""``iqa-tune confirm``: which configurations of a finished study to retrain, and on which seeds.

A study's trial is one training seed on one split, so its ranking says nothing of seed-to-seed variance. The
confirmation retrains the top configurations by the study metric (val, never test) from scratch, each with the
same training seeds (and split seeds, where the dataset has no official split), all epochs, no ASHA. Decided here
from the study's own records (each trial's resolved ``config.yaml`` and its per-epoch results), without Ray; the
driver (:func:`iqa_tune.study.run_confirmation`) runs the plan as a Tune experiment of its own in
``STUDY/confirm/``, and :mod:`iqa_tune.reports.confirmation` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import records
from .config import RunConfig, build_run_config, effective, with_values
from .datasets import SHIPS_OFFICIAL_SPLIT
from .errors import UserError
from .space import SPLIT_SEED, Dimension, ResourcesConfig, SchedulerConfig, Space, StudyConfig, check_confirm_splits

TRAIN_SEED = "train.seed"


@dataclass
class Configuration:
    name: str  # the search trial it came from (its best one, when the search ran it on several seeds or splits)
    config: RunConfig  # as the search ran it, early stopping off
    search_trials: list[str]
    search_metric: float  # median over those trials of the study metric at their best epochs
    split_seeds: list[int]  # the splits the search ran it on
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # where it differs from the other chosen ones


@dataclass
class ConfirmPlan:
    study_dir: Path
    metric: str
    mode: str
    configurations: list[Configuration]
    seeds: list[int]  # training seeds, the same for every configuration
    split_seeds: list[int]
    space: Space  # the confirmation as a study: the best configuration + explicit points (configuration x seeds)
    skipped: int  # configurations of the search beyond the top that had results
    note: str = ""  # what the user should know about how the plan was made

    @property
    def trials(self) -> int:
        return len(self.space.points)

    def record(self) -> dict:
        """The plan as ``confirm/study.yaml`` keeps it (what the report reads back)."""
        return {"study": str(self.study_dir), "seeds": self.seeds, "split_seeds": self.split_seeds,
                "configurations": [{"name": c.name, "values": c.values, "search_trials": c.search_trials,
                                    "search_metric": _plain(c.search_metric)} for c in self.configurations]}


def _plain(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# ----------------------------------------------------------------------------------------------------------------
# reading the study


def _study_trials(study_dir: Path, metric: str, mode: str) -> list[tuple[str, RunConfig, float]]:
    """(trial, config, study metric at its best epoch) of every search trial that reported and did not error."""
    epochs, trials = records.load_experiment(study_dir)
    out = []
    for _, t in trials.iterrows():
        if t["ended"] == "errored" or not len(epochs):
            continue
        hist = epochs[epochs["trial"] == t["trial"]].sort_values("epoch")
        if hist.empty or metric not in hist:
            continue
        value = hist[metric].iloc[records.best_index(hist[metric].tolist(), mode)]
        path = study_dir / t["trial"] / records.CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{study_dir / t['trial']}: no {records.CONFIG_FILE}; a trial of an older iqa-tune "
                            "cannot be retrained")
        cfg = build_run_config(yaml.safe_load(path.read_text()), str(path))
        out.append((t["trial"], cfg, float(value)))
    return out


def _identity(cfg: RunConfig) -> str:
    """A configuration apart from its seeds (and early stopping, which the confirmation switches off)."""
    neutral = with_values(cfg, {TRAIN_SEED: 0, SPLIT_SEED: 0, "train.patience": 0})
    return json.dumps(dataclasses.asdict(effective(neutral)), sort_keys=True, default=str)


def _score(values: list[float], mode: str) -> float:
    defined = [v for v in values if math.isfinite(v)]
    if not defined:
        return -math.inf
    m = statistics.median(defined)
    return m if mode == "max" else -m


def rank_configurations(study_dir: Path, metric: str, mode: str) -> list[Configuration]:
    """The search's trials grouped into configurations (trials that differ only in seeds are one), best first by the
    median of the study metric over their trials; configurations with no defined value are left out."""
    groups: dict[str, list[tuple[str, RunConfig, float]]] = {}
    for trial, cfg, value in _study_trials(study_dir, metric, mode):
        groups.setdefault(_identity(cfg), []).append((trial, cfg, value))
    ranked = sorted(groups.values(), key=lambda g: -_score([v for *_, v in g], mode))  # stable: ties keep order
    out = []
    for g in ranked:
        values = [v for *_, v in g]
        if not math.isfinite(_score(values, mode)):
            continue
        best = g[records.best_index(values, mode)]
        cfg = with_values(best[1], {"train.patience": 0})
        splits = list(dict.fromkeys(c.data.split.seed for _, c, _ in g))
        out.append(Configuration(best[0], cfg, [t for t, *_ in g], statistics.median(
            [v for v in values if math.isfinite(v)]), splits))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the plan


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every setting of a config by dotted key; a free-form mapping (model.backbone_kwargs) down to its leaves."""
    out = {}
    items = ({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj)
             else obj)
    for key, value in items.items():
        path = f"{prefix}.{key}" if prefix else key
        if dataclasses.is_dataclass(value) or (isinstance(value, dict) and value):
            out.update(_leaves(value, path))
        else:
            out[path] = value
    return out


def _fresh(used: set[int], n: int, first: list[int] = ()) -> list[int]:
    """``first``, then the smallest non-negative integers not in ``used`` (nor already taken), ``n`` in all."""
    out = list(dict.fromkeys(first))[:n]
    candidate = 0
    while len(out) < n:
        if candidate not in used and candidate not in out:
            out.append(candidate)
        candidate += 1
    return out


def _differences(configurations: list[Configuration]) -> list[str]:
    """The settings where the chosen configurations differ (seeds and early stopping aside); each must be a value
    Tune can pass as a point."""
    leaves = [_leaves(effective(c.config)) for c in configurations]
    keys = [k for k in leaves[0] if k not in (TRAIN_SEED, SPLIT_SEED)
            and any(json.dumps(lv.get(k), default=str) != json.dumps(leaves[0][k], default=str) for lv in leaves)]
    for k in keys:
        if any(isinstance(lv.get(k), (list, dict)) for lv in leaves):
            raise UserError(f"the configurations to confirm differ in {k}, a list: a Tune point cannot carry it")
    return keys


def _study_settings(study_dir: Path, settings: dict) -> StudyConfig:
    """The confirmation's own study settings: the search's metric, mode, resources and limits; no scheduler."""
    from .space import load_space

    recorded = settings.get("resources")
    resources, max_concurrent, max_failures = ResourcesConfig(), None, 0
    if recorded:
        resources = ResourcesConfig(**recorded)
        max_concurrent, max_failures = settings.get("max_concurrent"), settings.get("max_failures", 0)
    elif settings.get("source") and Path(settings["source"]).is_file():  # a study from before these were recorded
        try:
            s = load_space(settings["source"]).study
            resources, max_concurrent, max_failures = s.resources, s.max_concurrent, s.max_failures
        except UserError:
            pass
    return StudyConfig(name=records.CONFIRM_DIR, storage=str(study_dir), metric=settings.get("metric", "val_srcc"),
                       mode=settings.get("mode", "max"), scheduler=SchedulerConfig(type="none"), resources=resources,
                       max_concurrent=max_concurrent, max_failures=max_failures, search_seed=0)


def check_study_dir(study_dir: Path) -> dict:
    """The study's recorded settings; a folder that is not a study (or is a confirmation) is a user error."""
    if (study_dir / records.STUDY_FILE).is_file() and records.study_settings(study_dir).get("confirm"):
        raise UserError(f"{study_dir}: this is a confirmation; give the study folder that holds it "
                        f"({study_dir.parent})")
    if not study_dir.is_dir() or not any((p / records.PARAMS_FILE).is_file() for p in study_dir.iterdir()):
        raise UserError(f"{study_dir}: not a study folder (expected the folder `iqa-tune run` printed, "
                        "STORAGE/NAME, holding trial folders with params.json)")
    return records.study_settings(study_dir)


def plan_confirmation(study_dir: Path, top: int, seeds: int, split_seeds: int) -> ConfirmPlan:
    """The top ``top`` configurations by the study metric x ``seeds`` fresh training seeds x ``split_seeds`` splits.

    Training seeds are the smallest the search did not use, so a configuration's lucky search seed is not counted
    again; splits start with the search's own."""
    study_dir = Path(study_dir).resolve()
    settings = check_study_dir(study_dir)
    for key, value, least in (("--top", top, 1), ("--seeds", seeds, 2), ("--split-seeds", split_seeds, 1)):
        if value < least:
            raise UserError(f"{key}: must be >= {least}, got {value}" + (" (a spread over seeds needs two)"
                                                                        if key == "--seeds" else ""))
    metric, mode = settings.get("metric", "val_srcc"), settings.get("mode", "max")
    ranked = rank_configurations(study_dir, metric, mode)
    if not ranked:
        raise UserError(f"{study_dir}: no trial of this study has a defined {metric}; nothing to confirm")
    chosen = ranked[:top]
    note = (f"only {len(ranked)} configuration(s) of the search have results: confirming all of them"
            if top > len(ranked) else "")
    best = chosen[0].config
    official = best.data.split.official and best.data.dataset in SHIPS_OFFICIAL_SPLIT
    check_confirm_splits(best, split_seeds, "--split-seeds")
    used = {c.config.train.seed for c in ranked}
    train_seeds = _fresh(used, seeds)
    searched_splits = [s for c in chosen for s in c.split_seeds]
    splits = [best.data.split.seed] if official else _fresh(set(searched_splits), split_seeds, searched_splits)
    keys = _differences(chosen)
    for c in chosen:
        c.values = {k: _leaves(effective(c.config))[k] for k in keys}
    base = chosen[0].config
    points = [{**c.values, TRAIN_SEED: seed, SPLIT_SEED: split}  # seed by seed: an early stop leaves whole pairs
              for seed in train_seeds for split in splits for c in chosen]
    for c in chosen:  # what the trials will run is exactly what the search ran, seeds aside
        if _identity(with_values(base, c.values)) != _identity(c.config):
            raise UserError(f"{study_dir}: configuration {c.name} cannot be expressed as settings of {chosen[0].name}")
    dims = [Dimension(k, "grid", list(dict.fromkeys(json.dumps(c.values[k], default=str) for c in chosen)))
            for k in keys]
    for d in dims:
        d.args = [json.loads(a) for a in d.args]
    dims += [Dimension(TRAIN_SEED, "grid", train_seeds), Dimension(SPLIT_SEED, "grid", splits)]
    size = f"{len(chosen)} configurations x {len(train_seeds)} training seeds"
    size += f" x {len(splits)} splits" if len(splits) > 1 else ""
    space = Space(str(study_dir), base, dims, _study_settings(study_dir, settings), points=points, points_note=size)
    return ConfirmPlan(study_dir, metric, mode, chosen, train_seeds, splits, space, max(len(ranked) - top, 0), note)
