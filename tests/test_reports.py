"""Ranking and uncertainty on synthetic result rows (no training): the rules of the report, one at a time."""

import json

import numpy as np
import pandas as pd
import pytest

from iqa_tune.errors import UserError
from iqa_tune.reports.build import build_report
from iqa_tune.reports.ranking import add_uncertainty, bootstrap_srcc, group_split_seeds, paired_bootstrap, rank_trials


def _epochs(rows):
    return pd.DataFrame([{"trial": t, "ended": "completed", "epoch": e, "val_srcc": v, "test_srcc": s,
                          "train_srcc_patch": 0.9, "hp.loss.alpha": a} for t, e, v, s, a in rows])


def test_best_epoch_beats_last_epoch_selection():
    # A peaks early and overfits (last val 0.70); B improves steadily to 0.80 and ends there.
    epochs = _epochs([("A", 1, 0.90, 0.88, 1.0), ("A", 2, 0.70, 0.65, 1.0),
                      ("B", 1, 0.60, 0.55, 0.5), ("B", 2, 0.80, 0.79, 0.5)])
    trials = pd.DataFrame({"trial": ["A", "B"], "ended": "completed", "reason": "", "epochs_run": 2,
                           "hp.loss.alpha": [1.0, 0.5]})
    ranking = rank_trials(epochs, trials)
    assert ranking["trial"].tolist() == ["A", "B"]  # last-epoch ranking would put B first
    a = ranking.iloc[0]
    assert a["best_epoch"] == 1 and a["test_srcc"] == 0.88
    assert a["test_srcc_drop (best->last)"] == pytest.approx(0.23)
    assert a["train_patch_minus_test_srcc (last)"] == pytest.approx(0.25)


def test_ci_contains_the_point_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400):
        label = rng.normal(size=n)
        pred = label + rng.normal(scale=1.0, size=n)
        point, lo, hi = bootstrap_srcc(label, pred, n=500)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    assert bootstrap_srcc(label, pred, n=200) == bootstrap_srcc(label, pred, n=200)  # seeded


def test_paired_bootstrap_identical_is_not_significant_and_worse_is_flagged():
    rng = np.random.default_rng(1)
    label = rng.normal(size=300)
    good = label + rng.normal(scale=0.3, size=300)
    bad = label + rng.normal(scale=3.0, size=300)
    d, lo, hi = paired_bootstrap(label, good, good.copy(), n=300)
    assert d == 0 and lo == 0 and hi == 0
    paths = np.array([f"{i}.png" for i in range(300)])
    ranking = pd.DataFrame({"rank": [1, 2, 3], "trial": ["top", "twin", "bad"]})
    out = add_uncertainty(ranking, {"top": (paths, label, good), "twin": (paths, label, good.copy()),
                                    "bad": (paths, label, bad)}, n=300)
    assert out.set_index("trial")["vs_top"].to_dict() == {"top": "top", "twin": "not significant", "bad": "worse"}


def test_split_seed_groups_take_the_median():
    ranking = pd.DataFrame({"trial": list("abcd"), "val_srcc": [0.9, 0.7, 0.8, 0.85], "test_srcc": [0.8, 0.6, 0.7, 0.9],
                            "hp.loss.alpha": [1, 1, 0.5, 0.5], "hp.data.split.seed": [0, 1, 0, 1]})
    groups = group_split_seeds(ranking, "val_srcc", "max")
    assert groups["hp.loss.alpha"].tolist() == [0.5, 1]
    assert groups["median val_srcc"].tolist() == pytest.approx([0.825, 0.8])
    assert groups["splits"].tolist() == [2, 2]


