"""What a benchmark run measures: the trainers, the number of steps, the batches, the targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nnunet_dsmm.errors import DSMMError

REFERENCE_TRAINER = "nnUNetTrainer"
DEFAULT_TRAINERS = ("DSMMPretrainTrainer", "DSMMTrainer")
#: the targets: DSMM's training step and peak memory, and prediction per case, over stock nnU-Net (GPU)
TARGET_RATIOS = {"training_step_time": 2.5, "training_peak_memory": 2.5, "prediction_time": 1.05,
                 "all_combinations_time": 4.0}


class BenchmarkError(DSMMError, ValueError):
    """A benchmark that cannot run as asked (bad option, unknown plan or trainer, no device)."""


@dataclass
class BenchmarkSettings:
    device: str = "cuda"
    steps: int = 10
    warmup: int = 3
    #: share of synthetic samples that miss no modality (0: every sample misses 1 to M-1, the costliest case)
    complete_share: float = 0.0
    #: batches from nnU-Net's data loader (needs a preprocessed dataset) instead of random tensors
    real_batches: bool = False
    batch_size: int | None = None
    prediction: bool = True
    prediction_repeats: int = 3
    #: also time all 2^M - 1 channel combinations of a case: one at a time and batched (as ``evaluate``)
    combinations: bool = False
    use_mirroring: bool = True
    seed: int = 0
    trainers: Sequence[str] = field(default_factory=lambda: list(DEFAULT_TRAINERS))

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 0 or self.prediction_repeats < 1:
            raise BenchmarkError("nnunet-dsmm: steps and prediction repeats must be at least 1, warm-up steps at "
                                 "least 0")
        if not 0.0 <= self.complete_share <= 1.0:
            raise BenchmarkError(f"nnunet-dsmm: complete share must lie in [0, 1], got {self.complete_share}")
        if self.batch_size is not None and self.batch_size < 1:
            raise BenchmarkError(f"nnunet-dsmm: batch size must be at least 1, got {self.batch_size}")
