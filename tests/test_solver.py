"""The solver alone (no Ray): resumable, early stopping on val, both parameter groups train, the lr rules."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from iqa_tune.config import TrainConfig, build_run_config
from iqa_tune.prepare import prepare_data
from iqa_tune.solver import Solver, lr_lambda

SMALL = {"data": {"patch_size": 32, "train_patches": 2, "test_patches": 2, "limit": 186,
                  "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
         "model": {"backbone": "resnet_micro"},
         "train": {"lr": 1.0e-3, "epochs": 2, "batch_size": 16, "threads": 1, "schedule": "step", "step_size": 1}}


@pytest.fixture(scope="module")
def data():
    return prepare_data(build_run_config(SMALL), progress=False)


def test_resumed_run_equals_an_uninterrupted_one(data):
    cfg = build_run_config(SMALL)
    straight = [m for m, _ in Solver(cfg, data).fit()]
    first = Solver(cfg, data)
    m1, _ = first.run_epoch()
    state = first.state_dict()
    second = Solver(cfg, data)
    with torch.no_grad():  # a different starting point: only what load_state_dict restores can match the run
        for p in second.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    second.load_state_dict(state)
    m2, _ = second.run_epoch()
    for key in ("train_loss", "val_srcc", "test_srcc", "lr_backbone"):
        assert m1[key] == pytest.approx(straight[0][key])
        assert m2[key] == pytest.approx(straight[1][key], rel=1e-5)


def test_hyper_network_keeps_training_after_epoch_one(data):
    # the reference rebuilds Adam each epoch from an exhausted filter: its hyper network freezes after epoch 1
    solver = Solver(build_run_config(SMALL), data)
    solver.run_epoch()
    before = [p.detach().clone() for p in solver.model.hyper.parameters()]
    solver.run_epoch()
    moved = [not torch.equal(a, b) for a, b in zip(before, solver.model.hyper.parameters())]
    assert all(moved)
    assert {g["name"] for g in solver.optimizer.param_groups} == {"backbone", "hyper"}


def test_the_solver_flushes_subnormal_floats_in_its_process(data):
    """Subnormal floats cost 2-3x on x86 CPUs (``bench --only denormal``); the solver flushes them to zero. A
    product below float32's smallest normal value is computed as a subnormal by default and as 0 once flushed."""
    tiny = torch.finfo(torch.float32).tiny
    torch.set_flush_denormal(False)
    assert (torch.tensor([tiny]) * 0.5).item() > 0
    Solver(build_run_config(SMALL), data)
    assert (torch.tensor([tiny]) * 0.5).item() == 0.0


def test_patience_stops_on_val_and_flags_it(data):
    cfg = build_run_config({**SMALL, "train": {**SMALL["train"], "epochs": 6, "patience": 1, "lr": 1.0e-9}})
    rows = [m for m, _ in Solver(cfg, data).fit()]
    assert len(rows) < 6  # a frozen model does not improve on val
    assert rows[-1]["patience_stop"] == 1.0 and all(r["patience_stop"] == 0.0 for r in rows[:-1])


