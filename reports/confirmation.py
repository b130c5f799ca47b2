"""Confirmation over seeds (``iqa-tune confirm``): the configuration table, pure functions over the runs it left.

A study's trial is one training seed on one split, so the paired bootstrap of the ranking only covers which test
images were drawn. ``iqa-tune confirm`` retrains the top configurations by val with several training seeds (and
split seeds, where the dataset has no official split), the same seeds for each; this module reads those runs back
(``records.load_experiment`` on the ``confirm/`` folder of the study), and gives per configuration the mean and
95% t interval over runs of val and test SRCC at each run's best-val epoch, and a paired t-test of test SRCC
against the best configuration, Holm-adjusted over the comparisons (Holm 1979, "A simple sequentially rejective
multiple test procedure"). Nothing here prints or writes.

Why a t-test rather than a sign-flip (permutation) test: with n pairs the exact sign-flip test cannot go below
p = 2 / 2^n, so it needs 6 pairs to reach 0.05 even before Holm's adjustment; the t-test can decide with 3, at the
price of assuming roughly normal differences. With 3 seeds (2 degrees of freedom, t = 4.30) it calls a difference
only when it exceeds about 2.5 standard deviations of the per-seed differences: a weak test, which misses all but
large, consistent differences; "not significant" then means "not shown", never "equal".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from iqa_tune.records import (
    CONFIRM_DIR,
    DAMAGED,
    HP_PREFIX,
    best_index,
    load_experiment,
    study_settings,
)

from .labels import XTEST, signal_columns

LEVEL = 0.05  # family-wise error rate of the comparisons against the best configuration
SEED_COLS = ("train.seed", "data.split.seed")  # what varies between the runs of one configuration


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), made monotone, capped at 1.
    Undefined p-values (NaN) stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(np.isfinite(p))
    m, running = len(defined), 0.0
    for i, j in enumerate(defined[np.argsort(p[defined], kind="stable")]):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student's t interval of the mean; NaN values are left out, and one value has no interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def paired_t(differences) -> tuple[float, float, float, float]:
    """(mean difference, lo, hi, two-sided p) of a paired t-test on per-pair differences (NaN pairs left out)."""
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    mean, lo, hi = t_interval(d)
    if len(d) < 2:
        return mean, lo, hi, math.nan
    if np.ptp(d) <= 1e-12:  # no spread (up to rounding): t is undefined; one difference every time is no chance
        return mean, mean, mean, 1.0 if abs(mean) <= 1e-12 else 0.0
    return mean, lo, hi, float(stats.ttest_1samp(d, 0.0).pvalue)


# ----------------------------------------------------------------------------------------------------------------
# reading the runs back


def confirmation_runs(study_dir: Path) -> pd.DataFrame | None:
    """One row per run of the confirmation: its configuration, seeds, how it ended, and the study metric and the
    test figures at its best epoch by that metric. None when the study has no confirmation."""
    folder = Path(study_dir) / CONFIRM_DIR
    settings = study_settings(folder)
    plan = settings.get("confirm")
    if not plan or not folder.is_dir():
        return None
    epochs, trials = load_experiment(folder)
    trials = trials[trials["ended"] != DAMAGED] if len(trials) else trials  # a run whose params.json was cut
    if trials.empty:
        return None
    metric, mode = settings.get("metric", "val_srcc"), settings.get("mode", "max")
    rows = []
    for _, t in trials.iterrows():
        hist = epochs[epochs["trial"] == t["trial"]].sort_values("epoch") if len(epochs) else epochs
        row = {"trial": t["trial"], "configuration": _configuration_of(t, plan["configurations"]),
               **{seed: t.get(HP_PREFIX + seed) for seed in SEED_COLS}, "ended": t["ended"],
               "best_epoch": math.nan, metric: math.nan, "test_srcc": math.nan, "test_plcc": math.nan}
        if len(hist) and metric in hist:
            best = hist.iloc[best_index(hist[metric].tolist(), mode)]
            row.update({"best_epoch": int(best["epoch"]), metric: best[metric],
                        "test_srcc": best.get("test_srcc", math.nan), "test_plcc": best.get("test_plcc", math.nan)})
            row.update(_signals(best, hist.iloc[-1], signal_columns(hist.columns)))
        rows.append(row)
    runs = pd.DataFrame(rows)
    runs.attrs.update(metric=metric, mode=mode, plan=plan)
    return runs


def _signals(best: pd.Series, last: pd.Series, cols: list[str]) -> dict:
    """The diagnosis signals of a run at its best epoch and their change to its last epoch (``<signal>_change``)."""
    out = {}
    for c in cols:
        if c != "test_srcc":
            out[c] = best.get(c, math.nan)
        out[f"{c}_change"] = last.get(c, math.nan) - best.get(c, math.nan)
    return out


def _configuration_of(trial: pd.Series, configurations: list[dict]) -> str:
    """The configuration a run belongs to: the one whose values (the keys where the configurations differ) it
    carries."""
    for c in configurations:
        if all(_same(trial.get(HP_PREFIX + k), v) for k, v in c["values"].items()):
            return c["name"]
    return "?"


def _same(a, b) -> bool:
    """Equal as settings: numbers by value (a table may hold 1 as 1.0, or numpy scalars), the rest as JSON."""
    a, b = (v.item() if isinstance(v, np.generic) else v for v in (a, b))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return float(a) == float(b)
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------------------------
# the configuration table


def summarize(runs: pd.DataFrame, metric: str, mode: str, configurations: list[dict]) -> pd.DataFrame:
    """The configuration table from finished runs: mean and 95% t interval of ``metric`` and of test SRCC over
    runs, and a paired t-test of test SRCC against the best configuration (best mean ``metric``) on the runs the
    two share (same training seed and split), Holm-adjusted over the comparisons.

    ``configurations``: [{name, values, search_trials, search_metric}] in the order of the search's ranking."""
    done = runs[runs["ended"] == "completed"]
    rows = []
    for c in configurations:
        mine = done[done["configuration"] == c["name"]]
        m, mlo, mhi = t_interval(mine[metric])
        t, tlo, thi = t_interval(mine["test_srcc"])
        rows.append({"configuration": c["name"], "runs": len(mine), f"search {metric}": c.get("search_metric"),
                     metric: m, f"{metric}_ci_lo": mlo, f"{metric}_ci_hi": mhi,
                     "test_srcc": t, "test_srcc_ci_lo": tlo, "test_srcc_ci_hi": thi,
                     # the diagnosis signals (at the best epoch, and their change to the last), means over runs
                     **{s: mine[s].mean() for s in signal_names(runs)},
                     **{HP_PREFIX + k: v for k, v in c["values"].items()}})
    table = pd.DataFrame(rows)
    for col in ("diff_vs_best", "diff_ci_lo", "diff_ci_hi", "pairs", "p", "p_holm"):
        table[col] = np.nan
    table["vs_best"] = ""
    defined = table[metric].notna()
    if defined.any():
        scores = table[metric].where(defined, -np.inf if mode == "max" else np.inf)
        best = int(scores.idxmax() if mode == "max" else scores.idxmin())  # first on ties: the search's order
        _compare(table, done, best)
    table = table.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    cols = [c for c in table.columns if not c.startswith(HP_PREFIX)] + [c for c in table if c.startswith(HP_PREFIX)]
    return table[cols]


