"""``iqa-tune run space.yaml``: the study on Ray Tune, driver side.

With ``iqa_tune.scheduler`` (ASHA), the one module of ``iqa_tune`` that imports Ray; the trial side is
``iqa_tune.trainables.hyperiqa`` (trainables/hyperiqa.py). Ray's API has moved several times (``_train``, ``session.report``, now
``tune.report``); keeping every driver-side Ray call here makes the next move one file. Uses Ray Tune's current
API (``ray.tune.Tuner``, ``tune.RunConfig``): ``ray.train.RunConfig`` crashes a Tuner in current Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import CHECKOUT, SUBPACKAGES, records
from .errors import UserError, naming
from .live import LiveTable, TrialRow
from .prepare import prepare_data
from .space import (
    ConfirmConfig,
    ProposalSpace,
    Space,
    expand,
    load_space,
    trial_config,
    trial_count,
    with_resolved_paths,
)
from .versions import collect as collect_versions

# Tune warns about frequent experiment snapshots when trials report fast; our snapshots are small local files
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "3600")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from .scheduler import make_scheduler  # noqa: E402

LOG_FILE = "tune.log"
# what to call when a trial of a study ends (the CLI's live report), by experiment folder: the callback Tune
# restores from tuner.pkl on --resume finds it here too, where a pickled attribute would have been lost
TRIAL_END_HOOKS: dict[Path, Callable[[Path], None]] = {}


def param_space(space: Space) -> dict:
    """Each dimension as the Tune sampler its primitive names (see ``space.PRIMITIVES``). Empty for an optuna
    study: its searcher holds the space (:class:`space.ProposalSpace`), and Tune refuses a second one."""
    if space.proposed:
        return {}
    out = {}
    for d in space.dims:
        sampler = getattr(tune, d.primitive.sampler)
        out[d.path] = sampler(d.args) if d.primitive.arity is None else sampler(*d.args)
    return out


# ----------------------------------------------------------------------------------------------------------------
# progress


class StudyProgress(tune.Callback):
    """Feeds the live table and keeps ``trial_status.json``, the study's own record of how each trial stands."""

    def __init__(self, space: Space, exp_dir: Path):
        self.space, self.exp_dir = space, exp_dir
        self.table: LiveTable | None = None
        self.trials: list = []
        self.statuses: dict[str, str] = {}  # at the end of the last step, before Tune's cleanup stops everything
        self.started = False  # a trial has started: from here on, the study folder holds work worth keeping

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with the experiment; a live display is rebuilt after a restore
        return {"space": self.space, "exp_dir": self.exp_dir, "table": None, "trials": [], "statuses": {},
                "started": False}

    def on_step_end(self, iteration, trials, **info):
        self.statuses = {t.trial_id: t.status for t in trials}

    def _rows(self) -> list[TrialRow]:
        dims = [d.path for d in self.space.dims]
        return [TrialRow(t.trial_id, records.how_it_ended(self.statuses.get(t.trial_id, t.status),
                                                          t.last_result or None, t.status == "ERROR"),
                         t.last_result or {}, {d: t.config.get(d) for d in dims}) for t in self.trials]

    def _draw(self, trials, force: bool = False) -> None:
        self.trials = list(trials)
        if self.table is None:
            s = self.space.study
            self.table = LiveTable(s.metric, [d.path for d in self.space.dims], s.name)
        self.table.update(self._rows(), force)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started = True
        self._draw(trials)
        # Tune calls on_trial_start before it sets the trial RUNNING: the record says it runs
        records.write_trial_status(self.exp_dir, {**{t.trial_id: t.status for t in trials}, trial.trial_id: "RUNNING"})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._draw(trials)

    def _ended(self, trials, trial, status: str) -> None:
        # Tune calls on_trial_complete while the trial still reads RUNNING; the record says how it ended
        records.write_trial_status(self.exp_dir, {**{t.trial_id: t.status for t in trials}, trial.trial_id: status})
        hook = TRIAL_END_HOOKS.get(self.exp_dir)
        if hook is not None:
            try:
                hook(self.exp_dir)
            except Exception:  # a report is never worth the study
                logging.getLogger("ray.tune").exception("after trial %s ended", trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._draw(trials, force=True)
        self._ended(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._draw(trials, force=True)
        self._ended(trials, trial, "ERROR")

    def on_experiment_end(self, trials, **info):
        # also reached by the copy Tune restores from tuner.pkl on --resume, which the driver never holds
        self.stop()

    def stop(self) -> None:
        """After the loop: the last statuses on record (unfinished trials as interrupted), the table's last draw."""
        if self.statuses:
            records.write_trial_status(self.exp_dir, {t: (s if s in ("TERMINATED", "ERROR") else "INTERRUPTED")
                                                      for t, s in self.statuses.items()})
        if self.table is not None:
            self.table.update(self._rows(), force=True)
            self.table.stop()
            self.table = None


# ----------------------------------------------------------------------------------------------------------------
# cluster


def code_for_workers(tmp: Path) -> str:
    """This package in its installed layout (``iqa_tune.reports`` and ``iqa_tune.trainables`` inside), for Ray's
    ``py_modules``: an installed package is that already; a source checkout's is copied into ``tmp``."""
    package = Path(__file__).resolve().parent
    if all((package / name / "__init__.py").is_file() for name in SUBPACKAGES):
        return str(package)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    out = tmp / package.name
    shutil.copytree(package, out, ignore=skip)
    for name in SUBPACKAGES:
        shutil.copytree(Path(CHECKOUT) / name, out / name, ignore=skip)
    return str(out)


@contextlib.contextmanager
def _working_in(folder: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def connected(address: str | None, dashboard: bool, host: str, port: int, console: Console,
              exp_dir: Path) -> Iterator[None]:
    """Connected to Ray for the block: the cluster at ``address``, or else the local instance the studies on this
    machine share (:mod:`iqa_tune.instance`: joined if another study started it, else started with the dashboard on
    ``host:port``, and ended by its supervisor once no study uses it). Says which, and how to open the dashboard.

    Either way the driver's own code goes to every worker (Ray's runtime environment, ``py_modules``): trials
    import the same iqa_tune as the driver, and a worker node needs only the dependencies installed. Ray also puts
    the driver's current folder first on every worker's ``sys.path``; started from a source checkout, that would
    be whatever checkout sits at that path on the worker's node, so ray.init runs in the study folder instead."""
    from . import instance

    kwargs = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    with contextlib.ExitStack() as stack:
        if not address:
            if dashboard and host not in ("127.0.0.1", "localhost", "::1"):
                console.print(f"[bold yellow]warning:[/] the dashboard listens on {host}: anyone who can reach it "
                              "can submit jobs, i.e. run code on this cluster. Prefer 127.0.0.1 and an SSH tunnel.")
            shared, started = stack.enter_context(instance.shared(dashboard, host, port))
            address = shared.address
            console.print(f"{'started' if started else 'joined'} the local Ray instance at {address}, shared by "
                          "the studies on this machine" + ("" if started else " (another study started it)"))
        with tempfile.TemporaryDirectory(prefix="iqa-tune-code-") as tmp, _working_in(exp_dir):
            # ray.init uploads the code before it returns
            kwargs["runtime_env"] = {"py_modules": [code_for_workers(Path(tmp))], "excludes": ["__pycache__"]}
            ctx = ray.init(address=address, **kwargs)
        try:
            url = getattr(ctx, "dashboard_url", None)
            if url:
                console.print(f"Ray dashboard: [link=http://{url}]http://{url}[/link]")
                token = Path.home() / ".ray" / "auth_token"
                if os.environ.get("RAY_AUTH_TOKEN") or token.is_file():
                    console.print(f"  token authentication is on: the dashboard asks for the token in {token} "
                                  "(or $RAY_AUTH_TOKEN)")
            yield
        finally:
            ray.shutdown()  # this driver only: the instance stays up for the studies still using it


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


def prebuild_caches(space: Space, console: Console) -> None:
    """Decode the dataset once, here, before any trial starts (with a progress bar), not once per trial."""
    data_dims = [d for d in space.dims if d.path.startswith("data.") and d.primitive.arity is None]
    variants = [{}] + [{d.path: v} for d in data_dims for v in d.args]
    for sampled in variants:
        prepare_data(trial_config(space, sampled), progress=True)


# ----------------------------------------------------------------------------------------------------------------
# the study


def build_tuner(space: Space, exp_dir: Path, resume: bool, callbacks: list):
    from .trainables.hyperiqa import hyperiqa_trainable

    s = space.study
    scheduler = make_scheduler(s.scheduler.type, exp_dir, space.max_epochs, s.scheduler.grace_period,
                               s.scheduler.reduction_factor)
    trainable = tune.with_resources(tune.with_parameters(hyperiqa_trainable, space=space),
                                    {"cpu": s.resources.cpu, "gpu": s.resources.gpu})
    if resume:
        try:
            return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=False, restart_errored=False, param_space=param_space(space))
        except ValueError as e:  # the space file's search: keys no longer match the study's
            raise UserError(f"{space.source}: cannot resume {exp_dir} with this space: {e}") from None
    run_config = tune.RunConfig(
        name=exp_dir.name, storage_path=str(exp_dir.parent), verbose=0, callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=s.metric, mode=s.mode, num_samples=space.num_trials, scheduler=scheduler,
        search_alg=make_searcher(space),
        trial_dirname_creator=lambda t: t.trial_id,
        trial_name_creator=lambda t: t.trial_id,
    )
    return tune.Tuner(trainable, param_space=param_space(space), tune_config=tune_config, run_config=run_config)


def make_searcher(space: Space):
    """random and grid: the trials listed by :func:`space.expand` (seeded, decided before the study starts).
    optuna: TPE proposing each trial from the results so far. It learns from each trial's best epoch so far
    (``best_<metric>``), the figure trials are ranked by, rather than its last epoch; a trial that ASHA stops
    is told with the best it reached. The concurrency limit goes to the searcher: Tune ignores
    TuneConfig.max_concurrent_trials when a search algorithm is given."""
    s = space.study
    if not space.proposed:
        return BasicVariantGenerator(points_to_evaluate=expand(space).points, max_concurrent=s.max_concurrent or 0)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=s.search_seed, n_startup_trials=space.startup_trials)
    searcher = OptunaSearch(space=ProposalSpace(space), metric=records.best_key(s.metric), mode=s.mode,
                            sampler=sampler)
    return ConcurrencyLimiter(searcher, s.max_concurrent) if s.max_concurrent else searcher


def _check_folder(exp_dir: Path, resume: bool) -> None:
    """A plain run needs a new folder; --resume needs one that Tune can continue. Each refusal says what to do."""
    restorable = exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    if resume and not restorable:
        hint = (": it holds no study Tune can continue; remove it and run without --resume" if exp_dir.exists()
                else "; run without --resume to start it")
        raise UserError(f"--resume: no interrupted study at {exp_dir}{hint}")
    if not resume and restorable:
        raise UserError(f"{exp_dir} already exists: continue it with --resume, or choose another --name")
    if not resume and exp_dir.exists():
        raise UserError(f"{exp_dir} already exists and holds no study to continue: remove it, or choose another "
                        "--name")


def run_study(space_file: str, address: str | None = None, name: str | None = None, storage: str | None = None,
              resume: bool = False, dashboard: bool = True, dashboard_host: str = "127.0.0.1",
              dashboard_port: int = 8265, on_trial_end: Callable[[Path], None] | None = None) -> tuple[int, Path]:
    """Run (or resume) a study; returns (exit code, experiment folder): 0 done, 1 every trial errored,
    130 interrupted (resumable). ``on_trial_end(exp_dir)`` is called whenever a trial completes or errors
    (the CLI's live report); what it raises is logged, never fatal.

    One rule for a start that fails (Ray cannot start, the pre-flight refuses, Ctrl-C during start-up): until
    the first trial starts, the folder this run created is removed again, so the same command can simply be
    run again."""
    console = Console()
    space = load_space(space_file)
    if name:
        space.study.name = name
    if storage:
        space.study.storage = storage
    exp_dir = (Path(space.study.storage).expanduser() / space.study.name).resolve()
    _check_folder(exp_dir, resume)
    space = with_resolved_paths(space)
    with naming(space_file):  # a data problem found here names the space file as well as the data file
        prebuild_caches(space, console)
    progress = StudyProgress(space, exp_dir)
    if on_trial_end is not None:
        TRIAL_END_HOOKS[exp_dir] = on_trial_end
    try:
        _fit(space, space_file, exp_dir, resume, progress, console, address,
             dict(dashboard=dashboard, host=dashboard_host, port=dashboard_port))
    except BaseException:
        if not resume and not progress.started:
            shutil.rmtree(exp_dir, ignore_errors=True)
        raise
    finally:
        TRIAL_END_HOOKS.pop(exp_dir, None)
    if not resume and not progress.started:
        shutil.rmtree(exp_dir, ignore_errors=True)
        console.print("[bold yellow]interrupted[/] before any trial started; nothing was kept: run the same "
                      "command again")
        return 130, exp_dir
    return _outcome(space, space_file, exp_dir, console), exp_dir


def _fit(space: Space, space_file: str, exp_dir: Path, resume: bool, progress: StudyProgress, console: Console,
         address: str | None, dashboard: dict, extra: dict | None = None) -> None:
    _log_to_file(exp_dir)
    s = space.study
    records.write_study_settings(exp_dir, {"source": str(space_file), "metric": s.metric,
                                           "mode": s.mode, "max_epochs": space.max_epochs,
                                           "trials": space.num_trials, "search": s.search.type,
                                           "search_seed": s.search_seed,
                                           # what a confirmation of this study runs its trials with
                                           "resources": {"cpu": s.resources.cpu, "gpu": s.resources.gpu},
                                           "max_concurrent": s.max_concurrent, "max_failures": s.max_failures,
                                           **(extra or {}), "versions": collect_versions()})
    with connected(address, dashboard["dashboard"], dashboard["host"], dashboard["port"], console, exp_dir):
        preflight(space)
        console.print(f"study [bold]{escape(space.study.name)}[/]: {escape(trial_count(space))} trials, "
                      f"results in {escape(str(exp_dir))}")
        tuner = build_tuner(space, exp_dir, resume, [progress])
        try:
            tuner.fit()
        finally:
            progress.stop()


def _outcome(space: Space, space_file: str, exp_dir: Path, console: Console, resume_cmd: str | None = None) -> int:
    """Say how the study ended, from the study's own record (``trial_status.json``, written at the end of the
    loop, also by a resumed run); the exit code follows: 130 interrupted, 1 when every trial errored, else 0."""
    statuses = records.read_trial_status(exp_dir)
    unfinished = [t for t, s in statuses.items() if s not in ("TERMINATED", "ERROR")]
    if unfinished:
        resume_cmd = resume_cmd or (f"iqa-tune run {space_file} --name {space.study.name} --storage "
                                    f"{space.study.storage} --resume")
        console.print(f"[bold yellow]interrupted[/] with {len(unfinished)} trials unfinished; continue "
                      f"with:\n  {escape(resume_cmd)}")
        return 130
    errored = [t for t, s in statuses.items() if s == "ERROR"]
    if not errored:
        return 0
    reasons = sorted({records.read_error(exp_dir / t) or "unknown error" for t in errored})
    console.print(f"[yellow]{len(errored)} of {len(statuses)} trial(s) errored[/]: "
                  f"{escape('; '.join(reasons[:3]))}; full text in {escape(str(exp_dir))}/<trial>/error.txt")
    return 1 if len(errored) == len(statuses) else 0


# ----------------------------------------------------------------------------------------------------------------
# the confirmation over seeds


def confirmation_started(study_dir: Path) -> bool:
    """Whether the study holds a confirmation Tune can continue."""
    folder = Path(study_dir) / records.CONFIRM_DIR
    return folder.is_dir() and tune.Tuner.can_restore(str(folder))


def _confirm_arguments(exp_dir: Path, resume: bool, given: dict[str, int | None]) -> dict[str, int]:
    """--top/--seeds/--split-seeds: a resume takes what the confirmation was started with (a different value is
    refused); a new one takes the defaults of ``study.confirm`` for what is not given."""
    defaults = dataclasses.asdict(ConfirmConfig())
    recorded = (records.study_settings(exp_dir).get("confirm") or {}).get("asked", {}) if resume else {}
    for key, value in given.items():
        if recorded and value is not None and value != recorded.get(key):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag}: this confirmation was started with {flag} {recorded.get(key)}; resume it "
                            f"without {flag}, or remove {exp_dir} to start another")
    return {k: (given[k] if given[k] is not None else recorded.get(k, defaults[k])) for k in defaults}


