"""The ``iqa-tune`` command: parses arguments and dispatches, nothing more."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import UserError, naming

BENCH_SECTIONS = ("data", "tune", "eval", "denormal", "asha", "memory", "search", "gpu", "predict", "koniq", "horizon")  # iqa_tune.bench.SECTIONS, without importing torch


def _train(args) -> int:
    from .config import load_run_config
    from .shipped import resolve
    from .train import run_train

    path = resolve(args.config, "config")
    cfg = load_run_config(path)
    with naming(path):
        run_train(cfg)
    return 0


def _demo_data(args) -> int:
    from .config import DataConfig, cache_root
    from .demo_data import DEMO_VERSION, build_demo

    out = Path(args.out) if args.out else cache_root(DataConfig()) / DEMO_VERSION
    print(build_demo(out))
    return 0


def _validate(args) -> int:
    from .shipped import resolve
    from .space import describe, load_space

    print(describe(load_space(resolve(args.space, "space"))))
    return 0


def _spaces(args) -> int:
    from .shipped import listing

    print(listing())
    return 0


def _run(args) -> int:
    from .records import REPORT_DIR
    from .reports.build import build_report, write_report
    from .reports.live import LiveReport
    from .shipped import resolve
    from .space import load_space
    if not args.address:
        from .instance import use_token_auth

        use_token_auth()
    from .study import confirmation_started, run_confirmation, run_study

    path = resolve(args.space, "space")
    live = LiveReport()  # EXPERIMENT/report follows the study: rewritten as trials end
    try:
        code, loc = run_study(path, address=args.address, name=args.name, storage=args.storage,
                              resume=args.resume, dashboard=not args.no_dashboard,
                              dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                              on_trial_end=live.trial_ended)
    finally:
        live.close()
    exp_dir = loc.local
    if code in (0, 1):  # finished, even if every trial errored: the report says why
        build_report(exp_dir)
    elif (exp_dir / REPORT_DIR).is_dir():  # interrupted: the live page must stop saying that trials are running
        write_report(exp_dir, pictures=False)
    confirm = load_space(path).study.confirm
    if code == 0 and confirm is not None:  # study.confirm: retrain the top configurations over seeds right away
        code, _ = run_confirmation(loc, confirm.top, confirm.seeds, confirm.split_seeds,
                                   resume=args.resume and confirmation_started(loc), address=args.address,
                                   dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                                   dashboard_port=args.dashboard_port, resume_cmd=_resume_cmd(path, loc))
        if code in (0, 1):
            build_report(exp_dir)
    _publish(loc, exp_dir / REPORT_DIR, strict=False)
    return code


def _resume_cmd(path: str, loc) -> str:
    return f"iqa-tune run {path} --name {loc.name} --storage {loc.parent} --resume"


def _publish(loc, report: Path, strict: bool = True) -> None:
    """An experiment at a URI gets its report beside it (URI/report). After a study, a failed copy is a warning:
    the study's outcome stands, and the report is in the local copy."""
    from .storage import publish

    if not report.is_dir():
        return
    try:
        target = publish(loc, report)
    except UserError as e:
        if strict:
            raise
        print(f"warning: {e}; the report is in {report}", file=sys.stderr)
        return
    if target:
        print(f"report copied to {target}")


def _confirm(args) -> int:
    from .records import REPORT_DIR
    from .reports.build import build_report
    from .storage import fetch
    if not args.address:
        from .instance import use_token_auth

        use_token_auth()
    from .study import run_confirmation

    study = fetch(args.experiment)
    code, _ = run_confirmation(study, args.top, args.seeds, args.split_seeds, resume=args.resume,
                               address=args.address, dashboard=not args.no_dashboard,
                               dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port)
    if code in (0, 1):  # the study's report gains the configuration table
        build_report(study.local, experiment=str(study))
        _publish(study, study.local / REPORT_DIR, strict=False)
    return code


def _report(args) -> int:
    from .reports.build import build_report
    from .storage import fetch, is_uri

    if args.out and is_uri(args.out):
        raise UserError(f"--out {args.out}: a folder on this machine; --upload copies the report beside an "
                        "experiment at a URI")
    if args.out:
        from .preflight import check_folder

        check_folder(args.out, "--out")  # a file there: refused before the experiment is read
    loc = fetch(args.experiment)  # a URI: copied to its local folder first (all but the model states)
    out = build_report(loc.local, out=Path(args.out) if args.out else None, metric=args.metric,
                       experiment=str(loc))
    if args.upload:
        if loc.remote is None:
            print(f"--upload: {loc} is a folder on this machine; nothing to copy")
        _publish(loc, out)
    elif loc.remote is not None:
        print(f"{loc} was read through its local copy {loc.local}; --upload also writes the report beside it")
    return 0


