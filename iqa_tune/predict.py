"""Scoring images with a trained model: ``iqa_tune.load``'s :class:`Scorer`, ``iqa-tune predict`` and (through
:mod:`iqa_tune.export`) ``iqa-tune export`` are three faces of this one path.

An image is scored as its run's test set was: resized by the run's rule (:func:`iqa_tune.datasets.resize_rule`,
the decode of the cache), cut into ``data.test_patches`` fixed crops of ``data.patch_size`` whose offsets are
seeded by its path (:class:`iqa_tune.patches.EvalPatches` on an in-memory cache), and run through the evaluation
forward (:mod:`iqa_tune.evaluation`); its score is the mean of its crops' predictions, as the image-level figures
of a study are. An image inside the run's dataset keeps its path in the catalog as the seed, so it gets the crops
(and the score) its study gave it; any other image is seeded by its path relative to the folder or CSV that
listed it, or by its file name.

Where the model comes from (SOURCE): an experiment (a folder or URI: its best trial by the study metric, chosen on
val as the report ranks them), a trial or ``iqa-tune train`` folder, or a ``best.pt`` checkpoint.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import records
from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
FINISHED = ("completed", "early stop (patience)", "cut at a rung")  # trials whose best epoch is final
CHUNK = 64  # images scored together; the next chunk decodes in threads meanwhile


# ----------------------------------------------------------------------------------------------------------------
# where the model comes from


@dataclass(frozen=True)
class Origin:
    """Which model a scorer runs: its state file, its run folder, and the study and trial it came from."""

    checkpoint: Path
    run_dir: Path  # the folder with its config.yaml (a trial's or an iqa-tune train run's)
    experiment: str | None = None  # the study (folder or URI), when SOURCE was one
    trial: str | None = None
    rank: int | None = None  # in the study's ranking
    metric: str = "val_srcc"  # what chose its best epoch (and the trial)

    def describe(self, epoch: int, best_epoch: int) -> str:
        where = f"trial {self.trial} (rank {self.rank} by {self.metric}) of {self.experiment}" if self.experiment \
            else str(self.run_dir)
        return f"{where}, epoch {epoch}" + ("" if epoch == best_epoch else f" (its best epoch was {best_epoch})")


def _is_experiment(folder: Path) -> bool:
    return (folder / records.STUDY_FILE).is_file() or any(
        (p / records.PARAMS_FILE).is_file() for p in folder.iterdir() if p.is_dir())


def _pick_trial(exp_dir: Path, experiment: str, trial: str | None) -> tuple[str, int, str]:
    """(trial folder name, rank, metric): the study's best finished trial by its metric at each trial's best epoch,
    as the report ranks them (``reports.ranking.rank_trials``), or the trial ``--trial`` names."""
    from .reports.ranking import rank_trials

    settings = records.study_settings(exp_dir)
    metric, mode = settings.get("metric", "val_srcc"), settings.get("mode", "max")
    epochs, trials = records.load_experiment(exp_dir)
    if trials.empty:
        raise UserError(f"{experiment}: an experiment without trials")
    ranking = rank_trials(epochs, trials, metric, mode)
    if trial is not None:
        hits = ranking[ranking["trial"] == trial]
        if hits.empty:  # Tune's trial id (abc12_00001), as the live table shows it, is part of the folder's name
            hits = ranking[ranking["trial"].str.contains(trial, regex=False)]
        if len(hits) != 1:
            names = ", ".join(ranking["trial"])
            raise UserError(f"--trial {trial}: {'no' if hits.empty else 'more than one'} trial of {experiment} "
                            f"matches; its trials: {names}")
        row = hits.iloc[0]
    else:
        ok = ranking[ranking["ended"].isin(FINISHED) & ranking[metric].notna()]
        if ok.empty:
            ended = ", ".join(f"{n} {e}" for e, n in ranking["ended"].value_counts().items())
            raise UserError(f"{experiment}: no finished trial to score with ({ended})")
        row = ok.iloc[0]
    return row["trial"], int(row["rank"]), metric


def _from_experiment(source: str, trial: str | None) -> Origin:
    from . import storage

    loc = storage.fetch(source)  # a URI: its records copied to the local mirror (the model states are not)
    name, rank, metric = _pick_trial(loc.local, str(loc), trial)
    state = records.state_file(loc.local / name)
    if state is None:
        raise UserError(f"{loc}: trial {name} saved no model (no checkpoint)")
    state = storage.pull_file(loc, state.relative_to(loc.local).as_posix())  # this one trial's, from a URI
    return Origin(state, loc.local / name, str(loc), name, rank, metric)


def find_model(source: str | Path, trial: str | None = None) -> Origin:
    """The model that SOURCE names; a :class:`UserError` naming SOURCE when it names none."""
    from .storage import is_uri, uri_problem

    text = str(source)
    if uri_problem(text):
        raise UserError(f"{text}: {uri_problem(text)}")
    path = Path(text).expanduser()
    if is_uri(text) or (path.is_dir() and _is_experiment(path)):
        return _from_experiment(text, trial)
    if trial is not None:
        raise UserError(f"--trial {trial}: {text} is not an experiment (a study folder or URI)")
    if path.is_dir():
        if not (path / records.CONFIG_FILE).is_file():
            raise UserError(f"{text}: not an experiment, a trial or run folder (no {records.CONFIG_FILE}) or a "
                            "checkpoint file")
        state = records.state_file(path)
        if state is None or not state.is_file():
            raise UserError(f"{text}: this run saved no model ({records.STATE_FILE}); it has not finished an epoch")
        return Origin(state, path)
    if path.is_file():
        run_dir = next((d for d in (path.parent, path.parent.parent) if (d / records.CONFIG_FILE).is_file()), None)
        if run_dir is None:
            raise UserError(f"{text}: no {records.CONFIG_FILE} beside this checkpoint or one folder up; predict "
                            "needs the run's resolved config (the run folder has it)")
        return Origin(path, run_dir)
    raise UserError(f"{text}: no such experiment, run folder or checkpoint file")


def _read_state(path: Path) -> dict:
    """A solver state (``best.pt``), loaded without unpickling code (``weights_only``)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not an iqa-tune checkpoint ({first})") from None
    if not isinstance(state, dict) or not {"model", "epoch", "best"} <= set(state):
        keys = ", ".join(map(str, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: a checkpoint of another format (holds {keys}); predict reads the {records.STATE_FILE} "
                        "that iqa-tune train and study trials save")
    return state


# ----------------------------------------------------------------------------------------------------------------
# the scorer


@dataclass
class Item:
    """One image to score: where it is, what it is called in the output, the key that seeds its crops, and its
    label when a CSV gave one."""

    path: Path
    shown: str
    key: str
    label: float | None = None


@dataclass
class Scored:
    item: Item
    score: float = float("nan")
    crop_sd: float = float("nan")  # population SD of its crops' predictions, label units
    error: str = ""


@dataclass
class Scorer:
    """A trained HyperIQA that scores images with its run's test-time preprocessing. Call it on a PIL image, a
    path, a uint8 (H, W, 3) array, or a list of them: a float, or an array of floats for a list."""

    model: Any  # iqa_tune.model.HyperIQA, in eval mode on ``device``
    config: Any  # iqa_tune.config.RunConfig: the run's resolved config
    origin: Origin
    epoch: int  # the epoch of the weights
    best_epoch: int  # the epoch the run's selection metric chose
    device: Any
    reported: dict = field(default_factory=dict)  # the run's own figures at its best epoch (val/test SRCC...)
    label_scale: dict = field(default_factory=dict)  # what a score means
    _setup: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from .backbones import normalization
        from .datasets import dataset_root, resize_rule
        from .evaluation import autocast_for
        from .patches import Normalizer

        d, t = self.config.data, self.config.train
        self.resize, self.patch_size, self.test_patches = resize_rule(d), d.patch_size, d.test_patches
        self.batch_size = t.eval_batch_size
        # the memory layout the solver evaluated in (channels_last changes the conv kernels, and so the last bits)
        self.normalize = Normalizer(self.device, t.channels_last, *normalization(self.config.model.backbone))
        # as trained on a GPU (bf16 there, say); fp32 on a CPU, where bf16 autocast is slow and only adds rounding
        self.precision = t.precision if self.device.type == "cuda" else "fp32"
        self.autocast = autocast_for(self.precision, self.device)
        try:
            self.data_root = dataset_root(d)
        except UserError:
            self.data_root = None

    def __repr__(self) -> str:
        return f"Scorer({self.origin.describe(self.epoch, self.best_epoch)}, {self.device}, {self.precision})"

    @property
    def info(self) -> dict:
        """What the scorer is, as plain values (the export's JSON and the predict summary use it)."""
        o = self.origin
        return {"experiment": o.experiment, "trial": o.trial, "rank": o.rank, "run_dir": str(o.run_dir),
                "checkpoint": str(o.checkpoint), "epoch": self.epoch, "best_epoch": self.best_epoch,
                "selected_by": o.metric, "reported": self.reported, "label_scale": self.label_scale,
                "preprocessing": self.preprocessing}

    @property
    def preprocessing(self) -> dict:
        from .backbones import normalization

        mean, std = normalization(self.config.model.backbone)
        return {"resize": self.resize, "resize_filter": "bilinear (PIL), after conversion to 8-bit RGB",
                "patch_size": self.patch_size, "test_patches": self.test_patches,
                "crop_offsets": "numpy.random.default_rng([zlib.crc32(key.encode()), patch_size, test_patches]): "
                                "ys = rng.integers(0, h - patch_size + 1, test_patches), then xs likewise with w; "
                                "key = the image's path relative to its dataset's root",
                "normalization": {"mean": list(mean), "std": list(std), "of": "pixels / 255, per RGB channel"},
                "score": "mean of the crops' predictions"}

    # -- keys and images -----------------------------------------------------------------------------------------
    def key(self, path: Path, base: Path | None = None) -> str:
        """What seeds an image's crops: its path in its run's dataset, else relative to ``base``, else its name."""
        p = Path(path).resolve()
        for root in (self.data_root, base):
            if root is not None:
                try:
                    return p.relative_to(Path(root).resolve()).as_posix()
                except ValueError:
                    continue
        return p.name

    def read(self, path: Path) -> np.ndarray:
        """An image file decoded and resized as the cache does; too small for one crop is an error."""
        from .cache import decode

        if not Path(path).is_file():
            raise UserError(f"{path}: no such image file")
        return self._checked(decode(Path(path), self.resize), path)

    def _checked(self, a: np.ndarray, name) -> np.ndarray:
        h, w = a.shape[:2]
        if min(h, w) < self.patch_size:
            raise UserError(f"{name}: image is {w}x{h} after resize, smaller than the patch size {self.patch_size}")
        return a

    def _prepared(self, image) -> tuple[np.ndarray, str]:
        """(resized RGB array, crop key) of one image of any kind the scorer takes."""
        from PIL import Image

        from .cache import resized

        if isinstance(image, (str, Path)):
            return self.read(Path(image)), self.key(Path(image))
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
                raise UserError(f"array of {image.dtype} {image.shape}: expected uint8 (H, W, 3), RGB")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise UserError(f"cannot score a {type(image).__name__}: give a path, a PIL image or a uint8 array")
        if getattr(image, "filename", ""):  # opened from a file: the crops its path gives
            return self._checked(resized(image, self.resize, image.filename), image.filename), self.key(image.filename)
        a = self._checked(resized(image, self.resize), "image")
        return a, f"pixels:{zlib.crc32(a.tobytes()):08x}"  # no path: seeded by its pixels, the same every call

    def crops(self, image) -> np.ndarray:
        """The fixed crops of one image, uint8 (test_patches, P, P, 3): what the model (and an export) sees."""
        from .evaluation import memory_cache
        from .patches import crop, fixed_offsets

        a, key = self._prepared(image)
        cache = memory_cache([a])
        ys, xs = fixed_offsets(cache, np.zeros(1, np.int64), [key], self.patch_size, self.test_patches)
        return crop(cache, np.zeros(len(ys), np.int64), ys, xs, self.patch_size).numpy()

    # -- scoring -------------------------------------------------------------------------------------------------
    def crop_scores(self, arrays: list[np.ndarray], keys: list[str]) -> np.ndarray:
        """Predictions of every crop of already resized images, (n, test_patches)."""
        from .evaluation import crop_predictions, memory_cache
        from .patches import EvalPatches

        n = len(arrays)
        ev = EvalPatches(memory_cache(arrays), np.arange(n), np.zeros(n), keys, patch_size=self.patch_size,
                         test_patches=self.test_patches, batch_size=self.batch_size)
        pred = crop_predictions(self.model, self.normalize, self.autocast, ev.batches(pin=self.device.type == "cuda"))
        return pred.reshape(n, self.test_patches)

    def _image_scores(self, crops: np.ndarray) -> np.ndarray:
        from .metrics import image_means

        n = len(crops)
        # image_means: the same float64 arithmetic as the study's per-image test predictions
        return image_means(crops.reshape(-1), np.repeat(np.arange(n), self.test_patches), n)

    def __call__(self, images):
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        scores = [np.zeros(0)]
        for s in range(0, len(images), CHUNK):  # a chunk decoded at a time: a long list never sits in memory
            part = [self._prepared(im) for im in images[s:s + CHUNK]]
            scores.append(self._image_scores(self.crop_scores([a for a, _ in part], [k for _, k in part])))
        scores = np.concatenate(scores)
        return float(scores[0]) if single else scores

    def score_items(self, items: list[Item], workers: int = 2,
                    on_done: Callable[[int], None] | None = None) -> Iterator[Scored]:
        """Score listed image files in chunks, decoding the next ones in threads meanwhile; an image that cannot be
        read (missing, unreadable, truncated, too small) comes out with its error, and the rest are scored."""
        chunk: list[tuple[Item, np.ndarray]] = []
        for item, got in _decoded(items, self.read, workers, 2 * CHUNK):
            if isinstance(got, str):
                yield Scored(item, error=got)
                if on_done:
                    on_done(1)
                continue
            chunk.append((item, got))
            if len(chunk) == CHUNK:
                yield from self._score_chunk(chunk, on_done)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk, on_done)

    def _score_chunk(self, chunk, on_done) -> Iterator[Scored]:
        crops = self.crop_scores([a for _, a in chunk], [it.key for it, _ in chunk])
        means, sds = self._image_scores(crops), crops.astype(np.float64).std(axis=1)
        if on_done:
            on_done(len(chunk))
        for (item, _), m, sd in zip(chunk, means, sds):
            yield Scored(item, float(m), float(sd))


