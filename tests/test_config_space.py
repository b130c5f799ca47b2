"""Validation of run configs and space files: each class of mistake names its key path, exit code 2."""

import pytest
import yaml

from iqa_tune import __version__
from iqa_tune.config import build_run_config
from iqa_tune.errors import UserError
from iqa_tune.space import halving_rungs, load_space

from .conftest import ROOT, cli


@pytest.mark.parametrize("data, message", [
    ({"train": {"lrr": 1}}, "train.lrr: unknown key (did you mean 'lr'?)"),
    ({"train": {"lr": "fast"}}, "train.lr: expected float, got 'fast'"),
    ({"train": {"epochs": 0}}, "train.epochs: must be > 0"),
    ({"loss": {"alpha": -1}}, "loss.alpha: must be >= 0"),
    ({"loss": {"ranking": "images"}}, "did you mean 'image'"),
    ({"loss": {"alpha": 1, "ranking": "image"}}, "set train.patches_per_image >= 2"),
    ({"train": {"batch_size": 10, "patches_per_image": 4}}, "must be a multiple of train.patches_per_image"),
    ({"data": {"split": {"train": 0.9, "val": 0.0, "test": 0.1}}}, "never on test"),
])
def test_run_config_errors_name_the_key_path(data, message):
    with pytest.raises(UserError, match=None) as e:
        build_run_config(data, "cfg.yaml")
    assert message in str(e.value) and str(e.value).startswith("cfg.yaml: ")


def _space(tmp_path, search=None, study=None, **fixed):
    path = tmp_path / "space.yaml"
    body = {"data": {"dataset": "demo"}, "model": {"backbone": "resnet_micro"}, **fixed}
    body["data"].setdefault("patch_size", 64)  # validate reads the demo data: its images are 192x144
    if search is not None:
        body["search"] = search
    if study is not None:
        body["study"] = study
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("search, study, message", [
    ({"loss.alpha": {"choise": [0.5]}}, None, "(did you mean 'choice'?)"),
    ({"loss.alpha": {"uniform": [1.0, 0.5]}}, None, "search.loss.alpha.uniform: lo (1.0) must be < hi (0.5)"),
    ({"train.lr": {"loguniform": [0, 1e-3]}}, None, "loguniform needs lo > 0"),
    ({"loss.alpha": {"choice": [-0.5, 1.0]}}, None, "search.loss.alpha value -0.5: loss.alpha: must be >= 0"),
    ({"loss.alpha": {"choice": []}}, None, "expected a non-empty list"),
    ({"loss.alfa": {"choice": [1.0]}}, None, "search.loss.alfa: no key 'alfa' in the run schema (did you mean 'alpha'?)"),
    ({"loss.ranking": {"grid": ["patch", "image"]}, "loss.alpha": {"grid": [1.0]}}, None,
     "the combination loss.alpha=1.0, loss.ranking='image' is invalid"),
    (None, {"metric": "test_srcc"}, "test metrics are never used to select"),
    (None, {"scheduler": {"reduction_factor": 1}}, "study.scheduler.reduction_factor: must be > 1"),
    (None, {"num_sampels": 3}, "(did you mean 'num_samples'?)"),
    ({"loss.alpha": {"uniform": [0.0, 1.0]}}, {"search": {"type": "grid"}},
     "search.loss.alpha: study.search.type grid takes listed values (grid or choice), and uniform has none"),
    ({"loss.alpha": {"choice": [0.0, 1.0]}}, {"search": {"type": "grid"}, "num_samples": 3},
     "study.num_samples: a grid runs each combination once"),
    ({"loss.alpha": {"choice": [0.0, 1.0]}}, {"search": {"type": "random", "startup_trials": 3}},
     "study.search.startup_trials: only optuna has startup trials"),
    ({"loss.alpha": {"choice": [0.0, 1.0]}}, {"search": {"type": "tpe"}}, "study.search.type"),
    ({"loss.alpha": {"choice": [0.0, 1.0]}, "data.split.seed": {"grid": [0, 1]}},
     {"search": {"type": "optuna"}, "scheduler": {"type": "none"}},
     "search.data.split.seed: optuna proposes one configuration per trial"),
    (None, {"search": {"type": "optuna"}}, "study.search.type optuna: nothing to search"),
    ({"loss.alpha": {"uniform": [0.0, 1.0]}}, {"search": {"type": "optuna"}, "num_samples": 4,
                                               "scheduler": {"type": "halving"}},
     "study.scheduler.type: halving waits at each rung for every trial, but optuna proposes"),
    ({"loss.alpha": {"grid": [0.0, 0.5, 1.0]}}, {"scheduler": {"type": "halving"}, "max_concurrent": 2},
     "study.max_concurrent (2) is below the study's 3 trials"),
    ({"loss.alpha": {"grid": [0.0, 1.0]}, "data.split.seed": {"grid": [0, 1]}}, {"scheduler": {"type": "halving"}},
     "search.data.split.seed: synchronous halving would compare val SRCC measured on different val sets"),
    (None, {"scheduler": {"type": "halving", "grace_period": 20}}, "study.scheduler.grace_period (20) exceeds max_t"),
])
def test_space_errors(tmp_path, search, study, message):
    path = _space(tmp_path, search, study)
    with pytest.raises(UserError) as e:
        load_space(str(path))
    assert message in str(e.value)


