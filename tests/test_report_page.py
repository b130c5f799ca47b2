"""The report page and headline on one synthetic experiment written into tmp (no training): human tables, numbers
equal to the ranking's, categorical order, the live rewrite, and the page opened in headless Chromium."""

import functools
import json
import os
import re
import threading
import time
import types

import numpy as np
import pandas as pd
import pytest

from iqa_tune.records import save_predictions, write_study_settings, write_trial_status
from iqa_tune.reports import build
from iqa_tune.reports.browser import check_page, find_chromium
from iqa_tune.reports.build import write_report
from iqa_tune.reports.figures import parallel_coordinates
from iqa_tune.reports.headline import NOT_SIGNIFICANT, headline
from iqa_tune.reports.labels import hp_names, natural_order
from iqa_tune.reports.live import LiveReport
from iqa_tune.reports.page import PageStatus, render_page

# trial: (alpha, ranking, dropout, schedule, weight decay), val, test, train (patch) per epoch, status, quality of
# its test predictions. "a" wins on val and overfits after epoch 2; "b" is second on val but best on test (its
# maximum test SRCC must never be the headline's); "c" was cut by ASHA; "e" is still running; "f" errored.
TRIALS = {
    "a": ((1.0, "patch", 0.10, "cosine", 1e-3), [0.80, 0.85, 0.83, 0.82], [0.75, 0.78, 0.70, 0.60],
          [0.5, 0.7, 0.8, 0.9], "TERMINATED", 1.0),
    "b": ((0.0, "patch", 0.20, "step", 3e-4), [0.70, 0.84, 0.80, 0.79], [0.80, 0.90, 0.91, 0.92],
          [0.5, 0.6, 0.7, 0.8], "TERMINATED", 1.2),
    "c": ((0.5, "image", 0.05, "cosine", 5e-3), [0.60, 0.65], [0.55, 0.60], [0.4, 0.5], "TERMINATED", 0.4),
    "d": ((1.0, "image", 0.25, "step", 2e-4), [0.50, 0.55, 0.60, 0.62], [0.5, 0.52, 0.55, 0.56],
          [0.3, 0.4, 0.5, 0.6], "TERMINATED", 0.3),
    "e": ((0.0, "image", 0.15, "cosine", 8e-3), [0.70], [0.65], [0.5], "RUNNING", 0.8),
    "f": ((0.5, "patch", 0.30, "step", 1e-4), [], [], [], "ERROR", None),
}
KEYS = ("loss.alpha", "loss.ranking", "model.dropout", "train.schedule", "train.weight_decay")
# five more searched keys, long values among them: the ranking must still fit 1400 px (the surplus behind the toggle)
MORE = {"model.backbone": ["swin_tiny_patch4_window7_224", "resnet50.tv_in1k"], "train.lr": [1e-5, 3e-5, 5e-5],
        "train.warmup_epochs": [0.0, 0.5, 1.0, 2.0], "train.reference_compat": [False, True],
        "train.optimizer": ["adam", "adamw"]}


def write_experiment(exp):
    rng = np.random.default_rng(0)
    label = rng.normal(size=80)
    paths = [f"img{i}.png" for i in range(80)]
    for i, (name, (hps, val, test, train, status, quality)) in enumerate(TRIALS.items()):
        trial = exp / f"t_{name}"
        trial.mkdir(parents=True)
        more = {k: v[i % len(v)] for k, v in MORE.items()}
        (trial / "params.json").write_text(json.dumps({**dict(zip(KEYS, hps)), **more}))
        rows = [{"epoch": e + 1, "val_srcc": v, "val_plcc": v, "test_srcc": t, "test_plcc": t, "train_srcc_patch": p,
                 "max_epochs": 4} for e, (v, t, p) in enumerate(zip(val, test, train))]
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if status == "ERROR":
            (trial / "error.txt").write_text("Traceback...\nFloatingPointError: non-finite training loss")
        if quality is not None:
            (trial / "checkpoint_000001").mkdir()
            save_predictions(trial / "checkpoint_000001/test_predictions.npz", paths, label,
                             quality * label + rng.normal(size=80), 2)
    write_trial_status(exp, {f"t_{n}": t[4] for n, t in TRIALS.items()})
    # two more planned trials Tune has not created yet: waiting, while the study runs
    write_study_settings(exp, {"metric": "val_srcc", "mode": "max", "max_epochs": 4, "trials": len(TRIALS) + 2})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    exp = tmp_path_factory.mktemp("page") / "exp"
    write_experiment(exp)
    # the bootstrap's statistics are ranking.py's (tested in test_reports.py); 200 resamples keep this fast
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "add_uncertainty", functools.partial(build.add_uncertainty, n=200))
        return write_report(exp, pictures=False)


