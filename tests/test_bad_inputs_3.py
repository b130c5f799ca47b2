"""Bad input, round two: what ``validate`` accepts must not fail ``train`` for a reason it could have checked,
a sentence where a traceback was, and ``report`` on a damaged experiment. Every case runs the CLI as a user does
and expects exit code 2, one line naming the key, file or row, and no traceback."""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli, write_image
from tests.test_study import TINY, TINY_RUN

RUN = {"name": "r", **json.loads(json.dumps(TINY_RUN))}
RUN["train"]["epochs"] = 1


def write_config(tmp_path: Path, name: str = "run.yaml", **over) -> Path:
    """The tiny run config with dotted keys set (``train__lr=...`` sets train.lr); ``None`` deletes a key."""
    body = json.loads(json.dumps(RUN))
    body["out_dir"] = str(tmp_path / "runs")
    for dotted, value in over.items():
        keys = dotted.split("__")
        node = body
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def refused(proc, *needles: str) -> str:
    """The one error line of a refused command: exit 2, no traceback, every needle in it."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    line = " ".join(proc.stderr.split())  # rich wraps long lines
    assert line.startswith("error: "), proc.stderr
    for n in needles:
        assert n in line, line
    return line


def both_refuse(path: Path, *needles: str) -> str:
    """``validate`` and ``train`` refuse the same config with the same line."""
    validate = refused(cli("validate", path), *needles)
    train = refused(cli("train", path), *needles)
    assert validate == train
    return validate


# ----------------------------------------------------------------------------------------------------------------
# class 3: validate accepts what then fails


def test_unknown_backbone_kwargs_are_refused_by_validate_as_by_train(tmp_path):
    path = write_config(tmp_path, model__backbone_kwargs={"bogus_width": 3})
    both_refuse(path, str(path), "model.backbone_kwargs", "bogus_width")
    assert not (tmp_path / "runs").exists()


def test_a_backbone_that_cannot_take_the_patch_size_is_refused_by_validate(tmp_path):
    # a ViT has 4 feature stages for timm but one input size: 32 px patches never reach it
    path = write_config(tmp_path, model__backbone="vit_tiny_patch16_224")
    both_refuse(path, "model.backbone", "data.patch_size", "32x32")


@pytest.mark.parametrize("over, needle", [
    ({"model__checkpoint": "no/such/weights.pth"}, "model.checkpoint: no such file"),
    ({"model__pretrained": True}, "model.pretrained: resnet_nano is a test configuration"),
])
def test_weights_that_cannot_exist_are_refused_by_validate(tmp_path, over, needle):
    both_refuse(write_config(tmp_path, **over), needle)


def test_searching_mappings_is_refused_with_the_way_to_search_their_keys(tmp_path):
    body = {**json.loads(json.dumps(TINY)), "search": {"model.backbone_kwargs": {"grid": [{"zero_init_last": False}]}},
            "study": {"storage": str(tmp_path / "results")}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    refused(cli("validate", path), "search.model.backbone_kwargs.grid", "mapping",
            "search.model.backbone_kwargs.zero_init_last")


def test_searching_lists_is_refused(tmp_path):
    body = {**json.loads(json.dumps(TINY)), "search": {"data.resize": {"grid": [[48, 36], [64, 48]]}},
            "study": {"storage": str(tmp_path / "results")}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    refused(cli("validate", path), "search.data.resize.grid", "a searched value is a list ([48, 36])")


# ----------------------------------------------------------------------------------------------------------------
# class 4: a sentence where a traceback was


def test_a_diverging_run_is_one_line_with_epoch_batch_and_cause(tmp_path):
    path = write_config(tmp_path, train__lr=1.0e9)
    assert cli("validate", path).returncode == 0  # nothing in the config says it will diverge
    line = refused(cli("train", path), "train.lr", "non-finite training loss", "at epoch 1, batch",
                   "lr is too high", "labels are on a huge scale")
    assert "1e+09" in line


def csv_dataset(root: Path, scores: list[float]) -> Path:
    """A ``csv`` dataset of 64x48 PNGs, one content per image."""
    rows = ["path,score"]
    for i, s in enumerate(scores):
        write_image(root / f"img/{i:02d}.png", seed=i)
        rows.append(f"img/{i:02d}.png,{s!r}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_score_beyond_float32_is_refused_at_load_naming_its_row(tmp_path):
    scores = [float(i) for i in range(20)]
    scores[4] = 1e308  # finite as a float64, inf as the float32 the labels train as
    root = csv_dataset(tmp_path / "data", scores)
    path = write_config(tmp_path, data={"dataset": "csv", "root": str(root), "csv_file": "labels.csv",
                                        "patch_size": 32, "train_patches": 2, "test_patches": 2})
    refused(cli("train", path), "labels.csv: row 6: score", "32-bit float")
    assert not (tmp_path / "runs").exists()


def test_one_training_patch_per_epoch_is_refused_before_batch_norm_sees_it(tmp_path):
    root = csv_dataset(tmp_path / "data", [float(i) for i in range(8)])
    path = write_config(tmp_path, data={"dataset": "csv", "root": str(root), "csv_file": "labels.csv",
                                        "patch_size": 32, "train_patches": 1, "test_patches": 2,
                                        "split": {"train": 0.1, "val": 0.45, "test": 0.45}},
                        train__patches_per_image=1)
    refused(cli("train", path), "data.split", "1 image(s) x data.train_patches 1", "batch norm")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key, value, needle", [
    ("train__seed", -1, "train.seed: must be 0 to 2**32 - 1"),
    ("data__split__seed", -5, "data.split.seed: must be 0 to 2**32 - 1"),
    ("train__threads", 100000, "train.threads: must be 1 to 1024"),
    ("train__epochs", 2 ** 70, "train.epochs: 1180591620717411303424 does not fit a 64-bit integer"),
])
def test_out_of_range_numbers_name_their_key(tmp_path, key, value, needle):
    both_refuse(write_config(tmp_path, **{key: value}), needle)


def test_randint_bounds_beyond_int64_are_refused(tmp_path):
    body = {**json.loads(json.dumps(TINY)), "search": {"train.seed": {"randint": [0, 2 ** 64]}},
            "study": {"storage": str(tmp_path / "results")}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    refused(cli("validate", path), "search.train.seed.randint", "64-bit integer")


@pytest.mark.parametrize("key", ["data__cache_dir", "out_dir"])
def test_a_file_where_a_folder_goes_is_refused_before_anything_is_built(tmp_path, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    key_path = key.replace("__", ".")
    both_refuse(write_config(tmp_path, **{key: str(blocker / "sub")}), f"{key_path}: {blocker / 'sub'}",
                f"{blocker} is a file")


def test_storage_that_is_a_file_is_refused_by_validate_and_run(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    body = {**json.loads(json.dumps(TINY)), "search": {"loss.alpha": {"grid": [0.0]}},
            "study": {"storage": str(blocker), "name": "s"}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    refused(cli("validate", path), "study.storage", "is a file")
    body["study"]["storage"] = str(tmp_path / "results")
    path.write_text(yaml.safe_dump(body))
    refused(cli("run", path, "--storage", blocker, "--no-dashboard"), "--storage", "is a file")
    assert not (tmp_path / "results").exists()


def test_report_out_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    (tmp_path / "exp").mkdir()
    refused(cli("report", tmp_path / "exp", "--out", blocker), "--out", "is a file")
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------------------------------------------
# class 5: report on a damaged experiment (a study killed mid-write leaves cut files)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """One tiny finished study (2 trials, 1 epoch each) for this module; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("damaged")
    body = {**json.loads(json.dumps(TINY)), "search": {"loss.alpha": {"grid": [0.0, 1.0]}},
            "study": {"name": "s", "storage": str(folder / "results"), "scheduler": {"type": "none"}}}
    body["train"]["epochs"] = 1
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(body))
    run = cli("run", space, "--no-dashboard")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return folder / "results/s"


