"""The diagnosis of a falling test SRCC on synthetic per-epoch tables and synthetic crop predictions: a fall with the
training images ranked better (overfitting), a fall with the crops of an image disagreeing, a change inside the
noise, no fall, and missing signals; each change's interval checked against the bootstrap computed independently."""

import html
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from iqa_tune.metrics import disagreement, patch_srcc, srcc
from iqa_tune.records import crop_prediction_files, load_crop_predictions
from iqa_tune.reports.confirmation import display_table, load_confirmation
from iqa_tune.reports.diagnosis import (
    bootstrap_change,
    diagnose,
    disagreement_rows,
    epoch_table,
    patch_srcc_rows,
    signal_columns,
    summary,
)
from iqa_tune.reports.headline import overfitting
from iqa_tune.reports.ranking import paired_bootstrap_test

from .conftest import cli, koniq_like_csv
from .test_study import TINY_RUN

N = 400  # resamples: the statistics are ranking.py's (tested there); fewer keep these tests fast


def crops(label, image_noise, crop_noise, seed, n_crops=4):
    """Crop predictions: the label, an error shared by an image's crops, and an error of each crop."""
    rng = np.random.default_rng(seed)
    pred = label[:, None] + image_noise * rng.normal(size=(len(label), 1)) + crop_noise * rng.normal(
        size=(len(label), n_crops))
    return pred.astype(np.float32)


def crop_set(label, pred, prefix="img"):
    return {"pred": pred, "label": label, "path": np.array([f"{prefix}{i}.png" for i in range(len(label))])}


def row(epoch, sets):
    """One epoch's signals, computed from its crops as the solver does."""
    out = {"trial": "t", "epoch": epoch, "val_srcc": 0.5 + 0.01 * epoch, "train_srcc_patch": 0.5 + 0.1 * epoch}
    for name, s in sets.items():
        means = s["pred"].astype(np.float64).mean(axis=1)
        col = {"test": "test_srcc", "train_eval": "train_eval_srcc"}.get(name, f"{name}_srcc")
        out[col] = srcc(means, s["label"])
        if name == "test":
            out["test_srcc_patch"] = patch_srcc(s["pred"], s["label"])
            out["test_disagreement"] = disagreement(s["pred"])[1]
    return out


def study(best_sets, last_sets, best_epoch=2, last_epoch=4, drop=()):
    """An epochs table (best val at ``best_epoch``), the ranking, and the crop sets of the two epochs."""
    rows = [row(e, best_sets if e <= best_epoch else last_sets) for e in range(1, last_epoch + 1)]
    epochs = pd.DataFrame(rows).drop(columns=list(drop))
    ranking = pd.DataFrame({"rank": [1], "trial": ["t"], "best_epoch": [best_epoch], "val_srcc": [0.9],
                            "ended": ["completed"], "epochs_run": [last_epoch]})
    return ranking, epochs, {"t": (best_sets, last_sets)}


def test_a_fall_with_the_training_images_ranked_better_is_overfitting():
    rng = np.random.default_rng(0)
    test, train, other = rng.normal(size=150), rng.normal(size=150), rng.normal(size=100)
    best = {"test": crop_set(test, crops(test, 0.3, 0.2, 1)), "train_eval": crop_set(train, crops(train, 1.0, 0.2, 2)),
            "xtest_other": crop_set(other, crops(other, 0.3, 0.2, 3))}
    last = {"test": crop_set(test, crops(test, 1.5, 0.2, 4)), "train_eval": crop_set(train, crops(train, 0.1, 0.2, 5)),
            "xtest_other": crop_set(other, crops(other, 1.5, 0.2, 6))}
    ranking, epochs, files = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    t = d.changes["test_srcc"]
    assert d.fell and d.overfitting and t.delta < 0
    # the interval is the paired bootstrap of ranking.py on the image means, recomputed here
    means = [s["test"]["pred"].astype(np.float64).mean(axis=1) for s in (last, best)]
    diff, lo, hi, _ = paired_bootstrap_test(test, *means, n=N)
    assert (t.lo, t.hi) == pytest.approx((lo, hi)) and t.delta == pytest.approx(diff, abs=1e-6)
    assert hi < 0 and t.images == 150
    text = " ".join(d.sentences)
    assert f"test SRCC fell after the best val epoch: {t.before:.3f} at epoch 2 -> {t.after:.3f} at epoch 4" in text
    assert "overfitting the training images (explanation 2)" in text
    assert "Cross-dataset sets: other SRCC fell too, " in text and "beyond this dataset's distribution" in text
    assert "Not recorded" not in text and "without their noise" not in text
    found = overfitting(ranking, epochs, "val_srcc", [d])
    assert found.text.startswith("Overfitting in 1 of the top trial") and "train-eval image SRCC" in found.text
    assert "train-eval SRCC rose (overfitting the training images) in 1" in summary([d])


