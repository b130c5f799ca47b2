"""The spaces and configs that ship with iqa-tune, found by name: ``iqa-tune run demo``, ``iqa-tune train
demo_train``, ``iqa-tune spaces``.

They live in search_spaces/ and configs/ at the top of the repository; a wheel holds them as package data
(``iqa_tune/search_spaces/``, setup.cfg's package_dir), a source checkout beside the package. A command-line
argument that is an existing path is always that path; otherwise it is a shipped name, with or without ``.yaml``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from . import CHECKOUT
from .errors import UserError, did_you_mean

KINDS = {"space": "search_spaces", "config": "configs"}  # what a command takes -> the folder that ships them


def folder(kind: str) -> Path:
    """The folder of shipped files of ``kind``: inside the installed package, else the source checkout's."""
    installed = Path(str(files(__package__) / KINDS[kind]))
    return installed if installed.is_dir() else Path(CHECKOUT) / KINDS[kind]


def shipped(kind: str) -> dict[str, Path]:
    """Name -> file of every shipped ``kind`` ('space' or 'config'), sorted by name."""
    base = folder(kind)
    return {p.stem: p for p in sorted(base.glob("*.yaml"))} if base.is_dir() else {}


def resolve(arg: str, kind: str) -> str:
    """``arg`` if it is an existing path, else the shipped file of that name; an unknown name lists the names."""
    if Path(arg).expanduser().exists():
        return arg
    names = shipped(kind)
    name = arg.removesuffix(".yaml")
    if name in names:
        return str(names[name])
    listing = ", ".join(names) or "none"
    raise UserError(f"{arg}: no such file, and no shipped {kind} of that name{did_you_mean(name, names)}; "
                    f"shipped {kind}s: {listing} (iqa-tune spaces)")


def description(path: Path) -> str:
    """The first comment line of a shipped file: what it is, in one line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def listing() -> str:
    """What ``iqa-tune spaces`` prints: each shipped space and config, one line each."""
    lines = []
    for kind, command in (("space", "iqa-tune run NAME"), ("config", "iqa-tune train NAME")):
        lines.append(f"shipped {kind}s, in {folder(kind)} ({command}, or copy one and edit it):")
        named = shipped(kind)
        width = max(map(len, named), default=0)
        lines += [f"  {name:<{width}}  {description(path)}" for name, path in named.items()] or ["  (none)"]
    return "\n".join(lines)
