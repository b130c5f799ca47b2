"""``iqa-tune train CONFIG.yaml``: one configuration, no Ray, the same schema as one trial of a study.

Writes into OUT_DIR/NAME/ (file names in :mod:`iqa_tune.records`): ``config.yaml`` (resolved), ``split.json``,
``versions.json`` (iqa-tune, git commit, libraries, GPU), ``metrics.jsonl`` (one line per epoch, appended as it goes, so an interrupted run keeps what it computed),
``best.pt`` (state at the best val epoch), ``test_predictions.npz`` (per-image test predictions of that epoch) and
``crops/epoch_NNN.npz`` (every epoch's fixed-crop predictions of every evaluation set).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import records
from .config import RunConfig
from .errors import UserError
from .prepare import PreparedData, prepare_data
from .versions import collect as collect_versions

if TYPE_CHECKING:
    from .solver import Solver


def check_out_dir(out_dir: str) -> Path:
    """``out_dir`` as a path, refused up front (before any decoding) if a run folder cannot be made in it."""
    out = Path(out_dir).expanduser()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"out_dir: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"out_dir: no permission to write into {existing}")
    return out


def _figure(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _summary(console: Console, solver: Solver, last: dict, out: Path) -> None:
    best = solver.best.row
    table = Table(title=Text(f"{solver.cfg.name}: {solver.epoch} epochs"), show_header=True)
    for col in ("", "epoch", "val SRCC", "val PLCC", "test SRCC", "test PLCC"):
        table.add_column(col, justify="right")
    for label, row in (("best val epoch (report this)", best), ("last epoch", last)):
        table.add_row(label, str(row["epoch"]), *[_figure(row.get(k)) for k in
                                                  ("val_srcc", "val_plcc", "test_srcc", "test_plcc")])
    console.print(table)
    signals = _signals_table(best, last)
    if signals is not None:
        console.print(signals)
    console.print(Text(f"results: {out}"))


def _signal_columns(row: dict) -> dict[str, str]:
    """Header -> metric key of the signals a row holds: test patch SRCC and disagreement, the training images
    scored like test, and each cross-dataset set."""
    cols = {"test patch SRCC": "test_srcc_patch", "test disagr.": "test_disagreement",
            "train-eval SRCC": "train_eval_srcc"}
    for key in row:
        if key.startswith("xtest_") and key.endswith("_srcc"):
            name = key[len("xtest_"):-len("_srcc")]
            cols[f"{name} SRCC"] = key
            cols[f"{name} PLCC*"] = f"xtest_{name}_plcc"
    return {h: k for h, k in cols.items() if k in row}


def _signals_table(best: dict, last: dict) -> Table | None:
    cols = _signal_columns(last)
    if not cols:
        return None
    xtest = any(k.startswith("xtest_") for k in cols.values())
    note = " (* PLCC after a 4-parameter logistic fit)" if xtest else ""
    table = Table(title=Text(f"signals on fixed crops, eval mode{note}"), show_header=True)
    for col in ("", "epoch", *cols):
        table.add_column(col, justify="right")
    for label, row in (("best val", best), ("last", last)):
        table.add_row(label, str(row["epoch"]), *[_figure(row.get(k)) for k in cols.values()])
    return table


def _fit(console: Console, solver: Solver, data: PreparedData, out: Path) -> dict:
    """Train with a progress bar, writing each epoch's metrics, the best state and its test predictions."""
    import torch

    metric = solver.best.metric
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as bar, \
            open(out / records.METRICS_FILE, "a") as log:
        task = bar.add_task("train", total=None, epoch=1, status="")
        for metrics, test_pred in solver.fit(lambda b, n: bar.update(task, completed=b, total=n)):
            # the crops first: a metrics line always has its crop file, for a report that recomputes from it
            records.save_crop_predictions(records.crop_prediction_path(out, metrics["epoch"]), solver.crops,
                                          metrics["epoch"])
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            if metrics["improved"]:
                torch.save(solver.state_dict(), out / records.STATE_FILE)
                data.save_test_predictions(out / records.PREDICTIONS_FILE, test_pred, metrics["epoch"])
            last = metrics
            bar.update(task, completed=0, epoch=min(metrics["epoch"] + 1, solver.cfg.train.epochs),
                       status=f"loss {metrics['train_loss']:.3f}  {metric} {_figure(metrics.get(metric))}  "
                              f"best {_figure(metrics[records.best_key(metric)])} (epoch {metrics['best_epoch']})")
    return last


def run_train(cfg: RunConfig, console: Console | None = None) -> tuple[Path, dict]:
    """Train ``cfg`` with a progress bar; returns (output folder, metrics of the best val epoch).

    The run folder is made only once the data and the model are ready, and removed again if the run stops
    before its first epoch is written: a failed start leaves no empty folder to puzzle over."""
    console = console or Console()
    base = check_out_dir(cfg.out_dir)
    data = prepare_data(cfg, progress=True)
    from .solver import Solver  # torch and timm take seconds to load: input errors above come first

    solver = Solver(cfg, data)
    out = records.unique_dir(base / cfg.name)
    # Text, not markup: a '[' in a run name or a path is printed as is
    console.print(Text.assemble((cfg.name, "bold"), f": {cfg.data.dataset} (", ", ".join(
        f"{k} {len(v)}" for k, v in data.split.items()), f" images), {cfg.model.backbone}, {solver.device}, "
        f"output {out}"))
    try:
        data.write_run_files(out, cfg)
        records.write_versions(out, collect_versions())
        last = _fit(console, solver, data, out)
    except BaseException:
        log = out / records.METRICS_FILE
        if not (log.is_file() and log.stat().st_size):
            shutil.rmtree(out, ignore_errors=True)
        raise
    _summary(console, solver, last, out)
    return out, solver.best.row
