"""What a run writes and what a report reads: run folders, run files, metric names, the best-epoch rule, how a
trial ended, and reading an experiment folder back into tables.

The one place that knows the file layout. Data flows one way through it: the solver's per-epoch metrics are
written here (by ``iqa-tune train``, or by Tune from the trainable's reports), and ``reports/`` reads them back
through :func:`load_experiment`. Nothing here imports Ray; Tune's private experiment-state files are never read:
trial status comes from the driver's own ``trial_status.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import UserError

# files of one run (``iqa-tune train``) or one trial folder
CONFIG_FILE = "config.yaml"  # the resolved run config
SPLIT_FILE = "split.json"  # the images of each split, by path
METRICS_FILE = "metrics.jsonl"  # iqa-tune train: one line per epoch, appended as it goes
RESULT_FILE = "result.json"  # Tune's per-trial JSON lines (one per tune.report)
PARAMS_FILE = "params.json"  # Tune: the trial's searched values
ERROR_FILE = "error.txt"  # Tune: why a trial errored
PREDICTIONS_FILE = "test_predictions.npz"  # per-image test predictions at the best epoch
STATE_FILE = "best.pt"  # solver state at the best epoch (under halving: at the last rung it reached, if newer)
VERSIONS_FILE = "versions.json"  # iqa-tune train: what ran (iqa_tune.versions.collect)
CROPS_DIR = "crops"  # every epoch's fixed-crop predictions of every evaluation set: crops/epoch_NNN.npz
# files of a study folder
STUDY_FILE = "study.yaml"  # what the driver recorded: source, metric, mode, max epochs, trials, versions
TRIAL_STATUS_FILE = "trial_status.json"  # the driver's last view of each trial's status
REPORT_DIR = "report"  # iqa-tune report's output inside the study folder (rewritten live while a study runs)
# iqa-tune confirm: the top configurations retrained over seeds, a Tune experiment of its own inside the study
# folder, with the same files (its study.yaml adds the plan under `confirm:`)
CONFIRM_DIR = "confirm"
HP_PREFIX = "hp."  # searched values in the tables: hp.loss.alpha

# metrics a study may select on (never a test metric) and whether larger is better
SELECTION_METRICS = {"val_srcc": "max", "val_plcc": "max", "val_krcc": "max", "train_loss": "min",
                     "train_srcc_patch": "max", "train_srcc_image": "max"}
AT_BEST = ("test_srcc", "test_plcc")  # read at the best epoch: the honest figures to report
XTEST_PREFIX = "xtest_"  # the evaluation sets and metric columns of data.extra_tests: xtest_<name>_srcc...


def is_xtest_srcc(column: str) -> bool:
    """A cross-dataset set's SRCC column (``xtest_<name>_srcc``), never a selection metric."""
    return column.startswith(XTEST_PREFIX) and column.endswith("_srcc")


def best_key(metric: str) -> str:
    """Column of the best value so far of the selection metric: ``best_val_srcc``, ``best_val_krcc``..."""
    return f"best_{metric}"


def at_best_key(name: str) -> str:
    """Column of a test figure read at the best epoch: ``test_srcc_at_best``."""
    return f"{name}_at_best"


# ----------------------------------------------------------------------------------------------------------------
# the best-epoch rule: decided here, read by the solver, the reports and the bench


def _score(value: Any, mode: str) -> float:
    """Larger is better; an undefined value (NaN, None) is the worst of all."""
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return float(value) if mode == "max" else -float(value)


def better(value: Any, than: Any, mode: str) -> bool:
    """Strictly better by ``mode``; NaN is never better, and anything defined beats NaN."""
    return _score(value, mode) > _score(than, mode)


def best_index(values: list, mode: str) -> int:
    """Position of the best value (the first on ties; NaN counts as worst)."""
    best = 0
    for i, v in enumerate(values):
        if i and better(v, values[best], mode):
            best = i
    return best


@dataclass
class BestEpoch:
    """Tracks the best epoch by the selection metric and the test figures at that epoch."""

    metric: str = "val_srcc"
    mode: str = "max"
    row: dict = field(default_factory=dict)  # the metrics of the best epoch so far
    since: int = 0  # epochs since it

    def update(self, metrics: dict) -> dict:
        """Fold one epoch in; returns the fields every reported row carries."""
        improved = not self.row or better(metrics.get(self.metric), self.row.get(self.metric), self.mode)
        if improved:
            self.row, self.since = dict(metrics), 0
        else:
            self.since += 1
        # the cross-dataset sets too: how the epoch chosen on val generalises beyond the study's dataset
        xtest = [k for k in metrics if is_xtest_srcc(k)]
        return {"improved": improved, "best_epoch": self.row["epoch"],
                best_key(self.metric): self.row.get(self.metric, math.nan),
                **{at_best_key(k): self.row.get(k, math.nan) for k in (*AT_BEST, *xtest)}}

    def state_dict(self) -> dict:
        return {"row": self.row, "since": self.since}

    def load_state_dict(self, state: dict) -> None:
        self.row, self.since = state["row"], state["since"]


