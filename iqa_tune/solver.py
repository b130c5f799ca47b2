"""The HyperIQA solver: plain PyTorch, no Ray. One instance trains one configuration and yields per-epoch metrics.

Follows the training recipe of the reference (SSL92/hyperIQA, ``HyerIQASolver.py``) with its flaws fixed: one
optimizer for the whole run (the reference rebuilds Adam every epoch from an exhausted ``filter``, so its hyper
network stops training after epoch 1), images decoded once, fixed evaluation crops, and the best epoch chosen on
a validation split rather than on the test set.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from . import records
from .backbones import normalization
from .config import RunConfig
from .errors import UserError
from .evaluation import autocast_for, crop_predictions, flush_subnormals
from .losses import hyperiqa_loss
from .metrics import correlations, disagreement, image_means, logistic_plcc, patch_srcc
from .model import HyperIQA, build_model
from .patches import EvalPatches, Normalizer, TrainPatches, prefetch
from .prepare import PreparedData


class Diverged(UserError, FloatingPointError):
    """The training loss became inf or NaN: a user's setting (lr, label scale), said in one line, exit code 2."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device: {name} asked for, but torch sees no CUDA device")
    return torch.device(name)


def lr_lambda(cfg, iters_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr at iteration ``it`` (stepped per iteration): a linear warmup over
    ``warmup_epochs`` (both schedules), then the step or cosine rule. Never above 1."""
    total = cfg.epochs * iters_per_epoch
    warmup = cfg.warmup_epochs * iters_per_epoch

    def warm(it: int) -> float:
        # capped: with a warmup that is not a whole number of iterations, (it + 1) / warmup passes 1 at its end
        return min(1.0, (it + 1) / warmup) if it < warmup else 1.0

    def step(it: int) -> float:
        # the reference's rule: lr / 10^(epoch // 6), with step size and factor configurable
        return warm(it) * cfg.step_factor ** ((it // iters_per_epoch) // cfg.step_size)

    def cosine(it: int) -> float:
        progress = min(1.0, max(0.0, it - warmup) / max(1.0, total - warmup))
        return warm(it) * (cfg.cosine_floor + (1 - cfg.cosine_floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    return step if cfg.schedule == "step" else cosine


def evaluation_sets(data: PreparedData, patch_size: int, test_patches: int, batch_size: int) -> dict[str, EvalPatches]:
    """The sets scored on fixed crops after every epoch, in order: val, test, the training images scored like test
    (``train_eval``), then each cross-dataset set (``xtest_<name>``, on its own cache, with its own crop count)."""
    cat, cache, split = data.catalog, data.cache, data.split
    sets = {name: idx for name, idx in (("val", split["val"]), ("test", split["test"]),
                                         ("train_eval", data.train_eval)) if len(idx)}
    out = {name: EvalPatches(cache, idx, cat.scores, cat.paths, patch_size=patch_size, test_patches=test_patches,
                             batch_size=batch_size) for name, idx in sets.items()}
    for x in data.extra:
        out[x.key] = EvalPatches(x.cache, np.arange(len(x.catalog)), x.catalog.scores, x.catalog.paths,
                                 patch_size=patch_size, test_patches=x.test_patches, batch_size=batch_size)
    return out


def evaluation_metrics(name: str, crops: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of one evaluation set from its crop predictions (images x crops): the one place that names them.

    Image level is the mean of an image's crops. val/test: image SRCC/PLCC/KRCC, patch SRCC (each crop against its
    image's label: training's scale), crop SD and disagreement (:func:`iqa_tune.metrics.disagreement`);
    train_eval: image SRCC/PLCC; xtest_<name>: image SRCC, PLCC after a 4-parameter logistic fit (label scales
    differ between datasets), KRCC. None of these but val's may select an epoch (``records.SELECTION_METRICS``)."""
    image = correlations(crops.mean(axis=1, dtype=np.float64), labels)
    if name.startswith("xtest_"):
        return {f"{name}_srcc": image["srcc"], f"{name}_plcc": logistic_plcc(crops.mean(axis=1, dtype=np.float64), labels),
                f"{name}_krcc": image["krcc"]}
    if name == "train_eval":
        return {"train_eval_srcc": image["srcc"], "train_eval_plcc": image["plcc"]}
    crop_sd, ratio = disagreement(crops)
    return {**{f"{name}_{k}": v for k, v in image.items()}, f"{name}_srcc_patch": patch_srcc(crops, labels),
            f"{name}_crop_sd": crop_sd, f"{name}_disagreement": ratio}


class Solver:
    """Trains HyperIQA on prepared data. ``fit()`` yields one metrics dict per epoch; ``state_dict()`` and
    ``load_state_dict()`` make a run resumable (batches depend only on (seed, epoch), so a resumed run repeats
    the batches an uninterrupted one would have seen)."""

    def __init__(self, cfg: RunConfig, data: PreparedData, device: torch.device | None = None,
                 select: str = "val_srcc", mode: str = "max"):
        self.cfg = cfg
        t, d = cfg.train, cfg.data
        if t.threads:
            try:
                torch.set_num_threads(t.threads)
            except RuntimeError as e:  # more threads than the system lets a process start
                raise UserError(f"train.threads: cannot start {t.threads} threads here: {e}") from None
        flush_subnormals()  # 2-3x on a CPU late in fine-tuning, the same figures
        self.device = device or resolve_device(t.device)
        torch.manual_seed(t.seed)
        self.model: HyperIQA = build_model(cfg.model).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if t.compile else self.model
        base, hyper = self.model.param_groups()
        self.optimizer = self._optimizer([{"params": base, "lr": t.lr, "name": "backbone"},
                                          {"params": hyper, "lr": t.lr * t.lr_ratio, "name": "hyper"}])
        cat, cache, split = data.catalog, data.cache, data.split
        self.train_patches = TrainPatches(cache, split["train"], cat.scores, patch_size=d.patch_size,
                                          train_patches=d.train_patches, patches_per_image=t.patches_per_image,
                                          batch_size=t.batch_size, flip=d.flip)
        self.eval_sets = evaluation_sets(data, d.patch_size, d.test_patches, t.eval_batch_size)
        # the last epoch's crop predictions of every evaluation set: name -> (image paths, labels, images x crops)
        self.crops: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self.lr_rule = (lambda it: 1.0) if t.reference_compat else lr_lambda(t, len(self.train_patches))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_rule)
        self.normalize = Normalizer(self.device, t.channels_last, *normalization(cfg.model.backbone))
        self.autocast = autocast_for(t.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.epoch = 0  # epochs completed
        self.best = records.BestEpoch(select, mode)  # the epoch that the selection metric picks (never a test metric)

    def _optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW if self.cfg.train.optimizer == "adamw" else torch.optim.Adam
        # fused: one kernel for all parameters on a GPU; the per-tensor loop was 12% of a swin_tiny step on an H200
        return opt(groups, weight_decay=self.cfg.train.weight_decay, fused=self.device.type == "cuda")

    def _rebuild_like_the_reference(self) -> None:
        """What the reference's per-epoch rebuild amounts to from its second epoch on: its hyper-network group is
        an exhausted ``filter`` (empty), its backbone group (which holds the LDA layers there) gets the constant
        base lr, and Adam starts again with no moments."""
        base, _ = self.model.param_groups()
        self.optimizer = self._optimizer([{"params": base, "lr": self.cfg.train.lr, "name": "backbone"}])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_rule)

    # -- one epoch ---------------------------------------------------------------------------------------------
    def _check_finite(self, loss: torch.Tensor, b: int) -> None:
        if not torch.isfinite(loss):
            scale = float(np.abs(self.train_patches.scores[self.train_patches.indices]).max())
            raise Diverged(f"train.lr: non-finite training loss ({float(loss)}) at epoch {self.epoch + 1}, batch "
                           f"{b + 1}: the run diverged. Usually train.lr is too high (here {self.cfg.train.lr:g}) or "
                           f"the labels are on a huge scale (here up to {scale:g}): lower train.lr, or rescale the "
                           "labels")

    def train_epoch(self, on_batch: Callable[[int, int], None] | None = None) -> dict:
        t, lc = self.cfg.train, self.cfg.loss
        self.model.train()
        torch.manual_seed(t.seed * 100003 + self.epoch)  # dropout; a function of (seed, epoch) like the batches
        n_batches = len(self.train_patches)
        # loss sums and predictions stay on the device and cross to the host once per epoch, not per batch
        sums = {k: torch.zeros((), device=self.device) for k in ("loss", "l1", "rank")}
        preds, labels, images = [], [], []
        start, n_patches = time.perf_counter(), 0
        batches = prefetch(self.train_patches.batches(t.seed, self.epoch, pin=self.device.type == "cuda"))
        # the finiteness check reads the previous batch's loss once this batch's work is queued: reading the current
        # one would make the host wait for the device every step and leave the device idle while the next is queued
        previous = None
        for b, batch in enumerate(batches):
            x = self.normalize(batch.pixels, batch.flips)
            y = batch.labels.to(self.device, non_blocking=True)
            ids = batch.image.to(self.device, non_blocking=True)
            with self.autocast():
                pred = self.forward(x).float()
            parts = hyperiqa_loss(pred, y, ids, lc.alpha, lc.margin, lc.ranking)
            if previous is not None:
                self._check_finite(*previous)
            previous = (parts["loss"].detach(), b)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(parts["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for k in sums:
                sums[k] += parts[k].detach() * len(y)
            preds.append(pred.detach())
            labels.append(batch.labels.numpy())
            images.append(batch.image.numpy())
            n_patches += len(y)
            if on_batch:
                on_batch(b + 1, n_batches)
        if previous is not None:
            self._check_finite(*previous)
        seconds = time.perf_counter() - start
        pred = torch.cat(preds).cpu().numpy()
        label, image = np.concatenate(labels), np.concatenate(images)
        n_img = len(self.train_patches.indices)
        img_label = self.train_patches.scores[self.train_patches.indices]
        out = {f"train_{k}": float(v) / max(n_patches, 1) for k, v in sums.items()}
        out["train_srcc_patch"] = correlations(pred, label)["srcc"]
        seen = np.bincount(image, minlength=n_img) > 0
        out["train_srcc_image"] = correlations(image_means(pred, image, n_img)[seen], img_label[seen])["srcc"]
        out["train_seconds"] = seconds
        out["patches_per_s"] = n_patches / seconds if seconds > 0 else 0.0
        return out

    @torch.no_grad()
    def predict_crops(self, name: str) -> np.ndarray:
        """Every fixed crop's prediction of an evaluation set, (images, crops), in eval mode."""
        ev = self.eval_sets[name]
        self.model.eval()
        crops = crop_predictions(self.forward, self.normalize, self.autocast, ev.batches(pin=self.device.type == "cuda"))
        return crops.reshape(len(ev.indices), ev.test_patches)

    def evaluate(self, name: str) -> tuple[dict, np.ndarray]:
        """The metrics of an evaluation set on its fixed crops (:func:`evaluation_metrics`); also the per-image
        predictions. Its crop predictions are kept in ``self.crops`` for the epoch's crop file."""
        ev = self.eval_sets[name]
        crops = self.predict_crops(name)
        self.crops[name] = (ev.paths, ev.labels, crops)
        return evaluation_metrics(name, crops, ev.labels), crops.mean(axis=1, dtype=np.float64)

    def run_epoch(self, on_batch: Callable[[int, int], None] | None = None) -> tuple[dict, np.ndarray | None]:
        """Train one epoch and evaluate val and test; returns (metrics, per-image test predictions)."""
        start = time.perf_counter()
        if self.cfg.train.reference_compat and self.epoch >= 1:
            self._rebuild_like_the_reference()
        metrics = {"epoch": self.epoch + 1, "lr_hyper": 0.0}  # 0 unless a hyper-network group trains
        metrics.update(self.train_epoch(on_batch))
        test_pred = None
        self.crops = {}
        evaluating = time.perf_counter()
        for name in self.eval_sets:
            m, per_image = self.evaluate(name)
            metrics.update(m)
            if name == "test":
                test_pred = per_image
        metrics["eval_seconds"] = time.perf_counter() - evaluating
        for g in self.optimizer.param_groups:
            metrics[f"lr_{g['name']}"] = g["lr"]
        self.epoch += 1
        metrics["epoch_seconds"] = time.perf_counter() - start
        metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        metrics["max_epochs"] = self.cfg.train.epochs
        metrics.update(self.best.update(metrics))
        p = self.cfg.train.patience
        # set on the epoch that ends the run early by patience, so reports tell it apart from a scheduler's cut
        metrics["patience_stop"] = float(p > 0 and self.best.since >= p and self.epoch < self.cfg.train.epochs)
        return metrics, test_pred

    @property
    def finished(self) -> bool:
        p = self.cfg.train.patience
        return self.epoch >= self.cfg.train.epochs or (p > 0 and self.best.since >= p)

    def fit(self, on_batch: Callable[[int, int], None] | None = None) -> Iterator[tuple[dict, np.ndarray | None]]:
        while not self.finished:
            yield self.run_epoch(on_batch)

    # -- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "best": self.best.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if not (self.cfg.train.reference_compat and state["epoch"] >= 1):  # else rebuilt fresh at the next epoch
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.best.load_state_dict(state["best"])
