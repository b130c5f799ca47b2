"""``iqa-tune report EXPERIMENT_DIR``: one table computed once, then written as parquet, CSV, Markdown, a rich
terminal table with the headline, PNG pictures and a self-contained ``index.html`` (the page: ``page.py``, its
plots: ``figures.py``, its first lines: ``headline.py``)."""

from __future__ import annotations

import html
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from iqa_tune.errors import UserError
from iqa_tune.live import SHORT_ENDING
from iqa_tune.records import (
    DAMAGED,
    HP_PREFIX,
    PARAMS_FILE,
    REPORT_DIR,
    SELECTION_METRICS,
    crop_prediction_files,
    load_crop_predictions,
    load_experiment,
    load_predictions,
    study_settings,
)
from iqa_tune.versions import summary

from .confirmation import display_table, load_confirmation, method_text, progress_text
from .diagnosis import TOP, Diagnosis, change, diagnose, epoch_table, method
from .diagnosis import summary as diagnosis_summary
from .figures import (
    MIN_TRIALS_FOR_IMPORTANCE,
    SIGNAL_STYLES,
    diagnosis_figure,
    divergence,
    importance,
    importance_figure,
    learning_curves,
    parallel_coordinates,
)
from .headline import headline
from .labels import fmt_value, hp_names, metric_label, natural_order
from .page import PageStatus, Section, html_table, ranking_table, render_page
from .ranking import BOOTSTRAP_RESAMPLES, add_uncertainty, group_split_seeds, marginals, rank_trials

SHOWN = ["rank", "trial", "ended", "best_epoch", "val_srcc", "val_plcc", "test_srcc", "test_srcc_ci_lo",
         "test_srcc_ci_hi", "vs_top", "test_plcc", "max_test_srcc (selected on test)",
         "train_patch_minus_test_srcc (last)", "test_srcc_drop (best->last)"]


def format_cell(v) -> str:
    """A report cell: 4 decimals, scientific for tiny values, empty for a missing one."""
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "n/a"
        return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"
    return "" if v is None else str(v)


def _columns(df: pd.DataFrame, metric: str) -> list[str]:
    shown = [c if c != "val_srcc" else metric for c in SHOWN]
    return [c for c in dict.fromkeys(shown) if c in df] + [c for c in df if c.startswith(HP_PREFIX)]


def to_markdown(df: pd.DataFrame, cols: list[str]) -> str:
    head = "| " + " | ".join(c.removeprefix(HP_PREFIX) for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(format_cell(r[c]) for c in cols) + " |" for _, r in df.iterrows()]
    return "\n".join([head, sep, *body])


def terminal_view(ranking: pd.DataFrame, metric: str, width: int = 80) -> pd.DataFrame:
    """The ranking narrowed to ``width`` columns: the CI in one column, hyperparameters by short name, and those
    that would not fit left out (ranking.md has them all) rather than every figure squeezed into an ellipsis."""
    df = ranking.head(20)
    view = pd.DataFrame({"#": df["rank"], "trial": df["trial"].str[-5:], "ended": df["ended"].replace(SHORT_ENDING),
                         "ep": df.get("best_epoch"), metric: df[metric], "test": df.get("test_srcc")})
    view["95% CI"] = [f"{lo:.3f}..{hi:.3f}" if np.isfinite(lo) else "n/a"
                      for lo, hi in zip(df["test_srcc_ci_lo"], df["test_srcc_ci_hi"])]
    view["vs top"] = df["vs_top"].replace({"not significant": "n.s."})
    used = sum(_text_width(c, view[c]) for c in view) + 1
    for c in [c for c in df if c.startswith(HP_PREFIX)]:
        short = c.rsplit(".", 1)[-1]
        used += _text_width(short, df[c])
        if used > width:
            break
        view[short] = df[c]
    return view


def _text_width(header: str, values: pd.Series) -> int:
    """A column's width in a rich table: its widest cell or header, the padding and the rule."""
    return max([len(header), *(len(format_cell(v)) for v in values)]) + 3


