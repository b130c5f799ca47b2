"""Why does test SRCC fall? The report's diagnosis of the top trials, in sentences generated from the numbers.

The study this tool was made for saw patch-level train SRCC rise while image-level test SRCC fell after epoch 1,
and offered explanations: (1) train is scored per patch and test per image, so the two curves measure different
things; (2) the model overfits the training images; (3) the ranking loss, applied to pairs of patches, makes the
crops of one image disagree, so their mean ranks worse. Each epoch now records the signals that tell them apart
(``SIGNALS.md``: ``train_eval_srcc``, ``test_srcc_patch``, ``test_disagreement``, ``xtest_<name>_srcc``) and every
crop's prediction (``crops/epoch_NNN.npz``). For each top trial this module compares its best val epoch with its
last: did test SRCC fall, and if so, did train-eval SRCC rise (2), did the within-image disagreement rise (3), did
test patch SRCC fall with it (1, ruled out if so), did the cross-dataset sets fall too.

Every change comes with a 95% interval from a paired bootstrap over the images of its set (the same resamples
for both epochs, ``ranking.paired_rows``), recomputed from the crop files; a change whose interval holds 0 is
called inside its noise, and the signal cannot decide. The intervals are per signal, not adjusted for the several
signals and trials read together. Pure: tables and arrays in, numbers and sentences out; reading the crop files is
``build.py``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iqa_tune.metrics import disagreement

from .labels import XTEST, signal_columns
from .ranking import BOOTSTRAP_RESAMPLES, RowStatistic, paired_rows, srcc_rows

TOP = 3  # trials diagnosed, by the study metric
# signal column -> (evaluation set in the crop files, statistic over that set's crops, name in a sentence), in the
# order of labels.SIGNAL_ORDER
SIGNALS = {"test_srcc": ("test", "image", "test SRCC"),
           "train_eval_srcc": ("train_eval", "image", "train-eval SRCC"),
           "test_disagreement": ("test", "disagreement", "within-image disagreement on test"),
           "test_srcc_patch": ("test", "patch", "test patch SRCC")}
EXPLAINING = ("train_eval_srcc", "test_disagreement", "test_srcc_patch")  # read only when test fell
# patch-level SRCC ranks every crop of every resample: 2000 resamples of KonIQ's 2000 test images x 25 crops take
# ~35 s on 2 cores, so a large set gets fewer (400 there, ~7 s); a small one (the demo's) keeps all of them
PATCH_VALUES = 20_000_000
PATCH_MIN_RESAMPLES = 200


def _signal(col: str) -> tuple[str, str, str]:
    """(evaluation set, statistic, name) of a signal column; ``xtest_livec_srcc`` -> the ``xtest_livec`` set."""
    if col in SIGNALS:
        return SIGNALS[col]
    name = col.removesuffix("_srcc")
    return name, "image", f"{name.removeprefix(XTEST)} SRCC (cross-dataset)"


# ----------------------------------------------------------------------------------------------------------------
# statistics of one evaluation set, one value per resample (rows of image indices): the bootstrap's inputs


def image_srcc_rows(pred: np.ndarray, label: np.ndarray) -> RowStatistic:
    """Image-level SRCC: the mean of an image's crops against its label (the protocol of test_srcc)."""
    means = np.asarray(pred, dtype=np.float64).mean(axis=1)
    return lambda i: srcc_rows(means[i], label[i])


def patch_srcc_rows(pred: np.ndarray, label: np.ndarray) -> RowStatistic:
    """Patch-level SRCC: every crop against its image's label (``metrics.patch_srcc``), images resampled whole."""
    pred = np.asarray(pred, dtype=np.float64)
    crops = pred.shape[1]
    return lambda i: srcc_rows(pred[i].reshape(len(i), -1), np.repeat(label[i], crops, axis=1))


def disagreement_rows(pred: np.ndarray, label: np.ndarray) -> RowStatistic:
    """Within-image disagreement (``metrics.disagreement``'s headline ratio), computed by that function on every
    resample: one definition, never a second copy of its arithmetic."""
    pred = np.asarray(pred, dtype=np.float64)
    return lambda i: np.array([disagreement(pred[r])[1] for r in i])


STATISTICS = {"image": image_srcc_rows, "patch": patch_srcc_rows, "disagreement": disagreement_rows}


# ----------------------------------------------------------------------------------------------------------------
# one signal's change between two epochs