def _predict(args) -> int:
    from .predict import run_predict

    return run_predict(args.source, args.images, out=args.out, trial=args.trial, force=args.force,
                       device=args.device)


def _export(args) -> int:
    from .export import run_export

    return run_export(args.source, args.out, trial=args.trial, force=args.force)


def _bench(args) -> int:
    from .bench import run_bench

    return run_bench(args)


# the examples every command's --help ends with (tests/test_docs.py parses each one with this parser)
EXAMPLES = {
    "train": ["iqa-tune train demo_train                 # a shipped config, by name",
              "iqa-tune train my_koniq.yaml              # one run, results in OUT_DIR/NAME"],
    "demo-data": ["iqa-tune demo-data                        # into the cache, where the demo looks"],
    "validate": ["iqa-tune validate my_space.yaml          # checks the file, prints the trial count",
                 "iqa-tune validate koniq_swin              # a shipped space, by name"],
    "spaces": ["iqa-tune spaces"],
    "run": ["iqa-tune run demo                         # the demo study, results in ray_results/demo",
            "iqa-tune run my_space.yaml --resume       # continue after Ctrl-C"],
    "confirm": ["iqa-tune confirm ray_results/demo --top 2 --seeds 3",
                "iqa-tune confirm ray_results/demo --resume"],
    "report": ["iqa-tune report ray_results/demo          # writes ray_results/demo/report/",
               "iqa-tune report s3://bucket/studies/demo --upload"],
    "predict": ["iqa-tune predict ray_results/demo photos/ --out scores.csv",
                "iqa-tune predict runs/demo-train/best.pt other_set/labels.csv --out other.csv"],
    "export": ["iqa-tune export ray_results/demo demo_best.pt2",
               "iqa-tune export ray_results/demo demo_t2.pt2 --trial 00002"],
    "bench": ["iqa-tune bench --quick --only data",
              "iqa-tune bench --out bench.json           # every default section (minutes)"],
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's wrapping for prose, but lines indented by two spaces (the examples) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text  # (a generator expression has no zero-argument super)
        return "\n\n".join(block if block.startswith("  ") else fill(block, width, indent)
                             for block in text.split("\n\n"))


def _with_examples(sub: argparse._SubParsersAction) -> None:
    """Every subcommand's --help ends with its examples."""
    for name, command in sub.choices.items():
        command.formatter_class = HelpFormatter
        lines = EXAMPLES.get(name)
        if lines:
            command.epilog = "examples:\n\n" + "\n".join(f"  {line}" for line in lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqa-tune", description="Hyperparameter studies of HyperIQA on Ray Tune.",
                                epilog="examples:\n\n  iqa-tune run demo\n  iqa-tune run --help",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"iqa-tune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train one configuration (no Ray)")
    s.add_argument("config", help="run config YAML (the study schema without search/study sections), or the name "
                                  "of a shipped one (iqa-tune spaces)")
    s.set_defaults(fn=_train)

    s = sub.add_parser("demo-data", help="build the embedded demo dataset")
    s.add_argument("--out", help="folder (default: the cache folder, where demo configs look)")
    s.set_defaults(fn=_demo_data)

    space_help = "space YAML, or the name of a shipped space (iqa-tune spaces)"
    s = sub.add_parser("validate", help="check a space.yaml without starting Ray")
    s.add_argument("space", help=space_help)
    s.set_defaults(fn=_validate)

    s = sub.add_parser("spaces", help="list the shipped spaces and configs, usable by name")
    s.set_defaults(fn=_spaces)

    s = sub.add_parser("run", help="run a study on Ray Tune")
    s.add_argument("space", help=space_help)
    s.add_argument("--address", help="join a cluster: 'auto' after 'ray start --head', or ray://host:10001")
    s.add_argument("--name", help="study name (default: study.name in the file)")
    s.add_argument("--storage", help="where results go: a folder, or a URI such as s3://bucket/prefix (default: "
                                     "study.storage in the file)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    s.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard interface (default: loopback only)")
    s.add_argument("--dashboard-port", type=int, default=8265)
    s.add_argument("--no-dashboard", action="store_true", help="start the local Ray instance without a dashboard")
    s.set_defaults(fn=_run)

    s = sub.add_parser("confirm", help="retrain a study's top configurations over seeds, paired, without ASHA",
                       description="Retrain the top configurations of a finished study (by its val metric) from "
                                   "scratch with the same training seeds (x split seeds where the dataset has no "
                                   "official split), as a Tune experiment in EXPERIMENT/confirm; the study's report "
                                   "gains the configuration table (mean and 95% CI over seeds, paired t-tests "
                                   "against the best, Holm-adjusted).")
    s.add_argument("experiment", help="the study folder or URI (STORAGE/NAME, as iqa-tune run printed it)")
    s.add_argument("--top", type=int, help="configurations to retrain, the best by val (default 3)")
    s.add_argument("--seeds", type=int, help="training seeds per configuration, >= 2 (default 3)")
    s.add_argument("--split-seeds", type=int, help="split seeds per training seed, where the dataset has no "
                                                   "official split (default 1: the search's split)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted confirmation")
    s.add_argument("--address", help="join a cluster: 'auto' after 'ray start --head', or ray://host:10001")
    s.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard interface (default: loopback only)")
    s.add_argument("--dashboard-port", type=int, default=8265)
    s.add_argument("--no-dashboard", action="store_true", help="start the local Ray instance without a dashboard")
    s.set_defaults(fn=_confirm)

    s = sub.add_parser("report", help="ranked tables and pictures of an experiment folder or URI")
    s.add_argument("experiment", help="the experiment folder, or its URI (s3://bucket/prefix/name: read through "
                                      "a local copy)")
    s.add_argument("--out", help="output folder on this machine (default: EXPERIMENT/report; for a URI, in its "
                                 "local copy)")
    s.add_argument("--metric", help="rank by this metric (default: the study's)")
    s.add_argument("--upload", action="store_true", help="for an experiment at a URI: also copy the report beside "
                                                        "it (URI/report)")
    s.set_defaults(fn=_report)

    source_help = ("an experiment folder or URI (its best trial by the study metric, at its best epoch), a trial "
                   "or iqa-tune train folder, or a best.pt checkpoint")
    s = sub.add_parser("predict", help="score images with a trained model, as its test set was scored",
                       description=("Score images with a study's winner (or any trial or run): each image resized "
                                   "and cut into the fixed crops its run's test set got, its score the mean of "
                                   "its crops. One CSV row per image: path, score, crop_sd (the spread of its "
                                   "crops' predictions). A CSV input with a score column also gets SRCC (95% "
                                   "bootstrap CI), PLCC and KRCC against it. Exit code 1 when some images could "
                                   "not be scored (they are listed), 2 when none could."),)
    s.add_argument("source", help=source_help)
    s.add_argument("images", nargs="+", help="image files, folders (searched recursively) or CSVs with a path "
                                             "column (relative to the CSV's folder)")
    s.add_argument("--out", help="CSV to write (default: printed); SRCC etc. go beside it in NAME.metrics.json")
    s.add_argument("--trial", help="an experiment's trial to use instead of its best (its folder name or id)")
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    s.add_argument("--device", default="auto", help="auto (a GPU if torch sees one), cpu, cuda, cuda:N")
    s.set_defaults(fn=_predict)

    s = sub.add_parser("export", help="write a trained model that plain torch loads, without iqa-tune",
                       description=("Write a self-contained model: torch.export (torch.export.load), or TorchScript "
                                   "(torch.jit.load) where export fails. Input: a uint8 batch of crops (B, P, P, "
                                   "3), RGB; output: one score per crop (an image's score is the mean of its "
                                   "crops); the normalisation is inside. OUT.json beside it says how to resize "
                                   "and crop, the label scale, and where the model came from."))
    s.add_argument("source", help=source_help)
    s.add_argument("out", help="the model file to write (.pt2); its JSON goes beside it (.json)")
    s.add_argument("--trial", help="an experiment's trial to use instead of its best (its folder name or id)")
    s.add_argument("--force", action="store_true", help="overwrite OUT and its JSON if they exist")
    s.set_defaults(fn=_export)

    s = sub.add_parser("bench", help="measure the data path, Tune overhead, ASHA savings and memory")
    s.add_argument("--out", default="bench.json", help="JSON output")
    s.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    s.add_argument("--only", nargs="*", choices=BENCH_SECTIONS, metavar="SECTION",
                   help=f"sections: {' '.join(BENCH_SECTIONS)} (gpu needs CUDA; koniq and horizon run "
                        "only when named: 10,000 JPEGs and a 5.6 GB cache in a temp folder; 12 x 8 trial-epochs of "
                        "the pretrained demo backbone, then ASHA and synchronous halving)")
    s.add_argument("--images", type=int, help="koniq: how many 1024x768 JPEGs (default 10,000; --quick 1,000)")
    s.add_argument("--keep", metavar="DIR", help="keep the benchmark studies (every trial's per-epoch results) in "
                                                "a new folder under DIR instead of deleting them (sections tune, "
                                                "asha, horizon, memory, search)")
    s.set_defaults(fn=_bench)
    _with_examples(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .instance import sigterm_as_interrupt

    sigterm_as_interrupt()  # SIGTERM stops every command as Ctrl-C does: what is written is kept, exit 130
    try:
        return args.fn(args)
    except UserError as e:
        from rich.console import Console
        from rich.text import Text

        # a Text is printed literally: a '[' in a path or 'expected [w, h]' is not markup
        Console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", str(e)), highlight=False,
                                   soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; everything written so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