def test_a_fall_with_the_training_images_ranked_worse_too_is_a_fall_but_not_overfitting():
    rng = np.random.default_rng(2)
    test, train = rng.normal(size=150), rng.normal(size=150)
    best = {"test": crop_set(test, crops(test, 0.3, 0.2, 1)), "train_eval": crop_set(train, crops(train, 0.3, 0.2, 2))}
    last = {"test": crop_set(test, crops(test, 1.5, 0.2, 3)), "train_eval": crop_set(train, crops(train, 1.5, 0.2, 4))}
    ranking, epochs, files = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    assert d.fell and not d.overfitting and d.changes["train_eval_srcc"].direction == "fell"
    verdict = overfitting(ranking, epochs, "val_srcc", [d]).text
    # the verdict must not say that test did not fall when it did
    assert verdict.startswith("No overfitting in the top trial") and "though image-level test SRCC fell" in verdict
    assert "did not fall" not in verdict


def test_a_fall_with_the_crops_of_an_image_disagreeing_names_explanation_3():
    label = np.random.default_rng(1).normal(size=150)
    best = {"test": crop_set(label, crops(label, 0.3, 0.1, 1))}
    last = {"test": crop_set(label, crops(label, 0.3, 3.0, 2))}  # same image errors, crops scattered
    ranking, epochs, files = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    assert d.fell and not d.overfitting
    dis = d.changes["test_disagreement"]
    assert dis.direction == "rose" and dis.lo > 0
    text = " ".join(d.sentences)
    assert "an image's crops disagree more, so their mean ranks worse (explanation 3" in text
    assert "Test patch SRCC fell with it" in text and "explanation 1) do not explain the fall" in text
    assert "Not recorded in this trial: train-eval SRCC (" in text  # no train-eval set in this run
    assert "overfitting" not in text.lower()
    said = summary([d])  # train-eval was not recorded: not counted against it
    assert "within-image disagreement rose (explanation 3) in 1" in said and "train-eval" not in said
    # without train-eval the verdict falls back to training-time patch SRCC (rising in this table), as it says
    verdict = overfitting(ranking, epochs, "val_srcc", [d]).text
    assert verdict.startswith("Overfitting in 1") and "while patch-level train SRCC rose" in verdict


def test_a_change_inside_the_noise_cannot_decide():
    label = np.random.default_rng(2).normal(size=40)
    best = {"test": crop_set(label, crops(label, 0.8, 0.2, 1))}
    last = {"test": crop_set(label, crops(label, 0.8, 0.2, 1) + 0.05 * crops(label, 1.0, 0.0, 9))}
    ranking, epochs, files = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    t = d.changes["test_srcc"]
    assert t.direction == "noise" and t.lo < 0 < t.hi and not d.fell
    assert "inside its noise (the interval holds 0, over 40 images), so this signal cannot decide whether test " \
           "fell" in d.sentences[0]
    assert len(d.sentences) == 2 and d.sentences[1].startswith("Not recorded")  # no explanation is read
    assert overfitting(ranking, epochs, "val_srcc", [d]).text.startswith(
        "Overfitting cannot be decided in the top trial, which trained past its best val epoch: image-level test SRCC "
        "changed inside its noise after it")


def test_no_fall_says_so_and_reads_no_explanation():
    label = np.random.default_rng(3).normal(size=150)
    best = {"test": crop_set(label, crops(label, 1.5, 0.2, 1))}
    last = {"test": crop_set(label, crops(label, 0.3, 0.2, 2))}
    ranking, epochs, files = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    assert d.changes["test_srcc"].direction == "rose" and not d.fell
    assert "did not fall after the best val epoch; it rose" in d.sentences[0]
    assert not any("explanation" in s for s in d.sentences)
    assert summary([d]) == "Test SRCC fell after the best val epoch in 0 of the 1 top trials that trained past it."


