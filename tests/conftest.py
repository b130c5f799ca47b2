import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """One decoded-image cache (and demo dataset) for the whole session, outside the repo."""
    path = Path(os.environ.get("IQA_TUNE_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["IQA_TUNE_CACHE"] = str(path)
    return path


def cli(*args, cwd=None, timeout=600):
    """Run the iqa-tune command as a user does."""
    return subprocess.run([sys.executable, "-m", "iqa_tune.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
