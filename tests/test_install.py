"""Install anywhere: the wheel holds the package, its namespaced subpackages and the shipped spaces and configs;
installed into a fresh environment, it validates and runs a study by name from a folder outside the repository.

The fresh venv reuses the project's environment for the heavy dependencies (torch, Ray) without seeing the
project's own install: ``--system-site-packages`` would expose the interpreter's site-packages, not this venv's,
so the test adds a ``.pth`` line naming the project environment's site-packages instead. A path in a ``.pth`` is
appended to ``sys.path`` without running the ``.pth`` files found there, so an editable install of the checkout
(setuptools' finder, started from its own ``.pth``) stays off, and the wheel's copy in the new venv comes first.
"""

import os
import shutil
import site
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow

SOURCES = ("iqa_tune", "reports", "trainables", "search_spaces", "configs", "setup.cfg", "setup.py",
           "pyproject.toml", "README.md")


def _run(cmd, **kw):
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built offline from a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src])
    return next((tmp / "dist").glob("iqa_tune-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv holding the wheel, with the project environment's packages reachable through a .pth."""
    env_dir = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    python = env_dir / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(purelib, "_project_env.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: pip sees the project's own iqa-tune through the .pth and must leave it alone
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--ignore-installed", wheel], env=_clean_env())
    return env_dir


def _clean_env() -> dict:
    """The environment without the checkout on PYTHONPATH: what a user of the installed command has."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_wheel_holds_the_namespaced_packages_and_the_shipped_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("iqa_tune/cli.py", "iqa_tune/shipped.py", "iqa_tune/reports/build.py",
                     "iqa_tune/trainables/hyperiqa.py", "iqa_tune/search_spaces/demo.yaml",
                     "iqa_tune/search_spaces/koniq_swin.yaml", "iqa_tune/search_spaces/seed_alpha.yaml",
                     "iqa_tune/configs/demo_train.yaml"):
        assert expected in names
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"iqa_tune"}  # no top-level reports/trainables
    from iqa_tune.patches import crop_kernel

    if crop_kernel() == "compiled":  # this machine compiles: so does the wheel's build, from the copied sources
        assert any(n.startswith("iqa_tune/_gather.") and n.endswith((".so", ".pyd")) for n in names), names


def test_installed_command_validates_and_runs_a_shipped_space_by_name(venv, tmp_path):
    python, command = venv / "bin" / "python", venv / "bin" / "iqa-tune"
    env = _clean_env()
    where = _run([python, "-c", "import iqa_tune, iqa_tune.reports.build, iqa_tune.trainables.hyperiqa as t; "
                                "print(iqa_tune.__file__); print(t.__file__)"], cwd=tmp_path, env=env).stdout
    assert all(line.startswith(str(venv)) for line in where.split()), where  # the wheel's copy, not the checkout

    spaces = _run([command, "spaces"], cwd=tmp_path, env=env).stdout
    assert "demo " in spaces and "koniq_swin" in spaces and "demo_train" in spaces
    valid = _run([command, "validate", "demo"], cwd=tmp_path, env=env).stdout
    assert "valid" in valid and "trials:" in valid
    unknown = subprocess.run([command, "validate", "dmeo"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and "did you mean 'demo'" in unknown.stderr

    space = {"data": {"dataset": "demo", "patch_size": 32, "train_patches": 2, "test_patches": 2, "limit": 160,
                      "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
             "model": {"backbone": "resnet_nano"},
             "train": {"epochs": 1, "batch_size": 16, "threads": 1},
             "search": {"loss.alpha": {"grid": [0.0]}},
             "study": {"name": "one", "storage": "results", "scheduler": {"type": "none"}}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(space))
    _run([command, "run", "one.yaml", "--no-dashboard"], cwd=tmp_path, env=env)
    ranking = pd.read_csv(tmp_path / "results/one/report/ranking.csv")
    assert list(ranking["ended"]) == ["completed"]
    versions = yaml.safe_load((tmp_path / "results/one/study.yaml").read_text())["versions"]
    assert versions["git"].startswith("not a git checkout") and versions["torch"]
    footer = (tmp_path / "results/one/report/ranking.md").read_text().strip().splitlines()[-1]
    assert f"torch {versions['torch']}" in footer
