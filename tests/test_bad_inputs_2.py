"""Bad input, round two: inputs that used to pass with a wrong result (one file under two spellings, keys that do
nothing, a stale cache, names that leave their folder, a metric ranked the wrong way, a build reported but thrown
away), an --address where no cluster answers, and messages that misled. Through the real CLI where a user meets
them: exit code 2, a line naming the file, row or key, no traceback; and beside each, the valid input still works.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from iqa_tune.cache import KEY_FIELDS, build_or_open
from iqa_tune.config import DataConfig, build_run_config
from iqa_tune.datasets import load_catalog
from iqa_tune.instance import check_address

from .conftest import ROOT, cli, write_livec
from .test_bad_inputs import config, dataset, image, koniq

TINY_SPACE = "data: {dataset: demo}\nmodel: {backbone: resnet_micro}\n"


def refused(run: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2, no traceback, every ``expected`` text in the error; returns stderr."""
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert "Traceback" not in out, out
    for text in expected:
        assert text in run.stderr, run.stderr
    return run.stderr


def write(tmp: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------------------
# one image under two spellings


SPELLINGS = {"dot": "./img/0.png", "dotdot": "img/../img/0.png", "double_slash": "img//0.png",
             "trailing_separator": "img/0.png/", "symlink": "img/link.png", "hard_link": "img/hard.png",
             "symlinked_folder": "alias/0.png"}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_one_image_under_two_spellings_is_refused_naming_both_rows(tmp_path, spelling):
    root = dataset(tmp_path)  # rows 2..11 list img/0.png .. img/9.png
    (root / "img/link.png").symlink_to("0.png")
    os.link(root / "img/0.png", root / "img/hard.png")
    (root / "alias").symlink_to("img")
    with open(root / "labels.csv", "a") as f:
        f.write(f"{SPELLINGS[spelling]},45\n")
    refused(cli("train", config(tmp_path, root)), "labels.csv: row 12:", SPELLINGS[spelling],
            "already listed at row 2")


def test_two_different_files_with_the_same_pixels_are_two_images(tmp_path):
    root = dataset(tmp_path)
    (root / "img/copy.png").write_bytes((root / "img/0.png").read_bytes())
    with open(root / "labels.csv", "a") as f:
        f.write("img/copy.png,45\n")
    cat = load_catalog(DataConfig(dataset="csv", root=str(root), csv_file="labels.csv"))
    assert len(cat) == 11 and cat.paths[-1] == "img/copy.png"


def _koniq_alias(tmp: Path, official: bool) -> Path:
    sets = ["training"] * 4 + ["validation"] * 3 + ["test"] * 3
    root = koniq(tmp, set_column=sets if official else None)
    (root / "1024x768/10.jpg").symlink_to("0.jpg")
    with open(root / "koniq10k_scores_and_distributions.csv", "a") as f:
        f.write("10.jpg,4.0,90" + (",test" if official else "") + "\n")
    return root


def _kadid_alias(tmp: Path) -> Path:
    root = tmp / "kadid"
    rows = ["dist_img,ref_img,dmos,var"]
    for i in range(10):
        image(root / f"images/I{i:02d}_01_01.png", seed=i)
        rows.append(f"I{i:02d}_01_01.png,I{i:02d}.png,{1 + i * 0.3:.1f},0.1")
    (root / "images/I10_01_01.png").symlink_to("I00_01_01.png")
    rows.append("I10_01_01.png,I10.png,4.5,0.1")
    (root / "dmos.csv").write_text("\n".join(rows) + "\n")
    return root


def _livec_alias(tmp: Path) -> Path:
    names = [f"t{i}.bmp" for i in range(7)] + [f"{i}.bmp" for i in range(10)] + ["alias.bmp"]
    root = write_livec(tmp / "livec", names, size=(40, 40))
    (root / "Images/alias.bmp").unlink()
    (root / "Images/alias.bmp").symlink_to("0.bmp")
    return root


def _spaq_alias(tmp: Path) -> Path:
    from openpyxl import Workbook

    root = tmp / "spaq"
    wb = Workbook()
    wb.active.append(["Image name", "MOS"])
    for i in range(10):
        image(root / f"TestImage/{i:05d}.jpg", seed=i)
        wb.active.append([f"{i:05d}.jpg", 10.0 * i])
    (root / "TestImage/00010.jpg").symlink_to("00000.jpg")
    wb.active.append(["00010.jpg", 95.0])
    (root / "Annotations").mkdir()
    wb.save(root / "Annotations/MOS and Image attribute scores.xlsx")
    return root


ADAPTERS = {  # dataset -> (build(tmp) -> root, the alias's row, the original's row)
    "koniq10k": (lambda tmp: _koniq_alias(tmp, official=False), "row 12:", "row 2"),
    "koniq10k_official_split": (lambda tmp: _koniq_alias(tmp, official=True), "row 12:", "row 2"),
    "kadid10k": (_kadid_alias, "row 12:", "row 2"),
    "livec": (_livec_alias, "entry 18 of AllImages_release.mat", "entry 8 of AllImages_release.mat"),
    "spaq": (_spaq_alias, "row 12:", "row 2"),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_every_dataset_adapter_refuses_one_file_listed_twice(tmp_path, adapter):
    build, alias_row, first_row = ADAPTERS[adapter]
    dataset_name = adapter.split("_official")[0]
    data = {"dataset": dataset_name, "csv_file": None}
    if adapter == "koniq10k_official_split":
        data["split"] = {"official": True}
    refused(cli("train", config(tmp_path, build(tmp_path), data=data)), alias_row, f"already listed at {first_row}")


# ----------------------------------------------------------------------------------------------------------------
# keys that do nothing


@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_label_the_csv_dataset_ignores_is_refused_naming_the_key_that_does_the_job(tmp_path, command):
    refused(cli(command, config(tmp_path, data={"label": "mos"})), "data.label", "data.columns.score")


@pytest.mark.parametrize("data, expected", [
    ({"dataset": "demo", "label": "mos"}, "data.label: the demo dataset has one label"),
    ({"dataset": "livec", "root": "/x", "label": "mos"}, "data.label: the livec dataset has one label"),
    ({"dataset": "koniq10k", "root": "/x", "csv_file": "labels.csv"}, "data.csv_file: only the csv dataset"),
    ({"dataset": "kadid10k", "root": "/x", "columns": {"score": "mos"}}, "data.columns: only the csv dataset"),
], ids=["demo_label", "livec_label", "koniq_csv_file", "kadid_columns"])
def test_data_keys_another_dataset_ignores_are_refused(tmp_path, data, expected):
    refused(cli("validate", write(tmp_path, yaml.safe_dump({"data": data}))), expected)


def test_the_label_koniq_offers_is_honoured(tmp_path):
    root = koniq(tmp_path)
    assert load_catalog(DataConfig(dataset="koniq10k", root=str(root), label="mos")).label == "MOS"
    assert load_catalog(DataConfig(dataset="koniq10k", root=str(root))).label == "MOS_zscore"


INERT = {  # fixed settings another fixed setting ignores -> what the error names
    "step_size_under_cosine": ({"train": {"schedule": "cosine", "step_size": 3}},
                               "train.step_size: a cosine schedule has no steps"),
    "floor_under_step": ({"train": {"cosine_floor": 0.1}}, "train.cosine_floor: a step schedule has no cosine floor"),
    "margin_at_alpha_0": ({"loss": {"margin": 0.5}}, "loss.margin: loss.alpha = 0 turns the ranking loss off"),
    "dropout_layers_at_dropout_0": ({"model": {"dropout_layers": "first"}}, "model.dropout_layers: model.dropout = 0"),
    "schedule_under_reference_compat": ({"train": {"reference_compat": True, "schedule": "cosine"}},
                                        "train.schedule: train.reference_compat"),
    "pretrained_with_checkpoint": ({"model": {"pretrained": True, "checkpoint": "w.pth"}},
                                   "model.pretrained: model.checkpoint gives the backbone's weights"),
}


@pytest.mark.parametrize("name", list(INERT))
def test_a_fixed_key_that_another_makes_inert_is_refused_by_validate_and_train(tmp_path, name):
    over, expected = INERT[name]
    refused(cli("validate", config(tmp_path, **over)), expected)
    refused(cli("train", config(tmp_path, **over)), expected)


def test_a_searched_key_made_inert_is_folded_and_said_not_refused(tmp_path):
    run = cli("validate", write(tmp_path, TINY_SPACE + "train: {schedule: cosine}\n"
                                "search: {train.step_size: {grid: [2, 4]}}\n"))
    assert run.returncode == 0, run.stderr
    assert "train.step_size: a cosine schedule has no steps" in run.stdout and "trials: 1 " in run.stdout
    run = cli("validate", write(tmp_path, TINY_SPACE + "loss: {margin: 0.5}\n"
                                "search: {loss.alpha: {grid: [0.0, 1.0]}}\n"))  # the margin acts at alpha 1
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("study, expected", [
    ("{scheduler: {type: none, grace_period: 2}}", "study.scheduler.grace_period: the scheduler type is none"),
    ("{search: {type: grid}, search_seed: 7}", "study.search_seed: nothing in this space is drawn"),
    ("{search: {type: random}, search_seed: 7}", "study.search_seed: nothing in this space is drawn"),
    ("{search: {startup_trials: 3}}", "study.search.startup_trials: only optuna"),
])
def test_study_keys_the_scheduler_or_searcher_never_reads_are_refused(tmp_path, study, expected):
    refused(cli("validate", write(tmp_path, TINY_SPACE + "search: {loss.alpha: {grid: [0.0, 1.0]}}\n"
                                  f"study: {study}\n")), expected)


def test_a_search_seed_is_accepted_where_something_is_drawn(tmp_path):
    run = cli("validate", write(tmp_path, TINY_SPACE + "search: {loss.alpha: {uniform: [0.0, 1.0]}}\n"
                                "study: {search_seed: 7, num_samples: 2}\n"))
    assert run.returncode == 0, run.stderr


def test_gpu_keys_act_on_a_cpu_too(tmp_path):
    """precision, channels_last and compile are not GPU-only: on a CPU, autocast computes in bf16/fp16 and the
    model takes the NHWC layout; so they are honoured there, not refused."""
    import torch

    from iqa_tune.prepare import prepare_data
    from iqa_tune.solver import Solver

    cfg = build_run_config(yaml.safe_load(config(tmp_path, train={"device": "cpu", "precision": "bf16",
                                                                  "channels_last": True}).read_text()))
    solver = Solver(cfg, prepare_data(cfg, progress=False))
    x = torch.rand(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with solver.autocast(), torch.no_grad():
        assert solver.model.backbone(x)[-1].dtype == torch.bfloat16
    conv = next(m for m in solver.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------------------------
# the decoded-image cache


def _bmp_dataset(tmp: Path, n: int = 3) -> Path:
    """BMPs: a rewrite with other pixels has exactly the same size in bytes."""
    root = tmp / "bmp"
    (root / "img").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((40, 40, 3), 10 * i, np.uint8)).save(root / f"img/{i}.bmp")
    (root / "labels.csv").write_text("path,score\n" + "".join(f"img/{i}.bmp,{i}\n" for i in range(n)))
    return root


def test_a_same_size_rewrite_in_the_same_second_rebuilds_the_cache_and_serves_the_new_pixels(tmp_path):
    root = _bmp_dataset(tmp_path)
    cat = load_catalog(DataConfig(dataset="csv", root=str(root), csv_file="labels.csv"))
    assert build_or_open(cat, None, tmp_path / "cache", progress=False).decoded == 3
    assert build_or_open(cat, None, tmp_path / "cache", progress=False).decoded == 0  # unchanged: reused
    path = root / "img/0.bmp"
    before = path.stat()
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path)  # a regenerated distortion
    second = before.st_mtime_ns // 10**9 * 10**9
    os.utime(path, ns=(before.st_atime_ns, second + (before.st_mtime_ns + 1) % 10**9))  # the same whole second
    after = path.stat()
    assert after.st_size == before.st_size and int(after.st_mtime) == int(before.st_mtime)  # the old key's view
    cache = build_or_open(cat, None, tmp_path / "cache", progress=False)
    assert cache.decoded == 3 and int(cache.image(0)[0, 0, 0]) == 200
    # a tool that sets the mtime back (cp -p, rsync -t) still changes the ctime
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(path)
    os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns))
    cache = build_or_open(cat, None, tmp_path / "cache", progress=False)
    assert cache.decoded == 3 and int(cache.image(0)[0, 0, 0]) == 90


