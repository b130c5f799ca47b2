"""``iqa-tune run space.yaml``: the study on Ray Tune, driver side.

With ``iqa_tune.scheduler`` (ASHA, synchronous halving), the one module of ``iqa_tune`` that imports Ray; the
trial side is ``iqa_tune.trainables.hyperiqa`` (trainables/hyperiqa.py). Ray's API has moved several times (``_train``, ``session.report``, now
``tune.report``); keeping every driver-side Ray call here makes the next move one file. Uses Ray Tune's current
API (``ray.tune.Tuner``, ``tune.RunConfig``): ``ray.train.RunConfig`` crashes a Tuner in current Ray.

Where the results go is a :class:`iqa_tune.storage.Location`: a folder, or a URI (``s3://``...) that Tune writes
to through the filesystem built there, while the driver's records and the reports use the URI's local mirror
(the design: :mod:`iqa_tune.storage`). Below, ``loc`` is where an experiment lives, ``exp_dir`` its folder here.
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

from . import CHECKOUT, SUBPACKAGES, records, storage
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
from .storage import Location, Mirroring
from .versions import collect as collect_versions

# Tune warns about frequent experiment snapshots when trials report fast; our snapshots are small local files
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "3600")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from .scheduler import HALVING_STATE_FILE, make_scheduler  # noqa: E402
from .scheduler import STATE_FILE as ASHA_STATE_FILE  # noqa: E402

LOG_FILE = "tune.log"
# the files of a study folder that its driver writes: for a URI, pushed from the mirror (the rest is pulled)
DRIVER_FILES = (records.STUDY_FILE, records.TRIAL_STATUS_FILE, LOG_FILE, ASHA_STATE_FILE, HALVING_STATE_FILE,
                records.REPORT_DIR)
# what to call when a trial of a study ends (the CLI's live report), by experiment folder: the callback Tune
# restores from tuner.pkl on --resume finds it here too, where a pickled attribute would have been lost
TRIAL_END_HOOKS: dict[Path, Callable[[Path], None]] = {}
# what keeps an experiment at a URI and its folder here in step while it runs, by that folder (poked as trials end)
MIRRORS: dict[Path, Mirroring] = {}


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
    """Feeds the live table and keeps ``trial_status.json``, the study's own record of how each trial stands.
    ``experiment``: where the study lives (a folder or a URI; default ``exp_dir``, its folder here)."""

    def __init__(self, space: Space, exp_dir: Path, experiment: str | None = None):
        self.space = space
        # pickled by Tune: the folder is looked up from it on the machine that resumes (a URI's mirror may differ)
        self.experiment = experiment or str(exp_dir)
        self.table: LiveTable | None = None
        self.trials: list = []
        self.statuses: dict[str, str] = {}  # at the end of the last step, before Tune's cleanup stops everything
        self.started = False  # a trial has started: from here on, the study folder holds work worth keeping

    @property
    def exp_dir(self) -> Path:
        return storage.local_folder(self.experiment)

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with the experiment; a live display is rebuilt after a restore
        return {"space": self.space, "experiment": self.experiment, "table": None, "trials": [], "statuses": {},
                "started": False}

    def __setstate__(self, state: dict) -> None:
        if "exp_dir" in state:  # in the tuner.pkl of an older iqa-tune
            state["experiment"] = str(state.pop("exp_dir"))
        self.__dict__.update(state)

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
        mirror = MIRRORS.get(self.exp_dir)
        if mirror is not None:
            mirror.poke()
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


# A reused worker waits this long for the previous trial's function to unwind before it gives up and errors the
# next trial (Tune's default, 2 s, is short on a loaded 2-core machine).
REUSE_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}


@contextlib.contextmanager
def connected(address: str | None, dashboard: bool, host: str, port: int, console: Console,
              exp_dir: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Connected to Ray for the block: the cluster at ``address``, or else the local instance the studies on this
    machine share (:mod:`iqa_tune.instance`: joined if another study started it, else started with the dashboard on
    ``host:port``, and ended by its supervisor once no study uses it). Says which, and how to open the dashboard.

    Either way the driver's own code goes to every worker (Ray's runtime environment, ``py_modules``): trials
    import the same iqa_tune as the driver, and a worker node needs only the dependencies installed. Ray also puts
    the driver's current folder first on every worker's ``sys.path``; started from a source checkout, that would
    be whatever checkout sits at that path on the worker's node, so ray.init runs in the study folder instead.
    ``env``: variables the trials get as well (those that reach the study's storage, :func:`storage.worker_env`)."""
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
            kwargs["runtime_env"] = {"py_modules": [code_for_workers(Path(tmp))], "excludes": ["__pycache__"],
                                     "env_vars": {**REUSE_ENV, **(env or {})}}
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


