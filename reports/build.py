"""``iqa-tune report EXPERIMENT_DIR``: one table computed once, then written as parquet, CSV, Markdown, a rich
terminal table, PNG pictures and a self-contained ``index.html`` (pictures inlined, no external assets)."""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from iqa_tune.errors import UserError
from iqa_tune.live import SHORT_ENDING
from iqa_tune.records import HP_PREFIX, SELECTION_METRICS, load_experiment, load_predictions, study_settings
from iqa_tune.versions import summary

from .confirmation import display_table, load_confirmation, method_text, progress_text
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


def terminal_view(ranking: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ranking narrowed for an 80-column terminal: the CI in one column, hyperparameters by short name."""
    df = ranking.head(20)
    view = pd.DataFrame({"#": df["rank"], "trial": df["trial"].str[-5:], "ended": df["ended"].replace(SHORT_ENDING),
                         "ep": df.get("best_epoch"), metric: df[metric], "test": df.get("test_srcc")})
    view["95% CI"] = [f"{lo:.3f}..{hi:.3f}" if np.isfinite(lo) else "n/a"
                      for lo, hi in zip(df["test_srcc_ci_lo"], df["test_srcc_ci_hi"])]
    view["vs top"] = df["vs_top"].replace({"not significant": "n.s."})
    for c in [c for c in df if c.startswith(HP_PREFIX)]:
        view[c.rsplit(".", 1)[-1]] = df[c]
    return view


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


def plots(epochs: pd.DataFrame, ranking: pd.DataFrame, metric: str, out: Path) -> list[Path]:
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
            if ended == "stopped by ASHA":  # the cut is visible: an x where the trial stopped
                ax.plot(g["epoch"].iloc[-1], g[col].iloc[-1], "x", color=line.get_color(), ms=9, mew=2)
            elif ended == "errored":
                ax.plot(g["epoch"].iloc[-1], g[col].iloc[-1], "s", color="red", ms=7)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("image-level SRCC")
    fig.suptitle("per trial over epochs; x = stopped by ASHA, red square = errored")
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

    hps = [c for c in ranking if c.startswith(HP_PREFIX)]
    if hps:
        fig, axes = plt.subplots(1, len(hps), figsize=(3.6 * len(hps), 3.4), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], hps):
            df = ranking.dropna(subset=[metric])
            values = df[c]
            numeric = pd.api.types.is_numeric_dtype(values) and values.nunique() > 2
            x = values if numeric else values.astype(str)
            ax.scatter(x, df[metric], alpha=0.7)
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


def to_html(sections: list[tuple[str, str]], pictures: list[Path], title: str, last_line: str = "") -> str:
    """Tables as HTML, pictures inlined as data URIs: one file that opens offline."""
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, table_html in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", table_html]
    for p in pictures:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f'<h2>{html.escape(p.stem)}</h2><img alt="{html.escape(p.name)}" '
                     f'src="data:image/png;base64,{data}">')
    if last_line:
        parts.append(f"<hr><footer>{html.escape(last_line)}</footer>")
    return "\n".join(parts)


def compute_tables(exp_dir: Path, metric: str | None = None) -> dict:
    """Everything the report shows, as tables (no output)."""
    settings = study_settings(exp_dir)
    study_metric = settings.get("metric", "val_srcc")
    if metric and metric not in SELECTION_METRICS:
        raise UserError(f"--metric: {metric!r} cannot rank trials; choose one of {', '.join(SELECTION_METRICS)} "
                        "(test metrics are never used to select)")
    mode = SELECTION_METRICS[metric] if metric and metric != study_metric else settings.get("mode", "max")
    metric = metric or study_metric
    epochs, trials = load_experiment(exp_dir)
    if trials.empty:
        raise UserError(f"{exp_dir}: no trials found (expected trial folders with params.json)")
    if not epochs.empty and metric not in epochs:
        raise UserError(f"--metric: {metric!r} is not among the reported metrics")
    ranking = rank_trials(epochs, trials, metric, mode)
    # the saved per-image predictions are those of the study metric's best epoch: intervals for another metric's
    # epochs would describe the wrong epoch, so they are left out (n/a) then
    preds = {t: p for t, path in zip(trials["trial"], trials["predictions"])
             if (p := load_predictions(path)) is not None} if metric == study_metric else {}
    ranking = add_uncertainty(ranking, preds)
    return {"metric": metric, "mode": mode, "epochs": epochs, "ranking": ranking,
            "groups": group_split_seeds(ranking, metric, mode), "marginals": marginals(ranking, metric, mode),
            "confirmation": load_confirmation(exp_dir), "versions": settings.get("versions")}


def build_report(exp_dir: Path, out: Path | None = None, metric: str | None = None,
                 console: Console | None = None) -> Path:
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir}: no such experiment folder")
    # a log file or CI gets a table wide enough to read; a terminal keeps its own width
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    r = compute_tables(exp_dir, metric)
    out = Path(out) if out else exp_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    metric, ranking = r["metric"], r["ranking"]
    r["epochs"].to_parquet(out / "results.parquet", index=False)
    cols = _columns(ranking, metric)
    ranking.to_csv(out / "ranking.csv", index=False)
    md = [f"# {exp_dir.name}: ranked by {metric} at each trial's best epoch\n",
          "test_srcc is read at the best val epoch (the figure to report); `max_test_srcc (selected on test)` is "
          "the optimistic protocol of the reference code. CI: 95% bootstrap over test images; vs_top: paired "
          f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples) against rank 1 on the same images, p-values Holm-adjusted "
          "over the comparisons: better / worse at adjusted p < 0.05, else not significant. It covers which test "
          "images were drawn, not the training seed: `iqa-tune confirm` measures that.\n", to_markdown(ranking, cols)]
    sections = [("Ranking", ranking[cols].to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="n/a"))]
    for key, heading in (("groups", "Grouped over split seeds"), ("marginals", "Marginals per hyperparameter")):
        df = r[key]
        if df is not None and not df.empty:
            md += [f"\n## {heading}\n", to_markdown(df, list(df.columns))]
            sections.append((heading, df.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="n/a")))
    confirmation = r["confirmation"]
    if confirmation is not None:  # iqa-tune confirm: the top configurations over seeds
        view, method = display_table(confirmation), " ".join(filter(None, (method_text(confirmation),
                                                                           progress_text(confirmation))))
        confirmation.to_csv(out / "confirmation.csv", index=False)
        md += ["\n## Confirmation over seeds\n", method + "\n", to_markdown(view, list(view.columns))]
        sections.insert(1, ("Confirmation over seeds", f"<p>{html.escape(method)}</p>"
                            + view.rename(columns=lambda c: c.removeprefix(HP_PREFIX)).to_html(index=False)))
    last_line = footer(r["versions"])
    (out / "ranking.md").write_text("\n".join(md) + f"\n\n---\n{last_line}\n")
    pictures = plots(r["epochs"], ranking, metric, out)
    (out / "index.html").write_text(to_html(sections, pictures, f"{exp_dir.name}: study report", last_line))
    console.print(to_rich(terminal_view(ranking, metric), None, f"{exp_dir.name}: ranked by {metric} at each trial's best epoch"))
    if r["marginals"] is not None and not r["marginals"].empty:
        console.print(to_rich(r["marginals"], list(r["marginals"].columns), "marginals"))
    if confirmation is not None:
        console.print(to_rich(display_table(confirmation), None, "confirmation over seeds (test SRCC at the best "
                                                                 "val epoch, paired against the best; Holm)"))
    console.print(Text(f"report: {out}/index.html (ranking.csv, ranking.md, results.parquet, *.png)"))
    return out
