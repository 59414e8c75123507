"""``nnunet_dsmm train`` (the stage chain of a trainer with the stock ``nnUNetv2_train``, resumable) and
``nnunet_dsmm status`` (what is trained in ``nnUNet_results``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from nnunet_dsmm.locations import fold_name


def add_training_commands(command: Callable[..., argparse.ArgumentParser], add_device: Callable) -> None:
    """The ``train`` and ``status`` subparsers (``command`` makes a subparser)."""
    train = command("train", help="train a trainer and every earlier stage it needs, in order, with the stock "
                                  "nnUNetv2_train; keeps finished trainings and continues interrupted ones (--c)")
    train.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name, planned and preprocessed "
                                                                     "with DSMMPlanner")
    train.add_argument("-c", required=True, metavar="CONFIGURATION", help="configuration, e.g. 3d_fullres")
    train.add_argument("-f", required=True, type=fold_name, metavar="FOLD", help="fold: 0 to 4, or all")
    train.add_argument("-tr", default="DSMMTrainer", metavar="TRAINER",
                       help="the trainer to train; its earlier stages are trained first (default DSMMTrainer)")
    train.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    add_device(train)
    train.add_argument("--dry-run", action="store_true",
                       help="list each training (done, to continue, to start) with its command line; train nothing")
    train.set_defaults(func=_cmd_train)

    status = command("status", help="which trainers and folds of a dataset are trained in nnUNet_results: "
                                    "finished or interrupted (at which epoch), and under which schedule")
    status.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name")
    status.add_argument("-c", metavar="CONFIGURATION", help="only this configuration (default: all)")
    status.add_argument("-p", metavar="PLANS", help="only this plans identifier (default: all)")
    status.set_defaults(func=_cmd_status)


def _schedule_source() -> str:
    from nnunet_dsmm.trainers.base import SCHEDULE_VARIABLES

    chosen = [f"{v}={os.environ[v]}" for v in SCHEDULE_VARIABLES.values() if os.environ.get(v)]
    return ", ".join(chosen) + " from the environment" if chosen else "each trainer's own (the paper's)"


def _require_plans(name: str, plans: str, configuration: str, dataset: str) -> None:
    """The plans and configuration that ``nnUNetv2_train`` needs exist, else say how to make them."""
    import json

    from nnunet_dsmm.experiment import ExperimentError
    from nnunet_dsmm.locations import require_folder

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


def _cmd_train(args) -> int:
    from nnunet_dsmm.experiment import DONE, describe, plan_trainings, run_steps, say, train_command, trainings_for
    from nnunet_dsmm.locations import dataset_name, require_folder

    trainings = trainings_for([args.tr], None)
    results = require_folder("nnUNet_results")
    name = dataset_name(args.d)
    _require_plans(name, args.p, args.c, args.d)
    env = dict(os.environ)
    steps = plan_trainings(trainings, name, args.c, args.f, args.p, results, env)
    say(f"train: {args.tr} on {name} {args.c} fold {args.f}: {len(steps)} training(s) in order "
        f"({', '.join(t.trainer for t in trainings)}); schedule: {_schedule_source()}", "nnunet_dsmm")
    if args.dry_run:
        for step in steps:
            print("  " + describe(step, train_command(step, name, args.c, args.f, args.p, args.device), True))
        counts = {action: sum(s.action == action for s in steps) for action in (DONE, "continue", "start")}
        print(f"train --dry-run: {counts[DONE]} done, {counts['continue']} to continue, {counts['start']} to start; "
              "nothing trained")
        return 0
    run_steps(steps, name, args.c, args.f, args.p, args.device, env,
              lambda step: os.path.join(step.folder, "nnunet_dsmm_train.log"))
    say(f"train: {args.tr} and its earlier stages are trained; models in {os.path.join(results, name)}", "nnunet_dsmm")
    return 0


def _cmd_status(args) -> int:
    from nnunet_dsmm.locations import dataset_name, require_folder
    from nnunet_dsmm.training_status import dataset_status, format_status

    results = require_folder("nnUNet_results")
    name = dataset_name(args.d)
    print(format_status(dataset_status(results, name, args.c, args.p), os.path.join(results, name)))
    return 0