def finding(r, key):
    return next(f.text for f in r["findings"] if f.key == key)


def test_headline_numbers_are_the_rankings_and_the_best_is_chosen_on_val(report):
    top = report["ranking"].iloc[0]
    assert top["trial"] == "t_a"  # not t_b, which has the higher test SRCC
    best, figures = finding(report, "best"), finding(report, "figures")
    assert ("alpha 1, ranking patch, dropout 0.1, schedule cosine, weight decay 0.001, backbone "
            "swin_tiny_patch4_window7_224, lr 1e-05, warmup epochs 0, reference optimizer false, optimizer adam") in best
    assert "trial t_a, epoch 2" in best
    assert f"val SRCC {top['val_srcc']:.3f}" in figures and f"test SRCC at that epoch {top['test_srcc']:.3f}" in figures
    assert f"95% CI {top['test_srcc_ci_lo']:.3f} to {top['test_srcc_ci_hi']:.3f}" in figures
    assert "0.920" not in figures  # b's maximum over epochs is selected on test
    labels = report["ranking"]["vs_top"].iloc[1:]
    same = labels.isin(NOT_SIGNIFICANT).sum()
    tested = labels.isin([*NOT_SIGNIFICANT, "worse", "better"]).sum()
    assert f"{same} of the {tested} other configurations" in finding(report, "noise")
    assert ("iqa-tune confirm" in finding(report, "noise")) == bool(same)


def test_headline_overfitting_verdict_and_progress(report):
    text = finding(report, "overfitting")
    # a: test 0.78 -> 0.60 after its best epoch 2 while train (patch) 0.7 -> 0.9
    assert text.startswith("Overfitting in 1 of the top")
    assert "#1: test 0.780 -> 0.600 (-0.180), train (patch) 0.700 -> 0.900 (+0.200) from epoch 2 to 4" in text
    assert finding(report, "progress").startswith("Study in progress: 1 of 8 trials still running and 2 waiting")


def test_headline_says_when_nothing_followed_the_best_epoch():
    epochs = pd.DataFrame({"trial": ["x", "x"], "epoch": [1, 2], "val_srcc": [0.5, 0.6], "test_srcc": [0.4, 0.5],
                           "train_srcc_patch": [0.5, 0.6], "ended": "completed"})
    ranking = pd.DataFrame({"rank": [1], "trial": ["x"], "ended": ["completed"], "best_epoch": [2],
                            "epochs_run": [2], "val_srcc": [0.6], "test_srcc": [0.5], "hp.loss.alpha": [1.0]})
    found = {f.key: f.text for f in headline(ranking, epochs, "val_srcc", "exp")}
    assert "nothing after it to judge" in found["overfitting"] and "no CI" in found["figures"]
    assert "progress" not in found


def test_an_interrupted_study_says_how_to_resume_it():
    ranking = pd.DataFrame({"rank": [1, 2], "trial": ["x", "y"], "ended": ["completed", "interrupted"],
                            "best_epoch": [1, 1], "epochs_run": [1, 1], "val_srcc": [0.6, 0.5],
                            "test_srcc": [0.5, 0.4]})
    found = {f.key: f.text for f in headline(ranking, pd.DataFrame(), "val_srcc", "/r/study", "/s/space.yaml")}
    assert found["progress"] == ("The study was interrupted with 1 of 2 trials unfinished: resume it with "
                                 "iqa-tune run /s/space.yaml --name study --storage /r --resume.")


def test_names_and_natural_order():
    assert hp_names(["hp.loss.alpha", "hp.train.weight_decay", "hp.train.warmup_epochs", "hp.a.seed",
                     "hp.b.seed"]) == {"hp.loss.alpha": "alpha", "hp.train.weight_decay": "weight decay",
                                       "hp.train.warmup_epochs": "warmup epochs", "hp.a.seed": "a.seed",
                                       "hp.b.seed": "b.seed"}
    assert natural_order([1.0, 0.0, 0.5, 1.0]) == [0.0, 0.5, 1.0]
    assert natural_order([True, False]) == [False, True]
    assert natural_order(["step", "cosine"]) == ["cosine", "step"]


