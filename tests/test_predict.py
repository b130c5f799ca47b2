"""Scoring with a trained model: ``iqa-tune predict``, ``iqa_tune.load`` and ``iqa-tune export``, on a real tiny
study (local Ray) and a real ``iqa-tune train`` run, as a user runs them."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from iqa_tune import records

from .conftest import cli, write_image
from .test_study import TINY, TINY_RUN, write_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study of two trials (alpha 0 and 1, 2 epochs each, no scheduler), with its report."""
    tmp = tmp_path_factory.mktemp("predict-study")
    space = write_space(tmp, {"loss.alpha": {"grid": [0.0, 1.0]}}, {"name": "p", "scheduler": {"type": "none"}},
                        train={**TINY["train"], "epochs": 2})
    run = cli("run", space, "--no-dashboard")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp / "results/p"


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """An ``iqa-tune train`` run of the tiny configuration (2 epochs)."""
    tmp = tmp_path_factory.mktemp("predict-train")
    cfg = json.loads(json.dumps(TINY_RUN))
    cfg["train"]["epochs"] = 2
    cfg.update(name="tiny", out_dir=str(tmp / "runs"))
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = cli("train", tmp / "tiny.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    return tmp / "runs/tiny"


def data_root() -> Path:
    from iqa_tune.config import DataConfig
    from iqa_tune.datasets import dataset_root

    return dataset_root(DataConfig(dataset="demo"))


def own_test_set(run_dir: Path, out: Path) -> tuple[Path, pd.DataFrame]:
    """A CSV of a run's test images (absolute paths) with their labels, and its saved per-image predictions."""
    preds = records.load_predictions(records.state_file(run_dir).parent / records.PREDICTIONS_FILE)
    saved = pd.DataFrame({"path": [str(data_root() / p) for p in preds[0]], "score": preds[1], "pred": preds[2]})
    saved[["path", "score"]].to_csv(out, index=False)
    return out, saved


def test_predict_on_the_winners_own_test_images_reproduces_the_report(study, tmp_path):
    ranking = pd.read_csv(study / "report/ranking.csv")
    top = ranking.iloc[0]
    csv, saved = own_test_set(study / top["trial"], tmp_path / "test.csv")
    run = cli("predict", study, csv, "--out", tmp_path / "scores.csv")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"trial {top['trial']} (rank 1 by val_srcc)" in run.stderr  # the report's winner, at its best epoch
    assert f"epoch {int(top['best_epoch'])} " in run.stderr
    got = pd.read_csv(tmp_path / "scores.csv")
    assert got["path"].tolist() == saved["path"].tolist()
    # the study's own per-image test predictions, to the CSV's 6 significant digits
    assert np.allclose(got["score"], saved["pred"], rtol=2e-6, atol=1e-4)
    assert (got["crop_sd"] >= 0).all() and got["crop_sd"].gt(0).any()
    found = json.loads((tmp_path / "scores.metrics.json").read_text())
    assert round(found["srcc"], 4) == round(top["test_srcc"], 4)  # the reported test SRCC
    assert found["srcc_ci_lo"] <= found["srcc"] <= found["srcc_ci_hi"]
    assert found["model"]["trial"] == top["trial"] and found["images"] == len(saved)
    assert f"SRCC {top['test_srcc']:.4f}" in run.stderr


def test_another_trial_and_a_storage_uri_give_that_trials_own_predictions(study, tmp_path, monkeypatch):
    import iqa_tune

    ranking = pd.read_csv(study / "report/ranking.csv")
    second = ranking.iloc[1]["trial"]
    _, saved = own_test_set(study / second, tmp_path / "test.csv")
    monkeypatch.setenv("IQA_TUNE_MIRROR", str(tmp_path / "mirror"))
    # the study read through a URI: its records come through the mirror, and this trial's model state on demand
    trial_id = records.read_results(study / second)[-1]["trial_id"]  # Tune's id, as the live table shows it
    scorer = iqa_tune.load(f"file://{study}", trial=trial_id)
    assert scorer.origin.trial == second and scorer.origin.rank == 2
    assert str(scorer.origin.checkpoint).startswith(str(tmp_path / "mirror"))
    assert np.allclose(scorer(saved["path"].tolist()), saved["pred"], rtol=1e-5, atol=1e-4)


def test_load_scores_paths_pil_images_and_arrays_alike(train_run):
    from PIL import Image

    import iqa_tune

    scorer = iqa_tune.load(train_run)
    preds = records.load_predictions(train_run / records.PREDICTIONS_FILE)
    path = data_root() / preds[0][0]
    one = scorer(path)
    assert isinstance(one, float) and one == pytest.approx(preds[2][0], rel=1e-5)
    with Image.open(path) as im:
        assert scorer(im) == pytest.approx(one, rel=1e-6)  # a PIL image opened from a file: its path's crops
        pixels = np.asarray(im.convert("RGB"))
    both = scorer([str(path), pixels])
    assert both.shape == (2,) and both[0] == pytest.approx(one, rel=1e-6)
    assert scorer(pixels) == both[1]  # an array's crops are seeded by its pixels: the same every call
    assert scorer.config.data.patch_size == TINY["data"]["patch_size"]
    assert scorer.label_scale["dataset"] == "demo" and scorer.origin.run_dir == train_run
    assert scorer.epoch == scorer.best_epoch == scorer.reported["epoch"]


def isolated_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python with this environment's packages but without iqa_tune: -I (no PYTHONPATH, user site or script
    folder) and -S (no .pth files, so the editable install's finder is not there), site-packages added back."""
    purelib = sysconfig.get_paths()["purelib"]
    guard = (f"import sys; sys.path.append({purelib!r})\n"
             "import importlib.util\n"
             "assert importlib.util.find_spec('iqa_tune') is None, 'iqa_tune is importable'\n")
    return subprocess.run([sys.executable, "-I", "-S", "-c", guard + script], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_export_loads_in_plain_torch_and_scores_as_predict(train_run, tmp_path):
    import iqa_tune

    out = tmp_path / "model.pt2"
    run = cli("export", train_run, out)
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format"] == "torch.export" and meta["preprocessing"]["patch_size"] == TINY["data"]["patch_size"]
    assert meta["epoch"] == meta["best_epoch"] and meta["label_scale"]["dataset"] == "demo"
    scorer = iqa_tune.load(train_run)
    paths = [data_root() / p for p in records.load_predictions(train_run / records.PREDICTIONS_FILE)[0][:3]]
    crops = np.concatenate([scorer.crops(p) for p in paths])
    np.save(tmp_path / "crops.npy", crops)
    script = ("import numpy, torch\n"
              "model = torch.export.load('model.pt2').module()\n"
              "with torch.no_grad():\n"
              "    out = model(torch.from_numpy(numpy.load('crops.npy')))\n"
              "numpy.save('scores.npy', out.numpy())\n")
    got = isolated_python(script, tmp_path)
    assert got.returncode == 0, got.stderr[-3000:]
    crop_scores = np.load(tmp_path / "scores.npy")
    expected = scorer.crop_scores([scorer.read(p) for p in paths], [scorer.key(p) for p in paths])
    assert np.allclose(crop_scores, expected.reshape(-1), rtol=1e-5, atol=1e-4)
    per_image = crop_scores.reshape(len(paths), -1).mean(axis=1)
    assert np.allclose(per_image, scorer(paths), rtol=1e-5, atol=1e-4)
    # the guard itself: in that interpreter, importing iqa_tune fails
    blocked = isolated_python("import iqa_tune\n", tmp_path)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr


def test_export_falls_back_to_torchscript(train_run, tmp_path, monkeypatch):
    import torch

    import iqa_tune
    from iqa_tune import export

    def refuse(*a, **k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.export, "export", refuse)
    scorer = iqa_tune.load(train_run)
    assert export.export_scorer(scorer, tmp_path / "m.pt2") == "torchscript"
    path = data_root() / records.load_predictions(train_run / records.PREDICTIONS_FILE)[0][0]
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "m.pt2"))(torch.from_numpy(scorer.crops(path))).mean()
    assert float(got) == pytest.approx(scorer(path), rel=1e-5)


