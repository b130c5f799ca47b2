"""How the report names and orders things for a reader: human column and hyperparameter names, three decimals,
a CI as one cell, categorical values in their natural order. Presentation only: the numbers come from
``ranking.py`` untouched, and the Markdown and CSV keep the raw column names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iqa_tune.records import HP_PREFIX, XTEST_PREFIX, is_xtest_srcc

# searched keys by their everyday name; any other key falls back to its last part ("train.warmup_epochs" ->
# "warmup epochs"), or its whole path where two keys would share a name
HP_NAMES = {"loss.alpha": "alpha", "loss.ranking": "ranking", "loss.margin": "margin", "model.dropout": "dropout",
            "model.dropout_layers": "dropout layers", "model.pretrained": "pretrained", "model.backbone": "backbone",
            "model.freeze_stages": "frozen stages", "train.schedule": "schedule",
            "train.weight_decay": "weight decay", "train.lr": "lr", "train.lr_ratio": "lr ratio",
            "train.optimizer": "optimizer", "train.epochs": "epochs", "train.batch_size": "batch size",
            "train.reference_compat": "reference optimizer", "train.seed": "seed", "data.split.seed": "split seed",
            "data.patch_size": "patch size", "data.test_patches": "test patches"}
COLUMN_NAMES = {"rank": "rank", "trial": "trial", "ended": "ended", "reason": "reason", "epochs_run": "epochs run",
                "best_epoch": "best epoch", "test_srcc": "test SRCC", "test_plcc": "test PLCC",
                "test_ci": "test SRCC 95% CI", "vs_top": "vs top",
                "max_test_srcc (selected on test)": "max test SRCC (selected on test)",
                "train_patch_minus_test_srcc (last)": "train patch − test SRCC (last epoch)",
                "test_srcc_drop (best->last)": "test SRCC drop after best",
                "diff_vs_top": "Δ test SRCC vs top", "diff_ci": "Δ 95% CI"}
UPPER = {"srcc": "SRCC", "plcc": "PLCC", "krcc": "KRCC"}
# the diagnosis signals per epoch (SIGNALS.md), in the order the diagnosis reads them; cross-dataset sets follow
SIGNAL_ORDER = ("test_srcc", "train_eval_srcc", "test_disagreement", "test_srcc_patch")
XTEST = XTEST_PREFIX


def signal_columns(columns) -> list[str]:
    """The diagnosis signals among ``columns``, in reading order, the cross-dataset SRCCs last by name."""
    cols = list(columns)
    return [c for c in SIGNAL_ORDER if c in cols] + sorted(c for c in cols if is_xtest_srcc(c))


def metric_label(name: str) -> str:
    """``val_srcc`` -> ``val SRCC``, ``train_srcc_patch`` -> ``train SRCC patch``, ``train_loss`` -> ``train loss``."""
    return " ".join(UPPER.get(p, p) for p in name.split("_"))


def hp_names(keys: list[str]) -> dict[str, str]:
    """Dotted searched keys (with or without ``hp.``) -> a short human name each, distinct."""
    bare = [k.removeprefix(HP_PREFIX) for k in keys]
    short = {k: HP_NAMES.get(b, b.rsplit(".", 1)[-1].replace("_", " ")) for k, b in zip(keys, bare)}
    taken = pd.Series(short).value_counts()
    return {k: (short[k] if taken[short[k]] == 1 else b) for k, b in zip(keys, bare)}


def column_name(col: str) -> str:
    if col.startswith(HP_PREFIX):
        return hp_names([col])[col]
    return COLUMN_NAMES.get(col, metric_label(col) if "_" in col else col)


def is_categorical(values: pd.Series) -> bool:
    """Strings and booleans are categories; numbers are numbers."""
    v = values.dropna()
    return not (pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v))


def natural_order(values) -> list:
    """Distinct values in the order a reader expects: numbers ascending (0.0 before 1.0), false before true,
    then words alphabetically; whatever the order the trials happened to run in."""
    distinct = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and math.isnan(v))))

    def key(v):
        if isinstance(v, (bool, np.bool_)):
            return (1, int(v), "")
        if isinstance(v, (int, float, np.integer, np.floating)):
            return (0, float(v), "")
        return (2, 0.0, str(v))

    return sorted(distinct, key=key)


def fmt(v, digits: int = 3) -> str:
    """A figure: three decimals; n/a for an undefined one; blank for a missing one."""
    if v is None or (isinstance(v, str) and not v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def fmt_value(v) -> str:
    """A hyperparameter value: three significant digits (a weight decay of 0.00346 stays readable)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return "" if v is None else str(v)


def fmt_ci(lo, hi) -> str:
    """A 95% CI as one cell."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return f"{lo:.3f} to {hi:.3f}"


def describe(row: pd.Series, hp_cols: list[str], inert: str = "") -> str:
    """A configuration in words: ``alpha 1, ranking patch, dropout 0.2``; keys without effect are left out."""
    names = hp_names(hp_cols)
    skip = set(filter(None, str(inert or "").split(",")))
    return ", ".join(f"{names[c]} {fmt_value(row[c])}" for c in hp_cols if c.removeprefix(HP_PREFIX) not in skip)