def signal_names(df: pd.DataFrame) -> list[str]:
    """The signal columns of a runs or configuration table: each signal at the best epoch and its change."""
    return [c for s in signal_columns(c.removesuffix("_change") for c in df) for c in (s, f"{s}_change")
            if c in df and c != "test_srcc"]


def _compare(table: pd.DataFrame, done: pd.DataFrame, best: int) -> None:
    """Fill the paired comparison of every configuration against row ``best``, in place."""
    keys = list(SEED_COLS)
    ref = done[done["configuration"] == table.loc[best, "configuration"]][[*keys, "test_srcc"]]
    table.loc[best, "vs_best"] = "best"
    compared = []
    for i in table.index.drop(best):
        mine = done[done["configuration"] == table.loc[i, "configuration"]][[*keys, "test_srcc"]]
        pairs = mine.merge(ref, on=keys, suffixes=("", "_best"))
        d = (pairs["test_srcc"] - pairs["test_srcc_best"]).to_numpy(dtype=float)
        mean, lo, hi, p = paired_t(d)
        table.loc[i, ["diff_vs_best", "diff_ci_lo", "diff_ci_hi", "pairs", "p"]] = (
            mean, lo, hi, int(np.isfinite(d).sum()), p)
        compared.append(i)
    if not compared:
        return
    table.loc[compared, "p_holm"] = holm(table.loc[compared, "p"].to_numpy(dtype=float))
    for i in compared:
        p, d = table.loc[i, "p_holm"], table.loc[i, "diff_vs_best"]
        if not np.isfinite(p):
            table.loc[i, "vs_best"] = "n/a"  # fewer than 2 shared runs: nothing to test
        elif p < LEVEL:
            table.loc[i, "vs_best"] = "better" if d > 0 else "worse"
        else:
            table.loc[i, "vs_best"] = "not significant"


