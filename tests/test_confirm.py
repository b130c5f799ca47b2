"""Confirmation over seeds: Holm's adjustment and the paired comparison on synthetic runs (no training), the checks
of ``study.confirm`` and ``iqa-tune confirm``, and a real one on local Ray: ``study.confirm`` straight after a tiny
search, interrupted with Ctrl-C and resumed."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from iqa_tune.cli import main
from iqa_tune.reports.confirmation import (
    confirmation_runs,
    holm,
    load_confirmation,
    method_text,
    paired_t,
    progress_text,
    summarize,
    t_interval,
)
from iqa_tune.reports.ranking import add_uncertainty

from .conftest import ROOT, cli
from .test_signals import check_signals, extra_csv
from .test_study import TINY, write_space

# ----------------------------------------------------------------------------------------------------------------
# statistics, by hand


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 (adjusted p-values never decrease)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # an undefined p-value stays undefined and is not counted in m (here m = 2); capped at 1
    out = holm([0.6, np.nan, 0.02])
    assert out[0] == pytest.approx(0.6) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]).size == 0


def test_t_interval_and_paired_t_agree_with_scipy():
    values = [0.61, 0.58, 0.66]
    mean, lo, hi = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((np.mean(values), np.mean(values) - half, np.mean(values) + half))
    d = np.array([-0.05, -0.04, -0.06])
    m, lo, hi, p = paired_t(d)
    assert m == pytest.approx(d.mean()) and hi < 0
    assert p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert np.isnan(paired_t([0.1])[3])  # one pair: no test
    assert paired_t([0.0, 0.0, 0.0])[3] == 1.0  # identical runs: no difference


def _runs(table):
    """Synthetic finished runs: configuration -> test SRCC per seed (val = test + 0.1 unless given)."""
    rows = []
    for name, tests in table.items():
        for seed, test in enumerate(tests):
            rows.append({"trial": f"{name}{seed}", "configuration": name, "train.seed": seed + 1,
                         "data.split.seed": 0, "ended": "completed", "val_srcc": test + 0.1, "test_srcc": test})
    return pd.DataFrame(rows)


def test_summary_compares_against_the_best_by_val_on_the_same_seeds_with_holm():
    runs = _runs({"a": [0.70, 0.72, 0.71, 0.73], "b": [0.60, 0.61, 0.62, 0.60], "c": [0.69, 0.74, 0.70, 0.72],
                  "d": [0.50, 0.52, 0.49, 0.51]})
    configs = [{"name": n, "values": {"loss.alpha": a}, "search_metric": 0.5} for n, a in zip("abcd", (0, 1, 2, 3))]
    table = summarize(runs, "val_srcc", "max", configs).set_index("configuration")
    assert table.loc["a", "vs_best"] == "best" and table.loc["a", "rank"] == 1
    assert table.loc["b", "vs_best"] == "worse" and table.loc["d", "vs_best"] == "worse"
    assert table.loc["c", "vs_best"] == "not significant"
    # the p-values are paired t-tests on the seed-wise differences, adjusted by Holm over the 3 comparisons
    raw = [stats.ttest_rel(runs[runs.configuration == n]["test_srcc"], runs[runs.configuration == "a"]["test_srcc"])
           .pvalue for n in "bcd"]
    assert table.loc[list("bcd"), "p"].tolist() == pytest.approx(raw)
    assert table.loc[list("bcd"), "p_holm"].tolist() == pytest.approx(holm(raw))
    assert table.loc["b", "test_srcc"] == pytest.approx(0.6075)
    assert table.loc["b", "test_srcc_ci_lo"] < 0.6075 < table.loc["b", "test_srcc_ci_hi"]
    assert table.loc["a", "hp.loss.alpha"] == 0


def test_the_method_states_this_confirmation_in_two_sentences():
    runs = _runs({"a": [0.7, 0.71, 0.72], "b": [0.5, 0.52, 0.51]})
    configs = [{"name": n, "values": {}, "search_metric": 0.5} for n in "ab"]
    table = summarize(runs, "val_srcc", "max", configs)
    table.attrs.update(metric="val_srcc", seeds=[1, 2, 3], split_seeds=[0, 1])
    text = method_text(table)
    assert text.count(". ") == 1 and text.endswith(".")
    assert "3 training seeds x 2 splits" in text and "over the 1 comparison at 0.05" in text
    assert "nothing to compare" in method_text(table.head(1))


def test_summary_pairs_only_shared_seeds_and_skips_unfinished_runs():
    runs = _runs({"a": [0.7, 0.71, 0.72], "b": [0.5, 0.52, 0.51]})
    runs.loc[runs.trial == "b2", "ended"] = "interrupted"
    configs = [{"name": n, "values": {}, "search_metric": 0.5} for n in "ab"]
    table = summarize(runs, "val_srcc", "max", configs).set_index("configuration")
    assert table.loc["b", "runs"] == 2 and table.loc["b", "pairs"] == 2 and table.loc["a", "runs"] == 3


def test_load_confirmation_reads_runs_back_at_their_best_val_epoch(tmp_path):
    assert load_confirmation(tmp_path) is None  # a study without a confirmation
    exp = tmp_path / "confirm"
    configs = [{"name": "a", "values": {"model.pretrained": True}, "search_trials": ["a"], "search_metric": 0.5},
               {"name": "b", "values": {"model.pretrained": False}, "search_trials": ["b"], "search_metric": 0.4}]
    exp.mkdir()
    (exp / "study.yaml").write_text(yaml.safe_dump({"metric": "val_srcc", "mode": "max", "confirm": {
        "seeds": [1, 2, 3], "split_seeds": [0], "configurations": configs}}))
    status = {}
    for name, pretrained, base in (("a", True, 0.6), ("b", False, 0.2)):
        for seed in (1, 2, 3):
            trial = exp / f"{name}{seed}"
            trial.mkdir()
            (trial / "params.json").write_text(json.dumps({"model.pretrained": pretrained, "train.seed": seed,
                                                           "data.split.seed": 0}))
            # epoch 1 is the best by val; epoch 2 has the better test figure, which must not be read
            rows = [{"epoch": 1, "val_srcc": base + 0.01 * seed, "test_srcc": base + 0.02 * seed, "max_epochs": 2},
                    {"epoch": 2, "val_srcc": base - 0.1, "test_srcc": 0.99, "max_epochs": 2}]
            (trial / "result.json").write_text("\n".join(map(json.dumps, rows)) + "\n")
            status[trial.name] = "TERMINATED"
    (exp / "trial_status.json").write_text(json.dumps(status))
    table = load_confirmation(tmp_path).set_index("configuration")
    assert table["runs"].to_dict() == {"a": 3, "b": 3} and table.attrs["finished"] == table.attrs["planned"] == 6
    assert table.loc["a", "test_srcc"] == pytest.approx(0.64) and table.loc["b", "diff_vs_best"] == pytest.approx(-0.4)
    assert table.loc["b", "vs_best"] == "worse"  # the same difference on every seed: no spread, p = 0
    (exp / "trial_status.json").write_text(json.dumps({**status, "b3": "INTERRUPTED"}))
    partial = load_confirmation(tmp_path)
    assert partial.attrs["finished"] == 5 and "5 of 6 runs" in progress_text(partial)


def test_trial_level_comparison_is_holm_adjusted_and_says_not_significant():
    rng = np.random.default_rng(1)
    label = rng.normal(size=300)
    paths = np.array([f"{i}.png" for i in range(300)])
    preds = {"top": label + rng.normal(scale=0.3, size=300), "bad": label + rng.normal(scale=3.0, size=300)}
    preds["twin"] = preds["top"] + rng.normal(scale=0.01, size=300)
    ranking = pd.DataFrame({"rank": [1, 2, 3], "trial": ["top", "twin", "bad"]})
    out = add_uncertainty(ranking, {t: (paths, label, p) for t, p in preds.items()}).set_index("trial")
    assert out["vs_top"].to_dict() == {"top": "top", "twin": "not significant", "bad": "worse"}
    compared = out.loc[["twin", "bad"]]
    assert compared["p_vs_top_holm"].tolist() == pytest.approx(holm(compared["p_vs_top"]))
    assert 1 / 2001 <= out.loc["bad", "p_vs_top"] < 0.01  # 2000 resamples: never 0


# ----------------------------------------------------------------------------------------------------------------
# bad input: exit code 2, the key path, no traceback


@pytest.mark.parametrize("confirm, expected", [
    ({"top": 0}, "study.confirm.top: must be >= 1"),
    ({"seeds": 1}, "study.confirm.seeds: must be >= 2"),
    ({"seed": 3}, "study.confirm.seed: unknown key (did you mean 'seeds'?)"),
    ({"split_seeds": 0}, "study.confirm.split_seeds: must be >= 1"),
    ({"top": 3}, "study.confirm.top: 3 exceeds the 2 configuration(s)"),
    ({"top": "two"}, "study.confirm.top: expected int"),
])
def test_bad_study_confirm_is_refused_at_load(tmp_path, capsys, confirm, expected):
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}}, {"name": "s", "confirm": confirm})
    assert main(["validate", str(space)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and str(space) in err and "Traceback" not in err


def test_confirm_over_splits_is_refused_on_an_official_split(tmp_path, capsys):
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}}, {"name": "s", "confirm": {"split_seeds": 2}},
                        data={"dataset": "koniq10k", "root": str(tmp_path)})
    assert main(["validate", str(space)]) == 2
    assert "study.confirm.split_seeds: koniq10k uses its official split" in " ".join(capsys.readouterr().err.split())


def test_validate_says_what_the_confirmation_will_run(tmp_path, capsys):
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}}, {"name": "s", "confirm": {"top": 2}})
    assert main(["validate", str(space)]) == 0
    assert "then confirm: the top 2 by val_srcc x 3 training seeds = 6 trials" in capsys.readouterr().out


def test_confirm_on_a_folder_that_is_not_a_study(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    for folder in (tmp_path / "plain", tmp_path / "missing"):
        assert main(["confirm", str(folder), "--no-dashboard"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "not a study folder" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# real confirmations on local Ray


@pytest.mark.slow
def test_study_confirm_after_the_search_interrupted_resumed_and_reported(tmp_path):
    """A tiny search of 2 configurations with study.confirm (the top 2 x 2 training seeds): Ctrl-C during the
    confirmation, then ``iqa-tune run SPACE --resume`` finishes it and the study's report gains the table."""
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}},
                        {"name": "s", "scheduler": {"type": "none"}, "confirm": {"top": 2, "seeds": 2}},
                        train={**TINY["train"], "epochs": 2},
                        data={**TINY["data"], "extra_tests": [extra_csv(tmp_path / "xset")]})
    study, exp = tmp_path / "results/s", tmp_path / "results/s/confirm"
    proc = subprocess.Popen([sys.executable, "-m", "iqa_tune.cli", "run", str(space), "--no-dashboard"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:  # Ctrl-C once a confirmation run has reported
        if any(p.read_text().count("\n") >= 1 for p in exp.glob("*/result.json")):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert f"iqa-tune run {space}" in " ".join(out.split()) and "--resume" in out
    assert (study / "report/ranking.md").is_file()  # the search finished and reported before the confirmation
    status = json.loads((exp / "trial_status.json").read_text())
    assert set(status.values()) - {"TERMINATED"}  # the study's own record says what is unfinished
    refused = cli("confirm", study, "--seeds", "3", "--resume", "--no-dashboard")
    assert refused.returncode == 2 and "started with --seeds 2" in refused.stderr

    resumed = cli("run", space, "--resume", "--no-dashboard")  # the command it printed: the search is done, the
    # confirmation goes on (run_confirmation(resume=True), what `iqa-tune confirm STUDY --resume` calls)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    status = json.loads((exp / "trial_status.json").read_text())
    assert len(status) == 4 and set(status.values()) == {"TERMINATED"}  # top 2 x 2 seeds
    runs = confirmation_runs(study)
    assert (runs["ended"] == "completed").all() and (runs["best_epoch"] >= 1).all()
    assert sorted(runs["train.seed"].unique()) == [1, 2]  # fresh seeds: the search trained with seed 0
    for _, r in runs.iterrows():  # each run is its configuration as searched, only the seed changed, all epochs
        cfg = yaml.safe_load((exp / r["trial"] / "config.yaml").read_text())
        assert cfg["train"]["seed"] == r["train.seed"] and cfg["loss"]["alpha"] in (0.0, 1.0)
        assert json.loads((exp / r["trial"] / "result.json").read_text().splitlines()[-1])["epoch"] == 2
        rows = [json.loads(line) for line in (exp / r["trial"] / "result.json").read_text().splitlines()]
        check_signals(exp / r["trial"], rows)  # the signals and the cross-dataset set, on the confirmation too
        assert "xtest_other_set_srcc" in rows[-1]
    assert "?" not in set(runs["configuration"])  # every run found its configuration
    for _, g in runs.groupby("configuration"):  # the spread over seeds is real: seeds give different results
        assert len(g) == 2 and g["test_srcc"].nunique() == 2 and g["val_srcc"].nunique() == 2

    table = load_confirmation(study)
    assert len(table) == 2 and table["runs"].tolist() == [2, 2]
    assert table["vs_best"].iloc[0] == "best" and table["vs_best"].iloc[1] in ("better", "worse", "not significant")
    md = (study / "report/ranking.md").read_text()
    assert "## Confirmation over seeds" in md and "Holm-adjusted over the 1 comparison at 0.05" in md
    assert len(pd.read_csv(study / "report/confirmation.csv")) == 2
    assert "Confirmation over seeds" in (study / "report/index.html").read_text()
    assert "confirmation over seeds" in resumed.stdout
    again = cli("confirm", study, "--no-dashboard")
    assert again.returncode == 2 and "already holds a confirmation" in again.stderr
