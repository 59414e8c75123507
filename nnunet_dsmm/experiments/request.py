"""What a command asks of the experiments, built once by the command line and passed down unchanged:
where the trainings run (``ExecutorOptions``), a whole ``ablate`` run (``AblationRequest``) and a
``demo`` run (``DemoRequest``). Imports nothing else of the package."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the trainings of a plan run: ``local`` (``devices``: one CUDA device id per concurrent
    training; else ``jobs`` concurrent trainings on the given device) or ``slurm`` (sbatch options, and a
    ``setup`` shell line run first in every job); step times for the ``--dry-run`` estimate."""

    executor: str = "local"
    devices: tuple[str, ...] = ()
    jobs: int = 1
    partition: str | None = None
    time_limit: str | None = None
    gpus_per_job: int | None = None
    sbatch_options: tuple[str, ...] = ()
    setup: str | None = None
    step_time_ms: float | None = None
    benchmark_json: str | None = None

    def slots(self) -> list[str | None]:
        """One entry per training that may run at once: a CUDA device id, or None (the device as given)."""
        return list(self.devices) if self.devices else [None] * self.jobs

    def device(self, device: str) -> str:
        """The ``-device`` of every training: cuda with ``--devices``, else ``device``."""
        return "cuda" if self.devices else device


@dataclass(frozen=True)
class AblationRequest:
    """One ``ablate`` run: the trainings (dataset, configuration, plans, folds, the tables' rows, seeds,
    budget), where they run (device, executor), the test data they are evaluated on and the output folder."""

    dataset: str
    configuration: str
    folds: tuple[int | str, ...]
    table: str
    images: str
    labels: str
    out_dir: str
    plans: str = "DSMMPlans"
    device: str = "cuda"
    seeds: int = 1
    budget: str = "paper"
    use_mirroring: bool = True
    dry_run: bool = False
    executor: ExecutorOptions = ExecutorOptions()

    def command(self) -> list[str]:
        """This run as an ``nnunet_dsmm ablate`` command line (absolute paths, no ``--dry-run``)."""
        return ["nnunet_dsmm", "ablate", "-d", self.dataset, "-c", self.configuration, "-p", self.plans,
                "-f", *map(str, self.folds), "--table", self.table, "-i", os.path.abspath(self.images),
                "-l", os.path.abspath(self.labels), "-o", os.path.abspath(self.out_dir), "-device", self.device,
                "--seeds", str(self.seeds), "--budget", self.budget, *([] if self.use_mirroring else ["--disable_tta"])]


@dataclass(frozen=True)
class DemoRequest:
    """One ``demo`` run: its folder, device and budget (``demo.BUDGETS``), the synthetic data (share of
    complete cases, seed, label kind) and the independent trainings of every model (``seeds``)."""

    out_dir: str
    device: str = "cpu"
    budget: str = "cpu"
    fm_ratio: float = 0.1
    data_seed: int = 0
    labels: str = "regions"
    seeds: int = 1
