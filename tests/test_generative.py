"""Generative check: mutate the shipped run configs and spaces, and ``validate`` and a real one-epoch ``train`` on
the smallest backbone must agree: both accept, or both exit 2 with one line naming a key and no traceback. So the
next class of "validate accepts what then fails" is found here and not by a user.

The fixed settings of every shipped file (configs/*.yaml, the run-config part of search_spaces/*.yaml) are made
tiny first (resnet_nano, demo data limited to 160 images, 32 px patches, 1 epoch), then one or two mutations are
applied: a value replaced by an odd one (wrong type, out of range, non-finite, huge, odd strings and paths), a key
deleted, an unknown key added. The one disagreement allowed is a run that diverges (``train.lr: 1e308``):
nothing in a config says so before training, and train says it in one line.

The example count and seed are fixed and printed; IQA_TUNE_GEN_EXAMPLES and IQA_TUNE_GEN_SEED change them to
replay or widen a run.
"""

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

from iqa_tune import cli
from iqa_tune.config import RunConfig
from tests.conftest import ROOT

EXAMPLES = int(os.environ.get("IQA_TUNE_GEN_EXAMPLES", "24"))
SEED = int(os.environ.get("IQA_TUNE_GEN_SEED", "20261206"))
SHIPPED = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("search_spaces/*.yaml")])

TINY = {
    "data": {"dataset": "demo", "limit": 160, "patch_size": 32, "train_patches": 2, "test_patches": 2,
             "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0, "official": False}},
    "model": {"backbone": "resnet_nano", "pretrained": False, "freeze_stages": 0, "hyper_channels": 64,
              "target_in": 112, "target_dims": [56, 28, 14, 7]},
    "train": {"epochs": 1, "batch_size": 16, "patches_per_image": 2, "threads": 1, "precision": "fp32",
              "eval_batch_size": 64},
}
DROPPED = {"data": ("root", "label", "resize", "csv_file"), "model": ("checkpoint",)}  # the KonIQ files' data

ODD = [-1, 0, 1, 2, 0.5, -0.5, 1e308, -1e308, float("nan"), float("inf"), -float("inf"), 2 ** 70, -(2 ** 70),
       True, False, None, "", "x", "../../etc", "/dev/null", "a/b", "ünï", [], [1], [1, 2, 3, 4], {}, {"a": 1}]


def schema_keys(cls=RunConfig, prefix="") -> set[str]:
    """Every dotted key of the run schema: an error line names one of them."""
    import dataclasses
    import typing

    out = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.add(path)
        tp = typing.get_type_hints(cls)[f.name]
        for option in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(option):
                out |= schema_keys(option, path + ".")
    return out


KEYS = schema_keys()


def tiny(doc: dict, out_dir: Path) -> dict:
    """The fixed settings of a shipped file, made cheap to train."""
    doc = {k: v for k, v in json.loads(json.dumps(doc)).items() if k not in ("search", "study")}
    for section, values in TINY.items():
        doc.setdefault(section, {})
        for k in DROPPED.get(section, ()):
            doc[section].pop(k, None)
        doc[section].update(json.loads(json.dumps(values)))
    doc["out_dir"] = str(out_dir)
    return doc


def paths(doc: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in doc.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += paths(v, f"{prefix}{k}.")
    return out


def mutate(doc: dict, path: str, op: str, value) -> None:
    *parents, last = path.split(".")
    node = doc
    for k in parents:
        node = node[k]
    if op == "delete":
        node.pop(last)
    elif op == "unknown":
        node[last + "_x"] = value
    else:
        node[last] = value


def run(*argv: str) -> tuple[int, str]:
    """``iqa-tune ARGV`` in this process: (exit code, stderr). An exception escaping ``main`` is a traceback."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def one_line(cmd: str, code: int, err: str) -> str:
    assert code in (0, 2), f"{cmd}: exit {code}\n{err[-3000:]}"
    if code == 0:
        return ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{cmd}: not one error line:\n{err[-3000:]}"
    assert "Traceback" not in err
    assert any(re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", lines[0]) for k in KEYS), \
        f"{cmd}: the line names no key: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder to run in (a mutated relative path lands here, not in the repo), with the demo data built."""
    folder = tmp_path_factory.mktemp("generative")
    from iqa_tune.config import DataConfig
    from iqa_tune.datasets import load_catalog

    load_catalog(DataConfig(dataset="demo"))  # validate reads the demo data only once it exists
    return folder


mutation = st.tuples(st.sampled_from(["set", "set", "delete", "unknown"]), st.integers(0, 10 ** 6),
                     st.sampled_from(ODD))


@pytest.mark.generative
def test_validate_and_train_agree_on_mutated_shipped_files(workdir):
    print(f"\ngenerative: {EXAMPLES} examples, seed {SEED} (IQA_TUNE_GEN_EXAMPLES, IQA_TUNE_GEN_SEED to replay)")
    counts = {"both accept": 0, "both refuse": 0, "diverged": 0}

    @seed(SEED)
    # no shrinking: a failure is reported as generated (with its note), not after minutes of retraining
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(source=st.sampled_from(SHIPPED), mutations=st.lists(mutation, min_size=1, max_size=2))
    def check(source, mutations):
        index = len(list(workdir.glob("*.yaml")))
        doc = tiny(yaml.safe_load(source.read_text()), workdir / f"runs{index}")
        done = []
        for op, pick, value in mutations:
            keys = paths(doc)
            path = keys[pick % len(keys)]
            mutate(doc, path, op, value)
            done.append((op, path, value))
        note(f"{source.name}: {done}")
        config = workdir / f"example{index}.yaml"
        config.write_text(yaml.safe_dump(doc, allow_unicode=True))
        cwd = Path.cwd()
        os.chdir(workdir)
        try:
            v_code, v_err = run("validate", str(config))
            t_code, t_err = run("train", str(config))
        finally:
            os.chdir(cwd)
        v_line, t_line = one_line("validate", v_code, v_err), one_line("train", t_code, t_err)
        if v_code == 0 and "non-finite training loss" in t_line:
            counts["diverged"] += 1  # only training shows it: the one allowed disagreement
            return
        assert v_code == t_code, (f"{source.name} {done}: validate exit {v_code} {v_line!r}, "
                                  f"train exit {t_code} {t_line!r}")
        counts["both accept" if v_code == 0 else "both refuse"] += 1

    check()
    print(f"generative: {counts}")
    assert counts["both refuse"] and counts["both accept"]  # the mutations reach both outcomes
