"""The paper's learning-rate schedule: cosine decay over the run's epochs."""

from __future__ import annotations

import math

import torch


class CosineLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay from ``initial_lr`` to 0 over ``max_steps`` epochs; ``step(epoch)`` like nnU-Net's."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_steps: int):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(current_step, self.max_steps) / self.max_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