def test_partial_experiment_reports_without_crashing(tmp_path):
    exp = tmp_path / "exp"
    rows = [{"epoch": 1, "val_srcc": 0.5, "val_plcc": 0.5, "test_srcc": 0.4, "test_plcc": 0.4, "max_epochs": 3,
             "train_srcc_patch": 0.6}]
    for name, params, result, error in [("t0", {"loss.alpha": 1.0}, rows, None),
                                        ("t1", {"loss.alpha": 0.5}, None, "Traceback...\nRuntimeError: boom"),
                                        ("t2", {"loss.alpha": 0.0}, None, None)]:
        (exp / name).mkdir(parents=True)
        (exp / name / "params.json").write_text(json.dumps(params))
        if result:
            (exp / name / "result.json").write_text("\n".join(json.dumps(r) for r in result) + "\n{\"epoch\": 2, \"va")
        if error:
            (exp / name / "error.txt").write_text(error)
    out = build_report(exp)
    ranking = pd.read_csv(out / "ranking.csv").set_index("trial")
    assert ranking.loc["t0", "ended"] == "cut at a rung" and ranking.loc["t0", "rank"] == 1
    assert ranking.loc["t1", "ended"] == "errored" and "RuntimeError: boom" in ranking.loc["t1", "reason"]
    assert ranking.loc["t2", "ended"] == "no results"
    html = (out / "index.html").read_text()
    import re

    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)  # plotly.js's own strings are no assets
    for ref in re.findall(r'(?:src|href)="([^"]+)"', markup):
        assert ref.startswith("data:") or (out / ref).exists()


def test_patience_stop_is_not_called_an_asha_cut(tmp_path):
    exp = tmp_path / "exp"
    (exp / "t0").mkdir(parents=True)
    (exp / "t0/params.json").write_text(json.dumps({"loss.alpha": 1.0}))
    rows = [{"epoch": e, "val_srcc": v, "test_srcc": 0.5, "max_epochs": 10, "patience_stop": float(e == 3)}
            for e, v in ((1, 0.6), (2, 0.5), (3, 0.4))]
    (exp / "t0/result.json").write_text("\n".join(json.dumps(r) for r in rows))
    ranking = pd.read_csv(build_report(exp) / "ranking.csv")
    assert ranking.loc[0, "ended"] == "early stop (patience)" and ranking.loc[0, "best_epoch"] == 1


def test_an_experiment_whose_every_trial_errored_still_reports(tmp_path):
    exp = tmp_path / "exp"
    for name in ("t0", "t1"):
        (exp / name).mkdir(parents=True)
        (exp / name / "params.json").write_text(json.dumps({"loss.alpha": 0.0}))
        (exp / name / "error.txt").write_text("Traceback...\nFloatingPointError: non-finite training loss")
    ranking = pd.read_csv(build_report(exp) / "ranking.csv")
    assert (ranking["ended"] == "errored").all() and ranking["reason"].str.contains("non-finite").all()


def test_the_report_ends_with_the_versions_the_study_ran_with(tmp_path):
    from iqa_tune.records import write_study_settings
    from iqa_tune.versions import collect

    exp = tmp_path / "exp"
    (exp / "t0").mkdir(parents=True)
    (exp / "t0/params.json").write_text(json.dumps({"loss.alpha": 1.0}))
    (exp / "t0/result.json").write_text(json.dumps({"epoch": 1, "val_srcc": 0.5, "test_srcc": 0.4}))
    versions = {**collect(), "torch": "9.8.7"}
    write_study_settings(exp, {"metric": "val_srcc", "mode": "max", "versions": versions})
    out = build_report(exp)
    for name in ("ranking.md", "index.html"):
        last = (out / name).read_text().strip().splitlines()[-1]
        assert "torch 9.8.7" in last and f"Python {versions['python']}" in last
    (exp / "study.yaml").unlink()
    assert "not recorded" in (build_report(exp) / "ranking.md").read_text().strip().splitlines()[-1]


def test_ranking_by_another_metric_uses_its_own_direction_and_refuses_test_metrics(tmp_path):
    exp = tmp_path / "exp"
    for name, loss in (("low", 1.0), ("high", 9.0)):
        (exp / name).mkdir(parents=True)
        (exp / name / "params.json").write_text(json.dumps({"loss.alpha": 1.0}))
        (exp / name / "result.json").write_text(json.dumps({"epoch": 1, "val_srcc": 0.5, "test_srcc": 0.4, "train_loss": loss,
                                                            "max_epochs": 1}) + "\n")
    ranking = pd.read_csv(build_report(exp, metric="train_loss") / "ranking.csv")
    assert ranking["trial"].tolist() == ["low", "high"]  # a loss ranks lowest first, whatever the study's mode
    with pytest.raises(UserError, match="cannot rank trials"):
        build_report(exp, metric="test_srcc")