def terminal_marginals(m: pd.DataFrame) -> pd.DataFrame:
    """The marginals for a terminal: hyperparameters by short name, two-line headers."""
    view = m.rename(columns=lambda c: c.replace(" ", "\n", 1) if c.startswith(("median ", "best ")) else c)
    return view.assign(hyperparameter=m["hyperparameter"].str.rsplit(".", n=1).str[-1])


def to_rich(df: pd.DataFrame, cols: list[str] | None, title: str) -> Table:
    cols = cols or list(df.columns)
    short = {"max_test_srcc (selected on test)": "max test (sel. on test)",
             "train_patch_minus_test_srcc (last)": "train patch - test", "test_srcc_drop (best->last)": "test drop",
             "test_srcc_ci_lo": "CI lo", "test_srcc_ci_hi": "CI hi", "best_epoch": "best ep"}
    table = Table(title=Text(title), title_justify="left")  # Text: a '[' in a study name is not markup
    for c in cols:
        table.add_column(short.get(c, c.removeprefix(HP_PREFIX)), justify="left" if c in ("trial", "ended") else "right")
    for _, r in df.iterrows():
        table.add_row(*[Text(format_cell(r[c])) for c in cols])
    return table


XTEST_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22")


def diagnosis_png(epochs: pd.DataFrame, diagnoses: list[Diagnosis], metric: str, path: Path) -> Path:
    """The diagnosis charts of the page (``figures.diagnosis_figure``) as one PNG, a panel per top trial."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(diagnoses), figsize=(max(7.0, 5 * len(diagnoses)), 4.6), squeeze=False)
    for ax, d in zip(axes[0], diagnoses):
        table = epoch_table(epochs, d.trial, metric)
        right = ax.twinx()
        for i, col in enumerate(table.columns[1:]):
            xtest = f"{col.removeprefix('xtest_').removesuffix('_srcc')} SRCC (cross-dataset)"
            label, colour, dash = SIGNAL_STYLES.get(col, (xtest, XTEST_COLOURS[i % len(XTEST_COLOURS)], "dashdot"))
            style = {"solid": "-", "dot": ":", "dash": "--", "dashdot": "-."}[dash]
            if col == metric:
                label, colour, style = f"{metric} (selects)", "#7f7f7f", "-"
            (right if col == "test_disagreement" else ax).plot(table["epoch"], table[col], style, marker=".",
                                                               color=colour, label=label)
        ax.axvline(d.best_epoch, color="#888", ls="--", lw=1)
        ax.set_title(f"#{d.rank} {d.trial}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("SRCC")
        right.set_ylabel("disagreement", color="#d62728")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("diagnosis signals per epoch; dashed line: the best val epoch")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(epochs: pd.DataFrame, ranking: pd.DataFrame, metric: str, out: Path,
          diagnoses: list[Diagnosis] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    files = []
    if epochs.empty:
        return files
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, col, title in ((axes[0], metric, f"{metric} (selects)"), (axes[1], "test_srcc", "test SRCC (reported)")):
        for _, g in epochs.groupby("trial"):
            g = g.sort_values("epoch")
            line, = ax.plot(g["epoch"], g[col], marker=".", lw=1)
            ended = g["ended"].iloc[-1]
            if ended == "cut at a rung":  # the cut is visible: an x where the trial stopped
                ax.plot(g["epoch"].iloc[-1], g[col].iloc[-1], "x", color=line.get_color(), ms=9, mew=2)
            elif ended == "errored":
                ax.plot(g["epoch"].iloc[-1], g[col].iloc[-1], "s", color="red", ms=7)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("image-level SRCC")
    fig.suptitle("per trial over epochs; x = cut at a rung, red square = errored")
    fig.tight_layout()
    files.append(out / "curves.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    counts = epochs.groupby("trial")["epoch"].nunique()
    top = [t for t in ranking["trial"] if counts.get(t, 0) >= 2][:4]  # a curve needs two epochs
    if top and "train_srcc_patch" in epochs:
        fig, axes = plt.subplots(1, len(top), figsize=(4 * len(top), 3.6), squeeze=False, sharey=True)
        for ax, trial in zip(axes[0], top):
            g = epochs[epochs["trial"] == trial].sort_values("epoch")
            ax.plot(g["epoch"], g["train_srcc_patch"], marker=".", label="train SRCC (patch level)")
            ax.plot(g["epoch"], g["test_srcc"], marker=".", label="test SRCC (image level)")
            ax.set_title(f"rank {int(ranking.loc[ranking.trial == trial, 'rank'].iloc[0])}: {trial}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle("train (patch) vs test (image) SRCC: the divergence of overfitting")
        fig.tight_layout()
        files.append(out / "divergence.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

    if diagnoses:
        files.append(diagnosis_png(epochs, diagnoses, metric, out / "diagnosis.png"))

    hps = [c for c in ranking if c.startswith(HP_PREFIX)]
    if hps:
        fig, axes = plt.subplots(1, len(hps), figsize=(3.6 * len(hps), 3.4), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], hps):
            df = ranking.dropna(subset=[metric])
            values = df[c]
            numeric = pd.api.types.is_numeric_dtype(values) and values.nunique() > 2
            order = natural_order(values)  # categories in their natural order (0.0 left of 1.0), not as met
            x = values if numeric else values.map({v: i for i, v in enumerate(order)})
            ax.scatter(x, df[metric], alpha=0.7)
            if not numeric:
                ax.set_xticks(range(len(order)), [fmt_value(v) for v in order])
                ax.set_xlim(-0.5, len(order) - 0.5)
            if numeric and values.min() > 0 and values.max() / values.min() > 20:
                ax.set_xscale("log")
            ax.set_xlabel(c.removeprefix(HP_PREFIX))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"{metric} at best epoch")
        fig.tight_layout()
        files.append(out / "hyperparameters.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def footer(versions: dict | None) -> str:
    """The report's last line: what ran the study (recorded by ``iqa-tune run`` in study.yaml)."""
    return f"Ran with {summary(versions)}." if versions else "Versions not recorded (a study of an older iqa-tune)."


