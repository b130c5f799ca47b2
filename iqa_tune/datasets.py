"""Dataset adapters for the release formats of the common IQA sets, plus a generic CSV, and the splits.

Each adapter turns a dataset folder into a :class:`Catalog` (image paths, scores, reference ids, the release's
own split where it has one) and checks it before any training: a missing image, a label file without the needed
columns or a non-numeric score stops with a message naming the file and row. Formats follow the releases
(and pyiqa's loaders): KonIQ-10k, LIVE Challenge, KADID-10k, SPAQ.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DATASET_NAMES, ColumnsConfig, DataConfig, SplitConfig, cache_root
from .errors import UserError, did_you_mean


@dataclass
class Catalog:
    name: str
    root: Path
    paths: list[str]  # relative to root
    scores: np.ndarray  # float64, higher is better
    refs: list[str]  # content id: images sharing one never straddle splits
    resize: list[int] | int | None  # the dataset's default resize, [w, h] or shorter side
    official: dict[str, list[int]] | None = None  # the release's own split, as indices
    label: str = "score"
    label_file: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, n: int) -> Catalog:
        keep = set(range(n))
        official = None if self.official is None else {
            k: [i for i in v if i in keep] for k, v in self.official.items()}
        return Catalog(self.name, self.root, self.paths[:n], self.scores[:n], self.refs[:n], self.resize, official,
                       self.label, self.label_file)


def _read_csv(path: Path, required: list[str]) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            hint = did_you_mean(missing[0], header)
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}{hint}; columns found: {', '.join(header)}")
        return list(reader)


def _score(value, path: Path, row: int, column: str) -> float:
    """Row numbers count the header as row 1, as a spreadsheet shows them."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise UserError(f"{path}: row {row}: {column} is not a number: {value!r}")
    return v


def _check_images(root: Path, paths: list[str], label_file: Path, first_row: int = 2) -> None:
    for i, p in enumerate(paths):
        if not (root / p).is_file():
            raise UserError(f"{label_file}: row {i + first_row}: image not found: {root / p}")


def koniq10k(cfg: DataConfig, root: Path) -> Catalog:
    label_file = root / "koniq10k_scores_and_distributions.csv"
    labels = {None: "MOS_zscore", "mos_zscore": "MOS_zscore", "mos": "MOS"}
    if cfg.label not in labels:
        raise UserError(f"data.label: KonIQ-10k labels are mos_zscore (0-100) or mos (1-5), got {cfg.label!r}")
    column = labels[cfg.label]
    rows = _read_csv(label_file, ["image_name", column])
    paths = [f"1024x768/{r['image_name']}" for r in rows]
    scores = np.array([_score(r[column], label_file, i + 2, column) for i, r in enumerate(rows)])
    _check_images(root, paths, label_file)
    # the official split ships as a 'set' column (koniq10k_distributions_sets.csv) with training/validation/test
    official = None
    sets_file = root / "koniq10k_distributions_sets.csv"
    set_rows = rows if "set" in rows[0] else (_read_csv(sets_file, ["image_name", "set"]) if sets_file.is_file() else None)
    if set_rows is not None:
        where = {r["image_name"]: r["set"].strip().lower() for r in set_rows}
        names = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}
        official = {"train": [], "val": [], "test": []}
        for i, r in enumerate(rows):
            s = names.get(where.get(r["image_name"], ""))
            if s is None:
                raise UserError(f"{sets_file}: no valid set (training/validation/test) for {r['image_name']}")
            official[s].append(i)
    return Catalog("koniq10k", root, paths, scores, [r["image_name"] for r in rows], [512, 384], official,
                   column, str(label_file))


def livec(cfg: DataConfig, root: Path) -> Catalog:
    from scipy.io import loadmat

    names_file, mos_file = root / "Data/AllImages_release.mat", root / "Data/AllMOS_release.mat"
    for f in (names_file, mos_file):
        if not f.is_file():
            raise UserError(f"{f}: label file not found")
    try:
        names = loadmat(names_file)["AllImages_release"]
        mos = np.asarray(loadmat(mos_file)["AllMOS_release"], dtype=np.float64).ravel()
    except KeyError as e:
        raise UserError(f"{root / 'Data'}: .mat file without key {e}") from None
    except (ValueError, TypeError, OSError) as e:
        raise UserError(f"{root / 'Data'}: unreadable .mat file: {e}") from None
    names = [str(names[i][0][0]) for i in range(len(names))]
    if len(names) != len(mos):
        raise UserError(f"{names_file}: {len(names)} names but {mos_file.name} has {len(mos)} scores")
    # the first 7 entries are the trial images (Images/trainingImages/), dropped by convention
    names, mos = names[7:], mos[7:]
    for i, v in enumerate(mos):
        _score(v, mos_file, i + 8, "AllMOS_release")
    paths = [f"Images/{n}" for n in names]
    _check_images(root, paths, names_file, first_row=8)
    return Catalog("livec", root, paths, mos, names, None, None, "MOS", str(mos_file))


def kadid10k(cfg: DataConfig, root: Path) -> Catalog:
    label_file = root / "dmos.csv"
    rows = _read_csv(label_file, ["dist_img", "ref_img", "dmos"])
    paths = [f"images/{r['dist_img']}" for r in rows]
    # 'dmos' in this release is a MOS: higher is better
    scores = np.array([_score(r["dmos"], label_file, i + 2, "dmos") for i, r in enumerate(rows)])
    _check_images(root, paths, label_file)
    return Catalog("kadid10k", root, paths, scores, [r["ref_img"] for r in rows], None, None, "dmos",
                   str(label_file))