def _copy(exp: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(exp, copy, ignore=shutil.ignore_patterns("report"))
    return copy, sorted(p for p in copy.iterdir() if (p / "params.json").is_file())


def _cut(path: Path) -> None:
    """What a kill mid-write leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _ranked(exp: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(exp / "report/ranking.csv")["trial"])


def test_report_lists_a_trial_with_a_cut_params_json_and_ranks_the_rest(finished_study, tmp_path):
    exp, trials = _copy(finished_study, tmp_path)
    _cut(trials[0] / "params.json")
    rep = cli("report", exp)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert "Traceback" not in rep.stderr
    warning = " ".join(rep.stderr.split())
    assert f"trial {trials[0].name}: params.json is damaged" in warning
    assert _ranked(exp) == [trials[1].name]
    assert f"trial {trials[0].name}: params.json is damaged" in (exp / "report/ranking.md").read_text()


def test_report_keeps_a_trial_whose_test_predictions_are_cut(finished_study, tmp_path):
    exp, trials = _copy(finished_study, tmp_path)
    predictions = sorted(trials[1].glob("checkpoint_*/test_predictions.npz"))
    assert predictions
    _cut(predictions[-1])
    rep = cli("report", exp)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert "Traceback" not in rep.stderr
    assert f"trial {trials[1].name}: test_predictions.npz is damaged" in " ".join(rep.stderr.split())
    assert sorted(_ranked(exp)) == [t.name for t in trials]


def test_report_names_a_damaged_study_yaml_and_reports_the_trials(finished_study, tmp_path):
    exp, trials = _copy(finished_study, tmp_path)
    (exp / "study.yaml").write_text("source: space.yaml\nmetric: [val_srcc\n")  # cut inside a flow sequence
    rep = cli("report", exp)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert "Traceback" not in rep.stderr
    warning = " ".join(rep.stderr.split())
    assert f"{exp / 'study.yaml'}: the study's record is damaged" in warning and "--metric:" not in warning
    assert sorted(_ranked(exp)) == [t.name for t in trials]


def test_report_on_an_experiment_with_nothing_readable_is_exit_2(finished_study, tmp_path):
    exp, trials = _copy(finished_study, tmp_path)
    for t in trials:
        _cut(t / "params.json")
    rep = cli("report", exp)
    line = refused(rep, f"{exp}: nothing readable", f"trial {trials[0].name}: params.json is damaged",
                   f"trial {trials[1].name}: params.json is damaged")
    assert not (exp / "report").exists() or not (exp / "report/ranking.csv").exists(), line
