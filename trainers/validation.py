"""What nnU-Net's per-epoch validation counts from a stage's segmentation: hard true and false
positives and false negatives per foreground class or region, the inputs of its EMA pseudo Dice."""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.utilities.label_handling.label_handling import LabelManager


def pseudo_dice_counts(labels: LabelManager, segmentation: torch.Tensor | list[torch.Tensor] | None,
                       target: torch.Tensor) -> dict[str, np.ndarray]:
    """tp/fp/fn per foreground class or region of the full-resolution output (``segmentation[0]`` with deep
    supervision) against ``target`` (B, 1 or regions + ignore, *spatial), as nnU-Net's validation counts
    them; zeros when the stage segments nothing (``segmentation`` None)."""
    if segmentation is None:
        zeros = np.zeros(labels.num_segmentation_heads - (0 if labels.has_regions else 1))
        return {"tp_hard": zeros, "fp_hard": zeros, "fn_hard": zeros}
    output = segmentation[0] if isinstance(segmentation, list) else segmentation
    if labels.has_regions:
        predicted = (torch.sigmoid(output) > 0.5).long()
    else:
        predicted = torch.zeros(output.shape, device=output.device, dtype=torch.float16)
        predicted.scatter_(1, output.argmax(1)[:, None], 1)
    mask = None
    if labels.has_ignore_label:
        if labels.has_regions:
            mask = ~target[:, -1:] if target.dtype == torch.bool else 1 - target[:, -1:]
            target = target[:, :-1]
        else:
            mask = (target != labels.ignore_label).float()
            target = torch.where(target == labels.ignore_label, 0, target)
    tp, fp, fn, _ = get_tp_fp_fn_tn(predicted, target, axes=[0] + list(range(2, output.ndim)), mask=mask)
    counts = {"tp_hard": tp, "fp_hard": fp, "fn_hard": fn}
    first = 0 if labels.has_regions else 1  # no background Dice with softmax outputs
    return {k: v.detach().cpu().numpy()[first:] for k, v in counts.items()}
