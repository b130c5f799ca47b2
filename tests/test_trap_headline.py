"""The trap and its remedies in the headline, on synthetic ranking and epoch tables (no training): a fall beyond the
noise, no fall, a fall inside the noise, single changes credited from the hyperparameters, paired tests called or
not."""

import numpy as np
import pandas as pd

from iqa_tune.reports.headline import (
    FELL,
    HELD,
    NOISE,
    RISING,
    UNJUDGED,
    after_best,
    headline,
    one_change,
    remedies,
    trap,
)

# trial -> (alpha, ranking, lr), val, test, patch-level train SRCC per epoch, test CI half-width at the best epoch.
# Names say nothing: "q" is the trap (alpha 1, patch, lr 3e-4), falling 0.20 against a half-width of 0.05.
CURVES = {
    "q": ((1.0, "patch", 3e-4), [0.70, 0.66, 0.62, 0.60], [0.70, 0.62, 0.55, 0.50], [0.6, 0.8, 0.9, 0.95], 0.05),
    "m": ((1.0, "patch", 1e-4), [0.60, 0.64, 0.66, 0.67], [0.60, 0.63, 0.66, 0.68], [0.5, 0.6, 0.7, 0.75], 0.05),
    "z": ((0.0, "image", 3e-4), [0.66, 0.64, 0.63, 0.62], [0.66, 0.65, 0.64, 0.63], [0.6, 0.7, 0.8, 0.85], 0.05),
    "k": ((1.0, "image", 3e-4), [0.68, 0.66, 0.64, 0.60], [0.69, 0.64, 0.60, 0.58], [0.6, 0.8, 0.9, 0.95], 0.05),
    "w": ((0.0, "patch", 1e-4), [0.50, 0.55, 0.58, 0.60], [0.50, 0.55, 0.58, 0.60], [0.5, 0.6, 0.6, 0.7], 0.05),
}
KEYS = ("loss.alpha", "loss.ranking", "train.lr")


def tables(curves=CURVES):
    """(ranking, epochs) as the report builds them: ranked by val at each trial's best val epoch."""
    epochs, rows = [], []
    for trial, (hps, val, test, train, half) in curves.items():
        epochs += [{"trial": trial, "epoch": e + 1, "val_srcc": v, "test_srcc": t, "train_srcc_patch": p}
                   for e, (v, t, p) in enumerate(zip(val, test, train))]
        best = int(np.argmax(val))
        rows.append({"trial": trial, "ended": "done", "epochs_run": len(val), "best_epoch": best + 1,
                     "val_srcc": val[best], "test_srcc": test[best], "test_srcc_ci_lo": test[best] - half,
                     "test_srcc_ci_hi": test[best] + half, **{f"hp.{k}": v for k, v in zip(KEYS, hps)},
                     "inert": "loss.margin,loss.ranking" if hps[0] == 0 else ""})
    ranking = pd.DataFrame(rows).sort_values("val_srcc", ascending=False).reset_index(drop=True)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    return ranking, pd.DataFrame(epochs)


def test_each_curve_is_judged_after_its_best_val_epoch_against_its_ci():
    ranking, epochs = tables()
    c = after_best(ranking, epochs, "val_srcc").set_index("trial")
    assert c.loc["q", "verdict"] == FELL and np.isclose(c.loc["q", "fall"], 0.20)
    assert c.loc["k", "verdict"] == FELL and c.loc["k", "best_epoch"] == 1
    assert c.loc["z", "verdict"] == NOISE and np.isclose(c.loc["z", "fall"], 0.03)  # 0.03 < 0.05: noise
    assert c.loc["m", "verdict"] == RISING  # val still rising at the last epoch: no fall seen
    assert c.loc["q", "train_last"] > c.loc["q", "train_at_best"]


def test_the_trap_is_the_largest_fall_beyond_the_noise_whatever_the_trials_are_called():
    ranking, epochs = tables()
    found = trap(ranking, after_best(ranking, epochs, "val_srcc"))
    assert found.text.startswith("The trap: alpha 1, ranking patch, lr 0.0003 (trial q)")
    assert "0.700 at its best val epoch 1 -> 0.500 at epoch 4" in found.text
    assert "4.0 x the ±0.050 half-width" in found.text and "while patch-level train SRCC rose" in found.text
    assert "keeps 0.700" in found.text and "1 other configuration fell beyond the noise too" in found.text
    renamed = {"t9": CURVES["k"], "t1": CURVES["q"], "t5": CURVES["z"]}  # other names, other order: same trap
    ranking, epochs = tables(renamed)
    assert "alpha 1, ranking patch, lr 0.0003 (trial t1)" in trap(ranking, after_best(ranking, epochs, "val_srcc")).text


