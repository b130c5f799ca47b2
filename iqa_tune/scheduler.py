"""The study's schedulers: ASHA, and synchronous successive halving, both surviving a driver restart, their
arguments checked up front and undefined metrics ranked last.

Part of the Ray edge (with ``iqa_tune.study``). ``Tuner.restore`` brings a scheduler back as it was created,
empty, so a resumed study would cut trials against rungs that forgot every earlier result. ``PersistentASHA``
saves its state through the scheduler's own ``save``/``restore`` after every decision and reloads it before the
first decision of a resumed run. Tune pickles the scheduler into ``tuner.pkl``; given its experiment's location,
the scheduler finds the state file in that experiment's folder on whichever machine resumes it (a URI's mirror
need not sit where the study started, :func:`iqa_tune.storage.local_folder`).

``SyncHalving`` is successive halving without the asynchrony: a trial that reaches a rung waits there (paused,
its checkpoint taken at the rung) until every trial of the study has reached it or ended; then the best
1/reduction_factor go on and the rest stop. ASHA never waits, so the first trials at an empty rung always pass;
on 12 trials x 8 epochs of the demo backbone ASHA trained 43 of 96 trial-epochs, this 25 (docs/performance.md).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from .space import check_asha, halving_rungs
from .storage import local_folder

# not .pkl or .json: on restore Tune copies those from the experiment folder into its staging folder and uploads
# them back when the run ends, which would put the state of the run's start back over every decision since
STATE_FILE = "asha_state.pickle"
HALVING_STATE_FILE = "halving_state.pickle"
LEGACY_STATE_FILE = "asha_state.pkl"  # read once by a study begun before the rename, then written anew
WORST = 1e30  # stands in for an undefined (NaN) metric: ranked below every real value, whatever the mode


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _replace(path: str, write) -> None:
    """``write(tmp)`` then rename over ``path``: a driver killed mid-write leaves the previous state whole."""
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


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

    file_name = STATE_FILE

    @property
    def state_file(self) -> str:
        """Under the current name in the experiment's folder here, also for a study begun under the old name."""
        where = getattr(self, "_experiment", None)  # None also in a tuner.pkl of an older iqa-tune
        return str(local_folder(where) / self.file_name) if where else self._state_file

    def _load_once(self) -> None:
        if not self._loaded:
            self._loaded = True
            legacy = str(Path(self.state_file).with_name(LEGACY_STATE_FILE))
            for path in (self.state_file, legacy):
                if os.path.exists(path):
                    self.restore(path)
                    break

    def _persist(self) -> None:
        _replace(self.state_file, self.save)

    def __getstate__(self) -> dict:
        # Tune pickles the scheduler into tuner.pkl; a restored Tuner sets metric and mode again, which ASHA
        # refuses once they are set, so the pickled copy is the unconfigured one (its rungs live in the state file)
        return {**self.__dict__, "_metric": None, "_mode": None}

    def _defined(self, result: dict) -> dict:
        """NaN compares false with everything, so ASHA would never cut it: rank it last instead."""
        if _undefined(result.get(self._metric)) and self._metric in result:
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


