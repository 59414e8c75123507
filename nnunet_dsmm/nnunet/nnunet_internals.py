"""Every use of a private name of nnU-Net (2.8), in one place.

nnU-Net offers no public hook for these. Each use is a small function here, and ``GUARDED`` lists every
private name the package uses or overrides, with the nnU-Net class that must have it;
``tests/nnunet/test_nnunet_internals.py`` checks them, so an nnU-Net that renamed or removed one fails there,
naming it, instead of deep inside a training. Our trainers override two of nnU-Net's private hooks
(``_build_loss``, ``_set_batch_size_and_oversample``): an override of a renamed hook would silently
never run, so they are guarded too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

TRAINER = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer:nnUNetTrainer"
PREDICTOR = "nnunetv2.inference.predict_from_raw_data:nnUNetPredictor"


@dataclass(frozen=True)
class PrivateName:
    """``path`` (dotted attributes) of nnU-Net's class ``owner`` (``module:Class``), or of its built
    instances when ``on_instance``; ``use``: what the package needs it for."""

    owner: str
    path: str
    use: str
    on_instance: bool = False


GUARDED = (
    PrivateName(PREDICTOR, "_internal_maybe_mirror_and_predict",
                "the network (with mirroring) on a batch of tiles: evaluate's batched combinations"),
    PrivateName(TRAINER, "_do_i_compile", "compile the frozen earlier stages as nnU-Net compiles the network"),
    PrivateName(TRAINER, "_get_deep_supervision_scales", "the deep-supervision weights of L_task, test batches"),
    PrivateName(TRAINER, "_build_loss", "overridden in trainers/dsmm.py (L_task); nnU-Net's Dice + CE as L_seg"),
    PrivateName(TRAINER, "_set_batch_size_and_oversample", "overridden in trainers/base.py (the paper's batch size)"),
    PrivateName(TRAINER, "logger.local_logger.my_fantastic_logging",
                "the logged values per epoch, to start a loss term's list", on_instance=True),
)


def mirrored_prediction(predictor: nnUNetPredictor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The predictor's network applied to a batch of tiles, averaged over its mirrored views (if any)."""
    return predictor._internal_maybe_mirror_and_predict


def compiles(trainer: nnUNetTrainer) -> bool:
    """Whether nnU-Net compiles ``trainer``'s network with torch.compile."""
    return trainer._do_i_compile()


def deep_supervision_scales(trainer: nnUNetTrainer) -> list | None:
    """The scale of each deep-supervision output relative to the patch (None without deep supervision)."""
    return trainer._get_deep_supervision_scales()


def nnunet_loss(trainer: nnUNetTrainer):
    """nnU-Net's own loss for ``trainer`` (Dice + CE, or + BCE for regions; deep-supervision wrapped)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer._build_loss(trainer)


def set_batch_size_and_oversample(trainer: nnUNetTrainer) -> None:
    """What ``initialize`` does first: the batch size and foreground oversampling (per DDP rank)."""
    trainer._set_batch_size_and_oversample()


def logged_values(trainer: nnUNetTrainer) -> dict[str, list]:
    """nnU-Net's logger's values by key (one entry per epoch), as written into its checkpoints."""
    return trainer.logger.local_logger.my_fantastic_logging