def test_a_run_records_the_cache_and_the_key_that_matched(tmp_path):
    from iqa_tune.prepare import prepare_data

    cfg = build_run_config(yaml.safe_load(config(tmp_path, _bmp_dataset(tmp_path, n=10),
                                                 data={"cache_dir": str(tmp_path / "c")}).read_text()))
    for folder in ("run", "again"):
        (tmp_path / folder).mkdir()
        prepare_data(cfg, progress=False).write_run_files(tmp_path / folder, cfg)
    first, again = (json.loads((tmp_path / f"{d}/split.json").read_text())["cache"] for d in ("run", "again"))
    assert first["key"] == again["key"] == "+".join(KEY_FIELDS)
    assert first["folder"] == again["folder"] and first["decoded_here"] and not again["decoded_here"]


# ----------------------------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize("name", ["../../etc", "", ".hidden", "a/b", "x" * 101, "-flag", "caf\u00e9"],
                         ids=["dotdot", "empty", "hidden", "slash", "too_long", "dash", "non_ascii"])
def test_one_name_rule_for_study_and_run_names_in_validate_and_train(tmp_path, name):
    refused(cli("validate", write(tmp_path, TINY_SPACE + yaml.safe_dump({"study": {"name": name}}))),
            "study.name: must be a folder name")
    refused(cli("validate", config(tmp_path, name=name)), "name: must be a folder name")
    refused(cli("train", config(tmp_path, name=name)), "name: must be a folder name")


