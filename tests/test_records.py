"""The one-way house: typed configs derived by pure functions, the best-epoch rule, metric names that follow the
study metric, the live table's width, and the scheduler's up-front checks. No training."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from iqa_tune import records
from iqa_tune.config import RunConfig, build_run_config, resolve_paths, with_values
from iqa_tune.errors import UserError
from iqa_tune.live import TrialRow, render
from iqa_tune.space import PRIMITIVES, load_space

from .conftest import ROOT, cli


def test_with_values_returns_a_new_checked_config_and_leaves_the_base_alone():
    base = build_run_config({"loss": {"alpha": 1.0}, "model": {"backbone": "resnet_micro"}})
    trial = with_values(base, {"loss.alpha": 0, "model.backbone_kwargs.layers": [1, 1, 1, 1]})
    assert trial.loss.alpha == 0.0 and isinstance(trial.loss.alpha, float)  # typed like its field
    assert trial.model.backbone_kwargs == {"layers": [1, 1, 1, 1]}
    assert base.loss.alpha == 1.0 and base.model.backbone_kwargs == {}
    with pytest.raises(UserError, match="loss.alpha: must be >= 0"):
        with_values(base, {"loss.alpha": -1.0})
    with pytest.raises(UserError, match="did you mean 'alpha'"):
        with_values(base, {"loss.alfa": 1.0})


def test_resolve_paths_is_pure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_run_config({"data": {"dataset": "csv", "root": "data", "csv_file": "l.csv"},
                            "model": {"backbone": "resnet_micro", "checkpoint": "w.pth"}})
    resolved = resolve_paths(cfg)
    assert resolved.data.root == str(tmp_path / "data") and resolved.model.checkpoint == str(tmp_path / "w.pth")
    assert Path(resolved.data.cache_dir).is_absolute()
    assert cfg.data.root == "data" and cfg.model.checkpoint == "w.pth" and cfg.data.cache_dir is None


def test_every_primitive_names_a_tune_sampler():
    from ray import tune

    for p in PRIMITIVES.values():
        assert callable(getattr(tune, p.sampler))


def test_best_epoch_rule_counts_nan_as_worst_in_both_modes():
    assert records.best_index([math.nan, -0.2, -0.1, -0.1], "max") == 2  # first best; NaN never wins
    assert records.best_index([math.nan, 3.0, 2.0], "min") == 2
    assert records.best_index([math.nan, math.nan], "max") == 0
    tracker = records.BestEpoch("val_srcc", "max")
    assert tracker.update({"epoch": 1, "val_srcc": math.nan, "test_srcc": 0.9})["improved"]
    out = tracker.update({"epoch": 2, "val_srcc": -0.5, "test_srcc": 0.1})
    assert out["improved"] and out["best_epoch"] == 2 and out["test_srcc_at_best"] == 0.1


def test_metric_names_follow_the_study_metric():
    tracker = records.BestEpoch("val_krcc", "max")
    out = tracker.update({"epoch": 1, "val_krcc": 0.4, "val_srcc": 0.5, "test_srcc": 0.3, "test_plcc": 0.35})
    assert out == {"improved": True, "best_epoch": 1, "best_val_krcc": 0.4, "test_srcc_at_best": 0.3,
                   "test_plcc_at_best": 0.35}


def _rows(n_dims: int) -> tuple[list[TrialRow], list[str]]:
    dims = [f"section.long_hyperparameter_name_{i}" for i in range(n_dims)]
    rows = [TrialRow(f"abc_{i:05d}", "cut at a rung" if i % 2 else "running",
                     {"epoch": 3, "val_krcc": 0.4123, "best_val_krcc": 0.5234, "test_srcc_at_best": math.nan},
                     {d: 1.25e-4 * (i + 1) for d in dims}) for i in range(6)]
    return rows, dims


@pytest.mark.parametrize("width", [80, 120])
def test_live_table_fits_the_terminal_and_shows_the_study_metric(width):
    rows, dims = _rows(8)
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(render(rows, "val_krcc", dims, "study s: 6 trials", width))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    assert "best val_krcc" in text and "0.5234" in text and "n/a" in text and "│ cut " in text
    assert "…" not in text  # no column squeezed into an ellipsis


def test_scheduler_arguments_are_checked_up_front(tmp_path):
    from iqa_tune.scheduler import PersistentASHA

    with pytest.raises(UserError, match=r"grace_period \(5\) exceeds max_t \(3\)"):
        PersistentASHA(tmp_path / "s.pkl", time_attr="epoch", max_t=3, grace_period=5, reduction_factor=3)
    with pytest.raises(UserError, match="reduction_factor: must be > 1"):
        PersistentASHA(tmp_path / "s.pkl", time_attr="epoch", max_t=3, grace_period=1, reduction_factor=1)


def test_validate_catches_what_the_scheduler_would_refuse(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model: {backbone: resnet_micro}\ntrain: {epochs: 2}\nsearch: {loss.alpha: {grid: [0.0]}}\n"
                     "study: {scheduler: {type: asha, grace_period: 3}}\n")
    run = cli("validate", space)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "grace_period (3) exceeds max_t (2)" in run.stderr


def test_shipped_space_config_is_typed_once():
    space = load_space(str(ROOT / "search_spaces/demo.yaml"))
    assert isinstance(space.base, RunConfig)
    assert dataclasses.asdict(space.base)["model"]["backbone"] == "efficientnet_lite0"
    assert space.base.model.freeze_stages == 0 and space.base.loss.ranking == "patch"  # the trap trains every stage


def test_versions_name_the_code_and_the_libraries(monkeypatch, tmp_path):
    from iqa_tune import versions

    got = versions.collect()
    assert {"iqa_tune", "torch", "timm", "ray", "numpy", "python", "gpu"} <= set(got)
    assert got["torch"] and got["numpy"]
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert len(got["git_commit"]) == 40 and isinstance(got["git_dirty"], bool)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on this machine: said so, not an error
    assert versions.collect()["git"] == "unknown: git is not installed"
    monkeypatch.setattr(versions, "CHECKOUT", str(tmp_path))  # an installed package: no checkout to ask
    assert versions.collect()["git"].startswith("not a git checkout")
    assert "torch " + got["torch"] in versions.summary(got)
    from iqa_tune.patches import crop_kernel  # the recorded kernel is the one crops run with

    assert got["crop_kernel"] == crop_kernel() and versions.summary(got).endswith(f"crops {crop_kernel()}")


def test_recorded_status_decides_how_a_trial_ended(tmp_path):
    exp = tmp_path / "exp"
    rows = {"epoch": 1, "val_srcc": 0.5, "max_epochs": 3}
    for name in ("retried", "cut", "stopped"):
        (exp / name).mkdir(parents=True)
        (exp / name / records.PARAMS_FILE).write_text('{"loss.alpha": 1.0}')
        (exp / name / records.RESULT_FILE).write_text(json.dumps(rows) + "\n")
    # Tune keeps error.txt of a retried trial that then finished: the recorded status wins
    (exp / "retried" / records.ERROR_FILE).write_text("Traceback...\nRuntimeError: first try")
    records.write_trial_status(exp, {"retried": "TERMINATED", "cut": "TERMINATED", "stopped": "INTERRUPTED"})
    _, trials = records.load_experiment(exp)
    ended = dict(zip(trials["trial"], trials["ended"]))
    assert ended == {"retried": "cut at a rung", "cut": "cut at a rung", "stopped": "interrupted"}


def test_asha_horizon_covers_a_searched_epoch_count(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("data: {patch_size: 64}\nmodel: {backbone: resnet_micro}\ntrain: {epochs: 4}\n"
                    "search: {train.epochs: {grid: [4, 12]}}\n")
    assert load_space(str(path)).max_epochs == 12


def test_quniform_is_validated_at_its_rounded_bounds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("model: {backbone: resnet_micro}\nsearch: {train.lr: {quniform: [1.0e-5, 1.0e-3, 1.0e-4]}}\n")
    with pytest.raises(UserError, match=r"search.train.lr value 0.0: train.lr: must be > 0"):
        load_space(str(path))


def test_an_unseeded_search_draws_its_seed_once(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("data: {patch_size: 64}\nmodel: {backbone: resnet_micro}\n"
                    "search: {model.dropout: {choice: [0.0, 0.1, 0.2]}}\n"
                    "study: {num_samples: 6, search_seed: null}\n")
    space = load_space(str(path))
    assert isinstance(space.study.search_seed, int)
    from iqa_tune.space import expand

    assert expand(space).points == expand(space).points  # the count printed is the trials run


def test_live_table_ends_its_line_in_a_log(capsys):
    """Piped into a log (make demo | tee), the last table must end its line: the ranking's title follows it."""
    from iqa_tune.live import LiveTable

    rows, dims = _rows(2)
    table = LiveTable("val_krcc", dims, "s")
    table.update(rows, force=True)
    table.stop()
    print("s: ranked by val_krcc")
    out = capsys.readouterr().out
    assert "┘\ns: ranked by val_krcc" in out


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_ranking_fits_without_squeezing_figures(width):
    import pandas as pd

    from iqa_tune.reports.build import terminal_view, to_rich

    n = 4
    ranking = pd.DataFrame({"rank": range(1, n + 1), "trial": [f"abc_{i:05d}" for i in range(n)],
                            "ended": ["completed"] * n, "best_epoch": [3] * n, "val_srcc": [-0.0240] * n,
                            "test_srcc": [0.6935] * n, "test_srcc_ci_lo": [0.613] * n,
                            "test_srcc_ci_hi": [0.761] * n, "vs_top": ["not significant"] * n,
                            "hp.loss.alpha": [1.0] * n, "hp.model.pretrained": [True] * n,
                            "hp.train.weight_decay": [1.25e-4] * n})
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(to_rich(terminal_view(ranking, "val_srcc", width), None, "s: ranked by val_srcc"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text and "-0.0240" in text and "0.613..0.761" in text
    assert ("weight_decay" in text) == (width == 200)  # left out where it does not fit, shown where it does