def test_missing_columns_and_crop_files_are_named_never_a_crash():
    label = np.random.default_rng(4).normal(size=60)
    best = {"test": crop_set(label, crops(label, 0.3, 0.2, 1))}
    last = {"test": crop_set(label, crops(label, 1.5, 0.2, 2))}
    # an older experiment: only image-level SRCC per epoch, no crop files
    ranking, epochs, _ = study(best, last, drop=("test_srcc_patch", "test_disagreement"))
    (d,) = diagnose(ranking, epochs, "val_srcc", {}, n=N)
    assert d.fell and not d.changes["test_srcc"].known
    text = " ".join(d.sentences)
    assert ("Not recorded in this trial: train-eval SRCC, within-image disagreement on test, test patch SRCC "
            "(an experiment of an older iqa-tune") in text
    assert summary([d]).endswith("none of them recorded the signals that tell the explanations apart.")
    assert "without their noise: no crop predictions (crops/epoch_NNN.npz) for epochs 2 and 4" in text
    # a crop file that lacks a set, and two epochs over different images: said, no interval
    other = {"test": crop_set(label, last["test"]["pred"], prefix="other")}
    ranking, epochs, _ = study(best, last)
    (d,) = diagnose(ranking, epochs, "val_srcc", {"t": (best, other)}, n=N)
    assert "list different images" in " ".join(d.sentences) and not d.changes["test_srcc"].known
    # no test column at all; the best epoch is the last; an empty table
    (d,) = diagnose(ranking, epochs.drop(columns=["test_srcc"]), "val_srcc", {}, n=N)
    assert "no test SRCC recorded" in d.sentences[0]
    ranking, epochs, files = study(best, last, best_epoch=4)
    (d,) = diagnose(ranking, epochs, "val_srcc", files, n=N)
    assert not d.judged and "nothing after it to judge" in d.sentences[0]
    assert diagnose(ranking, pd.DataFrame(), "val_srcc", {}) == []
    assert "nothing after it" in overfitting(ranking, epochs, "val_srcc", [d]).text


def test_the_bootstrapped_statistics_are_the_metrics_own():
    rng = np.random.default_rng(5)
    label = rng.normal(size=30)
    pred = crops(label, 0.5, 0.5, 6).astype(np.float64)
    whole = np.arange(30)[None, :]
    assert patch_srcc_rows(pred, label)(whole)[0] == pytest.approx(patch_srcc(pred, label))
    assert disagreement_rows(pred, label)(whole)[0] == pytest.approx(disagreement(pred)[1])
    s = crop_set(label, pred)
    lo, hi, images, why = bootstrap_change(s, s, "patch", n=N)
    assert (lo, hi, images, why) == (0.0, 0.0, 30, "")  # an epoch against itself: no change on any resample


def test_signal_columns_and_the_epoch_table():
    cols = ["epoch", "xtest_b_srcc", "test_disagreement", "xtest_a_srcc", "xtest_a_plcc", "test_srcc", "val_srcc"]
    assert signal_columns(cols) == ["test_srcc", "test_disagreement", "xtest_a_srcc", "xtest_b_srcc"]
    epochs = pd.DataFrame([{"trial": "t", "epoch": e, **{c: 0.1 * e for c in cols[1:]}} for e in (2, 1)])
    table = epoch_table(epochs, "t", "val_srcc")
    assert list(table.columns) == ["epoch", "val_srcc", "test_srcc", "test_disagreement", "xtest_a_srcc",
                                   "xtest_b_srcc"]
    assert table["epoch"].tolist() == [1, 2]


