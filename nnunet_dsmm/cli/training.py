"""``nnunet_dsmm train`` (the stage chain of a trainer with the stock ``nnUNetv2_train``, resumable) and
``nnunet_dsmm status`` (what is trained in ``nnUNet_results``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from nnunet_dsmm.cli.arguments import NON_NEGATIVE, POSITIVE, UsageError, bounded
from nnunet_dsmm.nnunet.locations import fold_name
from nnunet_dsmm.trainers.schedules import SCHEDULES

BUDGETS = tuple(SCHEDULES)
#: the named schedules, for the help of ``train --budget`` and ``ablate --budget``
BUDGET_HELP = ("paper (1000/600/1000 epochs), gpu (100/50/100), cpu (16/6/16 epochs of 12 iterations), cpu-long "
               "(48/60/48), smoke (tests; learns nothing)")


def add_training_commands(command: Callable[..., argparse.ArgumentParser], add_device: Callable) -> None:
    """The ``train`` and ``status`` subparsers (``command`` makes a subparser)."""
    train = command("train", help="train a trainer and every earlier stage it needs, in order, with the stock "
                                  "nnUNetv2_train; keeps finished trainings and continues interrupted ones (--c)")
    train.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name, planned and preprocessed "
                                                                     "with DSMMPlanner")
    train.add_argument("-c", required=True, metavar="CONFIGURATION", help="configuration, e.g. 3d_fullres")
    train.add_argument("-f", required=True, nargs="+", type=fold_name, metavar="FOLD",
                       help="fold(s): 0 to 4, or all; several (-f 0 1 2 3 4) train independently")
    train.add_argument("-tr", default="DSMMTrainer", metavar="TRAINER",
                       help="the trainer to train; its earlier stages are trained first (default DSMMTrainer)")
    train.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    add_device(train)
    train.add_argument("--budget", choices=BUDGETS, metavar="BUDGET",
                       help=f"schedule of every stage, as ablate --budget: {BUDGET_HELP} (default: each trainer's "
                            "own, the paper's, or DSMM_NUM_* from the environment)")
    train.add_argument("--dry-run", action="store_true",
                       help="list each training (done, to continue, to start) with its command line, where it runs "
                            "and the estimated device time; train nothing")
    add_executor_options(train)
    train.set_defaults(func=_cmd_train)

    status = command("status", help="which trainers and folds of a dataset are trained in nnUNet_results: "
                                    "finished or interrupted (at which epoch), and under which schedule")
    status.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name")
    status.add_argument("-c", metavar="CONFIGURATION", help="only this configuration (default: all)")
    status.add_argument("-p", metavar="PLANS", help="only this plans identifier (default: all)")
    status.set_defaults(func=_cmd_status)


def _schedule_source(budget: str | None) -> str:
    from nnunet_dsmm.trainers.schedules import SCHEDULE_VARIABLES

    if budget is not None:
        return f"--budget {budget}"
    chosen = [f"{v}={os.environ[v]}" for v in SCHEDULE_VARIABLES.values() if os.environ.get(v)]
    return ", ".join(chosen) + " from the environment" if chosen else "each trainer's own (the paper's)"


def _require_plans(name: str, plans: str, configuration: str, dataset: str) -> None:
    """The plans and configuration that ``nnUNetv2_train`` needs exist, else say how to make them."""
    import json

    from nnunet_dsmm.experiments.experiment import ExperimentError
    from nnunet_dsmm.nnunet.locations import require_folder

    path = os.path.join(require_folder("nnUNet_preprocessed"), name, f"{plans}.json")
    if not os.path.isfile(path):
        raise ExperimentError(f"nnunet-dsmm: no plans {path}; plan and preprocess the dataset first: "
                              f"nnUNetv2_plan_and_preprocess -d {dataset} -fpe DSMMFingerprintExtractor "
                              f"-pl DSMMPlanner -c {configuration}")
    with open(path) as f:
        configurations = json.load(f)["configurations"]
    if configuration not in configurations:
        raise ExperimentError(f"nnunet-dsmm: the plans {path} have no configuration {configuration!r}; they have "
                              f"{', '.join(configurations)}")


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where the trainings run (``experiments.request.ExecutorOptions``) and the step time of the dry run's estimate."""
    group = parser.add_argument_group("where the trainings run (docs/how-to/workstation-and-cluster.md)")
    group.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local: on this machine (default); slurm: submit sbatch jobs chained with afterok; run "
                            "the command again to see their state and resubmit what failed or timed out")
    group.add_argument("--devices", type=_device_ids, metavar="IDS",
                       help="CUDA devices for independent trainings at the same time, one each, e.g. 0,1,2,3")
    group.add_argument("--jobs", type=POSITIVE, default=1, metavar="N",
                       help="trainings at the same time on -device (default 1; e.g. on the CPU)")
    group.add_argument("--partition", help="slurm: the partition of every job")
    group.add_argument("--time", dest="time_limit", metavar="TIME",
                       help="slurm: the time limit of every job (e.g. 2-00:00:00); a job that hits it is resubmitted "
                            "by the next call and continues from its checkpoint")
    group.add_argument("--gpus-per-job", type=NON_NEGATIVE, metavar="N",
                       help="slurm: GPUs of every job (--gres=gpu:N; default 1 with -device cuda, else 0)")
    group.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                       help="slurm: one more sbatch option for every job, e.g. --sbatch-option=--mem=64G; repeatable")
    group.add_argument("--setup", metavar="SHELL_LINE",
                       help="slurm: a shell line every job runs first, e.g. 'module load cuda; . venv/bin/activate'")
    group.add_argument("--step-time-ms", type=bounded(float, 1e-9), metavar="MS",
                       help="dry run: the measured time of one training step, for the estimated device time")
    group.add_argument("--benchmark-json", metavar="JSON_FILE",
                       help="dry run: per-trainer step times from nnunet_dsmm benchmark --json")


