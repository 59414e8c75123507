"""What each ``nnunet_dsmm`` subcommand does once its options are parsed."""

from __future__ import annotations

import json
import os
import sys

from nnunet_dsmm.cli.arguments import UsageError


def _cmd_check(args) -> int:
    from nnunet_dsmm.data.check import check_dataset, format_check_report
    from nnunet_dsmm.nnunet.locations import raw_dataset_folder

    if not args.raw and args.d is None:
        raise UsageError("nnunet_dsmm check: give -d DATASET_ID (with nnUNet_raw set) or --raw FOLDER")
    report = check_dataset(args.raw or raw_dataset_folder(args.d), show_progress=not args.no_progress)
    print(json.dumps(report, indent=2) if args.json else format_check_report(report))
    if report["errors"]:
        return 1
    from nnunet_dsmm.model.text_encoder import DEFAULT_TEXT_ENCODER, offline_warning

    warning = offline_warning(DEFAULT_TEXT_ENCODER)  # the data is ready; can this node embed the prompts?
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _cmd_synth(args) -> int:
    from nnunet_dsmm.data.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(shape=tuple(args.shape), num_train=args.num_train, num_test=args.num_test,
                         fm_ratio=args.fm_ratio, missing_rates=args.missing_rates, seed=args.data_seed,
                         missing_as=args.missing_as, labels=args.labels)
    manifest = write_synthetic_dataset(args.output, config, name=args.name)
    full = sum(1 for d in manifest["dropped"].values() if not d)
    print(f"Wrote {args.num_train} training cases ({full} full-modal) and {args.num_test} test cases to "
          f"{args.output}")
    return 0


def _cmd_convert(args) -> int:
    from nnunet_dsmm.data.brats import convert_brats
    from nnunet_dsmm.data.raw_writer import MANIFEST_FILE

    manifest = convert_brats(args.input, args.output, args.fm_ratio, args.data_seed, args.split, args.missing_as,
                             args.name, args.missing_rates)
    reduced = sum(1 for channels in manifest["dropped"].values() if channels)
    print(f"Converted {len(manifest['dropped'])} training cases ({reduced} with modalities removed) and "
          f"{len(manifest['split']['test'])} test cases of {manifest['naming']} to {args.output}; manifest: "
          f"{os.path.join(args.output, MANIFEST_FILE)}")
    return 0


def _cmd_evaluate(args) -> int:
    from nnunet_dsmm.evaluation.evaluate import EmptyMaskConvention, evaluate, seed_label
    from nnunet_dsmm.evaluation.reporting import summary_markdown
    from nnunet_dsmm.nnunet.locations import trained_model_folder

    def models(root: str | None) -> list[tuple[str, str]]:
        return [(trainer, trained_model_folder(args.d, trainer, args.p, args.c, args.f, root)) for trainer in args.tr]

    trainings = {seed_label(i): models(root) for i, root in enumerate(args.seed_results)} if args.seed_results \
        else None
    convention = EmptyMaskConvention(args.empty_both[0], args.empty_both[1], args.empty_one[0], args.empty_one[1])
    result = evaluate(None if trainings else models(None), args.f, args.i, args.l, args.o, args.device, convention,
                      args.checkpoint, use_mirroring=not args.disable_tta,
                      combinations_per_batch=args.combinations_per_batch, trainings=trainings,
                      et_min_voxels=args.et_min_voxels)
    print(summary_markdown(result))
    print(f"Results: {os.path.join(args.o, 'results.csv')}, {os.path.join(args.o, 'summary.json')}, "
          f"{os.path.join(args.o, 'heatmap.png')}; reference model of the */† markers (better/worse, paired Wilcoxon): "
          f"{result.reference_model}")
    return 0


def _cmd_recover(args) -> int:
    from nnunet_dsmm.evaluation.recovery import recover
    from nnunet_dsmm.nnunet.locations import trained_model_folder

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
    from nnunet_dsmm.experiments.demo import run_demo
    from nnunet_dsmm.experiments.request import DemoRequest

    budget = args.budget or ("cpu" if args.device == "cpu" else "gpu")
    run_demo(DemoRequest(args.output, args.device, budget, args.fm_ratio, args.data_seed, args.labels, args.seeds))
    return 0


def _cmd_ablate(args) -> int:
    from nnunet_dsmm.cli.training import executor_options
    from nnunet_dsmm.experiments.ablation import run_ablation
    from nnunet_dsmm.experiments.request import AblationRequest

    request = AblationRequest(args.d, args.c, tuple(dict.fromkeys(args.f)), args.table, args.i, args.l, args.o,
                              args.p, args.device, args.seeds, args.budget, use_mirroring=not args.disable_tta,
                              dry_run=args.dry_run, executor=executor_options(args))
    tables = run_ablation(request)
    if not tables:  # a dry run, or the trainings and the evaluation submitted to SLURM
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