@pytest.mark.parametrize("max_t, grace, factor, rungs", [
    (8, 1, 3, [1, 3]), (9, 1, 3, [1, 3]), (10, 1, 3, [1, 3, 9]), (81, 1, 3, [1, 3, 9, 27]), (4, 1, 2, [1, 2]),
    (16, 2, 2, [2, 4, 8]), (8, 1, 1.5, [1, 2, 3, 5]), (1, 1, 3, []),
])
def test_halving_rungs_lie_below_max_t_and_grow_by_the_factor(max_t, grace, factor, rungs):
    assert halving_rungs(max_t, grace, factor) == rungs


def test_validate_cli_counts_trials_and_rejects_bad_files(tmp_path):
    good = cli("validate", ROOT / "search_spaces/demo.yaml")
    assert good.returncode == 0, good.stderr
    assert "trials: 4 (1 samples x 4 grid points)" in good.stdout
    # alpha 0 makes the ranking granularity irrelevant: 1 of the 4 grid points is the same training as another
    folded = cli("validate", _space(tmp_path, {"loss.alpha": {"grid": [0.0, 1.0]},
                                               "loss.ranking": {"grid": ["patch", "image"]}},
                                    train={"patches_per_image": 2, "batch_size": 32},
                                    data={"dataset": "demo", "train_patches": 2}))
    assert folded.returncode == 0, folded.stderr
    assert "trials: 3 (1 samples x 3 grid points; 1 grid point folded into an identical one" in folded.stdout
    assert "loss.ranking: loss.alpha = 0 turns the ranking loss off" in folded.stdout
    bad = cli("validate", _space(tmp_path, {"loss.alpha": {"uniform": [2, 1]}}))
    assert bad.returncode == 2 and "lo (2) must be < hi (1)" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("validate", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_shipped_files_are_found_by_name_and_listed(tmp_path):
    by_name = cli("validate", "demo", cwd=tmp_path)  # outside the checkout: the shipped file, not ./demo
    assert by_name.returncode == 0 and str(ROOT / "search_spaces/demo.yaml") in by_name.stdout
    assert cli("validate", "koniq_swin.yaml", cwd=tmp_path).returncode == 0
    unknown = cli("validate", "koniq_swim", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "did you mean 'koniq_swin'" in unknown.stderr and "demo, koniq_swin, seed_alpha" in unknown.stderr
    train = cli("train", "demo", cwd=tmp_path)  # a space's name is not a run config's
    assert train.returncode == 2 and "shipped configs: demo_train" in train.stderr
    listing = cli("spaces", cwd=tmp_path).stdout.splitlines()
    assert any(line.split()[0] == "demo" and "demo data" in line for line in listing[1:])
    assert any(line.split()[0] == "demo_train" for line in listing)
    (tmp_path / "demo").write_text("not: [a space")  # an existing path is always that path
    assert "not valid YAML" in cli("validate", "demo", cwd=tmp_path).stderr


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"iqa-tune {__version__}"


@pytest.mark.parametrize("name", ["demo.yaml", "seed_alpha.yaml", "koniq_swin.yaml", "seed_remedies.yaml"])
def test_shipped_spaces_are_valid(name):
    space = load_space(str(ROOT / "search_spaces" / name))
    assert space.num_trials >= 2
    paths = {d.path for d in space.dims}
    # each asks the seed's question: the ranking loss searched, or fixed at the seed's alpha with its remedies
    assert "loss.alpha" in paths or (space.base.loss.alpha > 0 and paths)


def test_grid_search_takes_choice_values_as_axes(tmp_path):
    from iqa_tune.space import expand

    search = {"loss.alpha": {"choice": [0.0, 0.5, 1.0]}, "train.lr": {"choice": [1.0e-3, 1.0e-4]}}
    grid = load_space(str(_space(tmp_path, search, {"search": {"type": "grid"}})))
    points = expand(grid).points
    assert len(points) == 6 and len({tuple(sorted(p.items())) for p in points}) == 6
    random = load_space(str(_space(tmp_path, search, {"num_samples": 3})))
    assert len(expand(random).points) <= 3  # random: 3 draws of the two choices (repeats run once)


def test_optuna_proposals_follow_the_space_and_skip_inert_keys(tmp_path):
    """Optuna's define-by-run space, asked directly (no Ray): every value is one the random search could draw,
    and the ranking granularity is asked for exactly when alpha makes it matter."""
    import optuna

    from iqa_tune.space import ProposalSpace

    search = {"loss.ranking": {"choice": ["patch", "image"]}, "loss.alpha": {"choice": [0.0, 1.0]},
              "train.lr": {"loguniform": [1.0e-5, 1.0e-3]}, "model.dropout": {"quniform": [0.0, 0.5, 0.1]},
              "data.test_patches": {"randint": [2, 5]}}
    space = load_space(str(_space(tmp_path, search, {"search": {"type": "optuna"}, "num_samples": 20},
                                  train={"patches_per_image": 2}, data={"dataset": "demo", "train_patches": 2})))
    assert space.num_trials == 20 and space.startup_trials == 6
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0,
                                                                                         n_startup_trials=4))
    propose = ProposalSpace(space)
    seen_alpha = set()
    for _ in range(20):
        trial = study.ask()
        propose(trial)
        p = trial.params
        seen_alpha.add(p["loss.alpha"])
        assert ("loss.ranking" in p) == (p["loss.alpha"] != 0.0)
        assert 1.0e-5 <= p["train.lr"] <= 1.0e-3
        assert p["data.test_patches"] in (2, 3, 4)  # randint: hi exclusive, as in the random search
        assert abs(p["model.dropout"] * 10 - round(p["model.dropout"] * 10)) < 1e-9
        study.tell(trial, -abs(p["train.lr"] - 1.0e-4) + (0.01 if p["loss.alpha"] else 0.0))
    assert seen_alpha == {0.0, 1.0}