def test_page_tables_are_human_and_categorical_axes_ordered(report):
    html = (report["out"] / "index.html").read_text()
    table = html[html.index('id="ranking-table"'):]
    table = table[:table.index("</table>")]
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert headers[:8] == ["rank", "trial", "ended", "best epoch", "val SRCC", "test SRCC", "test SRCC 95% CI",
                           "vs top"]
    assert {"alpha", "ranking", "dropout", "schedule", "weight decay", "reference optimizer"} <= set(headers)
    hidden = re.findall(r'<th class="adv[^"]*" title="hp\.[^"]*">([^<]*)</th>', table)
    assert len(hidden) == 10 - 7  # seven searched values shown, the least important three behind the toggle
    least = report["importance"].sort_values("importance")["hyperparameter"].head(3)
    assert set(hidden) == set(least)
    assert not [h for h in headers if h.startswith("hp.") or "_" in h]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    assert "0.850" in cells and "0.8500" not in cells  # three decimals
    assert "2.000" not in cells and "2" in cells  # a best epoch is a count, though an errored trial's is NaN
    dims = {d["label"]: d for d in parallel_coordinates(report["ranking"], "val_srcc").data[0]["dimensions"]}
    assert list(dims["alpha"]["ticktext"]) == ["0", "0.5", "1"]  # t_a (alpha 1) ran first
    assert list(dims["schedule"]["ticktext"]) == ["cosine", "step"]
    assert html.count("<script type=\"text/javascript\">/**") <= 1 and 'src="http' not in html


def test_markdown_and_csv_keep_every_column(report):
    csv = pd.read_csv(report["out"] / "ranking.csv")
    assert {"hp.loss.alpha", "test_srcc_ci_lo", "test_srcc_ci_hi", "max_test_srcc (selected on test)",
            "train_patch_minus_test_srcc (last)", "diff_vs_top"} <= set(csv.columns)
    md = (report["out"] / "ranking.md").read_text()
    assert "max_test_srcc (selected on test)" in md and "| loss.alpha |" in md
    assert finding(report, "best") in md


def test_importance_comes_from_optunas_fanova(report):
    imp = report["importance"]
    assert set(imp["hyperparameter"]) <= {"alpha", "ranking", "dropout", "schedule", "weight decay", "backbone", "lr",
                                          "warmup epochs", "reference optimizer", "optimizer"}
    assert imp["importance"].sum() == pytest.approx(1.0) and (imp["trials"] == 5).all()


def test_a_running_study_says_so_and_reloads_a_finished_one_does_not(report):
    html = (report["out"] / "index.html").read_text()
    assert 'http-equiv="refresh"' in html and '<span id="running">1</span> of 8 trials still running</b>, 2 waiting' in html
    done = render_page("t", PageStatus(total=3), [], [])
    assert "refresh" not in done and "still running" not in done


def test_a_confirmation_table_follows_the_ranking_with_its_method(report):
    from iqa_tune.reports.build import page_sections
    from iqa_tune.reports.confirmation import summarize

    runs = pd.DataFrame([{"trial": f"{n}{k}", "configuration": n, "train.seed": k + 1, "data.split.seed": 0,
                          "ended": "completed", "val_srcc": t + 0.1, "test_srcc": t}
                         for n, tests in {"a": [0.80, 0.82, 0.81], "b": [0.60, 0.61, 0.63]}.items()
                         for k, t in enumerate(tests)])
    table = summarize(runs, "val_srcc", "max", [{"name": n, "values": {"loss.alpha": a}, "search_metric": 0.5}
                                                 for n, a in (("a", 1.0), ("b", 0.0))])
    table.attrs.update(metric="val_srcc", seeds=[1, 2, 3], split_seeds=[0])
    sections = page_sections(report["out"].parent, {**report, "importance": None, "confirmation": table})
    ids = [s.id for s in sections]
    assert ids[:2] == ["ranking", "confirmation"]
    body = sections[1].body
    assert "test SRCC (95% CI)" in body and "worse" in body  # 0.61 against 0.81 on the same three seeds
    assert "3 training seeds" in sections[1].note and "Holm" in sections[1].note


def test_live_report_folds_requests_and_survives_a_failing_write(tmp_path):
    calls, gate = [], threading.Event()

    def write(exp_dir):
        calls.append(time.monotonic())
        gate.wait(5)
        if len(calls) == 1:
            raise RuntimeError("disk full")

    live = LiveReport(min_interval_s=0.3, write=write)
    live.trial_ended(tmp_path)
    while not calls:  # the first write starts at once
        time.sleep(0.01)
    for _ in range(4):  # four more trials end during it: folded into one more write, a minimum interval later
        live.trial_ended(tmp_path)
    gate.set()
    time.sleep(1.0)
    live.close()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.3
    assert live.failures == 1 and live.writes == 1
    live.trial_ended(tmp_path)  # closed: ignored
    assert len(calls) == 2


