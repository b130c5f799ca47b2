"""The reference pages of the documentation, generated from the code that owns each fact.

Keys, types, defaults and range checks come from the typed config (``iqa_tune.config``, ``iqa_tune.space``): the
dataclass fields and their ``check`` metadata at run time, and each field's comment (trailing, or the comment lines
just above it) from the source with :mod:`tokenize`, so the comment written beside a field stays the one
description of it. The command-line page comes from ``iqa_tune.cli.parser()``: every subcommand it holds, its
``--help`` as the user sees it. The MkDocs hook ``docs/hooks.py`` calls :func:`pages` on every build, so the site
can never show a key or a command the code does not have (or miss one it has); ``tests/test_docs.py`` checks the
tables against the dataclasses and the examples against the parser.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import os
import tokenize
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from . import config, space
from .records import SELECTION_METRICS

HELP_WIDTH = 100  # --help on the CLI page is rendered at this width whatever the terminal


@dataclass(frozen=True)
class KeyDoc:
    path: str  # dotted key, e.g. train.lr
    type: str
    default: str
    check: str  # the range check's message ("must be > 0"), or ""
    doc: str  # the field's comment in the source
    section: bool  # a nested section (a dataclass), documented in its own table


# ------------------------------------------------------------------------------------------------------------------
# field comments and checks, read from the source


@cache
def _comments(module) -> dict[int, str]:
    """Line number -> comment text of every comment in ``module``'s source."""
    source = inspect.getsource(module)
    return {tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}


@cache
def _class_fields(module, cls_name: str) -> dict[str, ast.AnnAssign]:
    tree = ast.parse(inspect.getsource(module))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return {n.target.id: n for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def field_comment(cls: type, name: str) -> str:
    """The comment lines right above the field, then its trailing comment, joined into one text."""
    module = inspect.getmodule(cls)
    node = _class_fields(module, cls.__name__)[name]
    comments = _comments(module)
    above, line = [], node.lineno - 1
    while line in comments and _is_comment_line(module, line):
        above.insert(0, comments[line])
        line -= 1
    trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
    return " ".join(p for p in above + trailing if p)


@cache
def _source_lines(module) -> list[str]:
    return inspect.getsource(module).splitlines()


def _is_comment_line(module, line: int) -> bool:
    return _source_lines(module)[line - 1].lstrip().startswith("#")


def check_text(cls: type, name: str) -> str:
    """What a field's range check demands, in its own words: the "must ..." strings of the check function (a
    lambda in the field, or a named function), else its docstring's first line."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    fn = f.metadata.get("check")
    if fn is None:
        return ""
    node = _class_fields(inspect.getmodule(cls), cls.__name__)[name].value
    lam = next((n for n in ast.walk(node) if isinstance(n, ast.Lambda)), None) if node is not None else None
    if lam is None:
        try:
            lam = ast.parse(inspect.getsource(fn))
        except (OSError, TypeError):
            lam = None
    texts = [n.value for n in ast.walk(lam) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("must")] if lam is not None else []
    if texts:
        return "; ".join(texts)
    return f"checked by `{fn.__module__}.{fn.__name__}`"


# ------------------------------------------------------------------------------------------------------------------
# walking the typed config


def _section_type(tp) -> type | None:
    """The dataclass a field holds: itself, optional (``ConfirmConfig | None``) or as the items of a list (each
    item a section of the same keys); else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) not in (typing.Union, types.UnionType, list):
        return None
    found = [_section_type(a) for a in typing.get_args(tp)]
    found = [a for a in found if a is not None]
    return found[0] if len(found) == 1 else None


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value).replace("True", "true") \
        .replace("False", "false")


def type_name(tp) -> str:
    """``list[int] | int | null``: the config's own spelling, with the items of a list."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (list, dict):
        return f"{typing.get_origin(tp).__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    return "any" if tp is typing.Any else config._type_name(tp)


def keys(cls: type, prefix: str = "") -> Iterator[KeyDoc]:
    """Every key of ``cls`` and of the sections inside it, depth first, in source order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        inner = _section_type(hints[f.name])
        kind = "list of sections" if inner is not None and _is_list(hints[f.name]) else "section"
        yield KeyDoc(path, type_name(hints[f.name]) if inner is None else kind, _default(f),
                     check_text(cls, f.name), field_comment(cls, f.name), inner is not None)
        if inner is not None:
            yield from keys(inner, path)


# the top-level sections of the files, each one dataclass
RUN_SECTIONS = {"data": config.DataConfig, "model": config.ModelConfig, "loss": config.LossConfig,
                "train": config.TrainConfig}
STUDY_SECTION = ("study", space.StudyConfig)


def all_keys() -> list[KeyDoc]:
    """Every key a space file can hold (the run schema, then ``study:``), plus the run config's own keys."""
    out = list(keys(config.RunConfig))
    out += list(keys(STUDY_SECTION[1], STUDY_SECTION[0]))
    return out


# ------------------------------------------------------------------------------------------------------------------
# Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def anchor(path: str) -> str:
    return path.replace(".", "-")


def _table(rows: list[KeyDoc]) -> list[str]:
    out = ["| key | type | default | check | meaning |", "|---|---|---|---|---|"]
    for k in rows:
        name = k.path.rpartition(".")[2]
        if k.section:
            doc = " ".join(p for p in (k.doc, f"[its keys](#{anchor(k.path)})") if p)
            out.append(f"| `{name}` | {k.type} | {_cell(_code(k.default))} |  | {_cell(doc)} |")
            continue
        kinds = " or ".join(_code(t) for t in k.type.split(" | "))  # a code span cannot hold an escaped |
        out.append(f"| `{name}` | {kinds} | {_cell(_code(k.default))} | {_cell(k.check)} | {_cell(k.doc)} |")
    return out


