"""The report page, ``report/index.html``: one self-contained file (plotly.js inlined once, no network) that
reads top-down like an answer: the headline, the ranking, then plots and further tables.

A page is a list of :class:`Section`; a new table or plot is one more entry. Tables have human headers, three
decimals, a CI in one cell, sort on a click on a header, and keep their secondary columns behind one toggle so
the page fits 1400 px without scrolling sideways.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from iqa_tune.records import HP_PREFIX

from .headline import Finding
from .labels import column_name, fmt, fmt_ci, fmt_value, hp_names

# ranking columns shown by default; everything else the ranking carries sits behind the "more columns" toggle
MAIN = ["rank", "trial", "ended", "best_epoch", "{metric}", "test_srcc", "test_ci", "vs_top"]
HIDDEN = {"inert", "predictions", "test_srcc_ci_lo", "test_srcc_ci_hi", "diff_ci_lo", "diff_ci_hi"}
RELOAD_S = 30  # a page of a running study reloads itself this often
INTEGERS = {"rank", "best_epoch", "epochs_run", "trials", "splits"}  # counts, whatever dtype NaN forced on them
MAIN_HPS = 7  # searched values shown by default (the most important first); more go behind the toggle

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1360px;padding:0 12px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}
.status{color:#555;margin:0 0 12px}.status.live{color:#8a5a00}
#headline{background:#f4f7fb;border-left:4px solid #3b6fb6;padding:10px 16px;margin:8px 0 16px}
#headline p{margin:5px 0}#headline .best{font-size:16px;font-weight:600}
.note{color:#555;font-size:13px;margin:2px 0 8px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f6f6;cursor:pointer;user-select:none;position:sticky;top:0;vertical-align:bottom}
#ranking-table th{white-space:normal;max-width:7em}
td.clip{max-width:11em;overflow:hidden;text-overflow:ellipsis}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.text,th.text{text-align:left}td.wrap{white-space:normal;max-width:28em;text-align:left}
td.inert{color:#aaa}tr:hover td{background:#fafae6}
.adv{display:none}body.show-adv .adv{display:table-cell}
.toggle{font-size:13px;margin:4px 0;display:inline-block}
footer{color:#666;font-size:12px;margin-top:30px}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
    const asc = !th.classList.contains('sorted-asc');
    table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
    th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
    const body = table.tBodies[0];
    const key = tr => tr.children[col].dataset.v;
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' || y === '') return (x === '') - (y === '');  // undefined values last, either way
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }));
});
const toggle = document.getElementById('adv-toggle');
if (toggle) toggle.addEventListener('change', () => document.body.classList.toggle('show-adv', toggle.checked));
"""


@dataclass
class Section:
    """One block of the page: a heading, a note, and either HTML or a plotly figure."""

    id: str
    title: str
    body: str = ""
    note: str = ""
    figure: object = None  # a plotly Figure, rendered with plotly.js inlined the first time


@dataclass
class PageStatus:
    """Where the study stands, for the line under the title."""

    total: int
    running: int = 0
    pending: int = 0
    written: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def live(self) -> bool:
        return bool(self.running or self.pending)


