"""``nnunet_dsmm demo``: the whole method on the embedded synthetic default, end to end.

Synthesise a BraTS-like dataset with dual-stage missing modalities, check it, plan and
preprocess with the stock command, train the baseline (stage 1), pre-training (stage 2),
DSMMTrainer (stage 3) and the epoch-matched baseline (as many epochs as stages 2 + 3) with a
schedule and a network sized for the budget, once per seed (independent trainings), evaluate the
models on every combination (mean ± std over seeds, paired Wilcoxon over cases), recover a hidden
modality, and draw Fig.-4-style overlays. Every step runs the real command as a subprocess with its
own nnU-Net folders under the output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_dsmm.data.raw_writer import MANIFEST_FILE
from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.evaluation import results
from nnunet_dsmm.evaluation.evaluate import seed_label
from nnunet_dsmm.evaluation.reporting import draw_case, draw_overlays, summary_markdown
from nnunet_dsmm.experiments.executors import train_seed
from nnunet_dsmm.experiments.experiment import STUDY_ENVIRONMENT, results_root, run_logged, say, trainings_for
from nnunet_dsmm.experiments.request import DemoRequest
from nnunet_dsmm.model.modalities import all_combinations, channel_names, combination_name
from nnunet_dsmm.trainers.schedules import SCHEDULES, Schedule

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_DSMMDemo"
CONFIGURATION = "3d_demo"
#: the models the demo compares, in the order of its tables (the last is the reference of the tests)
BASELINE, MATCHED_BASELINE, DSMM = "DSMMBaselineTrainer", "DSMMBaselineEpochMatchedTrainer", "DSMMTrainer"


class DemoError(DSMMError, RuntimeError):
    """The demo cannot start (output folder in use)."""


#: in the output folder: the demo's settings and the steps it finished, to resume it
STATE_FILE = "demo_state.json"


def resumable_state(out_dir: str, settings: dict) -> dict:
    """The state of an earlier demo run in ``out_dir`` with the same ``settings`` (a new state when
    ``out_dir`` is empty or absent); a ``DemoError`` when the folder holds something else."""
    state_file = os.path.join(out_dir, STATE_FILE)
    if not (os.path.isdir(out_dir) and os.listdir(out_dir)):
        return {"settings": settings, "done": []}
    if not os.path.isfile(state_file):
        raise DemoError(f"nnunet-dsmm: demo output folder {out_dir} is not empty and holds no demo run "
                        f"({STATE_FILE}); choose a new output folder")
    with open(state_file) as f:
        state = json.load(f)
    if state["settings"] != settings:
        raise DemoError(f"nnunet-dsmm: demo output folder {out_dir} holds a demo run with other settings "
                        f"({state['settings']}, asked {settings}); run with its settings to resume it, or choose a "
                        f"new output folder")
    _say(f"resuming the demo run in {out_dir}: {', '.join(state['done']) or 'no step'} finished; finished "
         f"trainings are kept, interrupted ones continued")
    return state


def check_device(device: str) -> None:
    """Stop before anything is written when the device asked for (cuda by default, as in nnU-Net) is absent."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise DemoError("nnunet-dsmm: the demo runs on -device cuda by default (as nnU-Net's commands), but no "
                        "CUDA device is available here; run it on the CPU with: nnunet_dsmm demo -device cpu ...")


@dataclass(frozen=True)
class DemoBudget:
    """Size of the synthetic data and the network, and the schedule (``schedules.SCHEDULES``)."""

    shape: int
    num_train: int
    num_test: int
    max_features: int
    mirroring: bool
    schedule: Schedule


BUDGETS = {
    "cpu": DemoBudget(shape=40, num_train=24, num_test=10, max_features=64, mirroring=False,
                      schedule=SCHEDULES["cpu"]),
    #: the whole demo in a few minutes, for tests: nothing is learned
    "smoke": DemoBudget(shape=32, num_train=8, num_test=6, max_features=32, mirroring=False,
                        schedule=SCHEDULES["smoke"]),
    "gpu": DemoBudget(shape=64, num_train=60, num_test=10, max_features=320, mirroring=True,
                      schedule=SCHEDULES["gpu"]),
}


def _say(message: str) -> None:
    say(message, "nnunet_dsmm demo")


def add_demo_configuration(plans_file: str, max_features: int) -> None:
    """Add ``3d_demo`` to the plans: 3d_fullres (same preprocessed data) with features capped."""
    with open(plans_file) as f:
        plans = json.load(f)
    architecture = json.loads(json.dumps(plans["configurations"]["3d_fullres"]["architecture"]))
    kwargs = architecture["arch_kwargs"]
    kwargs["features_per_stage"] = [min(f, max_features) for f in kwargs["features_per_stage"]]
    plans["configurations"][CONFIGURATION] = {"inherits_from": "3d_fullres", "architecture": architecture}
    with open(plans_file, "w") as f:
        json.dump(plans, f, indent=2)


