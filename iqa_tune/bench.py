"""``iqa-tune bench``: side-by-side measurements in one run on one machine, printed as ratios and written as JSON.

Sections: ``data`` (patch delivery vs the reference's decode-per-patch pattern, the C crop kernel vs numpy, and vs a
plain numpy copy), ``tune`` (per-epoch time inside Tune vs the bare solver, Ray start to first report), ``asha``
(trial-epochs and wall time of a 12-point grid with and without ASHA, and whether the grid's best survives),
``memory`` (peak RSS of the driver and of trial workers with 1 and 2 concurrent trials), ``search`` (TPE against
random search at the same budget, over three search seeds), ``eval`` (the evaluation share of an epoch without and
with the diagnosis signals' extra sets), ``gpu`` (swin_tiny through the solver on a CUDA device), ``predict``
(images/s of ``iqa-tune predict`` against a plain decode-and-score loop, one image at a time), ``denormal``
(training epochs with subnormal floats computed against flushed to zero, the solver's setting);
on request only, ``koniq`` (10,000 release-sized JPEGs: cache build, decoding threads, cache size, PSS of four
trials sharing the cache) and ``horizon`` (ASHA against the full grid, 12 points x 8 epochs of the pretrained demo
backbone).
Benchmarks, not tests: numbers vary with the machine and its load, so every figure is compared with its baseline
measured in the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from . import records
from .cache import build_or_open, cache_key
from .cli import BENCH_SECTIONS as SECTIONS
from .config import DataConfig, build_run_config, cache_root
from .datasets import Catalog
from .patches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, TrainPatches, crop_kernel, numpy_crops


def _machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------------------------------------------
# data path


def _koniq_like(folder: Path, n: int) -> Catalog:
    """n 1024x768 JPEGs (scikit-image photos, upscaled), the size of KonIQ-10k's release images."""
    from PIL import Image

    from .demo_data import PHOTOS, photo

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        _, loader, index = PHOTOS[i % len(PHOTOS)]
        path = folder / f"{i:04d}.jpg"
        if not path.exists():
            photo(loader, index).resize((1024, 768), Image.BICUBIC).save(path, quality=90)
        paths.append(path.name)
    return Catalog("bench-koniq", folder, paths, np.linspace(0, 100, n), paths, [512, 384])


def _reference_patches(cat: Catalog, count: int, patch: int, rng) -> float:
    """The reference's loader: open, decode and resize the full image for every patch, then crop, flip,
    ToTensor and normalise one patch at a time. Returns patches/s."""
    import torch
    from PIL import Image

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    start = time.perf_counter()
    for k in range(count):
        with Image.open(cat.root / cat.paths[k % len(cat)]) as im:
            im = im.convert("RGB").resize((512, 384), Image.BILINEAR)
        y, x = rng.integers(0, 384 - patch + 1), rng.integers(0, 512 - patch + 1)
        im = im.crop((x, y, x + patch, y + patch))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
        _ = (t - mean) / std
    return count / (time.perf_counter() - start)


def _kernel_alone(cache, patch: int, batch: int, batches: int, epochs) -> list[float]:
    """The C kernel's bytes/s with every batch's offsets drawn beforehand, into a fresh batch each time as
    :func:`iqa_tune.patches.crop` does: the copy without the batch loop's Python around it."""
    from . import _gather
    from .patches import crop_offsets, random_offsets

    rng = np.random.default_rng(0)
    plans = []
    for _ in range(batches):
        img = rng.integers(0, len(cache), batch)
        first, stride = crop_offsets(cache, img, *random_offsets(cache, img, patch, rng))
        plans.append((first.astype(np.int64), stride.astype(np.int64)))
    out = []
    for _ in epochs:
        t = time.perf_counter()
        held = None  # the last batch stays alive while the next is cut, as a consumer of the batch loop holds it
        for first, stride in plans:
            pixels = np.empty((batch, patch, patch, 3), np.uint8)
            _gather.crops(cache.pixels, first, stride, patch, patch * 3, pixels)
            held = pixels  # noqa: F841
        out.append(batches * batch * patch * patch * 3 / (time.perf_counter() - t))
    return out


def cache_key_costs(cat: Catalog, resize, rounds: int = 3) -> dict:
    """What keying the cache costs per image, at every trial's start: the file stamps the key reads (size, ns
    mtime and ctime, inode) against a content hash of every file (sha1, the files already in the page cache: the
    hash's best case). Medians of ``rounds``, in one process."""
    def stamps() -> None:
        cache_key(cat, resize)

    def content() -> None:
        h = hashlib.sha1()
        for p in cat.paths:
            h.update((cat.root / p).read_bytes())

    out = {}
    for name, fn in (("stat_key", stamps), ("content_hash", content)):
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[f"{name}_ms_per_image"] = 1000 * statistics.median(times) / len(cat)
    out["content_hash_vs_stat_key"] = out["content_hash_ms_per_image"] / out["stat_key_ms_per_image"]
    return out


