"""The report page's interactive plots (plotly, the library Optuna's own visualisations use): parallel
coordinates of the searched hyperparameters against val and test SRCC, hyperparameter importance (Optuna's
fANOVA evaluator, a random forest fitted by the library), learning curves named by trial and configuration, and
train-vs-test curves of the top trials. Pure: tables in, ``plotly`` figures out; the page inlines plotly.js once.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from iqa_tune.records import HP_PREFIX

from .labels import describe, fmt_value, hp_names, is_categorical, metric_label, natural_order

MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA's forest needs a few points; fewer would rank noise
PALETTE = qualitative.Plotly + qualitative.D3[1:]
FONT = dict(family="system-ui, sans-serif", size=12)


def _hp_cols(df: pd.DataFrame) -> list[str]:
    return [c for c in df if c.startswith(HP_PREFIX)]


def trial_colours(ranking: pd.DataFrame) -> dict[str, str]:
    """One colour per trial, by rank, shared by every plot of the page."""
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(ranking["trial"])}


def trial_names(ranking: pd.DataFrame) -> dict[str, str]:
    """``#1 738ea_00003: alpha 1, ranking patch``: the legend entry of a trial."""
    hp = _hp_cols(ranking)
    return {r["trial"]: f"#{int(r['rank'])} {r['trial']}: {describe(r, hp, r.get('inert', ''))}"
            for _, r in ranking.iterrows()}


def _log_scaled(v: pd.Series) -> bool:
    return bool(v.min() > 0 and v.max() / v.min() > 20)


def parallel_coordinates(ranking: pd.DataFrame, metric: str) -> go.Figure | None:
    """One line per trial across its hyperparameters, then val and test SRCC; coloured by the study metric."""
    df = ranking.dropna(subset=[metric]).reset_index(drop=True)
    hp = [c for c in _hp_cols(df) if df[c].nunique(dropna=False) > 1] or _hp_cols(df)
    if df.empty or not hp:
        return None
    names = hp_names(hp)
    dims = []
    for c in hp:
        v = df[c]
        if is_categorical(v) or v.nunique() <= 3:  # a grid axis: its values as ticks, in natural order
            order = natural_order(v)
            codes = v.map({x: i for i, x in enumerate(order)}).astype(float)
            dims.append(dict(label=names[c], values=codes, tickvals=list(range(len(order))),
                             ticktext=[fmt_value(x) for x in order], range=[-0.25, len(order) - 0.75]))
        elif _log_scaled(v):  # loguniform draws: a log axis, labelled in the original values
            ticks = np.linspace(np.log10(v.min()), np.log10(v.max()), 4)
            dims.append(dict(label=f"{names[c]} (log)", values=np.log10(v.astype(float)), tickvals=ticks,
                             ticktext=[f"{10 ** t:.2g}" for t in ticks]))
        else:
            dims.append(dict(label=names[c], values=v.astype(float)))
    for col in dict.fromkeys([metric, "test_srcc"]):
        if col in df:
            dims.append(dict(label=metric_label(col) if col == metric else "test SRCC (at best val epoch)",
                             values=df[col].astype(float)))
    fig = go.Figure(go.Parcoords(
        line=dict(color=df[metric].astype(float), colorscale="Viridis", showscale=True,
                  colorbar=dict(title=dict(text=metric_label(metric)))),
        dimensions=dims, labelangle=0, labelside="top"))
    fig.update_layout(height=420, margin=dict(l=60, r=40, t=70, b=30), font=FONT)
    return fig