class SyncHalving(FIFOScheduler):
    """Successive halving over all ``trials`` of the study at once, rungs at :func:`halving_rungs`.

    At each rung a trial is recorded with its metric at that epoch. While some trial that could still reach the
    rung has not, the ones there are paused (Tune takes their checkpoint, which the trainable writes at every
    rung) and none of them is picked to run again. When the rung is complete the best floor(n / factor) of its n
    trials (at least one) go on: paused ones are picked to run again, the others stop. A trial that ends before a
    rung (an error, a patience stop) no longer counts towards it. The records live in ``state_file`` too, so a
    resumed driver waits on the same rungs; a trial restored while it waits stays parked until its rung is
    decided."""

    def __init__(self, state_file: str | os.PathLike, *, trials: int, max_t: int, grace_period: int,
                 reduction_factor: float, experiment: str | None = None):
        check_asha(max_t, grace_period, reduction_factor)
        super().__init__()
        self._state_file, self._experiment = str(state_file), experiment
        if trials < 1:
            raise ValueError("synchronous halving needs the study's trial count")
        self._trials_expected, self._max_t = trials, max_t
        self._rungs = halving_rungs(max_t, grace_period, reduction_factor)
        self._factor = reduction_factor
        self._metric = self._mode = None
        self._state = {"seen": [], "ended": [], "records": [{} for _ in self._rungs], "kept": [None for _ in self._rungs]}
        self._live: dict[str, Trial] = {}  # trial id -> Trial, this driver's objects (not saved)
        self._loaded = False
        self._deciding = False
        self._restored = False

    _supports_buffered_results = False  # every epoch's result must arrive alone: a rung is a place to stop

    file_name = HALVING_STATE_FILE
    state_file = PersistentASHA.state_file

    def __getstate__(self) -> dict:  # as PersistentASHA's, and without this driver's Trial objects
        return {**self.__dict__, "_metric": None, "_mode": None, "_live": {}, "_loaded": False, "_restored": False}

    def __setstate__(self, state: dict) -> None:  # attributes a tuner.pkl of an earlier version lacks
        self.__dict__.update({"_restored": False, "_max_t": math.inf, **state})

    @property
    def rungs(self) -> list[int]:
        return list(self._rungs)

    def _load_once(self) -> None:
        if not self._loaded:
            self._loaded = True
            if os.path.exists(self.state_file):
                with open(self.state_file, "rb") as f:
                    self._state = pickle.load(f)

    def _persist(self) -> None:
        _replace(self.state_file, lambda tmp: Path(tmp).write_bytes(pickle.dumps(self._state)))

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self._metric or self._mode:
            return False
        self._metric, self._mode = metric, mode
        self._load_once()
        return True

    # ------------------------------------------------------------------------------------------------------------
    # the rungs

    def _score(self, result: dict) -> float:
        value = result.get(self._metric)
        if _undefined(value):  # ranked last, as ASHA ranks it
            return -WORST
        return float(value) if self._mode == "max" else -float(value)

    def _kept(self, k: int) -> set | None:
        kept = self._state["kept"][k]
        return None if kept is None else set(kept)

    def _entrants(self, k: int) -> set | None:
        """The trials that may reach rung ``k``; None while the study's trials are not all known yet."""
        if k == 0:
            seen = set(self._state["seen"])
            return seen if len(seen) >= self._trials_expected else None
        return self._kept(k - 1)

    def _waiting_at(self, trial_id: str) -> int | None:
        """The rung where ``trial_id`` waits for a decision, if any."""
        for k, recorded in enumerate(self._state["records"]):
            if trial_id in recorded and self._kept(k) is None:
                return k
        return None

    def _cut(self, trial_id: str) -> bool:
        return any(kept is not None and trial_id in rec and trial_id not in kept
                   for rec, kept in zip(self._state["records"], self._state["kept"]))

    def _decide(self, tune_controller) -> bool:
        """Decide every rung that is complete, in order; stop the paused trials that are cut. Whether any was."""
        ended, decided = set(self._state["ended"]), False
        for k, recorded in enumerate(self._state["records"]):
            if self._state["kept"][k] is not None:
                continue
            entrants = self._entrants(k)
            if entrants is None or not all(t in recorded or t in ended for t in entrants):
                return decided
            decided = True
            # sized by every trial the rung recorded, filled with those that can still train (a trial that
            # ended at the rung, by patience or its own train.epochs, counts but cannot go on)
            alive = sorted((t for t in recorded if t not in ended), key=lambda t: recorded[t], reverse=True)
            keep = max(1, int(len(recorded) // self._factor)) if recorded else 0
            self._state["kept"][k] = alive[:keep]
            for t in alive[keep:]:
                self._stop_waiting(tune_controller, self._live.get(t))
        return decided

    def _stop_waiting(self, tune_controller, trial) -> None:
        """Stop a cut trial that is not the one reporting: paused, pausing, or restored and pending."""
        if trial is not None and (trial.status in (Trial.PAUSED, Trial.PENDING) or trial.is_saving):
            self._deciding = True
            try:
                tune_controller.stop_trial(trial)
            finally:
                self._deciding = False

    # ------------------------------------------------------------------------------------------------------------
    # Tune's calls

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        t, retried = trial.trial_id, trial.trial_id in self._live  # added again by this driver: a retry
        self._live[t] = trial
        if t not in self._state["seen"]:
            self._state["seen"].append(t)
        if retried:
            pass  # Tune retries it (max_failures): it goes on from its checkpoint, as a paused trial would
        elif trial.status in (Trial.TERMINATED, Trial.ERROR):  # restored as ended, though the file may be older
            if t not in self._state["ended"]:
                self._state["ended"].append(t)
            self._restored = True
        elif trial.status == Trial.PENDING and (self._waiting_at(t) is not None or self._cut(t)):
            # restored while it waits at a rung: Tune starts every pending trial, so it goes back to paused, to
            # be picked when its rung is decided (or stopped, if cut); add_trial files it by the status set here
            trial.set_status(Trial.PAUSED)
        self._persist()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        t, epoch = trial.trial_id, result.get("epoch", 0)
        for k, milestone in enumerate(self._rungs):
            if epoch >= milestone and t not in self._state["records"][k]:
                entrants = self._entrants(k)
                if k == 0 or (entrants is not None and t in entrants):
                    self._state["records"][k][t] = self._score(result)
                break
        # a trial that ends with this epoch (patience, or its own train.epochs) is done before Tune says so
        last = bool(result.get("patience_stop")) or epoch >= result.get("max_epochs", math.inf)
        if last and t not in self._state["ended"]:
            self._state["ended"].append(t)
        self._decide(tune_controller)
        self._persist()
        if self._cut(t) or epoch >= self._max_t:
            return TrialScheduler.STOP
        if last:
            return TrialScheduler.CONTINUE
        return TrialScheduler.PAUSE if self._waiting_at(t) is not None else TrialScheduler.CONTINUE

    def _ended(self, tune_controller, trial) -> None:
        if trial.trial_id not in self._state["ended"]:
            self._state["ended"].append(trial.trial_id)
        if not self._deciding:
            self._decide(tune_controller)
        self._persist()

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._ended(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        if trial.status == Trial.ERROR:  # Tune calls this before it retries a trial (already ERROR then): not its end
            return
        self._ended(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._ended(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        """A trial that is not waiting at an undecided rung: new ones first, then those a decision let go on."""
        self._load_once()
        if self._restored:  # trials restored as ended may complete a rung the saved records left open
            self._restored = False
            if self._decide(tune_controller):
                self._persist()
        ready = []
        for t in tune_controller.get_trials():
            if t.status not in (Trial.PENDING, Trial.PAUSED):
                continue
            if self._cut(t.trial_id):  # cut while the driver was away: restored as pending
                self._stop_waiting(tune_controller, t)
            elif self._waiting_at(t.trial_id) is None:
                ready.append(t)
        return next((t for t in ready if t.status == Trial.PENDING), None) or next(iter(ready), None)

    def debug_string(self) -> str:
        done = [len(r) for r in self._state["records"]]
        return f"synchronous halving: rungs {self._rungs}, trials recorded at each {done}"


def make_scheduler(kind: str, experiment: str, max_t: int, grace_period: int, reduction_factor: float,
                   trials: int = 0):
    """The scheduler of ``study.scheduler.type``: ``asha``, ``halving`` (over the study's ``trials``) or ``none``
    (every trial runs to the end). ``experiment``: where the study lives, a folder or a URI (the scheduler's
    state goes in its folder here)."""
    if kind == "none":
        return FIFOScheduler()
    if kind == "halving":
        return SyncHalving(local_folder(experiment) / HALVING_STATE_FILE, trials=trials, max_t=max_t,
                           grace_period=grace_period, reduction_factor=reduction_factor, experiment=experiment)
    return PersistentASHA(local_folder(experiment) / STATE_FILE, time_attr="epoch", max_t=max_t,
                          grace_period=grace_period, reduction_factor=reduction_factor, experiment=experiment)
