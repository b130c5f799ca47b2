"""The report's first lines: what the study found, in words generated from the ranking's numbers.

The best configuration is the one the study metric (val) picks; its test SRCC is read at its best val epoch with
the bootstrap CI, never a test-selected figure. How many configurations the paired test (``vs_top``) cannot
tell from it says how much of the ranking is noise; the overfitting verdict reads the top trials' curves after
their best epoch. Nothing here knows about a particular study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iqa_tune.records import HP_PREFIX
from iqa_tune.storage import is_uri

from .diagnosis import TOP, Change, diagnose
from .labels import describe, metric_label

NOT_SIGNIFICANT = ("indistinguishable", "not significant")  # vs_top labels of a difference the test cannot see
UNFINISHED = ("running", "pending", "paused")


@dataclass
class Finding:
    """One sentence of the headline; ``key`` names it for tests and for the page's markup."""

    key: str
    text: str


def progress(ranking: pd.DataFrame, resume: str = "iqa-tune run SPACE --resume",
             planned: int | None = None) -> Finding | None:
    """Running, pending or interrupted trials: the figures below are provisional. ``planned``: the study's trial
    count, of which Tune may not have created every trial yet."""
    ended = ranking["ended"].value_counts()
    running, pending = int(ended.get("running", 0)), int(ended.get("pending", 0) + ended.get("paused", 0))
    interrupted = int(ended.get("interrupted", 0))
    if running or pending:
        total = max(len(ranking), planned or 0)
        pending += total - len(ranking)
        waiting = f" and {pending} waiting (to start, or paused at a rung)" if pending else ""
        return Finding("progress", f"Study in progress: {running} of {total} trials still running{waiting}. "
                                   "The figures below will change; the report is rewritten whenever a trial ends.")
    if interrupted:
        return Finding("progress", f"The study was interrupted with {interrupted} of {len(ranking)} trials "
                                   f"unfinished: resume it with {resume}.")
    return None


def best(ranking: pd.DataFrame, metric: str) -> list[Finding]:
    hp_cols = [c for c in ranking if c.startswith(HP_PREFIX)]
    top = ranking.iloc[0]
    config = describe(top, hp_cols, top.get("inert", "")) or "the only configuration"
    trained = int(top.get("epochs_run", 0) or 0)
    where = f"trial {top['trial']}, epoch {int(top['best_epoch'])} of the {trained} it trained"
    out = [Finding("best", f"Best configuration by {metric_label(metric)}: {config} ({where}, {top['ended']}).")]
    lo, hi = top.get("test_srcc_ci_lo", np.nan), top.get("test_srcc_ci_hi", np.nan)
    ci = (f" (95% CI {lo:.3f} to {hi:.3f}, bootstrap over test images)" if np.isfinite(lo) and np.isfinite(hi)
          else " (no per-image predictions saved: no CI)")
    out.append(Finding("figures", f"{metric_label(metric)} {top[metric]:.3f}; test SRCC at that epoch "
                                  f"{top.get('test_srcc', np.nan):.3f}{ci}."))
    return out


def noise(ranking: pd.DataFrame, experiment: str) -> Finding | None:
    """How many other configurations the paired bootstrap cannot tell from the best, and what follows."""
    if "vs_top" not in ranking:
        return None
    labels = ranking["vs_top"].iloc[1:].fillna("").str.lower()
    tested = labels[labels.isin([*NOT_SIGNIFICANT, "worse", "better"])]
    if tested.empty:
        return None
    same = int(tested.isin(NOT_SIGNIFICANT).sum())
    worse, better = int((tested == "worse").sum()), int((tested == "better").sum())
    top = ranking.iloc[0]
    half = (top.get("test_srcc_ci_hi", np.nan) - top.get("test_srcc_ci_lo", np.nan)) / 2
    scale = (f" For scale: the best configuration's test CI reaches ±{half:.3f} around its value."
             if np.isfinite(half) else "")
    text = (f"{same} of the {len(tested)} other configurations tested on the same images "
            f"{'is' if same == 1 else 'are'} not significantly different from it on test (paired bootstrap), "
            f"{worse} significantly worse")
    text += f", {better} significantly better although val ranked {'it' if better == 1 else 'them'} lower." \
        if better else "."
    if same:
        text += (f" Their order against the best is not evidence: a confirmation over seeds (iqa-tune confirm "
                 f"{experiment}) retrains the leaders with several seeds and separates them.")
    if better:
        text += " Val and test disagree here: the val set may be too small to select on."
    return Finding("noise", text + scale)