def _decoded(items: list[Item], read: Callable[[Path], np.ndarray], workers: int,
             ahead: int) -> Iterator[tuple[Item, np.ndarray | str]]:
    """(item, decoded array or error message) in order, up to ``ahead`` images decoded ahead in threads (PIL
    releases the GIL while decoding and resizing)."""
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # range first: zip stops on it without drawing (and losing) one more item from `it`
        pending = deque((item, pool.submit(read, item.path)) for _, item in zip(range(ahead), it))
        while pending:
            item, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt.path)))
            try:
                yield item, future.result()
            except UserError as e:
                yield item, str(e)


def load(source: str | Path, trial: str | None = None, device: str = "auto") -> Scorer:
    """The scorer of SOURCE: an experiment folder or URI (its best trial by the study metric, at its best epoch;
    ``trial`` picks another), a trial or ``iqa-tune train`` folder, or a ``best.pt`` checkpoint."""
    import dataclasses

    import torch

    from .config import build_run_config, read_yaml
    from .errors import naming
    from .evaluation import flush_subnormals
    from .model import build_model
    from .solver import resolve_device

    origin = find_model(source, trial)
    state = _read_state(origin.checkpoint)
    config_file = origin.run_dir / records.CONFIG_FILE
    # a run's resolved config as recorded: a searched key that another made inert is there as the trial ran, so
    # it is read as a record, not refused as a user's config would be
    cfg = build_run_config(read_yaml(config_file), str(config_file))
    # the state holds every weight: no ImageNet weights to fetch (offline, or from a package) before replacing them
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False, checkpoint=None))
    dev = resolve_device(device)
    flush_subnormals()  # as the solver that evaluated it
    with naming(str(config_file)):
        model = build_model(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{origin.checkpoint}: its weights do not fit the model of {config_file} "
                        f"({str(e).splitlines()[0][:200]})") from None
    model.to(dev).eval()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    row = state["best"].get("row", {})
    reported = {k: row[k] for k in ("epoch", origin.metric, "val_srcc", "test_srcc", "test_plcc") if k in row}
    return Scorer(model, cfg, origin, int(state["epoch"]), int(row.get("epoch", state["epoch"])), dev, reported,
                  _label_scale(cfg, origin))