def test_remedies_are_the_single_changes_from_the_trap():
    ranking, epochs = tables()
    text = remedies(ranking, after_best(ranking, epochs, "val_srcc")).text
    # lr and ranking are one change each; alpha 0 with ranking image is one change too (ranking is inert there);
    # "w" changes alpha and lr: a combination, not credited
    summary = text.split(". ")[0]
    assert "did not: ranking patch -> image" in summary
    assert "alpha 1 -> 0" in summary.split("not called")[1]
    assert summary.startswith("One change from the trap at a time: removed the fall: lr 0.0003 -> 0.0001;")
    assert "no fall in its 4 epochs (val SRCC still at its best in the last)" in text
    assert "(trial w)" not in text and "0.600 at epoch" not in text
    assert "-0.040 against the trap's 0.700, each at its best val epoch (no paired test" in text  # z: 0.66


def test_a_remedy_that_held_is_named_and_the_paired_test_decides_what_it_cost():
    curves = {**CURVES, "m": ((1.0, "patch", 1e-4), [0.60, 0.66, 0.64, 0.63], [0.60, 0.66, 0.67, 0.69],
                              [0.5, 0.6, 0.7, 0.75], 0.05)}
    ranking, epochs = tables(curves)
    rng = np.random.default_rng(0)
    label, paths = rng.normal(size=300), [f"i{i}.png" for i in range(300)]
    good = label + rng.normal(scale=0.5, size=300)
    preds = {"q": (paths, label, good), "m": (paths, label, good + rng.normal(scale=0.05, size=300)),
             "z": (paths, label, rng.normal(size=300))}
    text = remedies(ranking, after_best(ranking, epochs, "val_srcc"), preds).text
    assert text.startswith("One change from the trap at a time: removed the fall: lr 0.0003 -> 0.0001;")
    lr = next(p for p in text.split(". ") if p.startswith("With lr 0.0003 -> 0.0001"))
    assert "no fall" in lr and "the paired bootstrap cannot call it" in lr
    alpha = next(p for p in text.split(". ") if p.startswith("With alpha 1 -> 0"))
    assert "worse by the paired bootstrap" in alpha


def test_no_fall_and_a_fall_inside_the_noise_say_the_trap_did_not_show():
    flat = {t: (hps, val, [x + 0.01 * e for e, x in enumerate(test)][:1] * len(test), train, half)
            for t, (hps, val, test, train, half) in CURVES.items()}
    ranking, epochs = tables(flat)
    curves = after_best(ranking, epochs, "val_srcc")
    assert set(curves["verdict"]) <= {HELD, RISING}
    assert "the trap did not show" in trap(ranking, curves).text and remedies(ranking, curves) is None
    small = {"q": ((1.0, "patch", 3e-4), [0.70, 0.66], [0.70, 0.67], [0.6, 0.9], 0.05)}
    ranking, epochs = tables(small)
    text = trap(ranking, after_best(ranking, epochs, "val_srcc")).text
    assert "the trap did not show" in text and "inside the noise" in text and "-0.030" in text


def test_a_single_epoch_says_nothing():
    ranking, epochs = tables({"q": ((1.0, "patch", 3e-4), [0.7], [0.7], [0.6], 0.05)})
    curves = after_best(ranking, epochs, "val_srcc")
    assert list(curves["verdict"]) == [UNJUDGED] and trap(ranking, curves) is None


def test_single_changes_ignore_inert_keys():
    ranking, _ = tables()
    assert one_change(ranking, "q", "z") == [("hp.loss.alpha", 1.0, 0.0)]
    assert len(one_change(ranking, "q", "w")) == 2


def test_the_headline_carries_both_findings_and_is_the_same_twice():
    ranking, epochs = tables()
    first = [(f.key, f.text) for f in headline(ranking, epochs, "val_srcc", "/r/demo")]
    assert [k for k, _ in first][-2:] == ["trap", "remedies"]
    assert first == [(f.key, f.text) for f in headline(ranking, epochs, "val_srcc", "/r/demo")]


def test_the_diagnosis_signals_say_why_where_the_solver_recorded_them():
    ranking, epochs = tables()
    assert "Meanwhile" not in trap(ranking, after_best(ranking, epochs, "val_srcc")).text  # no signal columns
    epochs["test_disagreement"] = 0.2 + 0.1 * epochs["epoch"]
    epochs["train_eval_srcc"] = epochs["test_srcc"] + 0.05 * epochs["epoch"]
    text = trap(ranking, after_best(ranking, epochs, "val_srcc")).text
    assert "disagreement of test crops grew (0.300 -> 0.600)" in text and "+0.050 -> +0.200" in text