def _sections(all_rows: list[KeyDoc]) -> dict[str, list[KeyDoc]]:
    """Rows grouped by the section that holds them ("" = the top level)."""
    groups: dict[str, list[KeyDoc]] = {}
    for k in all_rows:
        groups.setdefault(k.path.rpartition(".")[0], []).append(k)
    return groups


def _class_doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # the signature a dataclass without a docstring gets
        return ""
    return " ".join(doc.split()).replace("``", "`")


def _primitives() -> list[str]:
    out = ["| primitive | arguments | draws | declared to Tune as | meaning |", "|---|---|---|---|---|"]
    for name, p in space.PRIMITIVES.items():
        args = {None: "a non-empty list of values", 2: "`[lo, hi]`", 3: "`[lo, hi, q]`"}[p.arity]
        draws = "every value (a grid axis)" if p.draw is None else "floats" if p.draws_floats else "one value"
        out.append(f"| `{name}` | {args} | {draws} | `tune.{p.sampler}` | {_cell(primitive_comment(name))} |")
    return out


def primitive_comment(name: str) -> str:
    """The comment written on (or just above) a primitive's entry in ``space.PRIMITIVES``."""
    source = _source_lines(space)
    comments = _comments(space)
    line = next(i + 1 for i, text in enumerate(source) if text.lstrip().startswith(f'"{name}": Primitive('))
    above = []
    i = line - 1
    while i in comments and _is_comment_line(space, i):
        above.insert(0, comments[i])
        i -= 1
    end = line
    while not source[end - 1].rstrip().split("#")[0].rstrip().endswith(("),", ")")):
        end += 1
    trailing = next((comments[n] for n in range(line, end + 1) if n in comments and not _is_comment_line(space, n)),
                    "")
    return " ".join(p for p in above + [trailing] if p)


def config_page() -> str:
    """docs/reference/config.md: every key of a run config and a space file."""
    rows = all_keys()
    groups = _sections(rows)
    out = ["# Configuration reference", "",
           "Generated from `iqa_tune/config.py` and `iqa_tune/space.py` on every build of this site: the keys, "
           "types and defaults are the dataclasses' own, the *check* column is the message of the key's range "
           "check, and *meaning* is the comment beside the field in the source. A run config "
           "(`iqa-tune train`) holds `data`, `model`, `loss` and `train` (and `name`, `out_dir`); a space file "
           "(`iqa-tune run`) holds the same sections, shared by all trials, plus `search` and `study`. "
           "For how they work together, see [Space files](../space.md).", ""]
    out += ["## Top level of a run config", "", *_table(groups[""]), ""]
    for key in [STUDY_SECTION[0] if k.path == "study.name" else k.path for k in rows
                if k.section or k.path == "study.name"]:
        doc = _class_doc(_resolve(key))
        out += [f"## `{key}` {{#{anchor(key)}}}", ""] + ([doc, ""] if doc else []) + [*_table(groups[key]), ""]
        if key == "study":
            out += ["`study.metric` is one of: " + ", ".join(f"`{m}` ({mode})" for m, mode in
                                                            SELECTION_METRICS.items()) +
                    " (a test metric never selects).", ""]
    out += ["## `search` {#search}", "",
            "Each searched key is a dotted (or nested) key of the run schema above, mapped to one primitive: "
            "`loss.alpha: {grid: [0.0, 1.0]}`. The primitives, from `iqa_tune/space.py`:", "",
            *_primitives(), ""]
    return "\n".join(out)


def _resolve(path: str) -> type:
    """The dataclass of a section path (``data.split`` -> SplitConfig)."""
    top, _, rest = path.partition(".")
    cls = space.StudyConfig if top == STUDY_SECTION[0] else config.RunConfig
    names = rest.split(".") if top == STUDY_SECTION[0] and rest else path.split(".")
    if top == STUDY_SECTION[0] and not rest:
        return cls
    for name in names:
        cls = _section_type(typing.get_type_hints(cls)[name])
    return cls


# ------------------------------------------------------------------------------------------------------------------
# the command line


def subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand of the parser, in the order they were added (predict, export: whatever it holds)."""
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def help_text(p: argparse.ArgumentParser) -> str:
    """``--help`` at a fixed width, so the page does not depend on the terminal that built it."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return p.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_page() -> str:
    """docs/reference/cli.md: every command's --help, as printed."""
    from .cli import parser

    p = parser()
    helps = {a.dest: a.help for a in next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
             ._choices_actions}
    out = ["# Command-line reference", "",
           "Generated from the argument parser (`iqa_tune/cli.py`) on every build of this site: what "
           "`iqa-tune COMMAND --help` prints. Every command ends with examples. Exit codes: 0 done; 1 every "
           "trial errored (`run`, `confirm`); 2 bad input (a one-line message naming the file and key or row, "
           "nothing started or nothing computed lost); 130 interrupted (resumable).", "", "| command | what it does |", "|---|---|"]
    out += [f"| [`{name}`](#{name}) | {_cell(helps.get(name) or '')} |" for name in subcommands(p)]
    out += ["", "## `iqa-tune`", "", "```text", help_text(p).rstrip(), "```", ""]
    for name, sp in subcommands(p).items():
        out += [f"## {name}", "", "```text", help_text(sp).rstrip(), "```", ""]
    return "\n".join(out)


def pages() -> dict[str, str]:
    """Site path -> Markdown of every generated page."""
    return {"reference/config.md": config_page(), "reference/cli.md": cli_page()}
