"""Dataset adapters on fixtures written in the real release formats, splits, the cache, and bad-data messages."""

import contextlib
import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_tune.cache import build_or_open
from iqa_tune.config import DataConfig, SplitConfig
from iqa_tune.datasets import load_catalog, split_catalog
from iqa_tune.patches import EvalPatches, Normalizer, TrainPatches

from .conftest import cli, write_image, write_livec


def _csv(path: Path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def koniq(root: Path, n=6, sets=False):
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    rows = []
    for i in range(n):
        write_image(root / "1024x768" / f"{i}.jpg", seed=i)
        rows.append([f"{i}.jpg", 1, 2, 3, 4, 5, 15, 1 + i * 0.5, 0.5, 10 * i])
    _csv(root / "koniq10k_scores_and_distributions.csv", header, rows)
    if sets:
        names = ["training", "training", "training", "validation", "test", "test"]
        _csv(root / "koniq10k_distributions_sets.csv", ["image_name", "set"],
             [[f"{i}.jpg", names[i % 6]] for i in range(n)])
    return root


def test_koniq_labels_official_split_and_default_resize(tmp_path):
    root = koniq(tmp_path / "koniq", sets=True)
    cat = load_catalog(DataConfig(dataset="koniq10k", root=str(root)))
    assert cat.scores.tolist() == [0, 10, 20, 30, 40, 50]
    assert cat.resize == [512, 384]  # 512 wide x 384 tall: aspect kept, not the reference's swap
    assert load_catalog(DataConfig(dataset="koniq10k", root=str(root), label="mos")).scores[1] == 1.5
    split = split_catalog(cat, SplitConfig())
    assert split["train"].tolist() == [0, 1, 2] and split["val"].tolist() == [3] and split["test"].tolist() == [4, 5]


def test_livec_drops_the_seven_trial_images(tmp_path):
    names = [f"t{i}.bmp" for i in range(7)] + [f"{i}.bmp" for i in range(5)]
    root = write_livec(tmp_path / "livec", names)
    cat = load_catalog(DataConfig(dataset="livec", root=str(root)))
    assert cat.paths == [f"Images/{i}.bmp" for i in range(5)]
    assert cat.scores.tolist() == [7, 8, 9, 10, 11]


def test_kadid_splits_by_reference(tmp_path):
    root = tmp_path / "kadid"
    rows = []
    for ref in range(1, 11):
        for d in range(1, 4):
            name = f"I{ref:02d}_{d:02d}_01.png"
            write_image(root / "images" / name, seed=ref * 10 + d)
            rows.append([name, f"I{ref:02d}.png", 5 - d * 0.5, 0.1])
    _csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    cat = load_catalog(DataConfig(dataset="kadid10k", root=str(root)))
    split = split_catalog(cat, SplitConfig(train=0.6, val=0.2, test=0.2, seed=3))
    refs = {k: {cat.refs[i] for i in v} for k, v in split.items()}
    assert not refs["train"] & refs["val"] and not refs["train"] & refs["test"] and not refs["val"] & refs["test"]
    assert sum(len(v) for v in split.values()) == 30
    again = split_catalog(cat, SplitConfig(train=0.6, val=0.2, test=0.2, seed=3))
    assert all(np.array_equal(split[k], again[k]) for k in split)  # deterministic per seed
    other = split_catalog(cat, SplitConfig(train=0.6, val=0.2, test=0.2, seed=4))
    assert not np.array_equal(split["test"], other["test"])


def test_spaq_reads_the_xlsx(tmp_path):
    from openpyxl import Workbook

    root = tmp_path / "spaq"
    wb = Workbook()
    wb.active.append(["Image name", "MOS", "Brightness"])
    for i in range(4):
        write_image(root / "TestImage" / f"{i:05d}.jpg", w=80, h=60)
        wb.active.append([f"{i:05d}.jpg", 20.0 * i, 50])
    (root / "Annotations").mkdir(parents=True)
    wb.save(root / "Annotations/MOS and Image attribute scores.xlsx")
    cat = load_catalog(DataConfig(dataset="spaq", root=str(root)))
    assert cat.scores.tolist() == [0, 20, 40, 60] and cat.resize == 512


def test_cache_is_reused_and_crops_are_fixed(tmp_path):
    root = koniq(tmp_path / "k2")
    cat = load_catalog(DataConfig(dataset="koniq10k", root=str(root)))
    first = build_or_open(cat, [40, 30], tmp_path / "cache", progress=False)
    second = build_or_open(cat, [40, 30], tmp_path / "cache", progress=False)
    assert first.decoded == 6 and second.decoded == 0
    assert second.image(2).shape == (30, 40, 3)
    assert np.array_equal(second.image(2), np.asarray(Image.open(root / cat.paths[2]).resize((40, 30), Image.BILINEAR)))
    idx = np.arange(6)
    a = EvalPatches(second, idx, cat.scores, cat.paths, patch_size=16, test_patches=5, batch_size=8)
    b = EvalPatches(second, idx, cat.scores, cat.paths, patch_size=16, test_patches=5, batch_size=8)
    assert np.array_equal(a.ys, b.ys) and np.array_equal(a.xs, b.xs)
    batches = list(TrainPatches(second, idx, cat.scores, patch_size=16, train_patches=4, patches_per_image=2,
                                batch_size=8, flip=True).batches(seed=0, epoch=0))
    assert sum(len(x.labels) for x in batches) == 24
    for batch in batches:  # patches of one image travel in pairs, with their image's label
        assert (batch.image[::2] == batch.image[1::2]).all()
        assert np.allclose(batch.labels.numpy(), cat.scores[batch.image.numpy()])



def test_train_crops_are_cache_slices_and_mirrored_after_the_transfer(tmp_path):
    """Crops travel unmirrored; Normalizer mirrors exactly the listed patches. Rebuilding each patch from the cache
    with the batch's own random draws pins both halves down."""
    import torch

    root = koniq(tmp_path / "k3")
    cat = load_catalog(DataConfig(dataset="koniq10k", root=str(root)))
    cache = build_or_open(cat, [40, 30], tmp_path / "cache", progress=False)
    idx = np.arange(6)
    train = TrainPatches(cache, idx, cat.scores, patch_size=16, train_patches=8, patches_per_image=1,
                         batch_size=48, flip=True)
    batch = next(train.batches(seed=3, epoch=1))
    rng = np.random.default_rng([3, 1])  # the same draws, in the order batches() makes them
    img = idx[train.plan(rng)[0]]
    h, w = cache.index[img, 1], cache.index[img, 2]
    ys, xs = rng.integers(0, h - 16 + 1), rng.integers(0, w - 16 + 1)
    mirror = rng.random(len(img)) < 0.5
    assert np.array_equal(batch.flips.numpy(), np.flatnonzero(mirror)) and 0 < mirror.sum() < len(img)
    expected = np.stack([cache.image(i)[y:y + 16, x:x + 16] for i, y, x in zip(img, ys, xs)])
    assert np.array_equal(batch.pixels.numpy(), expected)
    unit = Normalizer(torch.device("cpu"), mean=(0,) * 3, std=(1 / 255,) * 3)  # x -> x: only the layout changes
    out = unit(batch.pixels.clone(), batch.flips).permute(0, 2, 3, 1).numpy()
    expected[mirror] = expected[mirror][:, :, ::-1]
    assert np.array_equal(out, expected.astype(np.float32))


def _kernel(name: str):
    """The crop path under test: the compiled kernel (must be built where CI runs: it has a compiler) or numpy."""
    from iqa_tune import patches

    if name == "numpy":
        return patches.numpy_crops()
    if patches.crop_kernel() != "compiled":
        if os.environ.get("CI"):
            pytest.fail("the compiled crop kernel (iqa_tune/_gather.c) was not built by the install")
        pytest.skip("the compiled crop kernel is not built here (no C compiler at install)")
    return contextlib.nullcontext()


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_the_batch_gather_cuts_the_same_crops_as_slicing_from_images_of_different_sizes(tmp_path, kernel):
    """``crop`` gathers rows by byte offset; images of other widths and a crop ending on the cache's last byte
    must come out exactly as numpy slices of each image, with the C kernel and without it."""
    from iqa_tune.cache import ImageCache
    from iqa_tune.patches import crop

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(30, 40), (50, 33), (64, 64), (31, 90)]]
    flat = np.concatenate([im.reshape(-1) for im in images])
    flat.tofile(tmp_path / "pixels.u8")
    offsets = np.cumsum([0] + [im.size for im in images])[:-1]
    index = np.array([[o, *im.shape[:2]] for o, im in zip(offsets, images)], dtype=np.int64)
    cache = ImageCache(tmp_path, np.memmap(tmp_path / "pixels.u8", dtype=np.uint8, mode="r"), index, 0)
    patch = 24
    img = np.array([0, 1, 2, 3, 1, 3, 2, 0, 3])
    ys = np.array([rng.integers(0, images[i].shape[0] - patch + 1) for i in img])
    xs = np.array([rng.integers(0, images[i].shape[1] - patch + 1) for i in img])
    ys[-1], xs[-1] = 31 - patch, 90 - patch  # the bottom-right corner of the last image: the cache's last byte
    with _kernel(kernel):
        out = crop(cache, img, ys, xs, patch).numpy()
        small = crop(cache, img, ys + 1, xs + 2, 16).numpy()  # a second width on the same cache
    for k, i in enumerate(img):
        assert np.array_equal(out[k], images[i][ys[k]:ys[k] + patch, xs[k]:xs[k] + patch])
    for k, i in enumerate(img):
        assert np.array_equal(small[k], images[i][ys[k] + 1:ys[k] + 17, xs[k] + 2:xs[k] + 18])
    assert not cache.rows(16).flags.writeable  # the map is read-only, and so is every view of it
    writable = ImageCache(tmp_path, np.zeros(64, np.uint8), index[:1], 0)
    assert not writable.rows(16).flags.writeable  # and the row view is read-only whatever the map's mode