def bench_data(quick: bool) -> dict:
    import torch

    n_images, patch, batch = (24, 224, 96) if quick else (96, 224, 96)
    with tempfile.TemporaryDirectory() as tmp:
        cat = _koniq_like(Path(tmp) / "images", n_images)
        t0 = time.perf_counter()
        cache = build_or_open(cat, [512, 384], Path(tmp) / "cache", progress=False)
        build_s = time.perf_counter() - t0
        key_costs = cache_key_costs(cat, [512, 384])
        rng = np.random.default_rng(0)
        ref = _reference_patches(cat, 150 if quick else 600, patch, rng)
        idx = np.arange(len(cat))
        train = TrainPatches(cache, idx, cat.scores, patch_size=patch, train_patches=25, patches_per_image=1,
                             batch_size=batch, flip=True)
        norm = Normalizer(torch.device("cpu"))
        nbytes = len(idx) * 25 * patch * patch * 3  # one epoch of patches
        # the first pass maps the cache's pages into this process (page-table faults), once per process: timed
        # apart, the epochs below start after it
        faults, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for _ in train.batches(0, 99):
            pass
        first_pass_bps = nbytes / (time.perf_counter() - t)
        first_pass_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

        def crops_per_s(epoch: int, patches: TrainPatches = train) -> float:  # batch by batch, as training reads
            t = time.perf_counter()
            n = sum(len(b.labels) for b in patches.batches(0, epoch))
            return n / (time.perf_counter() - t)

        def numpy_crops_per_s(epoch: int, patches: TrainPatches = train) -> float:
            with numpy_crops():
                return crops_per_s(epoch, patches)

        epochs = range(2 if quick else 3)
        # the shipped gather (the C kernel where it is built) and numpy's, epoch by epoch in turn
        crop_only, crop_numpy = zip(*[(crops_per_s(e), numpy_crops_per_s(e)) for e in epochs])
        kernel_alone = _kernel_alone(cache, patch, batch, len(train), epochs) if crop_kernel() == "compiled" else []
        # the demo's 64 px crops: more, shorter rows per byte, where numpy's per-row cost shows most
        small = TrainPatches(cache, idx, cat.scores, patch_size=64, train_patches=100, patches_per_image=1,
                             batch_size=32, flip=True)
        small_bytes = 64 * 64 * 3
        small_only, small_numpy = zip(*[(crops_per_s(e, small), numpy_crops_per_s(e, small)) for e in epochs])
        full = []
        for epoch in epochs:
            t = time.perf_counter()
            n = sum(len(norm(b.pixels, b.flips)) for b in train.batches(0, epoch))
            full.append(n / (time.perf_counter() - t))
        # the ceiling: a plain numpy copy of the same bytes (one epoch of patches), memory to memory
        src = np.frombuffer(bytearray(np.random.default_rng(0).bytes(nbytes)), dtype=np.uint8)
        dst = np.zeros_like(src)  # touched first, so the copy pays no page faults
        copies = []
        for _ in epochs:
            t = time.perf_counter()
            np.copyto(dst, src)
            copies.append(nbytes / (time.perf_counter() - t))
        copy_bps = statistics.median(copies)
        # the same copy in torch, on torch's threads: whether more threads raise the ceiling on this machine
        src_t, dst_t = torch.from_numpy(src), torch.from_numpy(dst)
        copies = []
        for _ in epochs:
            t = time.perf_counter()
            dst_t.copy_(src_t)
            copies.append(nbytes / (time.perf_counter() - t))
        copy_threads_bps = statistics.median(copies)
        ours_bps = statistics.median(crop_only) * patch * patch * 3
        numpy_bps = statistics.median(crop_numpy) * patch * patch * 3
        small_bps = statistics.median(small_only) * small_bytes
        small_numpy_bps = statistics.median(small_numpy) * small_bytes
        alone = {"kernel_alone_gb_s": statistics.median(kernel_alone) / 1e9,
                 "fraction_of_copy_kernel_alone": statistics.median(kernel_alone) / copy_bps} if kernel_alone else {}
        return {"images": n_images, "patch": patch, "cache_build_s": build_s, **key_costs, "crop_kernel": crop_kernel(),
                "reference_patches_per_s": ref, "ours_crop_patches_per_s": statistics.median(crop_only),
                "numpy_crop_patches_per_s": statistics.median(crop_numpy),
                "kernel_speedup": ours_bps / numpy_bps, "fraction_of_copy_numpy_crop": numpy_bps / copy_bps,
                "crop_64px_bandwidth_gb_s": small_bps / 1e9, "fraction_of_copy_64px": small_bps / copy_bps,
                "fraction_of_copy_64px_numpy_crop": small_numpy_bps / copy_bps,
                "kernel_speedup_64px": small_bps / small_numpy_bps,
                **alone,
                "ours_crop_and_normalise_patches_per_s": statistics.median(full),
                "speedup_crop": statistics.median(crop_only) / ref,
                "speedup_crop_and_normalise": statistics.median(full) / ref,
                "crop_bandwidth_gb_s": ours_bps / 1e9, "numpy_copy_gb_s": copy_bps / 1e9,
                "fraction_of_copy": ours_bps / copy_bps, "torch_copy_threads": torch.get_num_threads(),
                "torch_copy_gb_s": copy_threads_bps / 1e9, "fraction_of_torch_copy": ours_bps / copy_threads_bps,
                "first_pass_gb_s": first_pass_bps / 1e9, "first_pass_page_faults": first_pass_faults}


# ----------------------------------------------------------------------------------------------------------------
# Tune overhead, ASHA, memory: real studies on the demo data


