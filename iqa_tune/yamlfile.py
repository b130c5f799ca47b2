"""Strict reading of config and space files: ``yaml.safe_load`` semantics, minus its silent cases.

PyYAML keeps the last of two equal keys in a mapping without a word, so a second ``train:`` section silently
replaces the first. The loader here is PyYAML's SafeLoader (safe tags only, never arbitrary objects) with a
mapping constructor that refuses duplicates and names both lines. Empty files, top-level sections left null,
non-UTF-8 and binary files are refused too, each with a message naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import UserError


class StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys (merge keys ``<<`` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first_line.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # unhashable key: SafeLoader's own error says so
                    continue
                if line != key_node.start_mark.line + 1:
                    raise UserError(f"{self.name}: line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                    f"(first given at line {line}); YAML would keep only the last: remove one")
        return super().construct_mapping(node, deep=deep)


def utf16_problem(raw: bytes, path: Path) -> str | None:
    """A message for text saved as UTF-16 (Windows editors and Excel's "Unicode text"), whose NUL bytes would
    otherwise read as "binary": the encoding, and the command that converts it. None for anything else."""
    boms = {b"\xff\xfe": "UTF-16LE", b"\xfe\xff": "UTF-16BE"}
    if raw[:2] in boms and raw[:4] != b"\xff\xfe\0\0":  # not UTF-32LE's BOM
        encoding, source = boms[raw[:2]], "UTF-16"  # iconv reads the byte order from the BOM
    else:
        head = raw[:256] if len(raw) % 2 == 0 else b""
        odd, even = head[1::2], head[0::2]
        if len(head) < 4 or (odd.count(0) != len(odd) and even.count(0) != len(even)):
            return None
        if odd.count(0) == even.count(0):  # nothing but NULs
            return None
        encoding = source = "UTF-16LE" if odd.count(0) == len(odd) else "UTF-16BE"
    return (f"{path}: {encoding} text, not UTF-8; convert it, e.g. iconv -f {source} -t UTF-8 {path} > "
            f"{path.with_name(path.stem + '-utf8' + path.suffix)}, and use the new file")


def _text(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read: {e.strerror}") from None
    problem = utf16_problem(raw, p)
    if problem:
        raise UserError(problem)
    if b"\0" in raw:
        raise UserError(f"{p}: a binary file, not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        f"save it as UTF-8") from None


def read_yaml(path: str | os.PathLike) -> dict:
    """A config or space file as a mapping; every problem is a :class:`UserError` naming the file."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: a folder, not a YAML file")
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    text = _text(p)
    loader = StrictLoader(text)
    loader.name = str(p)  # marks in PyYAML's messages then name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    if data is None:
        raise UserError(f"{p}: empty file (no settings in it)")
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of sections (data:, model:, train:, ...) at the top level, "
                        f"got {type(data).__name__}")
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    for key, value in data.items():
        if value is None:
            at = f"line {lines[str(key)]}: " if str(key) in lines else ""
            raise UserError(f"{p}: {at}{key}: empty (null); give it a value or remove the line")
    return data

