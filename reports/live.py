"""The report while a study runs: ``index.html`` rewritten whenever a trial ends, so a page kept open in a browser
follows the study (it reloads itself while trials are running).

The study driver calls :meth:`LiveReport.trial_ended` from its Tune callback; the CLI wires the two (the driver
does not import reports). Writing a report means a bootstrap per trial and a fANOVA fit, seconds of work, so it
runs on one background thread, never in Tune's loop: requests that arrive while a write is under way or less
than ``min_interval_s`` after the last one start folded into a single later write, and nothing heavy runs more
than once a minute. A failing write is logged to the study's ``tune.log`` and the study goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("ray.tune.iqa_tune_report")  # a child of ray.tune: lands in the study's tune.log


def _write(exp_dir: Path) -> None:
    from .build import write_report

    write_report(exp_dir, pictures=False)  # the page; the PNG copies wait for the final report


class LiveReport:
    """Rewrites ``EXPERIMENT/report`` after trials end, at most once per ``min_interval_s``, on its own thread."""

    def __init__(self, min_interval_s: float = 60.0, write: Callable[[Path], None] = _write,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval_s, self._write, self._clock = min_interval_s, write, clock
        self._wake = threading.Condition()
        self._exp_dir: Path | None = None
        self._pending = False
        self._closed = False
        self._last_start = -float("inf")
        self._thread: threading.Thread | None = None
        self.writes = 0  # reports written (for tests and the curious)
        self.failures = 0

    def trial_ended(self, exp_dir: Path) -> None:
        """A trial completed or errored: ask for a rewrite (returns at once)."""
        with self._wake:
            if self._closed:
                return
            self._exp_dir, self._pending = Path(exp_dir), True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="iqa-tune-live-report", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._pending or
                                            self._clock() - self._last_start < self.min_interval_s):
                    wait = self.min_interval_s - (self._clock() - self._last_start) if self._pending else None
                    self._wake.wait(timeout=wait)
                if self._closed:
                    return
                self._pending = False
                self._last_start = self._clock()
                exp_dir = self._exp_dir
            try:
                self._write(exp_dir)
                self.writes += 1
                log.info("live report of %s written in %.1f s", exp_dir, self._clock() - self._last_start)
            except Exception:  # the study matters more than its report: log it and go on
                self.failures += 1
                log.exception("the live report of %s could not be written; the study goes on", exp_dir)

    def close(self, timeout_s: float = 120.0) -> None:
        """Stop: a write under way finishes (the files stay whole), a pending one is dropped (the final report
        follows)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
