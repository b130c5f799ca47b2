"""What ran: iqa-tune's version, the git commit of a source checkout, the versions of the libraries that decide
the numbers, and the GPU. Recorded with every study (``study.yaml``) and every ``iqa-tune train`` run
(``versions.json``); the report's footer shows it. Ray is looked up, never imported.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import CHECKOUT, __version__

LIBRARIES = ("torch", "timm", "ray", "numpy")


def _git() -> dict:
    """The commit of the checkout this package runs from, and whether it had uncommitted changes."""
    if not (Path(CHECKOUT) / ".git").exists():
        return {"git": "not a git checkout (installed package)"}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", CHECKOUT, *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except FileNotFoundError:
        return {"git": "unknown: git is not installed"}
    except (subprocess.SubprocessError, OSError) as e:
        return {"git": f"unknown: git failed ({e})"}


def _library(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _crop_kernel() -> str:
    """``compiled`` where the C crop kernel loads, ``numpy`` where the install had no compiler or the built file
    does not load here (the same crops, slower: a data-path figure depends on it)."""
    from .patches import crop_kernel

    return crop_kernel()


def collect() -> dict:
    """Versions of iqa-tune (and its git commit), the libraries, Python, the GPU model (None: none) and which crop
    kernel loads."""
    return {"iqa_tune": __version__, **_git(), **{name: _library(name) for name in LIBRARIES},
            "python": platform.python_version(), "gpu": _gpu(), "crop_kernel": _crop_kernel()}


def summary(versions: dict) -> str:
    """One line: 'iqa-tune 0.1.0 (git 1a2b3c4, uncommitted changes), torch 2.14.1, ..., GPU none, crops
    compiled'."""
    if "git_commit" in versions:
        where = f"git {versions['git_commit'][:10]}" + (", uncommitted changes" if versions.get("git_dirty") else "")
    else:
        where = versions.get("git", "git unknown")
    libs = ", ".join(f"{name} {versions.get(name) or 'absent'}" for name in LIBRARIES)
    kernel = f", crops {versions['crop_kernel']}" if "crop_kernel" in versions else ""
    return (f"iqa-tune {versions.get('iqa_tune')} ({where}), {libs}, Python {versions.get('python')}, "
            f"driver GPU {versions.get('gpu') or 'none'}{kernel}")
