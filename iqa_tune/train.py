"""``iqa-tune train CONFIG.yaml``: one configuration, no Ray, the same schema as one trial of a study.

Writes into OUT_DIR/NAME/ (file names in :mod:`iqa_tune.records`): ``config.yaml`` (resolved), ``split.json``,
``metrics.jsonl`` (one line per epoch, appended as it goes, so an interrupted run keeps what it computed),
``best.pt`` (state at the best val epoch) and ``test_predictions.npz`` (per-image test predictions of that epoch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import records
from .config import RunConfig
from .solver import Solver, prepare_data


def _figure(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _summary(console: Console, solver: Solver, last: dict, out: Path) -> None:
    best = solver.best.row
    table = Table(title=f"{solver.cfg.name}: {solver.epoch} epochs", show_header=True)
    for col in ("", "epoch", "val SRCC", "val PLCC", "test SRCC", "test PLCC"):
        table.add_column(col, justify="right")
    for label, row in (("best val epoch (report this)", best), ("last epoch", last)):
        table.add_row(label, str(row["epoch"]), *[_figure(row.get(k)) for k in
                                                  ("val_srcc", "val_plcc", "test_srcc", "test_plcc")])
    console.print(table)
    console.print(f"results: {out}", markup=False)


def run_train(cfg: RunConfig, console: Console | None = None) -> tuple[Path, dict]:
    """Train ``cfg`` with a progress bar; returns (output folder, metrics of the best val epoch)."""
    console = console or Console()
    data = prepare_data(cfg, progress=True)
    out = records.unique_dir(Path(cfg.out_dir) / cfg.name)
    data.write_run_files(out, cfg)
    solver = Solver(cfg, data)
    console.print(f"{cfg.name}: {cfg.data.dataset} ({', '.join(f'{k} {len(v)}' for k, v in data.split.items())}"
                  f" images), {cfg.model.backbone}, {solver.device}, output {out}", markup=False)
    metric = solver.best.metric
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as bar, \
            open(out / records.METRICS_FILE, "a") as log:
        task = bar.add_task("train", total=None, epoch=1, status="")
        for metrics, test_pred in solver.fit(lambda b, n: bar.update(task, completed=b, total=n)):
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            if metrics["improved"]:
                torch.save(solver.state_dict(), out / records.STATE_FILE)
                data.save_test_predictions(out / records.PREDICTIONS_FILE, test_pred, metrics["epoch"])
            last = metrics
            bar.update(task, completed=0, epoch=min(metrics["epoch"] + 1, cfg.train.epochs),
                       status=f"loss {metrics['train_loss']:.3f}  {metric} {_figure(metrics.get(metric))}  "
                              f"best {_figure(metrics[records.best_key(metric)])} (epoch {metrics['best_epoch']})")
    _summary(console, solver, last, out)
    return out, solver.best.row