def run_demo(request: DemoRequest) -> dict:
    """The request's ``data_seed`` makes the data; its ``seeds`` independent trainings of every model
    (``DSMM_SEED`` 0 .. seeds - 1)."""
    device, budget_name, fm_ratio, data_seed = request.device, request.budget, request.fm_ratio, request.data_seed
    labels, num_seeds = request.labels, request.seeds
    if num_seeds < 1:
        raise DemoError(f"nnunet-dsmm: --seeds must be at least 1, got {num_seeds}")
    budget = BUDGETS[budget_name]
    out_dir = os.path.abspath(request.out_dir)
    state = resumable_state(out_dir, {"budget": budget_name, "fm_ratio": fm_ratio, "seed": data_seed,
                                      "labels": labels})
    check_device(device)
    start = time.time()
    folders = {k: os.path.join(out_dir, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    logs, figures = os.path.join(out_dir, "logs"), os.path.join(out_dir, "figures")
    for path in (*folders.values(), logs, figures):
        os.makedirs(path, exist_ok=True)
    with open(os.path.join(out_dir, STATE_FILE), "w") as f:
        json.dump(state, f, indent=2)
    env = {**STUDY_ENVIRONMENT, **os.environ, **folders, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": os.environ.get(
        "nnUNet_n_proc_DA", "1" if device == "cpu" else "8"), **budget.schedule.environment()}
    if "DSMM_TEXT_ENCODER" not in os.environ and "DSMM_CLIP_PRETRAINED" not in os.environ:
        env["DSMM_TEXT_ENCODER"] = "untrained"
        _say("OFFLINE: no CLIP weights configured, so the text encoder is an UNTRAINED open_clip tower "
             "(DSMM_TEXT_ENCODER=untrained): prompts tell combinations apart but carry no language prior. "
             "Set DSMM_CLIP_PRETRAINED=/path/to/checkpoint for the paper's setting.")
    raw = os.path.join(folders["nnUNet_raw"], DATASET_NAME)
    timings = {}

    def finish(name: str) -> None:
        state["done"].append(name)
        with open(os.path.join(out_dir, STATE_FILE), "w") as f:
            json.dump(state, f, indent=2)

    def step(name: str, args: list[str], **extra_env: str) -> None:
        _say(f"{name} ...")
        t = time.time()
        run_logged(args, {**env, **extra_env}, os.path.join(logs, name.replace(" ", "_") + ".log"))
        timings[name] = round(time.time() - t, 1)
        _say(f"{name} done in {timings[name]:.0f} s")

    if "synthesise" not in state["done"]:
        shutil.rmtree(raw, ignore_errors=True)  # what an interrupted synthesis left
        step("synthesise", ["nnunet_dsmm", "synth", "-o", raw, "--num-train", str(budget.num_train), "--num-test",
                            str(budget.num_test), "--shape", *[str(budget.shape)] * 3, "--fm-ratio", str(fm_ratio),
                            "--data-seed", str(data_seed), "--name", "DSMMDemo", "--labels", labels])
        finish("synthesise")
    check = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnunet_dsmm"), "check", "--raw", raw,
                            "--no-progress", "--json"], env=env, capture_output=True, text=True, check=True)
    report = json.loads(check.stdout)
    training = report["splits"]["imagesTr"]
    _say(f"check: no errors; training FM ratio {100 * training['full_modal_ratio']:.0f}%, combinations:")
    for entry in training["combinations"]:
        print(f"    {combination_name(entry['available'], report['channels']):<22} {entry['count']} cases", flush=True)
    if "plan and preprocess" not in state["done"]:
        step("plan and preprocess", ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-fpe",
                                     "DSMMFingerprintExtractor", "-pl", "DSMMPlanner", "-c", "3d_fullres", "-np", "2",
                                     "-npfp", "2", "--no_pbar"])
        add_demo_configuration(os.path.join(folders["nnUNet_preprocessed"], DATASET_NAME, "DSMMPlans.json"),
                               budget.max_features)
        finish("plan and preprocess")
    models = [BASELINE, MATCHED_BASELINE, DSMM]
    # the baseline, the same trained as long as stages 2 + 3, and stages 1 (f/T), 2 and 3
    trainings = trainings_for(models, budget.schedule)
    for k in range(num_seeds):
        t = time.time()
        trained = train_seed(trainings, DATASET_NAME, CONFIGURATION, 0, "DSMMPlans", device, env, out_dir, k, logs,
                             _say)
        timings.update({f"seed {k}: {trainer}": value for trainer, value in trained.items()})
        timings[f"train seed {k}"] = round(time.time() - t, 1)
    for trainer in models + ["DSMMTeacherTrainer", "DSMMPretrainTrainer"]:
        curves = os.path.join(folders["nnUNet_results"], DATASET_NAME, f"{trainer}__DSMMPlans__{CONFIGURATION}",
                              "fold_0", "progress.png")
        shutil.copy(curves, os.path.join(figures, f"training_curves_{trainer}.png"))
    evaluation = os.path.join(out_dir, "evaluation")
    several = ["--seed-results", *[results_root(out_dir, k) for k in range(num_seeds)]] if num_seeds > 1 else []
    step(f"evaluate 15 combinations ({num_seeds} seed{'s' if num_seeds > 1 else ''})",
         ["nnunet_dsmm", "evaluate", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-p", "DSMMPlans",
          *[a for m in models for a in ("-tr", m)], "-f", "0", "-i", os.path.join(raw, "imagesTs"),
          "-l", os.path.join(raw, "labelsTs"), "-o", evaluation, "-device", device, *several]
         + ([] if budget.mirroring else ["--disable_tta"]))
    with open(os.path.join(raw, MANIFEST_FILE)) as f:
        case = json.load(f)["test_cases"][0]
    recovered = os.path.join(out_dir, "recovered")
    step("recover hidden T1ce", ["nnunet_dsmm", "recover", "-d", str(DATASET_ID), "-c", CONFIGURATION,
                                 "-i", os.path.join(raw, "imagesTs"), "-o", recovered, "--hide", "T1ce",
                                 "--cases", case, "-device", device])
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    combinations = [combination_name(code, channel_names(dataset_json)) for code in all_combinations(4)]
    first = seed_label(0) if num_seeds > 1 else ""
    predictions = {model: {combo: os.path.join(evaluation, "predictions", first, model, combo, f"{case}.nii.gz")
                           for combo in combinations} for model in (BASELINE, DSMM)}
    channels = range(len(dataset_json["channel_names"]))
    draw_case([os.path.join(raw, "imagesTs", f"{case}_{c:04d}.nii.gz") for c in channels],
              os.path.join(raw, "labelsTs", f"{case}.nii.gz"), dataset_json, os.path.join(figures, "case.png"))
    overlays = draw_overlays(os.path.join(raw, "imagesTs", f"{case}_0000.nii.gz"),
                             os.path.join(raw, "labelsTs", f"{case}.nii.gz"), predictions, dataset_json,
                             os.path.join(figures, "overlays"))
    shutil.copy(os.path.join(evaluation, "heatmap.png"), os.path.join(figures, "heatmap.png"))
    shutil.copy(os.path.join(recovered, f"{case}_recovery_preview.png"), os.path.join(figures, "recovery_preview.png"))
    result = results.load(evaluation)
    timings["total"] = round(time.time() - start, 1)
    means = {m: float(np.mean([result.results[m][r].average.dsc for r in result.regions])) for m in result.models}
    report = {"device": device, "budget": asdict(budget), "fm_ratio": fm_ratio, "seed": data_seed,
              "labels": labels, "seeds": num_seeds, "timings_s": timings,
              "mean_dsc_over_regions_and_combinations": means,
              "mean_dsc_std_over_seeds": {m: float(np.mean([result.results[m][r].average.dsc_std
                                                           for r in result.regions])) for m in result.models},
              "wilcoxon_against_dsmm": result.to_json()["wilcoxon"],
              "text_encoder": env.get("DSMM_TEXT_ENCODER", "pretrained")}
    with open(os.path.join(out_dir, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("\n" + summary_markdown(result))
    print(f"Mean DSC over the 15 combinations and 3 regions ({num_seeds} seed{'s' if num_seeds > 1 else ''}): " +
          ", ".join(f"{m} {100 * v:.2f}" for m, v in means.items()))
    print(f"\nFinished in {timings['total'] / 60:.1f} min. Outputs in {out_dir}:")
    for label, path in (("table", os.path.join(evaluation, "summary.md")),
                        ("per-case results", os.path.join(evaluation, "results.csv")),
                        ("heatmap", os.path.join(figures, "heatmap.png")),
                        ("a test case's four channels and labels", os.path.join(figures, "case.png")),
                        ("overlays (one per combination)", os.path.dirname(overlays[0])),
                        ("recovered modality preview", os.path.join(figures, "recovery_preview.png")),
                        ("recovered NIfTI", recovered),
                        ("training curves", figures), ("logs", logs),
                        ("report", os.path.join(out_dir, "demo_report.json"))):
        print(f"  {label:32s} {path}")
    return report