def importance(ranking: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame | None:
    """fANOVA importance of each searched hyperparameter for the study metric (Optuna's evaluator on the trials
    with a defined value); None when there are too few trials or nothing varies."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    df = ranking.dropna(subset=[metric]).reset_index(drop=True)
    hp = [c for c in _hp_cols(df) if df[c].nunique() > 1 and df[c].notna().all()]
    if len(df) < MIN_TRIALS_FOR_IMPORTANCE or not hp:
        return None
    dists, values = {}, {}
    for c in hp:
        v = df[c]
        if is_categorical(v):
            order = natural_order(v)
            dists[c] = CategoricalDistribution([x if isinstance(x, (bool, int, float, str)) else str(x)
                                                for x in order])
            values[c] = [x if isinstance(x, (bool, int, float, str)) else str(x) for x in v]
        elif pd.api.types.is_integer_dtype(v):
            dists[c], values[c] = IntDistribution(int(v.min()), int(v.max())), [int(x) for x in v]
        else:
            dists[c] = FloatDistribution(float(v.min()), float(v.max()), log=_log_scaled(v))
            values[c] = [float(x) for x in v]
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials([optuna.trial.create_trial(params={c: values[c][i] for c in hp}, distributions=dists,
                                                value=float(df.loc[i, metric])) for i in range(len(df))])
    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), normalize=True)
    names = hp_names(hp)
    return pd.DataFrame({"hyperparameter": [names[c] for c in imp], "importance": list(imp.values()),
                         "trials": len(df)})


def importance_figure(imp: pd.DataFrame, metric: str) -> go.Figure:
    imp = imp.sort_values("importance")
    fig = go.Figure(go.Bar(x=imp["importance"], y=imp["hyperparameter"], orientation="h",
                           text=[f"{v:.2f}" for v in imp["importance"]], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 32 * len(imp), margin=dict(l=140, r=30, t=30, b=40), font=FONT,
                      xaxis=dict(title=f"share of the variance of {metric_label(metric)} (fANOVA)", range=[0, 1]))
    return fig


def learning_curves(epochs: pd.DataFrame, ranking: pd.DataFrame, metric: str) -> go.Figure | None:
    """Val (selects) and test (reported) per epoch, one colour and legend entry per trial; a click on the legend
    hides a trial in both panels. x: cut at a rung (ASHA or halving); red square: errored; ring: the best val epoch."""
    if epochs.empty or metric not in epochs:
        return None
    colours, names = trial_colours(ranking), trial_names(ranking)
    best = ranking.set_index("trial")["best_epoch"] if "best_epoch" in ranking else pd.Series(dtype=float)
    panels = [(metric, f"{metric_label(metric)} (selects)"), ("test_srcc", "test SRCC (reported)")]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[t for _, t in panels],
                        horizontal_spacing=0.04)
    for trial in ranking["trial"]:
        g = epochs[epochs["trial"] == trial].sort_values("epoch")
        if g.empty:
            continue
        ended = g["ended"].iloc[-1]
        symbols = ["circle"] * len(g)
        if ended == "cut at a rung":
            symbols[-1] = "x"
        elif ended == "errored":
            symbols[-1] = "square"
        sizes = [11 if e == best.get(trial) else 6 for e in g["epoch"]]
        for col, (y, _) in enumerate(panels, start=1):
            if y not in g:
                continue
            fig.add_trace(go.Scatter(
                x=g["epoch"], y=g[y], mode="lines+markers", name=names[trial], legendgroup=trial,
                showlegend=col == 1, line=dict(color=colours[trial], width=2),
                marker=dict(symbol=symbols, size=sizes, color=colours[trial]),
                hovertemplate=f"{names[trial]}<br>{ended}<br>epoch %{{x}}: {metric_label(y)} %{{y:.3f}}<extra></extra>"),
                row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="image-level SRCC", row=1, col=1)
    fig.update_layout(height=460, margin=dict(l=60, r=20, t=40, b=40), font=FONT, hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, font=dict(size=11)))
    return fig


def divergence(epochs: pd.DataFrame, ranking: pd.DataFrame, metric: str, top: int = 4) -> go.Figure | None:
    """Patch-level train SRCC against image-level test SRCC for the top trials: overfitting is the gap opening
    after the best val epoch (dotted line)."""
    if epochs.empty or "train_srcc_patch" not in epochs or "test_srcc" not in epochs:
        return None
    counts = epochs.groupby("trial")["epoch"].nunique()
    shown = [t for t in ranking.dropna(subset=[metric])["trial"] if counts.get(t, 0) >= 2][:top]
    if not shown:
        return None
    colours, names = trial_colours(ranking), trial_names(ranking)
    rows = ranking.set_index("trial")
    fig = make_subplots(rows=1, cols=len(shown), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"#{int(rows.loc[t, 'rank'])} {t}" for t in shown])
    for i, t in enumerate(shown, start=1):
        g = epochs[epochs["trial"] == t].sort_values("epoch")
        for y, dash, label in (("train_srcc_patch", "dot", "train SRCC (patch)"), ("test_srcc", "solid", "test SRCC (image)")):
            fig.add_trace(go.Scatter(x=g["epoch"], y=g[y], mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=i == 1, line=dict(color=colours[t], dash=dash),
                                     hovertemplate=f"{names[t]}<br>epoch %{{x}}: {label} %{{y:.3f}}<extra></extra>"),
                          row=1, col=i)
        fig.add_vline(x=float(rows.loc[t, "best_epoch"]), line=dict(color="#888", dash="dash", width=1), row=1, col=i)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="SRCC", row=1, col=1)
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=40, b=40), font=FONT,
                      legend=dict(orientation="h", yanchor="bottom", y=1.1, x=0, xanchor="left"))
    return fig


# the diagnosis chart: one line style per signal, the same in every trial's chart
SIGNAL_STYLES = {"test_srcc": ("test SRCC (image)", "#1f77b4", "solid"),
                 "train_eval_srcc": ("train-eval SRCC (image)", "#2ca02c", "solid"),
                 "test_srcc_patch": ("test SRCC (patch)", "#1f77b4", "dot"),
                 "test_disagreement": ("within-image disagreement (right axis)", "#d62728", "dash")}


def diagnosis_figure(table: pd.DataFrame, best_epoch: int, metric: str, title: str) -> go.Figure | None:
    """One trial's diagnosis signals per epoch (``diagnosis.epoch_table``): the study metric, test, train-eval and
    cross-dataset SRCC at image level and test SRCC per patch on the left axis, the within-image disagreement (a
    ratio, another scale) on the right; the best val epoch dashed."""
    if table.empty or len(table) < 2:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    xtest = [c for c in table if c.startswith("xtest_")]
    styles = {metric: (f"{metric_label(metric)} (selects)", "#7f7f7f", "solid"), **SIGNAL_STYLES,
              **{c: (f"{c.removeprefix('xtest_').removesuffix('_srcc')} SRCC (cross-dataset)",
                     PALETTE[(i + 4) % len(PALETTE)], "dashdot") for i, c in enumerate(xtest)}}
    for col, (label, colour, dash) in styles.items():
        if col not in table or table[col].isna().all():
            continue
        right = col == "test_disagreement"
        fig.add_trace(go.Scatter(x=table["epoch"], y=table[col], mode="lines+markers", name=label,
                                 line=dict(color=colour, dash=dash, width=2),
                                 hovertemplate=f"epoch %{{x}}: {label} %{{y:.3f}}<extra></extra>"),
                      secondary_y=right)
    fig.add_vline(x=float(best_epoch), line=dict(color="#888", dash="dash", width=1),
                  annotation_text="best val epoch", annotation_position="top left")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="SRCC", secondary_y=False)
    fig.update_yaxes(title_text="disagreement (crop SD / SD of image means)", secondary_y=True, showgrid=False)
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=380, font=FONT,
                      margin=dict(l=60, r=60, t=50, b=40), legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig
