"""The study's live table: one compact, self-updating rich table instead of Tune's per-result boxes.

Pure rendering from plain rows (no Ray): the driver's Tune callback in ``iqa_tune.study`` feeds it. It fits the
terminal: hyperparameter columns are shortened to their last key and dropped from the right when the table
would be wider than the console. With cross-dataset sets (``data.extra_tests``), one column ``xtest@best`` holds
the mean of their SRCCs at each trial's best val epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .records import at_best_key, best_key, is_xtest_srcc

# the endings of records.how_it_ended, short for narrow tables (the live table and the report's terminal view)
SHORT_ENDING = {"cut at a rung": "cut", "completed": "done", "early stop (patience)": "patience"}


@dataclass
class TrialRow:
    trial: str
    ended: str  # records.how_it_ended
    last: dict = field(default_factory=dict)  # the last reported metrics
    config: dict = field(default_factory=dict)  # searched values by dotted key


def cell(v) -> str:
    """A live-table cell: 4 decimals for figures, n/a for an undefined one, 3 significant digits for tiny ones."""
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4f}" if 1e-3 <= abs(v) < 100 or v == 0 else f"{v:.3g}"
    return str(v)


def xtest_at_best(last: dict) -> float | None:
    """The mean SRCC of the cross-dataset sets at the trial's best epoch (one compact column), or None."""
    values = [v for k, v in last.items() if k.endswith("_at_best") and is_xtest_srcc(k[:-len("_at_best")])]
    return sum(values) / len(values) if values else None


def _width(header: str, cells: list[str]) -> int:
    return max([len(header), *map(len, cells)]) + 3  # padding and the column rule


def render(rows: list[TrialRow], metric: str, dims: list[str], title: str, width: int) -> Table:
    """The table for ``rows``, at most ``width`` characters wide (hyperparameter columns go first)."""
    shown = rows[-40:]
    columns = {"trial": [r.trial[-5:] for r in shown],
               "status": [SHORT_ENDING.get(r.ended, r.ended) for r in shown],
               "ep": [cell(r.last.get("epoch")) for r in shown],
               metric: [cell(r.last.get(metric)) for r in shown],
               f"best {metric}": [cell(r.last.get(best_key(metric))) for r in shown],
               "test@best": [cell(r.last.get(at_best_key("test_srcc"))) for r in shown]}
    if any(xtest_at_best(r.last) is not None for r in shown):
        columns["xtest@best"] = [cell(xtest_at_best(r.last)) for r in shown]
    hp = {d: [cell(r.config.get(d)) for r in shown] for d in dims}
    short = {d: d.rsplit(".", 1)[-1] for d in dims}
    used = sum(_width(h, c) for h, c in columns.items()) + 1
    for d in dims:
        w = _width(short[d], hp[d])
        if used + w > width:
            break
        columns[short[d]] = hp[d]
        used += w
    table = Table(title=Text(title), title_justify="left")  # Text, not markup: a '[' in a name stays literal
    for name in columns:
        table.add_column(name, justify="left" if name in ("trial", "status") else "right", no_wrap=True)
    for i in range(len(shown)):
        table.add_row(*[Text(c[i]) for c in columns.values()])
    return table


class LiveTable:
    """A rich Live display of the study's trials, redrawn at most twice a second."""

    def __init__(self, metric: str, dims: list[str], name: str):
        self.metric, self.dims, self.name = metric, dims, name
        self.console = Console()
        self.live: Live | None = None
        self.rows: list[TrialRow] = []
        self.last_draw = 0.0

    def _table(self) -> Table:
        return render(self.rows, self.metric, self.dims, f"study {self.name}: {len(self.rows)} trials",
                      self.console.width)

    def update(self, rows: list[TrialRow], force: bool = False) -> None:
        self.rows = rows
        if self.live is None:
            self.live = Live(console=self.console, refresh_per_second=2)
            self.live.start()
        now = time.monotonic()
        if force or now - self.last_draw > 0.5:
            self.live.update(self._table(), refresh=True)
            self.last_draw = now

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            self.live.stop()
            self.live = None
            if not self.console.is_terminal:  # a log or a pipe gets the table once, without its final newline
                self.console.line()
