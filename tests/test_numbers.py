"""Numbers a study can trust: undefined correlations stay undefined and rank last, each distinct configuration
runs once, split seeds are a grid axis shared by every sampled configuration. No training."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from iqa_tune.errors import UserError
from iqa_tune.metrics import correlations
from iqa_tune.reports.build import build_report
from iqa_tune.reports.ranking import add_uncertainty, group_split_seeds, marginals
from iqa_tune.space import SPLIT_SEED, expand, load_space

from .conftest import cli


def _space(tmp_path, search, study=None, **fixed):
    body = {"model": {"backbone": "resnet_micro"}, "data": {"train_patches": 24}, "train": {"epochs": 3}, **fixed,
            "search": search,
            "study": study or {"scheduler": {"type": "none"}}}
    body["data"].setdefault("patch_size", 64)  # validate reads the demo data: its images are 192x144
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_undefined_correlations_are_nan_not_zero():
    label = np.arange(5.0)
    assert all(math.isnan(v) for v in correlations(np.ones(5), label).values())
    assert all(math.isnan(v) for v in correlations(label, np.ones(5)).values())
    assert correlations(-label, label)["srcc"] == pytest.approx(-1.0)


def test_constant_predictions_report_na_without_crashing(tmp_path):
    exp = tmp_path / "exp"
    rng = np.random.default_rng(0)
    label = rng.normal(size=30)
    paths = np.array([f"{i}.png" for i in range(30)])
    for name, pred, val in (("flat", np.ones(30), math.nan), ("fine", label + rng.normal(size=30), 0.4)):
        (exp / name / "checkpoint_000000").mkdir(parents=True)
        (exp / name / "params.json").write_text(json.dumps({"loss.alpha": 1.0}))
        row = {"epoch": 1, "val_srcc": val, "test_srcc": correlations(pred, label)["srcc"], "max_epochs": 1}
        (exp / name / "result.json").write_text(json.dumps(row) + "\n")
        np.savez(exp / name / "checkpoint_000000/test_predictions.npz", path=paths, label=label, pred=pred, epoch=1)
    ranking = pd.read_csv(build_report(exp) / "ranking.csv", keep_default_na=False, na_values=[""]).set_index("trial")
    assert ranking.loc["fine", "rank"] == 1 and ranking.loc["flat", "rank"] == 2  # NaN ranks last
    assert np.isnan(ranking.loc["flat", "test_srcc_ci_lo"]) and ranking.loc["flat", "vs_top"] == "n/a"
    assert "n/a" in (exp / "report/ranking.md").read_text()


def test_bootstrap_of_an_all_nan_statistic_gives_nan():
    label = np.arange(20.0)
    out = add_uncertainty(pd.DataFrame({"rank": [1], "trial": ["t"]}), {"t": (np.arange(20), label, np.ones(20))})
    assert np.isnan(out.loc[0, "test_srcc_ci_lo"]) and np.isnan(out.loc[0, "test_srcc_ci_hi"])


def test_asha_cuts_an_undefined_metric_first(tmp_path):
    from iqa_tune.scheduler import PersistentASHA

    asha = PersistentASHA(tmp_path / "asha.pkl", time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    asha.set_search_properties("val_srcc", "max")
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(3)]
    for t in trials:
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, trials[0], {"epoch": 1, "val_srcc": -0.3}) == "CONTINUE"
    assert asha.on_trial_result(None, trials[1], {"epoch": 1, "val_srcc": -0.2}) == "CONTINUE"
    # Ray's ASHA compares NaN as False and would let this one through
    assert asha.on_trial_result(None, trials[2], {"epoch": 1, "val_srcc": math.nan}) == "STOP"


def test_alpha_zero_grid_points_run_once(tmp_path):
    space = load_space(str(_space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]},
                                             "loss.ranking": {"grid": ["patch", "image"]},
                                             "loss.margin": {"choice": [0.5, 1.0]}},
                                  train={"epochs": 3, "patches_per_image": 2})))
    e = expand(space)
    assert len(e.points) == 3 and e.folded_grid == 1
    assert sum(p["loss.alpha"] == 0.0 for p in e.points) == 1
    run = cli("validate", tmp_path / "space.yaml")
    assert run.returncode == 0 and "trials: 3 (1 samples x 3 grid points; 1 grid point folded" in run.stdout


def test_a_drawn_alpha_does_not_fold_the_ranking_grid(tmp_path):
    space = load_space(str(_space(tmp_path, {"loss.alpha": {"choice": [0.0, 1.0]},
                                             "loss.ranking": {"grid": ["patch", "image"]}},
                                  train={"epochs": 3, "patches_per_image": 2})))
    assert expand(space).folded_grid == 0  # a drawn alpha may be non-zero for either grid point


def test_split_seeds_share_each_sampled_configuration(tmp_path):
    space = load_space(str(_space(tmp_path, {SPLIT_SEED: {"grid": [0, 1, 2]},
                                             "train.weight_decay": {"loguniform": [1e-5, 1e-3]}},
                                  {"num_samples": 2, "scheduler": {"type": "none"}})))
    points = expand(space).points
    assert len(points) == 6
    by_decay = {}
    for p in points:
        by_decay.setdefault(p["train.weight_decay"], []).append(p[SPLIT_SEED])
    assert sorted(by_decay.values()) == [[0, 1, 2], [0, 1, 2]]  # every draw meets every split
    ranking = pd.DataFrame({"trial": [f"t{i}" for i in range(6)], "val_srcc": np.linspace(0.1, 0.6, 6),
                            "test_srcc": np.linspace(0.1, 0.6, 6),
                            **{f"hp.{k}": [p[k] for p in points] for k in points[0]}})
    groups = group_split_seeds(ranking, "val_srcc", "max")
    assert groups["splits"].tolist() == [3, 3] and groups["trials"].tolist() == [3, 3]


@pytest.mark.parametrize("search, study, fixed, message", [
    ({SPLIT_SEED: {"choice": [0, 1]}}, {"scheduler": {"type": "none"}}, {}, "search split seeds with grid"),
    ({SPLIT_SEED: {"grid": [0, 1]}}, {"scheduler": {"type": "asha"}}, {}, "ASHA would compare val SRCC"),
    ({SPLIT_SEED: {"grid": [0, 0]}}, {"scheduler": {"type": "none"}}, {}, "a split seed is listed twice"),
    ({SPLIT_SEED: {"grid": [0, 1]}}, {"scheduler": {"type": "none"}},
     {"data": {"dataset": "koniq10k", "root": "/nowhere", "train_patches": 24}}, "set data.split.official: false"),
])
def test_split_seed_searches_that_cannot_mean_anything_are_refused(tmp_path, search, study, fixed, message):
    with pytest.raises(UserError, match=message):
        load_space(str(_space(tmp_path, search, study, **fixed)))


def test_marginals_count_only_trials_where_the_key_has_an_effect():
    ranking = pd.DataFrame({"trial": list("abcdef"), "val_srcc": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                            "test_srcc": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                            "hp.loss.alpha": [1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
                            "hp.loss.ranking": ["patch", "image", "patch", "image", "patch", "image"],
                            "inert": ["", "", "loss.margin,loss.ranking", "loss.margin,loss.ranking", "", ""]})
    m = marginals(ranking, "val_srcc", "max")
    ranking_rows = m[m["hyperparameter"] == "loss.ranking"].set_index("value")
    assert ranking_rows["trials"].to_dict() == {"image": 2, "patch": 2}
    assert m[m["hyperparameter"] == "loss.alpha"]["trials"].sum() == 6


def test_marginals_keep_each_value_as_its_hyperparameter_has_it():
    """A seed of 1 beside an lr of 1e-4 in one column: the seed stays an int (shown "1", not "1.0000")."""
    from iqa_tune.reports.build import format_cell

    ranking = pd.DataFrame({"trial": list("abcd"), "val_srcc": [0.9, 0.8, 0.7, 0.6], "test_srcc": [0.9, 0.8, 0.7, 0.6],
                            "hp.train.lr": [1e-3, 1e-3, 1e-4, 1e-4], "hp.train.seed": [0, 1, 0, 1]})
    m = marginals(ranking, "val_srcc", "max")
    assert [format_cell(v) for v in m["value"]] == ["1.00e-04", "0.0010", "0", "1"]


def test_a_swin_at_another_patch_size_is_refused_by_validate(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": "swin_micro"}, "data": {"patch_size": 32},
                                    "search": {"loss.alpha": {"grid": [0.0]}}}))
    run = cli("validate", path)
    assert run.returncode == 2 and "data.patch_size (32) must equal the input size" in run.stderr


class _Trial(SimpleNamespace):
    """A trial as the scheduler sees it: an id, a status it may set, whether a checkpoint is being saved."""

    def set_status(self, status):
        self.status = status


class _Controller:
    """Stands in for Tune's controller where the scheduler calls it back: which trials it was told to stop."""

    def __init__(self, trials):
        self.trials, self.stopped = trials, []

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"