def _device_ids(text: str) -> tuple[str, ...]:
    ids = tuple(part.strip() for part in text.split(","))
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct CUDA device ids separated by commas, e.g. 0,1,2,3, "
                                         f"got {text!r}")
    return ids


def executor_options(args: argparse.Namespace):
    """The ``experiments.request.ExecutorOptions`` of the parsed options; a usage error when they do not go together."""
    from nnunet_dsmm.experiments.request import ExecutorOptions

    slurm_only = {"--partition": args.partition, "--time": args.time_limit, "--gpus-per-job": args.gpus_per_job,
                  "--sbatch-option": args.sbatch_option, "--setup": args.setup}
    given = [name for name, value in slurm_only.items() if value not in (None, [])]
    if args.executor == "local" and given:
        raise UsageError(f"nnunet_dsmm {args.command}: {', '.join(given)} only apply with --executor slurm")
    if args.executor == "slurm" and (args.devices or args.jobs > 1):
        raise UsageError(f"nnunet_dsmm {args.command}: --devices and --jobs are for --executor local; SLURM places "
                         "each job (use --gpus-per-job)")
    if args.devices and args.device != "cuda":
        raise UsageError(f"nnunet_dsmm {args.command}: --devices lists CUDA devices; leave -device at cuda, or use "
                         f"--jobs N with -device {args.device}")
    if args.devices and args.jobs > 1:
        raise UsageError(f"nnunet_dsmm {args.command}: give --devices (one training per device) or --jobs, not both")
    gpus = args.gpus_per_job if args.gpus_per_job is not None else int(args.device == "cuda")
    return ExecutorOptions(args.executor, args.devices or (), args.jobs, args.partition, args.time_limit,
                           gpus if args.executor == "slurm" else None, tuple(args.sbatch_option), args.setup,
                           args.step_time_ms, args.benchmark_json)


def _cmd_train(args) -> int:
    from nnunet_dsmm.experiments.executors import dry_run, run_plan
    from nnunet_dsmm.experiments.experiment import say, trainings_for
    from nnunet_dsmm.experiments.plan import build_plan, folder_log
    from nnunet_dsmm.nnunet.locations import dataset_name, require_folder

    options = executor_options(args)
    schedule = None if args.budget is None else SCHEDULES[args.budget]
    trainings = trainings_for([args.tr], schedule)
    results = require_folder("nnUNet_results")
    name = dataset_name(args.d)
    _require_plans(name, args.p, args.c, args.d)
    folds = list(dict.fromkeys(args.f))
    env = {**os.environ, **({} if schedule is None else schedule.environment())}
    plan = build_plan(trainings, name, args.c, args.p, folds, {None: results}, env, folder_log)
    slurm_folder = os.path.join(results, name, "nnunet_dsmm_slurm", f"{args.p}__{args.c}")
    say(f"train: {args.tr} on {name} {args.c} fold(s) {' '.join(map(str, folds))}: {len(trainings)} training(s) "
        f"per fold, earlier stages first ({', '.join(t.trainer for t in trainings)}); schedule: "
        f"{_schedule_source(args.budget)}")
    _warn_offline(trainings)
    if args.dry_run:
        print("\n".join("  " + line for line in dry_run(plan, options, args.device, slurm_folder)))
        return 0
    if run_plan(plan, options, args.device, slurm_folder) is not None:
        say(f"train: {args.tr} and its earlier stages are trained; models in {os.path.join(results, name)}")
    return 0


def _warn_offline(trainings) -> None:
    """Print a warning when a training embeds prompts with CLIP weights that would have to be downloaded."""
    from nnunet_dsmm.model.text_encoder import offline_warning
    from nnunet_dsmm.nnunet.discovery import find_registered_class

    encoders = {find_registered_class(t.trainer).text_encoder for t in trainings
                if find_registered_class(t.trainer).prompt_source == "text"}
    for warning in filter(None, map(offline_warning, sorted(encoders))):
        print(warning, file=sys.stderr)


def _cmd_status(args) -> int:
    from nnunet_dsmm.experiments.training_status import dataset_status, format_status
    from nnunet_dsmm.nnunet.locations import dataset_name, require_folder

    results = require_folder("nnUNet_results")
    name = dataset_name(args.d)
    print(format_status(dataset_status(results, name, args.c, args.p), os.path.join(results, name)))
    return 0