def test_the_study_callback_records_the_ending_and_calls_the_hook_without_dying(tmp_path, monkeypatch):
    from iqa_tune import study

    progress = study.StudyProgress(space=None, exp_dir=tmp_path)
    monkeypatch.setattr(progress, "_draw", lambda *a, **k: None)
    seen = []
    trials = [types.SimpleNamespace(trial_id="t1", status="RUNNING"),
              types.SimpleNamespace(trial_id="t2", status="RUNNING")]

    def hook(exp_dir):
        seen.append(json.loads((exp_dir / "trial_status.json").read_text()))
        raise RuntimeError("report failed")

    monkeypatch.setitem(study.TRIAL_END_HOOKS, tmp_path, hook)
    trials[1].status = "PENDING"  # Tune sets RUNNING only after on_trial_start
    progress.on_trial_start(0, trials, trials[1])
    assert json.loads((tmp_path / "trial_status.json").read_text()) == {"t1": "RUNNING", "t2": "RUNNING"}
    trials[1].status = "RUNNING"
    progress.on_trial_complete(0, trials, trials[0])
    progress.on_trial_error(0, trials, trials[1])
    # Tune still says RUNNING when it calls on_trial_complete: the record (and the page) says how it ended
    assert seen == [{"t1": "TERMINATED", "t2": "RUNNING"}, {"t1": "RUNNING", "t2": "ERROR"}]


# CI (.ci/run installs Debian's chromium) never skips: without a browser there, check_page fails the test
NO_BROWSER = find_chromium() is None and not os.environ.get("CI")


@pytest.mark.skipif(NO_BROWSER, reason="no Chromium here (.ci/run installs the Debian package)")
def test_the_page_in_headless_chromium(report, tmp_path):
    # click "val SRCC" twice (descending), read the first trial; then show the advanced columns
    script = """(() => {
      const th = [...document.querySelectorAll('#ranking-table th')].find(h => h.textContent === 'val SRCC');
      th.click(); th.click();
      const first = document.querySelector('#ranking-table tbody tr td:nth-child(2)').textContent;
      const adv = document.querySelector('#ranking-table th.adv');
      const hidden = adv.getBoundingClientRect().width;
      document.getElementById('adv-toggle').click();
      return {first, hidden, shown: adv.getBoundingClientRect().width};
    })()"""
    check = check_page(report["out"] / "index.html", width=1400, screenshot=tmp_path / "page.png",
                       expression=script)
    assert check.problems == []
    assert check.console_errors == [] and check.scroll_width <= 1400 and check.ranking_right <= 1400
    assert check.requests and check.external == []  # the page itself loads; nothing from a network
    ids = {p["id"] for p in check.plots}
    diagnosis = {i for i in ids if i.startswith("plot-diagnosis-")}  # one chart of the signals per top trial
    assert ids - diagnosis == {"plot-parallel", "plot-importance", "plot-curves", "plot-divergence"}
    assert diagnosis and diagnosis <= {f"plot-diagnosis-{k}" for k in range(1, 4)}
    assert all(p["width"] > 300 and p["height"] > 100 for p in check.plots)
    assert "Best configuration by val SRCC" in check.headline
    assert check.extra["first"] == "t_a" and check.extra["hidden"] == 0 and check.extra["shown"] > 0
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.skipif(NO_BROWSER, reason="no Chromium here (.ci/run installs the Debian package)")
def test_the_browser_check_sees_what_is_wrong(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><div style="width:2000px">wide</div><div id="ranking"><table><tr><td>x</td>'
                    "</tr></table></div><script>console.error('boom'); nope();</script>")
    problems = check_page(page).problems
    assert any("boom" in p for p in problems) and any("nope" in p for p in problems)
    assert any("sideways" in p for p in problems) and "no headline" in problems


def test_the_headline_reports_a_confirmation_over_the_searchs_order():
    from iqa_tune.reports.confirmation import summarize
    from iqa_tune.reports.headline import confirmed

    assert confirmed(None) is None
    runs = pd.DataFrame([{"trial": f"{n}{k}", "configuration": n, "train.seed": k + 1, "data.split.seed": 0,
                          "ended": "completed", "val_srcc": t + 0.1, "test_srcc": t}
                         for n, tests in {"a": [0.60, 0.61, 0.63], "b": [0.80, 0.82, 0.81], "c": [0.79, 0.83, 0.80]}
                         .items() for k, t in enumerate(tests)])
    table = summarize(runs, "val_srcc", "max", [{"name": n, "values": {"loss.alpha": a}, "search_metric": 0.5}
                                                 for n, a in (("a", 0.0), ("b", 1.0), ("c", 0.5))])
    text = confirmed(table).text
    # b wins on mean val over seeds, whatever the search's order (a first) said
    assert text.startswith("Confirmed over seeds (3 runs each): the best configuration by mean val SRCC is alpha 1,")
    assert "test SRCC 0.810" in text and "of the 2 other configurations it retrained, 1 not significantly " \
                                         "different, 1 worse" in text
