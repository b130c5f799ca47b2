"""The Tune function trainable: one trial = one ``iqa-tune train`` configuration, one ``tune.report`` per epoch.

The trial side of the Ray edge (the driver side is ``iqa_tune.study``). A checkpoint is reported when the study
metric improves (one kept per trial), holding the solver state and the per-image test predictions of that epoch,
and, under synchronous halving, at every rung, where the trial may be paused: that one holds the state at the
rung and the predictions of the best epoch so far. A resumed trial restarts from the newest; batches depend only
on (seed, epoch), so the epochs it repeats see the same data as the first time. The trial's resolved config and split go into its folder of the experiment through
the study's storage (:class:`iqa_tune.storage.Store`: a folder or a URI), so they arrive from any node, and so
does every epoch's ``crops/epoch_NNN.npz`` (the fixed-crop predictions of every evaluation set).
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

import iqa_tune
from iqa_tune import records, storage
from iqa_tune.prepare import prepare_data
from iqa_tune.solver import Solver
from iqa_tune.space import Space, halving_rungs, trial_config


def _restore(solver: Solver) -> bytes | None:
    """Load the trial's newest checkpoint, if any; returns the test predictions file it holds (best epoch)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / records.STATE_FILE, map_location=solver.device, weights_only=False)
        solver.load_state_dict(state)
        predictions = Path(folder) / records.PREDICTIONS_FILE
        return predictions.read_bytes() if predictions.is_file() else None


def _pause_points(space: Space) -> set[int]:
    """The epochs where the study's scheduler may pause a trial (synchronous halving's rungs)."""
    s = space.study.scheduler
    return set(halving_rungs(space.max_epochs, s.grace_period, s.reduction_factor)) if s.type == "halving" else set()


def as_tune_metrics(metrics: dict) -> dict:
    """Booleans as floats: Tune's result files and schedulers compare numbers."""
    return {k: (float(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in metrics.items()}


def _trial_name() -> str:
    return Path(tune.get_context().get_trial_dir()).name  # the trial's folder name in the experiment


def _write_crops(results: storage.Store, solver: Solver, epoch: int) -> None:
    """The epoch's crop predictions of every evaluation set, as ``crops/epoch_NNN.npz`` in the trial's folder of
    the experiment (through the study's storage, like the run files); before the epoch is reported, so a row in
    the results always has its file."""
    with tempfile.TemporaryDirectory() as folder:
        records.save_crop_predictions(records.crop_prediction_path(folder, epoch), solver.crops, epoch)
        storage.put_folder(results, Path(folder) / records.CROPS_DIR, f"{_trial_name()}/{records.CROPS_DIR}")


def _write_run_files(results: storage.Store, data, cfg) -> None:
    """The resolved config and the split, in the trial's folder of the experiment; once: a resumed trial keeps
    those it started with."""
    trial = _trial_name()
    if storage.holds(results, f"{trial}/{records.CONFIG_FILE}"):
        return
    with tempfile.TemporaryDirectory() as folder:
        data.write_run_files(Path(folder), cfg)
        storage.put_folder(results, Path(folder), trial)


def hyperiqa_trainable(config: dict, space: Space, results: storage.Store) -> None:
    if torch.cuda.is_available():  # a reused worker: give back what the previous trial's model held on the card
        gc.collect()
        torch.cuda.empty_cache()
    cfg = trial_config(space, config)
    data = prepare_data(cfg, progress=False)  # opens the cache the driver built (or builds it on a new node)
    _write_run_files(results, data, cfg)
    solver = Solver(cfg, data, select=space.study.metric, mode=space.study.mode)
    best_predictions = _restore(solver)
    pauses = _pause_points(space)
    # where the trial ran and which copy of iqa_tune it imported (the one the driver shipped, see study.connect)
    where = {"node_id": ray.get_runtime_context().get_node_id(), "code": str(Path(iqa_tune.__file__).parent)}
    for metrics, test_pred in solver.fit():
        _write_crops(results, solver, metrics["epoch"])
        metrics = as_tune_metrics({**metrics, **where})
        if not metrics["improved"] and metrics["epoch"] not in pauses:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            torch.save(solver.state_dict(), Path(folder) / records.STATE_FILE)
            predictions = Path(folder) / records.PREDICTIONS_FILE
            if metrics["improved"] and test_pred is not None:
                data.save_test_predictions(predictions, test_pred, metrics["epoch"])
                best_predictions = predictions.read_bytes()
            elif best_predictions is not None:  # a rung's checkpoint carries the best epoch's predictions along
                predictions.write_bytes(best_predictions)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
