"""ASHA that survives a driver restart, with its arguments checked up front and undefined metrics ranked last.

Part of the Ray edge (with ``iqa_tune.study``). ``Tuner.restore`` brings a scheduler back as it was created,
empty, so a resumed study would cut trials against rungs that forgot every earlier result. ``PersistentASHA``
saves its state through the scheduler's own ``save``/``restore`` after every decision and reloads it before the
first decision of a resumed run. Tune pickles the scheduler into ``tuner.pkl``; given its experiment's location,
the scheduler finds the state file in that experiment's folder on whichever machine resumes it (a URI's mirror
need not sit where the study started, :func:`iqa_tune.storage.local_folder`).
"""

from __future__ import annotations

import math
import os

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from .space import check_asha
from .storage import local_folder

STATE_FILE = "asha_state.pkl"
WORST = 1e30  # stands in for an undefined (NaN) metric: ranked below every real value, whatever the mode


class PersistentASHA(AsyncHyperBandScheduler):
    """ASHA whose rung records live in ``state_file`` as well as in memory; with ``experiment`` (a folder or a
    URI), in the file of that name in the experiment's folder on this machine."""

    def __init__(self, state_file: str | os.PathLike, *, time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float, experiment: str | None = None):
        check_asha(max_t, grace_period, reduction_factor)
        super().__init__(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)
        self._state_file = str(state_file)
        self._experiment = experiment
        self._loaded = False

    @property
    def state_file(self) -> str:
        where = getattr(self, "_experiment", None)  # None also in a tuner.pkl of an older iqa-tune
        return str(local_folder(where) / os.path.basename(self._state_file)) if where else self._state_file

    def _load_once(self) -> None:
        if not self._loaded:
            self._loaded = True
            if os.path.exists(self.state_file):
                self.restore(self.state_file)

    def _persist(self) -> None:
        tmp = self.state_file + ".tmp"
        self.save(tmp)
        os.replace(tmp, self.state_file)

    def __getstate__(self) -> dict:
        # Tune pickles the scheduler into tuner.pkl; a restored Tuner sets metric and mode again, which ASHA
        # refuses once they are set, so the pickled copy is the unconfigured one (its rungs live in the state file)
        return {**self.__dict__, "_metric": None, "_mode": None}

    def _defined(self, result: dict) -> dict:
        """NaN compares false with everything, so ASHA would never cut it: rank it last instead."""
        value = result.get(self._metric)
        if isinstance(value, float) and math.isnan(value):
            return {**result, self._metric: -WORST * self._metric_op}
        return result

    def set_search_properties(self, metric, mode, **spec) -> bool:
        accepted = super().set_search_properties(metric, mode, **spec)
        self._load_once()  # the saved rungs, recorded under the same metric and mode
        return accepted

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        if trial.trial_id not in self._trial_info:  # a restored trial keeps its bracket
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        decision = super().on_trial_result(tune_controller, trial, self._defined(result))
        self._persist()
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._defined(result))
        self._persist()

    def on_trial_remove(self, tune_controller, trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._persist()


def make_scheduler(kind: str, experiment: str, max_t: int, grace_period: int, reduction_factor: float):
    """The scheduler of ``study.scheduler.type``: ``asha`` or ``none`` (every trial runs to the end).
    ``experiment``: where the study lives, a folder or a URI (its ASHA state goes in its folder here)."""
    if kind == "none":
        return FIFOScheduler()
    return PersistentASHA(local_folder(experiment) / STATE_FILE, time_attr="epoch", max_t=max_t,
                          grace_period=grace_period, reduction_factor=reduction_factor, experiment=experiment)
