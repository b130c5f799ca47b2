"""``iqa-tune train CONFIG.yaml``: one configuration, no Ray, the same schema as one trial of a study.

Writes into OUT_DIR/NAME/: ``config.yaml`` (resolved), ``split.json``, ``metrics.jsonl`` (one line per epoch,
appended as it goes, so an interrupted run keeps what it computed), ``best.pt`` (state at the best val epoch) and
``test_predictions.npz`` (per-image test predictions of that epoch).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .config import RunConfig, to_dict
from .datasets import split_record
from .errors import UserError
from .prepare import PreparedData, prepare_data

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


def save_predictions(path: Path, data: PreparedData, per_image: np.ndarray, epoch: int) -> None:
    idx = data.split["test"]
    np.savez(path, path=np.array([data.catalog.paths[i] for i in idx]), label=data.catalog.scores[idx],
             pred=per_image, epoch=epoch)


def write_run_files(out: Path, cfg: RunConfig, data: PreparedData) -> None:
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    (out / "split.json").write_text(json.dumps(split_record(data.catalog, data.split)))


def _summary(console: Console, solver: Solver, last: dict, out: Path) -> None:
    b = solver.best
    table = Table(title=Text(f"{solver.cfg.name}: {solver.epoch} epochs"), show_header=True)
    for col in ("", "epoch", "val SRCC", "val PLCC", "test SRCC", "test PLCC"):
        table.add_column(col, justify="right")
    table.add_row("best val epoch (report this)", str(b["epoch"]), f"{b['val_srcc']:.4f}", f"{b['val_plcc']:.4f}",
                  f"{b['test_srcc']:.4f}", f"{b['test_plcc']:.4f}")
    table.add_row("last epoch", str(last["epoch"]), f"{last.get('val_srcc', 0):.4f}",
                  f"{last.get('val_plcc', 0):.4f}", f"{last.get('test_srcc', 0):.4f}",
                  f"{last.get('test_plcc', 0):.4f}")
    console.print(table)
    console.print(Text(f"results: {out}"))


def _fit(console: Console, solver: Solver, data: PreparedData, out: Path) -> dict:
    """Train with a progress bar, writing each epoch's metrics, the best state and its test predictions."""
    import torch
    last: dict = {}
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as bar, \
            open(out / "metrics.jsonl", "a") as log:
        task = bar.add_task("train", total=None, epoch=1, status="")
        for metrics, test_pred in solver.fit(lambda b, n: bar.update(task, completed=b, total=n)):
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            if metrics["improved"]:
                torch.save(solver.state_dict(), out / "best.pt")
                save_predictions(out / "test_predictions.npz", data, test_pred, metrics["epoch"])
            last = metrics
            bar.update(task, completed=0, epoch=min(metrics["epoch"] + 1, solver.cfg.train.epochs),
                       status=f"loss {metrics['train_loss']:.3f}  val SRCC {metrics.get('val_srcc', 0):.4f}  "
                              f"best {metrics['best_val_srcc']:.4f} (epoch {metrics['best_epoch']})")
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
    out = unique_dir(base / cfg.name)
    # Text, not markup: a '[' in a run name or a path is printed as is
    console.print(Text.assemble((cfg.name, "bold"), f": {cfg.data.dataset} (", ", ".join(
        f"{k} {len(v)}" for k, v in data.split.items()), f" images), {cfg.model.backbone}, {solver.device}, "
        f"output {out}"))
    try:
        write_run_files(out, cfg, data)
        last = _fit(console, solver, data, out)
    except BaseException:
        log = out / "metrics.jsonl"
        if not (log.is_file() and log.stat().st_size):
            shutil.rmtree(out, ignore_errors=True)
        raise
    _summary(console, solver, last, out)
    return out, solver.best
