"""Pure functions over the epochs table: ranking at each trial's best epoch, bootstrap uncertainty, split-seed
groups and marginals. Nothing here prints or writes.

Tune's ``Result.metrics`` is the last reported epoch, even with ``scope="all"``; a trial is ranked here by the
study metric at its best epoch, and its test figures are read at that epoch (the honest number), next to the
maximum test SRCC over epochs (the protocol of the reference paper, labelled as selected on test).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iqa_tune.metrics import srcc
from iqa_tune.records import HP_PREFIX, best_index


def best_rows(epochs: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The row of each trial's best epoch by ``metric``, by the rule the solver uses (``records.best_index``:
    first on ties, an undefined value last)."""
    picked = [g.index[best_index(g[metric].tolist(), mode)] for _, g in epochs.sort_values("epoch").groupby("trial")]
    return epochs.loc[picked]


def rank_trials(epochs: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_srcc",
                mode: str = "max") -> pd.DataFrame:
    hp_cols = [c for c in trials.columns if c.startswith(HP_PREFIX)]
    rows = []
    best = best_rows(epochs, metric, mode).set_index("trial") if len(epochs) else pd.DataFrame()
    for _, t in trials.iterrows():
        row = {"trial": t["trial"], "ended": t["ended"], "reason": t["reason"], "epochs_run": t["epochs_run"]}
        if t["trial"] in best.index:
            b = best.loc[t["trial"]]
            hist = epochs[epochs["trial"] == t["trial"]].sort_values("epoch")
            last = hist.iloc[-1]
            row.update({
                "best_epoch": int(b["epoch"]), metric: b[metric],
                "val_plcc": b.get("val_plcc", np.nan),
                "test_srcc": b.get("test_srcc", np.nan), "test_plcc": b.get("test_plcc", np.nan),
                "max_test_srcc (selected on test)": hist["test_srcc"].max() if "test_srcc" in hist else np.nan,
                "train_patch_minus_test_srcc (last)": last.get("train_srcc_patch", np.nan) - last.get("test_srcc", np.nan),
                # from the test SRCC at the best epoch (chosen on the study metric), never from a test-selected one
                "test_srcc_drop (best->last)": b.get("test_srcc", np.nan) - last.get("test_srcc", np.nan),
            })
        row.update({c: t[c] for c in hp_cols})
        row["inert"] = t.get("inert", "")
        rows.append(row)
    df = pd.DataFrame(rows)
    if metric not in df:
        df[metric] = np.nan
    df = df.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


def _interval(label: np.ndarray, statistic, n: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap of ``statistic(index)`` over resampled test images; seeded, so reruns agree."""
    idx = np.random.default_rng(seed).integers(0, len(label), size=(n, len(label)))
    boots = np.array([statistic(i) for i in idx])
    boots = boots[np.isfinite(boots)]
    if len(boots) < n / 2:  # mostly undefined (constant predictions): no interval to speak of
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def bootstrap_srcc(label: np.ndarray, pred: np.ndarray, n: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(SRCC, lo, hi) over test images."""
    lo, hi = _interval(label, lambda i: srcc(pred[i], label[i]), n, seed, level)
    return float(srcc(pred, label)), lo, hi


def paired_bootstrap(label: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = 1000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(SRCC_a - SRCC_b, lo, hi) resampling the same test images for both: the interval of the difference."""
    lo, hi = _interval(label, lambda i: srcc(pred_a[i], label[i]) - srcc(pred_b[i], label[i]), n, seed, level)
    return float(srcc(pred_a, label) - srcc(pred_b, label)), lo, hi


def add_uncertainty(ranking: pd.DataFrame, predictions: dict[str, tuple], n: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """95% CI of each trial's test SRCC, and a paired bootstrap against the top-ranked trial with predictions.

    ``predictions``: trial -> (paths, labels, preds) of its best epoch. Trials are paired on the test images
    they share (same split seed); others are marked not comparable.
    """
    df = ranking.copy()
    for col in ("test_srcc_ci_lo", "test_srcc_ci_hi", "diff_vs_top", "diff_ci_lo", "diff_ci_hi"):
        df[col] = np.nan
    df["vs_top"] = ""
    top = next((t for t in df["trial"] if t in predictions), None)
    for i, t in enumerate(df["trial"]):
        if t not in predictions:
            continue
        paths, label, pred = predictions[t]
        _, lo, hi = bootstrap_srcc(label, pred, n, seed)
        df.loc[i, ["test_srcc_ci_lo", "test_srcc_ci_hi"]] = lo, hi
        if t == top:
            df.loc[i, "vs_top"] = "top"
            continue
        tp, tl, tpred = predictions[top]
        if len(tp) != len(paths) or not np.array_equal(tp, paths):
            df.loc[i, "vs_top"] = "other test set"
            continue
        d, dlo, dhi = paired_bootstrap(label, pred, tpred, n, seed)
        df.loc[i, ["diff_vs_top", "diff_ci_lo", "diff_ci_hi"]] = d, dlo, dhi
        if not np.isfinite(dlo):
            df.loc[i, "vs_top"] = "n/a"  # an undefined SRCC on one side: no difference to test
            continue
        df.loc[i, "vs_top"] = "worse" if dhi < 0 else ("better" if dlo > 0 else "indistinguishable")
    return df


def group_split_seeds(ranking: pd.DataFrame, metric: str, mode: str,
                      seed_col: str = HP_PREFIX + "data.split.seed") -> pd.DataFrame | None:
    """Trials that differ only in split seed, grouped: median and spread over splits (the IQA convention)."""
    if seed_col not in ranking:
        return None
    hp = [c for c in ranking.columns if c.startswith(HP_PREFIX) and c != seed_col]
    df = ranking.dropna(subset=[metric]).copy()
    df["_key"] = df[hp].astype(str).agg(" | ".join, axis=1) if hp else "all"
    rows = []
    for _, g in df.groupby("_key"):
        rows.append({**{c: g.iloc[0][c] for c in hp}, "splits": g[seed_col].nunique(), "trials": len(g),
                     f"median {metric}": g[metric].median(), f"min {metric}": g[metric].min(),
                     f"max {metric}": g[metric].max(), "median test_srcc": g["test_srcc"].median(),
                     "test_srcc spread": g["test_srcc"].max() - g["test_srcc"].min()})
    out = pd.DataFrame(rows).sort_values(f"median {metric}", ascending=(mode == "min")).reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def marginals(ranking: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """For each searched hyperparameter (few distinct values), the metric per value: median, best, count."""
    rows = []
    ranked = ranking.dropna(subset=[metric])
    inert = ranked["inert"].fillna("").str.split(",") if "inert" in ranked else pd.Series([[]] * len(ranked))
    for c in [c for c in ranked.columns if c.startswith(HP_PREFIX)]:
        # only the trials where the key had an effect: ranking granularity means nothing at alpha 0
        df = ranked.loc[np.array([c[len(HP_PREFIX):] not in keys for keys in inert], dtype=bool)]
        # few distinct values only: a sampled continuous value (one per trial) has no marginal to show
        if not 2 <= df[c].nunique() <= min(8, len(df) // 2):
            continue
        for value, g in df.groupby(c):
            best = g[metric].max() if mode == "max" else g[metric].min()
            rows.append({"hyperparameter": c[len(HP_PREFIX):], "value": value, "trials": len(g),
                         f"median {metric}": g[metric].median(), f"best {metric}": best,
                         "median test_srcc": g["test_srcc"].median()})
    return pd.DataFrame(rows)
