"""Real studies on a local Ray instance (no mocks): ASHA, synchronous halving, per-epoch results, errors,
pre-flight, two nodes, Ctrl-C and --resume."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from iqa_tune import records
from iqa_tune.reports.browser import check_page, find_chromium

from .conftest import ROOT, cli

pytestmark = pytest.mark.slow

TINY = {
    "data": {"dataset": "demo", "patch_size": 32, "train_patches": 2, "test_patches": 4, "limit": 160,
             "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    # resnet_nano and a head at half the reference's widths: an epoch of these studies takes 1 s, 3.5 with
    # resnet_micro and the reference's head, so the studies' time goes to Tune, resume and reports
    "model": {"backbone": "resnet_nano", "hyper_channels": 64, "target_in": 112, "target_dims": [56, 28, 14, 7]},
    "loss": {"margin": 1.0},
    "train": {"lr": 1.0e-3, "epochs": 3, "batch_size": 16, "patches_per_image": 2, "threads": 1},
}
# TINY as one run at the default alpha 0, where a margin does nothing and is refused (the studies search alpha)
TINY_RUN = {k: v for k, v in TINY.items() if k != "loss"}
EPOCH_KEYS = {"epoch", "train_loss", "train_l1", "train_rank", "train_srcc_patch", "train_srcc_image", "val_srcc",
              "val_plcc", "val_krcc", "test_srcc", "test_plcc", "test_krcc", "lr_backbone", "lr_hyper",
              "epoch_seconds", "patches_per_s", "best_val_srcc", "test_srcc_at_best", "test_plcc_at_best"}


def write_space(tmp_path, search, study, name="space.yaml", **over):
    body = json.loads(json.dumps(TINY))
    for section, values in over.items():
        body[section].update(values)
    body["search"] = search
    body["study"] = {"storage": str(tmp_path / "results"), **study}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def test_study_with_asha_errors_and_report(tmp_path):
    from .test_signals import check_signals, extra_csv

    # drawn values of every kind (float and int keys): what validate accepts must not error a trial
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}, "train.lr": {"grid": [1.0e-3, 3.0e-4, 1.0e9]},
                                   "model.dropout": {"uniform": [0.0, 0.3]},
                                   "train.weight_decay": {"loguniform": [1.0e-5, 1.0e-3]},
                                   "data.test_patches": {"randint": [2, 5]}},
                        {"name": "s", "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
                        data={**TINY["data"], "extra_tests": [extra_csv(tmp_path / "xset")]})
    run = cli("run", space, "--no-dashboard")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    exp = tmp_path / "results/s"
    trials = sorted(p for p in exp.iterdir() if (p / "params.json").exists())
    assert len(trials) == 6
    ranking = pd.read_csv(exp / "report/ranking.csv")
    ended = ranking.set_index("trial")["ended"]
    # lr 1e9 blows the loss up: those trials error with the reason, the others go on
    errored = ranking[ranking["hp.train.lr"] == 1e9]
    assert (errored["ended"] == "errored").all()
    assert errored["reason"].str.contains("non-finite training loss").all()
    assert (ranking[ranking["hp.train.lr"] != 1e9]["ended"] != "errored").all()
    assert (ended == "cut at a rung").any()
    assert (ended == "completed").any()
    for t in trials:
        rows = results(t)
        if rows and ended[t.name] != "errored":
            assert EPOCH_KEYS <= set(rows[-1])
            assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
            assert len(list(t.glob("checkpoint_*"))) == 1  # one kept: the best epoch's
            check_signals(t, rows)  # every diagnosis signal, recomputed from the trial's crop files
    # the ranking equals an independent recomputation from the raw per-epoch results
    expected = []
    for t in trials:
        rows = [r for r in results(t) if "val_srcc" in r] if (t / "result.json").exists() else []
        if rows:
            best = max(rows, key=lambda r: r["val_srcc"])  # first max on ties, like the report
            expected.append((t.name, best["val_srcc"], best["test_srcc"], best["epoch"]))
    expected.sort(key=lambda x: -x[1])
    got = ranking.dropna(subset=["val_srcc"])
    assert list(got["trial"]) == [e[0] for e in expected]
    assert got["test_srcc"].tolist() == pytest.approx([e[2] for e in expected])
    assert got["best_epoch"].tolist() == [e[3] for e in expected]
    assert (exp / "report/results.parquet").is_file() and (exp / "report/curves.png").is_file()
    signals = {"val_srcc_patch", "test_srcc_patch", "test_crop_sd", "test_disagreement", "train_eval_srcc",
               "train_eval_plcc", "xtest_other_set_srcc", "xtest_other_set_plcc", "xtest_other_set_srcc_at_best"}
    assert signals <= set(pd.read_parquet(exp / "report/results.parquet").columns)
    assert "ranked by val_srcc" in run.stdout
    # the headline ends the output, with the ranking's own figures; the page was rewritten live as trials ended
    top = got.iloc[0]
    assert f"val SRCC {top['val_srcc']:.3f}; test SRCC at that epoch {top['test_srcc']:.3f}" in run.stdout
    log = (exp / "tune.log").read_text()
    assert "live report of" in log and "could not be written" not in log
    if find_chromium() is not None or os.environ.get("CI"):  # .ci/run installs it
        check = check_page(exp / "report/index.html")
        assert check.problems == [] and len(check.plots) >= 3


def test_a_study_whose_every_trial_errored_exits_non_zero_and_says_why(tmp_path):
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}},
                        {"name": "bad", "scheduler": {"type": "none"}}, train={**TINY["train"], "lr": 1.0e9})
    run = cli("run", space, "--no-dashboard")
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    out = " ".join(run.stdout.split())  # rich wraps at the terminal's width
    assert "2 of 2 trial(s) errored: train.lr: non-finite training loss" in out
    assert "Traceback" not in run.stderr


def test_preflight_refuses_a_gpu_on_a_cluster_without_one(tmp_path):
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0]}}, {"name": "g", "resources": {"cpu": 1, "gpu": 1}})
    start = time.monotonic()
    run = cli("run", space, "--no-dashboard", timeout=120)
    assert run.returncode == 2
    assert "asks 1 CPU + 1 GPU per trial, but no node of this cluster has that" in run.stderr.replace("\n", " ")
    assert "Traceback" not in run.stderr
    assert time.monotonic() - start < 100  # refused, not left pending
    assert not (tmp_path / "results/g").exists()  # a corrected rerun is not told to --resume


def test_two_node_cluster_trials_on_both_nodes_find_their_data_and_the_drivers_code(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 0.5, 1.0, 2.0]}},
                            {"name": "two", "scheduler": {"type": "none"}}, train={**TINY["train"], "epochs": 1})
        run = cli("run", space, "--address", cluster.address)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    finally:
        cluster.shutdown()
    exp = tmp_path / "results/two"
    last = [results(t)[-1] for t in exp.iterdir() if (t / "result.json").exists()]
    assert len({r["node_id"] for r in last}) == 2
    # every trial imported the copy of iqa_tune the driver shipped (Ray's runtime resources), not the checkout
    assert all("runtime_resources" in r["code"] and str(ROOT) not in r["code"] for r in last), last[0]["code"]
    assert (pd.read_csv(exp / "report/ranking.csv")["ended"] == "completed").all()


def _asha_space(tmp_path, name):
    return write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 0.5, 1.0, 2.0]}},
                       {"name": name, "max_concurrent": 1,
                        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
                       name=f"{name}.yaml", train={**TINY["train"], "epochs": 4})


def _outcome(exp: Path) -> dict:
    ranking = pd.read_csv(exp / "report/ranking.csv")
    return {row["hp.loss.alpha"]: (row["ended"], row["epochs_run"]) for _, row in ranking.iterrows()}


def test_interrupt_then_resume_loses_nothing_and_keeps_asha_decisions(tmp_path):
    straight = cli("run", _asha_space(tmp_path, "straight"), "--no-dashboard")
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = _outcome(tmp_path / "results/straight")
    assert any(e == "cut at a rung" for e, _ in reference.values())
    # one trial at a time, so one worker process ran them all (Tune reuses it: no start-up per trial), and the
    # comparison below shows a reused worker gives the same results as a fresh one after the resume
    pids = {results(t)[0]["pid"] for t in (tmp_path / "results/straight").glob("*_0000*")}
    assert len(pids) == 1, pids

    space = _asha_space(tmp_path, "cut")
    exp = tmp_path / "results/cut"
    proc = subprocess.Popen([sys.executable, "-m", "iqa_tune.cli", "run", str(space), "--no-dashboard"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # interrupt once the second trial has reported: the first is done, the second mid-way
    while time.monotonic() < deadline:
        done = [p for p in exp.glob("*/result.json") if p.read_text().count("\n") >= 1]
        if len(done) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "--resume" in out
    status = json.loads((exp / "trial_status.json").read_text())
    assert "INTERRUPTED" in status.values() or "PENDING" in status.values()  # the study's own record says so
    resumed = cli("run", space, "--no-dashboard", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert _outcome(exp) == reference


def test_two_studies_at_once_share_one_instance_and_ctrl_c_of_one_leaves_the_other(tmp_path):
    """Started together, the second study joins the local Ray instance the first started, and their trials queue
    for the same cores. Ctrl-C of one ends only its own trials: the other finishes every trial. The interrupted one
    is a TPE study (Optuna through Tune, with ASHA): resumed, it runs its budget exactly once (the searcher's state
    comes back with it), and a trial at alpha 0 was never asked for a ranking granularity, while the report still
    shows the setting it ran with. Once neither uses it, the instance's supervisor ends it."""
    import os

    from iqa_tune import instance

    runtime = tmp_path / "runtime"  # this test's own instance, watched from start to end
    env = {**os.environ, "IQA_TUNE_RUNTIME": str(runtime), "PYTHONPATH": str(ROOT)}
    a = write_space(tmp_path, {"loss.alpha": {"choice": [0.0, 1.0]}, "loss.ranking": {"choice": ["patch", "image"]},
                               "train.lr": {"loguniform": [1.0e-4, 3.0e-3]}},
                    {"name": "a", "num_samples": 4, "max_concurrent": 1, "search_seed": 3,
                     "search": {"type": "optuna", "startup_trials": 2},
                     "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
                    name="a.yaml", train={**TINY["train"], "epochs": 2})
    b = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 0.5, 1.0]}},
                    {"name": "b", "max_concurrent": 1, "scheduler": {"type": "none"}}, name="b.yaml",
                    train={**TINY["train"], "epochs": 2})
    run = [sys.executable, "-m", "iqa_tune.cli", "run"]
    pa = subprocess.Popen([*run, str(a), "--no-dashboard"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    pb = subprocess.Popen([*run, str(b), "--no-dashboard"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    folder = tmp_path / "results"
    while time.monotonic() < deadline and not (len(list(folder.glob("a/*/result.json"))) >= 2
                                               and list(folder.glob("b/*/result.json"))):
        time.sleep(0.5)
    supervisor = json.loads((runtime / "instance.json").read_text())["supervisor"]
    assert instance._alive(supervisor)
    pa.send_signal(signal.SIGINT)
    out_a, err_a = pa.communicate(timeout=300)
    out_b, err_b = pb.communicate(timeout=400)
    assert pa.returncode == 130, out_a[-2000:] + err_a[-2000:]
    assert pb.returncode == 0, out_b[-2000:] + err_b[-2000:]
    said = out_a + out_b
    assert said.count("started the local Ray instance at") == 1 and said.count("joined the local Ray instance") == 1
    assert "proposed by optuna TPE, seed 3" in out_a
    status = json.loads((folder / "b/trial_status.json").read_text())
    assert len(status) == 3 and set(status.values()) == {"TERMINATED"}
    b_trials = [t for t in (folder / "b").iterdir() if (t / "result.json").exists()]
    assert len(b_trials) == 3 and all(len(results(t)) == 2 for t in b_trials)

    before = {p.parent.name: p.read_text() for p in folder.glob("a/*/params.json")}
    resumed = subprocess.run([*run, str(a), "--no-dashboard", "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    params = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("a/*/params.json")}
    assert len(params) == 4  # the budget, not 4 more: the searcher knew what it had proposed
    assert all(json.loads(before[t]) == params[t] for t in before)
    for p in params.values():
        assert ("loss.ranking" in p) == (p["loss.alpha"] != 0.0)
    ranking = pd.read_csv(folder / "a/report/ranking.csv")
    assert len(ranking) == 4 and ranking["hp.loss.ranking"].notna().all()
    assert set(json.loads((folder / "a/trial_status.json").read_text()).values()) == {"TERMINATED"}
    assert yaml.safe_load((folder / "a/study.yaml").read_text())["search"] == "optuna"

    deadline = time.monotonic() + instance.IDLE_S + 60
    while time.monotonic() < deadline and (runtime / "instance.json").exists():
        time.sleep(1)
    assert not (runtime / "instance.json").exists() and not list((runtime / "users").iterdir())
    while time.monotonic() < deadline and instance._alive(supervisor):
        time.sleep(1)
    assert not instance._alive(supervisor)  # and with it the head it ran (ray start --block, SIGTERM)


def test_a_ctrl_c_between_two_trials_counts_the_trials_never_started(tmp_path):
    """Tune records only the trials it created: one finished trial of two, and none running, is an interrupted
    study (exit 130, with the --resume command), not a finished one."""
    from rich.console import Console

    from iqa_tune import records
    from iqa_tune.space import load_space
    from iqa_tune.study import _outcome

    path = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}}, {"name": "cut"})
    space = load_space(str(path))
    exp = tmp_path / "results/cut"
    exp.mkdir(parents=True)
    records.write_trial_status(exp, {"cut_00000": "TERMINATED"})
    console = Console(record=True, width=300)
    assert _outcome(space, str(path), exp, console) == 130
    said = console.export_text()
    assert "1 trials unfinished" in said and "--resume" in said
    records.write_trial_status(exp, {"cut_00000": "TERMINATED", "cut_00001": "TERMINATED"})
    assert _outcome(space, str(path), exp, console) == 0


def test_synchronous_halving_waits_at_each_rung_keeps_the_best_and_resumes_after_ctrl_c(tmp_path):
    """4 trials, 3 epochs, factor 2: rungs at epochs 1 and 2, so 4 + 2 + 1 = 7 trial-epochs exactly, each
    decided on every trial's val SRCC at the rung. Interrupted while the first trials wait at rung 1: the resumed
    driver waits on the same rung, and the trials restored there stay paused until it is decided."""
    space = write_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]}, "train.lr": {"grid": [1.0e-3, 3.0e-4]}},
                        {"name": "h", "scheduler": {"type": "halving", "grace_period": 1, "reduction_factor": 2}})
    exp = tmp_path / "results/h"
    proc = subprocess.Popen([sys.executable, "-m", "iqa_tune.cli", "run", str(space), "--no-dashboard"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # two trials have reported epoch 1: they wait for the other two
        if len([p for p in exp.glob("*/result.json") if p.read_text().count("\n") >= 1]) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    resumed = cli("run", space, "--no-dashboard", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]

    # one row per epoch (records.read_results): a Ctrl-C that lands while a pausing trial's checkpoint is being
    # written makes it repeat that one epoch from the last checkpoint Tune registered, with the same result
    runs = {t.name: records.read_results(t) for t in exp.iterdir() if (t / "params.json").exists()}
    assert len(runs) == 4
    for t, rows in runs.items():
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))  # none skipped
        assert len(results(exp / t)) - len(rows) <= 1  # at most that one repeated
    assert sorted(len(rows) for rows in runs.values()) == [1, 1, 2, 3]
    # the two best at epoch 1 went on, the best of those at epoch 2 ran to the end
    at_1 = sorted(runs, key=lambda t: runs[t][0]["val_srcc"], reverse=True)
    assert {t for t in runs if len(runs[t]) >= 2} == set(at_1[:2])
    at_2 = max(at_1[:2], key=lambda t: runs[t][1]["val_srcc"])
    assert len(runs[at_2]) == 3
    # the decisions stay on disk for a later --resume (Tune's own restore must not put back the first run's)
    with open(exp / "halving_state.pickle", "rb") as f:
        kept = pickle.load(f)["kept"]
    assert set(kept[0]) == set(at_1[:2]) and kept[1] == [at_2]
    ranking = pd.read_csv(exp / "report/ranking.csv").set_index("trial")
    assert ranking.loc[at_2, "ended"] == "completed"
    assert (ranking.drop(index=at_2)["ended"] == "cut at a rung").all()
    # a trial paused at a rung kept its best epoch's predictions in the checkpoint it resumed from
    for t, rows in runs.items():
        best = max(rows, key=lambda r: r["val_srcc"])["epoch"]
        with np.load(records.latest_predictions(exp / t)) as z:
            assert int(z["epoch"]) == best