def _label_scale(cfg, origin: Origin) -> dict:
    """What a score means: the dataset and label it was trained on, and the range of its test labels."""
    out = {"dataset": cfg.data.dataset, "label": cfg.data.label or "the dataset's default",
           "higher_is_better": True}
    got = records.load_predictions(origin.checkpoint.parent / records.PREDICTIONS_FILE)
    if got is not None and len(got[1]):
        out["test_labels"] = [float(np.min(got[1])), float(np.max(got[1]))]
    return out


# ----------------------------------------------------------------------------------------------------------------
# what to score (iqa-tune predict IMAGES...)


def list_images(args: Iterable[str], scorer: Scorer) -> list[Item]:
    """Files, folders (recursively, common image suffixes) and CSVs with a ``path`` column (paths relative to the
    CSV's folder; a ``score`` column gives labels) as items. A name that is no file comes out as an item too: it
    is listed as missing when scored, with the rest scored."""
    items = []
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            items += [Item(f, str(f), scorer.key(f, p)) for f in found]
        elif p.is_file() and p.suffix.lower() == ".csv":
            items += _csv_items(p, scorer)
        else:
            items.append(Item(p, arg, scorer.key(p, p.parent)))
    return items


def _csv_items(path: Path, scorer: Scorer) -> list[Item]:
    from .datasets import LINE, _read_csv

    rows = _read_csv(path, ["path"])
    out = []
    for r in rows:
        label = None
        if "score" in r:
            try:
                label = float(r["score"])
            except ValueError:
                raise UserError(f"{path}: row {r[LINE]}: score is not a number: {r['score']!r}") from None
        p = (path.parent / r["path"]).resolve() if not Path(r["path"]).is_absolute() else Path(r["path"])
        out.append(Item(p, r["path"], scorer.key(p, path.parent), label))
    return out


