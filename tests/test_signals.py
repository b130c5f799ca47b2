"""The diagnosis signals: the pure metrics against independent recomputations, the crop-prediction files, and
every signal of a real ``iqa-tune train`` run recomputed from the crops it saved."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from iqa_tune import records
from iqa_tune.metrics import disagreement, logistic_plcc, patch_srcc


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