BENCH_BASE = {
    "data": {"dataset": "demo", "patch_size": 32, "train_patches": 8, "test_patches": 8,
             "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "model": {"backbone": "resnet_micro"},
    "loss": {"margin": 1.0},
    "train": {"lr": 1.0e-3, "epochs": 3, "batch_size": 32, "patches_per_image": 2, "warmup_epochs": 0.5},
}


def _study(tmp: Path, name: str, search: dict, study: dict, data: dict | None = None, base: dict = BENCH_BASE,
           **train) -> tuple[Path, float]:
    from .instance import use_token_auth

    use_token_auth()  # bench studies use the shared local instance
    from .study import run_study

    body = json.loads(json.dumps(base))
    body["train"].update(train)
    body["data"].update(data or {})
    body["search"] = search
    body["study"] = {"name": name, "storage": str(tmp), **study}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    start = time.time()
    code, loc = run_study(str(path), dashboard=False)
    if code != 0:
        raise RuntimeError(f"bench study {name} ended with {code}")
    return loc.local, start


def _rows(exp: Path) -> dict[str, list[dict]]:
    return {t.name: rows for t in exp.iterdir() if t.is_dir() and (rows := records.read_results(t))}


def bench_tune(quick: bool, tmp: Path) -> dict:
    from .prepare import prepare_data
    from .solver import Solver

    epochs = 2 if quick else 3
    cfg = build_run_config({**BENCH_BASE, "train": {**BENCH_BASE["train"], "epochs": epochs, "threads": 2}})
    solver = Solver(cfg, prepare_data(cfg, progress=False))
    bare = [m["epoch_seconds"] for m, _ in solver.fit()]
    exp, start = _study(tmp, "tune-overhead", {"loss.alpha": {"grid": [0.0]}},
                        {"scheduler": {"type": "none"}, "resources": {"cpu": 2}}, epochs=epochs, threads=2)
    (rows,) = _rows(exp).values()
    tuned = [r["epoch_seconds"] for r in rows]
    # epoch 1 carries warm-up effects in both; compare the median of the rest where there is one
    b, t = statistics.median(bare[1:] or bare), statistics.median(tuned[1:] or tuned)
    return {"epochs": epochs, "bare_epoch_s": b, "tune_epoch_s": t, "overhead": t / b - 1,
            "start_to_first_report_s": rows[0]["timestamp"] - start - rows[0]["epoch_seconds"]}


def _eval_figures(rows: list[dict]) -> dict:
    """Median epoch time, evaluation time and evaluation share over the epochs after the first (warm-up)."""
    rest = rows[1:] or rows
    epoch, ev = statistics.median(r["epoch_seconds"] for r in rest), statistics.median(r["eval_seconds"] for r in rest)
    return {"epoch_s": epoch, "eval_s": ev, "eval_share": ev / epoch}


def bench_eval(quick: bool) -> dict:
    """What the diagnosis signals cost: the evaluation share of an epoch of the bare solver before (val and test
    only: ``data.train_eval_images: 0``) and after (the default training subset, as many images as the test split,
    and one cross-dataset set as large again: the demo on its own cache, no second decode), epochs of the two
    interleaved so that the machine's load falls on both alike. Also the time to write one epoch's crop file."""
    from .prepare import prepare_data
    from .solver import Solver

    epochs = 2 if quick else 4
    train = {**BENCH_BASE["train"], "epochs": epochs, "threads": 2}
    # the shares depend on the splits' proportions and the crop counts, not on the dataset's size: 400 images
    base = {**BENCH_BASE["data"], "limit": 400}
    before = build_run_config({**BENCH_BASE, "data": {**base, "train_eval_images": 0}, "train": train})
    data = prepare_data(before, progress=False)
    n_test = len(data.split["test"])
    extra = [{"name": "demo_again", "dataset": "demo", "limit": n_test}]
    after = build_run_config({**BENCH_BASE, "data": {**base, "extra_tests": extra}, "train": train})
    solvers = {"before": Solver(before, data), "after": Solver(after, prepare_data(after, progress=False))}
    rows: dict[str, list[dict]] = {k: [] for k in solvers}
    for _ in range(epochs):
        for k, solver in solvers.items():
            rows[k].append(solver.run_epoch()[0])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        records.save_crop_predictions(records.crop_prediction_path(folder, 1), solvers["after"].crops, 1)
        crop_file_ms = (time.perf_counter() - start) * 1000
    out = {"epochs": epochs, "images": {k: len(v.indices) for k, v in solvers["after"].eval_sets.items()},
           "before": _eval_figures(rows["before"]), "after": _eval_figures(rows["after"]),
           "crop_file_ms": crop_file_ms}
    out["epoch_ratio"] = out["after"]["epoch_s"] / out["before"]["epoch_s"]
    return out


def _subnormal_shares(solver) -> dict[str, float]:
    """The share of the nonzero values that are subnormal, in the model's weights and the optimizer's state, and in
    the last step's gradients. Counted with flushing off: flushed, a subnormal input reads as zero, and every count
    would be 0."""
    import torch

    torch.set_flush_denormal(False)
    tiny = torch.finfo(torch.float32).tiny

    def share(tensors: list) -> float:
        nonzero = sum(int((t != 0).sum()) for t in tensors)
        return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors) / max(nonzero, 1)

    params = list(solver.model.parameters())
    state = [p.detach() for p in params] + [v for st in solver.optimizer.state.values() for v in st.values()
                                            if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0]
    return {"state": share(state), "grads": share([p.grad for p in params if p.grad is not None])}


def bench_denormal(quick: bool) -> dict:
    """What flushing subnormal floats to zero saves on the CPU: two solvers of the demo's trap run alone, but at the
    demo's lower lr (1e-4: fine-tuning at a low lr breeds subnormal values in the backward pass), one
    epoch each in turn, one with subnormals computed (the CPU default) and one with them flushed (what the solver
    does); the same batches, so the metrics must come out identical. Per epoch: training seconds of each, their
    ratio, and the share of subnormal values the unflushed one holds in its weights and Adam's moments and in its
    last step's gradients."""
    import torch

    from .prepare import prepare_data
    from .shipped import resolve
    from .solver import Solver

    raw = yaml.safe_load(Path(resolve("demo_train", "config")).read_text())
    epochs = 2 if quick else 3
    raw["train"].update(lr=1.0e-4, epochs=epochs, threads=1)
    raw["data"].update(train_eval_images=0, **({"limit": 600} if quick else {}))
    cfg = build_run_config(raw)
    data = prepare_data(cfg, progress=False)
    solvers = {"computed": Solver(cfg, data), "flushed": Solver(cfg, data)}
    rows: dict[str, list[dict]] = {k: [] for k in solvers}
    share = []
    try:
        for _ in range(epochs):
            for k, solver in solvers.items():
                torch.set_flush_denormal(k == "flushed")
                rows[k].append(solver.run_epoch()[0])
            share.append(_subnormal_shares(solvers["computed"]))
    finally:
        torch.set_flush_denormal(True)
    keys = ("train_loss", "val_srcc", "test_srcc")
    return {"epochs": epochs, "images": len(data.split["train"]),
            "computed_train_s": [r["train_seconds"] for r in rows["computed"]],
            "flushed_train_s": [r["train_seconds"] for r in rows["flushed"]],
            "speedup_per_epoch": [a["train_seconds"] / b["train_seconds"] for a, b in zip(*rows.values())],
            "speedup_total": sum(r["train_seconds"] for r in rows["computed"]) /
            sum(r["train_seconds"] for r in rows["flushed"]),
            "subnormal_share_unflushed_state": [x["state"] for x in share],
            "subnormal_share_unflushed_grads": [x["grads"] for x in share],
            "identical_metrics": all(a[k] == b[k] for a, b in zip(*rows.values()) for k in keys)}


