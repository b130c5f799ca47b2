import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def ray_runtime(tmp_path_factory):
    """The tests' studies share a local Ray instance of their own (iqa_tune.instance), not one a study running
    beside the tests on this machine started; at the end of the session it is stopped instead of idling out."""
    import json
    import signal

    folder = tmp_path_factory.mktemp("ray-runtime")
    os.environ["IQA_TUNE_RUNTIME"] = str(folder)
    yield folder
    try:
        supervisor = json.loads((folder / "instance.json").read_text())["supervisor"]
        os.kill(int(supervisor.split("-")[0]), signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """One decoded-image cache (and demo dataset) for the whole session, outside the repo."""
    path = Path(os.environ.get("IQA_TUNE_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["IQA_TUNE_CACHE"] = str(path)
    return path


def cli(*args, cwd=None, timeout=600, env=None):
    """Run the iqa-tune command as a user does (``env``: variables set on top of this process's)."""
    return subprocess.run([sys.executable, "-m", "iqa_tune.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})


def koniq_like_csv(folder: Path, n: int, size=(1024, 768)) -> Path:
    """A ``csv`` dataset of ``n`` JPEGs (scikit-image photos resized to ``size``): labels.csv with path, score,
    ref, one content per image."""
    from PIL import Image

    from iqa_tune.demo_data import PHOTOS, photo

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,score,ref"]
    for i in range(n):
        _, loader, index = PHOTOS[i % len(PHOTOS)]
        photo(loader, index).resize(size, Image.BICUBIC).save(folder / f"images/{i:04d}.jpg", quality=90)
        rows.append(f"images/{i:04d}.jpg,{100 * i / max(n - 1, 1):.3f},{i}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_image(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> None:
    """A random RGB PNG (or whatever the suffix says)."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def write_livec(root: Path, names: list[str], mos=None, names_key: str = "AllImages_release", size=(64, 48)) -> Path:
    """A LIVE Challenge release: Data/AllImages_release.mat (N x 1 cell of names), Data/AllMOS_release.mat (1 x N),
    and Images/ holding every name but the first 7 (the trial images, dropped by convention)."""
    import numpy as np
    from scipy.io import savemat

    for n in names[7:]:
        write_image(root / "Images" / n, *size)
    (root / "Data").mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    savemat(root / "Data/AllImages_release.mat", {names_key: cell})
    mos = np.arange(len(names), dtype=float) if mos is None else mos
    savemat(root / "Data/AllMOS_release.mat", {"AllMOS_release": mos[None, :]})
    return root
