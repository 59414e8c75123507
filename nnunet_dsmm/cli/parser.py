"""The ``nnunet_dsmm`` argument parser: one subparser per command, with nnU-Net's option spellings."""

from __future__ import annotations

import argparse
from importlib import metadata

from nnunet_dsmm.cli.arguments import FRACTION, NON_NEGATIVE, POSITIVE
from nnunet_dsmm.cli.commands import (
    _cmd_ablate,
    _cmd_benchmark,
    _cmd_check,
    _cmd_convert,
    _cmd_demo,
    _cmd_evaluate,
    _cmd_recover,
    _cmd_synth,
)
from nnunet_dsmm.cli.training import BUDGET_HELP, BUDGETS, add_executor_options, add_training_commands
from nnunet_dsmm.data.raw_writer import MISSING_AS
from nnunet_dsmm.experiments.ablation import TABLES
from nnunet_dsmm.nnunet.locations import fold_name
from nnunet_dsmm.trainers.schedules import FINAL_VALIDATION_VARIABLE

#: nnUNetv2_train's and nnUNetv2_predict's -device choices; nnU-Net's default is cuda
DEVICES = ("cuda", "cpu", "mps")


def add_device(parser: argparse.ArgumentParser, default: str = "cuda") -> None:
    """``-device``/``--device`` as nnUNetv2_train and nnUNetv2_predict take it."""
    parser.add_argument("-device", "--device", default=default, choices=DEVICES,
                        help=f"device to run on, as nnUNetv2_train/predict -device (default {default})")


def add_disable_tta(parser: argparse.ArgumentParser, text: str = "predict without mirroring") -> None:
    """``--disable_tta`` as nnUNetv2_predict spells it (``--disable-tta`` kept as an alias)."""
    parser.add_argument("--disable_tta", "--disable-tta", dest="disable_tta", action="store_true", help=text)