def _best_trial(rows_by_trial: dict[str, list[dict]]) -> str:
    """The trial whose best epoch is best by val SRCC, by the rule the solver and the report use."""
    trials = list(rows_by_trial)
    best_of = [rows[records.best_index([r["val_srcc"] for r in rows], "max")]["val_srcc"]
               for rows in rows_by_trial.values()]
    return trials[records.best_index(best_of, "max")]


def _params(exp: Path, trial: str) -> dict:
    return json.loads((exp / trial / "params.json").read_text())


def _asha_against_grid(tmp: Path, name: str, search: dict, asha: dict, epochs: int, base: dict = BENCH_BASE,
                       full: tuple[Path, float] | None = None, kind: str = "asha", **train) -> dict:
    """The same grid twice, every trial to the end and under a scheduler that cuts (``kind``: asha, or halving,
    synchronous): trial-epochs and wall time of each, whether the full grid's best configuration (by val) survives
    the cuts, and, where it does not, the paired bootstrap of the two bests' test SRCC on the same test images
    (the report's test). ``full``: the grid already run to the end (its experiment folder and wall seconds), to
    compare several settings against one grid."""
    from .reports.ranking import paired_bootstrap_test

    if full is None:
        full = _grid_to_the_end(tmp, name, search, epochs, base, **train)
    full, full_s = full
    tag = "-".join(f"{k[0]}{v}" for k, v in asha.items())  # grace_period 1, reduction_factor 4 -> g1-r4
    cut, t0 = _study(tmp, f"{name}-{kind}-{tag}", search, {"scheduler": {"type": kind, **asha}}, base=base,
                     epochs=epochs, **train)
    asha_s = time.time() - t0
    full_rows, asha_rows = _rows(full), _rows(cut)
    best_full, best_asha = _best_trial(full_rows), _best_trial(asha_rows)
    survivors = [_params(cut, t) for t, rows in asha_rows.items() if rows[-1]["epoch"] == epochs]
    out = {"grid_points": len(full_rows), "epochs": epochs, "scheduler": kind, "asha": asha,
           "full_trial_epochs": sum(len(r) for r in full_rows.values()),
           "asha_trial_epochs": sum(len(r) for r in asha_rows.values()),
           "full_wall_s": full_s, "asha_wall_s": asha_s, "wall_fraction": asha_s / full_s,
           "full_best_config": _params(full, best_full), "full_best_survives_asha": _params(full, best_full) in survivors,
           "asha_best_config": _params(cut, best_asha)}
    out["trial_epoch_fraction"] = out["asha_trial_epochs"] / out["full_trial_epochs"]
    preds = [records.load_predictions(p) for p in
             (records.latest_predictions(full / best_full), records.latest_predictions(cut / best_asha))]
    if all(p is not None for p in preds) and list(preds[0][0]) == list(preds[1][0]):
        diff, lo, hi, p = paired_bootstrap_test(preds[0][1], preds[0][2], preds[1][2])
        out.update(full_best_minus_asha_best_test_srcc=diff, diff_ci=[lo, hi], paired_p=p,
                   distinguishable=p < 0.05)
    return out


def _grid_to_the_end(tmp: Path, name: str, search: dict, epochs: int, base: dict, **train) -> tuple[Path, float]:
    full, t0 = _study(tmp, f"{name}-full", search, {"scheduler": {"type": "none"}}, base=base, epochs=epochs,
                      **train)
    return full, time.time() - t0


def bench_asha(quick: bool, tmp: Path) -> dict:
    search = {"loss.alpha": {"grid": [0.0, 0.5, 1.0]}, "train.lr": {"grid": [3.0e-4, 1.0e-3]},
              "train.schedule": {"grid": ["step", "cosine"]}}
    return _asha_against_grid(tmp, "grid", search, {"grace_period": 1, "reduction_factor": 3},
                              3 if quick else 4, threads=1)