# ----------------------------------------------------------------------------------------------------------------
# writing


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... : never overwrite an earlier run."""
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    try:
        path.mkdir(parents=True)
    except (OSError, ValueError) as e:
        raise UserError(f"out_dir, name: cannot create the run folder {path}: {e}") from None
    return path


def write_run_files(out: Path, config: dict, split: dict) -> None:
    """The resolved config and the split (image paths per split), next to a run's results."""
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    (out / SPLIT_FILE).write_text(json.dumps(split))


def write_versions(out: Path, versions: dict) -> None:
    """What ran (iqa-tune, git commit, libraries, GPU), next to a run's results."""
    (out / VERSIONS_FILE).write_text(json.dumps(versions, indent=1) + "\n")


def save_predictions(path: Path, paths: list[str], labels: np.ndarray, pred: np.ndarray, epoch: int) -> None:
    np.savez(path, path=np.array(paths), label=labels, pred=pred, epoch=epoch)


def load_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image paths, labels, predictions) of a trial's best epoch, or None; a damaged file (cut by a crash) is a
    :class:`UserError` naming it."""
    if not path or not Path(path).is_file():
        return None
    try:
        with np.load(path) as z:
            return z["path"], z["label"], z["pred"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: damaged ({_first_line(e)})") from None


def crop_prediction_path(folder: str | Path, epoch: int) -> Path:
    """Where a run or trial folder keeps one epoch's crop predictions (``epoch`` counts from 1)."""
    return Path(folder) / CROPS_DIR / f"epoch_{epoch:03d}.npz"


def save_crop_predictions(path: str | Path, sets: dict[str, tuple], epoch: int) -> None:
    """One epoch's fixed-crop predictions: for each evaluation set S (val, test, train_eval, xtest_<name>),
    ``S_pred`` float32 (images, crops), ``S_label`` float64 (images,) and ``S_path`` (images,), from
    ``sets[S] = (paths, labels, crops)``; plus ``epoch``. Written under a temporary name and renamed, so a reader
    never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"epoch": np.int64(epoch)}
    for name, (paths, labels, crops) in sets.items():
        arrays[f"{name}_pred"] = np.asarray(crops, dtype=np.float32)
        arrays[f"{name}_label"] = np.asarray(labels, dtype=np.float64)
        arrays[f"{name}_path"] = np.array([str(p) for p in paths])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_crop_predictions(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """set name -> {pred, label, path} of one ``crops/epoch_NNN.npz``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            name, _, part = key.rpartition("_")
            if part in ("pred", "label", "path") and name:
                out.setdefault(name, {})[part] = z[key]
    return out


def crop_prediction_files(folder: str | Path) -> dict[int, Path]:
    """epoch -> its crop predictions file, in epoch order, of a run or trial folder (empty if it has none)."""
    found = {}
    for p in (Path(folder) / CROPS_DIR).glob("epoch_*.npz"):
        digits = p.stem.removeprefix("epoch_")
        if digits.isdigit():
            found[int(digits)] = p
    return dict(sorted(found.items()))


def latest_predictions(trial_dir: Path) -> Path | None:
    """A Tune trial's test predictions at its best epoch so far (its newest checkpoint holds them), or None."""
    found = sorted(Path(trial_dir).glob(f"checkpoint_*/{PREDICTIONS_FILE}"))
    return found[-1] if found else None


def state_file(run_dir: Path) -> Path | None:
    """Where the model state of a run is: ``best.pt`` in an ``iqa-tune train`` folder, or in a Tune trial's newest
    checkpoint (which the path names even where the file is not in a URI experiment's mirror: it is never
    pulled); None when the run saved none."""
    run_dir = Path(run_dir)
    if (run_dir / STATE_FILE).is_file():
        return run_dir / STATE_FILE
    found = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    return found[-1] / STATE_FILE if found else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_study_settings(exp_dir: Path, settings: dict) -> None:
    _write_atomic(exp_dir / STUDY_FILE, yaml.safe_dump(settings, sort_keys=False))


def study_settings(exp_dir: Path) -> dict:
    """What ``iqa-tune run`` recorded (source, metric, mode, max epochs, trials, versions), or {} when there is no
    record; a damaged one (a study killed mid-write, an edit gone wrong) is a :class:`UserError` naming it."""
    path = exp_dir / STUDY_FILE
    if not path.is_file():
        return {}
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: the study's record is damaged (not readable YAML: {_first_line(e)})") from None
    if not isinstance(settings, dict):
        raise UserError(f"{path}: the study's record is damaged (a {type(settings).__name__}, not a mapping of "
                        "settings)")
    return settings


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def write_trial_status(exp_dir: Path, statuses: dict[str, str]) -> None:
    _write_atomic(exp_dir / TRIAL_STATUS_FILE, json.dumps(statuses, sort_keys=True))


def read_trial_status(exp_dir: Path) -> dict[str, str]:
    path = exp_dir / TRIAL_STATUS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------------------------------------------
# reading back