def page_sections(exp_dir: Path, r: dict) -> list[Section]:
    """The page after the headline, in reading order; a new table or plot is one more entry here."""
    metric, ranking, epochs = r["metric"], r["ranking"], r["epochs"]
    toggle = ('<label class="toggle"><input type="checkbox" id="adv-toggle"> more columns: PLCC, the maximum test '
              "SRCC over epochs (selected on test), overfitting signals, differences to the top trial, any further "
              "searched values</label>")
    sections = [Section("ranking", f"Ranking by {metric_label(metric)} at each trial's best epoch",
                        ranking_table(ranking, metric, r.get("importance")),
                        "Test SRCC is read at the best val epoch; its CI is a 95% bootstrap over test images; "
                        "<i>vs top</i> is a paired bootstrap against rank 1 on the same images. Click a header "
                        "to sort; grey values had no effect in that configuration. " + toggle)]
    confirmation = r.get("confirmation")
    if confirmation is not None and not confirmation.empty:
        view = display_table(confirmation).rename(columns=lambda c: c.removeprefix(HP_PREFIX))
        sections.append(Section("confirmation", "Confirmation over seeds",
                                html_table(view, text={c for c in view if view[c].dtype == object}),
                                html.escape(" ".join(filter(None, (method_text(confirmation),
                                                                   progress_text(confirmation)))))))
    if (fig := parallel_coordinates(ranking, metric)) is not None:
        sections.append(Section("parallel", "Hyperparameters against val and test SRCC", figure=fig,
                                note="One line per trial with a result, coloured by the study metric; drag along "
                                     "an axis to keep only the trials in that range."))
    imp = r.get("importance")
    if imp is not None:
        sections.append(Section("importance", f"Hyperparameter importance for {metric_label(metric)}",
                                figure=importance_figure(imp, metric),
                                note=f"Optuna's fANOVA evaluator (a random forest over the searched values, seed 0) "
                                     f"on {int(imp['trials'].iloc[0])} trials: the share of the metric's variance "
                                     "each hyperparameter explains. With few trials it is a rough guide."))
    else:
        sections.append(Section("importance", f"Hyperparameter importance for {metric_label(metric)}",
                                note=html.escape(r.get("importance_note") or "")))
    if (fig := learning_curves(epochs, ranking, metric)) is not None:
        sections.append(Section("curves", "Learning curves", figure=fig,
                                note="Per trial and epoch; hover for the configuration, click a legend entry to "
                                     "hide a trial. Large ring: the best val epoch; x: cut at a rung; square: "
                                     "errored."))
    sections += diagnosis_sections(r)
    if (fig := divergence(epochs, ranking, metric)) is not None:
        sections.append(Section("divergence", "Train (patch) against test (image) SRCC, top trials", figure=fig,
                                note="Overfitting shows as train SRCC rising while test SRCC falls after the best "
                                     "val epoch (dashed line)."))
    for key, heading in (("groups", "Grouped over split seeds"), ("marginals", "Marginals per hyperparameter")):
        df = r[key]
        if df is not None and not df.empty:
            if key == "marginals":
                df = df.assign(hyperparameter=df["hyperparameter"].map(
                    hp_names(list(df["hyperparameter"].unique()))))
            sections.append(Section(key, heading, html_table(df, text={"hyperparameter"})))
    return sections


