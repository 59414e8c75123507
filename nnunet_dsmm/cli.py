"""The ``nnunet_dsmm`` command line: ``check``, ``synth``, ``convert-brats``, ``evaluate``, ``recover``,
``demo``, ``ablate`` and ``benchmark``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.raw_data import MISSING_AS


class UsageError(DSMMError):
    """Options that do not go together."""


def _cmd_check(args) -> int:
    from nnunet_dsmm.check import check_dataset, format_check_report
    from nnunet_dsmm.locations import raw_dataset_folder

    if not args.raw and args.d is None:
        raise UsageError("nnunet_dsmm check: give -d DATASET_ID (with nnUNet_raw set) or --raw FOLDER")
    report = check_dataset(args.raw or raw_dataset_folder(args.d), show_progress=not args.no_progress)
    print(json.dumps(report, indent=2) if args.json else format_check_report(report))
    return 1 if report["errors"] else 0


def _cmd_synth(args) -> int:
    from nnunet_dsmm.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(shape=tuple(args.shape), num_train=args.num_train, num_test=args.num_test,
                         fm_ratio=args.fm_ratio, seed=args.seed, missing_as=args.missing_as, labels=args.labels)
    manifest = write_synthetic_dataset(args.output, config, name=args.name)
    full = sum(1 for d in manifest["dropped"].values() if not d)
    print(f"Wrote {args.num_train} training cases ({full} full-modal) and {args.num_test} test cases to "
          f"{args.output}")
    return 0


def _cmd_convert(args) -> int:
    from nnunet_dsmm.brats import convert_brats

    manifest = convert_brats(args.input, args.output, args.fm_ratio, args.seed, args.split, args.missing_as,
                             args.name)
    print(f"Converted {len(manifest['dropped'])} training cases and {len(manifest['split']['test'])} test cases "
          f"to {args.output}; manifest: {os.path.join(args.output, 'missing_manifest.json')}")
    return 0


def _cmd_evaluate(args) -> int:
    from nnunet_dsmm.evaluation import EmptyMaskConvention, evaluate, seed_label
    from nnunet_dsmm.locations import trained_model_folder

    def models(root: str | None) -> list[tuple[str, str]]:
        return [(trainer, trained_model_folder(args.d, trainer, args.p, args.c, args.f, root)) for trainer in args.tr]

    trainings = {seed_label(i): models(root) for i, root in enumerate(args.seed_results)} if args.seed_results \
        else None
    convention = EmptyMaskConvention(args.empty_both[0], args.empty_both[1], args.empty_one[0], args.empty_one[1])
    summary = evaluate(None if trainings else models(None), args.f, args.i, args.l, args.o, args.device, convention,
                       args.checkpoint, use_mirroring=not args.disable_tta,
                       combinations_per_batch=args.combinations_per_batch, trainings=trainings)
    with open(os.path.join(args.o, "summary.md")) as f:
        print(f.read())
    print(f"Results: {os.path.join(args.o, 'results.csv')}, {os.path.join(args.o, 'summary.json')}, "
          f"{os.path.join(args.o, 'heatmap.png')}; reference model of the */† markers (better/worse, paired Wilcoxon): "
          f"{summary['reference_model']}")
    return 0


def _cmd_recover(args) -> int:
    from nnunet_dsmm.locations import trained_model_folder
    from nnunet_dsmm.recovery import recover

    folder = trained_model_folder(args.d, args.tr, args.p, args.c, args.f)
    report = recover(folder, args.f, args.i, args.o, args.hide, args.cases, args.device, args.checkpoint)
    for case, entry in report["cases"].items():
        print(f"{case}: recovered {', '.join(entry['recovered'])}; preview {entry['preview']}")
        for name, metric in entry["metrics"].items():
            print(f"  {name}: PSNR {metric['psnr']:.2f} dB, SSIM {metric['ssim']:.3f}")
    if not report["cases"]:
        print("No case has a missing channel (use --hide to hide a real one).")
    return 0


def _cmd_demo(args) -> int:
    from nnunet_dsmm.demo import run_demo

    run_demo(args.output, args.device, args.budget, args.fm_ratio, args.seed, args.labels, args.seeds)
    return 0


def _cmd_ablate(args) -> int:
    from nnunet_dsmm.ablation import run_ablation

    tables = run_ablation(args.d, args.c, args.f, args.p, args.table, args.i, args.l, args.o, args.device, args.seeds,
                          args.budget, use_mirroring=not args.disable_tta, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    print("\n".join(tables.values()))
    print(f"Tables: {os.path.join(args.o, 'ablation.md')}; all figures: {os.path.join(args.o, 'ablation.json')}"
          + (f"; Fig. 5: {os.path.join(args.o, 'fig5.png')}" if "fig5" in tables else ""))
    return 0


def _cmd_benchmark(args) -> int:
    from nnunet_dsmm.benchmark import (
        DEFAULT_TRAINERS,
        SYNTHETIC_CONFIGURATION,
        BenchmarkSettings,
        format_report,
        preprocessed_plans,
        run_benchmark,
        synthetic_plans,
        write_report,
    )

    if (args.d is None) == (args.synthetic_plan is None):
        raise UsageError("nnunet_dsmm benchmark: give either -d DATASET_ID (a preprocessed dataset) or "
                         "--synthetic-plan NAME")
    if args.real_batches and args.d is None:
        raise UsageError("nnunet_dsmm benchmark: --real-batches needs -d DATASET_ID with preprocessed data")
    settings = BenchmarkSettings(device=args.device, steps=args.steps, warmup=args.warmup,
                                 complete_share=args.complete_share, real_batches=args.real_batches,
                                 batch_size=args.batch_size, prediction=not args.no_prediction,
                                 prediction_repeats=args.prediction_repeats, use_mirroring=not args.disable_tta,
                                 combinations=args.combinations, seed=args.seed,
                                 trainers=args.tr or list(DEFAULT_TRAINERS))
    if args.d is not None:
        plans, dataset_json = preprocessed_plans(args.d, args.p)
        source, configuration = f"{plans['dataset_name']}/{args.p}", args.c
    else:
        plans, dataset_json = synthetic_plans(args.synthetic_plan)
        source, configuration = f"synthetic:{args.synthetic_plan}", SYNTHETIC_CONFIGURATION
    report = run_benchmark(plans, dataset_json, configuration, settings, source,
                           log=lambda line: print(line, file=sys.stderr))
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
        print(f"\nAll figures: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet_dsmm", description="nnU-Net v2 plugin for dual-stage missing "
                                     "MRI modalities: dataset tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="report channel availability and every input error; writes nothing")
    check.add_argument("-d", help="dataset ID or name in nnUNet_raw")
    check.add_argument("--raw", help="path to a raw dataset folder instead of -d")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_check)

    def add_missing_options(p):
        p.add_argument("--fm-ratio", type=float, default=0.1,
                       help="share of training cases that keep every modality; each other case loses 1 to 3 "
                            "(default 0.1)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--missing-as", choices=MISSING_AS, default="absent",
                       help="write a dropped modality as an absent file, an all-zero file, or either at random")
        p.add_argument("--name", help="dataset name written to dataset.json")

    synth = sub.add_parser("synth", help="write a synthetic BraTS-like dataset in nnU-Net raw format")
    synth.add_argument("-o", "--output", required=True, help="raw dataset folder, e.g. $nnUNet_raw/Dataset501_Synth")
    synth.add_argument("--num-train", type=int, default=20, help="training cases (default 20)")
    synth.add_argument("--num-test", type=int, default=6, help="test cases, all modalities kept (default 6)")
    synth.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48], metavar=("X", "Y", "Z"),
                       help="volume size in voxels (default 48 48 48)")
    synth.add_argument("--labels", choices=("regions", "plain"), default="regions",
                       help="regions: WT/TC/ET as nnU-Net trains BraTS (default); plain: oedema, necrosis and "
                            "enhancing tumour as mutually exclusive classes (softmax)")
    add_missing_options(synth)
    synth.set_defaults(func=_cmd_synth, name="SyntheticBraTS")

    convert = sub.add_parser("convert-brats", help="convert BraTS 2018/2020/2021 folders to nnU-Net raw format")
    convert.add_argument("-i", "--input", required=True, help="folder holding the BraTS case folders")
    convert.add_argument("-o", "--output", required=True, help="raw dataset folder to create")
    convert.add_argument("--split", help='JSON {"train": [...], "val": [...], "test": [...]} of case names')
    add_missing_options(convert)
    convert.set_defaults(func=_cmd_convert, name="BraTS")

    ev = sub.add_parser("evaluate", help="Dice and HD95 of trained models on every channel combination (Table 1)")
    ev.add_argument("-d", required=True, help="dataset ID or name")
    ev.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    ev.add_argument("-p", default="DSMMPlans", help="plans identifier (default DSMMPlans)")
    ev.add_argument("-tr", action="append", required=True,
                    help="trainer; repeat for several models (the last one is the reference of the */† markers)")
    ev.add_argument("-f", default="0", help="fold (default 0)")
    ev.add_argument("-i", required=True, help="images folder (nnU-Net raw naming, e.g. imagesTs)")
    ev.add_argument("-l", required=True, help="labels folder (e.g. labelsTs)")
    ev.add_argument("-o", required=True, help="output folder; re-running skips predictions already there")
    ev.add_argument("-device", default="cuda", choices=("cpu", "cuda"), help="default cuda")
    ev.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    ev.add_argument("--disable-tta", action="store_true",
                    help="no mirroring test-time augmentation (as nnUNetv2_predict --disable_tta; 8x faster in 3D)")
    ev.add_argument("--combinations-per-batch", type=int, metavar="N",
                    help="channel combinations of a case predicted together in each network call (default: all on "
                         "cuda, lower it if the GPU runs out of memory; 4 on cpu, the fastest there)")
    ev.add_argument("--seed-results", nargs="+", metavar="ROOT",
                    help="several independent trainings: one nnUNet_results folder per training (seed), each holding "
                         "every -tr model; reports mean ± std over them and tests over cases averaged over them")
    ev.add_argument("--empty-both", type=float, nargs=2, default=(1.0, 0.0), metavar=("DSC", "HD95"),
                    help="scores when prediction and reference are both empty (BraTS: 1 0)")
    ev.add_argument("--empty-one", type=float, nargs=2, default=(0.0, 373.13), metavar=("DSC", "HD95"),
                    help="scores when exactly one of them is empty (BraTS: 0 373.13)")
    ev.set_defaults(func=_cmd_evaluate)

    rec = sub.add_parser("recover", help="write the missing modalities that a DSMMTrainer model reconstructs")
    rec.add_argument("-d", required=True, help="dataset ID or name")
    rec.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    rec.add_argument("-p", default="DSMMPlans", help="plans identifier (default DSMMPlans)")
    rec.add_argument("-tr", default="DSMMTrainer", help="a trainer with a recovery module (default DSMMTrainer)")
    rec.add_argument("-f", default="0", help="fold (default 0)")
    rec.add_argument("-i", required=True, help="images folder (nnU-Net raw naming); never written to")
    rec.add_argument("-o", required=True, help="output folder for CASE_XXXX files, previews and metrics")
    rec.add_argument("--hide", nargs="+", default=[], metavar="CHANNEL",
                     help="hide these real channels (names from dataset.json) and report PSNR/SSIM against them")
    rec.add_argument("--cases", nargs="+", help="only these cases")
    rec.add_argument("-device", default="cuda", choices=("cpu", "cuda"), help="default cuda")
    rec.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    rec.set_defaults(func=_cmd_recover)

    demo = sub.add_parser("demo", help="the whole method on a synthetic dataset, end to end (about 15 min on CPU)")
    demo.add_argument("-o", "--output", default="dsmm_demo", help="empty output folder (default ./dsmm_demo)")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    demo.add_argument("--budget", default="cpu", choices=("cpu", "gpu", "smoke"),
                      help="data size, network width and schedules (cpu: ~10 min on 2 cores; gpu: larger; smoke: "
                           "a few minutes, learns nothing, for tests)")
    demo.add_argument("--fm-ratio", type=float, default=0.1, help="full-modal share of training cases (default 0.1)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data (default 0)")
    demo.add_argument("--seeds", type=int, default=1,
                      help="independent trainings of every model (DSMM_SEED 0..N-1; default 1); the tables show "
                           "mean ± std over them")
    demo.add_argument("--labels", choices=("regions", "plain"), default="regions",
                      help="the synthetic data's labels: BraTS regions (default) or three plain classes")
    demo.set_defaults(func=_cmd_demo)

    ablate = sub.add_parser("ablate", help="train and evaluate the paper's ablation rows (Tables 2-3, Fig. 5) with "
                                           "the stock commands and write the tables")
    ablate.add_argument("-d", required=True, help="dataset ID or name (planned and preprocessed with DSMMPlanner)")
    ablate.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    ablate.add_argument("-p", default="DSMMPlans", help="plans identifier (default DSMMPlans)")
    ablate.add_argument("-f", default="0", help="fold (default 0)")
    ablate.add_argument("--table", default="all", choices=("2", "3", "fig5", "ctd", "all"),
                        help="which ablation (default all)")
    ablate.add_argument("-i", required=True, help="test images folder (nnU-Net raw naming, e.g. imagesTs)")
    ablate.add_argument("-l", required=True, help="test labels folder (e.g. labelsTs)")
    ablate.add_argument("-o", required=True, help="output folder: one nnUNet_results per seed, evaluation, tables; "
                                                  "re-running keeps what is finished")
    ablate.add_argument("-device", "--device", default="cuda", choices=("cpu", "cuda"), help="default cuda")
    ablate.add_argument("--seeds", type=int, default=1, help="independent trainings of every row (default 1)")
    ablate.add_argument("--budget", default="paper", choices=("paper", "gpu", "cpu", "smoke"),
                        help="schedule of every stage: paper (default: 1000/600/1000 epochs), gpu, cpu (16/6/16 epochs "
                             "of 12 iterations), smoke (tests; learns nothing)")
    ablate.add_argument("--disable-tta", action="store_true", help="predict without mirroring")
    ablate.add_argument("--dry-run", action="store_true",
                        help="list every training per seed (and which are finished) with its epochs; train nothing")
    ablate.set_defaults(func=_cmd_ablate)

    bench = sub.add_parser("benchmark", help="training-step time and memory, and prediction time, of the DSMM "
                                             "trainers next to stock nnU-Net on one plan and device")
    bench.add_argument("-d", help="dataset ID or name in nnUNet_preprocessed (use its plans)")
    bench.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    bench.add_argument("-p", default="DSMMPlans", help="plans identifier (default DSMMPlans)")
    bench.add_argument("--synthetic-plan", metavar="NAME",
                       help="a built-in plan instead of -d: brats (nnU-Net's BraTS plan, GPU-sized) or cpu-small")
    bench.add_argument("-device", "--device", default="cuda", choices=("cpu", "cuda"), help="default cuda")
    bench.add_argument("--json", help="write every figure, the device and the versions to this JSON file")
    bench.add_argument("-tr", action="append",
                       help="DSMM trainer to compare with nnUNetTrainer; repeat for several (default "
                            "DSMMPretrainTrainer and DSMMTrainer)")
    bench.add_argument("--steps", type=int, default=10, help="timed training steps per trainer (default 10)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps per trainer first (default 3)")
    bench.add_argument("--batch-size", type=int, help="batch size for every trainer (default: the plan's)")
    bench.add_argument("--complete-share", type=float, default=0.0,
                       help="share of random samples with every modality (default 0: each misses 1 to M-1, the "
                            "costliest case for DSMMTrainer)")
    bench.add_argument("--real-batches", action="store_true",
                       help="feed batches from nnU-Net's data loader (needs -d with preprocessed data)")
    bench.add_argument("--no-prediction", action="store_true", help="skip the prediction benchmark")
    bench.add_argument("--prediction-repeats", type=int, default=3, help="timed predictions per model (default 3)")
    bench.add_argument("--disable-tta", action="store_true", help="predict without mirroring")
    bench.add_argument("--combinations", action="store_true",
                       help="also time all 2^M - 1 channel combinations of the case with the DSMMTrainer model: one "
                            "at a time and batched as evaluate predicts them, against one stock prediction")
    bench.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    bench.set_defaults(func=_cmd_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand; an error of ours is printed (no traceback) and exits with 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DSMMError as error:
        print(str(error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
