"""The documentation: the site builds strictly, the generated reference holds every key of the typed config and
nothing else, every command's --help ends with examples that parse, and the commands and space files quoted in the
pages are ones iqa-tune accepts."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from iqa_tune import config, docgen, space
from iqa_tune.cli import EXAMPLES, parser
from iqa_tune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def _walk(cls: type, prefix: str) -> set[str]:
    """Every dotted key of a dataclass, found without docgen: the other side of the comparison."""
    out = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        out.add(path)
        tp = typing.get_type_hints(cls)[f.name]
        args = [tp, *typing.get_args(tp)]
        args += [b for a in args for b in typing.get_args(a)]  # list[Section] | None
        inner = [a for a in args if dataclasses.is_dataclass(a)]
        if inner:
            out |= _walk(inner[0], path)
    return out


def _page_keys(page: str) -> set[str]:
    """The dotted keys the generated page lists: each table row's key under its section heading."""
    keys, section = set(), None
    for line in page.splitlines():
        heading = re.match(r"## (?:`([\w.]+)`|Top level)", line)
        if heading:
            section = heading.group(1) or ""
        m = re.match(r"\| `(\w+)` \|", line)
        if m and section is not None and section != "search":
            keys.add(f"{section}.{m.group(1)}" if section else m.group(1))
    return keys


def test_config_reference_lists_exactly_the_config_keys():
    expected = _walk(config.RunConfig, "") | _walk(space.StudyConfig, "study") | {"study"}
    listed = _page_keys(docgen.config_page()) | {"study"}
    assert listed - expected == set(), "keys in the reference that the config does not have"
    assert expected - listed == set(), "config keys missing from the reference"


def test_every_key_and_primitive_has_a_description():
    undocumented = [k.path for k in docgen.all_keys() if not k.section and not k.doc]
    assert undocumented == [], "give these fields a comment in the source (it is their documentation)"
    page = docgen.config_page()
    for name in space.PRIMITIVES:
        assert docgen.primitive_comment(name), f"search primitive {name} has no comment in space.PRIMITIVES"
        assert f"| `{name}` |" in page


@dataclasses.dataclass
class Item:
    name: str = "x"  # the item's name


@dataclasses.dataclass
class Holder:
    items: list[Item] = dataclasses.field(default_factory=list)  # several sections of one shape


def test_a_list_of_sections_is_documented_key_by_key():
    rows = {k.path: k for k in docgen.keys(Holder)}
    assert rows["items"].section and rows["items"].type == "list of sections"
    assert rows["items.name"].doc == "the item's name"


def test_reference_reads_defaults_and_checks_from_the_config():
    rows = {k.path: k for k in docgen.all_keys()}
    assert rows["train.lr"].default == str(config.TrainConfig().lr)
    assert rows["train.batch_size"].check == "must be >= 2"
    assert rows["data.split.train"].check == "must be in [0, 1]"
    assert rows["study.scheduler.reduction_factor"].check == "must be > 1"
    assert "ranking" in rows["loss.alpha"].doc


def test_every_command_ends_with_examples_that_parse():
    p = parser()
    commands = docgen.subcommands(p)
    assert set(EXAMPLES) <= set(commands), "EXAMPLES in iqa_tune/cli.py names a command the parser lacks"
    for name, command in commands.items():
        text = docgen.help_text(command).rstrip()
        parts = re.split(r"\nexamples:\s*\n", text, flags=re.I)
        assert len(parts) == 2, f"iqa-tune {name} --help must end with examples (cli.EXAMPLES, or an epilog)"
        examples = [line.strip() for line in parts[1].strip().splitlines() if line.strip()]
        assert examples and all(line.startswith(f"iqa-tune {name}") for line in examples), name
        for line in examples:
            p.parse_args(shlex.split(line.split(" #")[0])[1:])  # SystemExit (a failed test) if it does not parse


def test_cli_page_shows_every_command():
    page = docgen.cli_page()
    for name, command in docgen.subcommands(parser()).items():
        assert f"\n## {name}\n" in page
        assert docgen.help_text(command).rstrip() in page


def _code_blocks(path: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_quoted_in_the_docs_parse(page):
    p = parser()
    for _, block in _code_blocks(page):
        for line in block.splitlines():
            line = line.split(" #")[0].strip().rstrip("&").strip()
            if line.startswith("iqa-tune ") and "..." not in line:
                try:
                    p.parse_args(shlex.split(line)[1:])
                except SystemExit as e:
                    pytest.fail(f"{page.name}: `{line}` does not parse (exit {e.code})")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_space_files_quoted_in_the_docs_are_valid(page, tmp_path, monkeypatch):
    # the docs' data folders are the user's, absent here: keys, types and names are checked, not the label files
    # of data.extra_tests that validate also reads (those checks: tests/test_bad_inputs.py)
    monkeypatch.setattr(space, "extra_catalogs", lambda data: [])
    sections = {f.name for f in dataclasses.fields(config.RunConfig)} | {"search", "study"}
    for lang, block in _code_blocks(page):
        if lang != "yaml":
            continue
        data = yaml.safe_load(block)
        if not isinstance(data, dict) or not set(data) <= sections:
            continue
        path = tmp_path / "quoted.yaml"
        path.write_text(block)
        try:
            space.load_space(str(path))
        except UserError as e:
            pytest.fail(f"{page.name}: a space file in the docs is refused: {e}")


def test_site_builds_strictly(tmp_path):
    """mkdocs build --strict: a broken link or anchor, a page missing from the nav or a nav entry without a page
    fails; the generated pages are in the site."""
    out = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (out / "reference" / "config.html").read_text()
    assert "reduction_factor" in page and "patches_per_image" in page
    assert "confirm" in (out / "reference" / "cli.html").read_text()
    assert (out / "changelog.html").is_file()
