"""Read an experiment folder (no live Ray) into one table: a row per trial per epoch.

Sources, all written by Tune or by the trainable: ``<trial>/params.json`` (the searched values),
``<trial>/result.json`` (one JSON line per reported epoch; a resumed trial may report an epoch twice, the later
row wins), ``<trial>/error.txt`` (why it errored), ``experiment_state-*.json`` (trial status), and
``<trial>/checkpoint_*/test_predictions.npz`` (per-image test predictions at the best epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HP_PREFIX = "hp."


def _statuses(exp_dir: Path) -> dict[str, str]:
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        out[state.get("trial_id", "")] = state.get("status", "")
    return out


def how_it_ended(status: str, last: dict | None, errored: bool = False) -> str:
    """One trial's ending from Tune's status and its last reported row; the live table and the report share it."""
    if errored or status == "ERROR":
        return "errored"
    if status in ("RUNNING", "PENDING", "PAUSED"):
        return status.lower()
    if last is None:
        return "no results"
    if last.get("patience_stop"):
        return "early stop (patience)"
    if last.get("max_epochs") and last["epoch"] < last["max_epochs"]:
        return "stopped by ASHA"  # a trial that returns on its own reaches max_epochs or sets patience_stop
    return "completed"


def read_results(trial_dir: Path) -> list[dict]:
    """A trial's reported rows in epoch order, one per epoch (the later wins where a resume repeated one)."""
    rows = {}
    path = trial_dir / "result.json"
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


def _error(trial_dir: Path) -> str:
    path = trial_dir / "error.txt"
    if not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "error"


def study_settings(exp_dir: Path) -> dict:
    """metric/mode/max epochs as recorded by ``iqa-tune run`` (study.yaml), with the defaults otherwise."""
    path = exp_dir / "study.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text()) or {}
    return {}


def load_experiment(exp_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials): a row per trial per epoch, and a row per trial (status, reason, hyperparameters)."""
    statuses = _statuses(exp_dir)
    epoch_rows, trial_rows = [], []
    for trial_dir in sorted(p for p in exp_dir.iterdir() if (p / "params.json").is_file()):
        trial_id = trial_dir.name
        params = json.loads((trial_dir / "params.json").read_text())
        hps = {HP_PREFIX + k: v for k, v in params.items()}
        results = read_results(trial_dir)
        error = _error(trial_dir)
        status = statuses.get(trial_id, "")
        last_epoch = results[-1]["epoch"] if results else 0
        ended = how_it_ended(status, results[-1] if results else None, bool(error))
        predictions = sorted(trial_dir.glob("checkpoint_*/test_predictions.npz"))
        trial_rows.append({"trial": trial_id, "ended": ended, "reason": error, "epochs_run": last_epoch,
                           "predictions": str(predictions[-1]) if predictions else "", **hps})
        for r in results:
            epoch_rows.append({"trial": trial_id, "ended": ended, **hps,
                               **{k: v for k, v in r.items() if isinstance(v, (int, float, str, bool))
                                  and k not in ("config", "trial_id")}})
    return pd.DataFrame(epoch_rows), pd.DataFrame(trial_rows)


def load_predictions(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image paths, labels, predictions) of a trial's best epoch, or None."""
    if not path or not Path(path).is_file():
        return None
    with np.load(path) as z:
        return z["path"], z["label"], z["pred"]