def how_it_ended(status: str, last: dict | None, errored: bool = False) -> str:
    """One trial's ending from its status and its last reported row; the live table and the report share it."""
    if errored or status == "ERROR":
        return "errored"
    if status in ("RUNNING", "PENDING", "PAUSED", "INTERRUPTED"):
        return status.lower()
    if last is None:
        return "no results"
    if last.get("patience_stop"):
        return "early stop (patience)"
    if last.get("max_epochs") and last["epoch"] < last["max_epochs"]:
        return "cut at a rung"  # a trial that returns on its own reaches max_epochs or sets patience_stop
    return "completed"


def read_results(trial_dir: Path, name: str = RESULT_FILE) -> list[dict]:
    """A run's rows in epoch order, one per epoch (the later wins where a resume repeated one)."""
    rows = {}
    path = trial_dir / name
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if "epoch" in r:
            rows[int(r["epoch"])] = r
    return [rows[k] for k in sorted(rows)]


def read_error(trial_dir: Path) -> str:
    """The last line of a trial's error, or ''."""
    path = trial_dir / ERROR_FILE
    if not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return "error"
    # iqa-tune's own errors (UserError and its kin) are sentences for the user: the class name is noise there
    return re.sub(r"^iqa_tune(\.\w+)+: ", "", lines[-1])[:300]


def _inert(trial_dir: Path) -> list[str]:
    """The keys that had no effect in a trial (from its resolved config): its marginals leave it out."""
    from .config import build_run_config, inert_keys

    path = trial_dir / CONFIG_FILE
    try:
        return sorted(inert_keys(build_run_config(yaml.safe_load(path.read_text())))) if path.is_file() else []
    except Exception:  # a config of another version: no marginal is worth a failed report
        return []


def _ran_with(trial_dir: Path, keys: set[str]) -> dict:
    """The values a trial's resolved config holds for ``keys``: for a key the searcher did not ask for in that
    trial (optuna skips one that the values so far make inert), the setting it ran with (None if unknown)."""
    path = trial_dir / CONFIG_FILE
    try:
        cfg = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        cfg = {}
    out = {}
    for key in sorted(keys):
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


DAMAGED = "damaged"  # how a trial ended whose params.json was cut: its searched values are lost


def _read_params(trial_dir: Path) -> dict | str:
    """A trial's searched values, or what is wrong with its params.json (a study killed mid-write)."""
    try:
        params = json.loads((trial_dir / PARAMS_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{trial_dir / PARAMS_FILE}: damaged (not readable JSON: {_first_line(e)})"
    return params if isinstance(params, dict) else f"{trial_dir / PARAMS_FILE}: damaged (not a mapping)"


def load_experiment(exp_dir: Path):
    """(epochs, trials) as DataFrames: a row per trial per epoch, and a row per trial (how it ended, why,
    its searched values as ``hp.*``, the file of its best epoch's test predictions, and ``damaged``: the name of
    a file of the trial that could not be read, or '')."""
    import pandas as pd

    statuses = read_trial_status(exp_dir)
    epoch_rows, trial_rows = [], []
    trial_dirs = sorted(p for p in exp_dir.iterdir() if (p / PARAMS_FILE).is_file())
    params = {p: _read_params(p) for p in trial_dirs}
    searched = set().union(*(v for v in params.values() if isinstance(v, dict)))
    for trial_dir in trial_dirs:
        trial_id = trial_dir.name
        if isinstance(params[trial_dir], str):  # its searched values are lost: listed as damaged, nothing else
            trial_rows.append({"trial": trial_id, "ended": DAMAGED, "reason": params[trial_dir], "epochs_run": 0,
                               "predictions": "", "inert": "", "damaged": PARAMS_FILE})
            continue
        missing = searched - set(params[trial_dir])
        sampled = {**params[trial_dir], **_ran_with(trial_dir, missing)}
        hps = {HP_PREFIX + k: v for k, v in sampled.items()}
        results = read_results(trial_dir)
        error = read_error(trial_dir)
        status = statuses.get(trial_id, "")
        # Tune appends to error.txt and never clears it: a retried trial that then finished keeps the file, so
        # the recorded status decides where there is one
        ended = how_it_ended(status, results[-1] if results else None, bool(error) and not status)
        predictions = latest_predictions(trial_dir)
        damaged = ""
        try:
            load_predictions(predictions)
        except UserError as e:  # the trial's figures stand; only its test intervals are lost
            damaged, error = PREDICTIONS_FILE, error or str(e)
            predictions = None
        trial_rows.append({"trial": trial_id, "ended": ended, "reason": error,
                           "epochs_run": results[-1]["epoch"] if results else 0,
                           "predictions": str(predictions or ""),
                           "inert": ",".join(_inert(trial_dir)), "damaged": damaged, **hps})
        for r in results:
            epoch_rows.append({"trial": trial_id, "ended": ended, **hps,
                               **{k: v for k, v in r.items() if isinstance(v, (int, float, str, bool))
                                  and k not in ("config", "trial_id")}})
    return pd.DataFrame(epoch_rows), pd.DataFrame(trial_rows)