def diagnosis_sections(r: dict) -> list[Section]:
    """The diagnosis: one summary section, then a chart and the sentences of each top trial."""
    diagnoses: list[Diagnosis] = r.get("diagnoses") or []
    if not diagnoses:
        return []
    out = [Section("diagnosis", "Why does test SRCC fall? Diagnosis of the top trials",
                   f"<p>{html.escape(diagnosis_summary(diagnoses))}</p>", html.escape(method()))]
    for d in diagnoses:
        table = epoch_table(r["epochs"], d.trial, r["metric"])
        fig = diagnosis_figure(table, d.best_epoch, r["metric"], f"#{d.rank} {d.trial}: signals per epoch")
        body = "".join(f'<p class="diagnosis">{html.escape(t)}</p>' for t in d.sentences)
        out.append(Section(f"diagnosis-{d.rank}", f"Diagnosis of #{d.rank} ({d.trial})", body, figure=fig))
    return out


def diagnosis_markdown(r: dict) -> list[str]:
    """ranking.md's diagnosis: the summary and method, then each top trial's sentences and its signals per epoch."""
    diagnoses: list[Diagnosis] = r.get("diagnoses") or []
    if not diagnoses:
        return []
    md = ["\n## Why does test SRCC fall? Diagnosis of the top trials\n", diagnosis_summary(diagnoses) + "\n", method() + "\n"]
    for d in diagnoses:
        table = epoch_table(r["epochs"], d.trial, r["metric"])
        table["epoch"] = table["epoch"].astype(str)  # a row read alone would turn the epoch into a float: 1.0000
        md += [f"\n### #{d.rank} {d.trial}\n", *[f"- {t}" for t in d.sentences], "",
               to_markdown(table, list(table.columns))]
    return md