def test_synchronous_halving_keeps_the_best_that_can_still_train_and_takes_back_a_retried_trial(tmp_path):
    from iqa_tune.scheduler import SyncHalving

    halving = SyncHalving(tmp_path / "h.pickle", trials=4, max_t=4, grace_period=1, reduction_factor=2)
    halving.set_search_properties("val_srcc", "max")
    trials = [_Trial(trial_id=f"t{i}", status="RUNNING", is_saving=False) for i in range(4)]
    tune = _Controller(trials)
    for t in trials:
        halving.on_trial_add(tune, t)
    assert halving.rungs == [1, 2]
    # t0 scores best but stops itself by patience at the rung: it counts, and ends on its own
    assert halving.on_trial_result(tune, trials[0], {"epoch": 1, "val_srcc": 0.9, "patience_stop": True}) == "CONTINUE"
    assert halving.on_trial_result(tune, trials[1], {"epoch": 1, "val_srcc": 0.5}) == "PAUSE"
    trials[1].status = "PAUSED"
    assert halving.on_trial_result(tune, trials[2], {"epoch": 1, "val_srcc": math.nan}) == "PAUSE"
    trials[2].status = "PAUSED"
    assert halving.choose_trial_to_run(tune) is None  # both wait for t3
    # the rung is complete: 4 recorded, 2 go on, of those that can still train: t1 and t3 (undefined ranks last)
    assert halving.on_trial_result(tune, trials[3], {"epoch": 1, "val_srcc": 0.1}) == "CONTINUE"
    assert tune.stopped == ["t2"]
    assert halving.choose_trial_to_run(tune) is trials[1]
    trials[1].status = "RUNNING"
    assert halving.on_trial_result(tune, trials[1], {"epoch": 2, "val_srcc": 0.4}) == "PAUSE"
    trials[1].status = "PAUSED"
    # t3 crashes before rung 2 and Tune retries it, in Tune's order: ERROR, on_trial_error, PENDING, on_trial_add.
    # The rung still waits for it.
    trials[3].status = "ERROR"
    halving.on_trial_error(tune, trials[3])
    trials[3].status = "PENDING"
    halving.on_trial_add(tune, trials[3])
    assert tune.stopped == ["t2"] and halving.choose_trial_to_run(tune) is trials[3]
    trials[3].status = "RUNNING"
    assert halving.on_trial_result(tune, trials[3], {"epoch": 2, "val_srcc": 0.6}) == "CONTINUE"
    assert tune.stopped == ["t2", "t1"]
    assert halving.on_trial_result(tune, trials[3], {"epoch": 4, "val_srcc": 0.6}) == "STOP"  # max_t