def test_bad_images_are_listed_and_skipped_and_none_scored_exits_2(train_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = data_root() / records.load_predictions(train_run / records.PREDICTIONS_FILE)[0][0]
    shutil.copy(good, photos / "good.png")
    write_image(tmp_path / "full.png", 64, 48)
    (photos / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    (photos / "not_an_image.jpg").write_text("hello")
    write_image(photos / "tiny.png", 16, 16)  # smaller than the 32 px patch
    run = cli("predict", train_run, photos, tmp_path / "missing.jpg", "--out", tmp_path / "s.csv")
    assert run.returncode == 1, run.stderr[-3000:]
    for name in ("truncated.png", "not_an_image.jpg", "tiny.png", "missing.jpg"):
        assert f"skipped: {tmp_path / 'photos' if name != 'missing.jpg' else tmp_path}/{name}" in run.stderr
    assert "Traceback" not in run.stderr
    got = pd.read_csv(tmp_path / "s.csv")
    assert got["path"].tolist() == [str(photos / "good.png")] and np.isfinite(got["score"]).all()
    assert "scored 1 of 5 images" in run.stderr
    none = cli("predict", train_run, photos / "truncated.png", tmp_path / "missing.jpg", "--out", tmp_path / "n.csv")
    assert none.returncode == 2 and "skipped" in none.stderr and not (tmp_path / "n.csv").exists()


def test_bad_sources_exit_2_with_one_line_naming_them(train_run, tmp_path):
    import torch

    image = data_root() / records.load_predictions(train_run / records.PREDICTIONS_FILE)[0][0]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(train_run / records.CONFIG_FILE, other / records.CONFIG_FILE)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other / "timm.pth")  # another format, config beside it
    (other / "text.pt").write_text("not a checkpoint")
    unfinished = tmp_path / "unfinished"
    (unfinished / "t_00000").mkdir(parents=True)
    (unfinished / "t_00000" / records.PARAMS_FILE).write_text("{}")
    records.write_trial_status(unfinished, {"t_00000": "ERROR"})
    cases = {tmp_path / "nowhere": "no such experiment, run folder or checkpoint file",
             tmp_path: "not an experiment, a trial or run folder",
             other / "timm.pth": "a checkpoint of another format",
             other / "text.pt": "not an iqa-tune checkpoint",
             unfinished: "no finished trial"}
    for source, words in cases.items():
        run = cli("predict", source, image)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, (source, run.stderr[-2000:])
        assert str(source) in lines[0] and words in lines[0], (source, lines[0])
    trial = cli("predict", train_run, image, "--trial", "x")
    assert trial.returncode == 2 and "is not an experiment" in trial.stderr


def test_nothing_is_overwritten_without_force(train_run, tmp_path):
    image = data_root() / records.load_predictions(train_run / records.PREDICTIONS_FILE)[0][0]
    out = tmp_path / "scores.csv"
    out.write_text("mine\n")
    run = cli("predict", train_run, image, "--out", out)
    assert run.returncode == 2 and "--force" in run.stderr and out.read_text() == "mine\n"
    model = tmp_path / "m.pt2"
    model.write_text("mine\n")
    run = cli("export", train_run, model)
    assert run.returncode == 2 and "--force" in run.stderr and model.read_text() == "mine\n"
    run = cli("predict", train_run, image, "--out", out, "--force")
    assert run.returncode == 0 and pd.read_csv(out)["path"].tolist() == [str(image)]


def test_decoding_ahead_keeps_every_image_in_order():
    from iqa_tune.errors import UserError
    from iqa_tune.predict import Item, _decoded

    def read(path):
        if path.name == "bad":
            raise UserError(f"{path}: unreadable")
        return np.full((1, 1, 3), int(path.name), np.uint8)

    items = [Item(Path(str(i) if i != 4 else "bad"), str(i), str(i)) for i in range(10)]
    got = list(_decoded(items, read, workers=2, ahead=3))
    assert [it.shown for it, _ in got] == [str(i) for i in range(10)]
    assert got[4][1] == "bad: unreadable" and [int(a[0, 0, 0]) for i, (_, a) in enumerate(got) if i != 4] == \
        [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_import_iqa_tune_stays_light():
    code = "import sys, iqa_tune; assert callable(iqa_tune.load); print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
