"""``iqa-tune run space.yaml``: the study on Ray Tune. The one module of ``iqa_tune`` that imports Ray.

Ray's API has moved several times (``_train``, ``session.report``, now ``tune.report``); keeping every driver-side
Ray call here makes the next move one file. Uses Ray Tune's current API (``ray.tune.Tuner``, ``tune.RunConfig``):
``ray.train.RunConfig`` crashes a Tuner in current Ray.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path

import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reports.load import how_it_ended

from .config import cache_root
from .errors import UserError, naming
from .prepare import prepare_data
from .space import Space, load_space, trial_config

# Tune warns about frequent experiment snapshots when trials report fast; our snapshots are small local files
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "3600")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

ASHA_STATE = "asha_state.pkl"
LOG_FILE = "tune.log"


# ----------------------------------------------------------------------------------------------------------------
# scheduler


class PersistentASHA(AsyncHyperBandScheduler):
    """ASHA whose rung records survive a driver restart.

    ``Tuner.restore`` brings the scheduler back as it was created, empty, so a resumed study would cut trials
    against rungs that forgot every earlier result. This one writes its state after every decision and reloads
    it before the first decision of a resumed run.
    """

    def __init__(self, state_file: str, **kwargs):
        super().__init__(**kwargs)
        self._state_file = state_file
        self._loaded = False

    def _load_once(self) -> None:
        if not self._loaded:
            self._loaded = True
            if os.path.exists(self._state_file):
                self.restore(self._state_file)

    def _persist(self) -> None:
        tmp = self._state_file + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.__dict__, f)
        os.replace(tmp, self._state_file)

    def __getstate__(self) -> dict:
        # Tune pickles the scheduler into tuner.pkl; a restored Tuner sets metric and mode again, which ASHA
        # refuses once they are set, so the pickled copy is the unconfigured one (its rungs live in the state file)
        return {**self.__dict__, "_metric": None, "_mode": None}

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
        decision = super().on_trial_result(tune_controller, trial, result)
        self._persist()
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._persist()

    def on_trial_remove(self, tune_controller, trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._persist()


def make_scheduler(space: Space, exp_dir: Path):
    s = space.study.scheduler
    if s.type == "none":
        return FIFOScheduler()
    return PersistentASHA(str(exp_dir / ASHA_STATE), time_attr="epoch", max_t=space.max_epochs,
                          grace_period=s.grace_period, reduction_factor=s.reduction_factor)


def param_space(space: Space) -> dict:
    make = {"choice": tune.choice, "grid": tune.grid_search, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "quniform": lambda a: tune.quniform(*a),
            "randint": lambda a: tune.randint(*a)}
    return {d.path: make[d.kind](d.args) for d in space.dims}


# ----------------------------------------------------------------------------------------------------------------
# progress


class ProgressTable(tune.Callback):
    """One compact live table instead of Tune's per-result boxes."""

    def __init__(self, space: Space):
        self.space = space
        self.live: Live | None = None
        self.trials: list = []
        self.last_draw = 0.0

        self.statuses: dict[str, str] = {}  # at the end of the last step, before Tune's cleanup stops everything

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with the experiment; a live display is rebuilt after a restore
        return {"space": self.space, "live": None, "trials": [], "last_draw": 0.0, "statuses": {}}

    def on_step_end(self, iteration, trials, **info):
        self.statuses = {t.trial_id: t.status for t in trials}

    @property
    def unfinished(self) -> list[str]:
        """Trials not finished when the loop ended: non-empty after Ctrl-C, empty after a complete study."""
        return [t for t, s in self.statuses.items() if s not in ("TERMINATED", "ERROR")]

    def _table(self) -> Table:
        m = self.space.study.metric
        table = Table(title=Text(f"study {self.space.study.name}: {len(self.trials)} trials"), title_justify="left")
        for col in ["trial", "status", "epoch", m, f"best {m}", "test SRCC @best", *[d.path for d in self.space.dims]]:
            table.add_column(col, justify="right" if col not in ("trial", "status") else "left", no_wrap=True)
        for t in self.trials[-40:]:
            r = t.last_result or {}
            status = how_it_ended(self.statuses.get(t.trial_id, t.status), r or None, t.status == "ERROR")
            table.add_row(t.trial_id, status, str(r.get("epoch", "")), _fmt(r.get(m)), _fmt(r.get(f"best_{m}")),
                          _fmt(r.get("test_srcc_at_best_val")), *[Text(_fmt(t.config.get(d.path))) for d in self.space.dims])
        return table

    def _draw(self, trials, force: bool = False) -> None:
        self.trials = list(trials)
        if self.live is None:
            self.live = Live(console=Console(), refresh_per_second=2)
            self.live.start()
        now = time.monotonic()
        if force or now - self.last_draw > 0.5:
            self.live.update(self._table(), refresh=True)
            self.last_draw = now

    def on_trial_start(self, iteration, trials, trial, **info):
        self._draw(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._draw(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._draw(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._draw(trials, force=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            self.live.stop()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------------------------------------------
# cluster


def connect(address: str | None, dashboard: bool, host: str, port: int, console: Console) -> None:
    """Join a cluster, or start a local one with the dashboard on ``host:port``; say how to open it."""
    kwargs = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    if address:
        ctx = ray.init(address=address, **kwargs)
    else:
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[bold yellow]warning:[/] the dashboard listens on {host}: anyone who can reach it can "
                          "submit jobs, i.e. run code on this cluster. Prefer 127.0.0.1 and an SSH tunnel.")
        ctx = ray.init(include_dashboard=dashboard, dashboard_host=host, dashboard_port=port, **kwargs)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        console.print(f"Ray dashboard: [link=http://{url}]http://{url}[/link]")
        token = Path.home() / ".ray" / "auth_token"
        if os.environ.get("RAY_AUTH_TOKEN") or token.is_file():
            console.print(f"  token authentication is on: the dashboard asks for the token in {token} "
                          "(or $RAY_AUTH_TOKEN)")


def preflight(space: Space) -> None:
    """Refuse a study no node can ever run (Tune would leave its trials PENDING forever)."""
    need = space.study.resources
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes
            if n["Resources"].get("CPU", 0) >= need.cpu and n["Resources"].get("GPU", 0) >= need.gpu]
    if not fits:
        have = "; ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        raise UserError(f"{space.source}: study.resources asks {need.cpu:g} CPU + {need.gpu:g} GPU per trial, but "
                        f"no node of this cluster has that ({have}); lower study.resources or add nodes")


def _log_to_file(exp_dir: Path) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(exp_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = [handler]
    warnings.simplefilter("default")


def absolute_paths(space: Space) -> None:
    """Trials run in their own folders, maybe on other nodes: make every path of the fixed settings absolute."""
    data = space.base.setdefault("data", {})
    for key in ("root",):
        if data.get(key):
            data[key] = str(Path(data[key]).expanduser().resolve())
    data["cache_dir"] = str(cache_root(space.base_config.data).resolve())
    model = space.base.get("model", {})
    if model.get("checkpoint"):
        model["checkpoint"] = str(Path(model["checkpoint"]).expanduser().resolve())


def prebuild_caches(space: Space, console: Console) -> None:
    """Decode the dataset once, here, before any trial starts (with a progress bar), not once per trial."""
    data_dims = [d for d in space.dims if d.path.startswith("data.") and d.kind in ("choice", "grid")]
    variants = [{}] + [{d.path: v} for d in data_dims for v in d.args]
    for sampled in variants:
        prepare_data(trial_config(space, sampled), progress=True)


# ----------------------------------------------------------------------------------------------------------------
# the study


def build_tuner(space: Space, exp_dir: Path, resume: bool, callbacks: list):
    from trainables.hyperiqa import hyperiqa_trainable

    s = space.study
    trainable = tune.with_resources(tune.with_parameters(hyperiqa_trainable, space=space),
                                    {"cpu": s.resources.cpu, "gpu": s.resources.gpu})
    if resume:
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False, param_space=param_space(space))
    run_config = tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0, callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=s.metric, mode=s.mode, num_samples=s.num_samples, scheduler=make_scheduler(space, exp_dir),
        # the limit goes to the generator: Tune ignores TuneConfig.max_concurrent_trials when search_alg is given
        search_alg=BasicVariantGenerator(random_state=s.search_seed, max_concurrent=s.max_concurrent or 0),
        trial_dirname_creator=lambda t: t.trial_id,
        trial_name_creator=lambda t: t.trial_id,
    )
    return tune.Tuner(trainable, param_space=param_space(space), tune_config=tune_config, run_config=run_config)


