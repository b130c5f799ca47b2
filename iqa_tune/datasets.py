"""Dataset adapters for the release formats of the common IQA sets, plus a generic CSV, and the splits.

Each adapter turns a dataset folder into a :class:`Catalog` (image paths, scores, reference ids, the release's
own split where it has one) and checks it before any training: a missing image, a label file without the needed
columns or a non-numeric score stops with a message naming the file and row. Formats follow the releases
(and pyiqa's loaders): KonIQ-10k, LIVE Challenge, KADID-10k, SPAQ.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DATASET_NAMES, ColumnsConfig, DataConfig, SplitConfig, cache_root
from .errors import UserError, did_you_mean
from .yamlfile import utf16_problem


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
    # where each image is listed in label_file, as the error messages name it ("row 12", "entry 8"); None = row i+2
    rows: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def row(self, i: int) -> str:
        return self.rows[i] if self.rows is not None else f"row {i + 2}"

    def take(self, n: int) -> Catalog:
        keep = set(range(n))
        official = None if self.official is None else {
            k: [i for i in v if i in keep] for k, v in self.official.items()}
        return Catalog(self.name, self.root, self.paths[:n], self.scores[:n], self.refs[:n], self.resize, official,
                       self.label, self.label_file, None if self.rows is None else self.rows[:n])


# the resize of a dataset whose data.resize is null ([width, height] or the shorter side; absent: native size)
DEFAULT_RESIZE: dict[str, list[int] | int] = {"koniq10k": [512, 384], "spaq": 512}  # KonIQ: the reference's 512x384


def resize_rule(cfg: DataConfig) -> list[int] | int | None:
    """The resize a run applies to every image (``data.resize``, else its dataset's default), known without
    reading the dataset: scoring new images uses it."""
    return cfg.resize if cfg.resize is not None else DEFAULT_RESIZE.get(cfg.dataset)


LINE = "__line__"  # key of a row's line number in the file (the header is line 1, as a spreadsheet shows it)


def _read_csv(path: Path, required: list[str], optional: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a label file as dicts, each with its line number under ``LINE`` (blank lines are skipped, so
    counting rows would drift from what an editor shows)."""
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    raw = path.read_bytes()
    problem = utf16_problem(raw, path)
    if problem:
        raise UserError(problem)
    if b"\0" in raw:
        raise UserError(f"{path}: a binary file, not CSV text")
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, r) for r in reader if r]
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        f"save it as UTF-8") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV file: {e}") from None
    if not header:
        raise UserError(f"{path}: empty file; expected a header row with columns {', '.join(required)}")
    twice = sorted({h for h in header if header.count(h) > 1 and h in [*required, *optional]})
    if twice:
        raise UserError(f"{path}: column {twice[0]!r} appears more than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
        hint = did_you_mean(missing[0], header)
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}{hint}; columns found: {', '.join(header)}")
    if not rows:
        raise UserError(f"{path}: only a header, no images listed")
    out = []
    for line, r in rows:
        if len(r) < len(header):
            raise UserError(f"{path}: row {line}: {len(r)} fields, but the header has {len(header)}")
        out.append({**dict(zip(header, r)), LINE: line})
    return out