def add_data_seed(parser: argparse.ArgumentParser, text: str) -> None:
    """``--data-seed``, the seed of the data (``--seed`` kept as an alias), apart from ``--seeds``."""
    parser.add_argument("--data-seed", type=int, default=0, help=f"{text} (default 0)")
    parser.add_argument("--seed", dest="data_seed", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def version() -> str:
    return f"nnunet-dsmm {metadata.version('nnunet-dsmm')} (nnunetv2 {metadata.version('nnunetv2')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet_dsmm", allow_abbrev=False,
                                     description="nnU-Net v2 plugin for dual-stage missing MRI modalities: train the "
                                                 "stage chain, check, evaluate and recover.")
    parser.add_argument("--version", action="version", version=version())
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an internal error")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, allow_abbrev=False, parents=[debug], **kwargs)

    add_training_commands(command, add_device)
    check = command("check", help="report channel availability and every input error; writes nothing")
    check.add_argument("-d", metavar="DATASET", help="dataset ID or name in nnUNet_raw")
    check.add_argument("--raw", help="path to a raw dataset folder instead of -d")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_check)

    def add_missing_options(p: argparse.ArgumentParser, fm_ratio: float | None) -> None:
        """The simulation of missing modalities; ``fm_ratio`` None: none unless asked for."""
        pattern = p.add_mutually_exclusive_group()
        keep = "default 0.1" if fm_ratio is not None else "default: no simulation, every modality kept"
        pattern.add_argument("--fm-ratio", type=FRACTION, default=fm_ratio,
                             help=f"simulate missing modalities by the paper's rule: this share of training cases "
                                  f"keeps every modality, each other case loses 1 to 3 ({keep})")
        pattern.add_argument("--missing-rates", type=FRACTION, nargs=4, metavar=("FLAIR", "T1", "T1CE", "T2"),
                             help="instead of --fm-ratio: the share of training cases that lack each modality, "
                                  "e.g. 0.2 0.3 0.6 0.2")
        add_data_seed(p, "random seed of the data: the simulated missing modalities" +
                      (" and the images" if fm_ratio is not None else " and a seeded --split"))
        p.add_argument("--missing-as", choices=MISSING_AS, default="absent",
                       help="write a dropped modality as an absent file, an all-zero file, or either at random")
        p.add_argument("--name", help="dataset name written to dataset.json")

    synth = command("synth", help="write a synthetic BraTS-like dataset in nnU-Net raw format")
    synth.add_argument("-o", "--output", required=True, metavar="OUTPUT_FOLDER",
                       help="raw dataset folder, e.g. $nnUNet_raw/Dataset501_Synth")
    synth.add_argument("--num-train", type=POSITIVE, default=20, metavar="N", help="training cases (default 20)")
    synth.add_argument("--num-test", type=NON_NEGATIVE, default=6, metavar="N",
                       help="test cases, all modalities kept (default 6)")
    synth.add_argument("--shape", type=POSITIVE, nargs=3, default=[48, 48, 48], metavar=("X", "Y", "Z"),
                       help="volume size in voxels (default 48 48 48)")
    synth.add_argument("--labels", choices=("regions", "plain"), default="regions",
                       help="regions: WT/TC/ET as nnU-Net trains BraTS (default); plain: oedema, necrosis and "
                            "enhancing tumour as mutually exclusive classes (softmax)")
    add_missing_options(synth, 0.1)
    synth.set_defaults(func=_cmd_synth, name="SyntheticBraTS")

    convert = command("convert-brats", help="convert a BraTS 2018-2021 or 2023/2024 GLI folder to nnU-Net raw format, "
                                            "every modality kept unless a simulation is asked for")
    convert.add_argument("-i", "--input", required=True, metavar="INPUT_FOLDER",
                         help="folder holding the BraTS case folders")
    convert.add_argument("-o", "--output", required=True, metavar="OUTPUT_FOLDER", help="raw dataset folder to create")
    convert.add_argument("--split", metavar="SPLIT",
                         help="test cases to imagesTs/labelsTs, validation cases to splits_final.json: brats2018 "
                              "(199/29/57 cases) or brats2020 (219/50/100), the paper's protocol drawn with "
                              "--data-seed; TRAIN/VAL/TEST counts, e.g. 800/200/251; or a JSON file "
                              '{"train": [...], "val": [...], "test": [...]} of case names (default: every case '
                              "to imagesTr)")
    add_missing_options(convert, None)
    convert.set_defaults(func=_cmd_convert, name="BraTS")

    ev = command("evaluate", help="Dice and HD95 of trained models on every channel combination (Table 1)")
    ev.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name")
    ev.add_argument("-c", required=True, metavar="CONFIGURATION", help="configuration, e.g. 3d_fullres")
    ev.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    ev.add_argument("-tr", action="append", required=True, metavar="TRAINER",
                    help="trainer; repeat for several models (the last one is the reference of the */† markers)")
    ev.add_argument("-f", nargs="+", type=fold_name, default=[0], metavar="FOLD",
                    help="fold(s) of each model, ensembled as nnUNetv2_predict does: e.g. -f 0 1 2 3 4, or -f all "
                         "(default 0, the one fold of a --split conversion; nnUNetv2_predict's is 0 1 2 3 4)")
    ev.add_argument("-i", required=True, metavar="INPUT_FOLDER",
                    help="images folder (nnU-Net raw naming, e.g. imagesTs)")
    ev.add_argument("-l", required=True, metavar="LABELS_FOLDER", help="labels folder (e.g. labelsTs)")
    ev.add_argument("-o", required=True, metavar="OUTPUT_FOLDER",
                    help="output folder; re-running skips predictions already there")
    add_device(ev)
    ev.add_argument("-chk", "--checkpoint", dest="checkpoint", default="checkpoint_final.pth", metavar="CHECKPOINT",
                    help="checkpoint file name, as nnUNetv2_predict -chk (default checkpoint_final.pth)")
    add_disable_tta(ev, "no mirroring test-time augmentation (as nnUNetv2_predict; 8x faster in 3D)")
    ev.add_argument("--combinations-per-batch", type=POSITIVE, metavar="N",
                    help="channel combinations of a case predicted together in each network call (default: all on "
                         "cuda, lower it if the GPU runs out of memory; 4 on cpu, the fastest there)")
    ev.add_argument("--seed-results", nargs="+", metavar="ROOT",
                    help="several independent trainings: one nnUNet_results folder per training (seed), each holding "
                         "every -tr model; reports mean ± std over them and tests over cases averaged over them")
    ev.add_argument("--empty-both", type=float, nargs=2, default=(1.0, 0.0), metavar=("DSC", "HD95"),
                    help="scores when prediction and reference are both empty (BraTS: 1 0)")
    ev.add_argument("--empty-one", type=float, nargs=2, default=(0.0, 373.13), metavar=("DSC", "HD95"),
                    help="scores when exactly one of them is empty (BraTS: 0 373.13)")
    ev.add_argument("--et-min-voxels", type=int, metavar="N",
                    help="also report the enhancing tumour post-processed as in the missing-modality literature's "
                         "evaluation code (RFNet, mmFormer, M3AE, PASSION use 500): a predicted enhancing tumour of "
                         "fewer than N voxels in all is set to background; reported beside the raw one (default off)")
    ev.set_defaults(func=_cmd_evaluate)

    rec = command("recover", help="write the missing modalities that a DSMMTrainer model reconstructs")
    rec.add_argument("-d", required=True, metavar="DATASET", help="dataset ID or name")
    rec.add_argument("-c", required=True, metavar="CONFIGURATION", help="configuration, e.g. 3d_fullres")
    rec.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    rec.add_argument("-tr", default="DSMMTrainer", metavar="TRAINER",
                     help="a trainer with a recovery module (default DSMMTrainer)")
    rec.add_argument("-f", nargs="+", type=fold_name, default=[0], metavar="FOLD",
                     help="fold(s); with several, their reconstructions are averaged (default 0, as evaluate)")
    rec.add_argument("-i", required=True, metavar="INPUT_FOLDER",
                     help="images folder (nnU-Net raw naming); never written to")
    rec.add_argument("-o", required=True, metavar="OUTPUT_FOLDER",
                     help="output folder for CASE_XXXX files, previews and metrics")
    rec.add_argument("--hide", nargs="+", default=[], metavar="CHANNEL",
                     help="hide these real channels (names from dataset.json) and report PSNR/SSIM against them")
    rec.add_argument("--cases", nargs="+", metavar="CASE", help="only these cases")
    add_device(rec)
    rec.add_argument("-chk", "--checkpoint", dest="checkpoint", default="checkpoint_final.pth", metavar="CHECKPOINT",
                     help="checkpoint file name, as nnUNetv2_predict -chk (default checkpoint_final.pth)")
    rec.set_defaults(func=_cmd_recover)

    demo = command("demo", help="the whole method on a synthetic dataset, end to end (about 15 minutes with "
                                "-device cpu)",
                   description=f"The trainings skip nnU-Net's final validation, as the demo evaluates every model on "
                               f"its test cases; {FINAL_VALIDATION_VARIABLE}=1 keeps it.")
    demo.add_argument("-o", "--output", default="dsmm_demo", metavar="OUTPUT_FOLDER",
                      help="a new folder, or that of an earlier demo run with the same settings to resume it "
                           "(default ./dsmm_demo)")
    add_device(demo)
    demo.add_argument("--budget", choices=("cpu", "gpu", "smoke"),
                      help="data size, network width and schedules (default: cpu with -device cpu, else gpu). cpu: "
                           "about 15 minutes on 2 cores; gpu: larger; smoke: a few minutes, learns nothing, for tests")
    demo.add_argument("--fm-ratio", type=FRACTION, default=0.1, help="full-modal share of training cases (default 0.1)")
    add_data_seed(demo, "random seed of the synthetic data")
    demo.add_argument("--seeds", type=POSITIVE, default=1,
                      help="independent trainings of every model (DSMM_SEED 0..N-1; default 1); the tables show "
                           "mean ± std over them")
    demo.add_argument("--labels", choices=("regions", "plain"), default="regions",
                      help="the synthetic data's labels: BraTS regions (default) or three plain classes")
    demo.set_defaults(func=_cmd_demo)

    ablate = command("ablate", help="train and evaluate the paper's ablation rows (Tables 2-3, Fig. 5) with "
                                           "the stock commands and write the tables",
                     description=f"The trainings skip nnU-Net's final validation, as the tables evaluate every model "
                                 f"on the test cases; {FINAL_VALIDATION_VARIABLE}=1 keeps it.")
    ablate.add_argument("-d", required=True, metavar="DATASET",
                        help="dataset ID or name (planned and preprocessed with DSMMPlanner)")
    ablate.add_argument("-c", required=True, metavar="CONFIGURATION", help="configuration, e.g. 3d_fullres")
    ablate.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    ablate.add_argument("-f", nargs="+", type=fold_name, default=[0], metavar="FOLD",
                        help="fold(s), e.g. -f 0 1 2 3 4 or -f all (default 0, as evaluate): each trained, their "
                             "ensemble evaluated as nnUNetv2_predict does")
    ablate.add_argument("--table", default="all", choices=(*TABLES, "all"),
                        help="which ablation (default all: the paper's tables 2, 3 and fig5; decisive: which "
                             "trainer, with the oracle teacher)")
    ablate.add_argument("-i", required=True, metavar="INPUT_FOLDER",
                        help="test images folder (nnU-Net raw naming, e.g. imagesTs)")
    ablate.add_argument("-l", required=True, metavar="LABELS_FOLDER", help="test labels folder (e.g. labelsTs)")
    ablate.add_argument("-o", required=True, metavar="OUTPUT_FOLDER",
                        help="output folder: one nnUNet_results per seed, evaluation, tables; "
                                                  "re-running keeps what is finished")
    add_device(ablate)
    ablate.add_argument("--seeds", type=POSITIVE, default=1, help="independent trainings of every row (default 1)")
    ablate.add_argument("--budget", default="paper", choices=BUDGETS, metavar="BUDGET",
                        help=f"schedule of every stage: {BUDGET_HELP} (default paper)")
    add_disable_tta(ablate)
    ablate.add_argument("--dry-run", action="store_true",
                        help="list every training per seed and fold (and which are finished) with its epochs, where it "
                             "runs and the estimated device time; train nothing")
    add_executor_options(ablate)
    ablate.set_defaults(func=_cmd_ablate)

    bench = command("benchmark", help="training-step time and memory, and prediction time, of the DSMM "
                                             "trainers next to stock nnU-Net on one plan and device")
    bench.add_argument("-d", metavar="DATASET", help="dataset ID or name in nnUNet_preprocessed (use its plans)")
    bench.add_argument("-c", default="3d_fullres", metavar="CONFIGURATION", help="configuration (default 3d_fullres)")
    bench.add_argument("-p", default="DSMMPlans", metavar="PLANS", help="plans identifier (default DSMMPlans)")
    bench.add_argument("--synthetic-plan", metavar="NAME",
                       help="a built-in plan instead of -d: brats (nnU-Net's BraTS plan, GPU-sized) or cpu-small")
    add_device(bench)
    bench.add_argument("--json", metavar="JSON_FILE",
                       help="write every figure, the device and the versions to this JSON file")
    bench.add_argument("-tr", action="append", metavar="TRAINER",
                       help="DSMM trainer to compare with nnUNetTrainer; repeat for several (default "
                            "DSMMPretrainTrainer and DSMMTrainer)")
    bench.add_argument("--steps", type=POSITIVE, default=10, help="timed training steps per trainer (default 10)")
    bench.add_argument("--warmup", type=NON_NEGATIVE, default=3, help="untimed steps per trainer first (default 3)")
    bench.add_argument("--batch-size", type=POSITIVE, help="batch size for every trainer (default: the plan's)")
    bench.add_argument("--complete-share", type=FRACTION, default=0.0,
                       help="share of random samples with every modality (default 0: each misses 1 to M-1, the "
                            "costliest case for DSMMTrainer)")
    bench.add_argument("--real-batches", action="store_true",
                       help="feed batches from nnU-Net's data loader (needs -d with preprocessed data)")
    bench.add_argument("--no-prediction", action="store_true", help="skip the prediction benchmark")
    bench.add_argument("--prediction-repeats", type=POSITIVE, default=3, help="timed predictions per model (default 3)")
    add_disable_tta(bench)
    bench.add_argument("--combinations", action="store_true",
                       help="also time all 2^M - 1 channel combinations of the case with the DSMMTrainer model: one "
                            "at a time and batched as evaluate predicts them, against one stock prediction")
    bench.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    bench.set_defaults(func=_cmd_benchmark)
    return parser