def _check_confirm_folder(exp_dir: Path, resume: bool) -> None:
    restorable = exp_dir.is_dir() and tune.Tuner.can_restore(str(exp_dir))
    if resume and not restorable:
        raise UserError(f"--resume: no interrupted confirmation at {exp_dir}; run without --resume to start one")
    if not resume and exp_dir.exists():
        raise UserError(f"{exp_dir} already holds a confirmation: continue an interrupted one with --resume, or "
                        "remove the folder to run another")


def run_confirmation(study_dir: Path, top: int | None = None, seeds: int | None = None,
                     split_seeds: int | None = None, resume: bool = False, address: str | None = None,
                     dashboard: bool = True, dashboard_host: str = "127.0.0.1", dashboard_port: int = 8265,
                     resume_cmd: str | None = None) -> tuple[int, Path]:
    """Retrain the top configurations of a study over seeds (the plan: :func:`iqa_tune.confirm.plan_confirmation`)
    as a Tune experiment of its own, ``STUDY/confirm``; returns (exit code, that folder) with the codes of
    :func:`run_study`, whose machinery it shares: live table, ``trial_status.json``, Ctrl-C and --resume, and a
    start that fails removes what it created."""
    from .confirm import plan_confirmation

    console = Console()
    study_dir = Path(study_dir).expanduser().resolve()
    exp_dir = study_dir / records.CONFIRM_DIR
    asked = _confirm_arguments(exp_dir, resume, {"top": top, "seeds": seeds, "split_seeds": split_seeds})
    plan = plan_confirmation(study_dir, **asked)
    _check_confirm_folder(exp_dir, resume)
    if plan.note:
        console.print(f"[yellow]note:[/] {escape(plan.note)}")
    # from `iqa-tune run` (study.confirm) the way on is that command's --resume; on its own, `confirm --resume`
    again = resume_cmd or f"iqa-tune confirm {study_dir}"
    resume_cmd = resume_cmd or f"iqa-tune confirm {study_dir} --resume"
    space = with_resolved_paths(plan.space)
    prebuild_caches(space, console)
    progress = StudyProgress(space, exp_dir)
    names = ", ".join(f"{c.name} ({plan.metric} {c.search_metric:.4f})" for c in plan.configurations)
    console.print(f"confirm: {escape(names)}; training seeds {plan.seeds}, splits {plan.split_seeds}")
    try:
        _fit(space, str(study_dir), exp_dir, resume, progress, console, address,
             dict(dashboard=dashboard, host=dashboard_host, port=dashboard_port),
             extra={"confirm": {"asked": asked, **plan.record()}})
    except BaseException:
        if not resume and not progress.started:
            shutil.rmtree(exp_dir, ignore_errors=True)
        raise
    if not resume and not progress.started:
        shutil.rmtree(exp_dir, ignore_errors=True)
        console.print(f"[bold yellow]interrupted[/] before any confirmation run started; nothing of it was kept: "
                      f"run {escape(again)}")
        return 130, exp_dir
    return _outcome(space, str(study_dir), exp_dir, console, resume_cmd), exp_dir