def test_synchronous_halving_resumed_with_an_older_state_file_still_decides_the_rung(tmp_path):
    """The driver died after u1 errored but before the state file said so (a URI mirror can lag): restored, u1 is
    ended in Tune's record, which completes the rung the file left open; the waiting trials stay paused."""
    from iqa_tune.scheduler import SyncHalving

    def scheduler():
        h = SyncHalving(tmp_path / "h.pickle", trials=3, max_t=3, grace_period=1, reduction_factor=3)
        h.set_search_properties("val_srcc", "max")
        return h

    first = scheduler()
    trials = [_Trial(trial_id=f"u{i}", status="RUNNING", is_saving=False) for i in range(3)]
    for t in trials:
        first.on_trial_add(None, t)
    assert first.on_trial_result(None, trials[0], {"epoch": 1, "val_srcc": 0.2}) == "PAUSE"
    assert first.on_trial_result(None, trials[2], {"epoch": 1, "val_srcc": 0.7}) == "PAUSE"
    # a new driver: Tune restores u0 and u2 as pending, u1 as errored
    restored = [_Trial(trial_id=t.trial_id, status=s, is_saving=False)
                for t, s in zip(trials, ("PENDING", "ERROR", "PENDING"))]
    second, tune = scheduler(), _Controller(restored)
    for t in restored:
        second.on_trial_add(tune, t)
    assert [t.status for t in restored] == ["PAUSED", "ERROR", "PAUSED"]  # not started by Tune while they wait
    assert second.choose_trial_to_run(tune) is restored[2]  # 2 recorded: the best 1 goes on
    assert tune.stopped == ["u0"]
