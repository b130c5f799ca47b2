"""The diagnosis signals: the pure metrics against independent recomputations, the crop-prediction files, and
every signal of a real ``iqa-tune train`` run recomputed from the crops it saved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import optimize, stats

from iqa_tune import records
from iqa_tune.metrics import disagreement, logistic_plcc, patch_srcc

from .conftest import cli, koniq_like_csv, write_livec
from .test_study import TINY, write_space


def _crops(n_img: int = 30, n_crop: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.uniform(1, 5, n_img)
    crops = labels[:, None] * 0.8 + rng.normal(0, 0.6, (n_img, n_crop))
    return crops, labels


def test_patch_srcc_pairs_every_crop_with_its_images_label():
    crops, labels = _crops()
    pairs = [(crops[i, k], labels[i]) for i in range(len(labels)) for k in range(crops.shape[1])]
    expected = stats.spearmanr([p for p, _ in pairs], [y for _, y in pairs])[0]
    assert patch_srcc(crops, labels) == pytest.approx(expected, abs=1e-12)
    # not image-level SRCC: averaging the crops first changes the figure
    assert patch_srcc(crops, labels) != pytest.approx(stats.spearmanr(crops.mean(1), labels)[0], abs=1e-3)
    assert math.isnan(patch_srcc(np.ones((4, 3)), np.arange(4.0)))


def test_disagreement_is_the_mean_within_image_sd_over_the_sd_of_image_means():
    crops, _ = _crops()
    sds = [math.sqrt(sum((v - sum(row) / len(row)) ** 2 for v in row) / len(row)) for row in crops.tolist()]
    means = [sum(row) / len(row) for row in crops.tolist()]
    grand = sum(means) / len(means)
    spread = math.sqrt(sum((m - grand) ** 2 for m in means) / len(means))
    crop_sd, ratio = disagreement(crops)
    assert crop_sd == pytest.approx(sum(sds) / len(sds), rel=1e-12)
    assert ratio == pytest.approx(crop_sd / spread, rel=1e-12)
    # scale-free: the ratio does not move when predictions are rescaled, crop_sd does
    sd2, ratio2 = disagreement(crops * 10 + 3)
    assert sd2 == pytest.approx(crop_sd * 10) and ratio2 == pytest.approx(ratio)
    assert disagreement(np.repeat(means, 4).reshape(-1, 4))[0] == pytest.approx(0, abs=1e-12)  # crops agree
    assert math.isnan(disagreement(np.ones((3, 2)))[1])  # every image the same mean: no ratio


def test_logistic_plcc_matches_an_independent_fit_and_keeps_the_sign():
    rng = np.random.default_rng(1)
    pred = rng.uniform(-3, 3, 200)
    labels = 1 + 4 / (1 + np.exp(-2 * pred)) + rng.normal(0, 0.1, 200)  # a saturating, monotone relation

    def curve(x, a, b, c, d):
        return b + (a - b) / (1 + np.exp(-(x - c) / d))

    with np.errstate(over="ignore"):  # the solver tries steep curves on its way
        fit = optimize.least_squares(lambda p: curve(pred, *p) - labels, [5, 1, 0, 1]).x
    expected = stats.pearsonr(curve(pred, *fit), labels)[0]
    got = logistic_plcc(pred, labels)
    assert got == pytest.approx(expected, abs=1e-4)
    assert got > stats.pearsonr(pred, labels)[0]  # the mapping undoes the saturation linear PLCC is hurt by
    assert logistic_plcc(-pred, labels) == pytest.approx(-got, abs=1e-4)  # ranking backwards stays negative
    assert logistic_plcc(pred[:4], labels[:4]) == pytest.approx(stats.pearsonr(pred[:4], labels[:4])[0])
    assert math.isnan(logistic_plcc(np.ones(10), labels[:10]))


def test_crop_prediction_files_round_trip(tmp_path):
    crops, labels = _crops(6, 3)
    paths = [f"img/{i}.png" for i in range(6)]
    for epoch in (2, 1, 10):
        records.save_crop_predictions(records.crop_prediction_path(tmp_path, epoch),
                                      {"test": (paths, labels, crops * epoch), "xtest_other_set": (paths[:2],
                                                                                                 labels[:2],
                                                                                                 crops[:2])},
                                      epoch)
    files = records.crop_prediction_files(tmp_path)
    assert list(files) == [1, 2, 10] and files[10].name == "epoch_010.npz"
    loaded = records.load_crop_predictions(files[2])
    assert set(loaded) == {"test", "xtest_other_set"}
    assert loaded["test"]["pred"].dtype == np.float32 and loaded["test"]["label"].dtype == np.float64
    np.testing.assert_allclose(loaded["test"]["pred"], (crops * 2).astype(np.float32))
    assert loaded["xtest_other_set"]["path"].tolist() == paths[:2]
    with np.load(files[10]) as z:
        assert int(z["epoch"]) == 10
    assert records.crop_prediction_files(tmp_path / "nothing") == {}


def test_the_epoch_rows_carry_the_cross_dataset_sets_at_the_best_epoch_and_the_live_table_their_mean():
    from rich.console import Console

    from iqa_tune.live import TrialRow, render

    tracker = records.BestEpoch("val_srcc", "max")
    tracker.update({"epoch": 1, "val_srcc": 0.5, "test_srcc": 0.4, "xtest_a_srcc": 0.2, "xtest_b_srcc": 0.6})
    out = tracker.update({"epoch": 2, "val_srcc": 0.3, "test_srcc": 0.5, "xtest_a_srcc": 0.9, "xtest_b_srcc": 0.9})
    assert out["xtest_a_srcc_at_best"] == 0.2 and out["xtest_b_srcc_at_best"] == 0.6  # epoch 1: the best by val
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(render([TrialRow("t_00001", "running", {"epoch": 2, **out})], "val_srcc", [], "s", 120))
    text = console.export_text()
    assert "xtest@best" in text and "0.4000" in text  # the mean of 0.2 and 0.6
    console.print(render([TrialRow("t_00001", "running", {"epoch": 2, "val_srcc": 0.3})], "val_srcc", [], "s", 120))
    assert "xtest@best" not in console.export_text()  # no such column without cross-dataset sets


# ----------------------------------------------------------------------------------------------------------------
# every signal of a real run, recomputed from the crop predictions it saved


def extra_csv(folder: Path, n: int = 12) -> dict:
    """A cross-dataset set in the ``csv`` format (scikit-image photos, scores 0-100), as a data.extra_tests entry."""
    koniq_like_csv(folder, n, size=(64, 48))
    return {"name": "other_set", "dataset": "csv", "root": str(folder), "csv_file": "labels.csv"}


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9


def check_signals(folder: Path, rows: list[dict]) -> None:
    """Each reported epoch of a run or trial folder has its crop file, and every signal in its row equals a
    recomputation from that file with scipy (the logistic PLCC: through metrics.logistic_plcc, tested above)."""
    files = records.crop_prediction_files(folder)
    # a trial cut by a scheduler may have scored one more epoch before it was stopped
    assert {r["epoch"] for r in rows} <= set(files)
    for r in rows:
        sets = records.load_crop_predictions(files[r["epoch"]])
        expected = {}
        for name, s in sets.items():
            pred, label = s["pred"].astype(np.float64), s["label"]
            assert pred.shape == (len(label), pred.shape[1]) and len(s["path"]) == len(label)
            means = pred.mean(axis=1)
            expected[f"{name}_srcc"] = stats.spearmanr(means, label)[0]
            if name.startswith("xtest_"):
                expected[f"{name}_krcc"] = stats.kendalltau(means, label)[0]
                expected[f"{name}_plcc"] = logistic_plcc(means, label)
            elif name == "train_eval":
                expected["train_eval_plcc"] = stats.pearsonr(means, label)[0]
            else:
                expected[f"{name}_plcc"] = stats.pearsonr(means, label)[0]
                expected[f"{name}_krcc"] = stats.kendalltau(means, label)[0]
                expected[f"{name}_srcc_patch"] = stats.spearmanr(pred.ravel(), np.repeat(label, pred.shape[1]))[0]
                sd = np.mean([np.std(row) for row in pred])
                expected[f"{name}_crop_sd"] = sd
                expected[f"{name}_disagreement"] = sd / np.std(means)
        wrong = {k: (r.get(k), v) for k, v in expected.items() if not _close(float(r.get(k, math.inf)), float(v))}
        assert not wrong, f"epoch {r['epoch']}: {wrong}"
        assert {"val", "test", "train_eval"} <= set(sets)


def test_train_run_signals_recompute_from_its_crop_files(tmp_path):
    xset = tmp_path / "xset"
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["extra_tests"] = [extra_csv(xset)]
    cfg.update(name="sig", out_dir=str(tmp_path / "runs"))
    cfg["train"]["epochs"] = 2
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = cli("train", path, env={"COLUMNS": "200"})  # wide enough for the tables' headers on one line
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "runs/sig"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    check_signals(out, rows)
    assert sorted(records.crop_prediction_files(out)) == [1, 2]
    assert {"xtest_other_set_srcc", "xtest_other_set_plcc", "xtest_other_set_krcc"} <= set(rows[0])
    assert "other_set SRCC" in run.stdout and "train-eval SRCC" in run.stdout  # the signals table
    split = json.loads((out / "split.json").read_text())
    sets = records.load_crop_predictions(records.crop_prediction_files(out)[1])
    # the training images scored like test: as many as the test split, from the train split, the recorded ones
    assert sets["train_eval"]["path"].tolist() == split["train_eval"]
    assert len(split["train_eval"]) == len(split["test"]) and set(split["train_eval"]) <= set(split["train"])
    # the cross-dataset set: every image of its label file, with its own labels
    listed = (xset / "labels.csv").read_text().splitlines()[1:]
    assert sets["xtest_other_set"]["path"].tolist() == [line.split(",")[0] for line in listed]
    assert sets["xtest_other_set"]["label"].tolist() == [float(line.split(",")[1]) for line in listed]
    # the per-image test predictions of the best epoch are the means of that epoch's crops
    best = rows[-1]["best_epoch"]
    saved = np.load(out / "test_predictions.npz")
    crops = records.load_crop_predictions(records.crop_prediction_files(out)[best])["test"]
    np.testing.assert_allclose(saved["pred"], crops["pred"].astype(np.float64).mean(axis=1), rtol=1e-12)
    # fixed crops, eval mode: the best epoch's state, loaded again, scores every set's crops as that epoch did
    import torch

    from iqa_tune.config import load_run_config
    from iqa_tune.prepare import prepare_data
    from iqa_tune.solver import Solver

    again = load_run_config(out / "config.yaml")
    solver = Solver(again, prepare_data(again, progress=False))
    solver.load_state_dict(torch.load(out / "best.pt", weights_only=False))
    saved = records.load_crop_predictions(records.crop_prediction_files(out)[best])
    for name in ("test", "train_eval", "xtest_other_set"):
        np.testing.assert_allclose(solver.predict_crops(name), saved[name]["pred"], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# bad extra test sets: refused before anything trains, naming the key path


def _bad_entry(tmp_path: Path, case: str) -> tuple[list[dict], str]:
    good = extra_csv(tmp_path / "xset", 6)
    if case == "missing root":
        return [{**good, "root": str(tmp_path / "nowhere")}], "data.extra_tests[0].root: no such folder"
    if case == "unknown dataset":
        return [{**good, "dataset": "livc"}], "data.extra_tests[0].dataset"
    if case == "name clash":
        return [good, {**good, "csv_file": "labels.csv"}], "data.extra_tests[1].name: 'other_set' is already"
    if case == "built-in name":
        return [{**good, "name": "test"}], "data.extra_tests[0].name: 'test' is the name of a built-in"
    if case == "no dataset":
        return [{"root": good["root"]}], "data.extra_tests[0].dataset: required"
    (tmp_path / "xset/labels.csv").write_text("path,score\nimages/0000.jpg,high\n")
    return [good], "data.extra_tests[0]: " + str(tmp_path / "xset/labels.csv") + ": row 2: score is not a number"


BAD_CASES = ["missing root", "unknown dataset", "name clash", "built-in name", "no dataset", "unreadable labels"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_bad_extra_test_set_is_refused_by_validate_naming_its_key_path(tmp_path, case, capsys):
    from iqa_tune.cli import main

    extra, expected = _bad_entry(tmp_path, case)
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "s"},
                       data={**TINY["data"], "extra_tests": extra})
    assert main(["validate", str(space)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "run"])
def test_train_and_run_refuse_a_bad_extra_test_set_before_anything_trains(tmp_path, command):
    extra, expected = _bad_entry(tmp_path, "unreadable labels")
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "s"},
                        data={**TINY["data"], "extra_tests": extra})
    body = yaml.safe_load(space.read_text())
    if command == "train":
        del body["search"], body["study"]
        body["out_dir"] = str(tmp_path / "runs")
        space.write_text(yaml.safe_dump(body))
    proc = cli(command, space, *(["--no-dashboard"] if command == "run" else []), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()  # nothing trained or kept


def test_an_extra_test_set_in_a_release_format_is_read_by_its_adapter_and_cached_once(tmp_path):
    from iqa_tune.config import build_run_config
    from iqa_tune.prepare import _extra_tests, extra_catalogs

    names = [f"t{i}.bmp" for i in range(7)] + [f"{i:03d}.jpg" for i in range(10)]
    root = write_livec(tmp_path / "livec", names, mos=np.linspace(10, 90, len(names)))
    cfg = build_run_config({**TINY, "data": {**TINY["data"], "cache_dir": str(tmp_path / "cache"),
                                              "extra_tests": [{"dataset": "livec", "root": str(root), "limit": 6,
                                                               "test_patches": 3}]}})
    (cat,) = extra_catalogs(cfg.data)
    assert cat.paths == [f"Images/{n}" for n in names[7:13]]  # trial images dropped, then the first 6
    (x,) = _extra_tests(cfg, [cat], progress=False)
    assert (x.key, x.test_patches, x.cache.decoded) == ("xtest_livec", 3, 6)
    assert _extra_tests(cfg, [cat], progress=False)[0].cache.decoded == 0  # the second time: opened, not decoded


def test_the_training_images_scored_like_test_are_an_evenly_spaced_fixed_subset():
    from iqa_tune.datasets import train_eval_subset

    train = np.arange(100, 200)
    assert train_eval_subset(train, 5).tolist() == [100, 125, 150, 174, 199]
    assert train_eval_subset(train, 500).tolist() == train.tolist() and len(train_eval_subset(train, 0)) == 0


@pytest.mark.parametrize("metric", ["xtest_other_set_srcc", "train_eval_srcc", "test_srcc_patch"])
def test_a_study_cannot_select_on_a_signal(tmp_path, metric, capsys):
    from iqa_tune.cli import main

    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "s", "metric": metric},
                        data={**TINY["data"], "extra_tests": [extra_csv(tmp_path / "xset", 4)]})
    assert main(["validate", str(space)]) == 2
    assert f"study.metric: {metric!r} is not a selection metric" in " ".join(capsys.readouterr().err.split())
