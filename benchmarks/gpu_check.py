"""The prepared GPU check: what one short run on a lent GPU can tell us, in one JSON and one log.

Run through ``benchmarks/gpu_check.sh`` (which sets up the carried packages on the GPU machine).
Steps run in order of importance and each under a time limit; a step that would pass the total
budget is skipped and recorded as skipped, a failing step is recorded with the tail of its output
and the check goes on. ``--dry-run`` (CI, no GPU) parses, synthesises a small dataset, writes the
BraTS plan for it and records the commands it would run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DATASET_ID = 997
DATASET = f"Dataset{DATASET_ID}_GPUCheck"
#: BraTS-size cases: 5 training cases (nnU-Net's 5-fold split needs 5) and 2 test cases
BRATS_SHAPE = (155, 240, 240)
DRY_RUN_SHAPE = (24, 24, 24)
STAGES = ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer")
ALL_TRAINERS = ("DSMMPretrainTrainer", "DSMMTrainer", "DSMMTrainerLowMemory")


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    env: dict[str, str] = field(default_factory=dict)
    #: a JSON file the step writes, merged into the check's JSON
    report: str | None = None


def benchmark(name: str, out: Path, timeout_s: int, *options: str, compile_: bool = False) -> Step:
    path = out / f"{name}.json"
    return Step(name, ["nnunet_dsmm", "benchmark", "--synthetic-plan", "brats", "-device", "cuda", "--json", str(path),
                       *options], timeout_s, {"nnUNet_compile": "1" if compile_ else "0"}, str(path))


def plan_steps(out: Path, work: Path, gpus: int) -> list[Step]:
    """Every step of the check, most important first."""
    trainers = [arg for name in ALL_TRAINERS for arg in ("-tr", name)]
    raw = work / "nnUNet_raw" / DATASET
    smoke = {"DSMM_NUM_EPOCHS": "1", "DSMM_NUM_ITERATIONS_PER_EPOCH": "10", "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": "2",
             "nnUNet_compile": "1"}
    steps = [
        benchmark("benchmark_eager_worst", out, 150, *trainers, "--prediction-repeats", "3"),
        benchmark("benchmark_eager_combinations", out, 90, "-tr", "DSMMTrainer", "--steps", "1", "--warmup", "0",
                  "--combinations", "--disable-tta", "--prediction-repeats", "1"),
    ]
    for stage in STAGES:
        steps.append(Step(f"train_{stage}", ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-p", "DSMMPlans",
                                             "-tr", stage], 150, smoke))
    test_images = str(work / "test_images")
    steps += [
        Step("predict", ["nnUNetv2_predict", "-i", test_images, "-o", str(work / "predictions"), "-d", str(DATASET_ID),
                         "-c", "3d_fullres", "-p", "DSMMPlans", "-tr", "DSMMTrainer", "-f", "0"], 90),
        Step("evaluate", ["nnunet_dsmm", "evaluate", "-d", str(DATASET_ID), "-c", "3d_fullres", "-tr",
                          "DSMMTeacherTrainer", "-tr", "DSMMTrainer", "-f", "0", "-i", str(raw / "imagesTs"), "-l",
                          str(raw / "labelsTs"), "-o", str(out / "gpu_check_evaluation"), "-device", "cuda",
                          "--disable-tta"], 120),
        benchmark("benchmark_compiled_worst", out, 240, "-tr", "DSMMTrainer", "--no-prediction", compile_=True),
        benchmark("benchmark_eager_1pct_fm", out, 120, *trainers, "--complete-share", "0.01", "--no-prediction"),
        # the rest of the matrix, when the budget allows (compiling every trainer takes minutes)
        benchmark("benchmark_compiled_1pct_fm_all", out, 360, *trainers, "--complete-share", "0.01",
                  "--no-prediction", compile_=True),
    ]
    if gpus >= 2:
        for stage in STAGES:
            steps.append(Step(f"train_{stage}_2gpus", ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "1", "-p",
                                                       "DSMMPlans", "-tr", stage, "-num_gpus", "2"], 180, smoke))
    return steps


def run(command: list[str], env: dict[str, str], timeout_s: int, log) -> tuple[int | None, float, str]:
    """Exit status (None: timed out), seconds and the last 4000 characters of the output."""
    start = time.time()
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    try:
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout_s)
        output, rc = result.stdout, result.returncode
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        rc = None
    log.write(output)
    return rc, time.time() - start, output[-4000:]


def prepare_dataset(work: Path, shape: tuple[int, int, int], env: dict[str, str], log) -> dict:
    """Synthesise the dataset, fingerprint it, write the BraTS plan (nnunet_dsmm benchmark's ``brats``)
    for it and preprocess with the stock command; complete test images with T1 absent for prediction."""
    from nnunet_dsmm.benchmark.plans import SYNTHETIC_CONFIGURATION, synthetic_plans

    raw = work / "nnUNet_raw" / DATASET
    steps = {}
    for name, command in (
            ("synthesise", ["nnunet_dsmm", "synth", "-o", str(raw), "--num-train", "5", "--num-test", "2", "--shape",
                            *map(str, shape), "--fm-ratio", "0.2", "--name", "GPUCheck"]),
            ("fingerprint", ["nnUNetv2_extract_fingerprint", "-d", str(DATASET_ID), "-fpe",
                             "DSMMFingerprintExtractor", "-np", "4"])):
        rc, seconds, tail = run(command, env, 600, log)
        steps[name] = {"rc": rc, "seconds": round(seconds, 1), "output_tail": tail if rc else ""}
        if rc != 0:
            return steps
    preprocessed = work / "nnUNet_preprocessed" / DATASET
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    plans, _ = synthetic_plans("brats")
    plans["dataset_name"] = DATASET
    plans["foreground_intensity_properties_per_channel"] = fingerprint["foreground_intensity_properties_per_channel"]
    plans["configurations"][SYNTHETIC_CONFIGURATION]["data_identifier"] = "DSMMPlans_3d_fullres"
    (preprocessed / "DSMMPlans.json").write_text(json.dumps(plans, indent=2))
    shutil.copy(raw / "dataset.json", preprocessed / "dataset.json")
    rc, seconds, tail = run(["nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", "DSMMPlans", "-c",
                             SYNTHETIC_CONFIGURATION, "-np", "4"], env, 600, log)
    steps["preprocess"] = {"rc": rc, "seconds": round(seconds, 1), "output_tail": tail if rc else ""}
    test_images = work / "test_images"
    test_images.mkdir(exist_ok=True)
    for image in sorted((raw / "imagesTs").glob("*.nii.gz")):
        if not image.name.endswith("_0001.nii.gz"):
            shutil.copy(image, test_images / image.name)
    return steps


def environment() -> dict:
    """Device, versions and GPU count, read in a child process so that this one never touches CUDA."""
    code = ("import json, platform, torch, importlib.metadata as m\n"
            "gpus = torch.cuda.device_count()\n"
            "print(json.dumps({'gpus': gpus, 'device_name': torch.cuda.get_device_name(0) if gpus else None,\n"
            "  'torch': torch.__version__, 'cuda': torch.version.cuda, 'python': platform.python_version(),\n"
            "  'nnunetv2': m.version('nnunetv2'), 'nnunet_dsmm': m.version('nnunet-dsmm')}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return {"gpus": 0, "error": result.stderr[-2000:]}
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the prepared GPU check (see benchmarks/README.md)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for gpu_check.json, gpu_check.log and "
                                                                   "the benchmark JSONs (default benchmarks/results)")
    parser.add_argument("--work", help="working folder for the synthetic dataset and models (default: a new one "
                                       "under /tmp, removed at the end)")
    parser.add_argument("--budget-s", type=int, default=450, help="total seconds; steps that would pass it are "
                                                                   "skipped (default 450)")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: synthesise a tiny dataset, write and check "
                                                               "the plan, record the steps without running them")
    args = parser.parse_args(argv)
    start = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"dsmm_gpu_check_{os.getpid()}"
    work = Path(args.work).resolve() if args.work else scratch
    folders = {k: str(work / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env = {**os.environ, **folders, "DSMM_TEXT_ENCODER": "untrained", "nnUNet_def_n_proc": "4"}
    info = environment()
    if not args.dry_run and not info.get("gpus"):
        print("gpu_check: no CUDA device is visible (use --dry-run without a GPU)", file=sys.stderr)
        return 2
    report = {"machine": platform.node(), "environment": info, "budget_s": args.budget_s, "dry_run": args.dry_run,
              "steps": {}}
    with open(out / "gpu_check.log", "w") as log:
        report["dataset"] = prepare_dataset(work, DRY_RUN_SHAPE if args.dry_run else BRATS_SHAPE, env, log)
        prepared = all(step["rc"] == 0 for step in report["dataset"].values())
        for step in plan_steps(out, work, info.get("gpus", 0)) if prepared else []:
            entry = {"command": " ".join(step.command), "env": step.env, "timeout_s": step.timeout_s}
            elapsed = time.time() - start
            if args.dry_run:
                entry["status"] = "not run (dry run)"
            elif elapsed + step.timeout_s > args.budget_s:
                entry["status"] = f"skipped: {elapsed:.0f} s spent, its limit would pass the {args.budget_s} s budget"
            else:
                rc, seconds, tail = run(step.command, {**env, **step.env}, step.timeout_s, log)
                entry.update(status="ok" if rc == 0 else ("timed out" if rc is None else f"failed ({rc})"),
                             seconds=round(seconds, 1), output_tail=tail if rc != 0 else "")
                if rc == 0 and step.report and Path(step.report).is_file():
                    entry["report"] = json.loads(Path(step.report).read_text())
            report["steps"][step.name] = entry
            print(f"gpu_check: {step.name}: {entry['status']}", flush=True)
    report["total_s"] = round(time.time() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: done in {report['total_s']} s; {out / 'gpu_check.json'}, {out / 'gpu_check.log'}")
    failed = [name for name, step in report["dataset"].items() if step["rc"] != 0]
    if failed:
        print(f"gpu_check: preparing the dataset failed at {failed[0]}; see {out / 'gpu_check.log'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