def _row_names(rows: list[dict]) -> list[str]:
    return [f"row {r[LINE]}" for r in rows]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _score(value, path: Path, row: int, column: str) -> float:
    """Row numbers count the header as row 1, as a spreadsheet shows them."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise UserError(f"{path}: row {row}: {column} is not a number: {value!r}")
    if abs(v) > FLOAT32_MAX:  # labels train as float32: this one would be inf there, and so would the loss
        raise UserError(f"{path}: row {row}: {column} {value!r} does not fit a 32-bit float (|x| <= 3.4e38), which "
                        f"the labels train as; rescale the labels (IQA scores are usually 0-1, 1-5 or 0-100)")
    return v


def _check_images(root: Path, paths: list[str], label_file: Path, rows: list[int]) -> None:
    """Every listed image exists (that each is listed once is :func:`check_unique_files`, for every adapter)."""
    for p, row in zip(paths, rows):
        if not (root / p).is_file():
            raise UserError(f"{label_file}: row {row}: image not found: {root / p}")


def file_identity(path: Path) -> tuple[int, int]:
    """The file a path resolves to, whatever its spelling (./, .., a symlink, a hard link): (device, inode)."""
    st = path.stat()
    return st.st_dev, st.st_ino


def check_unique_files(cat: Catalog) -> None:
    """Every image of the catalog is a different file: one photo listed twice, even under two spellings
    (img/a.jpg and ./img/a.jpg, a symlink to it), could land in two splits with two labels. Refused naming both
    rows. Every catalog passes here (:func:`load_catalog`), whichever adapter read it."""
    first: dict[tuple[int, int], int] = {}
    for i, p in enumerate(cat.paths):
        path = cat.root / p
        try:
            key = file_identity(path)
        except OSError as e:
            raise UserError(f"{cat.label_file}: {cat.row(i)}: image not readable: {path} ({e.strerror})") from None
        j = first.setdefault(key, i)
        if j != i:
            same = "" if cat.paths[j] == p else f" (the same file as {cat.paths[j]}: {os.path.realpath(path)})"
            raise UserError(f"{cat.label_file}: {cat.row(i)}: {p} is already listed at {cat.row(j)}{same}; "
                            "list each image once")


def _koniq_sets(rows: list[dict], label_file: Path, sets_file: Path) -> dict[str, list[int]] | None:
    """The official split, from a 'set' column of the label file or from koniq10k_distributions_sets.csv."""
    if "set" in rows[0]:
        sets, holder = rows, label_file
    elif sets_file.is_file():
        sets, holder = _read_csv(sets_file, ["image_name", "set"]), sets_file
    else:
        return None
    where: dict[str, tuple[str, int]] = {}
    for r in sets:  # an image in two sets would land in two splits
        first = where.setdefault(r["image_name"], (r["set"], r[LINE]))
        if first[1] != r[LINE]:
            raise UserError(f"{holder}: row {r[LINE]}: {r['image_name']} is already listed at row {first[1]}")
    names = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}
    official: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, r in enumerate(rows):
        if r["image_name"] not in where:
            raise UserError(f"{holder}: no row for {r['image_name']} (row {r[LINE]} of {label_file.name})")
        value, row = where[r["image_name"]]
        if value.strip().lower() not in names:
            raise UserError(f"{holder}: row {row}: set is {value!r}; expected training, validation or test")
        official[names[value.strip().lower()]].append(i)
    return official


def koniq10k(cfg: DataConfig, root: Path) -> Catalog:
    label_file = root / "koniq10k_scores_and_distributions.csv"
    labels = {None: "MOS_zscore", "mos_zscore": "MOS_zscore", "mos": "MOS"}
    if cfg.label not in labels:
        raise UserError(f"data.label: KonIQ-10k labels are mos_zscore (0-100) or mos (1-5), got {cfg.label!r}")
    column = labels[cfg.label]
    rows = _read_csv(label_file, ["image_name", column])
    paths = [f"1024x768/{r['image_name']}" for r in rows]
    scores = np.array([_score(r[column], label_file, r[LINE], column) for r in rows])
    _check_images(root, paths, label_file, [r[LINE] for r in rows])
    official = _koniq_sets(rows, label_file, root / "koniq10k_distributions_sets.csv")
    return Catalog("koniq10k", root, paths, scores, [r["image_name"] for r in rows], DEFAULT_RESIZE["koniq10k"],
                   official, column, str(label_file), _row_names(rows))


def _mat_entries(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(path)[key]
    except KeyError:
        raise UserError(f"{path}: no variable {key!r} in this .mat file") from None
    except (MatReadError, ValueError, TypeError, OSError) as e:
        raise UserError(f"{path}: unreadable .mat file: {e}") from None


def livec(cfg: DataConfig, root: Path) -> Catalog:
    names_file, mos_file = root / "Data/AllImages_release.mat", root / "Data/AllMOS_release.mat"
    for f in (names_file, mos_file):
        if not f.is_file():
            raise UserError(f"{f}: label file not found")
    names = _mat_entries(names_file, "AllImages_release")
    try:
        mos = np.asarray(_mat_entries(mos_file, "AllMOS_release"), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise UserError(f"{mos_file}: AllMOS_release is not an array of numbers") from None
    try:
        names = [str(names[i][0][0]) for i in range(len(names))]
    except (IndexError, TypeError):
        raise UserError(f"{names_file}: AllImages_release is not a cell array of file names") from None
    if len(names) != len(mos):
        raise UserError(f"{names_file}: {len(names)} names but {mos_file.name} has {len(mos)} scores")
    # the first 7 entries are the trial images (Images/trainingImages/), dropped by convention
    names, mos = names[7:], mos[7:]
    rows = list(range(8, 8 + len(names)))  # entry numbers in the .mat files, counting from 1
    for row, v in zip(rows, mos):
        _score(v, mos_file, row, "AllMOS_release")
    paths = [f"Images/{n}" for n in names]
    _check_images(root, paths, names_file, rows)
    return Catalog("livec", root, paths, mos, names, None, None, "MOS", str(mos_file),
                   [f"entry {r} of {names_file.name}" for r in rows])


def kadid10k(cfg: DataConfig, root: Path) -> Catalog:
    label_file = root / "dmos.csv"
    rows = _read_csv(label_file, ["dist_img", "ref_img", "dmos"])
    paths = [f"images/{r['dist_img']}" for r in rows]
    # 'dmos' in this release is a MOS: higher is better
    scores = np.array([_score(r["dmos"], label_file, r[LINE], "dmos") for r in rows])
    _check_images(root, paths, label_file, [r[LINE] for r in rows])
    return Catalog("kadid10k", root, paths, scores, [r["ref_img"] for r in rows], None, None, "dmos",
                   str(label_file), _row_names(rows))


def spaq(cfg: DataConfig, root: Path) -> Catalog:
    from zipfile import BadZipFile

    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    label_file = root / "Annotations/MOS and Image attribute scores.xlsx"
    if not label_file.is_file():
        raise UserError(f"{label_file}: label file not found")
    try:
        sheet = load_workbook(label_file, read_only=True).active
        rows = list(sheet.iter_rows(values_only=True))
    except (InvalidFileException, BadZipFile, KeyError, ValueError, OSError) as e:
        raise UserError(f"{label_file}: unreadable spreadsheet: {e}") from None
    if not rows:
        raise UserError(f"{label_file}: empty sheet; expected a header row with 'Image name' and 'MOS'")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    for need in ("Image name", "MOS"):
        if need not in header:
            raise UserError(f"{label_file}: missing column {need!r}{did_you_mean(need, header)}; columns found: {', '.join(header)}")
    ni, mi = header.index("Image name"), header.index("MOS")
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if r and len(r) > ni and r[ni] is not None]
    paths = [f"TestImage/{r[ni]}" for _, r in body]
    scores = np.array([_score(r[mi] if len(r) > mi else None, label_file, n, "MOS") for n, r in body])
    _check_images(root, paths, label_file, [n for n, _ in body])
    # originals are large phone photos: shorter side to 512 unless the config says otherwise
    return Catalog("spaq", root, paths, scores, [str(r[ni]) for _, r in body], DEFAULT_RESIZE["spaq"], None, "MOS",
                   str(label_file), [f"row {n}" for n, _ in body])


def generic_csv(cfg: DataConfig, root: Path) -> Catalog:
    if not cfg.csv_file:
        raise UserError("data.csv_file: the csv dataset needs a label file (columns path, score[, ref])")
    label_file = root / cfg.csv_file
    c = cfg.columns
    rows = _read_csv(label_file, [c.path, c.score], optional=(c.ref,) if c.ref else ())
    for r in rows:
        if not r[c.path].strip():
            raise UserError(f"{label_file}: row {r[LINE]}: {c.path} is empty")
    paths = [r[c.path] for r in rows]
    scores = np.array([_score(r[c.score], label_file, r[LINE], c.score) for r in rows])
    _check_images(root, paths, label_file, [r[LINE] for r in rows])
    return Catalog("csv", root, paths, scores, _csv_refs(rows, paths, c, label_file), None, None, c.score,
                   str(label_file), _row_names(rows))


def _csv_refs(rows: list[dict], paths: list[str], c: ColumnsConfig, label_file: Path) -> list[str]:
    """Content ids: the ref column when there is one (the default name is optional), else one per image."""
    if c.ref is None or (c.ref not in rows[0] and c.ref == ColumnsConfig.ref):
        return paths
    if c.ref not in rows[0]:
        header = [k for k in rows[0] if k != LINE]
        raise UserError(f"{label_file}: no column {c.ref!r} (data.columns.ref){did_you_mean(c.ref, header)}; "
                        f"columns found: {', '.join(header)}")
    for r in rows:
        if not r[c.ref].strip():
            raise UserError(f"{label_file}: row {r[LINE]}: {c.ref} is empty; give every image a content id, or "
                            f"set data.columns.ref: null to treat every image as its own content")
    return [r[c.ref] for r in rows]


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
SHIPS_OFFICIAL_SPLIT = {"koniq10k"}  # releases that may ship their own train/val/test sets


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
    check_unique_files(cat)
    if len(cat) == 0:
        raise UserError(f"{cat.label_file}: no images listed")
    if np.ptp(cat.scores) == 0:  # SRCC of anything against a constant is undefined: a wrong column, most likely
        raise UserError(f"{cat.label_file}: every value of {cat.label} is {cat.scores[0]:g} ({len(cat)} images); "
                        f"there is nothing to learn or rank")
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
        moved = [k for k in ("train", "val", "test", "seed") if getattr(cfg, k) != getattr(SplitConfig(), k)]
        if moved:  # a seeded split asked for, the release's own sets used: a run unlike its config
            keys = ", ".join(f"data.split.{k}" for k in moved)
            raise UserError(f"{keys}: {cat.name} ships its own train/val/test sets and data.split.official is true, "
                            f"so {keys} does nothing; remove it, or set data.split.official: false to draw a "
                            "seeded content-disjoint split")
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
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}


def train_eval_subset(train: np.ndarray, n: int) -> np.ndarray:
    """``n`` images of the train split scored like test each epoch: evenly spaced over it (its catalog order), so
    the subset is the same in every trial and epoch and spans the split's contents. Empty for 0."""
    n = min(n, len(train))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return train[np.unique(np.linspace(0, len(train) - 1, n).round().astype(np.int64))]