def test_run_refuses_a_name_that_leaves_the_storage_folder_and_writes_nothing(tmp_path):
    spacefile = write(tmp_path, TINY_SPACE)
    for name in ("../escaped", ""):
        refused(cli("run", spacefile, "--name", name, "--storage", tmp_path / "store", timeout=60),
                "--name: must be a folder name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "store").exists()


def test_a_name_within_the_rule_is_accepted(tmp_path):
    run = cli("validate", write(tmp_path, TINY_SPACE + "study: {name: my-study_1.0}\n"))
    assert run.returncode == 0 and "ray_results/my-study_1.0" in run.stdout, run.stderr


# ----------------------------------------------------------------------------------------------------------------
# the direction of a metric


@pytest.mark.parametrize("metric, mode", [("val_srcc", "min"), ("train_loss", "max")])
def test_a_mode_against_the_metrics_direction_is_refused(tmp_path, metric, mode):
    refused(cli("validate", write(tmp_path, TINY_SPACE + f"study: {{metric: {metric}, mode: {mode}}}\n")),
            f"study.mode: {metric} is better when", "would pick the worst trial")


@pytest.mark.parametrize("metric, mode", [("val_srcc", "max"), ("train_loss", "min"), ("val_plcc", "max")])
def test_the_metric_decides_the_mode_when_it_is_left_out(tmp_path, metric, mode):
    run = cli("validate", write(tmp_path, TINY_SPACE + f"study: {{metric: {metric}}}\n"))
    assert run.returncode == 0 and f"metric {metric} ({mode})" in run.stdout, run.stderr


# ----------------------------------------------------------------------------------------------------------------
# demo-data --out


def test_demo_data_refuses_a_file_or_a_foreign_folder_as_its_output(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    refused(cli("demo-data", "--out", target), f"{target}: a file")
    assert target.read_text() == "keep me\n"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/other.txt").write_text("x")
    refused(cli("demo-data", "--out", tmp_path / "busy"), "busy: a folder that holds other files")


def test_demo_data_reports_a_folder_that_holds_the_dataset(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo/labels.csv").write_text("path,score\n")  # built before: left as it is
    run = cli("demo-data", "--out", tmp_path / "demo")
    assert run.returncode == 0 and run.stdout.strip() == str(tmp_path / "demo"), run.stderr


# ----------------------------------------------------------------------------------------------------------------
# an --address where no cluster answers


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture
def silent_listener():
    """A port that accepts connections (the kernel completes them) and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def test_an_address_where_nothing_listens_is_refused_in_seconds(tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    stderr = refused(cli("run", write(tmp_path, TINY_SPACE), "--address", address, "--storage", tmp_path / "s",
                         timeout=30), f"--address {address}: nothing answers there", "ray start --head",
                     "omit --address")
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_an_address_that_accepts_but_is_not_ray_is_refused_in_seconds(tmp_path, silent_listener):
    refused(cli("run", write(tmp_path, TINY_SPACE), "--address", silent_listener, "--storage", tmp_path / "s",
                timeout=30), f"--address {silent_listener}: something accepts connections there but says nothing")


def test_sigterm_stops_run_like_ctrl_c_while_it_waits_on_an_address():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(60)
    with srv, tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "iqa_tune.cli", "run", str(write(Path(tmp), TINY_SPACE)),
                                 "--address", f"127.0.0.1:{srv.getsockname()[1]}", "--storage", f"{tmp}/s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        conn, _ = srv.accept()  # the driver is waiting for the address to answer: stop it there
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        conn.close()
    # 130, not the probe's exit 2 ("says nothing"): the signal ended the wait, the probe did not time out
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in out + err, out + err
    assert "says nothing" not in err


def test_the_probe_accepts_a_grpc_server():
    """What Ray's GCS does on a connection: an HTTP/2 SETTINGS frame before anything else."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def greet():
        conn, _ = srv.accept()
        with conn:
            conn.recv(64)
            conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    check_address(f"127.0.0.1:{srv.getsockname()[1]}", timeout=5)
    thread.join(5)
    srv.close()


# ----------------------------------------------------------------------------------------------------------------
# messages that misled


@pytest.mark.parametrize("encoding, source", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"),
                                              ("utf-16-be", "UTF-16BE")])
def test_a_utf16_label_file_is_named_with_its_encoding_and_the_conversion(tmp_path, encoding, source):
    root = dataset(tmp_path)
    labels = root / "labels.csv"
    labels.write_bytes(labels.read_text().encode(encoding))
    stderr = refused(cli("train", config(tmp_path, root)), f"{labels}:", f"iconv -f {source} -t UTF-8")
    assert "binary" not in stderr


def test_a_utf16_config_is_named_with_its_encoding(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(TINY_SPACE.encode("utf-16"))
    assert "binary" not in refused(cli("validate", path), f"{path}: UTF-16LE text", "iconv -f UTF-16")


def test_a_yaml_file_as_checkpoint_is_said_not_to_be_weights(tmp_path):
    cfg = config(tmp_path)
    stderr = refused(cli("train", config(tmp_path, file="run.yaml", model={"checkpoint": str(cfg)})),
                     f"model.checkpoint: {cfg} is not a weights file", ".safetensors")
    assert "weights_only" not in stderr


@pytest.mark.parametrize("search", ["[]", "[loss.alpha]", "7"])
def test_a_search_that_is_not_a_mapping_is_refused_alike(tmp_path, search):
    refused(cli("validate", write(tmp_path, TINY_SPACE + f"search: {search}\n")), "search: expected a mapping")


def test_an_empty_search_mapping_is_one_configuration(tmp_path):
    run = cli("validate", write(tmp_path, TINY_SPACE + "search: {}\n"))
    assert run.returncode == 0 and "(none: one configuration)" in run.stdout, run.stderr


@pytest.mark.parametrize("grid, reason", [
    ("{loss.alpha: {grid: [0.5, 0.5, 1.0]}}", "search.loss.alpha: lists the value 0.5 more than once"),
    ("{loss.alpha: {grid: [0.0, 1.0]}, loss.margin: {grid: [0.1, 0.2]}}",
     "loss.margin: loss.alpha = 0 turns the ranking loss off"),
])
def test_a_folded_grid_point_says_why(tmp_path, grid, reason):
    run = cli("validate", write(tmp_path, TINY_SPACE + f"search: {grid}\n"))
    line = next(ln for ln in run.stdout.splitlines() if "trials:" in ln)
    assert run.returncode == 0 and "folded into an identical one: " in line and reason in line, run.stdout
    assert not line.rstrip(")").endswith(": ")
