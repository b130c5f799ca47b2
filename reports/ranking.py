"""Pure functions over the epochs table: ranking at each trial's best epoch, bootstrap uncertainty (a paired
bootstrap against the top trial, Holm-adjusted over the comparisons), split-seed groups and marginals. Nothing
here prints or writes.

Tune's ``Result.metrics`` is the last reported epoch, even with ``scope="all"``; a trial is ranked here by the
study metric at its best epoch, and its test figures are read at that epoch (the honest number), next to the
maximum test SRCC over epochs (the protocol of the reference paper, labelled as selected on test).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from iqa_tune.metrics import srcc
from iqa_tune.records import HP_PREFIX, best_index

from .confirmation import LEVEL, holm


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


BOOTSTRAP_RESAMPLES = 2000  # enough for p-values near 0.05 after Holm's adjustment (the smallest is 1/2001)


def srcc_rows(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each row pair (ties averaged, as ``metrics.srcc``); NaN where undefined."""
    rp = stats.rankdata(pred, axis=1)
    rl = stats.rankdata(label, axis=1)
    rp -= rp.mean(axis=1, keepdims=True)
    rl -= rl.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rp * rl).sum(axis=1) / np.sqrt((rp * rp).sum(axis=1) * (rl * rl).sum(axis=1))
    return np.where(np.isfinite(out), out, np.nan)


def _resamples(label: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` resamples of the test images, seeded so that reruns agree."""
    return np.random.default_rng(seed).integers(0, len(label), size=(n, len(label)))


def _interval(boots: np.ndarray, n: int, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; NaN when they are mostly undefined (constant predictions)."""
    boots = boots[np.isfinite(boots)]
    if len(boots) < n / 2:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def _p_value(boots: np.ndarray, n: int) -> float:
    """Two-sided bootstrap p-value of "the difference is 0": twice the smaller tail beyond 0, with the +1 of a
    resampling test so that it is never 0."""
    boots = boots[np.isfinite(boots)]
    if len(boots) < n / 2:
        return math.nan
    tail = min((boots <= 0).sum(), (boots >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(boots) + 1)))


def bootstrap_srcc(label: np.ndarray, pred: np.ndarray, n: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(SRCC, lo, hi) over test images."""
    idx = _resamples(label, n, seed)
    lo, hi = _interval(srcc_rows(pred[idx], label[idx]), n, level)
    return float(srcc(pred, label)), lo, hi


RowStatistic = Callable[[np.ndarray], np.ndarray]  # resampled image indices (rows, images) -> a value per row
CHUNK_VALUES = 4_000_000  # values a statistic sees at once (a patch-level one: images x crops per row)


def paired_rows(stat_a: RowStatistic, stat_b: RowStatistic, n_images: int, n: int = BOOTSTRAP_RESAMPLES,
                seed: int = 0, level: float = 0.95, width: int = 1) -> tuple[float, float, float]:
    """(lo, hi, p) of statistic a minus statistic b, both computed on the same resamples of ``n_images`` images:
    the paired bootstrap behind every difference the report states (two trials on one test set, two epochs of one
    trial). ``width``: values per image the statistics touch (crops), to bound the memory of one chunk."""
    idx = _resamples(np.empty(n_images), n, seed)
    step = max(1, CHUNK_VALUES // max(1, n_images * width))
    boots = np.concatenate([stat_a(idx[i:i + step]) - stat_b(idx[i:i + step]) for i in range(0, n, step)])
    lo, hi = _interval(boots, n, level)
    return lo, hi, _p_value(boots, n)


def paired_bootstrap_test(label: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = BOOTSTRAP_RESAMPLES,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float, float, float]:
    """(SRCC_a - SRCC_b, lo, hi, p) resampling the same test images for both: the interval of the difference and
    the two-sided p-value of no difference."""
    lo, hi, p = paired_rows(lambda i: srcc_rows(pred_a[i], label[i]), lambda i: srcc_rows(pred_b[i], label[i]),
                            len(label), n, seed, level)
    return float(srcc(pred_a, label) - srcc(pred_b, label)), lo, hi, p


def paired_bootstrap(label: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(SRCC_a - SRCC_b, lo, hi): :func:`paired_bootstrap_test` without the p-value."""
    return paired_bootstrap_test(label, pred_a, pred_b, n, seed, level)[:3]


def add_uncertainty(ranking: pd.DataFrame, predictions: dict[str, tuple], n: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> pd.DataFrame:
    """95% CI of each trial's test SRCC, and a paired bootstrap against the top-ranked trial with predictions,
    its p-values Holm-adjusted over all the comparisons made (``p_vs_top_holm``; labels at 0.05).

    ``predictions``: trial -> (paths, labels, preds) of its best epoch. Trials are paired on the test images
    they share (same split seed); others are marked not comparable.
    """
    df = ranking.copy()
    for col in ("test_srcc_ci_lo", "test_srcc_ci_hi", "diff_vs_top", "diff_ci_lo", "diff_ci_hi", "p_vs_top",
                "p_vs_top_holm"):
        df[col] = np.nan
    df["vs_top"] = ""
    top = next((t for t in df["trial"] if t in predictions), None)
    compared = []
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
        d, dlo, dhi, p = paired_bootstrap_test(label, pred, tpred, n, seed)
        df.loc[i, ["diff_vs_top", "diff_ci_lo", "diff_ci_hi", "p_vs_top"]] = d, dlo, dhi, p
        if not np.isfinite(p):
            df.loc[i, "vs_top"] = "n/a"  # an undefined SRCC on one side: no difference to test
            continue
        compared.append(i)
    if compared:  # one family: every trial against the top, as many comparisons as were made
        df.loc[compared, "p_vs_top_holm"] = holm(df.loc[compared, "p_vs_top"].to_numpy(dtype=float))
    for i in compared:
        if df.loc[i, "p_vs_top_holm"] >= LEVEL:
            df.loc[i, "vs_top"] = "not significant"
        else:
            df.loc[i, "vs_top"] = "better" if df.loc[i, "diff_vs_top"] > 0 else "worse"
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
    out = pd.DataFrame(rows)
    if len(out):  # each value as its hyperparameter has it: a seed of 1 beside an lr of 1e-4 is not 1.0000
        out["value"] = pd.Series([r["value"] for r in rows], dtype=object)
    return out