def test_the_confirmation_table_carries_the_signals_as_means_over_seeds(tmp_path):
    exp = tmp_path / "confirm"
    exp.mkdir()
    configs = [{"name": "a", "values": {"loss.alpha": 1.0}, "search_trials": ["a"], "search_metric": 0.5}]
    (exp / "study.yaml").write_text(yaml.safe_dump({"metric": "val_srcc", "mode": "max", "confirm": {
        "seeds": [1, 2], "split_seeds": [0], "configurations": configs}}))
    for seed in (1, 2):
        (exp / f"a{seed}").mkdir()
        (exp / f"a{seed}/params.json").write_text(json.dumps({"loss.alpha": 1.0, "train.seed": seed,
                                                              "data.split.seed": 0}))
        # best val at epoch 1; the last epoch 3 is worse on test, better on train-eval, the crops disagree more
        rows = [{"epoch": e, "val_srcc": 0.6 - 0.1 * (e - 1), "test_srcc": 0.7 - 0.05 * e * seed,
                 "train_eval_srcc": 0.5 + 0.1 * e, "test_disagreement": 0.2 * e, "xtest_other_srcc": 0.4,
                 "max_epochs": 3} for e in (1, 2, 3)]
        (exp / f"a{seed}/result.json").write_text("\n".join(map(json.dumps, rows)) + "\n")
    (exp / "trial_status.json").write_text(json.dumps({"a1": "TERMINATED", "a2": "TERMINATED"}))
    table = load_confirmation(tmp_path)
    row = table.iloc[0]
    assert row["test_srcc_change"] == pytest.approx(np.mean([-0.1, -0.2]))  # 3 x 0.05 x seed - 0.05 x seed
    assert row["train_eval_srcc"] == pytest.approx(0.6) and row["train_eval_srcc_change"] == pytest.approx(0.2)
    assert row["test_disagreement_change"] == pytest.approx(0.4) and row["xtest_other_srcc_change"] == 0
    view = display_table(table).iloc[0]
    assert view["test Δ after best"] == "-0.150" and view["train-eval SRCC (Δ after best)"] == "0.600 (+0.200)"
    assert view["disagreement (Δ after best)"] == "0.200 (+0.400)" and view["other SRCC (Δ after best)"] == \
        "0.400 (+0.000)"


def test_the_report_diagnoses_a_real_training_run(tmp_path):
    """One ``iqa-tune train`` run (4 epochs, a train-eval subset, a cross-dataset set in the csv format) laid out
    as the one-trial experiment Tune writes (params.json, result.json, the best epoch's predictions in a
    checkpoint): the report's diagnosis, on the page, in ranking.md and in the terminal, matches a recomputation
    from the run's own crop files."""
    koniq_like_csv(tmp_path / "other", 12, size=(96, 72))
    cfg = json.loads(json.dumps(TINY_RUN))
    cfg["train"].update(epochs=4, lr=3e-3)
    cfg["data"]["extra_tests"] = [{"name": "other", "dataset": "csv", "root": str(tmp_path / "other"),
                                   "csv_file": "labels.csv"}]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**cfg, "name": "run", "out_dir": str(tmp_path / "runs")}))
    assert (run := cli("train", tmp_path / "run.yaml")).returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    trial = tmp_path / "exp/t_run"
    shutil.copytree(tmp_path / "runs/run", trial)
    (trial / "params.json").write_text(json.dumps({"train.lr": 3e-3}))
    shutil.copy(trial / "metrics.jsonl", trial / "result.json")
    (trial / "checkpoint_000001").mkdir()
    shutil.move(trial / "test_predictions.npz", trial / "checkpoint_000001")
    report = cli("report", tmp_path / "exp")
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]

    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_srcc"])["epoch"]  # first max on ties, like the report
    files = crop_prediction_files(trial)
    assert sorted(files) == [1, 2, 3, 4]
    sets = [load_crop_predictions(files[e]) for e in (best, 4)]
    assert {"test", "train_eval", "xtest_other"} <= set(sets[0])
    means = [s["test"]["pred"].astype(np.float64).mean(axis=1) for s in sets]
    label = sets[0]["test"]["label"]
    diff, lo, hi, _ = paired_bootstrap_test(label, means[1], means[0])
    md = (tmp_path / "exp/report/ranking.md").read_text()
    page = (tmp_path / "exp/report/index.html").read_text()
    terminal = " ".join(report.stdout.split())  # rich wraps the panel's lines
    if best == 4:  # val peaked at the last epoch on this machine: nothing after it, and the report says so
        expected = "(t_run): its best val epoch 4 is its last: nothing after it to judge."
    else:
        expected = (f"{srcc(means[0], label):.3f} at epoch {best} -> {srcc(means[1], label):.3f} at epoch 4 "
                    f"({diff:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}")
        assert "Cross-dataset sets: other SRCC" in md
        assert 'id="plot-diagnosis-1"' in page  # the chart of the signals per epoch
    for text in (md, html.unescape(page), terminal):
        assert "Why does test SRCC fall?" in text and expected in text
    assert "| epoch | val_srcc | test_srcc | train_eval_srcc | test_disagreement | test_srcc_patch | " \
           "xtest_other_srcc |" in md
    assert "Not recorded" not in md  # a run of this iqa-tune records every signal