# ----------------------------------------------------------------------------------------------------------------
# iqa-tune predict


def metrics_path(out: Path) -> Path:
    """Where the correlations go beside ``--out`` (scores.csv -> scores.metrics.json)."""
    return out.with_name(out.stem + ".metrics.json")


def _check_out(out: Path | None, force: bool) -> None:
    if out is None:
        return
    for p in (out, metrics_path(out)):
        if p.exists() and not force:
            raise UserError(f"{p}: already exists; pass --force to overwrite it")
        if p.is_dir():
            raise UserError(f"{p}: a folder; --out takes a CSV file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no such folder {out.parent}")


def agreement(rows: list[Scored]) -> dict | None:
    """SRCC (with a 95% bootstrap CI over images), PLCC and KRCC of the scores against the CSV's labels."""
    from .metrics import correlations, logistic_plcc
    from .reports.ranking import BOOTSTRAP_RESAMPLES, bootstrap_srcc

    got = [(r.score, r.item.label) for r in rows if not r.error and r.item.label is not None]
    if len(got) < 2:
        return None
    pred, label = (np.array(v, dtype=np.float64) for v in zip(*got))
    out = {"images": len(got), **correlations(pred, label)}
    _, out["srcc_ci_lo"], out["srcc_ci_hi"] = bootstrap_srcc(label, pred)
    out["ci"] = f"95% percentile bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples"
    # linear PLCC is what a study reports for its own test set; another dataset's labels are on another scale, so
    # the field's cross-dataset figure is PLCC after a monotonic (4-parameter logistic) fit
    out["plcc_logistic"] = logistic_plcc(pred, label)
    out["plcc_note"] = "plcc: linear, as a study reports its test set; plcc_logistic: after a 4-parameter logistic fit"
    return out