def overfitting(ranking: pd.DataFrame, epochs: pd.DataFrame, metric: str,
                diagnoses: list | None = None) -> Finding | None:
    """Did the top trials' image-level test SRCC fall after their best epoch while the training images were ranked
    better? Read from the diagnosis (``diagnosis.py``: train-eval SRCC, the training images scored like test, and
    each change's paired bootstrap over images where crop predictions were saved); patch-level train SRCC stands in
    for train-eval in experiments that did not record it."""
    if epochs.empty or "test_srcc" not in epochs:
        return None
    diagnoses = diagnose(ranking, epochs, metric, top=TOP) if diagnoses is None else diagnoses
    judged = [d for d in diagnoses if d.judged]
    if not judged:
        return Finding("overfitting", "Overfitting: none of the top trials trained past its best val epoch, so "
                                      "there is nothing after it to judge.")
    parts, falls, noisy = [], [], 0
    for d in judged:
        test = d.changes["test_srcc"]
        train, name = _train_signal(d, epochs)
        if d.fell and train is not None and train.direction == "rose":
            falls.append(-test.delta)
        noisy += test.direction == "noise" and test.known
        seen = f", {name} {train.figures()}" if train is not None else ", no train signal recorded"
        parts.append(f"#{d.rank}: test {test.figures()}{seen} from epoch {d.best_epoch} to {d.last_epoch}")
    which = ("the top trial, which trained past its" if len(judged) == 1
             else f"the top {len(judged)} trials that trained past their")
    names = {_train_signal(d, epochs)[1] for d in judged} - {None}
    rose = " or ".join(TRAIN_SIGNALS[n] for n in sorted(names)) or "train SRCC"
    noise = f"in {noisy}, test changed inside its noise (paired bootstrap over test images): it cannot decide"
    if falls:
        verdict = (f"Overfitting in {len(falls)} of {which} best val epoch: image-level test SRCC fell after it "
                   f"while {rose} rose" + (f" ({noise})" if noisy else ""))
    elif noisy == len(judged):
        verdict = (f"Overfitting cannot be decided in {which} best val epoch: image-level test SRCC changed inside "
                   "its noise after it (paired bootstrap over test images)")
    else:
        verdict = (f"No overfitting in {which} best val epoch: image-level test SRCC did not fall while {rose} rose"
                   + (f" ({noise})" if noisy else ""))
    top = ranking.iloc[0]
    half = (top.get("test_srcc_ci_hi", np.nan) - top.get("test_srcc_ci_lo", np.nan)) / 2
    if falls and np.isfinite(half) and not all(d.changes["test_srcc"].known for d in judged):
        size = "larger than" if max(falls) > half else "within"
        verdict += f" (largest fall {max(falls):.3f}, {size} the test CI's half-width of {half:.3f})"
    return Finding("overfitting", f"{verdict}. " + "; ".join(parts) + ".")


TRAIN_SIGNALS = {"train-eval": "train-eval image SRCC (the training images scored like test)",
                 "train (patch)": "patch-level train SRCC"}


def _train_signal(d, epochs: pd.DataFrame):
    """(change, name) of the training images' fit: train-eval where recorded, else training-time patch SRCC."""
    if "train_eval_srcc" in d.changes:
        return d.changes["train_eval_srcc"], "train-eval"
    hist = epochs[epochs["trial"] == d.trial]
    if "train_srcc_patch" not in hist:
        return None, None
    at = hist.set_index("epoch")["train_srcc_patch"]
    return Change("train_srcc_patch", "train (patch)", float(at.get(d.best_epoch, np.nan)),
                  float(at.get(d.last_epoch, np.nan))), "train (patch)"


def confirmed(table: pd.DataFrame | None) -> Finding | None:
    """What the confirmation over seeds found, where there is one: it outranks the search's single-seed order."""
    if table is None or table.empty or "vs_best" not in table:
        return None
    best = table.iloc[0]
    values = describe(best, [c for c in table if c.startswith(HP_PREFIX)])
    labels = table["vs_best"].iloc[1:].fillna("").str.lower()
    same, worse = int(labels.isin(NOT_SIGNIFICANT).sum()), int((labels == "worse").sum())
    text = (f"Confirmed over seeds ({int(best['runs'])} runs each): the best configuration by mean val SRCC is "
            f"{values or best['configuration']}, test SRCC {best['test_srcc']:.3f} (95% CI "
            f"{best['test_srcc_ci_lo']:.3f} to {best['test_srcc_ci_hi']:.3f}); of the {len(labels)} other "
            f"configuration{'s' if len(labels) != 1 else ''} it retrained, {same} not significantly different, "
            f"{worse} worse (paired t-test over seeds, Holm). Where this differs from the search's order above, "
            "the confirmation is the answer.")
    return Finding("confirmed", text)


def headline(ranking: pd.DataFrame, epochs: pd.DataFrame, metric: str, experiment: str,
             source: str | None = None, planned: int | None = None,
             confirmation: pd.DataFrame | None = None, diagnoses: list | None = None) -> list[Finding]:
    """The findings, in reading order: progress, best configuration, its figures, noise, overfitting.
    ``source``: the study's space file, for the command that resumes an interrupted study; ``diagnoses``: the
    top trials' (``diagnosis.diagnose``, with their crop files), for the overfitting verdict."""
    if is_uri(experiment):  # s3://bucket/prefix/name: a Path would fold the '//'
        parent, _, name = experiment.rstrip("/").rpartition("/")
    else:
        parent, name = str(Path(experiment).parent), Path(experiment).name
    resume = f"iqa-tune run {source or 'SPACE'} --name {name} --storage {parent} --resume"
    found = [progress(ranking, resume, planned)] if len(ranking) else []
    if ranking.empty or metric not in ranking or not np.isfinite(ranking[metric].iloc[0]):
        return [f for f in found if f] + [Finding("best", "No trial has reported a defined "
                                                          f"{metric_label(metric)} yet.")]
    found += best(ranking, metric)
    found += [noise(ranking, experiment), confirmed(confirmation), overfitting(ranking, epochs, metric, diagnoses)]
    return [f for f in found if f]
