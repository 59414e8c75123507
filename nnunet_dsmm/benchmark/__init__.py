"""``nnunet_dsmm benchmark``: the cost of DSMM's training steps and prediction next to stock nnU-Net.

Every trainer is built on the same plan, configuration and device in one process. Training steps
are timed alternating between trainers (round-robin, after warm-up) on identical batches of the
same size. Peak memory is the trainer's resident state (weights, buffers, optimiser state, frozen
networks) plus the most memory a step needed above that: on CUDA the allocator's peak over the
timed steps, on CPU the resident-set peak of extra steps run before the timing (see ``PeakMemory``).
Prediction is nnU-Net's per-case sliding window (``predict_logits_from_preprocessed_data``, as in
``nnUNetv2_predict``) with a stock model and a DSMMTrainer model on the same case. Weights are
random: the cost does not depend on them, so no earlier stage and no CLIP weights are needed.

Modules: ``settings`` (what is measured, the targets, ``BenchmarkError``), ``plans`` (synthetic
and preprocessed plans), ``batches``, ``memory``, ``runtime`` (environment, device, versions),
``runner`` (the run) and ``report`` (table and JSON).
"""

from nnunet_dsmm.benchmark.memory import PeakMemory
from nnunet_dsmm.benchmark.plans import SYNTHETIC_CONFIGURATION, SYNTHETIC_PLANS, preprocessed_plans, synthetic_plans
from nnunet_dsmm.benchmark.report import format_report, write_report
from nnunet_dsmm.benchmark.runner import run_benchmark, trainer_class
from nnunet_dsmm.benchmark.settings import DEFAULT_TRAINERS, BenchmarkError, BenchmarkSettings

__all__ = ["DEFAULT_TRAINERS", "SYNTHETIC_CONFIGURATION", "SYNTHETIC_PLANS", "BenchmarkError", "BenchmarkSettings",
           "PeakMemory", "format_report", "preprocessed_plans", "run_benchmark", "synthetic_plans", "trainer_class",
           "write_report"]
