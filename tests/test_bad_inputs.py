"""Bad input, as a user meets it: through the real CLI, exit code 2, no traceback, and a message naming the file
and the key path, row or column to fix. Each case builds its own tiny dataset and config in ``tmp_path``; every
one of them fails before training (the configs are tiny anyway, so a case that wrongly trains still ends fast).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from iqa_tune.cache import decode

from .conftest import cli, write_image, write_livec

SPLIT = {"train": 0.4, "val": 0.3, "test": 0.3}  # 10 images -> 4/3/3: val and test can be scored
OFFICIAL = {"train": 0.7, "val": 0.1, "test": 0.2}  # the defaults: a release's own sets leave them untouched


def image(path: Path, size=40, seed=0) -> None:
    write_image(path, size, size, seed)


def dataset(tmp: Path, n=10, scores=None, folder="ds", text=None) -> Path:
    """A csv dataset of n tiny PNGs, img/0.png ..., scores 0..n-1 unless given; ``text`` replaces labels.csv."""
    root = tmp / folder
    for i in range(n):
        image(root / f"img/{i}.png", seed=i)
    scores = list(range(n)) if scores is None else scores
    body = text if text is not None else "path,score\n" + "".join(f"img/{i}.png,{s}\n" for i, s in enumerate(scores))
    (root / "labels.csv").write_text(body)
    return root


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config(tmp: Path, root: Path | None = None, file="cfg.yaml", **over) -> Path:
    """A tiny run config for the csv dataset at ``root`` (built if not given), with nested overrides."""
    root = root or dataset(tmp)
    body = {"out_dir": str(tmp / "runs"),
            "data": {"dataset": "csv", "root": str(root), "csv_file": "labels.csv", "patch_size": 32,
                     "train_patches": 2, "test_patches": 2, "split": SPLIT},
            "model": {"backbone": "resnet_micro"}, "train": {"epochs": 1, "batch_size": 8, "threads": 1}}
    path = tmp / file
    path.write_text(yaml.safe_dump(merge(body, over), sort_keys=False))
    return path


def text_file(tmp: Path, text: str | bytes, name="cfg.yaml") -> Path:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def tiny_yaml(tmp: Path, extra: str = "") -> str:
    """A valid run config as YAML text, so a case can add broken lines of its own."""
    return (f"out_dir: {tmp / 'runs'}\ndata:\n  dataset: csv\n  root: {dataset(tmp)}\n  csv_file: labels.csv\n"
            f"  patch_size: 32\n  train_patches: 2\n  test_patches: 2\n"
            f"  split: {{train: 0.4, val: 0.3, test: 0.3}}\nmodel:\n  backbone: resnet_micro\n{extra}")


def space(tmp: Path, text: str, name="space.yaml") -> Path:
    return text_file(tmp, "data: {dataset: demo}\nmodel: {backbone: resnet_micro}\n" + text, name)


def koniq(tmp: Path, n=10, set_column=None, sets_file=None, header_only=False) -> Path:
    root = tmp / "koniq"
    header = "image_name,MOS,MOS_zscore" + (",set" if set_column else "")
    rows = []
    for i in range(0 if header_only else n):
        image(root / f"1024x768/{i}.jpg", seed=i)
        rows.append(f"{i}.jpg,{1 + i * 0.3:.1f},{10 * i}" + (f",{set_column[i]}" if set_column else ""))
    root.mkdir(parents=True, exist_ok=True)
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join([header, *rows]) + "\n")
    if sets_file is not None:
        (root / "koniq10k_distributions_sets.csv").write_text(
            "image_name,set\n" + "".join(f"{name},{s}\n" for name, s in sets_file))
    return root


def livec(tmp: Path, names=None, mos=None, names_key="AllImages_release") -> Path:
    names = names if names is not None else [f"t{i}.bmp" for i in range(7)] + [f"{i}.bmp" for i in range(10)]
    return write_livec(tmp / "livec", names, mos, names_key, size=(40, 40))


SETS = ["training"] * 4 + ["validation"] * 3 + ["test"] * 3

# ----------------------------------------------------------------------------------------------------------------
# the cases: name -> (build(tmp) -> file to pass, command, strings the message must contain)

CASES: dict = {}


def case(*expected: str, command: str = "train"):
    def register(build):
        CASES[build.__name__] = (build, command, expected)
        return build
    return register


# YAML files: syntax, duplicates, empty, null sections, encodings


@case("not valid YAML", "line 3")
def yaml_syntax_error(tmp):
    return text_file(tmp, "data:\n  dataset: csv\n  root: [unclosed\nmodel: {}\n")


@case("not valid YAML")
def yaml_tab_indentation(tmp):
    return text_file(tmp, "train:\n\tlr: 0.1\n")


@case("not valid YAML")
def yaml_two_documents(tmp):
    return text_file(tmp, tiny_yaml(tmp) + "---\ntrain: {epochs: 1}\n")


@case("duplicate key 'lr'", "line 15", "first given at line 13")
def yaml_duplicate_key(tmp):
    return text_file(tmp, tiny_yaml(tmp, "train:\n  lr: 0.001\n  epochs: 1\n  lr: 0.1\n"))


@case("duplicate key 'train'", "line 14", "first given at line 12")
def yaml_duplicate_section(tmp):
    return text_file(tmp, tiny_yaml(tmp, "train: {epochs: 1}\nloss: {alpha: 0.5}\ntrain: {lr: 0.1}\n"))


@case("duplicate key 'loss.alpha'", "line 5", "first given at line 4", command="validate")
def yaml_duplicate_search_key(tmp):
    return space(tmp, "search:\n  loss.alpha: {choice: [0.0, 1.0]}\n  loss.alpha: {choice: [2.0]}\n")


@case("empty file")
def yaml_empty_file(tmp):
    return text_file(tmp, "")


@case("empty file")
def yaml_only_comments(tmp):
    return text_file(tmp, "# nothing here yet\n\n")


@case("empty file", command="validate")
def yaml_empty_space_file(tmp):
    return text_file(tmp, "   \n", "space.yaml")


@case("line 12", "train: empty (null)")
def yaml_null_section(tmp):
    return text_file(tmp, tiny_yaml(tmp, "train:\n"))


@case("data.split: empty (null)")
def yaml_null_nested_section(tmp):
    return text_file(tmp, tiny_yaml(tmp).replace("  split: {train: 0.4, val: 0.3, test: 0.3}", "  split:"))


@case("study: empty (null)", command="validate")
def yaml_null_study_section(tmp):
    return space(tmp, "study:\nsearch:\n  loss.alpha: {choice: [0.0]}\n")


@case("not UTF-8", "0xe9")
def yaml_latin1(tmp):
    return text_file(tmp, tiny_yaml(tmp, "name: caf\u00e9\n").encode("latin-1"))


@case("binary file")
def yaml_binary(tmp):
    return text_file(tmp, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")


@case("expected a mapping of sections", "list")
def yaml_top_level_list(tmp):
    return text_file(tmp, "- train\n- data\n")


@case("a folder, not a YAML file")
def yaml_is_a_folder(tmp):
    (tmp / "cfg.yaml").mkdir()
    return tmp / "cfg.yaml"


@case("no such file")
def yaml_missing(tmp):
    return tmp / "cfg.yaml"


# wrong types, unknown keys, bad values


@case("trian: unknown key", "did you mean 'train'")
def unknown_top_key(tmp):
    return config(tmp, trian={"epochs": 1})


@case("data.colums: unknown key", "did you mean 'columns'")
def unknown_nested_key(tmp):
    return config(tmp, data={"colums": {"ref": "x"}})


@case("train.lr: expected float, got 'fast'")
def wrong_type_string(tmp):
    return config(tmp, train={"lr": "fast"})


@case("train.epochs: expected int, got 1.5")
def wrong_type_float_for_int(tmp):
    return config(tmp, train={"epochs": 1.5})


@case("train.epochs: expected int, got True")
def wrong_type_bool_for_int(tmp):
    return config(tmp, train={"epochs": True})


@case("data.resize: expected [width, height] with positive values, got [64]")
def resize_message_keeps_its_brackets(tmp):
    return config(tmp, data={"resize": [64]})


@case("data.split: train + val + test must be 1")
def split_fractions(tmp):
    return config(tmp, data={"split": {"train": 0.5, "val": 0.3, "test": 0.3}})


@case("name: must be a folder name")
def empty_name(tmp):
    return config(tmp, name="")


@case("name: must be a folder name")
def blank_name(tmp):
    return config(tmp, name="   ")


@case("name: must be a folder name")
def name_with_slash(tmp):
    return config(tmp, name="../elsewhere")


@case("data.dataset: must be one of", "got 'kadid' (did you mean 'kadid10k'?)", "did you mean 'kadid10k'")
def unknown_dataset(tmp):
    return config(tmp, root=tmp, data={"dataset": "kadid"})


@case("data.root: no such folder", "nowhere")
def missing_root(tmp):
    return config(tmp, root=tmp / "nowhere")


@case("data.csv_file: the csv dataset needs a label file")
def csv_file_unset(tmp):
    return config(tmp, data={"csv_file": None})


# csv datasets


@case("labels.csv", "missing column(s) score", "did you mean 'scores'")
def csv_missing_column(tmp):
    return config(tmp, dataset(tmp, text="path,scores\nimg/0.png,1\n"))


@case("labels.csv", "row 4: image not found", "img/9.png")
def csv_missing_image(tmp):
    root = dataset(tmp)
    (root / "labels.csv").write_text("path,score\nimg/0.png,1\nimg/1.png,2\nimg/9.png,3\n")
    (root / "img/9.png").unlink()
    return config(tmp, root)


@case("labels.csv", "row 3: score is not a number: 'good'")
def csv_score_not_a_number(tmp):
    return config(tmp, dataset(tmp, scores=[1, "good", 3, 4, 5, 6, 7, 8, 9, 10]))


@case("labels.csv", "row 2: score is not a number: 'nan'")
def csv_score_nan(tmp):
    return config(tmp, dataset(tmp, scores=["nan", 2, 3, 4, 5, 6, 7, 8, 9, 10]))


@case("labels.csv", "row 5: score is not a number: ''")
def csv_score_blank(tmp):
    return config(tmp, dataset(tmp, scores=[1, 2, 3, "", 5, 6, 7, 8, 9, 10]))


@case("labels.csv", "empty file")
def csv_empty(tmp):
    return config(tmp, dataset(tmp, text=""))


@case("labels.csv", "only a header")
def csv_header_only(tmp):
    return config(tmp, dataset(tmp, text="path,score\n"))


@case("labels.csv", "every value of score is 5 (10 images)")
def csv_constant_scores(tmp):
    return config(tmp, dataset(tmp, scores=[5] * 10))


@case("labels.csv", "row 6: ref is empty")
def csv_ref_column_half_filled(tmp):
    refs = ["a", "a", "b", "b", "", "c", "c", "d", "d", "e"]
    text = "path,score,ref\n" + "".join(f"img/{i}.png,{i},{r}\n" for i, r in enumerate(refs))
    return config(tmp, dataset(tmp, text=text))


@case("labels.csv", "no column 'content' (data.columns.ref)", "did you mean 'contents'")
def csv_explicit_ref_column_missing(tmp):
    text = "path,score,contents\n" + "".join(f"img/{i}.png,{i},{i}\n" for i in range(10))
    return config(tmp, dataset(tmp, text=text), data={"columns": {"ref": "content"}})


@case("labels.csv", "row 4: img/1.png is already listed at row 3")
def csv_same_image_twice(tmp):
    text = "path,score,ref\nimg/0.png,0,a\nimg/1.png,1,b\nimg/1.png,5,c\n"
    return config(tmp, dataset(tmp, text=text))


@case("labels.csv", "row 3: 1 fields, but the header has 2")
def csv_short_row(tmp):
    return config(tmp, dataset(tmp, text="path,score\nimg/0.png,1\nimg/1.png\n"))


@case("labels.csv", "row 3: path is empty")
def csv_empty_path(tmp):
    return config(tmp, dataset(tmp, text="path,score\nimg/0.png,1\n,2\n"))


@case("labels.csv", "column 'score' appears more than once")
def csv_duplicate_header(tmp):
    return config(tmp, dataset(tmp, text="path,score,score\nimg/0.png,1,2\n"))


@case("labels.csv", "not UTF-8")
def csv_latin1(tmp):
    root = dataset(tmp)
    (root / "labels.csv").write_bytes("path,score\nimg/caf\u00e9.png,1\n".encode("latin-1"))
    return config(tmp, root)


@case("labels.csv", "a binary file, not CSV text")
def csv_binary(tmp):
    root = dataset(tmp)
    (root / "labels.csv").write_bytes(b"path,score\nimg/0.png,\0\0\n")
    return config(tmp, root)


@case("nope.csv", "label file not found")
def csv_file_missing(tmp):
    return config(tmp, data={"csv_file": "nope.csv"})


@case("labels.csv", "row 6: image not found", "img/77.png")
def csv_blank_lines_keep_row_numbers(tmp):
    text = "path,score\nimg/0.png,0\n\nimg/1.png,1\n\nimg/77.png,2\n"
    return config(tmp, dataset(tmp, text=text))


# images


@case("3.png", "unreadable or truncated image")
def image_truncated(tmp):
    root = dataset(tmp)
    data = (root / "img/3.png").read_bytes()
    (root / "img/3.png").write_bytes(data[: len(data) // 2])
    return config(tmp, root)


@case("3.png", "unreadable or truncated image")
def image_not_an_image(tmp):
    root = dataset(tmp)
    (root / "img/3.png").write_text("this is not a picture\n")
    return config(tmp, root)


@case("3.png", "unreadable or truncated image")
def image_zero_bytes(tmp):
    root = dataset(tmp)
    (root / "img/3.png").write_bytes(b"")
    return config(tmp, root)


@case("3.png", "smaller than data.patch_size 32")
def image_smaller_than_patch(tmp):
    root = dataset(tmp)
    image(root / "img/3.png", size=20)
    return config(tmp, root)


@case("3.tif", "F image with values -5..7", "unknown range")
def image_float_out_of_range(tmp):
    root = dataset(tmp)
    Image.fromarray(np.linspace(-5, 7, 40 * 40, dtype=np.float32).reshape(40, 40)).save(root / "img/3.tif")
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("img/3.png", "img/3.tif"))
    return config(tmp, root)


# splits too small to score


@case("data.split: the val split has 1 image(s) with 1 distinct score(s)", "train 8, val 1, test 1")
def split_val_one_image(tmp):
    return config(tmp, data={"split": {"train": 0.8, "val": 0.1, "test": 0.1}})


@case("data.split: the val split has 3 image(s) with 1 distinct score(s)", "train 4, val 3, test 3")
def split_three_images_too_few_distinct_scores(tmp):
    return config(tmp, dataset(tmp, scores=[0, 1] * 5))


@case("data.split: the val split", "data.limit 5")
def split_too_small_after_limit(tmp):
    return config(tmp, data={"limit": 5})


@case("data.split: the val split has 0 image(s)", "2 images in 2 content groups", "train 1, val 0, test 1")
def split_tiny_dataset(tmp):
    return config(tmp, dataset(tmp, n=2))


@case("data.split: the train split is empty", "train 0, val 5, test 5")
def split_train_empty(tmp):
    return config(tmp, data={"split": {"train": 0.05, "val": 0.45, "test": 0.5}})


@case("data.split: the val split", "official split (data.split.official)", "val 1")
def split_official_too_small(tmp):
    return config(tmp, koniq(tmp, set_column=["training"] * 6 + ["validation"] + ["test"] * 3),
                  data={"dataset": "koniq10k", "resize": [40, 40], "csv_file": None, "split": OFFICIAL})


@case("data.split.train, data.split.val, data.split.seed", "ships its own train/val/test sets", "data.split.official: false")
def split_seed_beside_the_official_split(tmp):
    return config(tmp, koniq(tmp, set_column=["training"] * 4 + ["validation"] * 3 + ["test"] * 3),
                  data={"dataset": "koniq10k", "resize": [40, 40], "csv_file": None,
                        "split": {**OFFICIAL, "seed": 3, "train": 0.6, "val": 0.2}})


# out_dir


@case("out_dir:", "taken", "is a file, not a folder")
def out_dir_is_a_file(tmp):
    (tmp / "taken").write_text("")
    return config(tmp, out_dir=str(tmp / "taken"))


@case("out_dir:", "taken", "is a file, not a folder")
def out_dir_below_a_file(tmp):
    (tmp / "taken").write_text("")
    return config(tmp, out_dir=str(tmp / "taken/runs"))


# '[' and ']' in names and paths: printed literally, never read as rich markup


@case("cfg[bold].yaml", "train.lr: expected float")
def brackets_in_config_name(tmp):
    return config(tmp, file="cfg[bold].yaml", train={"lr": "fast"})


@case("img/[red]0[/].png", "image not found")
def brackets_in_image_path(tmp):
    return config(tmp, dataset(tmp, text="path,score\nimg/[red]0[/].png,1\n"))


@case("data[/]", "data.root: no such folder")
def brackets_in_root(tmp):
    return config(tmp, root=tmp / "data[/]")


@case("space[1].yaml", "search.loss.alpha.uniform: expected [lo, hi] numbers", command="validate")
def brackets_in_space_name_and_message(tmp):
    return space(tmp, "search:\n  loss.alpha: {uniform: [1]}\n", name="space[1].yaml")


@case("name: must be a folder name", "got '[/]/x'")
def brackets_in_run_name(tmp):
    return config(tmp, name="[/]/x")


# release formats: KonIQ-10k, LIVE Challenge, SPAQ


@case("koniq10k_scores_and_distributions.csv", "only a header")
def koniq_header_only(tmp):
    return config(tmp, koniq(tmp, header_only=True), data={"dataset": "koniq10k", "csv_file": None})


@case("koniq10k_scores_and_distributions.csv", "row 4: set is 'holdout'")
def koniq_bad_set_in_label_file(tmp):
    column = ["training", "training", "holdout"] + SETS[3:]
    return config(tmp, koniq(tmp, set_column=column), data={"dataset": "koniq10k", "csv_file": None})


@case("koniq10k_distributions_sets.csv", "row 3: set is 'valid'")
def koniq_bad_set_in_sets_file(tmp):
    names = [f"{i}.jpg" for i in range(10)]
    rows = list(zip(names, ["training", "valid"] + SETS[2:]))
    return config(tmp, koniq(tmp, sets_file=rows), data={"dataset": "koniq10k", "csv_file": None})


@case("koniq10k_distributions_sets.csv", "no row for 9.jpg")
def koniq_image_missing_from_sets_file(tmp):
    rows = [(f"{i}.jpg", s) for i, s in enumerate(SETS[:9])]
    return config(tmp, koniq(tmp, sets_file=rows), data={"dataset": "koniq10k", "csv_file": None})


@case("AllImages_release.mat", "no variable 'AllImages_release'")
def livec_wrong_mat_variable(tmp):
    return config(tmp, livec(tmp, names_key="names"), data={"dataset": "livec", "csv_file": None})


@case("AllMOS_release.mat", "unreadable .mat file")
def livec_mat_not_a_mat(tmp):
    root = livec(tmp)
    (root / "Data/AllMOS_release.mat").write_text("MOS\n1\n2\n")
    return config(tmp, root, data={"dataset": "livec", "csv_file": None})


@case("AllImages_release.mat", "17 names but AllMOS_release.mat has 12 scores")
def livec_counts_differ(tmp):
    return config(tmp, livec(tmp, mos=np.arange(12.0)), data={"dataset": "livec", "csv_file": None})


@case("MOS and Image attribute scores.xlsx", "unreadable spreadsheet")
def spaq_not_a_spreadsheet(tmp):
    root = tmp / "spaq"
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations/MOS and Image attribute scores.xlsx").write_text("Image name,MOS\n")
    return config(tmp, root, data={"dataset": "spaq", "csv_file": None})


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_named_without_a_traceback(tmp_path, name):
    build, command, expected = CASES[name]
    path = build(tmp_path)
    run = cli(command, path, timeout=120)
    message = run.stderr.replace("\n", " ")
    assert run.returncode == 2, run.stderr[-2000:] + run.stdout[-1000:]
    assert "Traceback" not in run.stderr
    assert message.startswith("error: ") and path.name in message  # every error names the file given
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # a refused run leaves no run folder behind


def test_ref_column_is_used_by_default(tmp_path):
    """A csv with a 'ref' column keeps each content in one split without data.columns.ref being set."""
    from iqa_tune.config import DataConfig, SplitConfig
    from iqa_tune.datasets import load_catalog, split_catalog

    text = "path,score,ref\n" + "".join(f"img/{i}.png,{i},c{i // 2}\n" for i in range(10))
    root = dataset(tmp_path, text=text)
    cat = load_catalog(DataConfig(dataset="csv", root=str(root), csv_file="labels.csv"))
    assert cat.refs == [f"c{i // 2}" for i in range(10)]
    split = split_catalog(cat, SplitConfig(**SPLIT, seed=1))
    groups = {k: {cat.refs[i] for i in v} for k, v in split.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    no_ref = dataset(tmp_path / "plain")  # no ref column: every image is its own content
    assert load_catalog(DataConfig(dataset="csv", root=str(no_ref), csv_file="labels.csv")).refs == \
        [f"img/{i}.png" for i in range(10)]


# ----------------------------------------------------------------------------------------------------------------
# decoding: every image mode to correct 8-bit RGB


def png16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB(A) PNG, written by hand: PIL cannot write one."""
    h, w, c = rgb.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