def _write_rows(rows: list[Scored], stream) -> None:
    import csv

    labelled = any(r.item.label is not None for r in rows)
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(["path", "score", "crop_sd", *(["label"] if labelled else [])])
    for r in rows:
        if not r.error:
            w.writerow([r.item.shown, f"{r.score:.6g}", f"{r.crop_sd:.6g}",
                        *([] if not labelled else ["" if r.item.label is None else f"{r.item.label:g}"])])


def run_predict(source: str, images: list[str], out: str | None = None, trial: str | None = None,
                force: bool = False, device: str = "auto") -> int:
    """``iqa-tune predict``: 0 when every image was scored, 1 when some failed (listed), 2 when none could be."""
    import json
    import os
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out_path = Path(out).expanduser() if out else None
    _check_out(out_path, force)  # before the model loads: nothing is overwritten, no time lost
    scorer = load(source, trial, device)
    err.print(Text(f"scoring with {scorer.origin.describe(scorer.epoch, scorer.best_epoch)} on {scorer.device}"))
    if scorer.epoch != scorer.best_epoch:
        err.print(Text(f"warning: the saved weights are of epoch {scorer.epoch} (a halving rung), not of the best "
                       f"epoch {scorer.best_epoch}: the scores are not those its report shows"))
    items = list_images(images, scorer)
    if not items:
        raise UserError("IMAGES: no images found in " + " ".join(images))
    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("predict", total=len(items))
        rows = list(scorer.score_items(items, workers=min(4, os.cpu_count() or 2),
                                       on_done=lambda n: bar.advance(task, n)))
    failed = [r for r in rows if r.error]
    for r in failed:
        err.print(Text(f"skipped: {r.error}"))
    scored = len(rows) - len(failed)
    if out_path is None:
        _write_rows(rows, sys.stdout)
    elif scored:
        with open(out_path, "w", newline="") as f:
            _write_rows(rows, f)
    found = agreement(rows)
    if found is not None:
        err.print(Text(f"against the labels of {found['images']} images: SRCC {found['srcc']:.4f} (95% CI "
                       f"{found['srcc_ci_lo']:.3f}-{found['srcc_ci_hi']:.3f}), PLCC {found['plcc']:.4f} "
                       f"(after a logistic fit {found['plcc_logistic']:.4f}), KRCC {found['krcc']:.4f}"))
        if out_path is not None:
            metrics_path(out_path).write_text(json.dumps({**found, "model": scorer.info}, indent=1, default=str))
    where = f"; written: {out_path}" if out_path is not None and scored else ""
    err.print(Text(f"scored {scored} of {len(rows)} images{where}"))
    return 0 if not failed else (1 if scored else 2)