MIN_EVAL = 3  # distinct scores a val or test split needs: SRCC/PLCC of fewer is undefined or meaningless


def check_split(cat: Catalog, split: dict[str, np.ndarray], cfg: DataConfig) -> None:
    """Refuse, before any training, a split that cannot be trained on or scored (empty, one image, one score)."""
    counts = ", ".join(f"{k} {len(v)}" for k, v in split.items())
    official = cfg.split.official and cat.official is not None
    where = "the release's official split (data.split.official)" if official else f"data.split.seed {cfg.split.seed}"
    limit = f", data.limit {cfg.limit}" if cfg.limit else ""
    context = f"{len(cat)} images in {len(set(cat.refs))} content groups{limit}; {where}: {counts}"
    fix = ("set data.split.official: false to split by the data.split fractions" if official
           else "add images or raise data.split.{}")
    if not len(split["train"]):
        raise UserError(f"data.split: the train split is empty ({context}); {fix.format('train')}")
    if len(split["train"]) * cfg.train_patches < 2:  # one patch an epoch: batch norm has one value per channel
        raise UserError(f"data.split: the train split gives {len(split['train'])} image(s) x data.train_patches "
                        f"{cfg.train_patches} = 1 patch an epoch ({context}); the backbone's batch norm needs at "
                        f"least 2: raise data.train_patches, or add images")
    for name in ("val", "test"):
        distinct = len(np.unique(cat.scores[split[name]]))
        if distinct < MIN_EVAL:
            raise UserError(
                f"data.split: the {name} split has {len(split[name])} image(s) with {distinct} distinct score(s) "
                f"({context}); scoring it needs at least {MIN_EVAL} distinct scores: {fix.format(name)}")


def split_fingerprint(cat: Catalog, split: dict[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for k in ("train", "val", "test"):
        h.update(json.dumps([cat.paths[i] for i in split[k]]).encode())
    return h.hexdigest()[:12]


def split_record(cat: Catalog, split: dict[str, np.ndarray]) -> dict:
    """What is saved next to a run: the images of each split, by path."""
    return {"dataset": cat.name, "fingerprint": split_fingerprint(cat, split),
            **{k: [cat.paths[i] for i in v] for k, v in split.items()}}
