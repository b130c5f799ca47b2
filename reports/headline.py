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
from .labels import describe, fmt_value, hp_names, metric_label

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
    parts, falls, noisy, other_falls = [], [], 0, 0
    for d in judged:
        test = d.changes["test_srcc"]
        train, name = _train_signal(d, epochs)
        if d.fell and train is not None and train.direction == "rose":
            falls.append(-test.delta)
        elif d.fell:
            other_falls += 1  # test fell, but the training images were not ranked better meanwhile
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
    elif other_falls:
        verdict = (f"No overfitting in {which} best val epoch, though image-level test SRCC fell after it in "
                   f"{other_falls}: {rose} did not rise meanwhile, so the training images were not fitted better "
                   "(a fall, but not memorisation: the diagnosis below says what changed)"
                   + (f" ({noise})" if noisy else ""))
    else:
        verdict = (f"No overfitting in {which} best val epoch: image-level test SRCC did not fall after it"
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
# ----------------------------------------------------------------------------------------------------------------
# the trap and the ways out of it: each configuration's image-level test SRCC after its best val epoch

FELL, NOISE, HELD, RISING, UNJUDGED = "fell", "inside the noise", "did not fall", "still rising", "not judged"


def after_best(ranking: pd.DataFrame, epochs: pd.DataFrame, metric: str,
               falls: dict[str, Change] | None = None) -> pd.DataFrame:
    """One row per ranked trial: its test SRCC and patch-level train SRCC at its best val epoch and at its last
    epoch, the fall between them and a verdict. ``falls``: trial -> its test SRCC change between those two epochs
    with the 95% interval of a paired bootstrap over the test images (``diagnosis.change``, from the two epochs'
    crop files: the diagnosis's own judgement, so the trap sentences and the diagnosis never disagree). The
    change is a fall (FELL) when the interval lies below 0, inside the noise (NOISE) when it holds 0. A trial
    without crop files is judged by the fall against the half-width of its best epoch's test CI instead (the
    ``judge`` column says which). A curve whose best val epoch is its last never turned in the epochs it trained
    (RISING: no fall seen, though a longer run might show one); a single epoch says nothing (UNJUDGED)."""
    rows = []
    if epochs.empty or "test_srcc" not in epochs:
        return pd.DataFrame(rows)
    falls = falls or {}
    for _, t in ranking.dropna(subset=[metric]).iterrows():
        hist = epochs[epochs["trial"] == t["trial"]].sort_values("epoch")
        at_best, last = hist[hist["epoch"] == t["best_epoch"]].iloc[0], hist.iloc[-1]
        half = (t.get("test_srcc_ci_hi", np.nan) - t.get("test_srcc_ci_lo", np.nan)) / 2
        fall = at_best["test_srcc"] - last["test_srcc"]
        paired = falls.get(t["trial"])
        paired = paired if paired is not None and paired.known else None
        lo, hi = (paired.lo, paired.hi) if paired else (np.nan, np.nan)
        rows.append({"trial": t["trial"], "best_epoch": int(at_best["epoch"]), "last_epoch": int(last["epoch"]),
                     "test_at_best": at_best["test_srcc"], "test_last": last["test_srcc"], "fall": fall,
                     "train_at_best": at_best.get("train_srcc_patch", np.nan),
                     "train_last": last.get("train_srcc_patch", np.nan), "half": half,
                     # the paired interval of the change (last - best) and how many test images it is over
                     "change_lo": lo, "change_hi": hi, "images": paired.images if paired else 0,
                     "judge": "paired" if paired else "half-width",
                     # the diagnosis signals, where the solver records them (NaN otherwise)
                     "disagreement_at_best": at_best.get("test_disagreement", np.nan),
                     "disagreement_last": last.get("test_disagreement", np.nan),
                     "gap_at_best": at_best.get("train_eval_srcc", np.nan) - at_best["test_srcc"],
                     "gap_last": last.get("train_eval_srcc", np.nan) - last["test_srcc"],
                     "verdict": _verdict(int(at_best["epoch"]), int(last["epoch"]), fall, half, hi)})
    return pd.DataFrame(rows)


def _verdict(best: int, last: int, fall: float, half: float, hi: float = np.nan) -> str:
    """``hi``: the upper end of the paired interval of the change, where known (it replaces the half-width rule)."""
    if last <= 1 or not np.isfinite(fall):
        return UNJUDGED
    if last <= best:
        return RISING
    if fall <= 0:
        return HELD
    if np.isfinite(hi):
        return FELL if hi < 0 else NOISE
    return FELL if np.isfinite(half) and fall > half else NOISE


SEED_KEYS = ("train.seed", "data.split.seed")  # searched to replicate a configuration, not to change it


def one_change(ranking: pd.DataFrame, a: str, b: str) -> list[tuple[str, object, object]]:
    """The searched keys on which trials ``a`` and ``b`` differ, as (key, value in a, value in b); a key inert in
    either (the ranking granularity at alpha 0) is no difference, and neither is a seed (``SEED_KEYS``): two seeds
    of one configuration are replicates."""
    ra, rb = (ranking[ranking["trial"] == t].iloc[0] for t in (a, b))
    inert = {k for r in (ra, rb) for k in str(r.get("inert", "") or "").split(",") if k} | set(SEED_KEYS)
    out = []
    for c in [c for c in ranking if c.startswith(HP_PREFIX) and c.removeprefix(HP_PREFIX) not in inert]:
        va, vb = ra[c], rb[c]
        if not (pd.isna(va) and pd.isna(vb)) and va != vb:
            out.append((c, va, vb))
    return out


def _curve_text(c: pd.Series) -> str:
    if c["verdict"] == RISING:
        return f"test SRCC {c['test_at_best']:.3f} at its best val epoch {c['best_epoch']}"
    train = (f", patch-level train SRCC {c['train_at_best']:.3f} -> {c['train_last']:.3f}"
             if np.isfinite(c["train_at_best"]) and np.isfinite(c["train_last"]) else "")
    return (f"test SRCC {c['test_at_best']:.3f} at its best val epoch {c['best_epoch']} -> {c['test_last']:.3f} at "
            f"epoch {c['last_epoch']} ({-c['fall']:+.3f}{train})")


def _against(c: pd.Series) -> str:
    """How the fall was judged: the paired interval of the change where the crop files were saved, else the fall
    against the best epoch's test CI."""
    if c["judge"] == "paired":
        return (f"95% CI of the change {c['change_lo']:+.3f} to {c['change_hi']:+.3f} (paired bootstrap over its "
                f"{c['images']} test images, epoch {c['best_epoch']} against {c['last_epoch']})")
    if not np.isfinite(c["half"]):
        return "no CI (no per-image predictions saved)"
    return f"{c['fall'] / c['half']:.1f} x the ±{c['half']:.3f} half-width of its 95% test CI"


def replicates(ranking: pd.DataFrame, curves: pd.DataFrame, trial: str) -> list[str]:
    """``trial`` and the judged trials that differ from it only in a seed."""
    return [t for t in curves["trial"] if t == trial or not one_change(ranking, trial, t)]


def falls_over_seeds(ranking: pd.DataFrame, curves: pd.DataFrame, trial: str) -> tuple[int, int]:
    """(how many fell beyond their noise, how many there are) among ``trial``'s replicates."""
    reps = replicates(ranking, curves, trial)
    return int(curves.set_index("trial").loc[reps, "verdict"].eq(FELL).sum()), len(reps)


def _replication(ranking: pd.DataFrame, curves: pd.DataFrame, trial: str, confirm: str) -> str:
    """Does the fall repeat? Over the trials that differ from ``trial`` only in a seed, how many fell; with one
    seed, that a single run's fall is one draw of the training noise."""
    fell, seeds = falls_over_seeds(ranking, curves, trial)
    if seeds == 1:
        return (f" One training seed: on a small set a fall can be one draw of the training noise (another seed may "
                f"not fall); `{confirm}` retrains the top configurations over seeds.")
    stable = "the same in every seed" if fell == seeds else "not stable over seeds"
    return f" Over its {seeds} seeds it fell beyond its noise in {fell}: {stable}."


def trap(ranking: pd.DataFrame, curves: pd.DataFrame, confirm: str = "iqa-tune confirm EXPERIMENT") -> Finding | None:
    """The configuration whose test SRCC fell furthest beyond its noise after its best val epoch: the trap, found
    from the numbers (whatever the trials are called), with whether patch-level train SRCC rose meanwhile and
    whether the fall repeated over seeds (or that it rests on one). ``confirm``: the command that retrains over
    seeds, for the sentence."""
    if curves.empty or curves["verdict"].isin([UNJUDGED, RISING]).all():
        return None
    fell = curves[curves["verdict"] == FELL].sort_values("fall", ascending=False)
    if fell.empty:
        worst = curves[~curves["verdict"].isin([UNJUDGED, RISING])].sort_values("fall", ascending=False).iloc[0]
        return Finding("trap", f"No configuration's image-level test SRCC fell after its best val epoch beyond its "
                               f"noise (the paired bootstrap's 95% interval of the change held 0, or the fall was "
                               f"within the test CI's half-width where no crop files were saved): the trap did not "
                               f"show in this study (largest "
                               f"change: {_describe(ranking, worst['trial'])}, {_curve_text(worst)}; "
                               f"{worst['verdict']}).")
    c = fell.iloc[0]
    rose = np.isfinite(c["train_last"]) and c["train_last"] > c["train_at_best"]
    text = (f"The trap: {_describe(ranking, c['trial'])}. Its image-level {_curve_text(c)}: a fall of "
            f"{c['fall']:.3f}, {_against(c)}, "
            + ("while patch-level train SRCC rose: the model kept fitting training patches and lost test images "
               "(the seed's overfitting)." if rose else "although patch-level train SRCC did not rise."))
    text += _why(c)
    text += (f" Selecting its best val epoch (early stopping on val, what this report does for every trial) keeps "
             f"{c['test_at_best']:.3f}.")
    text += _replication(ranking, curves, c["trial"], confirm)
    others = fell[~fell["trial"].isin(replicates(ranking, curves, c["trial"]))]
    if len(others):
        text += f" {len(others)} other configuration{'s' if len(others) > 1 else ''} fell beyond the noise too: " \
                + "; ".join(f"{_describe(ranking, o['trial'])} (-{o['fall']:.3f})" for _, o in others.iterrows()) \
                + "."
    return Finding("trap", text)


def _why(c: pd.Series) -> str:
    """What the diagnosis signals say about the fall, where the solver recorded them: did one image's crops come
    to disagree (the seed's patch-level explanation), and did training images scored like test pull away?"""
    out = []
    if np.isfinite(c["disagreement_at_best"]) and np.isfinite(c["disagreement_last"]):
        grew = c["disagreement_last"] > c["disagreement_at_best"]
        out.append(f"the within-image disagreement of test crops {'grew' if grew else 'did not grow'} "
                   f"({c['disagreement_at_best']:.3f} -> {c['disagreement_last']:.3f})")
    if np.isfinite(c["gap_at_best"]) and np.isfinite(c["gap_last"]):
        out.append(f"the gap between training images scored like test and the test images went "
                   f"{c['gap_at_best']:+.3f} -> {c['gap_last']:+.3f}")
    return f" Meanwhile {' and '.join(out)}." if out else ""


def _describe(ranking: pd.DataFrame, trial: str) -> str:
    row = ranking[ranking["trial"] == trial].iloc[0]
    hp = [c for c in ranking if c.startswith(HP_PREFIX)]
    return f"{describe(row, hp, row.get('inert', '')) or 'the only configuration'} (trial {trial})"


def _paired(predictions: dict | None, a: str, b: str) -> tuple[float, float, float, float] | None:
    """Paired bootstrap of test SRCC a - b at each one's best val epoch, on the test images both scored."""
    from .ranking import paired_bootstrap_test

    if not predictions or a not in predictions or b not in predictions:
        return None
    (pa, la, xa), (pb, _, xb) = predictions[a], predictions[b]
    if len(pa) != len(pb) or not np.array_equal(pa, pb):
        return None
    return paired_bootstrap_test(np.asarray(la), np.asarray(xa), np.asarray(xb))


def _cost(ranking: pd.DataFrame, curves: pd.DataFrame, predictions: dict | None, trial: str, ref: str) -> str:
    """What a remedy cost or gained at its best val epoch against the trap's, and whether the paired test calls
    it (uncalled differences are the ones a rerun may reverse)."""
    a, b = (curves[curves["trial"] == t].iloc[0] for t in (trial, ref))
    d = a["test_at_best"] - b["test_at_best"]
    text = f"{d:+.3f} against the trap's {b['test_at_best']:.3f}, each at its best val epoch"
    p = _paired(predictions, trial, ref)
    if p is None:
        return text + " (no paired test: predictions missing or other test images)"
    _, lo, hi, pv = p
    if not np.isfinite(pv):
        return text + " (paired test undefined)"
    call = ("the paired bootstrap cannot call it" if pv >= 0.05 else
            f"{'better' if d > 0 else 'worse'} by the paired bootstrap")
    return text + f" ({call}: 95% CI {lo:+.3f} to {hi:+.3f}, p {pv:.2f})"


def _seed_label(ranking: pd.DataFrame, trial: str) -> str:
    """``seed 1`` (and the split seed where searched), named as the ranking names them: which replicate of its
    configuration a trial is."""
    row = ranking[ranking["trial"] == trial].iloc[0]
    cols = [HP_PREFIX + k for k in SEED_KEYS if HP_PREFIX + k in ranking]
    names = hp_names([c for c in ranking if c.startswith(HP_PREFIX)])
    return ", ".join(f"{names[c]} {fmt_value(row[c])}" for c in cols) or f"trial {trial}"


def _how(c: pd.Series) -> str:
    return (f"fell too, {_against(c)}" if c["verdict"] == FELL else
            f"fell by {c['fall']:.3f}, inside the noise ({_against(c)})" if c["verdict"] == NOISE else
            "no fall" if c["verdict"] == HELD else
            f"no fall in its {c['last_epoch']} epochs (val SRCC still at its best in the last)"
            if c["verdict"] == RISING else "a single epoch: nothing to judge")


def remedies(ranking: pd.DataFrame, curves: pd.DataFrame, predictions: dict | None = None) -> Finding | None:
    """The configurations one searched key away from the trap: did that one change remove the fall, and what did
    it cost or gain at its best val epoch? Found from the hyperparameters, not from trial names. Where the study
    searched seeds, a change is judged over its seeds: it removed the fall only if no seed fell, and a change
    that fell in some seeds and not in others is named as not stable."""
    fell = curves[curves["verdict"] == FELL].sort_values("fall", ascending=False) if not curves.empty else curves
    if fell.empty:
        return None
    ref = fell.iloc[0]["trial"]
    names = hp_names([c for c in ranking if c.startswith(HP_PREFIX)])
    groups: dict[str, list[pd.Series]] = {}  # the change in words -> its trials (one per seed)
    for _, c in curves.iterrows():
        diff = one_change(ranking, ref, c["trial"]) if c["trial"] != ref else []
        if len(diff) == 1:
            key, was, now = diff[0]
            groups.setdefault(f"{names[key]} {fmt_value(was)} -> {fmt_value(now)}", []).append(c)
    if not groups:
        return Finding("remedies", "No configuration differs from the trap in one searched key alone, so no "
                                   "single change can be credited with a way out.")
    parts, removed, kept, mixed, unsure = [], [], [], [], []
    for change, members in groups.items():
        verdicts = [m["verdict"] for m in members]
        n, n_fell, n_clear = len(members), verdicts.count(FELL), sum(v in (HELD, RISING) for v in verdicts)
        seeds = f" ({n} seeds)" if n > 1 else ""
        if n_fell == n:
            kept.append(change + seeds)
        elif n_fell:
            mixed.append(f"{change} (fell in {n_fell} of {n} seeds)")
        elif n_clear == n:
            removed.append(change + seeds)
        else:
            unsure.append(change + seeds)
        each = [f"{_how(m)}; {_curve_text(m)}; {_cost(ranking, curves, predictions, m['trial'], ref)}"
                for m in members]
        parts.append(f"{change}: {each[0]}" if n == 1 else f"{change}, " + "; ".join(
            f"{_seed_label(ranking, m['trial'])}: {e}" for m, e in zip(members, each)))
    summary = []
    trap_fell, trap_seeds = falls_over_seeds(ranking, curves, ref)
    if removed and trap_fell < trap_seeds:  # the trap's own other seeds did not fall: nothing to credit
        summary.append(f"no fall in any seed with {', '.join(removed)}, but the trap itself fell in only {trap_fell} "
                       f"of its {trap_seeds} seeds, so no change can be credited with removing its fall")
    elif removed:
        summary.append(f"removed the fall: {', '.join(removed)}")
    if kept:
        summary.append(f"did not: {', '.join(kept)}")
    if mixed:
        summary.append(f"not stable over seeds: {', '.join(mixed)}")
    if unsure:
        summary.append(f"not called (a change inside the noise, or nothing to judge; another run may say "
                       f"otherwise): {', '.join(unsure)}")
    return Finding("remedies", f"One change from the trap at a time: {'; '.join(summary)}. " + ". ".join(
        f"With {p}" for p in parts) + ".")


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
             confirmation: pd.DataFrame | None = None, diagnoses: list | None = None,
             predictions: dict | None = None, falls: dict[str, Change] | None = None) -> list[Finding]:
    """The findings, in reading order: progress, best configuration, its figures, noise, overfitting, the trap and
    the single changes that get out of it. ``source``: the study's space file, for the command that resumes an
    interrupted study; ``diagnoses``: the top trials' (``diagnosis.diagnose``, with their crop files), for the
    overfitting verdict; ``predictions``: trial -> (paths, labels, per-image predictions) at its best val epoch,
    for the paired tests of the remedies against the trap; ``falls``: trial -> its test SRCC change after its best
    val epoch with the diagnosis's paired interval (``after_best``), the top trials' taken from ``diagnoses``."""
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
    falls = {**(falls or {}), **{d.trial: d.changes["test_srcc"] for d in diagnoses or [] if "test_srcc" in d.changes}}
    curves = after_best(ranking, epochs, metric, falls)
    found += [trap(ranking, curves, f"iqa-tune confirm {experiment}"), remedies(ranking, curves, predictions)]
    return [f for f in found if f]