# ASHA on a realistic horizon: the demo's pretrained EfficientNet-Lite0, long enough for the early leaders to fade
HORIZON_BASE = {
    "data": {"dataset": "demo", "patch_size": 64, "train_patches": 1, "test_patches": 2,
             "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "model": {"backbone": "efficientnet_lite0", "pretrained": True},  # plain L1: no ranking loss, no margin
    "train": {"optimizer": "adamw", "batch_size": 32, "schedule": "cosine", "warmup_epochs": 0.5},
}
HORIZON_SEARCH = {"train.lr": {"grid": [1.0e-4, 3.0e-4, 1.0e-3]}, "model.freeze_stages": {"grid": [1, 3]},
                  "train.weight_decay": {"grid": [1.0e-4, 1.0e-1]}}


def bench_horizon(quick: bool, tmp: Path) -> dict:
    """12 grid points x 8 epochs with the pretrained demo backbone: run to the end once, then under ASHA and
    under synchronous halving (grace 1, factor 3: the shipped spaces' setting; factor 4 cost more on this grid,
    docs/bench/bench-horizon-cpu-2026-11b.json), each against that same full grid."""
    search = HORIZON_SEARCH if not quick else {"train.lr": {"grid": [1.0e-4, 1.0e-3]}}
    base = json.loads(json.dumps(HORIZON_BASE))
    if quick:
        base["data"]["limit"] = 240
    epochs = 3 if quick else 8
    full = _grid_to_the_end(tmp, "horizon", search, epochs, base, threads=1)
    return {kind: _asha_against_grid(tmp, "horizon", search, {"grace_period": 1, "reduction_factor": 3}, epochs,
                                     base=base, full=full, kind=kind, threads=1) for kind in ("asha", "halving")}


SEARCH_SPACE = {"loss.alpha": {"uniform": [0.0, 2.0]}, "train.lr": {"loguniform": [1.0e-4, 3.0e-3]},
                "train.weight_decay": {"loguniform": [1.0e-5, 1.0e-1]}, "model.dropout": {"uniform": [0.0, 0.5]},
                "train.schedule": {"choice": ["step", "cosine"]}}


def bench_search(quick: bool, tmp: Path) -> dict:
    """TPE + ASHA against random + ASHA at the same trial budget, over several search seeds: the best val SRCC
    each study found (its trials' best epochs), and the median over seeds. On 400 demo images (240 for training),
    so that 72 trials fit in minutes on 2 cores; with 80 val images, differences under ~0.1 are noise."""
    budget, seeds, epochs = (6, [0], 2) if quick else (12, [0, 1, 2], 3)
    out: dict = {"budget": budget, "epochs": epochs, "space": ", ".join(SEARCH_SPACE)}
    for kind in ("random", "optuna"):
        found = []
        for seed in seeds:
            exp, _ = _study(tmp, f"search-{kind}-{seed}", SEARCH_SPACE,
                            {"num_samples": budget, "search_seed": seed, "search": {"type": kind}, "max_concurrent": 2,
                             "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3}},
                            data={"limit": 400}, epochs=epochs, threads=1)
            bests = [rows[-1].get(records.best_key("val_srcc"), math.nan) for rows in _rows(exp).values()]
            found.append(max((b for b in bests if math.isfinite(b)), default=math.nan))
        out[f"{kind}_best_val_srcc"] = found
        out[f"{kind}_median"] = statistics.median(found)
    out["optuna_minus_random"] = out["optuna_median"] - out["random_median"]
    return out


def bench_memory(quick: bool, tmp: Path) -> dict:
    import resource

    out = {}
    for concurrent in (1, 2):
        exp, _ = _study(tmp, f"memory-{concurrent}", {"loss.alpha": {"grid": [0.0, 1.0]}},
                        {"scheduler": {"type": "none"}, "max_concurrent": concurrent}, epochs=1, threads=1)
        rss = [rows[-1]["peak_rss_mb"] for rows in _rows(exp).values()]
        out[f"trial_peak_rss_mb_{concurrent}_concurrent"] = max(rss)
    out["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["extra_trial_ratio"] = out["trial_peak_rss_mb_2_concurrent"] / out["trial_peak_rss_mb_1_concurrent"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# KonIQ scale: release-sized JPEGs made on demand, one shared cache, four trials reading it

KONIQ_IMAGES = 10_000  # KonIQ-10k's size


def _koniq_jpegs(job: tuple[str, list[int]]) -> int:
    """Write 1024x768 JPEGs number ``ids`` into ``folder``: each a random 4:3 window of a demo photo (40-100% of
    its width), maybe mirrored, at JPEG quality 70-95, so files differ in content and size as a release's do."""
    from PIL import Image

    from .demo_data import PHOTOS, photo_pixels

    folder, ids = job
    sources = [photo_pixels(loader, index) for _, loader, index in PHOTOS]  # at their own resolution
    for i in ids:
        rng = np.random.default_rng(i)
        arr = sources[i % len(sources)]
        h, w = arr.shape[:2]
        cw = min(w, round(h * 4 / 3)) * rng.uniform(0.4, 1.0)
        cw, ch = max(8, round(cw)), max(6, round(cw * 3 / 4))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        im = Image.fromarray(np.ascontiguousarray(arr[top:top + ch, left:left + cw])).resize((1024, 768),
                                                                                              Image.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        im.save(Path(folder) / f"{i:05d}.jpg", quality=int(rng.integers(70, 96)))
    return len(ids)


def make_koniq_like(folder: Path, n: int, progress: bool = True) -> Path:
    """A csv dataset of ``n`` 1024x768 JPEGs (``images/`` + ``labels.csv``), written by one process per core."""
    import multiprocessing

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    (folder / "images").mkdir(parents=True, exist_ok=True)
    chunks = [list(range(k, min(n, k + 50))) for k in range(0, n, 50)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 2) as pool, Progress(
            TextColumn("writing JPEGs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            disable=not progress, transient=True) as bar:
        task = bar.add_task("jpegs", total=n)
        for done in pool.imap_unordered(_koniq_jpegs, [(str(folder / "images"), c) for c in chunks]):
            bar.advance(task, done)
    scores = np.random.default_rng(0).uniform(0, 100, n)  # the scores play no part in what is measured
    rows = ["path,score,ref"] + [f"images/{i:05d}.jpg,{scores[i]:.3f},{i}" for i in range(n)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _pss_kb(mapping: str | None = None) -> dict[str, int]:
    """Pss, Rss, Private (pages no other process maps) and Anonymous (not backed by a file: heap, tensors) in kB
    of this process (``/proc/self/smaps_rollup``), or Pss and Rss of its mappings of one file (``smaps``)."""
    if mapping is None:
        text = Path("/proc/self/smaps_rollup").read_text()
        out = {k: int(line.split()[1]) for line in text.splitlines()
               for k in ("Pss", "Rss", "Private_Clean", "Private_Dirty", "Anonymous") if line.startswith(k + ":")}
        out["Private"] = out.pop("Private_Clean") + out.pop("Private_Dirty")
        return out
    out, inside = {"Pss": 0, "Rss": 0}, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            inside = line.endswith(mapping)
        elif inside and head and head[0][:-1] in out:
            out[head[0][:-1]] += int(head[1])
    return out


def _trial_memory(cfg_data: dict, batches: int, barrier, results) -> None:
    """One trial's memory: PSS after the imports (the runtime), then after ``batches`` training steps while every
    other trial is alive (PSS divides a shared page among the processes that map it), and the cache's share."""
    import torch

    from .prepare import prepare_data
    from .solver import Solver

    runtime = _pss_kb()
    cfg = build_run_config(cfg_data)
    data = prepare_data(cfg, progress=False)
    solver = Solver(cfg, data)

    class Enough(Exception):
        pass

    def on_batch(b, total):
        if b >= batches:
            raise Enough

    try:
        solver.train_epoch(on_batch)
    except Enough:
        pass
    params = [p for p in solver.model.parameters()]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    # weights (all), gradients and Adam's two moments (trainable), one batch as uint8 and as float32 input
    batch = cfg.train.batch_size * 3 * cfg.data.patch_size ** 2
    own = (sum(p.numel() for p in params) + 3 * trainable) * 4 + batch * 5
    barrier.wait()  # every trial has trained: measure while all of them map the cache
    total, cache = _pss_kb(), _pss_kb(mapping="pixels.u8")
    barrier.wait()  # nobody exits before the others have measured
    results.put({"runtime_pss_mb": runtime["Pss"] / 1024, "runtime_private_mb": runtime["Private"] / 1024,
                 "pss_mb": total["Pss"] / 1024, "private_mb": total["Private"] / 1024,
                 "anonymous_mb": total["Anonymous"] / 1024,
                 "cache_pss_mb": cache["Pss"] / 1024,
                 "cache_rss_mb": cache["Rss"] / 1024, "model_optimizer_batch_mb": own / 2**20,
                 "threads": torch.get_num_threads()})


def concurrent_memory(cfg_data: dict, batches: int, processes: int) -> list[dict]:
    import multiprocessing

    barrier = multiprocessing.get_context("spawn").Barrier(processes)
    return spawned(_trial_memory, (cfg_data, batches, barrier), processes, "a memory-bench trial")


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def bench_koniq(quick: bool, tmp: Path, images: int | None = None, backbone: str = "efficientnet_lite0",
                say=print) -> dict:
    """KonIQ-10k scale on this machine: making the JPEGs, building the cache (one decoding thread against one
    per core), its size, and the memory of 1 and then 4 concurrent trials reading it."""
    n = images or (1_000 if quick else KONIQ_IMAGES)
    folder = tmp / "koniq-like"
    t = time.perf_counter()
    make_koniq_like(folder, n)
    out = {"images": n, "make_jpegs_s": time.perf_counter() - t, "jpeg_mb": _folder_mb(folder / "images")}
    say(f"  {n} JPEGs of 1024x768 written in {out['make_jpegs_s']:.0f} s ({out['jpeg_mb']:.0f} MB)")
    # decoding alone, one thread against one per core, on the same sample (its files read once first, so both
    # runs find them in the page cache)
    sample = [f"{i:05d}.jpg" for i in range(min(n, 200 if quick else 600))]
    for p in sample:
        (folder / "images" / p).read_bytes()
    cat = Catalog("bench-koniq", folder / "images", sample, np.zeros(len(sample)), sample, [512, 384])
    for workers in (1, os.cpu_count() or 2):
        t = time.perf_counter()
        build_or_open(cat, [512, 384], tmp / f"cache-{workers}", progress=False, workers=workers)
        out[f"decode_images_per_s_{workers}_threads"] = len(sample) / (time.perf_counter() - t)
    out["decode_speedup"] = (out[f"decode_images_per_s_{os.cpu_count() or 2}_threads"]
                             / out["decode_images_per_s_1_threads"])
    say(f"  decoding + resizing to 512x384: {out['decode_images_per_s_1_threads']:.0f} images/s in one thread, "
        f"{out['decode_speedup']:.2f}x that with {os.cpu_count()}")
    cfg_data = {"name": "bench-koniq", "data": {"dataset": "csv", "root": str(folder), "csv_file": "labels.csv",
                                                 "resize": [512, 384], "patch_size": 224, "cache_dir": str(tmp / "cache"),
                                                 "train_patches": 1, "test_patches": 1,
                                                 "split": {"train": 0.7, "val": 0.1, "test": 0.2}},
                "model": {"backbone": backbone}, "train": {"batch_size": 32 if not quick else 8, "threads": 1,
                                                           "optimizer": "adamw"}}
    from .prepare import prepare_data

    t = time.perf_counter()
    prepare_data(build_run_config(cfg_data), progress=True)
    out["cache_build_s"] = time.perf_counter() - t
    out["cache_build_images_per_s"] = n / out["cache_build_s"]
    out["cache_mb"] = _folder_mb(tmp / "cache")
    say(f"  cache of {n} images built in {out['cache_build_s']:.0f} s ({out['cache_build_images_per_s']:.0f} "
        f"images/s), {out['cache_mb']:.0f} MB on disk")
    batches = 3 if quick else 8
    (one,) = concurrent_memory(cfg_data, batches, 1)
    four = concurrent_memory(cfg_data, batches, 4)
    out["one_trial"] = one
    out["four_trials_pss_mb"] = [r["pss_mb"] for r in four]
    out["four_trials_cache_pss_mb"] = [r["cache_pss_mb"] for r in four]
    out["four_trials_cache_rss_mb"] = [r["cache_rss_mb"] for r in four]
    extra = (sum(out["four_trials_pss_mb"]) - one["pss_mb"]) / 3
    out["extra_trial_pss_mb"] = extra
    # what one trial holds of its own: anonymous memory (Python heap, weights, gradients, Adam moments, batches and
    # the activations the allocator keeps between steps), no file pages. An extra trial that shares the libraries
    # and the cache costs about that much; one that copied the cache would cost the cache's size more
    out["extra_trial_vs_one_trial_anonymous"] = extra / one["anonymous_mb"]
    say(f"  PSS: one trial {one['pss_mb']:.0f} MB ({one['anonymous_mb']:.0f} MB its own anonymous memory, cache "
        f"pages {one['cache_pss_mb']:.0f} MB); each extra of 4 adds {extra:.0f} MB "
        f"({out['extra_trial_vs_one_trial_anonymous']:.2f}x one trial's own), of which the cache "
        f"{statistics.median(out['four_trials_cache_pss_mb']):.0f} MB")
    return out


# ----------------------------------------------------------------------------------------------------------------
# predict: scoring new images


def _demo_model_run(folder: Path) -> Path:
    """A run folder that ``iqa_tune.load`` reads: the shipped demo_train config (EfficientNet-Lite0, 64 px patches,
    8 crops per image) with freshly initialised weights. Throughput does not depend on what the weights learned."""
    import torch

    from .config import load_run_config, to_dict
    from .model import build_model
    from .shipped import resolve

    cfg = load_run_config(resolve("demo_train", "config"))
    model = build_model(cfg.model)
    folder.mkdir(parents=True, exist_ok=True)
    records.write_run_files(folder, to_dict(cfg), {})
    torch.save({"model": model.state_dict(), "epoch": 1, "best": {"row": {"epoch": 1}}}, folder / records.STATE_FILE)
    return folder


def _plain_loop(scorer, paths: list[Path]) -> np.ndarray:
    """What one would write without iqa-tune: decode each image with PIL, cut its crops (the same offsets), then
    normalise and score them, one image at a time."""
    import zlib

    import torch
    from PIL import Image

    from .cache import target_size

    p, n = scorer.patch_size, scorer.test_patches
    out = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                size = target_size(*im.size, scorer.resize)
                a = np.asarray(im.resize(size, Image.BILINEAR) if size != im.size else im)
            rng = np.random.default_rng([zlib.crc32(scorer.key(path).encode()), p, n])
            ys, xs = rng.integers(0, a.shape[0] - p + 1, size=n), rng.integers(0, a.shape[1] - p + 1, size=n)
            crops = torch.from_numpy(np.stack([a[y:y + p, x:x + p] for y, x in zip(ys, xs)]))
            out.append(float(scorer.model(scorer.normalize(crops)).mean()))
    return np.array(out)


def bench_predict(quick: bool, tmp: Path) -> dict:
    """Images/s of ``iqa-tune predict``'s path (decoding threads ahead, crops of many images per batch) against a
    plain PIL-decode-and-score loop, one image at a time, on the demo images, with the same model and crops."""
    from .datasets import load_catalog
    from .predict import Item, load

    cat = load_catalog(DataConfig(dataset="demo"))
    n = 96 if quick else 480
    paths = [cat.root / p for p in cat.paths[:n]]
    scorer = load(_demo_model_run(tmp / "predict-run"), device="cpu")
    items = [Item(p, str(p), scorer.key(p)) for p in paths]
    list(scorer.score_items(items[:16]))  # warm-up: first calls allocate
    _plain_loop(scorer, paths[:16])
    t0 = time.perf_counter()
    ours = np.array([r.score for r in scorer.score_items(items)])
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = _plain_loop(scorer, paths)
    plain_s = time.perf_counter() - t0
    return {"images": n, "image_size": f"{cat.resize or 'native'} (demo: 192x144)",
            "model": f"{scorer.config.model.backbone}, {scorer.test_patches} crops of {scorer.patch_size} px",
            "predict_images_per_s": n / ours_s, "plain_loop_images_per_s": n / plain_s,
            "speedup": plain_s / ours_s, "max_score_difference": float(np.abs(ours - plain).max())}


# ----------------------------------------------------------------------------------------------------------------
# GPU path


def _csv_dataset(folder: Path, n: int) -> Path:
    """A csv dataset of KonIQ-sized JPEGs, for runs through the real solver."""
    cat = _koniq_like(folder / "images", n)
    rows = ["path,score,ref"] + [f"images/{p},{s:.3f},{p}" for p, s in zip(cat.paths, cat.scores)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def train_throughput(cfg_data: dict, batches: int, warmup: int = 3) -> dict:
    """Training patches/s of one configuration through the real solver, after ``warmup`` batches."""
    import torch

    from .prepare import prepare_data
    from .solver import Solver

    cfg = build_run_config(cfg_data)
    solver = Solver(cfg, prepare_data(cfg, progress=False))
    done = {"n": 0, "t0": 0.0}

    class Enough(Exception):
        pass

    if solver.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def on_batch(b, total):
        # the clock starts and stops on a synchronised device, and nothing syncs in between: a sync per batch
        # would measure an idle device while the host queues the next step
        if b in (warmup, warmup + batches) and solver.device.type == "cuda":
            torch.cuda.synchronize()
        if b == warmup:
            done["t0"] = time.perf_counter()
        done["n"] = b
        if b >= warmup + batches:
            raise Enough

    try:
        solver.train_epoch(on_batch)
    except Enough:
        pass
    if solver.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - done["t0"]
    out = {"patches_per_s": (done["n"] - warmup) * cfg.train.batch_size / seconds, "batches_timed": done["n"] - warmup}
    if solver.device.type == "cuda":
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def split_throughput(cfg_data: dict, batches: int, warmup: int = 3) -> dict:
    """Where a training step's time goes: the model alone (one batch kept on the device, forward, loss, backward,
    step) and the data path alone (crops, pinned copy, normalisation on the device, no model), each in patches/s.
    The slower of the two bounds what :func:`train_throughput` can reach."""
    import torch

    from .losses import hyperiqa_loss
    from .patches import prefetch
    from .prepare import prepare_data
    from .solver import Solver

    cfg = build_run_config(cfg_data)
    solver = Solver(cfg, prepare_data(cfg, progress=False))
    sync = torch.cuda.synchronize if solver.device.type == "cuda" else (lambda: None)
    it = prefetch(solver.train_patches.batches(0, 0, pin=solver.device.type == "cuda"))
    first = next(it)
    x, y = solver.normalize(first.pixels, first.flips), first.labels.to(solver.device)
    ids = first.image.to(solver.device)
    lc = cfg.loss
    t0 = 0.0
    for i in range(warmup + batches):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        with solver.autocast():
            pred = solver.forward(x).float()
        loss = hyperiqa_loss(pred, y, ids, lc.alpha, lc.margin, lc.ranking)["loss"]
        solver.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        solver.optimizer.step()
    sync()
    model_only = batches * len(y) / (time.perf_counter() - t0)
    n = 0
    for i, b in enumerate(it):
        if i == warmup:
            sync()
            t0, n = time.perf_counter(), 0
        solver.normalize(b.pixels, b.flips)
        n += len(b.labels)
        if i >= warmup + batches:
            break
    sync()
    return {"model_only_patches_per_s": model_only, "data_only_patches_per_s": n / (time.perf_counter() - t0)}


def bench_gpu(quick: bool, tmp: Path, say=print) -> dict:
    """swin_tiny at 224 through the real solver on one GPU: precision and layout variants, then two trials sharing
    the card against one alone. Each figure is printed as it comes, and a variant that fails is recorded with its
    error instead of ending the section."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    props = torch.cuda.get_device_properties(0)
    out = {"card": f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
                   f"CUDA {torch.version.cuda}"}
    say(f"  card: {out['card']}")
    root = _csv_dataset(tmp / "gpu-data", 64 if quick else 200)
    base = {"data": {"dataset": "csv", "root": str(root), "csv_file": "labels.csv", "columns": {"ref": "ref"},
                     "resize": [512, 384], "patch_size": 224, "train_patches": 25, "test_patches": 2},
            "model": {"backbone": "swin_tiny_patch4_window7_224"},
            "train": {"batch_size": 96, "epochs": 1, "device": "cuda"}}
    batches = 10 if quick else 30

    def attempt(name, fn):
        t = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001 - a benchmark row, not a run: record and go on
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        say(f"  {name}: {out[name]}  ({time.perf_counter() - t:.0f} s)")

    attempt("bf16_split", lambda: split_throughput({**base, "train": {**base["train"], "precision": "bf16"}},
                                                   batches))
    attempt("bf16_batch192", lambda: train_throughput(
        {**base, "train": {**base["train"], "precision": "bf16", "batch_size": 192}}, batches))
    variants = {"bf16": {"precision": "bf16"}, "fp32": {},
                "bf16+channels_last": {"precision": "bf16", "channels_last": True}}
    for name, train in variants.items():
        attempt(name, lambda train=train: train_throughput({**base, "train": {**base["train"], **train}}, batches))
    # packing: two trials sharing the card vs one alone, as two processes with their own CUDA contexts, which is
    # how Tune places two trials at gpu: 0.5 (no Ray here: a GPU host may not have it)
    packed = {**base, "train": {**base["train"], "precision": "bf16"}}
    attempt("bf16_one_process", lambda: concurrent_throughput(packed, batches, 1)[0])
    attempt("bf16_two_processes", lambda: concurrent_throughput(packed, batches, 2))
    alone, pair = out["bf16_one_process"], out["bf16_two_processes"]
    if "patches_per_s" in alone and isinstance(pair, list):
        out["packing_gain"] = sum(r["patches_per_s"] for r in pair) / alone["patches_per_s"]
        say(f"  packing_gain: {out['packing_gain']:.2f}")
    # last: compiling takes minutes and is the likeliest to fail on an unfamiliar host
    attempt("bf16+compile", lambda: train_throughput(
        {**base, "train": {**base["train"], "precision": "bf16", "compile": True}}, batches))
    return out


def _throughput_process(cfg_data: dict, batches: int, results) -> None:
    results.put(train_throughput(cfg_data, batches))


def concurrent_throughput(cfg_data: dict, batches: int, processes: int) -> list[dict]:
    """:func:`train_throughput` in ``processes`` processes at once (spawned: each gets its own CUDA context)."""
    return spawned(_throughput_process, (cfg_data, batches), processes, "a throughput process")


def spawned(target, args: tuple, processes: int, what: str) -> list:
    """``target(*args, results)`` in ``processes`` spawned processes at once; what each put on ``results``. A
    process that dies (its traceback is on stderr) stops the others and raises, instead of leaving this waiting."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, results)) for _ in range(processes)]
    for w in workers:
        w.start()
    out = []
    while len(out) < len(workers):
        try:
            out.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:
                for w in workers:
                    w.terminate()
                raise RuntimeError(f"{what} exited with {dead[0]}") from None
    for w in workers:
        w.join()
    return out


def run_bench(args) -> int:
    console = Console()
    # koniq (minutes and GBs) and horizon (half an hour on 2 cores) run only when named
    sections = args.only or [s for s in SECTIONS if s not in ("koniq", "horizon")]
    report = {"machine": _machine(), "quick": bool(args.quick)}
    os.environ.setdefault("IQA_TUNE_CACHE", str(cache_root(DataConfig())))
    with tempfile.TemporaryDirectory() as scratch:
        tmp = studies = Path(scratch)
        if args.keep:  # the studies only (not the koniq JPEGs and caches); a new folder each run
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            studies = Path(tempfile.mkdtemp(prefix="bench-", dir=args.keep))
            console.print(f"the benchmark studies stay in {studies}")
        for name in sections:
            console.print(f"[bold]bench {name}[/] ...")
            fn = {"data": lambda: bench_data(args.quick), "tune": lambda: bench_tune(args.quick, studies),
                  "eval": lambda: bench_eval(args.quick), "denormal": lambda: bench_denormal(args.quick),
                  "asha": lambda: bench_asha(args.quick, studies),
                  "horizon": lambda: bench_horizon(args.quick, studies),
                  "memory": lambda: bench_memory(args.quick, studies),
                  "search": lambda: bench_search(args.quick, studies),
                  "gpu": lambda: bench_gpu(args.quick, tmp),
                  "predict": lambda: bench_predict(args.quick, tmp),
                  "koniq": lambda: bench_koniq(args.quick, tmp, args.images)}[name]
            report[name] = fn()
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    table = Table(title=f"iqa-tune bench on {report['machine']}")
    table.add_column("section")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name in sections:
        for k, v in report[name].items():
            for kk, vv in (v.items() if isinstance(v, dict) else [("", v)]):
                label = f"{k} {kk}".strip()
                table.add_row(name, label, f"{vv:.4g}" if isinstance(vv, float) else str(vv))
    console.print(table)
    console.print(f"written: {args.out}")
    return 0