def test_the_crop_kernel_refuses_crops_outside_the_cache_and_a_wrong_output_size():
    """The C kernel checks every crop before it copies: one that would read past either end is an IndexError naming
    the crop, never a read outside the map, and ``out`` must hold exactly the crops asked for."""
    with _kernel("compiled"):
        from iqa_tune import _gather
    src = np.arange(100, dtype=np.uint8)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    out = np.zeros((2, 3, 4), np.uint8)
    _gather.crops(src, i64(0, 72), i64(10, 12), 3, 4, out)  # the second crop ends on the last byte
    assert np.array_equal(out, np.stack([src[[[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]],
                                         src[[[72, 73, 74, 75], [84, 85, 86, 87], [96, 97, 98, 99]]]]))
    with pytest.raises(IndexError, match="crop 1 .rows from byte 73, stride 12. reads outside the 100-byte"):
        _gather.crops(src, i64(0, 73), i64(10, 12), 3, 4, out)
    with pytest.raises(IndexError, match="crop 0 .rows from byte 30, stride -20"):  # the last row before byte 0
        _gather.crops(src, i64(30), i64(-20), 3, 4, np.zeros(12, np.uint8))
    with pytest.raises(ValueError, match="out holds 16 bytes, 2 crops of 3 x 4 need 24"):
        _gather.crops(src, i64(0, 1), i64(4, 4), 3, 4, np.zeros(16, np.uint8))
    with pytest.raises(ValueError, match="one length"):
        _gather.crops(src, i64(0, 1), i64(4), 3, 4, out)
    read_only = np.zeros(12, np.uint8)
    read_only.setflags(write=False)
    with pytest.raises(TypeError, match="read-write"):
        _gather.crops(src, i64(0), i64(4), 3, 4, read_only)
    with pytest.raises(TypeError, match="first must be an int64 array"):  # never read as the wrong width
        _gather.crops(src, np.array([0], np.int32), i64(4), 3, 4, np.zeros(12, np.uint8))
    # sizes and strides whose products overflow 64 bits are refused, not wrapped around into a passing check
    with pytest.raises(ValueError, match="overflow a buffer size"):
        _gather.crops(src, i64(0), i64(0), 2**62 + 1, 4, np.zeros(4, np.uint8))
    with pytest.raises(IndexError, match="crop 0"):
        _gather.crops(src, i64(0), i64(-2**63 + 5), 3, 4, np.zeros(12, np.uint8))
    with pytest.raises(IndexError, match="crop 0"):
        _gather.crops(src, i64(0), i64(2**62), 3, 4, np.zeros(12, np.uint8))
    writable = np.arange(100, dtype=np.uint8)
    with pytest.raises(ValueError, match="overlaps"):
        _gather.crops(writable, i64(0), i64(4), 3, 4, writable[50:62])


def _bad_run(tmp_path, root, **data):
    cfg = tmp_path / "bad.yaml"
    import yaml

    # 10 images split 4/3/3: val and test can be scored, so the run gets as far as the broken file
    split = {"train": 0.4, "val": 0.3, "test": 0.3}
    cfg.write_text(yaml.safe_dump({"data": {"dataset": "koniq10k", "root": str(root), "split": split, **data},
                                   "model": {"backbone": "resnet_micro"}, "out_dir": str(tmp_path / "runs")}))
    return cli("train", cfg)


@pytest.mark.parametrize("breakage, expected", [
    ("missing_image", "row 4: image not found"),
    ("truncated", "unreadable or truncated image"),
    ("no_column", "missing column(s) MOS_zscore"),
    ("not_a_number", "row 3: MOS_zscore is not a number: 'abc'"),
])
def test_bad_data_stops_with_file_and_row(tmp_path, breakage, expected):
    root = koniq(tmp_path / "bad", n=10)
    label_file = root / "koniq10k_scores_and_distributions.csv"
    rows = list(csv.reader(open(label_file)))
    if breakage == "missing_image":
        (root / "1024x768/2.jpg").unlink()
    elif breakage == "truncated":
        data = (root / "1024x768/1.jpg").read_bytes()
        (root / "1024x768/1.jpg").write_bytes(data[: len(data) // 3])
    elif breakage == "no_column":
        rows = [r[:-1] for r in rows]
    elif breakage == "not_a_number":
        rows[2][-1] = "abc"
    _csv(label_file, rows[0], rows[1:])
    result = _bad_run(tmp_path, root, resize=[64, 48], patch_size=16)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    if breakage != "truncated":
        assert "koniq10k_scores_and_distributions.csv" in result.stderr.replace("\n", "")


def test_cache_folder_is_readable_by_other_users(tmp_path):
    root = koniq(tmp_path / "k3", n=2)
    cat = load_catalog(DataConfig(dataset="koniq10k", root=str(root)))
    cache = build_or_open(cat, [40, 30], tmp_path / "cache", progress=False)
    assert cache.folder.stat().st_mode & 0o755 == 0o755  # a shared cache serves every user's trials


def test_prefetch_producer_stops_when_the_consumer_does():
    import threading

    from iqa_tune.patches import prefetch

    produced = []

    def batches():
        for i in range(100):
            produced.append(i)
            yield i

    before = threading.active_count()
    gen = prefetch(batches(), depth=2)
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()  # what an exception in the training loop does to the generator
    assert threading.active_count() == before
    assert len(produced) <= 5  # stopped after at most the queue's depth more


def test_a_last_batch_of_one_patch_is_dropped_and_counted_out():
    # 5 patches in batches of 2: batch norm cannot train on the single patch left over
    train = TrainPatches(None, np.arange(5), np.zeros(5), patch_size=8, train_patches=1, patches_per_image=1,
                         batch_size=2, flip=False)
    plan = train.plan(np.random.default_rng(0))
    assert [len(b) for b in plan] == [2, 2] and len(train) == 2
    grouped = TrainPatches(None, np.arange(5), np.zeros(5), patch_size=8, train_patches=2, patches_per_image=2,
                           batch_size=4, flip=False)
    assert [len(b) for b in grouped.plan(np.random.default_rng(0))] == [4, 4, 2] and len(grouped) == 3


@pytest.mark.slow
def test_koniq_scale_bench_shares_one_cache_between_trials(tmp_path):
    """The KonIQ-scale benchmark on 40 images: release-sized JPEGs made on demand, a cache of exactly their decoded
    bytes, and four concurrent trials whose mappings of that cache are shared pages, not four copies."""
    from iqa_tune.bench import bench_koniq

    out = bench_koniq(True, tmp_path, images=40, backbone="resnet_micro", say=lambda *a: None)
    assert len(list((tmp_path / "koniq-like/images").glob("*.jpg"))) == 40
    sizes = {Image.open(p).size for p in (tmp_path / "koniq-like/images").glob("*.jpg")}
    assert sizes == {(1024, 768)}
    assert out["cache_mb"] == pytest.approx(40 * 512 * 384 * 3 / 2**20, rel=0.01)  # pixels + a tiny index
    assert out["decode_images_per_s_1_threads"] > 0 and out["decode_speedup"] > 0
    pss, rss = out["four_trials_cache_pss_mb"], out["four_trials_cache_rss_mb"]
    assert len(pss) == 4 and min(rss) > 0  # every trial read its crops from the mapped cache file
    # PSS divides a page among the processes that map it: one shared map sums to the pages any trial touched (at
    # most the file), private copies would sum to every trial's full count
    assert sum(pss) <= 1.01 * out["cache_mb"]
    assert sum(pss) < 0.9 * sum(rss)


def _dies(results):
    raise SystemExit(3)


def test_a_spawned_bench_process_that_dies_raises_instead_of_leaving_the_bench_waiting():
    from iqa_tune.bench import spawned

    with pytest.raises(RuntimeError, match="a test process exited with 3"):
        spawned(_dies, (), 2, "a test process")


def test_the_data_bench_reports_the_crop_path_against_a_copy_and_keeps_its_folder(tmp_path):
    """``bench --only data --quick``: the crops beat the reference's decode-per-patch by a wide margin, every
    figure is a positive number, and ``--keep`` leaves a folder behind."""
    import json

    out = tmp_path / "bench.json"
    run = cli("bench", "--only", "data", "--quick", "--out", out, "--keep", tmp_path / "kept")
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())["data"]
    assert data["speedup_crop"] > 20  # hundreds measured on 2 cores; the decode per patch is the slow side
    assert data["torch_copy_threads"] >= 1
    for key in ("crop_bandwidth_gb_s", "numpy_copy_gb_s", "torch_copy_gb_s",
                "fraction_of_copy", "fraction_of_torch_copy", "first_pass_gb_s",
                "first_pass_page_faults"):  # the first pass maps the freshly built cache: it cannot fault 0 pages
        assert data[key] > 0, key
    assert data["fraction_of_copy"] == pytest.approx(data["crop_bandwidth_gb_s"] / data["numpy_copy_gb_s"])
    # both gathers ran on the same batches; the shipped one is named, and it is the one the figures above describe
    from iqa_tune.patches import crop_kernel

    assert data["crop_kernel"] == crop_kernel()
    for key in ("numpy_crop_patches_per_s", "kernel_speedup", "fraction_of_copy_numpy_crop",
                "crop_64px_bandwidth_gb_s", "fraction_of_copy_64px", "fraction_of_copy_64px_numpy_crop",
                "kernel_speedup_64px"):
        assert data[key] > 0, key
    assert data["kernel_speedup"] == pytest.approx(data["ours_crop_patches_per_s"] / data["numpy_crop_patches_per_s"])
    # the cache key's cost per image against a content hash, measured on the same files in one run
    assert data["stat_key_ms_per_image"] > 0 and data["content_hash_ms_per_image"] > 0
    assert data["content_hash_vs_stat_key"] == pytest.approx(data["content_hash_ms_per_image"]
                                                             / data["stat_key_ms_per_image"])
    (kept,) = (tmp_path / "kept").iterdir()
    assert kept.name.startswith("bench-") and str(kept) in run.stdout.replace("\n", "")
