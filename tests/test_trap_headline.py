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


def test_the_paired_interval_of_the_change_judges_a_fall_where_crop_files_were_saved():
    """One judge: where the diagnosis's paired bootstrap of the change is known it decides, not the half-width.
    "q" falls 0.20 (4x the half-width) but its paired interval holds 0; "z" falls 0.03 (inside the half-width) but
    its interval lies below 0."""
    from iqa_tune.reports.diagnosis import Change

    ranking, epochs = tables()
    falls = {"q": Change("test_srcc", "test SRCC", 0.70, 0.50, lo=-0.41, hi=0.02, images=60),
             "z": Change("test_srcc", "test SRCC", 0.66, 0.63, lo=-0.05, hi=-0.01, images=60)}
    c = after_best(ranking, epochs, "val_srcc", falls).set_index("trial")
    assert c.loc["q", "verdict"] == NOISE and c.loc["q", "judge"] == "paired"
    assert c.loc["z", "verdict"] == FELL and c.loc["k", "judge"] == "half-width"
    text = trap(ranking, after_best(ranking, epochs, "val_srcc", falls)).text
    # q is inside its noise now; k (beyond its half-width, no crop files) is the largest fall left
    assert text.startswith("The trap: alpha 1, ranking image, lr 0.0003 (trial k)")
    assert "(trial z)" in text and "(trial q)" not in text
    found = {f.key: f.text for f in headline(ranking, epochs, "val_srcc", "/tmp/x", falls=falls)}
    assert found["trap"].startswith("The trap: alpha 1, ranking image, lr 0.0003 (trial k)")
    z_only = trap(*(lambda r, e: (r, after_best(r, e, "val_srcc", {"z": falls["z"]})))(*tables({"z": CURVES["z"]})))
    assert "95% CI of the change -0.050 to -0.010 (paired bootstrap over its 60 test images, epoch 1 against 4)" \
        in z_only.text


def test_a_fall_is_counted_over_the_seeds_of_its_configuration_or_said_to_rest_on_one():
    """Two seeds of the trap (a searched train.seed): one falls, one does not. The seed is no "change" (the other
    seed is neither a remedy nor another configuration that fell), and the sentence counts 1 of 2."""
    ranking, epochs = tables({k: CURVES[k] for k in ("q", "m")})
    single = trap(ranking, after_best(ranking, epochs, "val_srcc"), "iqa-tune confirm ray_results/x").text
    assert "One training seed" in single and "`iqa-tune confirm ray_results/x`" in single
    curves = {**CURVES, "q2": CURVES["w"][:0] + (CURVES["q"][0], *CURVES["m"][1:])}  # the trap's values, m's curve
    ranking, epochs = tables(curves)
    ranking["hp.train.seed"] = [1 if t == "q2" else 0 for t in ranking["trial"]]
    text = trap(ranking, after_best(ranking, epochs, "val_srcc")).text
    assert "Over its 2 seeds it fell beyond its noise in 1: not stable over seeds." in text
    assert "1 other configuration fell beyond the noise too" in text  # k; q2 is the trap's replicate, not another
    assert one_change(ranking, "q", "q2") == []
    without = tables()  # the trap's replicate is no change: the same changes as without it, credited with less
    with_rep = remedies(ranking, after_best(ranking, epochs, "val_srcc")).text
    alone = remedies(without[0], after_best(*without, "val_srcc")).text
    assert with_rep.split(". With ", 1)[1] == alone.split(". With ", 1)[1]
    assert "removed the fall" in alone and "removed the fall" not in with_rep


def test_a_change_is_judged_over_its_seeds():
    """The lower lr in two seeds, neither falling: it removed the fall (2 seeds). Image-level ranking in two seeds,
    one falling: not stable over seeds. Each seed's figures follow, labelled by its seed."""
    curves = {"q": CURVES["q"], "m": CURVES["m"], "m1": CURVES["m"], "k": CURVES["k"],
              "k1": (CURVES["k"][0], *CURVES["m"][1:])}
    ranking, epochs = tables(curves)
    ranking["hp.train.seed"] = [1 if t.endswith("1") else 0 for t in ranking["trial"]]
    text = remedies(ranking, after_best(ranking, epochs, "val_srcc")).text
    assert "removed the fall: lr 0.0003 -> 0.0001 (2 seeds)" in text
    assert "not stable over seeds: ranking patch -> image (fell in 1 of 2 seeds)" in text
    assert "With lr 0.0003 -> 0.0001, seed 0: no fall in its 4 epochs" in text
    assert "; seed 1: no fall in its 4 epochs" in text


def test_no_change_is_credited_with_removing_a_fall_that_the_trap_itself_did_not_repeat():
    curves = {"q": CURVES["q"], "q1": (CURVES["q"][0], *CURVES["m"][1:]), "m": CURVES["m"], "m1": CURVES["m"]}
    ranking, epochs = tables(curves)
    ranking["hp.train.seed"] = [1 if t.endswith("1") else 0 for t in ranking["trial"]]
    text = remedies(ranking, after_best(ranking, epochs, "val_srcc")).text
    assert "removed the fall" not in text
    assert ("no fall in any seed with lr 0.0003 -> 0.0001 (2 seeds), but the trap itself fell in only 1 of its 2 "
            "seeds, so no change can be credited with removing its fall") in text
