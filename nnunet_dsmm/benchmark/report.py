"""The benchmark's report: a readable table on stdout and every figure as JSON."""

from __future__ import annotations

import json
import os
import tempfile

from nnunet_dsmm.benchmark.settings import REFERENCE_TRAINER


def format_report(report: dict) -> str:
    """A readable table of the report's figures, ratios and targets."""
    env, plan = report["environment"], report["plan"]
    gib = 1024**3
    lines = [f"Device {env['device_name']} ({env['device']}, {env['cpu_threads']} CPU threads), torch {env['torch']}, "
             f"nnunetv2 {env['nnunetv2']}, nnunet-dsmm {env['nnunet_dsmm']}",
             f"Plan {plan['source']} {plan['configuration']}: patch {plan['patch_size']}, batch {plan['batch_size']}, "
             f"features {plan['features_per_stage']}; mixed precision: {report['settings']['mixed_precision']}",
             "", f"{'training step':<28}{'median ms':>11}{'x nnU-Net':>11}{'peak GiB':>10}{'x nnU-Net':>11}"]
    for name, entry in report["training"].items():
        peak = entry["peak_memory_bytes"]
        memory = f"{peak / gib:>10.3f}{entry['memory_ratio']:>11.2f}" if peak else f"{'n/a':>10}{'n/a':>11}"
        lines.append(f"{name:<28}{entry['median_ms']:>11.1f}{entry['time_ratio']:>11.2f}{memory}")
    prediction = report["prediction"]
    if prediction:
        lines += ["", f"prediction, one case {prediction['case_shape']} (mirroring "
                      f"{'on' if prediction['use_mirroring'] else 'off'})"]
        for name in (REFERENCE_TRAINER, "DSMMTrainer"):
            lines.append(f"{name:<28}{prediction[name]['median_s']:>10.2f} s{prediction[name]['ratio']:>11.2f}")
    combinations = report.get("combinations")
    if combinations:
        lines += ["", f"all {combinations['combinations']} channel combinations of that case, DSMMTrainer model "
                      f"{'s':>8}{'x one stock prediction':>24}"]
        for name, entry in combinations.items():
            if isinstance(entry, dict):
                label = f"{name} (by {combinations['combinations_per_batch']})" if name.startswith("batched") else name
                lines.append(f"{label:<40}{entry['median_s']:>10.2f} s{entry['ratio']:>22.2f}")
    targets = report["targets"]
    lines += ["", f"targets (GPU): training step <= {targets['training_step_time']}x, peak memory <= "
                  f"{targets['training_peak_memory']}x, prediction <= {targets['prediction_time']}x, all "
                  f"combinations <= {targets['all_combinations_time']}x one stock prediction"]
    return "\n".join(lines)


def write_report(report: dict, path: str) -> None:
    """Write the report as JSON, atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(report, f, indent=2)
    os.replace(f.name, path)