def _for_tune(loc: Location) -> tuple[str, object]:
    """The experiment's path as Tune takes it, and the filesystem that goes with it (None: a local path)."""
    return (loc.remote.path, loc.remote.fs) if loc.remote else (str(loc.local), None)


def _restorable(loc: Location) -> bool:
    """Whether ``loc`` holds an experiment Tune can continue."""
    path, fs = _for_tune(loc)
    return storage.exists(loc) and tune.Tuner.can_restore(path, storage_filesystem=fs)


def build_tuner(space: Space, loc: Location, resume: bool, callbacks: list):
    from .trainables.hyperiqa import hyperiqa_trainable

    s = space.study
    scheduler = make_scheduler(s.scheduler.type, str(loc), space.max_epochs, s.scheduler.grace_period,
                               s.scheduler.reduction_factor, trials=space.num_trials)
    trainable = tune.with_resources(tune.with_parameters(hyperiqa_trainable, space=space, results=loc.store),
                                    {"cpu": s.resources.cpu, "gpu": s.resources.gpu})
    path, fs = _for_tune(loc)
    if resume:
        try:
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, storage_filesystem=fs,
                                      resume_errored=False, restart_errored=False, param_space=param_space(space))
        except ValueError as e:  # the space file's search: keys no longer match the study's
            raise UserError(f"{space.source}: cannot resume {loc} with this space: {e}") from None
    run_config = tune.RunConfig(
        name=loc.name, storage_path=path.rsplit("/", 1)[0], storage_filesystem=fs, verbose=0, callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=s.metric, mode=s.mode, num_samples=space.num_trials, scheduler=scheduler,
        search_alg=make_searcher(space),
        trial_dirname_creator=lambda t: t.trial_id,
        trial_name_creator=lambda t: t.trial_id,
        # a trial starts in the worker process its predecessor ended in: no interpreter, torch and timm start-up
        # per trial (8-10 s each on 2 cores; a 4-trial tiny study 110 -> 71 s). Every trial builds its own solver
        # and seeds it, so a reused worker gives the same numbers as a fresh one. Not under halving: its kept
        # trials start after the rung, when Tune has already let the idle workers go, and a reuse that fails
        # errors the next trial without telling the scheduler, whose rung would then wait for it forever.
        reuse_actors=s.scheduler.type != "halving",
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


def _check_folder(loc: Location, resume: bool) -> None:
    """A plain run needs a new folder; --resume needs one that Tune can continue. Each refusal says what to do.
    At a URI, the bucket must exist and answer first."""
    storage.check(loc)
    exists = storage.exists(loc)
    restorable = exists and _restorable(loc)
    if resume and not restorable:
        hint = (": it holds no study Tune can continue; remove it and run without --resume" if exists
                else "; run without --resume to start it")
        raise UserError(f"--resume: no interrupted study at {loc}{hint}")
    if not resume and restorable:
        raise UserError(f"{loc} already exists: continue it with --resume, or choose another --name")
    if not resume and exists:
        raise UserError(f"{loc} already exists and holds no study to continue: remove it, or choose another "
                        "--name")


def run_study(space_file: str, address: str | None = None, name: str | None = None, storage: str | None = None,
              resume: bool = False, dashboard: bool = True, dashboard_host: str = "127.0.0.1",
              dashboard_port: int = 8265, on_trial_end: Callable[[Path], None] | None = None) -> tuple[int, Path]:
    """Run (or resume) a study; returns (exit code, experiment folder): 0 done, 1 every trial errored,
    130 interrupted (resumable). ``on_trial_end(exp_dir)`` is called whenever a trial completes or errors
    (the CLI's live report); what it raises is logged, never fatal.

    One rule for a start that fails (Ray cannot start, the pre-flight refuses, Ctrl-C during start-up): until
    the first trial starts, the folder this run created is removed again (at a URI, the mirror and what the URI
    got), so the same command can simply be run again. Returns the experiment's location (its ``local`` folder
    holds everything the reports read)."""
    from . import storage as stores  # the name `storage` is the --storage text here

    console = Console()
    space = load_space(space_file)
    if name:
        space.study.name = name
    if storage:
        space.study.storage = storage
    loc = stores.location(space.study.storage, space.study.name)
    _check_folder(loc, resume)
    space = with_resolved_paths(space)
    with naming(space_file):  # a data problem found here names the space file as well as the data file
        prebuild_caches(space, console)
    stores.begin(loc, resume)
    exp_dir = loc.local
    progress = StudyProgress(space, exp_dir, str(loc))
    if on_trial_end is not None:
        TRIAL_END_HOOKS[exp_dir] = on_trial_end
    try:
        _fit(space, space_file, loc, resume, progress, console, address,
             dict(dashboard=dashboard, host=dashboard_host, port=dashboard_port))
    except BaseException:
        if not resume and not progress.started:
            stores.discard(loc)
        raise
    finally:
        TRIAL_END_HOOKS.pop(exp_dir, None)
    if not resume and not progress.started:
        stores.discard(loc)
        console.print("[bold yellow]interrupted[/] before any trial started; nothing was kept: run the same "
                      "command again")
        return 130, loc
    return _outcome(space, space_file, exp_dir, console), loc


def _fit(space: Space, space_file: str, loc: Location, resume: bool, progress: StudyProgress, console: Console,
         address: str | None, dashboard: dict, extra: dict | None = None) -> None:
    exp_dir = loc.local
    _log_to_file(exp_dir)
    s = space.study
    records.write_study_settings(exp_dir, {"source": str(space_file), **({"uri": str(loc)} if loc.remote else {}),
                                           "metric": s.metric,
                                           "mode": s.mode, "max_epochs": space.max_epochs,
                                           "trials": space.num_trials, "search": s.search.type,
                                           "search_seed": s.search_seed,
                                           # what a confirmation of this study runs its trials with
                                           "resources": {"cpu": s.resources.cpu, "gpu": s.resources.gpu},
                                           "max_concurrent": s.max_concurrent, "max_failures": s.max_failures,
                                           **(extra or {}), "versions": collect_versions()})
    mirror = Mirroring(loc, DRIVER_FILES)
    mirror.start()  # a URI that cannot be written is refused here, before Ray starts
    MIRRORS[exp_dir] = mirror
    try:
        with connected(address, dashboard["dashboard"], dashboard["host"], dashboard["port"], console, exp_dir,
                       env=storage.worker_env(loc)):
            preflight(space)
            where = f"{loc} (local copy: {exp_dir})" if loc.remote else str(exp_dir)
            count, _, how = trial_count(space).partition(" ")
            console.print(f"study [bold]{escape(space.study.name)}[/]: {count} trials {escape(how)}; results in "
                          f"{escape(where)}")
            tuner = build_tuner(space, loc, resume, [progress])
            try:
                tuner.fit()
            finally:
                progress.stop()
    finally:
        MIRRORS.pop(exp_dir, None)
        # a start that failed is removed again: no last copy to make
        problem = mirror.close(last_round=progress.started or resume)
        if problem:
            console.print(f"[bold yellow]warning:[/] {escape(problem)}; the driver's records are in "
                          f"{escape(str(exp_dir))}")


def _outcome(space: Space, space_file: str, exp_dir: Path, console: Console, resume_cmd: str | None = None) -> int:
    """Say how the study ended, from the study's own record (``trial_status.json``, written at the end of the
    loop, also by a resumed run); the exit code follows: 130 interrupted, 1 when every trial errored, else 0."""
    statuses = records.read_trial_status(exp_dir)
    unfinished = [t for t, s in statuses.items() if s not in ("TERMINATED", "ERROR")]
    # a Ctrl-C between two trials leaves every created trial finished: the ones never created are unfinished too
    unfinished += ["not started"] * max(0, space.num_trials - len(statuses))
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


def confirmation_started(study: Location) -> bool:
    """Whether the study holds a confirmation Tune can continue."""
    return _restorable(study.child(records.CONFIRM_DIR))


def _confirm_arguments(loc: Location, resume: bool, given: dict[str, int | None]) -> dict[str, int]:
    """--top/--seeds/--split-seeds: a resume takes what the confirmation was started with (a different value is
    refused); a new one takes the defaults of ``study.confirm`` for what is not given."""
    defaults = dataclasses.asdict(ConfirmConfig())
    recorded = (records.study_settings(loc.local).get("confirm") or {}).get("asked", {}) if resume else {}
    for key, value in given.items():
        if recorded and value is not None and value != recorded.get(key):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag}: this confirmation was started with {flag} {recorded.get(key)}; resume it "
                            f"without {flag}, or remove {loc} to start another")
    return {k: (given[k] if given[k] is not None else recorded.get(k, defaults[k])) for k in defaults}


