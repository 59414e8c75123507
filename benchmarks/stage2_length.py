"""Stage-2 length against completion quality: does the teacher do better on φθ's completion than on the
dropped input with its own prompt? Forward passes of trained models, no training.

For one stage-1 model f/T (``DSMMTeacherTrainer``) and mask-reconstruction pre-trainings φθ
(``DSMMPretrainTrainer``) of different lengths, on complete test cases with every channel combination
made by zeroing channels:

- the completion: PSNR and SSIM inside the brain of each missing channel (normalised space, as
  ``nnunet_dsmm recover`` reports them), averaged over the combinations that miss it;
- T's Dice (mean over the foreground regions or classes) on x̂_full (the dropped input completed by φθ,
  all-modalities prompt) and on the dropped input with its own prompt, averaged over the 14 incomplete
  combinations and over the 7 without T1ce.

Usage: python benchmarks/stage2_length.py DATASET CONFIGURATION IMAGES LABELS OUT.json TEACHER_ROOT \
    LABEL=PRETRAIN_ROOT [LABEL=PRETRAIN_ROOT ...]
(each ROOT an ``nnUNet_results`` folder; ``nnUNet_preprocessed`` set as for training).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from ctd_probes import completion_quality, dice, load, prepared_case

from nnunet_dsmm.model.modalities import all_combinations, channel_names
from nnunet_dsmm.model.network import complete_code, unet_features


def main(dataset: str, configuration: str, images: str, labels: str, out: str, teacher_root: str,
         *pretrainings: str) -> None:
    teacher_predictor = load(teacher_root, dataset, "DSMMTeacherTrainer", configuration)
    teacher = teacher_predictor.network.eval()
    phis = {label: load(root, dataset, "DSMMPretrainTrainer", configuration).network.eval()
            for label, root in (item.split("=", 1) for item in pretrainings)}
    dataset_json = teacher_predictor.dataset_json
    has_regions = teacher_predictor.plans_manager.get_label_manager(dataset_json).has_regions
    names = channel_names(dataset_json)
    completers = {label: (lambda v, phi=phi: phi(v)) for label, phi in phis.items()}
    completers["channel mean"] = torch.zeros_like
    cases = sorted(f[: -len(".nii.gz")] for f in os.listdir(labels) if f.endswith(".nii.gz"))
    combinations = [code for code in all_combinations(len(names)) if not all(code)]
    #: completer -> missing channel -> [{"psnr", "ssim"}]; input -> [(T's Dice, has T1ce)]
    quality: dict[str, dict[str, list]] = {}
    teacher_dice: dict[str, list] = {}
    for case in cases:
        x, _, target = prepared_case(teacher_predictor, images, labels, case)
        brain = (x.abs().sum(1)[0] > 0).numpy()
        for code in combinations:
            keep = torch.tensor([code])[..., None, None, None]
            has_t1ce = "T1ce" not in names or code[names.index("T1ce")]
            with torch.no_grad():
                dropped = x * keep
                skips, features = unet_features(teacher.encoder, teacher.decoder, dropped)
                own = teacher.predict(skips, features, keep[..., 0, 0, 0])[0]
                teacher_dice.setdefault("dropped, own prompt", []).append((dice(own, target, has_regions), has_t1ce))
                for label, complete in completers.items():
                    completed = dropped + complete(dropped) * ~keep
                    for c in np.flatnonzero(~np.array(code)):
                        quality.setdefault(label, {}).setdefault(names[c], []).append(
                            completion_quality(x[0, c].numpy(), completed[0, c].numpy(), brain))
                    skips, features = unet_features(teacher.encoder, teacher.decoder, completed)
                    logits = teacher.predict(skips, features, complete_code(x))[0]
                    teacher_dice.setdefault(f"x_full {label}", []).append((dice(logits, target, has_regions),
                                                                            has_t1ce))
    report = {
        "cases": len(cases), "combinations": len(combinations),
        "completion": {label: {channel: {m: float(np.mean([e[m] for e in entries])) for m in ("psnr", "ssim")}
                               for channel, entries in channels.items()} for label, channels in quality.items()},
        "teacher_dice": {key: {"incomplete": float(np.mean([d for d, _ in values])),
                               "without T1ce": float(np.mean([d for d, t in values if not t]))}
                         for key, values in teacher_dice.items()},
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
