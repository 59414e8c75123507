"""Does the phantom behave like BraTS? Train nnU-Net + modality dropout (``DSMMBaselineTrainer``) and
stage 1 alone (``DSMMSingleStageTrainer``) on the phantom, evaluate both on the 15 combinations of
available modalities, and compare each model's profile with the paper's Table 1.

    python benchmarks/phantom_realism.py -o realism_run [--seeds 3] [--budget cpu] [-device cpu]

Every step runs the stock command in a subprocess with nnU-Net folders under the output folder;
finished trainings are kept, so a second call with the same folder resumes. Writes
``realism.md``, ``realism.json`` and ``realism.png`` (the profiles as heatmaps beside Table 1's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from nnunet_dsmm.evaluation.brats_profile import (
    GAPS,
    REGIONS,
    compare_with_table1,
    gap_name,
    model_profile,
    table1,
    table1_profile,
)
from nnunet_dsmm.experiments.demo import CONFIGURATION, add_demo_configuration
from nnunet_dsmm.experiments.executors import train_seed
from nnunet_dsmm.experiments.experiment import STUDY_ENVIRONMENT, results_root, run_logged, say, trainings_for
from nnunet_dsmm.trainers.schedules import SCHEDULES

DATASET_ID = 602
DATASET = f"Dataset{DATASET_ID}_PhantomRealism"
MODELS = ("DSMMBaselineTrainer", "DSMMSingleStageTrainer")
#: the data: as large as the CPU budget allows (the demo's network, features capped at 64)
NUM_TRAIN, NUM_TEST, SHAPE, MAX_FEATURES = 32, 12, 48, 64
#: the bars a BraTS-like profile must meet (see docs/results/phantom.md)
BARS = {"rho_all": 0.9, "rho_region": 0.7, "enhancing tumor: T1ce gap": 20.0, "tumor core: T1ce gap": 8.0,
        "whole tumor: FLAIR gap": 3.0, "whole tumor: T1ce gap": 3.0}


def meets_bars(comparison) -> dict[str, bool]:
    gaps = comparison.gaps
    return {"ρ over 45 cells ≥ 0.9": comparison.rho_all >= BARS["rho_all"],
            **{f"ρ {r} ≥ 0.7": comparison.rho_per_region[r] >= BARS["rho_region"] for r in REGIONS},
            "ET T1ce gap ≥ 20": gaps["enhancing tumor: T1ce gap"] >= BARS["enhancing tumor: T1ce gap"],
            "TC T1ce gap ≥ 8": gaps["tumor core: T1ce gap"] >= BARS["tumor core: T1ce gap"],
            "WT FLAIR gap ≥ 3": gaps["whole tumor: FLAIR gap"] >= BARS["whole tumor: FLAIR gap"],
            "WT T1ce gap within ±3": abs(gaps["whole tumor: T1ce gap"]) <= BARS["whole tumor: T1ce gap"]}


def draw(profiles: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(table1_profile()[REGIONS[0]])
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.2 * len(profiles), 3.4), squeeze=False)
    for ax, (title, profile) in zip(axes[0], profiles.items()):
        grid = np.array([[next(v for c, v in profile[r].items() if set(c.split("+")) == set(k.split("+")))
                          for k in order] for r in REGIONS])
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(3), ["WT", "TC", "ET"])
        ax.set_xticks(range(15), [k.replace("FLAIR+T1+T1ce+T2", "all") for k in order], rotation=90, fontsize=7)
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 60 else "black")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="DSC %")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def report_markdown(comparisons: dict, reference_gaps: dict, args) -> str:
    lines = [f"Phantom: {NUM_TRAIN} training cases ({SHAPE}³, FM ratio {args.fm_ratio}), {NUM_TEST} test cases, "
             f"data seed {args.data_seed}; budget {args.budget}, {args.seeds} trainings per model, fold 0.", "",
             "| | Table 1 (mean of 6 methods) | " + " | ".join(f"`{m}`" for m in comparisons) + " |",
             "|---|---|" + "---|" * len(comparisons)]
    lines.append("| Spearman ρ, 45 cells | 1 | " + " | ".join(f"{c.rho_all:.2f}" for c in comparisons.values()) + " |")
    for region in REGIONS:
        lines.append(f"| Spearman ρ, {region} | 1 | " +
                     " | ".join(f"{c.rho_per_region[region]:.2f}" for c in comparisons.values()) + " |")
    for region, modality in GAPS:
        name = gap_name(region, modality)
        lines.append(f"| {name} | {reference_gaps[name]:.1f} | " +
                     " | ".join(f"{c.gaps[name]:.1f}" for c in comparisons.values()) + " |")
    lines += ["", "| bar | " + " | ".join(f"`{m}`" for m in comparisons) + " |", "|---|" + "---|" * len(comparisons)]
    bars = {m: meets_bars(c) for m, c in comparisons.items()}
    for bar in next(iter(bars.values())):
        lines.append(f"| {bar} | " + " | ".join("met" if b[bar] else "**not met**" for b in bars.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, help="working folder (resumed when it exists)")
    parser.add_argument("--seeds", type=int, default=3, help="independent trainings per model (default 3)")
    parser.add_argument("--budget", default="cpu", choices=sorted(SCHEDULES), help="schedule (default cpu)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the phantom (default 0)")
    parser.add_argument("--fm-ratio", type=float, default=0.1, help="full-modal share of training cases (0.1)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output)
    folders = {k: os.path.join(out, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    logs = os.path.join(out, "logs")
    for path in (*folders.values(), logs):
        os.makedirs(path, exist_ok=True)
    env = {**STUDY_ENVIRONMENT, **os.environ, **folders, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1",
           **SCHEDULES[args.budget].environment()}
    if "DSMM_CLIP_PRETRAINED" not in env:  # offline: an untrained text tower, as the demo
        env.setdefault("DSMM_TEXT_ENCODER", "untrained")
    raw = os.path.join(folders["nnUNet_raw"], DATASET)
    plans = os.path.join(folders["nnUNet_preprocessed"], DATASET, "DSMMPlans.json")
    if not os.path.isfile(os.path.join(raw, "dataset.json")):
        say("synthesising the phantom ...")
        run_logged(["nnunet_dsmm", "synth", "-o", raw, "--num-train", str(NUM_TRAIN), "--num-test", str(NUM_TEST),
                    "--shape", *[str(SHAPE)] * 3, "--fm-ratio", str(args.fm_ratio), "--data-seed", str(args.data_seed),
                    "--name", "PhantomRealism"], env, os.path.join(logs, "synth.log"))
    if not os.path.isfile(plans):
        say("planning and preprocessing ...")
        run_logged(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-fpe", "DSMMFingerprintExtractor", "-pl",
                    "DSMMPlanner", "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar"], env,
                   os.path.join(logs, "plan.log"))
        add_demo_configuration(plans, MAX_FEATURES)
    trainings = trainings_for(MODELS, SCHEDULES[args.budget])
    for seed in range(args.seeds):
        train_seed(trainings, DATASET, CONFIGURATION, 0, "DSMMPlans", args.device, env, out, seed, logs)
    evaluation = os.path.join(out, "evaluation")
    say("evaluating both models on the 15 combinations ...")
    run_logged(["nnunet_dsmm", "evaluate", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-p", "DSMMPlans",
                *[a for m in MODELS for a in ("-tr", m)], "-f", "0", "-i", os.path.join(raw, "imagesTs"),
                "-l", os.path.join(raw, "labelsTs"), "-o", evaluation, "-device", args.device, "--disable-tta",
                *(["--seed-results", *[results_root(out, k) for k in range(args.seeds)]] if args.seeds > 1 else [])],
               env, os.path.join(logs, "evaluate.log"))
    from nnunet_dsmm.evaluation import results

    result = results.load(evaluation)
    profiles = {m: model_profile(result, m) for m in MODELS}
    comparisons = {m: compare_with_table1(p) for m, p in profiles.items()}
    reference_gaps = next(iter(comparisons.values())).table1_gaps
    markdown = report_markdown(comparisons, reference_gaps, args)
    with open(os.path.join(out, "realism.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out, "realism.json"), "w") as f:
        json.dump({"settings": vars(args), "table1_source": table1()["source"], "profiles": profiles,
                   "table1_mean_profile": table1_profile(),
                   "comparisons": {m: c.to_json() for m, c in comparisons.items()},
                   "bars": {m: meets_bars(c) for m, c in comparisons.items()}}, f, indent=2)
    draw({"BraTS 2018, Table 1 (mean of 6 methods)": table1_profile(),
          **{f"phantom: {m}": p for m, p in profiles.items()}}, os.path.join(out, "realism.png"))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