GRAY16 = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
GRAY16_AS_8 = [0, 4, 128, 255]  # value / 257: 32768 is mid-gray, not the white that clipping gives


def _palette(transparent: bool) -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    if transparent:
        im.info["transparency"] = 0
    return im


@pytest.mark.parametrize("name, make, expected", [
    ("gray16.png", lambda: Image.fromarray(GRAY16), [[g] * 3 for g in GRAY16_AS_8]),
    ("gray16.tif", lambda: Image.fromarray(GRAY16), [[g] * 3 for g in GRAY16_AS_8]),
    ("gray16b.tif", lambda: Image.frombytes("I;16B", (4, 1), GRAY16.astype(">u2").tobytes()),
     [[g] * 3 for g in GRAY16_AS_8]),
    ("int32.tif", lambda: Image.fromarray(GRAY16.astype(np.int32)), [[g] * 3 for g in GRAY16_AS_8]),
    ("float.tif", lambda: Image.fromarray(np.array([[0, 0.25, 0.5, 1]], np.float32)),
     [[g] * 3 for g in (0, 64, 128, 255)]),
    ("palette.png", lambda: _palette(False), [[255, 0, 0], [0, 128, 255]]),
    ("palette_alpha.png", lambda: _palette(True), [[255, 0, 0], [0, 128, 255]]),
    ("cmyk.tif", lambda: Image.new("CMYK", (1, 1), (0, 255, 255, 0)), [[255, 0, 0]]),
    ("la.png", lambda: Image.new("LA", (1, 1), (100, 0)), [[100, 100, 100]]),
    ("rgba.png", lambda: Image.new("RGBA", (1, 1), (10, 20, 30, 0)), [[10, 20, 30]]),
    ("bilevel.png", lambda: Image.new("1", (2, 1), 1), [[255, 255, 255]] * 2),
])
def test_every_image_mode_decodes_to_8bit_rgb(tmp_path, name, make, expected):
    path = tmp_path / name
    make().save(path, **({"transparency": 0} if name == "palette_alpha.png" else {}))
    got = decode(path, None)
    assert got.dtype == np.uint8 and got.shape[2] == 3
    assert np.abs(got[0].astype(int) - np.array(expected)).max() <= 1, got[0].tolist()


def test_16bit_rgb_png_decodes_to_its_high_byte(tmp_path):
    rgb = np.array([[[65535, 32768, 0], [1000, 40000, 20000]]], dtype=np.uint16)
    png16(tmp_path / "rgb16.png", rgb)
    png16(tmp_path / "rgba16.png", np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2))
    for name in ("rgb16.png", "rgba16.png"):
        got = decode(tmp_path / name, None).astype(int)
        assert np.abs(got - rgb / 257).max() <= 1, (name, got.tolist())