def load_crops(exp_dir: Path, diagnosed: list[tuple[str, int, int]]) -> dict[str, tuple[dict, dict]]:
    """trial -> (crop sets of its best epoch, of its last) for ``diagnosed`` (trial, best epoch, last epoch); a
    trial without both files, or with one unreadable, is left out (the diagnosis says its noise is unknown)."""
    out = {}
    for trial, best, last in diagnosed:
        files = crop_prediction_files(exp_dir / trial)
        if best not in files or last not in files:
            continue
        try:
            out[trial] = (load_crop_predictions(files[best]), load_crop_predictions(files[last]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a file cut by a crash: no noise, no failure
            continue
    return out


def diagnoses_of(exp_dir: Path, ranking: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> list[Diagnosis]:
    """The top trials' diagnosis, with the crop files of the two epochs it compares."""
    if epochs.empty or "epoch" not in epochs:
        return []
    last = epochs.groupby("trial")["epoch"].max()
    top = ranking.dropna(subset=[metric]).head(TOP)
    wanted = [(t, int(b), int(last[t])) for t, b in zip(top["trial"], top["best_epoch"]) if t in last.index
              and np.isfinite(b)]
    return diagnose(ranking, epochs, metric, load_crops(exp_dir, wanted))


def test_falls(exp_dir: Path, ranking: pd.DataFrame, epochs: pd.DataFrame, diagnoses: list[Diagnosis]) -> dict:
    """trial -> its test SRCC change from its best val epoch to its last (``diagnosis.change``: the paired bootstrap
    over the test images of the two epochs' crop files), for every trial that trained past its best val epoch: the
    one judgement of a fall that the diagnosis and the headline's trap sentences both read. The diagnosed trials'
    are taken from their diagnosis, not computed twice."""
    out = {d.trial: d.changes["test_srcc"] for d in diagnoses if "test_srcc" in d.changes}
    if epochs.empty or "epoch" not in epochs or "test_srcc" not in epochs:
        return out
    last = epochs.groupby("trial")["epoch"].max()
    wanted = [(t, int(b), int(last[t])) for t, b in zip(ranking["trial"], ranking["best_epoch"])
              if t not in out and t in last.index and np.isfinite(b) and last[t] > b]
    for trial, crops in load_crops(exp_dir, wanted).items():
        hist = epochs[epochs["trial"] == trial].set_index("epoch")
        best, end = next((b, e) for t, b, e in wanted if t == trial)
        out[trial] = change("test_srcc", hist.loc[best], hist.loc[end], crops)
    return out


def fit_importance(r: dict) -> tuple[pd.DataFrame | None, str]:
    """fANOVA importance of the searched values, or why there is none; a failed fit never fails the report."""
    try:
        imp = importance(r["ranking"], r["metric"], r["mode"])
    except Exception as e:  # a library's complaint about an odd study: say so on the page, keep the rest
        return None, f"Importance could not be computed: {e}"
    if imp is None:
        return None, (f"Importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} trials with a result and a searched "
                      "value that varies.")
    return imp, ""


def study_status(ranking: pd.DataFrame, planned: int | None = None) -> PageStatus:
    """Trials running and waiting; ``planned`` (study.yaml) counts trials Tune has not created yet as waiting,
    while the study is still running."""
    ended = ranking["ended"].value_counts() if len(ranking) else pd.Series(dtype=int)
    running = int(ended.get("running", 0))
    pending = int(ended.get("pending", 0) + ended.get("paused", 0))
    unseen = max(0, (planned or 0) - len(ranking)) if running or pending else 0
    return PageStatus(len(ranking) + unseen, running, pending + unseen)


def _write_atomic(path: Path, text: str) -> None:
    """A reader reloading the page during a rewrite sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _readable_settings(exp_dir: Path, damage: list[str]) -> dict:
    """study.yaml, or {} (the defaults: val_srcc, max) with the damage noted when it cannot be read."""
    try:
        return study_settings(exp_dir)
    except UserError as e:
        damage.append(f"{e}; ranked by --metric or val_srcc (max); versions and planned trials unknown")
        return {}


def _readable_confirmation(exp_dir: Path, damage: list[str]) -> pd.DataFrame | None:
    try:
        return load_confirmation(exp_dir)
    except UserError as e:
        damage.append(f"{e}; the confirmation table is left out")
        return None


def damaged_trials(trials: pd.DataFrame) -> list[str]:
    """One line per trial with a file that could not be read: which file, and what was kept of the trial."""
    if "damaged" not in trials:
        return []
    out = []
    for _, t in trials[trials["damaged"].fillna("") != ""].iterrows():
        kept = "its searched values are lost; left out of the ranking" if t["damaged"] == PARAMS_FILE else (
            "its figures stand; no test-image intervals for it")
        out.append(f"trial {t['trial']}: {t['damaged']} is damaged ({kept})")
    return out


def compute_tables(exp_dir: Path, metric: str | None = None) -> dict:
    """Everything the report shows, as tables (no output). ``damage``: a line per file that could not be read
    (a study killed mid-write); what is readable is reported, and only an experiment with nothing readable is
    refused."""
    damage: list[str] = []
    settings = _readable_settings(exp_dir, damage)
    study_metric = settings.get("metric", "val_srcc")
    if metric and metric not in SELECTION_METRICS:
        raise UserError(f"--metric: {metric!r} cannot rank trials; choose one of {', '.join(SELECTION_METRICS)} "
                        "(test metrics are never used to select)")
    mode = SELECTION_METRICS[metric] if metric and metric != study_metric else settings.get("mode", "max")
    metric = metric or study_metric
    epochs, trials = load_experiment(exp_dir)
    if trials.empty:
        raise UserError(f"{exp_dir}: no trials found (expected trial folders with params.json)")
    damage += damaged_trials(trials)
    trials = trials[trials["ended"] != DAMAGED]
    if trials.empty:
        raise UserError(f"{exp_dir}: nothing readable: " + "; ".join(damage))
    if not epochs.empty and metric not in epochs:
        raise UserError(f"--metric: {metric!r} is not among the reported metrics")
    ranking = rank_trials(epochs, trials, metric, mode)
    # the saved per-image predictions are those of the study metric's best epoch: intervals for another metric's
    # epochs would describe the wrong epoch, so they are left out (n/a) then
    preds = {t: p for t, path in zip(trials["trial"], trials["predictions"])
             if (p := load_predictions(path)) is not None} if metric == study_metric else {}
    ranking = add_uncertainty(ranking, preds)
    diagnoses = diagnoses_of(exp_dir, ranking, epochs, metric)
    return {"metric": metric, "mode": mode, "epochs": epochs, "ranking": ranking, "diagnoses": diagnoses,
            "falls": test_falls(exp_dir, ranking, epochs, diagnoses),
            "groups": group_split_seeds(ranking, metric, mode), "marginals": marginals(ranking, metric, mode),
            "versions": settings.get("versions"), "source": settings.get("source"), "uri": settings.get("uri"),
            "planned": settings.get("trials"), "confirmation": _readable_confirmation(exp_dir, damage),
            "damage": damage, "predictions": preds}


def write_report(exp_dir: Path, out: Path | None = None, metric: str | None = None,
                 pictures: bool = True, experiment: str | None = None) -> dict:
    """Compute everything and write every file; returns the tables, the findings and where they went.
    ``pictures``: also the PNG copies of the curves (matplotlib, seconds; the live rewrite leaves them out).
    ``experiment``: where the study lives, for the commands the report suggests (default: the URI that
    study.yaml records for a study on object storage, else ``exp_dir``)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir}: no such experiment folder")
    r = compute_tables(exp_dir, metric)
    out = Path(out) if out else exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    metric, ranking = r["metric"], r["ranking"]
    r["importance"], r["importance_note"] = fit_importance(r)
    r["findings"] = headline(ranking, r["epochs"], metric, experiment or r["uri"] or str(exp_dir), r["source"],
                             r["planned"], r["confirmation"], r["diagnoses"], r["predictions"], r["falls"])
    r["out"] = out
    r["epochs"].to_parquet(out / "results.parquet", index=False)
    cols = _columns(ranking, metric)
    ranking.to_csv(out / "ranking.csv", index=False)
    md = [f"# {exp_dir.name}: ranked by {metric} at each trial's best epoch\n",
          *[f"{f.text}\n" for f in r["findings"]],
          *[f"Damaged: {line}\n" for line in r["damage"]],
          "test_srcc is read at the best val epoch (the figure to report); `max_test_srcc (selected on test)` is "
          "the optimistic protocol of the reference code. CI: 95% bootstrap over test images; vs_top: paired "
          f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples) against rank 1 on the same images, p-values Holm-adjusted "
          "over the comparisons: better / worse at adjusted p < 0.05, else not significant. It covers which test "
          "images were drawn, not the training seed: `iqa-tune confirm` measures that.\n", to_markdown(ranking, cols)]
    for key, heading in (("groups", "Grouped over split seeds"), ("marginals", "Marginals per hyperparameter")):
        df = r[key]
        if df is not None and not df.empty:
            md += [f"\n## {heading}\n", to_markdown(df, list(df.columns))]
    if r["importance"] is not None:
        md += [f"\n## Hyperparameter importance for {metric} (fANOVA)\n",
               to_markdown(r["importance"], list(r["importance"].columns))]
    md += diagnosis_markdown(r)
    confirmation = r["confirmation"]
    if confirmation is not None:  # iqa-tune confirm: the top configurations over seeds
        view, method = display_table(confirmation), " ".join(filter(None, (method_text(confirmation),
                                                                           progress_text(confirmation))))
        confirmation.to_csv(out / "confirmation.csv", index=False)
        md += ["\n## Confirmation over seeds\n", method + "\n", to_markdown(view, list(view.columns))]
    last_line = footer(r["versions"])
    _write_atomic(out / "ranking.md", "\n".join(md) + f"\n\n---\n{last_line}\n")
    if pictures:
        plots(r["epochs"], ranking, metric, out, r["diagnoses"])  # PNG copies of the curves, for documents and Markdown
    page = render_page(f"{exp_dir.name}: study report", study_status(ranking, r["planned"]), r["findings"],
                       page_sections(exp_dir, r), last_line)
    _write_atomic(out / "index.html", page)
    return r


def build_report(exp_dir: Path, out: Path | None = None, metric: str | None = None,
                 console: Console | None = None, experiment: str | None = None) -> Path:
    """``iqa-tune report``: write the report, then print the headline and the compact ranking."""
    # a log file or CI gets a table wide enough to read; a terminal keeps its own width
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    r = write_report(exp_dir, out, metric, experiment=experiment)
    metric, ranking, out = r["metric"], r["ranking"], r["out"]
    for line in r["damage"]:  # a study killed mid-write: what could not be read, before what could
        Console(stderr=True).print(Text.assemble(("warning:", "bold yellow"), " ", line), soft_wrap=True)
    view = terminal_view(ranking, metric, console.width)
    console.print(to_rich(view, None, f"{Path(exp_dir).name}: ranked by {metric} at each trial's best epoch"))
    hidden = [c.rsplit(".", 1)[-1] for c in ranking if c.startswith(HP_PREFIX) and c.rsplit(".", 1)[-1] not in view]
    if hidden:
        console.print(Text(f"not shown at this width: {', '.join(hidden)} (ranking.md has every column)"))
    if r["marginals"] is not None and not r["marginals"].empty:
        console.print(to_rich(terminal_marginals(r["marginals"]), None, "marginals"))
    if r["importance"] is not None:
        console.print(Text(f"importance for {metric} (fANOVA, {int(r['importance']['trials'].iloc[0])} trials): "
                           + ", ".join(f"{h} {v:.2f}" for h, v in zip(r["importance"]["hyperparameter"],
                                                                      r["importance"]["importance"]))))
    confirmation = r["confirmation"]
    if confirmation is not None:
        console.print(to_rich(display_table(confirmation), None, "confirmation over seeds (test SRCC at the best "
                                                                 "val epoch, paired against the best; Holm)"))
    console.print(Text(f"report: {out}/index.html (ranking.csv, ranking.md, results.parquet, *.png)"))
    if r["diagnoses"]:
        console.print(Panel(Text("\n".join([diagnosis_summary(r["diagnoses"]), *(t for d in r["diagnoses"] for t in d.sentences)])),
                            title="Why does test SRCC fall? (top trials; 95% paired bootstrap over images)",
                            title_align="left", border_style="magenta"))
    console.print(Panel(Text("\n".join(f.text for f in r["findings"])), title="What the study found",
                        title_align="left", border_style="blue"))
    return out