def _check_confirm_folder(loc: Location, resume: bool) -> None:
    if resume and not _restorable(loc):
        raise UserError(f"--resume: no interrupted confirmation at {loc}; run without --resume to start one")
    if not resume and storage.exists(loc):
        raise UserError(f"{loc} already holds a confirmation: continue an interrupted one with --resume, or "
                        "remove the folder to run another")


def run_confirmation(study: Location | str | Path, top: int | None = None, seeds: int | None = None,
                     split_seeds: int | None = None, resume: bool = False, address: str | None = None,
                     dashboard: bool = True, dashboard_host: str = "127.0.0.1", dashboard_port: int = 8265,
                     resume_cmd: str | None = None) -> tuple[int, Location]:
    """Retrain the top configurations of a study over seeds (the plan: :func:`iqa_tune.confirm.plan_confirmation`)
    as a Tune experiment of its own, ``STUDY/confirm``; returns (exit code, its location) with the codes of
    :func:`run_study`, whose machinery it shares: live table, ``trial_status.json``, Ctrl-C and --resume, and a
    start that fails removes what it created. ``study``: its folder or URI (read through
    :func:`storage.fetch`), or the location :func:`run_study` returned."""
    from .confirm import plan_confirmation

    console = Console()
    study = study if isinstance(study, Location) else storage.fetch(study)
    loc = study.child(records.CONFIRM_DIR)
    exp_dir = loc.local
    asked = _confirm_arguments(loc, resume, {"top": top, "seeds": seeds, "split_seeds": split_seeds})
    plan = plan_confirmation(study.local, **asked)
    _check_confirm_folder(loc, resume)
    if plan.note:
        console.print(f"[yellow]note:[/] {escape(plan.note)}")
    # from `iqa-tune run` (study.confirm) the way on is that command's --resume; on its own, `confirm --resume`
    again = resume_cmd or f"iqa-tune confirm {study}"
    resume_cmd = resume_cmd or f"iqa-tune confirm {study} --resume"
    space = with_resolved_paths(plan.space)
    prebuild_caches(space, console)
    storage.begin(loc, resume)
    progress = StudyProgress(space, exp_dir, str(loc))
    names = ", ".join(f"{c.name} ({plan.metric} {c.search_metric:.4f})" for c in plan.configurations)
    console.print(f"confirm: {escape(names)}; training seeds {plan.seeds}, splits {plan.split_seeds}")
    try:
        _fit(space, str(study), loc, resume, progress, console, address,
             dict(dashboard=dashboard, host=dashboard_host, port=dashboard_port),
             extra={"confirm": {"asked": asked, **plan.record()}})
    except BaseException:
        if not resume and not progress.started:
            storage.discard(loc)
        raise
    if not resume and not progress.started:
        storage.discard(loc)
        console.print(f"[bold yellow]interrupted[/] before any confirmation run started; nothing of it was kept: "
                      f"run {escape(again)}")
        return 130, loc
    return _outcome(space, str(study), exp_dir, console, resume_cmd), loc
