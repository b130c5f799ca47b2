"""Validation of run configs and space files: each class of mistake names its key path, exit code 2."""

import pytest
import yaml

from iqa_tune import __version__
from iqa_tune.config import build_run_config
from iqa_tune.errors import UserError
from iqa_tune.space import load_space

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
])
def test_space_errors(tmp_path, search, study, message):
    path = _space(tmp_path, search, study)
    with pytest.raises(UserError) as e:
        load_space(str(path))
    assert message in str(e.value)


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
    assert "loss.alpha" in paths