def test_step_and_cosine_rules():
    step = lr_lambda(TrainConfig(schedule="step", epochs=16), iters_per_epoch=10)
    assert [step(e * 10) for e in (0, 5, 6, 11, 12)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])  # lr / 10^(e // 6)
    cos = lr_lambda(TrainConfig(schedule="cosine", epochs=4, warmup_epochs=1, cosine_floor=0.1), iters_per_epoch=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(39) == pytest.approx(0.1, abs=0.01)
    assert all(cos(i) >= cos(i + 1) for i in range(10, 39))


def test_warmup_on_both_schedules_never_above_one():
    step = lr_lambda(TrainConfig(schedule="step", epochs=16, step_size=2, warmup_epochs=1), iters_per_epoch=10)
    assert [step(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear ramp over epoch 1
    assert [step(e * 10) for e in (1, 2, 3, 4, 15)] == pytest.approx([1, 0.1, 0.1, 0.01, 1e-7])  # lr / 10^(e // 2)
    for schedule in ("step", "cosine"):
        # 3.5 warmup iterations: (it + 1) / 3.5 is 1.14 at the last one
        rule = lr_lambda(TrainConfig(schedule=schedule, epochs=4, warmup_epochs=0.35), iters_per_epoch=10)
        values = [rule(i) for i in range(40)]
        assert max(values) == pytest.approx(1.0) and max(values) <= 1.0
        assert values[:4] == pytest.approx([1 / 3.5, 2 / 3.5, 3 / 3.5, 1.0])
    cos = lr_lambda(TrainConfig(schedule="cosine", epochs=4, warmup_epochs=0.35, cosine_floor=0.2), iters_per_epoch=10)
    assert cos(39) == pytest.approx(0.2, abs=0.01) and cos(10**6) == pytest.approx(0.2)


def test_bf16_evaluation_scores_are_not_rounded(data):
    # bf16 rounds scores in [64, 128) to steps of 0.5; per-image means of 2 crops then land on a 0.25 grid
    solver = Solver(build_run_config({**SMALL, "train": {**SMALL["train"], "precision": "bf16", "device": "cpu"}}),
                    data)
    bf16 = solver.autocast
    solver.autocast = nullcontext
    with torch.no_grad():
        solver.model.hyper.b5.bias += 70 - solver.evaluate("val")[1].mean()
    _, fp32 = solver.evaluate("val")
    solver.autocast = bf16
    _, mixed = solver.evaluate("val")
    assert 64 <= fp32.min() and fp32.max() < 128 and len(np.unique(fp32)) == len(fp32)
    assert len(np.unique(mixed)) >= 0.75 * len(mixed)
    assert np.abs(mixed - fp32).max() < 1.0


def test_gpu_path_options_run_on_cpu_and_throughput_is_measured(tmp_path):
    from iqa_tune.bench import train_throughput

    from .conftest import koniq_like_csv

    root = koniq_like_csv(tmp_path, 10)  # split 4/3/3: val and test need 3 images to be scored
    cfg = {"data": {"dataset": "csv", "root": str(root), "csv_file": "labels.csv", "columns": {"ref": "ref"},
                    "resize": [128, 96], "patch_size": 32, "train_patches": 8, "test_patches": 1,
                    "split": {"train": 0.4, "val": 0.3, "test": 0.3}},
           "model": {"backbone": "resnet_micro"},
           "train": {"batch_size": 8, "epochs": 1, "threads": 1, "precision": "bf16", "channels_last": True}}
    out = train_throughput(cfg, batches=2, warmup=1)
    # 2 timed batches of 8 patches: a rate that counts them (a broken count or clock gives 0, inf or nan)
    assert 0 < out["patches_per_s"] < 1e5
    assert out["batches_timed"] == 2


def test_reported_names_follow_the_selection_metric(data):
    cfg = build_run_config({**SMALL, "train": {**SMALL["train"], "epochs": 1}})
    metrics, _ = Solver(cfg, data, select="val_krcc").run_epoch()
    assert metrics["best_val_krcc"] == metrics["val_krcc"] and metrics["best_epoch"] == 1
    assert "best_val_srcc" not in metrics and metrics["test_srcc_at_best"] == metrics["test_srcc"]


def _adam_steps(solver) -> int:
    return max(int(s["step"]) for s in solver.optimizer.state.values())


@pytest.mark.parametrize("compat", [True, False])
def test_reference_compat_freezes_the_hyper_network_after_epoch_one_and_restarts_adam(data, compat):
    cfg = build_run_config({**SMALL, "train": {**SMALL["train"], "epochs": 3, "reference_compat": compat}})
    solver = Solver(cfg, data)
    per_epoch = len(solver.train_patches)
    hyper, backbone = [], []
    for epoch in range(3):
        solver.run_epoch()
        hyper.append([p.detach().clone() for p in solver.model.hyper.parameters()])
        backbone.append([p.detach().clone() for p in solver.model.backbone.parameters()])
        # the reference starts every epoch with a new Adam: its step count never exceeds one epoch's batches
        assert _adam_steps(solver) == (per_epoch if compat else per_epoch * (epoch + 1))
    hyper_moved = [any(not torch.equal(a, b) for a, b in zip(hyper[e], hyper[e + 1])) for e in range(2)]
    backbone_moved = [any(not torch.equal(a, b) for a, b in zip(backbone[e], backbone[e + 1])) for e in range(2)]
    assert all(backbone_moved)
    assert hyper_moved == ([False, False] if compat else [True, True])  # bit-identical from epoch 2 on
    if compat:
        assert [g["name"] for g in solver.optimizer.param_groups] == ["backbone"]
        assert solver.optimizer.param_groups[0]["lr"] == cfg.train.lr  # constant: never decayed