@dataclass
class Change:
    """A signal from the best val epoch to the last; ``lo``, ``hi``: 95% interval of the change (paired bootstrap
    over the set's images), NaN with ``noise`` saying why when there is none."""

    signal: str
    name: str
    before: float
    after: float
    lo: float = math.nan
    hi: float = math.nan
    images: int = 0
    noise: str = ""

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def known(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def direction(self) -> str:
        """rose / fell / noise (the interval holds 0: the signal cannot decide) / undefined; by the sign alone
        where the noise is unknown (no crop predictions)."""
        if not (math.isfinite(self.before) and math.isfinite(self.after)):
            return "undefined"
        if self.known:
            return "rose" if self.lo > 0 else "fell" if self.hi < 0 else "noise"
        return "rose" if self.delta > 0 else "fell" if self.delta < 0 else "noise"

    def figures(self, epochs: tuple[int, int] | None = None) -> str:
        """``0.780 -> 0.600 (-0.180, 95% CI -0.251 to -0.112)``, with the epochs when given."""
        at = (f" at epoch {epochs[0]}", f" at epoch {epochs[1]}") if epochs else ("", "")
        ci = f", 95% CI {self.lo:+.3f} to {self.hi:+.3f}" if self.known else ""
        return f"{self.before:.3f}{at[0]} -> {self.after:.3f}{at[1]} ({self.delta:+.3f}{ci})"


def bootstrap_change(before: dict, after: dict, statistic: str, n: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> tuple[float, float, int, str]:
    """(lo, hi, images, why not) of ``statistic`` at ``after`` minus at ``before``, one evaluation set's crops
    ({pred, label, path}) at two epochs, paired over its images."""
    if not np.array_equal(before["path"], after["path"]) or before["pred"].shape != after["pred"].shape:
        return math.nan, math.nan, 0, "the two epochs' crop files list different images or crops"
    label = np.asarray(before["label"], dtype=np.float64)
    make = STATISTICS[statistic]
    if statistic == "patch":  # every resample ranks all the crops: fewer of them on a large set (see PATCH_VALUES)
        n = min(n, max(PATCH_MIN_RESAMPLES, PATCH_VALUES // before["pred"].size))
    lo, hi, _ = paired_rows(make(after["pred"], label), make(before["pred"], label), len(label), n, seed,
                            width=before["pred"].shape[1] if statistic == "patch" else 1)
    why = "" if math.isfinite(lo) else "undefined on most resamples (constant predictions)"
    return lo, hi, len(label), why


def change(col: str, best: pd.Series, last: pd.Series, crops: tuple[dict, dict] | None,
           n: int = BOOTSTRAP_RESAMPLES) -> Change:
    """One signal's change from the best epoch's row to the last's, its noise from the crop files where saved."""
    subset, statistic, name = _signal(col)
    out = Change(col, name, float(best.get(col, math.nan)), float(last.get(col, math.nan)))
    if crops is None:
        out.noise = "no crop predictions saved"
    elif subset not in crops[0] or subset not in crops[1]:
        out.noise = f"no {subset} crops in the crop files"
    else:
        out.lo, out.hi, out.images, out.noise = bootstrap_change(crops[0][subset], crops[1][subset], statistic, n)
    return out


# ----------------------------------------------------------------------------------------------------------------
# one trial


@dataclass
class Diagnosis:
    """One top trial: its changes from the best val epoch to the last, what was missing, the sentences."""

    trial: str
    rank: int
    best_epoch: int
    last_epoch: int
    changes: dict[str, Change] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # signals this trial did not record
    no_crops: str = ""  # why the changes have no noise, if they have none
    sentences: list[str] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.last_epoch > self.best_epoch and "test_srcc" in self.changes

    @property
    def fell(self) -> bool:
        return self.judged and self.changes["test_srcc"].direction == "fell"

    @property
    def overfitting(self) -> bool:
        """Test fell while the training images, scored like test, were ranked better: the gap widened."""
        train = self.changes.get("train_eval_srcc")
        return self.fell and train is not None and train.direction == "rose"


def diagnose_trial(trial: str, rank: int, best_epoch: int, hist: pd.DataFrame,
                   crops: tuple[dict, dict] | None, n: int = BOOTSTRAP_RESAMPLES) -> Diagnosis:
    """Compare a trial's best val epoch with its last epoch (``hist``: its epoch rows); ``crops``: the crop
    predictions of those two epochs (set -> {pred, label, path}), None where none were saved."""
    hist = hist.sort_values("epoch")
    last = hist.iloc[-1]
    d = Diagnosis(trial, rank, int(best_epoch), int(last["epoch"]))
    best = hist[hist["epoch"] == best_epoch]
    recorded = [c for c in signal_columns(hist.columns) if hist[c].notna().any()]
    d.missing = [c for c in SIGNALS if c not in recorded]
    if best.empty or d.last_epoch <= d.best_epoch or "test_srcc" not in recorded:
        d.sentences = _sentences(d)
        return d
    if crops is None:
        d.no_crops = f"no crop predictions (crops/epoch_NNN.npz) for epochs {d.best_epoch} and {d.last_epoch}"
    d.changes["test_srcc"] = change("test_srcc", best.iloc[0], last, crops, n)
    for col in recorded:  # the explanations' noise is computed only when there is a fall to explain
        if col != "test_srcc":
            d.changes[col] = change(col, best.iloc[0], last, crops if d.fell or col not in EXPLAINING else None, n)
    d.sentences = _sentences(d)
    return d


def diagnose(ranking: pd.DataFrame, epochs: pd.DataFrame, metric: str, crops: dict | None = None,
             top: int = TOP, n: int = BOOTSTRAP_RESAMPLES) -> list[Diagnosis]:
    """The top ``top`` trials by the study metric (the ranking's order), each diagnosed. ``crops``: trial ->
    (best epoch's crop sets, last epoch's), for the trials whose files were found."""
    if epochs.empty or metric not in ranking or "trial" not in epochs:
        return []
    out = []
    for _, t in ranking.dropna(subset=[metric]).head(top).iterrows():
        hist = epochs[epochs["trial"] == t["trial"]]
        if hist.empty or not np.isfinite(t.get("best_epoch", np.nan)):
            continue
        out.append(diagnose_trial(t["trial"], int(t["rank"]), int(t["best_epoch"]), hist,
                                  (crops or {}).get(t["trial"]), n))
    return out


# ----------------------------------------------------------------------------------------------------------------
# sentences


def _noise_clause(c: Change) -> str:
    if c.known:
        return f"inside its noise (the interval holds 0, over {c.images} images), so this signal cannot decide"
    return "no change at all, so this signal cannot decide"


def _test_sentence(d: Diagnosis) -> str:
    t = d.changes["test_srcc"]
    where = f"#{d.rank} ({d.trial}): test SRCC"
    figures = t.figures((d.best_epoch, d.last_epoch))
    how = f", paired bootstrap over {t.images} test images" if t.known else ""
    if t.direction == "fell":
        return f"{where} fell after the best val epoch: {figures}{how}."
    if t.direction == "rose":
        return f"{where} did not fall after the best val epoch; it rose: {figures}{how}."
    if t.direction == "undefined":
        return f"{where} is undefined at one of the two epochs ({figures}): nothing to compare."
    return f"{where} changed after the best val epoch, {figures}: {_noise_clause(t)} whether test fell."


def _train_eval_sentence(c: Change, test: Change) -> str:
    gap = (f"the generalisation gap (train-eval - test SRCC) went from {c.before - test.before:+.3f} to "
           f"{c.after - test.after:+.3f}")
    if c.direction == "rose":
        return (f"Train-eval SRCC (training images scored like test) rose, {c.figures()}, and {gap}: overfitting "
                "the training images (explanation 2).")
    if c.direction == "fell":
        return (f"Train-eval SRCC fell as well, {c.figures()}: the training images are ranked worse too, so this "
                "is not overfitting them (explanation 2 does not fit).")
    return f"Train-eval SRCC changed by {c.delta:+.3f} ({c.figures()}): {_noise_clause(c)} on explanation 2."


def _disagreement_sentence(c: Change) -> str:
    if c.direction == "rose":
        return (f"Within-image disagreement on test rose, {c.figures()}: an image's crops disagree more, so their "
                "mean ranks worse (explanation 3, the patch-level ranking loss).")
    if c.direction == "fell":
        return (f"Within-image disagreement on test fell, {c.figures()}: the crops agree more, so explanation 3 "
                "does not account for the fall.")
    return f"Within-image disagreement changed by {c.delta:+.3f} ({c.figures()}): {_noise_clause(c)} on explanation 3."


def _patch_sentence(c: Change) -> str:
    if c.direction == "fell":
        return (f"Test patch SRCC fell with it, {c.figures()}: scored per patch like train, test still falls, so the "
                "different scales of the train and test curves (explanation 1) do not explain the fall.")
    if c.direction == "rose":
        return (f"Test patch SRCC rose, {c.figures()}: the fall is at image level only, where an image's crops are "
                "averaged: the scales differ (explanation 1), and the crops' disagreement is where to look.")
    return f"Test patch SRCC changed by {c.delta:+.3f} ({c.figures()}): {_noise_clause(c)} on explanation 1."


def _xtest_sentence(changes: list[Change]) -> str:
    parts = [f"{c.signal.removeprefix(XTEST).removesuffix('_srcc')} SRCC {_verb(c)}, {c.figures()}" for c in changes]
    fell = [c for c in changes if c.direction == "fell"]
    if len(fell) == len(changes):
        tail = "the loss reaches beyond this dataset's distribution."
    elif fell:
        tail = "the loss reaches some of the other datasets."
    else:
        tail = "no other dataset shows a fall."
    return f"Cross-dataset sets: {'; '.join(parts)}: {tail}"


def _verb(c: Change) -> str:
    return {"rose": "rose", "fell": "fell too", "noise": "changed inside its noise", "undefined": "undefined"}[
        c.direction]


def _missing_sentence(d: Diagnosis) -> str:
    names = ", ".join(SIGNALS[c][2] for c in d.missing)
    return (f"Not recorded in this trial: {names} (an experiment of an older iqa-tune, or the signal turned off, "
            "e.g. data.train_eval_images 0).")


def _sentences(d: Diagnosis) -> list[str]:
    if not d.judged:
        if "test_srcc" in d.missing:
            return [f"#{d.rank} ({d.trial}): no test SRCC recorded: nothing to diagnose."]
        return [f"#{d.rank} ({d.trial}): its best val epoch {d.best_epoch} is its last: nothing after it to judge."]
    test = d.changes["test_srcc"]
    out, said = [_test_sentence(d)], [test]
    if d.fell:
        for col, say in (("train_eval_srcc", lambda c: _train_eval_sentence(c, test)),
                         ("test_disagreement", _disagreement_sentence), ("test_srcc_patch", _patch_sentence)):
            if col in d.changes and d.changes[col].direction != "undefined":
                out.append(say(d.changes[col]))
                said.append(d.changes[col])
    xtest = [c for col, c in d.changes.items() if col.startswith(XTEST) and c.direction != "undefined"]
    if xtest:
        out.append(_xtest_sentence(xtest))
        said += xtest
    if d.missing:
        out.append(_missing_sentence(d))
    if d.no_crops:
        out.append(f"The changes are given without their noise: {d.no_crops}.")
    elif noisy := sorted({f"{c.name}: {c.noise}" for c in said if c.noise}):
        out.append(f"Given without their noise: {'; '.join(noisy)}.")
    return out


def summary(diagnoses: list[Diagnosis]) -> str:
    """One line over the diagnosed trials, for the terminal and the page: how many fell, and why."""
    judged = [d for d in diagnoses if d.judged]
    if not judged:
        return "None of the top trials trained past its best val epoch: there is nothing after it to diagnose."
    fell = [d for d in judged if d.fell]
    text = f"Test SRCC fell after the best val epoch in {len(fell)} of the {len(judged)} top trials that trained past it"
    noisy = sum(1 for d in judged if d.changes["test_srcc"].direction == "noise" and d.changes["test_srcc"].known)
    if noisy:
        text += f" (in {noisy}, the change was inside its noise: cannot decide)"
    if not fell:
        return text + "."
    causes = []
    for col, way, label in (("train_eval_srcc", "rose", "train-eval SRCC rose (overfitting the training images)"),
                            ("test_disagreement", "rose", "within-image disagreement rose (explanation 3)"),
                            ("test_srcc_patch", "fell", "test patch SRCC fell with it (ruling out explanation 1)")):
        recorded = [d for d in fell if col in d.changes]
        if recorded:  # counted among the trials that recorded the signal, never against those that could not
            k = sum(1 for d in recorded if d.changes[col].direction == way)
            causes.append(f"{label} in {k}" + (f" of the {len(recorded)} that recorded it"
                                              if len(recorded) < len(fell) else ""))
    if not causes:
        return f"{text}; none of them recorded the signals that tell the explanations apart."
    return f"{text}; of those, {', '.join(causes)}."


def method() -> str:
    """How the changes were measured, once for the page and ranking.md."""
    return ("Each top trial's best val epoch is compared with its last epoch. Each change carries a 95% interval "
            f"from a paired bootstrap over the images of its set ({BOOTSTRAP_RESAMPLES} resamples, the same for both "
            "epochs), recomputed from the saved crop predictions; an interval that holds 0 is inside the noise and "
            "that signal cannot decide. The intervals are per signal, not adjusted for reading several together. "
            "Train-eval: a fixed subset of the training images scored like test (eval mode, fixed crops); "
            "disagreement: the mean SD of an image's crop predictions over the SD of the image means.")


def epoch_table(epochs: pd.DataFrame, trial: str, metric: str) -> pd.DataFrame:
    """A trial's signals per epoch (the figure's and ranking.md's table): epoch, the study metric, the signals."""
    hist = epochs[epochs["trial"] == trial].sort_values("epoch")
    cols = ["epoch", *dict.fromkeys([metric, *signal_columns(hist.columns)])]
    table = hist[[c for c in cols if c in hist]].reset_index(drop=True)
    return table.astype({"epoch": int})