def _sort_key(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    return str(v)


def html_table(df: pd.DataFrame, advanced: set[str] = frozenset(), text: set[str] = frozenset(),
               wrap: set[str] = frozenset(), muted=None, table_id: str = "") -> str:
    """A sortable table with human headers; ``advanced`` columns are hidden until the toggle is on; ``muted``
    (row position, column) -> True greys a cell out (a value without effect)."""
    cols = list(df.columns)
    names = {c: column_name(c) for c in cols}
    names.update(hp_names([c for c in cols if c.startswith(HP_PREFIX)]))

    def cls(c, extra=()):
        parts = [*extra, *(["adv"] if c in advanced else []), *(["text"] if c in text else []),
                 *(["wrap"] if c in wrap else [])]
        return f' class="{" ".join(parts)}"' if parts else ""

    head = "".join(f'<th{cls(c)} title="{html.escape(c)}">{html.escape(names[c])}</th>' for c in cols)
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        cells = []
        for c in cols:
            v = r[c]
            if c.startswith(HP_PREFIX):
                shown = fmt_value(v)
            elif c in INTEGERS and isinstance(v, (float, np.floating)) and np.isfinite(v):
                shown = str(int(v))
            else:
                shown = fmt(v)
            extra = ["inert"] if muted is not None and muted(i, c) else []
            tip = ' title="no effect in this configuration"' if extra else ""
            if c.startswith(HP_PREFIX) and len(shown) > 14:  # a long name (a backbone) is clipped; hover shows it
                extra.append("clip")
                tip = tip or f' title="{html.escape(shown)}"'
            cells.append(f'<td{cls(c, extra)}{tip} data-v="{html.escape(_sort_key(v))}">{html.escape(shown)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return (f'<div class="scroll"><table class="sortable"{ident}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def ranking_view(ranking: pd.DataFrame, metric: str, importance: pd.DataFrame | None = None,
                 ) -> tuple[pd.DataFrame, set[str]]:
    """The ranking for the page: the CIs as one column each, main columns first, the rest marked advanced.
    Searched values beyond ``MAIN_HPS`` (the least important by ``importance``, else the last) are advanced too."""
    df = ranking.copy()
    if "test_srcc_ci_lo" in df:
        df["test_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(df["test_srcc_ci_lo"], df["test_srcc_ci_hi"])]
    if "diff_ci_lo" in df:
        df["diff_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(df["diff_ci_lo"], df["diff_ci_hi"])]
    main = [c for c in dict.fromkeys(m.format(metric=metric) for m in MAIN) if c in df]
    hp = [c for c in df if c.startswith(HP_PREFIX)]
    if importance is not None and len(hp) > MAIN_HPS:
        rank = {h: i for i, h in enumerate(importance.sort_values("importance", ascending=False)["hyperparameter"])}
        names = hp_names(hp)
        hp = sorted(hp, key=lambda c: rank.get(names[c], len(rank)))
    rest = [c for c in df if c not in main and c not in hp and c not in HIDDEN]
    return df[main + hp + rest], set(hp[MAIN_HPS:]) | set(rest)


def ranking_table(ranking: pd.DataFrame, metric: str, importance: pd.DataFrame | None = None) -> str:
    view, advanced = ranking_view(ranking, metric, importance)
    inert = [set(filter(None, str(s).split(","))) for s in ranking.get("inert", pd.Series([""] * len(ranking)))]

    def muted(i, c):
        return c.startswith(HP_PREFIX) and c.removeprefix(HP_PREFIX) in inert[i]

    return html_table(view, advanced, text={"trial", "ended", "vs_top", "test_ci", "diff_ci"}, wrap={"reason"},
                      muted=muted, table_id="ranking-table")


def headline_html(findings: list[Finding]) -> str:
    return "".join(f'<p class="{f.key}" data-finding="{f.key}">{html.escape(f.text)}</p>' for f in findings)


def status_line(status: PageStatus) -> str:
    when = status.written.strftime("%Y-%m-%d %H:%M:%S UTC")
    if not status.live:
        return f'<p class="status">{status.total} trials; written {when}.</p>'
    return (f'<p class="status live" id="live">Live: <b><span id="running">{status.running}</span> of '
            f'{status.total} trials still running</b>{f", {status.pending} waiting" if status.pending else ""}. '
            f'Rewritten whenever a trial ends (at most once a minute); last written {when}; this page reloads '
            f"every {RELOAD_S} s.</p>")


def render_page(title: str, status: PageStatus, findings: list[Finding], sections: list[Section],
                last_line: str = "") -> str:
    """The whole page: plotly.js goes inline with the first figure and nowhere else."""
    import plotly.io as pio

    reload = f'<meta http-equiv="refresh" content="{RELOAD_S}">' if status.live else ""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>{reload}<title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>", status_line(status),
             f'<section id="headline">{headline_html(findings)}</section>']
    first = True
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        if s.note:
            parts.append(f'<p class="note">{s.note}</p>')
        if s.figure is not None:
            parts.append(pio.to_html(s.figure, full_html=False, include_plotlyjs=first, div_id=f"plot-{s.id}",
                                     config={"displaylogo": False, "responsive": True}))
            first = False
        parts.append(s.body + "</section>")
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append(f"<footer>{html.escape(last_line)}</footer></body></html>")  # the last line says what ran
    return "\n".join(parts)
