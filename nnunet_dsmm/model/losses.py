"""Loss terms of the paper, named after their equations."""

from __future__ import annotations

import torch


def reconstruction_loss_eq1(reconstruction: torch.Tensor, target: torch.Tensor,
                            available: torch.Tensor) -> torch.Tensor:
    """Eq. 1: squared error on the real (available) channels only, averaged over their number.

    ``reconstruction`` and ``target`` are (B, M, ...); ``available`` is (B, M) bool. The squared
    error of a channel is averaged over its voxels (a scale-free ||x̂_i - x_i||²), then over the
    sample's available channels, then over the batch. Missing channels contribute nothing.
    """
    per_channel = (reconstruction.float() - target.float()).pow(2).flatten(2).mean(dim=2)
    weights = available.to(per_channel.dtype)
    return ((per_channel * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)).mean()


class _MeanSquaredError(torch.autograd.Function):
    """mean((s - t)²) accumulated in float32 (or wider). Saves only its two inputs, which the networks keep
    alive anyway, instead of a float32 copy of their difference; the gradient goes to each input that
    requires one (-d for ``t`` where ``s`` gets d)."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(student, teacher)
        with torch.autocast(student.device.type, enabled=False):
            difference = student - teacher
            norm = torch.linalg.vector_norm(difference, dtype=torch.promote_types(difference.dtype, torch.float32))
        return norm.square() / student.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        student, teacher = ctx.saved_tensors
        scale = (grad * 2 / student.numel()).to(student.dtype)
        to_student = (student - teacher).to(student.dtype).mul_(scale)
        to_teacher = -to_student.to(teacher.dtype) if ctx.needs_input_grad[1] else None
        return (to_student if ctx.needs_input_grad[0] else None), to_teacher


#: how Eq. 4 compares two feature maps: "mse", the paper's squared error; "standardized", the squared
#: error after standardising every channel of every sample over its voxels (a scale-free reading)
FEATURE_DISTANCES = ("mse", "standardized")


def _standardized(features: torch.Tensor) -> torch.Tensor:
    """Each channel of each sample at zero mean and unit variance over its voxels (float32)."""
    return torch.nn.functional.instance_norm(features.float(), eps=1e-5)


def feature_distances(teacher_features, student_features, through_teacher: bool = False,
                      distance: str = "mse") -> list[torch.Tensor]:
    """The terms of Eq. 4, one per level: ||F_l^T - F_l^S||² as a mean over the level's elements.
    The student always receives gradients; with ``through_teacher`` the teacher's features do too
    (they reach whatever produced the teacher's input, M_rec in Eq. 7, as the frozen T itself has
    no trainable parameters), else they are constants."""
    if len(teacher_features) != len(student_features):
        raise ValueError(f"teacher has {len(teacher_features)} feature levels, student {len(student_features)}")
    if distance not in FEATURE_DISTANCES:
        raise ValueError(f"feature distance must be one of {FEATURE_DISTANCES}, got {distance!r}")
    terms = []
    for t, s in zip(teacher_features, student_features):
        if t.shape != s.shape:
            raise ValueError(f"teacher and student features differ in shape: {tuple(t.shape)} vs {tuple(s.shape)}")
        t = t if through_teacher else t.detach()
        if distance == "standardized":
            with torch.autocast(s.device.type, enabled=False):
                terms.append((_standardized(s) - _standardized(t)).pow(2).mean())
        else:
            terms.append(_MeanSquaredError.apply(s, t))
    return terms


def distillation_loss_eq4(teacher_features, student_features, through_teacher: bool = False) -> torch.Tensor:
    """Eq. 4: Σ_l ||F_l^T - F_l^S||² over the multi-scale features (``feature_distances`` summed)."""
    return torch.stack(feature_distances(teacher_features, student_features, through_teacher)).sum()