def spaq(cfg: DataConfig, root: Path) -> Catalog:
    from openpyxl import load_workbook

    label_file = root / "Annotations/MOS and Image attribute scores.xlsx"
    if not label_file.is_file():
        raise UserError(f"{label_file}: label file not found")
    sheet = load_workbook(label_file, read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    for need in ("Image name", "MOS"):
        if need not in header:
            raise UserError(f"{label_file}: missing column {need!r}{did_you_mean(need, header)}; columns found: {', '.join(header)}")
    ni, mi = header.index("Image name"), header.index("MOS")
    body = [r for r in rows[1:] if r and r[ni] is not None]
    paths = [f"TestImage/{r[ni]}" for r in body]
    scores = np.array([_score(r[mi], label_file, i + 2, "MOS") for i, r in enumerate(body)])
    _check_images(root, paths, label_file)
    # originals are large phone photos: shorter side to 512 unless the config says otherwise
    return Catalog("spaq", root, paths, scores, [str(r[ni]) for r in body], 512, None, "MOS", str(label_file))


def generic_csv(cfg: DataConfig, root: Path) -> Catalog:
    if not cfg.csv_file:
        raise UserError("data.csv_file: the csv dataset needs a label file (columns path, score[, ref])")
    label_file = root / cfg.csv_file
    c = cfg.columns
    rows = _read_csv(label_file, [c.path, c.score] + ([c.ref] if c.ref else []))
    paths = [r[c.path] for r in rows]
    scores = np.array([_score(r[c.score], label_file, i + 2, c.score) for i, r in enumerate(rows)])
    refs = [r[c.ref] for r in rows] if c.ref else paths
    _check_images(root, paths, label_file)
    return Catalog("csv", root, paths, scores, refs, None, None, c.score, str(label_file))


def demo(cfg: DataConfig, root: Path) -> Catalog:
    from .demo_data import build_demo

    build_demo(root)
    cat = generic_csv(DataConfig(csv_file="labels.csv", columns=ColumnsConfig(ref="ref")), root)
    cat.name = "demo"
    return cat


DATASETS: dict[str, Callable[[DataConfig, Path], Catalog]] = {
    "demo": demo,
    "koniq10k": koniq10k,
    "livec": livec,
    "kadid10k": kadid10k,
    "spaq": spaq,
    "csv": generic_csv,
}
assert tuple(DATASETS) == DATASET_NAMES, "config.DATASET_NAMES lists the adapters of this registry"


def dataset_root(cfg: DataConfig) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser().resolve()
    if cfg.dataset == "demo":
        from .demo_data import DEMO_VERSION

        return (cache_root(cfg) / DEMO_VERSION).resolve()
    raise UserError(f"data.root: the {cfg.dataset} dataset needs data.root (the folder of its release)")


def load_catalog(cfg: DataConfig) -> Catalog:
    root = dataset_root(cfg)
    if not root.is_dir() and cfg.dataset != "demo":
        raise UserError(f"data.root: no such folder: {root}")
    cat = DATASETS[cfg.dataset](cfg, root)
    if len(cat) == 0:
        raise UserError(f"{cat.label_file}: no images listed")
    if cfg.limit:
        cat = cat.take(min(cfg.limit, len(cat)))
    return cat


# ----------------------------------------------------------------------------------------------------------------
# splits


def split_catalog(cat: Catalog, cfg: SplitConfig) -> dict[str, np.ndarray]:
    """Content-disjoint train/val/test indices: whole reference groups go to one split, chosen by ``cfg.seed``.

    Deterministic for a given catalog and seed, so every trial with the same split seed sees the same split.
    """
    if cfg.official and cat.official is not None:
        return {k: np.array(sorted(v), dtype=np.int64) for k, v in cat.official.items()}
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(cat.refs):
        groups.setdefault(r, []).append(i)
    keys = sorted(groups)
    order = np.random.default_rng(cfg.seed).permutation(len(keys))
    n = len(cat)
    bounds = np.cumsum([cfg.train, cfg.val])
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    seen = 0
    for gi in order:
        members = groups[keys[gi]]
        # a group goes where the middle of its run of images falls: fractions hold even with large groups
        middle = (seen + len(members) / 2) / n
        dest = "train" if middle < bounds[0] else ("val" if middle < bounds[1] else "test")
        out[dest].extend(members)
        seen += len(members)
    if len(keys) >= 3:
        for name in ("train", "val", "test"):
            if not out[name]:
                raise UserError(f"data.split: the {name} split is empty ({len(keys)} reference groups); "
                                f"adjust data.split fractions")
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}


def split_fingerprint(cat: Catalog, split: dict[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for k in ("train", "val", "test"):
        h.update(json.dumps([cat.paths[i] for i in split[k]]).encode())
    return h.hexdigest()[:12]


def split_record(cat: Catalog, split: dict[str, np.ndarray]) -> dict:
    """What is saved next to a run: the images of each split, by path."""
    return {"dataset": cat.name, "fingerprint": split_fingerprint(cat, split),
            **{k: [cat.paths[i] for i in v] for k, v in split.items()}}
