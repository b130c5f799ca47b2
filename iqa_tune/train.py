"""``iqa-tune train CONFIG.yaml``: one configuration, no Ray, the same schema as one trial of a study.

Writes into OUT_DIR/NAME/: ``config.yaml`` (resolved), ``split.json``, ``metrics.jsonl`` (one line per epoch,
appended as it goes, so an interrupted run keeps what it computed), ``best.pt`` (state at the best val epoch) and
``test_predictions.npz`` (per-image test predictions of that epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import RunConfig, to_dict
from .datasets import split_record
from .prepare import PreparedData, prepare_data
from .solver import Solver


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... : never overwrite an earlier run."""
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
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
    table = Table(title=f"{solver.cfg.name}: {solver.epoch} epochs", show_header=True)
    for col in ("", "epoch", "val SRCC", "val PLCC", "test SRCC", "test PLCC"):
        table.add_column(col, justify="right")
    table.add_row("best val epoch (report this)", str(b["epoch"]), f"{b['val_srcc']:.4f}", f"{b['val_plcc']:.4f}",
                  f"{b['test_srcc']:.4f}", f"{b['test_plcc']:.4f}")
    table.add_row("last epoch", str(last["epoch"]), f"{last.get('val_srcc', 0):.4f}",
                  f"{last.get('val_plcc', 0):.4f}", f"{last.get('test_srcc', 0):.4f}",
                  f"{last.get('test_plcc', 0):.4f}")
    console.print(table)
    console.print(f"results: {out}")


def run_train(cfg: RunConfig, console: Console | None = None) -> tuple[Path, dict]:
    """Train ``cfg`` with a progress bar; returns (output folder, metrics of the best val epoch)."""
    console = console or Console()
    data = prepare_data(cfg, progress=True)
    out = unique_dir(Path(cfg.out_dir) / cfg.name)
    write_run_files(out, cfg, data)
    solver = Solver(cfg, data)
    console.print(f"[bold]{cfg.name}[/]: {cfg.data.dataset} ({', '.join(f'{k} {len(v)}' for k, v in data.split.items())}"
                  f" images), {cfg.model.backbone}, {solver.device}, output {out}")
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
            bar.update(task, completed=0, epoch=min(metrics["epoch"] + 1, cfg.train.epochs),
                       status=f"loss {metrics['train_loss']:.3f}  val SRCC {metrics.get('val_srcc', 0):.4f}  "
                              f"best {metrics['best_val_srcc']:.4f} (epoch {metrics['best_epoch']})")
    _summary(console, solver, last, out)
    return out, solver.best