def run_study(space_file: str, address: str | None = None, name: str | None = None, storage: str | None = None,
              resume: bool = False, dashboard: bool = True, dashboard_host: str = "127.0.0.1",
              dashboard_port: int = 8265) -> int:
    console = Console()
    space = load_space(space_file)
    if name:
        space.study.name = name
    if storage:
        space.study.storage = storage
    exp_dir = (Path(space.study.storage).expanduser() / space.study.name).resolve()
    restorable = tune.Tuner.can_restore(str(exp_dir)) if exp_dir.exists() else False
    if resume and not restorable:
        raise UserError(f"--resume: no interrupted study at {exp_dir}")
    if not resume and exp_dir.exists():
        raise UserError(f"{exp_dir} already exists: continue it with --resume, or choose another --name")
    absolute_paths(space)
    with naming(space_file):  # a data problem found here names the space file as well as the data file
        prebuild_caches(space, console)
    _log_to_file(exp_dir)
    (exp_dir / "study.yaml").write_text(yaml.safe_dump(
        {"source": str(space_file), "metric": space.study.metric, "mode": space.study.mode,
         "max_epochs": space.max_epochs, "trials": space.num_trials}))
    connect(address, dashboard, dashboard_host, dashboard_port, console)
    try:
        try:
            preflight(space)
        except UserError:
            if not resume:  # nothing ran: leave no half-made study that would demand --resume
                shutil.rmtree(exp_dir, ignore_errors=True)
            raise
        console.print(f"study [bold]{escape(space.study.name)}[/]: {space.num_trials} trials, "
                      f"results in {escape(str(exp_dir))}")
        progress = ProgressTable(space)
        tuner = build_tuner(space, exp_dir, resume, [progress])
        try:
            tuner.fit()
        finally:
            progress.stop()
        trials, unfinished = progress.trials, progress.unfinished
    finally:
        ray.shutdown()
    resume_cmd = f"iqa-tune run {space_file} --name {space.study.name} --storage {space.study.storage} --resume"
    if unfinished:
        console.print(f"[bold yellow]interrupted[/] with {len(unfinished)} trials unfinished; continue with:\n  "
                      f"{escape(resume_cmd)}")
        return 130
    errored = [t for t in trials if t.status == "ERROR"]
    if errored:
        console.print(f"[yellow]{len(errored)} trial(s) errored[/]: see the report, or {escape(str(exp_dir))}/<trial>/error.txt")
    from reports.build import build_report

    build_report(exp_dir)
    return 0

