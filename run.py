"""Command line: python run.py [--comp NAME] [--run-name RUN] [--set key=value ...] [--smoke] ...
(train), or --tune, --stack, --export-run, --predict RUN --input CSV, --lr-find.

Parses the arguments, resolves them once (pipeline/setup.py: Setup) and hands the Setup, or the
finished Run it opens, to the command; any input error ends with one line on stderr and exit code
2 (a traceback only with --debug).
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

try:
    import pipeline  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported; checks the versions
except ImportError as _exc:  # a package outside the tested ranges, or missing: one line, exit 2
    if "--debug" in sys.argv:
        raise
    print(f"error: {_exc}", file=sys.stderr)
    sys.exit(2)
import pipeline.errors
from pipeline.config_files import DEFAULT_COMPETITION
from pipeline.errors import PipelineError

OS_ERRORS = {errno.ENOSPC: "Free disk space or pass --output-dir on a larger disk.",
             errno.EDQUOT: "Free space in your quota or pass --output-dir elsewhere.",
             errno.EROFS: "That folder is read-only: pass --output-dir to a writable one.",
             errno.EACCES: "No permission there: pass --output-dir to a folder of yours.",
             errno.ENOENT: "Check the path."}

# The artifact names without importing TensorFlow (help must be quick); a test keeps them equal.
ARTIFACTS = ("float32", "float16", "dynamic", "int8", "qat", "prune", "prune24", "cluster", "pqat", "cqat",
             "lowrank", "distill")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description="Train a Keras model with K-fold CV on a "
                                "Kaggle-style competition and write OOF, test predictions and a submission.")
    p.add_argument("--comp", default=DEFAULT_COMPETITION,
                   help=f"competition name under competitions/ or a config path (default: {DEFAULT_COMPETITION})")
    p.add_argument("--run-name", help="run folder name (default: a timestamp); reuse it to resume a killed run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted path, value parsed as YAML (repeatable)")
    p.add_argument("--params", help="a YAML overlay of config values (e.g. a tuning study's best.yaml)")
    p.add_argument("--data-dir", help="folder holding the competition's files (default: the config's data.dir)")
    p.add_argument("--output-dir", help="root folder for outputs (default: outputs/)")
    p.add_argument("--submission", metavar="PATH",
                   help="also copy submission.csv to PATH (in a Kaggle kernel: <output-dir>/submission.csv)")
    p.add_argument("--time-limit", metavar="DURATION",
                   help="wall-clock budget for the run, e.g. 90s, 30m, 8h: folds and epochs are cut so that it "
                        "ends with a submission in time; scores.json says how many folds ran")
    p.add_argument("--smoke", action="store_true",
                   help="whole path on a small sample: a few hundred rows, 2 folds, 1 epoch")
    p.add_argument("--lr-find", action="store_true",
                   help="run the learning-rate range test for the configured model instead of training")
    t = p.add_argument_group("tuning (an Optuna study around the CV; see the tune section of the config)")
    t.add_argument("--tune", action="store_true", help="run or continue an Optuna study instead of one run")
    t.add_argument("--trials", type=int, help="trials the study should hold (default: tune.trials)")
    t.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    t.add_argument("--study", help="study name (default: <competition>-<model>)")
    t.add_argument("--storage", help="RDB URL or journal file shared by workers (default: SQLite in outputs/)")
    t.add_argument("--jobs", type=int, help="worker processes on the study")
    k = p.add_argument_group("stacking")
    k.add_argument("--stack", nargs="*", metavar="RUN",
                   help="combine finished runs (their OOF) into a level-2 run; no RUN: the config's stack.runs")
    k.add_argument("--stack-methods", nargs="+", metavar="METHOD",
                   help="level-2 methods: linear hill rank keras (default: stack.methods)")
    e = p.add_argument_group("export (TFLite)")
    e.add_argument("--export", nargs="*", metavar="ARTIFACT",
                   help="after the run (or for --export-run), write TFLite artifacts: "
                        f"{' '.join(ARTIFACTS)} (no ARTIFACT: the config's export.artifacts)")
    e.add_argument("--export-run", metavar="RUN", help="export an already finished run instead of training")
    p.add_argument("--leaderboard", action="store_true",
                   help="every run, stack and study of --comp, best first; also written as leaderboard.csv")
    r = p.add_argument_group("prediction with a finished run")
    r.add_argument("--predict", metavar="RUN", help="predict new rows with a finished run (a name of --comp's runs "
                                                      "or a run folder): the mean of its fold models")
    r.add_argument("--input", metavar="CSV", help="the rows to predict (the training file's feature columns and id)")
    r.add_argument("--out", metavar="CSV", help="where to write the predictions (default: <input>.pred.csv)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return p.parse_args(argv)


# A command's own flags: given to another command they would be ignored (`--out` with a training
# run wrote nothing where the user looked), so they are refused.
OWN_FLAGS = {"--tune": ("trials", "timeout", "study", "storage", "jobs"), "--stack": ("stack_methods",),
             "--predict": ("input", "out")}


def check_flags_belong(args: argparse.Namespace, command: str | None) -> None:
    for owner, names in OWN_FLAGS.items():
        given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
        if given and owner != command:
            raise pipeline.errors.ConfigError(
                f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with {owner}, and this command is "
                f"{command or 'training'}: add {owner} or leave {'it' if len(given) == 1 else 'them'} out")


def main(argv=None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        signal.signal(signal.SIGTERM, pipeline.errors.on_sigterm)
    for flag in ("trials", "jobs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            print(f"error: --{flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    try:
        budget = None
        if args.time_limit is not None:  # the clock starts now, before the data is read
            from pipeline.time_budget import TimeBudget, parse_duration

            budget = TimeBudget(parse_duration(args.time_limit))
        commands = [f for f, on in (("--tune", args.tune), ("--stack", args.stack is not None),
                                     ("--export-run", bool(args.export_run)), ("--predict", bool(args.predict)),
                                     ("--lr-find", args.lr_find), ("--leaderboard", args.leaderboard)) if on]
        if len(commands) > 1:
            raise pipeline.errors.ConfigError(f"{' and '.join(commands)} are separate commands; give one of them")
        check_flags_belong(args, commands[0] if commands else None)
        # One resolution step: the config, the output root, the data folder and --smoke, once;
        # each command receives the Setup or the Run it opens (pipeline/setup.py).
        from pipeline.setup import Setup

        setup = Setup.resolve(args.comp, args.overrides, args.params, data_dir=args.data_dir,
                              output_dir=args.output_dir, smoke=args.smoke,
                              writable=not (args.leaderboard or args.predict))
        if args.leaderboard:
            from pipeline.leaderboard import show

            show(setup.root, setup.cfg.name)
        elif args.predict:
            from pipeline.predict import predict_rows

            predict_rows(setup.open_run(args.predict, "--predict").require_finished("predict"), args.input, args.out)
        elif args.export_run:
            export(setup, args.export_run, args)
        elif args.tune:
            from pipeline.tuning import run_study

            run_study(setup, trials=args.trials, timeout=args.timeout, study=args.study, storage=args.storage,
                      jobs=args.jobs)
        elif args.stack is not None:
            from pipeline.stacking import open_members, stack

            stack(setup, open_members(setup, args.stack), methods=args.stack_methods, run_name=args.run_name)
        elif args.lr_find:
            from pipeline.runner import lr_find_command

            lr_find_command(setup)
        else:
            from pipeline.runner import train

            result = train(setup, run_name=args.run_name, submission=args.submission, budget=budget)
            if args.export is not None:
                export(setup, result.run_dir, args)
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The machine, not the code: a full disk, a read-only or missing folder, no permission.
        if args.debug or exc.errno not in OS_ERRORS:
            raise
        where = exc.filename or "a file of the run"
        print(f"error: {where}: {exc.strerror}. {OS_ERRORS[exc.errno]} Finished folds are kept; rerun with the same "
              f"--run-name to resume.", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        how = "SIGTERM" if isinstance(exc, pipeline.errors.Terminated) else "Ctrl-C"
        print(f"interrupted ({how}): finished folds are kept; rerun with the same --run-name to resume",
              file=sys.stderr)
        return 143 if how == "SIGTERM" else 130
    return 0


def export(setup, run, args) -> None:
    """--export-run RUN (or --export after training): the finished run's TFLite artifacts."""
    from pipeline.export import check_artifacts, export as export_run

    check_artifacts(args.export or [], "--export")
    export_run(setup.open_run(run, "--export-run").require_finished("--export-run"), args.export or None,
               overrides=args.overrides, data_dir=args.data_dir)


def console() -> None:
    """The installed command (``kaggle-pipeline``, pyproject.toml): the same as python run.py."""
    sys.exit(main())


if __name__ == "__main__":
    console()
