"""The Tune function trainable: one trial = one ``iqa-tune train`` configuration, one ``tune.report`` per epoch.

A checkpoint is reported only when the study metric improves (one kept per trial), holding the solver state and
the per-image test predictions of that epoch. A resumed trial restarts from it; batches depend only on
(seed, epoch), so the epochs it repeats see the same data as the first time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

from iqa_tune.prepare import prepare_data
from iqa_tune.solver import Solver
from iqa_tune.space import Space, trial_config
from iqa_tune.train import save_predictions, write_run_files

STATE_FILE = "state.pt"
PREDICTIONS_FILE = "test_predictions.npz"


def _restore(solver: Solver) -> None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        solver.load_state_dict(torch.load(Path(folder) / STATE_FILE, map_location=solver.device, weights_only=False))


def _numeric(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in metrics.items()}


def hyperiqa_trainable(config: dict, space: Space) -> None:
    cfg = trial_config(space, config)
    data = prepare_data(cfg, progress=False)  # opens the cache the driver built (or builds it on a new node)
    trial_dir = Path(tune.get_context().get_trial_dir())
    if trial_dir.is_dir() and not (trial_dir / "config.yaml").exists():
        write_run_files(trial_dir, cfg, data)
    solver = Solver(cfg, data, select=space.study.metric, mode=space.study.mode)
    _restore(solver)
    node = ray.get_runtime_context().get_node_id()
    for metrics, test_pred in solver.fit():
        metrics = _numeric({**metrics, "node_id": node, "max_epochs": cfg.train.epochs})
        if metrics["improved"]:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(solver.state_dict(), Path(folder) / STATE_FILE)
                if test_pred is not None:
                    save_predictions(Path(folder) / PREDICTIONS_FILE, data, test_pred, metrics["epoch"])
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