def load_confirmation(study_dir: Path) -> pd.DataFrame | None:
    """The configuration table of a study's confirmation (see :func:`summarize`), or None when it has none.

    ``attrs`` carries what the method sentences need: metric, mode, planned and finished runs, seeds, splits."""
    runs = confirmation_runs(study_dir)
    if runs is None:
        return None
    metric, mode, plan = runs.attrs["metric"], runs.attrs["mode"], runs.attrs["plan"]
    table = summarize(runs, metric, mode, plan["configurations"])
    table.attrs.update(metric=metric, mode=mode, seeds=list(plan["seeds"]), split_seeds=list(plan["split_seeds"]),
                       planned=len(plan["configurations"]) * len(plan["seeds"]) * len(plan["split_seeds"]),
                       finished=int((runs["ended"] == "completed").sum()))
    return table


# ----------------------------------------------------------------------------------------------------------------
# rendering helpers (strings only; the report decides where they go)


def method_text(table: pd.DataFrame) -> str:
    """The method in two sentences, with this confirmation's numbers."""
    a = table.attrs
    metric, seeds, splits = a.get("metric", "val_srcc"), a.get("seeds", []), a.get("split_seeds", [0])
    runs = f"{len(seeds)} training seeds" + (f" x {len(splits)} splits" if len(splits) > 1 else "")
    n = max(len(table) - 1, 0)
    first = (f"The top {len(table)} configurations of the search by {metric} were each retrained from scratch with "
             f"the same {runs} (all epochs, no ASHA), and every run's test SRCC was read at its best {metric} epoch; "
             f"the intervals are 95% t intervals of the mean over those runs.")
    if n == 0:
        return first.replace("top 1 configurations", "top configuration").replace("were each", "was") + (
            " With one configuration there is nothing to compare: the interval is the spread over seeds.")
    return first + (f" Each configuration is compared with the best one (highest mean {metric}) by a paired t-test on "
                    f"the per-run differences of test SRCC, Holm-adjusted over the {n} comparison"
                    f"{'' if n == 1 else 's'} at {LEVEL:g}: with few seeds only large, consistent differences can "
                    "show, so 'not significant' means not shown, not equal.")


def progress_text(table: pd.DataFrame) -> str:
    """'' when every planned run finished; else how many did (the table covers those only)."""
    a = table.attrs
    if a.get("finished", 0) >= a.get("planned", 0):
        return ""
    return (f"Unfinished: {a['finished']} of {a['planned']} runs have finished and the table covers those only; "
            "`iqa-tune confirm STUDY --resume` continues.")


def _with_ci(m: float, lo: float, hi: float) -> str:
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.4f} ({lo:.3f}..{hi:.3f})" if np.isfinite(lo) else f"{m:.4f}"


def _signal_name(col: str) -> str:
    names = {"train_eval_srcc": "train-eval SRCC", "test_disagreement": "disagreement",
             "test_srcc_patch": "test patch SRCC"}
    return names.get(col) or f"{col.removeprefix(XTEST).removesuffix('_srcc')} SRCC"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The configuration table as strings, one column per figure with its interval: for Markdown, HTML and the
    terminal alike."""
    metric = table.attrs.get("metric", "val_srcc")
    name = metric.replace("_", " ").replace("srcc", "SRCC").replace("plcc", "PLCC").replace("krcc", "KRCC")
    out = pd.DataFrame({"rank": table["rank"], "configuration": table["configuration"], "runs": table["runs"]})
    out[f"{name} (95% CI)"] = [_with_ci(*r) for r in table[[metric, f"{metric}_ci_lo", f"{metric}_ci_hi"]].to_numpy()]
    out["test SRCC (95% CI)"] = [_with_ci(*r) for r in
                                 table[["test_srcc", "test_srcc_ci_lo", "test_srcc_ci_hi"]].to_numpy()]
    out["test diff vs best (95% CI)"] = [
        "" if v == "best" else _with_ci(*r)
        for v, r in zip(table["vs_best"], table[["diff_vs_best", "diff_ci_lo", "diff_ci_hi"]].to_numpy())]
    out["p (Holm)"] = ["" if not np.isfinite(p) else f"{p:.3f}" for p in table["p_holm"]]
    out["vs best"] = table["vs_best"]
    for signal in signal_columns(c.removesuffix("_change") for c in table):  # mean over runs (change after best)
        value, change = table.get(signal), table.get(f"{signal}_change")
        if change is None:  # a confirmation of an older iqa-tune: no signals recorded
            continue
        if signal == "test_srcc":
            out["test Δ after best"] = [f"{d:+.3f}" if np.isfinite(d) else "n/a" for d in change]
        elif value is not None and change is not None:
            out[_signal_name(signal) + " (Δ after best)"] = [
                f"{v:.3f} ({d:+.3f})" if np.isfinite(v) and np.isfinite(d) else "n/a" for v, d in zip(value, change)]
    for c in [c for c in table if c.startswith(HP_PREFIX)]:
        out[c] = table[c]
    out.attrs = dict(table.attrs)
    return out
